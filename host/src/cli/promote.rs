//! `weir promote`: make a stage's shadow its live build.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{bail, Context, Result};
use toml_edit::{DocumentMut, Item};
use weir::config::Pipeline;

/// Make the candidate a stage shadows (`shadow = "new.wasm"`) its live build: the pipeline file
/// is rewritten (comments and layout kept) so the stage runs the candidate and has no shadow,
/// and a `weir run` of it here applies that through hot reload, with its trial and rollback.
#[derive(clap::Args)]
pub struct PromoteCommand {
    /// The pipeline file.
    pipeline: PathBuf,
    /// The stage whose shadow becomes live.
    stage: String,
}

impl PromoteCommand {
    pub fn execute(self) -> Result<ExitCode> {
        let path = &self.pipeline;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let (promoted, candidate) =
            promote(&text, &self.stage).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        // What a reload would refuse is refused here, before the file changes.
        let pipeline = Pipeline::parse(path, &promoted)?;
        super::load_stages(&super::engine()?, &pipeline)?;
        write_replacing(path, &promoted)?;
        println!(
            "{}: stage `{}` now runs {candidate} (it shadowed the stage until now)",
            path.display(),
            self.stage
        );
        let asked = super::reload::ask_runs_to_reload(path)?;
        if asked.is_empty() {
            println!("no `weir run` of it is running here: the next one starts with it");
        }
        for pid in asked {
            println!(
                "`weir run` (pid {pid}) swaps it in with a trial (and rolls back if it fails \
                 it): its log says which, as `reload: generation N published` then either \
                 nothing more or `rolled back`"
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// `text` with stage `stage` running its shadow instead of its plugin, and the candidate's
/// path as written.
fn promote(text: &str, stage: &str) -> Result<(String, String)> {
    let mut doc: DocumentMut = text.parse().context("not a TOML document")?;
    let stages = doc
        .get_mut("stage")
        .and_then(Item::as_array_of_tables_mut)
        .context("no [[stage]] tables")?;
    let Some(table) = stages
        .iter_mut()
        .find(|t| t.get("name").and_then(Item::as_str) == Some(stage))
    else {
        bail!("no stage named `{stage}`");
    };
    let Some(candidate) = table
        .get("shadow")
        .and_then(Item::as_str)
        .map(str::to_string)
    else {
        bail!("stage `{stage}` has no `shadow` to promote");
    };
    let plugin = table
        .get_mut("plugin")
        .and_then(Item::as_value_mut)
        .context("the stage has no `plugin`")?;
    // Keep what surrounds the value (spaces, a comment after it).
    let decor = plugin.decor().clone();
    *plugin = candidate.as_str().into();
    *plugin.decor_mut() = decor;
    table.remove("shadow");
    table.remove("shadow_topic");
    Ok((doc.to_string(), candidate))
}

/// Replace `path`'s content with `text` at once (a file beside it renamed over it), so a
/// watcher never reads half a file.
fn write_replacing(path: &Path, text: &str) -> Result<()> {
    let mut beside = path.as_os_str().to_owned();
    beside.push(".promoting");
    let beside = PathBuf::from(beside);
    std::fs::write(&beside, text).with_context(|| format!("cannot write {}", beside.display()))?;
    if let Ok(meta) = std::fs::metadata(path) {
        std::fs::set_permissions(&beside, meta.permissions())?;
    }
    std::fs::rename(&beside, path).with_context(|| format!("cannot replace {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shadow_becomes_the_plugin_and_the_rest_of_the_file_stays() {
        let text = "# totals per key\n[[stage]]\nname = \"a\"\nplugin = \"a.wasm\"\n\n\
                    [[stage]]\nname = \"total\"\nplugin = \"v1.wasm\"  # live\n\
                    shadow = \"v2.wasm\"\nshadow_topic = \"cmp\"\nconfig = { x = 1 }\n";
        let (promoted, candidate) = promote(text, "total").unwrap();
        assert_eq!(candidate, "v2.wasm");
        assert_eq!(
            promoted,
            "# totals per key\n[[stage]]\nname = \"a\"\nplugin = \"a.wasm\"\n\n\
             [[stage]]\nname = \"total\"\nplugin = \"v2.wasm\"  # live\n\
             config = { x = 1 }\n"
        );
        let wrong = |stage| promote(text, stage).unwrap_err().to_string();
        assert_eq!(wrong("a"), "stage `a` has no `shadow` to promote");
        assert_eq!(wrong("b"), "no stage named `b`");
    }
}
