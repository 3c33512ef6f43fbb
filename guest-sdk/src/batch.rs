//! A batch as it crosses the component boundary (the `batch`, `verdicts` and `out-batch` types
//! of the WIT contract): one byte arena and fixed-size descriptors, so a call moves a handful of
//! lists however many records it carries. These are plain mirrors of the WIT types; the
//! attributes convert the generated bindings to and from them.

use std::sync::Arc;

use crate::{
    __rt::{FilterPlugin, TransformPlugin},
    Record, State,
};

/// A run of `len` items from `start`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub len: u32,
}

impl Span {
    fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.start as usize + self.len as usize
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderRef {
    pub key: Span,
    pub value: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventRef {
    pub key: Option<Span>,
    pub value: Option<Span>,
    pub headers: Span,
    pub timestamp: i64,
    pub topic: u32,
    pub partition: i32,
    pub offset: i64,
}

/// The records of one call.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    pub arena: Vec<u8>,
    pub topics: Vec<String>,
    pub headers: Vec<HeaderRef>,
    pub events: Vec<EventRef>,
}

/// An output's key or value: its input's, none, or bytes of the out-batch's arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Same,
    Absent,
    Bytes(Span),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputRef {
    pub input: u32,
    pub key: Part,
    pub value: Part,
    /// `None` keeps the input's headers.
    pub headers: Option<Span>,
    pub timestamp: i64,
}

/// What a transform makes of a batch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OutBatch {
    pub arena: Vec<u8>,
    pub headers: Vec<HeaderRef>,
    pub outputs: Vec<OutputRef>,
    pub errors: Vec<(u32, String)>,
}

/// What a filter makes of a batch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Verdicts {
    pub keep: Vec<bool>,
    pub errors: Vec<(u32, String)>,
}

impl Batch {
    fn bytes(&self, span: Span) -> &[u8] {
        &self.arena[span.range()]
    }

    fn headers_of(&self, event: &EventRef) -> &[HeaderRef] {
        &self.headers[event.headers.range()]
    }

    /// Make `rec` record `i` of the batch, reusing its buffers: a filter sees every record of
    /// the batch through one `Record`, so reading a batch allocates nothing once they are big
    /// enough.
    fn fill(&self, i: usize, topics: &[Arc<str>], rec: &mut Record) {
        let event = &self.events[i];
        rec.topic = topic(topics, event.topic);
        refill(&mut rec.key, event.key.map(|s| self.bytes(s)));
        refill(&mut rec.value, event.value.map(|s| self.bytes(s)));
        let headers = self.headers_of(event);
        rec.headers.truncate(headers.len());
        for (j, h) in headers.iter().enumerate() {
            let name = String::from_utf8_lossy(self.bytes(h.key));
            let value = self.bytes(h.value);
            match rec.headers.get_mut(j) {
                Some((k, v)) => {
                    k.clear();
                    k.push_str(&name);
                    v.clear();
                    v.extend_from_slice(value);
                }
                None => rec.headers.push((name.into_owned(), value.to_vec())),
            }
        }
        rec.timestamp = event.timestamp;
        rec.partition = event.partition;
        rec.offset = event.offset;
    }

    /// Record `i` of the batch, as a plugin owns it.
    fn record(&self, i: usize, topics: &[Arc<str>]) -> Record {
        let event = &self.events[i];
        Record {
            key: event.key.map(|s| self.bytes(s).to_vec()),
            value: event.value.map(|s| self.bytes(s).to_vec()),
            headers: self
                .headers_of(event)
                .iter()
                .map(|h| {
                    let name = String::from_utf8_lossy(self.bytes(h.key)).into_owned();
                    (name, self.bytes(h.value).to_vec())
                })
                .collect(),
            timestamp: event.timestamp,
            topic: topic(topics, event.topic),
            partition: event.partition,
            offset: event.offset,
        }
    }

    fn topics(&self) -> Vec<Arc<str>> {
        self.topics.iter().map(|t| Arc::from(t.as_str())).collect()
    }

    /// Whether `headers` are the headers of `event`.
    fn same_headers(&self, event: &EventRef, headers: &[(String, Vec<u8>)]) -> bool {
        let ours = self.headers_of(event);
        ours.len() == headers.len()
            && ours.iter().zip(headers).all(|(h, (k, v))| {
                self.bytes(h.key) == k.as_bytes() && self.bytes(h.value) == v.as_slice()
            })
    }
}

fn topic(topics: &[Arc<str>], i: u32) -> Arc<str> {
    topics.get(i as usize).cloned().unwrap_or_default()
}

fn refill(slot: &mut Option<Vec<u8>>, bytes: Option<&[u8]>) {
    match (slot.as_mut(), bytes) {
        (Some(buf), Some(bytes)) => {
            buf.clear();
            buf.extend_from_slice(bytes);
        }
        (None, Some(bytes)) => *slot = Some(bytes.to_vec()),
        (_, None) => *slot = None,
    }
}

/// Run a filter over a batch.
pub fn filter<P: FilterPlugin>(cfg: &P::Config, batch: &Batch) -> Verdicts {
    let n = batch.events.len();
    let mut verdicts = Verdicts {
        keep: Vec::with_capacity(n),
        errors: Vec::new(),
    };
    let topics = batch.topics();
    let mut rec = Record::default();
    for i in 0..n {
        batch.fill(i, &topics, &mut rec);
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

/// Run a transform over a batch. An output's key, value and headers that equal its input's
/// are sent back as "the same", so a transform that rewrites only the value sends only that.
pub fn transform<P: TransformPlugin>(cfg: &P::Config, batch: &Batch) -> OutBatch {
    let n = batch.events.len();
    let mut out = OutBatch {
        arena: Vec::with_capacity(batch.arena.len()),
        headers: Vec::new(),
        outputs: Vec::with_capacity(n),
        errors: Vec::new(),
    };
    let topics = batch.topics();
    for (i, event) in batch.events.iter().enumerate() {
        let rec = batch.record(i, &topics);
        match P::transform(rec, cfg, &State::__for_record(i as u32)) {
            Ok(records) => {
                for rec in records {
                    let key = out.part(rec.key, event.key.map(|s| batch.bytes(s)));
                    let value = out.part(rec.value, event.value.map(|s| batch.bytes(s)));
                    let headers = if batch.same_headers(event, &rec.headers) {
                        None
                    } else {
                        Some(out.push_headers(&rec.headers))
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

impl OutBatch {
    fn push(&mut self, bytes: &[u8]) -> Span {
        let start = self.arena.len() as u32;
        self.arena.extend_from_slice(bytes);
        Span {
            start,
            len: bytes.len() as u32,
        }
    }

    fn part(&mut self, ours: Option<Vec<u8>>, input: Option<&[u8]>) -> Part {
        match (ours, input) {
            (None, None) => Part::Same,
            (None, Some(_)) => Part::Absent,
            (Some(ours), Some(input)) if ours == input => Part::Same,
            (Some(ours), _) => Part::Bytes(self.push(&ours)),
        }
    }

    fn push_headers(&mut self, headers: &[(String, Vec<u8>)]) -> Span {
        let start = self.headers.len() as u32;
        for (k, v) in headers {
            let key = self.push(k.as_bytes());
            let value = self.push(v);
            self.headers.push(HeaderRef { key, value });
        }
        Span {
            start,
            len: headers.len() as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;

    /// The batch a host would send for `records` (all of one topic).
    fn encode(records: &[Record]) -> Batch {
        let mut b = Batch::default();
        let push = |arena: &mut Vec<u8>, bytes: &[u8]| {
            let start = arena.len() as u32;
            arena.extend_from_slice(bytes);
            Span {
                start,
                len: bytes.len() as u32,
            }
        };
        for r in records {
            if !b.topics.iter().any(|t| t == r.topic()) {
                b.topics.push(r.topic().to_string());
            }
            let first = b.headers.len() as u32;
            for (k, v) in &r.headers {
                let key = push(&mut b.arena, k.as_bytes());
                let value = push(&mut b.arena, v);
                b.headers.push(HeaderRef { key, value });
            }
            let key = r.key.as_deref().map(|k| push(&mut b.arena, k));
            let value = r.value.as_deref().map(|v| push(&mut b.arena, v));
            b.events.push(EventRef {
                key,
                value,
                headers: Span {
                    start: first,
                    len: r.headers.len() as u32,
                },
                timestamp: r.timestamp,
                topic: b.topics.iter().position(|t| t == r.topic()).unwrap() as u32,
                partition: r.partition(),
                offset: r.offset(),
            });
        }
        b
    }

    /// The records a host makes of an out-batch.
    fn decode(batch: &Batch, out: &OutBatch) -> Vec<(u32, Record)> {
        let bytes = |s: Span| out.arena[s.range()].to_vec();
        let input = |i: u32| batch.record(i as usize, &batch.topics());
        out.outputs
            .iter()
            .map(|o| {
                let from = input(o.input);
                let part = |p: Part, same: Option<Vec<u8>>| match p {
                    Part::Same => same,
                    Part::Absent => None,
                    Part::Bytes(s) => Some(bytes(s)),
                };
                let headers = match o.headers {
                    None => from.headers.clone(),
                    Some(s) => out.headers[s.range()]
                        .iter()
                        .map(|h| (String::from_utf8(bytes(h.key)).unwrap(), bytes(h.value)))
                        .collect(),
                };
                let rec = Record {
                    key: part(o.key, from.key.clone()),
                    value: part(o.value, from.value.clone()),
                    headers,
                    timestamp: o.timestamp,
                    ..Record::default()
                };
                (o.input, rec)
            })
            .collect()
    }

    fn inputs() -> Vec<Record> {
        vec![
            Record::new("one")
                .with_key("k1")
                .with_header("h", "x")
                .with_timestamp(5)
                .at("orders", 1, 10),
            Record::tombstone(Some(b"k2".to_vec())).at("orders", 1, 11),
            Record::new("three").at("other", 0, 3),
            Record::new("").with_header("a", "").with_header("b", "2"),
        ]
    }

    #[test]
    fn a_batch_decodes_to_its_records() {
        let records = inputs();
        let batch = encode(&records);
        let topics = batch.topics();
        for (i, want) in records.iter().enumerate() {
            assert_eq!(&batch.record(i, &topics), want);
            // A reused record reads the same, whatever it held before.
            let mut reused = records[(i + 1) % records.len()].clone();
            batch.fill(i, &topics, &mut reused);
            assert_eq!(&reused, want);
        }
    }

    struct Rewrite;
    impl crate::__rt::Plugin for Rewrite {
        type Config = ();
    }
    impl TransformPlugin for Rewrite {
        /// Record 0: unchanged; 1: fails; 2: two outputs, new key and a header; 3: no value.
        fn transform(rec: Record, _: &(), _: &State) -> Result<Vec<Record>> {
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
        let out = transform::<Rewrite>(&(), &batch);
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

    struct Odd;
    impl crate::__rt::Plugin for Odd {
        type Config = ();
    }
    impl FilterPlugin for Odd {
        fn filter(rec: &Record, _: &(), _: &State) -> Result<bool> {
            match rec.value.as_deref() {
                None => fail!("tombstone at {}", rec.offset()),
                Some(v) => Ok(v.len() % 2 == 1),
            }
        }
    }

    #[test]
    fn verdicts_keep_one_flag_per_record() {
        let v = filter::<Odd>(&(), &encode(&inputs()));
        assert_eq!(v.keep, vec![true, false, true, false]);
        assert_eq!(v.errors, vec![(1, "tombstone at 11".to_string())]);
    }
}
