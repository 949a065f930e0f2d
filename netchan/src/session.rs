//! [`Session`]: the public handle of one connection, and [`Conn`], the
//! state it shares with the driver tasks and with every channel bound to
//! the connection.
//!
//! `Conn` owns the protocol core behind one mutex (`inner`), the table of
//! local endpoints (which queue or route each channel id belongs to), the
//! session's own exports and its error log. It knows nothing of sockets:
//! the driver (`crate::driver`) feeds it bytes and takes bytes from it.
//!
//! Lock order: `Conn::inner`, then a queue's or route's lock, then
//! `Conn::deferred`. Drop implementations never take `inner`: they post
//! to `deferred`, which the writer task applies.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::sync::{Notify, oneshot};

use crate::channel::queue::{Inbound, Link};
use crate::channel::route::{Member, Route};
use crate::channel::{Receiver, Sender, embed};
use crate::config::Config;
use crate::error::Error;
use crate::export::{Export, Exports};
use crate::proto::conn::FinishError;
use crate::proto::{
    ChanId, CloseCode, CodecId, Connection, Dir, Event, HandleDesc, HandleKind, RejectCode, Side,
};
use crate::transport::{Halves, Joined};
use crate::util::lock;
use crate::{Message, codec};

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// Where a channel id leads on this side.
pub(crate) enum Endpoint {
    /// We receive: messages go to this queue through this link.
    In(Arc<dyn Inbound>, Arc<Link>),
    /// We send: credit wakes this route.
    Out(Weak<Route>),
    /// A handle that arrived in a message not yet decoded.
    Adopted,
}

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
    lost_unconfirmed: u64,
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
}

/// An error log: a bounded history that any number of `errors()` streams
/// read from the start.
#[derive(Debug)]
pub(crate) struct ErrorLog {
    st: Mutex<LogState>,
    notify: Notify,
}

#[derive(Debug, Default)]
struct LogState {
    list: std::collections::VecDeque<Error>,
    /// Index of `list[0]` in the whole history.
    base: u64,
    ended: bool,
}

const ERROR_LOG_KEEP: usize = 256;

impl ErrorLog {
    pub(crate) fn new() -> Arc<ErrorLog> {
        Arc::new(ErrorLog {
            st: Mutex::new(LogState::default()),
            notify: Notify::new(),
        })
    }

    pub(crate) fn push(&self, e: Error) {
        let mut st = lock(&self.st);
        if st.list.len() == ERROR_LOG_KEEP {
            st.list.pop_front();
            st.base += 1;
        }
        st.list.push_back(e);
        drop(st);
        self.notify.notify_waiters();
    }

    pub(crate) fn end(&self) {
        lock(&self.st).ended = true;
        self.notify.notify_waiters();
    }

    /// A stream of every error logged, from the oldest kept, ending when
    /// the log ends.
    pub(crate) fn stream(
        self: &Arc<Self>,
    ) -> impl futures::Stream<Item = Error> + Send + Unpin + 'static {
        let log = self.clone();
        Box::pin(futures::stream::unfold(
            (log, 0u64),
            |(log, mut next)| async move {
                let found = loop {
                    let notified = log.notify.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    {
                        let st = lock(&log.st);
                        if next < st.base {
                            next = st.base;
                        }
                        let i = (next - st.base) as usize;
                        if let Some(e) = st.list.get(i) {
                            break Some(e.clone());
                        }
                        if st.ended {
                            break None;
                        }
                    }
                    notified.await;
                };
                found.map(|e| (e, (log, next + 1)))
            },
        ))
    }
}

/// One connection's shared state.
pub(crate) struct Conn {
    pub(crate) inner: Mutex<Inner>,
    deferred: Mutex<Deferred>,
    pub(crate) write_notify: Notify,
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
    pub(crate) errors: Arc<ErrorLog>,
    /// The exporter's error log, for sessions it accepted.
    pub(crate) parent_errors: Option<Arc<ErrorLog>>,
    pub(crate) exports: Arc<Exports>,
    pub(crate) shared_exports: Option<Arc<Exports>>,
    pub(crate) config: Config,
    pub(crate) id: u64,
    pub(crate) side: Side,
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
        if self.0.users.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.request_close();
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
    pub(crate) handles: Vec<Option<HandleDesc>>,
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

/// Result of one attempt to send on one channel.
pub(crate) enum SendOutcome {
    /// Sent; `true` when the channel is a rendezvous (capacity 0), so the
    /// send completes only once the peer confirms it was taken.
    Sent(bool),
    NoCredit,
    Closed,
    Invalid(Error),
}

thread_local! {
    /// Where messages are encoded before they enter a connection.
    static SCRATCH: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
}

/// A scratch buffer larger than this is not kept for the next message.
const SCRATCH_KEEP: usize = 256 << 10;

impl Conn {
    pub(crate) fn new(
        side: Side,
        config: Config,
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
            writer_kicked: AtomicBool::new(false),
            changed: Notify::new(),
            draining: AtomicUsize::new(0),
            codec: config.codec,
            rt: tokio::runtime::Handle::current(),
            users: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            errors: ErrorLog::new(),
            parent_errors,
            exports: Exports::new(),
            shared_exports,
            config,
            id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
            side,
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
        tracing::debug!(conn = self.id, error = %e, "netchan session error");
        self.errors.push(e.clone());
        if let Some(p) = &self.parent_errors {
            p.push(e);
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
        lock(&self.deferred)
            .closes
            .push((chan, code, reason.to_owned()));
        self.kick();
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
            self.kick();
        }
    }

    /// Applies deferred work; called by the writer with `inner` held.
    pub(crate) fn apply_deferred(&self, inner: &mut Inner) {
        let d = std::mem::take(&mut *lock(&self.deferred));
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

    pub(crate) fn credit_update(&self, chan: ChanId, grant: u32, taken: u32, urgent: bool) {
        let mut inner = self.lock();
        inner.proto.credit_update(chan, grant, taken, urgent);
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

    /// Encodes `value` as one message on `chan`, if it has credit.
    ///
    /// The value is encoded outside the connection's lock, into a buffer
    /// kept per thread, so a large message holds up neither the reader nor
    /// other senders; a message larger than a chunk then moves into the
    /// connection without a copy.
    pub(crate) fn send_value<T: Message>(self: &Arc<Self>, chan: ChanId, value: &T) -> SendOutcome {
        // A sender without credit must not pay for encoding.
        if let Some(out) = Self::blocked(&self.lock(), chan) {
            return out;
        }
        let mut buf = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
        buf.clear();
        let scope = embed::EncodeScope::enter();
        let r = codec::encode(self.codec, value, &mut buf);
        let handles = scope.finish();
        let out = match r {
            Ok(()) => self.send_encoded::<T>(chan, &mut buf, handles),
            Err(e) => {
                drop(handles);
                let e = Error::Codec(format!("cannot encode a {}: {e}", codec::type_name::<T>()));
                self.log_error(e.clone());
                SendOutcome::Invalid(e)
            }
        };
        if buf.capacity() <= SCRATCH_KEEP {
            SCRATCH.with(|s| *s.borrow_mut() = buf);
        }
        out
    }

    /// Sends `body`, encoded with `codec` and carrying no channel handles,
    /// on `chan`; `None` if this connection uses another codec (the caller
    /// then encodes the value for it). `body` is left as it was unless the
    /// message was sent.
    pub(crate) fn send_body<T>(
        self: &Arc<Self>,
        chan: ChanId,
        codec: crate::proto::CodecId,
        body: &mut BytesMut,
    ) -> Option<SendOutcome> {
        (codec == self.codec).then(|| self.send_encoded::<T>(chan, body, Vec::new()))
    }

    /// Why `chan` cannot take a message now, if it cannot.
    fn blocked(inner: &Inner, chan: ChanId) -> Option<SendOutcome> {
        match inner.proto.can_send(chan) {
            Ok(()) => None,
            Err(crate::proto::conn::SendBlock::NoCredit) => Some(SendOutcome::NoCredit),
            Err(_) => Some(SendOutcome::Closed),
        }
    }

    /// Sends the encoded `body` with `handles` on `chan`.
    fn send_encoded<T>(
        self: &Arc<Self>,
        chan: ChanId,
        body: &mut BytesMut,
        handles: Vec<embed::OutHandle>,
    ) -> SendOutcome {
        let mut inner = self.lock();
        // Credit may have gone to another sender meanwhile.
        if let Some(out) = Self::blocked(&inner, chan) {
            return out;
        }
        let n = handles.len();
        // The protocol's own check, before any handle's channel exists.
        let refuse = match inner.proto.check_message(body.len(), n) {
            Err(FinishError::TooLarge { size, limit }) => {
                Some(Error::MessageTooLarge { size, limit })
            }
            Err(FinishError::TooManyHandles { count, limit }) => Some(Error::Codec(format!(
                "{count} channel handles in one message exceed the limit of {limit}"
            ))),
            Ok(_)
                if n > 0
                    && inner.proto.channel_count() + n
                        > inner.proto.limits().max_channels.min(
                            inner
                                .proto
                                .peer()
                                .map_or(usize::MAX, |p| p.max_channels as usize),
                        ) =>
            {
                Some(Error::TooManyChannels(inner.proto.limits().max_channels))
            }
            Ok(_) => None,
        };
        if let Some(e) = refuse {
            drop(inner);
            drop(handles);
            self.log_error(e.clone());
            return SendOutcome::Invalid(e);
        }
        let mut descs = Vec::with_capacity(n);
        for h in handles {
            match h.attach(&mut inner, self) {
                Some(d) => descs.push(d),
                None => {
                    for d in &descs {
                        inner.proto.forget(d.chan);
                        inner.eps.remove(&d.chan);
                    }
                    return SendOutcome::Closed;
                }
            }
        }
        let large = body.len() >= crate::channel::LARGE_MESSAGE;
        match inner.proto.send_message(chan, body, &descs) {
            Ok(()) => {
                if large {
                    crate::channel::SENT_LARGE.with(|l| l.set(true));
                }
                let rendezvous = inner.proto.capacity_of(chan) == 0;
                drop(inner);
                self.kick();
                SendOutcome::Sent(rendezvous)
            }
            Err(e) => SendOutcome::Invalid(Error::Codec(format!(
                "cannot send a {}: {e:?}",
                codec::type_name::<T>()
            ))),
        }
    }

    /// Messages sent on `chan` and not yet confirmed taken.
    pub(crate) fn unconfirmed_on(&self, chan: ChanId) -> Option<u64> {
        let inner = self.lock();
        if !inner.proto.has_channel(chan) || inner.proto.is_ended() {
            return None;
        }
        Some(inner.proto.unconfirmed_on(chan))
    }

    /// Handles one protocol event (reader task, `inner` held). Values that
    /// must be dropped without the lock are pushed to `garbage`.
    pub(crate) fn dispatch(
        self: &Arc<Self>,
        inner: &mut Inner,
        ev: Event,
        garbage: &mut Vec<Box<dyn Send>>,
    ) {
        match ev {
            Event::Ready(_) => {
                inner.status = Status::Ready;
                self.changed.notify_waiters();
            }
            Event::Open {
                chan,
                dir,
                name,
                type_name,
                ..
            } => self.on_open(inner, chan, dir, &name, &type_name),
            Event::Accepted { chan, capacity } => {
                if let Some(tx) = inner.opens.remove(&chan) {
                    let _ = tx.send(Ok(capacity));
                }
                if let Some(Endpoint::Out(route)) = inner.eps.get(&chan) {
                    if let Some(r) = route.upgrade() {
                        r.notify.notify_waiters();
                    }
                }
            }
            Event::Rejected { chan, code, reason } => {
                if let Some(ep) = inner.eps.remove(&chan) {
                    garbage.push(Box::new(ep));
                }
                if let Some(tx) = inner.opens.remove(&chan) {
                    let _ = tx.send(Err(reject_error(code, reason)));
                }
            }
            Event::Message {
                chan,
                data,
                handles,
            } => {
                let guard = if handles.is_empty() {
                    None
                } else {
                    for h in &handles {
                        inner.eps.insert(h.chan, Endpoint::Adopted);
                    }
                    Some(HandleGuard {
                        conn: self.clone(),
                        handles: handles.into_iter().map(Some).collect(),
                    })
                };
                match inner.eps.get(&chan) {
                    Some(Endpoint::In(q, link)) => {
                        if let Some(back) = q.deliver(link, data, guard) {
                            // The receiver is gone: give the credit back
                            // so the sender is not stuck, drop the rest.
                            inner.proto.credit_update(chan, 0, 1, false);
                            garbage.push(Box::new(back));
                        }
                    }
                    _ => garbage.push(Box::new(guard)),
                }
            }
            Event::Credit { chan } => {
                if let Some(Endpoint::Out(route)) = inner.eps.get(&chan) {
                    if let Some(r) = route.upgrade() {
                        r.notify.notify_waiters();
                    }
                }
                if self.draining.load(Ordering::Acquire) > 0 {
                    self.changed.notify_waiters();
                }
            }
            Event::Closed { chan, code, reason } => {
                inner.opens.remove(&chan);
                match inner.eps.remove(&chan) {
                    Some(Endpoint::In(q, link)) => {
                        let err = (code == CloseCode::Error).then(|| {
                            Error::ConnectionLost(format!("peer closed the channel: {reason}"))
                        });
                        q.link_ended(&link, err);
                        garbage.push(Box::new(link));
                    }
                    Some(Endpoint::Out(route)) => {
                        if let Some(r) = route.upgrade() {
                            r.notify.notify_waiters();
                        }
                    }
                    _ => {}
                }
                if self.draining.load(Ordering::Acquire) > 0 {
                    self.changed.notify_waiters();
                }
            }
            Event::Goodbye { reason } => {
                let e = if reason.is_empty() {
                    Error::Closed
                } else {
                    Error::PeerGoodbye(reason)
                };
                if !reason_is_clean(&e) {
                    self.log_error(e.clone());
                }
                self.end(inner, e, garbage);
                inner.proto.goodbye("");
            }
        }
    }

    fn on_open(
        self: &Arc<Self>,
        inner: &mut Inner,
        chan: ChanId,
        dir: Dir,
        name: &str,
        type_name: &str,
    ) {
        let found = self
            .exports
            .get(name)
            .or_else(|| self.shared_exports.as_ref().and_then(|s| s.get(name)));
        let Some(export) = found else {
            inner
                .proto
                .reject(chan, RejectCode::NoSuchName, "no such export");
            return;
        };
        match (export, dir) {
            (
                Export::Sender {
                    route,
                    type_name: t,
                },
                Dir::OpenerReceives,
            ) => {
                if t != type_name {
                    inner.proto.reject(chan, RejectCode::WrongType, &t);
                    return;
                }
                let Some(route) = route.upgrade().filter(|r| !r.is_closed()) else {
                    inner
                        .proto
                        .reject(chan, RejectCode::Closed, "export closed");
                    return;
                };
                inner.proto.accept(chan, 0);
                inner
                    .eps
                    .insert(chan, Endpoint::Out(Arc::downgrade(&route)));
                route.add_member(Member {
                    conn: ConnRef::new(self),
                    chan,
                });
            }
            (
                Export::Receiver {
                    queue,
                    type_name: t,
                },
                Dir::OpenerSends,
            ) => {
                if t != type_name {
                    inner.proto.reject(chan, RejectCode::WrongType, &t);
                    return;
                }
                let link = Link::new(ConnRef::new(self), chan, None);
                if !queue.add_link(link.clone()) {
                    inner
                        .proto
                        .reject(chan, RejectCode::Closed, "export closed");
                    return;
                }
                let cap = u32::try_from(queue.capacity()).unwrap_or(u32::MAX);
                inner.proto.accept(chan, cap);
                inner.eps.insert(chan, Endpoint::In(queue, link));
            }
            (
                Export::Service {
                    type_name: t,
                    start,
                },
                Dir::OpenerSends,
            ) => {
                if t != type_name {
                    inner.proto.reject(chan, RejectCode::WrongType, &t);
                    return;
                }
                let queue = start(self);
                let link = Link::new(ConnRef::new(self), chan, None);
                queue.add_link(link.clone());
                let cap = u32::try_from(queue.capacity()).unwrap_or(u32::MAX);
                inner.proto.accept(chan, cap);
                inner.eps.insert(chan, Endpoint::In(queue, link));
            }
            (Export::Service { .. }, Dir::OpenerReceives) => {
                inner
                    .proto
                    .reject(chan, RejectCode::WrongDirection, "receiver")
            }
            (Export::Sender { .. }, Dir::OpenerSends) => {
                inner
                    .proto
                    .reject(chan, RejectCode::WrongDirection, "sender")
            }
            (Export::Receiver { .. }, Dir::OpenerReceives) => {
                inner
                    .proto
                    .reject(chan, RejectCode::WrongDirection, "receiver")
            }
        }
    }

    /// Ends the connection: every endpoint learns why.
    pub(crate) fn end(
        self: &Arc<Self>,
        inner: &mut Inner,
        why: Error,
        garbage: &mut Vec<Box<dyn Send>>,
    ) {
        if matches!(inner.status, Status::Ended(_)) {
            return;
        }
        inner.lost_unconfirmed = inner.proto.unconfirmed();
        inner.proto.abort();
        inner.status = Status::Ended(why.clone());
        let clean = reason_is_clean(&why);
        for (_, ep) in inner.eps.drain() {
            match ep {
                Endpoint::In(q, link) => {
                    q.link_ended(&link, (!clean).then(|| why.clone()));
                    garbage.push(Box::new(link));
                }
                Endpoint::Out(route) => {
                    if let Some(r) = route.upgrade() {
                        r.notify.notify_waiters();
                    }
                }
                Endpoint::Adopted => {}
            }
        }
        for (_, tx) in inner.opens.drain() {
            let _ = tx.send(Err(why.clone()));
        }
        // This session's own exports end with it (an exporter's shared
        // exports go on for its other sessions).
        self.exports.end_all((!clean).then_some(&why));
        self.changed.notify_waiters();
    }

    /// Opens an import; registers `ep` before the `OPEN` leaves so that
    /// nothing that arrives after `ACCEPT` is missed.
    async fn open(
        self: &Arc<Self>,
        name: &str,
        dir: Dir,
        capacity: u32,
        type_name: &str,
        make_ep: impl FnOnce(ChanId) -> Endpoint,
    ) -> Result<(ChanId, u32), Error> {
        self.ready().await?;
        let (tx, rx) = oneshot::channel();
        let chan = {
            let mut inner = self.lock();
            let chan = inner
                .proto
                .open(name, dir, capacity, type_name)
                .map_err(|e| match e {
                    crate::proto::conn::OpenError::TooManyChannels(n) => Error::TooManyChannels(n),
                    crate::proto::conn::OpenError::NameTooLong => {
                        Error::Config(format!("channel name of {} bytes is too long", name.len()))
                    }
                    _ => inner_status_error(&inner),
                })?;
            inner.eps.insert(chan, make_ep(chan));
            inner.opens.insert(chan, tx);
            inner.imports.entry(name.to_owned()).or_default().push(chan);
            chan
        };
        self.kick();
        let r = rx.await.unwrap_or(Err(Error::Closed));
        match r {
            Ok(cap) => Ok((chan, cap)),
            Err(e) => {
                let mut inner = self.lock();
                inner.eps.remove(&chan);
                if let Some(v) = inner.imports.get_mut(name) {
                    v.retain(|c| *c != chan);
                }
                Err(match e {
                    Error::NoSuchExport(_) => Error::NoSuchExport(name.to_owned()),
                    Error::WrongDirection {
                        expected, actual, ..
                    } => Error::WrongDirection {
                        name: name.to_owned(),
                        expected,
                        actual,
                    },
                    Error::WrongType { actual, .. } => Error::WrongType {
                        name: name.to_owned(),
                        expected: type_name.to_owned(),
                        actual,
                    },
                    Error::Refused { reason, .. } => Error::Refused {
                        name: name.to_owned(),
                        reason,
                    },
                    other => other,
                })
            }
        }
    }
}

fn reason_is_clean(e: &Error) -> bool {
    matches!(e, Error::Closed)
}

fn inner_status_error(inner: &Inner) -> Error {
    match &inner.status {
        Status::Ended(e) => e.clone(),
        _ => Error::Closed,
    }
}

fn reject_error(code: RejectCode, reason: String) -> Error {
    match code {
        RejectCode::NoSuchName => Error::NoSuchExport(String::new()),
        RejectCode::WrongDirection => Error::WrongDirection {
            name: String::new(),
            expected: if reason == "sender" {
                "receiver"
            } else {
                "sender"
            },
            actual: if reason == "sender" {
                "sender"
            } else {
                "receiver"
            },
        },
        RejectCode::WrongType => Error::WrongType {
            name: String::new(),
            expected: String::new(),
            actual: reason,
        },
        RejectCode::TooManyChannels | RejectCode::Closed => Error::Refused {
            name: String::new(),
            reason,
        },
    }
}

/// One connection: a cheap, cloneable handle. Either end may export,
/// import, serve and call.
///
/// The connection stays up while any handle to it lives (this handle, a
/// clone, or any channel half or pipe it produced), or until
/// [`close`](Session::close). When the last handle goes, it closes cleanly.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), netchan::Error> {
/// let (server, client) = netchan::Session::pair();
/// let tx = server.export_sender::<String>("greetings")?;
/// let mut rx = client.import_receiver::<String>("greetings", 8).await?;
/// tx.send("hello".to_string()).await.map_err(|_| netchan::Error::Closed)?;
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
        f.debug_struct("Session")
            .field("id", &self.conn.conn().id)
            .field("side", &self.conn.conn().side)
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
        let fut = async {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            crate::transport::tcp::tune(&stream, &cfg)?;
            #[cfg(feature = "tls")]
            if let Some(tls) = cfg.tls_client.clone() {
                let (connector, name) = tls.connector()?;
                let stream = connector
                    .connect(name, stream)
                    .await
                    .map_err(|e| crate::tls::explain("client", None, e))?;
                let peer = crate::tls::PeerIdentity::of_stream(stream.get_ref().1);
                let s = Session::start_with(Joined(stream), Side::Dialer, cfg, None, None, |c| {
                    if let Some(p) = peer {
                        let _ = c.peer.set(p);
                    }
                });
                s.conn().ready().await?;
                return Ok(s);
            }
            let s = Session::start(stream, Side::Dialer, cfg, None, None);
            s.conn().ready().await?;
            Ok(s)
        };
        tokio::time::timeout(timeout, fut)
            .await
            .unwrap_or(Err(Error::HandshakeTimeout(timeout)))
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
        Session::start_with(stream, side, cfg, shared, parent_errors, |_| {})
    }

    /// Like `start`, with `init` run on the connection before its driver
    /// starts (to record what the transport learned of the peer).
    pub(crate) fn start_with<S: Halves>(
        stream: S,
        side: Side,
        cfg: Config,
        shared: Option<Arc<Exports>>,
        parent_errors: Option<Arc<ErrorLog>>,
        init: impl FnOnce(&Conn),
    ) -> Session {
        let conn = Conn::new(side, cfg, shared, parent_errors);
        init(&conn);
        let session = Session::from_conn(&conn);
        crate::driver::spawn(conn, stream);
        session
    }

    /// Waits until the handshake completed.
    pub async fn ready(&self) -> Result<(), Error> {
        self.conn().ready().await
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
                let ep = Endpoint::Out(Arc::downgrade(&route));
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
        self.conn().exports.add(name, Export::sender::<T>(&route))?;
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

    /// Serves `service` to this session's peer only. Both ends of a
    /// session may serve and call at once.
    pub fn serve<S: crate::Service>(&self, service: S) {
        let name = crate::rpc::export_name(service.name());
        let service = Arc::new(service);
        let make: crate::rpc::MakeService<Arc<S>> = Arc::new(move |_: &Session| service.clone());
        self.conn().exports.hangup(&name);
        let _ = self
            .conn()
            .exports
            .add(&name, crate::rpc::service_export(make));
    }

    /// Closes the channel(s) named `name` on this session: an export of
    /// that name is withdrawn (its receivers get `Ok(None)` after what was
    /// sent; its senders' sends fail), and imports of that name are closed.
    pub fn hangup(&self, name: &str) -> Result<(), Error> {
        let conn = self.conn();
        let mut found = conn.exports.hangup(name);
        let mut garbage: Vec<Box<dyn Send>> = Vec::new();
        {
            let mut inner = conn.lock();
            let chans = inner.imports.remove(name).unwrap_or_default();
            for chan in chans {
                found = true;
                // Closed at once, so that a send right after `hangup`
                // fails (the CLOSE itself follows any pending chunks).
                inner.proto.close(chan, CloseCode::Hangup, "hung up");
                match inner.eps.remove(&chan) {
                    Some(Endpoint::In(q, link)) => {
                        q.link_ended(&link, None);
                        garbage.push(Box::new(link));
                    }
                    Some(Endpoint::Out(route)) => {
                        if let Some(r) = route.upgrade() {
                            r.notify.notify_waiters();
                        }
                    }
                    _ => {}
                }
            }
        }
        drop(garbage);
        conn.kick();
        if found {
            Ok(())
        } else {
            Err(Error::NotFound(name.to_owned()))
        }
    }

    /// Waits until the peer confirmed every value sent on this session
    /// (taken by its receivers), or `timeout` passes.
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
                // Flush credit batched on the peer side: nothing to do here;
                // the peer flushes when its buffer runs empty.
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

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        matches!(self.conn().lock().status, Status::Ended(_))
    }

    /// Number of channels open on this connection.
    pub fn channel_count(&self) -> usize {
        self.conn().lock().proto.channel_count()
    }
}
