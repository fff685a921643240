//! Step 5 of the hot path, on the `prometheus` crate: typed families in one registry, with
//! labels from closed sets only (routes and targets from the config, status classes, error
//! kinds). Every series the hot path records into is resolved once, at start, into a flat
//! array indexed by those sets, so recording a request is a few atomic adds and no lookup,
//! lock or allocation. State other parts keep (flags, health, TLS, streams, the store's
//! reads, shadows, the access log, config reloads) is read into families at scrape time
//! ([`Families`]). The admin listener serves the registry through the text encoder.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use flag_store::dynamodb::StoreReads;
use flag_store::{FlagState, ReloadResult};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    CounterVec, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, Opts, Registry,
};

use crate::health::Health;
use crate::streams::{StreamKind, Streams};

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

/// One target's requests so far, summed over routes ([`Metrics::target_totals`]).
#[derive(Clone, Debug, Default)]
pub struct TargetTotals {
    pub target: String,
    pub requests: u64,
    /// Answered 5xx (the router's own 502, 503 and 504 included).
    pub server_errors: u64,
    /// Cumulative counts of the duration histogram, one per bound of [`latency_bounds`].
    pub buckets: Vec<u64>,
}

/// The upper bounds of the request duration histogram's buckets, in seconds.
pub fn latency_bounds() -> &'static [f64] {
    &BOUNDS_SECONDS
}

/// Families a part of the router keeps the state of, read at every scrape.
pub trait Families: Send + Sync + std::fmt::Debug {
    fn collect(&self, out: &mut Vec<MetricFamily>);
}

/// One family built at scrape time: a counter or a gauge with its label names, filled with
/// [`Family::set`] and handed to the registry's scrape with [`Family::into`].
pub struct Family(FamilyVec);

enum FamilyVec {
    Counter(CounterVec),
    Gauge(GaugeVec),
}

impl Family {
    pub fn counter(name: &str, help: &str, labels: &[&str]) -> Family {
        let vec = CounterVec::new(Opts::new(name, help), labels).expect("a valid family");
        Family(FamilyVec::Counter(vec))
    }

    pub fn gauge(name: &str, help: &str, labels: &[&str]) -> Family {
        let vec = GaugeVec::new(Opts::new(name, help), labels).expect("a valid family");
        Family(FamilyVec::Gauge(vec))
    }

    /// The series for `labels` (one value each, in the family's order) reads `value`.
    pub fn set(&self, labels: &[&str], value: f64) {
        match &self.0 {
            FamilyVec::Counter(v) => v.with_label_values(labels).inc_by(value.max(0.0)),
            FamilyVec::Gauge(v) => v.with_label_values(labels).set(value),
        }
    }

    pub fn into(self, out: &mut Vec<MetricFamily>) {
        match self.0 {
            FamilyVec::Counter(v) => out.extend(v.collect()),
            FamilyVec::Gauge(v) => out.extend(v.collect()),
        }
    }
}

/// A family of one value without labels.
pub fn single(out: &mut Vec<MetricFamily>, (name, kind, help): (&str, &str, &str), value: f64) {
    let family = match kind {
        "gauge" => Family::gauge(name, help, &[]),
        _ => Family::counter(name, help, &[]),
    };
    family.set(&[], value);
    family.into(out);
}

/// Label positions: routes and targets from the config, each followed by one `none` slot for
/// requests that matched no route or were answered by the router itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Labels {
    pub route: usize,
    pub target: usize,
}

/// Families whose series by route, target and status are many and mostly zero: only the
/// series that counted something are served. The other families serve every real series
/// from the start (so a rate is defined before the first event).
const SPARSE: [&str; 2] = [
    "switchyard_requests_total",
    "switchyard_request_duration_seconds",
];

/// Whether a series that has counted nothing is left out: in a sparse family, or for a slot
/// that names no route or target (`none`), or a failover to the target it came from.
fn left_out_when_zero(family: &str, m: &prometheus::proto::Metric) -> bool {
    let labels = m.get_label();
    let value = |name: &str| {
        (labels.iter())
            .find(|l| l.name() == name)
            .map(|l| l.value())
    };
    SPARSE.contains(&family)
        || (labels.iter())
            .any(|l| matches!(l.name(), "route" | "target" | "from" | "to") && l.value() == "none")
        || value("from").is_some_and(|from| value("to") == Some(from))
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    routes: Vec<String>,
    targets: Vec<String>,
    /// (route, target, class)
    requests: Box<[IntCounter]>,
    /// (route, target)
    durations: Box<[Histogram]>,
    /// (target, kind)
    upstream_errors: Box<[IntCounter]>,
    /// (route, from, to)
    failovers: Box<[IntCounter]>,
    /// (target, reason)
    retries: Box<[IntCounter]>,
    retry_budget_exhausted: Box<[IntCounter]>,
    /// (route, target)
    pinned_unavailable: Box<[IntCounter]>,
    connections_open: IntGauge,
    connections_total: IntCounter,
    state: Arc<State>,
    /// The evidence of active ramps, published with the presence record.
    pub ramps: super::ramp::RampEvidence,
}

/// What the scrape reads from the rest of the router.
#[derive(Debug)]
struct State {
    /// The config's targets (without `none`).
    targets: Vec<String>,
    /// HTTP/1.1 connections opened, by target: shared with each target's pools.
    upstream_connects: Box<[Arc<AtomicU64>]>,
    flags: Arc<FlagState>,
    /// The current config's: a reload swaps it.
    health: arc_swap::ArcSwap<Health>,
    store_reads: OnceLock<Arc<StoreReads>>,
    streams: OnceLock<Arc<Streams>>,
    tls: OnceLock<Arc<crate::tls::Certificates>>,
    /// Families kept by their owners (the shadow comparisons, the access log, reloads).
    families: Mutex<Vec<Arc<dyn Families>>>,
}

/// Registered without descriptors: its families are read afresh at every scrape.
struct Scraped(Arc<State>);

impl Collector for Scraped {
    fn desc(&self) -> Vec<&Desc> {
        Vec::new()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut out = Vec::new();
        self.0.collect(&mut out);
        out
    }
}

/// Registers `collector` and gives it back (a metric handle shares its state with the copy
/// the registry holds).
fn registered<C: Collector + Clone + 'static>(registry: &Registry, collector: C) -> C {
    registry
        .register(Box::new(collector.clone()))
        .expect("each family is registered once");
    collector
}

/// The series of `family` for each label prefix followed by each of `last` (or the prefix
/// alone when `last` is empty), in that order: the flat array the hot path indexes as
/// `prefix * last.len() + i`.
fn handles<T: prometheus::core::MetricVecBuilder>(
    family: &prometheus::core::MetricVec<T>,
    prefixes: &[Vec<&str>],
    last: &[&str],
) -> Box<[T::M]> {
    let mut all = Vec::with_capacity(prefixes.len() * last.len().max(1));
    for prefix in prefixes {
        if last.is_empty() {
            all.push(family.with_label_values(prefix));
        }
        for value in last {
            let mut labels = prefix.clone();
            labels.push(value);
            all.push(family.with_label_values(&labels));
        }
    }
    all.into_boxed_slice()
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
        let registry = Registry::new();
        let counters = |name: &str, help: &str, labels: &[&str]| {
            registered(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("a valid family"),
            )
        };
        let requests = counters(
            "switchyard_requests_total",
            "Requests answered, by route, target and status class.",
            &["route", "target", "status"],
        );
        let durations = registered(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "switchyard_request_duration_seconds",
                    "Time from request received to response body finished, by route and target.",
                )
                .buckets(BOUNDS_SECONDS.to_vec()),
                &["route", "target"],
            )
            .expect("a valid family"),
        );
        let upstream_errors = counters(
            "switchyard_upstream_errors_total",
            "Upstream failures by target and kind (connect, timeout, reset, body, tls).",
            &["target", "kind"],
        );
        let failovers = counters(
            "switchyard_failovers_total",
            "Split-tenant requests sent away from the target their weights give, because it was unhealthy or failed.",
            &["route", "from", "to"],
        );
        let retries = counters(
            "switchyard_retries_total",
            "Requests retried after their first attempt failed, by the failed target and why.",
            &["target", "reason"],
        );
        let retry_budget_exhausted = counters(
            "switchyard_retry_budget_exhausted_total",
            "Retries not made because the target's retry budget was spent.",
            &["target"],
        );
        let pinned_unavailable = counters(
            "switchyard_pinned_unavailable_total",
            "Requests of pinned tenants (or fixed routes) answered 503 because their only target was down.",
            &["route", "target"],
        );
        let connections_open = registered(
            &registry,
            IntGauge::new(
                "switchyard_connections_open",
                "Client connections open now.",
            )
            .expect("a valid family"),
        );
        let connections_total = registered(
            &registry,
            IntCounter::new(
                "switchyard_connections_total",
                "Client connections accepted.",
            )
            .expect("a valid family"),
        );
        let each_target: Vec<Vec<&str>> = targets.iter().map(|t| vec![t.as_str()]).collect();
        let pairs: Vec<Vec<&str>> = (routes.iter())
            .flat_map(|r| targets.iter().map(move |t| vec![r.as_str(), t.as_str()]))
            .collect();
        let target_names: Vec<&str> = targets.iter().map(String::as_str).collect();
        let state = Arc::new(State {
            targets: targets[..targets.len() - 1].to_vec(),
            upstream_connects: (0..targets.len()).map(|_| Arc::default()).collect(),
            flags,
            health: arc_swap::ArcSwap::new(health),
            store_reads: OnceLock::new(),
            streams: OnceLock::new(),
            tls: OnceLock::new(),
            families: Mutex::default(),
        });
        registry
            .register(Box::new(Scraped(state.clone())))
            .expect("one scraped collector");
        Metrics {
            ramps: Default::default(),
            requests: handles(
                &requests,
                &pairs,
                &StatusClass::ALL.map(StatusClass::as_str),
            ),
            durations: handles(&durations, &pairs, &[]),
            upstream_errors: handles(
                &upstream_errors,
                &each_target,
                &UpstreamErrorKind::ALL.map(UpstreamErrorKind::as_str),
            ),
            failovers: handles(&failovers, &pairs, &target_names),
            retries: handles(
                &retries,
                &each_target,
                &RetryReason::ALL.map(RetryReason::as_str),
            ),
            retry_budget_exhausted: handles(&retry_budget_exhausted, &each_target, &[]),
            pinned_unavailable: handles(&pinned_unavailable, &pairs, &[]),
            connections_open,
            connections_total,
            registry,
            routes,
            targets,
            state,
        }
    }

    pub fn with_streams(self, streams: Arc<Streams>) -> Self {
        let _ = self.state.streams.set(streams);
        self
    }

    /// The endpoints' health of a reloaded config.
    pub fn set_health(&self, health: Arc<Health>) {
        self.state.health.store(health);
    }

    pub fn set_tls(&self, certificates: Arc<crate::tls::Certificates>) {
        let _ = self.state.tls.set(certificates);
    }

    /// Families another part keeps, served from now on.
    pub fn add_families(&self, families: Arc<dyn Families>) {
        self.state.families.lock().expect("families").push(families);
    }

    pub fn with_store_reads(self, reads: Option<Arc<StoreReads>>) -> Self {
        if let Some(reads) = reads {
            let _ = self.state.store_reads.set(reads);
        }
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
        self.requests[pair * StatusClass::ALL.len() + class as usize].inc();
        self.durations[pair].observe(elapsed.as_secs_f64());
    }

    pub fn upstream_error(&self, target: usize, kind: UpstreamErrorKind) {
        self.upstream_errors[target * UpstreamErrorKind::ALL.len() + kind as usize].inc();
    }

    pub fn failover(&self, route: usize, from: usize, to: usize) {
        let n = self.targets.len();
        self.failovers[(route * n + from) * n + to].inc();
    }

    pub fn retry(&self, target: usize, reason: RetryReason) {
        self.retries[target * RetryReason::ALL.len() + reason as usize].inc();
    }

    /// The counter of HTTP/1.1 connections opened to `target`, for its pools to count into.
    pub fn upstream_connects(&self, target: usize) -> Arc<AtomicU64> {
        self.state.upstream_connects[target].clone()
    }

    pub fn retry_budget_exhausted(&self, target: usize) {
        self.retry_budget_exhausted[target].inc();
    }

    pub fn pinned_unavailable(&self, labels: Labels) {
        self.pinned_unavailable[labels.route * self.targets.len() + labels.target].inc();
    }

    pub fn connection_opened(&self) {
        self.connections_open.inc();
        self.connections_total.inc();
    }

    pub fn connection_closed(&self) {
        self.connections_open.dec();
    }

    /// Each target's totals so far, summed over routes: what the console's sampler reads
    /// every few seconds (never the hot path). The last slot (`none`) is left out.
    pub fn target_totals(&self) -> Vec<TargetTotals> {
        let n = self.targets.len();
        let classes = StatusClass::ALL.len();
        (0..n - 1)
            .map(|t| {
                let mut totals = TargetTotals {
                    target: self.targets[t].clone(),
                    requests: 0,
                    server_errors: 0,
                    buckets: vec![0; BOUNDS_SECONDS.len()],
                };
                for r in 0..self.routes.len() {
                    let pair = r * n + t;
                    for c in 0..classes {
                        totals.requests += self.requests[pair * classes + c].get();
                    }
                    totals.server_errors +=
                        self.requests[pair * classes + StatusClass::ServerError as usize].get();
                    let histogram = prometheus::core::Metric::metric(&self.durations[pair]);
                    let buckets = histogram.get_histogram().get_bucket();
                    for (sum, b) in totals.buckets.iter_mut().zip(buckets) {
                        *sum += b.cumulative_count();
                    }
                }
                totals
            })
            .collect()
    }

    /// Requests counted so far for (route, target, class), by name. For tests and tools.
    pub fn requests(&self, route: &str, target: &str, class: &str) -> u64 {
        let r = self.routes.iter().position(|n| n == route);
        let t = self.targets.iter().position(|n| n == target);
        let c = StatusClass::ALL.iter().position(|c| c.as_str() == class);
        match (r, t, c) {
            (Some(r), Some(t), Some(c)) => {
                self.requests[(r * self.targets.len() + t) * StatusClass::ALL.len() + c].get()
            }
            _ => 0,
        }
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        let mut families = self.registry.gather();
        for family in &mut families {
            let name = family.name().to_owned();
            let mut metrics = family.take_metric();
            metrics.retain(|m| {
                let counted = m.get_counter().get_value() > 0.0
                    || m.get_gauge().get_value() != 0.0
                    || m.get_histogram().get_sample_count() > 0;
                counted || !left_out_when_zero(&name, m)
            });
            family.set_metric(metrics);
        }
        // The text encoder refuses a family with no series.
        families.retain(|f| !f.get_metric().is_empty());
        let mut out = String::with_capacity(16 * 1024);
        prometheus::TextEncoder::new()
            .encode_utf8(&families, &mut out)
            .expect("the registry's families encode");
        out
    }
}

impl State {
    fn collect(&self, out: &mut Vec<MetricFamily>) {
        let targets = &self.targets;
        let connects = Family::counter(
            "switchyard_upstream_connections_opened_total",
            "HTTP/1.1 connections opened to the target's endpoints. Under steady load a pool that keeps up opens none.",
            &["target"],
        );
        for (target, n) in targets.iter().zip(self.upstream_connects.iter()) {
            connects.set(&[target], n.load(Ordering::Relaxed) as f64);
        }
        connects.into(out);
        self.collect_health(out);
        self.collect_flags(out);
        if let Some(tls) = self.tls.get() {
            let failures = Family::counter(
                "switchyard_tls_handshake_failures_total",
                "TLS connections that did not get to HTTP, by reason (timeout, not_tls: plain HTTP or other bytes, unknown_name: SNI for no certificate, failed).",
                &["reason"],
            );
            for why in crate::tls::HandshakeFailure::ALL {
                failures.set(&[why.as_str()], tls.failures(why) as f64);
            }
            failures.into(out);
            let expiry = Family::gauge(
                "switchyard_tls_certificate_expiry_seconds",
                "Seconds until each served certificate expires (negative once it has), by the name the config gives it.",
                &["certificate"],
            );
            for (name, seconds) in tls.expiries() {
                expiry.set(&[name], seconds as f64);
            }
            expiry.into(out);
            let reloads = Family::counter(
                "switchyard_tls_certificate_reloads_total",
                "Certificate files reloaded after a change, by result (error: the certificate in use stays).",
                &["result"],
            );
            for (ok, result) in [(true, "ok"), (false, "error")] {
                reloads.set(&[result], tls.reloads(ok) as f64);
            }
            reloads.into(out);
        }
        if let Some(streams) = self.streams.get() {
            single(
                out,
                (
                    "switchyard_streams_open",
                    "gauge",
                    "Open tunnels and streaming responses of flag-routed tenants, which follow flips.",
                ),
                streams.open() as f64,
            );
            let closed = Family::counter(
                "switchyard_streams_closed_total",
                "Tunnels and streaming responses closed because their tenant moved away from their side, by kind.",
                &["kind"],
            );
            for kind in StreamKind::ALL {
                closed.set(&[kind.as_str()], streams.closed(kind) as f64);
            }
            closed.into(out);
        }
        if let Some(reads) = self.store_reads.get() {
            let ops = Family::counter(
                "switchyard_flags_store_reads_total",
                "Requests made to the flag store, by operation.",
                &["op"],
            );
            for (op, n) in [
                ("get", &reads.gets),
                ("query", &reads.queries),
                ("scan", &reads.scans),
            ] {
                ops.set(&[op], n.load(Ordering::Relaxed) as f64);
            }
            ops.into(out);
            single(
                out,
                (
                    "switchyard_flags_store_items_read_total",
                    "counter",
                    "Items the flag store returned.",
                ),
                reads.items.load(Ordering::Relaxed) as f64,
            );
        }
        for families in self.families.lock().expect("families").iter() {
            families.collect(out);
        }
    }

    fn collect_flags(&self, out: &mut Vec<MetricFamily>) {
        let snap = self.flags.load();
        for (name, help, value) in [
            (
                "switchyard_flags_version",
                "Flag store version of the snapshot in use.",
                snap.version as f64,
            ),
            (
                "switchyard_flags_generation",
                "Snapshots built by this process (0: none loaded yet).",
                snap.generation as f64,
            ),
            (
                "switchyard_flags_tenants",
                "Tenants with a flag of their own in the snapshot.",
                snap.len() as f64,
            ),
            (
                "switchyard_flags_rejected_items",
                "Flag items the store holds that the snapshot rejected.",
                snap.rejected.len() as f64,
            ),
            (
                "switchyard_flags_age_seconds",
                "Seconds since the flag store last confirmed the snapshot.",
                self.flags.age().as_secs_f64(),
            ),
            (
                "switchyard_flags_store_refused",
                "1 while the flag store is refused (another identity, or its version went back): routing on the last good snapshot until `switchyard flags adopt`.",
                f64::from(u8::from(self.flags.store_refused().is_some())),
            ),
        ] {
            single(out, (name, "gauge", help), value);
        }
        let evacuated = Family::gauge(
            "switchyard_target_evacuated",
            "1 while a target is evacuated (`switchyard flags evacuate`): its split tenants' share and, when the evacuation says so, its pinned tenants go elsewhere.",
            &["target"],
        );
        for (id, name) in snap.targets().iter() {
            evacuated.set(&[name], f64::from(u8::from(snap.evacuation(id).is_some())));
        }
        evacuated.into(out);
        let ramps = Family::gauge(
            "switchyard_ramps",
            "Ramps in the flag store, by state (running, paused, completed, rolled_back, aborted): `switchyard ramp status` says which and why.",
            &["state"],
        );
        for state in flag_store::ramp::RampState::ALL {
            let n = (snap.ramps().iter())
                .filter(|r| r.item.state == state)
                .count();
            ramps.set(&[state.as_str()], n as f64);
        }
        ramps.into(out);
        drop(snap);
        let reloads = Family::counter(
            "switchyard_flags_reloads_total",
            "Flag store polls that changed or failed, by result (ok, partial: some items rejected, error: store unreadable, refused: another or an older store).",
            &["result"],
        );
        for result in ReloadResult::ALL {
            reloads.set(&[result.as_str()], self.flags.reloads(result) as f64);
        }
        reloads.into(out);
        single(
            out,
            (
                "switchyard_flags_out_of_band_total",
                "counter",
                "Tenants a reconcile found routing differently with no audit record to explain it (a write that bypassed Switchyard).",
            ),
            self.flags.out_of_band() as f64,
        );
        if let Some(version) = self.flags.local_copy_version() {
            single(
                out,
                (
                    "switchyard_flags_local_copy_version",
                    "gauge",
                    "Flag store version the local copy on disk holds (behind switchyard_flags_version for about a second after a change).",
                ),
                version as f64,
            );
        }
    }

    fn collect_health(&self, out: &mut Vec<MetricFamily>) {
        let current = self.health.load();
        let now = current.now_ms();
        let healthy = Family::gauge(
            "switchyard_endpoint_healthy",
            "1 when the endpoint takes traffic (health checks pass and it is not ejected).",
            &["target", "endpoint"],
        );
        let ejections = Family::counter(
            "switchyard_ejections_total",
            "Passive ejections of an endpoint after consecutive failures on live traffic.",
            &["target", "endpoint"],
        );
        for (t, (th, target)) in current.targets().iter().zip(&self.targets).enumerate() {
            for (e, ep) in th.endpoints.iter().enumerate() {
                let id = flag_store::TargetId(t as u16);
                let up = current.endpoint_available(id, e, now);
                healthy.set(&[target, &ep.url], f64::from(u8::from(up)));
                let n = ep.ejections_total.load(Ordering::Relaxed);
                ejections.set(&[target, &ep.url], n as f64);
            }
        }
        healthy.into(out);
        ejections.into(out);
    }
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
                "switchyard_requests_total{route=\"api\",status=\"2xx\",target=\"new\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "switchyard_requests_total{route=\"api\",status=\"5xx\",target=\"new\"} 1"
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
