//! A cutting relay: a TCP proxy on 127.0.0.1 that forwards every
//! connection it accepts to an upstream address, and on command kills
//! every connection it carries (both sockets close at once, as when a
//! network path dies), refuses new ones for a while, or switches to
//! another upstream (a restarted server).
//!
//! It runs on a runtime of its own, on its own thread, so that cuts land
//! on time whatever the test's runtime is doing.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

#[derive(Debug, Default)]
struct State {
    upstream: Option<SocketAddr>,
    /// Refuse (accept and close at once) new connections.
    blocked: bool,
    pumps: Vec<JoinHandle<()>>,
}

/// The relay. Dropping it stops it and closes everything.
pub(crate) struct Relay {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    rt: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("addr", &self.addr).finish()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Relay {
    /// A relay on 127.0.0.1 forwarding to `upstream`.
    pub(crate) fn start(upstream: SocketAddr) -> Relay {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cutting-relay")
            .enable_all()
            .build()
            .expect("relay runtime");
        let state = Arc::new(Mutex::new(State {
            upstream: Some(upstream),
            ..State::default()
        }));
        let listener = {
            let _rt = rt.enter();
            let std = std::net::TcpListener::bind("127.0.0.1:0").expect("bind relay");
            std.set_nonblocking(true).expect("nonblocking");
            TcpListener::from_std(std).expect("listener")
        };
        let addr = listener.local_addr().expect("relay addr");
        let st = state.clone();
        rt.spawn(async move {
            loop {
                let Ok((front, _)) = listener.accept().await else {
                    return;
                };
                let (upstream, blocked) = {
                    let s = lock(&st);
                    (s.upstream, s.blocked)
                };
                let Some(upstream) = upstream.filter(|_| !blocked) else {
                    drop(front);
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let Ok(back) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = front.set_nodelay(true);
                    let _ = back.set_nodelay(true);
                    let (mut fr, mut fw) = front.into_split();
                    let (mut br, mut bw) = back.into_split();
                    let a = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut fr, &mut bw).await;
                    });
                    let b = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut br, &mut fw).await;
                    });
                    let mut s = lock(&st);
                    s.pumps.retain(|p| !p.is_finished());
                    s.pumps.push(a);
                    s.pumps.push(b);
                });
            }
        });
        Relay {
            addr,
            state,
            rt: Some(rt),
        }
    }

    /// Where the dialer connects.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Kills every connection the relay carries now: both sockets of each
    /// close, whatever was in flight is gone.
    pub(crate) fn cut(&self) {
        let mut s = lock(&self.state);
        for p in s.pumps.drain(..) {
            p.abort();
        }
    }

    /// Refuses new connections (accepts and closes them) while `blocked`.
    pub(crate) fn block(&self, blocked: bool) {
        lock(&self.state).blocked = blocked;
    }

    /// Forwards new connections to `upstream` from now on.
    pub(crate) fn set_upstream(&self, upstream: SocketAddr) {
        lock(&self.state).upstream = Some(upstream);
    }
}
