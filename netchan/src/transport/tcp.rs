//! TCP, with TLS over it when the config asks for it: dial, listen and
//! accept, each giving a byte stream and, on TLS, the peer's identity.
//! No Nagle (the writer batches frames itself), TCP keepalive as a second
//! line behind the protocol's own pings, and a bound on what the kernel
//! holds unsent, so that frames queue where the connection can still
//! reorder them.
//!
//! Knows nothing of frames, connections or sessions.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};

#[cfg(feature = "tls")]
use super::{Addressed, Addrs};
use crate::Config;
use crate::error::Error;

pub(crate) fn tune(stream: &TcpStream, cfg: &Config) -> Result<(), Error> {
    stream.set_nodelay(true)?;
    let sock = socket2::SockRef::from(stream);
    let ka =
        socket2::TcpKeepalive::new().with_time(cfg.limits.keepalive.max(Duration::from_secs(1)));
    sock.set_tcp_keepalive(&ka)?;
    // Keep at most this much written but not yet sent in the kernel: the
    // rest waits in the connection's own queue, where a small message on
    // another channel can still pass the chunks of a large one. Without
    // it, megabytes of a large message sit in the socket's buffer ahead
    // of every later frame. Best effort: a kernel without the option
    // just buffers more.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = sock.set_tcp_notsent_lowat(NOTSENT_LOWAT);
    Ok(())
}

/// Bytes the kernel may hold unsent per connection (`TCP_NOTSENT_LOWAT`).
#[cfg(any(target_os = "linux", target_os = "android"))]
const NOTSENT_LOWAT: u32 = 512 << 10;

/// A dialled connection: plain TCP, or TLS and the server's identity.
// Lives only until it is moved into the driver: no box needed.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Dialed {
    Tcp(TcpStream),
    #[cfg(feature = "tls")]
    Tls(
        Addressed<tokio_rustls::client::TlsStream<TcpStream>>,
        Option<super::tls::PeerIdentity>,
    ),
}

/// Connects to `addr`, over TLS if `cfg` has a client TLS config.
/// `trying` is set to each address as it is tried, so a caller that gives
/// up can say where it was connecting to.
pub(crate) async fn dial(
    addr: impl ToSocketAddrs,
    cfg: &Config,
    trying: &mut Option<SocketAddr>,
) -> Result<Dialed, Error> {
    let stream = connect(addr, trying).await?;
    tune(&stream, cfg)?;
    #[cfg(feature = "tls")]
    if let Some(tls) = cfg.tls_client.clone() {
        let addrs = Addrs::of(&stream);
        let (connector, name) = tls.connector()?;
        let mut stream = connector
            .connect(name, stream)
            .await
            .map_err(|e| super::tls::explain("client", None, e))?;
        super::tls::tune(stream.get_mut().1);
        let peer = super::tls::PeerIdentity::of_stream(stream.get_ref().1);
        return Ok(Dialed::Tls(Addressed { stream, addrs }, peer));
    }
    Ok(Dialed::Tcp(stream))
}

/// Connects to the first address `addr` resolves to that accepts (as
/// `TcpStream::connect` does), setting `trying` to each in turn. The
/// error names every address tried and why it failed; its kind is the
/// last failure's.
async fn connect(
    addr: impl ToSocketAddrs,
    trying: &mut Option<SocketAddr>,
) -> Result<TcpStream, Error> {
    let mut failed = Vec::new();
    for a in tokio::net::lookup_host(addr).await? {
        *trying = Some(a);
        match TcpStream::connect(a).await {
            Ok(stream) => return Ok(stream),
            Err(e) => failed.push((a, e)),
        }
    }
    Err(Error::io(cannot_connect(failed)))
}

/// The error of a dial that reached no address: "cannot connect to
/// 127.0.0.1:9: connection refused (is a netchan exporter listening
/// there?)", with the last failure as its source.
fn cannot_connect(mut failed: Vec<(SocketAddr, io::Error)>) -> io::Error {
    let Some((last_addr, last)) = failed.pop() else {
        return io::Error::new(
            io::ErrorKind::InvalidInput,
            "the address resolved to no socket address",
        );
    };
    let refused = |e: &io::Error| e.kind() == io::ErrorKind::ConnectionRefused;
    let why = |e: &io::Error| {
        if refused(e) {
            // Without the "(os error 111)" of the OS's own text.
            "connection refused".to_owned()
        } else {
            e.to_string()
        }
    };
    let mut text = String::from("cannot connect to ");
    for (a, e) in &failed {
        text.push_str(&format!("{a}: {}; ", why(e)));
    }
    text.push_str(&format!("{last_addr}: {}", why(&last)));
    if refused(&last) && failed.iter().all(|(_, e)| refused(e)) {
        text.push_str(" (is a netchan exporter listening there?)");
    }
    io::Error::new(last.kind(), CannotConnect { text, last })
}

/// A failed dial's message, with the last OS error as its source.
#[derive(Debug)]
struct CannotConnect {
    text: String,
    last: io::Error,
}

impl std::fmt::Display for CannotConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for CannotConnect {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.last)
    }
}

/// An accepted connection: plain TCP, or TLS and the client's identity.
// Lives only until it is moved into the driver: no box needed.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Accepted {
    Tcp(TcpStream),
    #[cfg(feature = "tls")]
    Tls(
        Addressed<tokio_rustls::server::TlsStream<TcpStream>>,
        Option<super::tls::PeerIdentity>,
    ),
}

#[cfg(feature = "tls")]
type Acceptor = Option<tokio_rustls::TlsAcceptor>;
#[cfg(not(feature = "tls"))]
type Acceptor = Option<()>;

/// A TCP listener, with the TLS acceptor its config asks for.
#[derive(Debug)]
pub(crate) struct Listener {
    tcp: TcpListener,
    local_addr: SocketAddr,
    tls: Handshake,
}

/// The accepting side's TLS handshake (none on plaintext); cheap to clone
/// into each connection's task.
#[derive(Clone)]
pub(crate) struct Handshake(Acceptor);

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Handshake")
            .field(&if self.0.is_some() { "tls" } else { "plaintext" })
            .finish()
    }
}

impl Listener {
    /// Listens on `addr`; refuses plaintext beyond loopback unless `cfg`
    /// allows it.
    pub(crate) async fn bind(addr: impl ToSocketAddrs, cfg: &Config) -> Result<Listener, Error> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        #[cfg(feature = "tls")]
        let tls = match &cfg.tls_server {
            Some(t) => Some(t.acceptor()?),
            None => None,
        };
        #[cfg(not(feature = "tls"))]
        let tls: Option<()> = None;
        if tls.is_none() && !cfg.allow_plaintext && !local_addr.ip().is_loopback() {
            return Err(Error::Config(format!(
                "refusing to serve plaintext on {local_addr}: anyone on the network could read and forge messages; \
                 use Config::tls_server(ServerTls::new(identity)), or Config::allow_plaintext() to opt out"
            )));
        }
        Ok(Listener {
            tcp: listener,
            local_addr,
            tls: Handshake(tls),
        })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The handshake each accepted stream goes through.
    pub(crate) fn handshake(&self) -> Handshake {
        self.tls.clone()
    }

    /// The next TCP connection, tuned as `cfg` says. A failed accept (out
    /// of file descriptors and the like) is retried after a pause; a
    /// failed tuning is returned.
    pub(crate) async fn accept(&self, cfg: &Config) -> Result<(TcpStream, SocketAddr), Error> {
        let (stream, peer_addr) = loop {
            match self.tcp.accept().await {
                Ok(x) => break x,
                Err(e) => {
                    tracing::warn!(error = %e, "netchan exporter: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        tune(&stream, cfg)?;
        Ok((stream, peer_addr))
    }
}

impl Handshake {
    /// Runs the TLS handshake on an accepted stream, under `cfg`'s
    /// handshake timeout (plaintext passes through).
    pub(crate) async fn run(
        self,
        stream: TcpStream,
        peer_addr: SocketAddr,
        cfg: &Config,
    ) -> Result<Accepted, Error> {
        #[cfg(feature = "tls")]
        if let Some(acceptor) = self.0 {
            let timeout = cfg.handshake_timeout;
            let addrs = Addrs::of(&stream);
            let r = tokio::time::timeout(timeout, acceptor.accept(stream)).await;
            let mut stream = match r {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(super::tls::explain("server", Some(peer_addr), e)),
                Err(_) => {
                    return Err(Error::HandshakeTimeout {
                        timeout,
                        peer: Some(peer_addr),
                        side: crate::proto::Side::Acceptor,
                    });
                }
            };
            super::tls::tune(stream.get_mut().1);
            let peer = super::tls::PeerIdentity::of_stream(stream.get_ref().1);
            return Ok(Accepted::Tls(Addressed { stream, addrs }, peer));
        }
        #[cfg(not(feature = "tls"))]
        let _ = (self, peer_addr, cfg);
        Ok(Accepted::Tcp(stream))
    }
}
