//! Errors and diagnostics that say what happened: the peer's address on a
//! session, and dial failures that name the address they could not reach.

use std::time::Duration;

use netchan::{Config, Error, Exporter, Session};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

// ------------------------------------------------------- the peer's address

/// The exporter's one session, once it is registered.
async fn only_session(exp: &Exporter) -> Session {
    within("the exporter registers the session", async {
        loop {
            if let Some(s) = exp.sessions().pop() {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_ends_of_a_tcp_session_know_each_others_address() {
    bounded(async {
        let exp = Exporter::bind("127.0.0.1:0").await.expect("bind");
        let client = within("connect", Session::connect(exp.local_addr()))
            .await
            .expect("connect");
        let server = only_session(&exp).await;
        let client_addr = client.local_addr().expect("the client's address");
        assert_eq!(client.peer_addr(), Some(exp.local_addr()));
        assert_eq!(server.peer_addr(), Some(client_addr));
        assert_eq!(server.local_addr(), Some(exp.local_addr()));
        let shown = format!("{client:?} {server:?}");
        assert!(
            shown.contains(&exp.local_addr().to_string())
                && shown.contains(&client_addr.to_string()),
            "Debug shows both addresses: {shown}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_without_a_socket_have_no_address() {
    bounded(async {
        let (a, b) = Session::pair();
        for s in [&a, &b] {
            assert_eq!(s.peer_addr(), None);
            assert_eq!(s.local_addr(), None);
        }
        let (x, y) = tcp_pair().await;
        let s = Session::connect_stream(x, Config::default());
        assert_eq!(s.peer_addr(), None, "a caller's stream is opaque");
        drop(y);
    })
    .await;
}

// --------------------------------------------------- dials that fail, named

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_a_closed_port_names_the_address_and_asks_for_an_exporter() {
    bounded(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let e = within("connect", Session::connect(addr))
            .await
            .expect_err("nothing listens there");
        let text = e.to_string();
        assert!(
            text.contains(&format!("cannot connect to {addr}: connection refused")),
            "{text}"
        );
        assert!(text.contains("exporter"), "{text}");
        // Still an I/O error of the same kind, for code that matches it.
        match e {
            Error::Io(io) => assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused),
            e => panic!("expected Io, got {e:?}"),
        }
    })
    .await;
}

/// A TCP server that accepts and never writes a byte (an HTTP server
/// waiting for its request looks like this to a netchan client).
async fn silent_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_speaks_is_named_and_asked_whether_it_is_an_exporter() {
    bounded(async {
        let (addr, server) = silent_server().await;
        let cfg = Config::default().handshake_timeout(Duration::from_millis(300));
        let e = within("connect", Session::connect_with(addr, cfg))
            .await
            .expect_err("no hello comes");
        let text = e.to_string();
        assert!(
            text.contains(&format!("no netchan hello from {addr} within 300ms")),
            "{text}"
        );
        assert!(
            text.contains("is a netchan exporter listening there?"),
            "{text}"
        );
        server.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_timeout_carries_the_peer_address_and_the_side() {
    bounded(async {
        let (addr, server) = silent_server().await;
        let timeout = Duration::from_millis(300);
        let cfg = Config::default().handshake_timeout(timeout);
        match within("connect", Session::connect_with(addr, cfg)).await {
            Err(Error::HandshakeTimeout {
                timeout: t,
                peer,
                side,
                ..
            }) => {
                assert_eq!(t, timeout);
                assert_eq!(peer, Some(addr));
                assert_eq!(side, netchan::proto::Side::Dialer);
            }
            other => panic!("expected HandshakeTimeout, got {other:?}"),
        }
        server.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exporter_names_a_client_that_never_speaks() {
    bounded(async {
        let cfg = Config::default().handshake_timeout(Duration::from_millis(300));
        let exp = Exporter::bind_with("127.0.0.1:0", cfg).await.expect("bind");
        let mut errors = exp.errors();
        let silent = TcpStream::connect(exp.local_addr()).await.expect("connect");
        let client = silent.local_addr().expect("addr");
        let e = next_error("the exporter gives up on the silent client", &mut errors).await;
        let text = e.to_string();
        assert!(
            text.contains(&format!("no netchan hello from {client} within 300ms")),
            "{text}"
        );
        assert!(text.contains("did not speak netchan"), "{text}");
        drop(silent);
    })
    .await;
}
