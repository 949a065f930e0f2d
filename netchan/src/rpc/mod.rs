//! Typed RPC over channels: the runtime behind `#[netchan::service]`.
//!
//! A served service is an export whose every import gets its own
//! dispatcher: one channel of calls per client connection and service,
//! answered on a reply channel the client hands over first. Calls carry ids,
//! optional deadlines and cancellations; many are in flight on one
//! connection, in both directions at once.

mod client;
mod observe;
mod serve;
mod server;
mod target;
pub(crate) mod wire;

pub use client::Client;
use server::{GetService, service_export};
pub use target::{CallPath, CallTarget, RemoteCalls};

use std::future::Future;
use std::pin::Pin;

use crate::Message;

/// A boxed, `Send` future, as generated dispatchers return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A service that can be served on a session or exporter.
///
/// Implemented by the `{Trait}Server` types that `#[netchan::service]`
/// generates; not meant to be implemented by hand.
pub trait Service: Send + Sync + 'static {
    /// The request enum of the service.
    #[doc(hidden)]
    type Request: Message;
    /// The response enum of the service.
    #[doc(hidden)]
    type Response: Message;
    /// The default name clients call it by.
    #[doc(hidden)]
    const NAME: &'static str;
    /// The name this instance is served under.
    #[doc(hidden)]
    fn name(&self) -> &str;
    /// Runs one call.
    #[doc(hidden)]
    fn call(&self, request: Self::Request) -> BoxFuture<Self::Response>;
    /// The method `request` calls, as named in the trait (for stats and
    /// spans). Generated services name each method; `"call"` otherwise.
    #[doc(hidden)]
    fn method_name(request: &Self::Request) -> &'static str {
        let _ = request;
        "call"
    }
}

/// Export name of service `name`.
pub(crate) fn export_name(service: &str) -> String {
    format!("netchan.rpc/{service}")
}

impl<S: Service> Service for std::sync::Arc<S> {
    type Request = S::Request;
    type Response = S::Response;
    const NAME: &'static str = S::NAME;
    fn name(&self) -> &str {
        (**self).name()
    }
    fn call(&self, request: Self::Request) -> BoxFuture<Self::Response> {
        (**self).call(request)
    }
    fn method_name(request: &Self::Request) -> &'static str {
        S::method_name(request)
    }
}
/// The message a panic carried, for an error that names it.
fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests;
