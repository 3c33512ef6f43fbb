//! Loads plugin components and calls them, inside a sandbox with bounded time and memory.
//!
//! A [`Plugin`] is a compiled, type-checked, pre-linked component: loading validates the file,
//! finds which world it implements and checks its imports, so a bad file fails here and never
//! on the data path. An [`Instance`] is one live copy with its own linear memory and config,
//! owned by one stage of one partition task (instances are not thread-safe; pre-linking makes
//! new ones cheap). Plugins get no WASI at all: only the weir `host` and `state` imports.
//!
//! Every call runs under an epoch deadline (a background thread ticks the engine's epoch) and a
//! memory limit. A trap or a blown limit poisons the instance: it is dropped, a fresh one is made,
//! and the batch is replayed record by record to pin the failure on the record that caused it.

mod bindings;
mod cache;
mod host;
mod needs;
mod record;
mod wasi;
mod wire;

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use sha2::{Digest, Sha256};
use wasmtime::{
    component::{types::ComponentItem, Component, Linker},
    Store,
};

pub use bindings::types::{KeyedWindow, Level, Output, Pane, PaneResult};
use bindings::{filter, transform, versioned, window};
pub(crate) use host::describe_key;
use host::HostState;
pub use host::{
    Entry, MemoryState, NoTables, SharedState, SharedTables, StateBackend, StateKey, TableLookup,
};
pub use needs::{stamp, Needs, NEED_NAMES, STAMP_SECTION};
pub use record::{Header, Record};

/// What kind of stage a plugin is, from the world its component implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Filter,
    Transform,
    Window,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Filter => "filter",
            Kind::Transform => "transform",
            Kind::Window => "window",
        })
    }
}

pub use crate::config::Limits;
use crate::error::Error;

pub use crate::error::{ErrorKind, RecordError};

/// The wasmtime engine with weir's sandbox settings, a linker of the host imports and the
/// on-disk cache of compiled components.
pub struct Engine {
    engine: wasmtime::Engine,
    linker: Linker<HostState>,
    cache: Option<PathBuf>,
}

/// How often the epoch advances: the granularity of call timeouts.
const TICK: Duration = Duration::from_millis(5);

impl Engine {
    /// An engine that caches compiled components in `cache_dir` (none: compile every time).
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Self, Error> {
        let mut config = wasmtime::Config::new();
        // Epochs rather than fuel: a deadline check costs a load and compare at loop heads and
        // calls, fuel metering costs an add on every block.
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        // `WEIR_PERFMAP=1` names plugin code for `perf` (in /tmp/perf-PID.map), to profile it.
        if std::env::var_os("WEIR_PERFMAP").is_some_and(|v| v == "1") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = wasmtime::Engine::new(&config).map_err(Error::Engine)?;

        let mut linker = Linker::new(&engine);
        bindings::host::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )
        .map_err(Error::Engine)?;
        bindings::digest::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )
        .map_err(Error::Engine)?;
        bindings::state::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )
        .map_err(Error::Engine)?;
        bindings::tables::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )
        .map_err(Error::Engine)?;
        wasi::add_to_linker(&mut linker).map_err(Error::Engine)?;

        // The ticker holds the engine weakly: it runs while any plugin or instance still holds
        // the engine (they outlive this wrapper) and stops once the last one is gone.
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("weir-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            })
            .map_err(|e| Error::Engine(e.into()))?;

        Ok(Engine {
            engine,
            linker,
            cache: cache_dir,
        })
    }

    /// The default cache directory: `$WEIR_CACHE_DIR`, else `~/.cache/weir/components`.
    pub fn default_cache_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("WEIR_CACHE_DIR") {
            return Some(PathBuf::from(dir));
        }
        let home = std::env::var_os("HOME")?;
        Some(Path::new(&home).join(".cache/weir/components"))
    }

    /// Load the component at `path` as the plugin called `name`.
    pub fn load(&self, name: &str, path: &Path) -> Result<Plugin, Error> {
        let bytes = std::fs::read(path).map_err(|cause| Error::ReadPlugin {
            plugin: name.to_string(),
            path: path.to_path_buf(),
            cause,
        })?;
        self.load_bytes(name, path, &bytes)
    }

    /// Load a component from memory; `path` is only used in messages.
    pub fn load_bytes(&self, name: &str, path: &Path, bytes: &[u8]) -> Result<Plugin, Error> {
        let invalid = |reason: String| Error::InvalidPlugin {
            plugin: name.to_string(),
            path: path.to_path_buf(),
            reason,
        };
        if bytes.is_empty() {
            return Err(invalid(
                "it is an empty file (a build or copy that did not finish?)".into(),
            ));
        }
        if wasmparser::Parser::is_core_wasm(bytes) {
            return Err(invalid(
                "it is a core wasm module, not a component (build it with `weir build`, which \
                 turns the module into a component)"
                    .into(),
            ));
        }
        if !wasmparser::Parser::is_component(bytes) {
            return Err(invalid(
                "it does not start with the wasm component header".into(),
            ));
        }
        let hash = hex::encode(Sha256::digest(bytes));
        let component = cache::compile(&self.engine, self.cache.as_deref(), &hash, bytes)
            .map_err(|e| invalid(format!("{e:#}")))?;
        let wrong_world = |reason: String| Error::WrongWorld {
            plugin: name.to_string(),
            reason,
        };
        let kind = detect_kind(&self.engine, &component).map_err(wrong_world)?;
        let ty = component.component_type();
        let imports: Vec<String> = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let names: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let uses_state = imports.iter().any(|n| n.starts_with("weir:plugin/state@"));
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| wrong_world(format!("cannot be linked: {e:#}")))?;
        let check = |e: wasmtime::Error| {
            wrong_world(format!(
                "does not match the weir:plugin/{kind} world: {e:#}"
            ))
        };
        let exports = match kind {
            Kind::Filter => {
                KindIndices::Filter(filter::FilterIndices::new(&instance_pre).map_err(check)?)
            }
            Kind::Transform => KindIndices::Transform(
                transform::TransformIndices::new(&instance_pre).map_err(check)?,
            ),
            Kind::Window => {
                KindIndices::Window(window::WindowIndices::new(&instance_pre).map_err(check)?)
            }
        };
        // Optional: plugins built before state versions existed, or whose state never changed
        // shape, do not export them.
        let versioned = versioned::VersionedStateIndices::new(&instance_pre).ok();
        let pre = Pre {
            instance_pre,
            exports,
            versioned,
        };
        Ok(Plugin {
            name: name.to_string(),
            path: path.to_path_buf(),
            hash,
            kind,
            uses_state,
            interface: Arc::new((imports, names)),
            needs: Needs::of(bytes),
            pre: Arc::new(pre),
            engine: self.engine.clone(),
        })
    }
}

/// The version of the WIT contract this host speaks; plugins import its interfaces.
pub const CONTRACT: &str = "weir:plugin@0.2.0";

/// Which world a component implements, from its exports; and no imports beyond weir's own.
fn detect_kind(engine: &wasmtime::Engine, component: &Component) -> Result<Kind, String> {
    let ty = component.component_type();
    let version = CONTRACT.rsplit('@').next().unwrap_or_default();
    for (name, _) in ty.imports(engine) {
        if let Some((_, theirs)) = name
            .strip_prefix("weir:plugin/")
            .and_then(|n| n.split_once('@'))
        {
            if theirs != version {
                return Err(format!(
                    "was built against weir:plugin@{theirs}, but this weir speaks {CONTRACT}: \
                     rebuild it with this weir's SDK (`weir build`)"
                ));
            }
        }
        let known = [
            "weir:plugin/host@",
            "weir:plugin/digest@",
            "weir:plugin/state@",
            "weir:plugin/tables@",
            "weir:plugin/types@",
            // Linked empty (see `wasi.rs`): what interpreters import.
            "wasi:cli/",
            "wasi:clocks/",
            "wasi:filesystem/",
            "wasi:io/",
            "wasi:random/",
            "wasi:sockets/",
        ];
        if !known.iter().any(|k| name.starts_with(k)) {
            return Err(format!(
                "imports `{name}`, which weir does not provide: plugins get the weir:plugin host, \
                 digest, state and tables interfaces, and WASI 0.2 with no files, network, clock or \
                 environment in it"
            ));
        }
    }
    let exports: Vec<String> = ty
        .exports(engine)
        .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentFunc(_)))
        .map(|(name, _)| name.to_string())
        .collect();
    let has = |f: &str| exports.iter().any(|e| e == f);
    match (has("filter"), has("transform"), has("accumulate")) {
        (true, false, false) => Ok(Kind::Filter),
        (false, true, false) => Ok(Kind::Transform),
        (false, false, true) => Ok(Kind::Window),
        _ => Err(format!(
            "is not a weir plugin: it exports [{}], but a plugin implements exactly one of the \
             {CONTRACT} worlds `filter`, `transform` or `window`",
            exports.join(", ")
        )),
    }
}

/// A pre-linked component and where its exports are.
struct Pre {
    instance_pre: wasmtime::component::InstancePre<HostState>,
    exports: KindIndices,
    versioned: Option<versioned::VersionedStateIndices>,
}

enum KindIndices {
    Filter(filter::FilterIndices),
    Transform(transform::TransformIndices),
    Window(window::WindowIndices),
}

/// A loaded plugin: compiled, checked and pre-linked, ready to instantiate.
#[derive(Clone)]
pub struct Plugin {
    name: String,
    path: PathBuf,
    hash: String,
    kind: Kind,
    /// What the component imports and exports, by name.
    interface: Arc<(Vec<String>, Vec<String>)>,
    needs: Needs,
    uses_state: bool,
    pre: Arc<Pre>,
    engine: wasmtime::Engine,
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("hash", &self.hash)
            .finish()
    }
}

impl Plugin {
    /// The stage name it was loaded as.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Which world it implements.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Whether it imports the state interface at all: a stage whose plugin does not needs no
    /// store or changelog.
    pub fn uses_state(&self) -> bool {
        self.uses_state
    }

    /// The names the component imports (interfaces) and exports (functions, interfaces).
    pub fn interface(&self) -> (&[String], &[String]) {
        (&self.interface.0, &self.interface.1)
    }

    /// What the plugin declared it needs (its build's stamp).
    pub fn needs(&self) -> &Needs {
        &self.needs
    }

    /// Lowercase hex SHA-256 of the component file.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A live instance with `config` (JSON text) that has passed the plugin's `init`.
    pub fn instantiate(
        &self,
        config: &str,
        limits: Limits,
        state: SharedState,
    ) -> Result<Instance, Error> {
        let config: Arc<str> = Arc::from(config);
        let (store, exports, versioned) = self.start(&config, limits, &state)?;
        Ok(Instance {
            plugin: self.clone(),
            config,
            limits,
            state,
            tables: Arc::new(NoTables),
            store,
            exports,
            versioned,
            poisoned: false,
            restarts: 0,
            wire: wire::empty(),
        })
    }

    #[allow(clippy::type_complexity)]
    fn start(
        &self,
        config: &Arc<str>,
        limits: Limits,
        state: &SharedState,
    ) -> Result<(Store<HostState>, Exports, Option<versioned::VersionedState>), Error> {
        let start = |cause: wasmtime::Error| Error::PluginStart {
            plugin: self.name.clone(),
            cause,
        };
        let mut store = Store::new(
            &self.engine,
            HostState::new(self.name.clone(), config.clone(), limits, state.clone()),
        );
        store.data_mut().state_quota = self.needs().state_bytes_per_key;
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(deadline_ticks(limits.call_timeout));
        store.epoch_deadline_trap();
        let instance = self
            .pre
            .instance_pre
            .instantiate(&mut store)
            .map_err(start)?;
        let (exports, init) = match &self.pre.exports {
            KindIndices::Filter(ix) => {
                let b = ix.load(&mut store, &instance).map_err(start)?;
                let init = b.call_init(&mut store);
                (Exports::Filter(b), init)
            }
            KindIndices::Transform(ix) => {
                let b = ix.load(&mut store, &instance).map_err(start)?;
                let init = b.call_init(&mut store);
                (Exports::Transform(b), init)
            }
            KindIndices::Window(ix) => {
                let b = ix.load(&mut store, &instance).map_err(start)?;
                let init = b.call_init(&mut store);
                (Exports::Window(b), init)
            }
        };
        let versioned = match &self.pre.versioned {
            Some(ix) => Some(ix.load(&mut store, &instance).map_err(start)?),
            None => None,
        };
        match init {
            Ok(Ok(())) => {
                if let Some(v) = &versioned {
                    let version = v.call_state_version(&mut store).map_err(|trap| {
                        let (kind, message) = classify(&trap, store.data_mut());
                        Error::PluginInit {
                            plugin: self.name.clone(),
                            message: format!("state-version: {}: {message}", kind.as_str()),
                        }
                    })?;
                    let data = store.data_mut();
                    data.version = version;
                    if version > 0 {
                        data.migrator = Some(Box::new(host::Migrator::new(
                            self.clone(),
                            config.clone(),
                            limits,
                        )));
                    }
                }
                Ok((store, exports, versioned))
            }
            Ok(Err(message)) => Err(Error::PluginInit {
                plugin: self.name.clone(),
                message,
            }),
            Err(trap) => {
                let (kind, message) = classify(&trap, store.data_mut());
                Err(Error::PluginInit {
                    plugin: self.name.clone(),
                    message: format!("{}: {message}", kind.as_str()),
                })
            }
        }
    }
}

fn deadline_ticks(timeout: Duration) -> u64 {
    (timeout.as_millis() / TICK.as_millis()).max(1) as u64 + 1
}

enum Exports {
    Filter(filter::Filter),
    Transform(transform::Transform),
    Window(window::Window),
}

/// The outcome of one input record in one stage: its outputs, or why it failed.
pub type Outcome = Result<Vec<Record>, Box<Failed>>;

/// A record a stage failed on, handed back with the error so nothing is lost.
#[derive(Debug)]
pub struct Failed {
    pub record: Record,
    pub error: RecordError,
}

/// One live plugin instance; owned by one stage of one partition task.
pub struct Instance {
    plugin: Plugin,
    config: Arc<str>,
    limits: Limits,
    state: SharedState,
    tables: SharedTables,
    store: Store<HostState>,
    exports: Exports,
    versioned: Option<versioned::VersionedState>,
    poisoned: bool,
    restarts: u64,
    /// The batch being sent, kept between calls so its buffers are reused.
    wire: wire::Batch,
}

impl fmt::Debug for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instance")
            .field("plugin", &self.plugin)
            .field("restarts", &self.restarts)
            .finish_non_exhaustive()
    }
}

impl Instance {
    /// The plugin this is an instance of.
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    /// Keep state in `state` from the next call on: a worker runs batches of several partitions,
    /// each with state of its own.
    pub fn set_state(&mut self, state: SharedState) {
        self.store.data_mut().set_state(state.clone());
        self.state = state;
    }

    /// Read `tables` from the next call on (the stage's grant; none until this is called).
    pub fn set_tables(&mut self, tables: SharedTables) {
        self.store.data_mut().tables = tables.clone();
        self.tables = tables;
    }

    /// The version of the shape of the state this build writes (see the `versioned-state` WIT
    /// world): 0 unless the plugin says otherwise.
    pub fn state_version(&self) -> u32 {
        self.store.data().version
    }

    /// `value`, written under `name` by a build of state version `from`, in this build's shape:
    /// window stages migrate the accumulators they read; plugins' own state is migrated as
    /// they read it. `Err` means the call trapped.
    pub fn migrate(
        &mut self,
        from: u32,
        name: &str,
        value: &[u8],
    ) -> Result<Result<Vec<u8>, String>, RecordError> {
        if self.versioned.is_none() {
            return Ok(Err(format!(
                "this build (state version {}) exports no migration",
                self.state_version()
            )));
        }
        self.guarded(Arc::default(), |_, versioned, store| {
            let versioned = versioned.expect("checked above");
            versioned.call_migrate_state(store, from, name, value)
        })
    }

    /// Linear memory the instance holds, in bytes (it only grows, until a fresh instance).
    pub fn memory_bytes(&self) -> u64 {
        self.store.data().limiter.bytes as u64
    }

    /// How many times a trap or blown limit made this stage start a fresh instance.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// Run a batch: one outcome per input, in order. A filter passes a kept record through
    /// unchanged; a transform's outputs keep the source coordinates of their input. A record
    /// that fails, by any kind, leaves no state change: the others' stay.
    pub fn process(&mut self, records: Vec<Record>) -> Vec<Outcome> {
        self.run(records, false)
    }

    /// As [`process`](Self::process), but no record after the first that fails is run: those
    /// come back with no outputs and no state change. What `policy = "fail"` needs, since it
    /// stops at that record and reads the ones after it again after a restart.
    pub fn process_until_failure(&mut self, records: Vec<Record>) -> Vec<Outcome> {
        self.run(records, true)
    }

    fn run(&mut self, records: Vec<Record>, until_failure: bool) -> Vec<Outcome> {
        let n = records.len();
        if n == 0 {
            return Vec::new();
        }
        let records = Arc::new(records);
        let outcome = self.call(&records).map(|answer| {
            let checked = wire::check(n, &answer);
            let clean = checked.is_ok() && !answer.has_errors();
            // Settled before the records are taken back, which also ends the host's hold on
            // them: taking them back is then a move, not a copy of the batch.
            let wrote = self.settle(clean);
            (answer, checked, clean || !wrote || n == 1)
        });
        let records = Arc::try_unwrap(records).unwrap_or_else(|shared| (*shared).clone());
        match outcome {
            Ok((answer, checked, true)) => self.finish(records, answer, checked),
            // Some records failed and the call wrote state: which writes were theirs is known
            // only by running each record alone.
            Ok(_) => self.one_by_one(records, until_failure),
            // One record brought the whole call down; its state writes were discarded.
            Err(_) if n > 1 => self.one_by_one(records, until_failure),
            Err(error) => records
                .into_iter()
                .map(|record| {
                    Err(Box::new(Failed {
                        record,
                        error: error.clone(),
                    }))
                })
                .collect(),
        }
    }

    /// Apply the last call's state writes if every record succeeded (`clean`), else drop
    /// them; whether it wrote any.
    fn settle(&mut self, clean: bool) -> bool {
        let host = self.store.data_mut();
        let wrote = host.has_pending();
        if clean {
            host.commit();
        } else {
            host.rollback();
        }
        wrote
    }

    /// Replay `records` one call each (on a fresh instance after a trap), so each record's
    /// failure and state writes are its own.
    fn one_by_one(&mut self, records: Vec<Record>, until_failure: bool) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(records.len());
        let mut stopped = false;
        for record in records {
            if stopped {
                outcomes.push(Ok(Vec::new()));
                continue;
            }
            let outcome = self.run(vec![record], until_failure);
            let outcome = outcome.into_iter().next().expect("one outcome per record");
            stopped = until_failure && outcome.is_err();
            outcomes.push(outcome);
        }
        outcomes
    }

    /// One call into the plugin for the whole batch; its state writes are left pending.
    fn call(&mut self, records: &Arc<Vec<Record>>) -> Result<Answer, RecordError> {
        let mut batch = std::mem::replace(&mut self.wire, wire::empty());
        wire::encode(records, &mut batch);
        let result = self.attempt(records.clone(), |exports, _, store| match exports {
            Exports::Filter(f) => f.call_filter(store, &batch).map(Answer::Filter),
            Exports::Transform(t) => t.call_transform(store, &batch).map(Answer::Transform),
            Exports::Window(_) => Ok(Answer::Unsupported),
        });
        // Kept for the next call, unless a batch of big records left it big.
        if batch.arena.capacity() <= wire::KEEP_ARENA {
            self.wire = batch;
        }
        result
    }

    /// Window plugins: fold each pane's records into its accumulator. `Err` means the call
    /// trapped or blew a limit; the next call runs on a fresh instance.
    pub fn accumulate(
        &mut self,
        panes: &[Pane],
    ) -> Result<Vec<Result<PaneResult, String>>, RecordError> {
        self.guarded(Arc::default(), |exports, _, store| match exports {
            Exports::Window(w) => w.call_accumulate(store, panes),
            _ => Err(wasmtime::Error::msg("not a window plugin")),
        })
    }

    /// Window plugins: merge the accumulators of two sessions of one key.
    pub fn merge(
        &mut self,
        window: &KeyedWindow,
        a: &[u8],
        b: &[u8],
    ) -> Result<Result<Vec<u8>, String>, RecordError> {
        self.guarded(Arc::default(), |exports, _, store| match exports {
            Exports::Window(w) => w.call_merge(store, window, a, b),
            _ => Err(wasmtime::Error::msg("not a window plugin")),
        })
    }

    /// Window plugins: render fired windows, one list of outputs per window.
    pub fn emit(
        &mut self,
        fired: &[(KeyedWindow, Vec<u8>)],
    ) -> Result<Vec<Result<Vec<Output>, String>>, RecordError> {
        self.guarded(Arc::default(), |exports, _, store| match exports {
            Exports::Window(w) => w.call_emit(store, fired),
            _ => Err(wasmtime::Error::msg("not a window plugin")),
        })
    }

    /// Run `call` on a live instance under the time limit; state writes stick only if it
    /// returns, and a trap poisons the instance so the next call starts a fresh one.
    fn guarded<T>(
        &mut self,
        records: Arc<Vec<Record>>,
        call: impl Call<T>,
    ) -> Result<T, RecordError> {
        let value = self.attempt(records, call)?;
        self.store.data_mut().commit();
        Ok(value)
    }

    /// Run `call` as [`guarded`](Self::guarded) does, but leave the state writes of a call that
    /// returned pending: the caller commits or rolls them back once it has read the answer.
    fn attempt<T>(
        &mut self,
        records: Arc<Vec<Record>>,
        call: impl Call<T>,
    ) -> Result<T, RecordError> {
        if self.poisoned {
            self.restart()?;
        }
        self.store.data_mut().begin(records);
        self.store
            .set_epoch_deadline(deadline_ticks(self.limits.call_timeout));
        match call(&self.exports, self.versioned.as_ref(), &mut self.store) {
            Ok(value) => Ok(value),
            Err(trap) => {
                let data = self.store.data_mut();
                data.rollback();
                let (kind, message) = classify(&trap, data);
                self.poisoned = true;
                Err(RecordError {
                    plugin: self.plugin.name.clone(),
                    kind,
                    message,
                })
            }
        }
    }

    fn restart(&mut self) -> Result<(), RecordError> {
        let (store, exports, versioned) = self
            .plugin
            .start(&self.config, self.limits, &self.state)
            .map_err(|e| RecordError {
                plugin: self.plugin.name.clone(),
                kind: ErrorKind::Trap,
                message: format!("could not start a fresh instance after a trap: {e}"),
            })?;
        self.store = store;
        self.store.data_mut().tables = self.tables.clone();
        self.exports = exports;
        self.versioned = versioned;
        self.poisoned = false;
        self.restarts += 1;
        Ok(())
    }

    /// The outcomes of `records` from the plugin's answer, `checked` by [`wire::check`].
    fn finish(
        &self,
        records: Vec<Record>,
        verdicts: Answer,
        checked: Result<(), String>,
    ) -> Vec<Outcome> {
        let failed = |record: Record, message: String| {
            Err(Box::new(Failed {
                record,
                error: RecordError {
                    plugin: self.plugin.name.clone(),
                    kind: ErrorKind::Plugin,
                    message,
                },
            }))
        };
        let n = records.len();
        if let Err(why) = checked {
            let message = format!("returned a malformed batch: {why}");
            return records
                .into_iter()
                .map(|r| failed(r, message.clone()))
                .collect();
        }
        match verdicts {
            Answer::Filter(v) => {
                let mut errors = wire::errors_by_record(n, v.errors);
                records
                    .into_iter()
                    .zip(v.keep)
                    .enumerate()
                    .map(|(i, (rec, keep))| match errors[i].take() {
                        Some(message) => failed(rec, message),
                        None if keep => Ok(vec![rec]),
                        None => Ok(Vec::new()),
                    })
                    .collect()
            }
            Answer::Transform(mut out) => {
                let mut errors = wire::errors_by_record(n, std::mem::take(&mut out.errors));
                // Outputs come in input order (checked): each record's are the next run.
                let mut next = 0;
                records
                    .into_iter()
                    .enumerate()
                    .map(|(i, rec)| {
                        let start = next;
                        while out.outputs.get(next).is_some_and(|o| o.input as usize == i) {
                            next += 1;
                        }
                        match errors[i].take() {
                            Some(message) => failed(rec, message),
                            None => Ok(wire::outputs(&out, rec, &out.outputs[start..next])),
                        }
                    })
                    .collect()
            }
            Answer::Unsupported => records
                .into_iter()
                .map(|r| failed(r, "window plugins run in window stages, which this version of weir cannot run yet".into()))
                .collect(),
        }
    }
}

/// One call into a plugin's exports, as [`Instance::guarded`] runs it.
trait Call<T>:
    FnOnce(&Exports, Option<&versioned::VersionedState>, &mut Store<HostState>) -> wasmtime::Result<T>
{
}

impl<T, F> Call<T> for F where
    F: FnOnce(
        &Exports,
        Option<&versioned::VersionedState>,
        &mut Store<HostState>,
    ) -> wasmtime::Result<T>
{
}

/// What a plugin answered to a batch.
enum Answer {
    Filter(wire::Verdicts),
    Transform(wire::OutBatch),
    Unsupported,
}

impl Answer {
    /// Whether the plugin failed some of the records.
    fn has_errors(&self) -> bool {
        match self {
            Answer::Filter(v) => !v.errors.is_empty(),
            Answer::Transform(out) => !out.errors.is_empty(),
            Answer::Unsupported => true,
        }
    }
}

/// Name a failed call: a blown limit, a timeout, or a trap (with the panic message if the
/// plugin logged one on the way down).
fn classify(err: &wasmtime::Error, host: &mut HostState) -> (ErrorKind, String) {
    if let Some(why) = host.take_migration_failure() {
        return (ErrorKind::Migration, why);
    }
    if let Some(why) = host.take_quota_exceeded() {
        return (ErrorKind::StateQuota, why);
    }
    if let Some(why) = host.take_table_refused() {
        return (ErrorKind::Table, why);
    }
    if let Some(wanted) = host.limiter.take_denied() {
        return (
            ErrorKind::OutOfMemory,
            format!(
                "tried to grow its memory to {} bytes, past the limit of {} bytes",
                wanted, host.limiter.max_bytes
            ),
        );
    }
    let panic = host.take_panic();
    match err.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => (
            ErrorKind::Timeout,
            format!("ran past the call time limit of {:?}", host.call_timeout),
        ),
        Some(trap) => {
            // `trap` reads "wasm trap: …"; a panic's own message says more, so it goes first.
            let message = match panic {
                Some(panic) => format!("{panic} ({trap})"),
                None => trap.to_string(),
            };
            (ErrorKind::Trap, message)
        }
        None => (ErrorKind::Trap, format!("{err:#}")),
    }
}
