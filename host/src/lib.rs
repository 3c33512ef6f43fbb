//! weir: a Kafka stream transformer whose stages are WebAssembly plugins.
//!
//! - [`engine`] loads plugin components and calls them in a sandbox.
//! - [`config`] reads pipeline files.
//! - [`pipeline`] runs records through a chain of stages; [`local`] feeds it from files.
//! - [`build`] and [`scaffold`] are the plugin author's tools behind `weir build` and `weir new`.

pub mod build;
pub mod config;
pub mod engine;
pub mod local;
pub mod pipeline;
pub mod scaffold;
