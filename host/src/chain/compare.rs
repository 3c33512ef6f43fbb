//! What differs between what two builds made of one input: outputs changed (values compared
//! as JSON where both are), added or removed, and errors that appeared or went away. `weir
//! diff` prints it per input; a stage's shadow counts it and logs the first few.

use serde_json::{json, Value};

use crate::engine::Record;

/// What one input made on one side: its outputs, and its errors as `kind: message`.
#[derive(Clone, Copy)]
pub struct Side<'a> {
    pub records: &'a [Record],
    pub errors: &'a [String],
}

/// The changes from `a` to `b`, one JSON object each: `{"output": n, "change": "changed",
/// "fields": [...]}`, `"added"`/`"removed"` with the `record`, or `"error appeared"`/`"error
/// gone"` with the `error`. Empty when the two agree. Cheap when they do: values are parsed
/// only where their bytes differ.
pub fn changes(a: Side, b: Side) -> Vec<Value> {
    let mut changes = Vec::new();
    for i in 0..a.records.len().max(b.records.len()) {
        match (a.records.get(i), b.records.get(i)) {
            (Some(x), Some(y)) => {
                let fields = record_diff(x, y);
                if !fields.is_empty() {
                    changes.push(json!({"output": i + 1, "change": "changed", "fields": fields}));
                }
            }
            (Some(x), None) => {
                changes.push(json!({"output": i + 1, "change": "removed", "record": shown(x)}))
            }
            (None, Some(y)) => {
                changes.push(json!({"output": i + 1, "change": "added", "record": shown(y)}))
            }
            (None, None) => unreachable!(),
        }
    }
    for e in a.errors.iter().filter(|e| !b.errors.contains(e)) {
        changes.push(json!({"change": "error gone", "error": e}));
    }
    for e in b.errors.iter().filter(|e| !a.errors.contains(e)) {
        changes.push(json!({"change": "error appeared", "error": e}));
    }
    changes
}

/// A change (one of [`changes`]) as a line for people: `output 1 changed: value/sum 357 →
/// 350`.
pub fn describe(change: &Value) -> String {
    let output = change["output"].as_u64().unwrap_or(0);
    match change["change"].as_str().unwrap_or_default() {
        "changed" => {
            let fields: Vec<String> = change["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| {
                    let at = f["at"].as_str().unwrap_or("");
                    match (f.get("old"), f.get("new")) {
                        (None, Some(new)) => format!("{at} added {new}"),
                        (Some(old), None) => format!("{at} removed (was {old})"),
                        (old, new) => format!(
                            "{at} {} → {}",
                            old.unwrap_or(&Value::Null),
                            new.unwrap_or(&Value::Null)
                        ),
                    }
                })
                .collect();
            format!("output {output} changed: {}", fields.join("; "))
        }
        kind @ ("added" | "removed") => format!("output {output} {kind}: {}", change["record"]),
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
    if a.headers != b.headers {
        let headers = |r: &Record| -> Vec<Value> {
            r.headers
                .iter()
                .map(|h| json!([h.key, bytes(&h.value)]))
                .collect()
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value: &str) -> Record {
        Record {
            value: Some(value.as_bytes().to_vec()),
            ..Record::default()
        }
    }

    #[test]
    fn values_are_compared_as_json_members_and_numbers() {
        let (a, b) = (
            [record(r#"{"sum":357,"n":1,"gone":true}"#)],
            [record(r#"{"n":1.0,"sum":350,"new":"x"}"#)],
        );
        let found = changes(
            Side {
                records: &a,
                errors: &[],
            },
            Side {
                records: &b,
                errors: &[],
            },
        );
        assert_eq!(found.len(), 1);
        assert_eq!(
            describe(&found[0]),
            "output 1 changed: value/sum 357 → 350; value/gone removed (was true); value/new \
             added \"x\""
        );
        let same = [record(r#"{"n":1}"#)];
        let also = [record(r#"{"n":1.0}"#)];
        let agree = changes(
            Side {
                records: &same,
                errors: &[],
            },
            Side {
                records: &also,
                errors: &[],
            },
        );
        assert!(agree.is_empty(), "{agree:?}");
    }

    #[test]
    fn outputs_and_errors_that_only_one_side_has_are_named() {
        let a = [record("1"), record("2")];
        let errors = ["timeout: 2s".to_string()];
        let found = changes(
            Side {
                records: &a,
                errors: &[],
            },
            Side {
                records: &a[..1],
                errors: &errors,
            },
        );
        let lines: Vec<String> = found.iter().map(describe).collect();
        assert_eq!(
            lines,
            [
                "output 2 removed: {\"key\":null,\"value\":2,\"headers\":[],\"timestamp\":0}",
                "error appeared: timeout: 2s"
            ]
        );
    }
}
