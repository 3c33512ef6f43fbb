//! One table being read: opened where its store is, bootstrapped to its topic's end, then
//! followed.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{atomic::AtomicBool, atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::Source;
use crate::{
    config::ErrorPolicy,
    error::Error,
    kafka::{
        follow::{Change, Follower, PartitionEnds},
        Fatal,
    },
    metrics::Metrics,
    state::StateStore,
    table::{Change as TableChange, Decoder, Table, TableStore},
};

/// Most records applied in one write to the store.
const BATCH: usize = 4096;
/// How long a poll waits for the first record.
const POLL: Duration = Duration::from_millis(100);
/// How often the bootstrap says how far it is.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// One table being read.
pub(super) struct Reading {
    table: Arc<Table>,
    name: String,
    topic: String,
    follower: Follower,
    decoder: Decoder,
    rows: TableStore,
    /// What the rows are read with (topic, format, key): a store of other settings is read
    /// again.
    settings: String,
    policy: ErrorPolicy,
    /// Per partition: the next offset to read, and the end to reach in the bootstrap.
    next: BTreeMap<i32, i64>,
    ends: BTreeMap<i32, i64>,
    /// Partitions found read to their end (see [`Reading::read_to_end`]) since their last
    /// record.
    at_end: BTreeSet<i32>,
    /// A partitioned table: the partitions it reads, as of which change of those wanted
    /// ([`Table::want`]). None: every partition (a global table).
    only: Option<(BTreeSet<i32>, u64)>,
    /// Records read (applied or left out).
    read: u64,
    metrics: Arc<Metrics>,
    /// When the ends were last asked for (following).
    measured: Instant,
}

/// What a poll's records do to the table.
struct Decoded {
    /// Each change with when it happened (event time, ms).
    changes: Vec<(TableChange, i64)>,
    /// Partition and next offset, after the records decoded.
    positions: Vec<(i32, i64)>,
    /// The error of a record that stops the run; the changes end before it.
    stopped: Option<Error>,
}

/// How often a table's reader asks where its topic ends, for its lag.
const MEASURE_EVERY: Duration = Duration::from_secs(5);

impl Reading {
    /// Open `table`'s part of the store and its topic, and read on from where the store is.
    pub(super) fn open(
        table: &Arc<Table>,
        store: &Arc<StateStore>,
        source: &Source<'_>,
        metrics: Arc<Metrics>,
    ) -> Result<Reading, Error> {
        let config = &table.config;
        let follower = Follower::new(source.brokers, &source.properties.0, &config.topic, "table")
            .map_err(|e| kafka_error(&config.name, "a reader", &config.topic, e))?;
        let mut reading = Reading {
            table: table.clone(),
            name: config.name.clone(),
            topic: config.topic.clone(),
            follower,
            decoder: table.decoder(),
            rows: TableStore::new(store.clone(), &config.name, config.as_of),
            settings: format!(
                "topic={} format={} key={} as_of={:?}",
                config.topic,
                config.format.as_str(),
                config.key.as_deref().unwrap_or("(record key)"),
                config.as_of
            ),
            policy: source.policy,
            next: BTreeMap::new(),
            ends: BTreeMap::new(),
            at_end: BTreeSet::new(),
            only: config.partitioned.then(|| (BTreeSet::new(), 0)),
            read: 0,
            metrics,
            measured: Instant::now(),
        };
        let ends = reading.partitions(source.brokers, config.line)?;
        let mut next = reading.kept(&ends)?;
        next.retain(|p, _| reading.reads(*p));
        reading.start_at(next)?;
        Ok(reading)
    }

    /// Whether partition `p` of the topic is read.
    fn reads(&self, p: i32) -> bool {
        self.only
            .as_ref()
            .is_none_or(|(partitions, _)| partitions.contains(&p))
    }

    /// A partitioned table: if a rebalance changed the partitions it is to read, read those
    /// now, each from where the store has it.
    fn reassign(&mut self) -> Result<(), Error> {
        let wanted = self.table.wanted();
        match &self.only {
            Some((_, generation)) if *generation != wanted.generation => {}
            _ => return Ok(()),
        }
        let ends = self.follower.ends(Duration::from_secs(30));
        let ends = ends
            .map_err(|e| kafka_error(&self.name, "the partitions", &self.topic, e))?
            .unwrap_or_default();
        tracing::info!(
            table = %self.name,
            topic = %self.topic,
            "reading partitions {:?} of the table (the source's assigned partitions)",
            wanted.partitions
        );
        self.only = Some((wanted.partitions, wanted.generation));
        let ends: Vec<PartitionEnds> = ends.into_iter().filter(|e| self.reads(e.0)).collect();
        self.take_ends(&ends);
        let kept = self.rows.positions()?;
        // The table is not emptied for a partition whose stored position the topic no longer
        // holds: the other partitions' rows are in use. Rows whose deletes retention removed
        // may linger there until their keys change again.
        let next = ends
            .iter()
            .map(|(p, low, _)| {
                let at = kept.get(p).copied().unwrap_or(*low);
                if at < *low {
                    tracing::warn!(
                        table = %self.name,
                        partition = p,
                        "the topic no longer holds records of this partition the table has \
                         not read (retention removed them): reading on from its start, rows \
                         those records deleted may linger"
                    );
                }
                (*p, at.max(*low))
            })
            .collect();
        self.at_end.clear();
        self.start_at(next)
    }

    /// The topic's partitions with their low and high watermarks (the highs are the ends the
    /// bootstrap reads to).
    fn partitions(&mut self, brokers: &str, line: usize) -> Result<Vec<PartitionEnds>, Error> {
        let ends = self
            .follower
            .ends(Duration::from_secs(30))
            .map_err(|e| kafka_error(&self.name, "the partitions", &self.topic, e))?
            .ok_or_else(|| {
                Error::Topic(format!(
                    "table `{}` (line {line}): its topic `{}` does not exist on {brokers}",
                    self.name, self.topic
                ))
            })?;
        self.take_ends(&ends);
        Ok(ends)
    }

    /// The partitions' high watermarks in `ends` are the ones to reach now (of the partitions
    /// read).
    fn take_ends(&mut self, ends: &[PartitionEnds]) {
        self.ends = ends
            .iter()
            .filter(|(p, _, _)| self.reads(*p))
            .map(|(p, _, high)| (*p, *high))
            .collect();
    }

    /// Where to read each partition from (see [`resume_from`]); a store that cannot be read
    /// on from is emptied first.
    fn kept(&self, ends: &[PartitionEnds]) -> Result<BTreeMap<i32, i64>, Error> {
        let kept = self.rows.positions()?;
        let same = self.rows.settings()?.as_deref() == Some(self.settings.as_str());
        let (next, why) = resume_from(&kept, same, ends);
        if let Some(why) = why {
            if !kept.is_empty() {
                tracing::info!(table = %self.name, "reading the table from the beginning: {why}");
            }
            self.rows.reset(&self.settings)?;
        }
        Ok(next)
    }

    /// Read each partition from its offset in `next` on.
    fn start_at(&mut self, next: BTreeMap<i32, i64>) -> Result<(), Error> {
        let from: Vec<(i32, i64)> = next.iter().map(|(p, o)| (*p, *o)).collect();
        self.follower
            .start(&from)
            .map_err(|e| kafka_error(&self.name, "assigning the partitions", &self.topic, e))?;
        self.table.restart_at(&next);
        self.next = next;
        Ok(())
    }

    /// The broker refused a position the store kept: it is past the partition's end, so the
    /// topic is not the one the store read (deleted and made again). Read it from the start.
    fn start_over(&mut self) -> Result<(), Error> {
        tracing::warn!(
            table = %self.name,
            topic = %self.topic,
            "the topic does not hold the offsets the table was read to (was it deleted and \
             made again?): reading the table from the beginning"
        );
        self.rows.reset(&self.settings)?;
        let ends = self.follower.ends(Duration::from_secs(30));
        let ends = ends
            .map_err(|e| kafka_error(&self.name, "the partitions", &self.topic, e))?
            .unwrap_or_default();
        self.take_ends(&ends);
        self.at_end.clear();
        let from = ends.iter().filter(|(p, _, _)| self.reads(*p));
        self.start_at(from.map(|(p, low, _)| (*p, *low)).collect())
    }

    /// Its rows, for lookups.
    pub(super) fn rows(&self) -> TableStore {
        self.rows.clone()
    }

    /// Show how far the table is in the run's metrics.
    fn show(&self, loaded: bool) {
        let (read, lag) = (self.read, self.behind() as i64);
        self.metrics.table(&self.name, |view| {
            view.topic.clone_from(&self.topic);
            view.records_read = read;
            view.lag = lag;
            view.loaded |= loaded;
        });
    }

    /// Ask where the topic ends now (every few seconds while following), for the lag.
    fn measure(&mut self) {
        if self.measured.elapsed() < MEASURE_EVERY {
            return;
        }
        self.measured = Instant::now();
        if let Ok(Some(ends)) = self.follower.ends(Duration::from_secs(5)) {
            self.take_ends(&ends);
        }
    }

    /// Records left to read to reach the ends.
    fn behind(&self) -> u64 {
        self.ends
            .iter()
            .map(|(p, end)| (end - self.next.get(p).copied().unwrap_or(0)).max(0) as u64)
            .sum()
    }

    /// Whether every partition is read to the end it had when the table was opened, or to
    /// where the broker says what is readable ends (a transaction left open holds the rest).
    fn read_to_end(&self) -> bool {
        self.ends.iter().all(|(p, end)| {
            self.next.get(p).is_some_and(|next| next >= end) || self.at_end.contains(p)
        })
    }

    /// Read up to the ends the topic had when the table was opened.
    pub(super) fn bootstrap(mut self, stop: &AtomicBool) -> Result<Reading, Error> {
        let started = Instant::now();
        let total = self.behind();
        let mut said = Instant::now();
        tracing::info!(table = %self.name, topic = %self.topic, "reading the table: {total} records to read");
        while !self.read_to_end() && !stop.load(Ordering::Relaxed) {
            self.step()?;
            self.show(false);
            if said.elapsed() >= PROGRESS_EVERY {
                said = Instant::now();
                let done = total - self.behind().min(total);
                tracing::info!(
                    table = %self.name,
                    "reading the table: {done} of {total} records ({:.0}%)",
                    100.0 * done as f64 / total.max(1) as f64
                );
            }
        }
        tracing::info!(
            table = %self.name,
            topic = %self.topic,
            "table read: {} records in {:.1} s; following its topic",
            self.read,
            started.elapsed().as_secs_f64()
        );
        self.show(true);
        Ok(self)
    }

    /// Where the consumer's position is past the last record read (transaction markers and
    /// compacted-away records have offsets too), take it.
    fn moved_past_markers(&mut self) {
        for (partition, at) in self.follower.positions().unwrap_or_default() {
            if let Some(next) = self.next.get_mut(&partition) {
                *next = (*next).max(at);
            }
        }
        self.table.reach(&self.next, &self.at_end);
    }

    /// Follow the topic until `done`; an error stops the run.
    pub(super) fn follow(mut self, done: impl Fn() -> bool, fatal: &Fatal) {
        while !done() && !fatal.is_set() {
            if let Err(e) = self.reassign() {
                fatal.set(e);
                return;
            }
            match self.step() {
                Ok(0) => self.moved_past_markers(),
                Ok(_) => {}
                Err(e) => {
                    fatal.set(e);
                    return;
                }
            }
            self.measure();
            // A partitioned table is loaded once its first partitions are read to their end.
            self.show(!self.ends.is_empty() && self.read_to_end());
        }
    }

    /// Read what has come and apply it; returns how many records.
    fn step(&mut self) -> Result<usize, Error> {
        let polled = match self.follower.poll(BATCH, POLL) {
            Ok(polled) => polled,
            Err(e) if out_of_range(&e) => {
                self.start_over()?;
                return Ok(0);
            }
            Err(e) => return Err(kafka_error(&self.name, "reading", &self.topic, e)),
        };
        let records = polled.changes;
        let decoded = self.decode(&records);
        if !decoded.positions.is_empty() {
            self.rows.apply(&decoded.changes, &decoded.positions)?;
            self.next.extend(decoded.positions);
        }
        if let Some(e) = decoded.stopped {
            return Err(e);
        }
        for record in &records {
            self.at_end.remove(&record.partition);
        }
        self.at_end.extend(polled.at_end);
        self.table.reach(&self.next, &self.at_end);
        self.read += records.len() as u64;
        Ok(records.len())
    }

    /// The row changes of `records`, and the positions they take the table to; a record that
    /// stops the run (`policy = "fail"`) ends them before it, with the error.
    fn decode(&self, records: &[Change]) -> Decoded {
        let mut decoded = Decoded {
            changes: Vec::with_capacity(records.len()),
            positions: Vec::new(),
            stopped: None,
        };
        let mut moved: BTreeMap<i32, i64> = BTreeMap::new();
        for record in records {
            match self
                .decoder
                .decode_at(record.key.as_deref(), record.value.as_deref())
            {
                // When it happened: as the record says, else its Kafka timestamp.
                Ok((change, at)) => decoded
                    .changes
                    .push((change, at.unwrap_or(record.timestamp))),
                Err(message) => {
                    if let Err(e) = self.unreadable(record.partition, record.offset, message) {
                        decoded.stopped = Some(e);
                        break;
                    }
                }
            }
            moved.insert(record.partition, record.offset + 1);
        }
        decoded.positions = moved.into_iter().collect();
        decoded
    }

    /// A record that is no row change: the policy decides.
    fn unreadable(&self, partition: i32, offset: i64, message: String) -> Result<(), Error> {
        if self.policy == ErrorPolicy::Fail {
            return Err(Error::TableRecord {
                table: self.name.clone(),
                topic: self.topic.clone(),
                partition,
                offset,
                message,
            });
        }
        tracing::warn!(
            table = %self.name,
            topic = %self.topic,
            partition,
            offset,
            "record left out of the table: {message}"
        );
        Ok(())
    }
}

/// Where to read each partition of `ends` (partition, low, high) from: the store's position
/// (`kept`), unless the store holds none, is of other settings (`same` false), or holds one
/// from before a partition's start (retention removed records it never read); then every
/// partition from its start, with why. A position past the topic's end (a topic deleted and
/// made again) is the broker's to refuse: see [`Reading::start_over`].
fn resume_from(
    kept: &BTreeMap<i32, i64>,
    same: bool,
    ends: &[PartitionEnds],
) -> (BTreeMap<i32, i64>, Option<&'static str>) {
    let why = if !same {
        Some("its settings are new to the store")
    } else if ends
        .iter()
        .any(|(p, low, _)| kept.get(p).is_some_and(|&at| at < *low))
    {
        Some("the topic no longer holds records the store has not read")
    } else {
        None
    };
    let next = ends
        .iter()
        .map(|(p, low, _)| {
            let at = kept.get(p).filter(|_| why.is_none()).copied();
            (*p, at.unwrap_or(*low).max(*low))
        })
        .collect();
    (next, why)
}

/// A Kafka failure of table `table`'s reader, doing `what` with `topic`.
fn kafka_error(table: &str, what: &str, topic: &str, cause: KafkaError) -> Error {
    Error::Kafka {
        what: format!("table `{table}`: {what} of topic `{topic}`"),
        cause,
    }
}

/// Whether the broker refused a position as outside the partition (the follower has no
/// automatic reset, so this comes back instead of a silent jump).
fn out_of_range(e: &KafkaError) -> bool {
    e.rdkafka_error_code() == Some(RDKafkaErrorCode::AutoOffsetReset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_reads_on_from_its_store_unless_the_store_cannot_be_trusted() {
        let ends = [(0, 0, 50), (1, 10, 40), (2, 0, 0)];
        let kept = BTreeMap::from([(0, 30), (1, 12)]);
        // On from the store; a partition it never read from its start.
        let (next, why) = resume_from(&kept, true, &ends);
        assert_eq!(
            (next, why),
            (BTreeMap::from([(0, 30), (1, 12), (2, 0)]), None)
        );
        // Other settings: from the start.
        let (next, why) = resume_from(&kept, false, &ends);
        assert_eq!(next, BTreeMap::from([(0, 0), (1, 10), (2, 0)]));
        assert_eq!(why, Some("its settings are new to the store"));
        // Retention removed offsets 12..20 of partition 1 before they were read.
        let cut = [(0, 0, 50), (1, 20, 40), (2, 0, 0)];
        let (next, why) = resume_from(&kept, true, &cut);
        assert_eq!(next, BTreeMap::from([(0, 0), (1, 20), (2, 0)]));
        assert!(why.unwrap().contains("no longer holds"));
    }
}
