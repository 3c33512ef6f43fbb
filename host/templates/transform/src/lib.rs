//! Add a field to every JSON record, and count records per key in state.

use weir_sdk::prelude::*;

#[derive(Deserialize)]
struct Config {
    field: String,
    value: Value,
}

#[transform]
fn tag(rec: &Record, cfg: &Config, state: &State) -> Result<Record> {
    let seen: u64 = state.get("seen")?.unwrap_or(0) + 1;
    state.put("seen", &seen)?;
    let mut doc: Value = rec.json()?;
    let Some(obj) = doc.as_object_mut() else {
        fail!("expected a JSON object");
    };
    obj.insert(cfg.field.clone(), cfg.value.clone());
    obj.insert("seen".into(), json!(seen));
    rec.clone().with_json(&doc)
}

#[cfg(test)]
mod tests {
    use weir_sdk::prelude::*;

    #[test]
    fn tags_and_counts_per_key() {
        let plugin = weir_sdk::harness!(json!({ "field": "source", "value": "weir" })).unwrap();
        let rec = Record::from_json(&json!({ "id": 1 }))
            .unwrap()
            .with_key("k");
        plugin.transform(rec.clone()).unwrap();
        let out = plugin.transform(rec).unwrap();
        assert_eq!(
            out[0].json::<Value>().unwrap(),
            json!({ "id": 1, "source": "weir", "seen": 2 })
        );
    }
}
