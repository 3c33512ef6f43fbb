//! A table's rows in the run's state store, with where its topic was read up to.
//!
//! Rows and positions are written in one batch (a truncate commits the rows before it first),
//! so the store never says it has read past a change it does not hold: after a crash the table
//! reads on from its positions and replays at most what it had read but not yet written, and a
//! replayed change is harmless (the same row again). The table's settings are stored beside
//! them: a table whose topic, format, key or versioning changed since is read again from the
//! beginning.
//!
//! A table looked up as of event time also keeps each row's versions, keyed by row key then
//! time, so a lookup is one seek to the last version at or before the record's time. Versions
//! older than the retention behind a row's newest are removed when the row changes, all but
//! the last of them, which is still the row for times just after.

use std::{collections::BTreeMap, sync::Arc};

use super::Change;
use crate::{config::AsOf, error::Error, state::StateStore};

/// One table's part of the store.
#[derive(Clone)]
pub struct TableStore {
    store: Arc<StateStore>,
    /// `table:NAME`, for error messages.
    whose: String,
    /// Prefix of the table's keys in every keyspace: its name, length first.
    prefix: Vec<u8>,
    /// How long versions are kept (event time, ms); none: the table keeps no versions.
    retention: Option<i64>,
}

/// Marks a position key in the meta keyspace (then the partition); a settings key has none.
const POSITION: u8 = b'p';
const SETTINGS: u8 = b's';
/// A version's value: the row after this tag, or that the row was deleted.
const ROW: u8 = 1;
const DELETED: u8 = 0;

impl TableStore {
    pub fn new(store: Arc<StateStore>, name: &str, as_of: AsOf) -> TableStore {
        let mut prefix = Vec::with_capacity(name.len() + 2);
        prefix.extend_from_slice(&(name.len() as u16).to_be_bytes());
        prefix.extend_from_slice(name.as_bytes());
        TableStore {
            store,
            whose: format!("table `{name}`"),
            prefix,
            retention: match as_of {
                AsOf::Latest => None,
                AsOf::EventTime { retention } => Some(retention),
            },
        }
    }

    fn row_key(&self, key: &[u8]) -> Vec<u8> {
        let mut at = self.prefix.clone();
        at.extend_from_slice(key);
        at
    }

    /// Row key then time, so a row's versions sort together and in time order.
    fn version_key(&self, key: &[u8], time: i64) -> Vec<u8> {
        let mut at = self.prefix.clone();
        at.extend_from_slice(&(key.len() as u32).to_be_bytes());
        at.extend_from_slice(key);
        at.extend_from_slice(&((time as u64) ^ (1 << 63)).to_be_bytes());
        at
    }

    fn meta_key(&self, kind: u8, partition: Option<i32>) -> Vec<u8> {
        let mut at = self.prefix.clone();
        at.push(kind);
        if let Some(p) = partition {
            at.extend_from_slice(&p.to_be_bytes());
        }
        at
    }

    fn unreadable(&self, e: fjall::Error) -> String {
        format!("{}: the store cannot be read: {e}", self.whose)
    }

    /// The row under `key`: the latest, or for a table kept as of event time, the version
    /// current at `time`.
    pub fn get(&self, key: &[u8], time: i64) -> Result<Option<Vec<u8>>, String> {
        let spaces = self.store.table_spaces();
        if self.retention.is_none() {
            let row = spaces.rows.get(self.row_key(key));
            return row
                .map(|row| row.map(|r| r.to_vec()))
                .map_err(|e| self.unreadable(e));
        }
        let range = self.version_key(key, i64::MIN)..=self.version_key(key, time);
        let Some(version) = spaces.versions.range(range).next_back() else {
            return Ok(None);
        };
        let (_, value) = version.into_inner().map_err(|e| self.unreadable(e))?;
        Ok(match value.split_first() {
            Some((&ROW, row)) => Some(row.to_vec()),
            _ => None,
        })
    }

    /// The next offset to read of each partition read before.
    pub fn positions(&self) -> Result<BTreeMap<i32, i64>, Error> {
        let meta = self.store.table_spaces().meta;
        let mut positions = BTreeMap::new();
        let start = self.meta_key(POSITION, None);
        for item in meta.prefix(&start) {
            let (k, v) = item
                .into_inner()
                .map_err(|e| self.store.failure(&self.whose, e))?;
            let partition = <[u8; 4]>::try_from(&k[start.len()..]).map(i32::from_be_bytes);
            let offset = <[u8; 8]>::try_from(&*v).map(i64::from_be_bytes);
            if let (Ok(p), Ok(o)) = (partition, offset) {
                positions.insert(p, o);
            }
        }
        Ok(positions)
    }

    /// The settings the rows were read with (`None`: never read).
    pub fn settings(&self) -> Result<Option<String>, Error> {
        let meta = self.store.table_spaces().meta;
        let value = meta
            .get(self.meta_key(SETTINGS, None))
            .map_err(|e| self.store.failure(&self.whose, e))?;
        Ok(value.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Remove every row, version and position, and keep `settings` as what the rows will be
    /// read with.
    pub fn reset(&self, settings: &str) -> Result<(), Error> {
        let spaces = self.store.table_spaces();
        let fail = |e| self.store.failure(&self.whose, e);
        let mut batch = spaces.db.batch();
        for space in [spaces.rows, spaces.meta, spaces.versions] {
            for item in space.prefix(&self.prefix) {
                let key = item.key().map_err(fail)?;
                batch.remove(space, key);
            }
        }
        batch.insert(
            spaces.meta,
            self.meta_key(SETTINGS, None),
            settings.as_bytes(),
        );
        batch.commit().map_err(fail)
    }

    /// Apply `changes`, each with when it happened (event time, ms), and record `positions`
    /// (partition, next offset) with them, at once.
    pub fn apply(&self, changes: &[(Change, i64)], positions: &[(i32, i64)]) -> Result<(), Error> {
        let spaces = self.store.table_spaces();
        let fail = |e| self.store.failure(&self.whose, e);
        let mut batch = spaces.db.batch();
        for (i, (change, time)) in changes.iter().enumerate() {
            match change {
                Change::Upsert { key, row } => {
                    let filled = self.fill_unavailable(key, row, &changes[..i])?;
                    let row = filled.as_ref().unwrap_or(row);
                    batch.insert(spaces.rows, self.row_key(key), row.as_slice());
                    self.version(&mut batch, key, *time, Some(row))?;
                }
                Change::Delete { key } => {
                    batch.remove(spaces.rows, self.row_key(key));
                    self.version(&mut batch, key, *time, None)?;
                }
                Change::Truncate => {
                    // Rows written earlier in this batch go too: the batch applies in order.
                    // A table kept as of event time forgets its versions: which rows a
                    // truncate removed, and so what was current before it, is not told.
                    batch.commit().map_err(fail)?;
                    batch = spaces.db.batch();
                    for space in [spaces.rows, spaces.versions] {
                        for item in space.prefix(&self.prefix) {
                            batch.remove(space, item.key().map_err(fail)?);
                        }
                    }
                }
                Change::None => {}
            }
        }
        for (partition, offset) in positions {
            let at = self.meta_key(POSITION, Some(*partition));
            batch.insert(spaces.meta, at, offset.to_be_bytes());
        }
        batch.commit().map_err(fail)
    }

    /// `row` with the columns Debezium could not read taken from the row as the table has it:
    /// as `earlier` changes of this batch left it, or else as the store does. `None` when it
    /// has none such (almost always: no lookup then).
    fn fill_unavailable(
        &self,
        key: &[u8],
        row: &[u8],
        earlier: &[(Change, i64)],
    ) -> Result<Option<Vec<u8>>, Error> {
        let marker = b"__debezium_unavailable_value";
        if !row.windows(marker.len()).any(|w| w == marker) {
            return Ok(None);
        }
        let in_batch = earlier.iter().rev().find_map(|(c, _)| match c {
            Change::Upsert { key: k, row } if k == key => Some(Some(row.clone())),
            Change::Delete { key: k } if k == key => Some(None),
            Change::Truncate => Some(None),
            _ => None,
        });
        let previous = match in_batch {
            Some(previous) => previous,
            None => {
                let spaces = self.store.table_spaces();
                let stored = spaces.rows.get(self.row_key(key));
                let stored = stored.map_err(|e| self.store.failure(&self.whose, e))?;
                stored.map(|r| r.to_vec())
            }
        };
        Ok(super::fill_unavailable(row, previous.as_deref()))
    }

    /// Keep version `row` (`None`: deleted) of `key` at `time`, if the table keeps versions,
    /// and remove the ones older than the retention behind it but the last of those.
    fn version(
        &self,
        batch: &mut fjall::OwnedWriteBatch,
        key: &[u8],
        time: i64,
        row: Option<&Vec<u8>>,
    ) -> Result<(), Error> {
        let Some(retention) = self.retention else {
            return Ok(());
        };
        let spaces = self.store.table_spaces();
        let mut value = Vec::with_capacity(row.map_or(1, |r| r.len() + 1));
        match row {
            Some(row) => {
                value.push(ROW);
                value.extend_from_slice(row);
            }
            None => value.push(DELETED),
        }
        batch.insert(spaces.versions, self.version_key(key, time), value);
        let cutoff = time.saturating_sub(retention);
        let old = self.version_key(key, i64::MIN)..self.version_key(key, cutoff);
        let mut expired: Vec<_> = spaces.versions.range(old).collect();
        expired.pop();
        for version in expired {
            let at = version
                .key()
                .map_err(|e| self.store.failure(&self.whose, e))?;
            batch.remove(spaces.versions, at);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::format::tests::upsert;

    fn at(change: Change, time: i64) -> (Change, i64) {
        (change, time)
    }

    #[test]
    fn rows_and_positions_survive_a_reopen_and_a_reset_clears_only_its_table() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = StateStore::open(dir.path(), 0).unwrap();
            let customers = TableStore::new(store.clone(), "customers", AsOf::Latest);
            let other = TableStore::new(store.clone(), "customers2", AsOf::Latest);
            customers.reset("v1").unwrap();
            customers
                .apply(
                    &[at(upsert("1", "a"), 0), at(upsert("2", "b"), 0)],
                    &[(0, 2)],
                )
                .unwrap();
            let delete = Change::Delete { key: "1".into() };
            customers
                .apply(&[at(delete, 0)], &[(0, 3), (1, 7)])
                .unwrap();
            other.apply(&[at(upsert("1", "x"), 0)], &[(0, 1)]).unwrap();
        }
        let store = StateStore::open(dir.path(), 0).unwrap();
        let customers = TableStore::new(store.clone(), "customers", AsOf::Latest);
        assert_eq!(customers.get(b"1", 0), Ok(None));
        assert_eq!(customers.get(b"2", 0), Ok(Some(b"b".to_vec())));
        assert_eq!(customers.settings().unwrap().as_deref(), Some("v1"));
        assert_eq!(
            customers.positions().unwrap(),
            BTreeMap::from([(0, 3), (1, 7)])
        );
        let changes = [
            at(upsert("3", "c"), 0),
            at(Change::Truncate, 0),
            at(upsert("4", "d"), 0),
        ];
        customers.apply(&changes, &[]).unwrap();
        assert_eq!(customers.get(b"3", 0), Ok(None));
        assert_eq!(customers.get(b"4", 0), Ok(Some(b"d".to_vec())));
        customers.reset("v2").unwrap();
        assert_eq!(customers.get(b"4", 0), Ok(None));
        assert!(customers.positions().unwrap().is_empty());
        assert_eq!(customers.settings().unwrap().as_deref(), Some("v2"));
        // A table whose name starts with another's keeps its rows.
        let other = TableStore::new(store, "customers2", AsOf::Latest);
        assert_eq!(other.get(b"1", 0), Ok(Some(b"x".to_vec())));
    }

    #[test]
    fn a_column_debezium_could_not_read_keeps_the_value_the_table_has() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), 0).unwrap();
        let table = TableStore::new(store, "customers", AsOf::Latest);
        let bio = |n: u32, bio: &str| format!(r#"{{"n":{n},"bio":"{bio}"}}"#);
        let unread = "__debezium_unavailable_value";
        table
            .apply(&[at(upsert("1", &bio(1, "long")), 0)], &[(0, 1)])
            .unwrap();
        // From the store, and from an earlier change of the same batch.
        let changes = [
            at(upsert("1", &bio(2, unread)), 0),
            at(upsert("2", &bio(1, "other")), 0),
            at(upsert("2", &bio(2, unread)), 0),
        ];
        table.apply(&changes, &[(0, 4)]).unwrap();
        let row = |key: &[u8]| String::from_utf8(table.get(key, 0).unwrap().unwrap()).unwrap();
        assert_eq!(row(b"1"), bio(2, "long"));
        assert_eq!(row(b"2"), bio(2, "other"));
    }

    #[test]
    fn as_of_event_time_a_lookup_finds_the_version_current_then_within_the_retention() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), 0).unwrap();
        let versions = AsOf::EventTime { retention: 1_000 };
        let table = TableStore::new(store, "customers", versions);
        let delete = |key: &str| Change::Delete { key: key.into() };
        table
            .apply(
                &[
                    at(upsert("c1", "DE"), 100),
                    at(upsert("c1", "FR"), 200),
                    at(delete("c1"), 300),
                    at(upsert("c1", "NL"), 400),
                    // A key that is a prefix of another's does not see its versions.
                    at(upsert("c", "US"), 150),
                ],
                &[],
            )
            .unwrap();
        let get = |key: &str, time| table.get(key.as_bytes(), time).unwrap();
        let row = |r: &str| Some(r.as_bytes().to_vec());
        assert_eq!(get("c1", 99), None, "before its first version");
        assert_eq!(get("c1", 100), row("DE"));
        assert_eq!(get("c1", 199), row("DE"));
        assert_eq!(get("c1", 250), row("FR"));
        assert_eq!(get("c1", 300), None, "deleted");
        assert_eq!(get("c1", 10_000), row("NL"));
        assert_eq!(get("c", 160), row("US"));
        assert_eq!(get("c", 140), None);
        // A version 1 s after FR's removes DE (older than the retention behind it), and keeps FR:
        // still the row at 250 — the last version before the cutoff.
        table.apply(&[at(upsert("c1", "SE"), 1_250)], &[]).unwrap();
        assert_eq!(get("c1", 100), None, "DE is gone");
        assert_eq!(get("c1", 250), row("FR"));
        assert_eq!(get("c1", 1_300), row("SE"));
    }
}
