//! The server side: one [`Hub`] handler per client session, all sharing a
//! [`Directory`] of the clients connected. netchan makes a session's
//! handler when the client connects and drops it when the connection ends,
//! however it ends; the client's entry goes with it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::FutureExt;
use netchan::{Exporter, RpcError, Session};

use super::{Download, FilesClient, Hub, HubServer, check_name};

/// How long the server waits for a client to answer `Files::read` (to open
/// the file, not to stream it).
const FILES_TIMEOUT: Duration = Duration::from_secs(30);

/// A message for the server's log (one line each).
type Log = Box<dyn Fn(String) + Send + Sync>;

/// The clients connected to a hub, by name, and how to call each back.
pub struct Directory {
    clients: Mutex<BTreeMap<String, FilesClient>>,
    log: Log,
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

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, FilesClient>> {
        // A handler that panicked left the map as it was: go on with it.
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn files_of(&self, name: &str) -> Option<FilesClient> {
        self.lock().get(name).cloned()
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

/// The hub as one client's session sees it: one per connection, shared
/// by every `HubClient` the client makes on it.
struct PeerHub {
    /// The client's connection: `Files` calls go back over it.
    session: Session,
    directory: Arc<Directory>,
    /// The name this connection joined under: its entry in the directory.
    joined: Mutex<Option<String>>,
}

/// The connection ended (a clean quit, a crash, a network failure or a
/// keepalive timeout all end up here): the client leaves.
impl Drop for PeerHub {
    fn drop(&mut self) {
        let joined = self.joined.get_mut().unwrap_or_else(|p| p.into_inner());
        let Some(name) = joined.take() else {
            return;
        };
        self.directory.lock().remove(&name);
        // Ended, so its reason is ready, unless the server is shutting
        // down with the client still connected.
        let why = match self.session.closed().now_or_never() {
            Some(why) => why.to_string(),
            None => "the server stopped".to_owned(),
        };
        (self.directory.log)(format!("{name} left ({why})"));
    }
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
        {
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
            let files = FilesClient::new(&self.session).with_timeout(FILES_TIMEOUT);
            clients.insert(name.clone(), files);
            *joined = Some(name.clone());
        }
        // The entry goes when this handler does (see `Drop`).
        (self.directory.log)(format!("{name} joined"));
        Ok(())
    }

    async fn list(&self) -> Vec<String> {
        self.directory.names()
    }

    async fn stats(&self) -> Vec<String> {
        let s = self.session.stats();
        let mut lines = vec![
            format!(
                "connection: up {:.1} s, {} clients joined",
                s.age.as_secs_f64(),
                self.directory.names().len()
            ),
            format!(
                "server sent {} bytes in {} frames, received {} bytes in {} frames",
                s.bytes_sent, s.frames_sent, s.bytes_received, s.frames_received
            ),
        ];
        for c in &s.channels {
            lines.push(format!(
                "channel {:<28} {:<7} capacity {:>4} queued {:>4} credit {:>4} messages {:>6} bytes {:>9}",
                c.name.clone().unwrap_or_else(|| format!("#{}", c.id)),
                match c.direction {
                    netchan::Direction::Sending => "send",
                    netchan::Direction::Receiving => "receive",
                },
                c.capacity,
                c.queued,
                c.credit,
                c.messages,
                c.bytes
            ));
        }
        lines
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use netchan::{Exporter, Session};

    use super::{Directory, serve_hub};
    use crate::file_share::HubClient;

    /// Every step is bounded.
    async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .unwrap_or_else(|_| panic!("{what} timed out"))
    }

    async fn hub() -> (Exporter, Arc<Directory>, Arc<Mutex<Vec<String>>>) {
        let exporter = Exporter::bind("127.0.0.1:0").await.unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        let directory = serve_hub(&exporter, move |line| lines.lock().unwrap().push(line));
        (exporter, directory, log)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_joins_once_whichever_client_it_calls_through() {
        let (exporter, directory, _log) = hub().await;
        let session = Session::connect(exporter.local_addr()).await.unwrap();
        let first = HubClient::new(&session);
        assert_eq!(within("join", first.join("alice".into())).await, Ok(Ok(())));
        let second = HubClient::new(&session);
        let again = within("join", second.join("bob".into())).await.unwrap();
        assert!(
            again
                .as_ref()
                .is_err_and(|e| e.contains("already joined as \"alice\"")),
            "{again:?}"
        );
        assert_eq!(directory.names(), ["alice"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_leaves_the_directory_when_its_connection_ends() {
        let (exporter, directory, log) = hub().await;
        let alice = Session::connect(exporter.local_addr()).await.unwrap();
        let bob = Session::connect(exporter.local_addr()).await.unwrap();
        for (session, name) in [(&alice, "alice"), (&bob, "bob")] {
            let joined = within("join", HubClient::new(session).join(name.into())).await;
            assert_eq!(joined, Ok(Ok(())));
        }
        assert_eq!(directory.names(), ["alice", "bob"]);
        alice.close().await;
        within("alice leaves", async {
            while directory.names() != ["bob"] {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        // The hub logs the leave just after the removal, maybe on the
        // other worker.
        let logged = || {
            log.lock()
                .unwrap()
                .iter()
                .any(|l| l.starts_with("alice left ("))
        };
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            while !logged() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "{:?}", log.lock().unwrap());
    }
}
