//! Keyed state of the stateful stages in a run: the store, their changelog topics, and each
//! assigned partition's state brought up to date from its changelog before its first record.

use std::{
    cell::Cell,
    sync::{atomic::Ordering, Arc},
    time::Instant,
};

use super::{partition::StageState, Shared};
use crate::{
    chain::Stages,
    config::Pipeline,
    kafka::{
        admin,
        changelog::{self, changelog_topic, unmarked, Progress, Restored},
        ChangelogMarks,
    },
    state::{PartitionState, StateStore},
    Error,
};

/// The store, the stateful stages' changelog topics, and where the sink reports changelog
/// acknowledgements.
pub(super) struct StateContext {
    store: Arc<StateStore>,
    /// Stage index, stage name, changelog topic.
    stages: Vec<(usize, String, String)>,
    pub(super) marks: ChangelogMarks,
    /// Where the changelogs live: with the sink, so one producer (one transaction) writes both.
    brokers: String,
}

/// The state store of a run that keeps state or tables (`None`: it keeps neither).
pub(super) fn open_store(
    pipeline: &Pipeline,
    stages: &Stages,
    group: &str,
) -> Result<Option<Arc<StateStore>>, Error> {
    if stages.stateful().is_empty() && stages.tables().is_empty() {
        return Ok(None);
    }
    StateStore::open(&pipeline.state_dir(group), pipeline.state_cache_bytes).map(Some)
}

/// Make sure every stateful stage has its changelog topic, with at
/// least as many partitions as the widest source topic (changelog partition N holds the state
/// of source partition N).
pub(super) fn prepare_state(
    stages: &Stages,
    store: Option<&Arc<StateStore>>,
    group: &str,
    brokers: &str,
    partitions: usize,
) -> Result<Option<StateContext>, Error> {
    let stateful = stages.stateful();
    let Some(store) = store.filter(|_| !stateful.is_empty()).cloned() else {
        return Ok(None);
    };
    let stages: Vec<(usize, String, String)> = stateful
        .into_iter()
        .map(|(i, name)| {
            let topic = changelog_topic(group, &name);
            (i, name, topic)
        })
        .collect();
    let topics: Vec<&str> = stages.iter().map(|(_, _, t)| t.as_str()).collect();
    admin::ensure_compacted(brokers, &topics, partitions)?;
    let marks = topics
        .iter()
        .map(|t| (t.to_string(), unmarked(partitions)))
        .collect();
    Ok(Some(StateContext {
        store,
        stages,
        marks,
        brokers: brokers.to_string(),
    }))
}

impl Shared {
    /// The state of every stateful stage for `topic`/`partition`, brought up to date from the
    /// changelogs before the partition's first record is processed.
    pub(super) fn restore(&self, topic: &str, partition: i32) -> Result<Vec<StageState>, Error> {
        let Some(ctx) = &self.state else {
            return Ok(Vec::new());
        };
        let mut states = Vec::with_capacity(ctx.stages.len());
        for (stage, name, changelog) in &ctx.stages {
            let mark = ctx.marks[changelog]
                .get(partition as usize)
                .cloned()
                .ok_or_else(|| {
                    Error::Topic(format!(
                        "changelog `{changelog}` has no partition {partition}: the source topic \
                         grew after the changelog was created"
                    ))
                })?;
            let state = ctx.store.partition(name, topic, partition, mark);
            let started = Instant::now();
            let restored = self.restore_one(&ctx.brokers, &state, changelog, partition)?;
            self.metrics.restore_seconds.observe(started.elapsed());
            tracing::info!(
                stage = %name,
                %topic,
                partition,
                %changelog,
                from = restored.from,
                to = restored.to,
                "state restored: {} changes in {:.0} ms",
                restored.applied,
                started.elapsed().as_secs_f64() * 1e3
            );
            let state = Arc::new(state);
            self.held.hold(name, topic, partition, &state);
            states.push(StageState {
                stage: *stage,
                changelog: changelog.clone(),
                state,
            });
        }
        Ok(states)
    }

    /// Restore `state` from its changelog partition, counting what there is to read and what
    /// was read in the health figures a waiting person sees (the status line, `/api/status`).
    fn restore_one(
        &self,
        brokers: &str,
        state: &PartitionState,
        changelog: &str,
        partition: i32,
    ) -> Result<Restored, Error> {
        let health = &self.metrics.health;
        // What this read adds to the totals: a read that goes on past the end it was told of
        // (started over from the beginning) counts no further.
        let (ahead, read) = (Cell::new(0u64), Cell::new(0u64));
        let progress = |p: Progress| match p {
            Progress::Ahead(n) => {
                ahead.set(ahead.get() + n);
                health.restore_total.fetch_add(n, Ordering::Relaxed);
            }
            Progress::Read(n) => {
                let left = ahead.get().saturating_sub(read.get());
                read.set(read.get() + n);
                health
                    .restore_read
                    .fetch_add(n.min(left), Ordering::Relaxed);
            }
        };
        let restored = changelog::restore(state, brokers, changelog, partition, &progress);
        // The last stretch is applied without a word: it ends here.
        let left = ahead.get().saturating_sub(read.get());
        health.restore_read.fetch_add(left, Ordering::Relaxed);
        restored
    }
}
