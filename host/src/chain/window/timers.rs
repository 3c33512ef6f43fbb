//! When to look at each window next: at its end - 1 to fire it, at its cleanup time (end - 1 +
//! allowed lateness) to remove it. Rebuilt from the stored windows when a partition is met.

use std::collections::{BTreeSet, HashMap};

use crate::engine::StateKey;

/// When to look at each window next: at its end - 1 to fire it, at its cleanup time to remove it.
#[derive(Default)]
pub(super) struct Timers {
    queue: BTreeSet<(i64, StateKey)>,
    at: HashMap<StateKey, i64>,
}

impl Timers {
    pub(super) fn set(&mut self, at: i64, key: StateKey) {
        if let Some(old) = self.at.insert(key.clone(), at) {
            self.queue.remove(&(old, key.clone()));
        }
        self.queue.insert((at, key));
    }

    pub(super) fn remove(&mut self, key: &StateKey) {
        if let Some(old) = self.at.remove(key) {
            self.queue.remove(&(old, key.clone()));
        }
    }

    /// The next timer at or before `watermark`.
    pub(super) fn pop_due(&mut self, watermark: i64) -> Option<(i64, StateKey)> {
        let (at, _) = self.queue.first()?;
        if *at > watermark {
            return None;
        }
        let (at, key) = self.queue.pop_first()?;
        self.at.remove(&key);
        Some((at, key))
    }
}
