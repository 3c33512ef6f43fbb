//! `weir diff`: two builds, or two pipelines, over the same records; what changed, record by
//! record, and an exit code a plugin's CI can gate on.

use std::process::{Command, Output};

use serde_json::{json, Value};

use crate::common::{component, scratch, weir_bin};

fn diff(args: &[&str]) -> (Output, String) {
    let out = Command::new(weir_bin())
        .arg("diff")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    (out, stdout)
}

/// Orders of one key: amounts 150, none, 7 and 200.
fn orders(dir: &std::path::Path) -> String {
    let lines: Vec<String> = [
        json!({"amount": 150}),
        json!({"price": 3}),
        json!({"amount": 7}),
        json!({"amount": 200}),
    ]
    .iter()
    .map(|v| format!("{}\n", json!({"key": "a", "value": v})))
    .collect();
    let path = dir.join("orders.jsonl");
    std::fs::write(&path, lines.concat()).unwrap();
    path.display().to_string()
}

#[test]
fn two_builds_that_agree_differ_in_nothing() {
    let dir = scratch();
    let input = orders(dir.path());
    let config = r#"{"field": "/amount", "into": "/totals"}"#;
    let (rust, go) = (component("running-total"), component("running-total-go"));
    let (out, stdout) = diff(&[
        rust.to_str().unwrap(),
        go.to_str().unwrap(),
        "--config",
        config,
        "--format",
        "envelope",
        "--input",
        &input,
    ]);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout,
        "weir diff: 4 records, 0 differ: 0 outputs changed, 0 added, 0 removed; 0 errors appeared, 0 gone\n"
    );
}

#[test]
fn a_changed_pipeline_shows_outputs_changed_removed_and_errors_gone() {
    let dir = scratch();
    let input = orders(dir.path());
    let total = format!(
        "[[stage]]\nname = \"total\"\nplugin = \"{}\"\nconfig = {{ field = \"/amount\" }}\n",
        component("running-total").display()
    );
    let filter = format!(
        "[[stage]]\nname = \"big\"\nplugin = \"{}\"\nconfig = {{ where = [{{ path = \"/amount\", op = \"gt\", value = 100 }}] }}\n\n",
        component("json-filter").display()
    );
    let old = dir.path().join("old.toml");
    let new = dir.path().join("new.toml");
    std::fs::write(&old, &total).unwrap();
    std::fs::write(&new, format!("{filter}{total}")).unwrap();
    let args = |output: &'static str| {
        vec![
            old.display().to_string(),
            new.display().to_string(),
            "--format".into(),
            "envelope".into(),
            "--input".into(),
            input.clone(),
            "--output".into(),
            output.into(),
        ]
    };
    let text_args = args("text");
    let (out, stdout) = diff(&text_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "line 2: error gone: plugin-error: no number at /amount",
            r#"line 3: output 1 removed: {"key":"a","value":{"count":2,"sum":157},"headers":[],"timestamp":0}"#,
            "line 4: output 1 changed: value/count 3 → 2; value/sum 357 → 350",
            "weir diff: 4 records, 3 differ: 1 outputs changed, 0 added, 1 removed; 0 errors appeared, 1 gone",
        ],
        "{stdout}"
    );
    // The same for machines: one object per change, then the summary.
    let json_args = args("json");
    let (out, stdout) = diff(&json_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(1));
    let objects: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objects.len(), 4, "{stdout}");
    assert_eq!(objects[2]["at"], "line 4");
    assert_eq!(
        objects[2]["fields"][1],
        json!({"at": "value/sum", "old": 357, "new": 350})
    );
    assert_eq!(objects[3]["summary"]["differ"], 3);
}

#[test]
fn a_comparison_that_cannot_be_made_exits_2_not_1() {
    let dir = scratch();
    let input = orders(dir.path());
    let rust = component("running-total");
    let missing = dir.path().join("missing.wasm");
    let (out, _) = diff(&[
        rust.to_str().unwrap(),
        missing.to_str().unwrap(),
        "--config",
        r#"{"field": "/amount"}"#,
        "--input",
        &input,
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing.wasm"), "{stderr}");
}

#[test]
fn both_sides_can_start_from_captured_state() {
    let dir = scratch();
    let input = dir.path().join("in.jsonl");
    let lines = [
        json!({"key": "k0", "value": {}}),
        json!({"key": "k1", "value": {}}),
    ];
    let lines: Vec<String> = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&input, lines.concat()).unwrap();
    // As `weir state scan --json` writes it: k0's count, kept by the second build (state
    // version 1), which the first cannot read.
    let state = dir.path().join("state.jsonl");
    let entry = json!({"topic": "in", "partition": 0, "key": "k0", "name": "seen",
                       "value": {"count": 10}, "state_version": 1, "expires_ms": null});
    std::fs::write(&state, format!("{entry}\n")).unwrap();
    let (v1, v2) = (component("count-v1"), component("count-v2"));
    let (out, stdout) = diff(&[
        v1.to_str().unwrap(),
        v2.to_str().unwrap(),
        "--format",
        "envelope",
        "--input",
        input.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(
        lines[0].starts_with(
            "line 1: output 1 added: {\"key\":\"k0\",\"value\":{\"count\":11,\"version\":2}"
        ),
        "{stdout}"
    );
    assert_eq!(
        lines[1],
        "line 1: error gone: state-migration: state `seen` of key `k0` was written by state \
         version 1 of the plugin, newer than this build's 0: a build cannot read the state of a \
         later one"
    );
    assert_eq!(lines[2], "line 2: output 1 changed: value/version 1 → 2");
    // A state file for a pipeline of several stages must name its stage.
    let pipeline = dir.path().join("p.toml");
    let body = format!(
        "[[stage]]\nname = \"a\"\nplugin = \"{v1}\"\n[[stage]]\nname = \"b\"\nplugin = \"{v1}\"\n",
        v1 = v1.display()
    );
    std::fs::write(&pipeline, body).unwrap();
    let p = pipeline.to_str().unwrap();
    let (out, _) = diff(&[
        p,
        p,
        "--input",
        input.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--state: name the stage whose state it is (STAGE=FILE; stages: a, b)"),
        "{err}"
    );
}
