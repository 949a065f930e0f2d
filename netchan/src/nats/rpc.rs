//! RPC on core NATS: a service is a subject with a queue group, so the
//! replicas serving it share the calls.
//!
//! A call is one request to `{prefix}.rpc.{service}` whose reply subject is
//! `{inbox}.{call id}` under the caller node's one reply subscription
//! (`Replies`), with headers `Netchan-Call` (the call's id)
//! and `Netchan-Deadline-Ms` (the time left, when the caller has a
//! deadline); its body is the encoded request. The replica that gets it
//! answers on the reply subject, each message marked by `Netchan-Reply`:
//!
//! ```text
//!  accepted            a replica runs the call; announces its heartbeat
//!                      (Netchan-Beat-Ms). Sent 5 ms after the call started
//!                      (none if it ended sooner), or at once, with where the
//!                      rest goes (Netchan-Upload), for a request sent in
//!                      chunks (Netchan-Parts)
//!  beat                every NatsConfig::rpc_heartbeat while it runs
//!  part … part done    the encoded Result<Response, Failure>, in chunks of
//!                      at most the server's max_payload (one `done` if it fits)
//! ```
//!
//! A caller that hears nothing for three heartbeats takes the replica as
//! dead (`RpcError::Disconnected`); one that gives up publishes the call's
//! id on `{prefix}.rpc.{service}.cancel`, which every replica hears, and
//! the one running it aborts the handler.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::{Bytes, BytesMut};
use futures::{FutureExt, StreamExt};

use super::{Inner, token};
use crate::channel::embed::encode_alone;
use crate::proto::CodecId;
use crate::rpc::wire::Failure;
use crate::util::{lock, millis_rounded_up};
use crate::{RpcError, Service, codec};

const CALL: &str = "Netchan-Call";
const DEADLINE: &str = "Netchan-Deadline-Ms";
const REPLY: &str = "Netchan-Reply";
const BEAT: &str = "Netchan-Beat-Ms";
const PARTS: &str = "Netchan-Parts";
const UPLOAD: &str = "Netchan-Upload";
const PART: &str = "Netchan-Part";

/// How long a replica waits for each further chunk of a large request.
const UPLOAD_WAIT: Duration = Duration::from_secs(30);

/// The queue group every replica of a service joins.
const GROUP: &str = "netchan";

/// Calls one replica runs at once; more wait in its subscription.
const MAX_IN_FLIGHT: usize = 1024;

/// A replica caps a caller's deadline (and runs calls without one) at this.
const DEADLINE_CAP: Duration = Duration::from_secs(3600);

fn subject(prefix: &str, service: &str) -> String {
    format!("{prefix}.rpc.{}", token(service))
}

/// The call path of clients made from a `Node`.
#[derive(Debug)]
pub(super) struct Caller {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("nats::Node")
            .field("id", &self.id)
            .field("prefix", &self.cfg.prefix)
            .finish_non_exhaustive()
    }
}

impl crate::rpc::RemoteCalls for Caller {
    fn call(
        &self,
        service: &str,
        body: Bytes,
        timeout: Option<Duration>,
    ) -> crate::rpc::BoxFuture<Result<Bytes, RpcError>> {
        let inner = self.inner.clone();
        let service = service.to_owned();
        Box::pin(async move { call(inner, service, body, timeout).await })
    }
}

/// Replies to this node's calls: one subscription to `{inbox}.*`, and a
/// task that hands each message to its call by the subject's last token
/// (cheaper than a subscription per call).
pub(super) struct Replies {
    prefix: String,
    calls: Mutex<HashMap<String, tokio::sync::mpsc::Sender<async_nats::Message>>>,
}

/// Messages one call may have waiting before it reads them: far more than
/// a replica sends (a beat a second, a result in chunks of `max_payload`);
/// a replica that floods a call ends it (`Disconnected`).
const CALL_QUEUE: usize = 256;

impl Replies {
    /// A call's queue of replies, until the guard drops.
    fn register(
        self: &Arc<Replies>,
        id: &str,
    ) -> (tokio::sync::mpsc::Receiver<async_nats::Message>, Registered) {
        let (tx, rx) = tokio::sync::mpsc::channel(CALL_QUEUE);
        lock(&self.calls).insert(id.to_owned(), tx);
        (
            rx,
            Registered {
                replies: self.clone(),
                id: id.to_owned(),
            },
        )
    }
}

/// Removes a call from the reply table when it ends.
struct Registered {
    replies: Arc<Replies>,
    id: String,
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.replies.calls).remove(&self.id);
    }
}

/// The node's reply table, made (with its subscription and task) at the
/// first call.
async fn replies(inner: &Arc<Inner>) -> Result<Arc<Replies>, RpcError> {
    let made = inner
        .replies
        .get_or_try_init(|| async {
            let prefix = format!("{}.", inner.client.new_inbox());
            let mut sub = inner
                .client
                .subscribe(format!("{prefix}*"))
                .await
                .map_err(|_| RpcError::Disconnected)?;
            let replies = Arc::new(Replies {
                prefix,
                calls: Mutex::new(HashMap::new()),
            });
            let table = replies.clone();
            let closed = inner.closed.clone();
            inner.rt.spawn(async move {
                loop {
                    let m = tokio::select! {
                        m = sub.next() => m,
                        () = closed.cancelled() => None,
                    };
                    let Some(m) = m else { break };
                    let id = m.subject.rsplit('.').next().unwrap_or_default().to_owned();
                    let tx = lock(&table.calls).get(&id).cloned();
                    if let Some(tx) = tx {
                        if tx.try_send(m).is_err() {
                            // Flooded (or just ended): the call ends.
                            lock(&table.calls).remove(&id);
                        }
                    }
                }
                // Every call waiting now sees its replies end.
                lock(&table.calls).clear();
            });
            Ok::<_, RpcError>(replies)
        })
        .await?;
    Ok(made.clone())
}

/// Publishes a cancel for a call given up before its result came.
struct CancelGuard {
    inner: Arc<Inner>,
    subject: String,
    id: String,
    armed: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let client = self.inner.client.clone();
        let subject = format!("{}.cancel", self.subject);
        let id = Bytes::from(self.id.clone());
        self.inner.rt.spawn(async move {
            let _ = client.publish(subject, id).await;
            let _ = client.flush().await;
        });
    }
}

async fn call(
    inner: Arc<Inner>,
    service: String,
    body: Bytes,
    timeout: Option<Duration>,
) -> Result<Bytes, RpcError> {
    if inner.closed.is_cancelled() {
        return Err(RpcError::Disconnected);
    }
    let limit = inner.max_body();
    if body.len() > inner.cfg.max_message_len {
        return Err(RpcError::Codec(format!(
            "a request of {} bytes exceeds the limit of {} bytes (NatsConfig::max_message_len)",
            body.len(),
            inner.cfg.max_message_len
        )));
    }
    // A request larger than one message goes in chunks: the first to the
    // queue group, the rest to the upload subject of the replica that
    // accepted it.
    let parts = body.len().div_ceil(limit).max(1);
    let first = body.slice(..limit.min(body.len()));
    let subject = subject(&inner.cfg.prefix, &service);
    let mux = replies(&inner).await?;
    // Unique across every caller: replicas key their running calls by it.
    let id = format!("{}-{}", inner.id, inner.next_producer());
    let inbox = format!("{}{id}", mux.prefix);
    let (mut replies, _registered) = mux.register(&id);
    let mut headers = HeaderMap::new();
    headers.insert(CALL, id.as_str());
    if let Some(t) = timeout {
        headers.insert(DEADLINE, millis_rounded_up(t).to_string());
    }
    if parts > 1 {
        headers.insert(PARTS, parts.to_string());
    }
    inner
        .client
        .publish_with_reply_and_headers(subject.clone(), inbox, headers, first)
        .await
        .map_err(|_| RpcError::Disconnected)?;
    let mut guard = CancelGuard {
        inner: inner.clone(),
        subject,
        id,
        armed: true,
    };
    // Until a replica accepted, this node's heartbeat sets the patience;
    // then the replica's own, which its acceptance announces.
    let mut silence = inner.cfg.rpc_heartbeat * 3;
    let mut uploaded = false;
    let max = inner.cfg.max_message_len;
    let mut result = BytesMut::new();
    loop {
        let msg = tokio::select! {
            m = tokio::time::timeout(silence, replies.recv()) => m,
            () = inner.closed.cancelled() => return Err(RpcError::Disconnected),
        };
        let msg = match msg {
            Ok(Some(m)) => m,
            // No word from any replica for three heartbeats: it died, or
            // lost its connection, with the call.
            Err(_) | Ok(None) => return Err(RpcError::Disconnected),
        };
        if msg.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
            guard.armed = false;
            return Err(RpcError::NoSuchService(service));
        }
        let kind = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(REPLY))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        match kind.as_str() {
            "part" | "done" => {
                if result.len() + msg.payload.len() > max {
                    return Err(RpcError::Codec(format!(
                        "the result of a call to {service} exceeds this node's limit of {max} \
                         bytes (NatsConfig::max_message_len)"
                    )));
                }
                result.extend_from_slice(&msg.payload);
                if kind == "done" {
                    guard.armed = false;
                    return Ok(result.freeze());
                }
            }
            "accepted" => {
                let beat = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(BEAT))
                    .and_then(|v| v.as_str().parse::<u64>().ok());
                if let Some(ms) = beat {
                    silence = Duration::from_millis(ms.clamp(10, 3_600_000)) * 3;
                }
                if parts > 1 && !uploaded {
                    uploaded = true;
                    let upload = msg
                        .headers
                        .as_ref()
                        .and_then(|h| h.get(UPLOAD))
                        .map(|v| v.as_str().to_owned())
                        .ok_or_else(|| {
                            RpcError::Codec(format!(
                                "the replica of {service} takes no request larger than one message"
                            ))
                        })?;
                    for i in 1..parts {
                        let mut h = HeaderMap::new();
                        h.insert(PART, i.to_string());
                        let end = ((i + 1) * limit).min(body.len());
                        inner
                            .client
                            .publish_with_headers(upload.clone(), h, body.slice(i * limit..end))
                            .await
                            .map_err(|_| RpcError::Disconnected)?;
                    }
                }
            }
            // "beat": the replica is alive.
            _ => {}
        }
    }
}

/// Serves `service` on the node: one task reads calls from the queue
/// group and cancels from every caller, and each call runs in a task of
/// its own.
pub(super) fn serve<S: Service + Clone>(inner: &Arc<Inner>, service: S) {
    let inner2 = inner.clone();
    inner.rt.spawn(async move {
        let inner = inner2;
        let name = service.name().to_owned();
        let subject = subject(&inner.cfg.prefix, &name);
        let calls = inner
            .client
            .queue_subscribe(subject.clone(), GROUP.to_owned())
            .await;
        let cancels = inner.client.subscribe(format!("{subject}.cancel")).await;
        let (mut calls, mut cancels) = match (calls, cancels) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(service = %name, "cannot serve on NATS: {e}");
                return;
            }
        };
        // Subscriptions are in place once the server has seen them.
        let _ = inner.client.flush().await;
        tracing::debug!(service = %name, %subject, "serving on NATS");
        let running: Arc<Mutex<HashMap<String, tokio::task::AbortHandle>>> =
            Arc::new(Mutex::new(HashMap::new()));
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
        loop {
            tokio::select! {
                () = inner.closed.cancelled() => break,
                m = cancels.next() => match m {
                    Some(m) => {
                        let id = String::from_utf8_lossy(&m.payload).into_owned();
                        if let Some(h) = lock(&running).remove(&id) {
                            tracing::debug!(service = %name, call = %id, "call cancelled by its caller");
                            h.abort();
                        }
                    }
                    None => break,
                },
                m = calls.next() => match m {
                    Some(m) => {
                        let Some(reply) = m.reply.clone() else { continue };
                        let headers = m.headers.clone().unwrap_or_default();
                        let id = headers.get(CALL).map(|v| v.as_str().to_owned()).unwrap_or_default();
                        let deadline = headers
                            .get(DEADLINE)
                            .and_then(|v| v.as_str().parse::<u64>().ok())
                            .map_or(DEADLINE_CAP, |ms| Duration::from_millis(ms).min(DEADLINE_CAP));
                        let parts = headers
                            .get(PARTS)
                            .and_then(|v| v.as_str().parse::<usize>().ok())
                            .unwrap_or(1);
                        let mut accepted = kind("accepted");
                        accepted.insert(BEAT, inner.cfg.rpc_heartbeat.as_millis().to_string());
                        // A large request: its other chunks come to an
                        // inbox of this replica's, subscribed before the
                        // caller learns it.
                        let mut upload = None;
                        if parts > 1 {
                            if parts.saturating_sub(1).saturating_mul(inner.max_body()) > inner.cfg.max_message_len {
                                let why = format!(
                                    "a request in {parts} chunks exceeds the replica's limit of {} bytes \
                                     (NatsConfig::max_message_len)",
                                    inner.cfg.max_message_len
                                );
                                send_failure::<S>(&inner, &reply, Failure::Codec(why)).await;
                                continue;
                            }
                            let inbox = inner.client.new_inbox();
                            match inner.client.subscribe(inbox.clone()).await {
                                Ok(sub) => {
                                    accepted.insert(UPLOAD, inbox.as_str());
                                    upload = Some(sub);
                                }
                                Err(e) => {
                                    send_failure::<S>(&inner, &reply, Failure::Remote(format!("cannot take a large request: {e}"))).await;
                                    continue;
                                }
                            }
                        }
                        // A call in one message is accepted by its beat
                        // task, a moment later, so a quick call costs no
                        // message more than its result; a chunked one now,
                        // since its caller waits for the upload subject.
                        let announce = if parts > 1 {
                            let _ = inner.client.publish_with_headers(reply.clone(), accepted, Bytes::new()).await;
                            None
                        } else {
                            Some(accepted)
                        };
                        let Ok(permit) = permits.clone().acquire_owned().await else { break };
                        let service = service.clone();
                        let inner = inner.clone();
                        let table = running.clone();
                        let call_id = id.clone();
                        let mut table_now = lock(&running);
                        let task = inner.rt.clone().spawn(async move {
                            let body = match upload {
                                None => Ok(m.payload),
                                Some(sub) => assemble(&inner, m.payload, sub, parts).await,
                            };
                            match body {
                                Ok(body) => run_call(&inner, service, body, reply.to_string(), deadline, announce).await,
                                Err(why) => send_failure::<S>(&inner, &reply, Failure::Codec(why)).await,
                            }
                            lock(&table).remove(&call_id);
                            drop(permit);
                        });
                        if !id.is_empty() {
                            table_now.insert(id, task.abort_handle());
                        }
                    }
                    None => break,
                },
            }
        }
        for (_, h) in lock(&running).drain() {
            h.abort();
        }
    });
}

/// The chunks of a large request, after its first, in order.
async fn assemble(
    inner: &Inner,
    first: Bytes,
    mut sub: async_nats::Subscriber,
    parts: usize,
) -> Result<Bytes, String> {
    let mut body = BytesMut::from(&first[..]);
    for i in 1..parts {
        let m = match tokio::time::timeout(UPLOAD_WAIT, sub.next()).await {
            Ok(Some(m)) => m,
            _ => return Err(format!("chunk {i} of {parts} of the request never came")),
        };
        let n = m
            .headers
            .as_ref()
            .and_then(|h| h.get(PART))
            .and_then(|v| v.as_str().parse::<usize>().ok());
        if n != Some(i) {
            return Err(format!(
                "chunk {i} of {parts} of the request came out of order"
            ));
        }
        if body.len() + m.payload.len() > inner.cfg.max_message_len {
            return Err(format!(
                "the request exceeds the replica's limit of {} bytes (NatsConfig::max_message_len)",
                inner.cfg.max_message_len
            ));
        }
        body.extend_from_slice(&m.payload);
    }
    Ok(body.freeze())
}

/// Answers a call with a failure, as its only message.
async fn send_failure<S: Service>(inner: &Inner, reply: &async_nats::Subject, failure: Failure) {
    let result: Result<S::Response, Failure> = Err(failure);
    let mut body = BytesMut::new();
    if encode_alone(CodecId::Bincode, &result, &mut body).is_ok() {
        let _ = inner
            .client
            .publish_with_headers(reply.clone(), kind("done"), body.freeze())
            .await;
    }
}

/// A body at least this large is decoded and encoded on the blocking
/// pool, as channels do for large messages.
const LARGE: usize = 256 << 10;

/// Runs `f` on the blocking pool when `size` is large, inline otherwise;
/// `None` if it panicked.
async fn off_thread<R: Send + 'static>(
    rt: &tokio::runtime::Handle,
    size: usize,
    f: impl FnOnce() -> R + Send + 'static,
) -> Option<R> {
    if size < LARGE {
        return std::panic::catch_unwind(AssertUnwindSafe(f)).ok();
    }
    rt.spawn_blocking(f).await.ok()
}

/// Says "still running" on the call's reply subject, every `every`.
async fn beat(
    client: async_nats::Client,
    reply: String,
    every: Duration,
    announce: Option<HeaderMap>,
) {
    if let Some(accepted) = announce {
        tokio::time::sleep(ACCEPT_DELAY.min(every / 4)).await;
        if client
            .publish_with_headers(reply.clone(), accepted, Bytes::new())
            .await
            .is_err()
        {
            return;
        }
    }
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        if client
            .publish_with_headers(reply.clone(), kind("beat"), Bytes::new())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// How long a replica waits before it says it accepted a call: a call
/// that ends sooner sends only its result. Far below the shortest patience
/// of a caller (three heartbeats of at least 10 ms).
const ACCEPT_DELAY: Duration = Duration::from_millis(5);

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn kind(k: &'static str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(REPLY, k);
    h
}

/// Runs one call under its deadline, beating while it runs, and sends
/// its result in chunks.
async fn run_call<S: Service>(
    inner: &Inner,
    service: S,
    body: Bytes,
    reply: String,
    deadline: Duration,
    announce: Option<HeaderMap>,
) {
    // Beats come from a task of their own, so they go on while the
    // handler, or the decoding or encoding of a large body, holds this
    // task's thread; they stop when this call ends or is aborted.
    let beats = inner.rt.spawn(beat(
        inner.client.clone(),
        reply.clone(),
        inner.cfg.rpc_heartbeat,
        announce,
    ));
    let _beats = AbortOnDrop(beats.abort_handle());
    let name = service.name().to_owned();
    let request = off_thread(&inner.rt, body.len(), move || {
        codec::decode::<S::Request>(CodecId::Bincode, &body)
    })
    .await
    .unwrap_or_else(|| Err("the decoder failed".to_owned()));
    let result: Result<S::Response, Failure> = match request {
        Err(e) => Err(Failure::Codec(format!(
            "cannot decode a call to {name}: {e}"
        ))),
        Ok(request) => {
            let run = AssertUnwindSafe(service.call(request)).catch_unwind();
            match tokio::time::timeout(deadline, run).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(_)) => Err(Failure::Remote("handler panicked".to_owned())),
                Err(_) => Err(Failure::Timeout),
            }
        }
    };
    // Encoded inline: its size is unknown until then, and a hop to the
    // blocking pool for every small result would cost each call; the beats
    // go on from their own task meanwhile.
    let body = off_thread(&inner.rt, 0, move || {
        let mut body = BytesMut::new();
        if let Err(e) = encode_alone(CodecId::Bincode, &result, &mut body) {
            body.clear();
            let failed: Result<S::Response, Failure> = Err(Failure::Codec(e.to_string()));
            encode_alone(CodecId::Bincode, &failed, &mut body).ok()?;
        }
        Some(body)
    })
    .await
    .flatten();
    let Some(body) = body else { return };
    let body = body.freeze();
    let chunk = inner.max_body();
    let mut at = 0;
    loop {
        let end = (at + chunk).min(body.len());
        let last = end == body.len();
        let k = if last { "done" } else { "part" };
        if inner
            .client
            .publish_with_headers(reply.clone(), kind(k), body.slice(at..end))
            .await
            .is_err()
        {
            return;
        }
        if last {
            break;
        }
        at = end;
    }
    let _ = inner.client.flush().await;
}
