//! `weir state get` and `weir state scan`: a stage's keyed state, read where it lives now.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use weir::{
    admin,
    config::{parse_listen, Pipeline},
    reload::{listening, runs_of},
    state::query::{Found, Lookup},
};

/// Read a stage's keyed state (read-only). From the `weir run` instances of the pipeline on
/// this machine, through their admin servers, each answering for the partitions it owns; when
/// none runs, from the local store brought up to date from the stage's changelog (the truth),
/// as a run's start does.
#[derive(clap::Args)]
pub struct StateCommand {
    #[command(subcommand)]
    query: Query,
}

#[derive(clap::Subcommand)]
enum Query {
    /// Every entry of one record key.
    Get {
        #[command(flatten)]
        at: At,
        /// The record key (as text).
        key: String,
    },
    /// The entries of record keys starting with a prefix, in key order.
    Scan {
        #[command(flatten)]
        at: At,
        #[arg(long, default_value = "")]
        prefix: String,
        /// At most this many entries.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

/// Whose state, where, and how to show it.
#[derive(clap::Args)]
struct At {
    pipeline: PathBuf,
    /// The stage whose state to read.
    #[arg(long)]
    stage: String,
    /// Ask this admin server only (as `weir run --admin` gave it) rather than every run of the
    /// pipeline found here.
    #[arg(long, value_parser = parse_listen)]
    admin: Option<SocketAddr>,
    /// One JSON object per entry.
    #[arg(long)]
    json: bool,
}

impl StateCommand {
    pub fn execute(self) -> Result<ExitCode> {
        let (at, lookup) = match self.query {
            Query::Get { at, key } => (at, Lookup::Key(Some(key.into_bytes()))),
            Query::Scan { at, prefix, limit } => (
                at,
                Lookup::Prefix {
                    prefix: prefix.into_bytes(),
                    limit,
                },
            ),
        };
        let pipeline = Pipeline::load(&at.pipeline)?;
        if !pipeline.stages.iter().any(|s| s.name == at.stage) {
            bail!("{}: no stage named `{}`", at.pipeline.display(), at.stage);
        }
        let entries = match running(&at)? {
            Some(servers) => {
                let shown: Vec<String> = servers.iter().map(ToString::to_string).collect();
                eprintln!(
                    "from the running instances' admin servers: {}",
                    shown.join(", ")
                );
                ask(&servers, &at.stage, &lookup)?
            }
            None => {
                eprintln!("no run of it here: from the local store and the changelog");
                weir::kafka::read_stage_state(&pipeline, &at.stage, &lookup)?
                    .iter()
                    .map(Found::to_json)
                    .collect()
            }
        };
        let entries = limited(entries, &lookup);
        for entry in &entries {
            if at.json {
                println!("{entry}");
            } else {
                println!("{}", line(entry));
            }
        }
        if entries.is_empty() {
            eprintln!("no state of stage `{}` found", at.stage);
            if matches!(lookup, Lookup::Key(_)) {
                return Ok(ExitCode::FAILURE);
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// The admin servers to ask: the one given, or those of the runs of the pipeline here; `None`
/// when nothing runs it here.
fn running(at: &At) -> Result<Option<Vec<SocketAddr>>> {
    if let Some(server) = at.admin {
        return Ok(Some(vec![server]));
    }
    let pids = runs_of(&at.pipeline);
    if pids.is_empty() {
        return Ok(None);
    }
    let mut servers = Vec::new();
    for pid in pids {
        let found = listening(pid);
        if found.is_empty() {
            bail!(
                "`weir run {}` (pid {pid}) holds the state and serves no admin server to ask: \
                 give it one (`[admin] listen`, or `weir run --admin`)",
                at.pipeline.display()
            );
        }
        servers.extend(found);
    }
    Ok(Some(servers))
}

/// Ask every server; each answers from the partitions it owns.
fn ask(servers: &[SocketAddr], stage: &str, lookup: &Lookup) -> Result<Vec<Value>> {
    let query = match lookup {
        Lookup::Key(key) => format!("key={}", encode(key.as_deref().unwrap_or_default())),
        Lookup::Prefix { prefix, limit } => format!("prefix={}&limit={limit}", encode(prefix)),
    };
    let path = format!("/api/state/{}?{query}", encode(stage.as_bytes()));
    let mut entries = Vec::new();
    let mut held = 0;
    for &server in servers {
        let (code, body) = admin::get(server, &path)?;
        if code != 200 {
            bail!("{server} answered {code}: {body}");
        }
        let answer: Value = serde_json::from_str(&body).context("reading /api/state")?;
        held += answer["partitions"].as_array().map_or(0, Vec::len);
        entries.extend(answer["entries"].as_array().into_iter().flatten().cloned());
    }
    if held == 0 {
        bail!(
            "no running instance holds state of stage `{stage}` (it keeps none, or no \
             partitions are assigned yet)"
        );
    }
    Ok(entries)
}

/// Percent-encoding for a query string: everything but unreserved characters.
fn encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The servers' answers as one list, in key order, within a scan's limit.
fn limited(mut entries: Vec<Value>, lookup: &Lookup) -> Vec<Value> {
    let key = |e: &Value| {
        let k = e
            .get("key")
            .or(e.get("key_base64"))
            .cloned()
            .unwrap_or_default();
        (k.to_string(), e["name"].to_string())
    };
    entries.sort_by_key(key);
    if let Lookup::Prefix { limit, .. } = lookup {
        entries.truncate(*limit);
    }
    entries
}

/// An entry for people: `k1  seen = {"n":3}  (state version 0, orders[1])`.
fn line(e: &Value) -> String {
    let key = match (e.get("key"), e.get("key_base64")) {
        (Some(Value::String(k)), _) => k.clone(),
        (_, Some(b)) => format!("base64:{}", b.as_str().unwrap_or_default()),
        _ => "(no key)".into(),
    };
    let value = match (e.get("value"), e.get("value_text"), e.get("value_base64")) {
        (Some(v), _, _) => v.to_string(),
        (_, Some(t), _) => format!("text {t}"),
        (_, _, Some(b)) => format!("base64 {}", b.as_str().unwrap_or_default()),
        _ => String::new(),
    };
    let expires = match e["expires_ms"].as_i64() {
        Some(ms) => format!(", expires at {ms} ms"),
        None => String::new(),
    };
    format!(
        "{key}  {} = {value}  (state version {}{expires}, {}[{}])",
        e["name"].as_str().unwrap_or_default(),
        e["state_version"],
        e["topic"].as_str().unwrap_or_default(),
        e["partition"]
    )
}
