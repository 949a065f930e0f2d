//! Channel semantics: capacity and backpressure, rendezvous, closing,
//! `select!`-safety, FIFO without loss or duplicates, fairness between
//! channels of one connection.

use std::time::Duration;

use futures::FutureExt;
use netchan::{Config, Error, Receiver, SendError, TrySendError, channel};
use serde_bytes::ByteBuf;

use crate::support::*;

// ---------------------------------------------------------------- capacity n

async fn send_waits_while_the_receivers_buffer_is_full(t: Transport) {
    for way in Way::ALL {
        let (a, b) = t.connect().await;
        let (tx, mut rx) = way.channel::<u32>(&a, &b, 2).await;
        send_ok("first send into an empty buffer of 2", &tx, 0).await;
        send_ok("second send into a buffer of 2", &tx, 1).await;
        let mut third = Box::pin(tx.send(2));
        stays_pending(
            &format!("{way:?}: a third send into a full buffer"),
            &mut third,
        )
        .await;
        assert_eq!(recv_some("first value", &mut rx).await, 0);
        within("the third send once a slot is free", &mut third)
            .await
            .expect("third send");
        drop(third);
        assert_eq!(recv_some("second value", &mut rx).await, 1);
        assert_eq!(recv_some("third value", &mut rx).await, 2);
        // Empty again: two sends complete without a recv, the next waits.
        send_ok("send into the emptied buffer", &tx, 3).await;
        send_ok("send into the emptied buffer", &tx, 4).await;
        let mut sixth = Box::pin(tx.send(5));
        stays_pending("a send into the full buffer again", &mut sixth).await;
        assert_eq!(recv_some("fourth value", &mut rx).await, 3);
        within("the sixth send", &mut sixth)
            .await
            .expect("sixth send");
    }
}
over_both!(send_waits_while_the_receivers_buffer_is_full);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_on_a_local_channel_waits_while_its_buffer_is_full() {
    bounded(async {
        let (tx, mut rx) = channel::<u32>(2);
        send_ok("first", &tx, 0).await;
        send_ok("second", &tx, 1).await;
        let mut third = Box::pin(tx.send(2));
        stays_pending("a third send into a full local buffer", &mut third).await;
        assert_eq!(recv_some("first", &mut rx).await, 0);
        within("third send", &mut third).await.expect("third send");
        assert_eq!(recv_some("second", &mut rx).await, 1);
        assert_eq!(recv_some("third", &mut rx).await, 2);
    })
    .await;
}

async fn a_full_channel_does_not_hold_up_another_channel_of_the_same_connection(t: Transport) {
    let (a, b) = t.connect().await;
    let (slow_tx, mut slow_rx) = Way::ExportedSender.channel::<u32>(&a, &b, 1).await;
    let (fast_tx, mut fast_rx) = Way::ExportedSender.channel::<u32>(&a, &b, 1).await;
    send_ok("fill the slow channel", &slow_tx, 0).await;
    let mut blocked = Box::pin(slow_tx.send(1));
    stays_pending("send on the full slow channel", &mut blocked).await;
    for i in 0..20 {
        send_ok("send on the other channel", &fast_tx, i).await;
        assert_eq!(
            recv_some("recv on the other channel", &mut fast_rx).await,
            i
        );
    }
    assert!(
        blocked.as_mut().now_or_never().is_none(),
        "the slow channel's send completed without a recv"
    );
    assert_eq!(recv_some("slow channel", &mut slow_rx).await, 0);
    within("the slow send once a slot is free", &mut blocked)
        .await
        .expect("slow send");
    assert_eq!(recv_some("slow channel", &mut slow_rx).await, 1);
}
over_both!(a_full_channel_does_not_hold_up_another_channel_of_the_same_connection);

async fn try_send_gives_the_value_back_when_the_buffer_is_full(t: Transport) {
    let (a, b) = t.connect().await;
    let (tx, mut rx) = Way::ExportedSender.channel::<String>(&a, &b, 1).await;
    tx.try_send("one".into())
        .expect("try_send with a free slot");
    match tx.try_send("two".into()) {
        Err(TrySendError::Full(v)) => assert_eq!(v, "two"),
        other => panic!("expected Full with the value, got {other:?}"),
    }
    assert_eq!(recv_some("first", &mut rx).await, "one");
    within("try_send succeeds once the slot is free again", async {
        let mut v = "three".to_string();
        loop {
            match tx.try_send(v) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) => v = back,
                Err(e) => panic!("unexpected try_send error {e:?}"),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(recv_some("third", &mut rx).await, "three");
}
over_both!(try_send_gives_the_value_back_when_the_buffer_is_full);

async fn a_value_larger_than_the_peer_accepts_is_refused_and_given_back(t: Transport) {
    let cfg = Config::default().max_message_len(1024);
    let (a, b) = t.connect_with(cfg).await;
    let (tx, mut rx) = Way::ExportedSender.channel::<Vec<u8>>(&a, &b, 2).await;
    match within("an oversized send", tx.send(vec![7u8; 4000])).await {
        Err(SendError(v, _)) => assert_eq!(v, vec![7u8; 4000], "the value comes back whole"),
        Ok(()) => panic!("a 4000-byte message was sent to a peer that accepts 1024"),
    }
    // The channel is not harmed.
    send_ok("a small send after the refused one", &tx, vec![1, 2, 3]).await;
    assert_eq!(recv_some("the small value", &mut rx).await, vec![1, 2, 3]);
}
over_both!(a_value_larger_than_the_peer_accepts_is_refused_and_given_back);

async fn a_refused_oversized_send_is_reported_on_errors(t: Transport) {
    let cfg = Config::default().max_message_len(1024);
    let (a, b) = t.connect_with(cfg).await;
    let mut errors = a.errors();
    let (tx, _rx) = Way::ExportedSender.channel::<Vec<u8>>(&a, &b, 2).await;
    assert!(
        within("oversized send", tx.send(vec![7u8; 4000]))
            .await
            .is_err()
    );
    match next_error("the sending session reports why", &mut errors).await {
        Error::MessageTooLarge { size, limit } => {
            assert!(size > 4000, "size {size}");
            assert_eq!(limit, 1024);
        }
        e => panic!("expected MessageTooLarge, got {e:?}"),
    }
}
over_both!(a_refused_oversized_send_is_reported_on_errors);

// ---------------------------------------------------------------- capacity 0

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendezvous_send_on_a_local_channel_completes_only_after_recv_took_the_value() {
    bounded(async {
        let (tx, mut rx) = channel::<u32>(0);
        let mut send = Box::pin(tx.send(7));
        stays_pending("a rendezvous send with no recv", &mut send).await;
        match tx.try_send(8) {
            Err(TrySendError::Full(8)) => {}
            other => panic!("try_send on a rendezvous channel without a receiver: {other:?}"),
        }
        let (got, sent) = within("recv meets the send", async {
            tokio::join!(rx.recv(), &mut send)
        })
        .await;
        assert_eq!(got.expect("recv"), Some(7));
        sent.expect("send");
        drop(send);
        // A recv that gave up does not let the next send through untaken.
        tokio::select! {
            r = rx.recv() => panic!("recv completed with no sender: {r:?}"),
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        let mut again = Box::pin(tx.send(9));
        stays_pending("a rendezvous send whose value nobody took", &mut again).await;
        assert_eq!(recv_some("the second value", &mut rx).await, 9);
        within("second send", &mut again)
            .await
            .expect("second send");
    })
    .await;
}

async fn rendezvous_send_completes_only_after_the_remote_recv_took_the_value(t: Transport) {
    for way in Way::ALL {
        let (a, b) = t.connect().await;
        let (tx, mut rx) = way.channel::<u32>(&a, &b, 0).await;
        for v in 0..3 {
            let mut send = Box::pin(tx.send(v));
            stays_pending(
                &format!("{way:?}: a rendezvous send before any recv"),
                &mut send,
            )
            .await;
            let (got, sent) = within("recv meets the send", async {
                tokio::join!(rx.recv(), &mut send)
            })
            .await;
            assert_eq!(got.expect("recv"), Some(v));
            sent.expect("send");
        }
        // A recv that waited and gave up lets one value travel, but the
        // send still completes only once a recv takes it.
        tokio::select! {
            r = rx.recv() => panic!("recv completed with no send: {r:?}"),
            () = tokio::time::sleep(QUIET) => {}
        }
        let mut send = Box::pin(tx.send(100));
        stays_pending(
            &format!("{way:?}: a rendezvous send whose value is not yet taken"),
            &mut send,
        )
        .await;
        assert_eq!(recv_some("the value", &mut rx).await, 100);
        within("the send once taken", &mut send)
            .await
            .expect("send");
    }
}
over_both!(rendezvous_send_completes_only_after_the_remote_recv_took_the_value);

// ------------------------------------------------------------------- closing

async fn dropping_the_last_sender_ends_the_receiver_after_the_buffered_values(t: Transport) {
    let (a, b) = t.connect().await;
    let (tx, mut rx) = Way::ExportedSender.channel::<u32>(&a, &b, 4).await;
    let tx2 = tx.clone();
    send_ok("send", &tx, 0).await;
    send_ok("send", &tx, 1).await;
    drop(tx);
    send_ok("send on a remaining clone", &tx2, 2).await;
    for i in 0..3 {
        assert_eq!(recv_some("buffered value", &mut rx).await, i);
    }
    receives_nothing("a clone of the sender still lives", &mut rx).await;
    send_ok("send on the clone", &tx2, 3).await;
    drop(tx2);
    assert_eq!(recv_some("value sent before the close", &mut rx).await, 3);
    recv_end("after the last sender went", &mut rx).await;
    recv_end("the end is sticky", &mut rx).await;
}
over_both!(dropping_the_last_sender_ends_the_receiver_after_the_buffered_values);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_local_sender_ends_the_receiver_after_the_buffered_values() {
    bounded(async {
        let (tx, mut rx) = channel::<u32>(4);
        let tx2 = tx.clone();
        send_ok("send", &tx, 0).await;
        drop(tx);
        send_ok("send on the clone", &tx2, 1).await;
        drop(tx2);
        assert_eq!(recv_some("first", &mut rx).await, 0);
        assert_eq!(recv_some("second", &mut rx).await, 1);
        recv_end("closed", &mut rx).await;
    })
    .await;
}

/// A rendezvous send waits for a receiver to take its value. If the
/// receiver is dropped instead, the send fails and gives the value back:
/// it was not delivered. Repeated so that the drop lands both before and
/// while the send waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_rendezvous_send_fails_with_its_value_when_the_receiver_is_dropped() {
    bounded(async {
        for round in 0..200u32 {
            let (tx, rx) = channel::<u32>(0);
            let send = tokio::spawn(async move { tx.send(round).await });
            if round % 2 == 0 {
                tokio::task::yield_now().await;
            }
            drop(rx);
            match within("the send", send).await.expect("send task") {
                Err(SendError(v, _)) => assert_eq!(v, round),
                Ok(()) => panic!("round {round}: a rendezvous send nobody took succeeded"),
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_on_a_local_channel_whose_receiver_is_gone_fail_with_the_value() {
    bounded(async {
        let (tx, rx) = channel::<String>(4);
        drop(rx);
        match within("send", tx.send("lost?".into())).await {
            Err(SendError(v, _)) => assert_eq!(v, "lost?"),
            Ok(()) => panic!("a send to a dropped receiver succeeded"),
        }
        match tx.try_send("again".into()) {
            Err(TrySendError::Closed(v)) => assert_eq!(v, "again"),
            other => panic!("expected Closed, got {other:?}"),
        }
    })
    .await;
}

async fn sends_fail_with_the_value_once_the_remote_receiver_is_gone(t: Transport) {
    let (a, b) = t.connect().await;
    // b sends into a's exported receiver, which a then drops.
    let (tx, rx) = Way::ExportedReceiver.channel::<u32>(&a, &b, 2).await;
    drop(rx);
    // Sends racing the close may still go out; once the close arrived,
    // every send fails and gives its value back.
    within("sends start failing", async {
        let mut v = 0;
        loop {
            match tx.send(v).await {
                Ok(()) => v += 1,
                Err(SendError(back, _)) => {
                    assert_eq!(back, v, "the failed send gives back its own value");
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(tx.send(999).await.is_err(), "a later send fails too");
}
over_both!(sends_fail_with_the_value_once_the_remote_receiver_is_gone);

/// Lets one value travel on a rendezvous channel: a `recv` that waited
/// and gave up leaves the sender one credit.
async fn give_up_a_recv(rx: &mut Receiver<u32>) {
    tokio::select! {
        r = rx.recv() => panic!("recv completed with no send: {r:?}"),
        () = tokio::time::sleep(QUIET) => {}
    }
}

async fn a_rendezvous_send_nobody_took_fails_with_its_value_when_the_receiver_is_dropped(
    t: Transport,
) {
    let (a, b) = t.connect().await;
    for travelled in [false, true] {
        for (how, tx, mut rx) in channels_every_way(&a, &b, 0).await {
            if how == "ExportedSender" {
                // Waits for the next importer instead (below).
                continue;
            }
            if travelled {
                give_up_a_recv(&mut rx).await;
            }
            let mut send = Box::pin(tx.send(100));
            stays_pending(&format!("{how}: a rendezvous send"), &mut send).await;
            drop(rx);
            match within("the send", &mut send).await {
                Err(SendError(v, _)) => assert_eq!(v, 100, "{how}"),
                Ok(()) => panic!(
                    "{how} (value travelled: {travelled}): a rendezvous send nobody took \
                     succeeded once the receiver was dropped"
                ),
            }
        }
    }
}
over_both!(a_rendezvous_send_nobody_took_fails_with_its_value_when_the_receiver_is_dropped);

async fn a_rendezvous_value_not_taken_when_the_receiving_side_hangs_up_goes_back_to_its_sender(
    t: Transport,
) {
    let (a, b) = t.connect().await;
    let name = unique("sync");
    let mut rx = a.export_receiver::<u32>(&name, 0).expect("export");
    let tx = within("import", b.import_sender::<u32>(&name))
        .await
        .expect("import");
    give_up_a_recv(&mut rx).await;
    let mut send = Box::pin(tx.send(100));
    stays_pending("a rendezvous send", &mut send).await;
    a.hangup(&name).expect("hangup");
    match within("the send", &mut send).await {
        Err(SendError(v, _)) => assert_eq!(v, 100),
        Ok(()) => panic!("a rendezvous send nobody took succeeded after a hangup"),
    }
    // Given back, so not received too.
    recv_end("the hung-up receiver", &mut rx).await;
}
over_both!(a_rendezvous_value_not_taken_when_the_receiving_side_hangs_up_goes_back_to_its_sender);

async fn a_rendezvous_receiver_dropped_at_any_moment_loses_and_duplicates_nothing(t: Transport) {
    let (a, b) = t.connect().await;
    for round in 0..24u64 {
        for (how, tx, mut rx) in channels_every_way(&a, &b, 0).await {
            if how == "ExportedSender" {
                // Its sends wait for the next importer instead.
                continue;
            }
            let stop = Duration::from_micros(round * 250);
            let receiver = tokio::spawn(async move {
                let mut got = Vec::new();
                let deadline = tokio::time::sleep(stop);
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        r = rx.recv() => match r {
                            Ok(Some(v)) => got.push(v),
                            other => panic!("recv: {other:?}"),
                        },
                        () = &mut deadline => break,
                    }
                }
                drop(rx);
                got
            });
            let mut sent = Vec::new();
            let mut back = None;
            for v in 0..10_000u32 {
                match within("a send", tx.send(v)).await {
                    Ok(()) => sent.push(v),
                    Err(SendError(v, _)) => {
                        back = Some(v);
                        break;
                    }
                }
            }
            let got = within("the receiver", receiver).await.expect("receiver");
            assert_eq!(
                got, sent,
                "{how}, round {round}: received exactly the values whose send succeeded"
            );
            assert_eq!(back, Some(sent.len() as u32), "{how}, round {round}");
        }
    }
}
over_both!(a_rendezvous_receiver_dropped_at_any_moment_loses_and_duplicates_nothing);

async fn a_rendezvous_value_an_importer_left_untaken_goes_to_the_next_importer(t: Transport) {
    let (a, b) = t.connect().await;
    let name = unique("work");
    let tx = a.export_sender::<u32>(&name).expect("export");
    for (round, travelled) in [false, true, false, true].into_iter().enumerate() {
        let round = round as u32;
        let mut rx = within("import", b.import_receiver::<u32>(&name, 0))
            .await
            .expect("import");
        if travelled {
            give_up_a_recv(&mut rx).await;
        }
        let mut send = Box::pin(tx.send(round));
        stays_pending("a rendezvous send", &mut send).await;
        drop(rx);
        stays_pending("a rendezvous send with no importer left", &mut send).await;
        let mut next = within("import again", b.import_receiver::<u32>(&name, 0))
            .await
            .expect("import again");
        let (got, sent) = within("the next importer takes the value", async {
            tokio::join!(next.recv(), &mut send)
        })
        .await;
        assert_eq!(
            got.expect("recv"),
            Some(round),
            "value travelled: {travelled}"
        );
        sent.expect("the send completes once the next importer took the value");
        receives_nothing("after the one value", &mut next).await;
    }
}
over_both!(a_rendezvous_value_an_importer_left_untaken_goes_to_the_next_importer);

async fn a_rendezvous_send_nobody_took_fails_with_its_value_when_the_connection_is_cut(
    t: Transport,
) {
    for travelled in [false, true] {
        for i in 0..4 {
            let mut c = t.connect_cuttable().await;
            let (how, tx, mut rx) = channels_every_way(&c.a, &c.b, 0).await.swap_remove(i);
            if travelled {
                give_up_a_recv(&mut rx).await;
            }
            let mut send = Box::pin(tx.send(100));
            stays_pending(&format!("{how}: a rendezvous send"), &mut send).await;
            c.cut().await;
            match within("the send", &mut send).await {
                Err(SendError(v, _)) => assert_eq!(v, 100, "{how}"),
                Ok(()) => panic!(
                    "{how} (value travelled: {travelled}): a rendezvous send nobody took \
                     succeeded once the connection was cut"
                ),
            }
            drop(rx);
        }
    }
}
over_both!(a_rendezvous_send_nobody_took_fails_with_its_value_when_the_connection_is_cut);

// --------------------------------------------------------------- select-safe

async fn a_send_cancelled_by_select_did_not_send_its_value(t: Transport) {
    for way in Way::ALL {
        let (a, b) = t.connect().await;
        let (tx, mut rx) = way.channel::<u32>(&a, &b, 1).await;
        send_ok("fill the buffer", &tx, 1).await;
        tokio::select! {
            r = tx.send(2) => panic!("{way:?}: a send into a full buffer completed: {r:?}"),
            () = tokio::time::sleep(QUIET) => {}
        }
        assert_eq!(recv_some("the buffered value", &mut rx).await, 1);
        receives_nothing("the cancelled value must not arrive", &mut rx).await;
        send_ok("a send after the cancelled one", &tx, 3).await;
        assert_eq!(
            recv_some("the next value is the one sent after", &mut rx).await,
            3,
            "{way:?}"
        );
    }
}
over_both!(a_send_cancelled_by_select_did_not_send_its_value);

async fn a_recv_cancelled_by_select_took_nothing(t: Transport) {
    for way in Way::ALL {
        let (a, b) = t.connect().await;
        let (tx, mut rx) = way.channel::<u32>(&a, &b, 2).await;
        for _ in 0..3 {
            tokio::select! {
                r = rx.recv() => panic!("{way:?}: recv on an empty channel completed: {r:?}"),
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        send_ok("send after cancelled recvs", &tx, 5).await;
        send_ok("send after cancelled recvs", &tx, 6).await;
        assert_eq!(recv_some("first value", &mut rx).await, 5, "{way:?}");
        assert_eq!(recv_some("second value", &mut rx).await, 6, "{way:?}");
    }
}
over_both!(a_recv_cancelled_by_select_took_nothing);

async fn select_loops_that_cancel_sends_and_recvs_lose_and_duplicate_nothing(t: Transport) {
    const N: u32 = 300;
    for way in Way::ALL {
        let (a, b) = t.connect().await;
        let (tx, mut rx) = way.channel::<u32>(&a, &b, 2).await;
        let producer = tokio::spawn(async move {
            let mut i = 0;
            let mut cancelled = 0u32;
            while i < N {
                tokio::select! {
                    r = tx.send(i) => {
                        r.expect("send");
                        i += 1;
                        if i & 63 == 0 {
                            // Pause so that the consumer's recvs time out.
                            tokio::time::sleep(Duration::from_millis(15)).await;
                        }
                    }
                    () = tokio::time::sleep(Duration::from_millis(1)) => cancelled += 1,
                }
            }
            (cancelled, tx)
        });
        let mut got = Vec::new();
        let mut idle = 0u32;
        let mut rounds = 0u32;
        within("the select loop receives every value", async {
            while got.len() < N as usize {
                tokio::select! {
                    r = rx.recv() => got.push(r.expect("recv").expect("a value")),
                    () = tokio::time::sleep(Duration::from_millis(1)) => idle += 1,
                }
                rounds += 1;
                if rounds == 37 {
                    rounds = 0;
                    // Pause so that the producer's sends time out.
                    tokio::time::sleep(Duration::from_millis(15)).await;
                }
            }
        })
        .await;
        assert_eq!(
            got,
            (0..N).collect::<Vec<_>>(),
            "{way:?}: in order, each once"
        );
        let (cancelled, tx) = within("producer", producer).await.expect("producer");
        receives_nothing("nothing after the last value", &mut rx).await;
        drop(tx);
        assert!(cancelled > 0, "{way:?}: no send was ever cancelled");
        assert!(idle > 0, "{way:?}: no recv was ever cancelled");
    }
}
over_both!(select_loops_that_cancel_sends_and_recvs_lose_and_duplicate_nothing);

// ---------------------------------------------------------------------- FIFO

async fn values_arrive_in_order_without_loss_or_duplicates(t: Transport) {
    const N: u32 = 600;
    let (a, b) = t.connect().await;
    let (tx, mut rx) = Way::ExportedSender
        .channel::<(u32, ByteBuf)>(&a, &b, 4)
        .await;
    // Some messages are far larger than one chunk (64 KiB): chunking must
    // not reorder them with the small ones around them.
    let size = |i: u32| {
        if i % 100 == 7 {
            150_000
        } else {
            (i % 13) as usize
        }
    };
    let producer = tokio::spawn(async move {
        for i in 0..N {
            tx.send((i, ByteBuf::from(vec![i as u8; size(i)])))
                .await
                .expect("send");
        }
    });
    for i in 0..N {
        let (j, body) = recv_some("next value", &mut rx).await;
        assert_eq!(j, i, "values arrive in the order sent");
        assert_eq!(body.len(), size(i));
        assert!(body.iter().all(|&x| x == i as u8), "body of {i} intact");
    }
    within("producer", producer).await.expect("producer");
    recv_end("after the producer dropped its sender", &mut rx).await;
}
over_both!(values_arrive_in_order_without_loss_or_duplicates);

async fn each_clone_of_a_sender_keeps_its_own_order(t: Transport) {
    const PER: u32 = 200;
    let (a, b) = t.connect().await;
    let (tx, mut rx) = Way::ExportedSender.channel::<(u8, u32)>(&a, &b, 3).await;
    let producers: Vec<_> = (0..3u8)
        .map(|k| {
            let tx = tx.clone();
            tokio::spawn(async move {
                for i in 0..PER {
                    tx.send((k, i)).await.expect("send");
                }
            })
        })
        .collect();
    drop(tx);
    let mut next = [0u32; 3];
    within("receive every value", async {
        while let Some((k, i)) = rx.recv().await.expect("recv") {
            assert_eq!(i, next[k as usize], "producer {k}'s values stay in order");
            next[k as usize] += 1;
        }
    })
    .await;
    assert_eq!(next, [PER; 3], "every value of every producer arrived");
    for p in producers {
        within("producer", p).await.expect("producer");
    }
}
over_both!(each_clone_of_a_sender_keeps_its_own_order);

// ------------------------------------------------------------------ fairness

async fn a_large_message_does_not_hold_up_small_messages_on_another_channel(t: Transport) {
    const BIG: usize = (16 << 20) - 64;
    let (a, b) = t.connect().await;
    let (big_tx, mut big_rx) = Way::ExportedSender.channel::<ByteBuf>(&a, &b, 1).await;
    let (small_tx, mut small_rx) = Way::ExportedSender.channel::<u32>(&a, &b, 16).await;
    // The send completes once the message is queued (it has credit); its
    // 256 chunks are still to be written.
    send_ok(
        "the 16 MiB message",
        &big_tx,
        ByteBuf::from(vec![0xA5; BIG]),
    )
    .await;
    for i in 0..8 {
        send_ok("a small message", &small_tx, i).await;
    }
    let mut big_recv = Box::pin(big_rx.recv());
    for i in 0..8 {
        assert_eq!(recv_some("a small message", &mut small_rx).await, i);
        assert!(
            big_recv.as_mut().now_or_never().is_none(),
            "the 16 MiB message was complete before small message {i} arrived: \
             the small messages waited behind it"
        );
    }
    let big = match within("the large message", big_recv).await {
        Ok(Some(v)) => v,
        other => panic!("the large message did not arrive: {other:?}"),
    };
    assert_eq!(big.len(), BIG);
    assert!(
        big.iter().all(|&x| x == 0xA5),
        "the large message is intact"
    );
}
over_both!(a_large_message_does_not_hold_up_small_messages_on_another_channel);

/// A message under the hand-over size (2 MiB on a one-thread runtime)
/// decodes in the receiving task. Taking a row of them already buffered,
/// that task still gives the runtime's other tasks a turn after each one,
/// as it does after a larger one decoded on the blocking pool.
async fn a_receiver_taking_large_messages_lets_other_tasks_run_between_them(t: Transport) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    const N: usize = 6;
    const SIZE: usize = 1 << 20;
    let (a, b) = t.connect().await;
    let (tx, mut rx) = Way::ExportedSender.channel::<ByteBuf>(&a, &b, N).await;
    for i in 0..N {
        send_ok("a 1 MiB message", &tx, ByteBuf::from(vec![i as u8; SIZE])).await;
    }
    // Wait until all of them are in the receiver's buffer.
    let buffered = || {
        [&a, &b]
            .iter()
            .flat_map(|s| s.stats().channels)
            .filter(|c| c.direction == netchan::Direction::Receiving)
            .map(|c| c.queued)
            .sum::<u64>()
    };
    within("all six messages in the receiver's buffer", async {
        while buffered() < N as u64 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    let ticks = Arc::new(AtomicU64::new(0));
    let ticker = tokio::spawn({
        let ticks = ticks.clone();
        async move {
            loop {
                ticks.fetch_add(1, Ordering::Relaxed);
                // Back into the run queue at once, as a task woken by a
                // message would be (`yield_now` defers its wake-up).
                let mut woke = false;
                std::future::poll_fn(|cx| {
                    if std::mem::replace(&mut woke, true) {
                        std::task::Poll::Ready(())
                    } else {
                        cx.waker().wake_by_ref();
                        std::task::Poll::Pending
                    }
                })
                .await;
            }
        }
    });
    let receiver = tokio::spawn({
        let ticks = ticks.clone();
        async move {
            let mut seen = Vec::new();
            for i in 0..N {
                let v = rx.recv().await.expect("recv").expect("a value");
                assert_eq!((v.len(), v[0]), (SIZE, i as u8), "value {i}");
                seen.push(ticks.load(Ordering::Relaxed));
            }
            seen
        }
    });
    let seen = within("the receiver", receiver).await.expect("receiver");
    ticker.abort();
    assert!(
        seen.windows(2).all(|w| w[1] > w[0]),
        "another task ran between each two 1 MiB values taken: ticks seen {seen:?}"
    );
}

over_both!(
    a_receiver_taking_large_messages_lets_other_tasks_run_between_them,
    one_thread
);

/// A large message decodes away from the receiving task; a `recv` given
/// up while that runs (a `select!` whose other branch won) loses nothing:
/// the next `recv` returns the value, and order is kept.
async fn a_recv_given_up_during_a_large_decode_loses_nothing(t: Transport) {
    const BIG: usize = 4 << 20;
    let (a, b) = t.connect().await;
    let (tx, mut rx) = Way::ExportedSender
        .channel::<(u32, ByteBuf)>(&a, &b, 4)
        .await;
    for i in 0..3u32 {
        send_ok(
            "a large message",
            &tx,
            (i, ByteBuf::from(vec![i as u8; BIG])),
        )
        .await;
    }
    send_ok("a small message", &tx, (3, ByteBuf::new())).await;
    for i in 0..4u32 {
        // Poll once (for a large message this starts its decode, which is
        // then still running) and give up unless the value is there.
        let mut first = Box::pin(rx.recv());
        let got = match first.as_mut().now_or_never() {
            Some(r) => r,
            None => {
                drop(first);
                within("the next value", rx.recv()).await
            }
        };
        let (k, bytes) = match got {
            Ok(Some(v)) => v,
            other => panic!("value {i} did not arrive: {other:?}"),
        };
        assert_eq!(k, i, "values keep their order across a given-up recv");
        let len = if i < 3 { BIG } else { 0 };
        assert_eq!(bytes.len(), len);
        assert!(bytes.iter().all(|&x| x == i as u8), "value {i} is intact");
    }
}
over_both!(a_recv_given_up_during_a_large_decode_loses_nothing);

// -------------------------------------------------------------------- stream

async fn a_receiver_is_a_stream_that_ends_when_the_channel_closes(t: Transport) {
    use futures::StreamExt;
    let (a, b) = t.connect().await;
    let (tx, rx) = Way::ExportedSender.channel::<u32>(&a, &b, 4).await;
    let producer = tokio::spawn(async move {
        for i in 0..50 {
            tx.send(i).await.expect("send");
        }
    });
    let got: Vec<u32> = within("collect the stream", rx.map(|r| r.expect("item")).collect()).await;
    assert_eq!(got, (0..50).collect::<Vec<_>>());
    within("producer", producer).await.expect("producer");
}
over_both!(a_receiver_is_a_stream_that_ends_when_the_channel_closes);

/// A rendezvous receiver already waiting in `recv` when an importer
/// arrives grants that importer credit, so its first send completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rendezvous_receiver_waiting_before_the_import_takes_the_first_send() {
    crate::support::bounded(async {
        let (server, client) = netchan::Session::pair();
        let mut inbox = server.export_receiver::<u32>("rv", 0).expect("export");
        let waiting = tokio::spawn(async move { inbox.recv().await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let tx = client.import_sender::<u32>("rv").await.expect("import");
        tokio::time::timeout(std::time::Duration::from_secs(5), tx.send(7))
            .await
            .expect("the first send completes")
            .expect("sent");
        let got = waiting.await.expect("task");
        assert_eq!(got.expect("recv"), Some(7));
    })
    .await;
}
