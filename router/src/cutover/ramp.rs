//! The ramps' driver: every router runs one, and for each running ramp one router at a time
//! drives it, under a lease in the store (`ramp.ID`, the jobs' lease, whose expiry hands it
//! to another router when its driver dies).
//!
//! The driver reads the ramp's record and its tenants' flags from the store (not its snapshot,
//! which may lag the last step), and each tick:
//! - pauses the ramp when a tenant's flag was written by anyone but a ramp driver (naming the
//!   write), or when a side it ramps between is evacuated;
//! - sums the fleet's evidence for the ramp (each router's presence record) over the step's
//!   window, and judges the side ramped onto against the side it leaves ([`judge`]);
//! - on a breach, rolls the tenants back to the last step that held, and says why with the
//!   figures; when the step's time is up and it held (or there is nothing to judge by), goes
//!   to the next step, or completes the ramp.
//!
//! Every change writes the record first (conditional on the version read, so a pause or an
//! abort written meanwhile wins), then the tenants' flags. A driver that dies between the two
//! leaves the record a step ahead of the flags; the next driver sees flags last written by a
//! driver and writes them again, so a step is never skipped or repeated.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use flag_store::fleet::{Fleet, Presence, now_ms};
use flag_store::jobs::lease::{Lease, Leases, Taken};
use flag_store::ramp::{
    self, Ramp, RampFigures, RampItem, RampPlacement, RampState, SideFigures, Verdict, judge,
};
use flag_store::store::Store;
use flag_store::write::Current;
use flag_store::{FlagState, FlagWrite, Placing, StoreError};
use tokio::sync::watch;

/// The lease's job name.
const LEASE: &str = "ramp";

/// Who writes a ramp's changes: how a driver recognises its own writes.
pub fn author(id: &str, router: &str) -> String {
    format!("{} (router {router})", driver_name(id))
}

fn driver_name(id: &str) -> String {
    format!("switchyard ramp {id}")
}

/// A tenant's placement as a write asks for it: the step's weights, or its `before`.
pub fn placing_at(item: &RampItem, tenant: &str, at: u32) -> Option<Placing> {
    Some(match item.placement_at(tenant, at)? {
        RampPlacement::Target(t) => Placing::Pinned(t),
        RampPlacement::Weights(w) => Placing::Split(w),
    })
}

/// Writes every tenant not yet placed at step `at` there, each conditional on the version read.
pub async fn place(
    store: &Store,
    item: &RampItem,
    at: u32,
    currents: &HashMap<String, Current>,
    by: &str,
    reason: &str,
) -> Result<(), StoreError> {
    let writes: Vec<FlagWrite> = (item.tenants.iter())
        .filter_map(|tenant| {
            let current = currents.get(tenant);
            let stored = current.and_then(|c| c.item.as_ref());
            if stored.is_some_and(|i| ramp::placed(item, i, at)) {
                return None;
            }
            Some(FlagWrite {
                evacuation: None,
                ramp: None,
                hold: Default::default(),
                jobs: None,
                tenant: tenant.clone(),
                placing: placing_at(item, tenant, at),
                seal: None,
                shadow: None,
                by: by.to_owned(),
                reason: reason.to_owned(),
                expect_version: Some(current.map_or(0, |c| c.version)),
                force: false,
            })
        })
        .collect();
    for result in store.write_each(&writes, None, |_| {}).await {
        result?;
    }
    Ok(())
}

/// Each live router's figures for ramp `id` (by router id, then side): from the presence
/// records seen within `live` of `now`.
pub fn fleet_figures(
    routers: &[Presence],
    id: &str,
    live: Duration,
    now: u64,
) -> BTreeMap<String, RampFigures> {
    (routers.iter())
        .filter(|r| r.age_ms(now) <= live.as_millis() as u64)
        .filter_map(|r| Some((r.router.clone(), r.ramps.get(id)?.clone())))
        .collect()
}

/// One side's figures over the step's window, summed over the live routers, each router's
/// counted from its own figures at the step's start: a router that joined or restarted since
/// counts whole, one that left counts nothing.
pub fn window(
    now: &BTreeMap<String, RampFigures>,
    start: Option<&BTreeMap<String, RampFigures>>,
    side: &str,
) -> SideFigures {
    let empty = SideFigures::default();
    let mut sum = SideFigures::default();
    for (router, figures) in now {
        let at_start = (start.and_then(|s| s.get(router)))
            .and_then(|f| f.get(side))
            .unwrap_or(&empty);
        sum.add(&figures.get(side).unwrap_or(&empty).since(at_start));
    }
    sum
}

pub struct Driver {
    pub store: Store,
    pub fleet: Fleet,
    pub flags: Arc<FlagState>,
    pub router: String,
    pub lease: Duration,
    /// A presence record older than this is a gone router's: its figures are left out.
    pub live: Duration,
    /// Whether a side has an endpoint that takes traffic, in this router's health view.
    pub healthy: Arc<dyn Fn(flag_store::TargetId) -> bool + Send + Sync>,
}

impl Driver {
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let leases = Leases::of(&self.store);
        let mut held: HashMap<String, Lease> = HashMap::new();
        let tick = (self.lease / 5).max(Duration::from_millis(20));
        loop {
            tokio::select! {
                biased;
                _ = crate::shutdown::until_set(&mut stop) => break,
                () = tokio::time::sleep(tick) => {}
            }
            let running: Vec<Arc<Ramp>> = (self.flags.load().ramps().iter())
                .filter(|r| r.item.state == RampState::Running)
                .cloned()
                .collect();
            // Leases of ramps no longer running go back at once.
            let over: Vec<String> = (held.keys())
                .filter(|id| !running.iter().any(|r| &r.id == *id))
                .cloned()
                .collect();
            for id in over {
                if let Some(lease) = held.remove(&id) {
                    let _ = leases.release(&lease).await;
                }
            }
            for ramp in running {
                if !self.hold_lease(&leases, &mut held, &ramp.id).await {
                    continue;
                }
                if let Err(e) = self.drive(&ramp.id).await {
                    let e = flag_store::error::Chain(&e).to_string();
                    tracing::warn!(ramp = %ramp.id, error = %e, "ramp step not taken; trying again");
                }
            }
        }
        for lease in held.into_values() {
            let _ = leases.release(&lease).await;
        }
    }

    /// Takes or renews the ramp's lease; false when another router drives it.
    async fn hold_lease(
        &self,
        leases: &Leases,
        held: &mut HashMap<String, Lease>,
        id: &str,
    ) -> bool {
        let renewed = match held.get(id) {
            Some(lease) => leases.renew(lease, self.lease).await,
            None => match leases.take(LEASE, id, &self.router, "-", self.lease).await {
                Ok(Taken::Granted(lease)) => {
                    tracing::info!(ramp = %id, token = lease.token, "driving the ramp");
                    Ok(Some(lease))
                }
                Ok(Taken::Busy(_)) => Ok(None),
                Err(e) => Err(e),
            },
        };
        match renewed {
            Ok(Some(lease)) => {
                held.insert(id.to_owned(), lease);
                true
            }
            Ok(None) | Err(_) => {
                held.remove(id);
                false
            }
        }
    }

    /// One look at the ramp: pause, roll back, step, complete, or wait.
    async fn drive(&self, id: &str) -> Result<(), StoreError> {
        let Some(record) = self.store.get(&ramp::key(id)).await? else {
            return Ok(());
        };
        let Some(item) = record.ramp.clone() else {
            return Ok(());
        };
        if item.state != RampState::Running {
            return Ok(());
        }
        let by = author(id, &self.router);
        let currents = self.store.currents(&item.tenants).await?;
        // A tenant written by someone else: the ramp is no longer the only writer.
        for tenant in &item.tenants {
            let stored = currents.get(tenant).and_then(|c| c.item.as_ref());
            let placed = stored.is_some_and(|i| ramp::placed(&item, i, item.at));
            let ours = (stored.and_then(|i| i.updated_by.as_deref()))
                .is_some_and(|b| b.starts_with(&driver_name(id)));
            if !placed && !ours && item.at > 0 {
                let who = stored.map_or("its item is gone".to_owned(), |i| {
                    format!(
                        "written by {} at version {} ({})",
                        i.updated_by.as_deref().unwrap_or("?"),
                        i.version,
                        i.reason.as_deref().unwrap_or("no reason")
                    )
                });
                let why = format!("paused: tenant {tenant:?} was {who}, not by the ramp");
                return self.write(id, record.version, item.paused(why), &by).await;
            }
        }
        // Tenants a driver has not placed at the recorded step yet (one stopped between the
        // record and the flags): the same step's placement, written again.
        let behind = (item.tenants.iter()).any(|t| {
            (currents.get(t).and_then(|c| c.item.as_ref()))
                .is_none_or(|i| !ramp::placed(&item, i, item.at))
        });
        if behind && item.at > 0 {
            let reason = format!(
                "ramp {id}: step {} again, its flags were not all written",
                item.at
            );
            return place(&self.store, &item, item.at, &currents, &by, &reason).await;
        }
        let snapshot = self.flags.load();
        let evacuated = [&item.from, &item.to].into_iter().find(|side| {
            (snapshot.targets().id(side)).is_some_and(|t| snapshot.evacuation(t).is_some())
        });
        if let Some(side) = evacuated {
            let why = format!("paused: side {side:?} is evacuated");
            drop(snapshot);
            return self.write(id, record.version, item.paused(why), &by).await;
        }
        let down = |side: &str| (snapshot.targets().id(side)).is_some_and(|t| !(self.healthy)(t));
        let (to_down, from_down) = (down(&item.to), down(&item.from));
        drop(snapshot);
        let now = now_ms();
        if from_down {
            let why = format!(
                "paused: side {:?}, which a rollback goes back to, has no healthy endpoint",
                item.from
            );
            return self.write(id, record.version, item.paused(why), &by).await;
        }
        if to_down && item.at == 0 {
            let why = format!(
                "paused before its first step: side {:?} has no healthy endpoint",
                item.to
            );
            return self.write(id, record.version, item.paused(why), &by).await;
        }
        if to_down {
            let why = format!("side {:?} has no healthy endpoint", item.to);
            let next = rolled_back(id, &item, now, &why);
            return self.step(id, record.version, next, &currents, &by).await;
        }
        let steps = item.steps.len() as u32;
        if item.at == 0 {
            let next = item.step_to(
                1,
                now,
                format!("step 1 of {steps}: {}% onto {}", item.steps[0], item.to),
            );
            return self.step(id, record.version, next, &currents, &by).await;
        }
        let routers = self.fleet.list().await?.routers;
        let figures = fleet_figures(&routers, id, self.live, now_ms());
        let Some(start) = &item.window_start else {
            let next = RampItem {
                window_start: Some(figures),
                ..item
            };
            return self.write(id, record.version, next, &by).await;
        };
        let canary = window(&figures, Some(start), &item.to);
        let baseline = window(&figures, Some(start), &item.from);
        let verdict = judge(&item.guards, &canary, &baseline);
        match verdict {
            Verdict::Breach(why) => {
                let next = rolled_back(id, &item, now, &why);
                self.step(id, record.version, next, &currents, &by).await
            }
            Verdict::Holds(figures) if now >= item.step_started_ms + item.step_ms => {
                if item.at == steps {
                    let mut next = item.clone();
                    next.state = RampState::Completed;
                    next.why = format!("completed: all {steps} steps held; last step: {figures}");
                    tracing::info!(ramp = %id, "ramp completed");
                    return self.write(id, record.version, next, &by).await;
                }
                let why = format!(
                    "step {} of {steps}: {}% onto {}; step {} held: {figures}",
                    item.at + 1,
                    item.steps[item.at as usize],
                    item.to,
                    item.at
                );
                let next = item.step_to(item.at + 1, now, why);
                self.step(id, record.version, next, &currents, &by).await
            }
            Verdict::Holds(_) | Verdict::Wait(_) => Ok(()),
        }
    }

    /// Writes the record at its next step, then places the tenants there.
    async fn step(
        &self,
        id: &str,
        version: u64,
        next: RampItem,
        currents: &HashMap<String, Current>,
        by: &str,
    ) -> Result<(), StoreError> {
        let reason = next.why.clone();
        let at = next.at;
        self.write(id, version, next.clone(), by).await?;
        place(&self.store, &next, at, currents, by, &reason).await
    }

    async fn write(
        &self,
        id: &str,
        version: u64,
        next: RampItem,
        by: &str,
    ) -> Result<(), StoreError> {
        let write = record_write(&ramp::key(id), next, by, version);
        self.store.write(&write, None).await.map(|_| ())
    }
}

/// A ramp at step `at` (1 or more) rolled back to the step before, stopped, saying why.
fn rolled_back(id: &str, item: &RampItem, now: u64, why: &str) -> RampItem {
    let (at, back) = (item.at, item.at - 1);
    let share = item.steps[at as usize - 1];
    let why = format!(
        "rolled back from step {at} ({share}% onto {}) to step {back}: {why}",
        item.to
    );
    tracing::warn!(ramp = %id, %why, "ramp rolled back");
    let mut next = item.step_to(back, now, why);
    next.state = RampState::RolledBack;
    next
}

/// The write of a ramp record, conditional on the version read.
pub fn record_write(key: &str, next: RampItem, by: &str, version: u64) -> FlagWrite {
    let reason = if next.why.is_empty() {
        format!("ramp {}", next.state.as_str())
    } else {
        next.why.clone()
    };
    FlagWrite {
        ramp: Some(next),
        ..FlagWrite::record(key, by, &reason, Some(version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(requests: u64) -> RampFigures {
        BTreeMap::from([(
            "new".to_owned(),
            SideFigures {
                requests,
                ..SideFigures::default()
            },
        )])
    }

    #[test]
    fn a_window_counts_each_router_from_its_own_start() {
        let start = BTreeMap::from([
            ("a".to_owned(), figures(100)),
            ("b".to_owned(), figures(50)),
            ("gone".to_owned(), figures(1000)),
        ]);
        let now = BTreeMap::from([
            // 30 more since the step began.
            ("a".to_owned(), figures(130)),
            // Restarted meanwhile: its 20 are all the step's.
            ("b".to_owned(), figures(20)),
            // Joined after the step began: all 7 are the step's.
            ("new-router".to_owned(), figures(7)),
        ]);
        assert_eq!(window(&now, Some(&start), "new").requests, 57);
        assert_eq!(window(&now, Some(&start), "legacy").requests, 0);
        assert_eq!(window(&now, None, "new").requests, 157);
    }
}
