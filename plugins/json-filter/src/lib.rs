//! Keep records whose JSON value matches conditions on JSON pointers.
//!
//! ```json
//! {"where": [{"path": "/amount", "op": "gt", "value": 100}], "match": "all"}
//! ```
//! Ops: `eq ne gt ge lt le exists regex in`. `match` is `all` (default) or `any`.
//!
//! A tombstone (a record without a value: a delete of its key, in a compacted topic or from
//! change data capture) has no fields to test. It is kept by default, so a delete reaches the
//! topics downstream as the row's earlier versions did; `"tombstones": "drop"` drops them.

use regex::Regex;
use weir_sdk::{json::Pointer, prelude::*};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(rename = "where")]
    conditions: Vec<Condition>,
    #[serde(rename = "match", default)]
    mode: Match,
    #[serde(default)]
    tombstones: Tombstones,
}

/// What becomes of a record without a value.
#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Tombstones {
    #[default]
    Keep,
    Drop,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Match {
    #[default]
    All,
    Any,
}

#[derive(Deserialize)]
#[serde(try_from = "RawCondition")]
struct Condition {
    path: Pointer,
    test: Test,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    path: String,
    op: String,
    #[serde(default)]
    value: Option<Value>,
}

enum Test {
    Eq(Value),
    Ne(Value),
    Cmp(std::cmp::Ordering, bool, Value),
    Exists,
    Regex(Regex),
    In(Vec<Value>),
}

impl TryFrom<RawCondition> for Condition {
    type Error = String;

    fn try_from(raw: RawCondition) -> std::result::Result<Self, String> {
        use std::cmp::Ordering::{Greater, Less};
        // `""`, the whole value, is a path here too: a condition on a record that is a scalar.
        let path = match raw.path.as_str() {
            "" => Pointer::root(),
            text => text.parse().map_err(|_| {
                format!("path `{text}` is not a JSON pointer (it must start with `/`)")
            })?,
        };
        let value = || {
            raw.value
                .clone()
                .ok_or_else(|| format!("op `{}` on `{}` needs a `value`", raw.op, raw.path))
        };
        let test = match raw.op.as_str() {
            "eq" => Test::Eq(value()?),
            "ne" => Test::Ne(value()?),
            "gt" => Test::Cmp(Greater, false, value()?),
            "ge" => Test::Cmp(Greater, true, value()?),
            "lt" => Test::Cmp(Less, false, value()?),
            "le" => Test::Cmp(Less, true, value()?),
            "exists" => Test::Exists,
            "regex" => match value()? {
                Value::String(re) => Test::Regex(
                    Regex::new(&re).map_err(|e| format!("bad regex on `{}`: {e}", raw.path))?,
                ),
                _ => return Err(format!("op `regex` on `{}` needs a string value", raw.path)),
            },
            "in" => match value()? {
                Value::Array(items) => Test::In(items),
                _ => return Err(format!("op `in` on `{}` needs an array value", raw.path)),
            },
            other => {
                return Err(format!(
                    "unknown op `{other}` (expected eq ne gt ge lt le exists regex in)"
                ))
            }
        };
        Ok(Condition { path, test })
    }
}

impl Condition {
    fn holds(&self, doc: &JsonDoc) -> bool {
        let Some(found) = doc.get(&self.path) else {
            return false;
        };
        let found = &found;
        match &self.test {
            Test::Exists => true,
            Test::Eq(v) => same(found, v),
            Test::Ne(v) => !same(found, v),
            Test::Cmp(want, or_equal, v) => {
                compare(found, v).is_some_and(|o| o == *want || (*or_equal && o.is_eq()))
            }
            Test::Regex(re) => found.as_str().is_some_and(|s| re.is_match(s)),
            Test::In(items) => items.iter().any(|v| same(found, v)),
        }
    }
}

/// Equality where `1` and `1.0` are the same number.
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Numbers compare as numbers, strings as strings; anything else does not compare.
fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

#[filter]
fn json_filter(rec: &Record, cfg: &Config) -> Result<bool> {
    if rec.value.is_none() {
        return Ok(cfg.tombstones == Tombstones::Keep);
    }
    // Only the fields the conditions name are parsed, and only until the verdict is known.
    let doc = rec.json_doc()?;
    let mut results = cfg.conditions.iter().map(|c| c.holds(&doc));
    Ok(match cfg.mode {
        Match::All => results.all(|ok| ok),
        Match::Any => results.any(|ok| ok),
    })
}

#[cfg(test)]
mod tests {
    use weir_sdk::prelude::*;

    fn rec(v: Value) -> Record {
        Record::from_json(&v).unwrap()
    }

    #[test]
    fn tombstones_are_kept_unless_dropped() {
        let filter = |extra: Value| {
            let mut cfg = json!({"where": [{"path": "/amount", "op": "gt", "value": 100}]});
            cfg.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            weir_sdk::harness!(cfg).unwrap()
        };
        let tombstone = Record::tombstone(Some(b"order-7".to_vec()));
        assert!(filter(json!({})).filter(tombstone.clone()).unwrap());
        let dropping = filter(json!({"tombstones": "drop"}));
        assert!(!dropping.filter(tombstone).unwrap());
        assert!(dropping.filter(rec(json!({"amount": 150}))).unwrap());
    }

    #[test]
    fn gt_keeps_big_amounts() {
        let p =
            weir_sdk::harness!(json!({"where": [{"path": "/amount", "op": "gt", "value": 100}]}))
                .unwrap();
        assert!(p.filter(rec(json!({"amount": 150}))).unwrap());
        assert!(!p.filter(rec(json!({"amount": 100}))).unwrap());
        assert!(!p.filter(rec(json!({"other": 1}))).unwrap());
    }

    #[test]
    fn every_op() {
        let doc = json!({"a": 5, "s": "hello", "n": null, "nested": {"x": "eu"}});
        let check = |op: &str, path: &str, value: Value| {
            let p =
                weir_sdk::harness!(json!({"where": [{"path": path, "op": op, "value": value}]}))
                    .unwrap();
            p.filter(rec(doc.clone())).unwrap()
        };
        assert!(check("eq", "/a", json!(5.0)));
        assert!(check("ne", "/a", json!(6)));
        assert!(check("ge", "/a", json!(5)));
        assert!(!check("lt", "/a", json!(5)));
        assert!(check("le", "/a", json!(5)));
        assert!(check("gt", "/s", json!("abc")));
        assert!(check("exists", "/n", Value::Null));
        assert!(!check("exists", "/missing", Value::Null));
        assert!(check("regex", "/s", json!("^he.*o$")));
        assert!(check("in", "/nested/x", json!(["us", "eu"])));
        assert!(!check("in", "/nested/x", json!(["us"])));
    }

    #[test]
    fn any_and_all() {
        let conds =
            json!([{"path": "/a", "op": "eq", "value": 1}, {"path": "/b", "op": "eq", "value": 2}]);
        let all = weir_sdk::harness!(json!({"where": conds, "match": "all"})).unwrap();
        let any = weir_sdk::harness!(json!({"where": conds, "match": "any"})).unwrap();
        assert!(!all.filter(rec(json!({"a": 1, "b": 3}))).unwrap());
        assert!(any.filter(rec(json!({"a": 1, "b": 3}))).unwrap());
    }

    #[test]
    fn bad_config_is_rejected() {
        for cfg in [
            json!({"where": [{"path": "/a", "op": "between", "value": 1}]}),
            json!({"where": [{"path": "a", "op": "eq", "value": 1}]}),
            json!({"where": [{"path": "/a", "op": "gt"}]}),
            json!({"where": [{"path": "/a", "op": "regex", "value": "("}]}),
            json!({"where": [], "match": "some"}),
            json!({"wher": []}),
        ] {
            let err = weir_sdk::harness!(cfg.clone())
                .err()
                .unwrap_or_else(|| panic!("{cfg} accepted"));
            assert!(err.message().contains("invalid plugin config"), "{err}");
        }
    }

    #[test]
    fn non_json_value_is_a_record_error() {
        let p = weir_sdk::harness!(json!({"where": []})).unwrap();
        assert!(p.filter(Record::new("not json")).is_err());
    }
}
