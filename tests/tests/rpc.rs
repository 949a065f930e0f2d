//! `#[netchan::service]` end to end, over the in-memory pair and over TCP:
//! calls both ways on one connection, deadlines, cancellation seen by the
//! server, streaming results through channels and pipes, a disconnect in
//! the middle of a call, an unknown service, a result over the size limit;
//! `serve_each`'s one instance per session (made when the session starts,
//! dropped when it ends, served under its own name); a client that found
//! no service finds it once the peer serves it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netchan::{Config, Exporter, Pipe, Receiver, RpcError, Session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Served by the "server" end.
#[netchan::service]
pub trait Calc {
    /// Adds two numbers.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// Sleeps, then answers; counts starts and drops on the server.
    async fn slow(&self, ms: u64) -> u64;
    /// Streams `n` numbers through a channel.
    async fn count(&self, n: u32) -> Receiver<u32>;
    /// Streams `n` bytes through a pipe.
    async fn bytes(&self, n: usize) -> Pipe;
    /// A result of `n` bytes.
    async fn blob(&self, n: usize) -> Vec<u8>;
    /// Asks the caller for its name over the caller's own connection.
    async fn greet(&self) -> Result<String, String>;
}

/// Served by the "client" end, called back by the server.
#[netchan::service]
pub trait Name {
    /// Who is calling.
    async fn name(&self) -> String;
}

#[derive(Default)]
struct Counters {
    started: AtomicUsize,
    dropped: AtomicUsize,
}

struct CalcImpl {
    counters: Arc<Counters>,
    peer: Option<NameClient>,
}

struct OnDrop(Arc<Counters>);
impl Drop for OnDrop {
    fn drop(&mut self) {
        self.0.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

impl Calc for CalcImpl {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }

    async fn slow(&self, ms: u64) -> u64 {
        self.counters.started.fetch_add(1, Ordering::SeqCst);
        let guard = OnDrop(self.counters.clone());
        tokio::time::sleep(Duration::from_millis(ms)).await;
        std::mem::forget(guard);
        ms
    }

    async fn count(&self, n: u32) -> Receiver<u32> {
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

    async fn bytes(&self, n: usize) -> Pipe {
        let (mut mine, theirs) = netchan::pipe();
        tokio::spawn(async move {
            let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            let _ = mine.write_all(&data).await;
            let _ = mine.shutdown().await;
        });
        theirs
    }

    async fn blob(&self, n: usize) -> Vec<u8> {
        vec![1; n]
    }

    async fn greet(&self) -> Result<String, String> {
        let peer = self.peer.as_ref().ok_or("no peer")?;
        let name = peer.name().await.map_err(|e| e.to_string())?;
        Ok(format!("hello, {name}"))
    }
}

struct Me;
impl Name for Me {
    async fn name(&self) -> String {
        "ada".into()
    }
}

#[derive(Clone, Copy, Debug)]
enum Transport {
    Memory,
    Tcp,
}

/// A client session whose peer serves `Calc` (one instance per session,
/// knowing its peer); the client serves `Name`.
struct Setup {
    client: Session,
    counters: Arc<Counters>,
    _exporter: Option<Exporter>,
    server: Option<Session>,
}

async fn setup(t: Transport, cfg: Config) -> Setup {
    let counters = Arc::new(Counters::default());
    let setup = match t {
        Transport::Memory => {
            let (server, client) = Session::pair_with(cfg);
            server.serve(CalcServer::new(CalcImpl {
                counters: counters.clone(),
                peer: Some(NameClient::new(&server)),
            }));
            Setup {
                client,
                counters: counters.clone(),
                _exporter: None,
                server: Some(server),
            }
        }
        Transport::Tcp => {
            let exp = Exporter::bind_with("127.0.0.1:0", cfg.clone())
                .await
                .expect("bind");
            let c = counters.clone();
            exp.serve_each(move |s: &Session| {
                CalcServer::new(CalcImpl {
                    counters: c.clone(),
                    peer: Some(NameClient::new(s)),
                })
            });
            let client = Session::connect_with(exp.local_addr(), cfg)
                .await
                .expect("connect");
            Setup {
                client,
                counters: counters.clone(),
                _exporter: Some(exp),
                server: None,
            }
        }
    };
    setup.client.serve(NameServer::new(Me));
    setup
}

async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("{what} timed out"))
}

async fn calls_both_ways_and_many_in_flight(t: Transport) {
    let s = setup(t, Config::default()).await;
    let calc = CalcClient::new(&s.client);
    assert_eq!(within("add", calc.add(2, 40)).await, Ok(42));
    // The server calls back into the client over the client's connection.
    assert_eq!(
        within("greet", calc.greet()).await,
        Ok(Ok("hello, ada".to_string()))
    );
    let calls = (0..200).map(|i| {
        let c = calc.clone();
        async move { c.add(i, 1).await }
    });
    let results = within("200 calls", futures::future::join_all(calls)).await;
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r, Ok(i as i64 + 1));
    }
}

async fn a_deadline_times_out_and_the_server_drops_the_handler(t: Transport) {
    let s = setup(t, Config::default()).await;
    let calc = CalcClient::new(&s.client).with_timeout(Duration::from_millis(100));
    assert_eq!(
        within("slow", calc.slow(60_000)).await,
        Err(RpcError::Timeout)
    );
    within("the handler is dropped", async {
        while s.counters.dropped.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

async fn dropping_a_call_cancels_it_on_the_server(t: Transport) {
    let s = setup(t, Config::default()).await;
    let calc = CalcClient::new(&s.client);
    let call = calc.slow(60_000);
    let _ = tokio::time::timeout(Duration::from_millis(200), call).await;
    assert_eq!(s.counters.started.load(Ordering::SeqCst), 1);
    within("the handler is dropped", async {
        while s.counters.dropped.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

async fn results_stream_through_channels_and_pipes(t: Transport) {
    let s = setup(t, Config::default()).await;
    let calc = CalcClient::new(&s.client);
    let mut rx = within("count", calc.count(100)).await.expect("call");
    let mut got = Vec::new();
    while let Some(v) = within("recv", rx.recv()).await.expect("recv") {
        got.push(v);
    }
    assert_eq!(got, (0..100).collect::<Vec<u32>>());
    let mut pipe = within("bytes", calc.bytes(1 << 20)).await.expect("call");
    let mut data = Vec::new();
    within("read", pipe.read_to_end(&mut data))
        .await
        .expect("read");
    assert_eq!(data.len(), 1 << 20);
    assert!(data.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
}

async fn a_disconnect_mid_call_is_disconnected(t: Transport) {
    let s = setup(t, Config::default()).await;
    let calc = CalcClient::new(&s.client);
    let pending = tokio::spawn({
        let calc = calc.clone();
        async move { calc.slow(60_000).await }
    });
    within("the call starts", async {
        while s.counters.started.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    match &s.server {
        Some(server) => server.close().await,
        None => s.client.close().await,
    }
    let r = within("the pending call", pending).await.expect("task");
    assert_eq!(r, Err(RpcError::Disconnected));
}

async fn an_unknown_service_is_named(t: Transport) {
    let s = setup(t, Config::default()).await;
    let other = CalcClient::named(&s.client, "calc.v2");
    assert_eq!(
        within("add", other.add(1, 1)).await,
        Err(RpcError::NoSuchService("calc.v2".into()))
    );
}

async fn a_result_over_the_size_limit_names_size_and_limit(t: Transport) {
    let s = setup(t, Config::default().max_message_len(64 << 10)).await;
    let calc = CalcClient::new(&s.client);
    match within("blob", calc.blob(1 << 20)).await {
        Err(RpcError::Codec(m)) => {
            assert!(m.contains("exceeds the limit of 65536"), "{m}");
        }
        other => panic!("expected a codec error, got {other:?}"),
    }
    // The connection is still fine.
    assert_eq!(within("add", calc.add(1, 2)).await, Ok(3));
}

async fn a_client_that_found_no_service_finds_it_once_served(t: Transport) {
    // The serving end (a session or an exporter) stays alive to the end.
    let (client, serving): (Session, Box<dyn Fn() + Send>) = match t {
        Transport::Memory => {
            let (server, client) = Session::pair();
            (client, Box::new(move || server.serve(NameServer::new(Me))))
        }
        Transport::Tcp => {
            let exp = Exporter::bind("127.0.0.1:0").await.expect("bind");
            let client = Session::connect(exp.local_addr()).await.expect("connect");
            (client, Box::new(move || exp.serve(NameServer::new(Me))))
        }
    };
    let name = NameClient::new(&client);
    assert_eq!(
        within("before serving", name.name()).await,
        Err(RpcError::NoSuchService("Name".into()))
    );
    serving();
    assert_eq!(
        within("after serving", name.name()).await,
        Ok("ada".to_string())
    );
    drop(serving);
}

/// A caller making one call at a time writes its request itself when the
/// connection's writer is idle, and a server answering the last of the
/// calls it has writes the reply itself: here those writes meet a large
/// result (written in chunks by the writer) and calls made together, on
/// the same connection. Every answer must arrive, whole and in order.
async fn calls_one_at_a_time_mixed_with_a_large_result_and_calls_together(t: Transport) {
    let s = setup(t, Config::default()).await;
    let calc = CalcClient::new(&s.client);
    let big = {
        let calc = calc.clone();
        tokio::spawn(async move {
            for round in 0..3usize {
                let n = (3 << 20) + round;
                let blob = calc.blob(n).await.expect("blob");
                assert_eq!(blob.len(), n);
                assert!(blob.iter().all(|&b| b == 1));
            }
        })
    };
    for i in 0..300i64 {
        assert_eq!(within("a call alone", calc.add(i, 1)).await, Ok(i + 1));
        if i % 50 == 0 {
            // A wave of calls made together, then alone again.
            let wave: Vec<_> = (0..16i64).map(|k| calc.add(i, k)).collect();
            let got = within("calls together", futures::future::join_all(wave)).await;
            for (k, r) in got.into_iter().enumerate() {
                assert_eq!(r, Ok(i + k as i64));
            }
        }
    }
    within("the large results", big).await.expect("big task");
}

#[tokio::test(flavor = "current_thread")]
async fn calls_one_at_a_time_mixed_with_a_large_result_on_one_thread() {
    calls_one_at_a_time_mixed_with_a_large_result_and_calls_together(Transport::Tcp).await;
}

macro_rules! over_both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn over_memory() {
                    super::$name(super::Transport::Memory).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn over_tcp() {
                    super::$name(super::Transport::Tcp).await;
                }
            }
        )*
    };
}

over_both!(
    calls_both_ways_and_many_in_flight,
    a_deadline_times_out_and_the_server_drops_the_handler,
    dropping_a_call_cancels_it_on_the_server,
    results_stream_through_channels_and_pipes,
    a_disconnect_mid_call_is_disconnected,
    an_unknown_service_is_named,
    a_result_over_the_size_limit_names_size_and_limit,
    a_client_that_found_no_service_finds_it_once_served,
    calls_one_at_a_time_mixed_with_a_large_result_and_calls_together,
);

/// Served with `serve_each`: says which instance answered.
#[netchan::service]
pub trait Whom {
    /// The number of the instance that answers.
    async fn instance(&self) -> u64;
}

/// The instances alive, by number; each leaves when it is dropped.
#[derive(Default)]
struct Registry {
    made: AtomicU64,
    alive: Mutex<HashSet<u64>>,
}

impl Registry {
    fn made(&self) -> u64 {
        self.made.load(Ordering::SeqCst)
    }

    fn alive(&self) -> usize {
        self.alive.lock().expect("registry").len()
    }
}

struct Instance {
    number: u64,
    registry: Arc<Registry>,
}

impl Instance {
    fn new(registry: &Arc<Registry>) -> Instance {
        let number = registry.made.fetch_add(1, Ordering::SeqCst) + 1;
        registry.alive.lock().expect("registry").insert(number);
        Instance {
            number,
            registry: registry.clone(),
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.registry
            .alive
            .lock()
            .expect("registry")
            .remove(&self.number);
    }
}

impl Whom for Instance {
    async fn instance(&self) -> u64 {
        self.number
    }
}

/// Polls `cond` until it holds; fails the test after 10 s.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// An exporter serving `Whom` per session under `name` (the default name
/// if `None`), and the registry of its instances.
async fn whom_exporter(name: Option<&'static str>) -> (Exporter, Arc<Registry>) {
    let exp = Exporter::bind("127.0.0.1:0").await.expect("bind");
    let registry = Arc::new(Registry::default());
    let r = registry.clone();
    exp.serve_each(move |_: &Session| match name {
        Some(name) => WhomServer::named(Instance::new(&r), name),
        None => WhomServer::new(Instance::new(&r)),
    });
    (exp, registry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_each_makes_one_instance_per_session_before_any_call() {
    let (exp, registry) = whom_exporter(None).await;
    let a = Session::connect(exp.local_addr()).await.expect("connect");
    // Made as the exporter accepted the session, before its handshake
    // completed, so before `connect` returned.
    assert_eq!(registry.made(), 1, "made before any call");
    let b = Session::connect(exp.local_addr()).await.expect("connect");
    assert_eq!(registry.made(), 2, "made before any call");
    assert_eq!(within("b", WhomClient::new(&b).instance()).await, Ok(2));
    assert_eq!(within("a", WhomClient::new(&a).instance()).await, Ok(1));
    assert_eq!(registry.made(), 2, "two sessions, two instances");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_each_shares_a_sessions_instance_among_all_its_clients() {
    let (exp, registry) = whom_exporter(None).await;
    let a = Session::connect(exp.local_addr()).await.expect("connect");
    let clients = [
        WhomClient::new(&a),
        WhomClient::new(&a),
        WhomClient::new(&a),
    ];
    let mut answers = Vec::new();
    for c in &clients {
        answers.push(within("instance", c.instance()).await.expect("call"));
    }
    assert_eq!(answers, [1, 1, 1], "every client reaches the same instance");
    assert_eq!(registry.made(), 1, "one session, one instance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_each_gives_sessions_already_accepted_an_instance_at_once() {
    let exp = Exporter::bind("127.0.0.1:0").await.expect("bind");
    let a = Session::connect(exp.local_addr()).await.expect("connect");
    assert_eq!(exp.sessions().len(), 1, "accepted");
    let registry = Arc::new(Registry::default());
    let r = registry.clone();
    exp.serve_each(move |_: &Session| WhomServer::new(Instance::new(&r)));
    assert_eq!(registry.made(), 1, "made when serve_each was called");
    let c = WhomClient::new(&a);
    assert_eq!(within("instance", c.instance()).await, Ok(1));
    assert_eq!(registry.made(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_each_drops_a_sessions_instance_when_the_client_disconnects() {
    let (exp, registry) = whom_exporter(None).await;
    let a = Session::connect(exp.local_addr()).await.expect("connect");
    let b = Session::connect(exp.local_addr()).await.expect("connect");
    assert_eq!(registry.alive(), 2, "both instances");
    // One with dispatchers running, one never called.
    let c = WhomClient::new(&a);
    let first = within("instance", c.instance()).await.expect("call");
    let _also = within("instance", WhomClient::new(&a).instance()).await;
    a.close().await;
    eventually("a's instance is dropped", || registry.alive() == 1).await;
    assert!(
        !registry.alive.lock().expect("registry").contains(&first),
        "the instance left is b's"
    );
    drop(b);
    eventually("b's instance is dropped", || registry.alive() == 0).await;
    assert_eq!(registry.made(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_each_serves_a_named_service_under_its_name() {
    let (exp, _registry) = whom_exporter(Some("whom.v2")).await;
    let a = Session::connect(exp.local_addr()).await.expect("connect");
    let named = WhomClient::named(&a, "whom.v2");
    assert_eq!(within("named", named.instance()).await, Ok(1));
    assert_eq!(
        within("default name", WhomClient::new(&a).instance()).await,
        Err(RpcError::NoSuchService("Whom".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_an_exporter_closes_sessions_whose_instance_holds_them() {
    let exp = Exporter::bind("127.0.0.1:0").await.expect("bind");
    let counters = Arc::new(Counters::default());
    exp.serve_each(move |s: &Session| {
        CalcServer::new(CalcImpl {
            counters: counters.clone(),
            // Holds the session, to call the peer back.
            peer: Some(NameClient::new(s)),
        })
    });
    let client = Session::connect(exp.local_addr()).await.expect("connect");
    drop(exp);
    let why = within("the session closes", client.closed()).await;
    assert!(matches!(why, netchan::Error::Closed), "{why:?}");
}
