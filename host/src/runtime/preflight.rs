//! Before the first record: reach the brokers, check every topic the pipeline reads or writes,
//! open the state store and create what weir keeps itself (changelogs, the positions topic).
//! A pipeline that cannot run says so here, naming the topic, before it joins the group.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use rdkafka::metadata::Metadata;

use super::{delivery::ShadowSink, join, restore, tables, Assigned, RunOptions, Shared};
use crate::{
    chain::Stages,
    config::{ErrorPolicy, Guarantee, LateOutput, Pipeline, SinkConfig, SourceConfig},
    kafka::{
        admin::{self, require_topic},
        positions::offsets_topic,
        ChangelogMarks, Consumer, Fatal, Sink, Transactions,
    },
    Error,
};

/// What the run shares, ready to start; `None` if stopped while waiting for the brokers.
pub(super) fn prepare(
    pipeline: &Pipeline,
    stages: &Stages,
    consumer: &Consumer,
    options: &RunOptions,
) -> Result<Option<Shared>, Error> {
    let (source, sink_config) = pipeline.kafka()?;
    let sink_brokers = sink_config.brokers.as_deref().unwrap_or(&source.brokers);
    let Some(metadata) = admin::wait_for_brokers(consumer, &source.brokers, &options.stop) else {
        return Ok(None);
    };
    let mut partitions = 0;
    for topic in &source.topics {
        partitions = partitions.max(require_topic(&metadata, topic, "source", &source.brokers)?);
    }
    check_partitioned_tables(pipeline, &metadata, source)?;
    join::check_partitions(pipeline, &metadata, source)?;
    let store = restore::open_store(pipeline, stages, &source.group)?;
    let state = restore::prepare_state(
        stages,
        store.as_ref(),
        &source.group,
        sink_brokers,
        partitions,
    )?;
    let marks: ChangelogMarks = state
        .as_ref()
        .map_or_else(Default::default, |s| s.marks.clone());
    let fatal = Arc::new(Fatal::default());
    let sink = Sink::new(
        sink_brokers,
        &sink_config.kafka,
        marks.clone(),
        options.metrics.clone(),
        fatal.clone(),
    )
    .map_err(|cause| Error::Kafka {
        what: format!("{}: [sink] settings", pipeline.path.display()),
        cause,
    })?;
    let dead_letters = (pipeline.errors.policy == ErrorPolicy::DeadLetter)
        .then(|| pipeline.errors.topic.clone())
        .flatten();
    check_sink_topics(
        pipeline,
        &sink,
        sink_brokers,
        source,
        &metadata,
        &dead_letters,
    )?;
    let exactly_once = match pipeline.delivery.guarantee {
        Guarantee::ExactlyOnce => Some(transactions(
            source,
            sink_config,
            sink_brokers,
            marks,
            partitions,
        )?),
        Guarantee::AtLeastOnce => None,
    };
    // Last: a pipeline that cannot run says so before minutes of reading tables.
    let table_readers = match &store {
        Some(store) if !stages.tables().is_empty() => {
            let tables_source = tables::Source {
                brokers: &source.brokers,
                properties: &source.kafka,
                policy: pipeline.errors.policy,
            };
            let metrics = &options.metrics;
            Some(tables::keep(
                stages.tables(),
                store,
                &tables_source,
                &options.stop,
                &fatal,
                metrics,
            )?)
        }
        _ => None,
    };
    Ok(Some(Shared {
        assigned: Mutex::new(Assigned {
            partitions: HashMap::new(),
            load: vec![0; options.workers.max(1)],
        }),
        sink,
        sink_topic: sink_config.topic.clone(),
        dead_letters,
        policy: pipeline.errors.policy,
        state,
        exactly_once,
        workers: OnceLock::new(),
        shadow_sink: ShadowSink::new(sink_brokers, &sink_config.kafka),
        clocks: stages
            .clocks()
            .into_iter()
            .map(|(i, clock)| (i, pipeline.stages[i].name.clone(), clock))
            .collect(),
        fatal,
        metrics: options.metrics.clone(),
        held: options.held.clone(),
        table_readers: Mutex::new(table_readers),
        tables: stages.tables().clone(),
        joins: join::Joins::of(pipeline, source, &options.metrics),
        stop: options.stop.clone(),
    }))
}

/// Check that each partitioned table's topic has as many partitions as every source topic: a
/// record of source partition `p` is looked up in table partition `p` only.
fn check_partitioned_tables(
    pipeline: &Pipeline,
    metadata: &Metadata,
    source: &SourceConfig,
) -> Result<(), Error> {
    for table in pipeline.tables.iter().filter(|t| t.partitioned) {
        let role = format!("table `{}`", table.name);
        if let Some((count, topic, theirs)) = unlike_source(metadata, source, &table.topic, &role)?
        {
            return Err(Error::Topic(format!(
                "table `{}` ({}:{}) is partitioned = true, so its topic must be partitioned as \
                 the source's are, but `{}` has {count} partitions and source topic `{topic}` \
                 has {theirs}: give them the same number (and the same key, so a key is in the \
                 same partition of both), or drop `partitioned` to keep the whole table in \
                 every instance",
                table.name,
                pipeline.path.display(),
                table.line,
                table.topic
            )));
        }
    }
    Ok(())
}

/// `topic` (which must exist, for `role`) and the first source topic with another number of
/// partitions, with both numbers; none if every source topic has as many as `topic`.
pub(super) fn unlike_source<'a>(
    metadata: &Metadata,
    source: &'a SourceConfig,
    topic: &str,
    role: &str,
) -> Result<Option<(usize, &'a str, usize)>, Error> {
    let count = require_topic(metadata, topic, role, &source.brokers)?;
    for other in &source.topics {
        let theirs = require_topic(metadata, other, "source", &source.brokers)?;
        if theirs != count {
            return Ok(Some((count, other, theirs)));
        }
    }
    Ok(None)
}

/// Check that the sink, dead-letter and late topics exist on the sink's brokers.
fn check_sink_topics(
    pipeline: &Pipeline,
    sink: &Sink,
    sink_brokers: &str,
    source: &SourceConfig,
    source_metadata: &Metadata,
    dead_letters: &Option<String>,
) -> Result<(), Error> {
    let (_, sink_config) = pipeline.kafka()?;
    let sink_metadata;
    let metadata = if sink_brokers == source.brokers {
        source_metadata
    } else {
        sink_metadata = sink
            .metadata(Duration::from_secs(10))
            .map_err(|cause| Error::Kafka {
                what: format!("sink brokers {sink_brokers}"),
                cause,
            })?;
        &sink_metadata
    };
    require_topic(metadata, &sink_config.topic, "sink", sink_brokers)?;
    if let Some(topic) = dead_letters {
        require_topic(metadata, topic, "dead-letter", sink_brokers)?;
    }
    for stage in &pipeline.stages {
        if let Some(LateOutput::Topic(topic)) = stage.window.as_ref().map(|w| &w.late) {
            let what = format!("stage `{}` late", stage.name);
            require_topic(metadata, topic, &what, sink_brokers)?;
        }
        if let Some(topic) = stage.join.as_ref().and_then(|j| j.unmatched.as_ref()) {
            let what = format!("stage `{}` unmatched", stage.name);
            require_topic(metadata, topic, &what, sink_brokers)?;
        }
        if let Some(topic) = stage.shadow.as_ref().and_then(|s| s.topic.as_ref()) {
            let what = format!("stage `{}` shadow", stage.name);
            require_topic(metadata, topic, &what, sink_brokers)?;
        }
    }
    Ok(())
}

/// Exactly once: the positions topic, created if missing, and what each partition's
/// transactional producer is made from.
fn transactions(
    source: &SourceConfig,
    sink_config: &SinkConfig,
    sink_brokers: &str,
    marks: ChangelogMarks,
    partitions: usize,
) -> Result<Transactions, Error> {
    admin::ensure_compacted(sink_brokers, &[&offsets_topic(&source.group)], partitions)?;
    Ok(Transactions::new(
        sink_brokers,
        &sink_config.kafka,
        &source.group,
        marks,
        partitions,
    ))
}
