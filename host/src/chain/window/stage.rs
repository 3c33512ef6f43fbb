//! A window stage of one worker's chain: assigns a batch's records to windows, folds them in
//! one plugin call, keeps the windows in state and fires them as the watermark passes.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Instant,
};

use super::{
    aggregator::{accumulate, emit, Aggregator},
    assign::{event_time, sessions, Pending},
    clock::Clock,
    store::{
        apply, entry_name, fired_through_key, parse_entry_name, progress_key, read_i64, release,
        stored_acc, Change, Panes, FIRED,
    },
    timers::Timers,
    Delivered, Late, WindowOutput,
};
use crate::{
    config::{LateOutput, WindowKind, WindowSpec},
    engine::{
        Entry, ErrorKind, Header, KeyedWindow, MemoryState, Output, Pane, PaneResult, Record,
        RecordError, SharedState, StateKey,
    },
};

/// One window stage of one worker's chain.
pub struct WindowStage<A> {
    spec: Arc<WindowSpec>,
    agg: A,
    pub(super) clock: Arc<Clock>,
    partitions: HashMap<(String, i32), Panes>,
    /// The state to use for partitions met from now on (see [`WindowStage::set_state`]).
    state: Option<SharedState>,
    /// At least once: hold "fired" marks and removals until the outputs are delivered.
    defer: bool,
    /// `policy = "fail"`: a batch's records after one without an event time are not folded in.
    stop_at_failure: bool,
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
            stop_at_failure: false,
        }
    }

    /// The stage's watermark clock.
    pub fn clock(&self) -> &Arc<Clock> {
        &self.clock
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

    /// `policy = "fail"`: the records of a batch after one whose event time cannot be read are
    /// dropped before they are folded into windows, as the chain drops them before later
    /// stages (see `Chain::stop_at_first_failure`).
    pub fn stop_at_first_failure(&mut self) {
        self.stop_at_failure = true;
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
            let state = state.unwrap_or_else(MemoryState::shared);
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
            let fired_through = read_i64(&*state, &fired_through_key()).unwrap_or(i64::MIN);
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

    /// Run one partition's records through the stage: read their event times, form their
    /// windows, fold them in one plugin call, keep the windows in state, then fire what the
    /// watermark passed.
    fn process_partition(
        &mut self,
        topic: &str,
        partition: i32,
        records: Vec<Record>,
        now: Instant,
        out: &mut WindowOutput,
    ) {
        let watermark = self.clock.watermark(now);
        let panes = self.panes(topic, partition);
        release(panes);
        let last_input = records.last().map(|r| r.offset);
        let failures_before = out.failures.len();
        // A window this partition removed stays gone, even when the stage watermark after a
        // restart is lower than when it was removed: a replayed record of it is late.
        let late_at = watermark.max(panes.fired_through);
        let state = panes.state.clone();
        let mut batch = self.timed(records, out);
        let Fold {
            formed,
            windows,
            panes: panes_in,
            results,
        } = self.fold(&state, &mut batch, late_at, out);
        // Windows fired now carry the offset of the last input they stand after. Under `fail`,
        // that is the last one before the failing record: outputs at or past it are dropped
        // with the records after it (and the windows would be lost, marked fired).
        let first_failed = out.failures[failures_before..]
            .iter()
            .map(|(r, _)| r.offset)
            .filter(|&o| o >= 0)
            .min();
        let last = match (self.stop_at_failure, first_failed) {
            (true, Some(failed)) => Some(failed - 1),
            _ => last_input,
        };
        if let Some(last) = last {
            self.partitions
                .get_mut(&(topic.to_string(), partition))
                .expect("made above")
                .last_offset = last;
        }
        let plugin = self.agg.name().to_string();
        let mut folded = Folded::default();
        for ((window, members), (pane, result)) in
            windows.into_iter().zip(panes_in.into_iter().zip(results))
        {
            let Some(acc) = batch.folded(&members, result, &plugin, out) else {
                continue;
            };
            let merged = formed.merges.get(&window);
            self.keep(&state, window, &pane, acc, merged, watermark, &mut folded);
        }
        // The partition's progress in event time is kept with its windows: after a restart or a
        // move, a partition with nothing new to read must not hold the watermark back.
        if let Some(max_ts) = batch.max_ts {
            if read_i64(&*state, &progress_key()).is_none_or(|stored| stored < max_ts) {
                let entry = Entry::new(max_ts.to_be_bytes().to_vec(), 0);
                folded.writes.insert(progress_key(), Some(entry));
            }
        }
        state.apply(folded.writes);
        let panes = self
            .partitions
            .get_mut(&(topic.to_string(), partition))
            .expect("made above");
        for (at, id) in folded.timers {
            match at {
                Some(at) => panes.timers.set(at, id),
                None => panes.timers.remove(&id),
            }
        }
        for (i, (rec, _)) in batch.records.into_iter().enumerate() {
            if batch.late[i] {
                out.late.push(Late {
                    record: rec,
                    watermark: late_at,
                });
            }
        }
        self.clock.observe(topic, partition, batch.max_ts, now);
        let watermark = self.clock.watermark(now);
        self.fire(topic, partition, watermark, folded.emit_now, out);
    }

    /// Form the batch's windows, seed them from state and fold them in one plugin call. Under
    /// `policy = "fail"` a record that fails cuts the batch: the fold is done again without it
    /// and the records after it (which the chain drops too), so none of them reaches a window,
    /// and the record is the batch's one failure. Plugin errors are otherwise left in the
    /// results, for [`Timed::folded`].
    fn fold(
        &mut self,
        state: &SharedState,
        batch: &mut Timed,
        late_at: i64,
        out: &mut WindowOutput,
    ) -> Fold {
        loop {
            let formed = self.form(state, batch, late_at);
            let mut seed_failures = Vec::new();
            let (windows, panes) = self.seed(state, &formed, batch, &mut seed_failures);
            // One call folds every pane of the batch.
            let results = accumulate(&mut self.agg, &panes);
            let first = self
                .stop_at_failure
                .then(|| first_failure(self.agg.name(), &seed_failures, &windows, &results))
                .flatten();
            if let Some((i, error)) = first {
                out.failures.push((batch.records[i].0.clone(), error));
                batch.cut(i);
                continue;
            }
            for (i, error) in seed_failures {
                out.failures.push((batch.records[i].0.clone(), error));
            }
            return Fold {
                formed,
                windows,
                panes,
                results,
            };
        }
    }

    /// A failure of this stage's plugin, or of a record in it.
    fn error(&self, kind: ErrorKind, message: String) -> RecordError {
        RecordError {
            plugin: self.agg.name().to_string(),
            kind,
            message,
        }
    }

    /// Whether a window ending at `end` is past its allowed lateness at watermark `late_at`.
    fn is_late(&self, end: i64, late_at: i64) -> bool {
        (end - 1).saturating_add(self.spec.allowed_lateness) <= late_at
    }

    /// The records with their event times; records without one fail here.
    fn timed(&self, records: Vec<Record>, out: &mut WindowOutput) -> Timed {
        let mut max_ts = None;
        let mut timed: Vec<(Record, i64)> = Vec::with_capacity(records.len());
        for rec in records {
            match event_time(&self.spec.time, &rec) {
                Ok(ts) => {
                    max_ts = max_ts.max(Some(ts));
                    timed.push((rec, ts));
                }
                Err(message) => {
                    out.failures
                        .push((rec, self.error(ErrorKind::EventTime, message)));
                    if self.stop_at_failure {
                        break;
                    }
                }
            }
        }
        Timed {
            late: vec![false; timed.len()],
            failed: vec![false; timed.len()],
            records: timed,
            max_ts,
        }
    }

    /// The windows the batch's records form; records too late for all of theirs are marked.
    fn form(&self, state: &SharedState, batch: &mut Timed, late_at: i64) -> Formed {
        let mut formed = Formed::default();
        match self.spec.kind {
            WindowKind::Session { gap } => {
                let mut by_key: BTreeMap<Option<Vec<u8>>, Vec<usize>> = BTreeMap::new();
                for (i, (rec, _)) in batch.records.iter().enumerate() {
                    by_key.entry(rec.key.clone()).or_default().push(i);
                }
                for (key, members) in by_key {
                    self.form_sessions(state, batch, late_at, gap, key, &members, &mut formed);
                }
            }
            kind => {
                let mut windows = Vec::new();
                for (i, (rec, ts)) in batch.records.iter().enumerate() {
                    kind.assign(*ts, &mut windows);
                    batch.late[i] = true;
                    for &(start, end) in windows.iter().filter(|w| !self.is_late(w.1, late_at)) {
                        batch.late[i] = false;
                        formed
                            .groups
                            .entry((rec.key.clone(), start, end))
                            .or_default()
                            .push(i);
                    }
                }
            }
        }
        formed
    }

    /// One key's sessions: its records (`members`) merged with each other and with the key's
    /// stored sessions that are not past their lateness.
    #[allow(clippy::too_many_arguments)]
    fn form_sessions(
        &self,
        state: &SharedState,
        batch: &mut Timed,
        late_at: i64,
        gap: i64,
        key: Option<Vec<u8>>,
        members: &[usize],
        formed: &mut Formed,
    ) {
        let stored: Vec<(i64, i64)> = state
            .scan(&key, "w")
            .into_iter()
            .filter_map(|(name, _)| parse_entry_name(&name))
            .filter(|&(_, end)| !self.is_late(end, late_at))
            .collect();
        let protos = members.iter().map(|&i| {
            let ts = batch.records[i].1;
            (ts, ts.saturating_add(gap), i)
        });
        for session in sessions(&stored, protos) {
            let window = (key.clone(), session.start, session.end);
            if self.is_late(session.end, late_at) {
                for i in session.members {
                    batch.late[i] = true;
                }
                continue;
            }
            if session.stored != [(session.start, session.end)] && !session.stored.is_empty() {
                formed.merges.insert(window.clone(), session.stored);
            }
            formed.groups.insert(window, session.members);
        }
    }

    /// Each formed window as a pane to fold, starting from its stored accumulator (a merged
    /// session: from its absorbed sessions' accumulators, merged by the plugin). A window whose
    /// stored state cannot be read fails its records of the batch and is left as it was.
    fn seed(
        &mut self,
        state: &SharedState,
        formed: &Formed,
        batch: &mut Timed,
        failures: &mut Vec<(usize, RecordError)>,
    ) -> (Vec<(Pending, Vec<usize>)>, Vec<Pane>) {
        let mut panes = Vec::with_capacity(formed.groups.len());
        let mut windows = Vec::with_capacity(formed.groups.len());
        for ((key, start, end), members) in &formed.groups {
            let window = KeyedWindow {
                key: key.clone(),
                start: *start,
                end: *end,
            };
            let seeded = match formed.merges.get(&(key.clone(), *start, *end)) {
                Some(olds) => self.merge_stored(state, &window, olds),
                None => state
                    .get(&(key.clone(), entry_name(*start, *end)))
                    .map(|entry| stored_acc(&mut self.agg, &window, entry))
                    .transpose(),
            };
            let acc = match seeded {
                Ok(acc) => acc,
                Err(e) => {
                    for &i in members {
                        batch.failed[i] = true;
                        failures.push((i, e.clone()));
                    }
                    continue;
                }
            };
            let events = members
                .iter()
                .map(|&i| (&batch.records[i].0).into())
                .collect();
            windows.push(((key.clone(), *start, *end), members.clone()));
            panes.push(Pane {
                window,
                acc,
                events,
            });
        }
        (windows, panes)
    }

    /// Keep folded window `window` (its pane `pane`, new accumulator `acc`, the stored sessions
    /// it absorbed `merged`): its entry, the absorbed ones removed, its timers, and whether it
    /// is emitted now.
    #[allow(clippy::too_many_arguments)]
    fn keep(
        &self,
        state: &SharedState,
        (key, start, end): Pending,
        pane: &Pane,
        acc: Vec<u8>,
        merged: Option<&Vec<(i64, i64)>>,
        watermark: i64,
        folded: &mut Folded,
    ) {
        for &(s, e) in merged.into_iter().flatten() {
            folded.writes.insert((key.clone(), entry_name(s, e)), None);
        }
        let id = (key, entry_name(start, end));
        // A window the watermark already passed fired before (or, new and late but within the
        // allowed lateness, never will by timer): emit it now.
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
        let entry = Entry::new(value, self.agg.state_version());
        folded.writes.insert(id.clone(), Some(entry));
        for &(s, e) in merged.into_iter().flatten() {
            folded.timers.push((None, (id.0.clone(), entry_name(s, e))));
        }
        if due {
            let cleanup = (end - 1).saturating_add(self.spec.allowed_lateness);
            folded.timers.push((Some(cleanup), id.clone()));
            folded.emit_now.push(id);
        } else if pane.acc.is_none() || merged.is_some() {
            folded.timers.push((Some(end - 1), id));
        }
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
        let (due, changes) = due(panes, now, watermark, lateness, self.defer);
        let fired = accumulators(&mut self.agg, &panes.state, &due, topic, partition, out);
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

/// The windows of `panes` to emit at `watermark` (`now`, and those whose end it passed that have
/// not fired), and the changes that follow: marked fired, or removed past their cleanup time.
fn due(
    panes: &mut Panes,
    now: Vec<StateKey>,
    watermark: i64,
    lateness: i64,
    defer: bool,
) -> (Vec<StateKey>, Vec<Change>) {
    let mut changes: Vec<Change> = if defer {
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
    (due, changes)
}

/// The stored accumulators of windows `due`, in this build's shape; a window whose accumulator
/// cannot be read fails as itself.
fn accumulators<A: Aggregator>(
    agg: &mut A,
    state: &SharedState,
    due: &[StateKey],
    topic: &str,
    partition: i32,
    out: &mut WindowOutput,
) -> Vec<(KeyedWindow, Vec<u8>)> {
    let mut fired = Vec::with_capacity(due.len());
    for id in due {
        if let (Some((start, end)), Some(entry)) = (parse_entry_name(&id.1), state.get(id)) {
            let window = KeyedWindow {
                key: id.0.clone(),
                start,
                end,
            };
            match stored_acc(agg, &window, entry.clone()) {
                Ok(acc) => fired.push((window, acc)),
                Err(error) => {
                    let acc = entry.value.get(1..).unwrap_or_default().to_vec();
                    out.failures
                        .push((window_failure(&window, acc, topic, partition), error));
                }
            }
        }
    }
    fired
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
    let mut headers: Vec<Header> = output.headers.into_iter().map(Header::from).collect();
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

/// One partition's batch in a window stage: its records with their event times, and which of
/// them were found late or failed.
struct Timed {
    records: Vec<(Record, i64)>,
    max_ts: Option<i64>,
    late: Vec<bool>,
    failed: Vec<bool>,
}

impl Timed {
    /// The accumulator a pane of records `members` folded to, or `None` if the pane failed;
    /// each record the plugin failed on fails once, however many of its windows failed.
    fn folded(
        &mut self,
        members: &[usize],
        result: Result<PaneResult, RecordError>,
        plugin: &str,
        out: &mut WindowOutput,
    ) -> Option<Vec<u8>> {
        match result {
            Ok(r) => {
                for (i, message) in r.errors {
                    if let Some(&m) = members.get(i as usize) {
                        let e = RecordError {
                            plugin: plugin.to_string(),
                            kind: ErrorKind::Plugin,
                            message,
                        };
                        self.fail(m, e, out);
                    }
                }
                Some(r.acc)
            }
            Err(e) => {
                for &m in members {
                    self.fail(m, e.clone(), out);
                }
                None
            }
        }
    }

    /// Drop record `i` and the records after it, as if the batch had ended before it.
    fn cut(&mut self, i: usize) {
        self.records.truncate(i);
        self.max_ts = self.records.iter().map(|(_, ts)| *ts).max();
        self.late = vec![false; i];
        self.failed = vec![false; i];
    }

    fn fail(&mut self, i: usize, error: RecordError, out: &mut WindowOutput) {
        if !std::mem::replace(&mut self.failed[i], true) {
            out.failures.push((self.records[i].0.clone(), error));
        }
    }
}

/// A batch folded: the windows it formed, the panes the plugin folded (with the records of the
/// batch in each) and the plugin's result for each pane.
struct Fold {
    formed: Formed,
    windows: Vec<(Pending, Vec<usize>)>,
    panes: Vec<Pane>,
    results: Vec<Result<PaneResult, RecordError>>,
}

/// The first record of a batch (by its place in the batch) that failed to be seeded or folded,
/// with its error.
fn first_failure(
    plugin: &str,
    seeded: &[(usize, RecordError)],
    windows: &[(Pending, Vec<usize>)],
    results: &[Result<PaneResult, RecordError>],
) -> Option<(usize, RecordError)> {
    let mut first: Option<(usize, RecordError)> = seeded.iter().min_by_key(|(i, _)| *i).cloned();
    let mut note = |i: usize, error: &dyn Fn() -> RecordError| {
        if first.as_ref().is_none_or(|(f, _)| i < *f) {
            first = Some((i, error()));
        }
    };
    for ((_, members), result) in windows.iter().zip(results) {
        match result {
            Ok(r) => {
                for (i, message) in &r.errors {
                    if let Some(&m) = members.get(*i as usize) {
                        note(m, &|| RecordError {
                            plugin: plugin.to_string(),
                            kind: ErrorKind::Plugin,
                            message: message.clone(),
                        });
                    }
                }
            }
            Err(e) => {
                if let Some(&m) = members.iter().min() {
                    note(m, &|| e.clone());
                }
            }
        }
    }
    first
}

/// The windows a batch forms: (key, window) → the batch's records in it, in arrival order; for
/// sessions, the stored sessions each new window absorbs.
#[derive(Default)]
struct Formed {
    groups: BTreeMap<Pending, Vec<usize>>,
    merges: HashMap<Pending, Vec<(i64, i64)>>,
}

/// What folding a batch changes: state writes, timers to set (`Some(at)`) or remove (`None`),
/// and the windows to emit now.
#[derive(Default)]
struct Folded {
    writes: BTreeMap<StateKey, Option<Entry>>,
    timers: Vec<(Option<i64>, StateKey)>,
    emit_now: Vec<StateKey>,
}
