//! `weir diff`: two builds of a plugin (or two pipeline files) over the same records, and what
//! changed, record by record: outputs added, removed or changed (values compared as JSON where
//! both are), and errors that appeared or went away. Exits 1 when anything differs, so a
//! plugin's CI can gate on it.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{bail, Context, Result};
use serde_json::json;
use weir::{
    chain::{compare, BatchOutput, Chain},
    engine::{Entry, MemoryState, Record, StateKey},
    jsonl,
    state::query::entry_of,
};

/// Run two builds of a plugin, or two pipelines, over the same records and show what changed.
#[derive(clap::Args)]
pub struct DiffCommand {
    /// The build (`.wasm`) or pipeline (`.toml`) to compare against.
    old: PathBuf,
    /// The build or pipeline to compare.
    new: PathBuf,
    #[command(flatten)]
    records: super::test::Records,
    /// How differences are written: for people, or one JSON object per line.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    /// Start both from this keyed state rather than none: lines as `weir state scan --json`
    /// writes them. `FILE` for a single plugin, `STAGE=FILE` for a stage of a pipeline; again
    /// for more stages.
    #[arg(long = "state", value_name = "[STAGE=]FILE")]
    states: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Text,
    Json,
}

/// What one input made, on one side: its outputs, and its errors as `kind: message`.
#[derive(Default)]
struct Made {
    records: Vec<Record>,
    errors: Vec<String>,
}

/// The counts of the summary line.
#[derive(Default)]
struct Summary {
    records: u64,
    differ: u64,
    changed: u64,
    added: u64,
    removed: u64,
    errors_appeared: u64,
    errors_gone: u64,
}

impl DiffCommand {
    /// 0 when the two agree, 1 when they differ, 2 when the comparison could not be made (as
    /// diff(1) does), so a CI gate tells a change from a breakage.
    pub fn execute(self) -> Result<ExitCode> {
        match self.run() {
            Ok(true) => Ok(ExitCode::SUCCESS),
            Ok(false) => Ok(ExitCode::FAILURE),
            Err(e) => {
                eprintln!("error: {e:#}");
                Ok(ExitCode::from(2))
            }
        }
    }

    /// Whether the two agree on every record.
    fn run(&self) -> Result<bool> {
        let config = self.records.config.as_deref();
        let mut old = super::test::chain_of(&self.old, config)?;
        let mut new = super::test::chain_of(&self.new, config)?;
        for spec in &self.states {
            let (stage, file) = match spec.split_once('=') {
                Some((stage, file)) => (Some(stage), file),
                None => (None, spec.as_str()),
            };
            let entries = captured_state(Path::new(file))?;
            for chain in [&mut old, &mut new] {
                let state = MemoryState::shared();
                state.apply(entries.clone());
                chain.set_state(stage_index(chain, stage)?, state);
            }
        }
        let (source, input) = self.records.open()?;
        let mut summary = Summary::default();
        for line in jsonl::records(input, &source, self.records.format) {
            let (n, parsed) = line.with_context(|| format!("reading {source}"))?;
            let record = parsed.map_err(|e| anyhow::anyhow!("{source}:{n}: {e}"))?;
            summary.records += 1;
            let place = format!("line {n}");
            let (a, b) = (
                made(old.process(vec![record.clone()])),
                made(new.process(vec![record])),
            );
            self.compare(&place, &a, &b, &mut summary);
        }
        // What windows still held at the end of the input, fired by both.
        let (a, b) = (made(old.finish()), made(new.finish()));
        self.compare("end of input", &a, &b, &mut summary);
        self.report(&summary);
        Ok(summary.differ == 0)
    }

    /// Print how `b` differs from `a` at `place`, counting it.
    fn compare(&self, place: &str, a: &Made, b: &Made, summary: &mut Summary) {
        let changes = compare::changes(a.side(), b.side());
        if changes.is_empty() {
            return;
        }
        summary.differ += 1;
        for change in changes {
            match change["change"].as_str().unwrap_or_default() {
                "changed" => summary.changed += 1,
                "added" => summary.added += 1,
                "removed" => summary.removed += 1,
                "error appeared" => summary.errors_appeared += 1,
                _ => summary.errors_gone += 1,
            }
            match self.output {
                Output::Json => {
                    let mut change = change;
                    change["at"] = place.into();
                    println!("{change}");
                }
                Output::Text => println!("{place}: {}", compare::describe(&change)),
            }
        }
    }

    fn report(&self, s: &Summary) {
        let line = format!(
            "weir diff: {} records, {} differ: {} outputs changed, {} added, {} removed; {} errors \
             appeared, {} gone",
            s.records, s.differ, s.changed, s.added, s.removed, s.errors_appeared, s.errors_gone
        );
        match self.output {
            Output::Text => println!("{line}"),
            Output::Json => println!(
                "{}",
                json!({"summary": {"records": s.records, "differ": s.differ,
                    "changed": s.changed, "added": s.added, "removed": s.removed,
                    "errors_appeared": s.errors_appeared, "errors_gone": s.errors_gone}})
            ),
        }
    }
}

/// The entries of a file of `weir state scan --json` lines.
fn captured_state(file: &Path) -> Result<BTreeMap<StateKey, Option<Entry>>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read state from {}", file.display()))?;
    let mut entries = BTreeMap::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let at = || format!("{}:{}", file.display(), n + 1);
        let shown: serde_json::Value = serde_json::from_str(line).with_context(at)?;
        let (key, entry) = entry_of(&shown).map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
        entries.insert(key, Some(entry));
    }
    Ok(entries)
}

/// Which of `chain`'s stages `stage` names; a chain of one stage needs no name.
fn stage_index(chain: &Chain, stage: Option<&str>) -> Result<usize> {
    let names: Vec<&str> = chain.instances().map(|(name, _)| name).collect();
    match stage {
        Some(stage) => names.iter().position(|n| *n == stage).with_context(|| {
            format!(
                "--state {stage}=…: no stage `{stage}` (stages: {})",
                names.join(", ")
            )
        }),
        None if names.len() == 1 => Ok(0),
        None => bail!(
            "--state: name the stage whose state it is (STAGE=FILE; stages: {})",
            names.join(", ")
        ),
    }
}

impl Made {
    fn side(&self) -> compare::Side<'_> {
        compare::Side {
            records: &self.records,
            errors: &self.errors,
        }
    }
}

fn made(out: BatchOutput) -> Made {
    Made {
        records: out.records,
        errors: out
            .failures
            .into_iter()
            .map(|f| format!("{}: {}", f.error.kind.as_str(), f.error.message))
            .collect(),
    }
}
