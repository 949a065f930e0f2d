//! remoc 0.20: one `Connect::io` per TCP connection (TCP_NODELAY, default
//! `Cfg`, default Postbag codec). Calls go through an `#[rtc::remote]`
//! trait served concurrently (`ServerShared`); channels are `rch::mpsc`
//! channels, the byte pipe is `rch::bin`. The server hands each channel
//! to the client while connecting (`provide` / `consume`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use remoc::codec::Default as Codec;
use remoc::prelude::*;
use tokio::net::{TcpListener, TcpStream};

use super::{AddrTx, Env, unsupported};
use crate::harness::{Ctl, Ctx, R, SeqCheck, big_payload, forever, nodelay};
use crate::msg::{Big, BigVec, Small32, Stamp};
use crate::spec::{
    CONNS_8, Contender, HOL_BIG, HOL_INTERVAL_US, IN_FLIGHT_8, IN_FLIGHT_64, MIB, ONEWAY_CAPACITY,
    Workload,
};

#[allow(unreachable_pub, missing_debug_implementations, missing_docs)]
mod api {
    use bytes::Bytes;
    use remoc::rtc::{self, CallError};

    #[rtc::remote]
    pub trait Bench {
        async fn small(&self, x: u64) -> Result<u64, CallError>;
        async fn echo(&self, b: Bytes) -> Result<Bytes, CallError>;
        /// A plain `Vec<u8>` (no `serde_bytes`), the file-share `read` shape.
        async fn echo_vec(&self, b: Vec<u8>) -> Result<Vec<u8>, CallError>;
    }
}

use api::{Bench, BenchClient, BenchServerShared};

struct Obj;

impl Bench for Obj {
    async fn small(&self, x: u64) -> Result<u64, rtc::CallError> {
        Ok(x)
    }
    async fn echo(&self, b: Bytes) -> Result<Bytes, rtc::CallError> {
        Ok(b)
    }
    async fn echo_vec(&self, b: Vec<u8>) -> Result<Vec<u8>, rtc::CallError> {
        Ok(b)
    }
}

/// The one-way channel with `ONEWAY_CAPACITY` local slots, as netchan's.
type OneWayTx = rch::mpsc::Sender<Small32, Codec, ONEWAY_CAPACITY>;
type BigTx = rch::mpsc::Sender<Big, Codec>;
type BigVecTx = rch::mpsc::Sender<BigVec, Codec>;
type StampTx = rch::mpsc::Sender<Stamp, Codec>;
type ChanTx = rch::mpsc::Sender<u64, Codec>;
/// Item limit of the head-of-line big channel: room for a 16 MiB
/// message and its encoding (remoc's default is exactly 16 MiB).
const HOL_MAX_ITEM: usize = 32 << 20;

fn tcp_io(
    s: TcpStream,
) -> R<(
    tokio::net::tcp::OwnedReadHalf,
    tokio::net::tcp::OwnedWriteHalf,
)> {
    nodelay(&s)?;
    Ok(s.into_split())
}

/// remoc's default `Cfg`, with room for `ports` channels (the default
/// allows 8192 open ports per connection).
fn cfg(ports: usize) -> remoc::Cfg {
    let mut c = remoc::Cfg::default();
    c.max_ports = c.max_ports.max(u32::try_from(ports).unwrap_or(u32::MAX));
    c
}

async fn provide<T: RemoteSend>(s: TcpStream, v: T) -> R<()> {
    provide_with(s, v, remoc::Cfg::default()).await
}

async fn provide_with<T: RemoteSend>(s: TcpStream, v: T, cfg: remoc::Cfg) -> R<()> {
    let (r, w) = tcp_io(s)?;
    remoc::Connect::io(cfg, r, w)
        .provide(v)
        .await
        .ctx("remoc connect")
}

async fn consume<T: RemoteSend>(addr: SocketAddr) -> R<T> {
    consume_with(addr, remoc::Cfg::default()).await
}

async fn consume_with<T: RemoteSend>(addr: SocketAddr, cfg: remoc::Cfg) -> R<T> {
    let s = TcpStream::connect(addr).await.ctx("connect")?;
    let (r, w) = tcp_io(s)?;
    remoc::Connect::io(cfg, r, w)
        .consume()
        .await
        .ctx("remoc connect")
}

fn recv_end<T>(ctl: &Ctl, what: &str, r: Result<Option<T>, impl std::fmt::Display>) -> Option<T> {
    match r {
        Ok(Some(v)) => Some(v),
        Ok(None) => {
            if !ctl.stopped() {
                ctl.fail(format!("server: {what} ended early"));
            }
            None
        }
        Err(e) => {
            if !ctl.stopped() {
                ctl.fail(format!("server: {what} recv failed: {e}"));
            }
            None
        }
    }
}

pub(crate) async fn server(env: Env, addr: AddrTx) -> R<()> {
    let l = TcpListener::bind("127.0.0.1:0").await.ctx("bind")?;
    addr.send(l.local_addr().ctx("local address")?)
        .ctx("report address")?;
    loop {
        let (s, _) = l.accept().await.ctx("accept")?;
        let ctl = env.ctl.clone();
        match env.w {
            Workload::SeqCall
            | Workload::Calls64
            | Workload::Calls8x8
            | Workload::Echo
            | Workload::EchoVec => {
                let (mut server, client) = BenchServerShared::<_, Codec>::new(Arc::new(Obj));
                server.set_parallelism(2 * IN_FLIGHT_64);
                provide(s, client).await?;
                tokio::spawn(async move {
                    if let Err(e) = server.serve().await
                        && !ctl.stopped()
                    {
                        ctl.fail(format!("server: serve: {e}"));
                    }
                });
            }
            Workload::OneWay32 | Workload::OneWaySink => {
                let (tx, mut rx) = rch::mpsc::channel::<Small32, Codec>();
                let tx: OneWayTx = tx.set_buffer();
                provide(s, tx).await?;
                tokio::spawn(async move {
                    let mut seq = SeqCheck::default();
                    while let Some(m) = recv_end(&ctl, "one-way channel", rx.recv().await) {
                        if let Err(e) = seq.check("one-way channel", m.seq()) {
                            return ctl.fail(e);
                        }
                        ctl.add(1);
                    }
                });
            }
            Workload::Bulk => {
                let (tx, rx) = rch::mpsc::channel::<Big, Codec>();
                provide::<BigTx>(s, tx).await?;
                tokio::spawn(count_big(rx, ctl));
            }
            Workload::BulkVec => {
                let (tx, mut rx) = rch::mpsc::channel::<BigVec, Codec>();
                provide::<BigVecTx>(s, tx).await?;
                tokio::spawn(async move {
                    let mut seq = SeqCheck::default();
                    while let Some(m) = recv_end(&ctl, "bulk channel", rx.recv().await) {
                        if let Err(e) = seq.check("bulk channel", m.seq) {
                            return ctl.fail(e);
                        }
                        ctl.add_bytes(m.data.len() as u64);
                    }
                });
            }
            Workload::HeadOfLine => {
                let (stx, mut srx) = rch::mpsc::channel::<Stamp, Codec>();
                let (mut btx, brx) = rch::mpsc::channel::<Big, Codec>();
                btx.set_max_item_size(HOL_MAX_ITEM);
                let brx = brx.set_max_item_size::<HOL_MAX_ITEM>();
                provide::<(StampTx, BigTx)>(s, (stx, btx)).await?;
                tokio::spawn(count_big(brx, ctl.clone()));
                tokio::spawn(async move {
                    let mut seq = SeqCheck::default();
                    while let Some(m) = recv_end(&ctl, "small channel", srx.recv().await) {
                        if let Err(e) = seq.check("small channel", m.seq) {
                            return ctl.fail(e);
                        }
                        if ctl.measuring() {
                            ctl.record_ns(ctl.now_ns().saturating_sub(m.sent_ns));
                        }
                    }
                });
            }
            Workload::Pipe => {
                let (btx, mut brx) = rch::bin::channel();
                provide(s, btx).await?;
                tokio::spawn(async move {
                    let r = async {
                        let rx = brx.get().await.ctx("open the byte channel")?;
                        rx.set_max_data_size(2 * MIB);
                        let mut seq = SeqCheck::default();
                        loop {
                            let Some(mut data) = rx.recv().await.ctx("recv")? else {
                                return Ok(());
                            };
                            let n = data.remaining();
                            if n != MIB {
                                return Err(format!("byte message of {n} bytes"));
                            }
                            seq.check("byte channel", data.get_u64_le())?;
                            ctl.add_bytes(n as u64);
                        }
                    }
                    .await;
                    if let Err(e) = r
                        && !ctl.stopped()
                    {
                        ctl.fail(format!("server: {e}"));
                    }
                });
            }
            w => return unsupported(Contender::Remoc, w),
        }
    }
}

async fn count_big<const B: usize, const M: usize>(
    mut rx: rch::mpsc::Receiver<Big, Codec, B, M>,
    ctl: Arc<Ctl>,
) {
    let mut seq = SeqCheck::default();
    while let Some(m) = recv_end(&ctl, "bulk channel", rx.recv().await) {
        if let Err(e) = seq.check("bulk channel", m.seq) {
            return ctl.fail(e);
        }
        ctl.add_bytes(m.data.len() as u64);
    }
}

async fn small_call(c: &BenchClient, i: u64) -> R<()> {
    let v = c.small(i).await.ctx("call")?;
    if v != i {
        return Err(format!("call {i} answered {v}"));
    }
    Ok(())
}

fn spawn_callers(c: &BenchClient, n: usize, ctl: &Arc<Ctl>) {
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
}

pub(crate) async fn client(env: Env, addr: SocketAddr) -> R<()> {
    let ctl = env.ctl.clone();
    match env.w {
        Workload::SeqCall => {
            let c: BenchClient = consume(addr).await?;
            small_call(&c, 0).await?;
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
            let c: BenchClient = consume(addr).await?;
            small_call(&c, 0).await?;
            spawn_callers(&c, IN_FLIGHT_64, &ctl);
            ctl.ready();
        }
        Workload::Calls8x8 => {
            for _ in 0..CONNS_8 {
                let c: BenchClient = consume(addr).await?;
                small_call(&c, 0).await?;
                spawn_callers(&c, IN_FLIGHT_8, &ctl);
            }
            ctl.ready();
        }
        Workload::Echo => {
            let c: BenchClient = consume(addr).await?;
            let data = big_payload(MIB);
            ctl.ready();
            while !ctl.stopped() {
                let b = c.echo(data.clone()).await.ctx("call")?;
                if b.len() != MIB || b[..64] != data[..64] {
                    return Err(format!("wrong echo of {} bytes", b.len()));
                }
                ctl.add_bytes(2 * MIB as u64);
            }
        }
        Workload::EchoVec => {
            let c: BenchClient = consume(addr).await?;
            let data = big_payload(MIB).to_vec();
            ctl.ready();
            while !ctl.stopped() {
                let b = c.echo_vec(data.clone()).await.ctx("call")?;
                if b.len() != MIB || b[..64] != data[..64] {
                    return Err(format!("wrong echo of {} bytes", b.len()));
                }
                ctl.add_bytes(2 * MIB as u64);
            }
        }
        Workload::OneWaySink => {
            use futures::{SinkExt, StreamExt};
            let tx: OneWayTx = consume(addr).await?;
            let mut sink = rch::mpsc::SenderSink::new(tx);
            ctl.ready();
            // One `send_all` for the whole run, as netchan's Sink row.
            let run = ctl.clone();
            let mut values = futures::stream::iter(0u64..)
                .take_while(move |_| std::future::ready(!run.stopped()))
                .map(|seq| Ok(Small32::new(seq)));
            sink.send_all(&mut values)
                .await
                .map_err(|e| format!("send_all: {e}"))?;
        }
        Workload::OneWay32 => {
            let tx: OneWayTx = consume(addr).await?;
            ctl.ready();
            let mut seq = 0;
            while !ctl.stopped() {
                if let Err(e) = tx.send(Small32::new(seq)).await {
                    return Err(format!("send: {e}"));
                }
                seq += 1;
            }
        }
        Workload::Bulk => {
            let tx: BigTx = consume(addr).await?;
            let data = big_payload(MIB);
            ctl.ready();
            let mut seq = 0;
            while !ctl.stopped() {
                let m = Big {
                    seq,
                    data: data.clone(),
                };
                if let Err(e) = tx.send(m).await {
                    return Err(format!("send: {e}"));
                }
                seq += 1;
            }
        }
        Workload::BulkVec => {
            let tx: BigVecTx = consume(addr).await?;
            let data = big_payload(MIB).to_vec();
            ctl.ready();
            let mut seq = 0;
            while !ctl.stopped() {
                let m = BigVec {
                    seq,
                    data: data.clone(),
                };
                if let Err(e) = tx.send(m).await {
                    return Err(format!("send: {e}"));
                }
                seq += 1;
            }
        }
        Workload::HeadOfLine => {
            let (small, mut big): (StampTx, BigTx) = consume(addr).await?;
            big.set_max_item_size(HOL_MAX_ITEM);
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
                        return ctl2.fail(format!("client: big send: {e}"));
                    }
                    seq += 1;
                }
                forever().await;
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
                if let Err(e) = small.send(m).await {
                    return Err(format!("small send: {e}"));
                }
                seq += 1;
            }
            forever().await;
        }
        Workload::Pipe => {
            let mut btx: rch::bin::Sender = consume(addr).await?;
            let tx = btx.get().await.ctx("open the byte channel")?;
            let filler = big_payload(MIB - 8);
            ctl.ready();
            let mut n = 0u64;
            while !ctl.stopped() {
                // The index and the shared filler, as one message
                // without copying the filler.
                tx.send_chunks()
                    .send(Bytes::copy_from_slice(&n.to_le_bytes()))
                    .await
                    .ctx("send")?
                    .send_final(filler.clone())
                    .await
                    .ctx("send")?;
                n += 1;
            }
            forever().await;
        }
        w => return unsupported(Contender::Remoc, w),
    }
    forever().await;
    Ok(())
}

pub(crate) async fn idle_server(env: Env, n: usize, addr: AddrTx) -> R<()> {
    let l = TcpListener::bind("127.0.0.1:0").await.ctx("bind")?;
    addr.send(l.local_addr().ctx("local address")?)
        .ctx("report address")?;
    match env.w {
        Workload::IdleConn => loop {
            let (s, _) = l.accept().await.ctx("accept")?;
            let (r, w) = tcp_io(s)?;
            let (conn, tx, rx): (_, rch::base::Sender<()>, rch::base::Receiver<()>) =
                remoc::Connect::io(remoc::Cfg::default(), r, w)
                    .await
                    .ctx("remoc connect")?;
            tokio::spawn(conn);
            tokio::spawn(async move {
                let _held = (tx, rx);
                forever().await;
            });
            env.ctl.add(1);
        },
        Workload::IdleChan => {
            let (s, _) = l.accept().await.ctx("accept")?;
            let (reg_tx, mut reg_rx) = rch::mpsc::channel::<ChanTx, Codec>();
            provide_with(s, reg_tx, cfg(n + 1024)).await?;
            let mut held = Vec::new();
            while let Some(tx) = reg_rx.recv().await.ctx("recv")? {
                held.push(tx);
                env.ctl.add(1);
            }
            forever().await;
            Ok(())
        }
        w => unsupported(Contender::Remoc, w),
    }
}

pub(crate) async fn idle_client(env: Env, n: usize, addr: SocketAddr) -> R<()> {
    match env.w {
        Workload::IdleConn => {
            let mut held = Vec::with_capacity(n);
            for _ in 0..n {
                let s = TcpStream::connect(addr).await.ctx("connect")?;
                let (r, w) = tcp_io(s)?;
                let (conn, tx, rx): (_, rch::base::Sender<()>, rch::base::Receiver<()>) =
                    remoc::Connect::io(remoc::Cfg::default(), r, w)
                        .await
                        .ctx("remoc connect")?;
                tokio::spawn(conn);
                held.push((tx, rx));
                env.ctl.add(1);
            }
            env.ctl.ready();
            forever().await;
        }
        Workload::IdleChan => {
            let reg: rch::mpsc::Sender<ChanTx, Codec> = consume_with(addr, cfg(n + 1024)).await?;
            let mut held = Vec::with_capacity(n);
            for _ in 0..n {
                let (tx, rx) = rch::mpsc::channel::<u64, Codec>();
                let sending = reg
                    .send(tx)
                    .await
                    .map_err(|e| format!("send a channel: {e}"))?;
                sending.await.map_err(|e| format!("send a channel: {e}"))?;
                held.push(rx);
                env.ctl.add(1);
            }
            env.ctl.ready();
            forever().await;
        }
        w => return unsupported(Contender::Remoc, w),
    }
    Ok(())
}
