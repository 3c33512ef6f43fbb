//! `#[transform]`: the function behind `TransformPlugin`, and the `transform` world's exports.

use proc_macro2::TokenStream;
use quote::quote;

use crate::ast::PluginFn;

pub fn generate(func: &PluginFn) -> TokenStream {
    let plugin = super::plugin(func.config_ty(), func.keeps_state());
    // The runtime hands a transform its `Record`; a function that takes `&Record` borrows it.
    let call = func.call(if func.by_value {
        quote!(rec)
    } else {
        quote!(&rec)
    });
    let native = super::native("NativeTransform");
    let component = super::component("transform", super::state_access(func.keeps_state()));
    quote! {
        #plugin
        impl ::weir_sdk::__rt::TransformPlugin for __WeirPlugin {
            fn transform(
                rec: ::weir_sdk::Record,
                cfg: &Self::Config,
                state: &::weir_sdk::State,
            ) -> ::weir_sdk::Result<::std::vec::Vec<::weir_sdk::Record>> {
                let _ = (&cfg, &state);
                #call.map(::weir_sdk::__rt::IntoRecords::into_records)
            }
        }
        #native
        #component
    }
}
