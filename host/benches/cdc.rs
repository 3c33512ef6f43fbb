//! What capturing a Postgres database costs: weir's Postgres source (logical replication, the
//! Debezium envelope, one wasm stage, Kafka) against `pg_recvlogical` reading the same
//! publication with the same output plugin, in one run.
//!
//! ```text
//! cargo bench -p weir --bench cdc                          # 200k row changes
//! WEIR_BENCH_ROWS=20000 cargo bench -p weir --bench cdc    # a quick look
//! ```
//!
//! `pg_recvlogical` (PostgreSQL's own client) only receives the decoded stream and writes it to a
//! pipe: it is the limit of any logical-replication consumer on this server, since the server's
//! decoding (the walsender) is the same work for both.
//!
//! 1. The server is the project's `scripts/postgres.sh` on a port of its own
//!    (`WEIR_BENCH_PG_PORT`, default 25460), started afresh and stopped at the end; the broker
//!    `scripts/kafka-broker.sh` on `KAFKA_PORT` (default 19192) or `$KAFKA_BROKERS`. The server is
//!    tuned for tests (fsync off), which makes commits cheap but not the capture.
//! 2. Backlog: a table `orders` gets N inserted rows (`WEIR_BENCH_ROWS`, default 200000) in
//!    transactions of `WEIR_BENCH_TXN_ROWS` (default 100), after a slot for each reader was made.
//!    Then each reader takes the whole backlog from its slot:
//!    - `pg_recvlogical --endpos` (protocol 1, the publication; its output is parsed and its row
//!      messages counted): rows / its wall time;
//!    - weir at least once and exactly once: `weir::runtime::postgres::run` with `cdc-unwrap` as
//!      its one stage, until every row's output is acknowledged and the last position recorded
//!      (exactly once: committed). Start-up (connecting, the slot, the topics: until the first
//!      change is captured) is shown apart from the steady rate.
//!
//!    CPU per row: weir's process, and `pg_recvlogical`'s.
//! 3. Latency: a writer commits one-row transactions at `WEIR_BENCH_PG_RATE` per second (default
//!    1000) for `WEIR_BENCH_LATENCY_SECS` (default 10) while weir (at least once) and
//!    `pg_recvlogical` both follow their own slots. For `pg_recvlogical`: arrival of each commit
//!    message − the commit time in it (µs). For weir: commit → Kafka acknowledgement, from weir's
//!    own latency histogram (the sink observes it per record; quantiles interpolated within its
//!    buckets), and commit → read back by a consumer of the output topic (exact to the
//!    millisecond of Kafka timestamps; one more broker hop). The first second is warm-up.

use std::{
    io::Read,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering::Relaxed},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use rdkafka::{consumer::BaseConsumer, consumer::Consumer, Message, Offset, TopicPartitionList};
use weir::{
    chain::Stages,
    config::Pipeline,
    engine::Engine,
    metrics::{Metrics, Snapshot},
    runtime::RunOptions,
};

#[path = "../../tests/all/common/mod.rs"]
mod kit;

use kit::{
    cpu_secs, env_or,
    kafka::{bench_broker, broker_script, unique, Kafka},
    postgres::{Database, Dedicated, PASSWORD_ENV},
};

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
const PUBLICATION: &str = "weir_bench";
/// Longest a phase may take before the benchmark gives up.
const PHASE_TIMEOUT: Duration = Duration::from_secs(1800);

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rows: usize = env_or("WEIR_BENCH_ROWS", 200_000);
    let txn_rows: usize = env_or("WEIR_BENCH_TXN_ROWS", 100);
    let rate: f64 = env_or("WEIR_BENCH_PG_RATE", 1000.0);
    let secs: f64 = env_or("WEIR_BENCH_LATENCY_SECS", 10.0);
    assert!(rows > 0 && txn_rows > 0 && rate > 0.0 && secs > 1.0);

    let (kafka, started_broker) = bench_broker(19192);
    let server = Dedicated::start(env_or("WEIR_BENCH_PG_PORT", 25460), &[]);
    let db = server.server.database("weir_bench");
    db.execute(
        "CREATE TABLE orders (id bigint PRIMARY KEY, customer int NOT NULL, \
         amount numeric(10, 2) NOT NULL, status text NOT NULL, \
         created_at timestamptz NOT NULL DEFAULT now())",
    );
    db.execute(&format!(
        "CREATE PUBLICATION {PUBLICATION} FOR TABLE orders"
    ));
    let engine = Engine::new(Engine::default_cache_dir()).unwrap();
    println!(
        "cdc: {rows} inserted rows in transactions of {txn_rows}; postgres {} on 127.0.0.1:{}; broker {}; {} cores",
        db.text("SHOW server_version"),
        db.port,
        kafka.brokers,
        thread::available_parallelism().map_or(0, |c| c.get()),
    );

    let readers = ["recv_backlog", "weir_alo", "weir_eos"];
    for slot in readers {
        db.execute(&format!(
            "SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')"
        ));
    }
    let took = insert_backlog(&db, rows, txn_rows);
    let end = db.text("SELECT pg_current_wal_lsn()::text");
    println!(
        "backlog: {rows} rows committed in {:.1} s ({:.0} rows/s), WAL to {end}",
        took.as_secs_f64(),
        rows as f64 / took.as_secs_f64()
    );

    println!();
    println!(
        "{:<22} {:>9} {:>9} {:>10} {:>8} {:>14}",
        "backlog reader", "start-up", "steady", "rows/s", "rows", "CPU µs/row"
    );
    let recv = recvlogical_backlog(&db, "recv_backlog", &end);
    recv.print("pg_recvlogical", rows);
    for (slot, guarantee) in [("weir_alo", "at-least-once"), ("weir_eos", "exactly-once")] {
        let pipeline = pipeline(&db, &kafka, slot, guarantee);
        let stages = Stages::load(&engine, &pipeline)
            .unwrap_or_else(|e| panic!("{e} (run scripts/build-plugins.sh first)"));
        let side = weir_backlog(&pipeline, &stages, rows as u64);
        side.print(&format!("weir, {guarantee}"), rows);
        if guarantee == "at-least-once" {
            println!(
                "{:<22} {:>41.2}",
                "  weir / pg_recvlogical",
                side.rate(rows) / recv.rate(rows)
            );
        }
    }

    println!();
    latency(&db, &kafka, &engine, rate, secs);

    drop(server);
    if let Some(port) = started_broker {
        broker_script(port, "stop");
    }
}

/// Insert `rows` rows in transactions of `txn_rows`.
fn insert_backlog(db: &Database, rows: usize, txn_rows: usize) -> Duration {
    let started = Instant::now();
    for first in (0..rows).step_by(txn_rows) {
        let last = (first + txn_rows).min(rows) - 1;
        db.execute(&format!(
            "INSERT INTO orders (id, customer, amount, status) \
             SELECT g, g % 1000, (g % 500) + 0.99, 'new' FROM generate_series({first}, {last}) g"
        ));
    }
    started.elapsed()
}

/// A pipeline capturing `orders` from `slot` (made beforehand, so no snapshot) through
/// `cdc-unwrap` to a topic of its own.
fn pipeline(db: &Database, kafka: &Kafka, slot: &str, guarantee: &str) -> Pipeline {
    let output = unique(&format!("cdc-{slot}"));
    kafka.create_topic(&output, 1);
    let text = format!(
        r#"[source]
kind = "postgres"
url = "postgres://postgres@127.0.0.1:{port}/{db}"
password_env = "{PASSWORD_ENV}"
publication = "{PUBLICATION}"
slot = "{slot}"
tables = ["public.orders"]
topic_prefix = "{prefix}"
snapshot = "never"

[sink]
brokers = "{brokers}"
topic = "{output}"

[delivery]
guarantee = "{guarantee}"

[[stage]]
name = "unwrap"
plugin = "plugins/cdc-unwrap.wasm"
"#,
        port = db.port,
        db = db.name,
        prefix = unique("cdc"),
        brokers = kafka.brokers,
    );
    // Plugin paths resolve against the (notional) file's directory: the repository root.
    Pipeline::parse(&kit::root().join("cdc-bench.toml"), &text)
        .unwrap_or_else(|e| panic!("the benchmark's pipeline: {e}"))
}

/// How one reader took the backlog.
struct Side {
    startup: Duration,
    steady: Duration,
    rows: u64,
    cpu_secs: f64,
}

impl Side {
    fn rate(&self, rows: usize) -> f64 {
        rows as f64 / self.steady.as_secs_f64()
    }

    fn print(&self, name: &str, rows: usize) {
        println!(
            "{name:<22} {:>7.2} s {:>7.2} s {:>10.0} {:>8} {:>14.1}",
            self.startup.as_secs_f64(),
            self.steady.as_secs_f64(),
            self.rate(rows),
            self.rows,
            self.cpu_secs * 1e6 / rows as f64,
        );
        assert_eq!(self.rows, rows as u64, "{name} did not take every row");
    }
}

/// weir through the whole backlog: from the first change captured to the last output
/// acknowledged and its position recorded.
fn weir_backlog(pipeline: &Pipeline, stages: &Stages, rows: u64) -> Side {
    let metrics = Arc::new(Metrics::default());
    let cpu = cpu_secs(None).unwrap();
    let started = Instant::now();
    let mut first = None;
    let (counts, ended) = with_weir(pipeline, stages, metrics, |s| {
        if first.is_none() && s.consumed > 0 {
            first = Some(Instant::now());
        }
        s.delivered >= rows
    });
    let first = first.expect("weir captured nothing");
    assert_eq!(counts.failed, 0, "outputs failed");
    Side {
        startup: first - started,
        steady: ended - first,
        rows: counts.delivered,
        cpu_secs: cpu_secs(None).unwrap() - cpu,
    }
}

/// Run weir on `pipeline` until `done` says so; then stop it and wait for its last checkpoint.
/// Its counts and when it returned.
fn with_weir(
    pipeline: &Pipeline,
    stages: &Stages,
    metrics: Arc<Metrics>,
    mut done: impl FnMut(Snapshot) -> bool,
) -> (Snapshot, Instant) {
    let stop = Arc::new(AtomicBool::new(false));
    let options = RunOptions {
        workers: 1,
        stop: stop.clone(),
        metrics: metrics.clone(),
        report_every: None,
        ..RunOptions::default()
    };
    thread::scope(|s| {
        let handle = s.spawn(|| weir::runtime::postgres::run(pipeline, stages, None, options));
        let started = Instant::now();
        while !done(metrics.snapshot()) {
            if handle.is_finished() {
                panic!("weir stopped by itself: {:?}", handle.join());
            }
            assert!(started.elapsed() < PHASE_TIMEOUT, "weir took too long");
            thread::sleep(Duration::from_millis(1));
        }
        stop.store(true, Relaxed);
        let counts = handle
            .join()
            .expect("weir panicked")
            .unwrap_or_else(|e| panic!("weir run failed: {e}"));
        (counts, Instant::now())
    })
}

/// `pg_recvlogical` through the whole backlog, to `end`.
fn recvlogical_backlog(db: &Database, slot: &str, end: &str) -> Side {
    let started = Instant::now();
    let mut child = recvlogical(db, slot, Some(end));
    let mut stream = Stream::default();
    let mut out = child.stdout.take().unwrap();
    let mut chunk = vec![0; 1 << 16];
    loop {
        let n = out
            .read(&mut chunk)
            .expect("reading pg_recvlogical's output");
        if n == 0 {
            break;
        }
        stream.feed(&chunk[..n], now_micros());
    }
    let cpu = exited_cpu_secs(&mut child);
    Side {
        startup: Duration::ZERO,
        steady: started.elapsed(),
        rows: stream.rows,
        cpu_secs: cpu,
    }
}

/// `pg_recvlogical` reading `slot` (to `end`, if given) with its output on a pipe.
fn recvlogical(db: &Database, slot: &str, end: Option<&str>) -> Child {
    let mut command = Command::new(recvlogical_path());
    command
        .args(["--no-loop", "-h", "127.0.0.1", "-U", "postgres", "-p"])
        .arg(db.port.to_string())
        .args(["-d", &db.name, "--slot", slot, "--start", "-f", "-"])
        .args(["-o", "proto_version=1", "-o"])
        .arg(format!("publication_names={PUBLICATION}"))
        .env("PGPASSWORD", std::env::var(PASSWORD_ENV).unwrap())
        .stdout(Stdio::piped());
    if let Some(end) = end {
        command.args(["--endpos", end]);
    }
    command.spawn().expect("start pg_recvlogical")
}

/// Debian's `pg_recvlogical`, of the newest PostgreSQL installed.
fn recvlogical_path() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (scripts/postgres.sh install)")
        .flatten()
        .map(|d| d.path().join("bin/pg_recvlogical"))
        .filter(|p| p.exists())
        .collect();
    found.sort_by_key(|p| {
        let version = p.components().nth(4).unwrap();
        version
            .as_os_str()
            .to_string_lossy()
            .parse::<u32>()
            .unwrap_or(0)
    });
    found.pop().expect("pg_recvlogical is installed")
}

/// CPU seconds `child` used, read once it has exited (before it is reaped: a zombie's
/// `/proc/PID/stat` still holds them).
fn exited_cpu_secs(child: &mut Child) -> f64 {
    let stat = format!("/proc/{}/stat", child.id());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&stat).unwrap_or_default();
        let state = text
            .rfind(')')
            .and_then(|at| text[at + 1..].split_whitespace().next());
        if state == Some("Z") {
            break;
        }
        assert!(Instant::now() < deadline, "pg_recvlogical did not end");
        thread::sleep(Duration::from_millis(5));
    }
    let cpu = cpu_secs(Some(child.id())).unwrap_or(f64::NAN);
    let status = child.wait().unwrap();
    assert!(status.success(), "pg_recvlogical failed: {status}");
    cpu
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// `pg_recvlogical`'s output as it arrives: pgoutput messages (protocol 1), each followed by a
/// newline.
#[derive(Default)]
struct Stream {
    pending: Vec<u8>,
    rows: u64,
    /// Per commit: (commit time, arrival time), µs since the Unix epoch.
    commits: Vec<(i64, i64)>,
}

impl Stream {
    /// Take `bytes`, which arrived at `now` (µs since the Unix epoch).
    fn feed(&mut self, bytes: &[u8], now: i64) {
        self.pending.extend_from_slice(bytes);
        let mut at = 0;
        while let Some((message, len)) = message(&self.pending[at..]) {
            at += len;
            match message {
                Pgoutput::Row => self.rows += 1,
                Pgoutput::Commit { micros } => self.commits.push((micros + PG_EPOCH_MICROS, now)),
                Pgoutput::Other => {}
            }
        }
        self.pending.drain(..at);
    }
}

/// What a pgoutput message is, as far as the benchmark needs.
#[derive(Debug, PartialEq)]
enum Pgoutput {
    Row,
    /// Its commit time, µs since 2000-01-01.
    Commit {
        micros: i64,
    },
    Other,
}

/// The first message in `buf` and the bytes it takes with its newline; `None` while `buf` does
/// not hold all of it. Layouts: PostgreSQL's "Logical Replication Message Formats".
fn message(buf: &[u8]) -> Option<(Pgoutput, usize)> {
    let mut r = Bytes { buf, at: 0 };
    let message = match r.u8()? {
        b'B' => r.skip(20).map(|()| Pgoutput::Other)?,
        b'C' => {
            r.skip(17)?;
            Pgoutput::Commit { micros: r.i64()? }
        }
        b'R' => {
            r.skip(4)?;
            r.text()?;
            r.text()?;
            r.skip(1)?;
            for _ in 0..r.u16()? {
                r.skip(1)?;
                r.text()?;
                r.skip(8)?;
            }
            Pgoutput::Other
        }
        b'I' | b'D' => {
            r.skip(5)?;
            r.tuple()?;
            Pgoutput::Row
        }
        b'U' => {
            r.skip(4)?;
            if matches!(r.u8()?, b'K' | b'O') {
                r.tuple()?;
                r.skip(1)?;
            }
            r.tuple()?;
            Pgoutput::Row
        }
        b'Y' => {
            r.skip(4)?;
            r.text()?;
            r.text()?;
            Pgoutput::Other
        }
        b'O' => {
            r.skip(8)?;
            r.text()?;
            Pgoutput::Other
        }
        kind => panic!("a pgoutput message of kind {:?}", kind as char),
    };
    match r.u8()? {
        b'\n' => Some((message, r.at)),
        other => panic!("{message:?} followed by {other:#x}, not a newline"),
    }
}

/// A cursor over bytes that may end early.
struct Bytes<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Bytes<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let bytes = self.buf.get(self.at..self.at + n)?;
        self.at += n;
        Some(bytes)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2)
            .map(|b| u16::from_be_bytes(b.try_into().unwrap()))
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes(b.try_into().unwrap()))
    }

    fn i64(&mut self) -> Option<i64> {
        self.take(8)
            .map(|b| i64::from_be_bytes(b.try_into().unwrap()))
    }

    /// A NUL-terminated string.
    fn text(&mut self) -> Option<()> {
        let len = self.buf.get(self.at..)?.iter().position(|&b| b == 0)?;
        self.skip(len + 1)
    }

    /// TupleData: a count of columns, each null, unchanged TOAST, or a length and its bytes.
    fn tuple(&mut self) -> Option<()> {
        for _ in 0..self.u16()? {
            if matches!(self.u8()?, b't' | b'b') {
                let len = self.u32()? as usize;
                self.skip(len)?;
            }
        }
        Some(())
    }
}

/// p50, p99 and max of `values` (ms), and how many.
fn percentiles(mut values: Vec<f64>) -> String {
    if values.is_empty() {
        return "none".into();
    }
    values.sort_by(f64::total_cmp);
    let at =
        |p: f64| values[((p * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
    format!(
        "p50 {:>6.1} ms  p99 {:>6.1} ms  max {:>6.1} ms  ({} commits)",
        at(0.50),
        at(0.99),
        values[values.len() - 1],
        values.len()
    )
}

/// weir (at least once) and `pg_recvlogical` following their slots while one-row transactions
/// are committed at `rate` per second for `secs` seconds.
fn latency(db: &Database, kafka: &Kafka, engine: &Engine, rate: f64, secs: f64) {
    for slot in ["recv_live", "weir_live"] {
        db.execute(&format!(
            "SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')"
        ));
    }
    let pipeline = pipeline(db, kafka, "weir_live", "at-least-once");
    let output = pipeline.sink.as_ref().unwrap().topic.clone();
    let stages = Stages::load(engine, &pipeline).unwrap();
    let total = (rate * secs).round() as usize;
    let first_id = 1_000_000_000_usize;
    let metrics = Arc::new(Metrics::default());
    let mut recv = recvlogical(db, "recv_live", None);
    let mut recv_out = recv.stdout.take().unwrap();
    let stream = Mutex::new(Stream::default());
    let read_back: Mutex<Vec<(i64, i64)>> = Mutex::default();
    let writing = AtomicBool::new(true);
    let mut warm_up_end = 0;
    let mut sent = Duration::ZERO;
    thread::scope(|s| {
        s.spawn(|| {
            let mut chunk = vec![0; 1 << 16];
            while let Ok(n @ 1..) = recv_out.read(&mut chunk) {
                stream.lock().unwrap().feed(&chunk[..n], now_micros());
            }
        });
        s.spawn(|| *read_back.lock().unwrap() = read_latencies(kafka, &output, total, &writing));
        with_weir(&pipeline, &stages, metrics.clone(), |_| {
            let writer = Database::connect(db.port, &db.name);
            // Let both readers be under way (weir connects and makes its topics) first.
            thread::sleep(Duration::from_secs(2));
            let started = Instant::now();
            warm_up_end = now_micros() + 1_000_000;
            for i in 0..total {
                let due = started + Duration::from_secs_f64(i as f64 / rate);
                thread::sleep(due.saturating_duration_since(Instant::now()));
                writer.execute(&format!(
                    "INSERT INTO orders (id, customer, amount, status) VALUES ({}, 7, 12.5, 'new')",
                    first_id + i
                ));
            }
            sent = started.elapsed();
            let deadline = Instant::now() + Duration::from_secs(60);
            while metrics.snapshot().delivered < total as u64 && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            thread::sleep(Duration::from_secs(1));
            writing.store(false, Relaxed);
            true
        });
        let _ = recv.kill();
        let _ = recv.wait();
    });
    let stream = stream.into_inner().unwrap();
    let warm = |pairs: &[(i64, i64)], scale: f64| -> Vec<f64> {
        pairs
            .iter()
            .filter(|(committed, _)| *committed >= warm_up_end)
            .map(|(committed, arrived)| (arrived - committed) as f64 / scale)
            .collect()
    };
    let histogram = metrics.latency.snapshot();
    let quantile = |q| histogram.quantile(q).map_or(f64::NAN, |s| s * 1e3);
    println!(
        "latency: {total} one-row transactions committed at {:.0}/s (of {rate:.0}/s asked); \
         commit -> arrival, first second left out",
        total as f64 / sent.as_secs_f64()
    );
    println!(
        "  pg_recvlogical, commit -> received          {}",
        percentiles(warm(&stream.commits, 1e3))
    );
    println!(
        "  weir, commit -> acknowledged by Kafka       p50 {:>6.1} ms  p99 {:>6.1} ms  (weir's histogram, {} records, the warm-up included)",
        quantile(0.5),
        quantile(0.99),
        histogram.buckets.iter().sum::<u64>()
    );
    let checkpoints = metrics.checkpoints();
    let took: Vec<f64> = checkpoints.iter().map(|c| c.seconds * 1e3).collect();
    println!(
        "  weir's checkpoints (position recorded, slot confirmed): {} of mean {:.1} ms, max {:.1} ms",
        took.len(),
        took.iter().sum::<f64>() / took.len().max(1) as f64,
        took.iter().copied().fold(0.0, f64::max)
    );
    let read_back = read_back.into_inner().unwrap();
    println!(
        "  weir, commit -> read back from Kafka        {}",
        percentiles(warm(&read_back, 1e3))
    );
    assert_eq!(stream.rows, total as u64, "pg_recvlogical missed rows");
    assert_eq!(read_back.len(), total, "weir's outputs read back");
}

/// Read `topic` from the start while `running`: per record, its timestamp and its arrival (µs
/// since the Unix epoch), until `expected` arrived and `running` is over.
fn read_latencies(
    kafka: &Kafka,
    topic: &str,
    expected: usize,
    running: &AtomicBool,
) -> Vec<(i64, i64)> {
    let consumer: BaseConsumer = kafka
        .config()
        .set("group.id", unique("cdc-reader"))
        .set("enable.auto.commit", "false")
        // This broker answers a fetch that finds nothing new only when the wait is over.
        .set("fetch.wait.max.ms", "10")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&list).unwrap();
    let mut seen = Vec::with_capacity(expected);
    while running.load(Relaxed) || seen.len() < expected {
        match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => {
                let ts = m.timestamp().to_millis().expect("a timestamp");
                seen.push((ts * 1000, now_micros()));
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None if !running.load(Relaxed) => break,
            None => {}
        }
    }
    seen
}
