//! Plugins in other languages: the Python and JavaScript builds of the example plugins against
//! their Rust builds on the same records (with `weir test`, and in a pipeline on the broker), a
//! stage reloaded from one language's build to another's, and what the sandbox grants an
//! interpreter.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::{json, Value};

use crate::common::{
    component,
    kafka::{json_of, kafka, In, Out, Topics, Weir},
    scratch, weir_bin,
};
use weir::{
    chain::Chain,
    config::Pipeline,
    engine::{Engine, Record},
};

/// `weir test PLUGIN --format envelope --config CONFIG` over `input`: its stdout (the outputs)
/// and its error lines with the stage's name taken out.
fn weir_test(plugin: &str, config: &Value, input: &Path) -> (String, Vec<String>) {
    let (out, errors, _) = weir_test_logged(plugin, config, input);
    (out, errors)
}

/// [`weir_test`], and the whole log (stderr) beside.
fn weir_test_logged(plugin: &str, config: &Value, input: &Path) -> (String, Vec<String>, String) {
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
    (
        String::from_utf8(out.stdout).unwrap(),
        errors,
        stderr.into_owned(),
    )
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

/// Each of `builds` gives the outputs and errors the Rust build `rust` gives, config by config.
fn same_behaviour(rust: &str, builds: &[&str], configs: &[Value]) {
    let dir = scratch();
    let input = dir.path().join("orders.jsonl");
    let lines: Vec<String> = orders().iter().map(|o| format!("{o}\n")).collect();
    std::fs::write(&input, lines.concat()).unwrap();
    for config in configs {
        let (rust_out, rust_errors) = weir_test(rust, config, &input);
        assert!(!rust_out.is_empty(), "{rust} {config}: no outputs");
        for build in builds {
            let (out, errors) = weir_test(build, config, &input);
            assert_eq!(out, rust_out, "{build} against {rust}, config {config}");
            assert_eq!(
                errors, rust_errors,
                "{build} against {rust}, config {config}"
            );
        }
    }
}

#[test]
fn json_filter_in_python_javascript_and_go_keeps_what_the_rust_one_keeps() {
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
    same_behaviour(
        "json-filter",
        &["json-filter-py", "json-filter-js", "json-filter-go"],
        &configs,
    );
}

#[test]
fn running_total_in_python_javascript_and_go_keeps_the_rust_ones_totals_and_failures() {
    same_behaviour(
        "running-total",
        &["running-total-py", "running-total-js", "running-total-go"],
        &[
            json!({"field": "/amount"}),
            json!({"field": "/amount", "into": "/totals"}),
            json!({"field": "/amount", "into": "/country/totals"}),
        ],
    );
}

/// One error line per `expected` text, in order, each containing its text.
fn each_error_says(errors: &[String], expected: &[&str]) {
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    for (error, what) in errors.iter().zip(expected) {
        assert!(error.contains(what), "{error} lacks {what}");
    }
}

/// `weir test` of a sandbox-escaping plugin over one record per attempt (`{"do": attempt}`,
/// keyed by it): the attempts it kept, its error lines and its log.
fn attempt(plugin: &str, attempts: &[&str]) -> (Vec<String>, Vec<String>, String) {
    let dir = scratch();
    let input = dir.path().join("attempts.jsonl");
    let lines: Vec<String> = attempts
        .iter()
        .map(|a| format!("{}\n", json!({"key": a, "value": {"do": a}})))
        .collect();
    std::fs::write(&input, lines.concat()).unwrap();
    let (out, errors, log) = weir_test_logged(plugin, &json!({}), &input);
    let kept = out
        .lines()
        .map(|l| {
            let record: Value = serde_json::from_str(l).unwrap();
            record["key"].as_str().unwrap().to_string()
        })
        .collect();
    (kept, errors, log)
}

#[test]
fn a_python_plugin_gets_no_files_network_clock_or_waiting() {
    let attempts = [
        "open",
        "write",
        "listdir",
        "socket",
        "clock",
        "sleep",
        "environment",
        "print",
    ];
    let (kept, errors, log) = attempt("escape-py", &attempts);
    // Kept: the clock reads the Unix epoch and stands still through a sleep of an hour (which
    // returns at once), and the environment is empty.
    assert_eq!(
        kept,
        ["clock", "sleep", "environment", "print"],
        "{errors:#?}"
    );
    // What it prints is logged a line at a time, under its name; a line of 10,000 characters
    // in pieces of 4096 bytes.
    let printed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("plugin=\"escape-py\"") && l.contains("std"))
        .collect();
    assert!(
        printed[0].contains("INFO") && printed[0].contains("stdout: printed from a plugin"),
        "{log}"
    );
    assert!(printed[1].contains("WARN") && printed[1].contains("stderr: and to stderr"));
    let long: Vec<usize> = printed[2..]
        .iter()
        .map(|l| l.matches('x').count())
        .collect();
    assert_eq!(long, [4096, 4096, 1808], "{log}");
    let expected = [
        "No such file or directory: '/etc/hostname'",
        "No such file or directory: '/tmp/escape-py'",
        "No such file or directory: '/'",
        "No module named 'socket'",
    ];
    each_error_says(&errors, &expected);
    assert!(!Path::new("/tmp/escape-py").exists());
}

// ---------------------------------------------------------------------------------------------
// On the broker: one pipeline in every language, and a stage reloaded from one to another
// ---------------------------------------------------------------------------------------------

/// `orders()` as records to produce, but the tombstone (the test client writes values only).
fn orders_to_produce() -> Vec<In> {
    orders()
        .iter()
        .filter(|o| !o["value"].is_null())
        .map(|o| In {
            key: o["key"].as_str().map(str::to_string),
            value: o["value"].to_string().into_bytes(),
            headers: vec![(
                "trace".into(),
                o["headers"]["trace"].as_str().unwrap().into(),
            )],
            timestamp: o["timestamp"].as_i64(),
            ..In::default()
        })
        .collect()
}

/// What a run wrote: its outputs, and its dead letters with the cause they carry.
#[derive(Debug, PartialEq)]
struct Written {
    outputs: Vec<Out>,
    letters: Vec<Letter>,
}

/// A dead letter: the record, and the stage, kind and message of its failure.
#[derive(Debug, PartialEq)]
struct Letter {
    key: Option<String>,
    value: Option<String>,
    stage: String,
    kind: String,
    message: String,
}

/// json-filter (records with an amount) then running-total, in the language whose builds end
/// in `suffix`, from a topic holding `orders()` to a sink, failures to the dead-letter topic.
fn orders_pipeline_in(suffix: &str) -> Written {
    let k = kafka();
    let t = Topics::new(&format!("lang{suffix}"), 1);
    for (stage, plugin) in [("filter", "json-filter"), ("total", "running-total")] {
        let build = component(&format!("{plugin}{suffix}"));
        std::fs::copy(build, t.dir.path().join(format!("{stage}.wasm"))).unwrap();
    }
    k.produce(&t.source, &orders_to_produce());
    let pipeline = t.write_pipeline(&format!(
        r#"
[errors]
policy = "dead-letter"
topic = "{dlq}"

[[stage]]
name = "filter"
plugin = "filter.wasm"
config = {{ where = [{{ path = "/amount", op = "exists" }}] }}

[[stage]]
name = "total"
plugin = "total.wasm"
config = {{ field = "/amount", into = "/totals" }}
"#,
        dlq = t.dlq
    ));
    let mut weir = Weir::start(weir_bin(), &pipeline);
    let outputs = k.read(&t.sink, 6, Duration::from_secs(120));
    let letters = k.read(&t.dlq, 1, Duration::from_secs(30));
    assert_eq!(weir.stop(), Some(0), "log:\n{}", weir.log());
    let letters = letters
        .into_iter()
        .map(|l| {
            let h = |name: &str| l.headers.get(name).cloned().unwrap_or_default();
            Letter {
                stage: h("weir.error.stage"),
                kind: h("weir.error.kind"),
                message: h("weir.error.message"),
                key: l.key,
                value: l.value,
            }
        })
        .collect();
    Written { outputs, letters }
}

#[test]
fn one_pipeline_writes_the_same_outputs_and_dead_letters_in_every_language() {
    let rust = orders_pipeline_in("");
    assert_eq!(rust.outputs.len(), 6, "{rust:#?}");
    assert_eq!(rust.letters.len(), 1, "{rust:#?}");
    assert_eq!(rust.letters[0].message, "no number at /amount", "{rust:#?}");
    for suffix in ["-py", "-js", "-go"] {
        assert_eq!(
            orders_pipeline_in(suffix),
            rust,
            "the builds ending in {suffix}"
        );
    }
}

/// Replace `to` with a copy of `from` as build tools do: write beside it, then rename.
fn replace_by_rename(from: &Path, to: &Path) {
    let tmp = to.with_extension("wasm.tmp");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

#[test]
fn a_stage_reloaded_from_rust_to_python_to_javascript_to_go_keeps_its_totals() {
    let k = kafka();
    let t = Topics::new("lang-reload", 2);
    let plugin = t.dir.path().join("total.wasm");
    std::fs::copy(component("running-total"), &plugin).unwrap();
    let pipeline = t.write_pipeline(
        r#"
[[stage]]
name = "total"
plugin = "total.wasm"
config = { field = "/n", into = "/totals" }
"#,
    );
    let mut weir = Weir::start(weir_bin(), &pipeline);
    let input = |n: u64| In {
        key: Some(format!("k{}", n % 6)),
        value: json!({ "n": n }).to_string().into_bytes(),
        ..In::default()
    };
    let builds = [
        "running-total",
        "running-total-py",
        "running-total-js",
        "running-total-go",
    ];
    for (generation, build) in builds.iter().enumerate() {
        if generation > 0 {
            replace_by_rename(&component(build), &plugin);
            weir.wait_for_log(
                &format!("generation {generation} published"),
                Duration::from_secs(120),
            );
        }
        let from = generation as u64 * 60;
        let records: Vec<In> = (from..from + 60).map(input).collect();
        k.produce(&t.source, &records);
        k.read(&t.sink, from as usize + 60, Duration::from_secs(120));
    }
    let output = k.read(&t.sink, 240, Duration::from_secs(60));
    assert_eq!(weir.stop(), Some(0), "log:\n{}", weir.log());
    let log = weir.log();
    assert!(log.contains("now runs generation 3"), "log:\n{log}");
    // Each key's totals go on from where the last build left them: its count goes up by one a
    // record, its sum by the record's `n`, through both swaps.
    let mut totals: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    let mut by_n: Vec<&Out> = output.iter().collect();
    by_n.sort_by_key(|o| json_of(o)["n"].as_u64());
    assert_eq!(by_n.len(), 240, "log:\n{log}");
    for o in by_n {
        let v = json_of(o);
        let n = v["n"].as_u64().unwrap();
        let (count, sum) = totals.entry(o.key.clone().unwrap()).or_default();
        *count += 1;
        *sum += n;
        assert_eq!(
            v["totals"],
            json!({"count": *count, "sum": *sum}),
            "record {n}; log:\n{log}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Window plugins: the Python, JavaScript and Go sum-windows against the Rust one
// ---------------------------------------------------------------------------------------------

/// `n` events on 12 keys, time moving forward with up to 2 s of disorder; amounts whole and
/// not, and now and then a record without an amount or with a string for one (which fail).
fn window_events(n: usize) -> Vec<Record> {
    let mut rng = fastrand::Rng::with_seed(7);
    let mut now = 1_700_000_000_000i64;
    (0..n)
        .map(|i| {
            now += rng.i64(0..400);
            let ts = now - rng.i64(0..2_000);
            let value = match i {
                i if i % 97 == 5 => json!({ "ts": ts }),
                i if i % 101 == 7 => json!({ "ts": ts, "amount": "12" }),
                i if i % 3 == 0 => json!({ "ts": ts, "amount": rng.i64(0..100) as f64 + 0.5 }),
                _ => json!({ "ts": ts, "amount": rng.i64(-50..1_000) }),
            };
            Record {
                key: Some(format!("k{}", rng.u8(0..12)).into_bytes()),
                value: Some(value.to_string().into_bytes()),
                headers: Vec::new(),
                timestamp: 0,
                topic: "t".into(),
                partition: 0,
                offset: i as i64,
            }
        })
        .collect()
}

/// What a window stage of `plugin` with `window` makes of `events` in batches of 37: its
/// records, and its failures as (offset, kind, message).
fn windowed(plugin: &str, window: &str, events: &[Record]) -> (Vec<Record>, Vec<String>) {
    let dir = scratch();
    let path = dir.path().join("pipeline.toml");
    let text = format!(
        "[[stage]]\nname = \"win\"\nplugin = \"{}\"\nconfig = {{ field = \"/amount\" }}\n\
         window = {window}\ntime = {{ field = \"/ts\" }}\nwatermark = {{ max_out_of_order = 2000 }}\n",
        component(plugin).display()
    );
    std::fs::write(&path, text).unwrap();
    let engine = Engine::new(Some(scratch_cache())).unwrap();
    let mut chain = Chain::from_pipeline(&engine, &Pipeline::load(&path).unwrap()).unwrap();
    let (mut records, mut failures) = (Vec::new(), Vec::new());
    let mut keep = |out: weir::chain::BatchOutput| {
        assert!(out.late.is_empty(), "{plugin}: late {:?}", out.late[0]);
        records.extend(out.records);
        failures.extend(out.failures.into_iter().map(|f| {
            let kind = f.error.kind.as_str();
            format!("{}: {kind}: {}", f.record.offset, f.error.message)
        }));
    };
    for batch in events.chunks(37) {
        keep(chain.process(batch.to_vec()));
    }
    keep(chain.finish());
    (records, failures)
}

#[test]
fn python_javascript_and_go_window_plugins_fire_what_the_rust_one_fires() {
    let events = window_events(3_000);
    for window in [
        r#"{ kind = "tumbling", size = 10000 }"#,
        r#"{ kind = "sliding", size = 10000, slide = 5000 }"#,
        r#"{ kind = "session", gap = 3000 }"#,
    ] {
        let (rust, rust_failures) = windowed("sum-window", window, &events);
        assert!(rust.len() > 100, "{window}: {} windows", rust.len());
        assert!(rust_failures.len() > 40, "{window}: {rust_failures:?}");
        for build in ["sum-window-py", "sum-window-js", "sum-window-go"] {
            let (records, failures) = windowed(build, window, &events);
            assert_eq!(failures, rust_failures, "{build}, {window}");
            assert_eq!(records.len(), rust.len(), "{build}, {window}");
            for (got, want) in records.iter().zip(&rust) {
                assert_eq!(got, want, "{build}, {window}");
            }
        }
    }
}

#[test]
fn a_javascript_plugin_gets_no_network_clock_or_timers() {
    let attempts = [
        "fetch",
        "clock",
        "monotonic",
        "timer",
        "environment",
        "console",
    ];
    let (kept, errors, log) = attempt("escape-js", &attempts);
    assert_eq!(
        kept,
        ["clock", "monotonic", "timer", "environment", "console"],
        "{errors:#?}"
    );
    let line = |text: &str| {
        log.lines()
            .any(|l| l.contains("plugin=\"escape-js\"") && l.contains(text))
    };
    assert!(line("stdout: printed from javascript"), "{log}");
    assert!(line("stderr: and to stderr"), "{log}");
    // `fetch` has no HTTP to go to: the engine traps, and the record fails.
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains("trap"), "{errors:#?}");
}

#[test]
fn a_go_plugin_gets_no_files_network_clock_or_waiting() {
    // A listener on a real port: the plugin's dial must not reach it. (Go's wasip1 network is
    // an in-process fake, so the dial is refused without a socket.)
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let socket = format!("socket {}", listener.local_addr().unwrap());
    let attempts = [
        "open",
        "write",
        "listdir",
        &socket,
        "clock",
        "environment",
        "print",
        "sleep",
    ];
    let (kept, errors, log) = attempt("escape-go", &attempts);
    // Kept: the clock reads the Unix epoch, the environment is empty.
    assert_eq!(kept, ["clock", "environment", "print"], "{errors:#?}");
    assert!(
        listener.accept().is_err(),
        "the plugin reached the listener"
    );
    let printed = |level: &str, text: &str| {
        log.lines()
            .any(|l| l.contains("plugin=\"escape-go\"") && l.contains(level) && l.contains(text))
    };
    assert!(printed("INFO", "stdout: printed from a plugin"), "{log}");
    assert!(printed("WARN", "stderr: and to stderr"), "{log}");
    // No file is there to open (there is no directory to open it in), the dial is refused, and
    // a sleep waits on a clock that stands still until the call's time limit stops it.
    let expected = [
        "open /etc/hostname: Bad file number",
        "open /tmp/escape-go: Bad file number",
        "open /: Bad file number",
        "connect: Connection refused",
        "timeout: ran past the call time limit",
    ];
    each_error_says(&errors, &expected);
    assert!(!Path::new("/tmp/escape-go").exists());
}

/// The Go SDK's own tests (its JSON reader and writer against encoding/json and serde_json's
/// formats), run natively with the Go that `weir build` installed for the Go plugins.
#[test]
fn the_go_sdk_passes_its_own_tests() {
    let go = std::env::var_os("WEIR_GO").map_or_else(
        || {
            let home = std::env::var_os("HOME").expect("HOME is set");
            Path::new(&home).join(".cache/weir/toolchains/go/bin/go")
        },
        std::path::PathBuf::from,
    );
    assert!(
        go.exists(),
        "{}: no Go (scripts/build-plugins.sh installs it with the Go plugins)",
        go.display()
    );
    let out = Command::new(&go)
        .args(["test", "./internal/..."])
        .current_dir(crate::common::root().join("sdk/go"))
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .output()
        .expect("go runs");
    assert!(
        out.status.success(),
        "go test failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_python_plugin_joins_records_with_the_pipelines_tables() {
    joins_records_with_the_pipelines_tables("join-py");
}

#[test]
fn a_go_plugin_joins_records_with_the_pipelines_tables() {
    joins_records_with_the_pipelines_tables("join-go");
}

#[test]
fn a_javascript_plugin_joins_records_with_the_pipelines_tables() {
    joins_records_with_the_pipelines_tables("join-js");
}

/// `plugin` reads the pipeline's tables (`state.table` in Python and JavaScript, Go's
/// `state.TableJSON`): each
/// order with its customer's country as the table's file leaves it (`weir test --table`), a
/// number key found by its JSON text; a table the stage is not granted fails the record, named.
fn joins_records_with_the_pipelines_tables(plugin: &str) {
    let dir = scratch();
    let lines = |values: &[Value]| values.iter().map(|v| format!("{v}\n")).collect::<String>();
    let customers = dir.path().join("customers.jsonl");
    std::fs::write(
        &customers,
        lines(&[
            json!({"key": "c1", "value": {"id": "c1", "country": "DE"}}),
            json!({"key": "c2", "value": {"id": "c2", "country": "FR"}}),
            json!({"key": "c2", "value": null}),
            json!({"key": "7", "value": {"id": 7, "country": "JP"}}),
        ]),
    )
    .unwrap();
    let orders = dir.path().join("orders.jsonl");
    let order = |id: &str, customer: Value| json!({"key": id, "value": {"order": id, "customer": customer}});
    std::fs::write(
        &orders,
        lines(&[
            order("o1", json!("c1")),
            order("o2", json!("c2")),
            order("o3", json!(7)),
            order("o4", json!("c9")),
        ]),
    )
    .unwrap();
    // `config` is TOML: the stage's config table.
    let run = |config: &str| {
        let pipeline = dir.path().join("join.toml");
        std::fs::write(
            &pipeline,
            format!(
                "[[table]]\nname = \"customers\"\ntopic = \"customers\"\nkey = \"/id\"\n\
                 format = \"upsert\"\n\n[[stage]]\nname = \"join\"\nplugin = \"{}\"\n\
                 tables = [\"customers\"]\nconfig = {config}\n",
                component(plugin).display()
            ),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["test", "--format", "envelope", "--input"])
            .arg(&orders)
            .arg("--table")
            .arg(format!("customers={}", customers.display()))
            .arg(&pipeline)
            .env("WEIR_CACHE_DIR", scratch_cache())
            .stdin(Stdio::null())
            .output()
            .expect("weir test runs");
        let stdout = String::from_utf8(out.stdout).unwrap();
        let countries: Vec<(String, Value)> = stdout
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                let order = v["value"]["order"].as_str().unwrap().to_string();
                (order, v["value"]["country"].clone())
            })
            .collect();
        (countries, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (countries, stderr) = run("{}");
    let want: Vec<(String, Value)> = [
        ("o1", json!("DE")),
        ("o2", Value::Null),
        ("o3", json!("JP")),
        ("o4", Value::Null),
    ]
    .into_iter()
    .map(|(o, c)| (o.to_string(), c))
    .collect();
    assert_eq!(countries, want, "{stderr}");
    let (countries, stderr) = run("{ table = \"other\" }");
    assert!(countries.is_empty(), "{stderr}");
    assert!(
        stderr.contains("asked for table `other`, which stage `join` is not granted"),
        "{stderr}"
    );
}
