//! TLS termination over real sockets, with certificates made here (rcgen): SNI picks the
//! certificate, ALPN picks HTTP/1.1 or HTTP/2, plain HTTP on the TLS port is refused in words,
//! certificates rotate under load without a failed request, and curl agrees.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use http::StatusCode;
use rustls::pki_types::{CertificateDer, ServerName};
use switchyard::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// A CA and the certificates it signs, written as PEM files into a folder.
pub struct Pki {
    pub ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Pki {
    pub fn new() -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "switchyard test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        Pki {
            ca: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    /// A leaf for `names`, written to `DIR/FILE.crt` and `DIR/FILE.key`.
    pub fn leaf(&self, dir: &Path, file: &str, names: &[&str]) -> CertificateDer<'static> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        // The subject's common name is the file's name (a client's names its tenant).
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, file);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        std::fs::write(dir.join(format!("{file}.crt")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
        cert.der().clone()
    }

    pub fn write_ca(&self, dir: &Path) -> std::path::PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, self.ca.pem()).unwrap();
        path
    }

    fn client(&self, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
        self.connector(rustls::DEFAULT_VERSIONS, alpn, None)
    }

    /// A client trusting this CA: the TLS versions it offers, its ALPN protocols, and the
    /// certificate it presents (`FILE.crt` and `FILE.key` in a folder, made by `leaf`), if any.
    fn connector(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
        alpn: &[&[u8]],
        cert: Option<(&Path, &str)>,
    ) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
        let mut config = match cert {
            None => builder.with_no_client_auth(),
            Some((dir, file)) => {
                let chain: Vec<CertificateDer<'static>> =
                    rustls::pki_types::pem::PemObject::pem_file_iter(
                        dir.join(format!("{file}.crt")),
                    )
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                let key = rustls::pki_types::pem::PemObject::from_pem_file(
                    dir.join(format!("{file}.key")),
                )
                .unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

pub const TLS_SECTION: &str = r#"[server.tls]
listen = "127.0.0.1:0"
reload_interval_ms = 50
[[server.tls.certificates]]
name = "api"
cert = "api.crt"
key = "api.key"
[[server.tls.certificates]]
name = "tenants"
cert = "tenants.crt"
key = "tenants.key"
"#;

async fn start(setup: &mut Setup, pki: &Pki) -> Router {
    pki.leaf(setup.dir.path(), "api", &["api.example.com"]);
    pki.leaf(setup.dir.path(), "tenants", &["*.tenants.example.com"]);
    setup.extra = TLS_SECTION.into();
    setup.start().await
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn handshake(
    addr: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
    name: &str,
) -> std::io::Result<Tls> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_owned()).unwrap();
    connector.connect(name, tcp).await
}

fn served_cert(tls: &Tls) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// One HTTP/1.1 request over an open TLS stream; the whole answer (the server closes).
async fn http1_get(tls: &mut Tls, tenant: &str) -> String {
    tls.write_all(
        format!("GET /x HTTP/1.1\r\nHost: api.example.com\r\nx-tenant-id: {tenant}\r\nconnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_and_alpn_the_protocol() {
    let pki = Pki::new();
    let mut setup = Setup::new().await;
    setup.set("acme", pin("new"));
    let router = start(&mut setup, &pki).await;
    let addr = router.tls_addr().unwrap();
    let dir = setup.dir.path();
    let api: CertificateDer<'static> =
        rustls::pki_types::pem::PemObject::from_pem_file(dir.join("api.crt")).unwrap();
    let h1 = pki.client(&[b"http/1.1"]);

    // SNI: each name gets its certificate; a wildcard covers the tenants' names.
    let mut tls = handshake(addr, &h1, "api.example.com").await.unwrap();
    assert_eq!(served_cert(&tls), api);
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let answer = http1_get(&mut tls, "acme").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("x-upstream: new"), "{answer}");
    let forwarded = setup.new.seen.last_headers();
    assert_eq!(forwarded["x-forwarded-proto"], "https");

    let tls = handshake(addr, &h1, "acme.tenants.example.com")
        .await
        .unwrap();
    assert_ne!(served_cert(&tls), api, "the wildcard certificate");

    // A name no certificate is for: the handshake is refused, and counted.
    let refused = handshake(addr, &h1, "other.example.org").await;
    assert!(refused.is_err(), "no certificate for other.example.org");
    assert_eq!(
        metric(
            &router,
            "switchyard_tls_handshake_failures_total{reason=\"unknown_name\"}"
        )
        .await,
        Some(1.0)
    );

    // ALPN h2: HTTP/2 over TLS, served by the same proxy.
    let h2 = pki.client(&[b"h2", b"http/1.1"]);
    let tls = handshake(addr, &h2, "api.example.com").await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let resp = send
        .send_request(
            http::Request::get("https://api.example.com/x")
                .header("x-tenant-id", "acme")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.headers()["x-upstream"], "new");
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_garbage_and_stalls_on_the_tls_port_are_refused_and_counted() {
    let pki = Pki::new();
    let mut setup = Setup::new().await;
    setup.extra = TLS_SECTION.replace(
        "reload_interval_ms = 50",
        "reload_interval_ms = 50\nhandshake_timeout_ms = 300",
    );
    pki.leaf(setup.dir.path(), "api", &["api.example.com"]);
    pki.leaf(setup.dir.path(), "tenants", &["*.tenants.example.com"]);
    let router = setup.start().await;
    let addr = router.tls_addr().unwrap();

    let answer = raw(addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("this port speaks TLS"), "{answer}");

    // A client hello that is garbage after its first byte.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5])
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(EVENT_TIMEOUT, s.read_to_end(&mut rest))
        .await
        .expect("closed");
    // A client that connects and says nothing is closed after the handshake timeout.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(EVENT_TIMEOUT, idle.read(&mut buf))
        .await
        .expect("the router closes a silent client");
    assert!(matches!(read, Ok(0) | Err(_)));

    for (reason, want) in [("not_tls", 1.0), ("failed", 1.0), ("timeout", 1.0)] {
        let name = format!("switchyard_tls_handshake_failures_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&router, &name).await, Some(want), "{reason}");
    }
    // Plaintext traffic is untouched.
    let (status, _, _) = get(&client(), router.addr(), "/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_under_load_without_a_failed_request_and_a_bad_file_keeps_the_old() {
    let pki = Pki::new();
    let mut setup = Setup::new().await;
    let router = start(&mut setup, &pki).await;
    let addr = router.tls_addr().unwrap();
    let dir = setup.dir.path().to_owned();
    let connector = pki.client(&[b"http/1.1"]);
    let first = served_cert(
        &handshake(addr, &connector, "api.example.com")
            .await
            .unwrap(),
    );

    // Four clients, each a new connection (a full handshake) per request.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, done, connector) = (stop.clone(), done.clone(), connector.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    match handshake(addr, &connector, "api.example.com").await {
                        Ok(mut tls) => {
                            let answer = http1_get(&mut tls, "acme").await;
                            if !answer.starts_with("HTTP/1.1 200") {
                                failures.push(answer);
                            }
                        }
                        Err(e) => failures.push(e.to_string()),
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
                failures
            })
        })
        .collect();
    let progress = |n: u64| {
        let done = done.clone();
        async move {
            let mark = done.load(Ordering::SeqCst);
            wait_for("load progress", || done.load(Ordering::SeqCst) >= mark + n).await;
        }
    };
    progress(20).await;

    // A new certificate for the same name, written as a deploy tool would (key, then cert,
    // each replaced atomically).
    let staging = tempfile::tempdir().unwrap();
    let second = pki.leaf(staging.path(), "api", &["api.example.com"]);
    for file in ["api.key", "api.crt"] {
        std::fs::copy(staging.path().join(file), dir.join(format!("{file}.new"))).unwrap();
        std::fs::rename(dir.join(format!("{file}.new")), dir.join(file)).unwrap();
    }
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    // A fresh client each time: one that resumes a session is not sent a certificate.
    let fresh = || pki.client(&[b"http/1.1"]);
    while served_cert(&handshake(addr, &fresh(), "api.example.com").await.unwrap()) != second {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_ne!(first, second);
    progress(20).await;
    // rcgen's certificates are valid until 4096: the expiry is decades away, for both names.
    for name in ["api", "tenants"] {
        let left = metric(
            &router,
            &format!("switchyard_tls_certificate_expiry_seconds{{certificate=\"{name}\"}}"),
        )
        .await
        .unwrap();
        assert!(left > 10.0 * 365.0 * 86_400.0, "{name}: {left}");
    }

    // A bad file: the certificate in use stays, the failure is counted.
    std::fs::write(
        dir.join("api.crt"),
        "-----BEGIN CERTIFICATE-----\nnot base64\n",
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    while metric(
        &router,
        "switchyard_tls_certificate_reloads_total{result=\"error\"}",
    )
    .await
        != Some(1.0)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bad file was never noticed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    progress(20).await;
    assert_eq!(
        served_cert(&handshake(addr, &fresh(), "api.example.com").await.unwrap()),
        second
    );

    stop.store(true, Ordering::SeqCst);
    let mut failures = Vec::new();
    for task in load {
        failures.extend(task.await.unwrap());
    }
    let total = done.load(Ordering::SeqCst);
    assert!(
        failures.is_empty(),
        "{} of {total} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_reaches_tenants_over_tls_with_http1_and_http2() {
    let pki = Pki::new();
    let mut setup = Setup::new().await;
    setup.set("acme", pin("new"));
    let router = start(&mut setup, &pki).await;
    let port = router.tls_addr().unwrap().port();
    let ca = pki.write_ca(setup.dir.path());
    for http in ["--http1.1", "--http2"] {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", http, "--cacert"])
            .arg(&ca)
            .args([
                "--resolve",
                &format!("api.example.com:{port}:127.0.0.1"),
                "-H",
                "x-tenant-id: acme",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}",
                &format!("https://api.example.com:{port}/x"),
            ])
            .output()
            .expect("curl runs (./scripts/test.sh installs it)");
        let text = String::from_utf8_lossy(&out.stdout);
        let want = if http == "--http2" {
            "200 2"
        } else {
            "200 1.1"
        };
        assert_eq!(
            text,
            want,
            "{http}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    router.shutdown().await;
}

/// An upstream that speaks TLS with a certificate for `name` signed by `pki`, HTTP/1.1 or
/// HTTP/2 by ALPN; with `client_ca`, it requires a client certificate signed by it. Answers
/// with `x-upstream: secure` and `x-version`; counts requests and health checks.
pub struct TlsUpstream {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicU64>,
    checks: Arc<AtomicU64>,
}

impl TlsUpstream {
    pub async fn start(pki: &Pki, name: &str, client_ca: Option<&Pki>) -> TlsUpstream {
        let dir = tempfile::tempdir().unwrap();
        pki.leaf(dir.path(), "up", &[name]);
        let chain: Vec<CertificateDer<'static>> =
            rustls::pki_types::pem::PemObject::pem_file_iter(dir.path().join("up.crt"))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
        let key: rustls::pki_types::PrivateKeyDer<'static> =
            rustls::pki_types::pem::PemObject::from_pem_file(dir.path().join("up.key")).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(ca.ca.der().clone()).unwrap();
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain, key).unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicU64::new(0));
        let checks = Arc::new(AtomicU64::new(0));
        let (r, c) = (requests.clone(), checks.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, r, c) = (acceptor.clone(), r.clone(), c.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let health = req
                                .headers()
                                .get("user-agent")
                                .is_some_and(|v| v == "switchyard-health");
                            if health { &c } else { &r }.fetch_add(1, Ordering::SeqCst);
                            let version = format!("{:?}", req.version());
                            async move {
                                Ok::<_, std::convert::Infallible>(
                                    http::Response::builder()
                                        .header("x-upstream", "secure")
                                        .header("x-version", version)
                                        .body(http_body_util::Full::new(bytes::Bytes::from_static(
                                            b"ok",
                                        )))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
        std::mem::forget(dir);
        TlsUpstream {
            addr,
            requests,
            checks,
        }
    }
}

/// `setup`'s config with `legacy` on the TLS upstream at `addr`, plus `extra` target keys and
/// fast health checks (which take a target whose handshakes fail out at once, so the cases
/// that show a failed handshake's 502 leave them off).
async fn start_with_secure_legacy(
    setup: &mut Setup,
    addr: SocketAddr,
    extra: &str,
) -> Result<Router, String> {
    start_secure(setup, addr, extra, true).await
}

async fn start_secure(
    setup: &mut Setup,
    addr: SocketAddr,
    extra: &str,
    health: bool,
) -> Result<Router, String> {
    let health = if health {
        "\n[targets.legacy.health]\npath = \"/healthz\"\ninterval_ms = 50\ntimeout_ms = 1000"
    } else {
        ""
    };
    let text = setup.config_text().replace(
        &format!("endpoints = [\"{}\"]", setup.legacy.url()),
        &format!("endpoints = [\"https://{addr}\"]\n{extra}{health}"),
    );
    let config =
        switchyard::Config::parse(&text, setup.dir.path(), "test").map_err(|e| e.to_string())?;
    Router::start(config).await.map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_are_verified_by_name_and_ca_over_http1_and_h2_health_checks_included() {
    let pki = Pki::new();
    let mut setup = Setup::new().await;
    pki.write_ca(setup.dir.path());
    setup.set("acme", pin("legacy"));
    let up = TlsUpstream::start(&pki, "legacy.example.com", None).await;

    // Verified as the name the balancer answers for, behind an IP endpoint.
    let keys = "tls_ca_file = \"ca.pem\"\ntls_server_name = \"legacy.example.com\"";
    let router = start_with_secure_legacy(&mut setup, up.addr, keys)
        .await
        .unwrap();
    let c = client();
    for _ in 0..5 {
        let (status, h, body) = get(&c, router.addr(), "/x", &[("x-tenant-id", "acme")]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(h["x-upstream"], "secure");
        assert_eq!(h["x-version"], "HTTP/1.1");
    }
    assert_eq!(up.requests.load(Ordering::SeqCst), 5);
    let checks = up.checks.clone();
    wait_for("health checks over TLS", || {
        checks.load(Ordering::SeqCst) >= 2
    })
    .await;
    router.shutdown().await;

    // HTTP/2 over TLS, by ALPN.
    let h2 = format!("{keys}\nprotocol = \"h2\"");
    let router = start_with_secure_legacy(&mut setup, up.addr, &h2)
        .await
        .unwrap();
    let (status, h, body) = get(&c, router.addr(), "/x", &[("x-tenant-id", "acme")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(h["x-version"], "HTTP/2.0");
    router.shutdown().await;

    // The wrong name: a 502 that says why, counted as a TLS error; nothing reaches the app.
    let before = up.requests.load(Ordering::SeqCst);
    let wrong = "tls_ca_file = \"ca.pem\"\ntls_server_name = \"other.example.com\"";
    let router = start_secure(&mut setup, up.addr, wrong, false)
        .await
        .unwrap();
    let (status, _, body) = get(&c, router.addr(), "/x", &[("x-tenant-id", "acme")]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(
        body.contains("TLS to target \"legacy\" failed (verified as \"other.example.com\"): its certificate is not valid for the name"),
        "{body}"
    );
    assert!(
        metric(
            &router,
            "switchyard_upstream_errors_total{kind=\"tls\",target=\"legacy\"}"
        )
        .await
        .unwrap()
            >= 1.0
    );
    router.shutdown().await;

    // An authority the router does not trust (the platform's roots only).
    let router = start_secure(
        &mut setup,
        up.addr,
        "tls_server_name = \"legacy.example.com\"",
        false,
    )
    .await
    .unwrap();
    let (status, _, body) = get(&c, router.addr(), "/x", &[("x-tenant-id", "acme")]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(
        body.contains("an authority the router does not trust"),
        "{body}"
    );
    router.shutdown().await;
    assert_eq!(up.requests.load(Ordering::SeqCst), before);

    // A bad CA file is a config error naming it.
    std::fs::write(setup.dir.path().join("bad.pem"), "not a certificate").unwrap();
    let err = start_with_secure_legacy(&mut setup, up.addr, "tls_ca_file = \"bad.pem\"")
        .await
        .unwrap_err();
    assert!(
        err.contains("tls_ca_file") && err.contains("bad.pem"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_presents_a_client_certificate_to_an_upstream_that_requires_one() {
    let pki = Pki::new();
    let clients = Pki::new();
    let mut setup = Setup::new().await;
    pki.write_ca(setup.dir.path());
    clients.leaf(setup.dir.path(), "router-client", &["router.example.com"]);
    setup.set("acme", pin("legacy"));
    let up = TlsUpstream::start(&pki, "legacy.example.com", Some(&clients)).await;
    let keys = "tls_ca_file = \"ca.pem\"\ntls_server_name = \"legacy.example.com\"";
    let c = client();

    let without = start_secure(&mut setup, up.addr, keys, false)
        .await
        .unwrap();
    let (status, _, body) = get(&c, without.addr(), "/x", &[("x-tenant-id", "acme")]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    without.shutdown().await;

    let mtls = format!(
        "{keys}\ntls_client_cert = \"router-client.crt\"\ntls_client_key = \"router-client.key\""
    );
    let router = start_with_secure_legacy(&mut setup, up.addr, &mtls)
        .await
        .unwrap();
    let (status, h, body) = get(&c, router.addr(), "/x", &[("x-tenant-id", "acme")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(h["x-upstream"], "secure");
    router.shutdown().await;
}

/// A request over a new TLS connection: the answer, or why there was none.
async fn request_over(addr: SocketAddr, connector: &tokio_rustls::TlsConnector) -> String {
    match handshake(addr, connector, "api.example.com").await {
        Ok(mut tls) => http1_get(&mut tls, "acme").await,
        Err(e) => format!("handshake failed: {e}"),
    }
}

/// The `[server.tls]` section of a listener whose server certificates `pki` signs (`api`,
/// `tenants`) and that verifies client certificates against `clients` (written as
/// `clients.pem`) in `mode`; `alice` is a client certificate `clients` signed.
fn client_ca_listener(dir: &Path, pki: &Pki, clients: &Pki, mode: &str) -> String {
    std::fs::write(dir.join("clients.pem"), clients.ca.pem()).unwrap();
    clients.leaf(dir, "alice", &["alice.clients.example.com"]);
    pki.leaf(dir, "api", &["api.example.com"]);
    pki.leaf(dir, "tenants", &["*.tenants.example.com"]);
    TLS_SECTION.replace(
        "listen = \"127.0.0.1:0\"\n",
        &format!(
            "listen = \"127.0.0.1:0\"\nclient_ca = \"clients.pem\"\nclient_auth = \"{mode}\"\n"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_with_a_client_ca_requires_or_asks_for_client_certificates() {
    let pki = Pki::new();
    let clients = Pki::new();
    for (mode, anonymous_ok) in [("required", false), ("optional", true)] {
        let mut setup = Setup::new().await;
        setup.extra = client_ca_listener(setup.dir.path(), &pki, &clients, mode);
        // A certificate from another authority is refused in both modes.
        Pki::new().leaf(setup.dir.path(), "mallory", &["mallory.example.com"]);
        let router = setup.start().await;
        let addr = router.tls_addr().unwrap();

        let with_cert = request_over(
            addr,
            &pki.connector(
                rustls::DEFAULT_VERSIONS,
                &[b"http/1.1"],
                Some((setup.dir.path(), "alice")),
            ),
        )
        .await;
        assert!(with_cert.starts_with("HTTP/1.1 200"), "{mode}: {with_cert}");
        let forged = request_over(
            addr,
            &pki.connector(
                rustls::DEFAULT_VERSIONS,
                &[b"http/1.1"],
                Some((setup.dir.path(), "mallory")),
            ),
        )
        .await;
        assert!(!forged.starts_with("HTTP/1.1"), "{mode}: {forged}");
        let anonymous = request_over(addr, &pki.client(&[b"http/1.1"])).await;
        assert_eq!(
            anonymous.starts_with("HTTP/1.1 200"),
            anonymous_ok,
            "{mode}: {anonymous}"
        );
        router.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_client_certificate_names_the_tenant_before_any_header() {
    let pki = Pki::new();
    let clients = Pki::new();
    let mut setup = Setup::new().await;
    setup.set("alice", pin("new"));
    let plain = setup.config_text();
    setup.extra = client_ca_listener(setup.dir.path(), &pki, &clients, "optional");
    let text = setup.config_text().replace(
        "from = [\"header:x-tenant-id\",",
        "from = [\"client_cert:cn\", \"header:x-tenant-id\",",
    );
    let config = switchyard::Config::parse(&text, setup.dir.path(), "test").unwrap();
    let router = switchyard::Router::start(config).await.unwrap();
    let addr = router.tls_addr().unwrap();
    // alice's certificate says alice, whatever the header says: her flag sends her to new.
    let alice = pki.connector(
        rustls::DEFAULT_VERSIONS,
        &[b"http/1.1"],
        Some((setup.dir.path(), "alice")),
    );
    let answer = request_over(addr, &alice).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("new"), "{answer}");
    // No certificate: the header names the tenant (acme, on the default legacy).
    let answer = request_over(addr, &pki.client(&[b"http/1.1"])).await;
    assert!(answer.ends_with("legacy"), "{answer}");
    router.shutdown().await;

    // Without a listener that verifies client certificates, the extractor is refused.
    let plain = plain.replace(
        "from = [\"header:x-tenant-id\",",
        "from = [\"client_cert:cn\",",
    );
    let err = switchyard::Config::parse(&plain, setup.dir.path(), "test")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tenant.from") && err.contains("client_ca"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_client_resumes_its_session_over_tls_1_3_and_1_2() {
    let pki = Pki::new();
    let mut setup = Setup::new().await;
    let router = start(&mut setup, &pki).await;
    let addr = router.tls_addr().unwrap();
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let connector = pki.connector(&[version], &[b"http/1.1"], None);
        // The first connection is a full handshake; a request on it lets the client take the
        // ticket the server sends after the handshake (TLS 1.3).
        let mut first = handshake(addr, &connector, "api.example.com")
            .await
            .unwrap();
        assert_eq!(
            first.get_ref().1.handshake_kind(),
            Some(rustls::HandshakeKind::Full)
        );
        assert!(
            http1_get(&mut first, "acme")
                .await
                .starts_with("HTTP/1.1 200")
        );
        let mut second = handshake(addr, &connector, "api.example.com")
            .await
            .unwrap();
        assert_eq!(
            second.get_ref().1.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed),
            "{version:?}"
        );
        assert!(
            http1_get(&mut second, "acme")
                .await
                .starts_with("HTTP/1.1 200")
        );
    }
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_moves_the_tls_listener_and_refuses_other_tls_changes() {
    let pki = Pki::new();
    let mut setup = Setup::new().await;
    let router = start(&mut setup, &pki).await;
    let old = router.tls_addr().unwrap();
    let to = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let reload = |extra: String| {
        let path = setup.dir.path().join("router.toml");
        let text = setup.config_text().replace(TLS_SECTION, &extra);
        std::fs::write(&path, text).unwrap();
        router.reload(switchyard::Config::load(&path).unwrap())
    };
    let moved = TLS_SECTION.replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{to}\""));
    assert_eq!(
        reload(moved.clone()),
        Ok(switchyard::server::reconfigure::Reloaded::Applied(vec![
            "server.tls.listen".into()
        ]))
    );
    assert_eq!(router.tls_addr(), Some(to));
    let h1 = pki.client(&[b"http/1.1"]);
    let mut tls = handshake(to, &h1, "api.example.com").await.unwrap();
    assert!(
        http1_get(&mut tls, "acme")
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert!(TcpStream::connect(old).await.is_err());

    // Its settings and files need a restart.
    let problems = reload(moved.replace("reload_interval_ms = 50", "reload_interval_ms = 60"))
        .expect_err("a restart is needed");
    assert_eq!(problems[0].key, "server.tls");
    assert!(router.shutdown().await);
}
