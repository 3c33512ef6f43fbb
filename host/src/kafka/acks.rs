//! Acknowledgements of the records derived from one source batch.
//!
//! Every record the sink sends carries its batch's [`Acks`]; the producer's delivery callback
//! settles them. The runtime commits a batch's offsets only once its acks are complete and none
//! failed, so a commit never covers a record whose output could still be lost.

use std::sync::{
    atomic::{AtomicBool, AtomicUsize, Ordering},
    Arc,
};

use crate::chain::window::Delivered;

/// Acknowledgements outstanding for the records derived from one batch.
#[derive(Debug)]
pub struct Acks {
    /// Starts at one, a guard held until every record was handed to the sink, so the count
    /// cannot reach zero while records are still being added.
    pending: AtomicUsize,
    failed: AtomicBool,
}

impl Acks {
    pub fn new() -> Arc<Acks> {
        Arc::new(Acks {
            pending: AtomicUsize::new(1),
            failed: AtomicBool::new(false),
        })
    }

    /// One more record is on its way.
    pub fn expect(&self) {
        self.pending.fetch_add(1, Ordering::AcqRel);
    }

    /// A record's delivery ended, well or not.
    pub fn delivered(&self, ok: bool) {
        if !ok {
            self.failed.store(true, Ordering::Release);
        }
        self.pending.fetch_sub(1, Ordering::AcqRel);
    }

    /// Something the batch's offsets depend on was lost (a state write, a changelog record):
    /// they must never be committed.
    pub fn fail(&self) {
        self.failed.store(true, Ordering::Release);
    }

    /// All records of the batch were handed over: drop the guard.
    pub fn sealed(&self) {
        self.delivered(true);
    }

    /// Whether every record was acknowledged (`Some(true)`), one failed (`Some(false)`), or
    /// some are still on their way (`None`).
    pub fn done(&self) -> Option<bool> {
        (self.pending.load(Ordering::Acquire) == 0).then(|| !self.failed.load(Ordering::Acquire))
    }
}

impl Delivered for Acks {
    fn delivered(&self) -> bool {
        self.done() == Some(true)
    }
}
