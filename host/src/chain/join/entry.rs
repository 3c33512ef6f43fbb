//! A join's records as keyed state: one entry per kept record under its join key, named by
//! side, event time and offset (fixed-width and sign-flipped, so a key's records of one side
//! scan in time order), holding a "has paired" flag, the record's Kafka key and its value;
//! beside them, under no key, each side's progress, the watermark and the other topic's
//! position.

use crate::{
    config::JoinSpec,
    engine::{Entry, ErrorKind, Record, StateKey},
    table::{kafka_key_text, key_text},
};

pub(super) use crate::chain::window::{read_i64, write_i64};

use super::event_time;

/// The stream's side.
pub(super) const LEFT: usize = 0;
/// The other topic's side.
pub(super) const RIGHT: usize = 1;

const PREFIXES: [&str; 2] = ["jl", "jr"];

/// The name of the entry of a record of `side` at `time` and `offset`, the `seq`-th of those
/// with that offset (a flat-map before the stage makes several of one input).
pub(super) fn name(side: usize, time: i64, offset: i64, seq: u32) -> String {
    format!(
        "{}{:016x}{:016x}{seq:08x}",
        PREFIXES[side],
        (time as u64) ^ (1 << 63),
        offset as u64
    )
}

/// What the entries of `side`'s records are named with.
pub(super) fn prefix(side: usize) -> &'static str {
    PREFIXES[side]
}

/// Side, event time and offset of a record's entry; `None` for other entries.
pub(super) fn parse_name(name: &str) -> Option<(usize, i64, i64)> {
    let side = PREFIXES.iter().position(|p| name.starts_with(p))?;
    let hex = &name[2..];
    if hex.len() != 40 || !hex.is_ascii() {
        return None;
    }
    let time = u64::from_str_radix(&hex[..16], 16).ok()? ^ (1 << 63);
    let offset = u64::from_str_radix(&hex[16..32], 16).ok()?;
    u32::from_str_radix(&hex[32..], 16).ok()?;
    Some((side, time as i64, offset as i64))
}

/// The offset the other topic's partition is read from.
pub(super) fn next_key() -> StateKey {
    (None, "join-next".into())
}

/// The largest event time of `side`.
pub(super) fn max_key(side: usize) -> StateKey {
    (None, ["join-max-left", "join-max-right"][side].into())
}

/// The offset after the last record of the stream taken in.
pub(super) fn taken_key() -> StateKey {
    (None, "join-taken".into())
}

/// The next number of a record of no single input.
pub(super) fn unnumbered_key() -> StateKey {
    (None, "join-unnumbered".into())
}

pub(super) fn watermark_key() -> StateKey {
    (None, "join-watermark".into())
}

/// A kept record: whether it paired, and what an output needs of it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Buffered {
    pub paired: bool,
    pub key: Option<Vec<u8>>,
    /// JSON (checked when it came).
    pub value: Option<Vec<u8>>,
}

/// Marks a kept record without a Kafka key.
const NO_KEY: u32 = u32::MAX;

impl Buffered {
    pub(super) fn of(rec: &Record) -> Buffered {
        Buffered {
            paired: false,
            key: rec.key.clone(),
            value: rec.value.clone(),
        }
    }

    pub(super) fn encode(&self) -> Entry {
        let key = self.key.as_deref().unwrap_or_default();
        let value = self.value.as_deref().unwrap_or_default();
        let mut bytes = Vec::with_capacity(5 + key.len() + value.len());
        bytes.push(u8::from(self.paired));
        let len = self.key.as_ref().map_or(NO_KEY, |k| k.len() as u32);
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(value);
        Entry::new(bytes, 0)
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<Buffered> {
        let (&paired, rest) = bytes.split_first()?;
        let (len, rest) = rest.split_first_chunk::<4>()?;
        let (key, value) = match u32::from_be_bytes(*len) {
            NO_KEY => (None, rest),
            len => {
                let (key, value) = rest.split_at_checked(len as usize)?;
                (Some(key.to_vec()), value)
            }
        };
        Some(Buffered {
            paired: paired == 1,
            key,
            value: Some(value.to_vec()),
        })
    }
}

/// The event time and join key of a record of `side`; why it has none. Its value must be JSON,
/// which the output embeds.
pub(super) fn read_record(
    spec: &JoinSpec,
    side: usize,
    rec: &Record,
) -> Result<(i64, Vec<u8>), (ErrorKind, String)> {
    let join = |message: String| (ErrorKind::Join, message);
    let time = event_time(&spec.time, rec).map_err(|e| (ErrorKind::EventTime, e))?;
    let value = rec
        .value
        .as_deref()
        .ok_or_else(|| join("a tombstone has nothing to join".into()))?;
    let json: serde_json::Value =
        serde_json::from_slice(value).map_err(|e| join(format!("the value is not JSON ({e})")))?;
    let pointer = match side {
        LEFT => spec.key.as_deref(),
        _ => spec.other_key.as_deref(),
    };
    let key = match pointer {
        Some(pointer) => {
            let found = json
                .pointer(pointer)
                .ok_or_else(|| join(format!("the value has no join key `{pointer}`")))?;
            key_text(found, pointer).map_err(join)?
        }
        None => rec
            .key
            .as_deref()
            .map(kafka_key_text)
            .ok_or_else(|| join("the record has no key to join on".into()))?,
    };
    Ok((time, key))
}
