//! Host bindings of the WIT worlds. One generation of the `filter` world owns the shared
//! interfaces and every world uses them, so a record is the same Rust type in every stage.

mod bulk;

/// The contract as bindgen makes it. The worlds below use its interfaces, bar `types`, where
/// [`types`] replaces the batch with one whose records are lowered in bulk.
mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "filter",
        // A value that cannot be migrated to the reading build's shape traps the call: reads
        // have no error of their own, and the plugin must not go on without its state. A write
        // past the plugin's declared state quota traps it too: the record fails as
        // `state-quota`, whatever the plugin would make of an error.
        imports: {
            "weir:plugin/state.get": trappable,
            "weir:plugin/state.scan": trappable,
            "weir:plugin/state.put": trappable,
            "weir:plugin/tables.get": trappable,
        },
    });
}

/// The contract's types, with [`bulk`]'s batch.
pub mod types {
    pub use super::bulk::Batch;
    pub use super::generated::weir::plugin::types::*;
}

/// The bindings of `world`, over the shared interfaces above (a world that imports fewer of them
/// lists its own: bindgen refuses a mapping the world does not use).
macro_rules! world {
    ($world:literal) => {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: $world,
            with: {
                "weir:plugin/types": super::types,
                "weir:plugin/host": super::generated::weir::plugin::host,
                "weir:plugin/digest": super::generated::weir::plugin::digest,
                "weir:plugin/state": super::generated::weir::plugin::state,
                "weir:plugin/tables": super::generated::weir::plugin::tables,
            },
        });
    };
}

pub mod filter {
    world!("filter");
}

pub mod transform {
    world!("transform");
}

pub mod window {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "window",
        with: {
            "weir:plugin/types": super::types,
            "weir:plugin/host": super::generated::weir::plugin::host,
            "weir:plugin/digest": super::generated::weir::plugin::digest,
        },
    });
}

pub mod versioned {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "versioned-state",
    });
}

pub use generated::weir::plugin::{digest, host, state, tables};
