//! What `weir build` writes into each component about how it was built: a custom section named
//! `weir-build` holding `{"language", "toolchain", "weir", "needs"}` as JSON, which `weir
//! inspect` shows and the engine reads the needs from (`weir::engine::Needs`). Custom sections
//! do not change what a component does, so the stamp costs nothing at run time.

use std::path::Path;

use serde_json::{Map, Value};
use weir::engine::{NEED_NAMES, STAMP_SECTION as SECTION};

use super::BuildError;

/// How a component was built, and what its manifest declares it needs.
pub struct Stamp<'a> {
    pub language: &'a str,
    pub toolchain: &'a str,
    pub needs: Map<String, Value>,
}

/// The needs among a manifest's weir `fields` (those named in `others` serve other ends, such
/// as `world`): whole numbers, under the names [`NEED_NAMES`].
pub fn needs<'a>(
    manifest: &Path,
    fields: impl IntoIterator<Item = (&'a String, &'a Value)>,
    others: &[&str],
) -> Result<Map<String, Value>, BuildError> {
    let bad = |reason: String| BuildError::Toolchain {
        path: manifest.to_path_buf(),
        reason,
    };
    let mut needs = Map::new();
    for (name, value) in fields {
        if others.contains(&name.as_str()) {
            continue;
        }
        if !NEED_NAMES.contains(&name.as_str()) {
            return Err(bad(format!(
                "unknown weir setting `{name}` (a plugin declares {})",
                NEED_NAMES.join(", ")
            )));
        }
        let n = value
            .as_u64()
            .ok_or_else(|| bad(format!("`{name}` must be a whole number, not {value}")))?;
        needs.insert(name.clone(), n.into());
    }
    Ok(needs)
}

/// `component` with the stamp appended: a component may end with a custom section.
pub fn stamped(mut component: Vec<u8>, stamp: &Stamp) -> Vec<u8> {
    let data = serde_json::json!({
        "language": stamp.language,
        "toolchain": stamp.toolchain,
        "weir": env!("CARGO_PKG_VERSION"),
        "needs": stamp.needs,
    })
    .to_string();
    let mut alone = wasm_encoder::Component::new();
    alone.section(&wasm_encoder::CustomSection {
        name: SECTION.into(),
        data: data.as_bytes().into(),
    });
    // The section as a component of its own writes it, after that component's 8-byte header.
    component.extend_from_slice(&alone.finish()[8..]);
    component
}

/// Stamp the component file at `path` in place.
pub fn stamp_file(path: &Path, stamp: &Stamp) -> Result<(), BuildError> {
    let io = |cause| BuildError::Io {
        path: path.to_path_buf(),
        cause,
    };
    let bytes = std::fs::read(path).map_err(io)?;
    std::fs::write(path, stamped(bytes, stamp)).map_err(io)
}
