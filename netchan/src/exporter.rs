//! [`Exporter`]: a listener whose named channels are shared by every
//! session it accepts: the accept loop, the names all its sessions share,
//! their error log, `drain`/`sync` across them, and shutdown.
//!
//! Sockets and TLS are `transport`'s (it only calls `Listener`); the
//! registry of names and each connection are `conn`'s. It knows nothing of
//! RPC: `serve` and `serve_each` live in `rpc::serve`, and reach each
//! session as it starts through the exporter's session-start hooks
//! ([`SessionStart`]).

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::channel::queue::Queue;
use crate::channel::route::Route;
use crate::channel::{Keep, Receiver, Sender};
use crate::conn::{Conn, ErrorLog, Export, Exports, Resume, SessionStats};
use crate::error::Error;
use crate::proto::hello::{FLAG_RESUMABLE, FLAG_RESUME, HELLO_LEN, ResumeInfo};
use crate::proto::{Connection, Hello, PROTOCOL_VERSION, Side};
use crate::session::Session;
use crate::transport::Addrs;
use crate::transport::tcp::{Accepted, Listener};
use crate::util::lock;
use crate::{Config, Message};

/// Runs for every session an exporter accepts, once, as it starts (and
/// for the sessions already accepted when the hook is added). What it
/// returns is kept until the session ends or the exporter stops, then
/// dropped.
pub(crate) type SessionStart = Arc<dyn Fn(&Session) -> Kept + Send + Sync>;

/// What a [`SessionStart`] hook keeps alive for one session.
pub(crate) type Kept = Box<dyn Any + Send + Sync>;

/// A session an exporter accepted, and what its hooks keep for it, while
/// it lasts.
struct Live {
    session: Session,
    /// How many of the exporter's hooks have run (or are running) for it.
    hooks_run: usize,
    kept: Vec<Kept>,
}

pub(crate) struct ExporterShared {
    exports: Arc<Exports>,
    /// Lock order: `hooks`, then `sessions`.
    sessions: Mutex<HashMap<u64, Live>>,
    hooks: Mutex<Vec<SessionStart>>,
    local_addr: SocketAddr,
    accept: Mutex<Option<tokio::task::JoinHandle<()>>>,
    errors: Arc<ErrorLog>,
    shut: AtomicBool,
    /// Resumable sessions by secret token (to the session id).
    tokens: Mutex<HashMap<[u8; 16], u64>>,
    /// [`Config::cluster_buffer`] of the config it was bound with.
    pub(crate) cluster_buffer: usize,
}

impl ExporterShared {
    fn sessions(&self) -> Vec<Session> {
        lock(&self.sessions)
            .values()
            .map(|live| live.session.clone())
            .collect()
    }

    fn stop(&self) -> Vec<Session> {
        if self.shut.swap(true, Ordering::AcqRel) {
            return Vec::new();
        }
        if let Some(h) = lock(&self.accept).take() {
            h.abort();
        }
        self.exports.hangup_all();
        let hooks = std::mem::take(&mut *lock(&self.hooks));
        let live: Vec<Live> = lock(&self.sessions).drain().map(|(_, l)| l).collect();
        self.errors.end();
        // Hooks and what they kept are user code: dropped outside the
        // locks.
        drop(hooks);
        live.into_iter().map(|l| l.session).collect()
    }

    /// Runs on session `id` every hook that has not run for it yet, each
    /// exactly once however hooks and sessions race, and never under a
    /// lock (hooks run user code that may use the exporter).
    fn run_hooks(&self, id: u64) {
        loop {
            let (session, todo) = {
                let hooks = lock(&self.hooks);
                let mut sessions = lock(&self.sessions);
                let Some(live) = sessions.get_mut(&id) else {
                    return;
                };
                let todo: Vec<SessionStart> =
                    hooks.get(live.hooks_run..).unwrap_or_default().to_vec();
                live.hooks_run = live.hooks_run.max(hooks.len());
                (live.session.clone(), todo)
            };
            if todo.is_empty() {
                return;
            }
            let kept: Vec<Kept> = todo.iter().map(|hook| hook(&session)).collect();
            let mut sessions = lock(&self.sessions);
            match sessions.get_mut(&id) {
                Some(live) => live.kept.extend(kept),
                // The session ended meanwhile: drop what the hooks made,
                // outside the lock.
                None => {
                    drop(sessions);
                    drop(kept);
                }
            }
        }
    }
}

/// The user-held part of an exporter: when the last `Exporter` clone and
/// the last channel half it exported are gone, it shuts down.
pub(crate) struct ExporterRef(Arc<ExporterShared>);

impl Drop for ExporterRef {
    fn drop(&mut self) {
        // Sessions close cleanly as their handles drop.
        drop(self.0.stop());
    }
}

/// A listener whose named channels are shared by every session it
/// accepts: Go's `netchan.Exporter`.
///
/// ```no_run
/// # async fn run() -> Result<(), netchan::Error> {
/// let exp = netchan::Exporter::bind("127.0.0.1:7000").await?;
/// let jobs = exp.export_sender::<String>("jobs")?;      // each job to one importer
/// let mut results = exp.export_receiver::<u64>("results", 16)?; // from every importer
/// jobs.send("compress /tmp/a".into()).await.ok();
/// let first = results.recv().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Exporter {
    inner: Arc<ExporterRef>,
}

impl fmt::Debug for Exporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exporter")
            .field("local_addr", &self.inner.0.local_addr)
            .finish_non_exhaustive()
    }
}

impl Exporter {
    pub(crate) fn shared(&self) -> &Arc<ExporterShared> {
        &self.inner.0
    }

    fn keep(&self) -> Keep {
        self.inner.clone()
    }

    /// Listens on `addr` over TCP with the default [`Config`].
    pub async fn bind(addr: impl tokio::net::ToSocketAddrs) -> Result<Exporter, Error> {
        Exporter::bind_with(addr, Config::default()).await
    }

    /// Listens on `addr` over TCP with `cfg` for every accepted session.
    pub async fn bind_with(
        addr: impl tokio::net::ToSocketAddrs,
        cfg: Config,
    ) -> Result<Exporter, Error> {
        let listener = Listener::bind(addr, &cfg).await?;
        let local_addr = listener.local_addr();
        let shared = Arc::new(ExporterShared {
            exports: Exports::new(),
            sessions: Mutex::new(HashMap::new()),
            hooks: Mutex::new(Vec::new()),
            local_addr,
            accept: Mutex::new(None),
            errors: ErrorLog::new(),
            shut: AtomicBool::new(false),
            tokens: Mutex::new(HashMap::new()),
            cluster_buffer: cfg.cluster_buffer,
        });
        let weak = Arc::downgrade(&shared);
        let task = tokio::spawn(accept_loop(listener, weak, cfg));
        *lock(&shared.accept) = Some(task);
        Ok(Exporter {
            inner: Arc::new(ExporterRef(shared)),
        })
    }

    /// The address it listens on (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared().local_addr
    }

    /// Exports a sender named `name`: each value goes to exactly one
    /// importer (one with room); a send waits while no importer has room.
    pub fn export_sender<T: Message>(&self, name: &str) -> Result<Sender<T>, Error> {
        let route = Route::export();
        self.shared()
            .exports
            .add(name, Export::sender::<T, _>(&route))?;
        Ok(Sender::from_route(route, Some(self.keep())))
    }

    /// Exports a receiver named `name`: the values of every importer merge
    /// here. `capacity` is the buffer granted to each importer. Importers
    /// coming and going do not end it; only [`hangup`](Exporter::hangup)
    /// or [`shutdown`](Exporter::shutdown) does.
    pub fn export_receiver<T: Message>(
        &self,
        name: &str,
        capacity: usize,
    ) -> Result<Receiver<T>, Error> {
        let queue = Queue::<T>::new(capacity, 0, 1);
        self.shared()
            .exports
            .add(name, Export::receiver::<T>(queue.clone()))?;
        Ok(Receiver::from_queue(queue, None, Some(self.keep())))
    }

    /// Withdraws `name` and closes it: importers of an exported sender get
    /// `Ok(None)` after what was sent; sends into an exported receiver fail.
    pub fn hangup(&self, name: &str) -> Result<(), Error> {
        if self.shared().exports.hangup(name) {
            Ok(())
        } else {
            Err(Error::NotFound(name.to_owned()))
        }
    }

    /// Adds `hook`, to run on every session as it starts, and runs it at
    /// once on the sessions already accepted.
    pub(crate) fn on_session_start(&self, hook: SessionStart) {
        let shared = self.shared();
        lock(&shared.hooks).push(hook);
        let ids: Vec<u64> = lock(&shared.sessions).keys().copied().collect();
        for id in ids {
            shared.run_hooks(id);
        }
    }

    /// Exports `export` as `name` (a service's export name), replacing
    /// what was there.
    pub(crate) fn add_service(&self, name: &str, export: Export) {
        // Serving again under the same name replaces the service for new
        // clients; running dispatchers go on.
        self.shared().exports.hangup(name);
        let _ = self.shared().exports.add(name, export);
    }

    /// Sessions currently connected.
    pub fn sessions(&self) -> Vec<Session> {
        self.shared().sessions()
    }

    /// Waits until every value sent to any importer has been confirmed by
    /// it, including values sent while waiting; fails with the count still
    /// unconfirmed when `timeout` passes or a session fails.
    pub async fn drain(&self, timeout: Option<Duration>) -> Result<(), Error> {
        let sessions = self.sessions();
        let waits = futures::future::join_all(sessions.iter().map(|s| s.drain(None)));
        settle(timeout, waits, || {
            sessions
                .iter()
                .map(|s| s.conn().lock().proto.unconfirmed())
                .sum()
        })
        .await
    }

    /// Waits until every importer has confirmed the values sent before
    /// this call (not those sent while waiting); fails with the count
    /// still unconfirmed when `timeout` passes.
    pub async fn sync(&self, timeout: Option<Duration>) -> Result<(), Error> {
        let targets: Vec<(Session, u64)> = self
            .sessions()
            .into_iter()
            .map(|s| {
                let sent = s.conn().lock().proto.sent_total();
                (s, sent)
            })
            .collect();
        let waits = futures::future::join_all(targets.iter().map(|(s, t)| s.confirmed(*t)));
        settle(timeout, waits, || {
            targets
                .iter()
                .map(|(s, target)| target.saturating_sub(s.conn().lock().proto.confirmed_total()))
                .sum()
        })
        .await
    }

    /// The stats of every session this exporter has now, one entry each
    /// (see [`Session::stats`]); [`ExporterStats`] sums them.
    pub fn stats(&self) -> ExporterStats {
        ExporterStats {
            sessions: self.sessions().iter().map(Session::stats).collect(),
        }
    }

    /// Errors of every session this exporter accepted.
    pub fn errors(&self) -> impl futures::Stream<Item = Error> + Send + Unpin + 'static {
        self.shared().errors.stream()
    }

    /// Stops accepting, withdraws every export (receivers get `Ok(None)`
    /// after what arrived), and closes every session cleanly.
    pub async fn shutdown(&self) {
        let sessions = self.shared().stop();
        futures::future::join_all(sessions.iter().map(|s| s.close())).await;
    }
}

/// Waits for every session's confirmations, or until `timeout`, when
/// `still_unconfirmed` counts what is missing.
async fn settle(
    timeout: Option<Duration>,
    waits: impl std::future::Future<Output = Vec<Result<(), Error>>>,
    still_unconfirmed: impl Fn() -> u64,
) -> Result<(), Error> {
    let results = match timeout {
        Some(t) => match tokio::time::timeout(t, waits).await {
            Ok(r) => r,
            Err(_) => {
                return Err(Error::Undelivered {
                    count: still_unconfirmed(),
                    why: format!("timed out after {t:?}"),
                });
            }
        },
        None => waits.await,
    };
    sum_undelivered(results)
}

fn sum_undelivered(results: Vec<Result<(), Error>>) -> Result<(), Error> {
    let mut count = 0;
    let mut why = None;
    for r in results {
        match r {
            Ok(()) => {}
            Err(Error::Undelivered { count: c, why: w }) => {
                count += c;
                why.get_or_insert(w);
            }
            Err(e) => return Err(e),
        }
    }
    match why {
        None => Ok(()),
        Some(why) => Err(Error::Undelivered { count, why }),
    }
}

async fn accept_loop(listener: Listener, shared: Weak<ExporterShared>, cfg: Config) {
    loop {
        let next = listener.accept(&cfg).await;
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let (stream, peer_addr) = match next {
            Ok(x) => x,
            Err(e) => {
                strong.errors.push(e);
                continue;
            }
        };
        drop(strong);
        // Each connection's TLS handshake runs on its own, under the
        // handshake timeout, so a slow client cannot stall the others.
        let (shared, cfg, handshake) = (shared.clone(), cfg.clone(), listener.handshake());
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + cfg.handshake_timeout;
            match handshake.run(stream, peer_addr, &cfg).await {
                Ok(Accepted::Tcp(mut stream)) => {
                    let (conn, token) = new_conn(&shared, &cfg, Addrs::of(&stream));
                    if admit(&shared, &conn).is_none() {
                        return;
                    }
                    let hello = greet(&conn, &mut stream, &cfg, deadline).await;
                    if hello.ended {
                        ended_before_hello(&conn);
                        return;
                    }
                    if hello.resume {
                        // Not a new session after all.
                        crate::conn::driver::discard(&conn);
                        if let Some(stream) = resume(&shared, stream, &hello, None) {
                            refuse(stream, &cfg).await;
                        }
                        return;
                    }
                    start(&shared, conn, stream, hello, token, deadline);
                }
                #[cfg(feature = "tls")]
                Ok(Accepted::Tls(mut stream, peer)) => {
                    let (conn, token) = new_conn(&shared, &cfg, stream.addrs);
                    if let Some(p) = peer.clone() {
                        let _ = conn.peer.set(p);
                    }
                    if admit(&shared, &conn).is_none() {
                        return;
                    }
                    let hello = greet(&conn, &mut stream.stream, &cfg, deadline).await;
                    if hello.ended {
                        ended_before_hello(&conn);
                        return;
                    }
                    if hello.resume {
                        crate::conn::driver::discard(&conn);
                        if let Some(stream) = resume(&shared, stream, &hello, peer.as_ref()) {
                            refuse(stream.stream, &cfg).await;
                        }
                        return;
                    }
                    start(&shared, conn, stream, hello, token, deadline);
                }
                Err(e) => {
                    if let Some(s) = shared.upgrade() {
                        s.errors.push(e);
                    }
                }
            }
        });
    }
}

/// A new connection ended before its peer's hello was whole: no session
/// starts on it ([`Peeked::ended`]), and the stream closes as it drops.
fn ended_before_hello(conn: &Arc<Conn>) {
    tracing::debug!(
        conn = conn.id,
        peer = %conn.peer_label(),
        "netchan: a connection ended before its hello; no session started"
    );
    crate::conn::driver::discard(conn);
}

/// Tracks a new session until it ends and runs the session-start hooks
/// on it, before its hello goes out (so before its peer's `connect`
/// returns): what they export is there before the peer can ask for it.
/// `None` if the exporter is gone or shutting down.
fn admit(shared: &Weak<ExporterShared>, conn: &Arc<Conn>) -> Option<()> {
    let shared = shared.upgrade()?;
    if shared.shut.load(Ordering::Acquire) {
        return None;
    }
    let session = Session::from_conn(conn);
    let id = conn.id;
    lock(&shared.sessions).insert(
        id,
        Live {
            session,
            hooks_run: 0,
            kept: Vec::new(),
        },
    );
    shared.run_hooks(id);
    let weak = Arc::downgrade(&shared);
    let conn = conn.clone();
    tokio::spawn(async move {
        conn.wait_driver_done().await;
        if let Some(s) = weak.upgrade() {
            lock(&s.tokens).retain(|_, session| *session != id);
            // What hooks kept for it drops here, outside the lock.
            let ended = lock(&s.sessions).remove(&id);
            drop(ended);
        }
    });
    Some(())
}

/// Starts an admitted session on its stream, whose first bytes (the
/// peer's hello) `hello` holds. A dialer that asked for it may resume the
/// session later with `token`.
fn start<S: crate::transport::Halves>(
    shared: &Weak<ExporterShared>,
    conn: Arc<Conn>,
    stream: S,
    hello: Peeked,
    token: Option<[u8; 16]>,
    deadline: tokio::time::Instant,
) {
    if let (Some(t), true, Some(s)) = (token, hello.resumable, shared.upgrade()) {
        lock(&s.tokens).insert(t, conn.id);
    }
    #[cfg(feature = "metrics")]
    crate::metrics::spawn_publisher(&conn);
    let epoch = conn.lock().link_epoch;
    crate::conn::driver::spawn_link(conn, stream, epoch, hello.bytes, Some(deadline));
}

/// The stats of an exporter's sessions (see [`Exporter::stats`]), with
/// sums across them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExporterStats {
    /// One entry per session, as [`Session::stats`] gives it.
    pub sessions: Vec<SessionStats>,
}

impl ExporterStats {
    /// Bytes written to every session.
    pub fn bytes_sent(&self) -> u64 {
        self.sessions.iter().map(|s| s.bytes_sent).sum()
    }

    /// Bytes read from every session.
    pub fn bytes_received(&self) -> u64 {
        self.sessions.iter().map(|s| s.bytes_received).sum()
    }

    /// Values sent and not yet confirmed, on every session.
    pub fn unconfirmed(&self) -> u64 {
        self.sessions.iter().map(|s| s.unconfirmed).sum()
    }

    /// Messages on the channels named `name`, summed over sessions.
    pub fn messages_on(&self, name: &str) -> u64 {
        self.sessions
            .iter()
            .flat_map(|s| s.named(name))
            .map(|c| c.messages)
            .sum()
    }
}

/// The start of what a new connection sent: its hello, read before the
/// session starts, to tell a resume from a new session.
struct Peeked {
    /// Bytes read so far (the reader of a new session decodes them).
    bytes: bytes::BytesMut,
    /// The hello asks for a resumable session.
    resumable: bool,
    /// The hello resumes session `info.token`.
    resume: bool,
    info: ResumeInfo,
    /// The stream ended (or failed) before the hello was whole: the peer
    /// went away, or a network path closed its direction of the stream.
    /// No session starts on it: a new one would only fail and say goodbye
    /// to a dialer that may be reading still, and a dialer that was
    /// resuming would take that goodbye for the end of its session.
    ended: bool,
}

/// A new accepted connection, not started yet: it offers a resumable
/// session with a fresh secret token (without randomness, it offers
/// none), which it returns.
fn new_conn(
    shared: &Weak<ExporterShared>,
    cfg: &Config,
    addrs: Addrs,
) -> (Arc<Conn>, Option<[u8; 16]>) {
    let token = new_token();
    let shared = shared.upgrade();
    let conn = Conn::new(
        Side::Acceptor,
        cfg.clone(),
        addrs,
        shared.as_ref().map(|s| s.exports.clone()),
        shared.as_ref().map(|s| s.errors.clone()),
        token.map_or(Resume::Off, Resume::Offer),
    );
    (conn, token)
}

/// Writes `conn`'s hello at once (as every acceptor does, before it reads
/// the dialer's), then reads the dialer's hello ([`peek_hello`]).
async fn greet<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    conn: &Conn,
    s: &mut S,
    cfg: &Config,
    deadline: tokio::time::Instant,
) -> Peeked {
    use tokio::io::AsyncWriteExt;
    let mut ours = bytes::BytesMut::new();
    conn.lock()
        .proto
        .take_transmit(&mut ours, std::time::Instant::now());
    // A failed write shows again, and is reported, when the session reads.
    let _ = tokio::time::timeout_at(deadline, async {
        s.write_all(&ours).await?;
        s.flush().await
    })
    .await;
    peek_hello(s, cfg, deadline).await
}

/// Reads until the peer's hello is whole (or turns out not to be a
/// hello, or `deadline` passes: the session's reader then reports that
/// as it always did), or the stream ends or fails first
/// ([`Peeked::ended`]).
async fn peek_hello<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    cfg: &Config,
    deadline: tokio::time::Instant,
) -> Peeked {
    use tokio::io::AsyncReadExt;
    let ours = Hello {
        version: PROTOCOL_VERSION,
        codec: cfg.codec,
        max_message_len: 1,
        max_channels: 1,
        max_handles: 0,
    };
    let mut p = Peeked {
        bytes: bytes::BytesMut::with_capacity(HELLO_LEN),
        resumable: false,
        resume: false,
        info: ResumeInfo::default(),
        ended: false,
    };
    loop {
        let mut probe = p.bytes.clone();
        match Hello::decode_with(&mut probe, &ours) {
            Ok(Some((_, info))) => {
                p.resumable = info.is(FLAG_RESUMABLE);
                p.resume = info.is(FLAG_RESUME);
                if p.resume {
                    // The rest, if any, follows the hello on the new link.
                    let _ = p.bytes.split_to(HELLO_LEN);
                }
                p.info = info;
                return p;
            }
            Ok(None) => {}
            Err(_) => return p,
        }
        match tokio::time::timeout_at(deadline, s.read_buf(&mut p.bytes)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(Ok(_) | Err(_)) => {
                p.ended = true;
                return p;
            }
            Err(_) => return p,
        }
    }
}

/// What a TLS session knows of its peer (nothing without TLS).
#[cfg(feature = "tls")]
type Identity = crate::tls::PeerIdentity;
#[cfg(not(feature = "tls"))]
type Identity = ();

/// A fresh random session token; `None` if the system has no randomness
/// to give.
fn new_token() -> Option<[u8; 16]> {
    let mut t = [0u8; 16];
    getrandom::fill(&mut t).ok()?;
    Some(t)
}

/// `hello` resumes a session: resumes it over `stream` and returns
/// `None`, or returns the stream to refuse (unknown or expired token,
/// another client certificate).
fn resume<S: crate::transport::Halves>(
    shared: &Weak<ExporterShared>,
    stream: S,
    hello: &Peeked,
    #[cfg_attr(not(feature = "tls"), allow(unused_variables))] peer: Option<&Identity>,
) -> Option<S> {
    let Some(shared) = shared.upgrade() else {
        return Some(stream);
    };
    let conn = {
        let Some(id) = lock(&shared.tokens).get(&hello.info.token).copied() else {
            tracing::info!(peer = ?stream.addrs().peer, "netchan: resume refused: unknown or expired session");
            return Some(stream);
        };
        match lock(&shared.sessions).get(&id) {
            Some(live) => live.session.conn().clone(),
            None => return Some(stream),
        }
    };
    #[cfg(feature = "tls")]
    if conn.peer.get() != peer {
        tracing::warn!(
            conn = conn.id,
            peer = ?stream.addrs().peer,
            "netchan: resume refused: the client certificate differs from the session's"
        );
        return Some(stream);
    }
    match conn.resume_accepted(stream, hello.info.position, hello.bytes.clone()) {
        Ok(()) => None,
        Err((e, stream)) => {
            tracing::info!(conn = conn.id, reason = %e, "netchan: resume refused");
            Some(stream)
        }
    }
}

/// Tells a dialer that its session cannot resume, then closes.
async fn refuse<S: tokio::io::AsyncWrite + Unpin>(mut stream: S, cfg: &Config) {
    use tokio::io::AsyncWriteExt;
    let no = Connection::refusal(&cfg.limits, cfg.codec);
    let _ = tokio::time::timeout(cfg.close_timeout, async {
        let _ = stream.write_all(&no).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

#[cfg(all(test, feature = "tls"))]
mod tls_resume_tests {
    use super::*;
    use crate::Reconnect;
    use crate::tls::{ClientTls, Identity, ServerTls};
    use crate::transport::tcp::{self, Dialed};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A resume hello carrying a live session's token, from a client that
    /// presents another certificate than the session's, is refused; the
    /// session goes on.
    #[tokio::test]
    async fn a_resume_from_another_client_certificate_is_refused() {
        let server_id = Identity::self_signed(&["localhost"]).expect("server identity");
        let mine = Identity::self_signed(&["mine"]).expect("client identity");
        let theirs = Identity::self_signed(&["theirs"]).expect("another identity");
        let tls = ServerTls::new(server_id.clone())
            .require_client_pinned(&[mine.fingerprint(), theirs.fingerprint()]);
        let exp = Exporter::bind_with("127.0.0.1:0", Config::default().tls_server(tls))
            .await
            .expect("bind");
        let tx = exp.export_sender::<u32>("n").expect("export");
        let client_tls = |id: Identity| ClientTls::pinned(server_id.fingerprint()).identity(id);
        let client = Session::connect_with(
            exp.local_addr(),
            Config::default()
                .reconnect(Reconnect::default())
                .tls_client(client_tls(mine)),
        )
        .await
        .expect("connect");
        let token = client
            .conn()
            .lock()
            .proto
            .token()
            .expect("a resumable session");

        let other = Config::default().tls_client(client_tls(theirs));
        let Ok(Dialed::Tls(mut s, _)) = tcp::dial(exp.local_addr(), &other, &mut None).await else {
            panic!("a TLS connection");
        };
        let ours = Hello {
            version: PROTOCOL_VERSION,
            codec: crate::proto::CodecId::Bincode,
            max_message_len: 1 << 20,
            max_channels: 8,
            max_handles: 8,
        };
        let mut b = bytes::BytesMut::new();
        ours.encode_with(
            &ResumeInfo {
                flags: FLAG_RESUME,
                token,
                position: 0,
            },
            &mut b,
        );
        s.stream.write_all(&b).await.expect("write");
        let mut answer = [0u8; 2 * HELLO_LEN];
        tokio::time::timeout(Duration::from_secs(10), s.stream.read_exact(&mut answer))
            .await
            .expect("an answer in time")
            .expect("the offer and the answer");
        // The exporter's own hello first, then its answer.
        let mut answer = bytes::BytesMut::from(&answer[..]);
        let _offer = Hello::decode_with(&mut answer, &ours).expect("valid");
        let (_, info) = Hello::decode_with(&mut answer, &ours)
            .expect("valid")
            .expect("whole");
        assert!(
            info.is(crate::proto::hello::FLAG_REFUSED),
            "refused: {info:?}"
        );

        // The genuine session did not notice.
        let mut rx = client.import_receiver::<u32>("n", 1).await.expect("import");
        tx.send(5).await.expect("send");
        assert_eq!(rx.recv().await.expect("recv"), Some(5));
        assert_eq!(client.stats().resumes, 0);
    }
}
