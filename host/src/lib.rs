//! weir: a Kafka stream processor whose stages are WebAssembly plugins.
//!
//! The modules, from the bottom layer up (each uses only those before it):
//!
//! - [`Error`] (`error.rs`): the one error every layer returns, and [`ErrorKind`], what a
//!   record's failure is (what dead letters name).
//! - [`config`]: pipeline files to checked settings, every section's.
//! - [`metrics`]: what a run counts and measures, and how it is reported (Prometheus text, the
//!   status JSON).
//! - [`engine`]: wasmtime: loading plugin components, calling them in a sandbox within limits,
//!   the batch wire format, the host side of state.
//! - [`state`]: keyed state in an embedded store, per stage and source partition.
//! - [`table`]: tables kept from topics (`[[table]]`): their rows in the store, how a topic's
//!   records change them, and what a stage may read.
//! - [`chain`]: a pipeline's stages in order, records run through them in batches; its
//!   [`window`](chain::window) stages aggregate in event time.
//! - [`jsonl`]: records as JSON lines, and a chain run over a file of them (`weir test`).
//! - [`reload`]: hot reload: new plugin builds and pipeline changes swapped into running chains.
//! - [`kafka`]: the Kafka clients: source, sink, transactions, admin, changelogs, the log reader.
//! - [`postgres`]: change data capture: a database's committed changes, through logical
//!   replication, as Debezium change events.
//! - [`runtime`]: `weir run`: poller, workers, delivery, error policy, checkpoints, rebalances,
//!   and the tables' readers.
//! - [`admin`]: the admin server of a run: `/metrics`, `/api/status`, the dashboard, probes.

pub mod admin;
pub mod chain;
pub mod config;
pub mod engine;
mod error;
pub mod jsonl;
pub mod kafka;
pub mod metrics;
pub mod postgres;
pub mod reload;
pub mod runtime;
pub mod state;
pub mod table;

pub use error::{Error, ErrorKind, RecordError, Result};
