//! Procedural macros for `netchan`. Use them through the `netchan` crate
//! (`#[netchan::service]`), not directly.
//!
//! The service macro works in three steps, after dtolnay's derive macros:
//! `parse.rs` models the input and keeps the syn nodes for spans,
//! `validate.rs` reports every problem at once on the user's own tokens, and
//! `expand.rs` generates one item per function. An input that fails
//! validation still expands to the trait as written (plus placeholder client
//! and server types), so that IDEs keep working and the user sees the real
//! errors instead of a cascade.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::quote;

mod expand;
mod parse;
mod validate;

use parse::{Args, Service};
use validate::Errors;

/// Turns a trait of `async fn` methods into a typed RPC client and server.
///
/// ```ignore
/// #[netchan::service]                 // or #[netchan::service(name = "share.v1")]
/// pub trait Share {
///     async fn list(&self) -> Vec<String>;
///     async fn read(&self, client: String, path: String) -> Result<Vec<u8>, String>;
/// }
/// ```
///
/// generates, beside the trait (whose methods become
/// `fn(..) -> impl Future + Send`, so implementors write plain `async fn`):
///
/// * `ShareClient`: `new(&Session)`, `named(&Session, &str)`,
///   `with_timeout(Duration)`, and one `async fn` per method returning
///   `Result<R, RpcError>`, with the method's docs and attributes;
/// * `ShareServer<S>`: `new(S)`, `named(S, &str)`, `Clone`, and the
///   `Service` that `Session::serve` and `Exporter::serve` take, for any
///   `S: Share`.
///
/// Methods take `&self` and owned, serializable arguments; the trait may not
/// be generic or have associated items. The service is served under the
/// trait's name unless `name = "..."` says otherwise.
///
/// Calls run concurrently, each under its deadline. A handler that finishes
/// without waiting is answered at once by its connection's dispatcher; one
/// that waits (for I/O, a timer, another call) continues in a task of its
/// own. Long computation without an `.await` holds up the calls behind it,
/// as it would hold up any tokio worker: run it in
/// `tokio::task::spawn_blocking`.
#[proc_macro_attribute]
pub fn service(args: TokenStream, item: TokenStream) -> TokenStream {
    service_impl(args.into(), item.into()).into()
}

/// The macro on `proc_macro2` tokens, so that unit tests can run it.
fn service_impl(args: TokenStream2, item: TokenStream2) -> TokenStream2 {
    let mut errors = Errors::default();

    let args = match syn::parse2::<Args>(args) {
        Ok(args) => Some(args),
        Err(e) => {
            errors.push(e);
            None
        }
    };

    let service = match syn::parse2::<syn::Item>(item.clone()) {
        Ok(syn::Item::Trait(_)) => Service::parse(item.clone()),
        Ok(_) => Err(syn::Error::new(
            Span::call_site(),
            "`#[netchan::service]` goes on a trait of `async fn` methods, as in \
             `#[netchan::service] trait Share { async fn list(&self) -> Vec<String>; }`",
        )),
        Err(e) => Err(e),
    };
    let service = match service {
        Ok(service) => service,
        Err(e) => {
            errors.push(e);
            let error = errors.finish().err().map(|e| e.into_compile_error());
            return quote!(#item #error);
        }
    };

    if let Some(args) = &args {
        validate::args(args, &mut errors);
    }
    validate::service(&service, &mut errors);

    match (args, errors.finish()) {
        (Some(args), Ok(())) => expand::service(&service, &args),
        (_, result) => {
            let fallback = expand::fallback(&service);
            let error = result.err().map(|e| e.into_compile_error());
            quote!(#fallback #error)
        }
    }
}

#[cfg(test)]
mod tests;
