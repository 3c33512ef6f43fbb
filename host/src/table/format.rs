//! What one record of a table's topic does to the table.

use serde_json::Value;

use crate::config::TableFormat;

/// One record's effect on the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The row under `key` is now `row` (JSON).
    Upsert {
        key: Vec<u8>,
        row: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    /// Every row goes (a Debezium truncate).
    Truncate,
    /// Nothing: a record that is no row change (a Debezium heartbeat or schema change).
    None,
}

/// How a table reads its topic's records: the format, and where a row's key is.
pub struct Decoder {
    format: TableFormat,
    /// JSON pointer to the key in the row; none: the record key is the row's key.
    key: Option<String>,
}

impl Decoder {
    pub fn new(format: TableFormat, key: Option<String>) -> Decoder {
        Decoder { format, key }
    }

    /// The change a record with `key` and `value` (none: a tombstone) makes; `Err` says why it
    /// is no change this table can read.
    pub fn decode(&self, key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Change, String> {
        self.decode_at(key, value).map(|(change, _)| change)
    }

    /// [`Decoder::decode`], with when the change happened where the record says it: a
    /// Debezium event's commit time (`source.ts_ms`, else `ts_ms`); none for an upsert record,
    /// whose Kafka timestamp is its time.
    pub fn decode_at(
        &self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<(Change, Option<i64>), String> {
        let Some(value) = value else {
            return self
                .record_key(key)
                .map(|key| (Change::Delete { key }, None));
        };
        let doc: Value =
            serde_json::from_slice(value).map_err(|e| format!("the value is not JSON: {e}"))?;
        match self.format {
            TableFormat::Upsert => self.upsert(key, doc, value).map(|c| (c, None)),
            TableFormat::Debezium => self.debezium(key, doc),
        }
    }

    fn upsert(&self, key: Option<&[u8]>, doc: Value, value: &[u8]) -> Result<Change, String> {
        let key = match &self.key {
            Some(pointer) => row_key(&doc, pointer)?,
            None => self.record_key(key)?,
        };
        Ok(Change::Upsert {
            key,
            row: value.to_vec(),
        })
    }

    fn debezium(&self, key: Option<&[u8]>, doc: Value) -> Result<(Change, Option<i64>), String> {
        // With the JSON converter's schemas on, the envelope is the `payload`.
        let mut envelope = match doc {
            Value::Object(mut wrapper) if !wrapper.contains_key("op") => {
                match wrapper.remove("payload") {
                    Some(Value::Object(payload)) => payload,
                    _ => return Ok((Change::None, None)),
                }
            }
            Value::Object(envelope) => envelope,
            _ => return Err("the value is not a Debezium change event (a JSON object)".into()),
        };
        let Some(op) = envelope
            .get("op")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            // Heartbeats and schema changes carry no `op`: no row changes.
            return Ok((Change::None, None));
        };
        let at = envelope
            .get("source")
            .and_then(|s| s.get("ts_ms"))
            .or_else(|| envelope.get("ts_ms"))
            .and_then(Value::as_i64);
        let pointer = self.key.as_deref().unwrap_or_default();
        let change = match op.as_str() {
            "c" | "u" | "r" => match envelope.remove("after") {
                Some(row @ Value::Object(_)) => Ok(Change::Upsert {
                    key: row_key(&row, pointer)?,
                    row: serde_json::to_vec(&row).expect("a JSON value serialises"),
                }),
                _ => Err(format!("the `{op}` event has no `after` row")),
            },
            "d" => match envelope.get("before") {
                Some(row @ Value::Object(_)) => Ok(Change::Delete {
                    key: row_key(row, pointer)?,
                }),
                _ => self.record_key(key).map(|key| Change::Delete { key }),
            },
            "t" => Ok(Change::Truncate),
            other => Err(format!(
                "unknown change event op `{other}` (expected c, u, r, d or t)"
            )),
        };
        change.map(|c| (c, at))
    }

    /// The row key a record key names: a JSON string, number or boolean (as a JSON converter
    /// writes keys) is its text; with a key pointer, a JSON object (as Debezium writes keys:
    /// the key columns, perhaps under `payload`) holds the key at the pointer; anything else
    /// (bytes that are no JSON) is the key as it is.
    fn record_key(&self, key: Option<&[u8]>) -> Result<Vec<u8>, String> {
        let Some(key) = key else {
            return Err("a tombstone without a key: it names no row to delete".into());
        };
        let Ok(doc) = serde_json::from_slice::<Value>(key) else {
            return Ok(key.to_vec());
        };
        let pointer = self.key.as_deref().unwrap_or("");
        match &doc {
            // A JSON string, number or boolean (a JSON converter's key) is the key's text.
            Value::String(_) | Value::Number(_) | Value::Bool(_) => key_text(&doc, pointer),
            Value::Object(_) if !pointer.is_empty() => {
                let found = doc
                    .pointer(pointer)
                    .or_else(|| doc.get("payload").and_then(|p| p.pointer(pointer)));
                match found {
                    Some(v) => key_text(v, pointer),
                    None => Err(format!(
                        "the record key {doc} has no `{pointer}`: it names no row to delete"
                    )),
                }
            }
            _ => Ok(key.to_vec()),
        }
    }
}

/// What Debezium writes for a column it did not read: an unchanged TOAST column (a large
/// value stored apart) of a table without `REPLICA IDENTITY FULL`, in an update's `after`.
const UNAVAILABLE: &str = "__debezium_unavailable_value";

/// `row` with each top-level column Debezium marked unavailable taken from `previous`, the row
/// as the table had it (Debezium's own advice: the column did not change); `None` when `row`
/// has no such column. Without a previous value the marker stays: nothing better is known.
pub fn fill_unavailable(row: &[u8], previous: Option<&[u8]>) -> Option<Vec<u8>> {
    let marker = UNAVAILABLE.as_bytes();
    if !row.windows(marker.len()).any(|w| w == marker) {
        return None;
    }
    let Ok(Value::Object(mut new)) = serde_json::from_slice::<Value>(row) else {
        return None;
    };
    let old = previous.and_then(|p| match serde_json::from_slice::<Value>(p) {
        Ok(Value::Object(old)) => Some(old),
        _ => None,
    });
    for (column, value) in new.iter_mut() {
        if value.as_str() == Some(UNAVAILABLE) {
            if let Some(before) = old.as_ref().and_then(|o| o.get(column)) {
                value.clone_from(before);
            }
        }
    }
    serde_json::to_vec(&new).ok()
}

/// The text of a Kafka record key as a pointer into a value finds it: a JSON string, number or
/// boolean (as a JSON converter writes keys) is its text; anything else is the key as it is.
pub fn kafka_key_text(key: &[u8]) -> Vec<u8> {
    match serde_json::from_slice::<Value>(key) {
        Ok(doc @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) => {
            key_text(&doc, "").unwrap_or_else(|_| key.to_vec())
        }
        _ => key.to_vec(),
    }
}

/// The key of `row`: the text of the value at `pointer`.
fn row_key(row: &Value, pointer: &str) -> Result<Vec<u8>, String> {
    match row.pointer(pointer) {
        Some(v) => key_text(v, pointer),
        None => Err(format!("the row has no key at `{pointer}`")),
    }
}

/// A key's bytes: a string's characters, a number's or boolean's JSON text. Plugins look rows
/// up by the same text (`tables.get("customers", "42")`).
pub fn key_text(value: &Value, pointer: &str) -> Result<Vec<u8>, String> {
    match value {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        Value::Number(_) | Value::Bool(_) => Ok(value.to_string().into_bytes()),
        Value::Null => Err(format!("the key at `{pointer}` is null")),
        other => Err(format!(
            "the key at `{pointer}` is {other}, not a string, number or boolean"
        )),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn a_column_debezium_could_not_read_keeps_the_tables_value() {
        let old = br#"{"id":1,"bio":"long text","n":1}"#;
        let new = br#"{"id":1,"bio":"__debezium_unavailable_value","n":2}"#;
        let filled = fill_unavailable(new, Some(old)).unwrap();
        let filled: Value = serde_json::from_slice(&filled).unwrap();
        assert_eq!(
            filled,
            serde_json::json!({"id": 1, "bio": "long text", "n": 2})
        );
        assert_eq!(fill_unavailable(old, None), None, "nothing to fill");
        let alone = fill_unavailable(new, None).unwrap();
        assert!(String::from_utf8(alone).unwrap().contains(UNAVAILABLE));
    }

    /// A change that makes `row` the row under `key`.
    pub(in crate::table) fn upsert(key: &str, row: &str) -> Change {
        Change::Upsert {
            key: key.into(),
            row: row.into(),
        }
    }

    fn delete(key: &str) -> Change {
        Change::Delete { key: key.into() }
    }

    #[test]
    fn upsert_topics_key_rows_by_pointer_or_record_key() {
        let by_field = Decoder::new(TableFormat::Upsert, Some("/id".into()));
        let row = r#"{"id":42,"country":"DE"}"#;
        assert_eq!(
            by_field.decode(Some(b"ignored"), Some(row.as_bytes())),
            Ok(upsert("42", row))
        );
        // A tombstone's key is JSON (the pointer finds the key) or the key itself.
        assert_eq!(
            by_field.decode(Some(br#"{"id":42}"#), None),
            Ok(delete("42"))
        );
        assert_eq!(by_field.decode(Some(b"42"), None), Ok(delete("42")));
        assert_eq!(by_field.decode(Some(br#""c-1""#), None), Ok(delete("c-1")));
        assert_eq!(by_field.decode(Some(b"c-1"), None), Ok(delete("c-1")));
        let by_record_key = Decoder::new(TableFormat::Upsert, None);
        assert_eq!(
            by_record_key.decode(Some(b"c-1"), Some(row.as_bytes())),
            Ok(upsert("c-1", row))
        );
        // A JSON converter's string key is its text, as a pointer's string value is.
        assert_eq!(
            by_record_key.decode(Some(br#""c-1""#), Some(row.as_bytes())),
            Ok(upsert("c-1", row))
        );
        assert_eq!(by_record_key.decode(Some(b"7"), None), Ok(delete("7")));
        let no_key = by_field.decode(Some(b"k"), Some(br#"{"name":"x"}"#));
        assert_eq!(no_key, Err("the row has no key at `/id`".into()));
        assert!(by_field
            .decode(None, None)
            .unwrap_err()
            .contains("without a key"));
        assert!(by_field
            .decode(None, Some(b"{oops"))
            .unwrap_err()
            .contains("not JSON"));
    }

    #[test]
    fn debezium_events_upsert_after_delete_before_and_truncate() {
        let d = Decoder::new(TableFormat::Debezium, Some("/id".into()));
        let create = br#"{"before":null,"after":{"id":"c1","country":"DE"},"op":"c"}"#;
        assert_eq!(
            d.decode(Some(br#"{"id":"c1"}"#), Some(create)),
            Ok(upsert("c1", r#"{"id":"c1","country":"DE"}"#))
        );
        let wrapped = br#"{"schema":{},"payload":{"after":{"id":7},"op":"u"}}"#;
        assert_eq!(
            d.decode(None, Some(wrapped)),
            Ok(upsert("7", r#"{"id":7}"#))
        );
        let del = br#"{"before":{"id":"c1"},"after":null,"op":"d"}"#;
        assert_eq!(d.decode(None, Some(del)), Ok(delete("c1")));
        // REPLICA IDENTITY DEFAULT without a `before`: the record key names the row.
        let bare = br#"{"before":null,"after":null,"op":"d"}"#;
        let schema_key = br#"{"schema":{},"payload":{"id":"c1"}}"#;
        assert_eq!(d.decode(Some(schema_key), Some(bare)), Ok(delete("c1")));
        assert_eq!(d.decode(Some(br#"{"id":"c1"}"#), None), Ok(delete("c1")));
        assert_eq!(d.decode(None, Some(br#"{"op":"t"}"#)), Ok(Change::Truncate));
        // When it happened: the commit time, else the event's own time.
        let at = |value: &[u8]| d.decode_at(None, Some(value)).unwrap().1;
        assert_eq!(
            at(br#"{"op":"u","after":{"id":1},"source":{"ts_ms":5},"ts_ms":9}"#),
            Some(5)
        );
        assert_eq!(at(br#"{"op":"d","before":{"id":1},"ts_ms":9}"#), Some(9));
        assert_eq!(at(br#"{"op":"c","after":{"id":1}}"#), None);
        assert_eq!(
            d.decode(None, Some(br#"{"ts_ms":1}"#)),
            Ok(Change::None),
            "a heartbeat"
        );
        assert!(d
            .decode(None, Some(br#"{"op":"u","after":null}"#))
            .unwrap_err()
            .contains("no `after` row"));
        assert!(d
            .decode(None, Some(br#"{"op":"x"}"#))
            .unwrap_err()
            .contains("unknown change event op `x`"));
        assert!(d
            .decode(None, Some(br#"{"op":"c","after":{"id":null}}"#))
            .unwrap_err()
            .contains("is null"));
    }
}
