//! # netchan
//!
//! Go-style typed channels between machines, multiplexed over one TCP (or
//! any byte-stream) connection, with real channel semantics: bounded
//! buffers with backpressure, rendezvous on capacity 0, work shared among
//! several receivers, nothing lost silently when a connection fails, and
//! channels that travel inside messages.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), netchan::Error> {
//! use netchan::{Session, channel};
//!
//! // Two ends of one connection (in memory here; `Session::connect` and
//! // `Exporter::bind` do the same over TCP).
//! let (server, client) = Session::pair();
//!
//! // The server exports an inbox of requests, each carrying a private
//! // channel for its reply: Go's "channels of channels".
//! let mut inbox = server.export_receiver::<(String, netchan::Sender<String>)>("echo", 8)?;
//! tokio::spawn(async move {
//!     while let Ok(Some((text, reply))) = inbox.recv().await {
//!         let _ = reply.send(text.to_uppercase()).await;
//!     }
//! });
//!
//! let requests = client.import_sender::<(String, netchan::Sender<String>)>("echo").await?;
//! let (reply_tx, mut reply_rx) = channel::<String>(1);
//! requests.send(("hello".into(), reply_tx)).await?;
//! assert_eq!(reply_rx.recv().await.ok().flatten().as_deref(), Some("HELLO"));
//! # Ok(())
//! # }
//! ```
//!
//! ## Receivers are streams
//!
//! A [`Receiver`] is also a `futures` [`Stream`](prelude::Stream) of
//! `Result<T, RecvError>`. [`prelude`] brings the traits that work on it
//! (`StreamExt` for `next`, `map`, `for_each`, …, `TryStreamExt` for
//! `try_next`, …) together with netchan's common types, so a program needs
//! no `futures` dependency of its own:
//!
//! ```
//! use netchan::prelude::*;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (tx, rx) = channel::<u32>(8);
//! for i in 1..=3 {
//!     tx.send(i).await?;
//! }
//! drop(tx); // closes the channel: the stream ends after the values sent
//!
//! let squares: Vec<u32> = rx.map_ok(|i| i * i).try_collect().await?;
//! assert_eq!(squares, [1, 4, 9]);
//! # Ok(()) }
//! ```
//!
//! ## RPC, in both directions
//!
//! `#[netchan::service]` turns a trait into a typed client and a server.
//! Either end of a connection may serve and call; here the server calls
//! back into the client over the client's own connection.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use netchan::{Exporter, RpcError, Session};
//!
//! /// What the server offers.
//! #[netchan::service]
//! pub trait Greeter {
//!     /// Greets the caller, asking it for its name first.
//!     async fn greet(&self) -> String;
//! }
//!
//! /// What each client offers back.
//! #[netchan::service]
//! pub trait Caller {
//!     async fn name(&self) -> String;
//! }
//!
//! /// One per session: it knows its peer and can call it.
//! struct Hello { peer: CallerClient }
//! impl Greeter for Hello {
//!     async fn greet(&self) -> String {
//!         match self.peer.name().await {
//!             Ok(name) => format!("hello, {name}"),
//!             Err(e) => format!("hello, stranger ({e})"),
//!         }
//!     }
//! }
//!
//! struct Me;
//! impl Caller for Me {
//!     async fn name(&self) -> String { "ada".into() }
//! }
//!
//! let exp = Exporter::bind("127.0.0.1:0").await?;
//! exp.serve_each(|session: &Session| GreeterServer::new(Hello { peer: CallerClient::new(session) }));
//!
//! let session = Session::connect(exp.local_addr()).await?;
//! session.serve(CallerServer::new(Me));
//! let greeter = GreeterClient::new(&session);
//! assert_eq!(greeter.greet().await?, "hello, ada");
//! # Ok(()) }
//! ```
//!
//! For each trait the macro generates a client, `{Trait}Client`, and a
//! server, `{Trait}Server`; [`example`] shows them, with every method,
//! for a small service.
//!
//! ## Layers
//!
//! ```text
//!  layer            files (netchan/src/)               holds
//!  crate surface    prelude, example, metrics           common imports; a documented example
//!                   (feature), readme_tests             service; stats through `metrics`
//!  nats (feature)   nats/{mod,chan,rpc}                 the same channels and services over NATS:
//!                                                       JetStream streams, request/reply with queue groups
//!  rpc              rpc/{mod,client,server,serve,wire,  Service, clients, dispatchers, serve / serve_each;
//!                   observe,target}                     per-call stats, spans and trace context;
//!                                                       CallTarget: a Session or a backend
//!  session,         session.rs, exporter.rs,            Session, Exporter: import & export by name,
//!  exporter         cluster.rs, redial.rs               type and direction checks; listen / dial;
//!                                                       redial and resume a broken session
//!  channel, pipe    channel/{mod,queue,route,embed,     Sender / Receiver / Pipe; buffers, routes,
//!                   send,sink}, pipe.rs                 handles inside messages, typed encode,
//!                                                       the Sink's batches
//!  conn,            conn/{mod,dispatch,endpoint,        one live connection: state behind one lock,
//!  transport        exports,send,driver,errors,stats,   endpoint traits, dispatch, send path, reader
//!                   calls,events}; transport/{mod,tcp,  and writer tasks (one pair per link), error
//!                   tls,                                log, session events, stats and
//!                   tls/provider}                       per-method RPC counters; TCP/TLS dial and
//!                                                       accept, the ring crypto provider
//!  codec, config,   codec/{mod,hint,bin/{mod,ser,de}}, message encoding (bincode 2's format, own
//!  error, util      config.rs, error.rs, util.rs        serde encoder and bounded decoder), type
//!                                                       names; limits; errors
//!  proto (sans-IO)  proto/{frame,hello,conn,chan,       frames, handshake, the channel table and its
//!                   flow,chunk,handles,replay}          state machines, credit and confirmation,
//!                                                       chunking, handle tables, keepalive, the
//!                                                       replay log of a resumable session
//! ```
//!
//! Each layer imports only from the layers below it (`conn` never names a
//! channel, session, exporter or RPC type: endpoints plug in through its
//! traits); `python3 ../shared/tools/layers.py .` checks this.
//!
//! The wire format is described byte by byte in `docs/PROTOCOL.md`.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

// The code `#[netchan::service]` generates names `::netchan::…`, which
// `example` expands inside this crate.
extern crate self as netchan;

#[doc(hidden)]
pub mod __private;
mod channel;
mod cluster;
mod codec;
mod config;
mod conn;
mod error;
pub mod example;
mod exporter;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "nats")]
pub mod nats;
mod pipe;
pub mod prelude;
pub mod proto;
mod redial;
mod rpc;
mod session;
pub(crate) mod transport;
mod util;

pub use channel::{Receiver, Sender, channel};
pub use cluster::{dial, dial_with, listen, listen_with};
pub use config::{Config, Reconnect};
pub use conn::{
    CallErrors, CallSide, ChannelStats, Direction, Latency, MethodStats, SessionEvent, SessionStats,
};
pub use error::{
    Error, Origin, RecvError, RpcError, SendError, SendErrorKind, TryRecvError, TrySendError,
};
pub use exporter::{Exporter, ExporterStats};
pub use netchan_macros::service;
pub use pipe::{Pipe, pipe};
pub use rpc::{CallTarget, Service};
pub use session::{Importer, Session};
#[cfg(feature = "tls")]
pub use transport::tls;

/// Any type that can travel on a channel: `Serialize + DeserializeOwned +
/// Send + 'static`. Implemented for every such type.
pub trait Message: serde::Serialize + serde::de::DeserializeOwned + Send + 'static {}

impl<T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static> Message for T {}

#[cfg(test)]
mod layout_tests {
    /// The layer diagram in this file's docs names every source file, so
    /// it cannot drift from the tree unnoticed.
    #[test]
    fn the_layer_diagram_names_every_source_file() {
        let lib = include_str!("lib.rs");
        let start = lib.find("## Layers").expect("a Layers section");
        let diagram = &lib[start..start + lib[start..].find("```\n//!\n").expect("its end")];
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut missing = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("read src") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
                if ["lib", "__private", "tests", "model_tests"].contains(&stem) {
                    continue;
                }
                if !diagram.contains(stem) {
                    missing.push(
                        path.strip_prefix(&root)
                            .expect("under src")
                            .display()
                            .to_string(),
                    );
                }
            }
        }
        assert!(missing.is_empty(), "not in the layer diagram: {missing:?}");
    }
}

/// The README's Rust blocks, compiled and run as doc tests (its TLS block
/// needs the `tls` feature).
#[cfg(all(doctest, feature = "tls"))]
#[doc = include_str!("../../README.md")]
mod readme {}

#[cfg(test)]
mod readme_tests;
