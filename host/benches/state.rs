//! The cost of keyed state per record: one get and one put of a small value.
//!
//! ```text
//! cargo bench -p weir --bench state            # 1M records (WEIR_BENCH_RECORDS to change)
//! ```
//!
//! 1. The store alone, from the host: get then put of a ~30-byte value under one of 10k keys,
//!    changes taken every 512 records as at-least-once does after each batch (written to the
//!    on-disk store; the changelog producer is left out: the Kafka benchmark measures the sink).
//!    Once with the on-disk store `weir run` uses, once with the in-memory one `weir test` uses.
//! 2. Through a plugin: the `running-total` component (per-key count and sum: a get and a put per
//!    record, JSON in and out) in batches of 512, with each store; the difference is what the
//!    disk adds to a stateful stage.
//!
//! Exactly once against at least once through Kafka is in the `kafka` benchmark.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{atomic::AtomicI64, Arc},
    time::Instant,
};

use serde_json::json;
use weir::{
    config::Pipeline,
    engine::{Engine, Entry, MemoryState, Record, SharedState, StateBackend},
    pipeline::Chain,
    state::{PartitionState, StateStore},
};

const BATCH: usize = 512;
const KEYS: usize = 10_000;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn key(i: usize) -> Option<Vec<u8>> {
    Some(format!("customer-{}", (i * 7919) % KEYS).into_bytes())
}

/// Get and put per record straight on `state`; `flush` runs after every batch. µs per record.
fn store_alone(state: &dyn StateBackend, n: usize, mut flush: impl FnMut()) -> f64 {
    let started = Instant::now();
    for i in 0..n {
        let k = (key(i), "totals".to_string());
        let count = state
            .get(&k)
            .map_or(0, |e| u64::from_le_bytes(e.value[..8].try_into().unwrap()));
        let mut value = (count + 1).to_le_bytes().to_vec();
        value.extend_from_slice(b"{\"count\":1,\"sum\":42}");
        state.apply(BTreeMap::from([(k, Some(Entry::new(value, 0)))]));
        if i % BATCH == BATCH - 1 {
            flush();
        }
    }
    started.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// The running-total component over `n` records with its state in `state`. µs per record.
fn through_plugin(state: SharedState, n: usize, mut flush: impl FnMut()) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let plugin = root().join("plugins/running-total.wasm");
    assert!(plugin.exists(), "run scripts/build-plugins.sh first");
    let path = dir.path().join("p.toml");
    std::fs::write(
        &path,
        format!(
            "[[stage]]\nname = \"totals\"\nplugin = \"{}\"\nconfig = {{ field = \"/amount\" }}\n",
            plugin.display()
        ),
    )
    .unwrap();
    let engine = Engine::new(None).unwrap();
    let mut chain = Chain::from_pipeline(&engine, &Pipeline::load(&path).unwrap()).unwrap();
    chain.set_state(0, state);
    let batches: Vec<Vec<Record>> = (0..n)
        .collect::<Vec<_>>()
        .chunks(BATCH)
        .map(|chunk| {
            chunk
                .iter()
                .map(|&i| Record {
                    key: key(i),
                    value: Some(json!({"id": i, "amount": i % 97}).to_string().into_bytes()),
                    headers: Vec::new(),
                    timestamp: 0,
                    topic: "orders".into(),
                    partition: 0,
                    offset: i as i64,
                })
                .collect()
        })
        .collect();
    let started = Instant::now();
    for batch in batches {
        let out = chain.process(batch);
        assert!(out.failures.is_empty(), "{:?}", out.failures.first());
        flush();
    }
    started.elapsed().as_secs_f64() * 1e6 / n as f64
}

fn on_disk(dir: &Path, name: &str) -> Arc<PartitionState> {
    let store = StateStore::open(&dir.join(name)).unwrap();
    Arc::new(store.partition("totals", "orders", 0, Arc::new(AtomicI64::new(-1))))
}

fn main() {
    let n: usize = std::env::var("WEIR_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    println!("state bench: {n} records over {KEYS} keys, changes written every {BATCH} records");

    let disk = on_disk(dir.path(), "alone");
    let disk_alone = store_alone(&*disk, n, || {
        disk.flush().unwrap();
    });
    let memory_alone = store_alone(&MemoryState::default(), n, || {});
    println!("  get + put, host alone:       on disk {disk_alone:>6.2} µs/record, in memory {memory_alone:>6.2} µs/record");

    let disk = on_disk(dir.path(), "plugin");
    let flushed = disk.clone();
    let disk_plugin = through_plugin(disk, n, move || {
        flushed.flush().unwrap();
    });
    let memory_plugin = through_plugin(MemoryState::shared(), n, || {});
    println!(
        "  running-total (wasm):        on disk {disk_plugin:>6.2} µs/record, in memory {memory_plugin:>6.2} µs/record; the disk adds {:.2} µs/record",
        disk_plugin - memory_plugin
    );
}
