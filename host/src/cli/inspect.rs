//! `weir inspect`: what a component is, before it runs anywhere: its kind and contract, how it
//! was built, its hash, its state version, and what it imports and exports.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, Result};
use serde_json::{json, Value};
use weir::{
    config::Limits,
    engine::{MemoryState, Plugin, CONTRACT},
};

/// Show what a plugin component is.
#[derive(clap::Args)]
pub struct InspectCommand {
    /// The component (`.wasm`).
    plugin: PathBuf,
    /// A configuration its init accepts, to read its state version (`{}` if none).
    #[arg(long)]
    config: Option<String>,
    /// Print one JSON object instead of lines for people.
    #[arg(long)]
    json: bool,
}

impl InspectCommand {
    pub fn execute(self) -> Result<ExitCode> {
        let bytes = std::fs::read(&self.plugin)
            .with_context(|| format!("cannot read {}", self.plugin.display()))?;
        let name = self
            .plugin
            .file_stem()
            .map_or("plugin".into(), |s| s.to_string_lossy().into_owned());
        let plugin = super::engine()?.load_bytes(&name, &self.plugin, &bytes)?;
        let facts = self.facts(&plugin, &bytes);
        if self.json {
            println!("{facts}");
        } else {
            print!("{}", lines(&facts));
        }
        Ok(ExitCode::SUCCESS)
    }

    fn facts(&self, plugin: &Plugin, bytes: &[u8]) -> Value {
        let (imports, exports) = plugin.interface();
        json!({
            "path": self.plugin.display().to_string(),
            "bytes": bytes.len(),
            "sha256": plugin.hash(),
            "kind": plugin.kind().to_string(),
            "contract": CONTRACT,
            "built": built_with(bytes),
            "keyed_state": plugin.uses_state(),
            "state_version": self.state_version(plugin),
            "imports": imports,
            "exports": exports,
            "needs": plugin.needs(),
        })
    }

    /// The state version the plugin says it writes: it is asked once started, which needs a
    /// configuration its init accepts.
    fn state_version(&self, plugin: &Plugin) -> Value {
        let config = self.config.as_deref().unwrap_or("{}");
        match plugin.instantiate(config, Limits::default(), MemoryState::shared()) {
            Ok(instance) => instance.state_version().into(),
            Err(e) => {
                format!("unknown: its init refused config {config} ({e}); give one with --config")
                    .into()
            }
        }
    }
}

/// How the component was built: `weir build`'s stamp, else what the toolchains wrote in the
/// standard `producers` sections (language, processed-by, sdk).
fn built_with(bytes: &[u8]) -> Value {
    if let Some(stamp) = weir::engine::stamp(bytes) {
        return stamp;
    }
    let mut producers = serde_json::Map::new();
    for payload in wasmparser::Parser::new(0).parse_all(bytes).flatten() {
        let wasmparser::Payload::CustomSection(section) = payload else {
            continue;
        };
        if let wasmparser::KnownCustom::Producers(reader) = section.as_known() {
            for field in reader.into_iter().flatten() {
                let values = field.values.into_iter().flatten();
                let entry = producers.entry(field.name.to_string()).or_insert(json!([]));
                for v in values {
                    let text = format!("{} {}", v.name, v.version).trim().to_string();
                    let list = entry.as_array_mut().expect("a list");
                    if !list.contains(&text.clone().into()) {
                        list.push(text.into());
                    }
                }
            }
        }
    }
    json!({ "producers": producers })
}

/// The facts as aligned lines.
fn lines(f: &Value) -> String {
    let list = |v: &Value| {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("\n             ")
    };
    let built = match (&f["built"]["language"], &f["built"]["producers"]) {
        (Value::String(language), _) => format!(
            "{language} with {} (weir build {})",
            f["built"]["toolchain"].as_str().unwrap_or("?"),
            f["built"]["weir"].as_str().unwrap_or("?")
        ),
        (_, producers) => format!("not by weir build; producers: {producers}"),
    };
    let state = match &f["state_version"] {
        Value::Number(n) => format!("version {n}"),
        other => other.as_str().unwrap_or_default().to_string(),
    };
    let needs: Vec<String> = f["needs"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect();
    let needs = if needs.is_empty() {
        "none declared".to_string()
    } else {
        needs.join(", ")
    };
    format!(
        "plugin       {} ({:.1} MB)\nsha256       {}\nkind         {} ({})\nbuilt        \
         {built}\nkeyed state  {}\nstate        {state}\nimports      {}\nexports      \
         {}\nneeds        {needs}\n",
        f["path"].as_str().unwrap_or_default(),
        f["bytes"].as_u64().unwrap_or(0) as f64 / 1e6,
        f["sha256"].as_str().unwrap_or_default(),
        f["kind"].as_str().unwrap_or_default(),
        f["contract"].as_str().unwrap_or_default(),
        if f["keyed_state"] == true {
            "yes"
        } else {
            "no"
        },
        list(&f["imports"]),
        list(&f["exports"]),
    )
}
