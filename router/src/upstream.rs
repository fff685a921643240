//! The upstream side of each target: for HTTP/1.1, a pool of kept-alive connections per
//! endpoint (the `http1` crate's client); for HTTP/2 and for upgrades, hyper's pooled
//! client. Only configured endpoints are ever dialled. Each such pool dials its own endpoint and sends only
//! the path; for hyper's client the request's URI is rebuilt from the endpoint
//! [`crate::health`] chose. So no header, Host or absolute-form URI can pick the host.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::RequestBody;
use crate::config::{Endpoint, Protocol, TargetConfig};

#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub protocol: Protocol,
    /// The endpoints speak TLS (`https://`): hyper's client reaches them, not the pools.
    pub tls: bool,
    /// The name its certificates are verified for, when fixed (`tls_server_name`).
    pub tls_name: Option<String>,
    endpoints: Vec<Endpoint>,
    /// Indexed like `endpoints`: how the access log names each.
    names: Vec<Arc<str>>,
    /// Indexed like `endpoints`.
    pools: Vec<Arc<http1::client::Pool>>,
    client: Client<crate::tls::Connector, RequestBody>,
    /// The client's connector, for the target's health checks (built once: with TLS it reads
    /// the CA bundle and client certificate).
    connector: crate::tls::Connector,
}

/// A pooled hyper client for a target's endpoints, over `connector`.
pub fn client_for(
    config: &TargetConfig,
    connector: crate::tls::Connector,
) -> Client<crate::tls::Connector, RequestBody> {
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(config.pool_idle_timeout)
        .pool_max_idle_per_host(config.pool_max_idle_per_endpoint)
        .http2_only(config.protocol.is_http2())
        // The proxy sets Host itself (the client's, kept); never let the endpoint leak in.
        .set_host(false)
        .build(connector)
}

impl Upstream {
    /// `opened` counts the HTTP/1.1 connections the target's pools open.
    pub fn new(config: &TargetConfig, opened: Arc<AtomicU64>) -> Result<Self, String> {
        let connector = crate::tls::connector(
            config.tls.as_ref(),
            config.protocol == Protocol::H2,
            config.connect_timeout,
        )
        .map_err(|e| format!("target {:?}: {e}", config.name))?;
        let client = client_for(config, connector.clone());
        let pools = config
            .endpoints
            .iter()
            .map(|e| {
                Arc::new(http1::client::Pool::new(
                    e.authority.clone(),
                    config.pool_max_idle_per_endpoint,
                    config.pool_idle_timeout,
                    config.connect_timeout,
                    opened.clone(),
                ))
            })
            .collect();
        Ok(Upstream {
            name: config.name.clone(),
            protocol: config.protocol,
            tls: config.tls.is_some(),
            tls_name: config.tls.as_ref().and_then(|t| t.server_name.clone()),
            endpoints: config.endpoints.clone(),
            names: (config.endpoints.iter())
                .map(|e| Arc::from(e.to_string()))
                .collect(),
            pools,
            client,
            connector,
        })
    }

    pub fn endpoint(&self, index: usize) -> &Endpoint {
        &self.endpoints[index]
    }

    /// The endpoint's name, for the access log.
    pub fn endpoint_name(&self, index: usize) -> Arc<str> {
        self.names[index].clone()
    }

    pub fn endpoint_count(&self) -> usize {
        self.endpoints.len()
    }

    pub fn pool(&self, endpoint: usize) -> &Arc<http1::client::Pool> {
        &self.pools[endpoint]
    }

    /// Closes idle HTTP/1.1 connections that timed out or that the upstream closed.
    pub fn reap_idle(&self) {
        for pool in &self.pools {
            pool.reap();
        }
    }

    pub fn connector(&self) -> &crate::tls::Connector {
        &self.connector
    }

    pub fn client(&self) -> &Client<crate::tls::Connector, RequestBody> {
        &self.client
    }
}
