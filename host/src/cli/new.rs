//! `weir new`: a plugin crate that builds, tests and runs as it is.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Result;
use clap::ValueEnum;
use weir::engine::Kind;

/// Create a plugin crate.
#[derive(clap::Args)]
pub struct NewCommand {
    /// Directory to create; its name is the crate's name.
    name: PathBuf,
    #[arg(long, value_enum, default_value = "filter")]
    kind: KindArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum KindArg {
    Filter,
    Transform,
    Window,
}

impl NewCommand {
    pub fn execute(self) -> Result<ExitCode> {
        let kind = match self.kind {
            KindArg::Filter => Kind::Filter,
            KindArg::Transform => Kind::Transform,
            KindArg::Window => Kind::Window,
        };
        let name = &self.name;
        new_plugin(name, kind)?;
        println!("created {kind} plugin {}", name.display());
        println!("  test it:  cd {} && cargo test", name.display());
        println!("  build it: weir build {}", name.display());
        Ok(ExitCode::SUCCESS)
    }
}

/// Why a crate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("{}: already exists", .0.display())]
    Exists(PathBuf),
    #[error("`{0}` is not a usable crate name: use letters, digits, `-` and `_`, starting with a letter")]
    BadName(String),
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
}

/// Where the SDK lives, for the new crate's path dependency: `WEIR_SDK_PATH`, or the SDK in the
/// source tree this weir was built from.
pub fn sdk_path() -> PathBuf {
    std::env::var_os("WEIR_SDK_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk"))
}

/// Write a new plugin crate of `kind` at `dir`; its name is the directory's name.
pub fn new_plugin(dir: &Path, kind: Kind) -> Result<(), ScaffoldError> {
    if dir.exists() {
        return Err(ScaffoldError::Exists(dir.to_path_buf()));
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(ScaffoldError::BadName(name));
    }
    let sdk = sdk_path();
    let sdk = sdk.canonicalize().unwrap_or(sdk);
    let manifest = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
weir-sdk = {{ path = "{sdk}" }}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"

# A crate of its own, not part of an enclosing workspace.
[workspace]

# `weir build` uses this profile: small, fast code that aborts on panic.
[profile.plugin]
inherits = "release"
lto = true
codegen-units = 1
panic = "abort"
"#,
        sdk = sdk.display()
    );
    let source = match kind {
        Kind::Filter => FILTER,
        Kind::Transform => TRANSFORM,
        Kind::Window => WINDOW,
    };
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |cause| ScaffoldError::Io { path, cause }
    };
    let src = dir.join("src");
    std::fs::create_dir_all(&src).map_err(io(&src))?;
    for (path, text) in [
        (dir.join("Cargo.toml"), manifest.as_str()),
        (src.join("lib.rs"), source),
        (dir.join(".gitignore"), "/target\n"),
    ] {
        std::fs::write(&path, text).map_err(io(&path))?;
    }
    Ok(())
}

const FILTER: &str = include_str!("../../templates/filter/src/lib.rs");

const TRANSFORM: &str = include_str!("../../templates/transform/src/lib.rs");

const WINDOW: &str = include_str!("../../templates/window/src/lib.rs");
