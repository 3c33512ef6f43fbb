//! Pipeline files (TOML) to checked settings.
//!
//! Every table rejects unknown keys, so a typo is an error naming the file, line and key rather
//! than a setting silently ignored. Plugin paths resolve against the pipeline file's directory.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use crate::error::Error;
use serde::Deserialize;
use toml::Spanned;

mod admin;
mod join;
mod limits;
mod postgres;
mod reload;
mod table;
mod window;

pub use admin::{parse_listen, AdminConfig, DEFAULT_ADMIN};
pub use join::{JoinSpec, Outer};
pub use limits::Limits;
pub use postgres::{PostgresSource, SnapshotMode};
pub use reload::{ReloadConfig, ROLLBACK_RATE, TRIAL_RECORDS};
pub use table::{AsOf, TableConfig, TableFormat};
pub use window::{EventTime, LateOutput, WindowKind, WindowSpec};

/// The state read cache's size unless `[state] cache_mb` says otherwise.
pub const DEFAULT_CACHE_BYTES: u64 = 64 << 20;

/// A parsed and checked pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The file it was read from.
    pub path: PathBuf,
    /// A Kafka source (`[source]`, the default kind).
    pub source: Option<SourceConfig>,
    /// A database's changes (`[source] kind = "postgres"`).
    pub postgres: Option<PostgresSource>,
    pub sink: Option<SinkConfig>,
    pub stages: Vec<Stage>,
    /// Tables kept from topics (`[[table]]`), for the stages granted them.
    pub tables: Vec<TableConfig>,
    pub errors: ErrorsConfig,
    pub delivery: DeliveryConfig,
    /// Where stages keep keyed state on disk (resolved against the file); `None`: the default
    /// (see [`Pipeline::state_dir`]).
    pub state_dir: Option<PathBuf>,
    /// Bytes of decoded state entries kept in memory in front of the store (`[state] cache_mb`,
    /// default 64; 0: none).
    pub state_cache_bytes: u64,
    /// Hot reload (`[reload]`).
    pub reload: ReloadConfig,
    /// The admin server (`[admin]`).
    pub admin: AdminConfig,
}

/// One stage of the chain.
#[derive(Debug, Clone)]
pub struct Stage {
    pub name: String,
    /// Absolute or relative to the working directory (already resolved against the file).
    pub plugin: PathBuf,
    /// The plugin's configuration as JSON text (`{}` when none is given).
    pub config: String,
    pub limits: Limits,
    /// Window stages: how records are grouped in event time.
    pub window: Option<Arc<WindowSpec>>,
    /// Join stages: the topic the stage's records are joined with, and how.
    pub join: Option<Arc<JoinSpec>>,
    /// A candidate build run beside the live one on the same records (`shadow = "new.wasm"`).
    pub shadow: Option<Shadow>,
    /// The `[[table]]`s its plugin may read (`tables = ["customers"]`).
    pub tables: Vec<String>,
    /// Line of the `[[stage]]` entry, for messages.
    pub line: usize,
}

/// A stage's shadow: a candidate build that sees the live version's inputs, whose outputs are
/// compared with the live ones and never reach the sink, and whose state writes stay its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shadow {
    /// Resolved against the pipeline file, as `plugin` is.
    pub plugin: PathBuf,
    /// Where its outputs are written for a closer look (`shadow_topic`); none: only compared.
    pub topic: Option<String>,
}

/// Where records come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub brokers: String,
    pub topics: Vec<String>,
    pub group: String,
    /// Most records of one partition handed to the chain in one call.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// librdkafka consumer properties, passed through.
    #[serde(default)]
    pub kafka: KafkaProperties,
}

fn default_batch_size() -> usize {
    512
}

/// Where results go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Where outputs go. Required with a Kafka source; with a Postgres source, empty means
    /// each output to its table's topic.
    #[serde(default)]
    pub topic: String,
    /// Defaults to the source's brokers.
    pub brokers: Option<String>,
    /// librdkafka producer properties, passed through (also used for the dead-letter topic).
    #[serde(default)]
    pub kafka: KafkaProperties,
}

/// librdkafka properties. Values may be written as TOML strings, numbers or booleans
/// (`"linger.ms" = 5`), as librdkafka takes them all as text.
#[derive(Debug, Clone, Default)]
pub struct KafkaProperties(pub BTreeMap<String, String>);

impl<'de> Deserialize<'de> for KafkaProperties {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Scalar {
            Text(String),
            Int(i64),
            Float(f64),
            Bool(bool),
        }
        let map = BTreeMap::<String, Scalar>::deserialize(d)?;
        Ok(KafkaProperties(
            map.into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        Scalar::Text(s) => s,
                        Scalar::Int(i) => i.to_string(),
                        Scalar::Float(f) => f.to_string(),
                        Scalar::Bool(b) => b.to_string(),
                    };
                    (k, v)
                })
                .collect(),
        ))
    }
}

/// How results and source offsets are made durable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    #[serde(default)]
    pub guarantee: Guarantee,
    /// How often source offsets whose outputs the sink acknowledged are committed, e.g. `"5s"`
    /// or `"500ms"`. Shorter means less to replay after a crash, more commit requests.
    #[serde(default = "default_checkpoint_interval", deserialize_with = "duration")]
    pub checkpoint_interval: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            guarantee: Guarantee::default(),
            checkpoint_interval: default_checkpoint_interval(),
        }
    }
}

fn default_checkpoint_interval() -> Duration {
    Duration::from_secs(1)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Guarantee {
    /// Offsets are committed after the sink acknowledged the outputs: a crash may replay
    /// records (duplicates downstream), never lose them.
    #[default]
    AtLeastOnce,
    /// Outputs and offsets commit in one Kafka transaction.
    ExactlyOnce,
}

impl Guarantee {
    /// As the pipeline file writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Guarantee::AtLeastOnce => "at-least-once",
            Guarantee::ExactlyOnce => "exactly-once",
        }
    }
}

/// `"250ms"`, `"5s"`, `"2m"`, or a whole number of milliseconds.
pub(super) fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Millis(u64),
        Text(String),
    }
    let text = match Raw::deserialize(d)? {
        Raw::Millis(ms) => return Ok(Duration::from_millis(ms)),
        Raw::Text(text) => text,
    };
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "`{text}` is not a duration; write e.g. \"500ms\", \"5s\" or \"1m\""
        ))
    })?;
    match unit.trim() {
        "ms" | "" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        "d" => Ok(Duration::from_secs(n * 86400)),
        other => Err(serde::de::Error::custom(format!(
            "unknown unit `{other}` in `{text}`: use ms, s, m, h or d"
        ))),
    }
}

/// What happens to a record a plugin fails on.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorsConfig {
    #[serde(default)]
    pub policy: ErrorPolicy,
    /// The dead-letter topic, for `policy = "dead-letter"`.
    pub topic: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorPolicy {
    /// Stop the pipeline without committing the failing record.
    #[default]
    Fail,
    /// Count the record and go on.
    Skip,
    /// Send the record with its cause to the dead-letter topic.
    DeadLetter,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    /// Largest linear memory of one instance, in MiB.
    memory_mb: Option<u64>,
    /// Longest one call (one batch) may take, in milliseconds.
    timeout_ms: Option<u64>,
}

impl LimitsFile {
    fn over(self, base: Limits) -> Limits {
        Limits {
            memory_bytes: self
                .memory_mb
                .map_or(base.memory_bytes, |mb| (mb as usize) << 20),
            call_timeout: self
                .timeout_ms
                .map_or(base.call_timeout, Duration::from_millis),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    source: Option<SourceFile>,
    sink: Option<SinkConfig>,
    #[serde(default, rename = "stage")]
    stages: Vec<Spanned<StageFile>>,
    #[serde(default, rename = "table")]
    tables: Vec<Spanned<table::TableFile>>,
    #[serde(default)]
    errors: ErrorsConfig,
    #[serde(default)]
    delivery: DeliveryConfig,
    #[serde(default)]
    state: StateFile,
    #[serde(default)]
    limits: LimitsFile,
    #[serde(default)]
    reload: ReloadConfig,
    #[serde(default)]
    admin: AdminConfig,
}

/// `[source]`: Kafka topics (the default kind) or, with `kind = "postgres"`, a database's
/// changes.
enum SourceFile {
    Kafka(SourceConfig),
    Postgres(PostgresSource),
}

impl<'de> Deserialize<'de> for SourceFile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut table = toml::Table::deserialize(d)?;
        let kind = match table.remove("kind") {
            None => "kafka".to_string(),
            Some(toml::Value::String(kind)) => kind,
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "source.kind must be a string, not {other}"
                )))
            }
        };
        let value = toml::Value::Table(table);
        match kind.as_str() {
            "kafka" => value.try_into().map(SourceFile::Kafka),
            "postgres" => value.try_into().map(SourceFile::Postgres),
            other => {
                return Err(D::Error::custom(format!(
                    "source.kind `{other}` is not one weir has: \"kafka\" (the default) or \
                     \"postgres\""
                )))
            }
        }
        .map_err(|e| D::Error::custom(format!("in [source]: {}", e.message())))
    }
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    dir: Option<String>,
    cache_mb: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StageFile {
    name: Spanned<String>,
    plugin: Spanned<String>,
    config: Option<toml::Value>,
    #[serde(default)]
    limits: LimitsFile,
    window: Option<WindowFile>,
    time: Option<TimeFile>,
    watermark: Option<WatermarkFile>,
    #[serde(default, deserialize_with = "optional_duration")]
    allowed_lateness: Option<Duration>,
    late: Option<LateFile>,
    join: Option<join::JoinFile>,
    shadow: Option<String>,
    shadow_topic: Option<String>,
    #[serde(default)]
    tables: Vec<String>,
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum WindowFile {
    Tumbling {
        #[serde(deserialize_with = "duration")]
        size: Duration,
    },
    Sliding {
        #[serde(deserialize_with = "duration")]
        size: Duration,
        #[serde(deserialize_with = "duration")]
        slide: Duration,
    },
    Session {
        #[serde(deserialize_with = "duration")]
        gap: Duration,
    },
}

/// `"record"` or `{ field = "/ts" }`.
#[derive(Deserialize)]
#[serde(untagged)]
enum TimeFile {
    Named(String),
    Field { field: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WatermarkFile {
    #[serde(default, deserialize_with = "optional_duration")]
    max_out_of_order: Option<Duration>,
    #[serde(default, deserialize_with = "optional_duration")]
    idle_timeout: Option<Duration>,
}

/// `"drop"`, `"dead-letter"` or `{ topic = "…" }`.
#[derive(Deserialize)]
#[serde(untagged)]
enum LateFile {
    Named(String),
    Topic { topic: String },
}

pub(super) fn optional_duration<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

impl StageFile {
    /// The candidate build to shadow the stage with, if any.
    fn shadow(&self, base: &Path) -> Result<Option<Shadow>, String> {
        let Some(plugin) = &self.shadow else {
            if self.shadow_topic.is_some() {
                return Err(
                    "`shadow_topic` is set without `shadow`: name the candidate \
                            build (shadow = \"new.wasm\") whose outputs go there"
                        .into(),
                );
            }
            return Ok(None);
        };
        if self
            .shadow_topic
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err("`shadow_topic` is empty".into());
        }
        Ok(Some(Shadow {
            plugin: base.join(plugin),
            topic: self.shadow_topic.clone(),
        }))
    }

    /// The window settings, checked; `None` for a stage that is not a window stage.
    fn window(&self, errors: &ErrorsConfig) -> Result<Option<WindowSpec>, String> {
        let ms = |d: Duration| d.as_millis().min(i64::MAX as u128) as i64;
        let Some(window) = &self.window else {
            if self.join.is_some() {
                return Ok(None);
            }
            let stray = [
                (self.time.is_some(), "time"),
                (self.watermark.is_some(), "watermark"),
                (self.allowed_lateness.is_some(), "allowed_lateness"),
                (self.late.is_some(), "late"),
            ];
            return match stray.iter().find(|(set, _)| *set) {
                Some((_, key)) => Err(format!(
                    "`{key}` is a window setting, but the stage has no `window` (nor `join`)"
                )),
                None => Ok(None),
            };
        };
        if self.join.is_some() {
            return Err("a stage has `window` or `join`, not both".into());
        }
        let positive = |what: &str, d: Duration| {
            if d.is_zero() {
                Err(format!("window {what} must be longer than 0"))
            } else {
                Ok(ms(d))
            }
        };
        let kind = match window {
            WindowFile::Tumbling { size } => WindowKind::Tumbling {
                size: positive("size", *size)?,
            },
            WindowFile::Sliding { size, slide } => WindowKind::Sliding {
                size: positive("size", *size)?,
                slide: positive("slide", *slide)?,
            },
            WindowFile::Session { gap } => WindowKind::Session {
                gap: positive("gap", *gap)?,
            },
        };
        let (max_out_of_order, idle_timeout) = self.watermark();
        Ok(Some(WindowSpec {
            kind,
            time: self.time()?,
            max_out_of_order,
            idle_timeout,
            allowed_lateness: self.allowed_lateness.map_or(0, ms),
            late: self.late(errors)?,
        }))
    }

    /// The join settings, checked; `None` for a stage that is not a join stage.
    fn join(&self, errors: &ErrorsConfig) -> Result<Option<JoinSpec>, String> {
        let Some(join) = &self.join else {
            return Ok(None);
        };
        if self.allowed_lateness.is_some() {
            return Err(
                "`allowed_lateness` is for window stages; a join keeps each record \
                        for `within` after the watermark passes it"
                    .into(),
            );
        }
        if self.shadow.is_some() {
            return Err("a join stage cannot have a `shadow` yet".into());
        }
        if !self.tables.is_empty() {
            return Err("`tables` is for filter and transform stages, not join stages".into());
        }
        let spec = join.spec(self.time()?, self.watermark(), self.late(errors)?)?;
        Ok(Some(spec))
    }

    /// `time`: where a record's event time comes from.
    fn time(&self) -> Result<EventTime, String> {
        Ok(match &self.time {
            None => EventTime::Record,
            Some(TimeFile::Named(name)) if name == "record" => EventTime::Record,
            Some(TimeFile::Named(other)) => {
                return Err(format!(
                    "time = \"{other}\": write \"record\" (the Kafka timestamp) or \
                     {{ field = \"/json/pointer\" }}"
                ))
            }
            Some(TimeFile::Field { field }) if field.starts_with('/') => {
                EventTime::Field(field.clone())
            }
            Some(TimeFile::Field { field }) => {
                return Err(format!(
                    "time.field = \"{field}\" is not a JSON pointer (those start with `/`)"
                ))
            }
        })
    }

    /// `watermark`: how far behind the event time it trails (ms), and the idle timeout.
    fn watermark(&self) -> (i64, Option<Duration>) {
        let ms = |d: Duration| d.as_millis().min(i64::MAX as u128) as i64;
        let watermark = self.watermark.as_ref();
        (
            watermark.and_then(|w| w.max_out_of_order).map_or(0, ms),
            watermark.and_then(|w| w.idle_timeout),
        )
    }

    /// `late`: where records too late go.
    fn late(&self, errors: &ErrorsConfig) -> Result<LateOutput, String> {
        Ok(match &self.late {
            None => LateOutput::Drop,
            Some(LateFile::Named(n)) if n == "drop" => LateOutput::Drop,
            Some(LateFile::Named(n)) if n == "dead-letter" => {
                if errors.policy != ErrorPolicy::DeadLetter {
                    return Err(
                        "late = \"dead-letter\" needs errors.policy = \"dead-letter\" \
                                (and errors.topic)"
                            .into(),
                    );
                }
                LateOutput::DeadLetter
            }
            Some(LateFile::Named(other)) => {
                return Err(format!(
                    "late = \"{other}\": write \"drop\", \"dead-letter\" or {{ topic = \"…\" }}"
                ))
            }
            Some(LateFile::Topic { topic }) => LateOutput::Topic(topic.clone()),
        })
    }
}

impl Pipeline {
    /// Read and check the pipeline file at `path`.
    pub fn load(path: &Path) -> Result<Pipeline, Error> {
        let text = std::fs::read_to_string(path).map_err(|cause| Error::ReadConfig {
            path: path.to_path_buf(),
            cause,
        })?;
        Pipeline::parse(path, &text)
    }

    /// Check pipeline `text` as if read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Pipeline, Error> {
        let error = |line: Option<usize>, message: String| Error::Config {
            path: path.to_path_buf(),
            line,
            message,
        };
        let file: File =
            toml::from_str(text).map_err(|e| error(None, e.to_string().trim_end().to_string()))?;
        let base = path.parent().unwrap_or(Path::new(""));
        let tables = table::tables(&file.tables, |at| line_of(text, at))
            .map_err(|(line, message)| error(Some(line), message))?;
        let stages = file
            .stages(base, text, &tables)
            .map_err(|(line, message)| error(Some(line), message))?;
        file.check(text)
            .map_err(|(line, message)| error(Some(line), message))?;
        Ok(Pipeline {
            path: path.to_path_buf(),
            source: file.kafka_source().cloned(),
            postgres: file.postgres_source().cloned(),
            sink: file.sink,
            stages,
            tables,
            errors: file.errors,
            delivery: file.delivery,
            state_dir: file.state.dir.map(|d| base.join(d)),
            state_cache_bytes: file
                .state
                .cache_mb
                .map_or(DEFAULT_CACHE_BYTES, |mb| mb << 20),
            reload: file.reload,
            admin: file.admin,
        })
    }
}

/// Check that every table `stage` is granted is a `[[table]]` of the file, and that a window
/// stage (whose plugins cannot read tables) is granted none.
fn granted(stage: &Stage, tables: &[TableConfig]) -> Result<(), Wrong> {
    let wrong = |message: String| Err((stage.line, format!("stage `{}`: {message}", stage.name)));
    if stage.window.is_some() && !stage.tables.is_empty() {
        return wrong("`tables` is for filter and transform stages, not window stages".into());
    }
    for name in &stage.tables {
        if !tables.iter().any(|t| &t.name == name) {
            let known: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
            return wrong(format!(
                "tables = [\"{name}\"], but no [[table]] is named `{name}` (the file has [{}])",
                known.join(", ")
            ));
        }
    }
    Ok(())
}

/// Consumer settings weir manages, and why: given in `[source.kafka]` they are refused.
const CONSUMER_MANAGED: &[(&str, &str)] = &[
    ("group.id", "it is `[source] group`"),
    (
        "enable.auto.commit",
        "weir commits a record's offset only once its outputs are acknowledged",
    ),
    (
        "enable.auto.offset.store",
        "weir stores a record's offset only once its outputs are acknowledged",
    ),
    (
        "isolation.level",
        "weir reads committed records only, so a producer's aborted transactions never enter \
         the pipeline",
    ),
];

/// How to find the line a wrong setting is on: it starts with, or has, this text.
enum At {
    Starts(&'static str),
    Has(String),
}

/// Where a pipeline file is wrong: its line and what is wrong there.
type Wrong = (usize, String);

impl File {
    fn kafka_source(&self) -> Option<&SourceConfig> {
        match &self.source {
            Some(SourceFile::Kafka(source)) => Some(source),
            _ => None,
        }
    }

    fn postgres_source(&self) -> Option<&PostgresSource> {
        match &self.source {
            Some(SourceFile::Postgres(source)) => Some(source),
            _ => None,
        }
    }

    /// The `[[stage]]` tables, checked and resolved against the file's directory `base`.
    fn stages(&self, base: &Path, text: &str, tables: &[TableConfig]) -> Result<Vec<Stage>, Wrong> {
        if self.stages.is_empty() {
            return Err((1, "no [[stage]]: a pipeline needs at least one".into()));
        }
        let mut stages: Vec<Stage> = Vec::new();
        for spanned in &self.stages {
            let stage = self.stage(spanned, &stages, base, text)?;
            granted(&stage, tables)?;
            stages.push(stage);
        }
        for stage in &stages {
            if let Some(why) = self.unjoinable(stage) {
                return Err((stage.line, format!("stage `{}`: {why}", stage.name)));
            }
        }
        if let (Some(table), Some(_)) = (tables.first(), self.postgres_source()) {
            let message = format!(
                "table `{}`: tables are kept from Kafka topics for pipelines with a Kafka \
                 source; a [source] kind = \"postgres\" pipeline cannot use them yet",
                table.name
            );
            return Err((table.line, message));
        }
        Ok(stages)
    }

    /// Why a join stage cannot join what it names, if it cannot.
    fn unjoinable(&self, stage: &Stage) -> Option<String> {
        let join = stage.join.as_ref()?;
        let Some(source) = self.kafka_source() else {
            return Some(
                "join stages join two Kafka topics; a [source] kind = \"postgres\" pipeline \
                 cannot have one yet"
                    .into(),
            );
        };
        if source.topics.len() > 1 {
            return Some(format!(
                "a join stage reads one stream: [source] has {} topics, each of whose partitions \
                 would pair with the joined topic's alone",
                source.topics.len()
            ));
        }
        if source.topics.contains(&join.topic) {
            return Some(format!(
                "join.topic `{}` is also a source topic: the stream comes from [source], the \
                 topic it joins from `join`",
                join.topic
            ));
        }
        let sink = self.sink.as_ref()?;
        let same_brokers = sink.brokers.as_ref().is_none_or(|b| *b == source.brokers);
        (same_brokers && sink.topic == join.topic).then(|| {
            format!(
                "join.topic `{}` is the sink topic: every output would be joined again",
                join.topic
            )
        })
    }

    /// One `[[stage]]` table, checked against the stages `before` it.
    fn stage(
        &self,
        spanned: &Spanned<StageFile>,
        before: &[Stage],
        base: &Path,
        text: &str,
    ) -> Result<Stage, Wrong> {
        let line = line_of(text, spanned.span().start);
        let stage = spanned.get_ref();
        let name = stage.name.get_ref().trim().to_string();
        let name_line = line_of(text, stage.name.span().start);
        if name.is_empty() {
            return Err((name_line, "stage `name` is empty".into()));
        }
        if let Some(other) = before.iter().find(|s| s.name == name) {
            let message = format!(
                "stage name `{name}` is already used by the stage at line {}",
                other.line
            );
            return Err((name_line, message));
        }
        let window = stage
            .window(&self.errors)
            .map_err(|e| (line, format!("stage `{name}`: {e}")))?;
        let join = stage
            .join(&self.errors)
            .map_err(|e| (line, format!("stage `{name}`: {e}")))?;
        let config = match &stage.config {
            None => "{}".to_string(),
            Some(value) => serde_json::to_string(value).map_err(|e| {
                let message = format!("stage `{name}`: config cannot be turned into JSON: {e}");
                (line, message)
            })?,
        };
        let shadow = stage
            .shadow(base)
            .map_err(|e| (line, format!("stage `{name}`: {e}")))?;
        Ok(Stage {
            plugin: base.join(stage.plugin.get_ref()),
            name,
            config,
            limits: stage.limits.over(self.limits.over(Limits::default())),
            window: window.map(Arc::new),
            join: join.map(Arc::new),
            shadow,
            tables: stage.tables.clone(),
            line,
        })
    }

    /// The settings outside the stages, alone and against one another.
    fn check(&self, text: &str) -> Result<(), Wrong> {
        let Some((at, message)) = self.wrong_setting() else {
            return Ok(());
        };
        let line = text
            .lines()
            .position(|l| match &at {
                At::Starts(start) => l.trim_start().starts_with(start),
                At::Has(part) => l.contains(part.as_str()),
            })
            .map_or(1, |i| i + 1);
        Err((line, message))
    }

    /// What is wrong outside the stages, if anything, and where.
    fn wrong_setting(&self) -> Option<(At, String)> {
        let errors = &self.errors;
        if errors.policy == ErrorPolicy::DeadLetter && errors.topic.is_none() {
            let message = "errors.policy = \"dead-letter\" needs errors.topic";
            return Some((At::Starts("[errors]"), message.into()));
        }
        if errors.policy != ErrorPolicy::DeadLetter && errors.topic.is_some() {
            let message = format!(
                "errors.topic is set, but errors.policy is \"{}\", which sends nothing there: \
                 set policy = \"dead-letter\" or remove the topic",
                errors.policy
            );
            let topic = errors.topic.clone().unwrap_or_default();
            return Some((At::Has(format!("\"{topic}\"")), message));
        }
        if self.delivery.checkpoint_interval.is_zero() {
            let message = "delivery.checkpoint_interval must be longer than 0".into();
            return Some((At::Starts("checkpoint_interval"), message));
        }
        if let Some(wrong) = self.kafka_source().and_then(|s| self.wrong_source(s)) {
            return Some(wrong);
        }
        if let (Some(_), Some(sink)) = (self.kafka_source(), &self.sink) {
            if sink.topic.is_empty() {
                let message = "sink.topic is missing: name the topic outputs go to".into();
                return Some((At::Starts("[sink]"), message));
            }
        }
        if let Some((key, message)) = self.postgres_source().and_then(PostgresSource::wrong) {
            return Some((At::Starts(key), message));
        }
        let (table, key, why) = self.managed_setting()?;
        let message = format!("[{table}.kafka] `{key}` is weir's to set: {why}");
        Some((At::Has(key.into()), message))
    }

    fn wrong_source(&self, source: &SourceConfig) -> Option<(At, String)> {
        if source.topics.is_empty() {
            let message = "source.topics is empty: name the topics to read".into();
            return Some((At::Starts("topics"), message));
        }
        if source.batch_size == 0 {
            let message = "source.batch_size must be at least 1".into();
            return Some((At::Starts("batch_size"), message));
        }
        let sink = self.sink.as_ref()?;
        let same_brokers = sink.brokers.as_ref().is_none_or(|b| *b == source.brokers);
        if same_brokers && source.topics.contains(&sink.topic) {
            let message = format!(
                "sink.topic `{}` is also a source topic: every output would be read again, \
                 a feedback loop",
                sink.topic
            );
            return Some((At::Has(format!("topic = \"{}\"", sink.topic)), message));
        }
        None
    }

    /// A client setting in `[source.kafka]` or `[sink.kafka]` that weir manages itself, and
    /// what weir does instead.
    fn managed_setting(&self) -> Option<(&'static str, &'static str, &'static str)> {
        let exactly_once = self.delivery.guarantee == Guarantee::ExactlyOnce;
        let source = self.kafka_source().map(|s| &s.kafka.0);
        let sink = self.sink.as_ref().map(|s| &s.kafka.0);
        let has = |props: Option<&BTreeMap<String, String>>, key: &str| {
            props.is_some_and(|p| p.contains_key(key))
        };
        let managed = CONSUMER_MANAGED
            .iter()
            .find(|(key, _)| has(source, key))
            .map(|(key, why)| ("source", *key, *why));
        managed
            .or_else(|| {
                has(sink, "transactional.id").then_some((
                    "sink",
                    "transactional.id",
                    "under exactly-once each source partition's producer gets an id of its own, \
                     so that a new owner of the partition fences the old one",
                ))
            })
            .or_else(|| {
                let off = sink
                    .and_then(|p| p.get("enable.idempotence"))
                    .is_some_and(|v| v == "false");
                (exactly_once && off).then_some((
                    "sink",
                    "enable.idempotence",
                    "exactly-once needs the idempotent producer (transactions are built on it); \
                     remove the setting",
                ))
            })
    }
}

impl Pipeline {
    /// The directory for keyed state: `[state] dir`, else `$WEIR_STATE_DIR/GROUP`, else
    /// `$XDG_STATE_HOME/weir/GROUP` or `~/.local/state/weir/GROUP`.
    pub fn state_dir(&self, group: &str) -> PathBuf {
        if let Some(dir) = &self.state_dir {
            return dir.clone();
        }
        let base = std::env::var_os("WEIR_STATE_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XDG_STATE_HOME").map(|d| PathBuf::from(d).join("weir")))
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state/weir"))
            })
            .unwrap_or_else(|| PathBuf::from(".weir-state"));
        base.join(group)
    }

    /// The source and sink, for running against Kafka; a file without them can only be tested
    /// locally.
    pub fn kafka(&self) -> Result<(&SourceConfig, &SinkConfig), Error> {
        let missing = |what: &str| Error::Config {
            path: self.path.clone(),
            line: Some(1),
            message: format!("no [{what}] table: `weir run` needs [source] and [sink]"),
        };
        if self.postgres.is_some() {
            return Err(Error::Config {
                path: self.path.clone(),
                line: Some(1),
                message: "[source] kind = \"postgres\" is not a Kafka source".into(),
            });
        }
        let source = self.source.as_ref().ok_or_else(|| missing("source"))?;
        let sink = self.sink.as_ref().ok_or_else(|| missing("sink"))?;
        Ok((source, sink))
    }
}

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl fmt::Display for ErrorPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorPolicy::Fail => "fail",
            ErrorPolicy::Skip => "skip",
            ErrorPolicy::DeadLetter => "dead-letter",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Pipeline, Error> {
        Pipeline::parse(Path::new("/p/pipeline.toml"), text)
    }

    #[test]
    fn stages_resolve_against_the_file() {
        let p = parse(
            r#"
[[stage]]
name = "big"
plugin = "plugins/json-filter.wasm"
config = { where = [{ path = "/amount", op = "gt", value = 100 }] }
limits = { memory_mb = 16 }

[[stage]]
name = "mask"
plugin = "/abs/mask.wasm"
"#,
        )
        .unwrap();
        assert_eq!(p.stages.len(), 2);
        assert_eq!(p.stages[0].plugin, Path::new("/p/plugins/json-filter.wasm"));
        assert_eq!(
            p.stages[0].config,
            r#"{"where":[{"op":"gt","path":"/amount","value":100}]}"#
        );
        assert_eq!(p.stages[0].limits.memory_bytes, 16 << 20);
        assert_eq!(p.stages[0].line, 2);
        assert_eq!(p.stages[1].plugin, Path::new("/abs/mask.wasm"));
        assert_eq!(p.stages[1].config, "{}");
        assert_eq!(p.stages[1].line, 8);
    }

    #[test]
    fn settings_weir_manages_are_refused_with_what_it_does_instead() {
        let kafka = |source: &str, sink: &str, guarantee: &str| {
            format!(
                "[source]\nbrokers = \"b\"\ntopics = [\"in\"]\ngroup = \"g\"\nkafka = {{ {source} }}\n\n\
                 [sink]\ntopic = \"out\"\nkafka = {{ {sink} }}\n\n\
                 [delivery]\nguarantee = \"{guarantee}\"\n\n\
                 [[stage]]\nname = \"a\"\nplugin = \"a.wasm\"\n"
            )
        };
        let refused = |text: String, wanted: &str| {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(wanted), "{err}");
            err
        };
        for key in [
            "group.id",
            "enable.auto.commit",
            "enable.auto.offset.store",
            "isolation.level",
        ] {
            let err = refused(
                kafka(&format!("\"{key}\" = \"x\""), "", "at-least-once"),
                &format!("[source.kafka] `{key}` is weir's to set"),
            );
            assert!(
                err.starts_with("/p/pipeline.toml:5:"),
                "names the line: {err}"
            );
        }
        refused(
            kafka("", "\"transactional.id\" = \"t\"", "at-least-once"),
            "[sink.kafka] `transactional.id` is weir's to set",
        );
        let idempotence = "\"enable.idempotence\" = false";
        refused(
            kafka("", idempotence, "exactly-once"),
            "exactly-once needs the idempotent producer",
        );
        // At least once, turning idempotence off is the user's call; other settings pass.
        parse(&kafka(
            "\"session.timeout.ms\" = 6000",
            idempotence,
            "at-least-once",
        ))
        .unwrap();
    }

    #[test]
    fn settings_that_cannot_run_are_refused_at_their_line() {
        let file = |source: &str, rest: &str| {
            format!(
                "[source]\nbrokers = \"b\"\n{source}\ngroup = \"g\"\n\n[sink]\ntopic = \"out\"\n\n\
                 {rest}\n[[stage]]\nname = \"a\"\nplugin = \"a.wasm\"\n"
            )
        };
        let refused = |text: String, line: usize, wanted: &str| {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(wanted), "{err}");
            assert!(
                err.starts_with(&format!("/p/pipeline.toml:{line}:")),
                "{err}"
            );
        };
        let topics = "topics = [\"in\"]";
        refused(file("topics = []", ""), 3, "source.topics is empty");
        refused(
            file("topics = [\"in\", \"out\"]", ""),
            7,
            "sink.topic `out` is also a source topic",
        );
        refused(
            file(topics, "[delivery]\ncheckpoint_interval = \"0s\"\n"),
            10,
            "checkpoint_interval must be longer than 0",
        );
        refused(
            file(topics, "[errors]\npolicy = \"skip\"\ntopic = \"dlq\"\n"),
            11,
            "errors.policy is \"skip\", which sends nothing there",
        );
        parse(&file(
            topics,
            "[errors]\npolicy = \"dead-letter\"\ntopic = \"dlq\"\n",
        ))
        .unwrap();
    }

    #[test]
    fn state_cache_size_defaults_and_can_be_set() {
        let stage = "[[stage]]\nname = \"a\"\nplugin = \"a.wasm\"\n";
        let p = parse(stage).unwrap();
        assert_eq!(p.state_cache_bytes, DEFAULT_CACHE_BYTES);
        let p = parse(&format!("{stage}[state]\ncache_mb = 0\n")).unwrap();
        assert_eq!(p.state_cache_bytes, 0);
        let p = parse(&format!("{stage}[state]\ncache_mb = 256\n")).unwrap();
        assert_eq!(p.state_cache_bytes, 256 << 20);
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let err = parse("[[stage]]\nname = \"a\"\nplugin = \"a.wasm\"\nconfg = {}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains("confg"), "{err}");
    }

    #[test]
    fn a_shadow_resolves_against_the_file_and_is_refused_where_it_cannot_run() {
        let p = parse(
            "[[stage]]\nname = \"a\"\nplugin = \"a.wasm\"\nshadow = \"next/a.wasm\"\n\
             shadow_topic = \"cmp\"\n",
        )
        .unwrap();
        let shadow = p.stages[0].shadow.clone().unwrap();
        assert_eq!(shadow.plugin, Path::new("/p/next/a.wasm"));
        assert_eq!(shadow.topic.as_deref(), Some("cmp"));
        let err = |text: &str| parse(text).unwrap_err().to_string();
        let stray = err("[[stage]]\nname = \"a\"\nplugin = \"a.wasm\"\nshadow_topic = \"c\"\n");
        assert!(
            stray.contains(":1:") && stray.contains("`shadow_topic` is set without `shadow`"),
            "{stray}"
        );
    }

    #[test]
    fn wrong_type_names_line() {
        let err = parse("[[stage]]\nname = 3\nplugin = \"a.wasm\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn duplicate_stage_names_are_rejected() {
        let err = parse("[[stage]]\nname = \"a\"\nplugin = \"a.wasm\"\n[[stage]]\nname = \"a\"\nplugin = \"b.wasm\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("pipeline.toml:5"), "{err}");
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn dead_letter_needs_a_topic() {
        let err = parse(
            "[[stage]]\nname = \"a\"\nplugin = \"a.wasm\"\n[errors]\npolicy = \"dead-letter\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(":4:"), "{err}");
    }

    #[test]
    fn kafka_tables_take_scalars_and_durations() {
        let p = parse(
            r#"
[source]
brokers = "k:9092"
topics = ["in"]
group = "g"
kafka = { "session.timeout.ms" = 6000, "enable.partition.eof" = false, "client.id" = "w" }

[sink]
topic = "out"

[[stage]]
name = "a"
plugin = "a.wasm"

[delivery]
checkpoint_interval = "250ms"
"#,
        )
        .unwrap();
        let (source, sink) = p.kafka().unwrap();
        assert_eq!(source.batch_size, 512);
        assert_eq!(source.kafka.0["session.timeout.ms"], "6000");
        assert_eq!(source.kafka.0["enable.partition.eof"], "false");
        assert_eq!(sink.brokers, None);
        assert_eq!(p.delivery.checkpoint_interval, Duration::from_millis(250));
        assert_eq!(p.delivery.guarantee, Guarantee::AtLeastOnce);
    }

    #[test]
    fn bad_durations_are_named() {
        let err = parse("[[stage]]\nname = \"a\"\nplugin = \"a.wasm\"\n[delivery]\ncheckpoint_interval = \"5 parsecs\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 5") && err.contains("parsecs"), "{err}");
    }

    #[test]
    fn run_needs_source_and_sink() {
        let p = parse("[[stage]]\nname = \"a\"\nplugin = \"a.wasm\"\n").unwrap();
        assert!(p.kafka().unwrap_err().to_string().contains("[source]"));
    }

    #[test]
    fn no_stages_is_an_error() {
        assert!(parse("").unwrap_err().to_string().contains("at least one"));
    }

    #[test]
    fn a_postgres_source_is_read_and_checked() {
        let file = |source: &str| {
            format!(
                "[source]\nkind = \"postgres\"\n{source}\n\n[sink]\ntopic = \"out\"\n\n\
                 [[stage]]\nname = \"s\"\nplugin = \"s.wasm\"\n"
            )
        };
        let good =
            "url = \"postgres://app@db:5433/shop\"\ntables = [\"orders\", \"crm.customers\"]\n\
                    topic_prefix = \"shop\"";
        let p = parse(&file(good)).unwrap();
        let source = p.postgres.expect("a postgres source");
        assert!(p.source.is_none());
        assert_eq!(
            source.table_names(),
            [
                ("public".to_string(), "orders".to_string()),
                ("crm".to_string(), "customers".to_string())
            ]
        );
        assert_eq!(
            (source.slot.as_str(), source.password_env.as_str()),
            ("weir", "PGPASSWORD")
        );
        assert_eq!(source.heartbeat, Duration::from_secs(10));

        let refused = |source: &str, line: usize, wanted: &str| {
            let err = parse(&file(source)).unwrap_err().to_string();
            assert!(
                err.contains(&format!(":{line}: ")) && err.contains(wanted),
                "{err}"
            );
        };
        let secret = good.replace("app@", "app:hunter2@");
        refused(&secret, 3, "holds a password");
        refused(
            &good.replace("[\"orders\", \"crm.customers\"]", "[]"),
            4,
            "tables is empty",
        );
        refused(
            &format!("{good}\nslot = \"Bad-Slot\""),
            6,
            "not a valid name",
        );
        let err = parse(&file(&format!("{good}\nbrokers = \"b\"")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `brokers`"), "{err}");
        let err = parse(&file(good).replace("postgres\"", "mysql\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("source.kind `mysql`"), "{err}");
    }
}
