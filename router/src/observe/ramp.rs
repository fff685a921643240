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

/// Every ramp's counters on this router, each in a slot that a request carries in two bytes
/// (in its tenant's in-flight marker) until its response completes. A slot is never given to
/// another ramp, so a request that began in an ended ramp counts nowhere.
#[derive(Debug, Default)]
pub struct RampEvidence {
    registry: RwLock<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    by_id: HashMap<String, u16>,
    slots: Vec<Option<Arc<RampCounters>>>,
}

/// Slots a process gives out at most (one a ramp it sees; `u16::MAX` means none).
const SLOTS: usize = u16::MAX as usize;

impl RampEvidence {
    /// The slot of the active ramp `tenant` is in, if any: one check while no ramp is.
    #[inline]
    pub fn slot_of(
        &self,
        snapshot: &flag_store::Snapshot,
        tenant: Option<&str>,
        targets: usize,
    ) -> Option<u16> {
        if !snapshot.has_ramps() {
            return None;
        }
        self.ramp_slot(snapshot, tenant?, targets)
    }

    #[cold]
    fn ramp_slot(
        &self,
        snapshot: &flag_store::Snapshot,
        tenant: &str,
        targets: usize,
    ) -> Option<u16> {
        let id = &snapshot.ramp_of(tenant)?.id;
        if let Some(&slot) = self.registry.read().expect("ramp evidence").by_id.get(id) {
            return Some(slot);
        }
        let mut registry = self.registry.write().expect("ramp evidence");
        if let Some(&slot) = registry.by_id.get(id) {
            return Some(slot);
        }
        if registry.slots.len() >= SLOTS {
            return None;
        }
        let slot = registry.slots.len() as u16;
        registry
            .slots
            .push(Some(Arc::new(RampCounters::new(targets))));
        registry.by_id.insert(id.clone(), slot);
        Some(slot)
    }

    /// The counters in `slot`, while its ramp is active.
    pub fn counters_at(&self, slot: u16) -> Option<Arc<RampCounters>> {
        let registry = self.registry.read().expect("ramp evidence");
        registry.slots.get(slot as usize)?.clone()
    }

    /// Counts one completed request of the ramp in `slot` to `target`.
    pub fn record(&self, slot: u16, target: usize, status: http::StatusCode, elapsed: Duration) {
        if let Some(counters) = self.counters_at(slot) {
            counters.record(target, status, elapsed);
        }
    }

    /// Each counted ramp's figures, keeping only the ramps `keep` says are still wanted (the
    /// active ones: an ended ramp's counters are dropped).
    pub fn figures(
        &self,
        targets: &Targets,
        keep: impl Fn(&str) -> bool,
    ) -> BTreeMap<String, RampFigures> {
        let mut registry = self.registry.write().expect("ramp evidence");
        let Registry { by_id, slots } = &mut *registry;
        by_id.retain(|id, slot| {
            let kept = keep(id);
            if !kept {
                slots[*slot as usize] = None;
            }
            kept
        });
        (by_id.iter())
            .filter_map(|(id, &slot)| {
                Some((id.clone(), slots[slot as usize].as_ref()?.figures(targets)))
            })
            .filter(|(_, f)| !f.is_empty())
            .collect()
    }
}
