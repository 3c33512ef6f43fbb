//! The consumer thread: polls, groups records per partition into batches, and hands each batch
//! to the worker that owns its partition, waiting while that worker's queue is full (which is
//! how a slow chain or sink finally stops consumption). At least once, it also commits every
//! checkpoint interval.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use crossbeam_channel::SendTimeoutError;
use rdkafka::{
    consumer::Consumer as _,
    error::{KafkaError, RDKafkaErrorCode},
    message::BorrowedMessage,
    Message as _, Offset,
};

use super::{Batch, Shared, Work};
use crate::{
    kafka::{source, Consumer},
    metrics::{Metrics, Snapshot, SHADOW_LOG_EVERY},
};

/// How often partitions' positions and ends are read for the metrics.
const OBSERVE_EVERY: Duration = Duration::from_secs(1);

/// The consumer thread's loop and the batches it is filling.
pub(super) struct Poller<'a> {
    consumer: &'a Consumer,
    shared: &'a Shared,
    batch_size: usize,
    pending: Vec<Batch>,
    /// Records read as of the last [`Poller::sample_partitions`].
    consumed: u64,
}

impl<'a> Poller<'a> {
    pub(super) fn new(consumer: &'a Consumer, shared: &'a Shared, batch_size: usize) -> Self {
        Poller {
            consumer,
            shared,
            batch_size,
            pending: Vec::new(),
            consumed: 0,
        }
    }

    pub(super) fn run(
        &mut self,
        stop: &AtomicBool,
        checkpoint: Duration,
        report_every: Option<Duration>,
    ) {
        let mut last_commit = Instant::now();
        let mut last_report = Instant::now();
        let started = Instant::now();
        let mut reported = Snapshot::default();
        let mut observed = Instant::now();
        let mut shadows_logged = Instant::now();
        let health = &self.shared.metrics.health;
        health.running.store(true, Ordering::Relaxed);
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
            if shadows_logged.elapsed() >= SHADOW_LOG_EVERY {
                self.shared.metrics.log_shadows();
                shadows_logged = Instant::now();
            }
            if observed.elapsed() >= OBSERVE_EVERY {
                self.sample_partitions();
                observed = Instant::now();
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
        health.running.store(false, Ordering::Relaxed);
        self.shared.metrics.log_shadows();
    }

    /// Each assigned partition's position and end, for `/metrics` and the dashboard: the
    /// consumer's own (local) figures, no request to the broker.
    fn sample_partitions(&mut self) {
        let metrics = &self.shared.metrics;
        // Down since the client could not reach a broker: until records come again or a
        // broker answers a metadata request (at once in a rolling restart, where the others
        // do; short, as this thread polls).
        let consumed = metrics.consumed.load(Ordering::Relaxed);
        let context = self.consumer.context();
        if context.brokers_down()
            && (consumed != self.consumed
                || self
                    .consumer
                    .fetch_metadata(None, Duration::from_millis(200))
                    .is_ok())
        {
            context.brokers_back();
        }
        self.consumed = consumed;
        let down = context.brokers_down();
        metrics.health.brokers_down.store(down, Ordering::Relaxed);
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        for e in positions.elements() {
            let end = source::cached_end(self.consumer, e.topic(), e.partition());
            let position = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            let watermarks: Vec<(&String, i64)> = self
                .shared
                .clocks
                .iter()
                .filter_map(|(_, stage, clock)| {
                    Some((stage, clock.partition_watermark(e.topic(), e.partition())?))
                })
                .collect();
            metrics.partition(e.topic(), e.partition(), |view| {
                view.position = position.or(view.position);
                view.high_watermark = end.or(view.high_watermark);
                for (stage, w) in watermarks {
                    view.watermarks.insert(stage.clone(), w);
                }
            });
        }
    }

    fn take(&mut self, message: Result<BorrowedMessage<'_>, KafkaError>) {
        let message = match message {
            Ok(message) => message,
            Err(e) => return self.consumer_error(e),
        };
        Metrics::add(&self.shared.metrics.consumed, 1);
        let (topic, partition) = (message.topic(), message.partition());
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
            ) => self.shared.fatal.stop(format!("source: {e}")),
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
