//! Fails on request, to test how the host contains plugins. Each JSON input may ask for:
//! `{"panic": true}`, `{"loop": true}`, `{"alloc_mb": N}`, `{"fail": "message"}` or
//! `{"state_kb": N}` (store N KiB under `blob`); anything else passes through with `seen`, a
//! per-key count kept in state, added.

use weir_sdk::prelude::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    tag: Option<String>,
}

#[transform]
fn misbehave(rec: &Record, cfg: &Config, state: &State) -> Result<Record> {
    // Written before misbehaving: a failure of any kind must roll this back.
    let seen: u64 = state.get("seen")?.unwrap_or(0) + 1;
    state.put("seen", &seen)?;
    let mut cmd: Value = rec.json()?;
    if cmd["panic"] == true {
        panic!("asked to panic");
    }
    if cmd["loop"] == true {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
    if let Some(mb) = cmd["alloc_mb"].as_u64() {
        let block = vec![1u8; (mb as usize) << 20];
        std::hint::black_box(&block);
    }
    if let Some(msg) = cmd["fail"].as_str() {
        fail!("{msg}");
    }
    if let Some(kb) = cmd["state_kb"].as_u64() {
        state.put_bytes("blob", &vec![7u8; (kb as usize) << 10], None)?;
    }
    cmd["seen"] = json!(seen);
    if let Some(tag) = &cfg.tag {
        cmd["tag"] = json!(tag);
    }
    rec.clone().with_json(&cmd)
}

#[cfg(test)]
mod tests {
    use weir_sdk::prelude::*;

    #[test]
    fn counts_per_key_and_fails_on_request() {
        let p = weir_sdk::harness!(json!({})).unwrap();
        let rec = |v: Value| Record::from_json(&v).unwrap().with_key("k");
        assert_eq!(
            p.transform(rec(json!({}))).unwrap()[0]
                .json::<Value>()
                .unwrap()["seen"],
            1
        );
        assert_eq!(
            p.transform(rec(json!({"fail": "no"})))
                .unwrap_err()
                .message(),
            "no"
        );
        // The failed record's count was rolled back, as the host does.
        assert_eq!(
            p.transform(rec(json!({}))).unwrap()[0]
                .json::<Value>()
                .unwrap()["seen"],
            2
        );
    }
}
