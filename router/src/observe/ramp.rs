//! A ramp's evidence, as this router sees it: for the tenants of each active ramp, per side,
//! the requests, their 5xx answers (the router's own 502 and 504 for upstream failures
//! included) and a latency histogram. Counted when a response completes, only for requests
//! whose tenant is in a ramp (the proxy looks once, and only while a ramp is active), and
//! published with the router's presence record for the ramp's driver to sum over the fleet.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use flag_store::Targets;
use flag_store::ramp::{RampFigures, SideFigures, latency_bounds_us};

/// One side's counters.
#[derive(Debug)]
struct SideCounters {
    requests: AtomicU64,
    errors: AtomicU64,
    shadow_compared: AtomicU64,
    shadow_mismatched: AtomicU64,
    latency: Box<[AtomicU64]>,
}

/// One ramp's counters, by target index.
#[derive(Debug)]
pub struct RampCounters {
    sides: Box<[SideCounters]>,
}

impl RampCounters {
    fn new(targets: usize) -> Self {
        let buckets = latency_bounds_us().len() + 1;
        RampCounters {
            sides: (0..targets)
                .map(|_| SideCounters {
                    requests: AtomicU64::new(0),
                    errors: AtomicU64::new(0),
                    shadow_compared: AtomicU64::new(0),
                    shadow_mismatched: AtomicU64::new(0),
                    latency: (0..buckets).map(|_| AtomicU64::new(0)).collect(),
                })
                .collect(),
        }
    }

    /// Counts one completed request to `target`.
    pub fn record(&self, target: usize, status: http::StatusCode, elapsed: Duration) {
        let Some(side) = self.sides.get(target) else {
            return;
        };
        side.requests.fetch_add(1, Ordering::Relaxed);
        if status.is_server_error() {
            side.errors.fetch_add(1, Ordering::Relaxed);
        }
        let us = elapsed.as_micros() as u64;
        let at = latency_bounds_us().partition_point(|&b| b < us);
        side.latency[at].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one shadow comparison of a copy sent to `target`.
    pub fn record_shadow(&self, target: usize, mismatched: bool) {
        let Some(side) = self.sides.get(target) else {
            return;
        };
        side.shadow_compared.fetch_add(1, Ordering::Relaxed);
        if mismatched {
            side.shadow_mismatched.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn figures(&self, targets: &Targets) -> RampFigures {
        let mut out = BTreeMap::new();
        for (id, name) in targets.iter() {
            let side = &self.sides[id.index()];
            let requests = side.requests.load(Ordering::Relaxed);
            let shadow_compared = side.shadow_compared.load(Ordering::Relaxed);
            if requests == 0 && shadow_compared == 0 {
                continue;
            }
            let mut latency: Vec<u64> = (side.latency.iter())
                .map(|n| n.load(Ordering::Relaxed))
                .collect();
            while latency.last() == Some(&0) {
                latency.pop();
            }
            out.insert(
                name.to_owned(),
                SideFigures {
                    requests,
                    errors: side.errors.load(Ordering::Relaxed),
                    latency,
                    shadow_compared,
                    shadow_mismatched: side.shadow_mismatched.load(Ordering::Relaxed),
                },
            );
        }
        out
    }
}

/// Every ramp's counters on this router, by ramp id.
#[derive(Debug, Default)]
pub struct RampEvidence {
    ramps: RwLock<HashMap<String, Arc<RampCounters>>>,
}

impl RampEvidence {
    /// The counters of the active ramp `tenant` is in, if any: one check while no ramp is.
    #[inline]
    pub fn of(
        &self,
        snapshot: &flag_store::Snapshot,
        tenant: Option<&str>,
        targets: usize,
    ) -> Option<Arc<RampCounters>> {
        if !snapshot.has_ramps() {
            return None;
        }
        let ramp = snapshot.ramp_of(tenant?)?;
        Some(self.counters(&ramp.id, targets))
    }

    /// The counters of ramp `id` (made on its first request).
    pub fn counters(&self, id: &str, targets: usize) -> Arc<RampCounters> {
        if let Some(c) = self.ramps.read().expect("ramp evidence").get(id) {
            return c.clone();
        }
        let mut ramps = self.ramps.write().expect("ramp evidence");
        (ramps.entry(id.to_owned()))
            .or_insert_with(|| Arc::new(RampCounters::new(targets)))
            .clone()
    }

    /// Each counted ramp's figures, keeping only the ramps `keep` says are still wanted (the
    /// active ones: an ended ramp's counters are dropped).
    pub fn figures(
        &self,
        targets: &Targets,
        keep: impl Fn(&str) -> bool,
    ) -> BTreeMap<String, RampFigures> {
        let mut ramps = self.ramps.write().expect("ramp evidence");
        ramps.retain(|id, _| keep(id));
        (ramps.iter())
            .map(|(id, c)| (id.clone(), c.figures(targets)))
            .filter(|(_, f)| !f.is_empty())
            .collect()
    }
}
