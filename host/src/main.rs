//! The `weir` command line.

use std::{
    io::{BufReader, IsTerminal, Write},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use weir::{
    config::Pipeline,
    engine::{Engine, Kind, Limits},
    local::{self, Format},
    pipeline::{Chain, Stages},
    run::RunOptions,
};

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "Kafka stream processing with WebAssembly plugins"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a plugin crate.
    New {
        /// Directory to create; its name is the crate's name.
        name: PathBuf,
        #[arg(long, value_enum, default_value = "filter")]
        kind: KindArg,
    },
    /// Build plugin crates to wasm components (`DIR.wasm` beside each crate).
    Build {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Write the components into this directory instead.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Run JSONL records through one plugin or a pipeline's chain, without a broker.
    Test {
        /// A plugin component (`.wasm`) or a pipeline file (`.toml`).
        target: PathBuf,
        /// Input records, one JSON document per line (`-` for stdin).
        #[arg(long)]
        input: PathBuf,
        /// The plugin's configuration as JSON (single plugin only).
        #[arg(long)]
        config: Option<String>,
        #[arg(long, value_enum, default_value = "value")]
        format: Format,
    },
    /// Check a pipeline file and load its plugins with their configs, without running.
    Check { pipeline: PathBuf },
    /// Run a pipeline against Kafka until interrupted (SIGINT/SIGTERM: drain, commit, exit 0).
    Run {
        pipeline: PathBuf,
        /// Threads running plugins; partitions are spread over them. Default: one per core.
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Make a running `weir run PIPELINE` check its plugins and pipeline file now (sends it
    /// SIGHUP); changes it can apply live are applied, the rest is logged by it.
    Reload { pipeline: PathBuf },
    /// Run a pipeline over generated Debezium order changes on an in-process Kafka cluster: no
    /// broker needed. Its [source], [sink] and [errors] are replaced by the demo's topics.
    Demo {
        /// How many change events to generate.
        #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
        records: u64,
        #[arg(long, default_value = "examples/orders.toml")]
        pipeline: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum KindArg {
    Filter,
    Transform,
    Window,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
                .unwrap_or_else(|_| "warn,weir=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::New { name, kind } => {
            let kind = match kind {
                KindArg::Filter => Kind::Filter,
                KindArg::Transform => Kind::Transform,
                KindArg::Window => Kind::Window,
            };
            weir::scaffold::new_plugin(&name, kind)?;
            println!("created {kind} plugin {}", name.display());
            println!("  test it:  cd {} && cargo test", name.display());
            println!("  build it: weir build {}", name.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Build { paths, out_dir } => {
            for out in weir::build::build(&paths, out_dir.as_deref())? {
                println!("{}", out.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Test {
            target,
            input,
            config,
            format,
        } => test(&target, &input, config.as_deref(), format),
        Command::Check { pipeline } => check(&pipeline),
        Command::Run { pipeline, workers } => run_pipeline(&pipeline, workers),
        Command::Reload { pipeline } => reload(&pipeline),
        Command::Demo { records, pipeline } => {
            let pipeline = Pipeline::load(&pipeline)?;
            let stages = load_stages(&engine()?, &pipeline)?;
            weir::demo::run(pipeline, stages, records, &mut std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn engine() -> Result<Engine> {
    Ok(Engine::new(Engine::default_cache_dir())?)
}

fn test(target: &Path, input: &Path, config: Option<&str>, format: Format) -> Result<ExitCode> {
    let engine = engine()?;
    let mut chain = if target.extension().is_some_and(|e| e == "toml") {
        if config.is_some() {
            bail!("--config is for a single plugin; a pipeline file configures each stage");
        }
        load_chain(&engine, &Pipeline::load(target)?)?
    } else {
        let config = config.unwrap_or("{}");
        serde_json::from_str::<serde_json::Value>(config).context("--config is not valid JSON")?;
        Chain::single(&engine, target, config, Limits::default())?
    };
    let source = input.display().to_string();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut err = std::io::stderr();
    let summary = if input == Path::new("-") {
        local::run(
            &mut chain,
            std::io::stdin().lock(),
            "stdin",
            format,
            &mut out,
            &mut err,
        )?
    } else {
        let file =
            std::fs::File::open(input).with_context(|| format!("cannot open input {source}"))?;
        local::run(
            &mut chain,
            BufReader::new(file),
            &source,
            format,
            &mut out,
            &mut err,
        )?
    };
    out.flush()?;
    let restarts: u64 = chain.instances().map(|(_, i)| i.restarts()).sum();
    let secs = summary.elapsed.as_secs_f64();
    eprintln!(
        "weir test: {} in, {} out, {} filtered, {} errors{} in {:.1} ms ({:.0} records/s){}",
        summary.input,
        summary.output,
        summary.filtered,
        summary.errors,
        if summary.late > 0 {
            format!(", {} late", summary.late)
        } else {
            String::new()
        },
        secs * 1e3,
        summary.input as f64 / secs.max(1e-9),
        if restarts > 0 {
            format!(", {restarts} instance restarts")
        } else {
            String::new()
        },
    );
    Ok(if summary.errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The pipeline's chain; a stage that fails to load is named with its place in the file.
fn load_chain(engine: &Engine, pipeline: &Pipeline) -> Result<Chain> {
    Chain::from_pipeline(engine, pipeline).map_err(|e| stage_error(pipeline, e))
}

fn run_pipeline(path: &Path, workers: Option<usize>) -> Result<ExitCode> {
    let pipeline = Pipeline::load(path)?;
    pipeline.kafka()?;
    let engine = engine()?;
    let stages = load_stages(&engine, &pipeline)?;
    // Hot reload: the watcher owns the engine from here on; it swaps in what changes.
    let reloader = weir::reload::Reloader::start(engine, &pipeline, &stages)?;
    let live = reloader.live();
    let trigger = reloader.trigger();
    let mut options = RunOptions::default();
    if let Some(workers) = workers {
        options.workers = workers;
    }
    let stop = options.stop.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = std::time::Instant::now();
    let result = runtime.block_on(async move {
        // SIGHUP: check every plugin and the pipeline file now. Installed before the run starts,
        // so a SIGHUP never falls to its default action (exit).
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .expect("install a SIGHUP handler");
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading");
                trigger.reload_now();
            }
        });
        let mut task = tokio::task::spawn_blocking(move || {
            weir::run::run_reloading(&pipeline, &stages, Some(live), options)
        });
        tokio::select! {
            result = &mut task => return result,
            signal = stop_signal() => {
                tracing::info!("{signal}: draining and committing");
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        tokio::select! {
            result = &mut task => result,
            signal = stop_signal() => {
                eprintln!("weir run: second {signal}, exiting without draining");
                std::process::exit(130);
            }
        }
    })?;
    drop(reloader);
    let counts = result?;
    eprintln!(
        "weir run: {counts} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn reload(pipeline: &Path) -> Result<ExitCode> {
    let pids = weir::reload::runs_of(pipeline);
    if pids.is_empty() {
        bail!("no `weir run {}` is running here", pipeline.display());
    }
    for pid in pids {
        let sent = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .context("cannot run `kill`")?;
        if !sent.success() {
            bail!("could not send SIGHUP to `weir run` (pid {pid})");
        }
        println!("asked `weir run` (pid {pid}) to reload");
    }
    Ok(ExitCode::SUCCESS)
}

/// The first of SIGINT and SIGTERM.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// The pipeline's stages, loaded; a stage that fails to load is named with its place in the file.
fn load_stages(engine: &Engine, pipeline: &Pipeline) -> Result<Stages> {
    Stages::load(engine, pipeline).map_err(|e| stage_error(pipeline, e))
}

fn stage_error(pipeline: &Pipeline, e: weir::engine::PluginError) -> anyhow::Error {
    let line = e
        .plugin()
        .and_then(|name| pipeline.stages.iter().find(|s| s.name == name))
        .map_or(String::new(), |s| format!(":{}", s.line));
    anyhow::Error::new(e).context(format!(
        "{}{line}: stage failed to load",
        pipeline.path.display()
    ))
}

fn check(path: &Path) -> Result<ExitCode> {
    let pipeline = Pipeline::load(path)?;
    let engine = engine()?;
    let chain = load_chain(&engine, &pipeline)?;
    println!("{}: ok, {} stages", path.display(), pipeline.stages.len());
    for ((name, instance), stage) in chain.instances().zip(&pipeline.stages) {
        let plugin = instance.plugin();
        println!(
            "  {name}: {} {} (sha256:{}){}{}",
            plugin.kind(),
            plugin.path().display(),
            &plugin.hash()[..12],
            if plugin.uses_state() {
                ", keeps keyed state"
            } else {
                ""
            },
            stage
                .window
                .as_ref()
                .map_or(String::new(), |w| format!(", {}", w.describe()))
        );
    }
    if let (Some(source), Some(sink)) = (&pipeline.source, &pipeline.sink) {
        println!(
            "  source: {} on {} (group {}), sink: {}; errors: {}{}; {}, checkpoint every {:?}",
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
                weir::config::Guarantee::AtLeastOnce => "at-least-once",
                weir::config::Guarantee::ExactlyOnce => "exactly-once",
            },
            pipeline.delivery.checkpoint_interval
        );
    } else {
        println!("  no [source] and [sink]: `weir test` only");
    }
    Ok(ExitCode::SUCCESS)
}
