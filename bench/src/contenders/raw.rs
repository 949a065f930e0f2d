//! The baseline: hand-written length-prefixed frames over TCP (or TLS),
//! the strongest simple thing a program could do instead of a library.
//!
//! Frames are `len: u32 LE` then `len` bytes. Pipelined and one-way
//! workloads batch many frames per write; readers parse every complete
//! frame of a read before reading again; large payloads are read into
//! one reused buffer and never copied.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{AddrTx, Env, unsupported};
use crate::harness::{
    BlockCheck, Ctl, Ctx, R, SeqCheck, big_payload, block_buffer, forever, nodelay, stamp_block,
};
use crate::spec::{
    CONNS_8, Contender, HOL_BIG, HOL_INTERVAL_US, IN_FLIGHT_8, IN_FLIGHT_64, MIB, Workload,
};
use crate::tlsmat::RawTls;

/// A byte stream: plain TCP or TLS over TCP.
trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}
type Io = Box<dyn Duplex>;

/// Tags the two connections of the head-of-line workload.
const TAG_SMALL: u8 = b'S';
const TAG_BIG: u8 = b'B';
/// Bytes of a one-way batch.
const BATCH: usize = 64 << 10;
/// Bytes of a small call frame's body: id and value.
const CALL_BODY: usize = 16;
/// Largest piece the head-of-line baseline reads or writes before it lets
/// the other connection's task run: netchan's chunk size.
const FAIR_PIECE: usize = 64 << 10;

async fn accept_io(env: &Env, s: TcpStream) -> R<Io> {
    nodelay(&s)?;
    Ok(match &env.raw_tls {
        Some(t) => Box::new(t.acceptor.accept(s).await.ctx("TLS accept")?),
        None => Box::new(s),
    })
}

async fn connect_io(env: &Env, addr: SocketAddr) -> R<Io> {
    let s = TcpStream::connect(addr).await.ctx("connect")?;
    nodelay(&s)?;
    Ok(match &env.raw_tls {
        Some(t) => Box::new(
            t.connector
                .connect(RawTls::server_name(), s)
                .await
                .ctx("TLS connect")?,
        ),
        None => Box::new(s),
    })
}

pub(crate) async fn server(env: Env, addr: AddrTx) -> R<()> {
    let l = TcpListener::bind("127.0.0.1:0").await.ctx("bind")?;
    addr.send(l.local_addr().ctx("local address")?)
        .ctx("report address")?;
    loop {
        let (s, _) = l.accept().await.ctx("accept")?;
        let env = env.clone();
        tokio::spawn(async move {
            let ctl = env.ctl.clone();
            let r = async {
                let io = accept_io(&env, s).await?;
                match env.w {
                    Workload::SeqCall
                    | Workload::Calls64
                    | Workload::Calls8x8
                    | Workload::Echo
                    | Workload::EchoVec
                    | Workload::Rendezvous => serve_echo(io).await,
                    Workload::OneWay32 | Workload::OneWaySink => sink_small(io, &ctl).await,
                    Workload::Bulk | Workload::BulkVec => sink_big(io, &ctl, false).await,
                    Workload::Pipe => sink_pipe(io, &ctl).await,
                    Workload::HeadOfLine => {
                        let mut io = io;
                        match io.read_u8().await.ctx("read tag")? {
                            TAG_BIG => sink_big(io, &ctl, true).await,
                            TAG_SMALL => sink_stamps(io, &ctl).await,
                            t => Err(format!("unknown tag {t}")),
                        }
                    }
                    w => unsupported(Contender::Raw, w),
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
}

/// Lengths of the complete frames at the front of `buf`, in bytes.
fn complete_frames(buf: &[u8]) -> usize {
    let mut end = 0;
    while buf.len() - end >= 4 {
        let len = u32::from_le_bytes([buf[end], buf[end + 1], buf[end + 2], buf[end + 3]]) as usize;
        if buf.len() - end - 4 < len {
            break;
        }
        end += 4 + len;
    }
    end
}

/// Bytes still missing for the first incomplete frame in `buf`.
fn missing(buf: &[u8]) -> usize {
    if buf.len() < 4 {
        return 4 - buf.len();
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    (4 + len).saturating_sub(buf.len())
}

/// Echoes every frame: all complete frames of a read go back in one
/// write, straight from the read buffer.
async fn serve_echo(mut io: Io) -> R<()> {
    let mut buf = BytesMut::with_capacity(256 << 10);
    loop {
        let end = complete_frames(&buf);
        if end > 0 {
            io.write_all(&buf[..end]).await.ctx("write")?;
            io.flush().await.ctx("flush")?;
            buf.advance(end);
        }
        buf.reserve(missing(&buf).max(64 << 10));
        if io.read_buf(&mut buf).await.ctx("read")? == 0 {
            return Ok(());
        }
    }
}

async fn sink_small(mut io: Io, ctl: &Ctl) -> R<()> {
    let mut buf = BytesMut::with_capacity(4 * BATCH);
    let mut seq = SeqCheck::default();
    loop {
        buf.reserve(BATCH);
        if io.read_buf(&mut buf).await.ctx("read")? == 0 {
            return Ok(());
        }
        let mut n = 0;
        while buf.len() >= 36 {
            let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
            if len != 32 {
                return Err(format!("frame of {len} bytes where 32 were sent"));
            }
            let mut s = [0; 8];
            s.copy_from_slice(&buf[4..12]);
            seq.check("one-way frames", u64::from_le_bytes(s))?;
            buf.advance(36);
            n += 1;
        }
        ctl.add(n);
    }
}

/// Reads frames of `seq: u64` + payload into one reused buffer. With
/// `fair`, reads at most [`FAIR_PIECE`] bytes at a time and yields to the
/// runtime after each, as a multiplexer's reader would between chunks.
async fn sink_big(mut io: Io, ctl: &Ctl, fair: bool) -> R<()> {
    let piece = if fair { FAIR_PIECE } else { MIB };
    let mut buf = vec![0u8; MIB];
    let mut seq = SeqCheck::default();
    loop {
        let len = match io.read_u32_le().await {
            Ok(l) => l as usize,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(format!("read: {e}")),
        };
        seq.check("bulk frames", io.read_u64_le().await.ctx("read")?)?;
        let mut left = len - 8;
        while left > 0 {
            let n = io
                .read(&mut buf[..left.min(piece)])
                .await
                .ctx("read payload")?;
            if n == 0 {
                return Err("stream ended inside a frame".into());
            }
            left -= n;
            ctl.add_bytes(n as u64);
            if fair {
                tokio::task::yield_now().await;
            }
        }
    }
}

async fn sink_pipe(mut io: Io, ctl: &Ctl) -> R<()> {
    let mut buf = vec![0u8; MIB];
    let mut check = BlockCheck::default();
    loop {
        let n = io.read(&mut buf).await.ctx("read")?;
        if n == 0 {
            return Ok(());
        }
        check.feed(&buf[..n])?;
        ctl.add_bytes(n as u64);
    }
}

async fn sink_stamps(mut io: Io, ctl: &Ctl) -> R<()> {
    let mut seq = SeqCheck::default();
    loop {
        let s = match io.read_u64_le().await {
            Ok(v) => v,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(format!("read: {e}")),
        };
        let sent = io.read_u64_le().await.ctx("read")?;
        seq.check("small frames", s)?;
        if ctl.measuring() {
            ctl.record_ns(ctl.now_ns().saturating_sub(sent));
        }
    }
}

pub(crate) async fn client(env: Env, addr: SocketAddr) -> R<()> {
    let ctl = env.ctl.clone();
    match env.w {
        Workload::SeqCall => {
            let io = connect_io(&env, addr).await?;
            calls(io, 1, &ctl, true).await?;
        }
        Workload::Calls64 => {
            let io = connect_io(&env, addr).await?;
            calls(io, IN_FLIGHT_64, &ctl, false).await?;
        }
        Workload::Calls8x8 => {
            let mut ios = Vec::new();
            for _ in 0..CONNS_8 {
                ios.push(connect_io(&env, addr).await?);
            }
            let mut tasks = Vec::new();
            for io in ios {
                let ctl = ctl.clone();
                tasks.push(tokio::spawn(async move {
                    if let Err(e) = calls(io, IN_FLIGHT_8, &ctl, false).await {
                        ctl.fail(format!("client: {e}"));
                    }
                }));
            }
            // `calls` signals ready once per connection; one is enough.
            for t in tasks {
                let _ = t.await;
            }
        }
        Workload::Echo | Workload::EchoVec => {
            let io = connect_io(&env, addr).await?;
            echo_big(io, &ctl).await?;
        }
        Workload::OneWay32 | Workload::OneWaySink => {
            let mut io = connect_io(&env, addr).await?;
            let per = BATCH / 36;
            let mut buf = Vec::with_capacity(per * 36);
            for _ in 0..per {
                buf.put_u32_le(32);
                buf.put_slice(&[0x5a; 32]);
            }
            ctl.ready();
            let mut seq = 0u64;
            while !ctl.stopped() {
                for i in 0..per {
                    let at = i * 36 + 4;
                    buf[at..at + 8].copy_from_slice(&seq.to_le_bytes());
                    seq += 1;
                }
                io.write_all(&buf).await.ctx("write")?;
                io.flush().await.ctx("flush")?;
            }
        }
        Workload::Bulk | Workload::BulkVec => {
            let mut io = connect_io(&env, addr).await?;
            let data = big_payload(MIB);
            ctl.ready();
            let mut seq = 0u64;
            while !ctl.stopped() {
                write_big(&mut io, seq, &data, false).await?;
                seq += 1;
            }
        }
        Workload::Pipe => {
            let mut io = connect_io(&env, addr).await?;
            let mut buf = block_buffer();
            ctl.ready();
            let mut n = 0;
            while !ctl.stopped() {
                stamp_block(&mut buf, n);
                io.write_all(&buf).await.ctx("write")?;
                io.flush().await.ctx("flush")?;
                n += 1;
            }
            forever().await;
        }
        Workload::Rendezvous => {
            // A send completes when the receiver took the value: a frame
            // and its acknowledgement, which the echo server gives.
            let io = connect_io(&env, addr).await?;
            calls(io, 1, &ctl, false).await?;
        }
        Workload::HeadOfLine => {
            let mut big = connect_io(&env, addr).await?;
            let mut small = connect_io(&env, addr).await?;
            big.write_u8(TAG_BIG).await.ctx("write")?;
            small.write_u8(TAG_SMALL).await.ctx("write")?;
            let data = big_payload(HOL_BIG);
            let ctl2 = ctl.clone();
            tokio::spawn(async move {
                let mut seq = 0;
                while !ctl2.stopped() {
                    if let Err(e) = write_big(&mut big, seq, &data, true).await {
                        return ctl2.fail(format!("client: {e}"));
                    }
                    seq += 1;
                }
                forever().await;
            });
            ctl.ready();
            let mut tick = tokio::time::interval(Duration::from_micros(HOL_INTERVAL_US));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut seq = 0u64;
            while !ctl.stopped() {
                tick.tick().await;
                let mut m = [0u8; 16];
                m[..8].copy_from_slice(&seq.to_le_bytes());
                m[8..].copy_from_slice(&ctl.now_ns().to_le_bytes());
                small.write_all(&m).await.ctx("write")?;
                small.flush().await.ctx("flush")?;
                seq += 1;
            }
            forever().await;
        }
        w => return unsupported(Contender::Raw, w),
    }
    Ok(())
}

/// Writes one `seq` + payload frame; with `fair`, in pieces of
/// [`FAIR_PIECE`] with a yield after each.
async fn write_big(io: &mut Io, seq: u64, data: &Bytes, fair: bool) -> R<()> {
    let mut h = [0u8; 12];
    h[..4].copy_from_slice(&((8 + data.len()) as u32).to_le_bytes());
    h[4..].copy_from_slice(&seq.to_le_bytes());
    io.write_all(&h).await.ctx("write")?;
    if fair {
        for piece in data.chunks(FAIR_PIECE) {
            io.write_all(piece).await.ctx("write")?;
            tokio::task::yield_now().await;
        }
    } else {
        io.write_all(data).await.ctx("write")?;
    }
    io.flush().await.ctx("flush")
}

/// Small calls with `window` in flight: new requests for all answers of
/// a read go out in one write. With `latency`, window 1 and every call
/// is timed.
async fn calls(mut io: Io, window: usize, ctl: &Arc<Ctl>, latency: bool) -> R<()> {
    let mut out = BytesMut::with_capacity(window * (4 + CALL_BODY));
    let mut inb = BytesMut::with_capacity(64 << 10);
    let mut next_id = 0u64;
    let mut expect = SeqCheck::default();
    let push = |out: &mut BytesMut, id: u64| {
        out.put_u32_le(CALL_BODY as u32);
        out.put_u64_le(id);
        out.put_u64_le(id ^ 0xabcd);
    };
    for _ in 0..window {
        push(&mut out, next_id);
        next_id += 1;
    }
    let mut ready = false;
    let mut t = Instant::now();
    loop {
        if !out.is_empty() {
            t = Instant::now();
            io.write_all(&out).await.ctx("write")?;
            io.flush().await.ctx("flush")?;
            out.clear();
        }
        inb.reserve(64 << 10);
        if io.read_buf(&mut inb).await.ctx("read")? == 0 {
            return Err("server closed the connection".into());
        }
        let mut n = 0;
        while inb.len() >= 4 + CALL_BODY {
            let len = inb.get_u32_le();
            if len as usize != CALL_BODY {
                return Err(format!("reply of {len} bytes"));
            }
            let id = inb.get_u64_le();
            let v = inb.get_u64_le();
            expect.check("replies", id)?;
            if v != id ^ 0xabcd {
                return Err(format!("reply {id} carries the wrong value"));
            }
            if latency {
                ctl.record(t.elapsed());
            }
            n += 1;
            if !ctl.stopped() {
                push(&mut out, next_id);
                next_id += 1;
            }
        }
        ctl.add(n);
        if !ready && n > 0 {
            ready = true;
            ctl.ready();
        }
        if ctl.stopped() {
            forever().await;
        }
    }
}

async fn echo_big(mut io: Io, ctl: &Ctl) -> R<()> {
    let data = big_payload(MIB);
    let mut back = vec![0u8; MIB];
    let mut first = true;
    while !ctl.stopped() {
        io.write_all(&(MIB as u32).to_le_bytes())
            .await
            .ctx("write")?;
        io.write_all(&data).await.ctx("write")?;
        io.flush().await.ctx("flush")?;
        let len = io.read_u32_le().await.ctx("read")? as usize;
        if len != MIB {
            return Err(format!("echo of {len} bytes"));
        }
        io.read_exact(&mut back).await.ctx("read")?;
        if back[..64] != data[..64] {
            return Err("echo differs from the request".into());
        }
        ctl.add_bytes(2 * MIB as u64);
        if first {
            first = false;
            ctl.ready();
        }
    }
    forever().await;
    Ok(())
}

pub(crate) async fn idle_server(env: Env, _n: usize, addr: AddrTx) -> R<()> {
    let l = TcpListener::bind("127.0.0.1:0").await.ctx("bind")?;
    addr.send(l.local_addr().ctx("local address")?)
        .ctx("report address")?;
    loop {
        let (s, _) = l.accept().await.ctx("accept")?;
        nodelay(&s)?;
        tokio::spawn(hold(s));
        env.ctl.add(1);
    }
}

/// What a minimal server or client does with an idle connection: one
/// task awaiting a read.
async fn hold(mut s: TcpStream) {
    let mut b = [0u8; 64];
    let _ = s.read(&mut b).await;
    forever().await;
}

pub(crate) async fn idle_client(env: Env, n: usize, addr: SocketAddr) -> R<()> {
    for _ in 0..n {
        let s = TcpStream::connect(addr).await.ctx("connect")?;
        nodelay(&s)?;
        tokio::spawn(hold(s));
        env.ctl.add(1);
    }
    env.ctl.ready();
    Ok(())
}
