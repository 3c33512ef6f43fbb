//! Count records per key per window. The pipeline says which windows (tumbling, sliding or
//! session) and how event time is read; this plugin only counts.
//!
//! A fired window becomes one record with the window's key and
//! `{"key": "…", "start": 1700000000000, "end": 1700000060000, "count": 42}`
//! (`key` is the record key as text, `null` for records without one).

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

    fn add(count: &mut u64, _rec: &Record, _cfg: &Value) -> Result<()> {
        *count += 1;
        Ok(())
    }

    fn merge(a: u64, b: u64, _window: &Window, _cfg: &Value) -> u64 {
        a + b
    }

    fn emit(window: &Window, count: &u64, _cfg: &Value) -> Result<Record> {
        Record::from_json(&json!({
            "key": window.key.as_deref().map(String::from_utf8_lossy),
            "start": window.start,
            "end": window.end,
            "count": count,
        }))
    }
}

#[cfg(test)]
mod tests {
    use weir_sdk::prelude::*;

    fn window() -> Window {
        Window {
            key: Some(b"alice".to_vec()),
            start: 60_000,
            end: 120_000,
        }
    }

    #[test]
    fn counts_the_records_of_a_window() {
        let plugin = weir_sdk::harness!().unwrap();
        let (out, errors) = plugin
            .window(&window(), vec![Record::new("{}"), Record::new("{}")])
            .unwrap();
        assert!(errors.is_empty());
        let value: Value = out[0].json().unwrap();
        assert_eq!(
            value,
            json!({ "key": "alice", "start": 60_000, "end": 120_000, "count": 2 })
        );
        assert_eq!(out[0].key.as_deref(), Some(&b"alice"[..]));
        assert_eq!(out[0].timestamp, 119_999, "the window's last instant");
    }

    #[test]
    fn merged_sessions_add_up() {
        let plugin = weir_sdk::harness!().unwrap();
        let out = plugin
            .window_merged(
                &window(),
                vec![Record::new("{}")],
                vec![Record::new("{}"), Record::new("{}")],
            )
            .unwrap();
        assert_eq!(out[0].json::<Value>().unwrap()["count"], 3);
    }
}
