//! Channels inside messages: a `Sender` or `Receiver` sent in a message
//! arrives as a live handle bound to the same connection, in either
//! direction, nested, several per message, and passed on again.

use std::time::Duration;

use netchan::{Receiver, SendError, Sender, Session, channel};

use crate::support::*;

/// Both directions of one connection: (from, to).
fn directions<'a>(a: &'a Session, b: &'a Session) -> [(&'static str, &'a Session, &'a Session); 2] {
    [("dialler to acceptor", a, b), ("acceptor to dialler", b, a)]
}

/// A channel from `from` to `to` for messages of type `T`.
async fn post<T: netchan::Message>(
    from: &Session,
    to: &Session,
    capacity: usize,
) -> (Sender<T>, Receiver<T>) {
    Way::ExportedReceiver.channel::<T>(to, from, capacity).await
}

async fn a_sender_sent_in_a_message_arrives_live(t: Transport) {
    let (a, b) = t.connect().await;
    for (dir, from, to) in directions(&a, &b) {
        let (post, mut inbox) = post::<Sender<String>>(from, to, 2).await;
        let (reply_tx, mut reply_rx) = channel::<String>(2);
        send_ok("send a sender", &post, reply_tx).await;
        let remote = recv_some("the sender arrives", &mut inbox).await;
        send_ok("send on the received sender", &remote, "one".into()).await;
        send_ok("send on the received sender", &remote, "two".into()).await;
        assert_eq!(recv_some("reply", &mut reply_rx).await, "one", "{dir}");
        assert_eq!(recv_some("reply", &mut reply_rx).await, "two", "{dir}");
        // The capacity of the receiver that stayed home applies remotely.
        send_ok("send", &remote, "three".into()).await;
        send_ok("send", &remote, "four".into()).await;
        let mut fifth = Box::pin(remote.send("five".into()));
        stays_pending(
            &format!("{dir}: a third send into a buffer of 2"),
            &mut fifth,
        )
        .await;
        assert_eq!(recv_some("reply", &mut reply_rx).await, "three");
        within("fifth send", &mut fifth).await.expect("fifth send");
        drop(fifth);
        // Dropping the travelled sender closes the channel cleanly.
        drop(remote);
        assert_eq!(recv_some("reply", &mut reply_rx).await, "four");
        assert_eq!(recv_some("reply", &mut reply_rx).await, "five");
        recv_end("the travelled sender was dropped", &mut reply_rx).await;
    }
}
over_both!(a_sender_sent_in_a_message_arrives_live);

async fn a_receiver_sent_in_a_message_arrives_live(t: Transport) {
    let (a, b) = t.connect().await;
    for (dir, from, to) in directions(&a, &b) {
        let (post, mut inbox) = post::<Receiver<u32>>(from, to, 2).await;
        let (tx, rx) = channel::<u32>(3);
        send_ok("send a receiver", &post, rx).await;
        let mut remote = recv_some("the receiver arrives", &mut inbox).await;
        for i in 0..20 {
            send_ok("send to the travelled receiver", &tx, i).await;
            assert_eq!(
                recv_some("recv on the travelled receiver", &mut remote).await,
                i,
                "{dir}"
            );
        }
        send_ok("send", &tx, 20).await;
        send_ok("send", &tx, 21).await;
        drop(tx);
        assert_eq!(recv_some("buffered", &mut remote).await, 20);
        assert_eq!(recv_some("buffered", &mut remote).await, 21);
        recv_end("the sender that stayed home was dropped", &mut remote).await;
    }
}
over_both!(a_receiver_sent_in_a_message_arrives_live);

async fn a_sender_of_senders_carries_a_sender_that_works(t: Transport) {
    let (a, b) = t.connect().await;
    for (dir, from, to) in directions(&a, &b) {
        let (post, mut inbox) = post::<Sender<Sender<u32>>>(from, to, 1).await;
        let (outer_tx, mut outer_rx) = channel::<Sender<u32>>(1);
        send_ok("send a sender of senders", &post, outer_tx).await;
        let remote_outer = recv_some("it arrives", &mut inbox).await;
        let (inner_tx, mut inner_rx) = channel::<u32>(1);
        send_ok("send a sender through it", &remote_outer, inner_tx).await;
        let inner = recv_some("the inner sender arrives back", &mut outer_rx).await;
        send_ok("send on the inner sender", &inner, 42).await;
        assert_eq!(
            recv_some("through both levels", &mut inner_rx).await,
            42,
            "{dir}"
        );
        drop(inner);
        recv_end("the inner sender was dropped", &mut inner_rx).await;
    }
}
over_both!(a_sender_of_senders_carries_a_sender_that_works);

type Bundle = (Sender<u32>, Receiver<u32>, Vec<Sender<u32>>);

async fn a_message_may_carry_several_handles(t: Transport) {
    let (a, b) = t.connect().await;
    for (dir, from, to) in directions(&a, &b) {
        let (post, mut inbox) = post::<Bundle>(from, to, 1).await;
        let (t1, mut r1) = channel::<u32>(1);
        let (t2, r2) = channel::<u32>(1);
        let (ts, mut rs): (Vec<_>, Vec<_>) = (0..3).map(|_| channel::<u32>(1)).unzip();
        send_ok("send a bundle of handles", &post, (t1, r2, ts)).await;
        let (rt1, mut rr2, rts) = recv_some("the bundle arrives", &mut inbox).await;
        send_ok("first sender", &rt1, 1).await;
        assert_eq!(recv_some("first", &mut r1).await, 1, "{dir}");
        send_ok("local sender of the travelled receiver", &t2, 2).await;
        assert_eq!(recv_some("second", &mut rr2).await, 2, "{dir}");
        assert_eq!(rts.len(), 3);
        for (k, tx) in rts.iter().enumerate() {
            send_ok("sender from the vec", tx, 10 + k as u32).await;
        }
        for (k, rx) in rs.iter_mut().enumerate() {
            assert_eq!(
                recv_some("vec", rx).await,
                10 + k as u32,
                "{dir}: each handle keeps its place"
            );
        }
    }
}
over_both!(a_message_may_carry_several_handles);

async fn a_received_sender_can_travel_back_and_still_works(t: Transport) {
    let (a, b) = t.connect().await;
    for (dir, from, to) in directions(&a, &b) {
        let (there, mut there_inbox) = post::<Sender<u32>>(from, to, 1).await;
        let (back, mut back_inbox) = post::<Sender<u32>>(to, from, 1).await;
        let (tx, mut rx) = channel::<u32>(1);
        send_ok("send a sender there", &there, tx).await;
        let at_to = recv_some("it arrives", &mut there_inbox).await;
        send_ok("send it back", &back, at_to).await;
        let returned = recv_some("it comes back", &mut back_inbox).await;
        for i in 0..5 {
            send_ok("send on the returned sender", &returned, i).await;
            assert_eq!(recv_some("arrives home", &mut rx).await, i, "{dir}");
        }
        drop(returned);
        recv_end("every copy of the sender is gone", &mut rx).await;
    }
}
over_both!(a_received_sender_can_travel_back_and_still_works);

async fn sends_to_a_travelled_receiver_that_was_dropped_fail_with_the_value(t: Transport) {
    let (a, b) = t.connect().await;
    for (dir, from, to) in directions(&a, &b) {
        let (post, mut inbox) = post::<Receiver<u32>>(from, to, 1).await;
        let (tx, rx) = channel::<u32>(2);
        send_ok("send a receiver", &post, rx).await;
        let remote = recv_some("it arrives", &mut inbox).await;
        drop(remote);
        within("sends start failing", async {
            let mut v = 0;
            loop {
                match tx.send(v).await {
                    Ok(()) => v += 1,
                    Err(SendError(back, _)) => {
                        assert_eq!(back, v, "{dir}: the value comes back");
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }
}
over_both!(sends_to_a_travelled_receiver_that_was_dropped_fail_with_the_value);
