//! The published versions of a pipeline's stages, and each worker's chain kept on the newest
//! between batches; a new version's trial.

use std::{
    collections::HashSet,
    ops::{Deref, DerefMut},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    thread,
};

use crossbeam_channel::Sender;

use super::Msg;
use crate::{
    chain::{BatchOutput, Chain, Stages},
    config::ReloadConfig,
    engine::{Record, SharedState},
    error::Error,
    metrics::Metrics,
};

/// One validated set of stages, as published to the workers.
pub struct Version {
    pub(super) generation: u64,
    pub(super) stages: Stages,
    /// For each stage of the first version (whose indices the partitions' state refers to), its
    /// index in this version; `None` if it was removed.
    pub(super) state_index: Vec<Option<usize>>,
    /// Chains of this version started by the watcher thread, for workers to take without paying
    /// for instantiation on the data path.
    pub(super) spares: Mutex<Vec<Chain>>,
    /// Set while the version is on trial.
    pub(super) trial: Option<Trial>,
}

/// A new version's first records: how many, how many failed, and what to go back to.
pub(super) struct Trial {
    /// The stages this version changed or added: only their failures count against it, so a
    /// pipeline that fails some records anyway does not roll back a good release.
    pub(super) stages: HashSet<String>,
    pub(super) settings: ReloadConfig,
    pub(super) records: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) previous_generation: u64,
    pub(super) previous: Stages,
    /// Set once the verdict is in, so it is given once.
    pub(super) decided: AtomicBool,
}

impl Version {
    /// The generation: 0 for the stages `weir run` started with, one more for every swap.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The stages of this version.
    pub fn stages(&self) -> &Stages {
        &self.stages
    }

    pub(super) fn first(stages: Stages) -> Version {
        let state_index = (0..stages.loaded().len()).map(Some).collect();
        Version {
            generation: 0,
            stages,
            state_index,
            spares: Mutex::default(),
            trial: None,
        }
    }
}

/// What the watcher thread and the workers share: the current version and its generation.
pub struct Live {
    pub(super) generation: AtomicU64,
    pub(super) current: Mutex<Arc<Version>>,
    /// Names of the first version's stages, by index: what partitions' state indices mean.
    pub(super) base: Vec<String>,
    /// Names of the first version's stages that keep state: the only ones with changelogs.
    pub(super) base_stateful: HashSet<String>,
    /// How many workers run chains: how many spare chains to start for a new version.
    pub(super) workers: AtomicUsize,
    /// To ask the watcher thread for a rollback.
    pub(super) requests: Sender<Msg>,
    pub(super) checks: AtomicU64,
    pub(super) rejected: AtomicU64,
    /// Swaps and rollbacks are counted where the run reports its counts (see [`Live::report_to`]).
    pub(super) metrics: Mutex<Arc<Metrics>>,
}

impl Live {
    /// The first version, `stages`; `requests` reach the watcher thread.
    pub(super) fn new(stages: &Stages, requests: Sender<Msg>) -> Live {
        Live {
            generation: AtomicU64::new(0),
            current: Mutex::new(Arc::new(Version::first(stages.clone()))),
            base: stages.loaded().map(|(s, _)| s.name.clone()).collect(),
            base_stateful: stages
                .stateful()
                .into_iter()
                .map(|(_, name)| name)
                .collect(),
            workers: AtomicUsize::new(1),
            requests,
            checks: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            metrics: Mutex::default(),
        }
    }

    /// The version now published.
    pub fn current(&self) -> Arc<Version> {
        lock(&self.current).clone()
    }

    /// Tell the watcher how many workers run chains, so it starts that many for each version.
    pub fn set_workers(&self, workers: usize) {
        self.workers.store(workers, Ordering::Relaxed);
    }

    /// Checks of changed files done so far, whatever their outcome.
    pub fn checks(&self) -> u64 {
        self.checks.load(Ordering::Relaxed)
    }

    /// Versions swapped in so far (rollbacks included).
    pub fn swaps(&self) -> u64 {
        lock(&self.metrics).swaps.load(Ordering::Relaxed)
    }

    /// Count swaps and rollbacks in `metrics` (a run's) from now on, those so far included.
    pub fn report_to(&self, metrics: Arc<Metrics>) {
        let mut current = lock(&self.metrics);
        if !Arc::ptr_eq(&current, &metrics) {
            Metrics::add(
                &metrics.swaps,
                current.swaps.load(Ordering::Relaxed) as usize,
            );
            Metrics::add(
                &metrics.rollbacks,
                current.rollbacks.load(Ordering::Relaxed) as usize,
            );
            Metrics::add(
                &metrics.rejected,
                current.rejected.load(Ordering::Relaxed) as usize,
            );
            *current = metrics;
        }
    }

    /// Versions refused so far: candidates that did not pass, and rollbacks refused because the
    /// version on trial raised a stage's state version (see `Watch::roll_back`).
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// A version refused (the running one stays): count it, keep it in the run's reload
    /// history, and log why.
    pub(super) fn reject(&self, message: String) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::error!("{message}");
        lock(&self.metrics).reloaded("rejected", message);
    }

    /// Versions rolled back so far.
    pub fn rollbacks(&self) -> u64 {
        lock(&self.metrics).rollbacks.load(Ordering::Relaxed)
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One worker's chain, kept on the newest published version between batches.
///
/// It dereferences to the [`Chain`], so the worker calls the chain as before; only
/// [`LiveChain::set_state`] (which translates the state's stage index to this version's) and
/// [`LiveChain::process`] (which judges a version on trial) stand in front of it.
pub struct LiveChain {
    chain: Chain,
    version: Arc<Version>,
    live: Option<Arc<Live>>,
    /// A generation this worker failed to start, not tried again.
    failed: Option<u64>,
    /// What the worker does to each chain it runs (see [`LiveChain::prepare_each`]).
    prepare: Option<Prepare>,
}

/// See [`LiveChain::prepare_each`].
type Prepare = Box<dyn Fn(&mut Chain) + Send>;

impl LiveChain {
    /// A chain of the current version of `live`, or of `stages` when nothing is reloaded.
    pub fn start(stages: &Stages, live: Option<&Arc<Live>>) -> Result<LiveChain, Error> {
        let version = match live {
            Some(live) => live.current(),
            None => Arc::new(Version::first(stages.clone())),
        };
        let chain = version.stages.start()?;
        Ok(LiveChain {
            chain,
            version,
            live: live.cloned(),
            failed: None,
            prepare: None,
        })
    }

    /// Run `prepare` on this chain now and on every chain this worker moves to: what a worker
    /// sets on its chain once (how window stages hold fired windows, say) must hold for every
    /// version it runs.
    pub fn prepare_each(&mut self, prepare: impl Fn(&mut Chain) + Send + 'static) {
        prepare(&mut self.chain);
        self.prepare = Some(Box::new(prepare));
    }

    /// The generation this chain runs.
    pub fn generation(&self) -> u64 {
        self.version.generation
    }

    /// At a batch boundary: move to the newest published version if there is one.
    pub fn refresh(&mut self) {
        let Some(live) = &self.live else {
            return;
        };
        let generation = live.generation.load(Ordering::Acquire);
        if generation == self.version.generation || self.failed == Some(generation) {
            return;
        }
        let version = live.current();
        let spare = lock(&version.spares).pop();
        let chain = match spare {
            Some(chain) => Ok(chain),
            None => version.stages.start(),
        };
        match chain {
            Ok(mut chain) => {
                if let Some(prepare) = &self.prepare {
                    prepare(&mut chain);
                }
                chain.adopt(&mut self.chain);
                tracing::debug!(
                    "{} now runs generation {}",
                    thread::current().name().unwrap_or("a worker"),
                    version.generation
                );
                // The old chain is dropped here, after its last batch and before the next one.
                self.chain = chain;
                self.version = version;
                self.failed = None;
            }
            Err(e) => {
                // Validated on the watcher thread, so this is a resource problem; the worker
                // stays on its version rather than stall.
                tracing::error!(
                    "reload: a worker could not start generation {}, staying on {}: {e}",
                    version.generation,
                    self.version.generation
                );
                self.failed = Some(version.generation);
            }
        }
    }

    /// Keep the state of the first version's stage `stage` in `state` from the next batch on
    /// (translated to its index in this version; nothing if the stage was removed).
    pub fn set_state(&mut self, stage: usize, state: SharedState) {
        if let Some(Some(index)) = self.version.state_index.get(stage) {
            self.chain.set_state(*index, state);
        }
    }

    /// Join stage `stage` of the first version reads the other topic from `side` (translated
    /// as [`LiveChain::set_state`] does).
    pub fn set_side(&mut self, stage: usize, side: Arc<dyn crate::chain::join::Side>) {
        if let Some(Some(index)) = self.version.state_index.get(stage) {
            self.chain.set_side(*index, side);
        }
    }

    /// Run one batch through the chain; while the version is on trial, count its failures and
    /// ask for a rollback once they are too many.
    pub fn process(&mut self, batch: Vec<Record>) -> BatchOutput {
        let count = batch.len() as u64;
        let output = self.chain.process(batch);
        if let (Some(trial), Some(live)) = (&self.version.trial, &self.live) {
            if !trial.decided.load(Ordering::Relaxed) {
                let failed = output
                    .failures
                    .iter()
                    .filter(|f| trial.stages.contains(&f.stage))
                    .count() as u64;
                let records = trial.records.fetch_add(count, Ordering::Relaxed) + count;
                let failures = trial.failed.fetch_add(failed, Ordering::Relaxed) + failed;
                match verdict(&trial.settings, records, failures) {
                    Verdict::Pending => {}
                    Verdict::Keep => trial.decided.store(true, Ordering::Relaxed),
                    Verdict::RollBack => {
                        if !trial.decided.swap(true, Ordering::Relaxed) {
                            let _ = live.requests.send(Msg::RollBack {
                                generation: self.version.generation,
                                records,
                                failures,
                            });
                        }
                    }
                }
            }
        }
        output
    }
}

impl Deref for LiveChain {
    type Target = Chain;
    fn deref(&self) -> &Chain {
        &self.chain
    }
}

impl DerefMut for LiveChain {
    fn deref_mut(&mut self) -> &mut Chain {
        &mut self.chain
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Pending,
    Keep,
    RollBack,
}

/// Whether `failures` among a new version's first `records` condemn it. It is rolled back as
/// soon as the failures exceed the rate over the whole trial (waiting for the rest would only
/// send more records through a bad version), and kept once the trial is over.
fn verdict(settings: &ReloadConfig, records: u64, failures: u64) -> Verdict {
    let allowed = (settings.trial_records as f64 * settings.rollback_rate) as u64;
    if failures > allowed && settings.rollback_rate < 1.0 {
        Verdict::RollBack
    } else if records >= settings.trial_records {
        Verdict::Keep
    } else {
        Verdict::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trial_is_kept_or_rolled_back_on_its_failure_rate() {
        let default = ReloadConfig::default();
        assert_eq!(verdict(&default, 10, 0), Verdict::Pending);
        assert_eq!(verdict(&default, 999, 50), Verdict::Pending);
        assert_eq!(verdict(&default, 1000, 50), Verdict::Keep);
        assert_eq!(verdict(&default, 100, 51), Verdict::RollBack);
        assert_eq!(verdict(&default, 5000, 51), Verdict::RollBack);
        let never = ReloadConfig {
            rollback_rate: 1.0,
            ..default
        };
        assert_eq!(verdict(&never, 1000, 1000), Verdict::Keep);
        let strict = ReloadConfig {
            trial_records: 10,
            rollback_rate: 0.0,
            ..default
        };
        assert_eq!(verdict(&strict, 1, 1), Verdict::RollBack);
        assert_eq!(verdict(&strict, 10, 0), Verdict::Keep);
    }
}
