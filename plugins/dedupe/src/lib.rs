//! Drop duplicates: a record whose key, or whose value at a JSON pointer, was already seen
//! within a time to live (in event time) is dropped; the first one passes.
//!
//! ```json
//! {"ttl_ms": 3600000}                      // by record key
//! {"ttl_ms": 3600000, "field": "/event_id"} // by a field, among records of the same key
//! ```
//! The host keeps state per record key, so deduplicating by a field finds duplicates among
//! records of one key: key the topic by what identifies a duplicate (as Debezium keys by primary
//! key) for a global check. The time to live runs from the first sighting, which a duplicate
//! does not extend. A record without the field passes (there is nothing to compare).

use weir_sdk::{json::Pointer, prelude::*};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// How long a sighting is remembered, in milliseconds of event time.
    ttl_ms: u64,
    /// What identifies a duplicate; the record key when absent.
    #[serde(default)]
    field: Option<Pointer>,
}

#[filter]
fn dedupe(rec: &Record, cfg: &Config, state: &State) -> Result<bool> {
    let name = match &cfg.field {
        None => "seen".to_string(),
        Some(pointer) => {
            let value: Value = rec.json()?;
            match pointer.get(&value) {
                None | Some(Value::Null) => return Ok(true),
                Some(id) => format!("seen:{id}"),
            }
        }
    };
    if state.get_bytes(&name).is_some() {
        return Ok(false);
    }
    state.put_with_ttl(&name, &rec.timestamp, cfg.ttl_ms)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use weir_sdk::prelude::*;

    fn at(key: &str, ts: i64, value: Value) -> Record {
        let mut r = Record::from_json(&value).unwrap().with_key(key);
        r.timestamp = ts;
        r
    }

    #[test]
    fn a_key_seen_within_the_ttl_is_dropped() {
        let p = weir_sdk::harness!(json!({ "ttl_ms": 1000 })).unwrap();
        assert!(p.filter(at("a", 0, json!({}))).unwrap());
        assert!(
            !p.filter(at("a", 999, json!({}))).unwrap(),
            "within the TTL"
        );
        assert!(p.filter(at("b", 500, json!({}))).unwrap(), "another key");
        assert!(
            p.filter(at("a", 1000, json!({}))).unwrap(),
            "the TTL has passed"
        );
    }

    #[test]
    fn a_field_identifies_duplicates_within_a_key() {
        let p = weir_sdk::harness!(json!({ "ttl_ms": 1000, "field": "/id" })).unwrap();
        assert!(p.filter(at("k", 0, json!({"id": 1}))).unwrap());
        assert!(p.filter(at("k", 1, json!({"id": 2}))).unwrap());
        assert!(!p.filter(at("k", 2, json!({"id": 1}))).unwrap());
        assert!(
            p.filter(at("k", 3, json!({"other": 1}))).unwrap(),
            "no field: passes"
        );
        assert!(
            p.filter(at("j", 4, json!({"id": 1}))).unwrap(),
            "another key"
        );
    }

    #[test]
    fn a_field_that_is_not_a_pointer_is_refused_at_load() {
        let err = weir_sdk::harness!(json!({ "ttl_ms": 1000, "field": "id" }))
            .err()
            .unwrap();
        assert!(
            err.message().contains("field `id` is not a JSON pointer"),
            "{err}"
        );
    }
}
