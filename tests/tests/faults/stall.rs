//! Half-open connections: the proxy stops forwarding but keeps both
//! sockets open, as a dead peer or a black-holing middlebox would. Only
//! keepalive can tell; with `keepalive(100 ms)` a side presumes the peer
//! dead after 300 ms of silence.

use std::time::Duration;

use netchan::proto::{Kind, ProtoError};
use netchan::{Config, Error, RecvError};

use crate::chaos::Flow;
use crate::common::*;

const KEEPALIVE: Duration = Duration::from_millis(100);
const DEAD_AFTER: Duration = Duration::from_millis(300);

fn keepalive_timeout(what: &str, e: &Error) {
    match e {
        Error::Protocol {
            error: ProtoError::KeepaliveTimeout(d),
            ..
        } => assert_eq!(*d, DEAD_AFTER, "{what}"),
        e => panic!("{what}: expected KeepaliveTimeout, got {e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_stalled_both_ways_is_detected_by_keepalive_on_both_sides() {
    let tasks = Tasks::baseline();
    let cfg = Config::default().keepalive(KEEPALIVE);
    let Proxied { a, b, chaos } = proxied(cfg.clone(), cfg).await;
    // A channel whose buffer is full, so a send is pending, and a receiver
    // waiting for a value that never comes.
    let (tx, rx) = channel::<Numbered>(&a, &b, 1).await;
    let (_idle_tx, mut idle_rx) = channel::<Numbered>(&b, &a, 1).await;
    tx.send(numbered(0, 8)).await.expect("fills the buffer");
    chaos.stall(Flow::AToB, true);
    chaos.stall(Flow::BToA, true);
    let pending_send = tokio::spawn(async move { tx.send(numbered(1, 8)).await });
    let pending_recv = tokio::spawn(async move { idle_rx.recv().await });

    let ea = fails_within("the dialer gives up", &a, DEAD_AFTER + MARGIN).await;
    let eb = fails_within("the acceptor gives up", &b, DEAD_AFTER + MARGIN).await;
    keepalive_timeout("dialer", &ea);
    keepalive_timeout("acceptor", &eb);

    let sent = within("the pending send resolves", MARGIN, pending_send)
        .await
        .expect("task");
    match sent {
        Err(e) => assert_eq!(e.0.0, 1, "the unsent value comes back"),
        Ok(()) => panic!("a send completed on a dead connection"),
    }
    let got = within("the pending recv resolves", MARGIN, pending_recv)
        .await
        .expect("task");
    assert!(matches!(got, Err(RecvError::Lost(_))), "got {got:?}");
    // The receiver gets what arrived before the stall, then an error,
    // never a clean end.
    let got = within("the receiver ends", MARGIN, recv_numbered(rx)).await;
    assert!(got.received.len() <= 1, "{:?}", got.received);
    assert!(matches!(got.end, Err(RecvError::Lost(_))), "{:?}", got.end);
    drop((a, b, chaos));
    tasks
        .settle("after keepalive gave up on a stalled connection")
        .await;
}

/// After keepalive gave up, nothing may wait for the dead peer: the
/// proxy stays stalled with every socket open (as a vanished host leaves
/// a connection), and every task of both sessions must end all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_task_waits_for_a_half_open_peer_after_keepalive_gave_up() {
    let tasks = Tasks::baseline();
    let cfg = Config::default().keepalive(KEEPALIVE);
    let Proxied { a, b, chaos } = proxied(cfg.clone(), cfg).await;
    chaos.stall(Flow::AToB, true);
    chaos.stall(Flow::BToA, true);
    fails_within("the dialer gives up", &a, DEAD_AFTER + MARGIN).await;
    fails_within("the acceptor gives up", &b, DEAD_AFTER + MARGIN).await;
    drop((a, b));
    tasks
        .settle("with the half-open connection still in place")
        .await;
    drop(chaos);
}

/// The stall comes while large values fill every socket buffer on the
/// way, so the sender's writer is blocked in a write: keepalive must fire
/// all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_stalled_under_full_socket_buffers_is_detected_by_keepalive() {
    let tasks = Tasks::baseline();
    let cfg = Config::default().keepalive(KEEPALIVE);
    let Proxied { a, b, chaos } = proxied(cfg.clone(), cfg).await;
    let (tx, rx) = channel::<Numbered>(&a, &b, 64).await;
    // A burst of 1 MiB sends: each large send lets the session's writer
    // run (a sender that never yielded would starve it, and keepalive
    // would end the connection before the stall).
    let sender = tokio::spawn(send_numbered(tx, u64::MAX, 1 << 20, 2));
    let receiver = tokio::spawn(recv_numbered(rx));
    chaos
        .wait_for("bulk traffic", STEP, |c| {
            c.frames_seen(Flow::AToB, Kind::Data) > 20
        })
        .await;
    chaos.stall(Flow::AToB, true);
    chaos.stall(Flow::BToA, true);
    let ea = fails_within("the sender gives up", &a, DEAD_AFTER + MARGIN).await;
    let eb = fails_within("the receiver gives up", &b, DEAD_AFTER + MARGIN).await;
    keepalive_timeout("sender", &ea);
    keepalive_timeout("receiver", &eb);
    let (sent, got) = within("pending futures resolve", MARGIN, async {
        (sender.await.expect("task"), receiver.await.expect("task"))
    })
    .await;
    accounted("bulk", &sent, &got);
    assert!(!sent.returned.is_empty(), "the blocked send came back");
    drop((a, b, chaos));
    tasks
        .settle("after keepalive gave up under full buffers")
        .await;
}

/// Only the dialer's direction stalls: the acceptor hears nothing and
/// gives up; its goodbye still reaches the dialer, which fails with the
/// reason rather than waiting for its own timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_stalled_one_way_fails_both_sides_within_the_keepalive_deadline() {
    let tasks = Tasks::baseline();
    let cfg = Config::default().keepalive(KEEPALIVE);
    let Proxied { a, b, chaos } = proxied(cfg.clone(), cfg).await;
    chaos.stall(Flow::AToB, true);
    let eb = fails_within(
        "the side that hears nothing gives up",
        &b,
        DEAD_AFTER + MARGIN,
    )
    .await;
    keepalive_timeout("acceptor", &eb);
    let ea = fails_within("the other side fails too", &a, DEAD_AFTER + MARGIN).await;
    match &ea {
        Error::PeerGoodbye(reason) => assert!(reason.contains("silent"), "{reason}"),
        Error::Protocol {
            error: ProtoError::KeepaliveTimeout(_),
            ..
        } => {}
        e => panic!("expected the peer's goodbye or a keepalive timeout, got {e:?}"),
    }
    drop((a, b, chaos));
    tasks
        .settle("after keepalive gave up on a one-way stall")
        .await;
}
