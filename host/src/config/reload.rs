//! The `[reload]` table: how hot reload watches files and judges a new version.

/// How many records a new version is judged on before it is trusted, by default.
pub const TRIAL_RECORDS: u64 = 1000;

/// The share of failed records among a new version's first [`TRIAL_RECORDS`] above which the
/// previous version is put back.
pub const ROLLBACK_RATE: f64 = 0.05;

/// Hot reload settings: the pipeline file's `[reload]` table.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// Watch the files for changes (default); if false, only SIGHUP (`weir reload`) reloads.
    #[serde(default = "yes")]
    pub watch: bool,
    /// How many records a new version is judged on.
    #[serde(default = "trial_records")]
    pub trial_records: u64,
    /// The share of those records (0 to 1) that may fail in the stages the version changed
    /// before the previous version is put back; 1 never rolls back.
    #[serde(default = "rollback_rate", deserialize_with = "share")]
    pub rollback_rate: f64,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            watch: true,
            trial_records: TRIAL_RECORDS,
            rollback_rate: ROLLBACK_RATE,
        }
    }
}

fn yes() -> bool {
    true
}

fn trial_records() -> u64 {
    TRIAL_RECORDS
}

fn rollback_rate() -> f64 {
    ROLLBACK_RATE
}

fn share<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let share = <f64 as serde::Deserialize>::deserialize(d)?;
    if !(0.0..=1.0).contains(&share) {
        return Err(serde::de::Error::custom(format!(
            "rollback_rate is a share between 0 and 1, not {share}"
        )));
    }
    Ok(share)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Pipeline;

    #[test]
    fn reload_settings_default_and_are_checked() {
        let stage = "[[stage]]\nname = \"a\"\nplugin = \"a.wasm\"\n";
        let path = Path::new("/p/pipeline.toml");
        let p = Pipeline::parse(path, stage).unwrap();
        assert_eq!(p.reload, ReloadConfig::default());
        let p = Pipeline::parse(
            path,
            &format!("{stage}[reload]\nwatch = false\ntrial_records = 50\nrollback_rate = 0.5\n"),
        )
        .unwrap();
        assert_eq!(
            p.reload,
            ReloadConfig {
                watch: false,
                trial_records: 50,
                rollback_rate: 0.5
            }
        );
        let err = Pipeline::parse(path, &format!("{stage}[reload]\nrollback_rate = 5\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 5") && err.contains("between 0 and 1"),
            "{err}"
        );
    }
}
