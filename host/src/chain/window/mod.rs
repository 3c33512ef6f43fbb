//! Event-time windows: the host half of a window stage.
//!
//! The semantics are Apache Flink's. Each record gets an event time (a field of its value or its
//! Kafka timestamp) and is assigned, by key, to tumbling, sliding or session windows `[start,
//! end)`. Every partition's watermark trails the largest event time it has seen by
//! `max_out_of_order` (minus one millisecond, as in Flink); the stage's watermark is the minimum
//! over its partitions, leaving out those idle for `idle_timeout`, and never goes back. A window
//! fires when the watermark reaches `end - 1`. Its accumulator stays until the watermark passes
//! `end - 1 + allowed_lateness`: a record arriving in that time updates it and the window fires
//! again; a record later than that for all its windows goes to the stage's late output.
//!
//! The plugin only folds records into accumulators, merges them (sessions) and renders fired
//! windows. Accumulators live in the stage's keyed state (one entry per key and window, named
//! after the window's bounds, with a "has fired" flag), so they are checkpointed, changelogged
//! and restored like any other state; the timers are rebuilt from the entries. Each partition also
//! keeps its progress in event time there, so after a restart or a move it joins the stage's
//! watermark where it left off (Flink's watermarks start over instead).
//!
//! Watermarks advance per batch, like Flink's periodic watermarks: a batch's records are judged
//! late against the watermark from before the batch, and windows fire after it.
//!
//! - [`assign`]: which windows a record belongs to (and session merging), and its event time;
//! - [`clock`]: the stage's watermark over all partitions;
//! - [`timers`]: when each window fires and is removed;
//! - [`store`]: windows as state entries;
//! - [`aggregator`]: the plugin side (fold, merge, render);
//! - [`stage`]: a window stage, which puts them together.

mod aggregator;
mod assign;
mod clock;
mod stage;
mod store;
mod timers;

pub use aggregator::Aggregator;
pub(crate) use assign::event_time;
pub use clock::{resume, Clock};
pub use stage::WindowStage;
pub(crate) use store::{read_i64, write_i64};

use crate::engine::{Record, RecordError};

/// A record too late for all its windows, and the stage it was late for.
#[derive(Debug)]
pub struct Late {
    pub record: Record,
    /// The stage's watermark when the record came.
    pub watermark: i64,
}

/// What a window stage's call turned into.
#[derive(Debug, Default)]
pub struct WindowOutput {
    /// Results of fired windows.
    pub records: Vec<Record>,
    /// Records whose event time could not be read or that the plugin failed on, and fired
    /// windows the plugin could not render (as a record holding the window's key and accumulator,
    /// with offset -1: it stands for no single input).
    pub failures: Vec<(Record, RecordError)>,
    pub late: Vec<Late>,
    /// A join stage changed its state (took records in, let records go) though it may have
    /// nothing to show for it: under exactly once, that is still something to commit.
    pub changed: bool,
    /// Records for a topic of their own (a join's unpaired records), with the topic.
    pub routed: Vec<(String, Record)>,
}

impl WindowOutput {
    pub fn extend(&mut self, other: WindowOutput) {
        self.records.extend(other.records);
        self.failures.extend(other.failures);
        self.late.extend(other.late);
        self.changed |= other.changed;
        self.routed.extend(other.routed);
    }
}

/// Something that says whether the outputs of a call reached the sink: at least once, a fired
/// window's entry is marked fired or removed only then, so a crash before that fires it again
/// rather than losing it.
pub trait Delivered: Send + Sync {
    fn delivered(&self) -> bool;
}

#[cfg(test)]
mod tests;
