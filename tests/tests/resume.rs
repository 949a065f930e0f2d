//! Sessions that survive broken connections (`Config::reconnect`): real
//! sessions through a cutting relay that kills every connection it
//! carries on command. Each test checks that what was sent arrives once,
//! in order, that calls in flight get their answers, and that a session
//! that cannot resume is lost cleanly (values given back, receivers get
//! the error), never silently.
//!
//! Loopback only; every wait is bounded.

#[path = "resume/relay.rs"]
mod relay;

use std::time::Duration;

use futures::StreamExt;
use netchan::{Config, Error, Exporter, Reconnect, Session, SessionEvent};

use relay::Relay;

/// Fails the test if `f` takes longer than `limit`.
async fn within<T>(what: &str, limit: Duration, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// A reconnect policy for tests: quick retries, a bounded give-up.
fn quick() -> Reconnect {
    Reconnect::default()
        .initial_delay(Duration::from_millis(10))
        .max_delay(Duration::from_millis(100))
        .give_up_after(Some(Duration::from_secs(20)))
}

fn client_cfg() -> Config {
    Config::default().reconnect(quick())
}

/// The session events up to and including the first `Lost` (all of them,
/// if they end before one).
async fn events_until_lost(
    events: &mut (impl futures::Stream<Item = SessionEvent> + Unpin),
) -> Vec<SessionEvent> {
    let mut saw = Vec::new();
    while let Some(ev) = events.next().await {
        let lost = matches!(ev, SessionEvent::Lost(_));
        saw.push(ev);
        if lost {
            break;
        }
    }
    saw
}

/// An exporter on loopback and a relay in front of it.
async fn served(cfg: Config) -> (Exporter, Relay) {
    let exp = Exporter::bind_with("127.0.0.1:0", cfg)
        .await
        .expect("bind exporter");
    let relay = Relay::start(exp.local_addr());
    (exp, relay)
}

/// The transport a scenario runs over: plain TCP, or mutual TLS (a pinned
/// server certificate, and a client certificate the server requires, so a
/// resume must come from the same client).
#[derive(Clone)]
enum Over {
    Tcp,
    Tls {
        server: netchan::tls::Identity,
        client: netchan::tls::Identity,
    },
}

impl Over {
    fn tls() -> Over {
        Over::Tls {
            server: netchan::tls::Identity::self_signed(&["localhost"]).expect("server identity"),
            client: netchan::tls::Identity::self_signed(&["client"]).expect("client identity"),
        }
    }

    /// The exporter's config: `cfg`, over this transport.
    fn server(&self, cfg: Config) -> Config {
        match self {
            Over::Tcp => cfg,
            Over::Tls { server, client } => cfg.tls_server(
                netchan::tls::ServerTls::new(server.clone())
                    .require_client_pinned(&[client.fingerprint()]),
            ),
        }
    }

    /// The dialer's config ([`client_cfg`]), over this transport.
    fn client(&self) -> Config {
        self.dialer(client_cfg())
    }

    /// A dialer's config: `cfg`, over this transport.
    fn dialer(&self, cfg: Config) -> Config {
        match self {
            Over::Tcp => cfg,
            Over::Tls { server, client } => cfg.tls_client(
                netchan::tls::ClientTls::pinned(server.fingerprint()).identity(client.clone()),
            ),
        }
    }
}

/// Runs the scenario `$name(over: Over)` as two tests, over TCP and over
/// TLS.
macro_rules! over_tcp_and_tls {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn over_tcp() {
                super::$name(super::Over::Tcp).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn over_tls() {
                super::$name(super::Over::tls()).await
            }
        }
    };
}

/// Cuts every connection through `relay` every `every` until `stop`
/// fires; returns how many cuts it made.
fn cutter(
    relay: std::sync::Arc<Relay>,
    every: Duration,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<u64>,
) {
    let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
    let h = tokio::spawn(async move {
        let mut cuts = 0;
        loop {
            tokio::select! {
                _ = &mut rx => return cuts,
                () = tokio::time::sleep(every) => {
                    relay.cut();
                    cuts += 1;
                }
            }
        }
    });
    (tx, h)
}

/// Values on four channels, two each way, with every connection cut
/// every 100 ms: each value arrives exactly once and in order. A million
/// values in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_on_four_channels_arrive_once_and_in_order_through_a_cut_every_100ms() {
    stream_through_cuts(Config::default(), client_cfg(), 250_000).await;
}

/// The same over TLS (fewer values: TLS costs more per byte in a debug
/// build).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_over_tls_arrive_once_and_in_order_through_a_cut_every_100ms() {
    use netchan::tls::{ClientTls, Identity, ServerTls};
    let server = Identity::self_signed(&["localhost"]).expect("server identity");
    let client = Identity::self_signed(&["client"]).expect("client identity");
    let server_cfg = Config::default()
        .tls_server(ServerTls::new(server.clone()).require_client_pinned(&[client.fingerprint()]));
    let cfg = client_cfg().tls_client(ClientTls::pinned(server.fingerprint()).identity(client));
    stream_through_cuts(server_cfg, cfg, 25_000).await;
}

async fn stream_through_cuts(server_cfg: Config, client_cfg: Config, per_channel: u64) {
    let (exp, relay) = served(server_cfg).await;
    let relay = std::sync::Arc::new(relay);
    let down: Vec<_> = (0..2)
        .map(|i| {
            exp.export_sender::<(u64, Vec<u8>)>(&format!("down{i}"))
                .expect("export")
        })
        .collect();
    let up: Vec<_> = (0..2)
        .map(|i| {
            exp.export_receiver::<(u64, Vec<u8>)>(&format!("up{i}"), 32)
                .expect("export")
        })
        .collect();
    let client = Session::connect_with(relay.addr(), client_cfg)
        .await
        .expect("connect");
    let mut events = client.events();
    let mut tasks = Vec::new();
    for (i, tx) in down.into_iter().enumerate() {
        let mut rx = client
            .import_receiver::<(u64, Vec<u8>)>(&format!("down{i}"), 32)
            .await
            .expect("import");
        tasks.push(tokio::spawn(async move {
            for n in 0..per_channel {
                tx.send((n, vec![n as u8; 100])).await.expect("send down");
            }
        }));
        tasks.push(tokio::spawn(async move {
            for n in 0..per_channel {
                let (got, body) = rx.recv().await.expect("recv down").expect("a value");
                assert_eq!(got, n, "down{i}: values in order, none lost, none twice");
                assert_eq!(body, vec![n as u8; 100]);
            }
        }));
    }
    for (i, mut rx) in up.into_iter().enumerate() {
        let tx = client
            .import_sender::<(u64, Vec<u8>)>(&format!("up{i}"))
            .await
            .expect("import");
        tasks.push(tokio::spawn(async move {
            for n in 0..per_channel {
                tx.send((n, vec![n as u8; 100])).await.expect("send up");
            }
        }));
        tasks.push(tokio::spawn(async move {
            for n in 0..per_channel {
                let (got, body) = rx.recv().await.expect("recv up").expect("a value");
                assert_eq!(got, n, "up{i}: values in order, none lost, none twice");
                assert_eq!(body, vec![n as u8; 100]);
            }
        }));
    }
    let (stop, cuts) = cutter(relay.clone(), Duration::from_millis(100));
    // The replay log stays within the credit windows while cuts happen.
    let mut most_held = 0;
    within(
        "every value through the cuts",
        Duration::from_secs(240),
        async {
            for t in tasks {
                while !t.is_finished() {
                    most_held = most_held.max(client.stats().replay_bytes);
                    for s in exp.sessions() {
                        most_held = most_held.max(s.stats().replay_bytes);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                t.await.expect("stream task");
            }
        },
    )
    .await;
    let _ = stop.send(());
    let cuts = cuts.await.expect("cutter");
    let stats = client.stats();
    eprintln!(
        "{} values through {cuts} cuts, {} resumes, at most {most_held} replay bytes held",
        4 * per_channel,
        stats.resumes
    );
    assert!(cuts >= 3, "the stream outlived several cuts ({cuts})");
    assert!(
        stats.resumes >= 3,
        "the session resumed after the cuts ({} resumes, {cuts} cuts)",
        stats.resumes
    );
    // Two channels of 32 values of ~110 bytes each way, plus the frames
    // one acknowledgement delay lets through: far below what was sent
    // (10 MB).
    assert!(
        most_held < 256 << 10,
        "the replay log stayed bounded: at most {most_held} bytes held"
    );
    let mut saw = Vec::new();
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(10), events.next()).await {
        saw.push(ev);
    }
    assert!(
        saw.iter()
            .any(|e| matches!(e, SessionEvent::Disconnected(_))),
        "events: {saw:?}"
    );
    assert!(
        saw.iter().any(|e| matches!(e, SessionEvent::Resumed)),
        "events: {saw:?}"
    );
    assert!(
        !saw.iter().any(|e| matches!(e, SessionEvent::Lost(_))),
        "events: {saw:?}"
    );
    client.close().await;
}

/// A session whose dialer cannot come back within the exporter's grace
/// period is lost on both sides: the exporter's session ends with an
/// error, the dialer's resume is refused, its receivers get the error and
/// a send gives its value back.
async fn a_session_not_resumed_within_the_grace_period_is_lost_with_its_values_given_back(
    over: Over,
) {
    let (exp, relay) =
        served(over.server(Config::default().resume_grace(Duration::from_millis(300)))).await;
    let down = exp.export_sender::<u64>("down").expect("export");
    let mut up = exp.export_receiver::<u64>("up", 4).expect("export");
    let client = Session::connect_with(relay.addr(), over.client())
        .await
        .expect("connect");
    let mut events = client.events();
    let mut rx = client
        .import_receiver::<u64>("down", 4)
        .await
        .expect("import");
    let tx = client.import_sender::<u64>("up").await.expect("import");
    down.send(1).await.expect("send");
    assert_eq!(rx.recv().await.expect("recv"), Some(1));
    tx.send(7).await.expect("send");
    assert_eq!(up.recv().await.expect("recv"), Some(7));
    let server = exp.sessions().pop().expect("one session");
    let mut server_events = server.events();

    relay.block(true);
    relay.cut();
    within(
        "the exporter's session to be lost",
        Duration::from_secs(10),
        async {
            let saw = events_until_lost(&mut server_events).await;
            assert!(
                matches!(saw.first(), Some(SessionEvent::Disconnected(_))),
                "{saw:?}"
            );
            assert!(matches!(saw.last(), Some(SessionEvent::Lost(_))), "{saw:?}");
        },
    )
    .await;
    // The dialer keeps trying meanwhile; once it gets through, the
    // exporter no longer knows the session and refuses it.
    relay.block(false);
    within(
        "the dialer's session to be lost",
        Duration::from_secs(10),
        async {
            let saw = events_until_lost(&mut events).await;
            assert!(
                matches!(saw.first(), Some(SessionEvent::Disconnected(_))),
                "{saw:?}"
            );
            assert!(
                saw.iter()
                    .any(|e| matches!(e, SessionEvent::Reconnecting { .. })),
                "{saw:?}"
            );
            match saw.last() {
                Some(SessionEvent::Lost(e)) => {
                    let text = e.to_string();
                    assert!(text.contains("refused to resume"), "{text}");
                }
                other => panic!("expected Lost, got {other:?} after {saw:?}"),
            }
        },
    )
    .await;
    assert!(rx.recv().await.is_err(), "the receiver gets the error");
    let refused = tx.send(8).await.expect_err("the session is lost");
    assert_eq!(refused.0, 8, "the value comes back");
    let e: Error = client.closed().await;
    assert!(
        !matches!(e, Error::Closed),
        "a lost session is not a clean end: {e}"
    );
}

over_tcp_and_tls!(a_session_not_resumed_within_the_grace_period_is_lost_with_its_values_given_back);

/// A resume that names a session the exporter does not know is refused
/// with a refusal hello, and the exporter goes on serving.
#[tokio::test]
async fn a_resume_with_a_wrong_token_is_refused() {
    use netchan::proto::hello::{FLAG_REFUSED, FLAG_RESUMABLE, FLAG_RESUME, HELLO_LEN, ResumeInfo};
    use netchan::proto::{CodecId, Hello, PROTOCOL_VERSION};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let exp = Exporter::bind("127.0.0.1:0").await.expect("bind");
    let mut s = tokio::net::TcpStream::connect(exp.local_addr())
        .await
        .expect("connect");
    let hello = Hello {
        version: PROTOCOL_VERSION,
        codec: CodecId::Bincode,
        max_message_len: 1 << 20,
        max_channels: 16,
        max_handles: 16,
    };
    let mut b = bytes::BytesMut::new();
    hello.encode_with(
        &ResumeInfo {
            flags: FLAG_RESUME,
            token: [0x5a; 16],
            position: 0,
        },
        &mut b,
    );
    s.write_all(&b).await.expect("write hello");
    let mut answer = vec![0u8; 2 * HELLO_LEN];
    within(
        "the refusal",
        Duration::from_secs(10),
        s.read_exact(&mut answer),
    )
    .await
    .expect("two hellos back");
    let mut answer = bytes::BytesMut::from(&answer[..]);
    // The exporter's hello, sent at once on every connection, offers a
    // session of its own; its answer to the resume follows.
    let (_, offer) = Hello::decode_with(&mut answer, &hello)
        .expect("a valid hello")
        .expect("whole");
    assert!(offer.is(FLAG_RESUMABLE), "an offer: {offer:?}");
    let (_, info) = Hello::decode_with(&mut answer, &hello)
        .expect("a valid hello")
        .expect("whole");
    assert!(info.is(FLAG_REFUSED), "refused: {info:?}");
    let mut rest = Vec::new();
    let n = within(
        "the close",
        Duration::from_secs(10),
        s.read_to_end(&mut rest),
    )
    .await
    .unwrap_or(0);
    assert_eq!(n, 0, "nothing follows the refusal");
    // The exporter still serves new sessions.
    let tx = exp.export_sender::<u8>("still").expect("export");
    let c = Session::connect(exp.local_addr()).await.expect("connect");
    let mut rx = c.import_receiver::<u8>("still", 1).await.expect("import");
    tx.send(3).await.expect("send");
    assert_eq!(rx.recv().await.expect("recv"), Some(3));
}

/// A resume hello that never reaches the server whole, on a path that
/// closes the client's direction at once: the server starts no session
/// on such a connection, the attempt fails, and the next attempt over a
/// whole path resumes the session with nothing lost.
async fn a_resume_through_a_path_closed_one_way_is_tried_again(over: Over) {
    let (exp, relay) = served(over.server(Config::default())).await;
    let mut rx = exp.export_receiver::<u32>("n", 4).expect("export");
    let client = Session::connect_with(relay.addr(), over.client())
        .await
        .expect("connect");
    let mut events = client.events();
    let tx = client.import_sender::<u32>("n").await.expect("import");
    tx.send(1).await.expect("send");
    assert_eq!(rx.recv().await.expect("recv"), Some(1));
    relay.one_way(2);
    relay.cut();
    let saw = within("the resume", Duration::from_secs(20), async {
        let mut saw = Vec::new();
        while let Some(ev) = events.next().await {
            let done = matches!(ev, SessionEvent::Resumed | SessionEvent::Lost(_));
            saw.push(ev);
            if done {
                return saw;
            }
        }
        panic!("the events ended: {saw:?}");
    })
    .await;
    assert!(
        matches!(saw.last(), Some(SessionEvent::Resumed)),
        "resumed, not lost: {saw:?}"
    );
    let attempts = saw
        .iter()
        .filter(|e| matches!(e, SessionEvent::Reconnecting { .. }))
        .count();
    assert!(
        attempts >= 3,
        "two attempts through the one-way path failed before one resumed: {saw:?}"
    );
    for v in 2..=5 {
        tx.send(v).await.expect("send after the resume");
    }
    for v in 2..=5 {
        assert_eq!(rx.recv().await.expect("recv"), Some(v), "once, in order");
    }
    assert_eq!(exp.sessions().len(), 1, "one session, resumed");
    client.close().await;
}

over_tcp_and_tls!(a_resume_through_a_path_closed_one_way_is_tried_again);

/// A server that answers a resume hello with a new session of its own (its
/// hello, then that session's goodbye) did not read the resume: only that
/// attempt failed, and the dialer tries again. Here the next attempt is
/// refused, and the session is lost with the refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_answered_by_a_new_session_fails_only_that_attempt() {
    use bytes::BytesMut;
    use netchan::proto::hello::HELLO_LEN;
    use netchan::proto::{CodecId, Connection, Event, Frame, Limits};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let now = std::time::Instant::now;
        let fresh_hello = || {
            let mut c =
                Connection::accept_resumable(Limits::default(), CodecId::Bincode, now(), [9; 16]);
            let mut b = BytesMut::new();
            c.take_transmit(&mut b, now());
            b
        };
        // 1: a resumable session, then the connection breaks.
        let (mut s, _) = listener.accept().await.expect("accept 1");
        let mut c =
            Connection::accept_resumable(Limits::default(), CodecId::Bincode, now(), [5; 16]);
        let mut out = BytesMut::new();
        c.take_transmit(&mut out, now());
        s.write_all(&out).await.expect("hello");
        let mut buf = BytesMut::new();
        loop {
            s.read_buf(&mut buf).await.expect("the dialer's hello");
            if let Some(Event::Ready(_)) = c.poll_input(&mut buf, now()).expect("valid") {
                break;
            }
        }
        assert!(c.is_resumable(), "the dialer asked for a resumable session");
        drop(s);
        // 2: the resume hello, answered by a new session's hello and goodbye.
        let (mut s, _) = listener.accept().await.expect("accept 2");
        let mut resume = vec![0u8; HELLO_LEN];
        s.read_exact(&mut resume).await.expect("the resume hello");
        let mut out = fresh_hello();
        Frame::Goodbye {
            reason: "connection lost: peer closed the connection without a goodbye".into(),
        }
        .encode(&mut out);
        s.write_all(&out).await.expect("new session");
        // The dialer gives this link up and closes it.
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
        // 3: refused.
        let (mut s, _) = listener.accept().await.expect("accept 3");
        s.read_exact(&mut resume)
            .await
            .expect("the resume hello again");
        let mut out = fresh_hello();
        out.extend_from_slice(&Connection::refusal(&Limits::default(), CodecId::Bincode));
        s.write_all(&out).await.expect("refusal");
        let _ = s.shutdown().await;
    });
    let client = Session::connect_with(addr, client_cfg())
        .await
        .expect("connect");
    let mut events = client.events();
    let saw = within(
        "the session is lost",
        Duration::from_secs(20),
        events_until_lost(&mut events),
    )
    .await;
    within("the fake server", Duration::from_secs(5), server)
        .await
        .expect("the fake server saw three connections");
    let attempts: Vec<u32> = saw
        .iter()
        .filter_map(|e| match e {
            SessionEvent::Reconnecting { attempt } => Some(*attempt),
            _ => None,
        })
        .collect();
    // The first events may come before `events()` subscribed: the
    // server breaks the first connection at once.
    assert_eq!(
        attempts.last(),
        Some(&2),
        "the unanswered attempt, then another: {saw:?}"
    );
    match saw.last() {
        Some(SessionEvent::Lost(Error::Protocol { error, .. })) => assert_eq!(
            *error,
            netchan::proto::ProtoError::ResumeRefused,
            "lost by the refusal, not by the new session's goodbye: {saw:?}"
        ),
        other => panic!("expected Lost(ResumeRefused), got {other:?} in {saw:?}"),
    }
}

/// A server that restarted does not know the session: the dialer's
/// session is lost, and a fresh `Session::connect` to the new server
/// works.
async fn a_server_restart_loses_the_session_and_a_fresh_connect_works(over: Over) {
    let (exp, relay) = served(over.server(Config::default())).await;
    let _tx = exp.export_sender::<u64>("jobs").expect("export");
    let client = Session::connect_with(relay.addr(), over.client())
        .await
        .expect("connect");
    let mut events = client.events();
    let mut rx = client
        .import_receiver::<u64>("jobs", 4)
        .await
        .expect("import");
    // The server dies without a word: the network goes first, then the
    // process (its sessions cannot say goodbye).
    relay.block(true);
    relay.cut();
    exp.shutdown().await;
    drop(exp);
    let exp2 = Exporter::bind_with("127.0.0.1:0", over.server(Config::default()))
        .await
        .expect("rebind");
    let jobs2 = exp2.export_sender::<u64>("jobs").expect("export");
    relay.set_upstream(exp2.local_addr());
    relay.block(false);
    let saw = within(
        "the session to be lost",
        Duration::from_secs(20),
        events_until_lost(&mut events),
    )
    .await;
    let Some(SessionEvent::Lost(lost)) = saw.last() else {
        panic!("the events ended without Lost: {saw:?}");
    };
    assert!(lost.to_string().contains("refused to resume"), "{lost}");
    assert!(rx.recv().await.is_err(), "the receiver gets the error");
    let fresh = Session::connect_with(relay.addr(), over.dialer(Config::default()))
        .await
        .expect("a fresh connect");
    let mut rx2 = fresh
        .import_receiver::<u64>("jobs", 4)
        .await
        .expect("import");
    jobs2.send(42).await.expect("send");
    assert_eq!(rx2.recv().await.expect("recv"), Some(42));
}

over_tcp_and_tls!(a_server_restart_loses_the_session_and_a_fresh_connect_works);

#[netchan::service]
pub trait Work {
    /// Answers `x` after `ms` milliseconds.
    async fn later(&self, ms: u64, x: u64) -> u64;
    /// `n` pseudo-random bytes from `seed` through a pipe.
    async fn bytes(&self, n: usize, seed: u64) -> netchan::Pipe;
    /// The numbers `0..n` on a private channel carried in the answer.
    async fn count(&self, n: u64) -> netchan::Receiver<u64>;
}

struct WorkImpl;

/// The pseudo-random byte stream of `seed` (xorshift), `n` bytes.
fn stream_of(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// FNV-1a of `b`.
fn checksum(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &c| {
        (h ^ u64::from(c)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Work for WorkImpl {
    async fn later(&self, ms: u64, x: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        x
    }

    async fn bytes(&self, n: usize, seed: u64) -> netchan::Pipe {
        use tokio::io::AsyncWriteExt;
        let (mut mine, theirs) = netchan::pipe();
        tokio::spawn(async move {
            let data = stream_of(seed, n);
            // Small writes, so that cuts land between and inside them.
            for piece in data.chunks(10_000) {
                if mine.write_all(piece).await.is_err() {
                    return;
                }
            }
            let _ = mine.shutdown().await;
        });
        theirs
    }

    async fn count(&self, n: u64) -> netchan::Receiver<u64> {
        let (tx, rx) = netchan::channel(4);
        tokio::spawn(async move {
            for i in 0..n {
                if tx.send(i).await.is_err() {
                    return;
                }
            }
        });
        rx
    }
}

/// RPC calls in flight, pipe transfers and channels carried inside
/// answers all carry on through a cut every 100 ms: every call gets its
/// own answer, every pipe's bytes arrive whole (checksummed), every
/// carried channel delivers each value once in order, and `drain` waits
/// across the resumes.
async fn calls_pipes_and_carried_channels_carry_on_through_cuts(over: Over) {
    use tokio::io::AsyncReadExt;
    let (exp, relay) = served(over.server(Config::default())).await;
    let relay = std::sync::Arc::new(relay);
    exp.serve_each(|_| WorkServer::new(WorkImpl));
    let mut sink = exp.export_receiver::<u64>("sink", 8).expect("export");
    let client = Session::connect_with(relay.addr(), over.client())
        .await
        .expect("connect");
    let work = WorkClient::new(&client);
    let to_sink = client.import_sender::<u64>("sink").await.expect("import");
    let (stop, cuts) = cutter(relay.clone(), Duration::from_millis(100));

    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let work = work.clone();
        tasks.push(tokio::spawn(async move {
            let got = work.later(5 + i % 30, i).await.expect("call answered");
            assert_eq!(got, i, "each call gets its own answer");
        }));
    }
    for seed in 1..=4u64 {
        let work = work.clone();
        tasks.push(tokio::spawn(async move {
            const N: usize = 3 << 20;
            let mut pipe = work.bytes(N, seed).await.expect("a pipe");
            let mut got = Vec::with_capacity(N);
            pipe.read_to_end(&mut got).await.expect("the whole stream");
            assert_eq!(got.len(), N, "pipe {seed}: every byte");
            assert_eq!(
                checksum(&got),
                checksum(&stream_of(seed, N)),
                "pipe {seed}: the same bytes"
            );
        }));
    }
    for k in 0..20u64 {
        let work = work.clone();
        tasks.push(tokio::spawn(async move {
            let mut rx = work.count(2_000).await.expect("a channel");
            for i in 0..2_000 {
                assert_eq!(
                    rx.recv().await.expect("recv"),
                    Some(i),
                    "carried channel {k}"
                );
            }
            assert_eq!(rx.recv().await.expect("recv"), None, "then a clean end");
        }));
    }
    let sinking = tokio::spawn(async move {
        let mut n = 0;
        while let Ok(Some(v)) = sink.recv().await {
            assert_eq!(v, n, "sink: once, in order");
            n += 1;
            if n == 5_000 {
                break;
            }
        }
        n
    });
    within(
        "everything through the cuts",
        Duration::from_secs(120),
        async {
            for i in 0..5_000u64 {
                to_sink.send(i).await.expect("send to sink");
            }
            client
                .drain(Some(Duration::from_secs(60)))
                .await
                .expect("drain waits across resumes");
            for t in tasks {
                t.await.expect("task");
            }
            assert_eq!(sinking.await.expect("sink"), 5_000);
        },
    )
    .await;
    let _ = stop.send(());
    let cuts = cuts.await.expect("cutter");
    let resumes = client.stats().resumes;
    eprintln!("calls, pipes and carried channels through {cuts} cuts, {resumes} resumes");
    assert!(resumes >= 3, "{resumes} resumes in {cuts} cuts");
    client.close().await;
}

over_tcp_and_tls!(calls_pipes_and_carried_channels_carry_on_through_cuts);

/// Captures the text of every `tracing` event at `info` or above, with
/// its level, from every test of this binary: a global subscriber, since
/// one set per thread can miss events while other tests run in parallel
/// (callsite interest is cached process-wide). Each test looks for its
/// own lines by the address its session dialled.
#[derive(Clone, Default)]
struct Capture(std::sync::Arc<std::sync::Mutex<Vec<(tracing::Level, String)>>>);

impl Capture {
    /// The process-wide capture, installed on first use.
    fn global() -> Capture {
        use tracing_subscriber::layer::SubscriberExt;
        static CAPTURE: std::sync::OnceLock<Capture> = std::sync::OnceLock::new();
        CAPTURE
            .get_or_init(|| {
                let capture = Capture::default();
                let subscriber = tracing_subscriber::registry().with(capture.clone());
                tracing::subscriber::set_global_default(subscriber)
                    .expect("no other global subscriber in this test binary");
                capture
            })
            .clone()
    }

    fn has(&self, level: tracing::Level, what: &[&str]) -> bool {
        let logged = self.0.lock().unwrap_or_else(|p| p.into_inner());
        logged
            .iter()
            .any(|(l, t)| *l == level && what.iter().all(|w| t.contains(w)))
    }
}

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn enabled(
        &self,
        metadata: &tracing::Metadata<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        *metadata.level() <= tracing::Level::INFO
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut text = String::new();
        event.record(&mut Fields(&mut text));
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((*event.metadata().level(), text));
    }
}

/// A break, each redial and the resume are logged on the dialling side:
/// the break at `warn` with its reason, each attempt and the resume at
/// `info`, each line naming the peer.
async fn a_break_each_attempt_and_the_resume_are_logged(over: Over) {
    let capture = Capture::global();
    let (exp, relay) = served(over.server(Config::default())).await;
    let tx = exp.export_sender::<u32>("n").expect("export");
    let client = Session::connect_with(relay.addr(), over.client())
        .await
        .expect("connect");
    let mut events = client.events();
    let mut rx = client.import_receiver::<u32>("n", 4).await.expect("import");
    relay.cut();
    within("the resume", Duration::from_secs(20), async {
        while let Some(ev) = events.next().await {
            if matches!(ev, SessionEvent::Resumed) {
                return;
            }
        }
        panic!("the events ended without Resumed");
    })
    .await;
    tx.send(9).await.expect("send after the resume");
    assert_eq!(rx.recv().await.expect("recv"), Some(9));
    // The dialer's lines name the relay's address as its peer.
    let peer = format!("peer={}", relay.addr());
    assert!(
        capture.has(
            tracing::Level::WARN,
            &["connection broken", "reason=", &peer]
        ),
        "the break at warn"
    );
    assert!(
        capture.has(tracing::Level::INFO, &["reconnecting", "attempt=1", &peer]),
        "the first attempt at info"
    );
    assert!(
        capture.has(
            tracing::Level::INFO,
            &["session resumed", "side=Dialer", &peer]
        ),
        "the resume at info"
    );
}

over_tcp_and_tls!(a_break_each_attempt_and_the_resume_are_logged);

/// An exporter's work sharing keeps the values it gave an importer whose
/// connection broke for that importer: they arrive after the resume, the
/// other importer never gets them, and every value arrives exactly once.
async fn values_given_to_a_suspended_importer_wait_for_it_and_arrive_once(over: Over) {
    const N: u64 = 4_000;
    let (exp, relay) = served(over.server(Config::default())).await;
    let jobs = exp.export_sender::<u64>("jobs").expect("export");
    let a = Session::connect_with(relay.addr(), over.client())
        .await
        .expect("connect a");
    let b = Session::connect_with(exp.local_addr(), over.dialer(Config::default()))
        .await
        .expect("connect b");
    let mut ra = a.import_receiver::<u64>("jobs", 8).await.expect("import a");
    let mut rb = b.import_receiver::<u64>("jobs", 8).await.expect("import b");
    let sending = tokio::spawn(async move {
        for i in 0..N {
            jobs.send(i).await.expect("send job");
        }
    });
    let got_b = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Ok(Some(v)) = rb.recv().await {
            got.push(v);
        }
        got
    });
    let mut got_a = Vec::new();
    within("the jobs", Duration::from_secs(60), async {
        // A takes a few, then its connection breaks and stays down a while
        // (the exporter keeps what it gave A), then A resumes.
        for _ in 0..50 {
            got_a.push(ra.recv().await.expect("recv a").expect("a job"));
        }
        relay.block(true);
        relay.cut();
        tokio::time::sleep(Duration::from_millis(300)).await;
        relay.block(false);
        sending.await.expect("sender");
        exp.hangup("jobs").expect("hangup");
        while let Some(v) = ra.recv().await.expect("recv a") {
            got_a.push(v);
        }
    })
    .await;
    let got_b = within("b's jobs", Duration::from_secs(30), got_b)
        .await
        .expect("b");
    assert!(got_a.windows(2).all(|w| w[0] < w[1]), "a: in order, once");
    assert!(got_b.windows(2).all(|w| w[0] < w[1]), "b: in order, once");
    let mut all: Vec<u64> = got_a.iter().chain(&got_b).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..N).collect::<Vec<_>>(), "every job exactly once");
    assert!(a.stats().resumes >= 1, "a resumed");
}

over_tcp_and_tls!(values_given_to_a_suspended_importer_wait_for_it_and_arrive_once);

/// A rendezvous (capacity 0) channel through cuts: every send completes,
/// only once its value was taken, and every value arrives once in order.
async fn a_rendezvous_channel_carries_on_through_cuts(over: Over) {
    const N: u64 = 300;
    let (exp, relay) = served(over.server(Config::default())).await;
    let relay = std::sync::Arc::new(relay);
    let tx = exp.export_sender::<u64>("meet").expect("export");
    let client = Session::connect_with(relay.addr(), over.client())
        .await
        .expect("connect");
    let mut rx = client
        .import_receiver::<u64>("meet", 0)
        .await
        .expect("import");
    let taken = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let t2 = taken.clone();
    let receiving = tokio::spawn(async move {
        for i in 0..N {
            assert_eq!(rx.recv().await.expect("recv"), Some(i), "once, in order");
            t2.store(i + 1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let (stop, cuts) = cutter(relay.clone(), Duration::from_millis(25));
    within("every rendezvous", Duration::from_secs(60), async {
        for i in 0..N {
            tx.send(i).await.expect("send");
            // Capacity 0: a send completes on its take, so when send i
            // completes every earlier value was taken (the counter lags
            // the take of value i itself by a task switch).
            let t = taken.load(std::sync::atomic::Ordering::SeqCst);
            assert!(t >= i, "send {i} completed with only {t} values taken");
        }
        receiving.await.expect("receiver");
    })
    .await;
    let _ = stop.send(());
    let cuts = cuts.await.expect("cutter");
    assert!(cuts >= 1, "at least one cut during the exchange");
}

over_tcp_and_tls!(a_rendezvous_channel_carries_on_through_cuts);

/// A dialer that cannot get through gives up after its policy's limit:
/// the session is lost with an error that says so, its receivers get the
/// error and `drain` counts what was never confirmed.
async fn a_dialer_that_cannot_get_through_gives_up_and_the_session_is_lost(over: Over) {
    let (exp, relay) = served(over.server(Config::default())).await;
    let mut sink = exp.export_receiver::<u64>("sink", 4).expect("export");
    let policy = Reconnect::default()
        .initial_delay(Duration::from_millis(10))
        .max_delay(Duration::from_millis(50))
        .give_up_after(Some(Duration::from_millis(500)));
    let client = Session::connect_with(
        relay.addr(),
        over.dialer(Config::default().reconnect(policy)),
    )
    .await
    .expect("connect");
    let mut events = client.events();
    let tx = client.import_sender::<u64>("sink").await.expect("import");
    tx.send(1).await.expect("send");
    assert_eq!(sink.recv().await.expect("recv"), Some(1));
    client
        .drain(Some(Duration::from_secs(10)))
        .await
        .expect("the first value confirmed");
    relay.block(true);
    relay.cut();
    // Sent while the connection is down: never confirmed.
    tx.send(2)
        .await
        .expect("a send within the credit while suspended");
    let saw = within(
        "the session to be lost",
        Duration::from_secs(20),
        events_until_lost(&mut events),
    )
    .await;
    let attempts = saw
        .iter()
        .filter(|e| matches!(e, SessionEvent::Reconnecting { .. }))
        .count();
    assert!(attempts >= 2, "it kept trying: {saw:?}");
    match saw.last() {
        Some(SessionEvent::Lost(e)) => {
            assert!(e.to_string().contains("gave up reconnecting"), "{e}")
        }
        other => panic!("expected Lost, got {other:?}"),
    }
    match client.drain(Some(Duration::from_secs(5))).await {
        Err(Error::Undelivered { count, .. }) => assert_eq!(count, 1, "the value sent while down"),
        other => panic!("drain must count the unconfirmed value: {other:?}"),
    }
    let refused = tx.send(3).await.expect_err("the session is lost");
    assert_eq!(refused.0, 3, "the value comes back");
}

over_tcp_and_tls!(a_dialer_that_cannot_get_through_gives_up_and_the_session_is_lost);
