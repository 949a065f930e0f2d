//! The send path: one encoded message, with the channel handles it
//! carries, into the protocol core under the connection's lock.

use std::sync::Arc;

use bytes::BytesMut;

use super::{Conn, Inner};
use crate::channel::embed;
use crate::error::Error;
use crate::proto::ChanId;
use crate::proto::conn::FinishError;
use crate::{Message, codec};

/// Result of one attempt to send on one channel.
pub(crate) enum SendOutcome {
    /// Sent; `true` when the channel is a rendezvous (capacity 0), so the
    /// send completes only once the peer confirms it was taken.
    Sent(bool),
    NoCredit,
    Closed,
    Invalid(Error),
}

thread_local! {
    /// Where messages are encoded before they enter a connection.
    static SCRATCH: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
}

/// A scratch buffer larger than this is not kept for the next message.
const SCRATCH_KEEP: usize = 256 << 10;
impl Conn {
    /// Encodes `value` as one message on `chan`, if it has credit.
    ///
    /// The value is encoded outside the connection's lock, into a buffer
    /// kept per thread, so a large message holds up neither the reader nor
    /// other senders; a message larger than a chunk then moves into the
    /// connection without a copy.
    pub(crate) fn send_value<T: Message>(self: &Arc<Self>, chan: ChanId, value: &T) -> SendOutcome {
        // A sender without credit must not pay for encoding.
        if let Some(out) = Self::blocked(&self.lock(), chan) {
            return out;
        }
        let mut buf = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
        buf.clear();
        let scope = embed::EncodeScope::enter();
        let r = codec::encode(self.codec, value, &mut buf);
        let handles = scope.finish();
        let out = match r {
            Ok(()) => self.send_encoded::<T>(chan, &mut buf, handles),
            Err(e) => {
                drop(handles);
                let e = Error::Codec(format!("cannot encode a {}: {e}", codec::type_name::<T>()));
                self.log_error(e.clone());
                SendOutcome::Invalid(e)
            }
        };
        if buf.capacity() <= SCRATCH_KEEP {
            SCRATCH.with(|s| *s.borrow_mut() = buf);
        }
        out
    }

    /// Sends `body`, encoded with `codec` and carrying no channel handles,
    /// on `chan`; `None` if this connection uses another codec (the caller
    /// then encodes the value for it). `body` is left as it was unless the
    /// message was sent.
    pub(crate) fn send_body<T>(
        self: &Arc<Self>,
        chan: ChanId,
        codec: crate::proto::CodecId,
        body: &mut BytesMut,
    ) -> Option<SendOutcome> {
        (codec == self.codec).then(|| self.send_encoded::<T>(chan, body, Vec::new()))
    }

    /// Why `chan` cannot take a message now, if it cannot.
    fn blocked(inner: &Inner, chan: ChanId) -> Option<SendOutcome> {
        match inner.proto.can_send(chan) {
            Ok(()) => None,
            Err(crate::proto::conn::SendBlock::NoCredit) => Some(SendOutcome::NoCredit),
            Err(_) => Some(SendOutcome::Closed),
        }
    }

    /// Sends the encoded `body` with `handles` on `chan`.
    fn send_encoded<T>(
        self: &Arc<Self>,
        chan: ChanId,
        body: &mut BytesMut,
        handles: Vec<embed::OutHandle>,
    ) -> SendOutcome {
        let mut inner = self.lock();
        // Credit may have gone to another sender meanwhile.
        if let Some(out) = Self::blocked(&inner, chan) {
            return out;
        }
        let n = handles.len();
        // The protocol's own check, before any handle's channel exists.
        let refuse = match inner.proto.check_message(body.len(), n) {
            Err(FinishError::TooLarge { size, limit }) => {
                Some(Error::MessageTooLarge { size, limit })
            }
            Err(FinishError::TooManyHandles { count, limit }) => Some(Error::Codec(format!(
                "{count} channel handles in one message exceed the limit of {limit}"
            ))),
            Ok(_)
                if n > 0
                    && inner.proto.channel_count() + n
                        > inner.proto.limits().max_channels.min(
                            inner
                                .proto
                                .peer()
                                .map_or(usize::MAX, |p| p.max_channels as usize),
                        ) =>
            {
                Some(Error::TooManyChannels(inner.proto.limits().max_channels))
            }
            Ok(_) => None,
        };
        if let Some(e) = refuse {
            drop(inner);
            drop(handles);
            self.log_error(e.clone());
            return SendOutcome::Invalid(e);
        }
        let mut descs = Vec::with_capacity(n);
        for h in handles {
            match h.attach(&mut inner, self) {
                Some(d) => descs.push(d),
                None => {
                    for d in &descs {
                        inner.proto.forget(d.chan);
                        inner.eps.remove(&d.chan);
                    }
                    return SendOutcome::Closed;
                }
            }
        }
        let large = body.len() >= crate::channel::LARGE_MESSAGE;
        match inner.proto.send_message(chan, body, &descs) {
            Ok(()) => {
                if large {
                    crate::channel::SENT_LARGE.with(|l| l.set(true));
                }
                let rendezvous = inner.proto.capacity_of(chan) == 0;
                drop(inner);
                self.kick();
                SendOutcome::Sent(rendezvous)
            }
            Err(e) => SendOutcome::Invalid(Error::Codec(format!(
                "cannot send a {}: {e:?}",
                codec::type_name::<T>()
            ))),
        }
    }
}
