//! The header policy of step 4, for requests on their way up and answers on their way
//! down: hop-by-hop headers stripped (RFC 9110 section 7.6.1), HTTP/2 cookie pieces joined,
//! upgrades allowed only to the route's protocols, `X-Forwarded-*` set, and a request id kept
//! or made.

use http::Version;
use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use hyper::upgrade::OnUpgrade;

use super::{Peer, Proxy};
use crate::policy::Route;

/// How many headers the proxy may add to a request: `x-request-id`, the three
/// `x-forwarded-*` and `host`. The parser sizes the header map for them.
pub(crate) const ADDED_REQUEST_HEADERS: usize = 5;

pub(super) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(super) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(super) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(super) static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(super) static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
pub(super) static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

impl Proxy {
    /// Keeps a sane incoming `x-request-id`, or makes one.
    ///
    /// Marked sensitive: HTTP/2's header compression then writes it as a literal instead of
    /// adding it to the connection's table. A value that never repeats gains nothing there,
    /// and each one would evict an entry that does repeat (and make every lookup longer).
    pub(super) fn request_id(&self, headers: &HeaderMap) -> HeaderValue {
        let mut id = match headers.get(&X_REQUEST_ID) {
            Some(id)
                if (1..=200).contains(&id.len())
                    && id.as_bytes().iter().all(|b| b.is_ascii_graphic()) =>
            {
                id.clone()
            }
            // `forward` sets it on the request, after the hop-by-hop headers are gone.
            _ => self.request_ids.next(),
        };
        id.set_sensitive(true);
        id
    }

    pub(super) fn set_forwarded(
        &self,
        headers: &mut HeaderMap,
        client: &Peer,
        host: Option<&HeaderValue>,
    ) {
        // One lookup for the read and the write: `entry`, not `get_all` then `insert`.
        match headers.entry(&X_FORWARDED_FOR) {
            Entry::Vacant(slot) => {
                slot.insert(client.ip_header());
            }
            Entry::Occupied(mut present) => {
                let prior = present
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect::<Vec<_>>()
                    .join(", ");
                let joined = if prior.is_empty() {
                    Ok(client.ip_header())
                } else {
                    HeaderValue::from_str(&format!("{prior}, {}", client.addr.ip()))
                };
                if let Ok(v) = joined {
                    present.insert(v);
                }
            }
        }
        if !(self.trust_forwarded && headers.contains_key(&X_FORWARDED_PROTO)) {
            let proto = if client.tls { "https" } else { "http" };
            headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
        }
        if !(self.trust_forwarded && headers.contains_key(&X_FORWARDED_HOST)) {
            match host {
                Some(h) => headers.insert(X_FORWARDED_HOST.clone(), h.clone()),
                None => headers.remove(&X_FORWARDED_HOST),
            };
        }
    }
}

/// The `content-length` a message declares (its first field), when it is a number.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

pub(super) fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    (headers.get_all(header::CONNECTION).iter())
        .flat_map(tokens)
        .any(|t| t.eq_ignore_ascii_case(token))
}

/// A client's upgrade request on its way: its connection's upgrade, and the protocols sent
/// upstream in `Upgrade`.
pub(super) struct ClientUpgrade {
    pub(super) on: OnUpgrade,
    pub(super) asked: HeaderValue,
}

impl ClientUpgrade {
    /// True when a 101 names one protocol, and one the request asked for.
    pub(super) fn accepts(&self, response: &HeaderMap) -> bool {
        let mut chosen = response.get_all(header::UPGRADE).iter().flat_map(tokens);
        let (Some(protocol), None) = (chosen.next(), chosen.next()) else {
            return false;
        };
        tokens(&self.asked).any(|asked| asked.eq_ignore_ascii_case(protocol))
    }
}

/// The comma-separated tokens of a header value, trimmed, empty ones skipped.
pub(super) fn tokens(value: &HeaderValue) -> impl Iterator<Item = &str> {
    value
        .to_str()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// For an HTTP/1.1 upgrade request, the protocols it may upgrade to on `route`, read as one
/// list over all its `Upgrade` fields (RFC 9110 section 7.8); `Upgrade` is rewritten to those
/// alone. `None` when there are none: the request goes on as an ordinary one, and `Upgrade`
/// is dropped with the other hop-by-hop headers. `h2c` is never allowed (the route config
/// refuses it): after its 101 the upstream would take HTTP/2 requests the router never sees.
pub(super) fn allowed_upgrade(parts: &mut Parts, route: &Route) -> Option<HeaderValue> {
    if parts.version != Version::HTTP_11 || !connection_has(&parts.headers, "upgrade") {
        return None;
    }
    let mut allowed = String::new();
    for protocol in parts
        .headers
        .get_all(header::UPGRADE)
        .iter()
        .flat_map(tokens)
    {
        if route.allows_upgrade(protocol) {
            if !allowed.is_empty() {
                allowed.push_str(", ");
            }
            allowed.push_str(protocol);
        }
    }
    let value = HeaderValue::from_str(&allowed)
        .ok()
        .filter(|_| !allowed.is_empty())?;
    parts.headers.insert(header::UPGRADE, value.clone());
    Some(value)
}

/// HTTP/2 may split `cookie` into one field per pair; HTTP/1.1 allows one field, so the
/// pieces go on joined with `; ` (RFC 9113 section 8.2.3).
pub(super) fn join_cookies(headers: &mut HeaderMap) {
    let mut pieces = headers.get_all(header::COOKIE).iter();
    if pieces.next().is_none() || pieces.next().is_none() {
        return;
    }
    let joined: Vec<u8> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}

/// Removes the fields whose name has an underscore: some servers read `Content_Length` or
/// `X_Tenant_Id` as the dashed name, so the field would mean one thing here and another there
/// (nginx drops them too, unless `underscores_in_headers` is on).
pub fn drop_underscored_names(headers: &mut HeaderMap) {
    let underscored: Vec<HeaderName> = (headers.keys())
        .filter(|n| n.as_str().contains('_'))
        .cloned()
        .collect();
    for name in underscored {
        headers.remove(name);
    }
}

/// Removes hop-by-hop headers (RFC 9110 section 7.6.1): `Connection` and every header it
/// names, plus the fixed list. For an upgrade, `Connection: upgrade` and `Upgrade` stay.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let _ = strip_request_hop_by_hop(headers, keep_upgrade, &[]);
}

/// [`strip_hop_by_hop`] for a request the router decided by the headers `decided_by`: a
/// `Connection` that names one of them is refused (`Err` with its name) rather than obeyed,
/// as the upstream would then never see the header the router chose by.
pub fn strip_request_hop_by_hop(
    headers: &mut HeaderMap,
    keep_upgrade: bool,
    decided_by: &[HeaderName],
) -> Result<(), HeaderName> {
    // Most messages carry none of them: one pass over the names instead of a lookup each.
    if !keep_upgrade && !headers.keys().any(is_hop_by_hop) {
        return Ok(());
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = (headers.get_all(header::CONNECTION).iter())
            .flat_map(tokens)
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        if let Some(name) = named.iter().find(|n| decided_by.contains(n)) {
            return Err(name.clone());
        }
        for name in named {
            if !(keep_upgrade && name == header::UPGRADE) {
                headers.remove(&name);
            }
        }
        headers.remove(header::CONNECTION);
    }
    for name in ALWAYS_HOP_BY_HOP {
        headers.remove(name);
    }
    // `TE: trailers` is end-to-end meaningful (gRPC needs it); any other TE is hop-by-hop.
    if headers
        .get(header::TE)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        headers.remove(header::TE);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
    Ok(())
}

/// The hop-by-hop headers removed whatever the message says.
pub(super) static ALWAYS_HOP_BY_HOP: [&HeaderName; 6] = [
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::PROXY_AUTHENTICATE,
    &header::PROXY_AUTHORIZATION,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
];

/// A header that may be hop-by-hop: the fixed list, plus `Connection` (which names others)
/// and `TE` and `Upgrade` (hop-by-hop unless kept on purpose).
pub(super) fn is_hop_by_hop(name: &HeaderName) -> bool {
    ALWAYS_HOP_BY_HOP.contains(&name)
        || [header::CONNECTION, header::TE, header::UPGRADE].contains(name)
}

/// Request ids: 128 random bits as 32 hex digits, from a thread's CSPRNG (ChaCha, seeded and
/// reseeded from the OS). Unique without coordination between routers, and they tell nobody
/// how many requests a router has served or what the next id will be.
#[derive(Debug, Default)]
pub(super) struct RequestIds;

impl RequestIds {
    pub(super) fn new() -> Self {
        RequestIds
    }

    pub(super) fn next(&self) -> HeaderValue {
        use rand::Rng;
        let value: u128 = rand::rng().random();
        let mut id = [0u8; 32];
        for (i, digit) in id.iter_mut().enumerate() {
            *digit = b"0123456789abcdef"[(value >> (124 - 4 * i)) as usize & 0xf];
        }
        HeaderValue::from_bytes(&id).expect("hex digits are a valid header value")
    }
}

/// What a waiting request's head holds of the hold queue's bytes.
pub(super) fn head_bytes(parts: &Parts) -> u64 {
    let headers: usize = (parts.headers.iter())
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    (headers + parts.uri.to_string().len()) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_end_to_end_ones_stay() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("proxy-authorization", "Basic x".parse().unwrap());
        h.insert(header::TE, "gzip".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert("x-keep", "1".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-keep"));

        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "Upgrade".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get(header::CONNECTION).unwrap(), "upgrade");
        assert_eq!(h.get(header::UPGRADE).unwrap(), "websocket");
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
    }

    #[test]
    fn http2_cookie_pieces_go_on_as_one_field() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "a=1".parse().unwrap());
        h.append(header::COOKIE, "b=2".parse().unwrap());
        h.append(header::COOKIE, "c=3".parse().unwrap());
        join_cookies(&mut h);
        let all: Vec<_> = h.get_all(header::COOKIE).iter().collect();
        assert_eq!(all, ["a=1; b=2; c=3"]);
    }

    #[test]
    fn request_ids_are_unique_and_well_formed() {
        let ids = RequestIds::new();
        let a = ids.next();
        let b = ids.next();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.as_bytes().iter().all(u8::is_ascii_hexdigit));
        // Random, not a counter: consecutive ids share no prefix or suffix to speak of.
        let (a, b) = (a.as_bytes(), b.as_bytes());
        let same_prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
        let same_suffix = a
            .iter()
            .rev()
            .zip(b.iter().rev())
            .take_while(|(x, y)| x == y)
            .count();
        assert!(same_prefix < 8 && same_suffix < 8, "{a:?} {b:?}");
    }
}
