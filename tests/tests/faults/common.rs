//! What every fault scenario checks, written once: bounded waits, the
//! task count of the test's runtime, sessions wired through the chaos
//! proxy, and the accounting of values sent, returned and received.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::Duration;

use netchan::{Config, Error, Message, Receiver, RecvError, Sender, Session};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::chaos::Chaos;

/// The longest a single step may take before the test counts as hung.
pub(crate) use crate::raw::STEP;
/// Slack allowed past a configured timeout (scheduling, loopback).
pub(crate) const MARGIN: Duration = Duration::from_secs(2);
/// How long the task count may take to settle after a scenario.
const SETTLE: Duration = Duration::from_secs(5);

/// Awaits `f`, failing the test after `limit`.
pub(crate) async fn within<F: IntoFuture>(what: &str, limit: Duration, f: F) -> F::Output {
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

fn alive() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// The number of live tasks on the test's runtime when a scenario starts.
#[derive(Debug)]
pub(crate) struct Tasks(usize);

impl Tasks {
    pub(crate) fn baseline() -> Tasks {
        Tasks(alive())
    }

    /// Waits (bounded) until the runtime is back to the baseline; fails
    /// naming the tasks left over.
    pub(crate) async fn settle(&self, what: &str) {
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            let n = alive();
            if n <= self.0 {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{what}: {} task(s) still alive {SETTLE:?} after the scenario \
                     (baseline {}, now {n})",
                    n - self.0,
                    self.0
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Two real sessions through a [`Chaos`] proxy: `a` dialled the proxy,
/// `b` accepted the proxy's upstream connection.
#[derive(Debug)]
pub(crate) struct Proxied {
    pub(crate) a: Session,
    pub(crate) b: Session,
    pub(crate) chaos: Chaos,
}

/// Sessions `a` and `b` (configs `ca`, `cb`) joined through a new proxy,
/// handshake done.
pub(crate) async fn proxied(ca: Config, cb: Config) -> Proxied {
    let p = proxied_with(ca, cb, None, |_| {}).await;
    p.ready().await;
    p
}

/// Like [`proxied`], but returns before the handshake, with `rig` applied
/// to the proxy before the first byte passes. `Some(n)` gives the proxy's
/// sockets and the dialer's socket kernel buffers of about `n` bytes (see
/// [`Chaos::start_with`]).
pub(crate) async fn proxied_with(
    ca: Config,
    cb: Config,
    buffers: Option<u32>,
    rig: impl FnOnce(&Chaos),
) -> Proxied {
    let upstream = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = upstream.local_addr().expect("addr");
    let chaos = Chaos::start_with(addr, buffers);
    rig(&chaos);
    let socket = TcpSocket::new_v4().expect("socket");
    if let Some(n) = buffers {
        socket.set_send_buffer_size(n).expect("SO_SNDBUF");
        socket.set_recv_buffer_size(n).expect("SO_RCVBUF");
    }
    let (dial, acc) = tokio::join!(socket.connect(chaos.addr()), upstream.accept());
    let dial = dial.expect("connect to proxy");
    let (acc, _) = acc.expect("accept from proxy");
    dial.set_nodelay(true).expect("nodelay");
    acc.set_nodelay(true).expect("nodelay");
    Proxied {
        a: Session::connect_stream(dial, ca),
        b: Session::accept_stream(acc, cb),
        chaos,
    }
}

impl Proxied {
    /// Waits for both handshakes.
    pub(crate) async fn ready(&self) {
        within("handshake through the proxy", STEP, async {
            self.a.ready().await.expect("a ready");
            self.b.ready().await.expect("b ready");
        })
        .await;
    }
}

/// Sessions `a` (dialer) and `b` (acceptor) joined directly over
/// loopback TCP, handshake done.
pub(crate) async fn direct(ca: Config, cb: Config) -> (Session, Session) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (dial, acc) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let dial = dial.expect("connect");
    let (acc, _) = acc.expect("accept");
    dial.set_nodelay(true).expect("nodelay");
    acc.set_nodelay(true).expect("nodelay");
    let a = Session::connect_stream(dial, ca);
    let b = Session::accept_stream(acc, cb);
    within("handshake", STEP, async {
        a.ready().await.expect("a ready");
        b.ready().await.expect("b ready");
    })
    .await;
    (a, b)
}

/// Waits for `s` to end and returns why; the end must be a failure (a
/// typed error), not a clean close, and come within `limit`.
pub(crate) async fn fails_within(what: &str, s: &Session, limit: Duration) -> Error {
    let e = within(what, limit, s.closed()).await;
    assert!(
        !matches!(e, Error::Closed),
        "{what}: the session ended cleanly (Error::Closed), but the connection failed"
    );
    e
}

/// An export name that no other scenario uses.
pub(crate) fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A channel from `from` to `to` of `capacity`: `to` exports a receiver,
/// `from` imports it as a sender.
pub(crate) async fn channel<T: Message>(
    from: &Session,
    to: &Session,
    capacity: usize,
) -> (Sender<T>, Receiver<T>) {
    let name = unique("chan");
    let rx = to.export_receiver::<T>(&name, capacity).expect("export");
    let tx = within("import", STEP, from.import_sender::<T>(&name))
        .await
        .expect("import");
    (tx, rx)
}

/// A numbered value with a payload that proves it arrived intact.
pub(crate) type Numbered = (u64, serde_bytes::ByteBuf);

pub(crate) fn numbered(seq: u64, size: usize) -> Numbered {
    (
        seq,
        serde_bytes::ByteBuf::from(vec![(seq % 251) as u8; size]),
    )
}

/// What a sending task saw.
#[derive(Debug, Default)]
pub(crate) struct SendLog {
    /// Values whose `send` completed, in order.
    pub(crate) sent: Vec<u64>,
    /// Values that came back in `SendError`, in order.
    pub(crate) returned: Vec<u64>,
}

/// Sends `0..n` (each of `size` bytes) until a send fails, then tries
/// `extra` more, each of which must fail and give its value back.
pub(crate) async fn send_numbered(
    tx: Sender<Numbered>,
    n: u64,
    size: usize,
    extra: u64,
) -> SendLog {
    let mut log = SendLog::default();
    let mut seq = 0;
    while seq < n {
        match tx.send(numbered(seq, size)).await {
            Ok(()) => log.sent.push(seq),
            Err(e) => {
                assert_eq!(e.0.0, seq, "SendError gives back the value that was sent");
                assert_eq!(e.0.1.len(), size, "... whole");
                log.returned.push(seq);
                break;
            }
        }
        seq += 1;
    }
    if !log.returned.is_empty() {
        for seq in seq + 1..(seq + 1 + extra).min(n) {
            match tx.send(numbered(seq, size)).await {
                Ok(()) => panic!("send {seq} succeeded after the connection failed"),
                Err(e) => {
                    assert_eq!(e.0.0, seq, "SendError gives back the value");
                    log.returned.push(seq);
                }
            }
        }
    }
    log
}

/// How a receiving task ended.
#[derive(Debug)]
pub(crate) struct RecvLog {
    pub(crate) received: Vec<u64>,
    pub(crate) end: Result<(), RecvError>,
}

/// Receives numbered values until the channel ends; checks each payload.
pub(crate) async fn recv_numbered(mut rx: Receiver<Numbered>) -> RecvLog {
    let mut received = Vec::new();
    let end = loop {
        match rx.recv().await {
            Ok(Some((seq, bytes))) => {
                assert!(
                    bytes.iter().all(|b| *b == (seq % 251) as u8),
                    "value {seq} arrived corrupted"
                );
                received.push(seq);
            }
            Ok(None) => break Ok(()),
            Err(RecvError::Decode(e)) => panic!("a value failed to decode: {e}"),
            Err(e) => break Err(e),
        }
    };
    RecvLog { received, end }
}

/// Nothing lost silently: what arrived is a prefix of what was sent, with
/// no duplicates, and every value is accounted for.
pub(crate) fn accounted(what: &str, s: &SendLog, r: &RecvLog) {
    assert!(
        r.received.len() <= s.sent.len() && r.received[..] == s.sent[..r.received.len()],
        "{what}: received {} values, not a prefix of the {} sent (first received {:?}, first sent {:?})",
        r.received.len(),
        s.sent.len(),
        r.received.first(),
        s.sent.first()
    );
    for v in &s.returned {
        assert!(
            !r.received.contains(v),
            "{what}: value {v} was both returned to the sender and received"
        );
    }
}
