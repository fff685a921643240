//! What a config reload may change while the router serves, and what needs a restart.

use std::net::SocketAddr;

use super::parse::problem;
use super::{AdminToken, Config, Problem};

/// Whether two parts of a config differ, read as they print: every config type prints
/// every value it holds (an admin token prints redacted, so it is compared by value).
pub fn differs(a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug) -> bool {
    format!("{a:?}") != format!("{b:?}")
}

/// What a reload of `new` over the running `old` cannot apply without a restart, each with its
/// key: limits and the other server settings (all but the listeners' addresses and
/// `trust_forwarded_headers`),
/// the flag store's settings, `[shadow]`, `[access_log]`, `[fleet]`, and the names and order of the
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
        "server.keep_underscored_headers",
        &o.keep_underscored_headers,
        &n.keep_underscored_headers,
    );
    differ(
        "server.first_byte_timeout_ms",
        &o.first_byte_timeout,
        &n.first_byte_timeout,
    );
    differ(
        "server.max_connections",
        &o.max_connections,
        &n.max_connections,
    );
    differ(
        "server.max_uploads_per_address",
        &o.max_uploads_per_address,
        &n.max_uploads_per_address,
    );
    differ(
        "server.max_connections_per_address",
        &o.max_connections_per_address,
        &n.max_connections_per_address,
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
    differ(
        "server.read_token_file",
        &token(&o.read_token),
        &token(&n.read_token),
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
    differ("fleet", &old.fleet, &new.fleet);
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
