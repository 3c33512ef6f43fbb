//! The admin server of `weir run` against the test broker: `/metrics` scraped during a real
//! run and checked against what was sent, the status JSON, and the probes.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{
    self,
    kafka::{broker_script, http_get, kafka, metric, Dedicated, In, Topics, Weir},
    weir_bin,
};

/// 300 orders, every third over 100 (what the filter keeps), with event times of now (so the
/// latency the run measures is its own).
fn orders() -> Vec<In> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    (0..300)
        .map(|i| In {
            key: Some(format!("c{}", i % 7)),
            value: serde_json::json!({"id": i, "amount": if i % 3 == 0 { 150 } else { 50 }, "email": "x@y"})
                .to_string()
                .into_bytes(),
            timestamp: Some(now),
            ..In::default()
        })
        .collect()
}

fn pipeline(t: &Topics) -> std::path::PathBuf {
    let plugin = |name: &str| common::component(name).display().to_string();
    t.write_pipeline(&format!(
        r#"
[[stage]]
name = "big-orders"
plugin = "{filter}"
config = {{ where = [{{ path = "/amount", op = "gt", value = 100 }}] }}

[[stage]]
name = "mask"
plugin = "{mask}"
config = {{ fields = ["/email"] }}
"#,
        filter = plugin("json-filter"),
        mask = plugin("mask-pii"),
    ))
}

/// Scrape `/metrics` until `done` holds for it, or panic with the last scrape after `timeout`.
fn scrape_until(at: &str, timeout: Duration, done: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    loop {
        let (code, text) = http_get(at, "/metrics");
        assert_eq!(code, 200, "{text}");
        if done(&text) {
            return text;
        }
        assert!(
            started.elapsed() < timeout,
            "not reached; last scrape:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn metrics_count_what_each_stage_did_and_the_lag_reaches_zero() {
    let k = kafka();
    let t = Topics::new("admin", 2);
    let input = orders();
    let kept = input.len() / 3;
    k.produce(&t.source, &input);
    let pipeline = pipeline(&t);
    let mut weir = Weir::start_with(weir_bin(), &pipeline, &["--log-format", "json"]);
    let at = weir.admin();
    let out = k.read(&t.sink, kept, Duration::from_secs(60));
    assert_eq!(out.len(), kept, "log:\n{}", weir.log());

    let lag_zero = |text: &str| {
        (0..2).all(|p| {
            let series = format!(
                "weir_consumer_lag{{topic=\"{}\",partition=\"{p}\"}}",
                t.source
            );
            metric(text, &series) == Some(0.0)
        })
    };
    let text = scrape_until(&at, Duration::from_secs(30), |text| {
        lag_zero(text) && metric(text, "weir_records_delivered_total") == Some(kept as f64)
    });
    let get =
        |series: &str| metric(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    let n = input.len() as f64;
    assert_eq!(get("weir_records_consumed_total"), n);
    assert_eq!(get(r#"weir_stage_records_in_total{stage="big-orders"}"#), n);
    assert_eq!(
        get(r#"weir_stage_records_out_total{stage="big-orders"}"#),
        kept as f64
    );
    assert_eq!(
        get(r#"weir_stage_records_filtered_total{stage="big-orders"}"#),
        n - kept as f64
    );
    assert_eq!(
        get(r#"weir_stage_records_in_total{stage="mask"}"#),
        kept as f64
    );
    assert_eq!(
        get(r#"weir_stage_records_out_total{stage="mask"}"#),
        kept as f64
    );
    assert_eq!(get(r#"weir_stage_records_failed_total{stage="mask"}"#), 0.0);
    assert!(get(r#"weir_stage_call_duration_seconds_count{stage="mask"}"#) >= 1.0);
    assert!(get(r#"weir_stage_plugin_memory_bytes{stage="mask"}"#) > 0.0);
    assert_eq!(get("weir_latency_seconds_count"), kept as f64);
    // Produced just now and delivered within a minute: no latency in the unbounded bucket.
    assert_eq!(
        get(r#"weir_latency_seconds_bucket{le="60"}"#),
        kept as f64,
        "{text}"
    );
    assert!(get("weir_commits_total") >= 1.0);
    assert!(get("weir_process_resident_memory_bytes") > 1e6);
    assert!(text.contains(r#"weir_build_info{version=""#), "{text}");
    assert!(
        text.contains(r#"weir_stage_plugin_info{stage="mask",file=""#),
        "{text}"
    );

    let (code, body) = http_get(&at, "/ready");
    assert_eq!((code, body.as_str()), (200, "ready\n"));
    assert_eq!(http_get(&at, "/health").0, 200);
    let (code, body) = http_get(&at, "/api/status");
    assert_eq!(code, 200);
    let status: Value = serde_json::from_str(&body).unwrap();
    let stages: Vec<&str> = status["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["big-orders", "mask"]);
    assert_eq!(status["totals"]["consumed"], input.len());
    assert_eq!(status["partitions"].as_array().unwrap().len(), 2, "{body}");

    // `weir status` shows the same as a table.
    let shown = std::process::Command::new(weir_bin())
        .args(["status", pipeline.to_str().unwrap(), "--admin", &at])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    assert!(table.contains("· ready\n"), "{table}");
    for stage in ["big-orders", "mask"] {
        let row = table
            .lines()
            .find(|l| l.starts_with(stage))
            .unwrap_or_else(|| panic!("{table}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        let want = if stage == "mask" { kept } else { input.len() };
        assert_eq!(cells[2], want.to_string(), "records in: {table}");
    }
    assert_eq!(weir.stop(), Some(0), "log:\n{}", weir.log());
    // Logged as JSON objects, one per line, with the message as a field.
    for line in weir.log().lines().filter(|l| !l.is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["fields"]["message"].is_string(), "{line}");
    }
}

/// The page as headless Chromium renders it after `wait_ms` of its own time (its refreshes
/// run), and what the page wrote to its console.
fn render(url: &str, wait_ms: u32, screenshot: Option<&std::path::Path>) -> (String, Vec<String>) {
    let mut cmd = std::process::Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1280,1200",
        &format!("--virtual-time-budget={wait_ms}"),
    ]);
    match screenshot {
        Some(path) => cmd.arg(format!("--screenshot={}", path.display())),
        None => cmd.arg("--dump-dom"),
    };
    let out = cmd.arg(url).output().expect(
        "run chromium (Debian's `chromium` package; scripts/setup.sh installs it with \
         WEIR_SETUP_BROWSER=1)",
    );
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let console = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    (String::from_utf8_lossy(&out.stdout).into_owned(), console)
}

/// The records-in count a stage's box shows ("1,234 in · …").
fn shown_in(dom: &str, stage: &str) -> u64 {
    let at = dom
        .find(&format!("<b>{stage}</b>"))
        .unwrap_or_else(|| panic!("no stage {stage} on the page:\n{dom}"));
    let rest = &dom[at..];
    let end = rest.find(" in ·").expect("a records-in line");
    let digits: String = rest[..end]
        .rsplit('>')
        .next()
        .unwrap()
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap()
}

#[test]
fn the_dashboard_shows_the_chain_with_live_counts_in_a_browser() {
    let k = kafka();
    let t = Topics::new("dashboard", 2);
    let mut weir = Weir::start(weir_bin(), &pipeline(&t));
    let at = weir.admin();
    let url = format!("http://{at}/");
    // Records keep coming while the page is looked at.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeder = {
        let (k, topic, stop) = (k.clone(), t.source.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                k.produce(&topic, &orders()[..30]);
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let started = Instant::now();
    while metric(
        &http_get(&at, "/metrics").1,
        r#"weir_stage_records_in_total{stage="mask"}"#,
    )
    .unwrap_or(0.0)
        == 0.0
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no records; log:\n{}",
            weir.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    let (first, console) = render(&url, 2000, None);
    assert!(
        console.is_empty(),
        "the page wrote to its console: {console:#?}"
    );
    for shown in [
        "big-orders",
        "mask",
        t.source.as_str(),
        t.sink.as_str(),
        "ready",
    ] {
        assert!(first.contains(shown), "`{shown}` not on the page:\n{first}");
    }
    let before = shown_in(&first, "big-orders");
    assert!(before > 0, "{first}");
    std::thread::sleep(Duration::from_secs(2));
    let (second, console) = render(&url, 2000, None);
    assert!(
        console.is_empty(),
        "the page wrote to its console: {console:#?}"
    );
    let after = shown_in(&second, "big-orders");
    assert!(
        after > before,
        "the count did not move: {before} then {after}"
    );

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    render(&url, 3000, Some(&shot));
    assert!(std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0) > 10_000);
    println!("dashboard screenshot: {}", shot.display());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    feeder.join().unwrap();
    assert_eq!(weir.stop(), Some(0), "log:\n{}", weir.log());
}

/// `GET /ready` until it answers `code` with `body`, or panic after `timeout`.
fn wait_ready(at: &str, code: u16, body: &str, timeout: Duration) {
    let started = Instant::now();
    loop {
        let got = http_get(at, "/ready");
        if got == (code, body.to_string()) {
            return;
        }
        assert!(started.elapsed() < timeout, "/ready still answers {got:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn ready_answers_503_with_the_reason_when_the_brokers_go_away() {
    let broker = Dedicated::start(19098);
    let t = Topics::on(&broker.kafka, "ready", 1);
    let mut weir = Weir::start(weir_bin(), &pipeline(&t));
    let at = weir.admin();
    wait_ready(&at, 200, "ready\n", Duration::from_secs(30));
    broker_script(broker.kafka.port, "stop");
    wait_ready(
        &at,
        503,
        "the brokers cannot be reached\n",
        Duration::from_secs(30),
    );
    // The process itself is well: only readiness says the run cannot do its work.
    assert_eq!(http_get(&at, "/health").0, 200, "log:\n{}", weir.log());
}

#[test]
fn a_terminal_gets_a_status_line_and_a_pipe_does_not() {
    let k = kafka();
    let t = Topics::new("status-line", 2);
    k.produce(&t.source, &orders());
    let pipeline = pipeline(&t);
    // `script` gives the run a terminal; `timeout` then stops it as SIGTERM would.
    let command = format!(
        "timeout --preserve-status -s TERM 15 {} run {} --admin 127.0.0.1:0",
        weir_bin().display(),
        pipeline.display()
    );
    let out = std::process::Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run `script` (util-linux)");
    let terminal = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{terminal}");
    assert!(
        terminal.contains("/s · lag 0 · 0 failed · checkpoint"),
        "no status line on the terminal:\n{terminal}"
    );
    // Log lines are written around it, never onto it.
    let mixed = terminal
        .split(['\n', '\r'])
        .find(|l| l.contains("· lag ") && l.contains("INFO"));
    assert!(mixed.is_none(), "{mixed:?} in:\n{terminal}");
    // Through a pipe (the kit's runs): the log line every 10 s instead, no status line.
    let mut piped = Weir::start(weir_bin(), &pipeline);
    piped.admin();
    assert_eq!(piped.stop(), Some(0));
    assert!(!piped.log().contains("· lag "), "{}", piped.log());
}

#[test]
fn ready_answers_503_while_state_is_restored() {
    const KEYS: usize = 60_000;
    let k = kafka();
    let t = Topics::new("restore-ready", 1);
    let state_dir = t.dir.path().join("state");
    let pipeline = t.write_pipeline(&format!(
        "[state]\ndir = \"{}\"\n\n[[stage]]\nname = \"totals\"\nplugin = \"{}\"\nconfig = {{ field = \"/amount\" }}\n",
        state_dir.display(),
        common::component("running-total").display()
    ));
    // A key each: as many entries in the state, and in its changelog.
    let input: Vec<In> = (0..KEYS)
        .map(|i| In {
            key: Some(format!("k{i}")),
            value: br#"{"amount": 1}"#.to_vec(),
            ..In::default()
        })
        .collect();
    k.produce(&t.source, &input);
    let mut weir = Weir::start(weir_bin(), &pipeline);
    let at = weir.admin();
    scrape_until(&at, Duration::from_secs(180), |text| {
        metric(text, "weir_records_delivered_total") == Some(KEYS as f64)
    });
    assert_eq!(weir.stop(), Some(0), "log:\n{}", weir.log());

    // The disk is lost: the next run restores the state from the changelog before its first
    // record, and says so on /ready meanwhile.
    std::fs::remove_dir_all(&state_dir).unwrap();
    let mut weir = Weir::start(weir_bin(), &pipeline);
    let at = weir.admin();
    let mut seen: Vec<(u16, String)> = Vec::new();
    let mut progress: Vec<(u64, u64)> = Vec::new();
    let started = Instant::now();
    while seen.last().is_none_or(|(code, _)| *code != 200) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{seen:?}; log:\n{}",
            weir.log()
        );
        let answer = http_get(&at, "/ready");
        if seen.last() != Some(&answer) {
            seen.push(answer);
        }
        let (_, body) = http_get(&at, "/api/status");
        let status: Value = serde_json::from_str(&body).unwrap();
        if let Some(r) = status["restore"].as_object() {
            progress.push((r["read"].as_u64().unwrap(), r["total"].as_u64().unwrap()));
        }
    }
    // Meanwhile /api/status told how far the restore was: once the changelog's end was known,
    // all of it to read (a change per key), never more read than that, and the reading moved on.
    progress.retain(|&(_, total)| total > 0);
    assert!(
        progress
            .iter()
            .all(|&(read, total)| total == KEYS as u64 && read <= total),
        "{progress:?}"
    );
    assert!(
        progress.first().map(|p| p.0) < progress.last().map(|p| p.0),
        "{progress:?}"
    );
    assert!(
        seen.contains(&(503, "restoring state\n".to_string())),
        "{seen:?}; log:\n{}",
        weir.log()
    );
    assert!(
        weir.log().contains("state restored:"),
        "log:\n{}",
        weir.log()
    );
    assert_eq!(weir.stop(), Some(0), "log:\n{}", weir.log());
}
