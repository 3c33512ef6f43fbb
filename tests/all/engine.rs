//! The engine against real components: results, containment of misbehaving plugins, and clear
//! errors for files that are not (the right) plugins.

use crate::common;
use std::{path::Path, time::Duration};

use serde_json::{json, Value};
use weir::{
    chain::Chain,
    config::Pipeline,
    engine::{Engine, ErrorKind, Kind, Limits, MemoryState, Outcome, Record},
};

fn engine() -> Engine {
    Engine::new(None).unwrap()
}

fn rec(key: &str, value: Value) -> Record {
    Record {
        key: Some(key.as_bytes().to_vec()),
        value: Some(value.to_string().into_bytes()),
        headers: Vec::new(),
        timestamp: 0,
        topic: "t".into(),
        partition: 0,
        offset: 0,
    }
}

fn batch(values: Vec<Value>) -> Vec<Record> {
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| Record {
            offset: i as i64,
            ..rec("k", v)
        })
        .collect()
}

fn json_of(outcome: &Outcome) -> Value {
    let out = outcome.as_ref().expect("record succeeded");
    assert_eq!(out.len(), 1);
    serde_json::from_slice(out[0].value.as_ref().unwrap()).unwrap()
}

fn misbehave(limits: Limits) -> weir::engine::Instance {
    let e = engine();
    let plugin = e
        .load("misbehave", &common::component("misbehave"))
        .unwrap();
    assert_eq!(plugin.kind(), Kind::Transform);
    plugin
        .instantiate("{}", limits, MemoryState::shared())
        .unwrap()
}

#[test]
fn filter_keeps_matching_records_unchanged() {
    let e = engine();
    let plugin = e.load("big", &common::component("json-filter")).unwrap();
    assert_eq!(plugin.kind(), Kind::Filter);
    assert_eq!(plugin.hash().len(), 64);
    let cfg = json!({"where": [{"path": "/amount", "op": "gt", "value": 100}]}).to_string();
    let mut inst = plugin
        .instantiate(&cfg, Limits::default(), MemoryState::shared())
        .unwrap();
    let input = batch(vec![
        json!({"amount": 150}),
        json!({"amount": 5}),
        json!({"amount": 101}),
    ]);
    let out = inst.process(input.clone());
    assert_eq!(out.len(), 3);
    let kept = |i: usize| {
        let out = out[i].as_ref().unwrap();
        assert_eq!(out.len(), 1);
        let (a, b) = (&out[0], &input[i]);
        assert_eq!(
            (&a.key, &a.value, a.timestamp, &a.topic, a.offset),
            (&b.key, &b.value, b.timestamp, &b.topic, b.offset)
        );
    };
    kept(0);
    assert!(out[1].as_ref().unwrap().is_empty());
    kept(2);
}

#[test]
fn a_record_error_does_not_fail_its_batch() {
    let mut inst = misbehave(Limits::default());
    let out = inst.process(batch(vec![
        json!({}),
        json!({"fail": "bad order"}),
        json!({}),
    ]));
    assert_eq!(json_of(&out[0])["seen"], 1);
    let err = &out[1].as_ref().unwrap_err().error;
    assert_eq!(err.kind, ErrorKind::Plugin);
    assert_eq!(err.message, "bad order");
    assert_eq!(err.plugin, "misbehave");
    // A returned error is not a trap, but a record that fails leaves no state change either:
    // its write is discarded, the others' stay.
    assert_eq!(json_of(&out[2])["seen"], 2);
    assert_eq!(inst.restarts(), 0);
    let out = inst.process(batch(vec![json!({"fail": "alone"})]));
    assert!(out[0].is_err());
    let out = inst.process(batch(vec![json!({})]));
    assert_eq!(
        json_of(&out[0])["seen"],
        3,
        "a failing record alone writes nothing"
    );
}

#[test]
fn until_failure_runs_nothing_after_the_first_failing_record() {
    let mut inst = misbehave(Limits::default());
    let out = inst.process_until_failure(batch(vec![
        json!({}),
        json!({"fail": "bad order"}),
        json!({}),
        json!({"panic": true}),
    ]));
    assert_eq!(out.len(), 4, "one outcome per input");
    assert_eq!(json_of(&out[0])["seen"], 1);
    assert_eq!(out[1].as_ref().unwrap_err().error.message, "bad order");
    assert!(out[2].as_ref().unwrap().is_empty(), "not run");
    assert!(out[3].as_ref().unwrap().is_empty(), "not run");
    let out = inst.process(batch(vec![json!({})]));
    assert_eq!(
        json_of(&out[0])["seen"],
        2,
        "only the record before the failure counted"
    );
}

#[test]
fn an_oversized_state_value_fails_its_record_with_a_clear_error() {
    let mut inst = misbehave(Limits::default());
    let out = inst.process(batch(vec![
        json!({"state_kb": 1024}),
        json!({"state_kb": 1025}),
        json!({}),
    ]));
    assert_eq!(json_of(&out[0])["seen"], 1, "1 MiB is allowed");
    let err = &out[1].as_ref().unwrap_err().error;
    assert_eq!(err.kind, ErrorKind::Plugin);
    assert_eq!(
        err.message,
        "state value `blob` is 1049600 bytes, over the limit of 1048576"
    );
    assert_eq!(
        json_of(&out[2])["seen"],
        2,
        "the batch goes on, the refused write undone"
    );
    assert_eq!(inst.restarts(), 0, "a refused put is an error, not a trap");
}

#[test]
fn a_write_past_the_declared_state_quota_fails_its_record_as_state_quota() {
    let path = common::component("misbehave");
    let bytes = common::needing(&path, json!({ "state_bytes_per_key": 4096 }));
    let plugin = engine().load_bytes("misbehave", &path, &bytes).unwrap();
    let mut inst = plugin
        .instantiate("{}", Limits::default(), MemoryState::shared())
        .unwrap();
    // A key's entries count whole: names and values, a rewrite replacing what it rewrites.
    let out = inst.process(batch(vec![
        json!({"state_kb": 2}),
        json!({"state_kb": 3}),
        json!({"state_kb": 4}),
        json!({}),
    ]));
    assert_eq!(json_of(&out[0])["seen"], 1);
    assert_eq!(
        json_of(&out[1])["seen"],
        2,
        "3 KiB in place of 2 is within 4096 bytes"
    );
    let failed = &out[2].as_ref().unwrap_err().error;
    assert_eq!(failed.kind, ErrorKind::StateQuota);
    assert_eq!(
        failed.message,
        "writing state `blob` would make key `k` hold 4105 bytes, over the 4096 bytes per key \
         the plugin declares it needs (state_bytes_per_key)"
    );
    assert_eq!(
        json_of(&out[3])["seen"],
        3,
        "the refused record's writes are undone"
    );
    // Other keys have quotas of their own.
    let other = Record {
        key: Some(b"other".to_vec()),
        ..batch(vec![json!({"state_kb": 3})]).remove(0)
    };
    assert_eq!(json_of(&inst.process(vec![other])[0])["seen"], 1);
}

#[test]
fn a_panic_is_pinned_on_its_record_and_its_state_writes_are_discarded() {
    let mut inst = misbehave(Limits::default());
    let out = inst.process(batch(vec![json!({}), json!({"panic": true}), json!({})]));
    assert_eq!(json_of(&out[0])["seen"], 1);
    let failed = out[1].as_ref().unwrap_err();
    assert_eq!(failed.error.kind, ErrorKind::Trap);
    assert!(
        failed.error.message.contains("asked to panic"),
        "{}",
        failed.error.message
    );
    assert_eq!(failed.record.offset, 1, "the failing record is handed back");
    assert_eq!(
        json_of(&out[2])["seen"],
        2,
        "the panicking call's state write must not land"
    );
    assert!(inst.restarts() >= 1);
    // The fresh instance goes on working.
    let out = inst.process(batch(vec![json!({})]));
    assert_eq!(json_of(&out[0])["seen"], 3);
}

#[test]
fn an_endless_loop_is_interrupted() {
    let mut inst = misbehave(Limits {
        call_timeout: Duration::from_millis(100),
        ..Limits::default()
    });
    let out = inst.process(batch(vec![json!({"loop": true}), json!({})]));
    let err = &out[0].as_ref().unwrap_err().error;
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
    assert!(err.message.contains("time limit"), "{err}");
    assert_eq!(json_of(&out[1])["seen"], 1);
}

#[test]
fn allocating_past_the_limit_is_out_of_memory() {
    let mut inst = misbehave(Limits {
        memory_bytes: 16 << 20,
        ..Limits::default()
    });
    let out = inst.process(batch(vec![
        json!({"alloc_mb": 1}),
        json!({"alloc_mb": 64}),
        json!({}),
    ]));
    assert_eq!(json_of(&out[0])["seen"], 1);
    let err = &out[1].as_ref().unwrap_err().error;
    assert_eq!(err.kind, ErrorKind::OutOfMemory, "{err}");
    assert!(err.message.contains("limit of 16777216 bytes"), "{err}");
    assert_eq!(json_of(&out[2])["seen"], 2);
}

#[test]
fn state_is_scoped_by_key() {
    let mut inst = misbehave(Limits::default());
    let input = vec![
        rec("a", json!({})),
        rec("b", json!({})),
        rec("a", json!({})),
    ];
    let out = inst.process(input);
    let seen: Vec<Value> = out.iter().map(|o| json_of(o)["seen"].clone()).collect();
    assert_eq!(seen, vec![json!(1), json!(1), json!(2)]);
}

#[test]
fn a_config_the_plugin_rejects_fails_the_load() {
    let e = engine();
    let plugin = e.load("big", &common::component("json-filter")).unwrap();
    let err = plugin
        .instantiate(
            r#"{"where": [{"path": "/a", "op": "near"}]}"#,
            Limits::default(),
            MemoryState::shared(),
        )
        .unwrap_err();
    assert!(matches!(err, weir::Error::PluginInit { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("plugin `big`") && msg.contains("unknown op `near`"),
        "{msg}"
    );
}

#[test]
fn files_that_are_not_components_are_named_and_explained() {
    let e = engine();
    let dir = common::scratch();
    let cases: [(&str, &[u8], &str); 3] = [
        (
            "garbage.wasm",
            b"this is not wasm at all",
            "component header",
        ),
        (
            "core.wasm",
            b"\0asm\x01\0\0\0",
            "core wasm module, not a component",
        ),
        (
            "truncated.wasm",
            b"\0asm\x0d\0\x01\0\x01",
            "not a valid wasm component",
        ),
    ];
    for (file, bytes, expected) in cases {
        let path = dir.path().join(file);
        std::fs::write(&path, bytes).unwrap();
        let err = e.load("p", &path).unwrap_err().to_string();
        assert!(err.contains(expected), "{file}: {err}");
        assert!(
            err.contains("plugin `p`") && err.contains(file),
            "{file}: {err}"
        );
    }
    let missing = e
        .load("p", Path::new("/nonexistent/x.wasm"))
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("cannot read /nonexistent/x.wasm"),
        "{missing}"
    );
}

#[test]
fn components_of_other_worlds_are_rejected() {
    let e = engine();
    let dir = common::scratch();
    let cases = [
        ("(component)", "is not a weir plugin: it exports []"),
        (
            r#"(component
                 (core module $m (func (export "hello") (result i32) i32.const 1))
                 (core instance $i (instantiate $m))
                 (func (export "hello") (result s32) (canon lift (core func $i "hello"))))"#,
            "it exports [hello]",
        ),
        (
            r#"(component (import "wasi:http/outgoing-handler@0.2.0" (instance)))"#,
            "imports `wasi:http/outgoing-handler@0.2.0`, which weir does not provide",
        ),
        (
            // WASI 0.2 is linked (empty) for interpreters, but a plugin must still be one.
            r#"(component (import "wasi:filesystem/types@0.2.0" (instance)))"#,
            "is not a weir plugin: it exports []",
        ),
        (
            // A plugin built against the first version of the contract.
            r#"(component (import "weir:plugin/host@0.1.0" (instance)))"#,
            "was built against weir:plugin@0.1.0, but this weir speaks weir:plugin@0.2.0",
        ),
    ];
    for (wat, expected) in cases {
        let path = dir.path().join("other.wasm");
        std::fs::write(&path, wat::parse_str(wat).unwrap()).unwrap();
        let err = e.load("p", &path).unwrap_err();
        assert!(matches!(err, weir::Error::WrongWorld { .. }), "{err}");
        assert!(err.to_string().contains(expected), "{err}");
    }
}

#[test]
fn a_window_plugin_is_not_a_filter_or_transform_stage() {
    let dir = common::scratch();
    let path = dir.path().join("p.toml");
    let text = format!(
        "[[stage]]\nname = \"w\"\nplugin = \"{}\"\n",
        common::component("count-window").display()
    );
    std::fs::write(&path, text).unwrap();
    let err = Chain::from_pipeline(&engine(), &Pipeline::load(&path).unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("plugin `w`") && err.contains("window plugin"),
        "{err}"
    );
}

#[test]
fn compiled_components_are_cached_by_content() {
    let cache = common::scratch();
    let e = Engine::new(Some(cache.path().to_path_buf())).unwrap();
    let first = e.load("a", &common::component("json-filter")).unwrap();
    let entries: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1);
    assert!(entries[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with(first.hash()));
    // A second load is served from the cache, and a damaged entry is recompiled, not trusted.
    e.load("b", &common::component("json-filter")).unwrap();
    std::fs::write(&entries[0], b"damaged").unwrap();
    let again = e.load("c", &common::component("json-filter")).unwrap();
    assert_eq!(again.hash(), first.hash());
}

fn counter(e: &Engine, build: &str, state: &weir::engine::SharedState) -> weir::engine::Instance {
    e.load("count", &common::component(build))
        .unwrap()
        .instantiate("{}", Limits::default(), state.clone())
        .unwrap()
}

fn counts(out: &[Outcome]) -> Vec<Value> {
    out.iter().map(|o| json_of(o)["count"].clone()).collect()
}

#[test]
fn state_an_older_build_wrote_is_migrated_before_a_newer_build_reads_it() {
    let e = engine();
    let state = MemoryState::shared();
    let mut v1 = counter(&e, "count-v1", &state);
    assert_eq!(v1.state_version(), 0);
    let out = v1.process(vec![
        rec("a", json!({})),
        rec("a", json!({})),
        rec("b", json!({})),
    ]);
    assert_eq!(counts(&out), [1, 2, 1]);

    // count-v2 stores `{"count": …}` where count-v1 stored `{"n": …}`.
    let mut v2 = counter(&e, "count-v2", &state);
    assert_eq!(v2.state_version(), 1);
    let out = v2.process(vec![
        rec("a", json!({})),
        rec("b", json!({})),
        rec("c", json!({})),
    ]);
    assert_eq!(counts(&out), [3, 2, 1]);
    let stored = state.get(&(Some(b"a".to_vec()), "seen".into())).unwrap();
    assert_eq!(
        (
            stored.version,
            serde_json::from_slice::<Value>(&stored.value).unwrap()
        ),
        (1, json!({ "count": 3 }))
    );

    // Going back to the first build: it must not misread what the second wrote.
    let out = v1.process(vec![rec("a", json!({}))]);
    let err = &out[0].as_ref().unwrap_err().error;
    assert_eq!(err.kind, ErrorKind::Migration, "{err}");
    assert_eq!(
        err.message,
        "state `seen` of key `a` was written by state version 1 of the plugin, newer than this \
         build's 0: a build cannot read the state of a later one"
    );
}

#[test]
fn a_value_that_cannot_be_migrated_fails_its_record_naming_plugin_and_key() {
    let e = engine();
    let state = MemoryState::shared();
    let entry = |v: Value| Some(weir::engine::Entry::new(v.to_string().into_bytes(), 0));
    let mut writes = std::collections::BTreeMap::new();
    writes.insert(
        (Some(b"good".to_vec()), "seen".into()),
        entry(json!({ "n": 1 })),
    );
    writes.insert(
        (Some(b"bad".to_vec()), "seen".into()),
        entry(json!({ "x": 1 })),
    );
    state.apply(writes);

    let mut v2 = counter(&e, "count-v2", &state);
    let out = v2.process(vec![
        rec("good", json!({})),
        rec("bad", json!({})),
        rec("good", json!({})),
    ]);
    let failed = out[1].as_ref().unwrap_err();
    assert_eq!(failed.error.kind, ErrorKind::Migration);
    assert_eq!(failed.error.plugin, "count");
    assert_eq!(
        failed.error.message,
        "state `seen` of key `bad` was written by state version 0 and could not be migrated to \
         version 1: a count of state version 0 without `n`: {\"x\":1}"
    );
    assert_eq!(
        failed.error.to_string().split(':').next(),
        Some("plugin `count` state-migration")
    );
    // The other records go on, and the value that could not be migrated is left as it was.
    assert_eq!(json_of(&out[0])["count"], 2);
    assert_eq!(json_of(&out[2])["count"], 3);
    let bad = state.get(&(Some(b"bad".to_vec()), "seen".into())).unwrap();
    assert_eq!((bad.version, bad.value), (0, b"{\"x\":1}".to_vec()));
}
