//! `serve` and `serve_each`: a service exported on one session or on every
//! session of an exporter. These are methods of [`Session`] and
//! [`Exporter`], defined here so that neither of those modules depends on
//! RPC.

use std::sync::Arc;

use super::{GetService, Service, export_name, service_export};
use crate::exporter::Kept;
use crate::{Exporter, Session};

impl Session {
    /// Serves `service` to this session's peer only. Both ends of a
    /// session may serve and call at once.
    pub fn serve<S: Service>(&self, service: S) {
        let name = export_name(service.name());
        let service = Arc::new(service);
        let get: GetService<Arc<S>> = Arc::new(move || Some(service.clone()));
        self.conn().exports.hangup(&name);
        let _ = self.conn().exports.add(&name, service_export(get));
    }
}

impl Exporter {
    /// Serves `service` to every session, present and future: one instance
    /// shared by all (clones share it).
    pub fn serve<S: Service + Clone>(&self, service: S) {
        let name = service.name().to_owned();
        let get: GetService<S> = Arc::new(move || Some(service.clone()));
        self.add_service(&export_name(&name), service_export(get));
    }

    /// Serves one service per session, made by `make` when the session
    /// starts: at once for the sessions already connected, and for each
    /// session accepted later as the exporter accepts it, before netchan's
    /// handshake on it (so before its peer's `Session::connect` returns). `make` gets the session, so a handler knows its peer and
    /// can call it back.
    ///
    /// Every call on a session, through any number of clients, reaches
    /// that session's instance, under the name the instance gives
    /// (`{Trait}Server::named` works as with [`serve`](Exporter::serve)).
    /// The instance is dropped when its session ends (the peer left, the
    /// connection failed, or the exporter shut down), so a server can keep
    /// a registry of the peers connected with an entry made in `make` and
    /// removed in `Drop`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::{Arc, Mutex};
    /// use netchan::{Exporter, Session};
    ///
    /// #[netchan::service]
    /// pub trait Peers {
    ///     /// How many peers are connected.
    ///     async fn count(&self) -> usize;
    /// }
    ///
    /// /// One per session: counted while its session lasts.
    /// struct Peer(Arc<Mutex<usize>>);
    /// impl Peer {
    ///     fn new(connected: &Arc<Mutex<usize>>) -> Peer {
    ///         *connected.lock().unwrap() += 1;
    ///         Peer(connected.clone())
    ///     }
    /// }
    /// impl Drop for Peer {
    ///     fn drop(&mut self) {
    ///         *self.0.lock().unwrap() -= 1;
    ///     }
    /// }
    /// impl Peers for Peer {
    ///     async fn count(&self) -> usize {
    ///         *self.0.lock().unwrap()
    ///     }
    /// }
    ///
    /// let exp = Exporter::bind("127.0.0.1:0").await?;
    /// let connected = Arc::new(Mutex::new(0));
    /// let c = connected.clone();
    /// exp.serve_each(move |_: &Session| PeersServer::named(Peer::new(&c), "peers.v1"));
    ///
    /// let a = Session::connect(exp.local_addr()).await?;
    /// let b = Session::connect(exp.local_addr()).await?;
    /// // Both were counted as they started, before any call.
    /// assert_eq!(*connected.lock().unwrap(), 2);
    /// let peers = PeersClient::named(&a, "peers.v1");
    /// assert_eq!(peers.count().await?, 2);
    ///
    /// b.close().await;
    /// // b's instance goes with b's session, as the server sees it end.
    /// # let gone = async { while *connected.lock().unwrap() > 1 { tokio::task::yield_now().await } };
    /// # tokio::time::timeout(std::time::Duration::from_secs(10), gone).await?;
    /// assert_eq!(peers.count().await?, 1);
    /// # Ok(()) }
    /// ```
    pub fn serve_each<S: Service>(&self, make: impl Fn(&Session) -> S + Send + Sync + 'static) {
        self.on_session_start(Arc::new(move |session: &Session| -> Kept {
            let service = Arc::new(make(session));
            let name = export_name(service.name());
            // The session's export holds the instance weakly: the
            // exporter keeps it (what this returns) until the session
            // ends, and running dispatchers while they run. So an
            // instance holding its session does not keep it up.
            let weak = Arc::downgrade(&service);
            let get: GetService<Arc<S>> = Arc::new(move || weak.upgrade());
            let exports = &session.conn().exports;
            exports.hangup(&name);
            let _ = exports.add(&name, service_export(get));
            Box::new(service)
        }));
    }
}
