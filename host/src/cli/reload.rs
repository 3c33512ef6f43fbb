//! `weir reload`: make a running `weir run` check its files now.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{bail, Context, Result};

/// Make a running `weir run PIPELINE` check its plugins and pipeline file now (sends it
/// SIGHUP); changes it can apply live are applied, the rest is logged by it.
#[derive(clap::Args)]
pub struct ReloadCommand {
    pipeline: PathBuf,
}

impl ReloadCommand {
    pub fn execute(self) -> Result<ExitCode> {
        let pids = ask_runs_to_reload(&self.pipeline)?;
        if pids.is_empty() {
            bail!("no `weir run {}` is running here", self.pipeline.display());
        }
        for pid in pids {
            println!("asked `weir run` (pid {pid}) to reload");
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Send SIGHUP to every `weir run` of `pipeline` on this machine; their pids.
pub(super) fn ask_runs_to_reload(pipeline: &Path) -> Result<Vec<u32>> {
    let pids = weir::reload::runs_of(pipeline);
    for &pid in &pids {
        let sent = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .context("cannot run `kill`")?;
        if !sent.success() {
            bail!("could not send SIGHUP to `weir run` (pid {pid})");
        }
    }
    Ok(pids)
}
