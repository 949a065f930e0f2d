//! The `--tls` options every example shares: [`ServerTlsArgs`] for a
//! server (`--tls [--cert FILE --key FILE]`) and [`ClientTlsArgs`] for a
//! client (`--tls --pin FINGERPRINT`, or `--tls --ca FILE [--server-name
//! NAME]`), each turned into a [`netchan::Config`].
//!
//! Both are `clap::Args`: flatten them into a command with
//! `#[command(flatten)]`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use netchan::Config;
use netchan::tls::{ClientTls, Fingerprint, Identity, ServerTls};

/// A server's TLS options.
///
/// * no `--tls`: plaintext (netchan serves plaintext on loopback only);
/// * `--tls`: a fresh self-signed certificate, made at start; clients
///   trust it by its fingerprint (`--pin`), which the server prints;
/// * `--tls --cert FILE --key FILE`: a certificate chain and key from PEM
///   files (clients may then use `--ca` with the issuing CA, or `--pin`).
///
/// ```
/// use clap::Parser;
/// #[derive(Parser)]
/// struct Cli {
///     #[command(flatten)]
///     tls: examples::ServerTlsArgs,
/// }
/// let cli = Cli::parse_from(["server", "--tls"]);
/// let (config, identity) = cli.tls.config("localhost").unwrap();
/// assert!(identity.is_some());
/// # drop(config);
/// assert!(Cli::try_parse_from(["server", "--cert", "c.pem", "--key", "k.pem"]).is_err());
/// ```
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerTlsArgs {
    /// Serve TLS 1.3 (a self-signed certificate unless --cert/--key are
    /// given; its fingerprint is printed for clients' --pin).
    #[arg(long)]
    pub tls: bool,
    /// Certificate chain (PEM, leaf first) to serve with --tls.
    #[arg(long, value_name = "FILE", requires_all = ["tls", "key"])]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires_all = ["tls", "cert"])]
    pub key: Option<PathBuf>,
}

impl ServerTlsArgs {
    /// The server's config, and its identity when TLS is on (print its
    /// [`fingerprint`](Identity::fingerprint) for clients).
    ///
    /// `host` is the host the server listens on; a self-signed
    /// certificate is made for it and the names of
    /// [`self_signed_names`]. Names matter only to clients that verify
    /// them (`--ca`): a pin trusts the certificate itself.
    pub fn config(&self, host: &str) -> anyhow::Result<(Config, Option<Identity>)> {
        if !self.tls {
            return Ok((Config::default(), None));
        }
        let identity = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Identity::load(cert, key).with_context(|| {
                format!(
                    "cannot load the TLS identity from {} and {}",
                    cert.display(),
                    key.display()
                )
            })?,
            (None, None) => {
                let names = self_signed_names(host);
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                Identity::self_signed(&names).context("cannot make a self-signed certificate")?
            }
            // clap's `requires_all` rules this out; say so plainly anyway.
            _ => bail!("--cert and --key go together"),
        };
        let config = Config::default().tls_server(ServerTls::new(identity.clone()));
        Ok((config, Some(identity)))
    }
}

/// The names a server's self-signed certificate is made for: `localhost`,
/// the loopback addresses and the host it was told to listen on (if it is
/// a name or address of its own).
///
/// ```
/// assert_eq!(examples::self_signed_names("example.org"), ["localhost", "127.0.0.1", "::1", "example.org"]);
/// assert_eq!(examples::self_signed_names("0.0.0.0"), ["localhost", "127.0.0.1", "::1"]);
/// ```
pub fn self_signed_names(host: &str) -> Vec<String> {
    let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let unspecified = host
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified());
    if !host.is_empty() && !unspecified && !names.iter().any(|n| n == host) {
        names.push(host.to_owned());
    }
    names
}

/// A client's TLS options: `--tls` with exactly one way to trust the
/// server, `--pin FINGERPRINT` (the server's certificate itself, as it
/// printed it) or `--ca FILE` (a CA that issued the server's certificate,
/// and the name the certificate must carry: `--server-name`, by default
/// the host connected to).
///
/// ```
/// use clap::Parser;
/// #[derive(Parser)]
/// struct Cli {
///     #[command(flatten)]
///     tls: examples::ClientTlsArgs,
/// }
/// let pin = "ab".repeat(32);
/// let cli = Cli::parse_from(["client", "--tls", "--pin", pin.as_str()]);
/// assert!(cli.tls.config("localhost").is_ok());
/// // --tls alone does not say whom to trust.
/// let cli = Cli::parse_from(["client", "--tls"]);
/// assert!(cli.tls.config("localhost").is_err());
/// // A pin without --tls is refused, as is a pin and a CA.
/// assert!(Cli::try_parse_from(["client", "--pin", pin.as_str()]).is_err());
/// assert!(Cli::try_parse_from(["client", "--tls", "--pin", pin.as_str(), "--ca", "ca.pem"]).is_err());
/// ```
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientTlsArgs {
    /// Connect with TLS 1.3; give --pin or --ca to say whom to trust.
    #[arg(long)]
    pub tls: bool,
    /// Trust exactly the server certificate with this SHA-256 fingerprint
    /// (64 hex digits, as the server prints it).
    #[arg(
        long,
        value_name = "FINGERPRINT",
        requires = "tls",
        conflicts_with = "ca"
    )]
    pub pin: Option<Fingerprint>,
    /// Trust server certificates issued by a CA in this PEM file.
    #[arg(long, value_name = "FILE", requires = "tls")]
    pub ca: Option<PathBuf>,
    /// The name the server's certificate must carry with --ca (default:
    /// the host connected to).
    #[arg(long, value_name = "NAME", requires = "ca")]
    pub server_name: Option<String>,
}

impl ClientTlsArgs {
    /// The client's config; `host` is the host connected to, the name
    /// checked with `--ca` unless `--server-name` is given.
    pub fn config(&self, host: &str) -> anyhow::Result<Config> {
        if !self.tls {
            return Ok(Config::default());
        }
        let tls = match (&self.pin, &self.ca) {
            (Some(pin), None) => ClientTls::pinned(*pin),
            (None, Some(ca)) => {
                let pem =
                    std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
                let name = self.server_name.as_deref().unwrap_or(host);
                ClientTls::with_ca(&pem, name)
                    .with_context(|| format!("cannot use {} as a CA", ca.display()))?
            }
            (None, None) => bail!(
                "--tls needs a way to trust the server: --pin FINGERPRINT (printed by the server) or --ca FILE"
            ),
            (Some(_), Some(_)) => bail!("give --pin or --ca, not both"),
        };
        Ok(Config::default().tls_client(tls))
    }
}
