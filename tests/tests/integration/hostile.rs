//! Hostile input. A raw TCP peer writes crafted bytes at an `Exporter`:
//! each attack must close the offending connection (its socket reads end
//! of stream, maybe after a GOODBYE), show up as a clear error on the
//! exporter's `errors()`, leave another session that was already connected
//! working, and let new sessions connect. No task may panic: every test
//! runs on a runtime of its own whose panics are recorded.
//!
//! A few scenarios run over both transports against a single session.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use netchan::proto::frame::{FLAG_END, FLAG_HANDLES};
use netchan::proto::{Dir, Frame, Kind, ProtoError, RejectCode};
use netchan::{Config, Error, Exporter, Origin, RecvError, Sender, Session, channel};

use crate::support::*;

/// An exporter under attack, with a bystander session connected before the
/// attack.
struct Target {
    exp: Exporter,
    errors: Box<dyn futures::Stream<Item = Error> + Send + Unpin>,
    bystander: Session,
    echo: Sender<(u32, Sender<u32>)>,
    /// Exported receiver "in" (u32, capacity 1) that nobody reads.
    _inbox: netchan::Receiver<u32>,
    /// Exported sender "out" (u32) that nobody sends on.
    _outbox: Sender<u32>,
}

/// Sends `v` with a private reply channel; the echo service answers `v + 1`.
async fn echo_works(echo: &Sender<(u32, Sender<u32>)>, v: u32) {
    let (tx, mut rx) = channel::<u32>(1);
    send_ok("echo request", echo, (v, tx)).await;
    assert_eq!(recv_some("echo reply", &mut rx).await, v + 1);
}

impl Target {
    async fn new(cfg: Config) -> Target {
        let exp = Exporter::bind_with("127.0.0.1:0", cfg)
            .await
            .expect("bind exporter");
        let errors = Box::new(exp.errors());
        let mut requests = exp
            .export_receiver::<(u32, Sender<u32>)>("echo", 8)
            .expect("export echo");
        tokio::spawn(async move {
            while let Ok(Some((v, reply))) = requests.recv().await {
                let _ = reply.send(v + 1).await;
            }
        });
        // An inbox whose owner drains it, ignoring what cannot be decoded.
        let mut sink = exp.export_receiver::<u32>("sink", 64).expect("export sink");
        tokio::spawn(async move {
            while let Ok(Some(_)) | Err(RecvError::Decode(_)) = sink.recv().await {}
        });
        let inbox = exp.export_receiver::<u32>("in", 1).expect("export in");
        let outbox = exp.export_sender::<u32>("out").expect("export out");
        let bystander = within("bystander connects", Session::connect(exp.local_addr()))
            .await
            .expect("connect");
        let echo = within("bystander imports", bystander.import_sender("echo"))
            .await
            .expect("import echo");
        echo_works(&echo, 1).await;
        Target {
            exp,
            errors,
            bystander,
            echo,
            _inbox: inbox,
            _outbox: outbox,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.exp.local_addr()
    }

    /// A raw connection that has exchanged hellos.
    async fn handshaken(&self) -> RawPeer {
        let mut raw = RawPeer::connect(self.addr()).await;
        raw.read_hello().await;
        raw.write(&hello_bytes()).await.expect("write hello");
        raw
    }

    /// The next error the exporter reports.
    async fn reported(&mut self) -> Error {
        next_error("the exporter reports the attack", &mut self.errors).await
    }

    /// The bystander still works, and a new session can connect and work.
    async fn unharmed(&self) {
        assert!(
            !self.bystander.is_closed(),
            "the bystander's session was closed"
        );
        echo_works(&self.echo, 10).await;
        let fresh = within("a new session connects", Session::connect(self.addr()))
            .await
            .expect("connect after the attack");
        let echo = within("import", fresh.import_sender("echo"))
            .await
            .expect("import after the attack");
        echo_works(&echo, 20).await;
    }
}

/// Asserts `e` is a protocol violation by the peer, and returns its cause.
fn remote_violation(e: Error) -> ProtoError {
    match e {
        Error::Protocol {
            origin: Origin::Remote,
            error,
        } => error,
        e => panic!("expected a protocol error blamed on the peer, got {e:?}"),
    }
}

/// If the library said goodbye before closing, it gave a reason.
fn goodbye_has_a_reason(closed: &Closed) {
    if let Some(reason) = closed.goodbye() {
        assert!(!reason.is_empty(), "a goodbye after a violation names it");
    }
}

fn open(chan: u32, dir: Dir, capacity: u32, name: &str) -> Frame {
    Frame::Open {
        chan,
        dir,
        capacity,
        name: name.into(),
        type_name: "u32".into(),
    }
}

fn data(chan: u32, flags: u8, payload: &[u8]) -> Frame {
    Frame::Data {
        chan,
        flags,
        payload: Bytes::copy_from_slice(payload),
    }
}

// ------------------------------------------------------------------ garbage

#[test]
fn garbage_instead_of_a_hello_closes_only_that_connection() {
    watching_panics("garbage-instead-of-a-hello", || async {
        let mut target = Target::new(Config::default()).await;
        for seed in 1..=4 {
            let mut raw = RawPeer::connect(target.addr()).await;
            let _ = raw.write(&Garbage::new(seed).bytes(4096)).await;
            goodbye_has_a_reason(&raw.expect_closed().await);
            match remote_violation(target.reported().await) {
                ProtoError::NotNetchan | ProtoError::PeerSpeaksTls => {}
                e => panic!("seed {seed}: expected NotNetchan, got {e:?}"),
            }
        }
        target.unharmed().await;
    });
}

#[test]
fn garbage_after_a_valid_hello_closes_only_that_connection() {
    watching_panics("garbage-after-a-hello", || async {
        let mut target = Target::new(Config::default()).await;
        for seed in 10..=17 {
            let mut raw = target.handshaken().await;
            let _ = raw.write(&Garbage::new(seed).bytes(4096)).await;
            // Garbage that happens to announce a long frame is cut by the
            // end of stream instead.
            raw.shutdown_write().await;
            goodbye_has_a_reason(&raw.expect_closed().await);
            match target.reported().await {
                Error::Protocol {
                    origin: Origin::Remote,
                    ..
                }
                | Error::ConnectionLost(_) => {}
                e => panic!("seed {seed}: expected a protocol error, got {e:?}"),
            }
        }
        target.unharmed().await;
    });
}

#[test]
fn a_truncated_frame_then_end_of_stream_is_a_lost_connection() {
    watching_panics("truncated-frame", || async {
        let mut target = Target::new(Config::default()).await;
        let mut raw = target.handshaken().await;
        let whole = frame_bytes(&[open(1, Dir::OpenerReceives, 1, "out")]);
        raw.write(&whole[..6]).await.expect("write");
        raw.shutdown_write().await;
        raw.expect_closed().await;
        match target.reported().await {
            Error::ConnectionLost(_) => {}
            e => panic!("expected ConnectionLost, got {e:?}"),
        }
        target.unharmed().await;
    });
}

// ---------------------------------------------------------- oversized frames

#[test]
fn an_oversized_length_prefix_is_refused_before_any_payload() {
    watching_panics("oversized-length", || async {
        let mut target = Target::new(Config::default()).await;
        // A DATA header announcing 4 GiB - 1, with no payload behind it:
        // the connection must be refused on the header alone.
        let mut raw = target.handshaken().await;
        let mut header = BytesMut::new();
        header.put_u32_le(u32::MAX);
        header.put_u8(Kind::Data as u8);
        header.put_u8(FLAG_END);
        header.put_u32_le(1);
        raw.write(&header).await.expect("write header");
        goodbye_has_a_reason(&raw.expect_closed().await);
        match remote_violation(target.reported().await) {
            ProtoError::FrameTooLarge { kind, len, max } => {
                assert_eq!(kind, Kind::Data);
                assert_eq!(len, u32::MAX as usize);
                assert!(max < len);
            }
            e => panic!("expected FrameTooLarge, got {e:?}"),
        }
        // A control frame over its 4 KiB limit.
        let mut raw = target.handshaken().await;
        let mut header = BytesMut::new();
        header.put_u32_le(5000);
        header.put_u8(Kind::Open as u8);
        header.put_u8(0);
        header.put_u32_le(1);
        raw.write(&header).await.expect("write header");
        raw.expect_closed().await;
        match remote_violation(target.reported().await) {
            ProtoError::FrameTooLarge { kind, len, max } => {
                assert_eq!((kind, len, max), (Kind::Open, 5000, 4096));
            }
            e => panic!("expected FrameTooLarge, got {e:?}"),
        }
        target.unharmed().await;
    });
}

#[test]
fn a_message_larger_than_the_limit_is_refused_as_it_arrives() {
    watching_panics("message-too-large", || async {
        let mut target = Target::new(Config::default().max_message_len(1024)).await;
        let mut raw = target.handshaken().await;
        raw.send(&[open(1, Dir::OpenerSends, 0, "in")]).await;
        assert_eq!(
            raw.expect_frame("answer to OPEN").await,
            Frame::Accept {
                chan: 1,
                capacity: 1
            }
        );
        // Chunks of 512 bytes without an end: the third passes the limit.
        for _ in 0..3 {
            let _ = raw.write(&frame_bytes(&[data(1, 0, &[0u8; 512])])).await;
        }
        goodbye_has_a_reason(&raw.expect_closed().await);
        match remote_violation(target.reported().await) {
            ProtoError::MessageTooLarge { max, .. } => assert_eq!(max, 1024),
            e => panic!("expected MessageTooLarge, got {e:?}"),
        }
        target.unharmed().await;
    });
}

// ---------------------------------------------------------- channel misuse

#[test]
fn frames_for_unknown_channels_close_the_connection() {
    watching_panics("unknown-channels", || async {
        let mut target = Target::new(Config::default()).await;
        let attacks = [
            (
                Frame::Credit {
                    chan: 7,
                    grant: 1,
                    received: 0,
                },
                7,
            ),
            (data(9, FLAG_END, &[0]), 9),
            (
                Frame::Close {
                    chan: 11,
                    code: netchan::proto::CloseCode::Done,
                    reason: String::new(),
                },
                11,
            ),
        ];
        for (frame, chan) in attacks {
            let mut raw = target.handshaken().await;
            raw.send(&[frame]).await;
            goodbye_has_a_reason(&raw.expect_closed().await);
            assert_eq!(
                remote_violation(target.reported().await),
                ProtoError::UnknownChannel(chan)
            );
        }
        target.unharmed().await;
    });
}

#[test]
fn data_beyond_the_granted_credit_closes_the_connection() {
    watching_panics("no-credit", || async {
        let mut target = Target::new(Config::default()).await;
        let mut raw = target.handshaken().await;
        raw.send(&[open(1, Dir::OpenerSends, 0, "in")]).await;
        assert_eq!(
            raw.expect_frame("answer to OPEN").await,
            Frame::Accept {
                chan: 1,
                capacity: 1
            },
            "the inbox grants one slot"
        );
        // Nobody reads "in": the second message has no credit.
        raw.send(&[data(1, FLAG_END, &[1]), data(1, FLAG_END, &[2])])
            .await;
        goodbye_has_a_reason(&raw.expect_closed().await);
        assert_eq!(
            remote_violation(target.reported().await),
            ProtoError::NoCredit(1)
        );
        target.unharmed().await;
    });
}

#[test]
fn credit_beyond_the_capacity_closes_the_connection() {
    watching_panics("credit-overflow", || async {
        let mut target = Target::new(Config::default()).await;
        // Importing "out" with a buffer of 2, then granting 5 more.
        let mut raw = target.handshaken().await;
        raw.send(&[open(1, Dir::OpenerReceives, 2, "out")]).await;
        assert_eq!(
            raw.expect_frame("answer to OPEN").await,
            Frame::Accept {
                chan: 1,
                capacity: 0
            }
        );
        raw.send(&[Frame::Credit {
            chan: 1,
            grant: 5,
            received: 0,
        }])
        .await;
        goodbye_has_a_reason(&raw.expect_closed().await);
        assert_eq!(
            remote_violation(target.reported().await),
            ProtoError::CreditOverflow(1)
        );
        // Confirming a message that was never sent.
        let mut raw = target.handshaken().await;
        raw.send(&[open(1, Dir::OpenerReceives, 2, "out")]).await;
        raw.expect_frame("answer to OPEN").await;
        raw.send(&[Frame::Credit {
            chan: 1,
            grant: 0,
            received: 1,
        }])
        .await;
        raw.expect_closed().await;
        assert_eq!(
            remote_violation(target.reported().await),
            ProtoError::CreditOverflow(1)
        );
        target.unharmed().await;
    });
}

// ------------------------------------------------------------------ limits

#[test]
fn opens_beyond_the_channel_limit_are_refused() {
    watching_panics("open-flood", || async {
        let target = Target::new(Config::default().max_channels(4)).await;
        let mut raw = target.handshaken().await;
        let opens: Vec<Frame> = (0..8)
            .map(|i| open(1 + 2 * i, Dir::OpenerReceives, 1, "out"))
            .collect();
        raw.send(&opens).await;
        let mut accepted = 0;
        let mut refused = 0;
        for _ in 0..8 {
            match raw.expect_frame("answer to OPEN").await {
                Frame::Accept { .. } => accepted += 1,
                Frame::Reject {
                    code: RejectCode::TooManyChannels,
                    ..
                } => refused += 1,
                f => panic!("unexpected answer {f:?}"),
            }
        }
        assert_eq!(
            (accepted, refused),
            (4, 4),
            "the limit of 4 channels holds; the rest are refused"
        );
        target.unharmed().await;
    });
}

#[test]
fn a_peer_smuggling_handles_past_the_channel_limit_is_cut_off() {
    watching_panics("handle-flood", || async {
        let mut target = Target::new(Config::default().max_channels(4)).await;
        let mut raw = target.handshaken().await;
        raw.send(&[open(1, Dir::OpenerSends, 0, "sink")]).await;
        assert!(matches!(
            raw.expect_frame("answer to OPEN").await,
            Frame::Accept { chan: 1, .. }
        ));
        // 64 messages (the sink's credit), each carrying 8 sender handles,
        // on a connection allowed 4 channels; the CLOSEs the exporter
        // sends for handles over the limit are never answered.
        let mut next_id = 3u32;
        let mut batch = Vec::new();
        for _ in 0..64 {
            let mut payload = BytesMut::new();
            payload.put_u16_le(8);
            for _ in 0..8 {
                payload.put_u8(0);
                payload.put_u32_le(next_id);
                payload.put_u32_le(1);
                next_id += 2;
            }
            payload.put_u8(0);
            batch.push(data(1, FLAG_END | FLAG_HANDLES, &payload));
        }
        let _ = raw.write(&frame_bytes(&batch)).await;
        let closed = raw.closed_within(Duration::from_secs(3)).await;
        let tables: Vec<usize> = target
            .exp
            .sessions()
            .iter()
            .map(|s| s.channel_count())
            .collect();
        assert!(
            closed.is_some(),
            "512 handles were smuggled onto a connection limited to 4 channels and \
             it is still open; channel tables of the exporter's sessions: {tables:?}"
        );
        match target.reported().await {
            Error::Protocol {
                origin: Origin::Remote,
                ..
            }
            | Error::TooManyChannels(_) => {}
            e => panic!("expected an error naming the violation, got {e:?}"),
        }
        target.unharmed().await;
    });
}

// --------------------------------------------------------------- handshake

#[test]
fn a_handshake_that_never_comes_times_out() {
    watching_panics("stalled-handshake", || async {
        let timeout = Duration::from_millis(300);
        let mut target = Target::new(Config::default().handshake_timeout(timeout)).await;
        // Silent, then a hello cut short.
        let mut silent = RawPeer::connect(target.addr()).await;
        let mut partial = RawPeer::connect(target.addr()).await;
        partial.write(&hello_bytes()[..5]).await.expect("write");
        silent.expect_closed().await;
        partial.expect_closed().await;
        for _ in 0..2 {
            match target.reported().await {
                Error::HandshakeTimeout { timeout: d, .. } => assert_eq!(d, timeout),
                e => panic!("expected HandshakeTimeout, got {e:?}"),
            }
        }
        target.unharmed().await;
    });
}

#[test]
fn a_client_of_another_protocol_is_refused_by_the_magic() {
    watching_panics("wrong-magic", || async {
        let mut target = Target::new(Config::default()).await;
        let strangers: [(&[u8], ProtoError); 3] = [
            (
                b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
                ProtoError::NotNetchan,
            ),
            // The start of a TLS ClientHello is named as such.
            (
                &[
                    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
                ],
                ProtoError::PeerSpeaksTls,
            ),
            (b"SSH-2.0-OpenSSH_9.6\r\n", ProtoError::NotNetchan),
        ];
        for (bytes, expected) in strangers {
            let mut raw = RawPeer::connect(target.addr()).await;
            let _ = raw.write(bytes).await;
            goodbye_has_a_reason(&raw.expect_closed().await);
            assert_eq!(remote_violation(target.reported().await), expected);
        }
        // The right magic with another version.
        let mut raw = RawPeer::connect(target.addr()).await;
        let other = netchan::proto::PROTOCOL_VERSION + 1;
        raw.write(&hello_with(other, 1024)).await.expect("write");
        raw.expect_closed().await;
        assert_eq!(
            remote_violation(target.reported().await),
            ProtoError::VersionMismatch {
                ours: netchan::proto::PROTOCOL_VERSION,
                theirs: other
            }
        );
        target.unharmed().await;
    });
}

// ---------------------------------------------- one session, both transports

async fn a_protocol_violation_is_reported_on_errors_and_ends_the_session(t: Transport) {
    let (s, mut raw) = t.raw_peer(Config::default()).await;
    let mut errors = s.errors();
    raw.read_hello().await;
    raw.write(&hello_bytes()).await.expect("hello");
    within("handshake", s.ready()).await.expect("ready");
    // A frame of unknown kind 0x42.
    let mut bad = BytesMut::new();
    bad.put_u32_le(0);
    bad.put_u8(0x42);
    bad.put_u8(0);
    bad.put_u32_le(0);
    raw.write(&bad).await.expect("write");
    assert_eq!(
        remote_violation(next_error("errors() reports the violation", &mut errors).await),
        ProtoError::UnknownFrameKind(0x42)
    );
    let closed = raw.expect_closed().await;
    assert!(
        closed.goodbye().is_some_and(|r| r.contains("0x42")),
        "the goodbye names the violation: {closed:?}"
    );
    assert!(
        within(
            "import on the ended session",
            s.import_receiver::<u32>("x", 1)
        )
        .await
        .is_err(),
        "the session ended"
    );
}
over_both!(a_protocol_violation_is_reported_on_errors_and_ends_the_session);

async fn a_peer_that_falls_silent_is_dropped_after_the_keepalive_deadline(t: Transport) {
    let cfg = Config::default().keepalive(Duration::from_millis(50));
    let (s, mut raw) = t.raw_peer(cfg).await;
    let mut errors = s.errors();
    raw.read_hello().await;
    raw.write(&hello_bytes()).await.expect("hello");
    // Never answer the pings.
    let closed = raw.expect_closed().await;
    assert!(
        closed.frames.iter().any(|f| matches!(f, Frame::Ping(_))),
        "the session pinged before giving up: {closed:?}"
    );
    match remote_violation(next_error("errors() reports the silence", &mut errors).await) {
        ProtoError::KeepaliveTimeout(d) => assert_eq!(d, Duration::from_millis(150)),
        e => panic!("expected KeepaliveTimeout, got {e:?}"),
    }
}
over_both!(a_peer_that_falls_silent_is_dropped_after_the_keepalive_deadline);

async fn a_goodbye_from_the_peer_ends_the_session_cleanly(t: Transport) {
    let (s, mut raw) = t.raw_peer(Config::default()).await;
    let mut errors = s.errors();
    raw.read_hello().await;
    raw.write(&hello_bytes()).await.expect("hello");
    raw.send(&[Frame::Goodbye {
        reason: String::new(),
    }])
    .await;
    let closed = raw.expect_closed().await;
    assert!(
        closed.goodbye().is_some(),
        "the session answers with its own goodbye: {closed:?}"
    );
    use futures::StreamExt;
    assert!(
        within("errors() ends", errors.next()).await.is_none(),
        "a goodbye is a clean end, not an error"
    );
}
over_both!(a_goodbye_from_the_peer_ends_the_session_cleanly);

/// The watch the hostile tests rely on: a panic in a spawned task (as a
/// library task would be) fails the scenario even though tokio swallows it.
#[test]
fn the_panic_watch_catches_a_panic_in_a_spawned_task() {
    let caught = std::panic::catch_unwind(|| {
        watching_panics("self-test", || async {
            let task = tokio::spawn(async { panic!("deliberate panic in a task") });
            assert!(task.await.is_err(), "the task panicked");
        });
    });
    assert!(caught.is_err(), "watching_panics let a task's panic pass");
}
