//! `weir new`: a plugin (a Rust crate, a Python, JavaScript or Go project) that builds, tests
//! and runs as it is.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Result;
use clap::ValueEnum;
use weir::engine::Kind;

/// Create a plugin.
#[derive(clap::Args)]
pub struct NewCommand {
    /// Directory to create; its name is the plugin's name.
    name: PathBuf,
    #[arg(long, value_enum, default_value = "filter")]
    kind: KindArg,
    /// The language to write it in.
    #[arg(long, value_enum, default_value = "rust")]
    lang: Lang,
}

/// The languages `weir build` compiles plugins from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    #[value(alias = "js")]
    Javascript,
    Go,
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
        new_plugin(name, kind, self.lang)?;
        println!("created {kind} plugin {}", name.display());
        if self.lang == Lang::Rust {
            println!("  test it:  cd {} && cargo test", name.display());
        }
        println!("  build it: weir build {}", name.display());
        println!(
            "  try it:   weir test --config '{}' --input RECORDS.jsonl {}",
            example_config(kind),
            name.with_extension("wasm").display()
        );
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

/// Write a new plugin of `kind` in `lang` at `dir`; its name is the directory's name.
pub fn new_plugin(dir: &Path, kind: Kind, lang: Lang) -> Result<(), ScaffoldError> {
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
    let files = match lang {
        Lang::Rust => rust_files(&name, kind),
        Lang::Python => python_files(&name, kind),
        Lang::Javascript => javascript_files(&name, kind),
        Lang::Go => go_files(&name, kind),
    };
    super::build::write_files(dir, files).map_err(|(path, cause)| ScaffoldError::Io { path, cause })
}

/// A configuration the template of `kind` runs with.
fn example_config(kind: Kind) -> &'static str {
    match kind {
        Kind::Filter => r#"{"min": 100}"#,
        Kind::Transform => r#"{"field": "source", "value": "weir"}"#,
        Kind::Window => "{}",
    }
}

fn rust_files(name: &str, kind: Kind) -> Vec<(&'static str, String)> {
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
    let source = by_kind(kind, RUST);
    vec![
        ("Cargo.toml", manifest),
        ("src/lib.rs", source.into()),
        (".gitignore", "/target\n".into()),
    ]
}

fn python_files(name: &str, kind: Kind) -> Vec<(&'static str, String)> {
    let source = by_kind(kind, PY);
    let manifest = format!(
        r#"[project]
name = "{name}"
version = "0.1.0"
requires-python = ">=3.11"

# `weir build` makes a `{kind}` component of `plugin.py` with componentize-py.
[tool.weir]
world = "{kind}"
"#
    );
    vec![
        ("pyproject.toml", manifest),
        ("plugin.py", source.into()),
        (".gitignore", "__pycache__/\n".into()),
    ]
}

fn javascript_files(name: &str, kind: Kind) -> Vec<(&'static str, String)> {
    let source = by_kind(kind, JS);
    let manifest = serde_json::to_string_pretty(&serde_json::json!({
        "name": name,
        "version": "0.1.0",
        "type": "module",
        "main": "plugin.js",
        "weir": {"world": kind.to_string()},
    }))
    .expect("JSON");
    vec![
        ("package.json", manifest + "\n"),
        ("plugin.js", source.into()),
        (".gitignore", "node_modules/\n".into()),
    ]
}

fn go_files(name: &str, kind: Kind) -> Vec<(&'static str, String)> {
    let source = by_kind(kind, GO);
    let manifest = format!(
        "module {name}\n\ngo 1.24\n\n// `weir build` makes a `{kind}` component of this package.\n\
         // weir:world {kind}\n"
    );
    vec![("go.mod", manifest), ("main.go", source.into())]
}

/// The template of each kind, in the order of [`by_kind`].
const RUST: [&str; 3] = [
    include_str!("../../templates/filter/src/lib.rs"),
    include_str!("../../templates/transform/src/lib.rs"),
    include_str!("../../templates/window/src/lib.rs"),
];
const PY: [&str; 3] = [
    include_str!("../../templates/python/filter.py"),
    include_str!("../../templates/python/transform.py"),
    include_str!("../../templates/python/window.py"),
];
const JS: [&str; 3] = [
    include_str!("../../templates/javascript/filter.js"),
    include_str!("../../templates/javascript/transform.js"),
    include_str!("../../templates/javascript/window.js"),
];
const GO: [&str; 3] = [
    include_str!("../../templates/go/filter.go"),
    include_str!("../../templates/go/transform.go"),
    include_str!("../../templates/go/window.go"),
];

/// A language's template for `kind`: `templates` are the filter's, the transform's and the
/// window's.
fn by_kind(kind: Kind, templates: [&'static str; 3]) -> &'static str {
    let [filter, transform, window] = templates;
    match kind {
        Kind::Filter => filter,
        Kind::Transform => transform,
        Kind::Window => window,
    }
}
