//! Exactly once: one transactional producer per source partition, whose transactions carry the
//! partition's outputs, changelog records and source position (Kafka Streams' first EOS design:
//! fencing by partition keeps working when a crashed instance never comes back).
//!
//! The position goes twice into each transaction: to the group (`send_offsets_to_transaction`,
//! for lag monitoring and Kafka's tools) and as a record in the pipeline's positions topic, which
//! is where a new owner resumes from (see [`super::positions`] for why).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use rdkafka::{
    consumer::{Consumer as _, ConsumerGroupMetadata},
    Offset, TopicPartitionList,
};

use super::{
    changelog::ChangelogMarks,
    positions::{offsets_topic, recorded_position},
    sink::{is_fenced, Fatal},
    Acks, Consumer, SendError, Sink,
};
use crate::{config::KafkaProperties, metrics::Metrics, Error};

/// How long reading a partition's recorded position may take before the assignment fails.
const POSITION_TIMEOUT: Duration = Duration::from_secs(30);

/// What each partition's transactional producer is made from, and what its commits need.
pub struct Transactions {
    brokers: String,
    properties: KafkaProperties,
    group: String,
    /// The consumer's group metadata as of the last rebalance, for `send_offsets_to_transaction`.
    group_metadata: Mutex<Option<Arc<ConsumerGroupMetadata>>>,
    offsets_topic: String,
    /// Changelog marks, with the positions topic's: the sink counts writes to them as
    /// bookkeeping, not as delivered records.
    marks: ChangelogMarks,
}

/// Why a partition's transaction did not commit.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("exactly once: no consumer group metadata to commit offsets with")]
    NoGroupMetadata,
    #[error("`{topic}`: {cause}")]
    Position { topic: String, cause: SendError },
    #[error("{topic}[{partition}]: {cause}")]
    Offsets {
        topic: String,
        partition: i32,
        cause: rdkafka::error::KafkaError,
    },
    #[error("committing the transaction of {topic}[{partition}] failed: {cause}{}",
        if *.fenced {
            " (another instance took this partition over; this one stops writing)"
        } else {
            ""
        })]
    Commit {
        topic: String,
        partition: i32,
        cause: rdkafka::error::KafkaError,
        fenced: bool,
    },
}

impl Transactions {
    /// Transactions on `brokers` for consumer group `group`, whose changelogs' marks are
    /// `marks`; the positions topic's marks are added here.
    pub fn new(
        brokers: &str,
        properties: &KafkaProperties,
        group: &str,
        mut marks: ChangelogMarks,
        partitions: usize,
    ) -> Transactions {
        let offsets_topic = offsets_topic(group);
        marks.insert(
            offsets_topic.clone(),
            super::changelog::unmarked(partitions),
        );
        Transactions {
            brokers: brokers.to_string(),
            properties: properties.clone(),
            group: group.to_string(),
            group_metadata: Mutex::new(None),
            offsets_topic,
            marks,
        }
    }

    /// The producer of `topic`/`partition`, with a transaction open. Created before anything
    /// of the partition is read: fencing the previous owner aborts that one's open transaction.
    pub fn begin(
        &self,
        topic: &str,
        partition: i32,
        metrics: &Arc<Metrics>,
        fatal: &Arc<Fatal>,
    ) -> Result<Sink, Error> {
        let id = format!("weir-{}-{topic}-{partition}", self.group);
        Sink::transactional(
            &self.brokers,
            &self.properties,
            &id,
            self.marks.clone(),
            metrics.clone(),
            fatal.clone(),
        )
        .map_err(|cause| Error::Kafka {
            what: format!("transactional producer `{id}`"),
            cause,
        })
    }

    /// Where `topic`/`partition` resumes, as its last committed transaction recorded it (none
    /// yet: from the group's committed offset). Read only once the partition's producer has
    /// fenced the previous owner, whose open transaction would otherwise hold the read back.
    pub fn position(&self, topic: &str, partition: i32) -> Result<Option<i64>, Error> {
        recorded_position(
            &self.brokers,
            &self.group,
            topic,
            partition,
            POSITION_TIMEOUT,
        )
        .map_err(|e| Error::Topic(format!("reading `{}`: {e}", self.offsets_topic)))
    }

    /// Take the consumer's current group metadata for the next commits.
    pub fn refresh_group_metadata(&self, consumer: &Consumer) {
        *self
            .group_metadata
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = consumer.group_metadata().map(Arc::new);
    }

    /// Commit `txn`, the transaction of `topic`/`partition` (its outputs and changelog records
    /// already sent), with the position `next` where there is one, and open the next. On an
    /// error the transaction is aborted, unless this producer was fenced: it cannot abort, and
    /// its successor already did.
    pub fn commit(
        &self,
        txn: &Sink,
        topic: &str,
        partition: i32,
        next: Option<i64>,
        acks: &Arc<Acks>,
    ) -> Result<(), Box<CommitError>> {
        let committed = self.try_commit(txn, topic, partition, next, acks);
        if matches!(&committed, Err(e) if !e.is_fenced()) {
            txn.abort();
        }
        committed
    }

    fn try_commit(
        &self,
        txn: &Sink,
        topic: &str,
        partition: i32,
        next: Option<i64>,
        acks: &Arc<Acks>,
    ) -> Result<(), Box<CommitError>> {
        let group = self
            .group_metadata
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(Box::new(CommitError::NoGroupMetadata))?;
        let mut offsets = TopicPartitionList::new();
        if let Some(next) = next {
            let value = next.to_string();
            txn.send_change(
                &self.offsets_topic,
                partition,
                topic.as_bytes(),
                Some(value.as_bytes()),
                acks,
            )
            .map_err(|cause| {
                Box::new(CommitError::Position {
                    topic: self.offsets_topic.clone(),
                    cause,
                })
            })?;
            offsets
                .add_partition_offset(topic, partition, Offset::Offset(next))
                .map_err(|cause| {
                    Box::new(CommitError::Offsets {
                        topic: topic.to_string(),
                        partition,
                        cause,
                    })
                })?;
        }
        txn.commit(&offsets, &group).map_err(|cause| {
            Box::new(CommitError::Commit {
                topic: topic.to_string(),
                partition,
                fenced: is_fenced(&cause),
                cause,
            })
        })
    }
}

impl CommitError {
    fn is_fenced(&self) -> bool {
        matches!(self, CommitError::Commit { fenced: true, .. })
    }
}
