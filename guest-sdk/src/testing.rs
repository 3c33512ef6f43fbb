//! Run a plugin natively in `cargo test`, through the same code paths as in the host.
//!
//! ```
//! use weir_sdk::prelude::*;
//!
//! #[derive(Deserialize)]
//! struct Config {
//!     min: f64,
//! }
//!
//! #[filter]
//! fn big_orders(rec: &Record, cfg: &Config) -> Result<bool> {
//!     Ok(rec.json::<Value>()?["amount"].as_f64().unwrap_or(0.0) > cfg.min)
//! }
//!
//! // In a plugin crate this is a `#[test]` function.
//! fn main() {
//!     let plugin = weir_sdk::harness!(json!({ "min": 100 })).unwrap();
//!     assert!(plugin.filter(Record::from_json(&json!({ "amount": 150 })).unwrap()).unwrap());
//!     assert!(!plugin.filter(Record::from_json(&json!({ "amount": 50 })).unwrap()).unwrap());
//!     assert!(weir_sdk::harness!(json!({ "min": "lots" })).is_err());
//! }
//! ```
//!
//! The harness keeps state in memory with the host's semantics (scoped by record key, TTL in
//! event time, values tagged with the state version that wrote them and migrated before a newer
//! build reads them) and collects log lines for the test to inspect. To test a `#[state]`
//! migration, seed the state an older build left with [`Harness::put_state_as`].

use std::{cell::RefCell, collections::BTreeMap, marker::PhantomData, rc::Rc};

use crate::{
    __rt::{self, FilterPlugin, HostApi, Plugin, TransformPlugin, WindowPlugin},
    log::Level,
    tables::TableKey,
    Error, Record, Result, Window,
};

/// A harness for the plugin defined in the current crate, with `config` (a `serde_json::Value`).
// `crate` here is meant to be the calling crate: that is where the attribute put the plugin.
#[allow(clippy::crate_in_macro_def)]
#[macro_export]
macro_rules! harness {
    () => {
        $crate::harness!($crate::__serde_json::json!({}))
    };
    ($config:expr) => {
        $crate::testing::Harness::<crate::__WeirPlugin>::with_schema(
            $config,
            $crate::__schema!(crate::__WeirPlugin),
        )
    };
}

/// One host call of a plugin over a batch: one result per record.
type BatchCall<'a, R> = dyn Fn(Vec<Record>) -> Vec<Result<R, String>> + 'a;

/// A plugin loaded with its configuration, and an in-memory host.
pub struct Harness<P: Plugin> {
    host: Rc<MemoryHost>,
    config: P::Config,
    _plugin: PhantomData<P>,
}

impl<P: Plugin> Harness<P> {
    /// Load the plugin with `config`, as the host does: a config the plugin rejects is an error.
    /// [`harness!`](crate::harness) also finds the plugin's `#[state]` declaration.
    pub fn new(config: serde_json::Value) -> Result<Self> {
        Self::with_schema(config, None)
    }

    /// [`Harness::new`] for a plugin with state declaration `schema`.
    pub fn with_schema(config: serde_json::Value, schema: Option<__rt::Schema>) -> Result<Self> {
        let host = Rc::new(MemoryHost {
            config: config.to_string(),
            schema,
            ..MemoryHost::default()
        });
        let config = with_host(&host, __rt::load_config::<P::Config>).map_err(Error::msg)?;
        Ok(Harness {
            host,
            config,
            _plugin: PhantomData,
        })
    }

    /// Log lines the plugin wrote so far.
    pub fn logs(&self) -> Vec<(Level, String)> {
        self.host.logs.borrow().clone()
    }

    /// Store `value` under `name` for record key `key` as a build of state version `version`
    /// wrote it: the state an upgrade finds.
    pub fn put_state_as<T: serde::Serialize + ?Sized>(
        &self,
        version: u32,
        key: impl Into<Vec<u8>>,
        name: &str,
        value: &T,
    ) -> Result<()> {
        let entry = Entry {
            value: serde_json::to_vec(value)?,
            expires: None,
            version,
        };
        self.host
            .state
            .borrow_mut()
            .insert((Some(key.into()), name.to_string()), entry);
        Ok(())
    }

    /// Make `row` the row of `table` under `key`, as the table's topic would: what the
    /// plugin's `&Tables` reads.
    pub fn put_row(&self, table: &str, key: impl TableKey, row: &serde_json::Value) -> Result<()> {
        let at = (table.to_string(), key.table_key().into_owned());
        self.host
            .tables
            .borrow_mut()
            .insert(at, serde_json::to_vec(row)?);
        Ok(())
    }

    /// Remove the row of `table` under `key`.
    pub fn delete_row(&self, table: &str, key: impl TableKey) {
        let at = (table.to_string(), key.table_key().into_owned());
        self.host.tables.borrow_mut().remove(&at);
    }

    /// What the plugin's `#[state]` migration makes of `old`, stored under `name` by a build of
    /// state version `from`.
    pub fn migrate(
        &self,
        from: u32,
        name: &str,
        old: serde_json::Value,
    ) -> Result<serde_json::Value> {
        let bytes = serde_json::to_vec(&old)?;
        let new = with_host(&self.host, || {
            __rt::migrate_bytes(self.host.schema, from, name, &bytes)
        })
        .map_err(Error::msg)?;
        Ok(serde_json::from_slice(&new)?)
    }

    /// One host call over `records`, with the host's outcomes: a record that fails leaves no
    /// state change, so when some fail after the call wrote state (or a value the call reads
    /// cannot be migrated) its writes are dropped and its records replayed one at a time.
    fn call<R>(&self, records: Vec<Record>, f: &BatchCall<'_, R>) -> Vec<Result<R, String>> {
        *self.host.batch.borrow_mut() = records
            .iter()
            .map(|r| (r.key.clone(), r.timestamp))
            .collect();
        self.host.pending.borrow_mut().clear();
        // Kept for a replay only where one can be needed (see `Plugin::KEEPS_STATE`): a copy of
        // every record would also tilt the native side of the benchmarks.
        let kept = P::KEEPS_STATE.then(|| records.clone());
        let results = with_host(&self.host, || f(records));
        let failed = self.host.failed.borrow_mut().take();
        let pending = std::mem::take(&mut *self.host.pending.borrow_mut());
        match failed {
            None if results.iter().all(Result::is_ok) => {
                let mut state = self.host.state.borrow_mut();
                for (key, entry) in pending {
                    match entry {
                        Some(entry) => state.insert(key, entry),
                        None => state.remove(&key),
                    };
                }
                results
            }
            None if pending.is_empty() || results.len() == 1 => results,
            Some(why) if results.len() == 1 => vec![Err(why)],
            _ => kept
                .expect("only a plugin that keeps state writes or fails a read")
                .into_iter()
                .flat_map(|rec| self.call(vec![rec], f))
                .collect(),
        }
    }
}

impl<P: FilterPlugin> Harness<P> {
    /// Whether the filter keeps `rec`.
    pub fn filter(&self, rec: Record) -> Result<bool> {
        self.filter_all(vec![rec]).remove(0)
    }

    /// The filter's verdicts for a batch, as one host call would give them.
    pub fn filter_all(&self, records: Vec<Record>) -> Vec<Result<bool>> {
        self.call(records, &|records| {
            __rt::filter::filter_batch::<P, _>(&self.config, records.iter())
        })
        .into_iter()
        .map(|r| r.map_err(Error::msg))
        .collect()
    }
}

impl<P: TransformPlugin> Harness<P> {
    /// What the transform makes of `rec`.
    pub fn transform(&self, rec: Record) -> Result<Vec<Record>> {
        self.transform_all(vec![rec]).remove(0)
    }

    /// The transform's outputs for a batch, as one host call would give them.
    pub fn transform_all(&self, records: Vec<Record>) -> Vec<Result<Vec<Record>>> {
        self.call(records, &|records| {
            __rt::transform::transform_batch::<P>(&self.config, records.into_iter())
        })
        .into_iter()
        .map(|r| r.map_err(Error::msg))
        .collect()
    }
}

impl<P: WindowPlugin> Harness<P> {
    /// Fold `records` into a fresh accumulator of `window` and emit it, as the host does when
    /// the window fires. Records the plugin rejects are returned as errors beside the output.
    pub fn window(
        &self,
        window: &Window,
        records: Vec<Record>,
    ) -> Result<(Vec<Record>, __rt::RecordErrors)> {
        with_host(&self.host, || {
            let (acc, errors) =
                __rt::window::accumulate::<P::Agg>(&self.config, window, None, records.into_iter())
                    .map_err(Error::msg)?;
            let out =
                __rt::window::emit::<P::Agg>(&self.config, window, &acc).map_err(Error::msg)?;
            Ok((out, errors))
        })
    }

    /// Aggregate `a` and `b` separately, merge them (as merging sessions do) and emit.
    pub fn window_merged(
        &self,
        window: &Window,
        a: Vec<Record>,
        b: Vec<Record>,
    ) -> Result<Vec<Record>> {
        with_host(&self.host, || {
            let (a, _) =
                __rt::window::accumulate::<P::Agg>(&self.config, window, None, a.into_iter())
                    .map_err(Error::msg)?;
            let (b, _) =
                __rt::window::accumulate::<P::Agg>(&self.config, window, None, b.into_iter())
                    .map_err(Error::msg)?;
            let merged =
                __rt::window::merge::<P::Agg>(&self.config, window, &a, &b).map_err(Error::msg)?;
            __rt::window::emit::<P::Agg>(&self.config, window, &merged).map_err(Error::msg)
        })
    }
}

/// A loaded plugin of any kind behind one interface: each input gives its outputs (a kept
/// record for a filter) or an error. For hosts that run plugins natively, such as benchmarks
/// that compare a plugin with its own wasm build.
pub trait Native {
    fn process(&self, records: Vec<Record>) -> Vec<Result<Vec<Record>>>;
}

/// [`Native`] for a filter.
pub struct NativeFilter<P: FilterPlugin>(pub Harness<P>);
/// [`Native`] for a transform.
pub struct NativeTransform<P: TransformPlugin>(pub Harness<P>);

impl<P: FilterPlugin> Native for NativeFilter<P> {
    fn process(&self, records: Vec<Record>) -> Vec<Result<Vec<Record>>> {
        let verdicts = self.0.filter_all(records.clone());
        records
            .into_iter()
            .zip(verdicts)
            .map(|(rec, keep)| match keep {
                Ok(true) => Ok(vec![rec]),
                Ok(false) => Ok(Vec::new()),
                Err(e) => Err(e),
            })
            .collect()
    }
}

impl<P: TransformPlugin> Native for NativeTransform<P> {
    fn process(&self, records: Vec<Record>) -> Vec<Result<Vec<Record>>> {
        self.0.transform_all(records)
    }
}

fn with_host<R>(host: &Rc<MemoryHost>, f: impl FnOnce() -> R) -> R {
    let previous = __rt::set_host(Some(host.clone() as Rc<dyn HostApi>));
    let out = f();
    __rt::set_host(previous);
    out
}

type StateKey = (Option<Vec<u8>>, String);

/// A table's name and a row's key in it.
type RowKey = (String, Vec<u8>);

/// A stored value, as the host keeps it.
#[derive(Clone)]
struct Entry {
    value: Vec<u8>,
    /// Expiry in event time (ms), if it has one.
    expires: Option<i64>,
    /// The state version of the build that wrote it.
    version: u32,
}

/// State and logs in memory, with the host's scoping, TTL and versioning rules.
#[derive(Default)]
struct MemoryHost {
    config: String,
    schema: Option<__rt::Schema>,
    logs: RefCell<Vec<(Level, String)>>,
    /// Key and event time of each record in the current batch.
    batch: RefCell<Vec<(Option<Vec<u8>>, i64)>>,
    state: RefCell<BTreeMap<StateKey, Entry>>,
    /// Writes of the call in progress (`None` deletes), applied when it ends well.
    pending: RefCell<BTreeMap<StateKey, Option<Entry>>>,
    /// Why the call in progress must fail: a value it read could not be migrated.
    failed: RefCell<Option<String>>,
    /// Rows of tables, by table and key.
    tables: RefCell<BTreeMap<RowKey, Vec<u8>>>,
}

impl MemoryHost {
    fn record(&self, rec: u32) -> (Option<Vec<u8>>, i64) {
        self.batch
            .borrow()
            .get(rec as usize)
            .cloned()
            .unwrap_or_else(|| panic!("state access for record {rec}, which is not in the batch"))
    }

    fn version(&self) -> u32 {
        self.schema.map_or(0, |s| s.version)
    }

    fn lookup(&self, key: &StateKey) -> Option<Entry> {
        match self.pending.borrow().get(key) {
            Some(pending) => pending.clone(),
            None => self.state.borrow().get(key).cloned(),
        }
    }

    /// `entry`'s value in this build's shape, as the host gives it: migrated if an older build
    /// wrote it. A value that cannot be is `None` here, and fails the call (see `Harness::call`).
    fn readable(&self, key: &StateKey, entry: Entry) -> Option<Vec<u8>> {
        let version = self.version();
        let why = if entry.version == version {
            return Some(entry.value);
        } else if entry.version > version {
            format!(
                "was written by state version {}, newer than this build's {version}",
                entry.version
            )
        } else {
            match __rt::migrate_bytes(self.schema, entry.version, &key.1, &entry.value) {
                Ok(value) => return Some(value),
                Err(e) => format!(
                    "was written by state version {} and could not be migrated to version \
                     {version}: {e}",
                    entry.version
                ),
            }
        };
        let shown = match &key.0 {
            Some(k) => format!("`{}`", String::from_utf8_lossy(k)),
            None => "(none)".into(),
        };
        *self.failed.borrow_mut() = Some(format!("state `{}` of key {shown} {why}", key.1));
        None
    }
}

impl HostApi for MemoryHost {
    fn config(&self) -> String {
        self.config.clone()
    }

    fn log(&self, level: Level, message: &str) {
        eprintln!("[plugin {level:?}] {message}");
        self.logs.borrow_mut().push((level, message.to_string()));
    }

    fn state_get(&self, rec: u32, name: &str) -> Option<Vec<u8>> {
        let (key, now) = self.record(rec);
        let key = (key, name.to_string());
        let entry = self.lookup(&key)?;
        match entry.expires {
            Some(t) if now >= t => None,
            _ => self.readable(&key, entry),
        }
    }

    fn state_put(
        &self,
        rec: u32,
        name: &str,
        value: &[u8],
        ttl_ms: Option<u64>,
    ) -> Result<(), String> {
        let (key, now) = self.record(rec);
        let expires = ttl_ms.map(|ttl| now.saturating_add(ttl.min(i64::MAX as u64) as i64));
        let entry = Entry {
            value: value.to_vec(),
            expires,
            version: self.version(),
        };
        self.pending
            .borrow_mut()
            .insert((key, name.to_string()), Some(entry));
        Ok(())
    }

    fn state_delete(&self, rec: u32, name: &str) {
        let (key, _) = self.record(rec);
        self.pending
            .borrow_mut()
            .insert((key, name.to_string()), None);
    }

    #[cfg(not(target_arch = "wasm32"))]
    /// The latest row: the harness keeps no versions.
    fn table_get(&self, _rec: u32, table: &str, key: &[u8]) -> Option<Vec<u8>> {
        let at = (table.to_string(), key.to_vec());
        self.tables.borrow().get(&at).cloned()
    }

    /// Never called: the harness runs natively, where the SDK computes digests itself.
    #[cfg(target_arch = "wasm32")]
    fn sha256(&self, _: &[u8]) -> [u8; 32] {
        unreachable!("weir_sdk::testing runs natively")
    }

    fn state_scan(&self, rec: u32, prefix: &str) -> Vec<(String, Vec<u8>)> {
        let (key, now) = self.record(rec);
        let in_range = |k: &Option<Vec<u8>>, name: &str| *k == key && name.starts_with(prefix);
        let start = (key.clone(), prefix.to_string());
        let mut found: BTreeMap<String, Option<Entry>> = self
            .state
            .borrow()
            .range(start.clone()..)
            .take_while(|((k, name), _)| in_range(k, name))
            .map(|((_, name), entry)| (name.clone(), Some(entry.clone())))
            .collect();
        for ((k, name), entry) in self.pending.borrow().range(start..) {
            if !in_range(k, name) {
                break;
            }
            found.insert(name.clone(), entry.clone());
        }
        found
            .into_iter()
            .filter_map(|(name, entry)| {
                let entry = entry.filter(|e| e.expires.is_none_or(|t| now < t))?;
                let value = self.readable(&(key.clone(), name.clone()), entry)?;
                Some((name, value))
            })
            .collect()
    }
}
