//! tarpc 0.38: a `#[tarpc::service]` over its serde transport (bincode,
//! length-delimited frames) on TCP streams with TCP_NODELAY; every
//! request runs in its own task, as tarpc's examples do.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::tokio_util::codec::LengthDelimitedCodec;
use tarpc::{client, context};
use tokio::net::{TcpListener, TcpStream};

use super::{AddrTx, Env, unsupported};
use crate::harness::{Ctl, Ctx, R, big_payload, forever, nodelay};
use crate::spec::{CONNS_8, Contender, IN_FLIGHT_8, IN_FLIGHT_64, MIB, Workload};

#[allow(unreachable_pub, missing_debug_implementations, missing_docs)]
mod api {
    use bytes::Bytes;

    #[tarpc::service]
    pub trait Bench {
        async fn small(x: u64) -> u64;
        async fn echo(b: Bytes) -> Bytes;
        /// A plain `Vec<u8>` (no `serde_bytes`), the file-share `read` shape.
        async fn echo_vec(b: Vec<u8>) -> Vec<u8>;
    }
}

use api::{Bench, BenchClient};

#[derive(Clone, Copy)]
struct Server;

impl Bench for Server {
    async fn small(self, _: context::Context, x: u64) -> u64 {
        x
    }
    async fn echo(self, _: context::Context, b: bytes::Bytes) -> bytes::Bytes {
        b
    }
    async fn echo_vec(self, _: context::Context, b: Vec<u8>) -> Vec<u8> {
        b
    }
}

fn framed(
    s: TcpStream,
) -> tarpc::tokio_util::codec::Framed<TcpStream, tarpc::tokio_util::codec::LengthDelimitedCodec> {
    LengthDelimitedCodec::builder()
        .max_frame_length(32 << 20)
        .new_framed(s)
}

fn serve(s: TcpStream) {
    let transport = tarpc::serde_transport::new(framed(s), Bincode::default());
    let requests = BaseChannel::with_defaults(transport)
        .execute(Server.serve())
        .for_each(|fut| async move {
            tokio::spawn(fut);
        });
    tokio::spawn(requests);
}

pub(crate) async fn server(env: Env, addr: AddrTx) -> R<()> {
    match env.w {
        Workload::SeqCall
        | Workload::Calls64
        | Workload::Calls8x8
        | Workload::Echo
        | Workload::EchoVec => {}
        w => return unsupported(Contender::Tarpc, w),
    }
    let l = TcpListener::bind("127.0.0.1:0").await.ctx("bind")?;
    addr.send(l.local_addr().ctx("local address")?)
        .ctx("report address")?;
    loop {
        let (s, _) = l.accept().await.ctx("accept")?;
        nodelay(&s)?;
        serve(s);
    }
}

async fn connect(addr: SocketAddr) -> R<BenchClient> {
    let s = TcpStream::connect(addr).await.ctx("connect")?;
    nodelay(&s)?;
    let transport = tarpc::serde_transport::new(framed(s), Bincode::default());
    Ok(BenchClient::new(client::Config::default(), transport).spawn())
}

async fn small_call(c: &BenchClient, i: u64) -> R<()> {
    let v = c.small(context::current(), i).await.ctx("call")?;
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
            let c = connect(addr).await?;
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
            let c = connect(addr).await?;
            small_call(&c, 0).await?;
            spawn_callers(&c, IN_FLIGHT_64, &ctl);
            ctl.ready();
        }
        Workload::Calls8x8 => {
            for _ in 0..CONNS_8 {
                let c = connect(addr).await?;
                small_call(&c, 0).await?;
                spawn_callers(&c, IN_FLIGHT_8, &ctl);
            }
            ctl.ready();
        }
        Workload::Echo => {
            let c = connect(addr).await?;
            let data = big_payload(MIB);
            ctl.ready();
            while !ctl.stopped() {
                let b = c.echo(context::current(), data.clone()).await.ctx("call")?;
                if b.len() != MIB || b[..64] != data[..64] {
                    return Err(format!("wrong echo of {} bytes", b.len()));
                }
                ctl.add_bytes(2 * MIB as u64);
            }
        }
        Workload::EchoVec => {
            let c = connect(addr).await?;
            let data = big_payload(MIB).to_vec();
            ctl.ready();
            while !ctl.stopped() {
                let b = c
                    .echo_vec(context::current(), data.clone())
                    .await
                    .ctx("call")?;
                if b.len() != MIB || b[..64] != data[..64] {
                    return Err(format!("wrong echo of {} bytes", b.len()));
                }
                ctl.add_bytes(2 * MIB as u64);
            }
        }
        w => return unsupported(Contender::Tarpc, w),
    }
    forever().await;
    Ok(())
}

pub(crate) async fn idle_server(env: Env, _n: usize, addr: AddrTx) -> R<()> {
    if env.w != Workload::IdleConn {
        return unsupported(Contender::Tarpc, env.w);
    }
    let l = TcpListener::bind("127.0.0.1:0").await.ctx("bind")?;
    addr.send(l.local_addr().ctx("local address")?)
        .ctx("report address")?;
    loop {
        let (s, _) = l.accept().await.ctx("accept")?;
        nodelay(&s)?;
        serve(s);
        env.ctl.add(1);
    }
}

pub(crate) async fn idle_client(env: Env, n: usize, addr: SocketAddr) -> R<()> {
    if env.w != Workload::IdleConn {
        return unsupported(Contender::Tarpc, env.w);
    }
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(connect(addr).await?);
        env.ctl.add(1);
    }
    env.ctl.ready();
    forever().await;
    drop(held);
    Ok(())
}
