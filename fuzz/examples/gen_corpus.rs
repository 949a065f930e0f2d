//! Writes the seed corpus: a handful of small, valid inputs per target,
//! into `fuzz/corpus/<target>/` (files named by content hash, so running
//! it again changes nothing).
//!
//! `cargo run --example gen_corpus` (from `fuzz/`), or `fuzz/run.sh seeds`.

use std::path::{Path, PathBuf};

use arbitrary::{Arbitrary, Unstructured};
use bytes::{Bytes, BytesMut};
use netchan::proto::{CloseCode, CodecId, Dir, Frame, Hello, PROTOCOL_VERSION, RejectCode, Side};
use netchan_fuzz::conn_script::{ConnInput, Op};
use netchan_fuzz::frames::{Body, Ctx, Name, PeerFrame, Sel, Table};
use netchan_fuzz::script::{AppOp, CfgSel, FramesInput, HelloMode, Script, Step, StreamInput};
use netchan_fuzz::stream::{IoStep, Plan};
use netchan_fuzz::types::Tree;

fn hash(b: &[u8]) -> u64 {
    // FNV-1a: stable across runs and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for x in b {
        h ^= u64::from(*x);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

struct Out {
    root: PathBuf,
    total: usize,
}

impl Out {
    fn put(&mut self, target: &str, bytes: &[u8]) {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).expect("create corpus dir");
        let path = dir.join(format!("seed-{:016x}", hash(bytes)));
        std::fs::write(&path, bytes).expect("write seed");
        self.total += bytes.len();
    }
}

fn frame(f: &Frame) -> Vec<u8> {
    let mut b = BytesMut::new();
    f.encode(&mut b);
    b.to_vec()
}

fn hello(codec: CodecId) -> Vec<u8> {
    let mut b = BytesMut::new();
    Hello {
        version: PROTOCOL_VERSION,
        codec,
        max_message_len: 16 << 20,
        max_channels: 1024,
        max_handles: 128,
    }
    .encode(&mut b);
    b.to_vec()
}

fn sample_frames() -> Vec<Frame> {
    vec![
        Frame::Open {
            chan: 1,
            dir: Dir::OpenerReceives,
            capacity: 8,
            name: "jobs".into(),
            type_name: "u32".into(),
        },
        Frame::Accept {
            chan: 1,
            capacity: 0,
        },
        Frame::Reject {
            chan: 3,
            code: RejectCode::WrongType,
            reason: "Vec<Job>".into(),
        },
        Frame::Data {
            chan: 1,
            flags: 1,
            payload: Bytes::from_static(b"\x02hi"),
        },
        // A DATA frame with a handle table (PROTOCOL.md section 16).
        Frame::Data {
            chan: 1,
            flags: 3,
            payload: Bytes::from_static(&[1, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 0]),
        },
        Frame::Credit {
            chan: 2,
            grant: 4,
            received: 1,
        },
        Frame::Close {
            chan: 1,
            code: CloseCode::Done,
            reason: String::new(),
        },
        Frame::Goodbye {
            reason: "bye".into(),
        },
        Frame::Ping(1),
        Frame::Pong(1),
    ]
}

fn tree() -> Tree {
    Tree::Node(
        Box::new(Tree::List(vec![Tree::Leaf(1), Tree::Text("hi".into())])),
        Box::new(Tree::Wrap(Box::new(Tree::Leaf(7)))),
    )
}

fn open(name: u8, ty: u8, dir: u8, capacity: u32) -> PeerFrame {
    PeerFrame::Open {
        chan: Sel::PeerNew,
        dir,
        capacity,
        name: Name::Known(name),
        ty: Name::Known(ty),
    }
}

fn data(chan: Sel, body: Body) -> PeerFrame {
    PeerFrame::Data {
        chan,
        flags: 0,
        table: Table::Auto,
        body,
        split: 0,
    }
}

fn credit(chan: Sel, grant: u32, received: u32) -> PeerFrame {
    PeerFrame::Credit {
        chan,
        grant,
        received,
    }
}

// Indexes into `types::NAMES` and `types::type_names()`.
const N_TREE: u8 = 0;
const N_NESTED: u8 = 1;
const N_CARRIER: u8 = 2;
const N_OUT: u8 = 3;
const T_TREE: u8 = 0;
const T_NESTED: u8 = 1;
const T_CARRIER: u8 = 2;
const T_U32: u8 = 3;
const T_STRING: u8 = 4;

/// Peer conversations with the exports of the harness (the local side is
/// the acceptor; the peer allocates odd ids).
fn conversations() -> Vec<Vec<PeerFrame>> {
    vec![
        // Trees, shallow and deep, chunked, then a clean close.
        vec![
            open(N_TREE, T_TREE, 1, 0),
            data(Sel::PeerPrev(0), Body::Tree(tree())),
            data(Sel::PeerPrev(0), Body::Deep(64)),
            PeerFrame::Data {
                chan: Sel::PeerPrev(0),
                flags: 0,
                table: Table::Auto,
                body: Body::Tree(tree()),
                split: 2,
            },
            PeerFrame::Close {
                chan: Sel::PeerPrev(0),
                code: 0,
                reason: vec![],
            },
            PeerFrame::Goodbye { reason: vec![] },
        ],
        // Nested Vecs, one with a lying length prefix.
        vec![
            open(N_NESTED, T_NESTED, 1, 0),
            data(
                Sel::PeerPrev(0),
                Body::Nested(vec![vec![
                    (1, vec![-1, 2], Some("x".into())),
                    (2, vec![], None),
                ]]),
            ),
            data(Sel::PeerPrev(0), Body::NestedClaim(1 << 30)),
        ],
        // A carrier: handles for a Sender<u32> (id 3), a Receiver<String>
        // (id 5) and an extra sender (id 7); then the peer feeds the
        // receiver and confirms the reply.
        vec![
            open(N_CARRIER, T_CARRIER, 1, 0),
            data(
                Sel::PeerPrev(0),
                Body::Carrier {
                    id: 9,
                    reply_cap: 2,
                    feed_cap: 2,
                    extra: true,
                },
            ),
            data(Sel::PeerPrev(1), Body::Str(b"fed".to_vec())),
            credit(Sel::PeerPrev(2), 1, 1),
            PeerFrame::Close {
                chan: Sel::PeerPrev(1),
                code: 0,
                reason: vec![],
            },
        ],
        // Import the exported sender, take its values.
        vec![
            open(N_OUT, T_U32, 0, 4),
            PeerFrame::Ping(5),
            credit(Sel::PeerPrev(0), 3, 3),
            PeerFrame::Close {
                chan: Sel::PeerPrev(0),
                code: 2,
                reason: b"receiver gone".to_vec(),
            },
        ],
        // Wrong names, types and directions, then a bad handle table.
        vec![
            open(9, T_TREE, 1, 0),
            open(N_TREE, T_STRING, 1, 0),
            open(N_TREE, T_TREE, 0, 4),
            open(N_TREE, T_TREE, 1, 0),
            PeerFrame::Data {
                chan: Sel::PeerPrev(0),
                flags: 0,
                table: Table::Entries(vec![(0, Sel::PeerNew, 1), (1, Sel::PeerNew, 0)]),
                body: Body::Tree(Tree::Leaf(1)),
                split: 0,
            },
        ],
    ]
}

fn wire(frames: &[PeerFrame], codec: CodecId) -> Vec<u8> {
    let mut ctx = Ctx::new(Side::Acceptor, codec);
    let mut out = Vec::new();
    for f in frames {
        f.wire(&mut ctx, &mut out);
    }
    out
}

/// Exported receivers have capacity 4 (bits 6-7 = 2).
const CAP4: u8 = 2 << 6;

fn check_frames(bytes: &[u8], want: &Script) {
    let got = FramesInput::arbitrary_take_rest(Unstructured::new(bytes)).expect("parse");
    assert_eq!(&got.0, want, "session_frames seed does not parse back");
}

fn check_stream(bytes: &[u8], want: &Script) {
    let got = StreamInput::arbitrary_take_rest(Unstructured::new(bytes)).expect("parse");
    assert_eq!(&got.0, want, "session_stream seed does not parse back");
}

fn script(cfg: u8, side: Side, steps: Vec<Step>) -> Script {
    Script {
        cfg: CfgSel(cfg),
        side,
        hello: HelloMode::Valid {
            max_message_len: 0,
            max_channels: 0,
        },
        reads: Plan::default(),
        writes: Plan::default(),
        steps,
    }
}

/// Scripts where the local program imports from the peer.
fn import_scripts() -> Vec<Vec<Step>> {
    use Step::{App, Frame as F, Yield};
    vec![
        // import_receiver: the peer accepts and sends two values.
        vec![
            App(AppOp::ImportReceiver(4)),
            F(PeerFrame::Accept {
                chan: Sel::Ours(0),
                capacity: 0,
            }),
            F(data(Sel::Ours(0), Body::U32(1))),
            F(data(Sel::Ours(0), Body::U32(2))),
            Yield,
            F(PeerFrame::Close {
                chan: Sel::Ours(0),
                code: 0,
                reason: vec![],
            }),
        ],
        // import_sender: a small and a chunked message, credit, goodbye.
        vec![
            App(AppOp::ImportSender(vec![0, 70])),
            F(PeerFrame::Accept {
                chan: Sel::Ours(0),
                capacity: 2,
            }),
            Yield,
            F(credit(Sel::Ours(0), 2, 2)),
            Yield,
            F(PeerFrame::Goodbye {
                reason: b"done".to_vec(),
            }),
        ],
        // A carrier with local channel halves goes to the peer, which
        // answers on the sender and grants credit on the receiver.
        vec![
            App(AppOp::ImportCarrier(3)),
            F(PeerFrame::Accept {
                chan: Sel::Ours(0),
                capacity: 1,
            }),
            Yield,
            F(data(Sel::Ours(1), Body::U32(42))),
            F(credit(Sel::Ours(2), 1, 0)),
            F(credit(Sel::Ours(0), 1, 1)),
            Yield,
        ],
        // import_receiver_n, a rendezvous import, hangup, drain, close.
        vec![
            App(AppOp::ImportReceiverN(2, 1)),
            App(AppOp::ImportReceiver(0)),
            F(PeerFrame::Accept {
                chan: Sel::Ours(0),
                capacity: 0,
            }),
            F(PeerFrame::Reject {
                chan: Sel::Ours(1),
                code: 0,
                reason: b"no".to_vec(),
            }),
            F(data(Sel::Ours(0), Body::Tree(Tree::Leaf(3)))),
            App(AppOp::SendOut(5)),
            App(AppOp::Hangup(0)),
            App(AppOp::Drain),
            App(AppOp::Close),
        ],
    ]
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut out = Out { root, total: 0 };

    // frame_decode: each kind alone, and all in one stream.
    let frames = sample_frames();
    let mut all = vec![3u8];
    for f in &frames {
        let b = frame(f);
        let mut seed = vec![3u8];
        seed.extend_from_slice(&b);
        out.put("frame_decode", &seed);
        all.extend_from_slice(&b);
    }
    out.put("frame_decode", &all);

    // hello: both codecs, a hello with frames behind it, strangers.
    for (sel, codec) in [(0u8, CodecId::Bincode), (1, CodecId::Postcard)] {
        let mut s = vec![sel];
        s.extend_from_slice(&hello(codec));
        out.put("hello", &s);
    }
    let mut s = vec![0u8];
    s.extend_from_slice(&hello(CodecId::Bincode));
    s.extend_from_slice(&frame(&Frame::Ping(1)));
    out.put("hello", &s);
    out.put("hello", b"\x00\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03");
    out.put("hello", b"\x00GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut v2 = vec![0u8];
    v2.extend_from_slice(&hello(CodecId::Bincode));
    v2[9] = 2;
    out.put("hello", &v2);

    // message_decode: conversations after the hello, both codecs.
    for conv in conversations() {
        for cfg in [CAP4, CAP4 | CfgSel::POSTCARD] {
            let mut s = vec![cfg];
            s.extend_from_slice(&wire(&conv, CfgSel(cfg).codec()));
            out.put("message_decode", &s);
        }
    }
    let mut s = vec![0u8]; // rendezvous exports
    s.extend_from_slice(&wire(&conversations()[0], CodecId::Bincode));
    out.put("message_decode", &s);

    // session_frames: the same conversations as scripts, and imports.
    let mut scripts = Vec::new();
    for conv in conversations() {
        scripts.push(script(
            CAP4,
            Side::Acceptor,
            conv.into_iter().map(Step::Frame).collect(),
        ));
    }
    for steps in import_scripts() {
        scripts.push(script(CAP4 | CfgSel::CHUNK, Side::Acceptor, steps));
    }
    let mut small = script(
        (1 << 6) | CfgSel::SMALL,
        Side::Acceptor,
        vec![
            Step::Frame(open(N_TREE, T_TREE, 1, 0)),
            Step::Repeat(12),
            Step::Frame(PeerFrame::Ping(1)),
            Step::Repeat(100),
        ],
    );
    scripts.push(small.clone());
    for s in &scripts {
        let b = s.write(false);
        check_frames(&b, s);
        out.put("session_frames", &b);
    }

    // session_stream: transport plans, both sides, timers.
    let plans = [
        (
            Plan {
                steps: vec![IoStep::Chunk(1), IoStep::Yield, IoStep::Chunk(7)],
            },
            Plan {
                steps: vec![IoStep::Chunk(3), IoStep::Yield],
            },
        ),
        (
            Plan {
                steps: vec![IoStep::Chunk(64), IoStep::Sleep(1)],
            },
            Plan {
                steps: vec![IoStep::Chunk(25), IoStep::Chunk(1000)],
            },
        ),
        (
            Plan {
                steps: vec![IoStep::Chunk(30), IoStep::Fail],
            },
            Plan {
                steps: vec![IoStep::Chunk(40), IoStep::Zero],
            },
        ),
    ];
    let mut stream_scripts = Vec::new();
    for (i, s) in scripts.iter().enumerate() {
        let mut s = s.clone();
        let (r, w) = plans[i % plans.len()].clone();
        s.reads = r;
        s.writes = w;
        stream_scripts.push(s);
    }
    // The dialer side (the peer allocates even ids: same selectors).
    let mut d = script(CAP4, Side::Dialer, import_scripts()[0].clone());
    d.reads = plans[0].0.clone();
    stream_scripts.push(d);
    // Keepalive: silence until the peer is presumed dead.
    stream_scripts.push(script(
        CAP4 | CfgSel::KEEPALIVE,
        Side::Acceptor,
        vec![Step::Sleep(15), Step::Sleep(15), Step::Sleep(6)],
    ));
    // A stalled handshake.
    let mut h = script(
        CAP4 | CfgSel::HANDSHAKE,
        Side::Dialer,
        vec![Step::Sleep(8), Step::Frame(PeerFrame::Ping(1))],
    );
    h.hello = HelloMode::None;
    stream_scripts.push(h);
    // A hello that arrives as raw bytes, byte by byte.
    small.hello = HelloMode::None;
    small
        .steps
        .insert(0, Step::Frame(PeerFrame::Raw(hello(CodecId::Bincode))));
    small.reads = Plan {
        steps: vec![IoStep::Chunk(1)],
    };
    stream_scripts.push(small);
    for s in &stream_scripts {
        let b = s.write(true);
        check_stream(&b, s);
        out.put("session_stream", &b);
    }

    // connection: scripted sans-IO conversations.
    let conn = |side, limits, ops| ConnInput {
        side,
        codec: CodecId::Bincode,
        limits,
        ops,
    };
    let conns = vec![
        // A peer imports our receiver, sends a tree, closes, says goodbye.
        conn(
            Side::Acceptor,
            0xff,
            vec![
                Op::Hello(2, 3),
                Op::Frame(open(N_TREE, T_TREE, 1, 0)),
                Op::Feed(0),
                Op::Accept(0, 4),
                Op::Transmit,
                Op::Frame(data(Sel::PeerPrev(0), Body::Tree(tree()))),
                Op::Feed(5),
                Op::Feed(0),
                Op::Credit {
                    chan: 0,
                    grant: 1,
                    taken: 1,
                    urgent: true,
                },
                Op::Transmit,
                Op::Frame(PeerFrame::Close {
                    chan: Sel::PeerPrev(0),
                    code: 0,
                    reason: vec![],
                }),
                Op::Frame(PeerFrame::Goodbye { reason: vec![] }),
                Op::Feed(0),
                Op::Transmit,
            ],
        ),
        // We import the peer's receiver and send, with handles, chunked.
        conn(
            Side::Dialer,
            0xff,
            vec![
                Op::Hello(2, 3),
                Op::Feed(0),
                Op::Open {
                    name: 5,
                    dir: 1,
                    cap: 0,
                    ty: T_STRING,
                },
                Op::Transmit,
                Op::Frame(PeerFrame::Accept {
                    chan: Sel::Ours(0),
                    capacity: 2,
                }),
                Op::Feed(0),
                Op::Send {
                    chan: 0,
                    len: 3,
                    handles: 0b0000_0110,
                },
                Op::Send {
                    chan: 0,
                    len: 20_000,
                    handles: 0,
                },
                Op::Transmit,
                Op::Transmit,
                Op::Frame(credit(Sel::Ours(0), 1, 1)),
                Op::Feed(0),
                Op::Close(0, 0),
                Op::Transmit,
                Op::Advance(16_000),
                Op::Transmit,
                Op::Advance(50_000),
            ],
        ),
        // Ping flood, split feeds.
        conn(
            Side::Acceptor,
            0x7f,
            vec![
                Op::Hello(1, 1),
                Op::Frame(PeerFrame::Ping(1)),
                Op::Repeat(50),
                Op::Feed(7),
                Op::Feed(100),
                Op::Feed(0),
                Op::Transmit,
            ],
        ),
        // Too many opens for small limits; handles in a message.
        conn(
            Side::Acceptor,
            0b0100_1000,
            vec![
                Op::Hello(1, 2),
                Op::Frame(open(N_TREE, T_TREE, 1, 0)),
                Op::Repeat(4),
                Op::Feed(0),
                Op::Accept(0, 2),
                Op::Frame(PeerFrame::Data {
                    chan: Sel::PeerPrev(4),
                    flags: 0,
                    table: Table::Entries(vec![(0, Sel::PeerNew, 1), (1, Sel::PeerNew, 1)]),
                    body: Body::U32(0),
                    split: 1,
                }),
                Op::Feed(0),
                Op::Transmit,
                Op::Goodbye,
                Op::Transmit,
            ],
        ),
    ];
    for c in &conns {
        let b = c.write();
        let got = ConnInput::arbitrary_take_rest(Unstructured::new(&b)).expect("parse");
        assert_eq!(&got, c, "connection seed does not parse back");
        out.put("connection", &b);
    }

    eprintln!(
        "wrote seeds under {} ({} bytes)",
        out.root.display(),
        out.total
    );
}
