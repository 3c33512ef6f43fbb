//! A table of 1M rows read from its topic by `weir run` before the source starts (issue 21): how
//! long the bootstrap takes, at what rate, the process's peak memory and the store's size on
//! disk; then a restart, which reads on from the store's positions instead of from the start.
//!
//! ```text
//! cargo bench -p weir --bench tables          # 1M rows (WEIR_BENCH_TABLE_ROWS to change)
//! ```
//!
//! The rows are upserts (`{"id", "name", "country", "tier"}`, ~80 bytes) over 3 partitions
//! (`WEIR_BENCH_TABLE_PARTITIONS`), on the bench broker of the Kafka benchmark (port 19192, or
//! `KAFKA_PORT`). The real binary runs: the figures are what a user's `weir run` does.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use serde_json::json;

#[path = "../../tests/all/common/mod.rs"]
mod kit;

use kit::kafka::{bench_broker, broker_script, http_get, unique, In, Weir};

fn main() {
    let rows: usize = kit::env_or("WEIR_BENCH_TABLE_ROWS", 1_000_000);
    let partitions: i32 = kit::env_or("WEIR_BENCH_TABLE_PARTITIONS", 3);
    let (kafka, started) = bench_broker(19192);
    let table = unique("bench-table");
    let (source, sink) = (unique("bench-table-in"), unique("bench-table-out"));
    kafka.create_topic(&table, partitions);
    kafka.create_topic(&source, 1);
    kafka.create_topic(&sink, 1);
    println!("tables: producing {rows} rows over {partitions} partitions");
    let produced = std::time::Instant::now();
    for chunk in (0..rows).collect::<Vec<_>>().chunks(100_000) {
        let records: Vec<In> = chunk.iter().map(|&i| row(i, partitions)).collect();
        kafka.produce(&table, &records);
    }
    println!(
        "tables: produced in {:.1} s",
        produced.elapsed().as_secs_f64()
    );

    let dir = kit::scratch();
    let state = dir.path().join("state");
    let pipeline = dir.path().join("pipeline.toml");
    std::fs::write(
        &pipeline,
        format!(
            r#"
[source]
brokers = "{brokers}"
topics = ["{source}"]
group = "{group}"

[sink]
topic = "{sink}"

[state]
dir = "{state}"

[[table]]
name = "customers"
topic = "{table}"
key = "/id"
format = "upsert"

[[stage]]
name = "join"
plugin = "{enrich}"
tables = ["customers"]
config = {{ join = [{{ table = "customers", key = "/customer", fields = {{ "/country" = "/country" }} }}] }}
"#,
            brokers = kafka.brokers,
            group = unique("bench-table-group"),
            state = state.display(),
            enrich = kit::component("enrich").display(),
        ),
    )
    .unwrap();

    let first = bootstrap(&pipeline, rows);
    let on_disk = du(&state);
    let again = bootstrap(&pipeline, 0);
    println!();
    println!("table bootstrap by `weir run` ({rows} upsert rows, {partitions} partitions):");
    println!(
        "  fresh store: bootstrap {:.1} s ({:.0} rows/s); every row in {:.1} s after the start \
         of weir run; peak RSS {:.0} MiB; store {:.0} MiB on disk",
        first.secs,
        rows as f64 / first.secs.max(1e-9),
        first.all_in,
        first.peak_mib,
        on_disk as f64 / (1 << 20) as f64
    );
    println!(
        "  restart (nothing new to read): bootstrap {:.2} s, every row in {:.1} s, peak RSS \
         {:.0} MiB",
        again.secs, again.all_in, again.peak_mib
    );
    if let Some(port) = started {
        broker_script(port, "stop");
    }
}

/// Customer `i`, keyed by its id, in the partition its id names.
fn row(i: usize, partitions: i32) -> In {
    let country = ["DE", "FR", "NL", "US"][i % 4];
    let tier = ["gold", "silver", "bronze"][i % 3];
    let value =
        json!({ "id": i, "name": format!("customer-{i}"), "country": country, "tier": tier });
    In {
        key: Some(i.to_string()),
        value: value.to_string().into_bytes(),
        partition: Some((i % partitions as usize) as i32),
        ..In::default()
    }
}

struct Bootstrap {
    /// As the run logs it.
    secs: f64,
    /// From starting `weir run` to every row read (the process's start included).
    all_in: f64,
    peak_mib: f64,
}

/// Start `weir run`, wait until it has read the table (`rows` records, as its admin server
/// counts them), and stop it. The bootstrap's own time is what the run logs; the test broker
/// reports a partition's end short of its last batch, so there the bootstrap can end a few
/// records early and the reader takes them in right after: `all_in` counts to the last one.
fn bootstrap(pipeline: &Path, rows: usize) -> Bootstrap {
    std::env::set_var("WEIR_TEST_LOG", "warn,weir=info");
    let started = Instant::now();
    let mut weir = Weir::start_with(kit::weir_bin(), pipeline, &["--admin", "127.0.0.1:0"]);
    let at = weir.admin();
    let said = "table read: ";
    weir.wait_for_log(said, Duration::from_secs(1800));
    let log = weir.log();
    let line = &log[log.find(said).unwrap()..];
    let secs: f64 = line
        .split(" in ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    loop {
        let (_, text) = http_get(&at, "/metrics");
        let read = text
            .lines()
            .find(|l| l.starts_with("weir_table_records_read_total"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
        if read.is_some_and(|r| r >= rows as f64) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "{}",
            weir.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let all_in = started.elapsed().as_secs_f64();
    let peak_mib = status_mib(weir.pid(), "VmHWM:");
    assert_eq!(weir.stop(), Some(0), "{}", weir.log());
    Bootstrap {
        secs,
        all_in,
        peak_mib,
    }
}

/// A `/proc/PID/status` figure in MiB.
fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Bytes of the files under `dir`.
fn du(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            du(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}
