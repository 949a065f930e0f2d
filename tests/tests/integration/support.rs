//! Helpers shared by every area: bounded waits, the two transports every
//! scenario runs over, connections the test can cut, a hub of exports with
//! several importers, and a raw peer that writes crafted bytes.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use netchan::proto::hello::HELLO_LEN;
use netchan::proto::{CodecId, Frame, Hello, MAGIC, PROTOCOL_VERSION};
use netchan::{Config, Error, Exporter, Message, Receiver, Sender, Session};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The longest any single step of a test may take before it counts as hung.
pub(crate) const LIMIT: Duration = Duration::from_secs(10);
/// The longest a whole transport scenario may take.
pub(crate) const SCENARIO_LIMIT: Duration = Duration::from_secs(40);
/// How long something must stay pending to count as "waiting".
pub(crate) const QUIET: Duration = Duration::from_millis(200);

/// Awaits `f`, failing the test if it takes longer than [`LIMIT`].
pub(crate) async fn within<F: IntoFuture>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(LIMIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {LIMIT:?}: {what}"),
    }
}

/// Runs a whole scenario, failing if it takes longer than [`SCENARIO_LIMIT`].
pub(crate) async fn bounded<F: Future<Output = ()>>(f: F) {
    if tokio::time::timeout(SCENARIO_LIMIT, f).await.is_err() {
        panic!("scenario did not finish within {SCENARIO_LIMIT:?}");
    }
}

/// Asserts that `f` is still pending after [`QUIET`]; `f` may be polled
/// again afterwards.
pub(crate) async fn stays_pending<F: Future + Unpin>(what: &str, f: &mut F) {
    if tokio::time::timeout(QUIET, f).await.is_ok() {
        panic!("completed although it should still be waiting: {what}");
    }
}

/// Asserts that `rx` yields nothing for [`QUIET`] (and takes nothing: recv
/// is cancel-safe).
pub(crate) async fn receives_nothing<T: Message + std::fmt::Debug>(
    what: &str,
    rx: &mut Receiver<T>,
) {
    if let Ok(r) = tokio::time::timeout(QUIET, rx.recv()).await {
        panic!("{what}: expected nothing, got {r:?}");
    }
}

/// Receives one value, which must be `Some`.
pub(crate) async fn recv_some<T: Message>(what: &str, rx: &mut Receiver<T>) -> T {
    match within(what, rx.recv()).await {
        Ok(Some(v)) => v,
        Ok(None) => panic!("{what}: channel ended (Ok(None)) where a value was expected"),
        Err(e) => panic!("{what}: recv failed: {e}"),
    }
}

/// Receives the clean end of a channel.
pub(crate) async fn recv_end<T: Message + std::fmt::Debug>(what: &str, rx: &mut Receiver<T>) {
    match within(what, rx.recv()).await {
        Ok(None) => {}
        other => panic!("{what}: expected a clean end (Ok(None)), got {other:?}"),
    }
}

/// Sends one value, which must succeed.
pub(crate) async fn send_ok<T: Message>(what: &str, tx: &Sender<T>, v: T) {
    if within(what, tx.send(v)).await.is_err() {
        panic!("{what}: send failed");
    }
}

/// The next error on an `errors()` stream; fails if the stream ends first.
pub(crate) async fn next_error<S>(what: &str, errors: &mut S) -> Error
where
    S: futures::Stream<Item = Error> + Unpin,
{
    match within(what, errors.next()).await {
        Some(e) => e,
        None => panic!("{what}: errors() ended without reporting an error"),
    }
}

/// A fresh export name, so scenarios never collide.
pub(crate) fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Instantiates a transport scenario `async fn name(t: Transport)` as two
/// tests, `name::over_memory` and `name::over_tcp`, on a two-worker
/// runtime. Attributes may be added to either (`memory: #[ignore = "..."]`,
/// `tcp: #[ignore = "..."]`). `over_both!(name, one_thread)` runs both on
/// a one-thread (`current_thread`) runtime instead.
macro_rules! over_both {
    ($scenario:ident, one_thread $(,)?) => {
        over_both!(@tests [flavor = "current_thread"] $scenario);
    };
    ($scenario:ident $(, memory: #[$mem:meta])* $(, tcp: #[$tcp:meta])* $(,)?) => {
        over_both!(
            @tests [flavor = "multi_thread", worker_threads = 2] $scenario
            $(, memory: #[$mem])* $(, tcp: #[$tcp])*
        );
    };
    (@tests [$($runtime:tt)*] $scenario:ident $(, memory: #[$mem:meta])* $(, tcp: #[$tcp:meta])*) => {
        mod $scenario {
            #[tokio::test($($runtime)*)]
            $(#[$mem])*
            async fn over_memory() {
                $crate::support::bounded(super::$scenario(
                    $crate::support::Transport::Memory,
                ))
                .await;
            }

            #[tokio::test($($runtime)*)]
            $(#[$tcp])*
            async fn over_tcp() {
                $crate::support::bounded(super::$scenario($crate::support::Transport::Tcp))
                    .await;
            }
        }
    };
}

/// What carries a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// In memory: `Session::pair()` (or the same duplex pipe it uses).
    Memory,
    /// Real TCP on 127.0.0.1.
    Tcp,
}

/// A boxed byte stream, whatever the transport.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<S: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for S {}

/// Two connected TCP streams on loopback.
pub(crate) async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (dial, accept) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let dial = dial.expect("connect");
    let (accept, _) = accept.expect("accept");
    dial.set_nodelay(true).expect("nodelay");
    accept.set_nodelay(true).expect("nodelay");
    (dial, accept)
}

impl Transport {
    /// Two connected streams of this transport: (dialer's, acceptor's).
    pub(crate) async fn streams(self) -> (Box<dyn Stream>, Box<dyn Stream>) {
        match self {
            Transport::Memory => {
                let (a, b) = tokio::io::duplex(256 << 10);
                (Box::new(a), Box::new(b))
            }
            Transport::Tcp => {
                let (a, b) = tcp_pair().await;
                (Box::new(a), Box::new(b))
            }
        }
    }

    /// Two connected sessions, `(a, b)`: `a` dialled, `b` accepted.
    pub(crate) async fn connect(self) -> (Session, Session) {
        match self {
            Transport::Memory => Session::pair(),
            Transport::Tcp => self.connect_with(Config::default()).await,
        }
    }

    /// Like [`connect`](Self::connect), with a config for both ends.
    pub(crate) async fn connect_with(self, cfg: Config) -> (Session, Session) {
        match self {
            Transport::Memory => Session::pair_with(cfg),
            Transport::Tcp => {
                let (a, b) = self.streams().await;
                (
                    Session::connect_stream(a, cfg.clone()),
                    Session::accept_stream(b, cfg),
                )
            }
        }
    }

    /// Two sessions whose bytes pass through a relay the test can cut, to
    /// kill the connection without a goodbye.
    pub(crate) async fn connect_cuttable(self) -> Cuttable {
        let (a_end, relay_a) = self.streams().await;
        let (relay_b, b_end) = self.streams().await;
        let relay = tokio::spawn(async move {
            let (mut x, mut y) = (relay_a, relay_b);
            let _ = tokio::io::copy_bidirectional(&mut x, &mut y).await;
        });
        Cuttable {
            a: Session::connect_stream(a_end, Config::default()),
            b: Session::accept_stream(b_end, Config::default()),
            relay,
        }
    }

    /// A session accepting from a raw peer that the test drives byte by
    /// byte.
    pub(crate) async fn raw_peer(self, cfg: Config) -> (Session, RawPeer) {
        let (dial, accept) = self.streams().await;
        (Session::accept_stream(accept, cfg), RawPeer::new(dial))
    }

    /// A hub of exports and `n` importers of it. Over memory the hub is one
    /// session of a pair and every importer is its peer; over TCP it is an
    /// [`Exporter`] on loopback with `n` sessions connected to it.
    pub(crate) async fn hub(self, n: usize) -> (Hub, Vec<Session>) {
        match self {
            Transport::Memory => {
                let (a, b) = Session::pair();
                (Hub::Session(a), vec![b; n])
            }
            Transport::Tcp => {
                let exp = Exporter::bind("127.0.0.1:0").await.expect("bind exporter");
                let mut importers = Vec::new();
                for _ in 0..n {
                    let s = within("connect to exporter", Session::connect(exp.local_addr()))
                        .await
                        .expect("connect");
                    importers.push(s);
                }
                (Hub::Exporter(exp), importers)
            }
        }
    }
}

/// Two sessions connected through a relay task that [`cut`](Cuttable::cut)
/// kills, dropping both relay-side streams: each session sees its stream
/// end without a goodbye.
#[derive(Debug)]
pub(crate) struct Cuttable {
    pub(crate) a: Session,
    pub(crate) b: Session,
    relay: JoinHandle<()>,
}

impl Cuttable {
    /// Kills the connection under both sessions.
    pub(crate) async fn cut(&mut self) {
        self.relay.abort();
        let _ = (&mut self.relay).await;
    }
}

/// Where names are exported: one session (to its peer) or an exporter
/// (to every session it accepts).
#[derive(Debug, Clone)]
pub(crate) enum Hub {
    Session(Session),
    Exporter(Exporter),
}

impl Hub {
    pub(crate) fn export_sender<T: Message>(&self, name: &str) -> Result<Sender<T>, Error> {
        match self {
            Hub::Session(s) => s.export_sender(name),
            Hub::Exporter(e) => e.export_sender(name),
        }
    }

    pub(crate) fn export_receiver<T: Message>(
        &self,
        name: &str,
        capacity: usize,
    ) -> Result<Receiver<T>, Error> {
        match self {
            Hub::Session(s) => s.export_receiver(name, capacity),
            Hub::Exporter(e) => e.export_receiver(name, capacity),
        }
    }

    pub(crate) fn hangup(&self, name: &str) -> Result<(), Error> {
        match self {
            Hub::Session(s) => s.hangup(name),
            Hub::Exporter(e) => e.hangup(name),
        }
    }

    pub(crate) async fn drain(&self, timeout: Option<Duration>) -> Result<(), Error> {
        match self {
            Hub::Session(s) => s.drain(timeout).await,
            Hub::Exporter(e) => e.drain(timeout).await,
        }
    }
}

/// How a remote channel between `a` and `b` is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Way {
    /// `a` exports a sender; `b` imports it as a receiver.
    ExportedSender,
    /// `a` exports a receiver; `b` imports it as a sender.
    ExportedReceiver,
}

impl Way {
    pub(crate) const ALL: [Way; 2] = [Way::ExportedSender, Way::ExportedReceiver];

    /// A channel of `capacity` between `a` and `b`, made this way: the
    /// sender is on `a` for [`Way::ExportedSender`] and on `b` otherwise.
    pub(crate) async fn channel<T: Message>(
        self,
        a: &Session,
        b: &Session,
        capacity: usize,
    ) -> (Sender<T>, Receiver<T>) {
        let name = unique("chan");
        match self {
            Way::ExportedSender => {
                let tx = a.export_sender::<T>(&name).expect("export sender");
                let rx = within("import receiver", b.import_receiver::<T>(&name, capacity))
                    .await
                    .expect("import receiver");
                (tx, rx)
            }
            Way::ExportedReceiver => {
                let rx = a
                    .export_receiver::<T>(&name, capacity)
                    .expect("export receiver");
                let tx = within("import sender", b.import_sender::<T>(&name))
                    .await
                    .expect("import sender");
                (tx, rx)
            }
        }
    }
}

/// A channel of `capacity` between `a` and `b` made each way there is:
/// either side exported, and a sender or a receiver carried in a message
/// (its other end staying home).
pub(crate) async fn channels_every_way(
    a: &Session,
    b: &Session,
    capacity: usize,
) -> Vec<(String, Sender<u32>, Receiver<u32>)> {
    let mut out = Vec::new();
    for way in Way::ALL {
        let (tx, rx) = way.channel::<u32>(a, b, capacity).await;
        out.push((format!("{way:?}"), tx, rx));
    }
    let (post, mut inbox) = Way::ExportedReceiver.channel::<Sender<u32>>(a, b, 1).await;
    let (tx, rx) = netchan::channel::<u32>(capacity);
    send_ok("carry a sender", &post, tx).await;
    let tx = recv_some("the carried sender", &mut inbox).await;
    out.push(("a carried sender".into(), tx, rx));
    let (post, mut inbox) = Way::ExportedReceiver
        .channel::<Receiver<u32>>(a, b, 1)
        .await;
    let (tx, rx) = netchan::channel::<u32>(capacity);
    send_ok("carry a receiver", &post, rx).await;
    let rx = recv_some("the carried receiver", &mut inbox).await;
    out.push(("a carried receiver".into(), tx, rx));
    out
}

/// A peer that speaks raw bytes: the test writes crafted hellos and frames
/// and reads what the library answers.
pub(crate) struct RawPeer {
    io: Box<dyn Stream>,
    buf: BytesMut,
    hello_read: bool,
}

impl std::fmt::Debug for RawPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawPeer")
            .field("buffered", &self.buf.len())
            .finish()
    }
}

/// A valid hello with default limits.
pub(crate) fn hello_bytes() -> BytesMut {
    hello_with(PROTOCOL_VERSION, 1024)
}

/// A hello of `version` announcing `max_channels`.
pub(crate) fn hello_with(version: u16, max_channels: u32) -> BytesMut {
    let mut b = BytesMut::new();
    Hello {
        version,
        codec: CodecId::Bincode,
        max_message_len: 16 << 20,
        max_channels,
        max_handles: 128,
    }
    .encode(&mut b);
    b
}

/// The bytes of `frames`.
pub(crate) fn frame_bytes(frames: &[Frame]) -> BytesMut {
    let mut b = BytesMut::new();
    for f in frames {
        f.encode(&mut b);
    }
    b
}

/// How a raw connection ended.
#[derive(Debug)]
pub(crate) struct Closed {
    /// Frames received before the end.
    pub(crate) frames: Vec<Frame>,
}

impl Closed {
    /// The GOODBYE reason, if the library said goodbye before closing.
    pub(crate) fn goodbye(&self) -> Option<&str> {
        self.frames.iter().find_map(|f| match f {
            Frame::Goodbye { reason } => Some(reason.as_str()),
            _ => None,
        })
    }
}

impl RawPeer {
    pub(crate) fn new<S: Stream>(io: S) -> RawPeer {
        RawPeer {
            io: Box::new(io),
            buf: BytesMut::new(),
            hello_read: false,
        }
    }

    /// Connects to `addr` over TCP.
    pub(crate) async fn connect(addr: SocketAddr) -> RawPeer {
        let s = within("raw connect", TcpStream::connect(addr))
            .await
            .expect("raw connect");
        s.set_nodelay(true).expect("nodelay");
        RawPeer::new(s)
    }

    /// Writes `bytes`. Errors are returned, not fatal: the library may have
    /// closed the connection already.
    pub(crate) async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        within("raw write", async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        })
        .await
    }

    /// Writes `frames`; panics if the write fails.
    pub(crate) async fn send(&mut self, frames: &[Frame]) {
        self.write(&frame_bytes(frames))
            .await
            .expect("write frames");
    }

    /// Ends our sending side (end of stream, no goodbye).
    pub(crate) async fn shutdown_write(&mut self) {
        let _ = within("raw shutdown", self.io.shutdown()).await;
    }

    async fn fill(&mut self) -> std::io::Result<usize> {
        within("raw read", self.io.read_buf(&mut self.buf)).await
    }

    /// Reads the library's hello and checks its magic and version.
    pub(crate) async fn read_hello(&mut self) -> Hello {
        while self.buf.len() < HELLO_LEN {
            let n = self.fill().await.expect("read hello");
            assert!(n > 0, "connection ended before the hello");
        }
        assert_eq!(self.buf[..8], MAGIC, "the hello starts with the magic");
        let ours = Hello {
            version: PROTOCOL_VERSION,
            codec: CodecId::Bincode,
            max_message_len: 16 << 20,
            max_channels: 1024,
            max_handles: 128,
        };
        self.hello_read = true;
        Hello::decode(&mut self.buf, &ours)
            .expect("a valid hello")
            .expect("a whole hello")
    }

    /// The next frame, or `None` at end of stream (or a reset).
    pub(crate) async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            match Frame::decode(&mut self.buf, 16 << 20) {
                Ok(Some(f)) => return Some(f),
                Ok(None) => {}
                Err(e) => panic!("the library sent a malformed frame: {e}"),
            }
            match self.fill().await {
                Ok(0) => {
                    assert!(
                        self.buf.is_empty(),
                        "stream ended inside a frame ({} bytes left)",
                        self.buf.len()
                    );
                    return None;
                }
                Ok(_) => {}
                Err(e) if is_reset(&e) => return None,
                Err(e) => panic!("raw read failed: {e}"),
            }
        }
    }

    /// The next frame that is not a keepalive; panics at end of stream.
    pub(crate) async fn expect_frame(&mut self, what: &str) -> Frame {
        loop {
            match self.next_frame().await {
                Some(Frame::Ping(_) | Frame::Pong(_)) => {}
                Some(f) => return f,
                None => panic!("{what}: connection ended while a frame was expected"),
            }
        }
    }

    /// Reads until the library closes the connection; fails if it does
    /// not within [`LIMIT`].
    pub(crate) async fn expect_closed(&mut self) -> Closed {
        match self.closed_within(LIMIT).await {
            Some(c) => c,
            None => panic!("the library did not close the connection within {LIMIT:?}"),
        }
    }

    /// Reads until the library closes the connection, for at most `d`;
    /// `None` if it is still open then. The library's hello is skipped if
    /// it was not read yet.
    pub(crate) async fn closed_within(&mut self, d: Duration) -> Option<Closed> {
        let mut frames = Vec::new();
        let done = tokio::time::timeout(d, async {
            if !self.hello_read {
                while self.buf.len() < HELLO_LEN {
                    match self.fill_unbounded().await {
                        Ok(0) => return,
                        Ok(_) => {}
                        Err(e) if is_reset(&e) => return,
                        Err(e) => panic!("raw read failed: {e}"),
                    }
                }
                assert_eq!(self.buf[..8], MAGIC, "the library starts with its hello");
                let _ = self.buf.split_to(HELLO_LEN);
                self.hello_read = true;
            }
            loop {
                match Frame::decode(&mut self.buf, 16 << 20) {
                    Ok(Some(f)) => {
                        frames.push(f);
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => panic!("the library sent a malformed frame: {e}"),
                }
                match self.fill_unbounded().await {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if is_reset(&e) => return,
                    Err(e) => panic!("raw read failed: {e}"),
                }
            }
        })
        .await;
        done.ok().map(|()| Closed { frames })
    }

    async fn fill_unbounded(&mut self) -> std::io::Result<usize> {
        self.io.read_buf(&mut self.buf).await
    }
}

fn is_reset(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe
    )
}

/// A tiny deterministic generator for garbage bytes (xorshift64*).
#[derive(Debug, Clone)]
pub(crate) struct Garbage(u64);

impl Garbage {
    pub(crate) fn new(seed: u64) -> Garbage {
        Garbage(seed.max(1))
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 >> 12;
                self.0 ^= self.0 << 25;
                self.0 ^= self.0 >> 27;
                (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
            })
            .collect()
    }
}

/// Panics seen on threads named by [`watching_panics`], with the thread
/// name first.
static PANICS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Runs `scenario` on a runtime of its own whose threads are named after
/// `name`, and fails if any task on it panicked (library tasks included:
/// tokio would otherwise swallow such a panic). For hostile-input tests.
pub(crate) fn watching_panics<F, Fut>(name: &str, scenario: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let current = std::thread::current();
            if let Some(thread) = current.name().filter(|t| t.starts_with("watched:")) {
                PANICS
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(format!("{thread}\u{0}{info}"));
            }
            previous(info);
        }));
    });
    let thread = format!("watched:{name}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(thread.clone())
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bounded(scenario()));
    rt.shutdown_timeout(Duration::from_secs(2));
    let prefix = format!("{thread}\u{0}");
    let seen: Vec<String> = PANICS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|p| p.starts_with(&prefix))
        .cloned()
        .collect();
    assert!(seen.is_empty(), "tasks panicked: {seen:?}");
}

/// Returns once `to` has read every single-frame message `from` sent
/// before the call: a rendezvous message on a fresh channel of the same
/// connection follows them on the stream.
pub(crate) async fn barrier(from: &Session, to: &Session) {
    let (tx, mut rx) = Way::ExportedSender.channel::<()>(from, to, 0).await;
    let (sent, got) = within("barrier", async { tokio::join!(tx.send(()), rx.recv()) }).await;
    assert!(sent.is_ok(), "barrier send");
    assert!(matches!(got, Ok(Some(()))), "barrier recv: {got:?}");
}
