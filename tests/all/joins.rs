//! Join stages (`join = { topic, key, within, outer }`): the real binary against the test
//! broker, orders joined with their payments within a time bound, each run's outputs checked
//! against the join computed directly from what was produced.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::{json, Value};

use crate::common::{
    component,
    kafka::{http_get, json_of, metric, unique, In, Out, Topics, Weir},
    weir_bin,
};

/// Records are at most this far apart in event time to pair (ms).
const WITHIN: i64 = 10_000;

/// What a join emits, by the `n` of its order and payment (`None`: alone), with how often.
type Pairs = BTreeMap<(Option<i64>, Option<i64>), usize>;

/// A test's topics: orders (the source) and payments, two partitions each, by order id.
struct Setup {
    topics: Topics,
    payments: String,
    state: tempfile::TempDir,
}

/// An order or a payment as produced: its id (`n`), order id and event time.
#[derive(Clone, Copy, Debug)]
struct Event {
    n: i64,
    order: i64,
    ts: i64,
}

impl Setup {
    fn new(name: &str) -> Setup {
        let topics = Topics::new(name, 2);
        let payments = unique(&format!("{name}-payments"));
        topics.kafka.create_topic(&payments, 2);
        Setup {
            topics,
            payments,
            state: crate::common::scratch(),
        }
    }

    /// A pipeline whose stage `paid` joins orders (`/id`) with payments (`/order`) within
    /// [`WITHIN`] by `/ts`, `outer` as given, and marks each output `"joined": true` (its
    /// plugin, `enrich`, renders the pair).
    fn pipeline(&self, outer: &str, extra: &str) -> PathBuf {
        self.topics.write_pipeline(&format!(
            r#"
[state]
dir = "{state}"

[[stage]]
name = "paid"
plugin = "{enrich}"
config = {{ set = {{ "/joined" = true }} }}
join = {{ topic = "{payments}", key = "/id", other_key = "/order", within = "{WITHIN}ms", outer = "{outer}" }}
time = {{ field = "/ts" }}

{extra}
"#,
            state = self.state.path().display(),
            enrich = component("enrich").display(),
            payments = self.payments,
        ))
    }

    fn produce(&self, orders: &[Event], payments: &[Event]) {
        let records = |events: &[Event], key: &str| -> Vec<In> {
            events
                .iter()
                .map(|e| In {
                    key: Some(e.order.to_string()),
                    value: json!({ "n": e.n, key: e.order, "ts": e.ts })
                        .to_string()
                        .into_bytes(),
                    partition: Some((e.order % 2) as i32),
                    ..In::default()
                })
                .collect()
        };
        let k = &self.topics.kafka;
        k.produce(&self.topics.source, &records(orders, "id"));
        k.produce(&self.payments, &records(payments, "order"));
    }
}

/// `n` orders and their payments over `ids` order ids, each side in rising event time (as they
/// would be written), some payments too far from their order to pair, some orders without
/// one, some with two.
fn events(n: i64, ids: i64) -> (Vec<Event>, Vec<Event>) {
    let mut orders = Vec::new();
    let mut payments = Vec::new();
    for i in 0..n {
        let order = i % ids;
        let ts = 1_000_000 + i * 1_000;
        orders.push(Event { n: i, order, ts });
        // Payments for most orders, some late beyond the bound, some twice.
        match i % 5 {
            0 => {}
            1 => payments.push(Event {
                n: 1_000 + i,
                order,
                ts: ts + WITHIN + 1_500,
            }),
            2 => {
                payments.push(Event {
                    n: 1_000 + i,
                    order,
                    ts: ts + 3_000,
                });
                payments.push(Event {
                    n: 2_000 + i,
                    order,
                    ts: ts + WITHIN,
                });
            }
            _ => payments.push(Event {
                n: 1_000 + i,
                order,
                ts: ts + 500,
            }),
        }
    }
    payments.sort_by_key(|p| p.ts);
    (orders, payments)
}

/// One order and one payment an hour after everything else on each partition: their
/// watermark lets every earlier record go (an unpaired order out alone).
fn last() -> (Vec<Event>, Vec<Event>) {
    let ts = 100_000_000;
    let event = |n: i64, order: i64| Event { n, order, ts };
    let orders = [100, 101].map(|order| event(90_000 + order, order));
    let payments = [100, 101].map(|order| event(95_000 + order, order));
    (orders.to_vec(), payments.to_vec())
}

/// The join computed directly: each (order, payment) pair of one order id at most [`WITHIN`]
/// apart, and with `left`, each order that has none alone.
fn reference(orders: &[Event], payments: &[Event], left: bool) -> Pairs {
    let mut want = BTreeMap::new();
    for o in orders {
        let paired: Vec<&Event> = payments
            .iter()
            .filter(|p| p.order == o.order && (p.ts - o.ts).abs() <= WITHIN)
            .collect();
        for p in &paired {
            want.insert((Some(o.n), Some(p.n)), 1);
        }
        if paired.is_empty() && left {
            want.insert((Some(o.n), None), 1);
        }
    }
    want
}

/// Each output's (order, payment) by their `n`, counted.
fn got(outs: &[Out]) -> Pairs {
    let mut got = BTreeMap::new();
    for o in outs {
        let v: Value = json_of(o);
        assert_eq!(v["joined"], json!(true), "rendered by the plugin: {v}");
        let pair = (v["left"]["n"].as_i64(), v["right"]["n"].as_i64());
        *got.entry(pair).or_insert(0) += 1;
    }
    got
}

#[test]
fn an_interval_join_pairs_each_order_with_its_payments_within_the_bound_as_computed_directly() {
    let s = Setup::new("join-left");
    let (mut orders, mut payments) = events(60, 12);
    let (o, p) = last();
    orders.extend(o);
    payments.extend(p);
    s.produce(&orders, &payments);
    let want = reference(&orders, &payments, true);
    let mut weir = Weir::start(weir_bin(), &s.pipeline("left", ""));
    let total: usize = want.values().sum();
    let outs = s
        .topics
        .kafka
        .read(&s.topics.sink, total, Duration::from_secs(90));
    // Nothing more comes: no pair twice, no order alone that had a payment.
    let more = s
        .topics
        .kafka
        .read(&s.topics.sink, total + 1, Duration::from_secs(3));
    assert_eq!(got(&more), want, "log:\n{}", weir.log());
    assert_eq!(outs.len(), total);
    // What the admin server shows of the joined topic: every payment taken in, none behind.
    let at = weir.admin();
    let (_, text) = http_get(&at, "/metrics");
    let series = |name: &str, p: i32| {
        let labels = format!("stage=\"paid\",topic=\"{}\",partition=\"{p}\"", s.payments);
        metric(&text, &format!("{name}{{{labels}}}")).unwrap_or_else(|| panic!("{text}"))
    };
    let read =
        series("weir_join_records_read_total", 0) + series("weir_join_records_read_total", 1);
    assert_eq!(read as usize, payments.len(), "{text}");
    assert_eq!(
        series("weir_join_lag", 0) + series("weir_join_lag", 1),
        0.0,
        "{text}"
    );
    let (_, status) = http_get(&at, "/api/status");
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        status["joins"].as_array().map(Vec::len),
        Some(2),
        "{status}"
    );
    assert_eq!(weir.stop(), Some(0), "{}", weir.log());
}

/// With `unmatched = { topic }`, the orders that paired with nothing go to a topic of their
/// own, as they came, and the sink has the pairs only.
#[test]
fn an_outer_join_sends_its_unpaired_records_to_a_topic_of_their_own() {
    let s = Setup::new("join-unmatched");
    let unpaid = unique("join-unpaid");
    s.topics.kafka.create_topic(&unpaid, 1);
    let (mut orders, mut payments) = events(60, 12);
    let (o, p) = last();
    orders.extend(o);
    payments.extend(p);
    s.produce(&orders, &payments);
    let pipeline = s.pipeline("left", "");
    let text = std::fs::read_to_string(&pipeline).unwrap().replace(
        "outer = \"left\" }",
        &format!("outer = \"left\", unmatched = {{ topic = \"{unpaid}\" }} }}"),
    );
    std::fs::write(&pipeline, text).unwrap();
    let mut weir = Weir::start(weir_bin(), &pipeline);
    let want = reference(&orders, &payments, true);
    let pairs: Pairs = want
        .clone()
        .into_iter()
        .filter(|(k, _)| k.1.is_some())
        .collect();
    let alone: Vec<i64> = want
        .keys()
        .filter(|k| k.1.is_none())
        .filter_map(|k| k.0)
        .collect();
    let k = &s.topics.kafka;
    let outs = k.read(&s.topics.sink, pairs.len(), Duration::from_secs(90));
    let unpaired = k.read(&unpaid, alone.len(), Duration::from_secs(30));
    let more = k.read(&s.topics.sink, pairs.len() + 1, Duration::from_secs(2));
    assert_eq!(got(&more), pairs, "log:\n{}", weir.log());
    assert_eq!(outs.len(), pairs.len());
    let mut unpaired: Vec<i64> = unpaired
        .iter()
        .map(|o| json_of(o)["n"].as_i64().unwrap())
        .collect();
    unpaired.sort_unstable();
    assert_eq!(unpaired, alone, "the orders as they came: {unpaired:?}");
    assert_eq!(weir.stop(), Some(0), "{}", weir.log());
}

/// Start a run of `pipeline`, stream `orders` and `payments` in over about two seconds, and
/// kill the run (SIGKILL) on the way.
fn kill_mid_stream(s: &Setup, pipeline: &Path, orders: &[Event], payments: &[Event]) {
    let mut weir = Weir::start(weir_bin(), pipeline);
    weir.wait_for_log("partition assigned", Duration::from_secs(60));
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let chunks = orders
                .chunks(150)
                .zip(payments.chunks(payments.len() / 20 + 1));
            for (o, p) in chunks {
                s.produce(o, p);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        std::thread::sleep(Duration::from_millis(1_200));
        weir.signal("KILL");
    });
    weir.wait(Duration::from_secs(10));
}

/// Start the run of `pipeline` again and produce the [`last`] order and payment; the run, and
/// the join of everything produced, computed directly.
fn restart(
    s: &Setup,
    pipeline: &Path,
    mut orders: Vec<Event>,
    mut payments: Vec<Event>,
) -> (Weir, Pairs) {
    let weir = Weir::start(weir_bin(), pipeline);
    let (o, p) = last();
    s.produce(&o, &p);
    orders.extend(o);
    payments.extend(p);
    (weir, reference(&orders, &payments, true))
}

/// Exactly once, `weir run` killed with SIGKILL while orders and payments stream in: after a
/// restart every pair (and every unpaired order) is in the committed output once.
#[test]
fn exactly_once_a_kill_9_mid_join_leaves_every_pair_once() {
    let s = Setup::new("join-eos");
    let pipeline = s.pipeline("left", "");
    let text = std::fs::read_to_string(&pipeline).unwrap().replace(
        "checkpoint_interval = \"200ms\"",
        "checkpoint_interval = \"200ms\"\nguarantee = \"exactly-once\"",
    );
    std::fs::write(&pipeline, text).unwrap();
    let (orders, payments) = events(3_000, 40);
    kill_mid_stream(&s, &pipeline, &orders, &payments);
    let before = s.topics.kafka.read_committed(&s.topics.sink, 2).len();

    let (mut weir, want) = restart(&s, &pipeline, orders, payments);
    let total: usize = want.values().sum();
    let outs =
        s.topics
            .kafka
            .wait_read_committed(&s.topics.sink, 2, total, Duration::from_secs(120));
    std::thread::sleep(Duration::from_secs(2));
    let outs = s
        .topics
        .kafka
        .read_committed(&s.topics.sink, 2)
        .max_len(outs);
    eprintln!(
        "{before} committed outputs before the kill, {} after the restart",
        outs.len()
    );
    assert!(
        before < total,
        "the kill came after the run had finished: {before}"
    );
    assert_eq!(got(&outs), want, "log:\n{}", weir.log());
    assert_eq!(weir.stop(), Some(0), "{}", weir.log());
}

/// At least once (the default), `weir run` killed with SIGKILL while orders and payments stream
/// in: after a restart every pair (and every unpaired order) is in the output, perhaps more
/// than once, and nothing else is: neither a record judged late because the state it wrote
/// ran ahead of its outputs, nor a position that skipped undelivered pairs.
#[test]
fn at_least_once_a_kill_9_mid_join_loses_no_pair() {
    let s = Setup::new("join-alo");
    let pipeline = s.pipeline("left", "");
    let (orders, payments) = events(3_000, 40);
    kill_mid_stream(&s, &pipeline, &orders, &payments);

    let (mut weir, want) = restart(&s, &pipeline, orders, payments);
    let started = std::time::Instant::now();
    let mut outs = Vec::new();
    while started.elapsed() < Duration::from_secs(120) {
        outs = s
            .topics
            .kafka
            .read(&s.topics.sink, 0, Duration::from_secs(2));
        if want.keys().all(|k| got(&outs).contains_key(k)) {
            break;
        }
    }
    let got = got(&outs);
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(k)).collect();
    assert!(
        missing.is_empty(),
        "lost: {missing:?}; log:\n{}",
        weir.log()
    );
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(k)).collect();
    assert!(extra.is_empty(), "not in the join: {extra:?}");
    let repeated = got.values().filter(|n| **n > 1).count();
    eprintln!("{} pairs, {repeated} of them more than once", want.len());
    assert_eq!(weir.stop(), Some(0), "{}", weir.log());
}

/// The longer of two reads.
trait Longer {
    fn max_len(self, other: Self) -> Self;
}

impl Longer for Vec<Out> {
    fn max_len(self, other: Vec<Out>) -> Vec<Out> {
        if self.len() >= other.len() {
            self
        } else {
            other
        }
    }
}
