//! The other topic of a join stage: partition `p` of it is read by the run that owns partition
//! `p` of the source, from the position the stage keeps in that partition's state (so under
//! exactly once the position commits with the partition's transaction, and a new owner reads on
//! from where the last commit left it).

use std::{
    sync::{
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use rdkafka::{
    error::{KafkaError, RDKafkaErrorCode},
    metadata::Metadata,
};

use super::{partition::StageState, preflight::unlike_source};
use crate::{
    chain::join::{self, Side, Sides},
    config::{JoinSpec, KafkaProperties, Pipeline, SourceConfig},
    engine::Record,
    kafka::{
        follow::{Change, Follower},
        Fatal,
    },
    metrics::Metrics,
    Error,
};

/// What the run needs to read its join stages' other topics.
pub(super) struct Joins {
    /// Stage index, stage name and settings of each join stage.
    pub stages: Vec<(usize, String, Arc<JoinSpec>)>,
    brokers: String,
    properties: KafkaProperties,
    metrics: Arc<Metrics>,
}

impl Joins {
    pub(super) fn of(pipeline: &Pipeline, source: &SourceConfig, metrics: &Arc<Metrics>) -> Joins {
        let stages = pipeline.stages.iter().enumerate();
        let stages = stages.filter_map(|(i, s)| Some((i, s.name.clone(), s.join.clone()?)));
        Joins {
            stages: stages.collect(),
            brokers: source.brokers.clone(),
            properties: source.kafka.clone(),
            metrics: metrics.clone(),
        }
    }

    /// Readers of partition `partition` of each join stage's other topic, from where `states`
    /// (the partition's stage states, by stage index) say they were read to.
    pub(super) fn open(
        &self,
        partition: i32,
        states: &[StageState],
        fatal: &Arc<Fatal>,
    ) -> Result<Sides, Error> {
        let mut sides: Sides = Vec::new();
        for (stage, name, spec) in &self.stages {
            let state = states.iter().find(|s| s.stage == *stage);
            let from = state.and_then(|s| join::position(&*s.state));
            let reader = SideReader::open(self, name, &spec.topic, partition, from, fatal)?;
            sides.push((*stage, Arc::new(reader)));
        }
        Ok(sides)
    }
}

/// Check that each join stage's topic exists with as many partitions as every source topic:
/// partition `p` of it meets partition `p` of the source.
pub(super) fn check_partitions(
    pipeline: &Pipeline,
    metadata: &Metadata,
    source: &SourceConfig,
) -> Result<(), Error> {
    for stage in &pipeline.stages {
        let Some(spec) = &stage.join else { continue };
        let role = format!("stage `{}` join", stage.name);
        if let Some((count, topic, theirs)) = unlike_source(metadata, source, &spec.topic, &role)? {
            return Err(Error::Topic(format!(
                "stage `{}` ({}:{}) joins `{}`, which has {count} partitions, but source topic \
                 `{topic}` has {theirs}: a join reads partition p of both together, so give \
                 them the same number (and the same key, so a key is in the same partition of \
                 both)",
                stage.name,
                pipeline.path.display(),
                stage.line,
                spec.topic
            )));
        }
    }
    Ok(())
}

/// Readers made so far, to number them.
static READERS: AtomicU64 = AtomicU64::new(0);

/// One partition of a join stage's other topic.
struct SideReader {
    follower: Mutex<Follower>,
    stage: String,
    topic: String,
    partition: i32,
    /// Whether the last poll found the partition read to its end.
    at_end: AtomicBool,
    /// The next offset to take in, for the lag.
    next: AtomicI64,
    /// Where it began, when the partition had no stored position.
    start: Option<i64>,
    /// Which reader this is, so that dropping it forgets its own metrics only.
    id: u64,
    fatal: Arc<Fatal>,
    metrics: Arc<Metrics>,
}

impl Drop for SideReader {
    fn drop(&mut self) {
        self.metrics
            .forget_join(&self.stage, self.partition, self.id);
    }
}

impl SideReader {
    /// Read `topic`'s `partition` from `from`; when the stage never read it, from where the
    /// source starts a partition it has no offset for (`auto.offset.reset`: its start unless
    /// the source says `latest`).
    fn open(
        joins: &Joins,
        stage: &str,
        topic: &str,
        partition: i32,
        from: Option<i64>,
        fatal: &Arc<Fatal>,
    ) -> Result<SideReader, Error> {
        let failed = |what: &str, cause| Error::Kafka {
            what: format!("stage `{stage}`: {what} {topic}[{partition}]"),
            cause,
        };
        let follower = Follower::new(&joins.brokers, &joins.properties.0, topic, "join")
            .map_err(|e| failed("a reader of", e))?;
        let stored = from;
        let from = match from {
            Some(offset) => offset,
            None => {
                let (low, high) = follower
                    .bounds(partition, Duration::from_secs(30))
                    .map_err(|e| failed("the start of", e))?;
                let reset = joins.properties.0.get("auto.offset.reset");
                match reset.map(String::as_str) {
                    Some("latest" | "largest" | "end") => high,
                    _ => low,
                }
            }
        };
        follower
            .start(&[(partition, from)])
            .map_err(|e| failed("reading", e))?;
        tracing::debug!(%stage, %topic, partition, from, "join reads the other topic");
        Ok(SideReader {
            follower: Mutex::new(follower),
            stage: stage.to_string(),
            topic: topic.to_string(),
            partition,
            at_end: AtomicBool::new(false),
            next: AtomicI64::new(from),
            start: stored.is_none().then_some(from),
            id: READERS.fetch_add(1, Ordering::Relaxed),
            fatal: fatal.clone(),
            metrics: joins.metrics.clone(),
        })
    }

    /// The broker refused the stored position: retention removed records the join never read
    /// (they are gone; say so), or the topic was made again. Read on from its start.
    fn start_over(&self, follower: &Follower) -> Result<(), KafkaError> {
        let (from, _) = follower.bounds(self.partition, Duration::from_secs(30))?;
        self.next.store(from, Ordering::Relaxed);
        tracing::warn!(
            stage = %self.stage,
            topic = %self.topic,
            partition = self.partition,
            from,
            "the topic no longer holds the offset the join had read to (retention removed \
             records it never read, or the topic was made again): reading on from its start"
        );
        follower.start(&[(self.partition, from)])
    }
}

impl Side for SideReader {
    fn poll(&self, max: usize) -> Vec<Record> {
        let mut follower = self.follower.lock().unwrap_or_else(|e| e.into_inner());
        let polled = match follower.poll(max, Duration::ZERO) {
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::AutoOffsetReset) => {
                self.start_over(&follower).map(|()| Default::default())
            }
            polled => polled,
        };
        match polled {
            Ok(polled) => {
                // The end-of-partition event comes once per time the end is reached, often in the
                // poll that brought the last records; a poll with neither changes nothing.
                let at_end = polled.at_end.contains(&self.partition);
                if at_end || !polled.changes.is_empty() {
                    self.at_end.store(at_end, Ordering::Relaxed);
                }
                self.show(&follower, &polled.changes);
                polled.changes.into_iter().map(|c| self.record(c)).collect()
            }
            Err(e) => {
                self.fatal.stop(format!(
                    "stage `{}`: reading {}[{}], the topic it joins: {e}",
                    self.stage, self.topic, self.partition
                ));
                Vec::new()
            }
        }
    }

    fn at_end(&self) -> bool {
        self.at_end.load(Ordering::Relaxed)
    }

    fn start(&self) -> Option<i64> {
        self.start
    }
}

impl SideReader {
    /// Show what `changes` took in, and how far behind the partition's end that leaves it.
    fn show(&self, follower: &Follower, changes: &[Change]) {
        if let Some(last) = changes.last() {
            self.next.store(last.offset + 1, Ordering::Relaxed);
        }
        let next = self.next.load(Ordering::Relaxed);
        let lag = follower.cached_end(self.partition).map(|end| end - next);
        self.metrics.join(&self.stage, self.partition, |view| {
            view.reader = self.id;
            view.topic.clone_from(&self.topic);
            view.records_read += changes.len() as u64;
            view.lag = lag.unwrap_or(view.lag).max(0);
        });
    }

    fn record(&self, c: Change) -> Record {
        Record {
            key: c.key,
            value: c.value,
            headers: Vec::new(),
            timestamp: c.timestamp,
            topic: self.topic.clone(),
            partition: c.partition,
            offset: c.offset,
        }
    }
}
