//! What `#[netchan::service]` generates, shown on a small service.
//!
//! This module exists for its documentation: the items below are what the
//! macro makes of this trait, so their methods can be read here as they
//! would be in a program's own docs.
//!
//! ```text
//! #[netchan::service]
//! pub trait Greeter {
//!     async fn greet(&self, name: String) -> Result<String, String>;
//!     async fn greeted(&self) -> u64;
//! }
//! ```
//!
//! Beside the trait, for a trait named `Greeter`:
//!
//! * [`Greeter`], the trait itself. Each `async fn m(&self, a: A) -> R`
//!   becomes `fn m(&self, a: A) -> impl Future<Output = R> + Send`, and
//!   `Send + Sync + 'static` join its supertraits, so that a server can run
//!   calls on any thread. Implementations still write plain `async fn`; the
//!   trait is not object-safe.
//! * [`GreeterClient`], which calls the service that the peer of a
//!   [`Session`](crate::Session) serves: [`GreeterClient::new`] (the default
//!   name, `Greeter`), [`GreeterClient::named`] and
//!   [`GreeterClient::with_timeout`], then one `async` method per trait
//!   method with the same arguments, returning `Result<R, RpcError>`. The
//!   method's own result stays inside: `greet` returns
//!   `Result<Result<String, String>, RpcError>`, the outer error for the
//!   call, the inner one from the service. Clones share the connection;
//!   dropping a call's future cancels the handler on the server.
//! * [`GreeterServer<S>`](GreeterServer), which serves any `S: Greeter`:
//!   [`GreeterServer::new`] or [`GreeterServer::named`], then hand it to
//!   [`Session::serve`](crate::Session::serve),
//!   [`Exporter::serve`](crate::Exporter::serve) or
//!   [`Exporter::serve_each`](crate::Exporter::serve_each). It implements
//!   [`Service`](crate::Service); calls run concurrently on one shared `S`.
//! * Two hidden enums, `__GreeterRequest` and `__GreeterResponse`: the
//!   messages of the service on the wire, one variant per method. They are
//!   not public API.
//!
//! The service's name on the wire is the trait's name, or the one given
//! with `#[netchan::service(name = "greeter.v1")]`. Arguments and results
//! may be any [`Message`](crate::Message), [`Sender`](crate::Sender),
//! [`Receiver`](crate::Receiver) and [`Pipe`](crate::Pipe) included, for
//! streaming.
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! use netchan::Session;
//! use netchan::example::{Greeter, GreeterClient, GreeterServer};
//!
//! #[derive(Default)]
//! struct Hello {
//!     greeted: AtomicU64,
//! }
//!
//! impl Greeter for Hello {
//!     async fn greet(&self, name: String) -> Result<String, String> {
//!         if name.is_empty() {
//!             return Err("who are you?".to_string());
//!         }
//!         self.greeted.fetch_add(1, Ordering::Relaxed);
//!         Ok(format!("hello, {name}"))
//!     }
//!
//!     async fn greeted(&self) -> u64 {
//!         self.greeted.load(Ordering::Relaxed)
//!     }
//! }
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), netchan::RpcError> {
//!     let (server, client) = Session::pair();
//!     server.serve(GreeterServer::new(Hello::default()));
//!
//!     let greeter = GreeterClient::new(&client);
//!     assert_eq!(greeter.greet("ada".into()).await?, Ok("hello, ada".into()));
//!     assert_eq!(greeter.greet(String::new()).await?, Err("who are you?".into()));
//!     assert_eq!(greeter.greeted().await?, 1);
//!     Ok(())
//! }
//! ```

/// A service that greets its callers and counts them; written as
/// `#[netchan::service] pub trait Greeter { .. }` with two `async fn`.
#[netchan::service]
pub trait Greeter {
    /// Greets `name`, or refuses an empty one with an error of the
    /// service's own.
    async fn greet(&self, name: String) -> Result<String, String>;

    /// How many callers were greeted so far.
    async fn greeted(&self) -> u64;
}
