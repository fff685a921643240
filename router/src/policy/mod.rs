//! Steps 1 to 3 of the hot path as pure functions: the path a request is routed on, its
//! route, its tenant, and the target its flag picks. No I/O, no clock, no async, and nothing
//! of the config, proxy or server: the proxy, `/explain` and the tests all call exactly this,
//! and `tests/e2e/layout.rs` keeps it so.

pub mod path;
pub mod pick;
pub mod route;
pub mod tenant;

pub use pick::{AllHealthy, Basis, Decision, HealthView, Pick, pick};
pub use route::{Route, RouteId, RouteKind, RouteTable};
