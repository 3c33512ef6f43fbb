//! A window stage's settings (`window`, `time`, `watermark`, `allowed_lateness`, `late`), as
//! the chain's window stages take them.

use std::time::Duration;

/// How a window stage groups records in time; every length in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowKind {
    /// Fixed, non-overlapping windows of `size`.
    Tumbling { size: i64 },
    /// Windows of `size` starting every `slide`: a record is in `size / slide` of them.
    Sliding { size: i64, slide: i64 },
    /// Per key, records closer than `gap` to each other share a window.
    Session { gap: i64 },
}

/// Where a record's event time comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventTime {
    /// The Kafka record timestamp.
    Record,
    /// A JSON pointer into the value: milliseconds since the epoch, or an RFC 3339 string.
    Field(String),
}

/// What happens to a record too late for every window it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LateOutput {
    /// Counted and dropped.
    Drop,
    /// Sent, unchanged, to this topic.
    Topic(String),
    /// Sent to the dead-letter topic, with the error kind `late`.
    DeadLetter,
}

/// A window stage's settings, from the pipeline file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowSpec {
    pub kind: WindowKind,
    pub time: EventTime,
    pub max_out_of_order: i64,
    /// A partition without records for this long stops holding the watermark back.
    pub idle_timeout: Option<Duration>,
    pub allowed_lateness: i64,
    pub late: LateOutput,
}

impl WindowSpec {
    /// One line for `weir check`.
    pub fn describe(&self) -> String {
        let kind = match self.kind {
            WindowKind::Tumbling { size } => format!("tumbling {size} ms windows"),
            WindowKind::Sliding { size, slide } => {
                format!("sliding {size} ms windows every {slide} ms")
            }
            WindowKind::Session { gap } => format!("session windows (gap {gap} ms)"),
        };
        let time = match &self.time {
            EventTime::Record => "the record timestamp".to_string(),
            EventTime::Field(f) => format!("`{f}`"),
        };
        let late = match &self.late {
            LateOutput::Drop => "dropped (counted)".to_string(),
            LateOutput::Topic(t) => format!("to `{t}`"),
            LateOutput::DeadLetter => "dead-lettered".to_string(),
        };
        format!(
            "{kind} on {time}, watermark {} ms behind{}, lateness {} ms, late records {late}",
            self.max_out_of_order,
            self.idle_timeout
                .map_or(String::new(), |d| format!(" (idle after {d:?})")),
            self.allowed_lateness
        )
    }
}
