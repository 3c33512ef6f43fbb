//! `/api/status`: what the dashboard shows, as JSON. A sampler reads the counters once a second
//! and keeps the last minutes, from which the rates and latency percentiles over time come.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{atomic::Ordering::Relaxed, Arc, Mutex},
    time::Instant,
};

use serde::Serialize;

use super::{
    lock, now_ms, CheckpointView, DeadLetterView, Health, HistogramSnapshot, Metrics,
    PartitionView, PluginInfo, ReloadView, RunInfo, Snapshot,
};
use crate::error::ErrorKind;

/// How many once-a-second samples are kept: five minutes.
const KEPT: usize = 300;

/// Everything `/api/status` answers.
#[derive(Debug, Serialize)]
pub struct Status {
    pub run: RunInfo,
    pub uptime_seconds: f64,
    pub ready: bool,
    /// Why it is not ready, when it is not.
    pub not_ready: Option<&'static str>,
    /// While state is being restored: changelog offsets read of those to read.
    pub restore: Option<RestoreProgress>,
    pub totals: Snapshot,
    pub stages: Vec<StageStatus>,
    pub partitions: Vec<PartitionStatus>,
    /// Tables kept from topics.
    pub tables: Vec<super::TableView>,
    /// The topics join stages join, per partition read here.
    pub joins: Vec<super::JoinView>,
    pub checkpoints: Vec<CheckpointView>,
    pub reloads: Vec<ReloadView>,
    pub dead_letters: DeadLetters,
    /// One point per second over the last minutes, oldest first.
    pub series: Vec<Point>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct RestoreProgress {
    pub read: u64,
    pub total: u64,
}

#[derive(Debug, Serialize)]
pub struct StageStatus {
    pub name: String,
    pub plugin: PluginInfo,
    pub records_in: u64,
    pub records_out: u64,
    pub filtered: u64,
    pub failed: u64,
    /// Records in per second over the last sample.
    pub rate_in: f64,
    pub call_p50_ms: Option<f64>,
    pub call_p99_ms: Option<f64>,
    pub memory_bytes: u64,
    /// How its shadow compares with it, when it runs one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<super::ShadowView>,
}

#[derive(Debug, Serialize)]
pub struct PartitionStatus {
    #[serde(flatten)]
    pub view: PartitionView,
    pub lag: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct DeadLetters {
    pub by_kind: BTreeMap<&'static str, u64>,
    pub recent: Vec<DeadLetterView>,
}

/// Rates and latency over one second.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub at_ms: u64,
    pub in_per_second: f64,
    pub out_per_second: f64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
}

/// One reading of the counters the series are made from.
struct Sample {
    at: Instant,
    at_ms: u64,
    totals: Snapshot,
    latency: HistogramSnapshot,
    stages: Vec<(u64, HistogramSnapshot)>,
}

/// Reads `metrics` once a second (see [`StatusSampler::sample`]) and answers the status.
pub struct StatusSampler {
    metrics: Arc<Metrics>,
    started: Instant,
    samples: Mutex<VecDeque<Sample>>,
}

impl StatusSampler {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        let sampler = StatusSampler {
            metrics,
            started: Instant::now(),
            samples: Mutex::default(),
        };
        sampler.sample();
        sampler
    }

    /// A sampler of `metrics` sampling once a second on the current tokio runtime, for as long
    /// as it runs: one per process, shared by the admin server and the terminal status line.
    pub fn start(metrics: Arc<Metrics>) -> Arc<Self> {
        let sampler = Arc::new(StatusSampler::new(metrics));
        let ticking = sampler.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                ticking.sample();
            }
        });
        sampler
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Take a sample; called once a second.
    pub fn sample(&self) {
        let m = &self.metrics;
        let sample = Sample {
            at: Instant::now(),
            at_ms: now_ms(),
            totals: m.snapshot(),
            latency: m.latency.snapshot(),
            stages: m
                .stages()
                .iter()
                .map(|s| (s.records_in.load(Relaxed), s.call_seconds.snapshot()))
                .collect(),
        };
        let mut samples = lock(&self.samples);
        if samples.len() == KEPT {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    pub fn status(&self) -> Status {
        let m = &self.metrics;
        let samples = lock(&self.samples);
        let series: Vec<Point> = samples
            .iter()
            .zip(samples.iter().skip(1))
            .map(|(a, b)| point(a, b))
            .collect();
        let last_two = samples
            .len()
            .checked_sub(2)
            .map(|i| (&samples[i], &samples[i + 1]));
        let stages = m
            .stages()
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let rate_in = match last_two {
                    Some((a, b)) if i < a.stages.len() && i < b.stages.len() => {
                        let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-3);
                        b.stages[i].0.saturating_sub(a.stages[i].0) as f64 / secs
                    }
                    _ => 0.0,
                };
                // Call times over the last minute when there were calls, else over the run.
                let window = samples
                    .iter()
                    .rev()
                    .nth(60)
                    .or(samples.front())
                    .and_then(|old| old.stages.get(i))
                    .map(|(_, h)| s.call_seconds.snapshot().since(h))
                    .filter(|h| h.count() > 0)
                    .unwrap_or_else(|| s.call_seconds.snapshot());
                StageStatus {
                    name: s.name.clone(),
                    plugin: s.plugin(),
                    records_in: s.records_in.load(Relaxed),
                    records_out: s.records_out.load(Relaxed),
                    filtered: s.filtered.load(Relaxed),
                    failed: s.failed.load(Relaxed),
                    rate_in,
                    call_p50_ms: window.quantile(0.5).map(|q| q * 1e3),
                    call_p99_ms: window.quantile(0.99).map(|q| q * 1e3),
                    memory_bytes: s.memory_bytes(),
                    shadow: s.shadow.view(),
                }
            })
            .collect();
        drop(samples);
        let ready = m.health.ready();
        Status {
            run: m.info(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            ready: ready.is_ok(),
            not_ready: ready.err(),
            restore: restore_progress(&m.health),
            totals: m.snapshot(),
            stages,
            partitions: m
                .partitions()
                .into_iter()
                .map(|view| PartitionStatus {
                    lag: view.lag(),
                    view,
                })
                .collect(),
            tables: m.tables(),
            joins: m.joins(),
            checkpoints: m.checkpoints(),
            reloads: m.reloads(),
            dead_letters: DeadLetters {
                by_kind: ErrorKind::ALL
                    .iter()
                    .map(|k| (k.as_str(), m.dead_letter_kinds[k.index()].load(Relaxed)))
                    .filter(|(_, n)| *n > 0)
                    .collect(),
                recent: m.recent_dead_letters(),
            },
            series,
        }
    }
}

impl Status {
    /// One line for a terminal: rates, lag, failures and the last checkpoint's age.
    pub fn summary(&self) -> String {
        let last = self.series.last();
        let rate = |f: fn(&Point) -> f64| last.map_or(0.0, f);
        let lag: i64 = self.partitions.iter().filter_map(|p| p.lag).sum();
        let checkpoint = self
            .checkpoints
            .last()
            .map_or("no checkpoint yet".into(), |c| {
                let ago = now_ms().saturating_sub(c.at_ms) as f64 / 1000.0;
                format!("checkpoint {ago:.1} s ago")
            });
        let restoring = match self.restore {
            Some(r) => format!("restoring state {}/{} · ", r.read, r.total),
            None => String::new(),
        };
        format!(
            "{restoring}in {:.0}/s · out {:.0}/s · lag {lag} · {} failed · {checkpoint}",
            rate(|p| p.in_per_second),
            rate(|p| p.out_per_second),
            self.totals.failed,
        )
    }
}

fn restore_progress(health: &Health) -> Option<RestoreProgress> {
    (health.restoring.load(Relaxed) > 0).then(|| RestoreProgress {
        read: health.restore_read.load(Relaxed),
        total: health.restore_total.load(Relaxed),
    })
}

/// Rates and latency between two samples.
fn point(a: &Sample, b: &Sample) -> Point {
    let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-3);
    let rate = |x: u64, y: u64| y.saturating_sub(x) as f64 / secs;
    let latency = b.latency.since(&a.latency);
    Point {
        at_ms: b.at_ms,
        in_per_second: rate(a.totals.consumed, b.totals.consumed),
        out_per_second: rate(a.totals.delivered, b.totals.delivered),
        latency_p50_ms: latency.quantile(0.5).map(|q| q * 1e3),
        latency_p99_ms: latency.quantile(0.99).map(|q| q * 1e3),
    }
}
