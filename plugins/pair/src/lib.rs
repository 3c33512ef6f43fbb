//! Render what a join stage pairs (`join = { … }` on its stage) as one record: the stream's
//! record with the other topic's record in it, at `into`.
//!
//! ```json
//! {"into": "/payment"}
//! ```
//! A join stage hands its plugin `{"left": order, "right": payment}`; this makes it the order
//! with `"payment": {…}`. An order the join found nothing for (`outer = "left"`) gets
//! `"payment": null`; a payment alone (`outer = "right"`) becomes `{"payment": {…}}`.

use weir_sdk::{json::Pointer, prelude::*};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Where the other topic's record goes.
    into: Pointer,
}

#[transform]
fn pair(rec: Record, cfg: &Config) -> Result<Record> {
    let pair: Value = rec.json()?;
    let (Some(left), Some(right)) = (pair.get("left"), pair.get("right")) else {
        fail!("not a join stage's pair: the value has no `left` and `right`");
    };
    let base = match left {
        Value::Null => b"{}".to_vec(),
        left => serde_json::to_vec(left)?,
    };
    let mut doc = JsonDoc::parse(&base)?;
    doc.set(&cfg.into, right.clone())?;
    let value = doc.into_bytes();
    Ok(rec.with_value(value))
}

#[cfg(test)]
mod tests {
    use weir_sdk::prelude::*;

    type Harness = weir_sdk::testing::Harness<crate::__WeirPlugin>;

    fn one(p: &Harness, value: Value) -> Value {
        let mut out = p.transform(Record::from_json(&value).unwrap()).unwrap();
        assert_eq!(out.len(), 1, "{out:?}");
        out.remove(0).json().unwrap()
    }

    #[test]
    fn the_other_record_goes_into_the_streams_one() {
        let p = weir_sdk::harness!(json!({"into": "/payment"})).unwrap();
        let order = json!({"id": 7, "amount": 30});
        let payment = json!({"order": 7, "paid": 30});
        assert_eq!(
            one(&p, json!({"left": order, "right": payment})),
            json!({"id": 7, "amount": 30, "payment": {"order": 7, "paid": 30}})
        );
        assert_eq!(
            one(&p, json!({"left": order, "right": null})),
            json!({"id": 7, "amount": 30, "payment": null})
        );
        assert_eq!(
            one(&p, json!({"left": null, "right": payment})),
            json!({"payment": {"order": 7, "paid": 30}})
        );
    }

    #[test]
    fn a_record_that_is_no_pair_is_an_error() {
        let p = weir_sdk::harness!(json!({"into": "/payment"})).unwrap();
        let err = p
            .transform(Record::from_json(&json!({"id": 7})).unwrap())
            .unwrap_err();
        assert!(err.message().contains("not a join stage's pair"), "{err}");
    }
}
