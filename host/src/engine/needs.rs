//! What a plugin declares it needs to run: memory, time per call, state per key. `weir build`
//! takes it from the plugin's manifest and writes it into the component, in the `weir-build`
//! custom section (with the language and toolchain it was built with), so a stage whose
//! `limits` give less is refused when its plugin loads, not after its first trap.

use std::time::Duration;

use crate::config::Limits;

/// The custom section `weir build` writes: `{"language", "toolchain", "weir", "needs"}`.
pub const STAMP_SECTION: &str = "weir-build";

/// The names a manifest declares needs by.
pub const NEED_NAMES: [&str; 3] = ["memory_mb", "timeout_ms", "state_bytes_per_key"];

/// What a plugin declared; `None` where it declared nothing. Serialized by the manifest's
/// names, leaving out what was not declared.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Needs {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_bytes_per_key: Option<u64>,
}

/// The component's `weir-build` section, if it has one (the last, if it has several: a stamp
/// appended later says more recently what the component needs).
pub fn stamp(component: &[u8]) -> Option<serde_json::Value> {
    wasmparser::Parser::new(0)
        .parse_all(component)
        .flatten()
        .filter_map(|payload| match payload {
            wasmparser::Payload::CustomSection(s) if s.name() == STAMP_SECTION => {
                serde_json::from_slice(s.data()).ok()
            }
            _ => None,
        })
        .last()
}

impl Needs {
    /// What the component's stamp declares (nothing for a component without one).
    pub fn of(component: &[u8]) -> Needs {
        let stamp = stamp(component).unwrap_or_default();
        let need = |name: &str| stamp["needs"][name].as_u64();
        Needs {
            memory_mb: need("memory_mb"),
            timeout_ms: need("timeout_ms"),
            state_bytes_per_key: need("state_bytes_per_key"),
        }
    }

    /// Why `limits` give less than these needs, naming both, if they do.
    pub fn unmet_by(&self, limits: &Limits) -> Option<String> {
        let memory_mb = (limits.memory_bytes >> 20) as u64;
        if let Some(need) = self.memory_mb.filter(|&n| n > memory_mb) {
            return Some(format!(
                "declares it needs {need} MiB of memory (memory_mb in its build), but its stage's \
                 limits give it {memory_mb}: raise `limits.memory_mb` to {need} or more"
            ));
        }
        let timeout_ms = limits.call_timeout.as_millis() as u64;
        if let Some(need) = self
            .timeout_ms
            .filter(|&n| Duration::from_millis(n) > limits.call_timeout)
        {
            return Some(format!(
                "declares it needs {need} ms a call (timeout_ms in its build), but its stage's \
                 limits give it {timeout_ms}: raise `limits.timeout_ms` to {need} or more"
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_below_the_needs_are_named_with_both_figures() {
        let needs = Needs {
            memory_mb: Some(200),
            timeout_ms: Some(5000),
            state_bytes_per_key: None,
        };
        let short = needs.unmet_by(&Limits::default()).unwrap();
        assert!(
            short.contains("200 MiB") && short.contains("give it 128"),
            "{short}"
        );
        let memory = Limits {
            memory_bytes: 256 << 20,
            ..Limits::default()
        };
        let short = needs.unmet_by(&memory).unwrap();
        assert!(
            short.contains("5000 ms") && short.contains("give it 2000"),
            "{short}"
        );
        let enough = Limits {
            memory_bytes: 256 << 20,
            call_timeout: Duration::from_secs(5),
        };
        assert_eq!(needs.unmet_by(&enough), None);
        assert_eq!(Needs::default().unmet_by(&Limits::default()), None);
    }
}
