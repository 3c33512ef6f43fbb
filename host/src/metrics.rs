//! Counters of a running pipeline, shared between its threads and whoever reports them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

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
    /// Source offsets committed (sum over partitions of records covered by commits).
    pub commits: AtomicU64,
    /// Versions of the stages swapped in by hot reload, rollbacks included.
    pub swaps: AtomicU64,
    /// Of those, rollbacks to the version before one that failed its trial.
    pub rollbacks: AtomicU64,
}

/// One reading of [`Metrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
