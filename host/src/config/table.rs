//! `[[table]]`: tables the host keeps from topics, for stages to look rows up in.

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
    /// Line of the `[[table]]` entry, for messages.
    pub line: usize,
}

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
        tables.push(TableConfig {
            name,
            topic: file.topic.clone(),
            key: file.key.clone(),
            format: file.format,
            line,
        });
    }
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Pipeline, TableFormat};

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
        let unknown = parse(&format!("{}{STAGE}", table("t", "partitioned = true"))).unwrap_err();
        assert!(unknown.contains("unknown field `partitioned`"), "{unknown}");
        let format = parse(&table("t", "").replace("upsert", "avro")).unwrap_err();
        assert!(format.contains("unknown variant `avro`"), "{format}");
    }
}
