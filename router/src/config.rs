//! The router's TOML config, read once at start. Parsing refuses unknown keys; validation
//! checks every cross-reference (targets, routes, extractors, addresses) and reports all the
//! problems at once, each naming its key, so `switchyard check` tells an operator everything
//! that is wrong in one run.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flag_store::{StoreUrl, TargetId, Targets};
use http::uri::{Authority, Scheme};
use http::{HeaderName, Method};
use serde::Deserialize;

use crate::tenant::{Extractor, StickyKey};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {}", problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n  "))]
    Invalid {
        path: String,
        problems: Vec<Problem>,
    },
}

/// One thing wrong with the config, named by its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub reason: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

// ---- the file as written ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    flags: RawFlags,
    #[serde(default)]
    tenant: RawTenant,
    #[serde(default)]
    targets: BTreeMap<String, RawTarget>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    shadow: RawShadow,
    access_log: Option<RawAccessLog>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccessLog {
    path: String,
    sample_percent: Option<u32>,
    buffer_lines: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawShadow {
    max_body_bytes: Option<u64>,
    max_compare_bytes: Option<u64>,
    queue: Option<u64>,
    max_queued_bytes: Option<u64>,
    concurrency: Option<u64>,
    timeout_ms: Option<u64>,
    compare_headers: Option<Vec<String>>,
    ignore_fields: Option<Vec<String>>,
    noise_sample_percent: Option<u32>,
    recent_mismatches: Option<u64>,
    max_tenants: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    admin_listen: Option<String>,
    workers: Option<usize>,
    drain_timeout_ms: Option<u64>,
    shutdown_delay_ms: Option<u64>,
    header_read_timeout_ms: Option<u64>,
    max_header_bytes: Option<usize>,
    max_connections: Option<usize>,
    listen_backlog: Option<u32>,
    http2_max_concurrent_streams: Option<u32>,
    trust_forwarded_headers: Option<bool>,
    admin_token_file: Option<String>,
    tls: Option<RawTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    listen: String,
    client_ca: Option<String>,
    client_auth: Option<String>,
    handshake_timeout_ms: Option<u64>,
    reload_interval_ms: Option<u64>,
    #[serde(default)]
    certificates: Vec<RawCertificate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCertificate {
    name: String,
    cert: String,
    key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlags {
    source: String,
    default_target: String,
    poll_interval_ms: Option<u64>,
    cache_path: Option<String>,
    ready_max_age_ms: Option<u64>,
    reconcile_interval_ms: Option<u64>,
    reconcile_items_per_second: Option<u64>,
    close_moved_streams_after_ms: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    #[serde(default)]
    from: Vec<String>,
    #[serde(default)]
    sticky_key: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    endpoints: Vec<String>,
    protocol: Option<String>,
    tls_ca_file: Option<String>,
    tls_server_name: Option<String>,
    tls_client_cert: Option<String>,
    tls_client_key: Option<String>,
    connect_timeout_ms: Option<u64>,
    pool_idle_timeout_ms: Option<u64>,
    pool_max_idle_per_endpoint: Option<usize>,
    health: Option<RawHealth>,
    #[serde(default)]
    ejection: RawEjection,
    #[serde(default)]
    retry: RawRetry,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    path: Option<String>,
    interval_ms: Option<u64>,
    timeout_ms: Option<u64>,
    unhealthy_after: Option<u32>,
    healthy_after: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEjection {
    consecutive_failures: Option<u32>,
    base_ms: Option<u64>,
    max_ms: Option<u64>,
    max_ejected_percent: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    budget_percent: Option<u32>,
    min_per_second: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: String,
    path_prefix: String,
    target: Option<String>,
    require_tenant: Option<bool>,
    timeout_ms: Option<u64>,
    try_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    max_body_bytes: Option<u64>,
    upgrades: Option<Vec<String>>,
    shadow_methods: Option<Vec<String>>,
}

// ---- the validated config ----

#[derive(Debug, Clone)]
pub struct Config {
    /// The folder relative paths resolve against (the config file's folder).
    pub base_dir: PathBuf,
    pub server: Server,
    pub flags: Flags,
    pub tenant: TenantRules,
    pub targets: Targets,
    /// Indexed by [`TargetId`].
    pub target_configs: Vec<TargetConfig>,
    pub routes: Vec<Route>,
    pub shadow: ShadowConfig,
    /// Off unless `[access_log]` is given.
    pub access_log: Option<AccessLogConfig>,
}

/// The access log (`[access_log]`).
#[derive(Debug, Clone)]
pub struct AccessLogConfig {
    pub destination: LogDestination,
    /// Share of requests logged, 0 to 100.
    pub sample_percent: u32,
    /// Lines waiting for the writer; past it, lines are dropped and counted.
    pub buffer_lines: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogDestination {
    Stdout,
    File(PathBuf),
}

/// How shadow copies are made, queued and compared (`[shadow]`).
#[derive(Debug, Clone)]
pub struct ShadowConfig {
    /// Request bodies up to this are copied; larger ones are skipped and counted.
    pub max_body_bytes: u64,
    /// Bytes of each answer kept to compare as JSON and to show in the report (every byte is
    /// hashed whatever the size).
    pub max_compare_bytes: usize,
    /// Copies waiting per shadow target; when full, new ones are dropped and counted.
    pub queue: usize,
    /// Bytes the queued and running comparisons of one shadow target may hold (the bodies
    /// they keep); past it, new ones are dropped and counted like a full queue.
    pub max_queued_bytes: u64,
    /// Copies in flight per shadow target.
    pub concurrency: usize,
    /// Time allowed for a shadow's whole answer.
    pub timeout: Duration,
    /// Headers compared besides the status and the body (`content-type` always is).
    pub compare_headers: Vec<HeaderName>,
    /// JSON fields never compared: a name (anywhere) or a path (`/items/*/updated_at`).
    pub ignore_fields: Vec<String>,
    /// Share of compared safe requests sent to the primary again to learn noise.
    pub noise_sample_percent: u32,
    /// Mismatches kept per tenant for the report.
    pub recent_mismatches: usize,
    /// Tenants with a record kept.
    pub max_tenants: usize,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Runtime worker threads (1: a single-threaded runtime, no work stealing).
    pub workers: usize,
    pub drain_timeout: Duration,
    /// After SIGTERM, how long `/readyz` fails while the listeners still accept and serve, so
    /// a balancer stops sending before connections close.
    pub shutdown_delay: Duration,
    /// Time a client has to send a request's headers, including the wait for the next request
    /// on a kept-alive connection.
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_connections: usize,
    /// Connections the kernel queues for the traffic listener before they are accepted (a
    /// burst of connects waits here; the kernel caps it at `net.core.somaxconn`).
    pub listen_backlog: u32,
    pub http2_max_concurrent_streams: u32,
    /// Keep incoming `x-forwarded-proto` and `x-forwarded-host` (set only behind a trusted
    /// load balancer); otherwise they are overwritten.
    pub trust_forwarded_headers: bool,
    /// The bearer token admin writes must present; `None` disables admin writes.
    pub admin_token: Option<AdminToken>,
    /// A TLS listener beside the plaintext one.
    pub tls: Option<crate::tls::TlsListener>,
}

/// The admin write token, read from `[server] admin_token_file`. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// The shortest token accepted: anything shorter is guessable.
    pub const MIN_LEN: usize = 16;

    pub fn new(token: &str) -> Result<AdminToken, String> {
        let token = token.trim();
        if token.len() < Self::MIN_LEN {
            return Err(format!(
                "the token is {} characters long; use at least {} (e.g. `openssl rand -hex 32`)",
                token.len(),
                Self::MIN_LEN
            ));
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("the token must be one line with no spaces".into());
        }
        Ok(AdminToken(token.to_owned()))
    }

    /// Compares in time that depends only on the lengths, never on where the bytes differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        let mut diff = expected.len() ^ presented.len();
        for (i, e) in expected.iter().enumerate() {
            diff |= usize::from(e ^ presented.get(i).copied().unwrap_or(0));
        }
        diff == 0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

#[derive(Debug, Clone)]
pub struct Flags {
    pub store: StoreUrl,
    pub default_target: TargetId,
    pub poll_interval: Duration,
    /// The local copy of the last good snapshot (for remote stores).
    pub cache_path: Option<PathBuf>,
    /// `/readyz` fails when the snapshot is older than this (`None`: a stale snapshot is
    /// still ready, which is what keeps a fleet serving through a store outage).
    pub ready_max_age: Option<Duration>,
    /// How often a DynamoDB store is read whole again, to converge on edits that bypassed
    /// Switchyard.
    pub reconcile_interval: Duration,
    /// The most items a second such a reread reads.
    pub reconcile_pace: u32,
    /// How long a tenant's open tunnels and streaming responses on a side it moved away from
    /// stay open (at once when it is sealed away).
    pub close_moved_streams_after: Duration,
}

#[derive(Debug, Clone)]
pub struct TenantRules {
    pub from: Vec<Extractor>,
    pub sticky_key: Vec<StickyKey>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    /// HTTP/2 over cleartext with prior knowledge.
    H2c,
    /// HTTP/2 over TLS (ALPN `h2`), for `https://` endpoints.
    H2,
}

impl Protocol {
    /// Speaks HTTP/2 (over cleartext or TLS).
    pub fn is_http2(self) -> bool {
        matches!(self, Protocol::H2c | Protocol::H2)
    }
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub scheme: Scheme,
    pub authority: Authority,
}

impl Endpoint {
    /// The URI for this endpoint with a request's path and query: the only way a request's
    /// destination is chosen (nothing the client sends names a host or port).
    pub fn uri(
        &self,
        path_and_query: Option<&http::uri::PathAndQuery>,
    ) -> Result<http::Uri, http::Error> {
        use http::uri::PathAndQuery;
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(match path_and_query.map(PathAndQuery::as_str) {
            Some(pq) if pq.starts_with('/') => path_and_query.cloned().expect("matched Some"),
            // `http://h.example?x=1`: the path is empty, the query is kept.
            Some(pq) if pq.starts_with('?') => PathAndQuery::try_from(format!("/{pq}"))?,
            _ => PathAndQuery::from_static("/"),
        });
        Ok(http::Uri::from_parts(parts)?)
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority)
    }
}

#[derive(Debug, Clone)]
pub struct TargetConfig {
    pub name: String,
    pub endpoints: Vec<Endpoint>,
    pub protocol: Protocol,
    /// For `https://` endpoints: how the upstream's certificate is verified, and the client
    /// certificate the router presents.
    pub tls: Option<crate::tls::UpstreamTls>,
    pub connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_endpoint: usize,
    /// Active health checks; `None` leaves passive ejection only.
    pub health: Option<ActiveCheck>,
    pub ejection: Ejection,
    pub retry: RetryPolicy,
}

/// `[targets.NAME.health]`: a GET to `path` on every endpoint each `interval`; a 2xx within
/// `timeout` passes. `unhealthy_after` failures in a row mark the endpoint down,
/// `healthy_after` passes in a row mark it up again.
#[derive(Debug, Clone)]
pub struct ActiveCheck {
    pub path: http::uri::PathAndQuery,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_after: u32,
    pub healthy_after: u32,
}

/// `[targets.NAME.ejection]`: passive outlier ejection from live traffic.
#[derive(Debug, Clone)]
pub struct Ejection {
    /// Connect failures, resets, timeouts or 5xx in a row that eject an endpoint.
    pub consecutive_failures: u32,
    /// The first ejection lasts `base`; each further one doubles, up to `max`.
    pub base: Duration,
    pub max: Duration,
    /// At most this share of a target's endpoints is ejected at once, and never the last
    /// available one: passive evidence alone never takes a whole target out.
    pub max_ejected_percent: u32,
}

/// `[targets.NAME.retry]`: retries within `budget_percent` of the target's requests over the
/// last 10 s, plus `min_per_second` so a quiet target can still retry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub budget_percent: u32,
    pub min_per_second: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// Each tenant goes where its flag says.
    Flagged,
    /// Every request goes to one target, whatever the flags say.
    Fixed(TargetId),
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub path_prefix: String,
    pub kind: RouteKind,
    pub require_tenant: bool,
    /// Time allowed for the upstream's response headers.
    pub timeout: Duration,
    /// Time allowed for one try's response headers before an idempotent request is sent to
    /// the split tenant's other target (or another endpoint); `None`: only `timeout`.
    pub try_timeout: Option<Duration>,
    /// Longest pause allowed between body chunks, in either direction.
    pub idle_timeout: Duration,
    pub max_body_bytes: Option<u64>,
    /// Protocols a client may upgrade to on this route (`Upgrade`), lower-case; never `h2c`.
    pub upgrades: Vec<String>,
    /// Methods copied to a tenant's shadow besides GET, HEAD and OPTIONS (for sides that share
    /// or discard writes).
    pub shadow_methods: Vec<Method>,
}

impl Route {
    /// True when `protocol` (an `Upgrade` token, `name` or `name/version`) may be tunnelled.
    pub fn allows_upgrade(&self, protocol: &str) -> bool {
        let name = protocol.split('/').next().unwrap_or("");
        self.upgrades.iter().any(|u| u.eq_ignore_ascii_case(name))
    }

    /// True when requests of `method` may be copied to a shadow.
    pub fn shadows_method(&self, method: &Method) -> bool {
        matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
            || self.shadow_methods.contains(method)
    }
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let base = if base.as_os_str().is_empty() {
            Path::new(".")
        } else {
            base
        };
        Config::parse(&text, base, &path.display().to_string())
    }

    /// Parses and validates config text. `base_dir` resolves relative paths; `name` labels errors.
    pub fn parse(text: &str, base_dir: &Path, name: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: name.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let mut problems = Vec::new();
        let config = validate(raw, base_dir, &mut problems);
        match config {
            Some(config) if problems.is_empty() => Ok(config),
            _ => Err(ConfigError::Invalid {
                path: name.to_owned(),
                problems,
            }),
        }
    }

    pub fn route_names(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|r| r.name.as_str())
    }
}

/// Whether two parts of a config differ, read as they print: every config type prints
/// every value it holds (an admin token prints redacted, so it is compared by value).
pub fn differs(a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug) -> bool {
    format!("{a:?}") != format!("{b:?}")
}

/// What a reload of `new` over the running `old` cannot apply without a restart, each with its
/// key: limits and the other server settings (all but the listeners' addresses and
/// `trust_forwarded_headers`),
/// the flag store's settings, `[shadow]`, `[access_log]`, and the names and order of the
/// targets and routes (flags and metrics are built on them). Routes, targets' endpoints and
/// settings, and tenant rules reload.
pub fn restart_needed(old: &Config, new: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut differ = |key: &str, old: &dyn std::fmt::Debug, new: &dyn std::fmt::Debug| {
        if differs(old, new) {
            problem(&mut problems, key, "changing it needs a restart");
        }
    };
    let (o, n) = (&old.server, &new.server);
    differ("server.workers", &o.workers, &n.workers);
    differ(
        "server.drain_timeout_ms",
        &o.drain_timeout,
        &n.drain_timeout,
    );
    differ(
        "server.shutdown_delay_ms",
        &o.shutdown_delay,
        &n.shutdown_delay,
    );
    differ(
        "server.header_read_timeout_ms",
        &o.header_read_timeout,
        &n.header_read_timeout,
    );
    differ(
        "server.max_header_bytes",
        &o.max_header_bytes,
        &n.max_header_bytes,
    );
    differ(
        "server.max_connections",
        &o.max_connections,
        &n.max_connections,
    );
    differ(
        "server.listen_backlog",
        &o.listen_backlog,
        &n.listen_backlog,
    );
    differ(
        "server.http2_max_concurrent_streams",
        &o.http2_max_concurrent_streams,
        &n.http2_max_concurrent_streams,
    );
    let token = |t: &Option<AdminToken>| t.as_ref().map(|t| t.0.clone());
    differ(
        "server.admin_token_file",
        &token(&o.admin_token),
        &token(&n.admin_token),
    );
    // The TLS listener may move; adding or removing it, or changing its certificates' files
    // or settings, needs a restart (the certificates' contents rotate by themselves).
    let tls_settings = |t: &Option<crate::tls::TlsListener>| {
        t.clone().map(|t| crate::tls::TlsListener {
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            ..t
        })
    };
    differ("server.tls", &tls_settings(&o.tls), &tls_settings(&n.tls));
    let (o, n) = (&old.flags, &new.flags);
    differ("flags.source", &o.store, &n.store);
    differ("flags.default_target", &o.default_target, &n.default_target);
    differ("flags.poll_interval_ms", &o.poll_interval, &n.poll_interval);
    differ("flags.cache_path", &o.cache_path, &n.cache_path);
    differ("flags.ready_max_age_ms", &o.ready_max_age, &n.ready_max_age);
    differ(
        "flags.reconcile_interval_ms",
        &o.reconcile_interval,
        &n.reconcile_interval,
    );
    differ(
        "flags.reconcile_items_per_second",
        &o.reconcile_pace,
        &n.reconcile_pace,
    );
    differ(
        "flags.close_moved_streams_after_ms",
        &o.close_moved_streams_after,
        &n.close_moved_streams_after,
    );
    differ("shadow", &old.shadow, &new.shadow);
    differ("access_log", &old.access_log, &new.access_log);
    let target_names =
        |c: &Config| -> Vec<String> { c.target_configs.iter().map(|t| t.name.clone()).collect() };
    let route_names = |c: &Config| -> Vec<String> { c.route_names().map(str::to_owned).collect() };
    for (key, o, n) in [
        ("targets", target_names(old), target_names(new)),
        ("routes", route_names(old), route_names(new)),
    ] {
        if o != n {
            problem(
                &mut problems,
                key,
                format!(
                    "adding, removing, renaming or reordering {key} needs a restart (running: {}; new: {})",
                    o.join(", "),
                    n.join(", ")
                ),
            );
        }
    }
    problems
}

fn problem(problems: &mut Vec<Problem>, key: impl Into<String>, reason: impl Into<String>) {
    problems.push(Problem {
        key: key.into(),
        reason: reason.into(),
    });
}

fn addr(problems: &mut Vec<Problem>, key: &str, value: Option<&str>, default: &str) -> SocketAddr {
    let value = value.unwrap_or(default);
    value.parse().unwrap_or_else(|_| {
        problem(
            problems,
            key,
            format!("{value:?} is not an IP:PORT address (e.g. \"127.0.0.1:8080\")"),
        );
        default.parse().expect("defaults are valid addresses")
    })
}

fn read_token(problems: &mut Vec<Problem>, path: &Path) -> Option<AdminToken> {
    let key = "server.admin_token_file";
    match std::fs::read_to_string(path) {
        Ok(text) => AdminToken::new(&text)
            .map_err(|reason| problem(problems, key, format!("{}: {reason}", path.display())))
            .ok(),
        Err(e) => {
            problem(
                problems,
                key,
                format!("cannot read {}: {e}", path.display()),
            );
            None
        }
    }
}

fn ms(value: Option<u64>, default_ms: u64) -> Duration {
    Duration::from_millis(value.unwrap_or(default_ms))
}

fn positive(problems: &mut Vec<Problem>, key: &str, value: Option<u64>) {
    if value == Some(0) {
        problem(problems, key, "must be greater than 0");
    }
}

fn validate(raw: RawConfig, base_dir: &Path, problems: &mut Vec<Problem>) -> Option<Config> {
    // server
    let s = &raw.server;
    let listen = addr(
        problems,
        "server.listen",
        s.listen.as_deref(),
        DEFAULT_LISTEN,
    );
    let admin_listen = addr(
        problems,
        "server.admin_listen",
        s.admin_listen.as_deref(),
        DEFAULT_ADMIN_LISTEN,
    );
    if listen == admin_listen && listen.port() != 0 {
        problem(
            problems,
            "server.admin_listen",
            format!(
                "is the same address as server.listen ({listen}); the admin listener must be separate from traffic"
            ),
        );
    }
    for (key, v) in [
        ("server.drain_timeout_ms", s.drain_timeout_ms),
        ("server.header_read_timeout_ms", s.header_read_timeout_ms),
    ] {
        positive(problems, key, v);
    }
    if s.workers == Some(0) {
        problem(problems, "server.workers", "must be at least 1");
    }
    if s.listen_backlog.is_some_and(|b| !(1..=65535).contains(&b)) {
        problem(problems, "server.listen_backlog", "must be 1 to 65535");
    }
    if s.max_connections == Some(0) {
        problem(problems, "server.max_connections", "must be at least 1");
    }
    if let Some(n) = s.max_header_bytes
        && !(1024..=1 << 20).contains(&n)
    {
        problem(
            problems,
            "server.max_header_bytes",
            format!("{n} is outside 1024 to 1048576"),
        );
    }
    let tls = s.tls.as_ref().map(|t| {
        let tls_listen = addr(
            problems,
            "server.tls.listen",
            Some(&t.listen),
            "0.0.0.0:8443",
        );
        if tls_listen.port() != 0 && (tls_listen == listen || tls_listen == admin_listen) {
            problem(
                problems,
                "server.tls.listen",
                format!("{tls_listen} is already server.listen or server.admin_listen"),
            );
        }
        positive(
            problems,
            "server.tls.handshake_timeout_ms",
            t.handshake_timeout_ms,
        );
        positive(
            problems,
            "server.tls.reload_interval_ms",
            t.reload_interval_ms,
        );
        if t.certificates.is_empty() {
            problem(
                problems,
                "server.tls.certificates",
                "is empty; give at least one [[server.tls.certificates]] with name, cert and key",
            );
        }
        let mut certificates: Vec<crate::tls::CertificateConfig> = Vec::new();
        for (i, c) in t.certificates.iter().enumerate() {
            if !valid_label(&c.name) || certificates.iter().any(|x| x.name == c.name) {
                problem(
                    problems,
                    format!("server.tls.certificates[{i}].name"),
                    format!(
                        "{:?} must be a unique name of letters, digits, '-' and '_'",
                        c.name
                    ),
                );
            }
            certificates.push(crate::tls::CertificateConfig {
                name: c.name.clone(),
                cert: base_dir.join(&c.cert),
                key: base_dir.join(&c.key),
            });
        }
        // Each certificate is read now, so a bad file is named before the router starts.
        if !certificates.is_empty()
            && let Err(e) = crate::tls::Certificates::load(&certificates)
        {
            problem(problems, "server.tls.certificates", e);
        }
        let client_auth = match (t.client_ca.as_ref(), t.client_auth.as_deref()) {
            (None, None) => None,
            (Some(ca), None | Some("required")) => {
                Some((base_dir.join(ca), crate::tls::ClientAuth::Required))
            }
            (Some(ca), Some("optional")) => {
                Some((base_dir.join(ca), crate::tls::ClientAuth::Optional))
            }
            (None, Some(_)) => {
                problem(
                    problems,
                    "server.tls.client_auth",
                    "needs server.tls.client_ca, the CA bundle client certificates are verified against",
                );
                None
            }
            (Some(_), Some(other)) => {
                problem(
                    problems,
                    "server.tls.client_auth",
                    format!("{other:?} is not \"required\" or \"optional\""),
                );
                None
            }
        };
        if let Some((ca, _)) = &client_auth
            && let Err(e) = crate::tls::roots(ca)
        {
            problem(problems, "server.tls.client_ca", e);
        }
        crate::tls::TlsListener {
            client_auth,
            listen: tls_listen,
            handshake_timeout: ms(t.handshake_timeout_ms, 10_000),
            reload_interval: ms(t.reload_interval_ms, 5_000),
            certificates,
        }
    });
    let server = Server {
        tls,
        listen,
        admin_listen,
        workers: s
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        drain_timeout: ms(s.drain_timeout_ms, 30_000),
        shutdown_delay: ms(s.shutdown_delay_ms, 0),
        header_read_timeout: ms(s.header_read_timeout_ms, 30_000),
        max_header_bytes: s.max_header_bytes.unwrap_or(64 * 1024),
        max_connections: s.max_connections.unwrap_or(10_000),
        listen_backlog: s.listen_backlog.unwrap_or(4096),
        http2_max_concurrent_streams: s.http2_max_concurrent_streams.unwrap_or(256),
        trust_forwarded_headers: s.trust_forwarded_headers.unwrap_or(false),
        admin_token: s
            .admin_token_file
            .as_deref()
            .and_then(|f| read_token(problems, &base_dir.join(f))),
    };

    // targets
    if raw.targets.is_empty() {
        problem(
            problems,
            "targets",
            "no targets; define at least one [targets.NAME]",
        );
    }
    let targets = Targets::new(raw.targets.keys());
    let mut target_configs = Vec::new();
    for (name, t) in &raw.targets {
        let key = format!("targets.{name}");
        if !valid_label(name) {
            problem(
                problems,
                &key,
                "target names use letters, digits, '-' and '_' only",
            );
        }
        if t.endpoints.is_empty() {
            problem(
                problems,
                format!("{key}.endpoints"),
                "is empty; give at least one \"http://HOST:PORT\"",
            );
        }
        let mut endpoints = Vec::new();
        for (i, e) in t.endpoints.iter().enumerate() {
            match parse_endpoint(e) {
                Ok(ep) => endpoints.push(ep),
                Err(reason) => problem(problems, format!("{key}.endpoints[{i}]"), reason),
            }
        }
        let https = endpoints.first().is_some_and(|e| e.scheme == Scheme::HTTPS);
        if endpoints
            .iter()
            .any(|e| (e.scheme == Scheme::HTTPS) != https)
        {
            problem(
                problems,
                format!("{key}.endpoints"),
                "mixes http:// and https://; a target's endpoints share one scheme",
            );
        }
        let protocol = match (t.protocol.as_deref(), https) {
            (None | Some("http1"), _) => Protocol::Http1,
            (Some("h2c"), false) => Protocol::H2c,
            (Some("h2"), true) => Protocol::H2,
            (Some(p @ ("h2c" | "h2")), _) => {
                let (want, scheme) = if https {
                    ("\"h2\" (HTTP/2 over TLS)", "https://")
                } else {
                    ("\"h2c\" (HTTP/2 in cleartext)", "http://")
                };
                problem(
                    problems,
                    format!("{key}.protocol"),
                    format!("{p:?} does not go with {scheme} endpoints; use {want}"),
                );
                Protocol::Http1
            }
            (Some(other), _) => {
                problem(
                    problems,
                    format!("{key}.protocol"),
                    format!("{other:?} is not one of \"http1\", \"h2c\", \"h2\""),
                );
                Protocol::Http1
            }
        };
        let tls_keys = [
            ("tls_ca_file", &t.tls_ca_file),
            ("tls_server_name", &t.tls_server_name),
            ("tls_client_cert", &t.tls_client_cert),
            ("tls_client_key", &t.tls_client_key),
        ];
        let tls = if https {
            let client_cert = match (&t.tls_client_cert, &t.tls_client_key) {
                (Some(c), Some(k)) => Some((base_dir.join(c), base_dir.join(k))),
                (None, None) => None,
                _ => {
                    problem(
                        problems,
                        format!("{key}.tls_client_cert"),
                        "tls_client_cert and tls_client_key go together",
                    );
                    None
                }
            };
            let tls = crate::tls::UpstreamTls {
                ca_file: t.tls_ca_file.as_ref().map(|f| base_dir.join(f)),
                server_name: t.tls_server_name.clone(),
                client_cert,
            };
            // Built once now, so a bad CA bundle, name or client certificate is named before
            // the router starts.
            if let Err(e) = crate::tls::client_config(&tls) {
                problem(problems, format!("{key}.tls"), e);
            }
            Some(tls)
        } else {
            for (k, v) in tls_keys {
                if v.is_some() {
                    problem(
                        problems,
                        format!("{key}.{k}"),
                        "applies to https:// endpoints only",
                    );
                }
            }
            None
        };
        positive(
            problems,
            &format!("{key}.connect_timeout_ms"),
            t.connect_timeout_ms,
        );
        let health = t.health.as_ref().map(|h| {
            let hkey = format!("{key}.health");
            let path = h.path.as_deref().unwrap_or("/healthz");
            let path = match path.parse::<http::uri::PathAndQuery>() {
                Ok(p) if path.starts_with('/') => p,
                _ => {
                    problem(
                        problems,
                        format!("{hkey}.path"),
                        format!("{path:?} is not a path starting with '/'"),
                    );
                    http::uri::PathAndQuery::from_static("/")
                }
            };
            for (k, v) in [("interval_ms", h.interval_ms), ("timeout_ms", h.timeout_ms)] {
                positive(problems, &format!("{hkey}.{k}"), v);
            }
            for (k, v) in [
                ("unhealthy_after", h.unhealthy_after),
                ("healthy_after", h.healthy_after),
            ] {
                positive(problems, &format!("{hkey}.{k}"), v.map(u64::from));
            }
            ActiveCheck {
                path,
                interval: ms(h.interval_ms, 1_000),
                timeout: ms(h.timeout_ms, 500),
                unhealthy_after: h.unhealthy_after.unwrap_or(2),
                healthy_after: h.healthy_after.unwrap_or(2),
            }
        });
        let e = &t.ejection;
        positive(
            problems,
            &format!("{key}.ejection.consecutive_failures"),
            e.consecutive_failures.map(u64::from),
        );
        positive(problems, &format!("{key}.ejection.base_ms"), e.base_ms);
        if e.max_ejected_percent.is_some_and(|p| p > 100) {
            problem(
                problems,
                format!("{key}.ejection.max_ejected_percent"),
                "is a percentage (0 to 100)",
            );
        }
        if t.retry.budget_percent.is_some_and(|p| p > 100) {
            problem(
                problems,
                format!("{key}.retry.budget_percent"),
                "is a percentage (0 to 100)",
            );
        }
        target_configs.push(TargetConfig {
            name: name.clone(),
            endpoints,
            protocol,
            tls,
            connect_timeout: ms(t.connect_timeout_ms, 1_000),
            pool_idle_timeout: ms(t.pool_idle_timeout_ms, 90_000),
            pool_max_idle_per_endpoint: t.pool_max_idle_per_endpoint.unwrap_or(256),
            health,
            ejection: Ejection {
                consecutive_failures: e.consecutive_failures.unwrap_or(5),
                base: ms(e.base_ms, 5_000),
                max: ms(e.max_ms, 60_000).max(ms(e.base_ms, 5_000)),
                max_ejected_percent: e.max_ejected_percent.unwrap_or(50),
            },
            retry: RetryPolicy {
                budget_percent: t.retry.budget_percent.unwrap_or(20),
                min_per_second: t.retry.min_per_second.unwrap_or(10),
            },
        });
    }
    let target_ref = |problems: &mut Vec<Problem>, key: &str, name: &str| -> Option<TargetId> {
        let id = targets.id(name);
        if id.is_none() {
            problem(
                problems,
                key,
                format!(
                    "{name:?} is not a configured target (configured: {})",
                    targets.known_list()
                ),
            );
        }
        id
    };

    // flags
    let store = match StoreUrl::parse(&raw.flags.source, base_dir) {
        Ok(store) => Some(store),
        Err(e) => {
            problem(
                problems,
                "flags.source",
                flag_store::error::Chain(&e).to_string(),
            );
            None
        }
    };
    let default_target = target_ref(problems, "flags.default_target", &raw.flags.default_target);
    positive(
        problems,
        "flags.poll_interval_ms",
        raw.flags.poll_interval_ms,
    );
    positive(
        problems,
        "flags.ready_max_age_ms",
        raw.flags.ready_max_age_ms,
    );
    positive(
        problems,
        "flags.reconcile_interval_ms",
        raw.flags.reconcile_interval_ms,
    );
    if raw
        .flags
        .reconcile_items_per_second
        .is_some_and(|n| n == 0 || n > u64::from(u32::MAX))
    {
        problem(
            problems,
            "flags.reconcile_items_per_second",
            "must be 1 to 4294967295",
        );
    }

    // tenant
    let mut from = Vec::new();
    for (i, spec) in raw.tenant.from.iter().enumerate() {
        match Extractor::parse(spec) {
            Ok(Extractor::ClientCertCn)
                if raw
                    .server
                    .tls
                    .as_ref()
                    .is_none_or(|t| t.client_ca.is_none()) =>
            {
                problem(
                    problems,
                    format!("tenant.from[{i}]"),
                    "client_cert:cn needs a TLS listener that verifies client certificates ([server.tls] client_ca)",
                );
            }
            Ok(x) => from.push(x),
            Err(reason) => problem(problems, format!("tenant.from[{i}]"), reason),
        }
    }
    let mut sticky_key = Vec::new();
    for (i, spec) in raw.tenant.sticky_key.iter().enumerate() {
        match StickyKey::parse(spec) {
            Ok(k) => sticky_key.push(k),
            Err(reason) => problem(problems, format!("tenant.sticky_key[{i}]"), reason),
        }
    }
    if sticky_key.is_empty() {
        sticky_key.push(StickyKey::ClientIp);
    }

    // routes
    if raw.routes.is_empty() {
        problem(
            problems,
            "routes",
            "no routes; add at least one [[routes]] (name = \"api\", path_prefix = \"/\")",
        );
    }
    let mut names = HashSet::new();
    let mut prefixes = HashSet::new();
    let mut routes = Vec::new();
    for (i, r) in raw.routes.iter().enumerate() {
        let key = format!("routes[{i}]");
        if !valid_label(&r.name) {
            problem(
                problems,
                format!("{key}.name"),
                format!(
                    "{:?}: route names use letters, digits, '-' and '_' only",
                    r.name
                ),
            );
        } else if !names.insert(r.name.as_str()) {
            problem(
                problems,
                format!("{key}.name"),
                format!("duplicate route name {:?}", r.name),
            );
        }
        if !r.path_prefix.starts_with('/') {
            problem(
                problems,
                format!("{key}.path_prefix"),
                format!("{:?} must start with '/'", r.path_prefix),
            );
        } else if !prefixes.insert(r.path_prefix.as_str()) {
            problem(
                problems,
                format!("{key}.path_prefix"),
                format!(
                    "duplicate route: another route already has path_prefix {:?}",
                    r.path_prefix
                ),
            );
        }
        let kind = match &r.target {
            None => RouteKind::Flagged,
            Some(t) => match target_ref(problems, &format!("{key}.target"), t) {
                Some(id) => RouteKind::Fixed(id),
                None => RouteKind::Flagged,
            },
        };
        positive(problems, &format!("{key}.timeout_ms"), r.timeout_ms);
        positive(problems, &format!("{key}.try_timeout_ms"), r.try_timeout_ms);
        if let Some(try_ms) = r.try_timeout_ms
            && try_ms >= r.timeout_ms.unwrap_or(30_000)
        {
            problem(
                problems,
                format!("{key}.try_timeout_ms"),
                "must be shorter than the route's timeout_ms, or there is no time left to retry",
            );
        }
        positive(
            problems,
            &format!("{key}.idle_timeout_ms"),
            r.idle_timeout_ms,
        );
        let upgrades = match &r.upgrades {
            None => vec!["websocket".to_owned()],
            Some(list) => list.iter().map(|u| u.to_ascii_lowercase()).collect(),
        };
        for u in &upgrades {
            if u == "h2c" {
                problem(
                    problems,
                    format!("{key}.upgrades"),
                    "\"h2c\" cannot be allowed: after its 101 the upstream would take HTTP/2 requests the router never sees",
                );
            } else if u.is_empty() || !u.bytes().all(http1::codec::is_tchar) {
                problem(
                    problems,
                    format!("{key}.upgrades"),
                    format!("{u:?} is not a protocol name (a token such as \"websocket\")"),
                );
            }
        }
        let mut shadow_methods = Vec::new();
        for m in r.shadow_methods.iter().flatten() {
            match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(Method::CONNECT) | Err(_) => problem(
                    problems,
                    format!("{key}.shadow_methods"),
                    format!("{m:?} is not a method a shadow can be sent"),
                ),
                Ok(method) => shadow_methods.push(method),
            }
        }
        routes.push(Route {
            shadow_methods,
            upgrades,
            name: r.name.clone(),
            path_prefix: r.path_prefix.clone(),
            kind,
            require_tenant: r.require_tenant.unwrap_or(false),
            timeout: ms(r.timeout_ms, 30_000),
            try_timeout: r.try_timeout_ms.map(Duration::from_millis),
            idle_timeout: ms(r.idle_timeout_ms, 60_000),
            max_body_bytes: r.max_body_bytes,
        });
    }
    if routes.len() > 1000 {
        problem(problems, "routes", "more than 1000 routes");
    }
    let shadow = shadow_config(&raw.shadow, problems);
    let access_log = raw.access_log.as_ref().map(|a| {
        if a.sample_percent.is_some_and(|p| p > 100) {
            problem(
                problems,
                "access_log.sample_percent",
                "is a share of requests, 0 to 100",
            );
        }
        positive(problems, "access_log.buffer_lines", a.buffer_lines);
        if a.path.is_empty() {
            problem(
                problems,
                "access_log.path",
                "is empty: give a file (relative to the config's folder) or \"-\" for stdout",
            );
        }
        AccessLogConfig {
            destination: match a.path.as_str() {
                "-" => LogDestination::Stdout,
                path => LogDestination::File(base_dir.join(path)),
            },
            sample_percent: a.sample_percent.unwrap_or(100).min(100),
            buffer_lines: a.buffer_lines.unwrap_or(10_000).max(1) as usize,
        }
    });

    // A file is a cheap stat; a remote store is one small read a poll. 500 ms keeps a flip's
    // slowest router well under a second (BENCHMARKS.md) for two reads a second a router.
    let poll_default_ms = if matches!(store, Some(StoreUrl::Dynamo(_))) {
        500
    } else {
        250
    };
    Some(Config {
        base_dir: base_dir.to_owned(),
        server,
        flags: Flags {
            store: store?,
            default_target: default_target?,
            poll_interval: ms(raw.flags.poll_interval_ms, poll_default_ms),
            cache_path: raw.flags.cache_path.as_deref().map(|p| base_dir.join(p)),
            ready_max_age: raw.flags.ready_max_age_ms.map(Duration::from_millis),
            reconcile_interval: ms(raw.flags.reconcile_interval_ms, 600_000),
            reconcile_pace: raw
                .flags
                .reconcile_items_per_second
                .map_or(flag_store::dynamodb::RECONCILE_PACE, |n| n as u32),
            close_moved_streams_after: ms(raw.flags.close_moved_streams_after_ms, 5_000),
        },
        tenant: TenantRules { from, sticky_key },
        targets,
        target_configs,
        routes,
        shadow,
        access_log,
    })
}

fn shadow_config(raw: &RawShadow, problems: &mut Vec<Problem>) -> ShadowConfig {
    for (key, v) in [
        ("shadow.queue", raw.queue),
        ("shadow.max_queued_bytes", raw.max_queued_bytes),
        ("shadow.concurrency", raw.concurrency),
        ("shadow.timeout_ms", raw.timeout_ms),
        ("shadow.max_tenants", raw.max_tenants),
    ] {
        positive(problems, key, v);
    }
    if raw.noise_sample_percent.is_some_and(|p| p > 100) {
        problem(
            problems,
            "shadow.noise_sample_percent",
            "is a share of requests, 0 to 100",
        );
    }
    let mut compare_headers = Vec::new();
    for h in raw.compare_headers.iter().flatten() {
        match HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()) {
            Ok(name) => compare_headers.push(name),
            Err(_) => problem(
                problems,
                "shadow.compare_headers",
                format!("{h:?} is not a header name"),
            ),
        }
    }
    let ignore_fields = raw.ignore_fields.clone().unwrap_or_default();
    if let Some(bad) = ignore_fields.iter().find(|f| f.is_empty()) {
        problem(
            problems,
            "shadow.ignore_fields",
            format!("{bad:?}: give a field name or a path such as /items/*/updated_at"),
        );
    }
    let size = |v: Option<u64>, default: u64| v.unwrap_or(default);
    ShadowConfig {
        max_body_bytes: size(raw.max_body_bytes, 64 * 1024),
        max_compare_bytes: size(raw.max_compare_bytes, 1 << 20).min(64 << 20) as usize,
        queue: size(raw.queue, 1_000).max(1) as usize,
        max_queued_bytes: size(raw.max_queued_bytes, 64 << 20),
        concurrency: size(raw.concurrency, 16).max(1) as usize,
        timeout: ms(raw.timeout_ms, 10_000),
        compare_headers,
        ignore_fields,
        noise_sample_percent: raw.noise_sample_percent.unwrap_or(5),
        recent_mismatches: size(raw.recent_mismatches, 20) as usize,
        max_tenants: size(raw.max_tenants, 10_000).max(1) as usize,
    }
}

/// Names that become metric label values: short, plain, bounded.
fn valid_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    let uri: http::Uri = s
        .parse()
        .map_err(|e| format!("{s:?} is not a URL ({e}); write \"http://HOST:PORT\""))?;
    let scheme = uri
        .scheme()
        .cloned()
        .ok_or_else(|| format!("{s:?} has no scheme; write \"http://HOST:PORT\""))?;
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        return Err(format!("{s:?}: an endpoint is http:// or https://"));
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("{s:?} has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "{s:?}: credentials in an endpoint URL are not supported"
        ));
    }
    if authority.host().is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    let after_host = authority
        .as_str()
        .rsplit_once(']')
        .map_or(authority.as_str(), |(_, rest)| rest);
    if after_host.contains(':') && authority.port_u16().is_none_or(|p| p == 0) {
        return Err(format!("{s:?}: the port is not a number from 1 to 65535"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "{s:?}: an endpoint is scheme, host and port only, with no path or query"
        ));
    }
    Ok(Endpoint { scheme, authority })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[server]
listen = "127.0.0.1:8080"
admin_listen = "127.0.0.1:9090"
[flags]
source = "file:flags.json"
default_target = "legacy"
[tenant]
from = ["header:x-tenant-id", "host:.app.example.com", "path:/t/", "jwt:tenant_id"]
[targets.legacy]
endpoints = ["http://127.0.0.1:9001"]
[targets.new]
endpoints = ["http://127.0.0.1:9002"]
[[routes]]
name = "api"
path_prefix = "/"
[[routes]]
name = "analytics"
path_prefix = "/analytics"
target = "legacy"
"#;

    #[test]
    fn a_reload_names_each_key_that_needs_a_restart_and_lets_the_rest_through() {
        let parse = |text: &str| Config::parse(text, Path::new("/etc/sy"), "router.toml").unwrap();
        let running = parse(GOOD);
        let keys = |text: &str| -> Vec<String> {
            restart_needed(&running, &parse(text))
                .into_iter()
                .map(|p| p.key)
                .collect()
        };
        assert_eq!(keys(GOOD), Vec::<String>::new());
        // Listeners, endpoints, route settings, tenant rules and forwarded headers reload.
        let reloadable = GOOD
            .replace("127.0.0.1:8080", "127.0.0.1:8081")
            .replace("9001", "9101")
            .replace(
                "path_prefix = \"/analytics\"",
                "path_prefix = \"/stats\"\ntimeout_ms = 5",
            )
            .replace("\"path:/t/\", ", "")
            .replace("[flags]", "trust_forwarded_headers = true\n[flags]");
        assert_eq!(keys(&reloadable), Vec::<String>::new());
        // Limits, the flag store, and the target and route lists do not.
        let restart = GOOD
            .replace("[flags]", "max_connections = 7\n[flags]")
            .replace("default_target = \"legacy\"", "default_target = \"newer\"")
            .replace("[targets.new]", "[targets.newer]")
            .replace("name = \"analytics\"", "name = \"stats\"");
        assert_eq!(
            keys(&restart),
            [
                "server.max_connections",
                "flags.default_target",
                "targets",
                "routes"
            ]
        );
        let problems = restart_needed(&running, &parse(&restart));
        assert_eq!(
            problems[3].to_string(),
            "routes: adding, removing, renaming or reordering routes needs a restart (running: api, analytics; new: api, stats)"
        );
    }

    fn errors(text: &str) -> String {
        Config::parse(text, Path::new("/etc/sy"), "router.toml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_destination_is_always_the_endpoint() {
        let endpoint = Endpoint {
            scheme: Scheme::HTTP,
            authority: "10.0.0.1:9001".parse().unwrap(),
        };
        for incoming in [
            "/x?y=1",
            "http://evil.example.com/x?y=1",
            "http://127.0.0.1:22/x?y=1",
        ] {
            let uri: http::Uri = incoming.parse().unwrap();
            let out = endpoint.uri(uri.path_and_query()).unwrap();
            assert_eq!(out.to_string(), "http://10.0.0.1:9001/x?y=1", "{incoming}");
        }
        for (incoming, out) in [
            ("*", "http://10.0.0.1:9001/"),
            ("http://h?q=1", "http://10.0.0.1:9001/?q=1"),
        ] {
            let uri: http::Uri = incoming.parse().unwrap();
            assert_eq!(endpoint.uri(uri.path_and_query()).unwrap().to_string(), out);
        }
    }

    #[test]
    fn the_issue_example_parses() {
        let c = Config::parse(GOOD, Path::new("/etc/sy"), "router.toml").unwrap();
        assert_eq!(c.flags.store, StoreUrl::File("/etc/sy/flags.json".into()));
        assert_eq!(c.targets.name(c.flags.default_target), "legacy");
        assert_eq!(c.tenant.from.len(), 4);
        assert_eq!(
            c.routes[1].kind,
            RouteKind::Fixed(c.targets.id("legacy").unwrap())
        );
        assert_eq!(
            c.target_configs[c.targets.id("new").unwrap().index()].name,
            "new"
        );
    }

    #[test]
    fn each_mistake_is_named_by_its_key() {
        let cases = [
            (
                GOOD.replace("default_target = \"legacy\"", "default_target = \"old\""),
                "flags.default_target: \"old\" is not a configured target (configured: legacy, new)",
            ),
            (
                GOOD.replace("target = \"legacy\"", "target = \"nwe\""),
                "routes[1].target: \"nwe\" is not a configured target",
            ),
            (
                GOOD.replace("127.0.0.1:9002", "127.0.0.1:port"),
                "targets.new.endpoints[0]",
            ),
            (
                GOOD.replace("http://127.0.0.1:9002", "ftp://127.0.0.1:9002"),
                "an endpoint is http:// or https://",
            ),
            (
                GOOD.replace("http://127.0.0.1:9002", "http://127.0.0.1:9002/v1"),
                "no path",
            ),
            (
                GOOD.replace("listen = \"127.0.0.1:8080\"", "listen = \"localhost\""),
                "server.listen: \"localhost\" is not an IP:PORT",
            ),
            (
                GOOD.replace("/analytics", "/"),
                "routes[1].path_prefix: duplicate route",
            ),
            (
                GOOD.replace("\"analytics\"", "\"api\""),
                "routes[1].name: duplicate route name \"api\"",
            ),
            (
                GOOD.replace("header:x-tenant-id", "cookie:x"),
                "tenant.from[0]",
            ),
            (
                GOOD.replace("source = \"file:flags.json\"", "source = \"redis://x\""),
                "flags.source",
            ),
            (
                GOOD.replace("[server]", "[server]\nworkers = 0"),
                "server.workers",
            ),
            (GOOD.replace("[server]", "[sever]"), "unknown field `sever`"),
            (
                GOOD.replace("\nlisten =", "\nlisen ="),
                "unknown field `lisen`",
            ),
            (
                GOOD.replace("9090", "8080"),
                "server.admin_listen: is the same address",
            ),
            (
                GOOD.replace(
                    "[targets.new]",
                    "[targets.new.health]\npath = \"healthz\"\n[targets.new]",
                ),
                "targets.new.health.path",
            ),
            (
                GOOD.replace(
                    "[targets.new]",
                    "[targets.new.health]\nunhealthy_after = 0\n[targets.new]",
                ),
                "targets.new.health.unhealthy_after: must be greater than 0",
            ),
            (
                GOOD.replace(
                    "[targets.new]",
                    "[targets.new.retry]\nbudget_percent = 120\n[targets.new]",
                ),
                "targets.new.retry.budget_percent",
            ),
        ];
        for (text, want) in cases {
            let err = errors(&text);
            assert!(err.contains(want), "want {want:?} in:\n{err}");
        }
    }

    #[test]
    fn the_shipped_example_config_is_valid() {
        let text = include_str!("../../examples/router.toml");
        let c = Config::parse(text, Path::new("examples"), "examples/router.toml").unwrap();
        assert_eq!(c.routes.len(), 2);
    }

    #[test]
    fn all_problems_are_reported_together() {
        let text = GOOD
            .replace("default_target = \"legacy\"", "default_target = \"old\"")
            .replace("target = \"legacy\"", "target = \"nwe\"");
        let err = errors(&text);
        assert!(
            err.contains("flags.default_target") && err.contains("routes[1].target"),
            "{err}"
        );
    }

    #[test]
    fn the_admin_token_is_checked_whole_and_never_printed() {
        assert!(
            AdminToken::new("short")
                .unwrap_err()
                .contains("at least 16")
        );
        assert!(AdminToken::new("has a space in the middle").is_err());
        let token = AdminToken::new(" 0123456789abcdef\n").unwrap();
        assert!(token.matches(b"0123456789abcdef"));
        assert!(!token.matches(b"0123456789abcdeF"));
        assert!(!token.matches(b"0123456789abcdef0"));
        assert!(!token.matches(b"0123456789abcde"));
        assert!(!token.matches(b""));
        assert_eq!(format!("{token:?}"), "AdminToken(<redacted>)");
    }
}
