//! Channels and services over a real nats-server (feature `nats`).
//!
//! Every test starts its own server on a free loopback port with JetStream
//! in a temporary directory (see `server.rs`), and fails with what to
//! install when there is no nats-server. Run with
//! `cargo test -p netchan --features nats --test nats`.

mod procs;
mod rpc;
mod server;

use std::collections::HashSet;
use std::time::Duration;

use netchan::nats::{NatsConfig, Node};
use netchan::{Error, SendError, SendErrorKind};
use server::NatsServer;

/// Bounds every wait, so a broken test fails instead of hanging.
const LONG: Duration = Duration::from_secs(60);

async fn node(server: &NatsServer) -> Node {
    Node::connect(&server.url)
        .await
        .expect("connect to the test server")
}

async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(LONG, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_sent_on_nats_arrive_in_order_at_one_receiver() {
    let server = NatsServer::start();
    let a = node(&server).await;
    let b = node(&server).await;
    let tx = a.export_sender::<u32>("numbers").unwrap();
    let mut rx = b.import_receiver::<u32>("numbers", 16).await.unwrap();
    let send = tokio::spawn(async move {
        for i in 0..500u32 {
            tx.send(i).await.unwrap();
        }
    });
    for i in 0..500u32 {
        assert_eq!(within("a value", rx.recv()).await.unwrap(), Some(i));
    }
    send.await.unwrap();
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_value_goes_to_exactly_one_of_several_receivers() {
    let server = NatsServer::start();
    let producer = node(&server).await;
    let tx = producer.import_sender::<u32>("work").await.unwrap();
    let n = 3000u32;
    let (all_tx, mut all_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut workers = Vec::new();
    for _ in 0..3 {
        let w = node(&server).await;
        let mut rx = w.import_receiver::<u32>("work", 8).await.unwrap();
        let all = all_tx.clone();
        workers.push(w);
        tokio::spawn(async move {
            while let Ok(Some(v)) = rx.recv().await {
                let _ = all.send(v);
            }
        });
    }
    for i in 0..n {
        tx.send(i).await.unwrap();
    }
    let mut seen = HashSet::new();
    for _ in 0..n {
        let v = within("every value", all_rx.recv()).await.unwrap();
        assert!(seen.insert(v), "value {v} received twice");
    }
    assert_eq!(seen.len(), n as usize);
    // Nothing more comes: no duplicate after the last one.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), all_rx.recv())
            .await
            .is_err()
    );
    for w in &workers {
        w.close().await;
    }
    producer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_of_another_type_is_refused_at_import() {
    let server = NatsServer::start();
    let a = node(&server).await;
    let _tx = a.import_sender::<u32>("typed").await.unwrap();
    let e = a.import_receiver::<String>("typed", 4).await.unwrap_err();
    match e {
        Error::WrongType {
            name,
            expected,
            actual,
        } => {
            assert_eq!(name, "typed");
            assert_eq!(expected, "String");
            assert_eq!(actual, "u32");
        }
        other => panic!("expected WrongType, got {other:?}"),
    }
    // Another node sees the type the stream recorded, too.
    let b = node(&server).await;
    assert!(matches!(
        b.import_sender::<Vec<u8>>("typed").await,
        Err(Error::WrongType { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rendezvous_capacity_is_refused_with_a_clear_error() {
    let server = NatsServer::start();
    let a = node(&server).await;
    let e = a.import_receiver::<u32>("rv", 0).await.unwrap_err();
    assert!(e.to_string().contains("capacity 0 (rendezvous)"), "{e}");
    let e = a.export_receiver::<u32>("rv", 0).unwrap_err();
    assert!(e.to_string().contains("capacity of 1 or more"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_inside_a_message_is_refused_and_given_back() {
    let server = NatsServer::start();
    let a = node(&server).await;
    let tx = a
        .export_sender::<(u32, netchan::Sender<u32>)>("handles")
        .unwrap();
    let (inner, _inner_rx) = netchan::channel::<u32>(1);
    match within("the refusal", tx.send((7, inner))).await {
        Err(SendError((7, _), SendErrorKind::Invalid(e))) => {
            assert!(
                e.to_string()
                    .contains("cannot travel inside messages on NATS"),
                "{e}"
            );
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(()) => panic!("a sender inside a message was sent"),
    }
    // The channel goes on: a plain value still travels.
    let plain = a.export_sender::<u32>("plain").unwrap();
    within("a plain send", plain.send(1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_a_dropped_receiver_held_go_to_another_receiver() {
    let server = NatsServer::start();
    let a = node(&server).await;
    let tx = a.export_sender::<u32>("held").unwrap();
    for i in 0..10u32 {
        tx.send(i).await.unwrap();
    }
    let b = node(&server).await;
    let mut first = b.import_receiver::<u32>("held", 4).await.unwrap();
    // Takes two; holds up to four more it never takes.
    assert_eq!(within("0", first.recv()).await.unwrap(), Some(0));
    assert_eq!(within("1", first.recv()).await.unwrap(), Some(1));
    drop(first);
    let c = node(&server).await;
    let mut second = c.import_receiver::<u32>("held", 16).await.unwrap();
    let mut got = Vec::new();
    for _ in 2..10 {
        got.push(within("the rest", second.recv()).await.unwrap().unwrap());
    }
    got.sort_unstable();
    assert_eq!(got, (2..10).collect::<Vec<_>>());
    // The two taken were acknowledged: they do not come again.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), second.recv())
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stream_makes_send_wait_and_never_drops() {
    let server = NatsServer::start();
    let cfg = NatsConfig::default().stream_max_messages(2);
    let a = Node::connect_with(&server.url, cfg).await.unwrap();
    let tx = a.export_sender::<u32>("small").unwrap();
    tx.send(1).await.unwrap();
    tx.send(2).await.unwrap();
    let tx2 = tx.clone();
    let mut third = tokio::spawn(async move { tx2.send(3).await });
    // The stream is full: the third send has not completed.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut third)
            .await
            .is_err(),
        "a send into a full stream completed"
    );
    assert!(matches!(
        tx.try_send(4),
        Err(netchan::TrySendError::Full(4))
    ));
    let b = node(&server).await;
    let mut rx = b.import_receiver::<u32>("small", 1).await.unwrap();
    assert_eq!(within("1", rx.recv()).await.unwrap(), Some(1));
    within("the third send", &mut third).await.unwrap().unwrap();
    assert_eq!(within("2", rx.recv()).await.unwrap(), Some(2));
    assert_eq!(within("3", rx.recv()).await.unwrap(), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_node_ends_its_receivers_cleanly_and_its_values_go_back() {
    let server = NatsServer::start();
    let a = node(&server).await;
    let tx = a.export_sender::<u32>("closing").unwrap();
    for i in 0..6u32 {
        tx.send(i).await.unwrap();
    }
    let b = node(&server).await;
    let mut rx = b.import_receiver::<u32>("closing", 8).await.unwrap();
    assert_eq!(within("0", rx.recv()).await.unwrap(), Some(0));
    b.close().await;
    // What the receiver held went back to the server: a clean end.
    assert_eq!(within("the end", rx.recv()).await.unwrap(), None);
    // Nothing but the value taken before close was acknowledged.
    let c = node(&server).await;
    let mut rx = c.import_receiver::<u32>("closing", 8).await.unwrap();
    let mut got = Vec::new();
    for _ in 1..6 {
        got.push(within("redelivered", rx.recv()).await.unwrap().unwrap());
    }
    got.sort_unstable();
    assert_eq!(got, vec![1, 2, 3, 4, 5]);
    // Sends on a closed node give their value back.
    a.close().await;
    match tx.send(9).await {
        Err(SendError(9, _)) => {}
        other => panic!("expected the value back, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_nothing_says_what_to_start() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = NatsConfig::default().connect_timeout(Duration::from_secs(2));
    let e = Node::connect_with(&format!("nats://127.0.0.1:{port}"), cfg)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("is nats-server running there"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_connects_over_tls_trusting_the_servers_certificate() {
    let id = netchan::tls::Identity::self_signed(&["127.0.0.1", "localhost"]).unwrap();
    let dir = std::env::temp_dir().join(format!("netchan-nats-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, id.cert_pem()).unwrap();
    std::fs::write(&key, id.key_pem()).unwrap();
    let server = NatsServer::start_with(&format!(
        "tls {{ cert_file: {:?}, key_file: {:?} }}",
        cert, key
    ));
    let cfg = NatsConfig::default().root_certificates(&cert);
    let a = Node::connect_with(&server.url, cfg).await.unwrap();
    let tx = a.export_sender::<String>("secret").unwrap();
    let mut rx = a.import_receiver::<String>("secret", 4).await.unwrap();
    within("a send over TLS", tx.send("hi".into()))
        .await
        .unwrap();
    assert_eq!(
        within("a value over TLS", rx.recv())
            .await
            .unwrap()
            .as_deref(),
        Some("hi")
    );
    a.close().await;
    // Without the certificate, the platform's roots do not trust it.
    let cfg = NatsConfig::default()
        .require_tls(true)
        .connect_timeout(Duration::from_secs(3));
    let e = Node::connect_with(&server.url, cfg).await.unwrap_err();
    assert!(e.to_string().contains("cannot connect to NATS"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_the_config_reach_the_server() {
    let server = NatsServer::start_with("authorization { user: app, password: s3cret }");
    let cfg = NatsConfig::default().user_and_password("app", "s3cret");
    let a = Node::connect_with(&server.url, cfg).await.unwrap();
    let tx = a.import_sender::<u8>("authed").await.unwrap();
    within("an authenticated send", tx.send(1)).await.unwrap();
    a.close().await;
    let cfg = NatsConfig::default()
        .user_and_password("app", "wrong")
        .connect_timeout(Duration::from_secs(3));
    let e = Node::connect_with(&server.url, cfg).await.unwrap_err();
    assert!(e.to_string().contains("cannot connect to NATS"), "{e}");
}

#[test]
fn a_node_and_its_config_are_clone_send_sync_debug() {
    fn handle<T: Clone + Send + Sync + std::fmt::Debug + 'static>() {}
    handle::<Node>();
    handle::<NatsConfig>();
    // A future of each async call is Send (spawnable).
    fn send<F: std::future::Future + Send>(_: F) {}
    let cfg = NatsConfig::default();
    send(Node::connect_with("nats://127.0.0.1:1", cfg));
    fn node_futures(n: &Node) {
        send(n.import_receiver::<String>("x", 1));
        send(n.import_sender::<String>("x"));
        send(n.close());
        send(rpc::LabClient::new(n).echo("x".into()));
    }
    let _ = node_futures;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_of_another_type_fail_at_their_first_use() {
    let server = NatsServer::start();
    let a = node(&server).await;
    let _ = a.import_sender::<u32>("typed-export").await.unwrap();
    // Same node (its cache knows the stream) and another node (asks the
    // server): the first send is refused with the type error.
    let b = node(&server).await;
    for n in [&a, &b] {
        let tx = n.export_sender::<String>("typed-export").unwrap();
        match within("the refusal", tx.send("x".into())).await {
            Err(SendError(v, SendErrorKind::Invalid(Error::WrongType { actual, .. }))) => {
                assert_eq!(v, "x");
                assert_eq!(actual, "u32");
            }
            other => panic!("expected a type error, got {other:?}"),
        }
        // And so is every later one.
        assert!(within("a later send", tx.send("y".into())).await.is_err());
        let mut rx = n.export_receiver::<String>("typed-export", 4).unwrap();
        match within("the receiver's end", rx.recv()).await {
            Err(netchan::RecvError::Lost(Error::WrongType { .. })) => {}
            other => panic!("expected a type error, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_receiver_merges_what_every_node_sends() {
    let server = NatsServer::start();
    let inbox = node(&server).await;
    let mut rx = inbox.export_receiver::<(u8, u32)>("merged", 32).unwrap();
    let mut senders = Vec::new();
    for who in 0..3u8 {
        let n = node(&server).await;
        let tx = n.import_sender::<(u8, u32)>("merged").await.unwrap();
        senders.push(tokio::spawn(async move {
            for i in 0..200u32 {
                tx.send((who, i)).await.unwrap();
            }
            n
        }));
    }
    let mut next = [0u32; 3];
    for _ in 0..600 {
        let (who, i) = within("a merged value", rx.recv()).await.unwrap().unwrap();
        // Each producer's values arrive in the order it sent them.
        assert_eq!(i, next[usize::from(who)], "producer {who} out of order");
        next[usize::from(who)] += 1;
    }
    assert_eq!(next, [200; 3]);
    for s in senders {
        s.await.unwrap().close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_waiting_for_a_full_stream_gets_its_value_back_when_the_node_closes() {
    let server = NatsServer::start();
    let cfg = NatsConfig::default().stream_max_messages(1);
    let a = Node::connect_with(&server.url, cfg).await.unwrap();
    let tx = a.export_sender::<u32>("full-then-closed").unwrap();
    tx.send(1).await.unwrap();
    let tx2 = tx.clone();
    let waiting = tokio::spawn(async move { tx2.send(2).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.close().await;
    match within("the waiting send", waiting).await.unwrap() {
        Err(SendError(2, SendErrorKind::Closed)) => {}
        other => panic!("expected the value back, got {other:?}"),
    }
    // Only the first value was stored.
    let b = node(&server).await;
    let mut rx = b
        .import_receiver::<u32>("full-then-closed", 4)
        .await
        .unwrap();
    assert_eq!(within("1", rx.recv()).await.unwrap(), Some(1));
    assert!(
        tokio::time::timeout(Duration::from_millis(500), rx.recv())
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_stream_loses_nothing_that_was_sent() {
    let mut server = NatsServer::start();
    let a = node(&server).await;
    let b = node(&server).await;
    let tx = a.import_sender::<u32>("restart").await.unwrap();
    let mut rx = b.import_receiver::<u32>("restart", 16).await.unwrap();
    let n = 1000u32;
    let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel();
    let sender = tokio::spawn(async move {
        for i in 0..n {
            // Each send completes once stored, across the restart.
            tx.send(i).await.unwrap();
            let _ = sent_tx.send(i);
        }
    });
    let mut got = std::collections::HashMap::<u32, u32>::new();
    while got.len() < 300 {
        let v = within("values before the restart", rx.recv())
            .await
            .unwrap()
            .unwrap();
        *got.entry(v).or_default() += 1;
    }
    // The server is a plain process: kill and start it on the blocking pool.
    let restarted = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    });
    let server = within("the restart", restarted).await.unwrap();
    while got.len() < n as usize {
        let v = within("values after the restart", rx.recv())
            .await
            .unwrap()
            .unwrap();
        *got.entry(v).or_default() += 1;
    }
    within("every send", sender).await.unwrap();
    let mut sent = 0;
    while sent_rx.try_recv().is_ok() {
        sent += 1;
    }
    assert_eq!(sent, n);
    assert!((0..n).all(|v| got.contains_key(&v)), "values lost");
    // Duplicates are possible only for values taken whose acknowledgement
    // the restart swallowed; say how many there were.
    let twice = got.values().filter(|c| **c > 1).count();
    eprintln!("values delivered again after the restart: {twice}");
    drop(server);
}

/// The README's NATS block (`rust,ignore` there: it needs a server),
/// compiled here so it cannot drift from the API.
#[allow(dead_code)]
mod readme_block {
    use netchan::nats::Node;

    #[netchan::service]
    pub(crate) trait Resize {
        async fn resize(&self, image: Vec<u8>, width: u32) -> Vec<u8>;
    }

    async fn main() -> Result<(), netchan::Error> {
        let node = Node::connect("nats://127.0.0.1:4222").await?;
        // On every machine that produces work:
        let jobs = node.export_sender::<String>("jobs")?;
        jobs.send("cat.png".to_string()).await?; // completes once JetStream stored it
        // On every worker: each job goes to one of them.
        let mut work = node.import_receiver::<String>("jobs", 16).await?;
        let _job = work.recv().await?;
        // Services: replicas serve, any node calls.
        let resizer = ResizeClient::new(&node);
        let _small = resizer.resize(vec![0; 16], 8).await;
        node.close().await;
        Ok(())
    }
}
