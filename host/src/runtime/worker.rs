//! A worker thread: runs the chain over its partitions' batches and hands the results to
//! [`delivery`](super::delivery); fires window stages' windows between batches as the watermark
//! moves; and, exactly once, commits each of its partitions' transactions every checkpoint
//! interval (a partition's records and its transaction stay on one thread).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::{Batch, Partition, Shared, Work};
use crate::{config::ErrorPolicy, metrics::Metrics, reload::LiveChain};

/// How often window stages look at the watermark between batches (Flink's default
/// auto-watermark interval): it moves with other partitions' records and with idleness.
const WINDOW_TICK: Duration = Duration::from_millis(200);

/// Run worker `id` on `inbox` until told to stop.
pub(super) fn work(
    id: usize,
    chain: LiveChain,
    inbox: Receiver<Work>,
    shared: &Shared,
    interval: Duration,
) {
    let mut worker = Worker::new(id, chain, shared, interval);
    while worker.step(&inbox) {}
    worker.finish(&inbox);
}

struct Worker<'a> {
    id: usize,
    chain: LiveChain,
    shared: &'a Shared,
    interval: Duration,
    /// Whether the chain has window stages, which fire between batches too.
    windows: bool,
    /// Exactly once: the partitions with an open transaction to commit at the next checkpoint.
    open: Vec<Arc<Partition>>,
    /// Window stages: the partitions assigned to this worker, to fire their windows between
    /// batches (including those with nothing left to read).
    owned: Vec<Arc<Partition>>,
    checkpointed: Instant,
    ticked: Instant,
}

impl<'a> Worker<'a> {
    fn new(id: usize, mut chain: LiveChain, shared: &'a Shared, interval: Duration) -> Self {
        let windows = chain.has_timers();
        let defer = windows && shared.exactly_once.is_none();
        let stop_at_failure = shared.policy == ErrorPolicy::Fail;
        let metrics = shared.metrics.clone();
        // Every version this worker moves to (hot reload) is prepared the same way.
        chain.prepare_each(move |c| {
            if !metrics.totals_only {
                c.report_to(&metrics);
            }
            if defer {
                c.defer_until_delivered();
            }
            if stop_at_failure {
                c.stop_at_first_failure();
            }
        });
        Worker {
            id,
            chain,
            shared,
            interval,
            windows,
            open: Vec::new(),
            owned: Vec::new(),
            checkpointed: Instant::now(),
            ticked: Instant::now(),
        }
    }

    /// Take one piece of work (or wait for the next tick or checkpoint); false once stopped.
    fn step(&mut self, inbox: &Receiver<Work>) -> bool {
        let mut wait = self.interval.saturating_sub(self.checkpointed.elapsed());
        if self.windows {
            wait = wait.min(WINDOW_TICK.saturating_sub(self.ticked.elapsed()));
        }
        match inbox.recv_timeout(wait) {
            Ok(Work::Batch(batch)) => {
                let partition = batch.partition.clone();
                self.chain.refresh();
                process(&mut self.chain, batch, self.shared);
                self.touch(&partition);
            }
            Ok(Work::Close {
                partition,
                commit,
                done,
            }) => {
                if let Some(i) = self.open.iter().position(|p| Arc::ptr_eq(p, &partition)) {
                    let p = self.open.swap_remove(i);
                    if commit {
                        self.shared.checkpoint(&p);
                    }
                }
                let _ = done.send(());
            }
            Ok(Work::Stop) | Err(RecvTimeoutError::Disconnected) => {
                // Windows the watermark passed since the last tick go out with the last commit.
                let owned: Vec<_> = self
                    .owned
                    .iter()
                    .filter(|p| !p.is_revoked())
                    .cloned()
                    .collect();
                self.fire(&owned);
                return false;
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
        if self.windows && self.ticked.elapsed() >= WINDOW_TICK {
            self.tick();
        }
        if self.checkpointed.elapsed() >= self.interval {
            for p in std::mem::take(&mut self.open) {
                self.shared.checkpoint(&p);
            }
            self.checkpointed = Instant::now();
        }
        true
    }

    /// Exactly once: `partition` has something to commit at the next checkpoint.
    fn touch(&mut self, partition: &Arc<Partition>) {
        if partition.transaction.is_some() && !self.open.iter().any(|p| Arc::ptr_eq(p, partition)) {
            self.open.push(partition.clone());
        }
    }

    /// Between batches as much as before one: move to a new version (a worker whose partitions
    /// are idle still does, for the windows it fires), forget partitions gone to others, and
    /// fire what the watermark passed in every partition of this worker.
    fn tick(&mut self) {
        self.chain.refresh();
        let assigned: Vec<Arc<Partition>> = {
            let all = self.shared.lock_assigned();
            all.partitions
                .values()
                .filter(|p| p.worker == self.id)
                .cloned()
                .collect()
        };
        for gone in self
            .owned
            .iter()
            .filter(|p| !assigned.iter().any(|a| Arc::ptr_eq(a, p)))
        {
            self.chain.forget(&gone.topic, gone.partition);
        }
        self.fire(&assigned);
        self.owned = assigned;
        self.ticked = Instant::now();
    }

    fn fire(&mut self, partitions: &[Arc<Partition>]) {
        for p in partitions {
            if tick(&mut self.chain, p, self.shared) {
                self.touch(p);
            }
        }
    }

    /// Commit (or, after a fatal error, abort) what is open, and settle what is still queued.
    fn finish(mut self, inbox: &Receiver<Work>) {
        for p in std::mem::take(&mut self.open) {
            self.shared.checkpoint(&p);
        }
        // What is still queued (after a fatal error: batches are skipped, not processed) will
        // never be: say so, or the final revocation waits for it in vain.
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
    prepare(chain, &batch.partition);
    let output = chain.process(batch.records);
    shared.deliver(
        chain,
        output,
        &batch.partition,
        Some(batch.next_offset),
        originals.as_deref(),
    );
    Metrics::add(&shared.metrics.processed, count);
}

/// Point the chain's stages at `partition`'s state and join sides.
fn prepare(chain: &mut LiveChain, partition: &Partition) {
    for s in &partition.states {
        chain.set_state(s.stage, s.state.clone());
    }
    for (stage, side) in &partition.sides {
        chain.set_side(*stage, side.clone());
    }
}

/// Fire the windows of `partition` that the watermark passed since its last batch; true if
/// anything came of it.
fn tick(chain: &mut LiveChain, partition: &Arc<Partition>, shared: &Shared) -> bool {
    if shared.fatal.is_set() || !partition.dispatch() {
        return false;
    }
    prepare(chain, partition);
    let output = chain.advance(&partition.topic, partition.partition);
    let any = !(output.records.is_empty() && output.failures.is_empty() && output.late.is_empty())
        || output.changed;
    shared.deliver(chain, output, partition, partition.next_offset(), None);
    any
}
