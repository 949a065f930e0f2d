//! Error types. One cloneable [`Error`] describes what went wrong with a
//! connection or an operation; per-operation errors ([`SendError`],
//! [`TrySendError`], [`RecvError`], [`RpcError`]) wrap it where they need to
//! and give values back where a value was not sent. Each converts into
//! [`Error`] (`From`), so `?` works across them; a send error's value is
//! dropped in that conversion.

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
    /// A channel refused a value because it is closed: its receiver was
    /// dropped, it was hung up, or its session was closed. What a
    /// [`SendError`] or [`TrySendError::Closed`] becomes through `?`.
    #[error("channel closed: its receiver is gone, it was hung up, or its session was closed")]
    ChannelClosed,
    /// [`try_send`](crate::Sender::try_send) found the receiving end's
    /// buffer full (or, on a rendezvous channel, no receiver waiting).
    /// What [`TrySendError::Full`] becomes through `?`.
    #[error(
        "channel full: the receiving end has no free slot (send waits for one; try_send does not)"
    )]
    ChannelFull,
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
    /// A message this side tried to send was larger than the peer accepts
    /// (the peer's [`Config::max_message_len`](crate::Config::max_message_len),
    /// announced in its hello). The value was not sent; the channel goes on.
    #[error(
        "a message of {} exceeds the peer's limit of {} (Config::max_message_len); \
         raise Config::max_message_len on both sides or split the value",
        ByteSize(*size),
        ByteSize(*limit)
    )]
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
    /// An RPC call failed; what an [`RpcError`] becomes through `?`.
    #[error(transparent)]
    Rpc(#[from] RpcError),
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

/// A byte count as people read it: exact, with MiB or KiB beside it when
/// that is shorter to grasp.
struct ByteSize(usize);

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const KIB: usize = 1 << 10;
        const MIB: usize = 1 << 20;
        let n = self.0;
        if n >= MIB && n % MIB == 0 {
            write!(f, "{} MiB", n / MIB)
        } else if n >= KIB && n % KIB == 0 {
            write!(f, "{} KiB", n / KIB)
        } else if n >= MIB {
            write!(f, "{n} bytes ({:.1} MiB)", n as f64 / MIB as f64)
        } else if n >= KIB {
            write!(f, "{n} bytes ({:.1} KiB)", n as f64 / KIB as f64)
        } else {
            write!(f, "{n} bytes")
        }
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

/// A `send` that failed: `.0` is the value, given back; `.1` says why
/// ([`SendErrorKind`]: the channel is closed, its connection was lost, or
/// the value is too large or cannot be encoded).
///
/// A tuple struct like tokio's and crossbeam's `SendError`, with the
/// reason beside the value: match it as `SendError(value, kind)` (or
/// `SendError(value, ..)`), or use [`into_inner`](SendError::into_inner)
/// and [`kind`](SendError::kind). Its `Display` says what happened and,
/// where there is something to do, what to do; `Debug` never prints the
/// value. Through `?` it becomes an [`Error`] (the value is dropped
/// then; see `From<SendError<T>> for Error`).
///
/// A refused value leaves the channel as it was: an oversized value is
/// refused before anything is written, and the next `send` goes through.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), netchan::Error> {
/// use netchan::{Config, SendError, SendErrorKind, Session};
///
/// let (a, b) = Session::pair_with(Config::default().max_message_len(1024));
/// let tx = a.export_sender::<Vec<u8>>("blobs")?;
/// let mut rx = b.import_receiver::<Vec<u8>>("blobs", 4).await?;
///
/// match tx.send(vec![0; 4000]).await {
///     Err(SendError(value, SendErrorKind::TooLarge { size, limit })) => {
///         assert_eq!(value.len(), 4000); // the value comes back
///         assert!(size > 4000);          // its encoding
///         assert_eq!(limit, 1024);       // the peer's Config::max_message_len
///     }
///     other => panic!("expected TooLarge, got {other:?}"),
/// }
/// let e = tx.send(vec![0; 4000]).await.unwrap_err();
/// assert!(e.to_string().contains("raise Config::max_message_len on both sides"));
///
/// // The channel is still open.
/// assert!(!tx.is_closed());
/// tx.send(vec![1, 2, 3]).await?;
/// assert_eq!(rx.recv().await?, Some(vec![1, 2, 3]));
/// # Ok(())
/// # }
/// ```
pub struct SendError<T>(pub T, pub SendErrorKind);

/// Why a [`SendError`] refused its value.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SendErrorKind {
    /// The channel is closed: its receiver was dropped, it was hung up
    /// (by either side), or its session was closed cleanly. Nothing
    /// sent on it from now on will arrive.
    Closed,
    /// The connection carrying the channel failed (the [`Error`] says
    /// how) before the value was sent.
    ConnectionLost(Error),
    /// The value encodes to `size` bytes, more than the peer accepts
    /// (`limit`, the peer's
    /// [`Config::max_message_len`](crate::Config::max_message_len)). The
    /// channel is unharmed.
    TooLarge {
        /// The encoded size.
        size: usize,
        /// The peer's limit.
        limit: usize,
    },
    /// The value could not be sent for another reason that concerns it
    /// alone (it fails to encode, or carries more channel handles than
    /// allowed); the channel is unharmed.
    Invalid(Error),
}

impl SendErrorKind {
    /// The reason for a refused value the send path reported (`None`:
    /// the channel closed).
    pub(crate) fn refused(e: Error) -> SendErrorKind {
        match e {
            Error::MessageTooLarge { size, limit } => SendErrorKind::TooLarge { size, limit },
            e => SendErrorKind::Invalid(e),
        }
    }

    /// Whether the value was refused on its own ([`refused`](Self::refused):
    /// too large, or it does not encode), so the channel goes on; not
    /// that the channel closed.
    pub(crate) fn is_refused(&self) -> bool {
        matches!(
            self,
            SendErrorKind::TooLarge { .. } | SendErrorKind::Invalid(_)
        )
    }

    /// The channel closed; `lost` is the failure of its connection, if
    /// that is why.
    pub(crate) fn closed(lost: Option<Error>) -> SendErrorKind {
        match lost {
            None | Some(Error::Closed) => SendErrorKind::Closed,
            Some(e) => SendErrorKind::ConnectionLost(e),
        }
    }
}

impl fmt::Display for SendErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendErrorKind::Closed => f.write_str(
                "the channel is closed (its receiver is gone, it was hung up, or its session was closed)",
            ),
            SendErrorKind::ConnectionLost(e) => write!(f, "the connection was lost: {e}"),
            SendErrorKind::TooLarge { size, limit } => write!(
                f,
                "it encodes to {}, more than the peer's limit of {} (Config::max_message_len); \
                 raise Config::max_message_len on both sides or split the value",
                ByteSize(*size),
                ByteSize(*limit)
            ),
            SendErrorKind::Invalid(e) => write!(f, "{e}"),
        }
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SendError")
            .field(&format_args!(".."))
            .field(&self.1)
            .finish()
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "value not sent: {}", self.1)
    }
}

impl<T> std::error::Error for SendError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.1 {
            SendErrorKind::ConnectionLost(e) | SendErrorKind::Invalid(e) => Some(e),
            _ => None,
        }
    }
}

impl<T> SendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        self.0
    }

    /// Why it was not sent.
    pub fn kind(&self) -> &SendErrorKind {
        &self.1
    }

    /// Whether the channel is closed for good (cleanly or because its
    /// connection was lost): sending again is pointless. `false` for a
    /// value refused on its own (too large, not encodable).
    pub fn is_closed(&self) -> bool {
        matches!(
            self.1,
            SendErrorKind::Closed | SendErrorKind::ConnectionLost(_)
        )
    }
}

/// `?` on a `send`: the reason, as an [`Error`]. **The value is dropped**;
/// match the [`SendError`] first to keep it.
///
/// Closed becomes [`Error::ChannelClosed`], a lost connection the error
/// that ended it, too large [`Error::MessageTooLarge`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// async fn greet(tx: &netchan::Sender<String>) -> Result<(), netchan::Error> {
///     tx.send("hello".into()).await?;
///     Ok(())
/// }
/// let (tx, rx) = netchan::channel::<String>(1);
/// drop(rx);
/// assert!(matches!(greet(&tx).await, Err(netchan::Error::ChannelClosed)));
/// # }
/// ```
impl<T> From<SendError<T>> for Error {
    fn from(e: SendError<T>) -> Error {
        match e.1 {
            SendErrorKind::Closed => Error::ChannelClosed,
            SendErrorKind::ConnectionLost(e) | SendErrorKind::Invalid(e) => e,
            SendErrorKind::TooLarge { size, limit } => Error::MessageTooLarge { size, limit },
        }
    }
}

/// A `try_send` that could not send now. Each variant gives the value back.
#[non_exhaustive]
pub enum TrySendError<T> {
    /// The receiving end's buffer is full (or no receiver is waiting on a
    /// rendezvous channel).
    Full(T),
    /// The channel is closed: its receiver was dropped, it was hung up, or
    /// its connection ended (cleanly or not).
    Closed(T),
    /// The value could not be sent at all: it is larger than the peer
    /// accepts ([`Error::MessageTooLarge`]) or does not encode. The
    /// channel is unharmed.
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
            TrySendError::Full(_) => f.write_str(
                "value not sent: the channel is full (the receiving end has no free slot; send would wait for one)",
            ),
            TrySendError::Closed(_) => f.write_str(
                "value not sent: the channel is closed (its receiver is gone, it was hung up, or its connection ended)",
            ),
            TrySendError::Invalid(_, e) => write!(f, "value not sent: {e}"),
        }
    }
}

impl<T> std::error::Error for TrySendError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TrySendError::Invalid(_, e) => Some(e),
            _ => None,
        }
    }
}

/// `?` on a `try_send`: the reason, as an [`Error`]. **The value is
/// dropped**; match the [`TrySendError`] first to keep it (and to wait
/// or retry on `Full`).
///
/// `Full` becomes [`Error::ChannelFull`], `Closed` [`Error::ChannelClosed`],
/// `Invalid` its error.
///
/// ```
/// fn offer(tx: &netchan::Sender<u32>, v: u32) -> Result<(), netchan::Error> {
///     tx.try_send(v)?;
///     Ok(())
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (tx, _rx) = netchan::channel::<u32>(1);
/// assert!(offer(&tx, 1).is_ok());
/// assert!(matches!(offer(&tx, 2), Err(netchan::Error::ChannelFull)));
/// # }
/// ```
impl<T> From<TrySendError<T>> for Error {
    fn from(e: TrySendError<T>) -> Error {
        match e {
            TrySendError::Full(_) => Error::ChannelFull,
            TrySendError::Closed(_) => Error::ChannelClosed,
            TrySendError::Invalid(_, e) => e,
        }
    }
}

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

/// An RPC call that failed. Converts into [`Error::Rpc`], so `?` works in
/// a function returning `Result<_, netchan::Error>`.
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

/// A `try_recv` that found no value: the channel is empty for now, closed
/// cleanly (every sender gone and every value taken), or lost with its
/// connection. As tokio's `TryRecvError`, with the loss told apart.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TryRecvError {
    /// No value is ready; the channel is open.
    #[error("channel empty")]
    Empty,
    /// The channel was closed cleanly and every value was taken.
    #[error("channel closed")]
    Closed,
    /// The connection carrying the channel failed (reported once; then
    /// `Closed`).
    #[error("channel lost: {0}")]
    Lost(Error),
    /// One message could not be decoded as the receiver's type; the
    /// channel goes on with the next.
    #[error("message could not be decoded: {0}")]
    Decode(String),
}

impl PartialEq for TryRecvError {
    /// Variants compare equal when they are the same kind with the same
    /// text, so tests can `assert_eq!(rx.try_recv(), Err(TryRecvError::Empty))`.
    fn eq(&self, other: &TryRecvError) -> bool {
        match (self, other) {
            (TryRecvError::Empty, TryRecvError::Empty)
            | (TryRecvError::Closed, TryRecvError::Closed) => true,
            (TryRecvError::Lost(a), TryRecvError::Lost(b)) => a.to_string() == b.to_string(),
            (TryRecvError::Decode(a), TryRecvError::Decode(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for TryRecvError {}

/// `?` on a `recv`: a lost channel becomes the error that ended its
/// connection, an undecodable message [`Error::Codec`].
///
/// ```
/// async fn next(rx: &mut netchan::Receiver<u32>) -> Result<Option<u32>, netchan::Error> {
///     Ok(rx.recv().await?)
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (tx, mut rx) = netchan::channel::<u32>(1);
/// tx.send(7).await.unwrap();
/// drop(tx);
/// assert_eq!(next(&mut rx).await.unwrap(), Some(7));
/// assert_eq!(next(&mut rx).await.unwrap(), None);
/// # }
/// ```
impl From<RecvError> for Error {
    fn from(e: RecvError) -> Error {
        match e {
            RecvError::Lost(e) => e,
            RecvError::Decode(msg) => Error::Codec(msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_read_exactly_with_a_rounded_unit_beside_them() {
        let shown = |n| ByteSize(n).to_string();
        assert_eq!(shown(10), "10 bytes");
        assert_eq!(shown(1024), "1 KiB");
        assert_eq!(shown(4003), "4003 bytes (3.9 KiB)");
        assert_eq!(shown(16 << 20), "16 MiB");
        assert_eq!(shown(20_971_525), "20971525 bytes (20.0 MiB)");
    }

    #[test]
    fn an_oversized_send_names_the_sizes_the_limit_and_the_way_out() {
        let e = SendError(
            (),
            SendErrorKind::TooLarge {
                size: 20_971_525,
                limit: 16 << 20,
            },
        );
        assert_eq!(
            e.to_string(),
            "value not sent: it encodes to 20971525 bytes (20.0 MiB), more than the peer's \
             limit of 16 MiB (Config::max_message_len); raise Config::max_message_len on both \
             sides or split the value"
        );
        assert_eq!(
            Error::from(e).to_string(),
            "a message of 20971525 bytes (20.0 MiB) exceeds the peer's limit of 16 MiB \
             (Config::max_message_len); raise Config::max_message_len on both sides or split \
             the value"
        );
    }
}
