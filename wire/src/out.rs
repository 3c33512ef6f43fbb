//! An out-batch: the guest writes a transform's outputs into one; the host reads them back.

use alloc::{string::String, vec, vec::Vec};

use crate::{batch::push, HeaderRef, OutBatch, Part, Span};

impl OutBatch {
    /// `bytes` appended to the arena, as a span of it.
    #[inline]
    pub fn push(&mut self, bytes: &[u8]) -> Span {
        push(&mut self.arena, bytes)
    }

    /// An output's key or value (`ours`), given its input's: "the same" when they are equal
    /// (both absent, or the same bytes), so what a transform did not change does not cross
    /// back.
    #[inline]
    pub fn part(&mut self, ours: Option<&[u8]>, input: Option<&[u8]>) -> Part {
        match (ours, input) {
            (None, None) => Part::Same,
            (None, Some(_)) => Part::Absent,
            (Some(ours), Some(input)) if ours == input => Part::Same,
            (Some(ours), _) => Part::Bytes(self.push(ours)),
        }
    }

    /// `headers` (names and values, in order) appended, as a span of `headers`.
    pub fn push_headers<'h>(
        &mut self,
        headers: impl IntoIterator<Item = (&'h [u8], &'h [u8])>,
    ) -> Span {
        let start = self.headers.len();
        for (name, value) in headers {
            let key = self.push(name);
            let value = self.push(value);
            self.headers.push(HeaderRef { key, value });
        }
        Span {
            start: start as u32,
            len: (self.headers.len() - start) as u32,
        }
    }

    /// Whether this is a well-formed answer to a batch of `n` records; see
    /// [`check_out_batch`](crate::check_out_batch).
    pub fn check(&self, n: usize) -> Result<(), crate::Malformed> {
        crate::check_out_batch(n, &self.arena, &self.headers, &self.outputs, &self.errors)
    }
}

/// The headers `span` of an out-batch's `headers` names, as bytes of its `arena`: names and
/// values. For an answer [`check_out_batch`](crate::check_out_batch) passed: a span outside
/// them panics.
pub fn output_headers<'a, H: Copy + Into<HeaderRef>>(
    arena: &'a [u8],
    headers: &'a [H],
    span: Span,
) -> impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])> + 'a {
    headers[span.range()].iter().map(move |h| {
        let h: HeaderRef = (*h).into();
        (&arena[h.key.range()], &arena[h.value.range()])
    })
}

/// Each of `n` records' error, if it has one. For errors whose records are in the batch (see
/// [`check_out_batch`](crate::check_out_batch)); of two for one record, the last counts.
pub fn errors_by_record(n: usize, errors: Vec<(u32, String)>) -> Vec<Option<String>> {
    let mut by_record = vec![None; n];
    for (i, message) in errors {
        by_record[i as usize] = Some(message);
    }
    by_record
}

#[cfg(test)]
mod tests {
    use alloc::string::ToString;

    use super::*;

    #[test]
    fn outputs_send_back_only_what_changed() {
        let mut out = OutBatch::default();
        assert_eq!(out.part(None, None), Part::Same);
        assert_eq!(out.part(None, Some(b"k")), Part::Absent);
        assert_eq!(out.part(Some(b"k"), Some(b"k")), Part::Same);
        assert_eq!(
            out.part(Some(b""), None),
            Part::Bytes(Span { start: 0, len: 0 })
        );
        assert_eq!(
            out.part(Some(b"new"), Some(b"old")),
            Part::Bytes(Span { start: 0, len: 3 })
        );
        let span = out.push_headers([(&b"h"[..], &b"y"[..]), (b"i", b"")]);
        assert_eq!(span, Span { start: 0, len: 2 });
        assert_eq!(out.arena, b"newhyi");
        assert_eq!(
            out.push_headers(core::iter::empty()),
            Span { start: 2, len: 0 }
        );
        let read: Vec<_> = output_headers(&out.arena, &out.headers, span).collect();
        assert_eq!(read, [(&b"h"[..], &b"y"[..]), (b"i", b"")]);
    }

    #[test]
    fn errors_land_on_their_records() {
        assert_eq!(errors_by_record(3, Vec::new()), [None, None, None]);
        assert_eq!(
            errors_by_record(3, vec![(1, "x".to_string())]),
            [None, Some("x".to_string()), None]
        );
    }
}
