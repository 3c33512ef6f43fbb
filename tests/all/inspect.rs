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
        "needs        none declared",
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

/// A plugin that declares its needs: `inspect` shows them, and a stage that gives it less is
/// refused at load, naming both figures; one that gives enough loads.
#[test]
fn a_stage_that_gives_a_plugin_less_than_it_declares_is_refused() {
    let dir = crate::common::scratch();
    let plugin = dir.path().join("hungry");
    let weir = |args: &[&std::ffi::OsStr]| Command::new(weir_bin()).args(args).output().unwrap();
    let ok = |out: &std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(&weir(&[
        "new".as_ref(),
        plugin.as_os_str(),
        "--lang".as_ref(),
        "go".as_ref(),
    ]));
    let go_mod = plugin.join("go.mod");
    let text = std::fs::read_to_string(&go_mod).unwrap();
    std::fs::write(
        &go_mod,
        text + "// weir:needs memory_mb=200 timeout_ms=3000\n",
    )
    .unwrap();
    ok(&weir(&["build".as_ref(), plugin.as_os_str()]));
    let component = plugin.with_extension("wasm");
    let out = weir(&["inspect".as_ref(), component.as_os_str(), "--json".as_ref()]);
    ok(&out);
    let facts: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        facts["needs"],
        serde_json::json!({"memory_mb": 200, "timeout_ms": 3000})
    );

    let pipeline = |limits: &str| {
        let path = dir.path().join("p.toml");
        let text = format!(
            "[[stage]]\nname = \"big\"\nplugin = \"{}\"\nconfig = {{ min = 1 }}\n{limits}",
            component.display()
        );
        std::fs::write(&path, text).unwrap();
        weir(&["check".as_ref(), path.as_os_str()])
    };
    let refused = pipeline("");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("needs 200 MiB of memory") && stderr.contains("give it 128"),
        "{stderr}"
    );
    let refused = pipeline("limits = { memory_mb = 256 }\n");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("needs 3000 ms a call") && stderr.contains("give it 2000"),
        "{stderr}"
    );
    ok(&pipeline(
        "limits = { memory_mb = 256, timeout_ms = 3000 }\n",
    ));
}
