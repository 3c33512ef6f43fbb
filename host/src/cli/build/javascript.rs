//! `weir build` of a JavaScript plugin: a directory with a `package.json` whose `weir.world`
//! names the WIT world (`filter`, `transform` or `window`), and whose `main` (`plugin.js` if
//! none) is the plugin module.
//!
//! jco (from npm) bundles the module with the `weir` package and whatever it imports from its own
//! `node_modules`, then componentize-js compiles it with the StarlingMonkey engine into one
//! component, snapshotting the engine after the modules are evaluated. HTTP is left out (`fetch`
//! traps); the clocks, random numbers and stdio the engine imports from WASI get weir's empty
//! context, as a Python plugin's do: the clock reads the Unix epoch, nothing is printed. (With
//! WASI disabled whole, `Date.now()` would read the build's time, frozen in the snapshot, and
//! `performance.now()` would trap.) The package and the WIT contract are built into this binary,
//! as for Python plugins.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use super::{
    scratch::{self, publish, run, toolchain_dir, Scratch},
    BuildError,
};

/// The toolchain `weir build` installs for JavaScript plugins when it is missing. Pinned: jco
/// 1.35.0 fails to componentize here ("os error 44") because its newer WASI shim no longer
/// gives the bundled wasm-tools the file system; 1.34.0 works.
const JCO: &str = "@bytecodealliance/jco@1.34.0";

/// The `weir` package, file by file.
const SDK: [(&str, &str); 6] = [
    (
        "weir/package.json",
        r#"{"name": "weir", "type": "module", "main": "index.js"}"#,
    ),
    (
        "weir/index.js",
        include_str!("../../../../sdk/js/weir/index.js"),
    ),
    (
        "weir/pointer.js",
        include_str!("../../../../sdk/js/weir/pointer.js"),
    ),
    (
        "weir/world.js",
        include_str!("../../../../sdk/js/weir/world.js"),
    ),
    (
        "weir/state.js",
        include_str!("../../../../sdk/js/weir/state.js"),
    ),
    (
        "weir/tables.js",
        include_str!("../../../../sdk/js/weir/tables.js"),
    ),
];

/// `weir/state.js` for a window plugin, whose world imports no keyed state.
const NO_STATE: &str = "const none = () => {\n  throw new Error(\"a window plugin keeps no keyed \
     state: its accumulator is its state\");\n};\nexport { none as get, none as put, none as \
     delete, none as scan };\n";
/// `weir/tables.js` for a window plugin, whose world reads no tables.
const NO_TABLES: &str = "export const get = () => {\n  throw new Error(\"a window plugin reads no \
     tables\");\n};\n";
const WIT: &str = include_str!("../../../../wit/weir.wit");

/// Whether `dir` holds a JavaScript plugin.
pub fn is_javascript(dir: &Path) -> bool {
    dir.join("package.json").is_file() && !dir.join("Cargo.toml").exists()
}

/// Build the JavaScript plugin in `dir` into `out`.
pub fn build(dir: &Path, out: &Path) -> Result<(), BuildError> {
    let (world, main, needs) = manifest(dir)?;
    let jco = jco()?;
    let work = Scratch::new(dir)?;
    let entry = std::path::absolute(dir.join(main)).map_err(|cause| BuildError::Io {
        path: dir.to_path_buf(),
        cause,
    })?;
    // The component's module: the plugin's (which hands its function or class to `filter`,
    // `transform` or `window`), then the glue that serves the world's exports with it.
    let exports = match world.as_str() {
        "window" => "accumulate, merge, emit",
        other => other,
    };
    let app = format!(
        "import {};\nexport {{ init, {exports} }} from \"weir/world.js\";\n",
        json_string(&entry.to_string_lossy())
    );
    // The bundler finds `weir` in the scratch directory wherever the plugin is, and leaves the
    // contract's imports to the component.
    let bundle = format!(
        "export default {{ external: [/^weir:plugin\\//], resolve: {{ alias: {{ weir: {} }} }} }};\n",
        json_string(&work.path().join("weir").to_string_lossy())
    );
    let mut files = SDK.to_vec();
    if world == "window" {
        for (file, stand_in) in [("weir/state.js", NO_STATE), ("weir/tables.js", NO_TABLES)] {
            let found = files.iter_mut().find(|(path, _)| *path == file);
            found.expect("the SDK has the file").1 = stand_in;
        }
    }
    files.extend([
        ("wit/weir.wit", WIT),
        ("package.json", r#"{"type": "module"}"#),
        ("app.js", &app),
        ("bundle.config.js", &bundle),
    ]);
    work.write(&files)?;
    let tmp =
        std::path::absolute(out.with_extension("wasm.tmp")).map_err(|cause| BuildError::Io {
            path: out.to_path_buf(),
            cause,
        })?;
    run(Command::new(&jco)
        .current_dir(work.path())
        .args(["componentize", "app.js", "--wit", "wit", "-n", &world])
        .args(["-d", "http", "fetch-event"])
        .args(["--bundle", "--bundle-config", "bundle.config.js"])
        .arg("-o")
        .arg(&tmp))
    .map_err(|e| BuildError::Toolchain {
        path: dir.to_path_buf(),
        reason: format!("jco componentize failed ({e}); its errors are above"),
    })?;
    let stamp = super::stamp::Stamp {
        language: "JavaScript",
        toolchain: JCO,
        needs,
    };
    super::stamp::stamp_file(&tmp, &stamp)?;
    publish(&tmp, out)
}

/// The WIT world, the module and the needs `package.json` names (`weir.world`, `main`, the
/// rest of `weir`).
fn manifest(
    dir: &Path,
) -> Result<(String, String, serde_json::Map<String, serde_json::Value>), BuildError> {
    let path = dir.join("package.json");
    let text = std::fs::read_to_string(&path).map_err(|cause| BuildError::Io {
        path: path.clone(),
        cause,
    })?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| BuildError::Toolchain {
            path: path.clone(),
            reason: format!("not JSON: {e}"),
        })?;
    let worlds = ["filter", "transform", "window"];
    let world = scratch::world(
        &path,
        "`weir.world`",
        doc["weir"]["world"].as_str(),
        &worlds,
    )?;
    let main = doc["main"].as_str().unwrap_or("plugin.js").to_string();
    if !dir.join(&main).is_file() {
        return Err(BuildError::Toolchain {
            path,
            reason: format!("the plugin module `{main}` (its `main`) is not there"),
        });
    }
    let declared = doc["weir"].as_object().into_iter().flatten();
    let needs = super::stamp::needs(&path, declared, &["world"])?;
    Ok((world, main, needs))
}

fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// jco: `$WEIR_JCO`, else weir's own copy, installed on first use with npm under
/// `~/.cache/weir/toolchains/javascript`.
fn jco() -> Result<PathBuf, BuildError> {
    if let Some(tool) = std::env::var_os("WEIR_JCO") {
        return Ok(PathBuf::from(tool));
    }
    let dir = toolchain_dir("javascript");
    let tool = dir.join("node_modules/.bin/jco");
    if tool.is_file() {
        return Ok(tool);
    }
    eprintln!(
        "weir build: installing {JCO} (the JavaScript plugin toolchain, about 340 MB) into {}",
        dir.display()
    );
    run(Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(&dir)
        .arg(JCO))
    .map_err(|e| BuildError::Toolchain {
        path: dir.clone(),
        reason: format!(
            "npm install {JCO} failed ({e}): JavaScript plugins need Node.js 20 or later with \
             npm (Debian: apt-get install nodejs npm)"
        ),
    })?;
    Ok(tool)
}
