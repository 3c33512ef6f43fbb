//! A record as the host sees it: weir's own type rather than the generated binding's, so the
//! layers above the engine do not change when the contract does. Filters and transforms cross
//! the boundary in the batch wire format ([`super::wire`]); window panes carry the contract's
//! `event`, converted here.

use super::bindings::types;

/// A Kafka record with the coordinates of the source record it came from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<Header>,
    /// Milliseconds since the epoch (-1: none).
    pub timestamp: i64,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// A record header. Kafka allows repeated names; order is kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: Vec<u8>,
}

impl From<&Record> for types::Event {
    fn from(r: &Record) -> types::Event {
        types::Event {
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r.headers.iter().map(types::Header::from).collect(),
            timestamp: r.timestamp,
            topic: r.topic.clone(),
            partition: r.partition,
            offset: r.offset,
        }
    }
}

impl From<&Header> for types::Header {
    fn from(h: &Header) -> types::Header {
        types::Header {
            key: h.key.clone(),
            value: h.value.clone(),
        }
    }
}

impl From<types::Header> for Header {
    fn from(h: types::Header) -> Header {
        Header {
            key: h.key,
            value: h.value,
        }
    }
}
