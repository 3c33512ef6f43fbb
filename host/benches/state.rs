//! The cost of keyed state per record: one get and one put of a small value.
//!
//! ```text
//! cargo bench -p weir --bench state            # 1M records (WEIR_BENCH_RECORDS to change)
//! ```
//!
//! 1. The store alone, from the host: get then put of a ~30-byte value under one of 10k keys,
//!    changes taken every 512 records as at-least-once does after each batch (written to the
//!    on-disk store; the changelog producer is left out: the Kafka benchmark measures the sink).
//!    With the on-disk store `weir run` uses, with and without its read cache, and with the
//!    in-memory one `weir test` uses.
//! 2. Through a plugin: the `running-total` component (per-key count and sum: a get and a put per
//!    record, JSON in and out) in batches of 512, with each store; the difference is what the
//!    disk adds to a stateful stage.
//!
//! The 10k keys fit the default cache: these are the figures of a stage whose working set fits;
//! one whose keys are all new or far apart pays the uncached price on each miss.
//!
//! Exactly once against at least once through Kafka is in the `kafka` benchmark.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{atomic::AtomicI64, Arc},
    time::Instant,
};

use serde_json::json;
use weir::{
    chain::Chain,
    config::Pipeline,
    engine::{Engine, Entry, MemoryState, Record, SharedState, StateBackend},
    state::{PartitionState, StateStore, DEFAULT_CACHE_BYTES},
};

#[path = "../../tests/all/common/mod.rs"]
mod kit;

const BATCH: usize = 512;
const KEYS: usize = 10_000;

fn key(i: usize) -> Option<Vec<u8>> {
    Some(format!("customer-{}", (i * 7919) % KEYS).into_bytes())
}

/// Get and put per record straight on `state`; `flush` runs after every batch. µs per record.
/// Cost per record: wall-clock time, and CPU time of the whole process (its background threads
/// too, such as fjall's flushes), which other processes competing for the cores change less.
#[derive(Clone, Copy)]
struct Cost {
    wall: f64,
    cpu: f64,
}

impl std::fmt::Display for Cost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:>6.2} µs/record ({:.2} CPU)", self.wall, self.cpu)
    }
}

struct Started {
    wall: Instant,
    cpu: std::time::Duration,
}

fn process_cpu() -> std::time::Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn start() -> Started {
    Started {
        wall: Instant::now(),
        cpu: process_cpu(),
    }
}

impl Started {
    fn per_record(&self, n: usize) -> Cost {
        Cost {
            wall: self.wall.elapsed().as_secs_f64() * 1e6 / n as f64,
            cpu: (process_cpu() - self.cpu).as_secs_f64() * 1e6 / n as f64,
        }
    }
}

fn store_alone(state: &dyn StateBackend, n: usize, mut flush: impl FnMut()) -> Cost {
    let started = start();
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
    started.per_record(n)
}

/// The running-total component over `n` records with its state in `state`. µs per record.
fn through_plugin(state: SharedState, n: usize, mut flush: impl FnMut()) -> Cost {
    let dir = tempfile::tempdir().unwrap();
    let plugin = kit::root().join("plugins/running-total.wasm");
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
    let started = start();
    for batch in batches {
        let out = chain.process(batch);
        assert!(out.failures.is_empty(), "{:?}", out.failures.first());
        flush();
    }
    started.per_record(n)
}

fn on_disk(dir: &Path, name: &str, cache_bytes: u64) -> Arc<PartitionState> {
    let store = StateStore::open(&dir.join(name), cache_bytes).unwrap();
    Arc::new(store.partition("totals", "orders", 0, Arc::new(AtomicI64::new(-1))))
}

fn main() {
    let n: usize = std::env::var("WEIR_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    println!("state bench: {n} records over {KEYS} keys, changes written every {BATCH} records");

    let alone = |name: &str, cache_bytes: u64| {
        let disk = on_disk(dir.path(), name, cache_bytes);
        store_alone(&*disk, n, || {
            disk.flush().unwrap();
        })
    };
    let uncached = alone("alone-uncached", 0);
    let cached = alone("alone", DEFAULT_CACHE_BYTES);
    let memory = store_alone(&MemoryState::default(), n, || {});
    println!("  get + put, host alone:");
    println!("    on disk, read cache:       {cached}");
    println!("    on disk, no read cache:    {uncached}");
    println!("    in memory:                 {memory}");

    let plugin = |name: &str, cache_bytes: u64| {
        let disk = on_disk(dir.path(), name, cache_bytes);
        let flushed = disk.clone();
        through_plugin(disk, n, move || {
            flushed.flush().unwrap();
        })
    };
    let uncached = plugin("plugin-uncached", 0);
    let cached = plugin("plugin", DEFAULT_CACHE_BYTES);
    let memory = through_plugin(MemoryState::shared(), n, || {});
    println!("  running-total (wasm):");
    println!("    on disk, read cache:       {cached}");
    println!("    on disk, no read cache:    {uncached}");
    println!("    in memory:                 {memory}");
    println!(
        "  the disk adds {:.2} µs/record ({:.2} CPU) to the stage ({:.2}, {:.2} CPU without the \
         read cache)",
        cached.wall - memory.wall,
        cached.cpu - memory.cpu,
        uncached.wall - memory.wall,
        uncached.cpu - memory.cpu
    );
}
