//! TLS termination with rustls. The crypto provider is aws-lc-rs: the AWS SDK already builds
//! it, so terminating TLS adds no second crypto library to the build.
//!
//! A TLS listener serves several certificates chosen by SNI: a client naming a host gets the
//! certificate valid for it (wildcards included); a client naming none gets the first; a
//! client naming a host no certificate is valid for is refused (the handshake fails). ALPN
//! offers `h2` and `http/1.1`; TLS 1.2 and 1.3 only; session tickets and a session cache for
//! resumption. The files are checked every `reload_interval_ms`: a changed certificate is
//! loaded, checked (the chain parses, the key matches it) and swapped in for new handshakes,
//! while open connections keep theirs; a bad file keeps the old certificate, is logged and
//! counted.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::sync::watch;

/// One certificate of a TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateConfig {
    /// Names it in logs and metrics.
    pub name: String,
    /// PEM: the certificate, then its intermediates.
    pub cert: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// `[server.tls]`: a TLS listener beside the plaintext one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListener {
    pub listen: std::net::SocketAddr,
    /// A client must finish its handshake within this.
    pub handshake_timeout: Duration,
    /// How often the certificate files are checked for a change.
    pub reload_interval: Duration,
    /// Chosen by SNI; the first also serves clients that send none.
    pub certificates: Vec<CertificateConfig>,
    /// Client certificates verified against this CA bundle (mutual TLS); `None`: none asked.
    pub client_auth: Option<(PathBuf, ClientAuth)>,
}

/// Whether a TLS listener's clients must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// A client without a valid certificate is refused in the handshake.
    Required,
    /// A certificate is asked for and verified when sent; a client may send none.
    Optional,
}

/// Why a TLS connection did not get to HTTP, the `reason` label of
/// `switchyard_tls_handshake_failures_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The client did not finish the handshake in time.
    Timeout,
    /// The client spoke plain HTTP (or anything but TLS) to the TLS port.
    NotTls,
    /// The client named a host no certificate is valid for.
    UnknownName,
    /// Anything else: no protocol or cipher in common, a malformed hello, a reset.
    Failed,
}

impl HandshakeFailure {
    pub const ALL: [HandshakeFailure; 4] = [
        HandshakeFailure::Timeout,
        HandshakeFailure::NotTls,
        HandshakeFailure::UnknownName,
        HandshakeFailure::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::NotTls => "not_tls",
            HandshakeFailure::UnknownName => "unknown_name",
            HandshakeFailure::Failed => "failed",
        }
    }
}

/// What the files of one certificate looked like when they were loaded.
type Stamp = [Option<(SystemTime, u64)>; 2];

fn stamp(c: &CertificateConfig) -> Stamp {
    let of = |p: &PathBuf| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    };
    [of(&c.cert), of(&c.key)]
}

/// The certificates a listener serves, swapped whole when a file changes.
#[derive(Debug)]
pub struct Certificates {
    configs: Vec<CertificateConfig>,
    current: ArcSwap<Vec<Arc<CertifiedKey>>>,
    /// When each served certificate expires, seconds since the epoch, like `current`.
    not_after: Mutex<Vec<i64>>,
    stamps: Mutex<Vec<Stamp>>,
    /// Reloads by result: ok, error.
    reloads: [AtomicU64; 2],
    failures: [AtomicU64; 4],
}

impl Certificates {
    /// Loads every certificate; any that cannot be served is an error naming it.
    pub fn load(configs: &[CertificateConfig]) -> Result<Arc<Certificates>, String> {
        let mut keys = Vec::with_capacity(configs.len());
        let mut stamps = Vec::with_capacity(configs.len());
        let mut not_after = Vec::with_capacity(configs.len());
        for c in configs {
            stamps.push(stamp(c));
            let key = load_certificate(c)?;
            not_after.push(expiry(&key));
            keys.push(Arc::new(key));
        }
        Ok(Arc::new(Certificates {
            configs: configs.to_vec(),
            not_after: Mutex::new(not_after),
            current: ArcSwap::from_pointee(keys),
            stamps: Mutex::new(stamps),
            reloads: Default::default(),
            failures: Default::default(),
        }))
    }

    /// Reloads the certificates whose files changed since they were loaded. A certificate
    /// that fails to load keeps the one in use; it is tried again when its files change again.
    pub fn reload_changed(&self) {
        let mut stamps = self.stamps.lock().expect("stamps lock");
        let mut next: Option<Vec<Arc<CertifiedKey>>> = None;
        for (i, c) in self.configs.iter().enumerate() {
            let now = stamp(c);
            if now == stamps[i] {
                continue;
            }
            stamps[i] = now;
            match load_certificate(c) {
                Ok(key) => {
                    self.not_after.lock().expect("expiry lock")[i] = expiry(&key);
                    next.get_or_insert_with(|| self.current.load().to_vec())[i] = Arc::new(key);
                    self.reloads[0].fetch_add(1, Ordering::Relaxed);
                    tracing::info!(certificate = %c.name, "TLS certificate reloaded; new handshakes use it");
                }
                Err(e) => {
                    self.reloads[1].fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(certificate = %c.name, error = %e, "TLS certificate not reloaded; the one in use stays");
                }
            }
        }
        if let Some(next) = next {
            self.current.store(Arc::new(next));
        }
    }

    /// Each served certificate's name and the seconds until it expires (negative once it has).
    pub fn expiries(&self) -> Vec<(&str, i64)> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let not_after = self.not_after.lock().expect("expiry lock");
        (self.configs.iter().zip(not_after.iter()))
            .map(|(c, at)| (c.name.as_str(), at - now))
            .collect()
    }

    /// Certificate reloads that succeeded (`true`) or failed (`false`).
    pub fn reloads(&self, ok: bool) -> u64 {
        self.reloads[usize::from(!ok)].load(Ordering::Relaxed)
    }

    pub fn count_failure(&self, why: HandshakeFailure) {
        self.failures[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn failures(&self, why: HandshakeFailure) -> u64 {
        self.failures[why as usize].load(Ordering::Relaxed)
    }

    /// The certificate for `name`: the first one valid for it.
    fn for_name(&self, name: &ServerName<'_>) -> Option<Arc<CertifiedKey>> {
        self.current
            .load()
            .iter()
            .find(|k| {
                k.end_entity_cert()
                    .ok()
                    .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
                    .is_some_and(|ee| ee.verify_is_valid_for_subject_name(name).is_ok())
            })
            .cloned()
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(sni) = hello.server_name() else {
            return self.current.load().first().cloned();
        };
        let found = ServerName::try_from(sni)
            .ok()
            .and_then(|name| self.for_name(&name));
        if found.is_none() {
            self.count_failure(HandshakeFailure::UnknownName);
            tracing::debug!(
                server_name = sni,
                "TLS client named a host no certificate is for"
            );
        }
        found
    }
}

/// Reads and checks one certificate: the chain parses, its first certificate is one rustls
/// can serve, and the key is the one it certifies.
fn load_certificate(c: &CertificateConfig) -> Result<CertifiedKey, String> {
    let (chain, key) = read_pem(c)?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        format!(
            "certificate {:?}: the key {} does not fit the certificate {}: {e}",
            c.name,
            c.key.display(),
            c.cert.display()
        )
    })
}

/// Reads one certificate's PEM files: a chain whose first certificate rustls can serve, and
/// a private key (not yet checked against it).
fn read_pem(
    c: &CertificateConfig,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&c.cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| format!("certificate {:?}: {}: {e}", c.name, c.cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "certificate {:?}: {} holds no PEM certificate",
            c.name,
            c.cert.display()
        ));
    }
    webpki::EndEntityCert::try_from(&chain[0]).map_err(|e| {
        format!(
            "certificate {:?}: {} is not a certificate rustls can serve: {e}",
            c.name,
            c.cert.display()
        )
    })?;
    let key = PrivateKeyDer::from_pem_file(&c.key)
        .map_err(|e| format!("certificate {:?}: key {}: {e}", c.name, c.key.display()))?;
    Ok((chain, key))
}

/// When the served (first) certificate expires, seconds since the epoch; 0 when it cannot be
/// read (it was parsed by webpki already, so that does not happen).
fn expiry(key: &CertifiedKey) -> i64 {
    key.end_entity_cert()
        .ok()
        .and_then(|der| x509_parser::parse_x509_certificate(der).ok())
        .map_or(0, |(_, cert)| cert.validity().not_after.timestamp())
}

/// The common name of the client certificate a connection was verified by (only a listener with
/// `client_ca` verifies one; rustls hands over no certificate it did not verify).
pub fn client_common_name(connection: &rustls::ServerConnection) -> Option<Box<str>> {
    let leaf = connection.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
    Some(cn.into())
}

fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

/// The rustls server configuration of a listener serving `certificates`, verifying client
/// certificates against `client_auth`'s CA bundle when there is one.
pub fn server_config(
    certificates: Arc<Certificates>,
    client_auth: Option<&(PathBuf, ClientAuth)>,
) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = match client_auth {
        None => builder.with_no_client_auth(),
        Some((ca, how)) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca)?),
                provider,
            );
            let verifier = match how {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("client_ca {}: {e}", ca.display()))?,
            )
        }
    };
    let mut config = builder.with_cert_resolver(certificates);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
        .map_err(|e| format!("TLS session tickets: {e}"))?;
    config.session_storage = ServerSessionMemoryCache::new(16 * 1024);
    Ok(Arc::new(config))
}

/// Checks the certificate files every `interval` until `stop`.
pub async fn watch_files(
    certificates: Arc<Certificates>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = crate::shutdown::until_set(&mut stop) => return,
        }
        let c = certificates.clone();
        let _ = tokio::task::spawn_blocking(move || c.reload_changed()).await;
    }
}

/// How the router reaches a target's `https://` endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// PEM roots to verify the upstream against; `None`: the platform's roots.
    pub ca_file: Option<PathBuf>,
    /// The name to send (SNI) and to verify the certificate for, when it is not the endpoint's
    /// host (an IP endpoint behind which a load balancer answers for a DNS name).
    pub server_name: Option<String>,
    /// The client certificate and key to present (mutual TLS), PEM.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl UpstreamTls {
    /// The name the certificate is verified for, when it is fixed.
    pub fn fixed_name(&self) -> Option<ServerName<'static>> {
        self.server_name
            .as_ref()
            .and_then(|n| ServerName::try_from(n.clone()).ok())
    }
}

/// The rustls client configuration for a target: verification always on, against the
/// configured roots or the platform's, and the client certificate, if any.
pub fn client_config(tls: &UpstreamTls) -> Result<rustls::ClientConfig, String> {
    let roots = match &tls.ca_file {
        Some(path) => roots(path).map_err(|e| format!("tls_ca_file {e}"))?,
        None => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if roots.is_empty() {
                return Err("no platform CA certificates found; set tls_ca_file".into());
            }
            roots
        }
    };
    if let Some(name) = &tls.server_name
        && ServerName::try_from(name.clone()).is_err()
    {
        return Err(format!(
            "tls_server_name {name:?} is not a DNS name or IP address"
        ));
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots);
    let config = match &tls.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let (chain, key_der) = read_pem(&CertificateConfig {
                name: "client".into(),
                cert: cert.clone(),
                key: key.clone(),
            })?;
            // rustls checks here that the key is the one the certificate certifies.
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                format!(
                    "tls_client_key {} does not fit tls_client_cert {}: {e}",
                    key.display(),
                    cert.display()
                )
            })?
        }
    };
    // ALPN (`h2` or `http/1.1`) is set by the connector (`connector`), with the protocol
    // hyper then speaks.
    Ok(config)
}

/// The CA certificates of a PEM bundle; an error names the file and what is wrong.
pub fn roots(path: &std::path::Path) -> Result<rustls::RootCertStore, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|c| c.collect::<Result<_, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("{} holds no usable CA certificate", path.display()));
    }
    Ok(roots)
}

/// Why a TLS connection to an upstream failed, in words an operator can act on, when the
/// error chain holds a TLS error.
pub fn upstream_failure(error: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    use rustls::CertificateError as C;
    let mut next = Some(error);
    while let Some(e) = next {
        // An `io::Error` wrapping another error names it through `get_ref`, not `source` (the
        // connector wraps tokio-rustls's `io::Error`, which wraps rustls's error).
        next = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(match tls {
                rustls::Error::InvalidCertificate(
                    C::NotValidForName | C::NotValidForNameContext { .. },
                ) => "its certificate is not valid for the name",
                rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
                    "its certificate has expired"
                }
                rustls::Error::InvalidCertificate(
                    C::NotValidYet | C::NotValidYetContext { .. },
                ) => "its certificate is not valid yet",
                rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
                    "its certificate is signed by an authority the router does not trust"
                }
                rustls::Error::InvalidCertificate(_) => "its certificate is invalid",
                rustls::Error::AlertReceived(_) => "it refused the handshake (an alert)",
                _ => "the TLS handshake failed",
            });
        }
    }
    None
}

/// hyper's connector for a target: plain TCP for `http://` endpoints (`tls` is `None`); for
/// `https://` ones, TLS with the target's verification (always on), name and ALPN.
pub type Connector =
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// The connector for a target's endpoints.
pub fn connector(
    tls: Option<&UpstreamTls>,
    h2: bool,
    connect_timeout: Duration,
) -> Result<Connector, String> {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let Some(tls) = tls else {
        // No TLS is ever spoken: an empty trust store, and https refused.
        http.enforce_http(true);
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        return Ok(builder
            .with_tls_config(config)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http));
    };
    http.enforce_http(false);
    let builder = builder.with_tls_config(client_config(tls)?).https_only();
    let builder = match tls.fixed_name() {
        Some(name) => {
            builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        }
        None => builder,
    };
    Ok(if h2 {
        builder.enable_http2().wrap_connector(http)
    } else {
        builder.enable_http1().wrap_connector(http)
    })
}
