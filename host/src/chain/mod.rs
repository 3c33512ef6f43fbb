//! A chain of stages that records run through in batches.
//!
//! A batch goes through stage 1 whole, then its outputs through stage 2, and so on: each
//! stage is one call per batch, which is what makes wasm affordable. Every record carries the
//! source coordinates (topic, partition, offset) of the input it came from, so a failure deep
//! in the chain still names the input, and offsets can be committed per input.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    config::{Pipeline, Stage},
    engine::{
        Engine, Instance, Kind, Limits, MemoryState, Outcome, Plugin, Record, RecordError,
        SharedState,
    },
    error::Error,
    metrics::{Call, Metrics, StageProbe},
    table::Tables,
};

pub mod compare;
pub mod join;
mod shadow;
pub mod window;

use crate::config::{LateOutput, WindowSpec};
use join::{JoinStage, Side};
use shadow::ShadowRun;
use window::{Clock, Delivered, WindowOutput, WindowStage};

/// A record that failed in some stage, or whose output the sink refused: the one failure type
/// from the chain to the error policy.
#[derive(Debug)]
pub struct Failure {
    /// The record as it entered the failing stage; for a fired window the plugin could not
    /// render, the window's key and accumulator with offset -1 (it stands for no single input);
    /// for an output the sink refused, its input's coordinates only.
    pub record: Record,
    /// The stage it failed in (`sink` for an output the sink refused).
    pub stage: String,
    /// Content hash of that stage's plugin, so a dead letter names the exact build that failed
    /// (none for the sink).
    pub plugin_hash: Option<String>,
    pub error: RecordError,
}

impl Failure {
    /// Whether the failed record is one of the batch's inputs (rather than a window's).
    pub fn is_input(&self) -> bool {
        self.record.offset >= 0
    }

    /// The error that ends a run when this failure stops it (`policy = "fail"`).
    pub fn to_error(&self) -> Error {
        let r = &self.record;
        Error::Record {
            stage: self.stage.clone(),
            topic: r.topic.clone(),
            partition: r.partition,
            offset: r.offset,
            error: self.error.clone(),
        }
    }

    /// Log that the policy skipped it, where and why as fields (for `--log-format json`).
    pub fn log_skipped(&self) {
        let r = &self.record;
        tracing::warn!(
            stage = %self.stage,
            topic = %r.topic,
            partition = r.partition,
            offset = r.offset,
            kind = self.error.kind.as_str(),
            "record skipped: {}",
            self.error.message
        );
    }

    /// Where and why, for the error that stops a run.
    pub fn place(&self) -> String {
        let r = &self.record;
        format!(
            "stage `{}` failed on {}[{}]@{}: {}: {}",
            self.stage,
            r.topic,
            r.partition,
            r.offset,
            self.error.kind.as_str(),
            self.error.message
        )
    }
}

/// A record a window stage found too late for all its windows.
#[derive(Debug)]
pub struct LateRecord {
    pub record: Record,
    pub stage: String,
    pub plugin_hash: String,
    /// Where the stage sends late records.
    pub to: LateOutput,
    /// The stage's watermark when it came.
    pub watermark: i64,
}

/// What a batch turned into.
#[derive(Debug, Default)]
pub struct BatchOutput {
    /// Outputs of the last stage, in input order.
    pub records: Vec<Record>,
    pub failures: Vec<Failure>,
    pub late: Vec<LateRecord>,
    /// Shadows' outputs for their `shadow_topic`, by topic: never the live output.
    pub shadow: Vec<(String, Record)>,
    /// A stage changed state without records to show for it (see [`WindowOutput::changed`]).
    pub changed: bool,
    /// Records for topics of their own (a join's unpaired records, `unmatched`), by topic.
    pub routed: Vec<(String, Record)>,
    /// Under `fail`, a join took part: a failure stands for the whole call, not one input
    /// (the sink refusing an output too).
    pub whole: bool,
}

/// Every stage of a pipeline loaded (compiled, checked, pre-linked) once, to start as many
/// chains from as there are workers. Window stages share one watermark clock across chains.
#[derive(Clone)]
pub struct Stages {
    stages: Vec<Loaded>,
    /// The pipeline's tables, which stages read what they are granted of.
    tables: Arc<Tables>,
}

/// One stage's loaded parts.
#[derive(Clone)]
struct Loaded {
    stage: Stage,
    plugin: Plugin,
    /// The candidate build of its `shadow`, if it has one.
    shadow: Option<Plugin>,
    clock: Option<Arc<Clock>>,
    /// A window stage's shadow's watermark clock (it follows `clock`'s partitions).
    shadow_clock: Option<Arc<Clock>>,
}

impl Stages {
    /// Load every stage's plugin.
    pub fn load(engine: &Engine, pipeline: &Pipeline) -> Result<Stages, Error> {
        let stages = pipeline
            .stages
            .iter()
            .map(|stage| {
                let plugin = load(engine, stage)?;
                let clock = || stage.window.as_ref().map(|w| Arc::new(Clock::new(w)));
                Ok(Loaded {
                    shadow: load_shadow(engine, stage, &plugin)?,
                    stage: stage.clone(),
                    plugin,
                    clock: clock(),
                    shadow_clock: clock(),
                })
            })
            .collect::<Result<_, Error>>()?;
        Ok(Stages {
            stages,
            tables: Tables::declared(pipeline),
        })
    }

    /// The pipeline's tables (`[[table]]`), for the run to fill.
    pub fn tables(&self) -> &Arc<Tables> {
        &self.tables
    }

    /// The index and name of each stage that keeps keyed state: plugins that use the state
    /// API, window stages (their accumulators) and join stages (the records they keep).
    pub fn stateful(&self) -> Vec<(usize, String)> {
        self.stages
            .iter()
            .enumerate()
            .filter(|(_, l)| {
                l.plugin.uses_state() || l.stage.window.is_some() || l.stage.join.is_some()
            })
            .map(|(i, l)| (i, l.stage.name.clone()))
            .collect()
    }

    /// The watermark clocks of the window stages, by stage index, to tell them of assigned and
    /// revoked partitions.
    pub fn clocks(&self) -> Vec<(usize, Arc<Clock>)> {
        self.stages
            .iter()
            .enumerate()
            .filter_map(|(i, l)| Some((i, l.clock.clone()?)))
            .collect()
    }

    /// Fresh instances of every stage, each past its `init`.
    pub fn start(&self) -> Result<Chain, Error> {
        let stages = self
            .stages
            .iter()
            .map(|l| self.run(l))
            .collect::<Result<_, Error>>()?;
        Ok(Chain {
            stages,
            probes: Vec::new(),
            stop_at_failure: false,
        })
    }

    /// A fresh instance of stage `l`, in the step its kind runs in, with its shadow's.
    fn run(&self, l: &Loaded) -> Result<Running, Error> {
        let stage = &l.stage;
        let mut instance =
            l.plugin
                .instantiate(&stage.config, stage.limits, MemoryState::shared())?;
        let tables = self.tables.grant(stage);
        instance.set_tables(tables.clone());
        let step = match (&stage.window, &l.clock, &stage.join) {
            (Some(spec), Some(clock), _) => Step::Window(Box::new(WindowStage::new(
                spec.clone(),
                instance,
                clock.clone(),
            ))),
            (_, _, Some(spec)) => Step::Join(
                Box::new(JoinStage::new(spec.clone(), &stage.name)),
                instance,
            ),
            _ => Step::Plugin(instance),
        };
        // A candidate that cannot start is left out: it never holds the live build up.
        let shadow = l.shadow.as_ref().and_then(|plugin| {
            ShadowRun::start(stage, plugin, l.shadow_clock.as_ref(), tables)
                .map_err(|e| {
                    tracing::warn!(
                        "stage `{}` runs without its shadow {}: {e}",
                        stage.name,
                        plugin.path().display()
                    )
                })
                .ok()
                .map(Box::new)
        });
        Ok(Running {
            name: stage.name.clone(),
            step,
            shadow,
        })
    }
}

impl Stages {
    /// Each stage's settings and loaded plugin, in chain order.
    pub fn loaded(&self) -> impl ExactSizeIterator<Item = (&Stage, &Plugin)> + '_ {
        self.stages.iter().map(|l| (&l.stage, &l.plugin))
    }

    /// The candidate build of stage `name`'s shadow, if it runs one.
    pub fn shadow(&self, name: &str) -> Option<&Plugin> {
        self.stages
            .iter()
            .find(|l| l.stage.name == name)
            .and_then(|l| l.shadow.as_ref())
    }

    /// The next version of these stages (hot reload): `stages` in their new order, plugins
    /// already loaded and validated. Whatever the chains of a stage share beyond its plugin
    /// carries over to the stage of the same name: a window stage keeps its watermark clock
    /// (reload refuses changes to a window's settings).
    pub fn next_version(&self, stages: Vec<(Stage, Plugin, Option<Plugin>)>) -> Stages {
        let stages = stages
            .into_iter()
            .map(|(stage, plugin, shadow)| {
                let before = self.stages.iter().find(|l| l.stage.name == stage.name);
                let keep = |kept: Option<Arc<Clock>>| {
                    let new = |w: &Arc<WindowSpec>| Arc::new(Clock::new(w));
                    stage
                        .window
                        .as_ref()
                        .map(|w| kept.unwrap_or_else(|| new(w)))
                };
                Loaded {
                    clock: keep(before.and_then(|l| l.clock.clone())),
                    shadow_clock: keep(before.and_then(|l| l.shadow_clock.clone())),
                    stage,
                    plugin,
                    shadow,
                }
            })
            .collect();
        Stages {
            stages,
            tables: self.tables.clone(),
        }
    }
}

/// Load one stage's plugin, refusing what a stage cannot run (as [`Stages::load`] does for
/// every stage): hot reload loads stages added to a running pipeline through it.
pub fn load_stage(engine: &Engine, stage: &Stage) -> Result<Plugin, Error> {
    load(engine, stage)
}

/// Why `candidate` cannot shadow `stage`, which runs `live`: it must be able to take the live
/// build's place (the same kind), and a candidate that keeps state where the live build keeps
/// none would have no state set up for it.
pub fn shadow_unfit(stage: &Stage, live: &Plugin, candidate: &Plugin) -> Option<String> {
    let live_keeps_state = live.uses_state() || stage.window.is_some();
    if candidate.uses_state() && !live_keeps_state {
        return Some(
            "keeps keyed state and the live build keeps none: only a stage that keeps state has \
             it set up per partition (try the candidate with `weir diff`)"
                .to_string(),
        );
    }
    (candidate.kind() != live.kind()).then(|| {
        format!(
            "is a {} plugin and the stage runs a {} plugin: a candidate must be able to take \
             the live build's place",
            candidate.kind(),
            live.kind()
        )
    })
}

/// What a stage's shadow is called where its plugin is named (its log lines, its errors).
pub fn shadow_name(stage: &str) -> String {
    format!("{stage} (shadow)")
}

/// Load the candidate build of `stage`'s shadow, if it has one: it must be able to run as the
/// stage (the same world, needs the stage's limits meet), as a reload to it would have to.
pub fn load_shadow(engine: &Engine, stage: &Stage, live: &Plugin) -> Result<Option<Plugin>, Error> {
    let Some(shadow) = &stage.shadow else {
        return Ok(None);
    };
    let candidate = Stage {
        name: shadow_name(&stage.name),
        plugin: shadow.plugin.clone(),
        ..stage.clone()
    };
    let plugin = load(engine, &candidate)?;
    if let Some(why) = shadow_unfit(stage, live, &plugin) {
        return Err(Error::WrongWorld {
            plugin: stage.name.clone(),
            reason: format!("has a shadow, {}, that {why}", shadow.plugin.display()),
        });
    }
    Ok(Some(plugin))
}

/// One stage's live part.
#[allow(clippy::large_enum_variant)] // a handful per worker; boxing would only add a hop
enum Step {
    Plugin(Instance),
    Window(Box<WindowStage<Instance>>),
    /// The host pairs records, the plugin renders each pair.
    Join(Box<JoinStage>, Instance),
}

impl Step {
    fn instance(&self) -> &Instance {
        match self {
            Step::Plugin(i) | Step::Join(_, i) => i,
            Step::Window(w) => w.aggregator(),
        }
    }
}

/// A stage's live instance in a chain, and its shadow's.
struct Running {
    name: String,
    step: Step,
    shadow: Option<Box<ShadowRun>>,
}

/// Live instances of every stage of a pipeline, for one worker's records.
pub struct Chain {
    stages: Vec<Running>,
    /// Where each stage's counts and call times go (none until [`Chain::report_to`]).
    probes: Vec<StageProbe>,
    /// `policy = "fail"`: nothing after a batch's first failing input is run (see
    /// [`Chain::stop_at_first_failure`]).
    stop_at_failure: bool,
}

impl Chain {
    /// Load and start every stage of `pipeline`.
    pub fn from_pipeline(engine: &Engine, pipeline: &Pipeline) -> Result<Chain, Error> {
        Stages::load(engine, pipeline)?.start()
    }

    /// A chain of the single plugin at `path` with `config` (JSON text).
    pub fn single(
        engine: &Engine,
        path: &Path,
        config: &str,
        limits: Limits,
    ) -> Result<Chain, Error> {
        let name = path
            .file_stem()
            .map_or("plugin".into(), |s| s.to_string_lossy().into_owned());
        let stage = Stage {
            name: name.clone(),
            plugin: path.to_path_buf(),
            config: config.to_string(),
            limits,
            window: None,
            join: None,
            shadow: None,
            tables: Vec::new(),
            line: 0,
        };
        let plugin = load(engine, &stage)?;
        let instance = plugin.instantiate(&stage.config, stage.limits, MemoryState::shared())?;
        Ok(Chain {
            stages: vec![Running {
                name,
                step: Step::Plugin(instance),
                shadow: None,
            }],
            probes: Vec::new(),
            stop_at_failure: false,
        })
    }

    /// Count what each stage does, and time its calls, in `metrics` (per batch: a few atomic
    /// adds per stage).
    pub fn report_to(&mut self, metrics: &Metrics) {
        self.probes = self
            .stages
            .iter_mut()
            .map(|r| {
                let plugin = r.step.instance().plugin();
                let stats = metrics.stage(&r.name);
                let probe = stats.probe(&plugin.path().display().to_string(), plugin.hash());
                match &mut r.shadow {
                    Some(shadow) => shadow.report_to(stats),
                    None => stats.shadow.ended(),
                }
                probe
            })
            .collect();
    }

    /// Keep stage `stage`'s state in `state` from the next batch on.
    pub fn set_state(&mut self, stage: usize, state: SharedState) {
        let running = &mut self.stages[stage];
        if let Some(shadow) = &mut running.shadow {
            shadow.set_state(&state);
        }
        match &mut running.step {
            Step::Plugin(i) => i.set_state(state),
            Step::Window(w) => w.set_state(state),
            Step::Join(j, i) => {
                j.set_state(state.clone());
                i.set_state(state);
            }
        }
    }

    /// Join stage `stage` reads the other topic's records of the next batches' partition from
    /// `side`.
    pub fn set_side(&mut self, stage: usize, side: Arc<dyn Side>) {
        if let Step::Join(j, _) = &mut self.stages[stage].step {
            j.set_side(side);
        }
    }

    /// The stages' instances, in order.
    pub fn instances(&self) -> impl Iterator<Item = (&str, &Instance)> {
        self.stages
            .iter()
            .map(|r| (r.name.as_str(), r.step.instance()))
    }

    /// The stages' shadows' instances, in order.
    pub fn shadows(&self) -> impl Iterator<Item = (&str, &Instance)> {
        self.stages
            .iter()
            .filter_map(|r| Some((r.name.as_str(), r.shadow.as_ref()?.instance())))
    }

    /// Whether any stage is a window or join stage (they need [`Chain::advance`] now and
    /// then).
    pub fn has_timers(&self) -> bool {
        self.stages
            .iter()
            .any(|r| matches!(r.step, Step::Window(_) | Step::Join(..)))
    }

    /// `policy = "fail"`: from the first input of a batch that fails in any stage on, no
    /// record reaches a later stage, and the failing stage runs none of them, so nothing after
    /// the record the run stops at changes state (it would count twice after the restart).
    pub fn stop_at_first_failure(&mut self) {
        self.stop_at_failure = true;
        for r in &mut self.stages {
            match &mut r.step {
                Step::Window(w) => w.stop_at_first_failure(),
                Step::Join(j, _) => j.stop_at_first_failure(),
                Step::Plugin(_) => {}
            }
            if let Some(shadow) = &mut r.shadow {
                shadow.stop_at_first_failure();
            }
        }
    }

    /// At least once: window stages keep a fired window until its outputs are delivered; see
    /// [`Chain::hold`].
    pub fn defer_until_delivered(&mut self) {
        for r in &mut self.stages {
            match &mut r.step {
                Step::Window(w) => w.defer_until_delivered(true),
                Step::Join(j, _) => j.defer_until_delivered(true),
                Step::Plugin(_) => {}
            }
        }
    }

    /// The outputs of the last call are on their way; `delivered` says when they arrived.
    pub fn hold(&mut self, delivered: &Arc<dyn Delivered>) {
        for r in &mut self.stages {
            match &mut r.step {
                Step::Window(w) => w.hold(delivered),
                Step::Join(j, _) => j.hold(delivered),
                Step::Plugin(_) => {}
            }
        }
    }

    /// Take over what the window stages of `old`, the chain this one replaces (hot reload),
    /// keep in memory, stage by stage of the same name: their timers and the fired windows
    /// that wait for their outputs' delivery, which would otherwise fire again; and a shadow
    /// running the same candidate, its state.
    pub fn adopt(&mut self, old: &mut Chain) {
        for r in &mut self.stages {
            let Some(before) = old.stages.iter_mut().find(|o| o.name == r.name) else {
                continue;
            };
            match (&mut r.step, &mut before.step) {
                (Step::Window(w), Step::Window(o)) => w.adopt(o),
                (Step::Join(j, _), Step::Join(o, _)) => j.adopt(o),
                _ => {}
            }
            if let (Some(s), Some(o)) = (&mut r.shadow, &mut before.shadow) {
                s.adopt(o);
            }
        }
    }

    /// A partition was revoked: drop what window stages keep in memory for it.
    pub fn forget(&mut self, topic: &str, partition: i32) {
        for r in &mut self.stages {
            match &mut r.step {
                Step::Window(w) => w.forget(topic, partition),
                Step::Join(j, _) => j.forget(topic, partition),
                Step::Plugin(_) => {}
            }
            if let Some(w) = r.shadow.as_mut().and_then(|s| s.window_stage()) {
                w.forget(topic, partition);
            }
        }
    }

    /// Run one batch (of one partition) through every stage.
    pub fn process(&mut self, batch: Vec<Record>) -> BatchOutput {
        let origin = batch.first().map(|r| (r.topic.clone(), r.partition));
        self.drive(
            batch,
            origin.as_ref().map(|(t, p)| (t.as_str(), *p)),
            Drive::Batch,
        )
    }

    /// Fire what the watermark passed in `topic`/`partition` without new records, and run the
    /// results through the stages after each window stage.
    pub fn advance(&mut self, topic: &str, partition: i32) -> BatchOutput {
        self.drive(Vec::new(), Some((topic, partition)), Drive::Tick)
    }

    /// The input has ended: fire every window (`weir test`, where input is bounded).
    pub fn finish(&mut self) -> BatchOutput {
        self.drive(Vec::new(), None, Drive::End)
    }

    fn drive(
        &mut self,
        batch: Vec<Record>,
        origin: Option<(&str, i32)>,
        how: Drive,
    ) -> BatchOutput {
        let now = Instant::now();
        let mut records = batch;
        let mut out = BatchOutput::default();
        let stop_at_failure = self.stop_at_failure;
        // The failures' index when the first join stage ran, if one did.
        let mut joined_at: Option<usize> = None;
        for (i, running) in self.stages.iter_mut().enumerate() {
            let Running { name, step, shadow } = running;
            let hash = step.instance().plugin().hash().to_string();
            if stop_at_failure {
                cut_at_first_failure(&mut records, &out.failures);
            }
            let probe = self.probes.get(i);
            let started = probe.map(|_| Instant::now());
            let mut call = Call {
                records_in: records.len(),
                ..Call::default()
            };
            let failed_before = out.failures.len();
            // The candidate's part of the stage's time, which is not the live build's.
            let shadow_took: Duration;
            match step {
                Step::Plugin(instance) => {
                    if records.is_empty() {
                        continue;
                    }
                    // The candidate first, on a copy: both start from the same state.
                    let candidate = shadow.as_mut().and_then(|s| s.run(records.clone()));
                    shadow_took = candidate.as_ref().map_or(Duration::ZERO, |c| c.took());
                    let live_started = Instant::now();
                    let outcomes = run_plugin(instance, records, stop_at_failure);
                    if let (Some(s), Some(call)) = (shadow.as_mut(), candidate) {
                        let took = live_started.elapsed();
                        out.shadow.extend(s.compare(name, call, &outcomes, took));
                    }
                    let failed = FailedIn {
                        stage: name,
                        hash: &hash,
                    };
                    records = failed.take(outcomes, &mut call, &mut out);
                }
                Step::Join(join, instance) => {
                    shadow_took = Duration::ZERO;
                    let formed = run_join(join, std::mem::take(&mut records), &how, origin, now);
                    out.changed |= formed.changed;
                    out.routed.extend(formed.routed);
                    let failed = FailedIn {
                        stage: name,
                        hash: &hash,
                    };
                    failed.set_aside(formed.failures, formed.late, join.late_output(), &mut out);
                    if !formed.records.is_empty() {
                        let outcomes = run_plugin(instance, formed.records, stop_at_failure);
                        records = failed.take(outcomes, &mut call, &mut out);
                    }
                    joined_at.get_or_insert(failed_before);
                }
                Step::Window(window) => {
                    // The candidate first, on a copy, its clock kept to the live one's.
                    let candidate = shadow.as_mut().and_then(|s| s.window(window.clock()));
                    let candidate = candidate.map(|w| {
                        let started = Instant::now();
                        let made = run_window(w, records.clone(), &how, origin, now);
                        (made, started.elapsed())
                    });
                    shadow_took = candidate.as_ref().map_or(Duration::ZERO, |c| c.1);
                    let live_started = Instant::now();
                    let batch = std::mem::take(&mut records);
                    let result = run_window(window, batch, &how, origin, now);
                    if let (Some(s), Some((made, took))) = (shadow.as_mut(), candidate) {
                        let live_took = live_started.elapsed();
                        let compared = s.compare_windows(name, made, took, &result, live_took);
                        out.shadow.extend(compared);
                    }
                    records = result.records;
                    let failed_inputs = result.failures.iter().filter(|f| f.0.offset >= 0);
                    call.filtered = call.records_in.saturating_sub(failed_inputs.count());
                    let failed = FailedIn {
                        stage: name,
                        hash: &hash,
                    };
                    let to = window.late_output();
                    failed.set_aside(result.failures, result.late, to, &mut out);
                }
            }
            call.records_out = records.len();
            call.failed = out.failures.len() - failed_before;
            if let (Some(probe), Some(started)) = (probe, started) {
                // A window stage's ticks with nothing in or out are not calls worth timing.
                if call.records_in > 0 || call.records_out > 0 || call.failed > 0 {
                    let memory = step.instance().memory_bytes();
                    probe.record(call, started.elapsed().saturating_sub(shadow_took), memory);
                }
            }
        }
        if let Some(from) = joined_at.filter(|_| stop_at_failure) {
            // Under `fail`, a failure in or after a join stands for the whole call: what the
            // join stored of the records after it cannot be told apart (see
            // `JoinStage::stop_at_first_failure`), so nothing of the call may commit.
            for f in &mut out.failures[from..] {
                f.record.offset = -1;
            }
            out.whole = true;
        }
        if stop_at_failure {
            cut_at_first_failure(&mut records, &out.failures);
        }
        out.records = records;
        out
    }
}

/// A plugin's outcomes for `records`: up to the first failure only under `policy = "fail"`.
fn run_plugin(
    instance: &mut Instance,
    records: Vec<Record>,
    stop_at_failure: bool,
) -> Vec<Outcome> {
    if stop_at_failure {
        instance.process_until_failure(records)
    } else {
        instance.process(records)
    }
}

/// The stage records failed in, for the chain's failures.
struct FailedIn<'a> {
    stage: &'a str,
    hash: &'a str,
}

impl FailedIn<'_> {
    /// The records of `outcomes` that go on, counting those filtered; failures to `out`.
    fn take(&self, outcomes: Vec<Outcome>, call: &mut Call, out: &mut BatchOutput) -> Vec<Record> {
        let mut records = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            match outcome {
                Ok(outputs) if outputs.is_empty() => call.filtered += 1,
                Ok(outputs) => records.extend(outputs),
                Err(failed) => self.add([(failed.record, failed.error)], out),
            }
        }
        records
    }

    /// What a window or join stage set aside: records that failed in it, and records too
    /// late for it, to go to `to`.
    fn set_aside(
        &self,
        failures: Vec<(Record, RecordError)>,
        late: Vec<window::Late>,
        to: &LateOutput,
        out: &mut BatchOutput,
    ) {
        self.add(failures, out);
        out.late.extend(late.into_iter().map(|late| LateRecord {
            record: late.record,
            stage: self.stage.to_string(),
            plugin_hash: self.hash.to_string(),
            to: to.clone(),
            watermark: late.watermark,
        }));
    }

    fn add(
        &self,
        failures: impl IntoIterator<Item = (Record, RecordError)>,
        out: &mut BatchOutput,
    ) {
        out.failures
            .extend(failures.into_iter().map(|(record, error)| Failure {
                record,
                stage: self.stage.to_string(),
                plugin_hash: Some(self.hash.to_string()),
                error,
            }));
    }
}

/// What join stage `join` makes of `records` (none: a tick, or the end of the input) for the
/// batch of `origin`.
fn run_join(
    join: &mut JoinStage,
    records: Vec<Record>,
    how: &Drive,
    origin: Option<(&str, i32)>,
    now: Instant,
) -> WindowOutput {
    match (how, origin) {
        (Drive::End, _) => {
            let mut out = join.process(records, now);
            out.extend(join.finish());
            out
        }
        _ if !records.is_empty() => join.process(records, now),
        // Everything was filtered before this stage: the stream is still active.
        (Drive::Batch, Some((topic, partition))) => join.advance(topic, partition, now, true),
        (Drive::Tick, Some((topic, partition))) => join.advance(topic, partition, now, false),
        (_, None) => WindowOutput::default(),
    }
}

/// What window stage `window` makes of `records` (none: a tick, or the end of the input) in a
/// chain driven `how`, for the batch of `origin`.
fn run_window(
    window: &mut WindowStage<Instance>,
    records: Vec<Record>,
    how: &Drive,
    origin: Option<(&str, i32)>,
    now: Instant,
) -> WindowOutput {
    let had_input = !records.is_empty();
    let mut result = if had_input {
        window.process(records, now)
    } else {
        WindowOutput::default()
    };
    match (how, origin) {
        (Drive::End, _) => result.extend(window.finish()),
        (Drive::Batch, Some((topic, partition))) if !had_input => {
            // Everything was filtered before this stage: the partition is still active, and
            // the watermark may have moved.
            window.touch(topic, partition, now);
            result.extend(window.advance(topic, partition, now));
        }
        (Drive::Tick, Some((topic, partition))) => {
            result.extend(window.advance(topic, partition, now))
        }
        _ => {}
    }
    result
}

/// Drop the inputs' records at or after the first failed input in `failures` (window results,
/// which stand for no one input, stay).
fn cut_at_first_failure(records: &mut Vec<Record>, failures: &[Failure]) {
    let first = failures
        .iter()
        .filter(|f| f.is_input())
        .map(|f| f.record.offset)
        .min();
    if let Some(first) = first {
        records.retain(|r| r.offset < first);
    }
}

/// Why a chain is driven.
enum Drive {
    Batch,
    Tick,
    End,
}

fn load(engine: &Engine, stage: &Stage) -> Result<Plugin, Error> {
    let plugin = engine.load(&stage.name, &stage.plugin)?;
    let wrong = |reason: String| Error::WrongWorld {
        plugin: stage.name.clone(),
        reason,
    };
    if let Some(short) = plugin.needs().unmet_by(&stage.limits) {
        return Err(wrong(format!("{short} (the stage at line {})", stage.line)));
    }
    match (plugin.kind(), &stage.window) {
        (Kind::Window, None) if stage.join.is_some() => Err(wrong(
            "is a window plugin, but its stage is a join stage: pairs are rendered by a filter \
             or transform plugin"
                .into(),
        )),
        (Kind::Window, None) => Err(wrong(
            "is a window plugin: give its stage a `window` (e.g. `window = { kind = \"tumbling\", \
             size = \"1m\" }`) in a pipeline file"
                .into(),
        )),
        (kind @ (Kind::Filter | Kind::Transform), Some(_)) => Err(wrong(format!(
            "is a {kind} plugin, but its stage has `window` settings: those need a window plugin"
        ))),
        _ => Ok(plugin),
    }
}
