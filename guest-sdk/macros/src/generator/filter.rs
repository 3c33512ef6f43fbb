//! `#[filter]`: the function behind `FilterPlugin`, and the `filter` world's exports.

use proc_macro2::TokenStream;
use quote::quote;

use crate::ast::PluginFn;

pub fn generate(func: &PluginFn) -> TokenStream {
    let plugin = super::plugin(func.config_ty(), func.keeps_state());
    let call = func.call(quote!(rec));
    let native = super::native("NativeFilter");
    let component = super::component("filter", super::state_access(func.keeps_state()));
    quote! {
        #plugin
        impl ::weir_sdk::__rt::FilterPlugin for __WeirPlugin {
            fn filter(
                rec: &::weir_sdk::Record,
                cfg: &Self::Config,
                state: &::weir_sdk::State,
            ) -> ::weir_sdk::Result<bool> {
                let _ = (&cfg, &state);
                #call
            }
        }
        #native
        #component
    }
}
