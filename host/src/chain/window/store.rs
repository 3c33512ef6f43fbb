//! Windows as keyed state: one entry per key and window, named after the window's bounds (so
//! names sort by start), holding a "has fired" flag then the plugin's accumulator; beside them
//! each partition's progress in event time and the watermark it last removed windows at.

use std::{collections::BTreeMap, sync::Arc};

use super::{aggregator::Aggregator, timers::Timers, Delivered};
use crate::engine::{
    describe_key, Entry, ErrorKind, KeyedWindow, RecordError, SharedState, StateBackend, StateKey,
};

/// The windows of one partition.
pub(super) struct Panes {
    pub(super) state: SharedState,
    pub(super) timers: Timers,
    /// Offset of the last record seen: fired windows' outputs carry it as their source offset.
    pub(super) last_offset: i64,
    /// The highest watermark this partition's windows were removed at (see
    /// [`fired_through_key`]).
    pub(super) fired_through: i64,
    /// Changes made by firing that wait for the outputs' delivery.
    pub(super) unheld: Vec<Change>,
    pub(super) held: Vec<(Arc<dyn Delivered>, Vec<Change>)>,
}

pub(super) enum Change {
    MarkFired(StateKey),
    Remove(StateKey),
    /// Windows were removed at this watermark.
    FiredThrough(i64),
}

pub(super) const FIRED: u8 = 1;

/// State entry name of window `[start, end)`: fixed-width and sign-flipped, so names sort by start.
pub(super) fn entry_name(start: i64, end: i64) -> String {
    format!(
        "w{:016x}{:016x}",
        (start as u64) ^ (1 << 63),
        (end as u64) ^ (1 << 63)
    )
}

pub(super) fn parse_entry_name(name: &str) -> Option<(i64, i64)> {
    let hex = name.strip_prefix('w').filter(|h| h.len() == 32)?;
    let start = u64::from_str_radix(&hex[..16], 16).ok()? ^ (1 << 63);
    let end = u64::from_str_radix(&hex[16..], 16).ok()? ^ (1 << 63);
    Some((start as i64, end as i64))
}

/// State entry of a partition's largest event time (not a window: window names are `w` + hex).
pub(super) fn progress_key() -> StateKey {
    (None, "max-event-time".into())
}

/// State entry of the highest watermark at which the partition's windows were removed, written
/// with the removals. The stage watermark after a restart is the minimum of the partitions'
/// stored progress, and under at least once one partition's progress can reach the store or
/// changelog later than another partition's removals that it allowed (a crash in between
/// loses it); the replayed records of a removed window must still be late, not form it anew
/// and emit it again with only some of its records.
pub(super) fn fired_through_key() -> StateKey {
    (None, "fired-through".into())
}

/// A number the host keeps beside a stage's entries (a window stage's progress, a join's
/// watermark and position): eight big-endian bytes, as [`write_i64`] writes it.
pub(crate) fn read_i64(state: &dyn StateBackend, key: &StateKey) -> Option<i64> {
    let entry = state.get(key)?;
    Some(i64::from_be_bytes(entry.value.as_slice().try_into().ok()?))
}

/// Keep `value` at `key` (see [`read_i64`]).
pub(crate) fn write_i64(state: &dyn StateBackend, key: StateKey, value: i64) {
    let entry = Entry::new(value.to_be_bytes().to_vec(), 0);
    state.apply([(key, Some(entry))].into());
}

/// Apply held changes whose outputs were delivered.
pub(super) fn release(panes: &mut Panes) {
    let state = panes.state.clone();
    panes.held.retain_mut(|(delivered, changes)| {
        if delivered.delivered() {
            apply(&state, std::mem::take(changes));
            false
        } else {
            true
        }
    });
}

pub(super) fn apply(state: &SharedState, changes: Vec<Change>) {
    if changes.is_empty() {
        return;
    }
    let mut writes = BTreeMap::new();
    let mut through = None;
    for change in changes {
        match change {
            Change::Remove(key) => {
                writes.insert(key, None);
            }
            Change::MarkFired(key) => {
                // The accumulator is left as it is, so is the version of the build that wrote it.
                if let Some(mut entry) = state.get(&key) {
                    if let Some(flag) = entry.value.first_mut() {
                        *flag = FIRED;
                    }
                    writes.insert(key, Some(entry));
                }
            }
            Change::FiredThrough(watermark) => through = through.max(Some(watermark)),
        }
    }
    if let Some(watermark) = through {
        let key = fired_through_key();
        if read_i64(&**state, &key).is_none_or(|stored| stored < watermark) {
            writes.insert(key, Some(Entry::new(watermark.to_be_bytes().to_vec(), 0)));
        }
    }
    state.apply(writes);
}

/// The accumulator of `window` stored in `entry` (a "fired" flag, then the plugin's bytes), in
/// the shape of the running build: accumulators an older build wrote are migrated as they are
/// read, like plugins' own state (see `engine::host`), so a window that spans an upgrade goes on
/// from what the old build folded in.
pub(super) fn stored_acc<A: Aggregator>(
    agg: &mut A,
    window: &KeyedWindow,
    entry: Entry,
) -> Result<Vec<u8>, RecordError> {
    let acc = entry.value.get(1..).unwrap_or_default();
    let version = agg.state_version();
    if entry.version == version {
        return Ok(acc.to_vec());
    }
    let why = if entry.version > version {
        format!(
            "was written by state version {} of the plugin, newer than this build's {version}: a \
             build cannot read the state of a later one",
            entry.version
        )
    } else {
        match agg.migrate(entry.version, "accumulator", acc) {
            Ok(Ok(acc)) => return Ok(acc),
            Ok(Err(e)) => format!(
                "was written by state version {} and could not be migrated to version \
                 {version}: {e}",
                entry.version
            ),
            Err(trap) => format!(
                "was written by state version {} and could not be migrated to version \
                 {version}: {}: {}",
                entry.version,
                trap.kind.as_str(),
                trap.message
            ),
        }
    };
    Err(RecordError {
        plugin: agg.name().to_string(),
        kind: ErrorKind::Migration,
        message: format!(
            "the accumulator of window [{}, {}) of key {} {why}",
            window.start,
            window.end,
            describe_key(&window.key)
        ),
    })
}
