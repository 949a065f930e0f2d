//! TLS material made fresh in each child: a self-signed certificate for
//! the raw TLS baseline (tokio-rustls, ring provider, TLS 1.3 only, as
//! netchan uses), and a netchan identity pinned by the client.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::harness::{Ctx, R};

const TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// Raw TLS: an acceptor and a connector that trusts exactly its cert.
#[derive(Clone)]
pub(crate) struct RawTls {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) connector: TlsConnector,
}

impl std::fmt::Debug for RawTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawTls")
    }
}

impl RawTls {
    pub(crate) fn new() -> R<RawTls> {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .ctx("generate a certificate")?;
        let cert: CertificateDer<'static> = ck.cert.der().clone();
        let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der())
            .map_err(|e| format!("key: {e}"))?;
        // rustls takes the process's provider from its crate features: ring,
        // the only one this build enables, as netchan uses (rustls 0.23.48
        // deprecated naming it with `crypto::ring::default_provider()`).
        let server = rustls::ServerConfig::builder_with_protocol_versions(TLS13_ONLY)
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .ctx("server config")?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).ctx("trust the certificate")?;
        let client = rustls::ClientConfig::builder_with_protocol_versions(TLS13_ONLY)
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(RawTls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }

    pub(crate) fn server_name() -> ServerName<'static> {
        ServerName::DnsName(
            rustls::pki_types::DnsName::try_from("localhost")
                .unwrap_or_else(|_| unreachable!("a valid name"))
                .to_owned(),
        )
    }
}

/// netchan's TLS settings for both sides.
#[derive(Debug, Clone)]
pub(crate) struct NetchanTls {
    pub(crate) server: netchan::tls::ServerTls,
    pub(crate) client: netchan::tls::ClientTls,
}

impl NetchanTls {
    pub(crate) fn new() -> R<NetchanTls> {
        let id = netchan::tls::Identity::self_signed(&["localhost"]).ctx("netchan identity")?;
        let fp = id.fingerprint();
        Ok(NetchanTls {
            server: netchan::tls::ServerTls::new(id),
            client: netchan::tls::ClientTls::pinned(fp),
        })
    }
}
