//! RPC calls as `tracing` sees them: a `netchan.call` span on the calling
//! side and a `netchan.handle` span around the handler, with service,
//! method and side; with the feature `trace-context`, the handler's span
//! continues its caller's trace across the connection, and calls a handler
//! makes continue it further.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netchan::Session;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// One span as it was when it closed: its name and every field recorded.
#[derive(Debug, Clone)]
struct Seen {
    name: &'static str,
    fields: BTreeMap<String, String>,
}

impl Seen {
    fn get(&self, field: &str) -> Option<&str> {
        self.fields.get(field).map(String::as_str)
    }
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);
impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

/// Keeps every span's fields; a span goes to `closed` when it closes.
#[derive(Clone, Default)]
struct Spans {
    open: Arc<Mutex<BTreeMap<u64, Seen>>>,
    closed: Arc<Mutex<Vec<Seen>>>,
}

impl<S: tracing::Subscriber> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let name = attrs.metadata().name();
        self.open
            .lock()
            .unwrap()
            .insert(id.into_u64(), Seen { name, fields });
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        if let Some(seen) = self.open.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Fields(&mut seen.fields));
        }
    }
    fn on_close(&self, id: Id, _: Context<'_, S>) {
        if let Some(seen) = self.open.lock().unwrap().remove(&id.into_u64()) {
            self.closed.lock().unwrap().push(seen);
        }
    }
}

impl Spans {
    /// The closed spans named `name` whose `method` is `method`, once
    /// there are `n` of them.
    async fn wait(&self, name: &str, method: &str, n: usize) -> Vec<Seen> {
        for _ in 0..1000 {
            let found: Vec<Seen> = self
                .closed
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.name == name && s.get("method") == Some(method))
                .cloned()
                .collect();
            if found.len() >= n {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!(
            "never saw {n} {name} spans of {method}: {:?}",
            self.closed.lock().unwrap()
        );
    }
}

#[netchan::service]
pub trait Greeter {
    /// Asks the caller for its name, then greets it.
    async fn greet(&self) -> String;
}

#[netchan::service]
pub trait Caller {
    async fn name(&self) -> String;
}

struct Hello {
    peer: CallerClient,
}
impl Greeter for Hello {
    async fn greet(&self) -> String {
        format!("hello, {}", self.peer.name().await.unwrap_or_default())
    }
}

struct Me;
impl Caller for Me {
    async fn name(&self) -> String {
        "ada".into()
    }
}

/// Runs one `greet` (which calls `name` back) under a subscriber that
/// records spans, on one thread so that the subscriber sees every task.
fn greet_once() -> Spans {
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (server, client) = Session::pair();
        server.serve(GreeterServer::new(Hello {
            peer: CallerClient::new(&server),
        }));
        client.serve(CallerServer::new(Me));
        let greeter = GreeterClient::new(&client);
        let greeting = tokio::time::timeout(Duration::from_secs(10), greeter.greet()).await;
        assert_eq!(greeting.expect("in time").as_deref(), Ok("hello, ada"));
        spans.wait("netchan.handle", "greet", 1).await;
        spans.wait("netchan.handle", "name", 1).await;
        spans.wait("netchan.call", "greet", 1).await;
        spans.wait("netchan.call", "name", 1).await;
    });
    spans
}

fn one(spans: &Spans, name: &str, method: &str) -> Seen {
    let found: Vec<Seen> = spans
        .closed
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.name == name && s.get("method") == Some(method))
        .cloned()
        .collect();
    assert_eq!(found.len(), 1, "{name} {method}: {found:?}");
    found[0].clone()
}

#[test]
fn each_call_has_a_client_span_and_a_handler_span_naming_service_method_and_side() {
    let spans = greet_once();
    let call = one(&spans, "netchan.call", "greet");
    let handle = one(&spans, "netchan.handle", "greet");
    assert_eq!(call.get("service"), Some("Greeter"));
    assert_eq!(call.get("side"), Some("client"));
    assert_eq!(handle.get("service"), Some("Greeter"));
    assert_eq!(handle.get("side"), Some("server"));
    // The same call, seen from both ends of one session pair.
    assert_eq!(call.get("call_id"), handle.get("call_id"));
    assert!(call.get("call_id").is_some() && call.get("session").is_some());
    assert_ne!(
        call.get("session"),
        handle.get("session"),
        "two ends, two sessions"
    );
    let back = one(&spans, "netchan.call", "name");
    assert_eq!(
        (back.get("service"), back.get("side")),
        (Some("Caller"), Some("client"))
    );
}

#[cfg(feature = "trace-context")]
#[test]
fn a_handler_span_continues_its_callers_trace_across_the_connection() {
    let spans = greet_once();
    let call = one(&spans, "netchan.call", "greet");
    let handle = one(&spans, "netchan.handle", "greet");
    let trace = call.get("trace_id").expect("the caller's trace id");
    assert_eq!(trace.len(), 32);
    assert_eq!(handle.get("trace_id"), Some(trace));
    assert_eq!(handle.get("parent_span_id"), call.get("span_id"));
    assert_ne!(handle.get("span_id"), call.get("span_id"));
    let traceparent = format!("00-{trace}-{}-01", call.get("span_id").unwrap());
    assert_eq!(handle.get("traceparent"), Some(traceparent.as_str()));
    // A call made by nothing traced starts a trace: it has no parent.
    assert_eq!(call.get("parent_span_id"), None);
}

#[cfg(feature = "trace-context")]
#[test]
fn a_call_made_inside_a_handler_continues_the_handlers_trace() {
    let spans = greet_once();
    let handle = one(&spans, "netchan.handle", "greet");
    let back = one(&spans, "netchan.call", "name");
    let back_handle = one(&spans, "netchan.handle", "name");
    let trace = handle.get("trace_id");
    assert_eq!(back.get("trace_id"), trace);
    assert_eq!(back.get("parent_span_id"), handle.get("span_id"));
    assert_eq!(back_handle.get("trace_id"), trace);
    assert_eq!(back_handle.get("parent_span_id"), back.get("span_id"));
}

#[cfg(not(feature = "trace-context"))]
#[test]
fn without_trace_context_spans_carry_no_trace_ids() {
    let spans = greet_once();
    let handle = one(&spans, "netchan.handle", "greet");
    assert_eq!(
        (handle.get("trace_id"), handle.get("traceparent")),
        (None, None)
    );
}
