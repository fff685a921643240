//! Validation: the file's shapes ([`super::raw`]) into the validated config, one function a
//! section. Every problem is collected with its key rather than stopping at the first, so
//! `switchyard check` names everything that is wrong in one run.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use flag_store::{StoreUrl, TargetId, Targets};
use http::uri::Scheme;
use http::{HeaderName, Method};

use super::raw::{
    RawAccessLog, RawConfig, RawFlags, RawFleet, RawHealth, RawRoute, RawServer, RawShadow,
    RawTarget, RawTenant, RawTls,
};
use super::*;
use crate::policy::tenant::{Extractor, StickyKey};
use crate::policy::{Route, RouteKind};

pub(super) fn validate(
    raw: RawConfig,
    base_dir: &Path,
    problems: &mut Vec<Problem>,
) -> Option<Config> {
    let server = server(&raw.server, base_dir, problems);
    let (targets, target_configs) = targets(&raw.targets, base_dir, problems);
    let flags = flags(&raw.flags, &targets, base_dir, problems);
    let verifies_clients = (raw.server.tls.as_ref()).is_some_and(|t| t.client_ca.is_some());
    let tenant = tenant(&raw.tenant, verifies_clients, problems);
    if !server.keep_underscored_headers {
        let deciding = crate::policy::tenant::deciding_headers(&tenant.from, &tenant.sticky_key);
        for name in deciding.iter().filter(|n| n.as_str().contains('_')) {
            problem(
                problems,
                "tenant",
                format!(
                    "routes by the header {name}, whose name has an underscore: such fields are dropped unless server.keep_underscored_headers = true"
                ),
            );
        }
    }
    let routes = routes(&raw.routes, &targets, problems);
    let shadow = shadow_config(&raw.shadow, problems);
    let access_log = (raw.access_log.as_ref()).map(|a| access_log(a, base_dir, problems));
    let fleet = fleet(&raw.fleet, problems);
    Some(Config {
        base_dir: base_dir.to_owned(),
        server,
        flags: flags?,
        tenant,
        targets,
        target_configs,
        routes,
        shadow,
        access_log,
        fleet,
    })
}

/// `[server]`: the listeners and the limits on what clients may send.
fn server(s: &RawServer, base_dir: &Path, problems: &mut Vec<Problem>) -> Server {
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
        ("server.first_byte_timeout_ms", s.first_byte_timeout_ms),
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
    for (key, cap) in [
        (
            "server.max_connections_per_address",
            s.max_connections_per_address,
        ),
        ("server.max_uploads_per_address", s.max_uploads_per_address),
    ] {
        if cap == Some(0) {
            problem(
                problems,
                key,
                "must be at least 1 (leave it out for no cap)",
            );
        }
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
    let tls = (s.tls.as_ref()).map(|t| tls_listener(t, (listen, admin_listen), base_dir, problems));
    let mut token = |key, file: &Option<String>| {
        (file.as_deref()).and_then(|f| read_token(problems, key, &base_dir.join(f)))
    };
    let admin_token = token("server.admin_token_file", &s.admin_token_file);
    let read_token = token("server.read_token_file", &s.read_token_file);
    if admin_token.is_some() && admin_token == read_token {
        problem(
            problems,
            "server.read_token_file",
            "holds the admin write token; a job's read token must be another, so it cannot write",
        );
    }
    Server {
        tls,
        listen,
        admin_listen,
        workers: s
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        drain_timeout: ms(s.drain_timeout_ms, 30_000),
        shutdown_delay: ms(s.shutdown_delay_ms, 0),
        header_read_timeout: ms(s.header_read_timeout_ms, 30_000),
        first_byte_timeout: ms(s.first_byte_timeout_ms, 10_000),
        max_header_bytes: s.max_header_bytes.unwrap_or(64 * 1024),
        max_connections: s.max_connections.unwrap_or(10_000),
        max_connections_per_address: s.max_connections_per_address,
        max_uploads_per_address: s.max_uploads_per_address,
        listen_backlog: s.listen_backlog.unwrap_or(4096),
        http2_max_concurrent_streams: s.http2_max_concurrent_streams.unwrap_or(256),
        trust_forwarded_headers: s.trust_forwarded_headers.unwrap_or(false),
        keep_underscored_headers: s.keep_underscored_headers.unwrap_or(false),
        admin_token,
        read_token,
        console_hosts: (s.console_hosts.iter().flatten())
            .map(|h| h.trim().to_ascii_lowercase())
            .collect(),
    }
}

/// `[server.tls]`: a TLS listener apart from the two others, its certificates read now so a
/// bad file is named before the router starts.
fn tls_listener(
    t: &RawTls,
    (listen, admin_listen): (SocketAddr, SocketAddr),
    base_dir: &Path,
    problems: &mut Vec<Problem>,
) -> crate::tls::TlsListener {
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
        (Some(ca), Some("optional")) => Some((base_dir.join(ca), crate::tls::ClientAuth::Optional)),
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
}

/// `[targets.NAME]`, every one: the names become the flags' target ids.
fn targets(
    raw: &BTreeMap<String, RawTarget>,
    base_dir: &Path,
    problems: &mut Vec<Problem>,
) -> (Targets, Vec<TargetConfig>) {
    if raw.is_empty() {
        problem(
            problems,
            "targets",
            "no targets; define at least one [targets.NAME]",
        );
    }
    let targets = Targets::new(raw.keys());
    let configs = (raw.iter())
        .map(|(name, t)| target(name, t, base_dir, problems))
        .collect();
    (targets, configs)
}

/// One target: its endpoints (one scheme), protocol, TLS, health check, ejection and retries.
fn target(name: &str, t: &RawTarget, base_dir: &Path, problems: &mut Vec<Problem>) -> TargetConfig {
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
    let tls = upstream_tls(t, https, &key, base_dir, problems);
    positive(
        problems,
        &format!("{key}.connect_timeout_ms"),
        t.connect_timeout_ms,
    );
    let health = (t.health.as_ref()).map(|h| health_check(h, &key, problems));
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
    TargetConfig {
        name: name.to_owned(),
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
    }
}

/// A target's TLS to its `https://` endpoints, built once now so a bad CA bundle, name or
/// client certificate is named before the router starts; the TLS keys are refused on `http://`.
fn upstream_tls(
    t: &RawTarget,
    https: bool,
    key: &str,
    base_dir: &Path,
    problems: &mut Vec<Problem>,
) -> Option<crate::tls::UpstreamTls> {
    let tls_keys = [
        ("tls_ca_file", &t.tls_ca_file),
        ("tls_server_name", &t.tls_server_name),
        ("tls_client_cert", &t.tls_client_cert),
        ("tls_client_key", &t.tls_client_key),
    ];
    if https {
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
    }
}

/// `[targets.NAME.health]`.
fn health_check(h: &RawHealth, key: &str, problems: &mut Vec<Problem>) -> ActiveCheck {
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
}

/// The id of a target a key names, or a problem naming the configured ones.
fn target_ref(
    targets: &Targets,
    problems: &mut Vec<Problem>,
    key: &str,
    name: &str,
) -> Option<TargetId> {
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
}

/// `[flags]`: where the flags live and how they are polled.
fn flags(
    raw: &RawFlags,
    targets: &Targets,
    base_dir: &Path,
    problems: &mut Vec<Problem>,
) -> Option<Flags> {
    let store = match StoreUrl::parse(&raw.source, base_dir) {
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
    let default_target = target_ref(
        targets,
        problems,
        "flags.default_target",
        &raw.default_target,
    );
    positive(problems, "flags.poll_interval_ms", raw.poll_interval_ms);
    positive(problems, "flags.ready_max_age_ms", raw.ready_max_age_ms);
    positive(
        problems,
        "flags.reconcile_interval_ms",
        raw.reconcile_interval_ms,
    );
    if raw
        .reconcile_items_per_second
        .is_some_and(|n| n == 0 || n > u64::from(u32::MAX))
    {
        problem(
            problems,
            "flags.reconcile_items_per_second",
            "must be 1 to 4294967295",
        );
    }

    // A file is a cheap stat; a remote store is one small read a poll. 500 ms keeps a flip's
    // slowest router well under a second (BENCHMARKS.md) for two reads a second a router.
    let poll_default_ms = if matches!(store, Some(StoreUrl::Dynamo(_))) {
        500
    } else {
        250
    };
    Some(Flags {
        store: store?,
        default_target: default_target?,
        poll_interval: ms(raw.poll_interval_ms, poll_default_ms),
        cache_path: raw.cache_path.as_deref().map(|p| base_dir.join(p)),
        ready_max_age: raw.ready_max_age_ms.map(Duration::from_millis),
        reconcile_interval: ms(raw.reconcile_interval_ms, 600_000),
        reconcile_pace: raw
            .reconcile_items_per_second
            .map_or(flag_store::dynamodb::RECONCILE_PACE, |n| n as u32),
        close_moved_streams_after: ms(raw.close_moved_streams_after_ms, 5_000),
    })
}

/// `[tenant]`: the extractors, in order, and the sticky key of split tenants.
fn tenant(raw: &RawTenant, verifies_clients: bool, problems: &mut Vec<Problem>) -> TenantRules {
    let mut from = Vec::new();
    for (i, spec) in raw.from.iter().enumerate() {
        match Extractor::parse(spec) {
            Ok(Extractor::ClientCertCn) if !verifies_clients => {
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
    for (i, spec) in raw.sticky_key.iter().enumerate() {
        match StickyKey::parse(spec) {
            Ok(k) => sticky_key.push(k),
            Err(reason) => problem(problems, format!("tenant.sticky_key[{i}]"), reason),
        }
    }
    if sticky_key.is_empty() {
        sticky_key.push(StickyKey::ClientIp);
    }
    TenantRules { from, sticky_key }
}

/// `[[routes]]`: unique names and prefixes, at most 1000.
fn routes(raw: &[RawRoute], targets: &Targets, problems: &mut Vec<Problem>) -> Vec<Route> {
    if raw.is_empty() {
        problem(
            problems,
            "routes",
            "no routes; add at least one [[routes]] (name = \"api\", path_prefix = \"/\")",
        );
    }
    let mut names = HashSet::new();
    let mut prefixes = HashSet::new();
    let mut routes = Vec::new();
    for (i, r) in raw.iter().enumerate() {
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
        routes.push(route(r, &key, targets, problems));
    }
    if routes.len() > 1000 {
        problem(problems, "routes", "more than 1000 routes");
    }
    routes
}

/// One route: its kind, timeouts, upgrades and shadowed methods.
fn route(r: &RawRoute, key: &str, targets: &Targets, problems: &mut Vec<Problem>) -> Route {
    let kind = match &r.target {
        None => RouteKind::Flagged,
        Some(t) => match target_ref(targets, problems, &format!("{key}.target"), t) {
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
    positive(
        problems,
        &format!("{key}.upload_timeout_ms"),
        r.upload_timeout_ms,
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
    Route {
        shadow_methods,
        upgrades,
        name: r.name.clone(),
        path_prefix: r.path_prefix.clone(),
        kind,
        require_tenant: r.require_tenant.unwrap_or(false),
        timeout: ms(r.timeout_ms, 30_000),
        try_timeout: r.try_timeout_ms.map(Duration::from_millis),
        idle_timeout: ms(r.idle_timeout_ms, 60_000),
        upload: crate::policy::route::UploadPace {
            timeout: ms(r.upload_timeout_ms, 60_000),
            min_rate: r.min_upload_bytes_per_s.unwrap_or(1024),
        },
        max_body_bytes: r.max_body_bytes,
    }
}

/// `[access_log]`.
fn access_log(a: &RawAccessLog, base_dir: &Path, problems: &mut Vec<Problem>) -> AccessLogConfig {
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
}

/// `[fleet]`: the router's id names a file and a key, so it is a plain label.
fn fleet(raw: &RawFleet, problems: &mut Vec<Problem>) -> FleetConfig {
    if let Some(id) = &raw.id
        && (!valid_label(id) && !id.split('.').all(valid_label))
    {
        problem(
            problems,
            "fleet.id",
            format!(
                "{id:?}: a router id uses letters, digits, '-', '_' and '.' (up to 64 each part)"
            ),
        );
    }
    positive(problems, "fleet.heartbeat_ms", raw.heartbeat_ms);
    positive(problems, "fleet.hold_queue", raw.hold_queue);
    positive(problems, "fleet.hold_queue_bytes", raw.hold_queue_bytes);
    positive(problems, "fleet.ramp_lease_ms", raw.ramp_lease_ms);
    if let Some(url) = &raw.hold_gate_url {
        let parsed = url.parse::<http::Uri>();
        let fits = parsed
            .as_ref()
            .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
        if !fits {
            problem(
                problems,
                "fleet.hold_gate_url",
                format!("{url:?} is not an http:// or https:// URL with a host"),
            );
        }
    }
    FleetConfig {
        hold_gate_url: raw.hold_gate_url.clone(),
        drive_ramps: raw.drive_ramps.unwrap_or(true),
        ramp_lease: ms(raw.ramp_lease_ms, 10_000),
        id: raw.id.clone(),
        heartbeat: ms(raw.heartbeat_ms, 5_000),
        hold_queue: raw.hold_queue.unwrap_or(10_000) as usize,
        hold_queue_bytes: raw.hold_queue_bytes.unwrap_or(64 << 20),
    }
}

/// `[shadow]`.
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

pub(super) fn problem(
    problems: &mut Vec<Problem>,
    key: impl Into<String>,
    reason: impl Into<String>,
) {
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

fn read_token(problems: &mut Vec<Problem>, key: &str, path: &Path) -> Option<AdminToken> {
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
