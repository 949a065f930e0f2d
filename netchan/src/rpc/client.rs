//! The calling side: one calls channel per client (shared by its clones),
//! a reply channel, and a table of calls in flight.
//!
//! Only a working connection to the service is kept: a lookup that failed
//! (the peer did not serve it yet, or served another signature) or a
//! reply channel that ended is tried again on the next call, so a client
//! made too early works once the peer serves.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustc_hash::FxHashMap;
use tokio::sync::{Notify, oneshot};
use tracing::Instrument;

use super::export_name;
use super::observe::{self, CallRecord};
use super::target::{CallPath, CallTarget, RemoteCalls};
use super::wire::{Failure, Reply, ToServer};
use crate::conn::{CallEnd, CallSide, MethodCounters};
use crate::util::{lock, millis_rounded_up};
use crate::{Error, Message, RpcError, Sender, Session, channel};

/// The most replies the reply task takes at once (not the server's
/// `REPLY_BATCH`, which is how many replies it writes together).
const REPLIES_TAKEN: usize = 64;

/// The calls in flight, by id. The ids are this client's own count, so a
/// fast hash is safe; a reply's id only looks one up.
type Pending<Resp> = Mutex<FxHashMap<u64, oneshot::Sender<Result<Resp, RpcError>>>>;

/// The limit on calls in flight ([`Config::max_rpc_in_flight`]): a count,
/// and a notifier for callers waiting at the limit. A call below the limit
/// takes and gives back its place with one atomic operation each (a
/// semaphore locks its list of waiters on every release).
///
/// [`Config::max_rpc_in_flight`]: crate::Config::max_rpc_in_flight
struct Places {
    limit: usize,
    taken: AtomicUsize,
    /// Callers registered with `freed` (or about to be).
    waiting: AtomicUsize,
    freed: Notify,
}

impl Places {
    fn new(limit: usize) -> Places {
        Places {
            limit,
            taken: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            freed: Notify::new(),
        }
    }

    /// Waits for a place below the limit and takes it.
    async fn take(&self) -> Place<'_> {
        if self.try_take() {
            return Place(self);
        }
        // Counted before looking again, and until it leaves (cancelled
        // too): a place given back in between wakes a waiter.
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _counted = Waiter(self);
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.try_take() {
                return Place(self);
            }
            freed.await;
        }
    }

    /// Sequentially consistent, with `Place::drop`: a waiter counted in
    /// `waiting` either sees the place given back or is seen and woken.
    fn try_take(&self) -> bool {
        self.taken
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .is_ok()
    }
}

/// A place taken in [`Places`]; given back when dropped.
struct Place<'a>(&'a Places);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.taken.fetch_sub(1, Ordering::SeqCst);
        if self.0.waiting.load(Ordering::SeqCst) > 0 {
            // One waiter per place given back (a waiter woken and gone
            // passes its wake-up on; one not yet registered finds the
            // wake-up stored, or the place when it looks again).
            self.0.freed.notify_one();
        }
    }
}

/// A caller waiting in [`Places::take`], counted in `waiting` until it
/// leaves.
struct Waiter<'a>(&'a Places);

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

struct State<Req, Resp> {
    calls: Sender<ToServer<Req, Resp>>,
    pending: Arc<Pending<Resp>>,
    /// False once the reply channel ended: no answer can come any more.
    alive: Arc<std::sync::atomic::AtomicBool>,
    next_id: AtomicU64,
    places: Places,
    /// The last call was sent with no other in flight.
    last_alone: std::sync::atomic::AtomicBool,
}

struct Shared<Req, Resp> {
    path: CallPath,
    service: String,
    /// The last connection to the service; replaced once it died.
    state: Mutex<Option<Arc<State<Req, Resp>>>>,
    /// Held while looking the service up, so that concurrent first calls
    /// share one lookup.
    connecting: tokio::sync::Mutex<()>,
    /// Each method's counters in the session's stats, looked up once:
    /// after the first call of a method, a call reads this under a shared
    /// lock and records with a few atomics.
    methods: RwLock<Vec<(&'static str, Arc<MethodCounters>)>>,
}

/// A typed RPC client for one service on one session. The generated
/// `{Trait}Client` types wrap it.
pub struct Client<Req, Resp> {
    shared: Arc<Shared<Req, Resp>>,
    timeout: Option<Duration>,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp> Clone for Client<Req, Resp> {
    fn clone(&self) -> Self {
        Client {
            shared: self.shared.clone(),
            timeout: self.timeout,
            _types: PhantomData,
        }
    }
}

impl<Req, Resp> fmt::Debug for Client<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("service", &self.shared.service)
            .field("path", &self.shared.path)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl<Req: Message, Resp: Message> Client<Req, Resp> {
    /// A client of `service` on the peer of `session` (or, through a
    /// `nats::Node`, on the replicas serving it). Nothing is sent until
    /// the first call, and the service is looked up again on each call
    /// until a lookup succeeds: a call made before the peer serves it
    /// fails with [`RpcError::NoSuchService`], the next one after works.
    pub fn new(session: &(impl CallTarget + ?Sized), service: &str) -> Self {
        Client {
            shared: Arc::new(Shared {
                path: session.call_path(),
                service: service.to_owned(),
                state: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
                methods: RwLock::new(Vec::new()),
            }),
            timeout: None,
            _types: PhantomData,
        }
    }

    /// The same client with a deadline for every call; the deadline also
    /// travels with the call, so the server drops the handler when it
    /// passes.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Client {
            shared: self.shared.clone(),
            timeout: Some(timeout),
            _types: PhantomData,
        }
    }

    /// The live connection to the service, made now if there is none. A
    /// failed lookup is not kept: the next call tries again.
    async fn state(&self, session: &Session) -> Result<Arc<State<Req, Resp>>, RpcError> {
        if let Some(state) = self.live_state() {
            return Ok(state);
        }
        let _one = self.shared.connecting.lock().await;
        // Another call may have connected while this one waited.
        if let Some(state) = self.live_state() {
            return Ok(state);
        }
        let state = connect(session, &self.shared.service).await?;
        *lock(&self.shared.state) = Some(state.clone());
        Ok(state)
    }

    fn live_state(&self) -> Option<Arc<State<Req, Resp>>> {
        lock(&self.shared.state)
            .as_ref()
            .filter(|s| s.alive.load(Ordering::Acquire))
            .cloned()
    }

    /// Calls the service. Dropping the returned future cancels the call on
    /// the server. Counted in the session's stats under the method
    /// `"call"`; generated clients use [`call_method`](Client::call_method).
    pub async fn call(&self, request: Req) -> Result<Resp, RpcError> {
        self.call_method("call", request).await
    }

    /// Calls `method` of the service, as [`call`](Client::call) does, and
    /// counts it under that name in the session's stats.
    pub async fn call_method(&self, method: &'static str, request: Req) -> Result<Resp, RpcError> {
        let session = match &self.shared.path {
            CallPath::Session(s) => s,
            CallPath::Remote(r) => return self.call_remote(r, method, request).await,
        };
        let counters = self.counters(session, method);
        let span = observe::client_span(&self.shared.service, method, session.conn().id);
        #[cfg(feature = "trace-context")]
        let traceparent = Some(observe::for_call(&span).traceparent());
        #[cfg(not(feature = "trace-context"))]
        let traceparent = None;
        // One clock reading for the record and the deadline.
        let start = tokio::time::Instant::now();
        let deadline = self.timeout.map(|t| observe::deadline_after(start, t));
        let mut record = CallRecord::start(counters, span.clone(), start);
        let result = self
            .send_and_wait(session, request, traceparent, deadline, &record)
            .instrument(span)
            .await;
        record.finish(match &result {
            Ok(_) => CallEnd::Completed,
            Err(RpcError::Timeout) => CallEnd::Timeout,
            Err(RpcError::Disconnected) => CallEnd::Disconnected,
            Err(RpcError::NoSuchService(_)) => CallEnd::NoSuchService,
            Err(RpcError::Remote(_)) => CallEnd::Remote,
            Err(RpcError::Codec(_)) => CallEnd::Codec,
        });
        result
    }

    /// The counters of `method`, from this client's cache or, the first
    /// time, from the session's table.
    fn counters(&self, session: &Session, method: &'static str) -> Arc<MethodCounters> {
        let found = self
            .shared
            .methods
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(m, _)| *m == method)
            .map(|(_, c)| c.clone());
        if let Some(c) = found {
            return c;
        }
        let c = session
            .conn()
            .method_stats(&self.shared.service, method, CallSide::Client);
        self.shared
            .methods
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push((method, c.clone()));
        c
    }

    /// A call through a backend beyond one connection: the request is
    /// encoded here (channel handles inside it are refused), the backend
    /// carries it to a replica, and the deadline goes with it.
    async fn call_remote(
        &self,
        remote: &Arc<dyn RemoteCalls>,
        method: &'static str,
        request: Req,
    ) -> Result<Resp, RpcError> {
        let span = tracing::debug_span!(
            "netchan.call",
            service = %self.shared.service,
            method,
            side = "client",
            backend = "remote"
        );
        let run = async {
            let mut body = bytes::BytesMut::new();
            crate::channel::embed::encode_alone(
                crate::proto::CodecId::Bincode,
                &request,
                &mut body,
            )
            .map_err(|e| RpcError::Codec(e.to_string()))?;
            let call = remote.call(&self.shared.service, body.freeze(), self.timeout);
            let bytes = match self.timeout {
                Some(t) => tokio::time::timeout(t, call)
                    .await
                    .unwrap_or(Err(RpcError::Timeout)),
                None => call.await,
            }?;
            let result: Result<Resp, Failure> =
                crate::codec::decode(crate::proto::CodecId::Bincode, &bytes).map_err(|e| {
                    RpcError::Codec(format!(
                        "cannot decode the result of {}::{method}: {e}",
                        self.shared.service
                    ))
                })?;
            result.map_err(failure)
        };
        run.instrument(span).await
    }

    async fn send_and_wait(
        &self,
        session: &Session,
        request: Req,
        traceparent: Option<String>,
        deadline: Option<tokio::time::Instant>,
        record: &CallRecord,
    ) -> Result<Resp, RpcError> {
        let run = async {
            let state = self.state(session).await?;
            let _place = state.places.take().await;
            let id = state.next_id.fetch_add(1, Ordering::Relaxed);
            record.span().record("call_id", id);
            let (tx, rx) = oneshot::channel();
            // A caller that makes one call at a time writes its request
            // itself. Calls made together (and the first of a wave of
            // them, which finds none in flight but follows calls that
            // were) leave it to the connection's writer, which sends them
            // in one write.
            let alone = {
                let mut pending = lock(&state.pending);
                pending.insert(id, tx);
                pending.len() == 1
            };
            let alone = state.last_alone.swap(alone, Ordering::Relaxed) && alone;
            if !state.alive.load(Ordering::Acquire) {
                lock(&state.pending).remove(&id);
                return Err(RpcError::Disconnected);
            }
            let mut guard = CallGuard {
                state: &state,
                id,
                sent: false,
                done: false,
            };
            // Rounded up: the server's deadline never comes before ours.
            let deadline_ms = deadline.map(|d| {
                millis_rounded_up(d.saturating_duration_since(tokio::time::Instant::now()))
            });
            let call = ToServer::Call {
                id,
                deadline_ms,
                traceparent,
                request,
            };
            if let Err((_, why)) = state.calls.send_detailed(call, alone).await {
                guard.done = true;
                return Err(match why {
                    Some(Error::MessageTooLarge { size, limit }) => RpcError::Codec(format!(
                        "request of {size} bytes exceeds the limit of {limit} bytes"
                    )),
                    Some(e) => RpcError::Codec(e.to_string()),
                    None => RpcError::Disconnected,
                });
            }
            guard.sent = true;
            let r = rx.await.unwrap_or(Err(RpcError::Disconnected));
            guard.done = true;
            r
        };
        match deadline {
            Some(d) => tokio::time::timeout_at(d, run)
                .await
                .unwrap_or(Err(RpcError::Timeout)),
            None => run.await,
        }
    }
}

/// Removes a call from the table when its future ends, and tells the
/// server to cancel it if it was sent but not answered.
struct CallGuard<'a, Req: Message, Resp: Message> {
    state: &'a Arc<State<Req, Resp>>,
    id: u64,
    sent: bool,
    done: bool,
}

impl<Req: Message, Resp: Message> Drop for CallGuard<'_, Req, Resp> {
    fn drop(&mut self) {
        lock(&self.state.pending).remove(&self.id);
        if self.sent && !self.done {
            let cancel = ToServer::Cancel { id: self.id };
            if let Err(crate::TrySendError::Full(cancel)) = self.state.calls.try_send(cancel) {
                let calls = self.state.calls.clone();
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        let _ = calls.send(cancel).await;
                    });
                }
            }
        }
    }
}

async fn connect<Req: Message, Resp: Message>(
    session: &Session,
    service: &str,
) -> Result<Arc<State<Req, Resp>>, RpcError> {
    let calls = session
        .import_sender::<ToServer<Req, Resp>>(&export_name(service))
        .await
        .map_err(|e| match e {
            Error::NoSuchExport(_) => RpcError::NoSuchService(service.to_owned()),
            Error::WrongType { .. } | Error::WrongDirection { .. } => RpcError::Codec(format!(
                "the peer's service {service:?} has another signature: {e}"
            )),
            _ => RpcError::Disconnected,
        })?;
    let (reply_tx, mut replies) = channel::<Reply<Resp>>(256);
    calls
        .send(ToServer::Hello { replies: reply_tx })
        .await
        .map_err(|_| RpcError::Disconnected)?;
    let pending: Arc<Pending<Resp>> = Arc::new(Mutex::new(FxHashMap::default()));
    // A small reply is handed to its caller by the connection's reader as
    // it arrives: one task less to wake and run per call. Replies that do
    // not decode there (one carrying channel handles, or in error) and
    // large ones come to the task below.
    let tapped = pending.clone();
    let of = service.to_owned();
    replies.set_tap(Box::new(move |conn, data| {
        let decoded =
            std::panic::catch_unwind(|| crate::codec::decode::<Reply<Resp>>(conn.codec, data));
        let Reply { id, result } = match decoded {
            Ok(Ok(reply)) => reply,
            // The task reports it, in its place.
            Ok(Err(_)) => return false,
            // A `Deserialize` that panics ends neither the reader nor the
            // task: the reply is dropped, and its call fails as for a
            // reply that does not decode (it times out, or fails when
            // the connection does).
            Err(panic) => {
                conn.log_error(Error::Codec(format!(
                    "decoding a result of service {of:?} panicked: {}",
                    super::panic_message(&panic)
                )));
                return true;
            }
        };
        let caller = lock(&tapped).remove(&id);
        if let Some(tx) = caller {
            let _ = tx.send(result.map_err(failure));
        }
        true
    }));
    let table = pending.clone();
    let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let alive2 = alive.clone();
    tokio::spawn(async move {
        // Replies that arrived together are taken together: one wake-up
        // of this task and one lock of the table for them all. The two
        // vectors grow to the largest batch seen (one reply, for a client
        // that makes one call at a time).
        let mut batch = Vec::new();
        let mut answered = Vec::new();
        loop {
            match replies.recv_many(&mut batch, REPLIES_TAKEN).await {
                Ok(0) => break,
                Ok(_) => {
                    let mut t = lock(&table);
                    answered.extend(
                        batch
                            .drain(..)
                            .filter_map(|Reply { id, result }| Some((t.remove(&id)?, result))),
                    );
                    drop(t);
                    for (tx, result) in answered.drain(..) {
                        let _ = tx.send(result.map_err(failure));
                    }
                }
                // Reported on the session's errors; that call times out
                // or fails when the connection does.
                Err(crate::RecvError::Decode(_)) => {}
                Err(_) => break,
            }
        }
        // Every call still waiting fails (their senders drop).
        alive2.store(false, Ordering::Release);
        lock(&table).clear();
    });
    let limit = session.conn().config.max_rpc_in_flight;
    Ok(Arc::new(State {
        calls,
        pending,
        alive,
        next_id: AtomicU64::new(1),
        last_alone: std::sync::atomic::AtomicBool::new(false),
        places: Places::new(limit),
    }))
}

/// A failure the server reported, as the caller sees it.
fn failure(f: Failure) -> RpcError {
    match f {
        Failure::Timeout => RpcError::Timeout,
        Failure::Remote(s) => RpcError::Remote(s),
        Failure::Codec(s) => RpcError::Codec(s),
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::{Place, Places};

    fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    /// Takes every place, none of them waiting.
    fn take_all(places: &Places) -> Vec<Place<'_>> {
        (0..places.limit)
            .map(|i| match poll_once(pin!(places.take())) {
                Poll::Ready(p) => p,
                Poll::Pending => panic!("limit {}: place {i} waited", places.limit),
            })
            .collect()
    }

    #[test]
    fn calls_past_the_limit_wait_and_each_place_given_back_lets_one_in() {
        for limit in [1, 2, 3, 4, 7, 64] {
            let places = Places::new(limit);
            let held = take_all(&places);
            let mut first = pin!(places.take());
            let mut second = pin!(places.take());
            assert!(poll_once(first.as_mut()).is_pending(), "limit {limit}");
            assert!(poll_once(second.as_mut()).is_pending(), "limit {limit}");
            let mut held = held.into_iter();
            drop(held.next());
            let got = match poll_once(first.as_mut()) {
                Poll::Ready(p) => p,
                Poll::Pending => panic!("limit {limit}: a place given back let nobody in"),
            };
            assert!(
                poll_once(second.as_mut()).is_pending(),
                "limit {limit}: one place given back let two in"
            );
            drop(got);
            assert!(poll_once(second.as_mut()).is_ready(), "limit {limit}");
        }
    }

    #[test]
    fn a_waiter_that_gives_up_passes_its_turn_on() {
        let places = Places::new(1);
        let Poll::Ready(held) = poll_once(pin!(places.take())) else {
            panic!("the first place waited");
        };
        let mut quitter = Box::pin(places.take());
        let mut patient = pin!(places.take());
        assert!(poll_once(quitter.as_mut()).is_pending());
        assert!(poll_once(patient.as_mut()).is_pending());
        // The place goes back while both wait; the first waiter leaves
        // without taking it.
        drop(held);
        drop(quitter);
        assert!(poll_once(patient.as_mut()).is_ready());
    }

    #[test]
    fn places_given_back_together_wake_as_many_waiters() {
        for limit in [1, 2, 3, 4, 8] {
            let places = Places::new(limit);
            let held = take_all(&places);
            let mut waiters: Vec<_> = (0..limit + 1).map(|_| Box::pin(places.take())).collect();
            for w in &mut waiters {
                assert!(poll_once(w.as_mut()).is_pending(), "limit {limit}");
            }
            // Every place goes back before any waiter runs: all but one
            // of the waiters get in.
            drop(held);
            let got: Vec<_> = waiters
                .iter_mut()
                .filter_map(|w| match poll_once(w.as_mut()) {
                    Poll::Ready(p) => Some(p),
                    Poll::Pending => None,
                })
                .collect();
            assert_eq!(
                got.len(),
                limit,
                "limit {limit}: places given back stayed free"
            );
        }
    }
}
