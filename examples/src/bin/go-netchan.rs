//! A walk through Go's original `netchan` API, on netchan's `Exporter`
//! and `Importer` (an alias of `Session`).
//!
//! Go's package (2011) published channels by name on an `Exporter`; an
//! `Importer` connected and imported them by name. This program runs an
//! exporter and two importers in one process, over TCP on 127.0.0.1 with
//! a port picked by the system, and prints each step:
//!
//! | Go                                      | netchan                                        |
//! |-----------------------------------------|------------------------------------------------|
//! | `exp.Export("news", ch, netchan.Send)`  | `exporter.export_sender::<T>("news")`          |
//! | `exp.Export("votes", ch, netchan.Recv)` | `exporter.export_receiver::<T>("votes", cap)`  |
//! | `netchan.Import("tcp", addr)`           | `Importer::connect(addr)`                      |
//! | `imp.Import("news", ch, Recv, size)`    | `importer.import_receiver::<T>("news", size)`  |
//! | `imp.Import("votes", ch, Send, size)`   | `importer.import_sender::<T>("votes")`         |
//! | `imp.ImportNValues(name, ch, Recv, s, n)` | `importer.import_receiver_n::<T>(name, s, n)` |
//! | `Hangup(name)`                          | `hangup(name)` (either side)                   |
//! | `Drain(timeout)`                        | `drain(Some(timeout))`                         |
//! | `exp.Sync(timeout)`                     | `exporter.sync(Some(timeout))`                 |
//! | `imp.Errors()`                          | `importer.errors()`, a `Stream` of `Error`     |
//!
//! Where it differs from Go: imports are type-checked when they are made;
//! a send waits for room at the receiving end (Go's netchan behaved as if
//! buffered); `Hangup` drops nothing in flight; and a value that cannot be
//! decoded is an error on its channel and on `errors()`, never garbage.
//!
//! ```text
//! cargo run -p examples --bin go-netchan
//! ```
//!
//! It ends by itself in well under a second; every wait is bounded, so a
//! step that hangs fails with its name instead.
//!
//! Logs go to stderr: `RUST_LOG=netchan=debug cargo run -p examples --bin go-netchan -- …`
//! shows every connection opened, closed or failed (warnings only by default).

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use futures::StreamExt;
use netchan::{Error, Exporter, Importer, SendError};

/// Bound on every step: the walk must never hang.
const STEP: Duration = Duration::from_secs(5);

/// Runs `fut`, failing with `what` if it takes longer than [`STEP`].
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(STEP, fut)
        .await
        .map_err(|_| anyhow!("{what}: no result after {STEP:?}"))
}

/// Two programs may each define a `Point`: netchan compares message types
/// by name without module path, so these two match at import time. Their
/// fields differ, so the first value fails to decode (step 8).
mod v1 {
    /// The importer's idea of a point.
    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    pub(crate) struct Point {
        pub(crate) x: i32,
        pub(crate) y: i32,
    }
}

mod v2 {
    /// The exporter's (older) idea of a point: one field only.
    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    pub(crate) struct Point {
        pub(crate) x: i32,
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    examples::init_logging();
    let started = Instant::now();
    match walk().await {
        Ok(()) => {
            println!("done in {:.0?}", started.elapsed());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("go-netchan: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn walk() -> anyhow::Result<()> {
    // 1. The exporter: Go's NewExporter + ListenAndServe, then Export.
    println!("1. export");
    let exporter = Exporter::bind("127.0.0.1:0").await?;
    let addr = exporter.local_addr();
    // netchan.Send: the exporter sends, importers receive; each value goes
    // to exactly one importer.
    let news = exporter.export_sender::<String>("news")?;
    // netchan.Recv: importers send, the exporter receives them all, merged.
    // 4 is the buffer granted to each importer.
    let mut votes = exporter.export_receiver::<i64>("votes", 4)?;
    let points = exporter.export_sender::<v2::Point>("points")?;
    println!("   exporter on {addr}: sender \"news\", receiver \"votes\", sender \"points\"");

    // 2. The importer: Go's netchan.Import("tcp", addr), then Import.
    println!("2. import");
    let importer = Importer::connect(addr).await?;
    // Errors() in Go; here a stream that any number of readers may read
    // from the start. Read it now in the background, print it in step 8.
    let errors = tokio::spawn(importer.errors().collect::<Vec<Error>>());
    let mut news_in = importer.import_receiver::<String>("news", 4).await?;
    let votes_out = importer.import_sender::<i64>("votes").await?;
    println!("   imported \"news\" (receiver, 4 slots) and \"votes\" (sender)");
    // Unlike Go, a bad import fails now, with a reason.
    for e in [
        importer.import_receiver::<u64>("news", 1).await.err(),
        importer.import_sender::<String>("news").await.err(),
        importer.import_receiver::<String>("weather", 1).await.err(),
    ] {
        let e = e.ok_or_else(|| anyhow!("a bad import was accepted"))?;
        println!("   refused as it should be: {e}");
    }

    // 3. Values both ways, as on local channels.
    println!("3. send and receive");
    for text in ["rain at noon", "sun at six"] {
        news.send(text.to_owned())
            .await
            .map_err(|_| anyhow!("news closed"))?;
        let got = within("news recv", news_in.recv()).await??;
        println!("   exporter sent {text:?}, importer got {got:?}");
    }
    for v in [1, -1, 1] {
        votes_out
            .send(v)
            .await
            .map_err(|_| anyhow!("votes closed"))?;
    }
    let mut tally = 0;
    for _ in 0..3 {
        tally += within("votes recv", votes.recv())
            .await??
            .ok_or_else(|| anyhow!("votes ended"))?;
    }
    println!("   importer sent votes 1, -1, 1; exporter tallied {tally}");

    // 4. ImportNValues: a second importer takes exactly one value. The
    // exporter never sends it more, so nothing is stranded in its buffer:
    // the other values go to the first importer.
    println!("4. import_receiver_n (Go's ImportNValues)");
    let importer2 = Importer::connect(addr).await?;
    let mut just_one = importer2.import_receiver_n::<String>("news", 1, 1).await?;
    for text in ["one", "two", "three"] {
        within("news send", news.send(text.to_owned()))
            .await?
            .map_err(|_| anyhow!("news closed"))?;
    }
    let only = within("recv of the one value", just_one.recv()).await??;
    let after = within("end of the one value", just_one.recv()).await??;
    println!("   second importer got {only:?}, then {after:?} (its import ended)");
    let mut rest = Vec::new();
    for _ in 0..2 {
        rest.extend(within("news recv", news_in.recv()).await??);
    }
    println!("   first importer got the rest: {rest:?}");
    if only.is_none() || after.is_some() || rest.len() != 2 {
        bail!("import_receiver_n did not take exactly one value");
    }
    importer2.close().await;

    // 5. Sync: wait until every importer has what was sent before the
    // call (arrival, as Go's importer acknowledged each value on arrival).
    // The importer reads slowly here; sync does not wait for its reads.
    println!("5. Exporter::sync");
    for i in 0..3 {
        news.send(format!("bulletin {i}"))
            .await
            .map_err(|_| anyhow!("news closed"))?;
    }
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            match news_in.recv().await {
                Ok(Some(v)) => got.push(v),
                other => return Err(anyhow!("news ended early: {other:?}")),
            }
        }
        Ok((news_in, got))
    });
    let t = Instant::now();
    within("sync", exporter.sync(Some(STEP))).await??;
    println!(
        "   sync returned after {:.0?}: all 3 bulletins are in the importer's buffer",
        t.elapsed()
    );
    let (mut news_in, got) = within("slow reader", reader).await???;
    println!("   importer read {got:?}");

    // 6. Drain, from the importer: wait until the exporter has every vote
    // sent. It needs nobody to read them: arrival is what counts.
    println!("6. drain");
    votes_out.send(1).await?;
    within("drain before anyone reads", importer.drain(Some(STEP))).await??;
    println!("   nobody reading yet, and drain returned Ok: the vote is in the exporter's buffer");
    // The exporter starts reading: it takes that vote, then reads on until
    // the hangup of step 7 ends its inbox.
    let counter = tokio::spawn(async move {
        loop {
            match votes.recv().await {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    });
    within("drain", importer.drain(Some(STEP))).await??;
    println!("   with the exporter reading: drain returned Ok");

    // 7. Hangup, from either side. The importer hangs up "votes": its
    // sends fail and give the value back. The exporter hangs up "news":
    // importers get what was sent, then the end.
    println!("7. hangup");
    importer.hangup("votes")?;
    match votes_out.send(7).await {
        Err(SendError(v, _)) => {
            println!("   importer hung up \"votes\"; sending {v} failed and gave it back")
        }
        Ok(()) => anyhow::bail!("a send on a hung-up channel succeeded"),
    }
    news.send("last edition".to_owned())
        .await
        .map_err(|_| anyhow!("news closed"))?;
    exporter.hangup("news")?;
    let last = within("news recv", news_in.recv()).await??;
    let end = within("news end", news_in.recv()).await??;
    println!("   exporter hung up \"news\": importer got {last:?}, then {end:?}");
    exporter.hangup("votes")?;
    within("vote counter", counter).await???;
    println!("   exporter hung up \"votes\": its reader got Ok(None), a clean end");

    // 8. Errors: the importer's `Point` has two fields, the exporter's one.
    // The names match, so the import succeeds; the first value fails to
    // decode, on the channel and on errors(). Nothing else is affected.
    println!("8. errors()");
    let mut points_in = importer.import_receiver::<v1::Point>("points", 1).await?;
    points
        .send(v2::Point { x: 3 })
        .await
        .map_err(|_| anyhow!("points closed"))?;
    match within("points recv", points_in.recv()).await? {
        Err(e) => println!("   recv: {e}"),
        Ok(v) => bail!("a Point of another structure decoded as {v:?}"),
    }
    // The log ends when the session does.
    importer.close().await;
    let errors = within("errors() end", errors).await??;
    for e in &errors {
        println!("   errors(): {e}");
    }
    if errors.is_empty() {
        bail!("the decode error did not reach errors()");
    }

    // 9. Shutdown: the exporter stops listening and closes its sessions.
    println!("9. shutdown");
    within("shutdown", exporter.shutdown()).await?;
    drop((news, points));
    Ok(())
}
