//! The price of the sandbox: the same three-stage chain (json-filter → mask-pii → enrich) over
//! the same records, once as wasm components in the weir engine and once as the very same plugin
//! code compiled natively and called directly, in one run.
//!
//! ```text
//! cargo bench -p weir --bench chain            # 1M records (WEIR_BENCH_RECORDS to change)
//! ```
//!
//! Both sides process batches of the same size, on one thread and then on two threads (one
//! "partition" each, as `weir run` uses the cores), and must produce byte-identical outputs.
//! Figures are steady-state: components are loaded and instantiated before the clock starts, and
//! load time is printed apart.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use weir::engine::{Engine, Limits, MemoryState, Record};
use weir_sdk::testing::Native;

#[path = "../../tests/all/common/mod.rs"]
mod kit;

const BATCH: usize = 512;

fn stages() -> [(&'static str, Value); 3] {
    [
        (
            "json-filter",
            json!({"where": [{"path": "/amount", "op": "gt", "value": 50}]}),
        ),
        (
            "mask-pii",
            json!({"fields": ["/customer/email", "/card/number"], "mode": "hash"}),
        ),
        (
            "enrich",
            json!({
                "set": {"/pipeline": "weir"},
                "lookup": [{"from": "/country", "into": "/region",
                            "table": {"DE": "eu", "FR": "eu", "NL": "eu", "US": "na", "CA": "na"},
                            "default": "other"}],
                "derive": [{"into": "/amount_cents", "from": "/amount", "multiply": 100}]
            }),
        ),
    ]
}

/// `n` order events of about 200 bytes; about 70% pass the filter.
fn values(n: usize) -> Vec<Vec<u8>> {
    let countries = ["DE", "FR", "US", "NL", "BR", "CA", "JP"];
    (0..n)
        .map(|i| {
            json!({
                "id": i,
                "customer": {"email": format!("user{}@example.com", i % 9973), "tier": "gold"},
                "card": {"number": format!("4111-1111-{:04}-{:04}", i % 10000, (i * 7) % 10000)},
                "amount": ((i * 37) % 20000) as f64 / 100.0,
                "currency": "EUR",
                "country": countries[i % countries.len()],
                "items": i % 5 + 1,
                "ts": 1_700_000_000_000u64 + i as u64,
            })
            .to_string()
            .into_bytes()
        })
        .collect()
}

struct Run {
    elapsed: Duration,
    outputs: usize,
    checksum: u64,
}

fn checksum(sum: &mut u64, bytes: &[u8]) {
    // FNV-1a over every output byte: cheap, and any difference between the sides shows.
    for b in bytes {
        *sum = (*sum ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
    }
}

fn wasm_chain(engine: &Engine) -> Vec<weir::engine::Instance> {
    stages()
        .iter()
        .map(|(name, cfg)| {
            let path = kit::root().join("plugins").join(format!("{name}.wasm"));
            let plugin = engine
                .load(name, &path)
                .unwrap_or_else(|e| panic!("{e} (run scripts/build-plugins.sh first)"));
            plugin
                .instantiate(&cfg.to_string(), Limits::default(), MemoryState::shared())
                .unwrap()
        })
        .collect()
}

/// Time `chain` over `values` in batches: it gets each batch's values and the offset of the first,
/// and returns the batch's outputs; `value` reads an output's bytes for the checksum.
fn timed<R>(
    values: &[Vec<u8>],
    mut chain: impl FnMut(&[Vec<u8>], usize) -> Vec<R>,
    value: impl Fn(&R) -> &[u8],
) -> Run {
    let started = Instant::now();
    let (mut outputs, mut sum) = (0, 0xcbf2_9ce4_8422_2325);
    for (b, chunk) in values.chunks(BATCH).enumerate() {
        let batch = chain(chunk, b * BATCH);
        outputs += batch.len();
        for rec in &batch {
            checksum(&mut sum, value(rec));
        }
    }
    Run {
        elapsed: started.elapsed(),
        outputs,
        checksum: sum,
    }
}

fn run_wasm(engine: &Engine, values: &[Vec<u8>]) -> Run {
    let mut chain = wasm_chain(engine);
    let run_batch = |chunk: &[Vec<u8>], first: usize| {
        let mut batch: Vec<Record> = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| Record {
                key: None,
                value: Some(v.clone()),
                headers: Vec::new(),
                timestamp: 0,
                topic: "orders".into(),
                partition: 0,
                offset: (first + i) as i64,
            })
            .collect();
        for stage in &mut chain {
            batch = stage
                .process(batch)
                .into_iter()
                .flat_map(|o| o.expect("no record fails in the benchmark"))
                .collect();
        }
        batch
    };
    timed(values, run_batch, |rec| {
        rec.value.as_deref().unwrap_or_default()
    })
}

fn native_chain() -> Vec<Box<dyn Native>> {
    let [(_, filter), (_, mask), (_, enrich)] = stages();
    vec![
        json_filter::__weir_native(filter).unwrap(),
        mask_pii::__weir_native(mask).unwrap(),
        enrich::__weir_native(enrich).unwrap(),
    ]
}

fn run_native(values: &[Vec<u8>]) -> Run {
    let chain = native_chain();
    let run_batch = |chunk: &[Vec<u8>], first: usize| {
        let mut batch: Vec<weir_sdk::Record> = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| weir_sdk::Record::new(v.clone()).at("orders", 0, (first + i) as i64))
            .collect();
        for stage in &chain {
            batch = stage
                .process(batch)
                .into_iter()
                .flat_map(|o| o.expect("no record fails in the benchmark"))
                .collect();
        }
        batch
    };
    timed(values, run_batch, |rec| {
        rec.value.as_deref().unwrap_or_default()
    })
}

/// Run `f` on each half of `values` on its own thread; the elapsed time is the slower thread's.
fn on_two_threads(values: &[Vec<u8>], f: impl Fn(&[Vec<u8>]) -> Run + Sync) -> Run {
    let (a, b) = values.split_at(values.len() / 2);
    let (ra, rb) = std::thread::scope(|s| {
        let ha = s.spawn(|| f(a));
        let hb = s.spawn(|| f(b));
        (ha.join().unwrap(), hb.join().unwrap())
    });
    Run {
        elapsed: ra.elapsed.max(rb.elapsed),
        outputs: ra.outputs + rb.outputs,
        checksum: ra.checksum ^ rb.checksum,
    }
}

/// Each stage alone on the records that reach it, wasm and native: where the time goes.
fn per_stage(engine: &Engine, values: &[Vec<u8>]) {
    let natives = native_chain();
    let mut wasms = wasm_chain(engine);
    let mut inputs: Vec<weir_sdk::Record> = values
        .iter()
        .map(|v| weir_sdk::Record::new(v.clone()))
        .collect();
    for (i, (name, _)) in stages().iter().enumerate() {
        let started = Instant::now();
        let mut wasm_out = 0;
        for chunk in inputs.chunks(BATCH) {
            let batch = chunk
                .iter()
                .map(|r| Record {
                    key: None,
                    value: r.value.clone(),
                    headers: Vec::new(),
                    timestamp: 0,
                    topic: "orders".into(),
                    partition: 0,
                    offset: 0,
                })
                .collect();
            wasm_out += wasms[i].process(batch).len();
        }
        let wasm = started.elapsed();
        let started = Instant::now();
        let mut next = Vec::with_capacity(inputs.len());
        for chunk in inputs.chunks(BATCH) {
            let outs = natives[i].process(chunk.to_vec());
            next.extend(outs.into_iter().flat_map(|o| o.unwrap()));
        }
        let native = started.elapsed();
        assert_eq!(wasm_out, inputs.len());
        let per = |d: Duration| d.as_secs_f64() * 1e6 / inputs.len() as f64;
        println!(
            "  stage {name:<12} {:>7} records: wasm {:>6.2} µs/record   native {:>6.2} µs/record   ratio {:.2}",
            inputs.len(),
            per(wasm),
            per(native),
            native.as_secs_f64() / wasm.as_secs_f64()
        );
        inputs = next;
    }
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Peak RSS of one side alone: this benchmark run again as a child process that generates the
/// input, notes its RSS, runs only `side` on one thread and reports its peak.
fn peak_rss_of(side: &str, n: usize) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env("WEIR_BENCH_SIDE", side)
        .env("WEIR_BENCH_RECORDS", n.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{side} child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn child(side: &str, n: usize) {
    let values = values(n);
    let before = peak_rss_mib();
    let run = match side {
        "wasm" => run_wasm(&Engine::new(None).unwrap(), &values),
        _ => run_native(&values),
    };
    std::hint::black_box(run.checksum);
    println!(
        "{side:<6} peak RSS {:>5.0} MiB, of which the input records {:.0} MiB",
        peak_rss_mib(),
        before
    );
}

fn main() {
    let n: usize = std::env::var("WEIR_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    if let Ok(side) = std::env::var("WEIR_BENCH_SIDE") {
        return child(&side, n);
    }
    let values = values(n);
    let avg = values.iter().map(Vec::len).sum::<usize>() / n.max(1);
    println!("chain: json-filter -> mask-pii (sha256) -> enrich, {n} records of ~{avg} bytes, batches of {BATCH}");
    println!(
        "peak RSS with the input generated: {:.0} MiB",
        peak_rss_mib()
    );

    let load = Instant::now();
    let engine = Engine::new(None).unwrap();
    drop(wasm_chain(&engine));
    println!(
        "wasm start-up: compile + instantiate 3 components: {:.0} ms (uncached)",
        load.elapsed().as_secs_f64() * 1e3
    );

    let rate = |r: &Run| n as f64 / r.elapsed.as_secs_f64();
    let report = |label: &str, wasm: &Run, native: &Run| {
        assert_eq!(
            wasm.outputs, native.outputs,
            "{label}: output counts differ"
        );
        assert_eq!(wasm.checksum, native.checksum, "{label}: outputs differ");
        println!(
            "{label}: wasm {:>9.0} records/s   native {:>9.0} records/s   ratio {:.2}   ({} outputs)",
            rate(wasm),
            rate(native),
            rate(wasm) / rate(native),
            wasm.outputs
        );
    };

    println!("each stage alone (input copies included on both sides):");
    per_stage(&engine, &values);
    let wasm = run_wasm(&engine, &values);
    let native = run_native(&values);
    report("1 thread ", &wasm, &native);
    let wasm2 = on_two_threads(&values, |v| run_wasm(&engine, v));
    let native2 = on_two_threads(&values, run_native);
    report("2 threads", &wasm2, &native2);
    println!("peak RSS, each side alone in its own process (1 thread):");
    println!("  {}", peak_rss_of("wasm", n));
    println!("  {}", peak_rss_of("native", n));
    let per_language: usize = kit::env_or("WEIR_BENCH_LANGUAGE_RECORDS", 100_000);
    languages(&values[..per_language.min(n)]);
}

/// The example plugins built from each language, one stage at a time over the same records:
/// what a build costs to start (compiled, from the component cache, a fresh instance), its
/// records/s and µs per record, the linear memory its instance grew to, and how many times it
/// had to be restarted (a trap: its memory limit, say, which the default limits must not hit). Every build must give
/// the Rust build's outputs.
fn languages(values: &[Vec<u8>]) {
    let n = values.len();
    println!("plugins by language, each stage alone, {n} records (keys: 1000 customers):");
    println!(
        "  {:<14} {:<10} {:>9} {:>10} {:>9} {:>9} {:>11} {:>10} {:>9} {:>8}",
        "plugin",
        "build",
        "size",
        "compile",
        "cached",
        "instance",
        "records/s",
        "µs/record",
        "memory",
        "restarts"
    );
    let plugins = [
        (
            "json-filter",
            json!({"where": [{"path": "/amount", "op": "gt", "value": 50}]}),
        ),
        ("running-total", json!({"field": "/amount"})),
    ];
    for (plugin, config) in plugins {
        let mut reference = None;
        for (language, suffix) in [
            ("Rust", ""),
            ("Python", "-py"),
            ("JavaScript", "-js"),
            ("Go", "-go"),
        ] {
            let name = format!("{plugin}{suffix}");
            let path = kit::root().join("plugins").join(format!("{name}.wasm"));
            let size = std::fs::metadata(&path).map_or(0, |m| m.len());
            let cache = tempfile::tempdir().unwrap();
            let load = || {
                let started = Instant::now();
                let engine = Engine::new(Some(cache.path().to_path_buf())).unwrap();
                let plugin = engine
                    .load(&name, &path)
                    .unwrap_or_else(|e| panic!("{e} (run scripts/build-plugins.sh first)"));
                (plugin, started.elapsed())
            };
            let (_, compile) = load();
            let (loaded, cached) = load();
            let started = Instant::now();
            let mut instance = loaded
                .instantiate(
                    &config.to_string(),
                    Limits::default(),
                    MemoryState::shared(),
                )
                .unwrap();
            let instantiate = started.elapsed();
            let run = timed(
                values,
                |chunk, first| {
                    let batch = chunk
                        .iter()
                        .enumerate()
                        .map(|(i, v)| Record {
                            key: Some(format!("c{}", (first + i) % 1000).into_bytes()),
                            value: Some(v.clone()),
                            headers: Vec::new(),
                            timestamp: 0,
                            topic: "orders".into(),
                            partition: 0,
                            offset: (first + i) as i64,
                        })
                        .collect();
                    instance
                        .process(batch)
                        .into_iter()
                        .flat_map(|o| o.expect("no record fails in the benchmark"))
                        .collect::<Vec<_>>()
                },
                |rec| rec.value.as_deref().unwrap_or_default(),
            );
            let reference = *reference.get_or_insert((run.outputs, run.checksum));
            assert_eq!(
                (run.outputs, run.checksum),
                reference,
                "{name}: outputs differ from the Rust build's"
            );
            let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1e3);
            println!(
                "  {plugin:<14} {language:<10} {:>6.1} MB {:>10} {:>9} {:>9} {:>11.0} {:>10.2} {:>6.1} MB {:>8}",
                size as f64 / 1e6,
                ms(compile),
                ms(cached),
                ms(instantiate),
                n as f64 / run.elapsed.as_secs_f64(),
                run.elapsed.as_secs_f64() * 1e6 / n as f64,
                instance.memory_bytes() as f64 / 1e6,
                instance.restarts(),
            );
        }
    }
}
