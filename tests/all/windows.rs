//! Window stages end to end: `weir test` on hand-written sequences, a property test of 100k
//! random events against a direct computation (all three window kinds, through the real wasm
//! plugins), and the same through Kafka with `weir run`.

use crate::common;
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::common::{
    kafka::{http_get, kafka, unique, In, Weir},
    weir_bin,
};
use proptest::prelude::*;
use serde_json::{json, Value};
use weir::{
    chain::Chain,
    config::Pipeline,
    engine::{Engine, Record},
};

/// A window stage of plugin `plugin` with `settings` (TOML lines), as a pipeline file in `dir`.
fn pipeline(dir: &Path, plugin: &str, config: &str, settings: &str, head: &str) -> PathBuf {
    let text = format!(
        "{head}\n[[stage]]\nname = \"win\"\nplugin = \"{}\"\nconfig = {config}\n{settings}\n",
        common::component(plugin).display()
    );
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `weir test PIPELINE --input FILE`: stdout lines as JSON, stderr, exit code.
fn weir_test(pipeline: &Path, lines: &[Value]) -> (Vec<Value>, String, i32) {
    let input = pipeline.with_file_name("input.jsonl");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&input, text).unwrap();
    let out = Command::new(weir_bin())
        .arg("test")
        .arg(pipeline)
        .arg("--input")
        .arg(&input)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let values = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (
        values,
        String::from_utf8(out.stderr).unwrap(),
        out.status.code().unwrap_or(-1),
    )
}

fn event(key: &str, ts: i64, amount: i64) -> Value {
    json!({"user": key, "ts": ts, "amount": amount})
}

#[test]
fn weir_test_runs_a_window_stage_over_out_of_order_and_late_records() {
    let dir = common::scratch();
    let p = pipeline(
        dir.path(),
        "sum-window",
        r#"{ field = "/amount" }"#,
        r#"window = { kind = "tumbling", size = "1m" }
time = { field = "/ts" }
watermark = { max_out_of_order = "5s" }
allowed_lateness = "10s"
late = "drop""#,
        "",
    );
    // `weir test` reads values only, so every record has no key: one key, `null`.
    let (out, err, code) = weir_test(
        &p,
        &[
            event("a", 1_000, 5),
            event("a", 30_000, 7),
            event("a", 63_000, 1),  // watermark 57_999
            event("a", 59_000, 2),  // out of order, in time
            event("a", 65_000, 1),  // watermark 59_999: [0, 1m) fires: 3 records, 14
            event("a", 20_000, 10), // late, within 10 s of lateness: fires again, 4 records, 24
            event("a", 70_000, 1),  // watermark 64_999: past [0, 1m)'s cleanup (69_999)? no
            event("a", 75_000, 1),  // watermark 69_999: cleaned up
            event("a", 40_000, 99), // too late: dropped and counted
            json!({"no": "time"}),  // an error, named
        ],
    );
    assert_eq!(code, 1, "an error makes the exit code 1; stderr:\n{err}");
    let windows: Vec<(i64, i64, i64)> = out
        .iter()
        .map(|v| {
            (
                v["start"].as_i64().unwrap(),
                v["count"].as_i64().unwrap(),
                v["sum"].as_i64().unwrap(),
            )
        })
        .collect();
    // The end of input fires the rest: [1m, 2m) with its 4 records.
    assert_eq!(
        windows,
        [(0, 3, 14), (0, 4, 24), (60_000, 4, 4)],
        "stderr:\n{err}"
    );
    assert!(
        err.contains("input.jsonl:9: stage `win`: behind the watermark 69999"),
        "{err}"
    );
    assert!(err.contains("input.jsonl:10: stage `win`"), "{err}");
    assert!(
        err.contains("event-time") && err.contains("no `/ts`"),
        "{err}"
    );
    assert!(
        err.contains("10 in, 3 out, 0 filtered, 1 errors, 1 late"),
        "{err}"
    );
}

#[test]
fn weir_check_describes_window_stages_and_rejects_bad_window_settings() {
    let dir = common::scratch();
    let p = pipeline(
        dir.path(),
        "count-window",
        "{}",
        r#"window = { kind = "sliding", size = "10s", slide = "5s" }
watermark = { max_out_of_order = "1s", idle_timeout = "30s" }"#,
        "",
    );
    let out = Command::new(weir_bin())
        .arg("check")
        .arg(&p)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("sliding 10000 ms windows every 5000 ms on the record timestamp, watermark 1000 ms behind (idle after 30s)"),
        "{text}"
    );

    let cases = [
        (
            "count-window",
            r#"window = { kind = "hopping", size = "1m" }"#,
            "unknown variant `hopping`",
        ),
        (
            "count-window",
            r#"window = { kind = "tumbling", size = "0s" }"#,
            "window size must be longer than 0",
        ),
        (
            "count-window",
            r#"time = { field = "/ts" }"#,
            "`time` is a window setting, but the stage has no `window`",
        ),
        (
            "count-window",
            "window = { kind = \"session\", gap = \"1m\" }\ntime = { field = \"ts\" }",
            "is not a JSON pointer",
        ),
        (
            "count-window",
            "window = { kind = \"session\", gap = \"1m\" }\nlate = \"dead-letter\"",
            "needs errors.policy = \"dead-letter\"",
        ),
        (
            "count-window",
            "",
            "is a window plugin: give its stage a `window`",
        ),
        (
            "json-filter",
            r#"window = { kind = "tumbling", size = "1m" }"#,
            "is a filter plugin, but its stage has `window` settings",
        ),
    ];
    for (plugin, settings, expected) in cases {
        let p = pipeline(dir.path(), plugin, "{}", settings, "");
        let out = Command::new(weir_bin())
            .arg("check")
            .arg(&p)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{settings}: accepted");
        assert!(err.contains(expected), "{settings}: {err}");
        assert!(
            err.contains("pipeline.toml:"),
            "names the file and line: {err}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Property: every emitted window equals a direct computation
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Kind {
    Tumbling(i64),
    Sliding(i64, i64),
    Session(i64),
}

impl Kind {
    fn toml(self) -> String {
        match self {
            Kind::Tumbling(size) => format!("{{ kind = \"tumbling\", size = {size} }}"),
            Kind::Sliding(size, slide) => {
                format!("{{ kind = \"sliding\", size = {size}, slide = {slide} }}")
            }
            Kind::Session(gap) => format!("{{ kind = \"session\", gap = {gap} }}"),
        }
    }
}

/// `n` events `(key, ts, amount)`: time moves forward in random steps and each event is up to
/// `disorder - 1` ms behind it, so none is behind the newest by `disorder` or more.
fn events(seed: u64, n: usize, keys: u64, disorder: i64) -> Vec<(String, i64, i64)> {
    // Seeded: the events of a case are a function of its seed.
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut now = 1_700_000_000_000i64;
    (0..n)
        .map(|_| {
            now += rng.i64(0..40);
            let ts = now - rng.i64(0..disorder);
            let key = format!("k{}", rng.u64(0..keys));
            (key, ts, rng.i64(0..1000))
        })
        .collect()
}

/// Count and sum per key and window, computed directly from all events at once.
fn direct(kind: Kind, events: &[(String, i64, i64)]) -> BTreeMap<(String, i64, i64), (i64, i64)> {
    let mut out: BTreeMap<(String, i64, i64), (i64, i64)> = BTreeMap::new();
    let mut add = |key: &str, start: i64, end: i64, amount: i64| {
        let e = out.entry((key.to_string(), start, end)).or_default();
        e.0 += 1;
        e.1 += amount;
    };
    match kind {
        Kind::Tumbling(size) => {
            for (k, ts, a) in events {
                let start = ts - ts.rem_euclid(size);
                add(k, start, start + size, *a);
            }
        }
        Kind::Sliding(size, slide) => {
            for (k, ts, a) in events {
                let mut start = ts - ts.rem_euclid(slide);
                while start > ts - size {
                    add(k, start, start + size, *a);
                    start -= slide;
                }
            }
        }
        Kind::Session(gap) => {
            let mut by_key: BTreeMap<&str, Vec<(i64, i64)>> = BTreeMap::new();
            for (k, ts, a) in events {
                by_key.entry(k).or_default().push((*ts, *a));
            }
            for (k, mut list) in by_key {
                list.sort();
                let (mut start, mut end, mut count, mut sum) = (list[0].0, list[0].0 + gap, 0, 0);
                for (ts, a) in list {
                    if ts > end {
                        out.insert((k.to_string(), start, end), (count, sum));
                        (start, count, sum) = (ts, 0, 0);
                    }
                    end = end.max(ts + gap);
                    count += 1;
                    sum += a;
                }
                out.insert((k.to_string(), start, end), (count, sum));
            }
        }
    }
    out
}

/// What a window stage emitted, per key and window; panics on a window emitted twice.
fn emitted(records: &[Record]) -> BTreeMap<(String, i64, i64), (i64, i64)> {
    let mut out = BTreeMap::new();
    for r in records {
        let v: Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
        let key = String::from_utf8(r.key.clone().unwrap()).unwrap();
        assert_eq!(v["key"], json!(key), "the output's key is the window's");
        let id = (
            key,
            v["start"].as_i64().unwrap(),
            v["end"].as_i64().unwrap(),
        );
        let total = (v["count"].as_i64().unwrap(), v["sum"].as_i64().unwrap());
        assert!(
            out.insert(id.clone(), total).is_none(),
            "{id:?} emitted twice"
        );
    }
    out
}

fn kind_strategy() -> impl Strategy<Value = Kind> {
    prop_oneof![
        (500i64..5_000).prop_map(Kind::Tumbling),
        (1i64..5, 300i64..2_000).prop_map(|(n, slide)| Kind::Sliding(n * slide, slide)),
        (20i64..400).prop_map(Kind::Session),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// 100k events with bounded disorder through the real `sum-window` plugin, in batches like
    /// the ones `weir run` makes: with `max_out_of_order` at the bound, no event is late, every
    /// window fires exactly once and equals the direct computation.
    #[test]
    fn windows_match_a_direct_computation(
        kind in kind_strategy(),
        seed in any::<u64>(),
        disorder in 1i64..3_000,
        keys in 1u64..200,
        batch in 1usize..600,
    ) {
        let dir = common::scratch();
        let settings = format!(
            "window = {}\ntime = {{ field = \"/ts\" }}\nwatermark = {{ max_out_of_order = {disorder} }}",
            kind.toml()
        );
        let p = pipeline(dir.path(), "sum-window", r#"{ field = "/amount" }"#, &settings, "");
        let mut chain = Chain::from_pipeline(&Engine::new(None).unwrap(), &Pipeline::load(&p).unwrap()).unwrap();
        let events = events(seed, 100_000, keys, disorder);
        let mut records = Vec::new();
        let mut offset = 0;
        for chunk in events.chunks(batch) {
            let input = chunk
                .iter()
                .map(|(k, ts, a)| {
                    offset += 1;
                    Record {
                        key: Some(k.clone().into_bytes()),
                        value: Some(json!({"ts": ts, "amount": a}).to_string().into_bytes()),
                        headers: Vec::new(),
                        timestamp: 0,
                        topic: "t".into(),
                        partition: 0,
                        offset,
                    }
                })
                .collect();
            let out = chain.process(input);
            prop_assert!(out.failures.is_empty(), "{:?}", out.failures.first());
            prop_assert!(out.late.is_empty(), "late: {:?}", out.late.first());
            records.extend(out.records);
        }
        let rest = chain.finish();
        records.extend(rest.records);
        let got = emitted(&records);
        let want = direct(kind, &events);
        prop_assert_eq!(got.len(), want.len(), "window count");
        for (id, total) in &want {
            prop_assert_eq!(got.get(id), Some(total), "window {:?}", id);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Through Kafka
// ---------------------------------------------------------------------------------------------

/// Keyed events on three partitions (each key on one), a flush event per partition far ahead
/// so every real window fires, `weir run`, and the output compared window by window; then a
/// record too late for its window, which must land in the late topic.
fn windows_through_kafka(kind: Kind) {
    let k = kafka();
    let name = match kind {
        Kind::Tumbling(_) => "tumbling",
        Kind::Sliding(..) => "sliding",
        Kind::Session(_) => "session",
    };
    let (source, sink, late) = (
        unique(&format!("win-{name}-in")),
        unique(&format!("win-{name}-out")),
        unique(&format!("win-{name}-late")),
    );
    for t in [&source, &sink, &late] {
        k.create_topic(t, 3);
    }
    let disorder = 500;
    let events = events(7, 6_000, 12, disorder);
    let partition_of = |key: &str| key[1..].parse::<i32>().unwrap() % 3;
    let mut input: Vec<In> = events
        .iter()
        .map(|(key, ts, amount)| In {
            key: Some(key.clone()),
            value: event(key, *ts, *amount).to_string().into_bytes(),
            partition: Some(partition_of(key)),
            ..In::default()
        })
        .collect();
    let far = events.iter().map(|e| e.1).max().unwrap() + 86_400_000;
    for p in 0..3 {
        input.push(In {
            key: Some("flush".into()),
            value: event("flush", far, 0).to_string().into_bytes(),
            partition: Some(p),
            ..In::default()
        });
    }
    k.produce(&source, &input);

    let dir = common::scratch();
    let head = format!(
        r#"[source]
brokers = "{brokers}"
topics = ["{source}"]
group = "{group}"
batch_size = 100

[sink]
topic = "{sink}"

[delivery]
checkpoint_interval = "200ms"

[state]
dir = "state"
"#,
        brokers = k.brokers,
        group = unique("win-group"),
    );
    let settings = format!(
        "window = {}\ntime = {{ field = \"/ts\" }}\nwatermark = {{ max_out_of_order = {disorder} }}\nlate = {{ topic = \"{late}\" }}",
        kind.toml()
    );
    let p = pipeline(
        dir.path(),
        "sum-window",
        r#"{ field = "/amount" }"#,
        &settings,
        &head,
    );
    let want = direct(kind, &events);
    let mut weir = Weir::start(weir_bin(), &p);
    let output = k.read(&sink, want.len(), Duration::from_secs(120));

    let mut got: BTreeMap<(String, i64, i64), (i64, i64)> = BTreeMap::new();
    let mut homes: BTreeMap<String, i32> = BTreeMap::new();
    for out in &output {
        let v: Value = serde_json::from_str(out.value.as_deref().unwrap()).unwrap();
        let key = out.key.clone().unwrap();
        let home = *homes.entry(key.clone()).or_insert(out.partition);
        assert_eq!(out.partition, home, "a key's results share a partition");
        assert_eq!(out.headers["weir.window.start"], v["start"].to_string());
        assert_eq!(out.headers["weir.window.end"], v["end"].to_string());
        assert_eq!(out.timestamp, Some(v["end"].as_i64().unwrap() - 1));
        let id = (
            key,
            v["start"].as_i64().unwrap(),
            v["end"].as_i64().unwrap(),
        );
        let total = (v["count"].as_i64().unwrap(), v["sum"].as_i64().unwrap());
        assert!(
            got.insert(id.clone(), total).is_none(),
            "{id:?} emitted twice"
        );
    }
    assert_eq!(
        got.len(),
        want.len(),
        "windows emitted; log:\n{}",
        weir.log()
    );
    assert_eq!(got, want, "log:\n{}", weir.log());

    // Now a record far behind the watermark: the late topic gets it, unchanged.
    let too_late = event("k0", events[0].1, 1).to_string();
    k.produce(
        &source,
        &[In {
            key: Some("k0".into()),
            value: too_late.clone().into_bytes(),
            partition: Some(0),
            ..In::default()
        }],
    );
    let late_out = k.read(&late, 1, Duration::from_secs(60));
    assert_eq!(late_out.len(), 1, "log:\n{}", weir.log());
    assert_eq!(late_out[0].value.as_deref(), Some(too_late.as_str()));
    // `/metrics` has each partition's watermark: its latest event time (the flush record's)
    // less the allowed disorder.
    let want_watermark = (far - disorder - 1) as f64 / 1000.0;
    let at = weir.admin();
    let started = std::time::Instant::now();
    let watermark = loop {
        let (_, text) = http_get(&at, "/metrics");
        let shown: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with("weir_window_watermark_seconds{stage=\"win\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .collect();
        if shown == [want_watermark; 3] || started.elapsed() > Duration::from_secs(10) {
            break (shown, text);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(watermark.0, [want_watermark; 3], "{}", watermark.1);
    assert_eq!(weir.stop(), Some(0), "log:\n{}", weir.log());
    assert!(
        weir.log().contains("1 late"),
        "the run counts it; log:\n{}",
        weir.log()
    );
}

#[test]
fn tumbling_windows_through_kafka() {
    windows_through_kafka(Kind::Tumbling(1_000));
}

#[test]
fn session_windows_through_kafka() {
    windows_through_kafka(Kind::Session(60));
}

// ---------------------------------------------------------------------------------------------
// Crashes
// ---------------------------------------------------------------------------------------------

/// `weir run` with a tumbling sum window killed with SIGKILL at random moments and restarted,
/// then run to the end: exactly once, every window comes out once (read as read_committed) with
/// its exact count and sum; at least once, every window comes out, none below the exact count.
fn windows_survive_kill_9(exactly_once: bool) {
    let kills = std::env::var("WEIR_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut rng = fastrand::Rng::with_seed(seed);
    let k = kafka();
    let (source, sink) = (unique("wcrash-in"), unique("wcrash-out"));
    k.create_topic(&source, 3);
    k.create_topic(&sink, 3);
    let disorder = 300;
    let events = events(seed, 40_000, 30, disorder);
    let partition_of = |key: &str| key[1..].parse::<i32>().unwrap() % 3;
    let mut input: Vec<In> = events
        .iter()
        .map(|(key, ts, amount)| In {
            key: Some(key.clone()),
            value: event(key, *ts, *amount).to_string().into_bytes(),
            partition: Some(partition_of(key)),
            ..In::default()
        })
        .collect();
    let far = events.iter().map(|e| e.1).max().unwrap() + 86_400_000;
    for p in 0..3 {
        input.push(In {
            key: Some("flush".into()),
            value: event("flush", far, 0).to_string().into_bytes(),
            partition: Some(p),
            ..In::default()
        });
    }
    // A slice of the input arrives before each run, so every run has records in flight when
    // it is killed, however fast the ones before it were.
    let slice = input.len().div_ceil(kills + 1);
    let mut slices = input.chunks(slice);
    let dir = common::scratch();
    let group = unique("wcrash");
    let head = format!(
        r#"[source]
brokers = "{brokers}"
topics = ["{source}"]
group = "{group}"
batch_size = 200
kafka = {{ "session.timeout.ms" = 6000 }}

[sink]
topic = "{sink}"

[delivery]
checkpoint_interval = "200ms"
guarantee = "{guarantee}"

[state]
dir = "state"
"#,
        brokers = k.brokers,
        guarantee = if exactly_once {
            "exactly-once"
        } else {
            "at-least-once"
        },
    );
    let settings = format!(
        "window = {}\ntime = {{ field = \"/ts\" }}\nwatermark = {{ max_out_of_order = {disorder} }}",
        Kind::Tumbling(2_000).toml()
    );
    let p = pipeline(
        dir.path(),
        "sum-window",
        r#"{ field = "/amount" }"#,
        &settings,
        &head,
    );
    eprintln!("window crash test (exactly once: {exactly_once}): {kills} kills, seed {seed}");
    for kill in 1..=kills {
        k.produce(&source, slices.next().unwrap_or_default());
        let mut weir = Weir::start(weir_bin(), &p);
        weir.wait_for_log("assigned", Duration::from_secs(60));
        let after = Duration::from_millis(rng.u64(300..2_300));
        std::thread::sleep(after);
        weir.signal("KILL");
        assert_eq!(
            weir.wait(Duration::from_secs(10)),
            None,
            "killed by a signal"
        );
        eprintln!(
            "window crash test: kill {kill} {:.1}s after the assignment, committed {:?}",
            after.as_secs_f64(),
            if exactly_once {
                k.positions(&group, &source, 3)
            } else {
                k.committed(&group, &source, 3)
            }
        );
    }
    for rest in slices {
        k.produce(&source, rest);
    }
    let mut weir = Weir::start(weir_bin(), &p);
    let sources = k.read(&source, input.len(), Duration::from_secs(120));
    let ends = common::kafka::partition_ends(&sources, 3);
    let finished = k.wait_finished(
        &group,
        &source,
        &ends,
        exactly_once,
        Duration::from_secs(300),
    );
    assert!(
        finished,
        "the last run did not finish; log:\n{}",
        weir.log()
    );
    // Windows the last partitions' flush records released fire within a tick.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(weir.stop(), Some(0), "log:\n{}", weir.log());
    if std::env::var_os("WEIR_CRASH_VERBOSE").is_some() {
        eprintln!("--- log of the last run ---\n{}", weir.log());
    }

    let want = direct(Kind::Tumbling(2_000), &events);
    let output = if exactly_once {
        k.read_committed(&sink, 3)
    } else {
        k.read(&sink, want.len(), Duration::from_secs(60))
    };
    let mut got: BTreeMap<(String, i64, i64), Vec<(i64, i64)>> = BTreeMap::new();
    for out in &output {
        let v: Value = serde_json::from_str(out.value.as_deref().unwrap()).unwrap();
        let id = (
            out.key.clone().unwrap(),
            v["start"].as_i64().unwrap(),
            v["end"].as_i64().unwrap(),
        );
        got.entry(id)
            .or_default()
            .push((v["count"].as_i64().unwrap(), v["sum"].as_i64().unwrap()));
    }
    let missing: Vec<_> = want.keys().filter(|id| !got.contains_key(*id)).collect();
    let duplicates: usize = got.values().map(|v| v.len() - 1).sum();
    eprintln!(
        "window crash test: {} results for {} windows: {duplicates} duplicates, {} missing",
        output.len(),
        want.len(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "windows never emitted: {:?}",
        &missing[..missing.len().min(10)]
    );
    assert_eq!(got.len(), want.len(), "no window that should not exist");
    for (id, exact) in &want {
        let results = &got[id];
        if exactly_once {
            assert_eq!(results, &vec![*exact], "window {id:?}");
        } else {
            assert!(
                results.iter().all(|r| r.0 >= exact.0),
                "window {id:?}: {results:?} counts fewer than the exact {exact:?}"
            );
        }
    }
}

/// Exactly once, every window comes out once with its exact count and sum.
#[test]
fn windows_are_exactly_once_across_kill_9() {
    windows_survive_kill_9(true);
}

#[test]
fn windows_lose_nothing_across_kill_9_at_least_once() {
    windows_survive_kill_9(false);
}
