//! The ordinary connection: what the catalog says of tables, types, the publication and the
//! slot; creating the publication; heartbeats.

use std::collections::HashMap;

use tokio_postgres::{Client, NoTls};

use super::{value::Kind, Settings};
use crate::Error;

/// A captured table's primary key columns, in key order.
pub type PrimaryKey = Vec<String>;

/// A replication slot as `pg_replication_slots` shows it.
#[derive(Debug)]
pub struct Slot {
    pub plugin: Option<String>,
    pub database: Option<String>,
    /// The process streaming from it, if one is.
    pub active_pid: Option<i32>,
}

pub struct Catalog {
    client: Client,
    types: HashMap<u32, Kind>,
}

pub(super) fn error(what: impl Into<String>, e: tokio_postgres::Error) -> Error {
    let cause = match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => e.to_string(),
    };
    Error::Postgres {
        what: what.into(),
        cause,
    }
}

impl Catalog {
    /// Connect, and check the server can do logical replication.
    pub async fn connect(settings: &Settings) -> Result<Catalog, Error> {
        let (client, connection) = settings
            .ordinary()
            .connect(NoTls)
            .await
            .map_err(|e| error(format!("connecting to {}", settings.display()), e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("postgres: connection ended: {e}");
            }
        });
        let catalog = Catalog {
            client,
            types: HashMap::new(),
        };
        catalog.check_wal_level().await?;
        Ok(catalog)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn check_wal_level(&self) -> Result<(), Error> {
        let row = self
            .client
            .query_one("SHOW wal_level", &[])
            .await
            .map_err(|e| error("reading wal_level", e))?;
        let level: String = row.get(0);
        if level != "logical" {
            return Err(Error::Postgres {
                what: "the server's wal_level".into(),
                cause: format!(
                    "it is `{level}`: logical replication needs wal_level = logical (set it in \
                     postgresql.conf, or ALTER SYSTEM SET wal_level = logical, and restart the \
                     server)"
                ),
            });
        }
        Ok(())
    }

    /// The primary key of `schema.table`; an error naming the table if it does not exist.
    pub async fn primary_key(&self, schema: &str, table: &str) -> Result<PrimaryKey, Error> {
        let exists = self
            .client
            .query_opt(
                "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
                &[&schema, &table],
            )
            .await
            .map_err(|e| error(format!("looking up table {schema}.{table}"), e))?;
        if exists.is_none() {
            return Err(Error::Postgres {
                what: format!("table {schema}.{table}"),
                cause: "it does not exist (source.tables names it)".into(),
            });
        }
        let rows = self
            .client
            .query(
                "SELECT a.attname::text FROM pg_index i \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                 WHERE i.indrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass \
                 AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)",
                &[&schema, &table],
            )
            .await
            .map_err(|e| error(format!("reading the primary key of {schema}.{table}"), e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// How values of type `oid` become JSON: built in, or from the catalog once (an enum or a
    /// domain, or an array of such).
    pub async fn kind(&mut self, oid: u32) -> Kind {
        if let Some(kind) = Kind::builtin(oid) {
            return kind;
        }
        if let Some(kind) = self.types.get(&oid) {
            return kind.clone();
        }
        let kind = Box::pin(self.described(oid)).await;
        self.types.insert(oid, kind.clone());
        kind
    }

    async fn described(&mut self, oid: u32) -> Kind {
        let row = self
            .client
            .query_opt(
                "SELECT typname::text, typtype::text, typelem, typbasetype, typcategory::text \
                 FROM pg_type WHERE oid = $1",
                &[&oid],
            )
            .await;
        let Ok(Some(row)) = row else {
            return Kind::Unknown(format!("oid {oid}"));
        };
        let (name, typtype, element, base, category): (String, String, u32, u32, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        match (typtype.as_str(), category.as_str()) {
            ("e", _) => Kind::Text,
            ("d", _) => self.kind(base).await,
            (_, "A") if element != 0 => Kind::Array(Box::new(self.kind(element).await)),
            _ => Kind::Unknown(name),
        }
    }

    /// Make sure the publication exists and holds every table of `tables`: created (or the
    /// missing tables added) when `create`, otherwise an error naming what is missing.
    pub async fn ensure_publication(
        &self,
        name: &str,
        tables: &[(String, String)],
        create: bool,
    ) -> Result<(), Error> {
        let what = || format!("publication `{name}`");
        let exists = self
            .client
            .query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&name])
            .await
            .map_err(|e| error(what(), e))?
            .is_some();
        let listed: Vec<String> = tables
            .iter()
            .map(|(s, t)| format!("{}.{}", quote(s), quote(t)))
            .collect();
        if !exists {
            if !create {
                return Err(Error::Postgres {
                    what: what(),
                    cause: "it does not exist, and source.create is false: create it \
                            (CREATE PUBLICATION … FOR TABLE …) or let weir"
                        .into(),
                });
            }
            let sql = format!(
                "CREATE PUBLICATION {} FOR TABLE {}",
                quote(name),
                listed.join(", ")
            );
            self.client
                .batch_execute(&sql)
                .await
                .map_err(|e| error(format!("creating {}", what()), e))?;
            tracing::info!(
                "postgres: created publication `{name}` for {}",
                listed.join(", ")
            );
            return Ok(());
        }
        let rows = self
            .client
            .query(
                "SELECT schemaname::text, tablename::text FROM pg_publication_tables \
                 WHERE pubname = $1",
                &[&name],
            )
            .await
            .map_err(|e| error(what(), e))?;
        let has: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let missing: Vec<&(String, String)> = tables.iter().filter(|t| !has.contains(t)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = missing
            .iter()
            .map(|(s, t)| format!("{}.{}", quote(s), quote(t)))
            .collect();
        if !create {
            return Err(Error::Postgres {
                what: what(),
                cause: format!(
                    "it does not publish {}, and source.create is false",
                    names.join(", ")
                ),
            });
        }
        let sql = format!(
            "ALTER PUBLICATION {} ADD TABLE {}",
            quote(name),
            names.join(", ")
        );
        self.client
            .batch_execute(&sql)
            .await
            .map_err(|e| error(format!("adding tables to {}", what()), e))?;
        Ok(())
    }

    /// The slot `name`, if it exists.
    pub async fn slot(&self, name: &str) -> Result<Option<Slot>, Error> {
        let row = self
            .client
            .query_opt(
                "SELECT plugin::text, database::text, active_pid FROM pg_replication_slots \
                 WHERE slot_name = $1",
                &[&name],
            )
            .await
            .map_err(|e| error(format!("looking up replication slot `{name}`"), e))?;
        Ok(row.map(|r| Slot {
            plugin: r.get(0),
            database: r.get(1),
            active_pid: r.get(2),
        }))
    }

    /// Drop the slot `name` (a snapshot that was cut short is started over on a new one).
    pub async fn drop_slot(&self, name: &str) -> Result<(), Error> {
        self.client
            .execute("SELECT pg_drop_replication_slot($1)", &[&name])
            .await
            .map_err(|e| error(format!("dropping replication slot `{name}`"), e))?;
        Ok(())
    }

    /// Write a heartbeat into the log: a logical message outside any transaction, which the
    /// stream brings back, so an idle database's slot moves on.
    pub async fn heartbeat(&self) -> Result<(), Error> {
        self.client
            .execute(
                "SELECT pg_logical_emit_message(false, $1, '')",
                &[&super::HEARTBEAT_PREFIX],
            )
            .await
            .map_err(|e| error("writing a heartbeat", e))?;
        Ok(())
    }
}

/// `name` as a quoted SQL identifier.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
