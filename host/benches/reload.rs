//! What a hot reload costs the stream: the output gap at each swap.
//!
//! ```text
//! scripts/build-plugins.sh && cargo bench -p weir --bench reload
//! ```
//!
//! `weir run`'s code (`run_reloading` with a [`Reloader`], as `weir run` wires them) runs a
//! one-stage pipeline (the `tag` test plugin) against the project's broker while records are
//! produced at a steady rate; the plugin file is replaced `WEIR_BENCH_SWAPS` times (default 20),
//! alternating `tag-v1` and `tag-v2`, each swap once the previous one is in use. A reader notes
//! when each output arrives; as each output carries the version that processed it, the swap is
//! visible in each partition's output as the place where the version changes.
//!
//! Printed: for each swap, the longest output gap at it (over partitions, the time between the
//! last output of the old version and the first of the new); their median, p99 and maximum (the
//! issue's target: p99 below 50 ms); the same statistics of every other gap between consecutive
//! outputs of a partition, for what the stream looks like without a swap; and how long each new
//! file took from being written to being published (validation happens off the data path, so
//! this is not a gap). Every input is checked to come out exactly once.
//!
//! The broker is `scripts/kafka-broker.sh` on `KAFKA_PORT` (default 19292; started and stopped
//! by this run unless one is already running there), or `$KAFKA_BROKERS`. Environment:
//! `WEIR_BENCH_SWAPS`, `WEIR_BENCH_RATE` (records/s, default 2000), `WEIR_BENCH_PARTITIONS`
//! (default 2), `WEIR_LOG` (default `warn`).

use std::{
    sync::{
        atomic::{AtomicBool, Ordering::Relaxed},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use rdkafka::{
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer},
    producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer},
    Message, Offset, TopicPartitionList,
};
use serde_json::{json, Value};
use weir::{
    chain::Stages, config::Pipeline, engine::Engine, reload::Reloader, runtime::RunOptions,
};

#[path = "../../tests/all/common/mod.rs"]
mod kit;

use kit::{
    component, env_or,
    kafka::{bench_broker, broker_script},
};

/// One output as the reader saw it.
struct Seen {
    partition: i32,
    n: u64,
    version: u64,
    at: Instant,
}

/// Median, p99 and maximum of `values` (milliseconds), as text.
fn stats(values: &mut [f64]) -> String {
    if values.is_empty() {
        return "none".into();
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n = {})",
        at(0.5),
        at(0.99),
        values[values.len() - 1],
        values.len()
    )
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let swaps: u64 = env_or("WEIR_BENCH_SWAPS", 20);
    let rate: u64 = env_or("WEIR_BENCH_RATE", 2000);
    let partitions: i32 = env_or("WEIR_BENCH_PARTITIONS", 2);
    let versions = [component("tag-v1"), component("tag-v2")];
    let (kafka, started) = bench_broker(19292);
    let brokers = kafka.brokers.clone();
    let id = format!(
        "{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    );
    let (source, sink) = (format!("reload-in-{id}"), format!("reload-out-{id}"));
    for topic in [&source, &sink] {
        kafka.create_topic(topic, partitions);
    }

    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("tag.wasm");
    std::fs::copy(&versions[0], &plugin).unwrap();
    let path = dir.path().join("pipeline.toml");
    // A short fetch wait: this broker holds a fetch that finds nothing for the whole wait, which
    // would put gaps of its own into the stream.
    std::fs::write(
        &path,
        format!(
            r#"
[source]
brokers = "{brokers}"
topics = ["{source}"]
group = "reload-bench-{id}"
batch_size = 64
kafka = {{ "session.timeout.ms" = 6000, "fetch.wait.max.ms" = 10 }}

[sink]
topic = "{sink}"

[[stage]]
name = "tag"
plugin = "tag.wasm"
"#
        ),
    )
    .unwrap();
    let pipeline = Pipeline::load(&path).unwrap();
    let engine = Engine::new(Engine::default_cache_dir()).unwrap();
    let stages = Stages::load(&engine, &pipeline).unwrap();
    let reloader = Reloader::start(engine, &pipeline, &stages).unwrap();
    let live = reloader.live();
    let options = RunOptions {
        report_every: None,
        ..RunOptions::default()
    };
    let stop = options.stop.clone();
    let run = {
        let live = live.clone();
        thread::spawn(move || weir::runtime::run_reloading(&pipeline, &stages, Some(live), options))
    };

    // The reader: every output with its arrival time.
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let reading = Arc::new(AtomicBool::new(true));
    let reader = {
        let (seen, reading, brokers, sink) =
            (seen.clone(), reading.clone(), brokers.clone(), sink.clone());
        thread::spawn(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("group.id", format!("reader-{sink}"))
                .set("enable.auto.commit", "false")
                .set("fetch.wait.max.ms", "10")
                .create()
                .unwrap();
            let mut list = TopicPartitionList::new();
            for p in 0..partitions {
                list.add_partition_offset(&sink, p, Offset::Beginning)
                    .unwrap();
            }
            consumer.assign(&list).unwrap();
            while reading.load(Relaxed) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
                    let at = Instant::now();
                    let v: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
                    seen.lock().unwrap().push(Seen {
                        partition: m.partition(),
                        n: v["n"].as_u64().unwrap(),
                        version: v["version"].as_u64().unwrap(),
                        at,
                    });
                }
            }
        })
    };

    // The producer: `rate` records a second, in 10 ms steps.
    let producing = Arc::new(AtomicBool::new(true));
    let producer = {
        let (producing, brokers, source) = (producing.clone(), brokers.clone(), source.clone());
        thread::spawn(move || {
            let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("linger.ms", "1")
                .create()
                .unwrap();
            let started = Instant::now();
            let mut n = 0u64;
            while producing.load(Relaxed) {
                let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
                while n < due {
                    let value = json!({ "n": n }).to_string();
                    let key = format!("k{}", n % 12);
                    let mut record = BaseRecord::to(&source).key(&key).payload(&value);
                    loop {
                        match producer.send(record) {
                            Ok(()) => break,
                            Err((_, back)) => {
                                record = back;
                                thread::sleep(Duration::from_millis(1));
                            }
                        }
                    }
                    n += 1;
                }
                thread::sleep(Duration::from_millis(10));
            }
            producer.flush(Duration::from_secs(30)).unwrap();
            n
        })
    };

    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let started = Instant::now();
        while !done() {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "gave up waiting for {what}"
            );
            thread::sleep(Duration::from_millis(5));
        }
    };
    wait_for("the first outputs", &|| seen.lock().unwrap().len() > 1000);
    let mut publish_ms = Vec::new();
    for swap in 1..=swaps {
        let tmp = dir.path().join("tag.wasm.tmp");
        std::fs::copy(&versions[(swap % 2) as usize], &tmp).unwrap();
        let written = Instant::now();
        std::fs::rename(&tmp, &plugin).unwrap();
        wait_for("the swap", &|| live.current().generation() == swap);
        publish_ms.push(written.elapsed().as_secs_f64() * 1e3);
        // Let every partition run on the new version for a while before the next swap.
        let want = 1 + (swap % 2);
        let since = Instant::now();
        wait_for("outputs of the new version", &|| {
            let seen = seen.lock().unwrap();
            (0..partitions).all(|p| {
                seen.iter()
                    .rev()
                    .find(|s| s.partition == p)
                    .is_some_and(|s| s.version == want)
            })
        });
        thread::sleep(Duration::from_millis(300).saturating_sub(since.elapsed()));
    }
    producing.store(false, Relaxed);
    let produced = producer.join().unwrap();
    wait_for("every output", &|| {
        seen.lock().unwrap().len() as u64 >= produced
    });
    thread::sleep(Duration::from_secs(1)); // anything more would be a duplicate
    reading.store(false, Relaxed);
    reader.join().unwrap();
    stop.store(true, Relaxed);
    let result = run.join().unwrap();
    drop(reloader);
    if let Some(port) = started {
        broker_script(port, "stop");
    }
    let snapshot = result.expect("the pipeline failed");

    let seen = seen.lock().unwrap();
    let mut ns: Vec<u64> = seen.iter().map(|s| s.n).collect();
    ns.sort_unstable();
    let exact = ns == (0..produced).collect::<Vec<_>>();

    // Per partition in offset (arrival) order: gaps at version changes, and all other gaps.
    let mut at_swap: Vec<Vec<f64>> = vec![Vec::new(); swaps as usize];
    let mut other = Vec::new();
    for p in 0..partitions {
        let outs: Vec<&Seen> = seen.iter().filter(|s| s.partition == p).collect();
        let mut changes = 0;
        for pair in outs.windows(2) {
            let gap = pair[1].at.duration_since(pair[0].at).as_secs_f64() * 1e3;
            if pair[1].version != pair[0].version {
                if let Some(gaps) = at_swap.get_mut(changes) {
                    gaps.push(gap);
                }
                changes += 1;
            } else {
                other.push(gap);
            }
        }
    }
    let mut worst: Vec<f64> = at_swap
        .iter()
        .filter(|g| !g.is_empty())
        .map(|g| g.iter().copied().fold(0.0, f64::max))
        .collect();
    println!(
        "reload bench: {produced} records at {rate}/s over {partitions} partitions, {swaps} \
         swaps; weir: {snapshot}"
    );
    println!(
        "every input exactly once in the output: {}",
        if exact { "yes" } else { "NO" }
    );
    println!(
        "longest output gap at each swap (ms): {}",
        worst
            .iter()
            .map(|g| format!("{g:.1}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("output gap at a swap:      {}", stats(&mut worst));
    println!("output gap without a swap: {}", stats(&mut other));
    println!(
        "file written to version published (off the data path): {}",
        stats(&mut publish_ms)
    );
    println!(
        "swaps {}, rejected {}, rollbacks {}",
        live.swaps(),
        live.rejected(),
        live.rollbacks()
    );
    assert!(exact, "records were lost or duplicated");
}
