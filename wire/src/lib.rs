//! The batch format of weir's plugin contract (`wit/weir.wit`), written once for both sides of
//! the component boundary: the host (`host/src/engine/wire.rs`) and the guest SDK
//! (`weir_sdk::batch`).
//!
//! A filter or transform gets a batch as one byte arena, where every key, value, header name and
//! header value lies back to back, and fixed-size descriptors of its records ([`EventRef`]),
//! whose bytes are [`Span`]s of the arena; it answers the same way ([`OutBatch`], [`Verdicts`]).
//! A call then moves a handful of lists however many records it carries.
//!
//! The types mirror the WIT records field for field. The guest's bindings use them as they
//! are; the host's bindings have their own, which convert to and from these one field at a
//! time (`From`), so the functions here that read or write lists of descriptors are generic
//! over the descriptor type and take either. What is here:
//!
//! - [`Encoder`]: records into a batch (the host's side), and [`Batch`]'s readers (the guest's).
//! - [`OutBatch`]'s writers (the guest's side) and [`output_headers`], [`errors_by_record`]
//!   for reading an answer (the host's).
//! - [`check_verdicts`] and [`check_out_batch`]: what the host checks of an answer before it
//!   uses it. A plugin is untrusted code: a bad span or index must fail the batch with a reason
//!   ([`Malformed`]), never panic the host or mix records up.
//!
//! `no_std` with `alloc`, and no dependencies: the SDK builds it into every component.

#![no_std]

extern crate alloc;

#[cfg(test)]
extern crate std;

use alloc::{string::String, vec::Vec};
use core::ops::Range;

mod batch;
mod check;
mod out;

pub use batch::{Encoder, Event};
pub use check::{check_out_batch, check_verdicts, Malformed, Piece};
pub use out::{errors_by_record, output_headers};

/// A run of `len` items from `start`: bytes of an arena, or entries of a list of headers.
///
/// `repr(C)`, as a binding generator's own would be: a list of spans, or of [`HeaderRef`]s,
/// crosses the boundary as its bytes, so its layout must be the canonical ABI's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct Span {
    pub start: u32,
    pub len: u32,
}

impl Span {
    /// Where the run ends, one past its last item (in 64 bits: a span's own `u32`s can sum past
    /// `u32::MAX`).
    #[inline]
    pub fn end(self) -> u64 {
        u64::from(self.start) + u64::from(self.len)
    }

    /// Its positions, to index with. Where `usize` is 32 bits (in a component) a span that
    /// overflows wraps to an end before its start, which every slice refuses.
    #[inline]
    pub fn range(self) -> Range<usize> {
        let start = self.start as usize;
        start..start.wrapping_add(self.len as usize)
    }

    /// Its items in `items`, if it lies within them.
    #[inline]
    pub fn slice<T>(self, items: &[T]) -> Option<&[T]> {
        let start = self.start as usize;
        items.get(start..start.checked_add(self.len as usize)?)
    }
}

/// A header whose name (UTF-8) and value are spans of the batch's arena.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct HeaderRef {
    pub key: Span,
    pub value: Span,
}

/// An input record of a [`Batch`]: an event whose bytes are spans of the batch arena.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EventRef {
    pub key: Option<Span>,
    /// `None` is a Kafka tombstone.
    pub value: Option<Span>,
    /// Entries of the batch's `headers`.
    pub headers: Span,
    /// Event time in milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Index into the batch's `topics`.
    pub topic: u32,
    pub partition: i32,
    pub offset: i64,
}

/// The records of one call: every key, value, header name and header value back to back in
/// `arena`, and the records as spans of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub arena: Vec<u8>,
    pub topics: Vec<String>,
    pub headers: Vec<HeaderRef>,
    pub events: Vec<EventRef>,
}

/// One part (key or value) of an output: its input's, none, or new bytes in the arena of the
/// [`OutBatch`]. Most outputs keep their input's key, so it need not cross back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Part {
    Same,
    Absent,
    Bytes(Span),
}

/// A record a transform emits for input `input` (its index in the batch).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OutputRef {
    pub input: u32,
    pub key: Part,
    pub value: Part,
    /// Entries of the out-batch's `headers`; `None` keeps the input's headers.
    pub headers: Option<Span>,
    pub timestamp: i64,
}

/// What a transform makes of a batch: outputs in input order (an input may have none, one or
/// many), and the inputs that failed, by index, with why.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutBatch {
    pub arena: Vec<u8>,
    pub headers: Vec<HeaderRef>,
    pub outputs: Vec<OutputRef>,
    pub errors: Vec<(u32, String)>,
}

/// What a filter makes of a batch: whether it keeps each record (one flag per record, in
/// order), and the records that failed, by index (their flag is ignored).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdicts {
    pub keep: Vec<bool>,
    pub errors: Vec<(u32, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_slice_what_they_cover_and_nothing_past_it() {
        let items = [1, 2, 3, 4];
        let span = |start, len| Span { start, len };
        assert_eq!(span(1, 2).slice(&items), Some(&[2, 3][..]));
        assert_eq!(span(4, 0).slice(&items), Some(&[][..]));
        assert_eq!(span(3, 2).slice(&items), None);
        assert_eq!(span(5, 0).slice(&items), None);
        assert_eq!(span(u32::MAX, 2).slice(&items), None);
        assert_eq!(span(u32::MAX, 2).end(), u64::from(u32::MAX) + 2);
    }

    #[test]
    fn spans_and_header_refs_have_the_canonical_abi_layout() {
        assert_eq!(
            (core::mem::size_of::<Span>(), core::mem::align_of::<Span>()),
            (8, 4)
        );
        assert_eq!(core::mem::size_of::<HeaderRef>(), 16);
        let h = HeaderRef {
            key: Span { start: 1, len: 2 },
            value: Span { start: 3, len: 4 },
        };
        // SAFETY: HeaderRef is repr(C) of four u32s, without padding.
        let words: [u32; 4] = unsafe { core::mem::transmute(h) };
        assert_eq!(words, [1, 2, 3, 4]);
    }
}
