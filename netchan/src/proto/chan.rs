//! One channel's entry in the connection's table: its state machine, its
//! role, and the parts that flow control, chunking and reassembly keep for
//! it. The rules live beside it: `flow` (credit and confirmation), `chunk`
//! (large messages); `conn` drives the state transitions.

use std::collections::VecDeque;

use super::chunk::{Assembly, Pending};
use super::flow::Flow;
use super::frame::CloseCode;

/// What this side does on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// This side sends `DATA` and receives `CREDIT`.
    Sending,
    /// This side receives `DATA` and sends `CREDIT`.
    Receiving,
}

/// A channel's state.
///
/// ```text
///   open() ──► Opening ──ACCEPT──► Open ──close()──► Closing ──CLOSE──► (removed)
///                 │                  │
///               REJECT             CLOSE from peer: ack with CLOSE ──► (removed)
///                 ▼                  ▲
///            (removed)   OPEN ──► Requested ──accept()──┘   (reject(): removed)
///   handle in a message (either way) ──────────────────► Open
/// ```
///
/// A channel leaves the table once both sides have sent `CLOSE`; ids are
/// never reused, so a late frame for a removed id is a protocol error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    Opening,
    Requested,
    Open,
    Closing,
}

#[derive(Debug)]
pub(super) struct Chan {
    pub(super) state: State,
    pub(super) role: Role,
    /// Credit, sequence numbers and confirmations.
    pub(super) flow: Flow,
    /// Messages too large for one chunk, and any sent after them. Boxed,
    /// and only while there are any: an idle channel's entry stays small.
    pub(super) pending: Option<Box<Outgoing>>,
    /// A close requested while `pending` was not empty.
    /// Boxed: rare, and an idle channel's entry stays small.
    pub(super) close_after: Option<Box<(CloseCode, String)>>,
    // Receiving side.
    /// Boxed for the same reason.
    pub(super) assembling: Option<Box<Assembly>>,
    /// Closing while a message was arriving: its remaining chunks are skipped.
    pub(super) skipping: bool,
    /// Length of the last message that arrived on it in chunks: the
    /// next such message starts in a buffer that large (see
    /// [`Assembly::start`](super::chunk::Assembly::start)).
    pub(super) last_assembled: u32,
    // Sending side.
    /// On a rendezvous channel: the send waiting for its message to be
    /// taken was given up, so nobody asks what became of it.
    pub(super) abandoned: bool,
    /// Bytes of the messages sent or received whole on it.
    pub(super) bytes: u64,
    /// The export name it was opened by (`None` for a handle's channel).
    pub(super) name: Option<Box<str>>,
}

/// Messages waiting to be sent in chunks on one channel.
#[derive(Debug, Default)]
pub(super) struct Outgoing {
    pub(super) queue: VecDeque<Pending>,
    /// Offset into `queue.front()` already sent.
    pub(super) off: usize,
}

impl Chan {
    /// Whether no message waits to be sent in chunks.
    pub(super) fn nothing_pending(&self) -> bool {
        self.pending.as_ref().is_none_or(|p| p.queue.is_empty())
    }

    pub(super) fn new(state: State, role: Role, flow: Flow) -> Chan {
        Chan {
            state,
            role,
            flow,
            pending: None,
            close_after: None,
            assembling: None,
            skipping: false,
            last_assembled: 0,
            abandoned: false,
            bytes: 0,
            name: None,
        }
    }

    /// A receiving end of `capacity` that has granted nothing yet.
    pub(super) fn receiving(state: State, capacity: u32) -> Chan {
        Chan::new(state, Role::Receiving, Flow::receiving(capacity))
    }

    /// A sending end with `credit` of the receiver's `capacity`.
    pub(super) fn sending(state: State, capacity: u32, credit: u32) -> Chan {
        Chan::new(state, Role::Sending, Flow::sending(capacity, credit))
    }
}
