//! The receiving end's buffer: one [`Queue`] behind every `Receiver`.
//!
//! A queue is fed by local `Sender`s (values, bounded by the capacity) and
//! by remote channels ([`Link`]s, each with its own credit window equal to
//! the capacity). Remote messages stay encoded until `recv` takes them, so
//! decoding happens in the receiving task, not in the connection's reader
//! (except for a queue with a tap, [`Queue::set_tap`], which takes small
//! messages in the reader as they arrive). Small messages that arrived
//! together wait back to back in one buffer ([`Msgs::Packed`]).
//!
//! A queue is the connection's `conn::Inbound`; the links feeding it
//! belong to the connection (`conn::Link`).
//!
//! Lock order: a connection's `inner` lock may be held while a queue's lock
//! is taken, never the other way round.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::conn::{HandleGuard, Inbound, Link};
use crate::error::{Error, RecvError, SendErrorKind};
use crate::proto::CloseCode;
use crate::util::lock;

/// A message waiting in a queue.
pub(crate) enum Item<T> {
    Local(T, u64),
    Remote {
        data: Bytes,
        handles: Option<HandleGuard>,
        link: Arc<Link>,
    },
}

/// What the buffer holds: one item, or a run of messages of one link.
enum Entry<T> {
    One(Item<T>),
    Run(Run),
}

/// Messages of one link that arrived together and carry no handles, in
/// arrival order (see `deliver_many`): one entry and one reference to the
/// link for all of them, where an [`Item`] each would clone the link for
/// each message and move each through the buffer once more. Never
/// empty while in the buffer.
struct Run {
    data: Msgs,
    link: Arc<Link>,
}

/// The messages of a [`Run`], in order.
pub(crate) enum Msgs {
    /// Each in a buffer of its own.
    Each(VecDeque<Bytes>),
    /// Small ones, back to back in one buffer (`deliver_packed`).
    Packed(Packed),
}

/// Small messages back to back in one buffer: message `i` ends at
/// `ends[i]`, and the first not yet taken (`next`) starts at `from`.
pub(crate) struct Packed {
    buf: Bytes,
    ends: Vec<u32>,
    next: usize,
    from: u32,
}

impl Msgs {
    /// Messages left.
    pub(crate) fn len(&self) -> usize {
        match self {
            Msgs::Each(d) => d.len(),
            Msgs::Packed(p) => p.ends.len() - p.next,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first message, borrowed.
    pub(crate) fn front(&self) -> Option<&[u8]> {
        match self {
            Msgs::Each(d) => d.front().map(|b| &b[..]),
            Msgs::Packed(p) => {
                let end = *p.ends.get(p.next)?;
                p.buf.get(p.from as usize..end as usize)
            }
        }
    }

    /// Drops the first message (taken through [`front`](Msgs::front)).
    pub(crate) fn skip(&mut self) {
        match self {
            Msgs::Each(d) => {
                d.pop_front();
            }
            Msgs::Packed(p) => {
                if let Some(&end) = p.ends.get(p.next) {
                    p.from = end;
                    p.next += 1;
                }
            }
        }
    }

    /// Takes the first message out, as a buffer of its own.
    fn pop_front(&mut self) -> Option<Bytes> {
        match self {
            Msgs::Each(d) => d.pop_front(),
            Msgs::Packed(p) => {
                let end = *p.ends.get(p.next)?;
                let data = p.buf.slice(p.from as usize..end as usize);
                p.from = end;
                p.next += 1;
                Some(data)
            }
        }
    }

    /// Whether every message left is smaller than `small` bytes.
    fn all_below(&self, small: usize) -> bool {
        match self {
            Msgs::Each(d) => d.iter().all(|b| b.len() < small),
            Msgs::Packed(_) => crate::proto::SMALL_MESSAGE < small,
        }
    }

    /// The size of the first message.
    fn front_len(&self) -> Option<usize> {
        self.front().map(<[u8]>::len)
    }
}

impl Packed {
    /// Takes the first `k` messages (at most all) out, as a run of their
    /// own sharing the buffer.
    fn split_front(&mut self, k: usize) -> Packed {
        let k = k.min(self.ends.len() - self.next);
        let ends = self.ends[self.next..self.next + k].to_vec();
        let front = Packed {
            buf: self.buf.clone(),
            ends,
            next: 0,
            from: self.from,
        };
        if k > 0 {
            self.from = self.ends[self.next + k - 1];
            self.next += k;
        }
        front
    }
}

impl<T> Entry<T> {
    /// A message from `link` without handles.
    fn remote(data: Bytes, link: &Arc<Link>) -> Entry<T> {
        Entry::One(Item::Remote {
            data,
            handles: None,
            link: link.clone(),
        })
    }

    /// Messages (values) it holds.
    fn len(&self) -> usize {
        match self {
            Entry::One(_) => 1,
            Entry::Run(r) => r.data.len(),
        }
    }
}

/// Runs of fewer messages than this go into the buffer an item each: a
/// run costs an allocation of its own.
const RUN_MIN: usize = 4;

/// Messages [`Queue::take_batch`] took for `recv_many`, in runs of
/// messages from one link.
#[derive(Default)]
pub(crate) struct Batch {
    runs: VecDeque<Run>,
    /// Messages in all runs.
    len: usize,
}

impl Batch {
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, data: Bytes, link: &Arc<Link>) {
        self.len += 1;
        match self.runs.back_mut() {
            Some(Run {
                data: Msgs::Each(d),
                link: l,
            }) if Arc::ptr_eq(l, link) => d.push_back(data),
            _ => self.runs.push_back(Run {
                data: Msgs::Each(VecDeque::from([data])),
                link: link.clone(),
            }),
        }
    }

    fn push_run(&mut self, run: Run) {
        self.len += run.data.len();
        self.runs.push_back(run);
    }

    /// The next run: its messages, and the link they came from.
    pub(crate) fn pop_run(&mut self) -> Option<(Msgs, Arc<Link>)> {
        let r = self.runs.pop_front()?;
        self.len -= r.data.len();
        Some((r.data, r.link))
    }

    /// Puts a run taken with [`pop_run`](Batch::pop_run) back in front.
    pub(crate) fn unpop_run(&mut self, data: Msgs, link: Arc<Link>) {
        self.len += data.len();
        self.runs.push_front(Run { data, link });
    }
}

/// What the front of a buffer holds after [`Queue::take_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Front {
    /// Nothing.
    Empty,
    /// More messages the batch would take: it reached its `max`.
    More,
    /// Something to take on its own, ready now: a value sent from this
    /// program (it cannot fail to decode), or anything on a rendezvous
    /// queue (each take there is reported to the sender as it happens).
    Single,
    /// A message that may take long to decode or fail to: a large one, or
    /// one carrying handles.
    Other,
}

/// How a queue ended, once it has.
#[derive(Debug, Clone)]
enum End {
    /// Every sender is gone, or `hangup`: `Ok(None)` after the buffer.
    Clean,
    /// The only source failed: one error after the buffer, then `Ok(None)`.
    /// Boxed: rare, and an idle queue stays small.
    Failed(Box<Error>),
}

struct State<T> {
    items: VecDeque<Entry<T>>,
    /// Messages (values) in `items`, runs counted message by message.
    count: usize,
    local_len: usize,
    /// Live local `Sender` groups (each `Sender` clone set counts once).
    senders: usize,
    /// Holders that keep the queue open without sending (an export).
    keepers: usize,
    links: Vec<Arc<Link>>,
    receivers: usize,
    rx_waker: Option<Waker>,
    end: Option<End>,
    error_reported: bool,
    next_seq: u64,
    /// The receiver travelled to a peer: a relay forwards each local
    /// value, and a local send completes only once its value went on (see
    /// [`Queue::set_relay`]).
    relay: bool,
    /// The local value the relay took and has not yet sent on.
    relaying: Option<u64>,
    /// A local value the relay could not send on, for its sender, and
    /// why, when the value itself was refused (not the channel closed).
    /// Boxed: rare, and an idle queue stays small.
    #[allow(clippy::type_complexity)]
    returned: Option<Box<(u64, T, Option<SendErrorKind>)>>,
    /// The relay is a backend's (`nats`): a value counts as sent only once
    /// the backend confirmed it, so `try_send` never completes.
    backend: bool,
    /// Local values taken by a receiver, in total (a backend acknowledges
    /// its values as they are taken).
    taken: u64,
}

/// The buffer of one receiving end.
pub(crate) struct Queue<T> {
    st: Mutex<State<T>>,
    capacity: usize,
    /// Values left in the buffer after the last remote take (see
    /// `taken_from`).
    left: std::sync::atomic::AtomicUsize,
    /// Signalled when local space frees up or a local item is taken.
    pub(crate) space: Notify,
    /// Takes messages from peers as they arrive (see [`Queue::set_tap`]).
    tap: std::sync::OnceLock<Tap>,
}

/// Takes a message from a peer in the connection's reader, as it
/// arrives, instead of the buffer: given the message's connection and its
/// bytes, returns whether it took the message (see [`Queue::set_tap`]).
pub(crate) type Tap = Box<dyn Fn(&Arc<crate::conn::Conn>, &[u8]) -> bool + Send + Sync>;

/// The largest message a [`Tap`] is offered: it runs in the reader, which
/// reads nothing meanwhile.
const TAP_MAX: usize = 4 << 10;

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

/// Outcome of a local push.
pub(crate) enum Push<T> {
    Done(u64),
    Full(T),
    Closed(T),
}

impl<T> Queue<T> {
    pub(crate) fn new(capacity: usize, senders: usize, keepers: usize) -> Arc<Queue<T>> {
        Arc::new(Queue {
            st: Mutex::new(State {
                items: VecDeque::new(),
                count: 0,
                local_len: 0,
                senders,
                keepers,
                links: Vec::new(),
                receivers: 1,
                rx_waker: None,
                end: None,
                error_reported: false,
                next_seq: 0,
                relay: false,
                relaying: None,
                returned: None,
                backend: false,
                taken: 0,
            }),
            capacity,
            left: std::sync::atomic::AtomicUsize::new(0),
            space: Notify::new(),
            tap: std::sync::OnceLock::new(),
        })
    }

    /// Has `tap` offered each message from a peer as it arrives, in the
    /// connection's reader, before the buffer: one without handles, at
    /// most `TAP_MAX` bytes, while the buffer is empty (so none overtakes
    /// a message buffered before it), on a queue with a buffer. A message
    /// the tap takes counts as taken by a receiver; one it declines goes
    /// into the buffer. A queue has one tap at most; false if it had one.
    /// A tap must be quick and must not take a connection's or a queue's
    /// lock.
    pub(crate) fn set_tap(&self, tap: Tap) -> bool {
        self.tap.set(tap).is_ok()
    }

    /// Messages of `link` arrived: `tapped` the tap took, then the rest
    /// went into the buffer (`buffered`: some did). Wakes the receiver if
    /// it has something new, then reports the tapped ones as taken,
    /// outside the lock.
    fn delivered(
        &self,
        mut st: std::sync::MutexGuard<'_, State<T>>,
        link: &Arc<Link>,
        tapped: u32,
        buffered: bool,
    ) {
        if buffered {
            Self::wake_rx(&mut st);
        }
        let left = st.count;
        drop(st);
        self.took(link, tapped, left, false);
    }

    /// Offers `data`, from `link`, to the tap (see [`set_tap`]); true if
    /// it took it.
    ///
    /// [`set_tap`]: Queue::set_tap
    fn tapped(&self, st: &State<T>, link: &Arc<Link>, data: &[u8]) -> bool {
        match self.tap.get() {
            Some(tap) if self.capacity > 0 && st.items.is_empty() && data.len() <= TAP_MAX => {
                tap(link.conn(), data)
            }
            _ => false,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Values in the buffer, not yet taken.
    pub(crate) fn buffered(&self) -> usize {
        lock(&self.st).count
    }

    /// Whether messages from peers still go into the buffer: a receiver
    /// is left and the queue did not fail.
    fn takes_messages(st: &State<T>) -> bool {
        st.receivers > 0 && !matches!(st.end, Some(End::Failed(_)))
    }

    fn wake_rx(st: &mut State<T>) {
        if let Some(w) = st.rx_waker.take() {
            w.wake();
        }
    }

    /// Tries to put a local value in the buffer.
    pub(crate) fn push_local(&self, value: T) -> Push<T> {
        let mut st = lock(&self.st);
        if st.end.is_some() || st.receivers == 0 {
            return Push::Closed(value);
        }
        let room = if st.relay { 1 } else { self.capacity.max(1) };
        if st.local_len >= room {
            return Push::Full(value);
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        st.items.push_back(Entry::One(Item::Local(value, seq)));
        st.count += 1;
        st.local_len += 1;
        Self::wake_rx(&mut st);
        Push::Done(seq)
    }

    /// Where the send of local item `seq` stands, read in one step under
    /// the lock: still waiting (`None`: in the buffer, or held by the
    /// relay), taken (`Some(Ok(()))`), or given back by the relay with
    /// why, when the value itself was refused (`Some(Err(..))`). One step,
    /// because the relay gives a value back and stops holding it in one:
    /// a send that looked for the value given back, then found it no
    /// longer held, would pass for delivered.
    pub(crate) fn send_outcome(&self, seq: u64) -> Option<Result<(), (T, Option<SendErrorKind>)>> {
        let mut st = lock(&self.st);
        if st.returned.as_ref().is_some_and(|r| r.0 == seq) {
            if let Some(r) = st.returned.take() {
                let (_, v, why) = *r;
                return Some(Err((v, why)));
            }
        }
        let queued = st.relaying == Some(seq)
            || st
                .items
                .iter()
                .any(|i| matches!(i, Entry::One(Item::Local(_, s)) if *s == seq));
        (!queued).then_some(Ok(()))
    }

    /// Takes local item `seq` back out if it is still queued (a cancelled
    /// rendezvous send).
    pub(crate) fn unpush(&self, seq: u64) -> Option<T> {
        let mut st = lock(&self.st);
        let pos = st
            .items
            .iter()
            .position(|i| matches!(i, Entry::One(Item::Local(_, s)) if *s == seq))?;
        st.local_len -= 1;
        st.count -= 1;
        match st.items.remove(pos) {
            Some(Entry::One(Item::Local(v, _))) => Some(v),
            _ => None,
        }
    }

    /// Makes this queue a relay's: its receiver travelled to a peer and
    /// a relay task forwards every value into the remote channel, taking
    /// one only when the remote channel has room. A local send then holds
    /// one value at most and completes once the relay sent it on, so the
    /// channel's capacity is the remote buffer's, exactly, as if the
    /// senders wrote to it directly.
    pub(crate) fn set_relay(&self) {
        lock(&self.st).relay = true;
    }

    /// Makes this queue the relay of a backend beyond one connection
    /// (`nats`): as [`set_relay`](Queue::set_relay), and `try_send` is
    /// refused (`Full`), since a value counts as sent only once the backend
    /// confirmed it, which takes a round trip.
    // Used by the `nats` backend only.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn set_backend(&self) {
        let mut st = lock(&self.st);
        st.relay = true;
        st.backend = true;
    }

    /// Whether this queue is a backend's relay (see `set_backend`).
    pub(crate) fn is_backend(&self) -> bool {
        lock(&self.st).backend
    }

    /// Drops every value waiting in the buffer (a backend hands them back
    /// to its server for another receiver), so none is taken twice.
    // Used by the `nats` backend only.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn clear(&self) {
        let items = {
            let mut st = lock(&self.st);
            st.local_len = 0;
            st.count = 0;
            std::mem::take(&mut st.items)
        };
        self.space.notify_waiters();
        drop(items);
    }

    /// How many local values receivers took so far.
    // Used by the `nats` backend only.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn taken(&self) -> u64 {
        lock(&self.st).taken
    }

    /// Whether local sends wait until their value was taken: a rendezvous
    /// channel, or a relay's queue.
    pub(crate) fn completes_on_take(&self) -> bool {
        self.completes_on_take_in(&lock(&self.st))
    }

    /// [`completes_on_take`](Queue::completes_on_take), with the state
    /// locked already.
    fn completes_on_take_in(&self, st: &State<T>) -> bool {
        self.capacity == 0 || st.relay
    }

    /// The relay sent on the value it took (`back` is `None`), or could
    /// not and gives it back for its sender.
    pub(crate) fn relay_done(&self, back: Option<T>) {
        let mut st = lock(&self.st);
        if let (Some(seq), Some(v)) = (st.relaying.take(), back) {
            st.returned = Some(Box::new((seq, v, None)));
        }
        drop(st);
        self.space.notify_waiters();
    }

    /// The relay refused the value it took, for a reason of its own (it
    /// does not encode, it is too large): its sender gets it back with
    /// `why`, and the channel goes on.
    pub(crate) fn relay_refused(&self, value: T, why: SendErrorKind) {
        let mut st = lock(&self.st);
        if let Some(seq) = st.relaying.take() {
            st.returned = Some(Box::new((seq, value, Some(why))));
        }
        drop(st);
        self.space.notify_waiters();
    }

    /// Whether a receiver is waiting for a value right now.
    pub(crate) fn has_waiting_receiver(&self) -> bool {
        let st = lock(&self.st);
        st.rx_waker.is_some() && st.items.is_empty()
    }

    /// Whether sends would fail now.
    pub(crate) fn is_closed(&self) -> bool {
        let st = lock(&self.st);
        st.end.is_some() || st.receivers == 0
    }

    /// Why a local send found the queue closed: its only source failed,
    /// or it ended otherwise (receiver dropped, hangup).
    pub(crate) fn why_closed(&self) -> SendErrorKind {
        match &lock(&self.st).end {
            Some(End::Failed(e)) => SendErrorKind::closed(Some(Error::clone(e))),
            _ => SendErrorKind::Closed,
        }
    }

    pub(crate) fn sender_gone(&self) {
        let mut st = lock(&self.st);
        st.senders = st.senders.saturating_sub(1);
        Self::check_done(&mut st);
    }

    pub(crate) fn add_receiver(&self) {
        lock(&self.st).receivers += 1;
    }

    /// A `Receiver` of this queue was dropped. When it was the last, every
    /// source is told the receiver is gone and buffered items are dropped,
    /// except the local values whose sends complete only once taken (a
    /// rendezvous, a relay): those stay for their senders, which find the
    /// queue closed and take them back, so such a send fails with its
    /// value instead of passing for delivered.
    pub(crate) fn receiver_gone(&self) {
        let (items, links) = {
            let mut st = lock(&self.st);
            st.receivers = st.receivers.saturating_sub(1);
            if st.receivers > 0 {
                return;
            }
            let all = std::mem::take(&mut st.items);
            let dropped = if self.completes_on_take_in(&st) {
                let (kept, dropped): (VecDeque<_>, _) = all
                    .into_iter()
                    .partition(|item| matches!(item, Entry::One(Item::Local(..))));
                st.count = kept.len();
                st.items = kept;
                dropped
            } else {
                st.local_len = 0;
                st.count = 0;
                all
            };
            (dropped, std::mem::take(&mut st.links))
        };
        self.space.notify_waiters();
        for l in &links {
            l.conn()
                .defer_close(l.chan, CloseCode::ReceiverGone, "receiver dropped");
        }
        drop(items);
    }

    fn check_done(st: &mut State<T>) {
        if st.end.is_none() && st.senders == 0 && st.keepers == 0 && st.links.is_empty() {
            st.end = Some(End::Clean);
            Self::wake_rx(st);
        }
    }

    /// Takes the next item, or registers `cx` to be woken. `Ready(None)`
    /// means the queue has ended (and the end was reported). Without a
    /// context (`try_recv`) nothing is registered and no rendezvous credit
    /// is granted: `Pending` then just means empty.
    pub(crate) fn poll_take(
        &self,
        cx: Option<&mut Context<'_>>,
    ) -> Poll<Result<Option<Item<T>>, RecvError>> {
        let mut st = lock(&self.st);
        // A rendezvous take of a remote message is reported in the same
        // step (see `take_rendezvous`).
        while let (0, Some(Entry::One(Item::Remote { link, .. }))) =
            (self.capacity, st.items.front())
        {
            let link = link.clone();
            drop(st);
            if let Some(item) = self.take_rendezvous(&link) {
                return Poll::Ready(Ok(Some(item)));
            }
            // Taken or dropped meanwhile: look again.
            st = lock(&self.st);
        }
        if let Some(item) = Self::pop_item(&mut st) {
            if let Item::Local(_, seq) = item {
                if st.relay {
                    st.relaying = Some(seq);
                }
                st.local_len -= 1;
                st.taken += 1;
                drop(st);
                self.space.notify_waiters();
            } else {
                // For `taken_from`: read here, under the lock already held.
                self.left
                    .store(st.count, std::sync::atomic::Ordering::Relaxed);
            }
            return Poll::Ready(Ok(Some(item)));
        }
        match st.end.clone() {
            Some(End::Clean) => Poll::Ready(Ok(None)),
            Some(End::Failed(e)) => {
                if st.error_reported {
                    Poll::Ready(Ok(None))
                } else {
                    st.error_reported = true;
                    Poll::Ready(Err(RecvError::Lost(*e)))
                }
            }
            None => {
                let Some(cx) = cx else {
                    return Poll::Pending;
                };
                st.rx_waker = Some(cx.waker().clone());
                let rendezvous: Vec<Arc<Link>> = if self.capacity == 0 {
                    st.links.clone()
                } else {
                    Vec::new()
                };
                drop(st);
                // A rendezvous receiver grants one credit to each source
                // while it waits (outside the queue lock: lock order).
                for l in rendezvous {
                    if l.take_grant_peek() {
                        l.conn().rendezvous_grant(l.chan);
                    }
                }
                Poll::Pending
            }
        }
    }

    /// For `recv_many`: takes the messages at the front of the buffer that
    /// arrived from a peer, carry no handles and are smaller than
    /// `small`, at most `max` of them, under one lock, into `out`. Returns
    /// what the front holds next, and how many values stay buffered. A
    /// rendezvous queue takes each message in its own step and batches
    /// none (see `take_rendezvous`).
    pub(crate) fn take_batch(&self, max: usize, small: usize, out: &mut Batch) -> (Front, usize) {
        if self.capacity == 0 {
            return (Front::Single, 0);
        }
        let mut guard = lock(&self.st);
        let st = &mut *guard;
        let front = loop {
            match st.items.front_mut() {
                Some(Entry::One(Item::Remote {
                    data,
                    handles: None,
                    ..
                })) if data.len() < small => {
                    if out.len() >= max {
                        break Front::More;
                    }
                    if let Some(Entry::One(Item::Remote { data, link, .. })) = st.items.pop_front()
                    {
                        out.push(data, &link);
                        st.count -= 1;
                    }
                }
                Some(Entry::Run(r))
                    if out.len() + r.data.len() <= max && r.data.all_below(small) =>
                {
                    // All of it: the run moves as it is.
                    if let Some(Entry::Run(r)) = st.items.pop_front() {
                        st.count -= r.data.len();
                        out.push_run(r);
                    }
                }
                Some(Entry::Run(r)) => {
                    if let Msgs::Packed(p) = &mut r.data {
                        if small > crate::proto::SMALL_MESSAGE && out.len() < max {
                            let part = p.split_front(max - out.len());
                            st.count -= part.ends.len();
                            out.push_run(Run {
                                data: Msgs::Packed(part),
                                link: r.link.clone(),
                            });
                        }
                    }
                    while out.len() < max && r.data.front_len().is_some_and(|n| n < small) {
                        if let Some(data) = r.data.pop_front() {
                            out.push(data, &r.link);
                            st.count -= 1;
                        }
                    }
                    if !r.data.is_empty() {
                        break if out.len() >= max {
                            Front::More
                        } else {
                            Front::Other
                        };
                    }
                    st.items.pop_front();
                }
                Some(Entry::One(Item::Local(..))) => break Front::Single,
                Some(Entry::One(_)) => break Front::Other,
                None => break Front::Empty,
            }
        };
        let left = st.count;
        if !out.is_empty() {
            self.left.store(left, std::sync::atomic::Ordering::Relaxed);
        }
        (front, left)
    }

    /// Takes the message at the front of the buffer, the first of a run
    /// as an item of its own.
    fn pop_item(st: &mut State<T>) -> Option<Item<T>> {
        loop {
            let item = match st.items.front_mut()? {
                Entry::One(_) => match st.items.pop_front() {
                    Some(Entry::One(item)) => item,
                    _ => continue,
                },
                Entry::Run(r) => {
                    let Some(data) = r.data.pop_front() else {
                        st.items.pop_front();
                        continue;
                    };
                    let link = r.link.clone();
                    if r.data.is_empty() {
                        st.items.pop_front();
                    }
                    Item::Remote {
                        data,
                        handles: None,
                        link,
                    }
                }
            };
            st.count -= 1;
            return Some(item);
        }
    }

    /// Puts messages [`take_batch`](Queue::take_batch) took, and their
    /// slots did not count as taken, back at the front of the buffer, in
    /// their order.
    pub(crate) fn put_back(&self, mut batch: Batch) {
        let mut st = lock(&self.st);
        st.count += batch.len;
        while let Some(r) = batch.runs.pop_back() {
            if !r.data.is_empty() {
                st.items.push_front(Entry::Run(r));
            }
        }
        self.left
            .store(st.count, std::sync::atomic::Ordering::Relaxed);
    }

    /// On a rendezvous queue: takes the first item if it is still a
    /// message of `link`, and reports the take to the connection in the
    /// same step, under its lock. So a message is either taken and
    /// reported before the channel's `CLOSE` (or the connection's end),
    /// or dropped by that close and given back to its sender, never both.
    /// The receiver's next wait grants again only once the take counts.
    fn take_rendezvous(&self, link: &Arc<Link>) -> Option<Item<T>> {
        link.conn().take_rendezvous(link.chan, || {
            let mut st = lock(&self.st);
            match st.items.front() {
                Some(Entry::One(Item::Remote { link: l, .. })) if Arc::ptr_eq(l, link) => {
                    Self::pop_item(&mut st)
                }
                _ => None,
            }
        })
    }

    /// After taking a remote item: frees its slot for the source (one
    /// credit per value taken, as in Go each receive lets one waiting send
    /// in). The connection sends it at its next transmit. (A rendezvous
    /// take was reported as it was taken.)
    pub(crate) fn taken_from(&self, link: &Arc<Link>) {
        let buffered = self.left.load(std::sync::atomic::Ordering::Relaxed);
        self.took(link, 1, buffered, false);
    }

    /// [`taken_from`](Queue::taken_from) for `n` values of a batch
    /// (`recv_many`) taken together, with `buffered` values still waiting
    /// for the program (in the buffer, or taken together with these and
    /// not yet handed out): their grants may be written at once
    /// (`Link::took`, `eager`).
    pub(crate) fn taken_with(&self, link: &Arc<Link>, n: u32, buffered: usize) {
        self.took(link, n, buffered, true);
    }

    /// Reports `n` takes from `link` to it (`Link::took`), on a queue
    /// with a buffer: one slot freed for each.
    fn took(&self, link: &Arc<Link>, n: u32, buffered: usize, eager: bool) {
        if self.capacity > 0 && n > 0 {
            link.took(link.take_grants(n), n, buffered, self.capacity, eager);
        }
    }

    /// On a rendezvous queue, takes out the messages not yet taken of
    /// `link` (of every link: `None`), for the caller to drop outside the
    /// lock: their channel closed or their connection ended, so each goes
    /// back to its sender, whose send fails with it (see
    /// `take_rendezvous`).
    fn untaken(&self, st: &mut State<T>, link: Option<&Arc<Link>>) -> VecDeque<Entry<T>> {
        if self.capacity > 0 {
            return VecDeque::new();
        }
        let of = |l: &Arc<Link>| link.is_none_or(|k| Arc::ptr_eq(l, k));
        let (dropped, kept): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut st.items)
            .into_iter()
            .partition(|item| match item {
                Entry::One(Item::Remote { link: l, .. }) => of(l),
                Entry::Run(r) => of(&r.link),
                Entry::One(Item::Local(..)) => false,
            });
        st.count = kept.iter().map(Entry::len).sum();
        st.items = kept;
        dropped
    }

    /// Closes the queue's remote sources (`import_receiver_n` reached its
    /// count) and ends it cleanly.
    pub(crate) fn finish(&self) {
        let links = {
            let mut st = lock(&self.st);
            st.end = Some(End::Clean);
            std::mem::take(&mut st.links)
        };
        for l in &links {
            l.conn()
                .defer_close(l.chan, CloseCode::ReceiverGone, "count reached");
        }
    }
}

impl<T: Send + 'static> Inbound for Queue<T> {
    fn deliver(
        &self,
        link: &Arc<Link>,
        data: Bytes,
        handles: Option<HandleGuard>,
    ) -> Option<Option<HandleGuard>> {
        let mut st = lock(&self.st);
        if !Self::takes_messages(&st) {
            return Some(handles);
        }
        if handles.is_none() && self.tapped(&st, link, &data) {
            self.delivered(st, link, 1, false);
            return None;
        }
        st.items.push_back(Entry::One(Item::Remote {
            data,
            handles,
            link: link.clone(),
        }));
        st.count += 1;
        Self::wake_rx(&mut st);
        None
    }

    fn deliver_many(&self, link: &Arc<Link>, data: &mut Vec<Bytes>) -> bool {
        let mut st = lock(&self.st);
        if !Self::takes_messages(&st) {
            return false;
        }
        let tapped = data
            .iter()
            .take_while(|d| self.tapped(&st, link, d))
            .count();
        if tapped > 0 {
            data.drain(..tapped);
            if data.is_empty() {
                self.delivered(st, link, tapped as u32, false);
                return true;
            }
        }
        st.count += data.len();
        if self.capacity > 0 && data.len() >= RUN_MIN {
            // The caller's vector goes into the buffer as it is; the
            // caller goes on with a new one of the same size.
            let run = std::mem::replace(data, Vec::with_capacity(data.capacity()));
            st.items.push_back(Entry::Run(Run {
                data: Msgs::Each(VecDeque::from(run)),
                link: link.clone(),
            }));
        } else {
            st.items
                .extend(data.drain(..).map(|data| Entry::remote(data, link)));
        }
        self.delivered(st, link, tapped as u32, true);
        true
    }

    fn deliver_packed(&self, link: &Arc<Link>, data: Bytes, ends: Vec<u32>) -> bool {
        let mut st = lock(&self.st);
        if !Self::takes_messages(&st) {
            return false;
        }
        let mut msgs = Msgs::Packed(Packed {
            buf: data,
            ends,
            next: 0,
            from: 0,
        });
        let mut tapped = 0;
        while msgs.front().is_some_and(|d| self.tapped(&st, link, d)) {
            msgs.skip();
            tapped += 1;
        }
        if msgs.is_empty() {
            self.delivered(st, link, tapped, false);
            return true;
        }
        st.count += msgs.len();
        if self.capacity > 0 && msgs.len() >= RUN_MIN {
            st.items.push_back(Entry::Run(Run {
                data: msgs,
                link: link.clone(),
            }));
        } else {
            while let Some(data) = msgs.pop_front() {
                st.items.push_back(Entry::remote(data, link));
            }
        }
        self.delivered(st, link, tapped, true);
        true
    }

    fn link_ended(&self, link: &Arc<Link>, error: Option<Error>) {
        let mut st = lock(&self.st);
        let before = st.links.len();
        st.links.retain(|l| !Arc::ptr_eq(l, link));
        if st.links.len() == before {
            return;
        }
        let untaken = self.untaken(&mut st, Some(link));
        match error {
            Some(e) if st.senders == 0 && st.keepers == 0 && st.links.is_empty() => {
                if st.end.is_none() {
                    st.end = Some(End::Failed(Box::new(e)));
                }
                Self::wake_rx(&mut st);
            }
            _ => Self::check_done(&mut st),
        }
        drop(st);
        drop(untaken);
    }

    fn add_link(&self, link: Arc<Link>) -> bool {
        let mut st = lock(&self.st);
        if st.end.is_some() || st.receivers == 0 {
            return false;
        }
        st.links.push(link);
        if self.capacity == 0 {
            // A rendezvous receiver already waiting grants credit only
            // when polled: poll it again so the new source gets its grant.
            Self::wake_rx(&mut st);
        }
        true
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    fn queued(&self) -> usize {
        lock(&self.st).count
    }

    fn fail(&self, e: Error) {
        let (links, untaken) = {
            let mut st = lock(&self.st);
            if st.end.is_none() {
                st.end = Some(End::Failed(Box::new(e)));
            }
            st.keepers = 0;
            Self::wake_rx(&mut st);
            let untaken = self.untaken(&mut st, None);
            (std::mem::take(&mut st.links), untaken)
        };
        self.space.notify_waiters();
        drop((links, untaken));
    }

    fn hangup(&self) {
        let (links, untaken) = {
            let mut st = lock(&self.st);
            if st.end.is_none() {
                st.end = Some(End::Clean);
            }
            st.keepers = 0;
            Self::wake_rx(&mut st);
            let untaken = self.untaken(&mut st, None);
            (std::mem::take(&mut st.links), untaken)
        };
        self.space.notify_waiters();
        for l in &links {
            l.conn().defer_close(l.chan, CloseCode::Hangup, "hung up");
        }
        drop(untaken);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use crate::{Session, TryRecvError};

    const LIMIT: Duration = Duration::from_secs(10);

    /// A tap is offered each message as it arrives while the buffer is
    /// empty: what it takes frees its slot at once and never reaches the
    /// receiver; what it declines, and everything behind it until the
    /// buffer is empty again, goes to the receiver in order.
    #[tokio::test]
    async fn a_tap_takes_messages_as_they_arrive_and_what_it_declines_keeps_its_order() {
        let (a, b) = Session::pair();
        let mut rx = a.export_receiver::<u32>("tapped", 8).expect("export");
        let tx = tokio::time::timeout(LIMIT, b.import_sender::<u32>("tapped"))
            .await
            .expect("in time")
            .expect("import");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let into = seen.clone();
        assert!(rx.set_tap(Box::new(move |conn, data| {
            let v: u32 = crate::codec::decode(conn.codec, data).expect("a u32");
            // Multiples of 3 are taken, the rest declined.
            v % 3 == 0 && {
                crate::util::lock(&into).push(v);
                true
            }
        })));
        assert!(!rx.set_tap(Box::new(|_, _| true)), "one tap at most");
        let send = |values: std::ops::Range<u32>| {
            let (tx, b) = (tx.clone(), b.clone());
            async move {
                for v in values {
                    tx.send(v).await.expect("send");
                }
                tokio::time::timeout(LIMIT, b.drain(Some(LIMIT)))
                    .await
                    .expect("in time")
                    .expect("the values arrive");
            }
        };
        let taken = |want: &[u32]| assert_eq!(*crate::util::lock(&seen), want);
        send(0..1).await;
        taken(&[0]);
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
        // 1 is declined; 2 and 3 come behind it, so 3 is not offered.
        send(1..4).await;
        taken(&[0]);
        for want in 1..4 {
            assert_eq!(rx.try_recv().expect("buffered"), Some(want));
        }
        // The buffer is empty again: 6 is taken. Twenty taken values in a
        // row, without a receive, pass a buffer of 8: each freed its slot.
        send(6..7).await;
        let many: Vec<u32> = (1..=20).map(|i| 3 * (i + 2)).collect();
        tokio::time::timeout(LIMIT, async {
            for &v in &many {
                tx.send(v).await.expect("send");
            }
        })
        .await
        .expect("each taken value freed its slot");
        send(0..0).await;
        let mut want = vec![0, 6];
        want.extend(&many);
        taken(&want);
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
    }
}
