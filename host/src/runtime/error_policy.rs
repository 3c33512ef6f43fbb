//! The error policy (`[errors] policy`): what becomes of a record a stage failed on, or whose
//! output the sink refused. `fail` stops without committing it, `skip` logs and goes on,
//! `dead-letter` sends the original record with its cause in headers.

use std::sync::Arc;

use super::Shared;
use crate::{
    chain::Failure,
    config::ErrorPolicy,
    engine::{ErrorKind, Header, Record, RecordError},
    kafka::{Acks, Sink},
    metrics::{now_ms, DeadLetterView, Metrics},
};

/// An output of `record`'s input that the sink refused as larger than it accepts. The failure
/// keeps only the input's coordinates: the output itself may be megabytes.
pub(super) fn too_large(record: &Record, size: usize, cause: &impl std::fmt::Display) -> Failure {
    Failure {
        record: Record {
            key: None,
            value: None,
            headers: Vec::new(),
            timestamp: record.timestamp,
            topic: record.topic.clone(),
            partition: record.partition,
            offset: record.offset,
        },
        stage: "sink".into(),
        plugin_hash: None,
        error: RecordError {
            plugin: "sink".into(),
            kind: ErrorKind::TooLarge,
            message: format!("output of {size} bytes is larger than the sink accepts: {cause}"),
        },
    }
}

impl Shared {
    /// Apply the error policy to `failure`; `halt` is the first input that `fail` stops at.
    /// Returns the input the partition must stop at if its dead letter could not be sent: then
    /// the run stops without committing it, as under `fail`, so it is read again after a
    /// restart instead of being lost.
    pub(super) fn handle(
        &self,
        sink: &Sink,
        failure: &Failure,
        originals: Option<&[Record]>,
        acks: &Arc<Acks>,
        halt: Option<i64>,
    ) -> Option<i64> {
        match self.policy {
            ErrorPolicy::Fail => {
                if halt == Some(failure.record.offset) {
                    self.fatal.set(failure.to_error());
                }
            }
            ErrorPolicy::Skip => {
                Metrics::add(&self.metrics.skipped, 1);
                failure.log_skipped();
            }
            ErrorPolicy::DeadLetter => {
                if let Err(why) = self.dead_letter(sink, failure, originals, acks) {
                    self.fatal.stop(format!(
                        "{}; {why}: stopped without committing that record",
                        failure.place()
                    ));
                    if !failure.is_input() {
                        // A window's result stands for no one input: nothing of this batch
                        // may be committed.
                        acks.fail();
                        return None;
                    }
                    return Some(failure.record.offset);
                }
            }
        }
        None
    }

    /// Send the failed input (or the window standing for none) to the dead-letter topic; `Err`
    /// says why it could not be.
    fn dead_letter(
        &self,
        sink: &Sink,
        failure: &Failure,
        originals: Option<&[Record]>,
        acks: &Arc<Acks>,
    ) -> Result<(), String> {
        let topic = self.dead_letters.as_deref().expect("checked by config");
        let original = if failure.is_input() {
            originals.and_then(|all| {
                all.binary_search_by_key(&failure.record.offset, |r| r.offset)
                    .ok()
                    .map(|i| &all[i])
            })
        } else {
            Some(&failure.record)
        };
        let original = original.ok_or("its input was not found")?;
        let letter = letter(original, failure);
        sink.send(topic, &letter, acks)
            .map_err(|e| format!("sending it to the dead-letter topic `{topic}` failed: {e}"))?;
        let r = &failure.record;
        let view = || DeadLetterView {
            at_ms: now_ms(),
            stage: failure.stage.clone(),
            kind: failure.error.kind.as_str(),
            cause: failure.error.message.clone(),
            topic: r.topic.clone(),
            partition: r.partition,
            offset: r.offset,
        };
        self.metrics.dead_lettered(view, failure.error.kind);
        let r = &failure.record;
        tracing::debug!(
            stage = %failure.stage,
            topic = %r.topic,
            partition = r.partition,
            offset = r.offset,
            kind = failure.error.kind.as_str(),
            "record dead-lettered to `{topic}`: {}",
            failure.error.message
        );
        Ok(())
    }
}

/// The original record with headers saying what went wrong where.
pub(super) fn letter(original: &Record, failure: &Failure) -> Record {
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
    add("weir.error.kind", failure.error.kind.as_str().into());
    add("weir.error.message", failure.error.message.clone());
    add("weir.source.topic", failure.record.topic.clone());
    add(
        "weir.source.partition",
        failure.record.partition.to_string(),
    );
    add("weir.source.offset", failure.record.offset.to_string());
    letter
}
