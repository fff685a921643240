//! Step 1 of the hot path: the route a request belongs to, by the longest prefix of its
//! normalised path ([`crate::policy::path`]). A route either sends each tenant where its flag
//! says or sends everything to one target; its timeouts, body limit, upgrades and shadowed
//! methods travel with it. Pure: the config builds these, the proxy and `/explain` read them.

use std::time::Duration;

use flag_store::TargetId;
use http::Method;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// Each tenant goes where its flag says.
    Flagged,
    /// Every request goes to one target, whatever the flags say.
    Fixed(TargetId),
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub path_prefix: String,
    pub kind: RouteKind,
    pub require_tenant: bool,
    /// Time allowed for the upstream's response headers.
    pub timeout: Duration,
    /// Time allowed for one try's response headers before an idempotent request is sent to
    /// the split tenant's other target (or another endpoint); `None`: only `timeout`.
    pub try_timeout: Option<Duration>,
    /// Longest pause allowed between body chunks, in either direction.
    pub idle_timeout: Duration,
    /// How fast a request body must come while the upstream waits for it.
    pub upload: UploadPace,
    pub max_body_bytes: Option<u64>,
    /// Protocols a client may upgrade to on this route (`Upgrade`), lower-case; never `h2c`.
    pub upgrades: Vec<String>,
    /// Methods copied to a tenant's shadow besides GET, HEAD and OPTIONS (for sides that share
    /// or discard writes).
    pub shadow_methods: Vec<Method>,
}

/// The slowest a request body may come before the upstream answers: whole within `timeout`
/// plus a second for each `min_rate` bytes it has sent (Apache's `MinRate`). A client that
/// trickles a byte now and then would otherwise hold an upstream connection for as long as it
/// likes, although no pause reaches the idle timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadPace {
    pub timeout: Duration,
    /// Bytes a second; 0: `timeout` alone bounds the body.
    pub min_rate: u64,
}

impl UploadPace {
    /// How long from its start a body that has sent `sent` bytes has to end.
    pub fn allowance(&self, sent: u64) -> Duration {
        let earned = match self.min_rate {
            0 => Duration::ZERO,
            rate => Duration::from_millis(sent.saturating_mul(1000) / rate),
        };
        self.timeout.saturating_add(earned)
    }
}

impl Route {
    /// True when `protocol` (an `Upgrade` token, `name` or `name/version`) may be tunnelled.
    pub fn allows_upgrade(&self, protocol: &str) -> bool {
        let name = protocol.split('/').next().unwrap_or("");
        self.upgrades.iter().any(|u| u.eq_ignore_ascii_case(name))
    }

    /// True when requests of `method` may be copied to a shadow.
    pub fn shadows_method(&self, method: &Method) -> bool {
        matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
            || self.shadow_methods.contains(method)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouteId(pub u16);

impl RouteId {
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// Routes matched by longest path prefix. A prefix matches at a segment boundary: `/api`
/// matches `/api` and `/api/x` but not `/apix`; a prefix ending in `/` matches what follows.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// Route ids, longest prefix first.
    by_length: Vec<RouteId>,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> Self {
        let mut by_length: Vec<RouteId> = (0..routes.len()).map(|i| RouteId(i as u16)).collect();
        by_length.sort_by_key(|id| std::cmp::Reverse(routes[id.index()].path_prefix.len()));
        RouteTable { routes, by_length }
    }

    #[inline]
    pub fn find(&self, path: &str) -> Option<RouteId> {
        self.by_length
            .iter()
            .copied()
            .find(|id| prefix_matches(&self.routes[id.index()].path_prefix, path))
    }

    pub fn get(&self, id: RouteId) -> &Route {
        &self.routes[id.index()]
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        && (prefix.ends_with('/')
            || path.len() == prefix.len()
            || path.as_bytes()[prefix.len()] == b'/')
}

#[cfg(test)]
impl Route {
    /// A route with the given prefix and kind, and one-second timeouts.
    pub(crate) fn for_test(prefix: &str, kind: RouteKind) -> Route {
        Route {
            name: prefix.trim_matches('/').replace('/', "-"),
            path_prefix: prefix.into(),
            kind,
            require_tenant: false,
            timeout: Duration::from_secs(1),
            try_timeout: None,
            idle_timeout: Duration::from_secs(1),
            upload: UploadPace {
                timeout: Duration::from_secs(60),
                min_rate: 1024,
            },
            max_body_bytes: None,
            upgrades: vec!["websocket".into()],
            shadow_methods: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEGACY: TargetId = TargetId(0);

    fn route(prefix: &str, kind: RouteKind) -> Route {
        Route::for_test(prefix, kind)
    }

    #[test]
    fn longest_prefix_wins_at_segment_boundaries() {
        let table = RouteTable::new(vec![
            route("/", RouteKind::Flagged),
            route("/api", RouteKind::Flagged),
            route("/api/admin/", RouteKind::Fixed(LEGACY)),
        ]);
        let name = |p: &str| table.find(p).map(|id| table.get(id).path_prefix.clone());
        assert_eq!(name("/api").as_deref(), Some("/api"));
        assert_eq!(name("/api/x").as_deref(), Some("/api"));
        assert_eq!(name("/apix").as_deref(), Some("/"));
        assert_eq!(name("/api/admin/users").as_deref(), Some("/api/admin/"));
        let no_root = RouteTable::new(vec![route("/api", RouteKind::Flagged)]);
        assert_eq!(no_root.find("/other"), None);
    }
}
