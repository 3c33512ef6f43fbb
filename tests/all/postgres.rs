//! Change data capture against a real PostgreSQL server (the project's `scripts/postgres.sh`):
//! SQL in, Debezium change events out.

use serde_json::{json, Value};
use weir::postgres::{Capture, Captured, Change, Settings};

use crate::common::postgres::{postgres, Database};

fn value(change: &Change) -> Value {
    change
        .value
        .as_ref()
        .map_or(Value::Null, |v| serde_json::from_slice(v).unwrap())
}

fn key(change: &Change) -> Value {
    change
        .key
        .as_ref()
        .map_or(Value::Null, |k| serde_json::from_slice(k).unwrap())
}

fn start(db: &Database, tables: &[&str]) -> Capture {
    let settings = Settings::new(&db.source(tables, "shop")).unwrap();
    db.runtime
        .block_on(Capture::start(settings, 0))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// What the capture brings next, waiting up to 30 s for it.
fn next(db: &Database, capture: &mut Capture) -> Captured {
    db.runtime
        .block_on(capture.next(std::time::Duration::from_secs(30)))
        .unwrap()
        .expect("something captured within 30 s")
}

/// Everything up to and including the snapshot's last rows.
fn snapshot(db: &Database, capture: &mut Capture) -> Vec<Change> {
    let mut rows = Vec::new();
    loop {
        match next(db, capture) {
            Captured::Snapshot { changes, last, .. } => {
                rows.extend(changes);
                if last {
                    return rows;
                }
            }
            other => panic!("{other:?} before the snapshot's end"),
        }
    }
}

fn transaction(db: &Database, capture: &mut Capture) -> weir::postgres::Transaction {
    match next(db, capture) {
        Captured::Transaction(t) => t,
        other => panic!("{other:?}, not a transaction"),
    }
}

#[test]
fn a_snapshot_then_the_stream_with_no_gap_and_no_overlap() {
    let db = postgres().database("cdc_snapshot");
    db.execute(
        "CREATE TABLE orders (id int PRIMARY KEY, note text, amount numeric(20,6), \
         at timestamptz, day date, tags text[], doc jsonb, raw bytea, ok boolean); \
         INSERT INTO orders VALUES \
         (1, 'one', 12345678901234.000001, '2024-01-02 03:04:05.5+00', '1970-01-03', \
          '{a,\"b c\",NULL}', '{\"x\": [1]}', '\\x00ff', true), \
         (2, NULL, 2, NULL, NULL, NULL, NULL, NULL, NULL)",
    );
    let mut capture = start(&db, &["orders"]);
    // Written after the slot exists: in the stream, not the snapshot.
    db.execute("INSERT INTO orders (id, note) VALUES (3, 'three')");
    let rows = snapshot(&db, &mut capture);
    assert_eq!(rows.len(), 2, "{rows:?}");
    let first = value(&rows[0]);
    assert_eq!(first["op"], "r");
    assert_eq!(first["source"]["snapshot"], "true");
    assert_eq!(
        first["after"],
        json!({"id": 1, "note": "one", "amount": "12345678901234.000001",
               "at": "2024-01-02T03:04:05.5Z", "day": 2, "tags": ["a", "b c", null],
               "doc": {"x": [1]}, "raw": "AP8=", "ok": true})
    );
    assert_eq!(key(&rows[0]), json!({"id": 1}));
    assert_eq!(rows[0].topic, "shop.public.orders");
    assert_eq!(value(&rows[1])["after"]["note"], Value::Null);

    let t = transaction(&db, &mut capture);
    assert_eq!(t.changes.len(), 1);
    let three = value(&t.changes[0]);
    assert_eq!(three["op"], "c");
    assert_eq!(three["after"]["id"], 3);
    assert_eq!(three["source"]["txId"], t.xid);
    db.runtime.block_on(capture.close());
}

#[test]
fn inserts_updates_deletes_and_truncates_in_commit_order() {
    let db = postgres().database("cdc_stream");
    db.execute(
        "CREATE TABLE items (id int PRIMARY KEY, body text, n int); \
         ALTER TABLE items ALTER COLUMN body SET STORAGE EXTERNAL; \
         CREATE TABLE notes (id serial PRIMARY KEY, text text); \
         ALTER TABLE notes REPLICA IDENTITY FULL",
    );
    let mut source = db.source(&["items", "public.notes"], "shop");
    source.transaction_metadata = true;
    let mut capture = db
        .runtime
        .block_on(Capture::start(Settings::new(&source).unwrap(), 0))
        .unwrap();
    assert!(snapshot(&db, &mut capture).is_empty());
    // One transaction across two tables; a TOASTed value (too large to keep in the row) that
    // an update leaves alone.
    db.execute(&format!(
        "BEGIN; INSERT INTO items VALUES (1, '{}', 1); INSERT INTO notes (text) VALUES ('n'); \
         UPDATE items SET n = 2 WHERE id = 1; COMMIT",
        "x".repeat(100_000)
    ));
    db.execute("UPDATE notes SET text = 'm'; DELETE FROM items WHERE id = 1");
    db.execute("TRUNCATE items");

    let first = transaction(&db, &mut capture);
    let ops: Vec<(String, String)> = first
        .changes
        .iter()
        .map(|c| {
            (
                c.topic.clone(),
                value(c)["op"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        ops,
        [
            ("shop.public.items".into(), "c".into()),
            ("shop.public.notes".into(), "c".into()),
            ("shop.public.items".into(), "u".into()),
        ]
    );
    // Debezium's transaction block: the id, the order in the transaction and in the table.
    let orders: Vec<(u64, u64)> = first
        .changes
        .iter()
        .map(|c| {
            let t = &value(c)["transaction"];
            let id = t["id"].as_str().unwrap();
            assert!(id.starts_with(&format!("{}:", first.xid)), "{id}");
            (
                t["total_order"].as_u64().unwrap(),
                t["data_collection_order"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(orders, [(1, 1), (2, 1), (3, 2)]);
    let update = value(&first.changes[2]);
    assert_eq!(update["after"]["n"], 2);
    assert!(
        update["after"]["body"] == "__debezium_unavailable_value",
        "an unchanged TOASTed value is marked, not sent: {:.200}",
        update["after"]["body"]
    );
    assert_eq!(
        update["before"],
        Value::Null,
        "REPLICA IDENTITY DEFAULT sends no old row"
    );

    let second = transaction(&db, &mut capture);
    assert!(second.end_lsn > first.end_lsn);
    let note = value(&second.changes[0]);
    assert_eq!(
        note["before"],
        json!({"id": 1, "text": "n"}),
        "FULL sends the old row"
    );
    assert_eq!(note["after"], json!({"id": 1, "text": "m"}));
    let delete = value(&second.changes[1]);
    assert_eq!(delete["op"], "d");
    assert_eq!(delete["before"]["id"], 1);
    assert_eq!(delete["after"], Value::Null);
    assert_eq!(key(&second.changes[1]), json!({"id": 1}));

    let third = transaction(&db, &mut capture);
    assert_eq!(value(&third.changes[0])["op"], "t");
    assert_eq!(third.changes[0].key, None);
    db.runtime.block_on(capture.close());
}

#[test]
fn bad_settings_and_a_busy_slot_are_named() {
    let db = postgres().database("cdc_faults");
    db.execute("CREATE TABLE t (id int PRIMARY KEY)");
    let error = |source: weir::config::PostgresSource| {
        let settings = Settings::new(&source).unwrap();
        match db.runtime.block_on(Capture::start(settings, 0)) {
            Ok(_) => panic!("started"),
            Err(e) => e.to_string(),
        }
    };
    let mut wrong = db.source(&["t"], "p");
    wrong.password_env = "WEIR_TEST_NO_SUCH_VARIABLE".into();
    let message = error(wrong);
    assert!(
        message.contains("password authentication failed"),
        "{message}"
    );
    assert!(message.contains("postgres@127.0.0.1"), "{message}");

    let message = error(db.source(&["t", "missing"], "p"));
    assert!(
        message.contains("table public.missing") && message.contains("does not exist"),
        "{message}"
    );

    let mut no_create = db.source(&["t"], "p");
    no_create.create = false;
    let message = error(no_create);
    assert!(message.contains("publication `cdc_faults`"), "{message}");

    // A slot has one reader: a second capture is refused with who holds it.
    let mut first = start(&db, &["t"]);
    snapshot(&db, &mut first);
    db.execute("INSERT INTO t VALUES (1)");
    transaction(&db, &mut first);
    let message = error(db.source(&["t"], "p"));
    assert!(message.contains("in use by server process"), "{message}");
    db.runtime.block_on(first.close());
}

/// The pipeline file of a `weir run` capturing `tables` of `db` into topics `prefix.…`,
/// unwrapped by `cdc-unwrap`, with `extra` appended.
fn cdc_pipeline(
    db: &Database,
    dir: &std::path::Path,
    prefix: &str,
    extra: &str,
) -> std::path::PathBuf {
    let source = db.source(&["orders"], prefix);
    let path = dir.join("pipeline.toml");
    std::fs::write(
        &path,
        format!(
            "[source]\nkind = \"postgres\"\nurl = \"{}\"\npassword_env = \"{}\"\n\
             tables = [\"orders\"]\ntopic_prefix = \"{prefix}\"\nslot = \"{}\"\npublication = \"{}\"\n\n\
             [sink]\nbrokers = \"{}\"\n\n\
             [delivery]\ncheckpoint_interval = \"200ms\"\n{extra}\n\
             [[stage]]\nname = \"unwrap\"\nplugin = \"{}\"\nconfig = {{ delete = \"rewrite\", add_fields = [\"op\"] }}\n",
            source.url,
            source.password_env,
            source.slot,
            source.publication,
            crate::common::kafka::kafka().brokers,
            crate::common::component("cdc-unwrap").display()
        ),
    )
    .unwrap();
    path
}

/// The rows (values as JSON) `weir run` wrote to `topic`, in order.
fn rows(topic: &str, expected: usize) -> Vec<Value> {
    let k = crate::common::kafka::kafka();
    k.read(topic, expected, std::time::Duration::from_secs(60))
        .iter()
        .map(|o| {
            o.value
                .as_deref()
                .map_or(Value::Null, |v| serde_json::from_str(v).unwrap())
        })
        .collect()
}

#[test]
fn weir_run_carries_sql_changes_to_kafka_and_resumes_where_it_stopped() {
    use crate::common::kafka::{unique, Weir};
    let db = postgres().database("cdc_run");
    db.execute(
        "CREATE TABLE orders (id int PRIMARY KEY, amount int); \
         INSERT INTO orders SELECT g, g * 10 FROM generate_series(1, 3) g",
    );
    let dir = crate::common::scratch();
    let prefix = unique("cdc");
    let topic = format!("{prefix}.public.orders");
    let pipeline = cdc_pipeline(&db, dir.path(), &prefix, "");
    let bin = crate::common::weir_bin();

    let mut weir = Weir::start(bin, &pipeline);
    // Once it runs, its topics exist.
    weir.wait_for_log("running ", std::time::Duration::from_secs(30));
    // The snapshot's rows, then changes made while it runs, in commit order.
    assert_eq!(rows(&topic, 3).len(), 3, "log:\n{}", weir.log());
    db.execute("BEGIN; INSERT INTO orders VALUES (4, 40); UPDATE orders SET amount = 11 WHERE id = 1; COMMIT");
    db.execute("DELETE FROM orders WHERE id = 2");
    let got = rows(&topic, 7);
    assert_eq!(got.len(), 7, "log:\n{}", weir.log());
    // The delete is followed by its tombstone (no value), as Debezium does.
    assert_eq!(got[6], Value::Null);
    let seen: Vec<(i64, &str, &str)> = got[..6]
        .iter()
        .map(|v| {
            (
                v["id"].as_i64().unwrap(),
                v["__op"].as_str().unwrap(),
                v["__deleted"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (1, "r", "false"),
            (2, "r", "false"),
            (3, "r", "false"),
            (4, "c", "false"),
            (1, "u", "false"),
            (2, "d", "true"),
        ],
        "log:\n{}",
        weir.log()
    );
    assert_eq!(got[4]["amount"], 11);
    assert_eq!(weir.stop(), Some(0), "log:\n{}", weir.log());

    // Changes made while weir is down come with the next run, and nothing comes twice.
    db.execute("INSERT INTO orders VALUES (5, 50)");
    let mut weir = Weir::start(bin, &pipeline);
    db.execute("UPDATE orders SET amount = 51 WHERE id = 5");
    let got = rows(&topic, 9);
    let tail: Vec<(i64, &str)> = got[7..]
        .iter()
        .map(|v| (v["id"].as_i64().unwrap(), v["__op"].as_str().unwrap()))
        .collect();
    assert_eq!(tail, [(5, "c"), (5, "u")], "{got:?}; log:\n{}", weir.log());
    assert_eq!(weir.stop(), Some(0), "log:\n{}", weir.log());
    // Read again after the stop (a read waits a second past what it expects, for extras).
    assert_eq!(rows(&topic, 9).len(), 9, "nothing comes twice");
}

#[test]
fn exactly_once_across_kill_9_during_concurrent_transactions() {
    use crate::common::kafka::{kafka, unique, Weir};
    const WRITERS: usize = 4;
    const TRANSACTIONS: usize = 625;
    const ROWS: usize = 20;
    let db = postgres().database("cdc_exactly_once");
    db.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, writer int, n int)");
    let dir = crate::common::scratch();
    let prefix = unique("cdc-eos");
    let topic = format!("{prefix}.public.orders");
    let pipeline = cdc_pipeline(&db, dir.path(), &prefix, "guarantee = \"exactly-once\"\n");
    let bin = crate::common::weir_bin();
    let mut weir = Weir::start(bin, &pipeline);
    weir.wait_for_log("running ", std::time::Duration::from_secs(30));

    // 100 000 row changes: writers commit transactions of twenty inserts each, then update
    // each of their rows once, while weir is killed with SIGKILL at random moments and started
    // again.
    let port = db.port;
    let name = db.name.clone();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let name = name.clone();
            std::thread::spawn(move || {
                let db = crate::common::postgres::Database::connect(port, &name);
                for t in 0..TRANSACTIONS {
                    let values: Vec<String> = (0..ROWS)
                        .map(|i| format!("({w}, {})", t * ROWS + i))
                        .collect();
                    db.execute(&format!(
                        "INSERT INTO orders (writer, n) VALUES {}",
                        values.join(", ")
                    ));
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                for t in 0..TRANSACTIONS {
                    db.execute(&format!(
                        "UPDATE orders SET n = -n WHERE writer = {w} AND n >= {} AND n < {}",
                        t * ROWS,
                        (t + 1) * ROWS
                    ));
                }
            })
        })
        .collect();
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    for _ in 0..3 {
        std::thread::sleep(std::time::Duration::from_millis(rng.u64(300..2000)));
        weir.signal("KILL");
        weir.wait(std::time::Duration::from_secs(10));
        weir = Weir::start(bin, &pipeline);
    }
    for w in writers {
        w.join().unwrap();
    }
    let inserts = WRITERS * TRANSACTIONS * ROWS;
    kafka().wait_read_committed(&topic, 1, 2 * inserts, std::time::Duration::from_secs(180));
    assert_eq!(weir.stop(), Some(0), "log:\n{}", weir.log());
    let out = kafka().read_committed(&topic, 1);
    // Every change exactly once, each row's insert before its update.
    let mut seen = std::collections::HashMap::new();
    for o in &out {
        let v: Value = serde_json::from_str(o.value.as_deref().unwrap()).unwrap();
        let id = v["id"].as_i64().unwrap();
        let op = v["__op"].as_str().unwrap().to_string();
        seen.entry(id).or_insert_with(Vec::new).push(op);
    }
    assert_eq!(
        seen.len(),
        inserts,
        "rows (kill seed {seed}); log:\n{}",
        weir.log()
    );
    let wrong: Vec<_> = seen
        .iter()
        .filter(|(_, ops)| ops.as_slice() != ["c", "u"])
        .collect();
    assert!(
        wrong.is_empty(),
        "{} rows not exactly once in order (kill seed {seed}): {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert_eq!(out.len(), 2 * inserts);
}

#[test]
fn a_database_restart_mid_stream_is_ridden_out_exactly_once() {
    use crate::common::kafka::{kafka, unique, Weir};
    use crate::common::postgres::Dedicated;
    let server = Dedicated::start(25434, &[]);
    let db = server.server.database("cdc_restart");
    db.execute("CREATE TABLE orders (id int PRIMARY KEY, amount int)");
    let dir = crate::common::scratch();
    let prefix = unique("cdc-restart");
    let topic = format!("{prefix}.public.orders");
    let pipeline = cdc_pipeline(&db, dir.path(), &prefix, "guarantee = \"exactly-once\"\n");
    let mut weir = Weir::start(crate::common::weir_bin(), &pipeline);
    weir.wait_for_log("running ", std::time::Duration::from_secs(30));
    db.execute("INSERT INTO orders SELECT g, g FROM generate_series(1, 50) g");
    kafka().wait_read_committed(&topic, 1, 50, std::time::Duration::from_secs(60));

    // The server restarts (sessions are ended); weir connects again and goes on.
    server.restart();
    let db = crate::common::postgres::Database::connect(db.port, &db.name);
    db.execute("INSERT INTO orders SELECT g, g FROM generate_series(51, 100) g");
    let out = kafka().wait_read_committed(&topic, 1, 100, std::time::Duration::from_secs(90));
    assert!(weir.running(), "weir gave up; log:\n{}", weir.log());
    assert!(
        weir.log().contains("connecting again"),
        "log:\n{}",
        weir.log()
    );
    assert_eq!(weir.stop(), Some(0), "log:\n{}", weir.log());
    let out = if out.len() == 100 {
        out
    } else {
        kafka().read_committed(&topic, 1)
    };
    let mut ids: Vec<i64> = out
        .iter()
        .map(|o| {
            serde_json::from_str::<Value>(o.value.as_deref().unwrap()).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=100).collect::<Vec<_>>(), "every row exactly once");
}

#[test]
fn a_server_without_logical_wal_is_named_with_the_fix() {
    use crate::common::postgres::Dedicated;
    let server = Dedicated::start(25435, &[("PG_WAL_LEVEL", "replica")]);
    let db = server.server.database("cdc_wal_level");
    db.execute("CREATE TABLE t (id int PRIMARY KEY)");
    let settings = Settings::new(&db.source(&["t"], "p")).unwrap();
    let message = match db.runtime.block_on(Capture::start(settings, 0)) {
        Ok(_) => panic!("started"),
        Err(e) => e.to_string(),
    };
    assert!(
        message.contains("wal_level")
            && message.contains("`replica`")
            && message.contains("wal_level = logical"),
        "{message}"
    );
}

#[test]
fn a_column_added_while_streaming_shows_from_the_next_change_and_idle_time_beats() {
    let db = postgres().database("cdc_schema");
    db.execute("CREATE TABLE t (id int PRIMARY KEY, a text)");
    let mut source = db.source(&["t"], "p");
    source.heartbeat = std::time::Duration::from_millis(300);
    let mut capture = db
        .runtime
        .block_on(Capture::start(Settings::new(&source).unwrap(), 0))
        .unwrap();
    snapshot(&db, &mut capture);
    db.execute("INSERT INTO t VALUES (1, 'x')");
    db.execute("ALTER TABLE t ADD COLUMN b int DEFAULT 7; INSERT INTO t VALUES (2, 'y', 8)");
    db.execute("ALTER TABLE t DROP COLUMN a; UPDATE t SET b = 9 WHERE id = 1");
    let after = |t: weir::postgres::Transaction| value(&t.changes[0])["after"].clone();
    assert_eq!(
        after(transaction(&db, &mut capture)),
        json!({"id": 1, "a": "x"})
    );
    assert_eq!(
        after(transaction(&db, &mut capture)),
        json!({"id": 2, "a": "y", "b": 8})
    );
    assert_eq!(
        after(transaction(&db, &mut capture)),
        json!({"id": 1, "b": 9})
    );
    // Nothing happens: a heartbeat comes back, past the last change.
    match next(&db, &mut capture) {
        Captured::Heartbeat { lsn } => assert!(lsn > 0),
        other => panic!("{other:?}"),
    }
    db.runtime.block_on(capture.close());
}

#[test]
fn writes_during_a_large_snapshot_come_once_either_in_it_or_after_it() {
    const ROWS: i64 = 5000;
    let db = postgres().database("cdc_big_snapshot");
    db.execute(&format!(
        "CREATE TABLE t (id int PRIMARY KEY, v int); \
         CREATE TABLE nokey (v int); \
         INSERT INTO t SELECT g, 0 FROM generate_series(1, {ROWS}) g; \
         INSERT INTO nokey VALUES (1)"
    ));
    let mut capture = start(&db, &["t", "nokey"]);
    // The slot and its snapshot exist; these commit while the snapshot is still to be read.
    db.execute(&format!(
        "UPDATE t SET v = 1 WHERE id % 2 = 0; DELETE FROM t WHERE id = 1; \
         INSERT INTO t VALUES ({}, 1)",
        ROWS + 1
    ));
    let rows = snapshot(&db, &mut capture);
    let (keyed, unkeyed): (Vec<&Change>, Vec<&Change>) =
        rows.iter().partition(|c| c.topic.ends_with(".t"));
    // The snapshot is the tables as they were when the slot was made: none of those writes.
    assert_eq!(keyed.len(), ROWS as usize);
    assert!(keyed.iter().all(|c| value(c)["after"]["v"] == 0));
    // A table without a primary key: no record key.
    assert_eq!(unkeyed.len(), 1);
    assert_eq!(unkeyed[0].key, None);
    // And the stream has exactly those writes, once.
    let t = transaction(&db, &mut capture);
    let ops: Vec<&str> = t
        .changes
        .iter()
        .map(|c| match &c.value {
            Some(_) => match value(c)["op"].as_str().unwrap() {
                "u" => "u",
                "d" => "d",
                "c" => "c",
                other => panic!("op {other}"),
            },
            None => "tombstone",
        })
        .collect();
    assert_eq!(ops.len(), ROWS as usize / 2 + 3);
    assert_eq!(ops.iter().filter(|o| **o == "u").count(), ROWS as usize / 2);
    assert_eq!(ops[ops.len() - 3..], ["d", "tombstone", "c"]);
    db.runtime.block_on(capture.close());
}

#[test]
fn the_cdc_demo_ends_with_kafka_totals_equal_to_the_database() {
    // scripts/demo-cdc.sh: its own database and broker (ports of their own), an application
    // writing for a few seconds, two pipelines, and its own check against the database.
    crate::common::postgres::postgres();
    let out = std::process::Command::new(crate::common::root().join("scripts/demo-cdc.sh"))
        .env("DEMO_SECONDS", "4")
        .env("DEMO_SKIP_BUILD", "1")
        .env("WEIR_BIN", crate::common::weir_bin())
        .output()
        .expect("run scripts/demo-cdc.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("they match"), "{stdout}{stderr}");
    // Four customers, each with paid orders, in both tables.
    assert!(stdout.matches("  alice ").count() == 2, "{stdout}");
}
