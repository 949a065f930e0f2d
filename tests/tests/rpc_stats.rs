//! Per-method RPC stats (`SessionStats::methods`), end to end over the
//! in-memory pair and over TCP: calls counted on both sides, errors by
//! kind (a panicking handler, a deadline, an unknown service), calls in
//! flight, and latency percentiles.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use netchan::{CallSide, Exporter, MethodStats, RpcError, Session};

#[netchan::service]
pub trait Work {
    /// Adds two numbers.
    async fn add(&self, a: u64, b: u64) -> u64;
    /// Sleeps `ms`, then answers.
    async fn sleep(&self, ms: u64) -> u64;
    /// Panics.
    async fn boom(&self) -> u64;
}

struct Worker;
impl Work for Worker {
    async fn add(&self, a: u64, b: u64) -> u64 {
        a + b
    }
    async fn sleep(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
    async fn boom(&self) -> u64 {
        panic!("boom")
    }
}

/// Not served anywhere.
#[netchan::service]
pub trait Nobody {
    async fn hello(&self) -> u64;
}

#[derive(Clone, Copy, Debug)]
enum Transport {
    Memory,
    Tcp,
}

/// Both ends of one session whose server end serves `Work`.
struct Setup {
    client: Session,
    server: Session,
    _exporter: Option<Exporter>,
}

async fn setup(t: Transport) -> Setup {
    match t {
        Transport::Memory => {
            let (server, client) = Session::pair();
            server.serve(WorkServer::new(Worker));
            Setup {
                client,
                server,
                _exporter: None,
            }
        }
        Transport::Tcp => {
            let exp = Exporter::bind("127.0.0.1:0").await.expect("bind");
            let seen: Arc<Mutex<Vec<Session>>> = Arc::default();
            let s = seen.clone();
            exp.serve_each(move |session: &Session| {
                s.lock().unwrap().push(session.clone());
                WorkServer::new(Worker)
            });
            let client = Session::connect(exp.local_addr()).await.expect("connect");
            let server = seen.lock().unwrap().pop().expect("the server's session");
            Setup {
                client,
                server,
                _exporter: Some(exp),
            }
        }
    }
}

fn method(s: &Session, name: &str, side: CallSide) -> MethodStats {
    s.stats()
        .method("Work", name, side)
        .cloned()
        .unwrap_or_else(|| panic!("no stats for Work::{name} on the {side:?} side"))
}

/// Waits until `cond` holds for the stats of `name` on `side` (the server
/// records a call after its reply left, so just after the client saw it).
async fn eventually(s: &Session, name: &str, side: CallSide, cond: impl Fn(&MethodStats) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if s.stats().method("Work", name, side).is_some_and(&cond) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stats of Work::{name} on the {side:?} side never matched: {:?}",
            s.stats().method("Work", name, side)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn n_calls_are_counted_on_both_sides_with_ordered_latencies(t: Transport) {
    let s = setup(t).await;
    let work = WorkClient::new(&s.client);
    for i in 0..25 {
        assert_eq!(work.add(i, 1).await, Ok(i + 1));
    }
    let c = method(&s.client, "add", CallSide::Client);
    assert_eq!(
        (c.started, c.completed, c.errors.total(), c.in_flight),
        (25, 25, 0, 0)
    );
    eventually(&s.server, "add", CallSide::Server, |m| m.completed == 25).await;
    let srv = method(&s.server, "add", CallSide::Server);
    assert_eq!((srv.started, srv.errors.total(), srv.in_flight), (25, 0, 0));
    for m in [&c, &srv] {
        let l = m.latency;
        assert!(l.p50 > Duration::ZERO, "{m:?}");
        assert!(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.max, "{m:?}");
    }
    // A call takes longer than its handler alone: the caller's max covers
    // the server's.
    assert!(c.latency.max >= srv.latency.max, "{c:?} {srv:?}");
    // Methods never called have no entry; the client side does not serve.
    assert!(
        s.client
            .stats()
            .method("Work", "sleep", CallSide::Client)
            .is_none()
    );
    assert!(
        s.client
            .stats()
            .method("Work", "add", CallSide::Server)
            .is_none()
    );
}

async fn a_panicking_handler_counts_as_panicked_on_the_server_and_remote_on_the_client(
    t: Transport,
) {
    let s = setup(t).await;
    let work = WorkClient::new(&s.client);
    for _ in 0..3 {
        assert!(matches!(work.boom().await, Err(RpcError::Remote(_))));
    }
    let c = method(&s.client, "boom", CallSide::Client);
    assert_eq!(
        (c.started, c.completed, c.errors.remote, c.errors.total()),
        (3, 0, 3, 3)
    );
    eventually(&s.server, "boom", CallSide::Server, |m| {
        m.errors.panicked == 3
    })
    .await;
    let srv = method(&s.server, "boom", CallSide::Server);
    assert_eq!(
        (srv.completed, srv.errors.total(), srv.in_flight),
        (0, 3, 0)
    );
}

async fn a_timed_out_call_counts_as_timeout_and_ends_on_the_server(t: Transport) {
    let s = setup(t).await;
    let work = WorkClient::new(&s.client).with_timeout(Duration::from_millis(50));
    assert_eq!(work.sleep(10_000).await, Err(RpcError::Timeout));
    let c = method(&s.client, "sleep", CallSide::Client);
    assert_eq!(
        (c.started, c.errors.timeout, c.errors.total(), c.in_flight),
        (1, 1, 1, 0)
    );
    assert!(c.latency.max >= Duration::from_millis(50), "{c:?}");
    // The server's handler ends either way: its deadline passed, or the
    // client's cancellation came first.
    eventually(&s.server, "sleep", CallSide::Server, |m| m.in_flight == 0).await;
    let srv = method(&s.server, "sleep", CallSide::Server);
    assert_eq!(
        srv.errors.deadline_passed + srv.errors.cancelled,
        1,
        "{srv:?}"
    );
    assert_eq!(srv.completed, 0);
}

async fn calls_under_way_are_in_flight_until_they_end(t: Transport) {
    let s = setup(t).await;
    let work = WorkClient::new(&s.client);
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let w = work.clone();
            tokio::spawn(async move { w.sleep(300).await })
        })
        .collect();
    eventually(&s.client, "sleep", CallSide::Client, |m| m.in_flight == 3).await;
    eventually(&s.server, "sleep", CallSide::Server, |m| m.in_flight == 3).await;
    for c in calls {
        assert_eq!(c.await.expect("joined"), Ok(300));
    }
    assert_eq!(method(&s.client, "sleep", CallSide::Client).in_flight, 0);
    eventually(&s.server, "sleep", CallSide::Server, |m| {
        (m.in_flight, m.completed) == (0, 3)
    })
    .await;
}

async fn a_call_to_an_unserved_service_counts_no_such_service(t: Transport) {
    let s = setup(t).await;
    let nobody = NobodyClient::new(&s.client);
    assert!(matches!(
        nobody.hello().await,
        Err(RpcError::NoSuchService(_))
    ));
    let stats = s.client.stats();
    let m = stats
        .method("Nobody", "hello", CallSide::Client)
        .expect("counted");
    assert_eq!(
        (m.started, m.errors.no_such_service, m.in_flight),
        (1, 1, 0)
    );
}

async fn dropping_a_call_counts_it_cancelled_on_both_sides(t: Transport) {
    let s = setup(t).await;
    let work = WorkClient::new(&s.client);
    let call = tokio::spawn({
        let w = work.clone();
        async move { w.sleep(10_000).await }
    });
    eventually(&s.server, "sleep", CallSide::Server, |m| m.in_flight == 1).await;
    call.abort();
    let _ = call.await;
    let c = method(&s.client, "sleep", CallSide::Client);
    assert_eq!((c.errors.cancelled, c.in_flight), (1, 0));
    eventually(&s.server, "sleep", CallSide::Server, |m| {
        (m.errors.cancelled, m.in_flight) == (1, 0)
    })
    .await;
}

macro_rules! over_both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn over_memory() {
                    tokio::time::timeout(std::time::Duration::from_secs(30), super::$name(super::Transport::Memory))
                        .await
                        .expect("test timed out");
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn over_tcp() {
                    tokio::time::timeout(std::time::Duration::from_secs(30), super::$name(super::Transport::Tcp))
                        .await
                        .expect("test timed out");
                }
            }
        )*
    };
}

over_both!(
    n_calls_are_counted_on_both_sides_with_ordered_latencies,
    a_panicking_handler_counts_as_panicked_on_the_server_and_remote_on_the_client,
    a_timed_out_call_counts_as_timeout_and_ends_on_the_server,
    calls_under_way_are_in_flight_until_they_end,
    a_call_to_an_unserved_service_counts_no_such_service,
    dropping_a_call_counts_it_cancelled_on_both_sides,
);
