//! One connection's protocol state: handshake, channel table, credit-based
//! flow control, chunking of large messages, keepalive.
//!
//! Inputs: [`Connection::poll_input`] (bytes read from the peer) and the
//! methods that the runtime calls for its users (`open`, `send_message`,
//! `credit_update`, `close`, `goodbye`, `handle_timeout`).
//! Outputs: [`Event`]s returned by `poll_input`, and bytes to write taken by
//! [`Connection::take_transmit`].
//!
//! Flow control and delivery confirmation (credit, sequence numbers,
//! cumulative acknowledgements) are ruled by `proto::flow`; this module
//! applies those rules to the channel table and turns their outcome into
//! frames.

use std::collections::VecDeque;

use rustc_hash::{FxHashMap as HashMap, FxHashSet};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::ProtoError;
pub use super::chan::Role;
use super::chan::{Chan, State};
use super::chunk::{Assembly, MIXED_QUIET, Pending, SOLO_CHUNKS, TRANSMIT_CHUNKS};
use super::flow::ACK_DELAY;
use super::frame::{
    ChanId, CloseCode, Dir, FLAG_END, FLAG_HANDLES, Frame, HEADER_LEN, Kind, RejectCode,
    patch_header,
};
pub use super::handles::{HandleDesc, HandleKind};
use super::handles::{parse_table, put_table, table_len};
use super::hello::{
    CodecId, FLAG_REFUSED, FLAG_RESUMABLE, FLAG_RESUME, HELLO_LEN, Hello, PROTOCOL_VERSION,
    ResumeInfo,
};
use super::replay::Replay;

/// Limits one side enforces. See `Config` for the user-facing defaults.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest message this side accepts (and announces in its hello).
    pub max_message_len: usize,
    /// Largest `DATA` payload; messages above it are split.
    pub chunk_size: usize,
    /// Open channels per connection (both sides' ids together).
    pub max_channels: usize,
    /// Peer-opened channels not yet accepted or rejected.
    pub max_pending_opens: usize,
    /// Channel handles inside one message.
    pub max_handles: usize,
    /// OPENs refused for the channel or pending-open limit before the
    /// peer is cut off: a few happen when both sides open at once near the
    /// limit; many are a flood.
    pub max_refused_opens: usize,
    /// Send a ping after this long without sending anything.
    pub keepalive: Duration,
    /// Presume the peer dead after this long without receiving anything.
    pub dead_after: Duration,
    /// Bytes of replies (pongs, rejects, close acks) the peer may leave
    /// unread before it is cut off.
    pub max_reply_backlog: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_message_len: 16 << 20,
            chunk_size: 64 << 10,
            max_channels: 1024,
            max_pending_opens: 128,
            max_handles: 128,
            max_refused_opens: 128,
            keepalive: Duration::from_secs(15),
            dead_after: Duration::from_secs(45),
            max_reply_backlog: 128 << 10,
        }
    }
}

/// Which side of the connection this is; decides channel id parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The side that dialled: allocates odd ids.
    Dialer,
    /// The side that accepted: allocates even ids.
    Acceptor,
}

/// What happened on the connection, as seen by the runtime above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The handshake completed.
    Ready(Hello),
    /// The peer asks for an export; answer with `accept` or `reject`.
    Open {
        /// The new channel.
        chan: ChanId,
        /// Direction, seen from the peer.
        dir: Dir,
        /// The peer's receive capacity when it receives.
        capacity: u32,
        /// Export name.
        name: String,
        /// Message type name.
        type_name: String,
    },
    /// Our `open` was accepted.
    Accepted {
        /// The channel.
        chan: ChanId,
        /// The peer's receive capacity when it receives.
        capacity: u32,
    },
    /// Our `open` was refused; the channel is gone.
    Rejected {
        /// The channel.
        chan: ChanId,
        /// Why.
        code: RejectCode,
        /// Detail.
        reason: String,
    },
    /// A whole message arrived on a receiving channel. Its handle table
    /// was parsed and each handle's channel registered.
    Message {
        /// The channel.
        chan: ChanId,
        /// The message bytes, handle table removed.
        data: Bytes,
        /// Handles carried by the message, in table order.
        handles: Vec<HandleDesc>,
    },
    /// A sending channel got credit or delivery confirmations (also sent
    /// when a channel this side closed gets its last confirmations or is
    /// released by the peer's CLOSE).
    Credit {
        /// The channel.
        chan: ChanId,
    },
    /// The peer closed a channel; it is gone from the table.
    Closed {
        /// The channel.
        chan: ChanId,
        /// Why.
        code: CloseCode,
        /// Detail.
        reason: String,
    },
    /// The peer said goodbye: no more frames will come.
    Goodbye {
        /// Detail.
        reason: String,
    },
    /// A resumable session's new link is up: the peer answered our resume
    /// hello, and what it had not received is queued to write again.
    Resumed,
}

/// Whether the session may survive a broken link, and where its link is.
///
/// ```text
/// Off                       (not resumable: a broken link ends the connection)
/// Pending ──peer hello without RESUMABLE──► Off
///   └──────peer hello with RESUMABLE──────► On(Up)
///
/// On: Up ──suspend──► Down ──begin_resume (dialer)──► Resuming ──peer resume hello──► Up
///                       └────accept_resume (acceptor)────────────────────────────────► Up
/// ```
///
/// An error or a goodbye ends the connection in any of these (`ConnState`).
#[derive(Debug)]
enum Resume {
    Off,
    /// This side offered (acceptor, with its token) or asked for (dialer)
    /// a resumable session; the peer's hello decides. What is sent
    /// meanwhile is logged already.
    Pending(Box<Resumable>),
    On(Box<Resumable>),
}

/// Where a resumable session's link is (see [`Resume`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    Up,
    Down,
    /// The dialer sent its resume hello and waits for the answer.
    Resuming,
}

/// The resume state of a resumable session (see `replay`).
#[derive(Debug)]
struct Resumable {
    token: [u8; 16],
    /// What this side sent and the peer has not acknowledged.
    log: Replay,
    /// Bytes of whole frames received from the peer's stream (its `ACK`s
    /// not counted).
    rx: u64,
    /// `rx` as last told to the peer.
    rx_reported: u64,
    /// When an `ACK` owed was first found waiting at a transmit: it leaves
    /// with the next write or `ACK_DELAY` after this.
    ack_since: Option<Instant>,
    link: LinkState,
    /// Written first at the next transmit and not logged: a resume hello,
    /// then the replay.
    prefix: Vec<Bytes>,
    /// Dialer, resuming: the acceptor's first hello (its offer, sent
    /// before it read ours) was read; its answer comes next.
    offer_seen: bool,
}

impl Resumable {
    /// This side's hello resuming the session: its token, and how much of
    /// the peer's stream it has.
    fn resume_hello(&self, ours: &Hello) -> Bytes {
        let mut hello = BytesMut::with_capacity(HELLO_LEN);
        ours.encode_with(
            &ResumeInfo {
                flags: FLAG_RESUME,
                token: self.token,
                position: self.rx,
            },
            &mut hello,
        );
        hello.freeze()
    }
}

/// The connection's receive-side state.
///
/// ```text
/// Handshaking ──peer hello──► Open ──peer GOODBYE──► Ended(None)
///      │                        │
///      └──── protocol error ────┴──────────────────► Ended(Some(error))
/// ```
///
/// Our own goodbye is tracked apart ([`Goodbye`]): it may be asked for in
/// any state and is sent after every pending chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ConnState {
    Handshaking,
    Open,
    Ended(Option<ProtoError>),
}

/// Our goodbye: `None` → `Queued` (behind pending chunks) → `Sent`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Goodbye {
    None,
    Queued(String),
    Sent,
}

/// Why a send could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendBlock {
    /// No credit: wait for [`Event::Credit`].
    NoCredit,
    /// The channel is closing or gone.
    Closed,
    /// The connection is ending.
    Ended,
}

/// Why a message could not be finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishError {
    /// The message is larger than the peer accepts.
    TooLarge {
        /// Encoded size.
        size: usize,
        /// The peer's limit.
        limit: usize,
    },
    /// Too many handles for one message.
    TooManyHandles {
        /// Count.
        count: usize,
        /// Limit.
        limit: usize,
    },
}

/// A message to send: in a buffer it may be taken out of, or borrowed.
enum Body<'a> {
    Owned(&'a mut BytesMut),
    Borrowed(&'a [u8]),
}

/// One connection's protocol state machine.
#[derive(Debug)]
pub struct Connection {
    side: Side,
    limits: Limits,
    ours: Hello,
    peer: Option<Hello>,
    state: ConnState,
    goodbye: Goodbye,
    chans: HashMap<ChanId, Chan>,
    next_id: ChanId,
    last_peer_id: ChanId,
    /// OPENs refused because a limit was reached.
    over_limit_opens: usize,
    /// Peer ids below `last_peer_id` not seen yet.
    id_gaps: FxHashSet<ChanId>,
    requested: usize,
    out: BytesMut,
    /// Channels with pending chunks, in round-robin order.
    ready: VecDeque<ChanId>,
    /// A message of one chunk was queued since the last transmit.
    small_queued: bool,
    /// The last transmit that found one.
    mixed_at: Option<Instant>,
    /// The stream made the last write wait ([`set_stream_full`](Self::set_stream_full)).
    stream_full: bool,
    /// Receiving ends marked for a `CREDIT` at the next transmit.
    credit_due: Vec<ChanId>,
    /// Rendezvous channels that closed while a message sent on them was
    /// not yet taken, until the send waiting for it asks
    /// ([`take_state`](Connection::take_state)).
    untaken: Vec<ChanId>,
    /// Some marked end is urgent (`Flow::urgent`): write at once.
    credit_urgent: bool,
    /// When the first `CREDIT` that may wait was found waiting, at a
    /// transmit: it leaves with the next write, or `ACK_DELAY` after this.
    credit_lazy_since: Option<Instant>,
    pong_due: Option<u64>,
    /// Bytes of peer-provoked replies since the last transmit.
    replies: usize,
    last_rx: Instant,
    last_tx: Instant,
    ping_seq: u64,
    sent_total: u64,
    confirmed_total: u64,
    counters: Counters,
    resume: Resume,
    /// Bytes of our first hello not yet handed out (never logged).
    hello_unlogged: usize,
}

/// Traffic of one connection, counted as it passes (see
/// [`Connection::counters`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Bytes handed out to write, the hello included.
    pub bytes_out: u64,
    /// Bytes read and consumed, the hello included.
    pub bytes_in: u64,
    /// Frames queued to write.
    pub frames_out: u64,
    /// Frames read.
    pub frames_in: u64,
}

/// One channel as the protocol sees it (see [`Connection::channels`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelCounters<'a> {
    /// The channel.
    pub chan: ChanId,
    /// The export name it was opened by; `None` for a channel that
    /// travelled inside a message.
    pub name: Option<&'a str>,
    /// Whether this side sends or receives on it.
    pub role: Role,
    /// Whether it is open (not opening, requested or closing).
    pub open: bool,
    /// The receiving end's buffer.
    pub capacity: u32,
    /// Sending side: messages it may send now.
    pub credit: u32,
    /// Sending side: messages sent and not yet confirmed received.
    pub unconfirmed: u64,
    /// Receiving side: credit granted and not yet used by the peer.
    pub outstanding: u32,
    /// Messages sent (sending side) or received whole (receiving side).
    pub messages: u64,
    /// Bytes of those messages (handle tables included, frame headers
    /// not).
    pub bytes: u64,
}

impl Connection {
    /// A new connection; our hello is queued for transmit at once.
    pub fn new(side: Side, limits: Limits, codec: CodecId, now: Instant) -> Connection {
        Connection::with_resume(side, limits, codec, now, Resume::Off, ResumeInfo::default())
    }

    /// A dialer that asks for a resumable session: if the acceptor agrees
    /// (its hello carries a token), a broken link suspends the session
    /// ([`suspend`](Self::suspend)) instead of ending it.
    pub fn dial_resumable(limits: Limits, codec: CodecId, now: Instant) -> Connection {
        let info = ResumeInfo {
            flags: FLAG_RESUMABLE,
            ..ResumeInfo::default()
        };
        let r = Resume::Pending(Box::new(Resumable::new([0; 16])));
        Connection::with_resume(Side::Dialer, limits, codec, now, r, info)
    }

    /// An acceptor that offers a resumable session: `token` is the
    /// session's secret, given to the dialer in this side's hello. The
    /// session is resumable if the dialer's hello asks for it.
    pub fn accept_resumable(
        limits: Limits,
        codec: CodecId,
        now: Instant,
        token: [u8; 16],
    ) -> Connection {
        let info = ResumeInfo {
            flags: FLAG_RESUMABLE,
            token,
            position: 0,
        };
        let r = Resume::Pending(Box::new(Resumable::new(token)));
        Connection::with_resume(Side::Acceptor, limits, codec, now, r, info)
    }

    fn with_resume(
        side: Side,
        limits: Limits,
        codec: CodecId,
        now: Instant,
        resume: Resume,
        info: ResumeInfo,
    ) -> Connection {
        let ours = Hello {
            version: PROTOCOL_VERSION,
            codec,
            max_message_len: u32::try_from(limits.max_message_len).unwrap_or(u32::MAX),
            max_channels: u32::try_from(limits.max_channels).unwrap_or(u32::MAX),
            max_handles: u32::try_from(limits.max_handles).unwrap_or(u32::MAX),
        };
        let mut out = BytesMut::with_capacity(8 << 10);
        ours.encode_with(&info, &mut out);
        Connection {
            side,
            limits,
            ours,
            peer: None,
            state: ConnState::Handshaking,
            goodbye: Goodbye::None,
            chans: HashMap::default(),
            next_id: match side {
                Side::Dialer => 1,
                Side::Acceptor => 2,
            },
            last_peer_id: 0,
            id_gaps: FxHashSet::default(),
            over_limit_opens: 0,
            requested: 0,
            out,
            ready: VecDeque::new(),
            credit_due: Vec::new(),
            small_queued: false,
            mixed_at: None,
            stream_full: false,
            untaken: Vec::new(),
            credit_urgent: false,
            credit_lazy_since: None,
            pong_due: None,
            replies: 0,
            last_rx: now,
            last_tx: now,
            ping_seq: 0,
            sent_total: 0,
            confirmed_total: 0,
            counters: Counters::default(),
            resume,
            hello_unlogged: HELLO_LEN,
        }
    }

    /// Whether the session survives a broken link (both sides agreed in
    /// the handshake).
    pub fn is_resumable(&self) -> bool {
        matches!(self.resume, Resume::On(_))
    }

    /// The session's secret token, on a resumable session.
    pub fn token(&self) -> Option<[u8; 16]> {
        match &self.resume {
            Resume::On(r) => Some(r.token),
            _ => None,
        }
    }

    /// Whether the link is down (suspended, waiting for a resume).
    pub fn is_suspended(&self) -> bool {
        matches!(&self.resume, Resume::On(r) if r.link == LinkState::Down)
    }

    /// Whether a hello is awaited: the first handshake, or a resume.
    pub fn in_handshake(&self) -> bool {
        self.state == ConnState::Handshaking
            || matches!(&self.resume, Resume::On(r) if r.link == LinkState::Resuming)
    }

    /// Bytes of this side's frame stream held for replay: sent and not
    /// yet acknowledged by the peer.
    pub fn replay_held(&self) -> u64 {
        match &self.resume {
            Resume::On(r) => r.log.held(),
            _ => 0,
        }
    }

    fn link_up(&self) -> bool {
        match &self.resume {
            Resume::On(r) => r.link == LinkState::Up,
            _ => true,
        }
    }

    /// The link broke: on a resumable session that has not ended, the
    /// session is suspended (nothing is read or written until a resume;
    /// sends go on queueing within their credit) and this returns true.
    /// Otherwise nothing changes and this returns false.
    pub fn suspend(&mut self) -> bool {
        if self.state != ConnState::Open {
            return false;
        }
        let Resume::On(r) = &mut self.resume else {
            return false;
        };
        r.link = LinkState::Down;
        r.prefix.clear();
        r.ack_since = None;
        self.pong_due = None;
        self.replies = 0;
        true
    }

    /// Dialer, suspended: starts a resume over a new link. The resume
    /// hello (token, bytes received) is queued; the peer's answer comes
    /// through [`poll_input`](Self::poll_input) as [`Event::Resumed`] or
    /// an error.
    pub fn begin_resume(&mut self, now: Instant) -> bool {
        let ours = self.ours;
        let Resume::On(r) = &mut self.resume else {
            return false;
        };
        if r.link != LinkState::Down || self.state != ConnState::Open {
            return false;
        }
        r.prefix = vec![r.resume_hello(&ours)];
        r.link = LinkState::Resuming;
        r.offer_seen = false;
        self.last_rx = now;
        self.last_tx = now;
        true
    }

    /// Acceptor: the peer resumes this session over a new link, having
    /// received `position` bytes of this side's stream. Queues this
    /// side's resume hello and everything after `position`; the link is
    /// up again. Suspends a link still up first (the peer found it dead).
    pub fn accept_resume(&mut self, position: u64, now: Instant) -> Result<(), ProtoError> {
        if self.state != ConnState::Open {
            return Err(ProtoError::ResumeRefused);
        }
        self.suspend();
        let ours = self.ours;
        let Resume::On(r) = &mut self.resume else {
            return Err(ProtoError::ResumeRefused);
        };
        let replay = r.log.since(position).ok_or(ProtoError::ResumeOutOfRange)?;
        r.log.ack(position);
        r.prefix = vec![r.resume_hello(&ours)];
        r.prefix.extend(replay);
        r.rx_reported = r.rx;
        r.link = LinkState::Up;
        self.last_rx = now;
        self.last_tx = now;
        Ok(())
    }

    /// The hello refusing a resume, for an acceptor that does not know the
    /// token: the dialer's session is lost.
    pub fn refusal(limits: &Limits, codec: CodecId) -> Bytes {
        let c = Connection::new(Side::Acceptor, limits.clone(), codec, Instant::now());
        let mut b = BytesMut::with_capacity(HELLO_LEN);
        c.ours.encode_with(
            &ResumeInfo {
                flags: FLAG_REFUSED,
                ..ResumeInfo::default()
            },
            &mut b,
        );
        b.freeze()
    }

    /// Dialer, resuming: reads the acceptor's answer to the resume hello.
    fn poll_resume_hello(&mut self, buf: &mut BytesMut) -> Result<Option<Event>, ProtoError> {
        let before = buf.len();
        let offer_seen = matches!(&self.resume, Resume::On(r) if r.offer_seen);
        let Some((_, info)) = (match Hello::decode_with(buf, &self.ours) {
            // The acceptor spoke netchan (its hello came), then not the
            // answer: a frame of a new session it started, not having
            // read our resume hello.
            Err(ProtoError::NotNetchan) if offer_seen => Err(ProtoError::ResumeUnanswered),
            other => other,
        })?
        else {
            return Ok(None);
        };
        self.counters.bytes_in += (before - buf.len()) as u64;
        let Resume::On(r) = &mut self.resume else {
            return Err(ProtoError::ResumeRefused);
        };
        if !info.is(FLAG_REFUSED) && !info.is(FLAG_RESUME) && !r.offer_seen {
            // The acceptor's hello, sent at once as on any connection,
            // before it read ours; its answer follows.
            r.offer_seen = true;
            return self.poll_resume_hello(buf);
        }
        if info.is(FLAG_REFUSED) || !info.is(FLAG_RESUME) || info.token != r.token {
            return Err(ProtoError::ResumeRefused);
        }
        let replay = r
            .log
            .since(info.position)
            .ok_or(ProtoError::ResumeOutOfRange)?;
        r.log.ack(info.position);
        r.prefix = replay;
        r.rx_reported = r.rx;
        r.link = LinkState::Up;
        Ok(Some(Event::Resumed))
    }

    /// Our limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The peer's hello, once the handshake completed.
    pub fn peer(&self) -> Option<&Hello> {
        self.peer.as_ref()
    }

    /// Whether the handshake completed and no goodbye or error ended the
    /// connection since.
    pub fn is_open(&self) -> bool {
        self.state == ConnState::Open && self.goodbye == Goodbye::None
    }

    /// Whether the connection ended (peer goodbye or protocol error).
    pub fn is_ended(&self) -> bool {
        matches!(self.state, ConnState::Ended(_))
    }

    /// The largest message the peer accepts.
    pub fn send_limit(&self) -> usize {
        self.peer
            .map_or(self.limits.max_message_len, |p| p.max_message_len as usize)
    }

    /// The most channel handles one outgoing message may carry: ours and
    /// the peer's limit, whichever is lower.
    pub fn send_handle_limit(&self) -> usize {
        self.peer.map_or(self.limits.max_handles, |p| {
            self.limits.max_handles.min(p.max_handles as usize)
        })
    }

    fn channel_limit(&self) -> usize {
        let theirs = self.peer.map(|p| p.max_channels as usize).unwrap_or(0);
        self.limits.max_channels.min(theirs.max(1))
    }

    /// Number of channels in the table (any state).
    pub fn channel_count(&self) -> usize {
        self.chans.len()
    }

    /// Messages sent on channels still open whose delivery the peer has
    /// not yet confirmed.
    pub fn unconfirmed(&self) -> u64 {
        self.chans.values().map(|c| c.flow.unconfirmed()).sum()
    }

    /// Messages whose delivery the peer confirmed, in total (a channel the
    /// peer closed confirms everything sent on it before).
    pub fn confirmed_total(&self) -> u64 {
        self.confirmed_total
    }

    /// Messages ever sent on this connection.
    pub fn sent_total(&self) -> u64 {
        self.sent_total
    }

    fn fail(&mut self, e: ProtoError) -> ProtoError {
        // The first error is final: later ones do not replace it.
        if let ConnState::Ended(Some(first)) = &self.state {
            return first.clone();
        }
        self.state = ConnState::Ended(Some(e.clone()));
        e
    }

    fn reply(&mut self, f: Frame) -> Result<(), ProtoError> {
        if self.goodbye == Goodbye::Sent {
            // Nothing may follow our goodbye.
            return Ok(());
        }
        let before = self.out.len();
        f.encode(&mut self.out);
        self.counters.frames_out += 1;
        self.replies += self.out.len() - before;
        // The backlog bounds what a peer that sends and never reads makes
        // this side queue. An ended connection reads nothing more: what is
        // queued then comes from local calls (closing the channels the
        // peer asked for after its goodbye), which must not turn a clean
        // end into this failure.
        if self.replies > self.limits.max_reply_backlog && !self.is_ended() {
            return Err(self.fail(ProtoError::PeerNotReading(self.replies)));
        }
        Ok(())
    }

    /// Reads frames from `buf` until one yields an event, or more bytes are
    /// needed (`Ok(None)`). An error ends the connection for good, except
    /// [`ProtoError::ResumeUnanswered`]: only the link of a resume attempt
    /// failed, and the caller [`suspend`](Self::suspend)s the session to
    /// try again over another.
    pub fn poll_input(
        &mut self,
        buf: &mut BytesMut,
        now: Instant,
    ) -> Result<Option<Event>, ProtoError> {
        self.poll_input_with(buf, now, None)
    }

    /// [`poll_input`](Self::poll_input), handing each small message to
    /// `small` instead of returning it: a message of at most
    /// [`SMALL_MESSAGE`] bytes, in one `DATA` frame, without handles, on an
    /// open receiving channel with credit for it. `small` gets the channel
    /// and the payload, borrowed from `buf`, so the message costs no buffer
    /// of its own; the channel's flow control and the counters account for
    /// it exactly as for an [`Event::Message`]. The messages `small` got
    /// came before the event returned, in their order.
    pub fn poll_input_with(
        &mut self,
        buf: &mut BytesMut,
        now: Instant,
        mut small: Option<OnSmall<'_>>,
    ) -> Result<Option<Event>, ProtoError> {
        if let ConnState::Ended(e) = &self.state {
            return match e {
                Some(e) => Err(e.clone()),
                None if buf.is_empty() => Ok(None),
                None => Err(self.fail(ProtoError::AfterGoodbye)),
            };
        }
        if !buf.is_empty() {
            self.last_rx = now;
        }
        if self.state == ConnState::Handshaking {
            let before = buf.len();
            match Hello::decode_with(buf, &self.ours) {
                Ok(None) => return Ok(None),
                Ok(Some((h, info))) => {
                    self.counters.bytes_in += (before - buf.len()) as u64;
                    if info.is(FLAG_RESUME) || info.is(FLAG_REFUSED) {
                        // A resume reaches an acceptor that keeps sessions
                        // (an exporter) before any connection starts; here
                        // it names a session this side cannot know.
                        return Err(self.fail(ProtoError::ResumeRefused));
                    }
                    if matches!(self.resume, Resume::Pending(_)) {
                        let asked = std::mem::replace(&mut self.resume, Resume::Off);
                        if let (Resume::Pending(mut r), true) = (asked, info.is(FLAG_RESUMABLE)) {
                            if self.side == Side::Dialer {
                                r.token = info.token;
                            }
                            self.resume = Resume::On(r);
                        }
                    }
                    self.peer = Some(h);
                    self.state = ConnState::Open;
                    return Ok(Some(Event::Ready(h)));
                }
                Err(e) => return Err(self.fail(e)),
            }
        }
        match &self.resume {
            Resume::On(r) if r.link == LinkState::Resuming => {
                return match self.poll_resume_hello(buf) {
                    Ok(ev) => Ok(ev),
                    // Only this attempt failed: the caller suspends the
                    // session again (see `poll_input`).
                    Err(ProtoError::ResumeUnanswered) => Err(ProtoError::ResumeUnanswered),
                    Err(e) => Err(self.fail(e)),
                };
            }
            // Nothing is read while suspended.
            Resume::On(r) if r.link == LinkState::Down => return Ok(None),
            _ => {}
        }
        loop {
            if let Some(small) = small.as_deref_mut() {
                if self.take_small(buf, small) {
                    continue;
                }
            }
            let max_data = self.limits.max_message_len.max(self.limits.chunk_size);
            let before = buf.len();
            let frame = match Frame::decode(buf, max_data) {
                Ok(Some(f)) => {
                    let n = (before - buf.len()) as u64;
                    self.counters.bytes_in += n;
                    self.counters.frames_in += 1;
                    match (&mut self.resume, &f) {
                        (Resume::On(r), Frame::Ack(upto)) => {
                            if !r.log.ack(*upto) {
                                return Err(self.fail(ProtoError::Malformed {
                                    kind: Kind::Ack,
                                    what: "acknowledges bytes never sent",
                                }));
                            }
                            continue;
                        }
                        (_, Frame::Ack(_)) => {
                            return Err(self.fail(ProtoError::Malformed {
                                kind: Kind::Ack,
                                what: "ACK on a session that is not resumable",
                            }));
                        }
                        (Resume::On(r) | Resume::Pending(r), _) => r.rx += n,
                        _ => {}
                    }
                    f
                }
                Ok(None) => return Ok(None),
                Err(e) => return Err(self.fail(e)),
            };
            match self.handle_frame(frame) {
                Ok(Some(ev)) => return Ok(Some(ev)),
                Ok(None) => {}
                Err(e) => return Err(self.fail(e)),
            }
        }
    }

    /// Takes the frame at the front of `buf` if it is a small message
    /// (see [`poll_input_with`](Self::poll_input_with)) and hands it to
    /// `small`, with the accounting of [`handle_data`](Self::handle_data).
    /// Anything else, and every frame that is in error, is left to the
    /// general path, which reports it.
    #[inline]
    fn take_small(&mut self, buf: &mut BytesMut, small: OnSmall<'_>) -> bool {
        let Some(h) = buf.get(..HEADER_LEN) else {
            return false;
        };
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        if h[4] != Kind::Data as u8
            || h[5] != FLAG_END
            || len > SMALL_MESSAGE
            || len > self.limits.max_message_len
            || buf.len() < HEADER_LEN + len
        {
            return false;
        }
        let chan = u32::from_le_bytes([h[6], h[7], h[8], h[9]]);
        let Some(c) = self.chans.get_mut(&chan) else {
            return false;
        };
        if c.role != Role::Receiving
            || c.state != State::Open
            || c.assembling.is_some()
            || !c.flow.spend_incoming()
        {
            return false;
        }
        let n = HEADER_LEN + len;
        self.counters.bytes_in += n as u64;
        self.counters.frames_in += 1;
        if let Resume::On(r) | Resume::Pending(r) = &mut self.resume {
            r.rx += n as u64;
        }
        c.bytes += len as u64;
        if c.flow.arrived() {
            self.credit_due.push(chan);
        }
        self.credit_urgent |= c.flow.urgent();
        small(chan, &buf[HEADER_LEN..n]);
        buf.advance(n);
        true
    }

    /// Accepts a peer-allocated id: of the peer's parity and never used.
    ///
    /// Ids need not arrive in allocation order (a handle inside a large,
    /// chunked message can be overtaken by a later `OPEN`), so ids skipped
    /// over are remembered as gaps until they arrive; a jump that would
    /// leave more gaps than channels allowed is refused.
    fn take_peer_id(&mut self, chan: ChanId) -> Result<(), ProtoError> {
        let peer_parity = match self.side {
            Side::Dialer => 0,
            Side::Acceptor => 1,
        };
        if chan == 0 || chan % 2 != peer_parity {
            return Err(ProtoError::BadChannelId(chan));
        }
        if chan > self.last_peer_id {
            let first = if self.last_peer_id == 0 {
                2 - peer_parity
            } else {
                self.last_peer_id + 2
            };
            let skipped = ((chan - first) / 2) as usize;
            if self.id_gaps.len() + skipped > self.limits.max_channels {
                return Err(ProtoError::BadChannelId(chan));
            }
            let mut id = first;
            while id < chan {
                self.id_gaps.insert(id);
                id += 2;
            }
            self.last_peer_id = chan;
            Ok(())
        } else if self.id_gaps.remove(&chan) {
            Ok(())
        } else {
            Err(ProtoError::BadChannelId(chan))
        }
    }

    fn handle_frame(&mut self, frame: Frame) -> Result<Option<Event>, ProtoError> {
        match frame {
            Frame::Open {
                chan,
                dir,
                capacity,
                name,
                type_name,
            } => {
                self.take_peer_id(chan)?;
                if self.chans.len() >= self.channel_limit()
                    || self.requested >= self.limits.max_pending_opens
                {
                    // A peer racing our own opens may overshoot a little
                    // and is refused; one that keeps opening is cut off.
                    self.over_limit_opens += 1;
                    if self.over_limit_opens > self.limits.max_refused_opens {
                        return Err(ProtoError::LimitExceeded {
                            what: "channel opens refused for a limit",
                            limit: self.limits.max_refused_opens,
                        });
                    }
                    self.reply(Frame::Reject {
                        chan,
                        code: RejectCode::TooManyChannels,
                        reason: format!(
                            "too many channels (limit {} open, {} pending)",
                            self.channel_limit(),
                            self.limits.max_pending_opens
                        ),
                    })?;
                    return Ok(None);
                }
                let mut c = match dir {
                    // The opener's buffer; the credit comes with our ACCEPT.
                    Dir::OpenerReceives => Chan::sending(State::Requested, capacity, 0),
                    Dir::OpenerSends => Chan::receiving(State::Requested, 0),
                };
                c.name = Some(name.as_str().into());
                self.chans.insert(chan, c);
                self.requested += 1;
                Ok(Some(Event::Open {
                    chan,
                    dir,
                    capacity,
                    name,
                    type_name,
                }))
            }
            Frame::Accept { chan, capacity } => {
                let c = self.chan_in(chan, Kind::Accept, State::Opening)?;
                c.state = State::Open;
                if c.role == Role::Sending {
                    c.flow.accepted(capacity);
                }
                if let Some((code, reason)) = c.close_after.take().map(|b| *b) {
                    self.close(chan, code, &reason);
                    return Ok(None);
                }
                Ok(Some(Event::Accepted { chan, capacity }))
            }
            Frame::Reject { chan, code, reason } => {
                let closed = self
                    .chan_in(chan, Kind::Reject, State::Opening)?
                    .close_after
                    .is_some();
                self.chans.remove(&chan);
                if closed {
                    return Ok(None);
                }
                Ok(Some(Event::Rejected { chan, code, reason }))
            }
            Frame::Data {
                chan,
                flags,
                payload,
            } => self.handle_data(chan, flags, payload),
            Frame::Credit {
                chan,
                grant,
                received,
            } => {
                let c = self
                    .chans
                    .get_mut(&chan)
                    .ok_or(ProtoError::UnknownChannel(chan))?;
                if c.role != Role::Sending {
                    return Err(ProtoError::Unexpected {
                        kind: Kind::Credit,
                        chan,
                        what: "credit for a receiving channel",
                    });
                }
                match c.state {
                    // Confirmations still count for a channel we closed;
                    // its grant is moot.
                    State::Closing => {
                        self.confirmed_total += c.flow.on_credit_closing(received);
                        return Ok(Some(Event::Credit { chan }));
                    }
                    State::Open => {}
                    _ => {
                        return Err(ProtoError::Unexpected {
                            kind: Kind::Credit,
                            chan,
                            what: "channel not open",
                        });
                    }
                }
                self.confirmed_total += c
                    .flow
                    .on_credit(grant, received)
                    .map_err(|_| ProtoError::CreditOverflow(chan))?;
                Ok(Some(Event::Credit { chan }))
            }
            Frame::Close { chan, code, reason } => {
                let c = self
                    .chans
                    .get(&chan)
                    .ok_or(ProtoError::UnknownChannel(chan))?;
                match c.state {
                    State::Closing => {
                        // The peer's CLOSE answers ours (or crossed it); it
                        // follows every message we sent, so those arrived.
                        if let Some(c) = self.chans.remove(&chan) {
                            self.released(chan, &c);
                            if c.role == Role::Sending {
                                // Tells `drain` its last values arrived.
                                return Ok(Some(Event::Credit { chan }));
                            }
                        }
                        Ok(None)
                    }
                    State::Open | State::Requested => {
                        if c.state == State::Requested {
                            self.requested -= 1;
                        }
                        if let Some(mut c) = self.chans.remove(&chan) {
                            self.released(chan, &c);
                            if self.goodbye != Goodbye::Sent {
                                Self::confirm_takes(
                                    &mut self.out,
                                    &mut self.counters,
                                    chan,
                                    &mut c,
                                );
                            }
                        }
                        self.remove_pending(chan);
                        self.reply(Frame::Close {
                            chan,
                            code: CloseCode::Done,
                            reason: String::new(),
                        })?;
                        Ok(Some(Event::Closed { chan, code, reason }))
                    }
                    State::Opening => Err(ProtoError::Unexpected {
                        kind: Kind::Close,
                        chan,
                        what: "close before accept",
                    }),
                }
            }
            Frame::Goodbye { reason } => {
                self.state = ConnState::Ended(None);
                Ok(Some(Event::Goodbye { reason }))
            }
            Frame::Ping(n) => {
                // Only the latest ping is answered, so a flood costs nothing.
                self.pong_due = Some(n);
                Ok(None)
            }
            Frame::Pong(_) => Ok(None),
            // Taken by `poll_input` before it gets here.
            Frame::Ack(_) => Ok(None),
        }
    }

    fn chan_in(&mut self, chan: ChanId, kind: Kind, want: State) -> Result<&mut Chan, ProtoError> {
        let c = self
            .chans
            .get_mut(&chan)
            .ok_or(ProtoError::UnknownChannel(chan))?;
        if c.state != want {
            return Err(ProtoError::Unexpected {
                kind,
                chan,
                what: "wrong channel state",
            });
        }
        Ok(c)
    }

    fn handle_data(
        &mut self,
        chan: ChanId,
        flags: u8,
        payload: Bytes,
    ) -> Result<Option<Event>, ProtoError> {
        let max = self.limits.max_message_len;
        let c = self
            .chans
            .get_mut(&chan)
            .ok_or(ProtoError::UnknownChannel(chan))?;
        if c.role != Role::Receiving {
            return Err(ProtoError::Unexpected {
                kind: Kind::Data,
                chan,
                what: "data for a sending channel",
            });
        }
        match c.state {
            // We closed it: data already in flight is dropped, but the
            // channels its handles open must be closed in turn.
            State::Closing => {
                let first = !c.skipping;
                c.skipping = flags & FLAG_END == 0;
                if first && flags & FLAG_HANDLES != 0 {
                    let mut p = payload;
                    for h in self.adopt_handles(&mut p)? {
                        self.close(h.chan, CloseCode::ReceiverGone, "receiver gone");
                    }
                }
                return Ok(None);
            }
            State::Open => {}
            _ => {
                return Err(ProtoError::Unexpected {
                    kind: Kind::Data,
                    chan,
                    what: "channel not open",
                });
            }
        }
        let end = flags & FLAG_END != 0;
        let has_handles = flags & FLAG_HANDLES != 0;
        let message = match c.assembling.as_mut() {
            None => {
                if !c.flow.spend_incoming() {
                    return Err(ProtoError::NoCredit(chan));
                }
                if payload.len() > max {
                    return Err(ProtoError::MessageTooLarge {
                        len: payload.len(),
                        max,
                    });
                }
                if end {
                    Some((payload, has_handles))
                } else {
                    c.assembling = Some(Assembly::start(
                        &payload,
                        has_handles,
                        c.last_assembled as usize,
                    ));
                    None
                }
            }
            Some(a) => {
                if has_handles {
                    return Err(ProtoError::Unexpected {
                        kind: Kind::Data,
                        chan,
                        what: "handle flag on a continuation chunk",
                    });
                }
                a.push(&payload, max)?;
                if end {
                    let a = c
                        .assembling
                        .take()
                        .ok_or(ProtoError::UnknownChannel(chan))?;
                    let (data, handles) = a.finish();
                    c.last_assembled = u32::try_from(data.len()).unwrap_or(u32::MAX);
                    Some((data, handles))
                } else {
                    None
                }
            }
        };
        let Some((mut data, has_handles)) = message else {
            return Ok(None);
        };
        c.bytes += data.len() as u64;
        if c.flow.arrived() {
            self.credit_due.push(chan);
        }
        self.credit_urgent |= c.flow.urgent();
        let handles = if has_handles {
            self.adopt_handles(&mut data)?
        } else {
            Vec::new()
        };
        Ok(Some(Event::Message {
            chan,
            data,
            handles,
        }))
    }

    /// Parses and registers the handle table at the front of `data`.
    fn adopt_handles(&mut self, data: &mut Bytes) -> Result<Vec<HandleDesc>, ProtoError> {
        let table = parse_table(data, self.limits.max_handles)?;
        for h in &table {
            self.take_peer_id(h.chan)?;
            let mut c = match h.kind {
                // The recipient sends; the originator granted `capacity` up front.
                HandleKind::Sender => Chan::sending(State::Open, h.capacity, h.capacity),
                // The recipient grants when it binds the handle.
                HandleKind::Receiver => Chan::receiving(State::Open, h.capacity),
            };
            if self.chans.len() >= 2 * self.channel_limit() {
                // Far beyond anything crossing frames explain.
                return Err(ProtoError::LimitExceeded {
                    what: "open channels (handles past twice the limit)",
                    limit: self.channel_limit(),
                });
            }
            if self.chans.len() >= self.channel_limit() {
                // The tables of the two sides differ while frames cross;
                // a handle over the limit is closed, not fatal.
                c.state = State::Closing;
                self.reply(Frame::Close {
                    chan: h.chan,
                    code: CloseCode::Error,
                    reason: format!("channel limit {} reached", self.channel_limit()),
                })?;
            }
            self.chans.insert(h.chan, c);
        }
        Ok(table)
    }

    /// A channel left the table on the peer's `CLOSE`, which follows
    /// every message this side sent on it: they all count as arrived (what
    /// `drain` waits for). On a rendezvous channel a message not yet
    /// reported taken never will be: the send waiting for it is told so
    /// ([`take_state`](Connection::take_state)) and fails with its value.
    fn released(&mut self, chan: ChanId, c: &Chan) {
        let unconfirmed = c.flow.unconfirmed();
        self.confirmed_total += unconfirmed;
        if unconfirmed > 0 && c.flow.capacity() == 0 && !c.abandoned {
            self.untaken.push(chan);
        }
    }

    /// Before a receiving rendezvous end's `CLOSE`: the `CREDIT` that
    /// reports its last takes, if one is due, so the peer's waiting send
    /// learns its message was taken before it learns the channel closed.
    fn confirm_takes(out: &mut BytesMut, counters: &mut Counters, chan: ChanId, c: &mut Chan) {
        if c.role != Role::Receiving || c.flow.capacity() != 0 {
            return;
        }
        if let Some((_, received)) = c.flow.credit_due() {
            Frame::Credit {
                chan,
                grant: 0,
                received,
            }
            .encode(out);
            counters.frames_out += 1;
        }
    }

    fn remove_pending(&mut self, chan: ChanId) {
        self.ready.retain(|c| *c != chan);
        self.credit_due.retain(|c| *c != chan);
    }

    fn alloc_id(&mut self) -> Option<ChanId> {
        let id = self.next_id;
        self.next_id = id.checked_add(2)?;
        Some(id)
    }

    /// Opens a channel to the peer's export `name`. `capacity` is our
    /// receive buffer when we receive (ignored otherwise).
    pub fn open(
        &mut self,
        name: &str,
        dir: Dir,
        capacity: u32,
        type_name: &str,
    ) -> Result<ChanId, OpenError> {
        if !self.is_open() {
            return Err(OpenError::Ended);
        }
        if name.len() > super::frame::MAX_NAME_LEN {
            return Err(OpenError::NameTooLong);
        }
        if self.chans.len() >= self.channel_limit() {
            return Err(OpenError::TooManyChannels(self.channel_limit()));
        }
        let chan = self.alloc_id().ok_or(OpenError::IdsExhausted)?;
        let role = match dir {
            Dir::OpenerReceives => Role::Receiving,
            Dir::OpenerSends => Role::Sending,
        };
        let mut c = match role {
            Role::Receiving => {
                // The OPEN carries the whole buffer as credit.
                let mut c = Chan::receiving(State::Opening, capacity);
                c.flow.grant_all(capacity);
                c
            }
            Role::Sending => Chan::sending(State::Opening, 0, 0),
        };
        c.name = Some(name.into());
        self.chans.insert(chan, c);
        Frame::Open {
            chan,
            dir,
            capacity: if role == Role::Receiving { capacity } else { 0 },
            name: name.to_owned(),
            type_name: type_name.to_owned(),
        }
        .encode(&mut self.out);
        self.counters.frames_out += 1;
        Ok(chan)
    }

    /// Accepts a channel the peer asked for. `capacity` is our receive
    /// buffer when we receive.
    pub fn accept(&mut self, chan: ChanId, capacity: u32) {
        // After a protocol error nothing more happens on the connection.
        if self.error().is_some() {
            return;
        }
        let Some(c) = self.chans.get_mut(&chan) else {
            return;
        };
        if c.state != State::Requested {
            return;
        }
        self.requested -= 1;
        c.state = State::Open;
        let cap = match c.role {
            Role::Receiving => {
                c.flow.grant_all(capacity);
                capacity
            }
            Role::Sending => {
                let theirs = c.flow.capacity();
                c.flow.accepted(theirs);
                0
            }
        };
        let _ = self.reply(Frame::Accept {
            chan,
            capacity: cap,
        });
    }

    /// Refuses a channel the peer asked for.
    pub fn reject(&mut self, chan: ChanId, code: RejectCode, reason: &str) {
        if self.error().is_some()
            || self.chans.get(&chan).map(|c| c.state) != Some(State::Requested)
        {
            return;
        }
        self.chans.remove(&chan);
        self.requested -= 1;
        let _ = self.reply(Frame::Reject {
            chan,
            code,
            reason: reason.to_owned(),
        });
    }

    /// Allocates a channel for a handle this side puts into a message.
    /// `role` is what *this* side does on it.
    pub fn alloc_handle(&mut self, role: Role, capacity: u32) -> Result<ChanId, OpenError> {
        if !self.is_open() {
            return Err(OpenError::Ended);
        }
        if self.chans.len() >= self.channel_limit() {
            return Err(OpenError::TooManyChannels(self.channel_limit()));
        }
        let chan = self.alloc_id().ok_or(OpenError::IdsExhausted)?;
        let c = match role {
            Role::Receiving => {
                // The handle's table entry carries this grant.
                let mut c = Chan::receiving(State::Open, capacity);
                c.flow.grant_all(capacity);
                c
            }
            // The recipient grants when it binds the handle.
            Role::Sending => Chan::sending(State::Open, capacity, 0),
        };
        self.chans.insert(chan, c);
        Ok(chan)
    }

    /// Drops a handle channel whose message was never sent.
    pub fn forget(&mut self, chan: ChanId) {
        self.chans.remove(&chan);
        self.remove_pending(chan);
    }

    /// Whether a message may be sent on `chan` now.
    pub fn can_send(&self, chan: ChanId) -> Result<(), SendBlock> {
        if !self.is_open() {
            return Err(SendBlock::Ended);
        }
        match self.chans.get(&chan) {
            Some(c) if c.role == Role::Sending && c.state == State::Open => {
                if c.close_after.is_some() {
                    Err(SendBlock::Closed)
                } else if c.flow.credit() > 0 {
                    Ok(())
                } else {
                    Err(SendBlock::NoCredit)
                }
            }
            Some(c) if c.state == State::Opening => Err(SendBlock::NoCredit),
            _ => Err(SendBlock::Closed),
        }
    }

    /// Credit available on `chan` (0 if it is not a sending channel).
    pub fn credit(&self, chan: ChanId) -> u32 {
        self.chans
            .get(&chan)
            .filter(|c| c.role == Role::Sending)
            .map_or(0, |c| c.flow.credit())
    }

    /// Sends `body`, a message encoded outside the connection, on `chan`
    /// (which must have passed [`can_send`](Self::can_send)), with
    /// `handles` allocated by [`alloc_handle`](Self::alloc_handle). A
    /// message that fits one chunk is copied into the transmit buffer and
    /// `body` is left as it was; a larger one is taken out of `body`
    /// without a copy and sent in chunks, round-robin with other channels'.
    /// On error nothing was sent and `body` is untouched.
    pub fn send_message(
        &mut self,
        chan: ChanId,
        body: &mut BytesMut,
        handles: &[HandleDesc],
    ) -> Result<(), FinishError> {
        self.send_body(chan, Body::Owned(body), handles)
    }

    /// Sends `body`, a message without handles, copied from where it is:
    /// what [`send_message`](Self::send_message) does, for a caller that
    /// holds many messages in one buffer. A message larger than a chunk,
    /// or one on a channel with chunks still to send, is copied into a
    /// buffer of its own.
    pub fn send_slice(&mut self, chan: ChanId, body: &[u8]) -> Result<(), FinishError> {
        self.send_body(chan, Body::Borrowed(body), &[])
    }

    /// [`send_message`](Self::send_message) and
    /// [`send_slice`](Self::send_slice).
    #[inline]
    fn send_body(
        &mut self,
        chan: ChanId,
        body: Body<'_>,
        handles: &[HandleDesc],
    ) -> Result<(), FinishError> {
        let bytes: &[u8] = match &body {
            Body::Owned(b) => b,
            Body::Borrowed(s) => s,
        };
        let table = self.check_message(bytes.len(), handles.len())?;
        let size = bytes.len() + table;
        let Some(c) = self.chans.get_mut(&chan) else {
            return Ok(());
        };
        c.flow.spend();
        c.abandoned = false;
        c.bytes += size as u64;
        self.sent_total += 1;
        let flags = if table > 0 { FLAG_HANDLES } else { 0 };
        if size <= self.limits.chunk_size && c.nothing_pending() {
            self.put_small(chan, bytes, handles, size, flags);
            return Ok(());
        }
        let body = match body {
            Body::Owned(b) if table == 0 => b.split().freeze(),
            body => {
                // Rare: a large message with handles (the table goes in
                // front), or one that is not ours to take.
                let mut whole = BytesMut::with_capacity(size);
                put_table(&mut whole, handles);
                match body {
                    Body::Owned(b) => {
                        whole.extend_from_slice(b);
                        b.clear();
                    }
                    Body::Borrowed(s) => whole.extend_from_slice(s),
                }
                whole.freeze()
            }
        };
        if c.nothing_pending() {
            self.ready.push_back(chan);
        }
        c.pending.get_or_insert_default().queue.push_back(Pending {
            body,
            handles: table > 0,
        });
        Ok(())
    }

    /// Sends messages without handles on `chan` from the front of a run:
    /// `bodies` holds them back to back, their sizes in order in `lens`.
    /// Each goes as [`can_send`](Self::can_send) then
    /// [`send_slice`](Self::send_slice) would send it, with the channel
    /// looked up once, while that is one frame now: credit for it, at most
    /// one chunk and the peer's message limit, nothing of the channel
    /// queued before it. Returns how many messages went, and their bytes
    /// in `bodies`; the caller sends the rest, if any, one by one, which
    /// says why each waits or fails.
    pub fn send_run(
        &mut self,
        chan: ChanId,
        bodies: &[u8],
        lens: impl IntoIterator<Item = usize>,
    ) -> (usize, usize) {
        if !self.is_open() {
            return (0, 0);
        }
        let most = self.send_limit().min(self.limits.chunk_size);
        let Some(c) = self.chans.get_mut(&chan) else {
            return (0, 0);
        };
        if c.role != Role::Sending || c.state != State::Open || c.close_after.is_some() {
            return (0, 0);
        }
        let (mut sent, mut at) = (0, 0);
        for len in lens {
            let Some(body) = bodies.get(at..at + len) else {
                break;
            };
            if c.flow.credit() == 0 || len > most || !c.nothing_pending() {
                break;
            }
            c.flow.spend();
            c.abandoned = false;
            c.bytes += len as u64;
            put_whole(&mut self.out, chan, body, &[], len, 0);
            sent += 1;
            at += len;
        }
        if sent > 0 {
            self.sent_total += sent as u64;
            self.counters.frames_out += sent as u64;
            self.small_queued = true;
        }
        (sent, at)
    }

    /// Queues one `DATA` frame holding a whole message (`size`: its
    /// handle table and `body`) in the transmit buffer, and counts it.
    fn put_small(
        &mut self,
        chan: ChanId,
        body: &[u8],
        handles: &[HandleDesc],
        size: usize,
        flags: u8,
    ) {
        self.small_queued = true;
        self.counters.frames_out += 1;
        put_whole(&mut self.out, chan, body, handles, size, flags);
    }

    /// Checks a message of `body` bytes with `handles` channel handles
    /// against ours and the peer's limits, as sending it would; returns the
    /// size of its handle table. Lets a caller refuse a message before it
    /// allocates the handles' channels.
    pub fn check_message(&self, body: usize, handles: usize) -> Result<usize, FinishError> {
        let table = table_len(handles);
        let handle_limit = self.send_handle_limit();
        if handles > handle_limit || table > self.limits.chunk_size {
            return Err(FinishError::TooManyHandles {
                count: handles,
                limit: handle_limit,
            });
        }
        let size = body + table;
        let limit = self.send_limit();
        if size > limit {
            return Err(FinishError::TooLarge { size, limit });
        }
        Ok(table)
    }

    /// Reports that the program took `taken` messages from receiving
    /// channel `chan` and that `grant` slots are free for the peer. Both
    /// leave in one `CREDIT` at the next transmit, coalesced with anything
    /// else pending for the channel, never held back for more.
    pub fn credit_update(&mut self, chan: ChanId, grant: u32, taken: u32) {
        let Some(c) = self.chans.get_mut(&chan) else {
            return;
        };
        if c.role != Role::Receiving || c.state != State::Open {
            return;
        }
        if c.flow.took(grant, taken) {
            self.credit_due.push(chan);
        }
        self.credit_urgent |= c.flow.urgent();
    }

    /// For a rendezvous (capacity 0) receiving channel: grants the peer one
    /// credit, at once, if it holds none and every message it sent was
    /// reported taken, so the sender's `credit + unconfirmed <= 1` holds.
    /// Returns whether a grant was sent.
    pub fn rendezvous_grant(&mut self, chan: ChanId) -> bool {
        let Some(c) = self.chans.get(&chan) else {
            return false;
        };
        if c.role != Role::Receiving
            || c.state != State::Open
            || !c.flow.may_grant_rendezvous()
            || c.assembling.is_some()
        {
            return false;
        }
        self.credit_update(chan, 1, 0);
        true
    }

    /// The receiving side's capacity of `chan` (0 if unknown).
    pub fn capacity_of(&self, chan: ChanId) -> u32 {
        self.chans.get(&chan).map_or(0, |c| c.flow.capacity())
    }

    /// Whether `chan` is open (not opening, requested or closing).
    pub fn is_channel_open(&self, chan: ChanId) -> bool {
        self.chans
            .get(&chan)
            .is_some_and(|c| c.state == State::Open)
    }

    /// Whether `chan` is in the table.
    pub fn has_channel(&self, chan: ChanId) -> bool {
        self.chans.contains_key(&chan)
    }

    /// Where the last message sent on rendezvous channel `chan` stands:
    /// taken, not yet, or never (the channel closed or the connection
    /// ended first). A `Never` is told once.
    pub fn take_state(&mut self, chan: ChanId) -> Take {
        if let Some(c) = self.chans.get(&chan) {
            return match c.flow.unconfirmed() {
                0 => Take::Taken,
                _ if self.is_ended() => Take::Never,
                _ => Take::Waiting,
            };
        }
        match self.untaken.iter().position(|x| *x == chan) {
            Some(i) => {
                self.untaken.swap_remove(i);
                Take::Never
            }
            None => Take::Taken,
        }
    }

    /// The send waiting for the last message on rendezvous channel `chan`
    /// to be taken was given up: nobody will ask [`take_state`].
    ///
    /// [`take_state`]: Connection::take_state
    pub fn give_up_take(&mut self, chan: ChanId) {
        match self.chans.get_mut(&chan) {
            Some(c) => c.abandoned = true,
            None => self.untaken.retain(|x| *x != chan),
        }
    }

    /// Messages sent on `chan` whose delivery is not yet confirmed.
    pub fn unconfirmed_on(&self, chan: ChanId) -> u64 {
        self.chans.get(&chan).map_or(0, |c| c.flow.unconfirmed())
    }

    /// Messages sent on `chan` so far: the sequence number of the last.
    pub fn sent_on(&self, chan: ChanId) -> u64 {
        self.chans.get(&chan).map_or(0, |c| c.flow.sent())
    }

    /// Credit granted to the peer on receiving channel `chan` and not yet used.
    pub fn outstanding(&self, chan: ChanId) -> u32 {
        self.chans.get(&chan).map_or(0, |c| c.flow.outstanding())
    }

    /// Closes `chan` from this side. On a sending channel the close follows
    /// any chunks still pending. Idempotent.
    pub fn close(&mut self, chan: ChanId, code: CloseCode, reason: &str) {
        let Some(c) = self.chans.get_mut(&chan) else {
            return;
        };
        match c.state {
            State::Closing => {}
            State::Requested => self.reject(chan, RejectCode::Closed, reason),
            State::Opening => {
                // Closed once the answer arrives (ACCEPT or REJECT may
                // already be on the way).
                if c.close_after.is_none() {
                    c.close_after = Some(Box::new((code, reason.to_owned())));
                }
            }
            State::Open => {
                if !c.nothing_pending() {
                    if c.close_after.is_none() {
                        c.close_after = Some(Box::new((code, reason.to_owned())));
                    }
                    return;
                }
                Self::confirm_takes(&mut self.out, &mut self.counters, chan, c);
                c.state = State::Closing;
                c.flow.unmark();
                c.skipping = c.assembling.take().is_some();
                Frame::Close {
                    chan,
                    code,
                    reason: reason.to_owned(),
                }
                .encode(&mut self.out);
                self.counters.frames_out += 1;
                self.credit_due.retain(|x| *x != chan);
            }
        }
    }

    /// Starts a graceful end: goodbye is sent after every pending chunk
    /// (at once if the connection failed). Idempotent.
    pub fn goodbye(&mut self, reason: &str) {
        if self.goodbye == Goodbye::None {
            if matches!(self.state, ConnState::Ended(Some(_))) {
                self.ready.clear();
            }
            self.goodbye = Goodbye::Queued(reason.to_owned());
        }
    }

    /// Whether our goodbye has been handed to [`take_transmit`](Self::take_transmit).
    pub fn goodbye_sent(&self) -> bool {
        self.goodbye == Goodbye::Sent
    }

    /// The protocol error that ended the connection, if any.
    pub fn error(&self) -> Option<&ProtoError> {
        match &self.state {
            ConnState::Ended(Some(e)) => Some(e),
            _ => None,
        }
    }

    /// Whether there is anything to transmit.
    pub fn wants_transmit(&self) -> bool {
        if let Resume::On(r) = &self.resume {
            match r.link {
                LinkState::Down => return false,
                LinkState::Resuming => return !r.prefix.is_empty(),
                LinkState::Up if !r.prefix.is_empty() => return true,
                LinkState::Up => {}
            }
        }
        self.has_frames_to_write() || (self.credit_urgent && !self.credit_due.is_empty())
    }

    /// Whether the only thing to write now is urgent `CREDIT`s.
    pub fn only_credit_to_write(&self) -> bool {
        self.credit_urgent && !self.credit_due.is_empty() && !self.has_frames_to_write()
    }

    /// Whether anything but `CREDIT`s that may wait is to be written.
    fn has_frames_to_write(&self) -> bool {
        !self.out.is_empty()
            || !self.ready.is_empty()
            || self.pong_due.is_some()
            || matches!(self.goodbye, Goodbye::Queued(_))
    }

    /// Whether the writer must run: there is something to write now, or a
    /// `CREDIT` that may wait whose timer no transmit has armed yet.
    pub fn needs_writer(&self) -> bool {
        if !self.link_up() {
            return self.wants_transmit();
        }
        let ack_unarmed = matches!(&self.resume,
            Resume::On(r) if r.rx > r.rx_reported && r.ack_since.is_none());
        self.wants_transmit()
            || ack_unarmed
            || (!self.credit_due.is_empty() && self.credit_lazy_since.is_none())
    }

    /// Starts the wait of pending `CREDIT`s that may wait, unless a
    /// transmit started it already, and returns when they are due. The
    /// task that read the messages they confirm arms a timer for that
    /// time, so the writer is not woken only to arm its own: most such
    /// `CREDIT`s leave sooner, with the next write (an answer, the next
    /// request). `None` with nothing waiting, or when it must go now (it
    /// is [urgent](Self::wants_transmit), or the link is down).
    pub fn arm_lazy_credit(&mut self, now: Instant) -> Option<Instant> {
        if self.credit_due.is_empty() || self.credit_urgent || !self.link_up() {
            return None;
        }
        let since = *self.credit_lazy_since.get_or_insert(now);
        Some(since + ACK_DELAY)
    }

    /// Whether `CREDIT`s that may wait are pending (they leave with the
    /// next write, or at [`poll_timeout`](Self::poll_timeout)).
    pub fn credit_waiting(&self) -> bool {
        !self.credit_due.is_empty()
    }

    /// Appends the bytes to write to `dst` and returns whether there are
    /// any. Pending credit, a due pong and up to a budget of large-message
    /// chunks (round-robin over channels) are added first.
    pub fn take_transmit(&mut self, dst: &mut BytesMut, now: Instant) -> bool {
        let mut segs = Vec::new();
        if !self.take_segments(&mut segs, now) {
            return false;
        }
        for s in segs {
            dst.extend_from_slice(&s);
        }
        true
    }

    /// Tells whether the stream made the last write wait for room. A
    /// large message alone on the connection leaves four chunks per
    /// transmit while the stream takes each write at once, and one chunk,
    /// like any other, while it does not: on a link slower than the
    /// sender, a small message queued during a write then waits behind one
    /// chunk, not several. A driver calls this after each write it made
    /// of what [`take_segments`](Self::take_segments) handed out.
    ///
    /// ```
    /// use std::time::Instant;
    /// use netchan::proto::{CodecId, Connection, Limits, Side};
    ///
    /// let mut conn = Connection::new(Side::Dialer, Limits::default(), CodecId::Bincode, Instant::now());
    /// let mut segments = Vec::new();
    /// // The hello goes first; the socket took it at once.
    /// assert!(conn.take_segments(&mut segments, Instant::now()));
    /// conn.set_stream_full(false);
    /// // Had the write waited for room (a slow link), the next transmits
    /// // would carry at most one chunk of a large message each.
    /// conn.set_stream_full(true);
    /// ```
    pub fn set_stream_full(&mut self, full: bool) {
        self.stream_full = full;
    }

    /// As [`take_transmit`](Self::take_transmit), but hands the bytes out
    /// as segments to write in order (with one vectored write): chunks of
    /// large messages are slices of the encoded message, never copied.
    pub fn take_segments(&mut self, dst: &mut Vec<Bytes>, now: Instant) -> bool {
        if self.goodbye == Goodbye::Sent {
            // Nothing may follow our goodbye.
            self.out.clear();
            self.ready.clear();
            self.credit_due.clear();
            self.credit_urgent = false;
            self.credit_lazy_since = None;
            self.pong_due = None;
            return false;
        }
        let before = dst.len();
        if let Resume::On(r) = &mut self.resume {
            match r.link {
                LinkState::Down => return false,
                LinkState::Resuming => {
                    dst.append(&mut r.prefix);
                    return self.transmitted(dst, before, now);
                }
                LinkState::Up => dst.append(&mut r.prefix),
            }
        }
        let logged_from = dst.len();
        let lazy_due = self
            .credit_lazy_since
            .is_some_and(|t| now.saturating_duration_since(t) >= ACK_DELAY);
        let send_credit = !self.credit_due.is_empty()
            && (self.credit_urgent || lazy_due || self.has_frames_to_write());
        if !self.credit_due.is_empty() && !send_credit && self.credit_lazy_since.is_none() {
            self.credit_lazy_since = Some(now);
        }
        if send_credit {
            self.credit_urgent = false;
            self.credit_lazy_since = None;
        }
        let credit_due = if send_credit {
            std::mem::take(&mut self.credit_due)
        } else {
            Vec::new()
        };
        for chan in credit_due {
            if let Some((grant, received)) =
                self.chans.get_mut(&chan).and_then(|c| c.flow.credit_due())
            {
                Frame::Credit {
                    chan,
                    grant,
                    received,
                }
                .encode(&mut self.out);
                self.counters.frames_out += 1;
            }
        }
        if let Some(n) = self.pong_due.take() {
            Frame::Pong(n).encode(&mut self.out);
            self.counters.frames_out += 1;
        }
        // One chunk per transmit: a small message queued meanwhile waits
        // behind at most one chunk of a large one. A large message alone on
        // a connection where no small one went for `MIXED_QUIET`, while the
        // stream takes each write at once, leaves in larger writes (see
        // `SOLO_CHUNKS`).
        if std::mem::take(&mut self.small_queued) {
            self.mixed_at = Some(now);
        }
        let alone = self.ready.len() == 1
            && !self.stream_full
            && self
                .mixed_at
                .is_none_or(|t| now.saturating_duration_since(t) >= MIXED_QUIET);
        let chunks = if alone { SOLO_CHUNKS } else { TRANSMIT_CHUNKS };
        let mut budget = chunks * self.limits.chunk_size;
        while budget > 0 {
            let Some(chan) = self.ready.pop_front() else {
                break;
            };
            budget = budget.saturating_sub(self.emit_chunk(chan, dst));
        }
        if self.ready.is_empty() {
            if let Goodbye::Queued(reason) = &self.goodbye {
                Frame::Goodbye {
                    reason: reason.clone(),
                }
                .encode(&mut self.out);
                self.counters.frames_out += 1;
                self.goodbye = Goodbye::Sent;
            }
        }
        self.replies = 0;
        if !self.out.is_empty() {
            dst.push(self.out.split().freeze());
            self.reserve_out();
        }
        if let Resume::On(r) | Resume::Pending(r) = &mut self.resume {
            for s in &dst[logged_from..] {
                let mut s = s.clone();
                // Our first hello leads the first transmit; it is not part
                // of the frame stream.
                let skip = self.hello_unlogged.min(s.len());
                self.hello_unlogged -= skip;
                r.log.push(s.split_off(skip));
            }
            // An ACK rides with any write, or leaves on its own
            // `ACK_DELAY` after it was first found waiting. It is not part
            // of the stream: not logged, not counted by the peer.
            let owed = r.rx > r.rx_reported;
            let timed_out = r
                .ack_since
                .is_some_and(|t| now.saturating_duration_since(t) >= ACK_DELAY);
            if owed && (dst.len() > before || timed_out) {
                let mut ack = BytesMut::with_capacity(HEADER_LEN + 8);
                Frame::Ack(r.rx).encode(&mut ack);
                dst.push(ack.freeze());
                r.rx_reported = r.rx;
                r.ack_since = None;
                self.counters.frames_out += 1;
            } else if owed && r.ack_since.is_none() {
                r.ack_since = Some(now);
            }
        }
        self.transmitted(dst, before, now)
    }

    /// Counts what a transmit handed out from `before` on; whether it was
    /// anything.
    fn transmitted(&mut self, dst: &[Bytes], before: usize, now: Instant) -> bool {
        if dst.len() == before {
            return false;
        }
        self.counters.bytes_out += dst[before..].iter().map(|b| b.len() as u64).sum::<u64>();
        self.last_tx = now;
        true
    }

    /// Bytes and frames this connection has moved each way.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Every channel in the table, with its flow state and traffic.
    pub fn channels(&self) -> impl Iterator<Item = ChannelCounters<'_>> + '_ {
        self.chans.iter().map(|(&chan, c)| ChannelCounters {
            chan,
            name: c.name.as_deref(),
            role: c.role,
            open: c.state == State::Open,
            capacity: c.flow.capacity(),
            credit: c.flow.credit(),
            unconfirmed: c.flow.unconfirmed(),
            outstanding: c.flow.outstanding(),
            messages: match c.role {
                Role::Sending => c.flow.sent(),
                Role::Receiving => c.flow.delivered(),
            },
            bytes: c.bytes,
        })
    }

    /// Keeps room in the transmit buffer, whose earlier bytes may still be
    /// shared with segments being written.
    fn reserve_out(&mut self) {
        if self.out.capacity() - self.out.len() < OUT_MIN_ROOM {
            self.out.reserve(OUT_ROOM);
        }
    }

    /// Emits one chunk of `chan`'s first pending message and requeues the
    /// channel if more remain. Returns the bytes emitted.
    fn emit_chunk(&mut self, chan: ChanId, dst: &mut Vec<Bytes>) -> usize {
        let chunk_size = self.limits.chunk_size;
        self.reserve_out();
        let Some(c) = self.chans.get_mut(&chan) else {
            return 0;
        };
        let Some(out) = c.pending.as_mut() else {
            return 0;
        };
        let Some(p) = out.queue.front() else {
            return 0;
        };
        let off = out.off;
        let n = (p.body.len() - off).min(chunk_size);
        let end = off + n == p.body.len();
        let mut flags = if end { FLAG_END } else { 0 };
        if off == 0 && p.handles {
            flags |= FLAG_HANDLES;
        }
        let start = self.out.len();
        self.out.put_bytes(0, HEADER_LEN);
        patch_header(&mut self.out, start, n, Kind::Data, flags, chan);
        self.counters.frames_out += 1;
        dst.push(self.out.split().freeze());
        dst.push(p.body.slice(off..off + n));
        if end {
            out.queue.pop_front();
            out.off = 0;
        } else {
            out.off = off + n;
        }
        if !out.queue.is_empty() {
            self.ready.push_back(chan);
        } else {
            c.pending = None;
            if let Some((code, reason)) = c.close_after.take().map(|b| *b) {
                self.close(chan, code, &reason);
            }
        }
        HEADER_LEN + n
    }

    /// When [`handle_timeout`](Self::handle_timeout) next wants to run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_ended() || !self.link_up() {
            return None;
        }
        let keepalive =
            (self.last_tx + self.limits.keepalive).min(self.last_rx + self.limits.dead_after);
        let at = match self.credit_lazy_since {
            Some(t) if !self.credit_due.is_empty() => keepalive.min(t + ACK_DELAY),
            _ => keepalive,
        };
        Some(match &self.resume {
            Resume::On(r) => r.ack_since.map_or(at, |t| at.min(t + ACK_DELAY)),
            _ => at,
        })
    }

    /// Runs keepalive: a ping when we have been quiet, an error when the
    /// peer has been silent too long.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ProtoError> {
        if self.is_ended() || !self.link_up() {
            return Ok(());
        }
        if now.saturating_duration_since(self.last_rx) >= self.limits.dead_after {
            return Err(self.fail(ProtoError::KeepaliveTimeout(self.limits.dead_after)));
        }
        if now.saturating_duration_since(self.last_tx) >= self.limits.keepalive
            && self.out.is_empty()
            && self.goodbye == Goodbye::None
        {
            self.ping_seq += 1;
            Frame::Ping(self.ping_seq).encode(&mut self.out);
            self.counters.frames_out += 1;
        }
        Ok(())
    }

    /// Ends the connection locally (the transport failed).
    pub fn abort(&mut self) {
        if !self.is_ended() {
            self.state = ConnState::Ended(None);
        }
    }
}

/// Where a message sent on a rendezvous channel stands
/// ([`Connection::take_state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// The receiving program took it.
    Taken,
    /// Not taken yet; the channel is open.
    Waiting,
    /// Never taken: the channel closed or the connection ended first.
    Never,
}

/// Why a channel could not be opened or allocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// The connection is not open.
    Ended,
    /// The channel limit is reached.
    TooManyChannels(usize),
    /// The name is longer than the wire allows.
    NameTooLong,
    /// Every channel id of this side was used.
    IdsExhausted,
}

/// Writes one `DATA` frame holding a whole message (`size`: its handle
/// table and `body`) to `out`.
fn put_whole(
    out: &mut BytesMut,
    chan: ChanId,
    body: &[u8],
    handles: &[HandleDesc],
    size: usize,
    flags: u8,
) {
    let start = out.len();
    out.reserve(HEADER_LEN + size);
    out.put_bytes(0, HEADER_LEN);
    put_table(out, handles);
    out.extend_from_slice(body);
    patch_header(out, start, size, Kind::Data, flags | FLAG_END, chan);
}

/// Where [`Connection::poll_input_with`] hands small messages: the
/// channel and the payload.
pub type OnSmall<'a> = &'a mut dyn FnMut(ChanId, &[u8]);

/// The largest message [`Connection::poll_input_with`] hands over by
/// slice. Larger ones are as cheap to move as a buffer of their own.
pub const SMALL_MESSAGE: usize = 512;

/// The transmit buffer grows by this much when less than
/// `OUT_MIN_ROOM` is left.
const OUT_ROOM: usize = 16 << 10;
const OUT_MIN_ROOM: usize = 1 << 10;

/// Size of a hello; re-exported for the driver's first read.
pub const HELLO_SIZE: usize = HELLO_LEN;

impl Resumable {
    fn new(token: [u8; 16]) -> Resumable {
        Resumable {
            token,
            log: Replay::default(),
            rx: 0,
            rx_reported: 0,
            ack_since: None,
            link: LinkState::Up,
            prefix: Vec::new(),
            offer_seen: false,
        }
    }
}
