//! Checkpoints: every checkpoint interval, commit what is safe to commit. At least once, that is
//! each partition's offsets up to its fully acknowledged batches, to the group (the consumer
//! thread does it). Exactly once, it is each partition's transaction: its outputs, its stages'
//! state changes and its position, together (the partition's worker does it); the local store
//! takes the state changes only once the transaction has committed.

use std::{sync::Arc, time::Instant};

use rdkafka::{
    consumer::{CommitMode, Consumer as _},
    Offset, TopicPartitionList,
};

use super::{Partition, Shared};
use crate::{
    kafka::{Acks, Consumer},
    metrics::Metrics,
};

impl Shared {
    /// Exactly once: commit partition `p`'s open transaction with its state changes and the
    /// offset after its last processed record; after a fatal error, abort it instead, unless
    /// the error is a record of `p` failing under `policy = "fail"`: the transaction then holds
    /// exactly the records before it (nothing after it was sent or changed state), and
    /// commits up to it, as at least once does.
    pub(super) fn checkpoint(&self, p: &Partition) {
        let (Some(txn), Some(eos)) = (&p.transaction, &self.exactly_once) else {
            return;
        };
        if self.fatal.is_set() && self.fatal.record_stop(&p.topic, p.partition).is_none() {
            txn.abort();
            return;
        }
        let started = Instant::now();
        let acks = Acks::new();
        let mut pending = Vec::with_capacity(p.states.len());
        for s in &p.states {
            let (changes, to_store) = s.state.take();
            if let Err(e) = txn.send_changelog(&s.changelog, p.partition, &changes, &acks) {
                self.fatal.stop(format!("changelog `{}`: {e}", s.changelog));
                txn.abort();
                return;
            }
            pending.push((s, to_store));
        }
        if let Err(e) = eos.commit(txn, &p.topic, p.partition, p.next_offset(), &acks) {
            Metrics::add(&self.metrics.commit_failures, 1);
            self.fatal.stop(e.to_string());
            return;
        }
        self.metrics.checkpointed(1, started.elapsed());
        for (s, to_store) in pending {
            if let Err(e) = s.state.persist(to_store) {
                // The changelog has what the store could not take: a restart restores it from
                // there.
                self.fatal.stop(format!(
                    "{e}; the transaction is committed, the store catches up from `{}` after a \
                     restart",
                    s.changelog
                ));
            }
        }
    }

    /// At least once: commit every assigned partition's acknowledged offsets.
    pub(super) fn commit_all(&self, consumer: &Consumer) {
        if self.exactly_once.is_some() {
            return;
        }
        let partitions: Vec<Arc<Partition>> =
            self.lock_assigned().partitions.values().cloned().collect();
        self.commit(consumer, &partitions);
    }

    /// Commit the acknowledged offsets of `partitions`, synchronously: once a second is cheap,
    /// and a commit that returns is one the next owner will see.
    pub(super) fn commit(&self, consumer: &Consumer, partitions: &[Arc<Partition>]) {
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
        let started = Instant::now();
        match consumer.commit(&list, CommitMode::Sync) {
            Ok(()) => {
                self.metrics.checkpointed(moved.len(), started.elapsed());
                for (p, offset) in moved {
                    p.committed(offset);
                }
            }
            Err(e) => {
                Metrics::add(&self.metrics.commit_failures, 1);
                tracing::warn!("committing offsets failed (retried at the next checkpoint): {e}")
            }
        }
    }
}
