//! A stage's shadow: a candidate build run on the inputs the live version gets, its outputs
//! compared with the live ones and never passed on, its state writes kept apart.
//!
//! The candidate's state is an overlay per live state (one per source partition): the first
//! time the candidate touches a record key, that key's live entries are copied in, and from
//! then on the candidate reads and writes its own copy. So it starts from the state the live
//! version built, and nothing it does reaches the live store, its changelog or the offsets.
//! The overlay is memory only: after a restart the candidate seeds again from the live state.
//!
//! In a window stage the candidate is a window stage of its own, whose clock follows the live
//! clock's partitions (see [`Clock::follow`]); what is compared there is each fired window's
//! outputs (by their key and the window's bounds), and which inputs failed or came late.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{
    config::Stage,
    engine::{Entry, Instance, Outcome, Plugin, Record, SharedState, StateBackend, StateKey},
    error::Error,
    metrics::{Compared, StageStats},
};

use super::{
    compare::{self, Side},
    window::{Clock, WindowOutput, WindowStage},
};

/// Differences a shadow logs in full, per chain; after them only the counts show.
const LOGGED_IN_FULL: usize = 20;

/// One worker's instance of a stage's shadow.
pub(super) struct ShadowRun {
    step: Step,
    /// Where its outputs go besides the comparison (`shadow_topic`).
    topic: Option<String>,
    /// The candidate's state over each live state it has run on, by the live state it reads
    /// from (held, so the pointer cannot be reused by another).
    overlays: Vec<(SharedState, SharedState)>,
    stats: Option<Arc<StageStats>>,
    logged: usize,
    /// A call of the candidate longer than this holds the live build up too long: the shadow
    /// is suspended in this chain (the stage's call time limit).
    patience: Duration,
    suspended: bool,
    /// `policy = "fail"`: the live build runs nothing after a batch's first failing input.
    until_failure: bool,
}

/// The candidate's live part, as the stage's own.
#[allow(clippy::large_enum_variant)] // one per shadowed stage and worker
enum Step {
    Plugin(Instance),
    Window(Box<WindowStage<Instance>>),
}

/// What a batch of the shadow made: its outcomes and how long its call took.
pub(super) struct ShadowCall {
    outcomes: Vec<Outcome>,
    took: Duration,
    /// The inputs' coordinates, to name them in the log.
    places: Vec<(i32, i64)>,
    topic: String,
}

impl ShadowCall {
    pub(super) fn took(&self) -> Duration {
        self.took
    }
}

impl ShadowRun {
    /// An instance of the candidate `plugin` for `stage`, past its `init` with the stage's
    /// config and limits; for a window stage, `clock` is its own.
    pub(super) fn start(
        stage: &Stage,
        plugin: &Plugin,
        clock: Option<&Arc<Clock>>,
        tables: crate::engine::SharedTables,
    ) -> Result<ShadowRun, Error> {
        let live = crate::engine::MemoryState::shared();
        let mut instance = plugin.instantiate(&stage.config, stage.limits, live)?;
        instance.set_tables(tables);
        let step = match (&stage.window, clock) {
            (Some(spec), Some(clock)) => Step::Window(Box::new(WindowStage::new(
                spec.clone(),
                instance,
                clock.clone(),
            ))),
            _ => Step::Plugin(instance),
        };
        Ok(ShadowRun {
            step,
            topic: stage.shadow.as_ref().and_then(|s| s.topic.clone()),
            overlays: Vec::new(),
            stats: None,
            logged: 0,
            patience: stage.limits.call_timeout,
            suspended: false,
            until_failure: false,
        })
    }

    pub(super) fn instance(&self) -> &Instance {
        match &self.step {
            Step::Plugin(i) => i,
            Step::Window(w) => w.aggregator(),
        }
    }

    /// The candidate's window stage, in a window stage, its clock brought in line with the
    /// live stage's (`live`) first.
    pub(super) fn window(&mut self, live: &Clock) -> Option<&mut WindowStage<Instance>> {
        if self.suspended {
            return None;
        }
        let window = self.window_stage()?;
        window.clock().follow(live);
        Some(window)
    }

    /// `policy = "fail"`: compare inputs only up to the live build's first failing one (it
    /// runs nothing after it), and have a window stage drop what follows it as the live one does.
    pub(super) fn stop_at_first_failure(&mut self) {
        self.until_failure = true;
        if let Some(w) = self.window_stage() {
            w.stop_at_first_failure();
        }
    }

    /// The candidate's window stage, if the stage is one, suspended or not.
    pub(super) fn window_stage(&mut self) -> Option<&mut WindowStage<Instance>> {
        match &mut self.step {
            Step::Window(w) => Some(w),
            Step::Plugin(_) => None,
        }
    }

    /// After a call of the candidate that took `took`: one longer than the stage's call time
    /// limit (a candidate timing out record by record, say) suspends the shadow in this chain,
    /// so it cannot hold the live build up call after call. A reload starts it again.
    pub(super) fn check_patience(&mut self, stage: &str, took: Duration) {
        if took > self.patience && !self.suspended {
            self.suspended = true;
            tracing::warn!(
                stage,
                "shadow of stage `{stage}` suspended: a call took {:.1} s, over the stage's call \
                 limit of {:.1} s, and holds the live build up; a reload starts it again",
                took.as_secs_f64(),
                self.patience.as_secs_f64()
            );
        }
    }

    /// Count comparisons in `stats` (the stage's).
    pub(super) fn report_to(&mut self, stats: Arc<StageStats>) {
        let plugin = self.instance().plugin();
        stats
            .shadow
            .shadowing(&plugin.path().display().to_string(), plugin.hash());
        self.stats = Some(stats);
    }

    /// Run on `live`'s overlay from the next batch on.
    pub(super) fn set_state(&mut self, live: &SharedState) {
        // Partitions this worker no longer runs: nothing but this list and its overlay hold
        // their state.
        self.overlays.retain(|(l, _)| Arc::strong_count(l) > 2);
        let overlay = match self.overlays.iter().find(|(l, _)| Arc::ptr_eq(l, live)) {
            Some((_, overlay)) => overlay.clone(),
            None => {
                let overlay: SharedState = Arc::new(Overlay::over(live.clone()));
                self.overlays.push((live.clone(), overlay.clone()));
                overlay
            }
        };
        match &mut self.step {
            Step::Plugin(i) => i.set_state(overlay),
            Step::Window(w) => w.set_state(overlay),
        }
    }

    /// Take over `old`'s overlays when it runs the same build (hot reload of another stage):
    /// the candidate goes on from its own state rather than seeding again.
    pub(super) fn adopt(&mut self, old: &mut ShadowRun) {
        if old.instance().plugin().hash() != self.instance().plugin().hash() {
            return;
        }
        self.overlays = std::mem::take(&mut old.overlays);
        self.logged = old.logged;
        if let (Step::Window(w), Step::Window(o)) = (&mut self.step, &mut old.step) {
            w.adopt(o);
        }
    }

    /// Run the candidate on `records`, a copy of the live version's inputs.
    pub(super) fn run(&mut self, records: Vec<Record>) -> Option<ShadowCall> {
        if self.suspended {
            return None;
        }
        let places = records.iter().map(|r| (r.partition, r.offset)).collect();
        let topic = records.first().map(|r| r.topic.clone()).unwrap_or_default();
        let started = Instant::now();
        let outcomes = match &mut self.step {
            Step::Plugin(i) => i.process(records),
            Step::Window(_) => unreachable!("a window stage's shadow runs as a window stage"),
        };
        Some(ShadowCall {
            outcomes,
            took: started.elapsed(),
            places,
            topic,
        })
    }

    /// Compare the candidate's `call` with the live version's `live` outcomes (of the same
    /// inputs, `live_took` long), count and log what differs; the candidate's outputs to write
    /// to `shadow_topic`, if it has one. Under `policy = "fail"` the live version stops at its
    /// first failing input, and nothing after it is compared.
    pub(super) fn compare(
        &mut self,
        stage: &str,
        call: ShadowCall,
        live: &[Outcome],
        live_took: Duration,
    ) -> Vec<(String, Record)> {
        self.check_patience(stage, call.took);
        let first_failure = live
            .iter()
            .position(|o| o.is_err())
            .filter(|_| self.until_failure);
        let stop = first_failure.map_or(live.len(), |i| i + 1);
        let mut tally = Compared::default();
        let mut outputs = Vec::new();
        for (i, shadow) in call.outcomes.into_iter().enumerate().take(stop) {
            let (a, b) = (side(&live[i]), side(&shadow));
            tally.compared += 1;
            tally.live_errors += usize::from(!a.1.is_empty());
            tally.shadow_errors += usize::from(!b.1.is_empty());
            let changes = compare::changes(
                Side {
                    records: a.0,
                    errors: &a.1,
                },
                Side {
                    records: b.0,
                    errors: &b.1,
                },
            );
            if !changes.is_empty() {
                tally.differing += 1;
                self.log(stage, &call.topic, call.places[i], &changes);
            }
            if let (Some(topic), Ok(records)) = (&self.topic, shadow) {
                outputs.extend(records.into_iter().map(|r| (topic.clone(), r)));
            }
        }
        if let Some(stats) = &self.stats {
            stats.shadow.record(tally, live_took, call.took);
        }
        outputs
    }

    /// Compare what the candidate's window stage made of a call (`shadow`, `shadow_took` long)
    /// with what the live one made (`live`): each fired window's outputs, grouped by their key
    /// and the window's bounds, and which inputs failed or came late. The candidate's outputs
    /// for `shadow_topic`, if it has one.
    pub(super) fn compare_windows(
        &mut self,
        stage: &str,
        shadow: WindowOutput,
        shadow_took: Duration,
        live: &WindowOutput,
        live_took: Duration,
    ) -> Vec<(String, Record)> {
        self.check_patience(stage, shadow_took);
        let mut tally = Compared {
            live_errors: live.failures.len(),
            shadow_errors: shadow.failures.len(),
            ..Compared::default()
        };
        for (window, (a, b)) in fired_windows(&live.records, &shadow.records) {
            tally.compared += 1;
            let changes = compare::changes(
                Side {
                    records: &a,
                    errors: &[],
                },
                Side {
                    records: &b,
                    errors: &[],
                },
            );
            if !changes.is_empty() {
                tally.differing += 1;
                self.log_window(stage, &window, &changes);
            }
        }
        let (theirs, ours) = (failed_or_late(live), failed_or_late(&shadow));
        let inputs: BTreeSet<&(String, i32, i64)> = theirs.keys().chain(ours.keys()).collect();
        for place in inputs {
            tally.compared += 1;
            let (a, b) = (theirs.get(place), ours.get(place));
            if a != b {
                tally.differing += 1;
                let change = serde_json::json!({
                    "change": "input",
                    "error": format!("live: {}; shadow: {}", show(a), show(b)),
                });
                self.log(stage, &place.0, (place.1, place.2), &[change]);
            }
        }
        if let Some(stats) = &self.stats {
            stats.shadow.record(tally, live_took, shadow_took);
        }
        match &self.topic {
            Some(topic) => shadow
                .records
                .into_iter()
                .map(|r| (topic.clone(), r))
                .collect(),
            None => Vec::new(),
        }
    }

    fn log_window(&mut self, stage: &str, window: &WindowId, changes: &[serde_json::Value]) {
        if self.logged >= LOGGED_IN_FULL {
            return;
        }
        self.logged += 1;
        let what: Vec<String> = changes.iter().map(compare::describe).collect();
        let (key, start, end) = window;
        let key = key.as_deref().map(String::from_utf8_lossy);
        tracing::warn!(
            stage,
            "shadow of stage `{stage}` differs on the window [{start}, {end}) of key {}: {}",
            key.as_deref().unwrap_or("(none)"),
            what.join("; ")
        );
    }

    fn log(
        &mut self,
        stage: &str,
        topic: &str,
        (partition, offset): (i32, i64),
        changes: &[serde_json::Value],
    ) {
        if self.logged >= LOGGED_IN_FULL {
            return;
        }
        self.logged += 1;
        let what: Vec<String> = changes.iter().map(compare::describe).collect();
        let last = if self.logged == LOGGED_IN_FULL {
            " (the last difference logged in full; the counts go on)"
        } else {
            ""
        };
        tracing::warn!(
            stage,
            topic,
            partition,
            offset,
            "shadow of stage `{stage}` differs on {topic}[{partition}]@{offset}: {}{last}",
            what.join("; ")
        );
    }
}

/// A fired window as its outputs name it: their key and the window's bounds (from the
/// `weir.window.start`/`end` headers every window output carries).
type WindowId = (Option<Vec<u8>>, String, String);

/// The outputs of each window either side fired, live then shadow, by window.
#[allow(clippy::type_complexity)]
fn fired_windows(
    live: &[Record],
    shadow: &[Record],
) -> BTreeMap<WindowId, (Vec<Record>, Vec<Record>)> {
    let id = |r: &Record| -> WindowId {
        let header = |name: &str| {
            r.headers
                .iter()
                .find(|h| h.key == name)
                .map(|h| String::from_utf8_lossy(&h.value).into_owned())
                .unwrap_or_default()
        };
        (
            r.key.clone(),
            header("weir.window.start"),
            header("weir.window.end"),
        )
    };
    let mut windows: BTreeMap<WindowId, (Vec<Record>, Vec<Record>)> = BTreeMap::new();
    for r in live {
        windows.entry(id(r)).or_default().0.push(r.clone());
    }
    for r in shadow {
        windows.entry(id(r)).or_default().1.push(r.clone());
    }
    windows
}

/// The inputs a window stage's call failed on or found late, by coordinates: what became of
/// each (`late`, or the error as `kind: message`).
fn failed_or_late(out: &WindowOutput) -> BTreeMap<(String, i32, i64), String> {
    let failed = out
        .failures
        .iter()
        .filter(|(r, _)| r.offset >= 0)
        .map(|(r, e)| (r, format!("{}: {}", e.kind.as_str(), e.message)));
    let late = out.late.iter().map(|l| (&l.record, "late".to_string()));
    failed
        .chain(late)
        .map(|(r, what)| ((r.topic.clone(), r.partition, r.offset), what))
        .collect()
}

fn show(what: Option<&String>) -> &str {
    what.map_or("processed", String::as_str)
}

/// An outcome's outputs and errors (as `kind: message`), for the comparison.
fn side(outcome: &Outcome) -> (&[Record], Vec<String>) {
    match outcome {
        Ok(records) => (records, Vec::new()),
        Err(failed) => (
            &[],
            vec![format!(
                "{}: {}",
                failed.error.kind.as_str(),
                failed.error.message
            )],
        ),
    }
}

/// The candidate's state: the keys it touched, each copied from the live state on first touch,
/// over the live state it has not touched.
struct Overlay {
    live: SharedState,
    /// Per record key the candidate touched, its entries as the candidate sees them.
    own: Mutex<Own>,
}

type Own = HashMap<Option<Vec<u8>>, BTreeMap<String, Entry>>;

impl Overlay {
    fn over(live: SharedState) -> Overlay {
        Overlay {
            live,
            own: Mutex::default(),
        }
    }

    /// The candidate's entries of `record_key`, copied from the live state on first touch.
    fn touch<'a>(
        &self,
        own: &'a mut Own,
        record_key: &Option<Vec<u8>>,
    ) -> &'a mut BTreeMap<String, Entry> {
        own.entry(record_key.clone())
            .or_insert_with(|| self.live.scan(record_key, "").into_iter().collect())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Own> {
        self.own.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl StateBackend for Overlay {
    fn get(&self, (record_key, name): &StateKey) -> Option<Entry> {
        let mut own = self.lock();
        self.touch(&mut own, record_key).get(name).cloned()
    }

    fn scan(&self, record_key: &Option<Vec<u8>>, prefix: &str) -> Vec<(String, Entry)> {
        let mut own = self.lock();
        self.touch(&mut own, record_key)
            .range(prefix.to_string()..)
            .take_while(|(name, _)| name.starts_with(prefix))
            .map(|(name, entry)| (name.clone(), entry.clone()))
            .collect()
    }

    fn apply(&self, writes: BTreeMap<StateKey, Option<Entry>>) {
        let mut own = self.lock();
        for ((record_key, name), entry) in writes {
            let entries = self.touch(&mut own, &record_key);
            match entry {
                Some(entry) => entries.insert(name, entry),
                None => entries.remove(&name),
            };
        }
    }

    fn all(&self) -> Vec<(StateKey, Entry)> {
        let own = self.lock();
        let mut all: Vec<(StateKey, Entry)> = self
            .live
            .all()
            .into_iter()
            .filter(|((key, _), _)| !own.contains_key(key))
            .collect();
        for (key, entries) in own.iter() {
            all.extend(
                entries
                    .iter()
                    .map(|(n, e)| ((key.clone(), n.clone()), e.clone())),
            );
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::MemoryState;

    fn write(state: &SharedState, key: &str, name: &str, value: Option<&str>) {
        let entry = value.map(|v| Entry::new(v.as_bytes().to_vec(), 0));
        state.apply(BTreeMap::from([(
            (Some(key.as_bytes().to_vec()), name.to_string()),
            entry,
        )]));
    }

    fn read(state: &SharedState, key: &str, name: &str) -> Option<String> {
        let entry = state.get(&(Some(key.as_bytes().to_vec()), name.to_string()))?;
        Some(String::from_utf8(entry.value).unwrap())
    }

    #[test]
    fn the_candidate_starts_from_the_live_state_and_never_writes_to_it() {
        let live = MemoryState::shared();
        write(&live, "a", "total", Some("10"));
        write(&live, "a", "count", Some("1"));
        let shadow: SharedState = Arc::new(Overlay::over(live.clone()));
        assert_eq!(read(&shadow, "a", "total").as_deref(), Some("10"));
        write(&shadow, "a", "total", Some("99"));
        write(&shadow, "a", "count", None);
        write(&shadow, "b", "total", Some("5"));
        assert_eq!(read(&live, "a", "total").as_deref(), Some("10"));
        assert_eq!(read(&live, "a", "count").as_deref(), Some("1"));
        assert_eq!(read(&live, "b", "total"), None);
        assert_eq!(read(&shadow, "a", "total").as_deref(), Some("99"));
        assert_eq!(read(&shadow, "a", "count"), None);
        // A key, once touched, is the candidate's own: later live writes do not show through.
        write(&live, "a", "total", Some("11"));
        assert_eq!(read(&shadow, "a", "total").as_deref(), Some("99"));
        // An untouched key is seeded when first touched, as the live state has it then.
        write(&live, "c", "total", Some("7"));
        let key_c = Some(b"c".to_vec());
        assert_eq!(shadow.scan(&key_c, "to").len(), 1);
        let all: Vec<String> = shadow
            .all()
            .into_iter()
            .map(|((k, n), e)| {
                let k = String::from_utf8(k.unwrap()).unwrap();
                format!("{k}/{n}={}", String::from_utf8(e.value).unwrap())
            })
            .collect();
        assert_eq!(all, ["a/total=99", "b/total=5", "c/total=7"]);
    }
}
