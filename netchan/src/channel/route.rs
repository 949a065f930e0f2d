//! Where a remote `Sender` sends: one remote channel, or, for an exported
//! sender, every importer's channel (each value goes to exactly one member
//! with free credit).
//!
//! A route is the connection's `conn::Outbound` (credit wakes it) and,
//! exported, its `conn::SenderExport`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use tokio::sync::Notify;

use crate::conn::{ConnRef, Outbound, SendOutcome, SenderExport};
use crate::proto::{ChanId, CloseCode};
use crate::util::lock;

/// One remote channel a route may send on.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) conn: ConnRef,
    pub(crate) chan: ChanId,
}

/// One member of an exported sender's route, with what senders last
/// learnt of its credit.
///
/// A sender that finds the member without credit marks it, and later
/// sends pass it by without taking its connection's lock; the member's
/// connection, as it takes credit in, wakes the slot ([`Outbound::wake`]),
/// which clears the mark. With many importers of which most are full
/// (senders ahead of receivers), a send would otherwise lock one
/// connection after another before finding room.
#[derive(Debug)]
pub(crate) struct Slot {
    member: Member,
    /// `wakes << 1 | passed_by`. A sender marks the slot only if no wake
    /// came since it read this before its attempt: credit that arrives
    /// after the attempt looked comes with a wake, which either makes the
    /// mark fail or clears it.
    state: AtomicU64,
    route: Weak<Route>,
}

impl Outbound for Slot {
    fn wake(&self) {
        // A new count, with the mark cleared.
        let _ = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                Some((s | 1).wrapping_add(1))
            });
        if let Some(r) = self.route.upgrade() {
            r.notify.notify_waiters();
        }
    }

    fn send_wait(&self) -> std::time::Duration {
        self.route
            .upgrade()
            .map_or(std::time::Duration::ZERO, |r| r.send_wait())
    }
}

/// A set of remote channels behind one `Sender`.
#[derive(Debug)]
pub(crate) struct Route {
    /// Fixed for a single remote channel; grows and shrinks for an export.
    single: Option<Member>,
    /// Copy on write: senders take a snapshot without holding the lock
    /// while they try members (whose connection locks come after it).
    members: Mutex<Arc<Vec<Arc<Slot>>>>,
    /// Woken on credit, delivery confirmations, and member changes.
    pub(crate) notify: Notify,
    /// An export route waits for importers; a single route closes with
    /// its channel.
    export: bool,
    closed: AtomicBool,
    /// Why an export route closed, when its session's connection failed.
    failed: OnceLock<crate::Error>,
    rr: AtomicUsize,
    /// The last value sent was large: the next one is encoded on the
    /// blocking pool before it is offered to the members.
    pub(crate) large: AtomicBool,
    /// Nanoseconds senders spent waiting for credit, in total (stats).
    pub(crate) waited_ns: AtomicU64,
}

/// What one attempt to send achieved.
pub(crate) enum Attempt {
    /// Sent; on a rendezvous channel, the member to wait on until the
    /// peer took the value.
    Sent(Option<Member>),
    /// Every member is out of credit (or there are none yet).
    Blocked,
    /// The route is closed for good.
    Closed,
    /// The value was refused (encoding, size); the route is fine.
    Invalid(crate::Error),
}

impl Route {
    pub(crate) fn single(m: Member) -> Arc<Route> {
        Arc::new(Route {
            single: Some(m),
            members: Mutex::new(Arc::new(Vec::new())),
            notify: Notify::new(),
            export: false,
            closed: AtomicBool::new(false),
            failed: OnceLock::new(),
            rr: AtomicUsize::new(0),
            large: AtomicBool::new(false),
            waited_ns: AtomicU64::new(0),
        })
    }

    pub(crate) fn export() -> Arc<Route> {
        Arc::new(Route {
            single: None,
            members: Mutex::new(Arc::new(Vec::new())),
            notify: Notify::new(),
            export: true,
            closed: AtomicBool::new(false),
            failed: OnceLock::new(),
            rr: AtomicUsize::new(0),
            large: AtomicBool::new(false),
            waited_ns: AtomicU64::new(0),
        })
    }

    /// Adds `m` to an export route; returns the endpoint its connection
    /// wakes on credit.
    pub(crate) fn add_member(self: &Arc<Self>, m: Member) -> Arc<Slot> {
        let slot = Arc::new(Slot {
            member: m,
            state: AtomicU64::new(0),
            route: Arc::downgrade(self),
        });
        let mut members = lock(&self.members);
        let mut next = Vec::clone(&members);
        next.push(slot.clone());
        *members = Arc::new(next);
        drop(members);
        self.notify.notify_waiters();
        slot
    }

    fn remove_member(&self, conn: &ConnRef, chan: ChanId) {
        let mut members = lock(&self.members);
        let is = |s: &Arc<Slot>| s.member.chan == chan && s.member.conn.same(conn);
        if members.iter().any(is) {
            let next = members.iter().filter(|s| !is(s)).cloned().collect();
            *members = Arc::new(next);
        }
    }

    /// Closes the route for good: `hangup`, or the exporter shut down.
    pub(crate) fn close(&self, code: CloseCode, reason: &str) {
        self.closed.store(true, Ordering::Release);
        let members = std::mem::take(&mut *lock(&self.members));
        for s in members.iter() {
            s.member
                .conn
                .conn()
                .defer_close(s.member.chan, code, reason);
        }
        if let Some(m) = &self.single {
            m.conn.conn().defer_close(m.chan, code, reason);
        }
        self.notify.notify_waiters();
    }

    /// The codec of one member's connection, if there is a member.
    pub(crate) fn codec(&self) -> Option<crate::proto::CodecId> {
        if let Some(m) = &self.single {
            return Some(m.conn.conn().codec);
        }
        lock(&self.members)
            .first()
            .map(|s| s.member.conn.conn().codec)
    }

    /// For a single remote channel: waits until it has credit (`true`),
    /// or is closed (`false`). An export route is always ready.
    pub(crate) async fn ready(&self) -> bool {
        let Some(m) = &self.single else {
            return true;
        };
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_closed() {
                return false;
            }
            match m.conn.conn().has_credit(m.chan) {
                Some(true) => return true,
                Some(false) => notified.await,
                None => return false,
            }
        }
    }

    /// The one remote channel of a single route (`None` for an export).
    pub(crate) fn only_member(&self) -> Option<&Member> {
        self.single.as_ref()
    }

    /// Whether this is an exported sender's route, which waits for
    /// importers rather than closing with one channel.
    pub(crate) fn is_export(&self) -> bool {
        self.export
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The failure of the route's connection, if it closed because of one
    /// (why a send found the route closed).
    pub(crate) fn lost(&self) -> Option<crate::Error> {
        match &self.single {
            Some(m) => m.conn.conn().lock().end_error(),
            None => self.failed.get().cloned(),
        }
    }

    /// Tries each member once, starting after the last one used, passing
    /// by those found without credit since their last credit ([`Slot`]).
    pub(crate) fn try_send(
        &self,
        encode: &mut dyn FnMut(&ConnRef, ChanId) -> SendOutcome,
    ) -> Attempt {
        if self.is_closed() {
            return Attempt::Closed;
        }
        if let Some(m) = &self.single {
            return match encode(&m.conn, m.chan) {
                SendOutcome::Sent(r) => Attempt::Sent(r.then(|| m.clone())),
                SendOutcome::NoCredit => Attempt::Blocked,
                SendOutcome::Closed => Attempt::Closed,
                SendOutcome::Invalid(e) => Attempt::Invalid(e),
            };
        }
        let members = lock(&self.members).clone();
        let n = members.len();
        let start = self.rr.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let slot = &members[(start + i) % n];
            let seen = slot.state.load(Ordering::Acquire);
            if seen & 1 == 1 {
                continue;
            }
            let m = &slot.member;
            match encode(&m.conn, m.chan) {
                SendOutcome::Sent(r) => return Attempt::Sent(r.then(|| m.clone())),
                SendOutcome::NoCredit => {
                    // Fails if credit came in since `seen` (its wake
                    // changed the count): the member is tried next time.
                    let _ = slot.state.compare_exchange(
                        seen,
                        seen | 1,
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    );
                }
                SendOutcome::Closed => self.remove_member(&m.conn, m.chan),
                SendOutcome::Invalid(e) => return Attempt::Invalid(e),
            }
        }
        if self.export {
            Attempt::Blocked
        } else {
            Attempt::Closed
        }
    }
}

impl Outbound for Route {
    fn wake(&self) {
        self.notify.notify_waiters();
    }

    fn send_wait(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.waited_ns.load(Ordering::Relaxed))
    }
}

impl SenderExport for Route {
    fn is_closed(&self) -> bool {
        Route::is_closed(self)
    }

    fn add_member(self: Arc<Self>, conn: ConnRef, chan: ChanId) -> Arc<dyn Outbound> {
        Route::add_member(&self, Member { conn, chan })
    }

    fn close(&self, code: CloseCode, reason: &str) {
        Route::close(self, code, reason);
    }

    fn fail(&self, e: &crate::Error) {
        // Before the close, so that a send that finds it closed finds why.
        let _ = self.failed.set(e.clone());
        Route::close(self, CloseCode::Hangup, "hung up");
    }
}

impl Drop for Route {
    fn drop(&mut self) {
        // The last `Sender` is gone: a clean close, after what was sent.
        if !self.is_closed() {
            self.close(CloseCode::Done, "");
        }
    }
}
