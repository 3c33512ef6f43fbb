//! What one stage did, over every worker's instance of it.

use std::sync::{
    atomic::{AtomicU64, Ordering::Relaxed},
    Arc, Mutex, Weak,
};

use super::{lock, Histogram};

/// Counts and call times of one stage, shared by the instances of every worker (and every
/// version hot reload swaps in): each adds to it once per batch.
#[derive(Debug, Default)]
pub struct StageStats {
    pub name: String,
    /// Records given to the stage.
    pub records_in: AtomicU64,
    /// Records it returned: a filter's passing records, a transform's outputs, fired windows.
    pub records_out: AtomicU64,
    /// Inputs it returned nothing for and did not fail on: a filter dropped them, a window
    /// stage folded them.
    pub filtered: AtomicU64,
    /// Inputs it failed on, whatever the error policy then did with them.
    pub failed: AtomicU64,
    /// The plugin's calls, one per batch.
    pub call_seconds: Histogram,
    /// Linear memory of each live instance (weak: a replaced chain's instances drop out).
    memory: Mutex<Vec<Weak<AtomicU64>>>,
    plugin: Mutex<PluginInfo>,
    /// Its shadow's comparison with it, when it runs one.
    pub shadow: super::ShadowStats,
}

/// The build a stage runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PluginInfo {
    pub file: String,
    pub sha256: String,
    /// 1 for the build the run started with, one more for each other build swapped in.
    pub generation: u64,
}

/// A worker's view of one stage: where its instance adds its counts and reports its memory.
#[derive(Debug, Clone)]
pub struct StageProbe {
    pub stats: Arc<StageStats>,
    memory: Arc<AtomicU64>,
}

/// What one call of a stage did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Call {
    pub records_in: usize,
    pub records_out: usize,
    pub filtered: usize,
    pub failed: usize,
}

impl StageStats {
    pub(super) fn new(name: &str) -> Self {
        StageStats {
            name: name.to_string(),
            ..StageStats::default()
        }
    }

    /// A new instance of the stage, running build `sha256` of `file`.
    pub fn probe(self: &Arc<Self>, file: &str, sha256: &str) -> StageProbe {
        {
            let mut plugin = lock(&self.plugin);
            if plugin.sha256 != sha256 {
                plugin.generation += 1;
                plugin.sha256 = sha256.to_string();
            }
            plugin.file = file.to_string();
        }
        let memory = Arc::new(AtomicU64::new(0));
        let mut all = lock(&self.memory);
        all.retain(|m| m.strong_count() > 0);
        all.push(Arc::downgrade(&memory));
        StageProbe {
            stats: self.clone(),
            memory,
        }
    }

    pub fn plugin(&self) -> PluginInfo {
        lock(&self.plugin).clone()
    }

    /// Linear memory of its live instances, in bytes.
    pub fn memory_bytes(&self) -> u64 {
        lock(&self.memory)
            .iter()
            .filter_map(Weak::upgrade)
            .map(|m| m.load(Relaxed))
            .sum()
    }
}

impl StageProbe {
    pub fn record(&self, call: Call, took: std::time::Duration, memory_bytes: u64) {
        let s = &self.stats;
        s.records_in.fetch_add(call.records_in as u64, Relaxed);
        s.records_out.fetch_add(call.records_out as u64, Relaxed);
        s.filtered.fetch_add(call.filtered as u64, Relaxed);
        s.failed.fetch_add(call.failed as u64, Relaxed);
        s.call_seconds.observe(took);
        self.memory.store(memory_bytes, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_count_builds_and_memory_counts_live_instances() {
        let stats = Arc::new(StageStats::new("mask"));
        let a = stats.probe("mask.wasm", "aa");
        let b = stats.probe("mask.wasm", "aa");
        assert_eq!(stats.plugin().generation, 1);
        a.record(Call::default(), Default::default(), 100);
        b.record(Call::default(), Default::default(), 50);
        assert_eq!(stats.memory_bytes(), 150);
        drop(a);
        let c = stats.probe("mask.wasm", "bb");
        c.record(Call::default(), Default::default(), 70);
        assert_eq!(stats.memory_bytes(), 120);
        assert_eq!(stats.plugin().generation, 2);
    }
}
