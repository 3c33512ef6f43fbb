//! Compiled components on disk, keyed by the component's SHA-256 and the engine's settings, so
//! a restart or a second stage with the same plugin skips Cranelift entirely.

use std::{
    hash::{DefaultHasher, Hash, Hasher},
    path::Path,
};

use anyhow::Context;
use wasmtime::component::Component;

pub(super) fn compile(
    engine: &wasmtime::Engine,
    dir: Option<&Path>,
    hash: &str,
    bytes: &[u8],
) -> anyhow::Result<Component> {
    let Some(dir) = dir else {
        return Component::new(engine, bytes);
    };
    let mut h = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    let path = dir.join(format!("{hash}-{:016x}.cwasm", h.finish()));
    if path.exists() {
        // SAFETY: the file was written by `Component::serialize` of an engine with the same
        // compatibility hash, under a name that pins the source's SHA-256; wasmtime checks the
        // header and version. A damaged file fails to deserialize and is compiled again.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => return Ok(component),
            Err(e) => tracing::warn!(
                "ignoring damaged compile cache entry {}: {e:#}",
                path.display()
            ),
        }
    }
    let component = Component::new(engine, bytes)?;
    // The cache is an optimisation: failing to write it must not fail the load.
    if let Err(e) = store(&component, dir, &path) {
        tracing::warn!("could not write compile cache {}: {e:#}", path.display());
    }
    Ok(component)
}

fn store(component: &Component, dir: &Path, path: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, component.serialize()?)?;
    // Rename is atomic: a concurrent loader sees the old state or the whole file.
    std::fs::rename(&tmp, path)?;
    Ok(())
}
