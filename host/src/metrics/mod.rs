//! What a running pipeline counts and measures, shared between its threads and whoever reports
//! it: the log's progress line, `/metrics` (Prometheus) and `/api/status` (the dashboard).
//!
//! Recording on the data path is an atomic add, per batch where it can be (a stage's counts and
//! call time) and per record only where it must be (a record's latency at its acknowledgement):
//! no lock, no allocation. What changes once a second or less (partitions' positions, checkpoints,
//! reloads, dead letters' causes) sits behind a mutex.

mod histogram;
mod process;
mod prometheus;
mod shadow;
mod stage;
mod status;

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, SystemTime},
};

use crate::error::ErrorKind;

pub use histogram::{Histogram, HistogramSnapshot, BOUNDS};
pub use prometheus::encode as prometheus_text;
pub use shadow::{Compared, ShadowStats, ShadowView};
pub use stage::{Call, PluginInfo, StageProbe, StageStats};
pub use status::{RestoreProgress, Status, StatusSampler};

/// How often a run logs how its shadows compare with the live builds.
pub const SHADOW_LOG_EVERY: Duration = Duration::from_secs(5);

/// Running totals; every field only grows.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Records read from the source.
    pub consumed: AtomicU64,
    /// Source records that went through the chain (whatever became of them).
    pub processed: AtomicU64,
    /// Records handed to the sink (outputs of the last stage).
    pub produced: AtomicU64,
    /// Records (outputs and dead letters) the broker acknowledged.
    pub delivered: AtomicU64,
    /// Records a stage failed on (whatever the policy did with them).
    pub failed: AtomicU64,
    /// Failed records sent to the dead-letter topic.
    pub dead_lettered: AtomicU64,
    /// Failed records dropped by `policy = "skip"`.
    pub skipped: AtomicU64,
    /// Records a window stage found too late for all their windows.
    pub late: AtomicU64,
    /// Checkpoints committed: offsets (at least once) or a partition's transaction (exactly
    /// once).
    pub commits: AtomicU64,
    /// Versions of the stages swapped in by hot reload, rollbacks included.
    pub swaps: AtomicU64,
    /// Of those, rollbacks to the version before one that failed its trial.
    pub rollbacks: AtomicU64,
    /// Versions hot reload refused (the running one stayed).
    pub rejected: AtomicU64,
    /// Keep the totals above only: no per-stage counts and call times, no latency (what the
    /// benchmark compares the full metrics with).
    pub totals_only: bool,
    /// Dead letters per [`ErrorKind`], in the order of [`ErrorKind::ALL`].
    pub dead_letter_kinds: [AtomicU64; ErrorKind::ALL.len()],
    /// From a record's timestamp to the sink's acknowledgement of it (or of its dead letter).
    pub latency: Histogram,
    /// Checkpoints: a commit of offsets (at least once) or of a partition's transaction
    /// (exactly once). Those that failed are counted, not timed.
    pub commit_seconds: Histogram,
    pub commit_failures: AtomicU64,
    /// Restoring a partition's state from its changelog.
    pub restore_seconds: Histogram,
    pub health: Health,
    stages: Mutex<Vec<Arc<StageStats>>>,
    partitions: Mutex<BTreeMap<(String, i32), PartitionView>>,
    tables: Mutex<BTreeMap<String, TableView>>,
    /// Join stages' reads of the topics they join, by stage and partition.
    joins: Mutex<BTreeMap<(String, i32), JoinView>>,
    recent: Mutex<Recent>,
    info: Mutex<RunInfo>,
}

/// What `/health` and `/ready` answer from.
#[derive(Debug, Default)]
pub struct Health {
    /// The run's loop is going (set once it polls, cleared when it ends).
    pub running: AtomicBool,
    /// Partitions assigned to this instance.
    pub assigned: AtomicUsize,
    /// Partitions whose state is being restored.
    pub restoring: AtomicUsize,
    /// Changelog offsets the restores under way have to read, and have read: counted afresh
    /// when restoring starts from none.
    pub restore_total: AtomicU64,
    pub restore_read: AtomicU64,
    /// The client's last word on the brokers: reachable or not.
    pub brokers_down: AtomicBool,
    /// Tables not yet read up to their topics' ends (the source starts after them).
    pub loading_tables: AtomicUsize,
}

impl Health {
    /// Whether the instance does its work: partitions assigned, none restoring, brokers
    /// reachable.
    pub fn ready(&self) -> Result<(), &'static str> {
        if self.loading_tables.load(Relaxed) > 0 {
            Err("reading tables")
        } else if !self.running.load(Relaxed) {
            Err("not running")
        } else if self.brokers_down.load(Relaxed) {
            Err("the brokers cannot be reached")
        } else if self.restoring.load(Relaxed) > 0 {
            Err("restoring state")
        } else if self.assigned.load(Relaxed) == 0 {
            Err("no partitions assigned")
        } else {
            Ok(())
        }
    }
}

/// A source partition as this instance sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PartitionView {
    pub topic: String,
    pub partition: i32,
    pub worker: usize,
    /// The next offset to read.
    pub position: Option<i64>,
    /// The broker's end of the partition, as last fetched.
    pub high_watermark: Option<i64>,
    /// Event time (ms) the partition's windows are complete up to, per window stage.
    pub watermarks: BTreeMap<String, i64>,
}

/// A table kept from a topic (`[[table]]`), as this instance reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TableView {
    pub table: String,
    pub topic: String,
    /// Records of the topic applied (or left out as unreadable) since the run started.
    pub records_read: u64,
    /// Offsets of the topic not yet read, as last measured.
    pub lag: i64,
    /// Whether it has been read to its topic's end once (the source waits for that).
    pub loaded: bool,
}

/// One partition of the topic a join stage joins, as this instance reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct JoinView {
    pub stage: String,
    pub topic: String,
    pub partition: i32,
    /// Records of the partition taken into the join since it was assigned here.
    pub records_read: u64,
    /// Offsets of the partition not yet taken in, as librdkafka last saw its end.
    pub lag: i64,
    /// Which reader shows it (a partition moved between workers has two for a moment).
    #[serde(skip)]
    pub reader: u64,
}

impl PartitionView {
    pub fn lag(&self) -> Option<i64> {
        Some((self.high_watermark? - self.position?).max(0))
    }
}

/// The last few of what happens now and then, for the dashboard.
#[derive(Debug, Default)]
struct Recent {
    checkpoints: VecDeque<CheckpointView>,
    dead_letters: VecDeque<DeadLetterView>,
    reloads: VecDeque<ReloadView>,
}

/// How many of each [`Recent`] list are kept.
const RECENT: usize = 20;

#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckpointView {
    /// Unix time, ms.
    pub at_ms: u64,
    pub seconds: f64,
    /// Partitions it covered.
    pub partitions: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetterView {
    pub at_ms: u64,
    pub stage: String,
    pub kind: &'static str,
    pub cause: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadView {
    pub at_ms: u64,
    /// `applied`, `rejected` or `rolled-back`.
    pub outcome: &'static str,
    pub detail: String,
}

/// What the run is, for the build-info series and the dashboard.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RunInfo {
    pub pipeline: String,
    pub guarantee: String,
    pub workers: usize,
    pub sources: Vec<String>,
    pub sink: String,
    pub dead_letters: Option<String>,
}

/// One reading of [`Metrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Snapshot {
    pub consumed: u64,
    pub processed: u64,
    pub produced: u64,
    pub delivered: u64,
    pub failed: u64,
    pub dead_lettered: u64,
    pub skipped: u64,
    pub late: u64,
    pub commits: u64,
    pub swaps: u64,
    pub rollbacks: u64,
}

impl Metrics {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            consumed: self.consumed.load(Relaxed),
            processed: self.processed.load(Relaxed),
            produced: self.produced.load(Relaxed),
            delivered: self.delivered.load(Relaxed),
            failed: self.failed.load(Relaxed),
            dead_lettered: self.dead_lettered.load(Relaxed),
            skipped: self.skipped.load(Relaxed),
            late: self.late.load(Relaxed),
            commits: self.commits.load(Relaxed),
            swaps: self.swaps.load(Relaxed),
            rollbacks: self.rollbacks.load(Relaxed),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Relaxed);
    }

    /// Metrics that keep the totals only (see [`Metrics::totals_only`]).
    pub fn totals_only() -> Metrics {
        Metrics {
            totals_only: true,
            ..Metrics::default()
        }
    }

    /// The stats of stage `name`, made on first use; every worker's instance adds to them.
    pub fn stage(&self, name: &str) -> Arc<StageStats> {
        let mut stages = lock(&self.stages);
        if let Some(s) = stages.iter().find(|s| s.name == name) {
            return s.clone();
        }
        let s = Arc::new(StageStats::new(name));
        stages.push(s.clone());
        s
    }

    /// Every stage's stats, in the order first met (the pipeline's order).
    pub fn stages(&self) -> Vec<Arc<StageStats>> {
        lock(&self.stages).clone()
    }

    /// Log each shadow's comparison with its live version, where it moved since the last time
    /// (a run does every few seconds, and at its end).
    pub fn log_shadows(&self) {
        for stage in self.stages() {
            if let Some(line) = stage.shadow.report(&stage.name) {
                tracing::info!("{line}");
            }
        }
    }

    pub fn set_info(&self, info: RunInfo) {
        *lock(&self.info) = info;
    }

    pub fn info(&self) -> RunInfo {
        lock(&self.info).clone()
    }

    /// Record partition `topic`/`partition`'s view (assigned to `worker`); `update` changes it.
    pub fn partition(&self, topic: &str, partition: i32, update: impl FnOnce(&mut PartitionView)) {
        let new = || PartitionView {
            topic: topic.to_string(),
            partition,
            ..PartitionView::default()
        };
        change(
            &self.partitions,
            (topic.to_string(), partition),
            new,
            update,
        );
    }

    /// Change what is shown of table `name`.
    pub fn table(&self, name: &str, update: impl FnOnce(&mut TableView)) {
        let new = || TableView {
            table: name.to_string(),
            ..TableView::default()
        };
        change(&self.tables, name.to_string(), new, update);
    }

    pub fn tables(&self) -> Vec<TableView> {
        lock(&self.tables).values().cloned().collect()
    }

    /// Change what is shown of partition `partition` of the topic join stage `stage` joins.
    pub fn join(&self, stage: &str, partition: i32, update: impl FnOnce(&mut JoinView)) {
        let new = || JoinView {
            stage: stage.to_string(),
            partition,
            ..JoinView::default()
        };
        change(&self.joins, (stage.to_string(), partition), new, update);
    }

    /// Reader `reader` of the partition of the topic `stage` joins is gone: forget what it
    /// showed, unless another reader of it shows something by now.
    pub fn forget_join(&self, stage: &str, partition: i32, reader: u64) {
        let mut all = lock(&self.joins);
        let key = (stage.to_string(), partition);
        if all.get(&key).is_some_and(|v| v.reader == reader) {
            all.remove(&key);
        }
    }

    pub fn joins(&self) -> Vec<JoinView> {
        lock(&self.joins).values().cloned().collect()
    }

    /// The partition is no longer this instance's.
    pub fn forget_partition(&self, topic: &str, partition: i32) {
        lock(&self.partitions).remove(&(topic.to_string(), partition));
    }

    pub fn partitions(&self) -> Vec<PartitionView> {
        lock(&self.partitions).values().cloned().collect()
    }

    /// A checkpoint of `partitions` partitions that took `took`.
    pub fn checkpointed(&self, partitions: usize, took: Duration) {
        Metrics::add(&self.commits, 1);
        self.commit_seconds.observe(took);
        push(
            &mut lock(&self.recent).checkpoints,
            CheckpointView {
                at_ms: now_ms(),
                seconds: took.as_secs_f64(),
                partitions,
            },
        );
    }

    /// A record of `topic`/`partition`@`offset` that failed in `stage` with `kind` went to
    /// the dead-letter topic.
    pub fn dead_lettered(&self, view: impl FnOnce() -> DeadLetterView, kind: ErrorKind) {
        Metrics::add(&self.dead_lettered, 1);
        Metrics::add(&self.dead_letter_kinds[kind.index()], 1);
        if !self.totals_only {
            push(&mut lock(&self.recent).dead_letters, view());
        }
    }

    /// Hot reload's outcome, `applied`, `rejected` or `rolled-back`, with what and why, for the
    /// history; a rejection is counted here (swaps and rollbacks where they are made).
    pub fn reloaded(&self, outcome: &'static str, detail: String) {
        if outcome == "rejected" {
            Metrics::add(&self.rejected, 1);
        }
        push(
            &mut lock(&self.recent).reloads,
            ReloadView {
                at_ms: now_ms(),
                outcome,
                detail,
            },
        );
    }

    pub fn checkpoints(&self) -> Vec<CheckpointView> {
        lock(&self.recent).checkpoints.iter().cloned().collect()
    }

    pub fn recent_dead_letters(&self) -> Vec<DeadLetterView> {
        lock(&self.recent).dead_letters.iter().cloned().collect()
    }

    pub fn reloads(&self) -> Vec<ReloadView> {
        lock(&self.recent).reloads.iter().cloned().collect()
    }
}

/// Keep `item` as the newest of at most [`RECENT`].
fn push<T>(list: &mut VecDeque<T>, item: T) {
    if list.len() == RECENT {
        list.pop_front();
    }
    list.push_back(item);
}

/// Unix time in ms.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A poisoned lock still holds metrics worth reading.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Change the view under `key` in `views`, made by `new` if there is none yet.
fn change<K: Ord, V>(
    views: &Mutex<BTreeMap<K, V>>,
    key: K,
    new: impl FnOnce() -> V,
    update: impl FnOnce(&mut V),
) {
    update(lock(views).entry(key).or_insert_with(new));
}

impl std::fmt::Display for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} in, {} processed, {} out, {} delivered, {} failed ({} dead-lettered, {} skipped), {} commits",
            self.consumed,
            self.processed,
            self.produced,
            self.delivered,
            self.failed,
            self.dead_lettered,
            self.skipped,
            self.commits
        )?;
        if self.late > 0 {
            write!(f, ", {} late", self.late)?;
        }
        if self.swaps > 0 {
            write!(f, ", {} swaps ({} rolled back)", self.swaps, self.rollbacks)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_a_running_loop_partitions_no_restore_and_brokers() {
        let h = Health::default();
        h.loading_tables.store(1, Relaxed);
        assert_eq!(h.ready(), Err("reading tables"));
        h.loading_tables.store(0, Relaxed);
        assert_eq!(h.ready(), Err("not running"));
        h.running.store(true, Relaxed);
        assert_eq!(h.ready(), Err("no partitions assigned"));
        h.assigned.store(2, Relaxed);
        h.restoring.store(1, Relaxed);
        assert_eq!(h.ready(), Err("restoring state"));
        h.restoring.store(0, Relaxed);
        assert_eq!(h.ready(), Ok(()));
        h.brokers_down.store(true, Relaxed);
        assert_eq!(h.ready(), Err("the brokers cannot be reached"));
    }

    #[test]
    fn swaps_and_late_records_are_shown_only_once_there_are_any() {
        let metrics = Metrics::default();
        Metrics::add(&metrics.consumed, 3);
        let quiet = metrics.snapshot().to_string();
        assert!(
            !quiet.contains("swaps") && !quiet.contains("late"),
            "{quiet}"
        );
        Metrics::add(&metrics.swaps, 2);
        Metrics::add(&metrics.rollbacks, 1);
        let shown = metrics.snapshot().to_string();
        assert!(shown.ends_with(", 2 swaps (1 rolled back)"), "{shown}");
    }
}
