//! The replication connection: a slot's snapshot (for a new slot) and then its stream of
//! committed transactions, each change a Debezium event.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use pg_walstream::{LogicalReplicationMessage as Message, LogicalReplicationParser, TupleData};
use pgwire_replication::{client::ReplicationClient, Lsn, PgWireError, ReplicationEvent};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use super::{
    catalog::{self, quote, Catalog},
    event::{Cell, Column, Op, Origin, Table},
    Settings, HEARTBEAT_PREFIX,
};
use crate::Error;

/// One change of a captured table, as the record weir hands to the chain.
#[derive(Debug, Clone)]
pub struct Change {
    /// `PREFIX.SCHEMA.TABLE`.
    pub topic: String,
    /// The primary key as JSON; none for a table without one, or a truncate.
    pub key: Option<Vec<u8>>,
    /// Debezium's envelope; none for the tombstone that follows a delete (so a compacted topic
    /// forgets the row).
    pub value: Option<Vec<u8>>,
    /// Commit time, ms since the epoch.
    pub timestamp_ms: i64,
    /// Where in the log the change is (a snapshot row: where the slot starts).
    pub lsn: u64,
}

/// A committed transaction: its changes in the order they were made.
#[derive(Debug)]
pub struct Transaction {
    pub xid: u32,
    /// The LSN just past its commit: once it is delivered, the slot may be confirmed to here.
    pub end_lsn: u64,
    pub commit_ms: i64,
    pub changes: Vec<Change>,
}

/// What the capture brings next.
#[derive(Debug)]
pub enum Captured {
    /// Rows of the snapshot (`op = "r"`); `last`: the snapshot is complete with these, and the
    /// stream goes on from `lsn`.
    Snapshot {
        changes: Vec<Change>,
        last: bool,
        lsn: u64,
    },
    Transaction(Transaction),
    /// A heartbeat came back: everything before `lsn` was captured.
    Heartbeat {
        lsn: u64,
    },
}

/// Rows read from the snapshot at a time.
const SNAPSHOT_CHUNK: usize = 1000;
/// Microseconds from the Unix epoch to Postgres's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A slot's snapshot being read, table by table, through a cursor.
struct Snapshot {
    client: Client,
    tables: Vec<Table>,
    /// Index into `tables` of the one the cursor reads.
    at: usize,
    open: bool,
    lsn: u64,
    started_ms: i64,
}

/// A transaction being received.
struct Open {
    xid: u32,
    /// Debezium's transaction id: `XID:LSN` of the commit.
    id: String,
    commit_ms: i64,
    changes: Vec<Change>,
    /// Changes so far, in all and per table (the `transaction` block's orders).
    total: u64,
    per_table: HashMap<u32, u64>,
}

pub struct Capture {
    settings: Settings,
    catalog: Catalog,
    client: ReplicationClient,
    started: bool,
    parser: LogicalReplicationParser,
    relations: HashMap<u32, Table>,
    snapshot: Option<Snapshot>,
    open: Option<Open>,
    /// Transactions ending at or before this were handled before: skipped.
    skip_through: u64,
    next_heartbeat: Option<Instant>,
}

fn replication_error(settings: &Settings, e: PgWireError) -> Error {
    Error::Postgres {
        what: format!(
            "replication slot `{}` on {}",
            settings.source.slot,
            settings.display()
        ),
        cause: e.to_string(),
    }
}

fn unix_ms(pg_micros: i64) -> i64 {
    (pg_micros + PG_EPOCH_MICROS) / 1000
}

fn now_ms() -> i64 {
    crate::metrics::now_ms() as i64
}

impl Capture {
    /// Start capturing. A missing slot is created (when `source.create`) and, unless
    /// `source.snapshot = "never"`, its snapshot comes first. An existing slot streams from
    /// `resume` (the end LSN of the last transaction handled; 0: the slot's confirmed
    /// position), skipping transactions at or before it.
    pub async fn start(settings: Settings, resume: u64) -> Result<Capture, Error> {
        let source = settings.source.clone();
        let catalog = Catalog::connect(&settings).await?;
        let tables = source.table_names();
        for (schema, table) in &tables {
            catalog.primary_key(schema, table).await?;
        }
        catalog
            .ensure_publication(&source.publication, &tables, source.create)
            .await?;
        let existing = catalog.slot(&source.slot).await?;
        if let Some(slot) = &existing {
            check_slot(&settings, slot)?;
        } else if !source.create {
            return Err(Error::Postgres {
                what: format!("replication slot `{}`", source.slot),
                cause: "it does not exist, and source.create is false".into(),
            });
        }
        let fresh = existing.is_none();
        let start = if fresh { 0 } else { resume };
        let client = ReplicationClient::connect_gated(settings.replication(start, None))
            .await
            .map_err(|e| replication_error(&settings, e))?;
        let mut capture = Capture {
            settings,
            catalog,
            client,
            started: false,
            parser: LogicalReplicationParser::with_protocol_version(1),
            relations: HashMap::new(),
            snapshot: None,
            open: None,
            skip_through: resume,
            next_heartbeat: None,
        };
        if fresh {
            capture.create_slot().await?;
        }
        Ok(capture)
    }

    /// Create the slot, with its snapshot exported and imported into a transaction of a
    /// connection of its own, from which the tables are then read.
    async fn create_slot(&mut self) -> Result<(), Error> {
        let source = &self.settings.source;
        let sql = format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT 'export')",
            quote(&source.slot)
        );
        let rows = self
            .client
            .simple_query(&sql)
            .await
            .map_err(|e| replication_error(&self.settings, e))?;
        let field = |i: usize| {
            rows.first()
                .and_then(|r| r.get(i).cloned().flatten())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        let lsn = field(1)
            .and_then(|l| Lsn::parse(&l).ok())
            .ok_or_else(|| Error::Postgres {
                what: format!("creating replication slot `{}`", source.slot),
                cause: "the server's answer has no consistent point".into(),
            })?;
        tracing::info!(
            "postgres: created replication slot `{}` at {}",
            source.slot,
            lsn.to_pg_string()
        );
        if source.snapshot == crate::config::SnapshotMode::Never {
            return Ok(());
        }
        let name = field(2).ok_or_else(|| Error::Postgres {
            what: format!("creating replication slot `{}`", source.slot),
            cause: "the server exported no snapshot".into(),
        })?;
        self.snapshot = Some(self.open_snapshot(&name, lsn.0).await?);
        Ok(())
    }

    /// A connection whose transaction sees the exported snapshot `name`, and the tables to read.
    async fn open_snapshot(&mut self, name: &str, lsn: u64) -> Result<Snapshot, Error> {
        let (client, connection) = self
            .settings
            .ordinary()
            .connect(NoTls)
            .await
            .map_err(|e| catalog::error("connecting for the snapshot", e))?;
        tokio::spawn(connection);
        let sql = format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{name}'"
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| catalog::error("importing the slot's snapshot", e))?;
        let mut tables = Vec::new();
        for (schema, table) in self.settings.source.table_names() {
            tables.push(self.describe(&client, &schema, &table).await?);
        }
        Ok(Snapshot {
            client,
            tables,
            at: 0,
            open: false,
            lsn,
            started_ms: now_ms(),
        })
    }

    /// `schema.table` as the snapshot's transaction sees it: columns, their kinds, the key.
    async fn describe(
        &mut self,
        client: &Client,
        schema: &str,
        table: &str,
    ) -> Result<Table, Error> {
        let rows = client
            .query(
                "SELECT attname::text, atttypid FROM pg_attribute \
                 WHERE attrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass \
                 AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
                &[&schema, &table],
            )
            .await
            .map_err(|e| catalog::error(format!("reading the columns of {schema}.{table}"), e))?;
        let mut columns = Vec::with_capacity(rows.len());
        for row in rows {
            let oid: u32 = row.get(1);
            columns.push(Column {
                name: row.get(0),
                kind: self.catalog.kind(oid).await,
            });
        }
        self.table(schema, table, columns).await
    }

    /// A table of `columns`, with its topic and primary key.
    async fn table(&self, schema: &str, name: &str, columns: Vec<Column>) -> Result<Table, Error> {
        let key_names = self.catalog.primary_key(schema, name).await?;
        let key = key_names
            .iter()
            .filter_map(|k| columns.iter().position(|c| &c.name == k))
            .collect();
        Ok(Table {
            schema: schema.to_string(),
            name: name.to_string(),
            topic: format!("{}.{schema}.{name}", self.settings.source.topic_prefix),
            columns,
            key,
        })
    }

    /// The next snapshot rows, transaction or heartbeat; none if the stream brought none
    /// within `wait` (what it brought so far is kept for the next call).
    pub async fn next(&mut self, wait: Duration) -> Result<Option<Captured>, Error> {
        if self.snapshot.is_some() {
            return self.next_snapshot_rows().await.map(Some);
        }
        if !self.started {
            self.client
                .start()
                .await
                .map_err(|e| replication_error(&self.settings, e))?;
            self.started = true;
        }
        let until = Instant::now() + wait;
        loop {
            let Some(event) = self.receive(until).await? else {
                return Ok(None);
            };
            if let Some(captured) = self.handle(event).await? {
                return Ok(Some(captured));
            }
        }
    }

    /// The next event of the stream, if one comes before `until`; meanwhile, when the
    /// database is idle for a heartbeat interval, a heartbeat is written.
    async fn receive(&mut self, until: Instant) -> Result<Option<ReplicationEvent>, Error> {
        loop {
            let every = self.settings.source.heartbeat;
            let due = *self
                .next_heartbeat
                .get_or_insert_with(|| Instant::now() + every);
            let beat = !every.is_zero() && self.open.is_none();
            let received = tokio::select! {
                // Cancel-safe: an event not taken stays in the channel.
                received = self.client.recv() => received,
                () = tokio::time::sleep_until(due.into()), if beat => {
                    self.catalog.heartbeat().await?;
                    self.next_heartbeat = None;
                    continue;
                }
                () = tokio::time::sleep_until(until.into()) => return Ok(None),
            };
            return match received {
                Ok(Some(event)) => Ok(Some(event)),
                Ok(None) => Err(Error::Postgres {
                    what: format!("replication slot `{}`", self.settings.source.slot),
                    cause: "the server ended the stream".into(),
                }),
                Err(e) => Err(replication_error(&self.settings, e)),
            };
        }
    }

    /// What `event` completes, if anything.
    async fn handle(&mut self, event: ReplicationEvent) -> Result<Option<Captured>, Error> {
        match event {
            ReplicationEvent::Begin {
                xid,
                commit_time_micros,
                final_lsn,
            } => {
                self.open = Some(Open {
                    xid,
                    id: format!("{xid}:{}", final_lsn.0),
                    commit_ms: unix_ms(commit_time_micros),
                    changes: Vec::new(),
                    total: 0,
                    per_table: HashMap::new(),
                });
            }
            ReplicationEvent::XLogData {
                wal_start, data, ..
            } => self.decode(wal_start.0, &data).await?,
            ReplicationEvent::Commit { end_lsn, .. } => {
                self.next_heartbeat = None;
                let Some(open) = self.open.take() else {
                    return Ok(None);
                };
                if end_lsn.0 <= self.skip_through {
                    return Ok(None);
                }
                return Ok(Some(Captured::Transaction(Transaction {
                    xid: open.xid,
                    end_lsn: end_lsn.0,
                    commit_ms: open.commit_ms,
                    changes: open.changes,
                })));
            }
            ReplicationEvent::Message {
                transactional: false,
                lsn,
                prefix,
                ..
            } if prefix == HEARTBEAT_PREFIX => {
                return Ok(Some(Captured::Heartbeat { lsn: lsn.0 }));
            }
            _ => {}
        }
        Ok(None)
    }

    /// Decode one pgoutput message at `lsn`: a table's description, or a change of one.
    async fn decode(&mut self, lsn: u64, data: &[u8]) -> Result<(), Error> {
        let message = self
            .parser
            .parse_wal_message(data)
            .map_err(|e| Error::Postgres {
                what: format!("decoding the change at LSN {}", super::lsn_text(lsn)),
                cause: e.to_string(),
            })?
            .message;
        match message {
            Message::Relation {
                relation_id,
                namespace,
                relation_name,
                columns,
                ..
            } => {
                let mut described = Vec::with_capacity(columns.len());
                for c in columns {
                    described.push(Column {
                        name: c.name.to_string(),
                        kind: self.catalog.kind(c.type_id).await,
                    });
                }
                let table = self.table(&namespace, &relation_name, described).await?;
                self.relations.insert(relation_id, table);
            }
            Message::Insert { relation_id, tuple } => {
                self.change(lsn, relation_id, Op::Create, None, Some(cells(&tuple)))?
            }
            Message::Update {
                relation_id,
                old_tuple,
                new_tuple,
                ..
            } => {
                let before = old_tuple.as_ref().map(cells);
                let mut after = cells(&new_tuple);
                // An unchanged TOASTed value the old row holds (REPLICA IDENTITY FULL) is known.
                if let Some(old) = &before {
                    for (cell, was) in after.iter_mut().zip(old) {
                        if *cell == Cell::Unchanged && matches!(was, Cell::Text(_)) {
                            *cell = was.clone();
                        }
                    }
                }
                self.change(lsn, relation_id, Op::Update, before, Some(after))?
            }
            Message::Delete {
                relation_id,
                old_tuple,
                ..
            } => self.change(lsn, relation_id, Op::Delete, Some(cells(&old_tuple)), None)?,
            Message::Truncate { relation_ids, .. } => {
                for relation_id in relation_ids {
                    self.change(lsn, relation_id, Op::Truncate, None, None)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Add a change of relation `relation_id` to the open transaction.
    fn change(
        &mut self,
        lsn: u64,
        relation_id: u32,
        op: Op,
        before: Option<Vec<Cell>>,
        after: Option<Vec<Cell>>,
    ) -> Result<(), Error> {
        let table = self
            .relations
            .get(&relation_id)
            .ok_or_else(|| Error::Postgres {
                what: format!("the change at LSN {}", super::lsn_text(lsn)),
                cause: format!("it is of relation {relation_id}, which the stream never described"),
            })?;
        let Some(open) = self.open.as_mut() else {
            return Ok(());
        };
        open.total += 1;
        let in_table = open.per_table.entry(relation_id).or_default();
        *in_table += 1;
        let source = &self.settings.source;
        let origin = Origin {
            name: &source.topic_prefix,
            db: self.settings.database(),
            ts_ms: open.commit_ms,
            tx_id: Some(open.xid),
            lsn: Some(lsn),
            snapshot: "false",
            transaction: source.transaction_metadata.then_some((
                open.id.as_str(),
                open.total,
                *in_table,
            )),
        };
        let key = match op {
            Op::Truncate => None,
            _ => after
                .as_deref()
                .or(before.as_deref())
                .and_then(|c| table.key_of(c)),
        };
        let value = table.envelope(op, before.as_deref(), after.as_deref(), &origin, now_ms());
        let tombstone = (op == Op::Delete && source.tombstones && key.is_some()).then(|| Change {
            topic: table.topic.clone(),
            key: key.clone(),
            value: None,
            timestamp_ms: open.commit_ms,
            lsn,
        });
        open.changes.push(Change {
            topic: table.topic.clone(),
            key,
            value: Some(value),
            timestamp_ms: open.commit_ms,
            lsn,
        });
        open.changes.extend(tombstone);
        Ok(())
    }

    /// The next chunk of snapshot rows.
    async fn next_snapshot_rows(&mut self) -> Result<Captured, Error> {
        let snapshot = self.snapshot.as_mut().expect("a snapshot is being read");
        let mut changes = Vec::new();
        while changes.is_empty() && snapshot.at < snapshot.tables.len() {
            let table = &snapshot.tables[snapshot.at];
            if !snapshot.open {
                let columns: Vec<String> = table.columns.iter().map(|c| quote(&c.name)).collect();
                let sql = format!(
                    "DECLARE weir_snapshot NO SCROLL CURSOR FOR SELECT {} FROM {}.{}",
                    columns.join(", "),
                    quote(&table.schema),
                    quote(&table.name)
                );
                snapshot.client.batch_execute(&sql).await.map_err(|e| {
                    catalog::error(format!("reading {}.{}", table.schema, table.name), e)
                })?;
                snapshot.open = true;
            }
            let fetched = snapshot
                .client
                .simple_query(&format!("FETCH {SNAPSHOT_CHUNK} FROM weir_snapshot"))
                .await
                .map_err(|e| {
                    catalog::error(format!("reading {}.{}", table.schema, table.name), e)
                })?;
            let origin = Origin {
                name: &self.settings.source.topic_prefix,
                db: self.settings.database(),
                ts_ms: snapshot.started_ms,
                tx_id: None,
                lsn: Some(snapshot.lsn),
                snapshot: "true",
                transaction: None,
            };
            let mut rows = 0;
            for message in fetched {
                let SimpleQueryMessage::Row(row) = message else {
                    continue;
                };
                rows += 1;
                let cells: Vec<Cell> = (0..row.len())
                    .map(|i| row.get(i).map_or(Cell::Null, |t| Cell::Text(t.to_string())))
                    .collect();
                changes.push(Change {
                    topic: table.topic.clone(),
                    key: table.key_of(&cells),
                    value: Some(table.envelope(Op::Read, None, Some(&cells), &origin, now_ms())),
                    timestamp_ms: snapshot.started_ms,
                    lsn: snapshot.lsn,
                });
            }
            if rows < SNAPSHOT_CHUNK {
                snapshot
                    .client
                    .batch_execute("CLOSE weir_snapshot")
                    .await
                    .map_err(|e| catalog::error("closing the snapshot's cursor", e))?;
                snapshot.open = false;
                snapshot.at += 1;
            }
        }
        let last = snapshot.at == snapshot.tables.len();
        let lsn = snapshot.lsn;
        if last {
            let done = self.snapshot.take().expect("a snapshot is being read");
            done.client
                .batch_execute("COMMIT")
                .await
                .map_err(|e| catalog::error("ending the snapshot's transaction", e))?;
        }
        Ok(Captured::Snapshot { changes, last, lsn })
    }

    /// Connect again after the stream broke (the server restarted, the network dropped): a new
    /// replication session from `resume` (skipping transactions at or before it), the tables
    /// described anew by the stream. A snapshot cannot be resumed: that is an error.
    pub async fn reconnect(&mut self, resume: u64) -> Result<(), Error> {
        if self.snapshot.is_some() {
            return Err(Error::Postgres {
                what: format!("the snapshot of slot `{}`", self.settings.source.slot),
                cause: "the connection broke while it was read; a new run starts it over".into(),
            });
        }
        self.client.abort();
        self.catalog = Catalog::connect(&self.settings).await?;
        if let Some(slot) = self.catalog.slot(&self.settings.source.slot).await? {
            check_slot(&self.settings, &slot)?;
        }
        let config = self.settings.replication(resume, None);
        self.client = ReplicationClient::connect_gated(config)
            .await
            .map_err(|e| replication_error(&self.settings, e))?;
        self.started = false;
        self.parser = LogicalReplicationParser::with_protocol_version(1);
        self.relations.clear();
        self.open = None;
        self.skip_through = resume;
        self.next_heartbeat = None;
        Ok(())
    }

    /// Tell the server everything up to `lsn` is delivered: the slot may let that log go.
    pub fn confirm(&self, lsn: u64) {
        self.client.update_applied_lsn(Lsn(lsn));
    }

    /// Stop streaming and close the replication connection (a stream that never started, or
    /// does not end within a few seconds, is cut).
    pub async fn close(mut self) {
        if self.started {
            let ended = tokio::time::timeout(Duration::from_secs(5), self.client.shutdown()).await;
            if ended.is_ok() {
                return;
            }
        }
        self.client.abort();
    }
}

/// The columns of a tuple.
fn cells(tuple: &TupleData) -> Vec<Cell> {
    tuple
        .columns
        .iter()
        .map(|c| {
            if c.is_null() {
                Cell::Null
            } else if c.is_unchanged() {
                Cell::Unchanged
            } else {
                c.as_str()
                    .map_or(Cell::Null, |t| Cell::Text(t.into_owned()))
            }
        })
        .collect()
}

/// An existing slot must be a pgoutput slot of this database, and free.
fn check_slot(settings: &Settings, slot: &catalog::Slot) -> Result<(), Error> {
    let what = || format!("replication slot `{}`", settings.source.slot);
    if slot.plugin.as_deref() != Some("pgoutput") {
        return Err(Error::Postgres {
            what: what(),
            cause: format!(
                "it decodes with `{}`, not pgoutput: drop it or name another slot",
                slot.plugin
                    .as_deref()
                    .unwrap_or("nothing (a physical slot)")
            ),
        });
    }
    if slot.database.as_deref() != Some(settings.database()) {
        return Err(Error::Postgres {
            what: what(),
            cause: format!(
                "it belongs to database `{}`, not `{}`",
                slot.database.as_deref().unwrap_or("?"),
                settings.database()
            ),
        });
    }
    if let Some(pid) = slot.active_pid {
        return Err(Error::Postgres {
            what: what(),
            cause: format!(
                "it is in use by server process {pid} (another weir, or another consumer): a \
                 slot has one reader at a time"
            ),
        });
    }
    Ok(())
}
