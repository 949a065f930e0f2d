//! The model of a `#[netchan::service]` input: the attribute's arguments and
//! the trait, kept as syn nodes so that every later error can point at the
//! user's own tokens.
//!
//! Parsing is tolerant: anything syn can read as a trait becomes a model,
//! however unsuitable for RPC. Judging it is `validate.rs`'s job, so that all
//! problems are reported together instead of the first one only.

use proc_macro2::TokenStream;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{
    Attribute, Block, Expr, FnArg, Ident, ItemTrait, Lit, LitStr, Meta, Pat, PatType, Receiver,
    ReturnType, Signature, Token, TraitItem, TraitItemFn, Type, Visibility,
};

/// The arguments of `#[netchan::service(...)]`, one `Meta` per
/// comma-separated entry, in order.
pub(crate) struct Args {
    pub(crate) metas: Vec<Meta>,
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let metas = Punctuated::<Meta, Token![,]>::parse_terminated(input)?;
        Ok(Args {
            metas: metas.into_iter().collect(),
        })
    }
}

impl Args {
    /// The first `name = "..."` entry with a string literal, if any.
    pub(crate) fn name(&self) -> Option<&LitStr> {
        self.metas.iter().find_map(|meta| match meta {
            Meta::NameValue(nv) if nv.path.is_ident("name") => match &nv.value {
                Expr::Lit(lit) => match &lit.lit {
                    Lit::Str(s) => Some(s),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        })
    }
}

/// The annotated trait.
pub(crate) struct Service {
    /// The trait exactly as written, for the fallback output and for the
    /// parts (generics, supertraits, `unsafe`) that are only validated.
    pub(crate) item: ItemTrait,
    /// The `fn` items, in order.
    pub(crate) methods: Vec<Method>,
    /// Every item that is not a `fn` (types, consts, macros, ...).
    pub(crate) others: Vec<TraitItem>,
}

impl Service {
    pub(crate) fn parse(tokens: TokenStream) -> syn::Result<Self> {
        let item: ItemTrait = syn::parse2(tokens)?;
        let mut methods = Vec::new();
        let mut others = Vec::new();
        for trait_item in &item.items {
            match trait_item {
                TraitItem::Fn(f) => methods.push(Method::new(f)),
                other => others.push(other.clone()),
            }
        }
        Ok(Service {
            item,
            methods,
            others,
        })
    }

    pub(crate) fn ident(&self) -> &Ident {
        &self.item.ident
    }

    pub(crate) fn vis(&self) -> &Visibility {
        &self.item.vis
    }

    /// The name the service is served under unless the caller picks another:
    /// the `name = "..."` argument, else the trait's name.
    pub(crate) fn default_name(&self, args: &Args) -> String {
        match args.name() {
            Some(name) => name.value(),
            None => self.ident().unraw().to_string(),
        }
    }

    /// The trait's `#[cfg(...)]` attributes: every generated item must exist
    /// exactly when the trait does.
    pub(crate) fn cfg_attrs(&self) -> Vec<&Attribute> {
        cfg_attrs(&self.item.attrs)
    }
}

/// One `fn` of the trait.
pub(crate) struct Method {
    /// The item exactly as written.
    pub(crate) item: TraitItemFn,
    /// The `self` argument, if the first argument is one.
    pub(crate) receiver: Option<Receiver>,
    /// `self` arguments found after the first position (never valid).
    pub(crate) late_receivers: Vec<Receiver>,
    /// The arguments after the receiver.
    pub(crate) args: Vec<Arg>,
}

impl Method {
    fn new(item: &TraitItemFn) -> Self {
        let mut receiver = None;
        let mut late_receivers = Vec::new();
        let mut args = Vec::new();
        for (i, input) in item.sig.inputs.iter().enumerate() {
            match input {
                FnArg::Receiver(r) if i == 0 => receiver = Some(r.clone()),
                FnArg::Receiver(r) => late_receivers.push(r.clone()),
                FnArg::Typed(pat_type) => args.push(Arg::new(pat_type)),
            }
        }
        Method {
            item: item.clone(),
            receiver,
            late_receivers,
            args,
        }
    }

    pub(crate) fn sig(&self) -> &Signature {
        &self.item.sig
    }

    pub(crate) fn ident(&self) -> &Ident {
        &self.item.sig.ident
    }

    pub(crate) fn attrs(&self) -> &[Attribute] {
        &self.item.attrs
    }

    pub(crate) fn default_body(&self) -> Option<&Block> {
        self.item.default.as_ref()
    }

    /// The declared result type; `None` for `()` written as nothing.
    pub(crate) fn output(&self) -> Option<&Type> {
        match &self.item.sig.output {
            ReturnType::Default => None,
            ReturnType::Type(_, ty) => Some(ty),
        }
    }

    /// The method's `#[cfg(...)]` attributes, for the generated enum variants
    /// and match arms that belong to it.
    pub(crate) fn cfg_attrs(&self) -> Vec<&Attribute> {
        cfg_attrs(&self.item.attrs)
    }
}

/// One argument after the receiver.
pub(crate) struct Arg {
    pub(crate) pat_type: PatType,
    /// The binding, when the pattern is a plain identifier (`name: String`).
    pub(crate) ident: Option<Ident>,
}

impl Arg {
    fn new(pat_type: &PatType) -> Self {
        let ident = match &*pat_type.pat {
            Pat::Ident(pi)
                if pi.by_ref.is_none() && pi.mutability.is_none() && pi.subpat.is_none() =>
            {
                Some(pi.ident.clone())
            }
            _ => None,
        };
        Arg {
            pat_type: pat_type.clone(),
            ident,
        }
    }

    pub(crate) fn ty(&self) -> &Type {
        &self.pat_type.ty
    }
}

fn cfg_attrs(attrs: &[Attribute]) -> Vec<&Attribute> {
    attrs
        .iter()
        .filter(|attr| attr.path().is_ident("cfg"))
        .collect()
}
