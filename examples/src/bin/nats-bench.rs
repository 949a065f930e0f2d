//! NATS rows beside direct ones, in one run: the same channel and service
//! code over one TCP connection on loopback and over a NATS server.
//!
//! ```text
//! nats-server -js &
//! cargo run --release -p examples --features nats --bin nats-bench -- --nats nats://127.0.0.1:4222
//! ```
//!
//! Rows: values per second one way (16-byte values; on NATS a `send`
//! completes once JetStream stored the value, so one producer has one
//! publish in flight: the 8-producer row shows the stream's throughput),
//! sequential call latency (p50 and p99), and calls per second with 64
//! calls in flight. Prints one markdown table.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use examples::{rate, thousands};
use netchan::nats::Node;
use netchan::{Exporter, Receiver, Sender, Session};

/// The service both transports serve.
#[netchan::service]
pub trait Echo {
    /// Gives `x` back.
    async fn echo(&self, x: u64) -> u64;
}

#[derive(Clone)]
struct Same;

impl Echo for Same {
    async fn echo(&self, x: u64) -> u64 {
        x
    }
}

#[derive(Debug, Parser)]
#[command(about = "netchan over NATS beside netchan over one TCP connection, in one run")]
struct Args {
    /// The NATS server (with JetStream) to measure against.
    #[arg(long, value_name = "URL")]
    nats: String,
    /// Measuring window of each row, in seconds.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    examples::init_logging();
    let args = Args::parse();
    let window = Duration::from_secs_f64(args.seconds);
    let run = std::process::id();

    let exp = Exporter::bind("127.0.0.1:0").await?;
    exp.serve(EchoServer::new(Same));
    let session = Session::connect(exp.local_addr()).await?;
    let a = Node::connect(&args.nats).await?;
    let b = Node::connect(&args.nats).await?;
    b.serve(EchoServer::new(Same));

    let mut rows: Vec<(String, String, String)> = Vec::new();

    // One way, one producer.
    let rx = exp.export_receiver::<Vec<u8>>("oneway", 256)?;
    let tx = session.import_sender::<Vec<u8>>("oneway").await?;
    let direct = oneway(vec![tx], rx, window).await;
    let name = format!("bench-{run}-1");
    let tx = a.export_sender::<Vec<u8>>(&name)?;
    let rx = b.import_receiver::<Vec<u8>>(&name, 256).await?;
    let nats = oneway(vec![tx], rx, window).await;
    rows.push((
        "values/s one way, 1 producer".into(),
        rate_of(direct, window),
        rate_of(nats, window),
    ));

    // One way, eight producers.
    let rx = exp.export_receiver::<Vec<u8>>("oneway8", 256)?;
    let mut txs = Vec::new();
    for _ in 0..8 {
        txs.push(session.import_sender::<Vec<u8>>("oneway8").await?);
    }
    let direct = oneway(txs, rx, window).await;
    let name = format!("bench-{run}-8");
    let txs = (0..8)
        .map(|_| a.export_sender::<Vec<u8>>(&name))
        .collect::<Result<Vec<_>, _>>()?;
    let rx = b.import_receiver::<Vec<u8>>(&name, 256).await?;
    let nats = oneway(txs, rx, window).await;
    rows.push((
        "values/s one way, 8 producers".into(),
        rate_of(direct, window),
        rate_of(nats, window),
    ));

    // Sequential calls.
    let (d50, d99) = latency(&EchoClient::new(&session), window).await?;
    let (n50, n99) = latency(&EchoClient::new(&a), window).await?;
    rows.push(("sequential call, p50".into(), micros(d50), micros(n50)));
    rows.push(("sequential call, p99".into(), micros(d99), micros(n99)));

    // Calls in flight.
    let direct = in_flight(&EchoClient::new(&session), 64, window).await;
    let nats = in_flight(&EchoClient::new(&a), 64, window).await;
    rows.push((
        "calls/s, 64 in flight".into(),
        rate_of(direct, window),
        rate_of(nats, window),
    ));

    println!(
        "| workload | direct (one TCP connection, loopback) | NATS ({}) |",
        args.nats
    );
    println!("|---|---|---|");
    for (w, d, n) in rows {
        println!("| {w} | {d} | {n} |");
    }
    a.close().await;
    b.close().await;
    session.close().await;
    exp.shutdown().await;
    Ok(())
}

fn rate_of(n: u64, window: Duration) -> String {
    format!("{} ({}/s)", thousands(n), rate(n, window.as_secs_f64()))
}

fn micros(d: Duration) -> String {
    format!("{} µs", d.as_micros())
}

/// Values whose `send` completed within `window`, over all producers
/// (the receiver takes them meanwhile).
async fn oneway(txs: Vec<Sender<Vec<u8>>>, mut rx: Receiver<Vec<u8>>, window: Duration) -> u64 {
    let sent = Arc::new(AtomicU64::new(0));
    let reader = tokio::spawn(async move {
        let mut n = 0u64;
        while let Ok(Some(_)) = rx.recv().await {
            n += 1;
        }
        n
    });
    let end = Instant::now() + window;
    let mut tasks = Vec::new();
    for tx in txs {
        let sent = sent.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                if tx.send(vec![7u8; 16]).await.is_err() {
                    return;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    reader.abort();
    sent.load(Ordering::Relaxed)
}

/// p50 and p99 of sequential calls for `window`.
async fn latency(client: &EchoClient, window: Duration) -> anyhow::Result<(Duration, Duration)> {
    // The replica's subscription may still be on its way: one call first.
    let start = Instant::now();
    while client.echo(0).await.is_err() {
        if start.elapsed() > Duration::from_secs(10) {
            anyhow::bail!("the service does not answer");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut times = Vec::new();
    let end = Instant::now() + window;
    while Instant::now() < end {
        let t = Instant::now();
        client.echo(1).await?;
        times.push(t.elapsed());
    }
    times.sort_unstable();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    Ok((at(0.5), at(0.99)))
}

/// Calls completed within `window` by `n` concurrent callers.
async fn in_flight(client: &EchoClient, n: usize, window: Duration) -> u64 {
    let done = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + window;
    let mut tasks = Vec::new();
    for _ in 0..n {
        let c = client.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                if c.echo(1).await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    done.load(Ordering::Relaxed)
}
