//! Step 5 of the hot path: counters and histograms with labels from closed sets only (routes
//! and targets from the config, status classes, error kinds), stored as flat arrays of
//! atomics indexed by those sets, so recording a request is a few relaxed adds and no lookup,
//! lock or allocation. Rendered as Prometheus text by the admin listener.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flag_store::{FlagState, ReloadResult};

use crate::streams::{StreamKind, Streams};

use crate::health::Health;
use flag_store::dynamodb::StoreReads;

/// Status classes, the `status` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusClass {
    Informational,
    Success,
    Redirection,
    ClientError,
    ServerError,
}

impl StatusClass {
    const ALL: [StatusClass; 5] = [
        StatusClass::Informational,
        StatusClass::Success,
        StatusClass::Redirection,
        StatusClass::ClientError,
        StatusClass::ServerError,
    ];

    pub fn of(status: http::StatusCode) -> StatusClass {
        match status.as_u16() {
            0..=199 => StatusClass::Informational,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirection,
            400..=499 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            StatusClass::Informational => "1xx",
            StatusClass::Success => "2xx",
            StatusClass::Redirection => "3xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
        }
    }
}

/// Upstream failures, the `kind` label of `switchyard_upstream_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// Could not connect (refused, unreachable, connect timeout).
    Connect,
    /// Connected, but no response headers within the route's timeout.
    Timeout,
    /// The connection failed before a response arrived.
    Reset,
    /// The response body failed or stalled after the headers were sent.
    Body,
    /// The TLS handshake failed: a certificate not valid for the name, expired, from an
    /// unknown authority, or refused.
    Tls,
}

impl UpstreamErrorKind {
    const ALL: [UpstreamErrorKind; 5] = [
        UpstreamErrorKind::Connect,
        UpstreamErrorKind::Timeout,
        UpstreamErrorKind::Reset,
        UpstreamErrorKind::Body,
        UpstreamErrorKind::Tls,
    ];

    fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorKind::Connect => "connect",
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::Reset => "reset",
            UpstreamErrorKind::Body => "body",
            UpstreamErrorKind::Tls => "tls",
        }
    }
}

/// Why a request was retried, the `reason` label of `switchyard_retries_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryReason {
    /// The first attempt could not connect.
    Connect,
    /// The first attempt's connection failed before any response byte.
    Reset,
    /// The first attempt's endpoint was seen down (health check, ejection) before it answered.
    EndpointDown,
    /// The first attempt had no answer within the route's `try_timeout_ms`.
    TryTimeout,
}

impl RetryReason {
    const ALL: [RetryReason; 4] = [
        RetryReason::Connect,
        RetryReason::Reset,
        RetryReason::EndpointDown,
        RetryReason::TryTimeout,
    ];

    fn as_str(self) -> &'static str {
        match self {
            RetryReason::Connect => "connect",
            RetryReason::Reset => "reset",
            RetryReason::EndpointDown => "endpoint_down",
            RetryReason::TryTimeout => "try_timeout",
        }
    }
}

/// Upper bounds of the latency buckets, in seconds: fine below a millisecond (a proxy's own
/// cost lives there), coarse up to a minute.
const BOUNDS_SECONDS: [f64; 26] = [
    0.00005, 0.0001, 0.00015, 0.0002, 0.0003, 0.0004, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003,
    0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Debug)]
struct Histogram {
    /// Per bucket (not cumulative); the last is +Inf.
    counts: [AtomicU64; BOUNDS_SECONDS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

fn bound_nanos() -> &'static [u64; BOUNDS_SECONDS.len()] {
    static NANOS: std::sync::OnceLock<[u64; BOUNDS_SECONDS.len()]> = std::sync::OnceLock::new();
    NANOS.get_or_init(|| BOUNDS_SECONDS.map(|s| (s * 1e9).round() as u64))
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let nanos = d.as_nanos().min(u128::from(u64::MAX)) as u64;
        let i = bound_nanos().partition_point(|&b| b < nanos);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// Metric families a part of the router keeps and renders itself, with [`header`].
pub trait Families: Send + Sync + std::fmt::Debug {
    fn render(&self, w: &mut String);
}

/// Label positions: routes and targets from the config, each followed by one `none` slot for
/// requests that matched no route or were answered by the router itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Labels {
    pub route: usize,
    pub target: usize,
}

#[derive(Debug)]
pub struct Metrics {
    routes: Vec<String>,
    targets: Vec<String>,
    requests: Box<[AtomicU64]>,
    durations: Box<[Histogram]>,
    upstream_errors: Box<[AtomicU64]>,
    /// HTTP/1.1 connections opened, by target: shared with each target's pools.
    upstream_connects: Box<[Arc<AtomicU64>]>,
    /// (route, from, to)
    failovers: Box<[AtomicU64]>,
    /// (target, reason)
    retries: Box<[AtomicU64]>,
    retry_budget_exhausted: Box<[AtomicU64]>,
    /// (route, target)
    pinned_unavailable: Box<[AtomicU64]>,
    connections_open: AtomicU64,
    connections_total: AtomicU64,
    flags: Arc<FlagState>,
    /// The current config's: a reload swaps it.
    health: arc_swap::ArcSwap<Health>,
    store_reads: Option<Arc<StoreReads>>,
    streams: Option<Arc<Streams>>,
    tls: std::sync::OnceLock<Arc<crate::tls::Certificates>>,
    /// Families rendered by their owners (the shadow comparisons, the access log).
    families: std::sync::Mutex<Vec<Arc<dyn Families>>>,
}

impl Metrics {
    pub fn new(
        routes: &[String],
        targets: &[String],
        flags: Arc<FlagState>,
        health: Arc<Health>,
    ) -> Self {
        let mut routes = routes.to_vec();
        routes.push("none".into());
        let mut targets = targets.to_vec();
        targets.push("none".into());
        let pairs = routes.len() * targets.len();
        let zeros = |n: usize| -> Box<[AtomicU64]> { (0..n).map(|_| AtomicU64::new(0)).collect() };
        Metrics {
            failovers: zeros(pairs * targets.len()),
            retries: zeros(targets.len() * RetryReason::ALL.len()),
            retry_budget_exhausted: zeros(targets.len()),
            pinned_unavailable: zeros(pairs),
            requests: (0..pairs * StatusClass::ALL.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            durations: (0..pairs).map(|_| Histogram::default()).collect(),
            upstream_errors: (0..targets.len() * UpstreamErrorKind::ALL.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            upstream_connects: (0..targets.len()).map(|_| Arc::default()).collect(),
            routes,
            targets,
            connections_open: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            flags,
            health: arc_swap::ArcSwap::new(health),
            store_reads: None,
            streams: None,
            tls: std::sync::OnceLock::new(),
            families: std::sync::Mutex::default(),
        }
    }

    /// Exports the long-lived exchanges bound to a side, and those closed by flips.
    pub fn with_streams(mut self, streams: Arc<Streams>) -> Self {
        self.streams = Some(streams);
        self
    }

    /// Exports the TLS listener's handshake failures and certificate reloads.
    /// The endpoints' health of a reloaded config.
    pub fn set_health(&self, health: Arc<Health>) {
        self.health.store(health);
    }

    pub fn set_tls(&self, certificates: Arc<crate::tls::Certificates>) {
        let _ = self.tls.set(certificates);
    }

    /// Exports families their owner renders (the shadow comparisons, the access log).
    pub fn add_families(&self, families: Arc<dyn Families>) {
        self.families.lock().expect("families").push(families);
    }

    /// Exports the reads a remote flag store makes.
    pub fn with_store_reads(mut self, reads: Option<Arc<StoreReads>>) -> Self {
        self.store_reads = reads;
        self
    }

    /// The `none` route slot.
    pub fn no_route(&self) -> usize {
        self.routes.len() - 1
    }

    /// The `none` target slot.
    pub fn no_target(&self) -> usize {
        self.targets.len() - 1
    }

    #[inline]
    pub fn record(&self, labels: Labels, class: StatusClass, elapsed: Duration) {
        let pair = labels.route * self.targets.len() + labels.target;
        self.requests[pair * StatusClass::ALL.len() + class as usize]
            .fetch_add(1, Ordering::Relaxed);
        self.durations[pair].observe(elapsed);
    }

    pub fn upstream_error(&self, target: usize, kind: UpstreamErrorKind) {
        self.upstream_errors[target * UpstreamErrorKind::ALL.len() + kind as usize]
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn failover(&self, route: usize, from: usize, to: usize) {
        let n = self.targets.len();
        self.failovers[(route * n + from) * n + to].fetch_add(1, Ordering::Relaxed);
    }

    pub fn retry(&self, target: usize, reason: RetryReason) {
        self.retries[target * RetryReason::ALL.len() + reason as usize]
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The counter of HTTP/1.1 connections opened to `target`, for its pools to count into.
    pub fn upstream_connects(&self, target: usize) -> Arc<AtomicU64> {
        self.upstream_connects[target].clone()
    }

    pub fn retry_budget_exhausted(&self, target: usize) {
        self.retry_budget_exhausted[target].fetch_add(1, Ordering::Relaxed);
    }

    pub fn pinned_unavailable(&self, labels: Labels) {
        self.pinned_unavailable[labels.route * self.targets.len() + labels.target]
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_opened(&self) {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Requests counted so far for (route, target, class), by name. For tests and tools.
    pub fn requests(&self, route: &str, target: &str, class: &str) -> u64 {
        let r = self.routes.iter().position(|n| n == route);
        let t = self.targets.iter().position(|n| n == target);
        let c = StatusClass::ALL.iter().position(|c| c.as_str() == class);
        match (r, t, c) {
            (Some(r), Some(t), Some(c)) => self.requests
                [(r * self.targets.len() + t) * StatusClass::ALL.len() + c]
                .load(Ordering::Relaxed),
            _ => 0,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let w = &mut out;
        header(
            w,
            "switchyard_requests_total",
            "counter",
            "Requests answered, by route, target and status class.",
        );
        for (r, route) in self.routes.iter().enumerate() {
            for (t, target) in self.targets.iter().enumerate() {
                for (c, class) in StatusClass::ALL.iter().enumerate() {
                    let n = self.requests
                        [(r * self.targets.len() + t) * StatusClass::ALL.len() + c]
                        .load(Ordering::Relaxed);
                    if n > 0 {
                        let _ = writeln!(
                            w,
                            "switchyard_requests_total{{route=\"{route}\",target=\"{target}\",status=\"{}\"}} {n}",
                            class.as_str()
                        );
                    }
                }
            }
        }
        header(
            w,
            "switchyard_request_duration_seconds",
            "histogram",
            "Time from request received to response body finished, by route and target.",
        );
        for (r, route) in self.routes.iter().enumerate() {
            for (t, target) in self.targets.iter().enumerate() {
                let h = &self.durations[r * self.targets.len() + t];
                let counts: Vec<u64> = h.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
                let total: u64 = counts.iter().sum();
                if total == 0 {
                    continue;
                }
                let labels = format!("route=\"{route}\",target=\"{target}\"");
                let mut cumulative = 0;
                for (i, bound) in BOUNDS_SECONDS.iter().enumerate() {
                    cumulative += counts[i];
                    let _ = writeln!(
                        w,
                        "switchyard_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
                    );
                }
                let _ = writeln!(
                    w,
                    "switchyard_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {total}"
                );
                let sum = h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
                let _ = writeln!(
                    w,
                    "switchyard_request_duration_seconds_sum{{{labels}}} {sum}"
                );
                let _ = writeln!(
                    w,
                    "switchyard_request_duration_seconds_count{{{labels}}} {total}"
                );
            }
        }
        header(
            w,
            "switchyard_upstream_errors_total",
            "counter",
            "Upstream failures by target and kind (connect, timeout, reset, body).",
        );
        for (t, target) in self.targets.iter().enumerate().take(self.targets.len() - 1) {
            for (k, kind) in UpstreamErrorKind::ALL.iter().enumerate() {
                let n = self.upstream_errors[t * UpstreamErrorKind::ALL.len() + k]
                    .load(Ordering::Relaxed);
                let _ = writeln!(
                    w,
                    "switchyard_upstream_errors_total{{target=\"{target}\",kind=\"{}\"}} {n}",
                    kind.as_str()
                );
            }
        }
        header(
            w,
            "switchyard_upstream_connections_opened_total",
            "counter",
            "HTTP/1.1 connections opened to the target's endpoints. Under steady load a pool that keeps up opens none.",
        );
        for (t, target) in self.targets.iter().enumerate().take(self.targets.len() - 1) {
            let n = self.upstream_connects[t].load(Ordering::Relaxed);
            let _ = writeln!(
                w,
                "switchyard_upstream_connections_opened_total{{target=\"{target}\"}} {n}"
            );
        }
        self.render_health(w);
        for families in self.families.lock().expect("families").iter() {
            families.render(w);
        }
        let snap = self.flags.load();
        header(
            w,
            "switchyard_flags_version",
            "gauge",
            "Flag store version of the snapshot in use.",
        );
        let _ = writeln!(w, "switchyard_flags_version {}", snap.version);
        header(
            w,
            "switchyard_flags_generation",
            "gauge",
            "Snapshots built by this process (0: none loaded yet).",
        );
        let _ = writeln!(w, "switchyard_flags_generation {}", snap.generation);
        header(
            w,
            "switchyard_flags_tenants",
            "gauge",
            "Tenants with a flag of their own in the snapshot.",
        );
        let _ = writeln!(w, "switchyard_flags_tenants {}", snap.len());
        header(
            w,
            "switchyard_flags_rejected_items",
            "gauge",
            "Flag items the store holds that the snapshot rejected.",
        );
        let _ = writeln!(w, "switchyard_flags_rejected_items {}", snap.rejected.len());
        drop(snap);
        header(
            w,
            "switchyard_flags_reloads_total",
            "counter",
            "Flag store polls that changed or failed, by result (ok, partial: some items rejected, error: store unreadable, refused: another or an older store).",
        );
        for result in ReloadResult::ALL {
            let _ = writeln!(
                w,
                "switchyard_flags_reloads_total{{result=\"{}\"}} {}",
                result.as_str(),
                self.flags.reloads(result)
            );
        }
        header(
            w,
            "switchyard_flags_age_seconds",
            "gauge",
            "Seconds since the flag store last confirmed the snapshot.",
        );
        let _ = writeln!(
            w,
            "switchyard_flags_age_seconds {:.3}",
            self.flags.age().as_secs_f64()
        );
        header(
            w,
            "switchyard_flags_store_refused",
            "gauge",
            "1 while the flag store is refused (another identity, or its version went back): routing on the last good snapshot until `switchyard flags adopt`.",
        );
        let _ = writeln!(
            w,
            "switchyard_flags_store_refused {}",
            u8::from(self.flags.store_refused().is_some())
        );
        if let Some(tls) = self.tls.get() {
            header(
                w,
                "switchyard_tls_handshake_failures_total",
                "counter",
                "TLS connections that did not get to HTTP, by reason (timeout, not_tls: plain HTTP or other bytes, unknown_name: SNI for no certificate, failed).",
            );
            for why in crate::tls::HandshakeFailure::ALL {
                let _ = writeln!(
                    w,
                    "switchyard_tls_handshake_failures_total{{reason=\"{}\"}} {}",
                    why.as_str(),
                    tls.failures(why)
                );
            }
            header(
                w,
                "switchyard_tls_certificate_expiry_seconds",
                "gauge",
                "Seconds until each served certificate expires (negative once it has), by the name the config gives it.",
            );
            for (name, seconds) in tls.expiries() {
                let _ = writeln!(
                    w,
                    "switchyard_tls_certificate_expiry_seconds{{certificate=\"{name}\"}} {seconds}"
                );
            }
            header(
                w,
                "switchyard_tls_certificate_reloads_total",
                "counter",
                "Certificate files reloaded after a change, by result (error: the certificate in use stays).",
            );
            for (ok, result) in [(true, "ok"), (false, "error")] {
                let _ = writeln!(
                    w,
                    "switchyard_tls_certificate_reloads_total{{result=\"{result}\"}} {}",
                    tls.reloads(ok)
                );
            }
        }
        if let Some(streams) = &self.streams {
            header(
                w,
                "switchyard_streams_open",
                "gauge",
                "Open tunnels and streaming responses of flag-routed tenants, which follow flips.",
            );
            let _ = writeln!(w, "switchyard_streams_open {}", streams.open());
            header(
                w,
                "switchyard_streams_closed_total",
                "counter",
                "Tunnels and streaming responses closed because their tenant moved away from their side, by kind.",
            );
            for kind in StreamKind::ALL {
                let _ = writeln!(
                    w,
                    "switchyard_streams_closed_total{{kind=\"{}\"}} {}",
                    kind.as_str(),
                    streams.closed(kind)
                );
            }
        }
        header(
            w,
            "switchyard_flags_out_of_band_total",
            "counter",
            "Tenants a reconcile found routing differently with no audit record to explain it (a write that bypassed Switchyard).",
        );
        let _ = writeln!(
            w,
            "switchyard_flags_out_of_band_total {}",
            self.flags.out_of_band()
        );
        if let Some(version) = self.flags.local_copy_version() {
            header(
                w,
                "switchyard_flags_local_copy_version",
                "gauge",
                "Flag store version the local copy on disk holds (behind switchyard_flags_version for about a second after a change).",
            );
            let _ = writeln!(w, "switchyard_flags_local_copy_version {version}");
        }
        if let Some(reads) = &self.store_reads {
            header(
                w,
                "switchyard_flags_store_reads_total",
                "counter",
                "Requests made to the flag store, by operation.",
            );
            for (op, n) in [
                ("get", &reads.gets),
                ("query", &reads.queries),
                ("scan", &reads.scans),
            ] {
                let _ = writeln!(
                    w,
                    "switchyard_flags_store_reads_total{{op=\"{op}\"}} {}",
                    n.load(Ordering::Relaxed)
                );
            }
            header(
                w,
                "switchyard_flags_store_items_read_total",
                "counter",
                "Items the flag store returned.",
            );
            let _ = writeln!(
                w,
                "switchyard_flags_store_items_read_total {}",
                reads.items.load(Ordering::Relaxed)
            );
        }
        header(
            w,
            "switchyard_connections_open",
            "gauge",
            "Client connections open now.",
        );
        let _ = writeln!(
            w,
            "switchyard_connections_open {}",
            self.connections_open.load(Ordering::Relaxed)
        );
        header(
            w,
            "switchyard_connections_total",
            "counter",
            "Client connections accepted.",
        );
        let _ = writeln!(
            w,
            "switchyard_connections_total {}",
            self.connections_total.load(Ordering::Relaxed)
        );
        out
    }
}

impl Metrics {
    fn render_health(&self, w: &mut String) {
        let current = self.health.load();
        let now = current.now_ms();
        let targets = &self.targets[..self.targets.len() - 1];
        let health = current.targets().iter().zip(targets).enumerate();
        header(
            w,
            "switchyard_endpoint_healthy",
            "gauge",
            "1 when the endpoint takes traffic (health checks pass and it is not ejected).",
        );
        for (t, (th, target)) in health.clone() {
            for (e, ep) in th.endpoints.iter().enumerate() {
                let up =
                    u8::from(current.endpoint_available(flag_store::TargetId(t as u16), e, now));
                let _ = writeln!(
                    w,
                    "switchyard_endpoint_healthy{{target=\"{target}\",endpoint=\"{}\"}} {up}",
                    ep.url
                );
            }
        }
        header(
            w,
            "switchyard_ejections_total",
            "counter",
            "Passive ejections of an endpoint after consecutive failures on live traffic.",
        );
        for (th, target) in current.targets().iter().zip(targets) {
            for ep in th.endpoints.iter() {
                let n = ep.ejections_total.load(Ordering::Relaxed);
                let _ = writeln!(
                    w,
                    "switchyard_ejections_total{{target=\"{target}\",endpoint=\"{}\"}} {n}",
                    ep.url
                );
            }
        }
        header(
            w,
            "switchyard_failovers_total",
            "counter",
            "Split-tenant requests sent away from the target their weights give, because it was unhealthy or failed.",
        );
        let n = self.targets.len();
        for (r, route) in self.routes.iter().enumerate() {
            for (f, from) in self.targets.iter().enumerate() {
                for (t, to) in self.targets.iter().enumerate() {
                    let v = self.failovers[(r * n + f) * n + t].load(Ordering::Relaxed);
                    if v > 0 {
                        let _ = writeln!(
                            w,
                            "switchyard_failovers_total{{route=\"{route}\",from=\"{from}\",to=\"{to}\"}} {v}"
                        );
                    }
                }
            }
        }
        header(
            w,
            "switchyard_retries_total",
            "counter",
            "Requests retried after their first attempt failed, by the failed target and why.",
        );
        for (t, target) in targets.iter().enumerate() {
            for (k, reason) in RetryReason::ALL.iter().enumerate() {
                let v = self.retries[t * RetryReason::ALL.len() + k].load(Ordering::Relaxed);
                let _ = writeln!(
                    w,
                    "switchyard_retries_total{{target=\"{target}\",reason=\"{}\"}} {v}",
                    reason.as_str()
                );
            }
        }
        header(
            w,
            "switchyard_retry_budget_exhausted_total",
            "counter",
            "Retries not made because the target's retry budget was spent.",
        );
        for (t, target) in targets.iter().enumerate() {
            let v = self.retry_budget_exhausted[t].load(Ordering::Relaxed);
            let _ = writeln!(
                w,
                "switchyard_retry_budget_exhausted_total{{target=\"{target}\"}} {v}"
            );
        }
        header(
            w,
            "switchyard_pinned_unavailable_total",
            "counter",
            "Requests of pinned tenants (or fixed routes) answered 503 because their only target was down.",
        );
        for (r, route) in self.routes.iter().enumerate() {
            for (t, target) in targets.iter().enumerate() {
                let v = self.pinned_unavailable[r * n + t].load(Ordering::Relaxed);
                if v > 0 {
                    let _ = writeln!(
                        w,
                        "switchyard_pinned_unavailable_total{{route=\"{route}\",target=\"{target}\"}} {v}"
                    );
                }
            }
        }
    }
}

pub(crate) fn header(w: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(w, "# HELP {name} {help}");
    let _ = writeln!(w, "# TYPE {name} {kind}");
}

/// A family of one value without labels.
pub(crate) fn single(w: &mut String, (name, kind, help): (&str, &str, &str), value: u64) {
    header(w, name, kind, help);
    let _ = writeln!(w, "{name} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use flag_store::Targets;

    #[test]
    fn histogram_buckets_resolve_below_a_millisecond() {
        let m = Metrics::new(
            &["api".into()],
            &["new".into()],
            FlagState::new(Targets::new(["new"])),
            Health::new(&[]),
        );
        let labels = Labels {
            route: 0,
            target: 0,
        };
        m.record(labels, StatusClass::Success, Duration::from_micros(120));
        m.record(labels, StatusClass::Success, Duration::from_micros(700));
        m.record(labels, StatusClass::ServerError, Duration::from_secs(90));
        let text = m.render();
        assert!(
            text.contains(
                "switchyard_requests_total{route=\"api\",target=\"new\",status=\"2xx\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "switchyard_requests_total{route=\"api\",target=\"new\",status=\"5xx\"} 1"
            )
        );
        assert!(text.contains("le=\"0.0001\"} 0"));
        assert!(text.contains("le=\"0.00015\"} 1"));
        assert!(text.contains("le=\"0.00075\"} 2"));
        assert!(text.contains("le=\"60\"} 2"));
        assert!(text.contains("le=\"+Inf\"} 3"));
        assert_eq!(m.requests("api", "new", "2xx"), 2);
        m.upstream_connects(0).fetch_add(3, Ordering::Relaxed);
        assert!(
            m.render()
                .contains("switchyard_upstream_connections_opened_total{target=\"new\"} 3")
        );
    }
}
