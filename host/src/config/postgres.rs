//! `[source] kind = "postgres"`: a database's committed changes, read from its write-ahead log
//! through logical replication (see [`crate::postgres`]).

use std::{str::FromStr, time::Duration};

use serde::Deserialize;

/// Where a database's changes come from and where they go.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSource {
    /// `postgres://USER@HOST:PORT/DATABASE`, without a password.
    pub url: String,
    /// The environment variable holding the password (default `PGPASSWORD`): a pipeline file
    /// is no place for a secret, and weir never logs it.
    #[serde(default = "default_password_env")]
    pub password_env: String,
    /// The publication naming the tables (default `weir`).
    #[serde(default = "default_name")]
    pub publication: String,
    /// The replication slot keeping the log for weir (default `weir`).
    #[serde(default = "default_name")]
    pub slot: String,
    /// `schema.table` (or `table`, in `public`) of each table to capture.
    pub tables: Vec<String>,
    /// Changes of table `S.T` go to topic `PREFIX.S.T` (Debezium's `topic.prefix`).
    pub topic_prefix: String,
    /// Create the publication and the slot when they are missing (default true); otherwise a
    /// missing one is an error.
    #[serde(default = "yes")]
    pub create: bool,
    /// Whether a new slot starts with a snapshot of the tables' rows (`initial`, the default)
    /// or with the changes after it only (`never`).
    #[serde(default)]
    pub snapshot: SnapshotMode,
    /// How often an idle database is asked for a heartbeat, so the slot's confirmed position
    /// moves on and the server does not keep the log forever (default 10s; 0: never).
    #[serde(default = "default_heartbeat", deserialize_with = "super::duration")]
    pub heartbeat: Duration,
    /// Follow each delete with a tombstone (its key, no value), so a compacted topic forgets
    /// the row (default true, as Debezium's `tombstones.on.delete`).
    #[serde(default = "yes")]
    pub tombstones: bool,
    /// Give each change a `transaction` block: the transaction's id and the change's order in
    /// it (default false, as Debezium's `provide.transaction.metadata`).
    #[serde(default)]
    pub transaction_metadata: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotMode {
    #[default]
    Initial,
    Never,
}

fn default_password_env() -> String {
    "PGPASSWORD".into()
}

fn default_name() -> String {
    "weir".into()
}

fn yes() -> bool {
    true
}

fn default_heartbeat() -> Duration {
    Duration::from_secs(10)
}

impl PostgresSource {
    /// `(schema, table)` of each captured table.
    pub fn table_names(&self) -> Vec<(String, String)> {
        self.tables
            .iter()
            .map(|t| match t.split_once('.') {
                Some((schema, table)) => (schema.to_string(), table.to_string()),
                None => ("public".to_string(), t.clone()),
            })
            .collect()
    }

    /// The connection settings of `url`.
    pub fn connection(&self) -> Result<tokio_postgres::Config, String> {
        tokio_postgres::Config::from_str(&self.url)
            .map_err(|e| format!("source.url is not a Postgres connection URL: {e}"))
    }

    /// What is wrong with these settings, if anything, and the key it is at.
    pub(super) fn wrong(&self) -> Option<(&'static str, String)> {
        let config = match self.connection() {
            Ok(config) => config,
            Err(message) => return Some(("url", message)),
        };
        if config.get_password().is_some() {
            let message = format!(
                "source.url holds a password: give it in the environment variable `{}` \
                 (source.password_env) instead, so it is neither in the file nor in a log",
                self.password_env
            );
            return Some(("url", message));
        }
        if config.get_dbname().is_none() {
            return Some(("url", "source.url names no database".into()));
        }
        if self.tables.is_empty() {
            return Some((
                "tables",
                "source.tables is empty: name the tables to capture".into(),
            ));
        }
        for (what, key, name) in [
            ("slot", "slot", &self.slot),
            ("publication", "publication", &self.publication),
        ] {
            if !is_identifier(name) {
                let message = format!(
                    "source.{what} `{name}` is not a valid name: lower-case letters, digits and \
                     underscores, at most 63"
                );
                return Some((key, message));
            }
        }
        if let Some(t) = self
            .table_names()
            .iter()
            .find(|(s, t)| s.is_empty() || t.is_empty())
        {
            let message = format!("source.tables: `{}.{}` is not `schema.table`", t.0, t.1);
            return Some(("tables", message));
        }
        if self.topic_prefix.trim().is_empty() {
            return Some(("topic_prefix", "source.topic_prefix is empty".into()));
        }
        None
    }
}

/// A name Postgres takes for a slot as it is: lower-case letters, digits, underscores.
fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}
