//! Compiled components on disk, keyed by the component's SHA-256 and the engine's settings, so
//! a restart or a second stage with the same plugin skips Cranelift entirely.
//!
//! Every build of a plugin leaves an entry (each hot reload brings one), and a Python or
//! JavaScript plugin's is some 45 MB, so the cache is bounded: after an entry is written, the
//! least recently used ones go until the rest fit in [`max_bytes`]. A hit marks its entry used.

use std::{
    hash::{DefaultHasher, Hash, Hasher},
    path::{Path, PathBuf},
    time::SystemTime,
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
        return Ok(Component::new(engine, bytes)?);
    };
    let mut h = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    let path = dir.join(format!("{hash}-{:016x}.cwasm", h.finish()));
    if path.exists() {
        // SAFETY: the file was written by `Component::serialize` of an engine with the same
        // compatibility hash, under a name that pins the source's SHA-256; wasmtime checks the
        // header and version. A damaged file fails to deserialize and is compiled again.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => {
                mark_used(&path);
                return Ok(component);
            }
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
    if let Err(e) = evict(dir, &path, max_bytes()) {
        tracing::warn!("could not trim compile cache {}: {e:#}", dir.display());
    }
    Ok(component)
}

/// How much the cache may hold: `$WEIR_CACHE_MAX_MB` megabytes, 2 GiB by default (some forty
/// interpreted plugins, or hundreds of Rust ones).
fn max_bytes() -> u64 {
    std::env::var("WEIR_CACHE_MAX_MB")
        .ok()
        .and_then(|mb| mb.parse::<u64>().ok())
        .map_or(2 << 30, |mb| mb << 20)
}

/// Note that `path` was used now, so eviction takes it last.
fn mark_used(path: &Path) {
    if let Ok(file) = std::fs::File::options().append(true).open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}

/// Remove the least recently used entries of `dir` but `keep` until the rest hold at most
/// `max_bytes`.
fn evict(dir: &Path, keep: &Path, max_bytes: u64) -> std::io::Result<()> {
    let mut entries: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "cwasm") {
            continue;
        }
        if let Ok(meta) = std::fs::metadata(&path) {
            let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            entries.push((used, meta.len(), path));
        }
    }
    let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
    entries.sort();
    for (_, len, path) in entries {
        if total <= max_bytes {
            break;
        }
        if path != keep {
            // Another process may have removed it first; a loader holding it mapped keeps
            // its pages.
            let _ = std::fs::remove_file(&path);
            total -= len;
        }
    }
    Ok(())
}

fn store(component: &Component, dir: &Path, path: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, component.serialize()?)?;
    // Rename is atomic: a concurrent loader sees the old state or the whole file.
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::evict;

    #[test]
    fn the_least_recently_used_entries_go_first_and_the_new_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let entry = |name: &str, len: usize, age_secs: u64| {
            let path = dir.path().join(format!("{name}.cwasm"));
            std::fs::write(&path, vec![0u8; len]).unwrap();
            let file = std::fs::File::options().append(true).open(&path).unwrap();
            file.set_modified(SystemTime::now() - Duration::from_secs(age_secs))
                .unwrap();
            path
        };
        entry("oldest", 400, 300);
        entry("old", 400, 200);
        let recent = entry("recent", 400, 100);
        // Older than all, but the one just written: never evicted by its own write.
        let new = entry("new", 400, 1000);
        std::fs::write(dir.path().join("other.txt"), vec![0u8; 5000]).unwrap();
        evict(dir.path(), &new, 1000).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["new.cwasm", "other.txt", "recent.cwasm"]);
        assert!(recent.exists());
        evict(dir.path(), &new, 0).unwrap();
        assert!(!recent.exists() && new.exists());
    }
}
