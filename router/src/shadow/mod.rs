//! Shadow traffic: evidence that a side answers a tenant as its primary does, before the
//! tenant moves there.
//!
//! A tenant's flag may name a shadow target and a share of requests. For a sampled request
//! of an allowed method (GET, HEAD, OPTIONS, plus what the route allows), the proxy keeps a
//! copy of the request ([`RequestCopy`]) and taps the primary's response as it streams to the client
//! ([`Tap`]). Only once the primary's answer has been sent whole is the comparison queued for
//! the shadow target, on a queue bounded in entries and bytes, with a bounded number in flight
//! per target: when full, it is dropped and counted. The client never waits on a shadow and
//! never sees its answer. Shadows are sent and compared on a thread of their own at the lowest
//! CPU priority (`SCHED_IDLE`), with clients of their own: a router whose cores are busy with
//! clients gives shadows only what is left (their queue fills and drops), so shadowing never
//! takes a client's CPU, and a client's request never waits on a connection a shadow opened.
//!
//! Each job sends the copy to the shadow target and compares the answers: the status, the
//! configured headers, then the body (a hash of every byte; for JSON, the canonical form,
//! field by field, leaving out configured noisy fields). Like Diffy, a sample of requests is
//! also sent to the primary a second time: fields that differ between two answers of the
//! primary itself (timestamps, request ids) are learned per route as noise and not counted.
//!
//! Results are counted per route and shadow target (never per tenant as a label), and a
//! bounded record per tenant keeps its match rate and its most recent mismatches, for the
//! admin API, `switchyard shadow report` and the plan of `flags apply`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use flag_store::{Shadow, TargetId};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt as _;
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use crate::body::{BodyCopy, RequestBody};
use crate::config::{Protocol, ShadowConfig};
use crate::health::Health;
use crate::observe::metrics::Family;
use crate::policy::Route;
use crate::upstream::Upstream;

pub mod capture;
pub mod compare;
pub mod fleet;

pub use capture::{RequestCopy, Tap};
pub use compare::{Answer, Captured, MismatchKind, Verdict};
use compare::{Capture, Noise, REPORT_BODY_BYTES, compare, diff_json, excerpt, json_of, says_json};

/// Marks the requests the router sends to a shadow target (and the repeats it sends to the
/// primary to learn noise), so the applications can tell them apart.
pub static X_SWITCHYARD_SHADOW: HeaderName = HeaderName::from_static("x-switchyard-shadow");

/// Why a sampled request was not compared, the `reason` label of
/// `switchyard_shadow_skipped_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// The method is not one the route copies (only GET, HEAD, OPTIONS by default).
    Method,
    /// The request body is larger than `shadow.max_body_bytes`.
    BodyTooLarge,
    /// The shadow target's queue was full.
    QueueFull,
    /// The primary's answer did not complete (the client left, the body failed).
    PrimaryIncomplete,
}

impl SkipReason {
    const ALL: [SkipReason; 4] = [
        SkipReason::Method,
        SkipReason::BodyTooLarge,
        SkipReason::QueueFull,
        SkipReason::PrimaryIncomplete,
    ];

    fn as_str(self) -> &'static str {
        match self {
            SkipReason::Method => "method",
            SkipReason::BodyTooLarge => "body_too_large",
            SkipReason::QueueFull => "queue_full",
            SkipReason::PrimaryIncomplete => "primary_incomplete",
        }
    }
}

/// One recent mismatch of a tenant, as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Mismatch {
    pub at: String,
    pub request: String,
    pub route: String,
    pub target: String,
    pub kind: MismatchKind,
    /// The first difference: the status pair, a header, a JSON field or a byte offset.
    pub detail: String,
    pub primary_status: u16,
    pub shadow_status: Option<u16>,
    pub primary_body: String,
    pub shadow_body: String,
}

/// A tenant's shadow results.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TenantReport {
    pub tenant: String,
    pub compared: u64,
    pub matched: u64,
    /// `matched / compared`, when anything was compared.
    pub match_rate: Option<f64>,
    pub recent_mismatches: Vec<Mismatch>,
}

#[derive(Debug, Default)]
struct TenantRecord {
    compared: u64,
    matched: u64,
    last_seen: u64,
    recent: VecDeque<Mismatch>,
}

/// Per-tenant records, bounded: the least recently compared tenant makes room for a new one.
#[derive(Debug, Default)]
struct Records {
    tenants: HashMap<Arc<str>, TenantRecord>,
    clock: u64,
}

/// Learned noisy fields kept per route, at most.
const MAX_NOISE_FIELDS: usize = 1_000;

/// Rough bytes of a queued comparison beside its bodies: the copy's headers and the rest.
const JOB_OVERHEAD_BYTES: u64 = 1_024;

type Client = hyper_util::client::legacy::Client<crate::tls::Connector, RequestBody>;

/// A comparison waiting for its turn, with the bytes it holds.
type Queued = (RequestCopy, Answer, u64);

/// Takes one target's comparisons off its queue, at most `concurrency` at a time.
async fn dispatcher(
    mut rx: mpsc::Receiver<Queued>,
    shadows: std::sync::Weak<Shadows>,
    target: usize,
    concurrency: usize,
) {
    let permits = Arc::new(Semaphore::new(concurrency));
    while let Some((copy, primary, bytes)) = rx.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let Some(shadows) = shadows.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            shadows.run(copy, primary).await;
            shadows.held[target].fetch_sub(bytes, Ordering::AcqRel);
            drop(permit);
        });
    }
}

/// The shadow thread runs under `SCHED_IDLE`, below even nice 19: the kernel runs it only when
/// no client's work is waiting, and a proxy thread that wakes takes the core back at once (a
/// nice-19 thread still runs out its time slice first, which showed in the clients' p99).
fn lower_priority() {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    if let Err(e) = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle) {
        tracing::warn!(error = ?e, "cannot lower the shadow thread's CPU priority");
    }
}

/// The shadow engine: per target queues and workers, the comparisons, counters and records.
#[derive(Debug)]
pub struct Shadows {
    config: ShadowConfig,
    routes: Vec<String>,
    targets: Vec<String>,
    queues: Vec<mpsc::Sender<Queued>>,
    /// Bytes each target's queued and running comparisons hold (bounded by `max_queued_bytes`).
    held: Box<[AtomicU64]>,
    /// Where copies go: the current config's (a reload swaps it).
    sides: arc_swap::ArcSwap<Sides>,
    /// (route, target)
    compared: Box<[AtomicU64]>,
    matched: Box<[AtomicU64]>,
    /// (route, target, kind)
    mismatched: Box<[AtomicU64]>,
    /// (route, target, reason)
    skipped: Box<[AtomicU64]>,
    /// Requests sent to the primary a second time to learn noise, by route.
    repeats: Box<[AtomicU64]>,
    records: Mutex<Records>,
    noise: Mutex<Vec<Noise>>,
}

/// The targets' endpoints a copy may go to, and how it gets there.
#[derive(Debug)]
struct Sides {
    upstreams: Arc<[Upstream]>,
    /// The shadow thread's own clients, by target.
    clients: Vec<Client>,
    health: Arc<Health>,
}

impl Sides {
    fn new(
        targets: &[crate::config::TargetConfig],
        upstreams: Arc<[Upstream]>,
        health: Arc<Health>,
    ) -> Self {
        let clients = (targets.iter().zip(upstreams.iter()))
            .map(|(t, u)| crate::upstream::client_for(t, u.connector().clone()))
            .collect();
        Sides {
            upstreams,
            clients,
            health,
        }
    }
}

impl Shadows {
    /// Starts the shadow thread, with one dispatcher per target (a shadow may name any).
    pub fn start(
        config: ShadowConfig,
        routes: &[Route],
        targets: &[crate::config::TargetConfig],
        upstreams: Arc<[Upstream]>,
        health: Arc<Health>,
    ) -> Arc<Self> {
        let zeros = |n: usize| -> Box<[AtomicU64]> { (0..n).map(|_| AtomicU64::new(0)).collect() };
        let pairs = routes.len() * upstreams.len();
        let mut receivers = Vec::new();
        let queues = (0..upstreams.len())
            .map(|_| {
                let (tx, rx) = mpsc::channel(config.queue);
                receivers.push(rx);
                tx
            })
            .collect();
        let shadows = Arc::new(Shadows {
            routes: routes.iter().map(|r| r.name.clone()).collect(),
            targets: upstreams.iter().map(|u| u.name.clone()).collect(),
            queues,
            held: zeros(upstreams.len()),
            compared: zeros(pairs),
            matched: zeros(pairs),
            mismatched: zeros(pairs * MismatchKind::ALL.len()),
            skipped: zeros(pairs * SkipReason::ALL.len()),
            repeats: zeros(routes.len()),
            records: Mutex::default(),
            noise: Mutex::new(routes.iter().map(|_| Noise::default()).collect()),
            sides: arc_swap::ArcSwap::from_pointee(Sides::new(targets, upstreams, health)),
            config,
        });
        // The dispatchers hold the engine weakly: they end when the router drops it.
        let weak = Arc::downgrade(&shadows);
        let concurrency = shadows.config.concurrency;
        let dispatch = move || async move {
            let mut all = tokio::task::JoinSet::new();
            for (target, rx) in receivers.into_iter().enumerate() {
                all.spawn(dispatcher(rx, weak.clone(), target, concurrency));
            }
            while all.join_next().await.is_some() {}
        };
        let started = std::thread::Builder::new()
            .name("switchyard-shadow".into())
            .spawn(move || {
                lower_priority();
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(dispatch()),
                    Err(e) => tracing::warn!(error = %e, "cannot start the shadow thread's runtime; shadows are not compared"),
                }
            });
        if let Err(e) = started {
            tracing::warn!(error = %e, "cannot start the shadow thread; shadows are not compared");
        }
        shadows
    }

    /// Sends the copies queued from now on to a reloaded config's endpoints (the same
    /// targets): copies already sent finish where they went.
    pub fn retarget(
        &self,
        targets: &[crate::config::TargetConfig],
        upstreams: Arc<[Upstream]>,
        health: Arc<Health>,
    ) {
        self.sides
            .store(Arc::new(Sides::new(targets, upstreams, health)));
    }

    /// Whether this request is copied to `shadow`: sampled by the flag's percent, of a method
    /// the route copies, with a body small enough. `None`: not sampled (nothing is counted).
    pub fn copy(
        &self,
        route: (usize, &Route),
        tenant: Option<&str>,
        shadow: Shadow,
        primary: TargetId,
        parts: &http::request::Parts,
        body_len: Option<u64>,
    ) -> Option<Result<RequestCopy, SkipReason>> {
        if shadow.percent < 100 && rand::random_range(0..100u8) >= shadow.percent {
            return None;
        }
        let (route_id, route) = route;
        let result = if !route.shadows_method(&parts.method) {
            Err(SkipReason::Method)
        } else if body_len.is_some_and(|n| n > self.config.max_body_bytes) {
            Err(SkipReason::BodyTooLarge)
        } else {
            let body = (body_len != Some(0))
                .then(|| Arc::new(Mutex::new(BodyCopy::new(self.config.max_body_bytes))));
            Ok(RequestCopy {
                route: route_id,
                tenant: Arc::from(tenant.unwrap_or(flag_store::DEFAULT_TENANT)),
                shadow: shadow.target,
                primary,
                method: parts.method.clone(),
                path_and_query: parts
                    .uri
                    .path_and_query()
                    .map_or("/".to_owned(), |p| p.as_str().to_owned()),
                headers: parts.headers.clone(),
                body,
                ramp: None,
            })
        };
        if let Err(reason) = result {
            self.skipped(route_id, shadow.target, reason);
        }
        Some(result)
    }

    /// The tap for the primary's response to a copied request.
    pub fn tap(
        self: &Arc<Self>,
        copy: RequestCopy,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Tap {
        Tap {
            shadows: self.clone(),
            status,
            headers: self.compared_headers(headers),
            body: Capture::new(self.keep_bytes(headers)),
            copy: Some(copy),
        }
    }

    /// The request body's copy, for the request body to fill as it streams.
    pub fn body_copy(copy: &RequestCopy) -> Option<Arc<Mutex<BodyCopy>>> {
        copy.body.clone()
    }

    /// How much of a body to keep: all of a JSON or compressed body (up to
    /// `max_compare_bytes`), to decode it and compare field by field; of any other, what the
    /// report shows (every byte is hashed).
    fn keep_bytes(&self, headers: &HeaderMap) -> usize {
        if says_json(headers) || headers.contains_key(header::CONTENT_ENCODING) {
            self.config.max_compare_bytes
        } else {
            REPORT_BODY_BYTES
        }
    }

    fn compared_headers(&self, headers: &HeaderMap) -> HeaderMap {
        let mut kept = HeaderMap::new();
        for name in &self.config.compare_headers {
            for v in headers.get_all(name) {
                kept.append(name.clone(), v.clone());
            }
        }
        // The encoding is kept for the body to be decoded ([`Answer::decoded`] drops it).
        for name in [header::CONTENT_TYPE, header::CONTENT_ENCODING] {
            if let Some(v) = headers.get(&name) {
                kept.insert(name, v.clone());
            }
        }
        kept
    }

    fn pair(&self, route: usize, target: TargetId) -> usize {
        route * self.targets.len() + target.index()
    }

    fn skipped(&self, route: usize, target: TargetId, reason: SkipReason) {
        self.skipped[self.pair(route, target) * SkipReason::ALL.len() + reason as usize]
            .fetch_add(1, Ordering::Relaxed);
    }

    fn submit(&self, copy: RequestCopy, primary: Answer) {
        let (route, target) = (copy.route, copy.shadow);
        // The request body as the copy holds it, read under one lock: its length, and why it
        // cannot be sent when it cannot.
        let (body_len, unsendable) = match &copy.body {
            None => (0, None),
            Some(b) => {
                let b = b.lock().expect("body");
                let unsendable = if b.too_large() {
                    Some(SkipReason::BodyTooLarge)
                } else if !b.is_whole() {
                    Some(SkipReason::PrimaryIncomplete)
                } else {
                    None
                };
                (b.len(), unsendable)
            }
        };
        if let Some(reason) = unsendable {
            self.skipped(route, target, reason);
            return;
        }
        let bytes = JOB_OVERHEAD_BYTES + primary.body.prefix.len() as u64 + body_len;
        let held = &self.held[target.index()];
        if held.fetch_add(bytes, Ordering::AcqRel) + bytes > self.config.max_queued_bytes
            || self.queues[target.index()]
                .try_send((copy, primary, bytes))
                .is_err()
        {
            held.fetch_sub(bytes, Ordering::AcqRel);
            self.skipped(route, target, SkipReason::QueueFull);
        }
    }

    /// Sends the copy to the shadow (and, sampled, again to the primary), compares, records.
    async fn run(&self, copy: RequestCopy, primary: Answer) {
        let cap = self.config.max_compare_bytes;
        let primary = primary.decoded(cap);
        let body = (copy.body.as_ref())
            .and_then(|b| b.lock().expect("body").whole())
            .unwrap_or_default();
        let deadline = Instant::now() + self.config.timeout;
        let shadow = (self
            .send(&copy, copy.shadow, body.clone(), deadline, "1")
            .await)
            .map(|answer| answer.decoded(cap));
        let repeat = is_safe(&copy.method)
            && self.config.noise_sample_percent > 0
            && rand::random_range(0..100u32) < self.config.noise_sample_percent;
        if repeat {
            self.repeats[copy.route].fetch_add(1, Ordering::Relaxed);
            if let Ok(again) = self
                .send(&copy, copy.primary, body, deadline, "primary-repeat")
                .await
            {
                self.learn(copy.route, &primary, &again.decoded(cap));
            }
        }
        let verdict = match &shadow {
            Err(why) => Verdict::Mismatched {
                kind: MismatchKind::NoAnswer,
                detail: why.clone(),
            },
            Ok(answer) => {
                let noise = self.noise.lock().expect("noise");
                compare(
                    &primary,
                    answer,
                    &self.config.ignore_fields,
                    &noise[copy.route],
                )
            }
        };
        self.record(&copy, &primary, shadow.as_ref().ok(), verdict);
    }

    async fn send(
        &self,
        copy: &RequestCopy,
        target: TargetId,
        body: Bytes,
        deadline: Instant,
        mark: &'static str,
    ) -> Result<Answer, String> {
        let sides = self.sides.load_full();
        let upstream = &sides.upstreams[target.index()];
        let endpoint = (sides.health)
            .choose(target, sides.health.now_ms(), None)
            .ok_or_else(|| format!("no endpoint of {} is up", upstream.name))?;
        let path: http::uri::PathAndQuery = copy
            .path_and_query
            .parse()
            .map_err(|_| "the request's path does not parse".to_owned())?;
        let uri = upstream
            .endpoint(endpoint)
            .uri(Some(&path))
            .map_err(|_| "the endpoint makes no URI".to_owned())?;
        let mut req = Request::builder()
            .method(copy.method.clone())
            .uri(uri)
            .body(RequestBody::copied(body))
            .map_err(|e| e.to_string())?;
        *req.headers_mut() = copy.headers.clone();
        req.headers_mut()
            .insert(X_SWITCHYARD_SHADOW.clone(), HeaderValue::from_static(mark));
        match upstream.protocol {
            Protocol::Http1 => *req.version_mut() = Version::HTTP_11,
            Protocol::H2c | Protocol::H2 => {
                *req.version_mut() = Version::HTTP_2;
                req.headers_mut().remove(header::HOST);
            }
        }
        let exchange = async {
            let resp: Response<hyper::body::Incoming> = sides.clients[target.index()]
                .request(req)
                .await
                .map_err(|e| format!("{}: {}", upstream.name, flag_store::error::Chain(&e)))?;
            let (parts, mut body) = resp.into_parts();
            let mut capture = Capture::new(self.keep_bytes(&parts.headers));
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| format!("{}'s body failed: {e}", upstream.name))?;
                if let Some(data) = frame.data_ref() {
                    capture.push(data);
                }
            }
            Ok(Answer {
                status: parts.status,
                headers: self.compared_headers(&parts.headers),
                body: capture.finish(),
            })
        };
        tokio::time::timeout_at(deadline, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "{} gave no whole answer within {:?}",
                    upstream.name, self.config.timeout
                ))
            })
    }

    /// Learns what differs between two answers of the primary to the same request.
    fn learn(&self, route: usize, first: &Answer, second: &Answer) {
        let mut noise = self.noise.lock().expect("noise");
        let noise = &mut noise[route];
        for name in &self.config.compare_headers {
            if first
                .headers
                .get_all(name)
                .iter()
                .ne(second.headers.get_all(name).iter())
            {
                noise.headers.insert(name.clone());
            }
        }
        if first.body.hash == second.body.hash && first.body.len == second.body.len {
            return;
        }
        match (json_of(first), json_of(second)) {
            (Some(a), Some(b)) => {
                let mut paths = Vec::new();
                diff_json(
                    &a,
                    &b,
                    &mut String::new(),
                    &mut String::new(),
                    &mut paths,
                    64,
                );
                for (general, _) in paths {
                    if noise.fields.len() < MAX_NOISE_FIELDS {
                        noise.fields.insert(general);
                    }
                }
            }
            _ => noise.body = true,
        }
    }

    fn record(
        &self,
        copy: &RequestCopy,
        primary: &Answer,
        shadow: Option<&Answer>,
        verdict: Verdict,
    ) {
        let pair = self.pair(copy.route, copy.shadow);
        self.compared[pair].fetch_add(1, Ordering::Relaxed);
        if let Some(ramp) = &copy.ramp {
            let mismatched = !matches!(verdict, Verdict::Matched);
            ramp.record_shadow(copy.shadow.index(), mismatched);
        }
        let mismatch = match verdict {
            Verdict::Matched => {
                self.matched[pair].fetch_add(1, Ordering::Relaxed);
                None
            }
            Verdict::Mismatched { kind, detail } => {
                self.mismatched[pair * MismatchKind::ALL.len() + kind as usize]
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(tenant = %copy.tenant, route = %self.routes[copy.route], target = %self.targets[copy.shadow.index()], kind = kind.as_str(), %detail, "shadow mismatch");
                Some(Mismatch {
                    at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
                    request: format!("{} {}", copy.method, copy.path_and_query),
                    route: self.routes[copy.route].clone(),
                    target: self.targets[copy.shadow.index()].clone(),
                    kind,
                    detail,
                    primary_status: primary.status.as_u16(),
                    shadow_status: shadow.map(|s| s.status.as_u16()),
                    primary_body: excerpt(&primary.body),
                    shadow_body: shadow.map_or(String::new(), |s| excerpt(&s.body)),
                })
            }
        };
        let mut records = self.records.lock().expect("records");
        records.clock += 1;
        let clock = records.clock;
        if !records.tenants.contains_key(&copy.tenant)
            && records.tenants.len() >= self.config.max_tenants
        {
            // Rare (a new tenant when the record is full): one pass to find the oldest.
            let oldest = (records.tenants.iter())
                .min_by_key(|(_, r)| r.last_seen)
                .map(|(t, _)| t.clone());
            if let Some(oldest) = oldest {
                records.tenants.remove(&oldest);
            }
        }
        let record = records.tenants.entry(copy.tenant.clone()).or_default();
        record.last_seen = clock;
        record.compared += 1;
        match mismatch {
            None => record.matched += 1,
            Some(m) => {
                if record.recent.len() >= self.config.recent_mismatches {
                    record.recent.pop_front();
                }
                if self.config.recent_mismatches > 0 {
                    record.recent.push_back(m);
                }
            }
        }
    }

    /// One tenant's results (most recent mismatch first).
    pub fn report(&self, tenant: &str) -> TenantReport {
        let records = self.records.lock().expect("records");
        match records.tenants.get(tenant) {
            None => TenantReport {
                tenant: tenant.to_owned(),
                ..TenantReport::default()
            },
            Some(r) => TenantReport {
                tenant: tenant.to_owned(),
                compared: r.compared,
                matched: r.matched,
                match_rate: rate(r.matched, r.compared),
                recent_mismatches: r.recent.iter().rev().cloned().collect(),
            },
        }
    }

    /// `[compared, matched]` of the `max` tenants compared most recently: what this router
    /// publishes in its presence record for the fleet's sums.
    pub fn counts(&self, max: usize) -> std::collections::BTreeMap<String, [u64; 2]> {
        let records = self.records.lock().expect("records");
        let mut recent: Vec<(&Arc<str>, &TenantRecord)> = records.tenants.iter().collect();
        if recent.len() > max {
            recent.select_nth_unstable_by_key(max, |(_, r)| std::cmp::Reverse(r.last_seen));
            recent.truncate(max);
        }
        (recent.into_iter())
            .map(|(t, r)| (t.to_string(), [r.compared, r.matched]))
            .collect()
    }

    /// Every tenant with results: compared, matched and the match rate, without mismatches.
    pub fn summary(&self) -> Vec<TenantReport> {
        let records = self.records.lock().expect("records");
        let mut all: Vec<TenantReport> = (records.tenants.iter())
            .map(|(t, r)| TenantReport {
                tenant: t.to_string(),
                compared: r.compared,
                matched: r.matched,
                match_rate: rate(r.matched, r.compared),
                recent_mismatches: Vec::new(),
            })
            .collect();
        all.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        all
    }
}

impl Shadows {
    /// One counter family by route and shadow target, split further by `label` when it has
    /// values (`counts` holds `values.len()` counters a pair, in that order).
    fn collect_pairs(
        &self,
        out: &mut Vec<prometheus::proto::MetricFamily>,
        (name, help): (&str, &str),
        counts: &[AtomicU64],
        (label, values): (&str, &[&str]),
    ) {
        let labels: &[&str] = if values.is_empty() {
            &["route", "target"]
        } else {
            &["route", "target", label]
        };
        let family = Family::counter(name, help, labels);
        let per_pair = values.len().max(1);
        for (r, route) in self.routes.iter().enumerate() {
            for (t, target) in self.targets.iter().enumerate() {
                let at = (r * self.targets.len() + t) * per_pair;
                if values.is_empty() {
                    family.set(&[route, target], counts[at].load(Ordering::Relaxed) as f64);
                }
                for (k, value) in values.iter().enumerate() {
                    let v = counts[at + k].load(Ordering::Relaxed);
                    family.set(&[route, target, value], v as f64);
                }
            }
        }
        family.into(out);
    }
}

impl crate::observe::metrics::Families for Shadows {
    /// The Prometheus families, by route and shadow target.
    fn collect(&self, out: &mut Vec<prometheus::proto::MetricFamily>) {
        let kinds = MismatchKind::ALL.map(MismatchKind::as_str);
        let reasons = SkipReason::ALL.map(SkipReason::as_str);
        self.collect_pairs(
            out,
            (
                "switchyard_shadow_compared_total",
                "Shadowed requests whose answers were compared, by route and shadow target.",
            ),
            &self.compared,
            ("", &[]),
        );
        self.collect_pairs(
            out,
            (
                "switchyard_shadow_matched_total",
                "Compared shadow answers that matched the primary's (learned noise left out).",
            ),
            &self.matched,
            ("", &[]),
        );
        self.collect_pairs(
            out,
            (
                "switchyard_shadow_mismatched_total",
                "Compared shadow answers that differed from the primary's, by the first difference: status, header, body, or no answer at all.",
            ),
            &self.mismatched,
            ("kind", &kinds),
        );
        self.collect_pairs(
            out,
            (
                "switchyard_shadow_skipped_total",
                "Sampled requests not compared, by reason: method not copied, body too large, queue full, primary answer incomplete.",
            ),
            &self.skipped,
            ("reason", &reasons),
        );
        let repeats = Family::counter(
            "switchyard_shadow_primary_repeats_total",
            "Requests sent to the primary a second time to learn which fields differ between two of its own answers.",
            &["route"],
        );
        for (route, n) in self.routes.iter().zip(self.repeats.iter()) {
            repeats.set(&[route], n.load(Ordering::Relaxed) as f64);
        }
        repeats.into(out);
        let noise_fields = Family::gauge(
            "switchyard_shadow_noise_fields",
            "Fields learned as noise (they differ between two answers of the primary), by route.",
            &["route"],
        );
        let noise = self.noise.lock().expect("noise");
        for (route, n) in self.routes.iter().zip(noise.iter()) {
            let fields = n.fields.len() + n.headers.len() + usize::from(n.body);
            noise_fields.set(&[route], fields as f64);
        }
        noise_fields.into(out);
    }
}

fn rate(matched: u64, compared: u64) -> Option<f64> {
    (compared > 0).then(|| matched as f64 / compared as f64)
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shadow_thread_runs_under_sched_idle() {
        let policy = std::thread::spawn(|| {
            lower_priority();
            // Field 41 of /proc/thread-self/stat (the 39th after the command in parentheses)
            // is the scheduling policy; SCHED_IDLE is 5.
            let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
            let after = &stat[stat.rfind(')').unwrap() + 2..];
            after.split(' ').nth(38).unwrap().parse::<i32>().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(policy, 5);
    }
}
