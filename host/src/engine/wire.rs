//! Records to and from the batch form of the WIT contract: a batch is one byte arena and
//! fixed-size descriptors, so a call moves a handful of lists however many records it carries.
//!
//! What comes back is checked before it is used: a plugin is untrusted code, and a bad span or
//! index in its answer must fail the batch with a reason, never panic the host or mix records up.

use std::ops::Range;

pub(super) use super::bindings::types::{Batch, OutBatch, OutputRef, Verdicts};
use super::bindings::types::{EventRef, HeaderRef, Part, Span};
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
    batch.arena.clear();
    batch.topics.clear();
    batch.headers.clear();
    batch.events.clear();
    for r in records {
        let topic = match batch.topics.iter().rposition(|t| *t == r.topic) {
            Some(i) => i,
            None => {
                batch.topics.push(r.topic.clone());
                batch.topics.len() - 1
            }
        };
        let first = batch.headers.len();
        for h in &r.headers {
            let key = push(&mut batch.arena, h.key.as_bytes());
            let value = push(&mut batch.arena, &h.value);
            batch.headers.push(HeaderRef { key, value });
        }
        let key = r.key.as_deref().map(|k| push(&mut batch.arena, k));
        let value = r.value.as_deref().map(|v| push(&mut batch.arena, v));
        batch.events.push(EventRef {
            key,
            value,
            headers: Span {
                start: first as u32,
                len: r.headers.len() as u32,
            },
            timestamp: r.timestamp,
            topic: topic as u32,
            partition: r.partition,
            offset: r.offset,
        });
    }
}

fn push(arena: &mut Vec<u8>, bytes: &[u8]) -> Span {
    let start = arena.len() as u32;
    arena.extend_from_slice(bytes);
    Span {
        start,
        len: bytes.len() as u32,
    }
}

fn range(span: Span) -> Range<usize> {
    span.start as usize..span.start as usize + span.len as usize
}

/// Whether an answer to a batch of `n` records is well formed: everything it points at exists,
/// outputs come in input order, header names are UTF-8 and no record both failed and has
/// outputs.
pub(super) fn check(n: usize, answer: &Answer) -> Result<(), String> {
    let errors = match answer {
        Answer::Filter(v) => {
            if v.keep.len() != n {
                return Err(format!(
                    "{} verdicts for a batch of {n} records",
                    v.keep.len()
                ));
            }
            &v.errors
        }
        Answer::Transform(out) => {
            check_outputs(n, out)?;
            &out.errors
        }
        Answer::Unsupported => return Ok(()),
    };
    for (i, _) in errors {
        if *i as usize >= n {
            return Err(format!("an error for record {i} of a batch of {n}"));
        }
    }
    if let Answer::Transform(out) = answer {
        for (i, _) in errors {
            // Outputs are in input order (checked above).
            if out.outputs.binary_search_by_key(i, |o| o.input).is_ok() {
                return Err(format!("record {i} has both outputs and an error"));
            }
        }
    }
    Ok(())
}

fn check_outputs(n: usize, out: &OutBatch) -> Result<(), String> {
    let in_arena = |span: Span, what: &str| {
        if out.arena.get(range(span)).is_some() {
            Ok(())
        } else {
            Err(format!(
                "{what} at {}..{} is outside its arena of {} bytes",
                span.start,
                span.start as u64 + span.len as u64,
                out.arena.len()
            ))
        }
    };
    for (j, h) in out.headers.iter().enumerate() {
        in_arena(h.key, "a header name")?;
        in_arena(h.value, "a header value")?;
        if std::str::from_utf8(&out.arena[range(h.key)]).is_err() {
            return Err(format!("header name {j} is not UTF-8"));
        }
    }
    let mut last = 0;
    for (j, o) in out.outputs.iter().enumerate() {
        let input = o.input as usize;
        if input >= n || input < last {
            return Err(format!(
                "output {j} is of record {input}, after one of record {last}, in a batch of {n} \
                 (outputs must come in input order)"
            ));
        }
        last = input;
        for part in [o.key, o.value] {
            if let Part::Bytes(span) = part {
                in_arena(span, "a key or value")?;
            }
        }
        if let Some(span) = o.headers {
            if out.headers.get(range(span)).is_none() {
                return Err(format!(
                    "output {j} has headers {}..{} of {}",
                    span.start,
                    span.start as u64 + span.len as u64,
                    out.headers.len()
                ));
            }
        }
    }
    Ok(())
}

/// Each record's error, if it has one.
pub(super) fn errors_by_record(n: usize, errors: Vec<(u32, String)>) -> Vec<Option<String>> {
    let mut by_record = vec![None; n];
    for (i, message) in errors {
        by_record[i as usize] = Some(message);
    }
    by_record
}

/// The records `rec`'s outputs describe (checked by [`check`]). What an output keeps of its
/// input is moved into the last output that keeps it and cloned into the others.
pub(super) fn outputs(out: &OutBatch, mut rec: Record, mine: &[OutputRef]) -> Vec<Record> {
    let bytes = |span: Span| out.arena[range(span)].to_vec();
    let last = mine.len().saturating_sub(1);
    let mut records = Vec::with_capacity(mine.len());
    for (j, o) in mine.iter().enumerate() {
        let keep = |field: &mut Option<Vec<u8>>| {
            if j == last {
                field.take()
            } else {
                field.clone()
            }
        };
        let part = |p: Part, field: &mut Option<Vec<u8>>| match p {
            Part::Same => keep(field),
            Part::Absent => None,
            Part::Bytes(span) => Some(bytes(span)),
        };
        let key = part(o.key, &mut rec.key);
        let value = part(o.value, &mut rec.value);
        let headers = match o.headers {
            None if j == last => std::mem::take(&mut rec.headers),
            None => rec.headers.clone(),
            Some(span) => out.headers[range(span)]
                .iter()
                .map(|h| Header {
                    key: String::from_utf8(bytes(h.key)).expect("checked UTF-8"),
                    value: bytes(h.value),
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
        let e = &batch.events[1];
        let at = |s: Span| (s.start, s.len);
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
