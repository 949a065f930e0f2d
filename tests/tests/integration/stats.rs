//! `Session::stats` and `Exporter::stats` against known traffic: exact
//! message and byte counts per channel, queued values and credit on both
//! sides, the time a blocked sender waited, and bytes that agree across
//! the connection.

use std::time::Duration;

use netchan::{Direction, Exporter, Session};

use crate::support::*;

/// A value of 100 bytes encodes as 101: bincode's one-byte length prefix,
/// then the bytes (`serde_bytes` or not, a `Vec<u8>` is a length and its
/// bytes).
fn value() -> Vec<u8> {
    vec![0xab; 100]
}
const ENCODED: u64 = 101;

async fn each_value_of_a_channel_is_counted_once_on_each_side_with_its_bytes(t: Transport) {
    for way in Way::ALL {
        let (a, b) = t.connect().await;
        let (tx, mut rx) = way.channel::<Vec<u8>>(&a, &b, 16).await;
        let (sending, receiving) = match way {
            Way::ExportedSender => (&a, &b),
            Way::ExportedReceiver => (&b, &a),
        };
        for _ in 0..10 {
            send_ok("send", &tx, value()).await;
        }
        within("drain", sending.drain(Some(LIMIT)))
            .await
            .expect("arrival");
        let out = sending.stats();
        let out = out
            .channels
            .iter()
            .find(|c| c.direction == Direction::Sending && c.messages > 0)
            .expect("the sending end");
        assert_eq!((out.messages, out.bytes), (10, 10 * ENCODED), "{way:?}");
        assert_eq!(out.queued, 0, "{way:?}: every arrival confirmed");
        assert_eq!(out.credit, 6, "{way:?}: 16 slots, 10 in use");
        assert_eq!(out.capacity, 16);
        let inn = receiving.stats();
        let inn = inn
            .channels
            .iter()
            .find(|c| c.direction == Direction::Receiving && c.messages > 0)
            .expect("the receiving end");
        assert_eq!(
            (inn.messages, inn.bytes, inn.queued),
            (10, 10 * ENCODED, 10),
            "{way:?}"
        );
        assert_eq!(
            inn.name, out.name,
            "{way:?}: both ends know the export name"
        );
        for _ in 0..4 {
            recv_some("recv", &mut rx).await;
        }
        let queued = receiving
            .stats()
            .channels
            .iter()
            .find(|c| c.id == inn.id)
            .map(|c| c.queued);
        assert_eq!(queued, Some(6), "{way:?}: four taken");
    }
}
over_both!(each_value_of_a_channel_is_counted_once_on_each_side_with_its_bytes);

async fn what_one_side_wrote_the_other_read(t: Transport) {
    let (a, b) = t.connect().await;
    let (tx, mut rx) = Way::ExportedSender.channel::<Vec<u8>>(&a, &b, 4).await;
    for _ in 0..20 {
        send_ok("send", &tx, value()).await;
        recv_some("recv", &mut rx).await;
    }
    // Both directions quiet: a rendezvous round trip each way.
    barrier(&a, &b).await;
    barrier(&b, &a).await;
    let mut settled = false;
    for _ in 0..100 {
        let (sa, sb) = (a.stats(), b.stats());
        if (sa.bytes_sent, sa.frames_sent) == (sb.bytes_received, sb.frames_received)
            && (sb.bytes_sent, sb.frames_sent) == (sa.bytes_received, sa.frames_received)
        {
            assert!(sa.bytes_sent > 20 * ENCODED, "{sa:?}");
            assert!(sa.age > Duration::ZERO);
            assert_eq!(sa.peer_addr, a.peer_addr(), "stats name the peer");
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(settled, "bytes and frames agree across the connection");
}
over_both!(what_one_side_wrote_the_other_read);

async fn a_sender_blocked_on_a_full_buffer_shows_the_time_it_waited(t: Transport) {
    let (a, b) = t.connect().await;
    let (tx, mut rx) = Way::ExportedSender.channel::<u32>(&a, &b, 1).await;
    send_ok("fill the buffer", &tx, 1).await;
    let waiting = {
        let tx = tx.clone();
        tokio::spawn(async move { tx.send(2).await.map_err(|e| e.0) })
    };
    tokio::time::sleep(QUIET).await;
    let before = a.stats();
    assert_eq!(
        before.channels.iter().map(|c| c.send_wait).max(),
        Some(Duration::ZERO)
    );
    assert_eq!(recv_some("recv", &mut rx).await, 1);
    within("the waiting send", waiting)
        .await
        .expect("task")
        .expect("send");
    let wait = a
        .stats()
        .channels
        .iter()
        .map(|c| c.send_wait)
        .max()
        .unwrap_or_default();
    assert!(wait > Duration::ZERO, "the blocked send's wait is counted");
}
over_both!(a_sender_blocked_on_a_full_buffer_shows_the_time_it_waited);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exporter_sums_its_sessions() {
    bounded(async {
        let exp = Exporter::bind("127.0.0.1:0").await.expect("bind");
        let tx = exp.export_sender::<Vec<u8>>("jobs").expect("export");
        let mut rxs = Vec::new();
        let mut sessions = Vec::new();
        for _ in 0..3 {
            let s = within("connect", Session::connect(exp.local_addr()))
                .await
                .expect("connect");
            rxs.push(
                within("import", s.import_receiver::<Vec<u8>>("jobs", 4))
                    .await
                    .expect("import"),
            );
            sessions.push(s);
        }
        for _ in 0..9 {
            send_ok("send", &tx, value()).await;
        }
        within("drain", exp.drain(Some(LIMIT)))
            .await
            .expect("drain");
        let stats = exp.stats();
        assert_eq!(stats.sessions.len(), 3);
        assert_eq!(stats.messages_on("jobs"), 9);
        assert_eq!(stats.unconfirmed(), 0);
        let received: u64 = sessions
            .iter()
            .flat_map(|s| s.stats().channels)
            .map(|c| c.messages)
            .sum();
        assert_eq!(received, 9, "each value reached exactly one importer");
        exp.shutdown().await;
    })
    .await;
}
