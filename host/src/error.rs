//! weir's one error type: why a pipeline file, a plugin, the state store or a run failed.
//!
//! It is the bottom layer (it uses nothing else of weir), so every layer returns it and a caller
//! handles one type. A record's own failure in a plugin is not an `Error` but a [`RecordError`]:
//! the error policy decides what becomes of the record, and only under `policy = "fail"` does it
//! end the run, as [`Error::Record`].

use std::path::PathBuf;

use rdkafka::error::KafkaError;

/// A `Result` whose error is weir's.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A cause kept as it came (a store or wire-protocol failure), for its message and its source.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why a pipeline could not be loaded or started, or why a run ended other than by a stop
/// request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pipeline file cannot be read.
    #[error("{}: {cause}", path.display())]
    ReadConfig {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// The pipeline file is not valid: a syntax error, a key or type that does not fit, or a
    /// setting that is wrong; the message names the key, and `line` its line when known.
    #[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Config {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
    #[error("plugin `{plugin}`: cannot read {}: {cause}", path.display())]
    ReadPlugin {
        plugin: String,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("plugin `{plugin}`: {} is not a valid wasm component: {reason}", path.display())]
    InvalidPlugin {
        plugin: String,
        path: PathBuf,
        reason: String,
    },
    /// The component does not export what its stage needs (another world, or another version
    /// of weir's contract).
    #[error("plugin `{plugin}`: {reason}")]
    WrongWorld { plugin: String, reason: String },
    #[error("plugin `{plugin}` was rejected by its init: {message}")]
    PluginInit { plugin: String, message: String },
    #[error("plugin `{plugin}` failed to start: {cause:#}")]
    PluginStart {
        plugin: String,
        cause: wasmtime::Error,
    },
    #[error("engine setup failed: {0:#}")]
    Engine(wasmtime::Error),
    #[error("state directory {}: {cause}", dir.display())]
    OpenState { dir: PathBuf, cause: String },
    /// A state store operation failed. With `whose` (the stage and source partition, e.g.
    /// "stage `totals`, state of orders[3]"), a stage's changes could not be written: the run
    /// stops before committing the records that made them, which are read again after a restart.
    #[error("{}state store {}: {cause}", whose.as_ref().map(|w| format!("{w}: ")).unwrap_or_default(), dir.display())]
    State {
        whose: Option<String>,
        dir: PathBuf,
        cause: Cause,
        /// Whether the store's filesystem is full.
        disk_full: bool,
    },
    #[error("restoring state from changelog `{topic}` partition {partition}: {cause}")]
    Restore {
        topic: String,
        partition: i32,
        cause: Cause,
    },
    #[error("{what}: {cause}")]
    Kafka { what: String, cause: KafkaError },
    /// A topic is missing, or not as the pipeline needs it.
    #[error("{0}")]
    Topic(String),
    #[error("{what}: {cause}")]
    Io { what: String, cause: std::io::Error },
    /// A Postgres source's database refused or failed something; `what` names the step and the
    /// object (table, slot, publication, LSN).
    #[error("postgres: {what}: {cause}")]
    Postgres { what: String, cause: String },
    #[error("hot reload: cannot start the watcher thread: {0}")]
    Watcher(std::io::Error),
    /// A record failed under `policy = "fail"`: offsets were committed up to, not including, it.
    #[error(
        "pipeline stopped: stage `{stage}` failed on {topic}[{partition}]@{offset}: {}: {}; \
         errors.policy is \"fail\": stopped without committing that record",
        error.kind,
        error.message
    )]
    Record {
        stage: String,
        topic: String,
        partition: i32,
        offset: i64,
        error: RecordError,
    },
    /// A record of a table's topic cannot be read as a row change, under `policy = "fail"`:
    /// the table was kept up to, not including, it.
    #[error(
        "pipeline stopped: table `{table}` cannot read {topic}[{partition}]@{offset}: {message}; \
         errors.policy is \"fail\" (with \"skip\" or \"dead-letter\" the table leaves such \
         records out, logging each)"
    )]
    TableRecord {
        table: String,
        topic: String,
        partition: i32,
        offset: i64,
        message: String,
    },
    /// The run could not go on (a delivery, commit or state write failed): offsets were
    /// committed up to, not including, the first record whose output is not safely in the sink.
    #[error("pipeline stopped: {0}")]
    Stopped(String),
}

impl Error {
    /// The plugin (stage) the error is about, if it is about one.
    pub fn plugin(&self) -> Option<&str> {
        match self {
            Error::ReadPlugin { plugin, .. }
            | Error::InvalidPlugin { plugin, .. }
            | Error::WrongWorld { plugin, .. }
            | Error::PluginInit { plugin, .. }
            | Error::PluginStart { plugin, .. } => Some(plugin),
            Error::Record { stage, .. } => Some(stage),
            _ => None,
        }
    }

    /// What kind of record failure stopped the run (the kind dead letters name), if one did.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            Error::Record { error, .. } => Some(error.kind),
            _ => None,
        }
    }

    /// Whether the state store failed because its filesystem is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(
            self,
            Error::State {
                disk_full: true,
                ..
            }
        )
    }
}

/// Why one record failed in one plugin: what the dead-letter headers and error summaries say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The plugin returned an error for the record.
    Plugin,
    /// The plugin trapped (a panic, or a wasm fault).
    Trap,
    /// The call ran past the time limit.
    Timeout,
    /// The plugin tried to grow its memory past the limit.
    OutOfMemory,
    /// A window stage could not read the record's event time.
    EventTime,
    /// A record came later than its window's allowed lateness, or behind a join stage's
    /// watermark (a window or join stage's `late` output).
    Late,
    /// State the record needed was written by another build of the plugin and could not be
    /// migrated to this build's shape.
    Migration,
    /// An output of the record is larger than the sink accepts.
    TooLarge,
    /// The record's state writes would make its key hold more than the plugin declares it
    /// needs (`state_bytes_per_key`).
    StateQuota,
    /// The record asked for a table its stage is not granted, or one that cannot be read.
    Table,
    /// A join stage could not read the record's join key (or its value, which must be JSON).
    Join,
}

impl ErrorKind {
    /// Every kind, in the order of [`ErrorKind::index`].
    pub const ALL: [ErrorKind; 11] = [
        ErrorKind::Plugin,
        ErrorKind::Trap,
        ErrorKind::Timeout,
        ErrorKind::OutOfMemory,
        ErrorKind::EventTime,
        ErrorKind::Late,
        ErrorKind::Migration,
        ErrorKind::TooLarge,
        ErrorKind::StateQuota,
        ErrorKind::Table,
        ErrorKind::Join,
    ];

    /// The kind's place in [`ErrorKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The name used in logs and dead-letter headers.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Plugin => "plugin-error",
            ErrorKind::Trap => "trap",
            ErrorKind::Timeout => "timeout",
            ErrorKind::OutOfMemory => "out-of-memory",
            ErrorKind::EventTime => "event-time",
            ErrorKind::Late => "late",
            ErrorKind::Migration => "state-migration",
            ErrorKind::TooLarge => "too-large",
            ErrorKind::StateQuota => "state-quota",
            ErrorKind::Table => "table",
            ErrorKind::Join => "join",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One record's failure in one plugin.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("plugin `{plugin}` {kind}: {message}")]
pub struct RecordError {
    pub plugin: String,
    pub kind: ErrorKind,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_stop_names_the_record_and_keeps_its_kind() {
        let error = Error::Record {
            stage: "mask".into(),
            topic: "orders".into(),
            partition: 2,
            offset: 41,
            error: RecordError {
                plugin: "mask".into(),
                kind: ErrorKind::Timeout,
                message: "ran past 100ms".into(),
            },
        };
        assert_eq!(error.kind(), Some(ErrorKind::Timeout));
        assert_eq!(error.plugin(), Some("mask"));
        assert_eq!(
            error.to_string(),
            "pipeline stopped: stage `mask` failed on orders[2]@41: timeout: ran past 100ms; \
             errors.policy is \"fail\": stopped without committing that record"
        );
    }

    #[test]
    fn a_config_error_names_the_line_when_known() {
        let at = |line| Error::Config {
            path: "p.toml".into(),
            line,
            message: "bad".into(),
        };
        assert_eq!(at(Some(3)).to_string(), "p.toml:3: bad");
        assert_eq!(at(None).to_string(), "p.toml: bad");
        assert_eq!(at(None).kind(), None);
    }
}
