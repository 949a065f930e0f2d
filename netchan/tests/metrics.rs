//! The `metrics` feature: a session publishes its stats through the
//! `metrics` facade, to whatever recorder the program installed (here a
//! small one that keeps the last value of each series).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};

/// The last value of every series, by name and sorted labels.
#[derive(Default)]
struct Store(Mutex<HashMap<String, f64>>);

struct Series {
    key: String,
    store: Arc<Store>,
}

impl Series {
    fn put(&self, v: f64) {
        self.store
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(self.key.clone(), v);
    }
}

impl CounterFn for Series {
    fn increment(&self, _: u64) {}
    fn absolute(&self, v: u64) {
        self.put(v as f64);
    }
}

impl GaugeFn for Series {
    fn increment(&self, _: f64) {}
    fn decrement(&self, _: f64) {}
    fn set(&self, v: f64) {
        self.put(v);
    }
}

struct TestRecorder(Arc<Store>);

fn key_string(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Series {
            key: key_string(key),
            store: self.0.clone(),
        }))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::new(Series {
            key: key_string(key),
            store: self.0.clone(),
        }))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

fn store() -> Arc<Store> {
    static STORE: OnceLock<Arc<Store>> = OnceLock::new();
    STORE
        .get_or_init(|| {
            let store = Arc::new(Store::default());
            metrics::set_global_recorder(TestRecorder(store.clone())).expect("one recorder");
            store
        })
        .clone()
}

/// The value of the series `name` whose labels include every one of
/// `labels`, once it reached `at_least`.
async fn wait_for(store: &Store, name: &str, labels: &[&str], at_least: f64) -> f64 {
    for _ in 0..100 {
        let found = store
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{name}{{")))
            .filter(|(k, _)| labels.iter().all(|l| k.contains(l)))
            .map(|(_, v)| *v)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
        if let Some(v) = found.filter(|v| *v >= at_least) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} with {labels:?} never reached {at_least}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_publishes_its_traffic_and_each_channel_through_the_facade() {
    let store = store();
    let (a, b) = netchan::Session::pair();
    let tx = a.export_sender::<Vec<u8>>("metered").expect("export");
    let mut rx = b
        .import_receiver::<Vec<u8>>("metered", 8)
        .await
        .expect("import");
    for _ in 0..5 {
        tx.send(vec![1; 100]).await.expect("send");
    }
    a.drain(Some(Duration::from_secs(10))).await.expect("drain");
    // Five values of 101 encoded bytes each, on both ends.
    let sent = wait_for(
        &store,
        "netchan_channel_bytes_total",
        &["channel=metered", "direction=send"],
        505.0,
    )
    .await;
    assert_eq!(sent, 505.0);
    let messages = wait_for(
        &store,
        "netchan_channel_messages_total",
        &["channel=metered", "direction=receive"],
        5.0,
    )
    .await;
    assert_eq!(messages, 5.0);
    let queued = wait_for(
        &store,
        "netchan_channel_queued",
        &["channel=metered", "direction=receive"],
        5.0,
    )
    .await;
    assert_eq!(queued, 5.0, "none taken yet");
    assert!(wait_for(&store, "netchan_bytes_sent_total", &[], 505.0).await >= 505.0);
    for _ in 0..5 {
        rx.recv().await.expect("recv");
    }
}

#[netchan::service]
pub trait Meter {
    async fn ping(&self, n: u32) -> u32;
}

struct Pong;
impl Meter for Pong {
    async fn ping(&self, n: u32) -> u32 {
        n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_publishes_each_rpc_methods_calls_errors_and_latency() {
    let store = store();
    let (server, client) = netchan::Session::pair();
    server.serve(MeterServer::new(Pong));
    let meter = MeterClient::new(&client);
    for n in 0..4 {
        assert_eq!(meter.ping(n).await, Ok(n));
    }
    for side in ["side=client", "side=server"] {
        let labels = ["service=Meter", "method=ping", side];
        assert_eq!(
            wait_for(&store, "netchan_rpc_calls_total", &labels, 4.0).await,
            4.0
        );
        assert_eq!(
            wait_for(&store, "netchan_rpc_completed_total", &labels, 4.0).await,
            4.0
        );
        let max = wait_for(
            &store,
            "netchan_rpc_latency_seconds",
            &["service=Meter", "method=ping", side, "quantile=1"],
            f64::MIN_POSITIVE,
        )
        .await;
        assert!(max > 0.0 && max < 10.0, "{side}: {max}");
        let mut timeouts = labels.to_vec();
        timeouts.push("kind=timeout");
        assert_eq!(
            wait_for(&store, "netchan_rpc_errors_total", &timeouts, 0.0).await,
            0.0
        );
        assert_eq!(
            wait_for(&store, "netchan_rpc_in_flight", &labels, 0.0).await,
            0.0
        );
    }
}
