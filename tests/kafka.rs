//! `weir run` against a real broker (the project's `scripts/kafka-broker.sh`): records produced
//! to a topic, the real binary running a real pipeline, the output topic read back and compared
//! record by record with what it must hold, and the committed offsets checked.

mod common;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use common::kafka::{kafka, unique, In, Out, Weir};
use serde_json::{json, Value};

fn weir_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_weir"))
}

/// Topics and a group of one test, and the pipeline file that joins them.
struct Setup {
    dir: tempfile::TempDir,
    source: String,
    sink: String,
    dlq: String,
    group: String,
    partitions: i32,
}

impl Setup {
    fn new(name: &str, partitions: i32) -> Setup {
        let k = kafka();
        let s = Setup {
            dir: common::scratch(),
            source: unique(&format!("{name}-in")),
            sink: unique(&format!("{name}-out")),
            dlq: unique(&format!("{name}-dlq")),
            group: unique(&format!("{name}-group")),
            partitions,
        };
        k.create_topic(&s.source, partitions);
        k.create_topic(&s.sink, partitions);
        k.create_topic(&s.dlq, 1);
        s
    }

    /// A pipeline file with `stages` (TOML) and `extra` tables, reading the source topic and
    /// writing the sink topic.
    fn pipeline(&self, stages: &str, extra: &str) -> PathBuf {
        self.pipeline_with(&kafka().brokers, "", stages, extra)
    }

    /// The same, with the source on `brokers` and more lines in `[sink]`.
    fn pipeline_with(&self, brokers: &str, sink: &str, stages: &str, extra: &str) -> PathBuf {
        let text = format!(
            r#"
[source]
brokers = "{brokers}"
topics = ["{source}"]
group = "{group}"
batch_size = 64
kafka = {{ "session.timeout.ms" = 6000 }}

[sink]
topic = "{sink_topic}"
{sink}

[delivery]
checkpoint_interval = "200ms"

{stages}
{extra}
"#,
            source = self.source,
            group = self.group,
            sink_topic = self.sink,
        );
        let path = self.dir.path().join("pipeline.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn committed(&self) -> Vec<i64> {
        kafka().committed(&self.group, &self.source, self.partitions)
    }
}

fn plugin(name: &str) -> String {
    common::component(name).display().to_string()
}

/// `n` orders spread over 20 customers (the key), with a header and an event time each.
fn orders(n: usize) -> Vec<In> {
    (0..n)
        .map(|i| In {
            key: Some(format!("customer-{}", i % 20)),
            value: json!({"id": i, "amount": (i * 37) % 250, "email": format!("u{i}@example.com")})
                .to_string()
                .into_bytes(),
            headers: vec![("trace".into(), format!("t{i}"))],
            partition: None,
            timestamp: Some(1_700_000_000_000 + i as i64),
        })
        .collect()
}

fn json_of(out: &Out) -> Value {
    serde_json::from_str(out.value.as_deref().expect("a value")).expect("JSON value")
}

/// Per key, the values in the order they were written: what one key's readers see, and what
/// must be preserved (one key lives in one partition, end to end).
fn by_key(records: &[Out]) -> BTreeMap<String, Vec<Out>> {
    let mut map: BTreeMap<String, Vec<Out>> = BTreeMap::new();
    for r in records {
        map.entry(r.key.clone().unwrap_or_default())
            .or_default()
            .push(r.clone());
    }
    map
}

const STAGES: &str = r#"
[[stage]]
name = "big-orders"
plugin = "JSON_FILTER"
config = { where = [{ path = "/amount", op = "gt", value = 100 }] }

[[stage]]
name = "mask"
plugin = "MASK_PII"
config = { fields = ["/email"], mode = "redact" }
"#;

fn stages() -> String {
    STAGES
        .replace("JSON_FILTER", &plugin("json-filter"))
        .replace("MASK_PII", &plugin("mask-pii"))
}

#[test]
fn a_pipeline_filters_and_masks_every_record_keeps_order_and_commits() {
    let k = kafka();
    let setup = Setup::new("e2e", 3);
    let input = orders(3000);
    k.produce(&setup.source, &input);
    let expected: Vec<&In> = input
        .iter()
        .filter(|r| {
            serde_json::from_slice::<Value>(&r.value).unwrap()["amount"].as_u64() > Some(100)
        })
        .collect();

    let mut weir = Weir::start(weir_bin(), &setup.pipeline(&stages(), ""));
    let output = k.read(&setup.sink, expected.len(), Duration::from_secs(90));
    let code = weir.stop();
    assert_eq!(
        code,
        Some(0),
        "weir run did not exit cleanly; log:\n{}",
        weir.log()
    );
    assert_eq!(
        output.len(),
        expected.len(),
        "output count; log:\n{}",
        weir.log()
    );

    // Record by record, per key in order: value masked, key, headers and event time kept.
    let got = by_key(&output);
    let mut want: BTreeMap<String, Vec<&In>> = BTreeMap::new();
    for r in &expected {
        want.entry(r.key.clone().unwrap()).or_default().push(r);
    }
    assert_eq!(got.len(), want.len());
    for (key, outs) in &got {
        let ins = &want[key];
        assert_eq!(outs.len(), ins.len(), "records of key {key}");
        for (out, input) in outs.iter().zip(ins) {
            let mut value: Value = serde_json::from_slice(&input.value).unwrap();
            value["email"] = json!("[REDACTED]");
            assert_eq!(json_of(out), value, "key {key}");
            assert_eq!(out.headers.get("trace"), Some(&input.headers[0].1));
            assert_eq!(out.timestamp, input.timestamp);
        }
    }

    // Every input's offset is committed: a restart would read nothing again.
    let per_partition = k.read(&setup.source, input.len(), Duration::from_secs(30));
    let mut ends = vec![0i64; setup.partitions as usize];
    for r in &per_partition {
        ends[r.partition as usize] = ends[r.partition as usize].max(r.offset + 1);
    }
    assert_eq!(
        setup.committed(),
        ends,
        "committed offsets; log:\n{}",
        weir.log()
    );
}

// ---------------------------------------------------------------------------------------------
// Records a stage fails on, under each error policy
// ---------------------------------------------------------------------------------------------

/// 200 commands for the `misbehave` test plugin over 5 keys: every 10th (from the 3rd) asks for
/// a plugin error, every 25th (from the 7th) for a panic, the rest pass with a tag added.
fn commands() -> Vec<In> {
    (0..200)
        .map(|i| {
            let value = if i % 25 == 7 {
                json!({"n": i, "panic": true})
            } else if i % 10 == 3 {
                json!({"n": i, "fail": format!("bad {i}")})
            } else {
                json!({"n": i})
            };
            In {
                key: Some(format!("k{}", i % 5)),
                value: value.to_string().into_bytes(),
                headers: vec![("origin".into(), format!("o{i}"))],
                partition: None,
                timestamp: Some(1_000 + i as i64),
            }
        })
        .collect()
}

/// The kind of failure `commands()` asks for in record `n`, if any.
fn failure_kind(n: u64) -> Option<&'static str> {
    if n % 25 == 7 {
        Some("trap")
    } else if n % 10 == 3 {
        Some("plugin-error")
    } else {
        None
    }
}

fn misbehave_stage() -> String {
    format!(
        "[[stage]]\nname = \"misbehave\"\nplugin = \"{}\"\nconfig = {{ tag = \"ok\" }}\n",
        plugin("misbehave")
    )
}

/// The `n` of each output, per key in order, checking each is tagged and was meant to pass.
fn passed(output: &[Out]) -> BTreeMap<String, Vec<u64>> {
    by_key(output)
        .into_iter()
        .map(|(key, outs)| {
            let ns = outs
                .iter()
                .map(|o| {
                    let v = json_of(o);
                    assert_eq!(v["tag"], "ok", "{o:?}");
                    let n = v["n"].as_u64().unwrap();
                    assert_eq!(failure_kind(n), None, "record {n} should have failed");
                    assert_eq!(o.headers["origin"], format!("o{n}"));
                    assert_eq!(o.timestamp, Some(1_000 + n as i64));
                    n
                })
                .collect();
            (key, ns)
        })
        .collect()
}

/// What `passed` must give: the passing records per key, in order.
fn expected_passes(input: &[In]) -> BTreeMap<String, Vec<u64>> {
    let mut map: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (n, r) in input.iter().enumerate() {
        if failure_kind(n as u64).is_none() {
            map.entry(r.key.clone().unwrap())
                .or_default()
                .push(n as u64);
        }
    }
    map
}

fn sha256_hex(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// Wait for `expected` records in the sink, stop weir cleanly, and return them.
fn run_to_completion(setup: &Setup, pipeline: &Path, expected: usize) -> (Vec<Out>, String) {
    let mut weir = Weir::start(weir_bin(), pipeline);
    let output = kafka().read(&setup.sink, expected, Duration::from_secs(90));
    let code = weir.stop();
    let log = weir.log();
    assert_eq!(code, Some(0), "weir run did not exit cleanly; log:\n{log}");
    (output, log)
}

#[test]
fn dead_letter_policy_sends_failed_records_with_their_cause() {
    let k = kafka();
    let setup = Setup::new("dlq", 2);
    let input = commands();
    k.produce(&setup.source, &input);
    let extra = format!(
        "[errors]\npolicy = \"dead-letter\"\ntopic = \"{}\"\n",
        setup.dlq
    );
    let pipeline = setup.pipeline(&misbehave_stage(), &extra);
    let want = expected_passes(&input);
    let passes: usize = want.values().map(Vec::len).sum();
    let (output, log) = run_to_completion(&setup, &pipeline, passes);
    assert_eq!(passed(&output), want, "log:\n{log}");

    // Each failed record once, as it was read, with headers naming stage, plugin build, kind,
    // message and source coordinates.
    let sources = k.read(&setup.source, input.len(), Duration::from_secs(30));
    let letters = k.read(&setup.dlq, input.len() - passes, Duration::from_secs(30));
    assert_eq!(letters.len(), input.len() - passes, "log:\n{log}");
    let hash = sha256_hex(&common::component("misbehave"));
    for letter in &letters {
        let n = json_of(letter)["n"].as_u64().unwrap();
        let kind = failure_kind(n).expect("only failing records are dead-lettered");
        let original = sources
            .iter()
            .find(|s| json_of(s)["n"] == n)
            .expect("the source record");
        assert_eq!(letter.key, original.key);
        assert_eq!(letter.value, original.value);
        assert_eq!(letter.timestamp, original.timestamp);
        let h = &letter.headers;
        assert_eq!(h["origin"], format!("o{n}"));
        assert_eq!(h["weir.error.stage"], "misbehave");
        assert_eq!(h["weir.error.plugin.sha256"], hash);
        assert_eq!(h["weir.error.kind"], kind);
        let message = &h["weir.error.message"];
        match kind {
            "trap" => assert!(message.contains("asked to panic"), "{message}"),
            _ => assert_eq!(message, &format!("bad {n}")),
        }
        assert_eq!(h["weir.source.topic"], setup.source);
        assert_eq!(h["weir.source.partition"], original.partition.to_string());
        assert_eq!(h["weir.source.offset"], original.offset.to_string());
    }
    let ends = partition_ends(&sources, setup.partitions);
    assert_eq!(setup.committed(), ends, "log:\n{log}");
}

/// One past the last offset of each partition in `records`.
fn partition_ends(records: &[Out], partitions: i32) -> Vec<i64> {
    let mut ends = vec![0i64; partitions as usize];
    for r in records {
        ends[r.partition as usize] = ends[r.partition as usize].max(r.offset + 1);
    }
    ends
}

#[test]
fn skip_policy_drops_failed_records_and_goes_on() {
    let k = kafka();
    let setup = Setup::new("skip", 2);
    let input = commands();
    k.produce(&setup.source, &input);
    let pipeline = setup.pipeline(&misbehave_stage(), "[errors]\npolicy = \"skip\"\n");
    let want = expected_passes(&input);
    let passes: usize = want.values().map(Vec::len).sum();
    let (output, log) = run_to_completion(&setup, &pipeline, passes);
    assert_eq!(passed(&output), want, "log:\n{log}");
    assert!(log.contains("(skipped)"), "skips are logged; log:\n{log}");
    assert!(k.read(&setup.dlq, 0, Duration::from_secs(2)).is_empty());
    let sources = k.read(&setup.source, input.len(), Duration::from_secs(30));
    assert_eq!(
        setup.committed(),
        partition_ends(&sources, setup.partitions)
    );
}

#[test]
fn fail_policy_stops_before_the_failing_record_and_commits_up_to_it() {
    let k = kafka();
    let setup = Setup::new("fail", 1);
    let input: Vec<In> = (0..50)
        .map(|i| In {
            key: Some(format!("k{}", i % 3)),
            value: if i == 20 {
                json!({"n": i, "fail": "record twenty is bad"})
            } else {
                json!({"n": i})
            }
            .to_string()
            .into_bytes(),
            ..In::default()
        })
        .collect();
    k.produce(&setup.source, &input);
    // Policy `fail` is the default.
    let mut weir = Weir::start(weir_bin(), &setup.pipeline(&misbehave_stage(), ""));
    let code = weir.wait(Duration::from_secs(90));
    let log = weir.log();
    assert_eq!(
        code,
        Some(1),
        "weir run must stop with an error; log:\n{log}"
    );
    let place = format!("stage `misbehave` failed on {}[0]@20", setup.source);
    assert!(
        log.contains(&place),
        "the error names stage and record; log:\n{log}"
    );
    assert!(log.contains("record twenty is bad"), "log:\n{log}");

    // Everything before the failing record went out, nothing after it; the committed offset is
    // the failing record's, so a restart (with a fixed plugin) resumes exactly there.
    let output = k.read(&setup.sink, 20, Duration::from_secs(30));
    let ns: Vec<u64> = output
        .iter()
        .map(|o| json_of(o)["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, (0..20).collect::<Vec<u64>>(), "log:\n{log}");
    assert_eq!(setup.committed(), vec![20], "log:\n{log}");
}
