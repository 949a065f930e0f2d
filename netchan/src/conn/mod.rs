//! The connection core: [`Conn`], the state one live connection shares
//! with its driver tasks and with every endpoint bound to it.
//!
//! `Conn` owns the protocol core behind one mutex (`inner`), the table of
//! local endpoints (which receive queue or send route each channel id
//! belongs to), the names exported on this connection and its error log.
//! It routes protocol events to endpoints (`dispatch`), sends encoded
//! messages (`send`), and runs over any byte stream (`driver`).
//!
//! It knows nothing of sockets (the driver takes any stream from
//! `transport`) and nothing of channel, session, exporter or RPC types:
//! endpoints plug in through the traits of `endpoint`, exports through
//! the registry of `exports`, handles inside messages through
//! `send::OutgoingHandle`.
//!
//! Lock order: `Conn::parked`, then `Conn::inner`, then a queue's or
//! route's lock, then `Conn::deferred`. Drop implementations never wait
//! for `inner`: they post to `deferred`, which the writer task applies
//! (the last handle's drop only tries `parked` and `inner`, to write the
//! goodbye at once: `driver::write_now`).

mod calls;
mod dispatch;
pub(crate) mod driver;
mod endpoint;
mod errors;
mod exports;
mod send;
mod stats;

pub(crate) use calls::{CallEnd, MethodCounters};
pub use calls::{CallErrors, CallSide, Latency, MethodStats};
pub(crate) use endpoint::{Endpoint, Inbound, Link, Outbound};
pub(crate) use errors::ErrorLog;
pub(crate) use exports::{Export, Exports, SenderExport};
pub(crate) use send::{LARGE_MESSAGE, OutgoingHandle, SENT_LARGE, SendOutcome};
pub use stats::{ChannelStats, Direction, SessionStats};

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{Notify, oneshot};

use crate::config::Config;
use crate::error::Error;
use crate::proto::{ChanId, CloseCode, CodecId, Connection, HandleDesc, HandleKind, Side};
use crate::transport::Addrs;
use crate::util::lock;

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// The connection's life, as the runtime sees it.
#[derive(Debug, Clone)]
pub(crate) enum Status {
    Handshaking,
    Ready,
    /// Ended: `Error::Closed` after a clean goodbye, anything else after a
    /// failure.
    Ended(Error),
}

pub(crate) struct Inner {
    pub(crate) proto: Connection,
    pub(crate) eps: rustc_hash::FxHashMap<ChanId, Endpoint>,
    opens: HashMap<ChanId, oneshot::Sender<Result<u32, Error>>>,
    /// Channels this side imported, by name, for `hangup`.
    imports: HashMap<String, Vec<ChanId>>,
    pub(crate) status: Status,
    /// Sends whose delivery was unconfirmed when the connection failed.
    pub(crate) lost_unconfirmed: u64,
}

impl Inner {
    /// Whether endpoints may still be registered (the connection has not
    /// ended).
    pub(crate) fn is_live(&self) -> bool {
        !matches!(self.status, Status::Ended(_))
    }

    /// The failure that ended the connection; `None` while it lives or
    /// after a clean end.
    pub(crate) fn end_error(&self) -> Option<Error> {
        match &self.status {
            Status::Ended(Error::Closed) | Status::Ready | Status::Handshaking => None,
            Status::Ended(e) => Some(e.clone()),
        }
    }
}

/// Work posted by code that must not take `inner` (drop handlers).
#[derive(Default)]
struct Deferred {
    closes: Vec<(ChanId, CloseCode, String)>,
    goodbye: bool,
    /// Links whose receivers took messages since the writer last looked
    /// (see [`Link::took`]). Weak: a link holds the connection, so a
    /// strong one here would keep a connection whose writer never looks
    /// again alive for ever.
    credits: Vec<std::sync::Weak<Link>>,
}
/// One connection's shared state.
pub(crate) struct Conn {
    pub(crate) inner: Mutex<Inner>,
    deferred: Mutex<Deferred>,
    pub(crate) write_notify: Notify,
    /// The writer's stream while the writer sleeps (see
    /// [`driver::write_now`]).
    pub(crate) parked: Mutex<Option<driver::Parked>>,
    /// How many channel closes wait in `deferred` (read without its lock
    /// when a handle drops).
    pending_closes: AtomicUsize,
    /// Set when the writer has been woken and not yet looked: saves a
    /// wake-up per message when many are sent in a burst.
    writer_kicked: AtomicBool,
    /// Woken on status changes and delivery confirmations.
    pub(crate) changed: Notify,
    pub(crate) draining: AtomicUsize,
    pub(crate) codec: CodecId,
    pub(crate) rt: tokio::runtime::Handle,
    users: AtomicUsize,
    closing: AtomicBool,
    /// Cancelled when this side asks for a clean close: a read pending
    /// since before then starts over under the close timeout.
    pub(crate) close_asked: tokio_util::sync::CancellationToken,
    pub(crate) errors: Arc<ErrorLog>,
    /// The exporter's error log, for sessions it accepted.
    pub(crate) parent_errors: Option<Arc<ErrorLog>>,
    pub(crate) exports: Arc<Exports>,
    pub(crate) shared_exports: Option<Arc<Exports>>,
    pub(crate) config: Config,
    pub(crate) id: u64,
    /// When the connection started (for its stats).
    pub(crate) created: std::time::Instant,
    /// Per-method RPC counters (recorded by the RPC layer).
    pub(crate) calls: calls::CallTable,
    pub(crate) side: Side,
    /// Both ends' socket addresses, where the stream has them.
    pub(crate) addrs: Addrs,
    /// Services this session serves (used by the RPC layer).
    pub(crate) driver_done: Notify,
    pub(crate) driver_ended: AtomicBool,
    /// Cancelled when the connection failed: the driver stops waiting on
    /// the stream.
    pub(crate) dead: tokio_util::sync::CancellationToken,
    /// The peer's certificate, on a TLS session.
    #[cfg(feature = "tls")]
    pub(crate) peer: std::sync::OnceLock<crate::tls::PeerIdentity>,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.id)
            .field("side", &self.side)
            .field("peer", &self.addrs.peer)
            .finish_non_exhaustive()
    }
}

/// A counted reference to a connection: while any exists, the connection
/// stays up; when the last goes, it closes cleanly.
pub(crate) struct ConnRef(Arc<Conn>);

impl ConnRef {
    pub(crate) fn new(conn: &Arc<Conn>) -> ConnRef {
        conn.users.fetch_add(1, Ordering::AcqRel);
        ConnRef(conn.clone())
    }

    pub(crate) fn conn(&self) -> &Arc<Conn> {
        &self.0
    }

    pub(crate) fn same(&self, other: &ConnRef) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Clone for ConnRef {
    fn clone(&self) -> ConnRef {
        ConnRef::new(&self.0)
    }
}

impl Drop for ConnRef {
    fn drop(&mut self) {
        let left = self.0.users.fetch_sub(1, Ordering::AcqRel) - 1;
        if left == 0 {
            self.0.request_close();
            // The goodbye reaches the socket now, not when the writer task
            // next runs: a program returning from `main` drops its runtime,
            // and with it that task, right after this.
            driver::write_now(&self.0);
        } else {
            self.0.maybe_last_handles(left);
        }
    }
}

impl fmt::Debug for ConnRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnRef({})", self.0.id)
    }
}

/// Handles of a received message not yet decoded. Whatever decoding does
/// not claim is closed when this drops.
pub(crate) struct HandleGuard {
    pub(crate) conn: Arc<Conn>,
    handles: Vec<Option<HandleDesc>>,
}

impl HandleGuard {
    /// Takes entry `idx` of the handle table, which must be a `want`
    /// (decoding a handle claims it; what nobody claims closes on drop).
    pub(crate) fn claim(&mut self, idx: u32, want: HandleKind) -> Result<HandleDesc, String> {
        let slot = self
            .handles
            .get_mut(idx as usize)
            .ok_or_else(|| format!("handle index {idx} outside the table"))?;
        let desc = slot
            .take()
            .ok_or_else(|| format!("handle {idx} used twice"))?;
        if desc.kind != want {
            *slot = Some(desc);
            return Err(format!(
                "handle {idx} is a {:?} where a {want:?} was expected",
                desc.kind
            ));
        }
        Ok(desc)
    }
}

impl Drop for HandleGuard {
    fn drop(&mut self) {
        for h in self.handles.iter().flatten() {
            let code = match h.kind {
                HandleKind::Sender => CloseCode::Done,
                HandleKind::Receiver => CloseCode::ReceiverGone,
            };
            self.conn.defer_close(h.chan, code, "handle dropped unused");
        }
    }
}

impl Conn {
    pub(crate) fn new(
        side: Side,
        config: Config,
        addrs: Addrs,
        shared_exports: Option<Arc<Exports>>,
        parent_errors: Option<Arc<ErrorLog>>,
    ) -> Arc<Conn> {
        let proto = Connection::new(side, config.limits.clone(), config.codec, Instant::now());
        Arc::new(Conn {
            inner: Mutex::new(Inner {
                proto,
                eps: rustc_hash::FxHashMap::default(),
                opens: HashMap::new(),
                imports: HashMap::new(),
                status: Status::Handshaking,
                lost_unconfirmed: 0,
            }),
            deferred: Mutex::new(Deferred::default()),
            write_notify: Notify::new(),
            parked: Mutex::new(None),
            pending_closes: AtomicUsize::new(0),
            writer_kicked: AtomicBool::new(false),
            changed: Notify::new(),
            draining: AtomicUsize::new(0),
            codec: config.codec,
            rt: tokio::runtime::Handle::current(),
            users: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            close_asked: tokio_util::sync::CancellationToken::new(),
            errors: ErrorLog::new(),
            parent_errors,
            exports: Exports::new(),
            shared_exports,
            config,
            id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
            created: std::time::Instant::now(),
            calls: calls::CallTable::default(),
            side,
            addrs,
            driver_done: Notify::new(),
            driver_ended: AtomicBool::new(false),
            dead: tokio_util::sync::CancellationToken::new(),
            #[cfg(feature = "tls")]
            peer: std::sync::OnceLock::new(),
        })
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    pub(crate) fn log_error(&self, e: Error) {
        tracing::debug!(conn = self.id, peer = %self.peer_label(), error = %e, "netchan session error");
        self.errors.push(e.clone());
        if let Some(p) = &self.parent_errors {
            p.push(e);
        }
    }

    /// The peer's address for log lines ("-" when the stream has none).
    pub(crate) fn peer_label(&self) -> impl fmt::Display + use<> {
        struct Peer(Option<std::net::SocketAddr>);
        impl fmt::Display for Peer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.0 {
                    Some(a) => write!(f, "{a}"),
                    None => f.write_str("-"),
                }
            }
        }
        Peer(self.addrs.peer)
    }

    /// The error a handshake that did not finish in time ends with.
    pub(crate) fn handshake_timeout(&self) -> Error {
        Error::HandshakeTimeout {
            timeout: self.config.handshake_timeout,
            peer: self.addrs.peer,
            side: self.side,
        }
    }

    /// Wakes the writer (once per burst).
    pub(crate) fn kick(&self) {
        if !self.writer_kicked.swap(true, Ordering::AcqRel) {
            self.write_notify.notify_one();
        }
    }

    /// Called by the writer before it takes the transmit buffer.
    pub(crate) fn writer_awake(&self) {
        self.writer_kicked.store(false, Ordering::Release);
    }

    /// Asks the writer to close `chan` (from a drop handler).
    pub(crate) fn defer_close(&self, chan: ChanId, code: CloseCode, reason: &str) {
        {
            let mut d = lock(&self.deferred);
            d.closes.push((chan, code, reason.to_owned()));
            self.pending_closes.store(d.closes.len(), Ordering::Release);
        }
        self.kick();
        self.maybe_last_handles(self.users.load(Ordering::Acquire));
    }

    /// Called as handles go, with `users` left: if every one of them may
    /// be a channel link that the closes waiting for the writer release
    /// (the program is dropping its last handles, as when `main`
    /// returns), closing them may end the connection, so write now rather
    /// than leave the goodbye to a writer task that the runtime may drop
    /// before it runs.
    fn maybe_last_handles(&self, users: usize) {
        let pending = self.pending_closes.load(Ordering::Acquire);
        if pending > 0 && users <= pending {
            driver::write_now(self);
        }
    }

    /// Waits until both driver tasks ended.
    pub(crate) async fn wait_driver_done(&self) {
        loop {
            let notified = self.driver_done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.driver_ended.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// Whether this side started a clean close.
    pub(crate) fn closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Starts a clean close without waiting (the last handle went away).
    pub(crate) fn request_close(&self) {
        if !self.closing.swap(true, Ordering::AcqRel) {
            lock(&self.deferred).goodbye = true;
            self.close_asked.cancel();
            self.kick();
        }
    }

    /// Applies deferred work; called by the writer with `inner` held.
    pub(crate) fn apply_deferred(&self, inner: &mut Inner) {
        let d = {
            let mut d = lock(&self.deferred);
            self.pending_closes.store(0, Ordering::Release);
            std::mem::take(&mut *d)
        };
        for link in d.credits.iter().filter_map(std::sync::Weak::upgrade) {
            let (grant, taken) = link.take_batch();
            if grant > 0 || taken > 0 {
                inner.proto.credit_update(link.chan, grant, taken);
            }
        }
        for (chan, code, reason) in d.closes {
            inner.proto.close(chan, code, &reason);
            if let Some(Endpoint::In(q, link)) = inner.eps.remove(&chan) {
                // Closed from this side (hangup, count reached): the
                // receiver ends cleanly after what it already has.
                q.link_ended(&link, None);
            }
        }
        if d.goodbye {
            inner.proto.goodbye("");
        }
    }

    /// Hands `link`'s batch of takes to the writer, which applies it
    /// before its next transmit (see [`Link::took`]).
    pub(crate) fn post_credit(&self, link: &Arc<Link>, wake: bool) {
        lock(&self.deferred).credits.push(Arc::downgrade(link));
        if wake {
            self.kick();
        }
    }

    /// The program took a message from `chan` (`taken`) and `grant` slots
    /// are free: both go to the peer at the writer's next transmit.
    pub(crate) fn credit_update(&self, chan: ChanId, grant: u32, taken: u32) {
        let mut inner = self.lock();
        inner.proto.credit_update(chan, grant, taken);
        drop(inner);
        self.kick();
    }

    pub(crate) fn rendezvous_grant(&self, chan: ChanId) {
        let sent = self.lock().proto.rendezvous_grant(chan);
        if sent {
            self.kick();
        }
    }

    /// Waits until the handshake finished; the error if it failed.
    pub(crate) async fn ready(&self) -> Result<(), Error> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match &self.lock().status {
                Status::Ready => return Ok(()),
                Status::Ended(e) => return Err(e.clone()),
                Status::Handshaking => {}
            }
            notified.await;
        }
    }

    /// Whether `chan` may send now (`Some(true)`), must wait for credit
    /// (`Some(false)`), or is closed (`None`).
    pub(crate) fn has_credit(&self, chan: ChanId) -> Option<bool> {
        match self.lock().proto.can_send(chan) {
            Ok(()) => Some(true),
            Err(crate::proto::conn::SendBlock::NoCredit) => Some(false),
            Err(_) => None,
        }
    }

    /// Messages sent on `chan` and not yet confirmed received.
    pub(crate) fn unconfirmed_on(&self, chan: ChanId) -> Option<u64> {
        let inner = self.lock();
        if !inner.proto.has_channel(chan) || inner.proto.is_ended() {
            return None;
        }
        Some(inner.proto.unconfirmed_on(chan))
    }
}
