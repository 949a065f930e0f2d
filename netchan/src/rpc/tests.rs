//! RPC runtime tests with a hand-written service (the macro's output has
//! the same shape; its own tests live in `ui-tests` and `tests`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{BoxFuture, Client, Service};
use crate::{RpcError, Session};

#[derive(Serialize, Deserialize)]
enum Req {
    Echo(String),
    Sleep(u64),
    Panic,
    Big(usize),
    /// Echoes after yielding once: never completes on its first poll.
    YieldEcho(String),
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Resp {
    Echo(String),
    Slept,
    Big(#[serde(with = "serde_bytes")] Vec<u8>),
}

#[derive(Clone, Default)]
struct Svc {
    cancelled: Arc<AtomicUsize>,
    started: Arc<AtomicUsize>,
}

struct CountDrop(Arc<AtomicUsize>);
impl Drop for CountDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Service for Svc {
    type Request = Req;
    type Response = Resp;
    const NAME: &'static str = "Svc";
    fn name(&self) -> &str {
        Self::NAME
    }
    fn call(&self, request: Req) -> BoxFuture<Resp> {
        let me = self.clone();
        Box::pin(async move {
            match request {
                Req::Echo(s) => Resp::Echo(s),
                Req::Sleep(ms) => {
                    me.started.fetch_add(1, Ordering::SeqCst);
                    let guard = CountDrop(me.cancelled.clone());
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    std::mem::forget(guard);
                    Resp::Slept
                }
                Req::Panic => panic!("boom"),
                Req::Big(n) => Resp::Big(vec![7; n]),
                Req::YieldEcho(s) => {
                    tokio::task::yield_now().await;
                    Resp::Echo(s)
                }
            }
        })
    }
}

fn client(s: &Session) -> Client<Req, Resp> {
    Client::new(s, "Svc")
}

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("test step timed out")
}

#[tokio::test]
async fn calls_return_the_handlers_result() {
    let (a, b) = Session::pair();
    a.serve(Svc::default());
    let c = client(&b);
    for i in 0..50 {
        let r = within(c.call(Req::Echo(format!("hi {i}")))).await;
        assert_eq!(r, Ok(Resp::Echo(format!("hi {i}"))));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_calls_in_flight_on_one_connection() {
    let (a, b) = Session::pair();
    a.serve(Svc::default());
    let c = client(&b);
    let calls = (0..200).map(|i| {
        let c = c.clone();
        async move { c.call(Req::Echo(i.to_string())).await }
    });
    let results = within(futures::future::join_all(calls)).await;
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r, Ok(Resp::Echo(i.to_string())));
    }
}

#[tokio::test]
async fn both_ends_serve_and_call_at_once() {
    let (a, b) = Session::pair();
    a.serve(Svc::default());
    b.serve(Svc::default());
    let (ca, cb) = (client(&a), client(&b));
    let (ra, rb) = within(futures::future::join(
        ca.call(Req::Echo("from a".into())),
        cb.call(Req::Echo("from b".into())),
    ))
    .await;
    assert_eq!(ra, Ok(Resp::Echo("from a".into())));
    assert_eq!(rb, Ok(Resp::Echo("from b".into())));
}

#[tokio::test]
async fn unknown_service_is_named_in_the_error() {
    let (_a, b) = Session::pair();
    let r = within(Client::<Req, Resp>::new(&b, "Nope").call(Req::Panic)).await;
    assert_eq!(r, Err(RpcError::NoSuchService("Nope".into())));
}

#[tokio::test]
async fn timeout_fails_the_call_and_drops_the_handler() {
    let (a, b) = Session::pair();
    let svc = Svc::default();
    a.serve(svc.clone());
    let c = client(&b).with_timeout(Duration::from_millis(50));
    let r = within(c.call(Req::Sleep(5_000))).await;
    assert_eq!(r, Err(RpcError::Timeout));
    within(async {
        while svc.cancelled.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn dropping_a_call_cancels_the_handler_on_the_server() {
    let (a, b) = Session::pair();
    let svc = Svc::default();
    a.serve(svc.clone());
    let c = client(&b);
    let call = c.call(Req::Sleep(60_000));
    let _ = tokio::time::timeout(Duration::from_millis(100), call).await;
    assert_eq!(svc.started.load(Ordering::SeqCst), 1);
    within(async {
        while svc.cancelled.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_panicking_handler_is_a_remote_error() {
    let (a, b) = Session::pair();
    a.serve(Svc::default());
    let r = within(client(&b).call(Req::Panic)).await;
    assert!(
        matches!(r, Err(RpcError::Remote(ref m)) if m.contains("boom")),
        "{r:?}"
    );
}

#[tokio::test]
async fn a_result_over_the_size_limit_is_a_clear_error() {
    let cfg = crate::Config::default().max_message_len(1 << 16);
    let (a, b) = Session::pair_with(cfg);
    a.serve(Svc::default());
    let r = within(client(&b).call(Req::Big(1 << 20))).await;
    assert!(
        matches!(r, Err(RpcError::Codec(ref m)) if m.contains("exceeds the limit of 65536")),
        "{r:?}"
    );
}

#[tokio::test]
async fn disconnect_mid_call_is_disconnected() {
    let (a, b) = Session::pair();
    a.serve(Svc::default());
    let c = client(&b);
    assert_eq!(
        within(c.call(Req::Echo("x".into()))).await,
        Ok(Resp::Echo("x".into()))
    );
    let pending = tokio::spawn({
        let c = c.clone();
        async move { c.call(Req::Sleep(60_000)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    a.close().await;
    let r = within(pending).await.unwrap();
    assert_eq!(r, Err(RpcError::Disconnected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_that_finish_at_once_leave_no_stale_entry_in_the_in_flight_table() {
    // A handler that completes on its first poll can finish on another
    // worker before the dispatcher records it; an entry recorded after
    // that would count against the limit forever, and with a limit of 2,
    // two such entries would stall every later call.
    let cfg = crate::Config::default().max_rpc_in_flight(2);
    let (a, b) = Session::pair_with(cfg);
    a.serve(Svc::default());
    let c = client(&b);
    // Half the calls answer on their first poll (answered by the
    // dispatcher itself), half wait once (each gets a task and an entry).
    for round in 0..500 {
        let calls = (0..4).map(|i| {
            let c = c.clone();
            let req = if (i + round) % 2 == 0 {
                Req::Echo(i.to_string())
            } else {
                Req::YieldEcho(i.to_string())
            };
            async move { c.call(req).await }
        });
        let results =
            tokio::time::timeout(Duration::from_secs(10), futures::future::join_all(calls))
                .await
                .unwrap_or_else(|_| panic!("round {round}: calls stalled at the in-flight limit"));
        for (i, r) in results.into_iter().enumerate() {
            assert_eq!(r, Ok(Resp::Echo(i.to_string())));
        }
    }
}

#[tokio::test]
async fn a_timeout_or_deadline_cap_of_duration_max_means_no_deadline() {
    let cfg = crate::Config::default().rpc_deadline_cap(Duration::MAX);
    let (a, b) = Session::pair_with(cfg);
    a.serve(Svc::default());
    let c = client(&b).with_timeout(Duration::MAX);
    let r = within(c.call(Req::Echo("forever".into()))).await;
    assert_eq!(r, Ok(Resp::Echo("forever".into())));
    let r = within(c.call(Req::Sleep(20))).await;
    assert_eq!(r, Ok(Resp::Slept));
}

/// A result type that refuses to decode one value and panics on another.
#[derive(Serialize, Debug, PartialEq)]
struct Picky(String);

impl<'de> Deserialize<'de> for Picky {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Picky, D::Error> {
        let s = String::deserialize(d)?;
        if s == "undecodable" {
            return Err(serde::de::Error::custom("Picky refuses this one"));
        }
        if s == "panic" {
            panic!("Picky panics on this one");
        }
        Ok(Picky(s))
    }
}

#[derive(Clone)]
struct Echoes;

impl Service for Echoes {
    type Request = String;
    type Response = Picky;
    const NAME: &'static str = "Echoes";
    fn name(&self) -> &str {
        Self::NAME
    }
    fn call(&self, request: String) -> BoxFuture<Picky> {
        Box::pin(async move { Picky(request) })
    }
}

/// Small replies reach their callers from the connection's reader; one
/// that does not decode there, and a large one, take the client's reply
/// task: the first is on the session's errors (its call times out), the
/// second arrives, and the calls after both are answered as before.
#[tokio::test]
async fn replies_that_do_not_decode_at_once_or_are_large_still_reach_their_caller_or_its_errors() {
    use futures::StreamExt;
    let (a, b) = Session::pair();
    a.serve(Echoes);
    let mut errors = b.errors();
    let c = Client::<String, Picky>::new(&b, "Echoes").with_timeout(Duration::from_millis(300));
    for i in 0..3 {
        let r = within(c.call(format!("small {i}"))).await;
        assert_eq!(r, Ok(Picky(format!("small {i}"))));
    }
    let r = within(c.call("undecodable".to_string())).await;
    assert_eq!(r, Err(RpcError::Timeout));
    let e = within(errors.next()).await.expect("an error");
    assert!(e.to_string().contains("Picky refuses this one"), "{e}");
    let large = "x".repeat(10_000);
    assert_eq!(within(c.call(large.clone())).await, Ok(Picky(large)));
    for i in 0..3 {
        let r = within(c.call(format!("after {i}"))).await;
        assert_eq!(r, Ok(Picky(format!("after {i}"))));
    }
}

/// A reply whose decoding panics fails its own call only: the panic is
/// on the session's errors, the connection's reader goes on, and the
/// calls after it are answered.
#[tokio::test]
async fn a_reply_whose_decoding_panics_fails_only_its_own_call() {
    use futures::StreamExt;
    let (a, b) = Session::pair();
    a.serve(Echoes);
    let mut errors = b.errors();
    let c = Client::<String, Picky>::new(&b, "Echoes").with_timeout(Duration::from_millis(300));
    assert_eq!(
        within(c.call("before".to_string())).await,
        Ok(Picky("before".into()))
    );
    assert_eq!(
        within(c.call("panic".to_string())).await,
        Err(RpcError::Timeout)
    );
    let e = within(errors.next()).await.expect("an error").to_string();
    assert!(
        e.contains("panicked") && e.contains("Picky panics on this one"),
        "{e}"
    );
    for i in 0..3 {
        let r = within(c.call(format!("after {i}"))).await;
        assert_eq!(r, Ok(Picky(format!("after {i}"))));
    }
}
