//! `weir diff`: two builds of a plugin (or two pipeline files) over the same records, and what
//! changed, record by record: outputs added, removed or changed (values compared as JSON where
//! both are), and errors that appeared or went away. Exits 1 when anything differs, so a
//! plugin's CI can gate on it.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, Result};
use serde_json::{json, Value};
use weir::{chain::BatchOutput, engine::Record, jsonl};

/// Run two builds of a plugin, or two pipelines, over the same records and show what changed.
#[derive(clap::Args)]
pub struct DiffCommand {
    /// The build (`.wasm`) or pipeline (`.toml`) to compare against.
    old: PathBuf,
    /// The build or pipeline to compare.
    new: PathBuf,
    #[command(flatten)]
    records: super::test::Records,
    /// How differences are written: for people, or one JSON object per line.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Text,
    Json,
}

/// What one input made, on one side: its outputs, and its errors as `kind: message`.
#[derive(Default)]
struct Made {
    records: Vec<Record>,
    errors: Vec<String>,
}

/// The counts of the summary line.
#[derive(Default)]
struct Summary {
    records: u64,
    differ: u64,
    changed: u64,
    added: u64,
    removed: u64,
    errors_appeared: u64,
    errors_gone: u64,
}

impl DiffCommand {
    /// 0 when the two agree, 1 when they differ, 2 when the comparison could not be made (as
    /// diff(1) does), so a CI gate tells a change from a breakage.
    pub fn execute(self) -> Result<ExitCode> {
        match self.run() {
            Ok(true) => Ok(ExitCode::SUCCESS),
            Ok(false) => Ok(ExitCode::FAILURE),
            Err(e) => {
                eprintln!("error: {e:#}");
                Ok(ExitCode::from(2))
            }
        }
    }

    /// Whether the two agree on every record.
    fn run(&self) -> Result<bool> {
        let config = self.records.config.as_deref();
        let mut old = super::test::chain_of(&self.old, config)?;
        let mut new = super::test::chain_of(&self.new, config)?;
        let (source, input) = self.records.open()?;
        let mut summary = Summary::default();
        for line in jsonl::records(input, &source, self.records.format) {
            let (n, parsed) = line.with_context(|| format!("reading {source}"))?;
            let record = parsed.map_err(|e| anyhow::anyhow!("{source}:{n}: {e}"))?;
            summary.records += 1;
            let place = format!("line {n}");
            let (a, b) = (
                made(old.process(vec![record.clone()])),
                made(new.process(vec![record])),
            );
            self.compare(&place, &a, &b, &mut summary);
        }
        // What windows still held at the end of the input, fired by both.
        let (a, b) = (made(old.finish()), made(new.finish()));
        self.compare("end of input", &a, &b, &mut summary);
        self.report(&summary);
        Ok(summary.differ == 0)
    }

    /// Print how `b` differs from `a` at `place`, counting it.
    fn compare(&self, place: &str, a: &Made, b: &Made, summary: &mut Summary) {
        let mut changes = Vec::new();
        for i in 0..a.records.len().max(b.records.len()) {
            match (a.records.get(i), b.records.get(i)) {
                (Some(x), Some(y)) => {
                    let fields = record_diff(x, y);
                    if !fields.is_empty() {
                        summary.changed += 1;
                        changes
                            .push(json!({"output": i + 1, "change": "changed", "fields": fields}));
                    }
                }
                (Some(x), None) => {
                    summary.removed += 1;
                    changes.push(json!({"output": i + 1, "change": "removed", "record": shown(x)}));
                }
                (None, Some(y)) => {
                    summary.added += 1;
                    changes.push(json!({"output": i + 1, "change": "added", "record": shown(y)}));
                }
                (None, None) => unreachable!(),
            }
        }
        for e in a.errors.iter().filter(|e| !b.errors.contains(e)) {
            summary.errors_gone += 1;
            changes.push(json!({"change": "error gone", "error": e}));
        }
        for e in b.errors.iter().filter(|e| !a.errors.contains(e)) {
            summary.errors_appeared += 1;
            changes.push(json!({"change": "error appeared", "error": e}));
        }
        if changes.is_empty() {
            return;
        }
        summary.differ += 1;
        for change in changes {
            match self.output {
                Output::Json => {
                    let mut change = change;
                    change["at"] = place.into();
                    println!("{change}");
                }
                Output::Text => println!("{place}: {}", text(&change)),
            }
        }
    }

    fn report(&self, s: &Summary) {
        let line = format!(
            "weir diff: {} records, {} differ: {} outputs changed, {} added, {} removed; {} errors \
             appeared, {} gone",
            s.records, s.differ, s.changed, s.added, s.removed, s.errors_appeared, s.errors_gone
        );
        match self.output {
            Output::Text => println!("{line}"),
            Output::Json => println!(
                "{}",
                json!({"summary": {"records": s.records, "differ": s.differ,
                    "changed": s.changed, "added": s.added, "removed": s.removed,
                    "errors_appeared": s.errors_appeared, "errors_gone": s.errors_gone}})
            ),
        }
    }
}

fn made(out: BatchOutput) -> Made {
    Made {
        records: out.records,
        errors: out
            .failures
            .into_iter()
            .map(|f| format!("{}: {}", f.error.kind.as_str(), f.error.message))
            .collect(),
    }
}

/// A change as a line for people.
fn text(change: &Value) -> String {
    let output = change["output"].as_u64().unwrap_or(0);
    match change["change"].as_str().unwrap_or_default() {
        "changed" => {
            let fields: Vec<String> = change["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| match (&f["old"], &f["new"]) {
                    (Value::Null, new) if f.get("old").is_none() => {
                        format!("{} added {new}", f["at"].as_str().unwrap_or(""))
                    }
                    (old, _) if f.get("new").is_none() => {
                        format!("{} removed (was {old})", f["at"].as_str().unwrap_or(""))
                    }
                    (old, new) => format!("{} {old} → {new}", f["at"].as_str().unwrap_or("")),
                })
                .collect();
            format!("output {output} changed: {}", fields.join("; "))
        }
        "added" | "removed" => {
            format!(
                "output {output} {}: {}",
                change["change"].as_str().unwrap(),
                change["record"]
            )
        }
        other => format!("{other}: {}", change["error"].as_str().unwrap_or_default()),
    }
}

/// A record as JSON, for a change that shows it whole.
fn shown(r: &Record) -> Value {
    json!({
        "key": r.key.as_deref().map(bytes),
        "value": r.value.as_deref().map(bytes),
        "headers": r.headers.iter().map(|h| json!([h.key, bytes(&h.value)])).collect::<Vec<_>>(),
        "timestamp": r.timestamp,
    })
}

/// Bytes as the JSON they hold, else as text (lossily, for showing only).
fn bytes(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or_else(|_| String::from_utf8_lossy(b).into_owned().into())
}

/// What differs between two outputs: `{at, old, new}` per difference, `at` naming the field
/// (`key`, `headers`, `timestamp`) or a JSON pointer into the value (`value/amount`).
fn record_diff(a: &Record, b: &Record) -> Vec<Value> {
    let mut out = Vec::new();
    if a.key != b.key {
        out.push(json!({"at": "key", "old": a.key.as_deref().map(bytes), "new": b.key.as_deref().map(bytes)}));
    }
    match (a.value.as_deref(), b.value.as_deref()) {
        (Some(x), Some(y)) if x != y => {
            match (serde_json::from_slice(x), serde_json::from_slice(y)) {
                (Ok(x), Ok(y)) => value_diff("value", &x, &y, &mut out),
                _ => out.push(json!({"at": "value", "old": bytes(x), "new": bytes(y)})),
            }
        }
        (x, y) if x != y => {
            out.push(json!({"at": "value", "old": x.map(bytes), "new": y.map(bytes)}))
        }
        _ => {}
    }
    let headers = |r: &Record| -> Vec<Value> {
        r.headers
            .iter()
            .map(|h| json!([h.key, bytes(&h.value)]))
            .collect()
    };
    let raw = |r: &Record| -> Vec<(String, Vec<u8>)> {
        r.headers
            .iter()
            .map(|h| (h.key.clone(), h.value.clone()))
            .collect()
    };
    if raw(a) != raw(b) {
        out.push(json!({"at": "headers", "old": headers(a), "new": headers(b)}));
    }
    if a.timestamp != b.timestamp {
        out.push(json!({"at": "timestamp", "old": a.timestamp, "new": b.timestamp}));
    }
    out
}

/// Whether two numbers are the same: whole numbers exactly (past 2^53 too), else as floats, so
/// 1 and 1.0 are the same.
fn same_number(x: &serde_json::Number, y: &serde_json::Number) -> bool {
    let whole = |n: &serde_json::Number| n.as_i64().map(i128::from).or(n.as_u64().map(i128::from));
    match (whole(x), whole(y)) {
        (Some(i), Some(j)) => i == j,
        _ => x.as_f64() == y.as_f64(),
    }
}

/// The differences between two JSON values under `at`: objects member by member (a member
/// only one side has is added or removed), anything else whole. Numbers are equal when they
/// are the same number (1 and 1.0).
fn value_diff(at: &str, a: &Value, b: &Value, out: &mut Vec<Value>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                let here = pointer(at, k);
                match y.get(k) {
                    Some(w) => value_diff(&here, v, w, out),
                    None => out.push(json!({"at": here, "old": v})),
                }
            }
            for (k, w) in y.iter().filter(|(k, _)| !x.contains_key(*k)) {
                out.push(json!({"at": pointer(at, k), "new": w}));
            }
        }
        (Value::Number(x), Value::Number(y)) if same_number(x, y) => {}
        (x, y) if x != y => out.push(json!({"at": at, "old": x, "new": y})),
        _ => {}
    }
}

/// `at` extended by the member `key`, escaped as JSON pointers escape it.
fn pointer(at: &str, key: &str) -> String {
    format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"))
}
