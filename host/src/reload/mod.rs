//! Hot reload: new plugin builds and pipeline changes swapped into a running `weir run`.
//!
//! A watcher thread ([`Reloader`]) watches the directories of the pipeline file and of every
//! stage's plugin (directories, not files: editors and build tools replace files by rename, which
//! a watch on the file itself would lose), and where a file is a symlink or lies behind one, the
//! directories of every link on the way and of the file it resolves to, following them as they
//! are switched (a Kubernetes ConfigMap's `..data`, a release directory). After a quiet period
//! ([`QUIET`]) it reads the changed files, compares content hashes (a touch without a change does
//! nothing), and builds a candidate version of the stages *off the data path*: the new component
//! is compiled, its world checked, and every stage instantiated with its config so `init` judges
//! it. Only a fully validated version is published; anything else is rejected with one log line
//! naming the file and the reason, and the running version stays.
//!
//! Publishing bumps a generation counter. Each worker ([`LiveChain`]) compares it with its own at
//! the top of every batch (one atomic load) and, when it moved, takes a chain of the new version
//! (started ahead of time by the watcher thread, so the swap itself is a pointer move). A batch
//! therefore runs wholly on one version, and since a partition's batches run in order on one
//! worker, each partition's records move from older to newer versions only, none lost and none
//! processed twice. Keyed state belongs to the host, not the instance ([`Chain::set_state`] hands
//! it to the stage every batch), so it carries over.
//!
//! What a running pipeline can take live: a stage's plugin file, `config` and `limits`, and
//! adding, removing or reordering stages. The source, sink, delivery guarantee, error policy and
//! state directory cannot change while running: a change to them is logged as needing a restart
//! and ignored. Nor can a stage start keeping state (its changelog topic is set up and restored
//! when partitions are assigned): such a version is rejected. A stage's state carries over to
//! its new version as it is; a version that changes the shape of its state declares a higher
//! state version and migrates older values as it reads them (see the `versioned-state` WIT
//! world and `engine::host`). Migrations only go forward: a build of a lower state version than
//! a stage has run in this process is rejected, since it could not read what the newer wrote.
//!
//! A new version is also on trial for its first records (`[reload] trial_records`, default
//! [`TRIAL_RECORDS`](crate::config::TRIAL_RECORDS)): if its changed stages fail more than `rollback_rate` of them (default
//! [`ROLLBACK_RATE`](crate::config::ROLLBACK_RATE)), the version it replaced is put back and the rollback counted, unless the
//! new version raised a stage's state version (see `Watch::roll_back` for why it then stays).

mod live;
mod resolve;
mod runs;
mod watch;

use std::{path::PathBuf, sync::Arc, thread, time::Duration};

use crossbeam_channel::Sender;

use self::watch::Watch;
pub use self::{
    live::{Live, LiveChain, Version},
    runs::{listening, runs_of},
};
use crate::{chain::Stages, config::Pipeline, engine::Engine, error::Error};

/// How long a watched file must stay unchanged before it is read: a build tool writing a file in
/// several steps is left to finish.
pub const QUIET: Duration = Duration::from_millis(200);

enum Msg {
    /// Paths the file system says changed.
    Changed(Vec<PathBuf>),
    /// Check every watched file now (SIGHUP).
    CheckAll,
    RollBack {
        generation: u64,
        records: u64,
        failures: u64,
    },
    Stop,
}

/// Asks a running reloader to check every file now (what SIGHUP does).
#[derive(Clone)]
pub struct Trigger(Sender<Msg>);

impl Trigger {
    pub fn reload_now(&self) {
        let _ = self.0.send(Msg::CheckAll);
    }
}

/// The watcher thread; stopped when dropped.
pub struct Reloader {
    live: Arc<Live>,
    requests: Sender<Msg>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Reloader {
    /// Watch `pipeline`'s file and its stages' plugins (`stages`, already loaded by `engine`).
    pub fn start(engine: Engine, pipeline: &Pipeline, stages: &Stages) -> Result<Reloader, Error> {
        let (requests, inbox) = crossbeam_channel::unbounded();
        let live = Arc::new(Live::new(stages, requests.clone()));
        let mut watch = Watch::new(engine, live.clone(), pipeline, requests.clone());
        watch.watch_current();
        let thread = thread::Builder::new()
            .name("weir-reload".into())
            .spawn(move || watch.run(inbox))
            .map_err(Error::Watcher)?;
        Ok(Reloader {
            live,
            requests,
            thread: Some(thread),
        })
    }

    /// What the workers share with the watcher.
    pub fn live(&self) -> Arc<Live> {
        self.live.clone()
    }

    /// A handle that asks for a check of every file.
    pub fn trigger(&self) -> Trigger {
        Trigger(self.requests.clone())
    }
}

impl Drop for Reloader {
    fn drop(&mut self) {
        let _ = self.requests.send(Msg::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
