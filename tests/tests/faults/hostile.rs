//! A scripted raw peer breaks the protocol on purpose, frame by frame.
//! Each scenario reads like a transcript; afterwards the session has
//! failed with the violation named (`Error::Protocol`, blamed on the
//! peer), the raw peer got a GOODBYE naming it and then the end of
//! stream, and every task of the session ended.

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use netchan::proto::frame::FLAG_END;
use netchan::proto::{CloseCode, Dir, Frame, Kind, ProtoError, RejectCode};
use netchan::{Config, Error, Origin, RecvError, Session};

use crate::common::*;
use crate::raw::*;

/// The violation `s` failed with.
async fn violation(s: &Session) -> ProtoError {
    match fails_within("the session fails", s, STEP).await {
        Error::Protocol {
            origin: Origin::Remote,
            error,
        } => error,
        e => panic!("expected a protocol error blamed on the peer, got {e:?}"),
    }
}

/// The session names `expected`, says goodbye with it, closes, and leaves
/// no task behind.
async fn ends_with(s: Session, mut raw: RawPeer, tasks: Tasks, expected: ProtoError) {
    let mut errors = s.errors();
    assert_eq!(violation(&s).await, expected);
    let reason = raw.expect_goodbye(STEP).await;
    assert_eq!(
        reason,
        expected.to_string(),
        "the goodbye names the violation"
    );
    assert!(
        matches!(
            within("errors()", STEP, errors.next()).await,
            Some(Error::Protocol { error, .. }) if error == expected
        ),
        "errors() reports it"
    );
    drop((s, errors));
    tasks.settle("after a protocol violation").await;
}

/// A session with an exported receiver `in` (u32, 4 slots, read by a
/// task) and an exported sender `out` (u32), and a raw peer past the
/// handshake.
async fn target(cfg: Config) -> (Session, RawPeer, Tasks) {
    let tasks = Tasks::baseline();
    let (s, mut raw) = RawPeer::against(cfg).await;
    let mut inbox = s.export_receiver::<u32>("in", 4).expect("export in");
    tokio::spawn(async move {
        while let Ok(Some(_)) | Err(RecvError::Decode(_)) = inbox.recv().await {}
    });
    let out = s.export_sender::<u32>("out").expect("export out");
    // Keeps `out` exported while the session lives; its sends fail when
    // the session ends.
    tokio::spawn(async move {
        let mut n = 0;
        while out.send(n).await.is_ok() {
            n += 1;
        }
    });
    raw.handshake().await;
    within("ready", STEP, s.ready()).await.expect("ready");
    (s, raw, tasks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_the_hello_is_an_unknown_frame_kind() {
    let (s, mut raw, tasks) = target(Config::default()).await;
    let _ = raw
        .send_raw(&[
            0x78, 0x56, 0x34, 0x12, 0xee, 0x13, 0x37, 0xde, 0xad, 0xbe, 0xef,
        ])
        .await;
    ends_with(s, raw, tasks, ProtoError::UnknownFrameKind(0xee)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_header_claiming_4_gib_is_refused_on_the_header_alone() {
    let (s, mut raw, tasks) = target(Config::default()).await;
    raw.send_frame(open(1, Dir::OpenerSends, 0, "in")).await;
    assert_eq!(
        raw.recv_non_keepalive().await,
        Frame::Accept {
            chan: 1,
            capacity: 4
        }
    );
    raw.send_raw(&header(u32::MAX, Kind::Data, FLAG_END, 1))
        .await
        .expect("header");
    let max = Config::default().get_max_message_len();
    ends_with(
        s,
        raw,
        tasks,
        ProtoError::FrameTooLarge {
            kind: Kind::Data,
            len: u32::MAX as usize,
            max,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_frame_claiming_more_than_4_kib_is_refused_on_the_header_alone() {
    let (s, mut raw, tasks) = target(Config::default()).await;
    raw.send_raw(&header(5000, Kind::Open, 0, 1))
        .await
        .expect("header");
    ends_with(
        s,
        raw,
        tasks,
        ProtoError::FrameTooLarge {
            kind: Kind::Open,
            len: 5000,
            max: 4096,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_for_channels_never_opened_are_unknown_channels() {
    let frames = [
        data(9, &[1]),
        Frame::Credit {
            chan: 7,
            grant: 1,
            received: 0,
        },
        Frame::Close {
            chan: 11,
            code: CloseCode::Done,
            reason: String::new(),
        },
        Frame::Accept {
            chan: 13,
            capacity: 1,
        },
        Frame::Reject {
            chan: 15,
            code: RejectCode::Closed,
            reason: String::new(),
        },
    ];
    for f in frames {
        let chan = match &f {
            Frame::Data { chan, .. }
            | Frame::Credit { chan, .. }
            | Frame::Close { chan, .. }
            | Frame::Accept { chan, .. }
            | Frame::Reject { chan, .. } => *chan,
            _ => unreachable!(),
        };
        let (s, mut raw, tasks) = target(Config::default()).await;
        raw.send_frame(f).await;
        ends_with(s, raw, tasks, ProtoError::UnknownChannel(chan)).await;
    }
}

/// Transcript: the session hangs up a channel the raw peer sends on. DATA
/// still in flight towards the closing side is dropped, not an error;
/// once the raw peer acknowledged the CLOSE, the id is gone and DATA on it
/// is an unknown channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_on_a_closed_channel_is_dropped_while_closing_and_fatal_after() {
    let (s, mut raw, tasks) = target(Config::default()).await;
    raw.send_frame(open(1, Dir::OpenerSends, 0, "in")).await;
    assert_eq!(
        raw.recv_non_keepalive().await,
        Frame::Accept {
            chan: 1,
            capacity: 4
        }
    );
    s.hangup("in").expect("hangup");
    assert_eq!(
        raw.recv_non_keepalive().await,
        Frame::Close {
            chan: 1,
            code: CloseCode::Hangup,
            reason: "hung up".into()
        }
    );
    // Crossing the CLOSE: dropped.
    raw.send_frames(&[data(1, &[1]), data(1, &[2])]).await;
    assert_eq!(raw.ping_pong(77).await, [], "dropped without a word");
    assert!(!s.is_closed());
    // Acknowledged: the channel is gone on both sides.
    raw.send_frame(Frame::Close {
        chan: 1,
        code: CloseCode::Done,
        reason: String::new(),
    })
    .await;
    assert_eq!(raw.ping_pong(78).await, []);
    assert!(!s.is_closed());
    raw.send_frame(data(1, &[3])).await;
    ends_with(s, raw, tasks, ProtoError::UnknownChannel(1)).await;
}

/// Transcript: the raw peer closes its own channel, the session answers;
/// DATA after that is on an unknown channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_after_the_peer_closed_its_own_channel_is_an_unknown_channel() {
    let (s, mut raw, tasks) = target(Config::default()).await;
    raw.send_frame(open(1, Dir::OpenerSends, 0, "in")).await;
    assert!(matches!(
        raw.recv_non_keepalive().await,
        Frame::Accept { chan: 1, .. }
    ));
    raw.send_frame(Frame::Close {
        chan: 1,
        code: CloseCode::Done,
        reason: String::new(),
    })
    .await;
    assert_eq!(
        raw.recv_non_keepalive().await,
        Frame::Close {
            chan: 1,
            code: CloseCode::Done,
            reason: String::new()
        },
        "the close is acknowledged"
    );
    raw.send_frame(data(1, &[1])).await;
    ends_with(s, raw, tasks, ProtoError::UnknownChannel(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_beyond_the_announced_capacity_is_a_credit_overflow() {
    let (s, mut raw, tasks) = target(Config::default()).await;
    // Importing `out` with a buffer of 2: the session may send 2.
    raw.send_frame(open(1, Dir::OpenerReceives, 2, "out")).await;
    assert_eq!(
        raw.recv_non_keepalive().await,
        Frame::Accept {
            chan: 1,
            capacity: 0
        }
    );
    // The exporter's sender fills the two slots.
    for _ in 0..2 {
        assert!(matches!(
            raw.recv_non_keepalive().await,
            Frame::Data { chan: 1, .. }
        ));
    }
    // Taking both and granting 3: one more than the buffer holds.
    raw.send_frame(Frame::Credit {
        chan: 1,
        grant: 3,
        received: 2,
    })
    .await;
    ends_with(s, raw, tasks, ProtoError::CreditOverflow(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirming_more_messages_than_were_sent_is_a_credit_overflow() {
    let (s, mut raw, tasks) = target(Config::default()).await;
    raw.send_frame(open(1, Dir::OpenerReceives, 2, "out")).await;
    raw.recv_non_keepalive().await;
    for _ in 0..2 {
        raw.recv_non_keepalive().await;
    }
    raw.send_frame(Frame::Credit {
        chan: 1,
        grant: 0,
        received: 3,
    })
    .await;
    ends_with(s, raw, tasks, ProtoError::CreditOverflow(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_beyond_the_granted_credit_is_no_credit() {
    let tasks = Tasks::baseline();
    let (s, mut raw) = RawPeer::against(Config::default()).await;
    // An inbox nobody reads: one slot.
    let inbox = s.export_receiver::<u32>("in", 1).expect("export");
    raw.handshake().await;
    raw.send_frame(open(1, Dir::OpenerSends, 0, "in")).await;
    assert_eq!(
        raw.recv_non_keepalive().await,
        Frame::Accept {
            chan: 1,
            capacity: 1
        }
    );
    raw.send_frames(&[data(1, &[1]), data(1, &[2])]).await;
    let mut errors = s.errors();
    assert_eq!(violation(&s).await, ProtoError::NoCredit(1));
    raw.expect_goodbye(STEP).await;
    assert!(errors.next().await.is_some());
    drop((s, inbox, errors));
    tasks.settle("after data without credit").await;
}

/// A flood of PINGs whose PONGs the peer never reads. The session
/// answers only the last ping before each write, so the flood costs one
/// small PONG per write: it survives, and once the peer reads there are
/// far fewer PONGs than PINGs. (Its heap is measured in `memory.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_pings_whose_pongs_are_never_read_costs_one_pong_per_write() {
    const PINGS: u64 = 200_000;
    let (s, mut raw, tasks) = target(Config::default()).await;
    let mut batch = BytesMut::new();
    for n in 1..=PINGS {
        Frame::Ping(n).encode(&mut batch);
        if batch.len() > 64 << 10 || n == PINGS {
            raw.send_raw(&batch)
                .await
                .expect("the session keeps reading");
            batch.clear();
        }
    }
    // A marker after the flood: the session's answer to it proves it read
    // every ping.
    raw.send_frame(open(1, Dir::OpenerSends, 0, "in")).await;
    let mut pongs = 0u64;
    let mut last = 0;
    loop {
        match raw.recv_frame().await {
            Frame::Pong(n) => {
                assert!(n > last && n <= PINGS, "pongs answer pings in order");
                last = n;
                pongs += 1;
            }
            Frame::Ping(_) => {}
            Frame::Accept { chan: 1, .. } => break,
            f => panic!("unexpected {f:?}"),
        }
    }
    assert!(!s.is_closed(), "the session survived the flood");
    assert!(
        pongs * 10 < PINGS,
        "{pongs} pongs for {PINGS} pings: a flood must not cost one reply per ping"
    );
    // Still serving: a value through the channel just opened.
    raw.send_frame(data(1, &[5])).await;
    raw.ping_pong(PINGS + 1).await;
    assert!(!s.is_closed());
    let closing = tokio::spawn({
        let s = s.clone();
        async move { s.close().await }
    });
    raw.expect_goodbye(STEP).await;
    drop(raw);
    within("close", STEP, closing).await.expect("task");
    drop(s);
    tasks.settle("after a ping flood").await;
}

/// A flood of OPENs for names that do not exist, never reading the
/// REJECTs: the replies pile up until the session cuts the peer off with
/// `PeerNotReading` instead of buffering them without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_opens_whose_rejects_are_never_read_is_cut_off() {
    let (s, mut raw, tasks) = target(Config::default()).await;
    let mut errors = s.errors();
    let mut batch = BytesMut::new();
    let mut chan = 1u32;
    let mut refused = false;
    // At most 64 MiB of OPENs; the session must give up long before.
    while chan < 5_000_000 {
        open(chan, Dir::OpenerReceives, 1, "no-such-name").encode(&mut batch);
        chan += 2;
        if batch.len() > 64 << 10 {
            if raw.send_raw(&batch).await.is_err() {
                refused = true;
                break;
            }
            batch.clear();
            if s.is_closed() {
                refused = true;
                break;
            }
        }
    }
    assert!(
        refused,
        "the session never cut off a peer that does not read"
    );
    match within("the session fails", STEP, s.closed()).await {
        Error::Protocol {
            error: ProtoError::PeerNotReading(n),
            ..
        } => assert!(n > 128 << 10, "{n}"),
        e => panic!("expected PeerNotReading, got {e:?}"),
    }
    assert!(errors.next().await.is_some());
    drop((s, errors, raw));
    tasks.settle("after an open flood").await;
}

/// Bytes of a DATA frame with a handle table carrying `n` sender handles
/// with ids from `first`.
pub(crate) fn handles_frame(chan: u32, first: u32, n: u16) -> Frame {
    let mut payload = BytesMut::new();
    payload.put_u16_le(n);
    for i in 0..u32::from(n) {
        payload.put_u8(0);
        payload.put_u32_le(first + 2 * i);
        payload.put_u32_le(1);
    }
    payload.put_u8(0);
    Frame::Data {
        chan,
        flags: FLAG_END | netchan::proto::frame::FLAG_HANDLES,
        payload: Bytes::from(payload),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_handles_in_one_message_than_allowed_end_the_connection() {
    let (s, mut raw, tasks) = target(Config::default().max_handles(4)).await;
    raw.send_frame(open(1, Dir::OpenerSends, 0, "in")).await;
    assert!(matches!(
        raw.recv_non_keepalive().await,
        Frame::Accept { chan: 1, .. }
    ));
    raw.send_frame(handles_frame(1, 3, 5)).await;
    ends_with(
        s,
        raw,
        tasks,
        ProtoError::LimitExceeded {
            what: "handles in one message",
            limit: 4,
        },
    )
    .await;
}

/// Half a frame, then the end of stream: not a clean end, a lost
/// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_cut_short_by_the_end_of_stream_is_a_lost_connection() {
    let (s, mut raw, tasks) = target(Config::default()).await;
    let whole = wire(&[open(1, Dir::OpenerSends, 0, "in")]);
    raw.send_raw(&whole[..13]).await.expect("write");
    raw.shutdown_write().await;
    let e = fails_within("the session fails", &s, STEP).await;
    assert!(matches!(e, Error::ConnectionLost(_)), "{e:?}");
    raw.expect_goodbye(STEP).await;
    drop((s, raw));
    tasks.settle("after a truncated frame").await;
}
