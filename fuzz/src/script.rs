//! The structured input of the session targets: a config, transport
//! plans, and a sequence of steps (peer frames, pauses, local actions).

use arbitrary::{Arbitrary, Unstructured};
use netchan::proto::{CodecId, Side};

use crate::frames::{FRAME_OPS, PeerFrame};
use crate::grammar::{Reader, Writer};
use crate::stream::Plan;

/// Session settings, one bit (or two) each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CfgSel(pub u8);

impl CfgSel {
    /// postcard instead of bincode.
    pub const POSTCARD: u8 = 1 << 0;
    /// Small limits: 256-byte messages, 8 channels, 2 pending opens, 4
    /// handles per message.
    pub const SMALL: u8 = 1 << 1;
    /// Keepalive every 10 ms (dead after 30 ms).
    pub const KEEPALIVE: u8 = 1 << 2;
    /// Handshake timeout of 5 ms.
    pub const HANDSHAKE: u8 = 1 << 3;
    /// Close timeout of 20 ms (else 2 s).
    pub const CLOSE: u8 = 1 << 4;
    /// Chunk size 4,096 (the minimum) instead of 64 KiB.
    pub const CHUNK: u8 = 1 << 5;

    /// The codec.
    pub fn codec(self) -> CodecId {
        if self.0 & Self::POSTCARD != 0 {
            CodecId::Postcard
        } else {
            CodecId::Bincode
        }
    }

    /// Capacity of the exported receivers (bits 6 and 7): 0, 1, 4 or 64.
    pub fn capacity(self) -> usize {
        [0, 1, 4, 64][(self.0 >> 6) as usize]
    }

    /// The netchan config.
    pub fn config(self) -> netchan::Config {
        use std::time::Duration;
        let mut c = netchan::Config::default().close_timeout(Duration::from_secs(2));
        if self.0 & Self::POSTCARD != 0 {
            c = c.postcard();
        }
        if self.0 & Self::SMALL != 0 {
            c = c
                .max_message_len(256)
                .max_channels(8)
                .max_pending_opens(2)
                .max_handles(4);
        }
        if self.0 & Self::KEEPALIVE != 0 {
            c = c.keepalive(Duration::from_millis(10));
        }
        if self.0 & Self::HANDSHAKE != 0 {
            c = c.handshake_timeout(Duration::from_millis(5));
        }
        if self.0 & Self::CLOSE != 0 {
            c = c.close_timeout(Duration::from_millis(20));
        }
        if self.0 & Self::CHUNK != 0 {
            c = c.chunk_size(4096);
        }
        c
    }

    /// The chunk size [`config`](Self::config) sets.
    pub fn chunk_size(self) -> usize {
        if self.0 & Self::CHUNK != 0 {
            4096
        } else {
            64 << 10
        }
    }
}

/// What the local program does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppOp {
    /// `import_receiver::<u32>("peer_out", capacity)`, then receive.
    ImportReceiver(u8),
    /// `import_receiver_n::<Tree>("peer_tree", capacity, n)`, then receive.
    ImportReceiverN(u8, u8),
    /// `import_sender::<String>("peer_in")`, then send strings of these
    /// lengths (in KiB, so larger ones are chunked).
    ImportSender(Vec<u8>),
    /// `import_sender::<Carrier>("peer_carrier")`, send a carrier with
    /// local channel halves, then use them.
    ImportCarrier(u8),
    /// Send this value on the exported sender `"out"`.
    SendOut(u32),
    /// `hangup` of a name (index into [`crate::types::NAMES`]).
    Hangup(u8),
    /// Drop an exported receiver (0 tree, 1 nested, 2 carrier).
    DropExport(u8),
    /// `close()` (in a task).
    Close,
    /// `drain(None)` (in a task).
    Drain,
    /// `try_send` this value on the exported sender `"out"`.
    TrySendOut(u32),
}

impl AppOp {
    fn parse(r: &mut Reader<'_, '_>) -> AppOp {
        match r.u8() % 10 {
            0 => AppOp::ImportReceiver(r.u8()),
            1 => AppOp::ImportReceiverN(r.u8(), r.u8()),
            2 => {
                let n = r.u8() % 4;
                AppOp::ImportSender((0..n).map(|_| r.u8()).collect())
            }
            3 => AppOp::ImportCarrier(r.u8()),
            4 => AppOp::SendOut(r.u32()),
            5 => AppOp::Hangup(r.u8()),
            6 => AppOp::DropExport(r.u8()),
            7 => AppOp::Close,
            8 => AppOp::Drain,
            _ => AppOp::TrySendOut(r.u32()),
        }
    }

    fn write(&self, w: &mut Writer) {
        match self {
            AppOp::ImportReceiver(c) => {
                w.u8(0).u8(*c);
            }
            AppOp::ImportReceiverN(c, n) => {
                w.u8(1).u8(*c).u8(*n);
            }
            AppOp::ImportSender(v) => {
                w.u8(2).u8(v.len().min(3) as u8);
                for x in v.iter().take(3) {
                    w.u8(*x);
                }
            }
            AppOp::ImportCarrier(c) => {
                w.u8(3).u8(*c);
            }
            AppOp::SendOut(v) => {
                w.u8(4).u32(*v);
            }
            AppOp::Hangup(i) => {
                w.u8(5).u8(*i);
            }
            AppOp::DropExport(i) => {
                w.u8(6).u8(*i);
            }
            AppOp::Close => {
                w.u8(7);
            }
            AppOp::Drain => {
                w.u8(8);
            }
            AppOp::TrySendOut(v) => {
                w.u8(9).u32(*v);
            }
        }
    }
}

/// One step of a session script.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The peer sends this.
    Frame(PeerFrame),
    /// Let the session's tasks run.
    Yield,
    /// Sleep this many milliseconds of real time (within the budget).
    Sleep(u8),
    /// The local program acts.
    App(AppOp),
    /// The peer's byte stream ends here.
    End,
    /// Send the previous frame again this many times (new ids each time
    /// for [`crate::frames::Sel::PeerNew`]).
    Repeat(u8),
}

const STEP_FRAME_END: u8 = FRAME_OPS; // ops below are frames
const OP_YIELD: u8 = STEP_FRAME_END;
const OP_SLEEP: u8 = STEP_FRAME_END + 1;
const OP_APP: u8 = STEP_FRAME_END + 2;
const OP_END: u8 = STEP_FRAME_END + 3;
const OP_REPEAT: u8 = STEP_FRAME_END + 4;
const STEP_OPS: u8 = STEP_FRAME_END + 5;

impl Step {
    /// Reads one step.
    pub fn parse(r: &mut Reader<'_, '_>) -> Step {
        let op = r.u8() % STEP_OPS;
        match op {
            OP_YIELD => Step::Yield,
            OP_SLEEP => Step::Sleep(r.u8()),
            OP_APP => Step::App(AppOp::parse(r)),
            OP_END => Step::End,
            OP_REPEAT => Step::Repeat(r.u8()),
            _ => Step::Frame(PeerFrame::parse(op, r)),
        }
    }

    /// Writes one step.
    pub fn write(&self, w: &mut Writer) {
        match self {
            Step::Frame(f) => {
                w.u8(f.op());
                f.write(w);
            }
            Step::Yield => {
                w.u8(OP_YIELD);
            }
            Step::Sleep(ms) => {
                w.u8(OP_SLEEP).u8(*ms);
            }
            Step::App(a) => {
                w.u8(OP_APP);
                a.write(w);
            }
            Step::End => {
                w.u8(OP_END);
            }
            Step::Repeat(n) => {
                w.u8(OP_REPEAT).u8(*n);
            }
        }
    }
}

/// How the peer's hello is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelloMode {
    /// A valid hello with these limits, before the steps.
    Valid {
        /// Announced message limit (0 is replaced by 16 MiB).
        max_message_len: u32,
        /// Announced channel limit (0 is replaced by 1,024).
        max_channels: u32,
    },
    /// No hello: the steps bring one (or not).
    None,
}

/// The input of `session_frames` and `session_stream`.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    /// Session settings.
    pub cfg: CfgSel,
    /// The local side.
    pub side: Side,
    /// The peer's hello.
    pub hello: HelloMode,
    /// How reads are split and paused.
    pub reads: Plan,
    /// How writes are split and paused.
    pub writes: Plan,
    /// What happens.
    pub steps: Vec<Step>,
}

impl Script {
    /// Reads a script. `transport`: the input starts with side, hello mode
    /// and the read and write plans (`session_stream`); otherwise the
    /// session is an acceptor with a plain stream (`session_frames`).
    pub fn parse(r: &mut Reader<'_, '_>, transport: bool) -> Script {
        let cfg = CfgSel(r.u8());
        let (side, hello, reads, writes) = if transport {
            let flags = r.u8();
            let side = if flags & 1 == 0 {
                Side::Acceptor
            } else {
                Side::Dialer
            };
            let hello = if flags & 2 == 0 {
                HelloMode::Valid {
                    max_message_len: r.u32(),
                    max_channels: r.u32(),
                }
            } else {
                HelloMode::None
            };
            (side, hello, Plan::parse(r), Plan::parse(r))
        } else {
            let hello = HelloMode::Valid {
                max_message_len: r.u32(),
                max_channels: r.u32(),
            };
            (Side::Acceptor, hello, Plan::default(), Plan::default())
        };
        let mut steps = Vec::new();
        while !r.is_empty() && steps.len() < 4096 {
            steps.push(Step::parse(r));
        }
        Script {
            cfg,
            side,
            hello,
            reads,
            writes,
            steps,
        }
    }

    /// Writes a script (the inverse of [`parse`](Self::parse)).
    pub fn write(&self, transport: bool) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(self.cfg.0);
        let hello = |w: &mut Writer| {
            if let HelloMode::Valid {
                max_message_len,
                max_channels,
            } = &self.hello
            {
                w.u32(*max_message_len).u32(*max_channels);
            }
        };
        if transport {
            let mut flags = 0;
            if self.side == Side::Dialer {
                flags |= 1;
            }
            if self.hello == HelloMode::None {
                flags |= 2;
            }
            w.u8(flags);
            hello(&mut w);
            self.reads.write(&mut w);
            self.writes.write(&mut w);
        } else {
            hello(&mut w);
        }
        for s in &self.steps {
            s.write(&mut w);
        }
        w.out
    }
}

/// `session_frames`' input: a [`Script`] without transport plans.
#[derive(Debug, Clone, PartialEq)]
pub struct FramesInput(pub Script);

impl<'a> Arbitrary<'a> for FramesInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(FramesInput(Script::parse(&mut Reader::new(u), false)))
    }
    fn arbitrary_take_rest(mut u: Unstructured<'a>) -> arbitrary::Result<Self> {
        Self::arbitrary(&mut u)
    }
}

/// `session_stream`'s input: a [`Script`] with transport plans.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamInput(pub Script);

impl<'a> Arbitrary<'a> for StreamInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(StreamInput(Script::parse(&mut Reader::new(u), true)))
    }
    fn arbitrary_take_rest(mut u: Unstructured<'a>) -> arbitrary::Result<Self> {
        Self::arbitrary(&mut u)
    }
}
