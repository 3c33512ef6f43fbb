//! A chain of stages that records run through in batches.
//!
//! A batch goes through stage 1 whole, then its outputs through stage 2, and so on: each
//! stage is one call per batch, which is what makes wasm affordable. Every record carries the
//! source coordinates (topic, partition, offset) of the input it came from, so a failure deep
//! in the chain still names the input, and offsets can be committed per input.

use std::path::Path;

use crate::{
    config::{Pipeline, Stage},
    engine::{
        Engine, Instance, Kind, Limits, MemoryState, Plugin, PluginError, Record, RecordError,
    },
};

/// A record that failed in some stage.
#[derive(Debug)]
pub struct Failure {
    /// The record as it entered the failing stage.
    pub record: Record,
    /// The stage it failed in.
    pub stage: String,
    /// Content hash of that stage's plugin, so a dead letter names the exact build that failed.
    pub plugin_hash: String,
    pub error: RecordError,
}

/// What a batch turned into.
#[derive(Debug, Default)]
pub struct BatchOutput {
    /// Outputs of the last stage, in input order.
    pub records: Vec<Record>,
    pub failures: Vec<Failure>,
}

/// Every stage of a pipeline loaded (compiled, checked, pre-linked) once, to start as many
/// chains from as there are workers.
#[derive(Clone)]
pub struct Stages {
    stages: Vec<(Stage, Plugin)>,
}

impl Stages {
    /// Load every stage's plugin.
    pub fn load(engine: &Engine, pipeline: &Pipeline) -> Result<Stages, PluginError> {
        let stages = pipeline
            .stages
            .iter()
            .map(|stage| Ok((stage.clone(), load(engine, stage)?)))
            .collect::<Result<_, PluginError>>()?;
        Ok(Stages { stages })
    }

    /// The index and name of each stage whose plugin keeps keyed state.
    pub fn stateful(&self) -> Vec<(usize, String)> {
        self.stages
            .iter()
            .enumerate()
            .filter(|(_, (_, plugin))| plugin.uses_state())
            .map(|(i, (stage, _))| (i, stage.name.clone()))
            .collect()
    }

    /// Fresh instances of every stage, each past its `init`.
    pub fn start(&self) -> Result<Chain, PluginError> {
        let stages = self
            .stages
            .iter()
            .map(|(stage, plugin)| {
                let instance =
                    plugin.instantiate(&stage.config, stage.limits, MemoryState::shared())?;
                Ok((stage.name.clone(), instance))
            })
            .collect::<Result<_, PluginError>>()?;
        Ok(Chain { stages })
    }
}

impl Stages {
    /// Each stage's settings and loaded plugin, in chain order.
    pub fn loaded(&self) -> impl ExactSizeIterator<Item = (&Stage, &Plugin)> + '_ {
        self.stages.iter().map(|(stage, plugin)| (stage, plugin))
    }

    /// The next version of these stages (hot reload): `stages` in their new order, plugins
    /// already loaded and validated. Whatever the chains of a stage share beyond its plugin
    /// carries over to the stage of the same name.
    pub fn next_version(&self, stages: Vec<(Stage, Plugin)>) -> Stages {
        Stages { stages }
    }
}

/// Load one stage's plugin, refusing what a stage cannot run (as [`Stages::load`] does for
/// every stage): hot reload loads stages added to a running pipeline through it.
pub fn load_stage(engine: &Engine, stage: &Stage) -> Result<Plugin, PluginError> {
    load(engine, stage)
}

/// Live instances of every stage of a pipeline, for one worker's records.
pub struct Chain {
    stages: Vec<(String, Instance)>,
}

impl Chain {
    /// Load and start every stage of `pipeline`.
    pub fn from_pipeline(engine: &Engine, pipeline: &Pipeline) -> Result<Chain, PluginError> {
        Stages::load(engine, pipeline)?.start()
    }

    /// A chain of the single plugin at `path` with `config` (JSON text).
    pub fn single(
        engine: &Engine,
        path: &Path,
        config: &str,
        limits: Limits,
    ) -> Result<Chain, PluginError> {
        let name = path
            .file_stem()
            .map_or("plugin".into(), |s| s.to_string_lossy().into_owned());
        let stage = Stage {
            name: name.clone(),
            plugin: path.to_path_buf(),
            config: config.to_string(),
            limits,
            line: 0,
        };
        let plugin = load(engine, &stage)?;
        let instance = plugin.instantiate(&stage.config, stage.limits, MemoryState::shared())?;
        Ok(Chain {
            stages: vec![(name, instance)],
        })
    }

    /// Keep stage `stage`'s state in `state` from the next batch on.
    pub fn set_state(&mut self, stage: usize, state: crate::engine::SharedState) {
        self.stages[stage].1.set_state(state);
    }

    /// The stages' instances, in order.
    pub fn instances(&self) -> impl Iterator<Item = (&str, &Instance)> {
        self.stages.iter().map(|(name, i)| (name.as_str(), i))
    }

    /// Run one batch through every stage.
    pub fn process(&mut self, batch: Vec<Record>) -> BatchOutput {
        let mut records = batch;
        let mut failures = Vec::new();
        for (name, instance) in &mut self.stages {
            if records.is_empty() {
                break;
            }
            let outcomes = instance.process(records);
            records = Vec::with_capacity(outcomes.len());
            for outcome in outcomes {
                match outcome {
                    Ok(outputs) => records.extend(outputs),
                    Err(failed) => failures.push(Failure {
                        record: failed.record,
                        stage: name.clone(),
                        plugin_hash: instance.plugin().hash().to_string(),
                        error: failed.error,
                    }),
                }
            }
        }
        BatchOutput { records, failures }
    }
}

fn load(engine: &Engine, stage: &Stage) -> Result<Plugin, PluginError> {
    let plugin = engine.load(&stage.name, &stage.plugin)?;
    if plugin.kind() == Kind::Window {
        return Err(PluginError::WrongWorld {
            plugin: stage.name.clone(),
            reason:
                "is a window plugin; window stages are not supported by this version of weir yet"
                    .into(),
        });
    }
    Ok(plugin)
}
