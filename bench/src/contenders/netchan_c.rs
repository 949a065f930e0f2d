//! netchan: an `Exporter` on the server side, `Session`s on the client
//! side; RPC through a hand-written `Service` (the shape the
//! `#[netchan::service]` macro generates).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netchan::__private::{BoxFuture, Client, Service};
use netchan::{Config, Exporter, Pipe, Receiver, Session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{AddrTx, Env, unsupported};
use crate::harness::{
    BlockCheck, Ctl, Ctx, R, SeqCheck, big_payload, block_buffer, forever, stamp_block,
};
use crate::msg::{Big, BigVec, Req, Resp, Small32, Stamp};
use crate::spec::{
    BULK_CAPACITY, CONNS_8, CUT_EVERY_MS, Contender, HOL_BIG, HOL_INTERVAL_US, IN_FLIGHT_8,
    IN_FLIGHT_64, MIB, ONEWAY_CAPACITY, Workload,
};

/// The live connections of a cutting relay.
type Live = Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>;

/// A relay on 127.0.0.1 to `upstream` that accepts every connection (a
/// resuming session redials through it); aborting the handles in its
/// `Live` cuts the connections live at that moment.
async fn cutting_relay(upstream: SocketAddr) -> std::io::Result<(SocketAddr, Live)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let live: Live = Arc::default();
    let l2 = live.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let task = tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
            l2.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(task.abort_handle());
        }
    });
    Ok((addr, live))
}

/// The echo service, written by hand as generated code would be.
#[derive(Debug, Clone, Copy)]
struct EchoService;

const SERVICE: &str = "bench.Echo";

impl Service for EchoService {
    type Request = Req;
    type Response = Resp;
    const NAME: &'static str = SERVICE;
    fn name(&self) -> &str {
        SERVICE
    }
    fn call(&self, request: Req) -> BoxFuture<Resp> {
        Box::pin(async move {
            match request {
                Req::Small(v) => Resp::Small(v),
                Req::Echo(b) => Resp::Echo(b),
                Req::EchoVec(v) => Resp::EchoVec(v),
            }
        })
    }
}

type EchoClient = Client<Req, Resp>;

fn server_config(env: &Env) -> Config {
    let cfg = Config::default();
    match &env.netchan_tls {
        Some(t) => cfg.tls_server(t.server.clone()),
        None => cfg,
    }
}

/// Set by `--stats-every-ms`: both sides read their stats this often.
pub(crate) const STATS_EVERY_ENV: &str = "NETCHAN_BENCH_STATS_EVERY_MS";

/// How often to read stats during a run, if at all.
fn stats_every() -> Option<std::time::Duration> {
    let ms: u64 = std::env::var(STATS_EVERY_ENV).ok()?.parse().ok()?;
    Some(std::time::Duration::from_millis(ms.max(1)))
}

/// Reads `read()` every `every` until the run stops: what a stats
/// reader costs the workload.
fn spawn_stats_reader<S: Send + 'static>(ctl: Arc<Ctl>, read: impl Fn() -> S + Send + 'static) {
    let Some(every) = stats_every() else {
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        while !ctl.stopped() {
            tick.tick().await;
            std::hint::black_box(read());
        }
    });
}

async fn connect(env: &Env, addr: SocketAddr, cfg: Config) -> R<Session> {
    let cfg = match &env.netchan_tls {
        Some(t) => cfg.tls_client(t.client.clone()),
        None => cfg,
    };
    env.ctl.stage("Session::connect");
    let s = Session::connect_with(addr, cfg).await.ctx("connect")?;
    let reader = s.clone();
    spawn_stats_reader(env.ctl.clone(), move || reader.stats());
    Ok(s)
}

pub(crate) async fn server(env: Env, addr: AddrTx) -> R<()> {
    let exp = Exporter::bind_with("127.0.0.1:0", server_config(&env))
        .await
        .ctx("bind")?;
    let ctl = env.ctl.clone();
    let reader = exp.clone();
    spawn_stats_reader(ctl.clone(), move || reader.stats());
    match env.w {
        Workload::SeqCall
        | Workload::Calls64
        | Workload::Calls8x8
        | Workload::Echo
        | Workload::EchoVec => {
            exp.serve(EchoService);
        }
        Workload::OneWay32 | Workload::OneWaySink | Workload::OneWayCuts => {
            let rx = exp
                .export_receiver::<Small32>("oneway", ONEWAY_CAPACITY)
                .ctx("export")?;
            if env.w == Workload::OneWaySink {
                tokio::spawn(count_small_batches(rx, ctl));
            } else {
                tokio::spawn(count_small(rx, ctl));
            }
        }
        Workload::Bulk => {
            let rx = exp
                .export_receiver::<Big>("bulk", BULK_CAPACITY)
                .ctx("export")?;
            tokio::spawn(count_big(rx, ctl));
        }
        Workload::BulkVec => {
            let rx = exp
                .export_receiver::<BigVec>("bulk", BULK_CAPACITY)
                .ctx("export")?;
            tokio::spawn(count_big_vec(rx, ctl));
        }
        Workload::Pipe => {
            let rx = exp.export_receiver::<Pipe>("pipe", 1).ctx("export")?;
            tokio::spawn(read_pipe(rx, ctl));
        }
        Workload::Rendezvous => {
            let rx = exp.export_receiver::<u64>("rendezvous", 0).ctx("export")?;
            tokio::spawn(count_rendezvous(rx, ctl));
        }
        Workload::HeadOfLine => {
            let small = exp.export_receiver::<Stamp>("small", 16).ctx("export")?;
            let big = exp.export_receiver::<Big>("big", 2).ctx("export")?;
            tokio::spawn(stamp_latency(small, ctl.clone()));
            tokio::spawn(count_big(big, ctl));
        }
        w => return unsupported(Contender::Netchan, w),
    }
    addr.send(exp.local_addr()).ctx("report address")?;
    // Keeps the exporter (and so its sessions) alive.
    forever().await;
    drop(exp);
    Ok(())
}

fn ended<T>(ctl: &Ctl, what: &str, r: Result<Option<T>, netchan::RecvError>) -> Option<T> {
    match r {
        Ok(Some(v)) => Some(v),
        Ok(None) => {
            if !ctl.stopped() {
                ctl.fail(format!("server: {what} ended early (Ok(None))"));
            }
            None
        }
        Err(e) => {
            ctl.fail(format!("server: {what} recv failed: {e}"));
            None
        }
    }
}

async fn count_small(mut rx: Receiver<Small32>, ctl: Arc<Ctl>) {
    let mut seq = SeqCheck::default();
    while let Some(m) = ended(&ctl, "one-way channel", rx.recv().await) {
        if let Err(e) = seq.check("one-way channel", m.seq()) {
            return ctl.fail(e);
        }
        ctl.add(1);
    }
}

/// The receiving end of the batching row: `recv_many`, the batching
/// API's other half, as a tokio user would pair it with a `Sink`.
async fn count_small_batches(mut rx: Receiver<Small32>, ctl: Arc<Ctl>) {
    let mut seq = SeqCheck::default();
    let mut buf = Vec::with_capacity(ONEWAY_CAPACITY);
    loop {
        buf.clear();
        let n = match rx.recv_many(&mut buf, ONEWAY_CAPACITY).await {
            Ok(n) if n > 0 => n,
            // The clean end (0) or an error: reported as `recv`'s are.
            r => {
                ended::<()>(&ctl, "one-way channel", r.map(|_| None));
                return;
            }
        };
        for m in &buf {
            if let Err(e) = seq.check("one-way channel", m.seq()) {
                return ctl.fail(e);
            }
        }
        ctl.add(n as u64);
    }
}

async fn count_big(mut rx: Receiver<Big>, ctl: Arc<Ctl>) {
    let mut seq = SeqCheck::default();
    while let Some(m) = ended(&ctl, "bulk channel", rx.recv().await) {
        if let Err(e) = seq.check("bulk channel", m.seq) {
            return ctl.fail(e);
        }
        ctl.add_bytes(m.data.len() as u64);
    }
}

async fn count_big_vec(mut rx: Receiver<BigVec>, ctl: Arc<Ctl>) {
    let mut seq = SeqCheck::default();
    while let Some(m) = ended(&ctl, "bulk channel", rx.recv().await) {
        if let Err(e) = seq.check("bulk channel", m.seq) {
            return ctl.fail(e);
        }
        ctl.add_bytes(m.data.len() as u64);
    }
}

async fn count_rendezvous(mut rx: Receiver<u64>, ctl: Arc<Ctl>) {
    let mut seq = SeqCheck::default();
    while let Some(v) = ended(&ctl, "rendezvous channel", rx.recv().await) {
        if let Err(e) = seq.check("rendezvous channel", v) {
            return ctl.fail(e);
        }
        ctl.add(1);
    }
}

async fn stamp_latency(mut rx: Receiver<Stamp>, ctl: Arc<Ctl>) {
    let mut seq = SeqCheck::default();
    while let Some(s) = ended(&ctl, "small channel", rx.recv().await) {
        if let Err(e) = seq.check("small channel", s.seq) {
            return ctl.fail(e);
        }
        if ctl.measuring() {
            ctl.record_ns(ctl.now_ns().saturating_sub(s.sent_ns));
        }
    }
}

async fn read_pipe(mut rx: Receiver<Pipe>, ctl: Arc<Ctl>) {
    let Some(mut pipe) = ended(&ctl, "pipe inbox", rx.recv().await) else {
        return;
    };
    let mut buf = vec![0u8; MIB];
    let mut check = BlockCheck::default();
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => {
                if !ctl.stopped() {
                    ctl.fail("server: pipe ended early (EOF)");
                }
                return;
            }
            Ok(n) => {
                if let Err(e) = check.feed(&buf[..n]) {
                    return ctl.fail(format!("server: pipe: {e}"));
                }
                ctl.add_bytes(n as u64);
            }
            Err(e) => return ctl.fail(format!("server: pipe read failed: {e}")),
        }
    }
}

pub(crate) async fn client(env: Env, addr: SocketAddr) -> R<()> {
    let ctl = env.ctl.clone();
    match env.w {
        Workload::SeqCall => {
            let s = connect(&env, addr, Config::default()).await?;
            let c = EchoClient::new(&s, SERVICE);
            first_call(&ctl, &c).await?;
            ctl.ready();
            let mut i = 1;
            while !ctl.stopped() {
                let t = Instant::now();
                small_call(&c, i).await?;
                ctl.record(t.elapsed());
                i += 1;
            }
        }
        Workload::Calls64 => {
            let s = connect(&env, addr, Config::default()).await?;
            spawn_callers(&s, IN_FLIGHT_64, &ctl).await?;
            ctl.ready();
        }
        Workload::Calls8x8 => {
            let mut sessions = Vec::new();
            for _ in 0..CONNS_8 {
                let s = connect(&env, addr, Config::default()).await?;
                spawn_callers(&s, IN_FLIGHT_8, &ctl).await?;
                sessions.push(s);
            }
            ctl.ready();
            forever().await;
        }
        Workload::Echo => {
            let s = connect(&env, addr, Config::default()).await?;
            let c = EchoClient::new(&s, SERVICE);
            let payload = big_payload(MIB);
            ctl.ready();
            while !ctl.stopped() {
                match c.call(Req::Echo(payload.clone())).await.ctx("call")? {
                    Resp::Echo(b) if b.len() == MIB && b[..64] == payload[..64] => {
                        ctl.add_bytes(2 * MIB as u64);
                    }
                    other => return Err(format!("wrong echo: {:?}", short(&other))),
                }
            }
        }
        Workload::EchoVec => {
            let s = connect(&env, addr, Config::default()).await?;
            let c = EchoClient::new(&s, SERVICE);
            let payload = big_payload(MIB).to_vec();
            ctl.ready();
            while !ctl.stopped() {
                match c.call(Req::EchoVec(payload.clone())).await.ctx("call")? {
                    Resp::EchoVec(b) if b.len() == MIB && b[..64] == payload[..64] => {
                        ctl.add_bytes(2 * MIB as u64);
                    }
                    other => return Err(format!("wrong echo: {:?}", short(&other))),
                }
            }
        }
        Workload::OneWaySink => {
            use futures::{SinkExt, StreamExt};
            let s = connect(&env, addr, Config::default()).await?;
            ctl.stage("import_sender");
            let mut tx = s.import_sender::<Small32>("oneway").await.ctx("import")?;
            ctl.ready();
            // One `send_all` for the whole run: values while the run lasts.
            let run = ctl.clone();
            let mut values = futures::stream::iter(0u64..)
                .take_while(move |_| std::future::ready(!run.stopped()))
                .map(|seq| Ok(Small32::new(seq)));
            tx.send_all(&mut values).await.ctx("send_all")?;
        }
        Workload::OneWay32 => {
            let s = connect(&env, addr, Config::default()).await?;
            ctl.stage("import_sender");
            let tx = s.import_sender::<Small32>("oneway").await.ctx("import")?;
            ctl.ready();
            let mut seq = 0;
            while !ctl.stopped() {
                tx.send(Small32::new(seq)).await.ctx("send")?;
                seq += 1;
            }
        }
        Workload::OneWayCuts => {
            // Through a relay that cuts the connection every
            // CUT_EVERY_MS; the session resumes each time, and the server
            // checks that every value arrives once, in order.
            let (relay, live) = cutting_relay(addr).await.ctx("relay")?;
            let policy = netchan::Reconnect::default()
                .initial_delay(Duration::from_millis(1))
                .max_delay(Duration::from_millis(50));
            let s = connect(&env, relay, Config::default().reconnect(policy)).await?;
            ctl.stage("import_sender");
            let tx = s.import_sender::<Small32>("oneway").await.ctx("import")?;
            let cutter_ctl = ctl.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(CUT_EVERY_MS));
                tick.tick().await;
                while !cutter_ctl.stopped() {
                    tick.tick().await;
                    let mut live = live.lock().unwrap_or_else(|p| p.into_inner());
                    for h in live.drain(..) {
                        h.abort();
                    }
                }
            });
            ctl.ready();
            let mut seq = 0;
            while !ctl.stopped() {
                tx.send(Small32::new(seq)).await.ctx("send")?;
                seq += 1;
            }
        }
        Workload::Bulk => {
            let s = connect(&env, addr, Config::default()).await?;
            ctl.stage("import_sender");
            let tx = s.import_sender::<Big>("bulk").await.ctx("import")?;
            let data = big_payload(MIB);
            ctl.ready();
            let mut seq = 0;
            while !ctl.stopped() {
                let m = Big {
                    seq,
                    data: data.clone(),
                };
                tx.send(m).await.ctx("send")?;
                seq += 1;
            }
        }
        Workload::BulkVec => {
            let s = connect(&env, addr, Config::default()).await?;
            ctl.stage("import_sender");
            let tx = s.import_sender::<BigVec>("bulk").await.ctx("import")?;
            let data = big_payload(MIB).to_vec();
            ctl.ready();
            let mut seq = 0;
            while !ctl.stopped() {
                let m = BigVec {
                    seq,
                    data: data.clone(),
                };
                tx.send(m).await.ctx("send")?;
                seq += 1;
            }
        }
        Workload::Pipe => {
            let s = connect(&env, addr, Config::default()).await?;
            ctl.stage("import_sender");
            let tx = s.import_sender::<Pipe>("pipe").await.ctx("import")?;
            let (mut mine, theirs) = netchan::pipe();
            ctl.stage("sending the pipe");
            tx.send(theirs).await.ctx("send the pipe")?;
            let mut buf = block_buffer();
            ctl.ready();
            let mut n = 0;
            while !ctl.stopped() {
                stamp_block(&mut buf, n);
                mine.write_all(&buf).await.ctx("pipe write")?;
                n += 1;
            }
            // Keep the pipe open: an end of stream is not a failure here.
            forever().await;
            drop(mine);
        }
        Workload::Rendezvous => {
            let s = connect(&env, addr, Config::default()).await?;
            ctl.stage("import_sender");
            let tx = s.import_sender::<u64>("rendezvous").await.ctx("import")?;
            ctl.stage("the first send on the capacity-0 channel (server already waiting in recv)");
            tx.send(0).await.ctx("send")?;
            ctl.ready();
            let mut seq = 1;
            while !ctl.stopped() {
                tx.send(seq).await.ctx("send")?;
                seq += 1;
            }
        }
        Workload::HeadOfLine => {
            let s = connect(&env, addr, Config::default()).await?;
            ctl.stage("import_sender");
            let small = s.import_sender::<Stamp>("small").await.ctx("import")?;
            let big = s.import_sender::<Big>("big").await.ctx("import")?;
            let data = big_payload(HOL_BIG);
            let ctl2 = ctl.clone();
            tokio::spawn(async move {
                let mut seq = 0;
                while !ctl2.stopped() {
                    let m = Big {
                        seq,
                        data: data.clone(),
                    };
                    if let Err(e) = big.send(m).await {
                        return ctl2.fail(format!("client: big send failed: {e}"));
                    }
                    seq += 1;
                }
            });
            ctl.ready();
            let mut tick = tokio::time::interval(Duration::from_micros(HOL_INTERVAL_US));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut seq = 0;
            while !ctl.stopped() {
                tick.tick().await;
                let m = Stamp {
                    seq,
                    sent_ns: ctl.now_ns(),
                };
                small.send(m).await.ctx("small send")?;
                seq += 1;
            }
        }
        w => return unsupported(Contender::Netchan, w),
    }
    Ok(())
}

fn short(r: &Resp) -> String {
    match r {
        Resp::Small(v) => format!("Small({v})"),
        Resp::Echo(b) => format!("Echo({} bytes)", b.len()),
        Resp::EchoVec(b) => format!("EchoVec({} bytes)", b.len()),
    }
}

async fn first_call(ctl: &Ctl, c: &EchoClient) -> R<()> {
    ctl.stage("the first call");
    small_call(c, 0).await
}

async fn small_call(c: &EchoClient, i: u64) -> R<()> {
    match c.call(Req::Small(i)).await.ctx("call")? {
        Resp::Small(v) if v == i => Ok(()),
        other => Err(format!("call {i} answered {}", short(&other))),
    }
}

/// Starts `n` tasks calling in a loop on one session, after one call
/// that sets the client up.
async fn spawn_callers(s: &Session, n: usize, ctl: &Arc<Ctl>) -> R<()> {
    let c = EchoClient::new(s, SERVICE);
    first_call(ctl, &c).await?;
    for t in 0..n {
        let c = c.clone();
        let ctl = ctl.clone();
        tokio::spawn(async move {
            let mut i = (t as u64) << 40;
            while !ctl.stopped() {
                if let Err(e) = small_call(&c, i).await {
                    return ctl.fail(format!("client: {e}"));
                }
                ctl.add(1);
                i += 1;
            }
        });
    }
    Ok(())
}

pub(crate) async fn idle_server(env: Env, n: usize, addr: AddrTx) -> R<()> {
    let cfg = Config::default().max_channels(n + 64);
    let exp = Exporter::bind_with("127.0.0.1:0", cfg).await.ctx("bind")?;
    let _chans = if env.w == Workload::IdleChan {
        Some(exp.export_sender::<u64>("chans").ctx("export")?)
    } else {
        None
    };
    addr.send(exp.local_addr()).ctx("report address")?;
    let chans = env.w == Workload::IdleChan;
    loop {
        let sessions = exp.sessions();
        let count = if chans {
            sessions.iter().map(Session::channel_count).sum()
        } else {
            sessions.len()
        };
        drop(sessions);
        env.ctl
            .count
            .store(count as u64, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn idle_client(env: Env, n: usize, addr: SocketAddr) -> R<()> {
    match env.w {
        Workload::IdleConn => {
            let mut held = Vec::with_capacity(n);
            for _ in 0..n {
                held.push(connect(&env, addr, Config::default()).await?);
                env.ctl.add(1);
            }
            env.ctl.ready();
            forever().await;
            drop(held);
        }
        Workload::IdleChan => {
            let s = connect(&env, addr, Config::default().max_channels(n + 64)).await?;
            let mut held = Vec::with_capacity(n);
            for _ in 0..n {
                held.push(s.import_receiver::<u64>("chans", 1).await.ctx("import")?);
                env.ctl.add(1);
            }
            env.ctl.ready();
            forever().await;
            drop(held);
        }
        w => return unsupported(Contender::Netchan, w),
    }
    Ok(())
}
