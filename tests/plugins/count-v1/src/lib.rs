//! Counts records per key and tags each with the count and `"version": 1`. Its state is
//! `{"n": …}` per key; `count-v2`, the next build, calls the field `count` and migrates what this
//! one stored: the state-migration tests swap one for the other under a running pipeline.

use weir_sdk::prelude::*;

/// What this build keeps per key (state version 0: it declares no `#[state]`).
#[derive(Default, Serialize, Deserialize)]
struct Seen {
    n: u64,
}

#[transform]
fn count(rec: &Record, state: &State) -> Result<Record> {
    let mut seen: Seen = state.get("seen")?.unwrap_or_default();
    seen.n += 1;
    state.put("seen", &seen)?;
    let mut value: Value = rec.json()?;
    value["count"] = json!(seen.n);
    value["version"] = json!(1);
    rec.clone().with_json(&value)
}

#[cfg(test)]
mod tests {
    use weir_sdk::prelude::*;

    #[test]
    fn counts_per_key() {
        let p = weir_sdk::harness!().unwrap();
        let count = |key: &str| {
            let rec = Record::from_json(&json!({})).unwrap().with_key(key);
            p.transform(rec).unwrap()[0].json::<Value>().unwrap()["count"].clone()
        };
        assert_eq!([count("a"), count("a"), count("b")], [1, 2, 1]);
    }
}
