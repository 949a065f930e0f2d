//! Channels on JetStream: one work-queue stream per channel name, one
//! shared durable pull consumer that every receiver pulls from.
//!
//! Both halves are the ordinary local channel types, bridged by a task of
//! the node:
//!
//! * a sender is a local channel in backend-relay mode (`Queue::set_backend`):
//!   it holds one value at a time, and `send` completes only once the bridge
//!   published that value and JetStream acknowledged it (or gets the value
//!   back if it cannot be sent). So `send`'s completion means "stored".
//! * a receiver is a local channel of the requested capacity; the bridge
//!   fetches at most as many values as there are free slots, keeps their
//!   acknowledgement handles in order, and acknowledges each once `recv`
//!   took it (`Queue::taken`). Values it holds are kept alive with
//!   progress acknowledgements, so only a dead receiver's values are
//!   redelivered.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::message::{AckKind, Acker, PublishMessage};
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use bytes::BytesMut;
use futures::StreamExt;

use super::{Inner, TaskGuard, token};
use crate::channel::embed::encode_alone;
use crate::channel::queue::{Push, Queue};
use crate::conn::Inbound;
use crate::proto::CodecId;
use crate::{Error, Message, Receiver, SendErrorKind, Sender, channel, codec, util::lock};

/// The durable consumer every receiver of a channel shares.
const CONSUMER: &str = "netchan";

/// Stream metadata key holding the channel's message type.
const TYPE_KEY: &str = "netchan-type";

/// The largest receiver capacity: values held unacknowledged per receiver.
const MAX_CAPACITY: usize = 1 << 16;

/// How long one pull request waits for values before it is renewed.
const FETCH_WAIT: Duration = Duration::from_secs(5);

/// Longest pause between retries of a publish or a fetch.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The NATS names of one channel.
#[derive(Debug, Clone)]
pub(super) struct Names {
    pub(super) channel: String,
    pub(super) stream: String,
    pub(super) subject: String,
}

impl Names {
    pub(super) fn new(prefix: &str, channel: &str) -> Result<Names, Error> {
        if channel.is_empty() {
            return Err(Error::Config("a channel name must not be empty".to_owned()));
        }
        let tok = token(channel);
        let stream = format!("{prefix}_ch_{tok}");
        // JetStream keeps stream names short (they name files too).
        if stream.len() > 200 {
            return Err(Error::Config(format!(
                "channel name {channel:?} is too long for a NATS stream name \
                 ({} bytes once escaped; keep names under about 150 plain characters)",
                stream.len()
            )));
        }
        Ok(Names {
            channel: channel.to_owned(),
            stream,
            subject: format!("{prefix}.ch.{tok}"),
        })
    }
}

pub(super) fn check_capacity(capacity: usize) -> Result<(), Error> {
    if capacity == 0 {
        return Err(Error::Config(
            "capacity 0 (rendezvous) cannot hold on NATS: a send completes when JetStream \
             stored the value, not when a receiver took it; use a capacity of 1 or more"
                .to_owned(),
        ));
    }
    if capacity > MAX_CAPACITY {
        return Err(Error::Config(format!(
            "a NATS receiver's capacity (values held unacknowledged) is at most \
             {MAX_CAPACITY}, not {capacity}"
        )));
    }
    Ok(())
}

/// Makes sure the channel's stream exists and carries `T`.
pub(super) async fn ensure_stream<T: Message>(inner: &Inner, names: &Names) -> Result<(), Error> {
    let want = codec::type_name::<T>();
    if let Some(have) = lock(&inner.streams).get(&names.stream) {
        return check_type(names, &want, have);
    }
    let cfg = stream::Config {
        name: names.stream.clone(),
        subjects: vec![names.subject.clone()],
        retention: RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        max_messages: i64::try_from(inner.cfg.stream_max_messages).unwrap_or(i64::MAX),
        discard: DiscardPolicy::New,
        duplicate_window: Duration::from_secs(120),
        description: Some(format!("netchan channel {:?}", names.channel)),
        metadata: [(TYPE_KEY.to_owned(), want.clone())].into_iter().collect(),
        ..Default::default()
    };
    let stream = inner.js.get_or_create_stream(cfg).await.map_err(|e| {
        Error::ConnectionLost(format!(
            "cannot create or find the JetStream stream {} of channel {:?}: {e} \
             (is JetStream enabled on the server, nats-server -js?)",
            names.stream, names.channel
        ))
    })?;
    let have = stream
        .cached_info()
        .config
        .metadata
        .get(TYPE_KEY)
        .cloned()
        .unwrap_or_else(|| want.clone());
    lock(&inner.streams).insert(names.stream.clone(), have.clone());
    check_type(names, &want, &have)
}

fn check_type(names: &Names, want: &str, have: &str) -> Result<(), Error> {
    if want == have {
        Ok(())
    } else {
        Err(Error::WrongType {
            name: names.channel.clone(),
            expected: want.to_owned(),
            actual: have.to_owned(),
        })
    }
}

/// The channel's shared durable consumer, made if missing.
pub(super) async fn consumer<T: Message>(
    inner: &Inner,
    names: &Names,
) -> Result<PullConsumer, Error> {
    ensure_stream::<T>(inner, names).await?;
    let stream = inner.js.get_stream(&names.stream).await.map_err(|e| {
        Error::ConnectionLost(format!("cannot open the stream {}: {e}", names.stream))
    })?;
    let cfg = pull::Config {
        durable_name: Some(CONSUMER.to_owned()),
        ack_policy: AckPolicy::Explicit,
        ack_wait: inner.cfg.ack_wait,
        max_deliver: -1,
        // Each receiver bounds what it holds; the consumer does not.
        max_ack_pending: -1,
        ..Default::default()
    };
    stream
        .get_or_create_consumer(CONSUMER, cfg)
        .await
        .map_err(|e| {
            Error::ConnectionLost(format!(
                "cannot create or find the consumer of channel {:?}: {e}",
                names.channel
            ))
        })
}

/// A sender whose values the node publishes to the channel's stream.
pub(super) fn sender<T: Message>(
    inner: &Arc<Inner>,
    name: &str,
    names: Option<Names>,
) -> Result<Sender<T>, Error> {
    let names = match names {
        Some(n) => n,
        None => Names::new(&inner.cfg.prefix, name)?,
    };
    let (tx, rx) = channel::<T>(1);
    let Some(q) = tx.local_queue().cloned() else {
        return Err(Error::Config(
            "a local channel without its queue".to_owned(),
        ));
    };
    q.set_backend();
    let producer = format!("{}-{}", inner.id, inner.next_producer());
    let guard = TaskGuard::new(inner);
    inner
        .rt
        .spawn(publish_loop(inner.clone(), names, rx, q, producer, guard));
    Ok(tx)
}

/// Publishes each value the senders hand over, one at a time (so each
/// producer's values are stored in order), and completes its send once
/// JetStream acknowledged it. Retries (with the same message id, so a
/// retry is stored once) until it is stored or the node closes.
async fn publish_loop<T: Message>(
    inner: Arc<Inner>,
    names: Names,
    mut rx: Receiver<T>,
    q: Arc<Queue<T>>,
    producer: String,
    _running: TaskGuard,
) {
    let mut seq: u64 = 0;
    // Checked before the first publish (from the node's cache once it
    // knows the stream), so a sender of another type never publishes.
    let mut ready = false;
    loop {
        let value = tokio::select! {
            r = rx.recv() => r,
            () = inner.closed.cancelled() => {
                Inbound::fail(&*q, Error::Closed);
                return;
            }
        };
        let value = match value {
            Ok(Some(v)) => v,
            // Every sender is gone.
            _ => return,
        };
        let mut body = BytesMut::new();
        if let Err(e) = encode_alone(CodecId::Bincode, &value, &mut body) {
            q.relay_refused(value, SendErrorKind::Invalid(e));
            continue;
        }
        let limit = inner.max_body();
        if body.len() > limit {
            let size = body.len();
            q.relay_refused(value, SendErrorKind::TooLarge { size, limit });
            continue;
        }
        seq += 1;
        let id = format!("{producer}-{seq}");
        let body = body.freeze();
        let mut backoff = Duration::from_millis(10);
        loop {
            if !ready {
                match ensure_stream::<T>(&inner, &names).await {
                    Ok(()) => ready = true,
                    Err(e @ Error::WrongType { .. }) => {
                        tracing::warn!(channel = %names.channel, "{e}");
                        // This value, and every later one, is refused. The
                        // value goes back first: a sender that finds the
                        // queue failed while its value is still out would
                        // take it as delivered.
                        q.relay_refused(value, SendErrorKind::Invalid(e.clone()));
                        Inbound::fail(&*q, e);
                        return;
                    }
                    Err(e) => tracing::warn!(channel = %names.channel, "{e}; retrying"),
                }
            }
            if ready {
                match publish(&inner, &names, &id, body.clone()).await {
                    Ok(()) => break,
                    Err(e) => {
                        // A full stream lands here too: the send waits.
                        tracing::debug!(channel = %names.channel, "publish not stored: {e}; retrying");
                        if e.contains("stream not found") || e.contains("no stream") {
                            lock(&inner.streams).remove(&names.stream);
                            ready = false;
                        }
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = inner.closed.cancelled() => {
                    // The value back first, then the end (see above).
                    q.relay_done(Some(value));
                    Inbound::fail(&*q, Error::Closed);
                    return;
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        q.relay_done(None);
    }
}

/// One publish, done once JetStream acknowledged it.
async fn publish(inner: &Inner, names: &Names, id: &str, body: bytes::Bytes) -> Result<(), String> {
    let msg = PublishMessage::build().payload(body).message_id(id);
    let ack = inner
        .js
        .send_publish(names.subject.clone(), msg)
        .await
        .map_err(|e| e.to_string())?;
    ack.await.map(|_| ()).map_err(|e| e.to_string())
}

/// A receiver the node fills from the channel's shared consumer.
pub(super) fn receiver<T: Message>(
    inner: &Arc<Inner>,
    name: &str,
    capacity: usize,
    consumer: Option<PullConsumer>,
) -> Result<Receiver<T>, Error> {
    check_capacity(capacity)?;
    let names = Names::new(&inner.cfg.prefix, name)?;
    let (tx, rx) = channel::<T>(capacity);
    let Some(q) = tx.local_queue().cloned() else {
        return Err(Error::Config(
            "a local channel without its queue".to_owned(),
        ));
    };
    let guard = TaskGuard::new(inner);
    inner.rt.spawn(consume_loop(
        inner.clone(),
        names,
        tx,
        q,
        capacity,
        consumer,
        guard,
    ));
    Ok(rx)
}

/// Fetches values into the local queue while it has free slots, and
/// acknowledges each value once a receiver took it.
async fn consume_loop<T: Message>(
    inner: Arc<Inner>,
    names: Names,
    // Held so the queue stays open while the node is; dropped at the end,
    // which ends the receiver cleanly after what it holds.
    _tx: Sender<T>,
    q: Arc<Queue<T>>,
    capacity: usize,
    consumer: Option<PullConsumer>,
    _running: TaskGuard,
) {
    let mut backoff = Duration::from_millis(10);
    let consumer = match consumer {
        Some(c) => c,
        None => loop {
            match self::consumer::<T>(&inner, &names).await {
                Ok(c) => break c,
                Err(e @ Error::WrongType { .. }) => {
                    tracing::warn!(channel = %names.channel, "{e}");
                    Inbound::fail(&*q, e);
                    return;
                }
                Err(e) => tracing::warn!(channel = %names.channel, "{e}; retrying"),
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = inner.closed.cancelled() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        },
    };
    // Acknowledgement handles of the values pushed and not yet taken, in
    // the order they were pushed (and so taken).
    let mut held: VecDeque<Acker> = VecDeque::new();
    let mut acked = q.taken();
    let mut batch: Option<pull::Batch> = None;
    let mut progress =
        tokio::time::interval((inner.cfg.ack_wait / 3).max(Duration::from_millis(30)));
    progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let notified = q.space.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let taken = q.taken();
        while acked < taken {
            if let Some(a) = held.pop_front() {
                if let Err(e) = a.ack().await {
                    tracing::warn!(channel = %names.channel, "acknowledgement not sent: {e}");
                }
            }
            acked += 1;
        }
        if q.is_closed() {
            // The receiver is gone: what it did not take goes to others now.
            give_back(&q, &mut held, acked).await;
            return;
        }
        if batch.is_none() && held.len() < capacity {
            let want = capacity - held.len();
            match consumer
                .batch()
                .max_messages(want)
                .expires(FETCH_WAIT)
                .messages()
                .await
            {
                Ok(b) => {
                    batch = Some(b);
                    backoff = Duration::from_millis(10);
                }
                Err(e) => {
                    tracing::warn!(channel = %names.channel, "cannot fetch: {e}; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = inner.closed.cancelled() => {
                            give_back(&q, &mut held, acked).await;
                            return;
                        }
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        }
        tokio::select! {
            biased;
            () = inner.closed.cancelled() => {
                // Values in the buffer could not be acknowledged once taken:
                // they leave the buffer and go back to the server, so
                // another receiver gets them, and this one ends cleanly.
                give_back(&q, &mut held, acked).await;
                let _ = inner.client.flush().await;
                return;
            }
            () = &mut notified => {}
            m = next_message(&mut batch) => match m {
                Some(Ok(msg)) => {
                    let (msg, acker) = msg.split();
                    match codec::decode::<T>(CodecId::Bincode, &msg.payload) {
                        Ok(v) => match q.push_local(v) {
                            Push::Done(_) => held.push_back(acker),
                            Push::Full(_) | Push::Closed(_) => {
                                let _ = acker.ack_with(AckKind::Nak(None)).await;
                            }
                        },
                        Err(e) => {
                            tracing::warn!(
                                channel = %names.channel,
                                "a value on this channel does not decode as a {}: {e}; dropped from the stream",
                                codec::type_name::<T>()
                            );
                            let _ = acker.ack_with(AckKind::Term).await;
                        }
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(channel = %names.channel, "pull request ended: {e}");
                    batch = None;
                }
                None => batch = None,
            },
            _ = progress.tick() => {
                for a in &held {
                    let _ = a.ack_with(AckKind::Progress).await;
                }
            }
        }
    }
}

async fn next_message(
    batch: &mut Option<pull::Batch>,
) -> Option<Result<async_nats::jetstream::Message, async_nats::Error>> {
    match batch {
        Some(b) => b.next().await,
        None => std::future::pending().await,
    }
}

/// Empties the buffer, acknowledges what was taken before, and hands the
/// rest back to the server for redelivery to another receiver.
async fn give_back<T>(q: &Queue<T>, held: &mut VecDeque<Acker>, mut acked: u64) {
    q.clear();
    let taken = q.taken();
    while acked < taken {
        if let Some(a) = held.pop_front() {
            let _ = a.ack().await;
        }
        acked += 1;
    }
    for a in held.drain(..) {
        let _ = a.ack_with(AckKind::Nak(None)).await;
    }
}
