//! TLS 1.3 with real authentication, on tokio-rustls with the ring
//! provider passed explicitly (so another crypto provider elsewhere in a
//! program's dependency tree cannot make rustls panic).
//!
//! A server has an [`Identity`] (certificate chain and key). A client trusts
//! the server either by pinning its certificate's SHA-256 [`Fingerprint`]
//! (like SSH's known hosts) or through a CA and the server's name. Mutual
//! TLS adds a client identity, checked by CA or pinned fingerprints.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), netchan::Error> {
//! use netchan::tls::{ClientTls, Identity, ServerTls};
//! use netchan::{Config, Exporter, Session};
//!
//! let identity = Identity::self_signed(&["localhost"])?;
//! let pin = identity.fingerprint();
//! let exp = Exporter::bind_with("127.0.0.1:0", Config::default().tls_server(ServerTls::new(identity))).await?;
//! let s = Session::connect_with(exp.local_addr(), Config::default().tls_client(ClientTls::pinned(pin))).await?;
//! assert_eq!(s.peer_identity().map(|p| p.fingerprint), Some(pin));
//! # Ok(()) }
//! ```

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::error::Error;
use provider::provider;

mod provider;

fn tls_err(what: &str, e: impl fmt::Display) -> Error {
    Error::Tls(format!("{what}: {e}"))
}

/// The SHA-256 digest of a certificate (DER), shown as 64 hex digits.
/// Parsing accepts upper or lower case, with or without `:` separators.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER certificate.
    pub fn of(cert_der: &[u8]) -> Fingerprint {
        let d = ring::digest::digest(&ring::digest::SHA256, cert_der);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Fingerprint(out)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = Error;

    fn from_str(s: &str) -> Result<Fingerprint, Error> {
        let hex: Vec<u8> = s
            .bytes()
            .filter(|b| *b != b':' && !b.is_ascii_whitespace())
            .collect();
        let bad = || {
            Error::Config(format!(
                "not a SHA-256 fingerprint (64 hex digits expected): {s:?}"
            ))
        };
        if hex.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, pair) in hex.chunks(2).enumerate() {
            let digit = |c: u8| (c as char).to_digit(16).ok_or_else(bad);
            out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
        }
        Ok(Fingerprint(out))
    }
}

/// How much encrypted data a TLS connection may hold unsent (rustls's
/// default is 64 KiB). The writer hands over a chunk and its 9-byte frame
/// header together: at the default, a 64 KiB chunk left its last bytes
/// for a second write call, with a record and a system call of their own
/// (twice the system calls per MiB; measured 12-24 % less throughput for
/// 1 MiB messages). 128 KiB did as well as 512 KiB, and keeps what waits
/// ahead of a small message short.
const SEND_BUFFER: usize = 128 << 10;

/// Sets the buffers of a TLS connection, once its handshake is done.
pub(crate) fn tune<D>(conn: &mut rustls::ConnectionCommon<D>) {
    conn.set_buffer_limit(Some(SEND_BUFFER));
}

/// What a session knows of its peer's certificate after a TLS handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// SHA-256 of the peer's leaf certificate.
    pub fingerprint: Fingerprint,
    /// DNS names and IP addresses the certificate names (subject
    /// alternative names), then its common name if any.
    pub names: Vec<String>,
}

impl PeerIdentity {
    /// The identity of the peer's leaf certificate, if it presented one.
    pub(crate) fn of_stream<D>(conn: &rustls::ConnectionCommon<D>) -> Option<PeerIdentity> {
        conn.peer_certificates()
            .and_then(|c| c.first())
            .map(|c| PeerIdentity::from_der(c))
    }

    pub(crate) fn from_der(der: &[u8]) -> PeerIdentity {
        let mut names = Vec::new();
        if let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) {
            if let Ok(Some(san)) = cert.subject_alternative_name() {
                for n in &san.value.general_names {
                    match n {
                        x509_parser::extensions::GeneralName::DNSName(d) => {
                            names.push((*d).to_owned())
                        }
                        x509_parser::extensions::GeneralName::IPAddress(ip) => {
                            let ip = match ip.len() {
                                4 => <[u8; 4]>::try_from(*ip)
                                    .ok()
                                    .map(|a| std::net::IpAddr::from(a).to_string()),
                                16 => <[u8; 16]>::try_from(*ip)
                                    .ok()
                                    .map(|a| std::net::IpAddr::from(a).to_string()),
                                _ => None,
                            };
                            names.extend(ip);
                        }
                        _ => {}
                    }
                }
            }
            for cn in cert.subject().iter_common_name() {
                if let Ok(s) = cn.as_str() {
                    names.push(s.to_owned());
                }
            }
        }
        PeerIdentity {
            fingerprint: Fingerprint::of(der),
            names,
        }
    }
}

/// A certificate chain and its private key.
#[derive(Clone)]
pub struct Identity {
    certs: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint())
            .field("chain_len", &self.certs.len())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A new self-signed certificate for `names` (DNS names or IP
    /// addresses) with a fresh key. Clients trust it by pinning its
    /// [`fingerprint`](Identity::fingerprint).
    pub fn self_signed(names: &[&str]) -> Result<Identity, Error> {
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let ck = rcgen::generate_simple_self_signed(names)
            .map_err(|e| tls_err("cannot generate a certificate", e))?;
        let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der())
            .map_err(|e| tls_err("cannot use the generated key", e))?;
        Ok(Identity {
            certs: vec![ck.cert.der().clone()],
            key: Arc::new(key),
        })
    }

    /// An identity from PEM: a certificate chain (leaf first) and a
    /// private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> Result<Identity, Error> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_chain)
            .collect::<Result<_, _>>()
            .map_err(|e| tls_err("cannot read the certificate PEM", e))?;
        if certs.is_empty() {
            return Err(Error::Tls("no certificate found in the PEM".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| tls_err("cannot read the private key PEM", e))?;
        let id = Identity {
            certs,
            key: Arc::new(key),
        };
        // Fail now, not at the first handshake, if key and chain disagree.
        id.certified_key()?;
        Ok(id)
    }

    /// Reads [`from_pem`](Identity::from_pem) input from two files.
    pub fn load(
        cert_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> Result<Identity, Error> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| Error::Tls(format!("cannot read {}: {e}", p.display())))
        };
        Identity::from_pem(&read(cert_path.as_ref())?, &read(key_path.as_ref())?)
    }

    /// SHA-256 of the leaf certificate.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.certs[0])
    }

    /// The certificate chain as PEM (to give to clients as a CA file for
    /// a self-signed identity).
    pub fn cert_pem(&self) -> String {
        self.certs
            .iter()
            .map(|c| der_to_pem("CERTIFICATE", c))
            .collect()
    }

    /// The private key as PEM (to save a generated identity).
    pub fn key_pem(&self) -> String {
        let label = match &*self.key {
            PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
            PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
            _ => "PRIVATE KEY",
        };
        der_to_pem(label, self.key.secret_der())
    }

    fn certified_key(&self) -> Result<Arc<rustls::sign::CertifiedKey>, Error> {
        let ck = rustls::sign::CertifiedKey::from_der(
            self.certs.clone(),
            self.key.clone_key(),
            &provider(),
        )
        .map_err(|e| tls_err("certificate and key do not match", e))?;
        Ok(Arc::new(ck))
    }
}

fn der_to_pem(label: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(label, der.to_vec()))
}

fn roots_from_pem(ca_pem: &[u8]) -> Result<rustls::RootCertStore, Error> {
    let mut roots = rustls::RootCertStore::empty();
    let mut n = 0;
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        let c = c.map_err(|e| tls_err("cannot read the CA PEM", e))?;
        roots
            .add(c)
            .map_err(|e| tls_err("cannot use the CA certificate", e))?;
        n += 1;
    }
    if n == 0 {
        return Err(Error::Tls("no certificate found in the CA PEM".into()));
    }
    Ok(roots)
}

#[derive(Debug, Clone)]
enum ClientAuth {
    None,
    Ca(Arc<rustls::RootCertStore>),
    Pinned(Vec<Fingerprint>),
}

/// Server-side TLS settings: an identity, and optionally a requirement
/// that clients present certificates (mutual TLS).
#[derive(Debug, Clone)]
pub struct ServerTls {
    identity: Identity,
    client_auth: ClientAuth,
}

impl ServerTls {
    /// Serve with `identity`; clients are not asked for certificates.
    pub fn new(identity: Identity) -> ServerTls {
        ServerTls {
            identity,
            client_auth: ClientAuth::None,
        }
    }

    /// Require client certificates issued by a CA in `ca_pem`.
    pub fn require_client_ca(mut self, ca_pem: &[u8]) -> Result<ServerTls, Error> {
        self.client_auth = ClientAuth::Ca(Arc::new(roots_from_pem(ca_pem)?));
        Ok(self)
    }

    /// Require a client certificate whose fingerprint is one of `pins`.
    pub fn require_client_pinned(mut self, pins: &[Fingerprint]) -> ServerTls {
        self.client_auth = ClientAuth::Pinned(pins.to_vec());
        self
    }

    pub(crate) fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, Error> {
        let provider = provider();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_err("TLS 1.3 unavailable", e))?;
        let builder = match &self.client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Ca(roots) => {
                let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    roots.clone(),
                    provider.clone(),
                )
                .build()
                .map_err(|e| tls_err("cannot build the client verifier", e))?;
                builder.with_client_cert_verifier(v)
            }
            ClientAuth::Pinned(pins) => builder.with_client_cert_verifier(Arc::new(PinnedClient {
                pins: pins.clone(),
                algs: provider.signature_verification_algorithms,
            })),
        };
        let cfg = builder
            .with_single_cert(self.identity.certs.clone(), self.identity.key.clone_key())
            .map_err(|e| tls_err("certificate and key do not match", e))?;
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
    }
}

#[derive(Debug, Clone)]
enum ServerAuth {
    Pinned(Fingerprint),
    Ca {
        roots: Arc<rustls::RootCertStore>,
        server_name: String,
    },
}

/// Client-side TLS settings: how to trust the server, and optionally an
/// identity for mutual TLS.
#[derive(Debug, Clone)]
pub struct ClientTls {
    server: ServerAuth,
    identity: Option<Identity>,
}

impl ClientTls {
    /// Trust exactly the server certificate with this fingerprint (names
    /// and expiry are not checked: the pin is the trust).
    pub fn pinned(fingerprint: Fingerprint) -> ClientTls {
        ClientTls {
            server: ServerAuth::Pinned(fingerprint),
            identity: None,
        }
    }

    /// Trust servers whose chain leads to a CA in `ca_pem` and whose
    /// certificate names `server_name` (normal web PKI verification).
    pub fn with_ca(ca_pem: &[u8], server_name: &str) -> Result<ClientTls, Error> {
        ServerName::try_from(server_name.to_owned())
            .map_err(|e| tls_err(&format!("invalid server name {server_name:?}"), e))?;
        Ok(ClientTls {
            server: ServerAuth::Ca {
                roots: Arc::new(roots_from_pem(ca_pem)?),
                server_name: server_name.to_owned(),
            },
            identity: None,
        })
    }

    /// Present `identity` to servers that require client certificates.
    pub fn identity(mut self, identity: Identity) -> ClientTls {
        self.identity = Some(identity);
        self
    }

    pub(crate) fn connector(
        &self,
    ) -> Result<(tokio_rustls::TlsConnector, ServerName<'static>), Error> {
        let provider = provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_err("TLS 1.3 unavailable", e))?;
        let (builder, name) = match &self.server {
            ServerAuth::Pinned(fp) => (
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(PinnedServer {
                        pin: *fp,
                        algs: provider.signature_verification_algorithms,
                    })),
                // Not checked with a pin; must only be syntactically valid.
                ServerName::try_from("netchan.invalid").map_err(|e| tls_err("server name", e))?,
            ),
            ServerAuth::Ca { roots, server_name } => (
                builder.with_root_certificates(roots.clone()),
                ServerName::try_from(server_name.clone())
                    .map_err(|e| tls_err("invalid server name", e))?,
            ),
        };
        let cfg = match &self.identity {
            None => builder.with_no_client_auth(),
            Some(id) => builder
                .with_client_auth_cert(id.certs.clone(), id.key.clone_key())
                .map_err(|e| tls_err("client certificate and key do not match", e))?,
        };
        Ok((tokio_rustls::TlsConnector::from(Arc::new(cfg)), name))
    }
}

/// Accepts exactly one server certificate, by fingerprint.
#[derive(Debug)]
struct PinnedServer {
    pin: Fingerprint,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = Fingerprint::of(end_entity);
        if got == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "server certificate fingerprint {got} does not match the pinned {}",
                self.pin
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Accepts client certificates by fingerprint.
#[derive(Debug)]
struct PinnedClient {
    pins: Vec<Fingerprint>,
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for PinnedClient {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let got = Fingerprint::of(end_entity);
        if self.pins.contains(&got) {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "client certificate fingerprint {got} is not among the pinned ones"
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Explains a failed handshake in terms a user can act on. `side` is
/// "client" or "server"; `peer` names the other end where known.
pub(crate) fn explain(side: &str, peer: Option<std::net::SocketAddr>, e: std::io::Error) -> Error {
    let text = e.to_string();
    // Match on rustls's error values (their Debug form names the variant),
    // not on display texts that change between releases.
    let what = match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(r) => format!("{r:?}"),
        None => text.clone(),
    };
    let hint = if what.contains("InvalidContentType") || what.contains("corrupt message") {
        " (the peer does not speak TLS: enable TLS on both sides, or neither)"
    } else if what.contains("UnknownIssuer") || what.contains("UnknownCA") {
        " (the certificate is not signed by a trusted CA)"
    } else if what.contains("NotValidForName") {
        " (the certificate does not name the expected server)"
    } else if what.contains("CertificateRequired") || what.contains("NoCertificatesPresented") {
        " (a client certificate is required: ClientTls::identity on the client)"
    } else if what.contains("fingerprint") {
        " (the certificate is not the pinned one)"
    } else {
        ""
    };
    let from = peer.map(|p| format!(" (peer {p})")).unwrap_or_default();
    Error::Tls(format!(
        "TLS handshake failed on the {side} side{from}: {text}{hint}"
    ))
}

/// An I/O error on an established session: TLS alerts that arrive after
/// the handshake (TLS 1.3 servers refuse client certificates then) are
/// explained like handshake failures.
pub(crate) fn explain_io(e: std::io::Error) -> Error {
    if e.get_ref()
        .is_some_and(|i| i.downcast_ref::<rustls::Error>().is_some())
    {
        explain("client", None, e)
    } else {
        Error::io(e)
    }
}
