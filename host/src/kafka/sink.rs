//! The Kafka producer that results and dead letters go out through.
//!
//! Every record carries the [`Acks`] of the source batch it came from; the delivery callback
//! settles them, which is what lets the source commit offsets only behind acknowledged output.
//! The producer's queue is bounded, and a full queue blocks the worker that sends: that is the
//! backpressure that finally pauses consumption when the sink is slower than the source.

use std::{
    sync::{atomic::Ordering, Arc, Mutex},
    time::Duration,
};

use rdkafka::{
    config::ClientConfig,
    error::{KafkaError, RDKafkaErrorCode},
    message::{Header as KafkaHeader, Message, OwnedHeaders},
    producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer},
    ClientContext,
};

use super::{
    changelog::ChangelogMarks,
    client::{self, ClientErrors},
    Acks,
};
use crate::{
    config::KafkaProperties,
    engine::{Header, Record},
    error::Error,
    metrics::Metrics,
    state::Change,
};

/// The first fatal error of a run; later ones are consequences and are only logged.
#[derive(Debug, Default)]
pub struct Fatal(Mutex<Option<Error>>);

impl Fatal {
    pub fn set(&self, error: Error) {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            tracing::error!("{error}");
            *slot = Some(error);
        } else {
            tracing::debug!("after the first fatal error: {error}");
        }
    }

    /// Stop the run for `reason`.
    pub fn stop(&self, reason: String) {
        self.set(Error::Stopped(reason))
    }

    /// The offset a record failure under `policy = "fail"` stopped `topic`/`partition` at, if
    /// that is what ended the run: everything before it may still be committed.
    pub fn record_stop(&self, topic: &str, partition: i32) -> Option<i64> {
        match &*self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(Error::Record {
                topic: t,
                partition: p,
                offset,
                ..
            }) if t == topic && *p == partition && *offset >= 0 => Some(*offset),
            _ => None,
        }
    }

    /// The error that ended the run, if one did.
    pub fn take(&self) -> Option<Error> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    pub fn is_set(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }
}

/// Why one record could not be handed to the producer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Larger than the producer (or broker) accepts: a per-record fault the error policy decides on.
    #[error("record of {size} bytes is larger than the sink accepts (message.max.bytes): {cause}")]
    TooLarge { size: usize, cause: KafkaError },
    /// Anything else: the pipeline cannot go on.
    #[error("producing to `{topic}` failed: {cause}")]
    Failed { topic: String, cause: KafkaError },
}

pub struct SinkContext {
    metrics: Arc<Metrics>,
    fatal: Arc<Fatal>,
    marks: ChangelogMarks,
    errors: ClientErrors,
    transactional: bool,
    /// Records whose loss is logged, never fatal (see [`Sink::best_effort`]).
    lossy: bool,
}

impl ClientContext for SinkContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        client::log(level, facility, message)
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.report("sink", &error, reason)
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Arc<Acks>;

    fn delivery(&self, result: &DeliveryResult<'_>, acks: Arc<Acks>) {
        match result {
            Ok(message) => {
                // Changelog records advance their partition's mark; the rest (outputs, dead
                // letters, late records) count as delivered, beside `produced`.
                match self.marks.get(message.topic()) {
                    Some(marks) => {
                        if let Some(mark) = marks.get(message.partition() as usize) {
                            mark.fetch_max(message.offset(), Ordering::AcqRel);
                        }
                    }
                    None => {
                        Metrics::add(&self.metrics.delivered, 1);
                        let timestamp = message.timestamp().to_millis();
                        if let (false, Some(ts)) = (self.metrics.totals_only, timestamp) {
                            let ms = crate::metrics::now_ms().saturating_sub(ts.max(0) as u64);
                            self.metrics.latency.observe(Duration::from_millis(ms));
                        }
                    }
                }
                acks.delivered(true);
            }
            Err((cause, message)) if self.lossy => {
                tracing::warn!(
                    "a shadow output to `{}` was lost: {cause} (the live run goes on)",
                    message.topic()
                );
                acks.delivered(false);
            }
            Err((cause, _))
                if self.transactional
                    && matches!(
                        cause.rdkafka_error_code(),
                        Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight)
                    ) =>
            {
                // Purged with its transaction (aborted, or fenced by a new owner): a consequence
                // whose cause the transaction's own failure reports; nothing of it commits.
                tracing::debug!("sink: a record was purged with its transaction: {cause}");
                acks.delivered(false);
            }
            Err((cause, message)) if self.transactional && is_fenced(cause) => {
                self.fatal.stop(format!(
                    "sink: writing to `{}` partition {} was refused: {cause} (another instance \
                     took this partition over; this one stops writing)",
                    message.topic(),
                    message.partition()
                ));
                acks.delivered(false);
            }
            Err((cause, message)) => {
                // librdkafka has already retried for `message.timeout.ms`; this record is lost
                // unless its source offset stays uncommitted, which `acks` sees to.
                self.fatal.stop(format!(
                    "sink: delivery to `{}` partition {} failed: {cause}",
                    message.topic(),
                    message.partition()
                ));
                acks.delivered(false);
            }
        }
    }
}

/// Whether `error` says this producer was fenced: another one took its transactional id over.
/// librdkafka reports it as the broker's code or, inside a failed transactional call, as its own
/// `_FENCED`, sometimes only in the message.
pub fn is_fenced(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::Fenced
        )
    ) || error.to_string().contains("fences the current one")
}

/// The producer queue's byte bound, in KiB (`queue.buffering.max.kbytes` below).
const QUEUE_KBYTES: &str = "16384";

/// Producer settings weir starts from; the pipeline's `[sink.kafka]` overrides them.
pub const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    // Retries must not reorder or duplicate within a partition.
    ("enable.idempotence", "true"),
    // Java clients' partitioner, so keys land where Kafka Streams or Flink would put them.
    ("partitioner", "murmur2_random"),
    ("linger.ms", "5"),
    ("socket.nagle.disable", "true"),
    // Bounded: a slow broker fills this and blocks the workers instead of growing memory. At
    // full load the broker lags and the queue stays full: 16 MB (tens of thousands of records,
    // over 20 ms of the fastest output) held the Kafka bench's throughput of 64 MB, and a
    // `weir run`'s peak memory fell from 108 to 87-91 MiB at six partitions.
    ("queue.buffering.max.kbytes", QUEUE_KBYTES),
    ("queue.buffering.max.messages", "25000"),
];

/// The sink's producer settings: weir's defaults under `[sink.kafka]`, and the transactional
/// id of an exactly-once partition's producer.
pub(crate) fn producer_config(
    brokers: &str,
    properties: &KafkaProperties,
    transactional_id: Option<&str>,
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (k, v) in PRODUCER_DEFAULTS {
        config.set(*k, *v);
    }
    for (k, v) in &properties.0 {
        config.set(k, v);
    }
    // A record larger than the queue's byte bound never fits in it (librdkafka answers "queue
    // full" to it for ever): the queue holds at least one record of the largest size allowed.
    let largest_kb = properties
        .0
        .get("message.max.bytes")
        .and_then(|v| v.parse::<u64>().ok())
        .map(|bytes| bytes / 1024 + 1);
    let default_kb: u64 = QUEUE_KBYTES.parse().expect("a number of KiB");
    if let Some(kb) = largest_kb.filter(|kb| *kb > default_kb) {
        if !properties.0.contains_key("queue.buffering.max.kbytes") {
            config.set("queue.buffering.max.kbytes", kb.to_string());
        }
    }
    if let Some(id) = transactional_id {
        config.set("transactional.id", id);
    }
    config
}

impl Sink {
    fn producer(&self) -> &ThreadedProducer<SinkContext> {
        self.producer
            .as_ref()
            .expect("a live sink has its producer")
    }
}

impl Drop for Sink {
    /// Destroying a transactional producer can block (librdkafka settles its transaction state
    /// with the coordinator), and the last reference to a revoked partition's producer may be
    /// dropped on the consumer thread, inside a rebalance: let it go on a thread of its own.
    fn drop(&mut self) {
        if let Some(producer) = self.producer.take().filter(|_| self.transactional) {
            let _ = std::thread::Builder::new()
                .name("weir-producer-close".into())
                .spawn(move || drop(producer));
        }
    }
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").finish_non_exhaustive()
    }
}

/// How long a transaction step may take before it counts as failed.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest an abort may hold up a shutdown.
const ABORT_TIMEOUT: Duration = Duration::from_secs(3);

/// The pipeline's producer.
pub struct Sink {
    /// Always `Some` until dropped (see `Drop`).
    producer: Option<ThreadedProducer<SinkContext>>,
    transactional: bool,
    /// A best-effort sink never waits for room in the producer's queue: it drops the record.
    lossy: bool,
    metrics: Arc<Metrics>,
    fatal: Arc<Fatal>,
}

impl Sink {
    pub fn new(
        brokers: &str,
        properties: &KafkaProperties,
        marks: ChangelogMarks,
        metrics: Arc<Metrics>,
        fatal: Arc<Fatal>,
    ) -> Result<Sink, KafkaError> {
        Self::create(brokers, properties, None, marks, metrics, fatal)
    }

    /// A producer whose records may be lost without consequence for the run: outside every
    /// transaction, counted apart, its delivery failures logged rather than fatal. What a
    /// stage's shadow writes its outputs with.
    pub fn best_effort(brokers: &str, properties: &KafkaProperties) -> Result<Sink, KafkaError> {
        let config = producer_config(brokers, properties, None);
        let metrics = Arc::new(Metrics::totals_only());
        let fatal = Arc::new(Fatal::default());
        let context = SinkContext {
            metrics: metrics.clone(),
            fatal: fatal.clone(),
            marks: ChangelogMarks::default(),
            errors: Default::default(),
            transactional: false,
            lossy: true,
        };
        Ok(Sink {
            producer: Some(config.create_with_context(context)?),
            transactional: false,
            lossy: true,
            metrics,
            fatal,
        })
    }

    /// A transactional producer for one source partition, with a transaction open. Its id is
    /// the partition's, so a new owner fences the previous one: `init_transactions` aborts
    /// whatever transaction that one left open, and its producer can never write again.
    pub fn transactional(
        brokers: &str,
        properties: &KafkaProperties,
        id: &str,
        marks: ChangelogMarks,
        metrics: Arc<Metrics>,
        fatal: Arc<Fatal>,
    ) -> Result<Sink, KafkaError> {
        let sink = Self::create(brokers, properties, Some(id), marks, metrics, fatal)?;
        sink.producer().init_transactions(TRANSACTION_TIMEOUT)?;
        sink.producer().begin_transaction()?;
        Ok(sink)
    }

    fn create(
        brokers: &str,
        properties: &KafkaProperties,
        transactional_id: Option<&str>,
        marks: ChangelogMarks,
        metrics: Arc<Metrics>,
        fatal: Arc<Fatal>,
    ) -> Result<Sink, KafkaError> {
        let config = producer_config(brokers, properties, transactional_id);
        let context = SinkContext {
            metrics: metrics.clone(),
            fatal: fatal.clone(),
            marks,
            errors: Default::default(),
            transactional: transactional_id.is_some(),
            lossy: false,
        };
        Ok(Sink {
            producer: Some(config.create_with_context(context)?),
            transactional: transactional_id.is_some(),
            lossy: false,
            metrics,
            fatal,
        })
    }

    /// Commit everything sent since the last commit together with the source `offsets`, as
    /// one transaction, and open the next one.
    pub fn commit(
        &self,
        offsets: &rdkafka::TopicPartitionList,
        group: &rdkafka::consumer::ConsumerGroupMetadata,
    ) -> Result<(), KafkaError> {
        // A partition with nothing consumed in this run (a window firing on the watermark alone)
        // commits its outputs and state without moving its offset.
        if offsets.count() > 0 {
            self.producer()
                .send_offsets_to_transaction(offsets, group, TRANSACTION_TIMEOUT)?;
        }
        self.commit_transaction()
    }

    /// Commit everything sent since the last commit, and open the next transaction.
    pub fn commit_transaction(&self) -> Result<(), KafkaError> {
        self.producer().commit_transaction(TRANSACTION_TIMEOUT)?;
        self.producer().begin_transaction()
    }

    /// Drop everything sent since the last commit and open the next transaction.
    pub fn restart_transaction(&self) -> Result<(), KafkaError> {
        self.producer().abort_transaction(ABORT_TIMEOUT)?;
        self.producer().begin_transaction()
    }

    /// Drop everything sent since the last commit. Only ever done on the way down, so briefly:
    /// a transaction left open is aborted anyway when the next owner of the transactional id
    /// fences this producer.
    pub fn abort(&self) {
        if let Err(e) = self.producer().abort_transaction(ABORT_TIMEOUT) {
            tracing::warn!("aborting a transaction failed: {e}");
        }
    }

    /// The sink cluster's metadata (all topics).
    pub fn metadata(&self, timeout: Duration) -> Result<rdkafka::metadata::Metadata, KafkaError> {
        self.producer().client().fetch_metadata(None, timeout)
    }

    /// Hand `record` to the producer for `topic`, waiting while its queue is full.
    pub fn send(&self, topic: &str, record: &Record, acks: &Arc<Acks>) -> Result<(), SendError> {
        let mut out = BaseRecord::with_opaque_to(topic, acks.clone());
        if let Some(key) = &record.key {
            out = out.key(key.as_slice());
        }
        if let Some(value) = &record.value {
            out = out.payload(value.as_slice());
        }
        if !record.headers.is_empty() {
            out = out.headers(headers(&record.headers));
        }
        if record.timestamp >= 0 {
            out = out.timestamp(record.timestamp);
        }
        let size =
            record.value.as_ref().map_or(0, Vec::len) + record.key.as_ref().map_or(0, Vec::len);
        self.produce(out, size, acks)?;
        Metrics::add(&self.metrics.produced, 1);
        Ok(())
    }

    /// Hand a changelog record (`value` `None`: a tombstone) to the producer for `partition` of
    /// `topic`.
    pub fn send_change(
        &self,
        topic: &str,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
        acks: &Arc<Acks>,
    ) -> Result<(), SendError> {
        let mut out = BaseRecord::with_opaque_to(topic, acks.clone())
            .key(key)
            .partition(partition);
        if let Some(value) = value {
            out = out.payload(value);
        }
        self.produce(out, key.len() + value.map_or(0, <[u8]>::len), acks)
    }

    /// Hand a stage's state `changes` for source partition `partition` to its changelog topic
    /// `changelog` (the same partition), stopping at the first that cannot be sent. The one way
    /// changelog records go out, at least once with a batch's outputs and exactly once in the
    /// partition's transaction.
    pub fn send_changelog(
        &self,
        changelog: &str,
        partition: i32,
        changes: &[Change],
        acks: &Arc<Acks>,
    ) -> Result<(), SendError> {
        for change in changes {
            self.send_change(
                changelog,
                partition,
                &change.key,
                change.value.as_deref(),
                acks,
            )?;
        }
        Ok(())
    }

    fn produce(
        &self,
        mut out: BaseRecord<'_, [u8], [u8], Arc<Acks>>,
        size: usize,
        acks: &Arc<Acks>,
    ) -> Result<(), SendError> {
        acks.expect();
        let mut waits = 0u32;
        loop {
            match self.producer().send(out) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    // Backpressure: wait for deliveries to make room. Give up only once the run
                    // is failing anyway, so a dead broker cannot hold the worker forever (and
                    // at once for records that may be lost).
                    if !(self.lossy || self.fatal.is_set() && waits > 1000) =>
                {
                    out = back;
                    waits += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _)) => {
                    // Not a lost delivery but a record the sink refuses: withdraw it from the
                    // batch's acknowledgements and let the error policy decide.
                    acks.delivered(true);
                    return Err(SendError::TooLarge {
                        size,
                        cause: KafkaError::MessageProduction(
                            RDKafkaErrorCode::MessageSizeTooLarge,
                        ),
                    });
                }
                Err((cause, back)) => {
                    acks.delivered(false);
                    return Err(SendError::Failed {
                        topic: back.topic.to_string(),
                        cause,
                    });
                }
            }
        }
    }

    /// Wait until every record handed over so far was acknowledged (or failed).
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer().flush(timeout)
    }

    /// Records not yet acknowledged.
    pub fn in_flight(&self) -> i32 {
        self.producer().in_flight_count()
    }
}

fn headers(headers: &[Header]) -> OwnedHeaders {
    headers
        .iter()
        .fold(OwnedHeaders::new_with_capacity(headers.len()), |h, x| {
            h.insert(KafkaHeader {
                key: &x.key,
                value: Some(&x.value),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka(pairs: &[(&str, &str)]) -> KafkaProperties {
        let mut properties = KafkaProperties::default();
        for (k, v) in pairs {
            properties.0.insert(k.to_string(), v.to_string());
        }
        properties
    }

    #[test]
    fn the_queue_holds_at_least_one_record_of_the_largest_size() {
        let queue = |pairs: &[(&str, &str)]| {
            let config = producer_config("b", &kafka(pairs), None);
            config
                .get("queue.buffering.max.kbytes")
                .unwrap()
                .to_string()
        };
        assert_eq!(queue(&[]), QUEUE_KBYTES);
        assert_eq!(queue(&[("message.max.bytes", "1000000")]), "16384");
        assert_eq!(queue(&[("message.max.bytes", "33554432")]), "32769");
        let both = [
            ("message.max.bytes", "33554432"),
            ("queue.buffering.max.kbytes", "9"),
        ];
        assert_eq!(queue(&both), "9", "the pipeline's own bound stands");
    }
}
