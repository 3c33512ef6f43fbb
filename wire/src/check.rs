//! What the host checks of a plugin's answer before it uses it: everything the answer points
//! at exists, outputs come in input order, header names are UTF-8, and no record both failed and
//! has outputs.

use alloc::string::String;
use core::fmt;

use crate::{HeaderRef, OutputRef, Part, Span, Verdicts};

/// Why an answer to a batch is malformed. Its `Display` is the reason the host gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// A filter's verdicts are not one per record.
    Verdicts { verdicts: usize, records: usize },
    /// An error names a record the batch does not have.
    ErrorOutside { record: u32, records: usize },
    /// A record has both outputs and an error.
    OutputsAndError { record: u32 },
    /// A header name or value, key or value lies outside its arena.
    OutsideArena {
        what: Piece,
        span: Span,
        arena: usize,
    },
    /// A header name is not UTF-8.
    HeaderName { header: usize },
    /// An output is of a record outside the batch, or before the previous output's.
    OutputOrder {
        output: usize,
        record: u32,
        previous: u32,
        records: usize,
    },
    /// An output's headers lie outside the out-batch's headers.
    OutputHeaders {
        output: usize,
        span: Span,
        headers: usize,
    },
}

/// What bytes of an out-batch [`Malformed::OutsideArena`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece {
    HeaderName,
    HeaderValue,
    KeyOrValue,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Malformed::Verdicts { verdicts, records } => {
                write!(f, "{verdicts} verdicts for a batch of {records} records")
            }
            Malformed::ErrorOutside { record, records } => {
                write!(f, "an error for record {record} of a batch of {records}")
            }
            Malformed::OutputsAndError { record } => {
                write!(f, "record {record} has both outputs and an error")
            }
            Malformed::OutsideArena { what, span, arena } => {
                let what = match what {
                    Piece::HeaderName => "a header name",
                    Piece::HeaderValue => "a header value",
                    Piece::KeyOrValue => "a key or value",
                };
                write!(
                    f,
                    "{what} at {}..{} is outside its arena of {arena} bytes",
                    span.start,
                    span.end()
                )
            }
            Malformed::HeaderName { header } => write!(f, "header name {header} is not UTF-8"),
            Malformed::OutputOrder {
                output,
                record,
                previous,
                records,
            } => write!(
                f,
                "output {output} is of record {record}, after one of record {previous}, in a \
                 batch of {records} (outputs must come in input order)"
            ),
            Malformed::OutputHeaders {
                output,
                span,
                headers,
            } => write!(
                f,
                "output {output} has headers {}..{} of {headers}",
                span.start,
                span.end()
            ),
        }
    }
}

/// Whether a filter's answer to a batch of `records` records is well formed: `verdicts` of
/// them, and `errors` only for records of the batch.
pub fn check_verdicts(
    records: usize,
    verdicts: usize,
    errors: &[(u32, String)],
) -> Result<(), Malformed> {
    if verdicts != records {
        return Err(Malformed::Verdicts { verdicts, records });
    }
    errors_inside(records, errors)
}

impl Verdicts {
    /// Whether this is a well-formed answer to a batch of `records` records; see
    /// [`check_verdicts`].
    pub fn check(&self, records: usize) -> Result<(), Malformed> {
        check_verdicts(records, self.keep.len(), &self.errors)
    }
}

/// Whether a transform's answer to a batch of `records` records is well formed: its headers'
/// and outputs' spans lie in its `arena` and `headers`, header names are UTF-8, outputs are of
/// records of the batch in input order, and errors are of records of the batch that have no
/// outputs.
///
/// `headers` and `outputs` are this crate's descriptors or a binding generator's mirrors of
/// them, read one at a time.
pub fn check_out_batch<H, O>(
    records: usize,
    arena: &[u8],
    headers: &[H],
    outputs: &[O],
    errors: &[(u32, String)],
) -> Result<(), Malformed>
where
    H: Copy + Into<HeaderRef>,
    O: Copy + Into<OutputRef>,
{
    let in_arena = |span: Span, what: Piece| match span.slice(arena) {
        Some(bytes) => Ok(bytes),
        None => Err(Malformed::OutsideArena {
            what,
            span,
            arena: arena.len(),
        }),
    };
    for (j, h) in headers.iter().enumerate() {
        let h: HeaderRef = (*h).into();
        let name = in_arena(h.key, Piece::HeaderName)?;
        in_arena(h.value, Piece::HeaderValue)?;
        if core::str::from_utf8(name).is_err() {
            return Err(Malformed::HeaderName { header: j });
        }
    }
    let mut previous = 0;
    for (j, o) in outputs.iter().enumerate() {
        let o: OutputRef = (*o).into();
        if o.input as usize >= records || o.input < previous {
            return Err(Malformed::OutputOrder {
                output: j,
                record: o.input,
                previous,
                records,
            });
        }
        previous = o.input;
        for part in [o.key, o.value] {
            if let Part::Bytes(span) = part {
                in_arena(span, Piece::KeyOrValue)?;
            }
        }
        if let Some(span) = o.headers {
            if span.slice(headers).is_none() {
                return Err(Malformed::OutputHeaders {
                    output: j,
                    span,
                    headers: headers.len(),
                });
            }
        }
    }
    errors_inside(records, errors)?;
    for (i, _) in errors {
        // Outputs are in input order (checked above).
        if outputs
            .binary_search_by_key(i, |o| (*o).into().input)
            .is_ok()
        {
            return Err(Malformed::OutputsAndError { record: *i });
        }
    }
    Ok(())
}

fn errors_inside(records: usize, errors: &[(u32, String)]) -> Result<(), Malformed> {
    match errors.iter().find(|(i, _)| *i as usize >= records) {
        Some(&(record, _)) => Err(Malformed::ErrorOutside { record, records }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use alloc::{
        string::{String, ToString},
        vec,
        vec::Vec,
    };

    use super::*;
    use crate::OutBatch;

    fn span(start: u32, len: u32) -> Span {
        Span { start, len }
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

    fn why(out: &OutBatch) -> String {
        out.check(2).unwrap_err().to_string()
    }

    #[test]
    fn well_formed_answers_pass() {
        let same = Part::Same;
        let answer = out(vec![
            output(0, same, Part::Bytes(span(0, 3)), Some(span(0, 1))),
            output(0, Part::Absent, same, None),
            output(1, Part::Bytes(span(5, 0)), same, Some(span(1, 0))),
        ]);
        assert_eq!(answer.check(2), Ok(()));
        let mut failed = out(Vec::new());
        failed.errors = vec![(0, "no".into()), (1, "no".into())];
        assert_eq!(failed.check(2), Ok(()));
        let verdicts = Verdicts {
            keep: vec![true, false],
            errors: vec![(1, "no".into())],
        };
        assert_eq!(verdicts.check(2), Ok(()));
    }

    #[test]
    fn malformed_answers_are_refused_with_a_reason() {
        let same = Part::Same;
        let bad = |outputs| why(&out(outputs));
        assert_eq!(
            bad(vec![output(2, same, same, None)]),
            "output 0 is of record 2, after one of record 0, in a batch of 2 (outputs must come \
             in input order)"
        );
        assert_eq!(
            bad(vec![
                output(1, same, same, None),
                output(0, same, same, None)
            ]),
            "output 1 is of record 0, after one of record 1, in a batch of 2 (outputs must come \
             in input order)"
        );
        assert_eq!(
            bad(vec![output(0, Part::Bytes(span(3, 9)), same, None)]),
            "a key or value at 3..12 is outside its arena of 5 bytes"
        );
        assert_eq!(
            bad(vec![output(0, same, Part::Bytes(span(u32::MAX, 2)), None)]),
            "a key or value at 4294967295..4294967297 is outside its arena of 5 bytes"
        );
        assert_eq!(
            bad(vec![output(0, same, same, Some(span(0, 2)))]),
            "output 0 has headers 0..2 of 1"
        );

        let mut both = out(vec![output(1, same, same, None)]);
        both.errors.push((1, "no".into()));
        assert_eq!(why(&both), "record 1 has both outputs and an error");
        let mut stray = out(Vec::new());
        stray.errors.push((2, "no".into()));
        assert_eq!(why(&stray), "an error for record 2 of a batch of 2");

        let mut not_utf8 = out(Vec::new());
        not_utf8.arena[3] = 0xff;
        assert_eq!(why(&not_utf8), "header name 0 is not UTF-8");
        let mut outside = out(Vec::new());
        outside.headers[0].key = span(4, 2);
        assert_eq!(
            why(&outside),
            "a header name at 4..6 is outside its arena of 5 bytes"
        );
        outside.headers[0].key = span(3, 1);
        outside.headers[0].value = span(6, 0);
        assert_eq!(
            why(&outside),
            "a header value at 6..6 is outside its arena of 5 bytes"
        );

        let short = Verdicts {
            keep: vec![true],
            errors: Vec::new(),
        };
        assert_eq!(
            short.check(2).unwrap_err().to_string(),
            "1 verdicts for a batch of 2 records"
        );
        let stray = Verdicts {
            keep: vec![true, true],
            errors: vec![(5, "?".into())],
        };
        assert_eq!(
            stray.check(2).unwrap_err().to_string(),
            "an error for record 5 of a batch of 2"
        );
    }

    /// A binding generator's own output descriptor, as the host has.
    #[derive(Clone, Copy)]
    struct TheirOutput(u32);

    impl From<TheirOutput> for OutputRef {
        fn from(o: TheirOutput) -> OutputRef {
            output(o.0, Part::Same, Part::Same, None)
        }
    }

    #[test]
    fn other_descriptor_types_are_checked_alike() {
        let outputs = [TheirOutput(0), TheirOutput(1)];
        let errors = ["x".to_string()].map(|e| (1, e));
        let headers: [HeaderRef; 0] = [];
        let why = check_out_batch(2, b"", &headers, &outputs, &errors).unwrap_err();
        assert_eq!(why, Malformed::OutputsAndError { record: 1 });
        assert_eq!(
            check_out_batch(2, b"", &headers, &outputs[..1], &errors),
            Ok(())
        );
    }
}
