//! Shadow runs against the test broker: a candidate build beside the live one, compared and
//! kept apart from the live output, offsets and state; added by hot reload; promoted.

use std::{collections::BTreeMap, path::Path, time::Duration};

use serde_json::{json, Value};

use crate::common::{
    component,
    kafka::{http_get, json_of, metric, unique, In, Out, Topics, Weir},
    weir_bin,
};

/// Record `n`: `{"n": n}` (with what `extra` adds), keyed over six keys.
fn input(n: u64, extra: Value) -> In {
    let mut value = json!({ "n": n });
    if let Value::Object(more) = extra {
        value.as_object_mut().unwrap().extend(more);
    }
    In {
        key: Some(format!("k{}", n % 6)),
        value: value.to_string().into_bytes(),
        ..In::default()
    }
}

/// Per key, the `field` of its outputs in the order they were written.
fn per_key(output: &[Out], field: &str) -> BTreeMap<String, Vec<Value>> {
    let mut map: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for o in output {
        let value = json_of(o);
        map.entry(o.key.clone().unwrap_or_default())
            .or_default()
            .push(value[field].clone());
    }
    map
}

/// Every key's `count`s are `from..=to`, and every output carries `version`.
fn counted(output: &[Out], from: u64, to: u64, version: u64, log: &str) {
    let want: Vec<Value> = (from..=to).map(Value::from).collect();
    for (key, counts) in per_key(output, "count") {
        assert_eq!(counts, want, "key {key}; log:\n{log}");
    }
    for (key, versions) in per_key(output, "version") {
        assert!(
            versions.iter().all(|v| *v == version),
            "key {key}: {versions:?}; log:\n{log}"
        );
    }
}

/// The shadow series of `/metrics` for stage `stage`.
fn shadow_metric(admin: &str, name: &str, stage: &str) -> Option<f64> {
    let (_, text) = http_get(admin, "/metrics");
    metric(&text, &format!("weir_shadow_{name}{{stage=\"{stage}\"}}"))
}

/// Wait until the admin server says the shadow of `stage` compared `n` records.
fn wait_compared(weir: &mut Weir, admin: &str, stage: &str, n: f64) {
    let started = std::time::Instant::now();
    while shadow_metric(admin, "records_compared_total", stage) != Some(n) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the shadow compared {:?} records, not {n}; log:\n{}",
            shadow_metric(admin, "records_compared_total", stage),
            weir.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A pipeline with one stage, `count`, running `live` and shadowed by `shadow` (if any),
/// dead letters on; the builds are copied beside the file.
fn pipeline(t: &Topics, live: &str, shadow: Option<(&str, &str)>) -> std::path::PathBuf {
    std::fs::copy(component(live), t.dir.path().join("live.wasm")).unwrap();
    let shadow = match shadow {
        Some((build, topic)) => {
            std::fs::copy(component(build), t.dir.path().join("candidate.wasm")).unwrap();
            format!("shadow = \"candidate.wasm\"\nshadow_topic = \"{topic}\"")
        }
        None => String::new(),
    };
    t.write_pipeline(&format!(
        r#"
[errors]
policy = "dead-letter"
topic = "{dlq}"

[[stage]]
name = "count"
plugin = "live.wasm"
{shadow}
"#,
        dlq = t.dlq
    ))
}

#[test]
fn a_failing_shadow_never_touches_the_live_output_offsets_or_state() {
    let t = Topics::new("shadow-apart", 2);
    let compared = unique("shadow-apart-cmp");
    t.kafka.create_topic(&compared, 1);
    // The candidate panics on every tenth record and fails on others; it also keeps its own
    // count under the state name the live build uses (`seen`), as a bare number where the live
    // build keeps `{"n": …}`: had one write of it reached the live state, the live build would
    // fail to read its own.
    let path = pipeline(&t, "count-v1", Some(("misbehave", &compared)));
    let mut weir = Weir::start(weir_bin(), &path);
    let admin = weir.admin();
    let records: Vec<In> = (0..120)
        .map(|n| match n % 10 {
            0 => input(n, json!({ "panic": true })),
            5 => input(n, json!({ "fail": "not this one" })),
            _ => input(n, json!({})),
        })
        .collect();
    t.kafka.produce(&t.source, &records);
    let output = t.kafka.read(&t.sink, 120, Duration::from_secs(60));
    wait_compared(&mut weir, &admin, "count", 120.0);
    let log = weir.log();
    assert_eq!(output.len(), 120, "log:\n{log}");
    counted(&output, 1, 20, 1, &log);
    assert_eq!(
        shadow_metric(&admin, "records_differing_total", "count"),
        Some(120.0)
    );
    let (_, text) = http_get(&admin, "/metrics");
    let failed = |side: &str| {
        let series = format!("weir_shadow_records_failed_total{{stage=\"count\",side=\"{side}\"}}");
        metric(&text, &series)
    };
    assert_eq!(
        (failed("live"), failed("shadow")),
        (Some(0.0), Some(24.0)),
        "{text}"
    );
    assert_eq!(
        metric(&text, "weir_records_failed_total"),
        Some(0.0),
        "{text}"
    );
    // Its outputs went to its own topic: the 96 records it did not fail on, `seen` counted in
    // its own state from 1.
    let theirs = t.kafka.read(&compared, 96, Duration::from_secs(30));
    assert_eq!(theirs.len(), 96, "log:\n{log}");
    assert!(theirs.iter().all(|o| json_of(o).get("count").is_none()));
    let seen: Vec<u64> = per_key(&theirs, "seen")
        .into_values()
        .map(|s| s.last().and_then(Value::as_u64).unwrap())
        .collect();
    assert_eq!(
        seen, [16; 6],
        "each key's count over its 16 records that passed"
    );
    assert!(t.kafka.read(&t.dlq, 0, Duration::from_secs(1)).is_empty());
    // The first differences are in the log, named by their input.
    assert!(
        log.contains("shadow of stage `count` differs on ") && log.contains("error appeared: "),
        "log:\n{log}"
    );
    // Every input's offset was committed: the shadow held nothing back.
    let committed_when = std::time::Instant::now();
    while t
        .kafka
        .committed(&t.group, &t.source, 2)
        .iter()
        .sum::<i64>()
        != 120
    {
        assert!(
            committed_when.elapsed() < Duration::from_secs(30),
            "log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A new build of the candidate is swapped in as any plugin is, and compared from then on:
    // the live build itself, from the live state, agrees on everything.
    let candidate = t.dir.path().join("candidate.wasm");
    let next = t.dir.path().join("candidate.wasm.new");
    std::fs::copy(component("count-v1"), &next).unwrap();
    std::fs::rename(&next, &candidate).unwrap();
    weir.wait_for_log(
        "generation 1 published: stage `count` shadowed by ",
        Duration::from_secs(60),
    );
    let more: Vec<In> = (120..180).map(|n| input(n, json!({}))).collect();
    t.kafka.produce(&t.source, &more);
    wait_compared(&mut weir, &admin, "count", 60.0);
    assert_eq!(
        shadow_metric(&admin, "records_differing_total", "count"),
        Some(0.0)
    );
    let output = t.kafka.read(&t.sink, 180, Duration::from_secs(60));
    counted(&output, 1, 30, 1, &weir.log());
    assert_eq!(weir.stop(), Some(0), "log:\n{}", weir.log());
    assert!(
        weir.log().contains("shadow of stage `count` ("),
        "the comparison is logged; log:\n{}",
        weir.log()
    );
}

#[test]
fn a_shadow_added_live_starts_from_the_live_state_and_promote_makes_it_live() {
    let t = Topics::new("shadow-promote", 2);
    let compared = unique("shadow-promote-cmp");
    t.kafka.create_topic(&compared, 1);
    let path = pipeline(&t, "count-v1", None);
    let mut weir = Weir::start(weir_bin(), &path);
    let admin = weir.admin();
    weir.wait_for_log("assigned", Duration::from_secs(60));
    t.kafka.produce(
        &t.source,
        &(0..60).map(|n| input(n, json!({}))).collect::<Vec<_>>(),
    );
    assert_eq!(t.kafka.read(&t.sink, 60, Duration::from_secs(60)).len(), 60);

    // The pipeline file gains a shadow: count-v2, which migrates count-v1's state.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::copy(component("count-v2"), t.dir.path().join("candidate.wasm")).unwrap();
    let shadowed = text.replace(
        "plugin = \"live.wasm\"",
        &format!(
            "plugin = \"live.wasm\"\nshadow = \"candidate.wasm\"\nshadow_topic = \"{compared}\""
        ),
    );
    std::fs::write(&path, shadowed).unwrap();
    weir.wait_for_log("stage `count` shadowed by ", Duration::from_secs(60));
    t.kafka.produce(
        &t.source,
        &(60..120).map(|n| input(n, json!({}))).collect::<Vec<_>>(),
    );
    let output = t.kafka.read(&t.sink, 120, Duration::from_secs(60));
    wait_compared(&mut weir, &admin, "count", 60.0);
    let log = weir.log();
    // The live build went on alone: counts 1 to 20 per key, all its own.
    counted(&output, 1, 20, 1, &log);
    // The candidate started from the live state (10 per key) and counted on in its own.
    let theirs = t.kafka.read(&compared, 60, Duration::from_secs(30));
    counted(&theirs, 11, 20, 2, &log);
    // They differ in the version tag alone.
    assert_eq!(
        shadow_metric(&admin, "records_differing_total", "count"),
        Some(60.0)
    );
    assert!(
        log.contains("output 1 changed: value/version 1 → 2"),
        "log:\n{log}"
    );
    let (_, status) = http_get(&admin, "/api/status");
    let status: Value = serde_json::from_str(&status).unwrap();
    let shadow = &status["stages"][0]["shadow"];
    assert_eq!(
        (&shadow["compared"], &shadow["differing"]),
        (&json!(60), &json!(60))
    );
    assert!(
        shadow["file"].as_str().unwrap().ends_with("candidate.wasm"),
        "{shadow}"
    );
    let out = std::process::Command::new(weir_bin())
        .args(["status", path.to_str().unwrap(), "--admin", &admin])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("candidate.wasm: 60 compared, 60 differ; errors live 0, shadow 0;"),
        "{table}"
    );

    // Promoted: the file names the candidate as the plugin, and the run swaps it in.
    promote(&path, "count");
    let promoted = std::fs::read_to_string(&path).unwrap();
    assert!(
        promoted.contains("plugin = \"candidate.wasm\""),
        "{promoted}"
    );
    assert!(
        !promoted.lines().any(|l| l.starts_with("shadow")),
        "{promoted}"
    );
    weir.wait_for_log("stage `count` runs no shadow", Duration::from_secs(60));
    t.kafka.produce(
        &t.source,
        &(120..180).map(|n| input(n, json!({}))).collect::<Vec<_>>(),
    );
    let output = t.kafka.read(&t.sink, 180, Duration::from_secs(60));
    let log = weir.log();
    let after: Vec<Out> = output
        .into_iter()
        .filter(|o| json_of(o)["n"].as_u64().unwrap() >= 120)
        .collect();
    // It counts on from the live state, which the shadow never wrote to.
    counted(&after, 21, 30, 2, &log);
    assert_eq!(weir.stop(), Some(0), "log:\n{}", weir.log());
}

/// `weir promote PIPELINE STAGE`, which must succeed.
fn promote(pipeline: &Path, stage: &str) {
    let out = std::process::Command::new(weir_bin())
        .arg("promote")
        .arg(pipeline)
        .arg(stage)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "weir promote: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_window_stage_shadow_is_compared_window_by_window() {
    let t = Topics::new("shadow-window", 1);
    let compared = unique("shadow-window-cmp");
    t.kafka.create_topic(&compared, 1);
    std::fs::copy(component("sum-window"), t.dir.path().join("sum.wasm")).unwrap();
    std::fs::copy(component("count-window"), t.dir.path().join("count.wasm")).unwrap();
    let path = t.write_pipeline(&format!(
        r#"
[[stage]]
name = "win"
plugin = "sum.wasm"
config = {{ field = "/amount" }}
window = {{ kind = "tumbling", size = "10s" }}
time = {{ field = "/ts" }}
shadow = "count.wasm"
shadow_topic = "{compared}"
"#
    ));
    let mut weir = Weir::start(weir_bin(), &path);
    let admin = weir.admin();
    weir.wait_for_log("assigned", Duration::from_secs(60));
    let event = |key: &str, ts: i64, amount: i64| In {
        key: Some(key.into()),
        value: json!({ "ts": ts, "amount": amount })
            .to_string()
            .into_bytes(),
        ..In::default()
    };
    // Five windows of two keys, a record far ahead to fire them, then one too late for both.
    let events = [
        event("a", 1_000, 5),
        event("b", 2_000, 7),
        event("a", 11_000, 1),
        event("b", 12_000, 2),
        event("a", 21_000, 3),
        event("flush", 100_000, 0),
    ];
    t.kafka.produce(&t.source, &events);
    let output = t.kafka.read(&t.sink, 5, Duration::from_secs(60));
    t.kafka.produce(&t.source, &[event("a", 5_000, 9)]);
    // Five windows and the late input.
    wait_compared(&mut weir, &admin, "win", 6.0);
    let log = weir.log();
    let sums: Vec<(String, i64)> = output
        .iter()
        .map(|o| (o.key.clone().unwrap(), json_of(o)["sum"].as_i64().unwrap()))
        .collect();
    let want = [("a", 5), ("b", 7), ("a", 1), ("b", 2), ("a", 3)].map(|(k, s)| (k.into(), s));
    assert_eq!(sums, want, "the live build's sums alone; log:\n{log}");
    // The candidate counts: each window differs by the sum it does not render.
    assert_eq!(
        shadow_metric(&admin, "records_differing_total", "win"),
        Some(5.0)
    );
    assert!(
        log.contains(
            "shadow of stage `win` differs on the window [0, 10000) of key a: output 1 \
                      changed: value/sum removed (was 5)"
        ),
        "log:\n{log}"
    );
    let theirs = t.kafka.read(&compared, 5, Duration::from_secs(30));
    let counts: Vec<i64> = theirs
        .iter()
        .map(|o| json_of(o)["count"].as_i64().unwrap())
        .collect();
    assert_eq!(counts, [1; 5], "log:\n{log}");
    assert_eq!(weir.stop(), Some(0), "log:\n{}", weir.log());
}

#[test]
fn a_candidate_that_keeps_state_cannot_shadow_a_stage_that_keeps_none() {
    let dir = crate::common::scratch();
    let text = format!(
        "[[stage]]\nname = \"f\"\nplugin = \"{}\"\nconfig = {{ field = \"/amount\" }}\nshadow = \"{}\"\n",
        component("json-filter").display(),
        component("running-total").display()
    );
    let path = dir.path().join("p.toml");
    std::fs::write(&path, text).unwrap();
    let pipeline = weir::config::Pipeline::load(&path).unwrap();
    let engine = weir::engine::Engine::new(None).unwrap();
    let err = match weir::chain::Stages::load(&engine, &pipeline) {
        Ok(_) => panic!("a stateful candidate was taken for a stateless stage"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("keeps keyed state and the live build keeps none"),
        "{err}"
    );
}

#[test]
fn a_candidate_slower_than_the_call_limit_is_suspended_and_the_live_build_goes_on() {
    let t = Topics::new("shadow-slow", 1);
    std::fs::copy(component("count-v1"), t.dir.path().join("live.wasm")).unwrap();
    std::fs::copy(component("misbehave"), t.dir.path().join("candidate.wasm")).unwrap();
    let path = t.write_pipeline(
        "[[stage]]\nname = \"count\"\nplugin = \"live.wasm\"\nshadow = \"candidate.wasm\"\n\
         limits = { timeout_ms = 300 }\n",
    );
    let mut weir = Weir::start(weir_bin(), &path);
    weir.wait_for_log("assigned", Duration::from_secs(60));
    // The candidate loops on every tenth record until the call limit stops it.
    let records: Vec<In> = (0..120)
        .map(|n| match n % 10 {
            3 => input(n, json!({ "loop": true })),
            _ => input(n, json!({})),
        })
        .collect();
    t.kafka.produce(&t.source, &records);
    let output = t.kafka.read(&t.sink, 120, Duration::from_secs(60));
    let log = weir.log();
    assert_eq!(output.len(), 120, "log:\n{log}");
    counted(&output, 1, 20, 1, &log);
    assert!(
        log.contains("shadow of stage `count` suspended: a call took "),
        "log:\n{log}"
    );
    assert_eq!(weir.stop(), Some(0), "log:\n{}", weir.log());
}

#[test]
fn inputs_after_a_live_failure_are_compared_when_the_policy_goes_on() {
    let t = Topics::new("shadow-after-failure", 1);
    let compared = unique("shadow-after-failure-cmp");
    t.kafka.create_topic(&compared, 1);
    // The same build on both sides, dead letters on: a record they both fail does not end
    // the comparison of its batch.
    let path = pipeline(&t, "misbehave", Some(("misbehave", &compared)));
    let mut weir = Weir::start(weir_bin(), &path);
    let admin = weir.admin();
    let records: Vec<In> = (0..60)
        .map(|n| match n % 10 {
            4 => input(n, json!({ "fail": "both" })),
            _ => input(n, json!({})),
        })
        .collect();
    t.kafka.produce(&t.source, &records);
    assert_eq!(t.kafka.read(&t.sink, 54, Duration::from_secs(60)).len(), 54);
    wait_compared(&mut weir, &admin, "count", 60.0);
    assert_eq!(
        shadow_metric(&admin, "records_differing_total", "count"),
        Some(0.0)
    );
    assert_eq!(weir.stop(), Some(0), "log:\n{}", weir.log());
}
