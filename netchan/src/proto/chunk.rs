//! Large messages: split into chunks on the way out, reassembled on the
//! way in.
//!
//! A message larger than a chunk waits in its channel's queue of
//! [`Pending`] messages and leaves one chunk per transmit, round-robin with
//! other channels' large messages (`conn` keeps the round-robin), so a small
//! message on another channel waits behind at most one chunk. On the way
//! in, an [`Assembly`] grows only as bytes arrive, never to a declared size,
//! and is bounded by the message limit.

use bytes::{Bytes, BytesMut};

use super::ProtoError;

/// Chunks of large messages per transmit: a small message queued meanwhile
/// waits behind at most this many (DESIGN.md: "no more than one chunk").
pub(super) const TRANSMIT_CHUNKS: usize = 1;

/// Chunks per transmit of a large message alone on its connection: the
/// only channel with chunks to send, no small message queued for
/// [`MIXED_QUIET`], and the stream took the last write without making it
/// wait. Each write wakes the peer's reader, and on loopback runs the
/// peer's receive path too; four chunks per write instead of one move
/// 1 MiB messages 1.3 to 1.5 times as fast for less CPU. A small message
/// queued meanwhile waits behind that write, which the stream takes at
/// once; where the stream is slower than the sender (its last write
/// waited), one chunk per transmit, so a small message waits behind one.
pub(super) const SOLO_CHUNKS: usize = 4;

/// How long after the last small message a large one counts as alone.
pub(super) const MIXED_QUIET: std::time::Duration = std::time::Duration::from_millis(10);

#[derive(Debug)]
pub(super) struct Pending {
    /// The message, handle table first.
    pub(super) body: Bytes,
    /// Whether it starts with a handle table.
    pub(super) handles: bool,
}

#[derive(Debug)]
pub(super) struct Assembly {
    buf: BytesMut,
    handles: bool,
}

impl Assembly {
    /// Starts a message from its first chunk (not its last), in a buffer
    /// as large as `previous`, the length of the last message that arrived
    /// whole on its channel: a stream of messages of one size then fills
    /// one buffer each, where growing it by doubling copied each message
    /// once more and faulted in pages three times its size. `previous`
    /// arrived and was accepted, so it is within the message limit; the
    /// peer declares nothing here.
    pub(super) fn start(first: &[u8], handles: bool, previous: usize) -> Box<Assembly> {
        let mut buf = BytesMut::with_capacity(previous.max(first.len() * 2));
        buf.extend_from_slice(first);
        Box::new(Assembly { buf, handles })
    }

    /// Adds a continuation chunk, refusing to grow past `max` bytes.
    pub(super) fn push(&mut self, chunk: &[u8], max: usize) -> Result<(), ProtoError> {
        let len = self.buf.len() + chunk.len();
        if len > max {
            return Err(ProtoError::MessageTooLarge { len, max });
        }
        self.buf.extend_from_slice(chunk);
        Ok(())
    }

    /// The whole message, and whether it starts with a handle table.
    pub(super) fn finish(self) -> (Bytes, bool) {
        (self.buf.freeze(), self.handles)
    }
}
