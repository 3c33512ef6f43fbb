//! Tables kept from topics (`[[table]]`), for plugins to look rows up in: the enrichment a CDC
//! pipeline does all day (an order needs its customer's current row, and the customers arrive
//! as another change stream).
//!
//! Each process keeps every table whole, as Kafka Streams keeps a global table: any instance
//! can look up any key, so the table's topic need not be partitioned like the source. A table
//! lives in the run's state store (`store`), rows and read positions written together, so a
//! restart reads on from where the store is instead of from the beginning. Before the source
//! starts, each table is read up to the end its topic had (the bootstrap), so the
//! first record sees every row written before the run started; afterwards a thread per table
//! follows its topic (both in `runtime::tables`).
//!
//! A stage reads the tables the pipeline grants it (`tables = [...]`), through [`Granted`].

mod format;
mod store;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, OnceLock},
};

pub use format::{fill_unavailable, kafka_key_text, key_text, Change, Decoder};
pub use store::TableStore;

use crate::{
    config::{AsOf, Pipeline, Stage, TableConfig},
    engine::{NoTables, SharedTables, TableLookup},
};

/// The tables of a run, by name: declared by the pipeline before the stages load, filled when
/// the run has read them.
#[derive(Default)]
pub struct Tables {
    tables: BTreeMap<String, Arc<Table>>,
}

/// One table: its settings, and its rows once the run keeps them.
pub struct Table {
    pub config: TableConfig,
    rows: OnceLock<Arc<dyn Rows>>,
    /// How far its reader is in its topic.
    reached: Mutex<Reached>,
    /// A partitioned table: the partitions to read (the run's assigned partition numbers).
    wanted: Mutex<Wanted>,
}

/// The partitions a partitioned table's reader is to read, changed on every rebalance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    pub partitions: BTreeSet<i32>,
    /// One more for each change, so the reader sees that there was one.
    pub generation: u64,
}

/// How far a table's reader is in its topic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reached {
    /// Per partition, the next offset the rows will take in.
    pub next: BTreeMap<i32, i64>,
    /// Partitions the reader last found read to their end: under read_committed, to the last
    /// stable offset, short of the high watermark while a transaction is open.
    pub at_end: BTreeSet<i32>,
}

/// Where a table's rows are read from: the run's store, or memory (`weir test`).
pub trait Rows: Send + Sync {
    /// The row under `key` (for a table kept as of event time, the version current at
    /// `time`); `Err` says why it cannot be read.
    fn get(&self, key: &[u8], time: i64) -> Result<Option<Vec<u8>>, String>;
}

impl Rows for TableStore {
    fn get(&self, key: &[u8], time: i64) -> Result<Option<Vec<u8>>, String> {
        TableStore::get(self, key, time)
    }
}

/// A table's rows in memory, as `weir test` reads them from a file of the table's records:
/// every version, by key and time (versions are not expired here).
#[derive(Debug)]
pub struct MemoryRows {
    as_of: AsOf,
    versions: BTreeMap<(Vec<u8>, i64), Option<Vec<u8>>>,
    latest: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl MemoryRows {
    pub fn new(as_of: AsOf) -> MemoryRows {
        MemoryRows {
            as_of,
            versions: BTreeMap::new(),
            latest: BTreeMap::new(),
        }
    }

    /// Apply `change`, which happened at `time` (event time, ms).
    pub fn apply(&mut self, change: Change, time: i64) {
        match change {
            Change::Upsert { key, row } => {
                let previous = self.latest.get(&key).map(Vec::as_slice);
                let row = fill_unavailable(&row, previous).unwrap_or(row);
                self.versions.insert((key.clone(), time), Some(row.clone()));
                self.latest.insert(key, row);
            }
            Change::Delete { key } => {
                self.latest.remove(&key);
                self.versions.insert((key, time), None);
            }
            Change::Truncate => {
                self.latest.clear();
                self.versions.clear();
            }
            Change::None => {}
        }
    }

    /// Rows the table holds now.
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }
}

impl Rows for MemoryRows {
    fn get(&self, key: &[u8], time: i64) -> Result<Option<Vec<u8>>, String> {
        if self.as_of == AsOf::Latest {
            return Ok(self.latest.get(key).cloned());
        }
        let range = (key.to_vec(), i64::MIN)..=(key.to_vec(), time);
        Ok(self
            .versions
            .range(range)
            .next_back()
            .and_then(|(_, row)| row.clone()))
    }
}

impl Tables {
    /// The tables `pipeline` declares, none of them read yet.
    pub fn declared(pipeline: &Pipeline) -> Arc<Tables> {
        let tables = pipeline
            .tables
            .iter()
            .map(|config| {
                let table = Table {
                    config: config.clone(),
                    rows: OnceLock::new(),
                    reached: Mutex::default(),
                    wanted: Mutex::default(),
                };
                (config.name.clone(), Arc::new(table))
            })
            .collect();
        Arc::new(Tables { tables })
    }

    /// Every table, in name order.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Table>> {
        self.tables.values()
    }

    /// The table called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Table>> {
        self.tables.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// What `stage` may read: the tables it is granted.
    pub fn grant(&self, stage: &Stage) -> SharedTables {
        if stage.tables.is_empty() {
            return Arc::new(NoTables);
        }
        let granted = stage
            .tables
            .iter()
            .map(|name| (name.clone(), self.tables.get(name).cloned()))
            .collect();
        Arc::new(Granted {
            stage: stage.name.clone(),
            tables: granted,
        })
    }
}

impl Table {
    /// From now on, rows are read from `rows` (the first rows attached stay).
    pub fn attach(&self, rows: Arc<dyn Rows>) {
        let _ = self.rows.set(rows);
    }

    /// How far its reader is in its topic.
    pub fn reached(&self) -> Reached {
        self.lock_reached().clone()
    }

    fn lock_reached(&self) -> std::sync::MutexGuard<'_, Reached> {
        self.reached.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The reader has applied everything before `next` (per partition), and found the
    /// partitions `at_end` read to their end.
    pub fn reach(&self, next: &BTreeMap<i32, i64>, at_end: &BTreeSet<i32>) {
        let mut reached = self.lock_reached();
        for (partition, offset) in next {
            let at = reached.next.entry(*partition).or_insert(*offset);
            *at = (*at).max(*offset);
        }
        reached.at_end.clone_from(at_end);
    }

    /// A partitioned table is to read `partitions` from now on. How far those newly wanted are
    /// read is unknown until the reader has taken them up: what it said of them before (while
    /// it read them for an earlier assignment) may be out of date.
    pub fn want(&self, partitions: BTreeSet<i32>) {
        let mut wanted = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
        if wanted.partitions == partitions {
            return;
        }
        let mut reached = self.lock_reached();
        for p in partitions.difference(&wanted.partitions) {
            reached.next.remove(p);
            reached.at_end.remove(p);
        }
        wanted.partitions = partitions;
        wanted.generation += 1;
    }

    /// The partitions a partitioned table is to read.
    pub fn wanted(&self) -> Wanted {
        self.wanted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The reader starts again at `next` (per partition), wherever it was.
    pub fn restart_at(&self, next: &BTreeMap<i32, i64>) {
        *self.lock_reached() = Reached {
            next: next.clone(),
            at_end: BTreeSet::new(),
        };
    }

    /// How this table reads its topic's records.
    pub fn decoder(&self) -> Decoder {
        Decoder::new(self.config.format, self.config.key.clone())
    }
}

/// The tables one stage is granted: the only ones its plugin can read.
pub struct Granted {
    stage: String,
    /// By name; `None`: granted, but not a table of this run (a reload granted one the running
    /// pipeline does not keep).
    tables: Vec<(String, Option<Arc<Table>>)>,
}

impl TableLookup for Granted {
    fn get(&self, table: &str, key: &[u8], time: i64) -> Result<Option<Vec<u8>>, String> {
        let Some((_, found)) = self.tables.iter().find(|(name, _)| name == table) else {
            let names: Vec<&str> = self.tables.iter().map(|(n, _)| n.as_str()).collect();
            return Err(format!(
                "asked for table `{table}`, which stage `{}` is not granted (it has tables = \
                 [{}]: add it there, with a [[table]] named so)",
                self.stage,
                names.join(", ")
            ));
        };
        let Some(found) = found else {
            return Err(format!(
                "asked for table `{table}`, which a reload granted stage `{}`, but this run \
                 keeps no table of that name: a new [[table]] needs a restart of `weir run`",
                self.stage
            ));
        };
        let rows = found.rows.get().ok_or_else(|| {
            format!(
                "table `{table}` is not kept here: `weir run` keeps tables, `weir test` reads \
                 one from a file given with --table {table}=FILE"
            )
        })?;
        rows.get(key, time)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn pipeline() -> Pipeline {
        let text = r#"
[source]
brokers = "localhost:9092"
topics = ["orders"]
group = "g"

[sink]
topic = "out"

[[table]]
name = "customers"
topic = "shop.public.customers"
key = "/id"
format = "debezium"

[[table]]
name = "rates"
topic = "rates"
format = "upsert"

[[stage]]
name = "join"
plugin = "join.wasm"
tables = ["customers"]
"#;
        Pipeline::parse(Path::new("p.toml"), text).unwrap()
    }

    #[test]
    fn a_stage_reads_only_the_tables_it_is_granted() {
        let pipeline = pipeline();
        let tables = Tables::declared(&pipeline);
        let granted = tables.grant(&pipeline.stages[0]);
        let not_granted = granted.get("rates", b"x", 0).unwrap_err();
        assert!(
            not_granted.contains("`rates`, which stage `join` is not granted")
                && not_granted.contains("tables = [customers]"),
            "{not_granted}"
        );
        let not_kept = granted.get("customers", b"x", 0).unwrap_err();
        assert!(not_kept.contains("--table customers=FILE"), "{not_kept}");
        let mut rows = MemoryRows::new(AsOf::Latest);
        let row = |r: &str| Change::Upsert {
            key: b"7".to_vec(),
            row: r.as_bytes().to_vec(),
        };
        rows.apply(row("{}"), 5);
        tables.get("customers").unwrap().attach(Arc::new(rows));
        assert_eq!(granted.get("customers", b"7", 0), Ok(Some(b"{}".to_vec())));
        assert_eq!(granted.get("customers", b"8", 0), Ok(None));
        // As of event time, the version current at the time asked about.
        let mut rows = MemoryRows::new(AsOf::EventTime { retention: 1 });
        rows.apply(row("old"), 5);
        rows.apply(row("new"), 10);
        assert_eq!(rows.get(b"7", 4), Ok(None));
        assert_eq!(rows.get(b"7", 9), Ok(Some(b"old".to_vec())));
        assert_eq!(rows.get(b"7", 10), Ok(Some(b"new".to_vec())));
    }
}
