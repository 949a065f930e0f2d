//! Where a remote `Sender` sends: one remote channel, or, for an exported
//! sender, every importer's channel (each value goes to exactly one member
//! with free credit).
//!
//! A route is the connection's `conn::Outbound` (credit wakes it) and,
//! exported, its `conn::SenderExport`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

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

/// A set of remote channels behind one `Sender`.
#[derive(Debug)]
pub(crate) struct Route {
    /// Fixed for a single remote channel; grows and shrinks for an export.
    single: Option<Member>,
    /// Copy on write: senders take a snapshot without holding the lock
    /// while they try members (whose connection locks come after it).
    members: Mutex<Arc<Vec<Member>>>,
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

    pub(crate) fn add_member(&self, m: Member) {
        let mut members = lock(&self.members);
        let mut next = Vec::clone(&members);
        next.push(m);
        *members = Arc::new(next);
        drop(members);
        self.notify.notify_waiters();
    }

    fn remove_member(&self, conn: &ConnRef, chan: ChanId) {
        let mut members = lock(&self.members);
        if members.iter().any(|m| m.chan == chan && m.conn.same(conn)) {
            let next = members
                .iter()
                .filter(|m| !(m.chan == chan && m.conn.same(conn)))
                .cloned()
                .collect();
            *members = Arc::new(next);
        }
    }

    /// Closes the route for good: `hangup`, or the exporter shut down.
    pub(crate) fn close(&self, code: CloseCode, reason: &str) {
        self.closed.store(true, Ordering::Release);
        let members = std::mem::take(&mut *lock(&self.members));
        for m in members.iter() {
            m.conn.conn().defer_close(m.chan, code, reason);
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
        lock(&self.members).first().map(|m| m.conn.conn().codec)
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

    /// Tries each member once, starting after the last one used.
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
            let m = &members[(start + i) % n];
            match encode(&m.conn, m.chan) {
                SendOutcome::Sent(r) => return Attempt::Sent(r.then(|| m.clone())),
                SendOutcome::NoCredit => {}
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

    fn add_member(&self, conn: ConnRef, chan: ChanId) {
        Route::add_member(self, Member { conn, chan });
    }

    fn close(&self, code: CloseCode, reason: &str) {
        Route::close(self, code, reason);
    }

    fn fail(&self, e: &crate::Error) {
        // Before the close, so that a send that finds it closed finds why.
        let _ = self.failed.set(e.clone());
        Route::close(self, CloseCode::Hangup, "hung up");
    }

    fn outbound(self: Arc<Self>) -> Arc<dyn Outbound> {
        self
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
