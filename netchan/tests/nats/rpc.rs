//! RPC over NATS in one process: generated clients made from a `Node`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use netchan::RpcError;
use netchan::nats::{NatsConfig, Node};

use super::server::NatsServer;
use super::{node, within};

/// What the tests serve.
#[netchan::service]
pub(crate) trait Lab {
    /// Echoes, with the replica's name.
    async fn echo(&self, text: String) -> String;
    /// `len` bytes, each `i % 251`.
    async fn blob(&self, len: usize) -> Vec<u8>;
    /// Sleeps; counts the sleeps that were cut short (dropped).
    async fn sleep(&self, ms: u64) -> u64;
    /// The sum of the bytes.
    async fn sum(&self, data: Vec<u8>) -> u64;
    /// Takes a sender: refused on NATS.
    async fn take(&self, tx: netchan::Sender<u32>) -> u32;
}

#[derive(Clone)]
pub(crate) struct Replica {
    pub(crate) name: String,
    pub(crate) cancelled: Arc<AtomicUsize>,
    /// Prints "sleeping NAME" when a sleep starts (helper processes).
    pub(crate) announce: bool,
}

struct CountDrop(Arc<AtomicUsize>, bool);
impl Drop for CountDrop {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Lab for Replica {
    async fn echo(&self, text: String) -> String {
        format!("{}: {text}", self.name)
    }
    async fn blob(&self, len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }
    async fn sleep(&self, ms: u64) -> u64 {
        let mut guard = CountDrop(self.cancelled.clone(), false);
        if self.announce {
            println!("sleeping {}", self.name);
        }
        tokio::time::sleep(Duration::from_millis(ms)).await;
        guard.1 = true;
        ms
    }
    async fn sum(&self, data: Vec<u8>) -> u64 {
        data.iter().map(|b| u64::from(*b)).sum()
    }
    async fn take(&self, _tx: netchan::Sender<u32>) -> u32 {
        1
    }
}

pub(crate) fn replica(name: &str) -> Replica {
    Replica {
        name: name.to_owned(),
        cancelled: Arc::new(AtomicUsize::new(0)),
        announce: false,
    }
}

/// Calls until the replica answers (its subscription may still be on its
/// way to the server).
async fn first_answer(client: &LabClient) -> String {
    within("a replica answers", async {
        loop {
            match client.echo("hi".into()).await {
                Ok(s) => return s,
                Err(RpcError::NoSuchService(_)) => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_client_made_from_a_node_calls_a_replica() {
    let server = NatsServer::start();
    let a = node(&server).await;
    let b = node(&server).await;
    a.serve(LabServer::new(replica("a")));
    let client = LabClient::new(&b);
    assert_eq!(first_answer(&client).await, "a: hi");
    assert_eq!(client.echo("again".into()).await.unwrap(), "a: again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_nobody_serves_is_no_such_service() {
    let server = NatsServer::start();
    let a = node(&server).await;
    let client = LabClient::new(&a);
    match within("the call", client.echo("x".into())).await {
        Err(RpcError::NoSuchService(name)) => assert_eq!(name, "Lab"),
        other => panic!("expected NoSuchService, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_shared_among_replicas() {
    let server = NatsServer::start();
    let mut replicas = Vec::new();
    for name in ["r1", "r2", "r3"] {
        let n = node(&server).await;
        n.serve(LabServer::new(replica(name)));
        replicas.push(n);
    }
    let caller = node(&server).await;
    let client = LabClient::new(&caller);
    first_answer(&client).await;
    // Every replica has subscribed once each answered at least one call;
    // a queue group spreads calls at random, so 300 calls reach all three.
    let mut seen = std::collections::HashSet::new();
    for i in 0..300 {
        let r = client.echo(format!("{i}")).await.unwrap();
        seen.insert(r.split(':').next().unwrap().to_owned());
    }
    assert_eq!(seen.len(), 3, "replicas answering: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10_mib_result_arrives_through_a_max_payload_of_1_mib() {
    let server = NatsServer::start_with("max_payload: 1048576");
    let a = node(&server).await;
    a.serve(LabServer::new(replica("a")));
    let client = LabClient::new(&a);
    first_answer(&client).await;
    let len = 10 << 20;
    let blob = within("the blob", client.blob(len)).await.unwrap();
    assert_eq!(blob.len(), len);
    assert!(blob.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_3_mib_request_goes_in_chunks_through_a_max_payload_of_1_mib() {
    let server = NatsServer::start_with("max_payload: 1048576");
    let a = node(&server).await;
    a.serve(LabServer::new(replica("a")));
    let b = node(&server).await;
    let client = LabClient::new(&b);
    first_answer(&client).await;
    let data: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
    let want: u64 = data.iter().map(|b| u64::from(*b)).sum();
    assert_eq!(within("the sum", client.sum(data)).await.unwrap(), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_replicas_limit_is_refused_with_a_codec_error() {
    let server = NatsServer::start_with("max_payload: 1048576");
    let a = Node::connect_with(&server.url, NatsConfig::default().max_message_len(2 << 20))
        .await
        .unwrap();
    a.serve(LabServer::new(replica("a")));
    let b = node(&server).await;
    let client = LabClient::new(&b);
    first_answer(&client).await;
    match within("the call", client.sum(vec![1; 4 << 20])).await {
        Err(RpcError::Codec(e)) => assert!(e.contains("max_message_len"), "{e}"),
        other => panic!("expected a codec error, got {other:?}"),
    }
    // The replica goes on.
    assert_eq!(client.sum(vec![1; 10]).await.unwrap(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_over_the_callers_limit_is_a_codec_error() {
    let server = NatsServer::start();
    let a = Node::connect_with(&server.url, NatsConfig::default().max_message_len(1 << 20))
        .await
        .unwrap();
    a.serve(LabServer::new(replica("a")));
    let client = LabClient::new(&a);
    first_answer(&client).await;
    match within("the blob", client.blob(2 << 20)).await {
        Err(RpcError::Codec(e)) => assert!(e.contains("max_message_len"), "{e}"),
        other => panic!("expected a codec error, got {:?}", other.map(|v| v.len())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_travels_and_a_dropped_call_is_cancelled_on_the_replica() {
    let server = NatsServer::start();
    let a = node(&server).await;
    let r = replica("a");
    let cancelled = r.cancelled.clone();
    a.serve(LabServer::new(r));
    let b = node(&server).await;
    let client = LabClient::new(&b);
    first_answer(&client).await;
    // The caller's deadline: a timeout, and the handler is dropped.
    let short = client.with_timeout(Duration::from_millis(200));
    assert!(matches!(short.sleep(30_000).await, Err(RpcError::Timeout)));
    within("the handler dropped", async {
        while cancelled.load(Ordering::SeqCst) < 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // A call future dropped: the replica drops the handler too.
    let call = client.sleep(30_000);
    let _ = tokio::time::timeout(Duration::from_millis(200), call).await;
    within("the second handler dropped", async {
        while cancelled.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // A call that fits its deadline completes.
    assert_eq!(
        client
            .with_timeout(Duration::from_secs(20))
            .sleep(10)
            .await
            .unwrap(),
        10
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_as_an_argument_is_refused_with_a_codec_error() {
    let server = NatsServer::start();
    let a = node(&server).await;
    a.serve(LabServer::new(replica("a")));
    let client = LabClient::new(&a);
    let (tx, _rx) = netchan::channel::<u32>(1);
    match within("the call", client.take(tx)).await {
        Err(RpcError::Codec(e)) => {
            assert!(e.contains("cannot travel inside messages on NATS"), "{e}")
        }
        other => panic!("expected a codec error, got {other:?}"),
    }
}
