//! The *ring* `CryptoProvider` netchan hands to every rustls config.
//!
//! rustls 0.23.48 deprecated `rustls::crypto::ring::default_provider()`
//! (*ring* offers no post-quantum key exchange), which made every build
//! against a fresh lock file warn. The provider is assembled here from the
//! parts rustls and rustls-webpki still publish without deprecation: the
//! same cipher suites, key-exchange groups and signature algorithms, *ring*'s
//! random numbers and rustls's *ring* key loader. A test checks that the
//! result equals rustls's own *ring* provider, so the two cannot drift
//! apart unnoticed.

use std::sync::Arc;

use rustls::SignatureScheme;
use rustls::crypto::ring as rustls_ring;
use rustls::crypto::{CryptoProvider, GetRandomFailed, KeyProvider, SecureRandom};
use rustls::crypto::{WebPkiSupportedAlgorithms, ring::sign::any_supported_type};
use rustls::sign::SigningKey;
use rustls_pki_types::PrivateKeyDer;
use webpki::ring as algs;
use zeroize::Zeroize;

/// rustls's provider on *ring*, built from its non-deprecated parts.
pub(super) fn provider() -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        cipher_suites: rustls_ring::DEFAULT_CIPHER_SUITES.to_vec(),
        kx_groups: rustls_ring::DEFAULT_KX_GROUPS.to_vec(),
        signature_verification_algorithms: SIGNATURE_ALGORITHMS,
        secure_random: &Ring,
        key_provider: &Ring,
    })
}

/// The certificate signatures *ring* can check, and which of them may
/// stand for each TLS signature scheme: rustls's table for its *ring*
/// provider, entry for entry.
static SIGNATURE_ALGORITHMS: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[
        algs::ECDSA_P256_SHA256,
        algs::ECDSA_P256_SHA384,
        algs::ECDSA_P384_SHA256,
        algs::ECDSA_P384_SHA384,
        algs::ED25519,
        algs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        algs::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
        algs::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
        algs::RSA_PKCS1_2048_8192_SHA256,
        algs::RSA_PKCS1_2048_8192_SHA384,
        algs::RSA_PKCS1_2048_8192_SHA512,
        algs::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
        algs::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
        algs::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
    ],
    mapping: &[
        // TLS 1.2 leaves the curve free for an ECDSA scheme; TLS 1.3 fixes it.
        (
            SignatureScheme::ECDSA_NISTP384_SHA384,
            &[algs::ECDSA_P384_SHA384, algs::ECDSA_P256_SHA384],
        ),
        (
            SignatureScheme::ECDSA_NISTP256_SHA256,
            &[algs::ECDSA_P256_SHA256, algs::ECDSA_P384_SHA256],
        ),
        (SignatureScheme::ED25519, &[algs::ED25519]),
        (
            SignatureScheme::RSA_PSS_SHA512,
            &[algs::RSA_PSS_2048_8192_SHA512_LEGACY_KEY],
        ),
        (
            SignatureScheme::RSA_PSS_SHA384,
            &[algs::RSA_PSS_2048_8192_SHA384_LEGACY_KEY],
        ),
        (
            SignatureScheme::RSA_PSS_SHA256,
            &[algs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY],
        ),
        (
            SignatureScheme::RSA_PKCS1_SHA512,
            &[algs::RSA_PKCS1_2048_8192_SHA512],
        ),
        (
            SignatureScheme::RSA_PKCS1_SHA384,
            &[algs::RSA_PKCS1_2048_8192_SHA384],
        ),
        (
            SignatureScheme::RSA_PKCS1_SHA256,
            &[algs::RSA_PKCS1_2048_8192_SHA256],
        ),
    ],
};

/// Random numbers and private keys, both from *ring*.
#[derive(Debug)]
struct Ring;

impl SecureRandom for Ring {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        use ring::rand::SecureRandom as _;
        ring::rand::SystemRandom::new()
            .fill(buf)
            .map_err(|_| GetRandomFailed)
    }
}

impl KeyProvider for Ring {
    fn load_private_key(
        &self,
        mut key_der: PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn SigningKey>, rustls::Error> {
        let key = any_supported_type(&key_der);
        // This copy of the key is ours to wipe, as rustls's loader does.
        key_der.zeroize();
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::SignatureVerificationAlgorithm;

    fn alg_ids(algs: &[&dyn SignatureVerificationAlgorithm]) -> Vec<String> {
        algs.iter()
            .map(|a| format!("{:?}/{:?}", a.public_key_alg_id(), a.signature_alg_id()))
            .collect()
    }

    fn summary(p: &CryptoProvider) -> String {
        let suites: Vec<_> = p.cipher_suites.iter().map(|s| s.suite()).collect();
        let groups: Vec<_> = p.kx_groups.iter().map(|g| g.name()).collect();
        let algs = p.signature_verification_algorithms;
        let mapping: Vec<_> = algs
            .mapping
            .iter()
            .map(|(scheme, a)| (scheme, alg_ids(a)))
            .collect();
        format!(
            "suites {suites:?}\ngroups {groups:?}\nall {:?}\nmapping {mapping:?}\nfips {}",
            alg_ids(algs.all),
            p.fips()
        )
    }

    #[test]
    fn provider_equals_rustls_ring_default_provider() {
        // The deprecated constructor serves as the reference, in this test only.
        #[allow(deprecated)]
        let reference = rustls_ring::default_provider();
        assert_eq!(summary(&provider()), summary(&reference));
    }

    #[test]
    fn provider_fills_random_bytes() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        provider().secure_random.fill(&mut a).unwrap();
        provider().secure_random.fill(&mut b).unwrap();
        assert_ne!(a, b);
    }
}
