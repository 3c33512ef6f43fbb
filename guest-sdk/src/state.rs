use serde::{de::DeserializeOwned, Serialize};

use crate::{__rt, Error, Result};

/// Keyed state for the record being processed: values live in the host's store, scoped to this
/// stage and the record's key, and survive plugin reloads and restarts.
///
/// Values are stored as JSON. A TTL counts in event time from the record's timestamp, so a
/// replay after a crash makes the same decisions as the first run.
pub struct State {
    rec: u32,
}

impl State {
    #[doc(hidden)]
    pub fn __for_record(rec: u32) -> Self {
        State { rec }
    }

    /// The record it is the state of, by index in the batch.
    #[doc(hidden)]
    pub fn __rec(&self) -> u32 {
        self.rec
    }

    /// The value stored under `name`, if any.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        match self.get_bytes(name) {
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::msg(format!(
                    "state `{name}` does not hold the expected JSON: {e}"
                ))
            }),
            None => Ok(None),
        }
    }

    /// Store `value` under `name`.
    pub fn put<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<()> {
        self.put_bytes(name, &serde_json::to_vec(value)?, None)
    }

    /// Store `value` under `name` until `ttl_ms` after the record's event time.
    pub fn put_with_ttl<T: Serialize + ?Sized>(
        &self,
        name: &str,
        value: &T,
        ttl_ms: u64,
    ) -> Result<()> {
        self.put_bytes(name, &serde_json::to_vec(value)?, Some(ttl_ms))
    }

    /// Remove `name`.
    pub fn delete(&self, name: &str) {
        __rt::with_host(|h| h.state_delete(self.rec, name))
    }

    /// The raw bytes stored under `name`.
    pub fn get_bytes(&self, name: &str) -> Option<Vec<u8>> {
        __rt::with_host(|h| h.state_get(self.rec, name))
    }

    /// Store raw bytes under `name`, optionally with a TTL in milliseconds of event time.
    pub fn put_bytes(&self, name: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<()> {
        __rt::with_host(|h| h.state_put(self.rec, name, value, ttl_ms)).map_err(Error::msg)
    }

    /// Every entry whose name starts with `prefix`, in name order.
    pub fn scan(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        __rt::with_host(|h| h.state_scan(self.rec, prefix))
    }
}
