//! Change data capture from PostgreSQL: every committed change of the captured tables, read from
//! the write-ahead log through logical replication (`pgoutput`), as Debezium change events.
//!
//! Two connections: an ordinary one for the catalog, the publication, the snapshot's reads and
//! heartbeats ([`catalog`], on tokio-postgres), and a replication one for the slot and the stream
//! ([`capture`], on pgwire-replication, its pgoutput messages decoded by pg_walstream's parser).
//! Those two crates have one maintainer each: nothing outside this folder names them.
//!
//! A new slot is created with an exported snapshot: the tables are read as of exactly the point
//! the slot starts at, so the stream that follows has no gap and no overlap with them.

pub mod capture;
pub mod catalog;
pub mod event;
pub mod value;

use std::time::Duration;

use pgwire_replication::{config::ReplicationConfig, Lsn};

use crate::{config::PostgresSource, Error};

pub use capture::{Capture, Captured, Change, Transaction};

/// The prefix of the logical messages weir writes as heartbeats.
pub const HEARTBEAT_PREFIX: &str = "weir.heartbeat";

/// How to reach the database, password included (never shown).
#[derive(Clone)]
pub struct Settings {
    pub source: PostgresSource,
    host: String,
    port: u16,
    user: String,
    database: String,
    password: String,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

impl Settings {
    /// The settings of `source`, the password read from its environment variable (none there:
    /// an empty one, which a server trusting local connections accepts).
    pub fn new(source: &PostgresSource) -> Result<Settings, Error> {
        let wrong = |cause: String| Error::Postgres {
            what: "source.url".into(),
            cause,
        };
        let config = source.connection().map_err(wrong)?;
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
            None => "localhost".into(),
        };
        Ok(Settings {
            host,
            port: config.get_ports().first().copied().unwrap_or(5432),
            user: config.get_user().unwrap_or("postgres").to_string(),
            database: config.get_dbname().unwrap_or("postgres").to_string(),
            password: std::env::var(&source.password_env).unwrap_or_default(),
            source: source.clone(),
        })
    }

    /// `user@host:port/database`, for messages.
    pub fn display(&self) -> String {
        format!(
            "{}@{}:{}/{}",
            self.user, self.host, self.port, self.database
        )
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    /// The ordinary connection's settings.
    fn ordinary(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .password(&self.password)
            .dbname(&self.database)
            .application_name("weir")
            .options(value::SESSION_OPTIONS)
            .connect_timeout(Duration::from_secs(10));
        config
    }

    /// The replication connection's settings, streaming from `start` (0: where the slot's
    /// confirmed position is) and confirming `confirmed` until told more.
    fn replication(&self, start: u64, confirmed: Option<u64>) -> ReplicationConfig {
        let source = &self.source;
        let mut config = ReplicationConfig::new(
            self.host.clone(),
            self.user.clone(),
            self.password.clone(),
            self.database.clone(),
            source.slot.clone(),
            source.publication.clone(),
        )
        .with_port(self.port)
        .with_start_lsn(Lsn(start))
        .with_options(value::SESSION_OPTIONS)
        .with_application_name("weir")
        .with_status_interval(Duration::from_secs(1));
        if let Some(lsn) = confirmed {
            config = config.with_ack_lsn(Lsn(lsn));
        }
        config
    }
}

/// An LSN as Postgres writes it: `16/B374D848`.
pub fn lsn_text(lsn: u64) -> String {
    Lsn(lsn).to_pg_string()
}
