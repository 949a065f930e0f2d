//! A connection cut in the middle of a frame, during channel traffic and
//! during RPC, in either direction, with either side sending: both sides
//! fail with a typed error at once (the cut is an end of stream, no
//! keepalive needed), every pending send, receive and call resolves,
//! every unsent value comes back, and every task ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use netchan::proto::Kind;
use netchan::{Config, Error, RecvError, RpcError, Session};

use crate::chaos::{Flow, When};
use crate::common::*;

/// Who sends on the channel under test.
#[derive(Debug, Clone, Copy)]
enum Sending {
    /// The dialer (`a`): its values travel A→B, credit B→A.
    Dialer,
    /// The acceptor (`b`): values B→A, credit A→B.
    Acceptor,
}

/// Where the cut falls.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// Inside the header of a DATA frame of the values.
    DataHeader,
    /// Inside the payload of a DATA chunk of a large value.
    DataChunk,
    /// Inside the header of a CREDIT frame going back to the sender.
    CreditHeader,
}

async fn a_cut_during_channel_traffic(sending: Sending, cut: Cut) {
    let tasks = Tasks::baseline();
    let cfg = Config::default();
    let Proxied { a, b, chaos } = proxied(cfg.clone(), cfg).await;
    let (s, r, data_flow, credit_flow) = match sending {
        Sending::Dialer => (&a, &b, Flow::AToB, Flow::BToA),
        Sending::Acceptor => (&b, &a, Flow::BToA, Flow::AToB),
    };
    // Large values are chunked (64 KiB chunks), so a cut can fall inside one.
    let (n, size) = match cut {
        Cut::DataChunk => (200, 150_000),
        _ => (20_000, 64),
    };
    match cut {
        Cut::DataHeader => chaos.cut(
            data_flow,
            When::InFrame {
                kind: Kind::Data,
                min_len: 0,
                skip: 100,
                at: 4,
            },
        ),

        Cut::DataChunk => chaos.cut(
            data_flow,
            When::InFrame {
                kind: Kind::Data,
                min_len: 30_000,
                skip: 5,
                at: 10 + 30_000,
            },
        ),
        Cut::CreditHeader => chaos.cut(
            credit_flow,
            When::InFrame {
                kind: Kind::Credit,
                min_len: 0,
                skip: 20,
                at: 3,
            },
        ),
    }
    // Values one way and a second channel the other way, so both flows
    // carry data and credit.
    let (tx, rx) = channel::<Numbered>(s, r, 4).await;
    let (back_tx, back_rx) = channel::<Numbered>(r, s, 4).await;
    let sender = tokio::spawn(send_numbered(tx, n, size, 3));
    let receiver = tokio::spawn(recv_numbered(rx));
    let back_sender = tokio::spawn(send_numbered(back_tx, 1_000_000, 16, 3));
    let back_receiver = tokio::spawn(recv_numbered(back_rx));

    let es = fails_within("the sending side fails", s, STEP).await;
    let er = fails_within("the receiving side fails", r, MARGIN).await;
    assert!(chaos.killed(), "the proxy cut the connection");
    for e in [&es, &er] {
        assert!(
            matches!(e, Error::ConnectionLost(_) | Error::Io(_)),
            "a cut is a lost connection, got {e:?}"
        );
    }

    // Every pending future resolves.
    let (sent, got, back_sent, back_got) =
        within("every pending send and recv resolves", MARGIN, async {
            let sent = sender.await.expect("sender task");
            let got = receiver.await.expect("receiver task");
            let back_sent = back_sender.await.expect("sender task");
            let back_got = back_receiver.await.expect("receiver task");
            (sent, got, back_sent, back_got)
        })
        .await;
    for (what, sent, got) in [
        ("values", &sent, &got),
        ("values back", &back_sent, &back_got),
    ] {
        assert!(
            !sent.returned.is_empty() || sent.sent.len() as u64 == n,
            "{what}: the sender was stopped by the cut and got its value back"
        );
        accounted(what, sent, got);
        assert!(
            matches!(got.end, Err(RecvError::Lost(_))),
            "{what}: a cut is an error for the receiver, never a clean end: {:?}",
            got.end
        );
    }
    assert!(!sent.returned.is_empty(), "the cut stopped the traffic");
    // drain counts the values whose arrival was never confirmed.
    match within("drain on the failed session", MARGIN, s.drain(None)).await {
        Ok(()) => assert_eq!(
            got.received.len(),
            sent.sent.len(),
            "drain Ok means all arrived"
        ),
        Err(Error::Undelivered { count, .. }) => assert!(
            count as usize >= sent.sent.len() - got.received.len()
                && count as usize <= sent.sent.len(),
            "drain reports {count} undelivered; {} sent, {} received",
            sent.sent.len(),
            got.received.len()
        ),
        Err(e) => panic!("drain failed with {e:?}"),
    }
    drop((a, b, chaos));
    tasks.settle("after a cut during channel traffic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_inside_a_data_header_fails_both_sides_when_the_dialer_sends() {
    a_cut_during_channel_traffic(Sending::Dialer, Cut::DataHeader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_inside_a_data_header_fails_both_sides_when_the_acceptor_sends() {
    a_cut_during_channel_traffic(Sending::Acceptor, Cut::DataHeader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_inside_a_chunk_of_a_large_value_fails_both_sides_when_the_dialer_sends() {
    a_cut_during_channel_traffic(Sending::Dialer, Cut::DataChunk).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_inside_a_chunk_of_a_large_value_fails_both_sides_when_the_acceptor_sends() {
    a_cut_during_channel_traffic(Sending::Acceptor, Cut::DataChunk).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_inside_a_credit_header_fails_both_sides_when_the_dialer_sends() {
    a_cut_during_channel_traffic(Sending::Dialer, Cut::CreditHeader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_inside_a_credit_header_fails_both_sides_when_the_acceptor_sends() {
    a_cut_during_channel_traffic(Sending::Acceptor, Cut::CreditHeader).await;
}

// -------------------------------------------------------------------- RPC

/// The service under test: an echo of large payloads, and calls that hang
/// until cancelled.
#[netchan::service]
pub(crate) trait Store {
    async fn echo(&self, data: serde_bytes::ByteBuf) -> serde_bytes::ByteBuf;
    async fn hang(&self, ms: u64) -> u64;
}

/// Counts handlers started and handlers dropped before finishing.
#[derive(Clone, Default)]
struct Counting {
    hanging: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
}

struct OnDrop(Arc<AtomicUsize>);
impl Drop for OnDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Store for Counting {
    async fn echo(&self, data: serde_bytes::ByteBuf) -> serde_bytes::ByteBuf {
        data
    }
    async fn hang(&self, ms: u64) -> u64 {
        self.hanging.fetch_add(1, Ordering::SeqCst);
        let guard = OnDrop(self.dropped.clone());
        tokio::time::sleep(Duration::from_millis(ms)).await;
        std::mem::forget(guard);
        ms
    }
}

/// Which way the cut flow carries the RPC.
#[derive(Debug, Clone, Copy)]
enum RpcCut {
    /// Inside a chunk of a large request.
    RequestChunk,
    /// Inside the header of a reply.
    ReplyHeader,
}

async fn a_cut_during_rpc(client_dials: bool, cut: RpcCut) {
    const HANGING: usize = 16;
    let tasks = Tasks::baseline();
    let cfg = Config::default();
    let Proxied { a, b, chaos } = proxied(cfg.clone(), cfg).await;
    let (client, server): (&Session, &Session) = if client_dials { (&a, &b) } else { (&b, &a) };
    let (requests, replies) = if client_dials {
        (Flow::AToB, Flow::BToA)
    } else {
        (Flow::BToA, Flow::AToB)
    };
    let svc = Counting::default();
    server.serve(StoreServer::new(svc.clone()));
    let store = StoreClient::new(client);
    // Calls that hang on the server until the connection goes.
    let mut hanging = Vec::new();
    for _ in 0..HANGING {
        let store = store.clone();
        hanging.push(tokio::spawn(async move { store.hang(60_000).await }));
    }
    within("the hanging calls reach the server", STEP, async {
        while svc.hanging.load(Ordering::SeqCst) < HANGING {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    match cut {
        RpcCut::RequestChunk => chaos.cut(
            requests,
            When::InFrame {
                kind: Kind::Data,
                min_len: 40_000,
                skip: 3,
                at: 10 + 40_000,
            },
        ),
        RpcCut::ReplyHeader => chaos.cut(
            replies,
            When::InFrame {
                kind: Kind::Data,
                min_len: 0,
                skip: 10,
                at: 5,
            },
        ),
    }
    // Echo calls with large (chunked) payloads until one fails.
    let echoing = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut ok = 0u32;
            loop {
                let payload = serde_bytes::ByteBuf::from(vec![ok as u8; 100_000]);
                match store.echo(payload).await {
                    Ok(back) => {
                        assert!(back.len() == 100_000 && back.iter().all(|b| *b == ok as u8));
                        ok += 1;
                    }
                    Err(e) => return (ok, e),
                }
                if ok > 10_000 {
                    panic!("the cut never came");
                }
            }
        })
    };
    fails_within("the client's session fails", client, STEP).await;
    fails_within("the server's session fails", server, MARGIN).await;
    let (ok, e) = within("the echo loop ends", MARGIN, echoing)
        .await
        .expect("echo task");
    assert!(ok > 0, "some calls went through before the cut");
    assert_eq!(e, RpcError::Disconnected, "a call cut off is Disconnected");
    for h in hanging {
        let r = within("every hanging call resolves", MARGIN, h)
            .await
            .expect("call task");
        assert_eq!(r, Err(RpcError::Disconnected));
    }
    // A call on the dead session fails at once.
    assert_eq!(
        within("a call after the cut", MARGIN, store.hang(1)).await,
        Err(RpcError::Disconnected)
    );
    drop(store);
    drop((a, b, chaos));
    tasks.settle("after a cut during RPC").await;
    assert_eq!(
        svc.dropped.load(Ordering::SeqCst),
        HANGING,
        "every hanging handler was dropped (cancelled) on the server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_inside_a_request_chunk_fails_every_call_when_the_dialer_calls() {
    a_cut_during_rpc(true, RpcCut::RequestChunk).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_inside_a_request_chunk_fails_every_call_when_the_acceptor_calls() {
    a_cut_during_rpc(false, RpcCut::RequestChunk).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_inside_a_reply_header_fails_every_call_when_the_dialer_calls() {
    a_cut_during_rpc(true, RpcCut::ReplyHeader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_inside_a_reply_header_fails_every_call_when_the_acceptor_calls() {
    a_cut_during_rpc(false, RpcCut::ReplyHeader).await;
}

// ------------------------------------------------------------- half-close

/// One direction closes (its receiver reads end of stream) while the
/// other still works: the side that lost its input fails with
/// `ConnectionLost`; the other side must learn of a failure too, not a
/// clean end, since values it sent were lost.
async fn a_half_close(flow: Flow) {
    let tasks = Tasks::baseline();
    let cfg = Config::default();
    let Proxied { a, b, chaos } = proxied(cfg.clone(), cfg).await;
    let (ab_tx, ab_rx) = channel::<Numbered>(&a, &b, 4).await;
    let (ba_tx, ba_rx) = channel::<Numbered>(&b, &a, 4).await;
    let sends = [
        tokio::spawn(send_numbered(ab_tx, u64::MAX, 32, 2)),
        tokio::spawn(send_numbered(ba_tx, u64::MAX, 32, 2)),
    ];
    let recvs = [
        tokio::spawn(recv_numbered(ab_rx)),
        tokio::spawn(recv_numbered(ba_rx)),
    ];
    chaos
        .wait_for("traffic both ways", STEP, |c| {
            c.frames_seen(Flow::AToB, Kind::Data) > 200
                && c.frames_seen(Flow::BToA, Kind::Data) > 200
        })
        .await;
    chaos.half_close(flow);
    chaos
        .wait_for("the direction closed", STEP, |c| c.ended(flow))
        .await;
    // The proxy closed `flow` alone. The other direction may end any
    // moment now, since the side that read end of stream fails and closes
    // its socket, so whether it still flows is a race and not asserted.
    let (cut_off, other) = match flow {
        Flow::AToB => (&b, &a),
        Flow::BToA => (&a, &b),
    };
    let e = fails_within("the side whose input closed fails", cut_off, STEP).await;
    assert!(matches!(e, Error::ConnectionLost(_)), "got {e:?}");
    fails_within("the other side learns of the failure", other, MARGIN).await;
    let [s1, s2] = sends;
    let [r1, r2] = recvs;
    let logs = within("every pending send and recv resolves", MARGIN, async {
        (
            s1.await.expect("task"),
            r1.await.expect("task"),
            s2.await.expect("task"),
            r2.await.expect("task"),
        )
    })
    .await;
    accounted("a to b", &logs.0, &logs.1);
    accounted("b to a", &logs.2, &logs.3);
    for r in [&logs.1, &logs.3] {
        assert!(
            r.end.is_err(),
            "a receiver saw a clean end of a connection that failed: {:?}",
            r.end
        );
    }
    drop((a, b, chaos));
    tasks.settle("after a half-close").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_only_the_dialers_direction_fails_both_sides() {
    a_half_close(Flow::AToB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_only_the_acceptors_direction_fails_both_sides() {
    a_half_close(Flow::BToA).await;
}

// ------------------------------------------------------ flipped, injected

/// A flipped kind byte is a protocol error for the receiver, which says
/// why in its goodbye: the sender fails with that reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_frame_kind_fails_both_sides_with_the_reason() {
    let tasks = Tasks::baseline();
    let cfg = Config::default();
    let Proxied { a, b, chaos } = proxied(cfg.clone(), cfg).await;
    let (tx, rx) = channel::<Numbered>(&a, &b, 4).await;
    let sender = tokio::spawn(send_numbered(tx, u64::MAX, 32, 2));
    let receiver = tokio::spawn(recv_numbered(rx));
    chaos
        .wait_for("traffic", STEP, |c| {
            c.frames_seen(Flow::AToB, Kind::Data) > 50
        })
        .await;
    chaos.flip(Flow::AToB, When::in_header(Kind::Data, 4), 0x40);
    let eb = fails_within("the receiver of the bad byte fails", &b, STEP).await;
    match &eb {
        Error::Protocol { error, .. } => assert!(
            error.to_string().contains("0x44"),
            "the error names the kind: {error}"
        ),
        e => panic!("expected a protocol error, got {e:?}"),
    }
    let ea = fails_within("the sender learns why", &a, MARGIN).await;
    assert!(
        matches!(&ea, Error::PeerGoodbye(r) if r.contains("0x44")),
        "the goodbye carries the reason: {ea:?}"
    );
    let (sent, got) = within("pending futures resolve", MARGIN, async {
        (sender.await.expect("task"), receiver.await.expect("task"))
    })
    .await;
    accounted("values", &sent, &got);
    assert!(got.end.is_err(), "not a clean end: {:?}", got.end);
    drop((a, b, chaos));
    tasks.settle("after a flipped byte").await;
}

/// A frame injected into a healthy stream (a CREDIT for a channel that
/// never existed) is caught by the receiver, which names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_frame_for_an_unknown_channel_fails_both_sides() {
    let tasks = Tasks::baseline();
    let cfg = Config::default();
    let Proxied { a, b, chaos } = proxied(cfg.clone(), cfg).await;
    let (tx, rx) = channel::<Numbered>(&b, &a, 4).await;
    let sender = tokio::spawn(send_numbered(tx, u64::MAX, 32, 2));
    let receiver = tokio::spawn(recv_numbered(rx));
    chaos
        .wait_for("traffic", STEP, |c| {
            c.frames_seen(Flow::BToA, Kind::Data) > 50
        })
        .await;
    chaos.inject(
        Flow::BToA,
        crate::raw::wire(&[netchan::proto::Frame::Credit {
            chan: 999_999,
            grant: 1,
            received: 0,
        }]),
    );
    let ea = fails_within("the receiver of the injected frame fails", &a, STEP).await;
    assert!(
        matches!(&ea, Error::Protocol { error, .. } if *error == netchan::proto::ProtoError::UnknownChannel(999_999)),
        "got {ea:?}"
    );
    fails_within("the other side learns why", &b, MARGIN).await;
    let (sent, got) = within("pending futures resolve", MARGIN, async {
        (sender.await.expect("task"), receiver.await.expect("task"))
    })
    .await;
    accounted("values", &sent, &got);
    drop((a, b, chaos));
    tasks.settle("after an injected frame").await;
}

/// A cut while nothing is being sent: both sides see the end of stream at
/// once (no keepalive needed); a receiver waiting for a value and an
/// import waiting for its answer both resolve with errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_of_an_idle_connection_fails_both_sides_at_once() {
    let tasks = Tasks::baseline();
    let cfg = Config::default();
    let Proxied { a, b, chaos } = proxied(cfg.clone(), cfg).await;
    let (_tx, mut rx) = channel::<u32>(&a, &b, 1).await;
    let waiting = tokio::spawn(async move { rx.recv().await });
    // An import whose answer is cut off: the proxy dies at the next OPEN.
    chaos.cut(Flow::AToB, When::in_payload(Kind::Open, 3));
    let import = {
        let a = a.clone();
        tokio::spawn(async move { a.import_receiver::<u32>("nowhere", 1).await })
    };
    let ea = fails_within("the dialer fails", &a, MARGIN).await;
    let eb = fails_within("the acceptor fails", &b, MARGIN).await;
    for e in [ea, eb] {
        assert!(
            matches!(e, Error::ConnectionLost(_) | Error::Io(_)),
            "{e:?}"
        );
    }
    assert!(matches!(
        within("the waiting recv resolves", MARGIN, waiting)
            .await
            .expect("task"),
        Err(RecvError::Lost(_))
    ));
    assert!(
        within("the pending import resolves", MARGIN, import)
            .await
            .expect("task")
            .is_err()
    );
    drop((a, b, chaos));
    tasks.settle("after an idle cut").await;
}

/// The proxy dies at once, by the test's hand, while both sides are
/// mid-stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_connection_mid_stream_returns_every_unsent_value() {
    let tasks = Tasks::baseline();
    let cfg = Config::default();
    let Proxied { a, b, chaos } = proxied(cfg.clone(), cfg).await;
    let (tx, rx) = channel::<Numbered>(&a, &b, 8).await;
    let sender = tokio::spawn(send_numbered(tx, u64::MAX, 3000, 3));
    let receiver = tokio::spawn(recv_numbered(rx));
    chaos
        .wait_for("traffic", STEP, |c| c.forwarded(Flow::AToB) > 1 << 20)
        .await;
    chaos.cut_now();
    fails_within("the sender fails", &a, MARGIN).await;
    fails_within("the receiver fails", &b, MARGIN).await;
    let (sent, got) = within("pending futures resolve", MARGIN, async {
        (sender.await.expect("task"), receiver.await.expect("task"))
    })
    .await;
    accounted("values", &sent, &got);
    assert_eq!(
        sent.returned.len(),
        4,
        "the failed send and 3 more came back"
    );
    assert!(matches!(got.end, Err(RecvError::Lost(_))));
    drop((a, b, chaos));
    tasks.settle("after a kill").await;
}

/// One of an exporter's sessions is cut mid-frame; the exporter reports
/// it, and its other session goes on untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_between_an_exporter_and_one_client_leaves_the_other_clients_untouched() {
    let tasks = Tasks::baseline();
    let exp = netchan::Exporter::bind("127.0.0.1:0").await.expect("bind");
    let mut errors = exp.errors();
    let mut inbox = exp.export_receiver::<Numbered>("inbox", 8).expect("export");
    let drained = tokio::spawn(async move {
        let mut n = 0u64;
        while let Ok(Some(_)) | Err(RecvError::Lost(_)) = inbox.recv().await {
            n += 1;
        }
        n
    });
    let chaos = crate::chaos::Chaos::start(exp.local_addr());
    chaos.cut(Flow::AToB, When::in_payload(Kind::Data, 1000));
    let doomed = within(
        "connect through the proxy",
        STEP,
        Session::connect(chaos.addr()),
    )
    .await
    .expect("connect");
    let healthy = within("connect directly", STEP, Session::connect(exp.local_addr()))
        .await
        .expect("connect");
    let doomed_tx = within("import", STEP, doomed.import_sender::<Numbered>("inbox"))
        .await
        .expect("import");
    let healthy_tx = within("import", STEP, healthy.import_sender::<Numbered>("inbox"))
        .await
        .expect("import");
    let log = within(
        "the doomed client's sends",
        STEP,
        send_numbered(doomed_tx, 100, 5000, 1),
    )
    .await;
    assert!(
        !log.returned.is_empty() && log.sent.len() < 100,
        "the cut stopped the doomed client's values: {} sent, {:?} returned",
        log.sent.len(),
        log.returned
    );
    fails_within("the doomed client fails", &doomed, MARGIN).await;
    match within(
        "the exporter reports it",
        MARGIN,
        futures::StreamExt::next(&mut errors),
    )
    .await
    {
        Some(Error::ConnectionLost(_) | Error::Io(_)) => {}
        e => panic!("expected a lost connection, got {e:?}"),
    }
    for i in 0..100 {
        within(
            "the healthy client sends",
            STEP,
            healthy_tx.send(numbered(i, 5000)),
        )
        .await
        .expect("the other session is untouched");
    }
    assert!(!healthy.is_closed());
    drop((healthy_tx, doomed, chaos));
    healthy.close().await;
    exp.shutdown().await;
    let n = within("the inbox ends", STEP, drained).await.expect("task");
    assert!(n >= 100, "the healthy client's values arrived ({n})");
    drop((healthy, exp, errors));
    tasks.settle("after a cut at an exporter").await;
}
