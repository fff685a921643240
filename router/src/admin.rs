//! The admin listener, separate from traffic and on loopback by default: metrics, liveness,
//! readiness, the flags this router holds, `/explain`, which runs the very pick the proxy
//! runs and says why it chose what it chose, and `PUT /flags/{tenant}`, the one write, which
//! needs the bearer token from `[server] admin_token_file` and goes through the same
//! conditional, audited store write as the CLI. `/shadow` and `/shadow/{tenant}` serve the
//! shadow comparisons' match rates summed over the fleet ([`crate::shadow::fleet`]) and a
//! tenant's recent mismatches here, their bodies only with the read or admin token. The
//! console ([`crate::console`]) adds its routes under `/ui`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use bytes::Bytes;
use flag_store::{
    FlagState, FlagWrite, Found, Mode, Placement, Placing, ShadowItem, StoreError, TargetId,
    Targets, model::validate_tenant_id,
};
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::{AdminToken, Config};
use crate::health::Health;
use crate::policy::{Basis, Decision, HealthView, RouteKind, pick};
use crate::proxy::Proxy;
use crate::shadow::fleet::FleetView;
use arc_swap::ArcSwap;
use flag_store::store::Store;

/// The largest admin request body read (a flag write is a few hundred bytes).
const MAX_ADMIN_BODY: usize = 64 * 1024;
/// How long a client has to send an admin request's body.
const ADMIN_BODY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Admin {
    flags: Arc<FlagState>,
    /// The current config's proxy (a reload swaps it).
    proxy: Arc<ArcSwap<Proxy>>,
    targets: Targets,
    default_target: TargetId,
    leaving: Arc<AtomicBool>,
    ready_max_age: Option<Duration>,
    /// The token and store for `PUT /flags/{tenant}`; `None` when admin writes are disabled.
    writes: Option<(AdminToken, Store)>,
    /// The token of the read API (`/v1/...`); `None` when it is disabled.
    read_token: Option<AdminToken>,
    /// The fleet's registry, for the shadow evidence summed over every router.
    fleet: Arc<FleetView>,
}

/// The body of `PUT /flags/{tenant}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutFlag {
    target: Option<String>,
    weights: Option<BTreeMap<String, u32>>,
    seal: Option<bool>,
    /// `{"target":"new","percent":10}` sets the shadow, `null` removes it, absent keeps it.
    #[serde(default, deserialize_with = "present")]
    shadow: Option<Option<ShadowItem>>,
    /// A split tenant's job side; `null` returns it to the heaviest side; absent keeps it.
    #[serde(default, deserialize_with = "present")]
    jobs: Option<Option<String>>,
    #[serde(default)]
    force: bool,
    reason: Option<String>,
    by: Option<String>,
}

/// A field that is present, even as `null`: tells "remove" from "keep".
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

type AdminResponse = Response<Full<Bytes>>;

impl Admin {
    pub fn new(
        config: &Config,
        flags: Arc<FlagState>,
        proxy: Arc<ArcSwap<Proxy>>,
        leaving: Arc<AtomicBool>,
        store: Option<Store>,
        fleet: Arc<FleetView>,
    ) -> Self {
        Admin {
            flags,
            proxy,
            targets: config.targets.clone(),
            default_target: config.flags.default_target,
            leaving,
            ready_max_age: config.flags.ready_max_age,
            writes: config.server.admin_token.clone().zip(store),
            read_token: config.server.read_token.clone(),
            fleet,
        }
    }

    /// The admin API as a tower service: axum routes the endpoints; the write needs the
    /// bearer token (checked first, so nobody else's body is read), and its body is bounded
    /// in size and in time, each by a layer.
    pub fn service(self: Arc<Self>) -> axum::Router {
        use axum::handler::Handler;
        use axum::routing::get;
        let write = put_flag
            .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
                ADMIN_BODY_TIMEOUT,
            ))
            .layer(tower_http::limit::RequestBodyLimitLayer::new(
                MAX_ADMIN_BODY,
            ))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                authorize,
            ));
        axum::Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { text(StatusCode::OK, "ok\n") }))
            .route("/readyz", get(readyz))
            .route("/explain", get(explain))
            .route("/flags/{tenant}", get(flag).put(write))
            .route("/shadow", get(shadow_summary))
            .route("/shadow/{tenant}", get(shadow_report))
            .route(
                "/v1/owner/{tenant}",
                get(owner.layer(axum::middleware::from_fn_with_state(
                    self.clone(),
                    authorize_read,
                ))),
            )
            .fallback(|| async {
                text(
                    StatusCode::NOT_FOUND,
                    "not found; try /ui (the console), /metrics, /healthz, /readyz, /flags/TENANT, /explain?tenant=T&path=/P, /shadow, /shadow/TENANT, /v1/owner/TENANT?side=S\n",
                )
            })
            .method_not_allowed_fallback(|| async {
                text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "only GET is served here, PUT on /flags/TENANT, and POST on the console's /ui/api/ramps and /ui/api/moves\n",
                )
            })
            .with_state(self)
    }

    fn readyz(&self) -> AdminResponse {
        if self.leaving.load(Ordering::Acquire) {
            return text(StatusCode::SERVICE_UNAVAILABLE, "draining\n");
        }
        if !self.flags.is_loaded() {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "no flag snapshot loaded yet\n",
            );
        }
        let age = self.flags.age();
        if let Some(max) = self.ready_max_age
            && age > max
        {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the flag snapshot is {:.1} s old, over flags.ready_max_age_ms ({} ms)\n",
                    age.as_secs_f64(),
                    max.as_millis()
                ),
            );
        }
        if let Some(why) = self.flags.store_refused() {
            // Still ready: the router routes on its last good snapshot, as in a store outage,
            // and taking every router out of the balancer at once would be a full outage.
            return text(
                StatusCode::OK,
                format!(
                    "ready, on the last good flags (version {}): the flag store is refused: {why}. Check the table, then run `switchyard flags adopt` to accept it\n",
                    self.flags.load().version
                ),
            );
        }
        text(StatusCode::OK, "ready\n")
    }

    /// `PUT /flags/{tenant}`, once [`authorize`] let it through: a body bounded by the
    /// layers, then one conditional write.
    async fn put_flag(&self, tenant: &str, headers: &HeaderMap, body: Body) -> AdminResponse {
        let error = |status, message: String| json_response(status, json!({ "error": message }));
        let Some((_, store)) = &self.writes else {
            unreachable!("authorize refuses writes when they are disabled");
        };
        if let Err(e) = validate_tenant_id(tenant) {
            return error(StatusCode::BAD_REQUEST, e.to_string());
        }
        let expect_version = match if_match(headers) {
            Ok(v) => v,
            Err((status, message)) => return error(status, message),
        };
        let body = match body.collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) => {
                let (status, why) = body_failure(&e);
                return error(status, why);
            }
        };
        let put: PutFlag = match serde_json::from_slice(&body) {
            Ok(put) => put,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "the body is not a flag write ({e}); send {{\"target\": \"new\", \"reason\": \"...\"}} or {{\"weights\": {{\"legacy\": 90, \"new\": 10}}, \"reason\": \"...\"}}"
                    ),
                );
            }
        };
        let Some(reason) = put.reason.filter(|r| !r.trim().is_empty()) else {
            return error(
                StatusCode::BAD_REQUEST,
                "\"reason\" is required: every write says why".into(),
            );
        };
        let placing = match (put.target, put.weights) {
            (Some(_), Some(_)) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "give \"target\" or \"weights\", not both".into(),
                );
            }
            (Some(t), None) => Some(Placing::Pinned(t)),
            (None, Some(w)) => Some(Placing::Split(w)),
            (None, None) if put.seal.is_some() || put.shadow.is_some() || put.jobs.is_some() => {
                None
            }
            (None, None) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "nothing to write: give \"target\", \"weights\", \"seal\", \"shadow\" or \"jobs\"".into(),
                );
            }
        };
        let write = FlagWrite {
            evacuation: None,
            ramp: None,
            hold: Default::default(),
            jobs: put.jobs,
            tenant: tenant.to_owned(),
            placing,
            seal: put.seal,
            shadow: put.shadow,
            by: put.by.unwrap_or_else(|| "admin-api".into()),
            reason,
            expect_version: Some(expect_version),
            force: put.force,
        };
        match store.write(&write, Some(&self.targets)).await {
            Ok((old, new)) => {
                tracing::info!(tenant, by = %write.by, reason = %write.reason, version = new.version, "flag written through the admin API");
                let version = new.version;
                // Answered once this router routes by the write, so a GET that follows shows
                // it (and its ETag); the poll is asked to read the store at once.
                self.flags.poll_soon();
                let seen = tokio::time::timeout(
                    ROUTED_WAIT,
                    self.flags
                        .wait_until(|s| s.get(tenant).is_some_and(|f| f.version >= version)),
                )
                .await
                .is_ok();
                with_etag(
                    json_response(
                        StatusCode::OK,
                        json!({ "old": old, "new": new, "routed_here": seen }),
                    ),
                    version,
                )
            }
            Err(e) => {
                let status = store_status(&e);
                let mut message = flag_store::error::Chain(&e).to_string();
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    message.push_str(
                        "; the write may or may not have applied: GET the flag and retry with If-Match",
                    );
                }
                let mut body = json!({ "error": message });
                if let StoreError::Conflict { actual, by, .. } = &e {
                    body["current_version"] = json!(actual);
                    body["last_written_by"] = json!(by);
                }
                json_response(status, body)
            }
        }
    }

    fn flag(&self, tenant: &str) -> AdminResponse {
        if let Err(e) = validate_tenant_id(tenant) {
            return json_response(StatusCode::BAD_REQUEST, json!({ "error": e.to_string() }));
        }
        let snap = self.flags.load();
        match snap.get(tenant) {
            Some(flag) => {
                let item = flag.to_item(tenant, &self.targets);
                let version = item.version;
                with_etag(
                    json_response(
                        StatusCode::OK,
                        json!({ "flag": item, "snapshot_version": snap.version }),
                    ),
                    version,
                )
            }
            None => {
                let applies = match snap.default_flag() {
                    Some(d) => {
                        json!({ "default_flag": d.to_item(flag_store::DEFAULT_TENANT, &self.targets) })
                    }
                    None => json!({ "default_target": self.targets.name(self.default_target) }),
                };
                json_response(
                    StatusCode::NOT_FOUND,
                    json!({
                        "error": format!("tenant {tenant:?} has no flag of its own"),
                        "applies": applies,
                        "snapshot_version": snap.version,
                    }),
                )
            }
        }
    }

    fn explain(&self, query: &str) -> AdminResponse {
        let mut tenant = None;
        let mut path = None;
        let mut key = None;
        let mut client_ip = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "tenant" => tenant = Some(percent_decode(v)),
                "path" => path = Some(percent_decode(v)),
                "key" => key = Some(percent_decode(v)),
                "client_ip" => match percent_decode(v).parse::<std::net::IpAddr>() {
                    Ok(ip) => client_ip = Some(ip),
                    Err(_) => {
                        return json_response(
                            StatusCode::BAD_REQUEST,
                            json!({ "error": format!("client_ip {v:?} is not an IP address") }),
                        );
                    }
                },
                other => {
                    return json_response(
                        StatusCode::BAD_REQUEST,
                        json!({ "error": format!("unknown parameter {other:?}; use tenant, path, key and client_ip") }),
                    );
                }
            }
        }
        let path = path.unwrap_or_else(|| "/".into());
        if !path.starts_with('/') {
            return json_response(
                StatusCode::BAD_REQUEST,
                json!({ "error": "path must start with '/'" }),
            );
        }
        if let Some(t) = &tenant
            && let Err(e) = validate_tenant_id(t)
        {
            return json_response(StatusCode::BAD_REQUEST, json!({ "error": e.to_string() }));
        }
        // Routed as the proxy routes it: on the path's normal form.
        let normal = match crate::policy::path::normalize(&path) {
            Ok(normal) => normal,
            Err(e) => {
                return json_response(
                    StatusCode::OK,
                    json!({ "tenant": tenant, "path": path, "route": null, "why": format!("{e}: the router answers 400") }),
                );
            }
        };
        let proxy = self.proxy.load();
        let routes = proxy.routes();
        let Some(route_id) = routes.find(&normal) else {
            return json_response(
                StatusCode::OK,
                json!({ "tenant": tenant, "path": path, "route": null, "why": "no route matches this path: the router answers 404" }),
            );
        };
        let route = routes.get(route_id);
        let snap = self.flags.load();
        let health = proxy.health();
        let now = health.now_ms();
        let view = health.view(now);
        let tenant_ref = tenant.as_deref();
        // The hash the proxy computes: of a header or cookie value, or of the client address.
        let key_hash = || {
            let tenant = tenant_ref.unwrap_or("");
            match (&key, client_ip) {
                (Some(k), _) => flag_store::sticky::key_hash(tenant, k.as_bytes()),
                (None, Some(ip)) => crate::policy::tenant::client_ip_hash(tenant, ip),
                (None, None) => flag_store::sticky::key_hash(tenant, b""),
            }
        };
        let decision = pick(
            &snap,
            route,
            tenant_ref,
            key_hash,
            self.default_target,
            &view,
        );
        let flag = match (route.kind, snap.lookup(tenant_ref)) {
            (RouteKind::Fixed(_), _) | (_, Found::Nothing) => Value::Null,
            (_, Found::Rejected(r)) => json!({ "rejected": r.to_string() }),
            (_, Found::Tenant(f)) => {
                json!(f.to_flag().to_item(tenant_ref.unwrap_or(""), &self.targets))
            }
            (_, Found::Default(f)) => json!(
                f.to_flag()
                    .to_item(flag_store::DEFAULT_TENANT, &self.targets)
            ),
        };
        let mut out = json!({
            "tenant": tenant,
            "path": path,
            "route": route.name,
            "route_kind": match route.kind { RouteKind::Fixed(_) => "fixed", RouteKind::Flagged => "flagged" },
            "snapshot_version": snap.version,
            "flags_loaded": self.flags.is_loaded(),
            "flag": flag,
            "health": health_view(&self.targets, health, now),
        });
        let why = match decision {
            Decision::Forward(p) => {
                out["target"] = json!(self.targets.name(p.target));
                out["basis"] = json!(p.basis.as_str());
                out["mode"] = json!(p.mode.to_string());
                out["bucket"] = json!(p.bucket);
                out["failover"] = json!(p.failover);
                self.why(
                    p.basis,
                    p.mode,
                    p.target,
                    tenant_ref,
                    &snap,
                    key.is_some() || client_ip.is_some(),
                )
            }
            Decision::PinnedUnavailable { target, basis } => {
                out["target"] = Value::Null;
                out["basis"] = json!(basis.as_str());
                format!(
                    "pinned to {:?}, which is unavailable: the router answers 503 (a pinned tenant never fails over)",
                    self.targets.name(target)
                )
            }
            Decision::NoHealthyTarget { basis } => {
                out["target"] = Value::Null;
                out["basis"] = json!(basis.as_str());
                "split, but no target with a non-zero weight is healthy: the router answers 503"
                    .into()
            }
            Decision::RejectedFlag => {
                out["target"] = Value::Null;
                out["basis"] = json!(Basis::TenantFlag.as_str());
                "the tenant's flag item is rejected and it has no last good flag: the router answers 503, never a default"
                    .into()
            }
            Decision::Evacuated { side, basis } => {
                out["target"] = Value::Null;
                out["basis"] = json!(basis.as_str());
                format!(
                    "its side {:?} is evacuated and the tenant cannot leave it (sealed there, or no other side in its split): the router answers 503 until `flags restore {0}`",
                    self.targets.name(side)
                )
            }
        };
        let why = match (decision, snap.has_evacuations()) {
            (_, false) => why,
            (decision, true) => {
                out["evacuations"] = (snap.evacuations().iter())
                    .map(|e| json!(e.to_item(&self.targets)))
                    .collect();
                let from = match decision {
                    Decision::Forward(p) if p.mode == Mode::Split => Some(p.owner),
                    Decision::Forward(p) => match snap.lookup(tenant_ref) {
                        Found::Tenant(f) | Found::Default(f) => match f.placement() {
                            flag_store::Placement::Pinned(t) => Some(*t),
                            flag_store::Placement::Split(_) => None,
                        },
                        _ => Some(self.default_target),
                    }
                    .filter(|&t| t != p.target),
                    _ => None,
                };
                match from.filter(|&t| snap.evacuation(t).is_some()) {
                    Some(t) => format!("{why}, because {:?} is evacuated", self.targets.name(t)),
                    None => why,
                }
            }
        };
        let held = (route.kind == RouteKind::Flagged)
            .then(|| tenant_ref.and_then(|t| snap.hold(t)))
            .flatten();
        let why = match held {
            Some(h) if h.active_at(flag_store::fleet::now_ms()) => {
                out["hold"] = json!(**h);
                format!(
                    "held by the move {} until its flip or its deadline (in {} ms): the request waits in this router's queue; then {why}",
                    h.id,
                    h.deadline_ms.saturating_sub(flag_store::fleet::now_ms())
                )
            }
            _ => why,
        };
        out["why"] = json!(why);
        json_response(StatusCode::OK, out)
    }

    fn why(
        &self,
        basis: Basis,
        mode: Mode,
        target: TargetId,
        tenant: Option<&str>,
        snap: &flag_store::Snapshot,
        keyed: bool,
    ) -> String {
        let name = self.targets.name(target);
        let whose = match basis {
            Basis::FixedRoute => {
                return format!("the route is fixed to {name:?}; flags do not apply");
            }
            Basis::ConfigDefault => {
                return format!(
                    "{} and there is no default flag: config flags.default_target {name:?}",
                    match tenant {
                        Some(t) => format!("tenant {t:?} has no flag"),
                        None => "no tenant id".into(),
                    }
                );
            }
            Basis::TenantFlag => format!("tenant {:?}'s flag", tenant.unwrap_or("")),
            Basis::DefaultFlag => match tenant {
                Some(t) => format!("tenant {t:?} has no flag; the default flag (*)"),
                None => "no tenant id; the default flag (*)".into(),
            },
        };
        match mode {
            Mode::Pinned => format!("{whose} pins it to {name:?}"),
            Mode::Split => {
                let flag = match basis {
                    Basis::TenantFlag => tenant.and_then(|t| snap.get(t)),
                    _ => snap.default_flag(),
                };
                let weights = match flag.as_ref().map(|f| &f.placement) {
                    Some(Placement::Split(s)) => s
                        .entries()
                        .iter()
                        .map(|(t, w)| format!("{}={w}", self.targets.name(*t)))
                        .collect::<Vec<_>>()
                        .join(","),
                    _ => String::new(),
                };
                let key_note = if keyed {
                    "the given key's sticky bucket"
                } else {
                    "the sticky bucket of an empty key (pass key=VALUE, a header or cookie sticky key, or client_ip=ADDR, for a given user)"
                };
                format!("{whose} splits it {weights}; {key_note} falls on {name:?}")
            }
        }
    }
}

/// The status of a store's refusal of an admin or console write: a conflict (someone wrote
/// first, a seal, a hold) or a bad write is the caller's to see; anything else is the store's
/// trouble, and the write may or may not have applied.
pub fn store_status(e: &StoreError) -> StatusCode {
    match e {
        StoreError::Conflict { .. } | StoreError::Sealed { .. } | StoreError::Held { .. } => {
            StatusCode::CONFLICT
        }
        StoreError::Item { .. } => StatusCode::BAD_REQUEST,
        StoreError::NotFound(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The health view a pick uses: each target, healthy or not, and why (its endpoints).
pub fn health_view(targets: &Targets, health: &Health, now: u64) -> Value {
    let view = health.view(now);
    targets
        .iter()
        .map(|(id, name)| {
            let endpoints: Vec<Value> = health
                .target(id)
                .endpoints
                .iter()
                .enumerate()
                .map(|(e, ep)| {
                    let state = match (ep.is_up(), health.endpoint_available(id, e, now)) {
                        (_, true) => "available",
                        (false, _) => "down (health checks failing)",
                        (true, false) => "ejected (failures on live traffic)",
                    };
                    json!({ "endpoint": ep.url, "state": state })
                })
                .collect();
            let healthy = view.is_healthy(id);
            (
                name.to_owned(),
                json!({ "healthy": healthy, "endpoints": endpoints }),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

type AdminState = State<Arc<Admin>>;

async fn metrics(State(admin): AdminState) -> AdminResponse {
    let mut resp = text(StatusCode::OK, admin.proxy.load().metrics.render());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

async fn readyz(State(admin): AdminState) -> AdminResponse {
    admin.readyz()
}

async fn explain(State(admin): AdminState, uri: http::Uri) -> AdminResponse {
    admin.explain(uri.query().unwrap_or(""))
}

async fn flag(State(admin): AdminState, Path(tenant): Path<String>) -> AdminResponse {
    admin.flag(&tenant)
}

/// `GET /v1/owner/{tenant}?side=S`, once [`authorize_read`] let it through.
async fn owner(
    State(admin): AdminState,
    Path(tenant): Path<String>,
    uri: http::Uri,
) -> AdminResponse {
    if let Err(e) = validate_tenant_id(&tenant) {
        return json_response(StatusCode::BAD_REQUEST, json!({ "error": e.to_string() }));
    }
    let side = (uri.query().unwrap_or("").split('&'))
        .find_map(|pair| pair.strip_prefix("side="))
        .map(percent_decode);
    if let Some(side) = &side
        && admin.targets.id(side).is_none()
    {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({ "error": format!("side {side:?} is not a target; the targets are {}", admin.targets.known_list()) }),
        );
    }
    if !admin.flags.is_loaded() {
        // An empty snapshot would answer with the default target: a job must not run on that.
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "error": "no flag snapshot loaded yet: who owns the tenant cannot be told" }),
        );
    }
    let snap = admin.flags.load();
    let answer = crate::jobs::api::owner(
        &snap,
        admin.default_target,
        &tenant,
        side.as_deref(),
        flag_store::fleet::now_ms(),
    );
    json_response(StatusCode::OK, answer)
}

async fn put_flag(
    State(admin): AdminState,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> AdminResponse {
    admin.put_flag(&tenant, &headers, body).await
}

/// `GET /shadow`: every tenant's comparisons, summed over the fleet.
async fn shadow_summary(State(admin): AdminState) -> AdminResponse {
    let listing = admin.fleet.read().await;
    let proxy = admin.proxy.load_full();
    let summed = admin.fleet.sum(listing.as_deref().ok(), proxy.shadows());
    json_response(
        StatusCode::OK,
        json!({
            "tenants": summed.into_values().collect::<Vec<_>>(),
            "routers": listing.as_ref().map_or(1, |l| l.routers.len().max(1)),
            "fleet_error": listing.err(),
        }),
    )
}

/// `GET /shadow/{tenant}`: the tenant's comparisons summed over the fleet, and this
/// router's recent mismatches. Their bodies are the tenant's users' data: shown only to a
/// request with the read or the admin token.
async fn shadow_report(
    State(admin): AdminState,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> AdminResponse {
    let listing = admin.fleet.read().await;
    let proxy = admin.proxy.load_full();
    let shadows = proxy.shadows();
    let summed = admin
        .fleet
        .tenant(listing.as_deref().ok(), shadows, &tenant);
    let mut recent = shadows.report(&tenant).recent_mismatches;
    let tokens = [
        admin.read_token.as_ref(),
        admin.writes.as_ref().map(|w| &w.0),
    ];
    let bodies = match tokens.iter().flatten().any(|t| bearer_matches(&headers, t)) {
        true => "shown".to_owned(),
        false => {
            for m in &mut recent {
                m.primary_body.clear();
                m.shadow_body.clear();
            }
            let how = match tokens.iter().all(Option::is_none) {
                true => "set [server] read_token_file in the router's config, then send it",
                false => "send `Authorization: Bearer TOKEN` with the read or the admin token",
            };
            format!("withheld: bodies are user data; {how}")
        }
    };
    json_response(
        StatusCode::OK,
        json!({
            "tenant": summed.tenant,
            "compared": summed.compared,
            "matched": summed.matched,
            "match_rate": summed.match_rate,
            "routers": summed.routers,
            "fleet_error": listing.err(),
            "mismatches_from": admin.fleet.router,
            "recent_mismatches": recent,
            "bodies": bodies,
        }),
    )
}

/// The write's gate: 403 while writes are disabled, 401 without the bearer token.
async fn authorize(
    State(admin): AdminState,
    req: Request<Body>,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let tokens = (admin.writes.as_ref()).map(|(token, _)| vec![token]);
    let check = Bearer {
        off: "admin writes are disabled: set [server] admin_token_file in the router's config",
        needs: "admin writes need the header `Authorization: Bearer TOKEN` with the token in [server] admin_token_file",
        realm: "Bearer realm=\"switchyard-admin\"",
    };
    check.run(tokens, req, next).await
}

/// The read API's check: the read token, or the admin token (which may do more).
async fn authorize_read(
    State(admin): AdminState,
    req: Request<Body>,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let write = admin.writes.as_ref().map(|(token, _)| token);
    let tokens =
        (admin.read_token.as_ref()).map(|read| std::iter::once(read).chain(write).collect());
    let check = Bearer {
        off: "the read API is disabled: set [server] read_token_file in the router's config",
        needs: "the read API needs the header `Authorization: Bearer TOKEN` with the token in [server] read_token_file",
        realm: "Bearer realm=\"switchyard-read\"",
    };
    check.run(tokens, req, next).await
}

/// A bearer-token check in front of an endpoint, with what its refusals say.
pub struct Bearer {
    /// Why the endpoint is off when no token is set (403).
    pub off: &'static str,
    /// What a request without a matching token needs (401).
    pub needs: &'static str,
    /// The `WWW-Authenticate` challenge.
    pub realm: &'static str,
}

impl Bearer {
    /// Lets the request through when it presents one of `tokens`; `None`: the endpoint is off.
    pub async fn run(
        &self,
        tokens: Option<Vec<&AdminToken>>,
        req: Request<Body>,
        next: axum::middleware::Next,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        let error = |status, message: &str| json_response(status, json!({ "error": message }));
        let Some(tokens) = tokens else {
            return error(StatusCode::FORBIDDEN, self.off).into_response();
        };
        if !tokens.iter().any(|t| bearer_matches(req.headers(), t)) {
            let mut resp = error(StatusCode::UNAUTHORIZED, self.needs);
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(self.realm),
            );
            return resp.into_response();
        }
        next.run(req).await
    }
}

/// Why a write's body could not be read: over the size limit, too slow, or cut off.
fn body_failure(e: &axum::Error) -> (StatusCode, String) {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is over {MAX_ADMIN_BODY} bytes"),
            );
        }
        if err.is::<tower_http::timeout::TimeoutError>() {
            return (
                StatusCode::REQUEST_TIMEOUT,
                format!("the body did not arrive within {ADMIN_BODY_TIMEOUT:?}"),
            );
        }
        source = err.source();
    }
    (
        StatusCode::BAD_REQUEST,
        format!("cannot read the body: {e}"),
    )
}

/// How long a `PUT /flags/{tenant}` waits for this router to route by its write (a poll of
/// the store, asked for at once) before it answers `"routed_here": false`.
const ROUTED_WAIT: Duration = Duration::from_secs(2);

/// Adds a flag's version as the response's `ETag` (the value `If-Match` takes back).
fn with_etag(mut resp: AdminResponse, version: u64) -> AdminResponse {
    let etag = header::HeaderValue::try_from(format!("\"{version}\""))
        .expect("a quoted number is a valid header value");
    resp.headers_mut().insert(header::ETAG, etag);
    resp
}

/// Whether the request carries `Authorization: Bearer <the token>`.
fn bearer_matches(headers: &HeaderMap, token: &AdminToken) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| {
            let v = v.as_bytes();
            let scheme = v.get(..7)?;
            scheme
                .eq_ignore_ascii_case(b"bearer ")
                .then(|| v[7..].trim_ascii())
        })
        .is_some_and(|presented| token.matches(presented))
}

/// The version a write is conditional on: `If-Match: 3` or `If-Match: "3"` (0: no flag yet).
fn if_match(headers: &HeaderMap) -> Result<u64, (StatusCode, String)> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Err((StatusCode::PRECONDITION_REQUIRED, "admin writes are conditional: send `If-Match: VERSION` with the version you read (GET /flags/TENANT gives it as the ETag; 0 for a tenant with no flag)".into()));
    };
    let text = value.to_str().unwrap_or("").trim();
    let unquoted = text.strip_prefix('"').and_then(|t| t.strip_suffix('"'));
    unquoted.unwrap_or(text).parse().map_err(|_| {
        (
            StatusCode::BAD_REQUEST,
            format!("If-Match {text:?} is not a flag version (a whole number, e.g. 3 or \"3\")"),
        )
    })
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> AdminResponse {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn json_response(status: StatusCode, value: Value) -> AdminResponse {
    let mut body = serde_json::to_vec_pretty(&value).expect("JSON values serialise");
    body.push(b'\n');
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Decodes `%XX` escapes and `+` (form encoding) in a query value; bad escapes stay as written.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let escaped = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match escaped {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb+c"), "a/b c");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
