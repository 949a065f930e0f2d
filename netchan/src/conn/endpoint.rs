//! Where a channel id leads on this side: the endpoint table's entries,
//! and the narrow traits through which endpoints plug into a connection.
//!
//! A receiving endpoint is an [`Inbound`] (a channel's queue) fed through
//! a [`Link`] (one remote channel of this connection and its credit); a
//! sending endpoint is an [`Outbound`] (a channel's route) that credit
//! wakes. This module knows neither queues nor routes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;

use super::{Conn, ConnRef, HandleGuard};
use crate::error::Error;
use crate::proto::ChanId;
use crate::util::lock;

/// Where a channel id leads on this side.
pub(crate) enum Endpoint {
    /// We receive: messages go to this queue through this link.
    In(Arc<dyn Inbound>, Arc<Link>),
    /// We send: credit wakes this route.
    Out(Weak<dyn Outbound>),
    /// A handle that arrived in a message not yet decoded.
    Adopted,
}

impl Endpoint {
    /// The entry of a sending endpoint; the table does not keep it alive.
    pub(crate) fn outbound<O: Outbound>(route: &Arc<O>) -> Endpoint {
        let weak: Weak<O> = Arc::downgrade(route);
        Endpoint::Out(weak)
    }
}

/// What a connection needs from a receiving endpoint (a queue), without
/// knowing `T`.
pub(crate) trait Inbound: Send + Sync + 'static {
    /// A message arrived on `link`. Returns it back if the queue no longer
    /// takes messages (the caller drops it after releasing its locks).
    fn deliver(
        &self,
        link: &Arc<Link>,
        data: Bytes,
        handles: Option<HandleGuard>,
    ) -> Option<Option<HandleGuard>>;
    /// Messages without handles arrived on `link`, in this order: takes
    /// them all out of `data`, as many `deliver`s would, under one lock.
    /// False (and `data` untouched) if the queue no longer takes messages.
    fn deliver_many(&self, link: &Arc<Link>, data: &mut Vec<Bytes>) -> bool;
    /// Small messages without handles arrived on `link`, back to back in
    /// `data`, message `i` ending at `ends[i]`: as
    /// [`deliver_many`](Inbound::deliver_many). False if the queue no
    /// longer takes messages.
    fn deliver_packed(&self, link: &Arc<Link>, data: Bytes, ends: Vec<u32>) -> bool;
    /// `link` ended: cleanly (the peer closed it) or with an error.
    fn link_ended(&self, link: &Arc<Link>, error: Option<Error>);
    /// Adds a remote source. False if the queue is closed.
    fn add_link(&self, link: Arc<Link>) -> bool;
    /// The receive buffer size.
    fn capacity(&self) -> usize;
    /// Values in the buffer, not yet taken (stats).
    fn queued(&self) -> usize;
    /// Ends the queue from its name (`hangup`): sources are closed, the
    /// receiver gets the buffer then `Ok(None)`.
    fn hangup(&self);
    /// Ends the queue because the session that exported it failed: the
    /// receiver gets the buffer, then the error.
    fn fail(&self, e: Error);
}

/// What a connection needs from a sending endpoint (a route).
pub(crate) trait Outbound: Send + Sync + 'static {
    /// Credit arrived, the channel was accepted or closed, or the
    /// connection ended: senders waiting on the route look again.
    fn wake(&self);
    /// Time senders spent waiting for credit on it, in total (stats).
    fn send_wait(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// A remote channel feeding a queue.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) conn: ConnRef,
    pub(crate) chan: ChanId,
    /// For `import_receiver_n`: grants still allowed (`None`: unlimited).
    pub(crate) grants_left: Mutex<Option<u64>>,
    limited: bool,
    /// Takes not yet handed to the connection, packed as
    /// `grant << 32 | taken` (see [`Link::took`]).
    batch: AtomicU64,
}

/// During a batch of takes, urgent grants are written by the taking task
/// once they make `1 / EAGER_GRANT` of the buffer (see [`Link::took`]).
/// Bench `oneway-32B-sink` (window of 1,024), three alternations: 5.8 to
/// 6.7 M values a second with the writer left to write them, 7.5 to 8.3 M
/// with a quarter (an eighth and a half were no better, measured with
/// every take eager).
const EAGER_GRANT: usize = 4;

impl Link {
    pub(crate) fn new(conn: ConnRef, chan: ChanId, grants_left: Option<u64>) -> Arc<Link> {
        Arc::new(Link {
            conn,
            chan,
            limited: grants_left.is_some(),
            grants_left: Mutex::new(grants_left),
            batch: AtomicU64::new(0),
        })
    }

    pub(crate) fn conn(&self) -> &Arc<Conn> {
        self.conn.conn()
    }

    /// The receiving program took `taken` messages from this link and
    /// `grant` slots are free; `buffered` values are still in the
    /// receiver's buffer. The first take since the writer last looked
    /// posts the link to it; later ones only add to the batch. So a
    /// receiver takes the connection's lock once per write, not once per
    /// message.
    ///
    /// The writer is woken at once when the sender may be waiting for the
    /// grants (the protocol core's rule, [`grants_urgent`]: the sender
    /// holds at most half its window by this side's count, or the take
    /// left the buffer empty with a quarter of it to grant). Otherwise the
    /// batch waits for the writer's next pass (the next read, or the next
    /// write): the sender has credit to spare.
    ///
    /// `eager`: the take is one of a batch (`recv_many`) that keeps this
    /// task busy decoding. Once such urgent grants make a quarter of the
    /// buffer ([`EAGER_GRANT`]), this task writes them itself if the
    /// writer is asleep ([`Conn::credit_now`]): on a one-thread runtime
    /// the writer would run only after the whole batch, and the sender,
    /// out of credit, would wait that long; so the sender fills the
    /// buffer again while the batch is decoded.
    ///
    /// [`grants_urgent`]: crate::proto::flow::grants_urgent
    pub(crate) fn took(
        self: &Arc<Self>,
        grant: u32,
        taken: u32,
        buffered: usize,
        capacity: usize,
        eager: bool,
    ) {
        let add = (u64::from(grant) << 32) | u64::from(taken);
        let before = self.batch.fetch_add(add, Ordering::AcqRel);
        let pending = (before + add) as u32 as usize;
        let urgent = crate::proto::flow::grants_urgent(capacity, buffered, pending);
        let now = eager && urgent && pending.saturating_mul(EAGER_GRANT) >= capacity;
        if before == 0 {
            self.conn().post_credit(self, urgent && !now);
        } else if urgent && !now {
            self.conn().kick();
        }
        if now {
            self.conn().credit_now();
        }
    }

    /// Takes the batch: `(grant, taken)`.
    pub(crate) fn take_batch(&self) -> (u32, u32) {
        let b = self.batch.swap(0, Ordering::AcqRel);
        ((b >> 32) as u32, b as u32)
    }

    /// How many of `n` more grants are allowed; consumes them.
    pub(crate) fn take_grants(&self, n: u32) -> u32 {
        if !self.limited {
            return n;
        }
        let mut g = lock(&self.grants_left);
        match g.as_mut() {
            None => n,
            Some(left) => {
                let granted = (*left).min(u64::from(n));
                *left -= granted;
                // At most `n`, so it fits.
                granted as u32
            }
        }
    }
}

impl Link {
    /// Whether a rendezvous grant is allowed (does not consume it: the
    /// grant is consumed when the message is taken).
    pub(crate) fn take_grant_peek(&self) -> bool {
        !matches!(*lock(&self.grants_left), Some(0))
    }
}
