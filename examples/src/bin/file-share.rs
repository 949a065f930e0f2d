//! The file-share app of the "bidirectional RPC with netchan" article, on
//! `#[netchan::service]` (see [`examples::file_share`]): each client
//! shares a directory and reads any other client's files through the
//! server, over its one outgoing connection — the server calls the
//! owner back on the owner's own connection.
//!
//! ```text
//! cargo run -p examples --bin file-share -- demo            # everything in one process
//! cargo run -p examples --bin file-share -- demo --tls
//!
//! cargo run -p examples --bin file-share -- server 127.0.0.1:8765
//! cargo run -p examples --bin file-share -- client --name alice --root /tmp/a 127.0.0.1:8765
//! cargo run -p examples --bin file-share -- client --name bob 127.0.0.1:8765
//! > list
//! alice
//! bob
//! > read alice notes.txt
//! ...
//! > read alice big.iso --out /tmp/big.iso
//! saved 734003200 bytes to /tmp/big.iso
//! ```
//!
//! With `--tls` the server makes a certificate (or loads `--cert/--key`)
//! and prints its fingerprint; clients pass it as `--tls --pin FP`, or
//! trust a CA with `--tls --ca FILE [--server-name NAME]`.
//!
//! A client reads commands from stdin (`help` lists them) and prints a
//! prompt only when stdin is a terminal; an error is one line on stderr,
//! and the next command goes on. Large files show a progress bar on
//! stderr when it is a terminal.
//!
//! Logs go to stderr: `RUST_LOG=netchan=debug cargo run -p examples --bin file-share -- …`
//! shows every connection opened, closed or failed (warnings only by default).

use std::io::{IsTerminal, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use clap::{Parser, Subcommand};
use examples::file_share::{self, Command, Member, SharedDir, receive, serve_hub};
use examples::{ClientTlsArgs, HostPort, ServerTlsArgs, TempDir};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use netchan::tls::{ClientTls, Identity, ServerTls};
use netchan::{Config, Exporter, Session};
use tokio::io::AsyncWriteExt;

/// `println!` that goes on when stdout is closed (`file-share demo | head`)
/// rather than panicking: what is printed is for the user, and the work
/// (serving, saving with `--out`, the demo's check) does not depend on it.
macro_rules! out {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Files at least this large get a progress bar.
const LARGE: u64 = 1 << 20;

/// The demo's deadline: it fails with the step it was on rather than hang.
const DEMO_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Parser)]
#[command(
    about = "Share directories between clients through one server (bidirectional RPC on netchan)"
)]
struct Args {
    #[command(subcommand)]
    role: Role,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// Serve clients on ADDR (host:port; port 0 picks one; the address is
    /// printed as "listening on ADDR").
    Server {
        /// Address to listen on.
        addr: HostPort,
        #[command(flatten)]
        tls: ServerTlsArgs,
    },
    /// Join the server at ADDR, share a directory, and run commands read
    /// from stdin (`help` lists them).
    Client {
        /// The name other clients read this one's files by.
        #[arg(long)]
        name: String,
        /// The directory to share (default: the current directory).
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        /// Address of the server.
        addr: HostPort,
        #[command(flatten)]
        tls: ClientTlsArgs,
    },
    /// A server and two clients in one process: one writes a file, the
    /// other lists the clients and reads it through the server.
    Demo {
        /// Run over TLS 1.3 (a fresh certificate, pinned by the clients).
        #[arg(long)]
        tls: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    examples::init_logging();
    let result = match Args::parse().role {
        Role::Server { addr, tls } => server(addr, tls).await,
        Role::Client {
            name,
            root,
            addr,
            tls,
        } => client(name, root, addr, tls).await,
        Role::Demo { tls } => demo(tls).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("file-share: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn server(addr: HostPort, tls: ServerTlsArgs) -> anyhow::Result<()> {
    let (config, identity) = tls.config(addr.host())?;
    let exporter = Exporter::bind_with(addr.for_bind(), config)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = exporter.local_addr();
    let _directory = serve_hub(&exporter, |line| out!("{line}"));
    // Failed handshakes (a wrong pin, a plaintext client) and broken
    // connections, for whoever runs the server.
    let mut errors = exporter.errors();
    tokio::spawn(async move {
        while let Some(e) = errors.next().await {
            eprintln!("file-share: {e}");
        }
    });
    // Before "listening on", so whoever waits for that line has both.
    if let Some(identity) = &identity {
        out!("tls fingerprint {}", identity.fingerprint());
    }
    out!("listening on {local}");
    match &identity {
        Some(id) => eprintln!(
            "clients join with: file-share client --name NAME --tls --pin {} {local}",
            id.fingerprint()
        ),
        None => eprintln!("clients join with: file-share client --name NAME {local}"),
    }
    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    out!("stopping");
    exporter.shutdown().await;
    Ok(())
}

async fn client(
    name: String,
    root: Option<PathBuf>,
    addr: HostPort,
    tls: ClientTlsArgs,
) -> anyhow::Result<()> {
    file_share::check_name(&name).map_err(|e| anyhow!(e))?;
    let root = match root {
        Some(root) => root,
        None => std::env::current_dir().context("cannot find the current directory")?,
    };
    let dir = SharedDir::new(&root)?;
    let config = tls.config(addr.for_connect().0)?;
    let session = Session::connect_with(addr.for_connect(), config)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    let member = Member::join(&session, dir.clone(), &name).await?;
    eprintln!(
        "joined {addr} as {name}, sharing {}; `help` lists the commands",
        dir.root().display()
    );

    let interactive = std::io::stdin().is_terminal();
    let mut lines = stdin_lines();
    loop {
        if interactive {
            eprint!("> ");
            let _ = std::io::stderr().flush();
        }
        let line = tokio::select! {
            line = lines.recv() => line,
            // Only notices a server that went away while we wait for input.
            why = session.closed() => bail!("the server ended the connection: {why}"),
        };
        let line = match line {
            Some(Ok(line)) => line,
            Some(Err(e)) => return Err(e).context("cannot read stdin"),
            None => break,
        };
        match Command::parse(&line) {
            Ok(Command::Quit) => break,
            Ok(command) => {
                if let Err(e) = run(&member, command).await {
                    eprintln!("error: {e}");
                }
            }
            Err(e) => eprintln!("error: {e}"),
        }
    }
    member.leave().await;
    Ok(())
}

/// Lines of stdin, read on a plain thread: tokio's stdin cannot be
/// cancelled, and would keep the runtime from ending while it waits. The
/// thread dies with the process.
fn stdin_lines() -> tokio::sync::mpsc::Receiver<std::io::Result<String>> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let stop = line.is_err();
            if tx.blocking_send(line).is_err() || stop {
                return;
            }
        }
    });
    rx
}

/// Runs one command; an error is one line for the user.
async fn run(member: &Member, command: Command) -> Result<(), String> {
    match command {
        Command::Nothing | Command::Quit => {}
        Command::Help => out!("{}", file_share::HELP),
        Command::Echo(text) => out!("{text}"),
        Command::List => {
            for name in member.list().await? {
                out!("{name}");
            }
        }
        Command::Stats => {
            for line in member.stats().await? {
                out!("{line}");
            }
        }
        Command::Read { client, path, out } => {
            let download = member.read(&client, &path).await?;
            match out {
                Some(file) => save(download, &file).await?,
                None => print(download).await?,
            }
        }
    }
    Ok(())
}

/// Saves a download to `file`; a partial file is removed.
async fn save(download: file_share::Download, file: &Path) -> Result<(), String> {
    let bar = progress_bar(download.size, true);
    let mut out = tokio::fs::File::create(file)
        .await
        .map_err(|e| format!("cannot create {}: {e}", file.display()))?;
    let result = receive(download, &mut out, |n| bar.set_position(n)).await;
    bar.finish_and_clear();
    drop(out);
    match result {
        Ok(r) => {
            out!("saved {} bytes to {}", r.bytes, file.display());
            Ok(())
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(file).await;
            Err(e)
        }
    }
}

/// Prints a download to stdout.
async fn print(download: file_share::Download) -> Result<(), String> {
    let stdout_is_terminal = std::io::stdout().is_terminal();
    // A bar and the file on one terminal would garble each other.
    let bar = progress_bar(download.size, !stdout_is_terminal);
    let mut stdout = tokio::io::stdout();
    let result = receive(download, &mut stdout, |n| bar.set_position(n)).await;
    bar.finish_and_clear();
    let r = result?;
    // On a terminal, end the file's last line so the prompt starts its own.
    if stdout_is_terminal && r.last.is_some_and(|b| b != b'\n') {
        let _ = stdout.write_all(b"\n").await;
        let _ = stdout.flush().await;
    }
    Ok(())
}

/// A progress bar on stderr for a large file when stderr is a terminal
/// (and `wanted`); otherwise a hidden one.
fn progress_bar(size: u64, wanted: bool) -> ProgressBar {
    if !wanted || size < LARGE || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(size);
    if let Ok(style) = ProgressStyle::with_template(
        "{bytes:>10} / {total_bytes} [{wide_bar}] {bytes_per_sec}, {eta} left",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

async fn demo(tls: bool) -> anyhow::Result<()> {
    let mut step = 0;
    match tokio::time::timeout(DEMO_TIMEOUT, demo_steps(tls, &mut step)).await {
        Ok(r) => r,
        Err(_) => {
            bail!("the demo did not finish within {DEMO_TIMEOUT:?} (stuck after step {step})")
        }
    }
}

/// Prints step `n` of the demo.
fn step(n: &mut u32, text: impl std::fmt::Display) {
    *n += 1;
    out!("{n}. {text}");
}

async fn demo_steps(tls: bool, n: &mut u32) -> anyhow::Result<()> {
    let temp = TempDir::new("file-share-demo")?;
    let alice_dir = temp.path().join("alice");
    let bob_dir = temp.path().join("bob");
    std::fs::create_dir(&alice_dir)?;
    std::fs::create_dir(&bob_dir)?;

    let (server_config, client_config, how) = if tls {
        let identity = Identity::self_signed(&["localhost", "127.0.0.1"])?;
        let pin = identity.fingerprint();
        (
            Config::default().tls_server(ServerTls::new(identity)),
            Config::default().tls_client(ClientTls::pinned(pin)),
            format!("TLS 1.3; the clients pin its certificate {pin}"),
        )
    } else {
        let plain = "plaintext, on loopback only".to_owned();
        (Config::default(), Config::default(), plain)
    };
    let exporter = Exporter::bind_with("127.0.0.1:0", server_config).await?;
    let addr = exporter.local_addr();
    let _directory = serve_hub(&exporter, |line| out!("   server: {line}"));
    step(n, format_args!("server listening on {addr} ({how})"));

    let alice = demo_client(addr, &client_config, &alice_dir, "alice").await?;
    step(
        n,
        format_args!("alice joined, sharing {}", alice_dir.display()),
    );
    let bob = demo_client(addr, &client_config, &bob_dir, "bob").await?;
    step(n, format_args!("bob joined, sharing {}", bob_dir.display()));

    let written = demo_file();
    std::fs::write(alice_dir.join("hello.txt"), &written)?;
    let first_line = written.split(|b| *b == b'\n').next().unwrap_or_default();
    step(
        n,
        format_args!(
            "alice wrote hello.txt: {} bytes, beginning {:?}",
            written.len(),
            String::from_utf8_lossy(first_line)
        ),
    );

    let names = bob.list().await.map_err(|e| anyhow!(e))?;
    step(
        n,
        format_args!("bob lists the clients: {}", names.join(", ")),
    );
    ensure!(
        names == ["alice", "bob"],
        "the list should be alice and bob"
    );

    let download = bob
        .read("alice", "hello.txt")
        .await
        .map_err(|e| anyhow!(e))?;
    step(
        n,
        format_args!(
            "bob asks the server for alice:hello.txt; alice opened it: {} bytes on their way",
            download.size
        ),
    );
    let copy = bob_dir.join("from-alice.txt");
    let mut out = tokio::fs::File::create(&copy).await?;
    let received = receive(download, &mut out, |_| {})
        .await
        .map_err(|e| anyhow!(e))?;
    drop(out);
    let read = std::fs::read(&copy)?;
    step(
        n,
        format_args!(
            "bob received {} bytes in {:.1} ms through the server, in 64 KiB chunks, into {}",
            received.bytes,
            received.elapsed.as_secs_f64() * 1e3,
            copy.display()
        ),
    );

    let escape = "../bob/from-alice.txt";
    match bob.read("alice", escape).await {
        Err(e) => step(n, format_args!("bob asks for alice:{escape}: {e}")),
        Ok(_) => bail!("alice served {escape}, which is outside her directory"),
    }

    alice.leave().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let names = loop {
        let names = bob.list().await.map_err(|e| anyhow!(e))?;
        if !names.iter().any(|n| n == "alice") {
            break names;
        }
        ensure!(
            Instant::now() < deadline,
            "alice is still listed 5 s after she left"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    step(
        n,
        format_args!("alice left; bob lists the clients: {}", names.join(", ")),
    );

    bob.leave().await;
    exporter.shutdown().await;
    ensure!(
        read == written,
        "the bytes bob read differ from the bytes alice wrote"
    );
    out!(
        "ok: the {} bytes bob read are the bytes alice wrote",
        read.len()
    );
    Ok(())
}

async fn demo_client(
    addr: SocketAddr,
    config: &Config,
    dir: &Path,
    name: &str,
) -> anyhow::Result<Member> {
    let session = Session::connect_with(addr, config.clone())
        .await
        .with_context(|| format!("{name} cannot connect to {addr}"))?;
    Member::join(&session, SharedDir::new(dir)?, name).await
}

/// About 3 MiB of numbered lines: large enough to go in many chunks,
/// readable if printed.
fn demo_file() -> Vec<u8> {
    let mut text = b"hello from alice\n".to_vec();
    let mut i = 0u64;
    while text.len() < 3 << 20 {
        i += 1;
        let _ = writeln!(
            text,
            "line {i:>6}: the quick brown fox jumps over the lazy dog"
        );
    }
    text
}
