//! The same channels and services over a NATS cluster (feature `nats`).
//!
//! A [`Node`] is one NATS connection (the `async-nats` client, rustls with
//! ring, reconnecting on its own; reconnects are logged through `tracing`).
//! It hands out the same [`Sender`] and [`Receiver`] types a
//! [`Session`](crate::Session) does, and generated `{Trait}Client`s accept a
//! `&Node` as well as a `&Session`:
//!
//! * a named **channel** is a JetStream work-queue stream under the
//!   configured subject prefix ([`NatsConfig::prefix`]). Senders publish to
//!   it; receivers pull from one shared durable consumer, so each value goes
//!   to one receiver. Senders and receivers may be on any number of
//!   machines; `export_*` and `import_*` differ only in that `import_*` are
//!   `async` and report a type mismatch at once.
//! * a **service** is core NATS request/reply on a subject with a queue
//!   group, so replicas serving it on several machines share the calls.
//!
//! Module owns: the NATS names of channels and services, the bridges that
//! move values between a local queue and JetStream, and the call path of
//! RPC over NATS. It must not touch the TCP driver (`conn::driver`); lower
//! layers never name it.
//!
//! ```no_run
//! # #[tokio::main]
//! # async fn main() -> Result<(), netchan::Error> {
//! use netchan::nats::Node;
//!
//! let node = Node::connect("nats://127.0.0.1:4222").await?;
//! // A producer, anywhere:
//! let jobs = node.export_sender::<String>("jobs")?;
//! jobs.send("resize cat.png".to_string()).await?; // stored by JetStream
//!
//! // A worker, anywhere (here the same program): each job to one worker.
//! let mut work = node.import_receiver::<String>("jobs", 16).await?;
//! assert_eq!(work.recv().await?.as_deref(), Some("resize cat.png"));
//! node.close().await;
//! # Ok(()) }
//! ```
//!
//! # What holds on NATS
//!
//! Each guarantee of a direct connection, and what holds on NATS
//! (JetStream for channels, core NATS for RPC):
//!
//! | guarantee (direct connection) | on NATS |
//! |---|---|
//! | **FIFO** per channel | Per producer (one `Sender` and its clones): values are stored in the order they were sent, one at a time. With several receivers each gets a subsequence in stream order; a redelivered value (below) comes after later ones. No order across producers. |
//! | **Exactly once**, no duplicates | Each stored value goes to one receiver and is acknowledged when `recv` takes it. Publishes carry a message id (`Nats-Msg-Id`), so a publish retried after a lost ack is stored once (within the stream's 2-minute duplicate window). A duplicate remains possible in one case only: an acknowledgement is lost, because the receiver's process died, or its connection to the server broke (a server restart, a network cut), after `recv` took a value and before the acknowledgement reached the server; that value is delivered again (to a receiver of the channel). A receiver that stays silent for longer than [`NatsConfig::ack_wait`] without its node's task running (a stalled process) has its held values redelivered too. JetStream cannot suppress that one (the id is the publisher's, the acknowledgement the receiver's). |
//! | **Rendezvous** (capacity 0) | Refused with [`Error::Config`]: a send completes when the server stored the value, never when a receiver took it, so capacity 0 cannot be exact. |
//! | **Capacity** | A receiver's capacity is how many values it holds unacknowledged (fetched, not yet taken by `recv`). The sender side's buffer is the stream, bounded by [`NatsConfig::stream_max_messages`]: a full stream makes `send` wait (it retries) and never drops. `try_send` always reports `Full`: a value counts as sent only once the server stored it, which takes a round trip. |
//! | **Nothing lost** | `send` completes once JetStream acknowledged the publish (file storage): what was acknowledged survives the sender's process. A value a receiver held but did not take is redelivered when the receiver drops, its node closes (at once), or its process dies ([`NatsConfig::ack_wait`] later). A value the stream refuses for its own sake (too large for the server's `max_payload`, carrying channel handles) is given back in `SendError`. |
//! | **`select!`-safe** | A `recv` dropped before it completed took nothing (the value stays unacknowledged in the buffer). A `send` dropped while it waits for room (the node's publisher busy with an earlier value) sent nothing; one dropped once the publisher took its value may still be stored, since the publish is already on its way. |
//! | **Closing** | Dropping the last `Sender` does not end the channel for receivers: producers on other machines may still send, and the stream outlives them. A receiver ends cleanly (`Ok(None)`) when its node closes. `hangup` has no NATS counterpart. |
//! | **Channels inside messages** | Refused: a value carrying a `Sender`, `Receiver` or `Pipe` fails to send with [`SendErrorKind::Invalid`](crate::SendErrorKind::Invalid) (an RPC call with [`RpcError::Codec`](crate::RpcError::Codec)); the value is given back. |
//! | **Drain** / delivery confirmation | No `drain`: each `send` already completes only once the server stored the value (stronger than arrival confirmation). |
//! | **Typed imports** | The stream records its message type; an import or export of another type fails with [`Error::WrongType`] (`import_*` at once, `export_*` at the first send or receive). There is no direction check: any node may send and receive on a channel. |
//! | **RPC** | Calls go to one replica of the service's queue group. The deadline travels as the replica's deadline; dropping the call's future sends a cancel the replica acts on. A replica that dies mid-call stops its heartbeat, and the caller gets [`RpcError::Disconnected`](crate::RpcError::Disconnected) within 3 × [`NatsConfig::rpc_heartbeat`]. No replica serving: [`RpcError::NoSuchService`](crate::RpcError::NoSuchService). Requests and results larger than the server's `max_payload` go in chunks (up to [`NatsConfig::max_message_len`] on the receiving side). Per-method stats are kept for sessions only. |
//!
//! Receivers' values are decoded by the node's task as they are fetched; a
//! value that does not decode as the receiver's type is terminated (not
//! redelivered) and logged at `warn`, since a NATS receiver has no
//! connection to report it on.

mod chan;
mod rpc;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{Error, Message, Receiver, Sender, Service};

/// Settings of a [`Node`]: subject prefix, TLS, credentials and limits.
///
/// ```
/// use std::time::Duration;
/// use netchan::nats::NatsConfig;
///
/// let cfg = NatsConfig::default()
///     .prefix("shop")
///     .credentials_file("/etc/nats/app.creds")
///     .ack_wait(Duration::from_secs(10));
/// # let _ = cfg;
/// ```
#[derive(Clone)]
pub struct NatsConfig {
    prefix: String,
    name: Option<String>,
    credentials: Option<PathBuf>,
    user_password: Option<(String, String)>,
    token: Option<String>,
    root_certificates: Vec<PathBuf>,
    client_certificate: Option<(PathBuf, PathBuf)>,
    require_tls: bool,
    ack_wait: Duration,
    stream_max_messages: u64,
    max_message_len: usize,
    rpc_heartbeat: Duration,
    connect_timeout: Duration,
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Credentials stay out of logs.
        f.debug_struct("NatsConfig")
            .field("prefix", &self.prefix)
            .field("name", &self.name)
            .field("credentials", &self.credentials)
            .field("require_tls", &self.require_tls)
            .field("ack_wait", &self.ack_wait)
            .field("stream_max_messages", &self.stream_max_messages)
            .field("max_message_len", &self.max_message_len)
            .field("rpc_heartbeat", &self.rpc_heartbeat)
            .finish_non_exhaustive()
    }
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            prefix: "netchan".to_owned(),
            name: None,
            credentials: None,
            user_password: None,
            token: None,
            root_certificates: Vec::new(),
            client_certificate: None,
            require_tls: false,
            ack_wait: Duration::from_secs(30),
            stream_max_messages: 1 << 20,
            max_message_len: 16 << 20,
            rpc_heartbeat: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl NatsConfig {
    /// The first subject token of every channel and service (default
    /// `netchan`): channel `jobs` is subject `{prefix}.ch.jobs` in stream
    /// `{prefix}_ch_jobs`, service `Share` subject `{prefix}.rpc.Share`.
    /// Letters, digits and `-` only; nodes that share channels use the same.
    ///
    /// ```
    /// let cfg = netchan::nats::NatsConfig::default().prefix("staging");
    /// # let _ = cfg;
    /// ```
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The client name the server shows for this connection.
    ///
    /// ```
    /// let cfg = netchan::nats::NatsConfig::default().name("worker-3");
    /// # let _ = cfg;
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Authenticates with a NATS credentials file (JWT and nkey seed).
    ///
    /// ```
    /// let cfg = netchan::nats::NatsConfig::default().credentials_file("app.creds");
    /// # let _ = cfg;
    /// ```
    pub fn credentials_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.credentials = Some(path.into());
        self
    }

    /// Authenticates with a user name and password.
    ///
    /// ```
    /// let cfg = netchan::nats::NatsConfig::default().user_and_password("app", "secret");
    /// # let _ = cfg;
    /// ```
    pub fn user_and_password(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.user_password = Some((user.into(), password.into()));
        self
    }

    /// Authenticates with a token.
    ///
    /// ```
    /// let cfg = netchan::nats::NatsConfig::default().token("s3cr3t");
    /// # let _ = cfg;
    /// ```
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Trusts the CA certificates in this PEM file for the server's TLS
    /// certificate instead of the platform's roots (which are used when no
    /// file is given). Implies TLS.
    ///
    /// ```
    /// let cfg = netchan::nats::NatsConfig::default().root_certificates("ca.pem");
    /// # let _ = cfg;
    /// ```
    pub fn root_certificates(mut self, pem: impl Into<PathBuf>) -> Self {
        self.root_certificates.push(pem.into());
        self.require_tls = true;
        self
    }

    /// Presents this client certificate and key (PEM files) to the server
    /// (mutual TLS). Implies TLS.
    ///
    /// ```
    /// let cfg = netchan::nats::NatsConfig::default()
    ///     .root_certificates("ca.pem")
    ///     .client_certificate("client.pem", "client-key.pem");
    /// # let _ = cfg;
    /// ```
    pub fn client_certificate(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_certificate = Some((cert.into(), key.into()));
        self.require_tls = true;
        self
    }

    /// Refuses to connect without TLS.
    ///
    /// ```
    /// let cfg = netchan::nats::NatsConfig::default().require_tls(true);
    /// # let _ = cfg;
    /// ```
    pub fn require_tls(mut self, required: bool) -> Self {
        self.require_tls = required;
        self
    }

    /// How long the server waits for a receiver's acknowledgement before it
    /// redelivers a value to another receiver (default 30 s), for channels
    /// this node creates. A live receiver extends it for the values it
    /// holds, so only a receiver that died (or lost its connection) has its
    /// values redelivered, this long after.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let cfg = netchan::nats::NatsConfig::default().ack_wait(Duration::from_secs(5));
    /// # let _ = cfg;
    /// ```
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait;
        self
    }

    /// How many values a channel's stream holds before `send` waits
    /// (default 1,048,576), for streams this node creates.
    ///
    /// ```
    /// let cfg = netchan::nats::NatsConfig::default().stream_max_messages(10_000);
    /// # let _ = cfg;
    /// ```
    pub fn stream_max_messages(mut self, n: u64) -> Self {
        self.stream_max_messages = n;
        self
    }

    /// The largest RPC result this node accepts, reassembled from chunks
    /// (default 16 MiB, as [`Config::max_message_len`](crate::Config::max_message_len)).
    ///
    /// ```
    /// let cfg = netchan::nats::NatsConfig::default().max_message_len(64 << 20);
    /// # let _ = cfg;
    /// ```
    pub fn max_message_len(mut self, n: usize) -> Self {
        self.max_message_len = n;
        self
    }

    /// How often a replica says it is still running a call (default 1 s);
    /// a caller that hears nothing for three times this takes the replica
    /// as dead and fails the call with
    /// [`RpcError::Disconnected`](crate::RpcError::Disconnected).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let cfg = netchan::nats::NatsConfig::default().rpc_heartbeat(Duration::from_millis(250));
    /// # let _ = cfg;
    /// ```
    pub fn rpc_heartbeat(mut self, every: Duration) -> Self {
        self.rpc_heartbeat = every;
        self
    }

    /// How long connecting may take (default 10 s).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let cfg = netchan::nats::NatsConfig::default().connect_timeout(Duration::from_secs(3));
    /// # let _ = cfg;
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    fn validate(&self) -> Result<(), Error> {
        if self.prefix.is_empty()
            || self.prefix.len() > 32
            || !self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(Error::Config(format!(
                "NATS subject prefix {:?}: use 1 to 32 letters, digits or '-'",
                self.prefix
            )));
        }
        if self.ack_wait < Duration::from_millis(100) {
            return Err(Error::Config(format!(
                "NatsConfig::ack_wait of {:?} is too short: use 100 ms or more",
                self.ack_wait
            )));
        }
        if self.rpc_heartbeat < Duration::from_millis(10) {
            return Err(Error::Config(format!(
                "NatsConfig::rpc_heartbeat of {:?} is too short: use 10 ms or more",
                self.rpc_heartbeat
            )));
        }
        if self.stream_max_messages == 0 || self.stream_max_messages > i64::MAX as u64 {
            return Err(Error::Config(
                "NatsConfig::stream_max_messages must be at least 1".to_owned(),
            ));
        }
        Ok(())
    }
}

/// One connection to a NATS cluster, through which channels and services
/// work as on a [`Session`](crate::Session), across any number of
/// machines. Cheap to clone; every clone shares the connection.
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> Result<(), netchan::Error> {
/// let node = netchan::nats::Node::connect("nats://127.0.0.1:4222").await?;
/// let results = node.import_sender::<u64>("results").await?;
/// results.send(42).await?; // completes once the server stored it
/// node.close().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    cfg: NatsConfig,
    /// Cancelled by `close`: every bridge and server task ends.
    closed: CancellationToken,
    /// Tells this node's producers and calls apart from every other's.
    id: String,
    /// Producers started here (for message ids).
    producers: AtomicU64,
    /// Streams known to exist, with the type each carries.
    streams: Mutex<HashMap<String, String>>,
    /// The reply table of this node's calls, made at the first call.
    replies: tokio::sync::OnceCell<Arc<rpc::Replies>>,
    /// Bridge and server tasks running (`close` waits for them to hand
    /// back what they hold).
    tasks: AtomicUsize,
    tasks_done: tokio::sync::Notify,
    rt: tokio::runtime::Handle,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.inner.id)
            .field("prefix", &self.inner.cfg.prefix)
            .field("state", &self.inner.client.connection_state())
            .finish()
    }
}

impl Node {
    /// Connects to the NATS server(s) at `url` (`nats://host:4222`,
    /// `tls://host:4222`, or several separated by commas) with default
    /// settings.
    ///
    /// ```no_run
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), netchan::Error> {
    /// let node = netchan::nats::Node::connect("nats://127.0.0.1:4222").await?;
    /// # drop(node); Ok(()) }
    /// ```
    pub async fn connect(url: &str) -> Result<Node, Error> {
        Node::connect_with(url, NatsConfig::default()).await
    }

    /// Connects to the NATS server(s) at `url` with `cfg` (prefix, TLS,
    /// credentials, limits). Must be called inside a tokio runtime; the
    /// node's tasks run on it.
    ///
    /// ```no_run
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), netchan::Error> {
    /// use netchan::nats::{NatsConfig, Node};
    /// let cfg = NatsConfig::default().prefix("shop").credentials_file("shop.creds");
    /// let node = Node::connect_with("tls://nats.example.com:4222", cfg).await?;
    /// # drop(node); Ok(()) }
    /// ```
    pub async fn connect_with(url: &str, cfg: NatsConfig) -> Result<Node, Error> {
        cfg.validate()?;
        let rt = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::Config("netchan::nats::Node::connect needs a tokio runtime".to_owned())
        })?;
        let mut opts = match &cfg.credentials {
            Some(path) => async_nats::ConnectOptions::with_credentials_file(path.clone())
                .await
                .map_err(|e| {
                    Error::Config(format!(
                        "cannot read the NATS credentials file {}: {e}",
                        path.display()
                    ))
                })?,
            None => async_nats::ConnectOptions::new(),
        };
        if let Some((user, password)) = &cfg.user_password {
            opts = opts.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &cfg.token {
            opts = opts.token(token.clone());
        }
        for pem in &cfg.root_certificates {
            opts = opts.add_root_certificates(pem.clone());
        }
        if let Some((cert, key)) = &cfg.client_certificate {
            opts = opts.add_client_certificate(cert.clone(), key.clone());
        }
        if let Some(name) = &cfg.name {
            opts = opts.name(name.clone());
        }
        let shown = url.to_owned();
        opts = opts
            .require_tls(cfg.require_tls)
            .connection_timeout(cfg.connect_timeout)
            .event_callback(move |event| {
                let shown = shown.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!(server = %shown, "NATS connection (re)established");
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!(server = %shown, "NATS connection lost; reconnecting");
                        }
                        other => tracing::debug!(server = %shown, event = %other, "NATS event"),
                    }
                }
            });
        let client = opts.connect(url).await.map_err(|e| {
            Error::Io(Arc::new(std::io::Error::other(format!(
                "cannot connect to NATS at {url}: {e} (is nats-server running there, \
                 with JetStream enabled by -js?)"
            ))))
        })?;
        let js = async_nats::jetstream::new(client.clone());
        let id = client
            .new_inbox()
            .rsplit('.')
            .next()
            .unwrap_or("node")
            .to_owned();
        tracing::info!(server = %url, node = %id, "NATS node connected");
        Ok(Node {
            inner: Arc::new(Inner {
                client,
                js,
                cfg,
                closed: CancellationToken::new(),
                id,
                producers: AtomicU64::new(0),
                streams: Mutex::new(HashMap::new()),
                replies: tokio::sync::OnceCell::new(),
                tasks: AtomicUsize::new(0),
                tasks_done: tokio::sync::Notify::new(),
                rt,
            }),
        })
    }

    /// A sender on channel `name`: each value goes to exactly one receiver
    /// of the channel, on any node. `send` completes once the server
    /// stored the value. The stream is created at the first send if no
    /// node created it yet.
    ///
    /// ```no_run
    /// # async fn f(node: netchan::nats::Node) -> Result<(), netchan::Error> {
    /// let jobs = node.export_sender::<String>("jobs")?;
    /// jobs.send("job 1".into()).await?;
    /// # Ok(()) }
    /// ```
    pub fn export_sender<T: Message>(&self, name: &str) -> Result<Sender<T>, Error> {
        self.check_open()?;
        chan::sender::<T>(&self.inner, name, None)
    }

    /// A receiver of channel `name` that merges what every node sends on
    /// it, holding at most `capacity` values unacknowledged. `capacity`
    /// must be at least 1 (rendezvous cannot hold on NATS).
    ///
    /// ```no_run
    /// # async fn f(node: netchan::nats::Node) -> Result<(), netchan::Error> {
    /// let mut inbox = node.export_receiver::<String>("results", 64)?;
    /// while let Some(r) = inbox.recv().await? {
    ///     println!("{r}");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn export_receiver<T: Message>(
        &self,
        name: &str,
        capacity: usize,
    ) -> Result<Receiver<T>, Error> {
        self.check_open()?;
        chan::receiver::<T>(&self.inner, name, capacity, None)
    }

    /// A receiver of channel `name`, sharing its values with every other
    /// receiver of it (each value to one), holding at most `capacity`
    /// values unacknowledged. Fails at once if the channel carries another
    /// type, or `capacity` is 0.
    ///
    /// ```no_run
    /// # async fn f(node: netchan::nats::Node) -> Result<(), netchan::Error> {
    /// let mut jobs = node.import_receiver::<String>("jobs", 16).await?;
    /// while let Some(job) = jobs.recv().await? {
    ///     println!("working on {job}");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn import_receiver<T: Message>(
        &self,
        name: &str,
        capacity: usize,
    ) -> Result<Receiver<T>, Error> {
        self.check_open()?;
        let names = chan::Names::new(&self.inner.cfg.prefix, name)?;
        chan::check_capacity(capacity)?;
        let consumer = chan::consumer::<T>(&self.inner, &names).await?;
        chan::receiver::<T>(&self.inner, name, capacity, Some(consumer))
    }

    /// A sender on channel `name` (merged with every other sender into
    /// its receivers). Fails at once if the channel carries another type.
    ///
    /// ```no_run
    /// # async fn f(node: netchan::nats::Node) -> Result<(), netchan::Error> {
    /// let results = node.import_sender::<u64>("results").await?;
    /// results.send(7).await?;
    /// # Ok(()) }
    /// ```
    pub async fn import_sender<T: Message>(&self, name: &str) -> Result<Sender<T>, Error> {
        self.check_open()?;
        let names = chan::Names::new(&self.inner.cfg.prefix, name)?;
        chan::ensure_stream::<T>(&self.inner, &names).await?;
        chan::sender::<T>(&self.inner, name, Some(names))
    }

    /// Serves `service` on the cluster: every node serving the same
    /// service name joins one queue group, and each call goes to one of
    /// them. Logged at `warn` if the subscription fails.
    ///
    /// ```no_run
    /// # async fn f(node: netchan::nats::Node) -> Result<(), netchan::Error> {
    /// #[netchan::service]
    /// pub trait Clock {
    ///     async fn now(&self) -> u64;
    /// }
    /// #[derive(Clone)]
    /// struct Wall;
    /// impl Clock for Wall {
    ///     async fn now(&self) -> u64 { 1_700_000_000 }
    /// }
    /// node.serve(ClockServer::new(Wall));
    /// // On any node:
    /// let clock = ClockClient::new(&node);
    /// let _t = clock.now().await?;
    /// # Ok(()) }
    /// ```
    pub fn serve<S: Service + Clone>(&self, service: S) {
        rpc::serve(&self.inner, service);
    }

    /// Closes the node: receivers hand back the values they hold but did
    /// not take (redelivered to other receivers at once) and then end
    /// cleanly; sends waiting for the server fail and give their value
    /// back; served services stop taking calls; then the connection is
    /// flushed and closed. Every clone of the node is closed.
    ///
    /// ```no_run
    /// # async fn f(node: netchan::nats::Node) {
    /// node.close().await;
    /// # }
    /// ```
    pub async fn close(&self) {
        self.inner.closed.cancel();
        // The bridges hand back what they hold before the connection goes
        // (bounded: a server that stopped answering does not hold us up).
        let wait = async {
            loop {
                let notified = self.inner.tasks_done.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.inner.tasks.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(CLOSE_WAIT, wait).await;
        let _ = self.inner.client.flush().await;
        let _ = self.inner.client.drain().await;
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.inner.closed.is_cancelled() {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }
}

impl crate::CallTarget for Node {
    fn call_path(&self) -> crate::rpc::CallPath {
        crate::rpc::CallPath::Remote(Arc::new(rpc::Caller {
            inner: self.inner.clone(),
        }))
    }
}

/// How long `close` waits for the node's tasks to hand back what they hold.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Counts one running task of a node, until dropped.
struct TaskGuard(Arc<Inner>);

impl TaskGuard {
    fn new(inner: &Arc<Inner>) -> TaskGuard {
        inner.tasks.fetch_add(1, Ordering::AcqRel);
        TaskGuard(inner.clone())
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if self.0.tasks.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.tasks_done.notify_waiters();
        }
    }
}

impl Inner {
    /// The largest body one message may carry: the server's `max_payload`
    /// less room for headers.
    fn max_body(&self) -> usize {
        self.client
            .server_info()
            .max_payload
            .saturating_sub(HEADER_ROOM)
            .max(1024)
    }

    fn next_producer(&self) -> u64 {
        self.producers.fetch_add(1, Ordering::Relaxed)
    }
}

/// Bytes of a message's payload left to its headers (message id, call id,
/// kind): far more than they take.
const HEADER_ROOM: usize = 1024;

/// A name as one NATS subject token and part of a stream name: letters,
/// digits and `-` stay, every other byte becomes `_` and two hex digits
/// (so `_` itself is `_5F` and the mapping is one to one).
fn token(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_keep_plain_names_and_escape_the_rest_one_to_one() {
        assert_eq!(token("jobs"), "jobs");
        assert_eq!(token("a.b"), "a_2Eb");
        assert_eq!(token("a_2Eb"), "a_5F2Eb");
        assert_eq!(token("netchan.rpc/Share"), "netchan_2Erpc_2FShare");
        assert_eq!(token("*>"), "_2A_3E");
    }

    #[test]
    fn a_prefix_with_a_dot_is_refused_with_what_to_use() {
        let e = NatsConfig::default().prefix("a.b").validate().unwrap_err();
        assert!(e.to_string().contains("letters, digits or '-'"), "{e}");
        assert!(NatsConfig::default().prefix("shop-1").validate().is_ok());
    }
}
