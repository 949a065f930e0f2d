//! Errors and diagnostics that say what happened: the peer's address on a
//! session.

use std::time::Duration;

use netchan::{Config, Exporter, Session};

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
