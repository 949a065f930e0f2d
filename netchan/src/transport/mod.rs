//! Transports: byte streams a session runs over. Dial and accept (`tcp`,
//! with TLS from `tls` when configured) give a byte stream and the peer's
//! identity; the driver takes any `AsyncRead + AsyncWrite` (`Halves`).
//!
//! Knows nothing of frames, connections, channels or sessions.

pub(crate) mod tcp;
#[cfg(feature = "tls")]
pub mod tls;

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};

/// The two ends' socket addresses of a connection, when it has them (an
/// in-memory or caller-supplied stream has none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Addrs {
    pub(crate) local: Option<SocketAddr>,
    pub(crate) peer: Option<SocketAddr>,
}

impl Addrs {
    /// The addresses of a TCP stream (either may be missing if the socket
    /// already failed).
    pub(crate) fn of(stream: &tokio::net::TcpStream) -> Addrs {
        Addrs {
            local: stream.local_addr().ok(),
            peer: stream.peer_addr().ok(),
        }
    }
}

/// A byte stream the driver can split into a read and a write half.
pub(crate) trait Halves: Send + 'static {
    type R: AsyncRead + Unpin + Send + 'static;
    type W: AsyncWrite + Unpin + Send + 'static;
    fn halves(self) -> (Self::R, Self::W);
    /// The stream's socket addresses, if it has any.
    fn addrs(&self) -> Addrs {
        Addrs::default()
    }
}

/// TCP splits without a lock between the halves.
impl Halves for tokio::net::TcpStream {
    type R = tokio::net::tcp::OwnedReadHalf;
    type W = tokio::net::tcp::OwnedWriteHalf;
    fn halves(self) -> (Self::R, Self::W) {
        self.into_split()
    }
    fn addrs(&self) -> Addrs {
        Addrs::of(self)
    }
}

/// A stream over TCP (TLS), split by tokio, with the addresses of the TCP
/// connection under it.
#[cfg(feature = "tls")]
pub(crate) struct Addressed<S> {
    pub(crate) stream: S,
    pub(crate) addrs: Addrs,
}

#[cfg(feature = "tls")]
impl<S: AsyncRead + AsyncWrite + Send + Unpin + 'static> Halves for Addressed<S> {
    type R = tokio::io::ReadHalf<S>;
    type W = tokio::io::WriteHalf<S>;
    fn halves(self) -> (Self::R, Self::W) {
        tokio::io::split(self.stream)
    }
    fn addrs(&self) -> Addrs {
        self.addrs
    }
}

/// Any other stream, split by tokio (the halves share a lock).
pub(crate) struct Joined<S>(pub(crate) S);

impl<S: AsyncRead + AsyncWrite + Send + Unpin + 'static> Halves for Joined<S> {
    type R = tokio::io::ReadHalf<S>;
    type W = tokio::io::WriteHalf<S>;
    fn halves(self) -> (Self::R, Self::W) {
        tokio::io::split(self.0)
    }
}

/// Two sessions over an in-memory stream with a config each (tests).
#[cfg(all(test, feature = "postcard"))]
pub(crate) fn test_pair(a: crate::Config, b: crate::Config) -> (crate::Session, crate::Session) {
    let (x, y) = tokio::io::duplex(64 << 10);
    (
        crate::Session::connect_stream(x, a),
        crate::Session::accept_stream(y, b),
    )
}
