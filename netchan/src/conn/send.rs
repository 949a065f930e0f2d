//! The send path: one encoded message, with the channel handles it
//! carries, into the protocol core under the connection's lock.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

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

/// Buffers of large messages written whole that a connection keeps for
/// the next ones it sends ([`Conn::keep_send_spare`]): as many as are
/// typically in flight at once.
const SEND_SPARES: usize = 4;

/// Bytes the spare buffers of one connection may hold in all.
const SEND_SPARE_BYTES: usize = 8 << 20;

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

/// Why the protocol refused a message, as the error its sender gets.
fn refusal(e: FinishError) -> Error {
    match e {
        FinishError::TooLarge { size, limit } => Error::MessageTooLarge { size, limit },
        FinishError::TooManyHandles { count, limit } => Error::Codec(format!(
            "{count} channel handles in one message exceed the limit of {limit}"
        )),
    }
}

/// What one [`Conn::send_batch`] did.
pub(crate) struct Handed {
    /// Messages handed over.
    pub(crate) sent: usize,
    /// Why the next did not go (`None`: all went).
    pub(crate) stop: Option<SendOutcome>,
    /// Credit left on the channel.
    pub(crate) credit: usize,
    /// The channel's capacity (0: a rendezvous, where each value is sent
    /// on its own, to wait for its take).
    pub(crate) capacity: u32,
    /// The largest message the peer takes.
    pub(crate) limit: usize,
}

/// A channel handle inside an outgoing message, attached to the
/// connection once the message is known to fit.
pub(crate) trait OutgoingHandle: Send {
    /// Allocates the handle's channel and registers its local end. `None`
    /// if the connection refused (it is ending).
    fn attach(self: Box<Self>, inner: &mut Inner, conn: &Arc<Conn>) -> Option<HandleDesc>;
}

impl Conn {
    /// A buffer to encode a message into, left by a large message this
    /// connection wrote whole ([`keep_send_spare`](Conn::keep_send_spare)):
    /// its pages are in memory already, where a new buffer of that size
    /// would fault each of them in as the message is encoded (and, freed
    /// on another thread than it was allocated on, may go back to the
    /// system in between).
    pub(crate) fn take_send_spare(&self) -> Option<BytesMut> {
        if !self.has_send_spare.load(Ordering::Acquire) {
            return None;
        }
        let mut spares = self.send_spare.try_lock().ok()?;
        let buf = spares.pop().map(|(buf, _)| buf);
        self.has_send_spare
            .store(!spares.is_empty(), Ordering::Release);
        buf
    }

    /// Keeps `buf`, the whole buffer of a large message just written (or
    /// a spare a small message did not need), emptied, for the next large
    /// message sent on this connection. At most [`SEND_SPARES`] of them,
    /// of [`SEND_SPARE_BYTES`] in all (larger messages are encoded on the
    /// blocking pool anyway, see [`aside`]); dropped once unused for a
    /// keepalive interval ([`expire_send_spare`](Conn::expire_send_spare)).
    /// Never waits for a lock: a drop handler's write may call this.
    pub(crate) fn keep_send_spare(&self, mut buf: BytesMut) {
        let cap = buf.capacity();
        if cap < LARGE_MESSAGE {
            return;
        }
        let Ok(mut spares) = self.send_spare.try_lock() else {
            return;
        };
        let held: usize = spares.iter().map(|(b, _)| b.capacity()).sum();
        if spares.len() < SEND_SPARES && held + cap <= SEND_SPARE_BYTES && !self.closing() {
            buf.clear();
            spares.push((buf, Instant::now()));
            self.has_send_spare.store(true, Ordering::Release);
        }
    }

    /// Drops the spare buffer if it was kept a keepalive interval ago or
    /// more (the writer calls this as its keepalive timer runs).
    pub(crate) fn expire_send_spare(&self, now: Instant) {
        if !self.has_send_spare.load(Ordering::Acquire) {
            return;
        }
        let Ok(mut spares) = self.send_spare.try_lock() else {
            return;
        };
        let idle = self.config.limits.keepalive;
        spares.retain(|(_, at)| now.saturating_duration_since(*at) < idle);
        self.has_send_spare
            .store(!spares.is_empty(), Ordering::Release);
    }

    /// Where the spare buffers' memory starts, most recently kept last.
    #[cfg(test)]
    pub(crate) fn send_spares(&self) -> Vec<*const u8> {
        crate::util::lock(&self.send_spare)
            .iter()
            .map(|(b, _)| b.as_ptr())
            .collect()
    }

    /// Hands messages without handles to `chan`, in order and under one
    /// lock, while it has credit: the bodies of `bodies`, back to back,
    /// `lens` long each. Each message handed over leaves both. `None`
    /// only if `wait` is false and the lock was busy (a drop handler,
    /// which may run with it held further up the stack).
    pub(crate) fn send_batch(
        self: &Arc<Self>,
        chan: ChanId,
        bodies: &mut BytesMut,
        lens: &mut std::collections::VecDeque<usize>,
        wait: bool,
    ) -> Option<Handed> {
        use bytes::Buf;
        let mut inner = if wait {
            self.lock()
        } else {
            self.inner.try_lock().ok()?
        };
        // What goes as it is first, then the rest one by one.
        let (mut sent, bytes) = inner.proto.send_run(chan, bodies, lens.iter().copied());
        bodies.advance(bytes);
        lens.drain(..sent);
        let mut stop = None;
        while let Some(&len) = lens.front() {
            if let Some(out) = Self::blocked(&inner, chan) {
                stop = Some(out);
                break;
            }
            let Some(body) = bodies.get(..len) else {
                stop = Some(SendOutcome::Closed);
                break;
            };
            if let Err(e) = inner.proto.send_slice(chan, body) {
                stop = Some(SendOutcome::Invalid(refusal(e)));
                break;
            }
            bodies.advance(len);
            lens.pop_front();
            sent += 1;
        }
        let handed = Handed {
            sent,
            stop,
            credit: inner.proto.credit(chan) as usize,
            capacity: inner.proto.capacity_of(chan),
            limit: inner.proto.send_limit(),
        };
        if sent > 0 {
            self.write_through_or_kick(None, inner);
        }
        Some(handed)
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
            Err(e) => Some(refusal(e)),
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

#[cfg(test)]
mod spare_tests {
    use std::time::{Duration, Instant};

    use crate::Session;

    /// A message of `len` bytes that encodes as one byte string.
    fn big(len: usize, fill: u8) -> serde_bytes::ByteBuf {
        serde_bytes::ByteBuf::from(vec![fill; len])
    }

    #[tokio::test]
    async fn a_large_message_written_whole_leaves_its_buffer_for_the_next_one() {
        let (a, b) = Session::pair();
        let mut rx = b.export_receiver::<serde_bytes::ByteBuf>("big", 1).unwrap();
        let tx = a
            .import_sender::<serde_bytes::ByteBuf>("big")
            .await
            .unwrap();
        let conn = a.conn().clone();
        assert!(conn.send_spares().is_empty());

        // Once written whole (it arrived), its buffer is kept.
        tx.send(big(1 << 20, 1)).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().unwrap().len(), 1 << 20);
        let kept = conn.send_spares();
        assert_eq!(kept.len(), 1);

        // The next one is encoded into it, and gives it back again: the
        // same memory, not a second buffer.
        for fill in 2..5 {
            tx.send(big(1 << 20, fill)).await.unwrap();
            let got = rx.recv().await.unwrap().unwrap();
            assert!(got.len() == 1 << 20 && got.iter().all(|&x| x == fill));
            assert_eq!(conn.send_spares(), kept);
        }

        // A small message after it (encoded into the spare, which it did
        // not need) leaves the spare as it was.
        let mut small_rx = b.export_receiver::<u32>("small", 4).unwrap();
        let small_tx = a.import_sender::<u32>("small").await.unwrap();
        small_tx.send(7).await.unwrap();
        assert_eq!(small_rx.recv().await.unwrap(), Some(7));
        assert_eq!(conn.send_spares(), kept);

        conn.expire_send_spare(Instant::now());
        assert_eq!(conn.send_spares(), kept, "dropped before its time");
        conn.expire_send_spare(
            Instant::now() + conn.config.limits.keepalive + Duration::from_millis(1),
        );
        assert!(conn.send_spares().is_empty());
    }

    #[tokio::test]
    async fn a_connection_keeps_few_spare_buffers_and_none_too_small() {
        let (a, _b) = Session::pair();
        let conn = a.conn().clone();
        // Too small to be worth keeping.
        conn.keep_send_spare(bytes::BytesMut::with_capacity(super::LARGE_MESSAGE - 1));
        assert!(conn.send_spares().is_empty());
        for _ in 0..10 {
            conn.keep_send_spare(bytes::BytesMut::with_capacity(1 << 20));
        }
        assert_eq!(conn.send_spares().len(), super::SEND_SPARES);
        // Beyond the bytes all spares may hold together.
        let (c, _d) = Session::pair();
        let conn = c.conn().clone();
        conn.keep_send_spare(bytes::BytesMut::with_capacity(
            super::SEND_SPARE_BYTES - (1 << 20),
        ));
        conn.keep_send_spare(bytes::BytesMut::with_capacity(2 << 20));
        assert_eq!(conn.send_spares().len(), 1);
    }
}
