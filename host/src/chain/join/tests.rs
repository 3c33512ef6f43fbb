use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use super::*;
use crate::config::{EventTime, LateOutput, Outer};

fn spec(within: i64, outer: Outer) -> Arc<JoinSpec> {
    Arc::new(JoinSpec {
        topic: "payments".into(),
        key: Some("/id".into()),
        other_key: Some("/order".into()),
        within,
        outer,
        unmatched: None,
        time: EventTime::Field("/ts".into()),
        max_out_of_order: 100,
        idle_timeout: Duration::from_secs(3600),
        late: LateOutput::Drop,
    })
}

/// A join stage of `spec` over `state`, reading the other topic from `side`.
fn joining(spec: &Arc<JoinSpec>, state: &SharedState, side: &Arc<Given>) -> JoinStage {
    let mut stage = JoinStage::new(spec.clone(), "join");
    stage.set_state(state.clone());
    stage.set_side(side.clone());
    stage
}

/// A record of the stream (`orders`, keyed `/id`) or of the other topic (`payments`, `/order`).
fn rec(left: bool, offset: i64, key: u32, ts: i64) -> Record {
    numbered(left, offset, key, ts, offset)
}

/// [`rec`] with `n` in its value instead of its offset: records of one offset (a flat-map's) or
/// of none (-1) told apart.
fn numbered(left: bool, offset: i64, key: u32, ts: i64, n: i64) -> Record {
    let (topic, value) = match left {
        true => ("orders", json!({ "id": key, "ts": ts, "n": n })),
        false => ("payments", json!({ "order": key, "ts": ts, "n": n })),
    };
    Record {
        key: Some(format!("k{key}").into_bytes()),
        value: Some(value.to_string().into_bytes()),
        headers: Vec::new(),
        timestamp: ts,
        topic: topic.into(),
        partition: 0,
        offset,
    }
}

/// What an output pairs: the `n` (offset) of its left and right record, if it has one.
fn pair_of(out: &Record) -> (Option<i64>, Option<i64>) {
    let v: Value = serde_json::from_slice(out.value.as_deref().unwrap()).unwrap();
    (v["left"]["n"].as_i64(), v["right"]["n"].as_i64())
}

/// A run's records: each side in roughly rising time, out of order by less than the
/// watermark's bound, so that none is late.
fn records(seed: u64, n: i64) -> (Vec<Record>, Vec<Record>) {
    let mut state = seed;
    let mut next = move |below: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % below
    };
    let mut make = |left: bool| -> Vec<Record> {
        (0..n)
            .map(|i| {
                let ts = 1_000 + i * 10 + next(60) as i64;
                rec(left, i, next(7) as u32, ts)
            })
            .collect()
    };
    (make(true), make(false))
}

/// The join computed directly: every pair of the same key at most `within` apart, then the
/// unpaired records of the outer sides alone.
fn reference(
    left: &[Record],
    right: &[Record],
    within: i64,
    outer: Outer,
) -> BTreeSet<(Option<i64>, Option<i64>)> {
    let json = |r: &Record| serde_json::from_slice::<Value>(r.value.as_deref().unwrap()).unwrap();
    let mut pairs = BTreeSet::new();
    for l in left {
        let lj = json(l);
        for r in right {
            let rj = json(r);
            let apart = (lj["ts"].as_i64().unwrap() - rj["ts"].as_i64().unwrap()).abs();
            if lj["id"] == rj["order"] && apart <= within {
                pairs.insert((Some(l.offset), Some(r.offset)));
            }
        }
    }
    let paired_left: BTreeSet<i64> = pairs.iter().filter_map(|p| p.0).collect();
    let paired_right: BTreeSet<i64> = pairs.iter().filter_map(|p| p.1).collect();
    if outer.keeps(true) {
        let alone = left.iter().filter(|l| !paired_left.contains(&l.offset));
        pairs.extend(alone.map(|l| (Some(l.offset), None)));
    }
    if outer.keeps(false) {
        let alone = right.iter().filter(|r| !paired_right.contains(&r.offset));
        pairs.extend(alone.map(|r| (None, Some(r.offset))));
    }
    pairs
}

/// Run the join over `left` in batches of `batch`, the other side arriving between them;
/// `restart_every` batches, a new stage takes over the state (a restart).
fn run(
    spec: &Arc<JoinSpec>,
    left: &[Record],
    right: &[Record],
    batch: usize,
    restart_every: Option<usize>,
) -> Vec<(Option<i64>, Option<i64>)> {
    let state = MemoryState::shared();
    let side = Arc::new(Given::default());
    let start = || joining(spec, &state, &side);
    let mut stage = start();
    let mut outputs = Vec::new();
    let now = Instant::now();
    for (i, (l, r)) in left.chunks(batch).zip(right.chunks(batch)).enumerate() {
        if restart_every.is_some_and(|every| i > 0 && i % every == 0) {
            stage = start();
        }
        side.add(r.iter().cloned());
        let out = stage.process(l.to_vec(), now);
        assert!(out.failures.is_empty() && out.late.is_empty(), "{out:?}");
        outputs.extend(out.records);
    }
    outputs.extend(stage.advance("orders", 0, now, false).records);
    outputs.extend(stage.finish().records);
    outputs.iter().map(pair_of).collect()
}

#[test]
fn every_pair_within_the_bound_is_emitted_once_as_a_direct_computation_finds() {
    for outer in [Outer::Inner, Outer::Left, Outer::Right, Outer::Full] {
        for seed in 1..4 {
            let (left, right) = records(seed, 300);
            let spec = spec(40, outer);
            let want = reference(&left, &right, 40, outer);
            for (batch, restart) in [(1, None), (17, None), (50, Some(2))] {
                let got = run(&spec, &left, &right, batch, restart);
                let unique: BTreeSet<_> = got.iter().copied().collect();
                assert_eq!(unique.len(), got.len(), "a pair emitted twice ({outer:?})");
                assert_eq!(unique, want, "{outer:?} seed {seed} batch {batch}");
            }
        }
    }
}

#[test]
fn records_leave_the_state_once_the_watermark_passes_them_by_the_bound() {
    let spec = spec(40, Outer::Left);
    let state = MemoryState::shared();
    let mut stage = JoinStage::new(spec, "join");
    stage.set_state(state.clone());
    let now = Instant::now();
    let kept = |state: &SharedState| {
        let all = state.all();
        all.iter()
            .filter(|((_, name), _)| entry::parse_name(name).is_some())
            .count()
    };
    let out = stage.process(vec![rec(true, 0, 1, 1_000)], now);
    assert!(out.records.is_empty());
    assert_eq!(kept(&state), 1);
    // Only the stream has records: the other side holds the watermark back until idle.
    let out = stage.process(vec![rec(true, 1, 2, 5_000)], now);
    assert!(out.records.is_empty());
    let later = now + Duration::from_secs(3601);
    let out = stage.process(vec![rec(true, 2, 2, 5_001)], later);
    // 5_001 - 100 - 1 is past 1_000 + 40: the first order is alone, and gone.
    assert_eq!(
        out.records.iter().map(pair_of).collect::<Vec<_>>(),
        [(Some(0), None)]
    );
    assert_eq!(kept(&state), 2);
    assert_eq!(
        entry::read_i64(&*state, &entry::watermark_key()),
        Some(4_900)
    );
}

#[test]
fn a_record_behind_the_watermark_is_late_and_bad_ones_fail_naming_their_place() {
    let side = Arc::new(Given::default());
    let mut stage = joining(&spec(40, Outer::Inner), &MemoryState::shared(), &side);
    let now = Instant::now();
    side.add([rec(false, 0, 1, 10_000)]);
    stage.process(vec![rec(true, 0, 1, 10_000)], now);
    let out = stage.process(vec![rec(true, 1, 1, 9_000)], now);
    assert_eq!(out.late.len(), 1);
    assert_eq!(out.late[0].watermark, 9_899);
    let mut bad = rec(true, 2, 1, 10_000);
    bad.value = Some(b"{\"ts\": 10000}".to_vec());
    side.add([Record {
        value: Some(b"not json".to_vec()),
        ..rec(false, 7, 1, 10_000)
    }]);
    let out = stage.process(vec![bad], now);
    let messages: Vec<String> = out
        .failures
        .iter()
        .map(|(r, e)| format!("{}@{} {}: {}", r.topic, r.offset, e.kind, e.message))
        .collect();
    assert_eq!(
        messages,
        [
            "orders@2 join: orders[0]@2: the value has no join key `/id`",
            "payments@-1 event-time: payments[0]@7: no event time: the value is not JSON \
             (expected ident at line 1 column 2)"
        ]
    );
}

#[test]
fn a_kept_record_survives_its_encoding() {
    let kept = Buffered {
        paired: true,
        key: Some(b"k".to_vec()),
        value: Some(b"{}".to_vec()),
    };
    assert_eq!(Buffered::decode(&kept.encode().value), Some(kept));
    let keyless = Buffered {
        paired: false,
        key: None,
        value: Some(b"[1]".to_vec()),
    };
    assert_eq!(Buffered::decode(&keyless.encode().value), Some(keyless));
    let name = entry::name(RIGHT, -5, 42, 1);
    assert_eq!(entry::parse_name(&name), Some((RIGHT, -5, 42)));
    assert!(entry::name(LEFT, -5, 1, 0) < entry::name(LEFT, 3, 0, 0));
    assert_eq!(entry::parse_name("jl\u{e9}"), None);
}

/// Whether a call's outputs were delivered, as a test says.
#[derive(Default)]
struct Flag(std::sync::atomic::AtomicBool);

impl Delivered for Flag {
    fn delivered(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Flag {
    fn set(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed)
    }
}

#[test]
fn at_least_once_a_crash_before_delivery_pairs_the_records_read_again_and_loses_none() {
    let spec = spec(40, Outer::Left);
    let (left, right) = records(7, 200);
    let want = reference(&left, &right, 40, Outer::Left);
    let state = MemoryState::shared();
    let start = |side: &Arc<Given>| {
        let mut stage = joining(&spec, &state, side);
        stage.defer_until_delivered(true);
        stage
    };
    let now = Instant::now();
    let mut got = Vec::new();
    // The first run delivers its first 10 calls' outputs only, then dies; the state it wrote
    // (at least once: ahead of the outputs) stays.
    let side = Arc::new(Given::default());
    let mut first = start(&side);
    let calls: Vec<_> = left.chunks(10).zip(right.chunks(10)).collect();
    for (i, (l, r)) in calls.iter().enumerate() {
        side.add(r.iter().cloned());
        let out = first.process(l.to_vec(), now);
        assert!(out.late.is_empty(), "{:?}", out.late);
        let flag = Arc::new(Flag::default());
        if i < 10 {
            flag.set();
            got.extend(out.records.iter().map(pair_of));
        }
        first.hold(&(flag as Arc<dyn Delivered>));
        if i == 14 {
            break;
        }
    }
    // The restart reads the stream again from call 10 (its committed offset) and the other
    // topic from the position the state has.
    let from = position(&*state).unwrap_or(0) as usize;
    assert!(
        from <= 100,
        "the position ran ahead of the delivered outputs: {from}"
    );
    let side = Arc::new(Given::new(right[from..].iter().cloned()));
    let mut second = start(&side);
    for l in left[100..].chunks(10) {
        let out = second.process(l.to_vec(), now);
        assert!(out.late.is_empty(), "read again, not late: {:?}", out.late);
        got.extend(out.records.iter().map(pair_of));
    }
    got.extend(second.finish().records.iter().map(pair_of));
    let got: BTreeSet<_> = got.into_iter().collect();
    assert!(
        want.is_subset(&got),
        "lost: {:?}",
        want.difference(&got).collect::<Vec<_>>()
    );
    assert_eq!(got.len(), want.len(), "pairs that should not be");
}

#[test]
fn a_call_s_position_is_written_only_once_it_and_every_call_before_it_are_delivered() {
    let state = MemoryState::shared();
    let side = Arc::new(Given::default());
    let mut stage = joining(&spec(40, Outer::Inner), &state, &side);
    stage.defer_until_delivered(true);
    let now = Instant::now();
    let flags: Vec<Arc<Flag>> = (0..2).map(|_| Arc::new(Flag::default())).collect();
    for (i, flag) in flags.iter().enumerate() {
        side.add([rec(false, i as i64, 1, 1_000)]);
        stage.process(vec![rec(true, i as i64, 1, 1_000)], now);
        stage.hold(&(flag.clone() as Arc<dyn Delivered>));
    }
    // The second call's outputs arrive first: its position waits for the first call's.
    flags[1].set();
    stage.advance("orders", 0, now, false);
    assert_eq!(position(&*state), None);
    flags[0].set();
    stage.advance("orders", 0, now, false);
    assert_eq!(position(&*state), Some(2));
}

#[test]
fn under_fail_nothing_after_a_failing_record_is_taken_in() {
    let state = MemoryState::shared();
    let side = Arc::new(Given::new([rec(false, 0, 1, 1_000)]));
    let mut stage = joining(&spec(40, Outer::Inner), &state, &side);
    stage.stop_at_first_failure();
    let mut bad = rec(true, 1, 1, 1_000);
    bad.value = Some(b"{\"ts\": 1000}".to_vec());
    let out = stage.process(
        vec![rec(true, 0, 2, 1_000), bad, rec(true, 2, 1, 1_000)],
        Instant::now(),
    );
    assert_eq!(out.failures.len(), 1);
    assert_eq!(out.failures[0].0.offset, -1, "stands for the whole call");
    assert!(
        !side.at_end(),
        "the other topic is not read in a failed call"
    );
    let kept: Vec<String> = state.all().into_iter().map(|((_, n), _)| n).collect();
    assert_eq!(
        kept.len(),
        1,
        "only the record before the failing one: {kept:?}"
    );
}

#[test]
fn records_a_flat_map_made_of_one_input_are_each_kept_and_paired() {
    let side = Arc::new(Given::default());
    let mut stage = joining(&spec(40, Outer::Inner), &MemoryState::shared(), &side);
    let now = Instant::now();
    let twin = numbered(true, 5, 1, 1_000, 50);
    stage.process(vec![rec(true, 5, 1, 1_000), twin], now);
    side.add([rec(false, 9, 1, 1_010)]);
    let out = stage.advance("orders", 0, now, false);
    let mut pairs: Vec<_> = out.records.iter().map(pair_of).collect();
    pairs.sort();
    assert_eq!(pairs, [(Some(5), Some(9)), (Some(50), Some(9))]);
}

#[test]
fn the_other_side_stops_holding_the_watermark_once_read_to_its_end_and_idle() {
    let spec = Arc::new(JoinSpec {
        idle_timeout: Duration::from_secs(10),
        ..(*spec(40, Outer::Left)).clone()
    });
    let side = Arc::new(Given::new([rec(false, 0, 9, 0)]));
    let mut stage = joining(&spec, &MemoryState::shared(), &side);
    let now = Instant::now();
    stage.process(vec![rec(true, 0, 1, 1_000)], now);
    stage.process(vec![rec(true, 1, 2, 50_000)], now);
    // The other side holds it back while the stream goes on...
    let out = stage.process(vec![rec(true, 2, 3, 50_001)], now + Duration::from_secs(9));
    assert!(out.records.is_empty());
    // ...until it has been read to its end and idle for 10 s: the stream's alone moves it.
    let later = now + Duration::from_secs(11);
    let out = stage.process(vec![rec(true, 3, 4, 50_002)], later);
    let alone: Vec<_> = out.records.iter().map(pair_of).collect();
    assert_eq!(alone, [(Some(0), None)]);
}

#[test]
fn records_of_no_single_input_are_each_kept_whatever_call_they_come_in() {
    let side = Arc::new(Given::default());
    let mut stage = joining(&spec(40, Outer::Inner), &MemoryState::shared(), &side);
    let now = Instant::now();
    // Two window results (offset -1) of one key and time, in two calls.
    for n in [1, 2] {
        let out = stage.process(vec![numbered(true, -1, 1, 1_000, n)], now);
        assert!(out.late.is_empty() && out.failures.is_empty());
    }
    side.add([rec(false, 9, 1, 1_010)]);
    let out = stage.advance("orders", 0, now, false);
    let mut pairs: Vec<_> = out.records.iter().map(pair_of).collect();
    pairs.sort();
    assert_eq!(pairs, [(Some(1), Some(9)), (Some(2), Some(9))]);
}

#[test]
fn at_least_once_a_record_read_again_after_it_expired_is_not_late() {
    let spec = spec(40, Outer::Left);
    let state = MemoryState::shared();
    let side = Arc::new(Given::default());
    let start = || {
        let mut stage = joining(&spec, &state, &side);
        stage.defer_until_delivered(true);
        stage
    };
    let now = Instant::now();
    let mut stage = start();
    stage.process(vec![rec(true, 0, 1, 1_000)], now);
    side.add([rec(false, 0, 2, 100_000)]);
    let out = stage.process(vec![rec(true, 1, 2, 100_000)], now);
    assert_eq!(
        out.records.iter().map(pair_of).collect::<Vec<_>>(),
        [(Some(1), Some(0)), (Some(0), None)]
    );
    let delivered = Arc::new(Flag::default());
    delivered.set();
    stage.hold(&(delivered as Arc<dyn Delivered>));
    stage.advance("orders", 0, now, false);
    // Its removal is written; the crash comes before its offset is committed.
    let mut stage = start();
    let out = stage.process(vec![rec(true, 0, 1, 1_000)], now);
    assert!(out.late.is_empty(), "read again, not late: {:?}", out.late);
    assert_eq!(
        out.records.iter().map(pair_of).collect::<Vec<_>>(),
        [(Some(0), None)]
    );
}
