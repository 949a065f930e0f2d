//! Handshakes that never complete: a silent peer, a peer that stops
//! half-way through its hello, a server that accepts and never answers.
//! Each side gives up after its `handshake_timeout` (plus a margin) with
//! `HandshakeTimeout`, and leaves no task behind.

use std::time::Duration;

use futures::StreamExt;
use netchan::proto::MAGIC;
use netchan::{Config, Error, Exporter, Session};
use tokio::net::TcpListener;

use crate::chaos::{Flow, When};
use crate::common::*;
use crate::raw::*;

const TIMEOUT: Duration = Duration::from_millis(300);

fn handshake_timeout(what: &str, e: &Error) {
    assert!(
        matches!(e, Error::HandshakeTimeout { timeout, .. } if *timeout == TIMEOUT),
        "{what}: expected HandshakeTimeout({TIMEOUT:?}), got {e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_peer_never_sends_its_hello_gives_up_after_the_handshake_timeout() {
    let tasks = Tasks::baseline();
    for partial in [&[][..], &MAGIC[..5]] {
        let (s, mut raw) = RawPeer::against(Config::default().handshake_timeout(TIMEOUT)).await;
        if !partial.is_empty() {
            raw.send_raw(partial).await.expect("write");
        }
        let started = tokio::time::Instant::now();
        let e = within("ready fails", TIMEOUT + MARGIN, s.ready())
            .await
            .expect_err("the handshake cannot complete");
        handshake_timeout("ready", &e);
        assert!(started.elapsed() >= TIMEOUT - Duration::from_millis(50));
        fails_within("the session ends", &s, MARGIN).await;
        // The raw peer sees the session's hello, then (after a GOODBYE)
        // the end of stream.
        raw.recv_hello().await;
        raw.expect_goodbye(MARGIN).await;
        // Operations on the failed session fail at once.
        assert!(
            within("import", MARGIN, s.import_sender::<u32>("x"))
                .await
                .is_err()
        );
        drop(s);
    }
    tasks.settle("after stalled handshakes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_a_server_that_never_answers_fails_after_the_handshake_timeout() {
    let tasks = Tasks::baseline();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    // Accepts, reads nothing, writes nothing.
    let held = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.expect("accept");
        tokio::time::sleep(TIMEOUT + MARGIN + MARGIN).await;
        drop(sock);
    });
    let e = within(
        "connect fails",
        TIMEOUT + MARGIN,
        Session::connect_with(addr, Config::default().handshake_timeout(TIMEOUT)),
    )
    .await
    .expect_err("no hello ever comes");
    handshake_timeout("connect_with", &e);
    held.abort();
    let _ = held.await;
    tasks.settle("after a failed connect").await;
}

/// Meanwhile a real client is served: it imports `"x"` and receives a
/// value sent on `tx`; then the exporter shuts down.
async fn serves_a_real_client(exp: Exporter, tx: netchan::Sender<u32>) {
    let s = within("connect", STEP, Session::connect(exp.local_addr()))
        .await
        .expect("connect");
    let mut rx = s.import_receiver::<u32>("x", 1).await.expect("import");
    tx.send(1).await.expect("send");
    assert_eq!(rx.recv().await.expect("recv"), Some(1));
    drop(rx);
    s.close().await;
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exporter_drops_connections_whose_handshake_never_completes() {
    let tasks = Tasks::baseline();
    let exp = Exporter::bind_with("127.0.0.1:0", Config::default().handshake_timeout(TIMEOUT))
        .await
        .expect("bind");
    let mut errors = exp.errors();
    let tx = exp.export_sender::<u32>("x").expect("export");
    let mut silent = RawPeer::connect(exp.local_addr()).await;
    let mut partial = RawPeer::connect(exp.local_addr()).await;
    partial.send_raw(&MAGIC[..3]).await.expect("write");
    for raw in [&mut silent, &mut partial] {
        raw.recv_hello().await;
        raw.expect_goodbye(TIMEOUT + MARGIN).await;
    }
    for _ in 0..2 {
        match within("the exporter reports it", MARGIN, errors.next()).await {
            Some(e) => handshake_timeout("exporter", &e),
            None => panic!("errors() ended"),
        }
    }
    serves_a_real_client(exp, tx).await;
    drop((errors, silent, partial));
    tasks
        .settle("after stalled handshakes at an exporter")
        .await;
}

/// A connection whose dialer's direction ends before its hello is whole
/// (nothing sent, or part of a hello) starts no session: the exporter
/// sent its own hello at once, and then closes without a goodbye, reports
/// no error, and keeps no session for it. A dialer resuming through a
/// path that closed its direction then sees the end of stream and tries
/// again, instead of reading a new session's goodbye.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exporter_starts_no_session_on_a_connection_that_ends_before_its_hello() {
    let tasks = Tasks::baseline();
    let exp = Exporter::bind("127.0.0.1:0").await.expect("bind");
    let mut errors = exp.errors();
    let tx = exp.export_sender::<u32>("x").expect("export");
    for partial in [&[][..], &MAGIC[..5]] {
        let mut raw = RawPeer::connect(exp.local_addr()).await;
        raw.send_raw(partial).await.expect("write");
        raw.shutdown_write().await;
        raw.recv_hello().await;
        match raw.next_frame_within(STEP).await {
            Ok(None) => {}
            other => panic!(
                "after {} bytes and the end: expected the end of stream, no session, got {other:?}",
                partial.len()
            ),
        }
    }
    assert!(
        tokio::time::timeout(MARGIN, errors.next()).await.is_err(),
        "no error reported for connections that said nothing"
    );
    within("no session kept", STEP, async {
        while !exp.sessions().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    serves_a_real_client(exp, tx).await;
    drop(errors);
    tasks
        .settle("after connections that ended before their hello")
        .await;
}

/// The proxy cuts the connection in the middle of the dialer's hello:
/// both handshakes fail at once, each with a lost connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_inside_the_hello_fails_both_handshakes() {
    let tasks = Tasks::baseline();
    let cfg = Config::default().handshake_timeout(STEP);
    let p = proxied_with(cfg.clone(), cfg, None, |c| {
        c.cut(Flow::AToB, When::Offset(7))
    })
    .await;
    // The acceptor never gets a whole hello.
    let e = within("acceptor", MARGIN, p.b.ready())
        .await
        .expect_err("the handshake cannot complete");
    assert!(
        matches!(e, Error::ConnectionLost(_) | Error::Io(_)),
        "acceptor: {e:?}"
    );
    // The dialer may have read the acceptor's whole hello before the cut;
    // either way its session fails.
    let _ = within("dialer", MARGIN, p.a.ready()).await;
    let e = fails_within("the dialer fails", &p.a, MARGIN).await;
    assert!(
        matches!(e, Error::ConnectionLost(_) | Error::Io(_)),
        "dialer: {e:?}"
    );
    assert!(p.chaos.forwarded(Flow::AToB) <= 7);
    drop(p);
    tasks.settle("after a cut hello").await;
}
