//! The upstream side of each target: for HTTP/1.1, a pool of kept-alive connections per
//! endpoint ([`crate::h1`]); for HTTP/2 and for upgrades, hyper's pooled client. Only
//! configured endpoints are ever dialled. Each `h1` pool dials its own endpoint and sends only
//! the path; for hyper's client the request's URI is rebuilt from the endpoint
//! [`crate::health`] chose. So no header, Host or absolute-form URI can pick the host.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use http::Uri;
use http::uri::PathAndQuery;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::RequestBody;
use crate::config::{Endpoint, Protocol, TargetConfig};
use crate::h1;

#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub protocol: Protocol,
    endpoints: Vec<Endpoint>,
    /// Indexed like `endpoints`.
    pools: Vec<Arc<h1::Pool>>,
    client: Client<HttpConnector, RequestBody>,
}

impl Upstream {
    /// `opened` counts the HTTP/1.1 connections the target's pools open.
    pub fn new(config: &TargetConfig, opened: Arc<AtomicU64>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.pool_max_idle_per_endpoint)
            .http2_only(config.protocol == Protocol::H2c)
            // The proxy sets Host itself (the client's, kept); never let the endpoint leak in.
            .set_host(false)
            .build(connector);
        let pools = config
            .endpoints
            .iter()
            .map(|e| {
                Arc::new(h1::Pool::new(
                    e.authority.clone(),
                    config.pool_max_idle_per_endpoint,
                    config.pool_idle_timeout,
                    config.connect_timeout,
                    opened.clone(),
                ))
            })
            .collect();
        Upstream {
            name: config.name.clone(),
            protocol: config.protocol,
            endpoints: config.endpoints.clone(),
            pools,
            client,
        }
    }

    pub fn endpoint(&self, index: usize) -> &Endpoint {
        &self.endpoints[index]
    }

    pub fn endpoint_count(&self) -> usize {
        self.endpoints.len()
    }

    pub fn pool(&self, endpoint: usize) -> &Arc<h1::Pool> {
        &self.pools[endpoint]
    }

    /// Closes idle HTTP/1.1 connections that timed out or that the upstream closed.
    pub fn reap_idle(&self) {
        for pool in &self.pools {
            pool.reap();
        }
    }

    pub fn client(&self) -> &Client<HttpConnector, RequestBody> {
        &self.client
    }
}

/// The URI for `endpoint` with the request's path and query: the only way a request's
/// destination is chosen.
pub fn upstream_uri(
    endpoint: &Endpoint,
    path_and_query: Option<&PathAndQuery>,
) -> Result<Uri, http::Error> {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(endpoint.scheme.clone());
    parts.authority = Some(endpoint.authority.clone());
    parts.path_and_query = Some(match path_and_query.map(PathAndQuery::as_str) {
        Some(pq) if pq.starts_with('/') => path_and_query.cloned().expect("matched Some"),
        // `http://h.example?x=1`: the path is empty, the query is kept.
        Some(pq) if pq.starts_with('?') => PathAndQuery::try_from(format!("/{pq}"))?,
        _ => PathAndQuery::from_static("/"),
    });
    Ok(Uri::from_parts(parts)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::uri::Scheme;

    fn endpoint() -> Endpoint {
        Endpoint {
            scheme: Scheme::HTTP,
            authority: "10.0.0.1:9001".parse().unwrap(),
        }
    }

    #[test]
    fn the_destination_is_always_the_endpoint() {
        for incoming in [
            "/x?y=1",
            "http://evil.example.com/x?y=1",
            "http://127.0.0.1:22/x?y=1",
        ] {
            let uri: Uri = incoming.parse().unwrap();
            let out = upstream_uri(&endpoint(), uri.path_and_query()).unwrap();
            assert_eq!(out.to_string(), "http://10.0.0.1:9001/x?y=1", "{incoming}");
        }
        let star: Uri = "*".parse().unwrap();
        assert_eq!(
            upstream_uri(&endpoint(), star.path_and_query())
                .unwrap()
                .to_string(),
            "http://10.0.0.1:9001/"
        );
    }
}
