//! `weir run`: a pipeline against Kafka until SIGINT/SIGTERM, with hot reload.

use std::{
    io::IsTerminal,
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::{atomic::Ordering, Arc},
    time::Instant,
};

use anyhow::Result;
use tokio::signal::unix::{signal, SignalKind};
use weir::{
    admin::AdminServer,
    chain::Stages,
    config::{parse_listen, AdminConfig, Pipeline},
    metrics::{RestoreProgress, Snapshot, StatusSampler},
    reload::{Live, Reloader, Trigger},
    runtime::{self, RunOptions},
};

/// Run a pipeline against Kafka until interrupted (SIGINT/SIGTERM: drain, commit, exit 0).
#[derive(clap::Args)]
pub struct RunCommand {
    pipeline: PathBuf,
    /// Threads running plugins; partitions are spread over them. Default: one per core.
    #[arg(long)]
    workers: Option<usize>,
    /// A name for this instance, the same across its restarts and unique in its group (e.g. the
    /// host's name). It makes the instance a static member of the consumer group (Kafka's
    /// `group.instance.id`): restarted within the session timeout, it gets its partitions back
    /// without a rebalance, and the other instances keep theirs.
    #[arg(long)]
    instance: Option<String>,
    /// Where the admin server (metrics, dashboard, probes) listens, as HOST:PORT (port 0 picks
    /// one); overrides `[admin] listen`. Default: 127.0.0.1:9464.
    #[arg(long, value_parser = parse_listen)]
    admin: Option<SocketAddr>,
    /// No status line on the terminal (there is none when stderr is not a terminal anyway).
    #[arg(long)]
    quiet: bool,
}

impl RunCommand {
    pub fn execute(self) -> Result<ExitCode> {
        let pipeline = Pipeline::load(&self.pipeline)?;
        if pipeline.postgres.is_none() {
            pipeline.kafka()?;
        }
        let engine = super::engine()?;
        let stages = super::load_stages(&engine, &pipeline)?;
        // Each plugin's init judges its config now, before any Kafka work, so a config it
        // rejects is named with its stage's line in the file, as `weir check` names it.
        drop(
            stages
                .start()
                .map_err(|e| super::stage_error(&pipeline, e))?,
        );
        // Hot reload: the watcher owns the engine from here on; it swaps in what changes.
        let reloader = Reloader::start(engine, &pipeline, &stages)?;
        // Given here, not in the file, which the instances share (and reload compares).
        let mut pipeline = pipeline;
        if let (Some(id), Some(source)) = (&self.instance, pipeline.source.as_mut()) {
            source
                .kafka
                .0
                .insert("group.instance.id".into(), id.clone());
        }
        if let Some(at) = self.admin {
            pipeline.admin = AdminConfig {
                listen: Some(at),
                explicit: true,
            };
        }
        let mut options = RunOptions::default();
        let status_line = !self.quiet && std::io::stderr().is_terminal();
        if status_line {
            // The line says it all, every second; the log keeps to events.
            options.report_every = None;
        }
        if let Some(workers) = self.workers {
            options.workers = workers;
        }
        let started = Instant::now();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let live = reloader.live();
        let trigger = reloader.trigger();
        let sampler = {
            let _on = runtime.enter();
            StatusSampler::start(options.metrics.clone())
        };
        let line = status_line.then(|| StatusLine::start(&runtime, sampler.clone()));
        let result = runtime.block_on(run(pipeline, stages, live, trigger, sampler, options));
        drop(line);
        let result = result?;
        drop(reloader);
        let counts = result?;
        tracing::info!(
            "weir run: {counts} in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        Ok(ExitCode::SUCCESS)
    }
}

/// The run on a thread of its own, with signals handled here: SIGHUP reloads, the first SIGINT
/// or SIGTERM drains and commits, a second exits at once.
async fn run(
    pipeline: Pipeline,
    stages: Stages,
    live: Arc<Live>,
    trigger: Trigger,
    sampler: Arc<StatusSampler>,
    options: RunOptions,
) -> Result<Result<Snapshot, weir::Error>> {
    if let Some(server) = AdminServer::bind(&pipeline.admin).await? {
        tracing::info!(
            "admin server on http://{}: dashboard /, metrics /metrics, status /api/status, \
             probes /health /ready",
            server.local_addr()
        );
        tokio::spawn(server.serve(sampler, options.held.clone()));
    }
    // Installed before the run starts, so a SIGHUP never falls to its default action (exit).
    let mut hangup = signal(SignalKind::hangup()).expect("install a SIGHUP handler");
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading");
            trigger.reload_now();
        }
    });
    let stop = options.stop.clone();
    let mut task = tokio::task::spawn_blocking(move || match pipeline.postgres {
        Some(_) => runtime::postgres::run(&pipeline, &stages, Some(live), options),
        None => runtime::run_reloading(&pipeline, &stages, Some(live), options),
    });
    tokio::select! {
        result = &mut task => return Ok(result?),
        signal = stop_signal() => {
            tracing::info!("{signal}: draining and committing");
            stop.store(true, Ordering::Relaxed);
        }
    }
    tokio::select! {
        result = &mut task => Ok(result?),
        signal = stop_signal() => {
            tracing::warn!("weir run: second {signal}, exiting without draining");
            std::process::exit(130);
        }
    }
}

/// The first of SIGINT and SIGTERM.
async fn stop_signal() -> &'static str {
    let mut term = signal(SignalKind::terminate()).expect("install a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// The status line being shown, if any: log lines are written around it.
static SHOWN: std::sync::Mutex<Option<indicatif::ProgressBar>> = std::sync::Mutex::new(None);

/// Where log lines go: stderr, with the status line (when there is one) lifted while they are
/// written, so the two do not mix on one line.
pub struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let shown = SHOWN.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match shown {
            Some(bar) => bar.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// One line on the terminal, redrawn every second: rates, lag, failures, the last checkpoint.
struct StatusLine {
    bar: indicatif::ProgressBar,
    task: tokio::task::JoinHandle<()>,
}

impl StatusLine {
    fn start(runtime: &tokio::runtime::Runtime, sampler: Arc<StatusSampler>) -> StatusLine {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg}").expect("a valid template"),
        );
        let drawn = bar.clone();
        let task = runtime.spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                every.tick().await;
                let status = sampler.status();
                show_restore(&drawn, status.restore);
                drawn.set_message(status.summary());
                drawn.tick();
            }
        });
        *SHOWN.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar.clone());
        StatusLine { bar, task }
    }
}

/// While state is restored, the line becomes a bar of the changelog read so far.
fn show_restore(bar: &indicatif::ProgressBar, restore: Option<RestoreProgress>) {
    let template = match restore {
        Some(r) if r.total > 0 => {
            bar.set_length(r.total);
            bar.set_position(r.read);
            "{spinner} [{bar:24}] {percent}% {msg}"
        }
        _ => "{spinner} {msg}",
    };
    bar.set_style(indicatif::ProgressStyle::with_template(template).expect("a valid template"));
}

impl Drop for StatusLine {
    fn drop(&mut self) {
        self.task.abort();
        *SHOWN.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_becomes_a_bar_while_state_is_restored() {
        let bar = indicatif::ProgressBar::hidden();
        show_restore(
            &bar,
            Some(RestoreProgress {
                read: 25,
                total: 100,
            }),
        );
        assert_eq!((bar.position(), bar.length()), (25, Some(100)));
        show_restore(&bar, None);
    }
}
