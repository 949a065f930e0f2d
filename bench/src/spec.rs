//! What is measured: the workloads, their metrics, the contenders, and
//! which contender can run which workload (and, where one cannot, why).
//!
//! Nothing here runs anything; `main.rs` plans child processes from it and
//! `report.rs` prints the table in the order given here.

use std::fmt;
use std::str::FromStr;

/// One implementation under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Contender {
    Netchan,
    /// Hand-written length-prefixed frames over TCP (or TLS in TLS rows).
    Raw,
    Tarpc,
    Remoc,
}

impl Contender {
    pub(crate) const ALL: [Contender; 4] = [
        Contender::Netchan,
        Contender::Raw,
        Contender::Tarpc,
        Contender::Remoc,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Contender::Netchan => "netchan",
            Contender::Raw => "raw",
            Contender::Tarpc => "tarpc",
            Contender::Remoc => "remoc",
        }
    }
}

impl fmt::Display for Contender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Contender {
    type Err = String;
    fn from_str(s: &str) -> Result<Contender, String> {
        Contender::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| format!("unknown contender {s:?} (netchan, raw, tarpc, remoc)"))
    }
}

/// Whether a larger or a smaller value is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Better {
    Higher,
    Lower,
}

/// How a metric's value is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    /// Microseconds (latency).
    Micros,
    /// Events per second.
    PerSec,
    /// Megabytes (10^6 bytes) per second.
    MBps,
    /// Kibibytes.
    KiB,
    /// Microseconds of CPU time per operation.
    CpuMicros,
    /// OS threads.
    Threads,
}

impl Unit {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Unit::Micros => "µs",
            Unit::PerSec => "/s",
            Unit::MBps => "MB/s",
            Unit::KiB => "KiB",
            Unit::CpuMicros => "µs CPU",
            Unit::Threads => "threads",
        }
    }
}

/// One row of the table.
#[derive(Debug)]
pub(crate) struct Metric {
    /// Key in a child's result.
    pub(crate) key: &'static str,
    pub(crate) label: &'static str,
    pub(crate) unit: Unit,
    pub(crate) better: Better,
}

const fn m(key: &'static str, label: &'static str, unit: Unit, better: Better) -> Metric {
    Metric {
        key,
        label,
        unit,
        better,
    }
}

use Better::{Higher, Lower};
use Unit::{KiB, MBps, Micros, PerSec};

const SEQ_CALL: &[Metric] = &[
    m("p50", "sequential small call, p50", Micros, Lower),
    m("p99", "sequential small call, p99", Micros, Lower),
    m("p999", "sequential small call, p99.9", Micros, Lower),
];
const CALLS_64: &[Metric] = &[m(
    "rate",
    "small calls, 1 conn × 64 in flight",
    PerSec,
    Higher,
)];
const CALLS_8X8: &[Metric] = &[m(
    "rate",
    "small calls, 8 conns × 8 in flight",
    PerSec,
    Higher,
)];
const ONEWAY_CUTS: &[Metric] = &[m(
    "rate",
    "one-way 32-byte messages, a cut every 100 ms",
    PerSec,
    Higher,
)];
const ONEWAY: &[Metric] = &[m(
    "rate",
    "one-way 32-byte messages, one channel",
    PerSec,
    Higher,
)];
const ONEWAY_SINK: &[Metric] = &[m(
    "rate",
    "one-way 32-byte messages, one channel, through `Sink` (`send_all`), netchan's receiver on `recv_many`",
    PerSec,
    Higher,
)];
const BULK: &[Metric] = &[m("mbps", "1 MiB messages one way, channel", MBps, Higher)];
const BULK_VEC: &[Metric] = &[m(
    "mbps",
    "1 MiB plain `Vec<u8>` messages one way, channel",
    MBps,
    Higher,
)];
const PIPE: &[Metric] = &[m("mbps", "1 MiB writes one way, Pipe", MBps, Higher)];
const ECHO: &[Metric] = &[m(
    "mbps",
    "1 MiB echoed by a call (both ways)",
    MBps,
    Higher,
)];
const ECHO_VEC: &[Metric] = &[m(
    "mbps",
    "1 MiB plain `Vec<u8>` echoed by a call (both ways)",
    MBps,
    Higher,
)];
const TLS_SEQ_CALL: &[Metric] = &[
    m("p50", "TLS: sequential small call, p50", Micros, Lower),
    m("p99", "TLS: sequential small call, p99", Micros, Lower),
    m("p999", "TLS: sequential small call, p99.9", Micros, Lower),
];
const TLS_BULK: &[Metric] = &[m(
    "mbps",
    "TLS: 1 MiB messages one way, channel",
    MBps,
    Higher,
)];
const TLS_PIPE: &[Metric] = &[m("mbps", "TLS: 1 MiB writes one way, Pipe", MBps, Higher)];
const TLS_ECHO: &[Metric] = &[m(
    "mbps",
    "TLS: 1 MiB echoed by a call (both ways)",
    MBps,
    Higher,
)];
const RENDEZVOUS: &[Metric] = &[m("rate", "rendezvous (capacity 0) sends", PerSec, Higher)];
const HOL: &[Metric] = &[
    m(
        "p50",
        "head-of-line: small msg p50 beside 16 MiB",
        Micros,
        Lower,
    ),
    m(
        "p99",
        "head-of-line: small msg p99 beside 16 MiB",
        Micros,
        Lower,
    ),
    m("mbps", "head-of-line: the 16 MiB channel", MBps, Higher),
];
const IDLE_CONN: &[Metric] = &[
    m("server", "idle connection, server side", KiB, Lower),
    m("client", "idle connection, client side", KiB, Lower),
];
const IDLE_CHAN: &[Metric] = &[
    m("server", "idle open channel, server side", KiB, Lower),
    m("client", "idle open channel, client side", KiB, Lower),
];

/// Why a contender has no value in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotApplicable {
    TarpcNoChannels,
    NoRendezvous,
    TlsRowsRawOnly,
    RawNoChannels,
    NoResume,
}

impl NotApplicable {
    pub(crate) fn text(self) -> &'static str {
        match self {
            NotApplicable::TarpcNoChannels => {
                "tarpc is request/response only: it has no channels, byte pipes or one-way messages"
            }
            NotApplicable::NoRendezvous => {
                "remoc has no rendezvous (capacity 0) channel: its mpsc channels always buffer"
            }
            NotApplicable::TlsRowsRawOnly => {
                "TLS rows compare netchan over TLS 1.3 with raw TLS 1.3 (the raw baseline's frames over tokio-rustls, ring) only"
            }
            NotApplicable::RawNoChannels => "raw TCP has no channels to open",
            NotApplicable::NoResume => {
                "only netchan resumes a session through a cut (Config::reconnect); a cut ends the others' connections"
            }
        }
    }
}

/// A workload: one child process per contender that supports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Workload {
    SeqCall,
    Calls64,
    Calls8x8,
    OneWay32,
    OneWaySink,
    OneWayCuts,
    Bulk,
    BulkVec,
    Pipe,
    Echo,
    EchoVec,
    TlsSeqCall,
    TlsBulk,
    TlsPipe,
    TlsEcho,
    Rendezvous,
    HeadOfLine,
    IdleConn,
    IdleChan,
}

/// Bytes of a "1 MiB" payload.
pub(crate) const MIB: usize = 1 << 20;
/// Payload of a "16 MiB" message in the head-of-line workload: 1 KiB
/// short of 16 MiB so it fits every contender's default 16 MiB limit with
/// its encoding overhead.
pub(crate) const HOL_BIG: usize = (16 << 20) - 1024;
/// Calls in flight on one connection in `calls-64`.
pub(crate) const IN_FLIGHT_64: usize = 64;
/// Connections and calls in flight on each in `calls-8x8`.
pub(crate) const CONNS_8: usize = 8;
pub(crate) const IN_FLIGHT_8: usize = 8;
/// Receive capacity of the one-way channels.
pub(crate) const ONEWAY_CAPACITY: usize = 1024;
/// Receive capacity of the 1 MiB channels.
pub(crate) const BULK_CAPACITY: usize = 8;
/// Interval between two small messages in the head-of-line workload.
pub(crate) const HOL_INTERVAL_US: u64 = 1000;
/// How often `oneway-32B-cuts` cuts the connection.
pub(crate) const CUT_EVERY_MS: u64 = 100;

impl Workload {
    pub(crate) const ALL: [Workload; 19] = [
        Workload::SeqCall,
        Workload::Calls64,
        Workload::Calls8x8,
        Workload::OneWay32,
        Workload::OneWaySink,
        Workload::OneWayCuts,
        Workload::Bulk,
        Workload::BulkVec,
        Workload::Pipe,
        Workload::Echo,
        Workload::EchoVec,
        Workload::TlsSeqCall,
        Workload::TlsBulk,
        Workload::TlsPipe,
        Workload::TlsEcho,
        Workload::Rendezvous,
        Workload::HeadOfLine,
        Workload::IdleConn,
        Workload::IdleChan,
    ];

    pub(crate) fn id(self) -> &'static str {
        match self {
            Workload::SeqCall => "seq-call",
            Workload::Calls64 => "calls-64",
            Workload::Calls8x8 => "calls-8x8",
            Workload::OneWay32 => "oneway-32B",
            Workload::OneWaySink => "oneway-32B-sink",
            Workload::OneWayCuts => "oneway-32B-cuts",
            Workload::Bulk => "bulk-1MiB-channel",
            Workload::BulkVec => "bulk-1MiB-vec-channel",
            Workload::Pipe => "bulk-1MiB-pipe",
            Workload::Echo => "echo-1MiB-call",
            Workload::EchoVec => "echo-1MiB-vec-call",
            Workload::TlsSeqCall => "tls-seq-call",
            Workload::TlsBulk => "tls-bulk-1MiB-channel",
            Workload::TlsPipe => "tls-bulk-1MiB-pipe",
            Workload::TlsEcho => "tls-echo-1MiB-call",
            Workload::Rendezvous => "rendezvous",
            Workload::HeadOfLine => "head-of-line",
            Workload::IdleConn => "idle-conn",
            Workload::IdleChan => "idle-chan",
        }
    }

    pub(crate) fn from_id(s: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.id() == s)
    }

    /// Whether the workload runs over TLS.
    pub(crate) fn tls(self) -> bool {
        matches!(
            self,
            Workload::TlsSeqCall | Workload::TlsBulk | Workload::TlsPipe | Workload::TlsEcho
        )
    }

    /// The same workload without TLS.
    pub(crate) fn plain(self) -> Workload {
        match self {
            Workload::TlsSeqCall => Workload::SeqCall,
            Workload::TlsBulk => Workload::Bulk,
            Workload::TlsPipe => Workload::Pipe,
            Workload::TlsEcho => Workload::Echo,
            w => w,
        }
    }

    /// Idle-memory workloads run as a server and a client process;
    /// the rest as one process holding both.
    pub(crate) fn idle(self) -> bool {
        matches!(self, Workload::IdleConn | Workload::IdleChan)
    }

    pub(crate) fn metrics(self) -> &'static [Metric] {
        match self {
            Workload::SeqCall => SEQ_CALL,
            Workload::Calls64 => CALLS_64,
            Workload::Calls8x8 => CALLS_8X8,
            Workload::OneWay32 => ONEWAY,
            Workload::OneWaySink => ONEWAY_SINK,
            Workload::OneWayCuts => ONEWAY_CUTS,
            Workload::Bulk => BULK,
            Workload::BulkVec => BULK_VEC,
            Workload::Pipe => PIPE,
            Workload::Echo => ECHO,
            Workload::EchoVec => ECHO_VEC,
            Workload::TlsSeqCall => TLS_SEQ_CALL,
            Workload::TlsBulk => TLS_BULK,
            Workload::TlsPipe => TLS_PIPE,
            Workload::TlsEcho => TLS_ECHO,
            Workload::Rendezvous => RENDEZVOUS,
            Workload::HeadOfLine => HOL,
            Workload::IdleConn => IDLE_CONN,
            Workload::IdleChan => IDLE_CHAN,
        }
    }

    /// Whether `c` can run this workload; if not, why.
    pub(crate) fn support(self, c: Contender) -> Result<(), NotApplicable> {
        use Contender::*;
        use NotApplicable::*;
        use Workload::*;
        match (self, c) {
            (_, Netchan) => Ok(()),
            (OneWayCuts, _) => Err(NoResume),
            (IdleChan, Raw) => Err(RawNoChannels),
            (_, Raw) => Ok(()),
            (TlsSeqCall | TlsBulk | TlsPipe | TlsEcho, Tarpc | Remoc) => Err(TlsRowsRawOnly),
            (SeqCall | Calls64 | Calls8x8 | Echo | EchoVec | IdleConn, Tarpc) => Ok(()),
            (_, Tarpc) => Err(TarpcNoChannels),
            (Rendezvous, Remoc) => Err(NoRendezvous),
            (_, Remoc) => Ok(()),
        }
    }

    /// What the raw baseline does in this workload, for the notes.
    pub(crate) fn raw_note(self) -> Option<&'static str> {
        match self {
            Workload::SeqCall | Workload::TlsSeqCall => {
                Some("raw: one 16-byte request frame, one 16-byte reply frame")
            }
            Workload::Calls64 | Workload::Calls8x8 => Some(
                "raw: pipelined, the client tops the window up and writes all new requests in one write, the server answers every complete request of a read in one write",
            ),
            Workload::OneWay32 | Workload::OneWaySink => Some(
                "raw: 36-byte frames (length + 32 bytes) written in batches of 64 KiB, parsed one by one (the same in the `send().await` and the Sink rows)",
            ),
            Workload::Bulk | Workload::TlsBulk | Workload::BulkVec => Some(
                "raw: length-prefixed 1 MiB frames, read into one reused buffer (the same in the `Bytes` and the plain `Vec<u8>` rows: raw has no serde)",
            ),
            Workload::Pipe | Workload::TlsPipe => Some("raw: the bytes on the stream, unframed"),
            Workload::Echo | Workload::TlsEcho | Workload::EchoVec => Some(
                "raw: the server writes each complete frame back from its read buffer (no copy); one call in flight (the same in the `Bytes` and the plain `Vec<u8>` rows)",
            ),
            Workload::Rendezvous => Some(
                "raw: a 16-byte frame, then the receiver's echo of it as the acknowledgement (a sequential call)",
            ),
            Workload::HeadOfLine => Some(
                "raw: no multiplexing, so small and 16 MiB messages use two separate connections, and the 16 MiB side reads and writes 64 KiB at a time with a yield after each (the ideal a multiplexer approaches)",
            ),
            Workload::IdleConn => Some("raw: one tokio task per connection awaiting a read"),
            Workload::IdleChan | Workload::OneWayCuts => None,
        }
    }
}

impl Workload {
    /// What one operation of the CPU-per-operation row is; `None` where
    /// the row is not given.
    pub(crate) fn op_name(self) -> Option<&'static str> {
        match self.plain() {
            Workload::SeqCall | Workload::Calls64 | Workload::Calls8x8 => Some("call"),
            Workload::OneWay32 | Workload::OneWaySink | Workload::OneWayCuts => Some("message"),
            Workload::Rendezvous => Some("send"),
            Workload::Bulk | Workload::BulkVec | Workload::Pipe => Some("MiB"),
            Workload::Echo | Workload::EchoVec => Some("call (1 MiB each way)"),
            _ => None,
        }
    }

    /// Operations in the measuring window, from the window's event count,
    /// payload bytes and latency samples (see [`Workload::op_name`]).
    pub(crate) fn ops_in_window(self, events: u64, bytes: u64, samples: u64) -> Option<f64> {
        let mib = MIB as f64;
        match self.plain() {
            Workload::SeqCall => Some(samples as f64),
            Workload::Calls64
            | Workload::Calls8x8
            | Workload::OneWay32
            | Workload::OneWaySink
            | Workload::OneWayCuts
            | Workload::Rendezvous => Some(events as f64),
            Workload::Bulk | Workload::BulkVec | Workload::Pipe => Some(bytes as f64 / mib),
            // `bytes` counts both directions of each call.
            Workload::Echo | Workload::EchoVec => Some(bytes as f64 / (2.0 * mib)),
            _ => None,
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}
