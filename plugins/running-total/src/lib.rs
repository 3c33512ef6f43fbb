//! A per-key running count and sum of one numeric field: each record becomes the updated
//! totals of its key, like a Kafka Streams `groupByKey().aggregate()`.
//!
//! ```json
//! {"field": "/amount"}
//! ```
//! emits, with the record's key, headers and timestamp, `{"count": 3, "sum": 42}`; with
//! `"into": "/totals"` it emits the record itself with the totals put there instead, so each
//! output still says which input it came from. The sum stays
//! an exact integer while every value is one, and becomes a float after the first that is not.
//! A record without a number at `field` is an error for that record (the totals are left
//! alone); a tombstone forgets the key's totals and passes through.

use weir_sdk::{json::Pointer, prelude::*};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The number to add up.
    field: Pointer,
    /// Where in the record to put the totals, instead of replacing the record.
    #[serde(default)]
    into: Option<Pointer>,
}

/// What the host keeps per key.
#[derive(Default, Serialize, Deserialize)]
struct Totals {
    count: u64,
    sum: Sum,
}

#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(untagged)]
enum Sum {
    Int(i64),
    Float(f64),
}

impl Default for Sum {
    fn default() -> Self {
        Sum::Int(0)
    }
}

impl Sum {
    fn add(self, n: &serde_json::Number) -> Sum {
        match (self, n.as_i64()) {
            (Sum::Int(s), Some(i)) => match s.checked_add(i) {
                Some(sum) => Sum::Int(sum),
                None => Sum::Float(s as f64 + i as f64),
            },
            (Sum::Int(s), None) => Sum::Float(s as f64 + n.as_f64().unwrap_or(0.0)),
            (Sum::Float(s), _) => Sum::Float(s + n.as_f64().unwrap_or(0.0)),
        }
    }
}

#[transform]
fn running_total(rec: &Record, cfg: &Config, state: &State) -> Result<Record> {
    if rec.value.is_none() {
        state.delete("totals");
        return Ok(rec.clone());
    }
    let value: Value = rec.json()?;
    let Some(Value::Number(n)) = cfg.field.get(&value) else {
        fail!("no number at {}", cfg.field);
    };
    let mut totals: Totals = state.get("totals")?.unwrap_or_default();
    totals.count += 1;
    totals.sum = totals.sum.add(n);
    state.put("totals", &totals)?;
    match &cfg.into {
        None => rec.clone().with_json(&totals),
        Some(pointer) => {
            let mut value = value;
            put_at(&mut value, pointer, serde_json::to_value(&totals)?)?;
            rec.clone().with_json(&value)
        }
    }
}

/// Put `new` at `pointer` in `value`, creating missing parent objects.
fn put_at(value: &mut Value, pointer: &Pointer, new: Value) -> Result<()> {
    let mut at = value;
    let last = pointer.tokens().len() - 1;
    for (i, part) in pointer.tokens().enumerate() {
        let Value::Object(map) = at else {
            fail!("cannot put totals at {pointer}: a parent is not an object");
        };
        if i == last {
            map.insert(part.to_string(), new);
            return Ok(());
        }
        at = map.entry(part).or_insert_with(|| json!({}));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use weir_sdk::prelude::*;

    fn order(key: &str, amount: Value) -> Record {
        Record::from_json(&json!({ "amount": amount }))
            .unwrap()
            .with_key(key)
    }

    #[test]
    fn totals_are_kept_per_key() {
        let p = weir_sdk::harness!(json!({ "field": "/amount" })).unwrap();
        let totals = |r: Record| p.transform(r).unwrap()[0].json::<Value>().unwrap();
        assert_eq!(totals(order("a", json!(5))), json!({"count": 1, "sum": 5}));
        assert_eq!(totals(order("b", json!(7))), json!({"count": 1, "sum": 7}));
        assert_eq!(
            totals(order("a", json!(10))),
            json!({"count": 2, "sum": 15})
        );
        assert_eq!(
            totals(order("a", json!(0.5))),
            json!({"count": 3, "sum": 15.5})
        );
    }

    #[test]
    fn a_record_without_the_field_fails_and_changes_nothing() {
        let p = weir_sdk::harness!(json!({ "field": "/amount" })).unwrap();
        p.transform(order("a", json!(1))).unwrap();
        let err = p
            .transform(
                Record::from_json(&json!({"price": 3}))
                    .unwrap()
                    .with_key("a"),
            )
            .unwrap_err();
        assert_eq!(err.message(), "no number at /amount");
        let next = p.transform(order("a", json!(2))).unwrap();
        assert_eq!(
            next[0].json::<Value>().unwrap(),
            json!({"count": 2, "sum": 3})
        );
    }

    #[test]
    fn totals_can_be_put_into_the_record() {
        let p = weir_sdk::harness!(json!({ "field": "/amount", "into": "/totals" })).unwrap();
        let out = p.transform(order("a", json!(5))).unwrap();
        assert_eq!(
            out[0].json::<Value>().unwrap(),
            json!({"amount": 5, "totals": {"count": 1, "sum": 5}})
        );
    }

    #[test]
    fn a_tombstone_resets_the_key() {
        let p = weir_sdk::harness!(json!({ "field": "/amount" })).unwrap();
        p.transform(order("a", json!(4))).unwrap();
        let gone = p.transform(order("a", json!(0)).without_value()).unwrap();
        assert_eq!(gone[0].value, None);
        let next = p.transform(order("a", json!(1))).unwrap();
        assert_eq!(
            next[0].json::<Value>().unwrap(),
            json!({"count": 1, "sum": 1})
        );
    }

    #[test]
    fn pointers_that_are_not_pointers_are_refused_at_load() {
        for cfg in [
            json!({ "field": "amount" }),
            json!({ "field": "/amount", "into": "totals" }),
        ] {
            let err = weir_sdk::harness!(cfg.clone()).err().unwrap();
            assert!(
                err.message().contains("is not a JSON pointer"),
                "{cfg}: {err}"
            );
        }
    }

    #[test]
    fn totals_go_into_nested_and_escaped_places() {
        let p = weir_sdk::harness!(json!({ "field": "/amount", "into": "/t/a~1b" })).unwrap();
        let out = p.transform(order("a", json!(2))).unwrap();
        assert_eq!(
            out[0].json::<Value>().unwrap(),
            json!({"amount": 2, "t": {"a/b": {"count": 1, "sum": 2}}})
        );
    }
}
