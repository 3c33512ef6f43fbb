//! What weir costs end to end: `weir run` with a three-stage wasm pipeline (json-filter →
//! mask-pii → enrich) against a plain rdkafka consume→produce passthrough, both with the same
//! client settings, reading the same records from the same broker, in one run.
//!
//! ```text
//! cargo bench -p weir --bench kafka                          # 1M records
//! WEIR_BENCH_RECORDS=50000 cargo bench -p weir --bench kafka # a quick look
//! ```
//!
//! The passthrough is the most any Kafka-to-Kafka processor can do with these clients, this
//! broker and these cores: it does nothing to a record but copy it (key, value, headers,
//! timestamp). The ratio of the two steady-state rates is the share of that throughput weir keeps
//! while it also copies records into the chain, runs three wasm stages over them (JSON parsing,
//! SHA-256, re-encoding) and commits behind acknowledged output. The issue's target is 0.8.
//!
//! 1. The broker is the project's `scripts/kafka-broker.sh` (Tansu, in memory) on its own port
//!    (`KAFKA_PORT`, default 19192; stopped at the end if this run started it), or the one at
//!    `$KAFKA_BROKERS`. Topics and groups get unique names.
//! 2. N order events (~200-byte JSON as in the `chain` benchmark, keyed, one header each) are
//!    produced once into an input topic of P partitions.
//! 3. Throughput: each side reads that topic from the start in a consumer group of its own and
//!    writes every output to an output topic of its own:
//!    - raw: one thread polling a `BaseConsumer` and handing each record to a `ThreadedProducer`,
//!      offsets committed at the end;
//!    - weir: `weir::runtime::run` with the pipeline (one worker per core), stopped once it has
//!      processed N records and every output is acknowledged.
//!
//!    Start-up (client creation, group join, first fetch: until the first record is consumed) is
//!    reported apart from the steady-state rate (N / time from the first record consumed to the
//!    last output acknowledged). Both output topics are read back and counted. Where the cores
//!    go: CPU of this process (also by thread: weir's workers, its consumer thread, librdkafka's
//!    threads, delivery reports) and of the broker over each side's steady state, per record,
//!    and the CPU the three stages alone take on the same records (one thread, no Kafka). Also
//!    printed: the cores other processes took meanwhile; figures from a busy machine (say, above
//!    0.1 cores) are not comparable with a quiet one's, ratios less so than rates.
//! 4. Latency: weir runs the same pipeline on a fresh topic while records are produced at a fixed
//!    moderate rate, each with its send time as the record timestamp (weir keeps timestamps); a
//!    reader notes receive time − timestamp of every output (and, for reference, of every input:
//!    the broker's own producer→consumer hop). Millisecond resolution, as Kafka timestamps. At
//!    1k, 5k and 50k records/s with weir's defaults, then at 5k with librdkafka's own fetch wait
//!    (500 ms), which this broker holds a fetch that finds no new records for in full.
//!
//! 5. Guarantees: a one-stage keyed running total (state get and put per record, on-disk store,
//!    changelog topic) over the same input, at least once and exactly once, each steady-state
//!    rate and their ratio (the issue's target: exactly once at 0.6 of at least once or better).
//!
//! Environment: `WEIR_BENCH_RECORDS` (N, default 1000000), `WEIR_BENCH_PARTITIONS` (P, default 2),
//! `WEIR_BENCH_WORKERS` (weir's workers, default one per core), `WEIR_BENCH_STAGES` (`three`,
//! the default, or `filter-enrich`: issue 24's workload), `WEIR_BENCH_LATENCY_RATES`
//! (records/s, default `1000,5000,50000`), `WEIR_BENCH_LATENCY_SECS` (default 10),
//! `WEIR_BENCH_SCALING` (partition counts of the scaling table, default `1,3,6`),
//! `WEIR_BENCH_ONLY=throughput|scaling|latency` (that part alone), `KAFKA_BROKERS`, `KAFKA_PORT`, `WEIR_LOG`
//! (weir's log filter, default `warn`).

use std::{
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    config::ClientConfig,
    consumer::{BaseConsumer, CommitMode, Consumer},
    message::{Header, Message, OwnedHeaders},
    producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer},
    ClientContext, Offset, TopicPartitionList,
};
use serde_json::json;
use weir::{
    admin::AdminServer,
    chain::Stages,
    config::AdminConfig,
    config::Pipeline,
    engine::{Engine, Header as RecordHeader, Record},
    metrics::{Metrics, Snapshot},
    runtime::RunOptions,
};

/// The allocator the `weir` binary uses, so weir runs here as it runs there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../../tests/all/common/mod.rs"]
mod kit;
#[path = "kafka/scaling.rs"]
mod scaling;

use kit::{
    cpu_secs, env_or,
    kafka::{bench_broker, broker_pid, broker_script, unique},
    stat_cpu,
};
use weir::kafka::{CONSUMER_DEFAULTS, PRODUCER_DEFAULTS};

/// What the benchmark's pipeline adds in `[source] kafka` (the broker needs sessions of ≥ 6 s),
/// and the raw side with it.
const SOURCE_KAFKA: &[(&str, &str)] = &[("session.timeout.ms", "6000")];
/// The latency reader's longest fetch wait. This broker answers a fetch that finds no new
/// records only when the wait is over, even if records arrive meanwhile: with librdkafka's
/// default (500 ms) a reader would add up to half a second to every latency.
const READER_FETCH_WAIT_MS: &str = "10";

/// Longest a phase may take before the benchmark gives up.
const PHASE_TIMEOUT: Duration = Duration::from_secs(1800);

/// The pipeline's stages, configured as in the `chain` benchmark (the filter keeps ~75%).
const STAGES: &str = r#"
[[stage]]
name = "big-orders"
plugin = "plugins/json-filter.wasm"
config = { where = [{ path = "/amount", op = "gt", value = 50 }] }

[[stage]]
name = "mask"
plugin = "plugins/mask-pii.wasm"
config = { fields = ["/customer/email", "/card/number"], mode = "hash" }

[[stage]]
name = "enrich"
plugin = "plugins/enrich.wasm"
config = { set = { "/pipeline" = "weir" }, lookup = [{ from = "/country", into = "/region", table = { DE = "eu", FR = "eu", NL = "eu", US = "na", CA = "na" }, default = "other" }], derive = [{ into = "/amount_cents", from = "/amount", multiply = 100 }] }
"#;

/// The stages of issue 24's comparison: filter `amount > 100`, then add a field.
const FILTER_ENRICH: &str = r#"
[[stage]]
name = "big-orders"
plugin = "plugins/json-filter.wasm"
config = { where = [{ path = "/amount", op = "gt", value = 100 }] }

[[stage]]
name = "enrich"
plugin = "plugins/enrich.wasm"
config = { set = { "/pipeline" = "weir" } }
"#;

/// The pipeline the benchmark runs (`WEIR_BENCH_STAGES`): the three stages (`three`, the
/// default), or `filter-enrich`, the workload the Kafka frameworks were compared on.
struct Workload {
    stages: &'static str,
    /// Orders with an amount above this pass the filter.
    above: f64,
    /// Whether mask-pii runs (outputs then hold no e-mail address).
    masks: bool,
    what: &'static str,
    /// The same work done by the plain loop itself, where the bench has it written.
    native: Option<Work>,
}

fn workload() -> &'static Workload {
    static CHOSEN: std::sync::OnceLock<Workload> = std::sync::OnceLock::new();
    CHOSEN.get_or_init(|| match std::env::var("WEIR_BENCH_STAGES").as_deref() {
        Ok("filter-enrich") => Workload {
            stages: FILTER_ENRICH,
            above: 100.0,
            masks: false,
            what: "json-filter (amount > 100) -> enrich (one field set)",
            native: Some(filter_enrich_natively),
        },
        Ok("three") | Err(_) => Workload {
            stages: STAGES,
            above: 50.0,
            masks: true,
            what: "json-filter (amount > 50) -> mask-pii (sha256) -> enrich",
            native: None,
        },
        Ok(other) => panic!("WEIR_BENCH_STAGES={other}: `three` or `filter-enrich`"),
    })
}

/// What the filter stage keeps: the orders `i` with an amount above the workload's.
fn passes(i: usize) -> bool {
    ((i * 37) % 20000) as f64 / 100.0 > workload().above
}

/// Order event `i` as in the `chain` benchmark, with its key (the customer).
fn order(i: usize) -> (String, Vec<u8>) {
    let countries = ["DE", "FR", "US", "NL", "BR", "CA", "JP"];
    let value = json!({
        "id": i,
        "customer": {"email": format!("user{}@example.com", i % 9973), "tier": "gold"},
        "card": {"number": format!("4111-1111-{:04}-{:04}", i % 10000, (i * 7) % 10000)},
        "amount": ((i * 37) % 20000) as f64 / 100.0,
        "currency": "EUR",
        "country": countries[i % countries.len()],
        "items": i % 5 + 1,
        "ts": 1_700_000_000_000u64 + i as u64,
    })
    .to_string()
    .into_bytes();
    (format!("customer-{}", i % 9973), value)
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// CPU seconds of this process, of its threads by role, and of the broker at one moment.
#[derive(Clone)]
struct Cpu {
    own: f64,
    threads: Vec<(&'static str, f64)>,
    broker: Option<f64>,
    /// CPU seconds every process on the machine has used since boot.
    machine: f64,
}

/// Busy CPU seconds of the whole machine since boot (`/proc/stat`: all but idle and iowait).
fn machine_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|t| t.parse().ok())
        .collect();
    if ticks.len() < 5 {
        return f64::NAN;
    }
    (ticks.iter().sum::<u64>() - ticks[3] - ticks[4]) as f64 / 100.0
}

/// What a thread of this process does, by its name.
fn role(name: &str) -> &'static str {
    match name {
        n if n.starts_with("weir-worker") => "workers (chain, sink.send)",
        "weir-run" => "weir's consumer thread",
        n if n.starts_with("rdk:") => "librdkafka threads",
        // `ThreadedProducer`'s thread ("producer polling thread", cut to 15 characters).
        n if n.starts_with("producer poll") => "delivery reports",
        n if n.starts_with("weir-") => "other weir threads",
        _ => "bench main thread",
    }
}

/// CPU seconds of this process's threads, summed by [`role`].
fn threads_cpu() -> Vec<(&'static str, f64)> {
    let mut by_role: Vec<(&'static str, f64)> = Vec::new();
    let tasks = std::fs::read_dir("/proc/self/task").into_iter().flatten();
    for (name, secs) in tasks
        .flatten()
        .filter_map(|t| stat_cpu(t.path().join("stat")))
    {
        let role = role(&name);
        match by_role.iter_mut().find(|(r, _)| *r == role) {
            Some(entry) => entry.1 += secs,
            None => by_role.push((role, secs)),
        }
    }
    by_role
}

/// The broker, and whether this run started it: then it stops it at the end, else it deletes
/// the topics it created (the broker keeps everything in memory).
struct Broker {
    brokers: String,
    /// Port and pid of the broker this run manages.
    port: Option<u16>,
    pid: Option<u32>,
    started_here: bool,
    topics: Mutex<Vec<String>>,
}

impl Broker {
    fn start() -> Broker {
        let (kafka, started) = bench_broker(19192);
        let port = (kafka.port != 0).then_some(kafka.port);
        Broker {
            brokers: kafka.brokers,
            port,
            pid: port.and_then(broker_pid),
            started_here: started.is_some(),
            topics: Mutex::default(),
        }
    }

    fn cpu(&self) -> Cpu {
        Cpu {
            own: cpu_secs(None).unwrap_or(f64::NAN),
            threads: threads_cpu(),
            broker: self.pid.and_then(|p| cpu_secs(Some(p))),
            machine: machine_cpu_secs(),
        }
    }

    fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        c
    }

    fn admin<T>(
        &self,
        call: impl AsyncFnOnce(&AdminClient<DefaultClientContext>, &AdminOptions) -> T,
    ) -> T {
        let admin: AdminClient<DefaultClientContext> = self.config().create().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(call(&admin, &AdminOptions::new()))
    }

    fn create_topic(&self, name: &str, partitions: i32) {
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let results = self
            .admin(async |admin, options| admin.create_topics(&[topic], options).await)
            .expect("create topic");
        for r in results {
            r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
        }
        self.topics.lock().unwrap().push(name.to_string());
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        match (self.started_here, self.port) {
            (true, Some(port)) => {
                broker_script(port, "stop");
            }
            _ => {
                let topics = std::mem::take(&mut *self.topics.lock().unwrap());
                let names: Vec<&str> = topics.iter().map(String::as_str).collect();
                if let Err(e) =
                    self.admin(async |admin, options| admin.delete_topics(&names, options).await)
                {
                    eprintln!("deleting the benchmark's topics: {e}");
                }
            }
        }
    }
}

/// Delivery reports, counted.
#[derive(Default)]
struct Acked {
    ok: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for Acked {}

impl ProducerContext for Acked {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.ok.fetch_add(1, Relaxed),
            Err((e, _)) => {
                if self.failed.fetch_add(1, Relaxed) == 0 {
                    eprintln!("delivery failed: {e}");
                }
                0
            }
        };
    }
}

/// Send `record`, waiting while the producer's queue is full (as weir's sink does).
fn send(producer: &ThreadedProducer<Acked>, mut record: BaseRecord<'_, [u8], [u8]>) {
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                back,
            )) => {
                record = back;
                thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => panic!("producing failed: {e}"),
        }
    }
}

/// Produce orders `0..n` to `topic`, keyed, with one header each; the time it took.
fn load(broker: &Broker, topic: &str, n: usize) -> Duration {
    let producer: ThreadedProducer<Acked> = broker
        .config()
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "500000")
        .create_with_context(Acked::default())
        .unwrap();
    let started = Instant::now();
    for i in 0..n {
        let (key, value) = order(i);
        let trace = format!("t{i}");
        let headers = OwnedHeaders::new_with_capacity(1).insert(Header {
            key: "trace",
            value: Some(trace.as_bytes()),
        });
        let record = BaseRecord::to(topic)
            .key(key.as_bytes())
            .payload(value.as_slice())
            .headers(headers);
        send(&producer, record);
    }
    producer.flush(Duration::from_secs(600)).expect("flush");
    let acked = producer.context().ok.load(Relaxed);
    assert_eq!(acked, n as u64, "not every input record was acknowledged");
    started.elapsed()
}

/// One side's run over the input topic.
struct Side {
    /// From creating the clients to the first record consumed.
    startup: Duration,
    /// From the first record consumed to the last output acknowledged.
    steady: Duration,
    /// Records consumed and outputs acknowledged.
    consumed: u64,
    delivered: u64,
    /// Committing and closing (raw), draining, committing and leaving (weir).
    shutdown: Duration,
    /// CPU over the steady state.
    cpu: (Cpu, Cpu),
}

/// The passthrough: every record of `input` copied to `output` by one thread.
/// What a plain loop does to a record's value when it does the pipeline's work itself: `None`
/// drops the record.
type Work = fn(&[u8]) -> Option<Vec<u8>>;

/// Issue 24's workload written as a Rust user would write it without weir: parse the value,
/// keep it when `amount > 100`, set `/pipeline`, serialise (serde_json, as the plugins use).
fn filter_enrich_natively(value: &[u8]) -> Option<Vec<u8>> {
    let mut order: serde_json::Value = serde_json::from_slice(value).ok()?;
    if order.get("amount")?.as_f64()? <= 100.0 {
        return None;
    }
    order
        .as_object_mut()?
        .insert("pipeline".into(), serde_json::Value::from("weir"));
    serde_json::to_vec(&order).ok()
}

/// The plain loop: every record copied from `input` to `output` (`work` None: the passthrough),
/// or what `work` makes of it.
fn raw(broker: &Broker, input: &str, output: &str, n: u64, work: Option<Work>) -> Side {
    let started = Instant::now();
    let mut config = broker.config();
    config.set("group.id", unique("raw-group"));
    for (k, v) in CONSUMER_DEFAULTS.iter().chain(SOURCE_KAFKA) {
        config.set(*k, *v);
    }
    let consumer: BaseConsumer = config.create().unwrap();
    let mut config = broker.config();
    for (k, v) in PRODUCER_DEFAULTS {
        config.set(*k, *v);
    }
    let producer: ThreadedProducer<Acked> = config.create_with_context(Acked::default()).unwrap();
    consumer.subscribe(&[input]).unwrap();

    let mut first: Option<(Instant, Cpu)> = None;
    let mut consumed = 0u64;
    let mut next: Vec<(i32, i64)> = Vec::new();
    while consumed < n {
        assert!(started.elapsed() < PHASE_TIMEOUT, "raw: timed out");
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = message.unwrap_or_else(|e| panic!("raw: consuming failed: {e}"));
        if first.is_none() {
            first = Some((Instant::now(), broker.cpu()));
        }
        consumed += 1;
        match next.iter_mut().find(|(p, _)| *p == m.partition()) {
            Some(entry) => entry.1 = m.offset() + 1,
            None => next.push((m.partition(), m.offset() + 1)),
        }
        let worked = work.map(|work| m.payload().and_then(work));
        let payload = match &worked {
            Some(None) => continue, // the work dropped it
            Some(Some(value)) => Some(value.as_slice()),
            None => m.payload(),
        };
        let mut record = BaseRecord::to(output);
        if let Some(key) = m.key() {
            record = record.key(key);
        }
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        if let Some(headers) = m.headers() {
            record = record.headers(headers.detach());
        }
        if let Some(ts) = m.timestamp().to_millis() {
            record = record.timestamp(ts);
        }
        send(&producer, record);
    }
    producer.flush(Duration::from_secs(600)).expect("flush");
    let (first, cpu0) = first.expect("consumed at least one record");
    let done = Instant::now();
    let cpu1 = broker.cpu();
    let mut list = TopicPartitionList::new();
    for (p, offset) in next {
        list.add_partition_offset(input, p, Offset::Offset(offset))
            .unwrap();
    }
    consumer.commit(&list, CommitMode::Sync).expect("commit");
    let acked = producer.context();
    assert_eq!(acked.failed.load(Relaxed), 0, "raw: deliveries failed");
    let delivered = acked.ok.load(Relaxed);
    drop(consumer);
    drop(producer);
    Side {
        startup: first - started,
        steady: done - first,
        consumed,
        delivered,
        shutdown: done.elapsed(),
        cpu: (cpu0, cpu1),
    }
}

/// The benchmark's pipeline from `input` to `output`, with `extra` consumer properties.
fn pipeline(
    broker: &Broker,
    input: &str,
    output: &str,
    group: &str,
    extra: &[(&str, &str)],
) -> Pipeline {
    let text = pipeline_text(broker, input, output, group, extra);
    // Plugin paths resolve against the (notional) file's directory: the repository root.
    Pipeline::parse(&kit::root().join("kafka-bench.toml"), &text)
        .unwrap_or_else(|e| panic!("the benchmark's pipeline: {e}"))
}

/// The TOML of [`pipeline`], its plugin paths relative to the repository root.
fn pipeline_text(
    broker: &Broker,
    input: &str,
    output: &str,
    group: &str,
    extra: &[(&str, &str)],
) -> String {
    let kafka: Vec<String> = SOURCE_KAFKA
        .iter()
        .chain(extra)
        .map(|(k, v)| format!("\"{k}\" = \"{v}\""))
        .collect();
    format!(
        "[source]\nbrokers = \"{}\"\ntopics = [\"{input}\"]\ngroup = \"{group}\"\nkafka = {{ {} }}\n\n\
         [sink]\ntopic = \"{output}\"\n{}",
        broker.brokers,
        kafka.join(", "),
        workload().stages,
    )
}

/// A one-stage running-total pipeline from `input` to `output` under `guarantee`, keeping its
/// state under `dir`.
fn state_pipeline(
    broker: &Broker,
    input: &str,
    output: &str,
    guarantee: &str,
    dir: &Path,
) -> Pipeline {
    let kafka: Vec<String> = SOURCE_KAFKA
        .iter()
        .map(|(k, v)| format!("\"{k}\" = \"{v}\""))
        .collect();
    let text = format!(
        "[source]\nbrokers = \"{}\"\ntopics = [\"{input}\"]\ngroup = \"{}\"\nkafka = {{ {} }}\n\n\
         [sink]\ntopic = \"{output}\"\n\n[delivery]\nguarantee = \"{guarantee}\"\n\n[state]\ndir = \"{}\"\n\n\
         [[stage]]\nname = \"totals\"\nplugin = \"plugins/running-total.wasm\"\nconfig = {{ field = \"/amount\" }}\n",
        broker.brokers,
        unique(&format!("{guarantee}-group")),
        kafka.join(", "),
        dir.display(),
    );
    Pipeline::parse(&kit::root().join("kafka-bench.toml"), &text)
        .unwrap_or_else(|e| panic!("the state pipeline: {e}"))
}

/// `weir::runtime::run` on its own thread, with `watch` called on the caller's thread every
/// millisecond with the counts until it returns true; then stopped. Returns what `watch`'s
/// last call saw, the final counts and the time from setting stop to `run` returning.
fn with_weir(
    pipeline: &Pipeline,
    stages: &Stages,
    workers: usize,
    metrics: Arc<Metrics>,
    mut watch: impl FnMut(Snapshot) -> bool,
) -> (Snapshot, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let options = RunOptions {
        workers,
        stop: stop.clone(),
        metrics: metrics.clone(),
        report_every: None,
        ..RunOptions::default()
    };
    thread::scope(|s| {
        let handle = thread::Builder::new()
            .name("weir-run".into())
            .spawn_scoped(s, || weir::runtime::run(pipeline, stages, options))
            .unwrap();
        // Should `watch` panic, weir must still stop, or the scope would wait for it forever.
        let _stop = SetOnDrop(&stop);
        loop {
            if handle.is_finished() {
                let result = handle.join().expect("weir::runtime::run panicked");
                panic!("weir stopped by itself: {result:?}");
            }
            if watch(metrics.snapshot()) {
                break;
            }
            thread::sleep(Duration::from_millis(1));
        }
        let stopping = Instant::now();
        stop.store(true, Relaxed);
        let counts = handle
            .join()
            .expect("weir::runtime::run panicked")
            .unwrap_or_else(|e| panic!("weir run failed: {e}"));
        (counts, stopping.elapsed())
    })
}

/// Sets its flag when dropped, also while unwinding.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Relaxed);
    }
}

/// weir over the input topic, stopped once it has processed `n` records and every output was
/// acknowledged.
fn weir(
    broker: &Broker,
    pipeline: &Pipeline,
    stages: &Stages,
    workers: usize,
    n: u64,
    metrics: Arc<Metrics>,
) -> Side {
    let started = Instant::now();
    let mut first: Option<(Instant, Cpu)> = None;
    let mut done: Option<(Instant, Cpu)> = None;
    let (counts, shutdown) = with_weir(pipeline, stages, workers, metrics, |now| {
        assert!(
            started.elapsed() < PHASE_TIMEOUT,
            "weir: timed out at {now}"
        );
        if first.is_none() && now.consumed > 0 {
            first = Some((Instant::now(), broker.cpu()));
        }
        if now.processed >= n && now.delivered == now.produced {
            done = Some((Instant::now(), broker.cpu()));
        }
        done.is_some()
    });
    let ((first, cpu0), (done, cpu1)) = (first.unwrap(), done.unwrap());
    Side {
        startup: first - started,
        steady: done - first,
        consumed: counts.consumed,
        delivered: counts.delivered,
        shutdown,
        cpu: (cpu0, cpu1),
    }
}

/// CPU µs per input record of the chain alone: the same stages over orders `0..n` as weir's
/// workers get them (batches of 512 records with key, header and coordinates), on this thread,
/// without Kafka.
fn chain_alone(stages: &Stages, n: usize) -> f64 {
    let mut chain = stages.start().unwrap();
    let batches: Vec<Vec<Record>> = (0..n)
        .collect::<Vec<usize>>()
        .chunks(512)
        .map(|chunk| {
            chunk
                .iter()
                .map(|&i| {
                    let (key, value) = order(i);
                    Record {
                        key: Some(key.into_bytes()),
                        value: Some(value),
                        headers: vec![RecordHeader {
                            key: "trace".into(),
                            value: format!("t{i}").into_bytes(),
                        }],
                        timestamp: 1_700_000_000_000,
                        topic: "orders".into(),
                        partition: (i % 2) as i32,
                        offset: i as i64,
                    }
                })
                .collect()
        })
        .collect();
    let thread_cpu = || stat_cpu("/proc/thread-self/stat").map_or(f64::NAN, |(_, secs)| secs);
    let before = thread_cpu();
    let mut outputs = 0;
    for batch in batches {
        let out = chain.process(batch);
        assert!(out.failures.is_empty(), "the chain failed on a record");
        outputs += out.records.len();
    }
    let cpu = thread_cpu() - before;
    assert_eq!(outputs, (0..n).filter(|&i| passes(i)).count());
    cpu * 1e6 / n as f64
}

/// Read every partition of `topic` from the start until `expected` records arrived and nothing
/// more came for a second; the number of records and of those whose value `check` accepts.
fn count(broker: &Broker, topic: &str, expected: u64, check: impl Fn(&[u8]) -> bool) -> (u64, u64) {
    let consumer: BaseConsumer = broker
        .config()
        .set("group.id", unique("count"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    assign_all(&consumer, &[topic]);
    let started = Instant::now();
    let mut last = Instant::now();
    let (mut n, mut ok) = (0u64, 0u64);
    while started.elapsed() < PHASE_TIMEOUT {
        if n >= expected && last.elapsed() > Duration::from_secs(1) {
            break;
        }
        if n < expected && last.elapsed() > Duration::from_secs(60) {
            break; // nothing more is coming
        }
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.unwrap_or_else(|e| panic!("reading {topic}: {e}"));
            last = Instant::now();
            n += 1;
            if check(m.payload().unwrap_or_default()) {
                ok += 1;
            }
        }
    }
    (n, ok)
}

/// Assign every partition of `topics` from its beginning (no group join).
fn assign_all(consumer: &BaseConsumer, topics: &[&str]) {
    let mut list = TopicPartitionList::new();
    for topic in topics {
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        for p in md.topics()[0].partitions() {
            list.add_partition_offset(topic, p.id(), Offset::Beginning)
                .unwrap();
        }
    }
    consumer.assign(&list).unwrap();
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Percentiles of a phase's latencies, in milliseconds.
struct Percentiles {
    count: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

fn percentiles(mut ms: Vec<f64>) -> Percentiles {
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| {
        let i = ((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len().max(1)) - 1;
        ms.get(i).copied().unwrap_or(f64::NAN)
    };
    Percentiles {
        count: ms.len(),
        p50: at(0.50),
        p99: at(0.99),
        max: ms.last().copied().unwrap_or(f64::NAN),
    }
}

/// What the latency phase measured.
struct Latency {
    sent: usize,
    send_rate: f64,
    expected: usize,
    warm_up: Duration,
    input: Percentiles,
    output: Percentiles,
}

/// Latency with weir's defaults at each of `rates` (records/s), each beside the broker's own
/// producer -> consumer hop measured in the same run; then, for reference, at the middle rate
/// with librdkafka's own fetch wait (500 ms), weir's default before it set one.
fn latencies(
    broker: &Broker,
    stages: &Stages,
    workers: usize,
    partitions: i32,
    rates: &[f64],
    secs: f64,
    wrong: &mut Vec<String>,
) {
    println!();
    println!(
        "latency: records at a fixed rate for {secs} s into a fresh topic, record timestamp = send time (load producer linger.ms=5), \
         read back by a reader with fetch.wait.max.ms={READER_FETCH_WAIT_MS}"
    );
    let old_default = [("fetch.wait.max.ms", "500")];
    let middle = rates[rates.len() / 2];
    let runs = rates
        .iter()
        .map(|&r| (r, "weir's defaults", &[][..]))
        .chain([(
            middle,
            "fetch.wait.max.ms=500 (librdkafka's, weir's before)",
            &old_default[..],
        )]);
    for (rate, label, extra) in runs {
        let lat = latency(broker, stages, workers, partitions, rate, secs, extra);
        println!(
            "  {rate:>6.0} records/s, {label}: {} records sent ({:.0}/s achieved); first record through the fresh weir after {:.2} s",
            lat.sent,
            lat.send_rate,
            lat.warm_up.as_secs_f64()
        );
        for (hop, p) in [
            ("input  (producer -> broker -> reader)", &lat.input),
            (
                "output (... -> broker -> weir -> broker -> reader)",
                &lat.output,
            ),
        ] {
            println!(
                "    {hop:<51} {:>7} records   p50 {:>6.1} ms   p99 {:>6.1} ms   max {:>6.1} ms",
                p.count, p.p50, p.p99, p.max
            );
        }
        if lat.output.count != lat.expected || lat.input.count != lat.sent {
            wrong.push(format!(
                "latency ({rate} records/s, {label}): read {} inputs of {} and {} outputs of {}",
                lat.input.count, lat.sent, lat.output.count, lat.expected
            ));
        }
    }
}

/// weir on a fresh topic fed at `rate` records/s for `secs` seconds; latencies of every input
/// and output as a reader sees them.
fn latency(
    broker: &Broker,
    stages: &Stages,
    workers: usize,
    partitions: i32,
    rate: f64,
    secs: f64,
    extra: &[(&str, &str)],
) -> Latency {
    let (input, output) = (unique("latency-in"), unique("latency-out"));
    broker.create_topic(&input, partitions);
    broker.create_topic(&output, partitions);
    let pipeline = pipeline(broker, &input, &output, &unique("latency-group"), extra);
    let total = (rate * secs).round() as usize;
    let expected = (0..total).filter(|&i| passes(i)).count();
    let orders: Vec<(String, Vec<u8>)> = (0..total).map(order).collect();

    // The load producer lingers as weir's sink does (and librdkafka by default): this broker
    // hands out few record batches per fetch, so single-record batches would starve readers.
    let producer: ThreadedProducer<Acked> = broker
        .config()
        .set("linger.ms", "5")
        .create_with_context(Acked::default())
        .unwrap();
    // (topic is output, timestamp ms, receive time µs) of every record the reader sees.
    let seen: Mutex<Vec<(bool, i64, i64)>> = Mutex::new(Vec::with_capacity(2 * total + 2));
    let outputs = AtomicU64::new(0);
    let done = AtomicBool::new(false);

    let mut result = None;
    with_weir(&pipeline, stages, workers, Arc::default(), |_| {
        let sent_at = Instant::now();
        thread::scope(|s| {
            s.spawn(|| {
                let reader: BaseConsumer = broker
                    .config()
                    .set("group.id", unique("latency-reader"))
                    .set("fetch.wait.max.ms", READER_FETCH_WAIT_MS)
                    .set("enable.auto.commit", "false")
                    .create()
                    .unwrap();
                assign_all(&reader, &[&input, &output]);
                while !done.load(Relaxed) {
                    if let Some(m) = reader.poll(Duration::from_millis(50)) {
                        let m = m.unwrap_or_else(|e| panic!("latency reader: {e}"));
                        let received = now_micros();
                        let is_output = m.topic() == output;
                        let ts = m.timestamp().to_millis().unwrap_or(0);
                        seen.lock().unwrap().push((is_output, ts, received));
                        if is_output {
                            outputs.fetch_add(1, Relaxed);
                        }
                    }
                }
            });
            let _done = SetOnDrop(&done);
            let wait_outputs = |want: u64, timeout: Duration| {
                let started = Instant::now();
                while outputs.load(Relaxed) < want && started.elapsed() < timeout {
                    thread::sleep(Duration::from_millis(5));
                }
            };
            // Warm-up: one record through, so weir has joined its group and the reader reads.
            let warm = (0..).find(|&i| passes(i)).unwrap();
            let (key, value) = order(warm);
            send(
                &producer,
                BaseRecord::to(&input)
                    .key(key.as_bytes())
                    .payload(value.as_slice()),
            );
            wait_outputs(1, Duration::from_secs(120));
            assert_eq!(
                outputs.load(Relaxed),
                1,
                "the warm-up record did not come through"
            );
            let warm_up = sent_at.elapsed();

            let start = Instant::now();
            let mut first_ts = None;
            let period = Duration::from_secs_f64(1.0 / rate);
            for (i, (key, value)) in orders.iter().enumerate() {
                let due = start + period * i as u32;
                let now = Instant::now();
                if due > now {
                    thread::sleep(due - now);
                }
                let ts = now_micros() / 1000;
                first_ts.get_or_insert(ts);
                let record = BaseRecord::to(&input)
                    .key(key.as_bytes())
                    .payload(value.as_slice())
                    .timestamp(ts);
                send(&producer, record);
            }
            let send_rate = total as f64 / start.elapsed().as_secs_f64();
            producer.flush(Duration::from_secs(60)).expect("flush");
            wait_outputs(1 + expected as u64, Duration::from_secs(60));
            thread::sleep(Duration::from_millis(500)); // the reader's last inputs and stray extras
            done.store(true, Relaxed);

            let seen = std::mem::take(&mut *seen.lock().unwrap());
            // The warm-up record went out before the first timed one and is left out.
            let first_ts = first_ts.unwrap_or(0);
            let ms = |want_output: bool| {
                seen.iter()
                    .filter(|(is_output, ts, _)| *is_output == want_output && *ts >= first_ts)
                    .map(|(_, ts, received)| (received - ts * 1000) as f64 / 1000.0)
                    .collect::<Vec<f64>>()
            };
            result = Some(Latency {
                sent: total,
                send_rate,
                expected,
                warm_up,
                input: percentiles(ms(false)),
                output: percentiles(ms(true)),
            });
        });
        true
    });
    result.unwrap()
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let n: usize = env_or("WEIR_BENCH_RECORDS", 1_000_000);
    let partitions: i32 = env_or("WEIR_BENCH_PARTITIONS", 2);
    let workers: usize = env_or(
        "WEIR_BENCH_WORKERS",
        thread::available_parallelism().map_or(2, |c| c.get()),
    );
    let latency_rates: Vec<f64> = std::env::var("WEIR_BENCH_LATENCY_RATES")
        .unwrap_or_else(|_| "1000,5000,50000".into())
        .split(',')
        .map(|r| {
            r.trim()
                .parse()
                .expect("WEIR_BENCH_LATENCY_RATES: records/s, comma-separated")
        })
        .collect();
    let secs: f64 = env_or("WEIR_BENCH_LATENCY_SECS", 10.0);
    let scaling_partitions: Vec<i32> = std::env::var("WEIR_BENCH_SCALING")
        .unwrap_or_else(|_| "1,3,6".into())
        .split(',')
        .map(|p| {
            p.trim()
                .parse()
                .expect("WEIR_BENCH_SCALING: partition counts, comma-separated")
        })
        .collect();
    assert!(n > 0 && partitions > 0 && workers > 0 && !latency_rates.is_empty());

    let broker = Broker::start();
    let expected = (0..n).filter(|&i| passes(i)).count() as u64;
    let avg = (0..1000.min(n)).map(|i| order(i).1.len()).sum::<usize>() / 1000.min(n);
    println!(
        "kafka: {n} order events of ~{avg} bytes (key, 1 header) over {partitions} partitions; broker {}{}; {} cores",
        broker.brokers,
        match (broker.port, broker.started_here) {
            (Some(_), true) => " (Tansu, started by this run)",
            (Some(_), false) => " (Tansu, already running)",
            (None, _) => " ($KAFKA_BROKERS)",
        },
        thread::available_parallelism().map_or(0, |c| c.get()),
    );
    println!(
        "pipeline: {} (keeps {expected}); {workers} weir workers, batches of 512",
        workload().what
    );

    let load_started = Instant::now();
    let engine = Engine::new(Engine::default_cache_dir()).unwrap();
    // The last two sections of a full run, which `WEIR_BENCH_ONLY` can also run alone.
    let scale = |wrong: &mut Vec<String>| {
        scaling::scaling(&broker, &engine, workers, n, &scaling_partitions, wrong)
    };
    let latency = |stages: &Stages, wrong: &mut Vec<String>| {
        latencies(
            &broker,
            stages,
            workers,
            partitions,
            &latency_rates,
            secs,
            wrong,
        )
    };
    let only = std::env::var("WEIR_BENCH_ONLY").ok();
    if let Some(section @ ("scaling" | "latency")) = only.as_deref() {
        let mut wrong = Vec::new();
        if section == "scaling" {
            scale(&mut wrong);
        } else {
            let p = pipeline(
                &broker,
                &unique("in"),
                &unique("out"),
                &unique("group"),
                &[],
            );
            latency(&Stages::load(&engine, &p).unwrap(), &mut wrong);
        }
        assert!(wrong.is_empty(), "wrong counts:\n  {}", wrong.join("\n  "));
        return;
    }
    let input = unique("in");
    let (raw_out, native_out, weir_out) =
        (unique("raw-out"), unique("native-out"), unique("weir-out"));
    for topic in [&input, &raw_out, &native_out, &weir_out] {
        broker.create_topic(topic, partitions);
    }
    let weir_pipeline = pipeline(&broker, &input, &weir_out, &unique("weir-group"), &[]);
    let stages = Stages::load(&engine, &weir_pipeline)
        .unwrap_or_else(|e| panic!("{e} (run scripts/build-plugins.sh first)"));
    println!(
        "wasm: components loaded in {:.0} ms (component cache: {})",
        load_started.elapsed().as_secs_f64() * 1e3,
        Engine::default_cache_dir().map_or("none".into(), |d| d.display().to_string())
    );

    let took = load(&broker, &input, n);
    println!(
        "input: {n} records produced in {:.1} s ({:.0} records/s)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );

    let native = workload()
        .native
        .map(|work| raw(&broker, &input, &native_out, n as u64, Some(work)));
    let raw = raw(&broker, &input, &raw_out, n as u64, None);
    // The full metrics, served by the admin server and scraped every second, as in production.
    // The high-water mark starts again here (Linux: `clear_refs` 5), so it is weir's run's.
    let rss_before = memory_mib("VmRSS:");
    let hwm_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let (weir, scrapes) =
        with_admin(|metrics| weir(&broker, &weir_pipeline, &stages, workers, n as u64, metrics));
    let weir_peak = memory_mib("VmHWM:");

    let mut wrong = Vec::new();
    let verify = Instant::now();
    let (raw_read, _) = count(&broker, &raw_out, n as u64, |_| true);
    let native_read = native.as_ref().map(|_| {
        count(&broker, &native_out, expected, |v| {
            contains(v, br#""pipeline":"weir""#)
        })
    });
    let (weir_read, weir_ok) = count(&broker, &weir_out, expected, |v| {
        contains(v, br#""pipeline":"weir""#) && !(workload().masks && contains(v, b"@example.com"))
    });
    let verify = verify.elapsed();

    let rate_of = |s: &Side| n as f64 / s.steady.as_secs_f64();
    println!();
    println!(
        "{:<5} {:>9} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>15}",
        "side",
        "start-up",
        "steady",
        "records/s",
        "consumed",
        "outputs",
        "read back",
        "shutdown",
        "CPU µs/record"
    );
    let mut sides = vec![("raw", &raw, raw_read)];
    if let (Some(side), Some((read, _))) = (&native, native_read) {
        sides.push(("plain", side, read));
    }
    sides.push(("weir", &weir, weir_read));
    for &(name, side, read) in &sides {
        let (c0, c1) = &side.cpu;
        let per = |a: f64, b: f64| (b - a) * 1e6 / n as f64;
        let broker_cpu = match (c0.broker, c1.broker) {
            (Some(a), Some(b)) => format!("{:.1}", per(a, b)),
            _ => "-".into(),
        };
        println!(
            "{name:<5} {:>7.2} s {:>7.2} s {:>10.0} {:>9} {:>9} {:>9} {:>7.2} s {:>6.1} + {broker_cpu:>4}",
            side.startup.as_secs_f64(),
            side.steady.as_secs_f64(),
            rate_of(side),
            side.consumed,
            side.delivered,
            read,
            side.shutdown.as_secs_f64(),
            per(c0.own, c1.own),
        );
    }
    let ratio = rate_of(&weir) / rate_of(&raw);
    println!(
        "ratio weir/raw (steady state): {ratio:.2} (target >= 0.80: {})",
        if ratio >= 0.8 { "met" } else { "NOT met" }
    );
    for &(name, side, _) in &sides {
        let (c0, c1) = &side.cpu;
        let parts: Vec<String> = c1
            .threads
            .iter()
            .map(|&(role, secs)| {
                let before = c0
                    .threads
                    .iter()
                    .find(|(r, _)| *r == role)
                    .map_or(0.0, |t| t.1);
                (role, (secs - before) * 1e6 / n as f64)
            })
            .filter(|&(_, per)| per >= 0.05)
            .map(|(role, per)| format!("{role} {per:.1}"))
            .collect();
        // Whatever else ran meanwhile took cores from both the broker and the side measured.
        let others = (c1.machine - c0.machine)
            - (c1.own - c0.own)
            - c1.broker.zip(c0.broker).map_or(0.0, |(b1, b0)| b1 - b0);
        println!(
            "  {name:<4} CPU µs/record by thread: {}; other processes meanwhile: {:.2} cores",
            parts.join(", "),
            (others / side.steady.as_secs_f64()).max(0.0)
        );
    }
    let plugins = chain_alone(&stages, n.min(100_000));
    println!(
        "  the stages alone (same records in batches of 512, one thread, no Kafka): {plugins:.1} CPU µs/record"
    );
    let (weir_cpu, raw_cpu) = (side_cpu(&weir, n), side_cpu(&raw, n));
    println!(
        "  weir CPU µs/record {weir_cpu:.1}: the plugins' part {plugins:.1} (the stages alone), the host's part {:.1} \
         (the rest: consumer, Kafka clients, chain, sink); the passthrough {raw_cpu:.1}: weir {:.2}x of it",
        weir_cpu - plugins,
        weir_cpu / raw_cpu,
    );
    if let Some(native) = &native {
        let native_cpu = side_cpu(native, n);
        println!(
            "  the plain loop doing the same work (serde_json in Rust, no wasm) {native_cpu:.1} CPU µs/record: \
             weir {:.2}x of it (target <= 1.30: {})",
            weir_cpu / native_cpu,
            if weir_cpu / native_cpu <= 1.3 { "met" } else { "NOT met" }
        );
    }
    println!(
        "  peak memory of weir's run (this process's RSS high-water mark{}): {weir_peak:.0} MiB, from {rss_before:.0} MiB before it",
        if hwm_reset { ", reset before it" } else { " since the bench started: clear_refs refused" }
    );
    println!(
        "start-up: clients, group join, first fetch; steady: first record consumed to last output acknowledged;\n\
         CPU: this process + the broker over the steady state, per input record (1/100 s ticks); outputs read back in {:.1} s",
        verify.as_secs_f64()
    );

    if raw.consumed != n as u64 || raw.delivered != n as u64 || raw_read != n as u64 {
        wrong.push(format!(
            "raw: consumed {}, delivered {}, read back {raw_read}; expected {n}",
            raw.consumed, raw.delivered
        ));
    }
    if let (Some(side), Some((read, ok))) = (&native, native_read) {
        if side.delivered != expected || read != expected || ok != expected {
            wrong.push(format!(
                "plain loop with the work: delivered {}, read back {read} ({ok} enriched); expected {expected}",
                side.delivered
            ));
        }
    }
    if weir.delivered != expected || weir_read != expected || weir_ok != expected {
        wrong.push(format!(
            "weir: delivered {}, read back {weir_read} ({weir_ok} masked and enriched); expected {expected}",
            weir.delivered
        ));
    }
    if weir.consumed < n as u64 {
        wrong.push(format!("weir: consumed {} of {n}", weir.consumed));
    }
    if only.as_deref() == Some("throughput") {
        assert!(wrong.is_empty(), "wrong counts:\n  {}", wrong.join("\n  "));
        return;
    }

    metrics_cost(
        &broker, &input, &stages, workers, n, partitions, &weir, scrapes,
    );

    // Exactly once against at least once: a keyed running total (state get + put per record)
    // over the same input, each with its own group, output and state directory.
    println!();
    println!("guarantees: running-total (per-key count and sum: one state get and put per record), state on disk, changelog per stage");
    let mut rates = Vec::new();
    for guarantee in ["at-least-once", "exactly-once"] {
        let dir = tempfile::tempdir().unwrap();
        let out = unique(&format!("{guarantee}-out"));
        broker.create_topic(&out, partitions);
        let p = state_pipeline(&broker, &input, &out, guarantee, dir.path());
        let stages = Stages::load(&engine, &p).unwrap();
        let side = crate::weir(&broker, &p, &stages, workers, n as u64, Arc::default());
        let (read, _) = count(&broker, &out, n as u64, |_| true);
        let rate = n as f64 / side.steady.as_secs_f64();
        println!(
            "  {guarantee:<14} start-up {:>5.2} s, steady {:>6.2} s: {rate:>7.0} records/s; {} outputs acknowledged, {read} read back, shutdown {:.2} s",
            side.startup.as_secs_f64(),
            side.steady.as_secs_f64(),
            side.delivered,
            side.shutdown.as_secs_f64()
        );
        if read < n as u64 {
            wrong.push(format!("{guarantee}: read back {read} of {n}"));
        }
        rates.push(rate);
    }
    let ratio = rates[1] / rates[0];
    println!(
        "  ratio exactly-once/at-least-once: {ratio:.2} (target >= 0.60: {})",
        if ratio >= 0.6 { "met" } else { "NOT met" }
    );

    scale(&mut wrong);
    latency(&stages, &mut wrong);

    drop(broker);
    assert!(wrong.is_empty(), "wrong counts:\n  {}", wrong.join("\n  "));
}

/// What the metrics cost: runs with full metrics and an admin server scraped every second ("on",
/// the main run being the first) alternate with runs keeping the totals only ("off"), as many of
/// each as `WEIR_BENCH_METRICS_ROUNDS` says (default 3); each side's best run is compared, so a
/// burst of other work on the machine in one run does not decide the figure.
#[allow(clippy::too_many_arguments)]
fn metrics_cost(
    broker: &Broker,
    input: &str,
    stages: &Stages,
    workers: usize,
    n: usize,
    partitions: i32,
    first_on: &Side,
    first_scrapes: u64,
) {
    let rounds: usize = env_or("WEIR_BENCH_METRICS_ROUNDS", 3).max(1);
    let rate = |s: &Side| n as f64 / s.steady.as_secs_f64();
    let mut on = vec![(rate(first_on), side_cpu(first_on, n))];
    let mut off = Vec::new();
    let mut scrapes = first_scrapes;
    let run = |name: &str, metrics: Arc<Metrics>| {
        let out = unique(&format!("{name}-out"));
        broker.create_topic(&out, partitions);
        let pipeline = pipeline(broker, input, &out, &unique(&format!("{name}-group")), &[]);
        let side = crate::weir(broker, &pipeline, stages, workers, n as u64, metrics);
        (rate(&side), side_cpu(&side, n))
    };
    for round in 0..rounds {
        off.push(run("bare", Arc::new(Metrics::totals_only())));
        if round + 1 < rounds {
            let (side, s) = with_admin(|metrics| run("metered", metrics));
            on.push(side);
            scrapes += s;
        }
    }
    let show = |runs: &[(f64, f64)]| {
        runs.iter()
            .map(|(r, c)| format!("{r:.0}/s {c:.1} µs"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let best = |runs: &[(f64, f64)]| runs.iter().map(|r| r.0).fold(0.0, f64::max);
    let least = |runs: &[(f64, f64)]| runs.iter().map(|r| r.1).fold(f64::MAX, f64::min);
    println!(
        "metrics: on (per-stage counts and call times, latency; admin server scraped {scrapes} times): {}",
        show(&on)
    );
    println!(
        "         off (totals only, no admin server): {}",
        show(&off)
    );
    let cost = (best(&on) / best(&off) - 1.0) * 100.0;
    println!(
        "         best of {rounds} each: on {:.0} records/s {:.1} CPU µs/record, off {:.0} records/s {:.1} CPU µs/record: \
         on is {cost:+.1}% in records/s (target: at most 3% slower: {}), {:+.1}% in CPU",
        best(&on),
        least(&on),
        best(&off),
        least(&off),
        // Faster with metrics on is the machine's noise, not a cost.
        if cost >= -3.0 { "met" } else { "NOT met" },
        (least(&on) / least(&off) - 1.0) * 100.0
    );
}

/// Run `f` with full metrics served by an admin server on a port of its own, scraped once a
/// second meanwhile; what `f` returned and how many scrapes answered.
fn with_admin<T>(f: impl FnOnce(Arc<Metrics>) -> T) -> (T, u64) {
    let metrics = Arc::new(Metrics::default());
    let config = AdminConfig {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        explicit: true,
    };
    let admin = AdminServer::start(&config, metrics.clone())
        .expect("start the admin server")
        .expect("an address was given");
    let stop = AtomicBool::new(false);
    let scrapes = AtomicU64::new(0);
    let result = thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Relaxed) {
                if kit::kafka::http_get(&admin.addr.to_string(), "/metrics").0 == 200 {
                    scrapes.fetch_add(1, Relaxed);
                }
                thread::sleep(Duration::from_secs(1));
            }
        });
        let result = f(metrics);
        stop.store(true, Relaxed);
        result
    });
    (result, scrapes.load(Relaxed))
}

/// This process's `VmRSS:` or `VmHWM:` in MiB.
fn memory_mib(field: &str) -> f64 {
    status_mib("/proc/self/status", field)
}

/// `field` of the process status file at `path` in MiB.
fn status_mib(path: &str, field: &str) -> f64 {
    let status = std::fs::read_to_string(path).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// CPU µs per input record of this process over a side's steady state.
fn side_cpu(side: &Side, n: usize) -> f64 {
    let (c0, c1) = &side.cpu;
    (c1.own - c0.own) * 1e6 / n as f64
}
