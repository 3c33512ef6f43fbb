//! `weir run`: a pipeline against Kafka, at least once or exactly once.
//!
//! A record goes down the layers once: the [`poller`] (the consumer thread) groups records per
//! partition into batches and hands each to the [`worker`] that owns its partition (one worker
//! per core, each with its own instances of every stage), so partitions run in parallel and each
//! keeps its order. The worker runs the chain and hands what came of it to [`delivery`], which
//! sends outputs to the sink with the batch's [`Acks`](crate::kafka::Acks) and applies the
//! [`error_policy`] to failed records; [`checkpoint`] then commits, every checkpoint interval,
//! what is safe: at least once the offsets whose outputs are all acknowledged, exactly once each
//! partition's transaction (outputs, state changes and position together). The [`rebalance`]
//! callback takes partitions over (fencing, position, state [`restore`]) and drains revoked ones.
//!
//! Queues between the steps are bounded: a slow sink blocks the workers, full worker queues block
//! the consumer thread, and librdkafka's bounded prefetch then stops fetching.

mod checkpoint;
mod delivery;
mod error_policy;
mod join;
mod partition;
mod poller;
pub mod postgres;
mod preflight;
mod rebalance;
mod restore;
mod tables;
mod worker;

use std::{
    collections::HashMap,
    sync::{atomic::AtomicBool, Arc, Mutex, MutexGuard, OnceLock},
    thread::{self, JoinHandle},
    time::Duration,
};

use crossbeam_channel::Sender;
use rdkafka::consumer::Consumer as _;

use self::{partition::Partition, poller::Poller, restore::StateContext};
use crate::{
    chain::{window::Clock, Stages},
    config::{ErrorPolicy, Pipeline},
    engine::Record,
    kafka::{self, source, Consumer, Fatal, Sink, Transactions},
    metrics::{Metrics, RunInfo, Snapshot},
    reload::{Live, LiveChain},
    state::query::Held,
    Error,
};

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
    /// Where the keyed state the run holds is found by queries (the admin server's).
    pub held: Arc<Held>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            workers: thread::available_parallelism().map_or(2, |n| n.get()),
            stop: Arc::default(),
            metrics: Arc::default(),
            report_every: Some(Duration::from_secs(10)),
            held: Arc::default(),
        }
    }
}

/// Bounded queue of batches in front of each worker. Deep enough that the two workers of a
/// 2-core machine run together (+19% records/s in the Kafka benchmark over a queue of 4:
/// librdkafka hands out fetched records partition by partition, in runs of thousands, and a full
/// queue blocks the consumer thread); 16 ran as fast as 64 in the benchmark's A/B runs, with
/// ~20 MiB less peak memory per process. A revocation does not wait for the queue: a revoked
/// partition's queued batches are skipped and read again by its next owner.
const WORKER_QUEUE: usize = 16;
/// Longest wait for the sink on a rebalance or at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for the consumer to leave the group at the end of a run.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(15);

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
    exactly_once: Option<Transactions>,
    workers: OnceLock<Vec<Sender<Work>>>,
    /// Where shadows' outputs go.
    shadow_sink: delivery::ShadowSink,
    /// Window stages' watermarks: assigned partitions hold them back, revoked ones stop to.
    clocks: Vec<(usize, String, Arc<Clock>)>,
    fatal: Arc<Fatal>,
    metrics: Arc<Metrics>,
    held: Arc<Held>,
    /// The threads following the tables' topics.
    table_readers: Mutex<Option<tables::Readers>>,
    /// The tables they keep, which assigned partitions wait to catch up with their topics.
    tables: Arc<crate::table::Tables>,
    /// Join stages, whose other topics each assigned partition reads its partition of.
    joins: join::Joins,
    stop: Arc<AtomicBool>,
}

#[derive(Default)]
struct Assigned {
    partitions: HashMap<(String, i32), Arc<Partition>>,
    /// Partitions per worker, to give a new one to the least loaded.
    load: Vec<usize>,
}

impl Shared {
    fn lock_assigned(&self) -> MutexGuard<'_, Assigned> {
        self.assigned.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Run `pipeline` (its stages already loaded as `stages`) until `options.stop` is set or a fatal
/// error; returns the final counts.
pub fn run(pipeline: &Pipeline, stages: &Stages, options: RunOptions) -> Result<Snapshot, Error> {
    run_reloading(pipeline, stages, None, options)
}

/// [`run`], with the workers moving to each version of the stages that `live` publishes (hot
/// reload, see [`crate::reload`]) between batches.
pub fn run_reloading(
    pipeline: &Pipeline,
    stages: &Stages,
    live: Option<Arc<Live>>,
    options: RunOptions,
) -> Result<Snapshot, Error> {
    let (source, _) = pipeline.kafka()?;
    kafka::check_sink_settings(pipeline)?;
    // The rebalance callback needs what is built below; no rebalance can happen before the
    // subscription, which comes after it is set.
    let slot: Arc<OnceLock<Arc<Shared>>> = Arc::default();
    let consumer = source::consumer(source, rebalance::hook(slot.clone()))
        .map_err(|cause| kafka::settings_error(pipeline, "source", cause))?;
    let Some(shared) = preflight::prepare(pipeline, stages, &consumer, &options)? else {
        return Ok(options.metrics.snapshot());
    };
    let shared = Arc::new(shared);
    let _ = slot.set(shared.clone());
    let handles = start_workers(pipeline, stages, live.as_ref(), &shared, options.workers)?;
    shared.metrics.set_info(RunInfo {
        pipeline: pipeline.path.display().to_string(),
        guarantee: pipeline.delivery.guarantee.as_str().to_string(),
        workers: handles.len(),
        sources: source.topics.clone(),
        sink: shared.sink_topic.clone(),
        dead_letters: shared.dead_letters.clone(),
    });
    let topics: Vec<&str> = source.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).map_err(|cause| Error::Kafka {
        what: format!("subscribing to {topics:?}"),
        cause,
    })?;
    tracing::info!(
        "running {} ({} stages, {} workers): {} -> {}",
        pipeline.path.display(),
        pipeline.stages.len(),
        handles.len(),
        source.topics.join(","),
        shared.sink_topic
    );
    let mut poller = Poller::new(&consumer, &shared, source.batch_size);
    poller.run(
        &options.stop,
        pipeline.delivery.checkpoint_interval,
        options.report_every,
    );
    drop(poller);
    shut_down(&shared, handles, consumer)
}

/// One chain per worker, all started before consuming so a bad config fails here.
fn start_workers(
    pipeline: &Pipeline,
    stages: &Stages,
    live: Option<&Arc<Live>>,
    shared: &Arc<Shared>,
    workers: usize,
) -> Result<Vec<JoinHandle<()>>, Error> {
    let workers = workers.max(1);
    let mut senders = Vec::with_capacity(workers);
    let mut handles = Vec::with_capacity(workers);
    if let Some(live) = live {
        live.set_workers(workers);
        live.report_to(shared.metrics.clone());
    }
    for id in 0..workers {
        let chain = LiveChain::start(stages, live)?;
        let (tx, rx) = crossbeam_channel::bounded::<Work>(WORKER_QUEUE);
        let shared = shared.clone();
        let interval = pipeline.delivery.checkpoint_interval;
        let handle = thread::Builder::new()
            .name(format!("weir-worker-{id}"))
            .spawn(move || worker::work(id, chain, rx, &shared, interval))
            .expect("spawn a worker thread");
        senders.push(tx);
        handles.push(handle);
    }
    let _ = shared.workers.set(senders);
    Ok(handles)
}

/// Drain: what the workers have gets processed and delivered, then committed. Batches not yet
/// handed over are dropped; their offsets are not committed, so the next run reads them.
fn shut_down(
    shared: &Shared,
    handles: Vec<JoinHandle<()>>,
    consumer: Consumer,
) -> Result<Snapshot, Error> {
    for worker in shared.workers.get().into_iter().flatten() {
        let _ = worker.send(Work::Stop);
    }
    for handle in handles {
        if handle.join().is_err() {
            shared.fatal.stop("a worker thread panicked".into());
        }
    }
    let in_flight = shared.sink.in_flight();
    if in_flight > 0 {
        tracing::info!("waiting for the sink to acknowledge {in_flight} records");
    }
    let timeout = if shared.fatal.is_set() {
        Duration::from_secs(10)
    } else {
        DRAIN_TIMEOUT
    };
    if let Err(e) = shared.sink.flush(timeout) {
        shared.fatal.stop(format!(
            "sink: {e} while draining; uncommitted records will be read again"
        ));
    }
    shared.commit_all(&consumer);
    leave_group(consumer);
    // The loop ended on `stop` or a fatal error, and so do the tables' readers.
    drop(
        shared
            .table_readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(),
    );
    let snapshot = shared.metrics.snapshot();
    match shared.fatal.take() {
        Some(error) => Err(error),
        None => Ok(snapshot),
    }
}

/// Leave the group, waiting at most [`LEAVE_TIMEOUT`]. librdkafka's close waits for the
/// coordinator's answers (to the leave, to commits and assignments in flight), each up to
/// `socket.timeout.ms`, and rdkafka's drop polls until it is closed, without a bound: a
/// coordinator that did not answer held a stop past a minute. The final revoke commits again
/// what the run delivered; cut short, at least once, its records are read again by the next
/// owner (exactly once, the workers committed their transactions when they stopped). A member
/// that leaves without a word is dropped by the group after `session.timeout.ms`.
fn leave_group(consumer: Consumer) {
    let (left, leaving) = crossbeam_channel::bounded(1);
    // A thread that cannot start drops the consumer in place, waiting as long as it takes.
    let spawned = thread::Builder::new()
        .name("weir-leave".into())
        .spawn(move || {
            drop(consumer);
            let _ = left.send(());
        });
    let timed_out = matches!(
        leaving.recv_timeout(LEAVE_TIMEOUT),
        Err(crossbeam_channel::RecvTimeoutError::Timeout)
    );
    if spawned.is_ok() && timed_out {
        tracing::warn!(
            "the consumer did not leave the group within {LEAVE_TIMEOUT:?} (its coordinator did \
             not answer); stopping without waiting: the group drops this member after its \
             session timeout, and offsets not committed by then are read again"
        );
    }
}

/// The rebalance callback's view of the run, set once the run is prepared.
type Slot = Arc<OnceLock<Arc<Shared>>>;
