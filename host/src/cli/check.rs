//! `weir check`: a pipeline file validated and its plugins loaded with their configs.

use std::{io::Write, path::PathBuf, process::ExitCode};

use anyhow::Result;
use weir::config::{Guarantee, Pipeline};

/// Check a pipeline file and load its plugins with their configs, without running.
#[derive(clap::Args)]
pub struct CheckCommand {
    pipeline: PathBuf,
}

impl CheckCommand {
    pub fn execute(self) -> Result<ExitCode> {
        let pipeline = Pipeline::load(&self.pipeline)?;
        let engine = super::engine()?;
        let chain = super::load_chain(&engine, &pipeline)?;
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "{}: ok, {} stages",
            self.pipeline.display(),
            pipeline.stages.len()
        )?;
        for ((name, instance), stage) in chain.instances().zip(&pipeline.stages) {
            let plugin = instance.plugin();
            writeln!(
                out,
                "  {name}: {} {} (sha256:{}){}{}{}",
                plugin.kind(),
                plugin.path().display(),
                &plugin.hash()[..12],
                if plugin.uses_state() {
                    ", keeps keyed state"
                } else {
                    ""
                },
                match (&stage.window, &stage.join) {
                    (Some(w), _) => format!(", {}", w.describe()),
                    (_, Some(j)) => format!(", {}", j.describe()),
                    _ => String::new(),
                },
                if stage.tables.is_empty() {
                    String::new()
                } else {
                    format!(", reads tables {}", stage.tables.join(", "))
                }
            )?;
        }
        for table in &pipeline.tables {
            writeln!(
                out,
                "  table {}: kept from {} ({}, keyed by {}{})",
                table.name,
                table.topic,
                table.format.as_str(),
                table.key.as_deref().unwrap_or("the record key"),
                match table.partitioned {
                    true => ", partitioned like the source",
                    false => "",
                }
            )?;
        }
        if pipeline.source.is_some() || pipeline.sink.is_some() {
            weir::kafka::check_client_settings(&pipeline)?;
        }
        writeln!(out, "  {}", kafka_line(&pipeline))?;
        Ok(ExitCode::SUCCESS)
    }
}

/// What the pipeline reads and writes under which guarantee, or that it has no Kafka side.
fn kafka_line(pipeline: &Pipeline) -> String {
    let (Some(source), Some(sink)) = (&pipeline.source, &pipeline.sink) else {
        return "no [source] and [sink]: `weir test` only".into();
    };
    format!(
        "source: {} on {} (group {}), sink: {}; errors: {}{}; {}, checkpoint every {:?}",
        source.topics.join(", "),
        source.brokers,
        source.group,
        sink.topic,
        pipeline.errors.policy,
        pipeline
            .errors
            .topic
            .as_ref()
            .map_or(String::new(), |t| format!(" to {t}")),
        match pipeline.delivery.guarantee {
            Guarantee::AtLeastOnce => "at-least-once",
            Guarantee::ExactlyOnce => "exactly-once",
        },
        pipeline.delivery.checkpoint_interval
    )
}
