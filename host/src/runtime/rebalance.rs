//! The group moves partitions: take assigned ones over (fencing the previous owner, reading
//! where to resume, restoring state) before their first record, and drain revoked ones (finish
//! their batches, commit, then let go) before another member takes them.

use std::{
    sync::{atomic::Ordering, Arc},
    thread,
    time::Instant,
};

use rdkafka::{
    consumer::{Consumer as _, Rebalance},
    TopicPartitionList,
};

use super::{partition::StageState, Partition, Shared, Slot, Work, DRAIN_TIMEOUT};
use crate::{
    chain::{join::Sides, window},
    kafka::{source::Positions, Consumer, Sink},
    Error,
};

/// What [`Shared::take_over`] gets ready for a newly assigned partition.
struct Takeover {
    transaction: Option<Sink>,
    /// Where to start reading, when the pipeline keeps the position itself.
    position: Option<i64>,
    states: Vec<StageState>,
    sides: Sides,
}

/// The consumer's rebalance callback, which reaches the run through `slot` once it is set.
pub(super) fn hook(
    slot: Slot,
) -> impl Fn(&Consumer, &Rebalance<'_>, bool) -> Positions + Send + Sync + 'static {
    move |consumer, rebalance, after| {
        let Some(shared) = slot.get() else {
            return Vec::new();
        };
        if after {
            // Only now does the group metadata carry the new generation: offsets sent to a
            // transaction with the old one are refused (or, on some brokers, silently dropped).
            shared.refresh_group_metadata(consumer);
            return Vec::new();
        }
        match rebalance {
            Rebalance::Assign(list) => shared.assign(consumer, list),
            Rebalance::Revoke(list) => {
                shared.revoke(consumer, list);
                Vec::new()
            }
            Rebalance::Error(e) => {
                tracing::warn!("rebalance: {e}");
                Vec::new()
            }
        }
    }
}

impl Shared {
    /// Exactly once: take the consumer's current group metadata for the next commits.
    fn refresh_group_metadata(&self, consumer: &Consumer) {
        if let Some(eos) = &self.exactly_once {
            eos.refresh_group_metadata(consumer);
        }
    }

    /// Take over newly assigned partitions; where to start reading those whose position the
    /// pipeline keeps itself.
    fn assign(&self, consumer: &Consumer, list: &TopicPartitionList) -> Positions {
        self.refresh_group_metadata(consumer);
        // Every new partition holds the window watermarks back from the start: a worker firing
        // windows while the later ones are still being restored would see too high a watermark
        // and fire windows early.
        for e in list.elements() {
            for (_, _, clock) in &self.clocks {
                clock.assign(e.topic(), e.partition(), Instant::now());
            }
        }
        let keys: Vec<(String, i32)> = list
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        let health = &self.metrics.health;
        if health.restoring.fetch_add(keys.len(), Ordering::Relaxed) == 0 {
            health.restore_total.store(0, Ordering::Relaxed);
            health.restore_read.store(0, Ordering::Relaxed);
        }
        // Taking a partition over is a few round trips to the brokers (fencing its previous
        // producer, reading its position and changelogs): all at once.
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
        self.want_table_partitions(&keys);
        let done = || self.stop.load(Ordering::Relaxed) || self.fatal.is_set();
        super::tables::catch_up(&self.tables, consumer, &done);
        health.restoring.fetch_sub(keys.len(), Ordering::Relaxed);
        let mut positions = Vec::new();
        for ((topic, partition), taken) in keys.into_iter().zip(taken) {
            if let Some(offset) = self.place(topic.clone(), partition, taken) {
                positions.push((topic, partition, offset));
            }
        }
        positions
    }

    /// Partitioned tables read the partitions of the numbers assigned of the source's topics:
    /// those assigned before, and `new`.
    fn want_table_partitions(&self, new: &[(String, i32)]) {
        let assigned = self.lock_assigned();
        let numbers = assigned.partitions.keys().chain(new).map(|(_, p)| *p);
        super::tables::want(&self.tables, &numbers.collect());
    }

    /// What a new owner of `topic`/`partition` needs before its first record: under exactly
    /// once its producer (created first: fencing the previous owner aborts that one's open
    /// transaction, which must be settled before anything of it is read) and its position; its
    /// stages' state, brought up to date from the changelogs.
    fn take_over(&self, topic: &str, partition: i32) -> Result<Takeover, Error> {
        let (transaction, position) = match &self.exactly_once {
            Some(eos) => {
                let txn = eos.begin(topic, partition, &self.metrics, &self.fatal)?;
                (Some(txn), eos.position(topic, partition)?)
            }
            None => (None, None),
        };
        let states = self.restore(topic, partition)?;
        let sides = self.joins.open(partition, &states, &self.fatal)?;
        Ok(Takeover {
            transaction,
            position,
            states,
            sides,
        })
    }

    /// Give a taken-over partition to the least loaded worker and resume its window clocks;
    /// where it resumes, if the pipeline keeps its position.
    fn place(&self, topic: String, partition: i32, taken: Result<Takeover, Error>) -> Option<i64> {
        let mut assigned = self.lock_assigned();
        let worker = (0..assigned.load.len())
            .min_by_key(|&w| assigned.load[w])
            .unwrap_or(0);
        assigned.load[worker] += 1;
        let (transaction, position, states, sides) = match taken {
            Ok(t) => (t.transaction, t.position, t.states, t.sides),
            Err(e) => {
                self.fatal
                    .stop(format!("cannot take over {topic}[{partition}]: {e}"));
                (None, None, Vec::new(), Vec::new())
            }
        };
        if let Some(offset) = position {
            tracing::info!(
                %topic,
                partition,
                offset,
                "partition resumes where its last committed transaction left it"
            );
        }
        tracing::info!(%topic, partition, worker, "partition assigned");
        for (stage, _, clock) in &self.clocks {
            match states.iter().find(|s| s.stage == *stage) {
                Some(s) => window::resume(clock, &*s.state, &topic, partition, Instant::now()),
                None => clock.assign(&topic, partition, Instant::now()),
            }
        }
        self.metrics
            .partition(&topic, partition, |view| view.worker = worker);
        assigned.partitions.insert(
            (topic.clone(), partition),
            Partition::new(topic, partition, worker, states, sides, transaction),
        );
        let count = assigned.partitions.len();
        self.metrics.health.assigned.store(count, Ordering::Relaxed);
        position
    }

    /// Drain revoked partitions: let the workers finish what they have of them, wait for the
    /// sink, commit, and only then let them go.
    fn revoke(&self, consumer: &Consumer, list: &TopicPartitionList) {
        let revoked: Vec<Arc<Partition>> = {
            let mut assigned = self.lock_assigned();
            let revoked = list
                .elements()
                .iter()
                .filter_map(|e| {
                    let p = assigned
                        .partitions
                        .remove(&(e.topic().to_string(), e.partition()))?;
                    assigned.load[p.worker] -= 1;
                    Some(p)
                })
                .collect();
            let count = assigned.partitions.len();
            self.metrics.health.assigned.store(count, Ordering::Relaxed);
            revoked
        };
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
            self.close_transactions(consumer, &revoked);
        } else {
            if let Err(e) = self.sink.flush(DRAIN_TIMEOUT) {
                tracing::warn!("sink: {e} while draining revoked partitions");
            }
            self.commit(consumer, &revoked);
        }
        // Only now that no worker touches them: a batch in hand would otherwise put an aborted
        // batch's progress back into the watermark.
        for p in &revoked {
            for (_, _, clock) in &self.clocks {
                clock.forget(&p.topic, p.partition);
            }
            self.metrics.forget_partition(&p.topic, p.partition);
            tracing::info!(topic = %p.topic, partition = p.partition, "partition revoked");
        }
        self.want_table_partitions(&[]);
    }

    /// Exactly once: each worker commits the transaction of its revoked partitions, unless the
    /// group already gave them to another member (this one was presumed dead): that one fenced
    /// these producers, so a commit could only fail, and slowly.
    fn close_transactions(&self, consumer: &Consumer, revoked: &[Arc<Partition>]) {
        let lost = consumer.assignment_lost();
        if lost {
            tracing::warn!(
                "the group reassigned this instance's partitions while it was unresponsive; \
                 their open transactions are dropped uncommitted"
            );
        }
        for p in revoked {
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
    }
}
