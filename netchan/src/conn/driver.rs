//! The driver: two tokio tasks that run one connection's protocol core
//! over a byte stream.
//!
//! The reader reads into one buffer, decodes every complete frame under a
//! single lock and routes it. The writer sleeps until woken, takes the
//! whole transmit buffer at once (many frames, one `write_all`), and runs
//! keepalive timers. Neither knows about names or services.
//!
//! While the writer sleeps it leaves its stream with the connection
//! (`Conn::parked`), so that dropping the last handle can write the
//! goodbye at once ([`write_now`]): a program that returns from `main`
//! without `close().await` drops its runtime, and the runtime drops these
//! tasks without polling them again. A task that sends a message and
//! then waits for its answer (a call, a reply) writes through the parked
//! stream itself ([`write_through`]) rather than wake the writer for it.
//!
//! On a multi-thread runtime the writer, once woken, gives the tasks just
//! woken one turn before it takes the transmit buffer, so that messages
//! produced together (a read's worth of replies) leave in one write.
//!
//! Part of the connection core: it takes any stream `transport` gives
//! (`Halves`) and hands every event to `Conn::dispatch`; it touches no
//! endpoint itself.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{Conn, Inner, LARGE_MESSAGE, Status};
use crate::error::{Error, Origin};
use crate::util::lock;

/// Largest read buffer growth step: what a busy stream reads at once.
const READ_CHUNK: usize = 64 << 10;
/// First read buffer growth step, until a read fills it. An idle
/// connection keeps only this much: a 64 KiB buffer per connection
/// touches pages of its own (the allocator's headers at both ends), about
/// 4 KiB of memory per idle connection.
const READ_CHUNK_FIRST: usize = 1 << 10;

/// One link: the reader and writer tasks over one stream. A session that
/// is not resumable has one; a resumable one gets a new link (a higher
/// `epoch`) each time it resumes, and a link whose stream broke is
/// *suspended*: its tasks end without ending the connection.
pub(crate) struct LinkCtl {
    epoch: u64,
    /// Cancelled when this link is given up (or the connection failed).
    dead: tokio_util::sync::CancellationToken,
    /// Tasks of this link still running.
    left: AtomicUsize,
    /// The stream broke and the session was suspended (or a newer link
    /// replaced this one): the tasks end without ending the connection.
    suspended: AtomicBool,
    /// The handshake (first or resume) must finish by then.
    deadline: tokio::time::Instant,
}

/// Starts the reader and writer tasks of `conn` over `stream`.
pub(crate) fn spawn<T: crate::transport::Halves>(conn: Arc<Conn>, stream: T) {
    let epoch = conn.lock().link_epoch;
    spawn_link(conn, stream, epoch, BytesMut::new(), None);
}

/// Starts link `epoch` of `conn` over `stream`, with `buf` already read
/// from it, under the handshake `deadline` (default: the handshake
/// timeout from now).
pub(crate) fn spawn_link<T: crate::transport::Halves>(
    conn: Arc<Conn>,
    stream: T,
    epoch: u64,
    buf: BytesMut,
    deadline: Option<tokio::time::Instant>,
) {
    let (rd, wr) = stream.halves();
    let dead = conn.dead.child_token();
    {
        let mut inner = conn.lock();
        if inner.link_epoch == epoch {
            if let Some(old) = inner.link_dead.replace(dead.clone()) {
                // The link this one replaces stops now.
                old.cancel();
            }
        }
    }
    let link = Arc::new(LinkCtl {
        epoch,
        dead,
        left: AtomicUsize::new(2),
        suspended: AtomicBool::new(false),
        deadline: deadline
            .unwrap_or_else(|| tokio::time::Instant::now() + conn.config.handshake_timeout),
    });
    let (c1, l1) = (conn.clone(), link.clone());
    conn.rt.spawn(async move {
        reader(&c1, &l1, rd, buf).await;
        finish(&c1, &l1);
    });
    let c2 = conn.clone();
    conn.rt.spawn(async move {
        let mut end = WriterEnd {
            conn: &c2,
            epoch: link.epoch,
            cut_short: true,
        };
        writer(&c2, &link, Box::new(wr)).await;
        end.cut_short = false;
        finish(&c2, &link);
    });
}

/// Goes with the writer task, also when a runtime that shuts down (a
/// program returning from `main`) drops it unfinished.
///
/// Cut short, it first says goodbye: nothing will drive the connection
/// again, so what is queued (the closes of the channels the program's last
/// handles left, the values sent before) goes now, with the goodbye, if
/// the stream is parked and takes it at once. The last handles' own
/// attempt ([`write_now`]) may have found the writer awake or another task
/// holding the connection's lock, and their channels' links wait for the
/// peer's answer to their closes, which no task reads any more: without
/// this the peer would see the connection lost.
///
/// Then it drops the stream the writer left with the connection: the
/// socket closes, and the peer sees the end.
struct WriterEnd<'a> {
    conn: &'a Conn,
    epoch: u64,
    cut_short: bool,
}

impl Drop for WriterEnd<'_> {
    fn drop(&mut self) {
        if self.cut_short {
            self.conn.request_close();
            write_queued(self.conn, true);
        }
        drop(take_parked(self.conn, self.epoch));
    }
}

/// Whether handles are closing: the program may be ending, and its
/// runtime may drop the driver's tasks without polling them again.
fn handles_closing(conn: &Conn) -> bool {
    conn.closing() || conn.pending_closes.load(Ordering::Acquire) > 0
}

/// Leaves the writer's stream with the connection, where a drop handler
/// ([`write_now`]) or a sending task ([`write_through`]) can write to it.
fn park(
    conn: &Conn,
    link: &LinkCtl,
    wr: WriteHalf,
    buf: Segments,
    unflushed: bool,
    armed: Option<Instant>,
    turn: bool,
) {
    *lock(&conn.parked) = Some(Parked {
        epoch: link.epoch,
        wr,
        buf,
        unflushed,
        armed,
        turn,
    });
}

/// Takes the stream link `epoch`'s writer parked, if it is that link's.
fn take_parked(conn: &Conn, epoch: u64) -> Option<Parked> {
    let mut slot = lock(&conn.parked);
    if slot.as_ref().is_some_and(|p| p.epoch == epoch) {
        slot.take()
    } else {
        None
    }
}

/// The stream of `link` broke (read or write failed, end of stream
/// without a goodbye, silence past the keepalive deadline, a resume
/// handshake that timed out). A resumable session is suspended, to be
/// resumed over a new link; anything else fails with `e`.
fn broke(conn: &Arc<Conn>, link: &LinkCtl, e: Error) {
    let was_up = {
        let mut inner = conn.lock();
        if inner.link_epoch != link.epoch {
            // A newer link replaced this one already.
            link.suspended.store(true, Ordering::Release);
            None
        } else if !conn.closing()
            && matches!(inner.status, Status::Ready)
            && !inner.proto.is_suspended()
        {
            let was_up = !inner.proto.in_handshake();
            if inner.proto.suspend() {
                link.suspended.store(true, Ordering::Release);
                Some(was_up)
            } else {
                drop(inner);
                return fail(conn, e);
            }
        } else if inner.proto.is_suspended() {
            link.suspended.store(true, Ordering::Release);
            None
        } else {
            drop(inner);
            return fail(conn, e);
        }
    };
    link.dead.cancel();
    drop(take_parked(conn, link.epoch));
    if was_up == Some(true) {
        tracing::warn!(
            conn = conn.id,
            peer = %conn.peer_label(),
            side = ?conn.side,
            reason = %e,
            "netchan: connection broken; the session is suspended until it resumes"
        );
        conn.log_error(e.clone());
        conn.suspended(e);
    } else if was_up == Some(false) {
        tracing::info!(
            conn = conn.id,
            peer = %conn.peer_label(),
            reason = %e,
            "netchan: resume attempt failed"
        );
    }
    conn.changed.notify_waiters();
    conn.kick();
}

fn finish(conn: &Arc<Conn>, link: &LinkCtl) {
    if link.left.fetch_sub(1, Ordering::AcqRel) != 1 {
        // The other task still runs; make sure it notices the end.
        conn.kick();
        return;
    }
    {
        let inner = conn.lock();
        if inner.link_epoch != link.epoch
            || (inner.is_live() && inner.proto.is_suspended())
            || (inner.is_live() && link.suspended.load(Ordering::Acquire))
        {
            // The session lives on (or ended through a newer link): a
            // new link takes over.
            return;
        }
    }
    finish_conn(conn);
}

/// The connection is over for good: ends it (cleanly, unless it failed
/// before) and tells whoever waits for its driver.
pub(crate) fn finish_conn(conn: &Arc<Conn>) {
    let mut garbage = Vec::new();
    let clean = {
        let mut inner = conn.lock();
        conn.end(&mut inner, Error::Closed, &mut garbage);
        inner.end_error().is_none()
    };
    drop(garbage);
    if clean {
        // A failure was logged at `warn` when it happened.
        tracing::info!(
            conn = conn.id,
            peer = %conn.peer_label(),
            side = ?conn.side,
            "netchan: connection closed"
        );
    }
    conn.driver_ended.store(true, Ordering::Release);
    conn.driver_done.notify_waiters();
    conn.errors.end();
    conn.changed.notify_waiters();
}

/// A connection that never started (an exporter found it resumes another
/// session): ends it without a word, so that whatever its session-start
/// hooks made for it lets go.
pub(crate) fn discard(conn: &Arc<Conn>) {
    let mut garbage = Vec::new();
    conn.end(&mut conn.lock(), Error::Closed, &mut garbage);
    drop(garbage);
    conn.driver_ended.store(true, Ordering::Release);
    conn.driver_done.notify_waiters();
    conn.errors.end();
}

/// Ends the connection with `e` (logged) and queues a goodbye naming it.
pub(crate) fn fail(conn: &Arc<Conn>, e: Error) {
    let mut garbage = Vec::new();
    {
        let mut inner = conn.lock();
        if matches!(inner.status, Status::Ended(_)) {
            return;
        }
        if matches!(inner.status, Status::Handshaking) {
            tracing::warn!(
                conn = conn.id,
                peer = %conn.peer_label(),
                side = ?conn.side,
                reason = %e,
                "netchan: handshake failed"
            );
        } else {
            tracing::warn!(
                conn = conn.id,
                peer = %conn.peer_label(),
                side = ?conn.side,
                reason = %e,
                "netchan: connection failed"
            );
        }
        conn.log_error(e.clone());
        // Never empty: an empty goodbye is a clean close to the peer,
        // and this is a failure it must report as one.
        let reason = match &e {
            Error::Protocol { error, .. } => error.to_string(),
            other => other.to_string(),
        };
        conn.end(&mut inner, e, &mut garbage);
        inner.proto.goodbye(&reason);
    }
    drop(garbage);
    // The writer sends the goodbye if the stream still takes it; neither
    // task waits on the stream any longer than that.
    conn.dead.cancel();
    conn.kick();
}

/// A protocol error the peer caused (or a silence it is blamed for).
fn peer_violation(error: crate::proto::ProtoError) -> Error {
    Error::Protocol {
        origin: Origin::Remote,
        error,
    }
}

fn io_error(e: std::io::Error) -> Error {
    #[cfg(feature = "tls")]
    return crate::tls::explain_io(e);
    #[cfg(not(feature = "tls"))]
    Error::io(e)
}

/// One timer kept for a task's whole life. Arming it for a later time
/// than it is set for leaves it as it is (the task wakes early, finds
/// nothing due and arms it again); only an earlier time, or a timer that
/// fired, sets it anew. A busy connection moves its keepalive deadline
/// with every write and every read: a fresh timer each time would cost a
/// registration with the runtime's timer wheel, and often a wake-up of
/// the runtime's driver (a system call), per message.
struct Timer {
    sleep: Pin<Box<tokio::time::Sleep>>,
    armed: Option<tokio::time::Instant>,
}

impl Timer {
    fn new() -> Timer {
        Timer {
            sleep: Box::pin(tokio::time::sleep_until(tokio::time::Instant::now())),
            armed: None,
        }
    }

    /// Makes sure the timer fires at `at` or earlier.
    fn arm(&mut self, at: tokio::time::Instant) {
        if self.armed.is_none_or(|a| at < a) {
            self.sleep.as_mut().reset(at);
            self.armed = Some(at);
        }
    }

    /// Completes when the armed time passed (never, if none is armed).
    async fn fired(&mut self) {
        if self.armed.is_none() {
            return std::future::pending().await;
        }
        self.sleep.as_mut().await;
        self.armed = None;
    }
}

/// Whether this task runs on a runtime of several workers, where a turn
/// given to other tasks may wake another worker.
fn several_workers() -> bool {
    matches!(
        tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()),
        Ok(tokio::runtime::RuntimeFlavor::MultiThread)
    )
}

/// The most messages of one channel the reader puts into its queue under
/// one lock (the connection keeps room for as many between reads).
const RUN_MAX: usize = 64;

async fn reader<R: AsyncRead + Unpin>(conn: &Arc<Conn>, link: &LinkCtl, mut rd: R, buf: BytesMut) {
    let mut buf = buf;
    // The growth step: small until a read fills the room it had, then
    // `READ_CHUNK` for good (a busy connection reads large at once).
    let mut chunk = READ_CHUNK_FIRST;
    buf.reserve(chunk);
    let handshake_deadline = link.deadline;
    // Bytes read with the stream (a peeked hello) are decoded first.
    let mut fresh = !buf.is_empty();
    // Dead-peer detection: the time of the last read, and a timer that
    // fires at the latest `dead_after` later.
    let mut last_read = tokio::time::Instant::now();
    let mut silence = Timer::new();
    // When grants and confirmations that may wait are due, if no write
    // took them along meanwhile (see `arm_lazy_credit`).
    let mut flush = Timer::new();
    // The receivers a read woke must run before this task reads on: with
    // data always waiting (a large message arriving), tokio's budget alone
    // would let it read megabytes first. On a one-thread runtime, this task
    // gives them a turn after each read that delivered a message. On a
    // runtime of several workers a turn costs more (the wake-up of another
    // worker, measured to double the time and CPU of a sequential call):
    // there the turn is `owed`, and given only if the next read finds
    // bytes at once. A read that waits lets the receivers run meanwhile.
    let yield_each = !several_workers();
    let mut owed = false;
    // Messages without handles in a row on one channel go into its queue
    // together, under one lock of it, up to `RUN_MAX` at a time (see
    // `Conn::deliver_run`); empty between reads.
    let mut run = super::Run::default();
    // Small messages, copied out of `buf` as they are read (see
    // `Conn::deliver_smalls`); empty between reads.
    let mut smalls = super::Smalls::default();
    // Made once, not per read: each makes and drops a waiter entry on its
    // token, under a lock, on every read of a busy connection.
    let dead = link.dead.cancelled();
    let close_asked = conn.close_asked.cancelled();
    tokio::pin!(dead, close_asked);
    loop {
        if buf.capacity() - buf.len() < chunk / 4 {
            buf.reserve(chunk);
        }
        let room = buf.capacity() - buf.len();
        let handshaking = {
            let inner = conn.lock();
            matches!(inner.status, Status::Handshaking) || inner.proto.in_handshake()
        };
        // Whether the read had to wait for bytes (the tasks the last one
        // woke ran meanwhile).
        let mut waited = false;
        let read = if std::mem::take(&mut fresh) {
            Ok(buf.len())
        } else if handshaking {
            let r = tokio::select! {
                biased;
                r = tokio::time::timeout_at(handshake_deadline, rd.read_buf(&mut buf)) => r,
                () = &mut dead => return,
            };
            match r {
                Ok(r) => r,
                Err(_) => {
                    broke(conn, link, conn.handshake_timeout());
                    return;
                }
            }
        } else if conn.closing() {
            // We said goodbye: give the peer a bounded time to answer.
            match tokio::time::timeout(conn.config.close_timeout, rd.read_buf(&mut buf)).await {
                Ok(r) => r,
                Err(_) => return,
            }
        } else {
            // Dead-peer detection lives here, not only in the writer: a
            // writer blocked on a full socket cannot run timers.
            let dead_after = conn.config.limits.dead_after;
            silence.arm(last_read + dead_after);
            let read = noting_waits(rd.read_buf(&mut buf), &mut waited);
            tokio::select! {
                biased;
                r = read => r,
                () = silence.fired() => {
                    if last_read.elapsed() < dead_after {
                        // Data came meanwhile: wait the rest of the time.
                        continue;
                    }
                    let silent = crate::proto::ProtoError::KeepaliveTimeout(dead_after);
                    broke(conn, link, peer_violation(silent));
                    return;
                }
                () = flush.fired() => {
                    // No byte is lost: a read cancelled before it
                    // completed read nothing.
                    if conn.lock().proto.credit_waiting() {
                        conn.kick();
                    }
                    continue;
                }
                () = &mut dead => return,
                // We said goodbye: this read's keepalive deadline no longer
                // applies; read again under the close timeout (no byte is
                // lost: a read cancelled before it completed read nothing).
                // `closing()` holds from then on, so this branch is not
                // polled again once it completed.
                () = &mut close_asked => continue,
            }
        };
        if std::mem::take(&mut owed) && !waited {
            // See `owed`: the receivers have not run, and bytes are
            // waiting already.
            tokio::task::yield_now().await;
        }
        match read {
            Ok(0) => {
                let ended = matches!(conn.lock().status, Status::Ended(_));
                if !ended {
                    let e = if conn.closing() {
                        Error::Closed
                    } else {
                        Error::ConnectionLost("peer closed the connection without a goodbye".into())
                    };
                    if matches!(e, Error::Closed) {
                        let mut g = Vec::new();
                        conn.end(&mut conn.lock(), e, &mut g);
                    } else {
                        broke(conn, link, e);
                    }
                }
                return;
            }
            Err(e) => return stream_failed(conn, link, e),
            Ok(n) => {
                last_read = tokio::time::Instant::now();
                if n >= room {
                    chunk = READ_CHUNK;
                }
            }
        }
        let mut garbage = Vec::new();
        let mut ended = false;
        let mut delivered = false;
        let wake;
        let lazy;
        {
            let mut inner = conn.lock();
            if inner.link_epoch != link.epoch || inner.proto.is_suspended() {
                // This link was given up: what it still read is stale.
                return;
            }
            let now = Instant::now();
            loop {
                let polled = inner.proto.poll_input_with(
                    &mut buf,
                    now,
                    Some(&mut |chan, data| smalls.push(chan, data)),
                );
                if !smalls.is_empty() {
                    // They came after the run, and before what was polled.
                    delivered = true;
                    conn.deliver_run(&mut inner, &mut run);
                    conn.deliver_smalls(&mut inner, &mut smalls);
                }
                match polled {
                    Ok(Some(crate::proto::Event::Message {
                        chan,
                        data,
                        handles,
                    })) if handles.is_empty() => {
                        delivered = true;
                        if run.chan != Some(chan) || run.data.len() >= RUN_MAX {
                            conn.deliver_run(&mut inner, &mut run);
                            run.chan = Some(chan);
                        }
                        run.data.push(data);
                    }
                    Ok(Some(ev)) => {
                        conn.deliver_run(&mut inner, &mut run);
                        delivered |= matches!(ev, crate::proto::Event::Message { .. });
                        conn.dispatch(&mut inner, ev, &mut garbage);
                    }
                    Ok(None) => {
                        conn.deliver_run(&mut inner, &mut run);
                        break;
                    }
                    Err(error) => {
                        conn.deliver_run(&mut inner, &mut run);
                        drop(inner);
                        if error == crate::proto::ProtoError::ResumeUnanswered {
                            // Only this attempt failed: suspended again,
                            // the session resumes over another link.
                            broke(conn, link, peer_violation(error));
                        } else {
                            fail(conn, peer_violation(error));
                        }
                        return;
                    }
                }
            }
            if matches!(inner.status, Status::Ended(_)) {
                ended = true;
            }
            // The writer is woken only when it has something to write or
            // a confirmation's timer to arm: not once per read. Grants and
            // confirmations that may wait arm this task's timer instead.
            lazy = inner.proto.arm_lazy_credit(now);
            wake = ended || inner.proto.needs_writer();
        }
        if let Some(at) = lazy {
            flush.arm(tokio::time::Instant::from_std(at));
        }
        drop(garbage);
        if wake {
            conn.kick();
        }
        if ended {
            return;
        }
        if delivered && yield_each {
            tokio::task::yield_now().await;
        } else {
            owed |= delivered;
        }
    }
}

/// The writer's half of the stream, boxed so that the connection can hold
/// it while the writer sleeps.
pub(crate) type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// What the writer leaves with the connection while it sleeps: its stream
/// and any bytes a [`write_now`] could not finish.
pub(crate) struct Parked {
    epoch: u64,
    wr: WriteHalf,
    buf: Segments,
    /// The stream may hold bytes a flush has not yet sent on (TLS
    /// records), left by a write from outside the writer task.
    unflushed: bool,
    /// The deadline the writer sleeps until (keepalive, credit that may
    /// wait), if any.
    armed: Option<Instant>,
    /// The writer only gave the other tasks a turn: it runs again without
    /// a wake-up, and then takes whatever is queued and sets its timer.
    turn: bool,
}

impl Parked {
    /// Whether a sending task may write through this stream: nothing of
    /// an earlier write is left for the writer to finish.
    pub(crate) fn idle(&self) -> bool {
        !self.buf.has_remaining() && !self.unflushed
    }
}

/// Writes the transmit buffer straight to the stream the writer parked,
/// from the task that just queued a message with `inner` held, instead of
/// waking the writer to do it: a call's request or reply then leaves
/// without a hand-over to another task (and, on a multi-thread runtime,
/// without waking another thread).
///
/// Writes only what the stream takes without blocking. Returns whether
/// the writer must still be woken: bytes are left over, the link is not
/// up, more is queued (chunks of a large message), or the next deadline
/// is earlier than the one the writer sleeps until.
pub(crate) fn write_through(conn: &Conn, p: &mut Parked, mut inner: MutexGuard<'_, Inner>) -> bool {
    if inner.link_epoch != p.epoch || inner.proto.is_suspended() {
        return true;
    }
    conn.apply_deferred(&mut inner);
    let have = inner.proto.take_segments(&mut p.buf.segs, Instant::now());
    if p.turn {
        // The writer runs again anyway (see `Parked::turn`): waking it
        // would only cost a wake-up (on a runtime of several workers,
        // of another worker) and a second pass.
        drop(inner);
        if have {
            p.buf.filled();
            write_parked(p);
            p.buf.give_back(conn);
        }
        return false;
    }
    let more = inner.proto.needs_writer()
        || inner.proto.goodbye_sent()
        || matches!(inner.status, Status::Ended(_));
    let deadline = inner.proto.poll_timeout();
    drop(inner);
    if have {
        p.buf.filled();
        write_parked(p);
        p.buf.give_back(conn);
    }
    let earlier = match (deadline, p.armed) {
        (Some(d), Some(a)) => d < a,
        (Some(_), None) => true,
        (None, _) => false,
    };
    more || earlier || !p.idle()
}

/// Writes as much of `p`'s buffer as its stream takes without blocking,
/// and flushes once all of it went. A waker that does nothing: a stream
/// that would block is left to the writer task, which registers its own
/// waker when it writes again.
fn write_parked(p: &mut Parked) {
    let mut cx = Context::from_waker(Waker::noop());
    while p.buf.has_remaining() {
        let mut slices = [std::io::IoSlice::new(&[]); 16];
        let n = p.buf.chunks_vectored(&mut slices);
        match Pin::new(&mut p.wr).poll_write_vectored(&mut cx, &slices[..n]) {
            Poll::Ready(Ok(written)) if written > 0 => p.buf.advance(written),
            _ => break,
        }
    }
    if !p.buf.has_remaining() {
        p.buf.clear();
        p.unflushed = !matches!(Pin::new(&mut p.wr).poll_flush(&mut cx), Poll::Ready(Ok(())));
    }
}

/// Writes what is queued (the goodbye the last handle's drop just asked
/// for, the closes of the last channels) straight to the stream, without waiting for the writer task: only
/// if the writer is asleep, the locks are free at once, and as much as the
/// stream takes without blocking. Whatever remains, the writer sends when
/// it runs again.
///
/// A drop handler calls this: it never blocks and never waits for a lock
/// (it may run with `inner` held further up the stack).
pub(crate) fn write_now(conn: &Conn) {
    write_queued(conn, false);
}

/// [`write_now`]; `wait`: for the locks, which only a caller that holds
/// neither and runs outside the driver's own steps may do ([`WriterEnd`],
/// as a runtime drops the writer task).
fn write_queued(conn: &Conn, wait: bool) {
    let mut slot = match conn.parked.try_lock() {
        Ok(slot) => slot,
        Err(_) if wait => lock(&conn.parked),
        Err(_) => return,
    };
    // `None`: the writer is awake (it sends the goodbye itself) or gone.
    let Some(p) = slot.as_mut() else {
        return;
    };
    if !p.buf.has_remaining() {
        let mut inner = match conn.inner.try_lock() {
            Ok(inner) => inner,
            Err(_) if wait => conn.lock(),
            Err(_) => return,
        };
        conn.apply_deferred(&mut inner);
        if conn.closing() {
            // Closing the channels above may have dropped the last
            // handle, which asked for the goodbye: take that too.
            conn.apply_deferred(&mut inner);
        }
        if !inner.proto.take_segments(&mut p.buf.segs, Instant::now()) {
            return;
        }
        drop(inner);
        p.buf.filled();
    }
    write_parked(p);
    p.buf.give_back(conn);
    tracing::trace!(
        conn = conn.id,
        left = p.buf.remaining(),
        "netchan: wrote the goodbye from drop"
    );
}

/// The bytes of one transmit: frames and slices of large messages, written
/// in order, with vectored writes where the stream takes them.
#[derive(Default)]
struct Segments {
    segs: Vec<Bytes>,
    /// Index of the first segment not yet written.
    next: usize,
    remaining: usize,
    /// The buffer of a large message whose last piece was written, whole
    /// again and empty, for the connection to keep
    /// ([`Conn::keep_send_spare`]).
    reclaimed: Option<BytesMut>,
}

impl Segments {
    fn filled(&mut self) {
        self.next = 0;
        self.remaining = self.segs.iter().map(Bytes::len).sum();
    }

    fn clear(&mut self) {
        for seg in self.segs.drain(..) {
            // The last piece of a large message's buffer is its only
            // reference once written. Frames of small messages share the
            // connection's transmit buffer, alone only once the
            // connection replaced it; kept too if that was large.
            if self.reclaimed.is_none() && !seg.is_empty() {
                if let Ok(mut b) = seg.try_into_mut() {
                    b.clear();
                    if b.try_reclaim(LARGE_MESSAGE) {
                        self.reclaimed = Some(b);
                    }
                }
            }
        }
        self.next = 0;
        self.remaining = 0;
    }

    /// Hands a reclaimed buffer to `conn`.
    fn give_back(&mut self, conn: &Conn) {
        if let Some(b) = self.reclaimed.take() {
            conn.keep_send_spare(b);
        }
    }
}

impl Buf for Segments {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.segs.get(self.next).map_or(&[], |s| &s[..])
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [std::io::IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, seg) in dst
            .iter_mut()
            .zip(&self.segs[self.next.min(self.segs.len())..])
        {
            *slot = std::io::IoSlice::new(seg);
            n += 1;
        }
        n
    }

    fn advance(&mut self, mut cnt: usize) {
        self.remaining = self.remaining.saturating_sub(cnt);
        while cnt > 0 {
            let Some(seg) = self.segs.get_mut(self.next) else {
                return;
            };
            if cnt < seg.len() {
                seg.advance(cnt);
                return;
            }
            cnt -= seg.len();
            self.next += 1;
        }
        while self.segs.get(self.next).is_some_and(Bytes::is_empty) {
            self.next += 1;
        }
    }
}

async fn writer(conn: &Arc<Conn>, link: &LinkCtl, mut wr: WriteHalf) {
    let mut buf = Segments::default();
    // Whether this pass already gave way once to the tasks just woken.
    let mut yielded = false;
    // Woken by a sender on a runtime of several workers, this task may
    // run on another worker while that sender (a dispatcher answering a
    // read's calls, a caller among many) is still producing: one turn for
    // it first, so that its messages leave in one write rather than one
    // each. On a one-thread runtime the writer runs only once the sender
    // waits, so the batch is whole already.
    let mut woken = false;
    let yield_on_wake = several_workers();
    let mut timer = Timer::new();
    // A write from outside this task left bytes in the stream to flush.
    let mut unflushed = false;
    // The last write had to wait for room in the stream.
    let mut stream_full = false;
    loop {
        if link.suspended.load(Ordering::Acquire) {
            return;
        }
        if buf.has_remaining() || unflushed {
            unflushed = false;
            // Left by a `write_now` or `write_through` the stream did not
            // take whole.
            let wrote = write_out(link, &mut wr, &mut buf).await;
            buf.give_back(conn);
            match wrote {
                Wrote::All(waited) => {
                    stream_full = waited;
                    continue;
                }
                Wrote::Dead => return,
                Wrote::Failed(e) => return stream_failed(conn, link, e),
            }
        }
        let notified = conn.write_notify.notified();
        conn.writer_awake();
        let step = {
            let mut inner = conn.lock();
            if inner.link_epoch != link.epoch || inner.proto.is_suspended() {
                drop(inner);
                link.suspended.store(true, Ordering::Release);
                // Another link may wait for this wake-up.
                conn.kick();
                return;
            }
            conn.apply_deferred(&mut inner);
            let now = Instant::now();
            if let Err(error) = inner.proto.handle_timeout(now) {
                drop(inner);
                broke(conn, link, peer_violation(error));
                continue;
            }
            conn.expire_send_spare(now);
            // Never while handles are closing: the program may be ending, and
            // its runtime may drop this task during the turn.
            if !yielded
                && !handles_closing(conn)
                && ((woken && yield_on_wake) || inner.proto.only_credit_to_write())
            {
                None
            } else {
                inner.proto.set_stream_full(stream_full);
                let have = inner.proto.take_segments(&mut buf.segs, now);
                Some((
                    have,
                    inner.proto.goodbye_sent(),
                    matches!(inner.status, Status::Ended(_)),
                    inner.proto.poll_timeout(),
                ))
            }
        };
        let Some((have, done, ended, deadline)) = step else {
            // Only grants to write: the task that took the values may be
            // about to answer them (a handler's reply, the caller's next
            // request). Give it one turn, so that the grant rides along
            // with that write instead of costing a write (and a wake-up
            // of the peer) of its own. Or just woken on a runtime of
            // several workers (see `yield_on_wake`).
            //
            // The stream stays where a drop handler can reach it meanwhile:
            // a runtime dropped during this turn never polls this task
            // again, and the goodbye of the last handle must still go.
            yielded = true;

            woken = false;
            park(conn, link, wr, buf, unflushed, None, true);
            if handles_closing(conn) {
                // The last handles went meanwhile, and their drop found
                // this task awake: their goodbye goes now.
                write_now(conn);
            } else {
                tokio::task::yield_now().await;
            }
            let Some(p) = take_parked(conn, link.epoch) else {
                return;
            };
            (wr, buf, unflushed) = (p.wr, p.buf, p.unflushed);
            continue;
        };
        yielded = false;
        if have {
            buf.filled();
            let wrote = write_out(link, &mut wr, &mut buf).await;
            buf.give_back(conn);
            match wrote {
                Wrote::All(waited) => {
                    stream_full = waited;
                    continue;
                }
                Wrote::Dead => return,
                Wrote::Failed(e) => return stream_failed(conn, link, e),
            }
        }
        if done || ended {
            break;
        }
        // Asleep: leave the stream where a drop handler can reach it.
        park(conn, link, wr, buf, unflushed, deadline, false);
        match deadline {
            Some(d) => {
                timer.arm(tokio::time::Instant::from_std(d));
                tokio::select! {
                    _ = notified => {}
                    () = timer.fired() => {}
                }
            }
            None => notified.await,
        }
        woken = true;
        let Some(p) = take_parked(conn, link.epoch) else {
            return;
        };
        (wr, buf, unflushed) = (p.wr, p.buf, p.unflushed);
    }
    // A peer that stopped reading must not hold this task forever.
    let _ = tokio::time::timeout(conn.config.close_timeout, async {
        let _ = wr.flush().await;
        let _ = wr.shutdown().await;
    })
    .await;
}

/// Runs `f`, setting `waited` if any poll of it had to wait.
async fn noting_waits<F: Future>(f: F, waited: &mut bool) -> F::Output {
    let mut f = std::pin::pin!(f);
    std::future::poll_fn(|cx| {
        let r = f.as_mut().poll(cx);
        *waited |= r.is_pending();
        r
    })
    .await
}

/// How a [`write_out`] ended.
enum Wrote {
    /// All written; `true` if the stream made the write wait for room.
    All(bool),
    /// The connection failed while the write was stuck (a peer that
    /// stopped reading): give up on the stream.
    Dead,
    Failed(std::io::Error),
}

/// Writes all of `buf`, and flushes: a TLS stream may keep the last
/// records of a write in its own buffer when the socket was full, and
/// nothing else would send them before the writer's next wake-up (a TCP
/// stream's flush does nothing).
async fn write_out(link: &LinkCtl, wr: &mut WriteHalf, buf: &mut Segments) -> Wrote {
    let mut waited = false;
    let write = noting_waits(
        async {
            wr.write_all_buf(buf).await?;
            wr.flush().await
        },
        &mut waited,
    );
    let wrote = tokio::select! {
        biased;
        r = write => match r {
            Ok(()) => Wrote::All(waited),
            Err(e) => Wrote::Failed(e),
        },
        () = link.dead.cancelled() => Wrote::Dead,
    };
    buf.clear();
    wrote
}

/// Whether `e` only says the peer went away: it reset the connection,
/// closed it under our write, or ended TLS without its close message.
fn peer_went_away(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
    )
}

/// The stream failed under the reader or the writer. While this side is
/// closing, a peer that went away (reset, broken pipe) is the ordinary
/// end of the close, not a failure: the peer may close its socket as soon
/// as it has our goodbye, before reading the rest.
fn stream_failed(conn: &Arc<Conn>, link: &LinkCtl, e: std::io::Error) {
    if conn.closing() && peer_went_away(&e) {
        tracing::debug!(
            conn = conn.id,
            peer = %conn.peer_label(),
            side = ?conn.side,
            error = %e,
            "netchan: the peer went away while we closed"
        );
        let mut garbage = Vec::new();
        conn.end(&mut conn.lock(), Error::Closed, &mut garbage);
        drop(garbage);
        conn.dead.cancel();
        conn.kick();
    } else {
        broke(conn, link, io_error(e));
    }
}
