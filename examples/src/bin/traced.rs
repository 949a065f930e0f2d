//! A call tree traced across two processes.
//!
//! `traced` starts itself again as `traced server`, connects to it and
//! calls `Greeter::greet`; the server's handler calls `Caller::name` back
//! over the same connection. With netchan's feature `trace-context`, every
//! span of that tree carries one `trace_id`: the client's `netchan.call`,
//! the server's `netchan.handle` (whose `parent_span_id` is the client's
//! span), the server's nested `netchan.call` and the client's
//! `netchan.handle` for it. Both processes log to stderr through
//! `tracing-subscriber`'s `fmt` (filter with `RUST_LOG`; the default is
//! `info,netchan=debug`).
//!
//! ```text
//! cargo run -p examples --bin traced                 # both processes
//! cargo run -p examples --bin traced -- server       # prints "listening on ADDR"
//! cargo run -p examples --bin traced -- client ADDR
//! ```

use std::io::BufRead;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use netchan::{Exporter, Session};
use tokio::sync::Notify;
use tracing::info;

/// What the server offers.
#[netchan::service]
pub trait Greeter {
    /// Greets the caller, asking it for its name first.
    async fn greet(&self) -> String;
}

/// What the client offers back.
#[netchan::service]
pub trait Caller {
    /// The caller's name.
    async fn name(&self) -> String;
}

struct Hello {
    peer: CallerClient,
    done: Arc<Notify>,
}

impl Greeter for Hello {
    async fn greet(&self) -> String {
        info!(process = "server", "greeting; asking the caller its name");
        let name = self
            .peer
            .name()
            .await
            .unwrap_or_else(|e| format!("stranger ({e})"));
        self.done.notify_one();
        format!("hello, {name}")
    }
}

struct Me;

impl Caller for Me {
    async fn name(&self) -> String {
        info!(process = "client", "asked for my name");
        "ada".into()
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,netchan=debug"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
}

/// Serves one greeting, then leaves.
async fn server() -> anyhow::Result<()> {
    let exp = Exporter::bind("127.0.0.1:0").await?;
    let done = Arc::new(Notify::new());
    let d = done.clone();
    exp.serve_each(move |session: &Session| {
        GreeterServer::new(Hello {
            peer: CallerClient::new(session),
            done: d.clone(),
        })
    });
    println!("listening on {}", exp.local_addr());
    tokio::time::timeout(Duration::from_secs(30), done.notified())
        .await
        .context("no greeting within 30 s")?;
    // Let the reply leave before the process ends.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

async fn client(addr: &str) -> anyhow::Result<()> {
    let session = Session::connect(addr).await?;
    session.serve(CallerServer::new(Me));
    let greeting = GreeterClient::new(&session).greet().await?;
    info!(process = "client", %greeting, "greeted");
    session.close().await;
    Ok(())
}

/// Starts `traced server`, reads its address, and runs the client.
async fn both() -> anyhow::Result<()> {
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("server")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("start the server process")?;
    let stdout = child.stdout.take().context("the server's stdout")?;
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .map(|_| line)
    })
    .await??;
    let Some(addr) = line.trim().strip_prefix("listening on ") else {
        let _ = child.kill();
        bail!("the server printed {line:?}");
    };
    let result = client(addr).await;
    let status = tokio::task::spawn_blocking(move || child.wait()).await??;
    result?;
    if !status.success() {
        bail!("the server process failed: {status}");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => both().await,
        ["server"] => server().await,
        ["client", addr] => client(addr).await,
        _ => bail!("usage: traced [server | client ADDR]"),
    }
}
