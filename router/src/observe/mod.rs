//! What the router tells about itself: step 5 of the hot path, the Prometheus metrics
//! ([`metrics`]), and the sampled access log ([`access_log`]). Both are recorded when a
//! response finishes, off the request's way.

pub mod access_log;
pub mod metrics;
pub mod ramp;
