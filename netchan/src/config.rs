//! [`Config`]: limits, timeouts and codec for a session or exporter.

use std::time::Duration;

use crate::proto::{CodecId, Limits};

/// Settings of a session or exporter: limits, timeouts, codec.
///
/// Every setter returns the updated config, so settings chain:
///
/// ```
/// use std::time::Duration;
/// let cfg = netchan::Config::default()
///     .max_message_len(1 << 20)
///     .max_channels(256)
///     .handshake_timeout(Duration::from_secs(5))
///     .keepalive(Duration::from_secs(10));
/// assert_eq!(cfg.get_max_message_len(), 1 << 20);
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) limits: Limits,
    pub(crate) handshake_timeout: Duration,
    pub(crate) codec: CodecId,
    pub(crate) close_timeout: Duration,
    pub(crate) max_rpc_in_flight: usize,
    pub(crate) rpc_deadline_cap: Duration,
    #[cfg(feature = "tls")]
    pub(crate) tls_server: Option<crate::tls::ServerTls>,
    #[cfg(feature = "tls")]
    pub(crate) tls_client: Option<crate::tls::ClientTls>,
    pub(crate) allow_plaintext: bool,
    pub(crate) reconnect: Option<Reconnect>,
    pub(crate) resume_grace: Duration,
    pub(crate) cluster_buffer: usize,
}

/// [`Config::cluster_buffer`] unless set.
const DEFAULT_CLUSTER_BUFFER: usize = 256;

impl Default for Config {
    fn default() -> Config {
        Config {
            limits: Limits::default(),
            handshake_timeout: Duration::from_secs(10),
            codec: CodecId::Bincode,
            close_timeout: Duration::from_secs(5),
            max_rpc_in_flight: 1024,
            rpc_deadline_cap: Duration::from_secs(3600),
            #[cfg(feature = "tls")]
            tls_server: None,
            #[cfg(feature = "tls")]
            tls_client: None,
            allow_plaintext: false,
            reconnect: None,
            resume_grace: Duration::from_secs(30),
            cluster_buffer: DEFAULT_CLUSTER_BUFFER,
        }
    }
}

impl Config {
    /// The largest message this side accepts, in bytes (default 16 MiB).
    /// The peer learns it in the handshake and refuses to send larger ones.
    pub fn max_message_len(mut self, n: usize) -> Config {
        self.limits.max_message_len = n.clamp(64, u32::MAX as usize);
        self
    }

    /// The largest message accepted.
    pub fn get_max_message_len(&self) -> usize {
        self.limits.max_message_len
    }

    /// Open channels per connection, counting both sides (default 1024).
    /// The lower of the two sides' values applies.
    pub fn max_channels(mut self, n: usize) -> Config {
        self.limits.max_channels = n.clamp(1, u32::MAX as usize);
        self
    }

    /// Channels the peer asked for that are not yet answered (default 128).
    pub fn max_pending_opens(mut self, n: usize) -> Config {
        self.limits.max_pending_opens = n.max(1);
        self
    }

    /// Channel handles inside one message (default 128, at most 65,535).
    /// The peer learns it in the handshake; a value carrying more handles
    /// than the lower of the two sides' limits fails its own send.
    pub fn max_handles(mut self, n: usize) -> Config {
        self.limits.max_handles = n.min(u16::MAX as usize);
        self
    }

    /// Size of the chunks large messages are split into (default 64 KiB,
    /// at least 4 KiB so that a full handle table fits in one chunk).
    /// Smaller chunks let small messages on other channels through sooner.
    pub fn chunk_size(mut self, n: usize) -> Config {
        self.limits.chunk_size = n.clamp(4096, 1 << 24);
        self
    }

    /// How long TCP connect, TLS and the hello may take together (default 10 s).
    pub fn handshake_timeout(mut self, d: Duration) -> Config {
        self.handshake_timeout = d;
        self
    }

    /// Keepalive interval (default 15 s): a ping is sent after this long
    /// without sending, and the peer is presumed dead after three intervals
    /// without receiving anything.
    pub fn keepalive(mut self, d: Duration) -> Config {
        let d = d.max(Duration::from_millis(10));
        self.limits.keepalive = d;
        self.limits.dead_after = d * 3;
        self
    }

    /// How long `close` waits for the peer to acknowledge (default 5 s).
    pub fn close_timeout(mut self, d: Duration) -> Config {
        self.close_timeout = d;
        self
    }

    /// RPC calls in flight per connection and direction (default 1024):
    /// further calls wait, and a server runs at most this many handlers
    /// for one client.
    pub fn max_rpc_in_flight(mut self, n: usize) -> Config {
        self.max_rpc_in_flight = n.max(1);
        self
    }

    /// The longest deadline a server grants a peer's call (default 1 h);
    /// calls without a deadline get this one on the server.
    pub fn rpc_deadline_cap(mut self, d: Duration) -> Config {
        self.rpc_deadline_cap = d;
        self
    }

    /// Serve TLS 1.3 with these settings (`Exporter::bind_with`,
    /// `netchan::listen_with`).
    #[cfg(feature = "tls")]
    pub fn tls_server(mut self, tls: crate::tls::ServerTls) -> Config {
        self.tls_server = Some(tls);
        self
    }

    /// Connect with TLS 1.3 with these settings (`Session::connect_with`,
    /// `netchan::dial_with`).
    #[cfg(feature = "tls")]
    pub fn tls_client(mut self, tls: crate::tls::ClientTls) -> Config {
        self.tls_client = Some(tls);
        self
    }

    /// Let an exporter serve plaintext on an address other than loopback.
    /// Without this, binding a non-loopback address without TLS fails:
    /// anyone on the network could read and inject messages.
    pub fn allow_plaintext(mut self) -> Config {
        self.allow_plaintext = true;
        self
    }

    /// Connecting side: when the connection breaks, redial and resume the
    /// same session with `policy`, so that channels, pipes, services and
    /// calls in flight carry on with nothing lost and nothing twice. The
    /// accepting side must be an [`Exporter`](crate::Exporter) (it keeps a
    /// broken session for its [`resume_grace`](Config::resume_grace)).
    /// Progress shows on [`Session::events`](crate::Session::events).
    ///
    /// ```
    /// use std::time::Duration;
    /// use netchan::{Config, Reconnect};
    /// let cfg = Config::default().reconnect(
    ///     Reconnect::default()
    ///         .initial_delay(Duration::from_millis(50))
    ///         .max_delay(Duration::from_secs(2))
    ///         .give_up_after(Some(Duration::from_secs(60))),
    /// );
    /// assert!(cfg.get_reconnect().is_some());
    /// ```
    pub fn reconnect(mut self, policy: Reconnect) -> Config {
        self.reconnect = Some(policy);
        self
    }

    /// The reconnect policy, if any.
    pub fn get_reconnect(&self) -> Option<&Reconnect> {
        self.reconnect.as_ref()
    }

    /// Accepting side: how long a session whose connection broke waits for
    /// its peer to resume it (default 30 s). Meanwhile it holds what was
    /// sent and not acknowledged, and the values an exporter gave it; after
    /// it, the session is lost as a failed connection is (values given
    /// back, receivers get the error).
    ///
    /// ```
    /// use std::time::Duration;
    /// let cfg = netchan::Config::default().resume_grace(Duration::from_secs(5));
    /// assert_eq!(cfg.get_resume_grace(), Duration::from_secs(5));
    /// ```
    pub fn resume_grace(mut self, d: Duration) -> Config {
        self.resume_grace = d;
        self
    }

    /// How long a broken session waits to be resumed.
    pub fn get_resume_grace(&self) -> Duration {
        self.resume_grace
    }

    /// The buffer, in values, of the channels of [`listen`](crate::listen)
    /// and [`dial`](crate::dial) (default 256): on a client, for its share
    /// of the server's values; on the server, for the results of each
    /// client. A side reads it from its own config
    /// ([`listen_with`](crate::listen_with),
    /// [`Exporter::bind_with`](crate::Exporter::bind_with),
    /// [`dial_with`](crate::dial_with)).
    ///
    /// A larger buffer lets more values go in each write and so costs
    /// fewer system calls per value: the `cluster` example, 50 clients on
    /// one two-core machine, moved 1.3 to 1.6 M values a second each way
    /// with 64, 1.9 to 2.3 M with 256 and 2.2 to 2.6 M with 1024. It
    /// also holds more memory for large values, and queues more values
    /// at a busy client while another has room: for long tasks, a small
    /// buffer shares the work out more evenly (0 hands each value to a
    /// client that is taking one, as an unbuffered Go channel does).
    ///
    /// ```
    /// let cfg = netchan::Config::default().cluster_buffer(1024);
    /// assert_eq!(cfg.get_cluster_buffer(), 1024);
    /// ```
    pub fn cluster_buffer(mut self, n: usize) -> Config {
        self.cluster_buffer = n;
        self
    }

    /// The buffer of the `listen` / `dial` channels.
    pub fn get_cluster_buffer(&self) -> usize {
        self.cluster_buffer
    }

    /// Use postcard instead of bincode for messages. Both sides must agree;
    /// a mismatch fails the handshake with a clear error.
    #[cfg(feature = "postcard")]
    pub fn postcard(mut self) -> Config {
        self.codec = CodecId::Postcard;
        self
    }
}

/// How a connecting side redials after its connection broke (see
/// [`Config::reconnect`]): exponential backoff from `initial_delay`,
/// doubling up to `max_delay`, each delay with up to ±25 % random jitter
/// so that many clients do not redial in step, until the session resumes
/// or `give_up_after` has passed since the connection broke.
///
/// The default starts at 100 ms, caps at 5 s and never gives up (the
/// accepting side's grace period still ends a session it no longer
/// keeps: the resume is then refused and the session is lost).
///
/// ```
/// use std::time::Duration;
/// let r = netchan::Reconnect::default().max_delay(Duration::from_secs(1));
/// assert_eq!(r.delay(1), Duration::from_millis(100));
/// assert_eq!(r.delay(20), Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconnect {
    initial: Duration,
    max: Duration,
    give_up: Option<Duration>,
}

impl Default for Reconnect {
    fn default() -> Reconnect {
        Reconnect {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            give_up: None,
        }
    }
}

impl Reconnect {
    /// The delay before the second attempt (the first is immediate).
    pub fn initial_delay(mut self, d: Duration) -> Reconnect {
        self.initial = d;
        self
    }

    /// The longest delay between attempts.
    pub fn max_delay(mut self, d: Duration) -> Reconnect {
        self.max = d;
        self
    }

    /// Give up (the session is lost) when it has not resumed this long
    /// after the connection broke; `None`: never.
    pub fn give_up_after(mut self, d: Option<Duration>) -> Reconnect {
        self.give_up = d;
        self
    }

    /// When to give up, if ever.
    pub fn get_give_up_after(&self) -> Option<Duration> {
        self.give_up
    }

    /// The delay after failed attempt `attempt` (from 1), before jitter:
    /// `initial_delay * 2^(attempt-1)`, at most `max_delay`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(20);
        self.initial.saturating_mul(factor).min(self.max)
    }
}
