//! `weir inspect`: what a component is, for components built in each language.

use std::process::Command;

use serde_json::Value;

use crate::common::{component, weir_bin};

fn inspect(plugin: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(weir_bin())
        .arg("inspect")
        .arg(component(plugin))
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn inspect_says_what_a_component_is_and_how_it_was_built() {
    let (ok, text) = inspect("running-total-go", &["--config", r#"{"field": "/amount"}"#]);
    assert!(ok, "{text}");
    for line in [
        "kind         transform (weir:plugin@0.2.0)",
        "built        Go with ",
        "wit-bindgen go 0.63 (weir build ",
        "keyed state  yes",
        "state        version 0",
        "weir:plugin/state@0.2.0",
        "limits       none declared",
    ] {
        assert!(text.contains(line), "no `{line}` in:\n{text}");
    }
    let sha = sha256(&std::fs::read(component("running-total-go")).unwrap());
    assert!(text.contains(&format!("sha256       {sha}")), "{text}");

    // As JSON, for each language's build.
    // Keyed state: what the component imports (the Rust SDK links it only when used; the
    // interpreters' SDKs always do; a window keeps its state in its accumulator).
    for (plugin, language, kind, keyed_state) in [
        ("json-filter", "Rust", "filter", false),
        ("json-filter-py", "Python", "filter", true),
        ("json-filter-js", "JavaScript", "filter", true),
        ("sum-window-go", "Go", "window", false),
    ] {
        let (ok, text) = inspect(plugin, &["--json"]);
        assert!(ok, "{text}");
        let facts: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(facts["built"]["language"], language, "{plugin}: {facts}");
        assert_eq!(facts["kind"], kind, "{plugin}");
        assert_eq!(facts["keyed_state"], keyed_state, "{plugin}");
        assert!(
            facts["exports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e == "init"),
            "{facts}"
        );
    }

    // A state version needs a configuration the plugin's init accepts.
    let (ok, text) = inspect("sum-window", &[]);
    assert!(ok, "{text}");
    assert!(
        text.contains("state        unknown: its init refused config {}"),
        "{text}"
    );
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
