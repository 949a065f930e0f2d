//! Procedural macros for `netchan`. Use them through the `netchan` crate
//! (`#[netchan::service]`), not directly.

use proc_macro::TokenStream;

/// Turns a trait of `async fn` methods into a typed RPC client and server.
///
/// The full expansion lands with the RPC layer; until then the trait is
/// emitted unchanged.
#[proc_macro_attribute]
pub fn service(_args: TokenStream, item: TokenStream) -> TokenStream {
    item
}
