//! Model check of the channel and credit state machines.
//!
//! Two [`Connection`]s are joined in memory by two byte queues (one per
//! direction), and proptest drives them with random sequences of what two
//! well-behaved runtimes do: open channels either way, accept or reject,
//! send when `can_send` allows, take received messages and return credit,
//! grant rendezvous credit, close from either side, say goodbye, transmit,
//! deliver any number of bytes (frames split anywhere, frames crossing),
//! and let time pass. The acceptor reads small messages by slice
//! (`Connection::poll_input_with`), the dialer as events.
//!
//! A simple reference model runs beside them. It learns what crossed the
//! wire from a tap that decodes the delivered bytes frame by frame, and
//! from it predicts every event each side must report and every channel's
//! state, credit, unconfirmed count and outstanding grants. After every
//! step the two are compared, and these invariants are checked:
//!
//! * no protocol error between the two well-behaved sides, ever;
//! * per channel, what arrived is a prefix of what was sent, no duplicates,
//!   and a channel the sender closed delivered everything before its end;
//! * `credit + unconfirmed <= max(capacity, 1)` on every sending end, and
//!   a receiver never holds more untaken messages than that;
//! * `sent_total == confirmed_total + unconfirmed()`: closing returns
//!   credit (a removed channel's unconfirmed messages count as confirmed);
//! * once everything is closed and acknowledged, both tables are empty
//!   and nothing is unconfirmed: no leaked ids.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use proptest::prelude::*;

use super::conn::{OpenError, SendBlock};
use super::frame::FLAG_END;
use super::hello::HELLO_LEN;
use super::*;

/// Side index: 0 is the dialer, 1 the acceptor.
type W = usize;

fn peer(w: W) -> W {
    1 - w
}

fn limits() -> Limits {
    Limits {
        // Messages of up to 160 bytes: most small ones fit a chunk, the
        // rest are chunked and interleave with other channels.
        chunk_size: 48,
        // Small, so that the limits themselves are reached.
        max_channels: 6,
        max_pending_opens: 3,
        ..Limits::default()
    }
}

/// Bytes of a message body: its id, then filler.
const ID_LEN: usize = 8;

fn body(id: u64, pad: usize) -> Vec<u8> {
    let mut b = id.to_le_bytes().to_vec();
    b.resize(ID_LEN + pad, id as u8);
    b
}

// ------------------------------------------------------------ operations

#[derive(Debug, Clone)]
enum Op {
    /// `by` opens a channel; it sends on it if `opener_sends`.
    Open { by: W, opener_sends: bool, cap: u32 },
    /// `by` answers one of the OPENs it was asked.
    Answer {
        by: W,
        pick: usize,
        accept: bool,
        cap: u32,
    },
    /// `by` sends a message on one of its sending channels, if it may.
    Send { by: W, pick: usize, pad: usize },
    /// `by`'s program takes up to `n` messages from one receiving channel.
    Take { by: W, pick: usize, n: u32 },
    /// A rendezvous receiver of `by` waits in `recv`.
    Wait { by: W, pick: usize },
    /// `by` closes one of its channels.
    Close { by: W, pick: usize, code: u8 },
    /// `by` says goodbye.
    Goodbye { by: W },
    /// `by` writes what it has to the wire.
    Transmit { by: W },
    /// Up to `max` bytes travel to `to`; with `flush`, the other side
    /// transmits first.
    Deliver { to: W, max: usize, flush: bool },
    /// Time passes; both sides run their timers.
    Tick { ms: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    let w = 0..2usize;
    prop_oneof![
        3 => (w.clone(), any::<bool>(), 0..6u32)
            .prop_map(|(by, opener_sends, cap)| Op::Open { by, opener_sends, cap }),
        5 => (w.clone(), any::<usize>(), prop::bool::weighted(0.85), 0..6u32)
            .prop_map(|(by, pick, accept, cap)| Op::Answer { by, pick, accept, cap }),
        16 => (w.clone(), any::<usize>(), prop_oneof![0..40usize, 40..160usize])
            .prop_map(|(by, pick, pad)| Op::Send { by, pick, pad }),
        8 => (w.clone(), any::<usize>(), 1..4u32)
            .prop_map(|(by, pick, n)| Op::Take { by, pick, n }),
        2 => (w.clone(), any::<usize>()).prop_map(|(by, pick)| Op::Wait { by, pick }),
        2 => (w.clone(), any::<usize>(), 0..4u8)
            .prop_map(|(by, pick, code)| Op::Close { by, pick, code }),
        8 => w.clone().prop_map(|by| Op::Transmit { by }),
        12 => (w, prop_oneof![1..30usize, Just(usize::MAX)], any::<bool>())
            .prop_map(|(to, max, flush)| Op::Deliver { to, max, flush }),
        1 => (0..5_000u64).prop_map(|ms| Op::Tick { ms }),
    ]
}

// ------------------------------------------------------------ the model

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Opening,
    Requested,
    Open,
    Closing,
}

/// One side's view of one channel.
#[derive(Debug, Clone)]
struct End {
    state: St,
    sending: bool,
    /// The receiving side's buffer, once this side knows it.
    cap: u32,
    // Sending side.
    credit: u32,
    unconfirmed: u64,
    /// Messages sent on the channel.
    nsent: u64,
    /// Messages queued for chunking and not yet written.
    pending: usize,
    // Receiving side.
    outstanding: u32,
    assembling: Option<Vec<u8>>,
    delivered: u64,
    taken: u64,
    /// A close asked while opening, or while chunks were pending.
    close_after: bool,
}

impl End {
    fn new(state: St, sending: bool, cap: u32) -> End {
        End {
            state,
            sending,
            cap,
            credit: 0,
            unconfirmed: 0,
            nsent: 0,
            pending: 0,
            outstanding: 0,
            assembling: None,
            delivered: 0,
            taken: 0,
            close_after: false,
        }
    }
}

/// One channel, both ends and its traffic.
#[derive(Debug)]
struct Chan {
    /// The side that receives on it.
    receiver: W,
    ends: [Option<End>; 2],
    /// Message ids in the order they were sent.
    sent: Vec<u64>,
    /// Message ids in the order they arrived.
    arrived: Vec<u64>,
    /// Arrived and not yet taken by the receiving program.
    untaken: VecDeque<u64>,
}

/// An event as the model predicts it (reasons left out).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Ready,
    Open {
        chan: ChanId,
        dir: Dir,
        capacity: u32,
    },
    Accepted {
        chan: ChanId,
        capacity: u32,
    },
    Rejected {
        chan: ChanId,
        code: RejectCode,
    },
    Message {
        chan: ChanId,
        data: Bytes,
    },
    Credit {
        chan: ChanId,
    },
    Closed {
        chan: ChanId,
        code: CloseCode,
    },
    Goodbye,
}

fn ev(e: Event) -> Ev {
    match e {
        Event::Ready(_) => Ev::Ready,
        Event::Resumed => unreachable!("the model's sessions are not resumable"),
        Event::Open {
            chan,
            dir,
            capacity,
            name,
            type_name,
        } => {
            assert_eq!((name.as_str(), type_name.as_str()), ("n", "T"));
            Ev::Open {
                chan,
                dir,
                capacity,
            }
        }
        Event::Accepted { chan, capacity } => Ev::Accepted { chan, capacity },
        Event::Rejected { chan, code, .. } => Ev::Rejected { chan, code },
        Event::Message {
            chan,
            data,
            handles,
        } => {
            assert!(handles.is_empty());
            Ev::Message { chan, data }
        }
        Event::Credit { chan } => Ev::Credit { chan },
        Event::Closed { chan, code, .. } => Ev::Closed { chan, code },
        Event::Goodbye { .. } => Ev::Goodbye,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bye {
    None,
    Queued,
    Sent,
}

/// One side: the connection under test and what the model knows of it.
#[derive(Debug)]
struct Peer {
    conn: Connection,
    ready: bool,
    bye: Bye,
    /// The peer's GOODBYE arrived.
    ended: bool,
    next_id: ChanId,
    requested: usize,
    /// Bytes delivered to `conn` and not yet consumed by it.
    inbox: BytesMut,
    /// The same bytes, decoded by the model.
    tap: BytesMut,
    tap_hello: usize,
}

impl Peer {
    fn is_open(&self) -> bool {
        self.ready && self.bye == Bye::None && !self.ended
    }
}

struct World {
    p: [Peer; 2],
    /// `wire[w]`: bytes written by `w`, not yet delivered.
    wire: [BytesMut; 2],
    chans: BTreeMap<ChanId, Chan>,
    now: Instant,
    last_exchange: Instant,
    next_msg: u64,
}

impl World {
    fn new() -> World {
        let now = Instant::now();
        let peer = |side, first| Peer {
            conn: Connection::new(side, limits(), CodecId::Bincode, now),
            ready: false,
            bye: Bye::None,
            ended: false,
            next_id: first,
            requested: 0,
            inbox: BytesMut::new(),
            tap: BytesMut::new(),
            tap_hello: 0,
        };
        World {
            p: [peer(Side::Dialer, 1), peer(Side::Acceptor, 2)],
            wire: [BytesMut::new(), BytesMut::new()],
            chans: BTreeMap::new(),
            now,
            last_exchange: now,
            next_msg: 1,
        }
    }

    fn count(&self, w: W) -> usize {
        self.chans.values().filter(|c| c.ends[w].is_some()).count()
    }

    /// Channels of `w` whose end matches `f`, in id order.
    fn ends_of(&self, w: W, f: impl Fn(&End) -> bool) -> Vec<ChanId> {
        self.chans
            .iter()
            .filter(|(_, c)| c.ends[w].as_ref().is_some_and(&f))
            .map(|(id, _)| *id)
            .collect()
    }

    fn end(&mut self, w: W, chan: ChanId) -> &mut End {
        self.chans
            .get_mut(&chan)
            .and_then(|c| c.ends[w].as_mut())
            .unwrap_or_else(|| panic!("side {w} has no channel {chan} in the model"))
    }

    // ------------------------------------------------------- local calls

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Open {
                by,
                opener_sends,
                cap,
            } => self.open(by, opener_sends, cap),
            Op::Answer {
                by,
                pick,
                accept,
                cap,
            } => {
                let reqs = self.ends_of(by, |e| e.state == St::Requested);
                if reqs.is_empty() {
                    return;
                }
                let chan = reqs[pick % reqs.len()];
                if accept {
                    self.p[by].conn.accept(chan, cap);
                    self.p[by].requested -= 1;
                    let e = self.end(by, chan);
                    e.state = St::Open;
                    if e.sending {
                        e.credit = e.cap;
                    } else {
                        e.cap = cap;
                        e.outstanding = cap;
                    }
                } else {
                    self.p[by].conn.reject(chan, RejectCode::NoSuchName, "no");
                    self.p[by].requested -= 1;
                    self.chans.get_mut(&chan).expect("chan").ends[by] = None;
                }
            }
            Op::Send { by, pick, pad } => {
                let senders = self.ends_of(by, |e| e.sending);
                if senders.is_empty() {
                    return;
                }
                self.send(by, senders[pick % senders.len()], pad);
            }
            Op::Take { by, pick, n } => {
                let receivers: Vec<ChanId> = self
                    .chans
                    .iter()
                    .filter(|(_, c)| !c.untaken.is_empty() && c.receiver == by)
                    .map(|(id, _)| *id)
                    .collect();
                if receivers.is_empty() {
                    return;
                }
                self.take(by, receivers[pick % receivers.len()], n);
            }
            Op::Wait { by, pick } => {
                let rv = self.ends_of(by, |e| !e.sending && e.cap == 0);
                if rv.is_empty() {
                    return;
                }
                let chan = rv[pick % rv.len()];
                let granted = self.p[by].conn.rendezvous_grant(chan);
                let e = self.end(by, chan);
                let expect = e.state == St::Open
                    && e.outstanding == 0
                    && e.delivered == e.taken
                    && e.assembling.is_none();
                assert_eq!(granted, expect, "rendezvous_grant on {chan}: {e:?}");
                if granted {
                    e.outstanding += 1;
                }
            }
            Op::Close { by, pick, code } => {
                let all = self.ends_of(by, |_| true);
                if all.is_empty() {
                    return;
                }
                let code = [
                    CloseCode::Done,
                    CloseCode::Hangup,
                    CloseCode::ReceiverGone,
                    CloseCode::Error,
                ][code as usize % 4];
                self.close(by, all[pick % all.len()], code);
            }
            Op::Goodbye { by } => {
                self.p[by].conn.goodbye("");
                if self.p[by].bye == Bye::None {
                    self.p[by].bye = Bye::Queued;
                }
            }
            Op::Transmit { by } => self.transmit(by),
            Op::Deliver { to, max, flush } => {
                if flush {
                    self.transmit(peer(to));
                }
                self.deliver(to, max);
            }
            Op::Tick { ms } => {
                if self.now + Duration::from_millis(ms) - self.last_exchange
                    >= Duration::from_secs(10)
                {
                    // The network is slow, never dead: everything in
                    // flight arrives before anyone's keepalive runs out.
                    self.exchange();
                }
                self.now += Duration::from_millis(ms);
                for w in 0..2 {
                    if let Err(e) = self.p[w].conn.handle_timeout(self.now) {
                        panic!("side {w}: timer failed: {e}");
                    }
                }
            }
        }
    }

    fn open(&mut self, by: W, opener_sends: bool, cap: u32) {
        let dir = if opener_sends {
            Dir::OpenerSends
        } else {
            Dir::OpenerReceives
        };
        let r = self.p[by].conn.open("n", dir, cap, "T");
        if !self.p[by].is_open() {
            assert_eq!(r, Err(OpenError::Ended), "open on a closed connection");
            return;
        }
        if self.count(by) >= limits().max_channels {
            assert_eq!(
                r,
                Err(OpenError::TooManyChannels(limits().max_channels)),
                "open at the limit"
            );
            return;
        }
        let chan = r.expect("open within the limit");
        assert_eq!(chan, self.p[by].next_id, "ids are allocated in order");
        self.p[by].next_id += 2;
        let mut e = End::new(
            St::Opening,
            opener_sends,
            if opener_sends { 0 } else { cap },
        );
        if !opener_sends {
            e.outstanding = cap;
        }
        let mut c = Chan {
            receiver: if opener_sends { peer(by) } else { by },
            ends: [None, None],
            sent: Vec::new(),
            arrived: Vec::new(),
            untaken: VecDeque::new(),
        };
        c.ends[by] = Some(e);
        assert!(self.chans.insert(chan, c).is_none(), "id {chan} reused");
    }

    fn send(&mut self, by: W, chan: ChanId, pad: usize) {
        let is_open = self.p[by].is_open();
        let e = self.end(by, chan).clone();
        let expect = if !is_open {
            Err(SendBlock::Ended)
        } else {
            match e.state {
                St::Open if e.close_after => Err(SendBlock::Closed),
                St::Open if e.credit > 0 => Ok(()),
                St::Open | St::Opening => Err(SendBlock::NoCredit),
                _ => Err(SendBlock::Closed),
            }
        };
        let got = self.p[by].conn.can_send(chan);
        assert_eq!(got, expect, "can_send on {chan} of side {by}: {e:?}");
        if got.is_err() {
            return;
        }
        let id = self.next_msg;
        self.next_msg += 1;
        let b = body(id, pad);
        let mut buf = BytesMut::from(&b[..]);
        self.p[by]
            .conn
            .send_message(chan, &mut buf, &[])
            .expect("a message without handles");
        let e = self.end(by, chan);
        e.credit -= 1;
        e.unconfirmed += 1;
        e.nsent += 1;
        if b.len() > limits().chunk_size || e.pending > 0 {
            e.pending += 1;
        }
        self.chans.get_mut(&chan).expect("chan").sent.push(id);
    }

    fn take(&mut self, by: W, chan: ChanId, n: u32) {
        let c = self.chans.get_mut(&chan).expect("chan");
        let k = (n as usize).min(c.untaken.len());
        c.untaken.drain(..k);
        let k = k as u32;
        let cap = c.ends[by].as_ref().map(|e| e.cap);
        // The runtime grants a slot per message taken; a rendezvous
        // receiver only reports them taken.
        let grant = if cap == Some(0) { 0 } else { k };
        self.p[by].conn.credit_update(chan, grant, k);
        if let Some(e) = c.ends[by].as_mut() {
            if e.state == St::Open {
                e.outstanding += grant;
                e.taken += u64::from(k);
            }
        }
    }

    fn close(&mut self, by: W, chan: ChanId, code: CloseCode) {
        self.p[by].conn.close(chan, code, "");
        let e = self.end(by, chan);
        match e.state {
            St::Closing => {}
            St::Requested => {
                self.p[by].requested -= 1;
                self.chans.get_mut(&chan).expect("chan").ends[by] = None;
            }
            St::Opening => e.close_after = true,
            St::Open => {
                if e.pending > 0 {
                    e.close_after = true;
                } else {
                    e.state = St::Closing;
                    e.assembling = None;
                }
            }
        }
    }

    fn transmit(&mut self, by: W) {
        // The writer runs until it is idle: every pending chunk is
        // written (one per transmit), then the closes waiting for them,
        // then a queued goodbye.
        let mut out = BytesMut::new();
        while self.p[by].conn.take_transmit(&mut out, self.now) {
            self.wire[by].extend_from_slice(&out);
            out.clear();
        }
        for c in self.chans.values_mut() {
            if let Some(e) = c.ends[by].as_mut() {
                if e.pending > 0 {
                    e.pending = 0;
                    if e.close_after && e.state == St::Open {
                        e.close_after = false;
                        e.state = St::Closing;
                    }
                }
            }
        }
        if self.p[by].bye == Bye::Queued {
            self.p[by].bye = Bye::Sent;
        }
        assert_eq!(self.p[by].conn.goodbye_sent(), self.p[by].bye == Bye::Sent);
    }

    // ------------------------------------------------------- delivery

    fn deliver(&mut self, to: W, max: usize) {
        let from = peer(to);
        let n = max.min(self.wire[from].len());
        if n == 0 {
            return;
        }
        let bytes = self.wire[from].split_to(n);
        let now = self.now;
        let p = &mut self.p[to];
        p.inbox.extend_from_slice(&bytes);
        let mut got = Vec::new();
        // The acceptor takes small messages by slice, the dialer as
        // events: both must match the model.
        let by_slice = to == 1;
        loop {
            let mut smalls = Vec::new();
            let mut small = |chan, data: &[u8]| smalls.push((chan, Bytes::copy_from_slice(data)));
            let polled = if by_slice {
                p.conn.poll_input_with(&mut p.inbox, now, Some(&mut small))
            } else {
                p.conn.poll_input(&mut p.inbox, now)
            };
            got.extend(smalls.into_iter().map(|(chan, data)| {
                ev(Event::Message {
                    chan,
                    data,
                    handles: Vec::new(),
                })
            }));
            match polled {
                Ok(Some(e)) => got.push(ev(e)),
                Ok(None) => break,
                Err(e) => panic!("side {to}: protocol error between well-behaved sides: {e}"),
            }
        }
        // The model reads the same bytes.
        p.tap.extend_from_slice(&bytes);
        let mut expected = Vec::new();
        if p.tap_hello < HELLO_LEN {
            let k = (HELLO_LEN - p.tap_hello).min(p.tap.len());
            p.tap.advance(k);
            p.tap_hello += k;
            if p.tap_hello == HELLO_LEN {
                p.ready = true;
                expected.push(Ev::Ready);
            }
        }
        let mut frames = Vec::new();
        if self.p[to].tap_hello == HELLO_LEN {
            while let Some(f) =
                Frame::decode(&mut self.p[to].tap, usize::MAX).expect("well-formed frames")
            {
                frames.push(f);
            }
        }
        for f in frames {
            self.on_frame(to, f, &mut expected);
        }
        assert_eq!(got, expected, "events of side {to}");
    }

    /// What `to` must do with frame `f`.
    fn on_frame(&mut self, to: W, f: Frame, out: &mut Vec<Ev>) {
        match f {
            Frame::Open {
                chan,
                dir,
                capacity,
                ..
            } => {
                let full = self.count(to) >= limits().max_channels
                    || self.p[to].requested >= limits().max_pending_opens;
                if full {
                    // Refused with a REJECT the opener will see.
                    return;
                }
                let sending = dir == Dir::OpenerReceives;
                let cap = if sending { capacity } else { 0 };
                self.chans.get_mut(&chan).expect("opened by the peer").ends[to] =
                    Some(End::new(St::Requested, sending, cap));
                self.p[to].requested += 1;
                out.push(Ev::Open {
                    chan,
                    dir,
                    capacity,
                });
            }
            Frame::Accept { chan, capacity } => {
                let e = self.end(to, chan);
                assert_eq!(e.state, St::Opening);
                e.state = St::Open;
                if e.sending {
                    e.cap = capacity;
                    e.credit = capacity;
                }
                if e.close_after {
                    e.close_after = false;
                    e.state = St::Closing;
                } else {
                    out.push(Ev::Accepted { chan, capacity });
                }
            }
            Frame::Reject { chan, code, .. } => {
                let e = self.end(to, chan);
                assert_eq!(e.state, St::Opening);
                let quiet = e.close_after;
                self.chans.get_mut(&chan).expect("chan").ends[to] = None;
                if !quiet {
                    out.push(Ev::Rejected { chan, code });
                }
            }
            Frame::Data {
                chan,
                flags,
                payload,
            } => {
                let e = self.end(to, chan);
                assert!(!e.sending, "data arrives at the receiving end");
                if e.state == St::Closing {
                    return;
                }
                assert_eq!(e.state, St::Open, "data on channel {chan}");
                let mut buf = match e.assembling.take() {
                    Some(b) => b,
                    None => {
                        assert!(e.outstanding > 0, "the sender respected the credit");
                        e.outstanding -= 1;
                        Vec::new()
                    }
                };
                buf.extend_from_slice(&payload);
                if flags & FLAG_END == 0 {
                    e.assembling = Some(buf);
                    return;
                }
                e.delivered += 1;
                let cap = e.cap;
                let id = u64::from_le_bytes(buf[..ID_LEN].try_into().expect("id"));
                let c = self.chans.get_mut(&chan).expect("chan");
                let k = c.arrived.len();
                assert!(
                    k < c.sent.len() && c.sent[k] == id,
                    "channel {chan}: message {id} arrived as number {k}, sent were {:?}",
                    c.sent
                );
                c.arrived.push(id);
                c.untaken.push_back(id);
                assert!(
                    c.untaken.len() <= cap.max(1) as usize,
                    "channel {chan}: {} untaken messages in a buffer of {cap}",
                    c.untaken.len()
                );
                out.push(Ev::Message {
                    chan,
                    data: Bytes::from(buf),
                });
            }
            Frame::Credit {
                chan,
                grant,
                received,
            } => {
                let e = self.end(to, chan);
                assert!(e.sending, "credit arrives at the sending end");
                let acked = e.nsent - e.unconfirmed;
                assert!(
                    received >= acked && received <= e.nsent,
                    "channel {chan}: received {received} outside {acked}..={}",
                    e.nsent
                );
                if e.state == St::Closing {
                    // A channel this side closed: no new credit, but its
                    // confirmations still count.
                    e.unconfirmed = e.nsent - received;
                    out.push(Ev::Credit { chan });
                    return;
                }
                assert_eq!(e.state, St::Open);
                e.unconfirmed = e.nsent - received;
                e.credit += grant;
                out.push(Ev::Credit { chan });
            }
            Frame::Close { chan, code, .. } => {
                let e = self.end(to, chan).clone();
                match e.state {
                    St::Closing => {
                        self.chans.get_mut(&chan).expect("chan").ends[to] = None;
                        if e.sending {
                            // The answer to our CLOSE confirms the rest.
                            out.push(Ev::Credit { chan });
                        }
                    }
                    St::Open | St::Requested => {
                        if e.state == St::Requested {
                            self.p[to].requested -= 1;
                        }
                        let receiving = !e.sending;
                        let c = self.chans.get_mut(&chan).expect("chan");
                        c.ends[to] = None;
                        if receiving {
                            // The sender closed after its last send: all of
                            // it arrived first.
                            assert_eq!(
                                c.arrived, c.sent,
                                "channel {chan} closed by its sender before all arrived"
                            );
                        }
                        out.push(Ev::Closed { chan, code });
                    }
                    St::Opening => panic!("CLOSE before the answer on {chan}"),
                }
            }
            Frame::Goodbye { .. } => {
                self.p[to].ended = true;
                out.push(Ev::Goodbye);
                // The runtime answers a goodbye with its own.
                self.p[to].conn.goodbye("");
                if self.p[to].bye == Bye::None {
                    self.p[to].bye = Bye::Queued;
                }
            }
            Frame::Ping(_) | Frame::Pong(_) | Frame::Ack(_) => {}
        }
    }

    /// Transmits and delivers until both sides are quiet.
    fn exchange(&mut self) {
        for _ in 0..100 {
            self.transmit(0);
            self.transmit(1);
            self.deliver(1, usize::MAX);
            self.deliver(0, usize::MAX);
            if self.wire.iter().all(|w| w.is_empty())
                && !self.p[0].conn.wants_transmit()
                && !self.p[1].conn.wants_transmit()
            {
                self.last_exchange = self.now;
                return;
            }
        }
        panic!("the two sides never went quiet");
    }

    // ------------------------------------------------------- invariants

    fn check(&self) {
        for w in 0..2 {
            let conn = &self.p[w].conn;
            assert!(conn.error().is_none(), "side {w}: {:?}", conn.error());
            assert_eq!(conn.channel_count(), self.count(w), "side {w}: table size");
            assert_eq!(
                conn.sent_total(),
                conn.confirmed_total() + conn.unconfirmed(),
                "side {w}: every message sent is confirmed or still counted"
            );
            let mut unconfirmed = 0;
            for (chan, c) in &self.chans {
                let Some(e) = &c.ends[w] else {
                    assert!(!conn.has_channel(*chan), "side {w}: {chan} should be gone");
                    continue;
                };
                assert!(conn.has_channel(*chan), "side {w}: {chan} missing");
                assert_eq!(conn.is_channel_open(*chan), e.state == St::Open, "{chan}");
                if e.sending {
                    assert_eq!(conn.credit(*chan), e.credit, "side {w}: credit of {chan}");
                    assert_eq!(conn.unconfirmed_on(*chan), e.unconfirmed, "{chan}");
                    if e.state == St::Open {
                        assert!(
                            u64::from(e.credit) + e.unconfirmed <= u64::from(e.cap.max(1)),
                            "side {w}: credit {} + unconfirmed {} over capacity {} on {chan}",
                            e.credit,
                            e.unconfirmed,
                            e.cap
                        );
                    }
                    unconfirmed += e.unconfirmed;
                } else {
                    assert_eq!(
                        conn.outstanding(*chan),
                        e.outstanding,
                        "outstanding of {chan}"
                    );
                }
            }
            assert_eq!(conn.unconfirmed(), unconfirmed, "side {w}: unconfirmed");
        }
    }

    /// Both programs take what they have, close every channel, and let
    /// the closes complete.
    fn wind_down(&mut self) {
        for _ in 0..20 {
            for w in 0..2 {
                let mine: Vec<ChanId> = self
                    .chans
                    .iter()
                    .filter(|(_, c)| !c.untaken.is_empty() && c.receiver == w)
                    .map(|(id, _)| *id)
                    .collect();
                for chan in mine {
                    self.take(w, chan, u32::MAX);
                }
                for chan in self.ends_of(w, |_| true) {
                    self.close(w, chan, CloseCode::Done);
                }
            }
            self.exchange();
            self.check();
            if self
                .chans
                .values()
                .all(|c| c.ends.iter().all(Option::is_none))
            {
                return;
            }
        }
        panic!(
            "channels left after closing everything: {:?}",
            self.chans.keys()
        );
    }
}

/// A run: optionally the handshake first, then `ops`, with a goodbye
/// from one side inserted at some point in some runs.
#[derive(Debug, Clone)]
struct Script {
    handshake_first: bool,
    ops: Vec<Op>,
}

fn script() -> impl Strategy<Value = Script> {
    (
        prop::bool::weighted(0.9),
        prop::collection::vec(op(), 1..300),
        prop::option::weighted(0.25, (any::<prop::sample::Index>(), 0..2usize)),
    )
        .prop_map(|(handshake_first, mut ops, bye)| {
            if let Some((at, by)) = bye {
                let i = at.index(ops.len() + 1);
                ops.insert(i, Op::Goodbye { by });
            }
            Script {
                handshake_first,
                ops,
            }
        })
}

fn run(script: &Script) {
    let mut w = World::new();
    if script.handshake_first {
        w.exchange();
        w.check();
    }
    for op in &script.ops {
        w.apply(op);
        w.check();
    }
    w.exchange();
    w.check();
    if w.p.iter().all(|p| p.bye == Bye::None) {
        // Everything closed and acknowledged: no leaked ids, nothing
        // unconfirmed.
        w.wind_down();
        for p in &w.p {
            assert_eq!(p.conn.channel_count(), 0);
            assert_eq!(p.conn.unconfirmed(), 0);
            assert_eq!(p.conn.sent_total(), p.conn.confirmed_total());
        }
    } else {
        // A goodbye ends both sides cleanly, each after the other's.
        for (i, p) in w.p.iter().enumerate() {
            assert!(p.conn.goodbye_sent(), "side {i} answered the goodbye");
            assert!(p.conn.is_ended(), "side {i} saw the other's goodbye");
            assert!(p.conn.error().is_none());
        }
    }
    for (chan, c) in &w.chans {
        assert!(
            c.arrived.len() <= c.sent.len() && c.arrived[..] == c.sent[..c.arrived.len()],
            "{chan}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Random well-behaved traffic between two connections keeps every
    /// invariant of the channel and credit state machines.
    #[test]
    fn random_traffic_between_two_connections_matches_the_reference_model(s in script()) {
        run(&s);
    }
}

/// A fixed script through the model, as a smoke test of the harness: the
/// dialer opens both ways, sends, the acceptor takes and closes.
#[test]
fn the_model_follows_a_simple_exchange() {
    use Op::*;
    let ops = vec![
        Transmit { by: 0 },
        Transmit { by: 1 },
        Deliver {
            to: 0,
            max: usize::MAX,
            flush: false,
        },
        Deliver {
            to: 1,
            max: usize::MAX,
            flush: false,
        },
        Open {
            by: 0,
            opener_sends: true,
            cap: 0,
        },
        Open {
            by: 0,
            opener_sends: false,
            cap: 2,
        },
        Transmit { by: 0 },
        Deliver {
            to: 1,
            max: 7,
            flush: false,
        },
        Deliver {
            to: 1,
            max: usize::MAX,
            flush: false,
        },
        Answer {
            by: 1,
            pick: 0,
            accept: true,
            cap: 2,
        },
        Answer {
            by: 1,
            pick: 0,
            accept: true,
            cap: 0,
        },
        Transmit { by: 1 },
        Deliver {
            to: 0,
            max: usize::MAX,
            flush: false,
        },
        Send {
            by: 0,
            pick: 0,
            pad: 100,
        },
        Send {
            by: 0,
            pick: 0,
            pad: 3,
        },
        Send {
            by: 1,
            pick: 0,
            pad: 3,
        },
        Transmit { by: 0 },
        Transmit { by: 1 },
        Deliver {
            to: 1,
            max: 50,
            flush: false,
        },
        Deliver {
            to: 0,
            max: usize::MAX,
            flush: false,
        },
        Deliver {
            to: 1,
            max: usize::MAX,
            flush: false,
        },
        Take {
            by: 1,
            pick: 0,
            n: 1,
        },
        Take {
            by: 0,
            pick: 0,
            n: 1,
        },
        Close {
            by: 0,
            pick: 0,
            code: 0,
        },
        Tick { ms: 4_000 },
        Goodbye { by: 1 },
    ];
    run(&Script {
        handshake_first: false,
        ops,
    });
}
