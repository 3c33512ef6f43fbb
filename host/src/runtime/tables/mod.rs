//! Reading tables from their topics: up to the end first (the bootstrap, before the source
//! starts), then following new changes on a thread per table until the run stops.
//!
//! A record that is no row change this table can read stops the run under `policy = "fail"`,
//! naming the table and the record's place; under the other policies it is left out of the
//! table and logged (it stays in its topic: a table has no outputs to send a dead letter for).

use std::{
    collections::BTreeSet,
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
    kafka::{Consumer, Fatal},
    metrics::Metrics,
    state::StateStore,
    table::{Table, Tables},
};

mod reading;

use reading::Reading;

/// Where the tables' topics are, and what to do about records they cannot read.
pub(crate) struct Source<'a> {
    pub brokers: &'a str,
    pub properties: &'a KafkaProperties,
    pub policy: ErrorPolicy,
}

/// The tables' reader threads. They end with the run (its `stop`, or a fatal error), and
/// when this is dropped: a run that fails after they started leaves none behind.
pub(crate) struct Readers {
    halt: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
}

impl Drop for Readers {
    fn drop(&mut self) {
        self.halt.store(true, Ordering::Relaxed);
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

/// Read every table of `tables` up to its topic's end, into `store`; then follow each on a
/// thread of its own until `stop` is set, a reader fails (it sets `fatal`) or the readers are
/// dropped.
pub(crate) fn keep(
    tables: &Tables,
    store: &Arc<StateStore>,
    source: &Source<'_>,
    stop: &Arc<AtomicBool>,
    fatal: &Arc<Fatal>,
    metrics: &Arc<Metrics>,
) -> Result<Readers, Error> {
    let mut readers = Readers {
        halt: Arc::default(),
        handles: Vec::new(),
    };
    let loading = &metrics.health.loading_tables;
    loading.store(tables.all().count(), Ordering::Relaxed);
    for table in tables.all() {
        let reading = Reading::open(table, store, source, metrics.clone())?;
        // A partitioned table's partitions are read as the source's are assigned.
        let reading = match table.config.partitioned {
            false => reading.bootstrap(stop)?,
            true => reading,
        };
        loading.fetch_sub(1, Ordering::Relaxed);
        table.attach(Arc::new(reading.rows()));
        let (stop, halt, fatal) = (stop.clone(), readers.halt.clone(), fatal.clone());
        let done = move || stop.load(Ordering::Relaxed) || halt.load(Ordering::Relaxed);
        let handle = thread::Builder::new()
            .name(format!("weir-table-{}", table.config.name))
            .spawn(move || reading.follow(done, &fatal))
            .map_err(|e| Error::Io {
                what: format!("table `{}`: starting its reader thread", table.config.name),
                cause: e,
            })?;
        readers.handles.push(handle);
    }
    Ok(readers)
}

/// Longest wait, over all global tables, for them to catch up with their topics when
/// partitions are assigned.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(10);

/// The same for partitioned tables: their newly assigned partitions may never have been read
/// here, and a record should not be processed before the rows of its partition are there (as
/// Kafka Streams restores a task's state first). The wait runs in the group's rebalance
/// callback, so it stays below librdkafka's default `max.poll.interval.ms` (5 min), past which
/// the group would count this instance gone and move its partitions again.
const PARTITIONED_LIMIT: Duration = Duration::from_secs(240);

/// Partitioned tables: read the partitions of the numbers in `partitions` (those of the
/// source's topics now assigned), and no others.
pub(crate) fn want(tables: &Tables, partitions: &BTreeSet<i32>) {
    for table in tables.all().filter(|t| t.config.partitioned) {
        table.want(partitions.clone());
    }
}

/// Wait until every table has taken in what its topic holds now (asking the brokers through
/// `consumer`), or `done` says to stop waiting. Called when partitions are assigned, before
/// their first record: a partition taken over from another instance, or after a restart, then
/// never joins a record with an older row than its previous owner's committed outputs saw,
/// whatever the guarantee.
pub(crate) fn catch_up(tables: &Tables, consumer: &Consumer, done: &dyn Fn() -> bool) {
    let end = |table: &Table, p: i32| {
        let topic = &table.config.topic;
        match consumer.fetch_watermarks(topic, p, Duration::from_secs(5)) {
            Ok((_, high)) => Some(high),
            Err(e) => {
                tracing::warn!(table = %table.config.name, "cannot ask where {topic}[{p}] ends: {e}");
                None
            }
        }
    };
    wait_for_ends(tables, end, done, [CATCH_UP_LIMIT, PARTITIONED_LIMIT]);
}

/// Wait until each table's reader has reached the `end` of each partition of its topic it
/// reads, or found it read to its end (a transaction left open keeps a read_committed reader
/// short of the high watermark), for at most `limits[0]` in all for global tables and
/// `limits[1]` for partitioned ones (or until `done`).
fn wait_for_ends(
    tables: &Tables,
    end: impl Fn(&Table, i32) -> Option<i64>,
    done: &dyn Fn() -> bool,
    limits: [Duration; 2],
) {
    let started = Instant::now();
    for table in tables.all() {
        let partitioned = table.config.partitioned;
        let deadline = started + limits[usize::from(partitioned)];
        let partitions: Vec<i32> = match partitioned {
            true => table.wanted().partitions.into_iter().collect(),
            false => table.reached().next.into_keys().collect(),
        };
        let ends = ends_of(table, partitions, &end, partitioned, done, deadline);
        let mut said = Instant::now();
        loop {
            let reached = table.reached();
            let short: Vec<i32> = ends
                .iter()
                .filter(|(p, high)| {
                    !reached.at_end.contains(p) && reached.next.get(p).is_none_or(|n| n < high)
                })
                .map(|(p, _)| *p)
                .collect();
            if short.is_empty() || done() {
                break;
            }
            if partitioned && said.elapsed() >= Duration::from_secs(5) {
                said = Instant::now();
                tracing::info!(
                    table = %table.config.name,
                    "reading partitions {short:?} of the table before the source's \
                     partitions of the same numbers start"
                );
            }
            if Instant::now() > deadline {
                tracing::warn!(
                    table = %table.config.name,
                    "partitions {short:?} of the table's topic are not read to their end \
                     within {:?}: going on with the table as it is",
                    limits[usize::from(partitioned)]
                );
                break;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The end of each of `partitions` of `table`'s topic. A partitioned table's are asked again
/// until the brokers answer (a leader moving in a rolling restart): without its end, a
/// partition would not be waited for at all. A global table goes on without the ones it
/// cannot get: it was read to its end before the run began.
fn ends_of(
    table: &Table,
    partitions: Vec<i32>,
    end: &impl Fn(&Table, i32) -> Option<i64>,
    partitioned: bool,
    done: &dyn Fn() -> bool,
    deadline: Instant,
) -> Vec<(i32, i64)> {
    let mut ends = Vec::with_capacity(partitions.len());
    for p in partitions {
        loop {
            if let Some(high) = end(table, p) {
                ends.push((p, high));
                break;
            }
            if !partitioned || done() || Instant::now() > deadline {
                break;
            }
            thread::sleep(Duration::from_millis(200));
        }
    }
    ends
}

#[cfg(test)]
mod tests {
    use std::{
        collections::{BTreeMap, BTreeSet},
        path::Path,
    };

    use super::*;
    use crate::config::Pipeline;

    #[test]
    fn assigned_partitions_wait_for_the_tables_to_reach_their_topics_end() {
        let text = "[[table]]\nname = \"t\"\ntopic = \"t\"\nformat = \"upsert\"\n\n\
                    [[stage]]\nname = \"s\"\nplugin = \"s.wasm\"\n";
        let tables = Tables::declared(&Pipeline::parse(Path::new("p.toml"), text).unwrap());
        let table = tables.get("t").unwrap().clone();
        let none = BTreeSet::new();
        table.reach(
            &BTreeMap::from([(0, 3), (1, 10), (2, 4)]),
            &BTreeSet::from([2]),
        );
        // Partition 2 is read to its end short of its high watermark (an open transaction).
        let end = |_: &Table, p: i32| Some([8, 10, 6][p as usize]);
        let done = || false;
        let reader = {
            let table = table.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(100));
                table.reach(&BTreeMap::from([(0, 8)]), &BTreeSet::from([2]));
            })
        };
        let started = Instant::now();
        wait_for_ends(&tables, end, &done, [Duration::from_secs(10); 2]);
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert_eq!(
            table.reached().next,
            BTreeMap::from([(0, 8), (1, 10), (2, 4)])
        );
        reader.join().unwrap();
        // A table that never gets there holds the assignment up for the limit only.
        table.reach(&BTreeMap::new(), &none);
        let never = |_: &Table, _: i32| Some(1_000);
        let started = Instant::now();
        wait_for_ends(&tables, never, &done, [Duration::from_millis(50); 2]);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_partitioned_table_holds_its_assigned_partitions_back_until_they_are_read() {
        let text = "[[table]]\nname = \"t\"\ntopic = \"t\"\nformat = \"upsert\"\n\
                    partitioned = true\n\n[[stage]]\nname = \"s\"\nplugin = \"s.wasm\"\n";
        let tables = Tables::declared(&Pipeline::parse(Path::new("p.toml"), text).unwrap());
        let table = tables.get("t").unwrap().clone();
        // Read for an earlier assignment: partition 1 to its end, which is out of date now.
        table.reach(&BTreeMap::from([(1, 5)]), &BTreeSet::from([1]));
        want(&tables, &BTreeSet::from([0, 1]));
        assert_eq!(table.wanted().partitions, BTreeSet::from([0, 1]));
        assert_eq!(table.reached(), Default::default());
        let end = |_: &Table, p: i32| Some([4, 9][p as usize]);
        let reader = {
            let table = table.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(200));
                table.restart_at(&BTreeMap::from([(0, 0), (1, 5)]));
                table.reach(&BTreeMap::from([(0, 4), (1, 9)]), &BTreeSet::new());
            })
        };
        // Past the global tables' limit: a partitioned table is waited for longer.
        let started = Instant::now();
        let limits = [Duration::from_millis(50), Duration::from_secs(10)];
        wait_for_ends(&tables, end, &|| false, limits);
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(table.reached().next, BTreeMap::from([(0, 4), (1, 9)]));
        reader.join().unwrap();
        // Unless the run stops meanwhile.
        want(&tables, &BTreeSet::from([0, 1, 2]));
        let never = |_: &Table, _: i32| Some(1_000);
        wait_for_ends(&tables, never, &|| true, limits);
    }
}
