//! Step 4, and the hot path read top to bottom: route, tenant id, flag lookup and pick,
//! forward, metrics.
//!
//! [`Proxy::handle`] reads in that order: `decide` (steps 1 to 3, no wait; the snapshot
//! guard lives in it and nowhere else), then `forward`, whose synchronous half is `prepare`.
//! A request's labels, start and id travel together in one `RequestCtx`. Where a request is
//! sent, and whether and where a failed try is retried, are the pure functions of `send_to.rs`.
//! Beside them: [`refusal`] (every answer the router gives itself, turned into a status and
//! a short plain body in one place), [`headers`] (the header policy), [`tunnels`] (upgraded
//! connections) and [`peer`] (the client end of a connection).

pub mod headers;
mod held;
pub mod peer;
pub mod refusal;
mod send_to;
pub mod tunnels;

use crate::cutover::hold::{Holds, InFlight as TenantInFlight};
pub use headers::strip_hop_by_hop;
pub(crate) use headers::{ADDED_REQUEST_HEADERS, content_length};
use headers::{ClientUpgrade, RequestIds, X_REQUEST_ID, allowed_upgrade, join_cookies};
pub use peer::Peer;
use refusal::Refusal;
use send_to::{first_endpoint, is_idempotent, retry_plan};
pub use tunnels::Tunnels;

use std::sync::Arc;

use flag_store::{FlagState, TargetId};
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
// Tokio's clock, as the health view reads it: one reading serves both (and tests can pause it).
use tokio::time::Instant;

use crate::body::{
    BodyError, BodyProgress, ClientBody, Completion, RequestBody, ResponseBody, Sending,
    UpstreamBody,
};
use crate::config::{Config, Protocol, TenantRules};
use crate::health::{Health, InFlight, Outcome};
use crate::observe::access_log::{self, AccessLog};
use crate::observe::metrics::{Labels, Metrics, UpstreamErrorKind};
use crate::policy::tenant::{self, sticky_hash};
use crate::policy::{Decision, Pick, Route, RouteKind, RouteTable, pick};
use crate::shadow::{self, Shadows};
use crate::streams::{Binding, StreamKind, Streams, TenantKey};
use crate::upstream::Upstream;

#[derive(Debug)]
pub struct Proxy {
    routes: RouteTable,
    rules: TenantRules,
    /// The headers [`Proxy::decide`] reads (`tenant::deciding_headers`).
    decided_by: Vec<http::HeaderName>,
    default_target: TargetId,
    flags: Arc<FlagState>,
    /// Indexed by [`TargetId`]; shared with the shadow engine.
    upstreams: Arc<[Upstream]>,
    shadows: Arc<Shadows>,
    access_log: Option<Arc<AccessLog>>,
    pub(crate) metrics: Arc<Metrics>,
    trust_forwarded: bool,
    /// Drop header fields whose name has an underscore (for the `http1` crate's, as it parses).
    drop_underscored: bool,
    request_ids: RequestIds,
    /// Shared by every generation of the config: a reload never loses count of a tunnel.
    pub(crate) tunnels: Arc<Tunnels>,
    /// Tunnels and streaming responses bound to a tenant's side, closed when it moves.
    pub(crate) streams: Arc<Streams>,
    /// Requests of tenants being moved, waiting; shared by every generation of the config.
    pub(crate) holds: Arc<Holds>,
    /// `server.max_uploads_per_address`; shared by every generation of the config.
    uploads: Option<Arc<crate::body::Uploads>>,
    health: Arc<Health>,
}

/// Why one exchange with an endpoint failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Connect,
    /// The connection failed before any response byte.
    Reset,
    Timeout,
    /// The endpoint was seen down (health check, ejection) before it answered: the try is
    /// given up so an idempotent request can go elsewhere.
    EndpointDown,
    /// No answer within the route's `try_timeout_ms`.
    TryTimeout,
    /// The TLS handshake with the upstream failed: why.
    Tls(&'static str),
    /// The client's body was at fault: the status and why.
    Client(StatusCode, &'static str),
    BadTarget,
}

impl Failure {
    fn of(error: &SendError) -> Failure {
        let connect = match error {
            SendError::H1(http1::Error::Body(e)) => {
                return match e.downcast_ref::<BodyError>() {
                    Some(body_error) => Failure::client(body_error),
                    None => {
                        Failure::Client(StatusCode::BAD_REQUEST, "reading the request body failed")
                    }
                };
            }
            SendError::H1(e) => e.is_connect(),
            SendError::Hyper(e) => {
                if let Some(why) = crate::tls::upstream_failure(e) {
                    return Failure::Tls(why);
                }
                e.is_connect()
            }
        };
        let mut source = std::error::Error::source(error);
        while let Some(e) = source {
            if let Some(body_error) = e.downcast_ref::<BodyError>() {
                return Failure::client(body_error);
            }
            source = e.source();
        }
        if connect {
            Failure::Connect
        } else {
            Failure::Reset
        }
    }
}

/// A failed send, from either upstream client.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error(transparent)]
    H1(http1::Error),
    #[error(transparent)]
    Hyper(hyper_util::client::legacy::Error),
}

/// One request's state on its way down the hot path (pingora's per-request context): what
/// its metrics are labelled with, when it started, its id. Every answer, the upstream's or
/// the router's own, is finished from it.
#[derive(Debug)]
struct RequestCtx {
    labels: Labels,
    start: Instant,
    request_id: HeaderValue,
    /// The copy of a request sampled for its tenant's shadow, until the primary answers.
    shadow: Option<Box<shadow::RequestCopy>>,
    /// A request sampled for the access log: what its line will say.
    log: Option<Box<access_log::Entry>>,
    /// A flag-routed tenant's request, counted in flight until its response ends.
    tenant: Option<TenantInFlight>,
}

/// Waits for the upstream's answer to a request whose body is still to come. The route's
/// timeout is for the upstream's answer, so it runs from the body's end, however long a slow
/// client takes to send it: the client's pauses are its body's idle timeout to judge (408,
/// never the upstream's fault). An upstream that stops taking the body for the idle timeout
/// has timed out. `None`: timed out.
async fn answer_within<F: Future>(
    sending: F,
    mut deadline: Instant,
    route: &Route,
    progress: &BodyProgress,
) -> Option<F::Output> {
    let mut sending = std::pin::pin!(sending);
    loop {
        if let Ok(answer) = tokio::time::timeout_at(deadline, sending.as_mut()).await {
            return Some(answer);
        }
        let now = Instant::now();
        deadline = match progress.state() {
            Sending::Done(at) => at + route.timeout,
            Sending::WaitingOnClient => now + route.idle_timeout,
            Sending::WaitingOnUpstream(since) => since + route.idle_timeout,
        };
        if deadline <= now {
            return None;
        }
    }
}

/// What steps 1 to 3 decided for one request: its route, the pick, and its tenant (kept by
/// value for a flag-routed request, in case its exchange outlives the response head and must
/// follow a flip).
struct Decided<'a> {
    route: &'a Route,
    pick: Pick,
    tenant: TenantKey,
}

/// A request made ready to send by [`Proxy::prepare`].
struct Prepared {
    body: RequestBody,
    endpoint: usize,
    /// The `Host` an HTTP/1.1 upstream is sent, when the request has none: the request
    /// target's authority (HTTP/2).
    add_host: Option<HeaderValue>,
    /// Boxed: it is held across the upstream exchange, and upgrades are rare.
    client_upgrade: Option<Box<ClientUpgrade>>,
    /// The copy a retry would send (method, target, headers), when there is somewhere to
    /// retry to.
    saved: Option<(Method, http::Uri, HeaderMap)>,
}

/// An upstream's answer, with what the rest of the exchange needs of its attempt.
struct Answer {
    resp: Response<UpstreamBody>,
    in_flight: InFlight,
    /// How the client's body goes, when it had data to come: the other direction of the
    /// answer's idle timeout.
    request: Option<Arc<BodyProgress>>,
}

/// Where a response came from and for whom, for binding a long-lived exchange to its side.
#[derive(Clone, Copy)]
struct Bound<'a> {
    route: &'a Route,
    pick: &'a Pick,
    tenant: &'a TenantKey,
    /// The target that answered (the retry's, after a retry).
    target: TargetId,
}

impl Bound<'_> {
    /// The binding of a flag-routed exchange (a fixed route's never moves).
    fn binding(&self, kind: StreamKind) -> Option<Binding> {
        (self.route.kind == RouteKind::Flagged).then(|| Binding {
            tenant: self.tenant.as_str().map(Into::into),
            bucket: self.pick.bucket,
            target: self.target,
            on_owner: self.target == self.pick.owner,
            kind,
        })
    }
}

impl Proxy {
    pub fn new(
        config: &Config,
        flags: Arc<FlagState>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        streams: Arc<Streams>,
        holds: Arc<Holds>,
    ) -> Result<Self, String> {
        let upstreams: Arc<[Upstream]> = (config.target_configs.iter().enumerate())
            .map(|(t, c)| Upstream::new(c, metrics.upstream_connects(t)))
            .collect::<Result<_, _>>()?;
        let shadows = Shadows::start(
            config.shadow.clone(),
            &config.routes,
            &config.target_configs,
            upstreams.clone(),
            health.clone(),
        );
        metrics.add_families(shadows.clone());
        let access_log = match &config.access_log {
            None => None,
            Some(c) => {
                let routes: Vec<String> = config.routes.iter().map(|r| r.name.clone()).collect();
                let log = AccessLog::start(c, &routes, &config.target_configs)
                    .map_err(|e| format!("access_log.path: cannot open it: {e}"))?;
                metrics.add_families(log.clone());
                Some(log)
            }
        };
        Ok(Proxy {
            streams,
            holds,
            uploads: config
                .server
                .max_uploads_per_address
                .map(crate::body::Uploads::new),
            routes: RouteTable::new(config.routes.clone()),
            rules: config.tenant.clone(),
            decided_by: tenant::deciding_headers(&config.tenant.from, &config.tenant.sticky_key),
            default_target: config.flags.default_target,
            flags,
            upstreams,
            shadows,
            access_log,
            metrics,
            trust_forwarded: config.server.trust_forwarded_headers,
            drop_underscored: !config.server.keep_underscored_headers,
            request_ids: RequestIds::new(),
            tunnels: Arc::default(),
            health,
        })
    }

    /// The proxy for a reloaded config, which has the same targets and routes by name (checked
    /// by [`crate::config::restart_needed`]): new routes, tenant rules and upstreams (new
    /// connection pools, TLS files read again) over `health`, and everything that outlives a
    /// config shared with this one: flags, metrics, open tunnels and streams, the shadow
    /// engine (pointed at the new upstreams) and the access log.
    pub fn reconfigured(&self, config: &Config, health: Arc<Health>) -> Result<Proxy, String> {
        let upstreams: Arc<[Upstream]> = (config.target_configs.iter().enumerate())
            .map(|(t, c)| Upstream::new(c, self.metrics.upstream_connects(t)))
            .collect::<Result<_, _>>()?;
        self.shadows
            .retarget(&config.target_configs, upstreams.clone(), health.clone());
        self.metrics.set_health(health.clone());
        Ok(Proxy {
            routes: RouteTable::new(config.routes.clone()),
            rules: config.tenant.clone(),
            decided_by: tenant::deciding_headers(&config.tenant.from, &config.tenant.sticky_key),
            default_target: self.default_target,
            flags: self.flags.clone(),
            upstreams,
            shadows: self.shadows.clone(),
            access_log: self.access_log.clone(),
            metrics: self.metrics.clone(),
            trust_forwarded: config.server.trust_forwarded_headers,
            drop_underscored: !config.server.keep_underscored_headers,
            request_ids: RequestIds::new(),
            tunnels: self.tunnels.clone(),
            streams: self.streams.clone(),
            holds: self.holds.clone(),
            uploads: self.uploads.clone(),
            health,
        })
    }

    /// The endpoints' health this proxy routes by.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// Each target's connector, in target order (for its health checks).
    pub fn connectors(&self) -> Vec<crate::tls::Connector> {
        (self.upstreams.iter())
            .map(|u| u.connector().clone())
            .collect()
    }

    /// Closes idle upstream connections that timed out or that the upstream closed.
    pub fn reap_idle_connections(&self) {
        for upstream in self.upstreams.iter() {
            upstream.reap_idle();
        }
    }

    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// The shadow comparisons' results.
    pub fn shadows(&self) -> &Arc<Shadows> {
        &self.shadows
    }

    /// Owns its proxy, so a request finishes on the config it started on while a reload swaps
    /// in the next one for new requests.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<ClientBody>,
        client: &Peer,
    ) -> Response<ResponseBody> {
        let (mut parts, body) = req.into_parts();
        let mut ctx = self.context(&parts);
        // Steps 1 to 3 decide, without a wait; step 4 forwards.
        let now_ms = self.health.ms_at(ctx.start);
        let decided = match self.decide(&parts, client, now_ms, &mut ctx) {
            Ok(decided) => decided,
            // A tenant being moved waits, in a future of its own: every other request's
            // stays as it was.
            Err(Refusal::Held(hold)) => {
                return Box::pin(self.held(parts, body, hold, ctx, client)).await;
            }
            Err(refusal) => return self.refuse(refusal, ctx),
        };
        // 4. Forward (and 5, metrics, when the response body completes).
        self.forward(&mut parts, body, decided, ctx, client, now_ms)
            .await
    }

    /// A request's start, id, labels and (when sampled) access-log entry.
    #[inline(always)]
    fn context(&self, parts: &Parts) -> RequestCtx {
        let mut ctx = RequestCtx {
            start: Instant::now(),
            request_id: self.request_id(&parts.headers),
            labels: Labels {
                route: self.metrics.no_route(),
                target: self.metrics.no_target(),
            },
            shadow: None,
            log: None,
            tenant: None,
        };
        if let Some(log) = &self.access_log
            && log.sampled()
        {
            let entry = access_log::Entry::new(parts, ctx.request_id.clone());
            ctx.log = Some(Box::new(entry));
        }
        ctx
    }

    /// Steps 1 to 3: the route, the tenant, the pick. The snapshot guard lives in here only.
    /// The tenant is kept (by value) for a flag-routed request, in case its exchange outlives
    /// the response head and must follow a flip.
    fn decide(
        &self,
        parts: &Parts,
        client: &Peer,
        now_ms: u64,
        ctx: &mut RequestCtx,
    ) -> Result<Decided<'_>, Refusal> {
        // A reverse proxy never opens tunnels to a host the client names.
        if parts.method == Method::CONNECT {
            return Err(Refusal::Connect);
        }
        // 1. Route, on the path as upstreams read it (crate::policy::path), and the host, which
        // must read one way only: both decide where the request goes.
        let path = crate::policy::path::normalize(parts.uri.path()).map_err(Refusal::Path)?;
        let host = tenant::request_host(parts).map_err(Refusal::Host)?;
        let route_id = self.routes.find(&path).ok_or(Refusal::NoRoute)?;
        let route = self.routes.get(route_id);
        ctx.labels.route = route_id.index();

        // 2. Tenant id.
        let facts = tenant::RequestFacts {
            parts,
            host,
            path: &path,
            client_cn: client.client_cn.as_deref(),
        };
        let tenant = tenant::extract(&self.rules.from, &facts).map_err(Refusal::Tenant)?;
        if let (Some(log), Some(t)) = (ctx.log.as_mut(), &tenant) {
            log.tenant = Some((*t.id).into());
        }
        if tenant.is_none() && route.require_tenant {
            return Err(Refusal::TenantRequired);
        }
        if route.kind == RouteKind::Flagged && !self.flags.is_loaded() {
            return Err(Refusal::FlagsNotLoaded);
        }

        // 3. Flag lookup and pick, on one snapshot and one health view. A tenant being moved
        // goes nowhere until its hold ends (one check while no tenant is held). A flag-routed
        // request counts in flight before it reads the snapshot: a router that sees a hold and
        // then no request in flight knows every later one sees the hold too.
        let tenant_id = tenant.as_ref().map(|t| &*t.id);
        if route.kind == RouteKind::Flagged {
            ctx.tenant = tenant_id.map(TenantInFlight::enter);
        }
        let snapshot = self.flags.load();
        if snapshot.has_holds()
            && route.kind == RouteKind::Flagged
            && let Some(hold) = tenant_id.and_then(|t| snapshot.hold(t))
            && hold.active_at(flag_store::fleet::now_ms())
        {
            // A held request waits out of the count, or its hold could never drain.
            ctx.tenant = None;
            return Err(Refusal::Held(hold.clone()));
        }
        let view = self.health.view(now_ms);
        let decision = pick(
            &snapshot,
            route,
            tenant_id,
            || {
                sticky_hash(
                    &self.rules.sticky_key,
                    tenant_id.unwrap_or(""),
                    parts,
                    client.addr.ip(),
                )
            },
            self.default_target,
            &view,
        );
        tracing::debug!(tenant = tenant_id.unwrap_or("-"), route = %route.name, ?decision, "pick");
        let pick = match decision {
            Decision::Forward(pick) => pick,
            Decision::PinnedUnavailable { target, .. } => {
                return Err(Refusal::TargetUnavailable(target));
            }
            Decision::NoHealthyTarget { .. } => return Err(Refusal::NoHealthyTarget),
            Decision::Evacuated { side, .. } => return Err(Refusal::Evacuated(side)),
            Decision::RejectedFlag => {
                let why = match snapshot.lookup(tenant_id) {
                    flag_store::Found::Rejected(r) => r.to_string(),
                    _ => "its flag item was rejected".to_owned(),
                };
                return Err(Refusal::RejectedFlag(why));
            }
        };
        if pick.failover {
            self.metrics
                .failover(ctx.labels.route, pick.owner.index(), pick.target.index());
            if let Some(log) = ctx.log.as_mut() {
                log.failover = true;
            }
        }
        ctx.labels.target = pick.target.index();
        if let Some(t) = ctx.tenant.as_mut() {
            t.set_ramp((self.metrics.ramps).slot_of(&snapshot, tenant_id, self.upstreams.len()));
        }
        let tenant = match route.kind {
            RouteKind::Flagged => TenantKey::new(tenant_id),
            RouteKind::Fixed(_) => TenantKey::None,
        };
        Ok(Decided {
            route,
            pick,
            tenant,
        })
    }

    /// Forwards to the picked target, and retries once when [`retry_plan`] says so and the
    /// target's retry budget allows it.
    async fn forward(
        &self,
        parts: &mut Parts,
        body: ClientBody,
        decided: Decided<'_>,
        mut ctx: RequestCtx,
        client: &Peer,
        now: u64,
    ) -> Response<ResponseBody> {
        let Decided {
            route,
            mut pick,
            tenant,
        } = decided;
        let Prepared {
            body,
            endpoint,
            add_host,
            client_upgrade,
            saved,
        } = match self.prepare(
            parts,
            body,
            (route, &mut pick, &tenant),
            &mut ctx,
            client,
            now,
        ) {
            Ok(prepared) => prepared,
            Err(refusal) => return self.refuse(refusal, ctx),
        };
        let target = pick.target;
        // A request that could go elsewhere does not wait on an endpoint seen down (or past
        // the route's try timeout): a hung side's requests move as soon as its health check
        // fails, instead of at the route's timeout.
        // Each branch builds the attempt where it awaits it: a future bound to a name first
        // is copied into the await (a kilobyte, on every request).
        let rescuable = saved.is_some() && is_idempotent(&parts.method);
        // Only an upgrade still carries `Upgrade` here (`strip_request_hop_by_hop`).
        let upgrade = client_upgrade.is_some();
        let outcome = if rescuable {
            let lost = Box::pin(
                self.until_lost((target, endpoint), route.try_timeout.map(|t| ctx.start + t)),
            );
            tokio::select! {
                biased;
                outcome = self.attempt(parts, body, route, (target, endpoint), (add_host.as_ref(), upgrade), ctx.start) => outcome,
                failure = lost => Err(failure),
            }
        } else {
            self.attempt(
                parts,
                body,
                route,
                (target, endpoint),
                (add_host.as_ref(), upgrade),
                ctx.start,
            )
            .await
        };
        let failure = match outcome {
            Ok(answer) => {
                let bound = Bound {
                    route,
                    pick: &pick,
                    tenant: &tenant,
                    target,
                };
                return self.respond(answer, client_upgrade, bound, ctx);
            }
            Err(failure) => failure,
        };

        let now = self.health.now_ms();
        let plan = retry_plan(
            failure,
            &parts.method,
            saved.is_some(),
            (target, endpoint),
            pick.alternative,
            |t, except| self.health.choose(t, now, except),
        );
        let (Some((reason, retry_target, retry_endpoint)), Some((method, uri, headers))) =
            (plan, saved)
        else {
            return self.refuse(Refusal::Upstream(failure, target, route.timeout), ctx);
        };
        // The budget bounds the extra load retries put on live applications. A split tenant's
        // request that never reached one (a refused connect) or whose endpoint was seen down
        // goes to the other target without drawing on it: that target takes these requests
        // anyway once this one is out, and a side killed under load then fails none.
        let free = retry_target != target
            && matches!(
                failure,
                Failure::Connect | Failure::Tls(_) | Failure::EndpointDown
            );
        if !free && !self.health.target(target).budget.try_retry(now) {
            self.metrics.retry_budget_exhausted(target.index());
            return self.refuse(Refusal::Upstream(failure, target, route.timeout), ctx);
        }
        self.metrics.retry(target.index(), reason);
        if retry_target != target {
            self.metrics
                .failover(ctx.labels.route, target.index(), retry_target.index());
            ctx.labels.target = retry_target.index();
        }
        if let Some(log) = ctx.log.as_mut() {
            log.retried = true;
            log.failover |= retry_target != target;
            log.endpoint = Some(self.upstreams[retry_target.index()].endpoint_name(retry_endpoint));
        }
        *parts = Request::new(()).into_parts().0;
        parts.method = method;
        parts.uri = uri;
        parts.headers = headers;
        let retry = (retry_target, retry_endpoint);
        // Boxed, the rare second try: its future would otherwise add to every request's.
        let second = Box::pin(self.attempt(
            parts,
            RequestBody::empty(),
            route,
            retry,
            (add_host.as_ref(), false),
            Instant::now(),
        ));
        // A retry of a rescued request is watched the same way: the side it went to may be
        // hanging too (its other endpoint, not yet seen down). There is no third try.
        let outcome = if rescuable {
            let started = Instant::now();
            let lost = Box::pin(self.until_lost(retry, route.try_timeout.map(|t| started + t)));
            tokio::select! {
                biased;
                outcome = second => outcome,
                failure = lost => Err(failure),
            }
        } else {
            second.await
        };
        match outcome {
            Ok(answer) => {
                let bound = Bound {
                    route,
                    pick: &pick,
                    tenant: &tenant,
                    target: retry_target,
                };
                self.respond(answer, None, bound, ctx)
            }
            Err(failure) => {
                self.refuse(Refusal::Upstream(failure, retry_target, route.timeout), ctx)
            }
        }
    }

    /// Step 4's synchronous half: the body limit, the header policy ([`headers`]), the
    /// endpoint, the copy a retry would send and the shadow's copy; nothing waits.
    fn prepare(
        &self,
        parts: &mut Parts,
        body: ClientBody,
        (route, pick, tenant): (&Route, &mut Pick, &TenantKey),
        ctx: &mut RequestCtx,
        client: &Peer,
        now: u64,
    ) -> Result<Prepared, Refusal> {
        if let (Some(limit), Some(len)) = (route.max_body_bytes, content_length(&parts.headers))
            && len > limit
        {
            return Err(Refusal::BodyTooLarge { len, limit });
        }
        let upload = match &self.uploads {
            Some(u) if !http_body::Body::is_end_stream(&body) => {
                Some((u.enter(client.addr.ip())).ok_or(Refusal::TooManyUploads(u.cap))?)
            }
            _ => None,
        };
        // Most requests carry no hop-by-hop field, so no `Connection` and no upgrade: one pass
        // over the names says so, and spares the lookups an upgrade and the stripping make.
        let hop_by_hop = parts.headers.keys().any(headers::is_hop_by_hop);
        // Boxed: it is held across the upstream exchange, and upgrades are rare.
        let client_upgrade = match hop_by_hop.then(|| allowed_upgrade(parts, route)) {
            Some(Some(asked)) => parts
                .extensions
                .remove::<OnUpgrade>()
                .map(|on| Box::new(ClientUpgrade { on, asked })),
            _ => None,
        };
        // The host was checked in `decide`: the Host header, else the target's authority.
        let (host, had_host) = match parts.headers.get(header::HOST) {
            Some(h) => (Some(h.clone()), true),
            None => (
                (parts.uri.authority()).and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
                false,
            ),
        };
        if hop_by_hop {
            headers::strip_request_hop_by_hop(
                &mut parts.headers,
                client_upgrade.is_some(),
                &self.decided_by,
            )
            .map_err(Refusal::ConnectionNamesDecider)?;
        }
        // What an HTTP/1.1 upstream is sent as `Host` when the request has none (an HTTP/2
        // request's authority). A `Connection` cannot have taken it: Host decides every
        // route, and a `Connection` naming a header that decides is refused above.
        let add_host = if had_host { None } else { host.clone() };
        if self.drop_underscored && !matches!(body, ClientBody::H1(_) | ClientBody::H1Tls(_)) {
            headers::drop_underscored_names(&mut parts.headers);
        }
        if parts.version == Version::HTTP_2 {
            join_cookies(&mut parts.headers);
        }
        self.set_forwarded(&mut parts.headers, client, host.as_ref());
        parts
            .headers
            .insert(X_REQUEST_ID.clone(), ctx.request_id.clone());

        let Some((target, endpoint)) = first_endpoint(pick, |t| self.health.choose(t, now, None))
        else {
            // Its last endpoint went down between the pick and now, and it has nowhere else.
            return Err(Refusal::TargetUnavailable(pick.target));
        };
        if target != pick.target {
            self.fell_over(pick, target, ctx);
        }
        self.health.target(target).budget.record_request(now);
        if let Some(log) = ctx.log.as_mut() {
            log.endpoint = Some(self.upstreams[target.index()].endpoint_name(endpoint));
        }
        // The copy a retry would send is made only when there is somewhere to retry to: the
        // split tenant's other target, or another endpoint of this one.
        let replayable = http_body::Body::is_end_stream(&body)
            && client_upgrade.is_none()
            && (pick.alternative.is_some() || self.upstreams[target.index()].endpoint_count() > 1);
        let saved = replayable.then(|| {
            (
                parts.method.clone(),
                parts.uri.clone(),
                parts.headers.clone(),
            )
        });
        // A shadowed request is copied before it is sent: its body as it streams.
        let mut body_copy = None;
        if let Some(shadow) = pick.shadow {
            let body_len = if http_body::Body::is_end_stream(&body) {
                Some(0)
            } else {
                http_body::Body::size_hint(&body).exact()
            };
            let route_at = (ctx.labels.route, route);
            if let Some(Ok(mut copy)) =
                (self.shadows).copy(route_at, tenant.as_str(), shadow, target, parts, body_len)
            {
                let slot = ctx.tenant.as_ref().and_then(TenantInFlight::ramp);
                copy.ramp = slot.and_then(|s| self.metrics.ramps.counters_at(s));
                body_copy = Shadows::body_copy(&copy);
                ctx.shadow = Some(Box::new(copy));
            }
        }
        let mut body =
            RequestBody::new(body, route.max_body_bytes, route.idle_timeout).copying(body_copy);
        if body.to_come() {
            body.paced(route.upload, upload);
        }
        Ok(Prepared {
            body,
            endpoint,
            add_host,
            client_upgrade,
            saved,
        })
    }

    /// Resolves when the endpoint is no longer available (a failed health check, an ejection),
    /// or at `try_deadline`: why the try is given up.
    async fn until_lost(
        &self,
        (target, endpoint): (TargetId, usize),
        try_deadline: Option<Instant>,
    ) -> Failure {
        let mut changes = self.health.subscribe();
        let down = async {
            while self
                .health
                .endpoint_available(target, endpoint, self.health.now_ms())
            {
                if changes.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        let Some(deadline) = try_deadline else {
            down.await;
            return Failure::EndpointDown;
        };
        tokio::select! {
            () = down => Failure::EndpointDown,
            () = tokio::time::sleep_until(deadline) => {
                self.metrics
                    .upstream_error(target.index(), UpstreamErrorKind::Timeout);
                self.health
                    .report(target, endpoint, Outcome::Failure, self.health.now_ms());
                Failure::TryTimeout
            }
        }
    }

    /// One exchange with one endpoint. Its outcome feeds passive ejection; a failure caused
    /// by the client's own body says nothing about the endpoint and is not reported.
    async fn attempt(
        &self,
        parts: &mut Parts,
        body: RequestBody,
        route: &Route,
        (target, endpoint): (TargetId, usize),
        (add_host, upgrade): (Option<&HeaderValue>, bool),
        sent_at: Instant,
    ) -> Result<Answer, Failure> {
        let upstream = &self.upstreams[target.index()];
        // The route's timeout counts from `sent_at` (the request's start for a first try), or,
        // for a body still to come, from the body's end (`answer_within`).
        let deadline = sent_at + route.timeout;
        let progress = body.progress();
        // HTTP/1.1 goes over the proxy's own client, upgrades and HTTP/2 over hyper's.
        // The own client's pool dials its endpoint and sends only the path
        // (http1::client::request_target); hyper's dials the URI, so that is rebuilt from the endpoint.
        let own_client = upstream.protocol == Protocol::Http1 && !upstream.tls && !upgrade;
        if !own_client {
            parts.uri = (upstream.endpoint(endpoint).uri(parts.uri.path_and_query()))
                .map_err(|_| Failure::BadTarget)?;
        }
        match upstream.protocol {
            Protocol::Http1 => {
                parts.version = Version::HTTP_11;
                if let Some(host) = add_host {
                    parts.headers.insert(header::HOST, host.clone());
                }
            }
            Protocol::H2c | Protocol::H2 => {
                parts.version = Version::HTTP_2;
                parts.headers.remove(header::HOST);
            }
        }
        let in_flight = self.health.start(target, endpoint);
        // Each branch awaits its own client directly: an async block around both would hold a
        // second copy of the request in this future.
        // Bodies wait in a box: most requests have none, and their future stays small.
        let sent = if own_client {
            let sending = upstream.pool(endpoint).send(parts, body);
            match &progress {
                None => tokio::time::timeout_at(deadline, sending).await.ok(),
                Some(p) => Box::pin(answer_within(sending, deadline, route, p)).await,
            }
            .map(|r| r.map(|r| r.map(UpstreamBody::H1)).map_err(SendError::H1))
        } else {
            // The request is passed by reference down to here; hyper's client takes it whole.
            let parts = std::mem::replace(parts, Request::new(()).into_parts().0);
            let sending = upstream.client().request(Request::from_parts(parts, body));
            match &progress {
                None => tokio::time::timeout_at(deadline, sending).await.ok(),
                Some(p) => Box::pin(answer_within(sending, deadline, route, p)).await,
            }
            .map(|r| {
                r.map(|r| r.map(UpstreamBody::Hyper))
                    .map_err(SendError::Hyper)
            })
        };
        let (outcome, result) = match sent {
            Some(Ok(resp)) => {
                let outcome = match resp.status().is_server_error() {
                    true => Outcome::Failure,
                    false => Outcome::Success,
                };
                let answer = Answer {
                    resp,
                    in_flight,
                    request: progress,
                };
                (outcome, Ok(answer))
            }
            Some(Err(e)) => match Failure::of(&e) {
                client @ Failure::Client(..) => return Err(client),
                failure => {
                    let kind = match failure {
                        Failure::Connect => UpstreamErrorKind::Connect,
                        Failure::Tls(_) => UpstreamErrorKind::Tls,
                        _ => UpstreamErrorKind::Reset,
                    };
                    self.metrics.upstream_error(target.index(), kind);
                    tracing::warn!(target_name = %upstream.name, endpoint = %upstream.endpoint(endpoint), error = %flag_store::error::Chain(&e), "upstream request failed");
                    (Outcome::Failure, Err(failure))
                }
            },
            None => {
                self.metrics
                    .upstream_error(target.index(), UpstreamErrorKind::Timeout);
                (Outcome::Failure, Err(Failure::Timeout))
            }
        };
        self.health
            .report(target, endpoint, outcome, self.health.now_ms());
        result
    }

    /// The upstream's response, on its way to the client.
    fn respond(
        &self,
        answer: Answer,
        client_upgrade: Option<Box<ClientUpgrade>>,
        bound: Bound<'_>,
        mut ctx: RequestCtx,
    ) -> Response<ResponseBody> {
        let Answer {
            mut resp,
            in_flight,
            request,
        } = answer;
        let Bound { route, target, .. } = bound;
        let upgraded = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        if let Some(log) = ctx.log.as_mut() {
            log.upstream = Some(ctx.start.elapsed());
        }
        if upgraded {
            // A tunnel opens only to a protocol the request asked for: after a 101 the bytes
            // are no longer HTTP the router reads.
            let Some(client_side) = client_upgrade.filter(|c| c.accepts(resp.headers())) else {
                self.metrics
                    .upstream_error(target.index(), UpstreamErrorKind::Reset);
                return self.refuse(Refusal::UnaskedUpgrade(target), ctx);
            };
            let upstream_side = hyper::upgrade::on(&mut resp);
            let registration = bound
                .binding(StreamKind::Tunnel)
                .map(|b| self.streams.register(b, &self.flags.load()));
            self.tunnels
                .spawn(client_side.on, upstream_side, registration);
        }
        strip_hop_by_hop(resp.headers_mut(), upgraded);
        resp.headers_mut()
            .insert(X_REQUEST_ID.clone(), ctx.request_id);
        let (rparts, rbody) = resp.into_parts();
        // A retry may have landed on the shadow's side itself: nothing to compare then.
        let tap = (ctx.shadow)
            .filter(|copy| !upgraded && copy.shadow_target() != target)
            .map(|copy| Box::new(self.shadows.tap(*copy, rparts.status, &rparts.headers)) as _);
        let completion =
            Completion::new(self.metrics.clone(), ctx.labels, rparts.status, ctx.start)
                .with_in_flight(in_flight, ctx.tenant)
                .with_log(ctx.log.zip(self.access_log.clone()));
        let mut body = ResponseBody::upstream(
            rbody,
            route.idle_timeout,
            target.index(),
            request,
            completion,
        );
        if !upgraded
            && body.is_streaming()
            && let Some(binding) = bound.binding(StreamKind::Response)
        {
            body = body.closing_with(self.streams.register(binding, &self.flags.load()));
        }
        if let Some(tap) = tap {
            body = body.tapped(tap);
        }
        Response::from_parts(rparts, body)
    }
}
