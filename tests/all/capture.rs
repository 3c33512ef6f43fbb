//! `weir capture` against the broker: slices of a topic by offsets, by time and the last N of
//! each partition, every byte of each record kept, and `weir test` reading a capture back.

use std::{path::Path, process::Command};

use base64::Engine as _;
use serde_json::Value;

use crate::common::{
    kafka::{kafka, In, Topics},
    scratch, weir_bin,
};

/// An hour ago, to the second: a broker may drop records older than its retention.
fn t0() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    (now.as_secs() as i64 - 3600) * 1000
}

/// Record `i`: on partition `i % 2`, a second apart, with a value that is JSON written with
/// odd spacing, plain text, or bytes that are not UTF-8.
fn record(t0: i64, i: usize) -> In {
    let value = match i % 3 {
        0 => format!("{{\"n\": {i},  \"xs\":[1 ]}}").into_bytes(),
        1 => format!("text {i}").into_bytes(),
        _ => vec![0xff, 0x00, i as u8],
    };
    In {
        key: Some(format!("k{i}")),
        value,
        headers: vec![("trace".into(), format!("t{i}"))],
        partition: Some((i % 2) as i32),
        timestamp: Some(t0 + i as i64 * 1000),
        tombstone: false,
    }
}

/// A captured line: its JSON, and its text (where a value's bytes are).
#[derive(Debug)]
struct Line {
    json: Value,
    text: String,
}

impl std::ops::Index<&str> for Line {
    type Output = Value;
    fn index(&self, field: &str) -> &Value {
        &self.json[field]
    }
}

/// `weir capture` with `args` into a file: its lines.
fn capture(brokers: &str, topic: &str, args: &[&str], out: &Path) -> Vec<Line> {
    let run = Command::new(weir_bin())
        .args(["capture", "--brokers", brokers, "--topic", topic, "-o"])
        .arg(out)
        .args(args)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&run.stderr));
    let text = std::fs::read_to_string(out).unwrap();
    text.lines()
        .map(|l| Line {
            json: serde_json::from_str(l).unwrap(),
            text: l.to_string(),
        })
        .collect()
}

/// The record a captured line holds: its index (from the key), and its value's bytes.
fn decoded(line: &Line) -> (usize, Vec<u8>) {
    let i = line["key"].as_str().unwrap()[1..].parse().unwrap();
    let value = if let Some(b64) = line.json.get("value_base64") {
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap()
    } else if let Some(text) = line.json.get("value_text") {
        text.as_str().unwrap().as_bytes().to_vec()
    } else {
        // Written as it was: the JSON text of the line, spacing kept.
        let raw: std::collections::HashMap<String, Box<serde_json::value::RawValue>> =
            serde_json::from_str(&line.text).unwrap();
        raw["value"].get().as_bytes().to_vec()
    };
    (i, value)
}

/// A topic of two partitions holding `record(t0, i)` for i in 0..20.
fn produced(name: &str) -> (Topics, i64, Vec<In>) {
    let t = Topics::new(name, 2);
    let t0 = t0();
    let records: Vec<In> = (0..20).map(|i| record(t0, i)).collect();
    kafka().produce(&t.source, &records);
    (t, t0, records)
}

#[test]
fn capture_saves_slices_by_offset_by_time_and_the_last_n() {
    let k = kafka();
    let (t, t0, records) = produced("capture");
    let dir = scratch();
    let file = |name: &str| dir.path().join(name);

    // Offsets 2 to 5 of partition 0: records 4, 6, 8 and 10, byte for byte.
    let lines = capture(
        &k.brokers,
        &t.source,
        &["--partition", "0", "--from-offset", "2", "--to-offset", "5"],
        &file("range.jsonl"),
    );
    let offsets: Vec<i64> = lines
        .iter()
        .map(|l| l["offset"].as_i64().unwrap())
        .collect();
    assert_eq!(offsets, [2, 3, 4, 5], "{lines:#?}");
    for line in &lines {
        let (i, value) = decoded(line);
        assert_eq!(i, 2 * line["offset"].as_u64().unwrap() as usize);
        assert_eq!(value, records[i].value, "{}", line.text);
        assert_eq!(line["partition"], 0);
        assert_eq!(line["timestamp"], t0 + i as i64 * 1000);
        assert_eq!(line["headers"]["trace"], format!("t{i}"));
    }

    // The last 3 of each partition.
    let lines = capture(&k.brokers, &t.source, &["--last", "3"], &file("last.jsonl"));
    let mut keys: Vec<usize> = lines.iter().map(|l| decoded(l).0).collect();
    keys.sort();
    assert_eq!(keys, [14, 15, 16, 17, 18, 19]);

    // By time: from record 5's second up to (not including) record 9's.
    let since = (t0 + 5000).to_string();
    let until = jiff::Timestamp::from_millisecond(t0 + 9000)
        .unwrap()
        .to_string();
    let lines = capture(
        &k.brokers,
        &t.source,
        &["--since", &since, "--until", &until],
        &file("time.jsonl"),
    );
    let mut keys: Vec<usize> = lines.iter().map(|l| decoded(l).0).collect();
    keys.sort();
    assert_eq!(keys, [5, 6, 7, 8]);
}

/// The whole topic through a filter: the JSON values come out as they went in (spacing kept),
/// and the others fail, each error naming its line.
#[test]
fn weir_test_reads_a_capture_back_byte_for_byte() {
    let k = kafka();
    let (t, _, records) = produced("capture-all");
    let dir = scratch();
    let file = |name: &str| dir.path().join(name);
    let all = capture(&k.brokers, &t.source, &[], &file("all.jsonl"));
    assert_eq!(all.len(), 20);
    let run = Command::new(weir_bin())
        .args([
            "test",
            "--format",
            "envelope",
            "--config",
            r#"{"where": [{"path": "/n", "op": "exists"}]}"#,
            "--input",
        ])
        .arg(file("all.jsonl"))
        .arg(crate::common::component("json-filter"))
        .output()
        .unwrap();
    let stdout = String::from_utf8(run.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    let values: Vec<Vec<u8>> = stdout
        .lines()
        .map(|l| {
            let json = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
            decoded(&Line {
                json,
                text: l.to_string(),
            })
            .1
        })
        .collect();
    let mut json_values: Vec<Vec<u8>> = (0..20)
        .step_by(3)
        .map(|i| records[i].value.clone())
        .collect();
    let mut got = values.clone();
    got.sort();
    json_values.sort();
    assert_eq!(got, json_values, "{stdout}\n{stderr}");
    let errors = stderr.lines().filter(|l| l.starts_with("error: ")).count();
    assert_eq!(errors, 13, "{stderr}");
    assert!(stderr.contains("all.jsonl:2: "), "{stderr}");
}

#[test]
fn capture_names_a_missing_topic_or_partition() {
    let k = kafka();
    let t = Topics::new("capture-bad", 1);
    let dir = scratch();
    let out = dir.path().join("x.jsonl");
    let run = |topic: &str, args: &[&str]| {
        Command::new(weir_bin())
            .args(["capture", "--brokers", &k.brokers, "--topic", topic, "-o"])
            .arg(&out)
            .args(args)
            .output()
            .unwrap()
    };
    let missing = run("no-such-topic-anywhere", &[]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr)
        .contains("topic `no-such-topic-anywhere` does not exist"));
    let partition = run(&t.source, &["--partition", "4"]);
    assert!(!partition.status.success());
    let stderr = String::from_utf8_lossy(&partition.stderr);
    assert!(stderr.contains("has no partition 4 (it has 1)"), "{stderr}");
}
