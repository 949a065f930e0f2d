//! Go's channel semantics across the connection, at every capacity and in
//! every way the two ends of a channel can be on different sides:
//!
//! * one `recv` on a full buffer lets exactly one waiting send in, whatever
//!   the capacity (credit is granted back within one round trip, never held
//!   until more values are taken);
//! * with no `recv`, exactly `n` sends complete;
//! * `drain` and `sync` confirm *arrival* in the receiving end's buffer, not
//!   that the receiving program took the value (`send k ≤ n; drain; recv`);
//! * rendezvous (capacity 0) completes a send only once `recv` took it;
//! * an exported receiver is an inbox that importers coming and going do not
//!   end; an exported sender shares its values among its importers.
//!
//! Each scenario runs at every capacity of [`CAPACITIES`] at once (one task
//! per capacity, so the waits that prove "still pending" overlap) and
//! reports every capacity that failed, not just the first.

use std::future::Future;
use std::time::Duration;

use netchan::{Exporter, Receiver, Sender, Session, TrySendError, channel};

use crate::support::*;

/// The capacities every scenario runs at.
const CAPACITIES: [usize; 8] = [1, 2, 3, 4, 5, 8, 16, 64];

/// How long a send of a later round must stay pending (the first round
/// proves it with the full [`QUIET`]).
const BRIEFLY: Duration = Duration::from_millis(20);

/// Where the two ends of a `u32` channel are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ends {
    /// A session exports a sender; its peer imports a receiver.
    ExportedSender,
    /// An [`Exporter`] exports a sender; a session that connected to it
    /// imports a receiver (TCP only).
    ExportersSender,
    /// A session exports a receiver; its peer imports a sender.
    ExportedReceiver,
    /// An [`Exporter`] exports a receiver; a session that connected to it
    /// imports a sender (TCP only).
    ExportersReceiver,
    /// A private `channel(n)` whose `Sender` travelled to the peer inside a
    /// message: the peer sends, the maker receives.
    TravelledSender,
    /// A private `channel(n)` whose `Receiver` travelled to the peer inside
    /// a message: the maker sends, the peer receives.
    TravelledReceiver,
}

/// A live channel between two sides, and what to close afterwards.
#[derive(Debug)]
struct Link {
    tx: Sender<u32>,
    rx: Receiver<u32>,
    /// The side the sends start from: its `drain` confirms them.
    sending: Hub,
    sessions: Vec<Session>,
    exporter: Option<Exporter>,
    /// An exported receiver is an inbox: dropping its senders does not end
    /// it.
    inbox: bool,
}

impl Ends {
    /// A channel of `capacity` with its ends placed this way.
    async fn link(self, t: Transport, capacity: usize) -> Link {
        let name = unique("go");
        match self {
            Ends::ExportedSender | Ends::ExportedReceiver => {
                let (a, b) = t.connect().await;
                let (way, sending) = if self == Ends::ExportedSender {
                    (Way::ExportedSender, a.clone())
                } else {
                    (Way::ExportedReceiver, b.clone())
                };
                let (tx, rx) = way.channel::<u32>(&a, &b, capacity).await;
                Link {
                    tx,
                    rx,
                    sending: Hub::Session(sending),
                    sessions: vec![a, b],
                    exporter: None,
                    inbox: self == Ends::ExportedReceiver,
                }
            }
            Ends::ExportersSender | Ends::ExportersReceiver => {
                assert_eq!(t, Transport::Tcp, "an exporter listens on TCP");
                let exp = Exporter::bind("127.0.0.1:0").await.expect("bind exporter");
                let s = within(
                    "connect to the exporter",
                    Session::connect(exp.local_addr()),
                )
                .await
                .expect("connect");
                let (tx, rx, sending) = if self == Ends::ExportersSender {
                    let tx = exp.export_sender::<u32>(&name).expect("export sender");
                    let rx = within("import receiver", s.import_receiver::<u32>(&name, capacity))
                        .await
                        .expect("import receiver");
                    (tx, rx, Hub::Exporter(exp.clone()))
                } else {
                    let rx = exp
                        .export_receiver::<u32>(&name, capacity)
                        .expect("export receiver");
                    let tx = within("import sender", s.import_sender::<u32>(&name))
                        .await
                        .expect("import sender");
                    (tx, rx, Hub::Session(s.clone()))
                };
                Link {
                    tx,
                    rx,
                    sending,
                    sessions: vec![s],
                    exporter: Some(exp),
                    inbox: self == Ends::ExportersReceiver,
                }
            }
            Ends::TravelledSender => {
                let (a, b) = t.connect().await;
                // a makes the channel and keeps the receiver; the sender
                // travels to b on a channel from a to b.
                let (post, mut inbox) = Way::ExportedReceiver
                    .channel::<Sender<u32>>(&b, &a, 1)
                    .await;
                let (tx, rx) = channel::<u32>(capacity);
                send_ok("send the sender to the peer", &post, tx).await;
                let tx = recv_some("the sender arrives at the peer", &mut inbox).await;
                Link {
                    tx,
                    rx,
                    sending: Hub::Session(b.clone()),
                    sessions: vec![a, b],
                    exporter: None,
                    inbox: false,
                }
            }
            Ends::TravelledReceiver => {
                let (a, b) = t.connect().await;
                // a makes the channel and keeps the sender; the receiver
                // travels to b on a channel from a to b.
                let (post, mut inbox) = Way::ExportedReceiver
                    .channel::<Receiver<u32>>(&b, &a, 1)
                    .await;
                let (tx, rx) = channel::<u32>(capacity);
                send_ok("send the receiver to the peer", &post, rx).await;
                let rx = recv_some("the receiver arrives at the peer", &mut inbox).await;
                Link {
                    tx,
                    rx,
                    sending: Hub::Session(a.clone()),
                    sessions: vec![a, b],
                    exporter: None,
                    inbox: false,
                }
            }
        }
    }
}

impl Link {
    /// Drops the sender and checks that nothing arrives beyond what the
    /// test took (a clean end; silence for an inbox, which its importers
    /// do not end), then closes everything.
    async fn nothing_more(self, what: &str) {
        let Link {
            tx,
            mut rx,
            sending,
            sessions,
            exporter,
            inbox,
        } = self;
        drop(tx);
        if inbox {
            receives_nothing(what, &mut rx).await;
        } else {
            recv_end(what, &mut rx).await;
        }
        drop((rx, sending));
        for s in sessions {
            within("close a session", s.close()).await;
        }
        if let Some(exp) = exporter {
            within("shut the exporter down", exp.shutdown()).await;
        }
    }
}

/// Asserts that `f` is still pending after [`BRIEFLY`]: a cheap check for
/// the later rounds of a scenario that proved it once with [`QUIET`].
async fn still_waiting<F: Future + Unpin>(what: &str, f: &mut F) {
    if tokio::time::timeout(BRIEFLY, f).await.is_ok() {
        panic!("completed although it should still be waiting: {what}");
    }
}

/// Starts `tx.send(v)` in a task of its own; the task gives back the value
/// if the send fails.
fn spawn_send(tx: &Sender<u32>, v: u32) -> tokio::task::JoinHandle<Result<(), u32>> {
    let tx = tx.clone();
    tokio::spawn(async move { tx.send(v).await.map_err(|e| e.0) })
}

/// Awaits a send started by [`spawn_send`], which must complete and
/// succeed within [`LIMIT`].
async fn completes(what: &str, send: &mut tokio::task::JoinHandle<Result<(), u32>>) {
    match within(what, send).await {
        Ok(Ok(())) => {}
        Ok(Err(v)) => panic!("{what}: the send failed and gave back {v}"),
        Err(e) => panic!("{what}: the sending task failed: {e}"),
    }
}

/// Runs `scenario` at every capacity of [`CAPACITIES`] at once, each in a
/// task of its own, and fails listing every capacity whose run failed.
async fn at_every_capacity<F, Fut>(what: &str, scenario: F)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let runs: Vec<_> = CAPACITIES
        .iter()
        .map(|&n| (n, tokio::spawn(scenario(n))))
        .collect();
    let mut failed = Vec::new();
    for (n, run) in runs {
        if let Err(e) = run.await {
            let why = if e.is_panic() {
                let p = e.into_panic();
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "a panic".to_owned())
            } else {
                e.to_string()
            };
            failed.push(format!("capacity {n}: {why}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{what}: failed at {} of {} capacities:\n{}",
        failed.len(),
        CAPACITIES.len(),
        failed.join("\n")
    );
}

/// Instantiates `async fn scenario(t: Transport, ends: Ends)` for every
/// [`Ends`]: `scenario::<ends>::over_memory` and `::over_tcp`, and only
/// `::over_tcp` for an exporter's ends.
macro_rules! every_way {
    ($scenario:ident) => {
        mod $scenario {
            every_way!(@both $scenario, from_an_exported_sender, ExportedSender);
            every_way!(@tcp $scenario, from_an_exporters_sender, ExportersSender);
            every_way!(@both $scenario, into_an_exported_receiver, ExportedReceiver);
            every_way!(@tcp $scenario, into_an_exporters_receiver, ExportersReceiver);
            every_way!(@both $scenario, over_a_travelled_sender, TravelledSender);
            every_way!(@both $scenario, over_a_travelled_receiver, TravelledReceiver);
        }
    };
    (@both $scenario:ident, $way:ident, $ends:ident) => {
        mod $way {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn over_memory() {
                $crate::support::bounded(super::super::$scenario(
                    $crate::support::Transport::Memory,
                    super::super::Ends::$ends,
                ))
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn over_tcp() {
                $crate::support::bounded(super::super::$scenario(
                    $crate::support::Transport::Tcp,
                    super::super::Ends::$ends,
                ))
                .await;
            }
        }
    };
    (@tcp $scenario:ident, $way:ident, $ends:ident) => {
        mod $way {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn over_tcp() {
                $crate::support::bounded(super::super::$scenario(
                    $crate::support::Transport::Tcp,
                    super::super::Ends::$ends,
                ))
                .await;
            }
        }
    };
}

// ------------------------------------------------- capacity n: one recv, one send

/// Rounds of "recv one, the next waiting send completes".
const ROUNDS: u32 = 3;

async fn one_recv_lets_one_waiting_send_in(t: Transport, ends: Ends) {
    at_every_capacity("one recv lets one waiting send in", move |n| {
        one_recv_lets_one_waiting_send_in_at(t, ends, n)
    })
    .await;
}
every_way!(one_recv_lets_one_waiting_send_in);

async fn one_recv_lets_one_waiting_send_in_at(t: Transport, ends: Ends, n: usize) {
    let mut link = ends.link(t, n).await;
    let n = n as u32;
    for v in 0..n {
        send_ok(
            &format!("{ends:?}: send {v} into a buffer of {n}"),
            &link.tx,
            v,
        )
        .await;
    }
    let mut next = 0;
    for round in 0..ROUNDS {
        let v = n + round;
        let mut waiting = spawn_send(&link.tx, v);
        let what = format!("{ends:?}: send {v} into the full buffer of {n}");
        if round == 0 {
            stays_pending(&what, &mut waiting).await;
        } else {
            still_waiting(&what, &mut waiting).await;
        }
        assert_eq!(
            recv_some("one recv from the full buffer", &mut link.rx).await,
            next,
            "{ends:?}: FIFO"
        );
        next += 1;
        completes(
            &format!(
                "{ends:?}: round {round}: the send of {v} waiting on the full buffer of {n}, \
                 after one recv freed one slot"
            ),
            &mut waiting,
        )
        .await;
    }
    for v in next..n + ROUNDS {
        assert_eq!(
            recv_some("the values still buffered", &mut link.rx).await,
            v,
            "{ends:?}: FIFO, none lost, none twice"
        );
    }
    link.nothing_more(&format!("{ends:?}: nothing after the last value"))
        .await;
}

// ------------------------------------------------- capacity n: the bound is exact

async fn exactly_n_sends_complete_without_a_recv(t: Transport, ends: Ends) {
    at_every_capacity("exactly n sends complete without a recv", move |n| {
        exactly_n_sends_complete_without_a_recv_at(t, ends, n)
    })
    .await;
}
every_way!(exactly_n_sends_complete_without_a_recv);

async fn exactly_n_sends_complete_without_a_recv_at(t: Transport, ends: Ends, n: usize) {
    let mut link = ends.link(t, n).await;
    let n = n as u32;
    for v in 0..n {
        send_ok(
            &format!("{ends:?}: send {v} into a buffer of {n}"),
            &link.tx,
            v,
        )
        .await;
    }
    match link.tx.try_send(n) {
        Err(TrySendError::Full(v)) => assert_eq!(v, n, "try_send gives its value back"),
        other => panic!("{ends:?}: try_send into the full buffer of {n}: {other:?}"),
    }
    let mut waiting = spawn_send(&link.tx, n);
    stays_pending(
        &format!("{ends:?}: send {n} into the full buffer of {n}"),
        &mut waiting,
    )
    .await;
    // Any credit beyond n would have arrived by now.
    match link.tx.try_send(n + 1) {
        Err(TrySendError::Full(v)) => assert_eq!(v, n + 1),
        other => panic!("{ends:?}: a later try_send into the full buffer of {n}: {other:?}"),
    }
    // Empty the buffer entirely (independent of how credit for one slot
    // comes back), then the waiting send goes in.
    for v in 0..n {
        assert_eq!(
            recv_some("a buffered value", &mut link.rx).await,
            v,
            "{ends:?}: FIFO"
        );
    }
    completes(
        &format!("{ends:?}: the waiting send once the buffer of {n} was emptied"),
        &mut waiting,
    )
    .await;
    assert_eq!(
        recv_some("the value that waited", &mut link.rx).await,
        n,
        "{ends:?}: the refused try_sends sent nothing"
    );
    link.nothing_more(&format!("{ends:?}: nothing after the last value"))
        .await;
}

// --------------------------------------- delivery confirmation is arrival, not recv

/// How the sending side waits for confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Confirm {
    /// `Session::drain` or `Exporter::drain`.
    Drain,
    /// `Exporter::sync`.
    Sync,
}

/// The numbers of values to send before confirming: 1, n/2 and n.
fn batches(n: usize) -> Vec<u32> {
    let mut ks = vec![1, n / 2, n];
    ks.retain(|&k| k > 0);
    ks.dedup();
    ks.into_iter().map(|k| k as u32).collect()
}

async fn drain_waits_for_arrival_not_for_recv(t: Transport, ends: Ends) {
    at_every_capacity("send k ≤ n values; drain; then recv", move |n| {
        confirmation_waits_for_arrival_at(t, ends, n, Confirm::Drain)
    })
    .await;
}
every_way!(drain_waits_for_arrival_not_for_recv);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporter_sync_waits_for_arrival_not_for_recv() {
    bounded(at_every_capacity(
        "send k ≤ n values; Exporter::sync; then recv",
        |n| {
            confirmation_waits_for_arrival_at(
                Transport::Tcp,
                Ends::ExportersSender,
                n,
                Confirm::Sync,
            )
        },
    ))
    .await;
}

async fn confirmation_waits_for_arrival_at(t: Transport, ends: Ends, n: usize, how: Confirm) {
    let mut link = ends.link(t, n).await;
    let mut next = 0u32;
    for k in batches(n) {
        for v in next..next + k {
            send_ok(
                &format!("{ends:?}: send {v} into a buffer of {n}"),
                &link.tx,
                v,
            )
            .await;
        }
        // Bounded by its own timeout, LIMIT: Ok means it returned before.
        let confirmed = match (how, &link.sending) {
            (Confirm::Drain, hub) => hub.drain(Some(LIMIT)).await,
            (Confirm::Sync, Hub::Exporter(exp)) => exp.sync(Some(LIMIT)).await,
            (Confirm::Sync, Hub::Session(_)) => unreachable!("sync is the exporter's"),
        };
        if let Err(e) = confirmed {
            panic!(
                "{ends:?}: {how:?} after {k} sends into a buffer of {n}, before any recv, \
                 must return once they arrived: {e:?} ({e})"
            );
        }
        for v in next..next + k {
            assert_eq!(
                recv_some("a value confirmed before it was taken", &mut link.rx).await,
                v,
                "{ends:?}: FIFO"
            );
        }
        next += k;
    }
    link.nothing_more(&format!("{ends:?}: nothing after the last value"))
        .await;
}

// ---------------------------------------------------------------- capacity 0

async fn rendezvous_send_completes_only_once_recv_took_the_value(t: Transport, ends: Ends) {
    let mut link = ends.link(t, 0).await;
    for v in 0..3 {
        let mut waiting = spawn_send(&link.tx, v);
        let what = format!("{ends:?}: rendezvous send {v} before any recv");
        if v == 0 {
            stays_pending(&what, &mut waiting).await;
        } else {
            still_waiting(&what, &mut waiting).await;
        }
        assert_eq!(
            recv_some("the recv that meets the send", &mut link.rx).await,
            v,
            "{ends:?}"
        );
        completes(
            &format!("{ends:?}: rendezvous send {v} once recv took its value"),
            &mut waiting,
        )
        .await;
        if let Err(e) = link.sending.drain(Some(LIMIT)).await {
            panic!("{ends:?}: drain after a completed rendezvous send: {e:?}");
        }
    }
    link.nothing_more(&format!("{ends:?}: nothing after the last value"))
        .await;
}
every_way!(rendezvous_send_completes_only_once_recv_took_the_value);

async fn a_rendezvous_value_never_taken_goes_back_when_the_receiver_goes(t: Transport, ends: Ends) {
    let mut link = ends.link(t, 0).await;
    // A recv that waited and gave up lets one value travel.
    tokio::select! {
        r = link.rx.recv() => panic!("{ends:?}: recv completed with no send: {r:?}"),
        () = tokio::time::sleep(QUIET) => {}
    }
    let mut waiting = spawn_send(&link.tx, 100);
    stays_pending(&format!("{ends:?}: a rendezvous send"), &mut waiting).await;
    let Link {
        tx,
        rx,
        sending,
        sessions,
        exporter,
        ..
    } = link;
    drop(rx);
    match ends {
        // An exported sender keeps the value for its next importer.
        Ends::ExportedSender | Ends::ExportersSender => {
            stays_pending(
                &format!("{ends:?}: the send, with no importer left"),
                &mut waiting,
            )
            .await;
            waiting.abort();
        }
        _ => match within("the send", &mut waiting).await {
            Ok(Err(v)) => assert_eq!(v, 100, "{ends:?}"),
            Ok(Ok(())) => panic!("{ends:?}: a rendezvous send nobody took succeeded"),
            Err(e) => panic!("{ends:?}: the sending task failed: {e}"),
        },
    }
    drop((tx, sending));
    for s in sessions {
        within("close a session", s.close()).await;
    }
    if let Some(exp) = exporter {
        within("shut the exporter down", exp.shutdown()).await;
    }
}
every_way!(a_rendezvous_value_never_taken_goes_back_when_the_receiver_goes);

// ------------------------------------------------ an inbox outlives its importers

/// Importers that take turns.
const IN_TURN: u32 = 5;
/// Importers at the same time.
const TOGETHER: u32 = 3;

/// Where the inbox lives: one session of a pair (its peer imports again
/// and again), or an exporter that importers connect to and leave.
#[derive(Debug, Clone)]
enum Home {
    Pair(Session, Session),
    Exporter(Exporter),
}

/// Importer `k` sends `m` values `(k, 0..m)` into the inbox `name`, drains
/// its session, and leaves: over TCP it connects first and then closes
/// (even `k`) or drops (odd `k`) its session; over a pair it drops its
/// sender.
async fn importer(home: Home, name: String, k: u32, m: u32) {
    let s = match &home {
        Home::Pair(_, b) => b.clone(),
        Home::Exporter(exp) => within("importer connects", Session::connect(exp.local_addr()))
            .await
            .expect("connect"),
    };
    let tx = within("import the inbox", s.import_sender::<(u32, u32)>(&name))
        .await
        .expect("import sender");
    for i in 0..m {
        send_ok("an importer's send", &tx, (k, i)).await;
    }
    if let Err(e) = s.drain(Some(LIMIT)).await {
        panic!("importer {k}: drain after its {m} sends: {e:?}");
    }
    drop(tx);
    if matches!(home, Home::Exporter(_)) && k.is_multiple_of(2) {
        within("importer closes", s.close()).await;
    }
}

/// An inbox of `(importer, value)`.
type Inbox = Receiver<(u32, u32)>;

/// Takes `count` values from the inbox in a task and gives it back with
/// them.
fn collect(mut inbox: Inbox, count: u32) -> tokio::task::JoinHandle<(Inbox, Vec<(u32, u32)>)> {
    tokio::spawn(async move {
        let mut got = Vec::new();
        for _ in 0..count {
            got.push(recv_some("a value for the inbox", &mut inbox).await);
        }
        (inbox, got)
    })
}

/// Checks that `got` holds `(k, 0..m)` for every `k` in `ks`, each once,
/// each importer's values in order.
fn check_every_value_once(n: usize, got: &[(u32, u32)], ks: std::ops::Range<u32>, m: u32) {
    for k in ks.clone() {
        let mine: Vec<u32> = got.iter().filter(|v| v.0 == k).map(|v| v.1).collect();
        assert_eq!(
            mine,
            (0..m).collect::<Vec<_>>(),
            "capacity {n}: importer {k}'s values, each once and in order"
        );
    }
    assert!(
        got.iter().all(|v| ks.contains(&v.0)),
        "capacity {n}: values from no such importer: {got:?}"
    );
}

async fn an_exported_receiver_outlives_importers_that_come_and_go(t: Transport) {
    at_every_capacity("an inbox outlives its importers", move |n| {
        an_exported_receiver_outlives_importers_at(t, n)
    })
    .await;
}
over_both!(an_exported_receiver_outlives_importers_that_come_and_go);

async fn an_exported_receiver_outlives_importers_at(t: Transport, n: usize) {
    // More than the buffer holds, so that senders wait for room.
    let m = 2 * n as u32 + 3;
    let name = unique("inbox");
    let (home, inbox) = match t {
        Transport::Memory => {
            let (a, b) = Session::pair();
            let inbox = a
                .export_receiver::<(u32, u32)>(&name, n)
                .expect("export receiver");
            (Home::Pair(a, b), inbox)
        }
        Transport::Tcp => {
            let exp = Exporter::bind("127.0.0.1:0").await.expect("bind exporter");
            let inbox = exp
                .export_receiver::<(u32, u32)>(&name, n)
                .expect("export receiver");
            (Home::Exporter(exp), inbox)
        }
    };

    // One importer after another.
    let taking = collect(inbox, IN_TURN * m);
    for k in 0..IN_TURN {
        importer(home.clone(), name.clone(), k, m).await;
    }
    let (mut inbox, got) = within("the inbox takes every value", taking)
        .await
        .expect("collecting task");
    check_every_value_once(n, &got, 0..IN_TURN, m);
    receives_nothing(
        &format!("capacity {n}: the inbox after {IN_TURN} importers came and went"),
        &mut inbox,
    )
    .await;

    // Several at once.
    let taking = collect(inbox, TOGETHER * m);
    let together: Vec<_> = (IN_TURN..IN_TURN + TOGETHER)
        .map(|k| tokio::spawn(importer(home.clone(), name.clone(), k, m)))
        .collect();
    for i in together {
        within("an importer at the same time as others", i)
            .await
            .expect("importer task");
    }
    let (mut inbox, got) = within("the inbox takes every value", taking)
        .await
        .expect("collecting task");
    check_every_value_once(n, &got, IN_TURN..IN_TURN + TOGETHER, m);
    receives_nothing(
        &format!("capacity {n}: the inbox after concurrent importers left"),
        &mut inbox,
    )
    .await;

    // Only hangup ends it.
    match &home {
        Home::Pair(a, _) => a.hangup(&name),
        Home::Exporter(exp) => exp.hangup(&name),
    }
    .expect("hangup");
    recv_end(&format!("capacity {n}: the inbox after hangup"), &mut inbox).await;
    drop(inbox);
    match home {
        Home::Pair(a, b) => {
            within("close", a.close()).await;
            within("close", b.close()).await;
        }
        Home::Exporter(exp) => within("shutdown", exp.shutdown()).await,
    }
}

// ---------------------------------------------------------------- work sharing

/// Importers sharing one exported sender.
const SHARERS: usize = 3;

async fn an_exported_sender_gives_each_value_to_exactly_one_importer_at_every_capacity(
    t: Transport,
) {
    at_every_capacity("work sharing", move |n| {
        an_exported_sender_shares_work_at(t, n)
    })
    .await;
}
over_both!(an_exported_sender_gives_each_value_to_exactly_one_importer_at_every_capacity);

async fn an_exported_sender_shares_work_at(t: Transport, n: usize) {
    let total = 6 * n as u32 + 20;
    let (hub, imps) = t.hub(SHARERS).await;
    let name = unique("work");
    let tx = hub.export_sender::<u32>(&name).expect("export sender");
    let mut consumers = Vec::new();
    for s in &imps {
        let mut rx = within("import receiver", s.import_receiver::<u32>(&name, n))
            .await
            .expect("import receiver");
        consumers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(v) = rx.recv().await.expect("an importer's recv") {
                mine.push(v);
            }
            mine
        }));
    }
    for v in 0..total {
        send_ok("send to the importers", &tx, v).await;
    }
    drop(tx);
    let mut got = Vec::new();
    for c in consumers {
        let mine = within("an importer ends once the sender is gone", c)
            .await
            .expect("importer task");
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "capacity {n}: each importer gets its share in order: {mine:?}"
        );
        got.extend(mine);
    }
    got.sort_unstable();
    assert_eq!(
        got,
        (0..total).collect::<Vec<_>>(),
        "capacity {n}: every value reached exactly one importer"
    );
    match hub {
        Hub::Session(s) => within("close", s.close()).await,
        Hub::Exporter(exp) => within("shutdown", exp.shutdown()).await,
    }
    for s in imps {
        within("close", s.close()).await;
    }
}
