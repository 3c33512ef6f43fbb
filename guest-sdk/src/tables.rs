//! Tables the pipeline keeps from topics (`[[table]]`): a stage's plugin looks a row up by its
//! key, and the host answers from the table as its topic last changed it.

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{Error, Result};

/// The tables granted to this stage (`tables = ["customers"]` on the stage). Take a `&Tables`
/// parameter to read them:
///
/// ```
/// use weir_sdk::prelude::*;
///
/// #[transform]
/// fn with_country(rec: &Record, tables: &Tables) -> Result<Record> {
///     let mut order: Value = rec.json()?;
///     let customer: Option<Value> = tables.json("customers", &order["customer_id"])?;
///     order["country"] = customer.map_or(Value::Null, |c| c["country"].clone());
///     rec.clone().with_json(&order)
/// }
/// ```
///
/// Asking for a table the stage is not granted fails the record (its error names the table),
/// rather than reading as a missing row.
pub struct Tables {
    /// The record being processed: a table kept as of event time answers as of its time.
    rec: u32,
}

impl Tables {
    #[doc(hidden)]
    pub fn __for_record(rec: u32) -> Self {
        Tables { rec }
    }

    /// The row of `table` under `key`, as the JSON bytes the table's topic held: the latest,
    /// or for a table kept `as_of = "event-time"`, the one current at the record's time.
    pub fn get(&self, table: &str, key: impl TableKey) -> Option<Vec<u8>> {
        lookup(self.rec, table, &key.table_key())
    }

    /// The current row of `table` under `key`, parsed.
    pub fn json<T: DeserializeOwned>(&self, table: &str, key: impl TableKey) -> Result<Option<T>> {
        match self.get(table, key) {
            Some(row) => serde_json::from_slice(&row).map(Some).map_err(|e| {
                Error::msg(format!(
                    "a row of table `{table}` is not the expected JSON: {e}"
                ))
            }),
            None => Ok(None),
        }
    }
}

#[cfg(target_arch = "wasm32")]
fn lookup(rec: u32, table: &str, key: &[u8]) -> Option<Vec<u8>> {
    crate::__rt::wit::filter::weir::plugin::tables::get(rec, table, key)
}

#[cfg(not(target_arch = "wasm32"))]
fn lookup(rec: u32, table: &str, key: &[u8]) -> Option<Vec<u8>> {
    crate::__rt::with_host(|h| h.table_get(rec, table, key))
}

/// What a row can be looked up by: text, bytes, or a JSON value from a record. Rows are keyed
/// by the text of their key field: a string's characters, a number's or boolean's JSON text,
/// so `"42"`, `42` and `json!(42)` find the same row.
pub trait TableKey {
    fn table_key(&self) -> Cow<'_, [u8]>;
}

impl TableKey for &str {
    fn table_key(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.as_bytes())
    }
}

impl TableKey for String {
    fn table_key(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.as_bytes())
    }
}

impl TableKey for &[u8] {
    fn table_key(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self)
    }
}

impl TableKey for &Value {
    fn table_key(&self) -> Cow<'_, [u8]> {
        match self {
            Value::String(s) => Cow::Borrowed(s.as_bytes()),
            other => Cow::Owned(other.to_string().into_bytes()),
        }
    }
}

macro_rules! integer_keys {
    ($($t:ty),*) => {$(
        impl TableKey for $t {
            fn table_key(&self) -> Cow<'_, [u8]> {
                Cow::Owned(self.to_string().into_bytes())
            }
        }
    )*};
}

integer_keys!(i32, i64, u32, u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_text_of_the_key_field() {
        let text = |k: &dyn Fn() -> Vec<u8>| String::from_utf8(k()).unwrap();
        assert_eq!(text(&|| "c-1".table_key().into_owned()), "c-1");
        assert_eq!(
            text(&|| (&serde_json::json!("c-1")).table_key().into_owned()),
            "c-1"
        );
        assert_eq!(
            text(&|| (&serde_json::json!(42)).table_key().into_owned()),
            "42"
        );
        assert_eq!(text(&|| 42u64.table_key().into_owned()), "42");
        assert_eq!(
            text(&|| (&serde_json::json!(true)).table_key().into_owned()),
            "true"
        );
    }
}
