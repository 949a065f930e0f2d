//! A chaos proxy: a TCP relay on 127.0.0.1 between two real netchan
//! sessions that misbehaves on command, per direction.
//!
//! ```text
//!   a (dialer) ──TCP──► [ front | Chaos | upstream ] ──TCP──► b (acceptor)
//!                 AToB ───────────────────────────────►
//!                 ◄──────────────────────────────── BToA
//! ```
//!
//! Each direction can be cut after N bytes (at an absolute offset, or at a
//! position inside the n-th frame of a kind: mid-header, mid-chunk), closed
//! on its own (half-close), stalled, throttled to a trickle, have bytes
//! flipped, and have raw bytes injected at the next frame boundary.
//!
//! The proxy follows the *original* byte stream (hello, then frame
//! headers) to know where frames start, so triggers name frames, not
//! guessed offsets. It runs on a runtime of its own, on its own thread, so
//! that its tasks never count among the tasks of the test's runtime, and
//! so that a stalled proxy keeps its sockets open while the test measures.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::BytesMut;
use netchan::proto::Kind;
use netchan::proto::frame::HEADER_LEN;
use netchan::proto::hello::HELLO_LEN;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, watch};

/// One direction of the proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// From the dialer (connected to the proxy) to the upstream acceptor.
    AToB,
    /// From the upstream acceptor back to the dialer.
    BToA,
}

/// Where a rule fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum When {
    /// At this offset of the direction's byte stream (0 is the hello's
    /// first byte; injected bytes are not counted).
    Offset(u64),
    /// At byte `at` of a frame (header included: `at < 10` is inside the
    /// header) of kind `kind` with a payload of at least `min_len`
    /// bytes, skipping the first `skip` such frames seen after the rule was
    /// set.
    InFrame {
        kind: Kind,
        min_len: usize,
        skip: usize,
        at: usize,
    },
}

impl When {
    /// Inside the header of the next frame of `kind`, after `at` bytes.
    pub(crate) fn in_header(kind: Kind, at: usize) -> When {
        assert!(at > 0 && at < HEADER_LEN, "inside the header");
        When::InFrame {
            kind,
            min_len: 0,
            skip: 0,
            at,
        }
    }

    /// Inside the payload of the next frame of `kind` whose payload has at
    /// least `at + 1` bytes, after `at` bytes of payload.
    pub(crate) fn in_payload(kind: Kind, at: usize) -> When {
        When::InFrame {
            kind,
            min_len: at + 1,
            skip: 0,
            at: HEADER_LEN + at,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Forward up to the position, then kill the whole connection.
    Cut,
    /// XOR the byte at the position with this mask.
    Flip(u8),
}

#[derive(Debug)]
struct Rule {
    when: When,
    action: Action,
}

/// Follows the original byte stream: the 20-byte hello, then frames.
#[derive(Debug)]
struct Tracker {
    /// Hello bytes still to come.
    hello_done: usize,
    /// Header bytes of the current frame seen so far.
    header: Vec<u8>,
    /// Payload bytes of the current frame still to come.
    payload_left: usize,
    /// Frames whose header passed, per kind byte.
    seen: Vec<u64>,
    /// Bytes of the original stream passed so far.
    pos: u64,
    /// Where each data frame started in the stream, and its channel.
    data: Vec<(u64, u32)>,
}

impl Default for Tracker {
    fn default() -> Tracker {
        Tracker {
            hello_done: 0,
            header: Vec::with_capacity(HEADER_LEN),
            payload_left: 0,
            seen: vec![0; 256],
            pos: 0,
            data: Vec::new(),
        }
    }
}

impl Tracker {
    fn at_boundary(&self) -> bool {
        self.hello_done == HELLO_LEN && self.header.is_empty() && self.payload_left == 0
    }

    /// Bytes that may pass before the tracker needs to look again: the
    /// rest of the hello, of the header, or of the payload.
    fn step(&self) -> usize {
        if self.hello_done < HELLO_LEN {
            HELLO_LEN - self.hello_done
        } else if self.payload_left > 0 {
            self.payload_left
        } else {
            HEADER_LEN - self.header.len()
        }
    }

    fn advance(&mut self, mut bytes: &[u8]) {
        self.pos += bytes.len() as u64;
        while !bytes.is_empty() {
            if self.hello_done < HELLO_LEN {
                let n = bytes.len().min(HELLO_LEN - self.hello_done);
                self.hello_done += n;
                bytes = &bytes[n..];
            } else if self.payload_left > 0 {
                let n = bytes.len().min(self.payload_left);
                self.payload_left -= n;
                bytes = &bytes[n..];
            } else {
                let n = bytes.len().min(HEADER_LEN - self.header.len());
                self.header.extend_from_slice(&bytes[..n]);
                bytes = &bytes[n..];
                if self.header.len() == HEADER_LEN {
                    let h = &self.header;
                    self.payload_left = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
                    self.seen[h[4] as usize] += 1;
                    if h[4] == Kind::Data as u8 {
                        let start = self.pos - (bytes.len() + HEADER_LEN) as u64;
                        let chan = u32::from_le_bytes([h[6], h[7], h[8], h[9]]);
                        self.data.push((start, chan));
                    }
                    self.header.clear();
                }
            }
        }
    }
}

/// The state of one direction, shared by its pump and the controls.
#[derive(Debug, Default)]
struct DirState {
    forwarded: u64,
    stalled: bool,
    /// Bytes per millisecond.
    rate: Option<usize>,
    half_close: bool,
    rules: Vec<Rule>,
    inject: VecDeque<Vec<u8>>,
    tracker: Tracker,
    /// The pump ended (cut, half-closed or the source closed).
    ended: bool,
    /// The offset of the frame whose header the frame rules last saw, so
    /// that one frame is counted once however often the pump looks.
    resolved_at: Option<u64>,
}

#[derive(Debug)]
struct Shared {
    dirs: [Mutex<DirState>; 2],
    /// Wakes pumps when a control changed; the test waits on it for
    /// progress.
    changed: Notify,
    progress: Notify,
    kill: watch::Sender<bool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn dir(&self, flow: Flow) -> MutexGuard<'_, DirState> {
        lock(&self.dirs[flow as usize])
    }

    fn control(&self, flow: Flow, f: impl FnOnce(&mut DirState)) {
        f(&mut self.dir(flow));
        self.changed.notify_waiters();
    }
}

/// The proxy. Dropping it kills the connection and stops its runtime.
pub(crate) struct Chaos {
    shared: Arc<Shared>,
    addr: SocketAddr,
    rt: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Chaos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chaos").field("addr", &self.addr).finish()
    }
}

impl Drop for Chaos {
    fn drop(&mut self) {
        let _ = self.shared.kill.send(true);
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Chaos {
    /// A proxy listening on 127.0.0.1 that relays its first accepted
    /// connection to `upstream`.
    pub(crate) fn start(upstream: SocketAddr) -> Chaos {
        Chaos::start_with(upstream, None)
    }

    /// Like [`start`](Chaos::start); with `Some(n)`, the proxy's sockets
    /// get kernel buffers of about `n` bytes, so that a stalled or
    /// throttled proxy pushes back on the sender's writer at once instead
    /// of after megabytes of kernel buffering.
    pub(crate) fn start_with(upstream: SocketAddr, buffers: Option<u32>) -> Chaos {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("chaos-proxy")
            .enable_all()
            .build()
            .expect("proxy runtime");
        let (kill, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            dirs: [
                Mutex::new(DirState::default()),
                Mutex::new(DirState::default()),
            ],
            changed: Notify::new(),
            progress: Notify::new(),
            kill,
        });
        // Registered with the proxy's runtime (the caller may be inside
        // another runtime, where `block_on` panics).
        let listener = {
            let _rt = rt.enter();
            let socket = TcpSocket::new_v4().expect("socket");
            if let Some(n) = buffers {
                socket.set_recv_buffer_size(n).expect("SO_RCVBUF");
                socket.set_send_buffer_size(n).expect("SO_SNDBUF");
            }
            socket
                .bind("127.0.0.1:0".parse().expect("addr"))
                .expect("bind proxy");
            socket.listen(16).expect("listen")
        };
        let addr = listener.local_addr().expect("proxy addr");
        let sh = shared.clone();
        rt.spawn(async move {
            let Ok((front, _)) = listener.accept().await else {
                return;
            };
            drop(listener);
            let Ok(socket) = TcpSocket::new_v4() else {
                return;
            };
            if let Some(n) = buffers {
                let _ = socket.set_recv_buffer_size(n);
                let _ = socket.set_send_buffer_size(n);
            }
            let Ok(back) = socket.connect(upstream).await else {
                return;
            };
            let _ = front.set_nodelay(true);
            let _ = back.set_nodelay(true);
            let (fr, fw) = front.into_split();
            let (br, bw) = back.into_split();
            tokio::spawn(pump(fr, bw, sh.clone(), Flow::AToB));
            tokio::spawn(pump(br, fw, sh, Flow::BToA));
        });
        Chaos {
            shared,
            addr,
            rt: Some(rt),
        }
    }

    /// Where the dialer connects.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Kills the connection at once: both sockets of the proxy close.
    pub(crate) fn cut_now(&self) {
        let _ = self.shared.kill.send(true);
        self.shared.changed.notify_waiters();
    }

    /// Kills the connection when `flow` reaches the position `when`
    /// (bytes before it are forwarded, none after).
    pub(crate) fn cut(&self, flow: Flow, when: When) {
        self.shared.control(flow, |d| {
            d.rules.push(Rule {
                when,
                action: Action::Cut,
            })
        });
    }

    /// Flips the bits of `mask` in the byte at `when`.
    pub(crate) fn flip(&self, flow: Flow, when: When, mask: u8) {
        self.shared.control(flow, |d| {
            d.rules.push(Rule {
                when,
                action: Action::Flip(mask),
            })
        });
    }

    /// Closes `flow` alone: its destination reads end of stream, the other
    /// direction goes on.
    pub(crate) fn half_close(&self, flow: Flow) {
        self.shared.control(flow, |d| d.half_close = true);
    }

    /// Stops forwarding `flow` (the sockets stay open), or resumes it.
    pub(crate) fn stall(&self, flow: Flow, stalled: bool) {
        self.shared.control(flow, |d| d.stalled = stalled);
    }

    /// Forwards at most `bytes_per_ms` bytes per millisecond (`None`: at
    /// full speed).
    pub(crate) fn throttle(&self, flow: Flow, bytes_per_ms: Option<usize>) {
        self.shared
            .control(flow, |d| d.rate = bytes_per_ms.map(|r| r.max(1)));
    }

    /// Writes `bytes` into `flow` at its next frame boundary, as if the
    /// sender had written them.
    pub(crate) fn inject(&self, flow: Flow, bytes: Vec<u8>) {
        self.shared.control(flow, |d| d.inject.push_back(bytes));
    }

    /// Bytes of the original stream forwarded so far in `flow`.
    pub(crate) fn forwarded(&self, flow: Flow) -> u64 {
        self.shared.dir(flow).forwarded
    }

    /// Frames of `kind` whose header has been forwarded in `flow`.
    pub(crate) fn frames_seen(&self, flow: Flow, kind: Kind) -> u64 {
        self.shared.dir(flow).tracker.seen[kind as usize]
    }

    /// Where each data frame forwarded in `flow` started (an offset as
    /// [`forwarded`](Chaos::forwarded) counts), and its channel id.
    pub(crate) fn data_frames(&self, flow: Flow) -> Vec<(u64, u32)> {
        self.shared.dir(flow).tracker.data.clone()
    }

    /// Whether the pump of `flow` has stopped (cut, half-closed, or its
    /// source closed).
    pub(crate) fn ended(&self, flow: Flow) -> bool {
        self.shared.dir(flow).ended
    }

    /// Whether the whole connection was killed.
    pub(crate) fn killed(&self) -> bool {
        *self.shared.kill.borrow()
    }

    /// Waits until `cond` holds, checked after every forwarded segment;
    /// panics after `limit`.
    pub(crate) async fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        cond: impl Fn(&Chaos) -> bool,
    ) {
        let wait = async {
            loop {
                let notified = self.shared.progress.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if cond(self) {
                    return;
                }
                // Progress notifications come from another runtime; poll
                // now and then as well.
                let _ = tokio::time::timeout(Duration::from_millis(20), notified).await;
            }
        };
        if tokio::time::timeout(limit, wait).await.is_err() {
            panic!("proxy: timed out after {limit:?} waiting for {what}");
        }
    }
}

/// What a pump does next.
enum Next {
    Read,
    Wait,
    Inject(Vec<u8>),
    Forward(Vec<u8>, bool),
    HalfClose,
    Kill,
    Throttle,
}

/// Decides the next step of one direction with `buf` holding bytes read
/// but not yet forwarded.
fn decide(d: &mut DirState, buf: &mut BytesMut, throttled_now: bool) -> Next {
    if d.half_close {
        return Next::HalfClose;
    }
    if d.stalled {
        return Next::Wait;
    }
    if let Some(bytes) = d
        .tracker
        .at_boundary()
        .then(|| d.inject.pop_front())
        .flatten()
    {
        return Next::Inject(bytes);
    }
    // Resolve frame rules once the next frame's header is here.
    let frame_rules = d
        .rules
        .iter()
        .any(|r| matches!(r.when, When::InFrame { .. }));
    if frame_rules && d.tracker.at_boundary() && d.resolved_at != Some(d.forwarded) {
        if buf.len() < HEADER_LEN {
            return Next::Read;
        }
        d.resolved_at = Some(d.forwarded);
        let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = buf[4];
        let start = d.forwarded;
        for r in &mut d.rules {
            let When::InFrame {
                kind: k,
                min_len,
                skip,
                at,
            } = &mut r.when
            else {
                continue;
            };
            if *k as u8 != kind || len < *min_len {
                continue;
            }
            if *skip > 0 {
                *skip -= 1;
            } else {
                let offset = start + *at as u64;
                r.when = When::Offset(offset);
            }
        }
    }
    // A cut due now.
    let due_cut = d
        .rules
        .iter()
        .filter(|r| r.action == Action::Cut)
        .filter_map(|r| match r.when {
            When::Offset(o) => Some(o),
            When::InFrame { .. } => None,
        })
        .min();
    if due_cut.is_some_and(|o| o <= d.forwarded) {
        return Next::Kill;
    }
    if buf.is_empty() {
        return Next::Read;
    }
    if throttled_now {
        return Next::Throttle;
    }
    let mut n = buf.len();
    if let Some(o) = due_cut {
        n = n.min((o - d.forwarded) as usize);
    }
    if let Some(r) = d.rate {
        n = n.min(r);
    }
    // Stop at frame boundaries while anything waits for one.
    if !d.inject.is_empty() || frame_rules {
        n = n.min(d.tracker.step());
    }
    let mut seg = buf.split_to(n).to_vec();
    d.tracker.advance(&seg);
    let start = d.forwarded;
    d.forwarded += n as u64;
    d.rules.retain(|r| match (r.action, r.when) {
        (Action::Flip(mask), When::Offset(o)) if o >= start && o < start + n as u64 => {
            seg[(o - start) as usize] ^= mask;
            false
        }
        _ => true,
    });
    Next::Forward(seg, d.rate.is_some())
}

async fn pump(mut src: OwnedReadHalf, mut dst: OwnedWriteHalf, sh: Arc<Shared>, flow: Flow) {
    let mut kill = sh.kill.subscribe();
    let mut buf = BytesMut::with_capacity(64 << 10);
    let mut throttled = false;
    loop {
        if *kill.borrow() {
            break;
        }
        let changed = sh.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let next = decide(&mut sh.dir(flow), &mut buf, throttled);
        throttled = false;
        match next {
            Next::Kill => {
                let _ = sh.kill.send(true);
                break;
            }
            Next::HalfClose => {
                let _ = dst.shutdown().await;
                sh.dir(flow).ended = true;
                sh.progress.notify_waiters();
                // Keep the source open (unread) until the link dies.
                let _ = kill.wait_for(|k| *k).await;
                return;
            }
            Next::Wait => {
                tokio::select! {
                    _ = changed => {}
                    _ = kill.changed() => {}
                }
            }
            Next::Throttle => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(1)) => {}
                    _ = kill.changed() => {}
                }
            }
            Next::Read => {
                if buf.capacity() - buf.len() < 16 << 10 {
                    buf.reserve(64 << 10);
                }
                tokio::select! {
                    r = src.read_buf(&mut buf) => match r {
                        Ok(0) | Err(_) => {
                            // The source ended: pass the end on.
                            let _ = dst.shutdown().await;
                            sh.dir(flow).ended = true;
                            sh.progress.notify_waiters();
                            let _ = kill.wait_for(|k| *k).await;
                            return;
                        }
                        Ok(_) => {}
                    },
                    _ = changed => {}
                    _ = kill.changed() => {}
                }
            }
            Next::Inject(bytes) => {
                if dst.write_all(&bytes).await.is_err() {
                    break;
                }
            }
            Next::Forward(seg, rate) => {
                tokio::select! {
                    r = dst.write_all(&seg) => if r.is_err() {
                        let _ = sh.kill.send(true);
                        break;
                    },
                    _ = kill.changed() => break,
                }
                throttled = rate;
                sh.progress.notify_waiters();
            }
        }
    }
    sh.dir(flow).ended = true;
    sh.progress.notify_waiters();
    // Dropping both halves closes the sockets.
    drop(src);
    drop(dst);
}
