//! Everything weir says to Kafka brokers, and nothing about plugins: the runtime above decides
//! what to read, send and commit, and when.
//!
//! - [`source`]: the consumer records come from; `sink`: the producer outputs, dead letters
//!   and changelog records go out through, each carrying its batch's `Acks`.
//! - `transactions`: exactly once, a transactional producer per source partition.
//! - `admin`: reach the brokers, check topics, create compacted ones.
//! - `changelog`: state changelog topics, and restoring a partition's state from one.
//! - [`log_reader`] and [`positions`]: a read_committed reader that applies the log's own
//!   transaction markers, and the topic where exactly-once positions are recorded. Each says in
//!   its module doc why it exists (the test broker's limits) and why it is right on Apache Kafka
//!   as well.
//! - [`follow`]: a reader of a whole topic in no group, from positions its caller keeps (tables).
//! - `client`: what the clients share (librdkafka's logs and errors, retry backoff).

pub(crate) mod acks;
pub(crate) mod admin;
pub(crate) mod changelog;
mod client;
pub mod follow;
pub mod log_reader;
pub mod positions;
pub(crate) mod sink;
pub mod source;
pub(crate) mod transactions;

pub(crate) use acks::Acks;
pub(crate) use admin::settings_error;
pub use admin::{check_client_settings, check_sink_settings};
pub(crate) use changelog::ChangelogMarks;
pub use changelog::{changelog_topic, read_stage_state};
pub use sink::PRODUCER_DEFAULTS;
pub(crate) use sink::{Fatal, SendError, Sink};
pub use source::Consumer;
pub use source::CONSUMER_DEFAULTS;
pub(crate) use transactions::Transactions;
