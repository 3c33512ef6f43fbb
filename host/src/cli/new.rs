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

const FILTER: &str = r#"//! Keep orders above a configured amount.

use weir_sdk::prelude::*;

#[derive(Deserialize)]
struct Config {
    min: f64,
}

#[derive(Deserialize)]
struct Order {
    amount: f64,
}

#[filter]
fn big_orders(rec: &Record, cfg: &Config) -> Result<bool> {
    let order: Order = rec.json()?;
    Ok(order.amount > cfg.min)
}

#[cfg(test)]
mod tests {
    use weir_sdk::prelude::*;

    #[test]
    fn keeps_only_big_orders() {
        let plugin = weir_sdk::harness!(json!({ "min": 100 })).unwrap();
        assert!(plugin.filter(Record::from_json(&json!({ "amount": 150 })).unwrap()).unwrap());
        assert!(!plugin.filter(Record::from_json(&json!({ "amount": 50 })).unwrap()).unwrap());
    }
}
"#;

const TRANSFORM: &str = r#"//! Add a field to every JSON record, and count records per key in state.

use weir_sdk::prelude::*;

#[derive(Deserialize)]
struct Config {
    field: String,
    value: Value,
}

#[transform]
fn tag(rec: &Record, cfg: &Config, state: &State) -> Result<Record> {
    let seen: u64 = state.get("seen")?.unwrap_or(0) + 1;
    state.put("seen", &seen)?;
    let mut doc: Value = rec.json()?;
    let Some(obj) = doc.as_object_mut() else {
        fail!("expected a JSON object");
    };
    obj.insert(cfg.field.clone(), cfg.value.clone());
    obj.insert("seen".into(), json!(seen));
    rec.clone().with_json(&doc)
}

#[cfg(test)]
mod tests {
    use weir_sdk::prelude::*;

    #[test]
    fn tags_and_counts_per_key() {
        let plugin = weir_sdk::harness!(json!({ "field": "source", "value": "weir" })).unwrap();
        let rec = Record::from_json(&json!({ "id": 1 })).unwrap().with_key("k");
        plugin.transform(rec.clone()).unwrap();
        let out = plugin.transform(rec).unwrap();
        assert_eq!(out[0].json::<Value>().unwrap(), json!({ "id": 1, "source": "weir", "seen": 2 }));
    }
}
"#;

const WINDOW: &str = r#"//! Count records per key per window.

use weir_sdk::prelude::*;

pub struct Count;

#[window]
impl Aggregate for Count {
    type Config = Value;
    type Acc = u64;
    type Output = Record;

    fn create(_window: &Window, _cfg: &Value) -> u64 {
        0
    }

    fn add(acc: &mut u64, _rec: &Record, _cfg: &Value) -> Result<()> {
        *acc += 1;
        Ok(())
    }

    fn merge(a: u64, b: u64, _window: &Window, _cfg: &Value) -> u64 {
        a + b
    }

    fn emit(window: &Window, acc: &u64, _cfg: &Value) -> Result<Record> {
        Record::from_json(&json!({ "start": window.start, "end": window.end, "count": acc }))
    }
}

#[cfg(test)]
mod tests {
    use weir_sdk::prelude::*;

    #[test]
    fn counts_records() {
        let plugin = weir_sdk::harness!().unwrap();
        let window = Window { key: None, start: 0, end: 60_000 };
        let (out, errors) = plugin.window(&window, vec![Record::new("a"), Record::new("b")]).unwrap();
        assert!(errors.is_empty());
        assert_eq!(out[0].json::<Value>().unwrap()["count"], 2);
    }
}
"#;
