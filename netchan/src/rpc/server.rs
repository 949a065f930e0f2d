//! The serving side: each client connection's import of a service gets a
//! dispatcher task that runs calls concurrently, up to a limit, each under
//! its deadline, and aborts those the client cancels or abandons.
//!
//! The dispatcher polls each call once itself: a handler that completes
//! without waiting is answered then, and only a call that waits (for I/O,
//! a timer, another call) gets a task of its own. A handler that computes
//! for long without awaiting therefore holds up the calls behind it, as it
//! would hold up its runtime's worker anyway; long work belongs in
//! `tokio::task::spawn_blocking`.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::Notify;
use tracing::Instrument;

use super::Service;
use super::observe::{self, CallRecord};
use super::wire::{Failure, Reply, ToServer};
use crate::channel::queue::Queue;
use crate::conn::{CallEnd, CallSide, Conn, Export, Inbound, MethodCounters};
use crate::util::lock;
use crate::{Error, Receiver, RecvError, Session, codec};

/// Calls buffered per client before it waits for the server to read.
const CALLS_CAPACITY: usize = 256;

/// Replies to calls that arrived together leave in one write, but no more
/// than this many: the client works through a batch while the rest is
/// answered. Replies to 64 calls in flight written all at once kept each
/// side idle while the other worked; in batches of 16 (bench `calls-64`,
/// one one-thread runtime per side) twice as many calls completed, for
/// less CPU per call than with 8 or 32.
const REPLY_BATCH: usize = 16;

/// The calls a dispatcher has yet to take, and its replies not yet
/// written.
struct Waiting<T> {
    queue: Arc<Queue<T>>,
    batch: ReplyBatch,
}

impl<T> Waiting<T> {
    /// Whether the reply being sent is written at once ([`ReplyBatch`]).
    fn write_now(&self) -> bool {
        self.batch.write_now(self.queue.buffered())
    }
}

/// What a dispatcher shares with the tasks of its calls, in one piece:
/// a call that completes at once then costs one reference count, not one
/// per part.
struct Calls<T, R> {
    /// Where the replies go.
    replies: crate::Sender<Reply<R>>,
    waiting: Arc<Waiting<T>>,
    /// The calls that got a task of their own.
    running: Mutex<HashMap<u64, tokio::task::AbortHandle>>,
    /// Notified when one of `running` finishes or is aborted.
    finished: Notify,
}

/// Counts replies queued since one was written through.
#[derive(Default)]
struct ReplyBatch(AtomicUsize);

impl ReplyBatch {
    /// Whether the reply being sent is written at once, with those queued
    /// before it: when no call waits behind it (`waiting` is 0) to batch
    /// with, or the batch is full ([`REPLY_BATCH`]).
    fn write_now(&self, waiting: usize) -> bool {
        let n = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        let now = n >= REPLY_BATCH || waiting == 0;
        if now {
            self.0.store(0, Ordering::Relaxed);
        }
        now
    }
}

/// Gives each new dispatcher the service it runs; `None` once the
/// service is gone (a session's own instance, after its exporter stopped).
pub(crate) type GetService<S> = Arc<dyn Fn() -> Option<S> + Send + Sync>;

/// The export that serves `S`: each import starts a dispatcher.
pub(crate) fn service_export<S: Service>(get: GetService<S>) -> Export {
    Export::Service {
        type_name: codec::type_name::<ToServer<S::Request, S::Response>>(),
        start: Arc::new(move |conn: &Arc<Conn>| -> Arc<dyn Inbound> {
            let queue = Queue::<ToServer<S::Request, S::Response>>::new(CALLS_CAPACITY, 0, 0);
            let calls = Receiver::from_queue(queue.clone(), None, None);
            let waiting = Arc::new(Waiting {
                queue: queue.clone(),
                batch: ReplyBatch::default(),
            });
            let session = Session::from_conn(conn);
            let get = get.clone();
            conn.rt.spawn(async move {
                // Without a service the calls channel drops, and the
                // client sees the service disconnected.
                if let Some(service) = get() {
                    dispatch(service, calls, waiting, session).await;
                }
            });
            queue
        }),
    }
}

async fn dispatch<S: Service>(
    service: S,
    mut calls: Receiver<ToServer<S::Request, S::Response>>,
    waiting: Arc<Waiting<ToServer<S::Request, S::Response>>>,
    session: Session,
) {
    let replies = match calls.recv().await {
        Ok(Some(ToServer::Hello { replies })) => replies,
        _ => return,
    };
    let cfg = &session.conn().config;
    let limit = cfg.max_rpc_in_flight;
    let cap = cfg.rpc_deadline_cap;
    let service = Arc::new(service);
    let shared = Arc::new(Calls {
        replies,
        waiting,
        running: Mutex::new(HashMap::new()),
        finished: Notify::new(),
    });
    let (running, finished) = (&shared.running, &shared.finished);
    // This dispatcher's cache of the session's per-method counters.
    let mut methods: rustc_hash::FxHashMap<&'static str, Arc<MethodCounters>> =
        rustc_hash::FxHashMap::default();
    loop {
        // At the limit, read nothing more until a handler finishes. The
        // count is looked at first without a waiter: registering one (and
        // dropping it) takes the notifier's lock twice, on every call.
        while lock(running).len() >= limit {
            let notified = finished.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if lock(running).len() < limit {
                break;
            }
            notified.await;
        }
        match calls.recv().await {
            Ok(Some(ToServer::Call {
                id,
                deadline_ms,
                traceparent,
                request,
            })) => {
                let deadline = deadline_ms.map_or(cap, |ms| Duration::from_millis(ms).min(cap));
                let method = S::method_name(&request);
                let counters = methods
                    .entry(method)
                    .or_insert_with(|| {
                        session
                            .conn()
                            .method_stats(service.name(), method, CallSide::Server)
                    })
                    .clone();
                let span = observe::server_span(service.name(), method, session.conn().id, id);
                // Moved into the task: if it is aborted (the caller
                // cancelled or left), dropping it counts the cancellation.
                #[cfg(feature = "trace-context")]
                let context = observe::for_handler(&span, traceparent.as_deref());
                #[cfg(not(feature = "trace-context"))]
                let _ = traceparent;
                // One clock reading for the record and the deadline.
                let start = tokio::time::Instant::now();
                let mut record = CallRecord::start(counters, span.clone(), start);
                let fut = service.call(request);
                // Calls the handler makes continue the caller's trace.
                #[cfg(feature = "trace-context")]
                let fut = context.scope(fut);
                let calls = shared.clone();
                let mut task = Box::pin(
                    async move {
                        let run = AssertUnwindSafe(fut).catch_unwind();
                        let (result, mut how) = match tokio::time::timeout_at(
                            observe::deadline_after(start, deadline),
                            run,
                        )
                        .await
                        {
                            Ok(Ok(r)) => (Ok(r), CallEnd::Completed),
                            Ok(Err(panic)) => (
                                Err(Failure::Remote(format!(
                                    "handler panicked: {}",
                                    super::panic_message(&panic)
                                ))),
                                CallEnd::Panicked,
                            ),
                            Err(_) => (Err(Failure::Timeout), CallEnd::DeadlinePassed),
                        };
                        let direct = calls.waiting.write_now();
                        let sent = calls
                            .replies
                            .send_detailed(Reply { id, result }, direct)
                            .await;
                        if let Err((_, None)) = sent {
                            // The caller is gone: nobody got the result.
                            how = CallEnd::Cancelled;
                        }
                        if let Err((_, Some(e))) = sent {
                            how = CallEnd::Codec;
                            let why = match e {
                                Error::MessageTooLarge { size, limit } => {
                                    format!(
                                        "result of {size} bytes exceeds the limit of {limit} bytes"
                                    )
                                }
                                e => e.to_string(),
                            };
                            let _ = calls
                                .replies
                                .send_detailed(
                                    Reply {
                                        id,
                                        result: Err(Failure::Codec(why)),
                                    },
                                    direct,
                                )
                                .await;
                        }
                        record.finish(how);
                        // Only a call that got a task of its own is in
                        // the table.
                        if lock(&calls.running).remove(&id).is_some() {
                            calls.finished.notify_waiters();
                        }
                    }
                    .instrument(span),
                );
                // A handler that answers without waiting (a lookup, a
                // computation) is answered here, reply included, without
                // a task of its own: no spawn, no table entry.
                if futures::poll!(task.as_mut()).is_ready() {
                    continue;
                }
                // The table stays locked until the call is in it: a call
                // that finishes at once, on another worker, waits here to
                // remove its entry, so no entry outlives its call (one
                // that did would count against the limit for ever).
                let mut table_now = lock(running);
                let handle = tokio::spawn(task);
                table_now.insert(id, handle.abort_handle());
                drop(table_now);
            }
            Ok(Some(ToServer::Cancel { id })) => {
                if let Some(h) = lock(running).remove(&id) {
                    h.abort();
                    finished.notify_waiters();
                }
            }
            Ok(Some(ToServer::Hello { .. })) => {}
            // Undecodable calls are on the session's errors; the caller
            // times out or sees the connection fail.
            Err(RecvError::Decode(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    // The client is gone: nobody waits for these any more.
    for (_, h) in lock(running).drain() {
        h.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::{REPLY_BATCH, ReplyBatch};

    #[test]
    fn replies_to_calls_taken_together_are_written_in_batches() {
        let b = ReplyBatch::default();
        // 40 calls arrived together: every 16th reply is written, and the
        // last, which no call waits behind.
        let written: Vec<usize> = (1..=40).filter(|i| b.write_now(40 - i)).collect();
        assert_eq!(written, [REPLY_BATCH, 2 * REPLY_BATCH, 40]);
        // One call at a time: each reply at once.
        assert!((0..5).all(|_| b.write_now(0)));
    }
}
