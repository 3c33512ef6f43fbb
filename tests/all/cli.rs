//! The `weir` command line end to end: the real binary, run as a user would run it, against the
//! real components, with every output compared record by record with what it should be.

use crate::common;
use std::{
    ffi::OsStr,
    fmt,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Running weir
// ---------------------------------------------------------------------------------------------

/// The target directory of this workspace: `$CARGO_TARGET_DIR` if set, else `target/`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => common::root().join(dir),
        None => common::root().join("target"),
    }
}

/// What one run of a command gave.
struct Run {
    command: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "\n$ {}\nexit code: {:?}\n--- stdout ---\n{}--- stderr ---\n{}--------------",
            self.command, self.code, self.stdout, self.stderr
        )
    }
}

/// Counts from the `weir test: N in, N out, N filtered, N errors …` summary line.
#[derive(Debug, PartialEq, Eq)]
struct Counts {
    input: u64,
    output: u64,
    filtered: u64,
    errors: u64,
}

fn counts(input: u64, output: u64, filtered: u64, errors: u64) -> Counts {
    Counts {
        input,
        output,
        filtered,
        errors,
    }
}

impl Run {
    #[track_caller]
    fn assert_ok(&self) -> &Self {
        assert_eq!(self.code, Some(0), "expected success:{self}");
        self
    }

    /// A clean failure: exit code 1, not a crash (a Rust panic exits with 101, a signal with none).
    #[track_caller]
    fn assert_failed(&self) -> &Self {
        assert_eq!(
            self.code,
            Some(1),
            "expected a clean failure (exit code 1):{self}"
        );
        self
    }

    fn stdout_lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    /// stdout exactly, line by line.
    #[track_caller]
    fn assert_lines(&self, expected: &[&str]) -> &Self {
        assert_eq!(self.stdout_lines(), expected, "stdout lines differ:{self}");
        self
    }

    /// stdout as one JSON document per line, compared record by record with `expected`.
    #[track_caller]
    fn assert_records(&self, expected: &[Value]) -> &Self {
        let got: Vec<Value> = self
            .stdout
            .lines()
            .enumerate()
            .map(|(i, line)| {
                serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!("output line {} is not JSON ({e}): {line:?}{self}", i + 1)
                })
            })
            .collect();
        for (i, (got, want)) in got.iter().zip(expected).enumerate() {
            assert_eq!(got, want, "output record {} differs:{self}", i + 1);
        }
        assert_eq!(
            got.len(),
            expected.len(),
            "wrong number of output records:{self}"
        );
        self
    }

    /// The counts of the summary line on stderr.
    #[track_caller]
    fn counts(&self) -> Counts {
        let line = self
            .stderr
            .lines()
            .find(|l| l.starts_with("weir test: "))
            .unwrap_or_else(|| panic!("no `weir test:` summary line on stderr:{self}"));
        let words: Vec<&str> = line.split_whitespace().collect();
        let number = |at: usize, label: &str| -> u64 {
            assert_eq!(
                words.get(at + 1).map(|w| w.trim_end_matches(',')),
                Some(label),
                "summary line {line:?}"
            );
            words[at]
                .parse()
                .unwrap_or_else(|_| panic!("summary line {line:?}"))
        };
        Counts {
            input: number(2, "in"),
            output: number(4, "out"),
            filtered: number(6, "filtered"),
            errors: number(8, "errors"),
        }
    }

    #[track_caller]
    fn assert_counts(&self, expected: Counts) -> &Self {
        assert_eq!(self.counts(), expected, "summary counts differ:{self}");
        self
    }

    /// The `error: …` lines weir wrote to stderr (log lines of the tracing subscriber excluded).
    fn errors(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect()
    }

    /// stderr has a line that starts with `prefix`.
    #[track_caller]
    fn assert_error_line(&self, prefix: &str) -> &Self {
        assert!(
            self.stderr.lines().any(|l| l.starts_with(prefix)),
            "no stderr line starts with {prefix:?}:{self}"
        );
        self
    }

    /// stdout contains every one of `parts`.
    #[track_caller]
    fn assert_stdout_has(&self, parts: &[&str]) -> &Self {
        for part in parts {
            assert!(self.stdout.contains(part), "stdout lacks {part:?}:{self}");
        }
        self
    }

    /// stderr contains every one of `parts`.
    #[track_caller]
    fn assert_stderr_has(&self, parts: &[&str]) -> &Self {
        for part in parts {
            assert!(self.stderr.contains(part), "stderr lacks {part:?}:{self}");
        }
        self
    }
}

/// Run `weir ARGS…` in `cwd` (the package directory if none) with `envs` and `stdin`.
fn run_in(
    cwd: Option<&Path>,
    args: &[&OsStr],
    envs: &[(&str, &OsStr)],
    stdin: Option<&str>,
) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir"));
    cmd.args(args)
        // Compiled components are cached between the tests' many runs, inside the target dir.
        .env("WEIR_CACHE_DIR", target_dir().join("weir-cli-test-cache"))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in envs {
        cmd.env(key, value);
    }
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let command = std::iter::once(OsStr::new("weir"))
        .chain(args.iter().copied())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = cmd.spawn().expect("weir starts");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("weir runs");
    Run {
        command,
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn weir<S: AsRef<OsStr>>(args: &[S]) -> Run {
    let args: Vec<&OsStr> = args.iter().map(AsRef::as_ref).collect();
    run_in(None, &args, &[], None)
}

/// `weir test TARGET --input INPUT [--config CONFIG] --format FORMAT`.
fn weir_test(target: &Path, input: &Path, config: Option<&Value>, format: &str) -> Run {
    let mut args: Vec<String> = vec![
        "test".into(),
        target.display().to_string(),
        "--input".into(),
        input.display().to_string(),
        "--format".into(),
        format.into(),
    ];
    if let Some(config) = config {
        args.extend(["--config".into(), config.to_string()]);
    }
    weir(&args)
}

/// A JSONL input file in a scratch directory, removed when dropped.
struct Input {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

/// An input file of `lines`, written as they are.
fn jsonl_text(lines: &[&str]) -> Input {
    let dir = common::scratch();
    let path = dir.path().join("input.jsonl");
    std::fs::write(
        &path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    Input { _dir: dir, path }
}

/// An input file of one compact JSON document per line.
fn jsonl(records: &[Value]) -> Input {
    let lines: Vec<String> = records.iter().map(Value::to_string).collect();
    jsonl_text(&lines.iter().map(String::as_str).collect::<Vec<_>>())
}

/// One `--format envelope` line.
fn envelope(key: Value, value: Value, headers: Value, timestamp: i64) -> Value {
    json!({"key": key, "value": value, "headers": headers, "timestamp": timestamp})
}

fn plugin(name: &str) -> PathBuf {
    common::component(name)
}

/// Write `text` to `dir/name`, creating parent directories, and return the path.
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    path
}

// ---------------------------------------------------------------------------------------------
// Debezium change events
// ---------------------------------------------------------------------------------------------

/// The `source` block of a Debezium Postgres change event for table `table`.
fn source(table: &str, snapshot: bool) -> Value {
    json!({
        "version": "2.7.3.Final",
        "connector": "postgresql",
        "name": "shop",
        "ts_ms": 1_700_000_000_100_i64,
        "snapshot": if snapshot { "true" } else { "false" },
        "db": "shop",
        "sequence": "[\"24023128\",\"24023128\"]",
        "schema": "public",
        "table": table,
        "txId": 777,
        "lsn": 24_023_128,
        "xmin": null
    })
}

/// A Debezium change event value (JSON converter, schemas disabled).
fn event(table: &str, op: &str, before: Value, after: Value) -> Value {
    json!({
        "before": before,
        "after": after,
        "source": source(table, op == "r"),
        "op": op,
        "ts_ms": 1_700_000_000_200_i64,
        "transaction": null
    })
}

/// The same event as the JSON converter writes it with `schemas.enable=true`.
fn wrapped(payload: Value) -> Value {
    let row = json!({"type": "struct", "optional": true, "name": "shop.public.Value", "fields": [
        {"type": "int32", "optional": false, "field": "id"},
        {"type": "string", "optional": true, "field": "email"}
    ]});
    json!({
        "schema": {
            "type": "struct",
            "name": "shop.public.Envelope",
            "optional": false,
            "version": 2,
            "fields": [
                {"field": "before", "type": row["type"], "optional": true, "name": row["name"], "fields": row["fields"]},
                {"field": "after", "type": row["type"], "optional": true, "name": row["name"], "fields": row["fields"]},
                {"type": "struct", "optional": false, "field": "source", "name": "io.debezium.connector.postgresql.Source", "fields": []},
                {"type": "string", "optional": false, "field": "op"},
                {"type": "int64", "optional": true, "field": "ts_ms"}
            ]
        },
        "payload": payload
    })
}

// SHA-256 digests, computed with `printf '…' | sha256sum`.
const SHA_A_B_C: &str = "d648b243a3e817eaa3309e00e183483f2867baadf522099f0c2121770536b25a"; // a@b.c
const SHA_42: &str = "73475cb40a568e8da8a045ced110137e159f890ac4da883b6b17dc651b3a8049"; // 42
const SHA_CARD_OBJECT: &str = "ce7f817e8cec1711a1095a870f7e17f874b2e7d9c5a25a0e725e3cf9d9d42c2f"; // {"exp":"12/30","number":"4111"}
const SHA_X: &str = "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"; // x
const SHA_LIST: &str = "49a64717d5d4cb19952e6eac2946415cf6879adacf9908e7d872332d32c6e684"; // [1,2]
const SHA_NONE: &str = "140bedbf9c3f6d56a9846d2ba7088798683f4da0c248231336e6a05679e4fdfe"; // none
const SHA_TRUE: &str = "b5bea41b6c623f7c09f1bf24dcae58ebab3c0cdd90ad966bc43a45b44867e12b"; // true
const SHA_ANN: &str = "71d4f55f72fa128dfb468a1a3901507c804b74316488744d769d7f4b16696476"; // ann@example.com
const SHA_BOB: &str = "5ff860bf1190596c7188ab851db691f0f3169c453936e9e1eba2f9a47f7a0018"; // bob@example.com
const SHA_CAROL: &str = "e0d47ca1bc1eb62e650fc1fd660a9bfbf7cba8dc6337d81df7ea9aa9071a24a5"; // carol@example.com
const SHA_VISA: &str = "9bbef19476623ca56c17da75fd57734dbf82530686043a6e491c6d71befe8f6e"; // 4111111111111111
const SHA_MASTERCARD: &str = "dd1ed74bd626c6fa86bdffd25029a46c9d585e0429cc9f00a8c94e90f837d993"; // 5500000000000004
const SHA_AMEX: &str = "b2946d3f150288d72723a064844efcca5511a93bd5199709af47329c6e7b8330"; // 340000000000009

// ---------------------------------------------------------------------------------------------
// 1. One plugin with `weir test`
// ---------------------------------------------------------------------------------------------

#[test]
fn json_filter_keeps_matching_lines_byte_for_byte() {
    let input = jsonl_text(&[
        r#"{"id":1,"amount":150,"country":"DE"}"#,
        r#"{"id":2,"amount":5,"country":"DE"}"#,
        r#"   {"id": 3, "amount": 101.5, "country": "FR"}   "#,
        "",
        r#"{"id":4,"country":"US"}"#,
        "   ",
        r#"{"id":5,"amount":"200","country":"US"}"#,
        r#"{"id":6,"amount":1000,"country":"JP"}"#,
    ]);
    let all = json!({"where": [
        {"path": "/amount", "op": "gt", "value": 100},
        {"path": "/country", "op": "in", "value": ["DE", "FR", "US"]}
    ]});
    weir_test(&plugin("json-filter"), &input.path, Some(&all), "value")
        .assert_ok()
        // A kept record is passed on unchanged (only the line's outer whitespace is not part of it).
        .assert_lines(&[
            r#"{"id":1,"amount":150,"country":"DE"}"#,
            r#"{"id": 3, "amount": 101.5, "country": "FR"}"#,
        ])
        // Blank lines are not records; a string "200" does not compare with the number 100.
        .assert_counts(counts(6, 2, 4, 0));

    let any = json!({"match": "any", "where": [
        {"path": "/country", "op": "regex", "value": "^(J|U)"},
        {"path": "/amount", "op": "ge", "value": 1000}
    ]});
    let run = weir_test(&plugin("json-filter"), &input.path, Some(&any), "value");
    run.assert_ok()
        .assert_lines(&[
            r#"{"id":4,"country":"US"}"#,
            r#"{"id":5,"amount":"200","country":"US"}"#,
            r#"{"id":6,"amount":1000,"country":"JP"}"#,
        ])
        .assert_counts(counts(6, 3, 3, 0));
    assert!(run.errors().is_empty(), "{run}");
}

#[test]
fn json_filter_reads_stdin() {
    let cfg = json!({"where": [{"path": "/ok", "op": "eq", "value": true}]}).to_string();
    let filter = plugin("json-filter");
    let args = [
        "test",
        filter.to_str().unwrap(),
        "--input",
        "-",
        "--config",
        &cfg,
    ];
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    let run = run_in(
        None,
        &args,
        &[],
        Some("{\"ok\":true,\"n\":1}\n{\"ok\":false}\n{oops\n{\"ok\":true,\"n\":4}\n"),
    );
    run.assert_failed()
        .assert_lines(&[r#"{"ok":true,"n":1}"#, r#"{"ok":true,"n":4}"#])
        .assert_error_line("error: stdin:3: not JSON")
        .assert_counts(counts(4, 2, 1, 1));
}

#[test]
fn mask_pii_redacts_and_hashes() {
    let input = jsonl(&[
        json!({"email": "a@b.c", "name": "Ann", "card": {"number": "4111", "exp": "12/30"}, "n": 42}),
        json!({"name": "Bob", "card": "none"}),
        json!({"users": [{"email": "x"}, {"email": "a@b.c"}], "a/b": [1, 2], "flag": true}),
        json!("just a string"),
    ]);
    let redact =
        json!({"fields": ["/email", "/card/number", "/n", "/users/1/email", "/a~1b", "/flag"]});
    weir_test(&plugin("mask-pii"), &input.path, Some(&redact), "value")
        .assert_ok()
        .assert_records(&[
            json!({"email": "[REDACTED]", "name": "Ann", "card": {"number": "[REDACTED]", "exp": "12/30"}, "n": "[REDACTED]"}),
            // Fields the record lacks are left alone, even where a parent is not an object.
            json!({"name": "Bob", "card": "none"}),
            json!({"users": [{"email": "x"}, {"email": "[REDACTED]"}], "a/b": "[REDACTED]", "flag": "[REDACTED]"}),
            json!("just a string"),
        ])
        .assert_counts(counts(4, 4, 0, 0));

    // Hash: a string's SHA-256, or the SHA-256 of any other value's compact JSON text.
    let hash = json!({"mode": "hash", "fields": ["/email", "/card", "/n", "/users/0/email", "/a~1b", "/flag"]});
    weir_test(&plugin("mask-pii"), &input.path, Some(&hash), "value")
        .assert_ok()
        .assert_records(&[
            json!({"email": SHA_A_B_C, "name": "Ann", "card": SHA_CARD_OBJECT, "n": SHA_42}),
            json!({"name": "Bob", "card": SHA_NONE}),
            json!({"users": [{"email": SHA_X}, {"email": "a@b.c"}], "a/b": SHA_LIST, "flag": SHA_TRUE}),
            json!("just a string"),
        ])
        .assert_counts(counts(4, 4, 0, 0));
}

#[test]
fn explode_gives_one_record_per_element() {
    let cfg = json!({"path": "/order/items", "as": "item"});
    let input = jsonl(&[
        json!({"id": 1, "order": {"no": "A1", "items": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 1}, "gift"]}}),
        json!({"id": 2, "order": {"no": "A2", "items": []}}),
        json!({"id": 3, "order": {"no": "A3", "items": [{"sku": "c", "qty": 5}]}, "item": "replaced"}),
    ]);
    weir_test(&plugin("explode"), &input.path, Some(&cfg), "value")
        .assert_ok()
        .assert_records(&[
            json!({"id": 1, "order": {"no": "A1"}, "item": {"sku": "a", "qty": 2}}),
            json!({"id": 1, "order": {"no": "A1"}, "item": {"sku": "b", "qty": 1}}),
            json!({"id": 1, "order": {"no": "A1"}, "item": "gift"}),
            json!({"id": 3, "order": {"no": "A3"}, "item": {"sku": "c", "qty": 5}}),
        ])
        // The empty array gives nothing: that input counts as filtered.
        .assert_counts(counts(3, 4, 1, 0));

    // A record without the array is a record error; the others still explode.
    let input = jsonl(&[
        json!({"id": 1, "order": {"items": [1, 2]}}),
        json!({"id": 2, "order": {}}),
        json!({"id": 3, "order": {"items": "many"}}),
        json!({"id": 4, "order": {"items": [3]}}),
    ]);
    let file = input.path.display();
    weir_test(&plugin("explode"), &input.path, Some(&cfg), "value")
        .assert_failed()
        .assert_records(&[
            json!({"id": 1, "order": {}, "item": 1}),
            json!({"id": 1, "order": {}, "item": 2}),
            json!({"id": 4, "order": {}, "item": 3}),
        ])
        .assert_error_line(&format!(
            "error: {file}:2: stage `explode`: plugin `explode` plugin-error: no array at `/order/items`"
        ))
        .assert_error_line(&format!(
            "error: {file}:3: stage `explode`: plugin `explode` plugin-error: `/order/items` is a string, not an array"
        ))
        .assert_counts(counts(4, 3, 0, 2));
}

/// Change events of `customers` as `--format envelope` lines: create, update (schema-wrapped),
/// snapshot read, delete (schema-wrapped), Debezium's tombstone after the delete, a truncate.
fn customer_changes() -> Vec<Value> {
    let key = |id: i64| json!({"id": id});
    let headers = json!({"source": "pg"});
    let row = |id: i64, email: &str| json!({"id": id, "first_name": "Sally", "email": email});
    vec![
        envelope(
            key(1001),
            event(
                "customers",
                "c",
                Value::Null,
                row(1001, "sally@example.com"),
            ),
            headers.clone(),
            1_000,
        ),
        envelope(
            key(1001),
            wrapped(event(
                "customers",
                "u",
                row(1001, "sally@example.com"),
                row(1001, "sally.t@example.com"),
            )),
            headers.clone(),
            2_000,
        ),
        envelope(
            key(1002),
            event(
                "customers",
                "r",
                Value::Null,
                row(1002, "george@example.com"),
            ),
            headers.clone(),
            3_000,
        ),
        envelope(
            key(1001),
            wrapped(event(
                "customers",
                "d",
                row(1001, "sally.t@example.com"),
                Value::Null,
            )),
            headers.clone(),
            4_000,
        ),
        envelope(key(1001), Value::Null, json!({}), 4_001),
        envelope(
            Value::Null,
            json!({"source": source("customers", false), "op": "t", "ts_ms": 5}),
            headers,
            5_000,
        ),
    ]
}

#[test]
fn cdc_unwrap_every_op_and_delete_mode() {
    let input = jsonl(&customer_changes());
    let cdc = plugin("cdc-unwrap");
    // The key as it comes out: the envelope's JSON key is the record key's text.
    let key = |id: i64| json!(format!("{{\"id\":{id}}}"));
    let pg = json!({"source": "pg"});
    let row = |id: i64, email: &str| json!({"id": id, "first_name": "Sally", "email": email});

    // The create, update and read come out as rows in every delete mode.
    let upserts = vec![
        envelope(key(1001), row(1001, "sally@example.com"), pg.clone(), 1_000),
        envelope(
            key(1001),
            row(1001, "sally.t@example.com"),
            pg.clone(),
            2_000,
        ),
        envelope(
            key(1002),
            row(1002, "george@example.com"),
            pg.clone(),
            3_000,
        ),
    ];

    // Default: a delete becomes a tombstone with the key; Debezium's own tombstone passes through.
    let mut expected = upserts.clone();
    expected.push(envelope(key(1001), Value::Null, pg.clone(), 4_000));
    expected.push(envelope(key(1001), Value::Null, json!({}), 4_001));
    weir_test(&cdc, &input.path, None, "envelope")
        .assert_ok()
        .assert_records(&expected)
        // The truncate gives nothing.
        .assert_counts(counts(6, 5, 1, 0));

    // Drop: deletes and tombstones are gone.
    let drop = json!({"delete": "drop", "drop_tombstones": true});
    weir_test(&cdc, &input.path, Some(&drop), "envelope")
        .assert_ok()
        .assert_records(&upserts)
        .assert_counts(counts(6, 3, 3, 0));

    // Rewrite: the delete gives `before` marked deleted, every row carries `__deleted`, and
    // add_fields copies envelope fields as Debezium resolves them (`op` and `ts_ms` from the
    // envelope, `table` from `source`, or a dotted path); `transaction.id`, which these events
    // lack (`transaction` is null), is left out.
    let rewrite = json!({"delete": "rewrite", "add_fields": ["op", "table", "source.ts_ms", "ts_ms", "transaction.id"]});
    let marked = |id: i64, email: &str, op: &str, deleted: &str| {
        let mut row = row(id, email);
        let extra = json!({
            "__deleted": deleted, "__op": op, "__table": "customers",
            "__source_ts_ms": 1_700_000_000_100_i64, "__ts_ms": 1_700_000_000_200_i64
        });
        row.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        row
    };
    weir_test(&cdc, &input.path, Some(&rewrite), "envelope")
        .assert_ok()
        .assert_records(&[
            envelope(
                key(1001),
                marked(1001, "sally@example.com", "c", "false"),
                pg.clone(),
                1_000,
            ),
            envelope(
                key(1001),
                marked(1001, "sally.t@example.com", "u", "false"),
                pg.clone(),
                2_000,
            ),
            envelope(
                key(1002),
                marked(1002, "george@example.com", "r", "false"),
                pg.clone(),
                3_000,
            ),
            envelope(
                key(1001),
                marked(1001, "sally.t@example.com", "d", "true"),
                pg.clone(),
                4_000,
            ),
            envelope(key(1001), Value::Null, json!({}), 4_001),
        ])
        .assert_counts(counts(6, 5, 1, 0));

    // Value format: the same events as bare values, with and without the schema wrapper; a
    // tombstone is written as `null`.
    let values: Vec<Value> = customer_changes()[..4]
        .iter()
        .map(|e| e["value"].clone())
        .collect();
    let input = jsonl(&values);
    let add_op = json!({"add_fields": ["op", "db"]});
    let with_op = |id: i64, email: &str, op: &str| json!({"id": id, "first_name": "Sally", "email": email, "__op": op, "__db": "shop"});
    weir_test(&cdc, &input.path, Some(&add_op), "value")
        .assert_ok()
        .assert_records(&[
            with_op(1001, "sally@example.com", "c"),
            with_op(1001, "sally.t@example.com", "u"),
            with_op(1002, "george@example.com", "r"),
            Value::Null,
        ])
        .assert_counts(counts(4, 4, 0, 0));
}

#[test]
fn enrich_sets_looks_up_and_derives() {
    let cfg = json!({
        "set": {"/pipeline": "weir", "/meta/version": 2},
        "lookup": [{"from": "/country", "into": "/region", "table": {"DE": "eu", "FR": "eu", "US": "na"}, "default": "other"},
                   {"from": "/status", "into": "/status_text", "table": {"200": "ok", "404": "missing"}}],
        "derive": [{"into": "/amount_cents", "from": "/amount", "multiply": 100}]
    });
    let input = jsonl(&[
        json!({"id": 1, "country": "DE", "amount": 12.5, "status": 200}),
        json!({"id": 2, "country": "JP", "amount": 0.125, "status": "404"}),
        json!({"id": 3, "meta": {"keep": true}, "status": 500}),
        json!({"id": 4, "country": "US", "amount": "12"}),
    ]);
    weir_test(&plugin("enrich"), &input.path, Some(&cfg), "value")
        .assert_ok()
        .assert_records(&[
            json!({"id": 1, "country": "DE", "amount": 12.5, "status": 200, "pipeline": "weir", "meta": {"version": 2},
                   "region": "eu", "status_text": "ok", "amount_cents": 1250}),
            json!({"id": 2, "country": "JP", "amount": 0.125, "status": "404", "pipeline": "weir", "meta": {"version": 2},
                   "region": "other", "status_text": "missing", "amount_cents": 12.5}),
            json!({"id": 3, "meta": {"keep": true, "version": 2}, "status": 500, "pipeline": "weir", "region": "other"}),
            json!({"id": 4, "country": "US", "amount": "12", "pipeline": "weir", "meta": {"version": 2}, "region": "na"}),
        ])
        .assert_counts(counts(4, 4, 0, 0));

    // Setting through a scalar is a record error naming the pointer.
    let input = jsonl(&[json!({"meta": "text"}), json!({"id": 2})]);
    weir_test(&plugin("enrich"), &input.path, Some(&cfg), "value")
        .assert_failed()
        .assert_records(&[json!({"id": 2, "pipeline": "weir", "meta": {"version": 2}, "region": "other"})])
        .assert_error_line(&format!(
            "error: {}:1: stage `enrich`: plugin `enrich` plugin-error: cannot set `/meta/version`: /meta is a string",
            input.path.display()
        ))
        .assert_counts(counts(2, 1, 0, 1));
}

// ---------------------------------------------------------------------------------------------
// 3. Pipelines
// ---------------------------------------------------------------------------------------------

/// Debezium events of `orders` (value format): two inserts, an update (schema-wrapped) that
/// lifts an order over the threshold, a snapshot read, a delete and its tombstone.
fn order_changes() -> Vec<Value> {
    let order = |id: i64, email: &str, card: &str, amount: i64| json!({"id": id, "email": email, "card": card, "amount": amount, "status": "new"});
    vec![
        event(
            "orders",
            "c",
            Value::Null,
            order(1, "ann@example.com", "4111111111111111", 250),
        ),
        event(
            "orders",
            "c",
            Value::Null,
            order(2, "bob@example.com", "5500000000000004", 40),
        ),
        wrapped(event(
            "orders",
            "u",
            order(2, "bob@example.com", "5500000000000004", 40),
            order(2, "bob@example.com", "5500000000000004", 180),
        )),
        event(
            "orders",
            "r",
            Value::Null,
            order(3, "carol@example.com", "340000000000009", 101),
        ),
        event(
            "orders",
            "d",
            order(1, "ann@example.com", "4111111111111111", 250),
            Value::Null,
        ),
        Value::Null,
    ]
}

/// What the orders pipeline makes of [`order_changes`].
fn masked_orders() -> Vec<Value> {
    let masked = |id: i64, email: &str, card: &str, amount: i64, op: &str| json!({"id": id, "email": email, "card": card, "amount": amount, "status": "new", "__op": op, "__table": "orders"});
    vec![
        masked(1, SHA_ANN, SHA_VISA, 250, "c"),
        masked(2, SHA_BOB, SHA_MASTERCARD, 180, "u"),
        masked(3, SHA_CAROL, SHA_AMEX, 101, "r"),
    ]
}

/// The three-stage orders pipeline, with each plugin path as `path(plugin name)` gives it.
fn orders_pipeline(path: impl Fn(&str) -> String) -> String {
    format!(
        r#"# Debezium order changes to masked rows of big orders.
[[stage]]
name = "unwrap"
plugin = "{}"
config = {{ delete = "drop", drop_tombstones = true, add_fields = ["op", "table"] }}

[[stage]]
name = "big"
plugin = "{}"
config = {{ where = [{{ path = "/amount", op = "gt", value = 100 }}] }}

[[stage]]
name = "mask"
plugin = "{}"
config = {{ fields = ["/email", "/card"], mode = "hash" }}
"#,
        path("cdc-unwrap"),
        path("json-filter"),
        path("mask-pii")
    )
}

#[test]
fn pipeline_with_absolute_plugin_paths_runs_its_chain() {
    let dir = common::scratch();
    let toml = write(
        dir.path(),
        "orders.toml",
        &orders_pipeline(|p| plugin(p).display().to_string()),
    );
    let input = jsonl(&order_changes());
    weir_test(&toml, &input.path, None, "value")
        .assert_ok()
        .assert_records(&masked_orders())
        // The small insert, the delete and the tombstone give nothing.
        .assert_counts(counts(6, 3, 3, 0));

    // A pipeline configures its stages itself.
    let run = weir(&[
        OsStr::new("test"),
        toml.as_os_str(),
        OsStr::new("--input"),
        input.path.as_os_str(),
        OsStr::new("--config"),
        OsStr::new("{}"),
    ]);
    run.assert_failed()
        .assert_error_line(
            "error: --config is for a single plugin; a pipeline file configures each stage",
        )
        .assert_lines(&[]);
}

#[test]
fn pipeline_plugin_paths_resolve_against_the_pipeline_file() {
    let dir = common::scratch();
    // The components live beside and above the pipeline file, not in any working directory.
    for name in ["cdc-unwrap", "json-filter"] {
        let to = dir
            .path()
            .join("pipelines/plugins")
            .join(format!("{name}.wasm"));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(plugin(name), to).unwrap();
    }
    std::fs::create_dir_all(dir.path().join("shared")).unwrap();
    std::fs::copy(plugin("mask-pii"), dir.path().join("shared/mask-pii.wasm")).unwrap();
    let text = orders_pipeline(|p| match p {
        "mask-pii" => "../shared/mask-pii.wasm".into(),
        other => format!("plugins/{other}.wasm"),
    });
    let toml = write(dir.path(), "pipelines/orders.toml", &text);
    let input = jsonl(&order_changes());
    let elsewhere = common::scratch();

    // An absolute pipeline path, run from an unrelated directory.
    let args = |pipeline: &Path| -> Vec<std::ffi::OsString> {
        vec![
            "test".into(),
            pipeline.into(),
            "--input".into(),
            input.path.clone().into(),
        ]
    };
    let abs = args(&toml);
    let abs: Vec<&OsStr> = abs.iter().map(|a| a.as_os_str()).collect();
    run_in(Some(elsewhere.path()), &abs, &[], None)
        .assert_ok()
        .assert_records(&masked_orders())
        .assert_counts(counts(6, 3, 3, 0));

    // A relative pipeline path: its plugins resolve against it, relative to the working directory.
    let rel = args(Path::new("pipelines/orders.toml"));
    let rel: Vec<&OsStr> = rel.iter().map(|a| a.as_os_str()).collect();
    run_in(Some(dir.path()), &rel, &[], None)
        .assert_ok()
        .assert_records(&masked_orders())
        .assert_counts(counts(6, 3, 3, 0));

    // `weir check` loads the same files.
    let check = run_in(
        Some(dir.path()),
        &[OsStr::new("check"), OsStr::new("pipelines/orders.toml")],
        &[],
        None,
    );
    check.assert_ok();
    let lines = check.stdout_lines();
    assert_eq!(lines[0], "pipelines/orders.toml: ok, 3 stages", "{check}");
    assert!(
        lines[1].starts_with("  unwrap: transform pipelines/plugins/cdc-unwrap.wasm (sha256:"),
        "{check}"
    );
    assert!(
        lines[2].starts_with("  big: filter pipelines/plugins/json-filter.wasm (sha256:"),
        "{check}"
    );
    assert!(
        lines[3].starts_with("  mask: transform pipelines/../shared/mask-pii.wasm (sha256:"),
        "{check}"
    );
}

#[test]
fn failures_deep_in_a_pipeline_name_the_input_line_stage_and_kind() {
    let dir = common::scratch();
    let text = format!(
        r#"[[stage]]
name = "unwrap"
plugin = "{}"

[[stage]]
name = "police"
plugin = "{}"
config = {{ tag = "checked" }}
limits = {{ timeout_ms = 400, memory_mb = 16 }}
"#,
        plugin("cdc-unwrap").display(),
        plugin("misbehave").display()
    );
    let toml = write(dir.path(), "p.toml", &text);
    let row = |v: Value| event("t", "c", Value::Null, v);
    let input = jsonl(&[
        row(json!({"id": 1})),
        row(json!({"id": 2, "fail": "late"})),
        row(json!({"id": 3, "loop": true})),
        row(json!({"id": 4, "panic": true})),
        row(json!({"id": 5, "alloc_mb": 64})),
        row(json!({"id": 6})),
        json!({"op": "x"}),
    ]);
    let file = input.path.display();
    // `seen` counts per key in state: a failed record's write never stands, whatever its kind.
    weir_test(&toml, &input.path, None, "value")
        .assert_failed()
        .assert_records(&[
            json!({"id": 1, "seen": 1, "tag": "checked"}),
            json!({"id": 6, "seen": 2, "tag": "checked"}),
        ])
        .assert_error_line(&format!("error: {file}:2: stage `police`: plugin `police` plugin-error: late"))
        .assert_error_line(&format!(
            "error: {file}:3: stage `police`: plugin `police` timeout: ran past the call time limit of 400ms"
        ))
        .assert_error_line(&format!("error: {file}:4: stage `police`: plugin `police` trap: "))
        .assert_stderr_has(&["asked to panic"])
        .assert_error_line(&format!(
            "error: {file}:5: stage `police`: plugin `police` out-of-memory: tried to grow its memory to"
        ))
        .assert_stderr_has(&["past the limit of 16777216 bytes"])
        .assert_error_line(&format!(
            "error: {file}:7: stage `unwrap`: plugin `unwrap` plugin-error: unknown change event op `x`"
        ))
        .assert_counts(counts(7, 2, 0, 5));
}

// ---------------------------------------------------------------------------------------------
// 4. Bad input
// ---------------------------------------------------------------------------------------------

#[test]
fn a_malformed_line_is_reported_and_the_rest_still_run() {
    let input = jsonl_text(&[
        r#"{"amount":150,"id":1}"#,
        "",
        r#"{"amount":5,"id":2}"#,
        r#"{"amount":300,"id":"#,
        r#"{"amount":999,"id":4}"#,
    ]);
    let cfg = json!({"where": [{"path": "/amount", "op": "gt", "value": 100}]});
    let file = input.path.display();
    let run = weir_test(&plugin("json-filter"), &input.path, Some(&cfg), "value");
    run.assert_failed()
        .assert_lines(&[r#"{"amount":150,"id":1}"#, r#"{"amount":999,"id":4}"#])
        // Line numbers count every line of the file, blank ones too.
        .assert_error_line(&format!("error: {file}:4: not JSON: "))
        .assert_counts(counts(4, 2, 1, 1));
    assert_eq!(run.errors().len(), 1, "{run}");

    // In envelope format, a line that is JSON but not an envelope is as bad.
    let input = jsonl_text(&[
        r#"{"key":"a","value":{"amount":150}}"#,
        r#"{"key":"b","val":{"amount":150}}"#,
        r#"[1,2]"#,
        r#"{"key":"c","value":{"amount":200},"timestamp":"soon"}"#,
        r#"{"key":"d","value":{"amount":200},"headers":{"n":1}}"#,
        r#"{"key":"e","value":{"amount":500},"timestamp":9}"#,
    ]);
    let file = input.path.display();
    weir_test(&plugin("json-filter"), &input.path, Some(&cfg), "envelope")
        .assert_failed()
        .assert_records(&[
            envelope(json!("a"), json!({"amount": 150}), json!({}), 0),
            envelope(json!("e"), json!({"amount": 500}), json!({}), 9),
        ])
        .assert_error_line(&format!("error: {file}:2: unknown envelope field `val`"))
        .assert_error_line(&format!(
            "error: {file}:3: an envelope line must be a JSON object"
        ))
        .assert_error_line(&format!("error: {file}:4: `timestamp` must be an integer"))
        .assert_error_line(&format!("error: {file}:5: header `n` must be a string"))
        .assert_counts(counts(6, 2, 0, 4));
}

#[test]
fn records_a_plugin_fails_on_name_line_stage_and_kind() {
    let input = jsonl(&[
        json!({"id": 1}),
        json!({"fail": "boom"}),
        json!({"id": 3}),
        json!({"panic": true}),
        json!({"id": 5}),
    ]);
    let file = input.path.display();
    let run = weir_test(&plugin("misbehave"), &input.path, None, "value");
    run.assert_failed()
        // Neither the panic's state write nor the returned error's stands.
        .assert_records(&[
            json!({"id": 1, "seen": 1}),
            json!({"id": 3, "seen": 2}),
            json!({"id": 5, "seen": 3}),
        ])
        .assert_error_line(&format!(
            "error: {file}:2: stage `misbehave`: plugin `misbehave` plugin-error: boom"
        ))
        .assert_error_line(&format!(
            "error: {file}:4: stage `misbehave`: plugin `misbehave` trap: "
        ))
        .assert_stderr_has(&["asked to panic", "instance restarts"])
        .assert_counts(counts(5, 3, 0, 2));
    assert_eq!(run.errors().len(), 2, "{run}");
}

#[test]
fn a_config_the_plugin_rejects_is_a_clear_error() {
    let input = jsonl(&[json!({"amount": 1})]);
    let cases = [
        (
            "json-filter",
            json!({"where": [{"path": "/a", "op": "near"}]}),
            "error: plugin `json-filter` was rejected by its init: invalid plugin config: unknown op `near`",
        ),
        (
            "mask-pii",
            json!({"fields": ["email"]}),
            "error: plugin `mask-pii` was rejected by its init: invalid plugin config: field `email` is not a JSON pointer",
        ),
        (
            "cdc-unwrap",
            json!({"delete": "none"}),
            "error: plugin `cdc-unwrap` was rejected by its init: invalid plugin config: ",
        ),
        ("explode", json!({}), "error: plugin `explode` was rejected by its init: invalid plugin config: "),
    ];
    for (name, cfg, expected) in cases {
        let run = weir_test(&plugin(name), &input.path, Some(&cfg), "value");
        run.assert_failed()
            .assert_error_line(expected)
            .assert_lines(&[]);
        assert!(
            !run.stderr.contains("weir test:"),
            "no records run with a rejected config:{run}"
        );
    }
}

#[test]
fn files_that_are_not_plugins_are_clear_errors() {
    let dir = common::scratch();
    let input = jsonl(&[json!({"a": 1})]);
    let garbage = write(dir.path(), "garbage.wasm", "this is not wasm at all");
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let missing = dir.path().join("missing.wasm");
    let cases = [
        (garbage.clone(), format!("error: plugin `garbage`: {} is not a valid wasm component: it does not start with the wasm component header", garbage.display())),
        (core.clone(), format!("error: plugin `core`: {} is not a valid wasm component: it is a core wasm module, not a component", core.display())),
        (missing.clone(), format!("error: plugin `missing`: cannot read {}: ", missing.display())),
        (plugin("count-window"), "error: plugin `count-window`: is a window plugin".to_string()),
    ];
    for (path, expected) in cases {
        weir_test(&path, &input.path, None, "value")
            .assert_failed()
            .assert_error_line(&expected)
            .assert_lines(&[]);
    }

    // A missing input file is named too.
    let nowhere = dir.path().join("nowhere.jsonl");
    weir_test(
        &plugin("json-filter"),
        &nowhere,
        Some(&json!({"where": []})),
        "value",
    )
    .assert_failed()
    .assert_error_line(&format!("error: cannot open input {}: ", nowhere.display()));
}

#[test]
fn a_config_that_is_not_json_is_rejected() {
    let input = jsonl(&[json!({"a": 1})]);
    for config in ["{where", "where = []", ""] {
        let run = weir(&[
            OsStr::new("test"),
            plugin("json-filter").as_os_str(),
            OsStr::new("--input"),
            input.path.as_os_str(),
            OsStr::new("--config"),
            OsStr::new(config),
        ]);
        run.assert_failed()
            .assert_error_line("error: --config is not valid JSON: ")
            .assert_lines(&[]);
    }
}

/// Each error names its cause once: a cause printed twice, or a prefix that stutters, reads as
/// a different error and clutters every log it lands in.
#[test]
fn error_messages_state_each_cause_once() {
    const ENOENT: &str = "No such file or directory";
    let dir = common::scratch();
    let input = jsonl(&[json!({"panic": true})]);
    let missing_plugin = weir_test(&dir.path().join("missing.wasm"), &input.path, None, "value");
    let missing_pipeline = weir(&[
        OsStr::new("check"),
        dir.path().join("missing.toml").as_os_str(),
    ]);
    let trap = weir_test(&plugin("misbehave"), &input.path, None, "value");
    // The record's error, which runs over several lines (the panic message has a line break).
    let trap_error: String = trap
        .stderr
        .lines()
        .skip_while(|l| !l.starts_with("error: "))
        .take_while(|l| !l.starts_with("weir test: "))
        .collect::<Vec<_>>()
        .join("\n");
    let cases = [
        (&missing_plugin, &missing_plugin.stderr, ENOENT),
        (&missing_pipeline, &missing_pipeline.stderr, ENOENT),
        (&trap, &trap_error, "wasm trap"),
        (&trap, &trap_error, "panicked"),
    ];
    let problems: Vec<String> = cases
        .iter()
        .filter(|(_, text, phrase)| text.matches(phrase).count() > 1)
        .map(|(run, text, phrase)| {
            format!(
                "{phrase:?} is said {} times in {text:?}:{run}",
                text.matches(phrase).count()
            )
        })
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

// ---------------------------------------------------------------------------------------------
// 5. weir check
// ---------------------------------------------------------------------------------------------

#[test]
fn check_prints_ok_and_each_stages_kind() {
    let dir = common::scratch();
    let toml = write(
        dir.path(),
        "orders.toml",
        &orders_pipeline(|p| plugin(p).display().to_string()),
    );
    let run = weir(&[OsStr::new("check"), toml.as_os_str()]);
    run.assert_ok();
    let lines = run.stdout_lines();
    assert_eq!(lines.len(), 5, "{run}");
    assert_eq!(
        lines[0],
        format!("{}: ok, 3 stages", toml.display()),
        "{run}"
    );
    assert_eq!(
        lines[4], "  no [source] and [sink]: `weir test` only",
        "{run}"
    );
    for (line, (stage, kind, name)) in lines[1..4].iter().zip([
        ("unwrap", "transform", "cdc-unwrap"),
        ("big", "filter", "json-filter"),
        ("mask", "transform", "mask-pii"),
    ]) {
        let prefix = format!("  {stage}: {kind} {} (sha256:", plugin(name).display());
        let hash = line
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{line:?} is not `{prefix}…)`:{run}"));
        assert!(
            hash.len() == 12
                && hash
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            "{run}"
        );
    }
    assert!(run.errors().is_empty(), "{run}");
}

#[test]
fn check_describes_where_records_come_from_and_go() {
    let example = common::root().join("examples/orders.toml");
    let run = weir(&[OsStr::new("check"), example.as_os_str()]);
    run.assert_ok();
    assert_eq!(
        run.stdout_lines().last().copied(),
        Some(
            "  source: orders.cdc on 127.0.0.1:9092 (group weir-orders), sink: orders.big; \
             errors: dead-letter to orders.dlq; at-least-once, checkpoint every 1s"
        ),
        "{run}"
    );
}

#[test]
fn check_builds_the_kafka_clients_so_a_bad_setting_fails_there() {
    let dir = common::scratch();
    let example = std::fs::read_to_string(common::root().join("examples/orders.toml")).unwrap();
    let example = example.replace(
        "../plugins/",
        &format!("{}/plugins/", common::root().display()),
    );
    let with = |name: &str, table: &str, setting: &str| {
        let text = example.replacen(
            &format!("[{table}]\n"),
            &format!("[{table}]\nkafka = {{ {setting} }}\n"),
            1,
        );
        write(dir.path(), name, &text)
    };
    let toml = with("unknown.toml", "source", "\"no.such.property\" = 1");
    weir(&[OsStr::new("check"), toml.as_os_str()])
        .assert_failed()
        .assert_stderr_has(&["[source.kafka] settings", "no.such.property"]);
    let toml = with("codec.toml", "sink", "\"compression.type\" = \"brotli\"");
    weir(&[OsStr::new("check"), toml.as_os_str()])
        .assert_failed()
        .assert_stderr_has(&["[sink.kafka] settings", "compression"]);
    // Every codec Kafka has is built in, zstd too.
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let setting = format!("\"compression.type\" = \"{codec}\"");
        let toml = with(&format!("{codec}.toml"), "sink", &setting);
        weir(&[OsStr::new("check"), toml.as_os_str()]).assert_ok();
    }
    // A [source] without a [sink] cannot run: check says so rather than "weir test only".
    let text = example.replace("[sink]\ntopic = \"orders.big\"\n", "");
    let toml = write(dir.path(), "no-sink.toml", &text);
    weir(&[OsStr::new("check"), toml.as_os_str()])
        .assert_failed()
        .assert_stderr_has(&["no [sink] table"]);
}

#[test]
fn check_says_an_empty_plugin_file_is_empty() {
    let dir = common::scratch();
    write(dir.path(), "empty.wasm", "");
    let toml = write(
        dir.path(),
        "p.toml",
        "[[stage]]\nname = \"e\"\nplugin = \"empty.wasm\"\n",
    );
    weir(&[OsStr::new("check"), toml.as_os_str()])
        .assert_failed()
        .assert_stderr_has(&["plugin `e`", "empty file"]);
}

#[test]
fn check_into_a_closed_pipe_stops_quietly() {
    let example = common::root().join("examples/orders.toml");
    let mut child = std::process::Command::new(common::weir_bin())
        .arg("check")
        .arg(&example)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before weir writes, as `| head -0` would.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
}

#[test]
fn check_names_file_and_line_of_an_unknown_key() {
    let dir = common::scratch();
    let text = orders_pipeline(|p| plugin(p).display().to_string())
        .replace("config = { where", "confg = { where");
    let line = text.lines().position(|l| l.starts_with("confg")).unwrap() + 1;
    let toml = write(dir.path(), "typo.toml", &text);
    let run = weir(&[OsStr::new("check"), toml.as_os_str()]);
    run.assert_failed()
        .assert_error_line(&format!("error: {}: ", toml.display()))
        .assert_stderr_has(&[&format!("line {line}"), "unknown field `confg`"])
        .assert_lines(&[]);

    // A semantic error carries the line in the `file:line:` form.
    let text = format!(
        "[[stage]]\nname = \"a\"\nplugin = \"a.wasm\"\n\n[[stage]]\nname = \"a\"\nplugin = \"{}\"\n",
        plugin("json-filter").display()
    );
    let toml = write(dir.path(), "dup.toml", &text);
    weir(&[OsStr::new("check"), toml.as_os_str()])
        .assert_failed()
        .assert_error_line(&format!(
            "error: {}:6: stage name `a` is already used by the stage at line 1",
            toml.display()
        ));
}

#[test]
fn check_names_the_stage_whose_config_is_rejected() {
    let dir = common::scratch();
    let text = orders_pipeline(|p| plugin(p).display().to_string())
        .replace(r#"mode = "hash""#, r#"mode = "encrypt""#);
    let toml = write(dir.path(), "bad-config.toml", &text);
    weir(&[OsStr::new("check"), toml.as_os_str()])
        .assert_failed()
        .assert_error_line(&format!(
            "error: {}:12: stage failed to load: plugin `mask` was rejected by its init: invalid plugin config: ",
            toml.display()
        ))
        .assert_stderr_has(&["encrypt"])
        .assert_lines(&[]);

    // `weir run` names it the same way, before it reaches for any broker.
    let header = "[source]\nbrokers = \"127.0.0.1:9\"\ntopics = [\"in\"]\ngroup = \"g\"\n\n[sink]\ntopic = \"out\"\n";
    let toml = write(dir.path(), "bad-run.toml", &format!("{header}{text}"));
    weir(&[OsStr::new("run"), toml.as_os_str()])
        .assert_failed()
        .assert_error_line(&format!(
            "error: {}:{}: stage failed to load: plugin `mask` was rejected by its init: invalid plugin config: ",
            toml.display(),
            12 + header.lines().count()
        ));

    // A stage whose plugin file is missing is named with the path it was looked for at.
    let text = orders_pipeline(|p| match p {
        "json-filter" => "no-such-filter.wasm".into(),
        other => plugin(other).display().to_string(),
    });
    let toml = write(dir.path(), "missing-plugin.toml", &text);
    weir(&[OsStr::new("check"), toml.as_os_str()])
        .assert_failed()
        .assert_error_line(&format!(
            "error: {}:7: stage failed to load: plugin `big`: cannot read {}: ",
            toml.display(),
            dir.path().join("no-such-filter.wasm").display()
        ));
}

// ---------------------------------------------------------------------------------------------
// 6. weir new, weir build, weir test: the scaffold end to end
// ---------------------------------------------------------------------------------------------

#[test]
fn new_plugins_build_test_and_run() {
    let scratch = common::scratch();
    let dir = scratch.path().canonicalize().unwrap();
    for kind in ["filter", "transform", "window"] {
        let crate_dir = dir.join(format!("my-{kind}"));
        let run = weir(&[
            OsStr::new("new"),
            crate_dir.as_os_str(),
            OsStr::new("--kind"),
            OsStr::new(kind),
        ]);
        run.assert_ok();
        assert_eq!(
            run.stdout_lines()[0],
            format!("created {kind} plugin {}", crate_dir.display()),
            "{run}"
        );
        assert!(
            crate_dir.join("Cargo.toml").is_file() && crate_dir.join("src/lib.rs").is_file(),
            "{run}"
        );
    }
    // Nothing is overwritten, and the name must make a crate name.
    weir(&[OsStr::new("new"), dir.join("my-filter").as_os_str()])
        .assert_failed()
        .assert_error_line(&format!(
            "error: {}: already exists",
            dir.join("my-filter").display()
        ));
    weir(&[OsStr::new("new"), dir.join("1st").as_os_str()])
        .assert_failed()
        .assert_error_line("error: `1st` is not a usable crate name");

    // One build of all three, sharing the workspace's target dir (and its wasm32 std).
    let target = target_dir();
    let crates: Vec<PathBuf> = ["filter", "transform", "window"]
        .iter()
        .map(|k| dir.join(format!("my-{k}")))
        .collect();
    let mut args: Vec<&OsStr> = vec![OsStr::new("build")];
    args.extend(crates.iter().map(|c| c.as_os_str()));
    let build = run_in(
        None,
        &args,
        &[("CARGO_TARGET_DIR", target.as_os_str())],
        None,
    );
    build.assert_ok();
    let components: Vec<PathBuf> = crates.iter().map(|c| c.with_extension("wasm")).collect();
    let listed: Vec<String> = components.iter().map(|c| c.display().to_string()).collect();
    assert_eq!(build.stdout_lines(), listed, "{build}");
    for c in &components {
        assert!(c.is_file(), "{} was not written:{build}", c.display());
    }

    scaffolds_behave(&components[0], &components[1]);

    // The window component is a valid window plugin, which `weir test` does not run yet.
    let orders = jsonl_text(&[r#"{"amount":150,"id":1}"#]);
    weir_test(&components[2], &orders.path, None, "value")
        .assert_failed()
        .assert_error_line("error: plugin `my-window`: is a window plugin");

    // The scaffold's own unit test passes natively.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .arg("test")
        .current_dir(&crates[0])
        .env("CARGO_TARGET_DIR", &target)
        .stdin(Stdio::null())
        .output()
        .expect("cargo runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "cargo test in the scaffold failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("test tests::keeps_only_big_orders ... ok"),
        "{stdout}\n{stderr}"
    );
}

/// What `weir new` writes does what its templates say: the filter keeps orders above `min` (and
/// requires it), the transform tags records and counts them per key in state.
fn scaffolds_behave(filter: &Path, transform: &Path) {
    let name = filter.file_stem().unwrap().to_string_lossy();
    // The filter keeps orders above `min`.
    let orders = jsonl_text(&[
        r#"{"amount":150,"id":1}"#,
        r#"{"amount":50,"id":2}"#,
        r#"{"amount":100.5,"id":3}"#,
    ]);
    weir_test(filter, &orders.path, Some(&json!({"min": 100})), "value")
        .assert_ok()
        .assert_lines(&[r#"{"amount":150,"id":1}"#, r#"{"amount":100.5,"id":3}"#])
        .assert_counts(counts(3, 2, 1, 0));
    // Its config is checked: `min` is required.
    weir_test(filter, &orders.path, Some(&json!({})), "value")
        .assert_failed()
        .assert_error_line(&format!(
            "error: plugin `{name}` was rejected by its init: "
        ));

    // The transform tags records and counts them per key in state.
    let keyed = jsonl(&[
        envelope(json!("a"), json!({"id": 1}), json!({}), 1),
        envelope(json!("b"), json!({"id": 2}), json!({}), 2),
        envelope(json!("a"), json!({"id": 3}), json!({}), 3),
    ]);
    weir_test(
        transform,
        &keyed.path,
        Some(&json!({"field": "source", "value": "weir"})),
        "envelope",
    )
    .assert_ok()
    .assert_records(&[
        envelope(
            json!("a"),
            json!({"id": 1, "source": "weir", "seen": 1}),
            json!({}),
            1,
        ),
        envelope(
            json!("b"),
            json!({"id": 2, "source": "weir", "seen": 1}),
            json!({}),
            2,
        ),
        envelope(
            json!("a"),
            json!({"id": 3, "source": "weir", "seen": 2}),
            json!({}),
            3,
        ),
    ])
    .assert_counts(counts(3, 3, 0, 0));
}

#[test]
fn new_python_javascript_and_go_plugins_build_and_behave_as_the_rust_ones() {
    let scratch = common::scratch();
    let dir = scratch.path().canonicalize().unwrap();
    for lang in ["python", "javascript", "go"] {
        let mut components = Vec::new();
        for kind in ["filter", "transform"] {
            let plugin = dir.join(format!("{lang}-{kind}"));
            let args = [
                "new",
                plugin.to_str().unwrap(),
                "--lang",
                lang,
                "--kind",
                kind,
            ];
            weir(&args).assert_ok();
            let build = weir(&[OsStr::new("build"), plugin.as_os_str()]);
            build.assert_ok();
            assert_eq!(
                build.stdout_lines(),
                [plugin.with_extension("wasm").display().to_string()]
            );
            components.push(plugin.with_extension("wasm"));
        }
        scaffolds_behave(&components[0], &components[1]);
    }
    // Window plugins build in each (`weir test` runs windows in a pipeline only).
    for lang in ["python", "js", "go"] {
        let window = dir.join(format!("{lang}-window"));
        let args = [
            "new",
            window.to_str().unwrap(),
            "--lang",
            lang,
            "--kind",
            "window",
        ];
        weir(&args).assert_ok();
        weir(&[OsStr::new("build"), window.as_os_str()]).assert_ok();
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Envelopes: what a transform does not touch comes out as it went in
// ---------------------------------------------------------------------------------------------

#[test]
fn envelope_key_headers_and_timestamp_survive_transforms() {
    let headers = json!({"trace": "abc-123", "source": "pg", "empty": ""});
    let lines = [
        envelope(
            json!("user-1"),
            json!({"email": "a@b.c", "id": 1}),
            headers.clone(),
            1_700_000_000_000,
        ),
        envelope(
            json!({"id": 2}),
            json!({"email": "x", "id": 2}),
            json!({}),
            0,
        ),
        envelope(Value::Null, json!({"id": 3}), json!({"h": "v"}), 42),
        // A tombstone passes through with its key.
        envelope(
            json!("user-1"),
            Value::Null,
            json!({"op": "d"}),
            1_700_000_000_001,
        ),
    ];
    let input = jsonl(&lines);
    let mask = json!({"fields": ["/email"]});
    weir_test(&plugin("mask-pii"), &input.path, Some(&mask), "envelope")
        .assert_ok()
        .assert_records(&[
            envelope(
                json!("user-1"),
                json!({"email": "[REDACTED]", "id": 1}),
                headers.clone(),
                1_700_000_000_000,
            ),
            envelope(
                json!("{\"id\":2}"),
                json!({"email": "[REDACTED]", "id": 2}),
                json!({}),
                0,
            ),
            envelope(Value::Null, json!({"id": 3}), json!({"h": "v"}), 42),
            envelope(
                json!("user-1"),
                Value::Null,
                json!({"op": "d"}),
                1_700_000_000_001,
            ),
        ])
        .assert_counts(counts(4, 4, 0, 0));

    // Every output of an exploding transform carries its input's key, headers and timestamp.
    let input = jsonl(&[
        envelope(
            json!("order-7"),
            json!({"no": 7, "items": ["a", "b"]}),
            headers.clone(),
            1_700_000_000_007,
        ),
        envelope(
            json!("order-8"),
            json!({"no": 8, "items": ["c"]}),
            json!({"x": "y"}),
            8,
        ),
    ]);
    weir_test(
        &plugin("explode"),
        &input.path,
        Some(&json!({"path": "/items", "as": "item"})),
        "envelope",
    )
    .assert_ok()
    .assert_records(&[
        envelope(
            json!("order-7"),
            json!({"no": 7, "item": "a"}),
            headers.clone(),
            1_700_000_000_007,
        ),
        envelope(
            json!("order-7"),
            json!({"no": 7, "item": "b"}),
            headers.clone(),
            1_700_000_000_007,
        ),
        envelope(
            json!("order-8"),
            json!({"no": 8, "item": "c"}),
            json!({"x": "y"}),
            8,
        ),
    ])
    .assert_counts(counts(2, 3, 0, 0));

    // And a filter passes a kept envelope on whole.
    let input = jsonl(&[
        envelope(json!("k1"), json!({"amount": 150}), headers.clone(), 11),
        envelope(json!("k2"), json!({"amount": 1}), headers.clone(), 12),
    ]);
    let big = json!({"where": [{"path": "/amount", "op": "gt", "value": 100}]});
    weir_test(&plugin("json-filter"), &input.path, Some(&big), "envelope")
        .assert_ok()
        .assert_records(&[envelope(json!("k1"), json!({"amount": 150}), headers, 11)])
        .assert_counts(counts(2, 1, 1, 0));
}

// ---------------------------------------------------------------------------------------------
// 8. The README shows real files
// ---------------------------------------------------------------------------------------------

/// The first fenced block of `lang` in the README.
fn readme_block(lang: &str) -> String {
    let readme = std::fs::read_to_string(common::root().join("README.md")).unwrap();
    let start = readme
        .find(&format!("```{lang}\n"))
        .expect("README has the block")
        + lang.len()
        + 4;
    let len = readme[start..].find("```").unwrap();
    readme[start..start + len].to_string()
}

/// Lines without comments and blank lines, trimmed.
fn significant_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split(" #").next().unwrap().trim().to_string())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

#[test]
fn readme_pipeline_is_the_example_file_and_checks() {
    let example = std::fs::read_to_string(common::root().join("examples/orders.toml")).unwrap();
    assert_eq!(
        significant_lines(&readme_block("toml")),
        significant_lines(&example)
    );
    let path = common::root().join("examples/orders.toml");
    weir(&[OsStr::new("check"), path.as_os_str()])
        .assert_ok()
        .assert_stdout_has(&[
            "ok, 4 stages",
            "big-orders: filter",
            "table customers: kept from",
        ]);
}

#[test]
fn the_example_joins_orders_with_a_customers_table_read_from_a_file() {
    let root = common::root();
    let example = root.join("examples/orders.toml");
    let orders = root.join("examples/orders.jsonl");
    let customers = format!(
        "customers={}",
        root.join("examples/customers.jsonl").display()
    );
    let args = |table: Option<&str>| {
        let mut args = vec![
            "test".to_string(),
            example.display().to_string(),
            "--input".into(),
            orders.display().to_string(),
            "--format".into(),
            "envelope".into(),
        ];
        args.extend(
            table
                .map(|t| ["--table".to_string(), t.to_string()])
                .into_iter()
                .flatten(),
        );
        args
    };
    let run = weir(&args(Some(&customers)));
    run.assert_ok()
        .assert_stderr_has(&["table `customers`: 4 rows from"]);
    // Each big order with its customer's country as the table's file leaves it: customer 2
    // moved to BE, customer 4 was deleted (its order is small anyway).
    let got: Vec<(i64, Value)> = run
        .stdout_lines()
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["value"]["id"].as_i64().unwrap(),
                v["value"]["customer_country"].clone(),
            )
        })
        .collect();
    let want: Vec<(i64, Value)> = [
        (1, "DE"),
        (3, "NL"),
        (2, "BE"),
        (1, "DE"),
        (5, "US"),
        (6, "DE"),
        (7, "BE"),
    ]
    .into_iter()
    .map(|(id, c)| (id, json!(c)))
    .collect();
    assert_eq!(got, want, "{run}");

    // Without the table, the joining stage fails each record and says how to give it one.
    weir(&args(None))
        .assert_failed()
        .assert_stderr_has(&["stage `country`", "--table customers=FILE"]);
    let unknown = format!(
        "suppliers={}",
        root.join("examples/customers.jsonl").display()
    );
    weir(&args(Some(&unknown)))
        .assert_failed()
        .assert_stderr_has(&["has no [[table]] named `suppliers`"]);
}

#[test]
fn the_paid_example_joins_orders_with_payments_read_from_a_file() {
    let root = common::root();
    let example = root.join("examples/paid.toml");
    let args = |join: Option<&str>| {
        let mut args = vec![
            "test".to_string(),
            example.display().to_string(),
            "--input".into(),
            root.join("examples/orders.jsonl").display().to_string(),
            "--format".into(),
            "envelope".into(),
        ];
        args.extend(
            join.map(|j| ["--join".to_string(), j.to_string()])
                .into_iter()
                .flatten(),
        );
        args
    };
    let payments = format!("paid={}", root.join("examples/payments.jsonl").display());
    let run = weir(&args(Some(&payments)));
    run.assert_ok()
        .assert_stderr_has(&["stage `paid` joins 5 records of `payments`"]);
    // Each order placed, with the payment made within ten minutes of it: order 3 was paid a
    // quarter of an hour later, 4 and 5 never; updates and deletes are no new orders.
    let mut got: Vec<(i64, Value)> = run
        .stdout_lines()
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let v = &v["value"];
            (v["id"].as_i64().unwrap(), v["payment"]["payment"].clone())
        })
        .collect();
    got.sort_by_key(|(id, _)| *id);
    let want: Vec<(i64, Value)> = [
        (1, json!(1)),
        (2, json!(2)),
        (3, Value::Null),
        (4, Value::Null),
        (5, Value::Null),
        (6, json!(4)),
        (7, json!(5)),
    ]
    .into();
    assert_eq!(got, want, "{run}");
    weir(&args(Some("unpaid=x.jsonl")))
        .assert_failed()
        .assert_stderr_has(&["has no join stage named `unpaid`"]);
    weir(&[OsStr::new("check"), example.as_os_str()])
        .assert_ok()
        .assert_stdout_has(&["paid: transform", "joins `payments` within 600000 ms"]);
}

#[test]
fn readme_plugin_is_what_weir_new_writes() {
    let dir = common::scratch();
    let crate_dir = dir.path().join("big-orders");
    weir(&[
        OsStr::new("new"),
        crate_dir.as_os_str(),
        OsStr::new("--kind"),
        OsStr::new("filter"),
    ])
    .assert_ok();
    let written = std::fs::read_to_string(crate_dir.join("src/lib.rs")).unwrap();
    let plugin = readme_block("rust");
    assert!(
        written.contains(plugin.trim()),
        "README plugin not in the scaffold:\n{plugin}\n---\n{written}"
    );
}

// ---------------------------------------------------------------------------------------------
// 9. weir demo: the example pipeline on an in-process Kafka cluster
// ---------------------------------------------------------------------------------------------

/// Run `weir ARGS…` in `cwd`, killing it (and failing the test) if it has not exited within
/// `limit`: a demo that hangs must fail here, not hold the test run.
fn run_for(cwd: &Path, args: &[&str], limit: std::time::Duration) -> Run {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .current_dir(cwd)
        .env("WEIR_CACHE_DIR", target_dir().join("weir-cli-test-cache"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weir starts");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            pipe.read_to_end(&mut text).expect("read weir's output");
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for weir") {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            child.kill().expect("kill weir");
            child.wait().expect("reap weir");
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let run = Run {
        command: format!("weir {}", args.join(" ")),
        code: status.and_then(|s| s.code()),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    };
    assert!(
        status.is_some(),
        "did not finish within {}s (killed):{run}",
        limit.as_secs()
    );
    run
}

/// The number just before `label` in `line` (`"… 12 inserts, …"`, label `inserts`).
#[track_caller]
fn count_before(line: &str, label: &str) -> u64 {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| w.trim_end_matches([',', ':']) == label)
        .unwrap_or_else(|| panic!("no `{label}` in {line:?}"));
    assert!(at > 0, "nothing before `{label}` in {line:?}");
    words[at - 1]
        .parse()
        .unwrap_or_else(|_| panic!("no number before `{label}` in {line:?}"))
}

#[test]
fn demo_hold_keeps_serving_the_dashboard_until_interrupted() {
    use std::io::BufRead;
    const RECORDS: u64 = 300;
    let mut child = std::process::Command::new(common::weir_bin())
        .current_dir(common::root())
        .args(["demo", "--records", &RECORDS.to_string()])
        .args(["--admin", "127.0.0.1:0", "--hold"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start weir demo");
    // Its output up to the line saying it holds, read on a thread so a hang cannot block us.
    let stdout = child.stdout.take().unwrap();
    let (said, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if said.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let addr = loop {
        let line = lines
            .recv_timeout(std::time::Duration::from_secs(300))
            .unwrap_or_else(|_| panic!("no `holding:` line; stdout:\n{}", seen.join("\n")));
        if let Some(rest) = line.strip_prefix("holding: the dashboard stays at http://") {
            break rest.split('/').next().unwrap().to_string();
        }
        seen.push(line);
    };
    // Its records are done, and the dashboard still answers, with what the run did.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(child.try_wait().unwrap().is_none(), "it did not hold");
    let (code, page) = common::kafka::http_get(&addr, "/");
    assert!(code == 200 && page.contains("<canvas"), "{code}");
    let (_, body) = common::kafka::http_get(&addr, "/api/status");
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["totals"]["consumed"], RECORDS, "{body}");
    // Ctrl-C ends it, cleanly.
    let ok = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "Ctrl-C did not end it"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn demo_streams_generated_change_events_without_a_broker() {
    const RECORDS: u64 = 2000;
    // From the repository root, as scripts/demo.sh runs it: the default pipeline is the example.
    let run = run_for(
        &common::root(),
        &[
            "demo",
            "--records",
            &RECORDS.to_string(),
            "--admin",
            "127.0.0.1:0",
        ],
        std::time::Duration::from_secs(300),
    );
    run.assert_ok();
    let lines = run.stdout_lines();
    let line = |prefix: &str| -> usize {
        lines
            .iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no stdout line starts with {prefix:?}:{run}"))
    };
    // Its dashboard's address, on the port picked for it.
    assert!(
        !lines[line("dashboard: http://127.0.0.1:")].contains(":0/"),
        "{run}"
    );

    // What the generator says it made adds up to what was asked for.
    let generated = lines[line("generated: ")];
    let reads = count_before(generated, "snapshot");
    let inserts = count_before(generated, "inserts");
    let updates = count_before(generated, "updates");
    let deletes = count_before(generated, "deletes");
    let malformed = count_before(generated, "malformed");
    assert_eq!(count_before(generated, "Debezium"), RECORDS, "{run}");
    assert_eq!(
        reads + inserts + updates + deletes + malformed,
        RECORDS,
        "{run}"
    );
    assert!(
        malformed > 0 && deletes > 0,
        "the demo shows dead letters and deletes:{run}"
    );

    // Every event went in; exactly the malformed ones were dead-lettered (they fail in `unwrap`),
    // and at most the rows that survive `unwrap` (deletes are dropped) came out.
    let summary = lines[line("summary: ")];
    let out = count_before(summary, "out");
    let dead = count_before(summary, "dead-lettered");
    assert_eq!(count_before(summary, "in"), RECORDS, "{run}");
    assert_eq!(dead, malformed, "{run}");
    assert!(out > 0 && out <= reads + inserts + updates, "{run}");
    assert_eq!(
        count_before(lines[line("committed: ")], "of"),
        RECORDS,
        "every input offset was committed:{run}"
    );

    // The output topic holds the outputs, and the sample is big orders with emails hashed.
    let heading = line("`orders.big`: ");
    assert_eq!(count_before(lines[heading], "records;"), out, "{run}");
    let sample = &lines[heading + 1..heading + 6];
    for text in sample {
        let record: Value = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("sample {text:?} is not JSON ({e}):{run}"));
        let value = &record["value"];
        let email = value["customer_email"].as_str().unwrap_or_default();
        assert!(
            email.len() == 64 && email.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')),
            "customer_email is not masked with SHA-256 in {text}:{run}"
        );
        assert!(
            value["amount"].as_f64().is_some_and(|a| a > 100.0),
            "{text}:{run}"
        );
        assert!(
            ["r", "c", "u"].contains(&value["__op"].as_str().unwrap_or_default()),
            "{text}:{run}"
        );
        let key: Value = serde_json::from_str(record["key"].as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("key of {text} is not JSON ({e}):{run}"));
        assert_eq!(key, json!({"id": value["id"]}), "{text}:{run}");
        // Joined with its customer's row from the customers' table.
        assert!(
            value["customer_country"]
                .as_str()
                .is_some_and(|c| c.len() == 2),
            "no customer_country in {text}:{run}"
        );
    }
    let customers = lines[line("customers: ")];
    assert!(
        count_before(customers, "snapshot") == 200 && count_before(customers, "moves") > 0,
        "{run}"
    );

    // The dead-letter topic holds the malformed events, each as it came, with its cause.
    let heading = line("`orders.dlq`: ");
    assert_eq!(count_before(lines[heading], "records;"), malformed, "{run}");
    let letter: Value = serde_json::from_str(lines[heading + 1]).unwrap();
    let original = letter["value"].as_str().unwrap_or_else(|| panic!("{run}"));
    assert!(serde_json::from_str::<Value>(original).is_err(), "{run}");
    assert_eq!(letter["headers"]["weir.error.stage"], "unwrap", "{run}");
    assert_eq!(
        letter["headers"]["weir.source.topic"], "orders.cdc",
        "{run}"
    );
}
