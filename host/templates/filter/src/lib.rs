//! Keep orders above a configured amount.

use weir_sdk::prelude::*;

#[derive(Deserialize)]
struct Config {
    min: f64,
}

#[derive(Deserialize)]
struct Order {
    amount: f64,
}

#[filter]
fn big_orders(rec: &Record, cfg: &Config) -> Result<bool> {
    let order: Order = rec.json()?;
    Ok(order.amount > cfg.min)
}

#[cfg(test)]
mod tests {
    use weir_sdk::prelude::*;

    #[test]
    fn keeps_only_big_orders() {
        let plugin = weir_sdk::harness!(json!({ "min": 100 })).unwrap();
        assert!(plugin
            .filter(Record::from_json(&json!({ "amount": 150 })).unwrap())
            .unwrap());
        assert!(!plugin
            .filter(Record::from_json(&json!({ "amount": 50 })).unwrap())
            .unwrap());
    }
}
