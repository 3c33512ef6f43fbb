//! Hot reload: plugin files and pipeline changes swapped into a running pipeline.
//!
//! The first tests drive the reloader in-process (a [`LiveChain`] as a worker holds it); the
//! others run `weir run` against the test broker while its files are replaced under it, and
//! check every record came out exactly once, processed by one version, versions moving forward.

use crate::common;
use std::{
    collections::BTreeMap,
    ops::Deref,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use crate::common::{
    kafka::{json_of, unique, In, Kafka, Out, Topics, Weir},
    weir_bin,
};
use serde_json::{json, Value};
use weir::{
    chain::Stages,
    config::Pipeline,
    engine::{Engine, MemoryState, Record},
    reload::{LiveChain, Reloader},
};

/// Replace `to` with a copy of `from` the way build tools do: write beside it, then rename.
fn replace_by_rename(from: &Path, to: &Path) {
    let tmp = to.with_extension("wasm.tmp");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

/// Replace `to`'s content in place (truncate and write), the way `cp` does.
fn replace_in_place(from: &Path, to: &Path) {
    std::fs::write(to, std::fs::read(from).unwrap()).unwrap();
}

// ---------------------------------------------------------------------------------------------
// In-process: the reloader and a worker's chain
// ---------------------------------------------------------------------------------------------

fn record(n: u64) -> Record {
    Record {
        key: Some(b"k".to_vec()),
        value: Some(json!({ "n": n }).to_string().into_bytes()),
        headers: Vec::new(),
        timestamp: 0,
        topic: "t".into(),
        partition: 0,
        offset: n as i64,
    }
}

fn values(chain: &mut LiveChain, from: u64, count: u64) -> Vec<Value> {
    let out = chain.process((from..from + count).map(record).collect());
    assert!(out.failures.is_empty(), "{:?}", out.failures);
    out.records
        .iter()
        .map(|r| serde_json::from_slice(r.value.as_ref().unwrap()).unwrap())
        .collect()
}

/// Wait until the reloader has published generation `generation`.
fn published(reloader: &Reloader, generation: u64) {
    let started = Instant::now();
    while reloader.live().current().generation() < generation {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "generation {generation} was not published within 30s"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// The stages of the pipeline file `path`, a reloader watching them, and a worker's chain.
fn reloading(path: &Path) -> (Stages, Reloader, LiveChain) {
    let pipeline = Pipeline::load(path).unwrap();
    let engine = Engine::new(Engine::default_cache_dir()).unwrap();
    let stages = Stages::load(&engine, &pipeline).unwrap();
    let reloader = Reloader::start(engine, &pipeline, &stages).unwrap();
    let chain = LiveChain::start(&stages, Some(&reloader.live())).unwrap();
    (stages, reloader, chain)
}

/// A pipeline of one `tag` stage running `tag-v1` from a file of its own, watched; the
/// directory, the plugin file, the reloader and a worker's chain.
fn watched_tag() -> (tempfile::TempDir, PathBuf, Reloader, LiveChain) {
    let dir = common::scratch();
    let plugin = dir.path().join("tag.wasm");
    std::fs::copy(common::component("tag-v1"), &plugin).unwrap();
    let path = dir.path().join("pipeline.toml");
    std::fs::write(&path, "[[stage]]\nname = \"tag\"\nplugin = \"tag.wasm\"\n").unwrap();
    let (_, reloader, chain) = reloading(&path);
    (dir, plugin, reloader, chain)
}

/// Wait until the reloader has checked changed files `checks` times.
fn checked(reloader: &Reloader, checks: u64) {
    let started = Instant::now();
    while reloader.live().checks() < checks {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no check {checks} within 30s"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_replaced_plugin_runs_from_the_next_batch_on() {
    let (_dir, plugin, reloader, mut chain) = watched_tag();
    let live = reloader.live();

    assert!(values(&mut chain, 0, 3).iter().all(|v| v["version"] == 1));
    replace_by_rename(&common::component("tag-v2"), &plugin);
    published(&reloader, 1);
    // The batch in hand when the version changed still runs wholly on the old one.
    assert!(values(&mut chain, 3, 3).iter().all(|v| v["version"] == 1));
    chain.refresh();
    assert_eq!(chain.generation(), 1);
    assert!(values(&mut chain, 6, 3).iter().all(|v| v["version"] == 2));

    replace_in_place(&common::component("tag-v1"), &plugin);
    published(&reloader, 2);
    chain.refresh();
    assert!(values(&mut chain, 9, 3).iter().all(|v| v["version"] == 1));
    assert_eq!(live.swaps(), 2);
    assert_eq!(live.rejected(), 0);
}

#[test]
fn a_file_rewritten_unchanged_publishes_nothing() {
    let (_dir, plugin, reloader, _chain) = watched_tag();
    replace_in_place(&common::component("tag-v1"), &plugin);
    checked(&reloader, 1);
    assert_eq!(reloader.live().current().generation(), 0);
    assert_eq!(reloader.live().rejected(), 0);
}

#[test]
fn a_file_caught_half_written_is_rejected_and_loaded_once_whole() {
    let (_dir, plugin, reloader, mut chain) = watched_tag();
    let bytes = std::fs::read(common::component("tag-v2")).unwrap();
    let (head, tail) = bytes.split_at(bytes.len() / 2);
    // The writer stops halfway for longer than the quiet period.
    std::fs::write(&plugin, head).unwrap();
    checked(&reloader, 1);
    assert_eq!(reloader.live().rejected(), 1);
    assert_eq!(reloader.live().current().generation(), 0);
    chain.refresh();
    assert!(values(&mut chain, 0, 2).iter().all(|v| v["version"] == 1));
    // Once it has finished, the whole file goes in.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&plugin)
        .unwrap();
    std::io::Write::write_all(&mut file, tail).unwrap();
    drop(file);
    published(&reloader, 1);
    chain.refresh();
    assert!(values(&mut chain, 2, 2).iter().all(|v| v["version"] == 2));
}

#[test]
fn a_config_change_keeps_the_stage_state() {
    let dir = common::scratch();
    let path = dir.path().join("pipeline.toml");
    let pipeline_text = |tag: &str| {
        format!(
            "[[stage]]\nname = \"count\"\nplugin = \"{}\"\nconfig = {{ tag = \"{tag}\" }}\n",
            common::component("misbehave").display()
        )
    };
    std::fs::write(&path, pipeline_text("a")).unwrap();
    let (stages, reloader, mut chain) = reloading(&path);
    assert_eq!(stages.stateful(), vec![(0, "count".to_string())]);
    // The host's state of this stage and partition, handed to the chain every batch as
    // `weir run` does.
    let state = MemoryState::shared();
    chain.set_state(0, state.clone());
    let before = values(&mut chain, 0, 2);
    assert_eq!(
        (before[1]["tag"].clone(), before[1]["seen"].clone()),
        (json!("a"), json!(2))
    );

    std::fs::write(&path, pipeline_text("b")).unwrap();
    published(&reloader, 1);
    chain.refresh();
    chain.set_state(0, state.clone());
    let after = values(&mut chain, 2, 2);
    // A new instance with the new config, counting on from the same state.
    assert_eq!(
        (after[0]["tag"].clone(), after[0]["seen"].clone()),
        (json!("b"), json!(3))
    );
    assert_eq!(after[1]["seen"], 4);
}

/// Point the link `..data` in `dir` at a new directory `..NAME` holding `files` (name, content),
/// the way Kubernetes updates a mounted ConfigMap: the new directory is written whole, a new
/// link is renamed over `..data` (one atomic step), and the old directory removed.
fn switch_configmap(dir: &Path, name: &str, files: &[(&str, Vec<u8>)]) {
    let version = dir.join(format!("..{name}"));
    std::fs::create_dir(&version).unwrap();
    for (file, content) in files {
        std::fs::write(version.join(file), content).unwrap();
    }
    let data = dir.join("..data");
    let old = std::fs::read_link(&data).ok();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(version.file_name().unwrap(), &tmp).unwrap();
    std::fs::rename(&tmp, &data).unwrap();
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
}

#[test]
fn files_behind_a_switched_symlink_are_reloaded() {
    // A ConfigMap holding the pipeline file and the plugin, mounted as Kubernetes does:
    // `pipeline.toml -> ..data/pipeline.toml`, `tag.wasm -> ..data/tag.wasm`, `..data -> ..v1`.
    let dir = common::scratch();
    // Version `name` of the ConfigMap: the `tag` stage with `config`, running `build`.
    let update = |name: &str, config: &str, build: &str| {
        let pipeline =
            format!("[[stage]]\nname = \"tag\"\nplugin = \"tag.wasm\"\nconfig = {config}\n");
        let plugin = std::fs::read(common::component(build)).unwrap();
        switch_configmap(
            dir.path(),
            name,
            &[
                ("pipeline.toml", pipeline.into_bytes()),
                ("tag.wasm", plugin),
            ],
        );
    };
    update("v1", "{}", "tag-v1");
    for file in ["pipeline.toml", "tag.wasm"] {
        std::os::unix::fs::symlink(format!("..data/{file}"), dir.path().join(file)).unwrap();
    }
    let (_, reloader, mut chain) = reloading(&dir.path().join("pipeline.toml"));
    assert!(values(&mut chain, 0, 3).iter().all(|v| v["version"] == 1));

    // The plugin changes behind `..data`; no event names `tag.wasm` itself.
    update("v2", "{}", "tag-v2");
    published(&reloader, 1);
    chain.refresh();
    assert!(values(&mut chain, 3, 3).iter().all(|v| v["version"] == 2));

    // Both files change in the next update, and the watch has followed `..data` to `..v2`.
    update("v3", "{ field = \"release\" }", "tag-v1");
    published(&reloader, 2);
    chain.refresh();
    let tagged = values(&mut chain, 6, 3);
    assert!(
        tagged
            .iter()
            .all(|v| v["release"] == 1 && v.get("version").is_none()),
        "{tagged:?}"
    );

    // A file the links resolve to, rewritten in place.
    replace_in_place(
        &common::component("tag-v2"),
        &dir.path().join("..v3/tag.wasm"),
    );
    published(&reloader, 3);
    chain.refresh();
    assert!(values(&mut chain, 9, 3).iter().all(|v| v["release"] == 2));
    assert_eq!(reloader.live().rejected(), 0);
}

/// A pipeline of one `count` stage (keyed state) running the component `build` from a file of
/// its own, watched, with `extra` after the stage; the plugin file, the reloader, a worker's
/// chain and the stage's state, handed to the chain as `weir run` does.
fn watched_count(
    build: &str,
    extra: &str,
) -> (
    tempfile::TempDir,
    PathBuf,
    Reloader,
    LiveChain,
    weir::engine::SharedState,
) {
    let dir = common::scratch();
    let plugin = dir.path().join("count.wasm");
    std::fs::copy(common::component(build), &plugin).unwrap();
    let path = dir.path().join("pipeline.toml");
    std::fs::write(
        &path,
        format!("[[stage]]\nname = \"count\"\nplugin = \"count.wasm\"\n{extra}"),
    )
    .unwrap();
    let (stages, reloader, mut chain) = reloading(&path);
    assert_eq!(stages.stateful(), vec![(0, "count".to_string())]);
    let state = MemoryState::shared();
    chain.set_state(0, state.clone());
    (dir, plugin, reloader, chain, state)
}

/// `(version, count)` of each output of `count` records through `chain`.
fn counted(
    chain: &mut LiveChain,
    state: &weir::engine::SharedState,
    from: u64,
    count: u64,
) -> Vec<(Value, Value)> {
    chain.set_state(0, state.clone());
    values(chain, from, count)
        .into_iter()
        .map(|v| (v["version"].clone(), v["count"].clone()))
        .collect()
}

/// `component` with a later build stamp that declares it needs `memory_mb`.
fn needing_memory(component: &Path, memory_mb: u64) -> Vec<u8> {
    common::needing(component, json!({ "memory_mb": memory_mb }))
}

#[test]
fn a_build_that_needs_more_than_its_stage_gives_is_refused() {
    let (dir, plugin, reloader, _chain) = watched_tag();
    let hungry = dir.path().join("hungry.wasm");
    std::fs::write(&hungry, needing_memory(&common::component("tag-v2"), 4096)).unwrap();
    replace_by_rename(&hungry, &plugin);
    checked(&reloader, 1);
    assert_eq!(reloader.live().rejected(), 1);
    assert_eq!(reloader.live().current().generation(), 0);
    // The same build declaring what the stage gives is taken.
    std::fs::write(&hungry, needing_memory(&common::component("tag-v2"), 64)).unwrap();
    replace_by_rename(&hungry, &plugin);
    published(&reloader, 1);
    // Limits lowered below its needs in the pipeline file, the build unchanged: refused too.
    let limited = "[[stage]]\nname = \"tag\"\nplugin = \"tag.wasm\"\nlimits = { memory_mb = 32 }\n";
    std::fs::write(dir.path().join("pipeline.toml"), limited).unwrap();
    let started = Instant::now();
    while reloader.live().rejected() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not refused within 30s"
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(reloader.live().current().generation(), 1);
}

#[test]
fn a_build_of_a_lower_state_version_is_refused() {
    // count-v2 keeps its state at state version 1, count-v1 at 0.
    let (_dir, plugin, reloader, mut chain, state) = watched_count("count-v1", "");
    assert_eq!(
        counted(&mut chain, &state, 0, 2),
        [(json!(1), json!(1)), (json!(1), json!(2))]
    );
    replace_by_rename(&common::component("count-v2"), &plugin);
    published(&reloader, 1);
    chain.refresh();
    assert_eq!(counted(&mut chain, &state, 2, 1), [(json!(2), json!(3))]);

    // Back to count-v1: it could not read what count-v2 has written.
    replace_by_rename(&common::component("count-v1"), &plugin);
    checked(&reloader, 2);
    assert_eq!(reloader.live().rejected(), 1);
    assert_eq!(reloader.live().current().generation(), 1);
    chain.refresh();
    assert_eq!(counted(&mut chain, &state, 3, 1), [(json!(2), json!(4))]);
}

#[test]
fn a_build_of_a_lower_state_version_than_the_one_started_with_is_refused() {
    let (_dir, plugin, reloader, mut chain, state) = watched_count("count-v2", "");
    assert_eq!(counted(&mut chain, &state, 0, 1), [(json!(2), json!(1))]);
    replace_by_rename(&common::component("count-v1"), &plugin);
    checked(&reloader, 1);
    assert_eq!(reloader.live().rejected(), 1);
    assert_eq!(reloader.live().current().generation(), 0);
}

#[test]
fn a_failing_version_that_raised_the_state_version_is_not_rolled_back() {
    let (_dir, plugin, reloader, mut chain, state) = watched_count(
        "count-v1",
        "[reload]\ntrial_records = 20\nrollback_rate = 0.1\n",
    );
    let live = reloader.live();
    assert_eq!(counted(&mut chain, &state, 0, 1), [(json!(1), json!(1))]);
    replace_by_rename(&common::component("count-v2"), &plugin);
    published(&reloader, 1);
    chain.refresh();
    // count-v2 counts a record before it reads its value: one that is not JSON fails after
    // the key's count was stored at state version 1.
    chain.set_state(0, state.clone());
    let garbage: Vec<Record> = (1..11)
        .map(|n| Record {
            value: Some(b"not json".to_vec()),
            ..record(n)
        })
        .collect();
    let out = chain.process(garbage);
    assert_eq!(out.failures.len(), 10);
    let started = Instant::now();
    while live.rejected() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the rollback was neither done nor refused within 30s (generation {}, {} rollbacks)",
            live.current().generation(),
            live.rollbacks()
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!((live.rollbacks(), live.current().generation()), (0, 1));
    chain.refresh();
    assert_eq!(counted(&mut chain, &state, 11, 1)[0].0, json!(2));
}

/// Says "delivered" once set, as the sink's acknowledgements do.
#[derive(Default)]
struct Acked(AtomicBool);

impl weir::chain::window::Delivered for Acked {
    fn delivered(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[test]
fn a_window_stage_swapped_while_a_fired_window_awaits_delivery_fires_it_once() {
    let dir = common::scratch();
    let path = dir.path().join("pipeline.toml");
    let text = |note: &str| {
        format!(
            "[[stage]]\nname = \"win\"\nplugin = \"{}\"\nconfig = {{ note = \"{note}\" }}\n\
             window = {{ kind = \"tumbling\", size = \"1m\" }}\ntime = {{ field = \"/ts\" }}\n",
            common::component("count-window").display()
        )
    };
    std::fs::write(&path, text("a")).unwrap();
    let (_, reloader, mut chain) = reloading(&path);
    // At least once, as `weir run` sets it: a fired window is marked only once its output is
    // delivered.
    chain.prepare_each(|c| c.defer_until_delivered());
    let state = MemoryState::shared();
    let event = |offset: i64, ts: i64| Record {
        key: Some(b"k".to_vec()),
        value: Some(json!({ "ts": ts }).to_string().into_bytes()),
        offset,
        ..record(0)
    };
    let batch = |chain: &mut LiveChain, records: Vec<Record>| {
        chain.set_state(0, state.clone());
        let out = chain.process(records);
        assert!(out.failures.is_empty(), "{:?}", out.failures);
        let acked = Arc::new(Acked::default());
        let delivered: Arc<dyn weir::chain::window::Delivered> = acked.clone();
        chain.hold(&delivered);
        (out.records, acked)
    };
    let (fired, acked) = batch(
        &mut chain,
        vec![event(0, 1_000), event(1, 2_000), event(2, 61_000)],
    );
    assert_eq!(fired.len(), 1, "[0, 1m) fires with 2 records");

    // A new version while that window's output is still on its way.
    std::fs::write(&path, text("b")).unwrap();
    published(&reloader, 1);
    chain.refresh();
    assert_eq!(chain.generation(), 1);
    acked.0.store(true, Ordering::Relaxed);
    let (again, _) = batch(&mut chain, vec![event(3, 62_000)]);
    assert!(again.is_empty(), "[0, 1m) fired a second time: {again:?}");
}

// ---------------------------------------------------------------------------------------------
// `weir run` against the test broker
// ---------------------------------------------------------------------------------------------

/// Topics, a group, and a directory for the pipeline file, its plugin and the log.
struct Setup {
    topics: Topics,
    /// Run under `[delivery] guarantee = "exactly-once"`.
    exactly_once: bool,
}

impl Deref for Setup {
    type Target = Topics;
    fn deref(&self) -> &Topics {
        &self.topics
    }
}

impl Setup {
    fn new(name: &str, partitions: i32) -> Setup {
        Setup {
            topics: Topics::new(name, partitions),
            exactly_once: false,
        }
    }

    /// The same, under exactly once.
    fn exactly_once(self) -> Setup {
        Setup {
            exactly_once: true,
            ..self
        }
    }

    /// The plugin file the pipeline's stage runs (replaced by the tests).
    fn plugin(&self) -> PathBuf {
        self.dir.path().join("tag.wasm")
    }

    fn pipeline_path(&self) -> PathBuf {
        self.dir.path().join("pipeline.toml")
    }

    /// Write the pipeline file: `[source]` with `topics`, a `tag` stage with `config`, then
    /// `extra` (more stages or tables).
    fn write_pipeline(&self, topics: &str, config: &str, extra: &str) -> PathBuf {
        let text = format!(
            r#"
[source]
brokers = "{brokers}"
topics = [{topics}]
group = "{group}"
batch_size = 16
kafka = {{ "session.timeout.ms" = 6000 }}

[sink]
topic = "{sink}"

[delivery]
checkpoint_interval = "200ms"
{guarantee}

[[stage]]
name = "tag"
plugin = "tag.wasm"
config = {config}

{extra}
"#,
            brokers = self.kafka.brokers,
            group = self.group,
            sink = self.sink,
            guarantee = if self.exactly_once {
                "guarantee = \"exactly-once\""
            } else {
                ""
            },
        );
        let path = self.pipeline_path();
        std::fs::write(&path, text).unwrap();
        path
    }

    fn topics(&self) -> String {
        format!("\"{}\"", self.source)
    }

    fn start(&self, config: &str, extra: &str) -> Weir {
        self.start_with("tag-v1", config, extra)
    }

    /// [`Setup::start`] with the component `build` as the stage's plugin.
    fn start_with(&self, build: &str, config: &str, extra: &str) -> Weir {
        std::fs::copy(common::component(build), self.plugin()).unwrap();
        let pipeline = self.write_pipeline(&self.topics(), config, extra);
        let mut weir = Weir::start(weir_bin(), &pipeline);
        weir.wait_for_log("assigned", Duration::from_secs(60));
        weir
    }
}

/// Record `n`: JSON `{"n": n}`, keyed over six keys.
fn input(n: u64) -> In {
    In {
        key: Some(format!("k{}", n % 6)),
        value: json!({ "n": n }).to_string().into_bytes(),
        ..In::default()
    }
}

/// Produces records `from`, `from + 1`, … in small chunks until stopped; `stop` returns the
/// number after the last one.
struct Stream {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<u64>,
}

impl Stream {
    fn start(k: &Kafka, topic: &str, from: u64) -> Stream {
        let stop = Arc::new(AtomicBool::new(false));
        let (k, topic, flag) = (k.clone(), topic.to_string(), stop.clone());
        let handle = thread::spawn(move || {
            let mut next = from;
            while !flag.load(Ordering::Relaxed) {
                let chunk: Vec<In> = (next..next + 20).map(input).collect();
                k.produce(&topic, &chunk);
                next += 20;
                thread::sleep(Duration::from_millis(10));
            }
            next
        });
        Stream { stop, handle }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

/// Per key, the outputs in the order they were written.
fn by_key(output: &[Out]) -> BTreeMap<String, Vec<Value>> {
    let mut map: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for o in output {
        map.entry(o.key.clone().unwrap_or_default())
            .or_default()
            .push(json_of(o));
    }
    map
}

/// Check that the output holds every input `0..total` exactly once, each key's in order.
fn every_input_once(output: &[Out], total: u64, log: &str) {
    each_input_once(output, total, log);
    in_key_order(output);
}

/// Check that each key's outputs are in input order.
fn in_key_order(output: &[Out]) {
    for (key, values) in by_key(output) {
        let ns: Vec<u64> = values.iter().map(|v| v["n"].as_u64().unwrap()).collect();
        assert!(
            ns.windows(2).all(|w| w[0] < w[1]),
            "key {key} out of order: {ns:?}"
        );
    }
}

/// Check that `output` holds every input `0..total` exactly once, in any order.
fn each_input_once(output: &[Out], total: u64, log: &str) {
    let mut ns: Vec<u64> = output
        .iter()
        .map(|o| json_of(o)["n"].as_u64().unwrap())
        .collect();
    ns.sort_unstable();
    let want: Vec<u64> = (0..total).collect();
    if ns != want {
        let missing: Vec<u64> = want
            .iter()
            .filter(|n| ns.binary_search(n).is_err())
            .copied()
            .collect();
        let twice: Vec<u64> = ns
            .windows(2)
            .filter(|w| w[0] == w[1])
            .map(|w| w[0])
            .collect();
        panic!(
            "{} outputs for {total} inputs; missing {:?}…, twice {:?}…; log:\n{log}",
            ns.len(),
            &missing[..missing.len().min(20)],
            &twice[..twice.len().min(20)]
        );
    }
}

/// Stop `weir` cleanly after reading `expected` records of the sink; under exactly once, the
/// output is what a read_committed reader sees once it has stopped.
fn finish(setup: &Setup, mut weir: Weir, expected: u64) -> (Vec<Out>, String) {
    let output = setup
        .kafka
        .read(&setup.sink, expected as usize, Duration::from_secs(120));
    let code = weir.stop();
    let log = weir.log();
    assert_eq!(code, Some(0), "weir run did not exit cleanly; log:\n{log}");
    if setup.exactly_once {
        return (setup.kafka.read_committed(&setup.sink, 3), log);
    }
    (output, log)
}

#[test]
fn a_plugin_replaced_ten_times_under_a_stream_processes_every_record_once() {
    replace_ten_times_under_a_stream(Setup::new("swaps", 3));
}

#[test]
fn under_exactly_once_a_plugin_replaced_ten_times_commits_every_record_once() {
    replace_ten_times_under_a_stream(Setup::new("swaps-eos", 3).exactly_once());
}

/// The plugin replaced 10 times while a stream runs through it (on 3 partitions); every input
/// comes out once, processed by one version, versions moving forward per key.
fn replace_ten_times_under_a_stream(setup: Setup) {
    let mut weir = setup.start("{}", "");
    // The first version has records of every key before anything is swapped.
    produce_and_expect(&setup, &weir, 0, 60, 1);
    let stream = Stream::start(&setup.kafka, &setup.source, 60);
    let versions = [common::component("tag-v1"), common::component("tag-v2")];
    for swap in 1..=10u64 {
        // Generation `swap` runs version 2 when odd, 1 when even; half the swaps rename a new
        // file over the old one, half overwrite it in place.
        let new = &versions[(swap % 2) as usize];
        if swap % 4 < 2 {
            replace_by_rename(new, &setup.plugin());
        } else {
            replace_in_place(new, &setup.plugin());
        }
        weir.wait_for_log(
            &format!("generation {swap} published"),
            Duration::from_secs(60),
        );
        // Some records go through each version before the next swap.
        weir.wait_for_log(
            &format!("now runs generation {swap}"),
            Duration::from_secs(60),
        );
    }
    let total = stream.stop();
    let (output, log) = finish(&setup, weir, total);
    every_input_once(&output, total, &log);
    assert!(!log.contains("rejected"), "log:\n{log}");
    assert!(
        log.contains(", 10 swaps (0 rolled back) in "),
        "the run's counts show the swaps; log:\n{log}"
    );

    // Per key (so per source partition), versions only move forward: the tags run 1, 2, 1, …
    // in at most as many runs as there were versions, starting with the first.
    let mut both = false;
    for (key, values) in by_key(&output) {
        let tags: Vec<u64> = values
            .iter()
            .map(|v| v["version"].as_u64().unwrap())
            .collect();
        let mut runs = tags.clone();
        runs.dedup();
        assert_eq!(runs[0], 1, "key {key}: {tags:?}");
        assert!(
            runs.len() <= 11,
            "key {key} went back to an older version: {runs:?}"
        );
        both |= runs.len() > 1;
    }
    assert!(both, "no key saw a second version; log:\n{log}");
}

/// Produce `count` records from `from` on, and wait for them in the sink; they must carry
/// `version`.
fn produce_and_expect(setup: &Setup, weir: &Weir, from: u64, count: u64, version: u64) {
    let records: Vec<In> = (from..from + count).map(input).collect();
    setup.kafka.produce(&setup.source, &records);
    let expected = (from + count) as usize;
    let timeout = Duration::from_secs(60);
    // Under exactly once, weir's own reader decides by the log's markers: librdkafka's reader
    // once stalled on one partition of such a topic on the test broker (CI, session 5).
    let output = if setup.exactly_once {
        (setup.kafka).wait_read_committed(&setup.sink, setup.partitions, expected, timeout)
    } else {
        setup.kafka.read(&setup.sink, expected, timeout)
    };
    let tagged: Vec<u64> = output
        .iter()
        .map(json_of)
        .filter(|v| (from..from + count).contains(&v["n"].as_u64().unwrap()))
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(
        tagged,
        vec![version; count as usize],
        "records {from}.. must run on version {version}; log:\n{}",
        weir.log()
    );
}

/// Wait for one log line saying `file` was rejected for `reason`.
fn wait_for_rejection(weir: &mut Weir, file: &str, reason: &str) {
    let started = Instant::now();
    let line = |log: &str| {
        log.lines()
            .find(|l| {
                l.contains(&format!("reload: {file}"))
                    && l.contains("rejected, the running version stays")
                    && l.contains(reason)
            })
            .map(str::to_string)
    };
    while line(&weir.log()).is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no line rejecting {file} for {reason:?}; log:\n{}",
            weir.log()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn broken_versions_are_rejected_and_the_running_one_stays() {
    let setup = Setup::new("broken", 2);
    let config = "{ field = \"version\" }";
    let mut weir = setup.start(config, "");
    produce_and_expect(&setup, &weir, 0, 20, 1);
    let plugin = setup.plugin();
    let file = plugin.display().to_string();
    let pipeline = setup.pipeline_path().display().to_string();

    // Not wasm at all.
    std::fs::write(&plugin, b"#!/bin/sh\necho not a component\n").unwrap();
    wait_for_rejection(
        &mut weir,
        &file,
        "does not start with the wasm component header",
    );
    produce_and_expect(&setup, &weir, 20, 20, 1);

    // The wrong world: a window plugin where a transform runs.
    replace_by_rename(&common::component("count-window"), &plugin);
    wait_for_rejection(&mut weir, &file, "the wrong world for the stage");
    produce_and_expect(&setup, &weir, 40, 20, 1);

    // A transform whose `init` refuses the stage's config (`enrich` knows no `field`).
    replace_by_rename(&common::component("enrich"), &plugin);
    wait_for_rejection(
        &mut weir,
        &file,
        "rejected by its init: invalid plugin config",
    );
    produce_and_expect(&setup, &weir, 60, 20, 1);

    // A plugin that keeps keyed state, where the stage had none: that needs a restart.
    replace_by_rename(&common::component("misbehave"), &plugin);
    wait_for_rejection(
        &mut weir,
        &file,
        "restart `weir run` to add a stateful stage",
    );
    produce_and_expect(&setup, &weir, 80, 20, 1);

    // A config the running plugin's `init` traps on.
    setup.write_pipeline(
        &setup.topics(),
        "{ field = \"version\", trap_in_init = true }",
        "",
    );
    wait_for_rejection(&mut weir, &pipeline, "asked to trap in init");
    produce_and_expect(&setup, &weir, 100, 20, 1);

    // A pipeline file that does not parse.
    std::fs::write(setup.pipeline_path(), "[[stage]\nname = \"tag\"\n").unwrap();
    weir.wait_for_log(
        &format!("reload: {pipeline}: TOML parse error"),
        Duration::from_secs(60),
    );
    assert!(weir.log().contains("the running pipeline stays"));
    produce_and_expect(&setup, &weir, 120, 20, 1);

    // A change only a restart can apply.
    let other = unique("broken-other");
    setup.write_pipeline(&format!("{}, \"{other}\"", setup.topics()), config, "");
    weir.wait_for_log(
        "[source] changed, which needs a restart of `weir run`; ignored",
        Duration::from_secs(60),
    );
    produce_and_expect(&setup, &weir, 140, 20, 1);

    // After all that, a good version still goes in.
    setup.write_pipeline(&setup.topics(), config, "");
    replace_by_rename(&common::component("tag-v2"), &plugin);
    weir.wait_for_log("generation 1 published", Duration::from_secs(60));
    produce_and_expect(&setup, &weir, 160, 20, 2);
    let (output, log) = finish(&setup, weir, 180);
    every_input_once(&output, 180, &log);
    assert_eq!(
        log.matches("rejected, the running version stays").count(),
        5,
        "one line per rejected version; log:\n{log}"
    );
}

/// Produce `count` records from `from` on and wait for them in the sink; their values, in
/// offset order per key, flattened.
fn produce_and_read(setup: &Setup, from: u64, count: u64) -> Vec<Value> {
    let records: Vec<In> = (from..from + count).map(input).collect();
    setup.kafka.produce(&setup.source, &records);
    setup
        .kafka
        .read(
            &setup.sink,
            (from + count) as usize,
            Duration::from_secs(60),
        )
        .iter()
        .map(json_of)
        .filter(|v| (from..from + count).contains(&v["n"].as_u64().unwrap()))
        .collect()
}

#[test]
fn sighup_and_weir_reload_reload_files_that_are_not_watched() {
    let setup = Setup::new("sighup", 2);
    // The stage's plugin is a symlink to a release elsewhere, as deploy tools lay files out, and
    // nothing is watched: only SIGHUP can bring a change in.
    let releases = setup.dir.path().join("releases");
    std::fs::create_dir(&releases).unwrap();
    let release = releases.join("tag.wasm");
    std::fs::copy(common::component("tag-v1"), &release).unwrap();
    let pipeline = setup.write_pipeline(&setup.topics(), "{}", "[reload]\nwatch = false\n");
    std::os::unix::fs::symlink(&release, setup.plugin()).unwrap();
    let mut weir = Weir::start(weir_bin(), &pipeline);
    weir.wait_for_log("assigned", Duration::from_secs(60));
    produce_and_expect(&setup, &weir, 0, 20, 1);

    replace_in_place(&common::component("tag-v2"), &release);
    // Left alone, the change stays out.
    thread::sleep(Duration::from_secs(1));
    produce_and_expect(&setup, &weir, 20, 20, 1);
    weir.signal("HUP");
    weir.wait_for_log("generation 1 published", Duration::from_secs(60));
    produce_and_expect(&setup, &weir, 40, 20, 2);

    // `weir reload PIPELINE` finds the running process by its pipeline file and does the same.
    replace_in_place(&common::component("tag-v1"), &release);
    let out = std::process::Command::new(weir_bin())
        .arg("reload")
        .arg(&pipeline)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "weir reload: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("pid {}", weir.pid())),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    weir.wait_for_log("generation 2 published", Duration::from_secs(60));
    produce_and_expect(&setup, &weir, 60, 20, 1);
    let (output, log) = finish(&setup, weir, 80);
    every_input_once(&output, 80, &log);
}

#[test]
fn weir_run_reloads_a_plugin_behind_a_switched_symlink() {
    let setup = Setup::new("symlink", 2);
    // `tag.wasm -> ..data/tag.wasm`, `..data -> ..v1`: a ConfigMap as Kubernetes mounts it.
    let build = |name: &str| std::fs::read(common::component(name)).unwrap();
    switch_configmap(setup.dir.path(), "v1", &[("tag.wasm", build("tag-v1"))]);
    std::os::unix::fs::symlink("..data/tag.wasm", setup.plugin()).unwrap();
    let pipeline = setup.write_pipeline(&setup.topics(), "{}", "");
    let mut weir = Weir::start(weir_bin(), &pipeline);
    weir.wait_for_log("assigned", Duration::from_secs(60));
    produce_and_expect(&setup, &weir, 0, 20, 1);

    switch_configmap(setup.dir.path(), "v2", &[("tag.wasm", build("tag-v2"))]);
    weir.wait_for_log("generation 1 published", Duration::from_secs(60));
    produce_and_expect(&setup, &weir, 20, 20, 2);
    let (output, log) = finish(&setup, weir, 40);
    every_input_once(&output, 40, &log);
}

#[test]
fn stage_configs_additions_removals_and_order_apply_live() {
    let setup = Setup::new("stages", 2);
    let mut weir = setup.start("{ field = \"version\" }", "");
    let chunk = |from| produce_and_read(&setup, from, 30);
    let fields = |values: &[Value]| -> Vec<Vec<String>> {
        values
            .iter()
            .map(|v| {
                let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
                keys.sort();
                keys
            })
            .collect()
    };
    let all = |keys: &[&str]| -> Vec<Vec<String>> {
        vec![keys.iter().map(|k| k.to_string()).collect(); 30]
    };
    assert_eq!(fields(&chunk(0)), all(&["n", "version"]));

    // A config change and a stage added after it, which doubles what `tag` wrote.
    let double = |from: &str| {
        format!(
            "[[stage]]\nname = \"double\"\nplugin = \"{}\"\nconfig = {{ derive = [{{ into = \
             \"/double\", from = \"/{from}\", multiply = 2 }}] }}\n",
            common::component("enrich").display()
        )
    };
    setup.write_pipeline(
        &setup.topics(),
        "{ field = \"release\" }",
        &double("release"),
    );
    weir.wait_for_log("generation 1 published", Duration::from_secs(60));
    let values = chunk(30);
    assert_eq!(fields(&values), all(&["double", "n", "release"]));
    assert!(values.iter().all(|v| v["double"] == 2));

    // The same two stages the other way round: `double` finds nothing to double yet.
    let text = std::fs::read_to_string(setup.pipeline_path()).unwrap();
    let tag_at = text.find("[[stage]]\nname = \"tag\"").unwrap();
    let double_at = text.find("[[stage]]\nname = \"double\"").unwrap();
    let reordered = format!(
        "{}{}\n{}",
        &text[..tag_at],
        &text[double_at..],
        &text[tag_at..double_at]
    );
    std::fs::write(setup.pipeline_path(), reordered).unwrap();
    weir.wait_for_log("generation 2 published", Duration::from_secs(60));
    assert!(weir.log().contains("stages reordered: double, tag"));
    assert_eq!(fields(&chunk(60)), all(&["n", "release"]));

    // `double` removed, and the first config back.
    setup.write_pipeline(&setup.topics(), "{ field = \"version\" }", "");
    weir.wait_for_log("generation 3 published", Duration::from_secs(60));
    assert_eq!(fields(&chunk(90)), all(&["n", "version"]));
    let (output, log) = finish(&setup, weir, 120);
    every_input_once(&output, 120, &log);
}

#[test]
fn a_new_version_that_fails_its_first_records_is_rolled_back() {
    let setup = Setup::new("rollback", 2);
    let extra = format!(
        "[errors]\npolicy = \"dead-letter\"\ntopic = \"{}\"\n",
        setup.dlq
    );
    // Version 2 fails every record under this config: a bad release.
    let mut weir = setup.start("{ fail_version = 2 }", &extra);
    produce_and_expect(&setup, &weir, 0, 20, 1);
    replace_by_rename(&common::component("tag-v2"), &setup.plugin());
    weir.wait_for_log("generation 1 published", Duration::from_secs(60));
    // A stream, not one burst: a trial is judged between batches, and 200 records produced at
    // once can reach the workers as one batch each, all through the bad version before any
    // verdict (seen in CI, session 5).
    let failing: Vec<In> = (20..220).map(input).collect();
    for slice in failing.chunks(10) {
        setup.kafka.produce(&setup.source, slice);
        std::thread::sleep(Duration::from_millis(50));
    }
    weir.wait_for_log(
        "rolled back to generation 0 as generation 2",
        Duration::from_secs(60),
    );
    let last: Vec<In> = (220..240).map(input).collect();
    setup.kafka.produce(&setup.source, &last);
    // The dead letters first (at least the failures that condemned version 2), then the rest
    // in the sink.
    let wait = Duration::from_secs(60);
    let dlq = setup.kafka.read(&setup.dlq, 51, wait);
    let sink = setup.kafka.read(&setup.sink, 240 - dlq.len(), wait);
    let code = weir.stop();
    let log = weir.log();
    assert_eq!(code, Some(0), "log:\n{log}");
    // Every record once: in the sink if a good version ran it, dead-lettered if the bad one did.
    let mut all = sink.clone();
    all.extend(dlq.iter().cloned());
    each_input_once(&all, 240, &log);
    in_key_order(&sink);
    assert!(
        sink.iter().all(|o| json_of(o)["version"] == 1),
        "log:\n{log}"
    );
    // More than 5% of the trial, and not many more: the bad version was stopped early.
    assert!(
        dlq.len() > 50 && dlq.len() < 200,
        "{} dead letters; log:\n{log}",
        dlq.len()
    );
    assert!(dlq
        .iter()
        .all(|o| o.headers["weir.error.message"].contains("version 2 fails")));
    assert!(
        log.contains(", 2 swaps (1 rolled back) in "),
        "the run's counts show the swap and the rollback; log:\n{log}"
    );
}

#[test]
fn a_version_that_renames_a_field_of_its_state_counts_on_from_the_old_one() {
    let setup = Setup::new("migrate", 3);
    // count-v1 keeps `{"n": …}` per key; count-v2 keeps `{"count": …}` and migrates.
    let mut weir = setup.start_with("count-v1", "{}", "");
    let before = produce_and_read(&setup, 0, 120);
    assert!(
        before.iter().all(|v| v["version"] == 1),
        "log:\n{}",
        weir.log()
    );
    replace_by_rename(&common::component("count-v2"), &setup.plugin());
    weir.wait_for_log("generation 1 published", Duration::from_secs(60));
    let after = produce_and_read(&setup, 120, 120);
    assert!(
        after.iter().all(|v| v["version"] == 2),
        "log:\n{}",
        weir.log()
    );
    // Going back to count-v1 is refused: it cannot read what count-v2 has written.
    replace_by_rename(&common::component("count-v1"), &setup.plugin());
    wait_for_rejection(
        &mut weir,
        &setup.plugin().display().to_string(),
        "it is state version 0 and stage `tag` has run state version 1",
    );
    let (output, log) = finish(&setup, weir, 240);
    every_input_once(&output, 240, &log);
    assert!(!log.contains("state-migration"), "log:\n{log}");
    // Each of the six keys had 20 records counted by version 1, then 20 by version 2, which
    // went on from 21: the count of each output is its place among its key's records.
    for (key, values) in by_key(&output) {
        let counts: Vec<(u64, u64)> = values
            .iter()
            .map(|v| (v["version"].as_u64().unwrap(), v["count"].as_u64().unwrap()))
            .collect();
        let want: Vec<(u64, u64)> = (1..=40).map(|c| (if c <= 20 { 1 } else { 2 }, c)).collect();
        assert_eq!(counts, want, "key {key}; log:\n{log}");
    }
}
