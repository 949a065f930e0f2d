//! The typed end of the send path: a value encoded, with the channel
//! handles it carries, and handed to its connection as one message.

use std::sync::Arc;

use bytes::BytesMut;

use super::embed;
use crate::conn::{Conn, LARGE_MESSAGE, OutgoingHandle, SendOutcome};
use crate::error::Error;
use crate::proto::ChanId;
use crate::{Message, codec};

thread_local! {
    /// Where messages are encoded before they enter a connection.
    static SCRATCH: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
    /// The last message encoded on this thread was large: the next one
    /// likely is too, and is encoded into the connection's spare buffer
    /// if it has one.
    static LAST_LARGE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A scratch buffer larger than this is not kept for the next message.
const SCRATCH_KEEP: usize = 256 << 10;

/// Encodes `value` as one message on `chan` of `conn`, if it has credit;
/// `direct` as in `Conn::send_encoded`.
///
/// The value is encoded outside the connection's lock, into a buffer
/// kept per thread, so a large message holds up neither the reader nor
/// other senders; a message larger than a chunk then moves into the
/// connection without a copy.
pub(crate) fn send_value<T: Message>(
    conn: &Arc<Conn>,
    chan: ChanId,
    value: &T,
    direct: bool,
) -> SendOutcome {
    // A sender without credit must not pay for encoding.
    if let Some(out) = Conn::blocked(&conn.lock(), chan) {
        return out;
    }
    let spare = LAST_LARGE.get().then(|| conn.take_send_spare()).flatten();
    let mut buf = match spare {
        Some(b) => b,
        None => SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut())),
    };
    buf.clear();
    let scope = embed::EncodeScope::enter();
    let r = codec::encode(conn.codec, value, &mut buf);
    let handles = scope.finish();
    let large = buf.len() >= LARGE_MESSAGE;
    LAST_LARGE.set(large);
    let out = match r {
        Ok(()) => {
            // Most messages carry no handle: no pass over an empty list.
            let handles = if handles.is_empty() {
                Vec::new()
            } else {
                handles
                    .into_iter()
                    .map(|h| Box::new(h) as Box<dyn OutgoingHandle>)
                    .collect()
            };
            conn.send_encoded::<T>(chan, &mut buf, handles, direct)
        }
        Err(e) => {
            drop(handles);
            let e = Error::Codec(format!("cannot encode a {}: {e}", codec::type_name::<T>()));
            conn.log_error(e.clone());
            SendOutcome::Invalid(e)
        }
    };
    if large && buf.is_empty() {
        // Sent: the message took the buffer with it (what is left shares
        // its allocation, and would keep the writer from reclaiming it
        // once the message is written, see `Conn::keep_send_spare`).
        drop(buf);
    } else if buf.capacity() >= LARGE_MESSAGE {
        // A spare a small message did not need, or a large message that
        // was not sent (it is encoded again if it is).
        conn.keep_send_spare(buf);
    } else if buf.capacity() <= SCRATCH_KEEP {
        SCRATCH.with(|s| *s.borrow_mut() = buf);
    }
    out
}
