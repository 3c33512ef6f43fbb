//! Host bindings of the WIT worlds. The `filter` world's bindings own the shared interfaces;
//! the other worlds reuse them, so a record is the same Rust type in every stage.

pub mod filter {
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

pub mod transform {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "transform",
        with: {
            "weir:plugin/types": super::filter::weir::plugin::types,
            "weir:plugin/host": super::filter::weir::plugin::host,
            "weir:plugin/digest": super::filter::weir::plugin::digest,
            "weir:plugin/state": super::filter::weir::plugin::state,
            "weir:plugin/tables": super::filter::weir::plugin::tables,
        },
    });
}

pub mod window {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "window",
        with: {
            "weir:plugin/types": super::filter::weir::plugin::types,
            "weir:plugin/host": super::filter::weir::plugin::host,
            "weir:plugin/digest": super::filter::weir::plugin::digest,
        },
    });
}

pub mod versioned {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "versioned-state",
    });
}

pub use filter::weir::plugin::{digest, host, state, tables, types};
