//! Channel handles inside messages: the handle table's types and bytes.
//!
//! A message that carries `Sender`s, `Receiver`s or `Pipe`s starts with a
//! table naming, for each, the channel its originator allocated, what the
//! recipient gets and the capacity. This module owns that layout (encoding,
//! and parsing with every length checked first); registering the channels
//! is the channel table's business (`conn`).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::ProtoError;
use super::frame::{ChanId, Kind};

/// Kind of a channel handle carried inside a message, named after what the
/// recipient gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum HandleKind {
    /// The recipient gets a `Sender`: it will send, the originator receives.
    Sender = 0,
    /// The recipient gets a `Receiver`: the originator sends.
    Receiver = 1,
}

/// One entry of a message's handle table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandleDesc {
    /// What the recipient gets.
    pub kind: HandleKind,
    /// The channel, allocated by the message's originator.
    pub chan: ChanId,
    /// For [`HandleKind::Sender`]: the credit the originator grants up
    /// front. For [`HandleKind::Receiver`]: the buffer the recipient should
    /// give its receiver.
    pub capacity: u32,
}

/// Bytes of one handle table entry.
pub(super) const HANDLE_ENTRY_LEN: usize = 9;

/// Bytes of a table of `n` entries (none without handles).
pub(super) fn table_len(n: usize) -> usize {
    if n == 0 { 0 } else { 2 + n * HANDLE_ENTRY_LEN }
}

/// Writes a message's handle table.
pub(super) fn put_table(dst: &mut BytesMut, handles: &[HandleDesc]) {
    if handles.is_empty() {
        return;
    }
    dst.put_u16_le(handles.len() as u16);
    for h in handles {
        dst.put_u8(h.kind as u8);
        dst.put_u32_le(h.chan);
        dst.put_u32_le(h.capacity);
    }
}

/// Parses the handle table at the front of `data` (which the flag said is
/// there), checking the count against `max_handles` before reading it.
pub(super) fn parse_table(
    data: &mut Bytes,
    max_handles: usize,
) -> Result<Vec<HandleDesc>, ProtoError> {
    let bad = |what| ProtoError::Malformed {
        kind: Kind::Data,
        what,
    };
    if data.remaining() < 2 {
        return Err(bad("short handle table"));
    }
    let n = data.get_u16_le() as usize;
    if n == 0 {
        return Err(bad("empty handle table"));
    }
    if n > max_handles {
        return Err(ProtoError::LimitExceeded {
            what: "handles in one message",
            limit: max_handles,
        });
    }
    if data.remaining() < n * HANDLE_ENTRY_LEN {
        return Err(bad("short handle table"));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let kind = match data.get_u8() {
            0 => HandleKind::Sender,
            1 => HandleKind::Receiver,
            _ => return Err(bad("handle kind")),
        };
        let chan = data.get_u32_le();
        let capacity = data.get_u32_le();
        out.push(HandleDesc {
            kind,
            chan,
            capacity,
        });
    }
    Ok(out)
}
