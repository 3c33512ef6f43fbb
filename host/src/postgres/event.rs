//! Change events as Debezium's Postgres connector writes them (JSON, no schemas): the record's
//! key is the row's primary key, its value the envelope
//! `{before, after, source, op, ts_ms, transaction}`.

use serde_json::{json, Map, Value};

use super::value::{to_json, Kind};

/// What Debezium writes for a TOASTed column an update left unchanged: Postgres does not send
/// its value, and it must not read as null.
pub const UNAVAILABLE: &str = "__debezium_unavailable_value";

/// The Debezium version whose event shape these follow.
pub const DEBEZIUM_VERSION: &str = "2.7.0.Final";

/// A captured table as the stream last described it.
#[derive(Debug, Clone)]
pub struct Table {
    pub schema: String,
    pub name: String,
    /// `PREFIX.SCHEMA.TABLE`.
    pub topic: String,
    pub columns: Vec<Column>,
    /// Indexes into `columns` of the primary key, in key order (empty: no key).
    pub key: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub kind: Kind,
}

/// One column of a row as it came: its text, null, or (an update's TOASTed value Postgres did
/// not send) unchanged.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Unchanged,
    Text(String),
}

/// The `op` of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Read,
    Create,
    Update,
    Delete,
    Truncate,
}

impl Op {
    fn code(self) -> &'static str {
        match self {
            Op::Read => "r",
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Truncate => "t",
        }
    }
}

/// Where an event comes from: the envelope's `source` block and `transaction`.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    /// `topic.prefix`, Debezium's logical server name.
    pub name: &'a str,
    pub db: &'a str,
    /// Commit time (the snapshot's start, for rows read by it), ms since the epoch.
    pub ts_ms: i64,
    pub tx_id: Option<u32>,
    pub lsn: Option<u64>,
    /// `"true"`, `"last"` or `"false"`, as Debezium marks snapshot rows.
    pub snapshot: &'static str,
    /// The `transaction` block, where asked for: id, order in the transaction, order among the
    /// transaction's changes of the same table.
    pub transaction: Option<(&'a str, u64, u64)>,
}

impl Table {
    /// `cells` (in column order) as the JSON object of a row.
    pub fn row(&self, cells: &[Cell]) -> Value {
        let mut row = Map::with_capacity(self.columns.len());
        for (column, cell) in self.columns.iter().zip(cells) {
            let value = match cell {
                Cell::Null => Value::Null,
                Cell::Unchanged => Value::String(UNAVAILABLE.into()),
                Cell::Text(text) => to_json(&column.kind, text),
            };
            row.insert(column.name.clone(), value);
        }
        Value::Object(row)
    }

    /// The record key of a row: its primary key columns as a JSON object; none for a table
    /// without a primary key.
    pub fn key_of(&self, cells: &[Cell]) -> Option<Vec<u8>> {
        if self.key.is_empty() {
            return None;
        }
        let mut key = Map::with_capacity(self.key.len());
        for &i in &self.key {
            let value = match cells.get(i) {
                Some(Cell::Text(text)) => to_json(&self.columns[i].kind, text),
                _ => Value::Null,
            };
            key.insert(self.columns[i].name.clone(), value);
        }
        Some(Value::Object(key).to_string().into_bytes())
    }

    /// The event value: Debezium's envelope.
    pub fn envelope(
        &self,
        op: Op,
        before: Option<&[Cell]>,
        after: Option<&[Cell]>,
        origin: &Origin<'_>,
        now_ms: i64,
    ) -> Vec<u8> {
        let source = json!({
            "version": DEBEZIUM_VERSION,
            "connector": "postgresql",
            "name": origin.name,
            "ts_ms": origin.ts_ms,
            "snapshot": origin.snapshot,
            "db": origin.db,
            "sequence": origin.lsn.map(|l| format!("[null,\"{l}\"]")),
            "schema": self.schema,
            "table": self.name,
            "txId": origin.tx_id,
            "lsn": origin.lsn,
            "xmin": null,
        });
        let event = json!({
            "before": before.map(|c| self.row(c)),
            "after": after.map(|c| self.row(c)),
            "source": source,
            "op": op.code(),
            "ts_ms": now_ms,
            "transaction": origin.transaction.map(|(id, total, in_table)| json!({
                "id": id,
                "total_order": total,
                "data_collection_order": in_table,
            })),
        });
        event.to_string().into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orders() -> Table {
        Table {
            schema: "public".into(),
            name: "orders".into(),
            topic: "shop.public.orders".into(),
            columns: vec![
                Column {
                    name: "id".into(),
                    kind: Kind::Integer,
                },
                Column {
                    name: "note".into(),
                    kind: Kind::Text,
                },
            ],
            key: vec![0],
        }
    }

    #[test]
    fn an_update_is_debeziums_envelope() {
        let t = orders();
        let after = [Cell::Text("7".into()), Cell::Unchanged];
        let origin = Origin {
            name: "shop",
            db: "app",
            ts_ms: 1000,
            tx_id: Some(42),
            lsn: Some(99),
            snapshot: "false",
            transaction: Some(("42:99", 3, 1)),
        };
        let value: Value =
            serde_json::from_slice(&t.envelope(Op::Update, None, Some(&after), &origin, 2000))
                .unwrap();
        assert_eq!(value["op"], "u");
        assert_eq!(value["before"], Value::Null);
        assert_eq!(value["after"], json!({"id": 7, "note": UNAVAILABLE}));
        assert_eq!(value["source"]["table"], "orders");
        assert_eq!(value["source"]["txId"], 42);
        assert_eq!(value["source"]["lsn"], 99);
        assert_eq!(
            value["transaction"],
            json!({"id": "42:99", "total_order": 3, "data_collection_order": 1})
        );
        assert_eq!(t.key_of(&after).unwrap(), br#"{"id":7}"#);
    }
}
