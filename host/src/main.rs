//! The `weir` command line.

use std::{io::IsTerminal, process::ExitCode};

use clap::Parser;

mod cli;

/// mimalloc rather than glibc's allocator: records are allocated on the consumer thread and
/// freed on the workers, a pattern glibc serves through its arena locks (the Kafka bench prints
/// the CPU per record this saves).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `arena_eager_commit` (its place in `mi_option_e`, which the Rust bindings do not
/// name).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Commit the allocator's arenas as they are used, not all at once. On Linux mimalloc commits
/// them eagerly, and memory it frees then stays resident: a `weir run` at full load peaked at
/// 93-133 MiB with eager commit against 69-85 without, in alternating runs of the Kafka bench's
/// scaling table, with no CPU cost within the bench's noise. `MIMALLOC_ARENA_EAGER_COMMIT` in
/// the environment still decides.
///
/// Run as a constructor, before `main`: mimalloc reserves its first arena at the first
/// allocation, which the Rust runtime makes before `main`.
#[cfg(target_os = "linux")]
extern "C" fn tune_allocator() {
    // Not `std::env`, which allocates. The option's name, and the one it had before.
    let given = [
        c"MIMALLOC_ARENA_EAGER_COMMIT",
        c"MIMALLOC_EAGER_REGION_COMMIT",
    ]
    .iter()
    // SAFETY: C strings; nothing changes the environment this early.
    .any(|name| unsafe { !libc::getenv(name.as_ptr()).is_null() });
    if !given {
        // SAFETY: sets one of mimalloc's options, which take any value at any time.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
    }
}

#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static TUNE_ALLOCATOR: extern "C" fn() = tune_allocator;

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

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn the_allocator_commits_its_arenas_as_they_are_used() {
        // SAFETY: reads one of mimalloc's options.
        let eager = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_ARENA_EAGER_COMMIT) };
        // A value in the environment decides (mimalloc reads it), else the constructor's 0.
        let given = std::env::var("MIMALLOC_ARENA_EAGER_COMMIT").ok();
        let expected = given.and_then(|v| v.parse().ok()).unwrap_or(0);
        assert_eq!(eager, expected, "the constructor did not run before main");
    }
}
