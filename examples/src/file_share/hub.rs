//! The server side: one [`Hub`] handler per client session, all sharing a
//! [`Directory`] of the clients connected. A client's entry goes when its
//! connection ends, however it ends.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use netchan::{Exporter, RpcError, Session};

use super::{Download, FilesClient, Hub, HubServer, check_name};

/// How long the server waits for a client to answer `Files::read` (to open
/// the file, not to stream it).
const FILES_TIMEOUT: Duration = Duration::from_secs(30);

/// A message for the server's log (one line each).
type Log = Box<dyn Fn(String) + Send + Sync>;

/// The clients connected to a hub, by name.
pub struct Directory {
    clients: Mutex<BTreeMap<String, Entry>>,
    next_id: AtomicU64,
    log: Log,
}

/// One joined client: how to call it back.
struct Entry {
    /// Tells this join from a later one under the same name.
    id: u64,
    files: FilesClient,
}

impl fmt::Debug for Directory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Directory")
            .field("clients", &self.names())
            .finish_non_exhaustive()
    }
}

impl Directory {
    /// The names of the clients connected, sorted.
    pub fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        // A handler that panicked left the map as it was: go on with it.
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn files_of(&self, name: &str) -> Option<FilesClient> {
        self.lock().get(name).map(|e| e.files.clone())
    }

    /// Removes `name` if it is still the join `id` (the name may have
    /// been taken again since).
    fn leave(&self, name: &str, id: u64, why: &netchan::Error) {
        let removed = {
            let mut clients = self.lock();
            let ours = clients.get(name).is_some_and(|e| e.id == id);
            if ours {
                clients.remove(name);
            }
            ours
        };
        if removed {
            (self.log)(format!("{name} left ({why})"));
        }
    }
}

/// Serves [`Hub`] on `exporter` to every client, present and future, and
/// returns the directory of clients; `log` gets one line per join, leave
/// and read.
pub fn serve_hub(
    exporter: &Exporter,
    log: impl Fn(String) + Send + Sync + 'static,
) -> Arc<Directory> {
    let directory = Arc::new(Directory {
        clients: Mutex::new(BTreeMap::new()),
        next_id: AtomicU64::new(1),
        log: Box::new(log),
    });
    let shared = directory.clone();
    exporter.serve_each(move |session| {
        HubServer::new(PeerHub {
            session: session.clone(),
            directory: shared.clone(),
            joined: Mutex::new(None),
        })
    });
    directory
}

/// The hub as one client's session sees it.
struct PeerHub {
    /// The client's connection: `Files` calls go back over it.
    session: Session,
    directory: Arc<Directory>,
    /// The name this client joined under.
    joined: Mutex<Option<String>>,
}

impl PeerHub {
    fn joined(&self) -> Option<String> {
        self.joined
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Hub for PeerHub {
    async fn join(&self, name: String) -> Result<(), String> {
        check_name(&name)?;
        let id = {
            let mut joined = self.joined.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(old) = &*joined {
                return Err(format!("this connection already joined as {old:?}"));
            }
            let mut clients = self.directory.lock();
            if clients.contains_key(&name) {
                return Err(format!(
                    "the name {name:?} is taken by another connected client"
                ));
            }
            let id = self.directory.next_id.fetch_add(1, Ordering::Relaxed);
            let files = FilesClient::new(&self.session).with_timeout(FILES_TIMEOUT);
            clients.insert(name.clone(), Entry { id, files });
            *joined = Some(name.clone());
            id
        };
        (self.directory.log)(format!("{name} joined"));
        // The entry goes when the connection ends: a clean quit, a crash,
        // a network failure or a keepalive timeout all end up here.
        let session = self.session.clone();
        let directory = self.directory.clone();
        tokio::spawn(async move {
            let why = session.closed().await;
            directory.leave(&name, id, &why);
        });
        Ok(())
    }

    async fn list(&self) -> Vec<String> {
        self.directory.names()
    }

    async fn read(&self, client: String, path: String) -> Result<Download, String> {
        let files = self
            .directory
            .files_of(&client)
            .ok_or_else(|| format!("no client named {client:?} is connected (see `list`)"))?;
        let download = match files.read(path.clone()).await {
            Ok(Ok(download)) => download,
            Ok(Err(e)) => return Err(format!("{client}: {e}")),
            Err(RpcError::Disconnected) => {
                return Err(format!("{client} left before it answered"));
            }
            Err(e) => return Err(format!("{client} did not answer: {e}")),
        };
        let reader = self.joined().unwrap_or_else(|| "a client".to_owned());
        (self.directory.log)(format!(
            "{reader} reads {client}:{path} ({} bytes)",
            download.size
        ));
        // The pipe goes on as it came: netchan forwards its bytes from the
        // owner's connection to the reader's.
        Ok(download)
    }
}
