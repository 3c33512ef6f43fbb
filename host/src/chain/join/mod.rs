//! Interval joins (Flink's `intervalJoin`): the host half of a join stage.
//!
//! A join stage pairs each record of its stream (the *left* side) with each record of another
//! topic (the *right* side) that has the same join key and an event time at most `within`
//! before or after its own. The right topic is partitioned as the source is, and partition `p`
//! of it is read by whoever owns partition `p` of the stream (see [`Side`]), so both sides of a
//! key meet in one partition's state and, exactly once, in one transaction: no shuffle, and
//! no group assignor of weir's own.
//!
//! Both sides are kept in the stage's keyed state until the watermark passes them by `within`
//! (one entry per record, named by side, event time and offset, so a key's records scan in time
//! order), which makes them checkpointed, changelogged and restored like any other state; the
//! expiry timers are rebuilt from the entries. A pair is emitted once, when its second record
//! arrives. With `outer`, a record that paired with nothing is emitted alone when it expires. A
//! record older than the watermark when it arrives is late (Flink drops those; here it goes to
//! the stage's `late` output).
//!
//! The watermark is per partition: the smaller of the two sides' largest event times, less
//! `max_out_of_order` (and 1 ms, as Flink's), leaving out a side idle for `idle_timeout`; it
//! never goes back, and it is kept in state, so a restart goes on from it.
//!
//! What the stage hands its plugin is one record per pair, whose value is
//! `{"left": <the stream's record>, "right": <the topic's record>}` (`null` for the side an
//! outer record lacks): the plugin renders it as any transform renders a record.

mod entry;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Instant,
};

use entry::{Buffered, LEFT, RIGHT};

use super::window::{event_time, Delivered, Late, WindowOutput};
use crate::{
    config::JoinSpec,
    engine::{MemoryState, Record, RecordError, SharedState, StateBackend, StateKey},
};

/// The other topic's records, as the run reads them: its partition of the number the stage's
/// records are of, from the position the stage keeps ([`position`]).
pub trait Side: Send + Sync {
    /// Records that arrived since the last call, at most `max` (a failure to read them is the
    /// run's to stop on, not the stage's).
    fn poll(&self, max: usize) -> Vec<Record>;
    /// Whether the last call found the partition read to its end: only then may the other
    /// side count as idle (a reader still starting is not idle).
    fn at_end(&self) -> bool;
    /// Where the reader began, if the partition had no stored position.
    fn start(&self) -> Option<i64> {
        None
    }
}

/// The other topic's records given up front (`weir test --join`), handed over in order.
#[derive(Default)]
pub struct Given(Mutex<VecDeque<Record>>);

impl Given {
    pub fn new(records: impl IntoIterator<Item = Record>) -> Given {
        Given(Mutex::new(records.into_iter().collect()))
    }

    /// `records` come after those given so far.
    pub fn add(&self, records: impl IntoIterator<Item = Record>) {
        self.lock().extend(records);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Record>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Side for Given {
    fn poll(&self, max: usize) -> Vec<Record> {
        let mut queue = self.lock();
        let n = queue.len().min(max);
        queue.drain(..n).collect()
    }

    fn at_end(&self) -> bool {
        self.lock().is_empty()
    }
}

/// Each join stage's [`Side`] for one partition, by stage index.
pub type Sides = Vec<(usize, Arc<dyn Side>)>;

impl std::fmt::Debug for dyn Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Side")
    }
}

/// Most records of the other topic taken in one call.
const SIDE_BATCH: usize = 2048;

/// The offset to read the other topic's partition from, as `state` (a partition's state of a
/// join stage) keeps it; none for a partition never read.
pub fn position(state: &dyn StateBackend) -> Option<i64> {
    entry::read_i64(state, &entry::next_key())
}

/// A join stage: the pairing of its partitions' records, and the plugin that renders pairs
/// (run by the chain).
pub struct JoinStage {
    spec: Arc<JoinSpec>,
    name: Arc<str>,
    state: Option<SharedState>,
    side: Option<Arc<dyn Side>>,
    partitions: HashMap<(String, i32), Pairing>,
    /// At least once: expiries and the other topic's position are written only once the
    /// outputs they come with are delivered (a crash before re-reads and re-emits them).
    defer: bool,
    /// `policy = "fail"`: nothing after a batch's first failing record is taken in.
    stop_at_failure: bool,
}

/// One partition's join.
struct Pairing {
    state: SharedState,
    /// When each kept record expires, by its entry.
    timers: BTreeSet<(i64, StateKey)>,
    /// Each side's largest event time.
    max: [i64; 2],
    /// When each side last had a record (or when the partition started).
    seen: [Instant; 2],
    /// Whether the other topic's partition was last found read to its end.
    side_at_end: bool,
    /// The offset after the last record of the stream taken in. At least once the state runs
    /// ahead of the outputs, so a record before it is one read again after a crash.
    taken_through: i64,
    watermark: i64,
    /// Changes made with the last call's outputs, waiting for their delivery (at least once),
    /// and those of earlier calls, in call order.
    unheld: Vec<Deferred>,
    held: VecDeque<(Arc<dyn Delivered>, Vec<Deferred>)>,
}

/// A change that waits for outputs' delivery.
enum Deferred {
    Remove(StateKey),
    /// The other topic's partition is read up to here.
    Next(i64),
}

/// What one call of a partition's join needs besides the partition.
struct Call {
    spec: Arc<JoinSpec>,
    stage: Arc<str>,
    topic: String,
    partition: i32,
    now: Instant,
    defer: bool,
    /// `policy = "fail"`: a failing record fails the whole call (see [`as_failed`]).
    stop: bool,
}

impl JoinStage {
    pub fn new(spec: Arc<JoinSpec>, name: &str) -> JoinStage {
        JoinStage {
            spec,
            name: name.into(),
            state: None,
            side: None,
            partitions: HashMap::new(),
            defer: false,
            stop_at_failure: false,
        }
    }

    /// Where the stage's late records go.
    pub fn late_output(&self) -> &crate::config::LateOutput {
        &self.spec.late
    }

    /// Keep the next batches' partition in `state`.
    pub fn set_state(&mut self, state: SharedState) {
        self.state = Some(state);
    }

    /// Read the other topic's records of the next batches' partition from `side`.
    pub fn set_side(&mut self, side: Arc<dyn Side>) {
        self.side = Some(side);
    }

    /// At least once: hold expiries and positions until the outputs are delivered.
    pub fn defer_until_delivered(&mut self, defer: bool) {
        self.defer = defer;
    }

    /// `policy = "fail"`: a batch's records after its first failing one are not taken in, and
    /// the failure stands for the whole call (the run stops without committing any of it:
    /// what the call stored of other records cannot be told apart from the failing one's).
    pub fn stop_at_first_failure(&mut self) {
        self.stop_at_failure = true;
    }

    /// The outputs of the last call are on their way; apply what waited for them once
    /// `delivered` says so.
    pub fn hold(&mut self, delivered: &Arc<dyn Delivered>) {
        for p in self.partitions.values_mut() {
            if !p.unheld.is_empty() {
                let changes = std::mem::take(&mut p.unheld);
                p.held.push_back((delivered.clone(), changes));
            }
        }
    }

    /// Take over what `old` (this stage in the chain this one replaces) keeps in memory.
    pub fn adopt(&mut self, old: &mut JoinStage) {
        self.partitions = std::mem::take(&mut old.partitions);
    }

    /// Forget a revoked partition (its state stays in the store), and let its reader of the
    /// other topic go (the next batch names the side it reads).
    pub fn forget(&mut self, topic: &str, partition: i32) {
        self.partitions.remove(&(topic.to_string(), partition));
        self.side = None;
    }

    /// Pair a batch of the stream's records (one partition's) with what is kept, take in the
    /// other topic's new records, and expire what the watermark passed.
    pub fn process(&mut self, records: Vec<Record>, now: Instant) -> WindowOutput {
        let Some(first) = records.first() else {
            return WindowOutput::default();
        };
        let (topic, partition) = (first.topic.clone(), first.partition);
        self.run(&topic, partition, records, now)
    }

    /// The same without new records of the stream: between batches, as time passes, or
    /// (`active`) after a batch the stages before this one filtered out whole.
    pub fn advance(
        &mut self,
        topic: &str,
        partition: i32,
        now: Instant,
        active: bool,
    ) -> WindowOutput {
        if active {
            self.pairing(topic, partition, now).seen[LEFT] = now;
        }
        self.run(topic, partition, Vec::new(), now)
    }

    /// The input has ended (`weir test`): the other topic's records are all taken in, every
    /// kept record expires, and the outer ones that never paired are emitted.
    pub fn finish(&mut self) -> WindowOutput {
        let now = Instant::now();
        let mut out = WindowOutput::default();
        let mut keys: Vec<(String, i32)> = self.partitions.keys().cloned().collect();
        if keys.is_empty() && self.side.as_ref().is_some_and(|s| !s.at_end()) {
            keys.push((self.spec.topic.clone(), 0));
        }
        for (topic, partition) in keys {
            while self.side.as_ref().is_some_and(|s| !s.at_end()) {
                out.extend(self.run(&topic, partition, Vec::new(), now));
            }
            let call = self.call(&topic, partition, now);
            let p = self.pairing(&topic, partition, now);
            p.watermark = i64::MAX;
            p.expire(&call, &mut out);
        }
        out
    }

    /// The settings of a call for `topic`/`partition`.
    fn call(&self, topic: &str, partition: i32, now: Instant) -> Call {
        Call {
            spec: self.spec.clone(),
            stage: self.name.clone(),
            topic: topic.to_string(),
            partition,
            now,
            defer: self.defer,
            stop: self.stop_at_failure,
        }
    }

    fn run(
        &mut self,
        topic: &str,
        partition: i32,
        records: Vec<Record>,
        now: Instant,
    ) -> WindowOutput {
        let side = self.side.clone();
        let call = self.call(topic, partition, now);
        let p = self.pairing(topic, partition, now);
        p.release();
        let mut out = WindowOutput::default();
        let before = p.max;
        if !p.take_stream(&call, records, &mut out) {
            // Under `fail`: the run stops at the failing record, and nothing of this call
            // commits.
            return out;
        }
        let others = side.as_ref().map_or_else(Vec::new, |s| s.poll(SIDE_BATCH));
        p.side_at_end = side.as_ref().is_none_or(|s| s.at_end());
        out.changed = !others.is_empty();
        // A partition never read keeps where its reader began (`latest` would move on): asked
        // only when nothing came, not on every call that took records in.
        let next = match others.last() {
            Some(last) => Some(last.offset + 1),
            None if position(&*p.state).is_none() => side.as_ref().and_then(|s| s.start()),
            None => None,
        };
        for rec in others {
            p.take(&call, RIGHT, rec, 0, false, &mut out);
        }
        for side in [LEFT, RIGHT] {
            if p.max[side] != before[side] {
                entry::write_i64(&*p.state, entry::max_key(side), p.max[side]);
            }
        }
        if let Some(next) = next {
            p.change(Deferred::Next(next), call.defer);
        }
        p.expire(&call, &mut out);
        out
    }

    /// The join of `topic`/`partition`, rebuilt from its state the first time (or when the
    /// partition's state is new: it was revoked and assigned again).
    fn pairing(&mut self, topic: &str, partition: i32, now: Instant) -> &mut Pairing {
        let key = (topic.to_string(), partition);
        let state = self.state.clone();
        let stale = match (self.partitions.get(&key), &state) {
            (Some(p), Some(s)) => !Arc::ptr_eq(&p.state, s),
            (Some(_), None) => false,
            (None, _) => true,
        };
        if stale {
            let state = state.unwrap_or_else(MemoryState::shared);
            let pairing = Pairing::restore(state, self.spec.within, now);
            self.partitions.insert(key.clone(), pairing);
        }
        self.partitions.get_mut(&key).expect("inserted above")
    }
}

impl Pairing {
    /// A partition's join as its state has it: the kept records' timers, the sides' progress
    /// and the watermark.
    fn restore(state: SharedState, within: i64, now: Instant) -> Pairing {
        let mut timers = BTreeSet::new();
        for ((key, name), _) in state.all() {
            if let Some((_, time, _)) = entry::parse_name(&name) {
                timers.insert((time.saturating_add(within), (key, name)));
            }
        }
        let read = |key: StateKey| entry::read_i64(&*state, &key).unwrap_or(i64::MIN);
        Pairing {
            max: [read(entry::max_key(LEFT)), read(entry::max_key(RIGHT))],
            watermark: read(entry::watermark_key()),
            taken_through: read(entry::taken_key()),
            seen: [now, now],
            side_at_end: false,
            timers,
            state,
            unheld: Vec::new(),
            held: VecDeque::new(),
        }
    }

    /// Apply the changes whose outputs were delivered, in call order, up to the first call
    /// whose outputs are still on their way: a later call's position must not be written
    /// while an earlier call's pairs could still be lost.
    fn release(&mut self) {
        while self.held.front().is_some_and(|(d, _)| d.delivered()) {
            let (_, changes) = self.held.pop_front().expect("looked at above");
            for change in changes {
                apply(&*self.state, change);
            }
        }
    }

    /// Make `change` now, or (`defer`) once this call's outputs are delivered.
    fn change(&mut self, change: Deferred, defer: bool) {
        if defer {
            self.unheld.push(change);
        } else {
            apply(&*self.state, change);
        }
    }

    /// Take in the stream's `records`; false if one failed and the call stops there.
    fn take_stream(&mut self, call: &Call, records: Vec<Record>, out: &mut WindowOutput) -> bool {
        let before = self.taken_through;
        let after = records
            .iter()
            .map(|r| r.offset + 1)
            .max()
            .unwrap_or(i64::MIN);
        // Records a flat-map before the stage made of one input share its offset: the n-th of
        // them is told apart by n, the same on a replay.
        let mut last = (i64::MIN, 0u32);
        let mut complete = true;
        for rec in records {
            let seq = if rec.offset == last.0 { last.1 + 1 } else { 0 };
            last = (rec.offset, seq);
            let again = (0..before).contains(&rec.offset);
            if !self.take(call, LEFT, rec, seq, again, out) && call.stop {
                complete = false;
                break;
            }
        }
        if complete && after > before {
            self.taken_through = after;
            entry::write_i64(&*self.state, entry::taken_key(), after);
        }
        complete
    }

    /// Pair one record of `side` with the other side's kept records of its key, and keep it;
    /// false if it failed.
    fn take(
        &mut self,
        call: &Call,
        side: usize,
        rec: Record,
        seq: u32,
        again: bool,
        out: &mut WindowOutput,
    ) -> bool {
        let (time, key) = match entry::read_record(&call.spec, side, &rec) {
            Ok(read) => read,
            Err((kind, message)) => {
                let error = RecordError {
                    plugin: call.stage.to_string(),
                    kind,
                    message: format!("{}: {message}", place(&rec)),
                };
                out.failures.push((as_failed(call, side, rec), error));
                return false;
            }
        };
        // Records of no single input (a window's results, an earlier join's) share offset -1:
        // each gets a number of its own, kept in state, and is never taken for a replay.
        let seq = match rec.offset {
            0.. => seq,
            _ => self.next_unnumbered(),
        };
        let name = entry::name(side, time, rec.offset, seq);
        let entry_key: StateKey = (Some(key), name);
        // A record read `again`, or kept already, is one read again after a crash (at least
        // once, the state ran ahead of the outputs): it pairs again, whatever the watermark
        // says now (it may have expired since, after its pairs were delivered).
        let kept = self
            .state
            .get(&entry_key)
            .and_then(|e| Buffered::decode(&e.value));
        self.seen[side] = call.now;
        if !again && kept.is_none() && time < self.watermark {
            let record = as_late(side, rec);
            let watermark = self.watermark;
            out.late.push(Late { record, watermark });
            return true;
        }
        self.max[side] = self.max[side].max(time);
        let mut this = Buffered::of(&rec);
        let paired = self.pair(call, side, (&this, time), &entry_key, &rec, out);
        this.paired = paired || kept.is_some_and(|k| k.paired);
        let expires = time.saturating_add(call.spec.within);
        self.timers.insert((expires, entry_key.clone()));
        self.state
            .apply(BTreeMap::from([(entry_key, Some(this.encode()))]));
        true
    }

    /// The next number for a record of no single input (see [`Pairing::take`]).
    fn next_unnumbered(&mut self) -> u32 {
        let key = entry::unnumbered_key();
        let n = entry::read_i64(&*self.state, &key).unwrap_or(0);
        entry::write_i64(&*self.state, key, n.wrapping_add(1));
        n as u32
    }

    /// Emit a pair of `this` (of `side`, at `entry`) with each kept record of the other side
    /// within the bound, marking those paired; whether there was one.
    fn pair(
        &mut self,
        call: &Call,
        side: usize,
        this: (&Buffered, i64),
        entry: &StateKey,
        rec: &Record,
        out: &mut WindowOutput,
    ) -> bool {
        let mut paired = false;
        let key = &entry.0;
        for (name, stored) in self.state.scan(key, entry::prefix(1 - side)) {
            let Some((_, t, _)) = entry::parse_name(&name) else {
                continue;
            };
            if t.abs_diff(this.1) > call.spec.within.unsigned_abs() {
                continue;
            }
            let Some(mut other) = Buffered::decode(&stored.value) else {
                continue;
            };
            paired = true;
            let (left, right) = match side {
                LEFT => (Some(this), Some((&other, t))),
                _ => (Some((&other, t)), Some(this)),
            };
            out.records
                .push(output(left, right, coordinates(call, side, rec)));
            if !other.paired {
                other.paired = true;
                let write = BTreeMap::from([((key.clone(), name), Some(other.encode()))]);
                self.state.apply(write);
            }
        }
        paired
    }

    /// Move the watermark on, and let go of the records it passed by `within`: alone, those of
    /// an outer side that never paired.
    fn expire(&mut self, call: &Call, out: &mut WindowOutput) {
        let spec = &call.spec;
        let idle = |s: usize| {
            call.now.duration_since(self.seen[s]) >= spec.idle_timeout
                && (s == LEFT || self.side_at_end)
        };
        let active: Vec<usize> = [LEFT, RIGHT].into_iter().filter(|&s| !idle(s)).collect();
        let sides = if active.is_empty() {
            vec![LEFT, RIGHT]
        } else {
            active
        };
        let lowest = sides.iter().map(|&s| self.max[s]).min().unwrap_or(i64::MIN);
        let watermark = lowest
            .saturating_sub(spec.max_out_of_order)
            .saturating_sub(1);
        if watermark > self.watermark {
            self.watermark = watermark;
            entry::write_i64(&*self.state, entry::watermark_key(), watermark);
        }
        while self
            .timers
            .first()
            .is_some_and(|(at, _)| *at < self.watermark)
        {
            let (_, key) = self.timers.pop_first().expect("looked at above");
            out.changed = true;
            let stored = self
                .state
                .get(&key)
                .and_then(|e| Buffered::decode(&e.value));
            if let (Some(kept), Some((side, time, _))) = (stored, entry::parse_name(&key.1)) {
                if !kept.paired && spec.outer.keeps(side == LEFT) {
                    alone(call, kept, side, time, out);
                }
            }
            self.change(Deferred::Remove(key), call.defer);
        }
    }
}

fn apply(state: &dyn StateBackend, change: Deferred) {
    match change {
        Deferred::Remove(key) => state.apply(BTreeMap::from([(key, None)])),
        Deferred::Next(next) => entry::write_i64(state, entry::next_key(), next),
    }
}

/// An unpaired record of `side` at `time`, out alone: to the plugin as a pair with `null` for
/// the other side, or as it came to the stage's `unmatched` topic.
fn alone(call: &Call, kept: Buffered, side: usize, time: i64, out: &mut WindowOutput) {
    let at = (call.topic.clone(), call.partition, -1);
    let Some(topic) = &call.spec.unmatched else {
        let alone = Some((&kept, time));
        let (left, right) = if side == LEFT {
            (alone, None)
        } else {
            (None, alone)
        };
        out.records.push(output(left, right, at));
        return;
    };
    let record = Record {
        key: kept.key,
        value: kept.value,
        headers: Vec::new(),
        timestamp: time,
        topic: at.0,
        partition: at.1,
        offset: at.2,
    };
    out.routed.push((topic.clone(), record));
}

/// `topic[partition]@offset` of `rec`.
fn place(rec: &Record) -> String {
    format!("{}[{}]@{}", rec.topic, rec.partition, rec.offset)
}

/// A record of `side` as a failed or late one: a record of the other topic is no input of the
/// batch (offset -1, as a window's result), so the error policy takes it as it is; under
/// `fail`, no failing record is (the run stops without committing anything of the call).
fn as_failed(call: &Call, side: usize, mut rec: Record) -> Record {
    if side == RIGHT || call.stop {
        rec.offset = -1;
    }
    rec
}

/// A record of `side` as a late one: a record of the other topic is no input of the batch.
fn as_late(side: usize, mut rec: Record) -> Record {
    if side == RIGHT {
        rec.offset = -1;
    }
    rec
}

/// The source coordinates of what a record of `side` makes: a record of the stream's own; a
/// record of the other topic stands for no input of the batch (offset -1).
fn coordinates(call: &Call, side: usize, rec: &Record) -> (String, i32, i64) {
    match side {
        LEFT => (rec.topic.clone(), rec.partition, rec.offset),
        _ => (call.topic.clone(), call.partition, -1),
    }
}

/// The record a pair (or an outer record alone) is handed to the plugin as: the value
/// `{"left": …, "right": …}`, the left record's key (the right one's when alone), the later
/// of the two event times.
fn output(
    left: Option<(&Buffered, i64)>,
    right: Option<(&Buffered, i64)>,
    (topic, partition, offset): (String, i32, i64),
) -> Record {
    fn part(side: Option<(&Buffered, i64)>) -> &[u8] {
        side.and_then(|(b, _)| b.value.as_deref())
            .unwrap_or(b"null")
    }
    let mut value = Vec::with_capacity(20 + part(left).len() + part(right).len());
    value.extend_from_slice(b"{\"left\":");
    value.extend_from_slice(part(left));
    value.extend_from_slice(b",\"right\":");
    value.extend_from_slice(part(right));
    value.push(b'}');
    let timestamp = left
        .map_or(i64::MIN, |l| l.1)
        .max(right.map_or(i64::MIN, |r| r.1));
    let key = left.or(right).and_then(|(b, _)| b.key.clone());
    Record {
        key,
        value: Some(value),
        headers: Vec::new(),
        timestamp,
        topic,
        partition,
        offset,
    }
}
