//! Helpers shared by the netchan example binaries in `src/bin/`:
//!
//! * `echo` — Go's "channels of channels" echo server: every client hands
//!   the server its own private pair of channels inside one message.
//! * `cluster` — one server and many clients in one process on
//!   [`netchan::listen`] / [`netchan::dial`]: tasks shared out, results
//!   merged, every one accounted for. With the feature `nats`,
//!   `cluster --nats URL --role server|worker` runs it as separate
//!   processes on a NATS cluster ([`cluster_nats`]).
//! * `go-netchan` — a walk through Go's original netchan API (export,
//!   import, `ImportNValues`, `Hangup`, `Drain`, `Sync`, `Errors`).
//! * `file-share` — the "bidirectional RPC with netchan" article's app on
//!   `#[netchan::service]`: clients share directories, and read each
//!   other's files through the server ([`file_share`]).
//!
//! Run one with `cargo run -p examples --bin NAME -- --help`. Each takes
//! `RUST_LOG` ([`init_logging`]): `RUST_LOG=netchan=debug` shows every
//! connection opened, closed or failed. `echo`,
//! `cluster` and `file-share` take `--tls` ([`ServerTlsArgs`],
//! [`ClientTlsArgs`]).
#![warn(missing_docs)]

#[cfg(feature = "nats")]
pub mod cluster_nats;
pub mod file_share;
mod relay;
mod temp;
mod tls;

pub use relay::Relay;
pub use temp::TempDir;
pub use tls::{ClientTlsArgs, ServerTlsArgs, self_signed_names};

use std::fmt;
use std::str::FromStr;

/// Sends `tracing` events to stderr, filtered by `RUST_LOG`
/// (`RUST_LOG=netchan=debug`, `RUST_LOG=info`, …); without it, warnings
/// only, so an example's normal output is unchanged. Call first in `main`.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Ignored if a subscriber is already set (as in tests).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A `host:port` address as given on a command line: `127.0.0.1:2345`,
/// `localhost:2345`, `[::1]:2345`, or `:2345` (every interface, for a
/// server; `localhost` for a client).
///
/// The host is resolved only when connecting or binding, so names work.
///
/// ```
/// let a: examples::HostPort = "localhost:2345".parse().unwrap();
/// assert_eq!((a.host(), a.port()), ("localhost", 2345));
/// let b: examples::HostPort = ":2345".parse().unwrap();
/// assert_eq!(b.host(), "");
/// assert!("localhost".parse::<examples::HostPort>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    host: String,
    port: u16,
}

impl HostPort {
    /// The host part, without brackets; empty for `:port`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address to bind a server to (`:port` means every interface).
    pub fn for_bind(&self) -> (&str, u16) {
        let host = if self.host.is_empty() {
            "0.0.0.0"
        } else {
            &self.host
        };
        (host, self.port)
    }

    /// The address to connect a client to (`:port` means this machine).
    pub fn for_connect(&self) -> (&str, u16) {
        let host = if self.host.is_empty() {
            "localhost"
        } else {
            &self.host
        };
        (host, self.port)
    }
}

impl FromStr for HostPort {
    type Err = String;

    fn from_str(s: &str) -> Result<HostPort, String> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} is not host:port (the port is missing)"))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("{port:?} in {s:?} is not a port number (0-65535)"))?;
        let host = match host.strip_prefix('[') {
            Some(rest) => rest
                .strip_suffix(']')
                .ok_or_else(|| format!("{s:?}: unclosed '[' in an IPv6 address"))?,
            // A bare IPv6 address with a port is ambiguous: ask for brackets.
            None if host.contains(':') => {
                return Err(format!("{s:?}: write an IPv6 address as [addr]:port"));
            }
            None => host,
        };
        Ok(HostPort {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// `count / seconds` with a thousands separator, for progress lines:
/// `rate(123_456, 2.0) == "61,728"`.
///
/// ```
/// assert_eq!(examples::rate(123_456, 2.0), "61,728");
/// assert_eq!(examples::rate(5, 0.0), "0");
/// ```
pub fn rate(count: u64, seconds: f64) -> String {
    if seconds <= 0.0 {
        return "0".to_owned();
    }
    thousands((count as f64 / seconds).round() as u64)
}

/// `n` with a `,` every three digits: `thousands(1234567) == "1,234,567"`.
///
/// ```
/// assert_eq!(examples::thousands(1_234_567), "1,234,567");
/// assert_eq!(examples::thousands(999), "999");
/// ```
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::HostPort;

    #[test]
    fn host_port_parses_names_ipv4_ipv6_and_bare_port() {
        let a: HostPort = "127.0.0.1:80".parse().unwrap();
        assert_eq!(a.for_connect(), ("127.0.0.1", 80));
        let b: HostPort = "[::1]:9".parse().unwrap();
        assert_eq!((b.host(), b.to_string().as_str()), ("::1", "[::1]:9"));
        let c: HostPort = ":7".parse().unwrap();
        assert_eq!(c.for_bind(), ("0.0.0.0", 7));
        assert_eq!(c.for_connect(), ("localhost", 7));
    }

    #[test]
    fn host_port_rejects_a_missing_or_bad_port() {
        assert!("host".parse::<HostPort>().is_err());
        assert!("host:99999".parse::<HostPort>().is_err());
        assert!("::1:80".parse::<HostPort>().is_err());
        assert!("[::1:80".parse::<HostPort>().is_err());
    }
}
