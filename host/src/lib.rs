//! weir: a Kafka stream transformer whose stages are WebAssembly plugins.
//!
//! - [`engine`] loads plugin components and calls them in a sandbox.
//! - [`config`] reads pipeline files.
//! - [`pipeline`] runs records through a chain of stages ([`window`] stages aggregate in
//!   event time); [`local`] feeds it from files.
//! - [`run`] runs a pipeline against Kafka: [`source`] → chain → [`sink`], with offsets
//!   committed behind acknowledged output ([`checkpoint`]) and counted in [`metrics`]; [`demo`]
//!   shows it off against an in-process Kafka cluster.
//! - [`reload`] swaps changed plugins and stage settings into a running pipeline.
//! - [`build`] and [`scaffold`] are the plugin author's tools behind `weir build` and `weir new`.

pub mod build;
pub mod checkpoint;
pub mod committed;
pub mod config;
pub mod demo;
pub mod engine;
pub mod local;
pub mod metrics;
pub mod pipeline;
pub mod reload;
pub mod run;
pub mod scaffold;
pub mod sink;
pub mod source;
pub mod state;
pub mod window;
