//! The connecting side of a resumable session: when its connection
//! breaks, redial with backoff (`Reconnect`) and resume the session over
//! the new connection, reporting each step on `Session::events` and in
//! `tracing`.
//!
//! Dialling is `transport`'s and the resume handshake is `conn`'s (and
//! `proto`'s); this module only decides when to try and when to give up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Reconnect;
use crate::conn::{Conn, SessionEvent};
use crate::error::Error;
use crate::transport::tcp::{self, Dialed};

/// Starts the redialler of `conn`, which dialled `addrs`. It ends with
/// the connection.
pub(crate) fn spawn(conn: &Arc<Conn>, addrs: Vec<SocketAddr>, policy: Reconnect) {
    let ended = conn.ended.clone();
    let c = conn.clone();
    conn.rt.spawn(async move {
        tokio::select! {
            () = run(&c, &addrs, &policy) => {}
            () = ended.cancelled() => {}
        }
    });
}

/// How one attempt ended.
enum Outcome {
    Resumed,
    /// The session ended (refused, or closed meanwhile).
    Lost,
    Failed(Error),
}

async fn run(conn: &Arc<Conn>, addrs: &[SocketAddr], policy: &Reconnect) {
    loop {
        conn.link_down.notified().await;
        if !conn.lock().proto.is_suspended() {
            continue;
        }
        let since = Instant::now();
        let mut attempt = 0u32;
        loop {
            if conn.closing() {
                conn.lose(Error::ConnectionLost(
                    "the session was closed while its connection was down".into(),
                ));
                return;
            }
            if let Some(limit) = policy.get_give_up_after() {
                if since.elapsed() >= limit {
                    conn.lose(Error::ConnectionLost(format!(
                        "gave up reconnecting after {attempt} attempts in {limit:?}"
                    )));
                    return;
                }
            }
            attempt = attempt.saturating_add(1);
            conn.events.emit(SessionEvent::Reconnecting { attempt });
            tracing::info!(
                conn = conn.id,
                peer = %conn.peer_label(),
                attempt,
                "netchan: reconnecting"
            );
            match attempt_once(conn, addrs).await {
                Outcome::Resumed => break,
                Outcome::Lost => return,
                Outcome::Failed(e) => {
                    tracing::info!(
                        conn = conn.id,
                        peer = %conn.peer_label(),
                        attempt,
                        error = %e,
                        "netchan: reconnect attempt failed"
                    );
                }
            }
            let mut wait = jitter(policy.delay(attempt));
            if let Some(limit) = policy.get_give_up_after() {
                wait = wait.min(limit.saturating_sub(since.elapsed()));
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = conn.close_asked.cancelled() => {}
            }
        }
    }
}

/// Dials once and, if that works, sends the resume hello and waits for
/// the answer.
async fn attempt_once(conn: &Arc<Conn>, addrs: &[SocketAddr]) -> Outcome {
    let cfg = &conn.config;
    let mut trying = None;
    let dialed =
        match tokio::time::timeout(cfg.handshake_timeout, tcp::dial(addrs, cfg, &mut trying)).await
        {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => return Outcome::Failed(e),
            Err(_) => return Outcome::Failed(conn.handshake_timeout()),
        };
    let started = match dialed {
        Dialed::Tcp(s) => conn.resume_dialed(s),
        #[cfg(feature = "tls")]
        Dialed::Tls(s, _) => conn.resume_dialed(s),
    };
    if !started {
        return if conn.lock().is_live() {
            Outcome::Failed(Error::ConnectionLost("the session is not suspended".into()))
        } else {
            Outcome::Lost
        };
    }
    loop {
        let notified = conn.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let inner = conn.lock();
            if !inner.is_live() {
                return Outcome::Lost;
            }
            if inner.proto.is_suspended() {
                return Outcome::Failed(Error::ConnectionLost(
                    "the new connection broke before the session resumed".into(),
                ));
            }
            if !inner.proto.in_handshake() {
                return Outcome::Resumed;
            }
        }
        notified.await;
    }
}

/// `d` with up to ±25 % random jitter.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        return d;
    }
    let r = f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX);
    d.mul_f64(0.75 + 0.5 * r)
}
