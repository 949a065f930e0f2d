//! The `cluster` example as separate processes on NATS (feature `nats`):
//! `cluster --nats URL --role server` hands out numbered tasks on the
//! channel `cluster.tasks` and checks every result that comes back on
//! `cluster.results`; `cluster --nats URL --role worker`, on any number of
//! machines, takes tasks (each goes to one worker) and sends each back as
//! its result. Same channel types as the one-process cluster, other
//! transport.
//!
//! Tasks and results carry the server's run id, so results a worker sends
//! for an earlier run (the streams outlive processes) are counted apart,
//! not mistaken for this run's.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::bail;
use netchan::nats::{NatsConfig, Node};
use serde::{Deserialize, Serialize};

use crate::{rate, thousands};

const TASKS: &str = "cluster.tasks";
const RESULTS: &str = "cluster.results";

/// A task going out, and the same task coming back as its result.
#[derive(Debug, Serialize, Deserialize)]
pub struct NatsTask {
    /// The server run that sent it.
    pub run: u64,
    /// Sequence number, from 0, unique per run.
    pub seq: u64,
    /// The worker that computed the result (empty on the way out).
    pub worker: String,
    /// The work: bytes derived from `seq`.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seq as u8).wrapping_add(i as u8))
        .collect()
}

async fn connect(url: &str, name: &str) -> anyhow::Result<Node> {
    Ok(Node::connect_with(url, NatsConfig::default().name(name)).await?)
}

/// The server: sends `tasks` tasks, then waits (up to `wait`) for every
/// result; fails if one is missing, duplicated or corrupted.
pub async fn server(url: &str, tasks: u64, len: usize, wait: Duration) -> anyhow::Result<()> {
    let node = connect(url, "cluster-server").await?;
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let tx = node.export_sender::<NatsTask>(TASKS)?;
    let mut results = node.import_receiver::<NatsTask>(RESULTS, 256).await?;
    println!(
        "cluster server on NATS {url}: run {run}, {tasks} tasks of {len} bytes; start workers with --role worker"
    );
    let start = Instant::now();
    let sender = tokio::spawn(async move {
        for seq in 0..tasks {
            let t = NatsTask {
                run,
                seq,
                worker: String::new(),
                payload: payload(seq, len),
            };
            if tx.send(t).await.is_err() {
                return seq;
            }
        }
        tasks
    });
    let mut seen = HashSet::new();
    let (mut dup, mut bad, mut stale) = (0u64, 0u64, 0u64);
    let mut workers = HashSet::new();
    let mut last_print = Instant::now();
    let deadline = tokio::time::Instant::now() + wait;
    while (seen.len() as u64) < tasks {
        let r = tokio::time::timeout_at(deadline, results.recv()).await;
        let Ok(r) = r else { break };
        let Some(t) = r? else { break };
        if t.run != run {
            stale += 1;
            continue;
        }
        if t.payload != payload(t.seq, len) || t.seq >= tasks {
            bad += 1;
        } else if !seen.insert(t.seq) {
            dup += 1;
        }
        workers.insert(t.worker);
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            let secs = start.elapsed().as_secs_f64();
            println!(
                "{:>6.1}s  results {} ({}/s) from {} workers",
                secs,
                thousands(seen.len() as u64),
                rate(seen.len() as u64, secs),
                workers.len()
            );
        }
    }
    let sent = sender.await.unwrap_or(0);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "sent {}, results {} in {:.1}s ({}/s), {} workers; duplicates {dup}, corrupted {bad}, from earlier runs {stale}",
        thousands(sent),
        thousands(seen.len() as u64),
        secs,
        rate(seen.len() as u64, secs),
        workers.len()
    );
    node.close().await;
    if (seen.len() as u64) < tasks || dup > 0 || bad > 0 {
        bail!(
            "{} of {tasks} results missing, {dup} duplicated, {bad} corrupted",
            tasks - seen.len() as u64
        );
    }
    Ok(())
}

/// A worker: takes tasks and sends each back as its result, until Ctrl-C.
pub async fn worker(url: &str, name: &str) -> anyhow::Result<()> {
    let node = connect(url, name).await?;
    let mut tasks = node.import_receiver::<NatsTask>(TASKS, 64).await?;
    let results = node.import_sender::<NatsTask>(RESULTS).await?;
    println!("cluster worker {name} on NATS {url}: waiting for tasks (Ctrl-C stops)");
    let mut done = 0u64;
    let mut last = Instant::now();
    loop {
        tokio::select! {
            t = tasks.recv() => {
                let Some(mut t) = t? else { break };
                t.worker = name.to_owned();
                results.send(t).await?;
                done += 1;
                if last.elapsed() >= Duration::from_secs(1) {
                    last = Instant::now();
                    println!("{name}: {} tasks done", thousands(done));
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    println!(
        "{name}: {} tasks done; leaving (what it held goes to other workers)",
        thousands(done)
    );
    node.close().await;
    Ok(())
}
