//! Count records per key per window.

use weir_sdk::prelude::*;

pub struct Count;

#[window]
impl Aggregate for Count {
    type Config = Value;
    type Acc = u64;
    type Output = Record;

    fn create(_window: &Window, _cfg: &Value) -> u64 {
        0
    }

    fn add(acc: &mut u64, _rec: &Record, _cfg: &Value) -> Result<()> {
        *acc += 1;
        Ok(())
    }

    fn merge(a: u64, b: u64, _window: &Window, _cfg: &Value) -> u64 {
        a + b
    }

    fn emit(window: &Window, acc: &u64, _cfg: &Value) -> Result<Record> {
        Record::from_json(&json!({ "start": window.start, "end": window.end, "count": acc }))
    }
}

#[cfg(test)]
mod tests {
    use weir_sdk::prelude::*;

    #[test]
    fn counts_records() {
        let plugin = weir_sdk::harness!().unwrap();
        let window = Window {
            key: None,
            start: 0,
            end: 60_000,
        };
        let (out, errors) = plugin
            .window(&window, vec![Record::new("a"), Record::new("b")])
            .unwrap();
        assert!(errors.is_empty());
        assert_eq!(out[0].json::<Value>().unwrap()["count"], 2);
    }
}
