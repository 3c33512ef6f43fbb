//! What the attributes read from the items they are put on, and the errors that explain what
//! was expected.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::{spanned::Spanned, FnArg, Ident, ItemFn, ItemImpl, Type};

/// The kinds of plugin written as a function.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum FnKind {
    Filter,
    Transform,
}

/// A `#[filter]` or `#[transform]` function.
pub struct PluginFn {
    pub name: Ident,
    /// Whether it takes its record as `Record` (transforms only) rather than `&Record`.
    pub by_value: bool,
    /// What it takes after the record, in order.
    params: Vec<Param>,
}

/// What one parameter after the record is.
enum Param {
    Config(Box<Type>),
    State,
    Tables,
}

impl PluginFn {
    pub fn parse(func: &ItemFn, kind: FnKind) -> syn::Result<PluginFn> {
        let usage = match kind {
            FnKind::Transform => {
                "expected `fn(rec: &Record, [cfg: &Config], [state: &State], [tables: &Tables])`, \
                 or `rec: Record` to take the record and return it changed"
            }
            FnKind::Filter => {
                "expected `fn(rec: &Record, [cfg: &Config], [state: &State], [tables: &Tables])`"
            }
        };
        let mut inputs = func.sig.inputs.iter();
        // A transform may take its record by value; the runtime owns it either way.
        let by_value = match inputs.next() {
            Some(FnArg::Typed(arg)) if matches!(*arg.ty, Type::Reference(_)) => false,
            Some(FnArg::Typed(arg)) if kind == FnKind::Transform && is_named(&arg.ty, "Record") => {
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
                    "parameters after the record are taken by reference: `&Config`, `&State` or \
                     `&Tables`",
                ));
            };
            if is_named(&reference.elem, "Tables") {
                if params.iter().any(|p| matches!(p, Param::Tables)) {
                    return Err(syn::Error::new(
                        arg.ty.span(),
                        "only one `&Tables` parameter",
                    ));
                }
                params.push(Param::Tables);
            } else if is_named(&reference.elem, "State") {
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
        Ok(PluginFn {
            name: func.sig.ident.clone(),
            by_value,
            params,
        })
    }

    /// Its configuration type; `NoConfig` (any JSON, ignored) when it takes none.
    pub fn config_ty(&self) -> TokenStream {
        self.params
            .iter()
            .find_map(|p| match p {
                Param::Config(ty) => Some(quote!(#ty)),
                Param::State | Param::Tables => None,
            })
            .unwrap_or_else(|| quote!(::weir_sdk::__rt::NoConfig))
    }

    /// Whether it takes a `&State`.
    pub fn keeps_state(&self) -> bool {
        self.params.iter().any(|p| matches!(p, Param::State))
    }

    /// The call of the function on `rec` (a `Record` or `&Record`, as it takes it), `cfg` and
    /// `state`, which are in scope where this goes.
    pub fn call(&self, rec: TokenStream) -> TokenStream {
        let name = &self.name;
        let args = self.params.iter().map(|p| match p {
            Param::Config(_) => quote!(cfg),
            Param::State => quote!(state),
            Param::Tables => quote!(&::weir_sdk::Tables::__for_record(state.__rec())),
        });
        quote!(#name(#rec #(, #args)*))
    }
}

/// A `#[window]` block: the aggregation type it implements `Aggregate` for.
pub fn window_type(item: &ItemImpl) -> syn::Result<&Type> {
    if item.trait_.is_none() {
        return Err(syn::Error::new(
            item.span(),
            "#[window] goes on an `impl Aggregate for YourType { … }` block",
        ));
    }
    Ok(&item.self_ty)
}

/// A `#[state(version = N)]` migration function.
pub struct StateFn {
    pub version: u32,
    pub name: Ident,
    /// Whether it takes the name of the state entry between `from` and `old`.
    pub takes_name: bool,
}

impl StateFn {
    pub fn parse(attr: TokenStream, func: &ItemFn) -> syn::Result<StateFn> {
        let usage = "expected #[state(version = N)], N the version of the shape this build \
                     writes (1 for the first change)";
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
        let takes_name =
            match func.sig.inputs.len() {
                2 => false,
                3 => true,
                _ => return Err(syn::Error::new(
                    func.sig.span(),
                    "expected `fn(from: u32, [name: &str], old: Value) -> Result<Value>`: `old` \
                     is a value a build of state version `from` wrote under `name`",
                )),
            };
        Ok(StateFn {
            version,
            name: func.sig.ident.clone(),
            takes_name,
        })
    }
}

/// The error for arguments given to an attribute that takes none.
pub fn no_args(attr: &TokenStream, name: &str) -> syn::Result<()> {
    if attr.is_empty() {
        return Ok(());
    }
    let msg = format!(
        "#[{name}] takes no arguments: configuration comes from the pipeline, as the \
         function's `&Config` parameter"
    );
    Err(syn::Error::new(Span::call_site(), msg))
}

/// Whether `ty` is a path ending in `name` (`Record`, `weir_sdk::Record`).
fn is_named(ty: &Type, name: &str) -> bool {
    matches!(ty, Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == name))
}

#[cfg(test)]
mod tests {
    use syn::parse_quote;

    use super::*;

    fn parse(func: ItemFn, kind: FnKind) -> Result<PluginFn, String> {
        PluginFn::parse(&func, kind).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_the_record_then_config_and_state_in_any_order() {
        let f = parse(
            parse_quote!(
                fn f(rec: &Record, state: &State, cfg: &my::Config) -> Result<bool> {}
            ),
            FnKind::Filter,
        )
        .unwrap();
        assert!(!f.by_value && f.keeps_state());
        assert_eq!(f.config_ty().to_string(), "my :: Config");
        assert_eq!(f.call(quote!(rec)).to_string(), "f (rec , state , cfg)");

        let t = parse(
            parse_quote!(
                fn t(rec: Record) {}
            ),
            FnKind::Transform,
        )
        .unwrap();
        assert!(t.by_value && !t.keeps_state());
        assert_eq!(t.config_ty().to_string(), ":: weir_sdk :: __rt :: NoConfig");
        assert_eq!(t.call(quote!(rec)).to_string(), "t (rec)");

        let j = parse(
            parse_quote!(
                fn j(rec: &Record, tables: &Tables, cfg: &C) {}
            ),
            FnKind::Transform,
        )
        .unwrap();
        assert!(!j.keeps_state());
        assert_eq!(j.config_ty().to_string(), "C");
        assert_eq!(
            j.call(quote!(rec)).to_string(),
            "j (rec , & :: weir_sdk :: Tables :: __for_record (state . __rec ()) , cfg)"
        );
    }

    #[test]
    fn explains_what_it_expected() {
        let filter = |f| parse(f, FnKind::Filter).err().unwrap();
        assert!(filter(parse_quote!(
            fn f(rec: Record) {}
        ))
        .starts_with("expected `fn(rec: &Record"));
        assert!(filter(parse_quote!(
            fn f() {}
        ))
        .starts_with("expected `fn(rec: &Record"));
        assert_eq!(
            filter(parse_quote!(
                fn f(r: &Record, s: &State, t: &State) {}
            )),
            "only one `&State` parameter"
        );
        assert_eq!(
            filter(parse_quote!(
                fn f(r: &Record, s: &Tables, t: &weir_sdk::Tables) {}
            )),
            "only one `&Tables` parameter"
        );
        assert_eq!(
            filter(parse_quote!(
                fn f(r: &Record, a: &A, b: &B) {}
            )),
            "only one configuration parameter"
        );
        assert!(filter(parse_quote!(
            fn f(r: &Record, c: Config) {}
        ))
        .starts_with("parameters after the record are taken by reference"));
        let transform = parse(
            parse_quote!(
                fn t(rec: Vec<u8>) {}
            ),
            FnKind::Transform,
        );
        assert!(transform
            .err()
            .unwrap()
            .contains("or `rec: Record` to take the record"));
        assert!(no_args(&quote!(x), "filter")
            .unwrap_err()
            .to_string()
            .starts_with("#[filter] takes no arguments"));
        let not_a_trait_impl: ItemImpl = parse_quote!(impl Sums {});
        assert!(window_type(&not_a_trait_impl).is_err());
    }

    #[test]
    fn reads_state_versions() {
        let two: ItemFn = parse_quote!(
            fn m(from: u32, old: Value) -> Result<Value> {}
        );
        let three: ItemFn = parse_quote!(
            fn m(from: u32, name: &str, old: Value) {}
        );
        let m = StateFn::parse(quote!(version = 2), &two).unwrap();
        assert_eq!((m.version, m.takes_name), (2, false));
        assert!(
            StateFn::parse(quote!(version = 1), &three)
                .unwrap()
                .takes_name
        );
        for bad in [quote!(version = 0), quote!(), quote!(v = 1)] {
            let err = StateFn::parse(bad, &two).err().unwrap().to_string();
            assert!(err.starts_with("expected #[state(version = N)]"), "{err}");
        }
        let one: ItemFn = parse_quote!(
            fn m(old: Value) {}
        );
        let err = StateFn::parse(quote!(version = 1), &one).err().unwrap();
        assert!(err.to_string().starts_with("expected `fn(from: u32"));
    }
}
