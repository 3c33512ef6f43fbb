//! `#[window]`: fold the records of a window into its accumulator, merge two accumulators of
//! merging sessions, and render fired windows. Accumulators cross the boundary as JSON.
//!
//! The types here mirror the window world's records of the WIT contract (the bindings use them
//! as they are, so the exports convert nothing of their own).

use super::{configured, Plugin};
use crate::{record::IntoRecords, Aggregate, Record, Window};

/// A `#[window]` aggregation.
pub trait WindowPlugin: Plugin {
    type Agg: Aggregate<Config = Self::Config>;
}

/// Records that failed, by index in their batch, with why.
pub type RecordErrors = Vec<(u32, String)>;

/// A Kafka header of an [`Event`] or [`Output`]: the WIT `header`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: Vec<u8>,
}

/// A record of a pane, with where it came from: the WIT `event`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<Header>,
    pub timestamp: i64,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// A record a fired window emits: the WIT `output`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<Header>,
    pub timestamp: i64,
}

/// Records of one key in one window, to fold into its accumulator (`None` for a window the key
/// has not seen yet): the WIT `pane`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pane {
    pub window: Window,
    pub acc: Option<Vec<u8>>,
    pub events: Vec<Event>,
}

/// A pane's new accumulator, and the records that failed: the WIT `pane-result`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaneResult {
    pub acc: Vec<u8>,
    pub errors: RecordErrors,
}

impl From<Event> for Record {
    fn from(e: Event) -> Record {
        let mut rec = Record::default().at(e.topic, e.partition, e.offset);
        rec.key = e.key;
        rec.value = e.value;
        rec.headers = e.headers.into_iter().map(|h| (h.key, h.value)).collect();
        rec.timestamp = e.timestamp;
        rec
    }
}

impl From<Record> for Output {
    fn from(r: Record) -> Output {
        Output {
            key: r.key,
            value: r.value,
            headers: r
                .headers
                .into_iter()
                .map(|(key, value)| Header { key, value })
                .collect(),
            timestamp: r.timestamp,
        }
    }
}

/// `f` with the loaded config, or all `n` items failed if `init` has not succeeded.
fn with_config<P: Plugin, R>(
    n: usize,
    f: impl FnOnce(&P::Config) -> Vec<Result<R, String>>,
) -> Vec<Result<R, String>> {
    configured::<P, _>(f, || {
        (0..n)
            .map(|_| Err(super::UNINITIALISED.to_string()))
            .collect()
    })
}

/// A component's `accumulate` export.
pub fn call_accumulate<P: WindowPlugin>(panes: Vec<Pane>) -> Vec<Result<PaneResult, String>> {
    with_config::<P, _>(panes.len(), |cfg| {
        panes
            .into_iter()
            .map(|pane| {
                let records = pane.events.into_iter().map(Record::from);
                accumulate::<P::Agg>(cfg, &pane.window, pane.acc.as_deref(), records)
                    .map(|(acc, errors)| PaneResult { acc, errors })
            })
            .collect()
    })
}

/// A component's `merge` export.
pub fn call_merge<P: WindowPlugin>(
    window: Window,
    a: Vec<u8>,
    b: Vec<u8>,
) -> Result<Vec<u8>, String> {
    with_config::<P, _>(1, |cfg| vec![merge::<P::Agg>(cfg, &window, &a, &b)]).remove(0)
}

/// A component's `emit` export.
pub fn call_emit<P: WindowPlugin>(
    fired: Vec<(Window, Vec<u8>)>,
) -> Vec<Result<Vec<Output>, String>> {
    with_config::<P, _>(fired.len(), |cfg| {
        fired
            .into_iter()
            .map(|(window, acc)| {
                emit::<P::Agg>(cfg, &window, &acc)
                    .map(|records| records.into_iter().map(Output::from).collect())
            })
            .collect()
    })
}

/// Fold a pane's records into its accumulator; failed records are reported by index.
pub fn accumulate<A: Aggregate>(
    cfg: &A::Config,
    window: &Window,
    acc: Option<&[u8]>,
    records: impl Iterator<Item = Record>,
) -> Result<(Vec<u8>, RecordErrors), String> {
    let mut state = match acc {
        Some(bytes) => decode_acc::<A>(bytes)?,
        None => A::create(window, cfg),
    };
    let mut errors = Vec::new();
    for (i, rec) in records.enumerate() {
        if let Err(e) = A::add(&mut state, &rec, cfg) {
            errors.push((i as u32, e.to_string()));
        }
    }
    Ok((encode_acc::<A>(&state)?, errors))
}

/// Merge two encoded accumulators of one key.
pub fn merge<A: Aggregate>(
    cfg: &A::Config,
    window: &Window,
    a: &[u8],
    b: &[u8],
) -> Result<Vec<u8>, String> {
    let merged = A::merge(decode_acc::<A>(a)?, decode_acc::<A>(b)?, window, cfg);
    encode_acc::<A>(&merged)
}

/// Render one fired window.
pub fn emit<A: Aggregate>(
    cfg: &A::Config,
    window: &Window,
    acc: &[u8],
) -> Result<Vec<Record>, String> {
    let acc = decode_acc::<A>(acc)?;
    let mut records = A::emit(window, &acc, cfg)
        .map(IntoRecords::into_records)
        .map_err(|e| e.to_string())?;
    // A window's result belongs to the window's key and, as in Flink, to its last instant,
    // unless the plugin says otherwise.
    for rec in &mut records {
        if rec.key.is_none() {
            rec.key.clone_from(&window.key);
        }
        if rec.timestamp == 0 {
            rec.timestamp = window.end - 1;
        }
    }
    Ok(records)
}

fn decode_acc<A: Aggregate>(bytes: &[u8]) -> Result<A::Acc, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("stored accumulator does not decode: {e}"))
}

fn encode_acc<A: Aggregate>(acc: &A::Acc) -> Result<Vec<u8>, String> {
    serde_json::to_vec(acc).map_err(|e| format!("accumulator does not encode: {e}"))
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::{
        __rt::{init, tests::reset, tests::ConfigHost},
        prelude::*,
    };

    /// Sums the values' lengths, starting from the config's `base`.
    struct Lengths;

    #[derive(Deserialize)]
    struct Base {
        base: u64,
    }

    impl Aggregate for Lengths {
        type Config = Base;
        type Acc = u64;
        type Output = Option<Record>;

        fn create(_: &Window, cfg: &Base) -> u64 {
            cfg.base
        }
        fn add(acc: &mut u64, rec: &Record, _: &Base) -> Result<()> {
            match &rec.value {
                Some(v) => *acc += v.len() as u64,
                None => fail!("tombstone at {}", rec.offset()),
            }
            Ok(())
        }
        fn merge(a: u64, b: u64, _: &Window, _: &Base) -> u64 {
            a + b
        }
        fn emit(_: &Window, acc: &u64, _: &Base) -> Result<Option<Record>> {
            Ok((*acc > 0).then(|| Record::new(acc.to_string()).with_header("h", "x")))
        }
    }

    impl Plugin for Lengths {
        type Config = Base;
    }
    impl WindowPlugin for Lengths {
        type Agg = Lengths;
    }

    fn window() -> Window {
        Window {
            key: Some(b"k".to_vec()),
            start: 0,
            end: 60_000,
        }
    }

    fn event(value: Option<&str>, offset: i64) -> Event {
        Event {
            key: Some(b"k".to_vec()),
            value: value.map(|v| v.as_bytes().to_vec()),
            headers: vec![Header {
                key: "a".into(),
                value: b"1".to_vec(),
            }],
            timestamp: 5,
            topic: "t".into(),
            partition: 2,
            offset,
        }
    }

    #[test]
    fn events_are_records_and_records_are_outputs() {
        let rec = Record::from(event(Some("v"), 7));
        assert_eq!(
            rec,
            Record::new("v")
                .with_key("k")
                .with_header("a", "1")
                .with_timestamp(5)
                .at("t", 2, 7)
        );
        let out = Output::from(rec);
        assert_eq!(out.headers, event(None, 0).headers);
        assert_eq!((out.value, out.timestamp), (Some(b"v".to_vec()), 5));
    }

    #[test]
    fn the_exports_fold_merge_and_emit() {
        reset();
        let panes = vec![
            Pane {
                window: window(),
                acc: None,
                events: vec![event(Some("abc"), 0), event(None, 1), event(Some("de"), 2)],
            },
            Pane {
                window: window(),
                acc: Some(b"not json".to_vec()),
                events: Vec::new(),
            },
        ];
        let why = super::super::UNINITIALISED.to_string();
        assert_eq!(
            call_accumulate::<Lengths>(panes.clone()),
            vec![Err(why.clone()), Err(why.clone())]
        );
        assert_eq!(
            call_merge::<Lengths>(window(), b"1".to_vec(), b"2".to_vec()),
            Err(why.clone())
        );
        assert_eq!(
            call_emit::<Lengths>(vec![(window(), b"1".to_vec())]),
            vec![Err(why)]
        );

        init::<Lengths>(Rc::new(ConfigHost(r#"{"base": 10}"#))).unwrap();
        let results = call_accumulate::<Lengths>(panes);
        assert_eq!(
            results[0],
            Ok(PaneResult {
                acc: b"15".to_vec(),
                errors: vec![(1, "tombstone at 1".to_string())],
            })
        );
        let bad = results[1].as_ref().unwrap_err();
        assert!(
            bad.starts_with("stored accumulator does not decode"),
            "{bad}"
        );
        assert_eq!(
            call_merge::<Lengths>(window(), b"1".to_vec(), b"2".to_vec()),
            Ok(b"3".to_vec())
        );
        let fired =
            call_emit::<Lengths>(vec![(window(), b"4".to_vec()), (window(), b"0".to_vec())]);
        assert_eq!(
            fired,
            vec![
                Ok(vec![Output {
                    // The window's key and last instant, as the plugin left them unset.
                    key: Some(b"k".to_vec()),
                    value: Some(b"4".to_vec()),
                    headers: vec![Header {
                        key: "h".into(),
                        value: b"x".to_vec()
                    }],
                    timestamp: 59_999,
                }]),
                Ok(Vec::new()),
            ]
        );
        reset();
    }
}
