//! What netchan logs through `tracing`: connections opened and closed at
//! `info` with the peer's address and the side, failures at `warn` with
//! the reason.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use netchan::{Config, Exporter, Session};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

use crate::support::*;

/// One captured event: its level and its fields, message included.
#[derive(Debug, Clone)]
struct Logged {
    level: tracing::Level,
    text: String,
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Logged>>>);

impl Capture {
    /// The first event at `level` whose text contains every one of `what`.
    fn find(&self, level: tracing::Level, what: &[&str]) -> Option<Logged> {
        let logged = self.0.lock().unwrap();
        logged
            .iter()
            .find(|l| l.level == level && what.iter().all(|w| l.text.contains(w)))
            .cloned()
    }

    fn all(&self) -> Vec<Logged> {
        self.0.lock().unwrap().clone()
    }
}

struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push_str(&format!("{}={} ", field.name(), value));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut text = String::new();
        event.record(&mut Fields(&mut text));
        self.0.lock().unwrap().push(Logged {
            level: *event.metadata().level(),
            text,
        });
    }
}

// A current-thread runtime: every task runs on this thread, under the
// subscriber set here.
#[tokio::test]
async fn a_connection_is_logged_opened_with_its_peer_and_its_failure_at_warn() {
    let capture = Capture::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));

    let exp = Exporter::bind("127.0.0.1:0").await.expect("bind");
    let client = Session::connect(exp.local_addr()).await.expect("connect");
    let opened = capture
        .find(tracing::Level::INFO, &["connection opened", "side=Dialer"])
        .unwrap_or_else(|| panic!("no 'connection opened' at info in {:?}", capture.all()));
    assert!(
        opened.text.contains(&exp.local_addr().to_string()),
        "the dialler's line names the peer it reached: {opened:?}"
    );
    within("close", client.close()).await;
    within("closed", client.closed()).await;

    // A peer that answers nothing: the handshake fails, at warn.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let _silent = tokio::spawn(async move {
        let held = listener.accept().await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(held);
    });
    let cfg = Config::default().handshake_timeout(Duration::from_millis(200));
    assert!(Session::connect_with(addr, cfg).await.is_err());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let failed = capture
        .find(tracing::Level::WARN, &["handshake failed"])
        .unwrap_or_else(|| panic!("no 'handshake failed' at warn in {:?}", capture.all()));
    assert!(
        failed.text.contains(&addr.to_string()),
        "the failure names the silent peer: {failed:?}"
    );
    assert!(
        capture
            .find(tracing::Level::INFO, &["connection closed"])
            .is_some(),
        "the clean close is logged at info: {:?}",
        capture.all()
    );
}
