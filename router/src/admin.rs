//! The admin listener, separate from traffic and on loopback by default: metrics, liveness,
//! readiness, the flags this router holds, and `/explain`, which runs the very pick the proxy
//! runs and says why it chose what it chose.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use flag_store::{FlagState, Found, Mode, Placement, TargetId, Targets, model::validate_tenant_id};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};

use crate::config::{Config, RouteKind};
use crate::health::Health;
use crate::pick::{Basis, Decision, HealthView, pick};
use crate::proxy::Proxy;

#[derive(Debug)]
pub struct Admin {
    flags: Arc<FlagState>,
    proxy: Arc<Proxy>,
    health: Arc<Health>,
    targets: Targets,
    default_target: TargetId,
    draining: Arc<AtomicBool>,
}

type AdminResponse = Response<Full<Bytes>>;

impl Admin {
    pub fn new(
        config: &Config,
        flags: Arc<FlagState>,
        proxy: Arc<Proxy>,
        health: Arc<Health>,
        draining: Arc<AtomicBool>,
    ) -> Self {
        Admin {
            flags,
            proxy,
            health,
            targets: config.targets.clone(),
            default_target: config.flags.default_target,
            draining,
        }
    }

    pub async fn handle<B>(&self, req: Request<B>) -> AdminResponse {
        let path = req.uri().path();
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served here\n");
        }
        let query = req.uri().query().unwrap_or("");
        match path {
            "/metrics" => {
                let mut resp = text(StatusCode::OK, self.proxy.metrics.render());
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                resp
            }
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => self.readyz(),
            "/explain" => self.explain(query),
            _ => match path.strip_prefix("/flags/") {
                Some(tenant) if !tenant.is_empty() => self.flag(&percent_decode(tenant)),
                _ => text(
                    StatusCode::NOT_FOUND,
                    "not found; try /metrics, /healthz, /readyz, /flags/TENANT, /explain?tenant=T&path=/P\n",
                ),
            },
        }
    }

    fn readyz(&self) -> AdminResponse {
        if self.draining.load(Ordering::Acquire) {
            return text(StatusCode::SERVICE_UNAVAILABLE, "draining\n");
        }
        if !self.flags.is_loaded() {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "no flag snapshot loaded yet\n",
            );
        }
        text(StatusCode::OK, "ready\n")
    }

    fn flag(&self, tenant: &str) -> AdminResponse {
        if let Err(e) = validate_tenant_id(tenant) {
            return json_response(StatusCode::BAD_REQUEST, json!({ "error": e.to_string() }));
        }
        let snap = self.flags.load();
        match snap.get(tenant) {
            Some(flag) => json_response(
                StatusCode::OK,
                json!({
                    "flag": flag.to_item(tenant, &self.targets),
                    "snapshot_version": snap.version,
                }),
            ),
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
        let routes = self.proxy.routes();
        let Some(route_id) = routes.find(&path) else {
            return json_response(
                StatusCode::OK,
                json!({ "tenant": tenant, "path": path, "route": null, "why": "no route matches this path: the router answers 404" }),
            );
        };
        let route = routes.get(route_id);
        let snap = self.flags.load();
        let now = self.health.now_ms();
        let view = self.health.view(now);
        let tenant_ref = tenant.as_deref();
        // The hash the proxy computes: of a header or cookie value, or of the client address.
        let key_hash = || {
            let tenant = tenant_ref.unwrap_or("");
            match (&key, client_ip) {
                (Some(k), _) => flag_store::sticky::key_hash(tenant, k.as_bytes()),
                (None, Some(ip)) => crate::tenant::client_ip_hash(tenant, ip),
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
            (_, Found::Tenant(f)) => json!(f.to_item(tenant_ref.unwrap_or(""), &self.targets)),
            (_, Found::Default(f)) => json!(f.to_item(flag_store::DEFAULT_TENANT, &self.targets)),
        };
        let mut out = json!({
            "tenant": tenant,
            "path": path,
            "route": route.name,
            "route_kind": match route.kind { RouteKind::Fixed(_) => "fixed", RouteKind::Flagged => "flagged" },
            "snapshot_version": snap.version,
            "flags_loaded": self.flags.is_loaded(),
            "flag": flag,
            "health": self.health_view(now),
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
                let weights = match flag.map(|f| &f.placement) {
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

impl Admin {
    /// The health view a pick uses: each target, healthy or not, and why (its endpoints).
    fn health_view(&self, now: u64) -> Value {
        let view = self.health.view(now);
        self.targets
            .iter()
            .map(|(id, name)| {
                let endpoints: Vec<Value> = self
                    .health
                    .target(id)
                    .endpoints
                    .iter()
                    .enumerate()
                    .map(|(e, ep)| {
                        let state = match (ep.is_up(), self.health.endpoint_available(id, e, now)) {
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
