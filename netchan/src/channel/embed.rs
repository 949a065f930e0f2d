//! Channel handles inside messages (Go's "channels of channels").
//!
//! While a message is encoded, a thread-local scope collects every
//! `Sender` and `Receiver` serialized inside it; each is written as an index
//! into the message's handle table. The connection then allocates a
//! channel id for each and puts the table in front of the message. On
//! receipt, the table was already registered by the protocol core; decoding
//! runs under a scope holding it, and each handle's `Deserialize` claims its
//! entry and binds a live `Sender` or `Receiver` to the same connection.
//! Entries nobody claimed are closed when the scope ends.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::queue::Queue;
use super::route::{Member, Route};
use super::{Receiver, Sender, channel, forward, relay};
use crate::Message;
use crate::conn::{Conn, ConnRef, Endpoint, HandleGuard, Inbound, Inner, Link, OutgoingHandle};
use crate::proto::{HandleDesc, HandleKind, Role};

/// Starts a forwarder task on the connection's runtime.
type StartTask = Box<dyn FnOnce(&tokio::runtime::Handle) + Send>;

/// Starts forwarding a local receiver into a new channel's route.
type StartForward = Box<dyn FnOnce(Arc<Route>, &tokio::runtime::Handle) + Send>;

/// A handle collected while encoding, attached once the message is known
/// to fit.
pub(crate) enum OutHandle {
    /// The peer gets a `Sender`; what it sends arrives in `queue`.
    /// `keep` holds a temporary sender until the link exists.
    Queue {
        queue: Arc<dyn Inbound>,
        keep: Box<dyn Send>,
        /// Starts a forwarder once attached (a remote sender travelling on).
        start: Option<StartTask>,
    },
    /// The peer gets a `Receiver`; `start` begins forwarding into the new
    /// channel's route.
    Forward { capacity: u32, start: StartForward },
}

impl OutHandle {
    /// Allocates the handle's channel and registers its local end. `None`
    /// if the connection refused (it is ending).
    pub(crate) fn attach(self, inner: &mut Inner, conn: &Arc<Conn>) -> Option<HandleDesc> {
        match self {
            OutHandle::Queue { queue, keep, start } => {
                if let Some(start) = start {
                    start(&conn.rt);
                }
                let cap = u32::try_from(queue.capacity()).unwrap_or(u32::MAX);
                let chan = inner.proto.alloc_handle(Role::Receiving, cap).ok()?;
                let link = Link::new(ConnRef::new(conn), chan, None);
                if queue.add_link(link.clone()) {
                    inner.eps.insert(chan, Endpoint::In(queue, link));
                } else {
                    // The receiver is already gone: the peer gets a closed
                    // sender (the close follows the message).
                    conn.defer_close(
                        chan,
                        crate::proto::CloseCode::ReceiverGone,
                        "receiver dropped",
                    );
                }
                drop(keep);
                Some(HandleDesc {
                    kind: HandleKind::Sender,
                    chan,
                    capacity: cap,
                })
            }
            OutHandle::Forward { capacity, start } => {
                let chan = inner.proto.alloc_handle(Role::Sending, capacity).ok()?;
                let route = Route::single(Member {
                    conn: ConnRef::new(conn),
                    chan,
                });
                inner.eps.insert(chan, Endpoint::outbound(&route));
                start(route, &conn.rt);
                Some(HandleDesc {
                    kind: HandleKind::Receiver,
                    chan,
                    capacity,
                })
            }
        }
    }
}

impl OutgoingHandle for OutHandle {
    fn attach(self: Box<Self>, inner: &mut Inner, conn: &Arc<Conn>) -> Option<HandleDesc> {
        OutHandle::attach(*self, inner, conn)
    }
}

struct DecodeCtx {
    guard: HandleGuard,
}

/// No encode scope is open (see [`SCOPE`]).
const NO_SCOPE: usize = usize::MAX;

thread_local! {
    /// The handles of the open encode scopes, innermost last.
    static HANDLES: RefCell<Vec<OutHandle>> = const { RefCell::new(Vec::new()) };
    /// Where the innermost open encode scope's handles start in
    /// [`HANDLES`], or [`NO_SCOPE`].
    static SCOPE: Cell<usize> = const { Cell::new(NO_SCOPE) };
    static DECODE: RefCell<Option<DecodeCtx>> = const { RefCell::new(None) };
}

/// The encode scope of one message: the handles serialized while it is
/// open are its own. Restores any outer scope when it ends. Entering and
/// finishing a scope that got no handle touches two thread-locals and
/// allocates nothing.
pub(crate) struct EncodeScope {
    /// Where the outer scope's handles start.
    outer: usize,
    done: bool,
}

impl EncodeScope {
    pub(crate) fn enter() -> EncodeScope {
        let start = HANDLES.with(|h| h.borrow().len());
        EncodeScope {
            outer: SCOPE.with(|s| s.replace(start)),
            done: false,
        }
    }

    /// Ends the scope, returning the handles collected.
    pub(crate) fn finish(mut self) -> Vec<OutHandle> {
        self.done = true;
        self.close()
    }

    fn close(&mut self) -> Vec<OutHandle> {
        let start = SCOPE.with(|s| s.replace(self.outer));
        HANDLES.with(|h| {
            let mut h = h.borrow_mut();
            if h.len() > start {
                h.split_off(start)
            } else {
                Vec::new()
            }
        })
    }
}

impl Drop for EncodeScope {
    fn drop(&mut self) {
        if !self.done {
            drop(self.close());
        }
    }
}

/// Records `h` in the current encode scope; returns its table index.
fn push_handle(make: impl FnOnce() -> OutHandle) -> Result<u32, String> {
    let start = SCOPE.with(Cell::get);
    if start == NO_SCOPE {
        return Err(
            "netchan channel handles can only be serialized inside a netchan message".to_string(),
        );
    }
    let h = make();
    HANDLES.with(|v| {
        let mut v = v.borrow_mut();
        v.push(h);
        Ok((v.len() - 1 - start) as u32)
    })
}

/// Takes table entry `idx` of the current decode scope.
fn claim(idx: u32, want: HandleKind) -> Result<(Arc<Conn>, HandleDesc), String> {
    DECODE.with(|c| {
        let mut c = c.borrow_mut();
        let ctx = c
            .as_mut()
            .ok_or_else(|| "message carries a channel handle but no handle table".to_string())?;
        let desc = ctx.guard.claim(idx, want)?;
        Ok((ctx.guard.conn.clone(), desc))
    })
}

/// Decodes a message that arrived on `conn`, binding its handles.
pub(crate) fn decode<T: Message>(
    conn: &Arc<Conn>,
    data: &[u8],
    handles: Option<HandleGuard>,
) -> Result<T, String> {
    let Some(guard) = handles else {
        return crate::codec::decode(conn.codec, data);
    };
    let prev = DECODE.with(|c| c.borrow_mut().replace(DecodeCtx { guard }));
    let r = crate::codec::decode(conn.codec, data);
    let ctx = DECODE.with(|c| std::mem::replace(&mut *c.borrow_mut(), prev));
    // Unclaimed handles close here (HandleGuard's drop).
    drop(ctx);
    r
}

impl<T: Message> Serialize for Sender<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let idx = push_handle(|| match self.local_queue() {
            Some(q) => OutHandle::Queue {
                queue: q.clone(),
                keep: Box::new(()),
                start: None,
            },
            None => {
                // A remote sender travels on: values the new holder sends
                // arrive here first and are forwarded.
                let (tx, rx) = channel::<T>(16);
                let me = self.clone();
                let queue: Arc<dyn Inbound> = match tx.local_queue() {
                    Some(q) => q.clone(),
                    None => Queue::<T>::new(0, 0, 0),
                };
                OutHandle::Queue {
                    queue,
                    keep: Box::new(tx),
                    start: Some(Box::new(move |rt| {
                        rt.spawn(forward(rx, me));
                    })),
                }
            }
        })
        .map_err(S::Error::custom)?;
        s.serialize_newtype_struct("netchan::Sender", &idx)
    }
}

impl<T: Message> Serialize for Receiver<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let rx = self.second_handle();
        let capacity = u32::try_from(self.capacity()).unwrap_or(u32::MAX);
        let idx = push_handle(move || OutHandle::Forward {
            capacity,
            start: Box::new(move |route, rt| {
                rt.spawn(relay(rx, route));
            }),
        })
        .map_err(S::Error::custom)?;
        s.serialize_newtype_struct("netchan::Receiver", &idx)
    }
}

/// Encodes `value` for a backend that carries bytes only (`nats`): a
/// `Sender`, `Receiver` or `Pipe` inside it is refused with a clear error
/// rather than sent as a handle nobody could claim.
pub(crate) fn encode_alone<T: Serialize + ?Sized>(
    codec: crate::proto::CodecId,
    value: &T,
    dst: &mut bytes::BytesMut,
) -> Result<(), crate::Error> {
    let scope = EncodeScope::enter();
    let r = crate::codec::encode(codec, value, dst);
    let handles = scope.finish();
    if !handles.is_empty() {
        let n = handles.len();
        drop(handles);
        return Err(crate::Error::Codec(format!(
            "a {} carries {n} channel handle(s) (Sender, Receiver or Pipe): handles cannot \
             travel inside messages on NATS; send plain data, or use a Session for \
             channels of channels",
            crate::codec::type_name::<T>(),
        )));
    }
    r.map_err(|e| {
        crate::Error::Codec(format!(
            "cannot encode a {}: {e}",
            crate::codec::type_name::<T>()
        ))
    })
}

struct Idx(u32);

impl<'de> Deserialize<'de> for Idx {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Idx, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Idx;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a netchan handle index")
            }
            fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Idx, D::Error> {
                u32::deserialize(d).map(Idx)
            }
        }
        d.deserialize_newtype_struct("netchan::Handle", V)
    }
}

impl<'de, T: Message> Deserialize<'de> for Sender<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Sender<T>, D::Error> {
        let Idx(idx) = Idx::deserialize(d)?;
        let (conn, desc) = claim(idx, HandleKind::Sender).map_err(D::Error::custom)?;
        let route = Route::single(Member {
            conn: ConnRef::new(&conn),
            chan: desc.chan,
        });
        {
            let mut inner = conn.lock();
            // After the connection ended nothing may be registered: its
            // endpoints were already told, and would never be again.
            if inner.is_live() && inner.proto.is_channel_open(desc.chan) {
                inner.eps.insert(desc.chan, Endpoint::outbound(&route));
            }
        }
        Ok(Sender::from_route(route, None))
    }
}

impl<'de, T: Message> Deserialize<'de> for Receiver<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Receiver<T>, D::Error> {
        let Idx(idx) = Idx::deserialize(d)?;
        let (conn, desc) = claim(idx, HandleKind::Receiver).map_err(D::Error::custom)?;
        let queue = Queue::<T>::new(desc.capacity as usize, 0, 0);
        let link = Link::new(ConnRef::new(&conn), desc.chan, None);
        queue.add_link(link.clone());
        let alive = {
            let mut inner = conn.lock();
            if inner.is_live() && inner.proto.is_channel_open(desc.chan) {
                inner
                    .eps
                    .insert(desc.chan, Endpoint::In(queue.clone(), link.clone()));
                if desc.capacity > 0 {
                    inner.proto.credit_update(desc.chan, desc.capacity, 0);
                }
                true
            } else {
                false
            }
        };
        if alive {
            conn.kick();
        } else {
            // The channel is gone with its connection: the receiver ends
            // with the connection's failure, or cleanly after a goodbye.
            let why = conn.lock().end_error();
            queue.link_ended(&link, why);
        }
        Ok(Receiver::from_queue(queue, None, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handle to record; which one does not matter here.
    fn handle(capacity: usize) -> OutHandle {
        OutHandle::Queue {
            queue: super::super::queue::Queue::<u32>::new(capacity, 0, 0),
            keep: Box::new(()),
            start: None,
        }
    }

    fn capacities(handles: &[OutHandle]) -> Vec<usize> {
        handles
            .iter()
            .map(|h| match h {
                OutHandle::Queue { queue, .. } => queue.capacity(),
                OutHandle::Forward { .. } => usize::MAX,
            })
            .collect()
    }

    #[test]
    fn a_handle_outside_a_message_is_refused_with_a_clear_error() {
        let e = push_handle(|| handle(1)).expect_err("no scope is open");
        assert!(e.contains("inside a netchan message"), "{e}");
        let scope = EncodeScope::enter();
        assert!(scope.finish().is_empty());
        let e = push_handle(|| handle(1)).expect_err("the scope ended");
        assert!(e.contains("inside a netchan message"), "{e}");
    }

    #[test]
    fn each_scope_numbers_and_gets_its_own_handles_and_restores_the_outer_one() {
        let outer = EncodeScope::enter();
        assert_eq!(push_handle(|| handle(1)), Ok(0));
        let inner = EncodeScope::enter();
        assert_eq!(push_handle(|| handle(2)), Ok(0));
        assert_eq!(push_handle(|| handle(3)), Ok(1));
        assert_eq!(capacities(&inner.finish()), [2, 3]);
        assert_eq!(push_handle(|| handle(4)), Ok(1));
        // A scope dropped without finishing drops its handles only.
        let dropped = EncodeScope::enter();
        assert_eq!(push_handle(|| handle(5)), Ok(0));
        drop(dropped);
        assert_eq!(push_handle(|| handle(6)), Ok(2));
        assert_eq!(capacities(&outer.finish()), [1, 4, 6]);
        assert!(push_handle(|| handle(7)).is_err(), "no scope is left open");
    }
}
