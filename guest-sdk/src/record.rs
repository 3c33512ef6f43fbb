use std::sync::Arc;

use serde::{de::DeserializeOwned, Serialize};

use crate::{Error, JsonDoc, Result};

/// One Kafka record as a plugin sees it.
///
/// Inputs carry where they came from ([`topic`](Record::topic), [`partition`](Record::partition),
/// [`offset`](Record::offset)). An output built from an input with the `with_*` methods keeps
/// the input's key, headers and timestamp unless it changes them, which is what a downstream
/// consumer expects of a transform.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Record {
    /// The record key; `None` for a record without one.
    pub key: Option<Vec<u8>>,
    /// The record value; `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    /// Headers in wire order; a key may repeat.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Event time in milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub(crate) topic: Arc<str>,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
}

impl Record {
    /// A record with this value and nothing else.
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        Record {
            value: Some(value.into()),
            ..Record::default()
        }
    }

    /// A record whose value is `value` serialized as JSON.
    pub fn from_json<T: Serialize + ?Sized>(value: &T) -> Result<Self> {
        Ok(Record::new(serde_json::to_vec(value)?))
    }

    /// A tombstone (no value) for `key`.
    pub fn tombstone(key: Option<Vec<u8>>) -> Self {
        Record {
            key,
            ..Record::default()
        }
    }

    /// The value parsed as JSON into `T`; an error names what did not fit.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        let value = self
            .value
            .as_deref()
            .ok_or_else(|| Error::msg("record has no value (tombstone)"))?;
        serde_json::from_slice(value)
            .map_err(|e| Error::msg(format!("value is not the expected JSON: {e}")))
    }

    /// The value as a [`JsonDoc`]: checked as JSON, read and edited field by field, which is
    /// much cheaper than [`json`](Self::json) into a `Value` when a plugin touches a few fields.
    ///
    /// ```
    /// use weir_sdk::prelude::*;
    ///
    /// #[transform]
    /// fn mask_email(rec: Record) -> Result<Record> {
    ///     let mut doc = rec.json_doc()?;
    ///     doc.update("/customer/email", |_| Ok(json!("[REDACTED]")))?;
    ///     let value = doc.into_bytes();
    ///     Ok(rec.with_value(value))
    /// }
    ///
    /// fn main() {
    ///     let plugin = weir_sdk::harness!(json!({})).unwrap();
    ///     let input = br#"{"id": 7, "customer": {"email": "ann@example.com"}}"#;
    ///     let out = plugin.transform(Record::new(&input[..])).unwrap();
    ///     let want = r#"{"id": 7, "customer": {"email": "[REDACTED]"}}"#;
    ///     assert_eq!(out[0].value_str().unwrap(), want);
    /// }
    /// ```
    pub fn json_doc(&self) -> Result<JsonDoc<'_>> {
        let value = self
            .value
            .as_deref()
            .ok_or_else(|| Error::msg("record has no value (tombstone)"))?;
        JsonDoc::parse(value)
    }

    /// The value as UTF-8 text.
    pub fn value_str(&self) -> Result<&str> {
        let value = self
            .value
            .as_deref()
            .ok_or_else(|| Error::msg("record has no value (tombstone)"))?;
        Ok(std::str::from_utf8(value)?)
    }

    /// The key as UTF-8 text, if there is a key.
    pub fn key_str(&self) -> Result<Option<&str>> {
        Ok(match self.key.as_deref() {
            Some(k) => Some(std::str::from_utf8(k)?),
            None => None,
        })
    }

    /// The first header named `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The topic the record was read from (empty for records a plugin made).
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition the record was read from.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The offset of the record in its partition.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// This record with another value.
    pub fn with_value(mut self, value: impl Into<Vec<u8>>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// A new record with this one's key, headers and timestamp and another value: what a
    /// transform emits in its input's place. Unlike `rec.clone().with_value(…)` it copies
    /// neither the old value nor where the input came from (outputs go where the pipeline
    /// sends them).
    pub fn with_new_value(&self, value: impl Into<Vec<u8>>) -> Self {
        Record {
            key: self.key.clone(),
            value: Some(value.into()),
            headers: self.headers.clone(),
            timestamp: self.timestamp,
            ..Record::default()
        }
    }

    /// This record with `value` serialized as JSON as its value.
    pub fn with_json<T: Serialize + ?Sized>(mut self, value: &T) -> Result<Self> {
        self.value = Some(serde_json::to_vec(value)?);
        Ok(self)
    }

    /// This record as a tombstone: same key, headers and timestamp, no value.
    pub fn without_value(mut self) -> Self {
        self.value = None;
        self
    }

    /// This record with another key.
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// This record with a header added (an existing header of that name is replaced).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        let name = name.into();
        self.headers.retain(|(k, _)| *k != name);
        self.headers.push((name, value.into()));
        self
    }

    /// This record with another event time.
    pub fn with_timestamp(mut self, timestamp_ms: i64) -> Self {
        self.timestamp = timestamp_ms;
        self
    }

    /// This record as if it had been read from `topic`, `partition` at `offset` (for tests).
    pub fn at(mut self, topic: impl Into<Arc<str>>, partition: i32, offset: i64) -> Self {
        self.topic = topic.into();
        self.partition = partition;
        self.offset = offset;
        self
    }
}

/// What a `#[transform]` function may return: no record, one, or many.
pub trait IntoRecords {
    fn into_records(self) -> Vec<Record>;
}

impl IntoRecords for Record {
    fn into_records(self) -> Vec<Record> {
        vec![self]
    }
}

impl IntoRecords for Option<Record> {
    fn into_records(self) -> Vec<Record> {
        self.into_iter().collect()
    }
}

impl IntoRecords for Vec<Record> {
    fn into_records(self) -> Vec<Record> {
        self
    }
}
