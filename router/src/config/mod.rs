//! The router's TOML config, read once at start. Parsing refuses unknown keys; validation
//! checks every cross-reference (targets, routes, extractors, addresses) and reports all the
//! problems at once, each naming its key, so `switchyard check` tells an operator everything
//! that is wrong in one run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flag_store::{StoreUrl, TargetId, Targets};
use http::HeaderName;
use http::uri::{Authority, Scheme};

use crate::policy::tenant::{Extractor, StickyKey};

pub mod parse;
pub mod raw;
pub mod restart;

use crate::policy::Route;
use raw::RawConfig;
pub use restart::{differs, restart_needed};

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
    pub fleet: FleetConfig,
}

/// How the router shows itself to the fleet (`[fleet]`): its presence record in the store.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// The router's id; `None`: its host name and a random suffix, new at each start.
    pub id: Option<String>,
    /// How often the presence record is refreshed (and at once when the flag version moves).
    pub heartbeat: Duration,
    /// Requests of held tenants this router queues at most, and the bytes of their heads.
    pub hold_queue: usize,
    pub hold_queue_bytes: u64,
    /// Whether this router may drive ramps (one router drives each, under a lease).
    pub drive_ramps: bool,
    /// How long a ramp's driver holds its lease: another router takes over within it.
    pub ramp_lease: Duration,
    /// The replication gate of a move with a hold started from the console: passes when
    /// `GET URL?tenants=a,b` answers 2xx (`flags move --gate-url`); `None`: no gate.
    pub hold_gate_url: Option<String>,
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
    /// Time a new connection has to send its first byte (capped by `header_read_timeout`).
    pub first_byte_timeout: Duration,
    pub max_header_bytes: usize,
    /// Client connections open at once. At the cap, a new connection closes the one idle the
    /// longest (no request in progress); it waits only when every one has a request going.
    pub max_connections: usize,
    /// Client connections one address may hold open; one beyond it is closed at once.
    pub max_connections_per_address: Option<usize>,
    /// Request bodies one address may have coming at once; one beyond gets 429.
    pub max_uploads_per_address: Option<usize>,
    /// Connections the kernel queues for the traffic listener before they are accepted (a
    /// burst of connects waits here; the kernel caps it at `net.core.somaxconn`).
    pub listen_backlog: u32,
    pub http2_max_concurrent_streams: u32,
    /// Keep incoming `x-forwarded-proto` and `x-forwarded-host` (set only behind a trusted
    /// load balancer); otherwise they are overwritten.
    pub trust_forwarded_headers: bool,
    /// Forward header fields whose name has an underscore; by default they are dropped, as
    /// some servers read `X_Tenant_Id` as `X-Tenant-Id`.
    pub keep_underscored_headers: bool,
    /// The bearer token admin writes must present; `None` disables admin writes.
    pub admin_token: Option<AdminToken>,
    /// The bearer token of the admin listener's read API (`/v1/...`, for jobs asking who
    /// owns a tenant); `None` disables it. The admin token is accepted there too.
    pub read_token: Option<AdminToken>,
    /// Host names the console answers to besides IP addresses and `localhost` (lowercase).
    pub console_hosts: Vec<String>,
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
        let config = parse::validate(raw, base_dir, &mut problems);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::RouteKind;

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
            (
                GOOD.replace("header:x-tenant-id", "header:x_tenant"),
                "tenant: routes by the header x_tenant, whose name has an underscore",
            ),
            (
                GOOD.replace("[server]", "[server]\nmax_connections_per_address = 0"),
                "server.max_connections_per_address: must be at least 1",
            ),
            (
                GOOD.replace("[server]", "[server]\nfirst_byte_timeout_ms = 0"),
                "server.first_byte_timeout_ms: must be greater than 0",
            ),
        ];
        for (text, want) in cases {
            let err = errors(&text);
            assert!(err.contains(want), "want {want:?} in:\n{err}");
        }
    }

    #[test]
    fn the_shipped_example_config_is_valid() {
        let text = include_str!("../../../examples/router.toml");
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
