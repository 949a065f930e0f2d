//! A small cluster in one process: one server, many clients, on
//! [`netchan::listen`]-style channels (`Exporter::cluster` + [`netchan::dial`]).
//!
//! This is the later Go netchan's `Listen` / `Dial` example, with the
//! bookkeeping its benchmark could not pass ("Not received: 10 messages"):
//! the server hands out numbered tasks on its sender — each task goes to
//! exactly one client with room for it — and every client echoes each
//! task back as a result on its own sender. The server checks that every
//! task came back exactly once and unchanged, and exits non-zero if one
//! was lost, duplicated or corrupted.
//!
//! The flow is pipelined: the server keeps sending while results stream
//! back, bounded only by the per-client channel buffers (credit-based flow
//! control), so no one waits for a round trip per task.
//!
//! ```text
//! cargo run --release -p examples --bin cluster                        # 50 clients, 10 s
//! cargo run --release -p examples --bin cluster -- --seconds 3 --clients 8
//! cargo run --release -p examples --bin cluster -- --seconds 3 --buffer 64   # smaller writes, more of them
//! cargo run --release -p examples --bin cluster -- --seconds 3 --tls       # over TLS 1.3
//! cargo run --release -p examples --bin cluster -- --seconds 5 --reconnect --cut-every 100
//! ```
//!
//! With `--reconnect` the clients' sessions survive broken connections
//! (`Config::reconnect`); with `--cut-every MS` as well, they connect
//! through a relay that cuts every connection every MS milliseconds, and
//! the sessions resume: the summary shows the throughput through the
//! cuts, still with every task back exactly once.
//!
//! With `--tls` the server makes a self-signed certificate and every
//! client pins its fingerprint.
//!
//! Each second it prints tasks sent and results received, in total and
//! per second, and from `Exporter::stats` one line per channel: values
//! queued, messages per second, and how long senders waited for room in
//! that second; at the end, one summary line.
//!
//! Logs go to stderr: `RUST_LOG=netchan=debug cargo run -p examples --bin cluster -- …`
//! shows every connection opened, closed or failed (warnings only by default).

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use examples::{rate, thousands};
use netchan::tls::{ClientTls, Identity, ServerTls};
use netchan::{Config, Direction, Exporter, ExporterStats, Receiver, Sender};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

/// How long the server waits for the last results once it stopped sending.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long clients get to connect, and to finish at the end.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The message of both directions (`listen` / `dial` carry one type): a
/// task going out, the same task coming back as its result.
#[derive(Debug, Serialize, Deserialize)]
struct Task {
    /// Sequence number, from 0, unique per task.
    seq: u64,
    /// The client that computed the result (`u32::MAX` on the way out).
    client: u32,
    /// The work: bytes derived from `seq`, so the server can check a
    /// result without keeping what it sent. `serde_bytes` encodes it as
    /// one byte string rather than element by element (2-4x faster for
    /// large payloads).
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
}

impl Task {
    fn new(seq: u64, len: usize) -> Task {
        Task {
            seq,
            client: u32::MAX,
            payload: (0..len).map(|i| payload_byte(seq, i)).collect(),
        }
    }

    fn payload_ok(&self, len: usize) -> bool {
        self.payload.len() == len
            && self
                .payload
                .iter()
                .enumerate()
                .all(|(i, b)| *b == payload_byte(self.seq, i))
    }
}

fn payload_byte(seq: u64, i: usize) -> u8 {
    (seq as u8).wrapping_add(i as u8)
}

#[derive(Debug, Parser)]
#[command(about = "One netchan server handing tasks to many clients, every result checked")]
struct Args {
    /// How long the server sends tasks.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// How many clients to run.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    clients: u32,
    /// Payload bytes per task.
    #[arg(long, default_value_t = 16)]
    payload: usize,
    /// Tasks buffered per client, and results per client at the server
    /// (`Config::cluster_buffer`; the library's default is 256). Larger
    /// buffers put more values in each write.
    #[arg(long, default_value_t = 1024)]
    buffer: usize,
    /// Run over TLS 1.3: a fresh self-signed certificate for the server,
    /// pinned by every client.
    #[arg(long)]
    tls: bool,
    /// Run as one process of a cluster on this NATS server (needs the
    /// feature `nats`: `cargo run -p examples --features nats --bin cluster`),
    /// with `--role server` or `--role worker`.
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// With `--nats`: `server` (hands out tasks, checks results) or
    /// `worker` (takes tasks, sends results; run any number).
    #[arg(long, value_parser = ["server", "worker"], requires = "nats")]
    role: Option<String>,
    /// With `--nats --role server`: how many tasks to hand out.
    #[arg(long, default_value_t = 10_000)]
    tasks: u64,
    /// With `--nats --role worker`: this worker's name in the results.
    #[arg(long)]
    name: Option<String>,
    /// Clients redial and resume their sessions when a connection breaks.
    #[arg(long)]
    reconnect: bool,
    /// With `--reconnect`: cut every client connection every MS
    /// milliseconds (through a relay).
    #[arg(long, value_name = "MS")]
    cut_every: Option<u64>,
}

#[tokio::main]
async fn main() -> ExitCode {
    examples::init_logging();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cluster: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    if let Some(url) = &args.nats {
        return run_nats(url, &args).await;
    }
    let base = Config::default().cluster_buffer(args.buffer);
    let (server_config, client_config, how) = if args.tls {
        let identity = Identity::self_signed(&["localhost"])?;
        let pin = identity.fingerprint();
        (
            base.clone().tls_server(ServerTls::new(identity)),
            base.tls_client(ClientTls::pinned(pin)),
            format!("TLS 1.3, certificate {pin}"),
        )
    } else {
        (base.clone(), base, "plaintext".to_owned())
    };
    if args.cut_every.is_some() && !args.reconnect {
        bail!("--cut-every needs --reconnect (without it, every cut ends the clients' sessions)");
    }
    let client_config = if args.reconnect {
        client_config.reconnect(
            netchan::Reconnect::default()
                .initial_delay(Duration::from_millis(10))
                .max_delay(Duration::from_millis(500))
                .give_up_after(Some(Duration::from_secs(30))),
        )
    } else {
        client_config
    };
    // Port 0, then `cluster()`: `listen` in two steps, to learn the port.
    let exporter = Exporter::bind_with("127.0.0.1:0", server_config)
        .await
        .context("cannot listen on 127.0.0.1")?;
    let server_addr = exporter.local_addr();
    let relay = match args.cut_every {
        Some(_) => Some(examples::Relay::start(server_addr).await?),
        None => None,
    };
    let addr = relay.as_ref().map_or(server_addr, |r| r.addr());
    let (to_clients, mut from_clients) = exporter.cluster::<Task>()?;
    println!(
        "server on {addr} ({how}); starting {} clients, buffer {} values per client each way",
        args.clients, args.buffer
    );

    let mut clients = JoinSet::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(args.clients as usize);
    for id in 0..args.clients {
        clients.spawn(client(id, addr, client_config.clone(), ready_tx.clone()));
    }
    drop(ready_tx);
    tokio::time::timeout(CLIENT_TIMEOUT, async {
        for _ in 0..args.clients {
            match ready_rx.recv().await {
                Some(Ok(())) => {}
                Some(Err(e)) => return Err(e),
                None => bail!("a client ended before it was connected"),
            }
        }
        Ok(())
    })
    .await
    .map_err(|_| anyhow!("clients did not connect within {CLIENT_TIMEOUT:?}"))??;
    println!(
        "{} clients connected; sending tasks for {} s",
        args.clients, args.seconds
    );

    let stats = Arc::new(Stats::default());
    let cuts = Arc::new(AtomicU64::new(0));
    // Cuts every client connection every MS until the results are in.
    let cutter = match (relay, args.cut_every) {
        (Some(relay), Some(ms)) => {
            let cuts = cuts.clone();
            Some(tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_millis(ms.max(1)));
                every.tick().await;
                loop {
                    every.tick().await;
                    if relay.cut() > 0 {
                        cuts.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }))
        }
        _ => None,
    };
    let start = Instant::now();
    let mut sender = tokio::spawn(send_tasks(to_clients, args.payload, stats.clone()));
    let mut check = Check::new(args.clients, args.payload);

    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    let stop_at = tokio::time::sleep(Duration::from_secs(args.seconds));
    tokio::pin!(stop_at);
    let mut stopped = false;
    // The last task's number, once the sender finished.
    let mut total_sent: Option<u64> = None;
    let drain_end = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(drain_end);
    let mut last = (0u64, 0u64);
    let mut last_channels = HashMap::new();
    // Resumes per session (keyed by its first peer address), as last seen.
    let mut resumes_seen = HashMap::new();
    let mut last_result = start;
    loop {
        if total_sent.is_some_and(|sent| check.received >= sent) {
            break;
        }
        tokio::select! {
            r = from_clients.recv() => match r {
                Ok(Some(result)) => {
                    check.result(&result);
                    last_result = Instant::now();
                }
                Ok(None) => bail!("the server's inbox closed early"),
                Err(e) => bail!("a result was lost in transit: {e}"),
            },
            _ = tick.tick() => {
                let now = (stats.sent.load(Ordering::Relaxed), check.received);
                println!(
                    "{:>4.0}s  sent {:>12} ({:>9} msg/s)  received {:>12} ({:>9} msg/s)",
                    start.elapsed().as_secs_f64(),
                    thousands(now.0),
                    thousands(now.0 - last.0),
                    thousands(now.1),
                    thousands(now.1 - last.1),
                );
                last = now;
                let now_stats = exporter.stats();
                count_resumes(&now_stats, &mut resumes_seen);
                channel_lines(&now_stats, &mut last_channels);
            }
            _ = &mut stop_at, if !stopped => {
                stopped = true;
                stats.stop.store(true, Ordering::Relaxed);
            }
            r = &mut sender, if total_sent.is_none() => {
                total_sent = Some(r.context("the sending task failed")??);
                drain_end.as_mut().reset(tokio::time::Instant::now() + DRAIN_TIMEOUT);
            }
            _ = &mut drain_end => {
                eprintln!("cluster: results still missing {DRAIN_TIMEOUT:?} after the last task");
                break;
            }
        }
    }
    let elapsed = last_result.duration_since(start).as_secs_f64();
    let sent = total_sent.unwrap_or(0);
    if let Some(c) = &cutter {
        c.abort();
    }
    count_resumes(&exporter.stats(), &mut resumes_seen);
    let resumes: u64 = resumes_seen.values().sum();

    // Every client ended its share when the sender closed; now the server.
    drop(from_clients);
    exporter.shutdown().await;
    let clients_ok = tokio::time::timeout(CLIENT_TIMEOUT, async {
        let mut failed = 0;
        while let Some(r) = clients.join_next().await {
            match r {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    eprintln!("cluster: {e:#}");
                    failed += 1;
                }
                Err(e) => {
                    eprintln!("cluster: a client task failed: {e}");
                    failed += 1;
                }
            }
        }
        failed
    })
    .await;

    let report = check.report(sent);
    println!(
        "summary: {} clients, {:.1} s: sent {}, received {}, lost {}, duplicated {}, corrupted {}; \
         average {} msg/s sent, {} msg/s received, {} msg/s both ways; tasks per client {}..{}",
        args.clients,
        elapsed,
        thousands(sent),
        thousands(check.received),
        report.lost,
        report.duplicated,
        report.corrupted,
        rate(sent, elapsed),
        rate(check.received, elapsed),
        rate(sent + check.received, elapsed),
        thousands(report.min_share),
        thousands(report.max_share),
    );
    match clients_ok {
        Ok(0) => {}
        Ok(n) => bail!("{n} clients failed"),
        Err(_) => bail!("clients did not end within {CLIENT_TIMEOUT:?}"),
    }
    if report.lost + report.duplicated + report.corrupted > 0 {
        bail!("results do not match the tasks sent");
    }
    if args.reconnect {
        println!(
            "through cuts: {} cuts{}, {resumes} resumes, {} msg/s received",
            cuts.load(Ordering::Relaxed),
            args.cut_every
                .map_or(String::new(), |ms| format!(" (every {ms} ms)")),
            rate(check.received, elapsed),
        );
    }
    println!("ok: every task came back exactly once");
    Ok(())
}

/// Records each session's resume count (sessions that already ended keep
/// their last count).
fn count_resumes(stats: &ExporterStats, seen: &mut HashMap<Option<std::net::SocketAddr>, u64>) {
    for s in &stats.sessions {
        let n = seen.entry(s.peer_addr).or_insert(0);
        *n = (*n).max(s.resumes);
    }
}

/// Counters shared between the sending task and the progress lines.
#[derive(Debug, Default)]
struct Stats {
    sent: AtomicU64,
    stop: AtomicBool,
}

/// Sends tasks until told to stop; returns how many it sent. Dropping the
/// sender at the end closes the channel: each client receives its share,
/// then `Ok(None)`.
async fn send_tasks(
    to_clients: Sender<Task>,
    payload: usize,
    stats: Arc<Stats>,
) -> anyhow::Result<u64> {
    let mut seq = 0;
    while !stats.stop.load(Ordering::Relaxed) {
        to_clients
            .send(Task::new(seq, payload))
            .await
            .map_err(|e| anyhow!("cannot send task {}: every client is gone", e.0.seq))?;
        seq += 1;
        stats.sent.store(seq, Ordering::Relaxed);
    }
    Ok(seq)
}

/// One client: dial, then echo every task as its result until the server
/// closes the task channel. Returns how many tasks it did.
async fn client(
    id: u32,
    addr: std::net::SocketAddr,
    config: Config,
    ready: tokio::sync::mpsc::Sender<anyhow::Result<()>>,
) -> anyhow::Result<u64> {
    let dialed: Result<(Sender<Task>, Receiver<Task>), _> = netchan::dial_with(addr, config).await;
    let (results, mut tasks) = match dialed {
        Ok(x) => {
            let _ = ready.send(Ok(())).await;
            x
        }
        Err(e) => {
            let e = anyhow!(e).context(format!("client {id} cannot dial {addr}"));
            let _ = ready.send(Err(anyhow!("{e:#}"))).await;
            return Err(e);
        }
    };
    drop(ready);
    let mut done = 0;
    loop {
        match tasks.recv().await {
            Ok(Some(mut task)) => {
                task.client = id;
                results
                    .send(task)
                    .await
                    .map_err(|_| anyhow!("client {id}: the server stopped taking results"))?;
                done += 1;
            }
            Ok(None) => return Ok(done),
            Err(e) => return Err(anyhow!(e).context(format!("client {id} lost its tasks"))),
        }
    }
}

/// The server's account of results: which sequence numbers came back.
#[derive(Debug)]
struct Check {
    payload: usize,
    /// One bit per sequence number seen.
    seen: Vec<u64>,
    received: u64,
    duplicated: u64,
    corrupted: u64,
    per_client: Vec<u64>,
}

#[derive(Debug)]
struct Report {
    lost: u64,
    duplicated: u64,
    corrupted: u64,
    min_share: u64,
    max_share: u64,
}

impl Check {
    fn new(clients: u32, payload: usize) -> Check {
        Check {
            payload,
            seen: Vec::new(),
            received: 0,
            duplicated: 0,
            corrupted: 0,
            per_client: vec![0; clients as usize],
        }
    }

    fn result(&mut self, t: &Task) {
        self.received += 1;
        let Some(share) = self.per_client.get_mut(t.client as usize) else {
            self.corrupted += 1;
            return;
        };
        if !t.payload_ok(self.payload) {
            self.corrupted += 1;
            return;
        }
        *share += 1;
        let (word, bit) = ((t.seq / 64) as usize, t.seq % 64);
        if word >= self.seen.len() {
            self.seen.resize((word + 1).max(self.seen.len() * 2), 0);
        }
        if self.seen[word] & (1 << bit) != 0 {
            self.duplicated += 1;
        }
        self.seen[word] |= 1 << bit;
    }

    /// Compares what came back with tasks `0..sent`.
    fn report(&self, sent: u64) -> Report {
        let unique: u64 = self.seen.iter().map(|w| u64::from(w.count_ones())).sum();
        let (full, rest) = ((sent / 64) as usize, sent % 64);
        let mut in_range: u64 = self
            .seen
            .iter()
            .take(full)
            .map(|w| u64::from(w.count_ones()))
            .sum();
        if let Some(w) = self.seen.get(full).filter(|_| rest > 0) {
            in_range += u64::from((w & ((1 << rest) - 1)).count_ones());
        }
        // A result numbered beyond what was sent is as wrong as a bad payload.
        let beyond = unique - in_range;
        Report {
            lost: sent - in_range,
            duplicated: self.duplicated,
            corrupted: self.corrupted + beyond,
            min_share: self.per_client.iter().copied().min().unwrap_or(0),
            max_share: self.per_client.iter().copied().max().unwrap_or(0),
        }
    }
}

/// Prints one line per channel name and direction, summed over the
/// exporter's sessions: values queued now, messages in the last second,
/// and the time senders spent waiting for room in it. `last` keeps the
/// previous totals.
fn channel_lines(stats: &ExporterStats, last: &mut HashMap<(String, bool), (u64, Duration)>) {
    let mut now: HashMap<(String, bool), (u64, u64, Duration)> = HashMap::new();
    for c in stats.sessions.iter().flat_map(|s| &s.channels) {
        let key = (
            c.name.clone().unwrap_or_else(|| "(private)".into()),
            c.direction == Direction::Sending,
        );
        let e = now.entry(key).or_default();
        e.0 += c.queued;
        e.1 += c.messages;
        // An exported sender's importers share one route, and each of its
        // channels reports that route's wait: take it once.
        e.2 = e.2.max(c.send_wait);
    }
    let mut keys: Vec<_> = now.keys().cloned().collect();
    keys.sort();
    for key in keys {
        let (queued, messages, wait) = now[&key];
        let (m0, w0) = last
            .insert(key.clone(), (messages, wait))
            .unwrap_or_default();
        println!(
            "      {:<24} {:<7} queued {:>7}  {:>9} msg/s  senders waited {:>6.1} ms",
            key.0,
            if key.1 { "send" } else { "receive" },
            thousands(queued),
            thousands(messages.saturating_sub(m0)),
            wait.saturating_sub(w0).as_secs_f64() * 1e3,
        );
    }
}

#[cfg(feature = "nats")]
async fn run_nats(url: &str, args: &Args) -> anyhow::Result<()> {
    match args.role.as_deref() {
        Some("server") => {
            examples::cluster_nats::server(
                url,
                args.tasks,
                args.payload,
                Duration::from_secs(args.seconds.max(1) * 30),
            )
            .await
        }
        Some("worker") => {
            let name = args
                .name
                .clone()
                .unwrap_or_else(|| format!("worker-{}", std::process::id()));
            examples::cluster_nats::worker(url, &name).await
        }
        _ => bail!("--nats needs --role server or --role worker"),
    }
}

#[cfg(not(feature = "nats"))]
async fn run_nats(_url: &str, _args: &Args) -> anyhow::Result<()> {
    bail!(
        "this build has no NATS support: run it with `cargo run -p examples --features nats --bin cluster -- --nats URL --role server|worker`"
    )
}
