//! The handshake: each side sends one fixed-size `HELLO` before any frame.
//!
//! ```text
//! +----------------+-------------+----------+----------+------------------+------------------+-----------------+
//! | magic: 8 bytes | version:u16 | codec:u8 | flags:u8 | max_message: u32 | max_channels:u32 | max_handles:u32 |
//! +----------------+-------------+----------+----------+------------------+------------------+-----------------+
//! +----------------+---------------+
//! | token: 16 bytes| position: u64 |
//! +----------------+---------------+
//! ```
//!
//! The last two fields and the flags are the session's resume part
//! ([`ResumeInfo`]): a dialer that may redial asks for a resumable session
//! ([`FLAG_RESUMABLE`]) and an acceptor that keeps sessions offers one with
//! its secret token; a dialer that redials presents the token with how much
//! of the acceptor's frame stream it received ([`FLAG_RESUME`]), and the
//! acceptor, after its usual hello, answers with a second one: its own
//! position, or a refusal ([`FLAG_REFUSED`]).
//!
//! The magic comes first so that a peer speaking TLS, HTTP or anything else
//! is told apart from its first byte, before any length is trusted.

use bytes::{BufMut, BytesMut};

use super::ProtoError;

/// The first bytes on every netchan connection. The high first byte keeps
/// text protocols (HTTP, SMTP) and TLS (`0x16`) from matching.
pub const MAGIC: [u8; 8] = *b"\x89NETCHAN";
/// The wire version this build speaks. Bumped on every incompatible change.
pub const PROTOCOL_VERSION: u16 = 4;
/// Size of the `HELLO` in bytes.
pub const HELLO_LEN: usize = 48;

/// Hello flag: the dialer asks for a resumable session (it may redial);
/// in the acceptor's hello, it offers one and `token` is its secret. The
/// session is resumable when both hellos carry the flag.
pub const FLAG_RESUMABLE: u8 = 0b0000_0001;
/// Hello flag: the dialer resumes the session `token`, having received
/// `position` bytes of the acceptor's frame stream; in the acceptor's
/// answer, the session resumed and `position` is what it received.
pub const FLAG_RESUME: u8 = 0b0000_0010;
/// Hello flag, acceptor only: the session `token` cannot be resumed
/// (unknown, expired, or the peer restarted); the acceptor closes.
pub const FLAG_REFUSED: u8 = 0b0000_0100;

/// The resume part of a `HELLO`: flags, the session's secret token, and
/// a position in the peer's frame stream.
///
/// ```
/// use netchan::proto::hello::{ResumeInfo, FLAG_RESUMABLE};
/// let r = ResumeInfo { flags: FLAG_RESUMABLE, token: [0; 16], position: 0 };
/// assert!(r.is(FLAG_RESUMABLE));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResumeInfo {
    /// [`FLAG_RESUMABLE`], [`FLAG_RESUME`], [`FLAG_REFUSED`] or none.
    pub flags: u8,
    /// The session's secret token (zero when there is none).
    pub token: [u8; 16],
    /// Bytes of the peer's frame stream received (when resuming).
    pub position: u64,
}

impl ResumeInfo {
    /// Whether `flag` is set.
    pub fn is(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// Message codecs a connection may agree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CodecId {
    /// bincode 2, standard configuration (varint integers, little-endian).
    Bincode = 1,
    /// postcard 1.
    Postcard = 2,
}

impl CodecId {
    /// The codec with wire id `b`, if known.
    pub fn from_u8(b: u8) -> Option<CodecId> {
        match b {
            1 => Some(CodecId::Bincode),
            2 => Some(CodecId::Postcard),
            _ => None,
        }
    }
}

/// The contents of a `HELLO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version.
    pub version: u16,
    /// Message codec.
    pub codec: CodecId,
    /// The largest message this side accepts.
    pub max_message_len: u32,
    /// The most channels this side keeps open on the connection.
    pub max_channels: u32,
    /// The most channel handles this side accepts inside one message
    /// (zero: none).
    pub max_handles: u32,
}

impl Hello {
    /// Appends the `HELLO` bytes to `dst` (no resume part).
    pub fn encode(&self, dst: &mut BytesMut) {
        self.encode_with(&ResumeInfo::default(), dst);
    }

    /// Appends the `HELLO` bytes with resume part `r` to `dst`.
    pub fn encode_with(&self, r: &ResumeInfo, dst: &mut BytesMut) {
        dst.put_slice(&MAGIC);
        dst.put_u16_le(self.version);
        dst.put_u8(self.codec as u8);
        dst.put_u8(r.flags);
        dst.put_u32_le(self.max_message_len);
        dst.put_u32_le(self.max_channels);
        dst.put_u32_le(self.max_handles);
        dst.put_slice(&r.token);
        dst.put_u64_le(r.position);
    }

    /// Reads the peer's `HELLO` from the front of `src`, ignoring its
    /// resume part (see [`decode_with`](Self::decode_with)).
    pub fn decode(src: &mut BytesMut, ours: &Hello) -> Result<Option<Hello>, ProtoError> {
        Ok(Hello::decode_with(src, ours)?.map(|(h, _)| h))
    }

    /// Reads the peer's `HELLO` and its resume part from the front of `src`.
    ///
    /// Fails as soon as the bytes present cannot be the start of a netchan
    /// hello, so a stray client is refused before it sends 48 bytes. The
    /// version is checked before the rest: a peer of another version gets a
    /// version error even if the remaining fields changed meaning.
    pub fn decode_with(
        src: &mut BytesMut,
        ours: &Hello,
    ) -> Result<Option<(Hello, ResumeInfo)>, ProtoError> {
        let n = src.len().min(MAGIC.len());
        if src[..n] != MAGIC[..n] {
            // 0x16: a TLS handshake record; 0x15: a TLS alert.
            if matches!(src.first(), Some(0x16 | 0x15)) {
                return Err(ProtoError::PeerSpeaksTls);
            }
            return Err(ProtoError::NotNetchan);
        }
        if src.len() >= 10 {
            let version = u16::from_le_bytes([src[8], src[9]]);
            if version != PROTOCOL_VERSION {
                return Err(ProtoError::VersionMismatch {
                    ours: PROTOCOL_VERSION,
                    theirs: version,
                });
            }
        }
        if src.len() < HELLO_LEN {
            return Ok(None);
        }
        let b = src.split_to(HELLO_LEN);
        let codec = CodecId::from_u8(b[10]).ok_or(ProtoError::UnknownCodec(b[10]))?;
        if codec != ours.codec {
            return Err(ProtoError::CodecMismatch {
                ours: ours.codec,
                theirs: codec,
            });
        }
        let flags = b[11];
        if flags & !(FLAG_RESUMABLE | FLAG_RESUME | FLAG_REFUSED) != 0 {
            return Err(ProtoError::BadHello("unknown flags"));
        }
        let max_message_len = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
        let max_channels = u32::from_le_bytes([b[16], b[17], b[18], b[19]]);
        let max_handles = u32::from_le_bytes([b[20], b[21], b[22], b[23]]);
        if max_message_len == 0 || max_channels == 0 {
            return Err(ProtoError::BadHello("zero limit"));
        }
        let mut token = [0; 16];
        token.copy_from_slice(&b[24..40]);
        let position = u64::from_le_bytes([b[40], b[41], b[42], b[43], b[44], b[45], b[46], b[47]]);
        Ok(Some((
            Hello {
                version: PROTOCOL_VERSION,
                codec,
                max_message_len,
                max_channels,
                max_handles,
            },
            ResumeInfo {
                flags,
                token,
                position,
            },
        )))
    }
}
