//! What a connection and its channels are doing, at a glance: the
//! public [`SessionStats`] and [`ChannelStats`] (and the RPC methods'
//! [`MethodStats`], kept in `calls`), read from the protocol's
//! counters and the endpoints' buffers when asked. Nothing here runs on
//! the data path: the counters it reads are plain integers the protocol
//! and the endpoints keep anyway, so stats cost nothing until read.

use std::time::Duration;

use super::calls::{CallSide, MethodCounters, MethodStats};
use super::{Conn, Endpoint};
use crate::proto::Role;

/// Which way values go on a channel, seen from this side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// This side sends on it (an exported sender, an imported sender, or a
    /// sender that travelled to this side).
    Sending,
    /// This side receives on it.
    Receiving,
}

/// One channel of a connection, as [`Session::stats`](crate::Session::stats)
/// found it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelStats {
    /// The export name it was opened by; `None` for a channel that
    /// travelled inside a message (see `id`).
    pub name: Option<String>,
    /// The channel's id on the connection.
    pub id: u32,
    /// Whether this side sends or receives on it.
    pub direction: Direction,
    /// The receiving end's buffer (0: rendezvous).
    pub capacity: usize,
    /// Receiving side: values in this side's buffer, not yet taken by
    /// `recv`. Sending side: values sent whose arrival the peer has not
    /// yet confirmed.
    pub queued: u64,
    /// Sending side: values this side may send now without waiting.
    /// Receiving side: slots granted to the peer and not yet used.
    pub credit: u32,
    /// Values sent (sending side) or received whole (receiving side).
    pub messages: u64,
    /// Bytes of those values as encoded (frame headers not counted).
    pub bytes: u64,
    /// Sending side: time senders on this channel spent waiting for the
    /// receiver's buffer to have room, in total.
    pub send_wait: Duration,
}

/// A connection and its channels at one moment: see
/// [`Session::stats`](crate::Session::stats).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionStats {
    /// The peer's address (`None` for in-memory pairs and streams handed
    /// in without one).
    pub peer_addr: Option<std::net::SocketAddr>,
    /// How long ago the connection started.
    pub age: Duration,
    /// Bytes written to the connection, the handshake included.
    pub bytes_sent: u64,
    /// Bytes read from it.
    pub bytes_received: u64,
    /// Frames written.
    pub frames_sent: u64,
    /// Frames read.
    pub frames_received: u64,
    /// Values sent whose arrival the peer has not confirmed yet, on every
    /// channel (what `drain` waits for).
    pub unconfirmed: u64,
    /// On a resumable session ([`Config::reconnect`](crate::Config::reconnect)):
    /// bytes of this side's frames held to write again after a broken
    /// connection, those the peer has not acknowledged yet. The credit
    /// windows bound it (see `docs/PROTOCOL.md`, "Resume").
    pub replay_bytes: u64,
    /// How many times the session resumed after a broken connection.
    pub resumes: u64,
    /// Every open channel, in id order.
    pub channels: Vec<ChannelStats>,
    /// Every RPC method this side called or served on this connection,
    /// sorted by service, method and side.
    pub methods: Vec<MethodStats>,
}

impl SessionStats {
    /// The channels named `name`.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a ChannelStats> + 'a {
        self.channels
            .iter()
            .filter(move |c| c.name.as_deref() == Some(name))
    }

    /// The stats of `method` of `service` on `side`, if it was called or
    /// served on this connection.
    pub fn method(&self, service: &str, method: &str, side: CallSide) -> Option<&MethodStats> {
        self.methods
            .iter()
            .find(|m| m.service == service && m.method == method && m.side == side)
    }
}

impl Conn {
    /// The connection's stats now.
    pub(crate) fn stats(&self) -> SessionStats {
        let inner = self.lock();
        let counters = inner.proto.counters();
        let mut channels: Vec<ChannelStats> = inner
            .proto
            .channels()
            .filter(|c| c.open)
            .map(|c| {
                let (queued, credit, send_wait) = match (c.role, inner.eps.get(&c.chan)) {
                    (Role::Receiving, Some(Endpoint::In(q, _))) => {
                        (q.queued() as u64, c.outstanding, Duration::ZERO)
                    }
                    (Role::Receiving, _) => (0, c.outstanding, Duration::ZERO),
                    (Role::Sending, ep) => {
                        let wait = match ep {
                            Some(Endpoint::Out(r)) => {
                                r.upgrade().map_or(Duration::ZERO, |r| r.send_wait())
                            }
                            _ => Duration::ZERO,
                        };
                        (c.unconfirmed, c.credit, wait)
                    }
                };
                ChannelStats {
                    name: c.name.map(str::to_owned),
                    id: c.chan,
                    direction: match c.role {
                        Role::Sending => Direction::Sending,
                        Role::Receiving => Direction::Receiving,
                    },
                    capacity: c.capacity as usize,
                    queued,
                    credit,
                    messages: c.messages,
                    bytes: c.bytes,
                    send_wait,
                }
            })
            .collect();
        channels.sort_by_key(|c| c.id);
        SessionStats {
            peer_addr: self.addrs.peer,
            age: self.created.elapsed(),
            bytes_sent: counters.bytes_out,
            bytes_received: counters.bytes_in,
            frames_sent: counters.frames_out,
            frames_received: counters.frames_in,
            unconfirmed: inner.proto.unconfirmed(),
            replay_bytes: inner.proto.replay_held(),
            resumes: inner.resumes,
            channels,
            methods: self.calls.stats(),
        }
    }
}

impl Conn {
    /// The counters of `method` of `service` on `side`, made on first use.
    /// Takes a lock: the RPC layer keeps what it gets, so that a call
    /// costs a few atomics.
    pub(crate) fn method_stats(
        &self,
        service: &str,
        method: &'static str,
        side: CallSide,
    ) -> std::sync::Arc<MethodCounters> {
        self.calls.method(service, method, side)
    }
}
