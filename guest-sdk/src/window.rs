use serde::{de::DeserializeOwned, Serialize};

use crate::{Record, Result};

/// One window of one key: `[start, end)` in event-time milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    pub key: Option<Vec<u8>>,
    pub start: i64,
    pub end: i64,
}

/// An event-time aggregation, for `#[window] impl Aggregate for MyAgg { … }`.
///
/// The host assigns records to windows (tumbling, sliding or session, from the pipeline), keeps
/// each window's accumulator in its state store and fires windows on the watermark; the plugin
/// only says how to fold a record in, how to merge two accumulators of merging sessions, and
/// what to emit when a window fires. Accumulators are stored as JSON.
pub trait Aggregate {
    /// The plugin's configuration; `weir_sdk::__rt::NoConfig` style types accept none.
    type Config: DeserializeOwned;
    /// The running aggregate of one window.
    type Acc: Serialize + DeserializeOwned;
    /// Output of a fired window: a [`Record`], `Option<Record>` or `Vec<Record>`.
    type Output: crate::__rt::IntoRecords;

    /// A fresh accumulator for a window the key has not seen yet.
    fn create(window: &Window, cfg: &Self::Config) -> Self::Acc;
    /// Fold one record in.
    fn add(acc: &mut Self::Acc, rec: &Record, cfg: &Self::Config) -> Result<()>;
    /// Combine the accumulators of two session windows that came to overlap or touch.
    fn merge(a: Self::Acc, b: Self::Acc, window: &Window, cfg: &Self::Config) -> Self::Acc;
    /// What the window emits when it fires (and again, updated, for late records in time).
    fn emit(window: &Window, acc: &Self::Acc, cfg: &Self::Config) -> Result<Self::Output>;
}
