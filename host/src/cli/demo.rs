//! `weir demo`: a pipeline run end to end against Kafka on a machine without Kafka.
//!
//! librdkafka's mock cluster is a real Kafka-protocol broker living inside this process, so the
//! demo exercises exactly the code `weir run` uses (consumer group, idempotent producer, offset
//! commits, dead letters) with nothing to install. The input is generated rather than shipped so
//! the demo can show throughput at any size, and it is seeded so every run tells the same story.

use std::{
    io::{IsTerminal, Write},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use rdkafka::{
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer as _},
    message::Message as _,
    mocking::MockCluster,
    producer::{BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer},
    types::RDKafkaErrorCode,
    ClientContext, Offset, TopicPartitionList,
};
use serde::Serialize;

use weir::{
    admin::AdminServer,
    chain::Stages,
    config::{
        parse_listen, AdminConfig, ErrorPolicy, ErrorsConfig, Pipeline, SinkConfig, SourceConfig,
    },
    engine::Record,
    jsonl::{self, Format},
    metrics::{Metrics, Snapshot},
    runtime::RunOptions,
};

/// Run a pipeline over generated Debezium order changes on an in-process Kafka cluster: no
/// broker needed. Its [source], [sink] and [errors] are replaced by the demo's topics.
#[derive(clap::Args)]
pub struct DemoCommand {
    /// How many change events to generate.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    records: u64,
    #[arg(long, default_value = "examples/orders.toml")]
    pipeline: PathBuf,
    /// Where the dashboard and metrics are served, as HOST:PORT (port 0 picks one); overrides
    /// the pipeline's `[admin] listen`.
    #[arg(long, value_parser = parse_listen)]
    admin: Option<std::net::SocketAddr>,
    /// Keep serving the dashboard once the records are done, until Ctrl-C, so a person can
    /// look at it.
    #[arg(long)]
    hold: bool,
}

impl DemoCommand {
    pub fn execute(self) -> Result<std::process::ExitCode> {
        let mut pipeline = Pipeline::load(&self.pipeline)?;
        if let Some(at) = self.admin {
            pipeline.admin = AdminConfig {
                listen: Some(at),
                explicit: true,
            };
        }
        let stages = super::load_stages(&super::engine()?, &pipeline)?;
        let metrics = Arc::new(Metrics::default());
        let admin = AdminServer::start(&pipeline.admin, metrics.clone())?;
        let out = &mut std::io::stdout().lock();
        if let Some(admin) = &admin {
            writeln!(out, "dashboard: http://{}/ (metrics: /metrics)", admin.addr)?;
        }
        run(pipeline, stages, self.records, metrics, out)?;
        if let (true, Some(admin)) = (self.hold, &admin) {
            writeln!(
                out,
                "holding: the dashboard stays at http://{}/ until Ctrl-C",
                admin.addr
            )?;
            out.flush()?;
            hold_until_interrupted()?;
        }
        Ok(std::process::ExitCode::SUCCESS)
    }
}

/// The topics the demo creates: change events in, big orders out, dead letters, and the
/// customers' change events, which the example pipeline keeps as a table.
const INPUT_TOPIC: &str = "orders.cdc";
const CUSTOMERS_TOPIC: &str = "shop.public.customers";
/// Customers in the snapshot; orders pick one of them.
const CUSTOMERS: u64 = 200;
/// One customer moves country every this many order events, while the orders flow.
const CUSTOMER_CHANGE_EVERY: u64 = 100;
const COUNTRIES: &[&str] = &["DE", "FR", "NL", "ES", "IT", "PL", "SE", "US", "GB", "JP"];
const OUTPUT_TOPIC: &str = "orders.big";
const DEAD_LETTER_TOPIC: &str = "orders.dlq";
/// Several partitions so the run spreads them over workers as it would in production; one for
/// the dead letters, which are few and read back in the order they were written.
const PARTITIONS: i32 = 3;
const DEAD_LETTER_PARTITIONS: i32 = 1;
const GROUP: &str = "weir-demo";
const READER_GROUP: &str = "weir-demo-reader";

/// Every run generates the same events, so its counts can be compared from run to run.
const SEED: u64 = 0x5745_4952_2d44_454d; // "WEIR-DEM"
/// One event in this many is corrupted, so the dead-letter path shows up even in short runs.
const MALFORMED_EVERY: u64 = 1000;
/// How far the producer may run ahead of the pipeline, in events. The mock cluster keeps only
/// the newest 5 MiB of each partition and silently drops older records, so producing everything
/// up front would lose events beyond a few tens of thousands (a 100 000-event run stalled that
/// way); this many (about 4 MB over all partitions) stays well inside the limit and still keeps
/// the pipeline busy.
const AHEAD: u64 = 10_000;
/// How many output records to show.
const SAMPLE: usize = 5;

/// How long the counts may stand still before the demo gives up: far longer than any pause a
/// healthy run has (forming the consumer group takes about 3 s), short enough that a hang is
/// reported rather than waited out. A stall, not a total, so `--records` can be as large as
/// anyone cares to wait for.
const STALL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `run` gets to drain and return once asked to stop.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// What the generator made, by kind of change.
#[derive(Debug, Default, Clone, Copy)]
struct Generated {
    reads: u64,
    inserts: u64,
    updates: u64,
    deletes: u64,
    /// Events corrupted into text that is not JSON.
    malformed: u64,
    /// Change events of the customers (snapshot and moves), into their own topic.
    customer_rows: u64,
    customer_moves: u64,
}

impl Generated {
    fn total(&self) -> u64 {
        self.reads + self.inserts + self.updates + self.deletes + self.malformed
    }
}

/// Generate `records` change events into a mock cluster, run `pipeline` (its stages loaded as
/// `stages`) over them, and print a sample of what came out and a summary to `out`; live counts
/// go to stderr. The pipeline's `[source]`, `[sink]` and `[errors]` are replaced by the demo's
/// topics, so any pipeline file that fits Debezium order events can be shown off.
pub fn run(
    mut pipeline: Pipeline,
    stages: Stages,
    records: u64,
    metrics: Arc<Metrics>,
    out: &mut impl Write,
) -> Result<()> {
    let cluster = MockCluster::new(1).context("cannot start the in-process Kafka cluster")?;
    let brokers = cluster.bootstrap_servers();
    for (topic, partitions) in [
        (INPUT_TOPIC, PARTITIONS),
        (OUTPUT_TOPIC, PARTITIONS),
        (DEAD_LETTER_TOPIC, DEAD_LETTER_PARTITIONS),
        (CUSTOMERS_TOPIC, 1),
    ] {
        cluster
            .create_topic(topic, partitions, 1)
            .with_context(|| format!("cannot create topic `{topic}` on the mock cluster"))?;
    }

    let batch_size = pipeline.source.as_ref().map(|s| s.batch_size);
    pipeline.source = Some(demo_source(&brokers, batch_size)?);
    pipeline.sink = Some(SinkConfig {
        topic: OUTPUT_TOPIC.into(),
        brokers: None,
        kafka: Default::default(),
    });
    pipeline.errors = ErrorsConfig {
        policy: ErrorPolicy::DeadLetter,
        topic: Some(DEAD_LETTER_TOPIC.into()),
    };
    // Tables are kept in a store of the run's own: each demo starts a new cluster.
    let state = tempfile::tempdir().context("creating the demo's state directory")?;
    pipeline.state_dir = Some(state.path().to_path_buf());
    // More workers than partitions would only sit idle.
    let workers = RunOptions::default().workers.min(PARTITIONS as usize);
    let names: Vec<&str> = pipeline.stages.iter().map(|s| s.name.as_str()).collect();
    writeln!(
        out,
        "pipeline: {} ({}), {workers} workers, `{INPUT_TOPIC}` -> `{OUTPUT_TOPIC}`, \
         dead letters to `{DEAD_LETTER_TOPIC}`",
        pipeline.path.display(),
        names.join(" -> "),
    )?;
    out.flush()?;

    let pipeline_tables: Vec<String> = pipeline.tables.iter().map(|t| t.name.clone()).collect();
    let counts = run_until_done(pipeline, stages, workers, &brokers, records, metrics)?;
    drop(state);
    let generated = counts.generated;
    writeln!(
        out,
        "generated: {} Debezium change events of shop.public.orders into `{INPUT_TOPIC}` \
         ({PARTITIONS} partitions): {} snapshot reads, {} inserts, {} updates, {} deletes, \
         {} malformed (not JSON)",
        generated.total(),
        generated.reads,
        generated.inserts,
        generated.updates,
        generated.deletes,
        generated.malformed
    )?;
    if !pipeline_tables.is_empty() {
        writeln!(
            out,
            "customers: {} Debezium change events of shop.public.customers into \
             `{CUSTOMERS_TOPIC}`: {} snapshot rows and {} moves (a customer moves country \
             every {CUSTOMER_CHANGE_EVERY} orders), kept as table {}",
            generated.customer_rows + generated.customer_moves,
            generated.customer_rows,
            generated.customer_moves,
            pipeline_tables.join(", ")
        )?;
    }

    let mut consumer = reader(&brokers)?;
    let outputs = sample(&mut consumer, OUTPUT_TOPIC, PARTITIONS, SAMPLE)?;
    show(out, OUTPUT_TOPIC, &outputs, "")?;
    let letters = sample(&mut consumer, DEAD_LETTER_TOPIC, DEAD_LETTER_PARTITIONS, 1)?;
    show(
        out,
        DEAD_LETTER_TOPIC,
        &letters,
        ", with its cause in headers",
    )?;

    let committed = committed(&brokers)?;
    writeln!(
        out,
        "\ncommitted: group `{GROUP}` is past {committed} of the {records} records in \
         `{INPUT_TOPIC}`"
    )?;

    let last = &counts.last;
    let flowing = counts.elapsed.saturating_sub(counts.joining);
    writeln!(
        out,
        "summary: {} in, {} out, {} dead-lettered in {:.1} s ({:.1} s for the consumer group \
         to form, then {rate:.0} records/s)",
        last.processed,
        last.produced - last.dead_lettered,
        last.dead_lettered,
        counts.elapsed.as_secs_f64(),
        counts.joining.as_secs_f64(),
        rate = last.processed as f64 / flowing.as_secs_f64().max(1e-3),
    )?;
    out.flush()?;
    // The clients go before the cluster they talk to.
    drop(consumer);
    drop(cluster);
    Ok(())
}

/// A heading and the sample records of `topic`, as `weir test --format envelope` writes records.
fn show(out: &mut impl Write, topic: &str, sample: &Sample, about: &str) -> Result<()> {
    write!(out, "\n`{topic}`: {} records", sample.written)?;
    if sample.dropped > 0 {
        write!(
            out,
            ", the oldest {} already dropped by the in-process cluster (it keeps 5 MiB a \
             partition)",
            sample.dropped
        )?;
    }
    let (first, still) = if sample.dropped > 0 {
        ("oldest", " it still holds")
    } else {
        ("first", "")
    };
    match sample.records.len() {
        0 => writeln!(out)?,
        1 => writeln!(out, "; the {first}{still}{about}:")?,
        n => writeln!(out, "; the {first} {n}{still}{about}:")?,
    }
    for record in &sample.records {
        jsonl::write_record(out, record, Format::Envelope)?;
    }
    Ok(())
}

/// The demo's source: the input topic on the mock cluster, read by a group of its own.
fn demo_source(brokers: &str, batch_size: Option<usize>) -> Result<SourceConfig> {
    // Built through serde so the file format's defaults apply to what the demo leaves out.
    let mut source: SourceConfig = serde_json::from_value(serde_json::json!({
        "brokers": brokers,
        "topics": [INPUT_TOPIC],
        "group": GROUP,
    }))
    .context("building the demo's [source]")?;
    if let Some(batch_size) = batch_size {
        source.batch_size = batch_size;
    }
    Ok(source)
}

/// How the pipeline run went.
struct Counts {
    generated: Generated,
    last: Snapshot,
    /// From starting the run until every output was acknowledged.
    elapsed: Duration,
    /// Until the first record was consumed: the mock cluster, like a real broker, waits a few
    /// seconds for more members before it settles a new group, and that says nothing about weir.
    joining: Duration,
}

/// Run the pipeline on a thread and feed it generated events from another until every event
/// was processed and every output and dead letter acknowledged, showing live counts meanwhile;
/// then stop it and wait for it to drain and commit.
fn run_until_done(
    pipeline: Pipeline,
    stages: Stages,
    workers: usize,
    brokers: &str,
    records: u64,
    metrics: Arc<Metrics>,
) -> Result<Counts> {
    let options = RunOptions {
        metrics,
        workers,
        report_every: None,
        ..RunOptions::default()
    };
    let (stop, metrics) = (options.stop.clone(), options.metrics.clone());
    let customers = Arc::new(AtomicBool::new(false));
    let mut producer = Some({
        let (brokers, metrics, stop) = (brokers.to_string(), metrics.clone(), stop.clone());
        let customers = customers.clone();
        thread::Builder::new()
            .name("weir-demo-produce".into())
            .spawn(move || produce(&brokers, records, &metrics, &stop, &customers))
            .context("cannot start the producing thread")?
    });
    // The customers' snapshot is in its topic before the run starts, as a database's would be.
    while !customers.load(Ordering::Acquire) && producer.as_ref().is_some_and(|p| !p.is_finished())
    {
        thread::sleep(Duration::from_millis(5));
    }
    let started = Instant::now();
    let handle = thread::Builder::new()
        .name("weir-demo-run".into())
        .spawn(move || weir::runtime::run(&pipeline, &stages, options))
        .context("cannot start the pipeline thread")?;
    let mut generated = None;

    let mut progress = Progress::new();
    let mut joining = None;
    // When the counts last changed, and to what.
    let mut moved = (started, Snapshot::default());
    let outcome = loop {
        thread::sleep(Duration::from_millis(20));
        let now = metrics.snapshot();
        if now.consumed > 0 && joining.is_none() {
            joining = Some(started.elapsed());
        }
        progress.show(&now, started);
        if let Some(done) = producer.take_if(|p| p.is_finished()) {
            match done.join() {
                Ok(Ok(counts)) => generated = Some(counts),
                Ok(Err(e)) => break Err(e),
                Err(_) => break Err(anyhow::anyhow!("the producing thread panicked")),
            }
        }
        if generated.is_some() && now.processed >= records && now.delivered == now.produced {
            break Ok(started.elapsed());
        }
        if handle.is_finished() {
            break Err(anyhow::anyhow!(
                "the pipeline stopped before processing every record ({now})"
            ));
        }
        if now != moved.1 {
            moved = (Instant::now(), now);
        } else if moved.0.elapsed() > STALL_TIMEOUT {
            break Err(anyhow::anyhow!(
                "timed out: nothing moved for {} s before every record was processed and \
                 delivered ({now})",
                STALL_TIMEOUT.as_secs()
            ));
        }
    };
    progress.finish(&metrics.snapshot(), started);

    // Also what makes a producer still waiting for the pipeline give up.
    stop.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + STOP_GRACE;
    while !handle.is_finished() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    if !handle.is_finished() {
        // Leave it: the process is about to exit, and joining would hang the demo.
        bail!(
            "the pipeline did not stop within {}s of being asked to{}",
            STOP_GRACE.as_secs(),
            outcome.err().map_or(String::new(), |e| format!(" ({e})"))
        );
    }
    let result: Result<Snapshot, weir::Error> = handle
        .join()
        .map_err(|_| anyhow::anyhow!("the pipeline thread panicked"))?;
    let last = result.context("the pipeline failed")?;
    let elapsed = outcome?;
    Ok(Counts {
        generated: generated.unwrap_or_default(),
        last,
        elapsed,
        joining: joining.unwrap_or_default(),
    })
}

/// Live counts on stderr: one line rewritten in place on a terminal, a line a second elsewhere
/// (so logs and CI output stay readable).
struct Progress {
    terminal: bool,
    every: Duration,
    /// When records started to flow; nothing is shown before, while the group forms (the run
    /// logs that part itself).
    flowing: Option<Instant>,
    /// When and at what count the rate was last measured.
    last: (Instant, u64),
}

impl Progress {
    fn new() -> Progress {
        let terminal = std::io::stderr().is_terminal();
        Progress {
            terminal,
            every: if terminal {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(1)
            },
            flowing: None,
            last: (Instant::now(), 0),
        }
    }

    fn show(&mut self, now: &Snapshot, started: Instant) {
        if self.flowing.is_none() && now.consumed > 0 {
            self.flowing = Some(Instant::now());
            self.last = (Instant::now(), now.processed);
        }
        let since = self.last.0.elapsed();
        if self.flowing.is_none() || since < self.every {
            return;
        }
        let rate = (now.processed - self.last.1) as f64 / since.as_secs_f64();
        self.write(now, rate, started);
        self.last = (Instant::now(), now.processed);
    }

    /// The final counts, which a run shorter than a refresh would otherwise never show, with
    /// the rate over the whole flow; a terminal's rewritten line is ended.
    fn finish(&mut self, now: &Snapshot, started: Instant) {
        let Some(flowing) = self.flowing else {
            return;
        };
        let rate = now.processed as f64 / flowing.elapsed().as_secs_f64().max(1e-3);
        self.write(now, rate, started);
        if self.terminal {
            eprintln!();
        }
    }

    fn write(&self, now: &Snapshot, rate: f64, started: Instant) {
        let line = format!(
            "demo: {} consumed, {} out, {} dead-lettered, {rate:.0} records/s ({:.1} s)",
            now.consumed,
            now.produced - now.dead_lettered,
            now.dead_lettered,
            started.elapsed().as_secs_f64()
        );
        let mut err = std::io::stderr().lock();
        // Progress is best effort: a closed stderr must not fail the demo.
        let _ = if self.terminal {
            write!(err, "\r{line}\x1b[K")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }
}

/// How far the pipeline's group committed the input topic, read as its next member would.
/// Only reads: this consumer never joins the group, so it cannot disturb it.
fn committed(brokers: &str) -> Result<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .create()
        .context("cannot create the consumer that reads committed offsets")?;
    let mut partitions = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        partitions.add_partition(INPUT_TOPIC, partition);
    }
    let committed = consumer
        .committed_offsets(partitions, Duration::from_secs(10))
        .with_context(|| format!("reading the offsets group `{GROUP}` committed"))?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(n) => Some(n),
            _ => None,
        })
        .sum())
}

/// A consumer for reading topics back. It reads assigned partitions and never joins or commits
/// for a group: a consumer group the pipeline has just left gave a new member nothing back from
/// the mock cluster, and plain assignment also keeps the run's committed offsets untouched.
/// (librdkafka refuses `assign` without a `group.id`, so it has one, of its own.)
fn reader(brokers: &str) -> Result<BaseConsumer> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", READER_GROUP)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()
        .context("cannot create the consumer that reads the results back")
}

/// The first records a topic still holds, and how many were written to it.
struct Sample {
    records: Vec<Record>,
    written: i64,
    /// The oldest records the mock cluster already dropped (it keeps 5 MiB a partition).
    dropped: i64,
}

/// The first `count` records of `topic` in partition order, so the same run shows the same ones.
fn sample(
    consumer: &mut BaseConsumer,
    topic: &str,
    partitions: i32,
    count: usize,
) -> Result<Sample> {
    let timeout = Duration::from_secs(10);
    let mut records = Vec::new();
    let (mut written, mut dropped) = (0, 0);
    for partition in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, timeout)
            .with_context(|| format!("reading the offsets of `{topic}` partition {partition}"))?;
        written += high;
        dropped += low;
        if records.len() >= count || high <= low {
            continue;
        }
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .with_context(|| format!("assigning `{topic}` partition {partition}"))?;
        consumer
            .assign(&assignment)
            .with_context(|| format!("assigning `{topic}` partition {partition}"))?;
        let deadline = Instant::now() + timeout;
        while records.len() < count {
            if Instant::now() > deadline {
                bail!("timed out reading `{topic}` partition {partition} back");
            }
            let Some(message) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let message = message.with_context(|| format!("reading `{topic}` back"))?;
            records.push(weir::kafka::source::record(&message));
            if message.offset() + 1 >= high {
                break;
            }
        }
    }
    consumer
        .unassign()
        .with_context(|| format!("done reading `{topic}`"))?;
    Ok(Sample {
        records,
        written,
        dropped,
    })
}

// ---------------------------------------------------------------------------------------------
// The input
// ---------------------------------------------------------------------------------------------

/// Counts deliveries, so the demo knows every event is in the topic before the run starts.
#[derive(Default)]
struct Delivery {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Delivery {}

impl ProducerContext for Delivery {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
            first.get_or_insert_with(|| e.to_string());
        }
    }
}

/// Generate `records` events and produce them to the input topic while the pipeline consumes
/// them, keyed by order id as Debezium keys them, so every change of one order lands in one
/// partition, in order. Gives up if `stop` is set while it waits for the pipeline. The
/// customers' snapshot goes first, to its own topic; `customers` is set once it is acknowledged.
fn produce(
    brokers: &str,
    records: u64,
    metrics: &Metrics,
    stop: &AtomicBool,
    customers: &AtomicBool,
) -> Result<Generated> {
    let producer: ThreadedProducer<Delivery> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        // The Java clients' partitioner, as Debezium (Kafka Connect) uses.
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .create_with_context(Delivery::default())
        .context("cannot create the demo's producer")?;
    let mut generator = Generator::new(SEED, records);
    let send = |topic: &str, event: Event| -> Result<()> {
        let mut record = BaseRecord::to(topic)
            .key(event.key.as_bytes())
            .payload(event.value.as_slice())
            .timestamp(event.timestamp);
        loop {
            match producer.send(record) {
                Ok(()) => return Ok(()),
                Err((
                    rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                    back,
                )) => {
                    record = back;
                    thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e).context(format!("producing to `{topic}`")),
            }
        }
    };
    // The customers' snapshot goes first, as Debezium reads a table before it streams.
    for id in 1..=CUSTOMERS {
        let event = generator
            .customer(id, "r")
            .context("generating a customer")?;
        send(CUSTOMERS_TOPIC, event)?;
    }
    producer
        .flush(Duration::from_secs(30))
        .with_context(|| format!("waiting for `{CUSTOMERS_TOPIC}` to acknowledge the customers"))?;
    customers.store(true, Ordering::Release);
    for sent in 0..records {
        while sent.saturating_sub(metrics.consumed.load(Ordering::Relaxed)) >= AHEAD {
            if stop.load(Ordering::Relaxed) {
                bail!("stopped while producing the change events");
            }
            thread::sleep(Duration::from_millis(2));
        }
        let event = generator
            .next_event()
            .context("generating a change event")?;
        send(INPUT_TOPIC, event)?;
        if sent % CUSTOMER_CHANGE_EVERY == CUSTOMER_CHANGE_EVERY - 1 {
            let id = 1 + generator.rng.u64(..CUSTOMERS);
            let event = generator
                .customer(id, "u")
                .context("generating a customer")?;
            send(CUSTOMERS_TOPIC, event)?;
        }
    }
    producer
        .flush(Duration::from_secs(30))
        .with_context(|| format!("waiting for `{INPUT_TOPIC}` to acknowledge the events"))?;
    let context = producer.context();
    let failed = context.failed.load(Ordering::Relaxed);
    if failed > 0 {
        let first = context
            .first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default();
        bail!("{failed} change events could not be produced: {first}");
    }
    Ok(generator.counts)
}

/// One of `items`, uniformly.
fn pick<T: Copy>(rng: &mut fastrand::Rng, items: &[T]) -> T {
    items[rng.usize(..items.len())]
}

/// A row of the `orders` table.
#[derive(Debug, Clone, Serialize)]
struct Order {
    id: u64,
    customer_id: u64,
    customer_email: String,
    amount: f64,
    currency: &'static str,
    status: &'static str,
}

/// The `source` block Debezium's Postgres connector writes.
#[derive(Serialize)]
struct Source {
    version: &'static str,
    connector: &'static str,
    name: &'static str,
    ts_ms: i64,
    snapshot: &'static str,
    db: &'static str,
    schema: &'static str,
    table: &'static str,
    #[serde(rename = "txId")]
    tx_id: u64,
    lsn: u64,
}

/// A row of the `customers` table.
#[derive(Debug, Clone, Serialize)]
struct Customer {
    id: u64,
    name: &'static str,
    country: &'static str,
}

/// A change event as Debezium's JSON converter writes it with schemas disabled.
#[derive(Serialize)]
struct Envelope<'a, Row> {
    before: Option<&'a Row>,
    after: Option<&'a Row>,
    source: Source,
    op: &'static str,
    ts_ms: i64,
    transaction: Option<()>,
}

struct Event {
    key: String,
    value: Vec<u8>,
    timestamp: i64,
}

const NAMES: &[&str] = &[
    "ana", "bo", "chen", "dara", "eli", "fatima", "gus", "hana", "ivan", "jo", "kemal", "lea",
    "mo", "noor", "olu", "priya",
];
const DOMAINS: &[&str] = &["example.com", "example.org", "example.net"];
const CURRENCIES: &[&str] = &["EUR", "EUR", "EUR", "USD", "GBP"];
/// An order's life; an update moves it one step on (or changes its amount).
const STATUSES: &[&str] = &["placed", "paid", "shipped", "delivered"];

/// A Postgres `orders` table changing over time, and the Debezium events its changes make: a
/// snapshot of the rows that existed when capture started, then inserts, updates and deletes.
struct Generator {
    rng: fastrand::Rng,
    /// Each customer's country now.
    countries: std::collections::BTreeMap<u64, &'static str>,
    /// How many of the first events are the initial snapshot.
    snapshot: u64,
    /// Rows that exist now, for updates and deletes to pick from.
    live: Vec<Order>,
    next_id: u64,
    emitted: u64,
    /// Events to go until the next corrupted one.
    until_malformed: u64,
    ts_ms: i64,
    lsn: u64,
    tx_id: u64,
    counts: Generated,
}

impl Generator {
    /// A generator of `total` events, the first tenth of them the initial snapshot.
    fn new(seed: u64, total: u64) -> Generator {
        Generator {
            rng: fastrand::Rng::with_seed(seed),
            countries: Default::default(),
            snapshot: total / 10,
            live: Vec::new(),
            next_id: 1,
            emitted: 0,
            until_malformed: MALFORMED_EVERY,
            ts_ms: 1_732_600_000_000,
            lsn: 24_023_128,
            tx_id: 780,
            counts: Generated::default(),
        }
    }

    fn new_order(&mut self, status: &'static str) -> Order {
        let id = self.next_id;
        self.next_id += 1;
        let name = pick(&mut self.rng, NAMES);
        let domain = pick(&mut self.rng, DOMAINS);
        Order {
            id,
            customer_id: 1 + self.rng.u64(..CUSTOMERS),
            customer_email: format!("{name}.{}@{domain}", self.rng.u64(..500)),
            amount: self.amount(),
            currency: pick(&mut self.rng, CURRENCIES),
            status,
        }
    }

    /// A change event of customer `id`: its snapshot row (`op` "r"), or a move to another
    /// country ("u"), which the table of customers takes in while orders flow.
    fn customer(&mut self, id: u64, op: &'static str) -> Result<Event, serde_json::Error> {
        let row = |country| Customer {
            id,
            name: NAMES[id as usize % NAMES.len()],
            country,
        };
        let was = self.countries.insert(id, pick(&mut self.rng, COUNTRIES));
        let before = was.filter(|_| op == "u").map(row);
        let after = row(self.countries[&id]);
        match op {
            "r" => self.counts.customer_rows += 1,
            _ => self.counts.customer_moves += 1,
        }
        let envelope = Envelope {
            before: before.as_ref(),
            after: Some(&after),
            source: self.source("customers", op == "r", false),
            op,
            ts_ms: self.ts_ms,
            transaction: None,
        };
        Ok(Event {
            key: format!("{{\"id\":{id}}}"),
            value: serde_json::to_vec(&envelope)?,
            timestamp: self.ts_ms,
        })
    }

    /// The `source` block of an event of `table` now.
    fn source(&self, table: &'static str, in_snapshot: bool, last: bool) -> Source {
        Source {
            version: "2.7.0.Final",
            connector: "postgresql",
            name: "shop",
            ts_ms: self.ts_ms,
            snapshot: match (in_snapshot, last) {
                (true, true) => "last",
                (true, false) => "true",
                (false, _) => "false",
            },
            db: "shop",
            schema: "public",
            table,
            tx_id: self.tx_id,
            lsn: self.lsn,
        }
    }

    /// Most orders are small, a few large: 5.00 to 1000.00, skewed low.
    fn amount(&mut self) -> f64 {
        let cents = 500 + (self.rng.f64().powi(3) * 99_500.0) as u64;
        cents as f64 / 100.0
    }

    fn next_event(&mut self) -> Result<Event, serde_json::Error> {
        self.emitted += 1;
        self.ts_ms += 1 + self.rng.u64(..200) as i64;
        self.lsn += 64 + 8 * self.rng.u64(..16);
        let in_snapshot = self.emitted <= self.snapshot;
        let (op, before, after) = if in_snapshot {
            let status = pick(&mut self.rng, STATUSES);
            let order = self.new_order(status);
            self.live.push(order.clone());
            ("r", None, Some(order))
        } else {
            self.tx_id += 1;
            let roll = self.rng.u64(..100);
            if self.live.is_empty() || roll < 50 {
                let order = self.new_order(STATUSES[0]);
                self.live.push(order.clone());
                ("c", None, Some(order))
            } else if roll < 85 {
                let i = self.rng.usize(..self.live.len());
                let before = self.live[i].clone();
                let step = STATUSES.iter().position(|s| *s == before.status);
                let amount = self.amount();
                let row = &mut self.live[i];
                match step {
                    Some(step) if step + 1 < STATUSES.len() && self.rng.u64(..4) != 0 => {
                        row.status = STATUSES[step + 1];
                    }
                    _ => row.amount = amount,
                }
                ("u", Some(before), Some(row.clone()))
            } else {
                let i = self.rng.usize(..self.live.len());
                ("d", Some(self.live.swap_remove(i)), None)
            }
        };
        let id = after.as_ref().or(before.as_ref()).map_or(0, |o| o.id);
        let envelope = Envelope {
            before: before.as_ref(),
            after: after.as_ref(),
            source: self.source("orders", in_snapshot, self.emitted == self.snapshot),
            op,
            ts_ms: self.ts_ms + 1 + self.rng.u64(..20) as i64,
            transaction: None,
        };
        let mut value = serde_json::to_vec(&envelope)?;
        self.until_malformed -= 1;
        if self.until_malformed == 0 {
            self.until_malformed = MALFORMED_EVERY;
            // Cut short, as a broken producer or a bad bridge might leave it.
            value.truncate(value.len() / 2);
            self.counts.malformed += 1;
        } else {
            *match op {
                "r" => &mut self.counts.reads,
                "c" => &mut self.counts.inserts,
                "u" => &mut self.counts.updates,
                _ => &mut self.counts.deletes,
            } += 1;
        }
        Ok(Event {
            key: format!("{{\"id\":{id}}}"),
            value,
            timestamp: self.ts_ms,
        })
    }
}

/// Wait for Ctrl-C (SIGINT) or SIGTERM.
fn hold_until_interrupted() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    })?;
    Ok(())
}
