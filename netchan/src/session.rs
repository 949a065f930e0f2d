//! [`Session`]: the public handle of one connection. Imports and exports
//! by name (with type and direction checks), hangup, drain, the error
//! stream and close; the connection itself is `conn::Conn`.
//!
//! It owns no connection state: the connection is `conn`'s, dialling is
//! `transport`'s, and `Session::serve` lives with RPC in `rpc::serve`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::channel::route::{Member, Route};
use crate::channel::{Receiver, Sender};
use crate::config::Config;
use crate::conn::{
    Conn, ConnRef, Endpoint, ErrorLog, Export, Exports, Inbound, Link, Resume, SessionEvent,
    SessionStats, Status,
};
use crate::error::Error;
use crate::proto::{Dir, Side};
use crate::transport::tcp::{self, Dialed};
use crate::transport::{Halves, Joined};
use crate::{Message, codec};

/// One connection: a cheap, cloneable handle. Either end may export,
/// import, serve and call.
///
/// The connection stays up while any handle to it lives (this handle, a
/// clone, or any channel half or pipe it produced), or until
/// [`close`](Session::close). When the last handle goes, it closes cleanly.
///
/// # Ending a program
///
/// Call [`close().await`](Session::close) before `main` returns: it sends
/// what is still queued, says goodbye and waits for the peer. Otherwise,
/// when `main` returns, the runtime drops the session's background tasks
/// without running them again. netchan then writes the goodbye itself, as
/// the last handle drops or at the latest as the runtime drops those
/// tasks, if the socket takes it at once: the peer sees a clean close
/// (`Error::Closed`) in the usual case. But values still waiting for
/// credit, and whatever a full socket buffer holds back (the goodbye
/// included), are lost, and the peer then reports the connection lost. A
/// session whose runtime shut down is closed, also if a handle of it is
/// kept elsewhere (a static, another runtime).
///
/// # Logging
///
/// netchan logs through [`tracing`](https://docs.rs/tracing), each line
/// with the connection's id, the peer's address and the side: `info` when
/// a connection opens (handshake done) and when it closes cleanly; `warn`
/// when a handshake or a connection fails, with the reason; `debug` for a
/// peer that goes away while this side closes, and for each error put on
/// [`errors()`](Session::errors); `trace` for per-write detail. With
/// `tracing-subscriber`, `RUST_LOG=netchan=debug` shows them.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), netchan::Error> {
/// let (server, client) = netchan::Session::pair();
/// let tx = server.export_sender::<String>("greetings")?;
/// let mut rx = client.import_receiver::<String>("greetings", 8).await?;
/// tx.send("hello".to_string()).await?;
/// assert_eq!(rx.recv().await.ok().flatten().as_deref(), Some("hello"));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Session {
    pub(crate) conn: ConnRef,
}

/// The Go name for the connecting side: an importer is a session.
pub type Importer = Session;

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let conn = self.conn.conn();
        f.debug_struct("Session")
            .field("id", &conn.id)
            .field("side", &conn.side)
            .field("peer_addr", &conn.addrs.peer)
            .field("local_addr", &conn.addrs.local)
            .finish()
    }
}

impl Session {
    pub(crate) fn from_conn(conn: &Arc<Conn>) -> Session {
        Session {
            conn: ConnRef::new(conn),
        }
    }

    pub(crate) fn conn(&self) -> &Arc<Conn> {
        self.conn.conn()
    }

    /// Connects to `addr` over TCP with the default [`Config`].
    pub async fn connect(addr: impl tokio::net::ToSocketAddrs) -> Result<Session, Error> {
        Session::connect_with(addr, Config::default()).await
    }

    /// Connects to `addr` over TCP with `cfg`; returns once the handshake
    /// completed (or failed, or `cfg`'s handshake timeout passed).
    pub async fn connect_with(
        addr: impl tokio::net::ToSocketAddrs,
        cfg: Config,
    ) -> Result<Session, Error> {
        let timeout = cfg.handshake_timeout;
        // The address being dialled (then the one connected to), for the
        // message if the peer never answers.
        let mut trying = None;
        let policy = cfg.reconnect.clone();
        let resume = if policy.is_some() {
            Resume::Ask
        } else {
            Resume::Off
        };
        let fut = async {
            // A session that may redial keeps the addresses it resolved.
            let (addrs, dialed) = if policy.is_some() {
                let addrs: Vec<std::net::SocketAddr> =
                    tokio::net::lookup_host(addr).await?.collect();
                let dialed = tcp::dial(&addrs[..], &cfg, &mut trying).await?;
                (addrs, dialed)
            } else {
                (Vec::new(), tcp::dial(addr, &cfg, &mut trying).await?)
            };
            let s = match dialed {
                Dialed::Tcp(stream) => {
                    Session::start_with(stream, Side::Dialer, cfg, None, None, resume, |_| {})
                }
                #[cfg(feature = "tls")]
                Dialed::Tls(stream, peer) => {
                    Session::start_with(stream, Side::Dialer, cfg, None, None, resume, |c| {
                        if let Some(p) = peer {
                            let _ = c.peer.set(p);
                        }
                    })
                }
            };
            s.conn().ready().await?;
            if let Some(policy) = policy {
                if s.conn().lock().proto.is_resumable() {
                    crate::redial::spawn(s.conn(), addrs, policy);
                }
            }
            Ok(s)
        };
        let r = tokio::time::timeout(timeout, fut).await;
        r.unwrap_or(Err(Error::HandshakeTimeout {
            timeout,
            peer: trying,
            side: Side::Dialer,
        }))
    }

    /// Runs a session over an already-open stream (a Unix socket, a TLS
    /// stream, a pipe) as the dialling side. The handshake runs in the
    /// background; the first import waits for it.
    pub fn connect_stream<S>(stream: S, cfg: Config) -> Session
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        Session::start(Joined(stream), Side::Dialer, cfg, None, None)
    }

    /// Like [`connect_stream`](Session::connect_stream), for the accepting side.
    pub fn accept_stream<S>(stream: S, cfg: Config) -> Session
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        Session::start(Joined(stream), Side::Acceptor, cfg, None, None)
    }

    /// Two sessions connected in memory, for tests and examples.
    ///
    /// Must be called inside a tokio runtime.
    pub fn pair() -> (Session, Session) {
        Session::pair_with(Config::default())
    }

    /// Like [`pair`](Session::pair) with a config for both ends.
    pub fn pair_with(cfg: Config) -> (Session, Session) {
        let (a, b) = tokio::io::duplex(256 << 10);
        (
            Session::start(Joined(a), Side::Dialer, cfg.clone(), None, None),
            Session::start(Joined(b), Side::Acceptor, cfg, None, None),
        )
    }

    pub(crate) fn start<S: Halves>(
        stream: S,
        side: Side,
        cfg: Config,
        shared: Option<Arc<Exports>>,
        parent_errors: Option<Arc<ErrorLog>>,
    ) -> Session {
        Session::start_with(
            stream,
            side,
            cfg,
            shared,
            parent_errors,
            Resume::Off,
            |_| {},
        )
    }

    /// Like `start`, with `init` run on the connection before its driver
    /// starts (to record what the transport learned of the peer).
    pub(crate) fn start_with<S: Halves>(
        stream: S,
        side: Side,
        cfg: Config,
        shared: Option<Arc<Exports>>,
        parent_errors: Option<Arc<ErrorLog>>,
        resume: Resume,
        init: impl FnOnce(&Conn),
    ) -> Session {
        let conn = Conn::new(side, cfg, stream.addrs(), shared, parent_errors, resume);
        init(&conn);
        let session = Session::from_conn(&conn);
        #[cfg(feature = "metrics")]
        crate::metrics::spawn_publisher(&conn);
        crate::conn::driver::spawn(conn, stream);
        session
    }

    /// Waits until the handshake completed.
    pub async fn ready(&self) -> Result<(), Error> {
        self.conn().ready().await
    }

    /// What happens to the connection from now on: `Disconnected`,
    /// `Reconnecting`, `Resumed` on a session that survives a broken
    /// connection ([`Config::reconnect`]), and `Lost` when the session
    /// ends with an error. The stream ends when the session ends.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use futures::StreamExt;
    /// let (a, b) = netchan::Session::pair();
    /// let mut events = a.events();
    /// a.close().await;
    /// assert!(events.next().await.is_none(), "a clean close ends the stream");
    /// # drop(b);
    /// # }
    /// ```
    pub fn events(&self) -> impl futures::Stream<Item = SessionEvent> + Send + Unpin + 'static {
        self.conn().events.subscribe()
    }

    /// Imports the peer's exported sender `name`: values it sends arrive
    /// here, `capacity` at a time.
    ///
    /// Fails with a clear [`Error`] if the peer has no such export, if it is
    /// a receiver, or if it carries another message type.
    pub async fn import_receiver<T: Message>(
        &self,
        name: &str,
        capacity: usize,
    ) -> Result<Receiver<T>, Error> {
        self.import_receiver_inner(name, capacity, None).await
    }

    /// Like [`import_receiver`](Session::import_receiver), but takes only
    /// `n` values, then the receiver ends (`Ok(None)`). The peer never
    /// sends more than `n` here, so no value is lost: the rest go to other
    /// importers (Go's `ImportNValues`).
    pub async fn import_receiver_n<T: Message>(
        &self,
        name: &str,
        capacity: usize,
        n: usize,
    ) -> Result<Receiver<T>, Error> {
        self.import_receiver_inner(name, capacity, Some(n as u64))
            .await
    }

    async fn import_receiver_inner<T: Message>(
        &self,
        name: &str,
        capacity: usize,
        n: Option<u64>,
    ) -> Result<Receiver<T>, Error> {
        let conn = self.conn();
        let cap =
            u32::try_from(capacity).map_err(|_| Error::Config("capacity too large".into()))?;
        let initial = match n {
            Some(n) => u64::from(cap).min(n) as u32,
            None => cap,
        };
        let queue = crate::channel::queue::Queue::<T>::new(capacity, 0, 0);
        let q2 = queue.clone();
        let grants_left = n.map(|n| n - u64::from(initial));
        let mut link_slot = None;
        let type_name = codec::type_name::<T>();
        let (_chan, _) = conn
            .open(name, Dir::OpenerReceives, initial, &type_name, |chan| {
                let link = Link::new(ConnRef::new(conn), chan, grants_left);
                q2.add_link(link.clone());
                link_slot = Some(link.clone());
                Endpoint::In(q2, link)
            })
            .await
            .inspect_err(|_| {
                if let Some(l) = &link_slot {
                    queue.link_ended(l, None);
                }
            })?;
        Ok(Receiver::from_queue(queue, n, None))
    }

    /// Imports the peer's exported receiver `name`: values sent here
    /// arrive there.
    pub async fn import_sender<T: Message>(&self, name: &str) -> Result<Sender<T>, Error> {
        let conn = self.conn();
        let type_name = codec::type_name::<T>();
        let mut route_slot = None;
        let (_chan, _cap) = conn
            .open(name, Dir::OpenerSends, 0, &type_name, |chan| {
                let route = Route::single(Member {
                    conn: ConnRef::new(conn),
                    chan,
                });
                let ep = Endpoint::outbound(&route);
                route_slot = Some(route);
                ep
            })
            .await?;
        let route = route_slot.ok_or(Error::Closed)?;
        Ok(Sender::from_route(route, None))
    }

    /// Exports a sender named `name` to this session's peer. Each value
    /// goes to exactly one of the peer's importers of `name`; a send waits
    /// while none has room.
    pub fn export_sender<T: Message>(&self, name: &str) -> Result<Sender<T>, Error> {
        let route = Route::export();
        self.conn()
            .exports
            .add(name, Export::sender::<T, _>(&route))?;
        Ok(Sender::from_route(route, Some(Arc::new(self.conn.clone()))))
    }

    /// Exports a receiver named `name` to this session's peer: whatever the
    /// peer's importers send arrives here. `capacity` slots per importer.
    pub fn export_receiver<T: Message>(
        &self,
        name: &str,
        capacity: usize,
    ) -> Result<Receiver<T>, Error> {
        let queue = crate::channel::queue::Queue::<T>::new(capacity, 0, 1);
        self.conn()
            .exports
            .add(name, Export::receiver::<T>(queue.clone()))?;
        Ok(Receiver::from_queue(
            queue,
            None,
            Some(Arc::new(self.conn.clone())),
        ))
    }

    /// Closes the channel(s) named `name` on this session: an export of
    /// that name is withdrawn (its receivers get `Ok(None)` after what was
    /// sent; its senders' sends fail), and imports of that name are closed.
    pub fn hangup(&self, name: &str) -> Result<(), Error> {
        let conn = self.conn();
        let exported = conn.exports.hangup(name);
        let imported = conn.hangup_imports(name);
        if exported || imported {
            Ok(())
        } else {
            Err(Error::NotFound(name.to_owned()))
        }
    }

    /// Waits until the peer confirmed the arrival of every value sent on
    /// this session (each is in a receiver's buffer, or was taken), or
    /// `timeout` passes. A rendezvous (capacity 0) value is confirmed when
    /// it is taken.
    ///
    /// On timeout, or if the connection fails first, the error counts the
    /// values whose arrival was never confirmed.
    pub async fn drain(&self, timeout: Option<Duration>) -> Result<(), Error> {
        let conn = self.conn();
        conn.draining.fetch_add(1, Ordering::AcqRel);
        let wait = async {
            loop {
                let notified = conn.changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                {
                    let inner = conn.lock();
                    if let Status::Ended(e) = &inner.status {
                        if inner.lost_unconfirmed == 0 {
                            return Ok(());
                        }
                        return Err(Error::Undelivered {
                            count: inner.lost_unconfirmed,
                            why: e.to_string(),
                        });
                    }
                    if inner.proto.unconfirmed() == 0 {
                        return Ok(());
                    }
                }
                notified.await;
            }
        };
        let r = match timeout {
            Some(t) => match tokio::time::timeout(t, wait).await {
                Ok(r) => r,
                Err(_) => Err(Error::Undelivered {
                    count: conn.lock().proto.unconfirmed(),
                    why: format!("timed out after {t:?}"),
                }),
            },
            None => wait.await,
        };
        conn.draining.fetch_sub(1, Ordering::AcqRel);
        r
    }

    /// Errors of this session, from its start: protocol errors, a lost
    /// connection, values that could not be decoded. The stream ends when
    /// the session has ended.
    pub fn errors(&self) -> impl futures::Stream<Item = Error> + Send + Unpin + 'static {
        self.conn().errors.stream()
    }

    /// Closes the connection cleanly: pending messages are sent, then a
    /// goodbye; waits (up to the configured close timeout) for the peer to
    /// finish. Channels of this session end: receivers get `Ok(None)`
    /// after what already arrived, sends fail.
    pub async fn close(&self) {
        let conn = self.conn();
        conn.request_close();
        let _ = tokio::time::timeout(conn.config.close_timeout, conn.wait_driver_done()).await;
    }

    /// Waits until the peer confirmed at least `target` values in total.
    pub(crate) async fn confirmed(&self, target: u64) -> Result<(), Error> {
        let conn = self.conn();
        conn.draining.fetch_add(1, Ordering::AcqRel);
        let r = loop {
            let notified = conn.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let inner = conn.lock();
                let done = inner.proto.confirmed_total();
                if done >= target {
                    break Ok(());
                }
                if let Status::Ended(e) = &inner.status {
                    break Err(Error::Undelivered {
                        count: target - done,
                        why: e.to_string(),
                    });
                }
            }
            notified.await;
        };
        conn.draining.fetch_sub(1, Ordering::AcqRel);
        r
    }

    /// The peer's certificate on a TLS session (its fingerprint and the
    /// names it carries), so a service can decide what that peer may do.
    /// `None` on a plaintext session.
    #[cfg(feature = "tls")]
    pub fn peer_identity(&self) -> Option<crate::tls::PeerIdentity> {
        self.conn().peer.get().cloned()
    }

    /// Waits until the connection has ended (either side closed it, or it
    /// failed) and returns why: `Error::Closed` for a clean end.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (a, b) = netchan::Session::pair();
    /// let watcher = tokio::spawn(async move { b.closed().await });
    /// a.close().await;
    /// assert!(matches!(watcher.await.unwrap(), netchan::Error::Closed));
    /// # }
    /// ```
    pub async fn closed(&self) -> Error {
        let conn = self.conn();
        loop {
            let notified = conn.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Status::Ended(e) = &conn.lock().status {
                return e.clone();
            }
            notified.await;
        }
    }

    /// The peer's socket address: where this session dialled, or where an
    /// exporter's session came from. `None` for sessions without one
    /// ([`Session::pair`], [`connect_stream`](Session::connect_stream),
    /// [`accept_stream`](Session::accept_stream)).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), netchan::Error> {
    /// let exp = netchan::Exporter::bind("127.0.0.1:0").await?;
    /// let session = netchan::Session::connect(exp.local_addr()).await?;
    /// assert_eq!(session.peer_addr(), Some(exp.local_addr()));
    ///
    /// let (a, _b) = netchan::Session::pair();
    /// assert_eq!(a.peer_addr(), None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.conn().addrs.peer
    }

    /// This side's socket address on the connection; `None` where
    /// [`peer_addr`](Session::peer_addr) is.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), netchan::Error> {
    /// let exp = netchan::Exporter::bind("127.0.0.1:0").await?;
    /// let client = netchan::Session::connect(exp.local_addr()).await?;
    /// let local = client.local_addr().expect("a TCP session has one");
    /// assert!(local.ip().is_loopback());
    /// # Ok(())
    /// # }
    /// ```
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.conn().addrs.local
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        matches!(self.conn().lock().status, Status::Ended(_))
    }

    /// Number of channels open on this connection.
    pub fn channel_count(&self) -> usize {
        self.conn().lock().proto.channel_count()
    }

    /// What the connection and each of its channels are doing now: bytes
    /// and frames each way, and per channel its direction, capacity,
    /// queued values, credit, messages and bytes, and how long senders
    /// waited for room. Cheap enough to call every second: it reads
    /// counters the connection keeps anyway.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), netchan::Error> {
    /// use netchan::{Direction, Session};
    /// let (a, b) = Session::pair();
    /// let tx = a.export_sender::<String>("news")?;
    /// let _rx = b.import_receiver::<String>("news", 4).await?;
    /// tx.send("hello".into()).await.ok();
    /// a.drain(None).await?;
    /// let stats = b.stats();
    /// let news = stats.named("news").next().expect("the channel");
    /// assert_eq!((news.direction, news.messages, news.queued), (Direction::Receiving, 1, 1));
    /// assert!(stats.bytes_received > 0);
    /// # Ok(()) }
    /// ```
    pub fn stats(&self) -> SessionStats {
        self.conn().stats()
    }
}
