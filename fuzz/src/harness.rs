//! Runs one whole netchan session against a scripted peer.
//!
//! The local side is a small program: it exports receivers of the
//! representative types ([`Tree`], [`Nested`], [`Carrier`]) and a sender of
//! `u32`, receives every message (ignoring errors), answers and reads the
//! channels that arrive inside carriers, and on the script's request
//! imports from the peer, sends, hangs up, drops, closes and drains.
//!
//! After the script, the peer's stream ends. The harness then checks the
//! promises of `DESIGN.md` that hold for any input: the session ends, every
//! pending future resolves (hang-ups end the exported receivers), the
//! driver shuts its stream down, and what the session wrote is a valid
//! hello followed by well-formed frames. A broken promise panics, so
//! libFuzzer records the input.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netchan::proto::{CodecId, Hello, PROTOCOL_VERSION, Side};
use netchan::{Message, RecvError, Session};
use tokio::task::JoinHandle;

use crate::frames::{Ctx, PeerFrame};
use crate::output::{self, Expect};
use crate::script::{AppOp, CfgSel, HelloMode, Script, Step};
use crate::stream::{Feed, FuzzStream};
use crate::types::{self, Carrier, Nested, Tree};

/// How long anything may take that should take microseconds. Passing it
/// is reported as a hang (a panic naming what hung).
pub const HANG: Duration = Duration::from_secs(2);

/// Most real sleep, in milliseconds, one input may spend (stream pauses and
/// [`Step::Sleep`] together).
pub const SLEEP_BUDGET_MS: u32 = 40;

/// Most bytes the scripted peer sends after its hello (bounds the time one
/// input takes; a byte-by-byte read plan is slow).
pub const MAX_PEER_BYTES: usize = 256 << 10;

/// Most messages a receiving loop takes before it stops (a flood is not a
/// hang).
const MAX_RECV: usize = 100_000;

/// Runs `fut` on a fresh current-thread runtime with timers. Everything the
/// session spawned is dropped with the runtime, so nothing survives the
/// input.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
        .block_on(fut)
}

type Tasks = Arc<Mutex<Vec<JoinHandle<()>>>>;

fn spawn(tasks: &Tasks, f: impl Future<Output = ()> + Send + 'static) -> usize {
    let mut t = tasks.lock().unwrap_or_else(|p| p.into_inner());
    t.push(tokio::spawn(f));
    t.len() - 1
}

/// Receives until the channel ends; `Err` values are ignored, as a program
/// that logs them would.
async fn recv_all<T: Message>(mut rx: netchan::Receiver<T>, limit: usize, mut on: impl FnMut(T)) {
    let mut errors = 0usize;
    for _ in 0..limit {
        match rx.recv().await {
            Ok(Some(v)) => on(v),
            Ok(None) => return,
            Err(RecvError::Decode(_)) => {}
            Err(_) => {
                errors += 1;
                assert!(
                    errors < 1000,
                    "Receiver::recv returned a non-decode error 1000 times"
                );
            }
        }
    }
}

struct App {
    session: Session,
    tasks: Tasks,
    /// Task indexes of the exported receivers (tree, nested, carrier).
    export_tasks: [usize; 3],
    out: Option<netchan::Sender<u32>>,
}

impl App {
    fn start(session: Session, capacity: usize) -> App {
        let tasks: Tasks = Arc::default();
        let tree = session
            .export_receiver::<Tree>(types::TREE, capacity)
            .expect("export tree");
        let nested = session
            .export_receiver::<Nested>(types::NESTED, capacity)
            .expect("export nested");
        let carrier = session
            .export_receiver::<Carrier>(types::CARRIER, capacity)
            .expect("export carrier");
        let out = session
            .export_sender::<u32>(types::OUT)
            .expect("export out");
        let t0 = spawn(&tasks, recv_all(tree, MAX_RECV, |t: Tree| drop(t)));
        let t1 = spawn(&tasks, recv_all(nested, MAX_RECV, drop));
        let inner = tasks.clone();
        let t2 = spawn(
            &tasks,
            recv_all(carrier, MAX_RECV, move |c: Carrier| {
                // Answer on the carried sender, read the carried receiver.
                let _ = c.reply.try_send(c.id as u32);
                if let Some(extra) = &c.extra {
                    let _ = extra.try_send(1);
                }
                spawn(&inner, recv_all(c.feed, 16, drop));
            }),
        );
        let tx = out.clone();
        spawn(&tasks, async move {
            for i in 0..3 {
                if tx.send(i).await.is_err() {
                    return;
                }
            }
        });
        App {
            session,
            tasks,
            export_tasks: [t0, t1, t2],
            out: Some(out),
        }
    }

    fn apply(&mut self, op: &AppOp) {
        let s = self.session.clone();
        let tasks = &self.tasks;
        match op {
            AppOp::ImportReceiver(cap) => {
                let cap = usize::from(*cap % 8);
                spawn(tasks, async move {
                    if let Ok(rx) = s.import_receiver::<u32>(types::PEER_OUT, cap).await {
                        recv_all(rx, 64, drop).await;
                    }
                });
            }
            AppOp::ImportReceiverN(cap, n) => {
                let (cap, n) = (usize::from(*cap % 8), usize::from(*n % 8));
                spawn(tasks, async move {
                    if let Ok(rx) = s.import_receiver_n::<Tree>(types::PEER_TREE, cap, n).await {
                        recv_all(rx, 64, drop).await;
                    }
                });
            }
            AppOp::ImportSender(sizes) => {
                let sizes = sizes.clone();
                spawn(tasks, async move {
                    if let Ok(tx) = s.import_sender::<String>(types::PEER_IN).await {
                        for kib in sizes {
                            let v = "x".repeat(usize::from(kib % 80) * 1024 + 3);
                            if tx.send(v).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
            AppOp::ImportCarrier(id) => {
                let id = u64::from(*id);
                spawn(tasks, async move {
                    let Ok(tx) = s.import_sender::<Carrier>(types::PEER_CARRIER).await else {
                        return;
                    };
                    let (reply_tx, reply_rx) = netchan::channel::<u32>(2);
                    let (feed_tx, feed_rx) = netchan::channel::<String>(1);
                    let c = Carrier {
                        id,
                        reply: reply_tx,
                        feed: feed_rx,
                        extra: None,
                    };
                    if tx.send(c).await.is_err() {
                        return;
                    }
                    let _ = feed_tx.send("hello".into()).await;
                    drop(feed_tx);
                    recv_all(reply_rx, 4, drop).await;
                });
            }
            AppOp::SendOut(v) => {
                if let Some(out) = self.out.clone() {
                    let v = *v;
                    spawn(tasks, async move {
                        let _ = out.send(v).await;
                    });
                }
            }
            AppOp::Hangup(i) => {
                let _ = s.hangup(types::NAMES[usize::from(*i) % types::NAMES.len()]);
            }
            AppOp::DropExport(i) => {
                let t = self.export_tasks[usize::from(*i) % 3];
                let tasks = tasks.lock().unwrap_or_else(|p| p.into_inner());
                tasks[t].abort();
            }
            AppOp::Close => {
                spawn(tasks, async move { s.close().await });
            }
            AppOp::Drain => {
                spawn(tasks, async move {
                    let _ = s.drain(None).await;
                });
            }
            AppOp::TrySendOut(v) => {
                if let Some(out) = &self.out {
                    let _ = out.try_send(*v);
                }
            }
        }
    }
}

async fn settle() {
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
}

async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(HANG, f).await {
        Ok(v) => v,
        Err(_) => panic!("hang: {what} did not finish within {HANG:?}"),
    }
}

/// Runs `script` (see the module docs). Must be called inside
/// [`block_on`].
///
/// `timers`: [`Step::Sleep`] sleeps (else it only yields).
pub async fn run(script: &Script, timers: bool) {
    let cfg = script.cfg;
    let codec = cfg.codec();
    let feed = Feed::new();
    let stream = FuzzStream::new(
        feed.clone(),
        script.reads.clone(),
        script.writes.clone(),
        SLEEP_BUDGET_MS,
    );
    let session = match script.side {
        Side::Acceptor => Session::accept_stream(stream, cfg.config()),
        Side::Dialer => Session::connect_stream(stream, cfg.config()),
    };
    let watch = session.clone();
    let mut app = App::start(session, cfg.capacity());
    let mut ctx = Ctx::new(script.side, codec);
    if let HelloMode::Valid {
        max_message_len,
        max_channels,
    } = script.hello
    {
        let mut b = bytes::BytesMut::new();
        Hello {
            version: PROTOCOL_VERSION,
            codec,
            max_message_len: if max_message_len == 0 {
                16 << 20
            } else {
                max_message_len
            },
            max_channels: if max_channels == 0 {
                1024
            } else {
                max_channels
            },
            max_handles: 128,
        }
        .encode(&mut b);
        feed.push(&b);
    }
    let mut sleep_budget = SLEEP_BUDGET_MS;
    let mut ended = false;
    let mut last: Option<&PeerFrame> = None;
    let mut wire = Vec::new();
    // Bytes the peer may still send: bounds the time one input takes.
    // Once a frame does not fit, no more are built (building is the cost).
    let mut budget = MAX_PEER_BYTES;
    let mut exhausted = false;
    let mut push = |b: &[u8], ended: bool, exhausted: &mut bool| {
        if b.len() > budget {
            *exhausted = true;
        } else if !ended {
            budget -= b.len();
            feed.push(b);
        }
    };
    for step in &script.steps {
        match step {
            Step::Frame(f) => {
                if !exhausted {
                    wire.clear();
                    f.wire(&mut ctx, &mut wire);
                    push(&wire, ended, &mut exhausted);
                }
                last = Some(f);
            }
            Step::Repeat(n) => {
                if let Some(f) = last {
                    for _ in 0..*n {
                        if exhausted {
                            break;
                        }
                        wire.clear();
                        f.wire(&mut ctx, &mut wire);
                        push(&wire, ended, &mut exhausted);
                    }
                }
            }
            Step::Yield => settle().await,
            Step::Sleep(ms) => {
                let ms = u32::from(*ms % 16);
                if timers && sleep_budget >= ms {
                    sleep_budget -= ms;
                    tokio::time::sleep(Duration::from_millis(ms.into())).await;
                } else {
                    settle().await;
                }
            }
            Step::App(op) => {
                app.apply(op);
                settle().await;
            }
            Step::End => {
                feed.end();
                ended = true;
            }
        }
    }
    feed.end();
    finish(app, watch, &feed, script).await;
}

async fn finish(mut app: App, watch: Session, feed: &Feed, script: &Script) {
    let cfg = script.cfg;
    // The peer's stream ended: the connection must end. Slow plans (one
    // byte per read) take long on big inputs: only a wait without
    // progress is a hang.
    let why = {
        let closed = watch.closed();
        tokio::pin!(closed);
        let mut seen = (usize::MAX, usize::MAX);
        loop {
            match tokio::time::timeout(HANG, closed.as_mut()).await {
                Ok(why) => break why,
                Err(_) => {
                    let now = (feed.unread(), feed.output().0.len());
                    assert!(
                        now != seen,
                        "hang: the session did not end within {HANG:?} after end of input, \
                         with {} bytes unread",
                        now.0
                    );
                    seen = now;
                }
            }
        }
    };
    // On a failure (not a goodbye from either side) the driver stops
    // writing at once, even in the middle of a frame, and does not shut
    // the stream down (`driver::fail` cancels `Conn::dead`). So it does
    // when a read failed (a reset) while this side closed: the session
    // ends cleanly, since the peer went away (`driver::stream_failed`),
    // but the stream is given up as on a failure.
    let failed = !matches!(why, netchan::Error::Closed | netchan::Error::PeerGoodbye(_))
        || feed.read_failed();
    // Hang-ups end the exported receivers (after what they buffered) and
    // fail the exported sender's sends; every other task waits on the
    // connection, which ended.
    for name in [types::TREE, types::NESTED, types::CARRIER, types::OUT] {
        let _ = watch.hangup(name);
    }
    app.out = None;
    let tasks = std::mem::take(&mut *app.tasks.lock().unwrap_or_else(|p| p.into_inner()));
    for (i, t) in tasks.into_iter().enumerate() {
        let r = within(&format!("local task {i} after the connection ended"), t).await;
        if let Err(e) = r
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    // Tasks spawned by the carrier task while we joined.
    let late = std::mem::take(&mut *app.tasks.lock().unwrap_or_else(|p| p.into_inner()));
    for t in late {
        let _ = within("a feed reader after the connection ended", t).await;
    }
    within("Session::close after the connection ended", watch.close()).await;
    if cfg.0 & CfgSel::CLOSE == 0 && !failed {
        let (_, cut, shut) = feed.output();
        assert!(
            cut || shut,
            "the driver ended without shutting its stream down after {why}"
        );
    } else if !failed {
        // A close timeout shorter than the stream's pauses lets `close`
        // return while the writer still writes what was queued before the
        // goodbye: judge the output once the writer is done.
        writer_done(feed, &why).await;
    }
    check_output(feed, script, failed);
    drop(app);
}

/// Waits until the session's writer shut its stream down or a write
/// failed, as long as it makes progress: only a wait without a byte
/// written is a hang.
async fn writer_done(feed: &Feed, why: &netchan::Error) {
    let mut seen = usize::MAX;
    let mut since = tokio::time::Instant::now();
    loop {
        let (out, cut, shut) = feed.output();
        if cut || shut {
            return;
        }
        if out.len() != seen {
            seen = out.len();
            since = tokio::time::Instant::now();
        }
        assert!(
            since.elapsed() < HANG,
            "hang: the writer neither finished nor wrote a byte within {HANG:?} after {why}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn check_output(feed: &Feed, script: &Script, failed: bool) {
    let cfg = script.cfg;
    let (out, cut, _) = feed.output();
    let cut = cut || failed;
    let limits = cfg.config();
    let expect = Expect {
        codec: cfg.codec(),
        max_message_len: limits.get_max_message_len() as u32,
        max_channels: if cfg.0 & CfgSel::SMALL != 0 { 8 } else { 1024 },
        max_handles: if cfg.0 & CfgSel::SMALL != 0 { 4 } else { 128 },
        chunk_size: cfg.chunk_size(),
        parity: match script.side {
            Side::Dialer => 1,
            Side::Acceptor => 0,
        },
    };
    if let Err(e) = output::check(&out, &expect, cut, true) {
        panic!("the session wrote invalid output: {e}");
    }
}

/// A script for `message_decode`: an acceptor with the settings `cfg`
/// reads a valid hello, then `bytes`, then end of stream.
pub fn raw_script(cfg: u8, bytes: &[u8]) -> Script {
    Script {
        cfg: CfgSel(cfg),
        side: Side::Acceptor,
        hello: HelloMode::Valid {
            max_message_len: 0,
            max_channels: 0,
        },
        reads: Default::default(),
        writes: Default::default(),
        steps: vec![Step::Frame(PeerFrame::Raw(bytes.to_vec()))],
    }
}

/// The codec a [`CfgSel`] byte selects (for seed writers).
pub fn codec_of(cfg: u8) -> CodecId {
    CfgSel(cfg).codec()
}
