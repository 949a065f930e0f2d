//! One slow channel never holds up another channel of the same
//! connection. Asserted as progress (what got through while the slow
//! channel was stuck), not as timing.

use std::time::Duration;

use netchan::Config;

use crate::chaos::Flow;
use crate::common::*;

/// A receiver that never reads fills its buffer and blocks its sender;
/// another channel on the same connection carries a thousand round trips
/// meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_never_reads_blocks_only_its_own_channel() {
    let tasks = Tasks::baseline();
    let cfg = Config::default();
    let Proxied { a, b, chaos } = proxied(cfg.clone(), cfg).await;
    let (slow_tx, slow_rx) = channel::<Numbered>(&a, &b, 4).await;
    let stuck = tokio::spawn(async move {
        let mut n = 0u64;
        while slow_tx.send(numbered(n, 1000)).await.is_ok() {
            n += 1;
        }
        n
    });
    let (ping_tx, mut ping_rx) = channel::<u64>(&a, &b, 1).await;
    let (pong_tx, mut pong_rx) = channel::<u64>(&b, &a, 1).await;
    let echo = tokio::spawn(async move {
        while let Ok(Some(v)) = ping_rx.recv().await {
            if pong_tx.send(v).await.is_err() {
                break;
            }
        }
    });
    within(
        "a thousand round trips beside a stuck channel",
        STEP,
        async {
            for i in 0..1000u64 {
                ping_tx.send(i).await.expect("ping");
                assert_eq!(pong_rx.recv().await.expect("pong"), Some(i));
            }
        },
    )
    .await;
    assert!(!stuck.is_finished(), "the stuck sender is still waiting");
    drop((ping_tx, pong_rx, slow_rx));
    // With its receiver gone, the stuck send fails and gives up.
    let sent = within("the stuck sender ends", STEP, stuck)
        .await
        .expect("task");
    assert!(
        (4..=5).contains(&sent),
        "the sender filled the 4 slots of the unread buffer, no more: {sent}"
    );
    // The echo's inbox is exported: it ends with its session.
    a.close().await;
    within("the echo ends", STEP, echo).await.expect("task");
    drop((a, b, chaos));
    tasks.settle("after a slow reader").await;
}

/// A large value on one channel and small round trips on another, over
/// a link throttled to a trickle (1 MB/s) with small kernel buffers, so
/// that the netchan writer, not the kernel, decides what goes first.
/// Returns how many round trips finished while the large value was in
/// transit, and the most bytes of the dialer's stream that passed the
/// proxy between a ping's send and the ping itself (what the ping waited
/// for).
async fn round_trips_beside_a_large_value(chunk: usize) -> (usize, u64) {
    const BIG: usize = 4 << 20;
    // The proxy forwards 1 KiB, then sleeps a timer tick (1 ms or more):
    // 4 MiB take about 8 s on a lightly loaded machine, more than STEP
    // allows once the machine is busy. A bound against a hang, not a
    // speed check.
    const TRANSFER: Duration = Duration::from_secs(90);
    let tasks = Tasks::baseline();
    let cfg = Config::default().chunk_size(chunk);
    let p = proxied_with(cfg.clone(), cfg, Some(4096), |_| {}).await;
    p.ready().await;
    let Proxied { a, b, chaos } = p;
    let (big_tx, mut big_rx) = channel::<Numbered>(&a, &b, 1).await;
    let (ping_tx, mut ping_rx) = channel::<u64>(&a, &b, 1).await;
    let (pong_tx, mut pong_rx) = channel::<u64>(&b, &a, 1).await;
    let echo = tokio::spawn(async move {
        while let Ok(Some(v)) = ping_rx.recv().await {
            if pong_tx.send(v).await.is_err() {
                break;
            }
        }
    });
    chaos.throttle(Flow::AToB, Some(1024));
    let big = tokio::spawn(async move { big_tx.send(numbered(7, BIG)).await.is_ok() });
    let big_arrived = tokio::spawn(async move { big_rx.recv().await.map(|v| v.map(|v| v.0)) });
    chaos
        .wait_for("the large value's first chunks", STEP, |c| {
            c.forwarded(Flow::AToB) > 64 << 10
        })
        .await;
    // Only the large value's chunks have passed so far.
    let big_chan = chaos.data_frames(Flow::AToB)[0].1;
    let mut during = 0;
    let mut waited = 0;
    within(
        "round trips until the large value is through",
        TRANSFER,
        async {
            let mut i = 0u64;
            while !big_arrived.is_finished() {
                let before = chaos.forwarded(Flow::AToB);
                ping_tx.send(i).await.expect("ping");
                assert_eq!(pong_rx.recv().await.expect("pong"), Some(i));
                // Where the ping passed the proxy, not what passed until
                // the pong came back: the way back and the wake-up of this
                // task take as long as a loaded machine makes them.
                let ping_at = chaos
                    .data_frames(Flow::AToB)
                    .into_iter()
                    .find(|&(at, chan)| at >= before && chan != big_chan)
                    .expect("the ping passed the proxy")
                    .0;
                waited = waited.max(ping_at - before);
                if !big_arrived.is_finished() {
                    during += 1;
                }
                i += 1;
            }
        },
    )
    .await;
    assert!(
        within("the large value is sent", STEP, big)
            .await
            .expect("task")
    );
    assert_eq!(
        within("the large value arrives", STEP, big_arrived)
            .await
            .expect("task")
            .expect("recv"),
        Some(7)
    );
    drop((ping_tx, pong_rx));
    a.close().await;
    within("the echo ends", STEP, echo).await.expect("task");
    drop((a, b, chaos));
    tasks.settle("after a throttled link").await;
    (during, waited)
}

/// Progress, not timing: while 4 MiB crawl through on one channel, the
/// other channel's round trips keep completing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_messages_keep_flowing_beside_a_large_one_on_a_throttled_link() {
    let (during, waited) = round_trips_beside_a_large_value(4096).await;
    assert!(
        during >= 5,
        "only {during} round trips finished while the large value was in transit \
         (a ping waited behind up to {waited} bytes)"
    );
}

/// DESIGN.md: a large message delays a small one on another channel "by
/// no more than one chunk". Measured in bytes that passed ahead of the
/// ping (kernel buffers of about 4 KiB on each of three sockets, which
/// Linux doubles, allowed for), not in time. Four chunks of the large
/// value written at once, as on a link with room, would pass 64 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_message_waits_behind_at_most_one_chunk_of_a_large_one() {
    const CHUNK: usize = 16 << 10;
    let (_, waited) = round_trips_beside_a_large_value(CHUNK).await;
    assert!(
        waited <= (CHUNK + (32 << 10)) as u64,
        "a ping waited behind {waited} bytes; one chunk is {CHUNK}"
    );
}
