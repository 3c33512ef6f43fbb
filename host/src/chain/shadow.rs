//! A stage's shadow: a candidate build run on the inputs the live version gets, its outputs
//! compared with the live ones and never passed on, its state writes kept apart.
//!
//! The candidate's state is an overlay per live state (one per source partition): the first
//! time the candidate touches a record key, that key's live entries are copied in, and from
//! then on the candidate reads and writes its own copy. So it starts from the state the live
//! version built, and nothing it does reaches the live store, its changelog or the offsets.
//! The overlay is memory only: after a restart the candidate seeds again from the live state.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{
    config::Stage,
    engine::{Entry, Instance, Outcome, Plugin, Record, SharedState, StateBackend, StateKey},
    error::Error,
    metrics::{Compared, StageStats},
};

use super::compare::{self, Side};

/// Differences a shadow logs in full, per chain; after them only the counts show.
const LOGGED_IN_FULL: usize = 20;

/// One worker's instance of a stage's shadow.
pub(super) struct ShadowRun {
    instance: Instance,
    /// Where its outputs go besides the comparison (`shadow_topic`).
    topic: Option<String>,
    /// The candidate's state over each live state it has run on, by the live state it reads
    /// from (held, so the pointer cannot be reused by another).
    overlays: Vec<(SharedState, SharedState)>,
    stats: Option<Arc<StageStats>>,
    logged: usize,
}

/// What a batch of the shadow made: its outcomes and how long its call took.
pub(super) struct ShadowCall {
    outcomes: Vec<Outcome>,
    took: Duration,
    /// The inputs' coordinates, to name them in the log.
    places: Vec<(i32, i64)>,
    topic: String,
}

impl ShadowRun {
    /// An instance of the candidate `plugin` for `stage`, past its `init` with the stage's
    /// config and limits.
    pub(super) fn start(stage: &Stage, plugin: &Plugin) -> Result<ShadowRun, Error> {
        let live = crate::engine::MemoryState::shared();
        let instance = plugin.instantiate(&stage.config, stage.limits, live)?;
        Ok(ShadowRun {
            instance,
            topic: stage.shadow.as_ref().and_then(|s| s.topic.clone()),
            overlays: Vec::new(),
            stats: None,
            logged: 0,
        })
    }

    pub(super) fn instance(&self) -> &Instance {
        &self.instance
    }

    /// Count comparisons in `stats` (the stage's).
    pub(super) fn report_to(&mut self, stats: Arc<StageStats>) {
        let plugin = self.instance.plugin();
        stats
            .shadow
            .shadowing(&plugin.path().display().to_string(), plugin.hash());
        self.stats = Some(stats);
    }

    /// Run on `live`'s overlay from the next batch on.
    pub(super) fn set_state(&mut self, live: &SharedState) {
        // Partitions this worker no longer runs: nothing but this list holds their state.
        self.overlays.retain(|(l, _)| Arc::strong_count(l) > 1);
        let overlay = match self.overlays.iter().find(|(l, _)| Arc::ptr_eq(l, live)) {
            Some((_, overlay)) => overlay.clone(),
            None => {
                let overlay: SharedState = Arc::new(Overlay::over(live.clone()));
                self.overlays.push((live.clone(), overlay.clone()));
                overlay
            }
        };
        self.instance.set_state(overlay);
    }

    /// Take over `old`'s overlays when it runs the same build (hot reload of another stage):
    /// the candidate goes on from its own state rather than seeding again.
    pub(super) fn adopt(&mut self, old: &mut ShadowRun) {
        if old.instance.plugin().hash() == self.instance.plugin().hash() {
            self.overlays = std::mem::take(&mut old.overlays);
            self.logged = old.logged;
        }
    }

    /// Run the candidate on `records`, a copy of the live version's inputs.
    pub(super) fn run(&mut self, records: Vec<Record>) -> ShadowCall {
        let places = records.iter().map(|r| (r.partition, r.offset)).collect();
        let topic = records.first().map(|r| r.topic.clone()).unwrap_or_default();
        let started = Instant::now();
        let outcomes = self.instance.process(records);
        ShadowCall {
            outcomes,
            took: started.elapsed(),
            places,
            topic,
        }
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
        let stop = live
            .iter()
            .position(|o| o.is_err())
            .map_or(live.len(), |i| i + 1);
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
