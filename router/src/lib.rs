//! Switchyard: a tenant-aware reverse proxy that routes each tenant by a hot-reloaded flag.
//!
//! The hot path, in the order a request meets it (read [`proxy`] top to bottom); every
//! module that holds a step names it by this numbering:
//! 0. The request head, from a client's HTTP/1.1 connection (the `http1` crate's server) or
//!    HTTP/2 stream ([`server::http2`]).
//! 1. The route: the path as upstreams read it ([`policy::path`]), then the longest prefix
//!    ([`policy::RouteTable::find`]).
//! 2. The tenant id, from the configured extractors ([`policy::tenant::extract`]).
//! 3. One snapshot load, one lookup, the target ([`fn@policy::pick`], a pure function).
//! 4. Forward over a pooled keep-alive connection to the chosen endpoint, bodies streamed
//!    ([`proxy::Proxy::handle`]).
//! 5. Metrics and the access log, recorded when the response body completes ([`observe`]).
//!
//! The folders, one layer each (a folder imports only the ones below it and the leaves;
//! `tests/e2e/layout.rs` checks it):
//! - [`cli`]: the commands an operator runs (`serve`, `check`, `demo`, `flags`, batches).
//! - [`server`]: listeners, connections, HTTP/2 serving, config reload, drain.
//! - [`console`]: the operator console at `/ui` on the admin listener: the fleet, tenants,
//!   evidence and history in a browser, and the same audited writes as the CLI.
//! - [`cutover`]: migration control across the fleet: each router's presence record, holds,
//!   the move with a hold, ramps.
//! - [`admin`]: the admin listener (metrics, readiness, explain, flag reads and writes).
//! - [`jobs`]: scheduled jobs on one side: `jobs run`'s command under its lease, and the
//!   read API's answer to who owns a tenant.
//! - [`proxy`]: the hot path, steps 1 to 5 in order, with its refusals, header policy,
//!   tunnels and the client's peer.
//! - [`shadow`]: copies of a tenant's requests to another side, and the comparison.
//! - [`observe`]: metrics and the access log.
//! - [`config`]: the TOML file, its validation and what a reload may change.
//! - [`policy`]: steps 1 to 3 as pure functions: no I/O, no clock, no async.
//!
//! The shared leaves, used by several layers: [`body`] (streamed bodies, their limits and
//! timeouts), [`upstream`] (each target's clients), [`health`] (endpoints' health, choice,
//! retry budgets), [`streams`] (long-lived exchanges bound to a side), [`tls`], [`shutdown`].
//! The flags themselves (model, snapshot, stores, reload) are the `flag-store` crate.

pub mod admin;
pub mod body;
pub mod cli;
pub mod config;
pub mod console;
pub mod cutover;
pub mod health;
pub mod jobs;
pub mod observe;
pub mod per_address;
pub mod policy;
pub mod proxy;
pub mod server;
pub mod shadow;
pub mod shutdown;
pub mod streams;
pub mod tls;
pub mod upstream;

pub use config::Config;
pub use server::{Router, StartError};
pub use shutdown::{StopSignals, until_set};
