//! Configured limits reached by well-behaved programs: one channel more
//! than allowed, ten thousand channels opened and closed, more handles in
//! one message than allowed. The program gets an error; the connection
//! and its other channels go on; tables return to empty.

use std::time::Duration;

use futures::StreamExt;
use netchan::proto::{Dir, Frame, RejectCode};
use netchan::{Config, Error, Receiver, Sender, Session};

use crate::common::*;
use crate::raw::*;

/// Waits (bounded) until `s` has `n` channels in its table.
async fn channels_become(what: &str, s: &Session, n: usize) {
    within(what, STEP, async {
        while s.channel_count() != n {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_one_channel_more_than_allowed_fails_and_breaks_nothing() {
    const LIMIT: usize = 8;
    let tasks = Tasks::baseline();
    let cfg = Config::default().max_channels(LIMIT);
    let (a, b) = direct(cfg.clone(), cfg).await;
    let tx = b.export_sender::<u32>("x").expect("export");
    let mut rxs = Vec::new();
    for _ in 0..LIMIT {
        rxs.push(
            within("import", STEP, a.import_receiver::<u32>("x", 1))
                .await
                .expect("import within the limit"),
        );
    }
    match within("one import more", STEP, a.import_receiver::<u32>("x", 1)).await {
        Err(Error::TooManyChannels(n)) => assert_eq!(n, LIMIT),
        other => panic!("expected TooManyChannels, got {other:?}"),
    }
    // Every channel still works: each value goes to one importer.
    for i in 0..LIMIT as u32 {
        within("send", STEP, tx.send(i)).await.expect("send");
    }
    let mut got = Vec::new();
    for rx in &mut rxs {
        got.push(
            within("recv", STEP, rx.recv())
                .await
                .expect("recv")
                .expect("a value"),
        );
    }
    got.sort_unstable();
    assert_eq!(got, (0..LIMIT as u32).collect::<Vec<_>>());
    // Closing one makes room for one.
    drop(rxs.pop());
    channels_become("the closed channel leaves a's table", &a, LIMIT - 1).await;
    channels_become("... and b's", &b, LIMIT - 1).await;
    rxs.push(
        within("import again", STEP, a.import_receiver::<u32>("x", 1))
            .await
            .expect("room for one again"),
    );
    assert!(!a.is_closed() && !b.is_closed());
    drop((rxs, tx));
    channels_become("a's table empties", &a, 0).await;
    channels_become("b's table empties", &b, 0).await;
    a.close().await;
    drop((a, b));
    tasks.settle("after the channel limit").await;
}

/// The peer (announcing a larger limit) opens one channel more than this
/// side allows: that OPEN is refused with TooManyChannels, the connection
/// goes on, and a closed channel makes room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_opening_one_channel_more_than_allowed_is_refused_not_cut_off() {
    let tasks = Tasks::baseline();
    let (s, mut raw) = RawPeer::against(Config::default().max_channels(4)).await;
    let inbox = s.export_receiver::<u32>("in", 1).expect("export");
    raw.handshake().await;
    for i in 0..4 {
        raw.send_frame(open(1 + 2 * i, Dir::OpenerSends, 0, "in"))
            .await;
        assert!(matches!(
            raw.recv_non_keepalive().await,
            Frame::Accept { .. }
        ));
    }
    raw.send_frame(open(9, Dir::OpenerSends, 0, "in")).await;
    assert!(matches!(
        raw.recv_non_keepalive().await,
        Frame::Reject {
            chan: 9,
            code: RejectCode::TooManyChannels,
            ..
        }
    ));
    raw.send_frame(Frame::Close {
        chan: 1,
        code: netchan::proto::CloseCode::Done,
        reason: String::new(),
    })
    .await;
    assert!(matches!(
        raw.recv_non_keepalive().await,
        Frame::Close { chan: 1, .. }
    ));
    raw.send_frame(open(11, Dir::OpenerSends, 0, "in")).await;
    assert!(matches!(
        raw.recv_non_keepalive().await,
        Frame::Accept { chan: 11, .. }
    ));
    assert!(!s.is_closed());
    let closing = tokio::spawn({
        let s = s.clone();
        async move { s.close().await }
    });
    raw.expect_goodbye(STEP).await;
    drop(raw);
    within("close", STEP, closing).await.expect("task");
    drop((s, inbox));
    tasks.settle("after a refused open").await;
}

/// Ten thousand imports, each closed right after, in both directions:
/// the tables of both sides return to empty and nothing is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_open_then_close_cycles_leave_both_tables_empty() {
    let tasks = Tasks::baseline();
    let (a, b) = direct(Config::default(), Config::default()).await;
    let mut a_errors = a.errors();
    let mut b_errors = b.errors();
    let tx = b.export_sender::<u32>("out").expect("export");
    let inbox = b.export_receiver::<u32>("in", 1).expect("export");
    within("10,000 cycles", Duration::from_secs(30), async {
        for i in 0..10_000 {
            if i % 2 == 0 {
                let rx: Receiver<u32> = a.import_receiver("out", 1).await.expect("import");
                drop(rx);
            } else {
                let tx: Sender<u32> = a.import_sender("in").await.expect("import");
                drop(tx);
            }
            // Closes are asynchronous; the table stays small all along.
            assert!(
                a.channel_count() <= 64,
                "a's table grows: {}",
                a.channel_count()
            );
        }
    })
    .await;
    channels_become("a's table empties", &a, 0).await;
    channels_become("b's table empties", &b, 0).await;
    // Both sides still work.
    let mut rx = a.import_receiver::<u32>("out", 1).await.expect("import");
    tx.send(5).await.expect("send");
    assert_eq!(rx.recv().await.expect("recv"), Some(5));
    drop(rx);
    a.close().await;
    assert!(
        within("a's errors end", STEP, a_errors.next())
            .await
            .is_none()
    );
    assert!(
        within("b's errors end", STEP, b_errors.next())
            .await
            .is_none()
    );
    drop((a, b, tx, inbox));
    tasks.settle("after 10,000 cycles").await;
}

/// Handles in one message over `max_handles`: the send fails and gives
/// the message back with every handle still usable; a message within the
/// limit goes through; no channel is left behind.
async fn too_many_handles(sender_max: usize, receiver_max: usize) {
    let tasks = Tasks::baseline();
    let (a, b) = direct(
        Config::default().max_handles(sender_max),
        Config::default().max_handles(receiver_max),
    )
    .await;
    let mut a_errors = a.errors();
    let mut inbox = b
        .export_receiver::<Vec<Sender<u32>>>("inbox", 4)
        .expect("export");
    let tx = within("import", STEP, a.import_sender::<Vec<Sender<u32>>>("inbox"))
        .await
        .expect("import");
    let limit = sender_max.min(receiver_max);
    let n = limit + 1;
    let mut rxs = Vec::new();
    let mut handles = Vec::new();
    for _ in 0..n {
        let (t, r) = netchan::channel::<u32>(1);
        handles.push(t);
        rxs.push(r);
    }
    let back = match within("a send with too many handles", STEP, tx.send(handles)).await {
        Err(e) => e.0,
        Ok(()) => panic!("{n} handles went out although the receiver allows {receiver_max}"),
    };
    assert_eq!(back.len(), n, "every handle comes back");
    match within("the error is reported", STEP, a_errors.next()).await {
        Some(Error::Codec(m)) => assert!(m.contains("handles"), "{m}"),
        e => panic!("expected a codec error naming the handles, got {e:?}"),
    }
    // The returned handles still work locally.
    for (t, r) in back.iter().zip(rxs.iter_mut()) {
        t.send(1).await.expect("local send");
        assert_eq!(r.recv().await.expect("recv"), Some(1));
    }
    // Within the limit of both sides, the message goes through and every
    // handle works across the connection.
    let ok: Vec<Sender<u32>> = back.into_iter().take(limit).collect();
    let k = ok.len();
    within("a send within the limit", STEP, tx.send(ok))
        .await
        .expect("send within the limit");
    let remote = within("recv", STEP, inbox.recv())
        .await
        .expect("recv")
        .expect("a value");
    assert_eq!(remote.len(), k);
    for (i, t) in remote.iter().enumerate() {
        within("send through a carried handle", STEP, t.send(i as u32))
            .await
            .expect("send");
        assert_eq!(
            within("recv", STEP, rxs[i].recv()).await.expect("recv"),
            Some(i as u32)
        );
    }
    assert!(!a.is_closed() && !b.is_closed(), "nothing broke");
    drop((remote, rxs, tx, inbox));
    channels_become("a's table empties", &a, 0).await;
    channels_become("b's table empties", &b, 0).await;
    a.close().await;
    drop((a, b, a_errors));
    tasks.settle("after too many handles").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_handles_in_one_message_than_allowed_fail_the_send_and_break_nothing() {
    too_many_handles(4, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_handles_than_the_receiver_allows_fail_the_send_even_when_the_sender_allows_them() {
    too_many_handles(8, 4).await;
}
