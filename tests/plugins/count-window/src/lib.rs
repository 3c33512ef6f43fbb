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
    fn counts_and_merges() {
        let p = weir_sdk::harness!().unwrap();
        let w = Window {
            key: None,
            start: 0,
            end: 10,
        };
        let (out, errors) = p
            .window(&w, vec![Record::new("a"), Record::new("b")])
            .unwrap();
        assert!(errors.is_empty());
        assert_eq!(out[0].json::<Value>().unwrap()["count"], 2);
        let merged = p
            .window_merged(
                &w,
                vec![Record::new("a")],
                vec![Record::new("b"), Record::new("c")],
            )
            .unwrap();
        assert_eq!(merged[0].json::<Value>().unwrap()["count"], 3);
    }
}
