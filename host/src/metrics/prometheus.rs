//! `/metrics`: a run's [`Metrics`] in the Prometheus text format, written by prometheus-client
//! from a collector that reads them at each scrape (the labels, stages and partitions, are known
//! only as the run goes).

use std::{fmt::Error as FmtError, sync::Arc};

use prometheus_client::{
    collector::Collector,
    encoding::{
        DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet, MetricEncoder,
        NoLabelSet,
    },
    metrics::MetricType,
    registry::{Registry, Unit},
};

use super::{process, HistogramSnapshot, Metrics};
use crate::error::ErrorKind;
use std::sync::atomic::Ordering::Relaxed;

/// Every metric of `metrics`, as the text a Prometheus server scrapes.
pub fn encode(metrics: &Arc<Metrics>) -> String {
    let mut registry = Registry::with_prefix("weir");
    registry.register_collector(Box::new(Scrape(metrics.clone())));
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
        .expect("writing to a String does not fail");
    text
}

/// The labels of a metric that has one value.
const NO_LABELS: [(&str, &str); 0] = [];

#[derive(Debug)]
struct Scrape(Arc<Metrics>);

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), FmtError> {
        let m = &self.0;
        run(m, &mut e)?;
        stages(m, &mut e)?;
        partitions(m, &mut e)?;
        tables(m, &mut e)?;
        joins(m, &mut e)?;
        let dead = |k: ErrorKind| m.dead_letter_kinds[k.index()].load(Relaxed);
        family(
            &mut e,
            "dead_letters",
            "Records sent to the dead-letter topic, by error kind.",
            None,
            Kind::Counter,
            ErrorKind::ALL.map(|k| ([("kind", k.as_str())], dead(k))),
        )?;
        histogram(
            &mut e,
            "latency",
            "From a record's timestamp to the sink's acknowledgement.",
            &[(NO_LABELS, m.latency.snapshot())],
        )?;
        histogram(
            &mut e,
            "commit_duration",
            "Checkpoints: a commit of offsets (at least once) or of a partition's transaction (exactly once).",
            &[(NO_LABELS, m.commit_seconds.snapshot())],
        )?;
        histogram(
            &mut e,
            "state_restore_duration",
            "Restores of a partition's state from its changelog.",
            &[(NO_LABELS, m.restore_seconds.snapshot())],
        )?;
        Ok(())
    }
}

/// The run as a whole: its records, commits, reloads, build and process.
fn run(m: &Metrics, e: &mut DescriptorEncoder) -> Result<(), FmtError> {
    let s = m.snapshot();
    let counters: [(&str, &str, u64); 9] = [
        (
            "records_consumed",
            "Records read from the source.",
            s.consumed,
        ),
        (
            "records_produced",
            "Records handed to the sink.",
            s.produced,
        ),
        (
            "records_delivered",
            "Records the broker acknowledged (outputs and dead letters).",
            s.delivered,
        ),
        (
            "records_failed",
            "Records a stage failed on, whatever the policy did with them.",
            s.failed,
        ),
        (
            "records_skipped",
            "Failed records dropped by policy skip.",
            s.skipped,
        ),
        (
            "records_late",
            "Records a window stage found too late for all their windows.",
            s.late,
        ),
        ("commits", "Checkpoints committed.", s.commits),
        (
            "commit_failures",
            "Checkpoints that failed (retried at the next one).",
            m.commit_failures.load(Relaxed),
        ),
        (
            "records_processed",
            "Source records that went through the chain.",
            s.processed,
        ),
    ];
    for (name, help, value) in counters {
        family(e, name, help, None, Kind::Counter, [(NO_LABELS, value)])?;
    }
    let applied = s.swaps.saturating_sub(s.rollbacks);
    family(
        e,
        "reloads",
        "Hot reloads by outcome.",
        None,
        Kind::Counter,
        [
            ([("outcome", "applied")], applied),
            ([("outcome", "rolled-back")], s.rollbacks),
            ([("outcome", "rejected")], m.rejected.load(Relaxed)),
        ],
    )?;
    let info = m.info();
    let workers = info.workers.to_string();
    family(
        e,
        "build",
        "The running weir: version, delivery guarantee, worker threads.",
        None,
        Kind::Info,
        [(
            [
                ("version", env!("CARGO_PKG_VERSION")),
                ("guarantee", info.guarantee.as_str()),
                ("workers", workers.as_str()),
            ],
            1u64,
        )],
    )?;
    family(
        e,
        "process_cpu",
        "CPU time of the process, user and system.",
        Some(Unit::Seconds),
        Kind::Counter,
        [(NO_LABELS, process::cpu_seconds())],
    )?;
    family(
        e,
        "process_resident_memory",
        "Resident memory of the process.",
        Some(Unit::Bytes),
        Kind::Gauge,
        [(NO_LABELS, process::resident_bytes())],
    )?;
    let up = |b: bool| u64::from(b);
    family(
        e,
        "ready",
        "1 when /ready answers 200.",
        None,
        Kind::Gauge,
        [(NO_LABELS, up(m.health.ready().is_ok()))],
    )
}

/// Per stage: records in, out, filtered and failed, call time, memory and the build it runs.
fn stages(m: &Metrics, e: &mut DescriptorEncoder) -> Result<(), FmtError> {
    let stages = m.stages();
    let per = |f: &dyn Fn(&super::StageStats) -> u64| -> Vec<([(&str, String); 1], u64)> {
        stages
            .iter()
            .map(|s| ([("stage", s.name.clone())], f(s)))
            .collect()
    };
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed);
    family(
        e,
        "stage_records_in",
        "Records given to a stage.",
        None,
        Kind::Counter,
        per(&|s| load(&s.records_in)),
    )?;
    family(
        e,
        "stage_records_out",
        "Records a stage returned.",
        None,
        Kind::Counter,
        per(&|s| load(&s.records_out)),
    )?;
    family(e, "stage_records_filtered", "Inputs a stage returned nothing for without failing (filtered out, or folded into a window).", None, Kind::Counter, per(&|s| load(&s.filtered)))?;
    family(
        e,
        "stage_records_failed",
        "Inputs a stage failed on.",
        None,
        Kind::Counter,
        per(&|s| load(&s.failed)),
    )?;
    family(
        e,
        "stage_plugin_memory",
        "Linear memory of a stage's plugin instances.",
        Some(Unit::Bytes),
        Kind::Gauge,
        per(&|s| s.memory_bytes()),
    )?;
    let calls: Vec<_> = stages
        .iter()
        .map(|s| ([("stage", s.name.clone())], s.call_seconds.snapshot()))
        .collect();
    histogram(
        e,
        "stage_call_duration",
        "A stage's plugin calls, one per batch.",
        &calls,
    )?;
    let plugins: Vec<_> = stages
        .iter()
        .map(|s| {
            let p = s.plugin();
            (
                [
                    ("stage", s.name.clone()),
                    ("file", p.file),
                    ("sha256", p.sha256),
                    ("generation", p.generation.to_string()),
                ],
                1u64,
            )
        })
        .collect();
    family(
        e,
        "stage_plugin",
        "The plugin build each stage runs.",
        None,
        Kind::Info,
        plugins,
    )?;
    shadows(&stages, e)
}

/// Per stage that runs a shadow: how the candidate compares with the live build.
fn shadows(stages: &[Arc<super::StageStats>], e: &mut DescriptorEncoder) -> Result<(), FmtError> {
    let shadowed: Vec<_> = stages
        .iter()
        .filter_map(|s| Some((s, s.shadow.view()?)))
        .collect();
    if shadowed.is_empty() {
        return Ok(());
    }
    let per = |f: &dyn Fn(&super::ShadowView) -> u64| -> Vec<([(&str, String); 1], u64)> {
        shadowed
            .iter()
            .map(|(s, v)| ([("stage", s.name.clone())], f(v)))
            .collect()
    };
    family(
        e,
        "shadow_records_compared",
        "Inputs a stage's live build and its shadow both ran.",
        None,
        Kind::Counter,
        per(&|v| v.compared),
    )?;
    family(
        e,
        "shadow_records_differing",
        "Inputs whose outputs or errors differ between a stage's live build and its shadow.",
        None,
        Kind::Counter,
        per(&|v| v.differing),
    )?;
    let errors: Vec<_> = shadowed
        .iter()
        .flat_map(|(s, v)| {
            [("live", v.live_errors), ("shadow", v.shadow_errors)]
                .map(|(side, n)| ([("stage", s.name.clone()), ("side", side.to_string())], n))
        })
        .collect();
    family(
        e,
        "shadow_records_failed",
        "Compared inputs each side failed on.",
        None,
        Kind::Counter,
        errors,
    )?;
    let calls: Vec<_> = shadowed
        .iter()
        .flat_map(|(s, _)| {
            [
                ("live", s.shadow.live_calls.snapshot()),
                ("shadow", s.shadow.shadow_calls.snapshot()),
            ]
            .map(|(side, h)| ([("stage", s.name.clone()), ("side", side.to_string())], h))
        })
        .collect();
    histogram(
        e,
        "shadow_call_duration",
        "Calls of a stage's live build and of its shadow, on the batches both ran.",
        &calls,
    )?;
    let builds: Vec<_> = shadowed
        .iter()
        .map(|(s, v)| {
            (
                [
                    ("stage", s.name.clone()),
                    ("file", v.file.clone()),
                    ("sha256", v.sha256.clone()),
                ],
                1u64,
            )
        })
        .collect();
    family(
        e,
        "shadow_plugin",
        "The candidate build each shadowed stage runs beside its live one.",
        None,
        Kind::Info,
        builds,
    )
}

/// Per source partition: position, end and lag, and each window stage's watermark.
fn partitions(m: &Metrics, e: &mut DescriptorEncoder) -> Result<(), FmtError> {
    let parts = m.partitions();
    let labels = |p: &super::PartitionView| {
        [
            ("topic", p.topic.clone()),
            ("partition", p.partition.to_string()),
        ]
    };
    let with = |f: &dyn Fn(&super::PartitionView) -> Option<i64>| -> Vec<_> {
        parts
            .iter()
            .filter_map(|p| Some((labels(p), f(p)?.max(0) as u64)))
            .collect()
    };
    family(
        e,
        "consumer_position",
        "The next offset this instance reads in a partition.",
        None,
        Kind::Gauge,
        with(&|p| p.position),
    )?;
    family(
        e,
        "consumer_lag",
        "Records of a partition not yet read (its end minus the position).",
        None,
        Kind::Gauge,
        with(&|p| p.lag()),
    )?;
    let watermarks: Vec<_> = parts
        .iter()
        .flat_map(|p| {
            p.watermarks.iter().map(move |(stage, &w)| {
                (
                    [
                        ("stage", stage.clone()),
                        ("topic", p.topic.clone()),
                        ("partition", p.partition.to_string()),
                    ],
                    w as f64 / 1000.0,
                )
            })
        })
        .collect();
    family(
        e,
        "window_watermark",
        "A partition's own progress in event time in a window stage (its latest event time less the allowed disorder; the stage fires at the least over partitions), Unix time.",
        Some(Unit::Seconds),
        Kind::Gauge,
        watermarks,
    )
}

/// Per table: records read from its topic, and how far it is behind the topic's end.
fn tables(m: &Metrics, e: &mut DescriptorEncoder) -> Result<(), FmtError> {
    let tables = m.tables();
    let labels = |t: &super::TableView| [("table", t.table.clone()), ("topic", t.topic.clone())];
    family(
        e,
        "table_records_read",
        "Records of a table's topic this instance has read into the table.",
        None,
        Kind::Counter,
        tables.iter().map(|t| (labels(t), t.records_read)),
    )?;
    family(
        e,
        "table_lag",
        "Offsets of a table's topic not yet read into the table, as last measured.",
        None,
        Kind::Gauge,
        tables.iter().map(|t| (labels(t), t.lag.max(0) as u64)),
    )
}

/// Per join stage and partition of the topic it joins: records taken in, and how far behind.
fn joins(m: &Metrics, e: &mut DescriptorEncoder) -> Result<(), FmtError> {
    let joins = m.joins();
    let labels = |j: &super::JoinView| {
        [
            ("stage", j.stage.clone()),
            ("topic", j.topic.clone()),
            ("partition", j.partition.to_string()),
        ]
    };
    family(
        e,
        "join_records_read",
        "Records of the topic a join stage joins, taken into the join since the partition was \
         assigned here.",
        None,
        Kind::Counter,
        joins.iter().map(|j| (labels(j), j.records_read)),
    )?;
    family(
        e,
        "join_lag",
        "Offsets of the topic a join stage joins not yet taken in, as last seen.",
        None,
        Kind::Gauge,
        joins.iter().map(|j| (labels(j), j.lag.max(0) as u64)),
    )
}

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Info,
}

/// One metric with a value per label set.
fn family<L: EncodeLabelSet, V: EncodeCounterValue + EncodeGaugeValue>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    kind: Kind,
    values: impl IntoIterator<Item = (L, V)>,
) -> Result<(), FmtError> {
    let ty = match kind {
        Kind::Counter => MetricType::Counter,
        Kind::Gauge => MetricType::Gauge,
        Kind::Info => MetricType::Info,
    };
    let mut d = e.encode_descriptor(name, help, unit.as_ref(), ty)?;
    for (labels, value) in values {
        let mut f = d.encode_family(&labels)?;
        match kind {
            Kind::Counter => f.encode_counter::<NoLabelSet, _, f64>(&value, None)?,
            Kind::Gauge => f.encode_gauge(&value)?,
            Kind::Info => f.encode_info(&NO_LABELS)?,
        }
    }
    Ok(())
}

/// A histogram in seconds with a reading per label set.
fn histogram<L: EncodeLabelSet>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    readings: &[(L, HistogramSnapshot)],
) -> Result<(), FmtError> {
    let mut d = e.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    for (labels, h) in readings {
        let f = d.encode_family(labels)?;
        encode_histogram(f, h)?;
    }
    Ok(())
}

fn encode_histogram(mut f: MetricEncoder, h: &HistogramSnapshot) -> Result<(), FmtError> {
    f.encode_histogram::<NoLabelSet>(h.sum_seconds, h.count(), &h.per_bound(), None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn histograms_are_written_cumulative_and_stages_labelled() {
        let m = Arc::new(Metrics::default());
        m.latency.observe(Duration::from_millis(3));
        m.latency.observe(Duration::from_secs(2));
        let probe = m.stage("mask").probe("mask.wasm", "ab");
        let call = crate::metrics::Call {
            records_in: 5,
            records_out: 4,
            filtered: 1,
            failed: 0,
        };
        probe.record(call, Duration::from_micros(300), 1 << 20);
        for (i, kind) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i, "{kind}");
        }
        let text = encode(&m);
        for line in [
            "weir_latency_seconds_bucket{le=\"0.005\"} 1",
            "weir_latency_seconds_bucket{le=\"2.5\"} 2",
            "weir_latency_seconds_bucket{le=\"+Inf\"} 2",
            "weir_latency_seconds_count 2",
            "weir_stage_records_in_total{stage=\"mask\"} 5",
            "weir_stage_records_filtered_total{stage=\"mask\"} 1",
            "weir_stage_plugin_memory_bytes{stage=\"mask\"} 1048576",
            "weir_stage_call_duration_seconds_count{stage=\"mask\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
    }
}
