//! The positions topic: where an exactly-once pipeline records, inside each transaction, how far
//! the transaction's outputs reach in the source, and where a new owner of a partition resumes.
//!
//! Why it exists. Kafka's own way is `send_offsets_to_transaction`: the group's offsets commit
//! with the outputs, and a new owner resumes from the group. weir does that too (lag tools read
//! the group), but resumes from its own record of the position, as Flink keeps source positions
//! in its checkpoints, because the test broker (Tansu 0.6) defers a transaction's group offsets
//! until every transaction overlapping it in an output partition has ended, and loses them when
//! their producer dies first: with one producer per source partition, nearly always.
//!
//! Why it is also right on Apache Kafka. The position is a record written in the same transaction
//! as the outputs, so the log's own COMMIT/ABORT markers decide it together with them, on any
//! broker: a committed position is exactly the one whose outputs are committed. It is read with
//! [`super::log_reader`], which applies those markers itself. On Kafka the group's offset and this
//! record always agree; where they differ (the test broker), this one is the true one.
//!
//! Layout: `GROUP-offsets`, compacted, partition N holding the positions of source partitions N
//! keyed by source topic, the value the next offset to read as decimal text.

use std::time::Duration;

use super::log_reader::{self, CommittedError};

/// The topic where an exactly-once pipeline in consumer group `group` records, in each
/// transaction, the source position the transaction's outputs reach.
pub fn offsets_topic(group: &str) -> String {
    format!("{group}-offsets")
}

/// Where the last committed transaction of exactly-once group `group` recorded that
/// `topic`/`partition` resumes (none: no transaction recorded one yet).
pub fn recorded_position(
    brokers: &str,
    group: &str,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> Result<Option<i64>, CommittedError> {
    let value = recorded(
        brokers,
        &offsets_topic(group),
        partition,
        topic.as_bytes(),
        timeout,
    )?;
    Ok(value.and_then(|v| std::str::from_utf8(&v).ok()?.parse::<i64>().ok()))
}

/// The value of the last committed record keyed `key` in `topic`'s partition `partition`.
pub fn recorded(
    brokers: &str,
    topic: &str,
    partition: i32,
    key: &[u8],
    timeout: Duration,
) -> Result<Option<Vec<u8>>, CommittedError> {
    let mut value = None;
    log_reader::read_committed_with(brokers, topic, partition, 0, timeout, |record| {
        if record.key.as_deref() == Some(key) {
            value = record.value;
        }
    })?;
    Ok(value)
}
