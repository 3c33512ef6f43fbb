//! Add fields to JSON records: constants, rows of the pipeline's tables, lookups and derived
//! numbers.
//!
//! ```json
//! {
//!   "set": {"/pipeline": "weir"},
//!   "join": [{"table": "customers", "key": "/customer_id",
//!             "fields": {"/country": "/country"}, "missing": "keep"}],
//!   "lookup": [{"from": "/country", "into": "/region",
//!               "table": {"DE": "eu", "FR": "eu", "US": "na"}, "default": "other"}],
//!   "derive": [{"into": "/amount_cents", "from": "/amount", "multiply": 100}]
//! }
//! ```
//! All four keys are optional and run in this order, each seeing the fields the previous ones
//! wrote. `set` puts constants at JSON pointers. `join` looks up the row of a table the stage
//! is granted (`tables = ["customers"]`) under the value at `key`, and copies `fields` of it
//! (pointer in the row: pointer in the record) and, with `into`, the whole row; with no row,
//! `missing` says what happens: `keep` the record as it is (the default), `drop` it (an inner
//! join), or `fail` it. `lookup` maps the string (or number or boolean,
//! as its JSON text) at `from` through `table` into `into`; when `from` is missing or not in the
//! table it writes `default`, or nothing if there is none. `derive` writes `from * multiply` into
//! `into` (an integer when the product is one), and nothing when `from` is not a number.
//! Missing parent objects are created; a tombstone passes through unchanged.

use std::collections::{BTreeMap, HashMap};

use weir_sdk::{json::Pointer, prelude::*};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Constants by pointer; a `BTreeMap` applies them in a fixed order, parents first.
    #[serde(default)]
    set: BTreeMap<Pointer, Value>,
    #[serde(default)]
    join: Vec<Join>,
    #[serde(default)]
    lookup: Vec<Lookup>,
    #[serde(default)]
    derive: Vec<Derive>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Join {
    table: String,
    key: Pointer,
    /// Pointer in the row: pointer in the record.
    #[serde(default)]
    fields: BTreeMap<Pointer, Pointer>,
    into: Option<Pointer>,
    #[serde(default)]
    missing: Missing,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Missing {
    #[default]
    Keep,
    Drop,
    Fail,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Lookup {
    from: Pointer,
    into: Pointer,
    table: HashMap<String, Value>,
    /// `Some(Value::Null)` when the config says `"default": null`.
    #[serde(default, deserialize_with = "present")]
    default: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Derive {
    from: Pointer,
    into: Pointer,
    multiply: f64,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

impl Lookup {
    fn apply(&self, doc: &mut JsonDoc) -> Result<()> {
        let found = match doc.get(&self.from) {
            Some(Value::String(s)) => self.table.get(s.as_str()),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => self.table.get(&v.to_string()),
            _ => None,
        };
        match found.or(self.default.as_ref()) {
            Some(v) => doc.set(&self.into, v.clone()),
            None => Ok(()),
        }
    }
}

impl Join {
    /// Copy the row's fields into `doc`; `false` when there is no row and the record goes.
    fn apply(&self, doc: &mut JsonDoc, tables: &Tables) -> Result<bool> {
        let key = doc.get(&self.key);
        let row: Option<Value> = match &key {
            Some(k @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) => {
                tables.json(&self.table, k)?
            }
            _ => None,
        };
        let Some(row) = row else {
            return match self.missing {
                Missing::Keep => Ok(true),
                Missing::Drop => Ok(false),
                Missing::Fail => fail!(
                    "table `{}` has no row for `{}` = {}",
                    self.table,
                    self.key,
                    key.unwrap_or(Value::Null)
                ),
            };
        };
        for (from, into) in &self.fields {
            if let Some(v) = from.get(&row) {
                doc.set(into, v.clone())?;
            }
        }
        if let Some(into) = &self.into {
            doc.set(into, row)?;
        }
        Ok(true)
    }
}

impl Derive {
    fn apply(&self, doc: &mut JsonDoc) -> Result<()> {
        let Some(x) = doc.get(&self.from).as_ref().and_then(Value::as_f64) else {
            return Ok(());
        };
        let product = number(x * self.multiply).ok_or_else(|| {
            Error::msg(format!(
                "`{}` * {} is not a finite number",
                self.from, self.multiply
            ))
        })?;
        doc.set(&self.into, product)
    }
}

/// `x` as a JSON number: an integer when it is integral and fits `i64`.
fn number(x: f64) -> Option<Value> {
    // -2^63 and 2^63 are exact in f64; the range is [-2^63, 2^63).
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if x.fract() == 0.0 && (-LIMIT..LIMIT).contains(&x) {
        Some(Value::from(x as i64))
    } else {
        serde_json::Number::from_f64(x).map(Value::Number)
    }
}

#[transform]
fn enrich(rec: Record, cfg: &Config, tables: &Tables) -> Result<Option<Record>> {
    if rec.value.is_none() {
        return Ok(Some(rec));
    }
    let mut doc = rec.json_doc()?;
    for (pointer, value) in &cfg.set {
        doc.set(pointer, value.clone())?;
    }
    for join in &cfg.join {
        if !join.apply(&mut doc, tables)? {
            return Ok(None);
        }
    }
    for lookup in &cfg.lookup {
        lookup.apply(&mut doc)?;
    }
    for derive in &cfg.derive {
        derive.apply(&mut doc)?;
    }
    let value = doc.into_bytes();
    Ok(Some(rec.with_value(value)))
}

#[cfg(test)]
mod tests {
    use weir_sdk::prelude::*;

    type Harness = weir_sdk::testing::Harness<crate::__WeirPlugin>;

    fn rec(v: Value) -> Record {
        Record::from_json(&v).unwrap()
    }

    fn run(p: &Harness, v: Value) -> Value {
        let mut out = p.transform(rec(v)).unwrap();
        assert_eq!(out.len(), 1);
        out.remove(0).json().unwrap()
    }

    fn bench_config() -> Value {
        json!({
            "set": {"/pipeline": "weir"},
            "lookup": [{"from": "/country", "into": "/region",
                        "table": {"DE": "eu", "FR": "eu", "US": "na"}, "default": "other"}],
            "derive": [{"into": "/amount_cents", "from": "/amount", "multiply": 100}]
        })
    }

    #[test]
    fn benchmark_config() {
        let p = weir_sdk::harness!(bench_config()).unwrap();
        assert_eq!(
            run(&p, json!({"id": 1, "country": "DE", "amount": 12.5})),
            json!({"id": 1, "country": "DE", "amount": 12.5, "pipeline": "weir", "region": "eu", "amount_cents": 1250})
        );
        assert_eq!(
            run(&p, json!({"id": 2, "country": "JP", "amount": 0.125})),
            json!({"id": 2, "country": "JP", "amount": 0.125, "pipeline": "weir", "region": "other", "amount_cents": 12.5})
        );
        assert_eq!(
            run(&p, json!({"id": 3})),
            json!({"id": 3, "pipeline": "weir", "region": "other"})
        );
    }

    #[test]
    fn empty_config_changes_nothing() {
        let p = weir_sdk::harness!().unwrap();
        let doc = json!({"a": [1, {"b": null}], "c": "d"});
        assert_eq!(run(&p, doc.clone()), doc);
    }

    #[test]
    fn set_creates_parents_and_overwrites() {
        let p = weir_sdk::harness!(json!({"set": {
            "/meta/pipeline/name": "weir",
            "/meta/version": 2,
            "/x": {"y": [1]},
            "/a~1b": true,
            "/n": null
        }}))
        .unwrap();
        assert_eq!(
            run(&p, json!({"x": "old", "meta": {"keep": 1}, "n": 5})),
            json!({"x": {"y": [1]}, "meta": {"keep": 1, "version": 2, "pipeline": {"name": "weir"}},
                   "a/b": true, "n": null})
        );
        // A null parent is replaced by an object, like a missing one.
        assert_eq!(
            run(&p, json!({"meta": null})),
            json!({"x": {"y": [1]}, "meta": {"version": 2, "pipeline": {"name": "weir"}},
                   "a/b": true, "n": null})
        );
    }

    #[test]
    fn set_into_arrays() {
        let p =
            weir_sdk::harness!(json!({"set": {"/list/0/tag": "first", "/list/-": "end"}})).unwrap();
        assert_eq!(
            run(&p, json!({"list": [{}, {}]})),
            json!({"list": [{"tag": "first"}, {}, "end"]})
        );
        let p = weir_sdk::harness!(json!({"set": {"/list/2": "c", "/list/0": "A"}})).unwrap();
        assert_eq!(
            run(&p, json!({"list": ["a", "b"]})),
            json!({"list": ["A", "b", "c"]})
        );
    }

    #[test]
    fn set_through_a_scalar_is_a_record_error() {
        let p = weir_sdk::harness!(json!({"set": {"/meta/pipeline": "weir"}})).unwrap();
        let err = p.transform(rec(json!({"meta": "text"}))).unwrap_err();
        assert_eq!(
            err.message(),
            "cannot set `/meta/pipeline`: /meta is a string"
        );
        let err = p.transform(rec(json!([1]))).unwrap_err();
        assert_eq!(
            err.message(),
            "cannot set `/meta/pipeline`: the value is an array without that index"
        );
        let p = weir_sdk::harness!(json!({"set": {"/list/5": 1}})).unwrap();
        let err = p.transform(rec(json!({"list": []}))).unwrap_err();
        assert_eq!(
            err.message(),
            "cannot set `/list/5`: /list is an array without that index"
        );
        let p = weir_sdk::harness!(json!({"set": {"/x": 1}})).unwrap();
        assert!(p.transform(rec(json!("scalar"))).is_err());
    }

    #[test]
    fn lookup_without_default_leaves_into_unset() {
        let p = weir_sdk::harness!(json!({"lookup": [
            {"from": "/geo/country", "into": "/geo/region", "table": {"DE": "eu", "US": "na"}}
        ]}))
        .unwrap();
        assert_eq!(
            run(&p, json!({"geo": {"country": "US"}})),
            json!({"geo": {"country": "US", "region": "na"}})
        );
        assert_eq!(
            run(&p, json!({"geo": {"country": "JP"}})),
            json!({"geo": {"country": "JP"}})
        );
        assert_eq!(
            run(&p, json!({"geo": {"country": ["DE"]}})),
            json!({"geo": {"country": ["DE"]}})
        );
        assert_eq!(run(&p, json!({"other": 1})), json!({"other": 1}));
    }

    #[test]
    fn lookup_tables_hold_any_value_and_match_numbers_as_text() {
        let p = weir_sdk::harness!(json!({"lookup": [
            {"from": "/status", "into": "/status_info", "table": {"200": {"ok": true}, "true": "yes"}, "default": null}
        ]}))
        .unwrap();
        assert_eq!(
            run(&p, json!({"status": 200})),
            json!({"status": 200, "status_info": {"ok": true}})
        );
        assert_eq!(
            run(&p, json!({"status": "200"}))["status_info"],
            json!({"ok": true})
        );
        assert_eq!(
            run(&p, json!({"status": true}))["status_info"],
            json!("yes")
        );
        // An explicit `"default": null` writes null.
        assert_eq!(
            run(&p, json!({"status": 404})),
            json!({"status": 404, "status_info": null})
        );
    }

    #[test]
    fn steps_run_in_order_set_lookup_derive() {
        let p = weir_sdk::harness!(json!({
            "set": {"/country": "FR", "/price": 3},
            "lookup": [{"from": "/country", "into": "/region", "table": {"FR": "eu"}},
                       {"from": "/region", "into": "/vat", "table": {"eu": 0.2}}],
            "derive": [{"from": "/price", "into": "/tax", "multiply": 0.5},
                       {"from": "/tax", "into": "/tax_x4", "multiply": 4}]
        }))
        .unwrap();
        assert_eq!(
            run(&p, json!({})),
            json!({"country": "FR", "price": 3, "region": "eu", "vat": 0.2, "tax": 1.5, "tax_x4": 6})
        );
    }

    #[test]
    fn join_copies_fields_of_the_tables_row_and_says_what_a_missing_one_does() {
        let config = |missing: &str| {
            json!({"join": [{"table": "customers", "key": "/customer_id",
                             "fields": {"/country": "/country", "/tier/name": "/tier"},
                             "into": "/customer", "missing": missing}],
                   "lookup": [{"from": "/country", "into": "/region", "table": {"DE": "eu"}}]})
        };
        let p = weir_sdk::harness!(config("keep")).unwrap();
        let row = json!({"id": 7, "country": "DE", "tier": {"name": "gold"}});
        p.put_row("customers", 7u64, &row).unwrap();
        // The joined country feeds the lookup that follows.
        assert_eq!(
            run(&p, json!({"customer_id": 7})),
            json!({"customer_id": 7, "country": "DE", "tier": "gold", "customer": row, "region": "eu"})
        );
        assert_eq!(run(&p, json!({"customer_id": "7"}))["country"], "DE");
        assert_eq!(
            run(&p, json!({"customer_id": 8})),
            json!({"customer_id": 8})
        );
        p.delete_row("customers", "7");
        assert_eq!(
            run(&p, json!({"customer_id": 7})),
            json!({"customer_id": 7})
        );

        let p = weir_sdk::harness!(config("drop")).unwrap();
        assert_eq!(p.transform(rec(json!({"customer_id": 7}))).unwrap(), vec![]);
        let p = weir_sdk::harness!(config("fail")).unwrap();
        let err = p.transform(rec(json!({"customer_id": 7}))).unwrap_err();
        assert_eq!(
            err.message(),
            "table `customers` has no row for `/customer_id` = 7"
        );
        assert!(weir_sdk::harness!(config("sometimes")).is_err());
    }

    #[test]
    fn derive_writes_integers_when_it_can() {
        let p = weir_sdk::harness!(json!({"derive": [
            {"from": "/amount", "into": "/cents", "multiply": 100},
            {"from": "/amount", "into": "/nested/half", "multiply": 0.5}
        ]}))
        .unwrap();
        let out = run(&p, json!({"amount": 19.99}));
        // The product is not rounded: 19.99 * 100 is not integral in f64.
        assert!(
            (out["cents"].as_f64().unwrap() - 1999.0).abs() < 1e-9,
            "{out}"
        );
        assert!(out["cents"].is_f64());
        let out = run(&p, json!({"amount": 7}));
        assert!(out["cents"].is_i64(), "{out}");
        assert_eq!(
            out,
            json!({"amount": 7, "cents": 700, "nested": {"half": 3.5}})
        );
        let out = run(&p, json!({"amount": -4}));
        assert_eq!(
            out,
            json!({"amount": -4, "cents": -400, "nested": {"half": -2}})
        );
        assert!(out["nested"]["half"].is_i64());
        let out = run(&p, json!({"amount": 1e300}));
        assert!(out["cents"].is_f64(), "too big for i64: {out}");
    }

    #[test]
    fn derive_skips_missing_and_non_numbers() {
        let p = weir_sdk::harness!(
            json!({"derive": [{"from": "/amount", "into": "/cents", "multiply": 100}]})
        )
        .unwrap();
        for doc in [
            json!({}),
            json!({"amount": "12"}),
            json!({"amount": null}),
            json!({"amount": [1]}),
        ] {
            assert_eq!(run(&p, doc.clone()), doc);
        }
    }

    #[test]
    fn derive_overflow_is_a_record_error() {
        let p = weir_sdk::harness!(
            json!({"derive": [{"from": "/x", "into": "/y", "multiply": 1e300}]})
        )
        .unwrap();
        let err = p.transform(rec(json!({"x": 1e300}))).unwrap_err();
        assert!(err.message().contains("not a finite number"), "{err}");
    }

    #[test]
    fn number_is_integral_when_it_fits() {
        use crate::number;
        assert_eq!(number(1250.0), Some(json!(1250)));
        assert_eq!(number(-0.0), Some(json!(0)));
        assert_eq!(number(12.5), Some(json!(12.5)));
        assert_eq!(number(-9_223_372_036_854_775_808.0), Some(json!(i64::MIN)));
        assert!(number(9_223_372_036_854_775_808.0).unwrap().is_f64());
        assert_eq!(number(f64::INFINITY), None);
        assert_eq!(number(f64::NAN), None);
    }

    #[test]
    fn keeps_key_headers_and_timestamp_and_passes_tombstones() {
        let p = weir_sdk::harness!(bench_config()).unwrap();
        let input = rec(json!({"country": "US"}))
            .with_key("k")
            .with_header("h", "v")
            .with_timestamp(99);
        let out = p.transform(input).unwrap().remove(0);
        assert_eq!(out.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(out.header("h"), Some(&b"v"[..]));
        assert_eq!(out.timestamp, 99);
        assert_eq!(out.json::<Value>().unwrap()["region"], json!("na"));

        let tomb = Record::tombstone(Some(b"k".to_vec()));
        assert_eq!(p.transform(tomb.clone()).unwrap(), vec![tomb]);
        assert!(p.transform(Record::new("not json")).is_err());
    }

    #[test]
    fn bad_config_is_rejected() {
        for cfg in [
            json!({"set": {"pipeline": "weir"}}),
            json!({"set": {"": "weir"}}),
            json!({"set": ["/a"]}),
            json!({"lookup": [{"from": "country", "into": "/region", "table": {}}]}),
            json!({"lookup": [{"from": "/country", "into": "/region"}]}),
            json!({"lookup": [{"from": "/country", "into": "/region", "table": {}, "fallback": 1}]}),
            json!({"derive": [{"from": "/a", "into": "b", "multiply": 2}]}),
            json!({"derive": [{"from": "/a", "into": "/b"}]}),
            json!({"derive": [{"from": "/a", "into": "/b", "multiply": "2"}]}),
            json!({"sets": {}}),
        ] {
            let err = weir_sdk::harness!(cfg.clone())
                .err()
                .unwrap_or_else(|| panic!("{cfg} accepted"));
            assert!(err.message().contains("invalid plugin config"), "{err}");
        }
    }
}
