//! A plugin's component (wasm32 only): its exports, which hand each call to the module of its
//! kind, and the host's imports behind [`HostApi`].

use std::{marker::PhantomData, rc::Rc};

use super::{
    filter::FilterPlugin,
    transform::TransformPlugin,
    window::{Output, Pane, PaneResult, WindowPlugin},
    wit, HostApi, Plugin,
};
use crate::{
    batch::{Batch, OutBatch, Verdicts},
    log::Level,
    Window,
};

/// The component of plugin `P`; `S` is how it reaches state: [`WithState`] for a plugin that
/// takes a `&State`, else [`NoState`], whose stubs never call the state imports, so the
/// component does not import them and the host knows the stage needs no store.
pub struct Component<P, S>(PhantomData<(P, S)>);

impl<P: FilterPlugin, S: StateAccess> wit::filter::Guest for Component<P, S> {
    fn init() -> Result<(), String> {
        start::<P, S>()
    }

    fn filter(batch: Batch) -> Verdicts {
        super::filter::call::<P>(&batch)
    }
}

impl<P: TransformPlugin, S: StateAccess> wit::transform::Guest for Component<P, S> {
    fn init() -> Result<(), String> {
        start::<P, S>()
    }

    fn transform(batch: Batch) -> OutBatch {
        super::transform::call::<P>(&batch)
    }
}

/// Window plugins keep their state in the accumulator: their world has no state imports.
impl<P: WindowPlugin> wit::window::Guest for Component<P, NoState> {
    fn init() -> Result<(), String> {
        start::<P, NoState>()
    }

    fn accumulate(panes: Vec<Pane>) -> Vec<Result<PaneResult, String>> {
        super::window::call_accumulate::<P>(panes)
    }

    fn merge(window: Window, a: Vec<u8>, b: Vec<u8>) -> Result<Vec<u8>, String> {
        super::window::call_merge::<P>(window, a, b)
    }

    fn emit(fired: Vec<(Window, Vec<u8>)>) -> Vec<Result<Vec<Output>, String>> {
        super::window::call_emit::<P>(fired)
    }
}

impl<P: Plugin, S> wit::versioned::Guest for Component<P, S> {
    fn state_version() -> u32 {
        super::state_version::<P>()
    }

    fn migrate_state(written_by: u32, name: String, value: Vec<u8>) -> Result<Vec<u8>, String> {
        super::migrate_state::<P>(written_by, &name, &value)
    }
}

fn start<P: Plugin, S: StateAccess>() -> Result<(), String> {
    super::install_panic_hook();
    super::init::<P>(Rc::new(Host::<S>(PhantomData)))
}

/// The host's imports.
struct Host<S>(PhantomData<S>);

impl<S: StateAccess> HostApi for Host<S> {
    fn config(&self) -> String {
        wit::host::config()
    }

    fn log(&self, level: Level, message: &str) {
        use wit::types::Level as L;
        let level = match level {
            Level::Trace => L::Trace,
            Level::Debug => L::Debug,
            Level::Info => L::Info,
            Level::Warn => L::Warn,
            Level::Error => L::Error,
        };
        wit::host::log(level, message)
    }

    fn sha256(&self, data: &[u8]) -> [u8; 32] {
        let (a, b, c, d) = wit::digest::sha256(data);
        let mut digest = [0u8; 32];
        for (chunk, word) in digest.chunks_exact_mut(8).zip([a, b, c, d]) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        digest
    }

    fn state_get(&self, rec: u32, name: &str) -> Option<Vec<u8>> {
        S::get(rec, name)
    }

    fn state_put(
        &self,
        rec: u32,
        name: &str,
        value: &[u8],
        ttl_ms: Option<u64>,
    ) -> Result<(), String> {
        S::put(rec, name, value, ttl_ms)
    }

    fn state_delete(&self, rec: u32, name: &str) {
        S::delete(rec, name)
    }

    fn state_scan(&self, rec: u32, prefix: &str) -> Vec<(String, Vec<u8>)> {
        S::scan(rec, prefix)
    }
}

/// How a component reaches keyed state.
pub trait StateAccess: 'static {
    fn get(rec: u32, name: &str) -> Option<Vec<u8>>;
    fn put(rec: u32, name: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), String>;
    fn delete(rec: u32, name: &str);
    fn scan(rec: u32, prefix: &str) -> Vec<(String, Vec<u8>)>;
}

/// Through the host's `state` imports.
pub struct WithState;

impl StateAccess for WithState {
    fn get(rec: u32, name: &str) -> Option<Vec<u8>> {
        wit::state::get(rec, name)
    }

    fn put(rec: u32, name: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), String> {
        wit::state::put(rec, name, value, ttl_ms)
    }

    fn delete(rec: u32, name: &str) {
        wit::state::delete(rec, name)
    }

    fn scan(rec: u32, prefix: &str) -> Vec<(String, Vec<u8>)> {
        wit::state::scan(rec, prefix)
    }
}

/// Not at all: the plugin has no `&State` to ask with.
pub struct NoState;

impl StateAccess for NoState {
    fn get(_: u32, _: &str) -> Option<Vec<u8>> {
        None
    }

    fn put(_: u32, _: &str, _: &[u8], _: Option<u64>) -> Result<(), String> {
        Err(
            "this plugin declares no `&State` parameter; window plugins keep their state in \
             the accumulator"
                .to_string(),
        )
    }

    fn delete(_: u32, _: &str) {}

    fn scan(_: u32, _: &str) -> Vec<(String, Vec<u8>)> {
        Vec::new()
    }
}
