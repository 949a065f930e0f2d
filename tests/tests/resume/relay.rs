//! A cutting relay: a TCP proxy on 127.0.0.1 that forwards every
//! connection it accepts to an upstream address, and on command kills
//! every connection it carries (both sockets close at once, as when a
//! network path dies), refuses new ones for a while, switches to
//! another upstream (a restarted server), or closes the client's
//! direction of the next connections at once (a path that closed one
//! way).
//!
//! It runs on a runtime of its own, on its own thread, so that cuts land
//! on time whatever the test's runtime is doing.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

#[derive(Debug, Default)]
struct State {
    upstream: Option<SocketAddr>,
    /// Refuse (accept and close at once) new connections.
    blocked: bool,
    /// New connections to carry one way only: the server's bytes reach
    /// the client, the client's direction ends before its first byte.
    one_way: usize,
    /// One task per connection carries both directions, so that a cut
    /// closes both sockets at once.
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
                let Ok((mut front, _)) = listener.accept().await else {
                    return;
                };
                let mut s = lock(&st);
                let Some(upstream) = s.upstream.filter(|_| !s.blocked) else {
                    drop(front);
                    continue;
                };
                let one_way = s.one_way > 0;
                if one_way {
                    s.one_way -= 1;
                }
                s.pumps.retain(|p| !p.is_finished());
                s.pumps.push(tokio::spawn(async move {
                    let Ok(mut back) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = front.set_nodelay(true);
                    let _ = back.set_nodelay(true);
                    if one_way {
                        // The client's direction ends before its first
                        // byte; the server's goes on until it closes.
                        let _ = back.shutdown().await;
                        let _ = tokio::io::copy(&mut back, &mut front).await;
                    } else {
                        let _ = tokio::io::copy_bidirectional(&mut front, &mut back).await;
                    }
                }));
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

    /// Carries the next `n` connections one way only: the client's
    /// direction ends at once (the server reads the end of stream before
    /// any byte), the server's bytes still reach the client.
    pub(crate) fn one_way(&self, n: usize) {
        lock(&self.state).one_way = n;
    }

    /// Forwards new connections to `upstream` from now on.
    pub(crate) fn set_upstream(&self, upstream: SocketAddr) {
        lock(&self.state).upstream = Some(upstream);
    }
}
