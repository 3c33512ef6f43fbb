//! Issue 24, item 4: throughput as partitions grow, with one weir process and with two `weir
//! run` processes in one consumer group, beside the plain loop (one thread) on the same topics.
//!
//! For each partition count the bench's N records go into a topic of their own. Then, one
//! after the other and each with its own group and output topic:
//! - the plain loop (the passthrough of the throughput section);
//! - weir in this process (`weir::runtime::run`, one worker per core);
//! - two `weir run` processes of the same pipeline file and group, started together, whose
//!   admin servers are read every 50 ms; steady state runs from the first record either
//!   consumed to the moment both have processed N between them with every output acknowledged.
//!
//! Every side's outputs are read back and counted. The two processes may read some records
//! twice when the group rebalances while they run (at least once): the duplicates are printed.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use weir::{chain::Stages, engine::Engine};

use super::{
    count, kit,
    kit::kafka::{http_get, metric, unique, Weir},
    load, pipeline, pipeline_text, raw, workload, Broker, PHASE_TIMEOUT,
};

/// One row of the table: records/s and CPU µs per record (this process or the two weir
/// processes, plus the broker's).
struct Rate {
    per_sec: f64,
    cpu: f64,
    broker: f64,
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>7.0}/s {:>4.1}+{:<4.1}",
            self.per_sec, self.cpu, self.broker
        )
    }
}

/// The scaling table for each of `partitions`; wrong counts go to `wrong`.
pub(super) fn scaling(
    broker: &Broker,
    engine: &Engine,
    workers: usize,
    n: usize,
    partitions: &[i32],
    wrong: &mut Vec<String>,
) {
    let expected = (0..n).filter(|&i| super::passes(i)).count() as u64;
    println!();
    println!(
        "scaling: {n} records over 1..{} partitions; {}; weir with {workers} workers per process",
        partitions.iter().max().unwrap_or(&1),
        workload().what
    );
    println!(
        "{:>10}  {:<22} {:<22} {:<22} (records/s, CPU µs/record: own + broker's)",
        "partitions", "plain loop (1 thread)", "weir, 1 process", "weir, 2 processes",
    );
    for &p in partitions {
        let input = unique(&format!("scale{p}-in"));
        broker.create_topic(&input, p);
        load(broker, &input, n);
        let plain = {
            let out = unique("scale-raw-out");
            broker.create_topic(&out, p);
            let side = raw(broker, &input, &out, n as u64, None);
            check(broker, &out, n as u64, "plain loop", p, wrong);
            rate_of(&side, n)
        };
        let one = {
            let out = unique("scale-weir-out");
            broker.create_topic(&out, p);
            let pipe = pipeline(broker, &input, &out, &unique("scale-group"), &[]);
            let stages = Stages::load(engine, &pipe).unwrap();
            let side = super::weir(broker, &pipe, &stages, workers, n as u64, Arc::default());
            check(broker, &out, expected, "weir, 1 process", p, wrong);
            rate_of(&side, n)
        };
        let (two, duplicates, peaks) = {
            let out = unique("scale-two-out");
            broker.create_topic(&out, p);
            let (rate, peaks) = two_processes(broker, &input, &out, n as u64, expected);
            let (read, _) = count(broker, &out, expected, |_| true);
            if read < expected {
                wrong.push(format!(
                    "weir, 2 processes, {p} partitions: read back {read} of {expected}"
                ));
            }
            (rate, read.saturating_sub(expected), peaks)
        };
        let peaks: Vec<String> = peaks.iter().map(|m| format!("{m:.0}")).collect();
        println!(
            "{p:>10}  {plain:<22} {one:<22} {two:<22} peak RSS of each `weir run`: {} MiB{}",
            peaks.join(", "),
            if duplicates > 0 {
                format!("; {duplicates} outputs twice (a rebalance while running)")
            } else {
                String::new()
            }
        );
    }
}

fn rate_of(side: &super::Side, n: usize) -> Rate {
    let (c0, c1) = &side.cpu;
    Rate {
        per_sec: n as f64 / side.steady.as_secs_f64(),
        cpu: (c1.own - c0.own) * 1e6 / n as f64,
        broker: c1
            .broker
            .zip(c0.broker)
            .map_or(f64::NAN, |(b, a)| (b - a) * 1e6 / n as f64),
    }
}

/// Read `out` back; a shortfall goes to `wrong`.
fn check(broker: &Broker, out: &str, expected: u64, side: &str, p: i32, wrong: &mut Vec<String>) {
    let (read, _) = count(broker, out, expected, |_| true);
    if read != expected {
        wrong.push(format!(
            "{side}, {p} partitions: read back {read} of {expected}"
        ));
    }
}

/// Two `weir run` processes of one pipeline file in one group, from start to all `n` records
/// processed and every output acknowledged; then both are stopped (SIGTERM). Also each
/// process's peak resident memory (MiB).
fn two_processes(
    broker: &Broker,
    input: &str,
    output: &str,
    n: u64,
    expected: u64,
) -> (Rate, Vec<f64>) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scaling.toml");
    let text = pipeline_text(broker, input, output, &unique("scale-group"), &[]);
    // Plugin paths are relative to the repository root, where this file is not.
    let root = kit::root();
    let text = text.replace(
        "plugin = \"plugins/",
        &format!("plugin = \"{}/plugins/", root.display()),
    );
    std::fs::write(&file, text).unwrap();
    let mut runs = [start(&file), start(&file)];
    let admins: Vec<String> = runs.iter_mut().map(Weir::admin).collect();
    let pids: Vec<u32> = runs.iter().map(Weir::pid).collect();
    let cpu = || -> f64 { pids.iter().filter_map(|&p| kit::cpu_secs(Some(p))).sum() };
    let started = Instant::now();
    let mut first = None;
    let done = loop {
        assert!(
            started.elapsed() < PHASE_TIMEOUT,
            "two processes: timed out"
        );
        let [consumed, processed, produced, delivered] = totals(&admins);
        if first.is_none() && consumed > 0.0 {
            first = Some((Instant::now(), cpu(), broker.cpu().broker));
        }
        if processed >= n as f64 && delivered >= produced && delivered >= expected as f64 {
            break (Instant::now(), cpu(), broker.cpu().broker);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let peaks = pids.iter().map(|&pid| peak_mib(pid)).collect();
    for run in &runs {
        run.signal("TERM");
    }
    for run in &mut runs {
        assert_eq!(
            run.wait(Duration::from_secs(60)),
            Some(0),
            "log:\n{}",
            run.log()
        );
    }
    let (t0, cpu0, broker0) = first.expect("records were consumed");
    let (t1, cpu1, broker1) = done;
    let per = |secs: f64| secs * 1e6 / n as f64;
    let rate = Rate {
        per_sec: n as f64 / (t1 - t0).as_secs_f64(),
        cpu: per(cpu1 - cpu0),
        broker: broker1.zip(broker0).map_or(f64::NAN, |(b, a)| per(b - a)),
    };
    (rate, peaks)
}

/// The resident-memory high-water mark of process `pid` in MiB.
fn peak_mib(pid: u32) -> f64 {
    super::status_mib(&format!("/proc/{pid}/status"), "VmHWM:")
}

/// `weir run FILE` logging as it does by default (the tests' debug lines would cost CPU here).
fn start(file: &Path) -> Weir {
    let args = ["--admin", "127.0.0.1:0"];
    Weir::start_logging(kit::weir_bin(), file, &args, "warn,weir=info")
}

/// Consumed, processed, produced and delivered records, summed over the admin servers at `admins`.
fn totals(admins: &[String]) -> [f64; 4] {
    let mut sums = [0.0; 4];
    for at in admins {
        let (_, text) = http_get(at, "/metrics");
        for (sum, name) in sums
            .iter_mut()
            .zip(["consumed", "processed", "produced", "delivered"])
        {
            *sum += metric(&text, &format!("weir_records_{name}_total")).unwrap_or(0.0);
        }
    }
    sums
}
