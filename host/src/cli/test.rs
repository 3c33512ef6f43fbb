//! `weir test`: JSON lines through one plugin or a pipeline's chain, without a broker.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{bail, Context, Result};
use weir::{
    chain::{join::Given, Chain},
    config::{Limits, Pipeline},
    engine::Record,
    jsonl::{self, Format, Summary},
    table::{MemoryRows, Table},
};

/// Run JSONL records through one plugin or a pipeline's chain, without a broker.
#[derive(clap::Args)]
pub struct TestCommand {
    /// A plugin component (`.wasm`) or a pipeline file (`.toml`).
    target: PathBuf,
    #[command(flatten)]
    records: Records,
    /// A pipeline's table read from a file, as NAME=FILE: JSON lines of the table topic's
    /// records as envelopes (`{"key": …, "value": …}`, as `weir capture` writes them), applied
    /// in order. Repeat it for each table the stages read.
    #[arg(long = "table", value_name = "NAME=FILE")]
    tables: Vec<String>,
    /// The topic a join stage joins, read from a file, as STAGE=FILE: JSON lines of its
    /// records as envelopes, in the order the topic holds them. Repeat it for each join stage.
    #[arg(long = "join", value_name = "STAGE=FILE")]
    joins: Vec<String>,
}

/// The records a command runs plugins over, and the plugins' configuration (`weir test`,
/// `weir diff`).
#[derive(clap::Args)]
pub(super) struct Records {
    /// Input records, one JSON document per line (`-` for stdin); `weir capture` writes them.
    #[arg(long)]
    pub input: PathBuf,
    /// The plugin's configuration as JSON (single plugins only; a pipeline file configures its
    /// stages).
    #[arg(long)]
    pub config: Option<String>,
    /// How input lines are read: record values, or envelopes (`{"key", "value", "headers",
    /// "timestamp"}`, and `weir capture`'s fields).
    #[arg(long, value_enum, default_value = "value")]
    pub format: Format,
}

impl Records {
    /// The input's name in messages (`stdin` for `-`), and its lines.
    pub fn open(&self) -> Result<(String, Box<dyn BufRead>)> {
        if self.input == Path::new("-") {
            return Ok(("stdin".into(), Box::new(std::io::stdin().lock())));
        }
        let source = self.input.display().to_string();
        let file = std::fs::File::open(&self.input)
            .with_context(|| format!("cannot open input {source}"))?;
        Ok((source, Box::new(BufReader::new(file))))
    }
}

impl TestCommand {
    pub fn execute(self) -> Result<ExitCode> {
        let files = self.tables.is_empty() && self.joins.is_empty();
        let mut chain = match (&self.records.config, files) {
            (_, true) => chain_of(&self.target, self.records.config.as_deref())?,
            (None, false) => chain_with_files(&self.target, &self.tables, &self.joins)?,
            (Some(_), false) => bail!(
                "--config is for a single plugin, --table and --join for a pipeline file: give \
                 one of them"
            ),
        };
        let (source, input) = self.records.open()?;
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        let mut err = std::io::stderr();
        let format = self.records.format;
        let summary = jsonl::run(&mut chain, input, &source, format, &mut out, &mut err)?;
        out.flush()?;
        let restarts: u64 = chain.instances().map(|(_, i)| i.restarts()).sum();
        eprintln!("{}", report(&summary, restarts));
        Ok(if summary.errors > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    }
}

/// The chain of a pipeline file (`.toml`), or of the one plugin `target` with `config`.
pub(super) fn chain_of(target: &Path, config: Option<&str>) -> Result<Chain> {
    let engine = super::engine()?;
    if target.extension().is_some_and(|e| e == "toml") {
        if config.is_some() {
            bail!("--config is for a single plugin; a pipeline file configures each stage");
        }
        return super::load_chain(&engine, &Pipeline::load(target)?);
    }
    let config = config.unwrap_or("{}");
    serde_json::from_str::<serde_json::Value>(config).context("--config is not valid JSON")?;
    Ok(Chain::single(&engine, target, config, Limits::default())?)
}

/// The chain of pipeline file `target` with its tables (`NAME=FILE`) and the topics its join
/// stages join (`STAGE=FILE`) read from files.
fn chain_with_files(target: &Path, tables: &[String], joins: &[String]) -> Result<Chain> {
    if target.extension().is_none_or(|e| e != "toml") {
        bail!("--table and --join are for a pipeline file, whose [[table]]s and join stages read them");
    }
    let pipeline = Pipeline::load(target)?;
    let stages = super::load_stages(&super::engine()?, &pipeline)?;
    for (name, file) in named_files("table", tables)? {
        let Some(table) = stages.tables().get(name) else {
            bail!(
                "--table {name}={file}: {} has no [[table]] named `{name}`",
                target.display()
            );
        };
        let rows = read_table(table, Path::new(file))?;
        eprintln!("weir test: table `{name}`: {} rows from {file}", rows.len());
        table.attach(std::sync::Arc::new(rows));
    }
    let mut chain = stages
        .start()
        .map_err(|e| super::stage_error(&pipeline, e))?;
    for (name, file) in named_files("join", joins)? {
        let stage = pipeline.stages.iter().position(|s| s.name == name);
        let Some((i, spec)) = stage.and_then(|i| Some((i, pipeline.stages[i].join.as_ref()?)))
        else {
            bail!(
                "--join {name}={file}: {} has no join stage named `{name}`",
                target.display()
            );
        };
        let records = read_records(&spec.topic, Path::new(file))?;
        eprintln!(
            "weir test: stage `{name}` joins {} records of `{}` from {file}",
            records.len(),
            spec.topic
        );
        chain.set_side(i, std::sync::Arc::new(Given::new(records)));
    }
    Ok(chain)
}

/// `NAME=FILE` arguments of option `--what`, each name once.
fn named_files<'a>(what: &str, given: &'a [String]) -> Result<Vec<(&'a str, &'a str)>> {
    let mut named: Vec<(&str, &str)> = Vec::new();
    for arg in given {
        let Some((name, file)) = arg.split_once('=') else {
            bail!("--{what} {arg}: write NAME=FILE");
        };
        if named.iter().any(|(n, _)| *n == name) {
            bail!("--{what} {name}= is given twice: one file each");
        }
        named.push((name, file));
    }
    Ok(named)
}

/// The records of a file of `topic`'s records (envelopes), as a join stage reads them.
fn read_records(topic: &str, path: &Path) -> Result<Vec<Record>> {
    let source = path.display().to_string();
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {source}"))?;
    let mut records = Vec::new();
    for line in jsonl::records(BufReader::new(file), &source, Format::Envelope) {
        let (n, record) = line.with_context(|| format!("reading {source}"))?;
        let mut record = record.map_err(|why| anyhow::anyhow!("{source}:{n}: {why}"))?;
        record.topic = topic.to_string();
        records.push(record);
    }
    Ok(records)
}

/// The rows a file of a table's records leaves: each line a record (an envelope), applied in
/// order as the run applies its topic's records.
fn read_table(table: &Table, path: &Path) -> Result<MemoryRows> {
    let source = path.display().to_string();
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open table file {source}"))?;
    let decoder = table.decoder();
    let mut rows = MemoryRows::new(table.config.as_of);
    for line in jsonl::records(BufReader::new(file), &source, Format::Envelope) {
        let (n, record) = line.with_context(|| format!("reading {source}"))?;
        let (change, time) = record
            .and_then(|r| {
                let (change, at) = decoder.decode_at(r.key.as_deref(), r.value.as_deref())?;
                Ok((change, at.unwrap_or(r.timestamp)))
            })
            .map_err(|why| anyhow::anyhow!("{source}:{n}: {why}"))?;
        rows.apply(change, time);
    }
    Ok(rows)
}

/// The summary line on stderr.
fn report(summary: &Summary, restarts: u64) -> String {
    let secs = summary.elapsed.as_secs_f64();
    format!(
        "weir test: {} in, {} out, {} filtered, {} errors{} in {:.1} ms ({:.0} records/s){}",
        summary.input,
        summary.output,
        summary.filtered,
        summary.errors,
        if summary.late > 0 {
            format!(", {} late", summary.late)
        } else {
            String::new()
        },
        secs * 1e3,
        summary.input as f64 / secs.max(1e-9),
        if restarts > 0 {
            format!(", {restarts} instance restarts")
        } else {
            String::new()
        },
    )
}
