//! The operator console: a page at `/ui` on the admin listener, for the people deciding
//! mid-batch whether to go on. It shows the fleet (every router's flag version, snapshot age
//! and last beat), the flag store's state, each target's endpoints and the last ten minutes
//! of its traffic, the holds, ramps and evacuations in force; a table of tenants, searched
//! and filtered on the server; and one tenant whole: its flag, its pick (`/explain`), the
//! fleet's shadow evidence, its audit trail and its job owner.
//!
//! The page is HTML, CSS and a small script embedded in the binary (`assets/`), served with a
//! strict Content-Security-Policy (no inline script or style, nothing from another origin).
//! The script renders every value from the store or from users (tenant ids, reasons,
//! mismatching bodies) as text, never as HTML. Every write needs the admin token the operator
//! enters, sent as a bearer header (a cookie would let another site write): flags through the
//! admin API's `PUT /flags/{tenant}`, conditional on the version the page showed; ramps and
//! moves with a hold through the engines the CLI runs ([`crate::cutover::ramp_commands`],
//! [`moves`]). The console answers only requests addressed to this router by address,
//! `localhost` or a configured name, so a page elsewhere cannot read it by DNS rebinding.
//!
//! Nothing here runs on the hot path: the charts come from a sampler that reads the
//! router's counters every ten seconds ([`series`]), and the tables from the snapshot.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::extract::{Path, State};
use bytes::Bytes;
use flag_store::ramp::RampState;
use flag_store::store::Store;
use flag_store::{FlagState, Placing, TargetId, model::validate_tenant_id};
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};

use crate::config::AdminToken;
use crate::proxy::Proxy;
use crate::shadow::fleet::FleetView;

pub mod moves;
pub mod series;
pub mod tenants;

/// Every console answer's policy: scripts and styles from the listener only, no inline
/// code, no frames, no forms posted anywhere, no plug-ins.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
    connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The largest body a console write reads (a ramp of a few thousand tenants).
const MAX_WRITE_BODY: usize = 256 * 1024;
/// How long a client has to send a console write's body.
const WRITE_BODY_WAIT: Duration = Duration::from_secs(10);

/// Audit records a tenant page shows, newest first.
const HISTORY_SHOWN: usize = 50;
/// How long the tenant page waits for its audit trail.
const HISTORY_WAIT: Duration = Duration::from_secs(3);

const PAGE: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

/// What the console reads.
#[derive(Debug)]
pub struct Console {
    pub flags: Arc<FlagState>,
    pub live: Arc<ArcSwap<Proxy>>,
    /// The flag store, for audit trails (reads only).
    pub store: Store,
    pub fleet: Arc<FleetView>,
    pub series: Arc<series::Series>,
    pub default_target: TargetId,
    /// A router whose record is older than this is not live.
    pub live_after: Duration,
    /// The admin token the console's own writes (ramps) need, as `PUT /flags/{tenant}` does;
    /// `None`: writes are disabled on this router.
    pub token: Option<AdminToken>,
    /// Moves with a hold started here, and their logs.
    pub moves: Arc<moves::Moves>,
    /// The gate of those moves (`[fleet] hold_gate_url`), or why there can be none.
    pub gate: Result<crate::cutover::mover::Gate, String>,
    /// Set when the router stops: a move in progress aborts.
    pub stop: tokio::sync::watch::Receiver<bool>,
    /// Host names the console answers to besides IP addresses and `localhost`.
    pub hosts: Vec<String>,
}

type ConsoleState = State<Arc<Console>>;
type ConsoleResponse = Response<Full<Bytes>>;

impl Console {
    /// The console of a router starting with `config`, its charts' sampler running until
    /// `stop` is set.
    pub fn start(
        config: &crate::config::Config,
        flags: &Arc<FlagState>,
        live: &Arc<ArcSwap<Proxy>>,
        store: &Store,
        fleet: Arc<FleetView>,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> Arc<Console> {
        let series = Arc::new(series::Series::default());
        tokio::spawn(series.clone().run(live.clone(), stop.clone()));
        use crate::cutover::mover::{Gate, GateUrl};
        let gate = match config
            .fleet
            .hold_gate_url
            .as_deref()
            .map(|u| GateUrl::new(u, None))
        {
            None => Ok(Gate::None),
            Some(Ok(url)) => Ok(Gate::Url(Box::new(url))),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "fleet.hold_gate_url cannot be asked: the console's moves with a hold are off");
                Err(format!(
                    "fleet.hold_gate_url cannot be asked ({e}): moves with a hold are off on this router"
                ))
            }
        };
        Arc::new(Console {
            hosts: config.server.console_hosts.clone(),
            moves: Arc::default(),
            gate,
            stop: stop.clone(),
            flags: flags.clone(),
            live: live.clone(),
            store: store.clone(),
            fleet,
            series,
            default_target: config.flags.default_target,
            live_after: config.fleet.heartbeat * 3,
            token: config.server.admin_token.clone(),
        })
    }

    /// The console's routes, to merge into the admin listener's. Its writes need the admin
    /// token (checked before the body is read) and their bodies are bounded in size and time.
    pub fn routes(self: Arc<Self>) -> axum::Router {
        use axum::routing::{get, post};
        use tower_http::{limit::RequestBodyLimitLayer, timeout::RequestBodyTimeoutLayer};
        // The writes: the token first, then a body bounded in size and in time.
        let writes = axum::Router::new()
            .route("/ui/api/moves", post(start_move))
            .route("/ui/api/ramps", post(start_ramp))
            .route("/ui/api/ramps/{id}/{action}", post(change_ramp))
            .route_layer(RequestBodyTimeoutLayer::new(WRITE_BODY_WAIT))
            .route_layer(RequestBodyLimitLayer::new(MAX_WRITE_BODY))
            .route_layer(axum::middleware::from_fn_with_state(
                self.clone(),
                authorize,
            ));
        let page = get(|| async { asset(PAGE, "text/html; charset=utf-8") });
        axum::Router::new()
            .merge(writes)
            .route("/ui/api/moves", get(moves))
            .route("/ui", page.clone())
            .route("/ui/", page)
            .route(
                "/ui/console.js",
                get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
            )
            .route(
                "/ui/console.css",
                get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
            )
            .route("/ui/api/overview", get(overview))
            .route("/ui/api/tenants", get(tenants))
            .route("/ui/api/tenant/{tenant}", get(tenant))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                same_host,
            ))
            .with_state(self)
    }

    /// The overview: the fleet, the store, the targets and their traffic, what is in force.
    async fn overview(&self) -> Value {
        let listing = self.fleet.read().await;
        let now = flag_store::fleet::now_ms();
        let snap = self.flags.load_full();
        let proxy = self.live.load_full();
        let targets = snap.targets();
        let newest = (listing.iter().flat_map(|l| l.routers.iter()))
            .map(|p| p.flag_version)
            .max()
            .unwrap_or(snap.version);
        let routers: Vec<Value> = (listing.iter().flat_map(|l| l.routers.iter()))
            .map(|p| {
                json!({
                    "router": p.router,
                    "build": p.build,
                    "flag_version": p.flag_version,
                    "behind": p.flag_version < newest,
                    "version_for_ms": now.saturating_sub(p.version_since_ms),
                    "snapshot_age_ms": now.saturating_sub(p.snapshot_ms),
                    "seen_ms_ago": p.age_ms(now),
                    "live": p.age_ms(now) < self.live_after.as_millis() as u64,
                    "this": p.router == self.fleet.router,
                })
            })
            .collect();
        let health = crate::admin::health_view(targets, proxy.health(), now);
        let series = self.series.points();
        let target_rows: Vec<Value> = (targets.iter())
            .map(|(id, name)| {
                let evacuated = snap.evacuation(id).map(|e| {
                    json!({
                        "to": targets.name(e.to),
                        "include_pinned": e.include_pinned,
                        "by": e.audit.updated_by.as_deref(),
                        "reason": e.audit.reason.as_deref(),
                    })
                });
                json!({
                    "name": name,
                    "healthy": health[name]["healthy"],
                    "endpoints": health[name]["endpoints"],
                    "evacuated": evacuated,
                    "series": series.iter().find(|(t, _)| t == name).map(|(_, p)| p),
                })
            })
            .collect();
        let mut holds: std::collections::BTreeMap<&str, Value> = Default::default();
        for (_, hold) in snap.holds().filter(|(_, h)| h.active_at(now)) {
            holds.insert(
                &hold.id,
                json!({
                    "id": hold.id,
                    "tenants": hold.tenants,
                    "left_ms": hold.deadline_ms.saturating_sub(now),
                }),
            );
        }
        // In force: running or paused, and rolled back (stopped, for someone to look at).
        let shown = |s: RampState| s.is_active() || s == RampState::RolledBack;
        let ramps: Vec<Value> = (snap.ramps().iter())
            .filter(|r| shown(r.item.state))
            .map(|r| {
                let item = &r.item;
                json!({
                    "id": r.id,
                    "from": targets.name(r.from),
                    "to": targets.name(r.to),
                    "state": item.state.as_str(),
                    "step": item.at,
                    "steps": item.steps,
                    "tenants": item.tenants.len(),
                    "step_left_ms": (item.step_started_ms + item.step_ms).saturating_sub(now),
                    "why": item.why,
                })
            })
            .collect();
        json!({
            "router": self.fleet.router,
            "build": env!("CARGO_PKG_VERSION"),
            "writes": self.token.is_some(),
            "store": {
                "describe": self.store.describe(),
                "loaded": self.flags.is_loaded(),
                "version": snap.version,
                "age_ms": self.flags.age().as_millis() as u64,
                "refused": self.flags.store_refused(),
                "rejected": snap.rejected.iter().take(100).map(ToString::to_string).collect::<Vec<_>>(),
                "rejected_count": snap.rejected.len(),
                "tenants": snap.len(),
            },
            "fleet": {
                "routers": routers,
                "unreadable": listing.as_ref().map_or(&[][..], |l| &l.unreadable[..]),
                "error": listing.as_ref().err(),
            },
            "targets": target_rows,
            "holds": holds.into_values().collect::<Vec<_>>(),
            "ramps": ramps,
            "evacuations": snap.evacuations().iter().map(|e| json!({
                "side": targets.name(e.side),
                "to": targets.name(e.to),
                "include_pinned": e.include_pinned,
            })).collect::<Vec<_>>(),
            "series_step_s": series::STEP.as_secs(),
        })
    }

    /// One page of the tenant table.
    fn tenants(&self, query: &str) -> Result<Value, String> {
        let snap = self.flags.load_full();
        let q = tenants::Query::parse(query, &snap, flag_store::fleet::now_ms())?;
        let page = tenants::page(&snap, &q);
        Ok(json!({
            "tenants": page.rows,
            "matched": page.matched,
            "by_target": page.by_target,
            "next": page.next,
            "total": snap.len(),
            "snapshot_version": snap.version,
        }))
    }

    /// One tenant: its flag (or what applies without one), hold, ramp, job owner, the
    /// fleet's shadow evidence and its audit trail.
    async fn tenant(&self, tenant: &str) -> Value {
        // The audit trail and the fleet are read at once: each is bounded in time.
        let (history, listing) = tokio::join!(
            tokio::time::timeout(HISTORY_WAIT, self.store.history(tenant)),
            self.fleet.read(),
        );
        let now = flag_store::fleet::now_ms();
        let snap = self.flags.load_full();
        let proxy = self.live.load_full();
        let targets = snap.targets();
        let flag = snap.get(tenant).map(|f| f.to_item(tenant, targets));
        let applies = match (&flag, snap.default_flag()) {
            (Some(_), _) => Value::Null,
            (None, Some(d)) => {
                json!({ "default_flag": d.to_item(flag_store::DEFAULT_TENANT, targets) })
            }
            (None, None) => json!({ "default_target": targets.name(self.default_target) }),
        };
        let ramp = snap.ramp_of(tenant).map(|r| {
            json!({ "id": r.id, "state": r.item.state.as_str(), "step": r.item.at, "steps": r.item.steps, "to": targets.name(r.to) })
        });
        let (history, history_error) = match history {
            Ok(Ok(mut records)) => {
                records.reverse();
                records.truncate(HISTORY_SHOWN);
                (json!(records), Value::Null)
            }
            Ok(Err(e)) => (json!([]), json!(flag_store::error::Chain(&e).to_string())),
            Err(_) => (
                json!([]),
                json!(format!("the store did not answer within {HISTORY_WAIT:?}")),
            ),
        };
        json!({
            "tenant": tenant,
            "flag": flag,
            "applies": applies,
            "snapshot_version": snap.version,
            "hold": snap.hold(tenant).filter(|h| h.active_at(now)).map(|h| json!({
                "id": h.id, "left_ms": h.deadline_ms.saturating_sub(now),
            })),
            "ramp": ramp,
            "owner": crate::jobs::api::owner(&snap, self.default_target, tenant, None, now),
            "evidence": self.fleet.tenant(listing.as_deref().ok(), proxy.shadows(), tenant),
            "fleet_error": listing.err(),
            "history": history,
            "history_error": history_error,
            "targets": targets.iter().map(|(_, n)| n).collect::<Vec<_>>(),
            "writes": self.token.is_some(),
            "gate": matches!(self.gate, Ok(crate::cutover::mover::Gate::Url(_))),
        })
    }
}

/// The body of `POST /ui/api/ramps`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RampStart {
    id: String,
    tenants: Vec<String>,
    to: String,
    steps: Vec<u32>,
    step_seconds: u64,
    /// Points of 5xx above the side left, in percent (`1` is 1%).
    max_5xx_percent: Option<f64>,
    max_p99_ratio: Option<f64>,
    max_shadow_mismatch_percent: Option<f64>,
    #[serde(default = "default_min_requests")]
    min_requests: u64,
    reason: String,
    by: Option<String>,
}

fn default_min_requests() -> u64 {
    100
}

/// The body of `POST /ui/api/ramps/{id}/{pause|resume|abort}`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RampChange {
    reason: String,
    by: Option<String>,
}

/// Who a console write is recorded as: the name the operator gave, marked as the console's.
fn author(by: Option<&str>) -> String {
    match by.map(str::trim).filter(|b| !b.is_empty()) {
        Some(name) => format!("{name} (console)"),
        None => "console".into(),
    }
}

fn bad_request(error: String) -> ConsoleResponse {
    json_answer(StatusCode::BAD_REQUEST, &json!({ "error": error }))
}

/// A write's body as `T` with a reason, or what is wrong with it.
fn parse_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
    reason: impl Fn(&T) -> &str,
) -> Result<T, String> {
    let value: T = serde_json::from_slice(body).map_err(|e| format!("the body: {e}"))?;
    if reason(&value).trim().is_empty() {
        return Err("say why: `reason` is recorded with the write".into());
    }
    Ok(value)
}

/// `POST /ui/api/ramps`: starts a ramp, as `switchyard ramp start` does.
async fn start_ramp(State(console): ConsoleState, body: Bytes) -> ConsoleResponse {
    use crate::cutover::ramp_commands::{self, CommandError};
    let r: RampStart = match parse_body(&body, |r: &RampStart| &r.reason) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    let points =
        |name: &str, v: Option<f64>| v.map(|p| ramp_commands::basis_points(name, p)).transpose();
    let guards = match (
        points("max_5xx_percent", r.max_5xx_percent),
        points("max_shadow_mismatch_percent", r.max_shadow_mismatch_percent),
    ) {
        (Ok(max_5xx_bp), Ok(max_shadow_mismatch_bp)) => flag_store::ramp::Guards {
            max_5xx_bp,
            max_p99_ratio_pct: r.max_p99_ratio.map(ramp_commands::ratio_pct),
            max_shadow_mismatch_bp,
            min_requests: r.min_requests,
        },
        (Err(e), _) | (_, Err(e)) => return bad_request(e),
    };
    let start = ramp_commands::Start {
        id: r.id,
        tenants: r.tenants,
        to: r.to,
        steps: r.steps,
        step_time: Duration::from_secs(r.step_seconds),
        guards,
        by: author(r.by.as_deref()),
        reason: r.reason,
    };
    let targets = console.flags.load().targets().clone();
    match ramp_commands::start(&console.store, Some(&targets), start).await {
        Ok((item, version)) => json_answer(
            StatusCode::CREATED,
            &json!({ "ramp": item, "version": version }),
        ),
        Err(CommandError::Store(e)) => store_refusal(&e),
        Err(e) => json_answer(StatusCode::CONFLICT, &json!({ "error": e.to_string() })),
    }
}

/// `POST /ui/api/ramps/{id}/{pause|resume|abort}`.
async fn change_ramp(
    State(console): ConsoleState,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> ConsoleResponse {
    use crate::cutover::ramp_commands::{self, CommandError};
    let to = match action.as_str() {
        "pause" => RampState::Paused,
        "resume" => RampState::Running,
        "abort" => RampState::Aborted,
        _ => {
            let e = format!("{action:?}: say pause, resume or abort");
            return json_answer(StatusCode::NOT_FOUND, &json!({ "error": e }));
        }
    };
    let r: RampChange = match parse_body(&body, |r: &RampChange| &r.reason) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    let by = author(r.by.as_deref());
    match ramp_commands::change(&console.store, &id, to, &by, &r.reason).await {
        Ok(item) => json_answer(StatusCode::OK, &json!({ "ramp": item })),
        Err(e @ CommandError::NotFound(_)) => {
            json_answer(StatusCode::NOT_FOUND, &json!({ "error": e.to_string() }))
        }
        Err(CommandError::Store(e)) => store_refusal(&e),
        Err(e) => json_answer(StatusCode::CONFLICT, &json!({ "error": e.to_string() })),
    }
}

/// The body of `POST /ui/api/moves`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveBody {
    tenants: Vec<String>,
    target: Option<String>,
    weights: Option<std::collections::BTreeMap<String, u32>>,
    #[serde(default)]
    seal: bool,
    #[serde(default)]
    force: bool,
    #[serde(default = "default_hold_seconds")]
    hold_max_seconds: u64,
    reason: String,
    by: Option<String>,
}

fn default_hold_seconds() -> u64 {
    10
}

/// `POST /ui/api/moves`: a move with a hold, run by this router; its steps are read back
/// from `GET /ui/api/moves`. A move the engine refuses outright says so in its log.
async fn start_move(State(console): ConsoleState, body: Bytes) -> ConsoleResponse {
    let m: MoveBody = match parse_body(&body, |m: &MoveBody| &m.reason) {
        Ok(m) => m,
        Err(e) => return bad_request(e),
    };
    let placing = match (m.target, m.weights) {
        (Some(t), None) => Placing::Pinned(t),
        (None, Some(w)) => Placing::Split(w),
        _ => return bad_request("say where they move: `target` or `weights`, one of them".into()),
    };
    let hold_max = Duration::from_secs(m.hold_max_seconds);
    if hold_max.is_zero() || hold_max > moves::MAX_HOLD {
        let most = moves::MAX_HOLD.as_secs();
        return bad_request(format!(
            "hold_max_seconds {}: from 1 to {most}",
            m.hold_max_seconds
        ));
    }
    if m.tenants.is_empty() {
        return bad_request("name at least one tenant to move".into());
    }
    if let Some(e) = m.tenants.iter().find_map(|t| validate_tenant_id(t).err()) {
        return bad_request(e.to_string());
    }
    let asked = moves::Asked {
        tenants: m.tenants,
        placing,
        seal: m.seal,
        force: m.force,
        hold_max,
        by: author(m.by.as_deref()),
        reason: m.reason,
    };
    let targets = console.flags.load().targets().clone();
    let store = console.store.clone();
    let gate = match console.gate.clone() {
        Ok(gate) => gate,
        Err(e) => return json_answer(StatusCode::SERVICE_UNAVAILABLE, &json!({ "error": e })),
    };
    let id = console
        .moves
        .start(store, targets, gate, asked, console.stop.clone());
    json_answer(StatusCode::ACCEPTED, &json!({ "move": id }))
}

/// `GET /ui/api/moves`: the moves started here, newest first, with their steps.
async fn moves(State(console): ConsoleState) -> ConsoleResponse {
    json_answer(StatusCode::OK, &json!({ "moves": console.moves.list() }))
}

/// A store's refusal of a console write, with the admin API's statuses.
fn store_refusal(e: &flag_store::StoreError) -> ConsoleResponse {
    let error = flag_store::error::Chain(e).to_string();
    json_answer(crate::admin::store_status(e), &json!({ "error": error }))
}

/// Whether `host` (a `Host` header: a name or address, maybe with a port) is one the console
/// answers to: an IP address, `localhost`, or a configured name.
fn host_allowed(host: &str, names: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name.parse::<std::net::IpAddr>().is_ok() || name == "localhost" || names.contains(&name)
}

/// The console answers only a request whose `Host` names this listener as a browser reaches
/// it directly (an address, `localhost`, or `[server] console_hosts`): a page on another site
/// that rebinds its own name to this address (DNS rebinding) reads nothing and writes nothing.
async fn same_host(
    State(console): ConsoleState,
    req: http::Request<axum::body::Body>,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let host = (req.headers().get(header::HOST))
        .and_then(|h| h.to_str().ok())
        .or(req.uri().authority().map(|a| a.as_str()));
    match host {
        Some(host) if host_allowed(host, &console.hosts) => next.run(req).await,
        _ => {
            let error = format!(
                "the console answers to this router's address, localhost, or a name in [server] console_hosts, not {:?}",
                host.unwrap_or("")
            );
            json_answer(StatusCode::MISDIRECTED_REQUEST, &json!({ "error": error })).into_response()
        }
    }
}

/// The gate of the console's writes: the admin token, as for `PUT /flags/{tenant}`.
async fn authorize(
    State(console): ConsoleState,
    req: http::Request<axum::body::Body>,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let check = crate::admin::Bearer {
        off: "writes are disabled: set [server] admin_token_file in the router's config",
        needs: "the console's writes need the header `Authorization: Bearer TOKEN` with the token in [server] admin_token_file",
        realm: "Bearer realm=\"switchyard-admin\"",
    };
    check
        .run(console.token.as_ref().map(|t| vec![t]), req, next)
        .await
}

async fn overview(State(console): ConsoleState) -> ConsoleResponse {
    json_answer(StatusCode::OK, &console.overview().await)
}

async fn tenants(State(console): ConsoleState, uri: http::Uri) -> ConsoleResponse {
    match console.tenants(uri.query().unwrap_or("")) {
        Ok(page) => json_answer(StatusCode::OK, &page),
        Err(e) => json_answer(StatusCode::BAD_REQUEST, &json!({ "error": e })),
    }
}

async fn tenant(State(console): ConsoleState, Path(tenant): Path<String>) -> ConsoleResponse {
    if let Err(e) = validate_tenant_id(&tenant) {
        return json_answer(StatusCode::BAD_REQUEST, &json!({ "error": e.to_string() }));
    }
    json_answer(StatusCode::OK, &console.tenant(&tenant).await)
}

fn asset(body: &'static str, content_type: &'static str) -> ConsoleResponse {
    guarded(
        StatusCode::OK,
        Bytes::from_static(body.as_bytes()),
        content_type,
    )
}

fn json_answer(status: StatusCode, value: &Value) -> ConsoleResponse {
    let body = serde_json::to_vec(value).expect("a JSON value serializes");
    guarded(status, body.into(), "application/json")
}

/// An answer with the console's security headers.
fn guarded(status: StatusCode, body: Bytes, content_type: &'static str) -> ConsoleResponse {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_answers_to_addresses_localhost_and_configured_names_only() {
        let names = ["router-a.internal".to_owned()];
        for ok in [
            "127.0.0.1:9090",
            "10.0.3.7",
            "[::1]:9090",
            "localhost:9090",
            "LOCALHOST",
            "router-a.internal:9090",
            "Router-A.Internal.",
        ] {
            assert!(host_allowed(ok, &names), "{ok}");
        }
        for refused in [
            "evil.example:9090",
            "evil.example",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "router-a.internal.evil.example",
            "",
        ] {
            assert!(!host_allowed(refused, &names), "{refused}");
        }
    }
}
