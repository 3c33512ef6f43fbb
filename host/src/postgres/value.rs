//! Column values, from Postgres's text output to JSON as Debezium's JSON converter writes them.
//!
//! Both the replication stream (pgoutput without `binary`) and the snapshot's queries hand over
//! each value in its type's text output, in a session pinned to ISO dates, UTC, ISO-8601
//! intervals, hex bytea and round-trip floats (see [`SESSION_OPTIONS`]); this turns that text
//! into what a reader of Debezium events expects:
//!
//! | Postgres                        | JSON                                                   |
//! |---------------------------------|--------------------------------------------------------|
//! | smallint, integer, bigint, oid  | number                                                 |
//! | real, double precision          | number; `"NaN"`, `"Infinity"`, `"-Infinity"` as strings |
//! | numeric, money                  | string, digits as stored (`decimal.handling.mode=string`) |
//! | boolean                         | `true` / `false`                                       |
//! | text, varchar, char, name, uuid, inet, xml, enums, … | string                            |
//! | json, jsonb                     | the JSON value itself                                  |
//! | bytea                           | base64 string                                          |
//! | date                            | days since 1970-01-01 (`io.debezium.time.Date`)        |
//! | time                            | microseconds since midnight (`MicroTime`)              |
//! | timestamp                       | microseconds since the epoch (`MicroTimestamp`)        |
//! | timestamptz                     | ISO-8601 string in UTC (`ZonedTimestamp`)              |
//! | timetz, interval                | ISO-8601 string (`ZonedTime`; `interval.handling.mode=string`) |
//! | arrays                          | JSON arrays of the element's representation            |
//! | a type not listed               | its text, with one warning per type                    |
//!
//! Dates and times follow Debezium's `time.precision.mode=adaptive_time_microseconds`. A value
//! that does not parse as its type says (the text of a date past year 9999, `infinity`) stays
//! its text: nothing is dropped or turned into null.

use std::collections::HashSet;
use std::sync::Mutex;

use base64::Engine as _;
use serde_json::{Number, Value};

/// Session settings both connections use, so values come in the text this module reads.
pub const SESSION_OPTIONS: &str = "-c datestyle=ISO,YMD -c timezone=UTC -c intervalstyle=iso_8601 \
     -c extra_float_digits=3 -c bytea_output=hex -c client_encoding=UTF8";

/// How a column's text becomes JSON: decided once per column from its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Integer,
    Float,
    /// Kept as its digits (numeric, money).
    Decimal,
    Text,
    Json,
    Bytea,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Array(Box<Kind>),
    /// A type this module does not know: its text, after one warning naming it.
    Unknown(String),
}

impl Kind {
    /// The kind of a built-in type, by OID (`pg_type.oid`); `None` for any other type, which
    /// the catalog has to describe (an enum, a domain, an array of those, an extension's type).
    pub fn builtin(oid: u32) -> Option<Kind> {
        Some(match oid {
            16 => Kind::Bool,
            20 | 21 | 23 | 26 | 28 => Kind::Integer,
            700 | 701 => Kind::Float,
            1700 | 790 => Kind::Decimal,
            114 | 3802 => Kind::Json,
            17 => Kind::Bytea,
            1082 => Kind::Date,
            1083 => Kind::Time,
            1114 => Kind::Timestamp,
            1184 => Kind::TimestampTz,
            // char, name, text, bpchar, varchar, uuid, inet, cidr, macaddr, xml, timetz,
            // interval, bit, varbit, tsvector, pg_lsn: their text is what Debezium gives.
            18 | 19 | 25 | 1042 | 1043 | 2950 | 869 | 650 | 829 | 774 | 142 | 1266 | 1186
            | 1560 | 1562 | 3614 | 3220 => Kind::Text,
            _ => return array_element(oid).map(|e| Kind::Array(Box::new(e))),
        })
    }
}

/// The element kind of a built-in array type.
fn array_element(oid: u32) -> Option<Kind> {
    let element = match oid {
        1000 => 16,
        1001 => 17,
        1002 => 18,
        1003 => 19,
        1005 => 21,
        1007 => 23,
        1016 => 20,
        1028 => 26,
        1009 => 25,
        1014 => 1042,
        1015 => 1043,
        1021 => 700,
        1022 => 701,
        1231 => 1700,
        791 => 790,
        199 => 114,
        3807 => 3802,
        1182 => 1082,
        1183 => 1083,
        1115 => 1114,
        1185 => 1184,
        1270 => 1266,
        1187 => 1186,
        2951 => 2950,
        1041 => 869,
        651 => 650,
        1040 => 829,
        143 => 142,
        _ => return None,
    };
    Kind::builtin(element)
}

/// `text` (a value's text output) as JSON, by `kind`.
pub fn to_json(kind: &Kind, text: &str) -> Value {
    let parsed = match kind {
        Kind::Bool => match text {
            "t" => Some(Value::Bool(true)),
            "f" => Some(Value::Bool(false)),
            _ => None,
        },
        Kind::Integer => text.parse::<i64>().ok().map(Value::from),
        Kind::Float => Some(float(text)),
        Kind::Json => serde_json::from_str(text).ok(),
        Kind::Bytea => text
            .strip_prefix("\\x")
            .and_then(|h| hex::decode(h).ok())
            .map(|b| Value::String(base64::engine::general_purpose::STANDARD.encode(b))),
        Kind::Date => date(text).map(Value::from),
        Kind::Time => time(text).map(Value::from),
        Kind::Timestamp => timestamp(text).map(Value::from),
        Kind::TimestampTz => timestamptz(text).map(Value::String),
        Kind::Array(element) => array(text).map(|items| {
            Value::Array(
                items
                    .into_iter()
                    .map(|item| item.map_or(Value::Null, |t| to_json(element, &t)))
                    .collect(),
            )
        }),
        Kind::Decimal | Kind::Text => None,
        Kind::Unknown(name) => {
            warn_once(name);
            None
        }
    };
    parsed.unwrap_or_else(|| Value::String(text.to_string()))
}

fn float(text: &str) -> Value {
    match text.parse::<f64>().ok().and_then(Number::from_f64) {
        Some(n) => Value::Number(n),
        // NaN and the infinities have no JSON number.
        None => Value::String(text.to_string()),
    }
}

/// Days since 1970-01-01 of `YYYY-MM-DD`.
fn date(text: &str) -> Option<i64> {
    let d: jiff::civil::Date = text.parse().ok()?;
    let epoch = jiff::civil::date(1970, 1, 1);
    Some(i64::from((d - epoch).get_days()))
}

/// Microseconds since midnight of `HH:MM:SS[.ffffff]` (`24:00:00` included, as Postgres has).
fn time(text: &str) -> Option<i64> {
    if text == "24:00:00" {
        return Some(86_400_000_000);
    }
    let t: jiff::civil::Time = text.parse().ok()?;
    Some(
        i64::from(t.hour()) * 3_600_000_000
            + i64::from(t.minute()) * 60_000_000
            + i64::from(t.second()) * 1_000_000
            + i64::from(t.subsec_nanosecond()) / 1000,
    )
}

/// Microseconds since the epoch of `YYYY-MM-DD HH:MM:SS[.ffffff]`, read as UTC.
fn timestamp(text: &str) -> Option<i64> {
    let dt: jiff::civil::DateTime = text.replacen(' ', "T", 1).parse().ok()?;
    let ts = dt.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
    Some(ts.as_microsecond())
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]+00` (the session is in UTC) as `YYYY-MM-DDTHH:MM:SS[.ffffff]Z`.
fn timestamptz(text: &str) -> Option<String> {
    let iso = text.replacen(' ', "T", 1);
    // Postgres writes whole-hour offsets as `+00`; ISO-8601 parsers want minutes too.
    let iso = match iso.rfind(['+', '-']) {
        Some(at) if at > 10 && iso.len() - at == 3 => format!("{iso}:00"),
        _ => iso,
    };
    let ts: jiff::Timestamp = iso.parse().ok()?;
    Some(ts.to_string())
}

/// The elements of an array literal (`{1,2,NULL}`, `{"a b","c\"d"}`, `{{1,2},{3,4}}` flattened
/// row by row); `None` if it is not one. Element text is unquoted and unescaped.
fn array(text: &str) -> Option<Vec<Option<String>>> {
    // A lower bound other than 1 comes first: `[0:1]={1,2}`.
    let body = match text.find("={") {
        Some(at) if text.starts_with('[') => &text[at + 1..],
        _ => text,
    };
    let inner = body.strip_prefix('{')?.strip_suffix('}')?;
    let mut items = Vec::new();
    let mut chars = inner.chars().peekable();
    let mut current = String::new();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                was_quoted = true;
            }
            '\\' if quoted => current.push(chars.next()?),
            '{' | '}' if !quoted => {}
            ',' if !quoted => {
                items.push(element(std::mem::take(&mut current), was_quoted));
                was_quoted = false;
            }
            _ => current.push(c),
        }
    }
    if quoted {
        return None;
    }
    if !inner.is_empty() {
        items.push(element(current, was_quoted));
    }
    Some(items)
}

fn element(text: String, quoted: bool) -> Option<String> {
    (quoted || text != "NULL").then_some(text)
}

/// Say once per type name that its values are passed on as text.
fn warn_once(name: &str) {
    static WARNED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    if warned
        .get_or_insert_with(HashSet::new)
        .insert(name.to_string())
    {
        tracing::warn!(
            "postgres: values of type `{name}` are passed on as their text (weir has no JSON \
             form for it)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn of(oid: u32, text: &str) -> Value {
        to_json(&Kind::builtin(oid).unwrap(), text)
    }

    #[test]
    fn numbers_keep_their_precision() {
        assert_eq!(of(20, "9223372036854775807"), json!(9223372036854775807i64));
        assert_eq!(
            of(1700, "12345678901234567890.000001"),
            json!("12345678901234567890.000001")
        );
        assert_eq!(of(701, "0.1"), json!(0.1));
        assert_eq!(of(701, "NaN"), json!("NaN"));
        assert_eq!(of(700, "-Infinity"), json!("-Infinity"));
    }

    #[test]
    fn dates_and_times_are_debeziums() {
        assert_eq!(of(1082, "1970-01-02"), json!(1));
        assert_eq!(of(1082, "1969-12-31"), json!(-1));
        assert_eq!(of(1083, "01:00:00.5"), json!(3_600_500_000i64));
        assert_eq!(of(1114, "1970-01-01 00:00:01.000002"), json!(1_000_002));
        assert_eq!(
            of(1184, "2024-02-29 23:59:59.123456+00"),
            json!("2024-02-29T23:59:59.123456Z")
        );
        assert_eq!(of(1114, "infinity"), json!("infinity"));
    }

    #[test]
    fn bytes_json_and_arrays() {
        assert_eq!(of(17, "\\x00ff"), json!("AP8="));
        assert_eq!(of(3802, r#"{"a": [1, null]}"#), json!({"a": [1, null]}));
        assert_eq!(of(1007, "{1,NULL,3}"), json!([1, null, 3]));
        assert_eq!(
            of(1009, r#"{"a,b","NULL",NULL,"q\"x"}"#),
            json!(["a,b", "NULL", null, "q\"x"])
        );
        assert_eq!(of(1007, "{}"), json!([]));
        assert_eq!(of(1007, "{{1,2},{3,4}}"), json!([1, 2, 3, 4]));
    }

    #[test]
    fn unknown_types_stay_text() {
        assert_eq!(
            to_json(&Kind::Unknown("hstore".into()), "a=>1"),
            json!("a=>1")
        );
        assert_eq!(Kind::builtin(99999), None);
    }
}
