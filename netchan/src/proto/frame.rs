//! Frames as plain values, and their byte layout.
//!
//! Every frame is a 10-byte header followed by a payload:
//!
//! ```text
//! +-----------+---------+----------+-------------+---------------------+
//! | len: u32  | kind:u8 | flags:u8 | chan: u32   | payload (len bytes) |
//! +-----------+---------+----------+-------------+---------------------+
//! ```
//!
//! All integers are little-endian. `docs/PROTOCOL.md` is the normative
//! description; this module must stay in step with it. Nothing here touches
//! sockets or channel state: it only turns bytes into [`Frame`]s and back.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::ProtoError;

/// Size of every frame header in bytes.
pub const HEADER_LEN: usize = 10;
/// Largest payload of a control frame (everything except `DATA`): names,
/// type names and reasons are short; a peer that claims more is hostile.
pub const MAX_CONTROL_PAYLOAD: usize = 4096;
/// Longest channel name accepted in `OPEN`.
pub const MAX_NAME_LEN: usize = 1024;
/// Longest reason text sent in `REJECT`, `CLOSE` or `GOODBYE`; longer texts
/// are cut at a character boundary.
pub const MAX_REASON_LEN: usize = 1024;

/// `DATA` flag: this chunk ends a message.
pub const FLAG_END: u8 = 0b0000_0001;
/// `DATA` flag: the message starts with a handle table (first chunk only).
pub const FLAG_HANDLES: u8 = 0b0000_0010;

/// A channel identifier. Ids are never reused within one connection; the
/// side that dialled allocates odd ids, the side that accepted even ids, and
/// id 0 names the connection itself.
pub type ChanId = u32;

/// Frame kinds as they appear on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Ask the peer for one of its named exports.
    Open = 0x01,
    /// The named export exists and matches.
    Accept = 0x02,
    /// The named export does not exist or does not match.
    Reject = 0x03,
    /// One chunk of a message.
    Data = 0x04,
    /// Flow control: receive slots granted and messages taken.
    Credit = 0x05,
    /// This side is done with a channel.
    Close = 0x06,
    /// This side is done with the connection.
    Goodbye = 0x07,
    /// Keepalive probe.
    Ping = 0x08,
    /// Keepalive answer.
    Pong = 0x09,
    /// Resumable sessions only: how many bytes of the peer's frame stream
    /// this side has received (see `docs/PROTOCOL.md`, "Resume").
    Ack = 0x10,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            0x01 => Kind::Open,
            0x02 => Kind::Accept,
            0x03 => Kind::Reject,
            0x04 => Kind::Data,
            0x05 => Kind::Credit,
            0x06 => Kind::Close,
            0x07 => Kind::Goodbye,
            0x08 => Kind::Ping,
            0x09 => Kind::Pong,
            0x10 => Kind::Ack,
            _ => return None,
        })
    }
}

/// Which way values flow on a channel, seen from the side that sends `OPEN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Dir {
    /// The opener receives: it imports an exported sender.
    OpenerReceives = 0,
    /// The opener sends: it imports an exported receiver.
    OpenerSends = 1,
}

/// Why a channel or connection was closed, as carried by `CLOSE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CloseCode {
    /// The sending side finished (last sender dropped): a clean end.
    Done = 0,
    /// `hangup` was called on the channel's name.
    Hangup = 1,
    /// The receiving side went away; further values would be dropped.
    ReceiverGone = 2,
    /// A local error ended the channel (for example an undecodable value).
    Error = 3,
}

impl CloseCode {
    fn from_u8(b: u8) -> Option<CloseCode> {
        Some(match b {
            0 => CloseCode::Done,
            1 => CloseCode::Hangup,
            2 => CloseCode::ReceiverGone,
            3 => CloseCode::Error,
            _ => return None,
        })
    }
}

/// Why an `OPEN` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RejectCode {
    /// No export of that name.
    NoSuchName = 0,
    /// The export exists but flows the other way.
    WrongDirection = 1,
    /// The export carries another message type.
    WrongType = 2,
    /// The peer has too many channels open.
    TooManyChannels = 3,
    /// The export was closed.
    Closed = 4,
}

impl RejectCode {
    fn from_u8(b: u8) -> Option<RejectCode> {
        Some(match b {
            0 => RejectCode::NoSuchName,
            1 => RejectCode::WrongDirection,
            2 => RejectCode::WrongType,
            3 => RejectCode::TooManyChannels,
            4 => RejectCode::Closed,
            _ => return None,
        })
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `OPEN`: the sender allocated `chan` and asks for export `name`.
    Open {
        /// The new channel.
        chan: ChanId,
        /// Direction seen from the opener.
        dir: Dir,
        /// The opener's receive capacity when it receives (0 otherwise).
        capacity: u32,
        /// Export name.
        name: String,
        /// Message type name, module paths stripped.
        type_name: String,
    },
    /// `ACCEPT`.
    Accept {
        /// The channel from `OPEN`.
        chan: ChanId,
        /// The acceptor's receive capacity when it receives (0 otherwise).
        capacity: u32,
    },
    /// `REJECT`.
    Reject {
        /// The channel from `OPEN`.
        chan: ChanId,
        /// Machine-readable cause.
        code: RejectCode,
        /// Human-readable cause.
        reason: String,
    },
    /// `DATA`: one chunk of one message.
    Data {
        /// Channel the message travels on.
        chan: ChanId,
        /// [`FLAG_END`] and [`FLAG_HANDLES`].
        flags: u8,
        /// The chunk.
        payload: Bytes,
    },
    /// `CREDIT`: sent by a channel's receiving side.
    Credit {
        /// The channel.
        chan: ChanId,
        /// New receive slots: one per message the receiving program took.
        grant: u32,
        /// Cumulative delivery confirmation: messages received on the
        /// channel so far (in its buffer; for a rendezvous channel, taken
        /// by the receiving program). Never decreases.
        received: u64,
    },
    /// `CLOSE`.
    Close {
        /// The channel.
        chan: ChanId,
        /// Why.
        code: CloseCode,
        /// Human-readable detail, may be empty.
        reason: String,
    },
    /// `GOODBYE`: no more frames follow from this side.
    Goodbye {
        /// Human-readable detail, may be empty.
        reason: String,
    },
    /// `PING`.
    Ping(u64),
    /// `PONG`.
    Pong(u64),
    /// `ACK`: the bytes of the peer's frame stream received so far (only
    /// on a resumable session; not itself counted in the stream).
    Ack(u64),
}

/// Payload bytes of a `CREDIT` frame: grant (`u32`), received (`u64`).
pub const CREDIT_LEN: usize = 12;

/// Largest payload accepted for a frame of `kind`: `max_data` for `DATA`
/// (the receiver's message limit: the sender's chunk size is its own
/// choice), [`MAX_CONTROL_PAYLOAD`] for the rest.
fn max_payload(kind: Kind, max_data: usize) -> usize {
    match kind {
        Kind::Data => max_data,
        _ => MAX_CONTROL_PAYLOAD,
    }
}

fn put_header(dst: &mut BytesMut, len: usize, kind: Kind, flags: u8, chan: ChanId) {
    // Callers bound `len` by the chunk size or MAX_CONTROL_PAYLOAD.
    dst.put_u32_le(len as u32);
    dst.put_u8(kind as u8);
    dst.put_u8(flags);
    dst.put_u32_le(chan);
}

/// Writes a header into `dst[at..at + HEADER_LEN]` (already reserved).
pub(crate) fn patch_header(
    dst: &mut [u8],
    at: usize,
    len: usize,
    kind: Kind,
    flags: u8,
    chan: ChanId,
) {
    let h = &mut dst[at..at + HEADER_LEN];
    h[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    h[4] = kind as u8;
    h[5] = flags;
    h[6..10].copy_from_slice(&chan.to_le_bytes());
}

/// Cuts `s` to at most `max` bytes at a character boundary.
pub(crate) fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn put_str16(dst: &mut BytesMut, s: &str) {
    dst.put_u16_le(s.len() as u16);
    dst.put_slice(s.as_bytes());
}

impl Frame {
    /// Appends this frame's bytes to `dst`.
    ///
    /// Strings longer than the wire allows are cut (reasons) or must have
    /// been refused earlier (names): see [`MAX_NAME_LEN`].
    pub fn encode(&self, dst: &mut BytesMut) {
        match self {
            Frame::Open {
                chan,
                dir,
                capacity,
                name,
                type_name,
            } => {
                let name = clip(name, MAX_NAME_LEN);
                let type_name = clip(type_name, MAX_CONTROL_PAYLOAD - MAX_NAME_LEN - 16);
                let len = 1 + 4 + 2 + name.len() + 2 + type_name.len();
                put_header(dst, len, Kind::Open, 0, *chan);
                dst.put_u8(*dir as u8);
                dst.put_u32_le(*capacity);
                put_str16(dst, name);
                put_str16(dst, type_name);
            }
            Frame::Accept { chan, capacity } => {
                put_header(dst, 4, Kind::Accept, 0, *chan);
                dst.put_u32_le(*capacity);
            }
            Frame::Reject { chan, code, reason } => {
                let reason = clip(reason, MAX_REASON_LEN);
                put_header(dst, 1 + reason.len(), Kind::Reject, 0, *chan);
                dst.put_u8(*code as u8);
                dst.put_slice(reason.as_bytes());
            }
            Frame::Data {
                chan,
                flags,
                payload,
            } => {
                put_header(dst, payload.len(), Kind::Data, *flags, *chan);
                dst.put_slice(payload);
            }
            Frame::Credit {
                chan,
                grant,
                received,
            } => {
                put_header(dst, CREDIT_LEN, Kind::Credit, 0, *chan);
                dst.put_u32_le(*grant);
                dst.put_u64_le(*received);
            }
            Frame::Close { chan, code, reason } => {
                let reason = clip(reason, MAX_REASON_LEN);
                put_header(dst, 1 + reason.len(), Kind::Close, 0, *chan);
                dst.put_u8(*code as u8);
                dst.put_slice(reason.as_bytes());
            }
            Frame::Goodbye { reason } => {
                let reason = clip(reason, MAX_REASON_LEN);
                put_header(dst, reason.len(), Kind::Goodbye, 0, 0);
                dst.put_slice(reason.as_bytes());
            }
            Frame::Ping(n) => {
                put_header(dst, 8, Kind::Ping, 0, 0);
                dst.put_u64_le(*n);
            }
            Frame::Pong(n) => {
                put_header(dst, 8, Kind::Pong, 0, 0);
                dst.put_u64_le(*n);
            }
            Frame::Ack(n) => {
                put_header(dst, 8, Kind::Ack, 0, 0);
                dst.put_u64_le(*n);
            }
        }
    }

    /// Decodes one frame from the front of `src`; `DATA` payloads may be up
    /// to `max_data` bytes.
    ///
    /// Returns `Ok(None)` when more bytes are needed (nothing is consumed
    /// then), and an error for anything malformed. The declared length is
    /// checked against the limit for its kind before any byte of the
    /// payload is buffered, so a hostile header pins no memory.
    pub fn decode(src: &mut BytesMut, max_data: usize) -> Result<Option<Frame>, ProtoError> {
        if src.len() < HEADER_LEN {
            // Reject an unknown kind as soon as its byte is here.
            if src.len() > 4 && Kind::from_u8(src[4]).is_none() {
                return Err(ProtoError::UnknownFrameKind(src[4]));
            }
            return Ok(None);
        }
        let len = u32::from_le_bytes([src[0], src[1], src[2], src[3]]) as usize;
        let kind = Kind::from_u8(src[4]).ok_or(ProtoError::UnknownFrameKind(src[4]))?;
        let max = max_payload(kind, max_data);
        if len > max {
            return Err(ProtoError::FrameTooLarge { kind, len, max });
        }
        if src.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let flags = src[5];
        let chan = u32::from_le_bytes([src[6], src[7], src[8], src[9]]);
        src.advance(HEADER_LEN);
        let mut p = src.split_to(len);
        let malformed = |what: &'static str| ProtoError::Malformed { kind, what };
        if kind != Kind::Data && flags != 0 {
            return Err(malformed("non-zero flags"));
        }
        let conn_level = matches!(kind, Kind::Goodbye | Kind::Ping | Kind::Pong | Kind::Ack);
        if conn_level != (chan == 0) {
            return Err(malformed("channel id"));
        }
        let frame = match kind {
            Kind::Open => {
                if p.remaining() < 5 {
                    return Err(malformed("short payload"));
                }
                let dir = match p.get_u8() {
                    0 => Dir::OpenerReceives,
                    1 => Dir::OpenerSends,
                    _ => return Err(malformed("direction")),
                };
                let capacity = p.get_u32_le();
                let name = get_str16(&mut p).ok_or_else(|| malformed("name"))?;
                let type_name = get_str16(&mut p).ok_or_else(|| malformed("type name"))?;
                if name.len() > MAX_NAME_LEN {
                    return Err(malformed("name too long"));
                }
                if p.has_remaining() {
                    return Err(malformed("trailing bytes"));
                }
                Frame::Open {
                    chan,
                    dir,
                    capacity,
                    name,
                    type_name,
                }
            }
            Kind::Accept => {
                if p.remaining() != 4 {
                    return Err(malformed("payload length"));
                }
                Frame::Accept {
                    chan,
                    capacity: p.get_u32_le(),
                }
            }
            Kind::Reject => {
                if p.remaining() < 1 {
                    return Err(malformed("short payload"));
                }
                let code = RejectCode::from_u8(p.get_u8()).ok_or_else(|| malformed("code"))?;
                let reason = utf8(p).ok_or_else(|| malformed("reason"))?;
                Frame::Reject { chan, code, reason }
            }
            Kind::Data => {
                if flags & !(FLAG_END | FLAG_HANDLES) != 0 {
                    return Err(malformed("unknown flags"));
                }
                Frame::Data {
                    chan,
                    flags,
                    payload: p.freeze(),
                }
            }
            Kind::Credit => {
                if p.remaining() != CREDIT_LEN {
                    return Err(malformed("payload length"));
                }
                Frame::Credit {
                    chan,
                    grant: p.get_u32_le(),
                    received: p.get_u64_le(),
                }
            }
            Kind::Close => {
                if p.remaining() < 1 {
                    return Err(malformed("short payload"));
                }
                let code = CloseCode::from_u8(p.get_u8()).ok_or_else(|| malformed("code"))?;
                let reason = utf8(p).ok_or_else(|| malformed("reason"))?;
                Frame::Close { chan, code, reason }
            }
            Kind::Goodbye => Frame::Goodbye {
                reason: utf8(p).ok_or_else(|| malformed("reason"))?,
            },
            Kind::Ping | Kind::Pong | Kind::Ack => {
                if p.remaining() != 8 {
                    return Err(malformed("payload length"));
                }
                let n = p.get_u64_le();
                match kind {
                    Kind::Ping => Frame::Ping(n),
                    Kind::Pong => Frame::Pong(n),
                    _ => Frame::Ack(n),
                }
            }
        };
        Ok(Some(frame))
    }
}

fn get_str16(p: &mut BytesMut) -> Option<String> {
    if p.remaining() < 2 {
        return None;
    }
    let n = p.get_u16_le() as usize;
    if p.remaining() < n {
        return None;
    }
    utf8(p.split_to(n))
}

fn utf8(b: BytesMut) -> Option<String> {
    String::from_utf8(b.to_vec()).ok()
}

/// A codec for [`tokio_util::codec`]: frames in, frames out, lengths bounded.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    chunk_size: usize,
}

impl FrameCodec {
    /// A codec accepting `DATA` chunks of at most `chunk_size` bytes.
    pub fn new(chunk_size: usize) -> FrameCodec {
        FrameCodec { chunk_size }
    }
}

impl tokio_util::codec::Decoder for FrameCodec {
    type Item = Frame;
    type Error = ProtoError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ProtoError> {
        Frame::decode(src, self.chunk_size)
    }
}

impl tokio_util::codec::Encoder<Frame> for FrameCodec {
    type Error = ProtoError;

    fn encode(&mut self, item: Frame, dst: &mut BytesMut) -> Result<(), ProtoError> {
        item.encode(dst);
        Ok(())
    }
}
