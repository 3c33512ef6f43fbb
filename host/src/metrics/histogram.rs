//! A histogram of durations that records with atomic adds only.
//!
//! prometheus-client's own histogram takes a lock per observation; this one is recorded on the
//! data path (a plugin call per batch, a sink acknowledgement per record), so it keeps its
//! buckets as atomics and leaves the encoding to prometheus-client (see `prometheus.rs`).

use std::{
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

/// Upper bounds of the buckets, in seconds (a last, unbounded one follows): 100 µs to a minute,
/// about three per decade, which covers a plugin call on a batch as well as a record's way
/// through a busy pipeline.
pub const BOUNDS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 60.0,
];

/// Counts of durations per bucket of [`BOUNDS`], and their sum.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Not cumulative: `buckets[i]` counts the observations in bucket `i` only.
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
}

/// One reading of a [`Histogram`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// Per bucket of [`BOUNDS`] and the unbounded one, not cumulative.
    pub buckets: [u64; BOUNDS.len() + 1],
    pub sum_seconds: f64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let seconds = d.as_secs_f64();
        let i = BOUNDS.partition_point(|&b| b < seconds);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_nanos
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Relaxed);
    }

    /// Forget every observation (for counts that start again, as a new shadow's do).
    pub fn reset(&self) {
        for bucket in &self.buckets {
            bucket.store(0, Relaxed);
        }
        self.sum_nanos.store(0, Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Relaxed)),
            sum_seconds: self.sum_nanos.load(Relaxed) as f64 / 1e9,
        }
    }
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Counts per upper bound (not cumulative), the unbounded bucket last: what
    /// prometheus-client's encoder takes (it writes them cumulative).
    pub fn per_bound(&self) -> Vec<(f64, u64)> {
        BOUNDS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.buckets)
            .collect()
    }

    /// What was observed since `earlier` (a reading of the same histogram).
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].saturating_sub(earlier.buckets[i])),
            sum_seconds: (self.sum_seconds - earlier.sum_seconds).max(0.0),
        }
    }

    /// The `q` quantile (0 to 1) in seconds, interpolated within its bucket as Prometheus'
    /// `histogram_quantile` does; `None` with no observations. In the unbounded bucket it is
    /// the last bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * count as f64;
        let mut below = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let Some(&upper) = BOUNDS.get(i) else {
                    return Some(BOUNDS[BOUNDS.len() - 1]);
                };
                let lower = if i == 0 { 0.0 } else { BOUNDS[i - 1] };
                let within = (rank - below as f64) / n as f64;
                return Some(lower + (upper - lower) * within);
            }
            below += n;
        }
        Some(BOUNDS[BOUNDS.len() - 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket_and_add_up() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50)); // first bucket
        h.observe(Duration::from_millis(1)); // exactly a bound: that bucket
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(120)); // past the last bound
        let s = h.snapshot();
        assert_eq!(s.count(), 4);
        assert_eq!(s.buckets[0], 1);
        assert_eq!(s.buckets[3], 1);
        assert_eq!(s.buckets[5], 1);
        assert_eq!(s.buckets[BOUNDS.len()], 1);
        assert!(
            (s.sum_seconds - 120.00405).abs() < 1e-9,
            "{}",
            s.sum_seconds
        );
        let per_bound = s.per_bound();
        assert_eq!(per_bound.last(), Some(&(f64::INFINITY, 1)));
        assert_eq!(per_bound[3], (0.001, 1));
    }

    #[test]
    fn quantiles_interpolate_within_a_bucket() {
        let h = Histogram::default();
        assert_eq!(h.snapshot().quantile(0.5), None);
        for _ in 0..100 {
            h.observe(Duration::from_millis(7)); // bucket 5..10 ms
        }
        let s = h.snapshot();
        let p50 = s.quantile(0.5).unwrap();
        assert!((p50 - 0.0075).abs() < 1e-9, "{p50}");
        assert!((s.quantile(1.0).unwrap() - 0.01).abs() < 1e-9);
        let later = Histogram::default();
        later.observe(Duration::from_millis(7));
        later.observe(Duration::from_secs(2));
        let delta = later.snapshot().since(&HistogramSnapshot::default());
        assert_eq!(delta.count(), 2);
        assert!(delta.quantile(0.99).unwrap() > 1.0);
    }
}
