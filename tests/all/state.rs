//! `weir state get` and `scan` against the test broker: from a running instance (its admin
//! server found by the pipeline file alone), then with none running from the local store, then
//! with the store gone from the changelog alone.

use std::{path::Path, process::Command, time::Duration};

use serde_json::{json, Value};

use crate::common::{
    component,
    kafka::{In, Topics, Weir},
    weir_bin,
};

/// `weir state ARGS…`: exit code and standard output.
fn state(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(weir_bin())
        .arg("state")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The entries `weir state get` prints for `key` as JSON, and where it says it read them.
fn get_json(pipeline: &Path, key: &str) -> (Vec<Value>, String) {
    let p = pipeline.to_str().unwrap();
    let (code, out, err) = state(&["get", p, "--stage", "count", key, "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let entries = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (entries, err.lines().next().unwrap_or_default().to_string())
}

#[test]
fn state_is_read_from_the_running_instance_then_the_store_then_the_changelog() {
    let t = Topics::new("state-query", 2);
    std::fs::copy(component("count-v1"), t.dir.path().join("count.wasm")).unwrap();
    let path = t.write_pipeline(
        "[state]\ndir = \"state\"\n\n[[stage]]\nname = \"count\"\nplugin = \"count.wasm\"\n",
    );
    let p = path.to_str().unwrap();
    let mut weir = Weir::start(weir_bin(), &path);
    weir.wait_for_log("assigned", Duration::from_secs(60));
    // Six keys, ten records each; key k5 gets two more.
    let mut records: Vec<In> = (0..60)
        .map(|n| In {
            key: Some(format!("k{}", n % 6)),
            value: json!({ "n": n }).to_string().into_bytes(),
            ..In::default()
        })
        .collect();
    let k5 = records[5].clone();
    records.extend([k5.clone(), k5]);
    t.kafka.produce(&t.source, &records);
    let output = t.kafka.read(&t.sink, 62, Duration::from_secs(60));
    assert_eq!(output.len(), 62, "log:\n{}", weir.log());

    // From the running instance: its admin server is on a port of its own (127.0.0.1:0), found
    // through the process.
    let admin = weir.admin();
    let (k5, from) = get_json(&path, "k5");
    assert_eq!(
        from,
        format!("from the running instances' admin servers: {admin}")
    );
    assert_eq!(k5.len(), 1, "{k5:?}");
    assert_eq!(k5[0]["value"], json!({ "n": 12 }));
    assert_eq!(
        (&k5[0]["name"], &k5[0]["state_version"]),
        (&json!("seen"), &json!(0))
    );
    assert_eq!(k5[0]["topic"], json!(t.source));
    let (code, out, err) = state(&[
        "scan", p, "--stage", "count", "--prefix", "k", "--limit", "4",
    ]);
    assert_eq!(code, 0, "{err}");
    let keys: Vec<&str> = out.lines().map(|l| l.split("  ").next().unwrap()).collect();
    assert_eq!(keys, ["k0", "k1", "k2", "k3"], "{out}");
    assert!(
        out.starts_with("k0  seen = {\"n\":10}  (state version 0, "),
        "{out}"
    );
    let (code, _, err) = state(&["get", p, "--stage", "count", "nobody"]);
    assert_eq!(code, 1, "a key with no state: {err}");
    let (code, _, err) = state(&["get", p, "--stage", "counts", "k0"]);
    assert!(
        code != 0 && err.contains("no stage named `counts`"),
        "{err}"
    );
    assert_eq!(weir.stop(), Some(0), "log:\n{}", weir.log());

    // Nothing runs: the local store, brought up to date from the changelog.
    let offline = "no run of it here: from the local store and the changelog";
    assert_eq!(get_json(&path, "k5"), (k5.clone(), offline.to_string()));
    // The store gone: the changelog alone.
    std::fs::remove_dir_all(t.dir.path().join("state")).unwrap();
    assert_eq!(get_json(&path, "k5"), (k5, offline.to_string()));
    let (code, out, err) = state(&["scan", p, "--stage", "count", "--json"]);
    assert_eq!(code, 0, "{err}");
    let counts: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["value"]["n"].clone())
        .collect();
    assert_eq!(counts, [10, 10, 10, 10, 10, 12]);
}
