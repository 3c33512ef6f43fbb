//! `[[table]]`: tables the host keeps from topics, for stages to look rows up in.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// A table kept from a topic: every change on the topic replaces or removes one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableConfig {
    /// What stages call it (`tables = ["customers"]`, `tables.get("customers", key)`).
    pub name: String,
    pub topic: String,
    /// JSON pointer to the row's key field; none: the Kafka record key is the row's key.
    pub key: Option<String>,
    pub format: TableFormat,
    /// Which row a record is joined with: the latest, or the one current at its event time.
    pub as_of: AsOf,
    /// Kept per partition, co-partitioned with the source (a KTable): each instance reads and
    /// keeps only the partitions whose numbers it is assigned of the source's topics. False:
    /// every instance keeps the whole table (a GlobalKTable).
    pub partitioned: bool,
    /// Line of the `[[table]]` entry, for messages.
    pub line: usize,
}

/// Which version of a row a lookup finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// The row as the table's topic last changed it (Kafka Streams' KTable join).
    Latest,
    /// The row current at the looking record's event time (Flink's temporal join): versions
    /// are kept for `retention` (ms, in event time) behind the newest of each row.
    EventTime { retention: i64 },
}

/// How long row versions are kept unless `retention` says otherwise.
const DEFAULT_RETENTION: Duration = Duration::from_secs(3600);

/// How a table's topic tells a row's changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableFormat {
    /// Debezium change events: `after` is the row (`op` c, u, r), `op = "d"` and tombstones
    /// delete it, `op = "t"` empties the table.
    Debezium,
    /// The value is the row; a tombstone deletes it.
    Upsert,
}

impl TableFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            TableFormat::Debezium => "debezium",
            TableFormat::Upsert => "upsert",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TableFile {
    name: Spanned<String>,
    topic: String,
    key: Option<String>,
    format: TableFormat,
    as_of: Option<String>,
    #[serde(default, deserialize_with = "super::optional_duration")]
    retention: Option<Duration>,
    #[serde(default)]
    partitioned: bool,
}

impl TableFile {
    /// `as_of` and `retention`, checked.
    fn as_of(&self) -> Result<AsOf, String> {
        match (self.as_of.as_deref(), self.retention) {
            (None | Some("latest"), None) => Ok(AsOf::Latest),
            (None | Some("latest"), Some(_)) => Err(
                "`retention` is for as_of = \"event-time\" (the versions of a row it keeps)".into(),
            ),
            (Some("event-time"), retention) => {
                let retention = retention.unwrap_or(DEFAULT_RETENTION);
                if retention.is_zero() {
                    return Err("`retention` must be longer than 0".into());
                }
                Ok(AsOf::EventTime {
                    retention: retention.as_millis().min(i64::MAX as u128) as i64,
                })
            }
            (Some(other), _) => Err(format!(
                "as_of = \"{other}\": write \"latest\" (the default) or \"event-time\""
            )),
        }
    }
}

/// The `[[table]]` entries of a file, checked: names unique and not empty, keys JSON pointers.
pub(super) fn tables(
    files: &[Spanned<TableFile>],
    line_of: impl Fn(usize) -> usize,
) -> Result<Vec<TableConfig>, (usize, String)> {
    let mut tables: Vec<TableConfig> = Vec::new();
    for spanned in files {
        let line = line_of(spanned.span().start);
        let file = spanned.get_ref();
        let name = file.name.get_ref().trim().to_string();
        let wrong = |message: String| (line, format!("table `{name}`: {message}"));
        if name.is_empty() {
            return Err((line, "table `name` is empty".into()));
        }
        if let Some(other) = tables.iter().find(|t| t.name == name) {
            return Err(wrong(format!(
                "the name is already used by the table at line {}",
                other.line
            )));
        }
        if file.topic.trim().is_empty() {
            return Err(wrong("`topic` is empty".into()));
        }
        match &file.key {
            Some(key) if !key.starts_with('/') => {
                return Err(wrong(format!(
                    "key = \"{key}\" is not a JSON pointer (those start with `/`, as \"/id\")"
                )))
            }
            None if file.format == TableFormat::Debezium => {
                return Err(wrong(
                    "format = \"debezium\" needs `key`, the pointer to the key column in the \
                     row (as \"/id\")"
                        .into(),
                ))
            }
            _ => {}
        }
        let as_of = file.as_of().map_err(wrong)?;
        tables.push(TableConfig {
            name,
            topic: file.topic.clone(),
            key: file.key.clone(),
            format: file.format,
            as_of,
            partitioned: file.partitioned,
            line,
        });
    }
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{AsOf, Pipeline, TableFormat};

    const STAGE: &str = "[[stage]]\nname = \"join\"\nplugin = \"j.wasm\"\n";

    fn parse(text: &str) -> Result<Pipeline, String> {
        Pipeline::parse(Path::new("p.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn tables_are_read_with_their_grants() {
        let text = format!(
            "[[table]]\nname = \"customers\"\ntopic = \"shop.public.customers\"\nkey = \"/id\"\n\
             format = \"debezium\"\n\n[[table]]\nname = \"rates\"\ntopic = \"rates\"\n\
             format = \"upsert\"\n\n{STAGE}tables = [\"customers\", \"rates\"]\n"
        );
        let p = parse(&text).unwrap();
        assert_eq!(p.tables.len(), 2);
        assert_eq!(p.tables[0].key.as_deref(), Some("/id"));
        assert_eq!(p.tables[1].format, TableFormat::Upsert);
        assert_eq!((p.tables[0].line, p.tables[1].line), (1, 7));
        assert_eq!(p.stages[0].tables, ["customers", "rates"]);
        assert_eq!(p.tables[0].as_of, AsOf::Latest);
        assert!(!p.tables[0].partitioned);
        let partitioned =
            text.replace("topic = \"rates\"", "topic = \"rates\"\npartitioned = true");
        assert!(parse(&partitioned).unwrap().tables[1].partitioned);
        let as_of = text.replace(
            "format = \"debezium\"",
            "format = \"debezium\"\nas_of = \"event-time\"\nretention = \"10m\"",
        );
        let p = parse(&as_of).unwrap();
        assert_eq!(p.tables[0].as_of, AsOf::EventTime { retention: 600_000 });
    }

    #[test]
    fn a_wrong_table_or_grant_is_named_with_its_line() {
        let table = |name: &str, rest: &str| {
            format!("[[table]]\nname = \"{name}\"\ntopic = \"t\"\nformat = \"upsert\"\n{rest}\n")
        };
        let cases = [
            (
                format!("{}{STAGE}tables = [\"custmers\"]\n", table("customers", "")),
                "p.toml:6: stage `join`: tables = [\"custmers\"], but no [[table]] is named \
                 `custmers` (the file has [customers])",
            ),
            (
                format!("{}{}{STAGE}", table("t", ""), table("t", "")),
                "p.toml:6: table `t`: the name is already used by the table at line 1",
            ),
            (
                format!("{}{STAGE}", table("t", "key = \"id\"")),
                "p.toml:1: table `t`: key = \"id\" is not a JSON pointer (those start with `/`, \
                 as \"/id\")",
            ),
            (
                format!("{}{STAGE}", table("t", "").replace("upsert", "debezium")),
                "p.toml:1: table `t`: format = \"debezium\" needs `key`, the pointer to the key \
                 column in the row (as \"/id\")",
            ),
            (
                format!(
                    "{}{STAGE}tables = [\"t\"]\nwindow = {{ kind = \"tumbling\", size = \"1m\" }}\n",
                    table("t", "")
                ),
                "p.toml:6: stage `join`: `tables` is for filter and transform stages, not window \
                 stages",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse(&text).unwrap_err(), want, "{text}");
        }
        for (rest, want) in [
            ("as_of = \"now\"", "as_of = \"now\": write \"latest\""),
            (
                "retention = \"1h\"",
                "`retention` is for as_of = \"event-time\"",
            ),
            (
                "as_of = \"event-time\"\nretention = 0",
                "`retention` must be longer than 0",
            ),
        ] {
            let err = parse(&format!("{}{STAGE}", table("t", rest))).unwrap_err();
            assert!(err.contains(want), "{rest}: {err}");
        }
        let unknown = parse(&format!("{}{STAGE}", table("t", "partition = true"))).unwrap_err();
        assert!(unknown.contains("unknown field `partition`"), "{unknown}");
        let format = parse(&table("t", "").replace("upsert", "avro")).unwrap_err();
        assert!(format.contains("unknown variant `avro`"), "{format}");
    }
}
