//! `weir run` of a Postgres source: the database's committed changes through the chain to Kafka.
//!
//! One ordered stream (the slot's), so one chain: each captured transaction (or chunk of
//! snapshot rows) is a batch. Outputs go to the topic of their table (`PREFIX.SCHEMA.TABLE`)
//! unless `[sink] topic` names one.
//!
//! Where the run is, is recorded in the positions topic `PREFIX.SLOT-offsets` (key: the slot):
//! the end LSN of the last transaction whose outputs are in Kafka, and whether the snapshot is
//! complete. At least once, it is written once those outputs are acknowledged, and the slot is
//! then confirmed to it. Exactly once, it is written inside each Kafka transaction with the
//! outputs it covers (the log's markers decide both together), and the slot is confirmed only
//! after the commit; a restart resumes from the recorded LSN and skips what is at or below it.
//! The snapshot goes out in one transaction, so it is all there or not at all. A slot whose
//! snapshot never completed is dropped and made again, with a new snapshot.

use std::{
    collections::VecDeque,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::RunOptions;
use crate::{
    chain::{BatchOutput, Stages},
    config::{ErrorPolicy, Guarantee, Pipeline, PostgresSource, SinkConfig, SnapshotMode},
    engine::Record,
    kafka::{admin, changelog, positions, Acks, ChangelogMarks, Fatal, Sink},
    metrics::{Metrics, RunInfo, Snapshot, SHADOW_LOG_EVERY},
    postgres::{catalog::Catalog, lsn_text, Capture, Captured, Change, Settings},
    reload::{Live, LiveChain},
    Error,
};

/// What the positions topic holds for a slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Position {
    /// The end LSN of the last transaction whose outputs are in Kafka (0: none yet).
    lsn: u64,
    /// Whether every row of the slot's snapshot is in Kafka.
    snapshot_done: bool,
}

/// Outputs handed to the sink and not yet confirmed to the slot: the LSN each batch reaches.
struct Pending {
    position: Position,
    acks: Arc<Acks>,
}

/// A position record on its way to the positions topic (at least once).
struct Recording {
    position: Position,
    acks: Arc<Acks>,
    sent: Instant,
}

/// The topic recording where the capture of `source` is.
pub fn positions_topic(source: &PostgresSource) -> String {
    format!("{}.{}-offsets", source.topic_prefix, source.slot)
}

/// How long the capture waits for the next change before the loop looks at its stop flag.
const POLL: Duration = Duration::from_millis(200);
/// How long a broken stream is tried again before the run stops with its error.
const RECONNECT_FOR: Duration = Duration::from_secs(120);

/// Run `pipeline`, whose source is a Postgres database, until `options.stop` or an error.
pub fn run(
    pipeline: &Pipeline,
    stages: &Stages,
    live: Option<Arc<Live>>,
    options: RunOptions,
) -> Result<Snapshot, Error> {
    let source = pipeline.postgres.as_ref().expect("a postgres source");
    let sink_config = pipeline
        .sink
        .as_ref()
        .ok_or_else(|| config_error(pipeline, "no [sink] table: `weir run` needs one"))?;
    let brokers = sink_config.brokers.clone().ok_or_else(|| {
        config_error(
            pipeline,
            "[sink] brokers is needed: a Postgres source has no brokers to share",
        )
    })?;
    if let Some((_, name)) = stages.stateful().first() {
        return Err(config_error(
            pipeline,
            &format!(
                "stage `{name}` keeps keyed state (or windows), which weir does not yet keep for \
                 a Postgres source: run it in a second pipeline, over the topics the capture \
                 writes"
            ),
        ));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|cause| Error::Io {
            what: "starting the capture's runtime".into(),
            cause,
        })?;
    let positions = positions_topic(source);
    admin::ensure_compacted(&brokers, &[&positions], 1)?;
    let recorded = read_position(&brokers, &positions, &source.slot)?;
    let settings = Settings::new(source)?;
    runtime.block_on(prepare_slot(&settings, recorded))?;
    let capture = runtime.block_on(Capture::start(settings, recorded.lsn))?;
    let mut run = PostgresRun::new(pipeline, stages, live, &options, &brokers, capture)?;
    // Without a snapshot there is none to wait for (a broken stream may be resumed at once).
    let recorded = Position {
        snapshot_done: recorded.snapshot_done || source.snapshot == SnapshotMode::Never,
        ..recorded
    };
    run.position = recorded;
    run.confirmed = recorded;
    run.recorded = recorded;
    tracing::info!(
        "running {} ({} stages): postgres {} (slot `{}`) -> {}",
        pipeline.path.display(),
        pipeline.stages.len(),
        run.database,
        source.slot,
        if sink_config.topic.is_empty() {
            format!("{}.SCHEMA.TABLE", source.topic_prefix)
        } else {
            sink_config.topic.clone()
        }
    );
    let result = runtime.block_on(run.go(&options));
    runtime.block_on(run.capture.close());
    result.map(|()| options.metrics.snapshot())
}

fn config_error(pipeline: &Pipeline, message: &str) -> Error {
    Error::Config {
        path: pipeline.path.clone(),
        line: Some(1),
        message: message.to_string(),
    }
}

/// The last committed position of `slot`.
fn read_position(brokers: &str, topic: &str, slot: &str) -> Result<Position, Error> {
    let value = positions::recorded(brokers, topic, 0, slot.as_bytes(), Duration::from_secs(30))
        .map_err(|e| {
            Error::Topic(format!(
                "reading the capture's position from `{topic}`: {e}"
            ))
        })?;
    match value {
        None => Ok(Position::default()),
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            Error::Topic(format!(
                "the capture's position in `{topic}` is not weir's ({e})"
            ))
        }),
    }
}

/// Make the slot fit the recorded position: a slot whose snapshot never completed is dropped
/// (the capture makes it again, with a new snapshot); a slot gone although weir had captured
/// from it is an error, since the changes since are gone with it.
async fn prepare_slot(settings: &Settings, recorded: Position) -> Result<(), Error> {
    let source = &settings.source;
    let catalog = Catalog::connect(settings).await?;
    let slot = catalog.slot(&source.slot).await?;
    match slot {
        Some(_)
            if !recorded.snapshot_done
                && source.snapshot == SnapshotMode::Initial
                && recorded.lsn == 0 =>
        {
            if !source.create {
                return Err(Error::Postgres {
                    what: format!("replication slot `{}`", source.slot),
                    cause: "weir has no record of a complete snapshot from it, and a consistent \
                            snapshot needs a new slot, which source.create = false forbids: drop \
                            the slot and let weir create it, or set snapshot = \"never\""
                        .into(),
                });
            }
            tracing::warn!(
                "postgres: replication slot `{}` exists but its snapshot never reached Kafka \
                 completely: dropping it and starting over with a new snapshot",
                source.slot
            );
            catalog.drop_slot(&source.slot).await
        }
        None if recorded.lsn > 0 => Err(Error::Postgres {
            what: format!("replication slot `{}`", source.slot),
            cause: format!(
                "it is gone, but weir had captured through LSN {}: the changes since went with \
                 it; to start over with a new snapshot, delete the positions record (topic \
                 `{}`)",
                lsn_text(recorded.lsn),
                positions_topic(source)
            ),
        }),
        _ => Ok(()),
    }
}

struct PostgresRun {
    capture: Capture,
    chain: LiveChain,
    sink: Sink,
    /// Where shadows' outputs go (`shadow_topic`).
    shadow_sink: super::delivery::ShadowSink,
    fatal: Arc<Fatal>,
    metrics: Arc<Metrics>,
    exactly_once: bool,
    policy: ErrorPolicy,
    dead_letters: Option<String>,
    /// `[sink] topic`, or empty: each output to its table's topic.
    sink_topic: String,
    positions: String,
    slot: String,
    database: String,
    /// How far the outputs handed to the sink reach.
    position: Position,
    /// How far the slot was confirmed (and the position recorded).
    confirmed: Position,
    /// The last position sent to the positions topic (at least once: maybe not acknowledged).
    recorded: Position,
    pending: VecDeque<Pending>,
    /// At least once: position records not yet acknowledged, oldest first.
    recording: VecDeque<Recording>,
    checkpoint_every: Duration,
    /// Offsets for snapshot rows, which share one LSN.
    next_row: i64,
    /// Exactly once: the snapshot is being written in the open transaction.
    in_snapshot: bool,
}

impl PostgresRun {
    fn new(
        pipeline: &Pipeline,
        stages: &Stages,
        live: Option<Arc<Live>>,
        options: &RunOptions,
        brokers: &str,
        capture: Capture,
    ) -> Result<PostgresRun, Error> {
        let source = pipeline.postgres.as_ref().expect("a postgres source");
        let sink_config: &SinkConfig = pipeline.sink.as_ref().expect("checked");
        let fatal = Arc::new(Fatal::default());
        let metrics = options.metrics.clone();
        let exactly_once = pipeline.delivery.guarantee == Guarantee::ExactlyOnce;
        let kafka_error = |cause| Error::Kafka {
            what: format!("the sink producer for {brokers}"),
            cause,
        };
        // The positions topic is kept as a changelog is: its records are not outputs, so they
        // are not counted as delivered (nor their latency).
        let mut marks = ChangelogMarks::default();
        marks.insert(positions_topic(source), changelog::unmarked(1));
        let sink = if exactly_once {
            let id = format!("weir-postgres-{}-{}", source.topic_prefix, source.slot);
            Sink::transactional(
                brokers,
                &sink_config.kafka,
                &id,
                marks,
                metrics.clone(),
                fatal.clone(),
            )
        } else {
            Sink::new(
                brokers,
                &sink_config.kafka,
                marks,
                metrics.clone(),
                fatal.clone(),
            )
        }
        .map_err(kafka_error)?;
        let mut topics: Vec<String> = source
            .table_names()
            .iter()
            .map(|(s, t)| format!("{}.{s}.{t}", source.topic_prefix))
            .collect();
        if !sink_config.topic.is_empty() {
            topics = vec![sink_config.topic.clone()];
        }
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        admin::ensure_topics(brokers, &refs, 1, false)?;
        let mut chain = LiveChain::start(stages, live.as_ref())?;
        let reporting = metrics.clone();
        let stop_at_failure = pipeline.errors.policy == ErrorPolicy::Fail;
        chain.prepare_each(move |c| {
            if !reporting.totals_only {
                c.report_to(&reporting);
            }
            if stop_at_failure {
                c.stop_at_first_failure();
            }
        });
        metrics.set_info(RunInfo {
            pipeline: pipeline.path.display().to_string(),
            guarantee: pipeline.delivery.guarantee.as_str().to_string(),
            workers: 1,
            sources: source
                .table_names()
                .iter()
                .map(|(s, t)| format!("postgres {}: {s}.{t}", source.url))
                .collect(),
            sink: if sink_config.topic.is_empty() {
                "(each table's topic)".into()
            } else {
                sink_config.topic.clone()
            },
            dead_letters: pipeline.errors.topic.clone(),
        });
        Ok(PostgresRun {
            capture,
            chain,
            sink,
            shadow_sink: super::delivery::ShadowSink::new(brokers, &sink_config.kafka),
            fatal,
            metrics,
            exactly_once,
            policy: pipeline.errors.policy,
            dead_letters: pipeline.errors.topic.clone(),
            sink_topic: sink_config.topic.clone(),
            positions: positions_topic(source),
            slot: source.slot.clone(),
            database: source.url.clone(),
            position: Position::default(),
            confirmed: Position::default(),
            recorded: Position::default(),
            pending: VecDeque::new(),
            recording: VecDeque::new(),
            checkpoint_every: pipeline.delivery.checkpoint_interval,
            next_row: 0,
            in_snapshot: false,
        })
    }

    /// Capture, process and deliver until stopped; then the last checkpoint.
    async fn go(&mut self, options: &RunOptions) -> Result<(), Error> {
        self.metrics.health.running.store(true, Ordering::Relaxed);
        self.metrics.health.assigned.store(1, Ordering::Relaxed);
        let mut last_checkpoint = Instant::now();
        let mut shadows_logged = Instant::now();
        let result = loop {
            if options.stop.load(Ordering::Relaxed) {
                break Ok(());
            }
            if let Some(error) = self.fatal.take() {
                break Err(error);
            }
            match self.capture.next(POLL).await {
                Ok(Some(captured)) => {
                    if let Err(e) = self.handle(captured) {
                        break Err(e);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    if let Err(e) = self.reconnect(e, options).await {
                        break Err(e);
                    }
                }
            }
            if let Err(e) = self.confirm_recorded() {
                break Err(e);
            }
            if shadows_logged.elapsed() >= SHADOW_LOG_EVERY {
                self.metrics.log_shadows();
                shadows_logged = Instant::now();
            }
            if last_checkpoint.elapsed() >= self.checkpoint_every && !self.in_snapshot {
                if let Err(e) = self.checkpoint() {
                    break Err(e);
                }
                last_checkpoint = Instant::now();
            }
        };
        self.metrics.health.running.store(false, Ordering::Relaxed);
        self.metrics.log_shadows();
        match result {
            Ok(()) if !self.in_snapshot => self.finish(),
            Ok(()) => {
                self.abandon();
                Ok(())
            }
            Err(e) => {
                self.abandon();
                Err(e)
            }
        }
    }

    /// The stream broke (`cause`): drop what is not durable yet, and connect again from the
    /// last recorded position, waiting longer between tries, for at most [`RECONNECT_FOR`].
    async fn reconnect(&mut self, cause: Error, options: &RunOptions) -> Result<(), Error> {
        if self.in_snapshot || !self.confirmed.snapshot_done {
            return Err(cause);
        }
        tracing::warn!(
            "{cause}; connecting again from LSN {}",
            lsn_text(self.confirmed.lsn)
        );
        if self.exactly_once {
            self.sink
                .restart_transaction()
                .map_err(|cause| Error::Kafka {
                    what: "dropping the transaction of what was not recorded".into(),
                    cause,
                })?;
        }
        self.pending.clear();
        self.position = self.confirmed;
        let started = Instant::now();
        let mut wait = Duration::from_millis(500);
        loop {
            match self.capture.reconnect(self.confirmed.lsn).await {
                Ok(()) => {
                    tracing::info!("postgres: connected again");
                    return Ok(());
                }
                Err(e)
                    if started.elapsed() < RECONNECT_FOR
                        && !options.stop.load(Ordering::Relaxed) =>
                {
                    tracing::warn!("{e}; trying again in {wait:?}");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Run what was captured through the chain and hand the outputs to the sink.
    fn handle(&mut self, captured: Captured) -> Result<(), Error> {
        match captured {
            Captured::Snapshot { changes, last, lsn } => {
                self.in_snapshot = self.exactly_once && !last;
                let records = self.records(changes, true);
                let reached = Position {
                    lsn: if last { lsn } else { 0 },
                    snapshot_done: last,
                };
                self.process(records, reached)
            }
            Captured::Transaction(t) => {
                let records = self.records(t.changes, false);
                let reached = Position {
                    lsn: t.end_lsn,
                    snapshot_done: true,
                };
                self.process(records, reached)
            }
            Captured::Heartbeat { lsn } => {
                let reached = Position {
                    lsn: lsn.max(self.position.lsn),
                    snapshot_done: true,
                };
                self.process(Vec::new(), reached)
            }
        }
    }

    fn records(&mut self, changes: Vec<Change>, snapshot: bool) -> Vec<Record> {
        Metrics::add(&self.metrics.consumed, changes.len());
        changes
            .into_iter()
            .map(|c| {
                let offset = if snapshot {
                    self.next_row += 1;
                    self.next_row - 1
                } else {
                    c.lsn as i64
                };
                Record {
                    key: c.key,
                    value: c.value,
                    headers: Vec::new(),
                    timestamp: c.timestamp_ms,
                    topic: c.topic,
                    partition: 0,
                    offset,
                }
            })
            .collect()
    }

    /// One batch through the chain to the sink; `reached` is where the slot may be confirmed
    /// once its outputs are in Kafka.
    fn process(&mut self, records: Vec<Record>, reached: Position) -> Result<(), Error> {
        let acks = Acks::new();
        for chunk in records.chunks(512) {
            let output = self.chain.process(chunk.to_vec());
            Metrics::add(&self.metrics.processed, chunk.len());
            self.deliver(output, chunk, &acks)?;
        }
        acks.sealed();
        // A batch that reaches nothing new (a chunk of the snapshot before its last) still
        // holds back what comes after it until its outputs are acknowledged.
        let position = Position {
            lsn: reached.lsn.max(self.position.lsn),
            snapshot_done: reached.snapshot_done || self.position.snapshot_done,
        };
        self.position = position;
        self.pending.push_back(Pending { position, acks });
        Ok(())
    }

    /// Send a batch's outputs, and apply the error policy to its failures.
    fn deliver(
        &mut self,
        output: BatchOutput,
        inputs: &[Record],
        acks: &Arc<Acks>,
    ) -> Result<(), Error> {
        if let Some(failure) = output
            .failures
            .iter()
            .find(|_| self.policy == ErrorPolicy::Fail)
        {
            // Nothing of this transaction is confirmed: a restart reads it again.
            return Err(failure.to_error());
        }
        self.shadow_sink.send(output.shadow);
        for record in &output.records {
            let topic = if self.sink_topic.is_empty() {
                &record.topic
            } else {
                &self.sink_topic
            };
            self.sink.send(topic, record, acks).map_err(|e| {
                Error::Topic(format!(
                    "sending the output of {}@{} to `{topic}`: {e}",
                    record.topic, record.offset
                ))
            })?;
        }
        for failure in &output.failures {
            match (&self.policy, &self.dead_letters) {
                (ErrorPolicy::DeadLetter, Some(topic)) => {
                    let original = inputs
                        .iter()
                        .find(|r| r.offset == failure.record.offset)
                        .unwrap_or(&failure.record);
                    let letter = super::error_policy::letter(original, failure);
                    self.sink.send(topic, &letter, acks).map_err(|e| {
                        Error::Topic(format!(
                            "{}; sending it to the dead-letter topic `{topic}` failed: {e}",
                            failure.place()
                        ))
                    })?;
                    Metrics::add(&self.metrics.dead_lettered, 1);
                }
                _ => {
                    Metrics::add(&self.metrics.skipped, 1);
                    failure.log_skipped();
                }
            }
        }
        Ok(())
    }

    /// Make durable what is delivered, then confirm the slot. Exactly once: the open
    /// transaction with its position, committed. At least once: the position the acknowledged
    /// batches reach goes to the positions topic without waiting (a flush would hold the capture
    /// up for a round trip), and the slot is confirmed once a later checkpoint sees it
    /// acknowledged.
    fn checkpoint(&mut self) -> Result<(), Error> {
        if self.exactly_once {
            let last = self.pending.drain(..).next_back().map(|p| p.position);
            return match last {
                Some(position) if position != self.confirmed => self.commit(position),
                _ => Ok(()),
            };
        }
        self.confirm_recorded()?;
        let mut reached = None;
        while let Some(head) = self.pending.front() {
            match head.acks.done() {
                Some(true) => reached = self.pending.pop_front().map(|p| p.position),
                Some(false) => return Err(self.undelivered("an output was not delivered")),
                None => break,
            }
        }
        // Every batch reaches a position (the snapshot's chunks but the last are never
        // checkpointed between), so with none new there is nothing to make durable.
        match reached {
            // Never backwards: after a reconnection the batches reach again what may already
            // be on its way.
            Some(position)
                if position.lsn > self.recorded.lsn
                    || (position.snapshot_done && !self.recorded.snapshot_done) =>
            {
                let acks = self.send_position(position)?;
                self.recorded = position;
                self.recording.push_back(Recording {
                    position,
                    acks,
                    sent: Instant::now(),
                });
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// At least once: confirm the slot to the last position record acknowledged (checked after
    /// each capture, so a checkpoint's time is its record's round trip, give or take a poll).
    fn confirm_recorded(&mut self) -> Result<(), Error> {
        while let Some(head) = self.recording.front() {
            match head.acks.done() {
                Some(true) => {
                    let done = self.recording.pop_front().expect("a head");
                    self.confirmed = done.position;
                    self.capture.confirm(done.position.lsn);
                    self.metrics.checkpointed(1, done.sent.elapsed());
                    tracing::debug!(lsn = %lsn_text(done.position.lsn), snapshot_done = done.position.snapshot_done, "capture position recorded");
                }
                Some(false) => {
                    return Err(self.undelivered(&format!(
                        "the capture's position was not written to `{}`",
                        self.positions
                    )))
                }
                None => break,
            }
        }
        Ok(())
    }

    /// The error that failed a delivery, or `what`.
    fn undelivered(&self, what: &str) -> Error {
        self.fatal
            .take()
            .unwrap_or_else(|| Error::Topic(what.to_string()))
    }

    /// Exactly once: write `position` into the open transaction, commit it, confirm the slot.
    fn commit(&mut self, position: Position) -> Result<(), Error> {
        let started = Instant::now();
        self.send_position(position)?;
        self.sink
            .commit_transaction()
            .map_err(|cause| Error::Kafka {
                what: "committing the capture's transaction".into(),
                cause,
            })?;
        self.metrics.checkpointed(1, started.elapsed());
        tracing::debug!(lsn = %lsn_text(position.lsn), snapshot_done = position.snapshot_done, "capture position recorded");
        self.recorded = position;
        self.confirmed = position;
        self.capture.confirm(position.lsn);
        Ok(())
    }

    /// Hand `position` to the sink for the positions topic.
    fn send_position(&self, position: Position) -> Result<Arc<Acks>, Error> {
        let value = serde_json::to_vec(&position).expect("a position serializes");
        let acks = Acks::new();
        self.sink
            .send_change(
                &self.positions,
                0,
                self.slot.as_bytes(),
                Some(&value),
                &acks,
            )
            .map_err(|e| {
                Error::Topic(format!(
                    "recording the capture's position in `{}`: {e}",
                    self.positions
                ))
            })?;
        acks.sealed();
        Ok(acks)
    }

    /// Stopping: deliver and record what is in hand.
    fn finish(&mut self) -> Result<(), Error> {
        if self.exactly_once {
            return self.checkpoint();
        }
        let flush = |sink: &Sink| {
            sink.flush(Duration::from_secs(120))
                .map_err(|cause| Error::Kafka {
                    what: "delivering the last outputs".into(),
                    cause,
                })
        };
        flush(&self.sink)?;
        self.checkpoint()?;
        flush(&self.sink)?;
        self.confirm_recorded()?;
        match self.recording.is_empty() {
            true => Ok(()),
            false => Err(self.undelivered("the capture's last position was not acknowledged")),
        }
    }

    /// After an error (or a stop in the middle of the snapshot, exactly once): nothing more is
    /// committed; what was not recorded is captured again by the next run.
    fn abandon(&mut self) {
        if self.exactly_once {
            self.sink.abort();
        }
    }
}
