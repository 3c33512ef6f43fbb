//! Unwrap Debezium change events to the row state after the change, like Debezium's
//! `ExtractNewRecordState` SMT.
//!
//! ```json
//! {"delete": "rewrite", "add_fields": ["op", "table", "source.ts_ms"], "drop_tombstones": true}
//! ```
//! Events may come with or without the JSON converter's `{"schema": …, "payload": …}` wrapper;
//! the output is the plain row. Ops `c`, `u` and `r` give `after`; a truncate (`t`) has no row
//! and gives nothing. A delete (`d`) gives, per `delete`: `tombstone` (default: a record with the
//! same key and no value), `drop` (nothing) or `rewrite` (`before` with `"__deleted": "true"`; in
//! this mode every other row gets `"__deleted": "false"`).
//!
//! `add_fields` (default none) copies envelope fields into the row as `__<name>` with dots
//! replaced by `_`, resolving a name as Debezium's `add.fields` does: a name with dots is a path
//! from the envelope (`source.ts_ms`); `op`, `ts_ms`, `ts_us` and `ts_ns` come from the envelope;
//! `id`, `total_order` and `data_collection_order` from `transaction`; any other name from
//! `source` (`table`, `lsn`, `db`), falling back to a field at the top of the envelope. A name
//! the event has nowhere is left out.
//!
//! A Debezium tombstone (a record without a value, or a JSON `null` payload) passes through
//! unchanged, or is dropped if `drop_tombstones` (default `false`) is set. So does anything else
//! that is JSON but not a change event (no `op`): heartbeats, schema-change events.

use serde_json::Map;
use weir_sdk::prelude::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    delete: Delete,
    #[serde(default)]
    add_fields: Vec<AddField>,
    #[serde(default)]
    drop_tombstones: bool,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Delete {
    #[default]
    Tombstone,
    Drop,
    Rewrite,
}

/// One `add_fields` entry, resolved when the config is loaded.
#[derive(Deserialize)]
#[serde(try_from = "String")]
struct AddField {
    /// The field added to the row: `__` + the name with dots replaced by `_`.
    column: String,
    /// The name split at dots: one segment is looked up in the envelope then in `source`; more
    /// are a path from the envelope.
    path: Vec<String>,
}

impl TryFrom<String> for AddField {
    type Error = String;

    fn try_from(name: String) -> std::result::Result<Self, String> {
        let path: Vec<String> = name.split('.').map(str::to_string).collect();
        if path.iter().any(String::is_empty) {
            return Err(format!(
                "add_fields entry `{name}` is not a field name or dotted path"
            ));
        }
        Ok(AddField {
            column: format!("__{}", name.replace('.', "_")),
            path,
        })
    }
}

impl AddField {
    /// The field's value in the envelope, if it has one.
    fn find<'a>(&self, envelope: &'a Map<String, Value>) -> Option<&'a Value> {
        let within = |block: &str, name: &str| envelope.get(block)?.get(name);
        match self.path.as_slice() {
            [name] => match name.as_str() {
                "op" | "ts_ms" | "ts_us" | "ts_ns" => envelope.get(name),
                "id" | "total_order" | "data_collection_order" => within("transaction", name),
                _ => within("source", name).or_else(|| envelope.get(name)),
            },
            [first, rest @ ..] => rest
                .iter()
                .try_fold(envelope.get(first)?, |v, name| v.get(name)),
            [] => None,
        }
    }
}

/// Take the row `field` (`before` or `after`) out of the envelope; it must be an object.
fn take_row(
    envelope: &mut Map<String, Value>,
    field: &str,
    op: &str,
) -> Result<Map<String, Value>> {
    match envelope.remove(field) {
        Some(Value::Object(row)) => Ok(row),
        None | Some(Value::Null) => fail!("`{op}` event has no `{field}` row"),
        Some(_) => fail!("`{field}` of the `{op}` event is not an object"),
    }
}

#[transform]
fn cdc_unwrap(rec: &Record, cfg: &Config) -> Result<Option<Record>> {
    let tombstone = || (!cfg.drop_tombstones).then(|| rec.clone());
    if rec.value.is_none() {
        return Ok(tombstone());
    }
    let mut doc: Value = rec.json()?;
    // With the JSON converter's schemas enabled, the envelope is the `payload`.
    if let Value::Object(wrapper) = &mut doc {
        if !wrapper.contains_key("op") && wrapper.contains_key("payload") {
            doc = wrapper.remove("payload").unwrap_or(Value::Null);
        }
    }
    let mut envelope = match doc {
        Value::Object(envelope) => envelope,
        Value::Null => return Ok(tombstone()),
        // Not a change event: passed on as it is, as Debezium's SMT does.
        _ => return Ok(Some(rec.clone())),
    };
    let op = match envelope.get("op") {
        Some(Value::String(op)) => op.clone(),
        Some(_) => fail!("`op` of the change event is not a string"),
        // A heartbeat, a schema change: not a row change, passed on as it is.
        None => return Ok(Some(rec.clone())),
    };
    let rewrite = cfg.delete == Delete::Rewrite;
    let (mut row, deleted) = match op.as_str() {
        "c" | "u" | "r" => (take_row(&mut envelope, "after", &op)?, "false"),
        "d" => match cfg.delete {
            Delete::Tombstone => return Ok(Some(rec.clone().without_value())),
            Delete::Drop => return Ok(None),
            Delete::Rewrite => (take_row(&mut envelope, "before", &op)?, "true"),
        },
        "t" => return Ok(None),
        other => fail!("unknown change event op `{other}` (expected c, u, r, d or t)"),
    };
    if rewrite {
        row.insert("__deleted".to_string(), Value::from(deleted));
    }
    for field in &cfg.add_fields {
        if let Some(value) = field.find(&envelope) {
            row.insert(field.column.clone(), value.clone());
        }
    }
    Ok(Some(rec.clone().with_json(&row)?))
}

#[cfg(test)]
mod tests {
    use weir_sdk::prelude::*;

    type Harness = weir_sdk::testing::Harness<crate::__WeirPlugin>;

    /// A Debezium Postgres source block for `inventory.public.customers`.
    fn source(snapshot: &str) -> Value {
        json!({
            "version": "2.7.3.Final",
            "connector": "postgresql",
            "name": "inventory",
            "ts_ms": 1_700_000_000_123_i64,
            "snapshot": snapshot,
            "db": "inventory",
            "sequence": "[\"24023128\",\"24023128\"]",
            "schema": "public",
            "table": "customers",
            "txId": 555,
            "lsn": 24023128,
            "xmin": null
        })
    }

    /// A Debezium change event value without the schema wrapper.
    fn event(op: &str, before: Value, after: Value) -> Value {
        let snapshot = if op == "r" { "true" } else { "false" };
        json!({
            "before": before,
            "after": after,
            "source": source(snapshot),
            "op": op,
            "ts_ms": 1_700_000_000_456_i64,
            "transaction": null
        })
    }

    /// The same event as the JSON converter writes it with `schemas.enable=true`.
    fn wrapped(payload: Value) -> Value {
        json!({
            "schema": {
                "type": "struct",
                "name": "inventory.public.customers.Envelope",
                "optional": false,
                "version": 2,
                "fields": [
                    {"type": "struct", "optional": true, "field": "before", "name": "inventory.public.customers.Value",
                     "fields": [{"type": "int32", "optional": false, "field": "id"},
                                {"type": "string", "optional": false, "field": "email"}]},
                    {"type": "struct", "optional": true, "field": "after", "name": "inventory.public.customers.Value",
                     "fields": [{"type": "int32", "optional": false, "field": "id"},
                                {"type": "string", "optional": false, "field": "email"}]},
                    {"type": "struct", "optional": false, "field": "source", "name": "io.debezium.connector.postgresql.Source", "fields": []},
                    {"type": "string", "optional": false, "field": "op"},
                    {"type": "int64", "optional": true, "field": "ts_ms"}
                ]
            },
            "payload": payload
        })
    }

    fn row(id: i64, email: &str) -> Value {
        json!({"id": id, "first_name": "Sally", "last_name": "Thomas", "email": email})
    }

    fn input(v: Value) -> Record {
        Record::from_json(&v)
            .unwrap()
            .with_key(r#"{"id":1001}"#)
            .with_header("source", "pg")
            .with_timestamp(1_700_000_000_999)
    }

    fn one(p: &Harness, rec: Record) -> Record {
        let mut out = p.transform(rec).unwrap();
        assert_eq!(out.len(), 1, "{out:?}");
        out.remove(0)
    }

    fn value(r: &Record) -> Value {
        r.json().unwrap()
    }

    fn insert() -> Value {
        event("c", Value::Null, row(1001, "sally@example.com"))
    }

    fn update() -> Value {
        event(
            "u",
            row(1001, "sally@example.com"),
            row(1001, "sally.t@example.com"),
        )
    }

    fn delete() -> Value {
        event("d", row(1001, "sally.t@example.com"), Value::Null)
    }

    #[test]
    fn create_update_and_snapshot_read_give_after() {
        let p = weir_sdk::harness!().unwrap();
        assert_eq!(
            value(&one(&p, input(insert()))),
            row(1001, "sally@example.com")
        );
        assert_eq!(
            value(&one(&p, input(update()))),
            row(1001, "sally.t@example.com")
        );
        let read = event("r", Value::Null, row(1002, "george@example.com"));
        assert_eq!(
            value(&one(&p, input(read))),
            row(1002, "george@example.com")
        );
    }

    #[test]
    fn schema_wrapper_is_unwrapped() {
        let p = weir_sdk::harness!(json!({"add_fields": ["op", "table"]})).unwrap();
        let out = one(&p, input(wrapped(update())));
        let mut want = row(1001, "sally.t@example.com");
        want["__op"] = json!("u");
        want["__table"] = json!("customers");
        assert_eq!(value(&out), want);
    }

    #[test]
    fn output_keeps_key_headers_and_timestamp() {
        let p = weir_sdk::harness!().unwrap();
        let out = one(&p, input(insert()));
        assert_eq!(out.key_str().unwrap(), Some(r#"{"id":1001}"#));
        assert_eq!(out.header("source"), Some(&b"pg"[..]));
        assert_eq!(out.timestamp, 1_700_000_000_999);
    }

    #[test]
    fn delete_becomes_a_tombstone_by_default() {
        let p = weir_sdk::harness!(json!({"add_fields": ["op"]})).unwrap();
        for v in [delete(), wrapped(delete())] {
            let out = one(&p, input(v));
            assert_eq!(out.value, None);
            assert_eq!(out.key_str().unwrap(), Some(r#"{"id":1001}"#));
            assert_eq!(out.header("source"), Some(&b"pg"[..]));
            assert_eq!(out.timestamp, 1_700_000_000_999);
        }
    }

    #[test]
    fn delete_drop_gives_nothing() {
        let p = weir_sdk::harness!(json!({"delete": "drop"})).unwrap();
        assert!(p.transform(input(delete())).unwrap().is_empty());
        assert_eq!(p.transform(input(insert())).unwrap().len(), 1);
    }

    #[test]
    fn delete_rewrite_marks_every_row() {
        let p = weir_sdk::harness!(json!({"delete": "rewrite"})).unwrap();
        let mut deleted = row(1001, "sally.t@example.com");
        deleted["__deleted"] = json!("true");
        assert_eq!(value(&one(&p, input(delete()))), deleted);
        assert_eq!(value(&one(&p, input(wrapped(delete())))), deleted);

        let mut live = row(1001, "sally@example.com");
        live["__deleted"] = json!("false");
        assert_eq!(value(&one(&p, input(insert()))), live);
    }

    #[test]
    fn delete_rewrite_with_replica_identity_default() {
        // Without REPLICA IDENTITY FULL, Postgres deletes carry only the key columns in `before`.
        let p =
            weir_sdk::harness!(json!({"delete": "rewrite", "add_fields": ["op", "lsn"]})).unwrap();
        let before = json!({"id": 1001, "first_name": null, "last_name": null, "email": null});
        let out = one(&p, input(event("d", before, Value::Null)));
        assert_eq!(
            value(&out),
            json!({"id": 1001, "first_name": null, "last_name": null, "email": null,
                   "__deleted": "true", "__op": "d", "__lsn": 24023128})
        );
    }

    #[test]
    fn add_fields_from_envelope_source_and_paths() {
        let p = weir_sdk::harness!(json!({
            "add_fields": ["op", "table", "db", "schema", "lsn", "ts_ms", "source.ts_ms", "source.txId", "transaction.id", "nope"]
        }))
        .unwrap();
        let mut want = row(1001, "sally@example.com");
        let added = json!({
            "__op": "c",
            "__table": "customers",
            "__db": "inventory",
            "__schema": "public",
            "__lsn": 24023128,
            "__ts_ms": 1_700_000_000_456_i64,
            "__source_ts_ms": 1_700_000_000_123_i64,
            "__source_txId": 555,
        });
        want.as_object_mut()
            .unwrap()
            .extend(added.as_object().unwrap().clone());
        assert_eq!(value(&one(&p, input(insert()))), want);
        assert_eq!(value(&one(&p, input(wrapped(insert())))), want);
    }

    #[test]
    fn add_fields_resolve_names_as_debezium_does() {
        // `ts_ms` is in both the envelope and `source`: the envelope's; `snapshot` is in
        // `source` only; `id` and `total_order` come from `transaction`; `version` from
        // `source` before the top level; `extra` from the top level when `source` lacks it.
        let p = weir_sdk::harness!(json!({"add_fields": [
            "ts_ms", "snapshot", "source.snapshot", "id", "total_order", "version", "extra"
        ]}))
        .unwrap();
        let mut read = event("r", Value::Null, row(1, "a@b.c"));
        read["transaction"] =
            json!({"id": "571:53195832", "total_order": 3, "data_collection_order": 1});
        read["version"] = json!("top");
        read["extra"] = json!(42);
        let out = value(&one(&p, input(read)));
        assert_eq!(out["__ts_ms"], json!(1_700_000_000_456_i64));
        assert_eq!(out["__snapshot"], json!("true"));
        assert_eq!(out["__source_snapshot"], json!("true"));
        assert_eq!(out["__id"], json!("571:53195832"));
        assert_eq!(out["__total_order"], json!(3));
        assert_eq!(out["__version"], json!("2.7.3.Final"));
        assert_eq!(out["__extra"], json!(42));
        // Without a `transaction` block, its fields are left out, not null.
        let out = value(&one(&p, input(insert())));
        assert!(
            out.get("__id").is_none() && out.get("__total_order").is_none(),
            "{out}"
        );
    }

    #[test]
    fn events_that_are_not_row_changes_pass_unchanged() {
        let p = weir_sdk::harness!(json!({"delete": "rewrite", "add_fields": ["op"]})).unwrap();
        let heartbeat = json!({"ts_ms": 1_700_000_000_456_i64});
        let schema_change = json!({
            "source": source("false"), "ts_ms": 1, "databaseName": "inventory",
            "ddl": "ALTER TABLE customers ADD COLUMN age int", "tableChanges": []
        });
        for v in [
            heartbeat,
            schema_change,
            wrapped(json!({"ts_ms": 1})),
            json!([1, 2]),
            json!("text"),
        ] {
            let rec = input(v);
            assert_eq!(p.transform(rec.clone()).unwrap(), vec![rec]);
        }
    }

    #[test]
    fn tombstones_pass_through_or_are_dropped() {
        let tomb = Record::tombstone(Some(br#"{"id":1001}"#.to_vec())).with_timestamp(7);
        let keep = weir_sdk::harness!().unwrap();
        assert_eq!(keep.transform(tomb.clone()).unwrap(), vec![tomb.clone()]);
        let drop = weir_sdk::harness!(json!({"drop_tombstones": true})).unwrap();
        assert!(drop.transform(tomb).unwrap().is_empty());

        // A JSON `null`, bare or wrapped, is a tombstone too.
        for v in [Value::Null, json!({"schema": null, "payload": null})] {
            let rec = input(v);
            assert_eq!(keep.transform(rec.clone()).unwrap(), vec![rec.clone()]);
            assert!(drop.transform(rec).unwrap().is_empty());
        }
    }

    #[test]
    fn truncate_gives_nothing() {
        let p = weir_sdk::harness!().unwrap();
        let truncate =
            json!({"source": source("false"), "op": "t", "ts_ms": 1_700_000_000_456_i64});
        assert!(p.transform(input(truncate)).unwrap().is_empty());
    }

    #[test]
    fn bad_events_are_record_errors() {
        let p = weir_sdk::harness!(json!({"delete": "rewrite"})).unwrap();
        let err = |rec: Record| p.transform(rec).unwrap_err().message().to_string();
        assert!(err(Record::new("not json")).contains("not the expected JSON"));
        assert!(err(input(json!({"op": 1, "after": {}})))
            .contains("`op` of the change event is not a string"));
        assert_eq!(
            err(input(event("x", Value::Null, row(1, "a@b.c")))),
            "unknown change event op `x` (expected c, u, r, d or t)"
        );
        assert_eq!(
            err(input(event("c", Value::Null, Value::Null))),
            "`c` event has no `after` row"
        );
        assert_eq!(
            err(input(event("d", Value::Null, Value::Null))),
            "`d` event has no `before` row"
        );
        assert_eq!(
            err(input(event("u", Value::Null, json!("row")))),
            "`after` of the `u` event is not an object"
        );
    }

    #[test]
    fn bad_config_is_rejected() {
        for cfg in [
            json!({"delete": "none"}),
            json!({"add_fields": "op"}),
            json!({"add_fields": [""]}),
            json!({"add_fields": ["source..ts_ms"]}),
            json!({"add_fields": ["source."]}),
            json!({"drop_tombstones": "yes"}),
            json!({"delete.handling.mode": "rewrite"}),
        ] {
            let err = weir_sdk::harness!(cfg.clone())
                .err()
                .unwrap_or_else(|| panic!("{cfg} accepted"));
            assert!(err.message().contains("invalid plugin config"), "{err}");
        }
    }
}
