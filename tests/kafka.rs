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
        let text = format!(
            r#"
[source]
brokers = "{brokers}"
topics = ["{source}"]
group = "{group}"
batch_size = 64
kafka = {{ "session.timeout.ms" = 6000 }}

[sink]
topic = "{sink}"

[delivery]
checkpoint_interval = "200ms"

{stages}
{extra}
"#,
            brokers = kafka().brokers,
            source = self.source,
            group = self.group,
            sink = self.sink,
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
