//! A consumer that reads partitions of one topic, in no group, from positions its caller keeps:
//! what tables are kept from (each instance keeps a whole table, as Kafka Streams' global tables
//! do, or the partitions it is assigned of a partitioned one), and what a join stage reads the
//! topic it joins with (the partition of the number it owns of the source). Nothing is shared
//! through a group or committed to the broker.
//!
//! It reads read_committed, as the source does. On Apache Kafka that drops aborted writes; the
//! test broker hands them over anyway (see `log_reader`), which only matters for a table topic
//! written in transactions that abort.

use std::time::{Duration, Instant};

use rdkafka::{
    config::{ClientConfig, RDKafkaLogLevel},
    consumer::{BaseConsumer, Consumer as _, ConsumerContext},
    error::{KafkaError, RDKafkaErrorCode},
    message::Message,
    ClientContext, Offset, TopicPartitionList,
};

use super::client::{self, ClientErrors};

/// Consumer settings of a follower; the source's `[source.kafka]` (security, timeouts) go over
/// them, except what only a group member has.
const FOLLOWER_DEFAULTS: &[(&str, &str)] = &[
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    ("isolation.level", "read_committed"),
    // Reaching the end of what is readable (under read_committed, the last stable offset: a
    // transaction left open keeps later records back) is an event, which a bootstrap waits for.
    ("enable.partition.eof", "true"),
    // A position outside a partition is an error the caller sees (its store is of another
    // topic), not a silent jump to one end.
    ("auto.offset.reset", "error"),
    ("fetch.wait.max.ms", "50"),
    // librdkafka prefetches up to 64 MiB per partition by default: a table of a few partitions
    // then peaked at ~290 MiB RSS while its 1M rows were read (the tables bench). The writes
    // to the store keep up with a smaller queue.
    ("queued.max.messages.kbytes", "8192"),
];

/// Group settings a follower has no use for, dropped from the source's properties.
const GROUP_ONLY: &[&str] = &[
    "group.id",
    "group.instance.id",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "partition.assignment.strategy",
    "group.protocol",
    "auto.offset.reset",
];

/// A partition, its low and its high watermark.
pub type PartitionEnds = (i32, i64, i64);

/// What one poll brought: records, and the partitions found read to their end.
#[derive(Default)]
pub struct Polled {
    pub changes: Vec<Change>,
    pub at_end: Vec<i32>,
}

/// One record of the topic, as the follower's caller needs it.
pub struct Change {
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch (-1: none).
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

pub struct FollowContext {
    errors: ClientErrors,
    /// What the topic is read for, in messages: "table", "join".
    role: &'static str,
}

impl ClientContext for FollowContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        client::log(level, facility, message)
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // The end of a partition is news for the reader's poll, not a problem.
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF) {
            self.errors.report(self.role, &error, reason)
        }
    }
}

impl ConsumerContext for FollowContext {}

/// A reader of every partition of one topic.
pub struct Follower {
    consumer: BaseConsumer<FollowContext>,
    topic: String,
    role: &'static str,
    /// An error that came after records of a poll: the next poll returns it.
    pending: Option<KafkaError>,
}

impl Follower {
    /// A reader of `topic` on `brokers` with `properties` (the source's) over the defaults,
    /// for a `role` ("table", "join") its messages name.
    pub fn new<'a>(
        brokers: &str,
        properties: impl IntoIterator<Item = (&'a String, &'a String)>,
        topic: &str,
        role: &'static str,
    ) -> Result<Follower, KafkaError> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", brokers);
        for (k, v) in FOLLOWER_DEFAULTS {
            config.set(*k, *v);
        }
        for (k, v) in properties {
            if !GROUP_ONLY.contains(&k.as_str()) {
                config.set(k, v);
            }
        }
        // librdkafka assigns partitions through its group handle, which needs a name; the
        // follower never joins the group nor commits to it.
        config.set("group.id", format!("weir-follow-{topic}"));
        let consumer = config.create_with_context(FollowContext {
            errors: ClientErrors::default(),
            role,
        })?;
        Ok(Follower {
            consumer,
            topic: topic.to_string(),
            role,
            pending: None,
        })
    }

    /// The topic's partitions, each with its low and high watermark; `None` when the topic does
    /// not exist.
    pub fn ends(&self, timeout: Duration) -> Result<Option<Vec<PartitionEnds>>, KafkaError> {
        let metadata = self.consumer.fetch_metadata(Some(&self.topic), timeout)?;
        let Some(topic) = metadata.topics().iter().find(|t| t.name() == self.topic) else {
            return Ok(None);
        };
        match topic.error().map(RDKafkaErrorCode::from) {
            None if !topic.partitions().is_empty() => {}
            None | Some(RDKafkaErrorCode::UnknownTopicOrPartition) => return Ok(None),
            Some(code) => return Err(KafkaError::MetadataFetch(code)),
        }
        let mut ends = Vec::with_capacity(topic.partitions().len());
        for p in topic.partitions() {
            let (low, high) = self
                .consumer
                .fetch_watermarks(&self.topic, p.id(), timeout)?;
            ends.push((p.id(), low, high));
        }
        ends.sort_unstable();
        Ok(Some(ends))
    }

    /// The end of `partition` as the last fetch saw it (no request to the broker).
    pub fn cached_end(&self, partition: i32) -> Option<i64> {
        super::source::cached_end(&self.consumer, &self.topic, partition)
    }

    /// The first offset `partition` holds and the one after its last (its low and high
    /// watermarks).
    pub fn bounds(&self, partition: i32, timeout: Duration) -> Result<(i64, i64), KafkaError> {
        self.consumer
            .fetch_watermarks(&self.topic, partition, timeout)
    }

    /// Read each partition from its offset in `from` (partition, offset).
    pub fn start(&self, from: &[(i32, i64)]) -> Result<(), KafkaError> {
        let mut list = TopicPartitionList::new();
        for (partition, offset) in from {
            list.add_partition_offset(&self.topic, *partition, Offset::Offset(*offset))?;
        }
        self.consumer.assign(&list)
    }

    /// Where each partition's reading is (the next offset to fetch), for those it knows: past
    /// transaction markers and compacted-away records, which no record's offset tells.
    pub fn positions(&self) -> Result<Vec<(i32, i64)>, KafkaError> {
        let list = self.consumer.position()?;
        Ok(list
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect())
    }

    /// The records that arrive within `wait` (waiting only for the first), at most `max`, and
    /// the partitions read to their end meanwhile. Errors the client recovers from itself (a
    /// broker that went away, a leader that moved) are logged, not returned: the reading goes
    /// on where it was once the client is back.
    pub fn poll(&mut self, max: usize, wait: Duration) -> Result<Polled, KafkaError> {
        if let Some(e) = self.pending.take() {
            return Err(e);
        }
        let mut polled = Polled::default();
        let deadline = Instant::now() + wait;
        while polled.changes.len() < max {
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout = if polled.changes.is_empty() {
                left
            } else {
                Duration::ZERO
            };
            let message = match self.consumer.poll(timeout) {
                None => break,
                Some(Ok(message)) => message,
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    polled.at_end.push(partition);
                    continue;
                }
                Some(Err(e)) if recoverable(&e) => {
                    tracing::warn!(topic = %self.topic, "reading the {} topic: {e}", self.role);
                    break;
                }
                Some(Err(e)) if polled.changes.is_empty() => return Err(e),
                Some(Err(e)) => {
                    self.pending = Some(e);
                    break;
                }
            };
            // A record after its partition's end-of-partition event: not at the end after all.
            polled.at_end.retain(|&p| p != message.partition());
            polled.changes.push(Change {
                partition: message.partition(),
                offset: message.offset(),
                timestamp: message.timestamp().to_millis().unwrap_or(-1),
                key: message.key().map(<[u8]>::to_vec),
                value: message.payload().map(<[u8]>::to_vec),
            });
        }
        Ok(polled)
    }
}

/// Whether a consumer error is one librdkafka recovers from by itself (it reconnects, finds the
/// new leader, fetches again), rather than one that needs the caller: a position outside the
/// partition, a topic gone or not allowed.
fn recoverable(e: &KafkaError) -> bool {
    !matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::AutoOffsetReset
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownPartition
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::OffsetOutOfRange
        )
    )
}
