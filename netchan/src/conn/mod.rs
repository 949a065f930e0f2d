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
mod events;
mod exports;
mod send;
mod stats;

pub(crate) use calls::{CallEnd, MethodCounters};
pub use calls::{CallErrors, CallSide, Latency, MethodStats};
pub(crate) use dispatch::{Run, Smalls};
pub(crate) use endpoint::{Endpoint, Inbound, Link, Outbound};
pub(crate) use errors::ErrorLog;
pub use events::SessionEvent;
pub(crate) use exports::{Export, Exports, SenderExport};
pub(crate) use send::{LARGE_MESSAGE, OutgoingHandle, SENT_LARGE, SendOutcome, aside};
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
    /// The current link (`driver::LinkCtl`): bumped by each resume, so a
    /// link given up can tell it no longer speaks for the connection.
    pub(crate) link_epoch: u64,
    /// Cancels the current link's tasks (a resume gives the old link up at
    /// once, even if its stream still looks open).
    pub(crate) link_dead: Option<tokio_util::sync::CancellationToken>,
    /// Times the session resumed.
    pub(crate) resumes: u64,
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
    /// The buffer of the last large message written whole, emptied, and
    /// when it was kept: the next large message is encoded into it (see
    /// [`Conn::take_send_spare`]).
    send_spare: Mutex<Vec<(bytes::BytesMut, Instant)>>,
    /// Whether `send_spare` holds one (read without its lock).
    has_send_spare: AtomicBool,
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
    /// Subscribers of `Session::events`.
    pub(crate) events: events::Events,
    /// Holds a permit each time a resumable session's link goes down
    /// (the redialler waits on it).
    pub(crate) link_down: Notify,
    /// Cancelled when the connection ended, cleanly or not.
    pub(crate) ended: tokio_util::sync::CancellationToken,
}

/// Whether a new connection may be resumed after a broken link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resume {
    /// No: a broken link ends it.
    Off,
    /// Dialer: ask the acceptor for a resumable session.
    Ask,
    /// Acceptor: offer a resumable session with this secret token (it is
    /// resumable if the dialer's hello asks for it).
    Offer([u8; 16]),
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
        resume: Resume,
    ) -> Arc<Conn> {
        let (limits, codec, now) = (config.limits.clone(), config.codec, Instant::now());
        let proto = match resume {
            Resume::Off => Connection::new(side, limits, codec, now),
            Resume::Ask => Connection::dial_resumable(limits, codec, now),
            Resume::Offer(token) => Connection::accept_resumable(limits, codec, now, token),
        };
        Arc::new(Conn {
            inner: Mutex::new(Inner {
                proto,
                eps: rustc_hash::FxHashMap::default(),
                opens: HashMap::new(),
                imports: HashMap::new(),
                status: Status::Handshaking,
                lost_unconfirmed: 0,
                link_epoch: 1,
                link_dead: None,
                resumes: 0,
            }),
            deferred: Mutex::new(Deferred::default()),
            write_notify: Notify::new(),
            parked: Mutex::new(None),
            pending_closes: AtomicUsize::new(0),
            writer_kicked: AtomicBool::new(false),
            send_spare: Mutex::new(Vec::new()),
            has_send_spare: AtomicBool::new(false),
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
            events: events::Events::new(),
            link_down: Notify::new(),
            ended: tokio_util::sync::CancellationToken::new(),
        })
    }

    /// A resumable session's link went down with `e`: tells the events'
    /// subscribers and whoever brings the link back (the dialer's
    /// redialler; on the accepting side, the grace timer starts).
    pub(crate) fn suspended(self: &Arc<Self>, e: Error) {
        self.events.emit(SessionEvent::Disconnected(e));
        self.link_down.notify_one();
        if self.side == Side::Acceptor {
            let epoch = self.lock().link_epoch;
            let grace = self.config.resume_grace;
            let weak = Arc::downgrade(self);
            let close_asked = self.close_asked.clone();
            self.rt.spawn(async move {
                // Closing a session whose peer is away cannot say goodbye:
                // it is lost at once.
                tokio::select! {
                    () = tokio::time::sleep(grace) => {}
                    () = close_asked.cancelled() => {}
                }
                if let Some(conn) = weak.upgrade() {
                    conn.expire(epoch, grace);
                }
            });
        }
    }

    /// The grace period of link `epoch` passed: if the session is still
    /// suspended on it, it is lost.
    fn expire(self: &Arc<Self>, epoch: u64, grace: std::time::Duration) {
        {
            let inner = self.lock();
            if inner.link_epoch != epoch || !inner.proto.is_suspended() || !inner.is_live() {
                return;
            }
        }
        self.lose(Error::ConnectionLost(if self.closing() {
            "the session was closed while its peer was away".to_owned()
        } else {
            format!("the peer did not resume the session within its grace period of {grace:?}")
        }));
    }

    /// A suspended session will not resume: it fails with `e` as a broken
    /// connection does without resume (values given back, receivers get
    /// the error, `drain` counts what was unconfirmed).
    pub(crate) fn lose(self: &Arc<Self>, e: Error) {
        tracing::warn!(
            conn = self.id,
            peer = %self.peer_label(),
            side = ?self.side,
            reason = %e,
            "netchan: session lost"
        );
        driver::fail(self, e);
        driver::finish_conn(self);
    }

    /// Attaches `stream` as the new link of this suspended session, whose
    /// peer (redialling) received `position` bytes of this side's stream.
    /// The resume hello and the replay go out first.
    pub(crate) fn resume_accepted<S: crate::transport::Halves>(
        self: &Arc<Self>,
        stream: S,
        position: u64,
        rest: bytes::BytesMut,
    ) -> Result<(), (Error, S)> {
        let epoch = {
            let mut inner = self.lock();
            if !inner.is_live() || self.closing() {
                return Err((Error::Closed, stream));
            }
            let was_up = !inner.proto.is_suspended();
            if let Err(error) = inner.proto.accept_resume(position, Instant::now()) {
                let e = Error::Protocol {
                    origin: crate::error::Origin::Remote,
                    error,
                };
                return Err((e, stream));
            }
            inner.link_epoch += 1;
            inner.resumes += 1;
            if was_up {
                // The peer found the old link dead before this side did.
                self.events
                    .emit(SessionEvent::Disconnected(Error::ConnectionLost(
                        "the peer resumed the session over a new connection".into(),
                    )));
            }
            inner.link_epoch
        };
        self.resumed();
        driver::spawn_link(self.clone(), stream, epoch, rest, None);
        self.kick();
        Ok(())
    }

    /// Dialer, suspended: attaches `stream` as a new link and sends the
    /// resume hello over it. The outcome arrives as `Event::Resumed`, a
    /// failure of the connection (refused), or the link going down again.
    pub(crate) fn resume_dialed<S: crate::transport::Halves>(self: &Arc<Self>, stream: S) -> bool {
        let epoch = {
            let mut inner = self.lock();
            if !inner.is_live() || !inner.proto.begin_resume(Instant::now()) {
                return false;
            }
            inner.link_epoch += 1;
            inner.link_epoch
        };
        driver::spawn_link(self.clone(), stream, epoch, bytes::BytesMut::new(), None);
        self.kick();
        true
    }

    /// The session resumed over a new link.
    pub(crate) fn resumed(&self) {
        tracing::info!(
            conn = self.id,
            peer = %self.peer_label(),
            side = ?self.side,
            "netchan: session resumed"
        );
        self.events.emit(SessionEvent::Resumed);
        self.changed.notify_waiters();
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
        // A plain load first: in a burst the writer is kicked already,
        // and a read-modify-write per message would cost a locked
        // instruction each.
        if !self.writer_kicked.load(Ordering::Acquire)
            && !self.writer_kicked.swap(true, Ordering::AcqRel)
        {
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

    /// Writes the grants posted so far from this task, if the writer is
    /// asleep; else wakes it.
    pub(crate) fn credit_now(&self) {
        match self.idle_parked() {
            Some(parked) => {
                let inner = self.lock();
                self.write_through_or_kick(Some(parked), inner);
            }
            None => self.kick(),
        }
    }

    /// A rendezvous receiver waits: grants `chan`'s sender one value. The
    /// waiting task writes the grant (with the report of its last take, if
    /// still queued) itself when the writer is asleep, as a call's request
    /// does ([`driver::write_through`]): the sender waits for it, and a
    /// hand-over to the writer task would cost a wake-up (on a runtime of
    /// several workers, of another worker).
    pub(crate) fn rendezvous_grant(&self, chan: ChanId) {
        // Lock order: the parked stream, then `inner`.
        let parked = self.idle_parked();
        let mut inner = self.lock();
        if inner.proto.rendezvous_grant(chan) {
            self.write_through_or_kick(parked, inner);
        }
    }

    /// The stream the writer parked, if it sleeps with nothing of its own
    /// left to write: a task that queues something may then write it
    /// itself ([`write_through_or_kick`](Conn::write_through_or_kick)).
    /// Taken before `inner` (lock order), and only if free: a task never
    /// waits for it.
    pub(crate) fn idle_parked(&self) -> Option<std::sync::MutexGuard<'_, Option<driver::Parked>>> {
        self.parked
            .try_lock()
            .ok()
            .filter(|p| p.as_ref().is_some_and(driver::Parked::idle))
    }

    /// After queuing with `inner` held: writes what is queued through
    /// `parked` ([`driver::write_through`]) if this task holds it, and
    /// wakes the writer if it must still run (or the stream was not
    /// free).
    pub(crate) fn write_through_or_kick(
        &self,
        mut parked: Option<std::sync::MutexGuard<'_, Option<driver::Parked>>>,
        inner: std::sync::MutexGuard<'_, Inner>,
    ) {
        let wake = match parked.as_mut().and_then(|p| p.as_mut()) {
            Some(p) => driver::write_through(self, p, inner),
            None => {
                drop(inner);
                true
            }
        };
        drop(parked);
        if wake {
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

    /// Where the last message sent on rendezvous channel `chan` stands
    /// (see `proto::Connection::take_state`).
    pub(crate) fn take_state(&self, chan: ChanId) -> crate::proto::Take {
        self.lock().proto.take_state(chan)
    }

    /// The send waiting for the last message on rendezvous channel `chan`
    /// to be taken was given up.
    pub(crate) fn give_up_take(&self, chan: ChanId) {
        self.lock().proto.give_up_take(chan);
    }

    /// Takes a message of rendezvous channel `chan` out of the receiving
    /// buffer with `take` (which gives `None` if it is no longer there)
    /// and reports the take, both under the connection's lock: so the
    /// take and its report are one step for the channel's `CLOSE` and the
    /// connection's end, which drop the messages not taken.
    pub(crate) fn take_rendezvous<R>(
        &self,
        chan: ChanId,
        take: impl FnOnce() -> Option<R>,
    ) -> Option<R> {
        let mut inner = self.lock();
        let got = take()?;
        inner.proto.credit_update(chan, 0, 1);
        drop(inner);
        self.kick();
        Some(got)
    }
}
