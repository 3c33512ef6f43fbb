//! A read_committed reader of one partition that decides transactions from the log itself.
//!
//! librdkafka's `isolation.level=read_committed` drops aborted records only as far as the broker's
//! Fetch answer lists the aborted transactions, and the test broker (Tansu) always sends that list
//! empty, so aborted writes come through. Restoring keyed state from a changelog written in
//! transactions must never apply an aborted write, and the exactly-once tests must not count one.
//!
//! So this reader fetches `read_uncommitted` and applies the COMMIT/ABORT control markers in the
//! log, as the aborted-transactions list is itself derived from them on a real Kafka broker: the
//! answer is the same there, it just does not rely on that list. It talks the wire protocol over a
//! plain blocking socket (one partition, a few round trips: no async runtime, no client library
//! state) and decodes record batches itself, because the `kafka-protocol` decoder collapses
//! repeated header names, gives log-append-time records the wrong timestamp and hides the batch's
//! last offset, which is what the next fetch must start after when compaction emptied its tail.

use std::{
    collections::{HashMap, VecDeque},
    io::{self, Read, Write},
    net::{TcpStream, ToSocketAddrs},
    time::{Duration, Instant},
};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::{
    compression::{Decompressor, Gzip, Lz4, Snappy, Zstd},
    messages::{
        fetch_request::{FetchPartition, FetchTopic},
        metadata_request::MetadataRequestTopic,
        ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, FetchRequest, FetchResponse,
        MetadataRequest, MetadataResponse, RequestHeader, ResponseHeader, TopicName,
    },
    protocol::{Decodable, Encodable, HeaderVersion, StrBytes},
    ResponseError,
};

/// A record as a read_committed consumer must see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedRecord {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// In log order, repeated names kept. A value is `None` when the producer sent a null header
    /// value, which Kafka keeps distinct from an empty one. Names are UTF-8 by Kafka's contract;
    /// anything else is decoded lossily.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Milliseconds since the epoch: the producer's create time, or the broker's append time on
    /// topics configured for that.
    pub timestamp: i64,
}

/// What one read saw of a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRead {
    pub records: Vec<CommittedRecord>,
    /// Where this read stopped, and where a later read should resume: the first offset of the
    /// oldest transaction still open at the first fetch, else the high watermark. Nothing at or
    /// after it was returned, because an open transaction may yet commit, and a read_committed
    /// reader must not pass records to its caller out of order. It is below `from_offset` when
    /// that lies past it (nothing was returned then).
    pub last_stable_offset: i64,
    /// The end of the log at the first fetch.
    pub high_watermark: i64,
}

/// Where a streaming read stopped; see [`PartitionRead`] for the meaning of each offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionEnd {
    pub last_stable_offset: i64,
    pub high_watermark: i64,
}

/// Why a read failed. Every variant names the broker asked (or the bootstrap list, before one
/// was), the topic and the partition, because a caller restoring several changelogs at once must
/// be able to say which one is broken.
#[derive(Debug, thiserror::Error)]
pub enum CommittedError {
    #[error("bad broker list {broker:?} for topic {topic:?} partition {partition}: {reason}")]
    BrokerList {
        broker: String,
        topic: String,
        partition: i32,
        reason: String,
    },
    #[error(
        "broker {broker}: {during} for topic {topic:?} partition {partition} failed: {source}"
    )]
    Io {
        broker: String,
        topic: String,
        partition: i32,
        during: &'static str,
        source: io::Error,
    },
    #[error("topic {topic:?} does not exist (broker {broker}, asked for partition {partition})")]
    TopicNotFound {
        broker: String,
        topic: String,
        partition: i32,
    },
    #[error("topic {topic:?} has no partition {partition}: it has {partitions} (broker {broker})")]
    PartitionNotFound {
        broker: String,
        topic: String,
        partition: i32,
        partitions: usize,
    },
    #[error(
        "offset {offset} is out of range for topic {topic:?} partition {partition} on broker \
         {broker}{}",
        range_note(*.log_start, *.high_watermark)
    )]
    OffsetOutOfRange {
        broker: String,
        topic: String,
        partition: i32,
        offset: i64,
        /// -1 when the broker did not say.
        log_start: i64,
        /// -1 when the broker did not say.
        high_watermark: i64,
    },
    #[error(
        "broker {broker}: {api} for topic {topic:?} partition {partition} failed: {error} (error \
         code {})",
        .error.code()
    )]
    Broker {
        broker: String,
        topic: String,
        partition: i32,
        api: &'static str,
        error: ResponseError,
    },
    #[error(
        "broker {broker} supports {api} v{min}..=v{max}, none of the v{want_min}..=v{want_max} \
         this reader speaks (topic {topic:?} partition {partition})"
    )]
    UnsupportedVersion {
        broker: String,
        topic: String,
        partition: i32,
        api: &'static str,
        min: i16,
        max: i16,
        want_min: i16,
        want_max: i16,
    },
    #[error(
        "broker {broker}: bad {api} answer for topic {topic:?} partition {partition}: {detail}"
    )]
    Protocol {
        broker: String,
        topic: String,
        partition: i32,
        api: &'static str,
        detail: String,
    },
    #[error(
        "broker {broker}: record batch at offset {offset} of topic {topic:?} partition \
         {partition}: {detail}"
    )]
    Batch {
        broker: String,
        topic: String,
        partition: i32,
        offset: i64,
        detail: String,
    },
}

fn range_note(log_start: i64, high_watermark: i64) -> String {
    match (log_start >= 0, high_watermark >= 0) {
        (true, true) => format!(" (the log holds {log_start}..{high_watermark})"),
        (true, false) => format!(" (the log starts at {log_start})"),
        (false, true) => format!(" (the log ends at {high_watermark})"),
        (false, false) => String::new(),
    }
}

impl CommittedError {
    /// Worth trying again (with a fresh metadata lookup and connection): the broker went away,
    /// leadership moved, or the broker said so.
    fn is_transient(&self) -> bool {
        match self {
            CommittedError::Io { .. } => true,
            CommittedError::Broker { error, .. } => error.is_retriable(),
            _ => false,
        }
    }
}

/// Every committed record of `topic`/`partition` from `from_offset` up to the partition's last
/// stable offset at the time of the first fetch, in offset order.
///
/// `timeout` bounds each connect and each request's round trip, and how long transient failures
/// (a broker restarting, leadership moving) are retried without progress; a long partition may
/// take longer as a whole while the broker keeps answering.
pub fn read_committed(
    brokers: &str,
    topic: &str,
    partition: i32,
    from_offset: i64,
    timeout: Duration,
) -> Result<PartitionRead, CommittedError> {
    let mut records = Vec::new();
    let end = read_committed_with(brokers, topic, partition, from_offset, timeout, |r| {
        records.push(r)
    })?;
    Ok(PartitionRead {
        records,
        last_stable_offset: end.last_stable_offset,
        high_watermark: end.high_watermark,
    })
}

/// [`read_committed`], handing each record to `each` as soon as it is decided, so restoring a
/// large changelog holds in memory only what lies behind the oldest undecided transaction.
/// On an error, `each` may already have seen a prefix of the records.
pub fn read_committed_with<F: FnMut(CommittedRecord)>(
    brokers: &str,
    topic: &str,
    partition: i32,
    from_offset: i64,
    timeout: Duration,
    each: F,
) -> Result<PartitionEnd, CommittedError> {
    read_committed_to(
        brokers,
        topic,
        partition,
        from_offset,
        timeout,
        |_| {},
        each,
    )
}

/// [`read_committed_with`], telling `end` the offset the read stops at (the high watermark
/// when it began) as soon as it is known, before the first record: how far a read has to go.
pub fn read_committed_to<E: FnOnce(i64), F: FnMut(CommittedRecord)>(
    brokers: &str,
    topic: &str,
    partition: i32,
    from_offset: i64,
    timeout: Duration,
    end: E,
    each: F,
) -> Result<PartitionEnd, CommittedError> {
    let ctx = Ctx {
        brokers,
        topic,
        partition,
        timeout,
    };
    let bootstrap = parse_brokers(&ctx)?;
    if from_offset < 0 {
        return Err(CommittedError::OffsetOutOfRange {
            broker: brokers.to_string(),
            topic: topic.to_string(),
            partition,
            offset: from_offset,
            log_start: -1,
            high_watermark: -1,
        });
    }
    PartitionReader {
        ctx,
        bootstrap,
        leader: None,
    }
    .run(from_offset, end, each)
}

const CLIENT_ID: &str = "weir-read-committed";
/// Per-partition fetch size to start with; a batch larger than this makes it grow.
const FETCH_BYTES: i32 = 1 << 20;
/// No batch is allowed to claim more: a corrupt length must not become an allocation.
const MAX_BATCH_BYTES: usize = 1 << 30;
/// Tansu answers a Fetch with zero wait with no partitions at all; with data present the answer
/// still comes at once (min_bytes 1).
const FETCH_WAIT: Duration = Duration::from_millis(200);
/// Fetch from v4, the first with the last stable offset, to v12, the last that names topics
/// rather than topic ids. Metadata from v4, the first that lets a reader ask not to create a
/// missing topic (before it, a broker with auto-creation on would create it), to v12. Tansu
/// (Fetch v0-17, Metadata v0-12), Kafka 2.x and Kafka 4.x all share a part of both ranges.
const FETCH_VERSIONS: (i16, i16) = (4, 12);
const METADATA_VERSIONS: (i16, i16) = (4, 12);

const ATTR_COMPRESSION: i16 = 0x07;
const ATTR_LOG_APPEND_TIME: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;
const CONTROL_ABORT: i16 = 0;
const CONTROL_COMMIT: i16 = 1;

/// What every error needs to name, and the caller's time limit.
struct Ctx<'a> {
    brokers: &'a str,
    topic: &'a str,
    partition: i32,
    timeout: Duration,
}

impl Ctx<'_> {
    fn io(&self, broker: &str, during: &'static str, source: io::Error) -> CommittedError {
        CommittedError::Io {
            broker: broker.to_string(),
            topic: self.topic.to_string(),
            partition: self.partition,
            during,
            source,
        }
    }

    fn protocol(&self, broker: &str, api: &'static str, detail: String) -> CommittedError {
        CommittedError::Protocol {
            broker: broker.to_string(),
            topic: self.topic.to_string(),
            partition: self.partition,
            api,
            detail,
        }
    }

    fn broker_error(&self, broker: &str, api: &'static str, code: i16) -> CommittedError {
        CommittedError::Broker {
            broker: broker.to_string(),
            topic: self.topic.to_string(),
            partition: self.partition,
            api,
            error: ResponseError::try_from_code(code).unwrap_or(ResponseError::Unknown(code)),
        }
    }

    fn batch(&self, broker: &str, offset: i64, detail: String) -> CommittedError {
        CommittedError::Batch {
            broker: broker.to_string(),
            topic: self.topic.to_string(),
            partition: self.partition,
            offset,
            detail,
        }
    }
}

fn parse_brokers(ctx: &Ctx) -> Result<Vec<(String, u16)>, CommittedError> {
    let bad = |reason: String| CommittedError::BrokerList {
        broker: ctx.brokers.to_string(),
        topic: ctx.topic.to_string(),
        partition: ctx.partition,
        reason,
    };
    let mut out = Vec::new();
    for item in ctx
        .brokers
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let (host, port) = item
            .rsplit_once(':')
            .ok_or_else(|| bad(format!("{item:?} is not HOST:PORT")))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad(format!("{item:?} has no valid port")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad(format!("{item:?} has no host")));
        }
        out.push((host.to_string(), port));
    }
    if out.is_empty() {
        return Err(bad("no broker given".to_string()));
    }
    Ok(out)
}

/// A request this reader sends. (`kafka_protocol::protocol::Request` exists only with the crate's
/// broker-side half compiled in as well.)
trait Api: Encodable + HeaderVersion {
    const KEY: ApiKey;
    const NAME: &'static str;
    type Response: Decodable + HeaderVersion;
}

impl Api for ApiVersionsRequest {
    const KEY: ApiKey = ApiKey::ApiVersions;
    const NAME: &'static str = "ApiVersions";
    type Response = ApiVersionsResponse;
}

impl Api for MetadataRequest {
    const KEY: ApiKey = ApiKey::Metadata;
    const NAME: &'static str = "Metadata";
    type Response = MetadataResponse;
}

impl Api for FetchRequest {
    const KEY: ApiKey = ApiKey::Fetch;
    const NAME: &'static str = "Fetch";
    type Response = FetchResponse;
}

/// One broker connection with its negotiated API versions.
struct Conn {
    addr: String,
    stream: TcpStream,
    correlation: i32,
    versions: HashMap<i16, (i16, i16)>,
}

impl Conn {
    fn open(ctx: &Ctx, host: &str, port: u16) -> Result<Conn, CommittedError> {
        let addr = format!("{host}:{port}");
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address found");
        let addrs = (host, port)
            .to_socket_addrs()
            .map_err(|e| ctx.io(&addr, "resolving", e))?;
        let mut stream = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, ctx.timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let stream = stream.ok_or_else(|| ctx.io(&addr, "connecting", last))?;
        let setup = |s: &TcpStream| -> io::Result<()> {
            s.set_read_timeout(Some(ctx.timeout))?;
            s.set_write_timeout(Some(ctx.timeout))?;
            s.set_nodelay(true)
        };
        setup(&stream).map_err(|e| ctx.io(&addr, "connecting", e))?;
        let mut conn = Conn {
            addr,
            stream,
            correlation: 0,
            versions: HashMap::new(),
        };
        // v0: every broker answers it, whatever it supports otherwise.
        let answer = conn.request(ctx, &ApiVersionsRequest::default(), 0)?;
        if answer.error_code != 0 {
            return Err(ctx.broker_error(&conn.addr, "ApiVersions", answer.error_code));
        }
        conn.versions = answer
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(conn)
    }

    /// The newest version of `R` that both sides speak, within `want`.
    fn version<R: Api>(&self, ctx: &Ctx, want: (i16, i16)) -> Result<i16, CommittedError> {
        let (min, max) = self
            .versions
            .get(&(R::KEY as i16))
            .copied()
            .unwrap_or((-1, -1));
        let best = max.min(want.1);
        if min < 0 || best < min.max(want.0) {
            return Err(CommittedError::UnsupportedVersion {
                broker: self.addr.clone(),
                topic: ctx.topic.to_string(),
                partition: ctx.partition,
                api: R::NAME,
                min,
                max,
                want_min: want.0,
                want_max: want.1,
            });
        }
        Ok(best)
    }

    fn request<R: Api>(
        &mut self,
        ctx: &Ctx,
        body: &R,
        version: i16,
    ) -> Result<R::Response, CommittedError> {
        let api = R::NAME;
        self.correlation = self.correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header
            .encode(&mut buf, R::header_version(version))
            .and_then(|()| body.encode(&mut buf, version))
            .map_err(|e| ctx.protocol(&self.addr, api, format!("cannot encode request: {e}")))?;
        let size = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        self.stream
            .write_all(&buf)
            .map_err(|e| ctx.io(&self.addr, api, e))?;
        let mut size = [0u8; 4];
        self.stream
            .read_exact(&mut size)
            .map_err(|e| ctx.io(&self.addr, api, e))?;
        let size = i32::from_be_bytes(size);
        if !(4..=(MAX_BATCH_BYTES as i32 + (1 << 20))).contains(&size) {
            return Err(ctx.protocol(&self.addr, api, format!("answer claims {size} bytes")));
        }
        let mut data = vec![0u8; size as usize];
        self.stream
            .read_exact(&mut data)
            .map_err(|e| ctx.io(&self.addr, api, e))?;
        let mut data = Bytes::from(data);
        let bad = |e: anyhow::Error| ctx.protocol(&self.addr, api, format!("cannot decode: {e}"));
        let header =
            ResponseHeader::decode(&mut data, R::Response::header_version(version)).map_err(bad)?;
        if header.correlation_id != self.correlation {
            return Err(ctx.protocol(
                &self.addr,
                api,
                format!(
                    "correlation id {} where {} was sent",
                    header.correlation_id, self.correlation
                ),
            ));
        }
        R::Response::decode(&mut data, version).map_err(bad)
    }
}

/// One fetch's view of the partition.
struct Fetched {
    high_watermark: i64,
    last_stable_offset: i64,
    log_start: i64,
    records: Bytes,
}

struct PartitionReader<'a> {
    ctx: Ctx<'a>,
    bootstrap: Vec<(String, u16)>,
    leader: Option<Conn>,
}

/// Where a read is.
struct ReadPosition {
    /// The next offset to fetch.
    offset: i64,
    /// Where the read was asked to start: nothing before it is handed out.
    from: i64,
    /// The high watermark, fixed by the first answer: records at or after it are never
    /// returned. It is the limit, not the broker's last stable offset: the markers below it
    /// decide every transaction they end, and the first undecided one holds back the rest, which
    /// is exactly what the last stable offset means on Kafka. The test broker (Tansu 0.6) keeps
    /// its last stable offset behind transactions whose markers are written until every
    /// transaction overlapping them has ended, which under steady writes from several producers
    /// can be minutes: trusting it would hide committed records (a changelog restored short, a
    /// position read stale).
    ///
    /// The broker's last stable offset still says where to start: a transaction open at `from`
    /// may have begun before it, and only by reading its first batch does this reader know to
    /// hold back what follows. Every open transaction began at or after it (on Tansu too: it
    /// lags, never leads), so a read past it starts scanning there, and hands out nothing before
    /// `from`.
    snapshot: Option<i64>,
    txns: Transactions,
    /// Bytes asked for per fetch: doubled while a batch does not fit.
    size: i32,
    /// When the read last moved, and how long to wait before asking again.
    progress: Instant,
    backoff: Duration,
}

impl ReadPosition {
    fn new(from: i64) -> ReadPosition {
        ReadPosition {
            offset: from,
            from,
            snapshot: None,
            txns: Transactions::default(),
            size: FETCH_BYTES,
            progress: Instant::now(),
            backoff: Duration::from_millis(50),
        }
    }

    /// Nothing new yet: wait a little longer each time.
    fn wait(&mut self) {
        std::thread::sleep(self.backoff);
        self.backoff = (self.backoff * 2).min(Duration::from_secs(1));
    }

    fn moved(&mut self) {
        self.progress = Instant::now();
        self.backoff = Duration::from_millis(50);
    }
}

impl PartitionReader<'_> {
    fn run<E: FnOnce(i64), F: FnMut(CommittedRecord)>(
        mut self,
        from_offset: i64,
        end: E,
        mut each: F,
    ) -> Result<PartitionEnd, CommittedError> {
        let mut cur = ReadPosition::new(from_offset);
        let mut end = Some(end);
        loop {
            if let Some(end) = cur
                .snapshot
                .and_then(|s| finished(s, cur.offset, &cur.txns))
            {
                return Ok(end);
            }
            let Some(fetched) = self.fetch(&mut cur)? else {
                continue;
            };
            let pinned = self.pin(&mut cur, &fetched)?;
            if let Some(snapshot) = cur.snapshot {
                if let Some(end) = end.take() {
                    end(snapshot);
                }
            }
            let Some(hw) = pinned else {
                continue;
            };
            self.take(&mut cur, &fetched, hw, &mut each)?;
        }
    }

    /// The leader's address, for errors.
    fn broker(&self) -> &str {
        self.leader.as_ref().map_or("", |c| c.addr.as_str())
    }

    /// One fetch at the cursor; none when it is to be tried again (after a wait).
    fn fetch(&mut self, cur: &mut ReadPosition) -> Result<Option<Fetched>, CommittedError> {
        let fetched = fetch(
            &self.ctx,
            &self.bootstrap,
            &mut self.leader,
            cur.offset,
            cur.size,
        );
        let patient = cur.progress.elapsed() < self.ctx.timeout;
        match fetched {
            Ok(Some(f)) => Ok(Some(f)),
            // Tansu leaves a partition out of an answer when it has nothing to say yet.
            Ok(None) if patient => {
                cur.wait();
                Ok(None)
            }
            Ok(None) => {
                let detail = format!(
                    "the partition was left out of every answer for {:?}",
                    self.ctx.timeout
                );
                Err(self.ctx.protocol(self.broker(), "Fetch", detail))
            }
            Err(e) if e.is_transient() && patient => {
                self.leader = None;
                cur.wait();
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The high watermark the read goes to, fixed by the first answer (see
    /// [`ReadPosition::snapshot`]); none when the read is to start over at the broker's last stable
    /// offset.
    fn pin(
        &self,
        cur: &mut ReadPosition,
        fetched: &Fetched,
    ) -> Result<Option<i64>, CommittedError> {
        if let Some(hw) = cur.snapshot {
            return Ok(Some(hw));
        }
        let (ctx, broker, offset) = (&self.ctx, self.broker(), cur.offset);
        let hw = fetched.high_watermark;
        if hw < 0 {
            return Err(ctx.protocol(broker, "Fetch", format!("high watermark {hw}")));
        }
        if offset > hw || (fetched.log_start >= 0 && offset < fetched.log_start) {
            return Err(CommittedError::OffsetOutOfRange {
                broker: broker.to_string(),
                topic: ctx.topic.to_string(),
                partition: ctx.partition,
                offset,
                log_start: fetched.log_start,
                high_watermark: hw,
            });
        }
        cur.snapshot = Some(hw);
        let lso = fetched.last_stable_offset;
        if (fetched.log_start.max(0)..offset).contains(&lso) {
            cur.offset = lso;
            return Ok(None);
        }
        Ok(Some(hw))
    }

    /// Hand out the committed records of the fetched batches below `hw`, moving the cursor.
    fn take<F: FnMut(CommittedRecord)>(
        &self,
        cur: &mut ReadPosition,
        fetched: &Fetched,
        hw: i64,
        each: &mut F,
    ) -> Result<(), CommittedError> {
        let (ctx, broker) = (&self.ctx, self.broker());
        let (batches, needed) = split_batches(&fetched.records)
            .map_err(|(at, detail)| ctx.batch(broker, at, detail))?;
        if needed > cur.size as usize {
            // The next batch is larger than the fetch size and the broker cut it off.
            if needed > MAX_BATCH_BYTES {
                let detail =
                    format!("claims {needed} bytes; at most {MAX_BATCH_BYTES} are accepted");
                return Err(ctx.batch(broker, cur.offset, detail));
            }
            cur.size = (cur.size as usize * 2).max(needed).min(MAX_BATCH_BYTES) as i32;
            return Ok(());
        }
        if !batches.is_empty() {
            cur.size = FETCH_BYTES;
        }
        let before = cur.offset;
        for b in &batches {
            if b.last < cur.offset {
                continue; // the broker answers with the whole batch holding `offset`
            }
            if b.base >= hw {
                break;
            }
            cur.offset = b.last + 1;
            cur.txns
                .take(b, cur.from, hw, each)
                .map_err(|detail| ctx.batch(broker, b.base, detail))?;
        }
        if cur.offset > before {
            cur.moved();
        } else if finished(hw, cur.offset, &cur.txns).is_some() {
            // Nothing to wait for: the read started at its end.
        } else if cur.progress.elapsed() < ctx.timeout {
            // Nothing new although the high watermark promised more: a broker between leaders,
            // or one slow to make a write visible.
            cur.wait();
        } else {
            let detail = format!(
                "no record batch at offset {} for {:?}, though the high watermark is {hw}",
                cur.offset, ctx.timeout
            );
            return Err(ctx.protocol(broker, "Fetch", detail));
        }
        Ok(())
    }
}

/// Where the read ends, once the log was read to the high watermark `hw`: at the first
/// transaction still undecided there, else at `hw`.
fn finished(hw: i64, offset: i64, txns: &Transactions) -> Option<PartitionEnd> {
    (offset >= hw).then(|| PartitionEnd {
        last_stable_offset: txns.queue.front().map_or(hw, |q| q.base.min(hw)),
        high_watermark: hw,
    })
}

/// The partition leader's connection, looked up afresh after any failure.
fn leader<'c>(
    ctx: &Ctx,
    bootstrap: &[(String, u16)],
    leader: &'c mut Option<Conn>,
) -> Result<&'c mut Conn, CommittedError> {
    if leader.is_none() {
        let mut last = None;
        let mut found = None;
        for (host, port) in bootstrap {
            match Conn::open(ctx, host, *port).and_then(|mut c| {
                let leader = find_leader(ctx, &mut c)?;
                Ok((c, leader))
            }) {
                Ok(f) => {
                    found = Some(f);
                    break;
                }
                Err(e) if e.is_transient() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        let Some((boot, (host, port))) = found else {
            return Err(last.expect("the broker list is not empty"));
        };
        *leader = Some(if boot.addr == format!("{host}:{port}") {
            boot
        } else {
            Conn::open(ctx, &host, port)?
        });
    }
    Ok(leader.as_mut().expect("just set"))
}

/// One read_uncommitted Fetch at `offset`; `None` when the answer leaves the partition out.
fn fetch(
    ctx: &Ctx,
    bootstrap: &[(String, u16)],
    leader_conn: &mut Option<Conn>,
    offset: i64,
    size: i32,
) -> Result<Option<Fetched>, CommittedError> {
    let conn = leader(ctx, bootstrap, leader_conn)?;
    let version = conn.version::<FetchRequest>(ctx, FETCH_VERSIONS)?;
    let wait = FETCH_WAIT
        .min(ctx.timeout / 2)
        .max(Duration::from_millis(1));
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(wait.as_millis() as i32)
        .with_min_bytes(1)
        .with_max_bytes(size)
        .with_isolation_level(0) // read_uncommitted: the markers decide, not the broker
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(ctx.topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(ctx.partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(size)])]);
    let answer = conn.request(ctx, &request, version)?;
    let broker = conn.addr.as_str();
    if answer.error_code != 0 {
        return Err(ctx.broker_error(broker, "Fetch", answer.error_code));
    }
    let data = answer
        .responses
        .into_iter()
        .filter(|t| t.topic.0.as_str() == ctx.topic)
        .flat_map(|t| t.partitions)
        .find(|p| p.partition_index == ctx.partition);
    let Some(p) = data else {
        return Ok(None);
    };
    match p.error_code {
        0 => {}
        1 => {
            return Err(CommittedError::OffsetOutOfRange {
                broker: broker.to_string(),
                topic: ctx.topic.to_string(),
                partition: ctx.partition,
                offset,
                log_start: p.log_start_offset,
                high_watermark: p.high_watermark,
            })
        }
        code => return Err(ctx.broker_error(broker, "Fetch", code)),
    }
    Ok(Some(Fetched {
        high_watermark: p.high_watermark,
        last_stable_offset: p.last_stable_offset,
        log_start: p.log_start_offset,
        records: p.records.unwrap_or_default(),
    }))
}

/// The leader's address, from `conn`'s Metadata answer.
fn find_leader(ctx: &Ctx, conn: &mut Conn) -> Result<(String, u16), CommittedError> {
    let version = conn.version::<MetadataRequest>(ctx, METADATA_VERSIONS)?;
    let name = TopicName(StrBytes::from_string(ctx.topic.to_string()));
    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name))
        ]))
        .with_allow_auto_topic_creation(false); // reading must not create
    let answer = conn.request(ctx, &request, version)?;
    let broker = conn.addr.as_str();
    let not_found = || CommittedError::TopicNotFound {
        broker: broker.to_string(),
        topic: ctx.topic.to_string(),
        partition: ctx.partition,
    };
    let topic = answer
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == ctx.topic))
        .ok_or_else(not_found)?;
    let unknown = ResponseError::UnknownTopicOrPartition.code();
    if topic.error_code == unknown || (topic.error_code == 0 && topic.partitions.is_empty()) {
        return Err(not_found());
    }
    if topic.error_code != 0 {
        return Err(ctx.broker_error(broker, "Metadata", topic.error_code));
    }
    let p = topic
        .partitions
        .iter()
        .find(|p| p.partition_index == ctx.partition)
        .ok_or_else(|| CommittedError::PartitionNotFound {
            broker: broker.to_string(),
            topic: ctx.topic.to_string(),
            partition: ctx.partition,
            partitions: topic.partitions.len(),
        })?;
    // A partition error with a known leader (REPLICA_NOT_AVAILABLE) still leaves it readable.
    answer
        .brokers
        .iter()
        .find(|b| p.leader_id.0 >= 0 && b.node_id == p.leader_id)
        .and_then(|b| Some((b.host.as_str().to_string(), u16::try_from(b.port).ok()?)))
        .ok_or_else(|| {
            let code = if p.error_code != 0 {
                p.error_code
            } else {
                ResponseError::LeaderNotAvailable.code()
            };
            ctx.broker_error(broker, "Metadata", code)
        })
}

/// Batches in log order, each undecided until its producer's next COMMIT or ABORT marker, and
/// handed out strictly in order: a decided batch behind an open transaction waits, because the
/// open one may still commit and its records come first.
#[derive(Default)]
struct Transactions {
    queue: VecDeque<Queued>,
    /// Sequence number of `queue[0]`.
    first: u64,
    /// Producer id → sequence numbers of its undecided batches. Keyed by producer id alone (not
    /// epoch), as Kafka consumers do: a fenced producer's transaction is aborted under a bumped
    /// epoch, and a marker always ends that producer's current transaction.
    open: HashMap<i64, Vec<u64>>,
}

struct Queued {
    base: i64,
    visible: Option<bool>,
    records: Vec<CommittedRecord>,
}

impl Transactions {
    /// The next batch of the log, at or after `from`: a marker decides its producer's open
    /// batches; data below `limit` is queued (data at or after it can never be returned).
    fn take(
        &mut self,
        b: &Batch,
        from: i64,
        limit: i64,
        each: &mut impl FnMut(CommittedRecord),
    ) -> Result<(), String> {
        if b.attrs & ATTR_CONTROL != 0 {
            match control_type(b)? {
                Some(CONTROL_COMMIT) => self.decide(b.producer_id, true),
                Some(CONTROL_ABORT) => self.decide(b.producer_id, false),
                _ => {} // other control types and compacted-away markers decide nothing
            }
        } else if b.base < limit {
            let records = decode_records(b, from.max(b.base))?;
            self.push(b, records);
        }
        self.release(limit, each);
        Ok(())
    }

    fn push(&mut self, b: &Batch, records: Vec<CommittedRecord>) {
        let transactional = b.attrs & ATTR_TRANSACTIONAL != 0;
        if transactional {
            let seq = self.first + self.queue.len() as u64;
            self.open.entry(b.producer_id).or_default().push(seq);
        }
        self.queue.push_back(Queued {
            base: b.base,
            visible: if transactional { None } else { Some(true) },
            records,
        });
    }

    /// A marker decides only what this read holds of the transaction: when the read started in
    /// its middle, the records before `from_offset` were never queued, which is what the caller
    /// asked for.
    fn decide(&mut self, producer_id: i64, commit: bool) {
        for seq in self.open.remove(&producer_id).unwrap_or_default() {
            if let Some(q) = seq
                .checked_sub(self.first)
                .and_then(|i| self.queue.get_mut(i as usize))
            {
                q.visible = Some(commit);
            }
        }
    }

    fn release(&mut self, limit: i64, each: &mut impl FnMut(CommittedRecord)) {
        while let Some(front) = self.queue.front() {
            if front.visible.is_none() || front.base >= limit {
                break;
            }
            let q = self.queue.pop_front().expect("front exists");
            self.first += 1;
            if q.visible == Some(true) {
                q.records
                    .into_iter()
                    .filter(|r| r.offset < limit)
                    .for_each(&mut *each);
            }
        }
    }
}

/// A record batch (magic 2) whose CRC has been checked; `body` is its records, maybe compressed.
struct Batch {
    base: i64,
    last: i64,
    attrs: i16,
    first_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    count: i32,
    body: Bytes,
}

/// The size of a batch's header, through its record count.
const BATCH_HEADER: usize = 61;

/// The complete batches in `buf`. A batch cut off at the end is dropped, to be fetched again
/// from its own offset; when it is the only one, the second value is the size needed to get it.
fn split_batches(buf: &Bytes) -> Result<(Vec<Batch>, usize), (i64, String)> {
    let be_i16 = |p: usize| i16::from_be_bytes([buf[p], buf[p + 1]]);
    let be_i32 = |p: usize| i32::from_be_bytes(buf[p..p + 4].try_into().expect("4 bytes"));
    let be_i64 = |p: usize| i64::from_be_bytes(buf[p..p + 8].try_into().expect("8 bytes"));
    let mut out = Vec::new();
    let mut pos = 0;
    while buf.len() - pos >= 17 {
        let base = be_i64(pos);
        let length = be_i32(pos + 8);
        if length < 0 {
            return Err((base, format!("negative batch length {length}")));
        }
        let end = pos + 12 + length as usize;
        if end > buf.len() {
            let needed = if out.is_empty() {
                12 + length as usize
            } else {
                0
            };
            return Ok((out, needed));
        }
        let magic = buf[pos + 16];
        if magic != 2 {
            return Err((
                base,
                format!("message format v{magic}; only v2 (magic 2) can carry transactions"),
            ));
        }
        if end - pos < BATCH_HEADER {
            return Err((base, format!("batch length {length} is too short")));
        }
        let crc = be_i32(pos + 17) as u32;
        let actual = crc32c::crc32c(&buf[pos + 21..end]);
        if crc != actual {
            return Err((
                base,
                format!("CRC-32C {actual:#010x}, batch says {crc:#010x}"),
            ));
        }
        out.push(Batch {
            base,
            last: base + i64::from(be_i32(pos + 23)),
            attrs: be_i16(pos + 21),
            first_timestamp: be_i64(pos + 27),
            max_timestamp: be_i64(pos + 35),
            producer_id: be_i64(pos + 43),
            count: be_i32(pos + 57),
            body: buf.slice(pos + BATCH_HEADER..end),
        });
        pos = end;
    }
    let needed = if out.is_empty() && pos < buf.len() {
        17
    } else {
        0
    };
    Ok((out, needed))
}

/// The batch's records, uncompressed: every codec Kafka has (gzip, snappy in raw or the Java
/// clients' xerial framing, lz4 frames, zstd).
fn batch_body(b: &Batch) -> Result<Bytes, String> {
    let mut body = b.body.clone();
    let take = |records: &mut Bytes| Ok(std::mem::take(records));
    let (codec, records) = match b.attrs & ATTR_COMPRESSION {
        0 => return Ok(body),
        1 => ("gzip", Gzip::decompress(&mut body, take)),
        2 => ("snappy", Snappy::decompress(&mut body, take)),
        3 => ("lz4", Lz4::decompress(&mut body, take)),
        4 => ("zstd", Zstd::decompress(&mut body, take)),
        n => return Err(format!("compressed with unknown codec {n}")),
    };
    records.map_err(|e| format!("cannot decompress its {codec} records: {e:#}"))
}

/// The records of a data batch at or after `from`.
fn decode_records(b: &Batch, from: i64) -> Result<Vec<CommittedRecord>, String> {
    let data = batch_body(b)?;
    let mut r = Cursor { buf: &data, pos: 0 };
    let mut out = Vec::new();
    for _ in 0..b.count {
        let length = r.varint()?;
        let end = usize::try_from(length)
            .ok()
            .map(|l| r.pos + l)
            .filter(|end| *end <= data.len())
            .ok_or("a record overruns its batch")?;
        r.pos += 1; // record attributes: none defined
        let timestamp_delta = r.varint()?;
        let offset = b.base + r.varint()?;
        let key = r.bytes()?;
        let value = r.bytes()?;
        let count = r.varint()?;
        let mut headers = Vec::with_capacity(count.clamp(0, 64) as usize);
        for _ in 0..count {
            let name = r.bytes()?.unwrap_or_default();
            headers.push((String::from_utf8_lossy(&name).into_owned(), r.bytes()?));
        }
        if r.pos != end {
            return Err(format!("the record at offset {offset} has a wrong length"));
        }
        if offset < from {
            continue;
        }
        let timestamp = if b.attrs & ATTR_LOG_APPEND_TIME != 0 {
            b.max_timestamp
        } else {
            b.first_timestamp + timestamp_delta
        };
        out.push(CommittedRecord {
            offset,
            key,
            value,
            headers,
            timestamp,
        });
    }
    if r.pos != data.len() {
        return Err(format!(
            "{} bytes follow its {} records",
            data.len() - r.pos,
            b.count
        ));
    }
    Ok(out)
}

/// COMMIT, ABORT or another control type, from the key of the batch's control record; `None`
/// when compaction left the batch empty.
fn control_type(b: &Batch) -> Result<Option<i16>, String> {
    if b.count == 0 {
        return Ok(None);
    }
    let data = batch_body(b)?;
    let mut r = Cursor { buf: &data, pos: 0 };
    r.varint()?; // length
    r.pos += 1; // attributes
    r.varint()?; // timestamp delta
    r.varint()?; // offset delta
    match r.bytes()? {
        // key: version (i16), type (i16)
        Some(key) if key.len() >= 4 => Ok(Some(i16::from_be_bytes([key[2], key[3]]))),
        _ => Err("control record without a valid key".to_string()),
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    /// A zig-zag varint or varlong.
    fn varint(&mut self) -> Result<i64, String> {
        let mut raw: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .buf
                .get(self.pos)
                .ok_or("a varint runs past the end of its batch")?;
            self.pos += 1;
            raw |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        Err("a malformed varint".to_string())
    }

    /// A varint-length byte string; length -1 is null.
    fn bytes(&mut self) -> Result<Option<Vec<u8>>, String> {
        let n = self.varint()?;
        if n < 0 {
            return Ok(None);
        }
        let end = self.pos + n as usize;
        let out = self
            .buf
            .get(self.pos..end)
            .ok_or("a field runs past the end of its batch")?;
        self.pos = end;
        Ok(Some(out.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        loop {
            if z < 0x80 {
                out.push(z as u8);
                return;
            }
            out.push((z as u8 & 0x7f) | 0x80);
            z >>= 7;
        }
    }

    fn field(out: &mut Vec<u8>, b: Option<&[u8]>) {
        match b {
            None => varint(out, -1),
            Some(b) => {
                varint(out, b.len() as i64);
                out.extend_from_slice(b);
            }
        }
    }

    /// A record batch as a producer writes it: (offset delta, key, value, headers) per record.
    #[allow(clippy::type_complexity)]
    fn batch(
        base: i64,
        attrs: i16,
        pid: i64,
        records: &[(i64, Option<&[u8]>, Option<&[u8]>, &[(&str, Option<&[u8]>)])],
    ) -> Vec<u8> {
        let mut body = Vec::new();
        for (delta, key, value, headers) in records {
            let mut r = vec![0u8];
            varint(&mut r, *delta * 10); // timestamp delta
            varint(&mut r, *delta);
            field(&mut r, *key);
            field(&mut r, *value);
            varint(&mut r, headers.len() as i64);
            for (k, v) in *headers {
                field(&mut r, Some(k.as_bytes()));
                field(&mut r, *v);
            }
            varint(&mut body, r.len() as i64);
            body.extend(r);
        }
        let mut after_crc = Vec::new();
        after_crc.extend(attrs.to_be_bytes());
        let last = records.last().map_or(0, |r| r.0) as i32;
        after_crc.extend(last.to_be_bytes());
        after_crc.extend(1_000i64.to_be_bytes());
        after_crc.extend(9_999i64.to_be_bytes());
        after_crc.extend(pid.to_be_bytes());
        after_crc.extend(0i16.to_be_bytes());
        after_crc.extend(0i32.to_be_bytes());
        after_crc.extend((records.len() as i32).to_be_bytes());
        after_crc.extend(body);
        let mut out = Vec::new();
        out.extend(base.to_be_bytes());
        out.extend(((4 + 1 + 4 + after_crc.len()) as i32).to_be_bytes());
        out.extend(0i32.to_be_bytes());
        out.push(2);
        out.extend(crc32c::crc32c(&after_crc).to_be_bytes());
        out.extend(after_crc);
        out
    }

    fn marker(base: i64, pid: i64, kind: i16) -> Vec<u8> {
        let mut key = 0i16.to_be_bytes().to_vec();
        key.extend(kind.to_be_bytes());
        let value = [0u8; 6];
        batch(
            base,
            ATTR_CONTROL | ATTR_TRANSACTIONAL,
            pid,
            &[(0, Some(&key), Some(&value), &[])],
        )
    }

    /// Runs the decision logic over `log` as the reader does; (offsets returned, LSO).
    fn replay(log: &[u8], from: i64, broker_lso: i64) -> (Vec<i64>, i64) {
        let (batches, needed) = split_batches(&Bytes::copy_from_slice(log)).unwrap();
        assert_eq!(needed, 0);
        let mut txns = Transactions::default();
        let mut out = Vec::new();
        for b in batches.iter().filter(|b| b.last >= from) {
            txns.take(b, from, broker_lso, &mut |r| out.push(r.offset))
                .unwrap();
        }
        let lso = txns.queue.front().map_or(broker_lso, |q| q.base);
        (out, lso)
    }

    const TX: i16 = ATTR_TRANSACTIONAL;

    fn log() -> Vec<u8> {
        let v: &[u8] = b"v";
        let mut log = Vec::new();
        log.extend(batch(
            0,
            0,
            -1,
            &[(0, None, Some(v), &[]), (1, None, Some(v), &[])],
        ));
        log.extend(batch(
            2,
            TX,
            7,
            &[(0, None, Some(v), &[]), (1, None, Some(v), &[])],
        ));
        log.extend(batch(4, TX, 8, &[(0, None, Some(v), &[])]));
        log.extend(marker(5, 7, CONTROL_COMMIT));
        log.extend(batch(6, 0, -1, &[(0, None, Some(v), &[])]));
        log.extend(marker(7, 8, CONTROL_ABORT));
        log.extend(batch(8, TX, 9, &[(0, None, Some(v), &[])]));
        log.extend(batch(9, 0, -1, &[(0, None, Some(v), &[])]));
        log
    }

    #[test]
    fn markers_decide_per_producer_and_an_open_transaction_holds_back_the_rest() {
        assert_eq!(replay(&log(), 0, 10), (vec![0, 1, 2, 3, 6], 8));
        // The limit also bounds what is returned.
        assert_eq!(replay(&log(), 0, 6), (vec![0, 1, 2, 3], 6));
    }

    #[test]
    fn starting_inside_a_transaction_releases_only_what_was_read() {
        assert_eq!(replay(&log(), 3, 10), (vec![3, 6], 8));
        assert_eq!(replay(&log(), 5, 10), (vec![6], 8));
    }

    #[test]
    fn records_keep_null_values_repeated_headers_and_timestamps() {
        let headers: &[(&str, Option<&[u8]>)] = &[
            ("h", Some(b"1")),
            ("h", Some(b"2")),
            ("n", None),
            ("e", Some(b"")),
        ];
        let raw = batch(40, 0, -1, &[(0, Some(b"k"), None, headers)]);
        let (batches, _) = split_batches(&Bytes::from(raw)).unwrap();
        let records = decode_records(&batches[0], 0).unwrap();
        assert_eq!(
            records,
            vec![CommittedRecord {
                offset: 40,
                key: Some(b"k".to_vec()),
                value: None,
                headers: vec![
                    ("h".into(), Some(b"1".to_vec())),
                    ("h".into(), Some(b"2".to_vec())),
                    ("n".into(), None),
                    ("e".into(), Some(vec![])),
                ],
                timestamp: 1_000,
            }]
        );
    }

    #[test]
    fn a_cut_off_batch_asks_for_its_size_and_a_bad_crc_is_caught() {
        let raw = batch(0, 0, -1, &[(0, None, Some(b"value"), &[])]);
        let (batches, needed) = split_batches(&Bytes::copy_from_slice(&raw[..30])).unwrap();
        assert!(batches.is_empty());
        assert_eq!(needed, raw.len());
        let mut two = raw.clone();
        two.extend(&raw[..30]);
        let (batches, needed) = split_batches(&Bytes::from(two)).unwrap();
        assert_eq!((batches.len(), needed), (1, 0));
        let mut bad = raw;
        let n = bad.len();
        bad[n - 1] ^= 1;
        let err = split_batches(&Bytes::from(bad)).err().unwrap();
        assert!(err.1.contains("CRC"), "{err:?}");
    }
}
