//! Mask personal data at JSON pointers: redact it or replace it with its SHA-256.
//!
//! ```json
//! {"fields": ["/email", "/card/number"], "mode": "hash"}
//! ```
//! `mode` is `redact` (default: each field becomes `"[REDACTED]"`) or `hash` (each field becomes
//! the lowercase hex SHA-256 of its string value, or of the compact JSON text of any other value, its object keys sorted).
//! Fields the record does not have are left alone. A tombstone passes through unchanged.

use weir_sdk::{digest::sha256_hex, json::Pointer, prelude::*};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    fields: Vec<Pointer>,
    #[serde(default)]
    mode: Mode,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Mode {
    #[default]
    Redact,
    Hash,
}

impl Mode {
    fn mask(self, value: Value) -> Result<Value> {
        Ok(Value::String(match self {
            Mode::Redact => "[REDACTED]".to_string(),
            Mode::Hash => match value {
                Value::String(s) => sha256_hex(s.as_bytes()),
                mut other => {
                    // Keys sorted: an object hashes the same whatever order its keys came in.
                    other.sort_all_objects();
                    sha256_hex(serde_json::to_string(&other)?.as_bytes())
                }
            },
        }))
    }
}

#[transform]
fn mask_pii(rec: Record, cfg: &Config) -> Result<Record> {
    if rec.value.is_none() {
        return Ok(rec);
    }
    let mut doc = rec.json_doc()?;
    for field in &cfg.fields {
        doc.update(field, |value| cfg.mode.mask(value))?;
    }
    let value = doc.into_bytes();
    Ok(rec.with_value(value))
}

#[cfg(test)]
mod tests {
    use weir_sdk::prelude::*;

    const A_B_C_SHA256: &str = "d648b243a3e817eaa3309e00e183483f2867baadf522099f0c2121770536b25a";

    fn rec(v: Value) -> Record {
        Record::from_json(&v).unwrap()
    }

    fn one(p: &weir_sdk::testing::Harness<crate::__WeirPlugin>, input: Record) -> Record {
        let mut out = p.transform(input).unwrap();
        assert_eq!(out.len(), 1);
        out.remove(0)
    }

    fn value(r: &Record) -> Value {
        r.json().unwrap()
    }

    #[test]
    fn redact_is_the_default() {
        let p = weir_sdk::harness!(json!({"fields": ["/email", "/card/number"]})).unwrap();
        let out = one(
            &p,
            rec(json!({"email": "a@b.c", "card": {"number": "4111", "exp": "12/30"}, "id": 7})),
        );
        assert_eq!(
            value(&out),
            json!({"email": "[REDACTED]", "card": {"number": "[REDACTED]", "exp": "12/30"}, "id": 7})
        );
    }

    #[test]
    fn redact_replaces_any_value() {
        let p =
            weir_sdk::harness!(json!({"fields": ["/a", "/b", "/c"], "mode": "redact"})).unwrap();
        let out = one(&p, rec(json!({"a": 1, "b": null, "c": {"x": [1, 2]}})));
        assert_eq!(
            value(&out),
            json!({"a": "[REDACTED]", "b": "[REDACTED]", "c": "[REDACTED]"})
        );
    }

    #[test]
    fn hash_of_a_string_is_its_sha256() {
        let p = weir_sdk::harness!(json!({"fields": ["/email"], "mode": "hash"})).unwrap();
        let out = one(&p, rec(json!({"email": "a@b.c", "name": "Ann"})));
        assert_eq!(value(&out), json!({"email": A_B_C_SHA256, "name": "Ann"}));
    }

    #[test]
    fn hash_of_other_values_is_the_sha256_of_their_compact_json() {
        let p = weir_sdk::harness!(json!({"fields": ["/n", "/card"], "mode": "hash"})).unwrap();
        let out = one(
            &p,
            rec(json!({"n": 42, "card": {"number": "4111", "last4": "1111"}})),
        );
        assert_eq!(
            value(&out),
            json!({
                // printf '42' | sha256sum
                "n": "73475cb40a568e8da8a045ced110137e159f890ac4da883b6b17dc651b3a8049",
                // printf '{"last4":"1111","number":"4111"}' | sha256sum
                "card": "53930525be9f8d89a8a287fefce66dd29d1dd160257544c16f979106a99c6f4a",
            })
        );
    }

    #[test]
    fn hash_is_lowercase_hex_and_deterministic() {
        assert_eq!(crate::sha256_hex(b"a@b.c"), A_B_C_SHA256);
        assert_eq!(
            crate::sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn nested_and_array_pointers() {
        let p = weir_sdk::harness!(json!({"fields": ["/users/1/email", "/a~1b"], "mode": "hash"}))
            .unwrap();
        let out = one(
            &p,
            rec(json!({"users": [{"email": "x"}, {"email": "a@b.c"}], "a/b": "a@b.c"})),
        );
        assert_eq!(
            value(&out),
            json!({"users": [{"email": "x"}, {"email": A_B_C_SHA256}], "a/b": A_B_C_SHA256})
        );
    }

    #[test]
    fn absent_fields_are_left_alone() {
        let p =
            weir_sdk::harness!(json!({"fields": ["/email", "/card/number", "/list/5"]})).unwrap();
        let input = json!({"name": "Ann", "card": "none", "list": [1]});
        assert_eq!(value(&one(&p, rec(input.clone()))), input);
        let scalar = json!("just a string");
        assert_eq!(value(&one(&p, rec(scalar.clone()))), scalar);
    }

    #[test]
    fn keeps_key_headers_and_timestamp() {
        let p = weir_sdk::harness!(json!({"fields": ["/email"]})).unwrap();
        let input = rec(json!({"email": "a@b.c"}))
            .with_key("user-1")
            .with_header("trace", "abc")
            .with_timestamp(1_700_000_000_000);
        let out = one(&p, input);
        assert_eq!(out.key.as_deref(), Some(&b"user-1"[..]));
        assert_eq!(out.header("trace"), Some(&b"abc"[..]));
        assert_eq!(out.timestamp, 1_700_000_000_000);
        assert_eq!(value(&out), json!({"email": "[REDACTED]"}));
    }

    #[test]
    fn tombstone_passes_through() {
        let p = weir_sdk::harness!(json!({"fields": ["/email"]})).unwrap();
        let tomb = Record::tombstone(Some(b"user-1".to_vec())).with_timestamp(5);
        assert_eq!(p.transform(tomb.clone()).unwrap(), vec![tomb]);
    }

    #[test]
    fn bad_config_is_rejected() {
        for cfg in [
            json!({"fields": ["email"]}),
            json!({"fields": [""]}),
            json!({"fields": ["/email"], "mode": "encrypt"}),
            json!({"fields": "/email"}),
            json!({"mode": "hash"}),
            json!({"fields": [], "salt": "x"}),
        ] {
            let err = weir_sdk::harness!(cfg.clone())
                .err()
                .unwrap_or_else(|| panic!("{cfg} accepted"));
            assert!(err.message().contains("invalid plugin config"), "{err}");
        }
        let err = weir_sdk::harness!(json!({"fields": ["email"]}))
            .err()
            .unwrap();
        assert!(
            err.message().contains("`email` is not a JSON pointer"),
            "{err}"
        );
    }

    #[test]
    fn non_json_value_is_a_record_error() {
        let p = weir_sdk::harness!(json!({"fields": ["/email"]})).unwrap();
        assert!(p.transform(Record::new("not json")).is_err());
    }
}
