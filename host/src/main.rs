//! The `weir` command line.

use std::{io::IsTerminal, process::ExitCode};

use clap::Parser;

mod cli;

/// mimalloc rather than glibc's allocator: records are allocated on the consumer thread and
/// freed on the workers, a pattern glibc serves through its arena locks (the Kafka bench prints
/// the CPU per record this saves).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
                .unwrap_or_else(|_| "warn,weir=info".into()),
        )
        .with_writer(|| cli::LogWriter);
    match cli.log_format {
        cli::LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        cli::LogFormat::Json => logs.json().init(),
    }
    match cli.execute() {
        Ok(code) => code,
        // The reader went away (`weir check x.toml | head -1`): as other tools do, stop quietly.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        let io = cause
            .downcast_ref::<std::io::Error>()
            .or_else(|| match cause.downcast_ref() {
                Some(weir::Error::Io { cause, .. }) => Some(cause),
                _ => None,
            });
        io.is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
