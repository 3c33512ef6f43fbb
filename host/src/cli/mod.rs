//! The `weir` command line: one module per command, each a clap struct with `execute()`.

mod build;
mod capture;
mod check;
mod demo;
mod diff;
mod inspect;
mod new;
mod promote;
mod reload;
mod run;
mod state;
mod status;

pub use run::LogWriter;
mod test;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use weir::{
    chain::{Chain, Stages},
    config::Pipeline,
    engine::Engine,
    Error,
};

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "Kafka stream processing with WebAssembly plugins"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines are written: `text` for people, `json` (one object per line, with the
    /// fields as keys) for machines.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    New(new::NewCommand),
    Build(build::BuildCommand),
    Test(test::TestCommand),
    Check(check::CheckCommand),
    Run(run::RunCommand),
    Reload(reload::ReloadCommand),
    Promote(promote::PromoteCommand),
    Demo(demo::DemoCommand),
    Status(status::StatusCommand),
    State(state::StateCommand),
    Capture(capture::CaptureCommand),
    Diff(diff::DiffCommand),
    Inspect(inspect::InspectCommand),
}

impl Cli {
    pub fn execute(self) -> Result<ExitCode> {
        match self.command {
            Command::New(c) => c.execute(),
            Command::Build(c) => c.execute(),
            Command::Test(c) => c.execute(),
            Command::Check(c) => c.execute(),
            Command::Run(c) => c.execute(),
            Command::Reload(c) => c.execute(),
            Command::Promote(c) => c.execute(),
            Command::Demo(c) => c.execute(),
            Command::Status(c) => c.execute(),
            Command::State(c) => c.execute(),
            Command::Capture(c) => c.execute(),
            Command::Diff(c) => c.execute(),
            Command::Inspect(c) => c.execute(),
        }
    }
}

/// The engine, with its component cache in the default place.
fn engine() -> Result<Engine> {
    Ok(Engine::new(Engine::default_cache_dir())?)
}

/// The pipeline's chain; a stage that fails to load is named with its place in the file.
fn load_chain(engine: &Engine, pipeline: &Pipeline) -> Result<Chain> {
    Chain::from_pipeline(engine, pipeline).map_err(|e| stage_error(pipeline, e))
}

/// The pipeline's stages, loaded; a stage that fails to load is named with its place in the file.
fn load_stages(engine: &Engine, pipeline: &Pipeline) -> Result<Stages> {
    Stages::load(engine, pipeline).map_err(|e| stage_error(pipeline, e))
}

pub(crate) fn stage_error(pipeline: &Pipeline, e: Error) -> anyhow::Error {
    let line = e
        .plugin()
        .and_then(|name| pipeline.stages.iter().find(|s| s.name == name))
        .map_or(String::new(), |s| format!(":{}", s.line));
    anyhow::Error::new(e).context(format!(
        "{}{line}: stage failed to load",
        pipeline.path.display()
    ))
}
