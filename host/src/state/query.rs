//! Reading keyed state from outside the plugins (`weir state get` and `scan`, the admin
//! server's `/api/state`): what a run holds, by stage and source partition, read without
//! changing it.

use std::sync::{Arc, Mutex, Weak};

use base64::Engine as _;
use serde_json::{json, Value};

use super::PartitionState;
use crate::engine::{Entry, StateBackend, StateKey};

/// The keyed state a run holds now: each stateful stage's state of each source partition
/// assigned to it (a revoked partition's drops out when the run lets it go).
#[derive(Default)]
pub struct Held {
    parts: Mutex<Vec<HeldPart>>,
}

struct HeldPart {
    stage: String,
    topic: String,
    partition: i32,
    state: Weak<PartitionState>,
}

/// What to look for in a stage's state.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// Every entry of one record key.
    Key(Option<Vec<u8>>),
    /// The entries of record keys starting with `prefix`, in key order, at most `limit`.
    Prefix { prefix: Vec<u8>, limit: usize },
}

/// One state entry found.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// The source partition whose state holds it.
    pub topic: String,
    pub partition: i32,
    pub key: Option<Vec<u8>>,
    pub name: String,
    pub entry: Entry,
}

impl Held {
    /// Stage `stage`'s state of `topic`/`partition` is held in `state` from now on.
    pub fn hold(&self, stage: &str, topic: &str, partition: i32, state: &Arc<PartitionState>) {
        let mut parts = self.parts.lock().unwrap_or_else(|e| e.into_inner());
        parts.retain(|p| p.state.strong_count() > 0);
        parts.retain(|p| !(p.stage == stage && p.topic == topic && p.partition == partition));
        parts.push(HeldPart {
            stage: stage.to_string(),
            topic: topic.to_string(),
            partition,
            state: Arc::downgrade(state),
        });
    }

    /// The source partitions whose state of `stage` is held, and what `lookup` finds there.
    pub fn lookup(&self, stage: &str, lookup: &Lookup) -> (Vec<(String, i32)>, Vec<Found>) {
        let held: Vec<(String, i32, Arc<PartitionState>)> = {
            let parts = self.parts.lock().unwrap_or_else(|e| e.into_inner());
            parts
                .iter()
                .filter(|p| p.stage == stage)
                .filter_map(|p| Some((p.topic.clone(), p.partition, p.state.upgrade()?)))
                .collect()
        };
        let states: Vec<(&str, i32, &dyn StateBackend)> = held
            .iter()
            .map(|(t, p, s)| (t.as_str(), *p, s.as_ref() as &dyn StateBackend))
            .collect();
        let partitions = held.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
        (partitions, find(&states, lookup))
    }
}

/// What `lookup` finds in `states` (each a source partition's state of one stage).
pub fn find(states: &[(&str, i32, &dyn StateBackend)], lookup: &Lookup) -> Vec<Found> {
    let mut found = Vec::new();
    for &(topic, partition, state) in states {
        let entries: Vec<(Option<Vec<u8>>, String, Entry)> = match lookup {
            Lookup::Key(key) => state
                .scan(key, "")
                .into_iter()
                .map(|(name, entry)| (key.clone(), name, entry))
                .collect(),
            Lookup::Prefix { prefix, .. } => state
                .all()
                .into_iter()
                .filter(|((key, _), _)| key.as_deref().unwrap_or_default().starts_with(prefix))
                .map(|((key, name), entry)| (key, name, entry))
                .collect(),
        };
        found.extend(entries.into_iter().map(|(key, name, entry)| Found {
            topic: topic.to_string(),
            partition,
            key,
            name,
            entry,
        }));
    }
    found.sort_by(|a, b| (&a.key, &a.name, a.partition).cmp(&(&b.key, &b.name, b.partition)));
    if let Lookup::Prefix { limit, .. } = lookup {
        found.truncate(*limit);
    }
    found
}

impl Found {
    /// As JSON: the key as text (or `key_base64`), the value as the JSON it holds (or
    /// `value_text`, `value_base64`), its state version and expiry, and where it is kept. Every
    /// byte is kept: [`entry_of`] reads it back.
    pub fn to_json(&self) -> Value {
        let mut out = json!({
            "topic": self.topic,
            "partition": self.partition,
            "name": self.name,
            "state_version": self.entry.version,
            "expires_ms": self.entry.expires,
        });
        match self.key.as_deref().map(std::str::from_utf8) {
            None => out["key"] = Value::Null,
            Some(Ok(text)) => out["key"] = text.into(),
            Some(Err(_)) => out["key_base64"] = base64(self.key.as_deref().unwrap()).into(),
        }
        let value = &self.entry.value;
        // As JSON only where writing the JSON back gives the same bytes, so nothing is lost.
        let json = serde_json::from_slice::<Value>(value)
            .ok()
            .filter(|json| json.to_string().as_bytes() == value.as_slice());
        match (json, std::str::from_utf8(value)) {
            (Some(json), _) => out["value"] = json,
            (None, Ok(text)) => out["value_text"] = text.into(),
            (None, Err(_)) => out["value_base64"] = base64(value).into(),
        }
        out
    }
}

/// An entry as [`Found::to_json`] shows it (`weir state scan --json`), back as the state key
/// and entry it shows: what `weir diff --state` starts from.
pub fn entry_of(shown: &Value) -> Result<(StateKey, Entry), String> {
    let text = |field: &str| shown.get(field).and_then(Value::as_str);
    let decoded = |field: &str| -> Result<Option<Vec<u8>>, String> {
        text(field)
            .map(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .map_err(|e| format!("`{field}` is not base64: {e}"))
            })
            .transpose()
    };
    let key = match (shown.get("key"), decoded("key_base64")?) {
        (_, Some(bytes)) => Some(bytes),
        (Some(Value::String(k)), None) => Some(k.clone().into_bytes()),
        (Some(Value::Null) | None, None) => None,
        (Some(other), None) => return Err(format!("`key` is {other}, not text")),
    };
    let name = text("name").ok_or("no `name`")?.to_string();
    let value = match (
        shown.get("value"),
        text("value_text"),
        decoded("value_base64")?,
    ) {
        (Some(json), None, None) => json.to_string().into_bytes(),
        (None, Some(t), None) => t.as_bytes().to_vec(),
        (None, None, Some(bytes)) => bytes,
        _ => return Err("give one of `value`, `value_text` and `value_base64`".into()),
    };
    let version = match shown.get("state_version") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or(format!("`state_version` is {v}, not a version"))?,
    };
    let expires = shown.get("expires_ms").and_then(Value::as_i64);
    Ok((
        (key, name),
        Entry {
            value,
            expires,
            version,
        },
    ))
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::MemoryState;
    use std::collections::BTreeMap;

    fn state(entries: &[(&str, &str, &[u8])]) -> crate::engine::SharedState {
        let state = MemoryState::shared();
        let writes = entries
            .iter()
            .map(|(k, n, v)| {
                let key = (Some(k.as_bytes().to_vec()), n.to_string());
                (key, Some(Entry::new(v.to_vec(), 1)))
            })
            .collect::<BTreeMap<_, _>>();
        state.apply(writes);
        state
    }

    #[test]
    fn a_key_is_found_in_its_partition_and_a_prefix_scan_is_ordered_and_limited() {
        let p0 = state(&[("k0", "seen", br#"{"n":3}"#), ("k2", "seen", b"\xff")]);
        let p1 = state(&[
            ("k1", "seen", b"7"),
            ("k1", "last", b"text"),
            ("x", "seen", b"1"),
        ]);
        let states = [("in", 0, p0.as_ref()), ("in", 1, p1.as_ref())];
        let k1 = find(&states, &Lookup::Key(Some(b"k1".to_vec())));
        let shown: Vec<Value> = k1.iter().map(Found::to_json).collect();
        assert_eq!(
            shown,
            [
                json!({"topic": "in", "partition": 1, "key": "k1", "name": "last",
                       "value_text": "text", "state_version": 1, "expires_ms": null}),
                json!({"topic": "in", "partition": 1, "key": "k1", "name": "seen",
                       "value": 7, "state_version": 1, "expires_ms": null}),
            ]
        );
        let scan = |prefix: &str, limit| {
            let lookup = Lookup::Prefix {
                prefix: prefix.as_bytes().to_vec(),
                limit,
            };
            find(&states, &lookup)
                .iter()
                .map(|f| {
                    format!(
                        "{}/{}",
                        String::from_utf8_lossy(f.key.as_deref().unwrap()),
                        f.name
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(scan("k", 10), ["k0/seen", "k1/last", "k1/seen", "k2/seen"]);
        assert_eq!(scan("", 2), ["k0/seen", "k1/last"]);
        let k2 = find(&states, &Lookup::Key(Some(b"k2".to_vec())));
        assert_eq!(k2[0].to_json()["value_base64"], "/w==");
    }

    #[test]
    fn what_is_shown_reads_back_as_the_entry_it_shows() {
        let entries = [
            (Some(b"k".to_vec()), br#"{"n":3}"#.to_vec()),
            (Some(b"k".to_vec()), br#"{ "n": 3 }"#.to_vec()),
            (Some(vec![0xff, 0]), b"plain text".to_vec()),
            (None, vec![0xfe, 0x00]),
        ];
        for (key, value) in entries {
            let found = Found {
                topic: "t".into(),
                partition: 0,
                key: key.clone(),
                name: "seen".into(),
                entry: Entry {
                    value: value.clone(),
                    expires: Some(99),
                    version: 2,
                },
            };
            let (read_key, entry) = entry_of(&found.to_json()).unwrap();
            assert_eq!(read_key, (key, "seen".to_string()));
            assert_eq!(entry, found.entry);
        }
        let err = entry_of(&json!({"name": "a", "value": 1, "value_text": "1"})).unwrap_err();
        assert_eq!(err, "give one of `value`, `value_text` and `value_base64`");
    }
}
