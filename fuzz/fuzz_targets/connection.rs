//! The sans-IO `Connection`, driven by a structured script: peer bytes (raw
//! or frame by frame) fed in arbitrary splits, time steps with
//! `handle_timeout`, `take_transmit`, and every local call the runtime
//! makes (open, accept, reject, messages with handles, credit, close,
//! goodbye, abort, forget).
//!
//! Every other feed reads small messages by slice (`poll_input_with`).
//!
//! Checked: nothing panics; an error from `poll_input` is final (the same
//! error again, and the connection is ended); after the peer's goodbye any
//! byte is `AfterGoodbye`; `take_transmit` says truthfully whether it gave
//! bytes; and everything the connection transmitted is a valid hello
//! followed by well-formed frames, `DATA` within the chunk size, ids of its
//! own parity, nothing after its own `GOODBYE`.
#![no_main]

use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use libfuzzer_sys::fuzz_target;
use netchan::proto::conn::{HandleDesc, HandleKind, Role};
use netchan::proto::{
    CloseCode, Connection, Dir, Event, Hello, Limits, PROTOCOL_VERSION, ProtoError, RejectCode,
    SMALL_MESSAGE, Side,
};
use netchan_fuzz::conn_script::{ConnInput as Input, Op};
use netchan_fuzz::frames::{Ctx, PeerFrame};
use netchan_fuzz::harness;
use netchan_fuzz::output::{self, Expect};
use netchan_fuzz::types;

fn limits(b: u8) -> Limits {
    Limits {
        max_message_len: [64, 256, 4096, 16 << 20][usize::from(b & 3)],
        chunk_size: [4096, 64 << 10][usize::from((b >> 2) & 1)],
        max_channels: [1, 2, 8, 1024][usize::from((b >> 3) & 3)],
        max_pending_opens: [1, 128][usize::from((b >> 5) & 1)],
        max_handles: [0, 4][usize::from((b >> 6) & 1)],
        max_reply_backlog: [64, 4 << 20][usize::from((b >> 7) & 1)],
        ..Limits::default()
    }
}

const CLOSE_CODES: [CloseCode; 4] = [
    CloseCode::Done,
    CloseCode::Hangup,
    CloseCode::ReceiverGone,
    CloseCode::Error,
];
const REJECT_CODES: [RejectCode; 5] = [
    RejectCode::NoSuchName,
    RejectCode::WrongDirection,
    RejectCode::WrongType,
    RejectCode::TooManyChannels,
    RejectCode::Closed,
];

struct Driver {
    conn: Connection,
    now: Instant,
    /// Peer bytes not yet handed to the connection.
    pending: Vec<u8>,
    inbuf: BytesMut,
    /// Everything the connection transmitted.
    sent: Vec<u8>,
    /// Channels seen (events, our opens and handles).
    known: Vec<u32>,
    /// The first error `poll_input` returned.
    error: Option<ProtoError>,
    peer_goodbye: bool,
}

impl Driver {
    fn pick(&self, i: u8) -> u32 {
        if self.known.is_empty() {
            u32::from(i)
        } else {
            self.known[usize::from(i) % self.known.len()]
        }
    }

    fn feed(&mut self, n: usize) {
        let n = n.min(self.pending.len());
        self.inbuf.extend_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        // Every other feed takes small messages by slice, as the runtime's
        // reader does: both paths must hold to the same checks.
        let by_slice = n % 2 == 0;
        for _ in 0..100_000 {
            let had = !self.inbuf.is_empty();
            let goodbye = self.peer_goodbye;
            let mut small = |_chan: u32, data: &[u8]| {
                assert!(data.len() <= SMALL_MESSAGE, "a small message of {} bytes", data.len());
                assert!(!goodbye, "a message after the peer's goodbye");
            };
            let r = if by_slice {
                self.conn
                    .poll_input_with(&mut self.inbuf, self.now, Some(&mut small))
            } else {
                self.conn.poll_input(&mut self.inbuf, self.now)
            };
            if let Some(e) = &self.error {
                let now = r.as_ref().err();
                if now != Some(e) {
                    // Finding F1 (fixed): a local reply after the failure
                    // used to fail it again, replacing the error.
                    panic!("an error was not final: first {e:?}, now {r:?}");
                }
                return;
            }
            match r {
                Ok(None) => return,
                Ok(Some(ev)) => {
                    assert!(
                        !self.peer_goodbye || !had,
                        "an event after the peer's goodbye"
                    );
                    self.event(ev)
                }
                Err(e) => {
                    if self.peer_goodbye && !matches!(e, ProtoError::KeepaliveTimeout(_)) {
                        assert_eq!(e, ProtoError::AfterGoodbye);
                    }
                    assert!(self.conn.is_ended(), "an error left the connection open");
                    assert!(self.conn.poll_timeout().is_none());
                    self.error = Some(e);
                    return;
                }
            }
        }
        panic!("poll_input returned 100,000 events from one feed");
    }

    fn event(&mut self, ev: Event) {
        match ev {
            Event::Open { chan, .. } => self.known.push(chan),
            Event::Message { handles, .. } => {
                self.known.extend(handles.iter().map(|h| h.chan));
            }
            Event::Goodbye { .. } => self.peer_goodbye = true,
            _ => {}
        }
    }

    fn transmit(&mut self) {
        let mut dst = BytesMut::new();
        let had = self.conn.take_transmit(&mut dst, self.now);
        assert_eq!(had, !dst.is_empty(), "take_transmit's answer");
        self.sent.extend_from_slice(&dst);
    }
}

fuzz_target!(|input: Input| {
    let lim = limits(input.limits);
    let chunk = lim.chunk_size;
    let start = Instant::now();
    let mut d = Driver {
        conn: Connection::new(input.side, lim.clone(), input.codec, start),
        now: start,
        pending: Vec::new(),
        inbuf: BytesMut::new(),
        sent: Vec::new(),
        known: Vec::new(),
        error: None,
        peer_goodbye: false,
    };
    let mut ctx = Ctx::new(input.side, input.codec);
    ctx.ours.clear();
    let tnames = types::type_names();
    let mut last: Option<&PeerFrame> = None;
    // Peer bytes are bounded, like the session targets' (building them is
    // the cost of a repeated large frame).
    let mut budget = harness::MAX_PEER_BYTES;
    for op in &input.ops {
        match op {
            Op::Frame(f) => {
                if budget > 0 {
                    let before = d.pending.len();
                    f.wire(&mut ctx, &mut d.pending);
                    budget = budget.saturating_sub(d.pending.len() - before);
                }
                last = Some(f);
            }
            Op::Repeat(n) => {
                if let Some(f) = last {
                    for _ in 0..*n {
                        if budget == 0 {
                            break;
                        }
                        let before = d.pending.len();
                        f.wire(&mut ctx, &mut d.pending);
                        budget = budget.saturating_sub(d.pending.len() - before);
                    }
                }
            }
            Op::Hello(m, c) => {
                let mut b = BytesMut::new();
                Hello {
                    version: PROTOCOL_VERSION,
                    codec: input.codec,
                    max_message_len: [64, 4096, 16 << 20, u32::MAX][usize::from(m % 4)],
                    max_channels: [1, 2, 8, 1024][usize::from(c % 4)],
                    max_handles: 128,
                }
                .encode(&mut b);
                d.pending.extend_from_slice(&b);
            }
            Op::Feed(n) => d.feed(if *n == 0 { usize::MAX } else { usize::from(*n) }),
            Op::Advance(ms) => {
                d.now += Duration::from_millis(u64::from(*ms));
                let r = d.conn.handle_timeout(d.now);
                if let Err(e) = r {
                    assert!(matches!(e, ProtoError::KeepaliveTimeout(_)));
                    assert!(d.conn.is_ended());
                    if d.error.is_none() {
                        d.error = Some(e);
                    }
                }
            }
            Op::Transmit => d.transmit(),
            Op::Open { name, dir, cap, ty } => {
                let name = types::NAMES[usize::from(*name) % types::NAMES.len()];
                let dir = if dir & 1 == 0 {
                    Dir::OpenerReceives
                } else {
                    Dir::OpenerSends
                };
                let ty = &tnames[usize::from(*ty) % tnames.len()];
                if let Ok(chan) = d.conn.open(name, dir, u32::from(*cap % 8), ty) {
                    d.known.push(chan);
                    ctx.ours.push(chan);
                }
            }
            Op::Accept(i, cap) => {
                let chan = d.pick(*i);
                d.conn.accept(chan, u32::from(*cap % 8));
            }
            Op::Reject(i, code) => {
                let chan = d.pick(*i);
                d.conn
                    .reject(chan, REJECT_CODES[usize::from(*code) % 5], "fuzz");
            }
            Op::Send { chan, len, handles } => {
                let chan = d.pick(*chan);
                if d.conn.can_send(chan).is_err() {
                    continue;
                }
                let mut descs = Vec::new();
                let mut ok = true;
                for k in 0..(handles % 4) {
                    let role = if (handles >> (2 + k)) & 1 == 0 {
                        Role::Receiving
                    } else {
                        Role::Sending
                    };
                    match d.conn.alloc_handle(role, u32::from(k)) {
                        Ok(h) => {
                            d.known.push(h);
                            ctx.ours.push(h);
                            descs.push(HandleDesc {
                                kind: match role {
                                    Role::Receiving => HandleKind::Sender,
                                    Role::Sending => HandleKind::Receiver,
                                },
                                chan: h,
                                capacity: u32::from(k),
                            });
                        }
                        Err(_) => {
                            ok = false;
                            break;
                        }
                    }
                }
                if !ok {
                    for h in &descs {
                        d.conn.forget(h.chan);
                    }
                    continue;
                }
                let mut body = BytesMut::new();
                body.put_bytes(0x5a, usize::from(*len) * 4);
                if d.conn.send_message(chan, &mut body, &descs).is_err() {
                    for h in &descs {
                        d.conn.forget(h.chan);
                    }
                }
            }
            Op::Credit {
                chan,
                grant,
                taken,
                urgent: _,
            } => {
                let chan = d.pick(*chan);
                // As the runtime does: never more than the window.
                let room = d
                    .conn
                    .capacity_of(chan)
                    .saturating_sub(d.conn.outstanding(chan));
                d.conn
                    .credit_update(chan, u32::from(*grant).min(room), u32::from(*taken));
            }
            Op::Rendezvous(i) => {
                let chan = d.pick(*i);
                d.conn.rendezvous_grant(chan);
            }
            Op::Close(i, code) => {
                let chan = d.pick(*i);
                d.conn
                    .close(chan, CLOSE_CODES[usize::from(*code) % 4], "fuzz");
            }
            Op::Goodbye => d.conn.goodbye("fuzz"),
            Op::Abort => d.conn.abort(),
            Op::Forget(i) => {
                let chan = d.pick(*i);
                d.conn.forget(chan);
            }
        }
    }
    // Drain whatever is left, then check the whole transcript.
    d.feed(usize::MAX);
    for _ in 0..64 {
        if !d.conn.wants_transmit() {
            break;
        }
        d.transmit();
    }
    let expect = Expect {
        codec: input.codec,
        max_message_len: u32::try_from(lim.max_message_len).unwrap_or(u32::MAX),
        max_channels: u32::try_from(lim.max_channels).unwrap_or(u32::MAX),
        max_handles: u32::try_from(lim.max_handles).unwrap_or(u32::MAX),
        chunk_size: chunk,
        parity: match input.side {
            Side::Dialer => 1,
            Side::Acceptor => 0,
        },
    };
    if let Err(e) = output::check(&d.sent, &expect, false, true) {
        panic!("the connection transmitted invalid output: {e}");
    }
});
