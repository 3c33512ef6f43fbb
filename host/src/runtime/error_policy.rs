//! The error policy (`[errors] policy`): what becomes of a record a stage failed on, or whose
//! output the sink refused. `fail` stops without committing it, `skip` logs and goes on,
//! `dead-letter` sends the original record with its cause in headers.

use std::sync::Arc;

use super::Shared;
use crate::{
    chain,
    config::ErrorPolicy,
    engine::{Header, Record},
    kafka::{Acks, Sink},
    metrics::Metrics,
};

/// A record that failed in a stage or at the sink, with where it came from.
pub(super) struct Failure {
    pub(super) topic: String,
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) stage: String,
    pub(super) plugin_hash: Option<String>,
    pub(super) kind: &'static str,
    pub(super) message: String,
    /// The record to dead-letter when it is not one of the batch's inputs.
    pub(super) own: Option<Record>,
}

impl From<chain::Failure> for Failure {
    fn from(f: chain::Failure) -> Failure {
        Failure {
            offset: f.record.offset,
            topic: f.record.topic.clone(),
            partition: f.record.partition,
            stage: f.stage,
            plugin_hash: Some(f.plugin_hash),
            kind: f.error.kind.as_str(),
            message: f.error.message,
            // A window the plugin could not render stands for no single input.
            own: (f.record.offset < 0).then_some(f.record),
        }
    }
}

impl Failure {
    /// An output of `record`'s input that the sink refused as larger than it accepts.
    pub(super) fn too_large(
        record: &Record,
        size: usize,
        cause: &impl std::fmt::Display,
    ) -> Failure {
        Failure {
            offset: record.offset,
            topic: record.topic.clone(),
            partition: record.partition,
            stage: "sink".into(),
            plugin_hash: None,
            kind: "too-large",
            message: format!("output of {size} bytes is larger than the sink accepts: {cause}"),
            own: None,
        }
    }

    pub(super) fn place(&self) -> String {
        format!(
            "stage `{}` failed on {}[{}]@{}: {}: {}",
            self.stage, self.topic, self.partition, self.offset, self.kind, self.message
        )
    }
}

impl Shared {
    /// Apply the error policy to `failure`; `halt` is the first input that `fail` stops at.
    pub(super) fn handle(
        &self,
        sink: &Sink,
        failure: &Failure,
        originals: Option<&[Record]>,
        acks: &Arc<Acks>,
        halt: Option<i64>,
    ) {
        match self.policy {
            ErrorPolicy::Fail => {
                if halt == Some(failure.offset) {
                    self.fatal.set(format!(
                        "{}; errors.policy is \"fail\": stopped without committing that record",
                        failure.place()
                    ));
                }
            }
            ErrorPolicy::Skip => {
                Metrics::add(&self.metrics.skipped, 1);
                tracing::warn!("{} (skipped)", failure.place());
            }
            ErrorPolicy::DeadLetter => {
                let topic = self.dead_letters.as_deref().expect("checked by config");
                let original = failure.own.as_ref().or_else(|| {
                    originals.and_then(|all| {
                        all.binary_search_by_key(&failure.offset, |r| r.offset)
                            .ok()
                            .map(|i| &all[i])
                    })
                });
                let Some(original) = original else {
                    self.fatal
                        .set(format!("{} (its input was not found)", failure.place()));
                    return;
                };
                let letter = dead_letter(original, failure);
                match sink.send(topic, &letter, acks) {
                    Ok(()) => {
                        Metrics::add(&self.metrics.dead_lettered, 1);
                        tracing::debug!("{} (dead-lettered to `{topic}`)", failure.place());
                    }
                    Err(e) => self.fatal.set(format!(
                        "{}; sending it to the dead-letter topic failed: {e}",
                        failure.place()
                    )),
                }
            }
        }
    }
}

/// The original record with headers saying what went wrong where.
fn dead_letter(original: &Record, failure: &Failure) -> Record {
    let mut letter = original.clone();
    let mut add = |key: &str, value: String| {
        letter.headers.push(Header {
            key: key.into(),
            value: value.into_bytes(),
        })
    };
    add("weir.error.stage", failure.stage.clone());
    if let Some(hash) = &failure.plugin_hash {
        add("weir.error.plugin.sha256", hash.clone());
    }
    add("weir.error.kind", failure.kind.into());
    add("weir.error.message", failure.message.clone());
    add("weir.source.topic", failure.topic.clone());
    add("weir.source.partition", failure.partition.to_string());
    add("weir.source.offset", failure.offset.to_string());
    letter
}
