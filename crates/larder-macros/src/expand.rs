//! What `#[memoize]` turns a function into.
//!
//! For
//!
//! ```text
//! #[memoize(capacity = 256)]
//! pub fn fib(n: u64) -> u128 { BODY }
//! ```
//!
//! it writes
//!
//! ```text
//! pub fn fib(n: u64) -> u128 {
//!     let __larder_memo_key = Clone::clone(&n);
//!     return larder::memo::get_with(fib_cache(), __larder_memo_key, move || -> u128 { BODY });
//! }
//!
//! pub fn fib_cache() -> &'static larder::Cache<u64, u128> {
//!     static __LARDER_MEMO_CACHE: OnceLock<larder::Cache<u64, u128>> = OnceLock::new();
//!     __LARDER_MEMO_CACHE.get_or_init(|| larder::memo::build(capacity, policy, ttl))
//! }
//!
//! pub fn fib_cache_clear() {
//!     larder::memo::cache_clear(fib_cache());
//! }
//! ```
//!
//! The body runs as a closure, so `return` and `?` in it mean what they meant, recursion calls
//! the memoized function, and `get_with` makes concurrent callers with equal keys compute once.
//! Its inner attributes (`#![allow(..)]`) stay at the top of the function's body. The key's
//! binding and the call of `fib_cache` are mixed-site names, so the arguments may have those
//! names too.
//! `fib_cache` and `fib_cache_clear` allow `non_snake_case`: their names are made from the
//! function's, which is linted (or allowed) where it is written, and the function's attributes
//! do not reach them.
//! The calls go through `larder::memo`'s wrappers, whose bounds carry the messages for a key or
//! value type that falls short (`#[diagnostic::on_unimplemented]`); lines naming
//! `larder::memo::key_part` and `larder::memo::value` report each such type where it is written,
//! and an impl of `larder::memo::BorrowedKeyPartCheck<T>` before the function each `&T` key
//! argument whose `T` has no owned copy.
//! The key is built before the body runs, from clones of the arguments it names, alone or in a
//! tuple (a reference argument `&T` contributes `T::to_owned()`), whether its type is written
//! out or not, so the body still owns every argument; but where the written type is a
//! reference, a `&'static` argument enters as itself (a copy of the reference), and no other
//! argument may be there.
//!
//! The function's return type picks the loader: `Result<T, E>` caches only `Ok` values through
//! `try_get_with_unshared` (each caller gets its own `E`); `Option<T>` caches `Some` and `None`,
//! or with `cache_none = false` only `Some`, through `optionally_get_with`; any other type is
//! cached as it is, through `get_with`. The types are recognised by the last segment of their
//! path (`Result`, which includes aliases such as `std::io::Result<T>` and `std::fmt::Result`,
//! and `Option`), and reference arguments by their `&`, also when a `macro_rules!` passed them
//! in as `$t:ty`. The cached `T` is the first type argument, or, for an alias that names none,
//! `<R as IntoIterator>::Item`, which is `T` for every `Result<T, E>`.

use crate::options::{Capacity, KeySpec, Options, Policy};
use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{
    Expr, FnArg, GenericArgument, GenericParam, Ident, ItemFn, Pat, PathArguments, ReturnType, Type,
};

/// An argument the key can be built from: its name, its declared type, and how it enters the key.
struct Argument {
    name: Ident,
    ty: Type,
    /// The type it has in the key: `T` for `T`, `<T as larder::memo::BorrowedKeyPart>::Owned`
    /// (which is `<T as ToOwned>::Owned`) for `&T`.
    key_ty: TokenStream,
    /// The expression that makes its key part from the argument.
    key_part: TokenStream,
    /// For `&T`, `T`: the key holds its owned copy (`larder::memo::BorrowedKeyPart`).
    referent: Option<Type>,
    /// Where its key part borrows (a lifetime other than `'static`, or an elided one), which a
    /// key kept in a `static` cannot.
    borrows: Option<Span>,
}

/// How the function's result is cached.
enum Loader {
    /// Any type, cached as it is (`get_with`).
    Plain,
    /// `Result<T, E>`: `T` is cached (`try_get_with_unshared`).
    Fallible,
    /// `Option<T>` with `cache_none = false`: `T` is cached (`optionally_get_with`).
    Optional,
}

/// The key: its type, the expression that builds it, and the types that must be hashable,
/// each with the span to report there.
struct Key {
    /// `None` when only the compiler knows it (`key = <expr>`, an expression other than
    /// arguments).
    ty: Option<TokenStream>,
    expr: TokenStream,
    parts: Vec<(Span, TokenStream)>,
    /// The `T` of each of its `&T` parts.
    referents: Vec<Type>,
}

pub(crate) fn expand(options: Options, function: ItemFn) -> syn::Result<TokenStream> {
    check_signature(&function)?;
    let arguments = arguments(&function, &options.key)?;
    let Key {
        ty: key_ty,
        expr: key_expr,
        parts,
        referents,
    } = key(&options.key, &arguments)?;
    let (loader, value_ty) = loader(&function.sig.output, options.cache_none)?;
    if let Some(span) = borrowed_lifetime(&value_ty) {
        return Err(syn::Error::new(
            span,
            "#[memoize] keeps results in a `static` cache, which outlives every call, so the \
             result cannot borrow (from the arguments or anything else): return an owned type \
             (`String` for `&str`, `Vec<T>` for `&[T]`, or an `Arc`)",
        ));
    }

    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = function;
    // `syn` gathers the body's inner attributes (`#![allow(..)]` on its first line) with the
    // function's outer ones. Only the outer ones may go before `fn`; the inner ones stay at the
    // top of the body, where they still apply to the whole function.
    let (attrs, inner_attrs): (Vec<_>, Vec<_>) = attrs
        .into_iter()
        .partition(|attr| matches!(attr.style, syn::AttrStyle::Outer));
    let name = &sig.ident;
    // Generated names are built from the name without its `r#` (`r#match` → `match_cache`):
    // `r#` is no part of an identifier's text, and `R#MATCH` is no identifier.
    let bare = name.unraw();
    let accessor = format_ident!("{}_cache", bare);
    let cache_clear = format_ident!("{}_cache_clear", bare);
    let output_ty = match &sig.output {
        ReturnType::Default => quote!(()),
        ReturnType::Type(_, ty) => ty.to_token_stream(),
    };
    // The function's span runs from its first token to its last, the closing brace of its
    // body: written with the call site's span, that brace made the whole function part of the
    // expansion, where rustc reports no `dead_code` or `unreachable_pub` and puts
    // `missing_docs` on the attribute. The body's own braces keep the function the user's.
    // Its last statement is a `return`: a tail expression from the expansion in a body of the
    // user's is one clippy's `implicit_return` reports at the attribute, which the user cannot
    // change (and `cargo clippy --fix` would write `return #[memoize]`).
    let body_span = block.brace_token.span.join();
    let braced = |statements: TokenStream| {
        let mut body = proc_macro2::Group::new(proc_macro2::Delimiter::Brace, statements);
        body.set_span(body_span);
        body
    };

    // One line per argument that is part of the key, spanned at its type, so that a type that
    // cannot be hashed is reported there with a message that says what to do.
    let key_checks = parts.iter().map(|(span, ty)| {
        quote_spanned! {*span=>
            let _ = ::larder::memo::key_part::<#ty>;
        }
    });
    // A `&T` part's type, `<T as BorrowedKeyPart>::Owned`, is named in the accessor's
    // signature, which the compiler checks before any function's body. For a `T` without an
    // owned copy (not `Clone`) it fails there, reported by the deepest bound that fails
    // (`T: Clone`), not by `BorrowedKeyPart`'s message. An impl whose trait has the bound,
    // written before the function, is checked first and reported by that message; the
    // compiler's own errors follow it.
    // The impl's type has a name no user type is expected to have: `#referent` is resolved
    // inside the block, where a user type of the same name would be hidden by it.
    let referent_checks = referents.iter().map(|referent| {
        quote_spanned! {referent.span()=>
            const _: () = {
                #[allow(dead_code)]
                struct __LarderMemoReferent;
                impl ::larder::memo::BorrowedKeyPartCheck<#referent> for __LarderMemoReferent {}
            };
        }
    });
    let value_check = quote_spanned! {value_ty.span()=>
        let _ = ::larder::memo::value::<#value_ty>;
    };
    let load = match loader {
        Loader::Plain => quote!(get_with),
        Loader::Fallible => quote!(try_get_with),
        Loader::Optional => quote!(optionally_get_with),
    };
    // The key's binding is hygienic (mixed-site), so an argument named `key` stays the body's.
    // Mixed-site hygiene covers local names only: a pattern's name is looked up among the
    // items where the function is written, and a constant `key` there would make `let key`
    // a refutable pattern. So the binding has a name no user item is expected to have.
    let key = Ident::new("__larder_memo_key", Span::mixed_site());
    let capacity = match options.capacity {
        Capacity::Bounded(n) => quote!(::core::option::Option::Some(#n)),
        Capacity::Unbounded => quote!(::core::option::Option::None),
    };
    let policy = match options.policy {
        None | Some(Policy::S3Fifo) => quote!(::larder::Policy::S3Fifo),
        Some(Policy::Lru) => quote!(::larder::Policy::Lru),
    };
    let ttl = match options.ttl {
        Some(d) => {
            let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
            quote!(::core::option::Option::Some(::core::time::Duration::new(#secs, #nanos)))
        }
        None => quote!(::core::option::Option::None),
    };
    // The function, linked where rustdoc can resolve it: it resolves no raw name (`r#match`),
    // which it would show as written, brackets and all.
    let function_ref = if name.to_string().starts_with("r#") {
        format!("`{name}`")
    } else {
        format!("[`{name}`]")
    };
    let accessor_doc = format!(
        "The cache behind {function_ref}, created on first use: `stats()` for its hits, misses \
         and size, `clear()` to forget every result (keeping the counters; [`{cache_clear}`] \
         zeroes them too)."
    );
    // `clear()` keeps the counters, as an ordinary cache's must, but Python's `cache_clear()`
    // zeroes them: so the attribute writes the two steps beside the accessor, under that name.
    let cache_clear_doc = format!(
        "Forgets every result of {function_ref} and zeroes the counters of [`{accessor}`]: \
         Python's `cache_clear()`."
    );

    Ok(match key_ty {
        // The key's type is written out: the accessor owns the typed cache.
        Some(key_ty) => {
            // The accessor is called by a mixed-site name, which sees the items beside the
            // function but none of the caller's local bindings: so an argument named
            // `<name>_cache` does not hide it. It is reported at the function's name.
            let callee = Ident::new(
                &accessor.to_string(),
                Span::mixed_site().located_at(accessor.span()),
            );
            let call = quote!(::larder::memo::#load(#callee(), #key, move || -> #output_ty #block));
            let body = braced(quote! {
                #(#inner_attrs)*
                #(#key_checks)*
                #value_check
                let #key: #key_ty = #key_expr;
                return #call;
            });
            quote! {
                #(#referent_checks)*

                #(#attrs)*
                #vis #sig #body

                // The static's type is resolved inside the accessor, where the static's own
                // name hides any item of that name: so it has one no user item is expected to
                // have (a `const CACHE` in `[u8; CACHE]` would otherwise name the static).
                #[doc = #accessor_doc]
                #[allow(non_snake_case)]
                #vis fn #accessor() -> &'static ::larder::Cache<#key_ty, #value_ty> {
                    static __LARDER_MEMO_CACHE: ::std::sync::OnceLock<
                        ::larder::Cache<#key_ty, #value_ty>,
                    > = ::std::sync::OnceLock::new();
                    __LARDER_MEMO_CACHE
                        .get_or_init(|| ::larder::memo::build(#capacity, #policy, #ttl))
                }

                #[doc = #cache_clear_doc]
                #[allow(non_snake_case)]
                #vis fn #cache_clear() {
                    ::larder::memo::cache_clear(#callee());
                }
            }
        }
        // Only the compiler knows it: the cache lives in a slot beside the function, built
        // by the first call for the type the key expression has.
        None => {
            // The slot's name keeps the function's as it is: upper-cased, `userId` and
            // `userid` would both have `__LARDER_MEMO_USERID`.
            let slot = format_ident!("__LARDER_MEMO_{}", bare);
            let cache = quote!(::larder::memo::slot_cache(&#slot, #policy, #ttl));
            let call = quote!(::larder::memo::#load(#cache, #key, move || -> #output_ty #block));
            let body = braced(quote! {
                #(#inner_attrs)*
                #value_check
                let #key = #key_expr;
                return #call;
            });
            quote! {
                #(#referent_checks)*

                #[doc(hidden)]
                #[allow(non_upper_case_globals)]
                static #slot: ::larder::memo::Slot = ::larder::memo::Slot::new(#capacity);

                #(#attrs)*
                #vis #sig #body

                #[doc = #accessor_doc]
                #[allow(non_snake_case)]
                #vis fn #accessor() -> &'static dyn ::larder::memo::MemoCache {
                    &#slot
                }

                #[doc = #cache_clear_doc]
                #[allow(non_snake_case)]
                #vis fn #cache_clear() {
                    ::larder::memo::slot_cache_clear(&#slot);
                }
            }
        }
    })
}

/// Rejects what one static cache per function cannot serve, saying what to write instead.
fn check_signature(function: &ItemFn) -> syn::Result<()> {
    let sig = &function.sig;
    if let Some(receiver) = sig.receiver() {
        return Err(syn::Error::new(
            receiver.span(),
            "#[memoize] cannot go on a method: its one cache would be shared by every `self`. \
             Move the computation into a free function of the fields it reads and memoize that, \
             or keep a `larder::Cache` in the struct and call `get_with` on it",
        ));
    }
    if let Some(param) = sig
        .generics
        .params
        .iter()
        .find(|p| !matches!(p, GenericParam::Lifetime(_)))
    {
        return Err(syn::Error::new(
            param.span(),
            "#[memoize] needs a function without type or const parameters: its one cache has \
             one key type and one value type. Memoize a non-generic wrapper for each type you \
             call it with",
        ));
    }
    if let Some(token) = &sig.asyncness {
        return Err(syn::Error::new(
            token.span(),
            "#[memoize] does not support `async fn`: a cached future would block a thread \
             while it loads. Memoize the synchronous part, or keep a `larder::Cache` and \
             insert the awaited value",
        ));
    }
    if let Some(token) = &sig.constness {
        return Err(syn::Error::new(
            token.span(),
            "#[memoize] cannot go on a `const fn`: a cache lookup is not const. Remove `const`",
        ));
    }
    if let Some(token) = &sig.unsafety {
        return Err(syn::Error::new(
            token.span(),
            "#[memoize] does not support `unsafe fn`: memoize a safe function that does the \
             unsafe call inside",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(syn::Error::new(
            variadic.span(),
            "#[memoize] does not support variadic functions",
        ));
    }
    if let ReturnType::Type(_, ty) = &sig.output {
        if let Some(span) = impl_trait(ty) {
            return Err(syn::Error::new(
                span,
                "#[memoize] needs a nameable return type to store: write the concrete type \
                 instead of `impl Trait`",
            ));
        }
    }
    Ok(())
}

/// Where `ty` has an `impl Trait`, as all of it or anywhere inside (`&impl AsRef<str>`,
/// `Vec<impl Display>`, `Result<impl Display, E>`). The expansion names the argument and return
/// types where `impl Trait` is not allowed (the key's type, the cache's, the closure that runs
/// the body), so the compiler would report it at code the user did not write, with hints that
/// do not apply: the attribute refuses it instead, wherever it is, function pointer types and
/// `Fn(..)` bounds included (a `fn(impl Trait)` is no type).
fn impl_trait(ty: &Type) -> Option<Span> {
    find_in_type(ty, true, &|part| match part {
        TypePart::Type(Type::ImplTrait(i)) => Some(i.impl_token.span),
        _ => None,
    })
}

/// What [`find_in_type`] shows its visitor.
enum TypePart<'t> {
    /// A type: the one walked, and each inside it.
    Type(&'t Type),
    /// A lifetime written in it.
    Lifetime(&'t syn::Lifetime),
    /// A reference whose lifetime is elided.
    ElidedReference(&'t syn::TypeReference),
}

/// Walks `ty` as written, showing `visit` each [`TypePart`], and returns the first span
/// `visit` answers with. It enters references, tuples, arrays, slices, pointers, groups and
/// parentheses, paths' generic arguments (and a qualified path's self type), and trait
/// objects' bounds except higher-ranked ones (`dyn for<'a> Trait<'a>`, whose lifetimes are
/// their own); with `into_fns`, also function pointer types and `Fn(..)` sugar, whose lifetimes
/// are the function's own too. What a path hides (`Cow<str>`'s lifetime) is left to the
/// compiler. One walk for every check of a type the attribute makes, so they all see the same
/// parts of it.
fn find_in_type<'t>(
    ty: &'t Type,
    into_fns: bool,
    visit: &dyn Fn(TypePart<'t>) -> Option<Span>,
) -> Option<Span> {
    let walk = |t: &'t Type| find_in_type(t, into_fns, visit);
    let in_output = |output: &'t ReturnType| match output {
        ReturnType::Type(_, t) => walk(t),
        ReturnType::Default => None,
    };
    let in_path = |path: &'t syn::Path| {
        path.segments
            .iter()
            .find_map(|segment| match &segment.arguments {
                PathArguments::AngleBracketed(args) => args.args.iter().find_map(|arg| match arg {
                    GenericArgument::Lifetime(l) => visit(TypePart::Lifetime(l)),
                    GenericArgument::Type(t) => walk(t),
                    GenericArgument::AssocType(a) => walk(&a.ty),
                    _ => None,
                }),
                PathArguments::Parenthesized(args) if into_fns => args
                    .inputs
                    .iter()
                    .find_map(walk)
                    .or_else(|| in_output(&args.output)),
                _ => None,
            })
    };
    visit(TypePart::Type(ty)).or_else(|| match ty {
        Type::Reference(r) => r
            .lifetime
            .as_ref()
            .map_or_else(
                || visit(TypePart::ElidedReference(r)),
                |l| visit(TypePart::Lifetime(l)),
            )
            .or_else(|| walk(&r.elem)),
        Type::Path(p) => p
            .qself
            .as_ref()
            .and_then(|q| walk(&q.ty))
            .or_else(|| in_path(&p.path)),
        Type::Tuple(t) => t.elems.iter().find_map(walk),
        Type::Array(a) => walk(&a.elem),
        Type::Slice(s) => walk(&s.elem),
        Type::Ptr(p) => walk(&p.elem),
        Type::Paren(p) => walk(&p.elem),
        Type::Group(g) => walk(&g.elem),
        Type::TraitObject(t) => t.bounds.iter().find_map(|bound| match bound {
            syn::TypeParamBound::Lifetime(l) => visit(TypePart::Lifetime(l)),
            syn::TypeParamBound::Trait(t) if t.lifetimes.is_none() => in_path(&t.path),
            _ => None,
        }),
        Type::BareFn(f) if into_fns => f
            .inputs
            .iter()
            .find_map(|input| walk(&input.ty))
            .or_else(|| in_output(&f.output)),
        _ => None,
    })
}

/// The arguments, each with its key part; `key` is the key option, which the message for an
/// argument `_` mentions.
fn arguments(function: &ItemFn, key: &KeySpec) -> syn::Result<Vec<Argument>> {
    function
        .sig
        .inputs
        .iter()
        .map(|input| {
            let FnArg::Typed(arg) = input else {
                unreachable!("check_signature rejected receivers")
            };
            let name =
                match &*arg.pat {
                    Pat::Ident(p) if p.subpat.is_none() => p.ident.clone(),
                    Pat::Wild(wild) => return Err(unnamed_argument(wild, function, key)),
                    other => return Err(syn::Error::new(
                        other.span(),
                        "#[memoize] needs each argument to be a plain name (`point: (i32, i32)`), \
                         so that the key can name it: destructure inside the body",
                    )),
                };
            let ty = (*arg.ty).clone();
            if let Some(span) = impl_trait(&ty) {
                return Err(syn::Error::new(
                    span,
                    "#[memoize] needs a function without type parameters, and `impl Trait` in \
                     an argument is one: take a concrete type",
                ));
            }
            // A reference argument's own lifetime is fine: its key part is an owned copy.
            let borrows = match ungrouped(&ty) {
                Type::Reference(r) => borrowed_lifetime(&r.elem),
                other => borrowed_lifetime(other),
            };
            let (key_ty, key_part, referent) =
                match ungrouped(&ty) {
                    Type::Reference(r) if r.mutability.is_some() => return Err(syn::Error::new(
                        ty.span(),
                        "#[memoize] cannot take a `&mut` argument: a cached call would skip the \
                         body's changes to it. Take `&T` and return the new value instead",
                    )),
                    // `ToOwned` through larder's `BorrowedKeyPart`, whose message says what to
                    // do with a `T` that has no owned copy (see `referent_checks`). Spanned at
                    // `T`, so that the compiler's errors about it point there, also those in the
                    // accessor's signature.
                    Type::Reference(r) => {
                        let inner = &r.elem;
                        let span = inner.span();
                        (
                            quote_spanned!(span=>
                                <#inner as ::larder::memo::BorrowedKeyPart>::Owned
                            ),
                            quote_spanned!(span=>
                                ::larder::memo::BorrowedKeyPart::to_key_part(#name)
                            ),
                            Some((**inner).clone()),
                        )
                    }
                    _ => (
                        ty.to_token_stream(),
                        quote!(::core::clone::Clone::clone(&#name)),
                        None,
                    ),
                };
            Ok(Argument {
                name,
                ty,
                key_ty,
                key_part,
                referent,
                borrows,
            })
        })
        .collect()
}

/// The error for an argument `_`: it has no name for the key to use, so it needs one; a name
/// puts it in the key, which the key option can leave it out of.
fn unnamed_argument(wild: &syn::PatWild, function: &ItemFn, key: &KeySpec) -> syn::Error {
    let leave_out = match key {
        KeySpec::AllArguments => {
            let named: Vec<String> = function
                .sig
                .inputs
                .iter()
                .filter_map(|input| match input {
                    FnArg::Typed(arg) => match &*arg.pat {
                        Pat::Ident(p) => Some(p.ident.to_string()),
                        _ => None,
                    },
                    FnArg::Receiver(_) => None,
                })
                .collect();
            let option = match named.as_slice() {
                [one] => one.clone(),
                more => format!("({})", more.join(", ")),
            };
            format!(
                ". Named, it is part of the key (so calls that differ only in it are cached \
                 apart); to leave it out, key by the others: `#[memoize(key = {option})]`"
            )
        }
        // The key option already says what the key is, and it cannot name `_`.
        KeySpec::Arguments(_) | KeySpec::Typed(..) => {
            " (your `key` leaves it out of the key)".to_owned()
        }
    };
    syn::Error::new(
        wild.span(),
        format!(
            "#[memoize] needs a name for each argument, and `_` is none: name it, such as \
             `_unused`{leave_out}"
        ),
    )
}

/// `ty` without the invisible group a `macro_rules!` `$t:ty` wraps it in, or parentheses, so
/// that a `&str` or a `Result` is recognised however it was written.
fn ungrouped(mut ty: &Type) -> &Type {
    loop {
        match ty {
            Type::Group(group) => ty = &group.elem,
            Type::Paren(paren) => ty = &paren.elem,
            _ => return ty,
        }
    }
}

/// The key's type, the expression that builds it, and what must be hashable.
fn key(spec: &KeySpec, arguments: &[Argument]) -> syn::Result<Key> {
    match spec {
        KeySpec::AllArguments => {
            owned_key_parts(arguments.iter())?;
            Ok(tuple_key(arguments.iter().collect()))
        }
        KeySpec::Typed(ty, _) if impl_trait(ty).is_some() => Err(syn::Error::new(
            impl_trait(ty).unwrap_or_else(|| ty.span()),
            "#[memoize] needs the key's type named, to hold it in a `static` cache: write the \
             concrete type instead of `impl Trait`, or leave the type out (`key = <expr>`)",
        )),
        KeySpec::Typed(ty, _) if borrowed_lifetime(ty).is_some() => Err(syn::Error::new(
            borrowed_lifetime(ty).unwrap_or_else(|| ty.span()),
            "#[memoize] keeps keys in a `static` cache, which outlives every call, so the key's \
             type cannot borrow: name an owned type (`String` for `&str`)",
        )),
        // The type is written out, so the expression is taken as it is, but for the arguments
        // it names, which enter as their key parts, as in `key = <expr>`, or, where the type
        // is a reference, as themselves.
        KeySpec::Typed(ty, expr) => {
            let elements = key_elements(expr, Some(ty), arguments)?;
            Ok(Key {
                ty: Some(ty.to_token_stream()),
                expr: with_key_parts(&elements),
                parts: vec![(ty.span(), ty.to_token_stream())],
                referents: referents_named(&elements),
            })
        }
        KeySpec::Arguments(expr) => {
            let find = |e: &Expr| named_argument(e, arguments);
            let chosen = match ungrouped_expr(expr) {
                Expr::Tuple(t) => t
                    .elems
                    .iter()
                    .map(find)
                    .collect::<Option<Vec<_>>>()
                    .map(|args| (args, true)),
                single => find(single).map(|a| (vec![a], false)),
            };
            if let Some((args, tuple)) = chosen {
                owned_key_parts(args.iter().copied())?;
                return Ok(if tuple {
                    tuple_of(&args)
                } else {
                    tuple_key(args)
                });
            }
            // Any other expression: its type is the compiler's to find.
            let elements = key_elements(expr, None, arguments)?;
            Ok(Key {
                ty: None,
                expr: with_key_parts(&elements),
                parts: Vec::new(),
                referents: referents_named(&elements),
            })
        }
    }
}

/// The argument `expr` names, if it is a bare argument name (in parentheses or not).
fn named_argument<'a>(expr: &Expr, arguments: &'a [Argument]) -> Option<&'a Argument> {
    match ungrouped_expr(expr) {
        Expr::Path(p) if p.qself.is_none() && p.attrs.is_empty() => p
            .path
            .get_ident()
            .and_then(|id| arguments.iter().find(|a| a.name == *id)),
        _ => None,
    }
}

/// A key expression, element by element: all of it, or each element of its tuple.
struct KeyElements<'e, 'a> {
    tuple: bool,
    /// Each element, with how the argument it names, if it is one, enters the key.
    elements: Vec<(&'e Expr, Option<Entry<'a>>)>,
}

/// How an argument that a key expression names alone, or as an element of a tuple, enters the
/// key.
enum Entry<'a> {
    /// As its key part (`(name, n + 1)` clones `name`), so that the body still owns it.
    KeyPart(&'a Argument),
    /// As itself: a `&'static` argument where the key's written type is a reference (a copy of
    /// the reference, which the body still has too).
    Itself(&'a Argument),
}

/// The elements of a key expression; `ty` is the key's type, where it is written out. An
/// argument enters as its key part, but at a place where that type is a reference
/// (`key: &'static str = name`, or an element of a tuple type of as many elements as the
/// expression's tuple): a `&T`'s key part is its owned copy, a `String` for a `&str`, which is
/// no reference, so there the argument enters as itself, and must be a `&'static` one, since
/// the `static` cache keeps it after the call ([`static_reference`]).
fn key_elements<'e, 'a>(
    expr: &'e Expr,
    ty: Option<&Type>,
    arguments: &'a [Argument],
) -> syn::Result<KeyElements<'e, 'a>> {
    let (tuple, exprs): (bool, Vec<&Expr>) = match ungrouped_expr(expr) {
        Expr::Tuple(t) => (true, t.elems.iter().collect()),
        other => (false, vec![other]),
    };
    let places: Vec<Option<&Type>> = match (tuple, ty.map(ungrouped)) {
        (true, Some(Type::Tuple(types))) if types.elems.len() == exprs.len() => {
            types.elems.iter().map(|t| Some(ungrouped(t))).collect()
        }
        (true, _) => vec![None; exprs.len()],
        (false, place) => vec![place],
    };
    let elements = exprs
        .into_iter()
        .zip(places)
        .map(|(e, place)| {
            let entry = match (named_argument(e, arguments), place) {
                (None, _) => None,
                (Some(arg), Some(Type::Reference(place))) => {
                    static_reference(arg, place)?;
                    Some(Entry::Itself(arg))
                }
                (Some(arg), _) => Some(Entry::KeyPart(arg)),
            };
            Ok((e, entry))
        })
        .collect::<syn::Result<_>>()?;
    Ok(KeyElements { tuple, elements })
}

/// Refuses an argument at a place where the key's written type is the reference `place`,
/// unless it is a `&'static` one: the key, kept in a `static` cache, holds the argument itself
/// there. Without this, the compiler reported the argument's owned copy (a `String` for a
/// `&str`) where the reference was expected, and suggested borrowing the argument's type
/// (`name: &&str`), which no key can hold either.
fn static_reference(arg: &Argument, place: &syn::TypeReference) -> syn::Result<()> {
    let name = &arg.name;
    let why = if arg.referent.is_none() {
        format!(
            "#[memoize] keys by a clone of `{name}`, which is no reference: name its own type \
             there, not a reference to it"
        )
    } else if borrowed_lifetime(&arg.ty).is_some() {
        format!(
            "#[memoize] keeps keys in a `static` cache, which outlives every call, and `{name}` \
             borrows only for the call, so the key cannot hold it as a `&'static` reference: \
             name an owned type, to key by its owned copy (`String` for `&str`, `Vec<T>` for \
             `&[T]`), or take `{name}` as a `&'static` reference"
        )
    } else {
        return Ok(());
    };
    Err(syn::Error::new(place.span(), why))
}

/// A key expression as the function evaluates it: each argument as its [`Entry`] says, and
/// anything else as written, which should borrow the arguments (`name.to_lowercase()`). Both
/// `key = <expr>` and `key: Type = <expr>` build their key so.
fn with_key_parts(key: &KeyElements<'_, '_>) -> TokenStream {
    let parts = key.elements.iter().map(|(e, entry)| match entry {
        Some(Entry::KeyPart(arg)) => arg.key_part.clone(),
        Some(Entry::Itself(arg)) => arg.name.to_token_stream(),
        None => e.to_token_stream(),
    });
    if key.tuple {
        quote!((#(#parts,)*))
    } else {
        quote!(#(#parts)*)
    }
}

/// The `T` of each `&T` argument that a key expression takes as its key part: the owned copies
/// the key holds.
fn referents_named(key: &KeyElements<'_, '_>) -> Vec<Type> {
    key.elements
        .iter()
        .filter_map(|(_, entry)| match entry {
            Some(Entry::KeyPart(arg)) => arg.referent.clone(),
            Some(Entry::Itself(_)) | None => None,
        })
        .collect()
}

/// `expr` without the invisible group a `macro_rules!` `$e:expr` wraps it in, or parentheses.
fn ungrouped_expr(mut expr: &Expr) -> &Expr {
    loop {
        match expr {
            Expr::Group(group) => expr = &group.expr,
            Expr::Paren(paren) => expr = &paren.expr,
            _ => return expr,
        }
    }
}

/// Refuses arguments whose key parts borrow: the key outlives the call in a `static` cache.
fn owned_key_parts<'a>(mut arguments: impl Iterator<Item = &'a Argument>) -> syn::Result<()> {
    match arguments.find_map(|a| a.borrows) {
        Some(span) => Err(syn::Error::new(
            span,
            "#[memoize] keeps keys in a `static` cache, which outlives every call, so a key \
             cannot borrow: take an owned type for this argument (`String` for `Cow<'a, str>`), \
             or leave it out of the key with `key = (other, args)`",
        )),
        None => Ok(()),
    }
}

/// Where `ty` borrows: a lifetime other than `'static` (`'a`, `'_`) or a reference with its
/// lifetime elided, which a value kept in a `static` cannot have. Seen in the type as written
/// ([`find_in_type`], outside function types).
fn borrowed_lifetime(ty: &Type) -> Option<Span> {
    find_in_type(ty, false, &|part| match part {
        TypePart::Lifetime(l) => (l.ident != "static").then(|| l.span()),
        TypePart::ElidedReference(r) => Some(r.and_token.span),
        TypePart::Type(_) => None,
    })
}

/// The key of some arguments: one argument's own key part, or a tuple of them all (`()` for
/// none).
fn tuple_key(args: Vec<&Argument>) -> Key {
    match args.as_slice() {
        [one] => Key {
            ty: Some(one.key_ty.clone()),
            expr: one.key_part.clone(),
            parts: vec![(one.ty.span(), one.key_ty.clone())],
            referents: one.referent.iter().cloned().collect(),
        },
        _ => tuple_of(&args),
    }
}

/// The key of some arguments as a tuple, even of one (`key = (a,)`). The standard library
/// implements `Hash` and `Eq` for tuples of up to 12 elements, so more arguments than that are
/// grouped: a tuple of tuples of at most 12 each (and so on, for more than 144).
fn tuple_of(args: &[&Argument]) -> Key {
    let parts = args
        .iter()
        .map(|a| (a.ty.span(), a.key_ty.clone()))
        .collect();
    let tuple = |items: &[(TokenStream, TokenStream)]| {
        let (types, exprs): (Vec<_>, Vec<_>) = items.iter().cloned().unzip();
        (quote!((#(#types,)*)), quote!((#(#exprs,)*)))
    };
    let mut level: Vec<(TokenStream, TokenStream)> = args
        .iter()
        .map(|a| (a.key_ty.clone(), a.key_part.clone()))
        .collect();
    while level.len() > MAX_TUPLE {
        level = level.chunks(MAX_TUPLE).map(tuple).collect();
    }
    let (ty, expr) = tuple(&level);
    Key {
        ty: Some(ty),
        expr,
        parts,
        referents: args.iter().filter_map(|a| a.referent.clone()).collect(),
    }
}

/// The longest tuple the standard library implements `Hash` and `Eq` for.
const MAX_TUPLE: usize = 12;

/// The loader for the return type, and the type the cache stores.
fn loader(output: &ReturnType, cache_none: Option<(bool, Span)>) -> syn::Result<(Loader, Type)> {
    let ty: Type = match output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => (**ty).clone(),
    };
    // The last segment of a path type named `wrapper`, such as `Result` in `io::Result<T>`.
    let named = |wrapper: &str| -> Option<&syn::PathSegment> {
        let Type::Path(p) = ungrouped(&ty) else {
            return None;
        };
        p.path.segments.last().filter(|last| last.ident == wrapper)
    };
    // Its first type argument: `T` in `Option<T>`, `Result<T, E>` and `Result<T>` aliases.
    let first_type = |segment: &syn::PathSegment| -> Option<Type> {
        let PathArguments::AngleBracketed(args) = &segment.arguments else {
            return None;
        };
        args.args.iter().find_map(|arg| match arg {
            GenericArgument::Type(t) => Some(t.clone()),
            _ => None,
        })
    };
    if let Some(result) = named("Result") {
        // An alias that names no type (`std::fmt::Result`) hides `T`; the compiler finds it as
        // the item type `Result<T, E>` has as an iterator. A type named `Result` that is not
        // one fails to compile at the loader's call.
        let ok = first_type(result)
            .unwrap_or_else(|| syn::parse_quote!(<#ty as ::core::iter::IntoIterator>::Item));
        if let Some((_, span)) = cache_none {
            return Err(syn::Error::new(
                span,
                "`cache_none` is for functions returning `Option`; a `Result` function caches \
                 only `Ok` values already: remove `cache_none`",
            ));
        }
        return Ok((Loader::Fallible, ok));
    }
    match (named("Option").and_then(first_type), cache_none) {
        (Some(some), Some((false, _))) => Ok((Loader::Optional, some)),
        (Some(_), _) => Ok((Loader::Plain, ty)),
        (None, Some((_, span))) => Err(syn::Error::new(
            span,
            "`cache_none` is for functions returning `Option`: remove it",
        )),
        (None, None) => Ok((Loader::Plain, ty)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `#[doc = "..."]` strings of what `#[memoize(<options>)]` writes for `function`.
    fn docs(options: &str, function: &str) -> Vec<String> {
        let options: Options = syn::parse_str(options).expect("options parse");
        let function: ItemFn = syn::parse_str(function).expect("function parses");
        let file: syn::File =
            syn::parse2(expand(options, function).expect("expands")).expect("items");
        file.items
            .iter()
            .filter_map(|item| match item {
                syn::Item::Fn(f) => Some(&f.attrs),
                _ => None,
            })
            .flatten()
            .filter_map(|attr| match &attr.meta {
                syn::Meta::NameValue(nv) if nv.path.is_ident("doc") => match &nv.value {
                    Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Str(s),
                        ..
                    }) => Some(s.value()),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_raw_name_is_not_written_as_a_link_rustdoc_cannot_resolve() {
        // Rustdoc resolves no `r#` path: "[`r#match`]" is shown as it is, brackets and all.
        for options in ["", "key = x.to_string()"] {
            let docs = docs(options, "fn r#match(x: u32) -> u32 { x }");
            assert_eq!(docs.len(), 2, "{options:?}: {docs:?}");
            for doc in &docs {
                assert!(doc.contains("`r#match`"), "{options:?}: {doc}");
                assert!(!doc.contains("[`r#match`]"), "{options:?}: {doc}");
            }
            assert!(docs[0].contains("[`match_cache_clear`]"), "{docs:?}");
            assert!(docs[1].contains("[`match_cache`]"), "{docs:?}");
        }
        // Other names stay links.
        let docs = docs("", "fn fib(n: u64) -> u64 { n }");
        assert!(
            docs[0].contains("[`fib`]") && docs[1].contains("[`fib`]"),
            "{docs:?}"
        );
    }
}
