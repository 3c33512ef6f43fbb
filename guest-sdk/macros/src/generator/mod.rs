//! What the attributes add beside the user's item: a hidden `__WeirPlugin` type that the SDK's
//! runtime traits describe, and (wasm32 only) the component's exports, registered for it. The
//! exports themselves are SDK code (`weir_sdk::__rt`); one module here per kind.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

pub mod filter;
pub mod state;
pub mod transform;
pub mod window;

/// `__WeirPlugin` and what any plugin is: its configuration type, whether it keeps state, and
/// its `#[state]` declaration if it has one.
fn plugin(config_ty: TokenStream, keeps_state: bool) -> TokenStream {
    quote! {
        #[doc(hidden)]
        #[allow(dead_code)]
        struct __WeirPlugin;
        impl ::weir_sdk::__rt::Plugin for __WeirPlugin {
            type Config = #config_ty;
            const KEEPS_STATE: bool = #keeps_state;
            fn schema() -> ::core::option::Option<::weir_sdk::__rt::Schema> {
                ::weir_sdk::__schema!(__WeirPlugin)
            }
        }
    }
}

/// `__weir_native`: the plugin loaded natively with a config, behind `testing::Native`, which
/// `$wrapper` (`NativeFilter`, `NativeTransform`) provides for its kind.
fn native(wrapper: &str) -> TokenStream {
    let wrapper = format_ident!("{wrapper}");
    quote! {
        /// This crate's plugin, loaded natively with `config` (benchmarks, embedding).
        #[doc(hidden)]
        pub fn __weir_native(
            config: ::weir_sdk::__serde_json::Value,
        ) -> ::weir_sdk::Result<::std::boxed::Box<dyn ::weir_sdk::testing::Native>> {
            let harness = ::weir_sdk::testing::Harness::<__WeirPlugin>::with_schema(
                config,
                ::weir_sdk::__schema!(__WeirPlugin),
            )?;
            Ok(::std::boxed::Box::new(::weir_sdk::testing::#wrapper(harness)))
        }
    }
}

/// The component's exports (wasm32 only): the SDK's `Component` for `__WeirPlugin`, exported
/// through the SDK's bindings of `world` and of `versioned-state`. `state` is the SDK's
/// `WithState` or `NoState`.
fn component(world: &str, state: &str) -> TokenStream {
    let world = format_ident!("{world}");
    let state = format_ident!("{state}");
    quote! {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type __WeirComponent = ::weir_sdk::__rt::component::Component<
                __WeirPlugin,
                ::weir_sdk::__rt::component::#state,
            >;
            ::weir_sdk::__rt::wit::#world::export!(
                __WeirComponent with_types_in ::weir_sdk::__rt::wit::#world
            );
            ::weir_sdk::__rt::wit::versioned::export!(
                __WeirComponent with_types_in ::weir_sdk::__rt::wit::versioned
            );
        };
    }
}

/// `WithState` for a plugin that takes a `&State`, else `NoState`.
fn state_access(keeps_state: bool) -> &'static str {
    if keeps_state {
        "WithState"
    } else {
        "NoState"
    }
}
