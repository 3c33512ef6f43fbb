//! A batch as it crosses the component boundary (the `batch`, `verdicts` and `out-batch` types
//! of the WIT contract): one byte arena and fixed-size descriptors, so a call moves a handful of
//! lists however many records it carries. These mirror the WIT types field for field, and the
//! component's bindings use them as they are (see `__rt::wit`), so a call converts nothing.

use std::sync::Arc;

use crate::Record;

/// A run of `len` items from `start`.
///
/// `repr(C)`, as the bindings' own would be: a list of spans, or of [`HeaderRef`]s, crosses the
/// boundary as its bytes, so its layout must be the canonical ABI's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
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
#[repr(C)]
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
    pub(crate) fn bytes(&self, span: Span) -> &[u8] {
        &self.arena[span.range()]
    }

    fn headers_of(&self, event: &EventRef) -> &[HeaderRef] {
        &self.headers[event.headers.range()]
    }

    /// Make `rec` record `i` of the batch, reusing its buffers: a filter sees every record of
    /// the batch through one `Record`, so reading a batch allocates nothing once they are big
    /// enough.
    pub(crate) fn fill(&self, i: usize, topics: &[Arc<str>], rec: &mut Record) {
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
    pub(crate) fn record(&self, i: usize, topics: &[Arc<str>]) -> Record {
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

    pub(crate) fn topics(&self) -> Vec<Arc<str>> {
        self.topics.iter().map(|t| Arc::from(t.as_str())).collect()
    }

    /// Whether `headers` are the headers of `event`.
    pub(crate) fn same_headers(&self, event: &EventRef, headers: &[(String, Vec<u8>)]) -> bool {
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

impl OutBatch {
    fn push(&mut self, bytes: &[u8]) -> Span {
        let start = self.arena.len() as u32;
        self.arena.extend_from_slice(bytes);
        Span {
            start,
            len: bytes.len() as u32,
        }
    }

    pub(crate) fn part(&mut self, ours: Option<Vec<u8>>, input: Option<&[u8]>) -> Part {
        match (ours, input) {
            (None, None) => Part::Same,
            (None, Some(_)) => Part::Absent,
            (Some(ours), Some(input)) if ours == input => Part::Same,
            (Some(ours), _) => Part::Bytes(self.push(&ours)),
        }
    }

    pub(crate) fn push_headers(&mut self, headers: &[(String, Vec<u8>)]) -> Span {
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
pub(crate) mod tests {
    use super::*;
    use crate::prelude::*;

    /// The batch a host would send for `records`.
    pub(crate) fn encode(records: &[Record]) -> Batch {
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
    pub(crate) fn decode(batch: &Batch, out: &OutBatch) -> Vec<(u32, Record)> {
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

    pub(crate) fn inputs() -> Vec<Record> {
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
}
