//! `file-share` driven as a user drives it: a `file-share server` process
//! and `file-share client` processes fed commands on stdin, each client
//! sharing a temporary directory; plus `file-share demo`.
//!
//! Every wait is bounded; child processes are killed when a test ends,
//! however it ends; everything runs on 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use examples::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_file-share");

/// The longest any single step may take (generous: debug builds, busy CI).
const TIMEOUT: Duration = Duration::from_secs(30);

/// A running `file-share` process whose stdout and stderr are read line by
/// line on threads; killed on drop.
struct Proc {
    label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    /// stderr lines taken so far, for failure messages.
    stderr_seen: Vec<String>,
    marks: u32,
}

fn lines_of(from: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

impl Proc {
    fn spawn(label: &str, args: &[&str]) -> Proc {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        Proc {
            label: label.to_owned(),
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
            stderr_seen: Vec::new(),
            marks: 0,
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("{}: cannot write {line:?}: {e}", self.label));
    }

    /// Ends the process's input (as Ctrl-D does).
    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    fn out_line(&mut self) -> String {
        match self.stdout.recv_timeout(TIMEOUT) {
            Ok(line) => line,
            Err(e) => {
                let more: Vec<String> = self.stderr.try_iter().collect();
                self.stderr_seen.extend(more);
                panic!(
                    "{}: no line on stdout ({e:?}); stderr: {:?}",
                    self.label, self.stderr_seen
                )
            }
        }
    }

    fn err_line(&mut self) -> String {
        match self.stderr.recv_timeout(TIMEOUT) {
            Ok(line) => {
                self.stderr_seen.push(line.clone());
                line
            }
            Err(e) => panic!(
                "{}: no line on stderr ({e:?}); stderr so far: {:?}",
                self.label, self.stderr_seen
            ),
        }
    }

    /// stdout lines until one that `is_it` accepts, which is returned.
    fn out_until(&mut self, is_it: impl Fn(&str) -> bool) -> (Vec<String>, String) {
        let mut before = Vec::new();
        loop {
            let line = self.out_line();
            if is_it(&line) {
                return (before, line);
            }
            before.push(line);
        }
    }

    /// Runs a client command and returns what it printed on stdout: the
    /// command is followed by `echo MARK`, and its output ends where the
    /// mark appears (commands run in order).
    fn run(&mut self, command: &str) -> Vec<String> {
        self.marks += 1;
        let mark = format!("--- end of command {} ---", self.marks);
        self.send(command);
        self.send(&format!("echo {mark}"));
        self.out_until(|l| l == mark).0
    }

    /// Waits for the process to end by itself.
    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {TIMEOUT:?}",
                self.label
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The rest of stderr, once the process has ended.
    fn rest_of_stderr(&mut self) -> Vec<String> {
        rest_of(&self.stderr)
    }

    /// The rest of stdout, once the process has ended.
    fn rest_of_stdout(&mut self) -> Vec<String> {
        rest_of(&self.stdout)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every line still to come from a reader thread. Lines the process wrote
/// before it exited may still be on their way through the thread, so
/// this reads up to end-of-file, where the thread ends; bounded all the
/// same.
fn rest_of(lines: &mpsc::Receiver<String>) -> Vec<String> {
    let mut rest = Vec::new();
    while let Ok(line) = lines.recv_timeout(TIMEOUT) {
        rest.push(line);
    }
    rest
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A server and its address (and certificate fingerprint with TLS).
struct Server {
    proc: Proc,
    addr: String,
    pin: Option<String>,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let mut args = vec!["server", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut proc = Proc::spawn("server", &args);
        let (before, listening) = proc.out_until(|l| l.starts_with("listening on "));
        let addr = listening["listening on ".len()..].to_owned();
        let pin = before
            .iter()
            .find_map(|l| l.strip_prefix("tls fingerprint "))
            .map(str::to_owned);
        Server { proc, addr, pin }
    }

    /// `client` arguments that reach this server (pinning it with TLS).
    fn client_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(pin) = &self.pin {
            args.extend(["--tls".to_owned(), "--pin".to_owned(), pin.clone()]);
        }
        args.push(self.addr.clone());
        args
    }
}

/// Starts `file-share client --name NAME --root DIR ARGS..` and waits until
/// it joined.
fn client(name: &str, root: &Path, args: &[String]) -> Proc {
    let mut all = vec!["client", "--name", name, "--root", root.to_str().unwrap()];
    all.extend(args.iter().map(String::as_str));
    let mut proc = Proc::spawn(name, &all);
    let first = proc.err_line();
    assert!(
        first.starts_with("joined 127.0.0.1:") && first.contains(&format!(" as {name},")),
        "{name}: unexpected first line {first:?}"
    );
    proc
}

/// A server, alice and bob, each client with its own directory.
struct Share {
    server: Server,
    alice: Proc,
    bob: Proc,
    alice_dir: PathBuf,
    bob_dir: PathBuf,
    // Last: removed once the processes are gone.
    temp: TempDir,
}

impl Share {
    fn start(server_args: &[&str]) -> Share {
        let temp = TempDir::new("file-share-test").unwrap();
        let alice_dir = temp.path().join("alice");
        let bob_dir = temp.path().join("bob");
        std::fs::create_dir(&alice_dir).unwrap();
        std::fs::create_dir(&bob_dir).unwrap();
        let server = Server::start(server_args);
        let args = server.client_args();
        let alice = client("alice", &alice_dir, &args);
        let bob = client("bob", &bob_dir, &args);
        Share {
            server,
            alice,
            bob,
            alice_dir,
            bob_dir,
            temp,
        }
    }
}

/// Runs `list` on `proc` until it prints `want` (joins and leaves reach
/// the server a moment after the client sees them).
fn await_list(proc: &mut Proc, want: &[&str]) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let got = proc.run("list");
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: list printed {got:?}, not {want:?}",
            proc.label
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `len` bytes of every value, in an order no two runs of a file share.
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Quotes a path as one word of a client command.
fn word(path: &Path) -> String {
    let s = path.to_str().unwrap();
    assert!(!s.contains('\''), "test paths have no quotes: {s}");
    format!("'{s}'")
}

#[test]
fn list_shows_every_connected_client() {
    let mut s = Share::start(&[]);
    await_list(&mut s.bob, &["alice", "bob"]);
    await_list(&mut s.alice, &["alice", "bob"]);
}

#[test]
fn stats_shows_what_the_server_sees_of_the_connection() {
    let mut s = Share::start(&[]);
    await_list(&mut s.bob, &["alice", "bob"]);
    let lines = s.bob.run("stats");
    assert!(
        lines[0].starts_with("connection: up ") && lines[0].ends_with("2 clients joined"),
        "{lines:?}"
    );
    assert!(lines[1].starts_with("server sent "), "{lines:?}");
    // The hub's call channel from bob, at least, with the calls so far.
    assert!(
        lines
            .iter()
            .any(|l| l.contains("netchan.rpc/file-share.hub.v1") && l.contains("receive")),
        "{lines:?}"
    );
}

#[test]
fn read_prints_a_small_file_of_another_client_and_of_oneself() {
    let mut s = Share::start(&[]);
    std::fs::write(
        s.alice_dir.join("hello.txt"),
        "hello from alice\nsecond line\n",
    )
    .unwrap();
    std::fs::create_dir(s.alice_dir.join("sub dir")).unwrap();
    std::fs::write(s.alice_dir.join("sub dir/n.txt"), "nested\n").unwrap();
    std::fs::write(s.bob_dir.join("mine.txt"), "bob's own\n").unwrap();

    assert_eq!(
        s.bob.run("read alice hello.txt"),
        ["hello from alice", "second line"]
    );
    assert_eq!(s.bob.run("read alice 'sub dir/n.txt'"), ["nested"]);
    // The server calls bob back over the connection bob's call came on.
    assert_eq!(s.bob.run("read bob mine.txt"), ["bob's own"]);
    assert_eq!(s.alice.run("read bob mine.txt"), ["bob's own"]);
}

#[test]
fn read_out_saves_a_multi_megabyte_file_byte_for_byte() {
    let mut s = Share::start(&[]);
    let bytes = noise(12 << 20);
    std::fs::write(s.alice_dir.join("big.bin"), &bytes).unwrap();
    let copy = s.temp.path().join("copy.bin");

    let printed = s
        .bob
        .run(&format!("read alice big.bin --out {}", word(&copy)));
    assert_eq!(
        printed,
        [format!("saved {} bytes to {}", bytes.len(), copy.display())]
    );
    assert!(std::fs::read(&copy).unwrap() == bytes, "the copy differs");

    // Twice at once, from both clients: neither transfer disturbs the other.
    let copy_a = s.temp.path().join("copy-a.bin");
    let copy_b = s.temp.path().join("copy-b.bin");
    s.alice
        .send(&format!("read alice big.bin --out {}", word(&copy_a)));
    s.bob
        .send(&format!("read alice big.bin --out {}", word(&copy_b)));
    for (proc, copy) in [(&mut s.alice, &copy_a), (&mut s.bob, &copy_b)] {
        let line = proc.out_line();
        assert_eq!(
            line,
            format!("saved {} bytes to {}", bytes.len(), copy.display())
        );
        assert!(std::fs::read(copy).unwrap() == bytes, "{copy:?} differs");
    }
}

#[test]
fn unknown_client_missing_file_and_escapes_each_give_one_error_line_and_the_client_goes_on() {
    let mut s = Share::start(&[]);
    std::fs::write(s.alice_dir.join("ok.txt"), "fine\n").unwrap();
    // Next to alice's directory: readable by path, but not shared.
    std::fs::write(s.temp.path().join("secret.txt"), "secret\n").unwrap();
    let outside = s.temp.path().join("secret.txt");
    let mut bad: Vec<(String, &str)> = vec![
        ("read carol ok.txt".into(), "no client named \"carol\""),
        ("read alice missing.txt".into(), "missing.txt: no such file"),
        (
            "read alice ../secret.txt".into(),
            "outside the shared directory",
        ),
        (
            "read alice ../bob/../../secret.txt".into(),
            "outside the shared directory",
        ),
        (
            format!("read alice {}", word(&outside)),
            "outside the shared directory",
        ),
        ("read alice .".into(), "not a file"),
        ("read alice".into(), "usage: read CLIENT PATH"),
        ("fetch alice ok.txt".into(), "unknown command \"fetch\""),
    ];
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&outside, s.alice_dir.join("link")).unwrap();
        std::os::unix::fs::symlink(s.temp.path(), s.alice_dir.join("up")).unwrap();
        bad.push(("read alice link".into(), "outside the shared directory"));
        bad.push((
            "read alice up/secret.txt".into(),
            "outside the shared directory",
        ));
        bad.push((
            "read alice up/nothing".into(),
            "outside the shared directory",
        ));
    }
    for (command, why) in &bad {
        assert_eq!(s.bob.run(command), Vec::<String>::new(), "{command}");
        let line = s.bob.err_line();
        assert!(
            line.starts_with("error: ") && line.contains(why),
            "{command}: expected one error line with {why:?}, got {line:?}"
        );
        // Still answering.
        assert_eq!(s.bob.run("read alice ok.txt"), ["fine"], "after {command}");
    }
    s.bob.send("quit");
    assert!(s.bob.wait().success());
    let rest = s.bob.rest_of_stderr();
    assert!(
        rest.iter().all(|l| !l.starts_with("error")),
        "more error lines than commands that failed: {rest:?}"
    );
}

#[test]
fn a_client_that_quits_or_dies_vanishes_from_list() {
    let mut s = Share::start(&[]);
    let carol_dir = s.temp.path().join("carol");
    std::fs::create_dir(&carol_dir).unwrap();
    let mut carol = client("carol", &carol_dir, &s.server.client_args());
    await_list(&mut s.bob, &["alice", "bob", "carol"]);

    s.alice.send("quit");
    assert!(s.alice.wait().success(), "quit should exit 0");
    await_list(&mut s.bob, &["bob", "carol"]);

    // Killed, without a goodbye: the server notices the broken connection.
    carol.kill();
    await_list(&mut s.bob, &["bob"]);
    assert_eq!(
        s.bob.run("read alice ok.txt"),
        Vec::<String>::new(),
        "alice is gone"
    );
    assert!(s.bob.err_line().contains("no client named \"alice\""));

    // End of input leaves as `quit` does.
    s.bob.close_stdin();
    assert!(s.bob.wait().success());
    // The server logs a join just after the client appears in `list`, and
    // its lines reach us through a reader thread: wait for them (bounded).
    let mut log = Vec::new();
    for name in ["alice", "bob", "carol"] {
        let joined = format!("{name} joined");
        while !log.contains(&joined) {
            log.push(s.server.proc.out_line());
        }
    }
}

#[test]
fn a_name_already_connected_is_refused() {
    let s = Share::start(&[]);
    let dir = s.temp.path().join("other");
    std::fs::create_dir(&dir).unwrap();
    let mut args = vec!["client", "--name", "alice", "--root", dir.to_str().unwrap()];
    args.push(&s.server.addr);
    let mut second = Proc::spawn("second alice", &args);
    let line = second.err_line();
    assert!(
        line.contains("cannot join as \"alice\"") && line.contains("taken"),
        "{line}"
    );
    assert_eq!(second.wait().code(), Some(1));
}

#[test]
fn tls_server_and_pinned_clients_list_and_read() {
    let mut s = Share::start(&["--tls"]);
    assert!(
        s.server.pin.is_some(),
        "a TLS server prints its fingerprint"
    );
    std::fs::write(s.alice_dir.join("hello.txt"), "over tls\n").unwrap();
    let bytes = noise(3 << 20);
    std::fs::write(s.alice_dir.join("big.bin"), &bytes).unwrap();
    await_list(&mut s.bob, &["alice", "bob"]);
    assert_eq!(s.bob.run("read alice hello.txt"), ["over tls"]);
    let copy = s.bob_dir.join("copy.bin");
    let printed = s
        .bob
        .run(&format!("read alice big.bin --out {}", word(&copy)));
    assert_eq!(printed.len(), 1, "{printed:?}");
    assert!(std::fs::read(&copy).unwrap() == bytes, "the copy differs");
}

#[test]
fn tls_clients_that_cannot_trust_the_server_fail_with_the_reason() {
    let s = Share::start(&["--tls"]);
    let dir = s.temp.path().join("eve");
    std::fs::create_dir(&dir).unwrap();
    let root = dir.to_str().unwrap();
    let wrong_pin = "00".repeat(32);
    let cases: [(&[&str], &str); 3] = [
        (&["--tls", "--pin", &wrong_pin], "does not match the pinned"),
        (&[], "peer speaks TLS but this side does not"),
        (&["--tls"], "--tls needs a way to trust the server"),
    ];
    for (tls, why) in cases {
        let mut args = vec!["client", "--name", "eve", "--root", root];
        args.extend_from_slice(tls);
        args.push(&s.server.addr);
        let mut eve = Proc::spawn("eve", &args);
        let line = eve.err_line();
        assert!(line.contains(why), "{tls:?}: {line}");
        assert_eq!(eve.wait().code(), Some(1), "{tls:?}");
    }
}

#[test]
fn tls_server_with_cert_and_key_files_is_trusted_through_ca() {
    let temp = TempDir::new("file-share-test").unwrap();
    // Self-signed: the certificate is its own CA.
    let identity = netchan::tls::Identity::self_signed(&["localhost", "127.0.0.1"]).unwrap();
    let cert = temp.path().join("cert.pem");
    let key = temp.path().join("key.pem");
    std::fs::write(&cert, identity.cert_pem()).unwrap();
    std::fs::write(&key, identity.key_pem()).unwrap();
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let server = Server::start(&["--tls", "--cert", cert, "--key", key]);
    assert_eq!(
        server.pin.as_deref(),
        Some(identity.fingerprint().to_string().as_str())
    );
    std::fs::write(temp.path().join("f.txt"), "through a CA\n").unwrap();
    for extra in [&[][..], &["--server-name", "localhost"][..]] {
        let mut args = vec![
            "--tls".to_owned(),
            "--ca".to_owned(),
            cert.to_owned(),
            server.addr.clone(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let mut c = client("carol", temp.path(), &args);
        assert_eq!(c.run("read carol f.txt"), ["through a CA"]);
        c.send("quit");
        assert!(c.wait().success());
    }
    let mut args = vec![
        "client",
        "--name",
        "eve",
        "--root",
        temp.path().to_str().unwrap(),
    ];
    args.extend(["--tls", "--ca", cert, "--server-name", "example.org"]);
    args.push(&server.addr);
    let mut eve = Proc::spawn("eve", &args);
    let line = eve.err_line();
    assert!(line.contains("example.org"), "{line}");
    assert_eq!(eve.wait().code(), Some(1));
}

fn demo(args: &[&str]) {
    let mut demo = Proc::spawn("demo", args);
    let status = demo.wait();
    let out = demo.rest_of_stdout();
    let err = demo.rest_of_stderr();
    assert!(
        status.success(),
        "{status}; stdout {out:#?}; stderr {err:#?}"
    );
    assert!(
        out.iter()
            .any(|l| l.contains("bob lists the clients: alice, bob")),
        "{out:#?}"
    );
    // The server logs a client leaving once it has seen the connection
    // end, so its last "left" line may come after the demo's verdict.
    assert!(out.iter().any(|l| l.starts_with("ok: ")), "{out:#?}");
}

#[test]
fn demo_exits_zero() {
    demo(&["demo"]);
}

#[test]
fn demo_over_tls_exits_zero() {
    demo(&["demo", "--tls"]);
}
