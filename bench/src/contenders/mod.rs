//! The contenders. Each module has the same four entry points:
//!
//! * `server(env, addr)` / `client(env, addr)`: one timed workload; the
//!   server sends its address once it listens, the client calls
//!   `Ctl::ready` once connected and warm, then works until `Ctl::stopped`.
//! * `idle_server(env, n, addr)` / `idle_client(env, n, addr)`: the idle
//!   memory workloads; both count what they opened in `Ctl::count`.
//!
//! Errors are returned as text and land in `Ctl::fail`; a side never
//! panics on a contender's failure.

pub(crate) mod netchan_c;
pub(crate) mod raw;
pub(crate) mod remoc_c;
pub(crate) mod tarpc_c;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::harness::{Ctl, R, forever};
use crate::spec::{Contender, Workload};
use crate::tlsmat::{NetchanTls, RawTls};

/// Where a server sends its listening address.
pub(crate) type AddrTx = std::sync::mpsc::Sender<SocketAddr>;

/// What one side of one child needs.
#[derive(Debug, Clone)]
pub(crate) struct Env {
    /// The workload, TLS stripped: TLS is on when the TLS material is.
    pub(crate) w: Workload,
    pub(crate) ctl: Arc<Ctl>,
    pub(crate) raw_tls: Option<RawTls>,
    pub(crate) netchan_tls: Option<NetchanTls>,
}

impl Env {
    pub(crate) fn new(c: Contender, w: Workload, ctl: Arc<Ctl>) -> R<Env> {
        let tls = w.tls();
        Ok(Env {
            w: w.plain(),
            ctl,
            raw_tls: if tls && c == Contender::Raw {
                Some(RawTls::new()?)
            } else {
                None
            },
            netchan_tls: if tls && c == Contender::Netchan {
                Some(NetchanTls::new()?)
            } else {
                None
            },
        })
    }
}

async fn report(ctl: &Ctl, side: &str, r: R<()>) {
    if let Err(e) = r {
        ctl.fail(format!("{side}: {e}"));
    }
    forever().await;
}

pub(crate) async fn server(c: Contender, env: Env, addr: AddrTx) {
    let ctl = env.ctl.clone();
    let r = match c {
        Contender::Netchan => netchan_c::server(env, addr).await,
        Contender::Raw => raw::server(env, addr).await,
        Contender::Tarpc => tarpc_c::server(env, addr).await,
        Contender::Remoc => remoc_c::server(env, addr).await,
    };
    report(&ctl, "server", r).await;
}

pub(crate) async fn client(c: Contender, env: Env, addr: SocketAddr) {
    let ctl = env.ctl.clone();
    let r = match c {
        Contender::Netchan => netchan_c::client(env, addr).await,
        Contender::Raw => raw::client(env, addr).await,
        Contender::Tarpc => tarpc_c::client(env, addr).await,
        Contender::Remoc => remoc_c::client(env, addr).await,
    };
    report(&ctl, "client", r).await;
}

pub(crate) async fn idle_server(c: Contender, env: Env, n: usize, addr: AddrTx) {
    let ctl = env.ctl.clone();
    let r = match c {
        Contender::Netchan => netchan_c::idle_server(env, n, addr).await,
        Contender::Raw => raw::idle_server(env, n, addr).await,
        Contender::Tarpc => tarpc_c::idle_server(env, n, addr).await,
        Contender::Remoc => remoc_c::idle_server(env, n, addr).await,
    };
    report(&ctl, "server", r).await;
}

pub(crate) async fn idle_client(c: Contender, env: Env, n: usize, addr: SocketAddr) {
    let ctl = env.ctl.clone();
    let r = match c {
        Contender::Netchan => netchan_c::idle_client(env, n, addr).await,
        Contender::Raw => raw::idle_client(env, n, addr).await,
        Contender::Tarpc => tarpc_c::idle_client(env, n, addr).await,
        Contender::Remoc => remoc_c::idle_client(env, n, addr).await,
    };
    report(&ctl, "client", r).await;
}

/// Fails the workload a contender does not support (the parent never
/// asks for one; this guards hand-run children).
pub(crate) fn unsupported(c: Contender, w: Workload) -> R<()> {
    Err(format!("{c} does not run {w}"))
}
