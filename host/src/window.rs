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
//! and restored like any other state; the timers are rebuilt from the entries. Watermarks are not
//! checkpointed (nor are they in Flink): after a restart they start over from the records that
//! follow.
//!
//! Watermarks advance per batch, like Flink's periodic watermarks: a batch's records are judged
//! late against the watermark from before the batch, and windows fire after it.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::engine::{
    Entry, ErrorKind, Header, Instance, KeyedWindow, Output, Pane, PaneResult, Record, RecordError,
    SharedState, StateBackend, StateKey,
};

/// How a window stage groups records in time; every length in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowKind {
    /// Fixed, non-overlapping windows of `size`.
    Tumbling { size: i64 },
    /// Windows of `size` starting every `slide`: a record is in `size / slide` of them.
    Sliding { size: i64, slide: i64 },
    /// Per key, records closer than `gap` to each other share a window.
    Session { gap: i64 },
}

/// Where a record's event time comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventTime {
    /// The Kafka record timestamp.
    Record,
    /// A JSON pointer into the value: milliseconds since the epoch, or an RFC 3339 string.
    Field(String),
}

/// What happens to a record too late for every window it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LateOutput {
    /// Counted and dropped.
    Drop,
    /// Sent, unchanged, to this topic.
    Topic(String),
    /// Sent to the dead-letter topic, with the error kind `late`.
    DeadLetter,
}

/// A window stage's settings, from the pipeline file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowSpec {
    pub kind: WindowKind,
    pub time: EventTime,
    pub max_out_of_order: i64,
    /// A partition without records for this long stops holding the watermark back.
    pub idle_timeout: Option<Duration>,
    pub allowed_lateness: i64,
    pub late: LateOutput,
}

impl WindowSpec {
    /// One line for `weir check`.
    pub fn describe(&self) -> String {
        let kind = match self.kind {
            WindowKind::Tumbling { size } => format!("tumbling {size} ms windows"),
            WindowKind::Sliding { size, slide } => {
                format!("sliding {size} ms windows every {slide} ms")
            }
            WindowKind::Session { gap } => format!("session windows (gap {gap} ms)"),
        };
        let time = match &self.time {
            EventTime::Record => "the record timestamp".to_string(),
            EventTime::Field(f) => format!("`{f}`"),
        };
        let late = match &self.late {
            LateOutput::Drop => "dropped (counted)".to_string(),
            LateOutput::Topic(t) => format!("to `{t}`"),
            LateOutput::DeadLetter => "dead-lettered".to_string(),
        };
        format!(
            "{kind} on {time}, watermark {} ms behind{}, lateness {} ms, late records {late}",
            self.max_out_of_order,
            self.idle_timeout
                .map_or(String::new(), |d| format!(" (idle after {d:?})")),
            self.allowed_lateness
        )
    }
}

impl WindowKind {
    /// The windows a record at `ts` belongs to, before any session merging.
    fn assign(self, ts: i64, out: &mut Vec<(i64, i64)>) {
        out.clear();
        match self {
            WindowKind::Tumbling { size } => {
                let start = start_of(ts, size);
                out.push((start, start + size));
            }
            WindowKind::Sliding { size, slide } => {
                let mut start = start_of(ts, slide);
                while start > ts - size {
                    out.push((start, start + size));
                    start -= slide;
                }
            }
            WindowKind::Session { gap } => out.push((ts, ts.saturating_add(gap))),
        }
    }
}

/// The start of the window of `size` (aligned to the epoch) that `ts` falls in.
fn start_of(ts: i64, size: i64) -> i64 {
    ts - ts.rem_euclid(size)
}

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
}

impl WindowOutput {
    pub fn extend(&mut self, other: WindowOutput) {
        self.records.extend(other.records);
        self.failures.extend(other.failures);
        self.late.extend(other.late);
    }
}

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

    /// A batch of `topic`/`partition` came by (`max_ts`: its largest event time, if any).
    fn observe(&self, topic: &str, partition: i32, max_ts: Option<i64>, now: Instant) {
        let mut inner = self.lock();
        let key = (topic.to_string(), partition);
        let progress = inner.partitions.entry(key).or_insert(Progress {
            max_ts: None,
            active: now,
        });
        progress.active = now;
        progress.max_ts = progress.max_ts.max(max_ts);
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

/// The plugin side of a window stage. A wasm [`Instance`] in production; tests plug in native
/// aggregations.
pub trait Aggregator {
    fn accumulate(
        &mut self,
        panes: &[Pane],
    ) -> Result<Vec<Result<PaneResult, String>>, RecordError>;
    fn merge(
        &mut self,
        window: &KeyedWindow,
        a: &[u8],
        b: &[u8],
    ) -> Result<Result<Vec<u8>, String>, RecordError>;
    fn emit(
        &mut self,
        fired: &[(KeyedWindow, Vec<u8>)],
    ) -> Result<Vec<Result<Vec<Output>, String>>, RecordError>;
    /// The plugin's name, for errors the host finds itself.
    fn name(&self) -> &str;
    /// The version of the shape of the accumulators this build writes.
    fn state_version(&self) -> u32 {
        0
    }
    /// An accumulator an older build wrote, in this build's shape.
    fn migrate(
        &mut self,
        from: u32,
        name: &str,
        value: &[u8],
    ) -> Result<Result<Vec<u8>, String>, RecordError> {
        let _ = (from, name, value);
        Ok(Err("the plugin exports no migration".into()))
    }
}

impl Aggregator for Instance {
    fn accumulate(
        &mut self,
        panes: &[Pane],
    ) -> Result<Vec<Result<PaneResult, String>>, RecordError> {
        Instance::accumulate(self, panes)
    }

    fn merge(
        &mut self,
        window: &KeyedWindow,
        a: &[u8],
        b: &[u8],
    ) -> Result<Result<Vec<u8>, String>, RecordError> {
        Instance::merge(self, window, a, b)
    }

    fn emit(
        &mut self,
        fired: &[(KeyedWindow, Vec<u8>)],
    ) -> Result<Vec<Result<Vec<Output>, String>>, RecordError> {
        Instance::emit(self, fired)
    }

    fn name(&self) -> &str {
        self.plugin().name()
    }

    fn state_version(&self) -> u32 {
        Instance::state_version(self)
    }

    fn migrate(
        &mut self,
        from: u32,
        name: &str,
        value: &[u8],
    ) -> Result<Result<Vec<u8>, String>, RecordError> {
        Instance::migrate(self, from, name, value)
    }
}

/// Something that says whether the outputs of a call reached the sink: at least once, a fired
/// window's entry is marked fired or removed only then, so a crash before that fires it again
/// rather than losing it.
pub trait Delivered: Send + Sync {
    fn delivered(&self) -> bool;
}

/// One window stage of one worker's chain.
pub struct WindowStage<A> {
    spec: Arc<WindowSpec>,
    agg: A,
    clock: Arc<Clock>,
    partitions: HashMap<(String, i32), Panes>,
    /// The state to use for partitions met from now on (see [`WindowStage::set_state`]).
    state: Option<SharedState>,
    /// At least once: hold "fired" marks and removals until the outputs are delivered.
    defer: bool,
}

/// When to look at each window next: at its end - 1 to fire it, at its cleanup time to remove it.
#[derive(Default)]
struct Timers {
    queue: BTreeSet<(i64, StateKey)>,
    at: HashMap<StateKey, i64>,
}

impl Timers {
    fn set(&mut self, at: i64, key: StateKey) {
        if let Some(old) = self.at.insert(key.clone(), at) {
            self.queue.remove(&(old, key.clone()));
        }
        self.queue.insert((at, key));
    }

    fn remove(&mut self, key: &StateKey) {
        if let Some(old) = self.at.remove(key) {
            self.queue.remove(&(old, key.clone()));
        }
    }

    /// The next timer at or before `watermark`.
    fn pop_due(&mut self, watermark: i64) -> Option<(i64, StateKey)> {
        let (at, _) = self.queue.first()?;
        if *at > watermark {
            return None;
        }
        let (at, key) = self.queue.pop_first()?;
        self.at.remove(&key);
        Some((at, key))
    }
}

/// The windows of one partition.
struct Panes {
    state: SharedState,
    timers: Timers,
    /// Offset of the last record seen: fired windows' outputs carry it as their source offset.
    last_offset: i64,
    /// The highest watermark this partition's windows were removed at (see
    /// [`fired_through_key`]).
    fired_through: i64,
    /// Changes made by firing that wait for the outputs' delivery.
    unheld: Vec<Change>,
    held: Vec<(Arc<dyn Delivered>, Vec<Change>)>,
}

enum Change {
    MarkFired(StateKey),
    Remove(StateKey),
    /// Windows were removed at this watermark.
    FiredThrough(i64),
}

const FIRED: u8 = 1;

/// State entry name of window `[start, end)`: fixed-width and sign-flipped, so names sort by start.
fn entry_name(start: i64, end: i64) -> String {
    format!(
        "w{:016x}{:016x}",
        (start as u64) ^ (1 << 63),
        (end as u64) ^ (1 << 63)
    )
}

fn parse_entry_name(name: &str) -> Option<(i64, i64)> {
    let hex = name.strip_prefix('w').filter(|h| h.len() == 32)?;
    let start = u64::from_str_radix(&hex[..16], 16).ok()? ^ (1 << 63);
    let end = u64::from_str_radix(&hex[16..], 16).ok()? ^ (1 << 63);
    Some((start as i64, end as i64))
}

impl<A: Aggregator> WindowStage<A> {
    pub fn new(spec: Arc<WindowSpec>, agg: A, clock: Arc<Clock>) -> Self {
        WindowStage {
            spec,
            agg,
            clock,
            partitions: HashMap::new(),
            state: None,
            defer: false,
        }
    }

    /// The plugin side, e.g. to count its restarts.
    pub fn aggregator(&self) -> &A {
        &self.agg
    }

    /// Keep the windows of the partitions met next in `state` (a partition's state is set before
    /// each of its batches; a new value for a known partition means it was assigned anew).
    pub fn set_state(&mut self, state: SharedState) {
        self.state = Some(state);
    }

    /// Where the stage's late records go.
    pub fn late_output(&self) -> &LateOutput {
        &self.spec.late
    }

    /// A batch of `topic`/`partition` reached the chain, though none of its records reached
    /// this stage: the partition is not idle.
    pub fn touch(&self, topic: &str, partition: i32, now: Instant) {
        self.clock.observe(topic, partition, None, now);
    }

    /// At least once: see [`Delivered`].
    pub fn defer_until_delivered(&mut self, defer: bool) {
        self.defer = defer;
    }

    /// Attach the delivery of the last call's outputs to the changes that wait for it.
    pub fn hold(&mut self, delivered: &Arc<dyn Delivered>) {
        for panes in self.partitions.values_mut() {
            if !panes.unheld.is_empty() {
                let changes = std::mem::take(&mut panes.unheld);
                panes.held.push((delivered.clone(), changes));
            }
        }
    }

    /// Take over what `old`, this stage's instance in the chain this one replaces (hot reload,
    /// same window settings), keeps per partition.
    pub fn adopt(&mut self, old: &mut WindowStage<A>) {
        self.partitions = std::mem::take(&mut old.partitions);
    }

    /// Forget a revoked partition's windows (its state stays in the store).
    pub fn forget(&mut self, topic: &str, partition: i32) {
        self.partitions.remove(&(topic.to_string(), partition));
    }

    /// The windows of `topic`/`partition`, restored from state the first time.
    fn panes(&mut self, topic: &str, partition: i32) -> &mut Panes {
        let key = (topic.to_string(), partition);
        let state = self.state.clone();
        let stale = match (self.partitions.get(&key), &state) {
            (Some(p), Some(s)) => !Arc::ptr_eq(&p.state, s),
            (Some(_), None) => false,
            (None, _) => true,
        };
        if stale {
            let state = state.unwrap_or_else(crate::engine::MemoryState::shared);
            let lateness = self.spec.allowed_lateness;
            let mut timers = Timers::default();
            for ((key, name), entry) in state.all() {
                if let Some((_, end)) = parse_entry_name(&name) {
                    let fired = entry.value.first() == Some(&FIRED);
                    let at = if fired {
                        (end - 1).saturating_add(lateness)
                    } else {
                        end - 1
                    };
                    timers.set(at, (key, name));
                }
            }
            let fired_through = read_time(&*state, &fired_through_key()).unwrap_or(i64::MIN);
            self.partitions.insert(
                key.clone(),
                Panes {
                    state,
                    timers,
                    fired_through,
                    last_offset: -1,
                    unheld: Vec::new(),
                    held: Vec::new(),
                },
            );
        }
        self.partitions.get_mut(&key).expect("inserted above")
    }

    /// Run a batch through the stage: assign, fold, then fire what the watermark passed.
    pub fn process(&mut self, records: Vec<Record>, now: Instant) -> WindowOutput {
        let mut out = WindowOutput::default();
        // Batches hold one partition's records; keep this right for mixed ones too.
        let mut by_partition: Vec<((String, i32), Vec<Record>)> = Vec::new();
        for rec in records {
            match by_partition.last_mut() {
                Some(((t, p), recs)) if *t == rec.topic && *p == rec.partition => recs.push(rec),
                _ => by_partition.push(((rec.topic.clone(), rec.partition), vec![rec])),
            }
        }
        for ((topic, partition), records) in by_partition {
            self.process_partition(&topic, partition, records, now, &mut out);
        }
        out
    }

    /// Fire what the watermark passed in `topic`/`partition`, with no new records: the watermark
    /// moves with other partitions' records and with idleness.
    pub fn advance(&mut self, topic: &str, partition: i32, now: Instant) -> WindowOutput {
        let mut out = WindowOutput::default();
        let watermark = self.clock.watermark(now);
        let panes = self.panes(topic, partition);
        release(panes);
        self.fire(topic, partition, watermark, Vec::new(), &mut out);
        out
    }

    /// The input has ended (`weir test`): fire and remove every window.
    pub fn finish(&mut self) -> WindowOutput {
        let mut out = WindowOutput::default();
        let known: Vec<(String, i32)> = self.partitions.keys().cloned().collect();
        for (topic, partition) in known {
            self.fire(&topic, partition, i64::MAX, Vec::new(), &mut out);
        }
        out
    }

    fn process_partition(
        &mut self,
        topic: &str,
        partition: i32,
        records: Vec<Record>,
        now: Instant,
        out: &mut WindowOutput,
    ) {
        let watermark = self.clock.watermark(now);
        let spec = self.spec.clone();
        let lateness = spec.allowed_lateness;
        let panes = self.panes(topic, partition);
        release(panes);
        if let Some(last) = records.last() {
            panes.last_offset = last.offset;
        }
        // A window this partition removed stays gone, even when the stage watermark after a
        // restart is lower than when it was removed: a replayed record of it is late.
        let late_at = watermark.max(panes.fired_through);
        let is_late = |end: i64| (end - 1).saturating_add(lateness) <= late_at;
        let state = panes.state.clone();
        let plugin = self.agg.name().to_string();
        let error = |kind, message| RecordError {
            plugin: plugin.clone(),
            kind,
            message,
        };

        // Event times; records without one fail here.
        let mut max_ts = None;
        let mut timed: Vec<(Record, i64)> = Vec::with_capacity(records.len());
        for rec in records {
            match event_time(&spec.time, &rec) {
                Ok(ts) => {
                    max_ts = max_ts.max(Some(ts));
                    timed.push((rec, ts));
                }
                Err(message) => out
                    .failures
                    .push((rec, error(ErrorKind::EventTime, message))),
            }
        }
        let mut late = vec![false; timed.len()];
        let mut failed = vec![false; timed.len()];

        // Panes: (key, window) → the batch's records in it, in arrival order. For sessions,
        // `merges` holds the stored sessions each new window absorbs.
        let mut groups: BTreeMap<Pending, Vec<usize>> = BTreeMap::new();
        let mut merges: HashMap<Pending, Vec<(i64, i64)>> = HashMap::new();
        match spec.kind {
            WindowKind::Session { gap } => {
                let mut by_key: BTreeMap<Option<Vec<u8>>, Vec<usize>> = BTreeMap::new();
                for (i, (rec, _)) in timed.iter().enumerate() {
                    by_key.entry(rec.key.clone()).or_default().push(i);
                }
                for (key, members) in by_key {
                    let stored: Vec<(i64, i64)> = state
                        .scan(&key, "w")
                        .into_iter()
                        .filter_map(|(name, _)| parse_entry_name(&name))
                        .filter(|&(_, end)| !is_late(end))
                        .collect();
                    let protos = members
                        .iter()
                        .map(|&i| (timed[i].1, timed[i].1.saturating_add(gap), i));
                    for session in sessions(&stored, protos) {
                        let window = (key.clone(), session.start, session.end);
                        if is_late(session.end) {
                            for i in session.members {
                                late[i] = true;
                            }
                            continue;
                        }
                        if session.stored != [(session.start, session.end)]
                            && !session.stored.is_empty()
                        {
                            merges.insert(window.clone(), session.stored);
                        }
                        groups.insert(window, session.members);
                    }
                }
            }
            kind => {
                let mut windows = Vec::new();
                for (i, (rec, ts)) in timed.iter().enumerate() {
                    kind.assign(*ts, &mut windows);
                    late[i] = true;
                    for &(start, end) in windows.iter().filter(|w| !is_late(w.1)) {
                        late[i] = false;
                        groups
                            .entry((rec.key.clone(), start, end))
                            .or_default()
                            .push(i);
                    }
                }
            }
        }

        // Each pane starts from its stored accumulator; a merged session from its absorbed
        // sessions' accumulators, merged by the plugin.
        let mut panes_in = Vec::with_capacity(groups.len());
        let mut keys = Vec::with_capacity(groups.len());
        for ((key, start, end), members) in groups {
            let window = KeyedWindow {
                key: key.clone(),
                start,
                end,
            };
            let seeded = match merges.get(&(key.clone(), start, end)) {
                Some(olds) => self.merge_stored(&state, &window, olds),
                None => state
                    .get(&(key.clone(), entry_name(start, end)))
                    .map(|entry| stored_acc(&mut self.agg, &window, entry))
                    .transpose(),
            };
            let acc = match seeded {
                Ok(acc) => acc,
                Err(e) => {
                    // The stored sessions stay as they were; the key's records of the batch fail.
                    for &i in &members {
                        failed[i] = true;
                        out.failures.push((timed[i].0.clone(), e.clone()));
                    }
                    continue;
                }
            };
            let events = members.iter().map(|&i| timed[i].0.clone()).collect();
            keys.push(((key, start, end), members));
            panes_in.push(Pane {
                window,
                acc,
                events,
            });
        }

        // One call folds every pane of the batch.
        let results = accumulate(&mut self.agg, &panes_in);
        let mut writes: BTreeMap<StateKey, Option<Entry>> = BTreeMap::new();
        let mut timers = Vec::new();
        let mut emit_now = Vec::new();
        for (((key, start, end), members), (pane, result)) in
            keys.into_iter().zip(panes_in.into_iter().zip(results))
        {
            let acc = match result {
                Ok(r) => {
                    for (i, message) in r.errors {
                        if let Some(&m) = members.get(i as usize) {
                            if !std::mem::replace(&mut failed[m], true) {
                                let e = error(ErrorKind::Plugin, message);
                                out.failures.push((timed[m].0.clone(), e));
                            }
                        }
                    }
                    r.acc
                }
                Err(e) => {
                    for &m in &members {
                        if !std::mem::replace(&mut failed[m], true) {
                            out.failures.push((timed[m].0.clone(), e.clone()));
                        }
                    }
                    continue;
                }
            };
            let merged = merges.get(&(key.clone(), start, end));
            for &(s, e) in merged.into_iter().flatten() {
                writes.insert((key.clone(), entry_name(s, e)), None);
            }
            let id = (key, entry_name(start, end));
            // A window the watermark already passed fired before (or, new and late but within
            // the allowed lateness, never will by timer): emit it now.
            let due = end - 1 <= watermark;
            let fired = match (&pane.acc, merged, due) {
                (_, _, true) => FIRED,
                (Some(_), None, false) => state
                    .get(&id)
                    .and_then(|e| e.value.first().copied())
                    .unwrap_or(0),
                _ => 0,
            };
            let mut value = Vec::with_capacity(acc.len() + 1);
            value.push(if due && self.defer { 0 } else { fired });
            value.extend_from_slice(&acc);
            writes.insert(
                id.clone(),
                Some(Entry::new(value, self.agg.state_version())),
            );
            for &(s, e) in merged.into_iter().flatten() {
                timers.push((None, (id.0.clone(), entry_name(s, e))));
            }
            if due {
                timers.push((Some((end - 1).saturating_add(lateness)), id.clone()));
                emit_now.push(id);
            } else if pane.acc.is_none() || merged.is_some() {
                timers.push((Some(end - 1), id));
            }
        }
        // The partition's progress in event time is kept with its windows: after a restart or a
        // move, a partition with nothing new to read must not hold the watermark back.
        if let Some(max_ts) = max_ts {
            if read_time(&*state, &progress_key()).is_none_or(|stored| stored < max_ts) {
                writes.insert(
                    progress_key(),
                    Some(Entry::new(max_ts.to_be_bytes().to_vec(), 0)),
                );
            }
        }
        state.apply(writes);
        let panes = self
            .partitions
            .get_mut(&(topic.to_string(), partition))
            .expect("made above");
        for (at, id) in timers {
            match at {
                Some(at) => panes.timers.set(at, id),
                None => panes.timers.remove(&id),
            }
        }

        for (i, (rec, _)) in timed.into_iter().enumerate() {
            if late[i] {
                out.late.push(Late {
                    record: rec,
                    watermark: late_at,
                });
            }
        }
        self.clock.observe(topic, partition, max_ts, now);
        let watermark = self.clock.watermark(now);
        self.fire(topic, partition, watermark, emit_now, out);
    }

    /// The accumulator of sessions `olds` of `window`'s key merged into one.
    fn merge_stored(
        &mut self,
        state: &SharedState,
        window: &KeyedWindow,
        olds: &[(i64, i64)],
    ) -> Result<Option<Vec<u8>>, RecordError> {
        let mut acc: Option<Vec<u8>> = None;
        for &(s, e) in olds {
            let Some(entry) = state.get(&(window.key.clone(), entry_name(s, e))) else {
                continue;
            };
            let part = KeyedWindow {
                key: window.key.clone(),
                start: s,
                end: e,
            };
            let stored = stored_acc(&mut self.agg, &part, entry)?;
            acc = Some(match acc {
                None => stored,
                Some(a) => self
                    .agg
                    .merge(window, &a, &stored)?
                    .map_err(|message| RecordError {
                        plugin: self.agg.name().to_string(),
                        kind: ErrorKind::Plugin,
                        message: format!("merging sessions: {message}"),
                    })?,
            });
        }
        Ok(acc)
    }

    /// Emit the windows in `now` (updated after the watermark passed them; their "fired" mark
    /// and cleanup timer are set) and every window whose end the watermark passed; remove the
    /// windows past their cleanup time.
    fn fire(
        &mut self,
        topic: &str,
        partition: i32,
        watermark: i64,
        now: Vec<StateKey>,
        out: &mut WindowOutput,
    ) {
        let lateness = self.spec.allowed_lateness;
        let Some(panes) = self.partitions.get_mut(&(topic.to_string(), partition)) else {
            return;
        };
        let mut changes: Vec<Change> = if self.defer {
            now.iter().cloned().map(Change::MarkFired).collect()
        } else {
            Vec::new()
        };
        let mut due = now;
        while let Some((at, id)) = panes.timers.pop_due(watermark) {
            let Some((_, end)) = parse_entry_name(&id.1) else {
                continue;
            };
            let Some(entry) = panes.state.get(&id) else {
                continue;
            };
            if entry.value.first() != Some(&FIRED) && at == end - 1 {
                due.push(id.clone());
            }
            let cleanup = (end - 1).saturating_add(lateness);
            if cleanup <= watermark {
                changes.push(Change::Remove(id));
                if panes.fired_through < watermark {
                    panes.fired_through = watermark;
                    changes.push(Change::FiredThrough(watermark));
                }
            } else {
                changes.push(Change::MarkFired(id.clone()));
                panes.timers.set(cleanup, id);
            }
        }
        let mut fired = Vec::with_capacity(due.len());
        for id in &due {
            if let (Some((start, end)), Some(entry)) =
                (parse_entry_name(&id.1), panes.state.get(id))
            {
                let window = KeyedWindow {
                    key: id.0.clone(),
                    start,
                    end,
                };
                match stored_acc(&mut self.agg, &window, entry.clone()) {
                    Ok(acc) => fired.push((window, acc)),
                    Err(error) => {
                        let acc = entry.value.get(1..).unwrap_or_default().to_vec();
                        out.failures
                            .push((window_failure(&window, acc, topic, partition), error));
                    }
                }
            }
        }
        let offset = panes.last_offset;
        let results = emit(&mut self.agg, &fired);
        for ((window, acc), result) in fired.into_iter().zip(results) {
            match result {
                Ok(outputs) => out.records.extend(
                    outputs
                        .into_iter()
                        .map(|o| window_record(o, &window, topic, partition, offset)),
                ),
                Err(error) => {
                    let record = window_failure(&window, acc, topic, partition);
                    out.failures.push((record, error));
                }
            }
        }
        let panes = self
            .partitions
            .get_mut(&(topic.to_string(), partition))
            .expect("known");
        if self.defer {
            panes.unheld.extend(changes);
        } else {
            apply(&panes.state, changes);
        }
    }
}

/// A window being formed in a batch: key, start, end.
type Pending = (Option<Vec<u8>>, i64, i64);

/// One key's session after merging: its bounds, the batch's records in it (by index) and the
/// stored sessions it covers.
#[derive(Debug, PartialEq, Eq)]
struct Session {
    start: i64,
    end: i64,
    members: Vec<usize>,
    stored: Vec<(i64, i64)>,
}

/// Merge stored sessions and the records' proto-sessions `(ts, ts + gap, index)` wherever they
/// overlap or touch (Flink's `TimeWindow::intersects`), keeping only sessions with new records.
fn sessions(
    stored: &[(i64, i64)],
    protos: impl Iterator<Item = (i64, i64, usize)>,
) -> Vec<Session> {
    let mut spans: Vec<(i64, i64, Option<usize>)> =
        stored.iter().map(|&(s, e)| (s, e, None)).collect();
    spans.extend(protos.map(|(s, e, i)| (s, e, Some(i))));
    spans.sort_by_key(|&(s, e, _)| (s, e));
    let mut merged: Vec<Session> = Vec::new();
    for (start, end, member) in spans {
        let session = match merged.last_mut() {
            Some(last) if start <= last.end => last,
            _ => {
                merged.push(Session {
                    start,
                    end,
                    members: Vec::new(),
                    stored: Vec::new(),
                });
                merged.last_mut().expect("pushed")
            }
        };
        session.end = session.end.max(end);
        match member {
            Some(i) => session.members.push(i),
            None => session.stored.push((start, end)),
        }
    }
    merged.retain(|s| !s.members.is_empty());
    for s in &mut merged {
        s.members.sort_unstable();
    }
    merged
}

/// State entry of a partition's largest event time (not a window: window names are `w` + hex).
fn progress_key() -> StateKey {
    (None, "max-event-time".into())
}

/// State entry of the highest watermark at which the partition's windows were removed, written
/// with the removals. The stage watermark after a restart is the minimum of the partitions'
/// stored progress, and under at least once one partition's progress can reach the store or
/// changelog later than another partition's removals that it allowed (a crash in between
/// loses it); the replayed records of a removed window must still be late, not form it anew
/// and emit it again with only some of its records.
fn fired_through_key() -> StateKey {
    (None, "fired-through".into())
}

fn read_time(state: &dyn StateBackend, key: &StateKey) -> Option<i64> {
    let entry = state.get(key)?;
    Some(i64::from_be_bytes(entry.value.as_slice().try_into().ok()?))
}

/// A partition was assigned with `state` as its window stage's state: it joins the stage's
/// watermark where it left off (or, new, holding it back until it has records or goes idle).
pub fn resume(clock: &Clock, state: &dyn StateBackend, topic: &str, partition: i32, now: Instant) {
    clock.assign(topic, partition, now);
    if let Some(max_ts) = read_time(state, &progress_key()) {
        clock.observe(topic, partition, Some(max_ts), now);
    }
}

/// Apply held changes whose outputs were delivered.
fn release(panes: &mut Panes) {
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

fn apply(state: &SharedState, changes: Vec<Change>) {
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
        if read_time(&**state, &key).is_none_or(|stored| stored < watermark) {
            writes.insert(key, Some(Entry::new(watermark.to_be_bytes().to_vec(), 0)));
        }
    }
    state.apply(writes);
}

/// Fold panes; when the call traps, fold them one at a time on fresh instances so the trap is
/// pinned on one pane's records.
fn accumulate<A: Aggregator>(agg: &mut A, panes: &[Pane]) -> Vec<Result<PaneResult, RecordError>> {
    pinned(agg, panes, A::accumulate)
}

/// Render fired windows, pinning a trap on one window the same way.
fn emit<A: Aggregator>(
    agg: &mut A,
    fired: &[(KeyedWindow, Vec<u8>)],
) -> Vec<Result<Vec<Output>, RecordError>> {
    pinned(agg, fired, A::emit)
}

/// A batch call into the plugin: one result per item, or a trap.
type AggregatorCall<A, T, R> = fn(&mut A, &[T]) -> Result<Vec<Result<R, String>>, RecordError>;

/// One result per item from one `call` over all `items`; a plugin error names the plugin, a
/// wrong number of results fails them all, and a trap is retried item by item.
fn pinned<A: Aggregator, T, R>(
    agg: &mut A,
    items: &[T],
    call: AggregatorCall<A, T, R>,
) -> Vec<Result<R, RecordError>> {
    if items.is_empty() {
        return Vec::new();
    }
    let plugin = agg.name().to_string();
    let failed = |message: String| RecordError {
        plugin: plugin.clone(),
        kind: ErrorKind::Plugin,
        message,
    };
    match call(agg, items) {
        Ok(results) if results.len() == items.len() => {
            results.into_iter().map(|r| r.map_err(&failed)).collect()
        }
        Ok(results) => {
            let message = format!(
                "returned {} results for {} windows",
                results.len(),
                items.len()
            );
            items.iter().map(|_| Err(failed(message.clone()))).collect()
        }
        Err(error) if items.len() == 1 => vec![Err(error)],
        Err(_) => items
            .iter()
            .flat_map(|item| pinned(agg, std::slice::from_ref(item), call))
            .collect(),
    }
}

/// The accumulator of `window` stored in `entry` (a "fired" flag, then the plugin's bytes), in
/// the shape of the running build: accumulators an older build wrote are migrated as they are
/// read, like plugins' own state (see `engine::host`), so a window that spans an upgrade goes on
/// from what the old build folded in.
fn stored_acc<A: Aggregator>(
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
            crate::engine::describe_key(&window.key)
        ),
    })
}

/// What a failure of fired window `window` is reported as: its key and accumulator, offset -1.
fn window_failure(window: &KeyedWindow, acc: Vec<u8>, topic: &str, partition: i32) -> Record {
    Record {
        key: window.key.clone(),
        value: Some(acc),
        headers: window_headers(window),
        timestamp: window.end - 1,
        topic: topic.to_string(),
        partition,
        offset: -1,
    }
}

fn window_headers(window: &KeyedWindow) -> Vec<Header> {
    vec![
        Header {
            key: "weir.window.start".into(),
            value: window.start.to_string().into_bytes(),
        },
        Header {
            key: "weir.window.end".into(),
            value: window.end.to_string().into_bytes(),
        },
    ]
}

/// A fired window's output as a record: the window's bounds go in headers, so a consumer can
/// tell them whatever the plugin renders.
fn window_record(
    output: Output,
    window: &KeyedWindow,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Record {
    let mut headers = output.headers;
    headers.extend(window_headers(window));
    Record {
        key: output.key,
        value: output.value,
        headers,
        timestamp: output.timestamp,
        topic: topic.to_string(),
        partition,
        offset,
    }
}

/// The event time of `rec`, or why it has none.
fn event_time(time: &EventTime, rec: &Record) -> Result<i64, String> {
    let pointer = match time {
        EventTime::Record => return Ok(rec.timestamp),
        EventTime::Field(pointer) => pointer,
    };
    let value = rec.value.as_deref().ok_or_else(|| {
        format!("no event time: the record has no value to read `{pointer}` from")
    })?;
    let json: serde_json::Value = serde_json::from_slice(value)
        .map_err(|e| format!("no event time: the value is not JSON ({e})"))?;
    match json.pointer(pointer) {
        None => Err(format!("no event time: the value has no `{pointer}`")),
        Some(serde_json::Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .ok_or_else(|| format!("event time `{pointer}` = {n} is out of range")),
        Some(serde_json::Value::String(s)) => humantime::parse_rfc3339_weak(s)
            .map_err(|e| format!("event time `{pointer}` = \"{s}\" is not RFC 3339: {e}"))
            .map(|t| match t.duration_since(std::time::UNIX_EPOCH) {
                Ok(d) => d.as_millis() as i64,
                Err(e) => -(e.duration().as_millis() as i64),
            }),
        Some(other) => Err(format!(
            "event time `{pointer}` is {other}, not milliseconds or an RFC 3339 string"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::MemoryState;

    /// Keeps every value it was given: an emitted window says exactly which records it holds.
    struct Collect;

    impl Aggregator for Collect {
        fn accumulate(
            &mut self,
            panes: &[Pane],
        ) -> Result<Vec<Result<PaneResult, String>>, RecordError> {
            Ok(panes
                .iter()
                .map(|pane| {
                    let mut acc = pane.acc.clone().unwrap_or_default();
                    let mut errors = Vec::new();
                    for (i, e) in pane.events.iter().enumerate() {
                        let v = e.value.clone().unwrap_or_default();
                        if v == b"bad" {
                            errors.push((i as u32, "bad record".to_string()));
                            continue;
                        }
                        if !acc.is_empty() {
                            acc.push(b',');
                        }
                        acc.extend(v);
                    }
                    Ok(PaneResult { acc, errors })
                })
                .collect())
        }

        fn merge(
            &mut self,
            _window: &KeyedWindow,
            a: &[u8],
            b: &[u8],
        ) -> Result<Result<Vec<u8>, String>, RecordError> {
            Ok(Ok([a, b].join(&b',')))
        }

        fn emit(
            &mut self,
            fired: &[(KeyedWindow, Vec<u8>)],
        ) -> Result<Vec<Result<Vec<Output>, String>>, RecordError> {
            Ok(fired
                .iter()
                .map(|(w, acc)| {
                    let mut values: Vec<&str> = std::str::from_utf8(acc)
                        .unwrap()
                        .split(',')
                        .filter(|v| !v.is_empty())
                        .collect();
                    values.sort_unstable();
                    let key = String::from_utf8_lossy(w.key.as_deref().unwrap_or(b"-"));
                    let text = format!("{key} {}..{}: {}", w.start, w.end, values.join(","));
                    Ok(vec![Output {
                        key: w.key.clone(),
                        value: Some(text.into_bytes()),
                        headers: Vec::new(),
                        timestamp: w.end - 1,
                    }])
                })
                .collect())
        }

        fn name(&self) -> &str {
            "collect"
        }
    }

    fn spec(kind: WindowKind) -> WindowSpec {
        WindowSpec {
            kind,
            time: EventTime::Record,
            max_out_of_order: 0,
            idle_timeout: None,
            allowed_lateness: 0,
            late: LateOutput::Drop,
        }
    }

    fn stage(spec: WindowSpec) -> WindowStage<Collect> {
        let spec = Arc::new(spec);
        let clock = Arc::new(Clock::new(&spec));
        WindowStage::new(spec, Collect, clock)
    }

    fn rec(partition: i32, offset: i64, key: &str, ts: i64, value: &str) -> Record {
        Record {
            key: Some(key.as_bytes().to_vec()),
            value: Some(value.as_bytes().to_vec()),
            headers: Vec::new(),
            timestamp: ts,
            topic: "t".into(),
            partition,
            offset,
        }
    }

    /// What a test sees of a call: fired windows, late values and failed values, as text.
    #[derive(Debug, Default, PartialEq)]
    struct Seen {
        fired: Vec<String>,
        late: Vec<String>,
        failed: Vec<String>,
    }

    fn seen(out: WindowOutput) -> Seen {
        let text =
            |v: &Option<Vec<u8>>| String::from_utf8_lossy(v.as_deref().unwrap()).into_owned();
        Seen {
            fired: out.records.iter().map(|r| text(&r.value)).collect(),
            late: out.late.iter().map(|l| text(&l.record.value)).collect(),
            failed: out.failures.iter().map(|(r, _)| text(&r.value)).collect(),
        }
    }

    /// Feed `(key, ts, value)` records one batch each on partition 0; what every batch did.
    fn feed<A: Aggregator>(stage: &mut WindowStage<A>, records: &[(&str, i64, &str)]) -> Vec<Seen> {
        let now = Instant::now();
        records
            .iter()
            .enumerate()
            .map(|(i, &(k, ts, v))| seen(stage.process(vec![rec(0, i as i64, k, ts, v)], now)))
            .collect()
    }

    fn fired(all: &[Seen]) -> Vec<String> {
        all.iter().flat_map(|s| s.fired.clone()).collect()
    }

    #[test]
    fn tumbling_windows_fire_once_the_watermark_passes_their_end() {
        let mut s = stage(spec(WindowKind::Tumbling { size: 60_000 }));
        let out = feed(
            &mut s,
            &[
                ("a", 1_000, "1"),
                ("b", 2_000, "2"),
                ("a", 59_999, "3"),
                ("a", 60_000, "4"), // watermark 59_999: [0, 60s) fires for both keys
                ("a", 119_000, "5"),
            ],
        );
        assert!(out[..3].iter().all(|s| s.fired.is_empty()), "{out:?}");
        let mut first = out[3].fired.clone();
        first.sort();
        assert_eq!(first, ["a 0..60000: 1,3", "b 0..60000: 2"]);
        assert!(out[4].fired.is_empty());
        let rest = seen(s.finish());
        assert_eq!(rest.fired, ["a 60000..120000: 4,5"]);
    }

    #[test]
    fn records_out_of_order_within_the_bound_are_counted() {
        let mut s = stage(WindowSpec {
            max_out_of_order: 5_000,
            ..spec(WindowKind::Tumbling { size: 60_000 })
        });
        let out = feed(
            &mut s,
            &[
                ("a", 10_000, "1"),
                ("a", 4_000, "2"),
                ("a", 63_000, "3"), // watermark 57_999
                ("a", 58_000, "4"), // still in time
                ("a", 64_999, "5"), // watermark 59_998: not yet
                ("a", 65_000, "6"), // watermark 59_999: fires
                ("a", 59_000, "7"), // late: dropped (no allowed lateness)
            ],
        );
        assert_eq!(fired(&out), ["a 0..60000: 1,2,4"]);
        assert_eq!(out[5].fired.len(), 1);
        assert_eq!(out[6].late, ["7"]);
    }

    #[test]
    fn late_records_within_allowed_lateness_update_and_re_emit() {
        let mut s = stage(WindowSpec {
            allowed_lateness: 10_000,
            ..spec(WindowKind::Tumbling { size: 60_000 })
        });
        let out = feed(
            &mut s,
            &[
                ("a", 1_000, "1"),
                ("a", 61_000, "2"), // fires [0, 60s)
                ("a", 30_000, "3"), // late but allowed: fires again, updated
                ("a", 69_998, "4"), // watermark 69_997 < 59_999 + 10_000
                ("a", 30_001, "5"), // still allowed
                ("a", 69_999, "6"), // watermark 69_998 ≥ cleanup 69_999? no: 69_998
                ("a", 70_000, "7"), // watermark 69_999: cleanup
                ("a", 30_002, "8"), // too late
            ],
        );
        assert_eq!(
            fired(&out),
            ["a 0..60000: 1", "a 0..60000: 1,3", "a 0..60000: 1,3,5"]
        );
        assert_eq!(out[7].late, ["8"]);
        assert!(out[..7].iter().all(|s| s.late.is_empty()));
    }

    #[test]
    fn sliding_windows_overlap() {
        let mut s = stage(spec(WindowKind::Sliding {
            size: 10_000,
            slide: 5_000,
        }));
        let out = feed(
            &mut s,
            &[("a", 7_000, "1"), ("a", 12_000, "2"), ("a", 30_000, "3")],
        );
        let mut all = fired(&out);
        all.sort();
        assert_eq!(
            all,
            ["a 0..10000: 1", "a 10000..20000: 2", "a 5000..15000: 1,2"]
        );
        let mut rest = seen(s.finish()).fired;
        rest.sort();
        assert_eq!(rest, ["a 25000..35000: 3", "a 30000..40000: 3"]);
    }

    #[test]
    fn sessions_merge_when_a_record_bridges_them() {
        let mut s = stage(WindowSpec {
            max_out_of_order: 20_000,
            ..spec(WindowKind::Session { gap: 10_000 })
        });
        let out = feed(
            &mut s,
            &[
                ("a", 0, "1"),      // [0, 10s)
                ("a", 15_000, "2"), // [15s, 25s)
                ("b", 9_000, "3"),  // another key: its own session
                ("a", 8_000, "4"),  // [8s, 18s) bridges both: [0, 25s)
                ("a", 24_000, "5"), // extends it to [0, 34s)
                ("a", 50_000, "6"), // watermark 29_999: fires b's session only
            ],
        );
        assert_eq!(fired(&out), ["b 9000..19000: 3"]);
        let mut rest = seen(s.finish()).fired;
        rest.sort();
        assert_eq!(rest, ["a 0..34000: 1,2,4,5", "a 50000..60000: 6"]);
    }

    #[test]
    fn a_session_the_watermark_passed_is_not_merged_into() {
        let mut s = stage(spec(WindowKind::Session { gap: 10_000 }));
        let out = feed(
            &mut s,
            &[
                ("a", 0, "1"),
                ("a", 15_000, "2"), // watermark 14_999: [0, 10s) fires and is gone
                ("a", 8_000, "3"),  // joins [15s, 25s) only: [8s, 25s)
            ],
        );
        assert_eq!(fired(&out), ["a 0..10000: 1"]);
        assert_eq!(seen(s.finish()).fired, ["a 8000..25000: 2,3"]);
    }

    #[test]
    fn sessions_touching_merge_and_a_whole_batch_merges_at_once() {
        let mut s = stage(spec(WindowKind::Session { gap: 10 }));
        let now = Instant::now();
        let batch = vec![
            rec(0, 0, "a", 100, "1"),
            rec(0, 1, "a", 120, "2"),
            rec(0, 2, "a", 110, "3"), // [110, 120) touches [120, 130): one session
        ];
        assert!(seen(s.process(batch, now)).fired.is_empty());
        assert_eq!(seen(s.finish()).fired, ["a 100..130: 1,2,3"]);
    }

    #[test]
    fn an_idle_partition_stops_holding_the_watermark_back() {
        let mut s = stage(WindowSpec {
            idle_timeout: Some(Duration::from_secs(30)),
            ..spec(WindowKind::Tumbling { size: 1_000 })
        });
        let t0 = Instant::now();
        s.clock.assign("t", 0, t0);
        s.clock.assign("t", 1, t0);
        let out = s.process(
            vec![rec(1, 0, "a", 500, "1"), rec(1, 1, "a", 5_000, "2")],
            t0,
        );
        assert!(
            out.records.is_empty(),
            "partition 0 holds the watermark back"
        );
        // Partition 0 has been quiet for longer than the idle timeout: partition 1 alone counts.
        let later = t0 + Duration::from_secs(31);
        let out = seen(s.process(vec![rec(1, 2, "a", 6_000, "3")], later));
        assert_eq!(out.fired, ["a 0..1000: 1", "a 5000..6000: 2"]);
        // When every partition is idle, the watermark stays where it is.
        let much_later = later + Duration::from_secs(60);
        assert_eq!(s.clock.watermark(much_later), 5_999);
        // Partition 0 wakes up: it counts again, and the watermark does not go back.
        let out = seen(s.process(vec![rec(0, 0, "z", 100, "late")], much_later));
        assert_eq!(
            out.late,
            ["late"],
            "behind the watermark that already passed"
        );
        assert_eq!(s.clock.watermark(much_later), 5_999);
    }

    #[test]
    fn the_stage_watermark_is_the_minimum_over_partitions() {
        let mut s = stage(spec(WindowKind::Tumbling { size: 1_000 }));
        let now = Instant::now();
        s.clock.assign("t", 0, now);
        s.clock.assign("t", 1, now);
        s.process(vec![rec(0, 0, "a", 10_000, "1")], now);
        assert_eq!(
            s.clock.watermark(now),
            i64::MIN,
            "partition 1 has no records yet"
        );
        s.process(vec![rec(1, 0, "b", 2_500, "2")], now);
        assert_eq!(s.clock.watermark(now), 2_499);
        s.clock.forget("t", 1);
        assert_eq!(
            s.clock.watermark(now),
            9_999,
            "revoked partitions no longer count"
        );
    }

    #[test]
    fn windows_survive_a_restart_through_their_state() {
        let state = MemoryState::shared();
        let mut s = stage(spec(WindowKind::Tumbling { size: 1_000 }));
        s.set_state(state.clone());
        feed(&mut s, &[("a", 100, "1"), ("a", 200, "2")]);
        drop(s);
        let mut s = stage(spec(WindowKind::Tumbling { size: 1_000 }));
        s.set_state(state.clone());
        let out = feed(&mut s, &[("a", 1_500, "3")]);
        assert_eq!(fired(&out), ["a 0..1000: 1,2"]);
        assert!(
            state
                .all()
                .iter()
                .all(|((_, name), _)| name != &entry_name(0, 1_000)),
            "a fired window without lateness is removed"
        );
    }

    /// At least once, a crash can leave one partition's stored progress behind what it was when
    /// another partition's windows were removed, so the stage watermark after the restart is
    /// lower. The removed window's replayed records are late all the same: emitting it again
    /// with only them would undercount it.
    #[test]
    fn a_removed_window_is_not_formed_again_by_its_replayed_records() {
        let (p0, p1) = (MemoryState::shared(), MemoryState::shared());
        let now = Instant::now();
        let mut s = stage(spec(WindowKind::Tumbling { size: 1_000 }));
        s.clock.assign("t", 0, now);
        s.clock.assign("t", 1, now);
        s.set_state(p1.clone());
        s.process(vec![rec(1, 0, "b", 500, "x")], now);
        let p1_behind = MemoryState::shared();
        p1_behind.apply(p1.all().into_iter().map(|(k, e)| (k, Some(e))).collect());
        s.process(vec![rec(1, 1, "b", 5_000, "y")], now);
        s.set_state(p0.clone());
        s.process(
            vec![rec(0, 0, "a", 100, "1"), rec(0, 1, "a", 200, "2")],
            now,
        );
        let out = seen(s.process(vec![rec(0, 2, "a", 2_000, "3")], now));
        assert_eq!(out.fired, ["a 0..1000: 1,2"]);
        drop(s);

        // The restart: partition 0 as it was, partition 1 without its second record.
        let mut s = stage(spec(WindowKind::Tumbling { size: 1_000 }));
        resume(&s.clock, &*p0, "t", 0, now);
        resume(&s.clock, &*p1_behind, "t", 1, now);
        assert_eq!(s.clock.watermark(now), 499, "held back by partition 1");
        s.set_state(p0.clone());
        let out = seen(s.process(vec![rec(0, 1, "a", 200, "2")], now));
        assert_eq!(out.late, ["2"], "replayed after its window was removed");
        assert_eq!(out.fired, Vec::<String>::new());
        s.set_state(p1_behind.clone());
        s.process(vec![rec(1, 1, "b", 5_000, "y")], now);
        s.set_state(p0.clone());
        let out = seen(s.process(vec![rec(0, 3, "a", 2_500, "4")], now));
        assert_eq!(
            out.fired,
            Vec::<String>::new(),
            "0..1000 is not emitted again"
        );
        let mut rest = seen(s.finish()).fired;
        rest.sort();
        assert_eq!(rest, ["a 2000..3000: 3,4", "b 5000..6000: y"]);
    }

    /// [`Collect`], a build later: state version 1, whose accumulators mark what came from
    /// version 0 with `m`; an accumulator holding `x` cannot be migrated.
    struct Migrating(Collect);

    impl Aggregator for Migrating {
        fn accumulate(
            &mut self,
            panes: &[Pane],
        ) -> Result<Vec<Result<PaneResult, String>>, RecordError> {
            self.0.accumulate(panes)
        }

        fn merge(
            &mut self,
            window: &KeyedWindow,
            a: &[u8],
            b: &[u8],
        ) -> Result<Result<Vec<u8>, String>, RecordError> {
            self.0.merge(window, a, b)
        }

        fn emit(
            &mut self,
            fired: &[(KeyedWindow, Vec<u8>)],
        ) -> Result<Vec<Result<Vec<Output>, String>>, RecordError> {
            self.0.emit(fired)
        }

        fn name(&self) -> &str {
            "collect"
        }

        fn state_version(&self) -> u32 {
            1
        }

        fn migrate(
            &mut self,
            from: u32,
            name: &str,
            value: &[u8],
        ) -> Result<Result<Vec<u8>, String>, RecordError> {
            assert_eq!((from, name), (0, "accumulator"));
            let text = String::from_utf8_lossy(value);
            if text.contains('x') {
                return Ok(Err("cannot migrate x".into()));
            }
            let items: Vec<String> = text.split(',').map(|v| format!("m{v}")).collect();
            Ok(Ok(items.join(",").into_bytes()))
        }
    }

    #[test]
    fn accumulators_an_older_build_wrote_are_migrated_as_they_are_read() {
        let state = MemoryState::shared();
        let spec = Arc::new(spec(WindowKind::Tumbling { size: 1_000 }));
        let clock = Arc::new(Clock::new(&spec));
        let mut old = WindowStage::new(spec.clone(), Collect, clock.clone());
        old.set_state(state.clone());
        feed(
            &mut old,
            &[("a", 100, "1"), ("a", 200, "2"), ("b", 300, "x")],
        );
        drop(old);

        let mut new = WindowStage::new(spec, Migrating(Collect), clock);
        new.set_state(state.clone());
        // `a`'s window is migrated when the next record folds in, `b`'s when it fires.
        let now = Instant::now();
        let out = seen(new.process(vec![rec(0, 3, "a", 400, "3")], now));
        assert_eq!(out, Seen::default());
        let window = (Some(b"a".to_vec()), entry_name(0, 1_000));
        assert_eq!(state.get(&window).unwrap().version, 1);
        let out = new.process(vec![rec(0, 4, "c", 1_500, "4")], now);
        let failures: Vec<(String, ErrorKind)> = out
            .failures
            .iter()
            .map(|(_, e)| (e.message.clone(), e.kind))
            .collect();
        assert_eq!(seen(out).fired, ["a 0..1000: 3,m1,m2"]);
        assert_eq!(
            failures,
            [(
                "the accumulator of window [0, 1000) of key `b` was written by state version 0 \
                 and could not be migrated to version 1: cannot migrate x"
                    .to_string(),
                ErrorKind::Migration
            )]
        );
    }

    #[test]
    fn a_resumed_partition_with_nothing_new_does_not_hold_the_watermark_back() {
        let (s0, s1) = (MemoryState::shared(), MemoryState::shared());
        let now = Instant::now();
        let mut s = stage(spec(WindowKind::Tumbling { size: 1_000 }));
        s.clock.assign("t", 0, now);
        s.clock.assign("t", 1, now);
        s.set_state(s0.clone());
        s.process(vec![rec(0, 0, "a", 9_000, "1")], now);
        s.set_state(s1.clone());
        s.process(vec![rec(1, 0, "b", 2_000, "2")], now);
        drop(s);
        // A restart: partition 0 has nothing left to read, partition 1 goes on.
        let mut s = stage(spec(WindowKind::Tumbling { size: 1_000 }));
        resume(&s.clock, &*s0, "t", 0, now);
        resume(&s.clock, &*s1, "t", 1, now);
        assert_eq!(s.clock.watermark(now), 1_999);
        s.set_state(s1.clone());
        let out = seen(s.process(vec![rec(1, 1, "b", 5_000, "3")], now));
        assert_eq!(out.fired, ["b 2000..3000: 2"]);
        assert_eq!(s.clock.watermark(now), 4_999);
    }

    #[test]
    fn at_least_once_a_fired_window_stays_until_its_output_is_delivered() {
        struct Flag(std::sync::atomic::AtomicBool);
        impl Delivered for Flag {
            fn delivered(&self) -> bool {
                self.0.load(std::sync::atomic::Ordering::SeqCst)
            }
        }
        let state = MemoryState::shared();
        let mut s = stage(spec(WindowKind::Tumbling { size: 1_000 }));
        s.set_state(state.clone());
        s.defer_until_delivered(true);
        let flag = Arc::new(Flag(false.into()));
        let token: Arc<dyn Delivered> = flag.clone();
        let out = feed(&mut s, &[("a", 100, "1"), ("a", 1_500, "2")]);
        s.hold(&token);
        assert_eq!(fired(&out), ["a 0..1000: 1"]);
        let window = (Some(b"a".to_vec()), entry_name(0, 1_000));
        assert!(
            state.get(&window).is_some(),
            "kept while the output is in flight"
        );
        // A crash now: the restarted stage fires the window again (a duplicate, never a loss).
        let mut again = stage(spec(WindowKind::Tumbling { size: 1_000 }));
        again.set_state(state.clone());
        assert_eq!(
            fired(&feed(&mut again, &[("a", 1_600, "3")])),
            ["a 0..1000: 1"]
        );
        // Delivered: the next call removes it.
        flag.0.store(true, std::sync::atomic::Ordering::SeqCst);
        feed(&mut s, &[("a", 1_700, "4")]);
        assert!(state.get(&window).is_none());
    }

    #[test]
    fn event_times_come_from_a_field_as_millis_or_rfc3339() {
        let mut s = stage(WindowSpec {
            time: EventTime::Field("/ts".into()),
            ..spec(WindowKind::Tumbling { size: 60_000 })
        });
        let out = s.process(
            vec![
                rec(0, 0, "a", 0, r#"{"ts": 1000}"#),
                rec(0, 1, "a", 0, r#"{"ts": "1970-01-01T00:00:02Z"}"#),
                rec(0, 2, "a", 0, r#"{"other": 1}"#),
                rec(0, 3, "a", 0, r#"{"ts": true}"#),
                rec(0, 4, "a", 0, "bad"),
            ],
            Instant::now(),
        );
        let errors: Vec<String> = out.failures.iter().map(|(_, e)| e.to_string()).collect();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors[0].contains("event-time") && errors[0].contains("no `/ts`"),
            "{errors:?}"
        );
        assert!(errors[1].contains("true"), "{errors:?}");
        assert!(errors[2].contains("not JSON"), "{errors:?}");
        let fired = seen(s.finish()).fired;
        assert_eq!(fired.len(), 1);
        assert!(fired[0].starts_with("a 0..60000: "), "{fired:?}");
    }

    #[test]
    fn a_record_the_plugin_rejects_fails_alone() {
        let mut s = stage(spec(WindowKind::Tumbling { size: 1_000 }));
        let out = seen(s.process(
            vec![
                rec(0, 0, "a", 1, "1"),
                rec(0, 1, "a", 2, "bad"),
                rec(0, 2, "a", 3, "3"),
            ],
            Instant::now(),
        ));
        assert_eq!(out.failed, ["bad"]);
        assert_eq!(seen(s.finish()).fired, ["a 0..1000: 1,3"]);
    }

    #[test]
    fn entry_names_sort_by_start_and_round_trip() {
        let names: Vec<String> = [(-5_000, 0), (-1, 10), (0, 1), (1 << 40, 1 << 41)]
            .iter()
            .map(|&(s, e)| entry_name(s, e))
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(parse_entry_name(&entry_name(-7, 3)), Some((-7, 3)));
    }
}
