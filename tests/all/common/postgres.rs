//! The test database server: the project's `scripts/postgres.sh` (Debian's PostgreSQL in a
//! scratch directory, wal_level=logical), started once per test binary; each test makes a
//! database of its own.

use std::{process::Command, sync::OnceLock};

use weir::config::{PostgresSource, SnapshotMode};

use super::root;

/// The environment variable the tests' sources read the password from.
pub const PASSWORD_ENV: &str = "WEIR_TEST_PG_PASSWORD";

pub struct Postgres {
    pub port: u16,
}

/// Run `scripts/postgres.sh COMMAND` for the server on `port` (with `env` set); panics if it
/// fails.
pub fn script(port: u16, command: &str, env: &[(&str, &str)]) {
    let out = Command::new(root().join("scripts/postgres.sh"))
        .arg(command)
        .env("PG_PORT", port.to_string())
        .env("PG_PASSWORD", std::env::var(PASSWORD_ENV).unwrap())
        .envs(env.iter().copied())
        .output()
        .expect("run scripts/postgres.sh");
    assert!(
        out.status.success(),
        "postgres.sh {command} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A server of one test's own on `port` (one it may restart or stop), with `env` for the
/// script; stopped when dropped.
pub struct Dedicated {
    pub server: Postgres,
}

impl Dedicated {
    pub fn start(port: u16, env: &[(&str, &str)]) -> Dedicated {
        password();
        // A data directory left by an earlier run may have other settings: start afresh.
        script(port, "stop", &[]);
        let _ = std::fs::remove_dir_all(format!("/tmp/weir-postgres/{port}"));
        script(port, "start", env);
        Dedicated {
            server: Postgres { port },
        }
    }

    /// A fast restart: sessions are ended, as when the server is restarted by its operator.
    pub fn restart(&self) {
        script(self.server.port, "restart", &[]);
    }
}

impl Drop for Dedicated {
    fn drop(&mut self) {
        let _ = Command::new(root().join("scripts/postgres.sh"))
            .arg("stop")
            .env("PG_PORT", self.server.port.to_string())
            .output();
    }
}

/// Make sure [`PASSWORD_ENV`] is set (to the scripts' default password where it is not).
fn password() {
    if std::env::var_os(PASSWORD_ENV).is_none() {
        std::env::set_var(PASSWORD_ENV, "weir");
    }
}

/// The test server, started on first use.
pub fn postgres() -> &'static Postgres {
    static SERVER: OnceLock<Postgres> = OnceLock::new();
    SERVER.get_or_init(|| {
        let port: u16 = std::env::var("WEIR_TEST_PG_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(25433);
        password();
        script(port, "start", &[]);
        Postgres { port }
    })
}

/// A database of one test's own, and a connection to it.
pub struct Database {
    pub name: String,
    pub port: u16,
    pub runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl Postgres {
    /// A fresh database `name` (and no slot of that name left from an earlier run).
    pub fn database(&self, name: &str) -> Database {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let admin = runtime.block_on(connect(self.port, "postgres"));
        runtime.block_on(async {
            admin
                .execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                     WHERE slot_name = $1",
                    &[&name],
                )
                .await
                .unwrap();
            for sql in [
                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                format!("CREATE DATABASE {name}"),
            ] {
                admin.batch_execute(&sql).await.unwrap();
            }
        });
        let client = runtime.block_on(connect(self.port, name));
        Database {
            name: name.to_string(),
            port: self.port,
            runtime,
            client,
        }
    }
}

async fn connect(port: u16, database: &str) -> tokio_postgres::Client {
    let password = std::env::var(PASSWORD_ENV).unwrap();
    let (client, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("postgres")
        .password(password)
        .dbname(database)
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to database {database}: {e}"));
    tokio::spawn(connection);
    client
}

impl Database {
    /// A connection of its own to the existing database `name` (for a thread of its own).
    pub fn connect(port: u16, name: &str) -> Database {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = runtime.block_on(connect(port, name));
        Database {
            name: name.to_string(),
            port,
            runtime,
            client,
        }
    }

    /// Run `sql` (one or more statements).
    pub fn execute(&self, sql: &str) {
        self.runtime
            .block_on(self.client.batch_execute(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The first column of the first row `sql` returns, as text.
    pub fn text(&self, sql: &str) -> String {
        let rows = self
            .runtime
            .block_on(self.client.simple_query(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{sql}: no value"))
    }

    /// A source capturing `tables` into topics `PREFIX.…`, with a slot and publication named
    /// after the database.
    pub fn source(&self, tables: &[&str], prefix: &str) -> PostgresSource {
        PostgresSource {
            url: format!("postgres://postgres@127.0.0.1:{}/{}", self.port, self.name),
            password_env: PASSWORD_ENV.into(),
            publication: self.name.clone(),
            slot: self.name.clone(),
            tables: tables.iter().map(|t| t.to_string()).collect(),
            topic_prefix: prefix.into(),
            create: true,
            snapshot: SnapshotMode::Initial,
            heartbeat: std::time::Duration::from_secs(10),
            tombstones: true,
            transaction_metadata: false,
        }
    }
}
