//! Switchyard: a tenant-aware reverse proxy that routes each tenant by a hot-reloaded flag.
//!
//! The hot path, in the order a request meets it (read [`proxy`] top to bottom):
//! 0. [`h1_server`]: the request head, from a client's HTTP/1.1 connection (hyper's server
//!    takes HTTP/2 and the requests it hands over).
//! 1. [`pick::RouteTable::find`]: the route, by longest path prefix.
//! 2. [`tenant::extract`]: the tenant id, from the configured extractors.
//! 3. [`pick::pick`]: one snapshot load, one lookup, the target (a pure function).
//! 4. [`proxy::Proxy::handle`]: forward over a pooled keep-alive connection to the chosen
//!    endpoint ([`h1`] for HTTP/1.1, hyper's client for HTTP/2 and upgrades), bodies streamed.
//! 5. [`metrics`]: recorded when the response body completes.
//!
//! Around it: [`config`] (the TOML file), [`server`] (listeners, drain), [`admin`] (metrics,
//! readiness, explain) and the `flag-store` crate (flags, snapshots, reload).

pub mod admin;
pub mod batch;
pub mod body;
pub mod cli;
pub mod config;
pub mod demo;
pub mod h1;
pub mod h1_server;
pub mod health;
pub mod metrics;
pub mod path;
pub mod pick;
pub mod proxy;
pub mod server;
pub mod store;
pub mod tenant;
pub mod upstream;

pub use config::Config;
pub use server::{Router, StartError};

/// Resolves once `flag` is true (or its sender is gone). The guard `wait_for` returns is
/// dropped here, so callers can await this inside `select!` in a `Send` future.
pub async fn until_set(flag: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await.map(|_| ());
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler works on unix");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
