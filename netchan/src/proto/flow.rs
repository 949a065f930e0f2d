//! Flow control and delivery confirmation: every credit and
//! acknowledgement rule of the protocol, for one channel, in one place.
//!
//! This module owns the counters of one channel end ([`Flow`]) and the
//! rules that move them; it knows nothing of frames' bytes, the channel
//! table or the connection's state, which `conn` keeps.
//!
//! # Credit
//!
//! Credit counts messages, not bytes. A channel's receiving side grants
//! one credit per free slot of its buffer (all of it up front, in the
//! `ACCEPT`, the `OPEN` or the handle table); the sending side spends one
//! per message and never sends without. Each message the receiving
//! program takes frees one slot, so it adds one to the pending grant: as
//! in Go, each receive lets one waiting send in, whatever the capacity.
//!
//! # Delivery confirmation
//!
//! The messages of a channel are numbered 1, 2, 3, … in sending order (each
//! side counts; nothing on the wire carries the number). The receiving
//! side confirms them with a cumulative count, `received`: the messages
//! now in its buffer or already taken. On a rendezvous channel (capacity
//! 0) a message counts once it is *taken*, since a rendezvous send
//! completes on take. `drain`, `sync` and `Undelivered { count }` count the
//! messages sent and not yet confirmed: they wait for arrival, not for the
//! receiving program.
//!
//! # One frame, held back only when nobody waits for it
//!
//! Both travel in one `CREDIT { grant, received }`. A receiving end whose
//! grant or confirmation changed is *marked* ([`Flow::arrived`],
//! [`Flow::took`] return whether it just became marked); every marked end
//! yields exactly one frame ([`Flow::credit_due`]) when the connection
//! writes. A mark is *urgent* ([`Flow::urgent`]) when a sender may be
//! waiting for it: a grant while the sender holds at most half the window
//! (in particular none: a full buffer, so one take lets one waiting send
//! in, whatever the capacity), grants of at least a quarter of the buffer
//! that leave it empty (the receiver keeps up and waits for more, so a
//! fast sender's window should not run dry while its values are in
//! flight), and anything on a
//! rendezvous channel. An
//! urgent mark is written at once; the rest (confirmations of arrival, and
//! grants to a sender with credit to spare) ride along with the next write
//! or leave after [`ACK_DELAY`], so a call answered at once costs no
//! frame of its own for them, and `drain` waits at most that much longer.
//!
//! # The sending side's invariant
//!
//! With `unconfirmed = sent - received`, the sending side keeps
//!
//! ```text
//! credit + unconfirmed <= max(capacity, 1)
//! ```
//!
//! It holds because a receiver grants a slot only for a message it took,
//! and it took only what had arrived, which the same or an earlier
//! `CREDIT` confirmed. A peer that breaks it, confirms more than was sent,
//! or less than before, has overflowed credit ([`Flow::on_credit`]).
//!
//! # Rendezvous
//!
//! A capacity-0 channel has no buffer and starts without credit. Its
//! receiver grants exactly one credit while a receive waits, and only when
//! none is out and every message delivered was taken
//! ([`Flow::may_grant_rendezvous`]), which keeps `credit + unconfirmed <= 1`.
//!
//! These sequence numbers and cumulative confirmations are exact, so a
//! side that resumes a session knows precisely which messages the peer
//! holds.

/// How long a confirmation or a grant nobody waits for may wait for a
/// write to ride along with before it is written on its own.
pub const ACK_DELAY: std::time::Duration = std::time::Duration::from_millis(1);

/// Whether grants not yet sent may be what a sender waits for, so that
/// they are written at once: the receiving end has a buffer of `capacity`
/// (at least 1) holding `buffered` values, and `pending` slots were freed
/// since its last `CREDIT`.
///
/// * The sender holds at most half its window by this side's count
///   (`buffered + pending` is at least half the buffer): in particular the
///   buffer was full, so one take lets one waiting send in, whatever the
///   capacity.
/// * Or the take left the buffer empty and the grants make at least a
///   quarter of the buffer: the receiver keeps up and waits for more, and
///   values in flight may hold the rest of the sender's window. Smaller
///   grants wait for the next write: a receiver that keeps up would
///   otherwise answer every small read with a small grant, and a fast
///   sender, woken by each, would write as little (measured: one-way
///   32-byte values through a window of 1,024 ran about 20 % faster with
///   the quarter than with any grant). (A request answered at once also
///   empties the buffer; its grant rides along with the answer.)
///
/// The connection core calls it for takes it batches before they reach
/// the protocol core, which applies the same rule.
pub(crate) fn grants_urgent(capacity: usize, buffered: usize, pending: usize) -> bool {
    pending > 0
        && (2 * (buffered + pending) >= capacity || (buffered == 0 && 4 * pending >= capacity))
}

/// Why a `CREDIT` is refused: the peer broke the invariant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Overflow;

/// The flow counters of one channel end. A sending end uses the sending
/// half, a receiving end the receiving half; `capacity` is the receiving
/// end's buffer either way.
#[derive(Debug, Default)]
pub(super) struct Flow {
    /// Receive buffer size of the receiving side (0: rendezvous).
    capacity: u32,
    // Sending side.
    /// Messages this side may still send.
    credit: u32,
    /// Messages sent: the sequence number of the last one.
    sent: u64,
    /// Messages the peer confirmed (`received` of its last `CREDIT`).
    acked: u64,
    // Receiving side.
    /// Credit granted to the peer and not yet used.
    outstanding: u32,
    /// Slots freed since the last `CREDIT`.
    pending_grant: u32,
    /// `received` as last reported to the peer.
    reported: u64,
    /// Messages that arrived whole.
    delivered: u64,
    /// Messages the receiving program took.
    taken: u64,
    /// Marked for a `CREDIT` at the next transmit.
    marked: bool,
}

impl Flow {
    /// A sending end whose receiver has `capacity` slots and has granted
    /// `credit` of them so far.
    pub(super) fn sending(capacity: u32, credit: u32) -> Flow {
        Flow {
            capacity,
            credit,
            ..Flow::default()
        }
    }

    /// A receiving end with a buffer of `capacity` that has granted
    /// nothing yet (see [`grant_all`](Self::grant_all)).
    pub(super) fn receiving(capacity: u32) -> Flow {
        Flow {
            capacity,
            ..Flow::default()
        }
    }

    /// The receiving end's buffer size.
    pub(super) fn capacity(&self) -> u32 {
        self.capacity
    }

    // --- sending side -------------------------------------------------

    /// The peer accepted with a buffer of `capacity`: all of it is credit.
    pub(super) fn accepted(&mut self, capacity: u32) {
        self.capacity = capacity;
        self.credit = capacity;
    }

    /// Messages this side may send now.
    pub(super) fn credit(&self) -> u32 {
        self.credit
    }

    /// Messages sent so far: the sequence number of the last one.
    pub(super) fn sent(&self) -> u64 {
        self.sent
    }

    /// Messages sent and not yet confirmed (0 on a receiving end).
    pub(super) fn unconfirmed(&self) -> u64 {
        self.sent - self.acked
    }

    /// A message leaves: it spends one credit and takes the next number.
    pub(super) fn spend(&mut self) {
        self.credit = self.credit.saturating_sub(1);
        self.sent += 1;
    }

    /// Applies the peer's `CREDIT { grant, received }` on an open channel;
    /// returns how many messages it newly confirmed.
    pub(super) fn on_credit(&mut self, grant: u32, received: u64) -> Result<u64, Overflow> {
        if received < self.acked || received > self.sent {
            return Err(Overflow);
        }
        let confirmed = received - self.acked;
        self.acked = received;
        let credit = u64::from(self.credit) + u64::from(grant);
        if credit + self.unconfirmed() > u64::from(self.capacity.max(1)) {
            return Err(Overflow);
        }
        self.credit = credit as u32;
        Ok(confirmed)
    }

    /// Applies a `CREDIT` that reached a channel this side is closing:
    /// its confirmations still count, its grant is moot. Returns how many
    /// messages it newly confirmed.
    pub(super) fn on_credit_closing(&mut self, received: u64) -> u64 {
        let received = received.clamp(self.acked, self.sent);
        let confirmed = received - self.acked;
        self.acked = received;
        confirmed
    }

    // --- receiving side -----------------------------------------------

    /// Grants the whole buffer up front (accepting, opening, or handing
    /// out a handle): the initial credit travels in that frame.
    pub(super) fn grant_all(&mut self, capacity: u32) {
        self.capacity = capacity;
        self.outstanding = capacity;
    }

    /// Credit granted to the peer and not yet used.
    pub(super) fn outstanding(&self) -> u32 {
        self.outstanding
    }

    /// The first chunk of a message arrived: it spends one of the credits
    /// granted. False if none was: the peer sent without credit.
    pub(super) fn spend_incoming(&mut self) -> bool {
        match self.outstanding.checked_sub(1) {
            Some(n) => {
                self.outstanding = n;
                true
            }
            None => false,
        }
    }

    /// A message arrived whole. Returns whether the end just became
    /// marked for a `CREDIT` (arrival is confirmed at the next transmit;
    /// on a rendezvous channel only taking counts).
    pub(super) fn arrived(&mut self) -> bool {
        self.delivered += 1;
        self.capacity > 0 && self.mark()
    }

    /// The program took `taken` messages and `grant` slots are free.
    /// Returns whether the end just became marked for a `CREDIT`.
    pub(super) fn took(&mut self, grant: u32, taken: u32) -> bool {
        self.pending_grant = self.pending_grant.saturating_add(grant);
        self.outstanding = self.outstanding.saturating_add(grant);
        self.taken += u64::from(taken);
        self.mark()
    }

    fn mark(&mut self) -> bool {
        !std::mem::replace(&mut self.marked, true)
    }

    /// Whether this end's pending `CREDIT` may be what a sender waits for
    /// ([`grants_urgent`]), or anything on a rendezvous channel.
    pub(super) fn urgent(&self) -> bool {
        self.marked
            && (self.capacity == 0
                || grants_urgent(
                    self.capacity as usize,
                    self.delivered.saturating_sub(self.taken) as usize,
                    self.pending_grant as usize,
                ))
    }

    /// Forgets the mark (the channel is closing: no more `CREDIT`).
    pub(super) fn unmark(&mut self) {
        self.marked = false;
    }

    /// Messages that arrived whole.
    pub(super) fn delivered(&self) -> u64 {
        self.delivered
    }

    /// What this receiving end confirms: arrival, or on a rendezvous
    /// channel, take.
    pub(super) fn received(&self) -> u64 {
        if self.capacity == 0 {
            self.taken
        } else {
            self.delivered
        }
    }

    /// At a transmit: the `(grant, received)` of the one `CREDIT` this end
    /// owes, if it owes one; clears the mark.
    pub(super) fn credit_due(&mut self) -> Option<(u32, u64)> {
        self.marked = false;
        let received = self.received();
        if self.pending_grant == 0 && received == self.reported {
            return None;
        }
        self.reported = received;
        Some((std::mem::take(&mut self.pending_grant), received))
    }

    /// Whether a waiting rendezvous receive may grant one credit now:
    /// none is out and every message delivered was taken.
    pub(super) fn may_grant_rendezvous(&self) -> bool {
        self.outstanding == 0 && self.delivered == self.taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_take_is_one_grant_and_arrival_is_confirmed_before_it() {
        let mut f = Flow::receiving(0);
        f.grant_all(4);
        assert!(f.spend_incoming());
        assert!(f.arrived(), "the first arrival marks the end");
        assert!(f.spend_incoming());
        assert!(!f.arrived(), "already marked");
        assert_eq!(f.credit_due(), Some((0, 2)));
        assert_eq!(f.credit_due(), None, "nothing new to say");
        assert!(f.took(1, 1));
        assert_eq!(f.credit_due(), Some((1, 2)));
        assert_eq!(f.outstanding(), 3);
    }

    #[test]
    fn a_rendezvous_end_confirms_on_take_not_on_arrival() {
        let mut f = Flow::receiving(0);
        assert!(f.may_grant_rendezvous());
        f.took(1, 0);
        assert_eq!(f.credit_due(), Some((1, 0)));
        assert!(f.spend_incoming());
        assert!(!f.arrived(), "arrival alone says nothing");
        assert!(!f.may_grant_rendezvous());
        f.took(0, 1);
        assert_eq!(f.credit_due(), Some((0, 1)));
        assert!(f.may_grant_rendezvous());
    }

    #[test]
    fn the_sender_refuses_confirmations_out_of_range_and_credit_past_the_window() {
        let mut f = Flow::sending(2, 2);
        f.spend();
        assert_eq!(f.on_credit(0, 2), Err(Overflow), "more than sent");
        assert_eq!(f.on_credit(1, 1), Ok(1));
        assert_eq!(f.credit(), 2);
        assert_eq!(f.on_credit(0, 0), Err(Overflow), "backwards");
        assert_eq!(f.on_credit(1, 1), Err(Overflow), "past the window");
        assert_eq!(f.on_credit_closing(7), 0, "clamped to what was sent");
    }
}
