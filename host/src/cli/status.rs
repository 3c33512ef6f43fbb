//! `weir status`: what a running instance's admin server says, as a table (as `vector top`).

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use weir::{admin, config::parse_listen, config::Pipeline};

/// Show a running pipeline: its rates, stages and partitions, from its admin server.
#[derive(clap::Args)]
pub struct StatusCommand {
    pipeline: PathBuf,
    /// The admin server's address, if not the pipeline's `[admin] listen` (as `weir run
    /// --admin` gave it).
    #[arg(long, value_parser = parse_listen)]
    admin: Option<SocketAddr>,
}

impl StatusCommand {
    pub fn execute(self) -> Result<ExitCode> {
        let pipeline = Pipeline::load(&self.pipeline)?;
        let Some(at) = self.admin.or(pipeline.admin.listen) else {
            bail!(
                "{}: `[admin] listen = false`: this pipeline serves no status (give --admin)",
                self.pipeline.display()
            );
        };
        let (code, body) = admin::get(at, "/api/status")
            .with_context(|| format!("is `weir run {}` running?", self.pipeline.display()))?;
        if code != 200 {
            bail!("{at} answered {code}: {body}");
        }
        let status: Value = serde_json::from_str(&body).context("reading /api/status")?;
        print!("{}", render(&status));
        Ok(ExitCode::SUCCESS)
    }
}

/// A stage's shadow, under its row: the candidate and how it compares with the live build.
fn shadow_line(sh: &Value) -> String {
    let ms = |key: &str| sh[key].as_f64().map_or("-".into(), |v| format!("{v:.3}"));
    format!(
        "  shadow {}: {} compared, {} differ; errors live {}, shadow {}; ms/call live {}, shadow \
         {}\n",
        text(&sh["file"]),
        sh["compared"],
        sh["differing"],
        sh["live_errors"],
        sh["shadow_errors"],
        ms("live_call_ms"),
        ms("shadow_call_ms"),
    )
}

/// The status as text: a heading, the rates line, then a table of stages and one of partitions.
fn render(s: &Value) -> String {
    let run = &s["run"];
    let ready = match s["not_ready"].as_str() {
        None => "ready".to_string(),
        Some(why) => format!("not ready: {why}"),
    };
    let mut out = format!(
        "{} · {} · {} workers · up {:.0} s · {ready}\n",
        text(&run["pipeline"]),
        text(&run["guarantee"]),
        run["workers"],
        s["uptime_seconds"].as_f64().unwrap_or(0.0)
    );
    let last = s["series"].as_array().and_then(|p| p.last());
    let rate = |key: &str| last.and_then(|p| p[key].as_f64()).unwrap_or(0.0);
    let lag: i64 = rows(&s["partitions"])
        .filter_map(|p| p["lag"].as_i64())
        .sum();
    out += &format!(
        "in {:.0}/s · out {:.0}/s · lag {lag} · {} failed · {} dead-lettered\n\n",
        rate("in_per_second"),
        rate("out_per_second"),
        s["totals"]["failed"],
        s["totals"]["dead_lettered"],
    );
    out += &format!(
        "{:<20} {:>9} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8}  plugin\n",
        "stage", "in/s", "in", "out", "filtered", "failed", "p50 ms", "p99 ms"
    );
    for st in rows(&s["stages"]) {
        let ms = |key: &str| st[key].as_f64().map_or("-".into(), |v| format!("{v:.2}"));
        out += &format!(
            "{:<20} {:>9.0} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8}  {} (gen {})\n",
            text(&st["name"]),
            st["rate_in"].as_f64().unwrap_or(0.0),
            st["records_in"],
            st["records_out"],
            st["filtered"],
            st["failed"],
            ms("call_p50_ms"),
            ms("call_p99_ms"),
            text(&st["plugin"]["file"]),
            st["plugin"]["generation"],
        );
        if let Some(shadow) = st.get("shadow").filter(|s| s.is_object()) {
            out += &shadow_line(shadow);
        }
    }
    out += &format!(
        "\n{:<40} {:>6} {:>12} {:>10}\n",
        "partition", "worker", "position", "lag"
    );
    for p in rows(&s["partitions"]) {
        let name = format!("{}[{}]", text(&p["topic"]), p["partition"]);
        let num = |v: &Value| v.as_i64().map_or("-".into(), |n| n.to_string());
        out += &format!(
            "{name:<40} {:>6} {:>12} {:>10}\n",
            p["worker"],
            num(&p["position"]),
            num(&p["lag"])
        );
    }
    out
}

fn rows(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}
