//! Records to and from the batch form of the WIT contract: a batch is one byte arena and
//! fixed-size descriptors, so a call moves a handful of lists however many records it carries.
//!
//! The format itself (encoding, the checks of an answer) is `weir-wire`'s, which the guest SDK
//! shares; this module applies it to the engine's records and to the bindings' own types, which
//! mirror weir-wire's and convert to and from them one descriptor at a time, at no cost.
//!
//! What comes back is checked before it is used: a plugin is untrusted code, and a bad span or
//! index in its answer must fail the batch with a reason, never panic the host or mix records up.

use weir_wire as wire;

pub(super) use super::bindings::types::{Batch, OutBatch, OutputRef, Verdicts};
use super::bindings::types::{HeaderRef, Part, Span};
use super::{Answer, Header, Record};

/// The largest arena an instance keeps between calls: one batch of big records must not pin
/// its size for good.
pub(super) const KEEP_ARENA: usize = 8 << 20;

/// A batch of no records.
pub(super) fn empty() -> Batch {
    Batch {
        arena: Vec::new(),
        topics: Vec::new(),
        headers: Vec::new(),
        events: Vec::new(),
    }
}

/// Fill `batch` (cleared first, its buffers reused) with `records`.
pub(super) fn encode(records: &[Record], batch: &mut Batch) {
    let mut encoder = wire::Encoder::new(
        &mut batch.arena,
        &mut batch.topics,
        &mut batch.headers,
        &mut batch.events,
    );
    for r in records {
        encoder.push(wire::Event {
            key: r.key.as_deref(),
            value: r.value.as_deref(),
            headers: r.headers.iter().map(|h| (h.key.as_bytes(), &h.value[..])),
            timestamp: r.timestamp,
            topic: &r.topic,
            partition: r.partition,
            offset: r.offset,
        });
    }
}

/// Whether an answer to a batch of `n` records is well formed: everything it points at exists,
/// outputs come in input order, header names are UTF-8 and no record both failed and has
/// outputs.
pub(super) fn check(n: usize, answer: &Answer) -> Result<(), String> {
    let checked = match answer {
        Answer::Filter(v) => wire::check_verdicts(n, v.keep.len(), &v.errors),
        Answer::Transform(out) => {
            wire::check_out_batch(n, &out.arena, &out.headers, &out.outputs, &out.errors)
        }
        Answer::Unsupported => Ok(()),
    };
    checked.map_err(|why| why.to_string())
}

/// Each record's error, if it has one.
pub(super) fn errors_by_record(n: usize, errors: Vec<(u32, String)>) -> Vec<Option<String>> {
    wire::errors_by_record(n, errors)
}

/// The records `rec`'s outputs describe (checked by [`check`]). What an output keeps of its
/// input is moved into the last output that keeps it and cloned into the others.
pub(super) fn outputs(out: &OutBatch, mut rec: Record, mine: &[OutputRef]) -> Vec<Record> {
    let bytes = |span: wire::Span| out.arena[span.range()].to_vec();
    let last = mine.len().saturating_sub(1);
    let mut records = Vec::with_capacity(mine.len());
    for (j, o) in mine.iter().enumerate() {
        let o = wire::OutputRef::from(*o);
        let keep = |field: &mut Option<Vec<u8>>| {
            if j == last {
                field.take()
            } else {
                field.clone()
            }
        };
        let part = |p: wire::Part, field: &mut Option<Vec<u8>>| match p {
            wire::Part::Same => keep(field),
            wire::Part::Absent => None,
            wire::Part::Bytes(span) => Some(bytes(span)),
        };
        let key = part(o.key, &mut rec.key);
        let value = part(o.value, &mut rec.value);
        let headers = match o.headers {
            None if j == last => std::mem::take(&mut rec.headers),
            None => rec.headers.clone(),
            Some(span) => wire::output_headers(&out.arena, &out.headers, span)
                .map(|(key, value)| Header {
                    key: String::from_utf8(key.to_vec()).expect("checked UTF-8"),
                    value: value.to_vec(),
                })
                .collect(),
        };
        records.push(Record {
            key,
            value,
            headers,
            timestamp: o.timestamp,
            // The input is done with: its topic moves to its last output rather than being
            // copied once more per record and stage.
            topic: if j == last {
                std::mem::take(&mut rec.topic)
            } else {
                rec.topic.clone()
            },
            partition: rec.partition,
            offset: rec.offset,
        });
    }
    records
}

// The bindings' descriptors and weir-wire's, field for field.

impl From<Span> for wire::Span {
    fn from(s: Span) -> Self {
        wire::Span {
            start: s.start,
            len: s.len,
        }
    }
}

impl From<wire::Span> for Span {
    fn from(s: wire::Span) -> Self {
        Span {
            start: s.start,
            len: s.len,
        }
    }
}

impl From<HeaderRef> for wire::HeaderRef {
    fn from(h: HeaderRef) -> Self {
        wire::HeaderRef {
            key: h.key.into(),
            value: h.value.into(),
        }
    }
}

impl From<wire::HeaderRef> for HeaderRef {
    fn from(h: wire::HeaderRef) -> Self {
        HeaderRef {
            key: h.key.into(),
            value: h.value.into(),
        }
    }
}

impl From<Part> for wire::Part {
    fn from(p: Part) -> Self {
        match p {
            Part::Same => wire::Part::Same,
            Part::Absent => wire::Part::Absent,
            Part::Bytes(span) => wire::Part::Bytes(span.into()),
        }
    }
}

impl From<OutputRef> for wire::OutputRef {
    fn from(o: OutputRef) -> Self {
        wire::OutputRef {
            input: o.input,
            key: o.key.into(),
            value: o.value.into(),
            headers: o.headers.map(wire::Span::from),
            timestamp: o.timestamp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, value: &str, offset: i64) -> Record {
        Record {
            key: Some(key.into()),
            value: Some(value.into()),
            headers: vec![Header {
                key: "h".into(),
                value: b"x".to_vec(),
            }],
            timestamp: 7,
            topic: "orders".into(),
            partition: 2,
            offset,
        }
    }

    fn pairs(headers: &[Header]) -> Vec<(&str, &[u8])> {
        headers
            .iter()
            .map(|h| (h.key.as_str(), h.value.as_slice()))
            .collect()
    }

    fn span(start: u32, len: u32) -> Span {
        Span { start, len }
    }

    #[test]
    fn a_batch_is_one_arena_and_shares_its_topic() {
        let mut batch = empty();
        encode(&[rec("k1", "one", 0), rec("k2", "two", 1)], &mut batch);
        assert_eq!(batch.topics, vec!["orders".to_string()]);
        assert_eq!(batch.arena, b"hxk1onehxk2two");
        let e = &batch.events[1].0;
        let at = |s: wire::Span| (s.start, s.len);
        assert_eq!(
            (e.key.map(at), e.value.map(at), at(e.headers)),
            (Some((9, 2)), Some((11, 3)), (1, 1))
        );
        assert_eq!((e.timestamp, e.topic, e.partition, e.offset), (7, 0, 2, 1));
        // The buffers are reused: encoding again starts from empty.
        encode(&[rec("k", "v", 5)], &mut batch);
        assert_eq!(
            (batch.arena.len(), batch.events.len(), batch.headers.len()),
            (4, 1, 1)
        );
    }

    fn out(outputs: Vec<OutputRef>) -> OutBatch {
        OutBatch {
            arena: b"newhy".to_vec(),
            headers: vec![HeaderRef {
                key: span(3, 1),
                value: span(4, 1),
            }],
            outputs,
            errors: Vec::new(),
        }
    }

    fn output(input: u32, key: Part, value: Part, headers: Option<Span>) -> OutputRef {
        OutputRef {
            input,
            key,
            value,
            headers,
            timestamp: 9,
        }
    }

    #[test]
    fn outputs_take_what_they_keep_from_their_input() {
        let answer = out(vec![
            output(0, Part::Same, Part::Bytes(span(0, 3)), Some(span(0, 1))),
            output(0, Part::Absent, Part::Same, None),
        ]);
        assert_eq!(check(1, &Answer::Transform(answer.clone())), Ok(()));
        let got = outputs(&answer, rec("k", "v", 3), &answer.outputs);
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].key.as_deref(), got[0].value.as_deref()),
            (Some(&b"k"[..]), Some(&b"new"[..]))
        );
        assert_eq!(pairs(&got[0].headers), vec![("h", &b"y"[..])]);
        assert_eq!(
            (got[1].key.as_deref(), got[1].value.as_deref()),
            (None, Some(&b"v"[..]))
        );
        assert_eq!(pairs(&got[1].headers), vec![("h", &b"x"[..])]);
        for r in &got {
            assert_eq!(
                (r.topic.as_str(), r.partition, r.offset, r.timestamp),
                ("orders", 2, 3, 9)
            );
        }
    }

    #[test]
    fn malformed_answers_are_refused_with_a_reason() {
        let bad = |outputs: Vec<OutputRef>| check(2, &Answer::Transform(out(outputs))).unwrap_err();
        let same = Part::Same;
        assert!(bad(vec![output(2, same, same, None)]).contains("record 2"));
        assert!(bad(vec![
            output(1, same, same, None),
            output(0, same, same, None)
        ])
        .contains("input order"));
        assert!(
            bad(vec![output(0, Part::Bytes(span(3, 9)), same, None)]).contains("outside its arena")
        );
        assert!(
            bad(vec![output(0, same, Part::Bytes(span(u32::MAX, 2)), None)])
                .contains("outside its arena")
        );
        assert!(bad(vec![output(0, same, same, Some(span(0, 2)))]).contains("headers 0..2 of 1"));

        let mut both = out(vec![output(1, same, same, None)]);
        both.errors.push((1, "no".into()));
        let why = check(2, &Answer::Transform(both)).unwrap_err();
        assert!(why.contains("both outputs and an error"), "{why}");

        let mut not_utf8 = out(Vec::new());
        not_utf8.arena[3] = 0xff;
        let why = check(2, &Answer::Transform(not_utf8)).unwrap_err();
        assert!(why.contains("not UTF-8"), "{why}");

        let short = Verdicts {
            keep: vec![true],
            errors: Vec::new(),
        };
        assert!(check(2, &Answer::Filter(short))
            .unwrap_err()
            .contains("1 verdicts"));
        let stray = Verdicts {
            keep: vec![true, true],
            errors: vec![(5, "?".into())],
        };
        assert!(check(2, &Answer::Filter(stray))
            .unwrap_err()
            .contains("record 5"));
    }

    #[test]
    fn errors_land_on_their_records() {
        assert_eq!(errors_by_record(3, Vec::new()), vec![None, None, None]);
        assert_eq!(
            errors_by_record(3, vec![(1, "x".into())]),
            vec![None, Some("x".to_string()), None]
        );
    }
}
