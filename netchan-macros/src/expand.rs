//! Code generation for a validated service, one function per generated item
//! (tarpc's shape): [`item_trait`], [`request_enum`], [`response_enum`],
//! [`client`], [`server`]; and [`fallback`] for inputs that failed
//! validation.
//!
//! Generated code names only `::netchan::__private::…`, `::core::…` and
//! `::std::…` paths and calls trait methods in fully qualified form, so it
//! compiles under `#![no_implicit_prelude]` and next to user items that
//! shadow std names. Locals use `Span::mixed_site()` so that they can never
//! capture or shadow the user's argument names.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Attribute, FnArg, Ident, ItemTrait, LitStr, Pat, ReturnType, Token, TraitItem};

use crate::parse::{Args, Method, Service};

/// The generated names, derived from the trait's.
struct Names {
    /// The trait.
    service: Ident,
    client: Ident,
    server: Ident,
    request: Ident,
    response: Ident,
    /// The server's type parameter: `S`, unless the trait itself is `S`.
    param: Ident,
    /// The default service name, as a string literal.
    default_name: LitStr,
}

impl Names {
    fn new(service: &Service, args: &Args) -> Self {
        let ident = service.ident();
        let span = ident.span();
        Names {
            service: ident.clone(),
            client: format_ident!("{}Client", ident),
            server: format_ident!("{}Server", ident),
            request: format_ident!("__{}Request", ident),
            response: format_ident!("__{}Response", ident),
            param: if ident.unraw() == "S" {
                Ident::new("Svc", Span::call_site())
            } else {
                Ident::new("S", Span::call_site())
            },
            default_name: match args.name() {
                Some(lit) => lit.clone(),
                None => LitStr::new(&service.default_name(args), span),
            },
        }
    }
}

/// The whole expansion of a valid service.
pub(crate) fn service(service: &Service, args: &Args) -> TokenStream {
    let names = Names::new(service, args);
    let item_trait = item_trait(service);
    let request = request_enum(service, &names);
    let response = response_enum(service, &names);
    let client = client(service, &names);
    let server = server(service, &names);
    quote! {
        #item_trait
        #request
        #response
        #client
        #server
    }
}

/// The trait, with every `async fn` turned into a `fn` returning a `Send`
/// future (so that servers can run calls on any thread) and `Send + Sync +
/// 'static` added to its supertraits (the server shares one instance between
/// tasks). Implementors still write plain `async fn`.
fn item_trait(service: &Service) -> TokenStream {
    let item = &service.item;
    let attrs = &item.attrs;
    let vis = &item.vis;
    let trait_token = &item.trait_token;
    let ident = &item.ident;
    let supertraits = item.supertraits.iter();
    let methods = service.methods.iter().map(|method| {
        let attrs = method.attrs();
        let sig = method.sig();
        let fn_token = &sig.fn_token;
        let ident = &sig.ident;
        let mut params = TokenStream::new();
        sig.paren_token
            .surround(&mut params, |tokens| sig.inputs.to_tokens(tokens));
        let output = output_type(method);
        // The new return type is spanned on the old one (or the argument
        // list), and the user's own `;` is kept: lints and errors about the
        // method (`missing_docs`, an implementation whose future is not
        // `Send`) then point at the method, not at the attribute.
        let span = match &sig.output {
            ReturnType::Type(_, ty) => ty.span(),
            ReturnType::Default => sig.paren_token.span.close(),
        };
        let future = quote_spanned! {span=>
            -> impl ::core::future::Future<Output = #output> + ::core::marker::Send
        };
        let semi = method.item.semi_token.unwrap_or_else(|| Token![;](span));
        quote! {
            #(#attrs)*
            #fn_token #ident #params #future #semi
        }
    });
    // The user's braces are kept (like the `;` above), so that the item's
    // span is the user's trait, not the attribute.
    let mut body = TokenStream::new();
    item.brace_token
        .surround(&mut body, |tokens| tokens.extend(methods));
    let send = quote_spanned! {ident.span()=>
        ::core::marker::Send + ::core::marker::Sync + 'static
    };
    quote! {
        #(#attrs)*
        #vis #trait_token #ident: #(#supertraits +)* #send #body
    }
}

/// `__{Trait}Request`: one variant per method, carrying its arguments.
fn request_enum(service: &Service, names: &Names) -> TokenStream {
    let variants = service.methods.iter().map(|method| {
        let cfgs = method.cfg_attrs();
        let ident = method.ident();
        let tys = method.args.iter().map(crate::parse::Arg::ty);
        if method.args.is_empty() {
            quote! { #(#cfgs)* #ident, }
        } else {
            quote! { #(#cfgs)* #ident(#(#tys),*), }
        }
    });
    let doc = format!(
        " The calls of the `{}` service, one variant per method (generated by \
         `#[netchan::service]`; not public API).",
        names.service.unraw()
    );
    hidden_enum(service, &names.request, &doc, variants)
}

/// `__{Trait}Response`: one variant per method, carrying its result.
fn response_enum(service: &Service, names: &Names) -> TokenStream {
    let variants = service.methods.iter().map(|method| {
        let cfgs = method.cfg_attrs();
        let ident = method.ident();
        let output = output_type(method);
        quote! { #(#cfgs)* #ident(#output), }
    });
    let doc = format!(
        " The results of the `{}` service, one variant per method (generated by \
         `#[netchan::service]`; not public API).",
        names.service.unraw()
    );
    hidden_enum(service, &names.response, &doc, variants)
}

fn hidden_enum(
    service: &Service,
    ident: &Ident,
    doc: &str,
    variants: impl Iterator<Item = TokenStream>,
) -> TokenStream {
    let cfgs = service.cfg_attrs();
    let vis = service.vis();
    // Variants are the method names as written, so two methods can never map
    // to one variant (as `get_x` and `getX` would in UpperCamelCase).
    quote! {
        #(#cfgs)*
        #[doc = #doc]
        #[doc(hidden)]
        #[allow(
            non_camel_case_types,
            missing_docs,
            missing_debug_implementations,
            clippy::enum_variant_names,
            clippy::large_enum_variant
        )]
        #[derive(
            ::netchan::__private::serde::Serialize,
            ::netchan::__private::serde::Deserialize
        )]
        #[serde(crate = "::netchan::__private::serde")]
        #vis enum #ident {
            #(#variants)*
        }
    }
}

/// `{Trait}Client`: a cheap, cloneable handle with one `async` method per
/// trait method.
fn client(service: &Service, names: &Names) -> TokenStream {
    let Names {
        service: trait_ident,
        client,
        request,
        response,
        default_name,
        ..
    } = names;
    let cfgs = service.cfg_attrs();
    let vis = service.vis();
    let shown = trait_ident.unraw();

    let struct_doc = format!(
        " Calls a [`{shown}`] service that the peer of a `Session` serves.\n\
         \n\
         Made with [`{client}::new`] (the default name, `{name}`) or \
         [`{client}::named`]; cheap to clone, and every clone shares the \
         connection. Generated by `#[netchan::service]`.",
        name = default_name.value(),
    );
    let new_doc = format!(
        " A client of the service the peer of `session` serves under the name \
         `{}`.\n\nNothing is sent until the first call; calling a name the peer \
         does not serve fails with `RpcError::NoSuchService`, and the next call \
         looks again, so a client made before the peer serves works once it does.\n\n\
         `session` is a `netchan::Session` or, with the feature `nats`, a \
         `netchan::nats::Node` (the replicas serving it on the cluster share the calls).",
        default_name.value(),
    );
    let named_doc = " A client of the service the peer of `session` serves under `name` \
                     (for a server made with `named`)."
        .to_owned();
    let timeout_doc = " A client whose calls fail with `RpcError::Timeout` once `timeout` \
                       has passed; the deadline is sent along, so the server drops the \
                       handler then too. Shares the connection with `self`."
        .to_owned();

    let methods = service
        .methods
        .iter()
        .map(|method| client_method(service, method, names));

    quote! {
        #(#cfgs)*
        #[doc = #struct_doc]
        #[derive(::core::clone::Clone, ::core::fmt::Debug)]
        #vis struct #client {
            client: ::netchan::__private::Client<#request, #response>,
        }

        #(#cfgs)*
        impl #client {
            #[doc = #new_doc]
            #vis fn new(session: &(impl ::netchan::__private::CallTarget + ?::core::marker::Sized)) -> Self {
                Self::named(session, #default_name)
            }

            #[doc = #named_doc]
            #vis fn named(
                session: &(impl ::netchan::__private::CallTarget + ?::core::marker::Sized),
                name: &::core::primitive::str,
            ) -> Self {
                Self {
                    client: ::netchan::__private::Client::new(session, name),
                }
            }

            #[doc = #timeout_doc]
            #[must_use]
            #vis fn with_timeout(&self, timeout: ::core::time::Duration) -> Self {
                Self {
                    client: self.client.with_timeout(timeout),
                }
            }

            #(#methods)*
        }
    }
}

fn client_method(service: &Service, method: &Method, names: &Names) -> TokenStream {
    let Names {
        service: trait_ident,
        request,
        response,
        ..
    } = names;
    let vis = service.vis();
    let attrs = method.attrs();
    let ident = method.ident();
    // Validation guarantees a plain identifier for every argument.
    let arg_idents: Vec<&Ident> = method
        .args
        .iter()
        .filter_map(|arg| arg.ident.as_ref())
        .collect();
    let arg_tys = method.args.iter().map(crate::parse::Arg::ty);
    let output = output_type(method);
    let value = Ident::new("value", Span::mixed_site());

    let shown_trait = trait_ident.unraw();
    let shown_method = ident.unraw();
    let has_docs = attrs.iter().any(|attr| attr.path().is_ident("doc"));
    let summary = if has_docs {
        None
    } else {
        let doc = format!(" Calls [`{shown_trait}::{shown_method}`] on the peer.");
        Some(quote!(#[doc = #doc]))
    };
    let errors_doc = [
        String::new(),
        " # Errors".to_owned(),
        String::new(),
        " An `RpcError` if the call does not complete: the connection is gone, \
          the timeout passed, the peer does not serve the service, the handler \
          failed on the peer, or a message could not be encoded or decoded."
            .to_owned(),
    ];
    let request_expr = if arg_idents.is_empty() {
        quote!(#request::#ident)
    } else {
        quote!(#request::#ident(#(#arg_idents),*))
    };
    let method_name = shown_method.to_string();
    let unexpected = format!(
        "unexpected response to `{shown_trait}::{shown_method}`: the peer's service has \
         other methods under this name"
    );

    quote! {
        #(#attrs)*
        #summary
        #(#[doc = #errors_doc])*
        #[allow(clippy::too_many_arguments, clippy::type_complexity)]
        #vis async fn #ident(&self, #(#arg_idents: #arg_tys),*)
            -> ::core::result::Result<#output, ::netchan::__private::RpcError>
        {
            match self.client.call_method(#method_name, #request_expr).await? {
                #response::#ident(#value) => ::core::result::Result::Ok(#value),
                #[allow(unreachable_patterns)]
                _ => ::core::result::Result::Err(::netchan::__private::RpcError::Codec(
                    ::std::borrow::ToOwned::to_owned(#unexpected),
                )),
            }
        }
    }
}

/// `{Trait}Server<S>`: serves any `S: Trait`, sharing one `S` between all
/// calls and clones through an `Arc`.
fn server(service: &Service, names: &Names) -> TokenStream {
    let Names {
        service: trait_ident,
        server,
        request,
        response,
        param,
        default_name,
        ..
    } = names;
    let cfgs = service.cfg_attrs();
    let vis = service.vis();
    let shown = trait_ident.unraw();
    let shown_server = server.unraw().to_string();

    let struct_doc = format!(
        " Serves an implementation of [`{shown}`]: hand it to `Session::serve` or \
         `Exporter::serve`.\n\
         \n\
         Calls run concurrently on one shared instance; clones share it too. \
         Generated by `#[netchan::service]`.",
    );
    let new_doc = format!(
        " Serves `service` under the default name, `{}`.",
        default_name.value()
    );
    let named_doc = " Serves `service` under `name`; clients reach it with `named`.";

    let service_local = Ident::new("service", Span::mixed_site());
    let arms = service.methods.iter().map(|method| {
        let cfgs = method.cfg_attrs();
        let ident = method.ident();
        let args: Vec<Ident> = (0..method.args.len())
            .map(|i| Ident::new(&format!("arg{i}"), Span::mixed_site()))
            .collect();
        let pattern = if args.is_empty() {
            quote!(#request::#ident)
        } else {
            quote!(#request::#ident(#(#args),*))
        };
        quote! {
            #(#cfgs)*
            #pattern => {
                let #service_local = ::core::clone::Clone::clone(&self.service);
                ::std::boxed::Box::pin(async move {
                    #response::#ident(
                        <#param as #trait_ident>::#ident(&*#service_local, #(#args),*).await,
                    )
                })
            }
        }
    });

    let names = service.methods.iter().map(|method| {
        let cfgs = method.cfg_attrs();
        let ident = method.ident();
        let name = ident.unraw().to_string();
        let pattern = if method.args.is_empty() {
            quote!(#request::#ident)
        } else {
            quote!(#request::#ident(..))
        };
        quote! {
            #(#cfgs)*
            #pattern => #name,
        }
    });

    quote! {
        #(#cfgs)*
        #[doc = #struct_doc]
        #vis struct #server<#param> {
            service: ::std::sync::Arc<#param>,
            name: ::std::sync::Arc<::core::primitive::str>,
        }

        #(#cfgs)*
        impl<#param> ::core::clone::Clone for #server<#param> {
            fn clone(&self) -> Self {
                Self {
                    service: ::core::clone::Clone::clone(&self.service),
                    name: ::core::clone::Clone::clone(&self.name),
                }
            }
        }

        #(#cfgs)*
        impl<#param> ::core::fmt::Debug for #server<#param> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(#shown_server)
                    .field("name", &&*self.name)
                    .finish_non_exhaustive()
            }
        }

        #(#cfgs)*
        #[allow(deprecated)]
        impl<#param: #trait_ident> #server<#param> {
            #[doc = #new_doc]
            #vis fn new(service: #param) -> Self {
                Self::named(service, #default_name)
            }

            #[doc = #named_doc]
            #vis fn named(service: #param, name: &::core::primitive::str) -> Self {
                Self {
                    service: ::std::sync::Arc::new(service),
                    name: <::std::sync::Arc<::core::primitive::str>
                        as ::core::convert::From<&::core::primitive::str>>::from(name),
                }
            }
        }

        #(#cfgs)*
        #[allow(deprecated)]
        impl<#param: #trait_ident> ::netchan::__private::Service for #server<#param> {
            type Request = #request;
            type Response = #response;
            const NAME: &'static ::core::primitive::str = #default_name;

            fn name(&self) -> &::core::primitive::str {
                &self.name
            }

            fn call(
                &self,
                request: #request,
            ) -> ::netchan::__private::BoxFuture<#response> {
                match request {
                    #(#arms)*
                }
            }

            fn method_name(request: &#request) -> &'static ::core::primitive::str {
                match *request {
                    #(#names)*
                }
            }
        }
    }
}

/// `item` with every argument pattern that rustc refuses in a method without
/// a body (`(a, b): T`, `mut a: T`) replaced by `_`, so that the user sees
/// our error about it and not rustc's as well.
fn without_patterns(item: &ItemTrait) -> ItemTrait {
    let mut item = item.clone();
    for trait_item in &mut item.items {
        let TraitItem::Fn(f) = trait_item else {
            continue;
        };
        if f.default.is_some() {
            continue;
        }
        for input in &mut f.sig.inputs {
            let FnArg::Typed(pat_type) = input else {
                continue;
            };
            let plain = matches!(
                &*pat_type.pat,
                Pat::Ident(pi) if pi.by_ref.is_none() && pi.mutability.is_none() && pi.subpat.is_none()
            );
            if !plain {
                let span = pat_type.pat.span();
                *pat_type.pat = syn::parse_quote_spanned!(span=> _);
            }
        }
    }
    item
}

/// What a method's future resolves to: its declared result, or `()`.
fn output_type(method: &Method) -> TokenStream {
    match method.output() {
        Some(ty) => quote!(#ty),
        None => quote!(()),
    }
}

/// The output for an input that failed validation: the trait as written (so
/// implementations and IDE features keep working) and placeholder client and
/// server types with their constructors, so that the user sees the
/// validation errors rather than a cascade of "cannot find type" errors.
pub(crate) fn fallback(service: &Service) -> TokenStream {
    let item = without_patterns(&service.item);
    let ident = service.ident();
    let vis = service.vis();
    let cfgs = service.cfg_attrs();
    let client = format_ident!("{}Client", ident);
    let server = format_ident!("{}Server", ident);
    let param = if ident.unraw() == "S" {
        Ident::new("Svc", Span::call_site())
    } else {
        Ident::new("S", Span::call_site())
    };
    let allow: Attribute = syn::parse_quote!(#[allow(async_fn_in_trait)]);
    quote! {
        #allow
        #item

        #(#cfgs)*
        #[allow(dead_code, missing_docs, missing_debug_implementations, unreachable_pub)]
        #vis struct #client {
            _invalid_service: (),
        }

        #(#cfgs)*
        #[allow(dead_code, missing_docs, unreachable_pub)]
        impl #client {
            #vis fn new(_session: &(impl ::netchan::__private::CallTarget + ?::core::marker::Sized)) -> Self {
                Self { _invalid_service: () }
            }
            #vis fn named(
                _session: &(impl ::netchan::__private::CallTarget + ?::core::marker::Sized),
                _name: &::core::primitive::str,
            ) -> Self {
                Self { _invalid_service: () }
            }
            #vis fn with_timeout(&self, _timeout: ::core::time::Duration) -> Self {
                Self { _invalid_service: () }
            }
        }

        #(#cfgs)*
        #[allow(dead_code, missing_docs, missing_debug_implementations, unreachable_pub)]
        #vis struct #server<#param> {
            _invalid_service: ::core::marker::PhantomData<#param>,
        }

        #(#cfgs)*
        #[allow(dead_code, missing_docs, unreachable_pub)]
        impl<#param> #server<#param> {
            #vis fn new(_service: #param) -> Self {
                Self { _invalid_service: ::core::marker::PhantomData }
            }
            #vis fn named(_service: #param, _name: &::core::primitive::str) -> Self {
                Self { _invalid_service: ::core::marker::PhantomData }
            }
        }
    }
}
