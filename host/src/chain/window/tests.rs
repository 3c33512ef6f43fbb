use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    store::{entry_name, parse_entry_name},
    *,
};
use crate::{
    config::{EventTime, LateOutput, WindowKind, WindowSpec},
    engine::{ErrorKind, KeyedWindow, MemoryState, Output, Pane, PaneResult},
};

/// Keeps every value it was given: an emitted window says exactly which records it holds.
struct Collect;

impl Aggregator for Collect {
    fn accumulate(
        &mut self,
        panes: &[Pane],
    ) -> Result<Vec<Result<PaneResult, String>>, RecordError> {
        Ok(panes
            .iter()
            .map(|pane| {
                let mut acc = pane.acc.clone().unwrap_or_default();
                let mut errors = Vec::new();
                for (i, e) in pane.events.iter().enumerate() {
                    let v = e.value.clone().unwrap_or_default();
                    if v == b"bad" {
                        errors.push((i as u32, "bad record".to_string()));
                        continue;
                    }
                    if !acc.is_empty() {
                        acc.push(b',');
                    }
                    acc.extend(v);
                }
                Ok(PaneResult { acc, errors })
            })
            .collect())
    }

    fn merge(
        &mut self,
        _window: &KeyedWindow,
        a: &[u8],
        b: &[u8],
    ) -> Result<Result<Vec<u8>, String>, RecordError> {
        Ok(Ok([a, b].join(&b',')))
    }

    fn emit(
        &mut self,
        fired: &[(KeyedWindow, Vec<u8>)],
    ) -> Result<Vec<Result<Vec<Output>, String>>, RecordError> {
        Ok(fired
            .iter()
            .map(|(w, acc)| {
                let mut values: Vec<&str> = std::str::from_utf8(acc)
                    .unwrap()
                    .split(',')
                    .filter(|v| !v.is_empty())
                    .collect();
                values.sort_unstable();
                let key = String::from_utf8_lossy(w.key.as_deref().unwrap_or(b"-"));
                let text = format!("{key} {}..{}: {}", w.start, w.end, values.join(","));
                Ok(vec![Output {
                    key: w.key.clone(),
                    value: Some(text.into_bytes()),
                    headers: Vec::new(),
                    timestamp: w.end - 1,
                }])
            })
            .collect())
    }

    fn name(&self) -> &str {
        "collect"
    }
}

fn spec(kind: WindowKind) -> WindowSpec {
    WindowSpec {
        kind,
        time: EventTime::Record,
        max_out_of_order: 0,
        idle_timeout: None,
        allowed_lateness: 0,
        late: LateOutput::Drop,
    }
}

fn stage(spec: WindowSpec) -> WindowStage<Collect> {
    let spec = Arc::new(spec);
    let clock = Arc::new(Clock::new(&spec));
    WindowStage::new(spec, Collect, clock)
}

fn rec(partition: i32, offset: i64, key: &str, ts: i64, value: &str) -> Record {
    Record {
        key: Some(key.as_bytes().to_vec()),
        value: Some(value.as_bytes().to_vec()),
        headers: Vec::new(),
        timestamp: ts,
        topic: "t".into(),
        partition,
        offset,
    }
}

/// What a test sees of a call: fired windows, late values and failed values, as text.
#[derive(Debug, Default, PartialEq)]
struct Seen {
    fired: Vec<String>,
    late: Vec<String>,
    failed: Vec<String>,
}

fn seen(out: WindowOutput) -> Seen {
    let text = |v: &Option<Vec<u8>>| String::from_utf8_lossy(v.as_deref().unwrap()).into_owned();
    Seen {
        fired: out.records.iter().map(|r| text(&r.value)).collect(),
        late: out.late.iter().map(|l| text(&l.record.value)).collect(),
        failed: out.failures.iter().map(|(r, _)| text(&r.value)).collect(),
    }
}

/// Feed `(key, ts, value)` records one batch each on partition 0; what every batch did.
fn feed<A: Aggregator>(stage: &mut WindowStage<A>, records: &[(&str, i64, &str)]) -> Vec<Seen> {
    let now = Instant::now();
    records
        .iter()
        .enumerate()
        .map(|(i, &(k, ts, v))| seen(stage.process(vec![rec(0, i as i64, k, ts, v)], now)))
        .collect()
}

fn fired(all: &[Seen]) -> Vec<String> {
    all.iter().flat_map(|s| s.fired.clone()).collect()
}

#[test]
fn tumbling_windows_fire_once_the_watermark_passes_their_end() {
    let mut s = stage(spec(WindowKind::Tumbling { size: 60_000 }));
    let out = feed(
        &mut s,
        &[
            ("a", 1_000, "1"),
            ("b", 2_000, "2"),
            ("a", 59_999, "3"),
            ("a", 60_000, "4"), // watermark 59_999: [0, 60s) fires for both keys
            ("a", 119_000, "5"),
        ],
    );
    assert!(out[..3].iter().all(|s| s.fired.is_empty()), "{out:?}");
    let mut first = out[3].fired.clone();
    first.sort();
    assert_eq!(first, ["a 0..60000: 1,3", "b 0..60000: 2"]);
    assert!(out[4].fired.is_empty());
    let rest = seen(s.finish());
    assert_eq!(rest.fired, ["a 60000..120000: 4,5"]);
}

#[test]
fn records_out_of_order_within_the_bound_are_counted() {
    let mut s = stage(WindowSpec {
        max_out_of_order: 5_000,
        ..spec(WindowKind::Tumbling { size: 60_000 })
    });
    let out = feed(
        &mut s,
        &[
            ("a", 10_000, "1"),
            ("a", 4_000, "2"),
            ("a", 63_000, "3"), // watermark 57_999
            ("a", 58_000, "4"), // still in time
            ("a", 64_999, "5"), // watermark 59_998: not yet
            ("a", 65_000, "6"), // watermark 59_999: fires
            ("a", 59_000, "7"), // late: dropped (no allowed lateness)
        ],
    );
    assert_eq!(fired(&out), ["a 0..60000: 1,2,4"]);
    assert_eq!(out[5].fired.len(), 1);
    assert_eq!(out[6].late, ["7"]);
}

#[test]
fn late_records_within_allowed_lateness_update_and_re_emit() {
    let mut s = stage(WindowSpec {
        allowed_lateness: 10_000,
        ..spec(WindowKind::Tumbling { size: 60_000 })
    });
    let out = feed(
        &mut s,
        &[
            ("a", 1_000, "1"),
            ("a", 61_000, "2"), // fires [0, 60s)
            ("a", 30_000, "3"), // late but allowed: fires again, updated
            ("a", 69_998, "4"), // watermark 69_997 < 59_999 + 10_000
            ("a", 30_001, "5"), // still allowed
            ("a", 69_999, "6"), // watermark 69_998 ≥ cleanup 69_999? no: 69_998
            ("a", 70_000, "7"), // watermark 69_999: cleanup
            ("a", 30_002, "8"), // too late
        ],
    );
    assert_eq!(
        fired(&out),
        ["a 0..60000: 1", "a 0..60000: 1,3", "a 0..60000: 1,3,5"]
    );
    assert_eq!(out[7].late, ["8"]);
    assert!(out[..7].iter().all(|s| s.late.is_empty()));
}

#[test]
fn sliding_windows_overlap() {
    let mut s = stage(spec(WindowKind::Sliding {
        size: 10_000,
        slide: 5_000,
    }));
    let out = feed(
        &mut s,
        &[("a", 7_000, "1"), ("a", 12_000, "2"), ("a", 30_000, "3")],
    );
    let mut all = fired(&out);
    all.sort();
    assert_eq!(
        all,
        ["a 0..10000: 1", "a 10000..20000: 2", "a 5000..15000: 1,2"]
    );
    let mut rest = seen(s.finish()).fired;
    rest.sort();
    assert_eq!(rest, ["a 25000..35000: 3", "a 30000..40000: 3"]);
}

#[test]
fn sessions_merge_when_a_record_bridges_them() {
    let mut s = stage(WindowSpec {
        max_out_of_order: 20_000,
        ..spec(WindowKind::Session { gap: 10_000 })
    });
    let out = feed(
        &mut s,
        &[
            ("a", 0, "1"),      // [0, 10s)
            ("a", 15_000, "2"), // [15s, 25s)
            ("b", 9_000, "3"),  // another key: its own session
            ("a", 8_000, "4"),  // [8s, 18s) bridges both: [0, 25s)
            ("a", 24_000, "5"), // extends it to [0, 34s)
            ("a", 50_000, "6"), // watermark 29_999: fires b's session only
        ],
    );
    assert_eq!(fired(&out), ["b 9000..19000: 3"]);
    let mut rest = seen(s.finish()).fired;
    rest.sort();
    assert_eq!(rest, ["a 0..34000: 1,2,4,5", "a 50000..60000: 6"]);
}

#[test]
fn a_session_the_watermark_passed_is_not_merged_into() {
    let mut s = stage(spec(WindowKind::Session { gap: 10_000 }));
    let out = feed(
        &mut s,
        &[
            ("a", 0, "1"),
            ("a", 15_000, "2"), // watermark 14_999: [0, 10s) fires and is gone
            ("a", 8_000, "3"),  // joins [15s, 25s) only: [8s, 25s)
        ],
    );
    assert_eq!(fired(&out), ["a 0..10000: 1"]);
    assert_eq!(seen(s.finish()).fired, ["a 8000..25000: 2,3"]);
}

#[test]
fn sessions_touching_merge_and_a_whole_batch_merges_at_once() {
    let mut s = stage(spec(WindowKind::Session { gap: 10 }));
    let now = Instant::now();
    let batch = vec![
        rec(0, 0, "a", 100, "1"),
        rec(0, 1, "a", 120, "2"),
        rec(0, 2, "a", 110, "3"), // [110, 120) touches [120, 130): one session
    ];
    assert!(seen(s.process(batch, now)).fired.is_empty());
    assert_eq!(seen(s.finish()).fired, ["a 100..130: 1,2,3"]);
}

#[test]
fn an_idle_partition_stops_holding_the_watermark_back() {
    let mut s = stage(WindowSpec {
        idle_timeout: Some(Duration::from_secs(30)),
        ..spec(WindowKind::Tumbling { size: 1_000 })
    });
    let t0 = Instant::now();
    s.clock.assign("t", 0, t0);
    s.clock.assign("t", 1, t0);
    let out = s.process(
        vec![rec(1, 0, "a", 500, "1"), rec(1, 1, "a", 5_000, "2")],
        t0,
    );
    assert!(
        out.records.is_empty(),
        "partition 0 holds the watermark back"
    );
    // Partition 0 has been quiet for longer than the idle timeout: partition 1 alone counts.
    let later = t0 + Duration::from_secs(31);
    let out = seen(s.process(vec![rec(1, 2, "a", 6_000, "3")], later));
    assert_eq!(out.fired, ["a 0..1000: 1", "a 5000..6000: 2"]);
    // When every partition is idle, the watermark stays where it is.
    let much_later = later + Duration::from_secs(60);
    assert_eq!(s.clock.watermark(much_later), 5_999);
    // Partition 0 wakes up: it counts again, and the watermark does not go back.
    let out = seen(s.process(vec![rec(0, 0, "z", 100, "late")], much_later));
    assert_eq!(
        out.late,
        ["late"],
        "behind the watermark that already passed"
    );
    assert_eq!(s.clock.watermark(much_later), 5_999);
}

#[test]
fn the_stage_watermark_is_the_minimum_over_partitions() {
    let mut s = stage(spec(WindowKind::Tumbling { size: 1_000 }));
    let now = Instant::now();
    s.clock.assign("t", 0, now);
    s.clock.assign("t", 1, now);
    s.process(vec![rec(0, 0, "a", 10_000, "1")], now);
    assert_eq!(
        s.clock.watermark(now),
        i64::MIN,
        "partition 1 has no records yet"
    );
    s.process(vec![rec(1, 0, "b", 2_500, "2")], now);
    assert_eq!(s.clock.watermark(now), 2_499);
    s.clock.forget("t", 1);
    assert_eq!(
        s.clock.watermark(now),
        9_999,
        "revoked partitions no longer count"
    );
}

#[test]
fn windows_survive_a_restart_through_their_state() {
    let state = MemoryState::shared();
    let mut s = stage(spec(WindowKind::Tumbling { size: 1_000 }));
    s.set_state(state.clone());
    feed(&mut s, &[("a", 100, "1"), ("a", 200, "2")]);
    drop(s);
    let mut s = stage(spec(WindowKind::Tumbling { size: 1_000 }));
    s.set_state(state.clone());
    let out = feed(&mut s, &[("a", 1_500, "3")]);
    assert_eq!(fired(&out), ["a 0..1000: 1,2"]);
    assert!(
        state
            .all()
            .iter()
            .all(|((_, name), _)| name != &entry_name(0, 1_000)),
        "a fired window without lateness is removed"
    );
}

/// At least once, a crash can leave one partition's stored progress behind what it was when
/// another partition's windows were removed, so the stage watermark after the restart is
/// lower. The removed window's replayed records are late all the same: emitting it again
/// with only them would undercount it.
#[test]
fn a_removed_window_is_not_formed_again_by_its_replayed_records() {
    let (p0, p1) = (MemoryState::shared(), MemoryState::shared());
    let now = Instant::now();
    let mut s = stage(spec(WindowKind::Tumbling { size: 1_000 }));
    s.clock.assign("t", 0, now);
    s.clock.assign("t", 1, now);
    s.set_state(p1.clone());
    s.process(vec![rec(1, 0, "b", 500, "x")], now);
    let p1_behind = MemoryState::shared();
    p1_behind.apply(p1.all().into_iter().map(|(k, e)| (k, Some(e))).collect());
    s.process(vec![rec(1, 1, "b", 5_000, "y")], now);
    s.set_state(p0.clone());
    s.process(
        vec![rec(0, 0, "a", 100, "1"), rec(0, 1, "a", 200, "2")],
        now,
    );
    let out = seen(s.process(vec![rec(0, 2, "a", 2_000, "3")], now));
    assert_eq!(out.fired, ["a 0..1000: 1,2"]);
    drop(s);

    // The restart: partition 0 as it was, partition 1 without its second record.
    let mut s = stage(spec(WindowKind::Tumbling { size: 1_000 }));
    resume(&s.clock, &*p0, "t", 0, now);
    resume(&s.clock, &*p1_behind, "t", 1, now);
    assert_eq!(s.clock.watermark(now), 499, "held back by partition 1");
    s.set_state(p0.clone());
    let out = seen(s.process(vec![rec(0, 1, "a", 200, "2")], now));
    assert_eq!(out.late, ["2"], "replayed after its window was removed");
    assert_eq!(out.fired, Vec::<String>::new());
    s.set_state(p1_behind.clone());
    s.process(vec![rec(1, 1, "b", 5_000, "y")], now);
    s.set_state(p0.clone());
    let out = seen(s.process(vec![rec(0, 3, "a", 2_500, "4")], now));
    assert_eq!(
        out.fired,
        Vec::<String>::new(),
        "0..1000 is not emitted again"
    );
    let mut rest = seen(s.finish()).fired;
    rest.sort();
    assert_eq!(rest, ["a 2000..3000: 3,4", "b 5000..6000: y"]);
}

/// [`Collect`], a build later: state version 1, whose accumulators mark what came from
/// version 0 with `m`; an accumulator holding `x` cannot be migrated.
struct Migrating(Collect);

impl Aggregator for Migrating {
    fn accumulate(
        &mut self,
        panes: &[Pane],
    ) -> Result<Vec<Result<PaneResult, String>>, RecordError> {
        self.0.accumulate(panes)
    }

    fn merge(
        &mut self,
        window: &KeyedWindow,
        a: &[u8],
        b: &[u8],
    ) -> Result<Result<Vec<u8>, String>, RecordError> {
        self.0.merge(window, a, b)
    }

    fn emit(
        &mut self,
        fired: &[(KeyedWindow, Vec<u8>)],
    ) -> Result<Vec<Result<Vec<Output>, String>>, RecordError> {
        self.0.emit(fired)
    }

    fn name(&self) -> &str {
        "collect"
    }

    fn state_version(&self) -> u32 {
        1
    }

    fn migrate(
        &mut self,
        from: u32,
        name: &str,
        value: &[u8],
    ) -> Result<Result<Vec<u8>, String>, RecordError> {
        assert_eq!((from, name), (0, "accumulator"));
        let text = String::from_utf8_lossy(value);
        if text.contains('x') {
            return Ok(Err("cannot migrate x".into()));
        }
        let items: Vec<String> = text.split(',').map(|v| format!("m{v}")).collect();
        Ok(Ok(items.join(",").into_bytes()))
    }
}

#[test]
fn accumulators_an_older_build_wrote_are_migrated_as_they_are_read() {
    let state = MemoryState::shared();
    let spec = Arc::new(spec(WindowKind::Tumbling { size: 1_000 }));
    let clock = Arc::new(Clock::new(&spec));
    let mut old = WindowStage::new(spec.clone(), Collect, clock.clone());
    old.set_state(state.clone());
    feed(
        &mut old,
        &[("a", 100, "1"), ("a", 200, "2"), ("b", 300, "x")],
    );
    drop(old);

    let mut new = WindowStage::new(spec, Migrating(Collect), clock);
    new.set_state(state.clone());
    // `a`'s window is migrated when the next record folds in, `b`'s when it fires.
    let now = Instant::now();
    let out = seen(new.process(vec![rec(0, 3, "a", 400, "3")], now));
    assert_eq!(out, Seen::default());
    let window = (Some(b"a".to_vec()), entry_name(0, 1_000));
    assert_eq!(state.get(&window).unwrap().version, 1);
    let out = new.process(vec![rec(0, 4, "c", 1_500, "4")], now);
    let failures: Vec<(String, ErrorKind)> = out
        .failures
        .iter()
        .map(|(_, e)| (e.message.clone(), e.kind))
        .collect();
    assert_eq!(seen(out).fired, ["a 0..1000: 3,m1,m2"]);
    assert_eq!(
        failures,
        [(
            "the accumulator of window [0, 1000) of key `b` was written by state version 0 \
             and could not be migrated to version 1: cannot migrate x"
                .to_string(),
            ErrorKind::Migration
        )]
    );
}

#[test]
fn a_resumed_partition_with_nothing_new_does_not_hold_the_watermark_back() {
    let (s0, s1) = (MemoryState::shared(), MemoryState::shared());
    let now = Instant::now();
    let mut s = stage(spec(WindowKind::Tumbling { size: 1_000 }));
    s.clock.assign("t", 0, now);
    s.clock.assign("t", 1, now);
    s.set_state(s0.clone());
    s.process(vec![rec(0, 0, "a", 9_000, "1")], now);
    s.set_state(s1.clone());
    s.process(vec![rec(1, 0, "b", 2_000, "2")], now);
    drop(s);
    // A restart: partition 0 has nothing left to read, partition 1 goes on.
    let mut s = stage(spec(WindowKind::Tumbling { size: 1_000 }));
    resume(&s.clock, &*s0, "t", 0, now);
    resume(&s.clock, &*s1, "t", 1, now);
    assert_eq!(s.clock.watermark(now), 1_999);
    s.set_state(s1.clone());
    let out = seen(s.process(vec![rec(1, 1, "b", 5_000, "3")], now));
    assert_eq!(out.fired, ["b 2000..3000: 2"]);
    assert_eq!(s.clock.watermark(now), 4_999);
}

#[test]
fn at_least_once_a_fired_window_stays_until_its_output_is_delivered() {
    struct Flag(std::sync::atomic::AtomicBool);
    impl Delivered for Flag {
        fn delivered(&self) -> bool {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
    }
    let state = MemoryState::shared();
    let mut s = stage(spec(WindowKind::Tumbling { size: 1_000 }));
    s.set_state(state.clone());
    s.defer_until_delivered(true);
    let flag = Arc::new(Flag(false.into()));
    let token: Arc<dyn Delivered> = flag.clone();
    let out = feed(&mut s, &[("a", 100, "1"), ("a", 1_500, "2")]);
    s.hold(&token);
    assert_eq!(fired(&out), ["a 0..1000: 1"]);
    let window = (Some(b"a".to_vec()), entry_name(0, 1_000));
    assert!(
        state.get(&window).is_some(),
        "kept while the output is in flight"
    );
    // A crash now: the restarted stage fires the window again (a duplicate, never a loss).
    let mut again = stage(spec(WindowKind::Tumbling { size: 1_000 }));
    again.set_state(state.clone());
    assert_eq!(
        fired(&feed(&mut again, &[("a", 1_600, "3")])),
        ["a 0..1000: 1"]
    );
    // Delivered: the next call removes it.
    flag.0.store(true, std::sync::atomic::Ordering::SeqCst);
    feed(&mut s, &[("a", 1_700, "4")]);
    assert!(state.get(&window).is_none());
}

#[test]
fn event_times_come_from_a_field_as_millis_or_rfc3339() {
    let mut s = stage(WindowSpec {
        time: EventTime::Field("/ts".into()),
        ..spec(WindowKind::Tumbling { size: 60_000 })
    });
    let out = s.process(
        vec![
            rec(0, 0, "a", 0, r#"{"ts": 1000}"#),
            rec(0, 1, "a", 0, r#"{"ts": "1970-01-01T00:00:02Z"}"#),
            rec(0, 2, "a", 0, r#"{"other": 1}"#),
            rec(0, 3, "a", 0, r#"{"ts": true}"#),
            rec(0, 4, "a", 0, "bad"),
        ],
        Instant::now(),
    );
    let errors: Vec<String> = out.failures.iter().map(|(_, e)| e.to_string()).collect();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors[0].contains("event-time") && errors[0].contains("no `/ts`"),
        "{errors:?}"
    );
    assert!(errors[1].contains("true"), "{errors:?}");
    assert!(errors[2].contains("not JSON"), "{errors:?}");
    let fired = seen(s.finish()).fired;
    assert_eq!(fired.len(), 1);
    assert!(fired[0].starts_with("a 0..60000: "), "{fired:?}");
}

#[test]
fn stopping_at_the_first_failure_folds_nothing_after_it() {
    let mut s = stage(WindowSpec {
        time: EventTime::Field("/ts".into()),
        ..spec(WindowKind::Tumbling { size: 60_000 })
    });
    s.stop_at_first_failure();
    let out = seen(s.process(
        vec![
            rec(0, 0, "a", 0, r#"{"ts": 1000}"#),
            rec(0, 1, "a", 0, r#"{"other": 1}"#),
            rec(0, 2, "a", 0, r#"{"ts": 2000}"#),
        ],
        Instant::now(),
    ));
    assert_eq!(out.failed, [r#"{"other": 1}"#]);
    assert_eq!(seen(s.finish()).fired, [r#"a 0..60000: {"ts": 1000}"#]);
}

#[test]
fn a_record_the_plugin_rejects_fails_alone() {
    let mut s = stage(spec(WindowKind::Tumbling { size: 1_000 }));
    let out = seen(s.process(
        vec![
            rec(0, 0, "a", 1, "1"),
            rec(0, 1, "a", 2, "bad"),
            rec(0, 2, "a", 3, "3"),
        ],
        Instant::now(),
    ));
    assert_eq!(out.failed, ["bad"]);
    assert_eq!(seen(s.finish()).fired, ["a 0..1000: 1,3"]);
}

#[test]
fn stopping_at_a_record_the_plugin_rejects_folds_nothing_from_it_on() {
    let mut s = stage(spec(WindowKind::Tumbling { size: 1_000 }));
    s.stop_at_first_failure();
    let raw = s.process(
        vec![
            rec(0, 0, "a", 1, "1"),
            rec(0, 1, "b", 1_500, "2"),
            rec(0, 2, "a", 2, "bad"),
            rec(0, 3, "a", 3, "3"),
            rec(0, 4, "c", 2_500, "4"),
        ],
        Instant::now(),
    );
    // Windows fired meanwhile stand after the last record before it (the chain drops outputs
    // at or past the failing record's offset).
    assert!(!raw.records.is_empty());
    assert!(
        raw.records.iter().all(|r| r.offset == 1),
        "{:?}",
        raw.records
    );
    let out = seen(raw);
    assert_eq!(out.failed, ["bad"]);
    // What came before it is kept; nothing from the failing record on is folded, in its window
    // or any other.
    let mut fired = out.fired;
    fired.extend(seen(s.finish()).fired);
    assert_eq!(fired, ["a 0..1000: 1", "b 1000..2000: 2"]);
}

#[test]
fn entry_names_sort_by_start_and_round_trip() {
    let names: Vec<String> = [(-5_000, 0), (-1, 10), (0, 1), (1 << 40, 1 << 41)]
        .iter()
        .map(|&(s, e)| entry_name(s, e))
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert_eq!(parse_entry_name(&entry_name(-7, 3)), Some((-7, 3)));
}

#[test]
fn a_shadow_clock_keeps_to_the_partitions_of_the_live_one() {
    let spec = spec(WindowKind::Tumbling { size: 60_000 });
    let (live, shadow) = (Clock::new(&spec), Clock::new(&spec));
    let now = Instant::now();
    live.assign("t", 0, now);
    live.assign("t", 1, now);
    live.observe("t", 0, Some(10_000), now);
    shadow.follow(&live);
    shadow.observe("t", 0, Some(20_000), now);
    // Partition 1 has no records yet: it holds both back.
    assert_eq!(
        (live.watermark(now), shadow.watermark(now)),
        (i64::MIN, i64::MIN)
    );
    live.observe("t", 1, Some(30_000), now);
    shadow.observe("t", 1, Some(30_000), now);
    assert_eq!(shadow.watermark(now), 19_999, "its own records move it");
    // A revoked partition no longer holds it back; a new assignment starts it over.
    live.forget("t", 0);
    shadow.follow(&live);
    assert_eq!(shadow.watermark(now), 29_999);
    live.assign("t", 2, now);
    shadow.follow(&live);
    assert_eq!(shadow.watermark(now), i64::MIN);
}
