//! A batch as it crosses the component boundary: the types of `weir-wire`, which the
//! component's bindings use as they are (see `__rt::wit`), so a call converts nothing; and how
//! a batch's records are read into [`Record`]s.

use std::sync::Arc;

pub use weir_wire::{Batch, EventRef, HeaderRef, OutBatch, OutputRef, Part, Span, Verdicts};

use crate::Record;

/// Make `rec` record `i` of `batch`, reusing its buffers: a filter sees every record of the
/// batch through one `Record`, so reading a batch allocates nothing once they are big enough.
pub(crate) fn fill(batch: &Batch, i: usize, topics: &[Arc<str>], rec: &mut Record) {
    let event = &batch.events[i];
    rec.topic = topic(topics, event.topic);
    refill(&mut rec.key, event.key.map(|s| batch.bytes(s)));
    refill(&mut rec.value, event.value.map(|s| batch.bytes(s)));
    let headers = batch.headers_of(event);
    rec.headers.truncate(headers.len());
    for (j, h) in headers.iter().enumerate() {
        let name = String::from_utf8_lossy(batch.bytes(h.key));
        let value = batch.bytes(h.value);
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

/// Record `i` of `batch`, as a plugin owns it.
pub(crate) fn record(batch: &Batch, i: usize, topics: &[Arc<str>]) -> Record {
    let event = &batch.events[i];
    Record {
        key: event.key.map(|s| batch.bytes(s).to_vec()),
        value: event.value.map(|s| batch.bytes(s).to_vec()),
        headers: batch
            .headers_of(event)
            .iter()
            .map(|h| {
                let name = String::from_utf8_lossy(batch.bytes(h.key)).into_owned();
                (name, batch.bytes(h.value).to_vec())
            })
            .collect(),
        timestamp: event.timestamp,
        topic: topic(topics, event.topic),
        partition: event.partition,
        offset: event.offset,
    }
}

/// The batch's topics as records hold them: each once, shared by its records.
pub(crate) fn topics(batch: &Batch) -> Vec<Arc<str>> {
    batch.topics.iter().map(|t| Arc::from(t.as_str())).collect()
}

/// A record's headers as the wire writes and compares them: names and values, as bytes.
pub(crate) fn header_bytes(
    headers: &[(String, Vec<u8>)],
) -> impl ExactSizeIterator<Item = (&[u8], &[u8])> {
    headers.iter().map(|(k, v)| (k.as_bytes(), v.as_slice()))
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::prelude::*;

    /// The batch a host would send for `records`.
    pub(crate) fn encode(records: &[Record]) -> Batch {
        let mut batch = Batch::default();
        let mut encoder = batch.encoder();
        for r in records {
            encoder.push(weir_wire::Event {
                key: r.key.as_deref(),
                value: r.value.as_deref(),
                headers: header_bytes(&r.headers),
                timestamp: r.timestamp,
                topic: r.topic(),
                partition: r.partition(),
                offset: r.offset(),
            });
        }
        batch
    }

    /// The records a host makes of an out-batch, with the inputs they are of.
    pub(crate) fn decode(batch: &Batch, out: &OutBatch) -> Vec<(u32, Record)> {
        assert_eq!(out.check(batch.events.len()), Ok(()));
        let topics = topics(batch);
        out.outputs
            .iter()
            .map(|o| {
                let from = record(batch, o.input as usize, &topics);
                let part = |p: Part, same: Option<Vec<u8>>| match p {
                    Part::Same => same,
                    Part::Absent => None,
                    Part::Bytes(s) => Some(out.arena[s.range()].to_vec()),
                };
                let headers = match o.headers {
                    None => from.headers.clone(),
                    Some(s) => weir_wire::output_headers(&out.arena, &out.headers, s)
                        .map(|(k, v)| (String::from_utf8(k.to_vec()).unwrap(), v.to_vec()))
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
        let topics = topics(&batch);
        for (i, want) in records.iter().enumerate() {
            assert_eq!(&record(&batch, i, &topics), want);
            // A reused record reads the same, whatever it held before.
            let mut reused = records[(i + 1) % records.len()].clone();
            fill(&batch, i, &topics, &mut reused);
            assert_eq!(&reused, want);
        }
    }
}
