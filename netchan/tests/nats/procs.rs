//! Tests across processes: this test binary runs itself again as helper
//! processes (`helper_process`, with `NETCHAN_NATS_ROLE` set), which
//! export, import or serve on the test's server and print what they did,
//! one line each, on stdout. Every process is killed when its guard drops.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use netchan::RpcError;
use netchan::nats::{NatsConfig, Node};

use super::rpc::{LabClient, LabServer, replica};
use super::server::NatsServer;

const CHANNEL: &str = "shared";

/// What libtest prints before the helper's own output, on the same line.
const HARNESS: &str = "test procs::helper_process ... ";

/// A helper process; killed on drop. Its stdout lines go to the test's
/// channel, tagged with `index`.
struct Helper {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Helper {
    fn start(
        index: usize,
        role: &str,
        args: &[String],
        lines: &mpsc::Sender<(usize, String)>,
    ) -> Helper {
        let exe = std::env::current_exe().expect("the test binary");
        let mut child = Command::new(exe)
            .args([
                "procs::helper_process",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("NETCHAN_NATS_ROLE", role)
            .env("NETCHAN_NATS_ARGS", args.join(" "))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a helper process");
        let stdout = child.stdout.take().expect("its stdout");
        let stdin = child.stdin.take();
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The test harness starts its result line before the
                // helper's first line.
                let line = match line.split_once(HARNESS) {
                    Some((_, rest)) => rest.to_owned(),
                    None => line,
                };
                // Read to the end even when the test stopped listening, so
                // the helper never writes into a closed pipe.
                let _ = lines.send((index, line));
            }
        });
        Helper { child, stdin }
    }

    /// Asks the helper to finish (its stdin closes) and waits for it.
    fn finish(&mut self) {
        drop(self.stdin.take());
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("a helper process did not finish within 30 s");
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn exited_ok(&mut self) -> Option<bool> {
        self.child.try_wait().ok().flatten().map(|s| s.success())
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Parses `"<word> <number>"`.
fn parse(line: &str, word: &str) -> Option<u64> {
    line.strip_prefix(word)?
        .strip_prefix(' ')?
        .trim()
        .parse()
        .ok()
}

/// Lines until `done` says enough, bounded by `limit`.
fn collect(
    rx: &mpsc::Receiver<(usize, String)>,
    limit: Duration,
    what: &str,
    mut each: impl FnMut(usize, &str) -> bool,
) {
    let start = Instant::now();
    loop {
        let left = limit
            .checked_sub(start.elapsed())
            .unwrap_or_else(|| panic!("timed out waiting for {what}"));
        match rx.recv_timeout(left) {
            Ok((i, line)) => {
                if each(i, &line) {
                    return;
                }
            }
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

/// The helper: does nothing unless this process was started as one.
#[test]
fn helper_process() {
    let Ok(role) = std::env::var("NETCHAN_NATS_ROLE") else {
        return;
    };
    let args: Vec<String> = std::env::var("NETCHAN_NATS_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async move {
        // Ends when the parent closes our stdin (or dies).
        let (stop_tx, mut stop) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let mut sink = String::new();
            while std::io::stdin()
                .read_line(&mut sink)
                .map(|n| n > 0)
                .unwrap_or(false)
            {}
            let _ = stop_tx.send(());
        });
        let url = &args[0];
        match role.as_str() {
            // export URL FROM TO: sends FROM..TO, printing each completed send.
            "export" => {
                let node = Node::connect(url).await.expect("connect");
                let tx = node.export_sender::<u64>(CHANNEL).expect("export");
                let from: u64 = args[1].parse().expect("from");
                let to: u64 = args[2].parse().expect("to");
                for v in from..to {
                    tx.send(v).await.expect("send");
                    println!("acked {v}");
                }
                node.close().await;
            }
            // import URL CAPACITY ACK_WAIT_MS STALL_AFTER: prints each value
            // taken; after STALL_AFTER values (0: never) stops taking, so it
            // holds a full buffer, and says "stalled".
            "import" => {
                let cap: usize = args[1].parse().expect("capacity");
                let ack_wait = Duration::from_millis(args[2].parse().expect("ack wait"));
                let stall_after: u64 = args[3].parse().expect("stall after");
                let cfg = NatsConfig::default().ack_wait(ack_wait);
                let node = Node::connect_with(url, cfg).await.expect("connect");
                let mut rx = node
                    .import_receiver::<u64>(CHANNEL, cap)
                    .await
                    .expect("import");
                let mut n = 0u64;
                loop {
                    if stall_after > 0 && n == stall_after {
                        // The acknowledgements of what it took leave in
                        // the meantime (as a rule: a duplicate is allowed
                        // for a value taken just before a process dies).
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        println!("stalled {n}");
                        let _ = (&mut stop).await;
                        break;
                    }
                    tokio::select! {
                        r = rx.recv() => match r {
                            Ok(Some(v)) => { println!("got {v}"); n += 1; }
                            other => panic!("receiver ended: {other:?}"),
                        },
                        _ = &mut stop => break,
                    }
                }
                node.close().await;
            }
            // replica URL NAME: serves Lab, says "ready", prints "sleeping"
            // when a sleep call starts.
            "replica" => {
                let cfg = NatsConfig::default().rpc_heartbeat(Duration::from_millis(200));
                let node = Node::connect_with(url, cfg).await.expect("connect");
                let mut r = replica(&args[1]);
                r.announce = true;
                node.serve(LabServer::new(r));
                // The subscription reached the server once a call answers.
                let client = LabClient::new(&node);
                loop {
                    if client.echo("self".into()).await.is_ok() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                println!("ready 0");
                let _ = stop.await;
                node.close().await;
            }
            other => panic!("unknown helper role {other}"),
        }
    });
}

#[test]
fn three_exporting_and_five_importing_processes_share_100000_values_exactly_once() {
    let server = NatsServer::start();
    let (tx, rx) = mpsc::channel();
    let total: u64 = 100_000;
    let mut importers: Vec<Helper> = (0..5)
        .map(|i| {
            Helper::start(
                i,
                "import",
                &[server.url.clone(), "64".into(), "30000".into(), "0".into()],
                &tx,
            )
        })
        .collect();
    let per = total.div_ceil(3);
    let mut exporters: Vec<Helper> = (0..3u64)
        .map(|i| {
            let from = i * per;
            let to = ((i + 1) * per).min(total);
            Helper::start(
                10 + i as usize,
                "export",
                &[server.url.clone(), from.to_string(), to.to_string()],
                &tx,
            )
        })
        .collect();
    let mut got: HashMap<u64, u32> = HashMap::new();
    let mut lines = 0u64;
    collect(
        &rx,
        Duration::from_secs(600),
        "100,000 values",
        |i, line| {
            if i < 10 {
                if let Some(v) = parse(line, "got") {
                    *got.entry(v).or_default() += 1;
                    lines += 1;
                }
            }
            got.len() as u64 == total
        },
    );
    for e in &mut exporters {
        e.finish();
        assert_eq!(e.exited_ok(), Some(true), "an exporter failed");
    }
    for imp in &mut importers {
        imp.finish();
    }
    // Lines printed before the importers finished.
    while let Ok((i, line)) = rx.try_recv() {
        if i < 10 {
            if let Some(v) = parse(&line, "got") {
                *got.entry(v).or_default() += 1;
                lines += 1;
            }
        }
    }
    assert_eq!(got.len() as u64, total);
    assert!((0..total).all(|v| got.contains_key(&v)));
    let twice: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "values received more than once: {twice:?}"
    );
    assert_eq!(lines, total);
}

#[test]
fn killing_an_importer_that_holds_values_loses_nothing() {
    let server = NatsServer::start();
    let (tx, rx) = mpsc::channel();
    let total: u64 = 5_000;
    // Importer 0 takes 300 values, then holds a full buffer of 32 it never
    // takes, and is killed; its values come again 2 s (ack wait) later.
    let mut doomed = Helper::start(
        0,
        "import",
        &[server.url.clone(), "32".into(), "2000".into(), "300".into()],
        &tx,
    );
    let mut others: Vec<Helper> = (1..3)
        .map(|i| {
            Helper::start(
                i,
                "import",
                &[server.url.clone(), "16".into(), "2000".into(), "0".into()],
                &tx,
            )
        })
        .collect();
    let mut exporter = Helper::start(
        10,
        "export",
        &[server.url.clone(), "0".into(), total.to_string()],
        &tx,
    );
    let mut got: HashMap<u64, Vec<usize>> = HashMap::new();
    let mut killed = false;
    collect(
        &rx,
        Duration::from_secs(300),
        "every value after the kill",
        |i, line| {
            if i == 0 && line.starts_with("stalled") && !killed {
                doomed.kill();
                killed = true;
            }
            if let Some(v) = parse(line, "got") {
                got.entry(v).or_default().push(i);
            }
            killed && got.len() as u64 == total
        },
    );
    exporter.finish();
    for o in &mut others {
        o.finish();
    }
    while let Ok((i, line)) = rx.try_recv() {
        if let Some(v) = parse(&line, "got") {
            got.entry(v).or_default().push(i);
        }
    }
    assert!((0..total).all(|v| got.contains_key(&v)), "values lost");
    // The values the doomed importer held but never took came once, to
    // the others. The only duplicate the semantics allow is a value the
    // killed importer took whose acknowledgement had not reached the
    // server when it died: taken by it first, then by one other.
    let twice: Vec<_> = got
        .iter()
        .filter(|(_, w)| w.len() > 1)
        .map(|(v, w)| (*v, w.clone()))
        .collect();
    for (v, w) in &twice {
        assert!(
            w.len() == 2 && w[0] == 0 && w[1] != 0,
            "value {v} received by importers {w:?}: only a value the killed importer took may come again"
        );
    }
    assert_eq!(got.values().filter(|w| w[0] == 0).count(), 300);
    eprintln!(
        "values taken by the killed importer and delivered again: {}",
        twice.len()
    );
}

#[test]
fn killing_an_exporter_loses_nothing_it_was_told_was_stored() {
    let server = NatsServer::start();
    let (tx, rx) = mpsc::channel();
    let mut first = Helper::start(
        10,
        "export",
        &[server.url.clone(), "0".into(), "1000000".into()],
        &tx,
    );
    let mut acked = Vec::new();
    collect(
        &rx,
        Duration::from_secs(120),
        "500 stored values",
        |_, line| {
            if let Some(v) = parse(line, "acked") {
                acked.push(v);
            }
            acked.len() >= 500
        },
    );
    first.kill();
    // What it printed before it died, still in the pipe.
    while let Ok((_, line)) = rx.recv_timeout(Duration::from_millis(500)) {
        if let Some(v) = parse(&line, "acked") {
            acked.push(v);
        }
    }
    // A restarted exporter goes on from a new range.
    let mut second = Helper::start(
        11,
        "export",
        &[server.url.clone(), "2000000".into(), "2000100".into()],
        &tx,
    );
    second.finish();
    assert_eq!(second.exited_ok(), Some(true));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let node = Node::connect(&server.url).await.unwrap();
        let mut rx = node.import_receiver::<u64>(CHANNEL, 64).await.unwrap();
        let mut got = HashMap::<u64, u32>::new();
        // Every value stored arrives; the killed exporter may have had one
        // more stored than it printed.
        let all_in = |got: &HashMap<u64, u32>| {
            acked.iter().all(|v| got.contains_key(v))
                && (2_000_000..2_000_100).all(|v| got.contains_key(&v))
        };
        while !all_in(&got) {
            let v = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .expect("a stored value")
                .unwrap()
                .unwrap();
            *got.entry(v).or_default() += 1;
        }
        for v in &acked {
            assert_eq!(
                got.get(v),
                Some(&1),
                "acknowledged value {v} lost or duplicated"
            );
        }
        for v in 2_000_000..2_000_100 {
            assert_eq!(got.get(&v), Some(&1), "value {v} of the restarted exporter");
        }
        node.close().await;
    });
}

#[test]
fn rpc_across_three_replica_processes_with_one_killed_mid_call() {
    let server = NatsServer::start();
    let (tx, rx) = mpsc::channel();
    let mut replicas: Vec<Helper> = (0..3)
        .map(|i| Helper::start(i, "replica", &[server.url.clone(), format!("r{i}")], &tx))
        .collect();
    let mut ready = 0;
    collect(&rx, Duration::from_secs(60), "three replicas", |_, line| {
        ready += usize::from(line.starts_with("ready"));
        ready == 3
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let node = Node::connect_with(&server.url, NatsConfig::default())
            .await
            .unwrap();
        let client = LabClient::new(&node);
        // Nine long calls, spread over the replicas.
        let calls: Vec<_> = (0..9)
            .map(|_| {
                let c = client.clone();
                tokio::spawn(async move { c.sleep(4000).await })
            })
            .collect();
        // Once every call started, kill the replica that started the
        // first, mid-call.
        let (victim, started) = tokio::task::spawn_blocking(move || {
            let mut started: HashMap<usize, usize> = HashMap::new();
            let mut victim = None;
            collect(
                &rx,
                Duration::from_secs(30),
                "nine calls started",
                |i, line| {
                    if line.starts_with("sleeping") {
                        *started.entry(i).or_default() += 1;
                        victim.get_or_insert(i);
                    }
                    started.values().sum::<usize>() == 9
                },
            );
            (victim.expect("a replica started a call"), started)
        })
        .await
        .unwrap();
        replicas[victim].kill();
        let mut disconnected = 0;
        let mut completed = 0;
        for c in calls {
            match tokio::time::timeout(Duration::from_secs(30), c)
                .await
                .unwrap()
                .unwrap()
            {
                Ok(4000) => completed += 1,
                Err(RpcError::Disconnected) => disconnected += 1,
                other => panic!("unexpected result {other:?}"),
            }
        }
        let on_victim = started.get(&victim).copied().unwrap_or(0);
        assert!(on_victim >= 1);
        assert_eq!(disconnected, on_victim, "calls started: {started:?}");
        assert_eq!(completed, 9 - on_victim);
        // The survivors take every call from now on.
        for i in 0..30 {
            let who = client.echo(format!("{i}")).await.unwrap();
            assert_ne!(who.split(':').next().unwrap(), format!("r{victim}"));
        }
        node.close().await;
    });
    for r in &mut replicas {
        r.finish();
    }
}
