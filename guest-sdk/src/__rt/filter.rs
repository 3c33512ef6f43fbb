//! `#[filter]`: keep or drop each record of a batch.

use std::borrow::Borrow;

use super::{configured, uninitialised, Plugin};
use crate::{
    batch::{self, Batch, Verdicts},
    Record, Result, State,
};

/// A `#[filter]` function, normalised by the attribute to one signature.
pub trait FilterPlugin: Plugin {
    fn filter(rec: &Record, cfg: &Self::Config, state: &State) -> Result<bool>;
}

/// A component's `filter` export: the plugin's verdicts on `batch`, or every record failed if
/// `init` has not succeeded.
pub fn call<P: FilterPlugin>(batch: &Batch) -> Verdicts {
    let n = batch.events.len();
    configured::<P, _>(
        |cfg| run::<P>(cfg, batch),
        || Verdicts {
            keep: vec![false; n],
            errors: uninitialised(n),
        },
    )
}

/// Run a filter over a batch. Every record is read into one `Record`, whose buffers are reused.
pub fn run<P: FilterPlugin>(cfg: &P::Config, batch: &Batch) -> Verdicts {
    let n = batch.events.len();
    let mut verdicts = Verdicts {
        keep: Vec::with_capacity(n),
        errors: Vec::new(),
    };
    let topics = batch::topics(batch);
    let mut rec = Record::default();
    for i in 0..n {
        batch::fill(batch, i, &topics, &mut rec);
        match P::filter(&rec, cfg, &State::__for_record(i as u32)) {
            Ok(keep) => verdicts.keep.push(keep),
            Err(e) => {
                verdicts.keep.push(false);
                verdicts.errors.push((i as u32, e.to_string()));
            }
        }
    }
    verdicts
}

/// Run a filter over records, as the test harness does: one verdict per record, errors as text.
pub fn filter_batch<P: FilterPlugin, R: Borrow<Record>>(
    cfg: &P::Config,
    records: impl Iterator<Item = R>,
) -> Vec<Result<bool, String>> {
    records
        .enumerate()
        .map(|(i, rec)| {
            P::filter(rec.borrow(), cfg, &State::__for_record(i as u32)).map_err(|e| e.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::{
        __rt::{init, tests::reset, tests::ConfigHost, NoConfig},
        batch::tests::{encode, inputs},
        prelude::*,
    };

    struct Odd;
    impl Plugin for Odd {
        type Config = NoConfig;
    }
    impl FilterPlugin for Odd {
        fn filter(rec: &Record, _: &NoConfig, _: &State) -> Result<bool> {
            match rec.value.as_deref() {
                None => fail!("tombstone at {}", rec.offset()),
                Some(v) => Ok(v.len() % 2 == 1),
            }
        }
    }

    #[test]
    fn verdicts_keep_one_flag_per_record() {
        let v = run::<Odd>(&NoConfig, &encode(&inputs()));
        assert_eq!(v.keep, vec![true, false, true, false]);
        assert_eq!(v.errors, vec![(1, "tombstone at 11".to_string())]);
    }

    #[test]
    fn the_export_runs_with_the_loaded_config_or_fails_every_record() {
        reset();
        let batch = encode(&inputs());
        let v = call::<Odd>(&batch);
        assert_eq!(v.keep, vec![false; 4]);
        let why = super::super::UNINITIALISED.to_string();
        assert_eq!(
            v.errors,
            (0..4).map(|i| (i, why.clone())).collect::<Vec<_>>()
        );
        init::<Odd>(Rc::new(ConfigHost("{}"))).unwrap();
        assert_eq!(call::<Odd>(&batch), run::<Odd>(&NoConfig, &batch));
        reset();
    }

    #[test]
    fn the_harness_path_agrees() {
        let records = inputs();
        let one_by_one = filter_batch::<Odd, _>(&NoConfig, records.iter());
        let v = run::<Odd>(&NoConfig, &encode(&records));
        for (i, verdict) in one_by_one.into_iter().enumerate() {
            match verdict {
                Ok(keep) => assert_eq!(keep, v.keep[i]),
                Err(e) => assert!(v.errors.contains(&(i as u32, e))),
            }
        }
    }
}
