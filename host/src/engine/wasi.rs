//! WASI 0.2 for plugins whose toolchain imports it (componentize-py, jco), with nothing in it.
//!
//! Python and JavaScript components carry an interpreter built against WASI, which imports
//! files, clocks, random, sockets and the CLI environment whether the plugin uses them or not.
//! weir links those interfaces so such components load, but grants nothing through them: no
//! arguments, environment, preopened directories or network (opening a file or a socket is an
//! error to the plugin), stdin closed; what it prints goes to weir's log, a line at a time
//! (stdout at info, stderr at warn), tagged with the plugin. The clocks are frozen at the
//! Unix epoch and the random sources are a fixed sequence, so a plugin reads no clock and a
//! record replayed gives the same output (exactly-once replays and `weir test` rely on it).
//! Rust plugins built by `weir build` import none of this.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::{
    async_trait,
    cli::{IsTerminal, StdoutStream},
    p2::{subscribe, OutputStream, Pollable, StreamResult},
    random::Deterministic,
    HostWallClock, WasiCtx, WasiCtxView, WasiView,
};

use super::host::HostState;

/// Link every WASI 0.2 interface into `linker`, with a monotonic clock that never waits.
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    // A guest waits (a sleep, a poll on a timer) inside the host, where the epoch deadline that
    // bounds every call cannot stop it: a `sleep(3600)` would hold its worker for an hour. On a
    // frozen clock no time passes, so every timer is due at once; with no network or files
    // there is nothing else to wait for.
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap("now", |_, (): ()| Ok((FROZEN_INSTANT,)))?;
    clock.func_wrap("resolution", |_, (): ()| Ok((1_000_000_000u64,)))?;
    for name in ["subscribe-instant", "subscribe-duration"] {
        clock.func_wrap(name, |mut store, (_,): (u64,)| {
            let table = &mut store.data_mut().wasi.table;
            let due = table.push(Due)?;
            Ok((subscribe(table, due)?,))
        })?;
    }
    linker.allow_shadowing(false);
    Ok(())
}

/// Where the monotonic clock stands, in nanoseconds: not 0, which Go's runtime takes for a
/// broken clock (it stops at start with "nanotime returning zero").
const FROZEN_INSTANT: u64 = 1_000_000_000;

/// The monotonic clock as wasmtime-wasi links it (components importing an older 0.2 get it).
/// It must be the exact version wasmtime-wasi links: under any other name the frozen clock is
/// only found by components that import that very version, and every other one gets the real
/// clock. Each wasmtime upgrade may move it (wasmtime 46 went from 0.2.6 to 0.2.12).
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// A timer on the frozen clock: due at once.
struct Due;

#[async_trait]
impl Pollable for Due {
    async fn ready(&mut self) {}
}

/// The per-instance WASI state: an empty context and its resource table.
pub(super) struct Wasi {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl Wasi {
    /// The context of an instance of `plugin` (the name its printed lines are logged under).
    pub(super) fn new(plugin: &str) -> Wasi {
        let plugin: Arc<str> = plugin.into();
        let ctx = WasiCtx::builder()
            .stdout(LogStream {
                plugin: plugin.clone(),
                stderr: false,
            })
            .stderr(LogStream {
                plugin,
                stderr: true,
            })
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .wall_clock(Frozen)
            .secure_random(Deterministic::new(SEQUENCE.to_vec()))
            .insecure_random(Deterministic::new(SEQUENCE.to_vec()))
            .insecure_random_seed(0)
            .build();
        Wasi {
            ctx,
            table: ResourceTable::new(),
        }
    }
}

/// What the random sources repeat.
const SEQUENCE: [u8; 8] = [0x77, 0x65, 0x69, 0x72, 0x2d, 0x72, 0x6e, 0x67];

/// A wall clock that never moves from the Unix epoch.
struct Frozen;

impl HostWallClock for Frozen {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

/// A plugin's stdout or stderr: lines to weir's log.
#[derive(Clone)]
struct LogStream {
    plugin: Arc<str>,
    stderr: bool,
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LogLines {
            stream: self.clone(),
            line: Vec::new(),
        })
    }

    /// For WASI 0.3, which weir does not link.
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(tokio::io::empty())
    }
}

/// Longest line logged whole: a longer one is logged in pieces this long.
const MAX_LINE: usize = 4096;

/// Bytes written to a [`LogStream`], logged as each line ends (and what is left when dropped).
struct LogLines {
    stream: LogStream,
    line: Vec<u8>,
}

impl LogLines {
    fn emit(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        let text = text.trim_end_matches(['\n', '\r']);
        let plugin = &*self.stream.plugin;
        if self.stream.stderr {
            tracing::warn!(plugin, "stderr: {text}");
        } else {
            tracing::info!(plugin, "stdout: {text}");
        }
        self.line.clear();
    }
}

impl OutputStream for LogLines {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let mut rest: &[u8] = &bytes;
        while !rest.is_empty() {
            let room = MAX_LINE - self.line.len();
            let end = rest[..rest.len().min(room)]
                .iter()
                .position(|b| *b == b'\n')
                .map_or(rest.len().min(room), |i| i + 1);
            self.line.extend_from_slice(&rest[..end]);
            rest = &rest[end..];
            if self.line.ends_with(b"\n") || self.line.len() == MAX_LINE {
                self.emit();
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[async_trait]
impl Pollable for LogLines {
    async fn ready(&mut self) {}
}

impl Drop for LogLines {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.emit();
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let wasi = &mut self.wasi;
        WasiCtxView {
            ctx: &mut wasi.ctx,
            table: &mut wasi.table,
        }
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::{component::Component, Config, Engine, Store};

    use super::*;
    use crate::engine::{
        host::{MemoryState, SharedState},
        Limits,
    };

    /// What `wasi:clocks/monotonic-clock@VERSION`'s `now` reads in a component linked as plugins
    /// are linked.
    fn now_at(version: &str) -> u64 {
        let component = wat::parse_str(format!(
            r#"(component
                (import "wasi:clocks/monotonic-clock@{version}" (instance $clock
                    (export "now" (func (result u64)))))
                (core func $now (canon lower (func $clock "now")))
                (core module $m
                    (import "" "now" (func $now (result i64)))
                    (func (export "run") (result i64) call $now))
                (core instance $i (instantiate $m (with "" (instance (export "now" (func $now))))))
                (func (export "run") (result u64) (canon lift (core func $i "run"))))"#
        ))
        .unwrap();
        let mut config = Config::new();
        config.wasm_component_model(true);
        let engine = Engine::new(&config).unwrap();
        let component = Component::new(&engine, component).unwrap();
        let mut linker = Linker::new(&engine);
        add_to_linker(&mut linker).unwrap();
        let state: SharedState = MemoryState::shared();
        let host = HostState::new("clock".into(), Arc::from("{}"), Limits::default(), state);
        let mut store = Store::new(&engine, host);
        let instance = linker.instantiate(&mut store, &component).unwrap();
        let run = instance
            .get_typed_func::<(), (u64,)>(&mut store, "run")
            .unwrap();
        run.call(&mut store, ()).unwrap().0
    }

    /// Fails at once, where a plugin would otherwise wait on the real clock, if a wasmtime
    /// upgrade moves the WASI version that `MONOTONIC_CLOCK` must name.
    #[test]
    fn every_wasi_0_2_version_reads_the_frozen_clock() {
        for version in ["0.2.0", "0.2.3", "0.2.6", "0.2.12"] {
            assert_eq!(now_at(version), FROZEN_INSTANT, "monotonic-clock@{version}");
        }
    }
}
