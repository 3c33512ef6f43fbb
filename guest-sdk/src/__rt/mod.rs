//! The machinery behind the attributes: not part of the API, may change at any time.
//!
//! An attribute turns the user's item into a hidden `__WeirPlugin` type that implements
//! [`Plugin`] and the trait of its kind ([`FilterPlugin`], [`TransformPlugin`] or
//! [`WindowPlugin`]), and, in wasm32, registers it: the component's exports are this module's
//! generic `component::Component` for that type. What each kind makes of a call is ordinary
//! code, one module per kind ([`filter`], [`transform`], [`window`]), which native tests build
//! and run; only the bindings (`wit`) and the few lines that tie them to the host's imports and
//! to those modules (`component`) are wasm32 only.
//!
//! Host calls go through [`HostApi`]: the wasm imports in a component, an in-memory host under
//! [`crate::testing::Harness`].

use std::{any::Any, cell::RefCell, rc::Rc};

use serde::de::DeserializeOwned;

use crate::log::Level;

pub mod filter;
pub mod transform;
pub mod window;

#[cfg(target_arch = "wasm32")]
pub mod component;
#[cfg(target_arch = "wasm32")]
pub mod wit;

pub use crate::record::IntoRecords;
pub use filter::FilterPlugin;
pub use transform::TransformPlugin;
pub use window::{RecordErrors, WindowPlugin};

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
    /// A row of a table the stage is granted. Only native hosts are asked: a component calls
    /// the host's `tables` import itself, so it imports it only if it reads tables.
    #[cfg(not(target_arch = "wasm32"))]
    fn table_get(&self, _rec: u32, _table: &str, _key: &[u8]) -> Option<Vec<u8>> {
        None
    }
    /// Only components ask the host: natively the SDK computes digests itself.
    #[cfg(target_arch = "wasm32")]
    fn sha256(&self, data: &[u8]) -> [u8; 32];
}

thread_local! {
    static HOST: RefCell<Option<Rc<dyn HostApi>>> = const { RefCell::new(None) };
    /// The plugin's configuration, once [`init`] has loaded it: a `P::Config`, which the calls
    /// that follow take back by type (a component holds one plugin, so one type).
    static LOADED: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
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

/// A component's `init`: install `host`, then load the plugin's configuration from it and keep
/// it for the calls that follow. A config the plugin rejects is the error, and every later call
/// fails its records with [`UNINITIALISED`].
pub fn init<P: Plugin>(host: Rc<dyn HostApi>) -> Result<(), String> {
    set_host(Some(host));
    let cfg = load_config::<P::Config>()?;
    LOADED.with(|l| *l.borrow_mut() = Some(Box::new(cfg)));
    Ok(())
}

/// `run` with the configuration [`init`] loaded, or what `missing` makes if it has not
/// succeeded.
pub(crate) fn configured<P: Plugin, R>(
    run: impl FnOnce(&P::Config) -> R,
    missing: impl FnOnce() -> R,
) -> R {
    LOADED.with(|l| {
        match l
            .borrow()
            .as_ref()
            .and_then(|c| c.downcast_ref::<P::Config>())
        {
            Some(cfg) => run(cfg),
            None => missing(),
        }
    })
}

/// Any plugin: what its configuration is.
pub trait Plugin {
    type Config: DeserializeOwned + 'static;
    /// Whether it takes a `&State`: only then can a call fail for a value it reads, and the
    /// test harness must keep a batch's records to replay them one by one.
    const KEEPS_STATE: bool = false;

    /// Its `#[state]` declaration, if it has one. The attributes fill this in with
    /// [`crate::__schema`], where the plugin type is known.
    fn schema() -> Option<Schema> {
        None
    }
}

/// A component's `state-version` export.
pub fn state_version<P: Plugin>() -> u32 {
    P::schema().map_or(0, |s| s.version)
}

/// A component's `migrate-state` export.
pub fn migrate_state<P: Plugin>(
    written_by: u32,
    name: &str,
    value: &[u8],
) -> Result<Vec<u8>, String> {
    migrate_bytes(P::schema(), written_by, name, value)
}

/// A `#[state(version = N)]` declaration: the shape of the state this build writes, and how to
/// bring older values up to date.
pub trait StateSchema {
    const VERSION: u32;
    fn migrate(from: u32, name: &str, old: serde_json::Value) -> crate::Result<serde_json::Value>;
}

/// A plugin's [`StateSchema`], if it declares one, as plain data.
#[derive(Clone, Copy)]
pub struct Schema {
    pub version: u32,
    pub migrate: fn(u32, &str, serde_json::Value) -> crate::Result<serde_json::Value>,
}

/// Finds a plugin's [`StateSchema`] where the plugin may or may not have one: the attributes
/// expand separately, so the one that defines the plugin cannot know whether a `#[state]` item
/// exists. Method lookup on `&Probe<P>` takes [`Declared`] when `P` implements `StateSchema`
/// and falls back to [`Undeclared`] (one auto-ref further) when not; it works on a concrete
/// `P`, which is what the attributes have. See [`crate::__schema`].
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

/// Every one of `n` records failed with [`UNINITIALISED`].
fn uninitialised(n: usize) -> Vec<(u32, String)> {
    (0..n as u32)
        .map(|i| (i, UNINITIALISED.to_string()))
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    //! A host for the exports' entry points natively: a config and a log.

    use super::*;

    pub struct ConfigHost(pub &'static str);

    impl HostApi for ConfigHost {
        fn config(&self) -> String {
            self.0.to_string()
        }
        fn log(&self, _: Level, _: &str) {}
        fn state_get(&self, _: u32, _: &str) -> Option<Vec<u8>> {
            None
        }
        fn state_put(&self, _: u32, _: &str, _: &[u8], _: Option<u64>) -> Result<(), String> {
            Err("no state here".into())
        }
        fn state_delete(&self, _: u32, _: &str) {}
        fn state_scan(&self, _: u32, _: &str) -> Vec<(String, Vec<u8>)> {
            Vec::new()
        }
    }

    /// Forget the loaded config and host, as a fresh instance has none.
    pub fn reset() {
        LOADED.with(|l| *l.borrow_mut() = None);
        set_host(None);
    }

    #[derive(serde::Deserialize)]
    struct Min {
        min: u32,
    }

    struct Plain;
    impl Plugin for Plain {
        type Config = Min;
    }

    struct Versioned;
    impl Plugin for Versioned {
        type Config = NoConfig;
        fn schema() -> Option<Schema> {
            Some(Schema {
                version: 3,
                migrate: |from, name, old| Ok(serde_json::json!([from, name, old])),
            })
        }
    }

    #[test]
    fn init_keeps_the_config_for_the_calls_that_follow() {
        reset();
        let read = || configured::<Plain, _>(|c| Some(c.min), || None);
        assert_eq!(read(), None);
        let err = init::<Plain>(Rc::new(ConfigHost(r#"{"max": 1}"#))).unwrap_err();
        assert!(
            err.starts_with("invalid plugin config: missing field `min`"),
            "{err}"
        );
        assert_eq!(read(), None);
        init::<Plain>(Rc::new(ConfigHost(r#"{"min": 4}"#))).unwrap();
        assert_eq!(read(), Some(4));
        // Another plugin type does not see it as its own.
        assert!(configured::<Versioned, _>(|_| false, || true));
        reset();
    }

    #[test]
    fn versioned_state_exports() {
        assert_eq!(state_version::<Plain>(), 0);
        assert_eq!(state_version::<Versioned>(), 3);
        let err = migrate_state::<Plain>(0, "n", b"1").unwrap_err();
        assert!(err.contains("declares no #[state"), "{err}");
        let new = migrate_state::<Versioned>(1, "n", b"{\"a\":2}").unwrap();
        assert_eq!(new, br#"[1,"n",{"a":2}]"#);
        assert!(migrate_state::<Versioned>(1, "n", b"nope").is_err());
    }
}
