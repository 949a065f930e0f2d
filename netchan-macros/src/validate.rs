//! Every rule a `#[netchan::service]` input must follow, checked all at once.
//!
//! Each problem becomes one `syn::Error` spanned on the user's offending
//! tokens, with a message that says what to write instead. Nothing here
//! generates code; `expand.rs` may assume that an input which passed has
//! only what it can handle.

use std::collections::HashSet;
use std::fmt::Display;

use proc_macro2::Span;
use quote::{ToTokens, quote};
use syn::ext::IdentExt;
use syn::{
    Expr, GenericArgument, Lit, Meta, Pat, PathArguments, ReceiverKind, ReturnType, Safety,
    TraitItem, Type, TypeParamBound,
};

use crate::parse::{Args, Method, Service};

/// Names the generated `{Trait}Client` (and `{Trait}Server`) define itself,
/// which a method of the same name would clash with.
const GENERATED_METHODS: &[(&str, &str)] = &[
    ("new", "the generated constructor `{client}::new`"),
    ("named", "the generated constructor `{client}::named`"),
    ("with_timeout", "the generated `{client}::with_timeout`"),
    (
        "clone",
        "`Clone::clone` of the generated `{client}`, which it would shadow",
    ),
];

/// Collects errors; `finish` combines them into one.
#[derive(Default)]
pub(crate) struct Errors {
    errors: Vec<syn::Error>,
}

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        self.errors.push(error);
    }

    fn spanned(&mut self, tokens: impl ToTokens, message: impl Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    fn at(&mut self, span: Span, message: impl Display) {
        self.push(syn::Error::new(span, message));
    }

    pub(crate) fn finish(self) -> syn::Result<()> {
        let mut iter = self.errors.into_iter();
        match iter.next() {
            None => Ok(()),
            Some(mut first) => {
                for e in iter {
                    first.combine(e);
                }
                Err(first)
            }
        }
    }
}

/// Checks the attribute's arguments.
pub(crate) fn args(args: &Args, errors: &mut Errors) {
    let mut seen_name = false;
    for meta in &args.metas {
        let path = meta.path();
        if !path.is_ident("name") {
            errors.spanned(
                path,
                format_args!(
                    "unknown argument `{}` to `#[netchan::service]`; the only argument is \
                     `name = \"...\"`, the name the service is served under",
                    path.to_token_stream().to_string().replace(' ', ""),
                ),
            );
            continue;
        }
        let value = match meta {
            Meta::NameValue(nv) => match &nv.value {
                Expr::Lit(lit) => match &lit.lit {
                    Lit::Str(s) => Some(s),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        };
        let Some(value) = value else {
            errors.spanned(
                meta,
                "`name` takes a string literal, as in `name = \"share.v1\"`",
            );
            continue;
        };
        if seen_name {
            errors.spanned(meta, "duplicate `name` argument; give the name once");
            continue;
        }
        seen_name = true;
        if value.value().is_empty() {
            errors.spanned(
                value,
                "the service name must not be empty; write e.g. `name = \"share.v1\"`, or \
                 leave the argument out to use the trait's name",
            );
        }
    }
}

/// Checks the trait and every method.
pub(crate) fn service(service: &Service, errors: &mut Errors) {
    let item = &service.item;
    if let Some(unsafety) = &item.unsafety {
        errors.spanned(
            unsafety,
            "a `#[netchan::service]` trait cannot be `unsafe`; remove `unsafe`",
        );
    }
    if let Some(auto) = &item.modifiers.auto_token {
        errors.spanned(
            auto,
            "a `#[netchan::service]` trait cannot be an `auto` trait",
        );
    }
    if !item.generics.params.is_empty() {
        errors.spanned(
            &item.generics,
            "a `#[netchan::service]` trait cannot be generic: both ends must agree on one \
             concrete request and response type; remove the parameters and use concrete \
             types (or one service per type)",
        );
    }
    if let Some(where_clause) = &item.generics.where_clause {
        errors.spanned(
            where_clause,
            "`where` clauses are not supported on a `#[netchan::service]` trait; remove it",
        );
    }

    for other in &service.others {
        other_item(other, errors);
    }

    let client = format!("{}Client", service.ident().unraw());
    let mut seen = HashSet::new();
    for method in &service.methods {
        let name = method.ident().unraw().to_string();
        // Two methods may share a name under different `#[cfg]`s; rustc
        // judges those.
        if method.cfg_attrs().is_empty() && !seen.insert(name.clone()) {
            errors.spanned(
                method.ident(),
                format_args!("duplicate method `{name}`; each RPC method needs its own name"),
            );
        }
        if let Some((_, what)) = GENERATED_METHODS.iter().find(|(n, _)| *n == name) {
            errors.spanned(
                method.ident(),
                format_args!(
                    "method name `{name}` clashes with {}; rename the method",
                    what.replace("{client}", &client),
                ),
            );
        }
        self::method(method, errors);
    }
}

fn other_item(item: &TraitItem, errors: &mut Errors) {
    match item {
        TraitItem::Type(ty) => errors.spanned(
            ty,
            "associated types are not supported in a `#[netchan::service]` trait: the \
             generated client could not name them; use a concrete type in the methods instead",
        ),
        TraitItem::Const(c) => errors.spanned(
            c,
            "associated consts are not supported in a `#[netchan::service]` trait: only \
             `async fn` methods can be called remotely; move the const out of the trait",
        ),
        TraitItem::Macro(m) => errors.spanned(
            m,
            "macro invocations are not supported in a `#[netchan::service]` trait: the \
             macro sees the tokens before they are expanded; write the methods out",
        ),
        _ => errors.spanned(
            item,
            "unsupported item in a `#[netchan::service]` trait; only `async fn` methods are \
             allowed",
        ),
    }
}

fn method(method: &Method, errors: &mut Errors) {
    let sig = method.sig();
    let name = method.ident().unraw();

    if sig.asyncness.is_none() {
        let (fn_token, ident) = (&sig.fn_token, &sig.ident);
        errors.spanned(
            quote!(#fn_token #ident),
            format_args!(
                "`#[netchan::service]` methods must be `async fn`: write `async fn {name}(&self, ...)`"
            ),
        );
    }
    if let Some(constness) = &sig.constness {
        errors.spanned(
            constness,
            "RPC methods cannot be `const fn`; remove `const`",
        );
    }
    match &sig.safety {
        Safety::Unsafe(unsafety) => {
            errors.spanned(
                unsafety,
                "RPC methods cannot be `unsafe fn`; remove `unsafe`",
            );
        }
        Safety::Safe(safe) => errors.spanned(safe, "RPC methods cannot be `safe fn`"),
        Safety::Default => {}
    }
    if let Some(abi) = &sig.abi {
        errors.spanned(abi, "RPC methods cannot have an `extern` ABI; remove it");
    }
    if let Some(variadic) = &sig.variadic {
        errors.spanned(variadic, "RPC methods cannot be variadic");
    }
    if !sig.generics.params.is_empty() {
        errors.spanned(
            &sig.generics,
            format_args!(
                "RPC methods cannot be generic: the request and response types are fixed \
                 when the trait is compiled; remove the parameters from `{name}` and use \
                 concrete types"
            ),
        );
    }
    if let Some(where_clause) = &sig.generics.where_clause {
        errors.spanned(
            where_clause,
            "`where` clauses are not supported on RPC methods; remove it",
        );
    }

    receiver(method, errors);

    for arg in &method.args {
        if let Some(attr) = arg.pat_type.attrs.first() {
            errors.spanned(attr, "attributes on RPC arguments are not supported");
        }
        if arg.ident.is_none() {
            let message = match &*arg.pat_type.pat {
                Pat::Wild(_) => "RPC arguments need a name, which the generated client \
                                 method takes: write `name: Type` instead of `_: Type`"
                    .to_owned(),
                Pat::Ident(pi) if pi.mutability.is_some() || pi.by_ref.is_some() => format!(
                    "write the argument as a plain identifier (`{}: Type`); `mut` and `ref` \
                     belong in the implementation, not in the service trait",
                    pi.ident
                ),
                _ => "RPC arguments must be plain identifiers, as in `name: Type`; \
                      destructure the value inside the implementation"
                    .to_owned(),
            };
            errors.spanned(&arg.pat_type.pat, message);
        }
        ty(arg.ty(), Position::Argument, errors);
    }

    if let ReturnType::Type(_, output) = &sig.output {
        ty(output, Position::Result, errors);
    }

    if let Some(body) = method.default_body() {
        errors.spanned(
            body,
            format_args!(
                "default method bodies are not supported in a `#[netchan::service]` trait; \
                 declare `{name}` without a body and move the code into the implementation"
            ),
        );
    }
}

fn receiver(method: &Method, errors: &mut Errors) {
    let name = method.ident().unraw();
    for late in &method.late_receivers {
        errors.spanned(late, "`self` must be the first argument");
    }
    let Some(receiver) = &method.receiver else {
        errors.at(
            method.sig().paren_token.span.join(),
            format_args!(
                "RPC methods take `&self` as their first argument: write `async fn {name}(&self, ...)`"
            ),
        );
        return;
    };
    let message = match &receiver.kind {
        ReceiverKind::Reference(_, _, None) => return,
        ReceiverKind::Reference(_, _, Some(_)) => format!(
            "RPC methods take `&self`, not `&mut self`: the server runs calls concurrently on \
             one shared instance; write `async fn {name}(&self, ...)` and keep mutable state \
             behind a lock (e.g. a `Mutex`)"
        ),
        ReceiverKind::Value => format!(
            "RPC methods take `&self`, not `self` by value: the server shares one instance \
             between all calls; write `async fn {name}(&self, ...)`"
        ),
        _ => format!(
            "RPC methods take `&self`, not a typed `self`: write `async fn {name}(&self, ...)`"
        ),
    };
    errors.spanned(receiver, message);
}

#[derive(Clone, Copy, PartialEq)]
enum Position {
    Argument,
    Result,
}

impl Position {
    fn what(self) -> &'static str {
        match self {
            Position::Argument => "RPC arguments",
            Position::Result => "RPC results",
        }
    }
}

/// Checks an argument or result type, nested types included: it must be an
/// owned, concrete type that can travel over the connection.
fn ty(ty: &Type, pos: Position, errors: &mut Errors) {
    match ty {
        Type::Reference(reference) => {
            let elem = &reference.elem;
            let owned = match &**elem {
                Type::Path(p) if p.qself.is_none() && p.path.is_ident("str") => {
                    "`String`".to_owned()
                }
                Type::Slice(slice) => {
                    format!("`Vec<{}>`", tokens_to_string(&slice.elem))
                }
                Type::Path(p) if p.qself.is_none() && p.path.is_ident("Path") => {
                    "`PathBuf`".to_owned()
                }
                other => format!("`{}`", tokens_to_string(other)),
            };
            let action = match pos {
                Position::Argument => "take",
                Position::Result => "return",
            };
            errors.spanned(
                reference,
                format_args!(
                    "{} are sent over the connection and cannot borrow: {action} an owned type \
                     such as {owned} instead of `{}`",
                    pos.what(),
                    tokens_to_string(reference),
                ),
            );
        }
        Type::ImplTrait(imp) => errors.spanned(
            imp,
            format_args!(
                "`impl Trait` is not supported in {}: the generated request and response \
                 types need one concrete, serializable type; name the type",
                match pos {
                    Position::Argument => "an RPC argument",
                    Position::Result => "an RPC result",
                },
            ),
        ),
        Type::Array(a) => self::ty(&a.elem, pos, errors),
        Type::Group(g) => self::ty(&g.elem, pos, errors),
        Type::Paren(p) => self::ty(&p.elem, pos, errors),
        Type::Slice(s) => self::ty(&s.elem, pos, errors),
        Type::Ptr(p) => self::ty(&p.elem, pos, errors),
        Type::Tuple(t) => {
            for elem in &t.elems {
                self::ty(elem, pos, errors);
            }
        }
        Type::Path(p) => {
            if let Some(qself) = &p.qself {
                self::ty(&qself.ty, pos, errors);
            }
            if p.path.segments.first().is_some_and(|s| s.ident == "Self") {
                errors.spanned(
                    p,
                    format_args!(
                        "{} cannot use `Self`: the generated client does not know the \
                         implementing type; name a concrete type",
                        pos.what()
                    ),
                );
            }
            path_arguments(p.path.segments.iter().map(|s| &s.arguments), pos, errors);
        }
        Type::TraitObject(t) => bounds(t.bounds.iter(), pos, errors),
        Type::FnPtr(f) => {
            for input in &f.inputs {
                self::ty(&input.ty, pos, errors);
            }
            if let ReturnType::Type(_, out) = &f.output {
                self::ty(out, pos, errors);
            }
        }
        _ => {}
    }
}

fn path_arguments<'a>(
    args: impl Iterator<Item = &'a PathArguments>,
    pos: Position,
    errors: &mut Errors,
) {
    for arguments in args {
        match arguments {
            PathArguments::AngleBracketed(angle) => {
                for arg in &angle.args {
                    match arg {
                        GenericArgument::Lifetime(lt) => lifetime(lt, pos, errors),
                        GenericArgument::Type(t) => ty(t, pos, errors),
                        GenericArgument::AssocType(a) => ty(&a.ty, pos, errors),
                        GenericArgument::Constraint(c) => bounds(c.bounds.iter(), pos, errors),
                        _ => {}
                    }
                }
            }
            PathArguments::Parenthesized(paren) => {
                for input in &paren.inputs {
                    ty(&input.ty, pos, errors);
                }
                if let ReturnType::Type(_, out) = &paren.output {
                    ty(out, pos, errors);
                }
            }
            PathArguments::None => {}
        }
    }
}

fn bounds<'a>(
    bounds: impl Iterator<Item = &'a TypeParamBound>,
    pos: Position,
    errors: &mut Errors,
) {
    for bound in bounds {
        match bound {
            TypeParamBound::Trait(t) => {
                path_arguments(t.path.segments.iter().map(|s| &s.arguments), pos, errors);
            }
            TypeParamBound::Lifetime(lt) => lifetime(lt, pos, errors),
            _ => {}
        }
    }
}

/// `'static` is fine (`Cow<'static, str>` is owned); any other lifetime
/// would borrow from the caller or the server.
fn lifetime(lt: &syn::Lifetime, pos: Position, errors: &mut Errors) {
    if lt.ident == "static" {
        return;
    }
    errors.spanned(
        lt,
        format_args!(
            "{} are sent over the connection and cannot borrow: remove the lifetime `{lt}` \
             and use an owned type (only `'static` is allowed)",
            pos.what()
        ),
    );
}

fn tokens_to_string(tokens: &impl ToTokens) -> String {
    // `TokenStream`'s Display puts spaces between all tokens; squeeze the
    // common ones so that messages read like source code.
    tokens
        .to_token_stream()
        .to_string()
        .replace(" < ", "<")
        .replace("< ", "<")
        .replace(" >", ">")
        .replace(" ,", ",")
        .replace("& ", "&")
        .replace(" :: ", "::")
        .replace(":: ", "::")
}
