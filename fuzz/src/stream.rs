//! An in-memory byte stream whose reads and writes the fuzz input splits
//! and pauses.
//!
//! The harness pushes the fake peer's bytes into a [`Feed`] (and finally
//! marks its end); the session reads them through [`FuzzStream`], which
//! hands them out following a read [`Plan`]: chunks of chosen sizes,
//! `Pending` followed by an immediate wake, `Pending` until a short real
//! timer fires, or an I/O error. Writes follow a write plan the same way
//! and are captured for [`crate::output`] to check.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::grammar::{Reader, Writer};

/// Most bytes of the session's output kept for checking.
pub const OUT_CAP: usize = 1 << 20;

/// One step of a read or write plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoStep {
    /// Move at most this many bytes (at least 1).
    Chunk(u16),
    /// Return `Pending` and wake at once.
    Yield,
    /// Return `Pending` until a real timer of this many milliseconds fires
    /// (within the stream's sleep budget; otherwise like `Yield`).
    Sleep(u8),
    /// Fail with an I/O error.
    Fail,
    /// Writes only: return `Ok(0)` (the writer sees `WriteZero`).
    Zero,
}

/// A sequence of steps, repeated; an empty plan moves everything at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The steps.
    pub steps: Vec<IoStep>,
}

impl Plan {
    /// Reads a plan of at most 16 steps.
    pub fn parse(r: &mut Reader<'_, '_>) -> Plan {
        let n = r.u8() % 17;
        let steps = (0..n)
            .map(|_| match r.u8() % 8 {
                0..=3 => IoStep::Chunk(r.u16().max(1)),
                4 => IoStep::Yield,
                5 => IoStep::Sleep(r.u8() % 4 + 1),
                6 => IoStep::Fail,
                _ => IoStep::Zero,
            })
            .collect();
        Plan { steps }
    }

    /// Writes a plan (the inverse of [`parse`](Self::parse)).
    pub fn write(&self, w: &mut Writer) {
        w.u8(self.steps.len().min(16) as u8);
        for s in self.steps.iter().take(16) {
            match s {
                IoStep::Chunk(n) => {
                    w.u8(0).u16(*n);
                }
                IoStep::Yield => {
                    w.u8(4);
                }
                IoStep::Sleep(ms) => {
                    w.u8(5).u8(ms.saturating_sub(1));
                }
                IoStep::Fail => {
                    w.u8(6);
                }
                IoStep::Zero => {
                    w.u8(7);
                }
            }
        }
    }
}

#[derive(Debug, Default)]
struct FeedState {
    input: VecDeque<u8>,
    eof: bool,
    reader: Option<Waker>,
    output: Vec<u8>,
    /// The session's output ended abnormally (a failed or zero write): a
    /// cut frame at its end is not a bug.
    output_cut: bool,
    /// The session shut its write side down.
    shut: bool,
    /// A read of the session failed (the plan's `Fail`: a reset).
    read_failed: bool,
}

/// The harness's end of the stream.
#[derive(Debug, Default)]
pub struct Feed {
    st: Mutex<FeedState>,
}

impl Feed {
    /// A new, empty feed.
    pub fn new() -> Arc<Feed> {
        Arc::new(Feed::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FeedState> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `bytes` available to the session's reads.
    pub fn push(&self, bytes: &[u8]) {
        let mut st = self.lock();
        st.input.extend(bytes);
        if let Some(w) = st.reader.take() {
            w.wake();
        }
    }

    /// After the bytes pushed so far, reads return end of stream.
    pub fn end(&self) {
        let mut st = self.lock();
        st.eof = true;
        if let Some(w) = st.reader.take() {
            w.wake();
        }
    }

    /// Whether a read of the session failed (the peer reset the stream).
    pub fn read_failed(&self) -> bool {
        self.lock().read_failed
    }

    /// Bytes pushed and not yet read.
    pub fn unread(&self) -> usize {
        self.lock().input.len()
    }

    /// What the session wrote, whether it was cut short, and whether the
    /// session shut its write side down.
    pub fn output(&self) -> (Vec<u8>, bool, bool) {
        let st = self.lock();
        (st.output.clone(), st.output_cut, st.shut)
    }
}

/// The session's end of the stream.
pub struct FuzzStream {
    feed: Arc<Feed>,
    reads: Plan,
    writes: Plan,
    read_at: usize,
    write_at: usize,
    /// The previous read (write) returned `Pending`: make progress now, so
    /// that a plan of pauses alone cannot stall the stream.
    read_paused: bool,
    write_paused: bool,
    read_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    write_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Real milliseconds of sleep this stream may still spend.
    sleep_budget_ms: u32,
}

impl std::fmt::Debug for FuzzStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FuzzStream").finish_non_exhaustive()
    }
}

impl FuzzStream {
    /// A stream reading from and writing to `feed`.
    pub fn new(feed: Arc<Feed>, reads: Plan, writes: Plan, sleep_budget_ms: u32) -> FuzzStream {
        FuzzStream {
            feed,
            reads,
            writes,
            read_at: 0,
            write_at: 0,
            read_paused: false,
            write_paused: false,
            read_timer: None,
            write_timer: None,
            sleep_budget_ms,
        }
    }
}

enum Next {
    Go(usize),
    Pending,
    Fail,
    Zero,
}

/// Decides what the next read or write does.
#[allow(clippy::too_many_arguments)]
fn next_step(
    cx: &mut Context<'_>,
    plan: &Plan,
    at: &mut usize,
    paused: &mut bool,
    timer: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    budget: &mut u32,
) -> Next {
    if let Some(t) = timer.as_mut() {
        if t.as_mut().poll(cx).is_pending() {
            return Next::Pending;
        }
        *timer = None;
        *paused = true;
    }
    if plan.steps.is_empty() {
        return Next::Go(usize::MAX);
    }
    loop {
        let step = plan.steps[*at % plan.steps.len()];
        *at = at.wrapping_add(1);
        match step {
            IoStep::Chunk(n) => {
                *paused = false;
                return Next::Go(n as usize);
            }
            IoStep::Fail => return Next::Fail,
            IoStep::Zero => return Next::Zero,
            IoStep::Yield | IoStep::Sleep(_) if *paused => {
                // Progress after every pause; look at the next step.
                if plan
                    .steps
                    .iter()
                    .all(|s| matches!(s, IoStep::Yield | IoStep::Sleep(_)))
                {
                    *paused = false;
                    return Next::Go(usize::MAX);
                }
            }
            IoStep::Yield => {
                *paused = true;
                cx.waker().wake_by_ref();
                return Next::Pending;
            }
            IoStep::Sleep(ms) => {
                let ms = u32::from(ms);
                if *budget >= ms {
                    *budget -= ms;
                    let mut t = Box::pin(tokio::time::sleep(Duration::from_millis(ms.into())));
                    if t.as_mut().poll(cx).is_ready() {
                        *paused = true;
                        cx.waker().wake_by_ref();
                        return Next::Pending;
                    }
                    *timer = Some(t);
                } else {
                    *paused = true;
                    cx.waker().wake_by_ref();
                }
                return Next::Pending;
            }
        }
    }
}

impl AsyncRead for FuzzStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        {
            // Nothing to read yet: wait for the harness, without using a
            // step of the plan.
            let mut st = this.feed.lock();
            if st.input.is_empty() && !st.eof {
                st.reader = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
        let n = match next_step(
            cx,
            &this.reads,
            &mut this.read_at,
            &mut this.read_paused,
            &mut this.read_timer,
            &mut this.sleep_budget_ms,
        ) {
            Next::Go(n) => n,
            Next::Pending => return Poll::Pending,
            Next::Fail => {
                this.feed.lock().read_failed = true;
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "fuzz: read failed",
                )));
            }
            // A zero-length read is end of stream.
            Next::Zero => return Poll::Ready(Ok(())),
        };
        let mut st = this.feed.lock();
        let n = n.min(buf.remaining()).min(st.input.len());
        if n == 0 {
            if st.eof {
                return Poll::Ready(Ok(()));
            }
            st.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let (a, b) = st.input.as_slices();
        let from_a = n.min(a.len());
        buf.put_slice(&a[..from_a]);
        buf.put_slice(&b[..n - from_a]);
        st.input.drain(..n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for FuzzStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = match next_step(
            cx,
            &this.writes,
            &mut this.write_at,
            &mut this.write_paused,
            &mut this.write_timer,
            &mut this.sleep_budget_ms,
        ) {
            Next::Go(n) => n,
            Next::Pending => return Poll::Pending,
            Next::Fail => {
                this.feed.lock().output_cut = true;
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "fuzz: write failed",
                )));
            }
            Next::Zero => {
                this.feed.lock().output_cut = true;
                return Poll::Ready(Ok(0));
            }
        };
        let n = n.min(data.len());
        let mut st = this.feed.lock();
        let keep = n.min(OUT_CAP.saturating_sub(st.output.len()));
        st.output.extend_from_slice(&data[..keep]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.feed.lock().shut = true;
        Poll::Ready(Ok(()))
    }
}
