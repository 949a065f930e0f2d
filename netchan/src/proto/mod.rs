//! The sans-IO protocol core.
//!
//! Bytes and the current time come in, frames and [`Event`]s come out; no
//! socket, task or clock is touched here, so every state transition can be
//! tested by feeding bytes (see `Pair` in the tests). The driver
//! (`crate::driver`) runs one [`Connection`] over a real byte stream.
//!
//! * [`frame`]: frame types and their byte layout.
//! * [`hello`]: the handshake.
//! * `chan`: one channel's entry: its state machine and role.
//! * `chunk`: large messages split on the way out, reassembled on the way in.
//! * `handles`: the handle table of a message carrying channels.
//! * `flow`: flow control and delivery confirmation, every credit and
//!   acknowledgement rule for one channel.
//! * `replay`: what a resumable session keeps to write again after a
//!   broken link.
//! * [`conn`]: one connection: channel table, chunking, keepalive; applies
//!   `flow`'s rules and turns them into frames.

mod chan;
mod chunk;
pub mod conn;
pub(crate) mod flow;
pub mod frame;
mod handles;
pub mod hello;
#[cfg(test)]
mod model_tests;
mod replay;
#[cfg(test)]
mod tests;

pub use conn::{
    ChannelCounters, Connection, Counters, Event, HandleDesc, HandleKind, Limits, OnSmall, Role,
    SMALL_MESSAGE, Side, Take,
};
pub use flow::ACK_DELAY;
pub use frame::{ChanId, CloseCode, Dir, Frame, FrameCodec, Kind, RejectCode};
pub use hello::{CodecId, Hello, MAGIC, PROTOCOL_VERSION};

/// A protocol violation or failed handshake. Any of these ends the
/// connection (netchan tolerates no protocol errors), except
/// [`ResumeUnanswered`](ProtoError::ResumeUnanswered), which ends only an
/// attempt to resume.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// The peer's first bytes are not a netchan hello.
    #[error(
        "peer does not speak netchan (wrong magic bytes; is it TLS, HTTP or another protocol?)"
    )]
    NotNetchan,
    /// The peer started a TLS handshake (or sent a TLS alert) where a
    /// plaintext netchan hello was expected.
    #[error(
        "peer speaks TLS but this side does not: enable TLS on both sides (Config::tls_server / Config::tls_client), or neither"
    )]
    PeerSpeaksTls,
    /// The peer speaks another protocol version.
    #[error("protocol version mismatch: this side speaks {ours}, the peer speaks {theirs}")]
    VersionMismatch {
        /// Our version.
        ours: u16,
        /// The peer's version.
        theirs: u16,
    },
    /// The peer named a codec this build does not know.
    #[error("peer uses unknown message codec {0}")]
    UnknownCodec(u8),
    /// The two sides chose different codecs.
    #[error(
        "codec mismatch: this side uses {ours:?}, the peer uses {theirs:?}; configure both alike"
    )]
    CodecMismatch {
        /// Our codec.
        ours: CodecId,
        /// The peer's codec.
        theirs: CodecId,
    },
    /// The hello was malformed.
    #[error("malformed hello: {0}")]
    BadHello(&'static str),
    /// A frame kind byte this version does not know.
    #[error("unknown frame kind 0x{0:02x}")]
    UnknownFrameKind(u8),
    /// A frame header declared more payload than its kind allows.
    #[error("{kind:?} frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// The frame kind.
        kind: Kind,
        /// Declared length.
        len: usize,
        /// Limit for that kind.
        max: usize,
    },
    /// A frame whose payload does not parse.
    #[error("malformed {kind:?} frame: {what}")]
    Malformed {
        /// The frame kind.
        kind: Kind,
        /// What was wrong.
        what: &'static str,
    },
    /// A frame named a channel that is not open.
    #[error("frame for unknown channel {0}")]
    UnknownChannel(ChanId),
    /// A frame that is not allowed in the channel's current state.
    #[error("unexpected {kind:?} frame on channel {chan}: {what}")]
    Unexpected {
        /// The frame kind.
        kind: Kind,
        /// The channel.
        chan: ChanId,
        /// Why it is not allowed.
        what: &'static str,
    },
    /// The peer allocated a channel id it may not use.
    #[error("peer used invalid channel id {0} (wrong side or reused)")]
    BadChannelId(ChanId),
    /// The peer granted more credit than the channel's capacity allows.
    #[error("credit overflow on channel {0}")]
    CreditOverflow(ChanId),
    /// The peer sent a message without credit.
    #[error("peer sent on channel {0} without credit")]
    NoCredit(ChanId),
    /// A message larger than this side accepts.
    #[error("incoming message of at least {len} bytes exceeds the limit of {max}")]
    MessageTooLarge {
        /// Bytes received so far.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The peer opened more channels, or put more handles in a message, than allowed.
    #[error("peer exceeded the limit of {limit} {what}")]
    LimitExceeded {
        /// Which limit.
        what: &'static str,
        /// Its value.
        limit: usize,
    },
    /// The peer stopped reading while making this side answer it.
    #[error("peer is not reading its replies ({0} bytes waiting)")]
    PeerNotReading(usize),
    /// Nothing arrived within the keepalive deadline.
    #[error("peer silent for {0:?}; connection presumed dead")]
    KeepaliveTimeout(std::time::Duration),
    /// A frame arrived after the peer's goodbye.
    #[error("frame after goodbye")]
    AfterGoodbye,
    /// The peer refused to resume the session: it no longer knows it (its
    /// grace period passed, it restarted, or the token is wrong).
    #[error(
        "the peer refused to resume the session (it expired, the peer restarted, or the token is wrong): connect a new session"
    )]
    ResumeRefused,
    /// Resuming, the dialer read the acceptor's hello on the new
    /// connection and then, where the answer to its resume belongs,
    /// something else: the acceptor never got the whole resume hello (the
    /// path closed that direction) and started a new session there. Only
    /// this attempt failed: the session stays suspended, and the next
    /// attempt may resume it.
    #[error(
        "the peer did not answer the resume on the new connection (it did not receive the resume hello); trying again"
    )]
    ResumeUnanswered,
    /// A resuming peer asked for bytes this side no longer holds, or
    /// claimed bytes never sent.
    #[error("resume position outside what was sent and kept; the session cannot resume")]
    ResumeOutOfRange,
    /// The byte stream failed underneath a [`FrameCodec`].
    #[error("transport error: {0}")]
    Io(String),
}

impl From<std::io::Error> for ProtoError {
    fn from(e: std::io::Error) -> ProtoError {
        ProtoError::Io(e.to_string())
    }
}
