//! Records per second through a tumbling one-minute count window over 10k keys.
//!
//! ```text
//! cargo bench -p weir --bench window           # 1M records (WEIR_BENCH_RECORDS to change)
//! ```
//!
//! The `count-window` component runs in a window stage exactly as `weir run` drives it: batches
//! of 512 records of one partition, event time read from a JSON field, accumulators in keyed
//! state. Event time advances 10 minutes over the run (so about 10 windows per key fire, 100k
//! results in all), with up to 2 s of disorder against a 2 s watermark bound. Two state backends
//! are measured: in memory (the window logic and the wasm calls alone) and the on-disk store
//! `weir run` uses, with its changes taken every batch as at-least-once does (the changelog
//! producer is left out: the Kafka benchmark measures the sink).

use std::{
    path::Path,
    sync::{atomic::AtomicI64, Arc},
    time::Instant,
};

use serde_json::json;
use weir::{
    chain::Chain,
    config::Pipeline,
    engine::{Engine, Record},
    state::StateStore,
};

#[path = "../../tests/all/common/mod.rs"]
mod kit;

const BATCH: usize = 512;
const KEYS: u64 = 10_000;

/// `n` events over 10k keys, event time spread over 10 minutes with up to 2 s of disorder.
fn records(n: usize) -> Vec<Record> {
    let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
    let start = 1_700_000_000_000i64;
    let span = 600_000i64;
    (0..n)
        .map(|i| {
            let ts = start + span * i as i64 / n as i64 - rng.i64(..2_000);
            let key = format!("user-{}", rng.u64(..KEYS));
            Record {
                key: Some(key.into_bytes()),
                value: Some(json!({"ts": ts, "amount": 12}).to_string().into_bytes()),
                headers: Vec::new(),
                timestamp: 0,
                topic: "events".into(),
                partition: 0,
                offset: i as i64,
            }
        })
        .collect()
}

fn chain(dir: &Path) -> Chain {
    let plugin = kit::root().join("plugins/count-window.wasm");
    assert!(
        plugin.exists(),
        "{} is not built: run scripts/build-plugins.sh",
        plugin.display()
    );
    let text = format!(
        r#"[[stage]]
name = "per-minute"
plugin = "{}"
window = {{ kind = "tumbling", size = "1m" }}
time = {{ field = "/ts" }}
watermark = {{ max_out_of_order = "2s" }}
"#,
        plugin.display()
    );
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    let engine = Engine::new(None).unwrap();
    Chain::from_pipeline(&engine, &Pipeline::load(&path).unwrap()).unwrap()
}

/// Run every record through, in batches; (seconds, windows fired).
fn measure(chain: &mut Chain, input: &[Record], mut after_batch: impl FnMut()) -> (f64, usize) {
    let started = Instant::now();
    let mut fired = 0;
    for batch in input.chunks(BATCH) {
        let out = chain.process(batch.to_vec());
        assert!(out.failures.is_empty(), "{:?}", out.failures.first());
        assert!(
            out.late.is_empty(),
            "no record is late by more than the bound"
        );
        fired += out.records.len();
        after_batch();
    }
    (started.elapsed().as_secs_f64(), fired)
}

fn main() {
    let n: usize = std::env::var("WEIR_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let input = records(n);
    println!(
        "window bench: {n} records, {KEYS} keys, tumbling 1-minute count window, batches of {BATCH}"
    );

    let dir = tempfile::tempdir().unwrap();
    let mut memory = chain(dir.path());
    let (secs, fired) = measure(&mut memory, &input, || {});
    println!(
        "  state in memory:  {:>9.0} records/s ({:.2} µs/record), {fired} windows fired, {:.2} s",
        n as f64 / secs,
        secs * 1e6 / n as f64,
        secs
    );

    let store =
        StateStore::open(&dir.path().join("state"), weir::state::DEFAULT_CACHE_BYTES).unwrap();
    let state = Arc::new(store.partition("per-minute", "events", 0, Arc::new(AtomicI64::new(-1))));
    let mut on_disk = chain(dir.path());
    on_disk.set_state(0, state.clone());
    let mut changes = 0;
    let (secs, fired) = measure(&mut on_disk, &input, || {
        changes += state.flush().expect("state write").len();
    });
    println!(
        "  state on disk:    {:>9.0} records/s ({:.2} µs/record), {fired} windows fired, {changes} state changes, {:.2} s",
        n as f64 / secs,
        secs * 1e6 / n as f64,
        secs
    );
}
