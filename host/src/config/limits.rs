//! A stage's `limits` (and the file-wide defaults): bounds on each plugin instance.

use std::time::Duration;

/// Bounds on one plugin instance.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most linear memory an instance may grow to.
    pub memory_bytes: usize,
    /// Longest one call (one batch) may run before it is interrupted.
    pub call_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // Room for an interpreter: a JavaScript instance (SpiderMonkey) grows past 64 MiB
            // under a stateful plugin (the chain benchmark's languages table).
            memory_bytes: 128 << 20,
            call_timeout: Duration::from_secs(2),
        }
    }
}
