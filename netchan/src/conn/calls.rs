//! Per-method RPC counters of one connection: the table behind
//! [`SessionStats::methods`](super::SessionStats::methods).
//!
//! The RPC layer asks for one [`MethodCounters`] per (service, method,
//! side) once, keeps the `Arc`, and records each call into it with a few
//! relaxed atomics: no lock and no allocation per call. This module knows
//! only names and outcomes, never an RPC type.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::util::lock;

/// Which end of a call this side was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CallSide {
    /// This side called the method on its peer.
    Client,
    /// This side served the method to its peer.
    Server,
}

impl CallSide {
    /// `"client"` or `"server"`, as in spans and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            CallSide::Client => "client",
            CallSide::Server => "server",
        }
    }
}

/// How a call ended, as the RPC layer reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallEnd {
    /// The handler's result (client: received it; server: sent it).
    Completed,
    /// Client: the deadline passed.
    Timeout,
    /// Client: the connection or the service went away before the reply.
    Disconnected,
    /// Client: the peer serves no such service.
    NoSuchService,
    /// Client: the handler failed on the peer.
    Remote,
    /// Either side: a request or reply could not be encoded or decoded.
    Codec,
    /// Server: the handler panicked.
    Panicked,
    /// Server: the call's deadline passed before the handler finished.
    DeadlinePassed,
    /// Server: the caller cancelled or went away; client: the call's
    /// future was dropped before it ended.
    Cancelled,
}

/// Errors of one method by kind. Client-side calls fail with the
/// [`RpcError`](crate::RpcError) kinds; server-side calls with `panicked`,
/// `deadline_passed`, `cancelled` or `codec`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallErrors {
    /// Client: [`RpcError::Timeout`](crate::RpcError::Timeout).
    pub timeout: u64,
    /// Client: [`RpcError::Disconnected`](crate::RpcError::Disconnected).
    pub disconnected: u64,
    /// Client: [`RpcError::NoSuchService`](crate::RpcError::NoSuchService).
    pub no_such_service: u64,
    /// Client: [`RpcError::Remote`](crate::RpcError::Remote) (the handler
    /// panicked on the peer, for example).
    pub remote: u64,
    /// Either side: [`RpcError::Codec`](crate::RpcError::Codec); on the
    /// server, a result that could not be sent (too large, for example).
    pub codec: u64,
    /// Server: the handler panicked.
    pub panicked: u64,
    /// Server: the caller's deadline (or `Config`'s cap) passed first.
    pub deadline_passed: u64,
    /// Server: the caller cancelled the call or went away. Client: the
    /// call's future was dropped before it ended.
    pub cancelled: u64,
}

impl CallErrors {
    /// Every error, whatever its kind.
    pub fn total(&self) -> u64 {
        self.timeout
            + self.disconnected
            + self.no_such_service
            + self.remote
            + self.codec
            + self.panicked
            + self.deadline_passed
            + self.cancelled
    }

    /// Each kind with its name (as in the `kind` label of
    /// `netchan_rpc_errors_total`) and count.
    pub fn by_kind(&self) -> [(&'static str, u64); 8] {
        [
            ("timeout", self.timeout),
            ("disconnected", self.disconnected),
            ("no_such_service", self.no_such_service),
            ("remote", self.remote),
            ("codec", self.codec),
            ("panicked", self.panicked),
            ("deadline_passed", self.deadline_passed),
            ("cancelled", self.cancelled),
        ]
    }
}

/// Latency percentiles of one method's ended calls (whatever their
/// outcome), from a fixed log-linear histogram: each percentile is the
/// upper edge of its bucket, so it is at most 1/8 (12.5 %) above the true
/// value, and never above `max`, which is exact. Microsecond buckets are
/// exact below 16 µs; beyond about 9.5 hours every call shares the last
/// bucket. All zero before the first call ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Latency {
    /// Half the calls ended within this.
    pub p50: Duration,
    /// 90 % of the calls ended within this.
    pub p90: Duration,
    /// 99 % of the calls ended within this.
    pub p99: Duration,
    /// The slowest call.
    pub max: Duration,
}

/// One RPC method on one side of a connection, as
/// [`Session::stats`](crate::Session::stats) found it.
///
/// `started == completed + errors.total() + in_flight` (up to calls that
/// started or ended while the stats were read).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use netchan::{CallSide, Session};
///
/// #[netchan::service]
/// pub trait Echo {
///     async fn echo(&self, s: String) -> String;
/// }
/// struct Me;
/// impl Echo for Me {
///     async fn echo(&self, s: String) -> String { s }
/// }
///
/// let (server, client) = Session::pair();
/// server.serve(EchoServer::new(Me));
/// let echo = EchoClient::new(&client);
/// for _ in 0..3 {
///     echo.echo("hi".into()).await?;
/// }
/// let stats = client.stats();
/// let m = stats.method("Echo", "echo", CallSide::Client).expect("called");
/// assert_eq!((m.started, m.completed, m.errors.total(), m.in_flight), (3, 3, 0, 0));
/// assert!(m.latency.p50 <= m.latency.max);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MethodStats {
    /// The name the service is served under.
    pub service: String,
    /// The method, as named in the service's trait.
    pub method: String,
    /// Whether this side called or served it.
    pub side: CallSide,
    /// Calls started.
    pub started: u64,
    /// Calls that ended with the handler's result (however the handler's
    /// own return value reads: an `Err` the handler returned counts here).
    pub completed: u64,
    /// Calls that ended without it, by kind.
    pub errors: CallErrors,
    /// Calls started and not ended.
    pub in_flight: u64,
    /// How long the ended calls took.
    pub latency: Latency,
}

/// Sub-buckets per power of two: a bucket spans at most 1/8 of its lower
/// edge.
const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
/// Powers of two covered above the exact range: up to 2^35 µs (about 9.5
/// hours) before clamping, in 8 + 32 * 8 = 264 buckets (about 2 KiB).
const OCTAVES: usize = 32;
const BUCKETS: usize = SUB + OCTAVES * SUB;

/// A fixed-size log-linear histogram of microseconds: values below 16 get
/// one bucket each, above that each power of two is split into 8.
struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    /// The exact largest value, in nanoseconds.
    max_ns: AtomicU64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            max_ns: AtomicU64::new(0),
        }
    }

    fn index(us: u64) -> usize {
        if us < SUB as u64 {
            return us as usize;
        }
        let exp = 63 - us.leading_zeros(); // >= SUB_BITS
        let sub = ((us >> (exp - SUB_BITS)) as usize) & (SUB - 1);
        (SUB + (exp - SUB_BITS) as usize * SUB + sub).min(BUCKETS - 1)
    }

    /// The exclusive upper edge of bucket `i`, in microseconds.
    fn upper(i: usize) -> u64 {
        if i < SUB {
            return i as u64 + 1;
        }
        let shift = ((i - SUB) / SUB) as u32;
        let sub = ((i - SUB) % SUB) as u64;
        ((SUB as u64 + sub) << shift) + (1 << shift)
    }

    fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[Self::index(ns / 1_000)].fetch_add(1, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    fn latency(&self) -> Latency {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let max = Duration::from_nanos(self.max_ns.load(Ordering::Relaxed));
        let total: u64 = counts.iter().sum();
        let at = |q: f64| -> Duration {
            if total == 0 {
                return Duration::ZERO;
            }
            let rank = ((total as f64 * q).ceil() as u64).max(1);
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return Duration::from_micros(Self::upper(i)).min(max);
                }
            }
            max
        };
        Latency {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max,
        }
    }
}

/// The live counters of one (service, method, side). The RPC layer calls
/// [`start`](MethodCounters::start) and then [`end`](MethodCounters::end)
/// once per call.
pub(crate) struct MethodCounters {
    service: String,
    method: &'static str,
    side: CallSide,
    started: AtomicU64,
    completed: AtomicU64,
    /// Indexed by `CallEnd as usize - 1` (every kind but `Completed`).
    errors: [AtomicU64; 8],
    latency: Histogram,
}

impl CallEnd {
    /// The outcome's name, as in the `outcome` of a call's last event.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CallEnd::Completed => "completed",
            CallEnd::Timeout => "timeout",
            CallEnd::Disconnected => "disconnected",
            CallEnd::NoSuchService => "no_such_service",
            CallEnd::Remote => "remote",
            CallEnd::Codec => "codec",
            CallEnd::Panicked => "panicked",
            CallEnd::DeadlinePassed => "deadline_passed",
            CallEnd::Cancelled => "cancelled",
        }
    }
}

impl MethodCounters {
    pub(crate) fn start(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn end(&self, how: CallEnd, took: Duration) {
        self.latency.record(took);
        match how {
            CallEnd::Completed => &self.completed,
            e => &self.errors[e as usize - 1],
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> MethodStats {
        // Ends first, then starts: a call counted as ended was counted as
        // started before, so in_flight never goes below zero.
        let completed = self.completed.load(Ordering::SeqCst);
        let e = |k: CallEnd| self.errors[k as usize - 1].load(Ordering::SeqCst);
        let errors = CallErrors {
            timeout: e(CallEnd::Timeout),
            disconnected: e(CallEnd::Disconnected),
            no_such_service: e(CallEnd::NoSuchService),
            remote: e(CallEnd::Remote),
            codec: e(CallEnd::Codec),
            panicked: e(CallEnd::Panicked),
            deadline_passed: e(CallEnd::DeadlinePassed),
            cancelled: e(CallEnd::Cancelled),
        };
        let started = self.started.load(Ordering::SeqCst);
        MethodStats {
            service: self.service.clone(),
            method: self.method.to_owned(),
            side: self.side,
            started,
            completed,
            errors,
            in_flight: started.saturating_sub(completed + errors.total()),
            latency: self.latency.latency(),
        }
    }
}

type Key = (String, &'static str, CallSide);

/// Every method called or served on one connection.
#[derive(Default)]
pub(crate) struct CallTable(Mutex<HashMap<Key, Arc<MethodCounters>>>);

impl CallTable {
    /// The counters of `method` of `service` on `side`, made on first use.
    /// Takes a lock: callers keep the result.
    pub(crate) fn method(
        &self,
        service: &str,
        method: &'static str,
        side: CallSide,
    ) -> Arc<MethodCounters> {
        let mut table = lock(&self.0);
        if let Some(c) = table.get(&(service.to_owned(), method, side)) {
            return c.clone();
        }
        let c = Arc::new(MethodCounters {
            service: service.to_owned(),
            method,
            side,
            started: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: Histogram::new(),
        });
        table.insert((service.to_owned(), method, side), c.clone());
        c
    }

    /// Every method's stats, sorted by service, method and side.
    pub(crate) fn stats(&self) -> Vec<MethodStats> {
        let all: Vec<Arc<MethodCounters>> = lock(&self.0).values().cloned().collect();
        let mut out: Vec<MethodStats> = all.iter().map(|c| c.snapshot()).collect();
        out.sort_by(|a, b| (&a.service, &a.method, a.side).cmp(&(&b.service, &b.method, b.side)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bucket_holds_the_values_it_is_indexed_by() {
        let mut prev_upper = 0;
        for i in 0..BUCKETS - 1 {
            let upper = Histogram::upper(i);
            assert!(upper > prev_upper, "bucket {i}");
            assert_eq!(Histogram::index(upper - 1), i, "top of bucket {i}");
            assert_eq!(Histogram::index(upper), i + 1, "past bucket {i}");
            let lower = prev_upper;
            if lower >= 16 {
                assert!((upper - lower) * 8 <= lower, "bucket {i} too wide");
            }
            prev_upper = upper;
        }
        assert_eq!(Histogram::index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn percentiles_are_ordered_bounded_by_max_and_within_an_eighth() {
        let h = Histogram::new();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let l = h.latency();
        assert!(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.max);
        assert_eq!(l.max, Duration::from_micros(1000));
        for (got, want) in [(l.p50, 500), (l.p90, 900), (l.p99, 990)] {
            let got = got.as_micros() as u64;
            assert!(got >= want && got <= want + want / 8, "{got} vs {want}");
        }
    }

    #[test]
    fn an_empty_histogram_reports_zero() {
        assert_eq!(Histogram::new().latency(), Latency::default());
    }

    #[test]
    fn errors_are_counted_by_kind_and_in_flight_is_what_has_not_ended() {
        let t = CallTable::default();
        let m = t.method("S", "m", CallSide::Server);
        for _ in 0..4 {
            m.start();
        }
        m.end(CallEnd::Completed, Duration::from_micros(5));
        m.end(CallEnd::Panicked, Duration::from_micros(5));
        m.end(CallEnd::Cancelled, Duration::from_micros(5));
        assert!(Arc::ptr_eq(&m, &t.method("S", "m", CallSide::Server)));
        let s = &t.stats()[0];
        assert_eq!((s.started, s.completed, s.in_flight), (4, 1, 1));
        assert_eq!(
            (s.errors.panicked, s.errors.cancelled, s.errors.total()),
            (1, 1, 2)
        );
    }
}
