//! `weir run`: a pipeline against Kafka, at least once or exactly once.
//!
//! One consumer thread polls, groups records per partition into batches and hands each batch to
//! the worker that owns its partition (one worker per core, each with its own instances of every
//! stage), so partitions run in parallel and each keeps its order. Workers send outputs to the
//! sink with the batch's [`Acks`]; the consumer thread commits, every checkpoint interval, the
//! offsets whose outputs are all acknowledged. Queues between the steps are bounded: a slow sink
//! blocks the workers, full worker queues block the consumer thread, and librdkafka's bounded
//! prefetch then stops fetching.
//!
//! Exactly once, each partition has a transactional producer instead, and the worker that owns
//! the partition commits its outputs, state changes and offset in one transaction every
//! checkpoint interval ([`Shared::checkpoint`]); the consumer commits nothing itself.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicI64, Ordering},
        Arc, Mutex, OnceLock,
    },
    thread,
    time::{Duration, Instant},
};

use crossbeam_channel::{Receiver, SendTimeoutError, Sender};
use rdkafka::{
    consumer::{CommitMode, Consumer as _, Rebalance},
    error::{KafkaError, RDKafkaErrorCode},
    metadata::Metadata,
    Offset, TopicPartitionList,
};

use crate::{
    checkpoint::{Acks, Partition, StageState},
    config::Guarantee,
    config::{ErrorPolicy, Pipeline},
    engine::{Header, PluginError, Record},
    metrics::{Metrics, Snapshot},
    pipeline::{BatchOutput, Chain, Stages},
    reload::{Live, LiveChain},
    sink::{ChangelogMarks, Fatal, SendError, Sink},
    source::{self, Consumer},
    state::StateStore,
    window::{self, Clock, Delivered, LateOutput},
};

/// Why a run ended other than by a stop request.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("{what}: {cause}")]
    Kafka { what: String, cause: KafkaError },
    #[error("{0}")]
    Topic(String),
    /// A record failed under `policy = "fail"`, or a delivery failed: offsets were committed up
    /// to (not including) the first record whose output is not safely in the sink.
    #[error("pipeline stopped: {0}")]
    Stopped(String),
}

/// How to run.
#[derive(Clone)]
pub struct RunOptions {
    /// Threads running the chain; partitions are spread over them.
    pub workers: usize,
    /// Set it to drain, commit and return.
    pub stop: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
    /// How often to log progress (none: never).
    pub report_every: Option<Duration>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            workers: thread::available_parallelism().map_or(2, |n| n.get()),
            stop: Arc::default(),
            metrics: Arc::default(),
            report_every: Some(Duration::from_secs(10)),
        }
    }
}

/// Bounded queue of batches in front of each worker. Deep enough that the two workers of a
/// 2-core machine run together (+19% records/s in the Kafka benchmark over a queue of 4:
/// librdkafka hands out fetched records partition by partition, in runs of thousands, and a full
/// queue blocks the consumer thread). A revocation does not wait for the queue: a revoked
/// partition's queued batches are skipped and read again by its next owner.
const WORKER_QUEUE: usize = 64;
/// Longest wait for the sink on a rebalance or at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// What a worker is asked to do.
enum Work {
    Batch(Batch),
    /// Exactly once: the partition is being revoked; commit its open transaction (or, when it
    /// was lost to another member, leave it to be aborted by that one), then say so.
    Close {
        partition: Arc<Partition>,
        commit: bool,
        done: Sender<()>,
    },
    /// Finish: commit (or, after a fatal error, abort) what is open, and exit.
    Stop,
}

/// A batch of one partition on its way to a worker.
struct Batch {
    partition: Arc<Partition>,
    records: Vec<Record>,
    next_offset: i64,
}

/// What the consumer thread, the rebalance callback and the workers share.
struct Shared {
    assigned: Mutex<Assigned>,
    sink: Sink,
    sink_topic: String,
    dead_letters: Option<String>,
    policy: ErrorPolicy,
    state: Option<StateContext>,
    /// Exactly once: what a partition's transactional producer is made from.
    exactly_once: Option<ExactlyOnce>,
    workers: OnceLock<Vec<Sender<Work>>>,
    /// Window stages' watermarks: assigned partitions hold them back, revoked ones stop to.
    clocks: Vec<(usize, Arc<Clock>)>,
    fatal: Arc<Fatal>,
    metrics: Arc<Metrics>,
}

/// Exactly once: one transactional producer per source partition, whose transactions carry the
/// partition's outputs, changelog records and source offset (Kafka Streams' first EOS design:
/// fencing by partition keeps working when a crashed instance never comes back).
///
/// The offset goes twice into each transaction: to the group (`send_offsets_to_transaction`, for
/// lag monitoring and Kafka's tools) and as a record in the pipeline's offsets topic, which is
/// where a new owner resumes from, as Flink keeps source positions in its own checkpoints. A
/// record commits or aborts with the outputs by the log's own markers, on any broker; group
/// offsets commit with them on Kafka, but the test broker (Tansu 0.6) defers a transaction's
/// group offsets until every transaction overlapping it in an output partition has ended, and
/// loses them if their producer dies first — with a producer per partition, nearly always.
struct ExactlyOnce {
    brokers: String,
    properties: crate::config::KafkaProperties,
    group: String,
    /// The consumer's group metadata as of the last rebalance, for `send_offsets_to_transaction`.
    group_metadata: Mutex<Option<Arc<rdkafka::consumer::ConsumerGroupMetadata>>>,
    /// Partition N holds the positions of source partitions N, keyed by source topic.
    offsets_topic: String,
    /// Changelog marks, with the offsets topic's: the sink counts writes to them as bookkeeping,
    /// not as delivered records.
    marks: ChangelogMarks,
}

/// The topic where an exactly-once pipeline in consumer group `group` records, in each
/// transaction, the source position the transaction's outputs reach.
pub fn offsets_topic(group: &str) -> String {
    format!("{group}-offsets")
}

/// Where the last committed transaction of exactly-once group `group` recorded that
/// `topic`/`partition` resumes (none: no transaction recorded one yet).
pub fn recorded_position(
    brokers: &str,
    group: &str,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> Result<Option<i64>, crate::committed::CommittedError> {
    let mut position = None;
    crate::committed::read_committed_with(
        brokers,
        &offsets_topic(group),
        partition,
        0,
        timeout,
        |record| {
            if record.key.as_deref() == Some(topic.as_bytes()) {
                position = record
                    .value
                    .as_deref()
                    .and_then(|v| std::str::from_utf8(v).ok()?.parse::<i64>().ok());
            }
        },
    )?;
    Ok(position)
}

/// How long reading a partition's recorded position may take before the assignment fails.
const POSITION_TIMEOUT: Duration = Duration::from_secs(30);

/// Keyed state of the stateful stages: the store, their changelog topics, and where the sink
/// reports changelog acknowledgements.
struct StateContext {
    store: Arc<StateStore>,
    /// Stage index, stage name, changelog topic.
    stages: Vec<(usize, String, String)>,
    marks: ChangelogMarks,
    /// Where the changelogs live: with the sink, so one producer (one transaction) writes both.
    brokers: String,
}

/// The changelog topic of `stage` in consumer group `group`, named as Kafka Streams names its
/// own.
pub fn changelog_topic(group: &str, stage: &str) -> String {
    format!("{group}-{stage}-changelog")
}

/// Open the state store and make sure every stateful stage has its changelog topic, with at
/// least as many partitions as the widest source topic (changelog partition N holds the state
/// of source partition N).
fn prepare_state(
    pipeline: &Pipeline,
    stages: &Stages,
    group: &str,
    brokers: &str,
    partitions: usize,
) -> Result<Option<StateContext>, RunError> {
    let stateful = stages.stateful();
    if stateful.is_empty() {
        return Ok(None);
    }
    let store = StateStore::open(&pipeline.state_dir(group), pipeline.state_cache_bytes)?;
    let stages: Vec<(usize, String, String)> = stateful
        .into_iter()
        .map(|(i, name)| {
            let topic = changelog_topic(group, &name);
            (i, name, topic)
        })
        .collect();
    let topics: Vec<&str> = stages.iter().map(|(_, _, t)| t.as_str()).collect();
    ensure_changelogs(brokers, &topics, partitions)?;
    let marks = topics
        .iter()
        .map(|t| (t.to_string(), unmarked(partitions)))
        .collect();
    Ok(Some(StateContext {
        store,
        stages,
        marks,
        brokers: brokers.to_string(),
    }))
}

/// One mark per partition of a changelog, none acknowledged yet.
fn unmarked(partitions: usize) -> Vec<Arc<AtomicI64>> {
    (0..partitions)
        .map(|_| Arc::new(AtomicI64::new(-1)))
        .collect()
}

/// Create the changelog topics that do not exist yet (compacted: only the latest value of each
/// key matters), and check that those that do are wide enough.
fn ensure_changelogs(brokers: &str, topics: &[&str], partitions: usize) -> Result<(), RunError> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let kafka = |what: String| move |cause| RunError::Kafka { what, cause };
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(kafka(format!("admin client for {brokers}")))?;
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))
        .map_err(kafka(format!("metadata of {brokers}")))?;
    let mut missing = Vec::new();
    for topic in topics {
        let found = metadata
            .topics()
            .iter()
            .find(|t| t.name() == *topic && t.error().is_none());
        match found {
            Some(t) if t.partitions().len() < partitions => {
                return Err(RunError::Topic(format!(
                    "changelog topic `{topic}` has {} partitions, fewer than the source's \
                     {partitions}",
                    t.partitions().len()
                )))
            }
            Some(_) => {}
            None => missing.push(
                NewTopic::new(topic, partitions as i32, TopicReplication::Fixed(-1))
                    .set("cleanup.policy", "compact"),
            ),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| RunError::Topic(format!("cannot create changelog topics: {e}")))?;
    let results = runtime
        .block_on(admin.create_topics(&missing, &AdminOptions::new()))
        .map_err(kafka("creating changelog topics".into()))?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!("created changelog topic `{topic}`"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(RunError::Topic(format!(
                    "cannot create changelog topic `{topic}`: {code}"
                )))
            }
        }
    }
    Ok(())
}

/// What [`Shared::take_over`] gets ready for a newly assigned partition.
struct Takeover {
    transaction: Option<Sink>,
    /// Where to start reading, when the pipeline keeps the position itself.
    position: Option<i64>,
    states: Vec<StageState>,
}

#[derive(Default)]
struct Assigned {
    partitions: HashMap<(String, i32), Arc<Partition>>,
    /// Partitions per worker, to give a new one to the least loaded.
    load: Vec<usize>,
}

/// Run `pipeline` (its stages already loaded as `stages`) until `options.stop` is set or a fatal
/// error; returns the final counts.
pub fn run(
    pipeline: &Pipeline,
    stages: &Stages,
    options: RunOptions,
) -> Result<Snapshot, RunError> {
    run_reloading(pipeline, stages, None, options)
}

/// [`run`], with the workers moving to each version of the stages that `live` publishes (hot
/// reload, see [`crate::reload`]) between batches.
pub fn run_reloading(
    pipeline: &Pipeline,
    stages: &Stages,
    live: Option<Arc<Live>>,
    options: RunOptions,
) -> Result<Snapshot, RunError> {
    let (source, sink_config) = pipeline.kafka()?;
    let workers = options.workers.max(1);
    let fatal = Arc::new(Fatal::default());
    let metrics = options.metrics.clone();
    let sink_brokers = sink_config.brokers.as_deref().unwrap_or(&source.brokers);

    // The rebalance callback needs what is built below; no rebalance can happen before the
    // subscription, which comes after it is set.
    let slot: Arc<OnceLock<Arc<Shared>>> = Arc::default();
    let on_rebalance = {
        let slot = slot.clone();
        move |consumer: &Consumer, rebalance: &Rebalance<'_>, after: bool| {
            if let Some(shared) = slot.get() {
                if after {
                    // Only now does the group metadata carry the new generation: offsets sent
                    // to a transaction with the old one are refused (or, on some brokers,
                    // silently dropped).
                    shared.refresh_group_metadata(consumer);
                } else {
                    return shared.rebalance(consumer, rebalance);
                }
            }
            Vec::new()
        }
    };
    let consumer = source::consumer(source, on_rebalance).map_err(|cause| RunError::Kafka {
        what: format!("{}: [source] settings", pipeline.path.display()),
        cause,
    })?;

    // Reach the brokers and check every topic before anything starts.
    let Some(metadata) = wait_for_brokers(&consumer, &source.brokers, &options.stop) else {
        return Ok(metrics.snapshot());
    };
    let mut partitions = 0;
    for topic in &source.topics {
        partitions = partitions.max(require_topic(&metadata, topic, "source", &source.brokers)?);
    }
    let state = prepare_state(pipeline, stages, &source.group, sink_brokers, partitions)?;
    let marks = state
        .as_ref()
        .map_or_else(Default::default, |s| s.marks.clone());
    let sink = Sink::new(
        sink_brokers,
        &sink_config.kafka,
        marks,
        metrics.clone(),
        fatal.clone(),
    )
    .map_err(|cause| RunError::Kafka {
        what: format!("{}: [sink] settings", pipeline.path.display()),
        cause,
    })?;
    let dead_letters = (pipeline.errors.policy == ErrorPolicy::DeadLetter)
        .then(|| pipeline.errors.topic.clone())
        .flatten();
    let sink_metadata;
    let sink_md = if sink_brokers == source.brokers {
        &metadata
    } else {
        sink_metadata =
            sink.metadata(Duration::from_secs(10))
                .map_err(|cause| RunError::Kafka {
                    what: format!("sink brokers {sink_brokers}"),
                    cause,
                })?;
        &sink_metadata
    };
    require_topic(sink_md, &sink_config.topic, "sink", sink_brokers)?;
    if let Some(topic) = &dead_letters {
        require_topic(sink_md, topic, "dead-letter", sink_brokers)?;
    }
    for stage in &pipeline.stages {
        if let Some(LateOutput::Topic(topic)) = stage.window.as_ref().map(|w| &w.late) {
            let what = format!("stage `{}` late", stage.name);
            require_topic(sink_md, topic, &what, sink_brokers)?;
        }
    }
    let exactly_once = match pipeline.delivery.guarantee {
        Guarantee::ExactlyOnce => {
            let offsets_topic = offsets_topic(&source.group);
            ensure_changelogs(sink_brokers, &[&offsets_topic], partitions)?;
            let mut marks = state
                .as_ref()
                .map_or_else(Default::default, |s| s.marks.clone());
            marks.insert(offsets_topic.clone(), unmarked(partitions));
            Some(ExactlyOnce {
                brokers: sink_brokers.to_string(),
                properties: sink_config.kafka.clone(),
                group: source.group.clone(),
                group_metadata: Mutex::new(None),
                offsets_topic,
                marks,
            })
        }
        Guarantee::AtLeastOnce => None,
    };
    let shared = Arc::new(Shared {
        assigned: Mutex::new(Assigned {
            partitions: HashMap::new(),
            load: vec![0; workers],
        }),
        sink,
        sink_topic: sink_config.topic.clone(),
        dead_letters,
        policy: pipeline.errors.policy,
        state,
        exactly_once,
        workers: OnceLock::new(),
        clocks: stages.clocks(),
        fatal: fatal.clone(),
        metrics: metrics.clone(),
    });
    let _ = slot.set(shared.clone());

    // One chain per worker, all started before consuming so a bad config fails here.
    let mut senders = Vec::with_capacity(workers);
    let mut handles = Vec::with_capacity(workers);
    if let Some(live) = &live {
        live.set_workers(workers);
        live.report_to(metrics.clone());
    }
    for id in 0..workers {
        let chain = LiveChain::start(stages, live.as_ref())?;
        let (tx, rx) = crossbeam_channel::bounded::<Work>(WORKER_QUEUE);
        let shared = shared.clone();
        let interval = pipeline.delivery.checkpoint_interval;
        let handle = thread::Builder::new()
            .name(format!("weir-worker-{id}"))
            .spawn(move || work(id, chain, rx, &shared, interval))
            .expect("spawn a worker thread");
        senders.push(tx);
        handles.push(handle);
    }
    let _ = shared.workers.set(senders);

    let topics: Vec<&str> = source.topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .map_err(|cause| RunError::Kafka {
            what: format!("subscribing to {topics:?}"),
            cause,
        })?;
    tracing::info!(
        "running {} ({} stages, {workers} workers): {} -> {}",
        pipeline.path.display(),
        pipeline.stages.len(),
        source.topics.join(","),
        shared.sink_topic
    );

    let mut poller = Poller {
        consumer: &consumer,
        shared: &shared,
        batch_size: source.batch_size,
        pending: Vec::new(),
    };
    poller.run(
        &options.stop,
        pipeline.delivery.checkpoint_interval,
        options.report_every,
    );

    // Drain: what the workers have gets processed and delivered, then committed. Batches not
    // yet handed over are dropped; their offsets are not committed, so the next run reads them.
    drop(poller);
    for worker in shared.workers.get().into_iter().flatten() {
        let _ = worker.send(Work::Stop);
    }
    for handle in handles {
        if handle.join().is_err() {
            fatal.set("a worker thread panicked".into());
        }
    }
    let in_flight = shared.sink.in_flight();
    if in_flight > 0 {
        tracing::info!("waiting for the sink to acknowledge {in_flight} records");
    }
    let timeout = if fatal.is_set() {
        Duration::from_secs(10)
    } else {
        DRAIN_TIMEOUT
    };
    if let Err(e) = shared.sink.flush(timeout) {
        fatal.set(format!(
            "sink: {e} while draining; uncommitted records will be read again"
        ));
    }
    shared.commit_all(&consumer);
    drop(consumer); // leaves the group (a final revoke commits nothing new)
    let snapshot = metrics.snapshot();
    match fatal.get() {
        Some(reason) => Err(RunError::Stopped(reason)),
        None => Ok(snapshot),
    }
}

/// Fetch cluster metadata, retrying with backoff while the brokers are unreachable; `None` if
/// stopped meanwhile.
fn wait_for_brokers(consumer: &Consumer, brokers: &str, stop: &AtomicBool) -> Option<Metadata> {
    let mut attempt = 0;
    loop {
        match consumer.fetch_metadata(None, Duration::from_secs(2)) {
            Ok(metadata) => return Some(metadata),
            Err(e) => {
                let delay = source::backoff(attempt);
                tracing::warn!(
                    "cannot reach the brokers at {brokers}: {e}; retrying in {}s",
                    delay.as_secs()
                );
                let until = Instant::now() + delay;
                while Instant::now() < until {
                    if stop.load(Ordering::Relaxed) {
                        return None;
                    }
                    thread::sleep(Duration::from_millis(50));
                }
                attempt += 1;
            }
        }
    }
}

/// Check that `topic` exists; its number of partitions.
fn require_topic(
    metadata: &Metadata,
    topic: &str,
    role: &str,
    brokers: &str,
) -> Result<usize, RunError> {
    let found = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .filter(|t| t.error().is_none() && !t.partitions().is_empty());
    match found {
        Some(t) => Ok(t.partitions().len()),
        None => Err(RunError::Topic(format!(
            "{role} topic `{topic}` does not exist on {brokers}; create it first"
        ))),
    }
}

/// The consumer thread's loop and the batches it is filling.
struct Poller<'a> {
    consumer: &'a Consumer,
    shared: &'a Shared,
    batch_size: usize,
    pending: Vec<Batch>,
}

impl Poller<'_> {
    fn run(&mut self, stop: &AtomicBool, checkpoint: Duration, report_every: Option<Duration>) {
        let mut last_commit = Instant::now();
        let mut last_report = Instant::now();
        let started = Instant::now();
        let mut reported = Snapshot::default();
        while !stop.load(Ordering::Relaxed) && !self.shared.fatal.is_set() {
            match self.consumer.poll(Duration::from_millis(100)) {
                None => self.dispatch_all(),
                Some(first) => {
                    self.take(first);
                    // Take what librdkafka has already fetched, up to a few batches' worth.
                    for _ in 0..self.batch_size * 4 {
                        match self.consumer.poll(Duration::ZERO) {
                            Some(next) => self.take(next),
                            None => break,
                        }
                    }
                    self.dispatch_all();
                }
            }
            if last_commit.elapsed() >= checkpoint {
                self.shared.commit_all(self.consumer);
                last_commit = Instant::now();
            }
            if let Some(every) = report_every {
                if last_report.elapsed() >= every {
                    let now = self.shared.metrics.snapshot();
                    let rate = (now.consumed - reported.consumed) as f64
                        / last_report.elapsed().as_secs_f64();
                    tracing::info!(
                        "{now} ({rate:.0} records/s, up {:.0}s)",
                        started.elapsed().as_secs_f64()
                    );
                    if tracing::enabled!(tracing::Level::DEBUG) {
                        if let Ok(positions) = self.consumer.position() {
                            let positions: Vec<String> = positions
                                .elements()
                                .iter()
                                .map(|e| {
                                    format!("{}[{}]@{:?}", e.topic(), e.partition(), e.offset())
                                })
                                .collect();
                            tracing::debug!("positions: {}", positions.join(" "));
                        }
                    }
                    reported = now;
                    last_report = Instant::now();
                }
            }
        }
    }

    fn take(&mut self, message: Result<rdkafka::message::BorrowedMessage<'_>, KafkaError>) {
        let message = match message {
            Ok(message) => message,
            Err(e) => return self.consumer_error(e),
        };
        Metrics::add(&self.shared.metrics.consumed, 1);
        let (topic, partition) = (message.topic(), message.partition());
        use rdkafka::Message as _;
        let found = self
            .pending
            .iter()
            .position(|b| b.partition.partition == partition && b.partition.topic == topic);
        // A batch of an assignment revoked since it was started (the rebalance ran inside
        // `poll`) must not take records of the new assignment: it is dropped at dispatch.
        let found = match found {
            Some(i) if self.pending[i].partition.is_revoked() => {
                self.pending.swap_remove(i);
                None
            }
            found => found,
        };
        let index = match found {
            Some(i) => i,
            None => {
                let assigned = self.shared.lock_assigned();
                let Some(p) = assigned.partitions.get(&(topic.to_string(), partition)) else {
                    tracing::debug!(
                        "dropping a record of unassigned partition {topic}[{partition}]"
                    );
                    return;
                };
                self.pending.push(Batch {
                    partition: p.clone(),
                    records: Vec::with_capacity(self.batch_size),
                    next_offset: 0,
                });
                self.pending.len() - 1
            }
        };
        let record = source::record(&message);
        let batch = &mut self.pending[index];
        batch.next_offset = record.offset + 1;
        batch.records.push(record);
        if batch.records.len() >= self.batch_size {
            let batch = self.pending.swap_remove(index);
            self.dispatch(batch);
        }
    }

    fn consumer_error(&self, e: KafkaError) {
        match e.rdkafka_error_code() {
            Some(
                RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::GroupAuthorizationFailed,
            ) => self.shared.fatal.set(format!("source: {e}")),
            _ => tracing::warn!("source: {e}"),
        }
    }

    fn dispatch_all(&mut self) {
        for batch in std::mem::take(&mut self.pending) {
            self.dispatch(batch);
        }
    }

    /// Hand `batch` to its worker, waiting while the worker's queue is full.
    fn dispatch(&self, batch: Batch) {
        if batch.records.is_empty() || !batch.partition.dispatch() {
            return;
        }
        let Some(sender) = self
            .shared
            .workers
            .get()
            .and_then(|w| w.get(batch.partition.worker))
        else {
            return batch.partition.abandoned();
        };
        let mut work = Work::Batch(batch);
        loop {
            match sender.send_timeout(work, Duration::from_millis(100)) {
                Ok(()) => return,
                Err(SendTimeoutError::Timeout(back)) if !self.shared.fatal.is_set() => work = back,
                Err(SendTimeoutError::Timeout(back) | SendTimeoutError::Disconnected(back)) => {
                    if let Work::Batch(batch) = back {
                        batch.partition.abandoned();
                    }
                    return;
                }
            }
        }
    }
}

impl Shared {
    fn lock_assigned(&self) -> std::sync::MutexGuard<'_, Assigned> {
        self.assigned.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take over assigned partitions (returning where to start reading those whose position the
    /// pipeline keeps itself), or drain and let go of revoked ones.
    fn rebalance(&self, consumer: &Consumer, rebalance: &Rebalance<'_>) -> source::Positions {
        let mut positions = Vec::new();
        match rebalance {
            Rebalance::Assign(list) => {
                self.refresh_group_metadata(consumer);
                // Every new partition holds the window watermarks back from the start: a worker
                // firing windows while the later ones are still being restored would see too
                // high a watermark and fire windows early.
                for e in list.elements() {
                    for (_, clock) in &self.clocks {
                        clock.assign(e.topic(), e.partition(), Instant::now());
                    }
                }
                // Taking a partition over is a few round trips to the brokers (fencing its
                // previous producer, reading its position and changelogs): all at once.
                let keys: Vec<(String, i32)> = list
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                let taken: Vec<_> = thread::scope(|scope| {
                    let takeovers: Vec<_> = keys
                        .iter()
                        .map(|(topic, partition)| scope.spawn(|| self.take_over(topic, *partition)))
                        .collect();
                    takeovers
                        .into_iter()
                        .map(|t| t.join().expect("a takeover does not panic"))
                        .collect()
                });
                let mut assigned = self.lock_assigned();
                for ((topic, partition), started) in keys.into_iter().zip(taken) {
                    let worker = (0..assigned.load.len())
                        .min_by_key(|&w| assigned.load[w])
                        .unwrap_or(0);
                    assigned.load[worker] += 1;
                    let (transaction, states) = match started {
                        Ok(Takeover {
                            transaction,
                            position,
                            states,
                        }) => {
                            if let Some(offset) = position {
                                tracing::info!(
                                    "{topic}[{partition}] resumes at offset {offset}, as its last \
                                     committed transaction recorded"
                                );
                                positions.push((topic.clone(), partition, offset));
                            }
                            (transaction, states)
                        }
                        Err(e) => {
                            self.fatal
                                .set(format!("cannot take over {topic}[{partition}]: {e}"));
                            (None, Vec::new())
                        }
                    };
                    tracing::info!("assigned {topic}[{partition}] to worker {worker}");
                    for (stage, clock) in &self.clocks {
                        match states.iter().find(|s| s.stage == *stage) {
                            Some(s) => {
                                window::resume(clock, &*s.state, &topic, partition, Instant::now())
                            }
                            None => clock.assign(&topic, partition, Instant::now()),
                        }
                    }
                    assigned.partitions.insert(
                        (topic.clone(), partition),
                        Partition::new(topic, partition, worker, states, transaction),
                    );
                }
            }
            Rebalance::Revoke(list) => {
                let revoked: Vec<Arc<Partition>> = {
                    let mut assigned = self.lock_assigned();
                    list.elements()
                        .iter()
                        .filter_map(|e| {
                            let p = assigned
                                .partitions
                                .remove(&(e.topic().to_string(), e.partition()))?;
                            assigned.load[p.worker] -= 1;
                            Some(p)
                        })
                        .collect()
                };
                // Drain: let the workers finish what they have of these partitions, wait for
                // the sink, commit, and only then let them go.
                for p in &revoked {
                    p.revoke();
                }
                for p in &revoked {
                    if !p.wait_processed(DRAIN_TIMEOUT) {
                        tracing::warn!(
                            "{}[{}] revoked before its batches were processed",
                            p.topic,
                            p.partition
                        );
                    }
                }
                if self.exactly_once.is_some() {
                    // Each worker commits the transaction of its revoked partitions, unless the
                    // group already gave them to another member (this one was presumed dead):
                    // that one fenced these producers, so a commit could only fail, and slowly.
                    let lost = consumer.assignment_lost();
                    if lost {
                        tracing::warn!(
                            "the group reassigned this instance's partitions while it was \
                             unresponsive; their open transactions are dropped uncommitted"
                        );
                    }
                    for p in &revoked {
                        let (done, closed) = crossbeam_channel::bounded(1);
                        let close = Work::Close {
                            partition: p.clone(),
                            commit: !lost,
                            done,
                        };
                        let sent = self
                            .workers
                            .get()
                            .and_then(|w| w.get(p.worker))
                            .is_some_and(|w| w.send(close).is_ok());
                        if sent && closed.recv_timeout(DRAIN_TIMEOUT).is_err() {
                            tracing::warn!(
                                "{}[{}]: its transaction was not committed in time",
                                p.topic,
                                p.partition
                            );
                        }
                    }
                } else {
                    if let Err(e) = self.sink.flush(DRAIN_TIMEOUT) {
                        tracing::warn!("sink: {e} while draining revoked partitions");
                    }
                    self.commit(consumer, &revoked);
                }
                // Only now that no worker touches them: a batch in hand would otherwise put an
                // aborted batch's progress back into the watermark.
                for p in &revoked {
                    for (_, clock) in &self.clocks {
                        clock.forget(&p.topic, p.partition);
                    }
                    tracing::info!("revoked {}[{}]", p.topic, p.partition);
                }
            }
            Rebalance::Error(e) => tracing::warn!("rebalance: {e}"),
        }
        positions
    }

    /// What a new owner of `topic`/`partition` needs before its first record: under exactly
    /// once its producer (created first: fencing the previous owner aborts that one's open
    /// transaction, which must be settled before anything of it is read) and its position; its
    /// stages' state, brought up to date from the changelogs.
    fn take_over(&self, topic: &str, partition: i32) -> Result<Takeover, RunError> {
        let transaction = self.start_transaction(topic, partition)?;
        let position = self.position(topic, partition)?;
        let states = self.restore(topic, partition)?;
        Ok(Takeover {
            transaction,
            position,
            states,
        })
    }

    /// Exactly once: where `topic`/`partition` resumes, as its last committed transaction
    /// recorded it in the offsets topic (none yet: from the group's committed offset). Read only
    /// once the partition's producer has fenced the previous owner, whose open transaction would
    /// otherwise hold the read back.
    fn position(&self, topic: &str, partition: i32) -> Result<Option<i64>, RunError> {
        let Some(eos) = &self.exactly_once else {
            return Ok(None);
        };
        recorded_position(&eos.brokers, &eos.group, topic, partition, POSITION_TIMEOUT)
            .map_err(|e| RunError::Topic(format!("reading `{}`: {e}", eos.offsets_topic)))
    }

    /// The state of every stateful stage for `topic`/`partition`, brought up to date from the
    /// changelogs before the partition's first record is processed.
    fn restore(&self, topic: &str, partition: i32) -> Result<Vec<StageState>, RunError> {
        let Some(ctx) = &self.state else {
            return Ok(Vec::new());
        };
        let mut states = Vec::with_capacity(ctx.stages.len());
        for (stage, name, changelog) in &ctx.stages {
            let mark = ctx.marks[changelog]
                .get(partition as usize)
                .cloned()
                .ok_or_else(|| {
                    RunError::Topic(format!(
                        "changelog `{changelog}` has no partition {partition}: the source topic \
                         grew after the changelog was created"
                    ))
                })?;
            let state = ctx.store.partition(name, topic, partition, mark);
            let started = Instant::now();
            let (applied, from, to) =
                state.restore_from_changelog(&ctx.brokers, changelog, partition)?;
            tracing::info!(
                "stage `{name}` state of {topic}[{partition}]: {applied} changes restored from \
                 `{changelog}` offsets {from}..{to} in {:.0} ms",
                started.elapsed().as_secs_f64() * 1e3
            );
            states.push(StageState {
                stage: *stage,
                changelog: changelog.clone(),
                state: Arc::new(state),
            });
        }
        Ok(states)
    }

    /// Exactly once: take the consumer's current group metadata for the next commits.
    fn refresh_group_metadata(&self, consumer: &Consumer) {
        if let Some(eos) = &self.exactly_once {
            *eos.group_metadata.lock().unwrap_or_else(|e| e.into_inner()) =
                consumer.group_metadata().map(Arc::new);
        }
    }

    /// Exactly once: the partition's transactional producer, with a transaction open.
    fn start_transaction(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Option<crate::sink::Sink>, RunError> {
        let Some(eos) = &self.exactly_once else {
            return Ok(None);
        };
        let id = format!("weir-{}-{topic}-{partition}", eos.group);
        Sink::transactional(
            &eos.brokers,
            &eos.properties,
            &id,
            eos.marks.clone(),
            self.metrics.clone(),
            self.fatal.clone(),
        )
        .map(Some)
        .map_err(|cause| RunError::Kafka {
            what: format!("transactional producer `{id}`"),
            cause,
        })
    }

    /// Exactly once: commit partition `p`'s open transaction with its state changes and the
    /// offset after its last processed record; after a fatal error, abort it instead.
    fn checkpoint(&self, p: &Partition) {
        let Some(txn) = &p.transaction else {
            return;
        };
        if self.fatal.is_set() {
            txn.abort();
            return;
        }
        let next = p.next_offset();
        let acks = Acks::new();
        let mut pending = Vec::with_capacity(p.states.len());
        for s in &p.states {
            let (changes, to_store) = s.state.take();
            for change in changes {
                let sent = txn.send_change(
                    &s.changelog,
                    p.partition,
                    &change.key,
                    change.value.as_deref(),
                    &acks,
                );
                if let Err(e) = sent {
                    self.fatal.set(format!("changelog `{}`: {e}", s.changelog));
                    txn.abort();
                    return;
                }
            }
            pending.push((s, to_store));
        }
        let group = self.exactly_once.as_ref().and_then(|e| {
            e.group_metadata
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        });
        let Some(group) = group else {
            self.fatal
                .set("exactly once: no consumer group metadata to commit offsets with".into());
            txn.abort();
            return;
        };
        if let (Some(next), Some(eos)) = (next, &self.exactly_once) {
            let value = next.to_string();
            let sent = txn.send_change(
                &eos.offsets_topic,
                p.partition,
                p.topic.as_bytes(),
                Some(value.as_bytes()),
                &acks,
            );
            if let Err(e) = sent {
                self.fatal.set(format!("`{}`: {e}", eos.offsets_topic));
                txn.abort();
                return;
            }
        }
        let mut offsets = TopicPartitionList::new();
        if let Some(next) = next {
            let added = offsets.add_partition_offset(&p.topic, p.partition, Offset::Offset(next));
            if let Err(e) = added {
                self.fatal.set(format!("{}[{}]: {e}", p.topic, p.partition));
                return;
            }
        }
        match txn.commit(&offsets, &group) {
            Ok(()) => {
                Metrics::add(&self.metrics.commits, 1);
                for (s, to_store) in pending {
                    if let Err(e) = s.state.persist(to_store) {
                        // The changelog has what the store could not take: a restart restores
                        // it from there.
                        self.fatal.set(format!(
                            "{e}; the transaction is committed, the store catches up from `{}` \
                             after a restart",
                            s.changelog
                        ));
                    }
                }
            }
            Err(e) => {
                let fenced = crate::sink::is_fenced(&e);
                self.fatal.set(format!(
                    "committing the transaction of {}[{}] failed: {e}{}",
                    p.topic,
                    p.partition,
                    if fenced {
                        " (another instance took this partition over; this one stops writing)"
                    } else {
                        ""
                    }
                ));
                // A fenced producer cannot abort; its successor already did.
                if !fenced {
                    txn.abort();
                }
            }
        }
    }

    fn commit_all(&self, consumer: &Consumer) {
        if self.exactly_once.is_some() {
            return;
        }
        let partitions: Vec<Arc<Partition>> =
            self.lock_assigned().partitions.values().cloned().collect();
        self.commit(consumer, &partitions);
    }

    /// Commit the acknowledged offsets of `partitions`, synchronously: once a second is cheap,
    /// and a commit that returns is one the next owner will see.
    fn commit(&self, consumer: &Consumer, partitions: &[Arc<Partition>]) {
        let mut list = TopicPartitionList::new();
        let mut moved = Vec::new();
        for p in partitions {
            if let Some(offset) = p.advance() {
                if list
                    .add_partition_offset(&p.topic, p.partition, Offset::Offset(offset))
                    .is_ok()
                {
                    moved.push((p, offset));
                }
            }
        }
        if moved.is_empty() {
            return;
        }
        match consumer.commit(&list, CommitMode::Sync) {
            Ok(()) => {
                Metrics::add(&self.metrics.commits, 1);
                for (p, offset) in moved {
                    p.committed(offset);
                }
            }
            Err(e) => {
                tracing::warn!("committing offsets failed (retried at the next checkpoint): {e}")
            }
        }
    }
}

/// How often window stages look at the watermark between batches (Flink's default
/// auto-watermark interval): it moves with other partitions' records and with idleness.
const WINDOW_TICK: Duration = Duration::from_millis(200);

/// A worker: runs the chain over its partitions' batches and hands the results to the sink;
/// under exactly once, it also commits each of its partitions' transactions every checkpoint
/// interval (a partition's records and its transaction stay on one thread).
fn work(
    id: usize,
    mut chain: LiveChain,
    inbox: Receiver<Work>,
    shared: &Shared,
    interval: Duration,
) {
    let windows = chain.has_windows();
    if windows && shared.exactly_once.is_none() {
        // Every version this worker moves to (hot reload) holds fired windows the same way.
        chain.prepare_each(|c| c.defer_until_delivered());
    }
    let mut open: Vec<Arc<Partition>> = Vec::new();
    // Window stages: the partitions assigned to this worker, to fire their windows between
    // batches (including those with nothing left to read).
    let mut owned: Vec<Arc<Partition>> = Vec::new();
    let mut last = Instant::now();
    let mut ticked = Instant::now();
    let touch = |open: &mut Vec<Arc<Partition>>, partition: &Arc<Partition>| {
        if partition.transaction.is_some() && !open.iter().any(|p| Arc::ptr_eq(p, partition)) {
            open.push(partition.clone());
        }
    };
    loop {
        let mut wait = interval.saturating_sub(last.elapsed());
        if windows {
            wait = wait.min(WINDOW_TICK.saturating_sub(ticked.elapsed()));
        }
        match inbox.recv_timeout(wait) {
            Ok(Work::Batch(batch)) => {
                let partition = batch.partition.clone();
                chain.refresh();
                process(&mut chain, batch, shared);
                touch(&mut open, &partition);
            }
            Ok(Work::Close {
                partition,
                commit,
                done,
            }) => {
                if let Some(i) = open.iter().position(|p| Arc::ptr_eq(p, &partition)) {
                    let p = open.swap_remove(i);
                    if commit {
                        shared.checkpoint(&p);
                    }
                }
                let _ = done.send(());
            }
            Ok(Work::Stop) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                // Windows the watermark passed since the last tick go out with the last commit.
                for p in owned.iter().filter(|p| !p.is_revoked()) {
                    if tick(&mut chain, p, shared) {
                        touch(&mut open, p);
                    }
                }
                break;
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
        }
        if windows && ticked.elapsed() >= WINDOW_TICK {
            // Between batches as much as before one: a worker whose partitions are idle still
            // moves to a new version for the windows it fires.
            chain.refresh();
            let assigned: Vec<Arc<Partition>> = {
                let all = shared.lock_assigned();
                all.partitions
                    .values()
                    .filter(|p| p.worker == id)
                    .cloned()
                    .collect()
            };
            for gone in owned
                .iter()
                .filter(|p| !assigned.iter().any(|a| Arc::ptr_eq(a, p)))
            {
                chain.forget(&gone.topic, gone.partition);
            }
            owned = assigned;
            for p in &owned {
                if tick(&mut chain, p, shared) {
                    touch(&mut open, p);
                }
            }
            ticked = Instant::now();
        }
        if last.elapsed() >= interval {
            for p in open.drain(..) {
                shared.checkpoint(&p);
            }
            last = Instant::now();
        }
    }
    for p in open {
        shared.checkpoint(&p);
    }
    // What is still queued (after a fatal error: batches are skipped, not processed) will never
    // be: say so, or the final revocation waits for it in vain.
    for work in inbox.try_iter() {
        match work {
            Work::Batch(batch) => batch.partition.abandoned(),
            Work::Close { done, .. } => {
                let _ = done.send(());
            }
            Work::Stop => {}
        }
    }
}

/// Run one batch through the chain and hand what came of it to the sink.
fn process(chain: &mut LiveChain, batch: Batch, shared: &Shared) {
    // A revoked partition's queued batches are left to its next owner, which reads them again
    // from the committed offset: a revocation waits for the batch in hand, not for the queue
    // (a long drain would outlast the group's patience and commit with a stale generation).
    if shared.fatal.is_set() || batch.partition.is_revoked() {
        batch.partition.abandoned();
        return;
    }
    let count = batch.records.len();
    let originals = shared.dead_letters.is_some().then(|| batch.records.clone());
    for s in &batch.partition.states {
        chain.set_state(s.stage, s.state.clone());
    }
    let output = chain.process(batch.records);
    deliver(
        chain,
        output,
        &batch.partition,
        Some(batch.next_offset),
        originals.as_deref(),
        shared,
    );
    Metrics::add(&shared.metrics.processed, count);
}

/// Fire the windows of `partition` that the watermark passed since its last batch; true if
/// anything came of it.
fn tick(chain: &mut LiveChain, partition: &Arc<Partition>, shared: &Shared) -> bool {
    if shared.fatal.is_set() || !partition.dispatch() {
        return false;
    }
    for s in &partition.states {
        chain.set_state(s.stage, s.state.clone());
    }
    let output = chain.advance(&partition.topic, partition.partition);
    let any = !(output.records.is_empty() && output.failures.is_empty());
    deliver(
        chain,
        output,
        partition,
        partition.next_offset(),
        None,
        shared,
    );
    any
}

/// Hand a chain's outputs, dead letters, late records and (at least once) state changes to
/// the sink, and record what the partition may commit once they are acknowledged.
fn deliver(
    chain: &mut Chain,
    output: BatchOutput,
    partition: &Arc<Partition>,
    next_offset: Option<i64>,
    originals: Option<&[Record]>,
    shared: &Shared,
) {
    // Exactly once: everything of this partition goes into its open transaction.
    let sink = partition.transaction.as_ref().unwrap_or(&shared.sink);
    let acks = Acks::new();
    // At least once, state changes go to the store and the changelog with the batch's
    // outputs, so the batch's offsets are committed only once its changelog records are
    // acknowledged too. Exactly once, they wait for the partition's next commit.
    let at_least_once = partition.transaction.is_none();
    let mut state_lost = false;
    for s in partition.states.iter().filter(|_| at_least_once) {
        match s.state.flush() {
            Ok(changes) => {
                for change in changes {
                    let sent = sink.send_change(
                        &s.changelog,
                        partition.partition,
                        &change.key,
                        change.value.as_deref(),
                        &acks,
                    );
                    if let Err(e) = sent {
                        acks.fail();
                        shared
                            .fatal
                            .set(format!("changelog `{}`: {e}", s.changelog));
                    }
                }
            }
            Err(e) => {
                acks.fail();
                state_lost = true;
                shared.fatal.set(format!(
                    "{e}; {}[{}] is committed only up to the records whose state was written: \
                     the rest are read again after a restart",
                    partition.topic, partition.partition,
                ));
            }
        }
    }
    if state_lost {
        // Nothing of a batch whose state could not be written goes out: the run stops, and its
        // records are read again after a restart against the state as it was before them.
        partition.abandoned();
        return;
    }
    let mut failures: Vec<Failure> = output
        .failures
        .into_iter()
        .map(|f| Failure {
            offset: f.record.offset,
            topic: f.record.topic.clone(),
            partition: f.record.partition,
            stage: f.stage,
            plugin_hash: Some(f.plugin_hash),
            kind: f.error.kind.as_str(),
            message: f.error.message,
            // A window the plugin could not render stands for no single input.
            own: (f.record.offset < 0).then_some(f.record),
        })
        .collect();
    // Under `fail`, nothing from the first failing record on goes out or gets committed.
    let mut halt = match shared.policy {
        ErrorPolicy::Fail => failures.iter().map(|f| f.offset).filter(|&o| o >= 0).min(),
        _ => None,
    };
    for record in &output.records {
        if halt.is_some_and(|h| record.offset >= h) {
            continue;
        }
        match sink.send(&shared.sink_topic, record, &acks) {
            Ok(()) => {}
            Err(SendError::TooLarge { size, cause }) => {
                if shared.policy == ErrorPolicy::Fail {
                    halt = Some(halt.map_or(record.offset, |h| h.min(record.offset)));
                }
                failures.push(Failure {
                    offset: record.offset,
                    topic: record.topic.clone(),
                    partition: record.partition,
                    stage: "sink".into(),
                    plugin_hash: None,
                    kind: "too-large",
                    message: format!(
                        "output of {size} bytes is larger than the sink accepts: {cause}"
                    ),
                    own: None,
                });
            }
            Err(e @ SendError::Failed { .. }) => shared.fatal.set(format!("sink: {e}")),
        }
    }
    for late in output.late {
        if halt.is_some_and(|h| late.record.offset >= h) {
            continue;
        }
        Metrics::add(&shared.metrics.late, 1);
        let place = || {
            format!(
                "stage `{}`: {}[{}]@{} is behind the watermark {} by more than the allowed \
                 lateness",
                late.stage,
                late.record.topic,
                late.record.partition,
                late.record.offset,
                late.watermark
            )
        };
        match &late.to {
            LateOutput::Drop => tracing::debug!("{} (dropped)", place()),
            LateOutput::Topic(topic) => {
                if let Err(e) = sink.send(topic, &late.record, &acks) {
                    acks.fail();
                    shared
                        .fatal
                        .set(format!("{}; sending it to `{topic}` failed: {e}", place()));
                }
            }
            LateOutput::DeadLetter => {
                let failure = Failure {
                    offset: late.record.offset,
                    topic: late.record.topic.clone(),
                    partition: late.record.partition,
                    stage: late.stage.clone(),
                    plugin_hash: Some(late.plugin_hash.clone()),
                    kind: crate::engine::ErrorKind::Late.as_str(),
                    message: format!(
                        "behind the watermark {} by more than the allowed lateness",
                        late.watermark
                    ),
                    own: None,
                };
                shared.handle(sink, &failure, originals, &acks, None);
            }
        }
    }
    failures.sort_by_key(|f| f.offset);
    // A flat-map may emit several refused outputs of one input: one dead letter per input.
    failures.dedup_by(|a, b| a.offset == b.offset && a.offset >= 0);
    for failure in &failures {
        Metrics::add(&shared.metrics.failed, 1);
        if failure.own.is_some() && shared.policy == ErrorPolicy::Fail {
            // Not tied to one input: nothing of this partition may be committed from here on.
            acks.fail();
            shared.fatal.set(format!(
                "{}; errors.policy is \"fail\": stopped",
                failure.place()
            ));
            continue;
        }
        shared.handle(sink, failure, originals, &acks, halt);
    }
    if at_least_once {
        let delivered: Arc<dyn Delivered> = acks.clone();
        chain.hold(&delivered);
    }
    acks.sealed();
    match (halt, next_offset) {
        (Some(halt), _) => partition.processed(acks, halt, true),
        (None, Some(next)) => partition.processed(acks, next, false),
        // Nothing consumed yet: no offset moves, whatever the outputs' fate.
        (None, None) => partition.settled(),
    }
}

/// A record that failed in a stage or at the sink, with where it came from.
struct Failure {
    topic: String,
    partition: i32,
    offset: i64,
    stage: String,
    plugin_hash: Option<String>,
    kind: &'static str,
    message: String,
    /// The record to dead-letter when it is not one of the batch's inputs.
    own: Option<Record>,
}

impl Failure {
    fn place(&self) -> String {
        format!(
            "stage `{}` failed on {}[{}]@{}: {}: {}",
            self.stage, self.topic, self.partition, self.offset, self.kind, self.message
        )
    }
}

impl Shared {
    fn handle(
        &self,
        sink: &Sink,
        failure: &Failure,
        originals: Option<&[Record]>,
        acks: &Arc<Acks>,
        halt: Option<i64>,
    ) {
        match self.policy {
            ErrorPolicy::Fail => {
                if halt == Some(failure.offset) {
                    self.fatal.set(format!(
                        "{}; errors.policy is \"fail\": stopped without committing that record",
                        failure.place()
                    ));
                }
            }
            ErrorPolicy::Skip => {
                Metrics::add(&self.metrics.skipped, 1);
                tracing::warn!("{} (skipped)", failure.place());
            }
            ErrorPolicy::DeadLetter => {
                let topic = self.dead_letters.as_deref().expect("checked by config");
                let original = failure.own.as_ref().or_else(|| {
                    originals.and_then(|all| {
                        all.binary_search_by_key(&failure.offset, |r| r.offset)
                            .ok()
                            .map(|i| &all[i])
                    })
                });
                let Some(original) = original else {
                    self.fatal
                        .set(format!("{} (its input was not found)", failure.place()));
                    return;
                };
                let letter = dead_letter(original, failure);
                match sink.send(topic, &letter, acks) {
                    Ok(()) => {
                        Metrics::add(&self.metrics.dead_lettered, 1);
                        tracing::debug!("{} (dead-lettered to `{topic}`)", failure.place());
                    }
                    Err(e) => self.fatal.set(format!(
                        "{}; sending it to the dead-letter topic failed: {e}",
                        failure.place()
                    )),
                }
            }
        }
    }
}

/// The original record with headers saying what went wrong where.
fn dead_letter(original: &Record, failure: &Failure) -> Record {
    let mut letter = original.clone();
    let mut add = |key: &str, value: String| {
        letter.headers.push(Header {
            key: key.into(),
            value: value.into_bytes(),
        })
    };
    add("weir.error.stage", failure.stage.clone());
    if let Some(hash) = &failure.plugin_hash {
        add("weir.error.plugin.sha256", hash.clone());
    }
    add("weir.error.kind", failure.kind.into());
    add("weir.error.message", failure.message.clone());
    add("weir.source.topic", failure.topic.clone());
    add("weir.source.partition", failure.partition.to_string());
    add("weir.source.offset", failure.offset.to_string());
    letter
}
