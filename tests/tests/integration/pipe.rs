//! `Pipe`: bytes both ways, end of file after `shutdown`, pipes sent inside
//! messages in either direction.

use netchan::{Pipe, Session, pipe};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Writes `data` to `w` in uneven pieces, then shuts it down.
async fn write_all_then_shutdown(mut w: Pipe, data: Vec<u8>) -> Pipe {
    let mut at = 0;
    let mut step = 1;
    while at < data.len() {
        let end = (at + step).min(data.len());
        w.write_all(&data[at..end]).await.expect("write");
        at = end;
        step = step * 3 % 70_001 + 1;
    }
    w.shutdown().await.expect("shutdown");
    w
}

async fn read_to_end(r: &mut Pipe) -> Vec<u8> {
    let mut got = Vec::new();
    within("read to end of file", r.read_to_end(&mut got))
        .await
        .expect("read");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_pipe_carries_bytes_both_ways_and_ends_after_shutdown() {
    bounded(async {
        let (left, mut right) = pipe();
        let data = pattern(200_000, 1);
        let writer = tokio::spawn(write_all_then_shutdown(left, data.clone()));
        assert!(read_to_end(&mut right).await == data, "bytes arrive intact");
        let mut left = within("writer", writer).await.expect("writer");
        right.write_all(b"and back").await.expect("write back");
        right.shutdown().await.expect("shutdown");
        assert_eq!(read_to_end(&mut left).await, b"and back");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_to_a_pipe_whose_other_end_was_dropped_fails_with_broken_pipe() {
    bounded(async {
        let (mut left, right) = pipe();
        drop(right);
        let e = within("write", left.write_all(b"anyone?"))
            .await
            .expect_err("write to a dropped end");
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
    })
    .await;
}

/// A new pipe whose second end was sent from `from` to `to`: the end kept
/// at `from`, and the end that arrived at `to`.
async fn pipe_sent(from: &Session, to: &Session) -> (Pipe, Pipe) {
    let (post, mut inbox) = Way::ExportedReceiver.channel::<Pipe>(to, from, 1).await;
    let (mine, theirs) = pipe();
    send_ok("send a pipe end", &post, theirs).await;
    (mine, recv_some("the pipe end arrives", &mut inbox).await)
}

async fn a_pipe_sent_in_a_message_carries_bytes_both_ways(t: Transport) {
    let (a, b) = t.connect().await;
    for (dir, from, to) in [
        ("dialler to acceptor", &a, &b),
        ("acceptor to dialler", &b, &a),
    ] {
        let (mine, mut remote) = pipe_sent(from, to).await;
        // Larger than one chunk and than the pipe's buffer, so it flows
        // under backpressure across the connection.
        let out = pattern(300_000, 7);
        let writer = tokio::spawn(write_all_then_shutdown(mine, out.clone()));
        assert!(
            read_to_end(&mut remote).await == out,
            "{dir}: bytes written at home arrive intact, then end of file"
        );
        let mut mine = within("writer", writer).await.expect("writer");
        let back = pattern(100_000, 99);
        let remote_writer = tokio::spawn(write_all_then_shutdown(remote, back.clone()));
        assert!(
            read_to_end(&mut mine).await == back,
            "{dir}: bytes written remotely arrive intact, then end of file"
        );
        within("remote writer", remote_writer)
            .await
            .expect("remote writer");
    }
}
over_both!(a_pipe_sent_in_a_message_carries_bytes_both_ways);

async fn two_pipes_on_one_connection_do_not_mix_their_bytes(t: Transport) {
    let (a, b) = t.connect().await;
    let (post, mut inbox) = Way::ExportedReceiver
        .channel::<(Pipe, Pipe)>(&a, &b, 1)
        .await;
    let (mine1, theirs1) = pipe();
    let (mine2, theirs2) = pipe();
    send_ok("send two pipe ends", &post, (theirs1, theirs2)).await;
    let (mut r1, mut r2) = recv_some("they arrive", &mut inbox).await;
    let (d1, d2) = (pattern(150_000, 3), pattern(170_000, 200));
    let w1 = tokio::spawn(write_all_then_shutdown(mine1, d1.clone()));
    let w2 = tokio::spawn(write_all_then_shutdown(mine2, d2.clone()));
    let (g1, g2) = tokio::join!(read_to_end(&mut r1), read_to_end(&mut r2));
    assert!(g1 == d1, "first pipe intact");
    assert!(g2 == d2, "second pipe intact");
    within("writer", w1).await.expect("writer");
    within("writer", w2).await.expect("writer");
}
over_both!(two_pipes_on_one_connection_do_not_mix_their_bytes);

async fn dropping_a_travelled_pipe_end_gives_the_other_end_end_of_file(t: Transport) {
    let (a, b): (Session, Session) = t.connect().await;
    let (post, mut inbox) = Way::ExportedReceiver.channel::<Pipe>(&a, &b, 1).await;
    let (mut mine, theirs) = pipe();
    send_ok("send a pipe end", &post, theirs).await;
    let mut remote = recv_some("it arrives", &mut inbox).await;
    remote.write_all(b"last words").await.expect("write");
    remote.flush().await.expect("flush");
    drop(remote);
    assert_eq!(read_to_end(&mut mine).await, b"last words");
}
over_both!(dropping_a_travelled_pipe_end_gives_the_other_end_end_of_file);

/// One write larger than the peer's message limit: the pipe cuts it into
/// messages the peer accepts, whatever that limit is (as a stream socket
/// takes any write), and the bytes arrive whole.
async fn a_write_larger_than_the_peers_message_limit_arrives_whole(t: Transport) {
    for limit in [1 << 10, 64 << 10, 300 << 10, 2 << 20] {
        let (a, b) = t
            .connect_with(netchan::Config::default().max_message_len(limit))
            .await;
        for (dir, from, to) in [
            ("dialler to acceptor", &a, &b),
            ("acceptor to dialler", &b, &a),
        ] {
            let (mine, remote) = pipe_sent(from, to).await;
            // Both ways: the end kept home writes through the channel
            // whose receiver travelled, the travelled end straight to it.
            let (mut from, mut to) = (mine, remote);
            for (way, seed) in [("home to travelled end", 5), ("travelled end to home", 6)] {
                let out = pattern(3 << 20, seed);
                let writer = tokio::spawn({
                    let out = out.clone();
                    async move {
                        from.write_all(&out).await?;
                        from.shutdown().await?;
                        Ok::<_, std::io::Error>(from)
                    }
                });
                assert!(
                    read_to_end(&mut to).await == out,
                    "{dir}, {way}, limit {limit}: one 3 MiB write arrives intact"
                );
                let done = within("writer", writer).await.expect("writer");
                let wrote = done.unwrap_or_else(|e| {
                    panic!("{dir}, {way}, limit {limit}: the write failed: {e}")
                });
                (from, to) = (to, wrote);
            }
        }
    }
}
over_both!(a_write_larger_than_the_peers_message_limit_arrives_whole);
