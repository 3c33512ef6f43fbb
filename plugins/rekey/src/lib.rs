//! Set each record's key from a field of its JSON value, as Kafka Streams' `selectKey` does:
//! records with the same value there go to the same partition and share keyed state downstream
//! (a running total per customer of orders keyed by order id, say).
//!
//! ```json
//! {"field": "/customer"}
//! ```
//! A string becomes the key as it is; any other JSON value (a number, an object) its JSON text.
//! A record without a value at `field` is an error for that record; a tombstone (no value) has
//! no field to read and passes unchanged.

use weir_sdk::{json::Pointer, prelude::*};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Where the new key is.
    field: Pointer,
}

#[transform]
fn rekey(rec: Record, cfg: &Config) -> Result<Record> {
    if rec.value.is_none() {
        return Ok(rec);
    }
    let value: Value = rec.json()?;
    let key = match cfg.field.get(&value) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => fail!("no key at {}", cfg.field),
        Some(other) => serde_json::to_string(other)?,
    };
    Ok(rec.with_key(key))
}

#[cfg(test)]
mod tests {
    use weir_sdk::prelude::*;

    type Harness = weir_sdk::testing::Harness<crate::__WeirPlugin>;

    fn one(p: &Harness, rec: Record) -> Record {
        let mut out = p.transform(rec).unwrap();
        assert_eq!(out.len(), 1, "{out:?}");
        out.remove(0)
    }

    #[test]
    fn the_key_comes_from_the_field_and_the_rest_stays() {
        let p = weir_sdk::harness!(json!({"field": "/customer"})).unwrap();
        let rec = Record::from_json(&json!({"id": 7, "customer": "alice", "amount": 3}))
            .unwrap()
            .with_key(r#"{"id":7}"#)
            .with_header("h", "v")
            .with_timestamp(42);
        let out = one(&p, rec.clone());
        assert_eq!(out.key_str().unwrap(), Some("alice"));
        assert_eq!(out.value, rec.value);
        assert_eq!(out.header("h"), Some(&b"v"[..]));
        assert_eq!(out.timestamp, 42);
    }

    #[test]
    fn other_values_become_their_json_text() {
        let p = weir_sdk::harness!(json!({"field": "/who"})).unwrap();
        let out = one(&p, Record::from_json(&json!({"who": {"id": 1}})).unwrap());
        assert_eq!(out.key_str().unwrap(), Some(r#"{"id":1}"#));
        let out = one(&p, Record::from_json(&json!({"who": 12})).unwrap());
        assert_eq!(out.key_str().unwrap(), Some("12"));
    }

    #[test]
    fn a_missing_field_is_an_error_and_tombstones_pass() {
        let p = weir_sdk::harness!(json!({"field": "/customer"})).unwrap();
        let err = p
            .transform(Record::from_json(&json!({"id": 7})).unwrap())
            .unwrap_err();
        assert!(err.message().contains("no key at /customer"), "{err}");
        let tomb = Record::tombstone(Some(b"k".to_vec()));
        assert_eq!(p.transform(tomb.clone()).unwrap(), vec![tomb]);
    }
}
