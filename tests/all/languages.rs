//! Plugins in other languages: the Python builds of the example plugins against their Rust
//! builds on the same records, and what the sandbox grants a Python interpreter.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use serde_json::{json, Value};

use crate::common::{component, scratch};

/// `weir test PLUGIN --format envelope --config CONFIG` over `input`: its stdout (the outputs)
/// and its error lines with the stage's name taken out.
fn weir_test(plugin: &str, config: &Value, input: &Path) -> (String, Vec<String>) {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["test", "--format", "envelope", "--config"])
        .arg(config.to_string())
        .arg("--input")
        .arg(input)
        .arg(component(plugin))
        .env("WEIR_CACHE_DIR", scratch_cache())
        .stdin(Stdio::null())
        .output()
        .expect("weir test runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors = stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .map(|l| l.replace(&format!("`{plugin}`"), "`PLUGIN`"))
        .collect();
    (String::from_utf8(out.stdout).unwrap(), errors)
}

/// The component cache the CLI tests share (compiling a Python component takes seconds).
fn scratch_cache() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| crate::common::root().join("target"));
    target.join("weir-cli-test-cache")
}

/// Records every example is tried on: numbers whole and not, a missing field, a string value,
/// a tombstone, keys repeated (for state), headers and timestamps kept.
fn orders() -> Vec<Value> {
    let order = |key: &str, value: Value, ts: i64| json!({"key": key, "value": value, "headers": {"trace": format!("t{ts}")}, "timestamp": ts});
    vec![
        order("a", json!({"amount": 150, "country": "DE"}), 1),
        order("b", json!({"amount": 50}), 2),
        order("a", json!({"amount": 0.5, "note": "ünïcode"}), 3),
        order("a", json!({"price": 3}), 4),
        order("c", json!("just a string"), 5),
        order("b", json!({"amount": 10, "nested": {"amount": 999}}), 6),
        order("a", Value::Null, 7),
        order("a", json!({"amount": 7}), 8),
        order("d", json!({"amount": "12"}), 9),
        order("b", json!({"amount": -1e3}), 10),
    ]
}

fn same_behaviour(rust: &str, python: &str, configs: &[Value]) {
    let dir = scratch();
    let input = dir.path().join("orders.jsonl");
    let lines: Vec<String> = orders().iter().map(|o| format!("{o}\n")).collect();
    std::fs::write(&input, lines.concat()).unwrap();
    for config in configs {
        let (rust_out, rust_errors) = weir_test(rust, config, &input);
        let (py_out, py_errors) = weir_test(python, config, &input);
        assert!(!rust_out.is_empty(), "{rust} {config}: no outputs");
        assert_eq!(py_out, rust_out, "{python} against {rust}, config {config}");
        assert_eq!(
            py_errors, rust_errors,
            "{python} against {rust}, config {config}"
        );
    }
}

#[test]
fn python_json_filter_keeps_what_the_rust_one_keeps() {
    let condition = |op: &str, value: Value| json!({"path": "/amount", "op": op, "value": value});
    let mut configs: Vec<Value> = ["eq", "ne", "gt", "ge", "lt", "le"]
        .iter()
        .map(|op| json!({"where": [condition(op, json!(50))]}))
        .collect();
    configs.extend([
        json!({"where": [{"path": "/amount", "op": "exists"}], "tombstones": "drop"}),
        json!({"where": [condition("in", json!([150, 7, "12"]))]}),
        json!({"where": [{"path": "/note", "op": "regex", "value": "^ü"}, condition("lt", json!(1))], "match": "any"}),
        json!({"where": [{"path": "/nested/amount", "op": "gt", "value": 100}]}),
        json!({"where": [{"path": "", "op": "eq", "value": "just a string"}]}),
    ]);
    same_behaviour("json-filter", "json-filter-py", &configs);
}

#[test]
fn python_running_total_keeps_the_rust_ones_totals_and_failures() {
    same_behaviour(
        "running-total",
        "running-total-py",
        &[
            json!({"field": "/amount"}),
            json!({"field": "/amount", "into": "/totals"}),
            json!({"field": "/amount", "into": "/country/totals"}),
        ],
    );
}

#[test]
fn a_python_plugin_gets_no_files_network_clock_or_waiting() {
    let dir = scratch();
    let input = dir.path().join("attempts.jsonl");
    let attempts = [
        "open",
        "write",
        "listdir",
        "socket",
        "clock",
        "sleep",
        "environment",
    ];
    let lines: Vec<String> = attempts
        .iter()
        .map(|a| format!("{}\n", json!({"key": a, "value": {"do": a}})))
        .collect();
    std::fs::write(&input, lines.concat()).unwrap();
    let (out, errors) = weir_test("escape-py", &json!({}), &input);
    // Kept: the clock reads the Unix epoch and stands still through a sleep of an hour (which
    // returns at once), and the environment is empty.
    let kept: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["key"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(kept, ["clock", "sleep", "environment"], "{errors:#?}");
    let expected = [
        "No such file or directory: '/etc/hostname'",
        "No such file or directory: '/tmp/escape-py'",
        "No such file or directory: '/'",
        "No module named 'socket'",
    ];
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    for (error, what) in errors.iter().zip(expected) {
        assert!(error.contains(what), "{error} lacks {what}");
    }
    assert!(!Path::new("/tmp/escape-py").exists());
}
