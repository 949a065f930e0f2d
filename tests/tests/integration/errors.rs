//! Errors that say what happened and what to do: why a send refused its
//! value (closed, connection lost, too large), `?` from every error of the
//! crate into `netchan::Error`, the peer's address on a session, and dial
//! failures that name the address they could not reach.

use std::time::Duration;

use netchan::{
    Config, Error, Exporter, RecvError, RpcError, SendError, SendErrorKind, Session, TrySendError,
    channel,
};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// A peer limit small enough to exceed cheaply.
const LIMIT_BYTES: usize = 1024;

// ------------------------------------------------------- why a send failed

async fn an_oversized_send_explains_the_limit_and_how_to_raise_it(t: Transport) {
    let (a, b) = t
        .connect_with(Config::default().max_message_len(LIMIT_BYTES))
        .await;
    let (tx, mut rx) = Way::ExportedSender.channel::<Vec<u8>>(&a, &b, 2).await;
    let e = match within("an oversized send", tx.send(vec![7u8; 4000])).await {
        Err(e) => e,
        Ok(()) => panic!("a 4000-byte value was sent to a peer that accepts 1024 bytes"),
    };
    assert_eq!(e.0, vec![7u8; 4000], "the value comes back whole");
    let text = e.to_string();
    assert!(
        !text.contains("closed"),
        "the channel is open; the error must not say it is closed: {text}"
    );
    for word in [
        "1 KiB",
        "4003 bytes",
        "Config::max_message_len",
        "split the value",
    ] {
        assert!(text.contains(word), "{word:?} missing from: {text}");
    }
    // The channel is as it was.
    assert!(!tx.is_closed());
    send_ok("a small send after the refused one", &tx, vec![1, 2, 3]).await;
    assert_eq!(recv_some("the small value", &mut rx).await, vec![1, 2, 3]);
}
over_both!(an_oversized_send_explains_the_limit_and_how_to_raise_it);

/// A send of 4,000 bytes (4,003 encoded) refused by a peer whose limit is
/// `LIMIT_BYTES`, with the value given back.
fn assert_too_large(what: &str, r: Result<(), SendError<Vec<u8>>>) {
    match r {
        Err(SendError(v, SendErrorKind::TooLarge { size, limit })) => {
            assert_eq!(v.len(), 4000, "{what}: the value comes back");
            assert_eq!(size, 4003, "{what}: the encoded size");
            assert_eq!(limit, LIMIT_BYTES, "{what}: the peer's limit");
        }
        Err(e) => panic!("{what}: expected TooLarge, got {e:?}"),
        Ok(()) => panic!("{what}: an oversized value was sent"),
    }
}

async fn an_oversized_send_gives_too_large_as_its_reason(t: Transport) {
    let (a, b) = t
        .connect_with(Config::default().max_message_len(LIMIT_BYTES))
        .await;
    for way in Way::ALL {
        let (tx, mut rx) = way.channel::<Vec<u8>>(&a, &b, 2).await;
        let refused = within("an oversized send", tx.send(vec![7u8; 4000])).await;
        assert_too_large(&format!("{way:?}"), refused);
        match tx.try_send(vec![7u8; 4000]) {
            Err(TrySendError::Invalid(v, e @ Error::MessageTooLarge { .. })) => {
                assert_eq!(v.len(), 4000);
                assert!(e.to_string().contains("Config::max_message_len"), "{e}");
            }
            other => panic!("{way:?}: expected Invalid(MessageTooLarge), got {other:?}"),
        }
        send_ok("the channel still works", &tx, vec![1]).await;
        assert_eq!(recv_some("the small value", &mut rx).await, vec![1]);
    }
}
over_both!(an_oversized_send_gives_too_large_as_its_reason);

/// A local channel whose receiver travelled to the peer: a value too large
/// for the peer comes back to its sender with the reason, and the channel
/// goes on, as on a channel made remote from the start.
async fn an_oversized_send_to_a_travelled_receiver_comes_back_and_the_channel_goes_on(
    t: Transport,
) {
    let (a, b) = t
        .connect_with(Config::default().max_message_len(LIMIT_BYTES))
        .await;
    for way in Way::ALL {
        let (post, mut inbox) = way.channel::<netchan::Receiver<Vec<u8>>>(&a, &b, 1).await;
        let (tx, rx) = netchan::channel::<Vec<u8>>(2);
        send_ok("send the receiver", &post, rx).await;
        let mut rx = recv_some("the receiver arrives", &mut inbox).await;
        send_ok("a small value first", &tx, vec![1]).await;
        let refused = within("an oversized send", tx.send(vec![7u8; 4000])).await;
        assert_too_large(&format!("{way:?}"), refused);
        assert!(!tx.is_closed(), "{way:?}: the channel is open");
        send_ok("a small value after the refused one", &tx, vec![2]).await;
        assert_eq!(recv_some("the first value", &mut rx).await, vec![1]);
        assert_eq!(recv_some("the value after", &mut rx).await, vec![2]);
        drop(tx);
        recv_end("then the clean end", &mut rx).await;
    }
}
over_both!(an_oversized_send_to_a_travelled_receiver_comes_back_and_the_channel_goes_on);

/// A sender that travels on from the connection it is bound to: at its
/// second hop, a value too large for the receiving end's peer is refused
/// there (and reported on that connection's errors), and the channel goes
/// on for the next values.
async fn a_value_too_large_for_the_far_end_of_a_forwarded_sender_leaves_the_channel_open(
    t: Transport,
) {
    // home (small limit) ── near ── middle ── far ── away
    let (home, near) = t
        .connect_with(Config::default().max_message_len(LIMIT_BYTES))
        .await;
    let (middle, away) = t.connect().await;
    let (to_near, mut at_near) = Way::ExportedReceiver
        .channel::<netchan::Sender<Vec<u8>>>(&near, &home, 1)
        .await;
    let (to_away, mut at_away) = Way::ExportedReceiver
        .channel::<netchan::Sender<Vec<u8>>>(&away, &middle, 1)
        .await;
    let mut errors = near.errors();
    let (tx, mut rx) = netchan::channel::<Vec<u8>>(4);
    send_ok("send the sender to the middle", &to_near, tx).await;
    let in_middle = recv_some("it arrives in the middle", &mut at_near).await;
    send_ok("send it on", &to_away, in_middle).await;
    let far = recv_some("it arrives far away", &mut at_away).await;
    send_ok("a small value", &far, vec![1]).await;
    assert_eq!(
        recv_some("the small value arrives home", &mut rx).await,
        vec![1]
    );
    // The middle accepts it (its own limit is the default), home does not.
    send_ok("a value too large for home", &far, vec![7u8; 4000]).await;
    match next_error("the refusal in the middle", &mut errors).await {
        Error::MessageTooLarge { limit, .. } => assert_eq!(limit, LIMIT_BYTES),
        e => panic!("expected MessageTooLarge, got {e:?}"),
    }
    send_ok("a small value after it", &far, vec![2]).await;
    assert_eq!(
        recv_some("the value after the refused one arrives home", &mut rx).await,
        vec![2]
    );
    assert!(!far.is_closed(), "the channel is open");
}
over_both!(a_value_too_large_for_the_far_end_of_a_forwarded_sender_leaves_the_channel_open);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_on_a_local_channel_whose_receiver_is_gone_gives_closed_as_its_reason() {
    bounded(async {
        let (tx, rx) = channel::<String>(1);
        drop(rx);
        let e = within("send", tx.send("v".into()))
            .await
            .expect_err("no receiver");
        assert!(matches!(e.kind(), SendErrorKind::Closed), "{e:?}");
        assert!(e.is_closed());
        assert_eq!(e.into_inner(), "v");
    })
    .await;
}

async fn a_send_on_a_hung_up_channel_gives_closed_as_its_reason(t: Transport) {
    let (a, b) = t.connect().await;
    // b sends into a's exported receiver, which a hangs up.
    let name = unique("hung-up");
    let _rx = a.export_receiver::<u32>(&name, 2).expect("export");
    let tx = within("import", b.import_sender::<u32>(&name))
        .await
        .expect("import");
    a.hangup(&name).expect("hangup");
    let e = within("sends start failing", async {
        loop {
            match tx.send(1).await {
                Ok(()) => tokio::time::sleep(Duration::from_millis(5)).await,
                Err(e) => return e,
            }
        }
    })
    .await;
    assert!(matches!(e.1, SendErrorKind::Closed), "{e:?}");
    assert!(e.to_string().contains("closed"), "{e}");
    assert!(!b.is_closed(), "only the channel closed, not the session");
}
over_both!(a_send_on_a_hung_up_channel_gives_closed_as_its_reason);

async fn a_send_after_the_connection_was_cut_gives_connection_lost_as_its_reason(t: Transport) {
    let mut c = t.connect_cuttable().await;
    let (a, b) = (c.a.clone(), c.b.clone());
    // One sender on each side: a's exported sender, b's imported one.
    let (exported, _rx1) = Way::ExportedSender.channel::<u32>(&a, &b, 2).await;
    let (imported, _rx2) = Way::ExportedReceiver.channel::<u32>(&a, &b, 2).await;
    c.cut().await;
    within("a sees the loss", a.closed()).await;
    within("b sees the loss", b.closed()).await;
    for (side, tx) in [("exported", &exported), ("imported", &imported)] {
        match within("a send after the cut", tx.send(5)).await {
            Err(SendError(5, SendErrorKind::ConnectionLost(cause))) => {
                assert!(
                    matches!(cause, Error::ConnectionLost(_) | Error::Io(_)),
                    "{side}: {cause:?}"
                );
            }
            other => panic!("{side}: expected ConnectionLost, got {other:?}"),
        }
        let text = tx.send(6).await.expect_err("still lost").to_string();
        assert!(text.contains("connection was lost"), "{side}: {text}");
    }
}
over_both!(a_send_after_the_connection_was_cut_gives_connection_lost_as_its_reason);

// ----------------------------------------------------------- `?` throughout

async fn send_on(tx: &netchan::Sender<Vec<u8>>, v: Vec<u8>) -> Result<(), Error> {
    tx.send(v).await?;
    Ok(())
}

fn try_send_on(tx: &netchan::Sender<Vec<u8>>, v: Vec<u8>) -> Result<(), Error> {
    tx.try_send(v)?;
    Ok(())
}

async fn recv_on(rx: &mut netchan::Receiver<Vec<u8>>) -> Result<Option<Vec<u8>>, Error> {
    Ok(rx.recv().await?)
}

fn recv_result(r: Result<Option<u32>, RecvError>) -> Result<Option<u32>, Error> {
    Ok(r?)
}

fn rpc(r: Result<u32, RpcError>) -> Result<u32, Error> {
    Ok(r?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn question_mark_turns_every_error_of_the_crate_into_netchan_error() {
    bounded(async {
        // A whole program written with `?` only.
        let run = async {
            let (a, b) = Session::pair();
            let tx = a.export_sender::<Vec<u8>>("data")?;
            let mut rx = b.import_receiver::<Vec<u8>>("data", 1).await?;
            send_on(&tx, vec![1]).await?;
            assert_eq!(recv_on(&mut rx).await?, Some(vec![1]));
            Ok::<_, Error>(())
        };
        within("the program", run).await.expect("runs");

        let (a, b) = Session::pair_with(Config::default().max_message_len(LIMIT_BYTES));
        let tx = a.export_sender::<Vec<u8>>("data").expect("export");
        let mut rx = within("import", b.import_receiver::<Vec<u8>>("data", 1))
            .await
            .expect("import");
        match within("oversized", send_on(&tx, vec![0; 4000])).await {
            Err(Error::MessageTooLarge { limit, .. }) => assert_eq!(limit, LIMIT_BYTES),
            other => panic!("expected MessageTooLarge, got {other:?}"),
        }
        within("fill", send_on(&tx, vec![1])).await.expect("fits");
        // One slot, taken: try_send finds the channel full.
        tokio::time::timeout(QUIET, async {
            while try_send_on(&tx, vec![2]).is_ok() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .ok();
        match try_send_on(&tx, vec![3]) {
            Err(Error::ChannelFull) => {}
            other => panic!("expected ChannelFull, got {other:?}"),
        }
        drop(rx.recv().await);

        let (tx, rx) = channel::<Vec<u8>>(1);
        drop(rx);
        assert!(matches!(
            within("closed", send_on(&tx, vec![1])).await,
            Err(Error::ChannelClosed)
        ));
        assert!(matches!(
            try_send_on(&tx, vec![1]),
            Err(Error::ChannelClosed)
        ));

        let lost = Error::ConnectionLost("cut".into());
        let r = recv_result(Err(RecvError::Lost(lost)));
        assert!(
            matches!(r, Err(Error::ConnectionLost(ref s)) if s == "cut"),
            "{r:?}"
        );
        let r = recv_result(Err(RecvError::Decode("bad".into())));
        assert!(matches!(r, Err(Error::Codec(ref s)) if s == "bad"), "{r:?}");

        match rpc(Err(RpcError::Timeout)) {
            Err(Error::Rpc(RpcError::Timeout)) => {}
            other => panic!("expected Rpc(Timeout), got {other:?}"),
        }
        assert_eq!(rpc(Ok(1)).expect("ok"), 1);
        assert_eq!(
            Error::from(RpcError::Timeout).to_string(),
            RpcError::Timeout.to_string()
        );
    })
    .await;
}

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
