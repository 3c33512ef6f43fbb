//! `weir build` of a Python plugin: a directory with `plugin.py` and a `pyproject.toml` whose
//! `[tool.weir] world` names the WIT world (`filter`, `transform` or `window`).
//!
//! componentize-py (from PyPI) compiles the plugin, the `weir` Python package and a CPython
//! interpreter into one component, snapshotting the interpreter after the modules are imported,
//! so an instance starts without running the imports again. The package and the WIT contract
//! are built into this binary and written next to the plugin's own files for each build, so a
//! plugin builds anywhere, against the contract of the weir that builds it.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use super::{
    scratch::{self, publish, run, Scratch},
    BuildError,
};

/// The toolchain `weir build` installs for Python plugins when it is missing.
const COMPONENTIZE_PY: &str = "componentize-py==0.25.0";

/// The `weir` package, file by file.
const SDK: [(&str, &str); 3] = [
    (
        "weir/__init__.py",
        include_str!("../../../../sdk/python/weir/__init__.py"),
    ),
    (
        "weir/_world.py",
        include_str!("../../../../sdk/python/weir/_world.py"),
    ),
    (
        "weir/pointer.py",
        include_str!("../../../../sdk/python/weir/pointer.py"),
    ),
];
const WIT: &str = include_str!("../../../../wit/weir.wit");

/// The module componentize-py builds: the plugin's (whose decorator registers its function),
/// then the class that serves the WIT world's exports with it.
const APP: &str = "import plugin  # noqa: F401\nfrom weir._world import WitWorld  # noqa: F401\n";

/// Whether `dir` holds a Python plugin.
pub fn is_python(dir: &Path) -> bool {
    dir.join("pyproject.toml").is_file() && !dir.join("Cargo.toml").exists()
}

/// Build the Python plugin in `dir` into `out`.
pub fn build(dir: &Path, out: &Path) -> Result<(), BuildError> {
    let (world, needs) = manifest(dir)?;
    let tool = componentize_py()?;
    let work = Scratch::new(dir)?;
    let mut files = SDK.to_vec();
    files.extend([("wit/weir.wit", WIT), ("app.py", APP)]);
    work.write(&files)?;
    let tmp = out.with_extension("wasm.tmp");
    run(Command::new(&tool)
        .arg("-d")
        .arg(work.path().join("wit"))
        .args(["-w", &world, "componentize", "app", "-p"])
        .arg(work.path())
        .arg("-p")
        .arg(dir)
        .arg("-o")
        .arg(&tmp)
        // No `__pycache__` left in the plugin's directory.
        .env("PYTHONDONTWRITEBYTECODE", "1"))
    .map_err(|e| BuildError::Toolchain {
        path: dir.to_path_buf(),
        reason: format!("componentize-py failed ({e}); its errors are above"),
    })?;
    let stamp = super::stamp::Stamp {
        language: "Python",
        toolchain: COMPONENTIZE_PY,
        needs,
    };
    super::stamp::stamp_file(&tmp, &stamp)?;
    publish(&tmp, out)
}

/// The WIT world `pyproject.toml` names in `[tool.weir]`, and the needs it declares there.
fn manifest(dir: &Path) -> Result<(String, Needs), BuildError> {
    let path = dir.join("pyproject.toml");
    let text = std::fs::read_to_string(&path).map_err(|cause| BuildError::Io {
        path: path.clone(),
        cause,
    })?;
    let doc: toml::Table = text.parse().map_err(|e| BuildError::Toolchain {
        path: path.clone(),
        reason: format!("{e}"),
    })?;
    let table = doc.get("tool").and_then(|t| t.get("weir"));
    let world = table.and_then(|w| w.get("world")).and_then(|w| w.as_str());
    let worlds = ["filter", "transform", "window"];
    let world = scratch::world(&path, "`world` in [tool.weir]", world, &worlds)?;
    let fields = serde_json::to_value(table).unwrap_or_default();
    let declared = fields.as_object().into_iter().flatten();
    Ok((world, super::stamp::needs(&path, declared, &["world"])?))
}

type Needs = serde_json::Map<String, serde_json::Value>;

/// componentize-py: `$WEIR_COMPONENTIZE_PY`, else weir's own copy, installed on first use into
/// a virtual environment under `~/.cache/weir/toolchains/python`.
fn componentize_py() -> Result<PathBuf, BuildError> {
    scratch::pip_tool(
        "WEIR_COMPONENTIZE_PY",
        "python",
        "componentize-py",
        COMPONENTIZE_PY,
    )
}
