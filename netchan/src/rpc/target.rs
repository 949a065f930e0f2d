//! Where a generated client sends its calls: the peer of a [`Session`],
//! or a backend beyond one connection (`nats::Node`), which plugs in
//! through [`RemoteCalls`] so that this layer names no backend.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::BoxFuture;
use crate::{RpcError, Session};

/// What a `{Trait}Client` can be made from: a [`Session`] (the service
/// its peer serves) or, with the feature `nats`, a `netchan::nats::Node`
/// (the replicas serving it on the cluster).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// #[netchan::service]
/// pub trait Clock {
///     async fn now(&self) -> u64;
/// }
/// let (_server, client) = netchan::Session::pair();
/// // `new` takes anything that is a `CallTarget`: here a session.
/// let _clock = ClockClient::new(&client);
/// # }
/// ```
pub trait CallTarget {
    /// The path calls take. Used by generated code.
    #[doc(hidden)]
    fn call_path(&self) -> CallPath;
}

/// The path of a client's calls.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub enum CallPath {
    /// Over one connection, to its peer.
    Session(Session),
    /// Through a backend that carries encoded calls.
    Remote(Arc<dyn RemoteCalls>),
}

/// A backend that carries one encoded call to a replica serving
/// `service` and brings back its encoded `Result<Response, Failure>`.
/// Dropping the future cancels the call at the replica.
#[doc(hidden)]
pub trait RemoteCalls: Send + Sync + fmt::Debug + 'static {
    /// Sends `body` (the encoded request) and waits for the encoded
    /// result; `timeout` travels as the replica's deadline.
    fn call(
        &self,
        service: &str,
        body: Bytes,
        timeout: Option<Duration>,
    ) -> BoxFuture<Result<Bytes, RpcError>>;
}

impl CallTarget for Session {
    fn call_path(&self) -> CallPath {
        CallPath::Session(self.clone())
    }
}
