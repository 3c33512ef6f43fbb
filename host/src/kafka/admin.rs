//! Before a pipeline starts: reach the brokers, check that its topics exist, and create the
//! compacted topics weir keeps itself (state changelogs, the positions topic).

use std::{
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer as _},
    error::{KafkaError, RDKafkaErrorCode},
    metadata::Metadata,
    producer::BaseProducer,
    ClientConfig,
};

use super::{client, sink, source, Consumer};
use crate::{
    config::{Guarantee, Pipeline},
    Error,
};

/// Build the pipeline's Kafka clients without running them, so a setting librdkafka does not
/// know, or a value it cannot take (a codec it was built without), fails `weir check` instead of
/// the run.
pub fn check_client_settings(pipeline: &Pipeline) -> Result<(), Error> {
    let (source, _) = pipeline.kafka()?;
    source::consumer_config(source)
        .create::<BaseConsumer>()
        .map_err(|cause| settings_error(pipeline, "source", cause))?;
    check_sink_settings(pipeline)
}

/// Build the sink's producer as the run will (transactional under exactly-once) without
/// running it: a run builds its consumer at once, but an exactly-once producer only when a
/// partition is assigned, which is too late to find a bad `[sink.kafka]` setting.
pub fn check_sink_settings(pipeline: &Pipeline) -> Result<(), Error> {
    let (source, sink) = pipeline.kafka()?;
    let exactly_once = pipeline.delivery.guarantee == Guarantee::ExactlyOnce;
    let brokers = sink.brokers.as_deref().unwrap_or(&source.brokers);
    let id = exactly_once.then_some("weir-check");
    sink::producer_config(brokers, &sink.kafka, id)
        .create::<BaseProducer>()
        .map_err(|cause| settings_error(pipeline, "sink", cause))?;
    Ok(())
}

/// `[ROLE.kafka]` of `pipeline` has a setting librdkafka refuses.
pub(crate) fn settings_error(pipeline: &Pipeline, role: &str, cause: KafkaError) -> Error {
    Error::Kafka {
        what: format!("{}: [{role}.kafka] settings", pipeline.path.display()),
        cause,
    }
}

/// Fetch cluster metadata, retrying with backoff while the brokers are unreachable; `None` if
/// stopped meanwhile.
pub fn wait_for_brokers(consumer: &Consumer, brokers: &str, stop: &AtomicBool) -> Option<Metadata> {
    let mut attempt = 0;
    loop {
        match consumer.fetch_metadata(None, Duration::from_secs(2)) {
            Ok(metadata) => return Some(metadata),
            Err(e) => {
                let delay = client::backoff(attempt);
                tracing::warn!(
                    "cannot reach the brokers at {brokers}: {e}; retrying in {}s",
                    delay.as_secs()
                );
                let until = Instant::now() + delay;
                while Instant::now() < until {
                    if stop.load(Ordering::Relaxed) {
                        return None;
                    }
                    thread::sleep(Duration::from_millis(50));
                }
                attempt += 1;
            }
        }
    }
}

/// Check that `topic` exists; its number of partitions.
pub fn require_topic(
    metadata: &Metadata,
    topic: &str,
    role: &str,
    brokers: &str,
) -> Result<usize, Error> {
    let found = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .filter(|t| t.error().is_none() && !t.partitions().is_empty());
    match found {
        Some(t) => Ok(t.partitions().len()),
        None => Err(Error::Topic(format!(
            "{role} topic `{topic}` does not exist on {brokers}; create it first"
        ))),
    }
}

/// Create those of `topics` that do not exist yet, compacted (only the latest value of each key
/// matters: changelogs and the positions topic), and check that those that do have at least
/// `partitions` partitions.
pub fn ensure_compacted(brokers: &str, topics: &[&str], partitions: usize) -> Result<(), Error> {
    ensure_topics(brokers, topics, partitions, true)
}

/// Create those of `topics` that do not exist yet (`compacted` or not), and check that those
/// that do have at least `partitions` partitions.
pub fn ensure_topics(
    brokers: &str,
    topics: &[&str],
    partitions: usize,
    compacted: bool,
) -> Result<(), Error> {
    let kafka = |what: String| move |cause| Error::Kafka { what, cause };
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(kafka(format!("admin client for {brokers}")))?;
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))
        .map_err(kafka(format!("metadata of {brokers}")))?;
    let mut missing = Vec::new();
    for topic in topics {
        let found = metadata
            .topics()
            .iter()
            .find(|t| t.name() == *topic && t.error().is_none());
        match found {
            Some(t) if t.partitions().len() < partitions => {
                return Err(Error::Topic(format!(
                    "topic `{topic}` has {} partitions, fewer than the {partitions} needed",
                    t.partitions().len()
                )))
            }
            Some(_) => {}
            None => {
                let new = NewTopic::new(topic, partitions as i32, TopicReplication::Fixed(-1));
                missing.push(match compacted {
                    true => new.set("cleanup.policy", "compact"),
                    false => new,
                });
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Topic(format!("cannot create topics: {e}")))?;
    let results = runtime
        .block_on(admin.create_topics(&missing, &AdminOptions::new()))
        .map_err(kafka("creating topics".into()))?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!("created topic `{topic}`"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(Error::Topic(format!(
                    "cannot create topic `{topic}`: {code}"
                )))
            }
        }
    }
    Ok(())
}
