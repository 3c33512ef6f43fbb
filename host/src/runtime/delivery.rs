//! What came of a batch goes to the sink: outputs, late records, dead letters and (at least
//! once) state changes, all carrying the batch's acknowledgements; then the partition records
//! which offset it may commit once they are acknowledged.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc, Mutex,
};

use super::{error_policy, Partition, Shared};
use crate::{
    chain::{window::Delivered, BatchOutput, Chain, Failure, LateRecord},
    config::{ErrorPolicy, KafkaProperties, LateOutput},
    engine::{ErrorKind, Record, RecordError},
    kafka::{Acks, SendError, Sink},
    metrics::Metrics,
};

/// Where shadows write their outputs (`shadow_topic`): a producer of their own, made when first
/// needed (a shadow may come with a reload), outside every transaction, that drops what it
/// cannot send at once and logs what it loses. So a shadow can neither fail nor slow the live
/// run, nor put anything in its transactions; its outputs are at most once.
pub(super) struct ShadowSink {
    brokers: String,
    properties: KafkaProperties,
    sink: Mutex<Option<Sink>>,
    /// Outputs it could not hand to its producer (a full queue, above all), logged now and then.
    dropped: AtomicU64,
}

impl ShadowSink {
    pub(super) fn new(brokers: &str, properties: &KafkaProperties) -> ShadowSink {
        ShadowSink {
            brokers: brokers.to_string(),
            properties: properties.clone(),
            sink: Mutex::default(),
            dropped: AtomicU64::new(0),
        }
    }

    pub(super) fn send(&self, records: Vec<(String, Record)>) {
        if records.is_empty() {
            return;
        }
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        if sink.is_none() {
            match Sink::best_effort(&self.brokers, &self.properties) {
                Ok(made) => *sink = Some(made),
                Err(e) => {
                    tracing::warn!("shadow outputs: no producer for them: {e}");
                    return;
                }
            }
        }
        let Some(sink) = sink.as_ref() else { return };
        // Acknowledgements nobody waits for: the live batch's are its own.
        let acks = Acks::new();
        for (topic, record) in &records {
            if let Err(e) = sink.send(topic, record, &acks) {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    tracing::warn!("{dropped} shadow outputs dropped so far; to `{topic}`: {e}");
                }
            }
        }
        acks.sealed();
    }
}

impl Shared {
    /// Hand a chain's `output` for `partition` to the sink (`next_offset`: the offset after the
    /// batch's last record, none when nothing was consumed), and record what the partition may
    /// commit once it is acknowledged. `originals` are the batch's inputs, for dead letters.
    pub(super) fn deliver(
        &self,
        chain: &mut Chain,
        output: BatchOutput,
        partition: &Arc<Partition>,
        next_offset: Option<i64>,
        originals: Option<&[Record]>,
    ) {
        // Exactly once: everything of this partition goes into its open transaction.
        let sink = partition.transaction.as_ref().unwrap_or(&self.sink);
        let acks = Acks::new();
        let at_least_once = partition.transaction.is_none();
        if at_least_once && !self.send_state(sink, partition, &acks) {
            // Nothing of a batch whose state could not be written goes out: the run stops, and
            // its records are read again after a restart against the state as it was before.
            partition.abandoned();
            return;
        }
        let mut failures = output.failures;
        // Under `fail`, nothing from the first failing record on goes out or gets committed.
        let mut halt = match self.policy {
            ErrorPolicy::Fail => failures
                .iter()
                .filter(|f| f.is_input())
                .map(|f| f.record.offset)
                .min(),
            _ => None,
        };
        for record in &output.records {
            if halt.is_some_and(|h| record.offset >= h) {
                continue;
            }
            self.send_output(sink, record, &acks, &mut halt, &mut failures);
        }
        if output.whole {
            // A refused output stands for the whole call too (see `BatchOutput::whole`).
            for f in &mut failures {
                f.record.offset = -1;
            }
            halt = None;
        }
        self.shadow_sink.send(output.shadow);
        for (topic, record) in &output.routed {
            if let Err(e) = sink.send(topic, record, &acks) {
                // Nothing of the batch may be committed: the record would be lost.
                acks.fail();
                self.fatal.stop(format!(
                    "sending an unpaired record to `{topic}` failed: {e}"
                ));
            }
        }
        for late in output.late {
            if halt.is_none_or(|h| late.record.offset < h) {
                self.send_late(sink, late, originals, &acks);
            }
        }
        let halt = self.handle_all(sink, failures, originals, &acks, halt);
        if at_least_once {
            let delivered: Arc<dyn Delivered> = acks.clone();
            chain.hold(&delivered);
        }
        acks.sealed();
        match (halt, next_offset) {
            (Some(halt), _) => partition.processed(acks, halt, true),
            (None, Some(next)) => partition.processed(acks, next, false),
            // Nothing consumed yet: no offset moves, whatever the outputs' fate.
            (None, None) => partition.settled(),
        }
    }

    /// At least once: the batch's state changes go to the store and the changelog with its
    /// outputs, so its offsets are committed only once its changelog records are acknowledged
    /// too (exactly once, they wait for the partition's next commit). False if the store could
    /// not take them.
    fn send_state(&self, sink: &Sink, partition: &Partition, acks: &Arc<Acks>) -> bool {
        for s in &partition.states {
            match s.state.flush() {
                Ok(changes) => {
                    let sent =
                        sink.send_changelog(&s.changelog, partition.partition, &changes, acks);
                    if let Err(e) = sent {
                        acks.fail();
                        self.fatal.stop(format!("changelog `{}`: {e}", s.changelog));
                    }
                }
                Err(e) => {
                    acks.fail();
                    self.fatal.stop(format!(
                        "{e}; {}[{}] is committed only up to the records whose state was \
                         written: the rest are read again after a restart",
                        partition.topic, partition.partition,
                    ));
                    return false;
                }
            }
        }
        true
    }

    /// Send one output; one the sink refuses as too large is a failure of its input.
    fn send_output(
        &self,
        sink: &Sink,
        record: &Record,
        acks: &Arc<Acks>,
        halt: &mut Option<i64>,
        failures: &mut Vec<Failure>,
    ) {
        match sink.send(&self.sink_topic, record, acks) {
            Ok(()) => {}
            Err(SendError::TooLarge { size, cause }) => {
                if self.policy == ErrorPolicy::Fail {
                    *halt = Some(halt.map_or(record.offset, |h| h.min(record.offset)));
                }
                failures.push(error_policy::too_large(record, size, &cause));
            }
            Err(e @ SendError::Failed { .. }) => self.fatal.stop(format!("sink: {e}")),
        }
    }

    /// A record later than its windows allow goes where the stage says: dropped (counted), to a
    /// topic, or to the dead-letter topic.
    fn send_late(
        &self,
        sink: &Sink,
        late: LateRecord,
        originals: Option<&[Record]>,
        acks: &Arc<Acks>,
    ) {
        Metrics::add(&self.metrics.late, 1);
        let place = || {
            format!(
                "stage `{}`: {}[{}]@{} is behind the watermark {}, later than the stage keeps \
                 what it belongs with",
                late.stage,
                late.record.topic,
                late.record.partition,
                late.record.offset,
                late.watermark
            )
        };
        match &late.to {
            LateOutput::Drop => tracing::debug!(
                stage = %late.stage,
                topic = %late.record.topic,
                partition = late.record.partition,
                offset = late.record.offset,
                watermark = late.watermark,
                "late record dropped"
            ),
            LateOutput::Topic(topic) => {
                if let Err(e) = sink.send(topic, &late.record, acks) {
                    acks.fail();
                    self.fatal
                        .stop(format!("{}; sending it to `{topic}` failed: {e}", place()));
                }
            }
            LateOutput::DeadLetter => {
                let message = format!(
                    "behind the watermark {}, later than the stage keeps what it belongs with \
                     (a window past its allowed lateness, or a join's records past `within`)",
                    late.watermark
                );
                let failure = Failure {
                    error: RecordError {
                        plugin: late.stage.clone(),
                        kind: ErrorKind::Late,
                        message,
                    },
                    record: late.record.clone(),
                    stage: late.stage.clone(),
                    plugin_hash: Some(late.plugin_hash.clone()),
                };
                if self.handle(sink, &failure, originals, acks, None).is_some() {
                    // Its dead letter failed: nothing of this batch may be committed.
                    acks.fail();
                }
            }
        }
    }

    /// Apply the error policy to every failed record, once per input; the first input the
    /// partition must stop at comes back (`halt`, or an earlier one whose dead letter failed).
    fn handle_all(
        &self,
        sink: &Sink,
        mut failures: Vec<Failure>,
        originals: Option<&[Record]>,
        acks: &Arc<Acks>,
        mut halt: Option<i64>,
    ) -> Option<i64> {
        failures.sort_by_key(|f| f.record.offset);
        // A flat-map may emit several refused outputs of one input: one dead letter per input.
        failures.dedup_by(|a, b| a.record.offset == b.record.offset && a.is_input());
        for failure in &failures {
            Metrics::add(&self.metrics.failed, 1);
            if !failure.is_input() && self.policy == ErrorPolicy::Fail {
                // Not tied to one input: nothing of this partition may be committed from here on.
                acks.fail();
                self.fatal.set(failure.to_error());
                continue;
            }
            if let Some(stop) = self.handle(sink, failure, originals, acks, halt) {
                halt = Some(halt.map_or(stop, |h| h.min(stop)));
            }
        }
        halt
    }
}
