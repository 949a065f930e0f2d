//! Expansion tests on token strings. The compiled behaviour (and the exact
//! diagnostics) is tested in the `ui-tests` crate; these pin down the shape
//! of the output and which errors are collected.

use proc_macro2::TokenStream;
use quote::quote;

use crate::service_impl;

fn expand(args: TokenStream, item: TokenStream) -> String {
    service_impl(args, item).to_string()
}

/// The messages of every `compile_error!` in the output.
fn errors(args: TokenStream, item: TokenStream) -> Vec<String> {
    let out = service_impl(args, item);
    let mut messages = Vec::new();
    collect_errors(out, &mut messages);
    messages
}

fn collect_errors(tokens: TokenStream, out: &mut Vec<String>) {
    let mut iter = tokens.into_iter().peekable();
    while let Some(tt) = iter.next() {
        match tt {
            proc_macro2::TokenTree::Ident(ident) if ident == "compile_error" => {
                // `compile_error ! ( "message" )`
                iter.next();
                if let Some(proc_macro2::TokenTree::Group(group)) = iter.next() {
                    let lit: syn::LitStr = syn::parse2(group.stream()).expect("a string literal");
                    out.push(lit.value());
                }
            }
            proc_macro2::TokenTree::Group(group) => collect_errors(group.stream(), out),
            _ => {}
        }
    }
}

fn share() -> TokenStream {
    quote! {
        pub trait Share {
            /// Publishes a name.
            async fn publish(&self, name: String);
            async fn list(&self) -> Vec<String>;
            #[deprecated = "use read2"]
            async fn read(&self, client: String, path: String) -> Result<Vec<u8>, String>;
        }
    }
}

#[test]
fn valid_trait_expands_without_errors() {
    assert_eq!(errors(quote!(), share()), Vec::<String>::new());
}

#[test]
fn trait_methods_become_send_futures() {
    let out = expand(quote!(), share());
    assert!(out.contains(
        "pub trait Share : :: core :: marker :: Send + :: core :: marker :: Sync + 'static"
    ));
    assert!(out.contains(
        "fn publish (& self , name : String) -> impl :: core :: future :: Future < Output = () > + :: core :: marker :: Send ;"
    ));
    assert!(out.contains(
        "fn list (& self) -> impl :: core :: future :: Future < Output = Vec < String > > + :: core :: marker :: Send ;"
    ));
    assert!(!out.contains("async fn publish (& self , name : String) ;"));
}

#[test]
fn user_supertraits_are_kept() {
    let out = expand(
        quote!(),
        quote!(
            trait T: Clone {
                async fn f(&self);
            }
        ),
    );
    assert!(out.contains("trait T : Clone + :: core :: marker :: Send"));
}

#[test]
fn enums_have_one_variant_per_method() {
    let out = expand(quote!(), share());
    assert!(out.contains(
        "pub enum __ShareRequest { publish (String) , list , read (String , String) , }"
    ));
    assert!(out.contains(
        "pub enum __ShareResponse { publish (()) , list (Vec < String >) , read (Result < Vec < u8 > , String >) , }"
    ));
    assert!(out.contains("# [serde (crate = \"::netchan::__private::serde\")]"));
}

#[test]
fn client_methods_keep_docs_and_attributes() {
    let out = expand(quote!(), share());
    assert!(
        out.contains("# [doc = r\" Publishes a name.\"] # [doc = \"\"] # [doc = \" # Errors\"]")
    );
    assert!(out.contains("# [deprecated = \"use read2\"]"));
    assert!(out.contains(
        "pub async fn read (& self , client : String , path : String) -> :: core :: result :: Result < Result < Vec < u8 > , String > , :: netchan :: __private :: RpcError >"
    ));
    // Undocumented methods get a generated summary.
    assert!(out.contains("Calls [`Share::list`] on the peer."));
}

#[test]
fn service_name_defaults_to_the_trait_name() {
    let out = expand(quote!(), share());
    assert!(out.contains("const NAME : & 'static :: core :: primitive :: str = \"Share\" ;"));
    assert!(out.contains("Self :: named (session , \"Share\")"));
}

#[test]
fn name_argument_sets_the_service_name() {
    let out = expand(quote!(name = "share.v1"), share());
    assert!(out.contains("const NAME : & 'static :: core :: primitive :: str = \"share.v1\" ;"));
    assert!(out.contains("Self :: named (session , \"share.v1\")"));
}

#[test]
fn server_dispatches_every_method_with_qualified_calls() {
    let out = expand(quote!(), share());
    assert!(
        out.contains("impl < S : Share > :: netchan :: __private :: Service for ShareServer < S >")
    );
    assert!(out.contains("< S as Share > :: read (& * service , arg0 , arg1) . await"));
    assert!(out.contains("__ShareRequest :: list =>"));
    assert!(out.contains("impl < S > :: core :: clone :: Clone for ShareServer < S >"));
}

#[test]
fn trait_named_s_gets_another_type_parameter() {
    let out = expand(
        quote!(),
        quote!(
            trait S {
                async fn f(&self);
            }
        ),
    );
    assert!(out.contains("impl < Svc : S > SServer < Svc >"));
}

#[test]
fn cfg_attributes_reach_variants_and_arms() {
    let out = expand(
        quote!(),
        quote!(
            #[cfg(unix)]
            trait T {
                #[cfg(feature = "x")]
                async fn f(&self, a: u8);
            }
        ),
    );
    assert!(out.contains("# [cfg (feature = \"x\")] f (u8) ,"));
    assert!(out.contains("# [cfg (feature = \"x\")] __TRequest :: f (arg0) =>"));
    // Every generated item carries the trait's cfg.
    assert_eq!(out.matches("# [cfg (unix)]").count(), 10);
}

#[test]
fn generated_code_names_only_absolute_paths() {
    // User types without prelude names, so that every prelude name left in
    // the output is one the expansion introduced.
    let out = expand(
        quote!(),
        quote!(
            pub trait T {
                async fn f(&self, a: Text) -> Bytes;
                async fn g(&self);
            }
        ),
    );
    let tokens: Vec<&str> = out.split_whitespace().collect();
    let prelude = [
        "Option", "Some", "None", "Ok", "Err", "Result", "Box", "Arc", "String", "Vec", "Clone",
        "Debug", "Send", "Sync", "Sized", "From", "Into", "ToOwned", "Default", "str", "Future",
    ];
    for (i, token) in tokens.iter().enumerate() {
        if prelude.contains(token) {
            assert_eq!(tokens[i - 1], "::", "bare `{token}` at token {i} in {out}");
        }
    }
}

#[test]
fn visibility_follows_the_trait() {
    let out = expand(
        quote!(),
        quote!(
            pub(crate) trait T {
                async fn f(&self);
            }
        ),
    );
    assert!(out.contains("pub (crate) struct TClient"));
    assert!(out.contains("pub (crate) struct TServer < S >"));
    assert!(out.contains("pub (crate) enum __TRequest"));
    assert!(out.contains("pub (crate) async fn f (& self"));
    assert!(out.contains("pub (crate) fn new (session"));
    assert!(!out.contains(" pub fn"));
}

#[test]
fn every_problem_is_reported_at_once() {
    let errors = errors(
        quote!(name = 1, version = 2),
        quote!(
            trait T<X>
            where
                X: Copy,
            {
                type A;
                const C: u8;
                fn sync(&self);
                async fn no_receiver();
                async fn by_value(self);
                async fn by_mut(&mut self);
                async fn generic<G>(&self, g: G);
                async fn borrowed(&self, s: &str, v: Vec<&[u8]>);
                async fn opaque(&self, i: impl Clone);
                async fn pattern(&self, (a, b): (u8, u8), mut c: u8, _: u8);
                async fn body(&self) {}
                async fn bounded(&self)
                where
                    Self: Sized;
                async fn result(&self) -> std::borrow::Cow<'static, str>;
                async fn borrowing(&self) -> Wrapper<'_>;
                async fn new(&self);
                async fn named(&self);
                async fn with_timeout(&self);
            }
        ),
    );
    let expected = [
        "`name` takes a string literal",
        "unknown argument `version`",
        "trait cannot be generic",
        "`where` clauses are not supported on a `#[netchan::service]` trait",
        "associated types are not supported",
        "associated consts are not supported",
        "methods must be `async fn`: write `async fn sync(&self, ...)`",
        "take `&self` as their first argument: write `async fn no_receiver(&self, ...)`",
        "not `self` by value",
        "not `&mut self`",
        "RPC methods cannot be generic",
        "such as `String` instead of `&str`",
        "such as `Vec<u8>` instead of `&[u8]`",
        "`impl Trait` is not supported in an RPC argument",
        "RPC arguments must be plain identifiers",
        "write the argument as a plain identifier (`c: Type`)",
        "RPC arguments need a name",
        "default method bodies are not supported",
        "`where` clauses are not supported on RPC methods",
        "remove the lifetime `'_`",
        "clashes with the generated constructor `TClient::new`",
        "clashes with the generated constructor `TClient::named`",
        "clashes with the generated `TClient::with_timeout`",
    ];
    for want in expected {
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "no error containing {want:?} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
}

#[test]
fn invalid_input_still_emits_the_trait_and_placeholders() {
    let out = expand(
        quote!(),
        quote!(
            pub trait T {
                fn f(&self);
            }
        ),
    );
    assert!(out.contains("# [allow (async_fn_in_trait)] pub trait T { fn f (& self) ; }"));
    assert!(out.contains("pub struct TClient"));
    assert!(out.contains("pub struct TServer < S >"));
    assert!(out.contains("compile_error"));
}

#[test]
fn non_trait_items_are_refused_and_kept() {
    let out = expand(
        quote!(),
        quote!(
            struct NotATrait;
        ),
    );
    assert!(out.starts_with("struct NotATrait ;"));
    assert!(out.contains("goes on a trait of `async fn` methods"));
}

#[test]
fn empty_and_duplicate_names_are_refused() {
    let errs = errors(
        quote!(name = "", name = "x"),
        quote!(
            trait T {
                async fn f(&self);
                async fn f(&self, a: u8);
            }
        ),
    );
    assert!(
        errs.iter().any(|e| e.contains("must not be empty")),
        "{errs:#?}"
    );
    assert!(
        errs.iter().any(|e| e.contains("duplicate `name` argument")),
        "{errs:#?}"
    );
    assert!(
        errs.iter().any(|e| e.contains("duplicate method `f`")),
        "{errs:#?}"
    );
}

#[test]
fn self_types_and_references_in_results_are_refused() {
    let errs = errors(
        quote!(),
        quote!(
            trait T {
                async fn a(&self, x: Self);
                async fn b(&self) -> &str;
                async fn c(&self) -> impl Clone;
            }
        ),
    );
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(errs[0].contains("RPC arguments cannot use `Self`"));
    assert!(errs[1].contains("return an owned type such as `String` instead of `&str`"));
    assert!(errs[2].contains("`impl Trait` is not supported in an RPC result"));
}

#[test]
fn empty_trait_expands_to_empty_enums() {
    let out = expand(
        quote!(),
        quote!(
            trait Nothing {}
        ),
    );
    assert!(out.contains("enum __NothingRequest { }"));
    assert!(out.contains("match request { }"));
}
