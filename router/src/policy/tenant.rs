//! Step 2 of the hot path: which tenant a request belongs to, and the request key that keeps
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
    /// `client_cert:cn`: the common name of the client certificate the TLS listener verified
    /// (`[server.tls] client_ca`). Nothing a client sends in the request can set it.
    ClientCertCn,
}

/// Closed set of extractor kinds, for explain output and error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtractorKind {
    Header,
    Host,
    Path,
    Jwt,
    ClientCert,
}

impl ExtractorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExtractorKind::Header => "header",
            ExtractorKind::Host => "host",
            ExtractorKind::Path => "path",
            ExtractorKind::Jwt => "jwt",
            ExtractorKind::ClientCert => "client_cert",
        }
    }
}

/// Longest bearer token decoded for a claim: identity providers' tokens with group claims
/// pass 8 KiB; the request head's own limit (`max_header_bytes`) bounds it first by default.
pub const MAX_JWT_BYTES: usize = 64 * 1024;

impl Extractor {
    pub fn parse(spec: &str) -> Result<Extractor, String> {
        let (kind, arg) = spec.split_once(':').ok_or_else(|| {
            format!("{spec:?} is not KIND:ARG (kinds: header, host, path, jwt, client_cert)")
        })?;
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
            "client_cert" if arg == "cn" => Ok(Extractor::ClientCertCn),
            "client_cert" => Err(format!(
                "client_cert:{arg} is not known; the client certificate gives its common name: \"client_cert:cn\""
            )),
            other => Err(format!(
                "unknown tenant extractor {other:?} in {spec:?} (kinds: header, host, path, jwt, client_cert)"
            )),
        }
    }

    pub fn kind(&self) -> ExtractorKind {
        match self {
            Extractor::Header(_) => ExtractorKind::Header,
            Extractor::Host(_) => ExtractorKind::Host,
            Extractor::Path(_) => ExtractorKind::Path,
            Extractor::Jwt(_) => ExtractorKind::Jwt,
            Extractor::ClientCertCn => ExtractorKind::ClientCert,
        }
    }

    /// The tenant this extractor finds in the request; a field it reads that the request
    /// carries twice is refused, as the next hop may read the other one.
    fn find<'a>(&self, req: &RequestFacts<'a>) -> Result<Option<Cow<'a, str>>, BadTenant> {
        match self {
            Extractor::Header(name) => {
                let Some(v) = single(req.parts, name, "header")? else {
                    return Ok(None);
                };
                Ok(Some(Cow::Borrowed(v.to_str().unwrap_or("\u{fffd}"))))
            }
            Extractor::Host(suffix) => Ok(req.host.and_then(|host| host_label(host, suffix))),
            Extractor::Path(prefix) => {
                let Some(rest) = req.path.strip_prefix(prefix.as_str()) else {
                    return Ok(None);
                };
                let segment = rest.split('/').next().unwrap_or("");
                Ok((!segment.is_empty()).then_some(Cow::Borrowed(segment)))
            }
            Extractor::Jwt(claim) => {
                let Some(auth) = single(req.parts, &http::header::AUTHORIZATION, "jwt")? else {
                    return Ok(None);
                };
                jwt_claim(auth, claim).map(|c| c.map(Cow::Owned))
            }
            Extractor::ClientCertCn => Ok(req.client_cn.map(Cow::Borrowed)),
        }
    }

    /// Refuses the request when a field this extractor reads comes twice, whether or not an
    /// earlier extractor already found the tenant: a backend that reads the second copy would
    /// act for another tenant on this one's side.
    fn check_single(&self, parts: &Parts) -> Result<(), BadTenant> {
        match self {
            Extractor::Header(name) => single(parts, name, "header").map(drop),
            Extractor::Jwt(_) => single(parts, &http::header::AUTHORIZATION, "jwt").map(drop),
            // The host is checked once for every request (`request_host`); the path is one.
            // The certificate is the connection's, once.
            Extractor::Host(_) | Extractor::Path(_) | Extractor::ClientCertCn => Ok(()),
        }
    }
}

/// The headers the router decides a request by: `Host`, and those the tenant extractors and
/// the sticky keys read. A request whose `Connection` names one is refused: obeyed, it would
/// strip the header and the upstream would never see what the router chose by.
pub fn deciding_headers(from: &[Extractor], sticky: &[StickyKey]) -> Vec<HeaderName> {
    let mut names = vec![http::header::HOST];
    for e in from {
        match e {
            Extractor::Header(name) => names.push(name.clone()),
            Extractor::Jwt(_) => names.push(http::header::AUTHORIZATION),
            Extractor::Host(_) | Extractor::Path(_) | Extractor::ClientCertCn => {}
        }
    }
    for k in sticky {
        match k {
            StickyKey::Header(name) => names.push(name.clone()),
            StickyKey::Cookie(_) => names.push(http::header::COOKIE),
            StickyKey::ClientIp => {}
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    names
}

/// A header's one value, or a refusal when it comes more than once.
fn single<'a>(
    parts: &'a Parts,
    name: &HeaderName,
    from: &'static str,
) -> Result<Option<&'a http::HeaderValue>, BadTenant> {
    let mut all = parts.headers.get_all(name).iter();
    let first = all.next();
    if all.next().is_some() {
        return Err(BadTenant {
            from,
            reason: format!("the request carries {name} more than once"),
        });
    }
    Ok(first)
}

/// The first label of `host` when the rest is `suffix`: `acme` in `Acme.app.example.com:8443`
/// or `acme.app.example.com.` (a fully qualified name's trailing dot names the same host).
fn host_label<'a>(host: &'a str, suffix: &str) -> Option<Cow<'a, str>> {
    let host = strip_port(host);
    let host = host.strip_suffix('.').unwrap_or(host);
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

/// What the extractors read: the request, its checked host ([`request_host`]) and the path
/// routes match ([`crate::policy::path::normalize`]).
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub parts: &'a Parts,
    pub host: Option<&'a str>,
    pub path: &'a str,
    /// The common name of the client certificate the TLS listener verified, if any.
    pub client_cn: Option<&'a str>,
}

/// Why a request's host is refused (RFC 9112 section 3.2): the host decides the tenant for
/// host extraction and reaches the upstream, so it must read one way only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error(
        "the request names no host: HTTP/1.1 needs a Host header, HTTP/2 an :authority or a Host header"
    )]
    Missing,
    #[error("the request has more than one Host header")]
    Repeated,
    #[error("the Host header is empty")]
    Empty,
    #[error("the Host header is not a host name or address with an optional port")]
    Invalid,
    #[error("the Host header differs from the authority in the request target")]
    Conflict,
}

/// The request's host: its one Host header, or the URI's authority (HTTP/2, absolute form),
/// which must agree when both come. A host with userinfo, a path, spaces or a list is refused.
pub fn request_host(parts: &Parts) -> Result<Option<&str>, HostError> {
    let mut headers = parts.headers.get_all(http::header::HOST).iter();
    let header = headers.next();
    if headers.next().is_some() {
        return Err(HostError::Repeated);
    }
    let header = header
        .map(|h| h.to_str().map_err(|_| HostError::Invalid))
        .transpose()?;
    let host = match (header, parts.uri.authority()) {
        (Some(h), Some(a)) if !h.eq_ignore_ascii_case(a.as_str()) => {
            return Err(HostError::Conflict);
        }
        (Some(h), _) => h,
        (None, Some(a)) => a.as_str(),
        // HTTP/1.0 may leave the host out; HTTP/1.1 and HTTP/2 may not.
        (None, None) if parts.version >= http::Version::HTTP_11 => {
            return Err(HostError::Missing);
        }
        (None, None) => return Ok(None),
    };
    check_host(host)?;
    Ok(Some(host))
}

/// `name[:port]` or `[v6]:port`, where a name is letters, digits and `-._~`.
fn check_host(host: &str) -> Result<(), HostError> {
    if host.is_empty() {
        return Err(HostError::Empty);
    }
    let (name_ok, port) = match host.strip_prefix('[') {
        Some(rest) => {
            let (v6, after) = rest.split_once(']').ok_or(HostError::Invalid)?;
            let ok = !v6.is_empty()
                && v6
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or(HostError::Invalid)?),
            };
            (ok, port)
        }
        None => {
            let (name, port) = match host.rsplit_once(':') {
                Some((name, port)) => (name, Some(port)),
                None => (host, None),
            };
            let ok = !name.is_empty() && name.bytes().all(crate::policy::path::is_unreserved);
            (ok, port)
        }
    };
    let port_ok =
        port.is_none_or(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    if name_ok && port_ok {
        Ok(())
    } else {
        Err(HostError::Invalid)
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host; // IPv6 literal: never a tenant host.
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// The claim from a bearer JWT. A token that is not three dot-separated parts is not a JWT
/// (an opaque token) and names no tenant; a JWT whose payload cannot be read, or that is
/// larger than [`MAX_JWT_BYTES`], is refused rather than routed as if it had no claim.
fn jwt_claim(auth: &http::HeaderValue, claim: &[String]) -> Result<Option<String>, BadTenant> {
    let bad = |reason: String| BadTenant {
        from: "jwt",
        reason,
    };
    let Ok(auth) = auth.to_str() else {
        return Ok(None);
    };
    let Some((scheme, token)) = auth.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let mut pieces = token.trim().split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (pieces.next(), pieces.next(), pieces.next(), pieces.next())
    else {
        return Ok(None);
    };
    if token.len() > MAX_JWT_BYTES {
        return Err(bad(format!(
            "the bearer token is larger than {} KiB",
            MAX_JWT_BYTES / 1024
        )));
    }
    let payload = payload.trim_end_matches('=');
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| bad("the bearer token's payload is not base64url".into()))?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        bad(format!(
            "the bearer token's payload is not JSON the router can read ({e})"
        ))
    })?;
    let mut at = &value;
    for part in claim {
        let Some(next) = at.get(part) else {
            return Ok(None);
        };
        at = next;
    }
    Ok(match at {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        _ => None,
    })
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

/// Runs the extractors in order; the first that finds a tenant decides. Every field a
/// configured extractor reads must come at most once, found first or not.
pub fn extract<'a>(
    extractors: &[Extractor],
    req: &RequestFacts<'a>,
) -> Result<Option<FoundTenant<'a>>, BadTenant> {
    let mut found = None;
    for x in extractors {
        if found.is_some() {
            x.check_single(req.parts)?;
            continue;
        }
        let Some(id) = x.find(req)? else { continue };
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
        found = Some(FoundTenant { id, from });
    }
    Ok(found)
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
        let normal = crate::policy::path::normalize(p.uri.path()).unwrap();
        let facts = RequestFacts {
            parts: &p,
            host: request_host(&p).ok().flatten(),
            path: &normal,
            client_cn: None,
        };
        extract(&rules(), &facts).map(|t| t.map(|t| (t.id.into_owned(), t.from)))
    }

    #[test]
    fn a_verified_client_certificate_names_the_tenant_and_no_header_can() {
        let rules = [
            Extractor::parse("client_cert:cn").unwrap(),
            Extractor::parse("header:x-tenant-id").unwrap(),
        ];
        let p = parts(http::Request::get("/").header("x-tenant-id", "globex"));
        let facts = |client_cn| RequestFacts {
            parts: &p,
            host: None,
            path: "/",
            client_cn,
        };
        let found = extract(&rules, &facts(Some("acme"))).unwrap().unwrap();
        assert_eq!(
            (&*found.id, found.from),
            ("acme", ExtractorKind::ClientCert)
        );
        // Without a certificate, the next extractor applies.
        let found = extract(&rules, &facts(None)).unwrap().unwrap();
        assert_eq!(&*found.id, "globex");
        let bad = extract(&rules, &facts(Some("not a tenant"))).unwrap_err();
        assert_eq!(bad.from, "client_cert");
        assert!(
            Extractor::parse("client_cert:o")
                .unwrap_err()
                .contains("client_cert:cn")
        );
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
    fn a_tenant_field_that_comes_twice_is_refused_even_after_a_hit() {
        let twice = http::Request::builder()
            .uri("/x")
            .header("x-tenant-id", "acme")
            .header("x-tenant-id", "beta");
        let err = tenant(twice).unwrap_err();
        assert!(
            err.to_string().contains("x-tenant-id more than once"),
            "{err}"
        );
        // The header found the tenant; a second bearer token is refused all the same.
        let two_tokens = http::Request::builder()
            .uri("/x")
            .header("x-tenant-id", "acme")
            .header("authorization", jwt(r#"{"org":{"tenant":"acme"}}"#))
            .header("authorization", jwt(r#"{"org":{"tenant":"beta"}}"#));
        assert_eq!(tenant(two_tokens).unwrap_err().from, "jwt");
        // Other headers may repeat.
        let other = http::Request::builder()
            .uri("/x")
            .header("x-tenant-id", "acme")
            .header("x-other", "1")
            .header("x-other", "2");
        assert_eq!(tenant(other).unwrap().unwrap().0, "acme");
    }

    #[test]
    fn hosts_read_one_way_or_are_refused() {
        let host =
            |req: http::request::Builder| request_host(&parts(req)).map(|h| h.map(str::to_owned));
        let r = || http::Request::builder().uri("/x");
        for ok in [
            "a",
            "acme.app.example.com",
            "a-b_c.example:8080",
            "127.0.0.1:80",
            "[::1]:8443",
            "[::1]",
        ] {
            assert_eq!(
                host(r().header("host", ok)),
                Ok(Some(ok.to_owned())),
                "{ok}"
            );
        }
        for (bad, why) in [
            ("", HostError::Empty),
            ("acme@beta.app.example.com", HostError::Invalid),
            ("a.example/x", HostError::Invalid),
            ("a b", HostError::Invalid),
            ("a,b", HostError::Invalid),
            ("a:", HostError::Invalid),
            ("a:http", HostError::Invalid),
            ("a:123456", HostError::Invalid),
            ("[::1", HostError::Invalid),
            ("[::1]x", HostError::Invalid),
            (":80", HostError::Invalid),
        ] {
            assert_eq!(host(r().header("host", bad)), Err(why), "{bad:?}");
        }
        assert_eq!(host(r()), Err(HostError::Missing));
        assert_eq!(host(r().version(http::Version::HTTP_10)), Ok(None));
        // An HTTP/2 request with neither :authority nor Host is refused as HTTP/1.1 is.
        assert_eq!(
            host(r().version(http::Version::HTTP_2)),
            Err(HostError::Missing)
        );
        assert_eq!(
            host(r().header("host", "a").header("host", "b")),
            Err(HostError::Repeated)
        );
        let absolute = || http::Request::builder().uri("http://a.example/x");
        assert_eq!(host(absolute()), Ok(Some("a.example".into())));
        assert_eq!(
            host(absolute().header("host", "A.example")),
            Ok(Some("A.example".into()))
        );
        assert_eq!(
            host(absolute().header("host", "b.example")),
            Err(HostError::Conflict)
        );
        assert_eq!(
            host(http::Request::builder().uri("http://u@a.example/x")),
            Err(HostError::Invalid)
        );
    }

    #[test]
    fn a_trailing_dot_names_the_same_host() {
        let req = http::Request::builder()
            .uri("/x")
            .header("host", "acme.app.example.com.");
        assert_eq!(tenant(req).unwrap().unwrap().0, "acme");
    }

    #[test]
    fn large_tokens_are_read_and_unreadable_ones_refused() {
        let r = || http::Request::builder().uri("/x");
        let padding = "x".repeat(12 * 1024);
        let big = jwt(&format!(
            r#"{{"org":{{"tenant":"acme"}},"groups":"{padding}"}}"#
        ));
        assert_eq!(
            tenant(r().header("authorization", big)).unwrap().unwrap().0,
            "acme"
        );
        let huge = jwt(&format!(r#"{{"pad":"{}"}}"#, "x".repeat(MAX_JWT_BYTES)));
        let err = tenant(r().header("authorization", huge)).unwrap_err();
        assert!(err.to_string().contains("larger than 64 KiB"), "{err}");
        let nested = format!("{}{}", "[".repeat(127), "]".repeat(127));
        let deep = jwt(&format!(r#"{{"org":{{"tenant":"acme"}},"x":{nested}}}"#));
        let err = tenant(r().header("authorization", deep)).unwrap_err();
        assert!(err.to_string().contains("not JSON"), "{err}");
        let err = tenant(r().header("authorization", "Bearer a.!!!.c")).unwrap_err();
        assert!(err.to_string().contains("base64url"), "{err}");
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
