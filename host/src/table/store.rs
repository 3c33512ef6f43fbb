//! A table's rows in the run's state store, with where its topic was read up to.
//!
//! Rows and positions are written in one batch (a truncate commits the rows before it first),
//! so the store never says it has read past a change it does not hold: after a crash the table reads on from its positions and replays at
//! most what it had read but not yet written, and a replayed change is harmless (the same row
//! again). The table's settings are stored beside them: a table whose topic, format or key
//! changed since is read again from the beginning.

use std::{collections::BTreeMap, sync::Arc};

use super::Change;
use crate::{error::Error, state::StateStore};

/// One table's part of the store.
#[derive(Clone)]
pub struct TableStore {
    store: Arc<StateStore>,
    /// `table:NAME`, for error messages.
    whose: String,
    /// Prefix of the table's keys in both keyspaces: its name, length first.
    prefix: Vec<u8>,
}

/// Marks a position key in the meta keyspace (then the partition); a settings key has none.
const POSITION: u8 = b'p';
const SETTINGS: u8 = b's';

impl TableStore {
    pub fn new(store: Arc<StateStore>, name: &str) -> TableStore {
        let mut prefix = Vec::with_capacity(name.len() + 2);
        prefix.extend_from_slice(&(name.len() as u16).to_be_bytes());
        prefix.extend_from_slice(name.as_bytes());
        TableStore {
            store,
            whose: format!("table `{name}`"),
            prefix,
        }
    }

    fn row_key(&self, key: &[u8]) -> Vec<u8> {
        let mut at = self.prefix.clone();
        at.extend_from_slice(key);
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

    /// The row under `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let (_, rows, _) = self.store.table_spaces();
        rows.get(self.row_key(key))
            .map(|row| row.map(|r| r.to_vec()))
            .map_err(|e| format!("{}: the store cannot be read: {e}", self.whose))
    }

    /// The next offset to read of each partition read before.
    pub fn positions(&self) -> Result<BTreeMap<i32, i64>, Error> {
        let (_, _, meta) = self.store.table_spaces();
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
        let (_, _, meta) = self.store.table_spaces();
        let value = meta
            .get(self.meta_key(SETTINGS, None))
            .map_err(|e| self.store.failure(&self.whose, e))?;
        Ok(value.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Remove every row and position, and keep `settings` as what the rows will be read with.
    pub fn reset(&self, settings: &str) -> Result<(), Error> {
        let (db, rows, meta) = self.store.table_spaces();
        let fail = |e| self.store.failure(&self.whose, e);
        let mut batch = db.batch();
        for space in [rows, meta] {
            for item in space.prefix(&self.prefix) {
                let key = item.key().map_err(fail)?;
                batch.remove(space, key);
            }
        }
        batch.insert(meta, self.meta_key(SETTINGS, None), settings.as_bytes());
        batch.commit().map_err(fail)
    }

    /// Apply `changes` and record `positions` (partition, next offset) with them, at once.
    pub fn apply(&self, changes: &[Change], positions: &[(i32, i64)]) -> Result<(), Error> {
        let (db, rows, meta) = self.store.table_spaces();
        let fail = |e| self.store.failure(&self.whose, e);
        let mut batch = db.batch();
        for change in changes {
            match change {
                Change::Upsert { key, row } => {
                    batch.insert(rows, self.row_key(key), row.as_slice())
                }
                Change::Delete { key } => batch.remove(rows, self.row_key(key)),
                Change::Truncate => {
                    // Rows written earlier in this batch go too: the batch applies in order.
                    batch.commit().map_err(fail)?;
                    batch = db.batch();
                    for item in rows.prefix(&self.prefix) {
                        batch.remove(rows, item.key().map_err(fail)?);
                    }
                }
                Change::None => {}
            }
        }
        for (partition, offset) in positions {
            let at = self.meta_key(POSITION, Some(*partition));
            batch.insert(meta, at, offset.to_be_bytes());
        }
        batch.commit().map_err(fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upsert(key: &str, row: &str) -> Change {
        Change::Upsert {
            key: key.into(),
            row: row.into(),
        }
    }

    #[test]
    fn rows_and_positions_survive_a_reopen_and_a_reset_clears_only_its_table() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = StateStore::open(dir.path(), 0).unwrap();
            let customers = TableStore::new(store.clone(), "customers");
            let other = TableStore::new(store.clone(), "customers2");
            customers.reset("v1").unwrap();
            customers
                .apply(&[upsert("1", "a"), upsert("2", "b")], &[(0, 2)])
                .unwrap();
            customers
                .apply(&[Change::Delete { key: "1".into() }], &[(0, 3), (1, 7)])
                .unwrap();
            other.apply(&[upsert("1", "x")], &[(0, 1)]).unwrap();
        }
        let store = StateStore::open(dir.path(), 0).unwrap();
        let customers = TableStore::new(store.clone(), "customers");
        assert_eq!(customers.get(b"1"), Ok(None));
        assert_eq!(customers.get(b"2"), Ok(Some(b"b".to_vec())));
        assert_eq!(customers.settings().unwrap().as_deref(), Some("v1"));
        assert_eq!(
            customers.positions().unwrap(),
            BTreeMap::from([(0, 3), (1, 7)])
        );
        customers
            .apply(&[upsert("3", "c"), Change::Truncate, upsert("4", "d")], &[])
            .unwrap();
        assert_eq!(customers.get(b"3"), Ok(None));
        assert_eq!(customers.get(b"4"), Ok(Some(b"d".to_vec())));
        customers.reset("v2").unwrap();
        assert_eq!(customers.get(b"4"), Ok(None));
        assert!(customers.positions().unwrap().is_empty());
        assert_eq!(customers.settings().unwrap().as_deref(), Some("v2"));
        // A table whose name starts with another's keeps its rows.
        let other = TableStore::new(store, "customers2");
        assert_eq!(other.get(b"1"), Ok(Some(b"x".to_vec())));
    }
}
