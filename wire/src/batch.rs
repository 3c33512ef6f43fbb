//! A batch: the host writes its records into one ([`Encoder`]); the guest reads them back
//! ([`Batch`]'s readers).

use alloc::{string::String, vec::Vec};

use crate::{Batch, EventRef, HeaderRef, Span};

/// A record to add to a batch (the contract's `event`), borrowed from wherever the writer keeps
/// it.
#[derive(Clone, Debug)]
pub struct Event<'a, H> {
    pub key: Option<&'a [u8]>,
    /// `None` is a Kafka tombstone.
    pub value: Option<&'a [u8]>,
    /// Names (UTF-8) and values, in wire order: `(&[u8], &[u8])` pairs.
    pub headers: H,
    /// Event time in milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// Writes records into the lists of a batch, which it clears first, keeping their buffers.
///
/// Generic over the descriptor types `H` and `E`: this crate's [`HeaderRef`] and [`EventRef`]
/// (see [`Batch::encoder`]), or a binding generator's mirrors of them, made from these.
pub struct Encoder<'b, H, E> {
    arena: &'b mut Vec<u8>,
    topics: &'b mut Vec<String>,
    headers: &'b mut Vec<H>,
    events: &'b mut Vec<E>,
}

impl<'b, H: From<HeaderRef>, E: From<EventRef>> Encoder<'b, H, E> {
    /// An encoder into a batch's `arena`, `topics`, `headers` and `events`, emptied.
    pub fn new(
        arena: &'b mut Vec<u8>,
        topics: &'b mut Vec<String>,
        headers: &'b mut Vec<H>,
        events: &'b mut Vec<E>,
    ) -> Self {
        arena.clear();
        topics.clear();
        headers.clear();
        events.clear();
        Encoder {
            arena,
            topics,
            headers,
            events,
        }
    }

    /// Add `event`: its headers, key and value go into the arena in that order, and its topic
    /// into `topics` unless it is there already.
    #[inline]
    pub fn push<'a, I>(&mut self, event: Event<'a, I>)
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    {
        // Batches mostly hold one topic, or a few in runs: look from the last one.
        let topic = match self.topics.iter().rposition(|t| t.as_str() == event.topic) {
            Some(i) => i,
            None => {
                self.topics.push(event.topic.into());
                self.topics.len() - 1
            }
        };
        let first = self.headers.len();
        for (name, value) in event.headers {
            let key = push(self.arena, name);
            let value = push(self.arena, value);
            self.headers.push(HeaderRef { key, value }.into());
        }
        let headers = Span {
            start: first as u32,
            len: (self.headers.len() - first) as u32,
        };
        let key = event.key.map(|k| push(self.arena, k));
        let value = event.value.map(|v| push(self.arena, v));
        self.events.push(
            EventRef {
                key,
                value,
                headers,
                timestamp: event.timestamp,
                topic: topic as u32,
                partition: event.partition,
                offset: event.offset,
            }
            .into(),
        );
    }
}

/// `bytes` appended to `arena`, as a span of it.
#[inline]
pub(crate) fn push(arena: &mut Vec<u8>, bytes: &[u8]) -> Span {
    let start = arena.len() as u32;
    arena.extend_from_slice(bytes);
    Span {
        start,
        len: bytes.len() as u32,
    }
}

impl Batch {
    /// An [`Encoder`] into this batch, which it empties.
    pub fn encoder(&mut self) -> Encoder<'_, HeaderRef, EventRef> {
        Encoder::new(
            &mut self.arena,
            &mut self.topics,
            &mut self.headers,
            &mut self.events,
        )
    }

    /// The bytes of `span` of the arena. The host wrote the batch, so a span outside the arena
    /// is a bug: it panics (in a component, a trap).
    #[inline]
    pub fn bytes(&self, span: Span) -> &[u8] {
        &self.arena[span.range()]
    }

    /// The headers of `event`; panics as [`bytes`](Self::bytes) does.
    #[inline]
    pub fn headers_of(&self, event: &EventRef) -> &[HeaderRef] {
        &self.headers[event.headers.range()]
    }

    /// The topic `event` came from (empty if the batch does not name it).
    pub fn topic_of(&self, event: &EventRef) -> &str {
        self.topics
            .get(event.topic as usize)
            .map_or("", String::as_str)
    }

    /// Whether `headers` (names and values, in order) are exactly those of `event`.
    pub fn same_headers<'h>(
        &self,
        event: &EventRef,
        headers: impl ExactSizeIterator<Item = (&'h [u8], &'h [u8])>,
    ) -> bool {
        let ours = self.headers_of(event);
        ours.len() == headers.len()
            && ours
                .iter()
                .zip(headers)
                .all(|(h, (name, value))| self.bytes(h.key) == name && self.bytes(h.value) == value)
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use super::*;

    fn event<'a>(
        key: &'a str,
        value: Option<&'a str>,
        headers: &'a [(&'a str, &'a str)],
        topic: &'a str,
        offset: i64,
    ) -> Event<'a, impl Iterator<Item = (&'a [u8], &'a [u8])>> {
        Event {
            key: Some(key.as_bytes()),
            value: value.map(str::as_bytes),
            headers: headers.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())),
            timestamp: 7,
            topic,
            partition: 2,
            offset,
        }
    }

    #[test]
    fn a_batch_is_one_arena_and_shares_its_topics() {
        let mut batch = Batch::default();
        let mut w = batch.encoder();
        w.push(event("k1", Some("one"), &[("h", "x")], "orders", 0));
        w.push(event("k2", Some("two"), &[("h", "x")], "orders", 1));
        w.push(event("k3", None, &[], "other", 2));
        w.push(event("k4", Some(""), &[("a", ""), ("b", "2")], "orders", 3));
        assert_eq!(batch.topics, vec!["orders", "other"]);
        assert_eq!(batch.arena, b"hxk1onehxk2twok3ab2k4");
        let e = batch.events[1];
        let at = |s: Span| (s.start, s.len);
        assert_eq!(
            (e.key.map(at), e.value.map(at), at(e.headers)),
            (Some((9, 2)), Some((11, 3)), (1, 1))
        );
        assert_eq!((e.timestamp, e.topic, e.partition, e.offset), (7, 0, 2, 1));
        assert_eq!(batch.events[2].value, None);
        assert_eq!(batch.topic_of(&batch.events[2]), "other");
        assert_eq!(batch.events[3].value, Some(Span { start: 21, len: 0 }));

        // Read back.
        let names: vec::Vec<_> = batch
            .headers_of(&batch.events[3])
            .iter()
            .map(|h| (batch.bytes(h.key), batch.bytes(h.value)))
            .collect();
        assert_eq!(names, [(&b"a"[..], &b""[..]), (&b"b"[..], &b"2"[..])]);
        let same = |i: usize, headers: &[(&str, &str)]| {
            let headers = headers.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()));
            batch.same_headers(&batch.events[i], headers)
        };
        assert!(same(3, &[("a", ""), ("b", "2")]));
        assert!(!same(3, &[("a", ""), ("b", "3")]));
        assert!(!same(3, &[("a", "")]));
        assert!(same(2, &[]));

        // The buffers are reused: encoding again starts from empty.
        batch
            .encoder()
            .push(event("k", Some("v"), &[("h", "x")], "t", 5));
        assert_eq!(
            (
                batch.arena.len(),
                batch.events.len(),
                batch.headers.len(),
                batch.topics.len()
            ),
            (4, 1, 1, 1)
        );
    }

    /// A binding generator's own span, as the host has.
    #[derive(Debug, PartialEq)]
    struct TheirEvent(u32, i64);

    impl From<EventRef> for TheirEvent {
        fn from(e: EventRef) -> Self {
            TheirEvent(e.headers.len, e.offset)
        }
    }

    #[test]
    fn an_encoder_writes_other_descriptor_types() {
        let (mut arena, mut topics) = (vec![1], vec![String::from("stale")]);
        let (mut headers, mut events): (Vec<HeaderRef>, Vec<TheirEvent>) = (vec![], vec![]);
        let mut w = Encoder::new(&mut arena, &mut topics, &mut headers, &mut events);
        w.push(event("k", Some("v"), &[("h", "x"), ("i", "y")], "t", 9));
        assert_eq!(events, [TheirEvent(2, 9)]);
        assert_eq!(
            (arena.as_slice(), topics.as_slice()),
            (&b"hxiykv"[..], &[String::from("t")][..])
        );
    }
}
