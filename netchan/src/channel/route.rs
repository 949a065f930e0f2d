//! Where a remote `Sender` sends: one remote channel, or, for an exported
//! sender, every importer's channel (each value goes to exactly one member
//! with free credit).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::queue::lock;
use crate::proto::{ChanId, CloseCode};
use crate::session::{ConnRef, SendOutcome};

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
    members: Mutex<Vec<Member>>,
    /// Woken on credit, delivery confirmations, and member changes.
    pub(crate) notify: Notify,
    /// An export route waits for importers; a single route closes with
    /// its channel.
    export: bool,
    closed: AtomicBool,
    rr: AtomicUsize,
}

/// What one attempt to send achieved.
pub(crate) enum Attempt {
    /// Sent on this member; `true`: wait for the peer to take it.
    Sent(Member, bool),
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
            members: Mutex::new(Vec::new()),
            notify: Notify::new(),
            export: false,
            closed: AtomicBool::new(false),
            rr: AtomicUsize::new(0),
        })
    }

    pub(crate) fn export() -> Arc<Route> {
        Arc::new(Route {
            single: None,
            members: Mutex::new(Vec::new()),
            notify: Notify::new(),
            export: true,
            closed: AtomicBool::new(false),
            rr: AtomicUsize::new(0),
        })
    }

    pub(crate) fn add_member(&self, m: Member) {
        lock(&self.members).push(m);
        self.notify.notify_waiters();
    }

    fn remove_member(&self, conn: &ConnRef, chan: ChanId) {
        lock(&self.members).retain(|m| !(m.chan == chan && m.conn.same(conn)));
    }

    /// Closes the route for good: `hangup`, or the exporter shut down.
    pub(crate) fn close(&self, code: CloseCode, reason: &str) {
        self.closed.store(true, Ordering::Release);
        let members = std::mem::take(&mut *lock(&self.members));
        for m in members {
            m.conn.conn().defer_close(m.chan, code, reason);
        }
        if let Some(m) = &self.single {
            m.conn.conn().defer_close(m.chan, code, reason);
        }
        self.notify.notify_waiters();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
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
                SendOutcome::Sent(r) => Attempt::Sent(m.clone(), r),
                SendOutcome::NoCredit => Attempt::Blocked,
                SendOutcome::Closed => Attempt::Closed,
                SendOutcome::Invalid(e) => Attempt::Invalid(e),
            };
        }
        let n = lock(&self.members).len();
        let start = self.rr.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let m = {
                let members = lock(&self.members);
                if members.is_empty() {
                    break;
                }
                members[(start + i) % members.len()].clone()
            };
            match encode(&m.conn, m.chan) {
                SendOutcome::Sent(r) => return Attempt::Sent(m, r),
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

impl Drop for Route {
    fn drop(&mut self) {
        // The last `Sender` is gone: a clean close, after what was sent.
        if !self.is_closed() {
            self.close(CloseCode::Done, "");
        }
    }
}
