//! A client's membership: its connection, serving [`Files`] to the server
//! and calling [`Hub`] on it.

use std::time::Duration;

use anyhow::anyhow;
use netchan::{RpcError, Session};

use super::{Download, FilesServer, HubClient, SharedDir};

/// How long a client waits for the server to answer a call (a `read` is
/// answered once the file is open; its bytes may take longer).
const HUB_TIMEOUT: Duration = Duration::from_secs(60);

/// A client joined to a hub: it shares a directory and can list the
/// clients and read their files.
#[derive(Debug, Clone)]
pub struct Member {
    session: Session,
    hub: HubClient,
    name: String,
}

impl Member {
    /// Serves `dir` to the server over `session`, then joins the hub as
    /// `name`.
    pub async fn join(session: &Session, dir: SharedDir, name: &str) -> anyhow::Result<Member> {
        // Served first, so that the server may call back as soon as we
        // joined.
        session.serve(FilesServer::new(dir));
        let hub = HubClient::new(session).with_timeout(HUB_TIMEOUT);
        match hub.join(name.to_owned()).await {
            Ok(Ok(())) => Ok(Member {
                session: session.clone(),
                hub,
                name: name.to_owned(),
            }),
            Ok(Err(e)) => Err(anyhow!("cannot join as {name:?}: {e}")),
            Err(e) => Err(anyhow!("cannot join as {name:?}: {}", explain(e))),
        }
    }

    /// The name it joined under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its connection to the server.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The clients connected, sorted.
    pub async fn list(&self) -> Result<Vec<String>, String> {
        self.hub.list().await.map_err(explain)
    }

    /// The server's view of this client's connection, one line each.
    pub async fn stats(&self) -> Result<Vec<String>, String> {
        self.hub.stats().await.map_err(explain)
    }

    /// Starts reading `path` from `client`'s shared directory: the answer
    /// comes once the file is open; [`receive`](super::receive) takes its
    /// bytes.
    pub async fn read(&self, client: &str, path: &str) -> Result<Download, String> {
        self.hub
            .read(client.to_owned(), path.to_owned())
            .await
            .map_err(explain)?
    }

    /// Leaves: closes the connection cleanly, so the server forgets it.
    pub async fn leave(self) {
        self.session.close().await;
    }
}

/// What a failed call to the hub means to a user.
fn explain(e: RpcError) -> String {
    match e {
        RpcError::Disconnected => "the server closed the connection".to_owned(),
        RpcError::Timeout => format!("the server did not answer within {HUB_TIMEOUT:?}"),
        RpcError::NoSuchService(name) => {
            format!("the server is not a file-share server (it has no service {name:?})")
        }
        e => format!("the server failed: {e}"),
    }
}
