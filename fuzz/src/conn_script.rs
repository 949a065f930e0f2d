//! The input of the `connection` target: a script of peer bytes and local
//! calls on a sans-IO `Connection`.

use arbitrary::{Arbitrary, Unstructured};
use netchan::proto::{CodecId, Side};

use crate::frames::{FRAME_OPS, PeerFrame};
use crate::grammar::{Reader, Writer};

/// One step.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Queue a peer frame (not yet fed).
    Frame(PeerFrame),
    /// Queue a valid peer hello; the bytes pick its message and channel
    /// limits.
    Hello(u8, u8),
    /// Feed this many queued bytes (0: all) and poll until more are needed.
    Feed(u16),
    /// Advance the clock by this many milliseconds and run `handle_timeout`.
    Advance(u16),
    /// `take_transmit`.
    Transmit,
    /// `open` an export name (index) in a direction, with a capacity and a
    /// type name (index).
    Open {
        /// Name index.
        name: u8,
        /// Bit 0: direction.
        dir: u8,
        /// Capacity (mod 8).
        cap: u8,
        /// Type name index.
        ty: u8,
    },
    /// `accept` a known channel (index) with a capacity.
    Accept(u8, u8),
    /// `reject` a known channel (index) with a code.
    Reject(u8, u8),
    /// Send a message of `4 * len` bytes with `handles % 4` handles (roles
    /// from the higher bits) on a known channel.
    Send {
        /// Channel index.
        chan: u8,
        /// Body length / 4.
        len: u16,
        /// Handle count and roles.
        handles: u8,
    },
    /// `credit_update`.
    Credit {
        /// Channel index.
        chan: u8,
        /// Grant (capped to the window).
        grant: u8,
        /// Taken.
        taken: u8,
        /// Kept so that older inputs still parse; credit is never urgent
        /// now (it always leaves at the next transmit).
        urgent: bool,
    },
    /// `rendezvous_grant`.
    Rendezvous(u8),
    /// `close` with a code.
    Close(u8, u8),
    /// `goodbye`.
    Goodbye,
    /// `abort`.
    Abort,
    /// `forget`.
    Forget(u8),
    /// Queue the previous peer frame again this many times.
    Repeat(u8),
}

const OPS: u8 = FRAME_OPS + 15;

/// The whole input.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnInput {
    /// Our side.
    pub side: Side,
    /// Our codec.
    pub codec: CodecId,
    /// Limits selector (see the target).
    pub limits: u8,
    /// Steps.
    pub ops: Vec<Op>,
}

impl<'a> Arbitrary<'a> for ConnInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let mut r = Reader::new(u);
        let head = r.u8();
        let limits = r.u8();
        let mut ops = Vec::new();
        while !r.is_empty() && ops.len() < 4096 {
            let op = r.u8() % OPS;
            ops.push(if op < FRAME_OPS {
                Op::Frame(PeerFrame::parse(op, &mut r))
            } else {
                match op - FRAME_OPS {
                    0 => Op::Hello(r.u8(), r.u8()),
                    1 => Op::Feed(r.u16()),
                    2 => Op::Advance(r.u16()),
                    3 => Op::Transmit,
                    4 => Op::Open {
                        name: r.u8(),
                        dir: r.u8(),
                        cap: r.u8(),
                        ty: r.u8(),
                    },
                    5 => Op::Accept(r.u8(), r.u8()),
                    6 => Op::Reject(r.u8(), r.u8()),
                    7 => Op::Send {
                        chan: r.u8(),
                        len: r.u16(),
                        handles: r.u8(),
                    },
                    8 => Op::Credit {
                        chan: r.u8(),
                        grant: r.u8(),
                        taken: r.u8(),
                        urgent: r.u8() & 1 == 1,
                    },
                    9 => Op::Rendezvous(r.u8()),
                    10 => Op::Close(r.u8(), r.u8()),
                    11 => Op::Goodbye,
                    12 => Op::Abort,
                    13 => Op::Forget(r.u8()),
                    _ => Op::Repeat(r.u8()),
                }
            });
        }
        Ok(ConnInput {
            side: if head & 1 == 0 {
                Side::Acceptor
            } else {
                Side::Dialer
            },
            codec: if head & 2 == 0 {
                CodecId::Bincode
            } else {
                CodecId::Postcard
            },
            limits,
            ops,
        })
    }

    fn arbitrary_take_rest(mut u: Unstructured<'a>) -> arbitrary::Result<Self> {
        Self::arbitrary(&mut u)
    }
}

impl ConnInput {
    /// The input's bytes (the inverse of parsing).
    pub fn write(&self) -> Vec<u8> {
        let mut w = Writer::new();
        let mut head = 0;
        if self.side == Side::Dialer {
            head |= 1;
        }
        if self.codec == CodecId::Postcard {
            head |= 2;
        }
        w.u8(head).u8(self.limits);
        for op in &self.ops {
            let k = |n: u8| FRAME_OPS + n;
            match op {
                Op::Frame(f) => {
                    w.u8(f.op());
                    f.write(&mut w);
                }
                Op::Hello(m, c) => {
                    w.u8(k(0)).u8(*m).u8(*c);
                }
                Op::Feed(n) => {
                    w.u8(k(1)).u16(*n);
                }
                Op::Advance(ms) => {
                    w.u8(k(2)).u16(*ms);
                }
                Op::Transmit => {
                    w.u8(k(3));
                }
                Op::Open { name, dir, cap, ty } => {
                    w.u8(k(4)).u8(*name).u8(*dir).u8(*cap).u8(*ty);
                }
                Op::Accept(i, c) => {
                    w.u8(k(5)).u8(*i).u8(*c);
                }
                Op::Reject(i, c) => {
                    w.u8(k(6)).u8(*i).u8(*c);
                }
                Op::Send { chan, len, handles } => {
                    w.u8(k(7)).u8(*chan).u16(*len).u8(*handles);
                }
                Op::Credit {
                    chan,
                    grant,
                    taken,
                    urgent,
                } => {
                    w.u8(k(8))
                        .u8(*chan)
                        .u8(*grant)
                        .u8(*taken)
                        .u8(u8::from(*urgent));
                }
                Op::Rendezvous(i) => {
                    w.u8(k(9)).u8(*i);
                }
                Op::Close(i, c) => {
                    w.u8(k(10)).u8(*i).u8(*c);
                }
                Op::Goodbye => {
                    w.u8(k(11));
                }
                Op::Abort => {
                    w.u8(k(12));
                }
                Op::Forget(i) => {
                    w.u8(k(13)).u8(*i);
                }
                Op::Repeat(n) => {
                    w.u8(k(14)).u8(*n);
                }
            }
        }
        w.out
    }
}
