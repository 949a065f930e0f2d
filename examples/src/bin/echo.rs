//! Go's "channels of channels" echo server, on netchan.
//!
//! In Go's old netchan a channel could not travel over a network channel,
//! so the echo server exported a fresh pair of named channels per client
//! and sent the client their names. In netchan a channel *can* travel
//! inside a message: the server exports one receiver, `echo.connect`, and
//! each client sends on it a [`Connect`] carrying its own private pair of
//! channels — a `Receiver<String>` the server reads the client's lines
//! from, and a `Sender<String>` it sends the echoes on. No names are made
//! up, none are left behind when the client goes.
//!
//! Run the server, then any number of clients:
//!
//! ```text
//! cargo run -p examples --bin echo -- server 127.0.0.1:2345
//! cargo run -p examples --bin echo -- client 127.0.0.1:2345                 # type lines; Ctrl-D ends
//! cargo run -p examples --bin echo -- client 127.0.0.1:2345 --message hi --count 3
//! ```
//!
//! Over TLS 1.3: `server --tls` makes a certificate (or `--cert FILE --key
//! FILE` loads one) and prints its fingerprint; clients trust it with
//! `--tls --pin FINGERPRINT`, or with `--tls --ca FILE` for a certificate
//! a CA issued. Without TLS a server listens on loopback only (netchan
//! refuses plaintext elsewhere), so `:2345` needs `--tls`.
//!
//! ```text
//! cargo run -p examples --bin echo -- server --tls 127.0.0.1:2345          # prints "tls fingerprint FP"
//! cargo run -p examples --bin echo -- client --tls --pin FP 127.0.0.1:2345
//! ```
//!
//! The server prints one line per client connected and one per client
//! disconnected; Ctrl-C stops it cleanly.
//!
//! Logs go to stderr: `RUST_LOG=netchan=debug cargo run -p examples --bin echo -- …`
//! shows every connection opened, closed or failed (warnings only by default).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::{Parser, Subcommand};
use examples::{ClientTlsArgs, HostPort, ServerTlsArgs};
use netchan::{Exporter, Receiver, Sender, Session};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

/// The name the server exports its connect inbox under.
const CONNECT: &str = "echo.connect";

/// Buffer of each private channel: a client may have this many lines in
/// flight before its sends wait for the server.
const CAPACITY: usize = 16;

/// How long a stopping server waits for its clients' handlers to finish.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// What a client sends on `echo.connect`: its private channel pair.
#[derive(Debug, Serialize, Deserialize)]
struct Connect {
    /// Who is connecting, for the server's log.
    name: String,
    /// The client's lines: the server receives them here.
    lines: Receiver<String>,
    /// The server sends each line back here.
    replies: Sender<String>,
}

#[derive(Debug, Parser)]
#[command(about = "Go's channels-of-channels echo server and client, on netchan")]
struct Args {
    #[command(subcommand)]
    role: Role,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// Serve echo clients on ADDR (host:port; `:2345` for every
    /// interface, which needs --tls).
    Server {
        /// Address to listen on.
        addr: HostPort,
        #[command(flatten)]
        tls: ServerTlsArgs,
    },
    /// Connect to the server at ADDR and echo lines: from stdin, or
    /// `--count` copies of `--message`.
    Client {
        /// Address of the server.
        addr: HostPort,
        /// Send this line instead of reading stdin.
        #[arg(long, requires = "count")]
        message: Option<String>,
        /// How many times to send `--message`.
        #[arg(long, requires = "message")]
        count: Option<u64>,
        /// Name shown in the server's log (default: `pid N`).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        tls: ClientTlsArgs,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    examples::init_logging();
    let args = Args::parse();
    let result = match args.role {
        Role::Server { addr, tls } => server(addr, tls).await,
        Role::Client {
            addr,
            message,
            count,
            name,
            tls,
        } => {
            let name = name.unwrap_or_else(|| format!("pid {}", std::process::id()));
            match (message, count) {
                (Some(message), Some(count)) => client_batch(addr, tls, name, message, count).await,
                _ => client_interactive(addr, tls, name).await,
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` keeps anyhow's chain of causes on one line.
            eprintln!("echo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn server(addr: HostPort, tls: ServerTlsArgs) -> anyhow::Result<()> {
    let (config, identity) = tls.config(addr.host())?;
    let exporter = Exporter::bind_with(addr.for_bind(), config)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let mut connects = exporter.export_receiver::<Connect>(CONNECT, CAPACITY)?;
    if let Some(identity) = &identity {
        println!("tls fingerprint {}", identity.fingerprint());
    }
    println!(
        "echo server listening on {} (export {CONNECT:?})",
        exporter.local_addr()
    );

    let mut handlers = JoinSet::new();
    let mut next_id = 0u64;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            r = connects.recv() => match r {
                Ok(Some(connect)) => {
                    next_id += 1;
                    println!("client {next_id} ({}) connected", connect.name);
                    handlers.spawn(echo_for(next_id, connect));
                }
                // Only `hangup` or `shutdown` ends an exported receiver.
                Ok(None) => break,
                // One request that did not decode (a client built with
                // another `Connect`); the inbox goes on.
                Err(e) => eprintln!("echo: a connect request was dropped: {e}"),
            },
            // Reap finished handlers so the set does not grow forever.
            Some(_) = handlers.join_next() => {}
            r = &mut ctrl_c => {
                r.context("cannot wait for Ctrl-C")?;
                println!("stopping");
                break;
            }
        }
    }
    // Closing every session ends every private channel, so each handler
    // sees its client's lines end and prints its line.
    exporter.shutdown().await;
    let all_done = async { while handlers.join_next().await.is_some() {} };
    if tokio::time::timeout(STOP_GRACE, all_done).await.is_err() {
        handlers.abort_all();
    }
    Ok(())
}

/// Echoes one client's lines until it hangs up or its connection goes.
async fn echo_for(id: u64, connect: Connect) {
    let Connect {
        name,
        mut lines,
        replies,
    } = connect;
    let mut echoed = 0u64;
    let why = loop {
        match lines.recv().await {
            Ok(Some(line)) => {
                if replies.send(line).await.is_err() {
                    break "its reply channel closed".to_owned();
                }
                echoed += 1;
            }
            Ok(None) => break "hung up".to_owned(),
            Err(e) => break e.to_string(),
        }
    };
    println!("client {id} ({name}) disconnected: {why}; {echoed} lines echoed");
}

/// A connected client: the session and its private channel pair.
struct Client {
    session: Session,
    lines: Sender<String>,
    replies: Receiver<String>,
}

impl Client {
    async fn connect(addr: &HostPort, tls: &ClientTlsArgs, name: String) -> anyhow::Result<Client> {
        let config = tls.config(addr.for_connect().0)?;
        let session = Session::connect_with(addr.for_connect(), config)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        let connect = session
            .import_sender::<Connect>(CONNECT)
            .await
            .with_context(|| format!("{addr} is not an echo server"))?;
        let (lines, lines_rx) = netchan::channel::<String>(CAPACITY);
        let (replies_tx, replies) = netchan::channel::<String>(CAPACITY);
        let hello = Connect {
            name,
            lines: lines_rx,
            replies: replies_tx,
        };
        connect
            .send(hello)
            .await
            .map_err(|_| anyhow!("the server closed the connection before we could join"))?;
        // `connect` drops here: the private pair is all we need from now on.
        Ok(Client {
            session,
            lines,
            replies,
        })
    }

    /// Sends `line` and waits for its echo.
    async fn echo(&mut self, line: String) -> anyhow::Result<String> {
        self.lines
            .send(line)
            .await
            .map_err(|_| anyhow!("the server closed our line channel"))?;
        self.reply().await
    }

    async fn reply(&mut self) -> anyhow::Result<String> {
        match self.replies.recv().await {
            Ok(Some(reply)) => Ok(reply),
            Ok(None) => bail!("the server hung up"),
            Err(e) => Err(e).context("no reply from the server"),
        }
    }

    /// Hangs up our line channel, waits for the server to end the reply
    /// channel in turn (so it saw every line), then closes the session.
    async fn finish(self) -> anyhow::Result<()> {
        let Client {
            session,
            lines,
            mut replies,
        } = self;
        drop(lines);
        let end = replies.recv().await;
        session.close().await;
        match end {
            Ok(None) => Ok(()),
            Ok(Some(extra)) => bail!("unexpected reply after the last line: {extra:?}"),
            Err(e) => Err(e).context("the connection failed while hanging up"),
        }
    }
}

async fn client_batch(
    addr: HostPort,
    tls: ClientTlsArgs,
    name: String,
    message: String,
    count: u64,
) -> anyhow::Result<()> {
    let mut client = Client::connect(&addr, &tls, name).await?;
    for i in 1..=count {
        let reply = client.echo(message.clone()).await?;
        if reply != message {
            bail!("reply {i} was {reply:?}, not {message:?}");
        }
        println!("{i}: {reply}");
    }
    client.finish().await?;
    println!("{count} replies, all equal to what was sent");
    Ok(())
}

async fn client_interactive(
    addr: HostPort,
    tls: ClientTlsArgs,
    name: String,
) -> anyhow::Result<()> {
    let mut client = Client::connect(&addr, &tls, name).await?;
    eprintln!("connected to {addr}; type lines, Ctrl-D to end");
    // A plain thread reads stdin: tokio's stdin read cannot be cancelled,
    // and would keep the runtime from shutting down if the server went
    // away while we wait for a line. This thread simply dies with the
    // process.
    let (line_tx, mut stdin) = tokio::sync::mpsc::channel::<std::io::Result<String>>(1);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let stop = line.is_err();
            if line_tx.blocking_send(line).is_err() || stop {
                return;
            }
        }
    });
    loop {
        tokio::select! {
            line = stdin.recv() => match line {
                Some(Ok(line)) => {
                    let reply = client.echo(line).await?;
                    println!("{reply}");
                }
                Some(Err(e)) => return Err(e).context("cannot read stdin"),
                None => break,
            },
            // Nothing is expected here between lines: this branch only
            // notices a server that went away while we wait for input.
            r = client.reply() => {
                let extra = r?;
                bail!("unexpected reply {extra:?}");
            }
        }
    }
    client.finish().await
}
