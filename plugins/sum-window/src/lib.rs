//! Sum one numeric field per key per window, with the count beside it so consumers can take
//! averages. Config:
//!
//! ```json
//! {"field": "/amount"}
//! ```
//!
//! A fired window becomes one record with the window's key and
//! `{"key": "…", "start": …, "end": …, "count": 3, "sum": 42}`. The sum stays an exact integer
//! while every value is one. A record without a number at `field` is an error for that record
//! (the window is left alone; the pipeline's error policy decides what happens to it).

use weir_sdk::{json::Pointer, prelude::*};

pub struct SumWindow;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The number to add up.
    field: Pointer,
}

#[derive(Default, Serialize, Deserialize)]
pub struct Total {
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
    fn plus(self, other: Sum) -> Sum {
        match (self, other) {
            (Sum::Int(a), Sum::Int(b)) => a
                .checked_add(b)
                .map_or(Sum::Float(a as f64 + b as f64), Sum::Int),
            (a, b) => Sum::Float(a.as_f64() + b.as_f64()),
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Sum::Int(i) => i as f64,
            Sum::Float(f) => f,
        }
    }
}

#[window]
impl Aggregate for SumWindow {
    type Config = Config;
    type Acc = Total;
    type Output = Record;

    fn create(_window: &Window, _cfg: &Config) -> Total {
        Total::default()
    }

    fn add(total: &mut Total, rec: &Record, cfg: &Config) -> Result<()> {
        let value: Value = rec.json()?;
        let n = match cfg.field.get(&value) {
            Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => Sum::Int(i),
                (None, Some(f)) => Sum::Float(f),
                _ => fail!("`{}` = {n} is out of range", cfg.field),
            },
            Some(other) => fail!("`{}` is {other}, not a number", cfg.field),
            None => fail!("no `{}` in the record", cfg.field),
        };
        total.count += 1;
        total.sum = total.sum.plus(n);
        Ok(())
    }

    fn merge(a: Total, b: Total, _window: &Window, _cfg: &Config) -> Total {
        Total {
            count: a.count + b.count,
            sum: a.sum.plus(b.sum),
        }
    }

    fn emit(window: &Window, total: &Total, _cfg: &Config) -> Result<Record> {
        Record::from_json(&json!({
            "key": window.key.as_deref().map(String::from_utf8_lossy),
            "start": window.start,
            "end": window.end,
            "count": total.count,
            "sum": total.sum,
        }))
    }
}

#[cfg(test)]
mod tests {
    use weir_sdk::prelude::*;

    fn window() -> Window {
        Window {
            key: Some(b"k".to_vec()),
            start: 0,
            end: 1_000,
        }
    }

    #[test]
    fn sums_the_field_and_reports_records_without_it() {
        let plugin = weir_sdk::harness!(json!({"field": "/amount"})).unwrap();
        let records = vec![
            Record::new(r#"{"amount": 5}"#),
            Record::new(r#"{"other": 1}"#),
            Record::new(r#"{"amount": 7}"#),
        ];
        let (out, errors) = plugin.window(&window(), records).unwrap();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, 1);
        assert!(errors[0].1.contains("/amount"), "{}", errors[0].1);
        let value: Value = out[0].json().unwrap();
        assert_eq!(value["sum"], 12);
        assert_eq!(value["count"], 2);
    }

    #[test]
    fn merged_sessions_add_up_and_floats_stay_floats() {
        let plugin = weir_sdk::harness!(json!({"field": "/x"})).unwrap();
        let out = plugin
            .window_merged(
                &window(),
                vec![Record::new(r#"{"x": 1.5}"#)],
                vec![Record::new(r#"{"x": 2}"#)],
            )
            .unwrap();
        assert_eq!(out[0].json::<Value>().unwrap()["sum"], 3.5);
    }

    #[test]
    fn a_field_that_is_not_a_pointer_is_refused_at_load() {
        let err = weir_sdk::harness!(json!({"field": "amount"}))
            .err()
            .unwrap();
        assert!(
            err.message()
                .contains("field `amount` is not a JSON pointer"),
            "{err}"
        );
    }
}
