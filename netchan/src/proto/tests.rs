//! Protocol tests, entirely in memory: two [`Connection`]s joined by a
//! [`Pair`] that shuttles bytes between them, or one connection fed raw
//! bytes by a hand-written (often hostile) peer.
//!
//! Time never comes from the clock: every test starts at a fixed base
//! instant and passes `now` explicitly.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use proptest::prelude::*;

use super::chunk::{MIXED_QUIET, SOLO_CHUNKS};
use super::conn::{FinishError, OpenError, SendBlock};
use super::frame::{FLAG_END, FLAG_HANDLES, HEADER_LEN, MAX_CONTROL_PAYLOAD, MAX_REASON_LEN};
use super::hello::HELLO_LEN;
use super::*;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The fixed instant every test's clock starts at.
fn t0() -> Instant {
    static T0: OnceLock<Instant> = OnceLock::new();
    *T0.get_or_init(Instant::now)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn limits(f: impl FnOnce(&mut Limits)) -> Limits {
    let mut l = Limits::default();
    f(&mut l);
    l
}

fn chunked(chunk_size: usize) -> Limits {
    limits(|l| l.chunk_size = chunk_size)
}

/// One side: a connection, the bytes it has not read yet, the events it
/// produced and the frames it wrote (its hello excluded).
#[derive(Debug)]
struct Peer {
    conn: Connection,
    inbox: BytesMut,
    events: Vec<Event>,
    sent: Vec<Frame>,
    hello_sent: bool,
}

impl Peer {
    fn new(side: Side, limits: Limits, codec: CodecId, now: Instant) -> Peer {
        Peer {
            conn: Connection::new(side, limits, codec, now),
            inbox: BytesMut::new(),
            events: Vec::new(),
            sent: Vec::new(),
            hello_sent: false,
        }
    }

    /// Takes what this side would write now and records its frames.
    fn transmit(&mut self, now: Instant) -> BytesMut {
        let mut out = BytesMut::new();
        if !self.conn.take_transmit(&mut out, now) {
            return out;
        }
        let mut copy = out.clone();
        if !self.hello_sent {
            copy.advance(HELLO_LEN);
            self.hello_sent = true;
        }
        while let Some(f) = Frame::decode(&mut copy, usize::MAX).expect("own frames decode") {
            self.sent.push(f);
        }
        assert!(copy.is_empty(), "a transmit ended inside a frame");
        out
    }

    /// Reads `bytes` and every frame they complete.
    fn receive(&mut self, bytes: &[u8], now: Instant) -> Result<(), ProtoError> {
        self.inbox.extend_from_slice(bytes);
        while let Some(ev) = self.conn.poll_input(&mut self.inbox, now)? {
            self.events.push(ev);
        }
        Ok(())
    }

    fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    fn take_sent(&mut self) -> Vec<Frame> {
        std::mem::take(&mut self.sent)
    }

    /// Encodes one message the way the runtime does.
    fn send(
        &mut self,
        chan: ChanId,
        body: &[u8],
        handles: &[HandleDesc],
    ) -> Result<(), FinishError> {
        assert_eq!(self.conn.can_send(chan), Ok(()), "send without can_send");
        let mut buf = BytesMut::from(body);
        self.conn.send_message(chan, &mut buf, handles)
    }
}

/// Two connections joined back to back (quinn's `Pair`).
#[derive(Debug)]
struct Pair {
    d: Peer,
    a: Peer,
    now: Instant,
}

impl Pair {
    fn new(ld: Limits, la: Limits) -> Pair {
        let now = t0();
        Pair {
            d: Peer::new(Side::Dialer, ld, CodecId::Bincode, now),
            a: Peer::new(Side::Acceptor, la, CodecId::Bincode, now),
            now,
        }
    }

    /// A pair past its handshake, events and transcripts cleared.
    fn connected() -> Pair {
        Pair::connected_with(Limits::default(), Limits::default())
    }

    fn connected_with(ld: Limits, la: Limits) -> Pair {
        let mut p = Pair::new(ld, la);
        p.drive();
        assert!(matches!(p.d.take_events()[..], [Event::Ready(_)]));
        assert!(matches!(p.a.take_events()[..], [Event::Ready(_)]));
        assert!(p.d.conn.is_open() && p.a.conn.is_open());
        p
    }

    /// Shuttles bytes both ways until neither side has anything to write.
    /// The first protocol error stops it, tagged with the side that saw it.
    fn try_drive(&mut self) -> Result<(), (Side, ProtoError)> {
        for _ in 0..10_000 {
            let to_a = self.d.transmit(self.now);
            self.a
                .receive(&to_a, self.now)
                .map_err(|e| (Side::Acceptor, e))?;
            let to_d = self.a.transmit(self.now);
            self.d
                .receive(&to_d, self.now)
                .map_err(|e| (Side::Dialer, e))?;
            if to_a.is_empty()
                && to_d.is_empty()
                && !self.d.conn.wants_transmit()
                && !self.a.conn.wants_transmit()
            {
                // Confirmations nobody waits for leave after ACK_DELAY:
                // let that time pass, as a real connection would.
                if self.d.conn.credit_waiting() || self.a.conn.credit_waiting() {
                    self.now += ACK_DELAY;
                    continue;
                }
                return Ok(());
            }
        }
        panic!("the pair never went quiet");
    }

    fn drive(&mut self) {
        if let Err((side, e)) = self.try_drive() {
            panic!("{side:?} failed: {e}");
        }
    }

    /// The dialer opens a channel to send on and the acceptor accepts it
    /// with `capacity`; returns the channel with transcripts cleared.
    fn d_sends(&mut self, capacity: u32) -> ChanId {
        let chan = self
            .d
            .conn
            .open("inbox", Dir::OpenerSends, 0, "Job")
            .unwrap();
        self.drive();
        assert!(matches!(self.a.take_events()[..], [Event::Open { .. }]));
        self.a.conn.accept(chan, capacity);
        self.drive();
        assert_eq!(
            self.d.take_events(),
            vec![Event::Accepted { chan, capacity }]
        );
        self.d.take_sent();
        self.a.take_sent();
        chan
    }

    fn clear(&mut self) {
        self.d.take_events();
        self.a.take_events();
        self.d.take_sent();
        self.a.take_sent();
    }
}

/// One connection after a valid hello from a hand-driven peer.
fn lone(side: Side, limits: Limits) -> Peer {
    let now = t0();
    let mut p = Peer::new(side, limits, CodecId::Bincode, now);
    p.receive(&hello_bytes(PROTOCOL_VERSION, 1, 0, 16 << 20, 1024), now)
        .unwrap();
    assert!(matches!(p.take_events()[..], [Event::Ready(_)]));
    p.transmit(now); // our hello
    p
}

/// A lone acceptor whose peer opened channel 1 to send to it, accepted
/// with `capacity`.
fn lone_receiving(l: Limits, capacity: u32) -> Peer {
    let mut p = lone(Side::Acceptor, l);
    p.receive(&open_frame(1, Dir::OpenerSends, 0), t0())
        .unwrap();
    assert!(matches!(p.take_events()[..], [Event::Open { chan: 1, .. }]));
    p.conn.accept(1, capacity);
    p.transmit(t0());
    assert_eq!(p.take_sent(), vec![Frame::Accept { chan: 1, capacity }]);
    p
}

/// A lone acceptor whose peer opened channel 1 to receive from it with
/// `capacity`.
fn lone_sending(capacity: u32) -> Peer {
    let mut p = lone(Side::Acceptor, Limits::default());
    p.receive(&open_frame(1, Dir::OpenerReceives, capacity), t0())
        .unwrap();
    p.take_events();
    p.conn.accept(1, 0);
    p.transmit(t0());
    p.take_sent();
    assert_eq!(p.conn.credit(1), capacity);
    p
}

fn hello_bytes(version: u16, codec: u8, flags: u8, max_message: u32, max_channels: u32) -> Vec<u8> {
    let mut v = MAGIC.to_vec();
    v.extend_from_slice(&version.to_le_bytes());
    v.push(codec);
    v.push(flags);
    v.extend_from_slice(&max_message.to_le_bytes());
    v.extend_from_slice(&max_channels.to_le_bytes());
    // max_handles: the default.
    v.extend_from_slice(&128u32.to_le_bytes());
    // No token, position 0.
    v.extend_from_slice(&[0; 24]);
    v
}

/// A frame built by hand, byte by byte, so malformed ones can be made.
fn raw(kind: u8, flags: u8, chan: u32, payload: &[u8]) -> Vec<u8> {
    raw_header(payload.len() as u32, kind, flags, chan)
        .into_iter()
        .chain(payload.iter().copied())
        .collect()
}

fn raw_header(len: u32, kind: u8, flags: u8, chan: u32) -> Vec<u8> {
    let mut v = len.to_le_bytes().to_vec();
    v.push(kind);
    v.push(flags);
    v.extend_from_slice(&chan.to_le_bytes());
    v
}

fn enc(f: &Frame) -> Vec<u8> {
    let mut b = BytesMut::new();
    f.encode(&mut b);
    b.to_vec()
}

fn open_frame(chan: ChanId, dir: Dir, capacity: u32) -> Vec<u8> {
    enc(&Frame::Open {
        chan,
        dir,
        capacity,
        name: "x".into(),
        type_name: "T".into(),
    })
}

fn data(chan: ChanId, flags: u8, payload: &[u8]) -> Vec<u8> {
    raw(Kind::Data as u8, flags, chan, payload)
}

/// A handle table: count, then (kind, chan, capacity) entries.
fn table(entries: &[(u8, u32, u32)]) -> Vec<u8> {
    let mut v = (entries.len() as u16).to_le_bytes().to_vec();
    for (k, c, cap) in entries {
        v.push(*k);
        v.extend_from_slice(&c.to_le_bytes());
        v.extend_from_slice(&cap.to_le_bytes());
    }
    v
}

fn message(chan: ChanId, data: &[u8]) -> Event {
    Event::Message {
        chan,
        data: Bytes::copy_from_slice(data),
        handles: vec![],
    }
}

fn data_frames(frames: &[Frame]) -> Vec<(ChanId, u8, usize)> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Data {
                chan,
                flags,
                payload,
            } => Some((*chan, *flags, payload.len())),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Frames and hello: round trips (proptest)
// ---------------------------------------------------------------------------

const TEST_CHUNK: usize = 4096;

fn text(max_chars: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..=max_chars).prop_map(|v| v.into_iter().collect())
}

fn chan_id() -> impl Strategy<Value = ChanId> {
    1..=u32::MAX
}

fn dir() -> impl Strategy<Value = Dir> {
    prop_oneof![Just(Dir::OpenerReceives), Just(Dir::OpenerSends)]
}

fn reject_code() -> impl Strategy<Value = RejectCode> {
    prop_oneof![
        Just(RejectCode::NoSuchName),
        Just(RejectCode::WrongDirection),
        Just(RejectCode::WrongType),
        Just(RejectCode::TooManyChannels),
        Just(RejectCode::Closed),
    ]
}

fn close_code() -> impl Strategy<Value = CloseCode> {
    prop_oneof![
        Just(CloseCode::Done),
        Just(CloseCode::Hangup),
        Just(CloseCode::ReceiverGone),
        Just(CloseCode::Error),
    ]
}

fn codec() -> impl Strategy<Value = CodecId> {
    prop_oneof![Just(CodecId::Bincode), Just(CodecId::Postcard)]
}

/// Every frame variant, with strings short enough not to be clipped
/// (256 chars are at most 1024 bytes).
fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (chan_id(), dir(), any::<u32>(), text(256), text(500)).prop_map(
            |(chan, dir, capacity, name, type_name)| Frame::Open {
                chan,
                dir,
                capacity,
                name,
                type_name,
            }
        ),
        (chan_id(), any::<u32>()).prop_map(|(chan, capacity)| Frame::Accept { chan, capacity }),
        (chan_id(), reject_code(), text(256)).prop_map(|(chan, code, reason)| Frame::Reject {
            chan,
            code,
            reason
        }),
        (
            chan_id(),
            0u8..=(FLAG_END | FLAG_HANDLES),
            proptest::collection::vec(any::<u8>(), 0..=TEST_CHUNK)
        )
            .prop_map(|(chan, flags, payload)| Frame::Data {
                chan,
                flags,
                payload: payload.into(),
            }),
        (chan_id(), any::<u32>(), any::<u64>()).prop_map(|(chan, grant, received)| Frame::Credit {
            chan,
            grant,
            received
        }),
        (chan_id(), close_code(), text(256)).prop_map(|(chan, code, reason)| Frame::Close {
            chan,
            code,
            reason
        }),
        text(256).prop_map(|reason| Frame::Goodbye { reason }),
        any::<u64>().prop_map(Frame::Ping),
        any::<u64>().prop_map(Frame::Pong),
    ]
}

proptest! {
    #[test]
    fn every_frame_round_trips_through_encode_and_decode(f in frame()) {
        let mut b = BytesMut::new();
        f.encode(&mut b);
        let declared = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        prop_assert_eq!(declared + HEADER_LEN, b.len());
        prop_assert_eq!(Frame::decode(&mut b, TEST_CHUNK), Ok(Some(f)));
        prop_assert!(b.is_empty());
    }

    #[test]
    fn a_frame_cut_anywhere_needs_more_bytes_and_consumes_nothing(
        f in frame(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut whole = BytesMut::new();
        f.encode(&mut whole);
        let k = cut.index(whole.len());
        let mut part = BytesMut::from(&whole[..k]);
        prop_assert_eq!(Frame::decode(&mut part, TEST_CHUNK), Ok(None));
        prop_assert_eq!(&part[..], &whole[..k]);
        part.extend_from_slice(&whole[k..]);
        prop_assert_eq!(Frame::decode(&mut part, TEST_CHUNK), Ok(Some(f)));
        prop_assert!(part.is_empty());
    }

    #[test]
    fn frames_back_to_back_decode_in_order_however_the_stream_is_split(
        frames in proptest::collection::vec(frame(), 1..8),
        piece in 1usize..64,
    ) {
        let mut stream = BytesMut::new();
        for f in &frames {
            f.encode(&mut stream);
        }
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for bytes in stream.chunks(piece) {
            buf.extend_from_slice(bytes);
            while let Some(f) = Frame::decode(&mut buf, TEST_CHUNK).unwrap() {
                got.push(f);
            }
        }
        prop_assert_eq!(got, frames);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn every_hello_round_trips(codec in codec(), m in 1u32.., c in 1u32.., hs in any::<u32>()) {
        let h = Hello { version: PROTOCOL_VERSION, codec, max_message_len: m, max_channels: c, max_handles: hs };
        let mut b = BytesMut::new();
        h.encode(&mut b);
        prop_assert_eq!(b.len(), HELLO_LEN);
        prop_assert_eq!(Hello::decode(&mut b, &h), Ok(Some(h)));
        prop_assert!(b.is_empty());
    }

    #[test]
    fn a_hello_cut_anywhere_needs_more_bytes_and_consumes_nothing(
        codec in codec(),
        m in 1u32..,
        c in 1u32..,
        hs in any::<u32>(),
        k in 0usize..HELLO_LEN,
    ) {
        let h = Hello { version: PROTOCOL_VERSION, codec, max_message_len: m, max_channels: c, max_handles: hs };
        let mut whole = BytesMut::new();
        h.encode(&mut whole);
        let mut part = BytesMut::from(&whole[..k]);
        prop_assert_eq!(Hello::decode(&mut part, &h), Ok(None));
        prop_assert_eq!(part.len(), k);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_frame_decoder(
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
        chunk in 0usize..32,
    ) {
        let mut b = BytesMut::from(&bytes[..]);
        match Frame::decode(&mut b, chunk) {
            Ok(None) => prop_assert_eq!(b.len(), bytes.len()),
            Ok(Some(_)) => prop_assert!(b.len() <= bytes.len() - HEADER_LEN),
            Err(_) => {}
        }
    }

    #[test]
    fn arbitrary_bytes_after_a_hello_never_panic_a_connection(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
        piece in 1usize..32,
    ) {
        let mut p = lone(Side::Acceptor, chunked(16));
        let mut failed = None;
        for part in bytes.chunks(piece) {
            if let Err(e) = p.receive(part, t0()) {
                failed = Some(e);
                break;
            }
        }
        if let Some(e) = failed {
            prop_assert!(p.conn.is_ended());
            // An error is final and reported again on every later call.
            // (AfterGoodbye is the exception: the connection ended cleanly
            // just before, and that is what it records.)
            if e != ProtoError::AfterGoodbye {
            prop_assert_eq!(p.conn.error(), Some(&e));
            prop_assert_eq!(p.receive(&[], t0()), Err(e));
            }
        }
        p.transmit(t0());
    }

    #[test]
    fn messages_of_any_size_arrive_intact_in_chunks_of_at_most_chunk_size(
        len in 0usize..300,
        chunk in 1usize..40,
    ) {
        let mut p = Pair::connected_with(chunked(chunk), chunked(chunk));
        let chan = p.d_sends(1);
        let body: Vec<u8> = (0..len).map(|i| i as u8).collect();
        p.d.send(chan, &body, &[]).unwrap();
        p.drive();
        prop_assert_eq!(p.a.take_events(), vec![message(chan, &body)]);
        let frames = data_frames(&p.d.take_sent());
        prop_assert_eq!(frames.len(), len.div_ceil(chunk).max(1));
        for (i, (c, flags, n)) in frames.iter().enumerate() {
            let last = i + 1 == frames.len();
            prop_assert_eq!(*c, chan);
            prop_assert_eq!(*flags, if last { FLAG_END } else { 0 });
            prop_assert!(*n <= chunk);
        }
    }
}

// ---------------------------------------------------------------------------
// Byte layout
// ---------------------------------------------------------------------------

#[test]
fn worked_examples_in_protocol_md_are_exact() {
    // The hello of a default bincode side.
    let mut b = BytesMut::new();
    Hello {
        version: PROTOCOL_VERSION,
        codec: CodecId::Bincode,
        max_message_len: 16 << 20,
        max_channels: 1024,
        max_handles: 128,
    }
    .encode(&mut b);
    assert_eq!(
        &b[..],
        &b"\x89NETCHAN\x04\x00\x01\x00\x00\x00\x00\x01\x00\x04\x00\x00\x80\x00\x00\x00\
           \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
           \x00\x00\x00\x00\x00\x00\x00\x00"[..]
    );

    // The String "hi" as a message on channel 1.
    let body = bincode::serde::encode_to_vec("hi", bincode::config::standard()).unwrap();
    assert_eq!(body, b"\x02hi");
    let f = Frame::Data {
        chan: 1,
        flags: FLAG_END,
        payload: body.into(),
    };
    assert_eq!(
        enc(&f),
        b"\x03\x00\x00\x00\x04\x01\x01\x00\x00\x00\x02hi".to_vec()
    );

    // A message that is one Sender handle: table entry 0 names channel 3
    // (a Sender for the recipient, 4 credits up front); the body is the
    // handle's table index, 0, as a bincode u32.
    let index = bincode::serde::encode_to_vec(0u32, bincode::config::standard()).unwrap();
    assert_eq!(index, [0]);
    let mut p = Pair::connected();
    let chan = p.d_sends(1);
    let h = p.d.conn.alloc_handle(Role::Receiving, 4).unwrap();
    assert_eq!(h, 3);
    let desc = HandleDesc {
        kind: HandleKind::Sender,
        chan: h,
        capacity: 4,
    };
    p.d.send(chan, &index, &[desc]).unwrap();
    assert_eq!(
        &p.d.transmit(p.now)[..],
        b"\x0c\x00\x00\x00\x04\x03\x01\x00\x00\x00\x01\x00\x00\x03\x00\x00\x00\x04\x00\x00\x00\x00"
    );

    // CREDIT: grant 4, received through 1 on channel 2.
    assert_eq!(
        enc(&Frame::Credit {
            chan: 2,
            grant: 4,
            received: 1
        }),
        b"\x0c\x00\x00\x00\x05\x00\x02\x00\x00\x00\x04\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00"
            .to_vec()
    );

    // OPEN: channel 1 receives "jobs" of type u32 with capacity 8.
    assert_eq!(
        enc(&Frame::Open {
            chan: 1,
            dir: Dir::OpenerReceives,
            capacity: 8,
            name: "jobs".into(),
            type_name: "u32".into(),
        }),
        b"\x10\x00\x00\x00\x01\x00\x01\x00\x00\x00\x00\x08\x00\x00\x00\x04\x00jobs\x03\x00u32"
            .to_vec()
    );
}

#[test]
fn long_reasons_are_cut_at_a_character_boundary() {
    let reason = format!("{}é", "a".repeat(MAX_REASON_LEN - 1));
    for f in [
        Frame::Close {
            chan: 1,
            code: CloseCode::Error,
            reason: reason.clone(),
        },
        Frame::Reject {
            chan: 1,
            code: RejectCode::NoSuchName,
            reason: reason.clone(),
        },
        Frame::Goodbye {
            reason: reason.clone(),
        },
    ] {
        let mut b = BytesMut::from(&enc(&f)[..]);
        let back = Frame::decode(&mut b, TEST_CHUNK).unwrap().unwrap();
        let got = match back {
            Frame::Close { reason, .. }
            | Frame::Reject { reason, .. }
            | Frame::Goodbye { reason } => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(got, "a".repeat(MAX_REASON_LEN - 1));
    }
}

#[test]
fn the_longest_open_still_fits_a_control_frame() {
    let f = Frame::Open {
        chan: 1,
        dir: Dir::OpenerSends,
        capacity: 1,
        name: "n".repeat(5000),
        type_name: "t".repeat(5000),
    };
    let bytes = enc(&f);
    assert!(bytes.len() - HEADER_LEN <= MAX_CONTROL_PAYLOAD);
    let mut b = BytesMut::from(&bytes[..]);
    assert!(matches!(
        Frame::decode(&mut b, TEST_CHUNK),
        Ok(Some(Frame::Open { .. }))
    ));
}

// ---------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------

#[test]
fn handshake_gives_both_sides_ready_with_the_peers_hello() {
    let ld = limits(|l| {
        l.max_message_len = 1000;
        l.max_channels = 7;
    });
    let mut p = Pair::new(ld, Limits::default());
    assert!(!p.d.conn.is_open() && !p.a.conn.is_open());
    assert_eq!(
        p.d.conn.open("x", Dir::OpenerSends, 0, "T"),
        Err(OpenError::Ended)
    );
    p.drive();
    assert_eq!(
        p.a.take_events(),
        vec![Event::Ready(Hello {
            version: PROTOCOL_VERSION,
            codec: CodecId::Bincode,
            max_message_len: 1000,
            max_channels: 7,
            max_handles: 128,
        })]
    );
    assert_eq!(
        p.d.take_events(),
        vec![Event::Ready(Hello {
            version: PROTOCOL_VERSION,
            codec: CodecId::Bincode,
            max_message_len: 16 << 20,
            max_channels: 1024,
            max_handles: 128,
        })]
    );
    assert!(p.d.conn.is_open() && p.a.conn.is_open());
    // Nothing but the hellos crossed.
    assert!(p.d.sent.is_empty() && p.a.sent.is_empty());
    assert_eq!(p.a.conn.send_limit(), 1000);
    assert_eq!(p.d.conn.send_limit(), 16 << 20);
}

#[test]
fn frames_behind_the_hello_in_the_same_read_are_processed() {
    let mut p = Peer::new(Side::Acceptor, Limits::default(), CodecId::Bincode, t0());
    let mut bytes = hello_bytes(PROTOCOL_VERSION, 1, 0, 100, 100);
    bytes.extend(open_frame(1, Dir::OpenerSends, 0));
    p.receive(&bytes, t0()).unwrap();
    let evs = p.take_events();
    assert!(matches!(
        evs[..],
        [Event::Ready(_), Event::Open { chan: 1, .. }]
    ));
}

#[test]
fn hello_with_wrong_magic_is_not_netchan_before_eight_bytes_arrive() {
    let junk: [&[u8]; 4] = [b"G", b"GET / HTTP/1.1\r\n", b"\x89NETCHAX", b"SSH-"];
    for junk in junk {
        let mut p = Peer::new(Side::Acceptor, Limits::default(), CodecId::Bincode, t0());
        assert_eq!(
            p.receive(junk, t0()),
            Err(ProtoError::NotNetchan),
            "{junk:?}"
        );
        assert_eq!(p.conn.error(), Some(&ProtoError::NotNetchan));
        assert!(p.conn.is_ended());
    }
    // A TLS record (handshake or alert) is named as such.
    for tls in [&[0x16u8, 0x03, 0x01][..], &[0x15, 0x03, 0x03]] {
        let mut p = Peer::new(Side::Acceptor, Limits::default(), CodecId::Bincode, t0());
        assert_eq!(p.receive(tls, t0()), Err(ProtoError::PeerSpeaksTls));
    }
    // A correct prefix waits for the rest.
    let mut p = Peer::new(Side::Acceptor, Limits::default(), CodecId::Bincode, t0());
    assert_eq!(p.receive(&MAGIC[..5], t0()), Ok(()));
    assert!(!p.conn.is_ended());
}

#[test]
fn hello_with_another_version_is_a_version_mismatch_as_soon_as_the_version_arrives() {
    let mut p = Peer::new(Side::Acceptor, Limits::default(), CodecId::Bincode, t0());
    let bytes = hello_bytes(PROTOCOL_VERSION + 1, 1, 0, 100, 100);
    assert_eq!(p.receive(&bytes[..9], t0()), Ok(()));
    assert_eq!(
        p.receive(&bytes[9..10], t0()),
        Err(ProtoError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: PROTOCOL_VERSION + 1
        })
    );
}

#[test]
fn hellos_with_different_codecs_fail_on_both_sides() {
    let mut p = Pair::new(Limits::default(), Limits::default());
    p.d = Peer::new(Side::Dialer, Limits::default(), CodecId::Postcard, p.now);
    assert_eq!(
        p.try_drive(),
        Err((
            Side::Acceptor,
            ProtoError::CodecMismatch {
                ours: CodecId::Bincode,
                theirs: CodecId::Postcard
            }
        ))
    );
    assert_eq!(
        p.d.receive(&hello_bytes(PROTOCOL_VERSION, 1, 0, 9, 9), p.now),
        Err(ProtoError::CodecMismatch {
            ours: CodecId::Postcard,
            theirs: CodecId::Bincode
        })
    );
}

#[test]
fn hello_with_an_unknown_codec_unknown_flags_a_zero_limit_or_an_unknown_resume_is_refused() {
    let cases = [
        (
            hello_bytes(PROTOCOL_VERSION, 9, 0, 9, 9),
            ProtoError::UnknownCodec(9),
        ),
        (
            hello_bytes(PROTOCOL_VERSION, 1, 0x80, 9, 9),
            ProtoError::BadHello("unknown flags"),
        ),
        // A resume reaches a side that keeps no sessions.
        (
            hello_bytes(PROTOCOL_VERSION, 1, hello::FLAG_RESUME, 9, 9),
            ProtoError::ResumeRefused,
        ),
        (
            hello_bytes(PROTOCOL_VERSION, 1, 0, 0, 9),
            ProtoError::BadHello("zero limit"),
        ),
        (
            hello_bytes(PROTOCOL_VERSION, 1, 0, 9, 0),
            ProtoError::BadHello("zero limit"),
        ),
    ];
    for (bytes, want) in cases {
        let mut p = Peer::new(Side::Acceptor, Limits::default(), CodecId::Bincode, t0());
        assert_eq!(p.receive(&bytes, t0()), Err(want));
    }
}

#[test]
fn channel_limit_is_the_lower_of_both_hellos() {
    let mut p = Pair::connected_with(limits(|l| l.max_channels = 2), Limits::default());
    p.a.conn.open("a", Dir::OpenerSends, 0, "T").unwrap();
    p.a.conn.open("b", Dir::OpenerSends, 0, "T").unwrap();
    assert_eq!(
        p.a.conn.open("c", Dir::OpenerSends, 0, "T"),
        Err(OpenError::TooManyChannels(2))
    );
    assert_eq!(
        p.a.conn.alloc_handle(Role::Sending, 1),
        Err(OpenError::TooManyChannels(2))
    );
}

#[test]
fn open_refuses_a_name_longer_than_the_wire_allows() {
    let mut p = Pair::connected();
    let name = "n".repeat(frame::MAX_NAME_LEN + 1);
    assert_eq!(
        p.d.conn.open(&name, Dir::OpenerSends, 0, "T"),
        Err(OpenError::NameTooLong)
    );
    assert_eq!(p.d.conn.channel_count(), 0);
}

// ---------------------------------------------------------------------------
// Open, accept, reject
// ---------------------------------------------------------------------------

#[test]
fn open_then_accept_gives_sender_its_capacity_as_credit() {
    let mut p = Pair::connected();
    let chan = p.d.conn.open("jobs", Dir::OpenerSends, 0, "Job").unwrap();
    assert_eq!(p.d.conn.can_send(chan), Err(SendBlock::NoCredit));
    p.drive();
    assert_eq!(
        p.d.take_sent(),
        vec![Frame::Open {
            chan,
            dir: Dir::OpenerSends,
            capacity: 0,
            name: "jobs".into(),
            type_name: "Job".into(),
        }]
    );
    assert_eq!(
        p.a.take_events(),
        vec![Event::Open {
            chan,
            dir: Dir::OpenerSends,
            capacity: 0,
            name: "jobs".into(),
            type_name: "Job".into(),
        }]
    );
    p.a.conn.accept(chan, 3);
    p.drive();
    assert_eq!(p.a.take_sent(), vec![Frame::Accept { chan, capacity: 3 }]);
    assert_eq!(
        p.d.take_events(),
        vec![Event::Accepted { chan, capacity: 3 }]
    );
    assert_eq!(p.d.conn.credit(chan), 3);
    assert_eq!(p.d.conn.can_send(chan), Ok(()));
    assert_eq!(p.a.conn.outstanding(chan), 3);
    assert_eq!(p.a.conn.can_send(chan), Err(SendBlock::Closed));
}

#[test]
fn open_to_receive_gives_the_acceptor_the_openers_capacity_as_credit() {
    let mut p = Pair::connected();
    let chan =
        p.d.conn
            .open("feed", Dir::OpenerReceives, 5, "u32")
            .unwrap();
    p.drive();
    assert!(matches!(
        p.a.take_events()[..],
        [Event::Open {
            dir: Dir::OpenerReceives,
            capacity: 5,
            ..
        }]
    ));
    // The acceptor sends, so its capacity argument is ignored.
    p.a.conn.accept(chan, 99);
    p.drive();
    assert_eq!(p.a.take_sent(), vec![Frame::Accept { chan, capacity: 0 }]);
    assert_eq!(
        p.d.take_events(),
        vec![Event::Accepted { chan, capacity: 0 }]
    );
    assert_eq!(p.a.conn.credit(chan), 5);
    assert_eq!(p.d.conn.outstanding(chan), 5);
    p.a.send(chan, b"1", &[]).unwrap();
    p.drive();
    assert_eq!(p.d.take_events(), vec![message(chan, b"1")]);
}

#[test]
fn open_then_reject_removes_the_channel_on_both_sides() {
    let mut p = Pair::connected();
    let chan = p.d.conn.open("nope", Dir::OpenerSends, 0, "T").unwrap();
    p.drive();
    p.a.take_events();
    p.a.conn
        .reject(chan, RejectCode::NoSuchName, "no export named nope");
    p.drive();
    assert_eq!(
        p.d.take_events(),
        vec![Event::Rejected {
            chan,
            code: RejectCode::NoSuchName,
            reason: "no export named nope".into()
        }]
    );
    assert_eq!(p.d.conn.channel_count(), 0);
    assert_eq!(p.a.conn.channel_count(), 0);
    assert_eq!(p.d.conn.can_send(chan), Err(SendBlock::Closed));
    // The id is spent: an answer arriving later is a protocol error.
    assert_eq!(
        p.d.receive(&enc(&Frame::Accept { chan, capacity: 1 }), p.now),
        Err(ProtoError::UnknownChannel(chan))
    );
}

#[test]
fn channel_ids_have_the_sides_parity_increase_and_are_shared_with_handles() {
    let mut p = Pair::connected();
    let d: Vec<_> = (0..3)
        .map(|_| p.d.conn.open("x", Dir::OpenerSends, 0, "T").unwrap())
        .collect();
    assert_eq!(d, [1, 3, 5]);
    assert_eq!(p.d.conn.alloc_handle(Role::Sending, 1), Ok(7));
    let a: Vec<_> = (0..2)
        .map(|_| p.a.conn.open("x", Dir::OpenerSends, 0, "T").unwrap())
        .collect();
    assert_eq!(a, [2, 4]);
    assert_eq!(p.a.conn.alloc_handle(Role::Receiving, 1), Ok(6));
}

// ---------------------------------------------------------------------------
// Data, chunking, fairness
// ---------------------------------------------------------------------------

#[test]
fn small_message_travels_as_one_frame_with_the_end_flag() {
    let mut p = Pair::connected();
    let chan = p.d_sends(2);
    p.d.send(chan, b"hello", &[]).unwrap();
    assert_eq!(p.d.conn.credit(chan), 1);
    assert_eq!(p.d.conn.unconfirmed(), 1);
    assert_eq!(p.d.conn.sent_total(), 1);
    p.drive();
    assert_eq!(
        p.d.take_sent(),
        vec![Frame::Data {
            chan,
            flags: FLAG_END,
            payload: Bytes::from_static(b"hello")
        }]
    );
    assert_eq!(p.a.take_events(), vec![message(chan, b"hello")]);
    assert_eq!(p.a.conn.outstanding(chan), 1);
}

#[test]
fn empty_message_is_one_empty_frame() {
    let mut p = Pair::connected();
    let chan = p.d_sends(1);
    p.d.send(chan, b"", &[]).unwrap();
    p.drive();
    assert_eq!(data_frames(&p.d.take_sent()), vec![(chan, FLAG_END, 0)]);
    assert_eq!(p.a.take_events(), vec![message(chan, b"")]);
}

#[test]
fn large_message_is_chunked_and_reassembled_intact() {
    let mut p = Pair::connected_with(chunked(16), chunked(16));
    let chan = p.d_sends(1);
    let body: Vec<u8> = (0..100).collect();
    p.d.send(chan, &body, &[]).unwrap();
    p.drive();
    assert_eq!(
        data_frames(&p.d.take_sent()),
        vec![
            (chan, 0, 16),
            (chan, 0, 16),
            (chan, 0, 16),
            (chan, 0, 16),
            (chan, 0, 16),
            (chan, 0, 16),
            (chan, FLAG_END, 4),
        ]
    );
    assert_eq!(p.a.take_events(), vec![message(chan, &body)]);
}

/// The data of the next message event, taken out of `events`.
fn message_data(events: Vec<Event>) -> Bytes {
    match events.into_iter().next() {
        Some(Event::Message { data, .. }) => data,
        other => panic!("expected a message, got {other:?}"),
    }
}

#[test]
fn a_chunked_message_starts_in_a_buffer_as_large_as_the_last_one_on_its_channel() {
    let mut p = Pair::connected_with(chunked(16), chunked(16));
    let chan = p.d_sends(1);
    let mut capacities = Vec::new();
    for len in [100usize, 100, 40] {
        let body: Vec<u8> = (0..len).map(|i| i as u8).collect();
        p.d.send(chan, &body, &[]).unwrap();
        p.drive();
        let data = message_data(p.a.take_events());
        assert_eq!(&data[..], &body[..]);
        capacities.push(data.try_into_mut().unwrap().capacity());
        p.a.conn.credit_update(chan, 1, 1);
        p.drive();
        p.clear();
    }
    // The first grows from twice its first chunk (32, 64, 128); the next
    // ones start as large as the one before, and need not grow.
    assert_eq!(capacities, [128, 100, 100]);
}

#[test]
fn message_of_exactly_chunk_size_is_one_frame() {
    let mut p = Pair::connected_with(chunked(16), chunked(16));
    let chan = p.d_sends(1);
    p.d.send(chan, &[7; 16], &[]).unwrap();
    p.drive();
    assert_eq!(data_frames(&p.d.take_sent()), vec![(chan, FLAG_END, 16)]);
}

#[test]
fn large_messages_on_two_channels_interleave_chunk_by_chunk() {
    let mut p = Pair::connected_with(chunked(16), chunked(16));
    let c1 = p.d_sends(1);
    let c3 = p.d_sends(1);
    p.d.send(c1, &[b'a'; 64], &[]).unwrap();
    p.d.send(c3, &[b'b'; 48], &[]).unwrap();
    p.drive();
    let order: Vec<ChanId> = data_frames(&p.d.take_sent())
        .into_iter()
        .map(|(c, _, _)| c)
        .collect();
    assert_eq!(order, [c1, c3, c1, c3, c1, c3, c1]);
    assert_eq!(
        p.a.take_events(),
        vec![message(c3, &[b'b'; 48]), message(c1, &[b'a'; 64])]
    );
}

/// The chunks (channel and payload length) of one transmit.
fn transmit_chunks(p: &mut Pair) -> Vec<(ChanId, usize)> {
    let bytes = p.d.transmit(p.now);
    p.a.receive(&bytes, p.now).unwrap();
    data_frames(&p.d.take_sent())
        .into_iter()
        .map(|(c, _, n)| (c, n))
        .collect()
}

#[test]
fn small_message_overtakes_the_rest_of_a_large_one_on_another_channel() {
    let mut p = Pair::connected();
    let big = p.d_sends(1);
    let small = p.d_sends(2);
    let body = vec![1u8; 1 << 20];
    p.d.send(big, &body, &[]).unwrap();
    // Alone on the connection: a few chunks per transmit, not the megabyte.
    let chunk = Limits::default().chunk_size;
    assert_eq!(transmit_chunks(&mut p), vec![(big, chunk); SOLO_CHUNKS]);
    p.d.send(small, b"x", &[]).unwrap();
    // The small message goes first, and one chunk follows it.
    assert_eq!(transmit_chunks(&mut p), vec![(small, 1), (big, chunk)]);
    // From then on, one chunk per transmit.
    assert_eq!(transmit_chunks(&mut p), vec![(big, chunk)]);
    p.d.send(small, b"y", &[]).unwrap();
    assert_eq!(transmit_chunks(&mut p), vec![(small, 1), (big, chunk)]);
    p.drive();
    assert_eq!(
        p.a.take_events(),
        vec![
            message(small, b"x"),
            message(small, b"y"),
            message(big, &body)
        ]
    );
}

#[test]
fn a_large_message_after_a_small_one_waits_the_quiet_time_for_larger_writes() {
    let mut p = Pair::connected();
    let big = p.d_sends(1);
    let small = p.d_sends(1);
    let chunk = Limits::default().chunk_size;
    p.d.send(small, b"x", &[]).unwrap();
    p.d.send(big, &vec![1u8; 1 << 20], &[]).unwrap();
    // A small message went with this transmit: one chunk.
    assert_eq!(transmit_chunks(&mut p), vec![(small, 1), (big, chunk)]);
    p.now += MIXED_QUIET - Duration::from_millis(1);
    assert_eq!(transmit_chunks(&mut p), vec![(big, chunk)]);
    // No small message for the quiet time: alone again.
    p.now += Duration::from_millis(1);
    assert_eq!(transmit_chunks(&mut p), vec![(big, chunk); SOLO_CHUNKS]);
}

#[test]
fn a_large_message_alone_goes_one_chunk_per_transmit_while_the_stream_is_full() {
    let mut p = Pair::connected();
    let big = p.d_sends(1);
    let chunk = Limits::default().chunk_size;
    p.d.send(big, &vec![1u8; 1 << 20], &[]).unwrap();
    // The last write waited for room: a small message queued during the
    // next one must not wait behind several chunks.
    p.d.conn.set_stream_full(true);
    assert_eq!(transmit_chunks(&mut p), vec![(big, chunk)]);
    assert_eq!(transmit_chunks(&mut p), vec![(big, chunk)]);
    p.d.conn.set_stream_full(false);
    assert_eq!(transmit_chunks(&mut p), vec![(big, chunk); SOLO_CHUNKS]);
}

#[test]
fn two_large_messages_go_one_chunk_per_transmit_until_one_is_alone() {
    let mut p = Pair::connected();
    let a = p.d_sends(1);
    let b = p.d_sends(1);
    let chunk = Limits::default().chunk_size;
    p.d.send(a, &vec![1u8; 2 * chunk], &[]).unwrap();
    p.d.send(b, &vec![2u8; 8 * chunk], &[]).unwrap();
    assert_eq!(transmit_chunks(&mut p), vec![(a, chunk)]);
    assert_eq!(transmit_chunks(&mut p), vec![(b, chunk)]);
    assert_eq!(transmit_chunks(&mut p), vec![(a, chunk)]);
    // `a` is done: `b` is alone.
    assert_eq!(transmit_chunks(&mut p), vec![(b, chunk); SOLO_CHUNKS]);
}

#[test]
fn messages_behind_a_large_one_on_the_same_channel_keep_their_order() {
    let mut p = Pair::connected_with(chunked(16), chunked(16));
    let chan = p.d_sends(3);
    p.d.send(chan, &[1; 40], &[]).unwrap();
    p.d.send(chan, b"two", &[]).unwrap();
    p.d.send(chan, b"three", &[]).unwrap();
    p.drive();
    assert_eq!(
        p.a.take_events(),
        vec![
            message(chan, &[1; 40]),
            message(chan, b"two"),
            message(chan, b"three")
        ]
    );
}

#[test]
fn message_larger_than_the_peer_accepts_is_refused_and_leaves_nothing_behind() {
    let mut p = Pair::connected_with(Limits::default(), limits(|l| l.max_message_len = 10));
    let chan = p.d_sends(2);
    assert_eq!(
        p.d.send(chan, &[0; 11], &[]),
        Err(FinishError::TooLarge {
            size: 11,
            limit: 10
        })
    );
    // The handle table counts towards the size.
    let h = p.d.conn.alloc_handle(Role::Sending, 1).unwrap();
    let desc = HandleDesc {
        kind: HandleKind::Receiver,
        chan: h,
        capacity: 1,
    };
    assert_eq!(
        p.d.send(chan, &[0; 5], &[desc]),
        Err(FinishError::TooLarge {
            size: 5 + 2 + 9,
            limit: 10
        })
    );
    p.d.conn.forget(h);
    assert_eq!(p.d.conn.credit(chan), 2);
    assert_eq!(p.d.conn.sent_total(), 0);
    assert!(!p.d.conn.wants_transmit());
    p.d.send(chan, &[0; 10], &[]).unwrap();
    p.drive();
    assert_eq!(p.a.take_events(), vec![message(chan, &[0; 10])]);
}

#[test]
fn handles_beyond_the_peers_announced_limit_are_refused_when_finishing_a_message() {
    let mut p = Pair::connected_with(Limits::default(), limits(|l| l.max_handles = 2));
    assert_eq!(p.d.conn.send_handle_limit(), 2);
    let chan = p.d_sends(2);
    let handle = |p: &mut Pair| HandleDesc {
        kind: HandleKind::Receiver,
        chan: p.d.conn.alloc_handle(Role::Sending, 1).unwrap(),
        capacity: 1,
    };
    let hs: Vec<HandleDesc> = (0..3).map(|_| handle(&mut p)).collect();
    assert_eq!(
        p.d.send(chan, b"x", &hs),
        Err(FinishError::TooManyHandles { count: 3, limit: 2 })
    );
    for h in hs {
        p.d.conn.forget(h.chan);
    }
    assert_eq!(p.d.conn.credit(chan), 2);
    // Two fit: the message goes through and the connection stays open.
    let hs: Vec<HandleDesc> = (0..2).map(|_| handle(&mut p)).collect();
    p.d.send(chan, b"x", &hs).unwrap();
    p.drive();
    assert!(matches!(
        &p.a.take_events()[..],
        [Event::Message { handles, .. }] if handles.len() == 2
    ));
    assert!(p.a.conn.is_open() && p.d.conn.is_open());
}

#[test]
fn too_many_handles_are_refused_when_finishing_a_message() {
    let mut p = Pair::connected_with(limits(|l| l.max_handles = 2), Limits::default());
    let chan = p.d_sends(1);
    let hs: Vec<HandleDesc> = (0..3)
        .map(|_| HandleDesc {
            kind: HandleKind::Receiver,
            chan: p.d.conn.alloc_handle(Role::Sending, 1).unwrap(),
            capacity: 1,
        })
        .collect();
    assert_eq!(
        p.d.send(chan, b"x", &hs),
        Err(FinishError::TooManyHandles { count: 3, limit: 2 })
    );
    assert_eq!(p.d.conn.credit(chan), 1);
    assert!(!p.d.conn.wants_transmit());
}

// ---------------------------------------------------------------------------
// Handles inside messages
// ---------------------------------------------------------------------------

#[test]
fn message_with_handles_arrives_with_the_same_handle_table() {
    let mut p = Pair::connected();
    let chan = p.d_sends(1);
    // The acceptor will get a Sender (the dialer receives on it) and a
    // Receiver (the dialer sends on it).
    let hs = p.d.conn.alloc_handle(Role::Receiving, 2).unwrap();
    let hr = p.d.conn.alloc_handle(Role::Sending, 3).unwrap();
    let handles = vec![
        HandleDesc {
            kind: HandleKind::Sender,
            chan: hs,
            capacity: 2,
        },
        HandleDesc {
            kind: HandleKind::Receiver,
            chan: hr,
            capacity: 3,
        },
    ];
    p.d.send(chan, b"body", &handles).unwrap();
    p.drive();
    let sent = p.d.take_sent();
    let mut payload = table(&[(0, hs, 2), (1, hr, 3)]);
    payload.extend_from_slice(b"body");
    assert_eq!(
        sent,
        vec![Frame::Data {
            chan,
            flags: FLAG_END | FLAG_HANDLES,
            payload: payload.into()
        }]
    );
    assert_eq!(
        p.a.take_events(),
        vec![Event::Message {
            chan,
            data: Bytes::from_static(b"body"),
            handles
        }]
    );
    assert_eq!(p.a.conn.channel_count(), 3);
}

#[test]
fn adopted_handles_are_usable_in_both_directions() {
    let mut p = Pair::connected();
    let chan = p.d_sends(1);
    let hs = p.d.conn.alloc_handle(Role::Receiving, 2).unwrap();
    let hr = p.d.conn.alloc_handle(Role::Sending, 3).unwrap();
    let handles = [
        HandleDesc {
            kind: HandleKind::Sender,
            chan: hs,
            capacity: 2,
        },
        HandleDesc {
            kind: HandleKind::Receiver,
            chan: hr,
            capacity: 3,
        },
    ];
    p.d.send(chan, b"", &handles).unwrap();
    p.drive();
    p.clear();

    // A Sender handle comes with its credit up front.
    assert_eq!(p.a.conn.credit(hs), 2);
    p.a.send(hs, b"up1", &[]).unwrap();
    p.a.send(hs, b"up2", &[]).unwrap();
    assert_eq!(p.a.conn.can_send(hs), Err(SendBlock::NoCredit));
    p.drive();
    assert_eq!(
        p.d.take_events(),
        vec![message(hs, b"up1"), message(hs, b"up2")]
    );

    // Their arrival is confirmed to the sender.
    assert_eq!(p.a.take_events(), vec![Event::Credit { chan: hs }]);
    assert_eq!(p.a.conn.unconfirmed_on(hs), 0);

    // A Receiver handle's new owner grants credit to the originator.
    assert_eq!(p.d.conn.can_send(hr), Err(SendBlock::NoCredit));
    p.a.conn.credit_update(hr, 3, 0);
    p.drive();
    assert_eq!(p.d.take_events(), vec![Event::Credit { chan: hr }]);
    assert_eq!(p.d.conn.credit(hr), 3);
    p.d.send(hr, b"down", &[]).unwrap();
    p.drive();
    assert_eq!(p.a.take_events(), vec![message(hr, b"down")]);
}

#[test]
fn handle_table_survives_chunking() {
    let mut p = Pair::connected_with(chunked(16), chunked(16));
    let chan = p.d_sends(1);
    let h = p.d.conn.alloc_handle(Role::Sending, 4).unwrap();
    let handles = vec![HandleDesc {
        kind: HandleKind::Receiver,
        chan: h,
        capacity: 4,
    }];
    let body = [9u8; 30];
    p.d.send(chan, &body, &handles).unwrap();
    p.drive();
    let frames = data_frames(&p.d.take_sent());
    // 11 bytes of table + 30 of body in chunks of 16.
    assert_eq!(frames.len(), 3);
    assert_eq!(frames[0], (chan, FLAG_HANDLES, 16));
    assert_eq!(frames[1], (chan, 0, 16));
    assert_eq!(frames[2], (chan, FLAG_END, 9));
    assert_eq!(
        p.a.take_events(),
        vec![Event::Message {
            chan,
            data: Bytes::copy_from_slice(&body),
            handles
        }]
    );
}

// ---------------------------------------------------------------------------
// Credit
// ---------------------------------------------------------------------------

#[test]
fn the_reader_arms_the_wait_of_a_confirmation_so_the_writer_need_not_wake() {
    let mut p = Pair::connected();
    let chan = p.d_sends(8);
    p.d.send(chan, b"1", &[]).unwrap();
    let bytes = p.d.transmit(p.now);
    let t0 = p.now;
    // Nothing to arm before anything arrived.
    assert_eq!(p.a.conn.arm_lazy_credit(t0), None);
    p.a.receive(&bytes, t0).unwrap();
    assert_eq!(p.a.take_events().len(), 1);
    // Before: the writer must run, only to arm its timer.
    assert!(p.a.conn.needs_writer());
    assert!(!p.a.conn.wants_transmit());
    // The task that read it arms the wait instead; later calls keep the
    // first start, and the writer need not run.
    assert_eq!(p.a.conn.arm_lazy_credit(t0), Some(t0 + ACK_DELAY));
    assert_eq!(
        p.a.conn.arm_lazy_credit(t0 + ACK_DELAY / 2),
        Some(t0 + ACK_DELAY)
    );
    assert!(!p.a.conn.needs_writer());
    assert_eq!(p.a.conn.poll_timeout(), Some(t0 + ACK_DELAY));
    // Not due yet: nothing to write.
    assert!(p.a.transmit(t0 + ACK_DELAY / 2).is_empty());
    // Due: the confirmation leaves on its own.
    let bytes = p.a.transmit(t0 + ACK_DELAY);
    p.d.receive(&bytes, t0 + ACK_DELAY).unwrap();
    assert_eq!(
        p.a.take_sent(),
        vec![Frame::Credit {
            chan,
            grant: 0,
            received: 1
        }]
    );
    assert_eq!(p.d.conn.unconfirmed(), 0);
    // Nothing left to arm.
    assert_eq!(p.a.conn.arm_lazy_credit(t0 + ACK_DELAY), None);
}

#[test]
fn a_confirmation_a_sender_waits_for_is_never_left_to_a_timer() {
    // Capacity 1, full: the sender waits for the grant of the take, which
    // is urgent. There is nothing to arm: the writer must run.
    let mut p = Pair::connected();
    let chan = p.d_sends(1);
    p.d.send(chan, b"1", &[]).unwrap();
    let bytes = p.d.transmit(p.now);
    p.a.receive(&bytes, p.now).unwrap();
    assert_eq!(p.a.take_events().len(), 1);
    p.a.conn.credit_update(chan, 1, 1);
    assert!(p.a.conn.wants_transmit());
    assert_eq!(p.a.conn.arm_lazy_credit(p.now), None);
    assert!(p.a.conn.needs_writer());
}

#[test]
fn sending_without_credit_is_refused_by_can_send() {
    let mut p = Pair::connected();
    let chan = p.d_sends(1);
    p.d.send(chan, b"1", &[]).unwrap();
    assert_eq!(p.d.conn.can_send(chan), Err(SendBlock::NoCredit));
    assert_eq!(p.d.conn.credit(chan), 0);
    p.drive();
    assert_eq!(p.d.conn.can_send(chan), Err(SendBlock::NoCredit));
}

#[test]
fn arrival_is_confirmed_with_the_next_write_or_after_the_ack_delay_before_anything_is_taken() {
    let mut p = Pair::connected();
    let chan = p.d_sends(8);
    for m in [b"1", b"2", b"3"] {
        p.d.send(chan, m, &[]).unwrap();
    }
    assert_eq!(p.d.conn.unconfirmed(), 3);
    // One transmit carries the three messages. Nobody waits for their
    // confirmation (the sender has credit to spare), so it does not make
    // a write of its own at once...
    let bytes = p.d.transmit(p.now);
    p.a.receive(&bytes, p.now).unwrap();
    assert_eq!(p.a.take_events().len(), 3);
    assert!(!p.a.conn.wants_transmit());
    assert!(p.a.transmit(p.now).is_empty());
    assert_eq!(p.a.conn.poll_timeout(), Some(p.now + ACK_DELAY));
    // ... but leaves one ACK_DELAY later: one CREDIT for all three, no grant.
    p.now += ACK_DELAY;
    let bytes = p.a.transmit(p.now);
    p.d.receive(&bytes, p.now).unwrap();
    assert_eq!(
        p.a.take_sent(),
        vec![Frame::Credit {
            chan,
            grant: 0,
            received: 3
        }]
    );
    assert_eq!(p.d.take_events(), vec![Event::Credit { chan }]);
    assert_eq!(p.d.conn.unconfirmed(), 0);
    assert_eq!(p.d.conn.confirmed_total(), 3);
    // The slots stay taken until the program takes the messages.
    assert_eq!(p.d.conn.credit(chan), 5);
}

#[test]
fn a_confirmation_rides_along_with_a_write_made_for_something_else() {
    let mut p = Pair::connected();
    let chan = p.d_sends(8);
    p.d.send(chan, b"1", &[]).unwrap();
    let bytes = p.d.transmit(p.now);
    p.a.receive(&bytes, p.now).unwrap();
    // The receiver writes for its own reasons (an OPEN): the CREDIT goes too.
    let other = p.a.conn.open("z", Dir::OpenerSends, 0, "T").unwrap();
    assert!(!p.a.transmit(p.now).is_empty());
    let sent = p.a.take_sent();
    assert!(matches!(sent[0], Frame::Open { chan, .. } if chan == other));
    assert_eq!(
        sent[1],
        Frame::Credit {
            chan,
            grant: 0,
            received: 1
        }
    );
}

#[test]
fn one_take_lets_one_waiting_send_in_at_every_capacity() {
    for cap in [1, 2, 3, 4, 5, 8, 16, 64] {
        let mut p = Pair::connected();
        let chan = p.d_sends(cap);
        for _ in 0..cap {
            p.d.send(chan, b"m", &[]).unwrap();
        }
        p.drive();
        assert_eq!(p.d.conn.can_send(chan), Err(SendBlock::NoCredit), "{cap}");
        for round in 0..3 {
            p.clear();
            p.a.conn.credit_update(chan, 1, 1);
            assert_eq!(p.a.conn.outstanding(chan), 1);
            // The sender is out of credit: the grant is written at once.
            assert!(
                p.a.conn.wants_transmit(),
                "capacity {cap}: the grant is urgent"
            );
            p.drive();
            assert_eq!(
                p.a.take_sent(),
                vec![Frame::Credit {
                    chan,
                    grant: 1,
                    received: u64::from(cap) + round
                }],
                "capacity {cap}, round {round}"
            );
            assert_eq!(p.d.conn.credit(chan), 1, "capacity {cap}, round {round}");
            p.d.send(chan, b"m", &[]).unwrap();
            p.drive();
            assert_eq!(p.d.conn.can_send(chan), Err(SendBlock::NoCredit));
        }
    }
}

#[test]
fn a_grant_of_a_quarter_that_empties_the_buffer_is_urgent_and_one_that_does_not_may_wait() {
    for cap in [5u32, 8, 16, 64, 1024] {
        let mut p = Pair::connected();
        let chan = p.d_sends(cap);
        // A quarter of the window (at least 2): the sender still holds
        // more than half of it.
        let k = cap.div_ceil(4).max(2);
        for _ in 0..k {
            p.d.send(chan, b"m", &[]).unwrap();
        }
        p.drive();
        p.clear();
        // All but one taken, one still buffered: the sender has credit to
        // spare, so the grants may ride along with a later write.
        for _ in 0..k - 1 {
            p.a.conn.credit_update(chan, 1, 1);
        }
        assert!(
            !p.a.conn.wants_transmit(),
            "capacity {cap}: a grant to a sender with credit to spare waits"
        );
        // The last taken: the buffer is empty and a quarter of it is to
        // be granted, so all the grants leave at once, in one frame, and
        // nothing else is to be written.
        p.a.conn.credit_update(chan, 1, 1);
        assert!(
            p.a.conn.wants_transmit(),
            "capacity {cap}: a quarter's grant that empties the buffer is urgent"
        );
        assert!(p.a.conn.only_credit_to_write(), "capacity {cap}");
        p.drive();
        assert_eq!(
            p.a.take_sent(),
            vec![Frame::Credit {
                chan,
                grant: k,
                received: u64::from(k)
            }],
            "capacity {cap}"
        );
        assert_eq!(p.d.conn.credit(chan), cap, "capacity {cap}");

        // One value, taken at once: the buffer is empty again, but one
        // grant is less than a quarter and the sender holds the rest of
        // the window, so it waits for a write (or `ACK_DELAY`).
        p.d.send(chan, b"m", &[]).unwrap();
        p.drive();
        p.clear();
        p.a.conn.credit_update(chan, 1, 1);
        assert!(
            !p.a.conn.wants_transmit(),
            "capacity {cap}: one grant that empties the buffer waits"
        );
        assert!(p.a.conn.credit_waiting(), "capacity {cap}");
    }
}

#[test]
fn takes_between_two_transmits_leave_in_one_credit_frame_behind_earlier_frames() {
    let mut p = Pair::connected();
    let chan = p.d_sends(4);
    for _ in 0..4 {
        p.d.send(chan, b"m", &[]).unwrap();
    }
    p.drive();
    p.clear();

    p.a.conn.credit_update(chan, 1, 1);
    assert!(p.a.conn.wants_transmit());
    let other = p.a.conn.open("z", Dir::OpenerSends, 0, "T").unwrap();
    p.a.conn.credit_update(chan, 1, 1);
    p.drive();
    let sent = p.a.take_sent();
    assert!(matches!(sent[0], Frame::Open { chan, .. } if chan == other));
    assert_eq!(
        sent[1],
        Frame::Credit {
            chan,
            grant: 2,
            received: 4
        }
    );
    assert_eq!(sent.len(), 2);
    assert_eq!(p.d.conn.credit(chan), 2);
    assert_eq!(p.d.conn.unconfirmed(), 0);
}

#[test]
fn a_stream_of_messages_costs_one_credit_frame_per_transmit_not_per_message() {
    let mut p = Pair::connected();
    let chan = p.d_sends(64);
    for _ in 0..32 {
        p.d.send(chan, b"m", &[]).unwrap();
    }
    let bytes = p.d.transmit(p.now);
    p.a.receive(&bytes, p.now).unwrap();
    for _ in 0..32 {
        p.a.conn.credit_update(chan, 1, 1);
    }
    p.a.transmit(p.now);
    assert_eq!(
        p.a.take_sent(),
        vec![Frame::Credit {
            chan,
            grant: 32,
            received: 32
        }]
    );
}

#[test]
fn rendezvous_send_gets_one_credit_while_a_receive_waits_and_completes_on_taken() {
    let mut p = Pair::connected();
    let chan = p.d.conn.open("sync", Dir::OpenerReceives, 0, "u8").unwrap();
    p.drive();
    p.a.conn.accept(chan, 0);
    p.drive();
    p.clear();
    assert_eq!(p.a.conn.can_send(chan), Err(SendBlock::NoCredit));

    // A receive starts waiting: one credit.
    p.d.conn.credit_update(chan, 1, 0);
    p.drive();
    assert_eq!(p.a.take_events(), vec![Event::Credit { chan }]);
    p.d.take_sent();
    p.a.send(chan, b"v", &[]).unwrap();
    p.drive();
    assert_eq!(p.d.take_events(), vec![message(chan, b"v")]);
    // Arrived but not yet taken: a rendezvous send is not complete, and
    // arrival alone sends no confirmation.
    assert_eq!(p.a.conn.unconfirmed(), 1);
    assert_eq!(p.d.take_sent(), vec![]);

    // The receive takes it.
    p.d.conn.credit_update(chan, 0, 1);
    p.drive();
    assert_eq!(p.a.take_events(), vec![Event::Credit { chan }]);
    assert_eq!(p.a.conn.unconfirmed(), 0);
    assert_eq!(p.a.conn.can_send(chan), Err(SendBlock::NoCredit));
}

#[test]
fn rendezvous_grant_gives_one_credit_only_when_none_is_out_and_all_delivered_was_taken() {
    let mut p = Pair::connected();
    let chan = p.d.conn.open("sync", Dir::OpenerReceives, 0, "u8").unwrap();
    p.drive();
    p.a.conn.accept(chan, 0);
    p.drive();
    p.clear();
    assert!(p.d.conn.rendezvous_grant(chan));
    assert!(
        !p.d.conn.rendezvous_grant(chan),
        "one credit is already out"
    );
    p.drive();
    assert_eq!(
        p.d.take_sent(),
        vec![Frame::Credit {
            chan,
            grant: 1,
            received: 0
        }]
    );
    p.a.send(chan, b"v", &[]).unwrap();
    p.drive();
    // Delivered but not taken: another credit would let the sender hold
    // credit + unconfirmed = 2.
    assert!(!p.d.conn.rendezvous_grant(chan));
    p.d.conn.credit_update(chan, 0, 1);
    assert!(p.d.conn.rendezvous_grant(chan));
    p.drive();
    assert_eq!(
        p.d.take_sent(),
        vec![Frame::Credit {
            chan,
            grant: 1,
            received: 1
        }]
    );
    assert_eq!(p.a.conn.unconfirmed(), 0);
    assert_eq!(p.a.conn.credit(chan), 1);
}

/// A rendezvous channel the acceptor sends on, with one message of it
/// delivered to the dialer (a receive waited) and not yet taken.
fn rendezvous_in_flight() -> (Pair, ChanId) {
    let mut p = Pair::connected();
    let chan = p.d.conn.open("sync", Dir::OpenerReceives, 0, "u8").unwrap();
    p.drive();
    p.a.conn.accept(chan, 0);
    p.drive();
    assert!(p.d.conn.rendezvous_grant(chan));
    p.drive();
    p.a.send(chan, b"v", &[]).unwrap();
    p.drive();
    p.clear();
    assert_eq!(p.a.conn.take_state(chan), Take::Waiting);
    (p, chan)
}

#[test]
fn a_rendezvous_message_taken_before_its_receiver_closes_counts_as_taken() {
    let (mut p, chan) = rendezvous_in_flight();
    // Taken, then closed before any transmit: the take's CREDIT still
    // goes out, ahead of the CLOSE.
    p.d.conn.credit_update(chan, 0, 1);
    p.d.conn.close(chan, CloseCode::ReceiverGone, "");
    p.drive();
    let sent = p.d.take_sent();
    assert!(
        matches!(
            sent[..],
            [Frame::Credit { received: 1, .. }, Frame::Close { .. }, ..]
        ),
        "{sent:?}"
    );
    assert_eq!(p.a.conn.take_state(chan), Take::Taken);
}

#[test]
fn a_rendezvous_message_its_receiver_closed_on_was_never_taken_and_is_told_once() {
    let (mut p, chan) = rendezvous_in_flight();
    p.d.conn.close(chan, CloseCode::ReceiverGone, "");
    p.drive();
    assert!(!p.a.conn.has_channel(chan));
    assert_eq!(p.a.conn.take_state(chan), Take::Never);
    assert_eq!(p.a.conn.take_state(chan), Take::Taken, "told once");
    // Arrival counts for `drain` all the same: nothing stays unconfirmed.
    assert_eq!(p.a.conn.confirmed_total(), p.a.conn.sent_total());
}

#[test]
fn a_rendezvous_message_the_sender_closed_on_before_the_take_was_never_taken() {
    let (mut p, chan) = rendezvous_in_flight();
    // The sending side hangs up: the receiver answers without a take.
    p.a.conn.close(chan, CloseCode::Hangup, "");
    p.drive();
    assert_eq!(p.a.conn.take_state(chan), Take::Never);
}

#[test]
fn a_rendezvous_message_pending_when_the_connection_ends_was_never_taken() {
    let (mut p, chan) = rendezvous_in_flight();
    p.a.conn.abort();
    assert_eq!(p.a.conn.take_state(chan), Take::Never);
}

#[test]
fn a_given_up_rendezvous_wait_leaves_nothing_behind() {
    // Given up while the channel is open: its close records nothing.
    let (mut p, chan) = rendezvous_in_flight();
    p.a.conn.give_up_take(chan);
    p.d.conn.close(chan, CloseCode::ReceiverGone, "");
    p.drive();
    assert_eq!(p.a.conn.take_state(chan), Take::Taken, "nothing recorded");
    // Given up after the close: the record goes.
    let (mut p, chan) = rendezvous_in_flight();
    p.d.conn.close(chan, CloseCode::ReceiverGone, "");
    p.drive();
    p.a.conn.give_up_take(chan);
    assert_eq!(p.a.conn.take_state(chan), Take::Taken, "record dropped");
}

#[test]
fn rendezvous_grant_of_more_than_one_is_a_credit_overflow() {
    let mut p = Pair::connected();
    let chan = p.d.conn.open("sync", Dir::OpenerReceives, 0, "u8").unwrap();
    p.drive();
    p.a.conn.accept(chan, 0);
    p.drive();
    p.d.conn.credit_update(chan, 2, 0);
    assert_eq!(
        p.try_drive(),
        Err((Side::Acceptor, ProtoError::CreditOverflow(chan)))
    );
}

#[test]
fn credit_arriving_at_a_closing_sender_is_ignored() {
    let mut p = Pair::connected();
    let chan = p.d_sends(1);
    p.d.send(chan, b"1", &[]).unwrap();
    p.drive();
    p.d.conn.close(chan, CloseCode::Done, "");
    p.a.conn.credit_update(chan, 1, 1);
    p.drive();
    assert_eq!(p.d.conn.channel_count(), 0);
    assert_eq!(p.a.conn.channel_count(), 0);
}

// ---------------------------------------------------------------------------
// Close
// ---------------------------------------------------------------------------

#[test]
fn close_from_the_sender_gives_closed_to_the_receiver_and_empties_both_tables() {
    let mut p = Pair::connected();
    let chan = p.d_sends(2);
    p.d.send(chan, b"a", &[]).unwrap();
    p.d.send(chan, b"b", &[]).unwrap();
    p.d.conn.close(chan, CloseCode::Done, "finished");
    p.d.conn.close(chan, CloseCode::Error, "idempotent");
    assert_eq!(p.d.conn.can_send(chan), Err(SendBlock::Closed));
    p.drive();
    assert_eq!(
        p.a.take_events(),
        vec![
            message(chan, b"a"),
            message(chan, b"b"),
            Event::Closed {
                chan,
                code: CloseCode::Done,
                reason: "finished".into()
            }
        ]
    );
    assert_eq!(
        p.a.take_sent(),
        vec![Frame::Close {
            chan,
            code: CloseCode::Done,
            reason: String::new()
        }]
    );
    // The acknowledgement ends the channel on the closing side; a sending
    // channel reports it as credit news, so `drain` looks again.
    assert_eq!(p.d.take_events(), vec![Event::Credit { chan }]);
    assert_eq!(p.d.conn.channel_count(), 0);
    assert_eq!(p.a.conn.channel_count(), 0);
    // Its delivery was never confirmed, and it no longer counts.
    assert_eq!(p.d.conn.unconfirmed(), 0);
    // The id is never reused: later frames for it are protocol errors.
    assert_eq!(
        p.a.receive(&data(chan, FLAG_END, b"late"), p.now),
        Err(ProtoError::UnknownChannel(chan))
    );
    assert_eq!(
        p.d.receive(
            &enc(&Frame::Credit {
                chan,
                grant: 1,
                received: 0
            }),
            p.now
        ),
        Err(ProtoError::UnknownChannel(chan))
    );
}

#[test]
fn crossing_closes_remove_the_channel_on_both_sides_without_an_ack() {
    let mut p = Pair::connected();
    let chan = p.d_sends(2);
    p.d.conn.close(chan, CloseCode::Done, "");
    p.a.conn.close(chan, CloseCode::ReceiverGone, "");
    p.drive();
    assert_eq!(p.d.take_sent().len(), 1);
    assert_eq!(p.a.take_sent().len(), 1);
    // Only the sending side hears of it, as credit news for `drain`.
    assert_eq!(p.d.take_events(), vec![Event::Credit { chan }]);
    assert!(p.a.take_events().is_empty());
    assert_eq!(p.d.conn.channel_count(), 0);
    assert_eq!(p.a.conn.channel_count(), 0);
}

#[test]
fn data_in_flight_to_a_closing_receiver_is_dropped() {
    let mut p = Pair::connected();
    let chan = p.d_sends(2);
    p.a.conn.close(chan, CloseCode::ReceiverGone, "gone");
    p.d.send(chan, b"late", &[]).unwrap();
    p.drive();
    assert!(p.a.take_events().is_empty());
    assert_eq!(
        p.d.take_events(),
        vec![Event::Closed {
            chan,
            code: CloseCode::ReceiverGone,
            reason: "gone".into()
        }]
    );
    assert_eq!(p.d.conn.channel_count(), 0);
    assert_eq!(p.a.conn.channel_count(), 0);
}

#[test]
fn close_behind_pending_chunks_is_sent_after_the_last_chunk() {
    let mut p = Pair::connected_with(chunked(16), chunked(16));
    let chan = p.d_sends(1);
    let body = [5u8; 100];
    p.d.send(chan, &body, &[]).unwrap();
    p.d.conn.close(chan, CloseCode::Done, "");
    assert_eq!(p.d.conn.can_send(chan), Err(SendBlock::Closed));
    assert_eq!(p.d.conn.channel_count(), 1);
    p.drive();
    let sent = p.d.take_sent();
    assert_eq!(sent.len(), 8);
    assert!(sent[..7].iter().all(|f| matches!(f, Frame::Data { .. })));
    assert!(matches!(sent[7], Frame::Close { chan: c, code: CloseCode::Done, .. } if c == chan));
    assert_eq!(
        p.a.take_events(),
        vec![
            message(chan, &body),
            Event::Closed {
                chan,
                code: CloseCode::Done,
                reason: String::new()
            }
        ]
    );
    assert_eq!(p.d.conn.channel_count(), 0);
    assert_eq!(p.a.conn.channel_count(), 0);
}

#[test]
fn closing_a_requested_channel_rejects_it() {
    let mut p = Pair::connected();
    let chan = p.d.conn.open("x", Dir::OpenerSends, 0, "T").unwrap();
    p.drive();
    p.a.conn.close(chan, CloseCode::Hangup, "going away");
    p.drive();
    assert_eq!(
        p.a.take_sent(),
        vec![Frame::Reject {
            chan,
            code: RejectCode::Closed,
            reason: "going away".into()
        }]
    );
    assert!(matches!(
        p.d.take_events()[..],
        [Event::Rejected {
            code: RejectCode::Closed,
            ..
        }]
    ));
    assert_eq!(p.d.conn.channel_count() + p.a.conn.channel_count(), 0);
}

#[test]
fn peer_closing_an_unanswered_open_frees_its_pending_slot() {
    let mut p = Pair::connected_with(Limits::default(), limits(|l| l.max_pending_opens = 1));
    let chan = p.d.conn.open("x", Dir::OpenerSends, 0, "T").unwrap();
    p.d.conn.close(chan, CloseCode::Done, "");
    // The close waits for the answer, so the acceptor must answer first.
    p.drive();
    assert!(matches!(p.a.take_events()[..], [Event::Open { .. }]));
    p.a.conn.accept(chan, 4);
    p.drive();
    assert!(matches!(p.a.take_events()[..], [Event::Closed { .. }]));
    assert_eq!(p.d.conn.channel_count() + p.a.conn.channel_count(), 0);
    let next = p.d.conn.open("y", Dir::OpenerSends, 0, "T").unwrap();
    p.drive();
    assert!(matches!(p.a.take_events()[..], [Event::Open { chan, .. }] if chan == next));
}

// ---------------------------------------------------------------------------
// Goodbye
// ---------------------------------------------------------------------------

#[test]
fn goodbye_is_sent_after_pending_chunks() {
    let mut p = Pair::connected();
    let chan = p.d_sends(1);
    let body = vec![3u8; 1 << 20];
    p.d.send(chan, &body, &[]).unwrap();
    p.d.conn.goodbye("bye");
    assert!(!p.d.conn.is_open());
    assert_eq!(p.d.conn.can_send(chan), Err(SendBlock::Ended));
    assert_eq!(
        p.d.conn.open("x", Dir::OpenerSends, 0, "T"),
        Err(OpenError::Ended)
    );
    // The first transmit carries chunks but not yet the goodbye.
    let first = p.d.transmit(p.now);
    assert!(!p.d.conn.goodbye_sent());
    assert!(
        p.d.take_sent()
            .iter()
            .all(|f| matches!(f, Frame::Data { .. }))
    );
    p.a.receive(&first, p.now).unwrap();
    p.drive();
    assert!(p.d.conn.goodbye_sent());
    assert_eq!(
        p.d.take_sent().last(),
        Some(&Frame::Goodbye {
            reason: "bye".into()
        })
    );
    assert_eq!(
        p.a.take_events(),
        vec![
            message(chan, &body),
            Event::Goodbye {
                reason: "bye".into()
            }
        ]
    );
    assert!(p.a.conn.is_ended());
    assert_eq!(p.a.conn.error(), None);
    assert_eq!(p.a.conn.poll_timeout(), None);
}

#[test]
fn goodbye_is_idempotent_and_sent_once() {
    let mut p = Pair::connected();
    p.d.conn.goodbye("first");
    p.d.conn.goodbye("second");
    p.drive();
    assert_eq!(
        p.d.take_sent(),
        vec![Frame::Goodbye {
            reason: "first".into()
        }]
    );
}

#[test]
fn both_sides_may_say_goodbye() {
    let mut p = Pair::connected();
    p.d.conn.goodbye("");
    p.a.conn.goodbye("");
    p.drive();
    assert!(p.d.conn.is_ended() && p.a.conn.is_ended());
    assert!(p.d.conn.goodbye_sent() && p.a.conn.goodbye_sent());
    assert_eq!(p.d.conn.error(), None);
    assert_eq!(p.a.conn.error(), None);
}

// ---------------------------------------------------------------------------
// Keepalive
// ---------------------------------------------------------------------------

#[test]
fn quiet_side_pings_after_keepalive() {
    let mut p = Pair::connected();
    let ka = p.d.conn.limits().keepalive;
    assert_eq!(p.d.conn.poll_timeout(), Some(t0() + ka));
    p.d.conn
        .handle_timeout(t0() + ka - Duration::from_millis(1))
        .unwrap();
    assert!(!p.d.conn.wants_transmit());
    p.now = t0() + ka;
    p.d.conn.handle_timeout(p.now).unwrap();
    // A second timeout before the transmit does not queue another ping.
    p.d.conn.handle_timeout(p.now).unwrap();
    p.drive();
    assert_eq!(p.d.take_sent(), vec![Frame::Ping(1)]);
    assert_eq!(p.a.take_sent(), vec![Frame::Pong(1)]);
    // Sending moved the ping deadline; receiving moved the dead deadline.
    assert_eq!(p.d.conn.poll_timeout(), Some(p.now + ka));
    assert!(p.a.conn.poll_timeout().unwrap() > t0() + ka);
}

#[test]
fn silent_peer_times_out_after_dead_after() {
    let mut p = lone(Side::Acceptor, Limits::default());
    let dead = p.conn.limits().dead_after;
    let rx = t0() + secs(5);
    p.receive(&enc(&Frame::Ping(1)), rx).unwrap();
    p.transmit(rx);
    assert!(
        p.conn
            .handle_timeout(rx + dead - Duration::from_millis(1))
            .is_ok()
    );
    assert_eq!(
        p.conn.handle_timeout(rx + dead),
        Err(ProtoError::KeepaliveTimeout(dead))
    );
    assert!(p.conn.is_ended());
    assert_eq!(p.conn.error(), Some(&ProtoError::KeepaliveTimeout(dead)));
    assert_eq!(p.conn.poll_timeout(), None);
}

#[test]
fn poll_timeout_is_the_earlier_of_the_ping_and_dead_deadlines() {
    let l = limits(|l| {
        l.keepalive = secs(10);
        l.dead_after = secs(25);
    });
    let mut p = lone(Side::Acceptor, l);
    // Sent at t0, received at t0.
    assert_eq!(p.conn.poll_timeout(), Some(t0() + secs(10)));
    // Keep sending, never receive: the dead deadline comes first.
    for s in [10, 20] {
        p.conn.handle_timeout(t0() + secs(s)).unwrap();
        p.transmit(t0() + secs(s));
    }
    assert_eq!(p.conn.poll_timeout(), Some(t0() + secs(25)));
    assert_eq!(p.take_sent(), vec![Frame::Ping(1), Frame::Ping(2)]);
}

#[test]
fn ping_flood_gets_one_pong_per_transmit() {
    let mut p = lone(Side::Acceptor, Limits::default());
    let flood: Vec<u8> = (1..=1000u64).flat_map(|n| enc(&Frame::Ping(n))).collect();
    p.receive(&flood, t0()).unwrap();
    assert!(p.take_events().is_empty());
    p.transmit(t0());
    assert_eq!(p.take_sent(), vec![Frame::Pong(1000)]);
    p.transmit(t0());
    assert!(p.take_sent().is_empty());
}

#[test]
fn pongs_are_accepted_silently() {
    let mut p = lone(Side::Acceptor, Limits::default());
    p.receive(&enc(&Frame::Pong(77)), t0()).unwrap();
    assert!(p.take_events().is_empty());
    assert!(!p.conn.wants_transmit());
}

// ---------------------------------------------------------------------------
// Hostile input, fed as raw bytes after a valid hello
// ---------------------------------------------------------------------------

#[test]
fn unknown_frame_kind_is_refused_as_soon_as_its_byte_arrives() {
    for kind in [0x00, 0x0a, 0x7f, 0xff] {
        let mut p = lone(Side::Acceptor, Limits::default());
        assert_eq!(
            p.receive(&[9, 0, 0, 0, kind], t0()),
            Err(ProtoError::UnknownFrameKind(kind))
        );
    }
}

#[test]
fn oversized_length_prefix_is_refused_before_the_payload_arrives() {
    // DATA is bounded by the receiver's message limit (the sender's chunk
    // size is its own choice).
    let l = limits(|l| {
        l.chunk_size = 64;
        l.max_message_len = 64;
    });
    let mut p = lone(Side::Acceptor, l.clone());
    assert_eq!(
        p.receive(&raw_header(65, Kind::Data as u8, FLAG_END, 1), t0()),
        Err(ProtoError::FrameTooLarge {
            kind: Kind::Data,
            len: 65,
            max: 64
        })
    );
    let mut p = lone(Side::Acceptor, l.clone());
    assert_eq!(
        p.receive(&raw_header(u32::MAX, Kind::Data as u8, 0, 1), t0()),
        Err(ProtoError::FrameTooLarge {
            kind: Kind::Data,
            len: u32::MAX as usize,
            max: 64
        })
    );
    let mut p = lone(Side::Acceptor, l);
    assert_eq!(
        p.receive(
            &raw_header(MAX_CONTROL_PAYLOAD as u32 + 1, Kind::Close as u8, 0, 1),
            t0()
        ),
        Err(ProtoError::FrameTooLarge {
            kind: Kind::Close,
            len: MAX_CONTROL_PAYLOAD + 1,
            max: MAX_CONTROL_PAYLOAD
        })
    );
}

#[test]
fn data_beyond_the_granted_credit_is_no_credit() {
    let mut p = lone_receiving(Limits::default(), 1);
    p.receive(&data(1, FLAG_END, b"a"), t0()).unwrap();
    assert_eq!(p.take_events(), vec![message(1, b"a")]);
    assert_eq!(
        p.receive(&data(1, FLAG_END, b"b"), t0()),
        Err(ProtoError::NoCredit(1))
    );

    let mut p = lone_receiving(Limits::default(), 0);
    assert_eq!(
        p.receive(&data(1, 0, b"first chunk"), t0()),
        Err(ProtoError::NoCredit(1))
    );
}

#[test]
fn continuation_chunks_do_not_spend_credit() {
    let mut p = lone_receiving(chunked(4), 1);
    let mut bytes = data(1, 0, b"abcd");
    bytes.extend(data(1, 0, b"efgh"));
    bytes.extend(data(1, FLAG_END, b"ij"));
    p.receive(&bytes, t0()).unwrap();
    assert_eq!(p.take_events(), vec![message(1, b"abcdefghij")]);
    assert_eq!(p.conn.outstanding(1), 0);
}

#[test]
fn credit_beyond_capacity_or_confirming_unsent_messages_is_credit_overflow() {
    let mut p = lone_sending(2);
    assert_eq!(
        p.receive(
            &enc(&Frame::Credit {
                chan: 1,
                grant: 1,
                received: 0
            }),
            t0()
        ),
        Err(ProtoError::CreditOverflow(1))
    );

    let mut p = lone_sending(2);
    assert_eq!(
        p.receive(
            &enc(&Frame::Credit {
                chan: 1,
                grant: 0,
                received: 1
            }),
            t0()
        ),
        Err(ProtoError::CreditOverflow(1))
    );

    // Within the invariant it is fine: one sent and confirmed, one granted;
    // a confirmation that goes backwards is not.
    let mut p = lone_sending(2);
    p.send(1, b"x", &[]).unwrap();
    p.receive(
        &enc(&Frame::Credit {
            chan: 1,
            grant: 1,
            received: 1,
        }),
        t0(),
    )
    .unwrap();
    assert_eq!(p.conn.credit(1), 2);
    assert_eq!(
        p.receive(
            &enc(&Frame::Credit {
                chan: 1,
                grant: 1,
                received: 0
            }),
            t0()
        ),
        Err(ProtoError::CreditOverflow(1))
    );
}

#[test]
fn frames_for_a_channel_never_opened_are_unknown_channel() {
    let frames = [
        (data(9, FLAG_END, b"x"), 9),
        (
            enc(&Frame::Credit {
                chan: 9,
                grant: 1,
                received: 0,
            }),
            9,
        ),
        (
            enc(&Frame::Accept {
                chan: 2,
                capacity: 1,
            }),
            2,
        ),
        (
            enc(&Frame::Reject {
                chan: 2,
                code: RejectCode::NoSuchName,
                reason: String::new(),
            }),
            2,
        ),
        (
            enc(&Frame::Close {
                chan: 7,
                code: CloseCode::Done,
                reason: String::new(),
            }),
            7,
        ),
    ];
    for (bytes, chan) in frames {
        let mut p = lone(Side::Acceptor, Limits::default());
        assert_eq!(
            p.receive(&bytes, t0()),
            Err(ProtoError::UnknownChannel(chan))
        );
    }
}

#[test]
fn open_with_the_wrong_parity_or_a_reused_id_is_bad_channel_id() {
    // The dialer's peer allocates even ids, the acceptor's peer odd ones.
    let mut p = lone(Side::Acceptor, Limits::default());
    assert_eq!(
        p.receive(&open_frame(2, Dir::OpenerSends, 0), t0()),
        Err(ProtoError::BadChannelId(2))
    );
    let mut p = lone(Side::Dialer, Limits::default());
    assert_eq!(
        p.receive(&open_frame(3, Dir::OpenerSends, 0), t0()),
        Err(ProtoError::BadChannelId(3))
    );

    // Reused, even after the first was rejected and forgotten.
    let mut p = lone(Side::Acceptor, Limits::default());
    p.receive(&open_frame(3, Dir::OpenerSends, 0), t0())
        .unwrap();
    p.conn.reject(3, RejectCode::NoSuchName, "");
    assert_eq!(
        p.receive(&open_frame(3, Dir::OpenerSends, 0), t0()),
        Err(ProtoError::BadChannelId(3))
    );
    // Going backwards is allowed once, into a gap left by a jump (a
    // handle in a chunked message may be overtaken by a later OPEN).
    let mut p = lone(Side::Acceptor, Limits::default());
    p.receive(&open_frame(5, Dir::OpenerSends, 0), t0())
        .unwrap();
    p.receive(&open_frame(1, Dir::OpenerSends, 0), t0())
        .unwrap();
    assert_eq!(
        p.receive(&open_frame(1, Dir::OpenerSends, 0), t0()),
        Err(ProtoError::BadChannelId(1))
    );
    // A jump leaving more gaps than channels allowed is refused.
    let mut p = lone(Side::Acceptor, limits(|l| l.max_channels = 4));
    assert_eq!(
        p.receive(&open_frame(101, Dir::OpenerSends, 0), t0()),
        Err(ProtoError::BadChannelId(101))
    );
    // Id 0 names the connection and cannot carry an OPEN at all.
    let mut p = lone(Side::Acceptor, Limits::default());
    assert_eq!(
        p.receive(&open_frame(0, Dir::OpenerSends, 0), t0()),
        Err(ProtoError::Malformed {
            kind: Kind::Open,
            what: "channel id"
        })
    );
}

#[test]
fn handle_with_a_bad_id_is_bad_channel_id() {
    for bad in [0, 2, 1] {
        let mut p = lone_receiving(Limits::default(), 1);
        let mut payload = table(&[(0, bad, 1)]);
        payload.extend_from_slice(b"x");
        assert_eq!(
            p.receive(&data(1, FLAG_END | FLAG_HANDLES, &payload), t0()),
            Err(ProtoError::BadChannelId(bad)),
            "handle id {bad}"
        );
    }
}

#[test]
fn too_many_handles_in_one_message_end_the_connection() {
    let mut p = lone_receiving(limits(|l| l.max_handles = 2), 1);
    let payload = table(&[(0, 3, 1), (0, 5, 1), (1, 7, 1)]);
    assert_eq!(
        p.receive(&data(1, FLAG_END | FLAG_HANDLES, &payload), t0()),
        Err(ProtoError::LimitExceeded {
            what: "handles in one message",
            limit: 2
        })
    );
}

#[test]
fn handles_beyond_the_channel_limit_are_closed_not_fatal() {
    let mut p = lone_receiving(limits(|l| l.max_channels = 2), 1);
    let payload = table(&[(0, 3, 1), (0, 5, 1)]);
    p.receive(&data(1, FLAG_END | FLAG_HANDLES, &payload), t0())
        .unwrap();
    assert!(matches!(
        &p.take_events()[..],
        [Event::Message { handles, .. }] if handles.len() == 2
    ));
    // The second handle is over the limit: it is closed with an error.
    p.transmit(t0());
    let closes: Vec<Frame> = p
        .take_sent()
        .into_iter()
        .filter(|f| matches!(f, Frame::Close { .. }))
        .collect();
    assert!(matches!(
        &closes[..],
        [Frame::Close {
            chan: 5,
            code: CloseCode::Error,
            ..
        }]
    ));
}

#[test]
fn opens_beyond_max_pending_opens_are_rejected_not_fatal() {
    let mut p = lone(Side::Acceptor, limits(|l| l.max_pending_opens = 2));
    let bytes: Vec<u8> = [1, 3, 5]
        .into_iter()
        .flat_map(|c| open_frame(c, Dir::OpenerSends, 0))
        .collect();
    p.receive(&bytes, t0()).unwrap();
    let opened: Vec<ChanId> = p
        .take_events()
        .into_iter()
        .map(|e| match e {
            Event::Open { chan, .. } => chan,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(opened, [1, 3]);
    p.transmit(t0());
    assert!(matches!(
        p.take_sent()[..],
        [Frame::Reject {
            chan: 5,
            code: RejectCode::TooManyChannels,
            ..
        }]
    ));
    assert!(p.conn.is_open());
    assert_eq!(p.conn.channel_count(), 2);
    // Answering one frees a slot.
    p.conn.accept(1, 1);
    p.receive(&open_frame(7, Dir::OpenerSends, 0), t0())
        .unwrap();
    assert!(matches!(p.take_events()[..], [Event::Open { chan: 7, .. }]));
}

#[test]
fn opens_beyond_the_channel_limit_are_rejected_not_fatal() {
    let mut p = lone(Side::Acceptor, limits(|l| l.max_channels = 2));
    let bytes: Vec<u8> = [1, 3, 5]
        .into_iter()
        .flat_map(|c| open_frame(c, Dir::OpenerSends, 0))
        .collect();
    p.receive(&bytes, t0()).unwrap();
    assert_eq!(p.take_events().len(), 2);
    p.transmit(t0());
    assert!(matches!(
        p.take_sent()[..],
        [Frame::Reject {
            chan: 5,
            code: RejectCode::TooManyChannels,
            ..
        }]
    ));
}

#[test]
fn a_peer_that_keeps_opening_past_the_limit_is_cut_off() {
    let mut p = lone(
        Side::Acceptor,
        limits(|l| {
            l.max_pending_opens = 0;
            l.max_refused_opens = 3;
        }),
    );
    for id in [1, 3, 5] {
        p.receive(&open_frame(id, Dir::OpenerSends, 0), t0())
            .unwrap();
    }
    assert!(matches!(
        p.receive(&open_frame(7, Dir::OpenerSends, 0), t0()),
        Err(ProtoError::LimitExceeded { limit: 3, .. })
    ));
}

#[test]
fn peer_that_never_reads_its_replies_is_cut_off() {
    let l = limits(|l| {
        l.max_pending_opens = 0;
        l.max_refused_opens = usize::MAX;
        l.max_reply_backlog = 300;
    });
    let mut p = lone(Side::Acceptor, l.clone());
    let reject_len = {
        p.receive(&open_frame(1, Dir::OpenerSends, 0), t0())
            .unwrap();
        p.transmit(t0()).len()
    };
    let fit = 300 / reject_len;
    let mut id = 3;
    let mut flood = Vec::new();
    for _ in 0..fit {
        flood.extend(open_frame(id, Dir::OpenerSends, 0));
        id += 2;
    }
    p.receive(&flood, t0()).unwrap();
    // Reading the replies resets the count.
    p.transmit(t0());
    p.receive(&flood_from(id, fit), t0()).unwrap();
    id += 2 * fit as u32;
    assert_eq!(
        p.receive(&open_frame(id, Dir::OpenerSends, 0), t0()),
        Err(ProtoError::PeerNotReading(reject_len * (fit + 1)))
    );

    fn flood_from(first: u32, n: usize) -> Vec<u8> {
        (0..n as u32)
            .flat_map(|i| open_frame(first + 2 * i, Dir::OpenerSends, 0))
            .collect()
    }
}

/// After the peer's goodbye, closing the channels it asked for answers
/// each with a REJECT, past the reply backlog if need be: the end stays
/// clean (found by the `connection` fuzz target), and bytes after the
/// goodbye are still `AfterGoodbye`.
#[test]
fn closing_requested_channels_after_the_peers_goodbye_keeps_the_end_clean() {
    let l = limits(|l| {
        l.max_pending_opens = 8;
        l.max_reply_backlog = 64;
    });
    let mut p = lone(Side::Acceptor, l);
    let mut wire = Vec::new();
    for id in [1, 3, 5, 7, 9, 11] {
        wire.extend(open_frame(id, Dir::OpenerSends, 0));
    }
    wire.extend(enc(&Frame::Goodbye {
        reason: String::new(),
    }));
    p.receive(&wire, t0()).unwrap();
    assert!(p.conn.is_ended());
    for id in [1, 3, 5, 7, 9, 11] {
        p.conn.close(id, CloseCode::Done, "closed by the program");
    }
    assert_eq!(p.conn.error(), None, "a clean end stays clean");
    assert_eq!(
        p.receive(&open_frame(13, Dir::OpenerSends, 0), t0()),
        Err(ProtoError::AfterGoodbye)
    );
}

#[test]
fn malformed_payloads_end_the_connection() {
    use Kind::*;
    let long_name = {
        let mut v = vec![1, 0, 0, 0, 0];
        v.extend_from_slice(&1025u16.to_le_bytes());
        v.extend(std::iter::repeat_n(b'n', 1025));
        v.extend_from_slice(&[0, 0]);
        v
    };
    let cases: Vec<(Vec<u8>, Kind, &str)> = vec![
        (raw(Open as u8, 0, 1, &[1, 0, 0, 0]), Open, "short payload"),
        (
            raw(Open as u8, 0, 1, &[2, 0, 0, 0, 0, 0, 0, 0, 0]),
            Open,
            "direction",
        ),
        (
            raw(Open as u8, 0, 1, &[1, 0, 0, 0, 0, 9, 0, b'a']),
            Open,
            "name",
        ),
        (
            raw(Open as u8, 0, 1, &[1, 0, 0, 0, 0, 1, 0, 0xff, 0, 0]),
            Open,
            "name",
        ),
        (
            raw(Open as u8, 0, 1, &[1, 0, 0, 0, 0, 1, 0, b'a']),
            Open,
            "type name",
        ),
        (
            raw(
                Open as u8,
                0,
                1,
                &[1, 0, 0, 0, 0, 1, 0, b'a', 1, 0, b'T', 0],
            ),
            Open,
            "trailing bytes",
        ),
        (raw(Open as u8, 0, 1, &long_name), Open, "name too long"),
        (
            raw(Accept as u8, 0, 1, &[0, 0, 0]),
            Accept,
            "payload length",
        ),
        (
            raw(Accept as u8, 0, 1, &[0, 0, 0, 0, 0]),
            Accept,
            "payload length",
        ),
        (raw(Reject as u8, 0, 1, &[]), Reject, "short payload"),
        (raw(Reject as u8, 0, 1, &[5]), Reject, "code"),
        (raw(Reject as u8, 0, 1, &[0, 0xc3]), Reject, "reason"),
        (raw(Data as u8, 0x04, 1, b"x"), Data, "unknown flags"),
        (raw(Credit as u8, 0, 1, &[0; 7]), Credit, "payload length"),
        (raw(Close as u8, 0, 1, &[]), Close, "short payload"),
        (raw(Close as u8, 0, 1, &[4]), Close, "code"),
        (raw(Close as u8, 0, 1, &[0, 0xff]), Close, "reason"),
        (raw(Goodbye as u8, 0, 0, &[0xff]), Goodbye, "reason"),
        (raw(Ping as u8, 0, 0, &[0; 7]), Ping, "payload length"),
        (raw(Pong as u8, 0, 0, &[0; 9]), Pong, "payload length"),
        // Connection-level frames use id 0, channel frames never do.
        (raw(Ping as u8, 0, 5, &[0; 8]), Ping, "channel id"),
        (raw(Goodbye as u8, 0, 1, &[]), Goodbye, "channel id"),
        (raw(Credit as u8, 0, 0, &[0; 8]), Credit, "channel id"),
        (raw(Data as u8, FLAG_END, 0, b"x"), Data, "channel id"),
    ];
    for (bytes, kind, what) in cases {
        let mut p = lone(Side::Acceptor, Limits::default());
        assert_eq!(
            p.receive(&bytes, t0()),
            Err(ProtoError::Malformed { kind, what }),
            "{kind:?} {what}: {bytes:?}"
        );
    }
}

#[test]
fn malformed_handle_tables_end_the_connection() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![1], "short handle table"),
        (vec![0, 0, b'x'], "empty handle table"),
        (vec![1, 0, 0, 3, 0, 0], "short handle table"),
        (table(&[(2, 3, 1)]), "handle kind"),
    ];
    for (payload, what) in cases {
        let mut p = lone_receiving(Limits::default(), 1);
        assert_eq!(
            p.receive(&data(1, FLAG_END | FLAG_HANDLES, &payload), t0()),
            Err(ProtoError::Malformed {
                kind: Kind::Data,
                what
            }),
            "{what}"
        );
    }
}

#[test]
fn non_zero_flags_on_control_frames_are_malformed() {
    let frames = [
        open_frame(1, Dir::OpenerSends, 0),
        enc(&Frame::Accept {
            chan: 2,
            capacity: 0,
        }),
        enc(&Frame::Reject {
            chan: 2,
            code: RejectCode::Closed,
            reason: String::new(),
        }),
        enc(&Frame::Credit {
            chan: 1,
            grant: 0,
            received: 0,
        }),
        enc(&Frame::Close {
            chan: 1,
            code: CloseCode::Done,
            reason: String::new(),
        }),
        enc(&Frame::Goodbye {
            reason: String::new(),
        }),
        enc(&Frame::Ping(1)),
        enc(&Frame::Pong(1)),
    ];
    for mut bytes in frames {
        bytes[5] = FLAG_END;
        let kind = Frame::decode(&mut BytesMut::from(&bytes[..]), 64).unwrap_err();
        let mut p = lone(Side::Acceptor, Limits::default());
        let e = p.receive(&bytes, t0()).unwrap_err();
        assert_eq!(e, kind);
        assert!(
            matches!(
                e,
                ProtoError::Malformed {
                    what: "non-zero flags",
                    ..
                }
            ),
            "{e:?}"
        );
    }
}

#[test]
fn frames_after_goodbye_are_an_error() {
    let mut p = lone(Side::Acceptor, Limits::default());
    let mut bytes = enc(&Frame::Goodbye {
        reason: "done".into(),
    });
    bytes.extend(enc(&Frame::Ping(1)));
    assert_eq!(p.receive(&bytes, t0()), Err(ProtoError::AfterGoodbye));
    assert_eq!(
        p.take_events(),
        vec![Event::Goodbye {
            reason: "done".into()
        }]
    );
    assert!(p.conn.is_ended());
}

#[test]
fn data_and_credit_the_wrong_way_are_unexpected() {
    // DATA on a channel where we send.
    let mut p = lone_sending(1);
    assert!(matches!(
        p.receive(&data(1, FLAG_END, b"x"), t0()),
        Err(ProtoError::Unexpected {
            kind: Kind::Data,
            chan: 1,
            ..
        })
    ));
    // CREDIT on a channel where we receive.
    let mut p = lone_receiving(Limits::default(), 1);
    assert!(matches!(
        p.receive(
            &enc(&Frame::Credit {
                chan: 1,
                grant: 1,
                received: 0
            }),
            t0()
        ),
        Err(ProtoError::Unexpected {
            kind: Kind::Credit,
            chan: 1,
            ..
        })
    ));
}

#[test]
fn data_before_accept_is_unexpected() {
    let mut p = lone(Side::Acceptor, Limits::default());
    p.receive(&open_frame(1, Dir::OpenerSends, 0), t0())
        .unwrap();
    assert_eq!(
        p.receive(&data(1, FLAG_END, b"x"), t0()),
        Err(ProtoError::Unexpected {
            kind: Kind::Data,
            chan: 1,
            what: "channel not open"
        })
    );
}

#[test]
fn handle_flag_on_a_continuation_chunk_is_unexpected() {
    let mut p = lone_receiving(Limits::default(), 1);
    p.receive(&data(1, 0, b"ab"), t0()).unwrap();
    assert_eq!(
        p.receive(&data(1, FLAG_END | FLAG_HANDLES, b"cd"), t0()),
        Err(ProtoError::Unexpected {
            kind: Kind::Data,
            chan: 1,
            what: "handle flag on a continuation chunk"
        })
    );
}

#[test]
fn second_answer_to_an_open_or_close_before_accept_is_unexpected() {
    let mut p = lone(Side::Acceptor, Limits::default());
    let chan = p.conn.open("x", Dir::OpenerSends, 0, "T").unwrap();
    p.receive(&enc(&Frame::Accept { chan, capacity: 1 }), t0())
        .unwrap();
    assert_eq!(
        p.receive(&enc(&Frame::Accept { chan, capacity: 1 }), t0()),
        Err(ProtoError::Unexpected {
            kind: Kind::Accept,
            chan,
            what: "wrong channel state"
        })
    );

    let mut p = lone(Side::Acceptor, Limits::default());
    let chan = p.conn.open("x", Dir::OpenerSends, 0, "T").unwrap();
    assert_eq!(
        p.receive(
            &enc(&Frame::Close {
                chan,
                code: CloseCode::Done,
                reason: String::new()
            }),
            t0()
        ),
        Err(ProtoError::Unexpected {
            kind: Kind::Close,
            chan,
            what: "close before accept"
        })
    );
}

#[test]
fn incoming_message_over_max_message_len_is_refused_as_bytes_arrive() {
    let l = limits(|l| {
        l.chunk_size = 16;
        l.max_message_len = 40;
    });
    let mut p = lone_receiving(l.clone(), 2);
    let mut ok = data(1, 0, &[0; 16]);
    ok.extend(data(1, 0, &[0; 16]));
    ok.extend(data(1, FLAG_END, &[0; 8]));
    p.receive(&ok, t0()).unwrap();
    assert!(matches!(p.take_events()[..], [Event::Message { .. }]));
    p.receive(&data(1, 0, &[0; 16]), t0()).unwrap();
    p.receive(&data(1, 0, &[0; 16]), t0()).unwrap();
    assert_eq!(
        p.receive(&data(1, 0, &[0; 9]), t0()),
        Err(ProtoError::MessageTooLarge { len: 41, max: 40 })
    );
}

#[test]
fn an_error_is_final() {
    let mut p = lone(Side::Acceptor, Limits::default());
    let e = ProtoError::UnknownFrameKind(0x42);
    assert_eq!(p.receive(&[0, 0, 0, 0, 0x42], t0()), Err(e.clone()));
    p.inbox.clear();
    // Valid bytes afterwards do not revive it.
    assert_eq!(p.receive(&enc(&Frame::Ping(1)), t0()), Err(e.clone()));
    assert_eq!(p.conn.error(), Some(&e));
    assert!(p.conn.is_ended() && !p.conn.is_open());
    assert_eq!(p.conn.poll_timeout(), None);
    assert_eq!(p.conn.handle_timeout(t0() + secs(3600)), Ok(()));
    assert_eq!(
        p.conn.open("x", Dir::OpenerSends, 0, "T"),
        Err(OpenError::Ended)
    );
}

// ---------------------------------------------------------------------------
// Known bugs: each test states the correct behaviour and is ignored until
// the fix lands. See the report of the change that added them.
// ---------------------------------------------------------------------------

#[test]
fn close_while_opening_survives_a_crossing_accept() {
    let mut p = Pair::connected();
    let chan = p.d.conn.open("x", Dir::OpenerSends, 0, "T").unwrap();
    p.drive();
    p.a.conn.accept(chan, 1);
    p.d.conn.close(chan, CloseCode::Done, "import cancelled");
    assert_eq!(p.try_drive(), Ok(()));
    assert_eq!(p.d.conn.channel_count() + p.a.conn.channel_count(), 0);
}

#[test]
fn close_while_opening_survives_a_crossing_reject() {
    let mut p = Pair::connected();
    let chan = p.d.conn.open("x", Dir::OpenerSends, 0, "T").unwrap();
    p.drive();
    p.a.conn.reject(chan, RejectCode::NoSuchName, "");
    p.d.conn.close(chan, CloseCode::Done, "import cancelled");
    assert_eq!(p.try_drive(), Ok(()));
    assert_eq!(p.d.conn.channel_count() + p.a.conn.channel_count(), 0);
}

#[test]
fn handle_in_a_chunked_message_may_arrive_after_a_later_open() {
    let mut p = Pair::connected_with(chunked(16), chunked(16));
    let chan = p.d_sends(1);
    let h = p.d.conn.alloc_handle(Role::Sending, 1).unwrap();
    let desc = HandleDesc {
        kind: HandleKind::Receiver,
        chan: h,
        capacity: 1,
    };
    p.d.send(chan, &[0; 64], &[desc]).unwrap();
    let later = p.d.conn.open("y", Dir::OpenerSends, 0, "T").unwrap();
    assert!(later > h);
    assert_eq!(p.try_drive(), Ok(()));
}

#[test]
fn handles_in_a_message_dropped_by_a_closing_receiver_do_not_break_the_connection() {
    let mut p = Pair::connected();
    let chan = p.d_sends(2);
    p.a.conn.close(chan, CloseCode::ReceiverGone, "");
    let h = p.d.conn.alloc_handle(Role::Receiving, 2).unwrap();
    let desc = HandleDesc {
        kind: HandleKind::Sender,
        chan: h,
        capacity: 2,
    };
    p.d.send(chan, b"with a handle", &[desc]).unwrap();
    p.drive();
    // The dialer's end of the handle is eventually dropped.
    p.d.conn.close(h, CloseCode::ReceiverGone, "");
    assert_eq!(p.try_drive(), Ok(()));
    assert_eq!(p.d.conn.channel_count() + p.a.conn.channel_count(), 0);
}

#[test]
fn no_ping_follows_our_goodbye() {
    let mut p = Pair::connected();
    p.d.conn.goodbye("");
    p.drive();
    p.now += p.d.conn.limits().keepalive;
    p.d.conn.handle_timeout(p.now).unwrap();
    assert_eq!(p.try_drive(), Ok(()));
    assert_eq!(p.a.conn.error(), None);
}

#[test]
fn no_close_ack_follows_our_goodbye() {
    let mut p = Pair::connected();
    let chan = p.d_sends(1);
    p.a.conn.close(chan, CloseCode::ReceiverGone, "");
    p.d.conn.goodbye("");
    assert_eq!(p.try_drive(), Ok(()));
}

#[test]
fn sides_with_different_chunk_sizes_interoperate() {
    let mut p = Pair::connected_with(chunked(128), chunked(64));
    let chan = p.d_sends(1);
    p.d.send(chan, &[1; 100], &[]).unwrap();
    assert_eq!(p.try_drive(), Ok(()));
    assert_eq!(p.a.take_events(), vec![message(chan, &[1; 100])]);
}

#[test]
fn handle_crossing_an_open_at_the_channel_limit_is_not_fatal() {
    let l = limits(|l| l.max_channels = 2);
    let mut p = Pair::connected_with(l.clone(), l);
    let chan = p.d_sends(1);
    p.a.conn.open("y", Dir::OpenerSends, 0, "T").unwrap();
    let h = p.d.conn.alloc_handle(Role::Receiving, 1).unwrap();
    let desc = HandleDesc {
        kind: HandleKind::Sender,
        chan: h,
        capacity: 1,
    };
    p.d.send(chan, b"x", &[desc]).unwrap();
    assert_eq!(p.try_drive(), Ok(()));
}

// ---------------------------------------------------------------------------
// Counters
// ---------------------------------------------------------------------------

#[test]
fn counters_match_each_way_and_count_every_message_and_byte_of_a_channel() {
    let mut p = Pair::connected_with(chunked(16), chunked(16));
    let chan = p.d_sends(4);
    let before = p.a.conn.counters();
    for body in [&b"0123456789"[..], b"abc", &[7u8; 40][..]] {
        p.d.send(chan, body, &[]).unwrap();
    }
    p.drive();
    let after = p.a.conn.counters();
    // 10 + 3 bytes in one frame each, 40 in three chunks of 16, 16 and 8,
    // and nothing else reached the receiver (its CREDITs went the other way).
    assert_eq!(after.frames_in - before.frames_in, 5);
    assert_eq!(
        after.bytes_in - before.bytes_in,
        (10 + 3 + 40 + 5 * HEADER_LEN) as u64
    );
    let sent = p.d.conn.channels().find(|c| c.chan == chan).unwrap();
    let received = p.a.conn.channels().find(|c| c.chan == chan).unwrap();
    assert_eq!(
        (sent.role, sent.messages, sent.bytes),
        (Role::Sending, 3, 53)
    );
    assert_eq!(
        (received.role, received.messages, received.bytes),
        (Role::Receiving, 3, 53)
    );
    assert_eq!((sent.name, received.name), (Some("inbox"), Some("inbox")));
    assert_eq!(sent.unconfirmed, 0, "arrival was confirmed");
    assert_eq!(sent.credit, 1);
    assert_eq!(received.outstanding, 1);
    // Whatever one side wrote, the other read: bytes and frames, both ways.
    let (d, a) = (p.d.conn.counters(), p.a.conn.counters());
    assert_eq!((d.bytes_out, d.frames_out), (a.bytes_in, a.frames_in));
    assert_eq!((a.bytes_out, a.frames_out), (d.bytes_in, d.frames_in));
}

// ---------------------------------------------------------------------------
// Resume
// ---------------------------------------------------------------------------

/// Moves what `from` writes now into `inbox` and lets `to` read it;
/// returns `to`'s events.
fn pump(from: &mut Connection, to: &mut Connection, inbox: &mut BytesMut) -> Vec<Event> {
    let mut out = BytesMut::new();
    from.take_transmit(&mut out, t0());
    inbox.extend_from_slice(&out);
    let mut events = Vec::new();
    while let Some(ev) = to.poll_input(inbox, t0()).expect("valid input") {
        events.push(ev);
    }
    events
}

/// What `c` writes now and after `ACK_DELAY` (confirmations that may
/// wait), thrown away: lost in a broken connection.
fn lose(c: &mut Connection) -> usize {
    let mut out = BytesMut::new();
    c.take_transmit(&mut out, t0());
    c.take_transmit(&mut out, t0() + ACK_DELAY);
    out.len()
}

/// The values of the messages among `events`, as `u8`s.
fn message_bytes(events: &[Event]) -> Vec<u8> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message { data, .. } => Some(data[0]),
            _ => None,
        })
        .collect()
}

/// A resumable pair after the handshake, with channel 1 open from the
/// acceptor (sending, capacity 16) to the dialer.
fn resumable_pair() -> (Connection, Connection, ChanId) {
    let (mut d, mut a) = (
        Connection::dial_resumable(Limits::default(), CodecId::Bincode, t0()),
        Connection::accept_resumable(Limits::default(), CodecId::Bincode, t0(), [7; 16]),
    );
    let (mut to_a, mut to_d) = (BytesMut::new(), BytesMut::new());
    assert!(matches!(
        pump(&mut d, &mut a, &mut to_a)[..],
        [Event::Ready(_)]
    ));
    assert!(matches!(
        pump(&mut a, &mut d, &mut to_d)[..],
        [Event::Ready(_)]
    ));
    assert!(d.is_resumable() && a.is_resumable());
    assert_eq!(d.token(), Some([7; 16]), "the dialer learned the token");
    let chan = d.open("n", Dir::OpenerReceives, 16, "T").expect("open");
    assert!(matches!(
        pump(&mut d, &mut a, &mut to_a)[..],
        [Event::Open { .. }]
    ));
    a.accept(chan, 0);
    assert!(matches!(
        pump(&mut a, &mut d, &mut to_d)[..],
        [Event::Accepted { .. }]
    ));
    (d, a, chan)
}

#[test]
fn a_resume_replays_exactly_what_the_cut_lost_in_both_directions() {
    let (mut d, mut a, chan) = resumable_pair();
    let (mut to_a, mut to_d) = (BytesMut::new(), BytesMut::new());
    for v in 0..4u8 {
        a.send_message(chan, &mut BytesMut::from(&[v][..]), &[])
            .expect("send");
    }
    let got = pump(&mut a, &mut d, &mut to_d);
    assert_eq!(message_bytes(&got), [0, 1, 2, 3]);
    d.credit_update(chan, 4, 4);
    // The cut: the dialer's CREDIT and the acceptor's next values are lost.
    for v in 4..8u8 {
        a.send_message(chan, &mut BytesMut::from(&[v][..]), &[])
            .expect("send");
    }
    assert!(lose(&mut a) > 0);
    assert!(lose(&mut d) > 0);
    assert!(d.suspend() && a.suspend());
    assert!(d.is_suspended() && a.is_suspended());
    // A value sent while suspended queues behind what is kept.
    a.send_message(chan, &mut BytesMut::from(&[8][..]), &[])
        .expect("send while suspended");
    assert_eq!(lose(&mut a), 0, "nothing is written while suspended");

    assert!(d.begin_resume(t0()));
    let mut hello = BytesMut::new();
    d.take_transmit(&mut hello, t0());
    assert_eq!(hello.len(), HELLO_LEN, "the resume hello alone");
    let ours = *a.peer().expect("peer hello");
    let (_, info) = Hello::decode_with(&mut hello, &ours)
        .expect("valid")
        .expect("whole");
    assert!(info.is(hello::FLAG_RESUME));
    assert_eq!(info.token, [7; 16]);
    a.accept_resume(info.position, t0()).expect("resume");
    let got = pump(&mut a, &mut d, &mut to_d);
    assert!(matches!(got[0], Event::Resumed), "{got:?}");
    assert_eq!(
        message_bytes(&got),
        [4, 5, 6, 7, 8],
        "each lost value once, then the new one"
    );
    // The dialer's lost CREDIT comes again: the acceptor may send again.
    let got = pump(&mut d, &mut a, &mut to_a);
    assert!(
        got.iter().any(|e| matches!(e, Event::Credit { .. })),
        "{got:?}"
    );
    // The dialer's ACK, with its replay, lets the acceptor drop what it
    // kept.
    assert_eq!(a.replay_held(), 0, "everything acknowledged");
}

/// A dialer of a [`resumable_pair`] whose link broke, resuming over a new
/// one: its resume hello is already sent, the answer not yet read.
fn resuming_dialer() -> Connection {
    let (mut d, _a, _) = resumable_pair();
    assert!(d.suspend());
    assert!(d.begin_resume(t0()));
    lose(&mut d);
    d
}

/// The acceptor's hello comes on the new link, then a frame of a new
/// session it started (it never read the whole resume hello), where the
/// answer belongs: only the attempt failed. The dialer is not ended, can
/// be suspended again, and resumes over the next link.
#[test]
fn a_new_session_where_the_resume_answer_belongs_fails_only_the_attempt() {
    let (mut d, mut a, chan) = resumable_pair();
    a.send_message(chan, &mut BytesMut::from(&[1][..]), &[])
        .expect("send");
    assert!(lose(&mut a) > 0, "the value is lost with the link");
    assert!(d.suspend() && a.suspend());
    assert!(d.begin_resume(t0()));
    lose(&mut d);

    // What a fresh acceptor writes first, then its goodbye.
    let mut fresh =
        Connection::accept_resumable(Limits::default(), CodecId::Bincode, t0(), [9; 16]);
    let mut wire = BytesMut::new();
    fresh.take_transmit(&mut wire, t0());
    Frame::Goodbye {
        reason: "connection lost".into(),
    }
    .encode(&mut wire);
    assert_eq!(
        d.poll_input(&mut wire, t0()),
        Err(ProtoError::ResumeUnanswered)
    );
    assert!(!d.is_ended(), "only the attempt failed");
    assert!(d.suspend(), "suspended again");
    assert!(d.begin_resume(t0()), "and it tries again");

    // The next link reaches the acceptor that keeps the session.
    let mut hello = BytesMut::new();
    d.take_transmit(&mut hello, t0());
    let ours = *a.peer().expect("peer hello");
    let (_, info) = Hello::decode_with(&mut hello, &ours)
        .expect("valid")
        .expect("whole");
    a.accept_resume(info.position, t0()).expect("resume");
    let mut to_d = BytesMut::new();
    let got = pump(&mut a, &mut d, &mut to_d);
    assert!(matches!(got[0], Event::Resumed), "{got:?}");
    assert_eq!(message_bytes(&got), [1], "the lost value, once");
}

/// Bytes that are not netchan at all on a new link are still an error
/// that ends the session: the peer there is not a netchan acceptor.
#[test]
fn a_resume_answered_by_another_protocol_ends_the_dialer() {
    let mut d = resuming_dialer();
    let mut http = BytesMut::from(&b"HTTP/1.1 400 Bad Request\r\n\r\n"[..]);
    assert_eq!(d.poll_input(&mut http, t0()), Err(ProtoError::NotNetchan));
    assert!(d.is_ended());
}

#[test]
fn a_refused_resume_ends_the_dialer_and_an_ack_beyond_what_was_sent_is_an_error() {
    let mut d = resuming_dialer();
    let mut no = BytesMut::from(&Connection::refusal(&Limits::default(), CodecId::Bincode)[..]);
    assert_eq!(d.poll_input(&mut no, t0()), Err(ProtoError::ResumeRefused));
    assert!(d.is_ended());

    let (mut d, _a, _) = resumable_pair();
    let mut ack = BytesMut::new();
    Frame::Ack(1 << 40).encode(&mut ack);
    assert!(matches!(
        d.poll_input(&mut ack, t0()),
        Err(ProtoError::Malformed {
            kind: Kind::Ack,
            ..
        })
    ));
}

#[test]
fn an_ordinary_session_writes_no_ack_and_refuses_one() {
    let mut p = Pair::connected();
    assert!(!p.d.conn.is_resumable());
    let chan = p.d_sends(4);
    p.d.send(chan, b"x", &[]).unwrap();
    p.drive();
    assert!(
        !p.a.take_sent().iter().any(|f| matches!(f, Frame::Ack(_))),
        "no ACK on an ordinary session"
    );
    let mut ack = BytesMut::new();
    Frame::Ack(0).encode(&mut ack);
    assert!(matches!(
        p.a.conn.poll_input(&mut ack, t0()),
        Err(ProtoError::Malformed {
            kind: Kind::Ack,
            ..
        })
    ));
}

/// `send_run` sends exactly what `can_send` then `send_slice` for each
/// message in turn send, as far as each is one frame now, and stops at
/// the first that is not (out of credit, over a chunk, or behind a
/// message of the channel still queued): the rest, sent one by one after
/// it, make the same bytes and counts as sending all one by one.
#[test]
fn a_run_sent_at_once_is_what_sending_each_message_in_turn_sends() {
    const SIZES: [usize; 12] = [0, 5, 64, 65, 10, 10, 200, 3, 7, 1, 1, 1];
    let mut bodies = Vec::new();
    for (i, &n) in SIZES.iter().enumerate() {
        bodies.extend(std::iter::repeat_n(i as u8, n));
    }
    let one_by_one = |p: &mut Pair, chan: ChanId, from: usize| {
        let mut at: usize = SIZES[..from].iter().sum();
        let mut sent = 0;
        for &n in &SIZES[from..] {
            if p.d.conn.can_send(chan).is_err() {
                break;
            }
            p.d.conn.send_slice(chan, &bodies[at..at + n]).unwrap();
            at += n;
            sent += 1;
        }
        sent
    };
    for cap in [1u32, 2, 3, 5, 8, 16] {
        for queued_first in [false, true] {
            let what = format!("capacity {cap}, a message queued first: {queued_first}");
            let mut each = Pair::connected_with(chunked(64), chunked(64));
            let mut run = Pair::connected_with(chunked(64), chunked(64));
            let chan = each.d_sends(cap);
            assert_eq!(run.d_sends(cap), chan);
            if queued_first {
                // Larger than a chunk: queued, sent chunk by chunk.
                for p in [&mut each, &mut run] {
                    p.d.send(chan, &[9; 300], &[]).unwrap();
                }
            }
            let sent_each = one_by_one(&mut each, chan, 0);
            let (sent_run, bytes) = run.d.conn.send_run(chan, &bodies, SIZES);
            let credit = cap as usize - usize::from(queued_first);
            let whole = if queued_first { 0 } else { credit.min(3) };
            assert_eq!(sent_run, whole, "{what}: messages of the run");
            assert_eq!(bytes, SIZES[..whole].iter().sum::<usize>(), "{what}");
            let sent_rest = one_by_one(&mut run, chan, sent_run);
            assert_eq!(sent_run + sent_rest, sent_each, "{what}: messages in all");
            assert_eq!(sent_each, credit.min(SIZES.len()), "{what}");
            assert_eq!(run.d.conn.counters(), each.d.conn.counters(), "{what}");
            assert_eq!(run.d.conn.sent_total(), each.d.conn.sent_total(), "{what}");
            // Every transmit until nothing is left (a queued message goes
            // a chunk at a time).
            let all = |p: &mut Pair| {
                let mut out = BytesMut::new();
                for _ in 0..100 {
                    let b = p.d.transmit(p.now);
                    if b.is_empty() {
                        break;
                    }
                    out.extend_from_slice(&b);
                }
                out
            };
            let (to_a_each, to_a_run) = (all(&mut each), all(&mut run));
            assert_eq!(to_a_run, to_a_each, "{what}: the bytes written");
            // And the receiver takes them all, in order.
            run.a.receive(&to_a_run, run.now).unwrap();
            let got: Vec<Bytes> = run
                .a
                .take_events()
                .into_iter()
                .filter_map(|e| match e {
                    Event::Message { data, .. } => Some(data),
                    _ => None,
                })
                .collect();
            let mut want: Vec<Bytes> = Vec::new();
            if queued_first {
                want.push(Bytes::from_static(&[9; 300]));
            }
            let mut at = 0;
            for &n in &SIZES[..sent_each] {
                want.push(Bytes::copy_from_slice(&bodies[at..at + n]));
                at += n;
            }
            assert_eq!(got, want, "{what}: the messages received");
        }
    }
}
