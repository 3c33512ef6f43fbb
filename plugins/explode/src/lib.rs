//! Turn one JSON record into one record per element of an array field.
//!
//! ```json
//! {"path": "/order/items", "as": "item"}
//! ```
//! Each output is the input object without the field `path` names, plus a top-level field named
//! `as` holding one element (replacing any field of that name). An empty array gives no output;
//! a missing `path`, or one that holds anything but an array, is a record error. Outputs keep the
//! input's key, headers and timestamp.

use weir_sdk::{
    json::{kind, Pointer},
    prelude::*,
};

#[derive(Deserialize)]
#[serde(try_from = "RawConfig")]
struct Config {
    path: Pointer,
    /// The pointer to the object or array that holds the field.
    parent: Pointer,
    /// The field's name in `parent`, unescaped.
    field: String,
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    path: String,
    #[serde(rename = "as")]
    name: String,
}

impl TryFrom<RawConfig> for Config {
    type Error = String;

    fn try_from(raw: RawConfig) -> std::result::Result<Self, String> {
        let path: Pointer = raw.path.parse().map_err(|_| {
            format!(
                "path `{}` is not a JSON pointer to a field (it must start with `/`)",
                raw.path
            )
        })?;
        if raw.name.is_empty() {
            return Err("`as` must name a field".to_string());
        }
        let (Some(parent), Some(field)) = (path.parent(), path.last().map(str::to_string)) else {
            return Err(format!(
                "path `{}` names the whole value, not a field",
                raw.path
            ));
        };
        Ok(Config {
            field,
            parent,
            path,
            name: raw.name,
        })
    }
}

impl Config {
    /// Take the field at `path` out of `doc`.
    fn take(&self, doc: &mut Value) -> Option<Value> {
        match self.parent.get_mut(doc)? {
            Value::Object(map) => map.remove(&self.field),
            Value::Array(items) => {
                let i: usize = self.field.parse().ok()?;
                (i < items.len()).then(|| items.remove(i))
            }
            _ => None,
        }
    }
}

#[transform]
fn explode(rec: &Record, cfg: &Config) -> Result<Vec<Record>> {
    let mut doc: Value = rec.json()?;
    if !doc.is_object() {
        fail!("value is {}, not a JSON object", kind(&doc));
    }
    let items = match cfg.take(&mut doc) {
        Some(Value::Array(items)) => items,
        Some(other) => fail!("`{}` is {}, not an array", cfg.path, kind(&other)),
        None => fail!("no array at `{}`", cfg.path),
    };
    let Value::Object(mut obj) = doc else {
        unreachable!("checked above");
    };
    // Outputs share the input's key, headers and timestamp; the template has no value to copy.
    let template = rec.clone().without_value();
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        obj.insert(cfg.name.clone(), item);
        out.push(template.clone().with_json(&obj)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use weir_sdk::prelude::*;

    fn rec(v: Value) -> Record {
        Record::from_json(&v).unwrap()
    }

    fn values(out: &[Record]) -> Vec<Value> {
        out.iter().map(|r| r.json().unwrap()).collect()
    }

    #[test]
    fn one_output_per_element() {
        let p = weir_sdk::harness!(json!({"path": "/items", "as": "item"})).unwrap();
        let out = p
            .transform(rec(
                json!({"order": 1, "items": [{"sku": "a"}, {"sku": "b"}, 3]}),
            ))
            .unwrap();
        assert_eq!(
            values(&out),
            vec![
                json!({"order": 1, "item": {"sku": "a"}}),
                json!({"order": 1, "item": {"sku": "b"}}),
                json!({"order": 1, "item": 3}),
            ]
        );
    }

    #[test]
    fn nested_path_is_removed_from_its_parent() {
        let p = weir_sdk::harness!(json!({"path": "/order/items", "as": "item"})).unwrap();
        let out = p
            .transform(rec(
                json!({"id": 9, "order": {"no": "A1", "items": ["x", "y"]}}),
            ))
            .unwrap();
        assert_eq!(
            values(&out),
            vec![
                json!({"id": 9, "order": {"no": "A1"}, "item": "x"}),
                json!({"id": 9, "order": {"no": "A1"}, "item": "y"}),
            ]
        );
    }

    #[test]
    fn path_through_an_array_and_escaped_names() {
        let p = weir_sdk::harness!(json!({"path": "/groups/1", "as": "g"})).unwrap();
        let out = p.transform(rec(json!({"groups": [[1], [2, 3]]}))).unwrap();
        assert_eq!(
            values(&out),
            vec![
                json!({"groups": [[1]], "g": 2}),
                json!({"groups": [[1]], "g": 3})
            ]
        );

        let p = weir_sdk::harness!(json!({"path": "/a~1b~0c", "as": "v"})).unwrap();
        let out = p.transform(rec(json!({"a/b~c": [true]}))).unwrap();
        assert_eq!(values(&out), vec![json!({"v": true})]);
    }

    #[test]
    fn as_may_reuse_the_exploded_name_or_replace_a_field() {
        let p = weir_sdk::harness!(json!({"path": "/items", "as": "items"})).unwrap();
        let out = p.transform(rec(json!({"items": [1, 2]}))).unwrap();
        assert_eq!(values(&out), vec![json!({"items": 1}), json!({"items": 2})]);

        let p = weir_sdk::harness!(json!({"path": "/items", "as": "id"})).unwrap();
        let out = p.transform(rec(json!({"id": 0, "items": [1]}))).unwrap();
        assert_eq!(values(&out), vec![json!({"id": 1})]);
    }

    #[test]
    fn empty_array_gives_no_output() {
        let p = weir_sdk::harness!(json!({"path": "/items", "as": "item"})).unwrap();
        assert!(p.transform(rec(json!({"items": []}))).unwrap().is_empty());
    }

    #[test]
    fn outputs_keep_key_headers_and_timestamp() {
        let p = weir_sdk::harness!(json!({"path": "/items", "as": "item"})).unwrap();
        let input = rec(json!({"items": [1, 2]}))
            .with_key("k")
            .with_header("h", "v")
            .with_timestamp(42);
        let out = p.transform(input).unwrap();
        assert_eq!(out.len(), 2);
        for r in &out {
            assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
            assert_eq!(r.header("h"), Some(&b"v"[..]));
            assert_eq!(r.timestamp, 42);
        }
    }

    #[test]
    fn missing_or_non_array_path_is_a_record_error() {
        let p = weir_sdk::harness!(json!({"path": "/order/items", "as": "item"})).unwrap();
        let err = |v: Value| p.transform(rec(v)).unwrap_err().message().to_string();
        assert_eq!(err(json!({"order": {}})), "no array at `/order/items`");
        assert_eq!(err(json!({"order": 5})), "no array at `/order/items`");
        assert_eq!(err(json!({})), "no array at `/order/items`");
        assert_eq!(
            err(json!({"order": {"items": {"a": 1}}})),
            "`/order/items` is an object, not an array"
        );
        assert_eq!(
            err(json!({"order": {"items": null}})),
            "`/order/items` is null, not an array"
        );
        assert_eq!(err(json!([1, 2])), "value is an array, not a JSON object");
        assert!(p.transform(Record::new("not json")).is_err());
        assert!(p.transform(Record::tombstone(None)).is_err());
    }

    #[test]
    fn batch_errors_stay_with_their_record() {
        let p = weir_sdk::harness!(json!({"path": "/items", "as": "item"})).unwrap();
        let results = p.transform_all(vec![
            rec(json!({"items": [1]})),
            rec(json!({"items": "nope"})),
            rec(json!({"items": [2, 3]})),
        ]);
        assert_eq!(results[0].as_ref().unwrap().len(), 1);
        assert!(results[1].is_err());
        assert_eq!(results[2].as_ref().unwrap().len(), 2);
    }

    #[test]
    fn bad_config_is_rejected() {
        for cfg in [
            json!({"path": "items", "as": "item"}),
            json!({"path": "", "as": "item"}),
            json!({"path": "a/b", "as": "item"}),
            json!({"path": "/items", "as": ""}),
            json!({"path": "/items"}),
            json!({"as": "item"}),
            json!({"path": "/items", "as": "item", "keep": true}),
        ] {
            let err = weir_sdk::harness!(cfg.clone())
                .err()
                .unwrap_or_else(|| panic!("{cfg} accepted"));
            assert!(err.message().contains("invalid plugin config"), "{err}");
        }
    }
}
