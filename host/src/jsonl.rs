//! `weir test`: records from a JSONL file through a chain, without a broker.
//!
//! Each input line becomes a record whose coordinates are the file (topic), partition 0 and the
//! line number (offset), so every error names the line it came from.

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
    /// Records a window stage found too late for all their windows.
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
    let topic = source.to_string();
    let mut summary = Summary::default();
    let mut batch = Vec::with_capacity(BATCH);
    for (n, line) in input.lines().enumerate() {
        let line_no = n as i64 + 1;
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        summary.input += 1;
        match parse_line(&line, format) {
            Ok(mut rec) => {
                rec.topic = topic.clone();
                rec.offset = line_no;
                batch.push(rec);
            }
            Err(e) => {
                summary.errors += 1;
                writeln!(err, "error: {source}:{line_no}: {e}")?;
            }
        }
        // Window stages advance the watermark per batch: one record per batch makes a file's
        // result that of a stream with a watermark after every record, whatever its size.
        if batch.len() == BATCH || chain.has_windows() {
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
    let offsets = if chain.has_windows() {
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
            "late: {source}:{}: stage `{}`: behind the watermark {} by more than the allowed \
             lateness",
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
    Ok(())
}

/// One input line to a record (coordinates are filled in by the caller); `Err` says why it is
/// not a record of its format.
fn parse_line(line: &str, format: Format) -> Result<Record, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
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
        Format::Value => rec.value = Some(line.trim().as_bytes().to_vec()),
        Format::Envelope => {
            let Value::Object(mut env) = value else {
                return Err("an envelope line must be a JSON object".into());
            };
            for field in env.keys() {
                if !["key", "value", "headers", "timestamp"].contains(&field.as_str()) {
                    return Err(format!(
                        "unknown envelope field `{field}` (expected key, value, headers, timestamp)"
                    ));
                }
            }
            rec.key = match env.remove("key") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.into_bytes()),
                Some(other) => Some(other.to_string().into_bytes()),
            };
            rec.value = match env.remove("value") {
                None | Some(Value::Null) => None,
                Some(v) => Some(v.to_string().into_bytes()),
            };
            if let Some(headers) = env.remove("headers") {
                let Value::Object(headers) = headers else {
                    return Err("`headers` must be an object of strings".into());
                };
                for (key, v) in headers {
                    let Value::String(v) = v else {
                        return Err(format!("header `{key}` must be a string"));
                    };
                    rec.headers.push(Header {
                        key,
                        value: v.into_bytes(),
                    });
                }
            }
            if let Some(ts) = env.remove("timestamp") {
                rec.timestamp = ts.as_i64().ok_or("`timestamp` must be an integer (ms)")?;
            }
        }
    }
    Ok(rec)
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
        assert!(parse_line(r#"{"timestamp":"x"}"#, Format::Envelope)
            .unwrap_err()
            .to_string()
            .contains("integer"));
    }

    #[test]
    fn tombstones_print_null() {
        let rec = parse_line(r#"{"key":"k","value":null}"#, Format::Envelope).unwrap();
        let mut out = Vec::new();
        write_record(&mut out, &rec, Format::Value).unwrap();
        assert_eq!(out, b"null\n");
    }
}
