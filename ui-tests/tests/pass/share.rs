//! The DESIGN.md example: the generated client and server have the promised
//! shape, and their futures are `Send`.
#![deny(warnings, missing_docs, missing_debug_implementations, unreachable_pub)]

use std::time::Duration;

use netchan::{Exporter, Session};

/// Files shared between clients.
#[netchan::service]
pub trait Share {
    /// Makes `name` visible to other clients.
    async fn publish(&self, name: String);
    /// Every published name.
    async fn list(&self) -> Vec<String>;
    /// Reads `path` from `client`.
    async fn read(&self, client: String, path: String) -> Result<Vec<u8>, String>;
}

struct Files;

impl Share for Files {
    async fn publish(&self, _name: String) {}
    async fn list(&self) -> Vec<String> {
        Vec::new()
    }
    async fn read(&self, client: String, path: String) -> Result<Vec<u8>, String> {
        Err(format!("{client} has no {path}"))
    }
}

fn clone_send_sync_debug<T: Clone + Send + Sync + std::fmt::Debug + 'static>() {}
fn service<T: netchan::Service + Clone>(_: &T) {}
fn send<T: Send>(_: &T) {}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    clone_send_sync_debug::<ShareClient>();
    clone_send_sync_debug::<ShareServer<Files>>();

    let (a, b) = Session::pair();
    let server = ShareServer::new(Files);
    service(&server);
    a.serve(server.clone());
    a.serve(ShareServer::named(Files, "share.backup"));

    let client: ShareClient = ShareClient::new(&b);
    let _named: ShareClient = ShareClient::named(&b, "share.backup");
    let client = client.with_timeout(Duration::from_secs(5));

    // Futures are `Send` (so they can be spawned), whatever the method.
    let list = client.list();
    send(&list);
    drop(list);
    let publish = client.publish("a".to_owned());
    send(&publish);
    drop(publish);
    let read = client.read("c".to_owned(), "p".to_owned());
    send(&read);
    drop(read);

    // An exporter takes the server too (one instance for every session).
    if let Ok(exporter) = Exporter::bind("127.0.0.1:0").await {
        exporter.serve(server);
    }
}
