//! The small-cluster API of a later Go netchan: `listen` on a server,
//! `dial` from each client, and one sender and one receiver on each side.

use crate::{Config, Error, Exporter, Message, Receiver, Sender, Session};

/// Export name of the server-to-clients channel.
pub(crate) const TO_CLIENTS: &str = "netchan.cluster.to-clients";
/// Export name of the clients-to-server channel.
pub(crate) const TO_SERVER: &str = "netchan.cluster.to-server";

/// Listens on `addr` for a small cluster. Each value sent on the returned
/// sender goes to exactly one connected client (one with room); the
/// receiver merges what every client sends. The listener stays up while
/// either half lives. Each client's channels buffer
/// [`Config::cluster_buffer`] values each way (256 unless set).
///
/// ```no_run
/// # async fn run() -> Result<(), netchan::Error> {
/// let (to_clients, mut from_clients) = netchan::listen::<String>("127.0.0.1:7001").await?;
/// to_clients.send("task 1".into()).await.ok();
/// let result = from_clients.recv().await;
/// # Ok(()) }
/// ```
pub async fn listen<T: Message>(
    addr: impl tokio::net::ToSocketAddrs,
) -> Result<(Sender<T>, Receiver<T>), Error> {
    listen_with(addr, Config::default()).await
}

/// [`listen`] with a [`Config`].
pub async fn listen_with<T: Message>(
    addr: impl tokio::net::ToSocketAddrs,
    cfg: Config,
) -> Result<(Sender<T>, Receiver<T>), Error> {
    Exporter::bind_with(addr, cfg).await?.cluster()
}

/// Connects to a [`listen`]ing server: the sender reaches the server's
/// receiver, the receiver gets this client's share of what the server
/// sends.
pub async fn dial<T: Message>(
    addr: impl tokio::net::ToSocketAddrs,
) -> Result<(Sender<T>, Receiver<T>), Error> {
    dial_with(addr, Config::default()).await
}

/// [`dial`] with a [`Config`].
pub async fn dial_with<T: Message>(
    addr: impl tokio::net::ToSocketAddrs,
    cfg: Config,
) -> Result<(Sender<T>, Receiver<T>), Error> {
    let buffer = cfg.cluster_buffer;
    let s = Session::connect_with(addr, cfg).await?;
    let rx = s.import_receiver::<T>(TO_CLIENTS, buffer).await?;
    let tx = s.import_sender::<T>(TO_SERVER).await?;
    Ok((tx, rx))
}

impl Exporter {
    /// The cluster channels of this exporter, as [`listen`] returns them:
    /// use it to learn the address first (`bind` on port 0, then
    /// `local_addr`).
    pub fn cluster<T: Message>(&self) -> Result<(Sender<T>, Receiver<T>), Error> {
        let tx = self.export_sender::<T>(TO_CLIENTS)?;
        let rx = self.export_receiver::<T>(TO_SERVER, self.shared().cluster_buffer)?;
        Ok((tx, rx))
    }
}
