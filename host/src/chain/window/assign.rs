//! Which windows a record belongs to: tumbling and sliding windows by its event time alone,
//! sessions by merging with the key's other records and stored sessions.

use crate::{
    config::{EventTime, WindowKind},
    engine::Record,
};

impl WindowKind {
    /// The windows a record at `ts` belongs to, before any session merging.
    pub(super) fn assign(self, ts: i64, out: &mut Vec<(i64, i64)>) {
        out.clear();
        match self {
            WindowKind::Tumbling { size } => {
                let start = start_of(ts, size);
                out.push((start, start + size));
            }
            WindowKind::Sliding { size, slide } => {
                let mut start = start_of(ts, slide);
                while start > ts - size {
                    out.push((start, start + size));
                    start -= slide;
                }
            }
            WindowKind::Session { gap } => out.push((ts, ts.saturating_add(gap))),
        }
    }
}

/// The start of the window of `size` (aligned to the epoch) that `ts` falls in.
fn start_of(ts: i64, size: i64) -> i64 {
    ts - ts.rem_euclid(size)
}

/// A window being formed in a batch: key, start, end.
pub(super) type Pending = (Option<Vec<u8>>, i64, i64);

/// One key's session after merging: its bounds, the batch's records in it (by index) and the
/// stored sessions it covers.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Session {
    pub(super) start: i64,
    pub(super) end: i64,
    pub(super) members: Vec<usize>,
    pub(super) stored: Vec<(i64, i64)>,
}

/// Merge stored sessions and the records' proto-sessions `(ts, ts + gap, index)` wherever they
/// overlap or touch (Flink's `TimeWindow::intersects`), keeping only sessions with new records.
pub(super) fn sessions(
    stored: &[(i64, i64)],
    protos: impl Iterator<Item = (i64, i64, usize)>,
) -> Vec<Session> {
    let mut spans: Vec<(i64, i64, Option<usize>)> =
        stored.iter().map(|&(s, e)| (s, e, None)).collect();
    spans.extend(protos.map(|(s, e, i)| (s, e, Some(i))));
    spans.sort_by_key(|&(s, e, _)| (s, e));
    let mut merged: Vec<Session> = Vec::new();
    for (start, end, member) in spans {
        let session = match merged.last_mut() {
            Some(last) if start <= last.end => last,
            _ => {
                merged.push(Session {
                    start,
                    end,
                    members: Vec::new(),
                    stored: Vec::new(),
                });
                merged.last_mut().expect("pushed")
            }
        };
        session.end = session.end.max(end);
        match member {
            Some(i) => session.members.push(i),
            None => session.stored.push((start, end)),
        }
    }
    merged.retain(|s| !s.members.is_empty());
    for s in &mut merged {
        s.members.sort_unstable();
    }
    merged
}

/// The event time of `rec`, or why it has none.
pub(crate) fn event_time(time: &EventTime, rec: &Record) -> Result<i64, String> {
    let pointer = match time {
        EventTime::Record => return Ok(rec.timestamp),
        EventTime::Field(pointer) => pointer,
    };
    let value = rec.value.as_deref().ok_or_else(|| {
        format!("no event time: the record has no value to read `{pointer}` from")
    })?;
    let json: serde_json::Value = serde_json::from_slice(value)
        .map_err(|e| format!("no event time: the value is not JSON ({e})"))?;
    match json.pointer(pointer) {
        None => Err(format!("no event time: the value has no `{pointer}`")),
        Some(serde_json::Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .ok_or_else(|| format!("event time `{pointer}` = {n} is out of range")),
        Some(serde_json::Value::String(s)) => humantime::parse_rfc3339_weak(s)
            .map_err(|e| format!("event time `{pointer}` = \"{s}\" is not RFC 3339: {e}"))
            .map(|t| match t.duration_since(std::time::UNIX_EPOCH) {
                Ok(d) => d.as_millis() as i64,
                Err(e) => -(e.duration().as_millis() as i64),
            }),
        Some(other) => Err(format!(
            "event time `{pointer}` is {other}, not milliseconds or an RFC 3339 string"
        )),
    }
}
