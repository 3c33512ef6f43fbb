//! Reading tables from their topics: up to the end first (the bootstrap, before the source
//! starts), then following new changes on a thread per table until the run stops.
//!
//! A record that is no row change this table can read stops the run under `policy = "fail"`,
//! naming the table and the record's place; under the other policies it is left out of the
//! table and logged (it stays in its topic: a table has no outputs to send a dead letter for).

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use rdkafka::consumer::Consumer as _;

use crate::{
    config::{ErrorPolicy, KafkaProperties},
    error::Error,
    kafka::{follow::Follower, Consumer, Fatal},
    metrics::Metrics,
    state::StateStore,
    table::{Decoder, Table, TableStore, Tables},
};

/// Most records applied in one write to the store.
const BATCH: usize = 4096;
/// How long a poll waits for the first record.
const POLL: Duration = Duration::from_millis(100);
/// How often the bootstrap says how far it is.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// With nothing more arriving for this long after records came, a partition the consumer's
/// position shows short of its end is taken as read: what is left are transaction markers,
/// which no record passes. Before any record came, the brokers get longer to answer at all.
const QUIET: Duration = Duration::from_secs(2);
const FIRST_QUIET: Duration = Duration::from_secs(30);

/// Where the tables' topics are, and what to do about records they cannot read.
pub(crate) struct Source<'a> {
    pub brokers: &'a str,
    pub properties: &'a KafkaProperties,
    pub policy: ErrorPolicy,
}

/// Read every table of `tables` up to its topic's end, into `store`; then follow each on a
/// thread of its own until `stop` is set (or, on an error, until it sets `fatal`).
pub(crate) fn keep(
    tables: &Tables,
    store: &Arc<StateStore>,
    source: &Source<'_>,
    stop: &Arc<AtomicBool>,
    fatal: &Arc<Fatal>,
    metrics: &Arc<Metrics>,
) -> Result<Vec<JoinHandle<()>>, Error> {
    let mut followers = Vec::new();
    metrics
        .health
        .loading_tables
        .store(tables.all().count(), Ordering::Relaxed);
    for table in tables.all() {
        let reading = Reading::open(table, store, source, metrics.clone())?;
        let reading = reading.bootstrap(stop)?;
        metrics
            .health
            .loading_tables
            .fetch_sub(1, Ordering::Relaxed);
        table.attach(Arc::new(reading.rows.clone()));
        let (stop, fatal) = (stop.clone(), fatal.clone());
        let handle = thread::Builder::new()
            .name(format!("weir-table-{}", table.config.name))
            .spawn(move || reading.follow(&stop, &fatal))
            .map_err(|e| Error::Io {
                what: format!("table `{}`: starting its reader thread", table.config.name),
                cause: e,
            })?;
        followers.push(handle);
    }
    Ok(followers)
}

/// Longest wait for the tables to catch up with their topics when partitions are assigned.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(30);

/// Wait until every table has taken in what its topic holds now (asking the brokers through
/// `consumer`). Called when partitions are assigned, before their first record: a partition
/// taken over from another instance, or after a restart, then never joins a record with an
/// older row than its previous owner's committed outputs saw, whatever the guarantee.
pub(crate) fn catch_up(tables: &Tables, consumer: &Consumer, stop: &AtomicBool) {
    let end =
        |topic: &str, p: i32| match consumer.fetch_watermarks(topic, p, Duration::from_secs(10)) {
            Ok((_, high)) => Some(high),
            Err(e) => {
                tracing::warn!("cannot ask where {topic}[{p}] ends: {e}");
                None
            }
        };
    wait_for_ends(tables, end, stop, CATCH_UP_LIMIT);
}

/// Wait until every table has reached the `end` of each partition of its topic, for at most
/// `limit`.
fn wait_for_ends(
    tables: &Tables,
    end: impl Fn(&str, i32) -> Option<i64>,
    stop: &AtomicBool,
    limit: Duration,
) {
    for table in tables.all() {
        let topic = &table.config.topic;
        let ends: Vec<(i32, i64)> = table
            .reached()
            .into_keys()
            .filter_map(|p| Some((p, end(topic, p)?)))
            .collect();
        let started = Instant::now();
        loop {
            let reached = table.reached();
            let behind: i64 = ends
                .iter()
                .map(|(p, high)| (high - reached.get(p).copied().unwrap_or(0)).max(0))
                .sum();
            if behind == 0 || stop.load(Ordering::Relaxed) {
                break;
            }
            if started.elapsed() > limit {
                tracing::warn!(
                    table = %table.config.name,
                    "the table is still {behind} offsets short of its topic's end after \
                     {limit:?}: going on with it as it is"
                );
                break;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

/// One table being read.
struct Reading {
    table: Arc<Table>,
    name: String,
    topic: String,
    follower: Follower,
    decoder: Decoder,
    rows: TableStore,
    policy: ErrorPolicy,
    /// Per partition: the next offset to read, and the end to reach in the bootstrap.
    next: BTreeMap<i32, i64>,
    ends: BTreeMap<i32, i64>,
    /// Records read (applied or left out).
    read: u64,
    metrics: Arc<Metrics>,
    /// When the ends were last asked for (following).
    measured: Instant,
}

/// How often a table's reader asks where its topic ends, for its lag.
const MEASURE_EVERY: Duration = Duration::from_secs(5);

impl Reading {
    /// Open `table`'s part of the store and its topic; read on from the store's positions, or
    /// from the beginning when the store has none, or is not of this table as configured now,
    /// or is past the topic's end or before its start (a topic recreated or cut by retention).
    fn open(
        table: &Arc<Table>,
        store: &Arc<StateStore>,
        source: &Source<'_>,
        metrics: Arc<Metrics>,
    ) -> Result<Reading, Error> {
        let config = &table.config;
        let name = config.name.clone();
        let kafka = |what: &str, cause| Error::Kafka {
            what: format!("table `{name}`: {what} of topic `{}`", config.topic),
            cause,
        };
        let follower = Follower::new(source.brokers, &source.properties.0, &config.topic)
            .map_err(|e| kafka("a reader", e))?;
        let ends = follower
            .ends(Duration::from_secs(30))
            .map_err(|e| kafka("the partitions", e))?
            .ok_or_else(|| {
                Error::Topic(format!(
                    "table `{name}` (line {}): its topic `{}` does not exist on {}",
                    config.line, config.topic, source.brokers
                ))
            })?;
        let rows = TableStore::new(store.clone(), &name);
        let settings = format!(
            "topic={} format={} key={}",
            config.topic,
            config.format.as_str(),
            config.key.as_deref().unwrap_or("(record key)")
        );
        let mut kept = rows.positions()?;
        let why_again = if rows.settings()?.as_deref() != Some(settings.as_str()) {
            Some("its settings are new to the store")
        } else if ends.iter().any(|(p, low, high)| {
            kept.get(p)
                .is_some_and(|&at| at > *high || (at < *low && *low > 0))
        }) {
            Some("the store's positions are outside the topic's offsets")
        } else {
            None
        };
        if let Some(why) = why_again {
            if !kept.is_empty() || why.contains("outside") {
                tracing::info!(table = %name, "reading the table from the beginning: {why}");
            }
            rows.reset(&settings)?;
            kept.clear();
        }
        let next: BTreeMap<i32, i64> = ends
            .iter()
            .map(|(p, low, _)| (*p, kept.get(p).copied().unwrap_or(*low).max(*low)))
            .collect();
        let from: Vec<(i32, i64)> = next.iter().map(|(p, o)| (*p, *o)).collect();
        follower
            .start(&from)
            .map_err(|e| kafka("assigning the partitions", e))?;
        table.reach(&next);
        Ok(Reading {
            table: table.clone(),
            decoder: table.decoder(),
            topic: config.topic.clone(),
            ends: ends.iter().map(|(p, _, high)| (*p, *high)).collect(),
            name,
            follower,
            rows,
            policy: source.policy,
            next,
            read: 0,
            metrics,
            measured: Instant::now(),
        })
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
            self.ends = ends.iter().map(|(p, _, high)| (*p, *high)).collect();
        }
    }

    /// Records left to read to reach the ends.
    fn behind(&self) -> u64 {
        self.ends
            .iter()
            .map(|(p, end)| (end - self.next.get(p).copied().unwrap_or(0)).max(0) as u64)
            .sum()
    }

    /// Read up to the ends the topic had when the table was opened.
    fn bootstrap(mut self, stop: &AtomicBool) -> Result<Reading, Error> {
        let started = Instant::now();
        let total = self.behind();
        let (mut said, mut heard) = (Instant::now(), Instant::now());
        tracing::info!(table = %self.name, topic = %self.topic, "reading the table: {total} records to read");
        while self.behind() > 0 && !stop.load(Ordering::Relaxed) {
            if self.step()? > 0 {
                heard = Instant::now();
            } else {
                self.moved_past_markers();
                let patience = if self.read > 0 { QUIET } else { FIRST_QUIET };
                if self.behind() > 0 && heard.elapsed() > patience {
                    tracing::warn!(
                        table = %self.name,
                        "nothing more came for {patience:?} with {} offsets short of the \
                         topic's end: taking them as transaction markers and going on",
                        self.behind()
                    );
                    break;
                }
            }
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
        self.table.reach(&self.next);
    }

    /// Follow the topic until `stop`; an error stops the run.
    fn follow(mut self, stop: &AtomicBool, fatal: &Fatal) {
        while !stop.load(Ordering::Relaxed) && !fatal.is_set() {
            match self.step() {
                Ok(0) => self.moved_past_markers(),
                Ok(_) => {}
                Err(e) => {
                    fatal.set(e);
                    return;
                }
            }
            self.measure();
            self.show(false);
        }
    }

    /// Read what has come and apply it; returns how many records.
    fn step(&mut self) -> Result<usize, Error> {
        let records = self
            .follower
            .poll(BATCH, POLL)
            .map_err(|cause| Error::Kafka {
                what: format!("table `{}`: reading topic `{}`", self.name, self.topic),
                cause,
            })?;
        let mut changes = Vec::with_capacity(records.len());
        let mut moved: BTreeMap<i32, i64> = BTreeMap::new();
        for record in &records {
            match self
                .decoder
                .decode(record.key.as_deref(), record.value.as_deref())
            {
                Ok(change) => changes.push(change),
                Err(message) => self.unreadable(record.partition, record.offset, message)?,
            }
            moved.insert(record.partition, record.offset + 1);
        }
        if records.is_empty() {
            return Ok(0);
        }
        let positions: Vec<(i32, i64)> = moved.into_iter().collect();
        self.rows.apply(&changes, &positions)?;
        self.next.extend(positions);
        self.table.reach(&self.next);
        self.read += records.len() as u64;
        Ok(records.len())
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Pipeline;

    #[test]
    fn assigned_partitions_wait_for_the_tables_to_reach_their_topics_end() {
        let text = "[[table]]\nname = \"t\"\ntopic = \"t\"\nformat = \"upsert\"\n\n\
                    [[stage]]\nname = \"s\"\nplugin = \"s.wasm\"\n";
        let tables = Tables::declared(&Pipeline::parse(Path::new("p.toml"), text).unwrap());
        let table = tables.get("t").unwrap().clone();
        table.reach(&BTreeMap::from([(0, 3), (1, 10)]));
        let end = |_: &str, p: i32| Some(if p == 0 { 8 } else { 10 });
        let stop = AtomicBool::new(false);
        let reader = {
            let table = table.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(100));
                table.reach(&BTreeMap::from([(0, 8)]));
            })
        };
        let started = Instant::now();
        wait_for_ends(&tables, end, &stop, Duration::from_secs(10));
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert_eq!(table.reached(), BTreeMap::from([(0, 8), (1, 10)]));
        reader.join().unwrap();
        // A table that never gets there holds the assignment up for the limit only.
        let never = |_: &str, _: i32| Some(1_000);
        let started = Instant::now();
        wait_for_ends(&tables, never, &stop, Duration::from_millis(50));
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
