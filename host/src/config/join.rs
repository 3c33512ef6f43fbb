//! A join stage's settings (`join = { topic, key, within, outer }`, with the window stages'
//! `time`, `watermark` and `late`): an interval join of the stage's records with another topic.

use std::time::Duration;

use serde::Deserialize;

use super::window::{EventTime, LateOutput};

/// An interval join (Flink's): each record of the stream is paired with each record of `topic`
/// of the same key whose event time is at most `within` before or after its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinSpec {
    /// The other side's topic, partitioned as the source is (by the join key).
    pub topic: String,
    /// JSON pointer to the key in a record of the stream; none: the Kafka record key.
    pub key: Option<String>,
    /// The same in a record of `topic`; none: as `key`.
    pub other_key: Option<String>,
    /// Milliseconds: records pair when their event times are at most this far apart.
    pub within: i64,
    /// Which records that paired with nothing are emitted alone once the watermark passes them.
    pub outer: Outer,
    /// Where those go instead of to the plugin, as they came (`unmatched = { topic = "…" }`);
    /// none: to the plugin, as a pair with `null` for the side they lack.
    pub unmatched: Option<String>,
    pub time: EventTime,
    pub max_out_of_order: i64,
    /// A side without records for this long stops holding the watermark back.
    pub idle_timeout: Duration,
    pub late: LateOutput,
}

/// Which unpaired records a join emits (with `null` for the side they lack).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outer {
    /// None: pairs only (an inner join).
    Inner,
    /// The stream's records (a left outer join).
    Left,
    /// The other topic's records.
    Right,
    /// Both.
    Full,
}

impl Outer {
    /// Whether unpaired records of the stream (`left`) or the topic are emitted.
    pub fn keeps(self, left: bool) -> bool {
        match self {
            Outer::Inner => false,
            Outer::Full => true,
            Outer::Left => left,
            Outer::Right => !left,
        }
    }
}

/// How long a side may go without records before it stops holding the watermark back, unless
/// `watermark.idle_timeout` says otherwise: an idle side would otherwise keep every record of
/// the other side (and the unpaired ones of an outer join) waiting forever.
const DEFAULT_IDLE: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct JoinFile {
    topic: String,
    key: Option<String>,
    other_key: Option<String>,
    #[serde(deserialize_with = "super::duration")]
    within: Duration,
    outer: Option<Outer>,
    unmatched: Option<UnmatchedFile>,
}

/// `{ topic = "…" }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnmatchedFile {
    topic: String,
}

impl JoinFile {
    /// The join's settings, checked, with the stage's event-time settings.
    pub(super) fn spec(
        &self,
        time: EventTime,
        watermark: (i64, Option<Duration>),
        late: LateOutput,
    ) -> Result<JoinSpec, String> {
        if self.topic.trim().is_empty() {
            return Err("join.topic is empty: name the topic to join with".into());
        }
        if self.within.is_zero() {
            return Err("join.within must be longer than 0".into());
        }
        for (what, key) in [("key", &self.key), ("other_key", &self.other_key)] {
            if let Some(key) = key.as_deref().filter(|k| !k.starts_with('/')) {
                return Err(format!(
                    "join.{what} = \"{key}\" is not a JSON pointer (those start with `/`, as \
                     \"/order_id\")"
                ));
            }
        }
        let outer = self.outer.unwrap_or(Outer::Inner);
        let unmatched = self.unmatched.as_ref().map(|u| u.topic.trim().to_string());
        match (&unmatched, outer) {
            (Some(_), Outer::Inner) => {
                return Err(
                    "join.unmatched is for outer joins, whose unpaired records it \
                            takes: set outer = \"left\", \"right\" or \"full\""
                        .into(),
                )
            }
            (Some(topic), _) if topic.is_empty() => {
                return Err("join.unmatched.topic is empty".into())
            }
            _ => {}
        }
        Ok(JoinSpec {
            topic: self.topic.clone(),
            key: self.key.clone(),
            other_key: self.other_key.clone().or_else(|| self.key.clone()),
            within: self.within.as_millis().min(i64::MAX as u128) as i64,
            outer,
            unmatched,
            time,
            max_out_of_order: watermark.0,
            idle_timeout: watermark.1.unwrap_or(DEFAULT_IDLE),
            late,
        })
    }
}

impl JoinSpec {
    /// One line for `weir check`.
    pub fn describe(&self) -> String {
        let outer = match self.outer {
            Outer::Inner => "pairs only",
            Outer::Left => "pairs, and this stream's unpaired records",
            Outer::Right => "pairs, and the topic's unpaired records",
            Outer::Full => "pairs, and every unpaired record",
        };
        let to = match &self.unmatched {
            Some(topic) => format!(", unpaired ones to `{topic}`"),
            None => String::new(),
        };
        format!(
            "joins `{}` within {} ms ({outer}{to}), watermark {} ms behind",
            self.topic, self.within, self.max_out_of_order
        )
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{EventTime, Outer, Pipeline};

    fn parse(stage: &str) -> Result<Pipeline, String> {
        let text = format!(
            "[source]\nbrokers = \"b\"\ntopics = [\"orders\"]\ngroup = \"g\"\n\n\
             [sink]\ntopic = \"out\"\n\n[[stage]]\nname = \"paid\"\nplugin = \"p.wasm\"\n{stage}\n"
        );
        Pipeline::parse(Path::new("p.toml"), &text).map_err(|e| e.to_string())
    }

    #[test]
    fn a_join_stage_reads_its_topic_key_bound_and_event_time() {
        let p = parse(
            "join = { topic = \"payments\", key = \"/id\", other_key = \"/order\", \
             within = \"5m\", outer = \"left\" }\ntime = { field = \"/ts\" }\n\
             watermark = { max_out_of_order = \"2s\" }",
        )
        .unwrap();
        let join = p.stages[0].join.as_deref().unwrap();
        assert_eq!(join.topic, "payments");
        assert_eq!(
            (join.key.as_deref(), join.other_key.as_deref()),
            (Some("/id"), Some("/order"))
        );
        assert_eq!((join.within, join.outer), (300_000, Outer::Left));
        assert_eq!(join.time, EventTime::Field("/ts".into()));
        assert_eq!(join.max_out_of_order, 2_000);
        let p = parse("join = { topic = \"payments\", key = \"/id\", within = \"1s\" }").unwrap();
        let join = p.stages[0].join.as_deref().unwrap();
        assert_eq!(
            (join.other_key.as_deref(), join.outer),
            (Some("/id"), Outer::Inner)
        );
    }

    #[test]
    fn a_join_that_cannot_be_is_refused_with_its_line() {
        for (stage, want) in [
            (
                "join = { topic = \"payments\", within = \"0s\" }",
                "p.toml:9: stage `paid`: join.within must be longer than 0",
            ),
            (
                "join = { topic = \"payments\", key = \"id\", within = \"1s\" }",
                "p.toml:9: stage `paid`: join.key = \"id\" is not a JSON pointer",
            ),
            (
                "join = { topic = \"orders\", within = \"1s\" }",
                "p.toml:9: stage `paid`: join.topic `orders` is also a source topic",
            ),
            (
                "join = { topic = \"out\", within = \"1s\" }",
                "p.toml:9: stage `paid`: join.topic `out` is the sink topic",
            ),
            (
                "join = { topic = \"payments\", within = \"1s\" }\n\
                 window = { kind = \"tumbling\", size = \"1m\" }",
                "p.toml:9: stage `paid`: a stage has `window` or `join`, not both",
            ),
            (
                "join = { topic = \"payments\", within = \"1s\" }\nallowed_lateness = \"1s\"",
                "p.toml:9: stage `paid`: `allowed_lateness` is for window stages",
            ),
            (
                "join = { topic = \"payments\", within = \"1s\", outer = \"both\" }",
                "unknown variant `both`",
            ),
            (
                "join = { topic = \"payments\", within = \"1s\", unmatched = { topic = \"x\" } }",
                "p.toml:9: stage `paid`: join.unmatched is for outer joins",
            ),
        ] {
            let err = parse(stage).unwrap_err();
            assert!(err.contains(want), "{stage}: {err}");
        }
    }
}
