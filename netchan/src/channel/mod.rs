//! Typed channels: [`Sender`], [`Receiver`], [`channel`].
//!
//! A `Sender` either feeds a local queue (a channel made with [`channel`])
//! or a route of remote channels (imported, exported, or received inside a
//! message). A `Receiver` always reads a local queue, which remote channels
//! may feed. Both halves may travel inside messages (see `embed`); `send`
//! encodes a value for its connection.
//!
//! Channels reach a connection only through `conn`: a queue is its
//! `Inbound`, a route its `Outbound` (and, exported, its `SenderExport`),
//! a handle in a message its `OutgoingHandle`. They know no socket, no
//! name, no session or exporter (an owner is kept alive as an opaque
//! [`Keep`]), and nothing of RPC.

pub(crate) mod embed;
pub(crate) mod queue;
pub(crate) mod route;
mod send;
mod sink;

use std::fmt;
use std::future::Future;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use queue::{Front, Item, Push, Queue};
use route::{Attempt, Route};

use crate::Message;
use crate::conn::{Conn, ConnRef, LARGE_MESSAGE, SENT_LARGE, aside};
use crate::error::{RecvError, SendError, SendErrorKind, TryRecvError, TrySendError};
use crate::proto::Take;

/// What keeps a session or exporter up while a handle it produced lives
/// (its owner's reference, held and never looked at: channels name no
/// owner).
pub(crate) type Keep = Arc<dyn std::any::Any + Send + Sync>;

/// Messages `recv_many` takes out of the buffer under one lock at most.
const RECV_BATCH: usize = 64;

enum Target<T> {
    Local(Arc<Queue<T>>),
    Remote(Arc<Route>),
}

struct SenderShared<T> {
    target: Target<T>,
    _keep: Option<Keep>,
}

impl<T> Drop for SenderShared<T> {
    fn drop(&mut self) {
        if let Target::Local(q) = &self.target {
            q.sender_gone();
        }
    }
}

/// The sending half of a channel. Cheap to clone; the channel closes
/// cleanly when the last clone is dropped, as Go's `close(ch)` does.
///
/// A `Sender` may be sent inside a message: the peer gets a live sender
/// whose values arrive at this side's receiver.
pub struct Sender<T> {
    shared: Arc<SenderShared<T>>,
    /// What the `Sink` accepted and has not finished sending (this
    /// clone's own; behind a mutex so that `Sender` stays `Sync`: the
    /// sink reaches it through `&mut`, `send` and `try_send` lock it only
    /// when `held` says it holds values).
    sink: Mutex<sink::SinkState<T>>,
    /// `sink` holds values accepted and not yet sent, or an error for
    /// the sink to report.
    held: std::sync::atomic::AtomicBool,
}

/// A send started by `Sink::start_send` that had to wait.
type PendingSend<T> = Pin<Box<dyn Future<Output = Result<(), SendError<T>>> + Send>>;

impl<T> Sender<T> {
    fn with_shared(shared: Arc<SenderShared<T>>) -> Sender<T> {
        Sender {
            shared,
            sink: Mutex::new(sink::SinkState::default()),
            held: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let st = self.sink.get_mut().unwrap_or_else(|p| p.into_inner());
        sink::drop_sink(&self.shared.target, st);
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Sender<T> {
        Sender::with_shared(self.shared.clone())
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.shared.target {
            Target::Local(_) => "local",
            Target::Remote(_) => "remote",
        };
        f.debug_struct("Sender").field("kind", &kind).finish()
    }
}

/// A message's decode on a blocking thread, and the connection it came on.
type Decoding<T> = (tokio::task::JoinHandle<Result<T, String>>, Arc<Conn>);

/// The receiving half of a channel. Also a [`futures::Stream`] of
/// `Result<T, RecvError>`, which ends when the channel closes cleanly:
/// `use netchan::prelude::*` brings `StreamExt` and `TryStreamExt` for
/// `next`, `map`, `try_next`, … without a `futures` dependency of your own.
///
/// ```
/// use netchan::prelude::*;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (tx, mut rx) = channel::<String>(4);
/// tx.send("hello".to_string()).await?;
/// drop(tx);
///
/// assert_eq!(rx.next().await.transpose()?.as_deref(), Some("hello"));
/// assert!(rx.next().await.is_none()); // closed cleanly
/// # Ok(()) }
/// ```
///
/// A `Receiver` may be sent inside a message: the peer gets a live
/// receiver of what this side's senders send.
pub struct Receiver<T> {
    queue: Arc<Queue<T>>,
    /// Values still to take (`import_receiver_n`).
    remaining: Option<u64>,
    /// A large message being decoded on a blocking thread, and its
    /// connection (for the error log). Kept here, not in the `recv`
    /// future, so a `recv` given up mid-way loses nothing.
    decoding: Option<Decoding<T>>,
    _keep: Option<Keep>,
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("capacity", &self.queue.capacity())
            .field("remaining", &self.remaining)
            .finish()
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.queue.receiver_gone();
    }
}

/// Creates a channel with a buffer of `capacity` values; `0` makes a
/// rendezvous channel, where `send` completes only when a receiver has
/// taken the value.
///
/// Either half may then be sent inside a message to a peer.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (tx, mut rx) = netchan::channel::<u32>(4);
/// tx.send(1).await.unwrap();
/// drop(tx);
/// assert_eq!(rx.recv().await.unwrap(), Some(1));
/// assert_eq!(rx.recv().await.unwrap(), None); // closed cleanly
/// # }
/// ```
pub fn channel<T: Message>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let q = Queue::new(capacity, 1, 0);
    (
        Sender::with_shared(Arc::new(SenderShared {
            target: Target::Local(q.clone()),
            _keep: None,
        })),
        Receiver::from_queue(q, None, None),
    )
}

impl<T: Message> Sender<T> {
    pub(crate) fn from_route(route: Arc<Route>, keep: Option<Keep>) -> Sender<T> {
        Sender::with_shared(Arc::new(SenderShared {
            target: Target::Remote(route),
            _keep: keep,
        }))
    }

    /// Sends `value`, waiting while the receiving end's buffer is full.
    ///
    /// On a channel of capacity `n >= 1`, completes once the value has a
    /// slot in the receiver's buffer; on capacity 0, once a receiver took
    /// it. If the future is dropped before it completed (for example in
    /// `tokio::select!`), the value was not sent (capacity `>= 1`).
    ///
    /// On capacity 0, a value the receiving end never took (it was
    /// dropped or hung up, or the connection ended, first) is given back
    /// in the error, and no receiver gets it; an exported sender offers it
    /// to its next importer instead.
    ///
    /// Fails, giving the value back in [`SendError`]`.0` and saying why in
    /// `.1` ([`SendErrorKind`]), when the channel is
    /// closed, its connection was lost, or the value cannot be sent at all
    /// (larger than the peer's
    /// [`Config::max_message_len`](crate::Config::max_message_len), or it
    /// does not encode). A value refused on its own leaves the channel
    /// open: the next `send` goes through.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use netchan::{SendError, SendErrorKind};
    ///
    /// let (tx, rx) = netchan::channel::<String>(1);
    /// drop(rx);
    /// match tx.send("hello".to_string()).await {
    ///     Err(SendError(back, SendErrorKind::Closed)) => assert_eq!(back, "hello"),
    ///     other => panic!("{other:?}"),
    /// }
    /// # }
    /// ```
    pub async fn send(&self, value: T) -> Result<(), SendError<T>> {
        self.send_with(value, false)
            .await
            .map_err(|(v, why)| SendError(v, why))
    }

    /// `send`; `direct` as in [`send_detailed`](Sender::send_detailed).
    async fn send_with(&self, value: T, direct: bool) -> Result<(), (T, SendErrorKind)> {
        // What this clone's sink accepted goes first.
        if self.held.load(Ordering::Acquire) {
            self.settle_sink().await;
        }
        match &self.shared.target {
            Target::Local(q) => send_local(q, value).await,
            Target::Remote(r) => send_remote(r, value, direct).await,
        }
    }

    /// Like `send`, but says only why a value was refused on its own:
    /// `Some(error)` when it could not be sent at all (encoding, size),
    /// `None` when the channel is closed or its connection lost.
    ///
    /// `direct`: the caller waits for an answer next (a call, a reply),
    /// so a remote value is written to the connection's stream by this
    /// task when the writer is idle, rather than left to the writer to
    /// batch with values to come.
    pub(crate) async fn send_detailed(
        &self,
        value: T,
        direct: bool,
    ) -> Result<(), (T, Option<crate::Error>)> {
        self.send_with(value, direct).await.map_err(|(v, why)| {
            let refused = why
                .is_refused()
                .then(|| crate::Error::from(SendError((), why)));
            (v, refused)
        })
    }

    /// Sends `value` only if that is possible without waiting: there is
    /// room in the receiving end's buffer (as far as this side knows), or
    /// on a rendezvous channel (capacity 0) a `recv` is waiting. Otherwise
    /// `Err(TrySendError::Full(value))`, or `Closed(value)` once the
    /// channel is closed.
    ///
    /// On a rendezvous channel the value goes to the `recv` that waited.
    /// `try_send` does not wait for the take: if that `recv` is given up
    /// before it takes the value, the value waits for the next `recv`, and
    /// is dropped if the receiver is dropped first. Use `send` where a
    /// rendezvous must be confirmed.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use netchan::TrySendError;
    ///
    /// let (tx, mut rx) = netchan::channel::<u32>(1);
    /// tx.try_send(1).unwrap();
    /// assert!(matches!(tx.try_send(2), Err(TrySendError::Full(2))));
    /// assert_eq!(rx.recv().await.unwrap(), Some(1));
    /// tx.try_send(2).unwrap();
    /// # }
    /// ```
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        // What this clone's sink accepted goes first: if it cannot go
        // now, neither can this value.
        if !self.settle_sink_now() {
            return Err(TrySendError::Full(value));
        }
        match &self.shared.target {
            Target::Local(q) => {
                if q.completes_on_take() && (q.is_backend() || !q.has_waiting_receiver()) {
                    return Err(if q.is_closed() {
                        TrySendError::Closed(value)
                    } else {
                        TrySendError::Full(value)
                    });
                }
                match q.push_local(value) {
                    Push::Done(_) => Ok(()),
                    Push::Full(v) => Err(TrySendError::Full(v)),
                    Push::Closed(v) => Err(TrySendError::Closed(v)),
                }
            }
            Target::Remote(r) => {
                let mut f = |c: &ConnRef, chan| send::send_value(c.conn(), chan, &value, false);
                match r.try_send(&mut f) {
                    Attempt::Sent(rendezvous) => {
                        // Nobody waits for the take: a close before it
                        // leaves nothing to report.
                        if let Some(m) = rendezvous {
                            m.conn.conn().give_up_take(m.chan);
                        }
                        Ok(())
                    }
                    Attempt::Blocked => Err(TrySendError::Full(value)),
                    Attempt::Closed => Err(TrySendError::Closed(value)),
                    Attempt::Invalid(e) => Err(TrySendError::Invalid(value, e)),
                }
            }
        }
    }

    /// Whether sends would fail now because the channel is closed.
    pub fn is_closed(&self) -> bool {
        match &self.shared.target {
            Target::Local(q) => q.is_closed(),
            Target::Remote(r) => r.is_closed(),
        }
    }

    /// Ends the channel with an error rather than cleanly: a remote
    /// receiver gets `Err(RecvError::Lost)` after what it already has.
    pub(crate) fn fail(&self, e: &crate::Error) {
        match &self.shared.target {
            Target::Local(q) => crate::conn::Inbound::fail(&**q, e.clone()),
            Target::Remote(r) => r.close(crate::proto::CloseCode::Error, &e.to_string()),
        }
    }

    pub(crate) fn local_queue(&self) -> Option<&Arc<Queue<T>>> {
        match &self.shared.target {
            Target::Local(q) => Some(q),
            Target::Remote(_) => None,
        }
    }
}

async fn send_local<T: Message>(q: &Arc<Queue<T>>, value: T) -> Result<(), (T, SendErrorKind)> {
    let mut push = q.push_local(value);
    while let Push::Full(v) = push {
        let notified = q.space.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        push = q.push_local(v);
        if let Push::Full(v) = push {
            notified.await;
            push = q.push_local(v);
        }
    }
    match push {
        Push::Done(seq) if q.completes_on_take() => wait_taken(q, seq).await,
        Push::Done(_) => Ok(()),
        Push::Full(v) | Push::Closed(v) => Err((v, q.why_closed())),
    }
}

/// Rendezvous: waits until the receiver took item `seq`. If the wait is
/// cancelled first, the item is taken back, so it was not sent.
async fn wait_taken<T: Message>(q: &Arc<Queue<T>>, seq: u64) -> Result<(), (T, SendErrorKind)> {
    struct Unpush<'a, T: Message>(&'a Arc<Queue<T>>, u64, bool);
    impl<T: Message> Drop for Unpush<'_, T> {
        fn drop(&mut self) {
            if !self.2 {
                drop(self.0.unpush(self.1));
            }
        }
    }
    let mut guard = Unpush(q, seq, false);
    loop {
        let notified = q.space.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        match q.send_outcome(seq) {
            Some(Err((v, why))) => {
                guard.2 = true;
                return Err((v, why.unwrap_or_else(|| q.why_closed())));
            }
            Some(Ok(())) => {
                guard.2 = true;
                return Ok(());
            }
            None => {}
        }
        if q.is_closed() {
            guard.2 = true;
            return match q.unpush(seq) {
                Some(v) => Err((v, q.why_closed())),
                None => Ok(()),
            };
        }
        notified.await;
    }
}

/// Spends the task's cooperative budget, so that it yields to the runtime's
/// other tasks at its next await on a channel or tokio resource: one large
/// message must not keep a one-thread runtime's other channels waiting
/// behind a row of others.
fn spend_budget(cx: &mut Context<'_>) {
    // tokio's budget is 128 steps; the bound only guards a runtime
    // without one, where every step succeeds.
    for _ in 0..256 {
        match tokio::task::coop::poll_proceed(cx) {
            Poll::Ready(step) => step.made_progress(),
            Poll::Pending => return,
        }
    }
}

/// A value encoded ahead of the attempts to send it, and its codec.
type Encoded = (crate::proto::CodecId, bytes::BytesMut);

/// Encodes `value` on the blocking pool, so the runtime's other tasks go on
/// meanwhile. `None` (the value is then encoded by each attempt, as usual)
/// when there is no runtime or member yet, or the value carries channel
/// handles, which are registered with the connection it goes out on.
async fn encode_aside<T: Message>(r: &Route, value: T) -> (T, Option<Encoded>) {
    let (Some(codec), Ok(rt)) = (r.codec(), tokio::runtime::Handle::try_current()) else {
        return (value, None);
    };
    let job = rt.spawn_blocking(move || {
        let mut body = bytes::BytesMut::new();
        let scope = embed::EncodeScope::enter();
        let ok = crate::codec::encode(codec, &value, &mut body).is_ok();
        let handles = scope.finish();
        let ok = ok && handles.is_empty();
        drop(handles);
        (value, ok.then_some((codec, body)))
    });
    match job.await {
        Ok(done) => done,
        // The value's `Serialize` panicked: as when it runs inline.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only when the runtime shuts down, which drops this task too.
        Err(_) => std::future::pending().await,
    }
}

async fn send_remote<T: Message>(
    r: &Arc<Route>,
    value: T,
    direct: bool,
) -> Result<(), (T, SendErrorKind)> {
    // After a large value (`aside`), the next is encoded on the blocking
    // pool: a row of large values does not hold this runtime for their
    // encoding.
    let (value, mut pre) = if r.large.load(Ordering::Relaxed) {
        encode_aside(r, value).await
    } else {
        (value, None)
    };
    if let Some((_, body)) = &pre {
        if !aside(body.len()) {
            r.large.store(false, Ordering::Relaxed);
        }
    }
    let mut attempt = |value: &T| {
        let mut f = |c: &ConnRef, chan| {
            if let Some((codec, body)) = pre.as_mut() {
                if let Some(out) = c.conn().send_body::<T>(chan, *codec, body, direct) {
                    if matches!(out, crate::conn::SendOutcome::Sent(_)) {
                        // Sent (or taken out of `body`): a value given back
                        // untaken is encoded again if it is sent again.
                        pre = None;
                    }
                    return out;
                }
            }
            send::send_value(c.conn(), chan, value, direct)
        };
        r.try_send(&mut f)
    };
    loop {
        // Most sends find credit at once: try before paying for a waiter.
        // (A send does not spend tokio's budget: yielding every so many
        // small messages cut batching, and with it throughput, by two
        // thirds in the `cluster` example; running out of credit makes a
        // sender wait.)
        let mut outcome = attempt(&value);
        // Time spent without credit counts in the channel's stats, also
        // when the send is given up (dropped) while it waits.
        let waited =
            matches!(outcome, Attempt::Blocked).then(|| Waited(r, std::time::Instant::now()));
        while let Attempt::Blocked = outcome {
            let notified = r.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            outcome = attempt(&value);
            if let Attempt::Blocked = outcome {
                notified.await;
                outcome = attempt(&value);
            }
        }
        drop(waited);
        return match outcome {
            Attempt::Sent(rendezvous) => {
                let large = SENT_LARGE.with(|l| l.replace(0));
                if large > 0 {
                    if aside(large) {
                        r.large.store(true, Ordering::Relaxed);
                    }
                    std::future::poll_fn(|cx| {
                        spend_budget(cx);
                        Poll::Ready(())
                    })
                    .await;
                }
                match rendezvous {
                    Some(m) if !wait_taken_remote(r, &m).await => {
                        // The receiving end closed, or the connection
                        // ended, before the value was taken. An exported
                        // sender offers it to its other importers.
                        if r.is_export() && !r.is_closed() {
                            continue;
                        }
                        Err((value, SendErrorKind::closed(r.lost())))
                    }
                    _ => Ok(()),
                }
            }
            Attempt::Closed | Attempt::Blocked => Err((value, SendErrorKind::closed(r.lost()))),
            Attempt::Invalid(e) => Err((value, SendErrorKind::refused(e))),
        };
    }
}

/// Adds the time since it was made to its route's wait for credit.
struct Waited<'a>(&'a Route, std::time::Instant);

impl Drop for Waited<'_> {
    fn drop(&mut self) {
        let ns = u64::try_from(self.1.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.0.waited_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

/// A remote rendezvous send: waits until the receiving program took the
/// value (`true`), or its channel closed or its connection ended before
/// it did (`false`). If the wait is given up, the connection is told, so
/// it keeps no answer for it.
async fn wait_taken_remote(r: &Route, m: &route::Member) -> bool {
    struct GiveUp<'a>(&'a route::Member, bool);
    impl Drop for GiveUp<'_> {
        fn drop(&mut self) {
            if !self.1 {
                self.0.conn.conn().give_up_take(self.0.chan);
            }
        }
    }
    let mut guard = GiveUp(m, false);
    loop {
        let notified = r.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        match m.conn.conn().take_state(m.chan) {
            Take::Waiting => notified.await,
            state => {
                guard.1 = true;
                return state == Take::Taken;
            }
        }
    }
}

impl<T: Message> Receiver<T> {
    /// Has `tap` take small messages from peers as they arrive, in the
    /// connection's reader, instead of this receiver (see
    /// [`Queue::set_tap`]); false if the channel has a tap already.
    pub(crate) fn set_tap(&self, tap: queue::Tap) -> bool {
        self.queue.set_tap(tap)
    }

    pub(crate) fn from_queue(
        queue: Arc<Queue<T>>,
        remaining: Option<u64>,
        keep: Option<Keep>,
    ) -> Receiver<T> {
        Receiver {
            queue,
            remaining,
            decoding: None,
            _keep: keep,
        }
    }

    /// Receives the next value, waiting for one.
    ///
    /// `Ok(None)` means the channel closed cleanly (every sender dropped,
    /// or `hangup`) and every value sent was received. An error means the
    /// connection failed (after the values that did arrive), or one value
    /// could not be decoded (the channel goes on).
    ///
    /// Cancel-safe: if the future is dropped, no value was taken.
    pub async fn recv(&mut self) -> Result<Option<T>, RecvError> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next value; see [`recv`](Receiver::recv).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<T>, RecvError>> {
        if let Some((task, conn)) = self.decoding.as_mut() {
            let r = std::task::ready!(std::pin::Pin::new(task).poll(cx));
            let conn = conn.clone();
            self.decoding = None;
            let r = r.unwrap_or_else(|e| Err(format!("the decoder failed: {e}")));
            return Poll::Ready(self.decoded(&conn, r));
        }
        if self.remaining == Some(0) {
            return Poll::Ready(Ok(None));
        }
        // Like tokio's own channels: a task that keeps finding values
        // ready yields to the others now and then.
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        let item = match self.queue.poll_take(Some(cx)) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(None)) => return Poll::Ready(Ok(None)),
            Poll::Ready(Ok(Some(x))) => x,
        };
        coop.made_progress();
        match item {
            Item::Local(v, _) => Poll::Ready(self.decoded_ok(v)),
            Item::Remote {
                data,
                handles,
                link,
            } => {
                self.queue.taken_from(&link);
                if !aside(data.len()) {
                    let large = data.len() >= LARGE_MESSAGE;
                    let r = embed::decode::<T>(link.conn(), &data, handles);
                    if large {
                        // Its decoding took a while: the runtime's other
                        // tasks get a turn before this one takes the next.
                        spend_budget(cx);
                    }
                    return Poll::Ready(self.decoded(link.conn(), r));
                }
                // A large message decodes on a blocking thread, so this
                // runtime's other tasks (other channels) go on meanwhile
                // (see `aside` for which messages are large here).
                let conn = link.conn().clone();
                let c = conn.clone();
                let task = conn
                    .rt
                    .spawn_blocking(move || embed::decode::<T>(&c, &data, handles));
                self.decoding = Some((task, conn));
                self.poll_recv(cx)
            }
        }
    }

    /// Takes a value if one is ready now, without waiting, as tokio's
    /// `try_recv`: `Err(TryRecvError::Empty)` while the channel is open and
    /// empty, `Err(TryRecvError::Closed)` once it was closed cleanly and
    /// every value was taken (`recv` then gives `Ok(None)`),
    /// `Err(TryRecvError::Lost(_))` once if its connection failed. A value
    /// is always `Ok(Some(value))`.
    ///
    /// On a rendezvous channel (capacity 0) a remote sender can only send
    /// while a `recv` waits, so `try_recv` finds a value only if one
    /// already arrived.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use netchan::TryRecvError;
    /// let (tx, mut rx) = netchan::channel::<u32>(4);
    /// assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    /// tx.send(7).await.unwrap();
    /// assert_eq!(rx.try_recv(), Ok(Some(7)));
    /// drop(tx);
    /// assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    /// # }
    /// ```
    pub fn try_recv(&mut self) -> Result<Option<T>, TryRecvError> {
        if let Some((task, conn)) = self.decoding.as_mut() {
            if !task.is_finished() {
                return Err(TryRecvError::Empty);
            }
            let waker = futures::task::noop_waker();
            let mut cx = Context::from_waker(&waker);
            let Poll::Ready(r) = std::pin::Pin::new(task).poll(&mut cx) else {
                return Err(TryRecvError::Empty);
            };
            let conn = conn.clone();
            self.decoding = None;
            let r = r.unwrap_or_else(|e| Err(format!("the decoder failed: {e}")));
            return try_result(self.decoded(&conn, r));
        }
        if self.remaining == Some(0) {
            return Err(TryRecvError::Closed);
        }
        let item = match self.queue.poll_take(None) {
            Poll::Pending => return Err(TryRecvError::Empty),
            Poll::Ready(r) => r.map_err(try_error)?,
        };
        let Some(item) = item else {
            return Err(TryRecvError::Closed);
        };
        match item {
            Item::Local(v, _) => try_result(self.decoded_ok(v)),
            Item::Remote {
                data,
                handles,
                link,
            } => {
                self.queue.taken_from(&link);
                let r = embed::decode::<T>(link.conn(), &data, handles);
                try_result(self.decoded(link.conn(), r))
            }
        }
    }

    /// Waits for at least one value, then takes up to `limit` values that
    /// are ready into `buf` (appended), as tokio's `recv_many`; returns how
    /// many. `Ok(0)` means the channel was closed cleanly (or `limit` is
    /// 0). Values that arrive together are taken together, so a consumer
    /// pays for one wake-up per batch, and small messages from a peer are
    /// taken out of the buffer under one lock. Each value taken frees its
    /// slot for a waiting sender, as one `recv` does. A message that
    /// cannot be decoded ends the batch: the next call reports it
    /// (`Err(RecvError::Decode)`), then goes on with the values after it.
    /// A large message, or one carrying channel handles, ends the batch
    /// before it and comes first in the next call.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut rx) = netchan::channel::<u32>(8);
    /// for i in 0..5 {
    ///     tx.send(i).await.unwrap();
    /// }
    /// let mut buf = Vec::new();
    /// assert_eq!(rx.recv_many(&mut buf, 3).await.unwrap(), 3);
    /// assert_eq!(rx.recv_many(&mut buf, 10).await.unwrap(), 2);
    /// assert_eq!(buf, [0, 1, 2, 3, 4]);
    /// drop(tx);
    /// assert_eq!(rx.recv_many(&mut buf, 10).await.unwrap(), 0);
    /// # }
    /// ```
    pub async fn recv_many(&mut self, buf: &mut Vec<T>, limit: usize) -> Result<usize, RecvError> {
        if limit == 0 {
            return Ok(0);
        }
        let Some(first) = self.recv().await? else {
            return Ok(0);
        };
        buf.push(first);
        let mut n = 1;
        let mut batch = queue::Batch::default();
        while n < limit && self.remaining != Some(0) {
            let max = (limit - n).min(RECV_BATCH).min(
                self.remaining
                    .map_or(usize::MAX, |r| usize::try_from(r).unwrap_or(usize::MAX)),
            );
            let (front, left) = self.queue.take_batch(max, LARGE_MESSAGE, &mut batch);
            if batch.is_empty() {
                if front != Front::Single {
                    break;
                }
                match self.try_recv() {
                    Ok(Some(v)) => {
                        buf.push(v);
                        n += 1;
                        continue;
                    }
                    // The rest (an error, the end) is for the next call.
                    _ => break,
                }
            }
            while let Some((mut run, link)) = batch.pop_run() {
                while let Some(data) = run.front() {
                    match embed::decode::<T>(link.conn(), data, None) {
                        Ok(v) => {
                            run.skip();
                            // Each value taken frees its slot, as one
                            // `recv`, at once: decoding the rest of the
                            // batch may take long.
                            self.queue
                                .taken_with(&link, 1, left + run.len() + batch.len());
                            if let Ok(Some(v)) = self.decoded_ok(v) {
                                buf.push(v);
                            }
                            n += 1;
                        }
                        Err(_) => {
                            // Back in front, not counted as taken: the next
                            // `recv` takes it again and reports its error,
                            // in its place among the values.
                            batch.unpop_run(run, link);
                            self.queue.put_back(std::mem::take(&mut batch));
                            return Ok(n);
                        }
                    }
                }
            }
            if matches!(front, Front::Empty | Front::Other) {
                break;
            }
        }
        Ok(n)
    }

    /// The outcome of decoding one message.
    fn decoded(&mut self, conn: &Arc<Conn>, r: Result<T, String>) -> Result<Option<T>, RecvError> {
        match r {
            Ok(v) => self.decoded_ok(v),
            Err(e) => {
                let msg = format!(
                    "cannot decode a {} on a channel: {e}",
                    crate::codec::type_name::<T>()
                );
                conn.log_error(crate::Error::Codec(msg.clone()));
                Err(RecvError::Decode(msg))
            }
        }
    }

    /// Counts a value handed to the program.
    fn decoded_ok(&mut self, value: T) -> Result<Option<T>, RecvError> {
        if let Some(n) = self.remaining.as_mut() {
            *n -= 1;
            if *n == 0 {
                self.queue.finish();
            }
        }
        Ok(Some(value))
    }

    /// The receive buffer size.
    pub fn capacity(&self) -> usize {
        self.queue.capacity()
    }

    pub(crate) fn second_handle(&self) -> Receiver<T> {
        self.queue.add_receiver();
        Receiver {
            queue: self.queue.clone(),
            remaining: self.remaining,
            decoding: None,
            _keep: None,
        }
    }
}

/// A `Sender` is a [`futures::Sink`], for `feed`, `send_all` and
/// `forward`.
///
/// On a channel to a peer, `feed` encodes the value into the sender's own
/// buffer, and the sink hands what it holds to the connection under one
/// lock once the receiving end's free slots are used up, 64 KiB are held,
/// or on `flush` (`send_all` flushes whenever its stream has nothing
/// ready, and at its end): a run of small values costs one hand-over, and
/// leaves in one write. The sink accepts a value only while the channel
/// had a free slot for it when it last looked, so `poll_ready` waits, as
/// `send` does, while the receiver's buffer is full: a fed value is as
/// good as a sent one, once flushed. A value that is large (over 4 KiB
/// encoded), carries channel handles, goes to a rendezvous channel, a
/// local channel or an exported sender's importers, is sent on its own
/// after the ones before it, and waits in the sink (one at most) while
/// there is no room.
///
/// Feed, then flush. Values fed and not flushed when the sender is dropped
/// are still delivered: handed over at once where they have their slots
/// (only another clone's sends can have taken them meanwhile), the rest,
/// with a send waiting in the sink, by a task of their own on the current
/// runtime, which keeps the channel open until they went. A `send` on the
/// same clone first waits for what the sink holds, and a `try_send` finds
/// the channel full while the sink still holds values, so values keep
/// their order.
/// `poll_close` only flushes: the channel closes when its last `Sender`
/// is dropped. An error (closed, connection lost, too large) gives back
/// the first value not sent, and the calls after it the next ones.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use futures::{SinkExt, StreamExt};
/// let (mut tx, rx) = netchan::channel::<u32>(64);
/// let mut values = futures::stream::iter((0..10).map(Ok));
/// tx.send_all(&mut values).await.unwrap();
/// drop(tx);
/// let got: Vec<u32> = rx.map(|r| r.unwrap()).collect().await;
/// assert_eq!(got, (0..10).collect::<Vec<_>>());
/// # }
/// ```
impl<T: Message> futures::Sink<T> for Sender<T> {
    type Error = SendError<T>;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SendError<T>>> {
        self.get_mut().poll_sink(cx, false)
    }

    fn start_send(self: Pin<&mut Self>, value: T) -> Result<(), SendError<T>> {
        self.get_mut().feed_value(value)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SendError<T>>> {
        self.get_mut().poll_sink(cx, true)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SendError<T>>> {
        self.get_mut().poll_sink(cx, true)
    }
}

impl<T: Message> futures::Stream for Receiver<T> {
    type Item = Result<T, RecvError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut().poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Some(v))) => Poll::Ready(Some(Ok(v))),
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
        }
    }
}

/// A `recv` outcome as a `try_recv` one.
fn try_result<T>(r: Result<Option<T>, RecvError>) -> Result<Option<T>, TryRecvError> {
    match r {
        Ok(Some(v)) => Ok(Some(v)),
        Ok(None) => Err(TryRecvError::Closed),
        Err(e) => Err(try_error(e)),
    }
}

fn try_error(e: RecvError) -> TryRecvError {
    match e {
        RecvError::Lost(e) => TryRecvError::Lost(e),
        RecvError::Decode(s) => TryRecvError::Decode(s),
    }
}

/// Forwards a travelled receiver's values into the remote channel `route`
/// (see [`Queue::set_relay`]): a value is taken only when the remote
/// channel has room, and its local sender is told once it went on, or
/// given it back if it could not.
///
/// The queue follows the relay's rule from the call on, before the task
/// runs: a send made once the message carrying the receiver went out
/// completes only when the relay sent its value on, or gives it back.
pub(crate) fn relay<T: Message>(
    rx: Receiver<T>,
    route: Arc<Route>,
) -> impl Future<Output = ()> + Send + 'static {
    rx.queue.set_relay();
    // Senders already waiting for room re-check it under the new rule.
    rx.queue.space.notify_waiters();
    relay_values(rx, route)
}

/// The relay task of [`relay`].
async fn relay_values<T: Message>(mut rx: Receiver<T>, route: Arc<Route>) {
    let queue = rx.queue.clone();
    let tx = Sender::from_route(route.clone(), None);
    loop {
        if !route.ready().await {
            return;
        }
        match rx.recv().await {
            Ok(Some(v)) => match tx.send(v).await {
                Ok(()) => queue.relay_done(None),
                // Refused on its own (too large for the peer, does not
                // encode): its sender gets it back and why, and the
                // channel goes on, as for a direct send.
                Err(SendError(v, why)) if why.is_refused() => queue.relay_refused(v, why),
                Err(SendError(v, _)) => {
                    queue.relay_done(Some(v));
                    return;
                }
            },
            Ok(None) => return,
            Err(RecvError::Decode(_)) => {}
            Err(RecvError::Lost(e)) => {
                tx.fail(&e);
                return;
            }
        }
    }
}

/// Moves every value from `rx` into `tx` until either side ends. Used when
/// a handle travels on to where it cannot be linked directly. A value `tx`
/// refuses on its own (too large for its peer) is skipped: its sender's
/// `send` completed already, and the refusing connection reports it.
pub(crate) async fn forward<T: Message>(mut rx: Receiver<T>, tx: Sender<T>) {
    loop {
        match rx.recv().await {
            Ok(Some(v)) => match tx.send(v).await {
                Ok(()) => {}
                // Refused on its own (too large for the far end, does not
                // encode): the connection that refused it reported it on
                // its errors, and the channel goes on with the next value.
                Err(SendError(_, why)) if why.is_refused() => {}
                Err(_) => return,
            },
            Ok(None) => return,
            // Already reported on the session's errors; go on.
            Err(RecvError::Decode(_)) => {}
            // The upstream connection failed: the downstream receiver must
            // see a failure too, not a clean end.
            Err(RecvError::Lost(e)) => {
                tx.fail(&e);
                return;
            }
        }
    }
}
