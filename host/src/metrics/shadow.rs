//! How a stage's shadow (a candidate build run beside the live one) compares with it.

use std::sync::{
    atomic::{AtomicU64, Ordering::Relaxed},
    Mutex,
};

use serde::Serialize;

use super::{lock, Histogram};

/// The comparison of one stage's shadow with its live version, over every worker's instances;
/// counted from the first call of the candidate build now shadowing (a new candidate starts
/// the counts again).
#[derive(Debug, Default)]
pub struct ShadowStats {
    /// The candidate build (file and sha256); none while the stage has no shadow.
    plugin: Mutex<Option<(String, String)>>,
    /// Inputs both ran.
    pub compared: AtomicU64,
    /// Of those, inputs whose outputs or errors differ.
    pub differing: AtomicU64,
    /// Inputs each side failed on.
    pub live_errors: AtomicU64,
    pub shadow_errors: AtomicU64,
    /// Calls (one per batch) of each side, on the batches both ran.
    pub live_calls: Histogram,
    pub shadow_calls: Histogram,
    /// `compared` when the log last reported it.
    logged: AtomicU64,
}

/// What one batch's comparison found.
#[derive(Debug, Default, Clone, Copy)]
pub struct Compared {
    pub compared: usize,
    pub differing: usize,
    pub live_errors: usize,
    pub shadow_errors: usize,
}

/// A shadow's comparison as `/api/status` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ShadowView {
    pub file: String,
    pub sha256: String,
    pub compared: u64,
    pub differing: u64,
    pub live_errors: u64,
    pub shadow_errors: u64,
    /// Mean time of a call (one per batch), in milliseconds.
    pub live_call_ms: Option<f64>,
    pub shadow_call_ms: Option<f64>,
}

impl ShadowStats {
    /// A chain starts shadowing with build `sha256` of `file`; counts start again for a build
    /// not shadowing before.
    pub fn shadowing(&self, file: &str, sha256: &str) {
        let mut plugin = lock(&self.plugin);
        if plugin.as_ref().is_some_and(|(_, sha)| sha == sha256) {
            return;
        }
        *plugin = Some((file.to_string(), sha256.to_string()));
        for counter in [
            &self.compared,
            &self.differing,
            &self.live_errors,
            &self.shadow_errors,
            &self.logged,
        ] {
            counter.store(0, Relaxed);
        }
        self.live_calls.reset();
        self.shadow_calls.reset();
    }

    /// The stage runs without a shadow now (it was promoted or removed).
    pub fn ended(&self) {
        *lock(&self.plugin) = None;
    }

    pub fn record(&self, c: Compared, live: std::time::Duration, shadow: std::time::Duration) {
        self.compared.fetch_add(c.compared as u64, Relaxed);
        self.differing.fetch_add(c.differing as u64, Relaxed);
        self.live_errors.fetch_add(c.live_errors as u64, Relaxed);
        self.shadow_errors
            .fetch_add(c.shadow_errors as u64, Relaxed);
        self.live_calls.observe(live);
        self.shadow_calls.observe(shadow);
    }

    /// The comparison so far; none without a shadow.
    pub fn view(&self) -> Option<ShadowView> {
        let (file, sha256) = lock(&self.plugin).clone()?;
        let mean = |h: &Histogram| {
            let s = h.snapshot();
            (s.count() > 0).then(|| s.sum_seconds * 1e3 / s.count() as f64)
        };
        Some(ShadowView {
            file,
            sha256,
            compared: self.compared.load(Relaxed),
            differing: self.differing.load(Relaxed),
            live_errors: self.live_errors.load(Relaxed),
            shadow_errors: self.shadow_errors.load(Relaxed),
            live_call_ms: mean(&self.live_calls),
            shadow_call_ms: mean(&self.shadow_calls),
        })
    }

    /// A line for the log when records were compared since the last one.
    pub fn report(&self, stage: &str) -> Option<String> {
        let v = self.view()?;
        if self.logged.swap(v.compared, Relaxed) == v.compared {
            return None;
        }
        let ms = |m: Option<f64>| m.map_or("-".into(), |m| format!("{m:.3}"));
        Some(format!(
            "shadow of stage `{stage}` ({} {}): {} records compared, {} differ ({:.2}%); errors: \
             live {}, shadow {}; ms per call: live {}, shadow {}",
            v.file,
            &v.sha256[..v.sha256.len().min(12)],
            v.compared,
            v.differing,
            100.0 * v.differing as f64 / v.compared.max(1) as f64,
            v.live_errors,
            v.shadow_errors,
            ms(v.live_call_ms),
            ms(v.shadow_call_ms),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_new_candidate_starts_the_counts_again_and_the_log_reports_changes_only() {
        let s = ShadowStats::default();
        assert!(s.view().is_none());
        s.shadowing("new.wasm", "aaaa");
        let batch = Compared {
            compared: 10,
            differing: 2,
            live_errors: 0,
            shadow_errors: 1,
        };
        s.record(batch, Duration::from_millis(1), Duration::from_millis(3));
        let line = s.report("total").unwrap();
        assert!(
            line.contains("10 records compared, 2 differ (20.00%)"),
            "{line}"
        );
        assert!(line.contains("live 1.000, shadow 3.000"), "{line}");
        assert!(s.report("total").is_none(), "nothing new to report");
        s.shadowing("new.wasm", "aaaa");
        assert_eq!(
            s.view().unwrap().compared,
            10,
            "the same build keeps its counts"
        );
        s.shadowing("new.wasm", "bbbb");
        assert_eq!(s.view().unwrap().compared, 0);
        s.ended();
        assert!(s.view().is_none());
    }
}
