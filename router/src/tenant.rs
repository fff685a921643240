//! Step 1 of the hot path: which tenant a request belongs to, and the request key that keeps
//! a split tenant's users sticky. Extractors run in config order; the first that finds a
//! tenant wins. Nothing here allocates unless a host needs lowercasing or a JWT is decoded.

use std::borrow::Cow;
use std::net::IpAddr;

use base64::Engine;
use flag_store::{DEFAULT_TENANT, ItemError, model::validate_tenant_id};
use http::HeaderName;
use http::request::Parts;

/// One way to find the tenant in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extractor {
    /// `header:x-tenant-id`: the header's value.
    Header(HeaderName),
    /// `host:.app.example.com`: the first label of a host ending in this suffix.
    Host(String),
    /// `path:/t/`: the path segment after this prefix.
    Path(String),
    /// `jwt:tenant_id`: a claim of the bearer JWT (read for routing only; not verified here,
    /// the backend verifies it). Dots reach into nested objects (`org.id`).
    Jwt(Vec<String>),
}

/// Closed set of extractor kinds, for explain output and error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtractorKind {
    Header,
    Host,
    Path,
    Jwt,
}

impl ExtractorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExtractorKind::Header => "header",
            ExtractorKind::Host => "host",
            ExtractorKind::Path => "path",
            ExtractorKind::Jwt => "jwt",
        }
    }
}

/// Longest bearer token decoded for a claim.
const MAX_JWT_BYTES: usize = 8 * 1024;

impl Extractor {
    pub fn parse(spec: &str) -> Result<Extractor, String> {
        let (kind, arg) = spec
            .split_once(':')
            .ok_or_else(|| format!("{spec:?} is not KIND:ARG (kinds: header, host, path, jwt)"))?;
        match kind {
            "header" => HeaderName::try_from(arg)
                .map(Extractor::Header)
                .map_err(|_| format!("{arg:?} is not a valid header name")),
            "host" => {
                if !arg.starts_with('.') || arg.len() < 2 {
                    return Err(format!(
                        "host suffix {arg:?} must start with '.', e.g. \"host:.app.example.com\""
                    ));
                }
                Ok(Extractor::Host(arg.to_ascii_lowercase()))
            }
            "path" => {
                if !arg.starts_with('/') || !arg.ends_with('/') {
                    return Err(format!(
                        "path prefix {arg:?} must start and end with '/', e.g. \"path:/t/\""
                    ));
                }
                Ok(Extractor::Path(arg.to_owned()))
            }
            "jwt" => {
                let path: Vec<String> = arg.split('.').map(str::to_owned).collect();
                if path.iter().any(String::is_empty) {
                    return Err(format!("JWT claim {arg:?} is empty or has an empty part"));
                }
                Ok(Extractor::Jwt(path))
            }
            other => Err(format!(
                "unknown tenant extractor {other:?} in {spec:?} (kinds: header, host, path, jwt)"
            )),
        }
    }

    pub fn kind(&self) -> ExtractorKind {
        match self {
            Extractor::Header(_) => ExtractorKind::Header,
            Extractor::Host(_) => ExtractorKind::Host,
            Extractor::Path(_) => ExtractorKind::Path,
            Extractor::Jwt(_) => ExtractorKind::Jwt,
        }
    }

    fn find<'a>(&self, parts: &'a Parts) -> Option<Cow<'a, str>> {
        match self {
            Extractor::Header(name) => {
                let v = parts.headers.get(name)?;
                Some(Cow::Borrowed(v.to_str().unwrap_or("\u{fffd}")))
            }
            Extractor::Host(suffix) => {
                let host = request_host(parts)?;
                let host = strip_port(host);
                if host.len() <= suffix.len()
                    || !host.is_char_boundary(host.len() - suffix.len())
                    || !host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                {
                    return None;
                }
                let label = &host[..host.len() - suffix.len()];
                if label.contains('.') {
                    return None;
                }
                if label.bytes().any(|b| b.is_ascii_uppercase()) {
                    Some(Cow::Owned(label.to_ascii_lowercase()))
                } else {
                    Some(Cow::Borrowed(label))
                }
            }
            Extractor::Path(prefix) => {
                let rest = parts.uri.path().strip_prefix(prefix.as_str())?;
                let segment = rest.split('/').next().unwrap_or("");
                (!segment.is_empty()).then_some(Cow::Borrowed(segment))
            }
            Extractor::Jwt(claim) => jwt_claim(parts, claim).map(Cow::Owned),
        }
    }
}

/// The request's host: the Host header, or the URI's authority (HTTP/2, absolute form).
pub fn request_host(parts: &Parts) -> Option<&str> {
    match parts.headers.get(http::header::HOST) {
        Some(h) => h.to_str().ok(),
        None => parts.uri.authority().map(|a| a.as_str()),
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host; // IPv6 literal: never a tenant host.
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

fn jwt_claim(parts: &Parts, claim: &[String]) -> Option<String> {
    let auth = parts
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = auth.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.len() > MAX_JWT_BYTES {
        return None;
    }
    let mut pieces = token.trim().split('.');
    let (_header, payload) = (pieces.next()?, pieces.next()?);
    pieces.next()?; // a JWS has three parts
    let payload = payload.trim_end_matches('=');
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let mut at = &value;
    for part in claim {
        at = at.get(part)?;
    }
    match at {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        _ => None,
    }
}

/// A tenant id found in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundTenant<'a> {
    pub id: Cow<'a, str>,
    pub from: ExtractorKind,
}

/// The client sent a tenant id that cannot be one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid tenant id from {from}: {reason}")]
pub struct BadTenant {
    pub from: &'static str,
    pub reason: String,
}

/// Runs the extractors in order; the first that finds a tenant decides.
pub fn extract<'a>(
    extractors: &[Extractor],
    parts: &'a Parts,
) -> Result<Option<FoundTenant<'a>>, BadTenant> {
    for x in extractors {
        let Some(id) = x.find(parts) else { continue };
        let from = x.kind();
        if id == DEFAULT_TENANT {
            return Err(BadTenant {
                from: from.as_str(),
                reason: "\"*\" is reserved for the default flag".into(),
            });
        }
        if let Err(e) = validate_tenant_id(&id) {
            return Err(BadTenant {
                from: from.as_str(),
                reason: match e {
                    ItemError::TenantId(reason) => reason,
                    other => other.to_string(),
                },
            });
        }
        return Ok(Some(FoundTenant { id, from }));
    }
    Ok(None)
}

/// What keeps a split tenant's user on one side: the first key present in the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StickyKey {
    Header(HeaderName),
    Cookie(String),
    /// The client's address (always present, so a list ending with it always finds a key).
    ClientIp,
}

impl StickyKey {
    pub fn parse(spec: &str) -> Result<StickyKey, String> {
        if spec == "client_ip" {
            return Ok(StickyKey::ClientIp);
        }
        match spec.split_once(':') {
            Some(("header", name)) => HeaderName::try_from(name)
                .map(StickyKey::Header)
                .map_err(|_| format!("{name:?} is not a valid header name")),
            Some(("cookie", name)) if !name.is_empty() => Ok(StickyKey::Cookie(name.to_owned())),
            _ => Err(format!(
                "{spec:?} is not a sticky key (use \"header:NAME\", \"cookie:NAME\" or \"client_ip\")"
            )),
        }
    }
}

/// The sticky hash of (tenant, request key): the same on every router and across restarts.
pub fn sticky_hash(keys: &[StickyKey], tenant: &str, parts: &Parts, client: IpAddr) -> u64 {
    for key in keys {
        match key {
            StickyKey::Header(name) => {
                if let Some(v) = parts.headers.get(name) {
                    return flag_store::sticky::key_hash(tenant, v.as_bytes());
                }
            }
            StickyKey::Cookie(name) => {
                if let Some(v) = cookie(parts, name) {
                    return flag_store::sticky::key_hash(tenant, v.as_bytes());
                }
            }
            StickyKey::ClientIp => break,
        }
    }
    client_ip_hash(tenant, client)
}

/// The sticky hash when the client's address is the key (its octets, not its text).
pub fn client_ip_hash(tenant: &str, client: IpAddr) -> u64 {
    match client {
        IpAddr::V4(ip) => flag_store::sticky::key_hash(tenant, &ip.octets()),
        IpAddr::V6(ip) => flag_store::sticky::key_hash(tenant, &ip.octets()),
    }
}

fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(req: http::request::Builder) -> Parts {
        req.body(()).unwrap().into_parts().0
    }

    fn rules() -> Vec<Extractor> {
        [
            "header:x-tenant-id",
            "host:.app.example.com",
            "path:/t/",
            "jwt:org.tenant",
        ]
        .iter()
        .map(|s| Extractor::parse(s).unwrap())
        .collect()
    }

    fn tenant(req: http::request::Builder) -> Result<Option<(String, ExtractorKind)>, BadTenant> {
        let p = parts(req);
        extract(&rules(), &p).map(|t| t.map(|t| (t.id.into_owned(), t.from)))
    }

    fn jwt(payload: &str) -> String {
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "Bearer {}.{}.sig",
            b.encode("{\"alg\":\"none\"}"),
            b.encode(payload)
        )
    }

    #[test]
    fn each_extractor_finds_its_tenant() {
        let r = || http::Request::builder().uri("/x");
        assert_eq!(
            tenant(r().header("x-tenant-id", "acme")).unwrap(),
            Some(("acme".into(), ExtractorKind::Header))
        );
        assert_eq!(
            tenant(r().header("host", "Globex.App.Example.com:8443")).unwrap(),
            Some(("globex".into(), ExtractorKind::Host))
        );
        assert_eq!(
            tenant(http::Request::builder().uri("/t/initech/orders")).unwrap(),
            Some(("initech".into(), ExtractorKind::Path))
        );
        assert_eq!(
            tenant(r().header("authorization", jwt(r#"{"org":{"tenant":"umbrella"}}"#))).unwrap(),
            Some(("umbrella".into(), ExtractorKind::Jwt))
        );
        assert_eq!(
            tenant(r().header("authorization", jwt(r#"{"org":{"tenant":42}}"#))).unwrap(),
            Some(("42".into(), ExtractorKind::Jwt))
        );
    }

    #[test]
    fn first_hit_wins_in_config_order() {
        let req = http::Request::builder()
            .uri("/t/from-path/x")
            .header("host", "from-host.app.example.com")
            .header("x-tenant-id", "from-header");
        assert_eq!(tenant(req).unwrap().unwrap().0, "from-header");
    }

    #[test]
    fn misses_fall_through_to_nothing() {
        for req in [
            http::Request::builder()
                .uri("/x")
                .header("host", "app.example.com"),
            http::Request::builder()
                .uri("/x")
                .header("host", "a.b.app.example.com"),
            http::Request::builder()
                .uri("/x")
                .header("host", "evilapp.example.com"),
            http::Request::builder().uri("/t/"),
            http::Request::builder()
                .uri("/x")
                .header("authorization", "Bearer garbage"),
            http::Request::builder()
                .uri("/x")
                .header("authorization", jwt("{}")),
            http::Request::builder()
                .uri("/x")
                .header("authorization", jwt(r#"{"org":{"tenant":true}}"#)),
        ] {
            assert_eq!(tenant(req).unwrap(), None);
        }
    }

    #[test]
    fn a_tenant_that_cannot_be_one_is_a_client_error() {
        for v in ["*", "a b", "../etc"] {
            let err =
                tenant(http::Request::builder().uri("/").header("x-tenant-id", v)).unwrap_err();
            assert_eq!(err.from, "header", "{v}");
        }
        let long = "a".repeat(200);
        let err = tenant(
            http::Request::builder()
                .uri("/")
                .header("x-tenant-id", long),
        )
        .unwrap_err();
        assert!(err.to_string().contains("200 bytes"), "{err}");
    }

    #[test]
    fn bad_specs_are_refused_with_a_reason() {
        for (spec, want) in [
            ("tenant", "KIND:ARG"),
            ("header:bad header", "header name"),
            ("host:app.example.com", "must start with '.'"),
            ("path:/t", "start and end with '/'"),
            ("jwt:a..b", "empty part"),
            ("query:t", "unknown tenant extractor"),
        ] {
            assert!(Extractor::parse(spec).unwrap_err().contains(want), "{spec}");
        }
    }

    #[test]
    fn sticky_key_prefers_configured_keys_then_the_client_address() {
        let keys = vec![
            StickyKey::parse("header:x-user-id").unwrap(),
            StickyKey::parse("cookie:sid").unwrap(),
            StickyKey::ClientIp,
        ];
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let by_header = parts(http::Request::builder().header("x-user-id", "u1"));
        let by_cookie = parts(http::Request::builder().header("cookie", "a=1; sid=u1"));
        let by_ip = parts(http::Request::builder());
        let h = sticky_hash(&keys, "acme", &by_header, ip);
        assert_eq!(h, flag_store::sticky::key_hash("acme", b"u1"));
        assert_eq!(sticky_hash(&keys, "acme", &by_cookie, ip), h);
        assert_eq!(
            sticky_hash(&keys, "acme", &by_ip, ip),
            flag_store::sticky::key_hash("acme", &[10, 1, 2, 3])
        );
    }
}
