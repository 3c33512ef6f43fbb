//! State changelog topics: one per stateful stage, compacted, partitioned like the source
//! (changelog partition N holds the state of source partition N), named as Kafka Streams names
//! its own. The changelog is the truth; a partition's local store is brought up to date from it
//! when the partition is assigned.

use std::{
    collections::HashMap,
    sync::{atomic::AtomicI64, Arc},
    time::Duration,
};

use rdkafka::{
    consumer::{BaseConsumer, Consumer as _},
    ClientConfig,
};

use super::log_reader::{self, CommittedError};
use crate::{
    config::Pipeline,
    engine::StateBackend,
    state::{
        query::{find, Found, Lookup},
        PartitionState, StateStore,
    },
    Error,
};

/// Per changelog topic, per partition: the highest offset the broker acknowledged.
pub type ChangelogMarks = HashMap<String, Vec<Arc<AtomicI64>>>;

/// The changelog topic of `stage` in consumer group `group`.
pub fn changelog_topic(group: &str, stage: &str) -> String {
    format!("{group}-{stage}-changelog")
}

/// One mark per partition of a changelog, none acknowledged yet.
pub fn unmarked(partitions: usize) -> Vec<Arc<AtomicI64>> {
    (0..partitions)
        .map(|_| Arc::new(AtomicI64::new(-1)))
        .collect()
}

/// What `lookup` finds in stage `stage`'s state, read with no run holding it: the local store
/// of `pipeline` brought up to date from the stage's changelog, partition by partition, as a
/// run's start does (so the store, a cache, ends as a run would leave it; the changelog, the
/// truth, is only read).
pub fn read_stage_state(
    pipeline: &Pipeline,
    stage: &str,
    lookup: &Lookup,
) -> Result<Vec<Found>, Error> {
    let (source, sink) = pipeline.kafka()?;
    let brokers = sink.brokers.as_deref().unwrap_or(&source.brokers);
    let changelog = changelog_topic(&source.group, stage);
    let partitions = partitions_of(brokers, &changelog)?;
    if partitions == 0 {
        return Err(Error::Topic(format!(
            "stage `{stage}` has no changelog `{changelog}` on {brokers}: it keeps no state, \
             or has never run"
        )));
    }
    let store = StateStore::open(&pipeline.state_dir(&source.group), 0)?;
    let mut states = Vec::new();
    for topic in &source.topics {
        for partition in 0..partitions {
            let state = store.partition(stage, topic, partition, Arc::new(AtomicI64::new(-1)));
            restore(&state, brokers, &changelog, partition, &|_| {})?;
            states.push((topic.as_str(), partition, state));
        }
    }
    let states: Vec<(&str, i32, &dyn StateBackend)> = states
        .iter()
        .map(|(t, p, s)| (*t, *p, s as &dyn StateBackend))
        .collect();
    Ok(find(&states, lookup))
}

/// How many partitions `topic` has on `brokers` (0: it does not exist).
fn partitions_of(brokers: &str, topic: &str) -> Result<i32, Error> {
    let kafka = |cause| Error::Kafka {
        what: format!("the metadata of `{topic}` on {brokers}"),
        cause,
    };
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("allow.auto.create.topics", "false")
        .create()
        .map_err(kafka)?;
    let metadata = client
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(kafka)?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map_or(0, |t| t.partitions().len() as i32))
}

/// How a restore went: changes applied, and the changelog offsets read from and to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    pub applied: usize,
    pub from: i64,
    pub to: i64,
}

/// Records applied to the store at a time while restoring.
const CHUNK: usize = 10_000;

/// Bring `state` up to date from changelog partition `partition` of `topic` on `brokers`: read
/// committed records only (through [`log_reader`], which decides transactions by the log's own
/// markers) from where the store is known to have reached, to the end. `progress` hears how
/// far the read has to go, then of each stretch read, for a person waiting on a large restore.
pub fn restore(
    state: &PartitionState,
    brokers: &str,
    topic: &str,
    partition: i32,
    progress: &dyn Fn(Progress),
) -> Result<Restored, Error> {
    let from = state.restore_from()?;
    let (mut end, mut chunk, mut applied) = read(state, brokers, topic, partition, from, progress)?;
    let mut start = from;
    if let Err(CommittedError::OffsetOutOfRange { .. }) = &end {
        // The changelog was recreated or truncated below what the store had reached: replay it
        // whole (whole values make that safe for every key it holds).
        tracing::warn!(
            "changelog `{topic}` partition {partition} no longer has offset {from}; restoring \
             it from its beginning"
        );
        start = 0;
        (end, chunk, applied) = read(state, brokers, topic, partition, 0, progress)?;
    }
    let end = end.map_err(|cause| Error::Restore {
        topic: topic.to_string(),
        partition,
        cause: Box::new(cause),
    })?;
    let records = chunk.iter().map(|(k, v)| (k.as_slice(), v.as_deref()));
    applied += state.restore(records, end.last_stable_offset.max(start))?;
    Ok(Restored {
        applied,
        from: start,
        to: end.last_stable_offset,
    })
}

/// How far a restore has come, in changelog offsets.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    /// This many lie ahead of the read (told once per read, before its first record).
    Ahead(u64),
    /// This many more were read.
    Read(u64),
}

type Chunk = Vec<(Vec<u8>, Option<Vec<u8>>)>;
type ReadEnd = Result<log_reader::PartitionEnd, CommittedError>;

/// Read the changelog from `from`, applying it a chunk at a time; the read's end, the chunk left
/// to apply, and how many changes were applied so far.
fn read(
    state: &PartitionState,
    brokers: &str,
    topic: &str,
    partition: i32,
    from: i64,
    progress: &dyn Fn(Progress),
) -> Result<(ReadEnd, Chunk, usize), Error> {
    let mut chunk: Chunk = Vec::new();
    let mut reported = from;
    let mut applied = 0;
    let mut failed = None;
    let end = log_reader::read_committed_to(
        brokers,
        topic,
        partition,
        from,
        Duration::from_secs(30),
        |end| progress(Progress::Ahead((end - from).max(0) as u64)),
        |rec| {
            if failed.is_some() {
                return;
            }
            let next = rec.offset + 1;
            chunk.push((rec.key.unwrap_or_default(), rec.value));
            if chunk.len() >= CHUNK {
                let records = chunk.iter().map(|(k, v)| (k.as_slice(), v.as_deref()));
                match state.restore(records, next) {
                    Ok(n) => applied += n,
                    Err(e) => failed = Some(e),
                }
                chunk.clear();
                progress(Progress::Read((next - reported).max(0) as u64));
                reported = next;
            }
        },
    );
    match failed {
        Some(e) => Err(e),
        None => Ok((end, chunk, applied)),
    }
}
