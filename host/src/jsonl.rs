//! `weir test`: records from a JSONL file through a chain, without a broker.
//!
//! Each input line becomes a record whose coordinates are the file (topic), partition 0 and the
//! line number (offset), so every error names the line it came from; an envelope line may name
//! its topic and partition (`weir capture` writes them, and the offset it was read at).

use std::{
    io::{BufRead, Write},
    time::{Duration, Instant},
};

use base64::Engine as _;
use serde_json::{value::RawValue, Map, Value};

use crate::{
    chain::Chain,
    engine::{Header, Record},
    error::Error,
};

/// How records are written as JSON lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Each line is a record value (JSON).
    Value,
    /// Each line is `{"key":…,"value":…,"headers":{…},"timestamp":…}`.
    Envelope,
}

/// Counts of one run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub input: u64,
    pub output: u64,
    /// Inputs that produced no output and no error.
    pub filtered: u64,
    /// Unreadable lines plus records a stage failed on.
    pub errors: u64,
    /// Records a window or join stage found behind its watermark, too late to be taken in.
    pub late: u64,
    pub elapsed: Duration,
}

/// Records per call: large enough to amortise the call, small enough to keep memory flat.
const BATCH: usize = 256;

/// Run every line of `input` through `chain`, writing outputs to `out` and errors to `err`.
/// Lines that are not records, and records a stage fails on, are reported to `err` and counted;
/// the error is for reading or writing failing.
pub fn run(
    chain: &mut Chain,
    input: impl BufRead,
    source: &str,
    format: Format,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<Summary, Error> {
    run_lines(chain, input, source, format, out, err).map_err(|cause| Error::Io {
        what: format!("running {source} through the chain"),
        cause,
    })
}

fn run_lines(
    chain: &mut Chain,
    input: impl BufRead,
    source: &str,
    format: Format,
    out: &mut impl Write,
    err: &mut impl Write,
) -> std::io::Result<Summary> {
    let started = Instant::now();
    let mut summary = Summary::default();
    let mut batch = Vec::with_capacity(BATCH);
    for line in records(input, source, format) {
        let (line_no, parsed) = line?;
        summary.input += 1;
        match parsed {
            Ok(rec) => batch.push(rec),
            Err(e) => {
                summary.errors += 1;
                writeln!(err, "error: {source}:{line_no}: {e}")?;
            }
        }
        // Window stages advance the watermark per batch: one record per batch makes a file's
        // result that of a stream with a watermark after every record, whatever its size.
        if batch.len() == BATCH || chain.has_timers() {
            flush(chain, &mut batch, source, format, &mut summary, out, err)?;
        }
    }
    flush(chain, &mut batch, source, format, &mut summary, out, err)?;
    // The input is bounded: its end passes every window, as in Flink's batch mode.
    let rest = chain.finish();
    report(rest, &[], source, format, &mut summary, out, err)?;
    summary.elapsed = started.elapsed();
    Ok(summary)
}

fn flush(
    chain: &mut Chain,
    batch: &mut Vec<Record>,
    source: &str,
    format: Format,
    summary: &mut Summary,
    out: &mut impl Write,
    err: &mut impl Write,
) -> std::io::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let offsets: Vec<i64> = batch.iter().map(|r| r.offset).collect();
    let result = chain.process(std::mem::take(batch));
    // Records a window stage takes in come out later, as window results: not "filtered".
    let offsets = if chain.has_timers() {
        &[][..]
    } else {
        &offsets
    };
    report(result, offsets, source, format, summary, out, err)
}

/// Write a chain's outputs and errors and count them; `offsets` are the inputs' offsets, to
/// count those that produced nothing.
fn report(
    result: crate::chain::BatchOutput,
    offsets: &[i64],
    source: &str,
    format: Format,
    summary: &mut Summary,
    out: &mut impl Write,
    err: &mut impl Write,
) -> std::io::Result<()> {
    for late in &result.late {
        writeln!(
            err,
            "late: {source}:{}: stage `{}`: behind the watermark {}, later than the stage keeps \
             what it belongs with",
            late.record.offset, late.stage, late.watermark
        )?;
    }
    summary.late += result.late.len() as u64;
    for f in &result.failures {
        writeln!(
            err,
            "error: {source}:{}: stage `{}`: {}",
            f.record.offset, f.stage, f.error
        )?;
    }
    // An input is "filtered" when nothing came out of it and it did not fail.
    let mut produced: Vec<i64> = result.records.iter().map(|r| r.offset).collect();
    produced.extend(result.failures.iter().map(|f| f.record.offset));
    produced.extend(result.late.iter().map(|l| l.record.offset));
    produced.sort_unstable();
    produced.dedup();
    summary.filtered += offsets
        .iter()
        .filter(|o| produced.binary_search(o).is_err())
        .count() as u64;
    summary.errors += result.failures.len() as u64;
    summary.output += result.records.len() as u64;
    for rec in &result.records {
        write_record(out, rec, format)?;
    }
    // Records for a topic of their own (a join's `unmatched`): not the output, but shown.
    for (topic, rec) in &result.routed {
        write!(err, "to {topic}: ")?;
        write_record(err, rec, format)?;
    }
    Ok(())
}

/// The records of `input`'s lines, each with its line number; blank lines are skipped, and a
/// line that is not a record of `format` is `Err(why)`. A record's topic is the line's, else
/// `source`; its offset is its line number, whatever offset a captured line names, so every
/// error names the line.
pub fn records<'a>(
    input: impl BufRead + 'a,
    source: &'a str,
    format: Format,
) -> impl Iterator<Item = std::io::Result<(i64, Result<Record, String>)>> + 'a {
    input.lines().enumerate().filter_map(move |(n, line)| {
        let line = match line {
            Ok(line) if line.trim().is_empty() => return None,
            Ok(line) => line,
            Err(e) => return Some(Err(e)),
        };
        let line_no = n as i64 + 1;
        let parsed = parse_line(&line, format).map(|mut rec| {
            if rec.topic.is_empty() {
                rec.topic = source.to_string();
            }
            rec.offset = line_no;
            rec
        });
        Some(Ok((line_no, parsed)))
    })
}

/// One input line to a record (coordinates are filled in by the caller); `Err` says why it is
/// not a record of its format.
fn parse_line(line: &str, format: Format) -> Result<Record, String> {
    let mut rec = Record {
        key: None,
        value: None,
        headers: Vec::new(),
        timestamp: 0,
        topic: String::new(),
        partition: 0,
        offset: 0,
    };
    match format {
        Format::Value => {
            serde_json::from_str::<&RawValue>(line).map_err(|e| format!("not JSON: {e}"))?;
            rec.value = Some(line.trim().as_bytes().to_vec());
        }
        Format::Envelope => {
            // Each field's own text: a value's bytes are the line's, as `weir capture` wrote
            // them, and only the other fields are decoded.
            let fields: std::collections::BTreeMap<String, &RawValue> = serde_json::from_str(line)
                .map_err(|e| match serde_json::from_str::<&RawValue>(line) {
                    Ok(_) => "an envelope line must be a JSON object".to_string(),
                    Err(_) => format!("not JSON: {e}"),
                })?;
            for forms in [
                &["key", "key_base64"][..],
                &["value", "value_text", "value_base64"],
            ] {
                let given: Vec<&str> = forms
                    .iter()
                    .copied()
                    .filter(|f| fields.contains_key(*f))
                    .collect();
                if given.len() > 1 {
                    return Err(format!(
                        "`{}` are two forms of one field: give one",
                        given.join("` and `")
                    ));
                }
            }
            for (field, raw) in fields {
                envelope_field(&mut rec, &field, raw)?;
            }
        }
    }
    Ok(rec)
}

/// The envelope's fields: `Kafka's coordinates`, and lossless forms of key, value and headers
/// (`write_captured` writes them). See the README's "Records in files".
const ENVELOPE_FIELDS: &str = "key, key_base64, value, value_text, value_base64, headers, \
     timestamp, topic, partition, offset";

fn envelope_field(rec: &mut Record, field: &str, raw: &RawValue) -> Result<(), String> {
    if field == "value" {
        rec.value = (raw.get() != "null").then(|| raw.get().as_bytes().to_vec());
        return Ok(());
    }
    let v: Value = serde_json::from_str(raw.get()).map_err(|e| format!("`{field}`: {e}"))?;
    let base64 = |v: Value| -> Result<Vec<u8>, String> {
        let text = v.as_str().ok_or(format!("`{field}` must be a string"))?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| format!("`{field}` is not base64: {e}"))
    };
    match field {
        "key" => {
            rec.key = match v {
                Value::Null => None,
                Value::String(s) => Some(s.into_bytes()),
                other => Some(other.to_string().into_bytes()),
            }
        }
        "key_base64" => rec.key = Some(base64(v)?),
        "value_text" => match v {
            Value::String(s) => rec.value = Some(s.into_bytes()),
            _ => return Err("`value_text` must be a string".into()),
        },
        "value_base64" => rec.value = Some(base64(v)?),
        "headers" => rec.headers = headers(v)?,
        "timestamp" => rec.timestamp = v.as_i64().ok_or("`timestamp` must be an integer (ms)")?,
        "topic" => {
            rec.topic = v.as_str().ok_or("`topic` must be a string")?.to_string();
        }
        "partition" => {
            let p = v.as_i64().and_then(|p| i32::try_from(p).ok());
            rec.partition = p.ok_or("`partition` must be an integer")?;
        }
        "offset" => {
            rec.offset = v.as_i64().ok_or("`offset` must be an integer")?;
        }
        other => {
            return Err(format!(
                "unknown envelope field `{other}` (expected {ENVELOPE_FIELDS})"
            ))
        }
    }
    Ok(())
}

/// Headers as an object of strings, or, keeping order, repeats and any bytes, as a list of
/// `[name, value]` pairs whose value is a string, `{"base64": …}` or null (read as empty, as
/// weir's source reads a header without a value).
fn headers(v: Value) -> Result<Vec<Header>, String> {
    let pairs: Vec<(String, Value)> = match v {
        Value::Object(map) => map.into_iter().collect(),
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::Array(pair) if pair.len() == 2 => {
                    let mut pair = pair.into_iter();
                    match (pair.next(), pair.next()) {
                        (Some(Value::String(k)), Some(v)) => Ok((k, v)),
                        _ => Err("a header pair is [name, value] with a string name".to_string()),
                    }
                }
                _ => Err("`headers` as a list holds [name, value] pairs".to_string()),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err("`headers` must be an object of strings or a list of pairs".into()),
    };
    pairs
        .into_iter()
        .map(|(key, v)| {
            let value = match v {
                Value::String(s) => s.into_bytes(),
                Value::Null => Vec::new(),
                Value::Object(o) if o.len() == 1 && o.contains_key("base64") => {
                    let text = o["base64"]
                        .as_str()
                        .ok_or(format!("header `{key}`: `base64` must be a string"))?;
                    base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .map_err(|e| format!("header `{key}` is not base64: {e}"))?
                }
                _ => return Err(format!("header `{key}` must be a string")),
            };
            Ok(Header { key, value })
        })
        .collect()
}

/// Write one record as a JSON line.
pub fn write_record(out: &mut impl Write, rec: &Record, format: Format) -> std::io::Result<()> {
    match format {
        Format::Value => match &rec.value {
            Some(v) => {
                out.write_all(v)?;
                out.write_all(b"\n")
            }
            None => out.write_all(b"null\n"),
        },
        Format::Envelope => {
            /// Field order as documented; the value's own JSON is written as the plugin made it.
            #[derive(serde::Serialize)]
            struct Envelope<'a> {
                key: Value,
                value: ValueOut<'a>,
                headers: Map<String, Value>,
                timestamp: i64,
            }
            #[derive(serde::Serialize)]
            #[serde(untagged)]
            enum ValueOut<'a> {
                Json(&'a RawValue),
                Other(Value),
            }
            let value = match &rec.value {
                None => ValueOut::Other(Value::Null),
                Some(v) => match std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| serde_json::from_str::<&RawValue>(s).ok())
                {
                    Some(raw) => ValueOut::Json(raw),
                    None => ValueOut::Other(text_or_base64(v)),
                },
            };
            let env = Envelope {
                key: rec.key.as_deref().map_or(Value::Null, text_or_base64),
                value,
                headers: rec
                    .headers
                    .iter()
                    .map(|h| (h.key.clone(), text_or_base64(&h.value)))
                    .collect(),
                timestamp: rec.timestamp,
            };
            serde_json::to_writer(&mut *out, &env)?;
            out.write_all(b"\n")
        }
    }
}

/// One record read from Kafka as an envelope line that keeps every byte of it, for `weir
/// capture`: the value as JSON when its bytes are one line of JSON (written as they are),
/// else as `value_text` (UTF-8) or `value_base64`; the key as a string, else `key_base64`;
/// headers as an object when their names are distinct and their values UTF-8, else as a list of
/// `[name, value]` pairs (a value `null` when Kafka's was, `{"base64": …}` when not UTF-8).
pub fn write_captured(
    out: &mut impl Write,
    topic: &str,
    partition: i32,
    rec: &crate::kafka::log_reader::CommittedRecord,
) -> std::io::Result<()> {
    let mut line = Map::new();
    line.insert("topic".into(), topic.into());
    line.insert("partition".into(), partition.into());
    line.insert("offset".into(), rec.offset.into());
    line.insert("timestamp".into(), rec.timestamp.into());
    let b64 = |b: &[u8]| Value::String(base64::engine::general_purpose::STANDARD.encode(b));
    match rec.key.as_deref().map(std::str::from_utf8) {
        None => line.insert("key".into(), Value::Null),
        Some(Ok(text)) => line.insert("key".into(), text.into()),
        Some(Err(_)) => line.insert("key_base64".into(), b64(rec.key.as_deref().unwrap())),
    };
    line.insert("headers".into(), captured_headers(&rec.headers));
    let mut raw_value = None;
    match rec.value.as_deref() {
        None => {
            line.insert("value".into(), Value::Null);
        }
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) if is_one_line_of_json(text) => raw_value = Some(text),
            Ok(text) => {
                line.insert("value_text".into(), text.into());
            }
            Err(_) => {
                line.insert("value_base64".into(), b64(bytes));
            }
        },
    }
    let mut text = serde_json::to_string(&line)?;
    if let Some(raw) = raw_value {
        // Spliced in as it is: serde_json would write the value again in its own way.
        text.pop();
        text.push_str(",\"value\":");
        text.push_str(raw);
        text.push('}');
    }
    out.write_all(text.as_bytes())?;
    out.write_all(b"\n")
}

/// Whether `text` is exactly one JSON value with nothing around it and no line break in it.
fn is_one_line_of_json(text: &str) -> bool {
    !text.contains(['\n', '\r'])
        && serde_json::from_str::<&RawValue>(text).is_ok_and(|raw| raw.get().len() == text.len())
}

fn captured_headers(headers: &[(String, Option<Vec<u8>>)]) -> Value {
    let plain = headers.iter().enumerate().all(|(i, (k, v))| {
        v.as_deref().is_some_and(|v| std::str::from_utf8(v).is_ok())
            && headers[..i].iter().all(|(other, _)| other != k)
    });
    if plain {
        return headers
            .iter()
            .map(|(k, v)| (k.clone(), text_or_base64(v.as_deref().unwrap_or_default())))
            .collect::<Map<_, _>>()
            .into();
    }
    headers
        .iter()
        .map(|(k, v)| {
            let v = v.as_deref().map_or(Value::Null, text_or_base64);
            Value::Array(vec![k.clone().into(), v])
        })
        .collect()
}

/// UTF-8 bytes as a string; anything else as `{"base64": …}` so no byte is lost.
fn text_or_base64(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => Value::String(s.to_string()),
        Err(_) => {
            serde_json::json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips() {
        let line = r#"{"key":"k1","value":{"a":1},"headers":{"h":"v"},"timestamp":42}"#;
        let rec = parse_line(line, Format::Envelope).unwrap();
        assert_eq!(rec.key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(rec.timestamp, 42);
        let mut out = Vec::new();
        write_record(&mut out, &rec, Format::Envelope).unwrap();
        let back: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(line).unwrap());
    }

    #[test]
    fn bad_lines_say_why() {
        assert!(parse_line("{not json", Format::Value)
            .unwrap_err()
            .to_string()
            .contains("not JSON"));
        assert!(parse_line("[1]", Format::Envelope)
            .unwrap_err()
            .to_string()
            .contains("object"));
        assert!(parse_line(r#"{"val":1}"#, Format::Envelope)
            .unwrap_err()
            .to_string()
            .contains("unknown envelope field `val`"));
        assert!(
            parse_line(r#"{"value":1,"value_text":"1"}"#, Format::Envelope)
                .unwrap_err()
                .to_string()
                .contains("`value` and `value_text` are two forms")
        );
        assert!(parse_line(r#"{"timestamp":"x"}"#, Format::Envelope)
            .unwrap_err()
            .to_string()
            .contains("integer"));
    }

    /// What `write_captured` writes, an envelope line reads back byte for byte.
    #[test]
    fn captured_records_read_back_byte_for_byte() {
        use crate::kafka::log_reader::CommittedRecord;
        let header = |k: &str, v: Option<&[u8]>| (k.to_string(), v.map(<[u8]>::to_vec));
        let records = [
            (
                Some(&b"k1"[..]),
                Some(&br#"{"a": 1,  "b":[2.50 ]}"#[..]),
                vec![header("h", Some(b"v"))],
            ),
            (None, Some(&b"plain text, not JSON"[..]), vec![]),
            (
                Some(&b"\xff\x00key"[..]),
                Some(&b"\x00\x9f\x92\x96"[..]),
                vec![],
            ),
            (
                Some(&b"k"[..]),
                None,
                vec![header("a", Some(b"1")), header("a", Some(b"2"))],
            ),
            (
                Some(&b"k"[..]),
                Some(&b" 12 "[..]),
                vec![header("bin", Some(b"\xfe")), header("n", None)],
            ),
            (
                Some(&b"k"[..]),
                Some(&b"{\"a\":\n1}"[..]),
                vec![header("e", Some(b""))],
            ),
        ];
        for (i, (key, value, headers)) in records.into_iter().enumerate() {
            let rec = CommittedRecord {
                offset: 40 + i as i64,
                key: key.map(<[u8]>::to_vec),
                value: value.map(<[u8]>::to_vec),
                headers: headers.clone(),
                timestamp: 1_700_000_000_000,
            };
            let mut out = Vec::new();
            write_captured(&mut out, "orders", 3, &rec).unwrap();
            let line = String::from_utf8(out).unwrap();
            assert_eq!(line.matches('\n').count(), 1, "{line}");
            let back = parse_line(line.trim_end(), Format::Envelope).unwrap();
            assert_eq!(back.key, rec.key, "{line}");
            assert_eq!(back.value, rec.value, "{line}");
            assert_eq!(
                (back.topic.as_str(), back.partition, back.offset),
                ("orders", 3, rec.offset)
            );
            assert_eq!(back.timestamp, rec.timestamp);
            // A header Kafka sent without a value reads as an empty one, as the source reads it.
            let want: Vec<(String, Vec<u8>)> = headers
                .into_iter()
                .map(|(k, v)| (k, v.unwrap_or_default()))
                .collect();
            let got: Vec<(String, Vec<u8>)> =
                back.headers.into_iter().map(|h| (h.key, h.value)).collect();
            assert_eq!(got, want, "{line}");
        }
    }

    #[test]
    fn tombstones_print_null() {
        let rec = parse_line(r#"{"key":"k","value":null}"#, Format::Envelope).unwrap();
        let mut out = Vec::new();
        write_record(&mut out, &rec, Format::Value).unwrap();
        assert_eq!(out, b"null\n");
    }
}
