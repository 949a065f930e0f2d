//! Child processes: one timed (contender, workload) pair, or one side of
//! an idle-memory measurement. A child prints one line starting with
//! [`RESULT_TAG`] and a JSON [`ChildResult`] on stdout, then exits; its
//! server and client run in the runtime shape given by `--flavor`.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::contenders::{self, Env};
use crate::harness::{
    Ctl, Flavor, ProcStats, process_cpu_s, quantile_us, raise_nofile, sleep_sampling_threads,
    spawn_side, threads_now,
};
use crate::spec::{Contender, Workload};

pub(crate) const RESULT_TAG: &str = "BENCH-RESULT ";
pub(crate) const READY_TAG: &str = "BENCH-READY ";

/// Setup (connect, handshake, first call) must finish within this.
const SETUP_LIMIT: Duration = Duration::from_secs(10);

/// What a child reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ChildResult {
    pub(crate) metrics: BTreeMap<String, f64>,
    pub(crate) error: Option<String>,
    pub(crate) stats: ProcStats,
    pub(crate) wall_s: f64,
    /// Events counted in the window (calls, messages), for the log.
    pub(crate) events: u64,
}

fn emit(r: &ChildResult) -> ! {
    let json = serde_json::to_string(r).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    println!("{RESULT_TAG}{json}");
    // Threads and runtimes are left running: ending the process is the
    // only shutdown that cannot hang on a stuck contender.
    std::process::exit(0)
}

fn failed(start: Instant, e: String) -> ! {
    emit(&ChildResult {
        error: Some(e),
        stats: ProcStats::now(),
        wall_s: start.elapsed().as_secs_f64(),
        ..ChildResult::default()
    })
}

/// Runs one timed workload and exits.
pub(crate) fn run_timed(c: Contender, w: Workload, seconds: f64, warmup: f64, flavor: Flavor) -> ! {
    let start = Instant::now();
    crate::harness::install_panic_hook();
    let ctl = Ctl::new();
    let env = match Env::new(c, w, ctl.clone()) {
        Ok(e) => e,
        Err(e) => failed(start, format!("setup: {e}")),
    };
    let (atx, arx) = std::sync::mpsc::channel();
    spawn_side("server", flavor, contenders::server(c, env.clone(), atx));
    let addr = match arx.recv_timeout(SETUP_LIMIT) {
        Ok(a) => a,
        Err(_) => failed(
            start,
            ctl.error()
                .unwrap_or_else(|| "server did not start listening".into()),
        ),
    };
    spawn_side("client", flavor, contenders::client(c, env, addr));
    if !ctl.wait_ready(1, SETUP_LIMIT) {
        failed(
            start,
            ctl.error().unwrap_or_else(|| {
                format!(
                    "setup did not finish within {SETUP_LIMIT:?}: the client hung at \"{}\"",
                    ctl.current_stage()
                )
            }),
        );
    }
    let peak_warm = sleep_sampling_threads(Duration::from_secs_f64(warmup));
    ctl.start_measuring();
    let cpu0 = process_cpu_s();
    let (c0, b0) = (
        ctl.count.load(Ordering::Relaxed),
        ctl.bytes.load(Ordering::Relaxed),
    );
    let t0 = Instant::now();
    let peak_window = sleep_sampling_threads(Duration::from_secs_f64(seconds));
    let (c1, b1) = (
        ctl.count.load(Ordering::Relaxed),
        ctl.bytes.load(Ordering::Relaxed),
    );
    let cpu1 = process_cpu_s();
    let dt = t0.elapsed().as_secs_f64();
    ctl.stop();
    // Lets a sample being recorded land.
    std::thread::sleep(Duration::from_millis(20));
    let mut samples = ctl.take_samples();
    samples.sort_unstable();
    let events = c1 - c0;
    let bytes = b1 - b0;
    let mut metrics = BTreeMap::new();
    let mut progress = true;
    match w.plain() {
        Workload::SeqCall => {
            metrics.insert("p50".into(), quantile_us(&samples, 0.5));
            metrics.insert("p99".into(), quantile_us(&samples, 0.99));
            metrics.insert("p999".into(), quantile_us(&samples, 0.999));
            progress = !samples.is_empty();
        }
        Workload::Calls64
        | Workload::Calls8x8
        | Workload::OneWay32
        | Workload::OneWaySink
        | Workload::OneWayCuts
        | Workload::Rendezvous => {
            metrics.insert("rate".into(), events as f64 / dt);
            progress = events > 0;
        }
        Workload::Bulk
        | Workload::BulkVec
        | Workload::Pipe
        | Workload::Echo
        | Workload::EchoVec => {
            metrics.insert("mbps".into(), bytes as f64 / dt / 1e6);
            progress = bytes > 0;
        }
        Workload::HeadOfLine => {
            metrics.insert("p50".into(), quantile_us(&samples, 0.5));
            metrics.insert("p99".into(), quantile_us(&samples, 0.99));
            metrics.insert("mbps".into(), bytes as f64 / dt / 1e6);
            progress = !samples.is_empty() && bytes > 0;
        }
        _ => {}
    }
    // CPU of the whole process (both sides, every thread) inside the
    // window only, divided by the operations the window counted.
    let ops = w.ops_in_window(events, bytes, samples.len() as u64);
    if let Some(ops) = ops
        && ops > 0.0
    {
        metrics.insert("cpu_op".into(), (cpu1 - cpu0) * 1e6 / ops);
    }
    metrics.insert(
        "threads".into(),
        peak_warm.max(peak_window).max(threads_now()) as f64,
    );
    let mut error = ctl.error();
    if error.is_none() && !progress {
        error = Some(format!(
            "no progress in the {seconds} s window (hang?): {events} events, {bytes} bytes, {} samples",
            samples.len()
        ));
    }
    emit(&ChildResult {
        metrics,
        error,
        stats: ProcStats::now(),
        wall_s: start.elapsed().as_secs_f64(),
        events: events + samples.len() as u64,
    })
}

/// Reads one line from stdin (the parent's command); `None` on EOF.
fn stdin_line() -> Option<String> {
    let mut s = String::new();
    match std::io::stdin().lock().read_line(&mut s) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(s.trim().to_owned()),
    }
}

/// The baseline of an idle-memory measurement: the process's memory once
/// the first connection (or channel) is open, so that what the first one
/// costs once for the whole process (code paged in on first use, the
/// runtime's and the connection's own buffers) is not counted per
/// connection; and how many were open by then (read after the memory, so
/// it counts every one the baseline includes). `fallback` (and 0) if none
/// opens before `limit`.
fn marginal_base(ctl: &Ctl, fallback: ProcStats, limit: Instant) -> (ProcStats, u64) {
    while ctl.count.load(Ordering::Relaxed) == 0 && ctl.error().is_none() {
        if Instant::now() >= limit {
            return (fallback, 0);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let base = ProcStats::now();
    (base, ctl.count.load(Ordering::Relaxed))
}

/// KiB of RSS per connection (or channel): the growth since `base` over
/// the ones opened since (`n` in all, `before` of them already counted
/// in `base`).
fn per_one(base: ProcStats, now: ProcStats, n: usize, before: u64) -> f64 {
    let opened = (n as u64).saturating_sub(before).max(1);
    now.rss_kib.saturating_sub(base.rss_kib) as f64 / opened as f64
}

/// Idle memory, server side: listens and reports its address, reads its
/// baseline memory once the first connection (or channel) is open (see
/// [`marginal_base`]), then on `measure` waits until `n` are open, and
/// reports its growth per connection (or channel).
pub(crate) fn run_idle_server(c: Contender, w: Workload, n: usize, flavor: Flavor) -> ! {
    let start = Instant::now();
    crate::harness::install_panic_hook();
    raise_nofile();
    let ctl = Ctl::new();
    let env = match Env::new(c, w, ctl.clone()) {
        Ok(e) => e,
        Err(e) => failed(start, format!("setup: {e}")),
    };
    let (atx, arx) = std::sync::mpsc::channel();
    spawn_side("server", flavor, contenders::idle_server(c, env, n, atx));
    let addr = match arx.recv_timeout(SETUP_LIMIT) {
        Ok(a) => a,
        Err(_) => failed(
            start,
            ctl.error()
                .unwrap_or_else(|| "server did not start listening".into()),
        ),
    };
    std::thread::sleep(Duration::from_millis(100));
    let base = ProcStats::now();
    // The baseline is read when the first one opens, long before the
    // parent asks for the measure (once the client side is done).
    let watch = {
        let ctl = ctl.clone();
        let limit = Instant::now() + Duration::from_secs(300);
        std::thread::spawn(move || marginal_base(&ctl, base, limit))
    };
    println!("{READY_TAG}{addr}");
    if stdin_line().as_deref() != Some("measure") {
        std::process::exit(0);
    }
    let limit = Instant::now() + Duration::from_secs(120);
    while (ctl.count.load(Ordering::Relaxed) as usize) < n
        && Instant::now() < limit
        && ctl.error().is_none()
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Lets buffers of the last handshakes settle.
    std::thread::sleep(Duration::from_millis(300));
    let got = ctl.count.load(Ordering::Relaxed);
    let now = ProcStats::now();
    // Done once one opened; otherwise (nothing opened) the first baseline.
    let (base, before) = if watch.is_finished() {
        watch.join().unwrap_or((base, 0))
    } else {
        (base, 0)
    };
    let mut error = ctl.error();
    if error.is_none() && (got as usize) < n {
        error = Some(format!("only {got} of {n} opened on the server side"));
    }
    let mut metrics = BTreeMap::new();
    metrics.insert("server".into(), per_one(base, now, n, before));
    let r = ChildResult {
        metrics,
        error,
        stats: now,
        wall_s: start.elapsed().as_secs_f64(),
        events: got,
    };
    let json = serde_json::to_string(&r).unwrap_or_default();
    println!("{RESULT_TAG}{json}");
    // Hold everything open until the parent is done with the client.
    let _ = stdin_line();
    std::process::exit(0)
}

/// Idle memory, client side: opens `n` connections (or channels) to
/// `addr`, reports its memory growth per connection (or channel) from
/// when the first was open (see [`marginal_base`]), and holds them until
/// stdin ends.
pub(crate) fn run_idle_client(
    c: Contender,
    w: Workload,
    n: usize,
    addr: std::net::SocketAddr,
    flavor: Flavor,
) -> ! {
    let start = Instant::now();
    crate::harness::install_panic_hook();
    raise_nofile();
    let ctl = Ctl::new();
    let env = match Env::new(c, w, ctl.clone()) {
        Ok(e) => e,
        Err(e) => failed(start, format!("setup: {e}")),
    };
    let base = ProcStats::now();
    spawn_side("client", flavor, contenders::idle_client(c, env, n, addr));
    let limit = Instant::now() + Duration::from_secs(180);
    let (base, before) = marginal_base(&ctl, base, limit);
    let ok = ctl.wait_ready(1, limit.saturating_duration_since(Instant::now()));
    std::thread::sleep(Duration::from_millis(300));
    let got = ctl.count.load(Ordering::Relaxed);
    let now = ProcStats::now();
    let mut error = ctl.error();
    if error.is_none() && !ok {
        error = Some(format!(
            "only {got} of {n} opened on the client side in 180 s"
        ));
    }
    let mut metrics = BTreeMap::new();
    metrics.insert("client".into(), per_one(base, now, n, before));
    let r = ChildResult {
        metrics,
        error,
        stats: now,
        wall_s: start.elapsed().as_secs_f64(),
        events: got,
    };
    let json = serde_json::to_string(&r).unwrap_or_default();
    println!("{RESULT_TAG}{json}");
    let _ = stdin_line();
    std::process::exit(0)
}
