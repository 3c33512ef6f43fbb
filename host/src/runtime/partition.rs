//! One assigned source partition, from assignment to revocation: which of its offsets may be
//! committed (at-least-once bookkeeping), its stages' state and, exactly once, its transaction.
//!
//! A batch's offsets become committable only when the sink has acknowledged every record derived
//! from it *and* from every earlier batch of the same partition, so a commit never covers a
//! record whose output could still be lost. Batches of one partition are processed in order by
//! one worker, so their acknowledgements are tracked in a queue and the committable offset is
//! the end of the longest fully acknowledged prefix.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicBool, AtomicI64, Ordering},
        Arc, Condvar, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use crate::{
    chain::join::Sides,
    kafka::{Acks, Sink},
    state::PartitionState,
};

/// One stateful stage's state for one partition, and the changelog its changes go to.
pub struct StageState {
    /// Index of the stage in the chain.
    pub stage: usize,
    pub changelog: String,
    pub state: Arc<PartitionState>,
}

impl std::fmt::Debug for StageState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageState")
            .field("stage", &self.stage)
            .field("changelog", &self.changelog)
            .finish()
    }
}

/// One assigned partition, from assignment to revocation. A re-assignment is a new value, so
/// work queued for an old assignment can tell it is stale.
#[derive(Debug)]
pub struct Partition {
    pub topic: String,
    pub partition: i32,
    /// The worker that runs this partition's batches (one worker keeps them in order).
    pub worker: usize,
    /// The keyed state of each stateful stage for this partition.
    pub states: Vec<StageState>,
    /// Each join stage's reader of this partition of the topic it joins, by stage index.
    pub sides: Sides,
    /// Exactly once: this partition's transactional producer (outputs, changelogs and offsets
    /// of the partition commit together).
    pub transaction: Option<Sink>,
    /// The offset after the last record processed (-1: none yet).
    next: AtomicI64,
    /// Set on revocation, read for every record polled: kept out of the lock.
    revoked: AtomicBool,
    inner: Mutex<Progress>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Progress {
    dispatched: u64,
    processed: u64,
    in_flight: VecDeque<(Arc<Acks>, i64)>,
    /// The next offset to consume once everything before it is acknowledged.
    committable: Option<i64>,
    committed: Option<i64>,
    /// A record failed under `policy = "fail"`: nothing at or after it may be committed.
    halted: bool,
}

impl Partition {
    pub fn new(
        topic: String,
        partition: i32,
        worker: usize,
        states: Vec<StageState>,
        sides: Sides,
        transaction: Option<Sink>,
    ) -> Arc<Partition> {
        Arc::new(Partition {
            topic,
            partition,
            worker,
            states,
            sides,
            transaction,
            next: AtomicI64::new(-1),
            revoked: AtomicBool::new(false),
            inner: Mutex::new(Progress::default()),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Progress> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A batch was handed to the worker; false if the partition was revoked meanwhile (the batch
    /// must then be dropped: the next owner consumes it again from the committed offset).
    pub fn dispatch(&self) -> bool {
        if self.is_revoked() {
            return false;
        }
        self.lock().dispatched += 1;
        true
    }

    /// The worker finished a batch; once `acks` completes, offsets up to `next_offset` (exclusive)
    /// may be committed. `halt` marks a batch cut short by a failing record.
    pub fn processed(&self, acks: Arc<Acks>, next_offset: i64, halt: bool) {
        self.next.store(next_offset, Ordering::Release);
        let mut p = self.lock();
        p.processed += 1;
        if !p.halted {
            p.in_flight.push_back((acks, next_offset));
            p.halted = halt;
        }
        drop(p);
        self.changed.notify_all();
    }

    /// The worker finished work that moves no offset (windows fired before any record of this
    /// assignment was processed).
    pub fn settled(&self) {
        self.lock().processed += 1;
        self.changed.notify_all();
    }

    /// The worker skipped a batch (the pipeline is stopping on an error).
    pub fn abandoned(&self) {
        let mut p = self.lock();
        p.processed += 1;
        p.halted = true;
        drop(p);
        self.changed.notify_all();
    }

    /// Stop taking batches; see [`Partition::dispatch`].
    pub fn revoke(&self) {
        self.revoked.store(true, Ordering::Release);
    }

    /// The offset after the last record processed, if any was.
    pub fn next_offset(&self) -> Option<i64> {
        let next = self.next.load(Ordering::Acquire);
        (next >= 0).then_some(next)
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }

    /// Wait until the worker has finished every batch dispatched so far; false on timeout.
    pub fn wait_processed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut p = self.lock();
        while p.processed < p.dispatched {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            p = self
                .changed
                .wait_timeout(p, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// The offset to commit now, if it moved since the last commit. A batch whose delivery
    /// failed stays at the front forever: nothing after it is ever committed.
    pub fn advance(&self) -> Option<i64> {
        let mut p = self.lock();
        while let Some((acks, next)) = p.in_flight.front() {
            match acks.done() {
                Some(true) => {
                    p.committable = Some(*next);
                    p.in_flight.pop_front();
                }
                _ => break,
            }
        }
        let offset = p.committable?;
        (p.committed != Some(offset)).then_some(offset)
    }

    /// `offset` (from [`Partition::advance`]) was committed.
    pub fn committed(&self, offset: i64) {
        self.lock().committed = Some(offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_the_acknowledged_prefix() {
        let p = Partition::new("t".into(), 0, 0, Vec::new(), Vec::new(), None);
        let (a, b) = (Acks::new(), Acks::new());
        a.expect();
        a.sealed();
        b.expect();
        b.sealed();
        assert!(p.dispatch() && p.dispatch());
        p.processed(a.clone(), 10, false);
        p.processed(b.clone(), 20, false);
        assert_eq!(p.advance(), None, "nothing acknowledged yet");
        b.delivered(true);
        assert_eq!(p.advance(), None, "a later batch alone commits nothing");
        a.delivered(true);
        assert_eq!(p.advance(), Some(20));
        p.committed(20);
        assert_eq!(p.advance(), None, "no change since the last commit");
    }

    #[test]
    fn a_failed_delivery_blocks_every_later_offset() {
        let p = Partition::new("t".into(), 0, 0, Vec::new(), Vec::new(), None);
        let (a, b) = (Acks::new(), Acks::new());
        a.expect();
        a.sealed();
        b.sealed();
        p.processed(a.clone(), 10, false);
        p.processed(b, 20, false);
        a.delivered(false);
        assert_eq!(p.advance(), None);
    }

    #[test]
    fn a_halted_partition_commits_up_to_the_failing_record() {
        let p = Partition::new("t".into(), 0, 0, Vec::new(), Vec::new(), None);
        let (a, b) = (Acks::new(), Acks::new());
        a.sealed();
        b.sealed();
        p.processed(a, 7, true);
        p.processed(b, 20, false);
        assert_eq!(p.advance(), Some(7));
    }

    #[test]
    fn revoked_partitions_take_no_more_batches() {
        let p = Partition::new("t".into(), 0, 0, Vec::new(), Vec::new(), None);
        assert!(p.dispatch());
        p.revoke();
        assert!(!p.dispatch());
        assert!(!p.wait_processed(Duration::from_millis(1)));
        p.processed(Acks::new(), 1, false);
        assert!(p.wait_processed(Duration::from_millis(1)));
    }
}
