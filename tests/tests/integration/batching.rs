//! What a tokio or futures user reaches for, across the connection:
//! `try_recv` (as tokio's), `recv_many`, and `Sender` as a `Sink`
//! (`feed`, `send_all`), in both directions a named channel can take, over
//! memory and TCP.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use netchan::{Session, TryRecvError, channel};

use crate::support::*;

/// Sends `values` and waits until every one of them is in the receiving
/// end's buffer (`drain` confirms arrival).
async fn send_and_settle(tx: &netchan::Sender<u32>, from: &Session, values: std::ops::Range<u32>) {
    for v in values {
        send_ok("send", tx, v).await;
    }
    within("drain", from.drain(Some(LIMIT)))
        .await
        .expect("the values arrive");
}

/// The session a way's sender lives on.
fn sending<'a>(way: Way, a: &'a Session, b: &'a Session) -> &'a Session {
    match way {
        Way::ExportedSender => a,
        Way::ExportedReceiver => b,
    }
}

async fn try_recv_is_empty_then_takes_what_arrived_then_reports_the_clean_end(t: Transport) {
    for way in Way::ALL {
        let (a, b) = t.connect().await;
        let (tx, mut rx) = way.channel::<u32>(&a, &b, 8).await;
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty), "{way:?}");
        send_and_settle(&tx, sending(way, &a, &b), 0..5).await;
        for v in 0..5 {
            assert_eq!(rx.try_recv(), Ok(Some(v)), "{way:?}");
        }
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty), "{way:?}");
        // A value taken with try_recv frees its slot like recv: eight more
        // fit again.
        send_and_settle(&tx, sending(way, &a, &b), 5..13).await;
        let mut buf = Vec::new();
        assert_eq!(rx.recv_many(&mut buf, 100).await.expect("recv_many"), 8);
        assert_eq!(buf, (5..13).collect::<Vec<_>>());
        drop(tx);
        if way == Way::ExportedReceiver {
            // An exported receiver is an inbox that outlives its importers:
            // it ends with its session.
            a.close().await;
        }
        let mut ended = false;
        for _ in 0..200 {
            match rx.try_recv() {
                Err(TryRecvError::Empty) => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Err(TryRecvError::Closed) => {
                    ended = true;
                    break;
                }
                other => panic!("{way:?}: expected the clean end, got {other:?}"),
            }
        }
        assert!(ended, "{way:?}: try_recv never saw the end");
        assert_eq!(within("recv", rx.recv()).await.ok(), Some(None));
    }
}
over_both!(try_recv_is_empty_then_takes_what_arrived_then_reports_the_clean_end);

async fn recv_many_waits_for_one_then_takes_what_is_ready_up_to_the_limit(t: Transport) {
    for way in Way::ALL {
        let (a, b) = t.connect().await;
        let (tx, mut rx) = way.channel::<u32>(&a, &b, 16).await;
        let mut buf = Vec::new();
        assert_eq!(rx.recv_many(&mut buf, 0).await.expect("limit 0"), 0);
        {
            let mut waiting = Box::pin(rx.recv_many(&mut buf, 4));
            stays_pending("recv_many on an empty channel", &mut waiting).await;
            send_ok("send", &tx, 100).await;
            assert_eq!(within("recv_many", &mut waiting).await.expect("one"), 1);
        }
        assert_eq!(buf, [100]);
        buf.clear();
        send_and_settle(&tx, sending(way, &a, &b), 0..10).await;
        assert_eq!(rx.recv_many(&mut buf, 4).await.expect("4"), 4);
        assert_eq!(rx.recv_many(&mut buf, 4).await.expect("4"), 4);
        assert_eq!(rx.recv_many(&mut buf, 4).await.expect("2"), 2);
        assert_eq!(buf, (0..10).collect::<Vec<_>>());
    }
}
over_both!(recv_many_waits_for_one_then_takes_what_is_ready_up_to_the_limit);

async fn send_all_through_a_small_window_keeps_order_and_loses_nothing(t: Transport) {
    for way in Way::ALL {
        for cap in [1usize, 4, 64] {
            let (a, b) = t.connect().await;
            let (mut tx, mut rx) = way.channel::<u32>(&a, &b, cap).await;
            let producer = tokio::spawn(async move {
                let mut values = futures::stream::iter((0..2000u32).map(Ok));
                tx.send_all(&mut values).await.map_err(|e| e.0)?;
                tx.feed(2000).await.map_err(|e| e.0)?;
                tx.flush().await.map_err(|e| e.0)
            });
            for want in 0..=2000u32 {
                assert_eq!(
                    recv_some("recv", &mut rx).await,
                    want,
                    "{way:?} capacity {cap}"
                );
            }
            within("producer", producer)
                .await
                .expect("task")
                .expect("send_all");
        }
    }
}
over_both!(send_all_through_a_small_window_keeps_order_and_loses_nothing);

/// One way of taking values, in turn: `recv_many` with several limits,
/// `recv` and `try_recv`. Returns how many it took.
async fn take_some<T: netchan::Message>(
    rx: &mut netchan::Receiver<T>,
    turn: usize,
    into: &mut Vec<T>,
) -> usize {
    const LIMITS: [usize; 6] = [1, 2, 3, 7, 64, 100];
    match turn % 8 {
        6 => {
            into.push(recv_some("recv", rx).await);
            1
        }
        7 => match rx.try_recv() {
            Ok(Some(v)) => {
                into.push(v);
                1
            }
            Ok(None) => panic!("try_recv: the channel ended early"),
            Err(TryRecvError::Empty) => 0,
            Err(e) => panic!("try_recv: {e:?}"),
        },
        k => within("recv_many", rx.recv_many(into, LIMITS[k]))
            .await
            .expect("recv_many"),
    }
}

/// Values that arrive together (many small messages in one read, kept
/// back to back in the receiving end's buffer) are taken whole and in
/// order by any mix of `recv_many` (limits 1 to 100), `recv` and
/// `try_recv`, at capacities around every batch size, on every way a
/// channel is made; and the end comes after the last (where the sender's
/// drop ends the channel).
async fn values_arriving_together_are_taken_in_order_by_any_mix_of_takes(t: Transport) {
    for cap in [1usize, 2, 3, 4, 5, 8, 16, 63, 64, 65, 300] {
        let (a, b) = t.connect().await;
        for (way, mut tx, mut rx) in channels_every_way(&a, &b, cap).await {
            let total = 3 * cap as u32 + 70;
            let producer = tokio::spawn(async move {
                let mut values = futures::stream::iter((0..total).map(Ok));
                tx.send_all(&mut values).await.map_err(|e| e.0)
            });
            let mut got = Vec::new();
            let mut turn = 0;
            while got.len() < total as usize {
                take_some(&mut rx, turn, &mut got).await;
                turn += 1;
            }
            assert_eq!(got, (0..total).collect::<Vec<_>>(), "{way}, capacity {cap}");
            within("producer", producer)
                .await
                .expect("task")
                .expect("send_all");
            // An exported receiver stays open for more importers.
            if way != "ExportedReceiver" {
                recv_end(&format!("{way}, capacity {cap}: the end"), &mut rx).await;
            }
        }
    }
}
over_both!(values_arriving_together_are_taken_in_order_by_any_mix_of_takes);

/// Messages of sizes on both sides of the receiving end's small-message
/// bound (512 bytes), and far above it, arriving together and mixed, are
/// taken whole and in order by any mix of takes.
async fn small_and_large_messages_arriving_together_keep_their_order(t: Transport) {
    const SIZES: [usize; 12] = [0, 1, 30, 500, 505, 506, 507, 508, 600, 3000, 70_000, 20];
    let value = |i: usize| -> Vec<u8> { vec![i as u8; SIZES[i % SIZES.len()]] };
    for way in Way::ALL {
        for cap in [1usize, 4, 5, 64] {
            let (a, b) = t.connect().await;
            let (mut tx, mut rx) = way.channel::<Vec<u8>>(&a, &b, cap).await;
            let total = 10 * SIZES.len();
            let producer = tokio::spawn(async move {
                let mut values = futures::stream::iter((0..total).map(|i| Ok(value(i))));
                tx.send_all(&mut values).await.map_err(|e| e.0)
            });
            let mut got = Vec::new();
            let mut turn = 0;
            while got.len() < total {
                take_some(&mut rx, turn, &mut got).await;
                turn += 1;
            }
            for (i, v) in got.iter().enumerate() {
                assert!(
                    *v == value(i),
                    "{way:?}, capacity {cap}: value {i} has {} bytes, {} expected",
                    v.len(),
                    SIZES[i % SIZES.len()]
                );
            }
            within("producer", producer)
                .await
                .expect("task")
                .expect("send_all");
        }
    }
}
over_both!(small_and_large_messages_arriving_together_keep_their_order);

/// Feeds `values` to `tx`'s sink; each must be accepted.
async fn feed_ok(what: &str, tx: &mut netchan::Sender<u32>, values: std::ops::Range<u32>) {
    for v in values {
        within(what, tx.feed(v)).await.expect("feed");
    }
}

/// Receives `values`, in order.
async fn recv_in_order(what: &str, rx: &mut netchan::Receiver<u32>, values: std::ops::Range<u32>) {
    for want in values {
        assert_eq!(recv_some(what, rx).await, want, "{what}");
    }
}

/// Where the sink gathers values for one remote channel (an imported
/// sender, a sender that travelled to the peer), it accepts exactly one
/// value per free slot of the receiver's buffer, as `send` completes. On
/// the other ways (an exported sender's importers, a local sender whose
/// receiver travelled) each value goes on its own, and one more waits in
/// the sink itself.
async fn a_sink_takes_one_value_per_free_slot_and_one_more_per_recv(t: Transport) {
    for cap in [1usize, 3, 4, 7, 8, 64] {
        let (a, b) = t.connect().await;
        for (how, mut tx, mut rx) in channels_every_way(&a, &b, cap).await {
            let what = format!("{how}, capacity {cap}");
            let gathers = how == "ExportedReceiver" || how == "a carried sender";
            let slots = if gathers { cap } else { cap + 1 };
            // As many values as the receiver has slots: each feed completes.
            feed_ok(&what, &mut tx, 0..slots as u32).await;
            // The next waits for a slot.
            {
                let mut next = Box::pin(tx.feed(slots as u32));
                stays_pending(&format!("{what}: a feed beyond the slots"), &mut next).await;
                // As in Go, one receive lets exactly one waiting send in.
                assert_eq!(recv_some(&what, &mut rx).await, 0, "{what}");
                within(&what, &mut next).await.expect("feed");
            }
            {
                let mut after = Box::pin(tx.feed(slots as u32 + 1));
                stays_pending(&format!("{what}: a second feed after one recv"), &mut after).await;
                assert_eq!(recv_some(&what, &mut rx).await, 1, "{what}");
                within(&what, &mut after).await.expect("feed");
            }
            // The flush waits for the receiver's slots: receive meanwhile.
            let receive = recv_in_order(&what, &mut rx, 2..slots as u32 + 2);
            let (flushed, ()) = tokio::join!(within(&what, tx.flush()), receive);
            flushed.expect("flush");
        }
    }
}
over_both!(a_sink_takes_one_value_per_free_slot_and_one_more_per_recv);

async fn values_fed_then_sent_on_the_same_sender_keep_their_order(t: Transport) {
    let (a, b) = t.connect().await;
    for (how, mut tx, mut rx) in channels_every_way(&a, &b, 16).await {
        feed_ok(&how, &mut tx, 0..5).await;
        // Not flushed: a send and a try_send on the same clone go after
        // them, never before.
        send_ok(&how, &tx, 5).await;
        within(&how, tx.feed(6)).await.expect("feed");
        if how == "a carried receiver" {
            // Its sends complete once the relay took them, and a try_send
            // finds no taker waiting: a send instead.
            send_ok(&how, &tx, 7).await;
        } else if let Err(e) = tx.try_send(7) {
            panic!("{how}: try_send: {e:?}");
        }
        recv_in_order(&how, &mut rx, 0..8).await;
    }
}
over_both!(values_fed_then_sent_on_the_same_sender_keep_their_order);

/// Fed and never flushed: dropping the sender still delivers them (a
/// `Sink` need not, but nothing is lost silently here).
async fn values_fed_and_not_flushed_go_when_the_sender_is_dropped(t: Transport) {
    let (a, b) = t.connect().await;
    for (how, mut tx, mut rx) in channels_every_way(&a, &b, 16).await {
        feed_ok(&how, &mut tx, 0..10).await;
        drop(tx);
        recv_in_order(&how, &mut rx, 0..10).await;
    }
}
over_both!(values_fed_and_not_flushed_go_when_the_sender_is_dropped);

async fn a_sink_on_a_closed_channel_gives_the_value_back(t: Transport) {
    let (a, b) = t.connect().await;
    let (mut tx, rx) = Way::ExportedReceiver.channel::<u32>(&a, &b, 4).await;
    // The inbox's receiver goes away: the peer's sends must fail.
    drop(rx);
    let mut refused = None;
    for v in 0..200u32 {
        if let Err(e) = within("feed", tx.feed(v)).await {
            refused = Some(e.0);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(
        refused.is_some(),
        "a closed channel refuses the sink's values"
    );
}

over_both!(a_sink_on_a_closed_channel_gives_the_value_back);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_recv_on_a_local_rendezvous_channel_does_not_pose_as_a_waiting_receiver() {
    let (tx, mut rx) = channel::<u32>(0);
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    // Nobody waits in recv, so a non-blocking send finds no taker.
    assert!(matches!(
        tx.try_send(1),
        Err(netchan::TrySendError::Full(1))
    ));
    let sender = tokio::spawn(async move { tx.send(2).await.map_err(|e| e.0) });
    let mut got = None;
    for _ in 0..200 {
        match rx.try_recv() {
            Ok(Some(v)) => {
                got = Some(v);
                break;
            }
            Err(TryRecvError::Empty) => {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        got,
        Some(2),
        "a waiting sender's value is taken by try_recv"
    );
    within("the rendezvous send completes on take", sender)
        .await
        .expect("task")
        .expect("send");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_is_a_stream_and_a_sender_a_sink_for_forward() {
    let (a, b) = Session::pair();
    let (tx, rx) = Way::ExportedSender.channel::<u32>(&a, &b, 8).await;
    let (out_tx, mut out_rx) = channel::<u32>(8);
    let pump = tokio::spawn(async move {
        rx.map(|r| r.map_err(|_| netchan::SendError(0, netchan::SendErrorKind::Closed)))
            .forward(out_tx)
            .await
    });
    let producer = tokio::spawn(async move {
        for v in 0..50 {
            tx.send(v).await.map_err(|e| e.0)?;
        }
        Ok::<_, u32>(())
    });
    for v in 0..50 {
        assert_eq!(recv_some("forwarded", &mut out_rx).await, v);
    }
    within("producer", producer)
        .await
        .expect("task")
        .expect("sends");
    within("forward ends with the stream", pump)
        .await
        .expect("task")
        .expect("forward");
}

/// How many sends completed, once the count has not moved for
/// [`QUIET`] and is at least `at_least`.
async fn settled(sent: &AtomicUsize, at_least: usize) -> usize {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let n = sent.load(Ordering::SeqCst);
        if n >= at_least {
            tokio::time::sleep(QUIET).await;
            if sent.load(Ordering::SeqCst) == n {
                return n;
            }
        } else {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {n} sends completed, {at_least} expected"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

async fn recv_many_lets_in_one_waiting_send_per_value_it_takes(t: Transport) {
    let (a, b) = t.connect().await;
    for cap in [1usize, 3, 4, 8, 64] {
        for (how, tx, mut rx) in channels_every_way(&a, &b, cap).await {
            let sent = Arc::new(AtomicUsize::new(0));
            let counted = sent.clone();
            let sender = tokio::spawn(async move {
                for v in 0u32.. {
                    if tx.send(v).await.is_err() {
                        break;
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                }
            });
            // A full buffer, and a send waiting behind it.
            let base = settled(&sent, cap).await;
            let mut next = 0u32;
            let mut buf = Vec::new();
            for take in [1, cap, 1] {
                buf.clear();
                let n = within("recv_many", rx.recv_many(&mut buf, take))
                    .await
                    .expect("recv_many");
                assert_eq!(n, take, "{how}, capacity {cap}: a full buffer gives {take}");
                let want: Vec<u32> = (next..next + take as u32).collect();
                assert_eq!(buf, want, "{how}, capacity {cap}");
                next += take as u32;
                assert_eq!(
                    settled(&sent, base + next as usize).await,
                    base + next as usize,
                    "{how}, capacity {cap}: {next} values taken let in exactly {next} sends"
                );
            }
            // (An exported sender's next send waits for a new importer.)
            sender.abort();
        }
    }
}
over_both!(recv_many_lets_in_one_waiting_send_per_value_it_takes);

/// Two programs' `Job`: the same name, so the import matches, and a
/// different shape, so a large number does not decode as a byte.
mod wide {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    pub(crate) struct Job(pub(crate) u64);
}
mod narrow {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    pub(crate) struct Job(pub(crate) u8);
}

async fn a_value_recv_many_cannot_decode_is_reported_in_its_place(t: Transport) {
    // One by one, and all in one write (so they arrive together, and the
    // receiving end buffers them as one run).
    for (way, together) in Way::ALL.into_iter().flat_map(|w| [(w, false), (w, true)]) {
        let (a, b) = t.connect().await;
        let name = unique("jobs");
        let (tx, mut rx) = match way {
            Way::ExportedSender => {
                let tx = a.export_sender::<wide::Job>(&name).expect("export");
                let rx = within("import", b.import_receiver::<narrow::Job>(&name, 16))
                    .await
                    .expect("import");
                (tx, rx)
            }
            Way::ExportedReceiver => {
                let rx = a.export_receiver::<narrow::Job>(&name, 16).expect("export");
                let tx = within("import", b.import_sender::<wide::Job>(&name))
                    .await
                    .expect("import");
                (tx, rx)
            }
        };
        let mut tx = tx;
        if together {
            let mut values = futures::stream::iter([1, 2, 1000, 3, 4].map(|v| Ok(wide::Job(v))));
            within("send_all", tx.send_all(&mut values))
                .await
                .map_err(|e| e.0)
                .expect("send_all");
        } else {
            for v in [1, 2, 1000, 3, 4] {
                send_ok("send", &tx, wide::Job(v)).await;
            }
        }
        within("drain", sending(way, &a, &b).drain(Some(LIMIT)))
            .await
            .expect("the values arrive");
        let mut buf = Vec::new();
        let n = rx.recv_many(&mut buf, 10).await.expect("the values before");
        assert_eq!(
            (n, &buf[..]),
            (2, &[narrow::Job(1), narrow::Job(2)][..]),
            "{way:?}, together: {together}"
        );
        match rx.recv_many(&mut buf, 10).await {
            Err(netchan::RecvError::Decode(e)) => assert!(e.contains("Job"), "{way:?}: {e}"),
            other => panic!("{way:?}: expected the decode error in its place, got {other:?}"),
        }
        buf.clear();
        let n = rx.recv_many(&mut buf, 10).await.expect("the values after");
        assert_eq!(
            (n, &buf[..]),
            (2, &[narrow::Job(3), narrow::Job(4)][..]),
            "{way:?}, together: {together}"
        );
    }
}
over_both!(a_value_recv_many_cannot_decode_is_reported_in_its_place);

async fn recv_many_on_an_import_of_n_values_takes_exactly_n(t: Transport) {
    for (n, cap, limit) in [
        (5usize, 8usize, 100usize),
        (5, 2, 3),
        (1, 1, 10),
        (70, 64, 1000),
    ] {
        let (hub, imps) = t.hub(2).await;
        let name = unique("n");
        let tx = hub.export_sender::<u32>(&name).expect("export");
        let mut some = within("import n", imps[0].import_receiver_n::<u32>(&name, cap, n))
            .await
            .expect("import n");
        let total = n as u32 + 10;
        let producer = tokio::spawn(async move {
            for i in 0..total {
                tx.send(i).await.expect("send");
            }
        });
        let mut buf = Vec::new();
        loop {
            let got = within("recv_many", some.recv_many(&mut buf, limit))
                .await
                .expect("recv_many");
            if got == 0 {
                break;
            }
            assert!(got <= limit, "n {n}: {got} values for a limit of {limit}");
        }
        let want: Vec<u32> = (0..n as u32).collect();
        assert_eq!(
            buf, want,
            "an import of {n} values (capacity {cap}) gives exactly those"
        );
        let mut rest = within("import", imps[1].import_receiver::<u32>(&name, 4))
            .await
            .expect("import");
        for i in n as u32..total {
            assert_eq!(
                recv_some("the rest go to the other importer", &mut rest).await,
                i
            );
        }
        within("producer", producer).await.expect("producer");
    }
}
over_both!(recv_many_on_an_import_of_n_values_takes_exactly_n);

/// A value whose decoding, for one number, waits (boundedly) for a sign
/// from the sending program, and notes whether the sign came.
mod gate {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    /// Decoding `Gate(WAIT_AT)` waits for `LATE_SENT`.
    pub(crate) const WAIT_AT: u32 = 12;
    /// Set by the sender once a send past the full buffer completed.
    pub(crate) static LATE_SENT: AtomicBool = AtomicBool::new(false);
    /// Whether `LATE_SENT` came while `Gate(WAIT_AT)` was decoded.
    pub(crate) static SEEN: AtomicBool = AtomicBool::new(false);
    /// Held by the test that uses the flags above.
    pub(crate) static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[derive(serde::Serialize, Debug, PartialEq)]
    pub(crate) struct Gate(pub(crate) u32);

    impl<'de> serde::Deserialize<'de> for Gate {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Gate, D::Error> {
            let v = u32::deserialize(d)?;
            if v == WAIT_AT {
                let until = Instant::now() + Duration::from_secs(5);
                while !LATE_SENT.load(Ordering::SeqCst) && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(1));
                }
                SEEN.store(LATE_SENT.load(Ordering::SeqCst), Ordering::SeqCst);
            }
            Ok(Gate(v))
        }
    }
}

/// `recv_many` takes a full buffer of 16 in one batch on a one-thread
/// runtime, and the decoding of its 13th value waits for the sender's
/// 17th send, which needs a slot the batch freed. The batch's grants
/// must reach the sender while the batch is still decoded: on this
/// runtime the connection's writer task runs only once `recv_many`
/// returns. `exported_receiver`: the receiving side exports, else the
/// sending side does. Over TCP, the sender on a runtime of its own.
fn recv_many_grants_slots_while_it_still_decodes_its_batch(exported_receiver: bool) {
    use gate::{Gate, LATE_SENT, ONE_AT_A_TIME, SEEN, WAIT_AT};
    const CAP: usize = 16;
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    LATE_SENT.store(false, Ordering::SeqCst);
    SEEN.store(false, Ordering::SeqCst);
    let one_thread = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    };
    // The address, from whichever side exports.
    let (to_sender, from_main) = std::sync::mpsc::channel();
    let (to_main, from_sender) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let (filled_tx, filled_rx) = std::sync::mpsc::channel::<()>();
    let sender = std::thread::spawn(move || {
        one_thread().block_on(async move {
            // The sending side: its session, or its exporter.
            let (tx, session, exporter) = if exported_receiver {
                let addr = from_main.recv().expect("address");
                let s = within("connect", Session::connect(addr))
                    .await
                    .expect("connect");
                let tx = within("import", s.import_sender::<Gate>("gate"))
                    .await
                    .expect("import");
                (tx, Some(s), None)
            } else {
                let exp = netchan::Exporter::bind("127.0.0.1:0").await.expect("bind");
                let tx = exp.export_sender::<Gate>("gate").expect("export");
                to_main.send(exp.local_addr()).expect("address");
                (tx, None, Some(exp))
            };
            for v in 0..CAP as u32 {
                send_ok("fill the buffer", &tx, Gate(v)).await;
            }
            match (&session, &exporter) {
                (Some(s), _) => within("drain", s.drain(Some(LIMIT))).await,
                (_, Some(e)) => within("drain", e.drain(Some(LIMIT))).await,
                _ => unreachable!(),
            }
            .expect("the values arrive");
            filled_tx.send(()).expect("filled");
            send_ok("a send past the full buffer", &tx, Gate(CAP as u32)).await;
            LATE_SENT.store(true, Ordering::SeqCst);
            // Keep the connection until the receiver is done.
            let _ = tokio::task::spawn_blocking(move || done_rx.recv_timeout(LIMIT))
                .await
                .expect("wait");
        });
    });
    one_thread().block_on(async move {
        let (_keep, mut rx) = if exported_receiver {
            let exp = netchan::Exporter::bind("127.0.0.1:0").await.expect("bind");
            let rx = exp.export_receiver::<Gate>("gate", CAP).expect("export");
            to_sender.send(exp.local_addr()).expect("address");
            (Some(exp), rx)
        } else {
            let addr = from_sender.recv().expect("address");
            let s = within("connect", Session::connect(addr))
                .await
                .expect("connect");
            let rx = within("import", s.import_receiver::<Gate>("gate", CAP))
                .await
                .expect("import");
            drop(s);
            (None, rx)
        };
        tokio::task::spawn_blocking(move || filled_rx.recv_timeout(LIMIT))
            .await
            .expect("wait")
            .expect("the sender filled the buffer");
        let mut buf = Vec::new();
        let n = within("recv_many", rx.recv_many(&mut buf, CAP))
            .await
            .expect("recv_many");
        assert_eq!(n, CAP, "a full buffer in one batch");
        assert_eq!(buf, (0..CAP as u32).map(Gate).collect::<Vec<_>>());
        assert!(
            SEEN.load(Ordering::SeqCst),
            "exported receiver: {exported_receiver}: the send past the full buffer \
             completed while value {WAIT_AT} of the batch was decoded"
        );
        assert_eq!(recv_some("the late value", &mut rx).await, Gate(CAP as u32));
    });
    let _ = done_tx.send(());
    sender.join().expect("sender thread");
}

#[test]
fn recv_many_grants_slots_while_it_still_decodes_its_batch_exported_receiver() {
    recv_many_grants_slots_while_it_still_decodes_its_batch(true);
}

#[test]
fn recv_many_grants_slots_while_it_still_decodes_its_batch_exported_sender() {
    recv_many_grants_slots_while_it_still_decodes_its_batch(false);
}
