//! The fleet's shadow evidence. Behind a balancer each router compares only its share of a
//! tenant's requests, so one router's counts are a sample of a sample. Every router publishes
//! its per-tenant counts in its presence record ([`flag_store::fleet::Presence::shadow`]);
//! here they are summed with this router's own (read live), for `/shadow`,
//! `/shadow/{tenant}` (which `switchyard shadow report` and the `flags apply` plan read) and
//! the console. Mismatch samples, bodies included, stay on the router that made them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flag_store::fleet::{Fleet, Listing};
use serde::Serialize;

use super::Shadows;

/// How long a fleet listing is reused: pages that refresh every few seconds, from several
/// browsers, cost the store one read a second at most.
const LISTING_REUSE: Duration = Duration::from_secs(1);
/// How long a listing may take before the answer goes out with this router's counts only.
const LISTING_WAIT: Duration = Duration::from_secs(2);

/// One router's share of a tenant's comparisons.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Share {
    pub router: String,
    pub compared: u64,
    pub matched: u64,
}

/// A tenant's comparisons over the fleet.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summed {
    pub tenant: String,
    pub compared: u64,
    pub matched: u64,
    pub match_rate: Option<f64>,
    /// Each router that compared some, this router first.
    pub routers: Vec<Share>,
}

/// The fleet as this router reads it, for the evidence and the console's overview.
#[derive(Debug)]
pub struct FleetView {
    fleet: Option<Fleet>,
    /// This router's id in the fleet.
    pub router: String,
    last: Mutex<Option<(Instant, Arc<Listing>)>>,
}

/// What a read of the fleet gave: the listing, or why there is none.
pub type Read = Result<Arc<Listing>, String>;

impl FleetView {
    pub fn new(fleet: Option<Fleet>, router: String) -> Self {
        FleetView {
            fleet,
            router,
            last: Mutex::default(),
        }
    }

    /// Every router's presence record (reused for a second), bounded in time.
    pub async fn read(&self) -> Read {
        if let Some((at, listing)) = &*self.last.lock().expect("fleet view")
            && at.elapsed() < LISTING_REUSE
        {
            return Ok(listing.clone());
        }
        let Some(fleet) = &self.fleet else {
            return Err("this router keeps no fleet registry".into());
        };
        let listing = match tokio::time::timeout(LISTING_WAIT, fleet.list()).await {
            Ok(Ok(listing)) => Arc::new(listing),
            Ok(Err(e)) => return Err(flag_store::error::Chain(&e).to_string()),
            Err(_) => {
                return Err(format!(
                    "the fleet registry did not answer within {LISTING_WAIT:?}"
                ));
            }
        };
        *self.last.lock().expect("fleet view") = Some((Instant::now(), listing.clone()));
        Ok(listing)
    }

    /// Every tenant's comparisons summed over the fleet: the other routers' published counts
    /// and this router's live ones. Without a listing, this router's alone.
    pub fn sum(&self, listing: Option<&Listing>, local: &Shadows) -> BTreeMap<String, Summed> {
        let mut shares: BTreeMap<String, Vec<Share>> = BTreeMap::new();
        for report in local.summary() {
            let share = Share::of(&self.router, [report.compared, report.matched]);
            shares.entry(report.tenant).or_default().push(share);
        }
        for presence in self.others(listing) {
            for (tenant, counts) in &presence.shadow {
                let share = Share::of(&presence.router, *counts);
                shares.entry(tenant.clone()).or_default().push(share);
            }
        }
        (shares.into_iter())
            .map(|(tenant, shares)| (tenant.clone(), Summed::of(tenant, shares)))
            .collect()
    }

    /// One tenant's comparisons summed over the fleet.
    pub fn tenant(&self, listing: Option<&Listing>, local: &Shadows, tenant: &str) -> Summed {
        let report = local.report(tenant);
        let mine = Share::of(&self.router, [report.compared, report.matched]);
        let others = (self.others(listing))
            .filter_map(|p| Some(Share::of(&p.router, *p.shadow.get(tenant)?)));
        Summed::of(
            tenant.to_owned(),
            std::iter::once(mine).chain(others).collect(),
        )
    }

    fn others<'a>(
        &'a self,
        listing: Option<&'a Listing>,
    ) -> impl Iterator<Item = &'a flag_store::fleet::Presence> {
        (listing.into_iter())
            .flat_map(|l| l.routers.iter())
            .filter(|p| p.router != self.router)
    }
}

impl Share {
    fn of(router: &str, [compared, matched]: [u64; 2]) -> Share {
        Share {
            router: router.to_owned(),
            compared,
            matched,
        }
    }
}

impl Summed {
    /// The sum of routers' shares (those that compared nothing left out).
    fn of(tenant: String, mut routers: Vec<Share>) -> Summed {
        routers.retain(|s| s.compared > 0);
        let compared = routers.iter().map(|s| s.compared).sum();
        let matched = routers.iter().map(|s| s.matched).sum();
        Summed {
            tenant,
            compared,
            matched,
            match_rate: (compared > 0).then(|| matched as f64 / compared as f64),
            routers,
        }
    }
}
