//! Tables kept from topics (`[[table]]`) and stages that join records with them: the real
//! binary against the test broker, orders enriched with their customer's row while the customers
//! change, each output checked against the table as it was when the order went through.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde_json::{json, Value};

use crate::common::{
    component,
    kafka::{http_get, json_of, kafka, metric, unique, Dedicated, In, Kafka, Out, Topics, Weir},
    weir_bin,
};

/// A test's topics, with a customers topic of `partitions` partitions beside them.
struct Setup {
    topics: Topics,
    customers: String,
    state: tempfile::TempDir,
}

impl Setup {
    fn new(name: &str, partitions: i32) -> Setup {
        Setup::on(kafka(), name, partitions)
    }

    /// The same on broker `k`.
    fn on(k: &Kafka, name: &str, partitions: i32) -> Setup {
        Setup::with(k, name, 1, partitions)
    }

    /// On broker `k`, with a source of `source_partitions` partitions.
    fn with(k: &Kafka, name: &str, source_partitions: i32, partitions: i32) -> Setup {
        let topics = Topics::on(k, name, source_partitions);
        let customers = unique(&format!("{name}-customers"));
        topics.kafka.create_topic(&customers, partitions);
        Setup {
            topics,
            customers,
            state: crate::common::scratch(),
        }
    }

    /// A pipeline that enriches orders with their customer's country (none when the customer
    /// has no row), the table read from the customers topic in `format` (keyed by `/id`).
    fn pipeline(&self, format: &str, extra: &str) -> PathBuf {
        self.topics.write_pipeline(&format!(
            r#"
[state]
dir = "{state}"

[errors]
policy = "dead-letter"
topic = "{dlq}"

[[table]]
name = "customers"
topic = "{customers}"
key = "/id"
format = "{format}"

[[stage]]
name = "join"
plugin = "{enrich}"
tables = ["customers"]
config = {{ join = [{{ table = "customers", key = "/customer", fields = {{ "/country" = "/country" }} }}] }}

{extra}
"#,
            state = self.state.path().display(),
            dlq = self.topics.dlq,
            customers = self.customers,
            enrich = component("enrich").display(),
        ))
    }

    /// [`Setup::pipeline`] of an upsert table with more `[[table]]` settings (lines).
    fn upsert_pipeline_with(&self, settings: &str) -> PathBuf {
        let path = self.pipeline("upsert", "");
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "format = \"upsert\"",
            &format!("format = \"upsert\"\n{settings}"),
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    fn produce_orders(&self, orders: &[(&str, &str)]) {
        let records: Vec<In> = orders.iter().map(|(id, c)| order(id, c, None)).collect();
        self.topics.kafka.produce(&self.topics.source, &records);
    }

    /// Produce orders, each to the partition of its customer (`partition_of`).
    fn produce_orders_by_customer(&self, orders: &[(&str, &str)]) {
        let records: Vec<In> = orders
            .iter()
            .map(|(id, c)| order(id, c, Some(partition_of(c))))
            .collect();
        self.topics.kafka.produce(&self.topics.source, &records);
    }

    /// Produce customer changes: a row (upsert) or `None` (a tombstone), to the partition the
    /// id names, so one customer's changes stay in order.
    fn produce_customers(&self, changes: &[In]) {
        self.topics.kafka.produce(&self.customers, changes);
    }
}

/// Order `id` of `customer`, to `partition` (none: the producer's choice).
fn order(id: &str, customer: &str, partition: Option<i32>) -> In {
    In {
        key: Some(id.to_string()),
        value: json!({ "order": id, "customer": customer })
            .to_string()
            .into_bytes(),
        partition,
        ..In::default()
    }
}

/// Orders as the helpers take them.
fn orders(round: &[(String, String)]) -> Vec<(&str, &str)> {
    round
        .iter()
        .map(|(o, c)| (o.as_str(), c.as_str()))
        .collect()
}

/// Where a co-partitioned test puts customer `id`'s rows and orders (two partitions): by its
/// last digit.
fn partition_of(id: &str) -> i32 {
    i32::from(id.as_bytes()[id.len() - 1] - b'0') % 2
}

/// What the orders must become, given the table as it is: each order with its customer's
/// country, or without one when the customer has no row.
fn expected(orders: &[(&str, &str)], table: &BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    orders
        .iter()
        .map(|(id, customer)| {
            let mut out = json!({ "order": id, "customer": customer });
            if let Some(country) = table.get(*customer).and_then(|row| row.get("country")) {
                out["country"] = country.clone();
            }
            (id.to_string(), out)
        })
        .collect()
}

fn by_order(outs: &[Out]) -> BTreeMap<String, Value> {
    outs.iter()
        .map(|o| {
            let v = json_of(o);
            (v["order"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

/// An upsert record of customer `id` in `partition`: `row`, or a tombstone.
fn upsert(id: &str, row: Option<Value>, partition: i32) -> In {
    In {
        key: Some(id.to_string()),
        tombstone: row.is_none(),
        value: row.map_or_else(Vec::new, |r| r.to_string().into_bytes()),
        partition: Some(partition),
        ..In::default()
    }
}

/// Produce orders of a probe customer whose row was written last, until an output shows the
/// probe's `country`: the table has then applied every change before it (one partition).
fn wait_for_table(s: &Setup, probe_country: &str, outputs_before: usize) -> usize {
    for attempt in 0..100 {
        let id = format!("probe-{probe_country}-{attempt}");
        s.produce_orders(&[(id.as_str(), "probe")]);
        let outs = s.topics.kafka.read(
            &s.topics.sink,
            outputs_before + attempt + 1,
            Duration::from_secs(10),
        );
        if outs
            .iter()
            .any(|o| json_of(o)["country"] == json!(probe_country))
        {
            return outs.len();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the table never showed probe country {probe_country}");
}

#[test]
fn orders_are_joined_with_the_customer_row_current_when_they_pass() {
    let s = Setup::new("tables-upsert", 1);
    let mut table: BTreeMap<String, Value> = BTreeMap::new();
    let mut changes = Vec::new();
    for (id, country) in [("c1", "DE"), ("c2", "FR"), ("c3", "US"), ("probe", "P1")] {
        let row = json!({ "id": id, "country": country });
        table.insert(id.into(), row.clone());
        changes.push(upsert(id, Some(row), 0));
    }
    // An earlier version of c1, overwritten before the run starts: the latest row wins.
    changes.insert(
        0,
        upsert("c1", Some(json!({ "id": "c1", "country": "old" })), 0),
    );
    s.produce_customers(&changes);

    let mut weir = Weir::start(weir_bin(), &s.pipeline("upsert", ""));
    weir.wait_for_log("table read: 5 records", Duration::from_secs(60));
    let first = [("o1", "c1"), ("o2", "c2"), ("o3", "c3"), ("o4", "c9")];
    s.produce_orders(&first);
    let outs = s
        .topics
        .kafka
        .read(&s.topics.sink, first.len(), Duration::from_secs(60));
    assert_eq!(by_order(&outs), expected(&first, &table), "{}", weir.log());

    // While the run goes on: c1 moves, c2 is deleted (a tombstone), c9 appears.
    let mut changes = Vec::new();
    for (id, row) in [
        ("c1", Some(json!({ "id": "c1", "country": "UK" }))),
        ("c2", None),
        ("c9", Some(json!({ "id": "c9", "country": "JP" }))),
        ("probe", Some(json!({ "id": "probe", "country": "P2" }))),
    ] {
        match &row {
            Some(r) => table.insert(id.into(), r.clone()),
            None => table.remove(id),
        };
        changes.push(upsert(id, row, 0));
    }
    s.produce_customers(&changes);
    let seen = wait_for_table(&s, "P2", outs.len());
    let second = [("o5", "c1"), ("o6", "c2"), ("o7", "c3"), ("o8", "c9")];
    s.produce_orders(&second);
    let outs = s
        .topics
        .kafka
        .read(&s.topics.sink, seen + second.len(), Duration::from_secs(60));
    let got = by_order(&outs);
    for (order, want) in expected(&second, &table) {
        assert_eq!(
            got.get(&order),
            Some(&want),
            "order {order}; log:\n{}",
            weir.log()
        );
    }
    // What the admin server shows of the table: every record of its topic read.
    let at = weir.admin();
    let (_, text) = http_get(&at, "/metrics");
    let series = |name: &str| format!("{name}{{table=\"customers\",topic=\"{}\"}}", s.customers);
    assert_eq!(
        metric(&text, &series("weir_table_records_read_total")),
        Some(9.0),
        "{text}"
    );
    let (_, status) = http_get(&at, "/api/status");
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["tables"][0]["table"], "customers", "{status}");
    assert_eq!(status["tables"][0]["loaded"], true, "{status}");
    assert_eq!(weir.stop(), Some(0), "{}", weir.log());
    let dead = s
        .topics
        .kafka
        .read(&s.topics.dlq, 0, Duration::from_secs(2));
    assert!(dead.is_empty(), "{dead:?}");
}

/// A Debezium change event of customer `id`: `op` with its `after` row, or (`d`) its `before`.
fn event(op: &str, id: &str, country: &str, partition: i32) -> In {
    let row = json!({ "id": id, "country": country });
    let envelope = match op {
        "d" => json!({ "op": "d", "before": row, "after": null }),
        _ => json!({ "op": op, "before": null, "after": row }),
    };
    In {
        key: Some(json!({ "id": id }).to_string()),
        value: envelope.to_string().into_bytes(),
        partition: Some(partition),
        ..In::default()
    }
}

#[test]
fn a_debezium_table_is_kept_in_the_store_and_a_restart_reads_only_what_is_new() {
    let s = Setup::new("tables-debezium", 2);
    let mut table: BTreeMap<String, Value> = BTreeMap::new();
    let mut changes = Vec::new();
    for i in 0..40 {
        let id = format!("c{i}");
        let p = i % 2;
        changes.push(event("r", &id, "DE", p));
        table.insert(id.clone(), json!({ "id": id, "country": "DE" }));
        if i % 3 == 0 {
            changes.push(event("u", &id, "FR", p));
            table.insert(id.clone(), json!({ "id": id, "country": "FR" }));
        }
        if i % 5 == 0 {
            changes.push(event("d", &id, "FR", p));
            // Debezium follows a delete with a tombstone.
            changes.push(In {
                key: Some(json!({ "id": id }).to_string()),
                tombstone: true,
                partition: Some(p),
                ..In::default()
            });
            table.remove(&id);
        }
    }
    // A heartbeat (no `op`) changes no row.
    changes.push(In {
        value: json!({ "ts_ms": 1 }).to_string().into_bytes(),
        partition: Some(0),
        ..In::default()
    });
    let first_read = changes.len();
    s.produce_customers(&changes);

    let pipeline = s.pipeline("debezium", "");
    let mut weir = Weir::start(weir_bin(), &pipeline);
    weir.wait_for_log(
        &format!("table read: {first_read} records"),
        Duration::from_secs(60),
    );
    let ids: Vec<String> = (0..40).map(|i| format!("c{i}")).collect();
    let orders: Vec<(String, String)> = ids.iter().map(|c| (format!("a-{c}"), c.clone())).collect();
    let orders: Vec<(&str, &str)> = orders
        .iter()
        .map(|(o, c)| (o.as_str(), c.as_str()))
        .collect();
    s.produce_orders(&orders);
    let outs = s
        .topics
        .kafka
        .read(&s.topics.sink, orders.len(), Duration::from_secs(60));
    assert_eq!(by_order(&outs), expected(&orders, &table), "{}", weir.log());
    assert_eq!(weir.stop(), Some(0), "{}", weir.log());

    // While it is down: three changes. The restart reads those, not the topic again.
    let later = [
        event("u", "c1", "US", 1),
        event("c", "c40", "NL", 0),
        event("d", "c2", "DE", 0),
    ];
    table.insert("c1".into(), json!({ "id": "c1", "country": "US" }));
    table.insert("c40".into(), json!({ "id": "c40", "country": "NL" }));
    table.remove("c2");
    s.produce_customers(&later);
    let mut weir = Weir::start(weir_bin(), &pipeline);
    // The three changes, not the whole topic again.
    weir.wait_for_log("table read: 3 records", Duration::from_secs(60));
    let again = [("b1", "c1"), ("b2", "c2"), ("b3", "c40"), ("b4", "c4")];
    s.produce_orders(&again);
    let outs = s.topics.kafka.read(
        &s.topics.sink,
        orders.len() + again.len(),
        Duration::from_secs(60),
    );
    let got = by_order(&outs);
    for (order, want) in expected(&again, &table) {
        assert_eq!(
            got.get(&order),
            Some(&want),
            "order {order}; log:\n{}",
            weir.log()
        );
    }
    assert_eq!(weir.stop(), Some(0), "{}", weir.log());
}

#[test]
fn a_table_record_that_is_no_row_change_stops_the_run_under_policy_fail_naming_its_place() {
    let s = Setup::new("tables-bad", 1);
    s.produce_customers(&[
        upsert("c1", Some(json!({ "id": "c1", "country": "DE" })), 0),
        In {
            key: Some("c2".into()),
            value: b"{not json".to_vec(),
            partition: Some(0),
            ..In::default()
        },
    ]);
    let pipeline = s.pipeline("upsert", "");
    let text = std::fs::read_to_string(&pipeline)
        .unwrap()
        .replace("policy = \"dead-letter\"", "policy = \"fail\"")
        .replace(
            &format!("topic = \"{}\"\n\n[[table]]", s.topics.dlq),
            "\n[[table]]",
        );
    std::fs::write(&pipeline, text).unwrap();
    let mut weir = Weir::start(weir_bin(), &pipeline);
    let code = weir.wait(Duration::from_secs(60));
    assert_ne!(code, Some(0), "{}", weir.log());
    let log = weir.log();
    let place = format!(
        "table `customers` cannot read {}[0]@1: the value is not JSON",
        s.customers
    );
    assert!(log.contains(&place), "{log}");
}

#[test]
fn a_stage_asking_for_a_table_it_is_not_granted_dead_letters_the_record() {
    let s = Setup::new("tables-grant", 1);
    s.produce_customers(&[upsert(
        "c1",
        Some(json!({ "id": "c1", "country": "DE" })),
        0,
    )]);
    let pipeline = s.pipeline(
        "upsert",
        r#"[[stage]]
name = "sneaky"
plugin = "ENRICH"
config = { join = [{ table = "customers", key = "/customer", into = "/row" }] }
"#,
    );
    let text = std::fs::read_to_string(&pipeline)
        .unwrap()
        .replace("ENRICH", &component("enrich").display().to_string());
    std::fs::write(&pipeline, text).unwrap();
    let mut weir = Weir::start(weir_bin(), &pipeline);
    s.produce_orders(&[("o1", "c1")]);
    let dead = s
        .topics
        .kafka
        .read(&s.topics.dlq, 1, Duration::from_secs(60));
    assert_eq!(dead.len(), 1, "{}", weir.log());
    let headers = &dead[0].headers;
    assert_eq!(
        headers.get("weir.error.kind").map(String::as_str),
        Some("table"),
        "{headers:?}"
    );
    let message = headers
        .get("weir.error.message")
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("asked for table `customers`, but the stage is granted no tables"),
        "{headers:?}"
    );
    assert_eq!(weir.stop(), Some(0), "{}", weir.log());
}

/// Exactly once, `weir run` killed with SIGKILL while orders are being joined: after a restart
/// every order is in the output once, and no order the table's change came before reads the
/// row from before it (the restart reads the table on from its store, to its topic's end).
#[test]
fn exactly_once_a_kill_9_mid_join_leaves_every_order_once_with_a_row_no_older_than_its_time() {
    let s = Setup::new("tables-eos", 1);
    let customers = |country: &str| -> Vec<In> {
        (0..10)
            .map(|i| format!("c{i}"))
            .chain(["probe".to_string()])
            .map(|id| upsert(&id, Some(json!({ "id": id, "country": country })), 0))
            .collect()
    };
    s.produce_customers(&customers("v1"));
    let pipeline = s.pipeline("upsert", "");
    let text = std::fs::read_to_string(&pipeline).unwrap().replace(
        "checkpoint_interval = \"200ms\"",
        "checkpoint_interval = \"200ms\"\nguarantee = \"exactly-once\"",
    );
    std::fs::write(&pipeline, text).unwrap();
    let orders = |batch: &str, n: usize| -> Vec<(String, String)> {
        (0..n)
            .map(|i| (format!("{batch}{i}"), format!("c{}", i % 10)))
            .collect()
    };
    let produce = |o: &[(String, String)]| {
        let refs: Vec<(&str, &str)> = o.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        s.produce_orders(&refs);
    };

    let mut weir = Weir::start(weir_bin(), &pipeline);
    weir.wait_for_log("table read:", Duration::from_secs(60));
    let first = orders("a", 200);
    produce(&first);
    s.topics
        .kafka
        .wait_read_committed(&s.topics.sink, 1, 1, Duration::from_secs(60));
    // Every customer moves to v2; once the table shows it, the second batch goes in, and the
    // run is killed while it works through it.
    s.produce_customers(&customers("v2"));
    let seen = s
        .topics
        .kafka
        .read(&s.topics.sink, 0, Duration::from_secs(1))
        .len();
    wait_for_table(&s, "v2", seen);
    let second = orders("b", 2000);
    // Streamed over about a second, and the run killed halfway.
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for chunk in second.chunks(200) {
                produce(chunk);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        std::thread::sleep(Duration::from_millis(500));
        weir.signal("KILL");
    });
    weir.wait(Duration::from_secs(10));
    let orders_in = |outs: &[Out]| {
        outs.iter()
            .filter(|o| !json_of(o)["order"].as_str().unwrap().starts_with("probe"))
            .count()
    };
    let before = orders_in(&s.topics.kafka.read_committed(&s.topics.sink, 1));

    let mut weir = Weir::start(weir_bin(), &pipeline);
    weir.wait_for_log("table read:", Duration::from_secs(60));
    let want = first.len() + second.len();
    let started = std::time::Instant::now();
    let mut outs = s.topics.kafka.read_committed(&s.topics.sink, 1);
    while orders_in(&outs) < want && started.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(500));
        outs = s.topics.kafka.read_committed(&s.topics.sink, 1);
    }
    let mut times: BTreeMap<String, usize> = BTreeMap::new();
    let mut countries: BTreeMap<String, Value> = BTreeMap::new();
    for out in &outs {
        let v = json_of(out);
        let order = v["order"].as_str().unwrap().to_string();
        *times.entry(order.clone()).or_default() += 1;
        countries.insert(order, v["country"].clone());
    }
    for (order, _) in first.iter().chain(&second) {
        assert_eq!(
            times.get(order),
            Some(&1),
            "order {order}; log:\n{}",
            weir.log()
        );
    }
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "in the output more than once: {twice:?}");
    for (order, _) in &first {
        let country = &countries[order];
        assert!(country == "v1" || country == "v2", "{order}: {country}");
    }
    for (order, _) in &second {
        assert_eq!(
            countries[order],
            json!("v2"),
            "{order}; log:\n{}",
            weir.log()
        );
    }
    // The kill landed mid-join: the restart had outputs left to write.
    assert!(
        before < want,
        "all {want} outputs were committed before the kill"
    );
    assert_eq!(weir.stop(), Some(0), "{}", weir.log());
}

/// `as_of = "event-time"`: each order is joined with its customer's row as it was at the
/// order's time (Flink's temporal join), whatever changed since; checked against the versions
/// looked up directly.
#[test]
fn as_of_event_time_each_order_gets_the_row_current_at_its_time() {
    let s = Setup::new("tables-asof", 1);
    const T0: i64 = 1_700_000_000_000;
    // Customer versions: id, time after T0, country (none: deleted).
    let versions: [(&str, i64, Option<&str>); 6] = [
        ("c1", 1_000, Some("DE")),
        ("c1", 2_000, Some("FR")),
        ("c1", 3_000, None),
        ("c1", 4_000, Some("NL")),
        ("c2", 1_500, Some("US")),
        ("c2", 6_000, Some("JP")),
    ];
    let changes: Vec<In> = versions
        .iter()
        .map(|(id, t, country)| In {
            timestamp: Some(T0 + t),
            ..upsert(id, country.map(|c| json!({ "id": id, "country": c })), 0)
        })
        .collect();
    s.produce_customers(&changes);
    let pipeline = s.upsert_pipeline_with("as_of = \"event-time\"\nretention = \"1h\"");
    let mut weir = Weir::start(weir_bin(), &pipeline);
    weir.wait_for_log("table read:", Duration::from_secs(60));

    let orders: [(&str, &str, i64); 9] = [
        ("o1", "c1", 500),
        ("o2", "c1", 1_000),
        ("o3", "c1", 1_999),
        ("o4", "c1", 2_500),
        ("o5", "c1", 3_500),
        ("o6", "c1", 9_000),
        ("o7", "c2", 1_400),
        ("o8", "c2", 5_999),
        ("o9", "c2", 6_000),
    ];
    let records: Vec<In> = orders
        .iter()
        .map(|(id, customer, t)| In {
            key: Some(id.to_string()),
            value: json!({ "order": id, "customer": customer })
                .to_string()
                .into_bytes(),
            timestamp: Some(T0 + t),
            ..In::default()
        })
        .collect();
    s.topics.kafka.produce(&s.topics.source, &records);
    let outs = s
        .topics
        .kafka
        .read(&s.topics.sink, orders.len(), Duration::from_secs(60));
    let got = by_order(&outs);
    for (order, customer, t) in orders {
        let current = versions
            .iter()
            .rfind(|(id, at, _)| *id == customer && *at <= t)
            .and_then(|(_, _, country)| *country);
        let mut want = json!({ "order": order, "customer": customer });
        if let Some(country) = current {
            want["country"] = json!(country);
        }
        assert_eq!(
            got.get(order),
            Some(&want),
            "order {order}; log:\n{}",
            weir.log()
        );
    }
    assert_eq!(weir.stop(), Some(0), "{}", weir.log());
}

/// The broker stops answering (SIGSTOP: a long pause, a network partition) while the table is
/// followed: the run waits it out, as its source does, and takes in what changes once it is
/// back.
#[test]
fn a_table_follows_its_topic_through_a_broker_that_stops_answering() {
    let broker = Dedicated::start(19099);
    let s = Setup::on(&broker.kafka, "tables-pause", 1);
    let probe = |country: &str| {
        upsert(
            "probe",
            Some(json!({ "id": "probe", "country": country })),
            0,
        )
    };
    s.produce_customers(&[probe("P1")]);
    let mut weir = Weir::start(weir_bin(), &s.pipeline("upsert", ""));
    weir.wait_for_log("table read:", Duration::from_secs(60));
    let seen = wait_for_table(&s, "P1", 0);
    broker.pause();
    std::thread::sleep(Duration::from_secs(8));
    broker.resume();
    s.produce_customers(&[probe("P2")]);
    wait_for_table(&s, "P2", seen);
    assert!(weir.running(), "{}", weir.log());
    assert_eq!(weir.stop(), Some(0), "{}", weir.log());
}

/// A partitioned table (`partitioned = true`, a KTable): customers and orders both in two
/// partitions by customer. One instance reads the whole table while it has both partitions; a
/// second joins the group, reads only the table partition of the source partition it is given
/// before it processes a record of it, and each follows its partitions' changes.
#[test]
fn a_partitioned_table_is_read_per_assigned_partition_and_moves_with_it() {
    let s = Setup::with(kafka(), "tables-part", 2, 2);
    let customers = ["c0", "c1", "c2", "c3", "c4", "c5", "p0", "p1"];
    let row = |id: &str, country: &str| json!({ "id": id, "country": country });
    let mut table: BTreeMap<String, Value> = BTreeMap::new();
    let mut changes = Vec::new();
    for id in customers {
        let country = format!("{}-v1", id.to_uppercase());
        table.insert(id.into(), row(id, &country));
        changes.push(upsert(id, Some(row(id, &country)), partition_of(id)));
    }
    s.produce_customers(&changes);
    let text = std::fs::read_to_string(s.upsert_pipeline_with("partitioned = true")).unwrap();
    let pipeline_a = s.topics.dir.path().join("a.toml");
    std::fs::write(&pipeline_a, &text).unwrap();
    let state_b = crate::common::scratch();
    let pipeline_b = s.topics.dir.path().join("b.toml");
    let text_b = text.replace(
        &s.state.path().display().to_string(),
        &state_b.path().display().to_string(),
    );
    std::fs::write(&pipeline_b, text_b).unwrap();

    let mut a = Weir::start(weir_bin(), &pipeline_a);
    a.wait_for_log(
        "reading partitions {0, 1} of the table",
        Duration::from_secs(60),
    );
    let round = |n: usize| -> Vec<(String, String)> {
        customers[..6]
            .iter()
            .map(|c| (format!("o{n}-{c}"), c.to_string()))
            .collect()
    };
    let first = round(1);
    s.produce_orders_by_customer(&orders(&first));
    let outs = s
        .topics
        .kafka
        .read(&s.topics.sink, 6, Duration::from_secs(60));
    assert_eq!(
        by_order(&outs),
        expected(&orders(&first), &table),
        "{}",
        a.log()
    );
    let read = |weir: &mut Weir| {
        let (_, text) = http_get(&weir.admin(), "/metrics");
        let series = format!(
            "weir_table_records_read_total{{table=\"customers\",topic=\"{}\"}}",
            s.customers
        );
        metric(&text, &series)
    };
    assert_eq!(read(&mut a), Some(8.0), "{}", a.log());

    // B joins: one partition moves to it, and B reads that partition of the table only.
    let mut b = Weir::start(weir_bin(), &pipeline_b);
    b.wait_for_log("partition assigned", Duration::from_secs(60));
    a.wait_for_log("partition revoked", Duration::from_secs(60));
    let second = round(2);
    s.produce_orders_by_customer(&orders(&second));
    let outs = s
        .topics
        .kafka
        .read(&s.topics.sink, 12, Duration::from_secs(60));
    let got = by_order(&outs);
    for (order, want) in expected(&orders(&second), &table) {
        assert_eq!(got.get(&order), Some(&want), "log of B:\n{}", b.log());
    }
    assert_eq!(read(&mut b), Some(4.0), "{}", b.log());

    // Every customer moves; each instance takes in its partitions' changes.
    let mut changes = Vec::new();
    for id in customers {
        let country = format!("{}-v2", id.to_uppercase());
        table.insert(id.into(), row(id, &country));
        changes.push(upsert(id, Some(row(id, &country)), partition_of(id)));
    }
    s.produce_customers(&changes);
    let mut seen = outs.len();
    for probe in ["p0", "p1"] {
        let want = format!("{}-v2", probe.to_uppercase());
        let shows = |outs: &[Out]| outs.iter().any(|o| json_of(o)["country"] == json!(want));
        for attempt in 0..100 {
            let id = format!("{probe}-{attempt}");
            s.produce_orders_by_customer(&[(id.as_str(), probe)]);
            let outs = s
                .topics
                .kafka
                .read(&s.topics.sink, seen + 1, Duration::from_secs(10));
            seen = outs.len();
            if shows(&outs) {
                break;
            }
            assert!(attempt < 99, "{probe} never showed {want}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let third = round(3);
    s.produce_orders_by_customer(&orders(&third));
    let outs = s
        .topics
        .kafka
        .read(&s.topics.sink, seen + 6, Duration::from_secs(60));
    let got = by_order(&outs);
    for (order, want) in expected(&orders(&third), &table) {
        assert_eq!(
            got.get(&order),
            Some(&want),
            "log of A:\n{}\nlog of B:\n{}",
            a.log(),
            b.log()
        );
    }
    assert_eq!(a.stop(), Some(0), "{}", a.log());
    assert_eq!(b.stop(), Some(0), "{}", b.log());
}

#[test]
fn a_partitioned_table_partitioned_unlike_the_source_is_refused_naming_both_counts() {
    let s = Setup::new("tables-part-count", 2);
    let pipeline = s.upsert_pipeline_with("partitioned = true");
    let mut weir = Weir::start(weir_bin(), &pipeline);
    assert_ne!(
        weir.wait(Duration::from_secs(60)),
        Some(0),
        "{}",
        weir.log()
    );
    let want = format!(
        "is partitioned = true, so its topic must be partitioned as the source's are, but `{}` \
         has 2 partitions and source topic `{}` has 1",
        s.customers, s.topics.source
    );
    assert!(weir.log().contains(&want), "{}", weir.log());
}
