//! A window stage's watermark: per partition, the largest event time seen less the allowed
//! out-of-orderness; for the stage, the minimum over partitions not idle. It never goes back.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use super::store::{progress_key, read_i64};
use crate::{config::WindowSpec, engine::StateBackend};

/// The watermark of one window stage, over every partition any worker runs it for.
#[derive(Debug)]
pub struct Clock {
    max_out_of_order: i64,
    idle_timeout: Option<Duration>,
    inner: Mutex<ClockInner>,
}

#[derive(Debug)]
struct ClockInner {
    partitions: HashMap<(String, i32), Progress>,
    /// The stage watermark handed out last: it never goes back.
    watermark: i64,
}

#[derive(Debug)]
struct Progress {
    max_ts: Option<i64>,
    active: Instant,
}

impl Clock {
    pub fn new(spec: &WindowSpec) -> Clock {
        Clock {
            max_out_of_order: spec.max_out_of_order,
            idle_timeout: spec.idle_timeout,
            inner: Mutex::new(ClockInner {
                partitions: HashMap::new(),
                watermark: i64::MIN,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ClockInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A partition was assigned: it holds the watermark back until it has records (or its
    /// progress is restored from state) or it goes idle. The stage watermark starts over from the
    /// partitions' own progress: what a revoked partition's aborted work had advanced it to must
    /// not make its redone records late.
    pub fn assign(&self, topic: &str, partition: i32, now: Instant) {
        let mut inner = self.lock();
        if let std::collections::hash_map::Entry::Vacant(slot) =
            inner.partitions.entry((topic.to_string(), partition))
        {
            slot.insert(Progress {
                max_ts: None,
                active: now,
            });
            inner.watermark = i64::MIN;
        }
    }

    /// A partition was revoked: it no longer holds the watermark back.
    pub fn forget(&self, topic: &str, partition: i32) {
        self.lock()
            .partitions
            .remove(&(topic.to_string(), partition));
    }

    /// Keep to the partitions `live` (the live build's clock) runs, for a shadow's window
    /// stage: the runtime tells the live clock of assigned and revoked partitions, and this one
    /// takes them from it before each call (a new one with the live progress), and starts over
    /// when the live one does. Its own records move it as the live records move the live one,
    /// so the two fire the same windows at the same times.
    pub fn follow(&self, live: &Clock) {
        let theirs = live.lock();
        let mut mine = self.lock();
        mine.partitions
            .retain(|key, _| theirs.partitions.contains_key(key));
        for (key, progress) in &theirs.partitions {
            mine.partitions.entry(key.clone()).or_insert(Progress {
                max_ts: progress.max_ts,
                active: progress.active,
            });
        }
        mine.watermark = mine.watermark.min(theirs.watermark);
    }

    /// A batch of `topic`/`partition` came by (`max_ts`: its largest event time, if any).
    pub(super) fn observe(&self, topic: &str, partition: i32, max_ts: Option<i64>, now: Instant) {
        let mut inner = self.lock();
        let key = (topic.to_string(), partition);
        let progress = inner.partitions.entry(key).or_insert(Progress {
            max_ts: None,
            active: now,
        });
        progress.active = now;
        progress.max_ts = progress.max_ts.max(max_ts);
    }

    /// What partition `topic`/`partition` alone would let the watermark be: its largest event
    /// time less the allowed out-of-orderness (none before its first record).
    pub fn partition_watermark(&self, topic: &str, partition: i32) -> Option<i64> {
        let inner = self.lock();
        let max_ts = inner
            .partitions
            .get(&(topic.to_string(), partition))?
            .max_ts?;
        Some(
            max_ts
                .saturating_sub(self.max_out_of_order)
                .saturating_sub(1),
        )
    }

    /// The stage watermark at `now`.
    pub fn watermark(&self, now: Instant) -> i64 {
        let mut inner = self.lock();
        let active = inner
            .partitions
            .values()
            .filter(|p| {
                self.idle_timeout
                    .is_none_or(|idle| now.saturating_duration_since(p.active) < idle)
            })
            .map(|p| {
                p.max_ts
                    .map_or(i64::MIN, |t| t.saturating_sub(self.max_out_of_order) - 1)
            })
            .min();
        // With every partition idle, the watermark stays where it is.
        if let Some(low) = active {
            inner.watermark = inner.watermark.max(low);
        }
        inner.watermark
    }
}

/// A partition was assigned with `state` as its window stage's state: it joins the stage's
/// watermark where it left off (or, new, holding it back until it has records or goes idle).
pub fn resume(clock: &Clock, state: &dyn StateBackend, topic: &str, partition: i32, now: Instant) {
    clock.assign(topic, partition, now);
    if let Some(max_ts) = read_i64(state, &progress_key()) {
        clock.observe(topic, partition, Some(max_ts), now);
    }
}
