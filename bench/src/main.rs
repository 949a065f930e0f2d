//! `bench`: netchan against a raw-TCP baseline, raw TLS, tarpc and remoc,
//! in one run, with ratios.
//!
//! The parent process plans (workload, contender) pairs and re-executes
//! this binary once per pair with a hidden subcommand, so that the peak
//! RSS and CPU time a child reports belong to that pair alone, and a
//! contender that hangs or crashes is killed and reported without taking
//! the run down. Every pair runs in each runtime shape (`--flavor`) and
//! for `--rounds` rounds, the contenders in a rotated order each round;
//! the report gives medians with their spread. The report (markdown) goes
//! to stdout, progress to stderr.
//!
//! ```text
//! cargo run --release -p bench                 # full run: 2 shapes × 3 rounds, ~30 min
//! cargo run --release -p bench -- --quick      # smoke test, ~3 minutes
//! cargo run --release -p bench -- --only calls,oneway --seconds 5
//! ```

mod child;
mod contenders;
mod harness;
mod msg;
mod report;
mod spec;
mod tlsmat;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use crate::child::{ChildResult, READY_TAG, RESULT_TAG};
use crate::harness::{Flavor, raise_nofile};
use crate::report::{Outcome, Report};
use crate::spec::{Contender, Workload};

/// netchan vs raw TCP/TLS, tarpc and remoc: one run, one markdown table.
#[derive(Debug, Parser)]
#[command(name = "bench", version)]
struct Cli {
    /// Measuring window of each timed workload, in seconds [default: 2].
    #[arg(long)]
    seconds: Option<f64>,
    /// Warm-up before each window, in seconds [default: 0.5].
    #[arg(long)]
    warmup: Option<f64>,
    /// Short windows and 1,000 idle connections/channels: a smoke test.
    #[arg(long)]
    quick: bool,
    /// Run only workloads whose id contains one of these (comma-separated),
    /// e.g. `--only calls,tls`. `--list` shows the ids.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Contenders to run (comma-separated) [default: netchan,raw,tarpc,remoc].
    #[arg(long, value_delimiter = ',')]
    contenders: Vec<Contender>,
    /// Idle connections for `idle-conn` [default: 10000; --quick: 1000].
    #[arg(long)]
    conns: Option<usize>,
    /// Open channels for `idle-chan` [default: 10000; --quick: 1000].
    #[arg(long)]
    channels: Option<usize>,
    /// Runtime shapes to run, each reported in its own table
    /// (comma-separated): `current` (each side on its own one-worker
    /// current_thread runtime), `multi` (each side on its own multi_thread
    /// runtime with one worker), `shared` (both sides on one multi_thread
    /// runtime with two workers, as `#[tokio::main]`).
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["current", "shared"])]
    flavor: Vec<Flavor>,
    /// Rounds: every (shape, workload, contender) runs this many times,
    /// the contenders in a rotated order each round; the table gives the
    /// median and the spread (min–max).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// List the workloads and exit.
    #[arg(long)]
    list: bool,
    /// Also write every child's raw result as JSON lines to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// netchan only: read `Session::stats` (client) and `Exporter::stats`
    /// (server) every this many milliseconds during the run, to show what
    /// a stats reader costs (compare with a run without it).
    #[arg(long)]
    stats_every_ms: Option<u64>,
    #[command(subcommand)]
    child: Option<ChildCmd>,
}

/// Hidden subcommands run by the parent in child processes.
#[derive(Debug, Subcommand)]
enum ChildCmd {
    #[command(name = "__child", hide = true)]
    Timed {
        contender: Contender,
        workload: String,
        #[arg(long)]
        seconds: f64,
        #[arg(long)]
        warmup: f64,
        #[arg(long, value_enum)]
        flavor: Flavor,
    },
    #[command(name = "__idle-server", hide = true)]
    IdleServer {
        contender: Contender,
        workload: String,
        #[arg(long)]
        n: usize,
        #[arg(long, value_enum)]
        flavor: Flavor,
    },
    #[command(name = "__idle-client", hide = true)]
    IdleClient {
        contender: Contender,
        workload: String,
        #[arg(long)]
        n: usize,
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, value_enum)]
        flavor: Flavor,
    },
}

fn workload(id: &str) -> Workload {
    Workload::from_id(id).unwrap_or_else(|| {
        eprintln!("unknown workload {id:?}");
        std::process::exit(2)
    })
}

fn main() {
    let cli = Cli::parse();

    match cli.child {
        Some(ChildCmd::Timed {
            contender,
            workload: w,
            seconds,
            warmup,
            flavor,
        }) => child::run_timed(contender, workload(&w), seconds, warmup, flavor),
        Some(ChildCmd::IdleServer {
            contender,
            workload: w,
            n,
            flavor,
        }) => child::run_idle_server(contender, workload(&w), n, flavor),
        Some(ChildCmd::IdleClient {
            contender,
            workload: w,
            n,
            addr,
            flavor,
        }) => child::run_idle_client(contender, workload(&w), n, addr, flavor),
        None => parent(cli),
    }
}

/// Settings of the whole run, resolved from the flags.
#[derive(Debug)]
struct Plan {
    seconds: f64,
    warmup: f64,
    conns: usize,
    channels: usize,
    flavors: Vec<Flavor>,
    rounds: usize,
    workloads: Vec<Workload>,
    contenders: Vec<Contender>,
    stats_every_ms: Option<u64>,
}

fn parent(cli: Cli) {
    if cli.list {
        for w in Workload::ALL {
            let rows: Vec<&str> = w.metrics().iter().map(|m| m.label).collect();
            println!("{:<24} {}", w.id(), rows.join("; "));
        }
        return;
    }
    let quick = cli.quick;
    let nofile = raise_nofile();
    let mut plan = Plan {
        seconds: cli.seconds.unwrap_or(if quick { 0.25 } else { 2.0 }),
        warmup: cli.warmup.unwrap_or(if quick { 0.1 } else { 0.5 }),
        conns: cli.conns.unwrap_or(if quick { 1000 } else { 10_000 }),
        channels: cli.channels.unwrap_or(if quick { 1000 } else { 10_000 }),
        flavors: {
            let mut f = Vec::new();
            for x in cli.flavor {
                if !f.contains(&x) {
                    f.push(x);
                }
            }
            f
        },
        rounds: cli.rounds.max(1),
        stats_every_ms: cli.stats_every_ms,
        workloads: Workload::ALL
            .into_iter()
            .filter(|w| cli.only.is_empty() || cli.only.iter().any(|p| w.id().contains(p.as_str())))
            .collect(),
        contenders: if cli.contenders.is_empty() {
            Contender::ALL.to_vec()
        } else {
            Contender::ALL
                .into_iter()
                .filter(|c| cli.contenders.contains(c))
                .collect()
        },
    };
    if plan.workloads.is_empty() {
        eprintln!("no workload matches {:?}; see --list", cli.only);
        std::process::exit(2);
    }
    // Each idle process holds one descriptor per connection, plus a few.
    let fd_room = nofile.saturating_sub(256) as usize;
    if plan.conns > fd_room {
        eprintln!(
            "bench: open-file limit {nofile}: lowering --conns from {} to {fd_room}",
            plan.conns
        );
        plan.conns = fd_room;
    }
    let mut json = cli.json.as_ref().map(|p| {
        std::fs::File::create(p).unwrap_or_else(|e| {
            eprintln!("cannot create {}: {e}", p.display());
            std::process::exit(2)
        })
    });

    // Round r runs the contenders rotated by r (and the shapes reversed
    // on odd rounds), so no contender always runs first or last.
    let mut jobs: Vec<(usize, Flavor, Workload, Contender)> = Vec::new();
    for round in 0..plan.rounds {
        let mut flavors = plan.flavors.clone();
        if round % 2 == 1 {
            flavors.reverse();
        }
        let mut order = plan.contenders.clone();
        let shift = round % order.len().max(1);
        order.rotate_left(shift);
        for &f in &flavors {
            for &w in &plan.workloads {
                for &c in &order {
                    jobs.push((round, f, w, c));
                }
            }
        }
    }
    let runnable = jobs
        .iter()
        .filter(|(_, _, w, c)| w.support(*c).is_ok())
        .count();
    let started = Instant::now();
    let load_before = loadavg();
    let mut outcomes: HashMap<(Flavor, &'static str, Contender), Outcome> = HashMap::new();
    let mut i = 0;
    for (round, f, w, c) in jobs {
        let key = (f, w.id(), c);
        match w.support(c) {
            Err(na) => {
                outcomes.insert(key, Outcome::NotApplicable(na));
            }
            Ok(()) => {
                i += 1;
                eprint!(
                    "[{i:>3}/{runnable}] r{} {:<7} {:<22} {:<8} ",
                    round + 1,
                    f.name(),
                    w.id(),
                    c.name()
                );
                let _ = std::io::stderr().flush();
                let t = Instant::now();
                let runs = if w.idle() {
                    let n = if w == Workload::IdleConn {
                        plan.conns
                    } else {
                        plan.channels
                    };
                    run_idle(f, c, w, n)
                } else {
                    vec![("process".to_owned(), run_timed(&plan, f, c, w))]
                };
                eprintln!("{} ({:.1} s)", summary(w, &runs), t.elapsed().as_secs_f64());
                if let Some(file) = json.as_mut() {
                    for (role, r) in &runs {
                        let line = serde_json::json!({
                            "round": round + 1, "shape": f.name(),
                            "workload": w.id(), "contender": c.name(), "role": role, "result": r,
                        });
                        let _ = writeln!(file, "{line}");
                    }
                }
                match outcomes
                    .entry(key)
                    .or_insert_with(|| Outcome::Ran(Vec::new()))
                {
                    Outcome::Ran(rounds) => rounds.push(runs),
                    Outcome::NotApplicable(_) => {}
                }
            }
        }
    }
    eprintln!("bench: done in {:.0} s", started.elapsed().as_secs_f64());

    let mut head = header(&plan, nofile);
    head.push(String::new());
    head.push(format!(
        "Load average (1, 5, 15 min) before the run: {load_before}; after: {}. \
         Other work on the machine skews absolute figures; ratios within one run are steadier.",
        loadavg()
    ));
    let report = Report {
        header: head,
        contenders: plan.contenders.clone(),
        workloads: plan.workloads.clone(),
        flavors: plan.flavors.clone(),
        rounds: plan.rounds,
        outcomes,
    };
    print!("{}", report.render());
}

fn summary(w: Workload, runs: &[(String, ChildResult)]) -> String {
    let mut parts = Vec::new();
    for (role, r) in runs {
        if let Some(e) = &r.error {
            parts.push(format!("FAILED ({role}): {e}"));
            continue;
        }
        for m in w.metrics() {
            if let Some(v) = r.metrics.get(m.key) {
                parts.push(format!(
                    "{} {} {}",
                    m.key,
                    report::fmt_value(m.unit, *v),
                    m.unit.label()
                ));
            }
        }
        if let Some(v) = r.metrics.get("cpu_op") {
            parts.push(format!("cpu {v:.2} µs/op"));
        }
        if let Some(v) = r.metrics.get("threads") {
            parts.push(format!("{v:.0} threads"));
        }
    }
    parts.join(", ")
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

fn header(plan: &Plan, nofile: u64) -> Vec<String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    vec![
        "## netchan benchmark".to_owned(),
        String::new(),
        if args.is_empty() {
            "Command: `cargo run --release -p bench`".to_owned()
        } else {
            format!(
                "Command: `cargo run --release -p bench -- {}`",
                args.join(" ")
            )
        },
        String::new(),
        format!(
            "Machine: {cores} cores ({cpu}), Linux {kernel}. Loopback TCP with TCP_NODELAY; \
             one process per (shape, workload, contender, round). Window {} s after {} s of warm-up; \
             idle workloads: {} connections, {} channels (open-file limit {nofile}). \
             {} round(s), contenders in a rotated order each round: each cell is the median \
             over the rounds, with the spread (min–max) in brackets; ratios are of medians.",
            plan.seconds, plan.warmup, plan.conns, plan.channels, plan.rounds
        ),
    ]
}

fn exe() -> std::path::PathBuf {
    std::env::current_exe().unwrap_or_else(|e| {
        eprintln!("cannot find this executable: {e}");
        std::process::exit(2)
    })
}

fn failed(e: String) -> ChildResult {
    ChildResult {
        error: Some(e),
        ..ChildResult::default()
    }
}

/// Lines of a child's stdout, read by a thread so a silent child cannot
/// block the parent.
fn lines_of(mut child_out: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(&mut child_out);
        let mut line = String::new();
        while matches!(r.read_line(&mut line), Ok(n) if n > 0) {
            if tx.send(line.trim_end().to_owned()).is_err() {
                return;
            }
            line.clear();
        }
    });
    rx
}

/// Waits for a line starting with `tag`; the rest of it.
fn wait_tagged(
    lines: &mpsc::Receiver<String>,
    tag: &str,
    limit: Duration,
) -> Result<String, String> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) => {
                if let Some(rest) = l.strip_prefix(tag) {
                    return Ok(rest.to_owned());
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(format!("no answer within {limit:?} (hung)"));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err("exited without an answer (crashed?)".into());
            }
        }
    }
}

fn parse_result(s: &str) -> ChildResult {
    serde_json::from_str(s).unwrap_or_else(|e| failed(format!("unreadable child result: {e}")))
}

/// Ends a child: waits up to `grace`, then kills it (by its own handle).
fn reap(child: &mut Child, grace: Duration) -> Option<String> {
    let deadline = Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => {
                return if st.success() {
                    None
                } else {
                    Some(format!("exited with {st}"))
                };
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Some(format!("killed after {grace:?}"));
            }
        }
    }
}

fn run_timed(plan: &Plan, flavor: Flavor, c: Contender, w: Workload) -> ChildResult {
    let spawned = Command::new(exe())
        .args(["__child", c.name(), w.id()])
        .args(["--seconds", &plan.seconds.to_string()])
        .args(["--warmup", &plan.warmup.to_string()])
        .args(["--flavor", flavor.name()])
        .envs(
            plan.stats_every_ms
                .map(|ms| (contenders::netchan_c::STATS_EVERY_ENV, ms.to_string())),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn();
    let mut child = match spawned {
        Ok(ch) => ch,
        Err(e) => return failed(format!("cannot start the child: {e}")),
    };
    let Some(out) = child.stdout.take() else {
        return failed("no child stdout".into());
    };
    let lines = lines_of(out);
    let limit = Duration::from_secs_f64(plan.seconds + plan.warmup + 45.0);
    match wait_tagged(&lines, RESULT_TAG, limit) {
        Ok(json) => {
            let mut r = parse_result(&json);
            if let Some(e) = reap(&mut child, Duration::from_secs(5))
                && r.error.is_none()
            {
                r.error = Some(format!("child {e}"));
            }
            r
        }
        Err(e) => {
            let status = reap(&mut child, Duration::from_millis(100)).unwrap_or_default();
            failed(format!("child {e} {status}").trim_end().to_owned())
        }
    }
}

fn run_idle(flavor: Flavor, c: Contender, w: Workload, n: usize) -> Vec<(String, ChildResult)> {
    let spawn = |args: Vec<String>| {
        Command::new(exe())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
    };
    let common = |sub: &str| -> Vec<String> {
        vec![
            sub.to_owned(),
            c.name().to_owned(),
            w.id().to_owned(),
            "--n".to_owned(),
            n.to_string(),
            "--flavor".to_owned(),
            flavor.name().to_owned(),
        ]
    };
    let mut server = match spawn(common("__idle-server")) {
        Ok(s) => s,
        Err(e) => return vec![("server".into(), failed(format!("cannot start: {e}")))],
    };
    let Some(sout) = server.stdout.take() else {
        return vec![("server".into(), failed("no stdout".into()))];
    };
    let slines = lines_of(sout);
    let addr = match wait_tagged(&slines, READY_TAG, Duration::from_secs(30)) {
        Ok(a) => a,
        Err(e) => {
            reap(&mut server, Duration::ZERO);
            return vec![("server".into(), failed(format!("server {e}")))];
        }
    };
    let mut args = common("__idle-client");
    args.extend(["--addr".to_owned(), addr]);
    let mut client = match spawn(args) {
        Ok(s) => s,
        Err(e) => {
            reap(&mut server, Duration::ZERO);
            return vec![("client".into(), failed(format!("cannot start: {e}")))];
        }
    };
    let clines = client.stdout.take().map(lines_of);
    let cres = match &clines {
        Some(l) => wait_tagged(l, RESULT_TAG, Duration::from_secs(200))
            .map(|j| parse_result(&j))
            .unwrap_or_else(|e| failed(format!("client {e}"))),
        None => failed("no client stdout".into()),
    };
    let measure = if cres.error.is_some() {
        None
    } else {
        server
            .stdin
            .as_mut()
            .map(|s| s.write_all(b"measure\n").and_then(|()| s.flush()))
    };
    let sres = match measure {
        Some(Ok(())) => wait_tagged(&slines, RESULT_TAG, Duration::from_secs(150))
            .map(|j| parse_result(&j))
            .unwrap_or_else(|e| failed(format!("server {e}"))),
        None if cres.error.is_some() => failed("not measured: the client side failed".into()),
        _ => failed("cannot reach the server process".into()),
    };
    // Closing their stdin ends both.
    drop(server.stdin.take());
    drop(client.stdin.take());
    reap(&mut client, Duration::from_secs(10));
    reap(&mut server, Duration::from_secs(10));
    vec![("server".into(), sres), ("client".into(), cres)]
}
