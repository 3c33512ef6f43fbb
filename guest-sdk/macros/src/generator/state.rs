//! `#[state(version = N)]`: the migration behind `StateSchema`, which `__WeirPlugin`'s
//! `schema()` finds.

use proc_macro2::TokenStream;
use quote::quote;

use crate::ast::StateFn;

pub fn generate(func: &StateFn) -> TokenStream {
    let (name, version) = (&func.name, func.version);
    let call = if func.takes_name {
        quote!(#name(from, name, old))
    } else {
        quote!(#name(from, old))
    };
    quote! {
        impl ::weir_sdk::__rt::StateSchema for __WeirPlugin {
            const VERSION: u32 = #version;
            fn migrate(
                from: u32,
                name: &str,
                old: ::weir_sdk::__serde_json::Value,
            ) -> ::weir_sdk::Result<::weir_sdk::__serde_json::Value> {
                let _ = name;
                #call
            }
        }
    }
}
