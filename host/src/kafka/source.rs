//! The Kafka consumer that records come from.
//!
//! weir commits offsets itself, and only behind acknowledged output (the runtime decides when),
//! so librdkafka's automatic commits and offset store are off. Rebalances are handed to the
//! pipeline, which drains and commits revoked partitions before they go.

use rdkafka::{
    config::{ClientConfig, RDKafkaLogLevel},
    consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance, RebalanceProtocol},
    error::{KafkaError, RDKafkaErrorCode},
    message::{BorrowedMessage, Headers, Message},
    types::RDKafkaRespErr,
    ClientContext, Offset, TopicPartitionList,
};

use super::client::{self, ClientErrors};
use crate::{
    config::SourceConfig,
    engine::{Header, Record},
};

/// Called before (`false`) and after (`true`) each rebalance takes effect. Before an assignment,
/// it returns where to start reading partitions whose position the pipeline keeps itself.
type RebalanceHook =
    Box<dyn Fn(&BaseConsumer<SourceContext>, &Rebalance<'_>, bool) -> Positions + Send + Sync>;

/// Where to start reading assigned partitions: topic, partition, offset. Partitions not named
/// start from the group's committed offset.
pub type Positions = Vec<(String, i32, i64)>;

/// Routes rebalance callbacks (which librdkafka runs inside `poll`) to the pipeline.
pub struct SourceContext {
    on_rebalance: RebalanceHook,
    errors: ClientErrors,
    /// The client said it could not reach a broker, and no broker answered since (see
    /// [`SourceContext::brokers_back`]).
    all_down: std::sync::atomic::AtomicBool,
}

impl SourceContext {
    /// Whether the client could not reach a broker, and none answered since.
    pub fn brokers_down(&self) -> bool {
        self.all_down.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The brokers answered (records came, or metadata did).
    pub fn brokers_back(&self) {
        self.all_down
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

impl ClientContext for SourceContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        client::log(level, facility, message)
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // A broker could not be reached (librdkafka's "all brokers down" does not count its
        // group coordinator's connection, so it may never come): down until one answers.
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure)
        ) {
            self.all_down
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        self.errors.report("source", &error, reason)
    }
}

impl ConsumerContext for SourceContext {
    /// rdkafka's own handling, plus start positions: under exactly once the position of a
    /// partition is the one its last committed transaction recorded, which must be in place
    /// before the assignment takes effect (a seek afterwards races with librdkafka's fetch of
    /// the group's committed offsets).
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let assign = err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS;
        let revoke = err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS;
        let positions = (self.on_rebalance)(consumer, &event(err, tpl), false);
        if assign {
            for (topic, partition, offset) in positions {
                if let Err(e) = tpl.set_partition_offset(&topic, partition, Offset::Offset(offset))
                {
                    tracing::warn!("cannot start {topic}[{partition}] at {offset}: {e}");
                }
            }
        }
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let done = match (assign, revoke, cooperative) {
            (true, _, true) => consumer.incremental_assign(tpl),
            (true, _, false) => consumer.assign(tpl),
            (_, true, true) => consumer.incremental_unassign(tpl),
            // A revocation, or as rdkafka's default, an error: the assignment is dropped.
            _ => consumer.unassign(),
        };
        if let Err(e) = done {
            tracing::warn!("rebalance: applying the assignment failed: {e}");
        }
        (self.on_rebalance)(consumer, &event(err, tpl), true);
    }
}

fn event(err: RDKafkaRespErr, tpl: &TopicPartitionList) -> Rebalance<'_> {
    match err {
        RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => Rebalance::Assign(tpl),
        RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => Rebalance::Revoke(tpl),
        _ => Rebalance::Error(KafkaError::Rebalance(RDKafkaErrorCode::from(err))),
    }
}

pub type Consumer = BaseConsumer<SourceContext>;

/// Consumer settings weir starts from; the pipeline's `[source.kafka]` overrides them.
pub const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    // weir stores and commits offsets itself, once a record's outputs are acknowledged.
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    // As Kafka Streams does: a new group reads a topic from its beginning.
    ("auto.offset.reset", "earliest"),
    // Aborted transactions never enter the pipeline (librdkafka's default, said here).
    ("isolation.level", "read_committed"),
    // Bounded prefetch: with a slow sink, consumption stops here rather than in memory. 8 MB
    // is tens of thousands of records, more than the workers' queues hold behind it; past it,
    // librdkafka pauses fetching for `fetch.queue.backoff.ms`, by default a whole second, which
    // would leave the workers idle once they have drained the queue: a short pause instead.
    ("queued.max.messages.kbytes", "8192"),
    ("fetch.queue.backoff.ms", "20"),
    // Real time by default. Kafka answers a fetch as soon as it has a byte for it
    // (`fetch.min.bytes` = 1), so this only bounds how long a fetch that finds nothing waits:
    // an idle consumer asks each broker up to 100 times a second instead of twice. A broker that
    // holds every fetch for the whole wait (the test broker does) would otherwise add up to
    // librdkafka's 500 ms to every record's way through.
    ("fetch.wait.max.ms", "10"),
    ("socket.nagle.disable", "true"),
];

/// The source's consumer settings: weir's defaults under `[source.kafka]`.
pub(crate) fn consumer_config(source: &SourceConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &source.brokers)
        .set("group.id", &source.group);
    for (k, v) in CONSUMER_DEFAULTS {
        config.set(*k, *v);
    }
    for (k, v) in &source.kafka.0 {
        config.set(k, v);
    }
    config
}

/// A consumer in the source's group, not yet subscribed.
pub fn consumer(
    source: &SourceConfig,
    on_rebalance: impl Fn(&Consumer, &Rebalance<'_>, bool) -> Positions + Send + Sync + 'static,
) -> Result<Consumer, KafkaError> {
    consumer_config(source).create_with_context(SourceContext {
        on_rebalance: Box::new(on_rebalance),
        errors: ClientErrors::default(),
        all_down: Default::default(),
    })
}

/// A consumed message as the chain sees it. A header without a value becomes an empty one.
pub fn record(message: &BorrowedMessage<'_>) -> Record {
    let headers = message.headers().map_or_else(Vec::new, |headers| {
        headers
            .iter()
            .map(|h| Header {
                key: h.key.to_string(),
                value: h.value.map_or_else(Vec::new, <[u8]>::to_vec),
            })
            .collect()
    });
    Record {
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        headers,
        timestamp: message.timestamp().to_millis().unwrap_or(-1),
        topic: message.topic().to_string(),
        partition: message.partition(),
        offset: message.offset(),
    }
}

/// The end of `topic`/`partition` as the consumer's last fetch of it saw it: librdkafka's cached
/// value, so no request to the broker; `None` before the first fetch.
pub fn cached_end<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client handle lives as long as `consumer`, the topic name is a valid C string
    // for the call, and the call only reads librdkafka's own cache into the two integers.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}
