//! What a plugin instance can reach: its config, the log, and keyed state through a per-call
//! overlay, so writes of a call that traps never reach the store.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use wasmtime::ResourceLimiter;

use super::{
    bindings::{digest, host, state, tables, types},
    Limits, Record,
};

/// Largest value one state entry may hold.
const MAX_STATE_VALUE: usize = 1 << 20;

/// A state entry's address: the record key it belongs to and the name the plugin gave it.
pub type StateKey = (Option<Vec<u8>>, String);

/// A stored value: what the plugin stored, when it expires and which build wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub value: Vec<u8>,
    /// Expiry in event time (ms), if it has one.
    pub expires: Option<i64>,
    /// The state version of the build that wrote it (see the `versioned-state` WIT world): a
    /// build reading a value an older one wrote has it migrated first.
    pub version: u32,
}

impl Entry {
    /// A value written by a build of state version `version`, with no expiry.
    pub fn new(value: Vec<u8>, version: u32) -> Entry {
        Entry {
            value,
            expires: None,
            version,
        }
    }
}

/// Where an instance's keyed state lives. The engine reads through it and hands it each call's
/// writes at once, after the call succeeded; what it does with them (memory, disk, changelog)
/// is the backend's business. Expiry is checked by the engine, in event time.
pub trait StateBackend: Send + Sync {
    /// The entry at `key`, expired or not.
    fn get(&self, key: &StateKey) -> Option<Entry>;
    /// The entries of `record_key` whose names start with `prefix`, in name order.
    fn scan(&self, record_key: &Option<Vec<u8>>, prefix: &str) -> Vec<(String, Entry)>;
    /// One successful call's writes; `None` deletes.
    fn apply(&self, writes: BTreeMap<StateKey, Option<Entry>>);
    /// Every entry, in key order: window stages rebuild their timers from it.
    fn all(&self) -> Vec<(StateKey, Entry)>;
}

/// Keyed state of one stage (for one partition), shared by the instances that stage starts over
/// time: a trap replaces the instance, not the state.
pub type SharedState = Arc<dyn StateBackend>;

/// The tables a stage may read (`[[table]]`, granted with `tables = [...]` on the stage).
pub trait TableLookup: Send + Sync {
    /// The row of `table` under `key` for a record of event time `time` (the latest row, or
    /// the one current then, as the table is kept); `Err` says why the table cannot be read
    /// (not granted to the stage, not loaded, a failing store), which fails the record.
    fn get(&self, table: &str, key: &[u8], time: i64) -> Result<Option<Vec<u8>>, String>;
}

/// What a stage granted no tables reads: nothing.
pub struct NoTables;

impl TableLookup for NoTables {
    fn get(&self, table: &str, _key: &[u8], _time: i64) -> Result<Option<Vec<u8>>, String> {
        Err(format!(
            "asked for table `{table}`, but the stage is granted no tables (add \
             tables = [\"{table}\"] to the stage, and a [[table]] named so)"
        ))
    }
}

/// A stage's grant of tables, shared by its instances.
pub type SharedTables = Arc<dyn TableLookup>;

/// Keyed state in memory, for `weir test` and unit tests.
#[derive(Default, Debug)]
pub struct MemoryState {
    entries: Mutex<BTreeMap<StateKey, Entry>>,
}

impl MemoryState {
    /// A new, empty store to share between instances.
    pub fn shared() -> SharedState {
        Arc::new(MemoryState::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<StateKey, Entry>> {
        // A panic while holding the lock cannot leave a half-applied entry: inserts are atomic.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl StateBackend for MemoryState {
    fn get(&self, key: &StateKey) -> Option<Entry> {
        self.lock().get(key).cloned()
    }

    fn scan(&self, record_key: &Option<Vec<u8>>, prefix: &str) -> Vec<(String, Entry)> {
        self.lock()
            .range((record_key.clone(), prefix.to_string())..)
            .take_while(|((k, name), _)| k == record_key && name.starts_with(prefix))
            .map(|((_, name), entry)| (name.clone(), entry.clone()))
            .collect()
    }

    fn apply(&self, writes: BTreeMap<StateKey, Option<Entry>>) {
        let mut entries = self.lock();
        for (key, entry) in writes {
            match entry {
                Some(entry) => entries.insert(key, entry),
                None => entries.remove(&key),
            };
        }
    }

    fn all(&self) -> Vec<(StateKey, Entry)> {
        self.lock()
            .iter()
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect()
    }
}

/// Memory limit that remembers a denied growth, so the failure is reported as out-of-memory
/// rather than as whatever trap the guest's allocator turns it into.
pub(super) struct Limiter {
    pub(super) max_bytes: usize,
    denied: Option<usize>,
    /// Linear memory granted so far, in bytes.
    pub(super) bytes: usize,
}

impl Limiter {
    pub(super) fn take_denied(&mut self) -> Option<usize> {
        self.denied.take()
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.denied = Some(desired);
            // An error (not `Ok(false)`) traps at once instead of letting the guest limp on.
            wasmtime::bail!("memory limit of {} bytes exceeded", self.max_bytes);
        }
        self.bytes = self.bytes.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// The store data of one instance.
pub(super) struct HostState {
    plugin: String,
    config: Arc<str>,
    pub(super) limiter: Limiter,
    pub(super) call_timeout: Duration,
    state: SharedState,
    /// The batch of the call in progress: state calls name a record by its index in it.
    batch: Arc<Vec<Record>>,
    /// Writes of the call in progress; `None` is a delete.
    pending: BTreeMap<StateKey, Option<Entry>>,
    panic: Option<String>,
    /// The state version of this build: what its writes are tagged with, and what older values
    /// are migrated to before it reads them.
    pub(super) version: u32,
    /// Migrates older values for this instance (none: the plugin exports no migration).
    pub(super) migrator: Option<Box<Migrator>>,
    /// Why the call in progress was stopped: a value it read could not be migrated.
    migration_failed: Option<String>,
    /// Most bytes the entries of one record key may hold (names and values), as the plugin
    /// declares it needs (`state_bytes_per_key`); none: no quota.
    pub(super) state_quota: Option<u64>,
    /// Why the call in progress was stopped: a write went past the state quota.
    quota_exceeded: Option<String>,
    /// WASI, for components that import it: an empty context (see `wasi.rs`).
    pub(super) wasi: super::wasi::Wasi,
    /// The tables the stage may read.
    pub(super) tables: SharedTables,
    /// Why the call in progress was stopped: it asked for a table it cannot read.
    table_refused: Option<String>,
}

/// Migrates the values older builds wrote for an instance that reads them. It runs the
/// plugin's `migrate-state` on a second instance of the plugin, started when first needed: the
/// reading instance is in the middle of a call, and a component instance cannot be re-entered.
pub(crate) struct Migrator {
    plugin: super::Plugin,
    config: Arc<str>,
    limits: Limits,
    instance: Option<super::Instance>,
}

impl Migrator {
    pub(super) fn new(plugin: super::Plugin, config: Arc<str>, limits: Limits) -> Migrator {
        Migrator {
            plugin,
            config,
            limits,
            instance: None,
        }
    }

    fn migrate(&mut self, from: u32, name: &str, value: &[u8]) -> Result<Vec<u8>, String> {
        let instance = match &mut self.instance {
            Some(instance) => instance,
            None => self.instance.insert(
                self.plugin
                    .instantiate(&self.config, self.limits, MemoryState::shared())
                    .map_err(|e| format!("cannot start an instance to migrate with: {e}"))?,
            ),
        };
        match instance.migrate(from, name, value) {
            Ok(result) => result,
            Err(e) => Err(format!("{}: {}", e.kind.as_str(), e.message)),
        }
    }
}

/// A record key as error messages show it.
pub(crate) fn describe_key(key: &Option<Vec<u8>>) -> String {
    match key {
        Some(k) => format!("`{}`", String::from_utf8_lossy(k)),
        None => "(none)".into(),
    }
}

impl HostState {
    pub(super) fn new(
        plugin: String,
        config: Arc<str>,
        limits: Limits,
        state: SharedState,
    ) -> Self {
        let wasi = super::wasi::Wasi::new(&plugin);
        HostState {
            plugin,
            config,
            limiter: Limiter {
                max_bytes: limits.memory_bytes,
                denied: None,
                bytes: 0,
            },
            call_timeout: limits.call_timeout,
            state,
            batch: Arc::new(Vec::new()),
            pending: BTreeMap::new(),
            panic: None,
            version: 0,
            migrator: None,
            migration_failed: None,
            state_quota: None,
            quota_exceeded: None,
            wasi,
            tables: Arc::new(NoTables),
            table_refused: None,
        }
    }

    pub(super) fn begin(&mut self, batch: Arc<Vec<Record>>) {
        self.batch = batch;
        self.pending.clear();
        self.panic = None;
        self.migration_failed = None;
        self.quota_exceeded = None;
        self.table_refused = None;
    }

    /// Apply the call's state writes.
    pub(super) fn commit(&mut self) {
        self.batch = Arc::new(Vec::new());
        if self.pending.is_empty() {
            return;
        }
        self.state.apply(std::mem::take(&mut self.pending));
    }

    /// Read and write `state` from the next call on (a worker moving to another partition).
    pub(super) fn set_state(&mut self, state: SharedState) {
        self.state = state;
    }

    /// Whether the call wrote state that is not yet applied.
    pub(super) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Forget the call's state writes.
    pub(super) fn rollback(&mut self) {
        self.batch = Arc::new(Vec::new());
        self.pending.clear();
    }

    pub(super) fn take_panic(&mut self) -> Option<String> {
        self.panic.take()
    }

    pub(super) fn take_migration_failure(&mut self) -> Option<String> {
        self.migration_failed.take()
    }

    pub(super) fn take_quota_exceeded(&mut self) -> Option<String> {
        self.quota_exceeded.take()
    }

    pub(super) fn take_table_refused(&mut self) -> Option<String> {
        self.table_refused.take()
    }

    /// Refuse writing `entry` as `name` of `key` when the key's entries would then hold more
    /// than the state quota: the message says by how much. Entries expired at `now` do not
    /// count (the plugin can no longer see them to delete them).
    fn within_quota(&mut self, key: &Option<Vec<u8>>, name: &str, entry: &Entry, now: i64) -> bool {
        let Some(quota) = self.state_quota else {
            return true;
        };
        let mut sizes: BTreeMap<String, u64> = self
            .entries(key, "")
            .into_iter()
            .filter_map(|(n, e)| {
                let e = e.filter(|e| e.expires.is_none_or(|t| now < t))?;
                let size = (n.len() + e.value.len()) as u64;
                Some((n, size))
            })
            .collect();
        sizes.insert(name.to_string(), (name.len() + entry.value.len()) as u64);
        let total: u64 = sizes.values().sum();
        if total <= quota {
            return true;
        }
        self.quota_exceeded = Some(format!(
            "writing state `{name}` would make key {} hold {total} bytes, over the \
             {quota} bytes per key the plugin declares it needs (state_bytes_per_key)",
            describe_key(key)
        ));
        false
    }

    /// The entries of `key` whose names start with `prefix`, as the call in progress sees them:
    /// the store's with the call's own writes over them (`None`: deleted by it).
    fn entries(&self, key: &Option<Vec<u8>>, prefix: &str) -> BTreeMap<String, Option<Entry>> {
        let mut found: BTreeMap<String, Option<Entry>> = self
            .state
            .scan(key, prefix)
            .into_iter()
            .map(|(name, entry)| (name, Some(entry)))
            .collect();
        for ((k, name), entry) in self.pending.range((key.clone(), prefix.to_string())..) {
            if k != key || !name.starts_with(prefix) {
                break;
            }
            found.insert(name.clone(), entry.clone());
        }
        found
    }

    /// The state key and event time of record `rec` of the current batch (state and table
    /// lookups name their record by it).
    fn record(&self, rec: u32) -> wasmtime::Result<(Option<Vec<u8>>, i64)> {
        match self.batch.get(rec as usize) {
            Some(r) => Ok((r.key.clone(), r.timestamp)),
            None => wasmtime::bail!(
                "plugin `{}` asked about record {rec} (its state or a table row) in a batch \
                 of {}",
                self.plugin,
                self.batch.len()
            ),
        }
    }

    fn lookup(&mut self, key: &StateKey, now: i64) -> wasmtime::Result<Option<Vec<u8>>> {
        let entry = match self.pending.get(key) {
            Some(pending) => pending.clone(),
            None => self.state.get(key),
        };
        match entry {
            Some(entry) if entry.expires.is_some_and(|t| now >= t) => Ok(None),
            Some(entry) => self.readable(&key.0, &key.1, entry).map(Some),
            None => Ok(None),
        }
    }

    /// `entry`'s value in this build's shape. Lazily, on read: migrating a whole stage's state
    /// at a swap would hold the partition up for as long as its store is big, and most keys
    /// may never be read again. The migrated value is not written back; the plugin's next write
    /// stores it in the new shape. A value that cannot be migrated stops the call (the record
    /// fails under the error policy) rather than be handed over in a shape the build does not
    /// know.
    fn readable(
        &mut self,
        key: &Option<Vec<u8>>,
        name: &str,
        entry: Entry,
    ) -> wasmtime::Result<Vec<u8>> {
        if entry.version == self.version {
            return Ok(entry.value);
        }
        let why = if entry.version > self.version {
            format!(
                "was written by state version {} of the plugin, newer than this build's {}: \
                 a build cannot read the state of a later one",
                entry.version, self.version
            )
        } else {
            match &mut self.migrator {
                Some(migrator) => match migrator.migrate(entry.version, name, &entry.value) {
                    Ok(value) => return Ok(value),
                    Err(e) => format!(
                        "was written by state version {} and could not be migrated to version \
                         {}: {e}",
                        entry.version, self.version
                    ),
                },
                None => format!(
                    "was written by state version {}, and this build (version {}) exports no \
                     migration",
                    entry.version, self.version
                ),
            }
        };
        let message = format!("state `{name}` of key {} {why}", describe_key(key));
        self.migration_failed = Some(message.clone());
        Err(wasmtime::format_err!(message))
    }
}

impl types::Host for HostState {}

impl host::Host for HostState {
    fn config(&mut self) -> String {
        self.config.to_string()
    }

    fn log(&mut self, level: types::Level, message: String) {
        let plugin = &self.plugin;
        match level {
            types::Level::Trace => tracing::trace!(plugin, "{message}"),
            types::Level::Debug => tracing::debug!(plugin, "{message}"),
            types::Level::Info => tracing::info!(plugin, "{message}"),
            types::Level::Warn => tracing::warn!(plugin, "{message}"),
            types::Level::Error => {
                // The SDK's panic hook logs the panic just before the trap: keep it for the error.
                // Its text is "panicked at FILE:LINE:COL:\nMESSAGE": keep it on one line.
                if let Some(panic) = message.strip_prefix("panic: ") {
                    self.panic = Some(panic.replace('\n', " "));
                }
                tracing::error!(plugin, "{message}")
            }
        }
    }
}

impl digest::Host for HostState {
    fn sha256(&mut self, data: Vec<u8>) -> digest::Sha256Digest {
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(&data).into();
        let word = |i: usize| u64::from_be_bytes(digest[i * 8..i * 8 + 8].try_into().unwrap());
        (word(0), word(1), word(2), word(3))
    }
}

impl state::Host for HostState {
    fn get(&mut self, rec: u32, name: String) -> wasmtime::Result<Option<Vec<u8>>> {
        let Ok((key, now)) = self.record(rec) else {
            return Ok(None);
        };
        self.lookup(&(key, name), now)
    }

    fn put(
        &mut self,
        rec: u32,
        name: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<(), String>> {
        let (key, now) = match self.record(rec) {
            Ok(found) => found,
            Err(e) => return Ok(Err(e.to_string())),
        };
        if value.len() > MAX_STATE_VALUE {
            return Ok(Err(format!(
                "state value `{name}` is {} bytes, over the limit of {MAX_STATE_VALUE}",
                value.len()
            )));
        }
        let expires = ttl_ms.map(|ttl| now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)));
        let entry = Entry {
            value,
            expires,
            version: self.version,
        };
        if !self.within_quota(&key, &name, &entry, now) {
            let why = self.quota_exceeded.clone().unwrap_or_default();
            return Err(wasmtime::format_err!(why));
        }
        self.pending.insert((key, name), Some(entry));
        Ok(Ok(()))
    }

    fn delete(&mut self, rec: u32, name: String) {
        if let Ok((key, _)) = self.record(rec) {
            self.pending.insert((key, name), None);
        }
    }

    fn scan(&mut self, rec: u32, prefix: String) -> wasmtime::Result<Vec<(String, Vec<u8>)>> {
        let Ok((key, now)) = self.record(rec) else {
            return Ok(Vec::new());
        };
        let found = self.entries(&key, &prefix);
        let mut live = Vec::with_capacity(found.len());
        for (name, entry) in found {
            match entry {
                Some(entry) if entry.expires.is_none_or(|t| now < t) => {
                    let value = self.readable(&key, &name, entry)?;
                    live.push((name, value));
                }
                _ => {}
            }
        }
        Ok(live)
    }
}

impl tables::Host for HostState {
    /// A table that cannot be read stops the call (the record fails as `table`): the plugin
    /// must not take a missing grant for a missing row.
    fn get(&mut self, rec: u32, table: String, key: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
        let (_, time) = self.record(rec)?;
        match self.tables.get(&table, &key, time) {
            Ok(row) => Ok(row),
            Err(why) => {
                self.table_refused = Some(why.clone());
                Err(wasmtime::format_err!(why))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_quota_counts_live_entries_only_and_the_calls_own_writes() {
        let state = MemoryState::shared();
        let key = Some(b"k".to_vec());
        let entry = |len: usize, expires: Option<i64>| Entry {
            value: vec![0; len],
            expires,
            version: 0,
        };
        state.apply(BTreeMap::from([
            ((key.clone(), "old".into()), Some(entry(96, Some(1_000)))),
            ((key.clone(), "kept".into()), Some(entry(46, None))),
        ]));
        let mut host = HostState::new("p".into(), Arc::from("{}"), Limits::default(), state);
        host.state_quota = Some(100);
        // Before `old` expires its 99 bytes count (with `kept` 50 and `new` 13); after, it does not.
        assert!(!host.within_quota(&key, "new", &entry(10, None), 999));
        assert!(host
            .take_quota_exceeded()
            .unwrap()
            .contains("hold 162 bytes"));
        assert!(host.within_quota(&key, "new", &entry(10, None), 1_000));
        // A pending write counts, and a pending delete frees its room.
        host.pending
            .insert((key.clone(), "more".into()), Some(entry(40, None)));
        assert!(!host.within_quota(&key, "new", &entry(10, None), 1_000));
        host.pending.insert((key.clone(), "kept".into()), None);
        assert!(host.within_quota(&key, "new", &entry(10, None), 1_000));
    }
}
