//! What `weir build` writes into each component about how it was built: a custom section named
//! `weir-build` holding `{"language", "toolchain", "weir"}` as JSON, which `weir inspect` shows.
//! Custom sections do not change what a component does, so the stamp costs nothing at run time.

use std::path::Path;

use super::BuildError;

/// The section's name.
pub const SECTION: &str = "weir-build";

/// `component` with the stamp appended: a component may end with a custom section.
pub fn stamped(mut component: Vec<u8>, language: &str, toolchain: &str) -> Vec<u8> {
    let data = serde_json::json!({
        "language": language,
        "toolchain": toolchain,
        "weir": env!("CARGO_PKG_VERSION"),
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
pub fn stamp_file(path: &Path, language: &str, toolchain: &str) -> Result<(), BuildError> {
    let io = |cause| BuildError::Io {
        path: path.to_path_buf(),
        cause,
    };
    let bytes = std::fs::read(path).map_err(io)?;
    std::fs::write(path, stamped(bytes, language, toolchain)).map_err(io)
}
