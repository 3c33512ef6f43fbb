//! Helpers shared by the end-to-end tests: where things are, and the built components.

#![allow(dead_code)]

pub mod kafka;

use std::path::{Path, PathBuf};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The component built from the plugin crate `name` (in `plugins/` or `tests/plugins/`).
///
/// Components are built by `scripts/build-plugins.sh` (the test script runs it first); a missing
/// one fails the test rather than skipping it.
pub fn component(name: &str) -> PathBuf {
    for dir in ["plugins", "tests/plugins"] {
        let path = root().join(dir).join(format!("{name}.wasm"));
        if path.exists() {
            return path;
        }
    }
    panic!("component `{name}` is not built: run scripts/build-plugins.sh (scripts/test.sh does)");
}

/// The `weir` binary this test run built.
pub fn weir_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_weir"))
}

/// A scratch directory removed when dropped.
pub fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}
