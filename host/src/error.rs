//! weir's error at the crate's boundary: why a pipeline could not start or stopped.
//!
//! It sits just above `state` in the layers: what it wraps comes from below it, and the layers
//! above (`kafka`, `runtime`) return it.

use rdkafka::error::KafkaError;

use crate::{config::ConfigError, engine::PluginError, state::StateError};

/// Why a run ended other than by a stop request, or a pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("restoring state from changelog `{topic}` partition {partition}: {cause}")]
    Restore {
        topic: String,
        partition: i32,
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{what}: {cause}")]
    Kafka { what: String, cause: KafkaError },
    #[error("{0}")]
    Topic(String),
    /// A record failed under `policy = "fail"`, or a delivery failed: offsets were committed up
    /// to (not including) the first record whose output is not safely in the sink.
    #[error("pipeline stopped: {0}")]
    Stopped(String),
}
