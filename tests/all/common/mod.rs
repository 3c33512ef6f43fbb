//! The test kit, shared by the end-to-end tests and the benchmarks (which include it with
//! `#[path]`): where things are, the built components, settings from the environment, scratch
//! directories and a small disk, and in [`kafka`] the test broker and plain clients.

#![allow(dead_code)]

pub mod kafka;
pub mod postgres;

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

/// The environment variable `name` parsed, or `default` when unset; panics on a value that does
/// not parse, naming it.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a valid value")),
        Err(_) => default,
    }
}

/// The `weir` binary this test run built.
/// `component` with a later build stamp that declares `needs` (as `weir build` writes them):
/// the engine reads the last stamp.
pub fn needing(component: &Path, needs: serde_json::Value) -> Vec<u8> {
    let mut bytes = std::fs::read(component).unwrap();
    let mut stamp = wasm_encoder::Component::new();
    stamp.section(&wasm_encoder::CustomSection {
        name: weir::engine::STAMP_SECTION.into(),
        data: serde_json::json!({ "needs": needs })
            .to_string()
            .into_bytes()
            .into(),
    });
    bytes.extend_from_slice(&stamp.finish()[8..]);
    bytes
}

pub fn weir_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_weir"))
}

/// A scratch directory removed when dropped.
pub fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// A real filesystem of `size` bytes (a tmpfs, e.g. "1m"), unmounted when dropped: filling it is
/// the honest way to see what weir does when its disk is full. Needs root (or CAP_SYS_ADMIN);
/// where `mount` is refused the test fails saying so, rather than skipping.
pub struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    pub fn mount(size: &str) -> SmallDisk {
        let disk = SmallDisk(scratch());
        disk.mount_with(&format!("size={size}"));
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        assert!(
            mounts.contains(&format!(" {} tmpfs ", disk.path().display())),
            "mount reported success but {} is not a tmpfs mount point",
            disk.path().display()
        );
        disk
    }

    /// Make room, as an operator freeing space would.
    pub fn grow(&self, size: &str) {
        self.mount_with(&format!("remount,size={size}"));
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    fn mount_with(&self, options: &str) {
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(self.path())
            .output();
        match out {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!(
                "this test fills a real filesystem: it needs to mount a tmpfs (as root, or with \
                 CAP_SYS_ADMIN), and `mount -o {options}` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => panic!("this test needs `mount` to make a small filesystem: {e}"),
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: files a failed test left open must not keep it mounted.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.path())
            .status();
    }
}

/// Name and CPU seconds (user + system) of the process or thread whose `/proc/.../stat` file is
/// at `path`; `None` if unreadable. Linux counts them in ticks of 1/100 s.
pub fn stat_cpu(path: impl AsRef<Path>) -> Option<(String, f64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((stat[open + 1..close].to_string(), ticks as f64 / 100.0))
}

/// CPU seconds used so far by process `pid` (this one if none).
pub fn cpu_secs(pid: Option<u32>) -> Option<f64> {
    let path = pid.map_or("/proc/self/stat".into(), |p| format!("/proc/{p}/stat"));
    stat_cpu(path).map(|(_, secs)| secs)
}
