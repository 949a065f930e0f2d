//! A fuzzer-controlled peer, frame by frame.
//!
//! [`PeerFrame`] is what the fake peer sends: any frame kind with fields
//! that are mostly valid (channel ids picked relative to what the peer and
//! the local side allocated, export and type names picked from the ones
//! the harness uses, message bodies that are real encodings of the
//! representative types) but may be anything. [`PeerFrame::wire`] turns it
//! into bytes; [`PeerFrame::parse`] / [`PeerFrame::write`] map it to and
//! from the byte grammar of [`crate::grammar`].

use netchan::proto::{CodecId, MAGIC};

use crate::grammar::{Reader, Writer};
use crate::types::{self, CarrierWire, Nested, Tree};

/// `DATA` flag: last chunk of a message.
pub const FLAG_END: u8 = 0x01;
/// `DATA` flag: the message starts with a handle table.
pub const FLAG_HANDLES: u8 = 0x02;

/// How a frame names its channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sel {
    /// A new id allocated by the peer (the next of its parity).
    PeerNew,
    /// An id the peer allocated before (0 = the latest).
    PeerPrev(u8),
    /// An id the local side allocated (by index, in allocation order).
    Ours(u8),
    /// Any id.
    Raw(u32),
}

/// An export or type name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    /// One of the names the harness knows, by index.
    Known(u8),
    /// Any bytes (maybe not UTF-8).
    Raw(Vec<u8>),
}

/// A [`Tree`] built from the grammar (depth-limited).
pub type TreeSpec = Tree;

/// A message body.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// Any bytes.
    Raw(Vec<u8>),
    /// A `u32`.
    U32(u32),
    /// A `String` (lossy UTF-8 of the bytes).
    Str(Vec<u8>),
    /// A [`Tree`].
    Tree(TreeSpec),
    /// A [`Tree`] nested this deep (written without recursion).
    Deep(u32),
    /// A [`Nested`].
    Nested(Nested),
    /// A [`Nested`] whose innermost length prefix claims this many elements.
    NestedClaim(u32),
    /// A [`crate::types::Carrier`]: body plus a matching handle table.
    Carrier {
        /// The id field.
        id: u64,
        /// Capacity in the `reply` entry.
        reply_cap: u8,
        /// Capacity in the `feed` entry.
        feed_cap: u8,
        /// Whether `extra` is set.
        extra: bool,
    },
}

/// The handle table of a `DATA` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Table {
    /// None, or the one a [`Body::Carrier`] needs.
    Auto,
    /// These entries: (kind, channel, capacity).
    Entries(Vec<(u8, Sel, u32)>),
    /// These bytes as the table.
    Raw(Vec<u8>),
}

/// One thing the fake peer sends.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerFrame {
    /// `OPEN`.
    Open {
        /// Channel.
        chan: Sel,
        /// Direction byte (0 or 1 are valid).
        dir: u8,
        /// Capacity.
        capacity: u32,
        /// Export name.
        name: Name,
        /// Type name.
        ty: Name,
    },
    /// `ACCEPT`.
    Accept {
        /// Channel.
        chan: Sel,
        /// Capacity.
        capacity: u32,
    },
    /// `REJECT`.
    Reject {
        /// Channel.
        chan: Sel,
        /// Code byte (0..=4 are valid).
        code: u8,
        /// Reason bytes.
        reason: Vec<u8>,
    },
    /// One message as one or more `DATA` frames.
    Data {
        /// Channel.
        chan: Sel,
        /// Below 0x80: flags computed from the table and chunking; from
        /// 0x80: `flags & 0x7f` on every chunk.
        flags: u8,
        /// Handle table.
        table: Table,
        /// Body.
        body: Body,
        /// Cut the message into `split % 8 + 1` chunks.
        split: u8,
    },
    /// `CREDIT`.
    Credit {
        /// Channel.
        chan: Sel,
        /// New slots.
        grant: u32,
        /// Messages received through (cumulative; sent as a `u64`).
        received: u32,
    },
    /// `CLOSE`.
    Close {
        /// Channel.
        chan: Sel,
        /// Code byte (0..=3 are valid).
        code: u8,
        /// Reason bytes.
        reason: Vec<u8>,
    },
    /// `GOODBYE`.
    Goodbye {
        /// Reason bytes.
        reason: Vec<u8>,
    },
    /// `PING`.
    Ping(u64),
    /// `PONG`.
    Pong(u64),
    /// Any bytes.
    Raw(Vec<u8>),
    /// A (second) hello.
    Hello {
        /// Version.
        version: u16,
        /// Codec byte.
        codec: u8,
        /// Flags byte.
        flags: u8,
        /// Announced message limit.
        max_message_len: u32,
        /// Announced channel limit.
        max_channels: u32,
    },
}

/// Number of [`PeerFrame`] opcodes.
pub const FRAME_OPS: u8 = 11;

/// What the fake peer knows about channel ids.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Codec of message bodies.
    pub codec: CodecId,
    next_peer: u32,
    peer_ids: Vec<u32>,
    /// Ids the local side allocated, in order.
    pub ours: Vec<u32>,
}

impl Ctx {
    /// A peer facing a local side that is `local` (its ids are known in
    /// advance: 1, 3, 5… for a dialer, 2, 4, 6… for an acceptor).
    pub fn new(local: netchan::proto::Side, codec: CodecId) -> Ctx {
        let (ours_first, peer_first) = match local {
            netchan::proto::Side::Dialer => (1, 2),
            netchan::proto::Side::Acceptor => (2, 1),
        };
        Ctx {
            codec,
            next_peer: peer_first,
            peer_ids: Vec::new(),
            ours: (0..32).map(|i| ours_first + 2 * i).collect(),
        }
    }

    /// Resolves a channel selector, allocating for [`Sel::PeerNew`].
    pub fn chan(&mut self, s: &Sel) -> u32 {
        match s {
            Sel::PeerNew => {
                let id = self.next_peer;
                self.next_peer = self.next_peer.wrapping_add(2);
                self.peer_ids.push(id);
                id
            }
            Sel::PeerPrev(i) => {
                if self.peer_ids.is_empty() {
                    self.next_peer
                } else {
                    let n = self.peer_ids.len();
                    self.peer_ids[n - 1 - (*i as usize % n)]
                }
            }
            Sel::Ours(i) => {
                if self.ours.is_empty() {
                    0
                } else {
                    self.ours[*i as usize % self.ours.len()]
                }
            }
            Sel::Raw(x) => *x,
        }
    }
}

fn name_bytes(n: &Name, table: &[String]) -> Vec<u8> {
    match n {
        Name::Known(i) => table[*i as usize % table.len()].as_bytes().to_vec(),
        Name::Raw(b) => b.clone(),
    }
}

fn put_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, chan: u32) {
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&chan.to_le_bytes());
}

fn put_str16(out: &mut Vec<u8>, b: &[u8]) {
    let b = &b[..b.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(b.len() as u16).to_le_bytes());
    out.extend_from_slice(b);
}

impl Body {
    /// The encoded body and, for [`Body::Carrier`], its handle table as
    /// (kind, capacity) pairs, each to get a new peer id.
    fn encode(&self, codec: CodecId) -> (Vec<u8>, Vec<(u8, u32)>) {
        match self {
            Body::Raw(b) => (b.clone(), vec![]),
            Body::U32(v) => (types::encode(codec, v), vec![]),
            Body::Str(b) => (
                types::encode(codec, &String::from_utf8_lossy(b).into_owned()),
                vec![],
            ),
            Body::Tree(t) => (types::encode(codec, t), vec![]),
            Body::Deep(d) => (types::deep_tree(*d as usize), vec![]),
            Body::Nested(n) => (types::encode(codec, n), vec![]),
            Body::NestedClaim(c) => (types::nested_claiming(codec, *c), vec![]),
            Body::Carrier {
                id,
                reply_cap,
                feed_cap,
                extra,
            } => {
                let w = CarrierWire {
                    id: *id,
                    reply: 0,
                    feed: 1,
                    extra: extra.then_some(2),
                };
                let mut t = vec![(0u8, u32::from(*reply_cap)), (1, u32::from(*feed_cap))];
                if *extra {
                    t.push((0, 1));
                }
                (types::encode(codec, &w), t)
            }
        }
    }
}

impl PeerFrame {
    /// Appends this frame's bytes, as the peer would send them.
    pub fn wire(&self, ctx: &mut Ctx, out: &mut Vec<u8>) {
        let tnames = types::type_names();
        let names: Vec<String> = types::NAMES.iter().map(|s| s.to_string()).collect();
        match self {
            PeerFrame::Open {
                chan,
                dir,
                capacity,
                name,
                ty,
            } => {
                let chan = ctx.chan(chan);
                let name = name_bytes(name, &names);
                let ty = name_bytes(ty, &tnames);
                let len = 1 + 4 + 2 + name.len() + 2 + ty.len();
                put_header(out, len, 0x01, 0, chan);
                out.push(*dir);
                out.extend_from_slice(&capacity.to_le_bytes());
                put_str16(out, &name);
                put_str16(out, &ty);
            }
            PeerFrame::Accept { chan, capacity } => {
                let chan = ctx.chan(chan);
                put_header(out, 4, 0x02, 0, chan);
                out.extend_from_slice(&capacity.to_le_bytes());
            }
            PeerFrame::Reject { chan, code, reason } => {
                let chan = ctx.chan(chan);
                put_header(out, 1 + reason.len(), 0x03, 0, chan);
                out.push(*code);
                out.extend_from_slice(reason);
            }
            PeerFrame::Data {
                chan,
                flags,
                table,
                body,
                split,
            } => {
                let chan = ctx.chan(chan);
                let (body, auto) = body.encode(ctx.codec);
                let mut msg = Vec::new();
                let has_table = match table {
                    Table::Auto if auto.is_empty() => false,
                    Table::Auto => {
                        msg.extend_from_slice(&(auto.len() as u16).to_le_bytes());
                        for (kind, cap) in auto {
                            msg.push(kind);
                            msg.extend_from_slice(&ctx.chan(&Sel::PeerNew).to_le_bytes());
                            msg.extend_from_slice(&cap.to_le_bytes());
                        }
                        true
                    }
                    Table::Entries(e) => {
                        msg.extend_from_slice(&(e.len() as u16).to_le_bytes());
                        for (kind, sel, cap) in e {
                            msg.push(*kind);
                            msg.extend_from_slice(&ctx.chan(sel).to_le_bytes());
                            msg.extend_from_slice(&cap.to_le_bytes());
                        }
                        true
                    }
                    Table::Raw(b) => {
                        msg.extend_from_slice(b);
                        true
                    }
                };
                msg.extend_from_slice(&body);
                let pieces = (*split % 8) as usize + 1;
                let step = msg.len().div_ceil(pieces).max(1);
                let mut chunks: Vec<&[u8]> = msg.chunks(step).collect();
                if chunks.is_empty() {
                    chunks.push(&[]);
                }
                let n = chunks.len();
                for (i, c) in chunks.into_iter().enumerate() {
                    let f = if *flags >= 0x80 {
                        *flags & 0x7f
                    } else {
                        let mut f = 0;
                        if i == 0 && has_table {
                            f |= FLAG_HANDLES;
                        }
                        if i + 1 == n {
                            f |= FLAG_END;
                        }
                        f
                    };
                    put_header(out, c.len(), 0x04, f, chan);
                    out.extend_from_slice(c);
                }
            }
            PeerFrame::Credit {
                chan,
                grant,
                received,
            } => {
                let chan = ctx.chan(chan);
                put_header(out, 12, 0x05, 0, chan);
                out.extend_from_slice(&grant.to_le_bytes());
                out.extend_from_slice(&u64::from(*received).to_le_bytes());
            }
            PeerFrame::Close { chan, code, reason } => {
                let chan = ctx.chan(chan);
                put_header(out, 1 + reason.len(), 0x06, 0, chan);
                out.push(*code);
                out.extend_from_slice(reason);
            }
            PeerFrame::Goodbye { reason } => {
                put_header(out, reason.len(), 0x07, 0, 0);
                out.extend_from_slice(reason);
            }
            PeerFrame::Ping(n) => {
                put_header(out, 8, 0x08, 0, 0);
                out.extend_from_slice(&n.to_le_bytes());
            }
            PeerFrame::Pong(n) => {
                put_header(out, 8, 0x09, 0, 0);
                out.extend_from_slice(&n.to_le_bytes());
            }
            PeerFrame::Raw(b) => out.extend_from_slice(b),
            PeerFrame::Hello {
                version,
                codec,
                flags,
                max_message_len,
                max_channels,
            } => {
                out.extend_from_slice(&MAGIC);
                out.extend_from_slice(&version.to_le_bytes());
                out.push(*codec);
                out.push(*flags);
                out.extend_from_slice(&max_message_len.to_le_bytes());
                out.extend_from_slice(&max_channels.to_le_bytes());
                // max_handles: not scripted, always the default.
                out.extend_from_slice(&128u32.to_le_bytes());
                // Token and position (wire version 4): none.
                out.extend_from_slice(&[0; 24]);
            }
        }
    }

    /// Reads the frame with opcode `op` (below [`FRAME_OPS`]).
    pub fn parse(op: u8, r: &mut Reader<'_, '_>) -> PeerFrame {
        match op {
            0 => PeerFrame::Open {
                chan: parse_sel(r),
                dir: r.u8(),
                capacity: r.u32(),
                name: parse_name(r),
                ty: parse_name(r),
            },
            1 => PeerFrame::Accept {
                chan: parse_sel(r),
                capacity: r.u32(),
            },
            2 => PeerFrame::Reject {
                chan: parse_sel(r),
                code: r.u8(),
                reason: r.bytes8(),
            },
            3 => PeerFrame::Data {
                chan: parse_sel(r),
                flags: r.u8(),
                table: parse_table(r),
                body: parse_body(r),
                split: r.u8(),
            },
            4 => PeerFrame::Credit {
                chan: parse_sel(r),
                grant: r.u32(),
                received: r.u32(),
            },
            5 => PeerFrame::Close {
                chan: parse_sel(r),
                code: r.u8(),
                reason: r.bytes8(),
            },
            6 => PeerFrame::Goodbye { reason: r.bytes8() },
            7 => PeerFrame::Ping(r.u64()),
            8 => PeerFrame::Pong(r.u64()),
            9 => PeerFrame::Raw(r.bytes16()),
            _ => PeerFrame::Hello {
                version: r.u16(),
                codec: r.u8(),
                flags: r.u8(),
                max_message_len: r.u32(),
                max_channels: r.u32(),
            },
        }
    }

    /// The opcode of this frame.
    pub fn op(&self) -> u8 {
        match self {
            PeerFrame::Open { .. } => 0,
            PeerFrame::Accept { .. } => 1,
            PeerFrame::Reject { .. } => 2,
            PeerFrame::Data { .. } => 3,
            PeerFrame::Credit { .. } => 4,
            PeerFrame::Close { .. } => 5,
            PeerFrame::Goodbye { .. } => 6,
            PeerFrame::Ping(_) => 7,
            PeerFrame::Pong(_) => 8,
            PeerFrame::Raw(_) => 9,
            PeerFrame::Hello { .. } => 10,
        }
    }

    /// Writes the fields after the opcode (the inverse of [`parse`](Self::parse)).
    pub fn write(&self, w: &mut Writer) {
        match self {
            PeerFrame::Open {
                chan,
                dir,
                capacity,
                name,
                ty,
            } => {
                write_sel(w, chan);
                w.u8(*dir).u32(*capacity);
                write_name(w, name);
                write_name(w, ty);
            }
            PeerFrame::Accept { chan, capacity } => {
                write_sel(w, chan);
                w.u32(*capacity);
            }
            PeerFrame::Reject { chan, code, reason } | PeerFrame::Close { chan, code, reason } => {
                write_sel(w, chan);
                w.u8(*code).bytes8(reason);
            }
            PeerFrame::Data {
                chan,
                flags,
                table,
                body,
                split,
            } => {
                write_sel(w, chan);
                w.u8(*flags);
                write_table(w, table);
                write_body(w, body);
                w.u8(*split);
            }
            PeerFrame::Credit {
                chan,
                grant,
                received,
            } => {
                write_sel(w, chan);
                w.u32(*grant).u32(*received);
            }
            PeerFrame::Goodbye { reason } => {
                w.bytes8(reason);
            }
            PeerFrame::Ping(n) | PeerFrame::Pong(n) => {
                w.u64(*n);
            }
            PeerFrame::Raw(b) => {
                w.bytes16(b);
            }
            PeerFrame::Hello {
                version,
                codec,
                flags,
                max_message_len,
                max_channels,
            } => {
                w.u16(*version)
                    .u8(*codec)
                    .u8(*flags)
                    .u32(*max_message_len)
                    .u32(*max_channels);
            }
        }
    }
}

fn parse_sel(r: &mut Reader<'_, '_>) -> Sel {
    match r.u8() % 4 {
        0 => Sel::PeerNew,
        1 => Sel::PeerPrev(r.u8()),
        2 => Sel::Ours(r.u8()),
        _ => Sel::Raw(r.u32()),
    }
}

fn write_sel(w: &mut Writer, s: &Sel) {
    match s {
        Sel::PeerNew => {
            w.u8(0);
        }
        Sel::PeerPrev(i) => {
            w.u8(1).u8(*i);
        }
        Sel::Ours(i) => {
            w.u8(2).u8(*i);
        }
        Sel::Raw(x) => {
            w.u8(3).u32(*x);
        }
    }
}

fn parse_name(r: &mut Reader<'_, '_>) -> Name {
    let t = r.u8();
    if t < 0x80 {
        Name::Known(t)
    } else {
        Name::Raw(r.bytes8())
    }
}

fn write_name(w: &mut Writer, n: &Name) {
    match n {
        Name::Known(i) => {
            w.u8(*i & 0x7f);
        }
        Name::Raw(b) => {
            w.u8(0x80).bytes8(b);
        }
    }
}

fn parse_table(r: &mut Reader<'_, '_>) -> Table {
    match r.u8() % 3 {
        0 => Table::Auto,
        1 => {
            let n = r.u8() % 8;
            Table::Entries((0..n).map(|_| (r.u8(), parse_sel(r), r.u32())).collect())
        }
        _ => Table::Raw(r.bytes8()),
    }
}

fn write_table(w: &mut Writer, t: &Table) {
    match t {
        Table::Auto => {
            w.u8(0);
        }
        Table::Entries(e) => {
            w.u8(1).u8(e.len().min(7) as u8);
            for (k, s, c) in e.iter().take(7) {
                w.u8(*k);
                write_sel(w, s);
                w.u32(*c);
            }
        }
        Table::Raw(b) => {
            w.u8(2).bytes8(b);
        }
    }
}

const MAX_TREE_DEPTH: usize = 6;

fn parse_tree(r: &mut Reader<'_, '_>, depth: usize) -> Tree {
    let tag = r.u8() % 5;
    if depth >= MAX_TREE_DEPTH {
        return Tree::Leaf(u32::from(tag));
    }
    match tag {
        0 => Tree::Leaf(r.u32()),
        1 => Tree::Wrap(Box::new(parse_tree(r, depth + 1))),
        2 => Tree::Node(
            Box::new(parse_tree(r, depth + 1)),
            Box::new(parse_tree(r, depth + 1)),
        ),
        3 => {
            let n = r.u8() % 4;
            Tree::List((0..n).map(|_| parse_tree(r, depth + 1)).collect())
        }
        _ => Tree::Text(String::from_utf8_lossy(&r.bytes8()).into_owned()),
    }
}

/// Writes a tree of depth at most 6 (deeper subtrees become leaves).
fn write_tree(w: &mut Writer, t: &Tree, depth: usize) {
    if depth >= MAX_TREE_DEPTH {
        w.u8(0);
        return;
    }
    match t {
        Tree::Leaf(v) => {
            w.u8(0).u32(*v);
        }
        Tree::Wrap(c) => {
            w.u8(1);
            write_tree(w, c, depth + 1);
        }
        Tree::Node(a, b) => {
            w.u8(2);
            write_tree(w, a, depth + 1);
            write_tree(w, b, depth + 1);
        }
        Tree::List(v) => {
            w.u8(3).u8(v.len().min(3) as u8);
            for c in v.iter().take(3) {
                write_tree(w, c, depth + 1);
            }
        }
        Tree::Text(s) => {
            w.u8(4).bytes8(s.as_bytes());
        }
    }
}

fn parse_nested(r: &mut Reader<'_, '_>) -> Nested {
    let n = r.u8() % 4;
    (0..n)
        .map(|_| {
            let m = r.u8() % 4;
            (0..m)
                .map(|_| {
                    let a = r.u8();
                    let k = r.u8() % 4;
                    let v = (0..k).map(|_| r.u64() as i64).collect();
                    let s = match r.u8() {
                        0 => None,
                        _ => Some(String::from_utf8_lossy(&r.bytes8()).into_owned()),
                    };
                    (a, v, s)
                })
                .collect()
        })
        .collect()
}

fn write_nested(w: &mut Writer, n: &Nested) {
    w.u8(n.len().min(3) as u8);
    for inner in n.iter().take(3) {
        w.u8(inner.len().min(3) as u8);
        for (a, v, s) in inner.iter().take(3) {
            w.u8(*a).u8(v.len().min(3) as u8);
            for x in v.iter().take(3) {
                w.u64(*x as u64);
            }
            match s {
                None => {
                    w.u8(0);
                }
                Some(s) => {
                    w.u8(1).bytes8(s.as_bytes());
                }
            }
        }
    }
}

fn parse_body(r: &mut Reader<'_, '_>) -> Body {
    match r.u8() % 8 {
        0 => Body::Raw(r.bytes16()),
        1 => Body::U32(r.u32()),
        2 => Body::Str(r.bytes8()),
        3 => Body::Tree(parse_tree(r, 0)),
        4 => Body::Deep(r.u32() % (1 << 20)),
        5 => Body::Nested(parse_nested(r)),
        6 => Body::NestedClaim(r.u32()),
        _ => Body::Carrier {
            id: r.u64(),
            reply_cap: r.u8(),
            feed_cap: r.u8(),
            extra: r.u8() & 1 == 1,
        },
    }
}

fn write_body(w: &mut Writer, b: &Body) {
    match b {
        Body::Raw(x) => {
            w.u8(0).bytes16(x);
        }
        Body::U32(v) => {
            w.u8(1).u32(*v);
        }
        Body::Str(s) => {
            w.u8(2).bytes8(s);
        }
        Body::Tree(t) => {
            w.u8(3);
            write_tree(w, t, 0);
        }
        Body::Deep(d) => {
            w.u8(4).u32(*d);
        }
        Body::Nested(n) => {
            w.u8(5);
            write_nested(w, n);
        }
        Body::NestedClaim(c) => {
            w.u8(6).u32(*c);
        }
        Body::Carrier {
            id,
            reply_cap,
            feed_cap,
            extra,
        } => {
            w.u8(7)
                .u64(*id)
                .u8(*reply_cap)
                .u8(*feed_cap)
                .u8(u8::from(*extra));
        }
    }
}
