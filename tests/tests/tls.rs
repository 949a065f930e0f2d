//! TLS transport tests: authentication by pin and by CA chain, mutual TLS,
//! every failure of the TLS issue failing fast with an error that names its
//! cause while the exporter keeps serving, the refusal to serve plaintext
//! off loopback, identities and fingerprints, and the cluster API over TLS.
//!
//! Every certificate is generated here with rcgen (a root CA, an
//! intermediate, leaves for server and client); no private key is checked
//! in. Only loopback addresses are used (127.0.0.1, and ::1 where the host
//! has it), except for the bind-refusal tests, which bind `0.0.0.0` for an
//! instant to check the refusal and the opt-outs. Every await is bounded.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::BoxStream;
use netchan::proto::ProtoError;
use netchan::tls::{ClientTls, Fingerprint, Identity, PeerIdentity, ServerTls};
use netchan::{Config, Error, Exporter, Message, Pipe, Receiver, Sender, Session, pipe};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use serde_bytes::ByteBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------
// Bounded waits
// ---------------------------------------------------------------------------

/// The longest any single step may take before it counts as hung.
const LIMIT: Duration = Duration::from_secs(10);
/// The longest a whole test may take.
const TEST_LIMIT: Duration = Duration::from_secs(60);
/// The handshake timeout both sides use in the failure tests.
const HANDSHAKE: Duration = Duration::from_secs(3);
/// Slack on top of [`HANDSHAKE`] for a failure to be reported.
const MARGIN: Duration = Duration::from_secs(2);

/// Awaits `f`, failing the test if it takes longer than [`LIMIT`].
async fn within<F: IntoFuture>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(LIMIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {LIMIT:?}: {what}"),
    }
}

/// Runs a whole test body, failing if it takes longer than [`TEST_LIMIT`].
async fn bounded<F: Future<Output = ()>>(f: F) {
    if tokio::time::timeout(TEST_LIMIT, f).await.is_err() {
        panic!("test did not finish within {TEST_LIMIT:?}");
    }
}

async fn recv_some<T: Message>(what: &str, rx: &mut Receiver<T>) -> T {
    match within(what, rx.recv()).await {
        Ok(Some(v)) => v,
        Ok(None) => panic!("{what}: channel ended where a value was expected"),
        Err(e) => panic!("{what}: recv failed: {e}"),
    }
}

async fn send_ok<T: Message>(what: &str, tx: &Sender<T>, v: T) {
    if within(what, tx.send(v)).await.is_err() {
        panic!("{what}: send failed");
    }
}

fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

/// A certificate authority: its issuer (certificate and key), and the PEM
/// chain a leaf it signs must send after itself (empty for a root, which
/// the verifier already has; the intermediate and what is above it but
/// below the root otherwise).
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    chain_after_leaf: String,
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "netchan tests");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

impl Ca {
    /// A self-signed root CA.
    fn root(common_name: &str) -> Ca {
        let key = KeyPair::generate().expect("root key");
        let issuer = CertifiedIssuer::self_signed(ca_params(common_name), key).expect("root cert");
        Ca {
            issuer,
            chain_after_leaf: String::new(),
        }
    }

    /// An intermediate CA signed by `self`.
    fn intermediate(&self, common_name: &str) -> Ca {
        let key = KeyPair::generate().expect("intermediate key");
        let issuer = CertifiedIssuer::signed_by(ca_params(common_name), key, &self.issuer)
            .expect("intermediate cert");
        let chain_after_leaf = format!("{}{}", issuer.pem(), self.chain_after_leaf);
        Ca {
            issuer,
            chain_after_leaf,
        }
    }

    /// This CA's certificate as PEM (what a verifier trusts).
    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf signed by this CA for `names`, as an identity whose chain is
    /// the leaf followed by the intermediates up to (not including) the
    /// root.
    fn leaf(&self, common_name: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Identity {
        let (chain, key) = self.leaf_pem(common_name, names, usage);
        Identity::from_pem(chain.as_bytes(), key.as_bytes()).expect("leaf identity from PEM")
    }

    /// Like [`leaf`](Ca::leaf), as (chain PEM, key PEM).
    fn leaf_pem(
        &self,
        common_name: &str,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> (String, String) {
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        (
            format!("{}{}", cert.pem(), self.chain_after_leaf),
            key.serialize_pem(),
        )
    }
}

/// A root, an intermediate under it, and leaves under the intermediate:
/// one for a server (valid for localhost, 127.0.0.1 and ::1) and one for a
/// client.
struct Pki {
    root: Ca,
    server: Identity,
    client: Identity,
}

const SERVER_CN: &str = "netchan test server";
const CLIENT_CN: &str = "netchan test client";
const CLIENT_NAME: &str = "client-1.netchan.test";

fn make_pki(tag: &str) -> Pki {
    let root = Ca::root(&format!("netchan test root {tag}"));
    let intermediate = root.intermediate(&format!("netchan test intermediate {tag}"));
    let server = intermediate.leaf(
        SERVER_CN,
        &["localhost", "127.0.0.1", "::1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let client = intermediate.leaf(
        CLIENT_CN,
        &[CLIENT_NAME],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    Pki {
        root,
        server,
        client,
    }
}

fn count_certs(pem: &str) -> usize {
    pem.matches("-----BEGIN CERTIFICATE-----").count()
}

// ---------------------------------------------------------------------------
// A server that proves it still serves
// ---------------------------------------------------------------------------

const INBOX: &str = "inbox";

/// An exporter on 127.0.0.1 with an exported receiver [`INBOX`], and its
/// error stream.
struct Server {
    exp: Exporter,
    inbox: Receiver<u64>,
    errors: BoxStream<'static, Error>,
    /// Values a good client sent so far, so each check sends a new one.
    sent: u64,
}

fn server_cfg(tls: Option<ServerTls>) -> Config {
    let cfg = Config::default().handshake_timeout(HANDSHAKE);
    match tls {
        Some(t) => cfg.tls_server(t),
        None => cfg,
    }
}

fn client_cfg(tls: Option<ClientTls>) -> Config {
    let cfg = Config::default().handshake_timeout(HANDSHAKE);
    match tls {
        Some(t) => cfg.tls_client(t),
        None => cfg,
    }
}

async fn serve(tls: Option<ServerTls>) -> Server {
    let exp = within(
        "bind the exporter",
        Exporter::bind_with("127.0.0.1:0", server_cfg(tls)),
    )
    .await
    .expect("bind on loopback");
    let inbox = exp.export_receiver::<u64>(INBOX, 4).expect("export inbox");
    let errors = exp.errors().boxed();
    Server {
        exp,
        inbox,
        errors,
        sent: 0,
    }
}

impl Server {
    fn addr(&self) -> SocketAddr {
        self.exp.local_addr()
    }

    /// Connects a client with `cfg`, sends one value into the inbox and
    /// checks it arrives: the exporter is still serving.
    async fn still_serves(&mut self, what: &str, cfg: Config) {
        let s = within(
            "a good client connects",
            Session::connect_with(self.addr(), cfg),
        )
        .await
        .unwrap_or_else(|e| panic!("{what}: a good client could not connect afterwards: {e}"));
        let tx = within("import the inbox", s.import_sender::<u64>(INBOX))
            .await
            .unwrap_or_else(|e| panic!("{what}: import failed afterwards: {e}"));
        self.sent += 1;
        let v = 1000 + self.sent;
        send_ok("a good client sends", &tx, v).await;
        assert_eq!(
            recv_some("the value reaches the exporter", &mut self.inbox).await,
            v,
            "{what}: the exporter received the good client's value"
        );
        drop(tx);
        within("close the good client", s.close()).await;
    }

    /// Waits for an error on the exporter's `errors()` that satisfies
    /// `pred`, and returns it; fails listing what else was seen.
    async fn expect_error(&mut self, what: &str, pred: impl Fn(&Error) -> bool) -> Error {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            match tokio::time::timeout_at(deadline, self.errors.next()).await {
                Ok(Some(e)) if pred(&e) => {
                    eprintln!("{what}: server error: {e}");
                    return e;
                }
                Ok(Some(e)) => seen.push(e.to_string()),
                Ok(None) => panic!("{what}: errors() ended; seen: {seen:#?}"),
                Err(_) => panic!(
                    "{what}: no matching error on the server within {LIMIT:?}; seen: {seen:#?}"
                ),
            }
        }
    }
}

/// Connects with `cfg`, which must fail within the handshake timeout plus
/// a margin, with an error other than the timeout itself.
async fn connect_fails(what: &str, addr: SocketAddr, cfg: Config) -> Error {
    let start = Instant::now();
    let r = within(what, Session::connect_with(addr, cfg)).await;
    let took = start.elapsed();
    let e = match r {
        Ok(s) => panic!("{what}: connected ({s:?}) although it must fail"),
        Err(e) => e,
    };
    eprintln!("{what}: client error after {took:?}: {e}");
    assert!(
        took < HANDSHAKE + MARGIN,
        "{what}: failing took {took:?}, more than the handshake timeout {HANDSHAKE:?} + {MARGIN:?}"
    );
    assert!(
        !matches!(e, Error::HandshakeTimeout { .. }),
        "{what}: the error must name the cause, not only time out: {e}"
    );
    e
}

fn mentions(e: &Error, words: &[&str]) -> bool {
    let text = e.to_string().to_lowercase();
    words.iter().any(|w| text.contains(&w.to_lowercase()))
}

/// The session an exporter accepted, once it is registered.
async fn only_session(exp: &Exporter) -> Session {
    within("the exporter registers the session", async {
        loop {
            let mut all = exp.sessions();
            if all.len() == 1 {
                return all.pop().expect("one session");
            }
            assert!(all.len() < 2, "more sessions than clients: {}", all.len());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

// ---------------------------------------------------------------------------
// Pipes
// ---------------------------------------------------------------------------

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn write_all_then_shutdown(mut w: Pipe, data: Vec<u8>) -> Pipe {
    w.write_all(&data).await.expect("pipe write");
    w.shutdown().await.expect("pipe shutdown");
    w
}

async fn read_to_end(what: &str, r: &mut Pipe) -> Vec<u8> {
    let mut got = Vec::new();
    within(what, r.read_to_end(&mut got))
        .await
        .expect("pipe read");
    got
}

// ---------------------------------------------------------------------------
// 1. Pinned trust, channels and pipes
// ---------------------------------------------------------------------------

/// An exporter on loopback with a fresh self-signed identity, a client
/// session that pins it, and the pin.
async fn self_signed_pair() -> (Exporter, Session, Fingerprint) {
    self_signed_pair_on("127.0.0.1:0").await
}

/// [`self_signed_pair`] with the exporter bound to `bind` (any port); the
/// client dials it over loopback.
async fn self_signed_pair_on(bind: &str) -> (Exporter, Session, Fingerprint) {
    let id = Identity::self_signed(&["localhost", "127.0.0.1"]).expect("self-signed");
    let pin = id.fingerprint();
    let exp = within(
        "bind",
        Exporter::bind_with(bind, Config::default().tls_server(ServerTls::new(id))),
    )
    .await
    .expect("bind with TLS");
    let client = within(
        "connect",
        Session::connect_with(
            ("127.0.0.1", exp.local_addr().port()),
            Config::default().tls_client(ClientTls::pinned(pin)),
        ),
    )
    .await
    .expect("a pinned client connects");
    (exp, client, pin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_client_exchanges_channels_and_pipes_with_a_self_signed_server() {
    bounded(async {
        let id = Identity::self_signed(&["localhost", "127.0.0.1"]).expect("self-signed");
        let pin = id.fingerprint();
        let exp = within(
            "bind",
            Exporter::bind_with(
                "127.0.0.1:0",
                Config::default().tls_server(ServerTls::new(id)),
            ),
        )
        .await
        .expect("bind with TLS");
        let greetings = exp.export_sender::<String>("greetings").expect("export");
        let mut numbers = exp.export_receiver::<u64>("numbers", 4).expect("export");
        let mut blobs = exp.export_receiver::<ByteBuf>("blobs", 1).expect("export");
        let mut pipes = exp.export_receiver::<Pipe>("pipes", 1).expect("export");

        let client = within(
            "connect",
            Session::connect_with(
                exp.local_addr(),
                Config::default().tls_client(ClientTls::pinned(pin)),
            ),
        )
        .await
        .expect("a pinned client connects");

        // Server to client.
        let mut rx = within("import", client.import_receiver::<String>("greetings", 4))
            .await
            .expect("import greetings");
        send_ok("server sends", &greetings, "hello over TLS".to_owned()).await;
        assert_eq!(
            recv_some("client receives", &mut rx).await,
            "hello over TLS"
        );

        // Client to server, in order.
        let tx = within("import", client.import_sender::<u64>("numbers"))
            .await
            .expect("import numbers");
        let sender = tokio::spawn(async move {
            for i in 0..100u64 {
                tx.send(i).await.expect("client sends");
            }
        });
        for i in 0..100u64 {
            assert_eq!(recv_some("server receives", &mut numbers).await, i);
        }
        within("sender task", sender).await.expect("sender task");

        // A message larger than one chunk, through TLS records.
        let big = pattern(1 << 20, 5);
        let tx = within("import", client.import_sender::<ByteBuf>("blobs"))
            .await
            .expect("import blobs");
        send_ok("client sends 1 MiB", &tx, ByteBuf::from(big.clone())).await;
        assert!(
            recv_some("server receives 1 MiB", &mut blobs)
                .await
                .into_vec()
                == big,
            "a 1 MiB message arrives intact over TLS"
        );

        // The accepting side imports from the client: either end exports.
        let server_side = only_session(&exp).await;
        let from_client = client
            .export_sender::<String>("from-client")
            .expect("export");
        let mut rx = within(
            "server imports from the client",
            server_side.import_receiver::<String>("from-client", 1),
        )
        .await
        .expect("server imports");
        send_ok("client sends", &from_client, "and back".to_owned()).await;
        assert_eq!(recv_some("server receives", &mut rx).await, "and back");

        // A pipe, both ways.
        let post = within("import", client.import_sender::<Pipe>("pipes"))
            .await
            .expect("import pipes");
        let (mine, theirs) = pipe();
        send_ok("client sends a pipe end", &post, theirs).await;
        let mut remote = recv_some("the pipe end arrives", &mut pipes).await;
        let out = pattern(300_000, 7);
        let writer = tokio::spawn(write_all_then_shutdown(mine, out.clone()));
        assert!(
            read_to_end("server reads the pipe", &mut remote).await == out,
            "client-to-server pipe bytes arrive intact"
        );
        let mut mine = within("writer", writer).await.expect("writer");
        let back = pattern(100_000, 99);
        let remote_writer = tokio::spawn(write_all_then_shutdown(remote, back.clone()));
        assert!(
            read_to_end("client reads the pipe", &mut mine).await == back,
            "server-to-client pipe bytes arrive intact"
        );
        within("remote writer", remote_writer)
            .await
            .expect("remote writer");

        within("close", client.close()).await;
        within("shutdown", exp.shutdown()).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_sees_the_server_certificate_and_the_server_sees_no_identity_without_mutual_tls()
{
    bounded(async {
        let (exp, client, pin) = self_signed_pair().await;
        let peer = client
            .peer_identity()
            .expect("a TLS client knows the server's identity");
        assert_eq!(peer.fingerprint, pin, "the fingerprint is the pinned one");
        for name in ["localhost", "127.0.0.1"] {
            assert!(
                peer.names.iter().any(|n| n == name),
                "the server's names include {name}: {:?}",
                peer.names
            );
        }
        let server_side = only_session(&exp).await;
        assert_eq!(
            server_side.peer_identity(),
            None,
            "without mutual TLS the server knows no client identity"
        );
        within("close", client.close()).await;
        within("shutdown", exp.shutdown()).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_ends_of_a_tls_session_know_each_others_address() {
    bounded(async {
        let (tls, good) = self_signed_server();
        let exp = within(
            "bind",
            Exporter::bind_with("127.0.0.1:0", server_cfg(Some(tls))),
        )
        .await
        .expect("bind");
        let client = within(
            "connect",
            Session::connect_with(exp.local_addr(), client_cfg(Some(good))),
        )
        .await
        .expect("connect");
        let server_side = only_session(&exp).await;
        let client_addr = client.local_addr().expect("the client's address");
        assert_eq!(client.peer_addr(), Some(exp.local_addr()));
        assert_eq!(server_side.peer_addr(), Some(client_addr));
        assert_eq!(server_side.local_addr(), Some(exp.local_addr()));
        within("close", client.close()).await;
        within("shutdown", exp.shutdown()).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_session_has_no_peer_identity() {
    bounded(async {
        let exp = within("bind", Exporter::bind("127.0.0.1:0"))
            .await
            .expect("bind");
        let client = within("connect", Session::connect(exp.local_addr()))
            .await
            .expect("connect");
        assert_eq!(client.peer_identity(), None);
        assert_eq!(only_session(&exp).await.peer_identity(), None);
        within("close", client.close()).await;
        within("shutdown", exp.shutdown()).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_client_reaches_a_server_on_ipv6_loopback() {
    bounded(async {
        let id = Identity::self_signed(&["localhost", "::1"]).expect("self-signed");
        let pin = id.fingerprint();
        let exp = match within(
            "bind [::1]",
            Exporter::bind_with("[::1]:0", Config::default().tls_server(ServerTls::new(id))),
        )
        .await
        {
            Ok(exp) => exp,
            Err(Error::Io(e)) => {
                eprintln!("skipped: this host has no IPv6 loopback ({e})");
                return;
            }
            Err(e) => panic!("binding [::1] with TLS failed: {e}"),
        };
        let mut inbox = exp.export_receiver::<String>("inbox", 1).expect("export");
        let client = within(
            "connect over ::1",
            Session::connect_with(
                exp.local_addr(),
                Config::default().tls_client(ClientTls::pinned(pin)),
            ),
        )
        .await
        .expect("connect over ::1");
        assert_eq!(client.peer_identity().map(|p| p.fingerprint), Some(pin));
        let tx = within("import", client.import_sender::<String>("inbox"))
            .await
            .expect("import");
        send_ok("send", &tx, "over ::1".to_owned()).await;
        assert_eq!(recv_some("recv", &mut inbox).await, "over ::1");
        within("close", client.close()).await;
        within("shutdown", exp.shutdown()).await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// 2. CA verification
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trusting_the_root_accepts_a_server_leaf_signed_by_an_intermediate() {
    bounded(async {
        let pki = make_pki("chain");
        assert_eq!(
            count_certs(&pki.server.cert_pem()),
            2,
            "the server presents its leaf and the intermediate"
        );
        let mut server = serve(Some(ServerTls::new(pki.server.clone()))).await;
        let tls = ClientTls::with_ca(pki.root.pem().as_bytes(), "localhost").expect("with_ca");
        let client = within(
            "connect",
            Session::connect_with(server.addr(), client_cfg(Some(tls.clone()))),
        )
        .await
        .expect("a client trusting the root connects");
        let peer = client.peer_identity().expect("peer identity");
        assert_eq!(peer.fingerprint, pki.server.fingerprint());
        assert!(
            peer.names.iter().any(|n| n == "localhost"),
            "names: {:?}",
            peer.names
        );
        assert!(
            peer.names.iter().any(|n| n == SERVER_CN),
            "the common name is among the names: {:?}",
            peer.names
        );
        within("close", client.close()).await;
        server
            .still_serves("CA-verified client", client_cfg(Some(tls)))
            .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trusting_the_root_verifies_the_server_by_ip_address() {
    bounded(async {
        let pki = make_pki("ip");
        let mut server = serve(Some(ServerTls::new(pki.server.clone()))).await;
        let tls = ClientTls::with_ca(pki.root.pem().as_bytes(), "127.0.0.1").expect("with_ca");
        server
            .still_serves("CA-verified client by IP", client_cfg(Some(tls)))
            .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusting_the_intermediate_alone_is_enough_to_verify_the_server() {
    bounded(async {
        let root = Ca::root("netchan test root for intermediate trust");
        let intermediate = root.intermediate("netchan test intermediate trusted");
        let server_id = intermediate.leaf(
            SERVER_CN,
            &["localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let mut server = serve(Some(ServerTls::new(server_id))).await;
        let tls = ClientTls::with_ca(intermediate.pem().as_bytes(), "localhost").expect("with_ca");
        server
            .still_serves("client trusting the intermediate", client_cfg(Some(tls)))
            .await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// 3. Failures: fast, named, and harmless to other sessions
// ---------------------------------------------------------------------------

fn self_signed_server() -> (ServerTls, ClientTls) {
    let id = Identity::self_signed(&["localhost"]).expect("self-signed");
    let good = ClientTls::pinned(id.fingerprint());
    (ServerTls::new(id), good)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_client_to_a_tls_server_fails_fast_and_the_server_reports_a_tls_handshake_error()
 {
    bounded(async {
        let (tls, good) = self_signed_server();
        let mut server = serve(Some(tls)).await;
        let e = connect_fails("plaintext client", server.addr(), client_cfg(None)).await;
        assert!(
            mentions(&e, &["tls", "netchan"]),
            "the plaintext client is told the server speaks TLS (or not netchan): {e}"
        );
        let se = server
            .expect_error("TLS server", |e| {
                matches!(e, Error::Tls(_)) && mentions(e, &["handshake"])
            })
            .await;
        assert!(
            mentions(&se, &["does not speak TLS"]),
            "the server explains the client does not speak TLS: {se}"
        );
        server
            .still_serves("after a plaintext client", client_cfg(Some(good)))
            .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_to_a_plaintext_server_is_told_the_peer_does_not_speak_tls() {
    bounded(async {
        let mut server = serve(None).await;
        let id = Identity::self_signed(&["localhost"]).expect("self-signed");
        let e = connect_fails(
            "TLS client to plaintext server",
            server.addr(),
            client_cfg(Some(ClientTls::pinned(id.fingerprint()))),
        )
        .await;
        assert!(matches!(e, Error::Tls(_)), "an Error::Tls: {e:?}");
        assert!(
            mentions(&e, &["does not speak TLS"]),
            "the client is told the peer does not speak TLS: {e}"
        );
        let se = server
            .expect_error("plaintext server", |e| {
                matches!(
                    e,
                    Error::Protocol {
                        error: ProtoError::PeerSpeaksTls,
                        ..
                    }
                )
            })
            .await;
        assert!(mentions(&se, &["TLS"]), "the server names TLS: {se}");
        server
            .still_serves("after a TLS client", client_cfg(None))
            .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_the_wrong_pin_fails_naming_the_fingerprint() {
    bounded(async {
        let (tls, good) = self_signed_server();
        let mut server = serve(Some(tls)).await;
        let other = Identity::self_signed(&["localhost"]).expect("self-signed");
        let e = connect_fails(
            "wrong pin",
            server.addr(),
            client_cfg(Some(ClientTls::pinned(other.fingerprint()))),
        )
        .await;
        assert!(matches!(e, Error::Tls(_)), "an Error::Tls: {e:?}");
        assert!(
            mentions(&e, &["fingerprint"]),
            "the client is told the fingerprint does not match: {e}"
        );
        assert!(
            e.to_string().contains(&other.fingerprint().to_string()),
            "the error shows the pinned fingerprint: {e}"
        );
        server
            .still_serves("after a wrong pin", client_cfg(Some(good)))
            .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_for_another_name_fails_as_not_valid_for_name() {
    bounded(async {
        let pki = make_pki("name");
        let mut server = serve(Some(ServerTls::new(pki.server.clone()))).await;
        let wrong =
            ClientTls::with_ca(pki.root.pem().as_bytes(), "other.example").expect("with_ca");
        let e = connect_fails("wrong server name", server.addr(), client_cfg(Some(wrong))).await;
        assert!(matches!(e, Error::Tls(_)), "an Error::Tls: {e:?}");
        assert!(
            mentions(&e, &["NotValidForName", "not valid for name"]),
            "the client is told the certificate does not name the server: {e}"
        );
        assert!(
            mentions(&e, &["other.example"]),
            "the error names the expected server name: {e}"
        );
        let good = ClientTls::with_ca(pki.root.pem().as_bytes(), "localhost").expect("with_ca");
        server
            .still_serves("after a wrong server name", client_cfg(Some(good)))
            .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_from_an_unknown_ca_fails_as_unknown_issuer() {
    bounded(async {
        let pki = make_pki("known");
        let stranger = Ca::root("netchan test unknown root");
        let mut server = serve(Some(ServerTls::new(pki.server.clone()))).await;
        let wrong = ClientTls::with_ca(stranger.pem().as_bytes(), "localhost").expect("with_ca");
        let e = connect_fails("unknown CA", server.addr(), client_cfg(Some(wrong))).await;
        assert!(matches!(e, Error::Tls(_)), "an Error::Tls: {e:?}");
        assert!(
            mentions(&e, &["UnknownIssuer"]),
            "the client is told the issuer is unknown: {e}"
        );
        assert!(
            mentions(&e, &["not signed by a trusted CA"]),
            "the client gets the hint: {e}"
        );
        let good = ClientTls::with_ca(pki.root.pem().as_bytes(), "localhost").expect("with_ca");
        server
            .still_serves("after an unknown CA", client_cfg(Some(good)))
            .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_is_refused_when_the_server_requires_one() {
    bounded(async {
        let pki = make_pki("mtls-missing");
        let tls = ServerTls::new(pki.server.clone())
            .require_client_ca(pki.root.pem().as_bytes())
            .expect("require_client_ca");
        let mut server = serve(Some(tls)).await;
        let trust = ClientTls::with_ca(pki.root.pem().as_bytes(), "localhost").expect("with_ca");
        let e = connect_fails(
            "no client certificate",
            server.addr(),
            client_cfg(Some(trust.clone())),
        )
        .await;
        assert!(
            mentions(&e, &["CertificateRequired", "certificate is required"]),
            "the client is told a certificate is required: {e}"
        );
        let se = server
            .expect_error("server requiring a client certificate", |e| {
                matches!(e, Error::Tls(_))
            })
            .await;
        assert!(
            mentions(&se, &["no certificate", "NoCertificatesPresented"]),
            "the server names the missing certificate: {se}"
        );
        server
            .still_serves(
                "after a client without a certificate",
                client_cfg(Some(trust.identity(pki.client.clone()))),
            )
            .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_another_ca_is_refused_as_unknown_issuer() {
    bounded(async {
        let pki = make_pki("mtls-ca");
        let other = make_pki("mtls-other");
        let tls = ServerTls::new(pki.server.clone())
            .require_client_ca(pki.root.pem().as_bytes())
            .expect("require_client_ca");
        let mut server = serve(Some(tls)).await;
        let trust = ClientTls::with_ca(pki.root.pem().as_bytes(), "localhost").expect("with_ca");
        let e = connect_fails(
            "client certificate from another CA",
            server.addr(),
            client_cfg(Some(trust.clone().identity(other.client.clone()))),
        )
        .await;
        assert!(
            mentions(&e, &["UnknownCA", "not signed by a trusted CA"]),
            "the client is told the server does not know its certificate's CA: {e}"
        );
        let se = server
            .expect_error("server requiring a client CA", |e| {
                matches!(e, Error::Tls(_))
            })
            .await;
        assert!(
            mentions(&se, &["UnknownIssuer"]),
            "the server names the unknown issuer: {se}"
        );
        server
            .still_serves(
                "after a client certificate from another CA",
                client_cfg(Some(trust.identity(pki.client.clone()))),
            )
            .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_that_is_not_pinned_is_refused_naming_its_fingerprint() {
    bounded(async {
        let (server_tls, trust) = self_signed_server();
        let allowed = Identity::self_signed(&["allowed.client"]).expect("self-signed");
        let stranger = Identity::self_signed(&["stranger.client"]).expect("self-signed");
        let tls = server_tls.require_client_pinned(&[allowed.fingerprint()]);
        let mut server = serve(Some(tls)).await;
        let e = connect_fails(
            "unpinned client certificate",
            server.addr(),
            client_cfg(Some(trust.clone().identity(stranger.clone()))),
        )
        .await;
        assert!(
            mentions(&e, &["alert", "handshake"]),
            "the client is told the server refused the TLS handshake: {e}"
        );
        let se = server
            .expect_error("server pinning client certificates", |e| {
                matches!(e, Error::Tls(_))
            })
            .await;
        assert!(
            se.to_string().contains(&stranger.fingerprint().to_string())
                && mentions(&se, &["pinned"]),
            "the server names the refused fingerprint: {se}"
        );
        server
            .still_serves(
                "after an unpinned client certificate",
                client_cfg(Some(trust.identity(allowed))),
            )
            .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_tls_handshake_times_out_on_the_server_without_blocking_other_clients() {
    bounded(async {
        let (tls, good) = self_signed_server();
        let mut server = serve(Some(tls)).await;
        let start = Instant::now();
        // Connects, then says nothing.
        let silent = within("raw connect", tokio::net::TcpStream::connect(server.addr()))
            .await
            .expect("raw connect");
        server
            .still_serves("while a handshake stalls", client_cfg(Some(good.clone())))
            .await;
        server
            .expect_error("stalled handshake", |e| {
                matches!(e, Error::HandshakeTimeout { .. })
            })
            .await;
        let took = start.elapsed();
        assert!(
            took < HANDSHAKE + MARGIN,
            "the stalled handshake ended after {took:?}"
        );
        drop(silent);
        server
            .still_serves("after a stalled handshake", client_cfg(Some(good)))
            .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_to_a_silent_server_fails_with_the_handshake_timeout() {
    bounded(async {
        // A TCP listener that accepts and never answers.
        let listener = within(
            "bind raw listener",
            tokio::net::TcpListener::bind("127.0.0.1:0"),
        )
        .await
        .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let holder = tokio::spawn(async move {
            // Holds the accepted socket open, silent, for at most LIMIT.
            let _ = tokio::time::timeout(LIMIT, async {
                let (s, _) = listener.accept().await.expect("accept");
                tokio::time::sleep(LIMIT).await;
                drop(s);
            })
            .await;
        });
        let timeout = Duration::from_millis(500);
        let start = Instant::now();
        let r = within(
            "connect to a silent server",
            Session::connect_with(
                addr,
                Config::default()
                    .handshake_timeout(timeout)
                    .tls_client(ClientTls::pinned(Fingerprint([0; 32]))),
            ),
        )
        .await;
        let took = start.elapsed();
        match r {
            Err(Error::HandshakeTimeout { timeout: d, .. }) => assert_eq!(d, timeout),
            other => panic!("expected HandshakeTimeout, got {other:?}"),
        }
        assert!(took < timeout + MARGIN, "took {took:?}");
        holder.abort();
    })
    .await;
}

// Hints in TLS errors, and refusals of a client certificate that reach the
// client after its side of a TLS 1.3 handshake finished.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_server_name_error_carries_the_hint_that_the_certificate_does_not_name_the_server()
{
    bounded(async {
        let pki = make_pki("name-hint");
        let server = serve(Some(ServerTls::new(pki.server.clone()))).await;
        let wrong =
            ClientTls::with_ca(pki.root.pem().as_bytes(), "other.example").expect("with_ca");
        let e = connect_fails("wrong server name", server.addr(), client_cfg(Some(wrong))).await;
        assert!(
            mentions(&e, &["does not name the expected server"]),
            "the client gets explain()'s hint for a wrong name: {e}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_log_for_a_missing_client_certificate_says_one_is_required() {
    bounded(async {
        let pki = make_pki("missing-hint");
        let tls = ServerTls::new(pki.server.clone())
            .require_client_ca(pki.root.pem().as_bytes())
            .expect("require_client_ca");
        let mut server = serve(Some(tls)).await;
        let trust = ClientTls::with_ca(pki.root.pem().as_bytes(), "localhost").expect("with_ca");
        connect_fails(
            "no client certificate",
            server.addr(),
            client_cfg(Some(trust)),
        )
        .await;
        let se = server
            .expect_error("server requiring a client certificate", |e| {
                matches!(e, Error::Tls(_))
            })
            .await;
        assert!(
            mentions(&se, &["client certificate is required"]),
            "the server log carries explain()'s hint: {se}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_certificate_the_server_refuses_gets_an_error_tls() {
    bounded(async {
        let pki = make_pki("refused");
        let other = make_pki("refused-other");
        let by_ca = ServerTls::new(pki.server.clone())
            .require_client_ca(pki.root.pem().as_bytes())
            .expect("require_client_ca");
        let trust = ClientTls::with_ca(pki.root.pem().as_bytes(), "localhost").expect("with_ca");
        let by_ca = serve(Some(by_ca)).await;

        let e = connect_fails(
            "no client certificate",
            by_ca.addr(),
            client_cfg(Some(trust.clone())),
        )
        .await;
        assert!(matches!(e, Error::Tls(_)), "missing certificate: {e:?}");
        assert!(
            mentions(&e, &["ClientTls::identity"]),
            "the client is told how to present a certificate: {e}"
        );

        let e = connect_fails(
            "client certificate from another CA",
            by_ca.addr(),
            client_cfg(Some(trust.clone().identity(other.client.clone()))),
        )
        .await;
        assert!(
            matches!(e, Error::Tls(_)),
            "certificate from another CA: {e:?}"
        );

        let pinned =
            ServerTls::new(pki.server.clone()).require_client_pinned(&[pki.client.fingerprint()]);
        let pinned = serve(Some(pinned)).await;
        let e = connect_fails(
            "unpinned client certificate",
            pinned.addr(),
            client_cfg(Some(trust.identity(other.client.clone()))),
        )
        .await;
        assert!(matches!(e, Error::Tls(_)), "unpinned certificate: {e:?}");
    })
    .await;
}

// ---------------------------------------------------------------------------
// 4. Mutual TLS accepted
// ---------------------------------------------------------------------------

async fn mutual_tls_gives_the_server_the_client_identity(tls: ServerTls, pki: &Pki) {
    let mut server = serve(Some(tls)).await;
    let cfg = client_cfg(Some(
        ClientTls::with_ca(pki.root.pem().as_bytes(), "localhost")
            .expect("with_ca")
            .identity(pki.client.clone()),
    ));
    let client = within(
        "mutual TLS connect",
        Session::connect_with(server.addr(), cfg.clone()),
    )
    .await
    .expect("a client with a good certificate connects");
    let peer: PeerIdentity = only_session(&server.exp)
        .await
        .peer_identity()
        .expect("with mutual TLS the server knows the client identity");
    assert_eq!(peer.fingerprint, pki.client.fingerprint());
    assert!(
        peer.names.iter().any(|n| n == CLIENT_NAME) && peer.names.iter().any(|n| n == CLIENT_CN),
        "the client's names: {:?}",
        peer.names
    );
    assert_eq!(
        client.peer_identity().map(|p| p.fingerprint),
        Some(pki.server.fingerprint())
    );
    let tx = within("import", client.import_sender::<u64>(INBOX))
        .await
        .expect("import");
    send_ok("send", &tx, 7).await;
    assert_eq!(recv_some("recv", &mut server.inbox).await, 7);
    drop(tx);
    within("close", client.close()).await;
    server.still_serves("a second mutual-TLS client", cfg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_a_client_ca_accepts_a_client_signed_through_an_intermediate() {
    bounded(async {
        let pki = make_pki("mtls-ok-ca");
        let tls = ServerTls::new(pki.server.clone())
            .require_client_ca(pki.root.pem().as_bytes())
            .expect("require_client_ca");
        mutual_tls_gives_the_server_the_client_identity(tls, &pki).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_pinned_client_fingerprints_accepts_a_pinned_client() {
    bounded(async {
        let pki = make_pki("mtls-ok-pin");
        let unrelated = Identity::self_signed(&["unrelated"]).expect("self-signed");
        let tls = ServerTls::new(pki.server.clone())
            .require_client_pinned(&[unrelated.fingerprint(), pki.client.fingerprint()]);
        mutual_tls_gives_the_server_the_client_identity(tls, &pki).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_works_with_self_signed_identities_on_both_sides() {
    bounded(async {
        let server_id = Identity::self_signed(&["localhost"]).expect("self-signed");
        let client_id = Identity::self_signed(&["client"]).expect("self-signed");
        let tls =
            ServerTls::new(server_id.clone()).require_client_pinned(&[client_id.fingerprint()]);
        let mut server = serve(Some(tls)).await;
        let cfg = client_cfg(Some(
            ClientTls::pinned(server_id.fingerprint()).identity(client_id.clone()),
        ));
        let client = within("connect", Session::connect_with(server.addr(), cfg.clone()))
            .await
            .expect("connect");
        assert_eq!(
            only_session(&server.exp)
                .await
                .peer_identity()
                .map(|p| p.fingerprint),
            Some(client_id.fingerprint())
        );
        within("close", client.close()).await;
        server.still_serves("self-signed mutual TLS", cfg).await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// 5. No plaintext off loopback unless asked
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_a_non_loopback_address_without_tls_is_refused_naming_both_ways_out() {
    bounded(async {
        let r = within(
            "bind 0.0.0.0",
            Exporter::bind_with("0.0.0.0:0", Config::default()),
        )
        .await;
        let e = match r {
            Ok(exp) => panic!("plaintext on 0.0.0.0 must be refused, bound {exp:?}"),
            Err(e) => e,
        };
        assert!(matches!(e, Error::Config(_)), "an Error::Config: {e:?}");
        let text = e.to_string();
        assert!(
            text.contains("Config::tls_server"),
            "names Config::tls_server: {text}"
        );
        assert!(
            text.contains("Config::allow_plaintext"),
            "names Config::allow_plaintext: {text}"
        );
        assert!(!text.contains('\n'), "one line: {text}");

        // Exporter::bind (the default config) refuses too.
        let r = within("bind 0.0.0.0", Exporter::bind("0.0.0.0:0")).await;
        assert!(
            matches!(r, Err(Error::Config(_))),
            "Exporter::bind refuses too: {r:?}"
        );
        // And so does listen.
        let r = within("listen 0.0.0.0", netchan::listen::<u8>("0.0.0.0:0")).await;
        assert!(
            matches!(r, Err(Error::Config(_))),
            "netchan::listen refuses too"
        );

        // The IPv6 unspecified address, where the host has IPv6.
        match within(
            "bind [::]",
            Exporter::bind_with("[::]:0", Config::default()),
        )
        .await
        {
            Err(Error::Config(t)) => assert!(t.contains("Config::allow_plaintext"), "{t}"),
            Err(Error::Io(e)) => eprintln!("skipped [::]: no IPv6 here ({e})"),
            other => panic!("plaintext on [::] must be refused: {other:?}"),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_a_non_loopback_address_succeeds_with_allow_plaintext_or_with_tls() {
    bounded(async {
        let exp = within(
            "bind 0.0.0.0 plaintext",
            Exporter::bind_with("0.0.0.0:0", Config::default().allow_plaintext()),
        )
        .await
        .expect("allow_plaintext opts out of the refusal");
        // Reach it over loopback only.
        let port = exp.local_addr().port();
        let mut inbox = exp.export_receiver::<u8>("inbox", 1).expect("export");
        let s = within("connect", Session::connect(("127.0.0.1", port)))
            .await
            .expect("connect");
        let tx = within("import", s.import_sender::<u8>("inbox"))
            .await
            .expect("import");
        send_ok("send", &tx, 1).await;
        assert_eq!(recv_some("recv", &mut inbox).await, 1);
        drop(tx);
        within("close", s.close()).await;
        within("shutdown", exp.shutdown()).await;

        // TLS may serve on any address.
        let (exp, s, _) = self_signed_pair_on("0.0.0.0:0").await;
        within("close", s.close()).await;
        within("shutdown", exp.shutdown()).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_plaintext_needs_no_setup() {
    bounded(async {
        let exp = within("bind 127.0.0.1", Exporter::bind("127.0.0.1:0"))
            .await
            .expect("plaintext on 127.0.0.1 needs no opt-out");
        within("shutdown", exp.shutdown()).await;
        match within("bind [::1]", Exporter::bind("[::1]:0")).await {
            Ok(exp) => within("shutdown", exp.shutdown()).await,
            Err(Error::Io(e)) => eprintln!("skipped [::1]: no IPv6 loopback here ({e})"),
            Err(e) => panic!("plaintext on [::1] must be allowed: {e}"),
        }
    })
    .await;
}

// ---------------------------------------------------------------------------
// 6. Identities and fingerprints
// ---------------------------------------------------------------------------

#[test]
fn a_self_signed_identity_survives_a_round_trip_through_its_own_pem() {
    let id = Identity::self_signed(&["localhost"]).expect("self-signed");
    let cert = id.cert_pem();
    let key = id.key_pem();
    assert_eq!(count_certs(&cert), 1);
    assert!(key.contains("PRIVATE KEY"), "key PEM: {key}");
    let back = Identity::from_pem(cert.as_bytes(), key.as_bytes()).expect("from_pem");
    assert_eq!(back.fingerprint(), id.fingerprint());
    assert_eq!(back.cert_pem(), cert);
    assert_eq!(back.key_pem(), key);
}

#[test]
fn a_ca_issued_identity_keeps_its_chain_through_a_pem_round_trip() {
    let pki = make_pki("roundtrip");
    let cert = pki.server.cert_pem();
    assert_eq!(count_certs(&cert), 2, "leaf and intermediate");
    let back =
        Identity::from_pem(cert.as_bytes(), pki.server.key_pem().as_bytes()).expect("from_pem");
    assert_eq!(back.fingerprint(), pki.server.fingerprint());
    assert_eq!(back.cert_pem(), cert);
}

#[test]
fn two_self_signed_identities_have_different_fingerprints() {
    let a = Identity::self_signed(&["localhost"]).expect("self-signed");
    let b = Identity::self_signed(&["localhost"]).expect("self-signed");
    assert_ne!(a.fingerprint(), b.fingerprint());
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "netchan-tls-test-{tag}-{}-{nanos}-{}",
            std::process::id(),
            unique("d")
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn an_identity_loads_from_a_certificate_file_and_a_key_file() {
    let dir = TempDir::new("load");
    let pki = make_pki("load");
    let cert_path = dir.0.join("server.crt");
    let key_path = dir.0.join("server.key");
    std::fs::write(&cert_path, pki.server.cert_pem()).expect("write cert");
    std::fs::write(&key_path, pki.server.key_pem()).expect("write key");
    let loaded = Identity::load(&cert_path, &key_path).expect("load");
    assert_eq!(loaded.fingerprint(), pki.server.fingerprint());
    assert_eq!(loaded.cert_pem(), pki.server.cert_pem());

    // rcgen's own PEM output (PKCS#8 key) loads as well.
    let root = Ca::root("netchan test root for files");
    let (chain, key) = root.leaf_pem(
        "file leaf",
        &["localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    std::fs::write(&cert_path, &chain).expect("write cert");
    std::fs::write(&key_path, &key).expect("write key");
    let loaded = Identity::load(&cert_path, &key_path).expect("load rcgen PEM");
    assert_eq!(
        loaded.fingerprint(),
        Identity::from_pem(chain.as_bytes(), key.as_bytes())
            .expect("from_pem")
            .fingerprint()
    );

    let missing = dir.0.join("missing.key");
    match Identity::load(&cert_path, &missing) {
        Err(Error::Tls(t)) => assert!(
            t.contains("missing.key"),
            "the error names the missing file: {t}"
        ),
        other => panic!("loading a missing key file must fail with Error::Tls: {other:?}"),
    }
}

#[test]
fn an_identity_whose_key_does_not_match_its_certificate_is_refused() {
    let a = Identity::self_signed(&["localhost"]).expect("self-signed");
    let b = Identity::self_signed(&["localhost"]).expect("self-signed");
    match Identity::from_pem(a.cert_pem().as_bytes(), b.key_pem().as_bytes()) {
        Err(Error::Tls(t)) => assert!(!t.is_empty()),
        other => panic!("a mismatched key must fail with Error::Tls: {other:?}"),
    }
}

#[test]
fn pem_without_a_certificate_or_a_key_is_refused_with_a_tls_error() {
    let id = Identity::self_signed(&["localhost"]).expect("self-signed");
    let (cert, key) = (id.cert_pem(), id.key_pem());
    let cases: [(&str, &[u8], &[u8]); 4] = [
        ("empty chain", b"", key.as_bytes()),
        ("garbage chain", b"not a certificate", key.as_bytes()),
        ("empty key", cert.as_bytes(), b""),
        ("key PEM as chain", key.as_bytes(), key.as_bytes()),
    ];
    for (what, cert, key) in cases {
        match Identity::from_pem(cert, key) {
            Err(Error::Tls(_)) => {}
            other => panic!("{what}: expected Error::Tls, got {other:?}"),
        }
    }
    match ClientTls::with_ca(b"no certificates here", "localhost") {
        Err(Error::Tls(_)) => {}
        other => panic!("with_ca without a CA certificate: {other:?}"),
    }
    match ServerTls::new(id.clone()).require_client_ca(b"") {
        Err(Error::Tls(_)) => {}
        other => panic!("require_client_ca without a CA certificate: {other:?}"),
    }
    assert!(
        ClientTls::with_ca(id.cert_pem().as_bytes(), "not a valid name!").is_err(),
        "with_ca refuses an invalid server name"
    );
}

#[test]
fn a_fingerprint_prints_as_64_lowercase_hex_digits_and_parses_back() {
    let id = Identity::self_signed(&["localhost"]).expect("self-signed");
    let fp = id.fingerprint();
    let text = fp.to_string();
    assert_eq!(text.len(), 64);
    assert!(
        text.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "lowercase hex: {text}"
    );
    assert_eq!(Fingerprint::from_str(&text).expect("parse"), fp);
    assert_eq!(text.parse::<Fingerprint>().expect("parse"), fp);
}

#[test]
fn fingerprints_parse_with_or_without_colons_in_either_case() {
    let fp = Fingerprint(core::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0xa5));
    let plain = fp.to_string();
    let upper = plain.to_uppercase();
    let pairs: Vec<&str> = (0..32).map(|i| &plain[2 * i..2 * i + 2]).collect();
    let colons = pairs.join(":");
    let upper_colons = colons.to_uppercase();
    for text in [&plain, &upper, &colons, &upper_colons] {
        assert_eq!(
            text.parse::<Fingerprint>()
                .unwrap_or_else(|e| panic!("{text}: {e}")),
            fp,
            "{text}"
        );
    }
}

#[test]
fn malformed_fingerprints_are_refused() {
    let good = "ab".repeat(32);
    let bad = [
        String::new(),
        "ab".to_owned(),
        good[..63].to_owned(),
        format!("{good}a"),
        format!("{good}ab"),
        format!("{}zz", &good[..62]),
        format!("{}g0", &good[..62]),
        "0x".to_owned() + &good[..62],
        // 64 bytes, none of them hex digits.
        "é".repeat(32),
        "--".repeat(32),
    ];
    for text in bad {
        match text.parse::<Fingerprint>() {
            Err(Error::Config(_)) => {}
            Err(e) => panic!("{text:?}: refused, but not as Error::Config: {e:?}"),
            Ok(fp) => panic!("{text:?}: parsed as {fp} although malformed"),
        }
    }
}

// ---------------------------------------------------------------------------
// 7. The cluster API over TLS
// ---------------------------------------------------------------------------

/// A loopback port that was free a moment ago (listen_with does not
/// report the port it bound, so the test picks one).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("probe bind");
    l.local_addr().expect("probe addr").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_with_and_dial_with_work_over_tls() {
    bounded(async {
        let id = Identity::self_signed(&["localhost"]).expect("self-signed");
        let pin = id.fingerprint();
        let mut attempt = 0;
        let (port, (to_clients, mut from_clients)) = loop {
            let port = free_port();
            match within(
                "listen_with",
                netchan::listen_with::<String>(
                    ("127.0.0.1", port),
                    Config::default().tls_server(ServerTls::new(id.clone())),
                ),
            )
            .await
            {
                Ok(halves) => break (port, halves),
                Err(Error::Io(e)) if attempt < 5 => {
                    attempt += 1;
                    eprintln!("port {port} taken meanwhile ({e}); retrying");
                }
                Err(e) => panic!("listen_with over TLS: {e}"),
            }
        };
        let (tx, mut rx) = within(
            "dial_with",
            netchan::dial_with::<String>(
                ("127.0.0.1", port),
                Config::default().tls_client(ClientTls::pinned(pin)),
            ),
        )
        .await
        .expect("dial_with over TLS");
        send_ok("client to server", &tx, "up".to_owned()).await;
        assert_eq!(recv_some("server receives", &mut from_clients).await, "up");
        send_ok("server to client", &to_clients, "down".to_owned()).await;
        assert_eq!(recv_some("client receives", &mut rx).await, "down");

        // A dial with the wrong pin fails and names the fingerprint.
        let other = Identity::self_signed(&["localhost"]).expect("self-signed");
        let r = within(
            "dial_with a wrong pin",
            netchan::dial_with::<String>(
                ("127.0.0.1", port),
                Config::default()
                    .handshake_timeout(HANDSHAKE)
                    .tls_client(ClientTls::pinned(other.fingerprint())),
            ),
        )
        .await;
        match r {
            Err(e @ Error::Tls(_)) => assert!(mentions(&e, &["fingerprint"]), "{e}"),
            Err(e) => panic!("expected Error::Tls naming the fingerprint, got {e:?}"),
            Ok(_) => panic!("dial_with a wrong pin must fail"),
        }
        // A plaintext dial fails too, and the listener goes on.
        let r = within(
            "plaintext dial to a TLS listener",
            netchan::dial_with::<String>(
                ("127.0.0.1", port),
                Config::default().handshake_timeout(HANDSHAKE),
            ),
        )
        .await;
        assert!(r.is_err(), "a plaintext dial to a TLS listener fails");

        send_ok("client to server again", &tx, "still up".to_owned()).await;
        assert_eq!(
            recv_some("server receives again", &mut from_clients).await,
            "still up"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exporter_cluster_over_tls_shares_values_among_ca_verified_clients() {
    bounded(async {
        let pki = make_pki("cluster");
        let exp = within(
            "bind",
            Exporter::bind_with(
                "127.0.0.1:0",
                Config::default().tls_server(ServerTls::new(pki.server.clone())),
            ),
        )
        .await
        .expect("bind");
        let (to_clients, mut from_clients) = exp.cluster::<u32>().expect("cluster");
        let cfg = Config::default().tls_client(
            ClientTls::with_ca(pki.root.pem().as_bytes(), "localhost").expect("with_ca"),
        );
        let mut clients = Vec::new();
        for _ in 0..2 {
            clients.push(
                within(
                    "dial_with",
                    netchan::dial_with::<u32>(exp.local_addr(), cfg.clone()),
                )
                .await
                .expect("dial_with"),
            );
        }
        for (i, (tx, _)) in clients.iter().enumerate() {
            send_ok("client sends", tx, i as u32).await;
        }
        let mut got = vec![
            recv_some("server receives", &mut from_clients).await,
            recv_some("server receives", &mut from_clients).await,
        ];
        got.sort();
        assert_eq!(got, [0, 1]);
        // Each value goes to exactly one client.
        for v in 0..10u32 {
            send_ok("server sends", &to_clients, v).await;
        }
        let mut received = Vec::new();
        while received.len() < 10 {
            let mut progressed = false;
            for (_, rx) in clients.iter_mut() {
                if let Ok(Ok(Some(v))) =
                    tokio::time::timeout(Duration::from_millis(50), rx.recv()).await
                {
                    received.push(v);
                    progressed = true;
                }
            }
            if !progressed {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(received.len() <= 10);
        }
        received.sort();
        assert_eq!(
            received,
            (0..10).collect::<Vec<_>>(),
            "each value exactly once"
        );
        within("shutdown", exp.shutdown()).await;
    })
    .await;
}

/// Served over TLS by the test below.
#[netchan::service]
pub trait Blob {
    /// `n` bytes of `fill`.
    async fn make(&self, n: usize, fill: u8) -> ByteBuf;
}

struct BlobImpl;

impl Blob for BlobImpl {
    async fn make(&self, n: usize, fill: u8) -> ByteBuf {
        ByteBuf::from(vec![fill; n])
    }
}

/// A caller making one call at a time, and the server answering it, write
/// to the TLS stream from their own tasks when the connection's writer is
/// idle, while the writer sends large results in chunks through the same
/// stream. Small calls alone, small calls beside large results, and calls
/// made together must all be answered, whole, on both runtime shapes.
async fn calls_one_at_a_time_over_tls() {
    let (exp, client, _) = self_signed_pair().await;
    exp.serve(BlobServer::new(BlobImpl));
    let blob = BlobClient::new(&client);
    let big = {
        let blob = blob.clone();
        tokio::spawn(async move {
            for round in 0..3u8 {
                let got = blob
                    .make((2 << 20) + 7, round)
                    .await
                    .expect("a large result");
                assert_eq!(got.len(), (2 << 20) + 7);
                assert!(got.iter().all(|&b| b == round));
            }
        })
    };
    for i in 0..200usize {
        let n = i % 97;
        let got = within("a call alone", blob.make(n, i as u8))
            .await
            .expect("a small result");
        assert_eq!(got.as_slice(), vec![i as u8; n].as_slice());
        if i % 40 == 0 {
            let wave: Vec<_> = (0..8u8).map(|k| blob.make(16, k)).collect();
            for (k, r) in within("calls together", futures::future::join_all(wave))
                .await
                .into_iter()
                .enumerate()
            {
                assert_eq!(r.expect("a result of the wave").as_slice(), &[k as u8; 16]);
            }
        }
    }
    within("the large results", big)
        .await
        .expect("large results task");
    client.close().await;
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_one_at_a_time_over_tls_on_two_workers() {
    bounded(calls_one_at_a_time_over_tls()).await;
}

#[tokio::test(flavor = "current_thread")]
async fn calls_one_at_a_time_over_tls_on_one_thread() {
    bounded(calls_one_at_a_time_over_tls()).await;
}
