//! Join stages (`join = { topic, key, within, outer }`): the real binary against the test
//! broker, orders joined with their payments within a time bound, each run's outputs checked
//! against the join computed directly from what was produced.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde_json::{json, Value};

use crate::common::{
    component,
    kafka::{json_of, unique, In, Out, Topics, Weir},
    weir_bin,
};

/// Records are at most this far apart in event time to pair (ms).
const WITHIN: i64 = 10_000;

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

/// Orders and payments over 12 order ids, each side in rising event time per order id (as
/// they would be written), some payments too far from their order to pair, some orders
/// without one; then one order and one payment an hour later on each partition, whose
/// watermark lets every earlier record go.
fn events() -> (Vec<Event>, Vec<Event>) {
    let mut orders = Vec::new();
    let mut payments = Vec::new();
    for i in 0..60 {
        let order = i % 12;
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
    for order in [100, 101] {
        let ts = 10_000_000;
        orders.push(Event {
            n: 9_000 + order,
            order,
            ts,
        });
        payments.push(Event {
            n: 9_500 + order,
            order,
            ts,
        });
    }
    (orders, payments)
}

/// The join computed directly: each (order, payment) pair of one order id at most [`WITHIN`]
/// apart, and with `left`, each order that has none alone.
fn reference(
    orders: &[Event],
    payments: &[Event],
    left: bool,
) -> BTreeMap<(Option<i64>, Option<i64>), usize> {
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
fn got(outs: &[Out]) -> BTreeMap<(Option<i64>, Option<i64>), usize> {
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
    let (orders, payments) = events();
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
    assert_eq!(weir.stop(), Some(0), "{}", weir.log());
}
