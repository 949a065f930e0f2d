//! [`Relay`]: a TCP relay on 127.0.0.1 that forwards every connection to
//! one upstream address and can cut every connection it carries at once,
//! as a network failure would (used by `cluster --cut-every`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// A cutting relay; dropping it stops accepting (live connections end
/// with their next cut or their peers).
///
/// ```no_run
/// # async fn run(server: std::net::SocketAddr) -> std::io::Result<()> {
/// let relay = examples::Relay::start(server).await?;
/// // Clients connect to relay.addr() ...
/// relay.cut(); // ... and every connection through it breaks at once.
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    live: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Relay {
    /// Listens on 127.0.0.1 (any port) and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let live: Arc<Mutex<Vec<AbortHandle>>> = Arc::new(Mutex::new(Vec::new()));
        let l2 = live.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                let mut live = l2.lock().unwrap_or_else(|p| p.into_inner());
                live.retain(|h| !h.is_finished());
                live.push(task.abort_handle());
            }
        })
        .abort_handle();
        Ok(Relay { addr, live, accept })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cuts every connection live now (both sockets close, mid-frame if
    /// need be); returns how many it cut.
    pub fn cut(&self) -> usize {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let n = live.iter().filter(|h| !h.is_finished()).count();
        for h in live.drain(..) {
            h.abort();
        }
        n
    }
}
