//! Lifecycle and "nothing lost silently": connections cut without a
//! goodbye, clean closes, sessions and exporters that stay up while a
//! handle lives, handshakes, keepalive, `Send` futures and errors.

use std::time::Duration;

use futures::StreamExt;
use netchan::proto::{Dir, Frame};
use netchan::{
    Config, Error, Exporter, RecvError, RpcError, SendError, Sender, Session, TrySendError, channel,
};
use tokio::net::TcpListener;

use crate::support::*;

/// An error that says the connection was lost (not a clean end).
fn is_loss(e: &Error) -> bool {
    matches!(e, Error::ConnectionLost(_) | Error::Io(_))
}

// ------------------------------------------------- nothing lost silently: cut

async fn a_cut_connection_gives_receivers_the_buffered_values_then_an_error(t: Transport) {
    let mut c = t.connect_cuttable().await;
    let (a, b) = (c.a.clone(), c.b.clone());
    let (tx, mut rx) = Way::ExportedSender.channel::<u32>(&a, &b, 3).await;
    for i in 0..3 {
        send_ok("send into the buffer", &tx, i).await;
    }
    barrier(&a, &b).await;
    c.cut().await;
    for i in 0..3 {
        assert_eq!(recv_some("buffered before the cut", &mut rx).await, i);
    }
    match within("recv after the buffered values", rx.recv()).await {
        Err(RecvError::Lost(e)) => {
            assert!(is_loss(&e), "the cause says the connection was lost: {e:?}")
        }
        other => panic!("a cut connection is an error, never a clean end: {other:?}"),
    }
}
over_both!(a_cut_connection_gives_receivers_the_buffered_values_then_an_error);

async fn a_cut_connection_fails_a_waiting_send_on_an_imported_sender_with_its_value(t: Transport) {
    let mut c = t.connect_cuttable().await;
    let (a, b) = (c.a.clone(), c.b.clone());
    // b sends into a's exported receiver of capacity 1.
    let (tx, _rx) = Way::ExportedReceiver.channel::<String>(&a, &b, 1).await;
    send_ok("fill the buffer", &tx, "first".into()).await;
    let mut waiting = Box::pin(tx.send("second".into()));
    stays_pending("a send waiting for credit", &mut waiting).await;
    c.cut().await;
    match within("the waiting send after the cut", &mut waiting).await {
        Err(SendError(v, _)) => assert_eq!(v, "second", "the value comes back"),
        Ok(()) => panic!("a send completed on a cut connection"),
    }
    drop(waiting);
    match within("a send after the cut", tx.send("third".into())).await {
        Err(SendError(v, _)) => assert_eq!(v, "third"),
        Ok(()) => panic!("a send after the cut succeeded"),
    }
}
over_both!(a_cut_connection_fails_a_waiting_send_on_an_imported_sender_with_its_value);

async fn a_cut_connection_fails_a_waiting_send_on_an_exported_sender_with_its_value(t: Transport) {
    let mut c = t.connect_cuttable().await;
    let (a, b) = (c.a.clone(), c.b.clone());
    let (tx, _rx) = Way::ExportedSender.channel::<String>(&a, &b, 1).await;
    send_ok("fill the buffer", &tx, "first".into()).await;
    let mut waiting = Box::pin(tx.send("second".into()));
    stays_pending("a send waiting for credit", &mut waiting).await;
    c.cut().await;
    match within("the waiting send after the cut", &mut waiting).await {
        Err(SendError(v, _)) => assert_eq!(v, "second", "the value comes back"),
        Ok(()) => panic!("a send completed on a cut connection"),
    }
}
over_both!(a_cut_connection_fails_a_waiting_send_on_an_exported_sender_with_its_value,);

async fn drain_after_a_cut_fails_with_the_count_of_values_whose_arrival_was_never_confirmed(
    t: Transport,
) {
    // The peer takes three values off the wire, confirms the first, and
    // goes away without a goodbye.
    let (s, mut raw) = t.raw_peer(Config::default()).await;
    raw.read_hello().await;
    raw.write(&hello_bytes()).await.expect("hello");
    within("handshake", s.ready()).await.expect("ready");
    let tx = s.export_sender::<u32>("out").expect("export");
    raw.send(&[Frame::Open {
        chan: 1,
        dir: Dir::OpenerReceives,
        capacity: 4,
        name: "out".into(),
        type_name: "u32".into(),
    }])
    .await;
    assert!(matches!(
        raw.expect_frame("the export is accepted").await,
        Frame::Accept { chan: 1, .. }
    ));
    for i in 0..3 {
        send_ok("send", &tx, i).await;
    }
    for _ in 0..3 {
        assert!(matches!(
            raw.expect_frame("a value").await,
            Frame::Data { chan: 1, .. }
        ));
    }
    raw.send(&[Frame::Credit {
        chan: 1,
        grant: 0,
        received: 1,
    }])
    .await;
    match within("drain while two are unconfirmed", s.drain(Some(QUIET))).await {
        Err(Error::Undelivered { count, .. }) => assert_eq!(count, 2),
        other => panic!("drain must wait for the two: {other:?}"),
    }
    raw.shutdown_write().await;
    drop(raw);
    match within("drain after the cut", s.drain(Some(LIMIT))).await {
        Err(Error::Undelivered { count, .. }) => {
            assert_eq!(count, 2, "two completed sends were never confirmed")
        }
        other => panic!("drain must report the loss: {other:?}"),
    }
}
over_both!(drain_after_a_cut_fails_with_the_count_of_values_whose_arrival_was_never_confirmed);

async fn a_cut_connection_is_reported_on_errors_of_both_sides(t: Transport) {
    let mut c = t.connect_cuttable().await;
    let (mut a_errors, mut b_errors) = (c.a.errors(), c.b.errors());
    barrier(&c.a, &c.b).await;
    c.cut().await;
    let e = next_error("the dialler reports the loss", &mut a_errors).await;
    assert!(is_loss(&e), "dialler: {e:?}");
    let e = next_error("the acceptor reports the loss", &mut b_errors).await;
    assert!(is_loss(&e), "acceptor: {e:?}");
}
over_both!(a_cut_connection_is_reported_on_errors_of_both_sides);

async fn a_cut_in_the_middle_of_a_stream_leaves_a_prefix_and_gives_the_failed_value_back(
    t: Transport,
) {
    let mut c = t.connect_cuttable().await;
    let (a, b) = (c.a.clone(), c.b.clone());
    // b hands a the sender of one of its local channels; a streams into it.
    let (post, mut inbox) = Way::ExportedReceiver
        .channel::<Sender<u64>>(&a, &b, 1)
        .await;
    let (tx, mut rx) = channel::<u64>(8);
    send_ok("send a sender", &post, tx).await;
    let remote = recv_some("the sender arrives", &mut inbox).await;
    let producer = tokio::spawn(async move {
        let mut next = 0u64;
        loop {
            match remote.send(next).await {
                Ok(()) => next += 1,
                Err(SendError(v, _)) => return (next, v),
            }
        }
    });
    let mut got = Vec::new();
    while got.len() < 100 {
        got.push(recv_some("streamed value", &mut rx).await);
    }
    c.cut().await;
    let error = within("receive until the loss shows", async {
        loop {
            match rx.recv().await {
                Ok(Some(v)) => got.push(v),
                Ok(None) => panic!("a cut connection ended the stream cleanly"),
                Err(e) => return e,
            }
        }
    })
    .await;
    assert!(matches!(error, RecvError::Lost(_)), "{error:?}");
    let (completed, given_back) = within("the producer fails", producer)
        .await
        .expect("producer");
    assert_eq!(
        given_back, completed,
        "the failed send gives back its own value"
    );
    let k = got.len() as u64;
    assert_eq!(
        got,
        (0..k).collect::<Vec<_>>(),
        "what arrived is a prefix of what was sent"
    );
    assert!(k <= completed, "nothing arrived that was not sent");
}
over_both!(a_cut_in_the_middle_of_a_stream_leaves_a_prefix_and_gives_the_failed_value_back);

async fn an_exported_receiver_of_a_failed_session_reports_the_failure_after_its_values(
    t: Transport,
) {
    let mut c = t.connect_cuttable().await;
    let (a, b) = (c.a.clone(), c.b.clone());
    let (tx, mut rx) = Way::ExportedReceiver.channel::<u32>(&a, &b, 4).await;
    send_ok("send", &tx, 1).await;
    barrier(&b, &a).await;
    c.cut().await;
    assert_eq!(recv_some("buffered before the cut", &mut rx).await, 1);
    match within("recv after the cut", rx.recv()).await {
        Err(RecvError::Lost(_)) => {}
        other => panic!("the session's only connection failed; expected an error: {other:?}"),
    }
}
over_both!(an_exported_receiver_of_a_failed_session_reports_the_failure_after_its_values,);

// ------------------------------------------------------------- clean closing

async fn closing_a_session_ends_the_peers_channels_cleanly(t: Transport) {
    let (a, b) = t.connect().await;
    let mut b_errors = b.errors();
    let (tx_ab, mut rx_b) = Way::ExportedSender.channel::<u32>(&a, &b, 4).await;
    let (tx_ba, _rx_a) = Way::ExportedReceiver.channel::<u32>(&a, &b, 4).await;
    send_ok("a to b", &tx_ab, 1).await;
    send_ok("a to b", &tx_ab, 2).await;
    within("close", a.close()).await;
    assert_eq!(recv_some("sent before the close", &mut rx_b).await, 1);
    assert_eq!(recv_some("sent before the close", &mut rx_b).await, 2);
    recv_end("the peer's receiver ends cleanly", &mut rx_b).await;
    match within("send on the peer", tx_ba.send(3)).await {
        Err(SendError(v, _)) => assert_eq!(v, 3),
        Ok(()) => panic!("a send to a closed session succeeded"),
    }
    assert!(
        within("errors() of the peer", b_errors.next())
            .await
            .is_none(),
        "a clean close is no error"
    );
}
over_both!(closing_a_session_ends_the_peers_channels_cleanly);

async fn closing_a_session_ends_its_own_exported_receiver_after_what_arrived(t: Transport) {
    let (a, b) = t.connect().await;
    let (tx, mut rx) = Way::ExportedReceiver.channel::<u32>(&a, &b, 4).await;
    send_ok("b to a", &tx, 2).await;
    barrier(&b, &a).await;
    within("close", a.close()).await;
    assert_eq!(recv_some("arrived before the close", &mut rx).await, 2);
    recv_end("the closed session's own receiver ends cleanly", &mut rx).await;
}
over_both!(closing_a_session_ends_its_own_exported_receiver_after_what_arrived,);

async fn sends_on_an_exported_sender_fail_with_the_value_once_its_session_is_closed(t: Transport) {
    let (a, b) = t.connect().await;
    let (tx, _rx) = Way::ExportedSender.channel::<u32>(&a, &b, 4).await;
    within("close", a.close()).await;
    match within("send after close", tx.send(7)).await {
        Err(SendError(v, _)) => assert_eq!(v, 7),
        Ok(()) => panic!("a send on a closed session succeeded"),
    }
}
over_both!(sends_on_an_exported_sender_fail_with_the_value_once_its_session_is_closed,);

async fn dropping_every_handle_closes_the_session_cleanly(t: Transport) {
    let (a, b) = t.connect().await;
    let mut b_errors = b.errors();
    let (to_b, mut at_b) = Way::ExportedSender.channel::<u32>(&a, &b, 4).await;
    let (_to_a, at_a) = Way::ExportedReceiver.channel::<u32>(&a, &b, 4).await;
    send_ok("send", &to_b, 1).await;
    drop((a, to_b, at_a));
    assert_eq!(recv_some("sent before the drop", &mut at_b).await, 1);
    recv_end("ends cleanly", &mut at_b).await;
    assert!(
        within("the peer's errors() ends", b_errors.next())
            .await
            .is_none(),
        "a session whose handles all went closes with a goodbye, not an error"
    );
    assert!(
        within(
            "import on the closed peer",
            b.import_receiver::<u32>("x", 1)
        )
        .await
        .is_err(),
        "the connection is gone"
    );
}
over_both!(dropping_every_handle_closes_the_session_cleanly);

/// A client program shaped like `#[tokio::main] async fn main()` that
/// never calls `close()`: it connects, does one round trip, and its
/// runtime is dropped with the session (as when main returns). The
/// runtime drops the driver tasks without polling them again.
fn run_client_without_close(addr: std::net::SocketAddr, rt: tokio::runtime::Runtime) {
    std::thread::spawn(move || {
        rt.block_on(async {
            let s = Session::connect(addr).await.expect("connect");
            let tx = s.import_sender::<u32>("inbox").await.expect("import inbox");
            let mut rx = s
                .import_receiver::<u32>("replies", 4)
                .await
                .expect("import replies");
            tx.send(41).await.expect("send");
            assert_eq!(rx.recv().await.ok().flatten(), Some(42));
            // main ends here: every handle drops, no close().await.
        });
        drop(rt);
    })
    .join()
    .expect("the client thread");
}

async fn a_program_that_ends_without_close_says_goodbye(rt: tokio::runtime::Runtime) {
    let exp = Exporter::bind("127.0.0.1:0").await.expect("bind");
    let mut exp_errors = exp.errors();
    let mut inbox = exp
        .export_receiver::<u32>("inbox", 4)
        .expect("export inbox");
    let replies = exp.export_sender::<u32>("replies").expect("export replies");
    let (found, session) = tokio::sync::oneshot::channel();
    let exp2 = exp.clone();
    tokio::spawn(async move {
        let v = inbox
            .recv()
            .await
            .ok()
            .flatten()
            .expect("the client's value");
        // The client's session, taken while it is still connected.
        let _ = found.send(exp2.sessions().pop());
        let _ = replies.send(v + 1).await;
    });
    let addr = exp.local_addr();
    tokio::task::spawn_blocking(move || run_client_without_close(addr, rt))
        .await
        .expect("client");
    let server = session.await.ok().flatten().expect("the client's session");
    let mut errors = server.errors();
    let why = within("the server's session ends", server.closed()).await;
    assert!(
        matches!(why, Error::Closed),
        "a program that ended without close() still said goodbye: {why:?}"
    );
    assert!(
        within("the server's errors() ends", errors.next())
            .await
            .is_none(),
        "an ordinary client exit is no error on the server"
    );
    if let Ok(Some(e)) = tokio::time::timeout(QUIET, exp_errors.next()).await {
        panic!("an ordinary client exit is no error on the exporter: {e:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_current_thread_program_that_ends_without_close_says_goodbye() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    a_program_that_ends_without_close_says_goodbye(rt).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_multi_thread_program_that_ends_without_close_says_goodbye() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    a_program_that_ends_without_close_says_goodbye(rt).await;
}

#[tokio::test]
async fn a_peer_that_resets_the_connection_once_it_has_our_goodbye_is_a_clean_close() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let cfg = Config::default().close_timeout(Duration::from_secs(5));
    let connecting = tokio::spawn(Session::connect_with(addr, cfg));
    let (sock, _) = within("accept", listener.accept()).await.expect("accept");
    // Dropping the socket then resets the connection instead of ending it.
    sock.set_zero_linger().expect("linger");
    let mut raw = RawPeer::new(sock);
    raw.read_hello().await;
    raw.write(&hello_bytes()).await.expect("hello");
    let s = within("connect", connecting)
        .await
        .expect("task")
        .expect("connect");
    let mut errors = s.errors();
    let closing = tokio::spawn({
        let s = s.clone();
        async move { s.close().await }
    });
    assert!(matches!(
        raw.expect_frame("our goodbye").await,
        Frame::Goodbye { .. }
    ));
    drop(raw);
    within("close", closing).await.expect("close");
    let why = within("the session ends", s.closed()).await;
    assert!(
        matches!(why, Error::Closed),
        "a reset after our goodbye ends the close, it is no failure: {why:?}"
    );
    assert!(
        within("errors() ends", errors.next()).await.is_none(),
        "a peer that went away while we closed is not an error"
    );
}

async fn a_session_stays_up_while_a_channel_half_it_produced_lives(t: Transport) {
    let (a, b) = t.connect().await;
    let (tx, mut rx) = Way::ExportedSender.channel::<u32>(&a, &b, 2).await;
    drop((a, b));
    tokio::time::sleep(QUIET).await;
    for i in 0..10 {
        send_ok("send with only the channel halves left", &tx, i).await;
        assert_eq!(recv_some("recv", &mut rx).await, i);
    }
    drop(tx);
    recv_end("the last handle went", &mut rx).await;
}
over_both!(a_session_stays_up_while_a_channel_half_it_produced_lives);

async fn an_exported_receiver_outlives_importers_coming_and_going(t: Transport) {
    let (hub, imps) = t.hub(1).await;
    let name = unique("inbox");
    let mut inbox = hub.export_receiver::<u32>(&name, 2).expect("export");
    for round in 0..3 {
        let tx = within("import", imps[0].import_sender::<u32>(&name))
            .await
            .expect("import");
        send_ok("send", &tx, round).await;
        drop(tx);
        assert_eq!(recv_some("inbox", &mut inbox).await, round);
        receives_nothing("the importer left; the inbox stays open", &mut inbox).await;
    }
}
over_both!(an_exported_receiver_outlives_importers_coming_and_going);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exporters_inbox_outlives_importer_sessions_that_disconnect() {
    bounded(async {
        let exp = Exporter::bind("127.0.0.1:0").await.expect("bind");
        let mut inbox = exp.export_receiver::<u32>("inbox", 2).expect("export");
        for round in 0..3 {
            let s = within("connect", Session::connect(exp.local_addr()))
                .await
                .expect("connect");
            let tx = within("import", s.import_sender::<u32>("inbox"))
                .await
                .expect("import");
            send_ok("send", &tx, round).await;
            assert_eq!(recv_some("inbox", &mut inbox).await, round);
            drop(tx);
            within("close", s.close()).await;
            receives_nothing("the session left; the inbox stays open", &mut inbox).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exporter_stays_up_while_an_exported_channel_half_lives() {
    bounded(async {
        let exp = Exporter::bind("127.0.0.1:0").await.expect("bind");
        let addr = exp.local_addr();
        let tx = exp.export_sender::<u32>("out").expect("export");
        drop(exp);
        let s = within("connect", Session::connect(addr))
            .await
            .expect("the exporter still accepts while its sender lives");
        let mut rx = within("import", s.import_receiver::<u32>("out", 1))
            .await
            .expect("import");
        send_ok("send", &tx, 5).await;
        assert_eq!(recv_some("recv", &mut rx).await, 5);
        drop(tx);
        recv_end("the exported sender was the last handle", &mut rx).await;
        within("the exporter stops accepting", async {
            while Session::connect(addr).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    })
    .await;
}

// ------------------------------------------------ handshake and keepalive

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_gives_up_when_the_handshake_never_completes() {
    bounded(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        // Accepts and then says nothing.
        let silent = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.expect("accept");
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(sock);
        });
        let cfg = Config::default().handshake_timeout(Duration::from_millis(300));
        match within("connect", Session::connect_with(addr, cfg)).await {
            Err(Error::HandshakeTimeout { timeout: d, .. }) => {
                assert_eq!(d, Duration::from_millis(300))
            }
            other => panic!("expected HandshakeTimeout, got {other:?}"),
        }
        silent.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_a_closed_port_fails_with_an_io_error() {
    bounded(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        match within("connect", Session::connect(addr)).await {
            Err(Error::Io(_)) => {}
            other => panic!("expected an I/O error, got {other:?}"),
        }
    })
    .await;
}

async fn an_idle_connection_survives_many_keepalive_intervals(t: Transport) {
    // A ping every 200 ms, dead after 600 ms: a loaded machine may delay
    // a ping by a few hundred milliseconds, and that must not count as a
    // dead peer here.
    const KEEPALIVE: Duration = Duration::from_millis(200);
    let cfg = Config::default().keepalive(KEEPALIVE);
    let (a, b) = t.connect_with(cfg).await;
    let mut errors = a.errors();
    let (tx, mut rx) = Way::ExportedSender.channel::<u32>(&a, &b, 1).await;
    // Ten keepalive intervals, more than three "dead after" deadlines.
    tokio::time::sleep(KEEPALIVE * 10).await;
    send_ok("send after a long idle time", &tx, 1).await;
    assert_eq!(recv_some("recv", &mut rx).await, 1);
    assert!(
        futures::FutureExt::now_or_never(errors.next()).is_none(),
        "no error while idle"
    );
}
over_both!(an_idle_connection_survives_many_keepalive_intervals);

// ------------------------------------------------------ Send and Debug

fn is_send<T: Send>(_: &T) {}
fn is_handle<T: Send + Sync + Clone + std::fmt::Debug>(_: &T) {}
fn is_error<E: std::error::Error + Send + Sync + 'static>() {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_and_futures_are_send_and_errors_do_not_print_values() {
    let (a, _b) = Session::pair();
    is_send(&a.import_receiver::<u32>("x", 1));
    is_send(&a.import_receiver_n::<u32>("x", 1, 1));
    is_send(&a.import_sender::<u32>("x"));
    is_send(&a.drain(None));
    is_send(&a.close());
    is_send(&Session::connect("127.0.0.1:9"));
    is_send(&Exporter::bind("127.0.0.1:0"));
    is_send(&netchan::listen::<u32>("127.0.0.1:0"));
    is_send(&netchan::dial::<u32>("127.0.0.1:9"));
    let (tx, mut rx) = channel::<u32>(1);
    is_send(&tx.send(1));
    is_send(&rx.recv());
    is_handle(&a);
    is_handle(&tx);
    is_send(&rx);
    let (p, _q) = netchan::pipe();
    is_send(&p);
    let _ = format!("{rx:?} {p:?}");
    is_error::<Error>();
    is_error::<SendError<u32>>();
    is_error::<TrySendError<u32>>();
    is_error::<RecvError>();
    is_error::<RpcError>();
    let secret = "hunter2-do-not-log".to_string();
    let shown = format!(
        "{:?} {}",
        SendError(secret.clone(), netchan::SendErrorKind::Closed),
        SendError(secret.clone(), netchan::SendErrorKind::Closed)
    );
    assert!(
        !shown.contains(&secret),
        "SendError printed its value: {shown}"
    );
    let shown = format!(
        "{:?} {}",
        TrySendError::Full(secret.clone()),
        TrySendError::Closed(secret.clone())
    );
    assert!(
        !shown.contains(&secret),
        "TrySendError printed its value: {shown}"
    );
}

async fn a_peer_that_stays_silent_after_our_goodbye_is_let_go_after_the_close_timeout(
    t: Transport,
) {
    let cfg = Config::default().close_timeout(Duration::from_millis(300));
    let (s, mut raw) = t.raw_peer(cfg).await;
    let mut errors = s.errors();
    raw.read_hello().await;
    raw.write(&hello_bytes()).await.expect("hello");
    within("handshake", s.ready()).await.expect("ready");
    // The reader is now waiting for the peer under its keepalive deadline
    // (45 s); the close must not wait for that.
    within("close", s.close()).await;
    assert!(matches!(
        raw.expect_frame("our goodbye").await,
        Frame::Goodbye { .. }
    ));
    let why = within("the session ends", s.closed()).await;
    assert!(matches!(why, Error::Closed), "a clean end, not {why:?}");
    // The peer never answered: that is not an error worth reporting.
    if let Ok(Some(e)) = tokio::time::timeout(QUIET, errors.next()).await {
        panic!("no error after a clean close, got {e:?}");
    }
    drop(raw);
}
over_both!(a_peer_that_stays_silent_after_our_goodbye_is_let_go_after_the_close_timeout);

/// A stream that keeps what it is given until it is flushed (a
/// `BufWriter`; TLS does the same with its last records when the socket
/// is full) still carries every frame: the writer flushes after each
/// write, so nothing waits for a later one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_buffers_writes_carries_every_frame_without_waiting_for_a_later_write() {
    bounded(async {
        let (x, y) = tokio::io::duplex(1 << 16);
        let a = Session::connect_stream(tokio::io::BufWriter::new(x), Config::default());
        let b = Session::accept_stream(tokio::io::BufWriter::new(y), Config::default());
        let tx = b.export_sender::<u64>("numbers").expect("export");
        let mut rx = within(
            "import through buffered streams",
            a.import_receiver::<u64>("numbers", 4),
        )
        .await
        .expect("import");
        for i in 0..10 {
            within("send", tx.send(i)).await.expect("send");
            let got = within("each value, one at a time", rx.recv()).await;
            assert_eq!(got.expect("recv"), Some(i));
        }
    })
    .await;
}
