// The tag plugin, shared by `tag-v1` and `tag-v2`, which differ only in `VERSION`: two builds
// of one plugin whose outputs say which build processed them, for the hot-reload tests.
//
// Config: `field` (default "version") is where the version goes; `fail_version` makes that
// version fail every record (a bad release, for rollback); `trap_in_init` makes `init` trap
// (a config the plugin cannot start with).

use weir_sdk::prelude::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_field")]
    field: String,
    #[serde(default)]
    fail_version: Option<u64>,
    #[serde(default, deserialize_with = "trap_if_true")]
    #[allow(dead_code)]
    trap_in_init: bool,
}

fn default_field() -> String {
    "version".into()
}

/// Parsing the config happens in `init`: a panic here is a trap in `init`.
fn trap_if_true<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    let trap = bool::deserialize(d)?;
    if trap {
        panic!("asked to trap in init");
    }
    Ok(trap)
}

#[transform]
fn tag(rec: &Record, cfg: &Config) -> Result<Record> {
    if cfg.fail_version == Some(VERSION) {
        fail!("version {VERSION} fails every record (fail_version)");
    }
    let mut value: Value = rec.json()?;
    value[cfg.field.as_str()] = json!(VERSION);
    rec.clone().with_json(&value)
}

#[cfg(test)]
mod tests {
    use weir_sdk::prelude::*;

    #[test]
    fn tags_with_the_version_and_fails_on_request() {
        let p = weir_sdk::harness!(json!({})).unwrap();
        let out = p.transform(Record::from_json(&json!({"n": 1})).unwrap()).unwrap();
        assert_eq!(out[0].json::<Value>().unwrap()["version"], super::VERSION);
        let p = weir_sdk::harness!(json!({"fail_version": super::VERSION})).unwrap();
        assert!(p.transform(Record::from_json(&json!({"n": 1})).unwrap()).is_err());
    }
}
