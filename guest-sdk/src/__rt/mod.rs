//! The machinery behind the attributes: not part of the API, may change at any time.
//!
//! The attribute macros generate the component's bindings in the plugin crate (so each plugin
//! carries exactly its own world) and route host calls through [`HostApi`], which is the wasm
//! imports in a component and an in-memory host under [`crate::testing::Harness`].

use std::{cell::RefCell, rc::Rc};

use serde::de::DeserializeOwned;

use crate::{log::Level, Aggregate, Record, Result, State, Window};

pub use crate::record::IntoRecords;

/// Plugins allocate a lot of small, short-lived objects (a parsed JSON document is dozens of
/// strings and map nodes): those come from free lists by size (see [`crate::mem::Pools`]), the
/// rest from talc, which serves them markedly faster than the default dlmalloc.
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: crate::mem::Pools<talc::wasm::WasmDynamicTalc> =
    crate::mem::Pools::new(talc::wasm::new_wasm_dynamic_allocator());

/// Why every record of a call failed when the plugin's `init` has not succeeded.
pub const UNINITIALISED: &str = "plugin called before a successful init";

/// What a plugin can ask of its host.
pub trait HostApi {
    fn config(&self) -> String;
    fn log(&self, level: Level, message: &str);
    fn state_get(&self, rec: u32, name: &str) -> Option<Vec<u8>>;
    fn state_put(
        &self,
        rec: u32,
        name: &str,
        value: &[u8],
        ttl_ms: Option<u64>,
    ) -> Result<(), String>;
    fn state_delete(&self, rec: u32, name: &str);
    fn state_scan(&self, rec: u32, prefix: &str) -> Vec<(String, Vec<u8>)>;
    /// Only components ask the host: natively the SDK computes digests itself.
    #[cfg(target_arch = "wasm32")]
    fn sha256(&self, data: &[u8]) -> [u8; 32];
}

thread_local! {
    static HOST: RefCell<Option<Rc<dyn HostApi>>> = const { RefCell::new(None) };
}

/// Install the host for this thread, returning the one it replaces.
pub fn set_host(host: Option<Rc<dyn HostApi>>) -> Option<Rc<dyn HostApi>> {
    HOST.with(|h| std::mem::replace(&mut *h.borrow_mut(), host))
}

pub(crate) fn with_host<R>(f: impl FnOnce(&dyn HostApi) -> R) -> R {
    let host = HOST.with(|h| h.borrow().clone());
    match host {
        Some(host) => f(&*host),
        None => panic!(
            "weir_sdk::State used outside a plugin call: run the plugin under weir_sdk::testing::Harness"
        ),
    }
}

pub(crate) fn log(level: Level, message: &str) {
    let host = HOST.with(|h| h.borrow().clone());
    match host {
        Some(host) => host.log(level, message),
        None => eprintln!("[{level:?}] {message}"),
    }
}

/// Report panics through the host log before the trap, so the host can say why the plugin died.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        log(Level::Error, &format!("panic: {info}"))
    }));
}

/// A configuration type for plugins that take none: accepts and ignores any JSON.
pub struct NoConfig;

impl<'de> serde::Deserialize<'de> for NoConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| NoConfig)
    }
}

/// Parse the configuration the host holds for this plugin.
pub fn load_config<C: DeserializeOwned>() -> Result<C, String> {
    let text = with_host(|h| h.config());
    serde_json::from_str(&text).map_err(|e| format!("invalid plugin config: {e}"))
}

/// Any plugin: what its configuration is.
pub trait Plugin {
    type Config: DeserializeOwned;
    /// Whether it takes a `&State`: only then can a call fail for a value it reads, and the
    /// test harness must keep a batch's records to replay them one by one.
    const KEEPS_STATE: bool = false;
}

/// A `#[filter]` function, normalised by the attribute to one signature.
pub trait FilterPlugin: Plugin {
    fn filter(rec: &Record, cfg: &Self::Config, state: &State) -> Result<bool>;
}

/// A `#[transform]` function, normalised by the attribute to one signature.
pub trait TransformPlugin: Plugin {
    /// The record is the plugin's: a transform written as `fn(rec: Record, …)` changes it and
    /// returns it without a copy.
    fn transform(rec: Record, cfg: &Self::Config, state: &State) -> Result<Vec<Record>>;
}

/// A `#[state(version = N)]` declaration: the shape of the state this build writes, and how to
/// bring older values up to date.
pub trait StateSchema {
    const VERSION: u32;
    fn migrate(from: u32, name: &str, old: serde_json::Value) -> Result<serde_json::Value>;
}

/// A plugin's [`StateSchema`], if it declares one, as plain data.
#[derive(Clone, Copy)]
pub struct Schema {
    pub version: u32,
    pub migrate: fn(u32, &str, serde_json::Value) -> Result<serde_json::Value>,
}

/// Finds a plugin's [`StateSchema`] where the plugin may or may not have one: the attributes
/// expand separately, so the one that exports the component cannot know whether a `#[state]`
/// item exists. Method lookup on `&Probe<P>` takes [`Declared`] when `P` implements
/// `StateSchema` and falls back to [`Undeclared`] (one auto-ref further) when not; it works on a
/// concrete `P`, which is what the attributes have. See [`crate::__schema`].
pub struct Probe<P>(std::marker::PhantomData<P>);

impl<P> Probe<P> {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Probe(std::marker::PhantomData)
    }
}

pub trait Declared {
    fn schema(&self) -> Option<Schema>;
}

impl<P: StateSchema> Declared for Probe<P> {
    fn schema(&self) -> Option<Schema> {
        Some(Schema {
            version: P::VERSION,
            migrate: P::migrate,
        })
    }
}

pub trait Undeclared {
    fn schema(&self) -> Option<Schema>;
}

impl<P> Undeclared for &Probe<P> {
    fn schema(&self) -> Option<Schema> {
        None
    }
}

/// The `#[state]` declaration of plugin type `$p` (a concrete type), if it has one.
#[doc(hidden)]
#[macro_export]
macro_rules! __schema {
    ($p:ty) => {{
        #[allow(unused_imports)]
        use $crate::__rt::{Declared as _, Undeclared as _};
        (&$crate::__rt::Probe::<$p>::new()).schema()
    }};
}

/// Run a plugin's migration on stored bytes: state values (and accumulators) are JSON.
pub fn migrate_bytes(
    schema: Option<Schema>,
    from: u32,
    name: &str,
    value: &[u8],
) -> Result<Vec<u8>, String> {
    let Some(schema) = schema else {
        return Err(format!(
            "the plugin declares no #[state(version = …)], so it cannot migrate `{name}` from \
             version {from}"
        ));
    };
    let old: serde_json::Value = serde_json::from_slice(value)
        .map_err(|e| format!("`{name}` of state version {from} is not JSON: {e}"))?;
    let new = (schema.migrate)(from, name, old).map_err(|e| e.to_string())?;
    serde_json::to_vec(&new).map_err(|e| format!("migrated `{name}` does not encode: {e}"))
}

/// A `#[window]` aggregation.
pub trait WindowPlugin: Plugin {
    type Agg: Aggregate<Config = Self::Config>;
}

/// Run a filter over a batch: one verdict per record, errors as text.
pub fn filter_batch<P: FilterPlugin, R: std::borrow::Borrow<Record>>(
    cfg: &P::Config,
    records: impl Iterator<Item = R>,
) -> Vec<Result<bool, String>> {
    records
        .enumerate()
        .map(|(i, rec)| {
            P::filter(rec.borrow(), cfg, &State::__for_record(i as u32)).map_err(|e| e.to_string())
        })
        .collect()
}

/// Run a transform over a batch: one list of outputs per record, errors as text.
pub fn transform_batch<P: TransformPlugin>(
    cfg: &P::Config,
    records: impl Iterator<Item = Record>,
) -> Vec<Result<Vec<Record>, String>> {
    records
        .enumerate()
        .map(|(i, rec)| {
            P::transform(rec, cfg, &State::__for_record(i as u32)).map_err(|e| e.to_string())
        })
        .collect()
}

/// Records that failed, by index in their batch, with why.
pub type RecordErrors = Vec<(u32, String)>;

/// Fold a pane's records into its accumulator; failed records are reported by index.
pub fn accumulate<A: Aggregate>(
    cfg: &A::Config,
    window: &Window,
    acc: Option<&[u8]>,
    records: impl Iterator<Item = Record>,
) -> Result<(Vec<u8>, RecordErrors), String> {
    let mut state = match acc {
        Some(bytes) => decode_acc::<A>(bytes)?,
        None => A::create(window, cfg),
    };
    let mut errors = Vec::new();
    for (i, rec) in records.enumerate() {
        if let Err(e) = A::add(&mut state, &rec, cfg) {
            errors.push((i as u32, e.to_string()));
        }
    }
    Ok((encode_acc::<A>(&state)?, errors))
}

/// Merge two encoded accumulators of one key.
pub fn merge<A: Aggregate>(
    cfg: &A::Config,
    window: &Window,
    a: &[u8],
    b: &[u8],
) -> Result<Vec<u8>, String> {
    let merged = A::merge(decode_acc::<A>(a)?, decode_acc::<A>(b)?, window, cfg);
    encode_acc::<A>(&merged)
}

/// Render one fired window.
pub fn emit<A: Aggregate>(
    cfg: &A::Config,
    window: &Window,
    acc: &[u8],
) -> Result<Vec<Record>, String> {
    let acc = decode_acc::<A>(acc)?;
    let mut records = A::emit(window, &acc, cfg)
        .map(IntoRecords::into_records)
        .map_err(|e| e.to_string())?;
    // A window's result belongs to the window's key and, as in Flink, to its last instant,
    // unless the plugin says otherwise.
    for rec in &mut records {
        if rec.key.is_none() {
            rec.key.clone_from(&window.key);
        }
        if rec.timestamp == 0 {
            rec.timestamp = window.end - 1;
        }
    }
    Ok(records)
}

fn decode_acc<A: Aggregate>(bytes: &[u8]) -> Result<A::Acc, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("stored accumulator does not decode: {e}"))
}

fn encode_acc<A: Aggregate>(acc: &A::Acc) -> Result<Vec<u8>, String> {
    serde_json::to_vec(acc).map_err(|e| format!("accumulator does not encode: {e}"))
}
