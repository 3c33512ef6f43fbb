//! Keyed state on disk, with a changelog topic as its source of truth.
//!
//! Each stage that keeps state has, per source partition, a namespace in one embedded LSM store
//! (fjall) per process, and a changelog topic (`{group}-{stage}-changelog`, partitioned like the
//! input) that receives every change as a full value or a tombstone. The local store is a cache:
//! it can be deleted, or be stale from an earlier ownership of the partition, and is brought up
//! to date from the changelog when the partition is assigned. Because changelog records carry
//! whole values, replaying one the store already has is harmless, so the store only needs to
//! remember a changelog offset it has *at least* reached.
//!
//! A write the store cannot make (a full disk, above all) stops the run and is reported with the
//! stage, partition, directory and cause: the run then commits no offset past the records whose
//! state was lost, so they are read again after a restart (see `runtime::delivery`).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc, Mutex,
    },
};

use fjall::{Database, Keyspace, KeyspaceCreateOptions};

use crate::{
    engine::{Entry, StateBackend, StateKey},
    error::Error,
};

/// A failed store operation, told in words an operator can act on: fjall's own message is its
/// debug form, and after a failed write it only says `Poisoned` (it refuses every later write,
/// since it can no longer vouch for what reached the disk), which hides that the disk is full.
#[derive(Debug)]
struct StoreFailure {
    dir: PathBuf,
    cause: fjall::Error,
    /// Bytes an unprivileged process can still write on the store's filesystem, looked up when
    /// the failure happened (`None`: unknown).
    free: Option<u64>,
    disk_full: bool,
}

impl StoreFailure {
    fn new(dir: &Path, cause: fjall::Error) -> StoreFailure {
        let free = rustix::fs::statvfs(dir)
            .ok()
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize));
        let io = match &cause {
            fjall::Error::Io(e) | fjall::Error::Storage(fjall::LsmError::Io(e)) => Some(e.kind()),
            _ => None,
        };
        // A poisoned store failed an earlier write, possibly in a background flush whose error
        // only reached fjall's log: an empty filesystem is the telling sign.
        let disk_full = io == Some(std::io::ErrorKind::StorageFull)
            || io == Some(std::io::ErrorKind::QuotaExceeded)
            || (matches!(cause, fjall::Error::Poisoned) && free == Some(0));
        StoreFailure {
            dir: dir.to_path_buf(),
            cause,
            free,
            disk_full,
        }
    }

    /// The error to return; `whose` names the stage and partition whose changes failed to be
    /// written.
    fn into_error(self, whose: Option<String>) -> Error {
        Error::State {
            whose,
            dir: self.dir.clone(),
            disk_full: self.disk_full,
            cause: Box::new(self),
        }
    }
}

impl std::fmt::Display for StoreFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cause = match &self.cause {
            fjall::Error::Io(e) | fjall::Error::Storage(fjall::LsmError::Io(e)) => e.to_string(),
            fjall::Error::Poisoned => "an earlier write failed (perhaps the store's background \
                 flush), and the store takes no writes after one"
                .to_string(),
            other => other.to_string(),
        };
        if self.disk_full {
            write!(f, "the disk is full: {cause}")?;
        } else {
            write!(f, "{cause}")?;
        }
        match self.free {
            Some(free) => write!(f, " ({free} bytes free on its filesystem)"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for StoreFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.cause)
    }
}

/// How many processes may share one state directory (each takes its own `instance-N`).
const INSTANCES: usize = 64;

pub use crate::config::DEFAULT_CACHE_BYTES;

pub mod query;

/// Memtable size of the data keyspace. A memtable keeps every version of a key until it is
/// flushed, and a stage rewrites its hot keys every batch: at fjall's default of 64 MiB each
/// write searched a skiplist of ~600k versions, and the state benchmark spent nearly a third
/// of its time there. 8 MiB measured best (process CPU per get + put: 5.7–6.4 µs at 64 MiB,
/// 5.2 at 16, 4.7–4.8 at 8, 5.0 at 4); the read cache serves the hot keys that then live in
/// tables. fjall records it when it creates the keyspace: older stores keep their 64 MiB.
const MEMTABLE_BYTES: u64 = 8 << 20;

/// One process's store of every stage's state.
pub struct StateStore {
    dir: PathBuf,
    db: Database,
    data: Keyspace,
    /// Per stage and partition: the changelog offset the data is known to include.
    meta: Keyspace,
    /// Rows of the tables kept from topics, and where each table's topic was read up to (see
    /// `crate::table`).
    tables: Keyspace,
    table_meta: Keyspace,
    /// Versions of rows by event time, for tables looked up as of a record's time.
    table_versions: Keyspace,
    /// `None`: no cache (`cache_mb = 0`).
    cache: Option<ReadCache>,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("dir", &self.dir)
            .finish()
    }
}

impl StateStore {
    /// Open the store under `dir`, in the first `instance-N` subdirectory no other live process
    /// holds: several processes of one group may run on one machine. A store that cannot be
    /// opened (corrupt) is moved aside and started empty, to be rebuilt from the changelogs.
    /// Reads go through a cache of `cache_bytes` (0: none).
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Arc<StateStore>, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::OpenState {
            dir: dir.to_path_buf(),
            cause: e.to_string(),
        })?;
        for n in 0..INSTANCES {
            let path = dir.join(format!("instance-{n}"));
            match Self::try_open(&path, cache_bytes) {
                Ok(store) => return Ok(Arc::new(store)),
                Err(None) => continue,
                Err(Some(cause)) => {
                    let aside = dir.join(format!(
                        "instance-{n}.corrupt-{}",
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs())
                    ));
                    tracing::error!(
                        "state store {} cannot be opened ({cause}); moving it to {} and \
                         rebuilding state from the changelogs",
                        path.display(),
                        aside.display()
                    );
                    std::fs::rename(&path, &aside).map_err(|e| Error::OpenState {
                        dir: path.clone(),
                        cause: format!("cannot be opened ({cause}) nor moved aside ({e})"),
                    })?;
                    return Self::open_at(&path, cache_bytes)
                        .map(Arc::new)
                        .map_err(|cause| StoreFailure::new(&path, cause).into_error(None));
                }
            }
        }
        Err(Error::OpenState {
            dir: dir.to_path_buf(),
            cause: format!("all {INSTANCES} instance directories are in use by other processes"),
        })
    }

    /// [`StateStore::open_at`], telling a store another process holds (`None`) from one that
    /// cannot be opened, with why. fjall 3.1 panics, rather than failing, on some journals torn
    /// by a full disk: that counts as a store that cannot be opened.
    fn try_open(path: &Path, cache_bytes: u64) -> Result<StateStore, Option<String>> {
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Self::open_at(path, cache_bytes)
        }));
        match opened {
            Ok(Ok(store)) => Ok(store),
            Ok(Err(fjall::Error::Locked)) => Err(None),
            Ok(Err(cause)) => Err(Some(cause.to_string())),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("a panic");
                Err(Some(format!("recovering its journal failed: {what}")))
            }
        }
    }

    fn open_at(path: &Path, cache_bytes: u64) -> Result<StateStore, fjall::Error> {
        let db = Database::builder(path).open()?;
        let data = db.keyspace("data", || {
            KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES)
        })?;
        let meta = db.keyspace("meta", KeyspaceCreateOptions::default)?;
        let tables = db.keyspace("tables", || {
            KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES)
        })?;
        let table_meta = db.keyspace("table-meta", KeyspaceCreateOptions::default)?;
        let table_versions = db.keyspace("table-versions", KeyspaceCreateOptions::default)?;
        tracing::info!("state store: {}", path.display());
        Ok(StateStore {
            dir: path.to_path_buf(),
            db,
            data,
            meta,
            tables,
            table_meta,
            table_versions,
            cache: (cache_bytes > 0).then(|| ReadCache::new(cache_bytes)),
        })
    }

    /// Where this process's store is.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The state of `stage` for source partition `topic`/`partition`; `reached` is where the
    /// sink reports the highest acknowledged offset of its changelog partition.
    pub fn partition(
        self: &Arc<Self>,
        stage: &str,
        topic: &str,
        partition: i32,
        reached: Arc<AtomicI64>,
    ) -> PartitionState {
        let mut namespace = Vec::with_capacity(stage.len() + topic.len() + 8);
        put_str(&mut namespace, stage);
        put_str(&mut namespace, topic);
        namespace.extend_from_slice(&partition.to_be_bytes());
        let mut topic_prefix = Vec::new();
        put_str(&mut topic_prefix, topic);
        PartitionState {
            store: self.clone(),
            whose: format!("stage `{stage}`, state of {topic}[{partition}]"),
            namespace,
            topic_prefix,
            dirty: Mutex::new(BTreeMap::new()),
            changelog_reached: reached,
        }
    }

    fn error(&self, cause: fjall::Error) -> Error {
        StoreFailure::new(&self.dir, cause).into_error(None)
    }

    /// The database, and the keyspaces of tables' rows, read positions and row versions: the
    /// `table` module keeps its tables there.
    pub(crate) fn table_spaces(&self) -> TableSpaces<'_> {
        TableSpaces {
            db: &self.db,
            rows: &self.tables,
            meta: &self.table_meta,
            versions: &self.table_versions,
        }
    }

    /// A failed store operation on `whose` data, as the run's error.
    pub(crate) fn failure(&self, whose: &str, cause: fjall::Error) -> Error {
        StoreFailure::new(&self.dir, cause).into_error(Some(whose.to_string()))
    }
}

/// Where the store keeps tables (see `crate::table`).
pub(crate) struct TableSpaces<'a> {
    pub db: &'a Database,
    pub rows: &'a Keyspace,
    pub meta: &'a Keyspace,
    pub versions: &'a Keyspace,
}

/// One stage's state for one source partition: the store's namespace plus the changes made
/// since they were last written out.
pub struct PartitionState {
    store: Arc<StateStore>,
    /// Whose state this is, for error messages: "stage `totals`, state of orders[3]".
    whose: String,
    /// `stage`, `topic`, `partition`: prefix of this state's keys in the store.
    namespace: Vec<u8>,
    /// `topic`: prefix of this state's keys in the changelog partition, which may be shared by
    /// partitions of several source topics.
    topic_prefix: Vec<u8>,
    dirty: Mutex<BTreeMap<StateKey, Option<Entry>>>,
    /// The highest changelog offset the sink acknowledged for this partition (-1: none yet).
    changelog_reached: Arc<AtomicI64>,
}

/// Changes taken for the changelog, to write to the store once committed.
pub struct Pending {
    /// Store key and entry (`None`: delete).
    writes: Vec<(Vec<u8>, Option<Entry>)>,
}

/// A change to write to the changelog: key and value (`None`: a tombstone) as bytes.
pub struct Change {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

impl PartitionState {
    fn write_error(&self, cause: fjall::Error) -> Error {
        StoreFailure::new(&self.store.dir, cause).into_error(Some(self.whose.clone()))
    }

    fn dirty(&self) -> std::sync::MutexGuard<'_, BTreeMap<StateKey, Option<Entry>>> {
        self.dirty.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The changelog offset to restore from: the store includes every change before it.
    pub fn restore_from(&self) -> Result<i64, Error> {
        let value = self
            .store
            .meta
            .get(&self.namespace)
            .map_err(|e| self.store.error(e))?;
        Ok(value
            .and_then(|v| <[u8; 8]>::try_from(&*v).ok())
            .map_or(0, i64::from_be_bytes))
    }

    /// Apply changelog records read from `offset` on (those of other source topics sharing the
    /// changelog partition are skipped); `next` is the offset after the last one read.
    pub fn restore<'a>(
        &self,
        records: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>,
        next: i64,
    ) -> Result<usize, Error> {
        let mut batch = self.store.db.batch();
        let mut written = Vec::new();
        for (key, value) in records {
            let Some(rest) = key.strip_prefix(self.topic_prefix.as_slice()) else {
                continue;
            };
            let mut local = self.namespace.clone();
            local.extend_from_slice(rest);
            match value {
                Some(v) => batch.insert(&self.store.data, local.as_slice(), v),
                None => batch.remove(&self.store.data, local.as_slice()),
            }
            written.push(local);
        }
        batch.insert(&self.store.meta, self.namespace.clone(), next.to_be_bytes());
        batch.commit().map_err(|e| self.write_error(e))?;
        if let Some(cache) = &self.store.cache {
            for key in &written {
                cache.forget(key);
            }
        }
        self.changelog_reached.fetch_max(next - 1, Ordering::AcqRel);
        Ok(written.len())
    }

    /// Take the changes since the last call and write them to the store; returns them for the
    /// changelog (at least once: the store may run ahead of the changelog, which replays
    /// harmlessly).
    pub fn flush(&self) -> Result<Vec<Change>, Error> {
        let (changes, pending) = self.take();
        if !changes.is_empty() {
            self.persist(pending)?;
        }
        Ok(changes)
    }

    /// Take the changes since the last call, for the changelog, and what to write to the store
    /// once they are committed (exactly once: the store must never hold a change its changelog
    /// transaction did not commit). Until [`PartitionState::persist`] the changes are invisible
    /// to reads: call both between two batches.
    pub fn take(&self) -> (Vec<Change>, Pending) {
        let dirty = std::mem::take(&mut *self.dirty());
        let mut changes = Vec::with_capacity(dirty.len());
        let mut writes = Vec::with_capacity(dirty.len());
        for ((record_key, name), entry) in dirty {
            let mut key = self.topic_prefix.clone();
            put_state_key(&mut key, &record_key, &name);
            let value = entry.as_ref().map(encode_entry);
            let mut local = self.namespace.clone();
            local.extend_from_slice(&key[self.topic_prefix.len()..]);
            changes.push(Change { key, value });
            writes.push((local, entry));
        }
        (changes, Pending { writes })
    }

    /// Write taken changes to the store, with the changelog offset the sink has acknowledged so
    /// far as the point to restore from.
    pub fn persist(&self, pending: Pending) -> Result<(), Error> {
        let reached = self.changelog_reached.load(Ordering::Acquire);
        if pending.writes.is_empty() && reached < 0 {
            return Ok(());
        }
        let mut batch = self.store.db.batch();
        let mut value = Vec::new();
        for (key, entry) in &pending.writes {
            match entry {
                Some(entry) => {
                    value.clear();
                    put_entry(&mut value, entry);
                    batch.insert(&self.store.data, key.as_slice(), value.as_slice());
                }
                None => batch.remove(&self.store.data, key.as_slice()),
            }
        }
        if reached >= 0 {
            batch.insert(
                &self.store.meta,
                self.namespace.clone(),
                (reached + 1).to_be_bytes(),
            );
        }
        batch.commit().map_err(|e| self.write_error(e))?;
        // Only what the store holds may be cached: a failed write leaves the cache as it was.
        if let Some(cache) = &self.store.cache {
            for (key, entry) in pending.writes {
                cache.put(key, entry);
            }
        }
        Ok(())
    }

    fn local_key(&self, record_key: &Option<Vec<u8>>, name: &str) -> Vec<u8> {
        let mut key = self.namespace.clone();
        put_state_key(&mut key, record_key, name);
        key
    }
}

impl StateBackend for PartitionState {
    fn get(&self, key: &StateKey) -> Option<Entry> {
        if let Some(entry) = self.dirty().get(key) {
            return entry.clone();
        }
        let local = self.local_key(&key.0, &key.1);
        let read = |local: &[u8]| match self.store.data.get(local) {
            Ok(value) => Ok(value.and_then(|v| decode_entry(&v))),
            Err(e) => {
                // The plugin API has no error for reads; a failing disk is the run's problem.
                tracing::error!("state store {}: read failed: {e}", self.store.dir.display());
                Err(())
            }
        };
        match &self.store.cache {
            Some(cache) => cache.get_or_read(local, read),
            None => read(&local).ok().flatten(),
        }
    }

    fn scan(&self, record_key: &Option<Vec<u8>>, prefix: &str) -> Vec<(String, Entry)> {
        let start = self.local_key(record_key, prefix);
        let names_at = self.local_key(record_key, "").len();
        let mut found: BTreeMap<String, Option<Entry>> = BTreeMap::new();
        for item in self.store.data.prefix(&start) {
            match item.into_inner() {
                Ok((k, v)) => {
                    let name = String::from_utf8_lossy(&k[names_at..]).into_owned();
                    found.insert(name, decode_entry(&v));
                }
                Err(e) => {
                    tracing::error!("state store {}: scan failed: {e}", self.store.dir.display());
                    break;
                }
            }
        }
        let dirty = self.dirty();
        for ((k, name), entry) in dirty.range((record_key.clone(), prefix.to_string())..) {
            if k != record_key || !name.starts_with(prefix) {
                break;
            }
            found.insert(name.clone(), entry.clone());
        }
        found
            .into_iter()
            .filter_map(|(name, entry)| Some((name, entry?)))
            .collect()
    }

    fn apply(&self, writes: BTreeMap<StateKey, Option<Entry>>) {
        self.dirty().extend(writes);
    }

    fn all(&self) -> Vec<(StateKey, Entry)> {
        let at = self.namespace.len();
        let mut found: BTreeMap<StateKey, Option<Entry>> = BTreeMap::new();
        for item in self.store.data.prefix(&self.namespace) {
            match item.into_inner() {
                Ok((k, v)) => {
                    if let Some(key) = get_state_key(&k[at..]) {
                        found.insert(key, decode_entry(&v));
                    }
                }
                Err(e) => {
                    tracing::error!("state store {}: scan failed: {e}", self.store.dir.display());
                    break;
                }
            }
        }
        found.extend(self.dirty().iter().map(|(k, e)| (k.clone(), e.clone())));
        found
            .into_iter()
            .filter_map(|(key, entry)| Some((key, entry?)))
            .collect()
    }
}

/// Entries recently read from or written to the store, decoded, so that a stage reading the
/// same keys again and again (a running total, a dedupe window) does not pay for an LSM lookup
/// each time: fjall searches its memtables' versions and its tables, a few µs per read in the
/// state benchmark, where a hash lookup takes a fraction of one (Kafka Streams puts a cache in
/// front of RocksDB for the same reason). Absent keys are cached too: a new key's first read
/// finds nothing.
///
/// The cache only ever holds what the store holds: writes enter it after the store took them
/// (at least once after each batch, exactly once after each committed checkpoint), so it
/// serves the same consistent view the store does; a restore forgets the keys it rewrites. A
/// miss reads the store with its shard locked, so a concurrent write (which updates the entry
/// under the same lock after its commit) can never be overwritten by the older value read.
struct ReadCache {
    shards: Box<[Mutex<CacheShard>]>,
    hasher: std::hash::RandomState,
}

/// Store key → entry (`None`: the store has none).
type CacheShard = quick_cache::unsync::Cache<Vec<u8>, Option<Entry>, EntryWeight>;

/// Shards, so the workers (one per core) rarely wait for each other.
const CACHE_SHARDS: usize = 16;

/// Bytes an entry holds in the cache: key, value, and the bookkeeping around them.
#[derive(Clone)]
struct EntryWeight;

impl quick_cache::Weighter<Vec<u8>, Option<Entry>> for EntryWeight {
    fn weight(&self, key: &Vec<u8>, entry: &Option<Entry>) -> u64 {
        (key.len() + entry.as_ref().map_or(0, |e| e.value.len()) + 96) as u64
    }
}

impl ReadCache {
    fn new(bytes: u64) -> ReadCache {
        let per_shard = (bytes / CACHE_SHARDS as u64).max(1);
        let shards = (0..CACHE_SHARDS)
            .map(|_| {
                Mutex::new(quick_cache::unsync::Cache::with_weighter(
                    (per_shard / 200) as usize,
                    per_shard,
                    EntryWeight,
                ))
            })
            .collect();
        ReadCache {
            shards,
            hasher: std::hash::RandomState::new(),
        }
    }

    fn shard(&self, key: &[u8]) -> std::sync::MutexGuard<'_, CacheShard> {
        use std::hash::BuildHasher;
        let i = self.hasher.hash_one(key) as usize % CACHE_SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached entry at `key`, else what `read` finds in the store (cached unless it failed).
    fn get_or_read(
        &self,
        key: Vec<u8>,
        read: impl FnOnce(&[u8]) -> Result<Option<Entry>, ()>,
    ) -> Option<Entry> {
        let mut shard = self.shard(&key);
        if let Some(entry) = shard.get(key.as_slice()) {
            return entry.clone();
        }
        let entry = read(&key).ok()?;
        shard.insert(key, entry.clone());
        entry
    }

    /// The store now holds `entry` at `key`.
    fn put(&self, key: Vec<u8>, entry: Option<Entry>) {
        self.shard(&key).insert(key, entry);
    }

    fn forget(&self, key: &[u8]) {
        self.shard(key).remove(key);
    }
}

/// The inverse of [`put_state_key`].
fn get_state_key(bytes: &[u8]) -> Option<StateKey> {
    let (&tag, rest) = bytes.split_first()?;
    let (record_key, name) = match tag {
        0 => (None, rest),
        _ => {
            let (len, rest) = rest.split_first_chunk::<4>()?;
            let len = u32::from_be_bytes(*len) as usize;
            (Some(rest.get(..len)?.to_vec()), rest.get(len..)?)
        }
    };
    Some((record_key, String::from_utf8(name.to_vec()).ok()?))
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Record key (with its absence told apart from an empty key), then the entry's name, so that
/// one record key's entries sort together and a name prefix is a key prefix.
fn put_state_key(out: &mut Vec<u8>, record_key: &Option<Vec<u8>>, name: &str) {
    match record_key {
        None => out.push(0),
        Some(k) => {
            out.push(1);
            out.extend_from_slice(&(k.len() as u32).to_be_bytes());
            out.extend_from_slice(k);
        }
    }
    out.extend_from_slice(name.as_bytes());
}

/// Marks an entry written by a build of state version 1 or later.
///
/// Entries of version 0 keep the layout they had before state versions existed, so stores and
/// changelogs written then read as version 0 and nothing changes for plugins that never declare
/// a version. Such an entry starts with its expiry: `i64::MIN` (no expiry, `0x80…`) or a record
/// time plus a TTL. Read as an expiry, this marker would be a time over 8,900 years before 1970,
/// which no Kafka record has (Kafka refuses negative timestamps other than -1).
const VERSIONED: [u8; 2] = [0xFF, 0xFE];

/// Version 0: expiry (event time ms, `i64::MIN` for none) then the value. Later versions:
/// [`VERSIONED`], the version, then the same.
fn encode_entry(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(14 + entry.value.len());
    put_entry(&mut out, entry);
    out
}

fn put_entry(out: &mut Vec<u8>, entry: &Entry) {
    if entry.version > 0 {
        out.extend_from_slice(&VERSIONED);
        out.extend_from_slice(&entry.version.to_be_bytes());
    }
    out.extend_from_slice(&entry.expires.unwrap_or(i64::MIN).to_be_bytes());
    out.extend_from_slice(&entry.value);
}

fn decode_entry(bytes: &[u8]) -> Option<Entry> {
    let (version, rest) = match bytes.strip_prefix(&VERSIONED) {
        Some(rest) if rest.len() >= 12 => {
            let (version, rest) = rest.split_first_chunk::<4>()?;
            (u32::from_be_bytes(*version), rest)
        }
        _ => (0, bytes),
    };
    let (expires, value) = rest.split_first_chunk::<8>()?;
    let expires = i64::from_be_bytes(*expires);
    Some(Entry {
        value: value.to_vec(),
        expires: (expires != i64::MIN).then_some(expires),
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark() -> Arc<AtomicI64> {
        Arc::new(AtomicI64::new(-1))
    }

    fn key(k: &str, name: &str) -> StateKey {
        (Some(k.as_bytes().to_vec()), name.to_string())
    }

    fn write(state: &PartitionState, k: &str, name: &str, value: Option<&str>) {
        let mut w = BTreeMap::new();
        w.insert(
            key(k, name),
            value.map(|v| Entry::new(v.as_bytes().to_vec(), 0)),
        );
        state.apply(w);
    }

    #[test]
    fn reads_see_unflushed_writes_and_flushed_ones_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let changes;
        {
            let store = StateStore::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
            let s = store.partition("count", "orders", 3, mark());
            write(&s, "a", "n", Some("1"));
            write(&s, "a", "sum", Some("10"));
            write(&s, "b", "n", Some("7"));
            assert_eq!(s.get(&key("a", "n")).unwrap().value, b"1");
            changes = s.flush().unwrap();
            write(&s, "b", "n", None);
            assert_eq!(
                s.get(&key("b", "n")),
                None,
                "a pending delete hides the stored value"
            );
            let names: Vec<String> = s
                .scan(&Some(b"a".to_vec()), "")
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            assert_eq!(names, ["n", "sum"]);
            s.flush().unwrap();
        }
        assert_eq!(changes.len(), 3);
        let store = StateStore::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        let s = store.partition("count", "orders", 3, mark());
        assert_eq!(s.get(&key("a", "sum")).unwrap().value, b"10");
        assert_eq!(s.get(&key("b", "n")), None);
        // Other stages and partitions are other namespaces.
        assert_eq!(
            store
                .partition("count", "orders", 4, mark())
                .get(&key("a", "n")),
            None
        );
        assert_eq!(
            store
                .partition("other", "orders", 3, mark())
                .get(&key("a", "n")),
            None
        );
    }

    #[test]
    fn a_store_is_rebuilt_from_its_changelog() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(&dir.path().join("a"), DEFAULT_CACHE_BYTES).unwrap();
        let s = store.partition("count", "orders", 0, mark());
        write(&s, "a", "n", Some("1"));
        write(&s, "b", "n", Some("2"));
        let mut log: Vec<Change> = s.flush().unwrap();
        write(&s, "a", "n", None);
        log.extend(s.flush().unwrap());
        // A record of another source topic sharing the changelog partition.
        let mut foreign = Vec::new();
        put_str(&mut foreign, "payments");
        put_state_key(&mut foreign, &Some(b"a".to_vec()), "n");
        log.push(Change {
            key: foreign,
            value: Some(encode_entry(&Entry::new(b"9".to_vec(), 0))),
        });

        let other = StateStore::open(&dir.path().join("b"), DEFAULT_CACHE_BYTES).unwrap();
        let r = other.partition("count", "orders", 0, mark());
        assert_eq!(r.restore_from().unwrap(), 0);
        let applied = r
            .restore(
                log.iter().map(|c| (c.key.as_slice(), c.value.as_deref())),
                log.len() as i64,
            )
            .unwrap();
        assert_eq!(applied, 3);
        assert_eq!(r.get(&key("a", "n")), None);
        assert_eq!(r.get(&key("b", "n")).unwrap().value, b"2");
        assert_eq!(r.restore_from().unwrap(), log.len() as i64);
    }

    /// A real filesystem of a few MiB (tmpfs), unmounted when dropped: filling it is the honest
    /// way to see what the store does when the disk is full.
    struct SmallDisk(tempfile::TempDir);

    impl SmallDisk {
        fn mount(size: &str) -> SmallDisk {
            let dir = tempfile::tempdir().unwrap();
            let disk = SmallDisk(dir);
            disk.mount_with(&format!("size={size}"));
            disk
        }

        fn mount_with(&self, options: &str) {
            let remount = options.starts_with("remount");
            let out = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", options, "tmpfs"])
                .arg(self.0.path())
                .output();
            match out {
                Ok(out) if out.status.success() => {}
                Ok(out) => panic!(
                    "this test fills a real filesystem: it needs to mount a tmpfs (as root, or \
                     with CAP_SYS_ADMIN), and `mount -o {options}` failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                Err(e) => panic!("this test needs `mount` to make a small filesystem: {e}"),
            }
            if !remount {
                assert!(
                    std::fs::read_to_string("/proc/self/mounts")
                        .unwrap()
                        .contains(&self.0.path().display().to_string()),
                    "mount reported success but {} is not a mount point",
                    self.0.path().display()
                );
            }
        }

        /// Make room, as an operator freeing space would.
        fn grow(&self, size: &str) {
            self.mount_with(&format!("remount,size={size}"));
        }

        fn path(&self) -> &Path {
            self.0.path()
        }
    }

    impl Drop for SmallDisk {
        fn drop(&mut self) {
            // Lazy: a store still open elsewhere in a failing test must not leave it mounted.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.0.path())
                .status();
        }
    }

    #[test]
    fn a_full_disk_fails_the_write_clearly_and_keeps_the_store_consistent() {
        let disk = SmallDisk::mount("2m");
        let reached = mark();
        let value = |batch: i64| format!("{batch:>1024}");
        let mut written = -1;
        let (failure, after) = {
            let store = StateStore::open(disk.path(), DEFAULT_CACHE_BYTES).unwrap();
            let s = store.partition("totals", "orders", 7, reached.clone());
            let failure = loop {
                let batch = written + 1;
                assert!(batch < 1000, "2 MiB never filled up");
                for k in 0..100 {
                    write(&s, &format!("k{k}"), "n", Some(&value(batch)));
                }
                // As if the changelog had acknowledged this batch: the store then records it as
                // the point to restore from, in the same atomic write as the data.
                reached.store(batch, Ordering::Release);
                match s.flush() {
                    Ok(_) => written = batch,
                    Err(e) => break e,
                }
            };
            // The cache, like the store, has the last batch written, not the one that failed.
            let cached = s.get(&key("k0", "n")).unwrap().value;
            assert_eq!(String::from_utf8(cached).unwrap(), value(written));
            // fjall refuses every write after a failed one, with a cause of its own.
            write(&s, "k0", "n", Some("small"));
            (failure, s.flush().err())
        };
        assert!(written > 0, "the first write failed already: {failure}");
        let message = failure.to_string();
        assert!(failure.is_disk_full(), "{message}");
        for part in [
            "stage `totals`, state of orders[7]",
            &disk.path().join("instance-0").display().to_string(),
            "the disk is full",
            "No space left on device",
        ] {
            assert!(message.contains(part), "{part:?} missing from: {message}");
        }
        let after = after.expect("a write after a failed one succeeded");
        assert!(after.is_disk_full(), "{after}");
        assert!(
            after.to_string().contains("an earlier write failed"),
            "{after}"
        );

        // After room is made, the store opens with every key at one batch, the one its restore
        // point names: a failed write leaves nothing of its batch, and no partial batch.
        disk.grow("64m");
        let store = StateStore::open(disk.path(), DEFAULT_CACHE_BYTES).unwrap();
        assert_eq!(store.dir(), disk.path().join("instance-0"), "not rebuilt");
        let s = store.partition("totals", "orders", 7, mark());
        let at = s.restore_from().unwrap() - 1;
        assert!(
            (0..=written).contains(&at),
            "restore point {at}, last write that succeeded {written}"
        );
        for k in 0..100 {
            let got = s.get(&key(&format!("k{k}"), "n")).unwrap().value;
            assert_eq!(String::from_utf8(got).unwrap(), value(at), "key k{k}");
        }
        write(&s, "k0", "n", Some("after"));
        s.flush().unwrap();
        eprintln!(
            "disk full after {} batches; reopened at batch {at}: {message}",
            written + 1
        );
    }

    #[test]
    fn the_read_cache_shows_what_the_store_holds_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        let s = store.partition("count", "orders", 0, mark());
        let n = |s: &PartitionState, k: &str| s.get(&key(k, "n")).map(|e| e.value);
        assert_eq!(n(&s, "a"), None, "absent, and now cached as absent");
        write(&s, "a", "n", Some("1"));
        s.flush().unwrap();
        assert_eq!(
            n(&s, "a").unwrap(),
            b"1",
            "a write replaces the cached absence"
        );

        // Exactly once: taken changes stay invisible until persisted after the commit.
        write(&s, "a", "n", Some("2"));
        let (_, pending) = s.take();
        assert_eq!(n(&s, "a").unwrap(), b"1");
        s.persist(pending).unwrap();
        assert_eq!(n(&s, "a").unwrap(), b"2");
        // A transaction that did not commit is dropped: the cache never saw it.
        write(&s, "a", "n", Some("3"));
        drop(s.take());
        assert_eq!(n(&s, "a").unwrap(), b"2");

        // A restore rewrites the store beneath the cache.
        let mut changelog_key = Vec::new();
        put_str(&mut changelog_key, "orders");
        put_state_key(&mut changelog_key, &Some(b"a".to_vec()), "n");
        let value = encode_entry(&Entry::new(b"9".to_vec(), 0));
        s.restore([(changelog_key.as_slice(), Some(value.as_slice()))], 1)
            .unwrap();
        assert_eq!(n(&s, "a").unwrap(), b"9");
        s.restore([(changelog_key.as_slice(), None)], 2).unwrap();
        assert_eq!(n(&s, "a"), None);
    }

    #[test]
    fn a_cache_smaller_than_the_state_still_reads_every_entry_right() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), 16 << 10).unwrap();
        let s = store.partition("count", "orders", 0, mark());
        for round in 0..3 {
            for k in 0..2000 {
                let k = format!("k{k}");
                let before = s.get(&key(&k, "n")).map(|e| e.value);
                let expected = (round > 0).then(|| format!("{k}-{}", round - 1).into_bytes());
                assert_eq!(before, expected, "round {round}");
                write(&s, &k, "n", Some(&format!("{k}-{round}")));
            }
            s.flush().unwrap();
        }
    }

    #[test]
    fn entries_keep_the_version_that_wrote_them_and_old_entries_read_as_version_0() {
        // Version 0 is encoded as before state versions existed: stores and changelogs written
        // then read the same.
        let old = encode_entry(&Entry::new(b"v".to_vec(), 0));
        assert_eq!(old, [&i64::MIN.to_be_bytes()[..], b"v"].concat());
        assert_eq!(decode_entry(&old), Some(Entry::new(b"v".to_vec(), 0)));
        let with_ttl = Entry {
            value: b"{}".to_vec(),
            expires: Some(1_700_000_000_000),
            version: 0,
        };
        assert_eq!(decode_entry(&encode_entry(&with_ttl)), Some(with_ttl));
        for version in [1, 7, u32::MAX] {
            let entry = Entry {
                value: b"{\"count\":3}".to_vec(),
                expires: Some(42),
                version,
            };
            assert_eq!(decode_entry(&encode_entry(&entry)), Some(entry));
        }
        let empty = Entry::new(Vec::new(), 3);
        assert_eq!(decode_entry(&encode_entry(&empty)), Some(empty));
    }

    #[test]
    fn two_processes_get_two_instance_directories() {
        let dir = tempfile::tempdir().unwrap();
        let a = StateStore::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        let b = StateStore::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        assert_ne!(a.dir(), b.dir());
    }

    #[test]
    fn a_corrupt_store_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let inst = dir.path().join("instance-0");
        std::fs::create_dir_all(&inst).unwrap();
        std::fs::write(inst.join("version"), b"garbage").unwrap();
        std::fs::write(inst.join("keyspaces"), b"garbage").unwrap();
        let store = StateStore::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        assert_eq!(store.dir(), inst);
        let moved = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains("corrupt")
            })
            .count();
        assert_eq!(moved, 1);
    }
}
