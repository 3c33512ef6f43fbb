//! A real Kafka-protocol broker for end-to-end tests, and plain rdkafka clients to feed it and
//! read it back.
//!
//! The broker is the project's `scripts/kafka-broker.sh` (Tansu), started once per test binary
//! on its own port (`WEIR_TEST_KAFKA_PORT`, default 19092) so it never meets a developer's broker.
//! Every test uses topics and groups of its own, so tests run in parallel against one broker.

#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    io::Read,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        OnceLock,
    },
    time::{Duration, Instant},
};

use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer},
    message::{Header, Headers, Message, OwnedHeaders},
    producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer},
    Offset, TopicPartitionList,
};

use super::root;

#[derive(Clone)]
pub struct Kafka {
    pub port: u16,
    pub brokers: String,
}

/// The test broker, started on first use.
pub fn kafka() -> &'static Kafka {
    static KAFKA: OnceLock<Kafka> = OnceLock::new();
    KAFKA.get_or_init(|| {
        let port: u16 = std::env::var("WEIR_TEST_KAFKA_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(19092);
        broker_script(port, "start");
        Kafka {
            port,
            brokers: format!("127.0.0.1:{port}"),
        }
    })
}

/// Run `scripts/kafka-broker.sh COMMAND` for the broker on `port`; panics if it fails.
pub fn broker_script(port: u16, command: &str) {
    let out = run_broker_script(port, command);
    assert!(
        out.status.success(),
        "kafka-broker.sh {command} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run_broker_script(port: u16, command: &str) -> std::process::Output {
    Command::new(root().join("scripts/kafka-broker.sh"))
        .arg(command)
        .env("KAFKA_PORT", port.to_string())
        .output()
        .expect("run scripts/kafka-broker.sh")
}

/// Whether the project's broker on `port` is running.
pub fn broker_running(port: u16) -> bool {
    run_broker_script(port, "status").status.success()
}

/// The process id of the project's broker on `port`, from the script's pid file.
pub fn broker_pid(port: u16) -> Option<u32> {
    let home = std::env::var_os("KAFKA_HOME").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/kafka-broker"),
        PathBuf::from,
    );
    std::fs::read_to_string(home.join(format!("broker-{port}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The broker a benchmark runs against: `$KAFKA_BROKERS` when set, else the project's broker on
/// `$KAFKA_PORT` (default `default_port`), started unless it runs already. The port comes back
/// when this call started the broker, for the benchmark to stop it at its end.
pub fn bench_broker(default_port: u16) -> (Kafka, Option<u16>) {
    if let Ok(brokers) = std::env::var("KAFKA_BROKERS") {
        return (Kafka { port: 0, brokers }, None);
    }
    let port: u16 = super::env_or("KAFKA_PORT", default_port);
    let running = broker_running(port);
    broker_script(port, "start");
    let kafka = Kafka {
        port,
        brokers: format!("127.0.0.1:{port}"),
    };
    (kafka, (!running).then_some(port))
}

/// A name no other test (or earlier run against the same broker) uses.
pub fn unique(name: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{name}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A record to produce.
#[derive(Debug, Clone, Default)]
pub struct In {
    pub key: Option<String>,
    pub value: Vec<u8>,
    /// No value at all (a tombstone), whatever `value` holds.
    pub tombstone: bool,
    pub headers: Vec<(String, String)>,
    pub partition: Option<i32>,
    pub timestamp: Option<i64>,
}

/// A record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Out {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub timestamp: Option<i64>,
}

/// One test's topics and consumer group on a broker, named after the test and unique to the
/// run, and a scratch directory for its pipeline file: a source and a sink of `partitions`
/// partitions each, a dead-letter topic of one.
pub struct Topics {
    pub kafka: Kafka,
    pub dir: tempfile::TempDir,
    pub source: String,
    pub sink: String,
    pub dlq: String,
    pub group: String,
    pub partitions: i32,
}

impl Topics {
    /// On the shared test broker.
    pub fn new(name: &str, partitions: i32) -> Topics {
        Topics::on(kafka(), name, partitions)
    }

    /// On broker `k`.
    pub fn on(k: &Kafka, name: &str, partitions: i32) -> Topics {
        let t = Topics {
            kafka: k.clone(),
            dir: super::scratch(),
            source: unique(&format!("{name}-in")),
            sink: unique(&format!("{name}-out")),
            dlq: unique(&format!("{name}-dlq")),
            group: unique(&format!("{name}-group")),
            partitions,
        };
        k.create_topic(&t.source, partitions);
        k.create_topic(&t.sink, partitions);
        k.create_topic(&t.dlq, 1);
        t
    }
}

impl Topics {
    /// A pipeline file from the source topic to the sink topic, in the group, with sessions of
    /// 6 s and checkpoints every 200 ms, then `rest` (stages and other tables).
    pub fn write_pipeline(&self, rest: &str) -> PathBuf {
        let text = format!(
            r#"
[source]
brokers = "{brokers}"
topics = ["{source}"]
group = "{group}"
kafka = {{ "session.timeout.ms" = 6000 }}

[sink]
topic = "{sink}"

[delivery]
checkpoint_interval = "200ms"

{rest}
"#,
            brokers = self.kafka.brokers,
            source = self.source,
            group = self.group,
            sink = self.sink,
        );
        let path = self.dir.path().join("pipeline.toml");
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// An output record's value, which must be JSON.
pub fn json_of(out: &Out) -> serde_json::Value {
    serde_json::from_str(out.value.as_deref().expect("a value")).expect("JSON value")
}

impl Kafka {
    pub fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        c
    }

    pub fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = self.config().create().unwrap();
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let results = rt
            .block_on(admin.create_topics(&[topic], &AdminOptions::new()))
            .expect("create topic");
        for r in results {
            r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
        }
    }

    /// Produce `records` to `topic` and wait until every one is acknowledged.
    pub fn produce(&self, topic: &str, records: &[In]) {
        let producer: ThreadedProducer<DefaultProducerContext> = self
            .config()
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "1000000")
            .create()
            .unwrap();
        for r in records {
            let mut rec = BaseRecord::<str, [u8]>::to(topic);
            if !r.tombstone {
                rec = rec.payload(&r.value);
            }
            if let Some(k) = &r.key {
                rec = rec.key(k.as_str());
            }
            if let Some(p) = r.partition {
                rec = rec.partition(p);
            }
            if let Some(t) = r.timestamp {
                rec = rec.timestamp(t);
            }
            if !r.headers.is_empty() {
                let h = r.headers.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
                    h.insert(Header {
                        key: k,
                        value: Some(v.as_bytes()),
                    })
                });
                rec = rec.headers(h);
            }
            let mut rec = rec;
            loop {
                match producer.send(rec) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        rec = back;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
        }
        producer.flush(Duration::from_secs(60)).expect("flush");
    }

    /// Read `topic` from the start until `expected` records arrived and nothing more came for a
    /// second (to catch extra records), or until `timeout`. Sorted by partition and offset.
    pub fn read(&self, topic: &str, expected: usize, timeout: Duration) -> Vec<Out> {
        let consumer: BaseConsumer = self
            .config()
            .set("group.id", unique("reader"))
            .set("enable.auto.commit", "false")
            // Everything in the log, also records of transactions not (or not yet) committed:
            // the test broker's last stable offset lags committed transactions by up to minutes,
            // so librdkafka's default read_committed stalls; what transactions committed is
            // what `read_committed` below decides.
            .set("isolation.level", "read_uncommitted")
            .create()
            .unwrap();
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        let mut list = TopicPartitionList::new();
        for p in md.topics()[0].partitions() {
            list.add_partition_offset(topic, p.id(), Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&list).unwrap();
        let started = Instant::now();
        let mut last = Instant::now();
        let mut out = Vec::new();
        while started.elapsed() < timeout {
            if out.len() >= expected && last.elapsed() > Duration::from_secs(1) {
                break;
            }
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    last = Instant::now();
                    let text =
                        |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
                    out.push(Out {
                        partition: m.partition(),
                        offset: m.offset(),
                        key: text(m.key()),
                        value: text(m.payload()),
                        headers: m.headers().map_or_else(BTreeMap::new, |h| {
                            h.iter()
                                .map(|h| (h.key.to_string(), text(h.value).unwrap_or_default()))
                                .collect()
                        }),
                        timestamp: m.timestamp().to_millis(),
                    });
                }
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                None => {}
            }
        }
        out.sort_by_key(|o| (o.partition, o.offset));
        out
    }

    /// Every committed record of `topic`, as a read_committed consumer must see it (the test
    /// broker's own read_committed also delivers records of aborted transactions), in partition
    /// and offset order; headers are left out.
    pub fn read_committed(&self, topic: &str, partitions: i32) -> Vec<Out> {
        let mut out = Vec::new();
        for partition in 0..partitions {
            let read = weir::kafka::log_reader::read_committed(
                &self.brokers,
                topic,
                partition,
                0,
                Duration::from_secs(30),
            )
            .unwrap_or_else(|e| panic!("reading {topic}[{partition}]: {e}"));
            let text = |b: Option<Vec<u8>>| b.map(|b| String::from_utf8_lossy(&b).into_owned());
            for r in read.records {
                out.push(Out {
                    partition,
                    offset: r.offset,
                    key: text(r.key),
                    value: text(r.value),
                    headers: BTreeMap::new(),
                    timestamp: Some(r.timestamp),
                });
            }
        }
        out
    }

    /// [`read_committed`](Self::read_committed) again until it has at least `expected` records
    /// or `timeout` passed; what it read last.
    pub fn wait_read_committed(
        &self,
        topic: &str,
        partitions: i32,
        expected: usize,
        timeout: Duration,
    ) -> Vec<Out> {
        let mut out = Vec::new();
        poll_until(timeout, || {
            out = self.read_committed(topic, partitions);
            out.len() >= expected
        });
        out
    }

    /// Wait until the run of `group` has finished `ends` (one past the last offset of each
    /// partition) of `topic`, by where it resumes: the group's committed offsets at least once,
    /// the positions its last committed transactions recorded exactly once ([`positions`]).
    /// False if `timeout` passed first.
    ///
    /// [`positions`]: Self::positions
    pub fn wait_finished(
        &self,
        group: &str,
        topic: &str,
        ends: &[i64],
        exactly_once: bool,
        timeout: Duration,
    ) -> bool {
        let partitions = ends.len() as i32;
        poll_until(timeout, || {
            let resumes = if exactly_once {
                self.positions(group, topic, partitions)
            } else {
                self.committed(group, topic, partitions)
            };
            resumes == ends
        })
    }

    /// Exactly once: the position of each partition of `topic` as the last committed
    /// transaction of `group` recorded it (-1: none). This, not the group's committed offsets,
    /// is where an exactly-once pipeline resumes: the test broker defers and can lose group
    /// offsets sent to transactions (see `weir::kafka::positions::offsets_topic`).
    pub fn positions(&self, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
        (0..partitions)
            .map(|partition| {
                weir::kafka::positions::recorded_position(
                    &self.brokers,
                    group,
                    topic,
                    partition,
                    Duration::from_secs(30),
                )
                .ok() // the offsets topic is not created yet
                .flatten()
                .unwrap_or(-1)
            })
            .collect()
    }

    /// The group's committed offset of each partition of `topic` (-1: none).
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
        let consumer: BaseConsumer = self.config().set("group.id", group).create().unwrap();
        let mut list = TopicPartitionList::new();
        for p in 0..partitions {
            list.add_partition(topic, p);
        }
        let committed = consumer
            .committed_offsets(list, Duration::from_secs(10))
            .unwrap();
        (0..partitions)
            .map(
                |p| match committed.find_partition(topic, p).unwrap().offset() {
                    Offset::Offset(o) => o,
                    _ => -1,
                },
            )
            .collect()
    }
}

/// Check `done` every half second until it holds (true) or `timeout` passed (false).
fn poll_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    true
}

/// One past the last offset of each partition in `records` (counted by reading: the test
/// broker's watermarks are not reliable).
pub fn partition_ends(records: &[Out], partitions: i32) -> Vec<i64> {
    let mut ends = vec![0i64; partitions as usize];
    for r in records {
        ends[r.partition as usize] = ends[r.partition as usize].max(r.offset + 1);
    }
    ends
}

/// `weir run` as a child process, its stderr collected in a file.
pub struct Weir {
    child: Child,
    log: PathBuf,
}

impl Weir {
    pub fn start(weir: &Path, pipeline: &Path) -> Weir {
        Weir::start_with(weir, pipeline, &[])
    }

    /// `weir run PIPELINE ARGS…`, its admin server on a port of its own unless `ARGS` say
    /// where (see [`Weir::admin`]).
    pub fn start_with(weir: &Path, pipeline: &Path, args: &[&str]) -> Weir {
        let filter = std::env::var("WEIR_TEST_LOG").unwrap_or_else(|_| "warn,weir=debug".into());
        Weir::start_logging(weir, pipeline, args, &filter)
    }

    /// [`Weir::start_with`], logging what `filter` (`WEIR_LOG`) lets through.
    pub fn start_logging(weir: &Path, pipeline: &Path, args: &[&str], filter: &str) -> Weir {
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let log = pipeline.with_extension(format!("{}.log", RUNS.fetch_add(1, Ordering::Relaxed)));
        let admin: &[&str] = if args.contains(&"--admin") {
            &[]
        } else {
            &["--admin", "127.0.0.1:0"]
        };
        let child = Command::new(weir)
            .arg("run")
            .arg(pipeline)
            .args(args)
            .args(admin)
            .env("WEIR_LOG", filter)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start weir run");
        Weir { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The admin server's address, as the log says once it listens.
    pub fn admin(&mut self) -> String {
        const SAID: &str = "admin server on http://";
        self.wait_for_log(SAID, Duration::from_secs(30));
        let log = self.log();
        let at = &log[log.find(SAID).unwrap() + SAID.len()..];
        at.split(": ").next().unwrap().to_string()
    }

    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            f.read_to_string(&mut text).ok();
        }
        text
    }

    /// Send `signal` (e.g. "TERM", "STOP").
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} {}", self.pid());
    }

    /// Wait up to `timeout` for the process to exit by itself; its exit code (None: killed by a
    /// signal), or panics with the log if it did not exit.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if started.elapsed() > timeout {
                let stacks = stacks(self.pid());
                self.child.kill().ok();
                panic!(
                    "weir run did not exit within {timeout:?}; log:\n{}\n{stacks}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM, then the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        self.signal("TERM");
        self.wait(Duration::from_secs(60))
    }

    /// Wait until the log contains `text`.
    pub fn wait_for_log(&mut self, text: &str, timeout: Duration) {
        let started = Instant::now();
        while !self.log().contains(text) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "weir run exited ({status}) before logging {text:?}; log:\n{}",
                    self.log()
                );
            }
            assert!(
                started.elapsed() < timeout,
                "weir run did not log {text:?} within {timeout:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Weir {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.child.kill().ok();
            self.child.wait().ok();
        }
    }
}

/// A broker of one test's own on `port`, for faults that must not disturb other tests:
/// paused with SIGSTOP (a broker that stops answering, as in a long GC pause or a network
/// partition) and stopped when dropped.
pub struct Dedicated {
    pub kafka: Kafka,
}

impl Dedicated {
    pub fn start(port: u16) -> Dedicated {
        broker_script(port, "start");
        Dedicated {
            kafka: Kafka {
                port,
                brokers: format!("127.0.0.1:{port}"),
            },
        }
    }

    fn pid(&self) -> String {
        let port = self.kafka.port;
        broker_pid(port)
            .unwrap_or_else(|| panic!("no pid file for the broker on port {port}"))
            .to_string()
    }

    fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} broker");
    }

    pub fn pause(&self) {
        self.signal("STOP");
    }

    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// Restart the broker. It comes back with nothing: no topics, no groups, no offsets.
    pub fn restart(&self) {
        broker_script(self.kafka.port, "restart");
    }
}

impl Drop for Dedicated {
    fn drop(&mut self) {
        // A test may have stopped it already.
        if let Some(pid) = broker_pid(self.kafka.port) {
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(pid.to_string())
                .status();
        }
        broker_script(self.kafka.port, "stop");
    }
}

/// Resident memory of process `pid` in bytes.
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kb * 1024
}

/// `GET http://AT/PATH`: the status code and body.
pub fn http_get(at: &str, path: &str) -> (u16, String) {
    let addr = at.parse().expect("an admin server address");
    weir::admin::get(addr, path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// The value of the Prometheus series `series` (name and labels, as written) in `text`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Every thread's stack of the process `pid`, through gdb where it is installed: what a run that
/// does not stop is waiting for. gdb gets a minute (`timeout`): it can hang on a process in an
/// uninterruptible wait.
fn stacks(pid: u32) -> String {
    let pid = pid.to_string();
    let gdb = [
        "-nx",
        "-batch",
        "-iex",
        "set debuginfod enabled off",
        "-p",
        &pid,
    ];
    let out = Command::new("timeout")
        .args(["-k", "5", "60", "gdb"])
        .args(gdb)
        .args(["-ex", "thread apply all bt"])
        .stdin(std::process::Stdio::null())
        .output();
    match out {
        Ok(out) => format!(
            "threads (gdb, {}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => format!("(no thread stacks: {e})"),
    }
}
