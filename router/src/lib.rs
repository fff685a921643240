//! Switchyard: a tenant-aware reverse proxy that routes each tenant by a hot-reloaded flag.
//!
//! The hot path, in the order a request meets it (read [`proxy`] top to bottom):
//! 0. The request head, from a client's HTTP/1.1 connection (the `http1` crate's server;
//!    hyper's takes the requests it hands over) or HTTP/2 stream ([`http2`]).
//! 1. [`pick::RouteTable::find`]: the route, by longest path prefix.
//! 2. [`tenant::extract`]: the tenant id, from the configured extractors.
//! 3. [`pick::pick`]: one snapshot load, one lookup, the target (a pure function).
//! 4. [`proxy::Proxy::handle`]: forward over a pooled keep-alive connection to the chosen
//!    endpoint (the `http1` crate's client for HTTP/1.1, hyper's for HTTP/2 and upgrades),
//!    bodies streamed.
//! 5. [`metrics`]: recorded when the response body completes.
//!
//! Around it: [`config`] (the TOML file, reloaded by [`reconfigure`]), [`server`] (listeners,
//! drain), [`admin`] (metrics, readiness, explain, flag writes) and the `flag-store` crate
//! (flags, snapshots, reload).

pub mod access_log;
pub mod admin;
pub mod batch;
pub mod body;
pub mod cli;
pub mod config;
pub mod demo;
pub mod health;
pub mod http2;
pub mod metrics;
pub mod path;
pub mod pick;
pub mod proxy;
pub mod reconfigure;
pub mod server;
pub mod shadow;
pub mod shutdown;
pub mod store;
pub mod streams;
pub mod tenant;
pub mod tls;
pub mod upstream;

pub use config::Config;
pub use server::{Router, StartError};
pub use shutdown::{StopSignals, until_set};
