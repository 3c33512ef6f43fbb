//! `weir capture`: a slice of a topic, saved as envelope lines that `weir test` and `weir diff`
//! read back with every byte of each record as it was (`jsonl::write_captured`).

use std::{io::Write, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{bail, Context, Result};
use rdkafka::{
    consumer::{BaseConsumer, Consumer as _},
    ClientConfig, Offset, TopicPartitionList,
};
use weir::{jsonl, kafka::log_reader::CommittedRecord};

/// Save records of a topic to a file: by offsets, by time, or the last N of each partition.
#[derive(clap::Args)]
pub struct CaptureCommand {
    /// Brokers to read from (`host:port`, comma-separated).
    #[arg(long)]
    brokers: String,
    /// The topic to read.
    #[arg(long)]
    topic: String,
    /// A partition to read (repeat for several); every partition if none is given.
    #[arg(long = "partition")]
    partitions: Vec<i32>,
    /// The first offset to read in each partition.
    #[arg(long, conflicts_with_all = ["last", "since"])]
    from_offset: Option<i64>,
    /// The last offset to read in each partition (included).
    #[arg(long, conflicts_with = "last")]
    to_offset: Option<i64>,
    /// The last N offsets of each partition (fewer records where the log holds transaction
    /// markers).
    #[arg(long, conflicts_with = "since")]
    last: Option<i64>,
    /// Records with a timestamp from this time on: RFC 3339 (`2026-12-04T10:00:00Z`) or
    /// milliseconds since the epoch.
    #[arg(long)]
    since: Option<String>,
    /// Records with a timestamp before this time (as `--since`).
    #[arg(long)]
    until: Option<String>,
    /// The file to write (standard output if none).
    #[arg(long, short)]
    output: Option<PathBuf>,
}

/// The offsets of one partition to read: `[start, end)`.
struct Slice {
    partition: i32,
    start: i64,
    end: i64,
}

const TIMEOUT: Duration = Duration::from_secs(10);

impl CaptureCommand {
    pub fn execute(self) -> Result<ExitCode> {
        let since = self.since.as_deref().map(millis).transpose()?;
        let until = self.until.as_deref().map(millis).transpose()?;
        let slices = self.slices(since)?;
        let total: i64 = slices.iter().map(|s| s.end - s.start).sum();
        let bar = indicatif::ProgressBar::new(total.max(0) as u64).with_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} offsets, {per_sec}, {eta} left",
            )
            .expect("a valid template"),
        );
        let mut out: Box<dyn Write> = match &self.output {
            Some(path) => Box::new(std::io::BufWriter::new(
                std::fs::File::create(path)
                    .with_context(|| format!("cannot create {}", path.display()))?,
            )),
            None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
        };
        let in_time = |ts: i64| since.is_none_or(|s| ts >= s) && until.is_none_or(|u| ts < u);
        let consumer = self.consumer()?;
        let mut saved = 0u64;
        for slice in &slices {
            let mut done = slice.start;
            self.read(&consumer, slice.partition, slice.start, |rec| {
                if rec.offset >= slice.end {
                    return Ok(false);
                }
                bar.inc((rec.offset + 1 - done) as u64);
                done = rec.offset + 1;
                if in_time(rec.timestamp) {
                    saved += 1;
                    jsonl::write_captured(&mut out, &self.topic, slice.partition, &rec)
                        .with_context(|| {
                            format!(
                                "writing {} partition {} offset {} to the capture",
                                self.topic, slice.partition, rec.offset
                            )
                        })?;
                }
                Ok(rec.offset + 1 < slice.end)
            })?;
            bar.inc((slice.end - done).max(0) as u64);
        }
        out.flush().context("writing the capture")?;
        bar.finish_and_clear();
        let partitions: Vec<String> = slices
            .iter()
            .map(|s| format!("{} offsets {}..{}", s.partition, s.start, s.end))
            .collect();
        eprintln!(
            "weir capture: {saved} records of {} (partition {}) to {}",
            self.topic,
            partitions.join(", "),
            self.output
                .as_ref()
                .map_or("standard output".into(), |p| p.display().to_string())
        );
        Ok(ExitCode::SUCCESS)
    }

    /// A consumer that reads assigned partitions to their end (committed records only, on
    /// Kafka; the test broker hands out aborted ones too) and never commits for its group.
    fn consumer(&self) -> Result<BaseConsumer<EofIsNoError>> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", "weir-capture")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            .create_with_context(EofIsNoError)
            .context("cannot create a Kafka client")
    }

    /// Hand the records of `partition` from `start` to `each` until it says to stop (false)
    /// or the partition ends.
    fn read(
        &self,
        consumer: &BaseConsumer<EofIsNoError>,
        partition: i32,
        start: i64,
        mut each: impl FnMut(CommittedRecord) -> Result<bool>,
    ) -> Result<()> {
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&self.topic, partition, Offset::Offset(start))?;
        consumer.assign(&list)?;
        let mut idle = std::time::Instant::now();
        loop {
            match consumer.poll(Duration::from_millis(100)) {
                None if idle.elapsed() > TIMEOUT => {
                    bail!(
                        "{} partition {partition}: nothing read for {TIMEOUT:?}",
                        self.topic
                    )
                }
                None => {}
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return Ok(()),
                Some(Err(e)) => {
                    return Err(e)
                        .with_context(|| format!("reading {} partition {partition}", self.topic))
                }
                Some(Ok(message)) => {
                    idle = std::time::Instant::now();
                    if !each(committed(&message))? {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Each partition's offsets to read, from the options and the partition's ends.
    fn slices(&self, since: Option<i64>) -> Result<Vec<Slice>> {
        let consumer = self.consumer()?;
        let partitions = self.partitions_of(&consumer)?;
        let at = |time: Option<i64>| -> Result<Vec<Option<i64>>> {
            let Some(time) = time else {
                return Ok(vec![None; partitions.len()]);
            };
            let mut list = TopicPartitionList::new();
            for p in &partitions {
                list.add_partition_offset(&self.topic, *p, Offset::Offset(time))?;
            }
            let found = consumer
                .offsets_for_times(list, TIMEOUT)
                .with_context(|| format!("looking up offsets of {} by time", self.topic))?;
            Ok(partitions
                .iter()
                .map(
                    |p| match found.find_partition(&self.topic, *p).map(|e| e.offset()) {
                        Some(Offset::Offset(o)) => Some(o),
                        _ => None,
                    },
                )
                .collect())
        };
        // The first offset at or after `since` starts the read; `until` only filters, as a
        // later offset may hold an earlier time. (The test broker answers 0 for any time.)
        let from_time = at(since)?;
        let mut slices = Vec::new();
        for (i, &partition) in partitions.iter().enumerate() {
            let (low, high) = self.ends(&consumer, partition)?;
            let start = match (self.from_offset, self.last, since) {
                (Some(from), _, _) => from,
                (_, Some(n), _) => high - n,
                (_, _, Some(_)) => from_time[i].unwrap_or(high),
                _ => low,
            };
            let end = self.to_offset.map_or(high, |to| to + 1);
            let start = start.clamp(low, high);
            slices.push(Slice {
                partition,
                start,
                end: end.clamp(start, high),
            });
        }
        Ok(slices)
    }

    /// The first offset of `partition` and the offset after its last record. That is the high
    /// watermark on Kafka; the test broker can answer less (1 for a partition of 10 records
    /// written by a plain producer), so the log is followed from there to its end.
    fn ends(&self, consumer: &BaseConsumer<EofIsNoError>, partition: i32) -> Result<(i64, i64)> {
        let (low, high) = consumer
            .fetch_watermarks(&self.topic, partition, TIMEOUT)
            .with_context(|| format!("reading the ends of {} partition {partition}", self.topic))?;
        let mut end = high;
        self.read(consumer, partition, (high - 1).max(low), |rec| {
            end = end.max(rec.offset + 1);
            Ok(true)
        })?;
        Ok((low, end))
    }

    /// The partitions asked for, checked against the topic's.
    fn partitions_of(&self, consumer: &BaseConsumer<EofIsNoError>) -> Result<Vec<i32>> {
        let metadata = consumer
            .fetch_metadata(Some(&self.topic), TIMEOUT)
            .with_context(|| format!("cannot reach the brokers at {}", self.brokers))?;
        let topic = metadata
            .topics()
            .iter()
            .find(|t| t.name() == self.topic && t.error().is_none() && !t.partitions().is_empty());
        let Some(topic) = topic else {
            bail!("topic `{}` does not exist on {}", self.topic, self.brokers);
        };
        let all: Vec<i32> = topic.partitions().iter().map(|p| p.id()).collect();
        if self.partitions.is_empty() {
            return Ok(all);
        }
        for p in &self.partitions {
            if !all.contains(p) {
                bail!(
                    "topic `{}` has no partition {p} (it has {})",
                    self.topic,
                    all.len()
                );
            }
        }
        Ok(self.partitions.clone())
    }
}

/// A time given as milliseconds since the epoch or as an RFC 3339 timestamp.
fn millis(text: &str) -> Result<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    let ts: jiff::Timestamp = text
        .parse()
        .with_context(|| format!("`{text}` is not a time: give RFC 3339 or milliseconds"))?;
    Ok(ts.as_millisecond())
}

/// A consumed message with every byte kept: headers in order, a header without a value apart
/// from an empty one.
fn committed(message: &rdkafka::message::BorrowedMessage<'_>) -> CommittedRecord {
    use rdkafka::message::{Headers as _, Message as _};
    let headers = message.headers().map_or_else(Vec::new, |headers| {
        headers
            .iter()
            .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
            .collect()
    });
    CommittedRecord {
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        headers,
        timestamp: message.timestamp().to_millis().unwrap_or(-1),
    }
}

/// The consumer's context: the end of a partition is how a capture knows it is done, not an
/// error to log.
struct EofIsNoError;

impl rdkafka::ClientContext for EofIsNoError {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF) {
            tracing::error!("librdkafka: {error}: {reason}");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for EofIsNoError {}
