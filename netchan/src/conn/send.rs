//! The send path: one encoded message, with the channel handles it
//! carries, into the protocol core under the connection's lock.

use std::sync::Arc;

use bytes::BytesMut;

use super::{Conn, Inner};
use crate::codec;
use crate::error::Error;
use crate::proto::conn::FinishError;
use crate::proto::{ChanId, HandleDesc};

/// Result of one attempt to send on one channel.
pub(crate) enum SendOutcome {
    /// Sent; `true` when the channel is a rendezvous (capacity 0), so the
    /// send completes only once the peer confirms it was taken.
    Sent(bool),
    NoCredit,
    Closed,
    Invalid(Error),
}

/// A message at least this large took long enough to encode or decode that
/// the task doing it yields to the runtime's other tasks soon after.
pub(crate) const LARGE_MESSAGE: usize = 256 << 10;

/// On a one-thread runtime, messages from this size on are encoded and
/// decoded on the blocking pool; smaller ones in the task (see [`aside`]).
const ASIDE_ON_ONE_WORKER: usize = 2 << 20;

/// On a multi-thread runtime, messages from this size on are encoded and
/// decoded on the blocking pool; smaller ones in the task (see
/// [`aside`]).
const ASIDE_ON_MANY_WORKERS: usize = 4 << 20;

/// Whether a message of `len` bytes is encoded or decoded on tokio's
/// blocking pool rather than in the task that sends or receives it.
///
/// The hand-over costs a thread's wake-up each way and moves the message
/// to another core's cache: a 1 MiB echo call, encoded and decoded on the
/// blocking pool at each of its four steps, was 1.4 times slower than
/// with each step in its task (bench `echo-1MiB-call`, one one-thread
/// runtime per side). So only messages whose decoding would hold the
/// runtime for long go aside:
/// - on a one-thread runtime, from 2 MiB on: the runtime's other tasks
///   (other channels) go on meanwhile. A smaller message holds them for
///   its decoding: up to about 1.3 ms for a plain `Vec<u8>` (decoded at
///   about 0.6 ns a byte), far less for a byte string;
/// - on a multi-thread runtime, whose other workers go on anyway, from
///   4 MiB on.
pub(crate) fn aside(len: usize) -> bool {
    len >= ASIDE_ON_ONE_WORKER
        && (len >= ASIDE_ON_MANY_WORKERS
            || !tokio::runtime::Handle::try_current().is_ok_and(|h| {
                matches!(
                    h.runtime_flavor(),
                    tokio::runtime::RuntimeFlavor::MultiThread
                )
            }))
}

thread_local! {
    /// The size of the last send of at least [`LARGE_MESSAGE`] bytes on
    /// this thread (0: none since it was last looked at).
    pub(crate) static SENT_LARGE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A channel handle inside an outgoing message, attached to the
/// connection once the message is known to fit.
pub(crate) trait OutgoingHandle: Send {
    /// Allocates the handle's channel and registers its local end. `None`
    /// if the connection refused (it is ending).
    fn attach(self: Box<Self>, inner: &mut Inner, conn: &Arc<Conn>) -> Option<HandleDesc>;
}

impl Conn {
    /// Sends `body`, encoded with `codec` and carrying no channel handles,
    /// on `chan`; `None` if this connection uses another codec (the caller
    /// then encodes the value for it). `body` is left as it was unless the
    /// message was sent.
    pub(crate) fn send_body<T>(
        self: &Arc<Self>,
        chan: ChanId,
        codec: crate::proto::CodecId,
        body: &mut BytesMut,
        direct: bool,
    ) -> Option<SendOutcome> {
        (codec == self.codec).then(|| self.send_encoded::<T>(chan, body, Vec::new(), direct))
    }

    /// Why `chan` cannot take a message now, if it cannot.
    pub(crate) fn blocked(inner: &Inner, chan: ChanId) -> Option<SendOutcome> {
        match inner.proto.can_send(chan) {
            Ok(()) => None,
            Err(crate::proto::conn::SendBlock::NoCredit) => Some(SendOutcome::NoCredit),
            Err(_) => Some(SendOutcome::Closed),
        }
    }

    /// Sends the encoded `body` with `handles` on `chan`.
    ///
    /// `direct`: the sending task is about to wait for an answer (a call
    /// and its reply), so nothing is gained by leaving the write to the
    /// writer task to batch with later messages. If the writer is asleep,
    /// this task writes the message to the stream itself
    /// ([`Conn::write_through_or_kick`]).
    pub(crate) fn send_encoded<T>(
        self: &Arc<Self>,
        chan: ChanId,
        body: &mut BytesMut,
        handles: Vec<Box<dyn OutgoingHandle>>,
        direct: bool,
    ) -> SendOutcome {
        // Lock order: the parked stream, then `inner`.
        let parked = direct.then(|| self.idle_parked()).flatten();
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
        let large = (body.len() >= LARGE_MESSAGE).then_some(body.len());
        match inner.proto.send_message(chan, body, &descs) {
            Ok(()) => {
                if let Some(len) = large {
                    SENT_LARGE.with(|l| l.set(len));
                }
                let rendezvous = inner.proto.capacity_of(chan) == 0;
                self.write_through_or_kick(parked, inner);
                SendOutcome::Sent(rendezvous)
            }
            Err(e) => SendOutcome::Invalid(Error::Codec(format!(
                "cannot send a {}: {e:?}",
                codec::type_name::<T>()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ASIDE_ON_MANY_WORKERS, ASIDE_ON_ONE_WORKER, LARGE_MESSAGE, aside};

    #[test]
    fn large_messages_go_aside_on_one_thread_and_only_very_large_ones_on_many() {
        let one = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        one.block_on(async {
            assert!(!aside(LARGE_MESSAGE));
            assert!(!aside(ASIDE_ON_ONE_WORKER - 1));
            assert!(aside(ASIDE_ON_ONE_WORKER));
            assert!(aside(ASIDE_ON_MANY_WORKERS));
        });
        let many = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        many.block_on(async {
            assert!(!aside(LARGE_MESSAGE));
            assert!(!aside(1 << 20));
            assert!(aside(ASIDE_ON_MANY_WORKERS));
        });
        // Outside a runtime (a drop, a blocking thread): as on one thread.
        assert!(!aside(ASIDE_ON_ONE_WORKER - 1));
        assert!(aside(ASIDE_ON_ONE_WORKER));
    }
}
