//! The second build of `count-v1`: the same count per key, tagged `"version": 2`, but its state
//! calls the field `count` where the first build said `n`. It declares state version 1 and
//! migrates what the first build stored, so a key counts on across the upgrade.

use weir_sdk::prelude::*;

/// What this build keeps per key.
#[derive(Default, Serialize, Deserialize)]
struct Seen {
    count: u64,
}

#[transform]
fn count(rec: &Record, state: &State) -> Result<Record> {
    let mut seen: Seen = state.get("seen")?.unwrap_or_default();
    seen.count += 1;
    state.put("seen", &seen)?;
    let mut value: Value = rec.json()?;
    value["count"] = json!(seen.count);
    value["version"] = json!(2);
    rec.clone().with_json(&value)
}

/// The first build (state version 0) stored `{"n": …}`.
#[state(version = 1)]
fn migrate(from: u32, old: Value) -> Result<Value> {
    match old.get("n") {
        Some(n) => Ok(json!({ "count": n })),
        None => fail!("a count of state version {from} without `n`: {old}"),
    }
}

#[cfg(test)]
mod tests {
    use weir_sdk::prelude::*;

    fn rec(key: &str) -> Record {
        Record::from_json(&json!({})).unwrap().with_key(key)
    }

    #[test]
    fn counts_on_from_what_the_first_build_stored() {
        let p = weir_sdk::harness!().unwrap();
        p.put_state_as(0, "a", "seen", &json!({ "n": 5 })).unwrap();
        let out = p.transform(rec("a")).unwrap();
        assert_eq!(out[0].json::<Value>().unwrap()["count"], 6);
        // Written back in this build's shape, so it is not migrated again.
        let out = p.transform(rec("a")).unwrap();
        assert_eq!(out[0].json::<Value>().unwrap()["count"], 7);
        assert_eq!(
            p.migrate(0, "seen", json!({ "n": 3 })).unwrap(),
            json!({ "count": 3 })
        );
    }

    #[test]
    fn a_value_that_cannot_be_migrated_fails_its_record_alone() {
        let p = weir_sdk::harness!().unwrap();
        p.put_state_as(0, "bad", "seen", &json!({ "x": 1 }))
            .unwrap();
        p.put_state_as(0, "good", "seen", &json!({ "n": 1 }))
            .unwrap();
        let out = p.transform_all(vec![rec("good"), rec("bad"), rec("good")]);
        let err = out[1].as_ref().unwrap_err().message().to_string();
        assert_eq!(
            err,
            "state `seen` of key `bad` was written by state version 0 and could not be migrated \
             to version 1: a count of state version 0 without `n`: {\"x\":1}"
        );
        let counts: Vec<Value> = [&out[0], &out[2]]
            .iter()
            .map(|r| r.as_ref().unwrap()[0].json::<Value>().unwrap()["count"].clone())
            .collect();
        assert_eq!(counts, [2, 3]);
        // A state written by a later build is not read either.
        p.put_state_as(7, "new", "seen", &json!({ "count": 1 }))
            .unwrap();
        let err = p.transform(rec("new")).unwrap_err();
        assert!(
            err.message().contains("newer than this build's 1"),
            "{err:?}"
        );
    }
}
