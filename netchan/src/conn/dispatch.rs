//! Routing of protocol events to endpoints (`dispatch`), a peer's imports
//! of this side's exports (`on_open`), this side's imports (`open`), and
//! the end of a connection (`end`), which every endpoint learns of.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::oneshot;

use super::{Conn, ConnRef, Endpoint, Export, HandleGuard, Inbound, Inner, Link, Status};
use crate::error::Error;
use crate::proto::{ChanId, CloseCode, Dir, Event, RejectCode};

/// Messages without handles that arrived in a row on one channel, not yet
/// in its queue (see [`Conn::deliver_run`]).
#[derive(Default)]
pub(crate) struct Run {
    pub(crate) chan: Option<ChanId>,
    pub(crate) data: Vec<bytes::Bytes>,
}

/// Small messages the reader got by slice
/// ([`Connection::poll_input_with`](crate::proto::Connection::poll_input_with)),
/// copied back to back into one buffer, not yet in their queues (see
/// [`Conn::deliver_smalls`]). Copying a small message costs less than
/// giving it a buffer of its own (a reference count set and dropped).
#[derive(Default)]
pub(crate) struct Smalls {
    arena: bytes::BytesMut,
    /// Each message's channel, and where it ends in `arena`.
    ends: Vec<(ChanId, u32)>,
}

/// The room [`Smalls`] makes at a time: one allocation for many reads of
/// small messages.
const SMALLS_ROOM: usize = 16 << 10;

impl Smalls {
    /// Copies in a message of `chan`.
    pub(crate) fn push(&mut self, chan: ChanId, data: &[u8]) {
        if self.arena.capacity() - self.arena.len() < data.len() {
            self.arena.reserve(data.len().max(SMALLS_ROOM));
        }
        self.arena.extend_from_slice(data);
        // Bounded by one read's bytes, far below 4 GiB.
        self.ends.push((chan, self.arena.len() as u32));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

/// Hands `n` messages of `chan` to its queue with `deliver` (false: the
/// queue refused them, its receiver is gone). Messages for a channel
/// without a receiving end here are dropped.
fn into_queue(
    inner: &mut Inner,
    chan: ChanId,
    n: usize,
    deliver: impl FnOnce(&dyn Inbound, &Arc<Link>) -> bool,
) {
    let refused = match inner.eps.get(&chan) {
        Some(Endpoint::In(q, link)) => !deliver(&**q, link),
        _ => false,
    };
    if refused {
        receiver_gone(inner, chan, n);
    }
}

impl Conn {
    /// Puts the messages of `smalls` into their channels' queues, a run
    /// of messages in a row on one channel under one lock of its queue,
    /// and empties it. The same as dispatching each as an
    /// [`Event::Message`] in turn (reader task, `inner` held).
    pub(crate) fn deliver_smalls(&self, inner: &mut Inner, smalls: &mut Smalls) {
        let mut base = 0u32;
        let mut rest = &smalls.ends[..];
        while let Some(&(chan, _)) = rest.first() {
            let n = rest.iter().take_while(|(c, _)| *c == chan).count();
            let (run, after) = rest.split_at(n);
            rest = after;
            let last = run.last().map_or(base, |&(_, end)| end);
            let data = smalls.arena.split_to((last - base) as usize).freeze();
            let ends = run.iter().map(|&(_, end)| end - base).collect();
            base = last;
            into_queue(inner, chan, n, |q, link| q.deliver_packed(link, data, ends));
        }
        smalls.ends.clear();
    }

    /// Puts `run` into its channel's queue, under one lock of the queue,
    /// and empties it. The same as dispatching each message as an
    /// [`Event::Message`] in turn (reader task, `inner` held).
    pub(crate) fn deliver_run(&self, inner: &mut Inner, run: &mut Run) {
        let Some(chan) = run.chan.take() else {
            return;
        };
        let n = run.data.len();
        into_queue(inner, chan, n, |q, link| {
            q.deliver_many(link, &mut run.data)
        });
        // Delivered, refused or without a receiving end: nothing is left.
        run.data.clear();
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
                tracing::info!(
                    conn = self.id,
                    peer = %self.peer_label(),
                    side = ?self.side,
                    "netchan: connection opened"
                );
                self.changed.notify_waiters();
            }
            Event::Resumed => {
                inner.resumes += 1;
                self.resumed();
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
                        r.wake();
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
                            receiver_gone(inner, chan, 1);
                            garbage.push(Box::new(back));
                        }
                    }
                    _ => garbage.push(Box::new(guard)),
                }
            }
            Event::Credit { chan } => {
                if let Some(Endpoint::Out(route)) = inner.eps.get(&chan) {
                    if let Some(r) = route.upgrade() {
                        r.wake();
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
                            r.wake();
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
                let out = route.add_member(ConnRef::new(self), chan);
                inner.eps.insert(chan, Endpoint::Out(Arc::downgrade(&out)));
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

    /// Closes this side's imports of `name` (`hangup`); false if there
    /// were none.
    pub(crate) fn hangup_imports(&self, name: &str) -> bool {
        let mut found = false;
        let mut garbage: Vec<Box<dyn Send>> = Vec::new();
        {
            let mut inner = self.lock();
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
                            r.wake();
                        }
                    }
                    _ => {}
                }
            }
        }
        drop(garbage);
        self.kick();
        found
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
                        r.wake();
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
        if !clean {
            self.events.emit(super::SessionEvent::Lost(why.clone()));
        }
        self.events.end();
        self.ended.cancel();
        self.changed.notify_waiters();
    }

    /// Opens an import; registers `ep` before the `OPEN` leaves so that
    /// nothing that arrives after `ACCEPT` is missed.
    pub(crate) async fn open(
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

/// `n` messages arrived on `chan` after its receiver was gone: each counts
/// as taken and its slot is given back, so the sender is not stuck; the
/// messages themselves are dropped. On a rendezvous channel nothing was
/// taken: the channel's `CLOSE` follows and the waiting send fails with its
/// value.
fn receiver_gone(inner: &mut Inner, chan: ChanId, n: usize) {
    if inner.proto.capacity_of(chan) > 0 {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        inner.proto.credit_update(chan, n, n);
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
