//! The batch's list of records, lowered into the plugin's memory in one pass.
//!
//! Bindgen's types lower a list of records field by field, and each field's store looks the
//! instance's memory up again: about ten lookups per record and stage, a few percent of a cheap
//! chain. [`EventRef`] is weir-wire's descriptor, as the encoder makes it; its type check, its
//! flat form and the lowering of one descriptor alone are bindgen's code, and what it changes is
//! that a list of them is written straight into the slice of memory the list was given.
//!
//! The traits' list method is wasmtime's own hook for this (its integer types use it), but it is
//! `#[doc(hidden)]`: a wasmtime upgrade may change it, and the unit tests below check the layout
//! written against the canonical ABI's own sizes and offsets.

use std::mem::MaybeUninit;

use wasmtime::component::{
    __internal::{CanonicalAbiInfo, InstanceType, InterfaceType, LowerContext},
    ComponentType, Lower,
};

use super::generated::weir::plugin::types as generated;
pub use generated::Span;

/// An input record of a batch: the contract's `event-ref`, as weir-wire's encoder makes it.
#[derive(Clone, Copy, Debug)]
pub struct EventRef(pub weir_wire::EventRef);

impl From<weir_wire::EventRef> for EventRef {
    fn from(e: weir_wire::EventRef) -> Self {
        EventRef(e)
    }
}

/// The records of one call: the contract's `batch`, with its records lowered by [`EventRef`].
#[derive(Clone, Debug, Default, ComponentType, Lower)]
#[component(record)]
pub struct Batch {
    pub arena: Vec<u8>,
    pub topics: Vec<String>,
    pub headers: Vec<generated::HeaderRef>,
    pub events: Vec<EventRef>,
}

/// Where `event-ref`'s fields lie in the canonical ABI: an `option<span>` is a byte's tag and
/// the span at the span's alignment, 12 bytes; the 64-bit fields are aligned to 8. A unit test
/// derives these from the ABI itself.
mod at {
    pub const KEY: usize = 0;
    pub const VALUE: usize = 12;
    pub const HEADERS: usize = 24;
    pub const TIMESTAMP: usize = 32;
    pub const TOPIC: usize = 40;
    pub const PARTITION: usize = 44;
    pub const OFFSET: usize = 48;
    pub const SIZE: usize = 56;
    /// The span of an `option<span>`, after its tag.
    pub const PAYLOAD: usize = 4;
}

// SAFETY: the type, flat form and ABI are `generated::EventRef`'s, whose checks are used as
// they are; values are written as the canonical ABI lays them out (see `at`).
unsafe impl ComponentType for EventRef {
    type Lower = <generated::EventRef as ComponentType>::Lower;
    const ABI: CanonicalAbiInfo = <generated::EventRef as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <generated::EventRef as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: as for `ComponentType`; the list is written within the bounds wasmtime checked.
unsafe impl Lower for EventRef {
    fn linear_lower_to_flat<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        ty: InterfaceType,
        dst: &mut MaybeUninit<Self::Lower>,
    ) -> wasmtime::Result<()> {
        self.generated().linear_lower_to_flat(cx, ty, dst)
    }

    fn linear_lower_to_memory<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        ty: InterfaceType,
        offset: usize,
    ) -> wasmtime::Result<()> {
        self.generated().linear_lower_to_memory(cx, ty, offset)
    }

    fn linear_store_list_to_memory<T>(
        cx: &mut LowerContext<'_, T>,
        _ty: InterfaceType,
        offset: usize,
        items: &[Self],
    ) -> wasmtime::Result<()> {
        let memory = &mut cx.as_slice_mut()[offset..][..items.len() * at::SIZE];
        for (slot, event) in memory.chunks_exact_mut(at::SIZE).zip(items) {
            event.write(slot);
        }
        Ok(())
    }
}

impl EventRef {
    fn generated(&self) -> generated::EventRef {
        let e = &self.0;
        generated::EventRef {
            key: e.key.map(Span::from),
            value: e.value.map(Span::from),
            headers: e.headers.into(),
            timestamp: e.timestamp,
            topic: e.topic,
            partition: e.partition,
            offset: e.offset,
        }
    }

    /// This descriptor's canonical ABI bytes.
    fn write(&self, slot: &mut [u8]) {
        let e = &self.0;
        write_option(&mut slot[at::KEY..at::VALUE], e.key);
        write_option(&mut slot[at::VALUE..at::HEADERS], e.value);
        write_span(&mut slot[at::HEADERS..at::TIMESTAMP], e.headers);
        slot[at::TIMESTAMP..at::TOPIC].copy_from_slice(&e.timestamp.to_le_bytes());
        slot[at::TOPIC..at::PARTITION].copy_from_slice(&e.topic.to_le_bytes());
        slot[at::PARTITION..at::OFFSET].copy_from_slice(&e.partition.to_le_bytes());
        slot[at::OFFSET..at::SIZE].copy_from_slice(&e.offset.to_le_bytes());
    }
}

/// An `option<span>`: its tag, padding, and the span (zero when there is none).
fn write_option(slot: &mut [u8], span: Option<weir_wire::Span>) {
    slot[..at::PAYLOAD].copy_from_slice(&[u8::from(span.is_some()), 0, 0, 0]);
    write_span(&mut slot[at::PAYLOAD..], span.unwrap_or_default());
}

fn write_span(slot: &mut [u8], span: weir_wire::Span) {
    slot[..4].copy_from_slice(&span.start.to_le_bytes());
    slot[4..8].copy_from_slice(&span.len.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_the_canonical_abis() {
        let fields = [
            <Option<Span> as ComponentType>::ABI,
            <Option<Span> as ComponentType>::ABI,
            <Span as ComponentType>::ABI,
            <i64 as ComponentType>::ABI,
            <u32 as ComponentType>::ABI,
            <i32 as ComponentType>::ABI,
            <i64 as ComponentType>::ABI,
        ];
        let mut end = 0;
        let offsets: Vec<usize> = fields
            .iter()
            .map(|f| f.next_field32_size(&mut end))
            .collect();
        assert_eq!(
            offsets,
            [
                at::KEY,
                at::VALUE,
                at::HEADERS,
                at::TIMESTAMP,
                at::TOPIC,
                at::PARTITION,
                at::OFFSET
            ]
        );
        assert_eq!(<EventRef as ComponentType>::SIZE32, at::SIZE);
        // An option's payload follows its one-byte tag at the payload's alignment.
        assert_eq!(
            <Span as ComponentType>::ALIGN32 as usize,
            at::PAYLOAD,
            "span alignment"
        );
        assert_eq!(<Option<Span> as ComponentType>::SIZE32, at::PAYLOAD + 8);
    }

    #[test]
    fn a_descriptor_is_written_field_by_field() {
        let span = |start, len| weir_wire::Span { start, len };
        let event = EventRef(weir_wire::EventRef {
            key: None,
            value: Some(span(7, 9)),
            headers: span(1, 2),
            timestamp: -1,
            topic: 3,
            partition: -2,
            offset: 0x0102_0304_0506_0708,
        });
        let mut slot = [0xaa; at::SIZE];
        event.write(&mut slot);
        let mut want = Vec::new();
        want.extend([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        want.extend([1, 0, 0, 0, 7, 0, 0, 0, 9, 0, 0, 0]);
        want.extend([1, 0, 0, 0, 2, 0, 0, 0]);
        want.extend((-1i64).to_le_bytes());
        want.extend(3u32.to_le_bytes());
        want.extend((-2i32).to_le_bytes());
        want.extend(0x0102_0304_0506_0708i64.to_le_bytes());
        assert_eq!(slot.to_vec(), want);
    }
}
