//! The attributes of `weir-sdk`. Use them through `weir_sdk::prelude`.
//!
//! Each attribute keeps the user's item as written and adds a thin registration: a hidden
//! `__WeirPlugin` type that implements the SDK's runtime traits for the item (which
//! `weir_sdk::testing::Harness` runs natively), and, for `wasm32` only, the component's exports
//! for that type, which are SDK code. [`ast`] reads the items; [`generator`] writes the
//! registration, one module per kind.

use proc_macro::TokenStream;
use quote::quote;
use syn::{parse_macro_input, ItemFn, ItemImpl};

mod ast;
mod generator;

use ast::{FnKind, PluginFn, StateFn};

/// Make a function `fn(&Record, [&Config], [&State]) -> Result<bool>` the plugin's filter.
#[proc_macro_attribute]
pub fn filter(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func = parse_macro_input!(item as ItemFn);
    expand(&func, || {
        ast::no_args(&attr.into(), "filter")?;
        let plugin = PluginFn::parse(&func, FnKind::Filter)?;
        Ok(generator::filter::generate(&plugin))
    })
}

/// Make a function `fn(&Record, [&Config], [&State]) -> Result<R>` the plugin's transform;
/// `R` is a `Record`, an `Option<Record>` or a `Vec<Record>`.
#[proc_macro_attribute]
pub fn transform(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func = parse_macro_input!(item as ItemFn);
    expand(&func, || {
        ast::no_args(&attr.into(), "transform")?;
        let plugin = PluginFn::parse(&func, FnKind::Transform)?;
        Ok(generator::transform::generate(&plugin))
    })
}

/// Make an `impl Aggregate for T` block the plugin's window aggregation.
#[proc_macro_attribute]
pub fn window(attr: TokenStream, item: TokenStream) -> TokenStream {
    let block = parse_macro_input!(item as ItemImpl);
    expand(&block, || {
        ast::no_args(&attr.into(), "window")?;
        Ok(generator::window::generate(ast::window_type(&block)?))
    })
}

/// Declare that this plugin's state has changed shape: `#[state(version = N)]` on the function
/// that brings values written by older versions up to date,
/// `fn(from: u32, [name: &str], old: Value) -> Result<Value>`. Goes beside the plugin's
/// `#[filter]`, `#[transform]` or `#[window]` item, in the same module.
#[proc_macro_attribute]
pub fn state(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func = parse_macro_input!(item as ItemFn);
    expand(&func, || {
        let migration = StateFn::parse(attr.into(), &func)?;
        Ok(generator::state::generate(&migration))
    })
}

/// The item as written, followed by what `generate` adds or the error that explains what was
/// expected.
fn expand(
    item: &impl quote::ToTokens,
    generate: impl FnOnce() -> syn::Result<proc_macro2::TokenStream>,
) -> TokenStream {
    let added = generate().unwrap_or_else(syn::Error::into_compile_error);
    quote!(#item #added).into()
}
