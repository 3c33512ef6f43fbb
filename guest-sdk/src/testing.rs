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
//! event time) and collects log lines for the test to inspect.

use std::{cell::RefCell, collections::BTreeMap, marker::PhantomData, rc::Rc};

use crate::{
    __rt::{self, FilterPlugin, HostApi, Plugin, TransformPlugin, WindowPlugin},
    log::Level,
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
        $crate::testing::Harness::<crate::__WeirPlugin>::new($config)
    };
}

/// A plugin loaded with its configuration, and an in-memory host.
pub struct Harness<P: Plugin> {
    host: Rc<MemoryHost>,
    config: P::Config,
    _plugin: PhantomData<P>,
}

impl<P: Plugin> Harness<P> {
    /// Load the plugin with `config`, as the host does: a config the plugin rejects is an error.
    pub fn new(config: serde_json::Value) -> Result<Self> {
        let host = Rc::new(MemoryHost {
            config: config.to_string(),
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

    fn batch<R>(&self, records: Vec<Record>, f: impl FnOnce(Vec<Record>) -> R) -> R {
        *self.host.batch.borrow_mut() = records
            .iter()
            .map(|r| (r.key.clone(), r.timestamp))
            .collect();
        with_host(&self.host, || f(records))
    }
}

impl<P: FilterPlugin> Harness<P> {
    /// Whether the filter keeps `rec`.
    pub fn filter(&self, rec: Record) -> Result<bool> {
        self.filter_all(vec![rec]).remove(0)
    }

    /// The filter's verdicts for a batch, as one host call would give them.
    pub fn filter_all(&self, records: Vec<Record>) -> Vec<Result<bool>> {
        self.batch(records, |records| {
            __rt::filter_batch::<P, _>(&self.config, records.iter())
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
        self.batch(records, |records| {
            __rt::transform_batch::<P, _>(&self.config, records.iter())
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
                __rt::accumulate::<P::Agg>(&self.config, window, None, records.into_iter())
                    .map_err(Error::msg)?;
            let out = __rt::emit::<P::Agg>(&self.config, window, &acc).map_err(Error::msg)?;
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
            let (a, _) = __rt::accumulate::<P::Agg>(&self.config, window, None, a.into_iter())
                .map_err(Error::msg)?;
            let (b, _) = __rt::accumulate::<P::Agg>(&self.config, window, None, b.into_iter())
                .map_err(Error::msg)?;
            let merged = __rt::merge::<P::Agg>(&self.config, window, &a, &b).map_err(Error::msg)?;
            __rt::emit::<P::Agg>(&self.config, window, &merged).map_err(Error::msg)
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
        self.0.batch(records, |records| {
            let verdicts = __rt::filter_batch::<P, _>(&self.0.config, records.iter());
            records
                .into_iter()
                .zip(verdicts)
                .map(|(rec, keep)| match keep {
                    Ok(true) => Ok(vec![rec]),
                    Ok(false) => Ok(Vec::new()),
                    Err(e) => Err(Error::msg(e)),
                })
                .collect()
        })
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
/// A value and its expiry in event time (ms), if it has one.
type Entry = (Vec<u8>, Option<i64>);

/// State and logs in memory, with the host's scoping and TTL rules.
#[derive(Default)]
struct MemoryHost {
    config: String,
    logs: RefCell<Vec<(Level, String)>>,
    /// Key and event time of each record in the current batch.
    batch: RefCell<Vec<(Option<Vec<u8>>, i64)>>,
    /// Value and expiry (event time, ms) per key and name.
    state: RefCell<BTreeMap<StateKey, Entry>>,
}

impl MemoryHost {
    fn record(&self, rec: u32) -> (Option<Vec<u8>>, i64) {
        self.batch
            .borrow()
            .get(rec as usize)
            .cloned()
            .unwrap_or_else(|| panic!("state access for record {rec}, which is not in the batch"))
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
        let state = self.state.borrow();
        let (value, expires) = state.get(&(key, name.to_string()))?;
        match expires {
            Some(t) if now >= *t => None,
            _ => Some(value.clone()),
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
        self.state
            .borrow_mut()
            .insert((key, name.to_string()), (value.to_vec(), expires));
        Ok(())
    }

    fn state_delete(&self, rec: u32, name: &str) {
        let (key, _) = self.record(rec);
        self.state.borrow_mut().remove(&(key, name.to_string()));
    }

    fn state_scan(&self, rec: u32, prefix: &str) -> Vec<(String, Vec<u8>)> {
        let (key, now) = self.record(rec);
        self.state
            .borrow()
            .range((key.clone(), prefix.to_string())..)
            .take_while(|((k, name), _)| *k == key && name.starts_with(prefix))
            .filter(|(_, (_, expires))| expires.is_none_or(|t| now < t))
            .map(|((_, name), (value, _))| (name.clone(), value.clone()))
            .collect()
    }
}
