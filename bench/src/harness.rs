//! What every contender uses inside a child process: the shared control
//! block (phase, counters, latency samples, the first error), runtimes,
//! process statistics, and the checks that catch lost or reordered data.

use std::fmt::Display;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Results and errors inside a child: errors are reported, never panicked.
pub(crate) type R<T> = Result<T, String>;

/// Adds what was being done to any displayable error.
pub(crate) trait Ctx<T> {
    fn ctx(self, what: &str) -> R<T>;
}

impl<T, E: Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: &str) -> R<T> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// The control block shared by the measuring thread, the server and the
/// client of one child process.
#[derive(Debug)]
pub(crate) struct Ctl {
    phase: AtomicU8,
    /// Events completed (calls, messages, sends).
    pub(crate) count: AtomicU64,
    /// Payload bytes moved.
    pub(crate) bytes: AtomicU64,
    samples: Mutex<Vec<u32>>,
    error: Mutex<Option<String>>,
    ready: (Mutex<usize>, Condvar),
    /// What the client was doing last during setup, to say where a hang is.
    stage: Mutex<&'static str>,
    epoch: Instant,
}

impl Ctl {
    pub(crate) fn new() -> Arc<Ctl> {
        Arc::new(Ctl {
            phase: AtomicU8::new(WARMUP),
            count: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            samples: Mutex::new(Vec::new()),
            error: Mutex::new(None),
            ready: (Mutex::new(0), Condvar::new()),
            stage: Mutex::new("starting"),
            epoch: Instant::now(),
        })
    }

    pub(crate) fn measuring(&self) -> bool {
        self.phase.load(Ordering::Relaxed) == MEASURE
    }

    pub(crate) fn stopped(&self) -> bool {
        self.phase.load(Ordering::Relaxed) == STOP
    }

    pub(crate) fn start_measuring(&self) {
        self.phase.store(MEASURE, Ordering::Relaxed);
    }

    pub(crate) fn stop(&self) {
        self.phase.store(STOP, Ordering::Relaxed);
    }

    /// Counts `n` events.
    pub(crate) fn add(&self, n: u64) {
        self.count.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` payload bytes.
    pub(crate) fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Records one latency sample if the measuring window is open.
    pub(crate) fn record(&self, d: Duration) {
        if self.measuring() {
            self.record_ns(d.as_nanos() as u64);
        }
    }

    /// Records a latency in nanoseconds (no window check).
    pub(crate) fn record_ns(&self, ns: u64) {
        let v = u32::try_from(ns).unwrap_or(u32::MAX);
        lock(&self.samples).push(v);
    }

    pub(crate) fn take_samples(&self) -> Vec<u32> {
        std::mem::take(&mut *lock(&self.samples))
    }

    /// Nanoseconds since this control block was made: a clock both
    /// threads of the child share, for one-way latencies.
    pub(crate) fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Keeps the first error only: later ones are usually its echoes.
    pub(crate) fn fail(&self, e: impl Into<String>) {
        let mut slot = lock(&self.error);
        if slot.is_none() {
            *slot = Some(e.into());
        }
    }

    pub(crate) fn error(&self) -> Option<String> {
        lock(&self.error).clone().or_else(panic_message)
    }

    /// Notes the setup step a side is entering.
    pub(crate) fn stage(&self, what: &'static str) {
        *lock(&self.stage) = what;
    }

    pub(crate) fn current_stage(&self) -> &'static str {
        *lock(&self.stage)
    }

    /// Signals that one side finished its setup.
    pub(crate) fn ready(&self) {
        let (m, cv) = &self.ready;
        *lock(m) += 1;
        cv.notify_all();
    }

    /// Waits until `n` ready signals came, or an error, or `limit`.
    pub(crate) fn wait_ready(&self, n: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let (m, cv) = &self.ready;
        let mut got = lock(m);
        while *got < n {
            let now = Instant::now();
            if now >= deadline || self.error().is_some() {
                return false;
            }
            let wait = (deadline - now).min(Duration::from_millis(50));
            got = match cv.wait_timeout(got, wait) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        true
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

static PANIC: OnceLock<String> = OnceLock::new();

/// Remembers the first panic of the process (any thread), after the
/// default hook printed it, so the result names it.
pub(crate) fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let where_ = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_owned());
        let thread = std::thread::current().name().unwrap_or("?").to_owned();
        let _ = PANIC.set(format!("panic in thread {thread}{where_}: {what}"));
        default(info);
    }));
}

fn panic_message() -> Option<String> {
    PANIC.get().cloned()
}

/// The runtime shape of a child process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub(crate) enum Flavor {
    /// Each side on its own `current_thread` runtime in its own thread.
    Current,
    /// Each side on its own `multi_thread` runtime with one worker; the
    /// side's future runs as a task on that worker.
    Multi,
    /// Both sides as tasks of ONE `multi_thread` runtime with two workers
    /// (what `#[tokio::main]` gives on a two-core machine).
    Shared,
}

impl Flavor {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Flavor::Current => "current",
            Flavor::Multi => "multi",
            Flavor::Shared => "shared",
        }
    }

    /// What the shape is, for the report.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Flavor::Current => {
                "server and client each on its own one-worker `current_thread` runtime in its own thread"
            }
            Flavor::Multi => {
                "server and client each on its own `multi_thread` runtime with one worker"
            }
            Flavor::Shared => {
                "server and client as tasks of one `multi_thread` runtime with two workers (what `#[tokio::main]` gives on two cores)"
            }
        }
    }
}

/// Worker threads of the shared runtime ([`Flavor::Shared`]).
pub(crate) const SHARED_WORKERS: usize = 2;

/// The one runtime both sides share in [`Flavor::Shared`].
fn shared_runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(SHARED_WORKERS)
            .thread_name("shared-worker")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot build the shared runtime: {e}"))
    })
}

/// Runs `fut` as one side: on a new one-worker runtime in a new OS thread,
/// or (`Shared`) as a task of the runtime both sides share.
pub(crate) fn spawn_side<F>(name: &str, flavor: Flavor, fut: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    if flavor == Flavor::Shared {
        drop(shared_runtime().spawn(fut));
        return;
    }
    let name = name.to_owned();
    let spawned = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let rt = match flavor {
                Flavor::Multi => tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name(format!("{name}-worker"))
                    .enable_all()
                    .build(),
                _ => tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build(),
            };
            let rt = match rt {
                Ok(rt) => rt,
                Err(e) => panic!("cannot build the {name} runtime: {e}"),
            };
            match flavor {
                Flavor::Multi => {
                    let h = rt.spawn(fut);
                    let _ = rt.block_on(h);
                }
                _ => rt.block_on(fut),
            }
        });
    if let Err(e) = spawned {
        panic!("cannot spawn a thread: {e}");
    }
}

/// OS threads of this process now (`Threads:` of `/proc/self/status`).
pub(crate) fn threads_now() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Sleeps for `d` on the calling (measuring) thread, sampling the
/// process's thread count every [`THREAD_SAMPLE`]; returns the peak seen.
pub(crate) fn sleep_sampling_threads(d: Duration) -> u64 {
    let end = Instant::now() + d;
    let mut peak = threads_now();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return peak;
        }
        std::thread::sleep(left.min(THREAD_SAMPLE));
        peak = peak.max(threads_now());
    }
}

/// Interval of the thread-count samples.
pub(crate) const THREAD_SAMPLE: Duration = Duration::from_millis(20);

/// A future that never ends: keeps a side's runtime driving its tasks
/// until the process exits.
pub(crate) async fn forever() {
    std::future::pending::<()>().await
}

/// Peak and current memory, and CPU time, of this process.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct ProcStats {
    pub(crate) peak_rss_kib: u64,
    pub(crate) rss_kib: u64,
    pub(crate) cpu_user_s: f64,
    pub(crate) cpu_sys_s: f64,
}

impl ProcStats {
    pub(crate) fn now() -> ProcStats {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let (user, sys) = cpu_times();
        ProcStats {
            peak_rss_kib: field("VmHWM:"),
            rss_kib: field("VmRSS:"),
            cpu_user_s: user,
            cpu_sys_s: sys,
        }
    }

    pub(crate) fn cpu_s(&self) -> f64 {
        self.cpu_user_s + self.cpu_sys_s
    }
}

/// CPU seconds (user + system, all threads) of this process, with
/// nanosecond resolution (`CLOCK_PROCESS_CPUTIME_ID`): what the measuring
/// window's CPU per operation is taken from.
pub(crate) fn process_cpu_s() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// User and system CPU seconds of this process, from `/proc/self/stat`.
fn cpu_times() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name may hold spaces: fields are counted after its ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = rustix::param::clock_ticks_per_second().max(1) as f64;
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / tick;
    // Fields 14 and 15 of stat(5); index 0 here is field 3.
    (get(11), get(12))
}

/// Raises the soft limit of open files to the hard limit (many idle
/// connections need two descriptors each). Returns the soft limit now.
pub(crate) fn raise_nofile() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    if let Some(max) = lim.maximum
        && lim.current != Some(max)
    {
        let _ = setrlimit(
            Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(max),
                maximum: Some(max),
            },
        );
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// The value at quantile `q` (0..=1) of sorted samples, in microseconds.
pub(crate) fn quantile_us(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    f64::from(sorted[i.min(sorted.len() - 1)]) / 1000.0
}

/// The byte stream of the pipe workloads: 1 MiB blocks, each starting
/// with its index as a little-endian u64, so the reader can tell a lost,
/// repeated or reordered piece from the stream itself.
pub(crate) const BLOCK: usize = crate::spec::MIB;

/// A block with a recognizable filler after the index.
pub(crate) fn block_buffer() -> Vec<u8> {
    (0..BLOCK).map(|i| (i % 251) as u8).collect()
}

/// Writes block index `n` into the first 8 bytes of `buf`.
pub(crate) fn stamp_block(buf: &mut [u8], n: u64) {
    buf[..8].copy_from_slice(&n.to_le_bytes());
}

/// Checks the block indices of a stream fed in arbitrary pieces.
#[derive(Debug, Default)]
pub(crate) struct BlockCheck {
    offset: u64,
    /// Bytes of the current block's index seen so far.
    head: [u8; 8],
}

impl BlockCheck {
    pub(crate) fn feed(&mut self, mut buf: &[u8]) -> R<()> {
        while !buf.is_empty() {
            let in_block = (self.offset % BLOCK as u64) as usize;
            if in_block < 8 {
                let n = (8 - in_block).min(buf.len());
                self.head[in_block..in_block + n].copy_from_slice(&buf[..n]);
                if in_block + n == 8 {
                    let want = self.offset / BLOCK as u64;
                    let got = u64::from_le_bytes(self.head);
                    if got != want {
                        return Err(format!(
                            "stream corrupt: block {want} (at byte {}) is marked {got}: bytes lost, repeated or reordered",
                            want * BLOCK as u64
                        ));
                    }
                }
                self.offset += n as u64;
                buf = &buf[n..];
            } else {
                let n = (BLOCK - in_block).min(buf.len());
                self.offset += n as u64;
                buf = &buf[n..];
            }
        }
        Ok(())
    }
}

/// Checks that sequence numbers arrive as 0, 1, 2, …
#[derive(Debug, Default)]
pub(crate) struct SeqCheck {
    next: u64,
}

impl SeqCheck {
    pub(crate) fn check(&mut self, what: &str, got: u64) -> R<()> {
        if got != self.next {
            let why = if got > self.next {
                "values lost"
            } else {
                "values repeated or reordered"
            };
            return Err(format!(
                "{what}: expected value #{} but received #{got}: {why}",
                self.next
            ));
        }
        self.next += 1;
        Ok(())
    }
}

/// Payload shared by all 1 MiB messages of a process.
pub(crate) fn big_payload(len: usize) -> bytes::Bytes {
    bytes::Bytes::from((0..len).map(|i| (i % 253) as u8).collect::<Vec<u8>>())
}

/// Sets TCP_NODELAY, reporting failure.
pub(crate) fn nodelay(s: &tokio::net::TcpStream) -> R<()> {
    s.set_nodelay(true).ctx("TCP_NODELAY")
}
