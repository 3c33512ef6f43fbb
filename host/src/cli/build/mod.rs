//! `weir build`: compile plugin crates to wasm components.
//!
//! Cargo builds a core wasm module for `wasm32-unknown-unknown` (no WASI, so no ambient
//! capabilities by construction); the module carries wit-bindgen's component-type section, and
//! `wit-component` wraps it into a component in-process, so no external tool is needed.
//!
//! The wasm32 standard library comes from one of two places: a rustup toolchain with the
//! `wasm32-unknown-unknown` target installed (a normal laptop), or Debian's `rustc-web` with
//! `rust-web-src`, building `std` from source (`-Zbuild-std`), which is what
//! `scripts/setup.sh` installs where rustup cannot download targets.

mod go;
mod javascript;
mod python;
mod scratch;
mod stamp;

pub use scratch::write_files;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
};

/// Build plugin crates to wasm components (`DIR.wasm` beside each crate).
#[derive(clap::Args)]
pub struct BuildCommand {
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Write the components into this directory instead.
    #[arg(long)]
    out_dir: Option<PathBuf>,
}

impl BuildCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        for out in build(&self.paths, self.out_dir.as_deref())? {
            println!("{}", out.display());
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// A plugin build that failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(
        "no Rust toolchain that can build wasm32 is installed: run `scripts/setup.sh`, or \
         `rustup target add wasm32-unknown-unknown` where rustup can reach the network"
    )]
    NoToolchain,
    #[error("{}: not a plugin crate: {reason}", path.display())]
    NotACrate { path: PathBuf, reason: String },
    #[error("cargo build of {crates} failed (its errors are above)")]
    Cargo { crates: String },
    #[error("cargo produced no wasm file for `{package}`: is its crate-type `cdylib`?")]
    NoArtifact { package: String },
    #[error("{}: cannot make a component: {reason}", module.display())]
    Componentize { module: PathBuf, reason: String },
    /// A Python or JavaScript plugin's manifest or toolchain failed.
    #[error("{}: {reason}", path.display())]
    Toolchain { path: PathBuf, reason: String },
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
}

/// Which compiler builds wasm32 code on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Toolchain {
    /// rustup's toolchain with the wasm32 target installed.
    Rustup,
    /// Debian's `rustc-web`, building `std` from `rust-web-src`.
    DebianWeb,
}

const TARGET: &str = "wasm32-unknown-unknown";

/// Compiler flags for plugins; `cargo_build` says why.
const RUSTFLAGS: &str = "[\"-Cllvm-args=-inline-threshold=3000\", \"-Ctarget-cpu=mvp\", \
     \"-Ctarget-feature=+sign-ext,+nontrapping-fptoint,+mutable-globals,+multivalue,+reference-types,+simd128\"]";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_STD_SRC: &str = "/usr/lib/rustlib/src/rust/library";

impl Toolchain {
    /// The toolchain to use: `WEIR_WASM_TOOLCHAIN=rustup|debian` forces one; otherwise rustup if
    /// its wasm32 target is installed, else Debian's. Only local files are consulted, so this
    /// never waits on the network.
    pub fn detect() -> Result<Toolchain, BuildError> {
        match std::env::var("WEIR_WASM_TOOLCHAIN").as_deref() {
            Ok("rustup") => return Ok(Toolchain::Rustup),
            Ok("debian") => return Ok(Toolchain::DebianWeb),
            _ => {}
        }
        if rustup_has_target() {
            return Ok(Toolchain::Rustup);
        }
        if Path::new(DEBIAN_RUSTC).exists() && Path::new(DEBIAN_STD_SRC).exists() {
            return Ok(Toolchain::DebianWeb);
        }
        Err(BuildError::NoToolchain)
    }

    /// How `weir inspect` names it.
    fn name(&self) -> &'static str {
        match self {
            Toolchain::Rustup => "cargo, rustup's wasm32-unknown-unknown",
            Toolchain::DebianWeb => "cargo, Debian's rustc-web (std built from source)",
        }
    }

    fn cargo(&self) -> Command {
        match self {
            Toolchain::Rustup => Command::new("cargo"),
            Toolchain::DebianWeb => {
                let mut cmd = Command::new(DEBIAN_CARGO);
                cmd.env("RUSTC", DEBIAN_RUSTC)
                    // build-std is a nightly feature; rustc-web is a stable compiler.
                    .env("RUSTC_BOOTSTRAP", "1")
                    .env_remove("RUSTUP_TOOLCHAIN")
                    .env_remove("RUSTC_WRAPPER");
                cmd
            }
        }
    }
}

/// Whether rustup's active toolchain has the wasm32 std installed, looked up on disk (`rustup
/// target list` may try the network on some versions).
fn rustup_has_target() -> bool {
    let Ok(out) = Command::new("rustc")
        .args(["--print", "sysroot"])
        .stderr(Stdio::null())
        .output()
    else {
        return false;
    };
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    !sysroot.is_empty()
        && Path::new(&sysroot)
            .join("lib/rustlib")
            .join(TARGET)
            .join("lib")
            .is_dir()
}

/// A plugin crate to build.
#[derive(Debug)]
struct Package {
    name: String,
    /// `[package.metadata.weir]`: what the plugin declares it needs.
    needs: serde_json::Map<String, serde_json::Value>,
    dir: PathBuf,
    workspace_root: PathBuf,
    target_dir: PathBuf,
}

fn package(dir: &Path) -> Result<Package, BuildError> {
    let not_a_crate = |reason: String| BuildError::NotACrate {
        path: dir.to_path_buf(),
        reason,
    };
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(not_a_crate("no Cargo.toml".into()));
    }
    let manifest = manifest
        .canonicalize()
        .map_err(|e| not_a_crate(e.to_string()))?;
    let dir = manifest.parent().expect("a manifest path has a parent");
    let out = Command::new("cargo")
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(&manifest)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| not_a_crate(format!("cannot run cargo metadata: {e}")))?;
    if !out.status.success() {
        return Err(not_a_crate("cargo metadata failed".into()));
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| not_a_crate(format!("bad cargo metadata: {e}")))?;
    let package = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["manifest_path"].as_str().map(Path::new) == Some(manifest.as_path()))
        .ok_or_else(|| not_a_crate("cargo metadata does not list it as a package".into()))?;
    let name = package["name"].as_str().unwrap_or_default().to_string();
    let declared = package["metadata"]["weir"]
        .as_object()
        .into_iter()
        .flatten();
    let needs = stamp::needs(&manifest, declared, &[])?;
    let path = |key: &str| meta[key].as_str().map(PathBuf::from).unwrap_or_default();
    Ok(Package {
        name,
        needs,
        dir: dir.to_path_buf(),
        workspace_root: path("workspace_root"),
        target_dir: path("target_directory"),
    })
}

/// Build the plugin crates in `dirs` (one cargo run per workspace) and write each component
/// next to its crate as `DIR.wasm`, or into `out_dir` if given. Returns the component paths.
pub fn build(dirs: &[PathBuf], out_dir: Option<&Path>) -> Result<Vec<PathBuf>, BuildError> {
    let mut outputs = Vec::new();
    let mut rust = Vec::new();
    for dir in dirs {
        let out = component_path(dir, out_dir);
        if python::is_python(dir) {
            python::build(dir, &out)?;
        } else if javascript::is_javascript(dir) {
            javascript::build(dir, &out)?;
        } else if go::is_go(dir) {
            go::build(dir, &out)?;
        } else {
            rust.push(dir);
            continue;
        }
        outputs.push(out);
    }
    if rust.is_empty() {
        return Ok(outputs);
    }
    let toolchain = Toolchain::detect()?;
    let packages = rust
        .iter()
        .map(|d| package(d))
        .collect::<Result<Vec<_>, _>>()?;
    let mut groups: Vec<Vec<&Package>> = Vec::new();
    for p in &packages {
        match groups
            .iter_mut()
            .find(|g| g[0].workspace_root == p.workspace_root)
        {
            Some(group) => group.push(p),
            None => groups.push(vec![p]),
        }
    }
    for group in groups {
        let modules = cargo_build(&toolchain, &group)?;
        for p in group {
            let module = modules
                .iter()
                .find(|(name, _)| *name == p.name)
                .map(|(_, path)| path)
                .ok_or_else(|| BuildError::NoArtifact {
                    package: p.name.clone(),
                })?;
            let out = match out_dir {
                Some(dir) => dir.join(format!("{}.wasm", p.name)),
                None => p.dir.with_extension("wasm"),
            };
            let stamp = stamp::Stamp {
                language: "Rust",
                toolchain: toolchain.name(),
                needs: p.needs.clone(),
            };
            componentize(module, &out, &stamp)?;
            outputs.push(out);
        }
    }
    Ok(outputs)
}

/// Where the component of the plugin in `dir` goes: `DIR.wasm` beside it, or `NAME.wasm` in
/// `out_dir`.
fn component_path(dir: &Path, out_dir: Option<&Path>) -> PathBuf {
    let dir = dir.components().as_path();
    match out_dir {
        Some(out) => out
            .join(dir.file_name().unwrap_or_default())
            .with_extension("wasm"),
        None => dir.with_extension("wasm"),
    }
}

/// Run cargo for the packages of one workspace; returns (package, core module path) pairs.
fn cargo_build(
    toolchain: &Toolchain,
    group: &[&Package],
) -> Result<Vec<(String, PathBuf)>, BuildError> {
    let root = &group[0].workspace_root;
    let manifest = root.join("Cargo.toml");
    let has_profile = std::fs::read_to_string(&manifest)
        .map(|text| text.contains("[profile.plugin]"))
        .unwrap_or(false);
    let mut cmd = toolchain.cargo();
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .args([
            "--target",
            TARGET,
            "--message-format",
            "json-render-diagnostics",
        ])
        // Apart from the host build: another compiler and target would only evict its cache.
        .arg("--target-dir")
        .arg(group[0].target_dir.join("weir-wasm"))
        // Inline harder than LLVM's default. Every wasm function entry and loop carries an epoch
        // check (how calls are bounded in time), so fewer, larger functions run measurably
        // faster: about 15% on the chain benchmark, for components about 1.6x larger.
        // And leave out bulk memory: wasmtime runs each `memory.copy` as a call out to the
        // host, dear for the short copies plugins make; the SDK's `memcpy` does them inline
        // (see `weir_sdk`'s `mem` module). The CPU is the MVP plus the features a current
        // rustc enables by default, bar bulk memory, and SIMD, which wasmtime compiles to the
        // host's vector instructions: LLVM uses it for wider copies and compares (1-3% on the
        // chain benchmark).
        .args([
            "--config",
            &format!("target.{TARGET}.rustflags={RUSTFLAGS}"),
        ]);
    if has_profile {
        cmd.args(["--profile", "plugin"]);
    } else {
        cmd.arg("--release");
    }
    if *toolchain == Toolchain::DebianWeb {
        cmd.arg("-Zbuild-std=std,panic_abort");
    }
    for p in group {
        cmd.args(["-p", &p.name]);
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let crates = group
        .iter()
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let mut child = cmd.spawn().map_err(|cause| BuildError::Io {
        path: PathBuf::from(if *toolchain == Toolchain::DebianWeb {
            DEBIAN_CARGO
        } else {
            "cargo"
        }),
        cause,
    })?;
    let mut modules = Vec::new();
    for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let Ok(line) = line else { break };
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let is_cdylib = msg["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "cdylib"));
        let name = msg["target"]["name"]
            .as_str()
            .unwrap_or_default()
            .replace('_', "-");
        if !is_cdylib {
            continue;
        }
        for file in msg["filenames"].as_array().into_iter().flatten() {
            if let Some(f) = file.as_str().filter(|f| f.ends_with(".wasm")) {
                let package = group
                    .iter()
                    .find(|p| p.name.replace('_', "-") == name)
                    .map(|p| p.name.clone())
                    .unwrap_or(name.clone());
                modules.push((package, PathBuf::from(f)));
            }
        }
    }
    let status = child.wait().map_err(|cause| BuildError::Io {
        path: manifest.clone(),
        cause,
    })?;
    if !status.success() {
        return Err(BuildError::Cargo { crates });
    }
    Ok(modules)
}

/// Wrap a core module carrying a component-type section into a component at `out`, stamped.
fn componentize(module: &Path, out: &Path, stamp: &stamp::Stamp) -> Result<(), BuildError> {
    let bytes = std::fs::read(module).map_err(|cause| BuildError::Io {
        path: module.to_path_buf(),
        cause,
    })?;
    write_component(module, &bytes, None, out, stamp)
}

/// Make the core module `bytes` (read from `module`, carrying its component-type section) a
/// component at `out`, with `adapter` in front of its WASI preview 1 imports if given, and
/// stamped. Written then renamed, so a watcher (hot reload) never sees half a component.
fn write_component(
    module: &Path,
    bytes: &[u8],
    adapter: Option<&[u8]>,
    out: &Path,
    stamp: &stamp::Stamp,
) -> Result<(), BuildError> {
    let component = wit_component::ComponentEncoder::default()
        .module(bytes)
        .and_then(|encoder| match adapter {
            Some(adapter) => encoder.adapter("wasi_snapshot_preview1", adapter),
            None => Ok(encoder),
        })
        .and_then(|encoder| encoder.validate(true).encode())
        .map_err(|e| BuildError::Componentize {
            module: module.to_path_buf(),
            reason: format!("{e:#}"),
        })?;
    let tmp = out.with_extension("wasm.tmp");
    std::fs::write(&tmp, stamp::stamped(component, stamp)).map_err(|cause| BuildError::Io {
        path: tmp.clone(),
        cause,
    })?;
    scratch::publish(&tmp, out)
}
