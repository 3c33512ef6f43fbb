//! The attributes of `weir-sdk`. Use them through `weir_sdk::prelude`.
//!
//! Each attribute keeps the user's item as written and adds two things: a hidden
//! `__WeirPlugin` type that normalises the item to the SDK's runtime traits (used natively by
//! `weir_sdk::testing::Harness`), and, for `wasm32` only, the component bindings of the matching
//! WIT world with exports that convert records and call the item.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::quote;
use syn::{parse_macro_input, spanned::Spanned, FnArg, ItemFn, ItemImpl, Type};

/// The WIT contract, embedded so each plugin generates exactly its own world's bindings.
const WIT: &str = include_str!("../../../wit/weir.wit");

/// Make a function `fn(&Record, [&Config], [&State]) -> Result<bool>` the plugin's filter.
#[proc_macro_attribute]
pub fn filter(attr: TokenStream, item: TokenStream) -> TokenStream {
    no_args(attr, "filter")
        .unwrap_or_else(|| expand_fn(parse_macro_input!(item as ItemFn), Kind::Filter))
}

/// Make a function `fn(&Record, [&Config], [&State]) -> Result<R>` the plugin's transform;
/// `R` is a `Record`, an `Option<Record>` or a `Vec<Record>`.
#[proc_macro_attribute]
pub fn transform(attr: TokenStream, item: TokenStream) -> TokenStream {
    no_args(attr, "transform")
        .unwrap_or_else(|| expand_fn(parse_macro_input!(item as ItemFn), Kind::Transform))
}

/// Make an `impl Aggregate for T` block the plugin's window aggregation.
#[proc_macro_attribute]
pub fn window(attr: TokenStream, item: TokenStream) -> TokenStream {
    if let Some(err) = no_args(attr, "window") {
        return err;
    }
    let item = parse_macro_input!(item as ItemImpl);
    let self_ty = &item.self_ty;
    if item.trait_.is_none() {
        return syn::Error::new(
            item.span(),
            "#[window] goes on an `impl Aggregate for YourType { … }` block",
        )
        .to_compile_error()
        .into();
    }
    let glue = component_glue(Kind::Window, false);
    quote! {
        #item

        #[doc(hidden)]
        #[allow(dead_code)]
        struct __WeirPlugin;
        impl ::weir_sdk::__rt::Plugin for __WeirPlugin {
            type Config = <#self_ty as ::weir_sdk::Aggregate>::Config;
        }
        impl ::weir_sdk::__rt::WindowPlugin for __WeirPlugin {
            type Agg = #self_ty;
        }
        #glue
    }
    .into()
}

/// Declare that this plugin's state has changed shape: `#[state(version = N)]` on the function
/// that brings values written by older versions up to date,
/// `fn(from: u32, [name: &str], old: Value) -> Result<Value>`. Goes beside the plugin's
/// `#[filter]`, `#[transform]` or `#[window]` item, in the same module.
#[proc_macro_attribute]
pub fn state(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func = parse_macro_input!(item as ItemFn);
    match expand_state(attr.into(), &func) {
        Ok(tokens) => tokens.into(),
        Err(err) => {
            let err = err.to_compile_error();
            quote!(#func #err).into()
        }
    }
}

fn expand_state(attr: TokenStream2, func: &ItemFn) -> syn::Result<TokenStream2> {
    let usage = "expected #[state(version = N)], N the version of the shape this build writes \
                 (1 for the first change)";
    let mut version: Option<u32> = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("version") {
            let lit: syn::LitInt = meta.value()?.parse()?;
            version = Some(lit.base10_parse()?);
            Ok(())
        } else {
            Err(meta.error(usage))
        }
    });
    syn::parse::Parser::parse2(parser, attr)?;
    let version = match version {
        Some(0) | None => return Err(syn::Error::new(Span::call_site(), usage)),
        Some(v) => v,
    };
    let name = &func.sig.ident;
    let call =
        match func.sig.inputs.len() {
            2 => quote!(#name(from, old)),
            3 => quote!(#name(from, name, old)),
            _ => return Err(syn::Error::new(
                func.sig.span(),
                "expected `fn(from: u32, [name: &str], old: Value) -> Result<Value>`: `old` is \
                 a value a build of state version `from` wrote under `name`",
            )),
        };
    Ok(quote! {
        #func

        impl ::weir_sdk::__rt::StateSchema for __WeirPlugin {
            const VERSION: u32 = #version;
            fn migrate(from: u32, name: &str, old: ::weir_sdk::__serde_json::Value) -> ::weir_sdk::Result<::weir_sdk::__serde_json::Value> {
                let _ = name;
                #call
            }
        }
    })
}

#[derive(Clone, Copy)]
enum Kind {
    Filter,
    Transform,
    Window,
}

fn no_args(attr: TokenStream, name: &str) -> Option<TokenStream> {
    if attr.is_empty() {
        return None;
    }
    let msg = format!("#[{name}] takes no arguments: configuration comes from the pipeline, as the function's `&Config` parameter");
    Some(
        syn::Error::new(Span::call_site(), msg)
            .to_compile_error()
            .into(),
    )
}

/// What one parameter after the record is.
enum Param {
    Config(Box<Type>),
    State,
}

fn expand_fn(func: ItemFn, kind: Kind) -> TokenStream {
    match try_expand_fn(&func, kind) {
        Ok(tokens) => tokens.into(),
        Err(err) => {
            let err = err.to_compile_error();
            quote!(#func #err).into()
        }
    }
}

fn try_expand_fn(func: &ItemFn, kind: Kind) -> syn::Result<TokenStream2> {
    let name = &func.sig.ident;
    let usage = match kind {
        Kind::Transform => {
            "expected `fn(rec: &Record, [cfg: &Config], [state: &State])`, or `rec: Record` to \
             take the record and return it changed"
        }
        _ => "expected `fn(rec: &Record, [cfg: &Config], [state: &State])`",
    };
    let mut inputs = func.sig.inputs.iter();
    // A transform may take its record by value; the runtime owns it either way.
    let by_value = match inputs.next() {
        Some(FnArg::Typed(arg)) if matches!(*arg.ty, Type::Reference(_)) => false,
        Some(FnArg::Typed(arg))
            if matches!(kind, Kind::Transform)
                && matches!(&*arg.ty, Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "Record")) =>
        {
            true
        }
        Some(other) => return Err(syn::Error::new(other.span(), usage)),
        None => return Err(syn::Error::new(func.sig.span(), usage)),
    };
    let mut params = Vec::new();
    for input in inputs {
        let FnArg::Typed(arg) = input else {
            return Err(syn::Error::new(input.span(), usage));
        };
        let Type::Reference(reference) = &*arg.ty else {
            return Err(syn::Error::new(
                arg.ty.span(),
                "parameters after the record are taken by reference: `&Config` or `&State`",
            ));
        };
        let is_state = matches!(&*reference.elem, Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "State"));
        if is_state {
            if params.iter().any(|p| matches!(p, Param::State)) {
                return Err(syn::Error::new(
                    arg.ty.span(),
                    "only one `&State` parameter",
                ));
            }
            params.push(Param::State);
        } else {
            if params.iter().any(|p| matches!(p, Param::Config(_))) {
                return Err(syn::Error::new(
                    arg.ty.span(),
                    "only one configuration parameter",
                ));
            }
            params.push(Param::Config(reference.elem.clone()));
        }
    }
    let config_ty = params
        .iter()
        .find_map(|p| match p {
            Param::Config(ty) => Some(quote!(#ty)),
            Param::State => None,
        })
        .unwrap_or_else(|| quote!(::weir_sdk::__rt::NoConfig));
    let args = params.iter().map(|p| match p {
        Param::Config(_) => quote!(cfg),
        Param::State => quote!(state),
    });
    // The runtime hands a filter `&Record` and a transform its `Record`.
    let record = match kind {
        Kind::Transform if !by_value => quote!(&rec),
        _ => quote!(rec),
    };
    let call = quote!(#name(#record #(, #args)*));
    let runtime_impl = match kind {
        Kind::Filter => quote! {
            /// This crate's filter, loaded natively with `config` (benchmarks, embedding).
            #[doc(hidden)]
            pub fn __weir_native(config: ::weir_sdk::__serde_json::Value) -> ::weir_sdk::Result<::std::boxed::Box<dyn ::weir_sdk::testing::Native>> {
                let harness = ::weir_sdk::testing::Harness::<__WeirPlugin>::with_schema(config, ::weir_sdk::__schema!(__WeirPlugin))?;
                Ok(::std::boxed::Box::new(::weir_sdk::testing::NativeFilter(harness)))
            }
            impl ::weir_sdk::__rt::FilterPlugin for __WeirPlugin {
                fn filter(rec: &::weir_sdk::Record, cfg: &Self::Config, state: &::weir_sdk::State) -> ::weir_sdk::Result<bool> {
                    let _ = (&cfg, &state);
                    #call
                }
            }
        },
        Kind::Transform => quote! {
            /// This crate's transform, loaded natively with `config` (benchmarks, embedding).
            #[doc(hidden)]
            pub fn __weir_native(config: ::weir_sdk::__serde_json::Value) -> ::weir_sdk::Result<::std::boxed::Box<dyn ::weir_sdk::testing::Native>> {
                let harness = ::weir_sdk::testing::Harness::<__WeirPlugin>::with_schema(config, ::weir_sdk::__schema!(__WeirPlugin))?;
                Ok(::std::boxed::Box::new(::weir_sdk::testing::NativeTransform(harness)))
            }
            impl ::weir_sdk::__rt::TransformPlugin for __WeirPlugin {
                fn transform(rec: ::weir_sdk::Record, cfg: &Self::Config, state: &::weir_sdk::State) -> ::weir_sdk::Result<::std::vec::Vec<::weir_sdk::Record>> {
                    let _ = (&cfg, &state);
                    #call.map(::weir_sdk::__rt::IntoRecords::into_records)
                }
            }
        },
        Kind::Window => unreachable!("windows are impl blocks"),
    };
    let keeps_state = params.iter().any(|p| matches!(p, Param::State));
    let glue = component_glue(kind, keeps_state);
    Ok(quote! {
        #func

        #[doc(hidden)]
        #[allow(dead_code)]
        struct __WeirPlugin;
        impl ::weir_sdk::__rt::Plugin for __WeirPlugin {
            type Config = #config_ty;
            const KEEPS_STATE: bool = #keeps_state;
        }
        #runtime_impl
        #glue
    })
}

/// The wasm32-only component: bindings of the world, the host imports behind `HostApi`, and
/// exports that convert records and call the runtime. A plugin without a `&State` parameter
/// never references the state imports, so the linker drops them and the host knows from the
/// component alone that the stage needs no store or changelog.
fn component_glue(kind: Kind, keeps_state: bool) -> TokenStream2 {
    let world = match kind {
        Kind::Filter => "filter",
        Kind::Transform => "transform",
        Kind::Window => "window",
    };
    // Every SDK plugin also exports the versioned-state functions (version 0 unless it has a
    // `#[state]` item), so its builds can later change the shape of their state.
    let wit = format!(
        "{WIT}\nworld sdk-{world} {{\n    include {world};\n    include versioned-state;\n}}\n"
    );
    let sdk_world = format!("sdk-{world}");
    let state_impl = match kind {
        _ if !keeps_state => quote! {
            fn state_get(&self, _: u32, _: &str) -> Option<Vec<u8>> { None }
            fn state_put(&self, _: u32, _: &str, _: &[u8], _: Option<u64>) -> Result<(), String> {
                Err("this plugin declares no `&State` parameter; window plugins keep their state in the accumulator".to_string())
            }
            fn state_delete(&self, _: u32, _: &str) {}
            fn state_scan(&self, _: u32, _: &str) -> Vec<(String, Vec<u8>)> { Vec::new() }
        },
        _ => quote! {
            fn state_get(&self, rec: u32, name: &str) -> Option<Vec<u8>> { weir::plugin::state::get(rec, name) }
            fn state_put(&self, rec: u32, name: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), String> {
                weir::plugin::state::put(rec, name, value, ttl_ms)
            }
            fn state_delete(&self, rec: u32, name: &str) { weir::plugin::state::delete(rec, name) }
            fn state_scan(&self, rec: u32, prefix: &str) -> Vec<(String, Vec<u8>)> { weir::plugin::state::scan(rec, prefix) }
        },
    };
    let exports = match kind {
        Kind::Filter => quote! {
            fn filter(batch: t::Batch) -> t::Verdicts {
                let batch = from_wire(batch);
                let verdicts = configured(
                    |cfg| wire::filter::<P>(cfg, &batch),
                    || wire::Verdicts {
                        keep: vec![false; batch.events.len()],
                        errors: uninitialised(batch.events.len()),
                    },
                );
                t::Verdicts { keep: verdicts.keep, errors: verdicts.errors }
            }
        },
        Kind::Transform => quote! {
            fn transform(batch: t::Batch) -> t::OutBatch {
                let batch = from_wire(batch);
                let out = configured(
                    |cfg| wire::transform::<P>(cfg, &batch),
                    || wire::OutBatch { errors: uninitialised(batch.events.len()), ..Default::default() },
                );
                let part = |p: wire::Part| match p {
                    wire::Part::Same => t::Part::Same,
                    wire::Part::Absent => t::Part::Absent,
                    wire::Part::Bytes(s) => t::Part::Bytes(span(s)),
                };
                t::OutBatch {
                    arena: out.arena,
                    headers: out.headers.into_iter().map(|h| t::HeaderRef { key: span(h.key), value: span(h.value) }).collect(),
                    outputs: out
                        .outputs
                        .into_iter()
                        .map(|o| t::OutputRef {
                            input: o.input,
                            key: part(o.key),
                            value: part(o.value),
                            headers: o.headers.map(span),
                            timestamp: o.timestamp,
                        })
                        .collect(),
                    errors: out.errors,
                }
            }
        },
        Kind::Window => quote! {
            fn accumulate(panes: Vec<t::Pane>) -> Vec<Result<t::PaneResult, String>> {
                with_config(panes.len(), |cfg| {
                    panes
                        .into_iter()
                        .map(|pane| {
                            let w = window(pane.window);
                            rt::accumulate::<Agg>(cfg, &w, pane.acc.as_deref(), pane.events.into_iter().map(record))
                                .map(|(acc, errors)| t::PaneResult { acc, errors })
                        })
                        .collect()
                })
            }
            fn merge(w: t::KeyedWindow, a: Vec<u8>, b: Vec<u8>) -> Result<Vec<u8>, String> {
                with_config(1, |cfg| vec![rt::merge::<Agg>(cfg, &window(w), &a, &b)]).remove(0)
            }
            fn emit(fired: Vec<(t::KeyedWindow, Vec<u8>)>) -> Vec<Result<Vec<t::Output>, String>> {
                with_config(fired.len(), |cfg| {
                    fired
                        .into_iter()
                        .map(|(w, acc)| {
                            rt::emit::<Agg>(cfg, &window(w), &acc).map(|outs| outs.into_iter().map(output).collect())
                        })
                        .collect()
                })
            }
        },
    };
    let wire_helpers = match kind {
        Kind::Filter | Kind::Transform => quote! {
            use ::weir_sdk::batch as wire;

            fn wire_span(s: t::Span) -> wire::Span {
                wire::Span { start: s.start, len: s.len }
            }
            fn span(s: wire::Span) -> t::Span {
                t::Span { start: s.start, len: s.len }
            }
            fn from_wire(b: t::Batch) -> wire::Batch {
                wire::Batch {
                    arena: b.arena,
                    topics: b.topics,
                    headers: b.headers.into_iter().map(|h| wire::HeaderRef { key: wire_span(h.key), value: wire_span(h.value) }).collect(),
                    events: b
                        .events
                        .into_iter()
                        .map(|e| wire::EventRef {
                            key: e.key.map(wire_span),
                            value: e.value.map(wire_span),
                            headers: wire_span(e.headers),
                            timestamp: e.timestamp,
                            topic: e.topic,
                            partition: e.partition,
                            offset: e.offset,
                        })
                        .collect(),
                }
            }
            fn uninitialised(n: usize) -> Vec<(u32, String)> {
                (0..n as u32).map(|i| (i, rt::UNINITIALISED.to_string())).collect()
            }
        },
        Kind::Window => quote!(),
    };
    let window_helpers = match kind {
        Kind::Window => quote! {
            /// Run `f` with the loaded config, or fail all `n` items if `init` has not succeeded.
            fn with_config<R>(n: usize, f: impl FnOnce(&Cfg) -> Vec<Result<R, String>>) -> Vec<Result<R, String>> {
                configured(f, || (0..n).map(|_| Err(rt::UNINITIALISED.to_string())).collect())
            }
            fn record(e: t::Event) -> ::weir_sdk::Record {
                let mut rec = ::weir_sdk::Record::default().at(e.topic, e.partition, e.offset);
                rec.key = e.key;
                rec.value = e.value;
                rec.headers = e.headers.into_iter().map(|h| (h.key, h.value)).collect();
                rec.timestamp = e.timestamp;
                rec
            }

            fn output(r: ::weir_sdk::Record) -> t::Output {
                t::Output {
                    key: r.key,
                    value: r.value,
                    headers: r.headers.into_iter().map(|(key, value)| t::Header { key, value }).collect(),
                    timestamp: r.timestamp,
                }
            }

            type Agg = <P as rt::WindowPlugin>::Agg;
            fn window(w: t::KeyedWindow) -> ::weir_sdk::Window {
                ::weir_sdk::Window { key: w.key, start: w.start, end: w.end }
            }
        },
        _ => quote!(),
    };
    quote! {
        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        #[allow(clippy::all, unused)]
        mod __weir_component {
            ::weir_sdk::__wit_bindgen::generate!({
                inline: #wit,
                world: #sdk_world,
                runtime_path: "::weir_sdk::__wit_bindgen::rt",
            });

            use ::weir_sdk::__rt as rt;
            use weir::plugin::types as t;

            type P = super::__WeirPlugin;
            type Cfg = <P as rt::Plugin>::Config;

            /// The plugin's `#[state]` declaration, if it has one.
            fn schema() -> Option<rt::Schema> {
                ::weir_sdk::__schema!(P)
            }
            #window_helpers
            #wire_helpers

            ::std::thread_local! {
                static CONFIG: ::std::cell::RefCell<Option<Cfg>> = const { ::std::cell::RefCell::new(None) };
            }

            /// `run` with the loaded config, or what `missing` makes if `init` has not succeeded.
            fn configured<R>(run: impl FnOnce(&Cfg) -> R, missing: impl FnOnce() -> R) -> R {
                CONFIG.with(|c| match c.borrow().as_ref() {
                    Some(cfg) => run(cfg),
                    None => missing(),
                })
            }

            struct Host;
            impl rt::HostApi for Host {
                fn config(&self) -> String { weir::plugin::host::config() }
                fn log(&self, level: ::weir_sdk::log::Level, message: &str) {
                    use ::weir_sdk::log::Level as L;
                    let level = match level {
                        L::Trace => t::Level::Trace,
                        L::Debug => t::Level::Debug,
                        L::Info => t::Level::Info,
                        L::Warn => t::Level::Warn,
                        L::Error => t::Level::Error,
                    };
                    weir::plugin::host::log(level, message)
                }
                fn sha256(&self, data: &[u8]) -> [u8; 32] {
                    let (a, b, c, d) = weir::plugin::digest::sha256(data);
                    let mut digest = [0u8; 32];
                    for (chunk, word) in digest.chunks_exact_mut(8).zip([a, b, c, d]) {
                        chunk.copy_from_slice(&word.to_be_bytes());
                    }
                    digest
                }
                #state_impl
            }

            struct Component;
            impl Guest for Component {
                fn init() -> Result<(), String> {
                    rt::set_host(Some(::std::rc::Rc::new(Host)));
                    rt::install_panic_hook();
                    let cfg = rt::load_config::<Cfg>()?;
                    CONFIG.with(|c| *c.borrow_mut() = Some(cfg));
                    Ok(())
                }
                #exports

                fn state_version() -> u32 {
                    schema().map_or(0, |s| s.version)
                }
                fn migrate_state(written_by: u32, name: String, value: Vec<u8>) -> Result<Vec<u8>, String> {
                    rt::migrate_bytes(schema(), written_by, &name, &value)
                }
            }
            export!(Component);
        }
    }
}
