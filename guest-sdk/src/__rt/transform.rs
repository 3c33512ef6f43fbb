//! `#[transform]`: turn each record of a batch into zero, one or many records.

use super::{configured, uninitialised, Plugin};
use crate::{
    batch::{self, header_bytes, Batch, OutBatch, OutputRef},
    Record, Result, State,
};

/// A `#[transform]` function, normalised by the attribute to one signature.
pub trait TransformPlugin: Plugin {
    /// The record is the plugin's: a transform written as `fn(rec: Record, …)` changes it and
    /// returns it without a copy.
    fn transform(rec: Record, cfg: &Self::Config, state: &State) -> Result<Vec<Record>>;
}

/// A component's `transform` export: the plugin's outputs for `batch`, or every record failed
/// if `init` has not succeeded.
pub fn call<P: TransformPlugin>(batch: &Batch) -> OutBatch {
    configured::<P, _>(
        |cfg| run::<P>(cfg, batch),
        || OutBatch {
            errors: uninitialised(batch.events.len()),
            ..OutBatch::default()
        },
    )
}

/// Run a transform over a batch. An output's key, value and headers that equal its input's
/// are sent back as "the same", so a transform that rewrites only the value sends only that.
pub fn run<P: TransformPlugin>(cfg: &P::Config, batch: &Batch) -> OutBatch {
    let n = batch.events.len();
    let mut out = OutBatch {
        arena: Vec::with_capacity(batch.arena.len()),
        headers: Vec::new(),
        outputs: Vec::with_capacity(n),
        errors: Vec::new(),
    };
    let topics = batch::topics(batch);
    for (i, event) in batch.events.iter().enumerate() {
        let rec = batch::record(batch, i, &topics);
        match P::transform(rec, cfg, &State::__for_record(i as u32)) {
            Ok(records) => {
                for rec in records {
                    let key = out.part(rec.key.as_deref(), event.key.map(|s| batch.bytes(s)));
                    let value = out.part(rec.value.as_deref(), event.value.map(|s| batch.bytes(s)));
                    let headers = if batch.same_headers(event, header_bytes(&rec.headers)) {
                        None
                    } else {
                        Some(out.push_headers(header_bytes(&rec.headers)))
                    };
                    out.outputs.push(OutputRef {
                        input: i as u32,
                        key,
                        value,
                        headers,
                        timestamp: rec.timestamp,
                    });
                }
            }
            Err(e) => out.errors.push((i as u32, e.to_string())),
        }
    }
    out
}

/// Run a transform over records, as the test harness does: one list of outputs per record,
/// errors as text.
pub fn transform_batch<P: TransformPlugin>(
    cfg: &P::Config,
    records: impl Iterator<Item = Record>,
) -> Vec<Result<Vec<Record>, String>> {
    records
        .enumerate()
        .map(|(i, rec)| {
            P::transform(rec, cfg, &State::__for_record(i as u32)).map_err(|e| e.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::{
        __rt::{init, tests::reset, tests::ConfigHost, NoConfig},
        batch::{
            tests::{decode, encode, inputs},
            Part, Span,
        },
        prelude::*,
    };

    struct Rewrite;
    impl Plugin for Rewrite {
        type Config = NoConfig;
    }
    impl TransformPlugin for Rewrite {
        /// Record 0: unchanged; 1: fails; 2: two outputs, new key and a header; 3: no value.
        fn transform(rec: Record, _: &NoConfig, _: &State) -> Result<Vec<Record>> {
            match rec.offset() {
                10 => Ok(vec![rec]),
                11 => fail!("no"),
                3 => Ok(vec![
                    rec.with_new_value("a").with_key("new"),
                    rec.clone().with_header("h", "v"),
                ]),
                _ => Ok(vec![rec.without_value()]),
            }
        }
    }

    #[test]
    fn outputs_send_back_only_what_changed() {
        let records = inputs();
        let batch = encode(&records);
        let out = run::<Rewrite>(&NoConfig, &batch);
        assert_eq!(out.errors, vec![(1, "no".to_string())]);
        let refs: Vec<_> = out
            .outputs
            .iter()
            .map(|o| (o.input, o.key, o.value))
            .collect();
        assert_eq!(
            refs,
            vec![
                (0, Part::Same, Part::Same),
                (
                    2,
                    Part::Bytes(Span { start: 0, len: 3 }),
                    Part::Bytes(Span { start: 3, len: 1 })
                ),
                (2, Part::Same, Part::Same),
                (3, Part::Same, Part::Absent),
            ]
        );
        assert_eq!(out.outputs[0].headers, None);
        assert!(out.outputs[2].headers.is_some());
        let want = [
            (0, records[0].clone()),
            (2, records[2].clone().with_new_value("a").with_key("new")),
            (2, records[2].clone().with_header("h", "v")),
            (3, records[3].clone().without_value()),
        ];
        let got = decode(&batch, &out);
        for ((gi, g), (wi, w)) in got.iter().zip(&want) {
            assert_eq!(gi, wi);
            assert_eq!(g.key, w.key);
            assert_eq!(g.value, w.value);
            assert_eq!(g.headers, w.headers);
            assert_eq!(g.timestamp, w.timestamp);
        }
        assert_eq!(got.len(), want.len());
    }

    #[test]
    fn the_export_runs_with_the_loaded_config_or_fails_every_record() {
        reset();
        let batch = encode(&inputs());
        let out = call::<Rewrite>(&batch);
        assert!(out.outputs.is_empty() && out.arena.is_empty());
        let why = super::super::UNINITIALISED.to_string();
        assert_eq!(
            out.errors,
            (0..4).map(|i| (i, why.clone())).collect::<Vec<_>>()
        );
        init::<Rewrite>(Rc::new(ConfigHost("{}"))).unwrap();
        assert_eq!(call::<Rewrite>(&batch), run::<Rewrite>(&NoConfig, &batch));
        reset();
    }
}
