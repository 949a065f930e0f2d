//! `Sender` as a [`futures::Sink`]: values for one remote channel are
//! encoded as they are fed, into the sender's own buffer, and handed to
//! the connection together, under one lock of it, as the buffer fills or
//! the sink is flushed ([`Batch`]).
//!
//! A value is accepted only while the channel has credit for it, as the
//! sink last saw it: a fed value has a slot in the receiver's buffer, as
//! a completed `send` has. Values for a local channel, an exported
//! sender's importers, a rendezvous channel, or values that are large or
//! carry channel handles, go one by one, as `send` sends them.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;

use super::route::{Member, Route};
use super::{PendingSend, Sender, Target, embed};
use crate::conn::SendOutcome;
use crate::error::{SendError, SendErrorKind};
use crate::{Message, codec};

/// A value whose encoding is larger than this goes on its own.
const BATCH_VALUE_MAX: usize = 4 << 10;

/// Bytes of encoded values a batch holds before the sink hands them over.
const BATCH_BYTES: usize = 64 << 10;

/// What a `Sender`'s sink holds between calls (this clone's own).
pub(super) struct SinkState<T> {
    /// A value sent on its own that had to wait; it goes after the batch.
    waiting: Option<PendingSend<T>>,
    /// Values accepted for one remote channel and not yet handed over.
    /// Boxed, and made at the first `poll_ready`: a sender never used as
    /// a sink stays small.
    batch: Option<Box<Batch<T>>>,
    /// Finishes what the sink holds in a task of its own when the sender
    /// is dropped (set where `T: Message` is known; see `drop_sink`).
    finish: Option<Finish<T>>,
    /// The error of a waiting send that a `send` on the same clone
    /// finished (`settle_sink`), for the sink's next call to report.
    /// Boxed: a `Sender` stays `Unpin` whatever `T` is.
    failed: Option<Box<SendError<T>>>,
}

impl<T> SinkState<T> {
    /// Whether it holds values not yet sent, or an error to report.
    fn holds(&self) -> bool {
        self.waiting.is_some()
            || self.failed.is_some()
            || self.batch.as_ref().is_some_and(|b| !b.is_empty())
    }
}

/// See [`SinkState::finish`].
type Finish<T> = fn(Option<PendingSend<T>>, Option<(Box<Batch<T>>, Arc<Route>)>);

impl<T> Default for SinkState<T> {
    fn default() -> Self {
        SinkState {
            waiting: None,
            batch: None,
            finish: None,
            failed: None,
        }
    }
}

/// Hands over a dropped sink's batch as credit comes, then finishes its
/// waiting send, in a task on the current runtime (none: dropped).
fn finish<T: Message>(waiting: Option<PendingSend<T>>, batch: Option<(Box<Batch<T>>, Arc<Route>)>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(async move {
        if let Some((mut b, route)) = batch {
            if let Some(m) = route.only_member().cloned() {
                while !b.is_empty() {
                    match b.hand_over(&m) {
                        None => break,
                        Some(SendOutcome::NoCredit) => {
                            if !route.ready().await {
                                break;
                            }
                        }
                        // Closed or refused: nobody is left to tell.
                        Some(_) => {
                            drop(b.take_first());
                        }
                    }
                }
            }
        }
        if let Some(w) = waiting {
            let _ = w.await;
        }
    });
}

/// Values the sink accepted for a single remote channel, encoded back to
/// back, in order.
struct Batch<T> {
    /// The values themselves, for the error that gives one back.
    values: VecDeque<T>,
    bodies: BytesMut,
    lens: VecDeque<usize>,
    /// Values the batch may still accept: the credit seen when it last
    /// handed values over, less the values accepted since.
    room: usize,
    /// The channel is a rendezvous: every value goes on its own.
    off: bool,
    /// The largest value the batch takes: smaller than the peer's message
    /// limit, so no value in it can be refused for its size.
    value_max: usize,
    /// Waits for credit.
    wait: Option<Pin<Box<dyn Future<Output = bool> + Send>>>,
}

impl<T> Batch<T> {
    fn new() -> Batch<T> {
        Batch {
            values: VecDeque::new(),
            bodies: BytesMut::new(),
            lens: VecDeque::new(),
            room: 0,
            off: false,
            value_max: 0,
            wait: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// Hands over what has credit, once; returns why the rest did not go.
    fn hand_over(&mut self, m: &Member) -> Option<SendOutcome> {
        self.hand_over_with(m, true)
    }

    /// [`hand_over`](Batch::hand_over); without `wait`, nothing if the
    /// connection's lock is busy.
    fn hand_over_with(&mut self, m: &Member, wait: bool) -> Option<SendOutcome> {
        let h = m
            .conn
            .conn()
            .send_batch(m.chan, &mut self.bodies, &mut self.lens, wait)?;
        drop(self.values.drain(..h.sent.min(self.values.len())));
        self.room = h.credit;
        self.off = h.capacity == 0;
        self.value_max = BATCH_VALUE_MAX.min(h.limit);
        if self.lens.is_empty() {
            self.bodies.clear();
        }
        h.stop
    }

    /// Drops the first value and its body, for the error that gives it
    /// back.
    fn take_first(&mut self) -> Option<T> {
        use bytes::Buf;
        let len = self.lens.pop_front()?;
        self.bodies.advance(len.min(self.bodies.len()));
        self.values.pop_front()
    }
}

/// The single remote channel of `target`, with its route.
fn only_remote<T>(target: &Target<T>) -> Option<(&Arc<Route>, &Member)> {
    match target {
        Target::Remote(r) => r.only_member().map(|m| (r, m)),
        Target::Local(_) => None,
    }
}

impl<T: Message> Sender<T> {
    /// The single remote channel this sender's values go to.
    fn member(&self) -> Option<(&Arc<Route>, &Member)> {
        only_remote(&self.shared.target)
    }

    /// Drives what the sink holds: the batch, handed over until it is
    /// empty (`all`) or has room for one more value, then the waiting
    /// send.
    pub(super) fn poll_sink(
        &mut self,
        cx: &mut Context<'_>,
        all: bool,
    ) -> Poll<Result<(), SendError<T>>> {
        // Most calls: room for one more value, or a batch that does not
        // apply, with no send waiting.
        let st = self.sink.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = st.failed.take() {
            self.held.store(st.holds(), Ordering::Release);
            return Poll::Ready(Err(*e));
        }
        if let (None, Some(b)) = (&st.waiting, &st.batch) {
            let ready = if all {
                b.is_empty()
            } else {
                b.room > 0 && b.bodies.len() < BATCH_BYTES
            };
            if b.off || ready {
                return Poll::Ready(Ok(()));
            }
        }
        let Some((route, m)) = self.member().map(|(r, m)| (r.clone(), m.clone())) else {
            return self.poll_waiting(cx);
        };
        let st = self.sink.get_mut().unwrap_or_else(|p| p.into_inner());
        st.finish = Some(finish::<T>);
        let batch = st.batch.get_or_insert_with(|| Box::new(Batch::new()));
        // The waiting value came after the batch: the batch goes first.
        let waiting = st.waiting.is_some();
        let all = all || waiting;
        loop {
            let need = if all {
                !batch.is_empty()
            } else {
                batch.room == 0 || batch.bodies.len() >= BATCH_BYTES
            };
            if batch.off || !need {
                break;
            }
            match batch.hand_over(&m) {
                None if all || batch.room > 0 => break,
                // All went, and no credit is left; or some wait for it.
                None | Some(SendOutcome::NoCredit) => {}
                Some(stop) => {
                    let why = match stop {
                        SendOutcome::Invalid(e) => SendErrorKind::refused(e),
                        _ => SendErrorKind::closed(route.lost()),
                    };
                    let Some(v) = batch.take_first() else {
                        // Nothing accepted: the next value finds out on
                        // its own (`send` says why).
                        batch.off = true;
                        break;
                    };
                    self.held
                        .store(waiting || !batch.is_empty(), Ordering::Release);
                    return Poll::Ready(Err(SendError(v, why)));
                }
            }
            self.held
                .store(waiting || !batch.is_empty(), Ordering::Release);
            let r = route.clone();
            let wait = batch
                .wait
                .get_or_insert_with(|| Box::pin(async move { r.ready().await }));
            let open = ready!(wait.as_mut().poll(cx));
            batch.wait = None;
            if !open && batch.is_empty() {
                // Closed: as above, the next value finds out on its own.
                batch.off = true;
            }
        }
        self.held
            .store(waiting || !batch.is_empty(), Ordering::Release);
        self.poll_waiting(cx)
    }

    /// Drives the send that waits in the sink, if any, to its end.
    fn poll_waiting(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SendError<T>>> {
        let st = self.sink.get_mut().unwrap_or_else(|p| p.into_inner());
        let Some(send) = st.waiting.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let r = ready!(send.as_mut().poll(cx));
        st.waiting = None;
        self.held.store(st.holds(), Ordering::Release);
        Poll::Ready(r)
    }

    /// `start_send`: into the batch if it has room, else on its own.
    pub(super) fn feed_value(&mut self, value: T) -> Result<(), SendError<T>> {
        let codec = self.member().map(|(_, m)| m.conn.conn().codec);
        let st = self.sink.get_mut().unwrap_or_else(|p| p.into_inner());
        let value = match (codec, st.batch.as_mut()) {
            (Some(codec), Some(b)) if st.waiting.is_none() && b.room > 0 && !b.off => {
                let start = b.bodies.len();
                let scope = embed::EncodeScope::enter();
                let r = codec::encode(codec, &value, &mut b.bodies);
                let handles = scope.finish();
                let len = b.bodies.len() - start;
                if r.is_ok() && handles.is_empty() && len <= b.value_max {
                    b.lens.push_back(len);
                    b.values.push_back(value);
                    b.room -= 1;
                    self.held.store(true, Ordering::Release);
                    return Ok(());
                }
                // Large, carrying handles, or not encodable: on its own,
                // where `send` deals with each.
                drop(handles);
                b.bodies.truncate(start);
                value
            }
            _ => value,
        };
        let behind = st.batch.as_ref().is_some_and(|b| !b.is_empty());
        if !behind && st.waiting.is_none() {
            match self.try_send(value) {
                Ok(()) => return Ok(()),
                Err(e) => return self.wait_in_sink(e.into_inner()),
            }
        }
        self.wait_in_sink(value)
    }

    /// Full, or behind the batch: the send waits in the sink. Closed or
    /// refused: `send` finds the reason (closed, connection lost, too
    /// large), which the next `poll_ready` or `poll_flush` returns with
    /// the value.
    fn wait_in_sink(&mut self, value: T) -> Result<(), SendError<T>> {
        let tx = Sender::with_shared(self.shared.clone());
        let st = self.sink.get_mut().unwrap_or_else(|p| p.into_inner());
        st.waiting = Some(Box::pin(async move { tx.send(value).await }));
        st.finish = Some(finish::<T>);
        self.held.store(true, Ordering::Release);
        Ok(())
    }

    /// Before a `send` on this clone: what its sink accepted goes first.
    /// Hands the batch over as credit comes, then finishes the send
    /// waiting in the sink; its error stays for the sink to report. (A
    /// batch on a closed channel stays for the sink to report too.)
    pub(super) async fn settle_sink(&self) {
        while self.held.load(Ordering::Acquire) {
            let step = {
                let mut st = self.sink.lock().unwrap_or_else(|p| p.into_inner());
                let stuck = match (self.member(), st.batch.as_mut()) {
                    (Some((r, m)), Some(b)) if !b.is_empty() => {
                        matches!(b.hand_over(m), Some(SendOutcome::NoCredit)).then(|| r.clone())
                    }
                    _ => None,
                };
                let batch_left = st.batch.as_ref().is_some_and(|b| !b.is_empty());
                let step = match stuck {
                    Some(r) => Settle::Credit(r),
                    // Left on a closed channel: for the sink to report.
                    None if batch_left => Settle::Done,
                    None => st.waiting.take().map_or(Settle::Done, Settle::Waiting),
                };
                self.held.store(st.holds(), Ordering::Release);
                step
            };
            match step {
                Settle::Done => return,
                Settle::Credit(r) => {
                    if !r.ready().await {
                        return;
                    }
                }
                Settle::Waiting(w) => {
                    if let Err(e) = w.await {
                        let mut st = self.sink.lock().unwrap_or_else(|p| p.into_inner());
                        st.failed = Some(Box::new(e));
                        self.held.store(true, Ordering::Release);
                        return;
                    }
                }
            }
        }
    }

    /// Before a `try_send` on this clone: hands the sink's batch over
    /// without waiting; `false` if values are left ahead of the next one
    /// (no credit, or a send waiting in the sink).
    pub(super) fn settle_sink_now(&self) -> bool {
        if !self.held.load(Ordering::Acquire) {
            return true;
        }
        let mut st = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some((_, m)), Some(b)) = (self.member(), st.batch.as_mut()) {
            if !b.is_empty() {
                let _ = b.hand_over(m);
            }
        }
        self.held.store(st.holds(), Ordering::Release);
        st.waiting.is_none() && st.batch.as_ref().is_none_or(|b| b.is_empty())
    }
}

/// The next step of [`Sender::settle_sink`].
enum Settle<T> {
    Done,
    Credit(Arc<Route>),
    Waiting(PendingSend<T>),
}

/// What the sink of a dropped sender still holds, values fed without a
/// flush: the batch is handed over at once as far as it has credit (it
/// was accepted only while the channel had room, so all of it unless
/// another clone took that room meanwhile), and whatever is left, with a
/// send waiting in the sink, finishes in a task of its own, which keeps
/// the channel open until it is done. Outside a runtime, what is left is
/// dropped.
pub(super) fn drop_sink<T>(target: &Target<T>, st: &mut SinkState<T>) {
    // A batch exists only for a single remote channel (`poll_sink`).
    let remote = only_remote(target);
    if let (Some((_, m)), Some(b)) = (remote, st.batch.as_mut()) {
        if !b.is_empty() {
            let _ = b.hand_over_with(m, false);
        }
    }
    let batch = match (remote, st.batch.take()) {
        (Some((r, _)), Some(b)) if !b.is_empty() => Some((b, r.clone())),
        _ => None,
    };
    let waiting = st.waiting.take();
    if let Some(finish) = st.finish {
        if batch.is_some() || waiting.is_some() {
            finish(waiting, batch);
        }
    }
}
