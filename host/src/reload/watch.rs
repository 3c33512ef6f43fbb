//! The watcher thread: sees files change, builds a candidate version off the data path,
//! publishes it if it passes, and rolls back a version whose trial failed.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Instant,
};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use notify::{
    event::{AccessKind, AccessMode},
    EventKind, RecursiveMode, Watcher,
};
use sha2::{Digest, Sha256};

use super::{
    live::{lock, Live, Trial, Version},
    resolve::{key, resolution},
    Msg, QUIET,
};
use crate::{
    chain::{self, Chain, Stages},
    config::{Pipeline, ReloadConfig, Shadow, Stage},
    engine::{Engine, Plugin},
    metrics::Metrics,
};

/// Whether a file system event may have changed a file's content: opening or reading it (which
/// the watcher itself does) may not, or every check would trigger the next.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The watcher thread's state.
pub(super) struct Watch {
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
    /// The watcher of `pipeline`'s files, publishing to `live`; file events go to `events`.
    pub(super) fn new(
        engine: Engine,
        live: Arc<Live>,
        pipeline: &Pipeline,
        events: Sender<Msg>,
    ) -> Watch {
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
        Watch {
            engine,
            live,
            started: pipeline.clone(),
            pipeline_file: key(&pipeline.path),
            pipeline_hash: std::fs::read(&pipeline.path).ok().map(|b| sha256(&b)),
            settings: pipeline.reload,
            watcher,
            dirs: HashSet::new(),
            paths: HashMap::new(),
            state_versions: HashMap::new(),
        }
    }

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

    pub(super) fn run(mut self, inbox: Receiver<Msg>) {
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
                        // Whatever the outcome, links may now point elsewhere: follow them. A
                        // file in a directory watched only now may have changed before its
                        // watch began, with no event to tell: check once more to catch it.
                        if self.watch_current() {
                            dirty.extend(self.watched());
                            deadline = Some(Instant::now() + QUIET);
                        }
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
            .flat_map(|(s, _)| {
                let shadow = s.shadow.as_ref().map(|shadow| key(&shadow.plugin));
                [key(&s.plugin)].into_iter().chain(shadow)
            })
            .collect();
        files.insert(self.pipeline_file.clone());
        files
    }

    /// Watch the directories of the current version's files and of what they resolve to, and
    /// match events against them; directories no longer needed are let go. Whether a directory
    /// is watched that was not before.
    pub(super) fn watch_current(&mut self) -> bool {
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
        let before = self.dirs.len();
        for dir in &dirs {
            self.watch(dir);
        }
        let added = self.dirs.len() > before;
        let gone: Vec<PathBuf> = self.dirs.difference(&dirs).cloned().collect();
        for dir in gone {
            // A directory that was removed is no longer watched anyway.
            if let Some(watcher) = &mut self.watcher {
                let _ = watcher.unwatch(&dir);
            }
            self.dirs.remove(&dir);
        }
        self.paths = paths;
        added
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
                self.live.reject(rejection.to_string());
                return;
            }
        };
        // Every stage started with its config: `init` has the last word before publishing.
        let chain = match candidate.start() {
            Ok(chain) => chain,
            Err(e) => {
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
                self.live.reject(format!(
                    "reload: {file} rejected, the running version stays: {e}"
                ));
                return;
            }
        };
        if let Some(d) = self.downgrade(&candidate, &chain) {
            self.live.reject(format!(
                "reload: {} rejected, the running version stays: it is state version {} and \
                 stage `{}` has run state version {}: values the newer build wrote cannot be read \
                 by an older one (nor migrated back), so every record of their keys would fail; \
                 release a build of state version {} or later instead",
                d.file.display(),
                d.version,
                d.stage,
                d.highest,
                d.highest
            ));
            return;
        }
        let generation = self.publish(candidate, chain, Some(current));
        let published = format!(
            "reload: generation {generation} published: {}",
            changed.join("; ")
        );
        tracing::info!("{published}");
        lock(&self.live.metrics).reloaded("applied", published);
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
                self.live
                    .reject(format!("reload: {e}; the running pipeline stays"));
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
            self.refuse_unfit(stage, old.copied(), same_file.is_some(), &plugin)?;
            let shadow = self.shadow(stage, &plugin, current, dirty)?;
            changed.extend(changes(stage, old.copied(), &plugin));
            changed.extend(shadow_changes(
                stage,
                old.and_then(|(s, _)| s.shadow.as_ref()),
                current.stages.shadow(&stage.name),
                shadow.as_ref(),
            ));
            stages.push((stage.clone(), plugin, shadow));
        }
        for (s, _) in &running {
            if !wanted.iter().any(|w| w.name == s.name) {
                changed.push(format!("stage `{}` removed", s.name));
            }
        }
        let before: Vec<&str> = running.iter().map(|(s, _)| s.name.as_str()).collect();
        let after: Vec<&str> = stages.iter().map(|(s, _, _)| s.name.as_str()).collect();
        if changed.is_empty() && before != after {
            changed.push(format!("stages reordered: {}", after.join(", ")));
        }
        if changed.is_empty() {
            return Ok(None);
        }
        Ok(Some((current.stages.next_version(stages), changed)))
    }

    /// Refuse a version in which `stage` (running as `old`, from the same file if `same_file`)
    /// would run `plugin` but cannot: another world, other window settings, state that was not
    /// set up when partitions were assigned, or limits below what the plugin declares it needs
    /// (a new build, or the same build under new limits).
    fn refuse_unfit(
        &self,
        stage: &Stage,
        old: Option<(&Stage, &Plugin)>,
        same_file: bool,
        plugin: &Plugin,
    ) -> Result<(), String> {
        if let Some((_, p)) = old.filter(|_| same_file) {
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
        if old.is_some_and(|(s, _)| s.window != stage.window) {
            return Err(format!(
                "reload: {} rejected, the running pipeline stays: stage `{}` changes its \
                 window settings, which its stored windows were made with: restart \
                 `weir run` to change them",
                self.started.path.display(),
                stage.name
            ));
        }
        if old.is_some_and(|(s, _)| s.join != stage.join) {
            return Err(format!(
                "reload: {} rejected, the running pipeline stays: stage `{}` changes its join \
                 settings, which the records it keeps and the topic it reads were set up with: \
                 restart `weir run` to change them",
                self.started.path.display(),
                stage.name
            ));
        }
        if let Some(short) = plugin.needs().unmet_by(&stage.limits) {
            return Err(format!(
                "reload: {} rejected, the running version stays: stage `{}`'s plugin {short}",
                stage.plugin.display(),
                stage.name
            ));
        }
        let keeps_state = plugin.uses_state() || stage.window.is_some() || stage.join.is_some();
        if keeps_state && !self.live.base_stateful.contains(&stage.name) {
            return Err(format!(
                "reload: {} rejected, the running version stays: stage `{}` would keep keyed \
                 state, which needs its changelog set up when partitions are assigned: \
                 restart `weir run` to add a stateful stage",
                stage.plugin.display(),
                stage.name
            ));
        }
        Ok(())
    }

    /// The candidate build of `stage`'s shadow as its file is now (the one running when the
    /// file did not change), if the stage has one; refused when it could not take the place of
    /// `live`, the build the stage runs.
    fn shadow(
        &self,
        stage: &Stage,
        live: &Plugin,
        current: &Version,
        dirty: &HashSet<PathBuf>,
    ) -> Result<Option<Plugin>, String> {
        let Some(shadow) = &stage.shadow else {
            return Ok(None);
        };
        let file = key(&shadow.plugin);
        let running = current
            .stages
            .loaded()
            .find(|(s, _)| s.name == stage.name)
            .and_then(|(s, _)| Some((s.shadow.as_ref()?, current.stages.shadow(&s.name)?)))
            .filter(|(s, _)| key(&s.plugin) == file)
            .map(|(_, p)| p);
        let as_stage = Stage {
            name: chain::shadow_name(&stage.name),
            plugin: shadow.plugin.clone(),
            ..stage.clone()
        };
        let plugin = match running {
            Some(p) if !dirty.contains(&file) => p.clone(),
            old => self.load(&as_stage, old)?,
        };
        let refused = |why: String| {
            format!(
                "reload: {} rejected, the running version stays: stage `{}`'s shadow {why}",
                shadow.plugin.display(),
                stage.name
            )
        };
        if let Some(why) = chain::shadow_unfit(stage, live, &plugin) {
            return Err(refused(why));
        }
        if let Some(short) = plugin.needs().unmet_by(&stage.limits) {
            return Err(refused(short));
        }
        // Its init has the last word, as every stage's has before a version is published.
        let state = crate::engine::MemoryState::shared();
        if let Err(e) = plugin.instantiate(&stage.config, stage.limits, state) {
            return Err(refused(format!("cannot start: {e}")));
        }
        Ok(Some(plugin))
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
            return chain::load_stage(&self.engine, stage).map_err(|e| rejected(e.to_string()));
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
            let running = current
                .stages
                .loaded()
                .find(|(s, _)| s.name == d.stage)
                .map_or_else(String::new, |(_, p)| {
                    format!(" (sha256:{})", &p.hash()[..12])
                });
            self.live.reject(format!(
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
            ));
            return;
        }
        let back = self.publish(previous, chain, None);
        self.watch_current();
        Metrics::add(&lock(&self.live.metrics).rollbacks, 1);
        let rolled_back = format!(
            "reload: generation {generation} failed {failures} of its first {records} records \
             (more than {}% of {}): rolled back to generation {} as generation \
             {back} ({} rollbacks so far)",
            trial.settings.rollback_rate * 100.0,
            trial.settings.trial_records,
            trial.previous_generation,
            self.live.rollbacks()
        );
        tracing::error!("{rolled_back}");
        lock(&self.live.metrics).reloaded("rolled-back", rolled_back);
    }
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
    if started.admin != new.admin {
        changed.push("[admin]");
    }
    // Where a table is in the file does not matter, only what it is.
    let tables = |p: &Pipeline| {
        let mut tables: Vec<_> = p
            .tables
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    t.topic.clone(),
                    t.key.clone(),
                    t.format,
                    t.as_of,
                )
            })
            .collect();
        tables.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        tables
    };
    if tables(started) != tables(new) {
        changed.push("[[table]]");
    }
    changed
}

/// How `stage`'s shadow changes from `old` to `new` (candidate builds), for the log.
/// `was` is the stage's shadow setting as it runs now.
fn shadow_changes(
    stage: &Stage,
    was: Option<&Shadow>,
    old: Option<&Plugin>,
    new: Option<&Plugin>,
) -> Option<String> {
    let name = &stage.name;
    match (old, new, &stage.shadow) {
        (Some(_), None, _) => Some(format!("stage `{name}` runs no shadow")),
        (old, Some(new), Some(shadow)) if old.is_none_or(|o| o.hash() != new.hash()) => {
            Some(format!(
                "stage `{name}` shadowed by {} (sha256:{})",
                shadow.plugin.display(),
                &new.hash()[..12]
            ))
        }
        (_, Some(_), Some(shadow)) if was.map(|w| &w.topic) != Some(&shadow.topic) => Some(
            format!("stage `{name}` shadow_topic {:?}", shadow.topic.as_deref()),
        ),
        _ => None,
    }
}

/// What running `plugin` as `stage` changes from `old` (the stage as it runs now), for the log.
fn changes(stage: &Stage, old: Option<(&Stage, &Plugin)>, plugin: &Plugin) -> Vec<String> {
    let Some((s, p)) = old else {
        return vec![format!("stage `{}` added", stage.name)];
    };
    let mut changed = Vec::new();
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
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let table = "[[table]]\nname = \"t\"\ntopic = \"t\"\nformat = \"upsert\"\n";
        let with_table = format!("{table}{}", text("in", "{ x = 1 }"));
        let with_table = Pipeline::parse(path, &with_table).unwrap();
        assert_eq!(
            restart_only_changes(&started, &with_table),
            vec!["[[table]]"]
        );
        // The same table further down the file is no change.
        let moved = format!("{}{table}", text("in", "{ x = 1 }"));
        let moved = Pipeline::parse(path, &moved).unwrap();
        assert!(restart_only_changes(&with_table, &moved).is_empty());
    }
}
