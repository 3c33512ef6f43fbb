//! Hot reload: new plugin builds and pipeline changes swapped into a running `weir run`.
//!
//! A watcher thread ([`Reloader`]) watches the directories of the pipeline file and of every
//! stage's plugin (directories, not files: editors and build tools replace files by rename, which
//! a watch on the file itself would lose), and where a file is a symlink or lies behind one, the
//! directories of every link on the way and of the file it resolves to, following them as they
//! are switched (a Kubernetes ConfigMap's `..data`, a release directory). After a quiet period
//! ([`QUIET`]) it reads the changed files, compares content hashes (a touch without a change does
//! nothing), and builds a candidate version of the stages *off the data path*: the new component
//! is compiled, its world checked, and every stage instantiated with its config so `init` judges
//! it. Only a fully validated version is published; anything else is rejected with one log line
//! naming the file and the reason, and the running version stays.
//!
//! Publishing bumps a generation counter. Each worker ([`LiveChain`]) compares it with its own at
//! the top of every batch (one atomic load) and, when it moved, takes a chain of the new version
//! (started ahead of time by the watcher thread, so the swap itself is a pointer move). A batch
//! therefore runs wholly on one version, and since a partition's batches run in order on one
//! worker, each partition's records move from older to newer versions only, none lost and none
//! processed twice. Keyed state belongs to the host, not the instance ([`Chain::set_state`] hands
//! it to the stage every batch), so it carries over.
//!
//! What a running pipeline can take live: a stage's plugin file, `config` and `limits`, and
//! adding, removing or reordering stages. The source, sink, delivery guarantee, error policy and
//! state directory cannot change while running: a change to them is logged as needing a restart
//! and ignored. Nor can a stage start keeping state (its changelog topic is set up and restored
//! when partitions are assigned): such a version is rejected. A stage's state carries over to
//! its new version as it is; a version that changes the shape of its state declares a higher
//! state version and migrates older values as it reads them (see the `versioned-state` WIT
//! world and `engine::host`). Migrations only go forward: a build of a lower state version than
//! a stage has run in this process is rejected, since it could not read what the newer wrote.
//!
//! A new version is also on trial for its first records (`[reload] trial_records`, default
//! [`TRIAL_RECORDS`]): if its changed stages fail more than `rollback_rate` of them (default
//! [`ROLLBACK_RATE`]), the version it replaced is put back and the rollback counted, unless the
//! new version raised a stage's state version (see `Watch::roll_back` for why it then stays).

use std::{
    collections::{HashMap, HashSet},
    ops::{Deref, DerefMut},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    thread,
    time::{Duration, Instant},
};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use notify::{
    event::{AccessKind, AccessMode},
    EventKind, RecursiveMode, Watcher,
};
use sha2::{Digest, Sha256};

use crate::{
    config::{Pipeline, Stage},
    engine::{Engine, Plugin, PluginError, Record, SharedState},
    metrics::Metrics,
    pipeline::{self, BatchOutput, Chain, Stages},
};

/// How long a watched file must stay unchanged before it is read: a build tool writing a file in
/// several steps is left to finish.
pub const QUIET: Duration = Duration::from_millis(200);

/// How many records a new version is judged on before it is trusted, by default.
pub const TRIAL_RECORDS: u64 = 1000;

/// The share of failed records among a new version's first [`TRIAL_RECORDS`] above which the
/// previous version is put back.
pub const ROLLBACK_RATE: f64 = 0.05;

/// Hot reload settings: the pipeline file's `[reload]` table.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// Watch the files for changes (default); if false, only SIGHUP (`weir reload`) reloads.
    #[serde(default = "yes")]
    pub watch: bool,
    /// How many records a new version is judged on.
    #[serde(default = "trial_records")]
    pub trial_records: u64,
    /// The share of those records (0 to 1) that may fail in the stages the version changed
    /// before the previous version is put back; 1 never rolls back.
    #[serde(default = "rollback_rate", deserialize_with = "share")]
    pub rollback_rate: f64,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            watch: true,
            trial_records: TRIAL_RECORDS,
            rollback_rate: ROLLBACK_RATE,
        }
    }
}

fn yes() -> bool {
    true
}

fn trial_records() -> u64 {
    TRIAL_RECORDS
}

fn rollback_rate() -> f64 {
    ROLLBACK_RATE
}

fn share<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let share = <f64 as serde::Deserialize>::deserialize(d)?;
    if !(0.0..=1.0).contains(&share) {
        return Err(serde::de::Error::custom(format!(
            "rollback_rate is a share between 0 and 1, not {share}"
        )));
    }
    Ok(share)
}

/// Hot reload could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("hot reload: cannot start the watcher thread: {0}")]
    Thread(std::io::Error),
}

/// One validated set of stages, as published to the workers.
pub struct Version {
    generation: u64,
    stages: Stages,
    /// For each stage of the first version (whose indices the partitions' state refers to), its
    /// index in this version; `None` if it was removed.
    state_index: Vec<Option<usize>>,
    /// Chains of this version started by the watcher thread, for workers to take without paying
    /// for instantiation on the data path.
    spares: Mutex<Vec<Chain>>,
    /// Set while the version is on trial.
    trial: Option<Trial>,
}

/// A new version's first records: how many, how many failed, and what to go back to.
struct Trial {
    /// The stages this version changed or added: only their failures count against it, so a
    /// pipeline that fails some records anyway does not roll back a good release.
    stages: HashSet<String>,
    settings: ReloadConfig,
    records: AtomicU64,
    failed: AtomicU64,
    previous_generation: u64,
    previous: Stages,
    /// Set once the verdict is in, so it is given once.
    decided: AtomicBool,
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

    fn first(stages: Stages) -> Version {
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
    generation: AtomicU64,
    current: Mutex<Arc<Version>>,
    /// Names of the first version's stages, by index: what partitions' state indices mean.
    base: Vec<String>,
    /// Names of the first version's stages that keep state: the only ones with changelogs.
    base_stateful: HashSet<String>,
    /// How many workers run chains: how many spare chains to start for a new version.
    workers: AtomicUsize,
    /// To ask the watcher thread for a rollback.
    requests: Sender<Msg>,
    checks: AtomicU64,
    rejected: AtomicU64,
    /// Swaps and rollbacks are counted where the run reports its counts (see [`Live::report_to`]).
    metrics: Mutex<Arc<Metrics>>,
}

impl Live {
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
            *current = metrics;
        }
    }

    /// Versions refused so far: candidates that did not pass, and rollbacks refused because the
    /// version on trial raised a stage's state version (see `Watch::roll_back`).
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Versions rolled back so far.
    pub fn rollbacks(&self) -> u64 {
        lock(&self.metrics).rollbacks.load(Ordering::Relaxed)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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
    pub fn start(stages: &Stages, live: Option<&Arc<Live>>) -> Result<LiveChain, PluginError> {
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

enum Msg {
    /// Paths the file system says changed.
    Changed(Vec<PathBuf>),
    /// Check every watched file now (SIGHUP).
    CheckAll,
    RollBack {
        generation: u64,
        records: u64,
        failures: u64,
    },
    Stop,
}

/// Asks a running reloader to check every file now (what SIGHUP does).
#[derive(Clone)]
pub struct Trigger(Sender<Msg>);

impl Trigger {
    pub fn reload_now(&self) {
        let _ = self.0.send(Msg::CheckAll);
    }
}

/// The watcher thread; stopped when dropped.
pub struct Reloader {
    live: Arc<Live>,
    requests: Sender<Msg>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Reloader {
    /// Watch `pipeline`'s file and its stages' plugins (`stages`, already loaded by `engine`).
    pub fn start(
        engine: Engine,
        pipeline: &Pipeline,
        stages: &Stages,
    ) -> Result<Reloader, ReloadError> {
        let (requests, inbox) = crossbeam_channel::unbounded();
        let live = Arc::new(Live {
            generation: AtomicU64::new(0),
            current: Mutex::new(Arc::new(Version::first(stages.clone()))),
            base: stages.loaded().map(|(s, _)| s.name.clone()).collect(),
            base_stateful: stages
                .stateful()
                .into_iter()
                .map(|(_, name)| name)
                .collect(),
            workers: AtomicUsize::new(1),
            requests: requests.clone(),
            checks: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            metrics: Mutex::default(),
        });
        let events = requests.clone();
        let on_event = move |event: notify::Result<notify::Event>| match event {
            Ok(event) if is_change(&event.kind) => {
                let _ = events.send(Msg::Changed(event.paths));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("reload: file watcher: {e}"),
        };
        // Without a watcher (not wanted, or no inotify instances left) the pipeline still runs,
        // and SIGHUP still reloads.
        let watcher = if pipeline.reload.watch {
            notify::recommended_watcher(on_event)
                .map_err(|e| {
                    tracing::warn!(
                        "reload: cannot watch files ({e}): changes are picked up on SIGHUP only"
                    )
                })
                .ok()
        } else {
            tracing::info!("reload: not watching files ([reload] watch = false): SIGHUP reloads");
            None
        };
        let mut watch = Watch {
            engine,
            live: live.clone(),
            started: pipeline.clone(),
            pipeline_file: key(&pipeline.path),
            pipeline_hash: std::fs::read(&pipeline.path).ok().map(|b| sha256(&b)),
            settings: pipeline.reload,
            watcher,
            dirs: HashSet::new(),
            paths: HashMap::new(),
            state_versions: HashMap::new(),
        };
        watch.watch_current();
        let thread = thread::Builder::new()
            .name("weir-reload".into())
            .spawn(move || watch.run(inbox))
            .map_err(ReloadError::Thread)?;
        Ok(Reloader {
            live,
            requests,
            thread: Some(thread),
        })
    }

    /// What the workers share with the watcher.
    pub fn live(&self) -> Arc<Live> {
        self.live.clone()
    }

    /// A handle that asks for a check of every file.
    pub fn trigger(&self) -> Trigger {
        Trigger(self.requests.clone())
    }
}

impl Drop for Reloader {
    fn drop(&mut self) {
        let _ = self.requests.send(Msg::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Whether a file system event may have changed a file's content: opening or reading it (which
/// the watcher itself does) may not, or every check would trigger the next.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// How a watched file is known: its absolute path as the pipeline names it. Symlinks on the way
/// are deliberately not resolved here: what they point at may change while the file is watched
/// (see [`resolution`]), and the file must stay the same file across that change.
fn key(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The most symlinks followed in resolving one path (Linux's limit): a loop ends there.
const MAX_LINKS: usize = 40;

/// The paths whose change can change what reading `file` (absolute) gives, spelled through real
/// directories, as the watcher reports paths under the directories it watches: `file` itself,
/// and where it is a symlink or lies under one, every link met while resolving it and the file
/// it resolves to.
///
/// Watching `file`'s directory alone misses what happens behind a link. Kubernetes mounts a
/// ConfigMap as `name -> ..data/name`, `..data` being a link to a directory holding the current
/// version, and updates it by renaming a new link over `..data`: the events name `..data`, never
/// `name`. A plugin linked to a release elsewhere changes where no watched directory sees it.
fn resolution(file: &Path) -> Vec<PathBuf> {
    use std::path::Component;
    fn parts(path: &Path) -> impl DoubleEndedIterator<Item = Component<'_>> {
        path.components()
            .filter(|c| !matches!(c, Component::CurDir | Component::Prefix(_)))
    }
    let mut found = vec![file.to_path_buf()];
    let mut todo: std::collections::VecDeque<std::ffi::OsString> =
        std::collections::VecDeque::new();
    // Components are kept as text: `/` for the root, `..` for a parent.
    let text = |c: Component<'_>| c.as_os_str().to_os_string();
    todo.extend(parts(file).map(text));
    let mut at = PathBuf::from("/");
    let mut links = 0;
    while let Some(part) = todo.pop_front() {
        if part == "/" {
            at = PathBuf::from("/");
        } else if part == ".." {
            at.pop();
        } else {
            let next = at.join(&part);
            match std::fs::read_link(&next) {
                Ok(target) if links < MAX_LINKS => {
                    links += 1;
                    // A relative target is resolved from the link's directory: `at` as it is.
                    for c in parts(&target).rev() {
                        todo.push_front(text(c));
                    }
                    found.push(next);
                }
                _ => at = next,
            }
        }
    }
    found.push(at);
    let mut seen = HashSet::new();
    found.retain(|p| seen.insert(p.clone()));
    found
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The watcher thread's state.
struct Watch {
    engine: Engine,
    live: Arc<Live>,
    /// The pipeline as `weir run` started it: what cannot change without a restart.
    started: Pipeline,
    pipeline_file: PathBuf,
    /// Hash of the pipeline file as last read.
    pipeline_hash: Option<String>,
    /// `[reload]` as last read (its trial settings apply to the next version).
    settings: ReloadConfig,
    watcher: Option<notify::RecommendedWatcher>,
    /// Directories watched.
    dirs: HashSet<PathBuf>,
    /// The paths whose events count, each with the watched files (see [`Watch::watched`]) it
    /// may change: a file, and the links behind it and what they resolve to (see
    /// [`resolution`]).
    paths: HashMap<PathBuf, HashSet<PathBuf>>,
    /// For each stage that keeps state, the highest state version of the builds it has run
    /// since `weir run` started: its state may hold values of that version, which no build of a
    /// lower one can read.
    state_versions: HashMap<String, u32>,
}

/// A build that would run a stage's state at a lower state version than the stage has run.
struct Downgrade {
    stage: String,
    /// The build's plugin file and content hash.
    file: PathBuf,
    hash: String,
    /// The build's state version.
    version: u32,
    /// The highest the stage has run.
    highest: u32,
}

/// The state version of each stage of `chain` (a chain of `stages`) that keeps state.
fn state_versions(stages: &Stages, chain: &Chain) -> Vec<(String, u32)> {
    let stateful: HashSet<String> = stages.stateful().into_iter().map(|(_, n)| n).collect();
    chain
        .instances()
        .filter(|(name, _)| stateful.contains(*name))
        .map(|(name, instance)| (name.to_string(), instance.state_version()))
        .collect()
}

impl Watch {
    /// Watch the directory `dir` (once).
    fn watch(&mut self, dir: &Path) {
        let Some(watcher) = &mut self.watcher else {
            return;
        };
        if self.dirs.contains(dir) {
            return;
        }
        match watcher.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                self.dirs.insert(dir.to_path_buf());
            }
            Err(e) => tracing::warn!(
                "reload: cannot watch {}: {e}; changes there are picked up on SIGHUP only",
                dir.display()
            ),
        }
    }

    fn run(mut self, inbox: Receiver<Msg>) {
        // The state versions the running builds write, learned here rather than in
        // `Reloader::start` so `weir run` does not wait for one more chain to start.
        let first = self.live.current();
        match first.stages.start() {
            Ok(chain) => self.ran(&first.stages, &chain),
            Err(e) => tracing::warn!(
                "reload: cannot start the running stages to learn their state versions ({e}): \
                 a new build of a lower state version is not refused"
            ),
        }
        let mut dirty: HashSet<PathBuf> = HashSet::new();
        let mut deadline: Option<Instant> = None;
        let mut all = false;
        loop {
            let msg = match deadline {
                Some(d) => inbox.recv_deadline(d),
                None => inbox.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match msg {
                Ok(Msg::Changed(paths)) => {
                    // Only a watched file restarts the quiet period: other files in the same
                    // directories (a log being written, say) must not hold a check back.
                    let mut relevant = paths
                        .iter()
                        .filter_map(|p| self.paths.get(p))
                        .flatten()
                        .peekable();
                    if relevant.peek().is_some() {
                        dirty.extend(relevant.cloned());
                        deadline = Some(Instant::now() + QUIET);
                    }
                }
                Ok(Msg::CheckAll) => {
                    tracing::info!("reload: checking every stage's plugin and the pipeline file");
                    all = true;
                    deadline = Some(Instant::now());
                }
                Ok(Msg::RollBack {
                    generation,
                    records,
                    failures,
                }) => self.roll_back(generation, records, failures),
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {
                    deadline = None;
                    if all {
                        dirty.extend(self.watched());
                        all = false;
                    }
                    if !dirty.is_empty() {
                        self.check(&std::mem::take(&mut dirty));
                        // Whatever the outcome, links may now point elsewhere: follow them.
                        self.watch_current();
                        self.live.checks.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    /// The files whose changes matter: the pipeline file and every current stage's plugin.
    fn watched(&self) -> HashSet<PathBuf> {
        let current = self.live.current();
        let mut files: HashSet<PathBuf> = current
            .stages
            .loaded()
            .map(|(s, _)| key(&s.plugin))
            .collect();
        files.insert(self.pipeline_file.clone());
        files
    }

    /// Watch the directories of the current version's files and of what they resolve to, and
    /// match events against them; directories no longer needed are let go.
    fn watch_current(&mut self) {
        let mut paths: HashMap<PathBuf, HashSet<PathBuf>> = HashMap::new();
        for file in self.watched() {
            for path in resolution(&file) {
                paths.entry(path).or_default().insert(file.clone());
            }
        }
        let dirs: HashSet<PathBuf> = paths
            .keys()
            .filter_map(|p| p.parent())
            .map(Path::to_path_buf)
            .collect();
        for dir in &dirs {
            self.watch(dir);
        }
        let gone: Vec<PathBuf> = self.dirs.difference(&dirs).cloned().collect();
        for dir in gone {
            // A directory that was removed is no longer watched anyway.
            if let Some(watcher) = &mut self.watcher {
                let _ = watcher.unwatch(&dir);
            }
            self.dirs.remove(&dir);
        }
        self.paths = paths;
    }

    /// Build a candidate from the changed files, validate it, and publish it if it is whole.
    fn check(&mut self, dirty: &HashSet<PathBuf>) {
        let current = self.live.current();
        let mut wanted: Vec<Stage> = current.stages.loaded().map(|(s, _)| s.clone()).collect();
        let mut pipeline_changed = false;
        if dirty.contains(&self.pipeline_file) {
            if let Some(stages) = self.read_pipeline() {
                wanted = stages;
                pipeline_changed = true;
            }
        }
        let (candidate, changed) = match self.candidate(&current, &wanted, dirty) {
            Ok(Some(found)) => found,
            Ok(None) => {
                tracing::debug!("reload: no change to apply");
                return;
            }
            Err(rejection) => {
                self.live.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::error!("{rejection}");
                return;
            }
        };
        // Every stage started with its config: `init` has the last word before publishing.
        let chain = match candidate.start() {
            Ok(chain) => chain,
            Err(e) => {
                self.live.rejected.fetch_add(1, Ordering::Relaxed);
                // Name the file that brought the change: the plugin, or the pipeline file when
                // that changed too (a config `init` refuses, say).
                let plugin = e
                    .plugin()
                    .and_then(|name| candidate.loaded().find(|(s, _)| s.name == name))
                    .map(|(s, _)| s.plugin.display().to_string());
                let file = match (pipeline_changed, plugin) {
                    (false, Some(plugin)) => plugin,
                    (true, Some(plugin)) => {
                        format!("{} (with {plugin})", self.started.path.display())
                    }
                    (_, None) => self.started.path.display().to_string(),
                };
                tracing::error!("reload: {file} rejected, the running version stays: {e}");
                return;
            }
        };
        if let Some(d) = self.downgrade(&candidate, &chain) {
            self.live.rejected.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                "reload: {} rejected, the running version stays: it is state version {} and \
                 stage `{}` has run state version {}: values the newer build wrote cannot be read \
                 by an older one (nor migrated back), so every record of their keys would fail; \
                 release a build of state version {} or later instead",
                d.file.display(),
                d.version,
                d.stage,
                d.highest,
                d.highest
            );
            return;
        }
        let generation = self.publish(candidate, chain, Some(current));
        tracing::info!(
            "reload: generation {generation} published: {}",
            changed.join("; ")
        );
    }

    /// Read the pipeline file again; the stages it now wants, or `None` if it did not change,
    /// cannot be read, or only changed what needs a restart.
    fn read_pipeline(&mut self) -> Option<Vec<Stage>> {
        let path = &self.started.path;
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                tracing::error!(
                    "reload: {}: cannot read it, the running pipeline stays: {e}",
                    path.display()
                );
                return None;
            }
        };
        let hash = sha256(text.as_bytes());
        if self.pipeline_hash.as_deref() == Some(hash.as_str()) {
            return None;
        }
        let pipeline = match Pipeline::parse(path, &text) {
            Ok(p) => p,
            Err(e) => {
                self.live.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::error!("reload: {e}; the running pipeline stays");
                return None;
            }
        };
        self.pipeline_hash = Some(hash);
        self.settings = pipeline.reload;
        let needs_restart = restart_only_changes(&self.started, &pipeline);
        if !needs_restart.is_empty() {
            tracing::warn!(
                "reload: {}: {} changed, which needs a restart of `weir run`; ignored until then \
                 (stage changes, if any, still apply)",
                path.display(),
                needs_restart.join(", ")
            );
        }
        Some(pipeline.stages)
    }

    /// The version the stages in `wanted` make, reusing the loaded plugins of unchanged files;
    /// `None` if it is the current one. What changed is described for the log.
    #[allow(clippy::type_complexity)]
    fn candidate(
        &self,
        current: &Version,
        wanted: &[Stage],
        dirty: &HashSet<PathBuf>,
    ) -> Result<Option<(Stages, Vec<String>)>, String> {
        let running: Vec<(&Stage, &Plugin)> = current.stages.loaded().collect();
        let mut stages = Vec::with_capacity(wanted.len());
        let mut changed = Vec::new();
        for stage in wanted {
            let old = running.iter().find(|(s, _)| s.name == stage.name);
            let file = key(&stage.plugin);
            // A new build of the file a stage runs must implement the stage's world; a stage
            // the pipeline file adds or points at another file is loaded as at start.
            let same_file = old.filter(|(s, _)| key(&s.plugin) == file);
            let plugin = match same_file {
                Some((_, p)) if !dirty.contains(&file) => (*p).clone(),
                Some((_, p)) => self.load(stage, Some(p))?,
                None => self.load(stage, None)?,
            };
            if let Some((_, p)) = same_file {
                if p.kind() != plugin.kind() {
                    return Err(format!(
                        "reload: {} rejected, the running version stays: stage `{}` runs a {} \
                         plugin and this is a {} plugin (the wrong world for the stage)",
                        stage.plugin.display(),
                        stage.name,
                        p.kind(),
                        plugin.kind()
                    ));
                }
            }
            if let Some((s, _)) = old {
                if s.window != stage.window {
                    return Err(format!(
                        "reload: {} rejected, the running pipeline stays: stage `{}` changes its \
                         window settings, which its stored windows were made with: restart \
                         `weir run` to change them",
                        self.started.path.display(),
                        stage.name
                    ));
                }
            }
            let keeps_state = plugin.uses_state() || stage.window.is_some();
            if keeps_state && !self.live.base_stateful.contains(&stage.name) {
                return Err(format!(
                    "reload: {} rejected, the running version stays: stage `{}` would keep keyed \
                     state, which needs its changelog set up when partitions are assigned: \
                     restart `weir run` to add a stateful stage",
                    stage.plugin.display(),
                    stage.name
                ));
            }
            match old {
                None => changed.push(format!("stage `{}` added", stage.name)),
                Some((s, p)) => {
                    if p.hash() != plugin.hash() {
                        changed.push(format!(
                            "stage `{}` runs {} (sha256:{})",
                            stage.name,
                            stage.plugin.display(),
                            &plugin.hash()[..12]
                        ));
                    }
                    if s.config != stage.config {
                        changed.push(format!("stage `{}` config", stage.name));
                    }
                    if s.limits.memory_bytes != stage.limits.memory_bytes
                        || s.limits.call_timeout != stage.limits.call_timeout
                    {
                        changed.push(format!("stage `{}` limits", stage.name));
                    }
                }
            }
            stages.push((stage.clone(), plugin));
        }
        for (s, _) in &running {
            if !wanted.iter().any(|w| w.name == s.name) {
                changed.push(format!("stage `{}` removed", s.name));
            }
        }
        let before: Vec<&str> = running.iter().map(|(s, _)| s.name.as_str()).collect();
        let after: Vec<&str> = stages.iter().map(|(s, _)| s.name.as_str()).collect();
        if changed.is_empty() && before != after {
            changed.push(format!("stages reordered: {}", after.join(", ")));
        }
        if changed.is_empty() {
            return Ok(None);
        }
        Ok(Some((current.stages.next_version(stages), changed)))
    }

    /// Load `stage`'s plugin file as it is now; `old` is the plugin the stage runs from that
    /// file, if any.
    fn load(&self, stage: &Stage, old: Option<&Plugin>) -> Result<Plugin, String> {
        let rejected = |reason: String| {
            format!(
                "reload: {} rejected, the running version stays: {reason}",
                stage.plugin.display()
            )
        };
        let Some(old) = old else {
            // A new stage: loaded as `weir run` loads stages at start.
            return pipeline::load_stage(&self.engine, stage).map_err(|e| rejected(e.to_string()));
        };
        let before = std::fs::metadata(&stage.plugin).map_err(|e| rejected(e.to_string()))?;
        let bytes = std::fs::read(&stage.plugin).map_err(|e| rejected(e.to_string()))?;
        let after = std::fs::metadata(&stage.plugin).map_err(|e| rejected(e.to_string()))?;
        if before.len() != after.len()
            || before.modified().ok() != after.modified().ok()
            || after.len() != bytes.len() as u64
        {
            return Err(rejected(
                "it changed while being read (still being written?); it is read again on its \
                 next change"
                    .into(),
            ));
        }
        if sha256(&bytes) == old.hash() {
            return Ok(old.clone());
        }
        self.engine
            .load_bytes(&stage.name, &stage.plugin, &bytes)
            .map_err(|e| rejected(e.to_string()))
    }

    /// Publish `stages` (validated; `chain` is one of its chains) as the next generation, with
    /// `previous` to go back to if the new version fails its trial.
    fn publish(&mut self, stages: Stages, chain: Chain, previous: Option<Arc<Version>>) -> u64 {
        self.ran(&stages, &chain);
        let mut spares = vec![chain];
        let workers = self.live.workers.load(Ordering::Relaxed).max(1);
        while spares.len() < workers {
            match stages.start() {
                Ok(chain) => spares.push(chain),
                Err(_) => break, // the workers start their own
            }
        }
        let state_index = self
            .live
            .base
            .iter()
            .map(|name| stages.loaded().position(|(s, _)| &s.name == name))
            .collect();
        let trial = previous.map(|previous| Trial {
            stages: stages
                .loaded()
                .filter(|(stage, plugin)| {
                    !previous.stages.loaded().any(|(s, p)| {
                        s.name == stage.name
                            && p.hash() == plugin.hash()
                            && s.config == stage.config
                            && s.limits.memory_bytes == stage.limits.memory_bytes
                            && s.limits.call_timeout == stage.limits.call_timeout
                    })
                })
                .map(|(stage, _)| stage.name.clone())
                .collect(),
            settings: self.settings,
            records: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            // Only one step back is kept: the version before it is trusted (or was rolled back).
            previous_generation: previous.generation,
            previous: previous.stages.clone(),
            decided: AtomicBool::new(false),
        });
        let mut current = lock(&self.live.current);
        let generation = current.generation + 1;
        *current = Arc::new(Version {
            generation,
            stages,
            state_index,
            spares: Mutex::new(spares),
            trial,
        });
        self.live.generation.store(generation, Ordering::Release);
        drop(current);
        Metrics::add(&lock(&self.live.metrics).swaps, 1);
        generation
    }

    /// Remember the state versions of `stages` (`chain` one of its chains), about to run.
    fn ran(&mut self, stages: &Stages, chain: &Chain) {
        for (stage, version) in state_versions(stages, chain) {
            let highest = self.state_versions.entry(stage).or_insert(version);
            *highest = (*highest).max(version);
        }
    }

    /// The first stage of `stages` (`chain` one of its chains) that keeps state and whose build
    /// is of a lower state version than the stage has run.
    fn downgrade(&self, stages: &Stages, chain: &Chain) -> Option<Downgrade> {
        state_versions(stages, chain)
            .into_iter()
            .find_map(|(stage, version)| {
                let highest = *self.state_versions.get(&stage)?;
                let (file, hash) = stages
                    .loaded()
                    .find(|(s, _)| s.name == stage)
                    .map(|(s, p)| (s.plugin.clone(), p.hash().to_string()))?;
                (version < highest).then_some(Downgrade {
                    stage,
                    file,
                    hash,
                    version,
                    highest,
                })
            })
    }

    /// Put back the version that generation `generation` replaced, if it is still the current
    /// one.
    ///
    /// Unless the version on trial raised the state version of a stage that keeps state: then it
    /// is kept, and the refusal logged as an error and counted in [`Live::rejected`]. Every
    /// record it processed without failing may have stored a value in its new shape, which the
    /// older build cannot read (a build never reads the state of a later one, and migrations
    /// only go forward), so a rollback would turn those keys' records into failures from then
    /// on, with no way back but a new release, where keeping the new version costs only the
    /// records it fails, under the error policy (dead letters can be replayed). Rolling back
    /// only while it has written nothing would be better still, but a worker mid-batch on the
    /// new version can write between that check and the swap: the refusal does not race.
    fn roll_back(&mut self, generation: u64, records: u64, failures: u64) {
        let current = self.live.current();
        if current.generation != generation {
            return;
        }
        let Some(trial) = &current.trial else {
            return;
        };
        let previous = trial.previous.clone();
        let chain = match previous.start() {
            Ok(chain) => chain,
            Err(e) => {
                tracing::error!(
                    "reload: generation {generation} failed {failures} of its first {records} \
                     records, but the previous version cannot be started again: {e}"
                );
                return;
            }
        };
        if let Some(d) = self.downgrade(&previous, &chain) {
            self.live.rejected.fetch_add(1, Ordering::Relaxed);
            let running = current
                .stages
                .loaded()
                .find(|(s, _)| s.name == d.stage)
                .map_or_else(String::new, |(_, p)| {
                    format!(" (sha256:{})", &p.hash()[..12])
                });
            tracing::error!(
                "reload: generation {generation} failed {failures} of its first {records} records \
                 (more than {}% of {}) but is NOT rolled back to generation {}: stage `{}` \
                 ({}) runs state version {}{running}, where generation {} ran state \
                 version {} (sha256:{}), and values written by the newer build cannot be read by \
                 the older one (nor migrated back), so every record of their keys would fail; \
                 generation {generation} keeps running and the records it fails follow the error \
                 policy: release a fixed build of state version {} or later",
                trial.settings.rollback_rate * 100.0,
                trial.settings.trial_records,
                trial.previous_generation,
                d.stage,
                d.file.display(),
                d.highest,
                trial.previous_generation,
                d.version,
                &d.hash[..12],
                d.highest
            );
            return;
        }
        let back = self.publish(previous, chain, None);
        self.watch_current();
        Metrics::add(&lock(&self.live.metrics).rollbacks, 1);
        tracing::error!(
            "reload: generation {generation} failed {failures} of its first {records} records \
             (more than {}% of {}): rolled back to generation {} as generation \
             {back} ({} rollbacks so far)",
            trial.settings.rollback_rate * 100.0,
            trial.settings.trial_records,
            trial.previous_generation,
            self.live.rollbacks()
        );
    }
}

/// The processes running `weir run` on the pipeline file `pipeline`, found in `/proc` (Linux):
/// what `weir reload` sends SIGHUP to. A process is one when its program is called `weir`, its
/// subcommand is `run` and its pipeline argument, resolved against its working directory, is the
/// same file.
pub fn runs_of(pipeline: &Path) -> Vec<u32> {
    let Ok(wanted) = pipeline.canonicalize() else {
        return Vec::new();
    };
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let Some(file) = run_argument(&args) else {
            continue;
        };
        let file = Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(file));
        let Ok(cwd) = std::fs::read_link(entry.path().join("cwd")) else {
            continue;
        };
        if cwd.join(file).canonicalize().is_ok_and(|f| f == wanted) {
            found.push(pid);
        }
    }
    found
}

/// The pipeline argument of a `weir run` command line, if it is one.
fn run_argument<'a>(args: &[&'a [u8]]) -> Option<&'a [u8]> {
    let program = args.first()?;
    if program.rsplit(|b| *b == b'/').next() != Some(b"weir".as_slice()) {
        return None;
    }
    let mut rest = args[1..].iter().skip_while(|a| **a != b"run").skip(1);
    while let Some(arg) = rest.next() {
        if *arg == b"--workers" {
            rest.next();
        } else if !arg.starts_with(b"-") && !arg.is_empty() {
            return Some(arg);
        }
    }
    None
}

/// The tables of `new` that differ from `started` and cannot change while running.
fn restart_only_changes(started: &Pipeline, new: &Pipeline) -> Vec<&'static str> {
    // The settings types are plain data without `PartialEq`; their debug text compares them
    // field by field.
    let differs =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    let mut changed = Vec::new();
    if differs(&started.source, &new.source) {
        changed.push("[source]");
    }
    if differs(&started.sink, &new.sink) {
        changed.push("[sink]");
    }
    if differs(&started.delivery, &new.delivery) {
        changed.push("[delivery]");
    }
    if differs(&started.errors, &new.errors) {
        changed.push("[errors]");
    }
    if started.state_dir != new.state_dir || started.state_cache_bytes != new.state_cache_bytes {
        changed.push("[state]");
    }
    if started.reload.watch != new.reload.watch {
        changed.push("[reload] watch");
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_pipeline_of_a_weir_run_command_line() {
        let args = |line: &'static str| -> Vec<&'static [u8]> {
            line.split(' ').map(str::as_bytes).collect()
        };
        let found = |line| run_argument(&args(line));
        assert_eq!(
            found("/usr/bin/weir run p.toml"),
            Some(b"p.toml".as_slice())
        );
        assert_eq!(
            found("weir run --workers 2 p.toml"),
            Some(b"p.toml".as_slice())
        );
        assert_eq!(
            found("weir run --workers=2 a/p.toml"),
            Some(b"a/p.toml".as_slice())
        );
        assert_eq!(found("weir check p.toml"), None);
        assert_eq!(found("vim run p.toml"), None);
        assert_eq!(found("/bin/notweir run p.toml"), None);
    }

    #[test]
    fn reload_settings_default_and_are_checked() {
        let stage = "[[stage]]\nname = \"a\"\nplugin = \"a.wasm\"\n";
        let path = Path::new("/p/pipeline.toml");
        let p = Pipeline::parse(path, stage).unwrap();
        assert_eq!(p.reload, ReloadConfig::default());
        let p = Pipeline::parse(
            path,
            &format!("{stage}[reload]\nwatch = false\ntrial_records = 50\nrollback_rate = 0.5\n"),
        )
        .unwrap();
        assert_eq!(
            p.reload,
            ReloadConfig {
                watch: false,
                trial_records: 50,
                rollback_rate: 0.5
            }
        );
        let err = Pipeline::parse(path, &format!("{stage}[reload]\nrollback_rate = 5\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 5") && err.contains("between 0 and 1"),
            "{err}"
        );
    }

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

    #[test]
    fn reads_and_opens_are_not_changes() {
        use notify::event::{CreateKind, ModifyKind, RenameMode};
        assert!(!is_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_change(&EventKind::Create(CreateKind::File)));
        assert!(is_change(&EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
    }

    #[test]
    fn only_source_sink_delivery_errors_and_state_need_a_restart() {
        let text = |topic: &str, config: &str| {
            format!(
                "[source]\nbrokers = \"b\"\ntopics = [\"{topic}\"]\ngroup = \"g\"\n[sink]\n\
                 topic = \"out\"\n[[stage]]\nname = \"a\"\nplugin = \"a.wasm\"\nconfig = {config}\n"
            )
        };
        let path = Path::new("/p/pipeline.toml");
        let started = Pipeline::parse(path, &text("in", "{ x = 1 }")).unwrap();
        let config_only = Pipeline::parse(path, &text("in", "{ x = 2 }")).unwrap();
        assert!(restart_only_changes(&started, &config_only).is_empty());
        let topic = Pipeline::parse(path, &text("other", "{ x = 1 }")).unwrap();
        assert_eq!(restart_only_changes(&started, &topic), vec!["[source]"]);
    }

    #[test]
    fn a_file_is_known_by_its_absolute_path_with_its_links_unresolved() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.wasm");
        let roundabout = dir.path().join(".").join("p.wasm");
        assert_eq!(key(&file), key(&roundabout));
        // Through a linked directory, the file is still the one behind the link, whatever the
        // link points at now.
        std::fs::create_dir(dir.path().join("v1")).unwrap();
        std::os::unix::fs::symlink("v1", dir.path().join("current")).unwrap();
        let linked = dir.path().join("current").join("p.wasm");
        assert_eq!(key(&linked), std::path::absolute(&linked).unwrap());
        assert_ne!(key(&linked), key(&dir.path().join("v1").join("p.wasm")));
    }

    #[test]
    fn a_file_behind_links_is_watched_through_every_link_and_its_target() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        // A ConfigMap as Kubernetes mounts it: `p.wasm -> ..data/p.wasm`, `..data -> ..v1`.
        std::fs::create_dir(root.join("..v1")).unwrap();
        std::fs::write(root.join("..v1/p.wasm"), b"v1").unwrap();
        symlink("..v1", root.join("..data")).unwrap();
        symlink("..data/p.wasm", root.join("p.wasm")).unwrap();
        let through_data = vec![
            root.join("p.wasm"),
            root.join("..data"),
            root.join("..v1/p.wasm"),
        ];
        assert_eq!(resolution(&root.join("p.wasm")), through_data);

        // A plain file is only itself.
        assert_eq!(
            resolution(&root.join("..v1/p.wasm")),
            vec![root.join("..v1/p.wasm")]
        );
        // A link from another directory, relative with `..`, then through the same links.
        std::fs::create_dir(root.join("sub")).unwrap();
        symlink("../p.wasm", root.join("sub/q.wasm")).unwrap();
        let mut from_sub = vec![root.join("sub/q.wasm")];
        from_sub.extend(through_data.clone());
        assert_eq!(resolution(&root.join("sub/q.wasm")), from_sub);
        // An absolute link, and a link in the middle of the path.
        symlink(root.join("..data"), root.join("abs")).unwrap();
        assert_eq!(
            resolution(&root.join("abs/p.wasm")),
            vec![
                root.join("abs/p.wasm"),
                root.join("abs"),
                root.join("..data"),
                root.join("..v1/p.wasm")
            ]
        );
        // The update: `..data` renamed over by a link to the next version.
        std::fs::create_dir(root.join("..v2")).unwrap();
        std::fs::write(root.join("..v2/p.wasm"), b"v2").unwrap();
        symlink("..v2", root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        assert_eq!(
            resolution(&root.join("p.wasm"))[2],
            root.join("..v2/p.wasm")
        );
        // A loop ends.
        symlink("loop", root.join("loop")).unwrap();
        assert_eq!(resolution(&root.join("loop")), vec![root.join("loop")]);
    }
}
