//! The bindings of the plugin worlds (wasm32 only), generated once here rather than in each
//! plugin.
//!
//! Each world's `export!` macro is public: a plugin's attribute invokes the one of its kind,
//! and `versioned`'s, for its [`Component`](super::component::Component). The world itself goes
//! into the plugin with that invocation; this crate carries only the worlds' imports, which
//! `wit-component` drops where a plugin does not call them. So a component exports exactly its
//! kind's functions, and imports `state` only if its plugin takes a `&State`.
//!
//! The batch and window records are the SDK's own types, which mirror the WIT records field
//! for field (see [`crate::batch`] and [`super::window`]): a call hands them over as they are.

/// `generate!` with what every world shares: the records mapped to the SDK's types, and an
/// `export!` macro for plugin crates.
macro_rules! bindings {
    ($world:literal, $module:literal, { $($with:tt)* }) => {
        ::wit_bindgen::generate!({
            path: "../wit",
            world: $world,
            runtime_path: "::weir_sdk::__wit_bindgen::rt",
            pub_export_macro: true,
            default_bindings_module: $module,
            generate_all,
            with: {
                "weir:plugin/types@0.2.0/span": ::weir_sdk::batch::Span,
                "weir:plugin/types@0.2.0/header-ref": ::weir_sdk::batch::HeaderRef,
                "weir:plugin/types@0.2.0/event-ref": ::weir_sdk::batch::EventRef,
                "weir:plugin/types@0.2.0/batch": ::weir_sdk::batch::Batch,
                "weir:plugin/types@0.2.0/part": ::weir_sdk::batch::Part,
                "weir:plugin/types@0.2.0/output-ref": ::weir_sdk::batch::OutputRef,
                "weir:plugin/types@0.2.0/out-batch": ::weir_sdk::batch::OutBatch,
                "weir:plugin/types@0.2.0/verdicts": ::weir_sdk::batch::Verdicts,
                "weir:plugin/types@0.2.0/header": ::weir_sdk::__rt::window::Header,
                "weir:plugin/types@0.2.0/event": ::weir_sdk::__rt::window::Event,
                "weir:plugin/types@0.2.0/output": ::weir_sdk::__rt::window::Output,
                "weir:plugin/types@0.2.0/keyed-window": ::weir_sdk::Window,
                "weir:plugin/types@0.2.0/pane": ::weir_sdk::__rt::window::Pane,
                "weir:plugin/types@0.2.0/pane-result": ::weir_sdk::__rt::window::PaneResult,
                $($with)*
            },
        });
    };
}

/// The `filter` world; its imports (`host`, `digest`, `state`, `tables`) serve every world.
pub mod filter {
    bindings!("filter", "::weir_sdk::__rt::wit::filter", {});
}

pub mod transform {
    bindings!("transform", "::weir_sdk::__rt::wit::transform", {
        "weir:plugin/types@0.2.0": super::filter::weir::plugin::types,
        "weir:plugin/host@0.2.0": super::filter::weir::plugin::host,
        "weir:plugin/digest@0.2.0": super::filter::weir::plugin::digest,
        "weir:plugin/state@0.2.0": super::filter::weir::plugin::state,
        "weir:plugin/tables@0.2.0": super::filter::weir::plugin::tables,
    });
}

pub mod window {
    bindings!("window", "::weir_sdk::__rt::wit::window", {
        "weir:plugin/types@0.2.0": super::filter::weir::plugin::types,
        "weir:plugin/host@0.2.0": super::filter::weir::plugin::host,
        "weir:plugin/digest@0.2.0": super::filter::weir::plugin::digest,
    });
}

/// `state-version` and `migrate-state`, which every SDK plugin exports (version 0 unless it has
/// a `#[state]` item), so its later builds can change the shape of their state.
pub mod versioned {
    ::wit_bindgen::generate!({
        path: "../wit",
        world: "versioned-state",
        runtime_path: "::weir_sdk::__wit_bindgen::rt",
        pub_export_macro: true,
        default_bindings_module: "::weir_sdk::__rt::wit::versioned",
    });
}

pub use filter::weir::plugin::{digest, host, state, types};
