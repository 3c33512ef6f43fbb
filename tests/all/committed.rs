//! `weir::kafka::log_reader` against the real test broker: transactional producers write committed,
//! aborted, interleaved and open transactions among plain records, and the reader must return
//! exactly what a correct read_committed consumer sees (librdkafka's own read_committed consumer
//! does not on this broker: it leaves aborted records in, see scripts/kafka-broker.sh).

use std::time::Duration;

use crate::common::kafka::{kafka, unique};
use rdkafka::{
    config::ClientConfig,
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord, Producer},
};
use weir::kafka::log_reader::{
    read_committed, read_committed_with, CommittedError, CommittedRecord,
};

const TIMEOUT: Duration = Duration::from_secs(20);

/// A producer (transactional when given an id) that waits for each record's acknowledgement,
/// so records of several producers land in the log in the order they were sent.
struct Writer {
    producer: FutureProducer,
    rt: tokio::runtime::Runtime,
    topic: String,
}

impl Writer {
    fn new(topic: &str, transactional_id: Option<&str>) -> Writer {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &kafka().brokers)
            .set("linger.ms", "0");
        if let Some(id) = transactional_id {
            config.set("transactional.id", id);
        }
        let producer: FutureProducer = config.create().expect("producer");
        if transactional_id.is_some() {
            producer
                .init_transactions(TIMEOUT)
                .expect("init_transactions");
        }
        Writer {
            producer,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            topic: topic.to_string(),
        }
    }

    fn transactional(topic: &str, name: &str) -> Writer {
        Writer::new(topic, Some(&unique(name)))
    }

    /// Produce `r` (its offset is ignored) and return it as it must be read back: at the offset
    /// the broker acknowledged.
    fn send(&self, r: &CommittedRecord) -> CommittedRecord {
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic)
            .partition(0)
            .timestamp(r.timestamp);
        if let Some(k) = &r.key {
            record = record.key(k);
        }
        if let Some(v) = &r.value {
            record = record.payload(v);
        }
        if !r.headers.is_empty() {
            let headers = r.headers.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
                h.insert(Header {
                    key: k,
                    value: v.as_deref(),
                })
            });
            record = record.headers(headers);
        }
        let delivery = self
            .rt
            .block_on(self.producer.send(record, TIMEOUT))
            .unwrap_or_else(|(e, _)| panic!("produce to {}: {e}", self.topic));
        CommittedRecord {
            offset: delivery.offset,
            ..r.clone()
        }
    }

    fn begin(&self) {
        self.producer
            .begin_transaction()
            .expect("begin_transaction");
    }

    fn commit(&self) {
        self.producer
            .commit_transaction(TIMEOUT)
            .expect("commit_transaction");
    }

    fn abort(&self) {
        self.producer
            .abort_transaction(TIMEOUT)
            .expect("abort_transaction");
    }
}

/// A record to produce: distinct timestamps, so a timestamp mix-up shows.
fn rec(
    key: Option<&str>,
    value: Option<&[u8]>,
    headers: &[(&str, Option<&str>)],
) -> CommittedRecord {
    use std::sync::atomic::{AtomicI64, Ordering};
    static NEXT: AtomicI64 = AtomicI64::new(0);
    CommittedRecord {
        offset: -1,
        key: key.map(|k| k.as_bytes().to_vec()),
        value: value.map(<[u8]>::to_vec),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(|v| v.as_bytes().to_vec())))
            .collect(),
        timestamp: 1_700_000_000_000 + 1_000 * NEXT.fetch_add(1, Ordering::Relaxed),
    }
}

fn text(v: &str) -> Option<&[u8]> {
    Some(v.as_bytes())
}

fn read(topic: &str, from: i64) -> weir::kafka::log_reader::PartitionRead {
    read_committed(&kafka().brokers, topic, 0, from, TIMEOUT)
        .unwrap_or_else(|e| panic!("read_committed {topic} from {from}: {e}"))
}

/// Offsets and values, for readable assertion failures.
fn summary(records: &[CommittedRecord]) -> Vec<(i64, String)> {
    records
        .iter()
        .map(|r| {
            let value = r.value.as_deref().map(String::from_utf8_lossy);
            (r.offset, format!("{value:?}"))
        })
        .collect()
}

#[test]
fn returns_exactly_the_committed_and_plain_records_up_to_the_open_transaction() {
    let k = kafka();
    let topic = unique("committed-mixed");
    k.create_topic(&topic, 1);
    let plain = Writer::new(&topic, None);
    let a = Writer::transactional(&topic, "tx-a");
    let b = Writer::transactional(&topic, "tx-b");
    let c = Writer::transactional(&topic, "tx-c");
    let d = Writer::transactional(&topic, "tx-d");
    let mut visible = Vec::new();

    // Plain records are visible at once.
    visible.push(plain.send(&rec(Some("n0"), text("plain 0"), &[("h", Some("x"))])));
    visible.push(plain.send(&rec(None, text("plain 1"), &[])));

    // A committed transaction: repeated header names, a null header value and a tombstone.
    a.begin();
    visible.push(a.send(&rec(
        Some("a0"),
        text("commit a0"),
        &[
            ("dup", Some("1")),
            ("dup", Some("2")),
            ("null", None),
            ("empty", Some("")),
        ],
    )));
    visible.push(a.send(&rec(Some("a1"), None, &[])));
    a.commit();

    // An aborted transaction of the same producer.
    a.begin();
    a.send(&rec(Some("x0"), text("abort x0"), &[]));
    a.send(&rec(Some("x1"), text("abort x1"), &[]));
    a.abort();

    visible.push(plain.send(&rec(Some("n2"), Some(&[0xff, 0x00, 0xfe]), &[])));

    // Two producers' transactions interleaved; B commits, then a plain record lands while C is
    // still open, then C aborts.
    b.begin();
    c.begin();
    visible.push(b.send(&rec(Some("b0"), text("commit b0"), &[])));
    c.send(&rec(Some("c0"), text("abort c0"), &[]));
    visible.push(b.send(&rec(Some("b1"), text("commit b1"), &[])));
    c.send(&rec(Some("c1"), text("abort c1"), &[]));
    b.commit();
    visible.push(plain.send(&rec(Some("n3"), text("plain 3"), &[])));
    c.abort();
    visible.push(plain.send(&rec(Some("n4"), text("plain 4"), &[])));

    // An open transaction holds back everything after it, plain records too.
    d.begin();
    let d0 = d.send(&rec(Some("d0"), text("open d0"), &[]));
    let n5 = plain.send(&rec(Some("n5"), text("plain 5"), &[]));

    let all = read(&topic, 0);
    assert_eq!(summary(&all.records), summary(&visible));
    assert_eq!(all.records, visible, "keys, values, headers and timestamps");
    assert_eq!(all.last_stable_offset, d0.offset);
    assert_eq!(all.high_watermark, n5.offset + 1);

    // Starting anywhere, also inside a transaction whose start is not read, or past the last
    // stable offset, gives the same records from there on.
    for from in 0..=all.high_watermark {
        let part = read(&topic, from);
        let expected: Vec<_> = visible
            .iter()
            .filter(|r| r.offset >= from)
            .cloned()
            .collect();
        assert_eq!(
            summary(&part.records),
            summary(&expected),
            "from offset {from}"
        );
        assert_eq!(part.records, expected, "from offset {from}");
        assert_eq!(
            (part.last_stable_offset, part.high_watermark),
            (d0.offset, all.high_watermark),
            "from offset {from}"
        );
    }

    // The streaming variant hands out the same records, in order.
    let mut streamed = Vec::new();
    let end = read_committed_with(&k.brokers, &topic, 0, 0, TIMEOUT, |r| streamed.push(r))
        .expect("read_committed_with");
    assert_eq!(streamed, visible);
    assert_eq!(
        (end.last_stable_offset, end.high_watermark),
        (all.last_stable_offset, all.high_watermark)
    );

    // Once the open transaction aborts, the plain record behind it shows; its own record never.
    d.abort();
    let after = read(&topic, 0);
    visible.push(n5);
    assert_eq!(summary(&after.records), summary(&visible));
    assert_eq!(after.last_stable_offset, after.high_watermark);
    assert_eq!(
        after.high_watermark,
        all.high_watermark + 1,
        "one ABORT marker more"
    );
}

#[test]
fn transactions_larger_than_one_fetch() {
    let k = kafka();
    let topic = unique("committed-large");
    k.create_topic(&topic, 1);
    let commits = Writer::transactional(&topic, "tx-large-commit");
    let aborts = Writer::transactional(&topic, "tx-large-abort");
    let plain = Writer::new(&topic, None);
    let value = |who: &str, i: usize| format!("{who} {i:05} {}", "x".repeat(2_000)).into_bytes();

    // Three megabytes committed and one aborted, in batches interleaved in the log: each
    // round's records are all sent before any is awaited.
    commits.begin();
    aborts.begin();
    let mut expected = Vec::new();
    for round in 0..10 {
        let mut pending = Vec::new();
        for i in round * 150..(round + 1) * 150 {
            let v = value("commit", i);
            let f = commits
                .producer
                .send_result(
                    FutureRecord::<(), [u8]>::to(&topic)
                        .partition(0)
                        .payload(&v),
                )
                .map_err(|(e, _)| e)
                .expect("send");
            pending.push((Some(v), f));
            if i % 3 == 0 {
                let v = value("abort", i);
                let f = aborts
                    .producer
                    .send_result(
                        FutureRecord::<(), [u8]>::to(&topic)
                            .partition(0)
                            .payload(&v),
                    )
                    .map_err(|(e, _)| e)
                    .expect("send");
                pending.push((None, f));
            }
        }
        for (v, f) in pending {
            let delivery = commits.rt.block_on(f).unwrap().expect("delivered");
            if let Some(v) = v {
                expected.push((delivery.offset, v));
            }
        }
        if round == 4 {
            let p = plain.send(&rec(None, Some(b"plain in the middle"), &[]));
            expected.push((p.offset, p.value.unwrap()));
        }
    }
    commits.commit();
    aborts.abort();

    expected.sort();
    let mut seen = 0;
    let end = read_committed_with(&k.brokers, &topic, 0, 0, TIMEOUT, |r| {
        let (offset, value) = &expected[seen];
        assert_eq!(r.offset, *offset, "record {seen}");
        assert!(r.value.as_ref() == Some(value), "value at offset {offset}");
        seen += 1;
    })
    .expect("read_committed_with");
    assert_eq!(seen, expected.len());
    assert_eq!(end.last_stable_offset, end.high_watermark);
}

#[test]
fn empty_partitions_ends_and_bad_targets() {
    let k = kafka();
    let topic = unique("committed-empty");
    k.create_topic(&topic, 2);

    let empty = read(&topic, 0);
    assert!(empty.records.is_empty());
    assert_eq!((empty.last_stable_offset, empty.high_watermark), (0, 0));

    let plain = Writer::new(&topic, None);
    let r = plain.send(&rec(Some("k"), text("v"), &[]));
    assert_eq!(read(&topic, 0).records, vec![r.clone()]);
    let at_end = read(&topic, 1);
    assert!(at_end.records.is_empty());
    assert_eq!((at_end.last_stable_offset, at_end.high_watermark), (1, 1));

    // A dead broker first in the bootstrap list is skipped.
    let brokers = format!("127.0.0.1:1,{}", k.brokers);
    let via = read_committed(&brokers, &topic, 0, 0, TIMEOUT).expect("second bootstrap broker");
    assert_eq!(via.records, vec![r]);

    // Partition 1 exists and is empty.
    let other = read_committed(&k.brokers, &topic, 1, 0, TIMEOUT).expect("partition 1");
    assert!(other.records.is_empty());

    let err = read_committed(&k.brokers, &topic, 0, 5, TIMEOUT).unwrap_err();
    assert!(
        matches!(err, CommittedError::OffsetOutOfRange { offset: 5, .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&topic) && message.contains("partition 0") && message.contains("5"),
        "{message}"
    );
    let err = read_committed(&k.brokers, &topic, 0, -1, TIMEOUT).unwrap_err();
    assert!(
        matches!(err, CommittedError::OffsetOutOfRange { offset: -1, .. }),
        "{err:?}"
    );

    let err = read_committed(&k.brokers, &topic, 7, 0, TIMEOUT).unwrap_err();
    assert!(
        matches!(
            err,
            CommittedError::PartitionNotFound {
                partition: 7,
                partitions: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(&topic), "{err}");

    let missing = unique("committed-missing");
    let err = read_committed(&k.brokers, &missing, 0, 0, TIMEOUT).unwrap_err();
    assert!(
        matches!(err, CommittedError::TopicNotFound { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&missing) && message.contains(&k.brokers),
        "{message}"
    );

    let err = read_committed("no-port", &topic, 0, 0, TIMEOUT).unwrap_err();
    assert!(matches!(err, CommittedError::BrokerList { .. }), "{err:?}");
}
