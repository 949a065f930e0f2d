//! Bounded memory under attack, measured with a counting global allocator
//! (current and peak bytes of the whole process).
//!
//! Each test runs alone (a lock serialises them) on a current-thread
//! runtime, so the session, the raw attacker and the measurement share one
//! thread; the heap is measured only around the attack itself, after the
//! connection was set up: `peak during the attack - current before it`.
//!
//! Budgets (DESIGN.md "Default limits", issue 6):
//! * an oversized length prefix, on the wire or inside a message,
//!   allocates less than 64 KiB;
//! * a flood on one connection (opens, pings, junk) grows the heap by no
//!   more than about 1 MiB.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use netchan::proto::frame::FLAG_END;
use netchan::proto::{CodecId, Connection, Dir, Frame, Kind, Limits, ProtoError, Side};
use netchan::{Config, Error, RecvError, Session};
use peak_alloc::PeakAlloc;

#[allow(dead_code)]
#[path = "faults/raw.rs"]
mod raw;

use raw::{RawPeer, STEP, data, header, open};

#[allow(dead_code)]
#[path = "resume/relay.rs"]
mod relay;

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

/// One measurement at a time: the counters are process-wide.
static SERIAL: Mutex<()> = Mutex::new(());

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
/// "About 1 MiB": 1 MiB plus a quarter for bookkeeping.
const ATTACK_BUDGET: usize = MIB + MIB / 4;

/// Heap growth over a stretch of work.
#[derive(Debug, Clone, Copy)]
struct Growth {
    /// Highest `current - before` seen.
    peak: usize,
    /// `current - before` once the attack is over and the session's tasks
    /// had up to a second to end (negative growth counts as 0).
    left: usize,
}

/// Runs `setup` on a fresh current-thread runtime, then measures `attack`
/// given what `setup` returned.
fn measured<S, A, SF, AF, T>(setup: S, attack: A) -> (Growth, T)
where
    S: FnOnce() -> SF,
    SF: Future,
    A: FnOnce(SF::Output) -> AF,
    AF: Future<Output = T>,
{
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (growth, out) = rt.block_on(async {
        let state = within("setup", setup()).await;
        let before = ALLOC.current_usage();
        ALLOC.reset_peak_usage();
        let out = within("attack", attack(state)).await;
        let peak = ALLOC.peak_usage().saturating_sub(before);
        // Give the session's tasks a moment to notice the end and free
        // what they hold.
        for _ in 0..100 {
            if ALLOC.current_usage() <= before + 64 * KIB {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let growth = Growth {
            peak,
            left: ALLOC.current_usage().saturating_sub(before),
        };
        (growth, out)
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    (growth, out)
}

async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(30), f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

fn report(what: &str, g: Growth) {
    eprintln!(
        "{what}: peak growth {} KiB, left {} KiB",
        g.peak / KIB,
        g.left / KIB
    );
}

/// A session over loopback TCP with an exported receiver `in` of `T`
/// (4 slots) and an exported sender `out` (u32), and a raw peer past the
/// handshake that opened `in` as channel 1.
async fn target<T: netchan::Message>(
    cfg: Config,
    type_name: &str,
) -> (Session, RawPeer, Exports<T>) {
    let (s, mut raw) = RawPeer::against(cfg).await;
    let inbox = s.export_receiver::<T>("in", 4).expect("export in");
    let out = s.export_sender::<u32>("out").expect("export out");
    raw.handshake().await;
    raw.send_frame(Frame::Open {
        chan: 1,
        dir: Dir::OpenerSends,
        capacity: 0,
        name: "in".into(),
        type_name: type_name.into(),
    })
    .await;
    assert!(matches!(
        raw.recv_non_keepalive().await,
        Frame::Accept { chan: 1, .. }
    ));
    (s, raw, (inbox, out))
}

/// The session's exports, kept alive during the attack.
type Exports<T> = (netchan::Receiver<T>, netchan::Sender<u32>);

// --------------------------------------------------- oversized prefixes

#[test]
fn a_data_header_claiming_4_gib_allocates_less_than_64_kib_in_the_protocol_core() {
    let (g, ()) = measured(
        || async {
            let now = Instant::now();
            let mut conn =
                Connection::new(Side::Acceptor, Limits::default(), CodecId::Bincode, now);
            let mut input = BytesMut::with_capacity(64);
            raw::hello().encode(&mut input);
            assert!(matches!(conn.poll_input(&mut input, now), Ok(Some(_))));
            (conn, now)
        },
        |(mut conn, now)| async move {
            let mut input = BytesMut::from(&header(u32::MAX, Kind::Data, FLAG_END, 1)[..]);
            match conn.poll_input(&mut input, now) {
                Err(ProtoError::FrameTooLarge { len, .. }) => assert_eq!(len, u32::MAX as usize),
                r => panic!("expected FrameTooLarge, got {r:?}"),
            }
            drop(conn);
        },
    );
    report("4 GiB DATA header, protocol core", g);
    assert!(g.peak < 64 * KIB, "{g:?}");
    assert!(g.left <= 64 * KIB, "{g:?}");
}

#[test]
fn a_data_header_claiming_4_gib_allocates_less_than_64_kib_in_a_session() {
    let (g, e) = measured(
        || target::<u32>(Config::default(), "u32"),
        |(s, mut raw, inbox)| async move {
            raw.send_raw(&header(u32::MAX, Kind::Data, FLAG_END, 1))
                .await
                .expect("header");
            let e = s.closed().await;
            raw.expect_goodbye(STEP).await;
            drop((s, raw, inbox));
            e
        },
    );
    report("4 GiB DATA header, session", g);
    assert!(
        matches!(
            &e,
            Error::Protocol {
                error: ProtoError::FrameTooLarge { .. },
                ..
            }
        ),
        "{e:?}"
    );
    assert!(g.peak < 64 * KIB, "{g:?}");
    assert!(g.left <= 64 * KIB, "{g:?}");
}

/// bincode 2's varint for 2^40: marker 0xFD, then a u64.
fn claim_2_pow_40() -> Vec<u8> {
    let mut v = vec![0xfd];
    v.extend_from_slice(&(1u64 << 40).to_le_bytes());
    v
}

/// A 9-byte message whose length prefix claims 2^40 elements, received
/// as `T`: the receiver gets a decode error, having allocated < 64 KiB.
fn a_length_prefix_claiming_2_pow_40<T: netchan::Message + std::fmt::Debug>(type_name: &str) {
    let (g, r) = measured(
        || target::<T>(Config::default(), type_name),
        |(s, mut raw, (mut inbox, out))| async move {
            raw.send_frame(data(1, &claim_2_pow_40())).await;
            let r = inbox.recv().await;
            assert!(
                !s.is_closed(),
                "a bad value is an error on its channel only"
            );
            drop((s, raw, inbox, out));
            r
        },
    );
    report(&format!("2^40 length prefix in a {type_name}"), g);
    assert!(matches!(r, Err(RecvError::Decode(_))), "{r:?}");
    assert!(g.peak < 64 * KIB, "{type_name}: {g:?}");
    assert!(g.left <= 64 * KIB, "{type_name}: {g:?}");
}

#[test]
fn a_vec_u8_length_prefix_claiming_2_pow_40_allocates_less_than_64_kib() {
    a_length_prefix_claiming_2_pow_40::<Vec<u8>>("Vec<u8>");
}

#[test]
fn a_string_length_prefix_claiming_2_pow_40_allocates_less_than_64_kib() {
    a_length_prefix_claiming_2_pow_40::<String>("String");
}

#[test]
fn a_vec_u64_length_prefix_claiming_2_pow_40_allocates_less_than_64_kib() {
    a_length_prefix_claiming_2_pow_40::<Vec<u64>>("Vec<u64>");
}

#[test]
fn a_byte_buf_length_prefix_claiming_2_pow_40_allocates_less_than_64_kib() {
    a_length_prefix_claiming_2_pow_40::<serde_bytes::ByteBuf>("ByteBuf");
}

#[test]
fn a_nested_vec_length_prefix_claiming_2_pow_40_allocates_less_than_64_kib() {
    a_length_prefix_claiming_2_pow_40::<Vec<Vec<String>>>("Vec<Vec<String>>");
}

// ------------------------------------------------------------- floods

/// Writes `frames()` in 64 KiB batches, `total` bytes at most, stopping
/// when the session ends or stops reading. Returns the bytes written.
async fn flood(
    raw: &mut RawPeer,
    s: &Session,
    total: usize,
    mut frame: impl FnMut(u64) -> Frame,
) -> usize {
    let mut written = 0;
    let mut n = 0u64;
    let mut batch = BytesMut::with_capacity(80 * KIB);
    while written < total && !s.is_closed() {
        batch.clear();
        while batch.len() < 64 * KIB {
            n += 1;
            frame(n).encode(&mut batch);
        }
        if raw.send_raw(&batch).await.is_err() {
            break;
        }
        written += batch.len();
    }
    written
}

#[test]
fn a_flood_of_pings_never_read_grows_the_heap_by_about_1_mib_at_most() {
    let (g, (written, closed)) = measured(
        || target::<u32>(Config::default(), "u32"),
        |(s, mut raw, inbox)| async move {
            let written = flood(&mut raw, &s, 32 * MIB, Frame::Ping).await;
            let closed = s.is_closed();
            drop((s, raw, inbox));
            (written, closed)
        },
    );
    report(
        &format!(
            "ping flood of {} MiB (session closed: {closed})",
            written / MIB
        ),
        g,
    );
    assert!(written >= 32 * MIB, "the session kept reading");
    assert!(
        !closed,
        "the session survives a ping flood (one PONG per write)"
    );
    assert!(g.peak <= ATTACK_BUDGET, "{g:?}");
    assert!(g.left <= 64 * KIB, "{g:?}");
}

#[test]
fn a_flood_of_junk_grows_the_heap_by_about_1_mib_at_most() {
    let (g, e) = measured(
        || async {
            // xorshift junk, made before the measurement starts.
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            let junk: Vec<u8> = (0..4 * MIB)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            (target::<u32>(Config::default(), "u32").await, junk)
        },
        |((s, mut raw, exports), junk)| async move {
            let _ = raw.send_raw(&junk).await;
            raw.shutdown_write().await;
            let e = s.closed().await;
            drop((s, raw, exports));
            e
        },
    );
    report("4 MiB of junk", g);
    assert!(!matches!(e, Error::Closed), "{e:?}");
    assert!(g.peak <= ATTACK_BUDGET, "{g:?}");
    assert!(g.left <= 64 * KIB, "{g:?}");
}

/// OPENs of an existing export: accepted up to the channel limit (1024),
/// then refused; the peer is cut off after 128 refusals.
#[test]
fn a_flood_of_opens_of_an_existing_export_grows_the_heap_by_about_1_mib_at_most() {
    let (g, (e, written)) = measured(
        || target::<u32>(Config::default(), "u32"),
        |(s, mut raw, inbox)| async move {
            let written = flood(&mut raw, &s, 8 * MIB, |n| {
                open((2 * n + 1) as u32, Dir::OpenerReceives, 1, "out")
            })
            .await;
            let e = s.closed().await;
            drop((s, raw, inbox));
            (e, written)
        },
    );
    report(&format!("open flood ({} KiB written)", written / KIB), g);
    assert!(
        matches!(
            &e,
            Error::Protocol {
                error: ProtoError::LimitExceeded { .. },
                ..
            }
        ),
        "{e:?}"
    );
    assert!(g.peak <= ATTACK_BUDGET, "{g:?}");
    assert!(g.left <= 64 * KIB, "{g:?}");
}

/// OPENs of names that do not exist, the REJECTs never read: the replies
/// pile up on the session's side until it cuts the peer off
/// (`PeerNotReading`, after 4 MiB by default).
#[test]
fn a_flood_of_refused_opens_never_read_grows_the_heap_by_about_1_mib_at_most() {
    let (g, (e, written)) = measured(
        || target::<u32>(Config::default(), "u32"),
        |(s, mut raw, inbox)| async move {
            let written = flood(&mut raw, &s, 256 * MIB, |n| {
                open((2 * n + 1) as u32, Dir::OpenerReceives, 1, "no-such-name")
            })
            .await;
            let e = s.closed().await;
            drop((s, raw, inbox));
            (e, written)
        },
    );
    report(
        &format!("refused-open flood ({} MiB written)", written / MIB),
        g,
    );
    assert!(
        matches!(
            &e,
            Error::Protocol {
                error: ProtoError::PeerNotReading(_),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(g.peak <= ATTACK_BUDGET, "{g:?}");
    assert!(g.left <= 64 * KIB, "{g:?}");
}

// --------------------------------------------------- resume under cuts

/// A resumable session streaming 20 MB through a cut every 20 ms: what it
/// keeps for replay is bounded by the credit windows, so the heap grows by
/// a few windows' worth, not by what was sent.
#[test]
fn a_stream_through_cuts_grows_the_heap_by_its_windows_not_by_what_was_sent() {
    stream_through_cuts(false);
}

/// The same over TLS: each resume is a new TLS connection, and the old
/// one's buffers go with it.
#[test]
fn a_tls_stream_through_cuts_grows_the_heap_by_its_windows_not_by_what_was_sent() {
    stream_through_cuts(true);
}

fn stream_through_cuts(tls: bool) {
    const N: u32 = 20_000;
    const SIZE: usize = 1000;
    let (g, resumes) = measured(
        || async move {
            let (server_cfg, client_cfg) = if tls {
                use netchan::tls::{ClientTls, Identity, ServerTls};
                let id = Identity::self_signed(&["localhost"]).expect("identity");
                let pin = id.fingerprint();
                (
                    Config::default().tls_server(ServerTls::new(id)),
                    Config::default().tls_client(ClientTls::pinned(pin)),
                )
            } else {
                (Config::default(), Config::default())
            };
            let exp = netchan::Exporter::bind_with("127.0.0.1:0", server_cfg)
                .await
                .expect("bind");
            let relay = relay::Relay::start(exp.local_addr());
            let tx = exp.export_sender::<Vec<u8>>("s").expect("export");
            let policy = netchan::Reconnect::default()
                .initial_delay(Duration::from_millis(5))
                .max_delay(Duration::from_millis(50));
            let client = Session::connect_with(relay.addr(), client_cfg.reconnect(policy))
                .await
                .expect("connect");
            let rx = client
                .import_receiver::<Vec<u8>>("s", 16)
                .await
                .expect("import");
            (exp, relay, tx, client, rx)
        },
        |(exp, relay, tx, client, mut rx)| async move {
            let sender = tokio::spawn(async move {
                for i in 0..N {
                    tx.send(vec![i as u8; SIZE]).await.expect("send");
                }
            });
            let mut last_cut = Instant::now();
            for i in 0..N {
                let v = rx.recv().await.expect("recv").expect("a value");
                assert_eq!((v.len(), v[0]), (SIZE, i as u8), "value {i} once, in order");
                if last_cut.elapsed() >= Duration::from_millis(20) {
                    relay.cut();
                    last_cut = Instant::now();
                }
            }
            sender.await.expect("sender");
            let resumes = client.stats().resumes;
            client.close().await;
            exp.shutdown().await;
            drop(relay);
            resumes
        },
    );
    report(
        if tls {
            "20 MB over TLS through cuts every 20 ms"
        } else {
            "20 MB through cuts every 20 ms"
        },
        g,
    );
    eprintln!("{resumes} resumes");
    assert!(
        resumes >= 5,
        "the stream went through cuts ({resumes} resumes)"
    );
    // A window of 16 values of 1 KB each way, the connection's buffers,
    // and a relay's: a few hundred KiB. 20 MB went through.
    assert!(
        g.peak < 4 * MIB,
        "heap grew by {} KiB at most",
        g.peak / KIB
    );
}
