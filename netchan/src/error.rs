//! Error types. One cloneable [`Error`] describes what went wrong with a
//! connection or an operation; per-operation errors ([`SendError`],
//! [`TrySendError`], [`RecvError`], [`RpcError`]) wrap it where they need to
//! and give values back where a value was not sent.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::proto::{ProtoError, Side};

/// Which side started a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// This process.
    Local,
    /// The peer.
    Remote,
}

/// What went wrong with a connection, an export or an import.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error on the underlying stream.
    #[error("I/O error: {0}")]
    Io(Arc<std::io::Error>),
    /// A protocol violation; `origin` says which side broke the protocol
    /// (or failed the handshake).
    #[error("protocol error ({origin:?} side): {error}")]
    Protocol {
        /// The side at fault.
        origin: Origin,
        /// What was wrong.
        error: ProtoError,
    },
    /// The handshake did not finish in time: the peer sent no netchan
    /// hello (or, over TLS, did not finish the TLS handshake) within
    /// [`Config::handshake_timeout`](crate::Config::handshake_timeout).
    ///
    /// The message names the peer's address when the connection has one,
    /// and says what the other end should have been: dialling something
    /// that waits for the client to speak first (an HTTP server, a
    /// database) ends here.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// // A TCP server that accepts and never says a word.
    /// let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    /// let addr = silent.local_addr().unwrap();
    /// tokio::spawn(async move {
    ///     let (_socket, _) = silent.accept().await.unwrap();
    ///     std::future::pending::<()>().await
    /// });
    /// let cfg = netchan::Config::default().handshake_timeout(Duration::from_millis(200));
    /// let e = netchan::Session::connect_with(addr, cfg).await.unwrap_err();
    /// assert!(matches!(e, netchan::Error::HandshakeTimeout { peer: Some(p), .. } if p == addr));
    /// assert_eq!(
    ///     e.to_string(),
    ///     format!("no netchan hello from {addr} within 200ms: is a netchan exporter listening there?"),
    /// );
    /// # }
    /// ```
    #[error("{}", handshake_timeout(*timeout, *peer, *side))]
    #[non_exhaustive]
    HandshakeTimeout {
        /// How long this side waited.
        timeout: std::time::Duration,
        /// The peer's address, when the connection has one (`None` for
        /// in-memory pairs and streams handed to
        /// [`Session::connect_stream`](crate::Session::connect_stream)).
        peer: Option<SocketAddr>,
        /// This side: the dialler waited for an exporter's hello, the
        /// acceptor for a client's.
        side: Side,
    },
    /// The peer ended the connection without a goodbye.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The connection was closed cleanly (by either side).
    #[error("connection closed")]
    Closed,
    /// The peer said goodbye with a reason (for example, it found a
    /// protocol error in what this side sent).
    #[error("peer closed the connection: {0}")]
    PeerGoodbye(String),
    /// The peer has no export of that name.
    #[error("no export named {0:?} on the peer")]
    NoSuchExport(String),
    /// The export flows the other way.
    #[error("export {name:?} is a {actual}, not a {expected}")]
    WrongDirection {
        /// Export name.
        name: String,
        /// What the import expected ("sender" or "receiver").
        expected: &'static str,
        /// What the export is.
        actual: &'static str,
    },
    /// The export carries another message type.
    #[error("export {name:?} carries {actual}, not {expected}")]
    WrongType {
        /// Export name.
        name: String,
        /// The importer's type.
        expected: String,
        /// The exporter's type.
        actual: String,
    },
    /// The peer refused an import for another reason.
    #[error("import of {name:?} refused: {reason}")]
    Refused {
        /// Export name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A name is already exported here.
    #[error("{0:?} is already exported")]
    AlreadyExported(String),
    /// `hangup` of a name that is neither exported nor imported here.
    #[error("no channel named {0:?} here")]
    NotFound(String),
    /// A channel or name limit was reached.
    #[error("too many channels on this connection (limit {0})")]
    TooManyChannels(usize),
    /// A message was larger than the peer accepts.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        /// Encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A value could not be encoded or decoded.
    #[error("codec error: {0}")]
    Codec(String),
    /// `drain` or `sync` ended before every sent value was confirmed.
    #[error("{count} sent values not confirmed by the peer ({why})")]
    Undelivered {
        /// Values sent whose arrival was never confirmed.
        count: u64,
        /// Timeout or connection failure.
        why: String,
    },
    /// An operation did not finish in time.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// TLS failed: a handshake error, a certificate that is not trusted,
    /// a key that does not match. The text names the cause.
    #[error("{0}")]
    Tls(String),
    /// A configuration or argument problem.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// `Error::HandshakeTimeout`'s message: who was silent, and what should
/// have been there.
fn handshake_timeout(timeout: Duration, peer: Option<SocketAddr>, side: Side) -> String {
    match (peer, side) {
        (Some(peer), Side::Dialer) => format!(
            "no netchan hello from {peer} within {timeout:?}: is a netchan exporter listening there?"
        ),
        (Some(peer), Side::Acceptor) => format!(
            "no netchan hello from {peer} within {timeout:?}: the client connected but did not speak netchan"
        ),
        (None, _) => format!("no netchan hello from the peer within {timeout:?}"),
    }
}

impl Error {
    pub(crate) fn io(e: std::io::Error) -> Error {
        Error::Io(Arc::new(e))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::io(e)
    }
}

/// A `send` that failed: the channel or connection is closed. `.0` is the
/// value, given back.
pub struct SendError<T>(pub T);

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("channel closed; the value was not sent")
    }
}

impl<T> std::error::Error for SendError<T> {}

impl<T> SendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        self.0
    }
}

/// A `try_send` that could not send now. Each variant gives the value back.
#[non_exhaustive]
pub enum TrySendError<T> {
    /// The receiving end's buffer is full (or no receiver is waiting on a
    /// rendezvous channel).
    Full(T),
    /// The channel or connection is closed.
    Closed(T),
    /// The value could not be encoded, or was too large.
    Invalid(T, Error),
}

impl<T> TrySendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(v) | TrySendError::Closed(v) | TrySendError::Invalid(v, _) => v,
        }
    }
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Closed(_) => f.write_str("Closed(..)"),
            TrySendError::Invalid(_, e) => write!(f, "Invalid(.., {e:?})"),
        }
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("channel full"),
            TrySendError::Closed(_) => f.write_str("channel closed"),
            TrySendError::Invalid(_, e) => write!(f, "value not sent: {e}"),
        }
    }
}

impl<T> std::error::Error for TrySendError<T> {}

/// A `recv` that failed. `Ok(None)` from `recv` is the clean end; this is
/// everything else.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// The connection carrying the channel failed before the channel was
    /// closed cleanly.
    #[error("channel lost: {0}")]
    Lost(Error),
    /// One message could not be decoded as the receiver's type (for
    /// example, the two programs disagree on its structure). The channel
    /// goes on with the next message.
    #[error("message could not be decoded: {0}")]
    Decode(String),
}

/// An RPC call that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The connection ended before the reply came.
    #[error("disconnected before the reply arrived")]
    Disconnected,
    /// The deadline passed.
    #[error("call timed out")]
    Timeout,
    /// The peer serves no service of this name.
    #[error("no service named {0:?} on the peer")]
    NoSuchService(String),
    /// The handler failed on the peer (for example, it panicked).
    #[error("remote error: {0}")]
    Remote(String),
    /// Arguments or result could not be encoded or decoded, or were too large.
    #[error("codec error: {0}")]
    Codec(String),
}
