//! Every session's stats through the [`metrics`](https://docs.rs/metrics)
//! facade (feature `metrics`), so whatever exporter a program already
//! installs (Prometheus, StatsD, …) scrapes them.
//!
//! Each session publishes, every [`PUBLISH_EVERY`] and once more when it
//! ends, what [`Session::stats`](crate::Session::stats) reports. Every
//! series carries the label `session` (a number unique in the process);
//! channel series also carry `channel` (the export name, or `#id` for a
//! channel that travelled in a message) and `direction` (`send` or
//! `receive`). RPC series carry `service`, `method` and `side` (`client`
//! or `server`), one set per method called or served on the session.
//!
//! | name | kind | what |
//! |---|---|---|
//! | `netchan_bytes_sent_total`, `netchan_bytes_received_total` | counter | bytes each way |
//! | `netchan_frames_sent_total`, `netchan_frames_received_total` | counter | frames each way |
//! | `netchan_unconfirmed` | gauge | values sent whose arrival is not yet confirmed |
//! | `netchan_channel_messages_total` | counter | values sent or received on a channel |
//! | `netchan_channel_bytes_total` | counter | their encoded bytes |
//! | `netchan_channel_queued` | gauge | values waiting: in the buffer (receive), or unconfirmed (send) |
//! | `netchan_channel_credit` | gauge | values a sender may send now (send), or slots granted (receive) |
//! | `netchan_channel_send_wait_seconds` | gauge | time senders waited for room, in total |
//! | `netchan_rpc_calls_total` | counter | calls started |
//! | `netchan_rpc_completed_total` | counter | calls that ended with the handler's result |
//! | `netchan_rpc_errors_total` | counter | calls that failed, by `kind` (`timeout`, `disconnected`, `no_such_service`, `remote`, `codec`, `panicked`, `deadline_passed`, `cancelled`) |
//! | `netchan_rpc_in_flight` | gauge | calls started and not ended |
//! | `netchan_rpc_latency_seconds` | gauge | call latency by `quantile` (`0.5`, `0.9`, `0.99`, `1` for the maximum), from the session's histogram (see [`Latency`](crate::Latency)) |
//!
//! Nothing is recorded on the data path: a task per session reads the
//! counters the connection keeps anyway. Latency quantiles are gauges,
//! not a `metrics` histogram, because the session keeps its own
//! fixed-size histogram and publishes what it reads.
//!
//! ```no_run
//! # async fn run() -> Result<(), netchan::Error> {
//! // With a recorder installed (for example metrics-exporter-prometheus),
//! // every session publishes on its own:
//! let session = netchan::Session::connect("127.0.0.1:7000").await?;
//! # Ok(()) }
//! ```

use std::sync::{Arc, Weak};
use std::time::Duration;

use metrics::{Label, counter, gauge};

use crate::conn::{Conn, Direction, SessionStats, Status};

/// How often each session publishes.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// Starts the task that publishes `conn`'s stats until it ends. It holds
/// the connection weakly: it keeps nothing alive.
pub(crate) fn spawn_publisher(conn: &Arc<Conn>) {
    let weak: Weak<Conn> = Arc::downgrade(conn);
    let session = conn.id.to_string();
    conn.rt.spawn(async move {
        let mut tick = tokio::time::interval(PUBLISH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(conn) = weak.upgrade() else {
                return;
            };
            let ended = matches!(conn.lock().status, Status::Ended(_));
            publish(&session, &conn.stats());
            if ended {
                return;
            }
        }
    });
}

/// Publishes one snapshot of a session's stats.
pub(crate) fn publish(session: &str, s: &SessionStats) {
    let base = vec![Label::new("session", session.to_owned())];
    counter!("netchan_bytes_sent_total", base.clone()).absolute(s.bytes_sent);
    counter!("netchan_bytes_received_total", base.clone()).absolute(s.bytes_received);
    counter!("netchan_frames_sent_total", base.clone()).absolute(s.frames_sent);
    counter!("netchan_frames_received_total", base.clone()).absolute(s.frames_received);
    gauge!("netchan_unconfirmed", base.clone()).set(s.unconfirmed as f64);
    for c in &s.channels {
        let mut labels = base.clone();
        labels.push(Label::new(
            "channel",
            c.name.clone().unwrap_or_else(|| format!("#{}", c.id)),
        ));
        labels.push(Label::new(
            "direction",
            match c.direction {
                Direction::Sending => "send",
                Direction::Receiving => "receive",
            },
        ));
        counter!("netchan_channel_messages_total", labels.clone()).absolute(c.messages);
        counter!("netchan_channel_bytes_total", labels.clone()).absolute(c.bytes);
        gauge!("netchan_channel_queued", labels.clone()).set(c.queued as f64);
        gauge!("netchan_channel_credit", labels.clone()).set(f64::from(c.credit));
        gauge!("netchan_channel_send_wait_seconds", labels).set(c.send_wait.as_secs_f64());
    }
    for m in &s.methods {
        let mut labels = base.clone();
        labels.push(Label::new("service", m.service.clone()));
        labels.push(Label::new("method", m.method.clone()));
        labels.push(Label::new("side", m.side.as_str()));
        counter!("netchan_rpc_calls_total", labels.clone()).absolute(m.started);
        counter!("netchan_rpc_completed_total", labels.clone()).absolute(m.completed);
        for (kind, n) in m.errors.by_kind() {
            let mut l = labels.clone();
            l.push(Label::new("kind", kind));
            counter!("netchan_rpc_errors_total", l).absolute(n);
        }
        gauge!("netchan_rpc_in_flight", labels.clone()).set(m.in_flight as f64);
        let l = m.latency;
        for (q, d) in [
            ("0.5", l.p50),
            ("0.9", l.p90),
            ("0.99", l.p99),
            ("1", l.max),
        ] {
            let mut ql = labels.clone();
            ql.push(Label::new("quantile", q));
            gauge!("netchan_rpc_latency_seconds", ql).set(d.as_secs_f64());
        }
    }
}
