//! Generated code under strict lints, rustc's and clippy's (pedantic
//! included; `cargo clippy -p ui-tests --all-targets -- -D warnings` checks
//! them), with shapes that trip lints in hand-written code: many arguments,
//! variants sharing a prefix, one large variant, a single method, a
//! deprecated method. Plus calls over an in-memory session, so that the
//! expansion is known to work end to end, not only to compile.
#![deny(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    unused,
    rust_2018_idioms,
    deprecated
)]
#![warn(clippy::pedantic)]

use std::sync::Mutex;
use std::time::Duration;

use netchan::{RpcError, Session};
use serde::{Deserialize, Serialize};

/// 256 bytes, to make one request variant much larger than the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Block {
    /// The contents.
    pub words: [u64; 32],
}

/// Files shared between clients.
#[netchan::service]
pub trait Share {
    /// Makes `name` visible to other clients.
    async fn publish(&self, name: String);
    /// Every published name.
    async fn list(&self) -> Vec<String>;
    /// Reads `path` from `client`.
    async fn read(&self, client: String, path: String) -> Result<Vec<u8>, String>;
    /// Stores a block.
    async fn get_block(&self, block: Block) -> u64;
    /// Sums many numbers.
    #[allow(clippy::too_many_arguments)]
    async fn get_sum(&self, a: u8, b: u16, c: u32, d: u64, e: i8, f: i16, g: i32, h: i64) -> i128;
    /// Old name of `list`.
    #[deprecated = "use `list`"]
    async fn get_names(&self) -> Vec<String>;
}

/// A service with a single method.
#[netchan::service(name = "ping.v1")]
pub trait Ping {
    /// Answers.
    async fn ping(&self, n: u32) -> u32;
}

#[derive(Default)]
struct Files {
    names: Mutex<Vec<String>>,
}

impl Share for Files {
    async fn publish(&self, name: String) {
        self.names.lock().unwrap().push(name);
    }
    async fn list(&self) -> Vec<String> {
        self.names.lock().unwrap().clone()
    }
    async fn read(&self, client: String, path: String) -> Result<Vec<u8>, String> {
        if client == "me" {
            Ok(path.into_bytes())
        } else {
            Err(format!("no client {client}"))
        }
    }
    async fn get_block(&self, block: Block) -> u64 {
        block.words.iter().sum()
    }
    #[allow(clippy::many_single_char_names)] // hand-written; the generated client is not flagged
    async fn get_sum(&self, a: u8, b: u16, c: u32, d: u64, e: i8, f: i16, g: i32, h: i64) -> i128 {
        i128::from(a)
            + i128::from(b)
            + i128::from(c)
            + i128::from(d)
            + i128::from(e)
            + i128::from(f)
            + i128::from(g)
            + i128::from(h)
    }
    async fn get_names(&self) -> Vec<String> {
        self.list().await
    }
}

struct Echo;

impl Ping for Echo {
    async fn ping(&self, n: u32) -> u32 {
        n + 1
    }
}

#[tokio::test]
async fn calls_reach_the_implementation_and_come_back() {
    let (server, client) = Session::pair();
    server.serve(ShareServer::new(Files::default()));
    let share = ShareClient::new(&client).with_timeout(Duration::from_secs(10));

    share.publish("a.txt".to_owned()).await.unwrap();
    share.publish("b.txt".to_owned()).await.unwrap();
    assert_eq!(share.list().await.unwrap(), ["a.txt", "b.txt"]);
    assert_eq!(
        share.read("me".to_owned(), "x".to_owned()).await.unwrap(),
        Ok(b"x".to_vec())
    );
    assert_eq!(
        share.read("you".to_owned(), "x".to_owned()).await.unwrap(),
        Err("no client you".to_owned())
    );
    assert_eq!(share.get_block(Block { words: [2; 32] }).await.unwrap(), 64);
    assert_eq!(share.get_sum(1, 2, 3, 4, 5, 6, 7, 8).await.unwrap(), 36);
    #[allow(deprecated)]
    let names = share.get_names().await.unwrap();
    assert_eq!(names, ["a.txt", "b.txt"]);
}

#[tokio::test]
async fn client_futures_can_be_spawned() {
    let (server, client) = Session::pair();
    server.serve(PingServer::new(Echo));
    let ping = PingClient::new(&client);
    let handles: Vec<_> = (0..8)
        .map(|n| {
            let ping = ping.clone();
            tokio::spawn(async move { ping.ping(n).await })
        })
        .collect();
    for (n, handle) in (0..8).zip(handles) {
        assert_eq!(handle.await.unwrap().unwrap(), n + 1);
    }
}

#[tokio::test]
async fn either_end_serves_and_calls() {
    let (left, right) = Session::pair();
    left.serve(PingServer::new(Echo));
    right.serve(PingServer::named(Echo, "ping.right"));
    assert_eq!(PingClient::new(&right).ping(1).await.unwrap(), 2);
    assert_eq!(
        PingClient::named(&left, "ping.right")
            .ping(2)
            .await
            .unwrap(),
        3
    );
}

#[tokio::test]
async fn names_select_the_service() {
    let (server, client) = Session::pair();
    server.serve(PingServer::named(Echo, "elsewhere"));
    // The default name (`ping.v1`, from the attribute) is not served.
    match PingClient::new(&client).ping(1).await {
        Err(RpcError::NoSuchService(name)) => assert!(name.contains("ping.v1"), "{name}"),
        other => panic!("expected NoSuchService, got {other:?}"),
    }
    assert_eq!(
        PingClient::named(&client, "elsewhere")
            .ping(1)
            .await
            .unwrap(),
        2
    );
}
