//! The small-cluster API: `listen` / `dial` (and `Exporter::cluster` to
//! learn the port first).

use netchan::{Config, Error, Exporter, Receiver, Sender, dial, dial_with, listen};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_server_shares_work_among_clients_and_merges_their_replies() {
    bounded(async {
        let exp = Exporter::bind("127.0.0.1:0").await.expect("bind");
        let (to_clients, mut from_clients) = exp.cluster::<(u32, u32)>().expect("cluster");
        let mut clients = Vec::new();
        for id in 0..3u32 {
            let (tx, mut rx) = within("dial", dial::<(u32, u32)>(exp.local_addr()))
                .await
                .expect("dial");
            clients.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                while let Some((_, task)) = rx.recv().await.expect("client recv") {
                    mine.push(task);
                    tx.send((id, task * 10)).await.expect("client reply");
                }
                mine
            }));
        }
        for task in 0..30 {
            send_ok("hand out a task", &to_clients, (u32::MAX, task)).await;
        }
        let mut replies = Vec::new();
        for _ in 0..30 {
            replies.push(recv_some("a reply", &mut from_clients).await);
        }
        drop(to_clients);
        let mut handed = Vec::new();
        for (id, c) in clients.into_iter().enumerate() {
            let mine = within("client ends once the server's sender is gone", c)
                .await
                .expect("client");
            for task in &mine {
                assert!(
                    replies.contains(&(id as u32, task * 10)),
                    "client {id} answered task {task}, and its reply arrived"
                );
            }
            handed.extend(mine);
        }
        handed.sort_unstable();
        assert_eq!(
            handed,
            (0..30).collect::<Vec<_>>(),
            "each task went to exactly one client"
        );
        replies.sort_unstable_by_key(|r| r.1);
        assert_eq!(
            replies.iter().map(|r| r.1).collect::<Vec<_>>(),
            (0..30).map(|t| t * 10).collect::<Vec<_>>(),
            "every reply merged into the server's receiver once"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_sent_before_any_client_dialled_waits_for_one() {
    bounded(async {
        let exp = Exporter::bind("127.0.0.1:0").await.expect("bind");
        let (to_clients, _from_clients) = exp.cluster::<String>().expect("cluster");
        let mut send = Box::pin(to_clients.send("first task".into()));
        stays_pending("a send with no client connected", &mut send).await;
        let (_tx, mut rx) = within("dial", dial::<String>(exp.local_addr()))
            .await
            .expect("dial");
        within("the send once a client is there", &mut send)
            .await
            .expect("send");
        assert_eq!(recv_some("the task", &mut rx).await, "first task");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_and_dial_exchange_values_on_a_known_port() {
    bounded(async {
        // Learn a free port, then listen on it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let (to_clients, mut from_clients) = within("listen", listen::<u64>(("127.0.0.1", port)))
            .await
            .expect("listen");
        let (to_server, mut from_server) = within("dial", dial::<u64>(("127.0.0.1", port)))
            .await
            .expect("dial");
        send_ok("client to server", &to_server, 7).await;
        assert_eq!(recv_some("at the server", &mut from_clients).await, 7);
        send_ok("server to client", &to_clients, 8).await;
        assert_eq!(recv_some("at the client", &mut from_server).await, 8);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialling_an_address_where_nobody_listens_fails() {
    bounded(async {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port");
        match within("dial", dial::<u32>(addr)).await {
            Err(Error::Io(_)) => {}
            other => panic!("expected an I/O error, got {other:?}"),
        }
    })
    .await;
}

/// Sends `n` values that complete with nobody receiving, checks that the
/// next waits, and that one `recv` lets it in.
async fn fills_exactly(what: &str, tx: &Sender<usize>, rx: &mut Receiver<usize>, n: usize) {
    for i in 0..n {
        send_ok(&format!("{what}: send {i} of {n} into the buffer"), tx, i).await;
    }
    let mut next = Box::pin(tx.send(n));
    stays_pending(&format!("{what}: a send past {n} buffered"), &mut next).await;
    // Both at once: with no buffer (0), the send goes only while a
    // receiver waits.
    let waiting = format!("{what}: the waiting send");
    let (first, sent) = tokio::join!(recv_some(what, rx), within(&waiting, &mut next));
    assert_eq!(first, 0, "{what}: the first value first");
    sent.expect("send");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_buffer_holds_as_many_values_as_configured_each_way() {
    bounded(async {
        for n in [None, Some(0), Some(1), Some(3), Some(8)] {
            let cfg = n.map_or_else(Config::default, |n| Config::default().cluster_buffer(n));
            let n = cfg.get_cluster_buffer();
            let exp = Exporter::bind_with("127.0.0.1:0", cfg.clone())
                .await
                .expect("bind");
            let (to_clients, mut from_clients) = exp.cluster::<usize>().expect("cluster");
            let (to_server, mut from_server) =
                within("dial", dial_with::<usize>(exp.local_addr(), cfg))
                    .await
                    .expect("dial");
            fills_exactly(
                &format!("server to client, buffer {n}"),
                &to_clients,
                &mut from_server,
                n,
            )
            .await;
            fills_exactly(
                &format!("client to server, buffer {n}"),
                &to_server,
                &mut from_clients,
                n,
            )
            .await;
        }
        assert_eq!(Config::default().get_cluster_buffer(), 256);
    })
    .await;
}
