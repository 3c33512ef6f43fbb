//! `#[window]`: the aggregation behind `WindowPlugin`, and the `window` world's exports.

use proc_macro2::TokenStream;
use quote::quote;
use syn::Type;

pub fn generate(agg: &Type) -> TokenStream {
    let plugin = super::plugin(quote!(<#agg as ::weir_sdk::Aggregate>::Config), false);
    // Windows keep their state in the accumulator: their world has no state imports.
    let component = super::component("window", "NoState");
    quote! {
        #plugin
        impl ::weir_sdk::__rt::WindowPlugin for __WeirPlugin {
            type Agg = #agg;
        }
        #component
    }
}
