//! What weir's Kafka clients (the consumer, the producers, the admin client) have in common:
//! how librdkafka's own logs and errors reach the user, and how long to wait between attempts
//! to reach the brokers.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use rdkafka::{config::RDKafkaLogLevel, error::KafkaError};

/// librdkafka's own log lines are for debugging it; the problems a user must see arrive through
/// the error callback, which [`ClientErrors`] reports.
pub(crate) fn log(level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
            tracing::error!(target: "librdkafka", "{facility}: {message}")
        }
        _ => tracing::debug!(target: "librdkafka", "{facility}: {message}"),
    }
}

/// Client-level errors (broker down, connection refused, …) as warnings, each distinct one at
/// most once a minute: librdkafka repeats them on every reconnect attempt, and it retries by
/// itself, so they are news, not failures.
#[derive(Default)]
pub(crate) struct ClientErrors {
    last: Mutex<Option<(String, Instant)>>,
}

impl ClientErrors {
    pub(crate) fn report(&self, client: &str, error: &KafkaError, reason: &str) {
        let text = format!("{error}: {reason}");
        // "… (after 0ms in state CONNECT, 2 identical error(s) suppressed)" varies per attempt.
        let gist = text.split(" (after ").next().unwrap_or(&text).to_string();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let repeated = last
            .as_ref()
            .is_some_and(|(g, at)| *g == gist && at.elapsed() < Duration::from_secs(60));
        if repeated {
            tracing::debug!("{client}: {text}");
        } else {
            tracing::warn!("{client}: {text}");
            *last = Some((gist, Instant::now()));
        }
    }
}

/// How long to wait before the `attempt`th retry of reaching the brokers: 1 s doubling to 30 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.min(5)).min(Duration::from_secs(30))
}
