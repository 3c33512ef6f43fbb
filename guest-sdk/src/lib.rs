//! Write weir plugins as plain Rust functions.
//!
//! A plugin is one function with an attribute that says what kind of stage it is:
//!
//! ```
//! use weir_sdk::prelude::*;
//!
//! #[derive(Deserialize)]
//! struct Config { min: f64 }
//!
//! #[derive(Deserialize)]
//! struct Order { amount: f64 }
//!
//! #[filter]
//! fn big_orders(rec: &Record, cfg: &Config) -> Result<bool> {
//!     let order: Order = rec.json()?;
//!     Ok(order.amount > cfg.min)
//! }
//! ```
//!
//! - `#[filter]`: `fn(&Record, [&Config], [&State]) -> Result<bool>` keeps or drops a record.
//! - `#[transform]`: `fn(&Record, [&Config], [&State]) -> Result<R>` where `R` is a [`Record`],
//!   an `Option<Record>` or a `Vec<Record>`: map and flat-map. Taking `rec: Record` by value
//!   instead lets a transform change the record and return it without copying its key and
//!   headers.
//! - `#[window]` on an `impl Aggregate for T` block: event-time aggregation (see [`Aggregate`]).
//! - `#[state(version = N)]`, beside one of those, on a function that brings state an older
//!   build wrote up to date, when a new build changes the shape of what it stores:
//!
//! ```
//! use weir_sdk::prelude::*;
//!
//! #[transform]
//! fn count(rec: &Record, state: &State) -> Result<Record> {
//!     let mut seen: Value = state.get("seen")?.unwrap_or(json!({ "count": 0 }));
//!     seen["count"] = json!(seen["count"].as_u64().unwrap_or(0) + 1);
//!     state.put("seen", &seen)?;
//!     rec.clone().with_json(&seen)
//! }
//!
//! /// The first build (state version 0, as every plugin without `#[state]`) stored `{"n": …}`;
//! /// this one calls it `count`. The host runs this on each value an older build wrote, before
//! /// this build reads it.
//! #[state(version = 1)]
//! fn migrate(from: u32, old: Value) -> Result<Value> {
//!     match old.get("n") {
//!         Some(n) => Ok(json!({ "count": n })),
//!         None => fail!("state version {from} without `n`: {old}"),
//!     }
//! }
//! ```
//!
//! The configuration type is any `serde::Deserialize` type; it is parsed once when the plugin is
//! loaded, so a bad config is rejected before the first record. Compiled for `wasm32`, the
//! attribute exports the plugin as a component of its kind's world; compiled natively, the same
//! plugin runs under [`testing::Harness`] in plain `cargo test`.

// The component bindings (`__rt::wit`) name this crate's types by the paths a plugin crate
// uses, which then resolve here too.
extern crate self as weir_sdk;

#[doc(hidden)]
pub mod batch;
pub mod digest;
mod error;
pub mod json;
mod mem;
mod record;
mod state;
pub mod tables;
mod window;

#[doc(hidden)]
pub mod __rt;
pub mod log;
pub mod testing;

pub use error::{Error, Result};
pub use json::JsonDoc;
pub use record::Record;
pub use state::State;
pub use tables::Tables;
pub use weir_sdk_macros::{filter, state, transform, window};
pub use window::{Aggregate, Window};

#[doc(hidden)]
pub use serde_json as __serde_json;
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// Everything a plugin usually needs, in one `use`.
pub mod prelude {
    pub use crate::{
        debug, error, fail, filter, info, state, transform, warn, window, Aggregate, Error,
        JsonDoc, Record, Result, State, Tables, Window,
    };
    pub use serde::{Deserialize, Serialize};
    pub use serde_json::{json, Value};
}
