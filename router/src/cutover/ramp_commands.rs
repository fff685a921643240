//! An operator's commands on ramps, for `switchyard ramp` and the console alike: start one
//! (checked against the store: each tenant has a flag, is not sealed, leaves the same side,
//! and is in no other active ramp), and pause, resume or abort one. Each is one audited write
//! of the ramp's record, conditional on the version read; the routers' drivers do the rest
//! ([`super::ramp`]).

use std::collections::BTreeMap;
use std::time::Duration;

use flag_store::fleet::now_ms;
use flag_store::ramp::{self, Guards, RampItem, RampState};
use flag_store::store::Store;
use flag_store::{FlagItem, StoreError, Targets};

use super::ramp::{place, record_write};

/// Why an operator's command on a ramp was not carried out (nothing was written).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The command does not fit the store: what is wrong, in words.
    #[error("{0}")]
    Refused(String),
    #[error("no ramp {0:?} in the store")]
    NotFound(String),
    #[error("ramp {id:?} is {state}: it cannot be made {to}")]
    NotNow {
        id: String,
        state: &'static str,
        to: &'static str,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A guard's share in percent (`1.5` is 1.5%) as the record keeps it, in basis points;
/// `name` says which guard when it is not between 0 and 100.
pub fn basis_points(name: &str, percent: f64) -> Result<u32, String> {
    if !(0.0..=100.0).contains(&percent) {
        return Err(format!("{name} {percent}% is not between 0% and 100%"));
    }
    Ok((percent * 100.0).round() as u32)
}

/// The p99 guard's ratio (`1.5`) as the record keeps it, in percent (150).
pub fn ratio_pct(ratio: f64) -> u32 {
    (ratio * 100.0).round() as u32
}

/// A ramp to start.
#[derive(Debug, Clone)]
pub struct Start {
    pub id: String,
    pub tenants: Vec<String>,
    /// The side to ramp onto.
    pub to: String,
    /// Its share at each step, in percent, rising.
    pub steps: Vec<u32>,
    pub step_time: Duration,
    pub guards: Guards,
    pub by: String,
    pub reason: String,
}

/// Starts a ramp: checks it against the store, then writes its record (which must not exist).
/// Returns the record as written (its `from` is the side the tenants leave) and its version.
pub async fn start(
    store: &Store,
    targets: Option<&Targets>,
    mut s: Start,
) -> Result<(RampItem, u64), CommandError> {
    let refuse = |why: String| Err(CommandError::Refused(why));
    ramp::validate_id(&s.id).map_err(|e| CommandError::Refused(e.to_string()))?;
    s.tenants.sort();
    s.tenants.dedup();
    if s.tenants.is_empty() {
        return refuse("no tenants to ramp".into());
    }
    let records = records(store).await?;
    if records.iter().any(|(id, _, _)| *id == s.id) {
        return refuse(format!("ramp {:?} exists already: pick another id", s.id));
    }
    let busy: Vec<String> = (records.iter())
        .filter(|(_, r, _)| r.state.is_active())
        .flat_map(|(_, r, i)| {
            (r.tenants.iter())
                .filter(|t| s.tenants.binary_search(t).is_ok())
                .map(move |t| format!("{t} (ramp {})", i.tenant))
        })
        .collect();
    if !busy.is_empty() {
        return refuse(format!("already in an active ramp: {}", busy.join(", ")));
    }
    let currents = store.currents(&s.tenants).await?;
    let mut before = BTreeMap::new();
    let mut from: Option<String> = None;
    for tenant in &s.tenants {
        let Some(item) = currents.get(tenant).and_then(|c| c.item.clone()) else {
            return refuse(format!(
                "tenant {tenant:?} has no flag of its own: set one before ramping it"
            ));
        };
        let leaves = leaving_side(&item, &s.to)?;
        match &from {
            None => from = Some(leaves),
            Some(f) if *f != leaves => {
                return refuse(format!(
                    "tenant {tenant:?} leaves {leaves:?}, the others {f:?}: one ramp leaves one side"
                ));
            }
            Some(_) => {}
        }
        before.extend(ramp::placement_of(&item).map(|p| (tenant.clone(), p)));
    }
    let item = RampItem {
        tenants: s.tenants,
        from: from.expect("at least one tenant"),
        to: s.to,
        steps: s.steps,
        step_ms: s.step_time.as_millis() as u64,
        guards: s.guards,
        before,
        state: RampState::Running,
        at: 0,
        step_started_ms: now_ms(),
        window_start: None,
        why: format!("started: {}", s.reason),
    };
    let mut write = record_write(&ramp::key(&s.id), item.clone(), &s.by, 0);
    write.reason = s.reason;
    let (_, new) = store.write(&write, targets).await?;
    Ok((item, new.version))
}

/// An operator pauses, resumes or aborts ramp `id`: one write of its record, conditional on
/// the version read (an abort also puts every tenant back where it was before the ramp).
/// Returns the record as written. `switchyard ramp pause|resume|abort` and the console.
pub async fn change(
    store: &Store,
    id: &str,
    to: RampState,
    by: &str,
    reason: &str,
) -> Result<RampItem, CommandError> {
    let key = ramp::key(id);
    let record = store.get(&key).await?;
    let Some((item, version)) = record.and_then(|r| Some((r.ramp?, r.version))) else {
        return Err(CommandError::NotFound(id.to_owned()));
    };
    let allowed = match to {
        RampState::Paused => item.state == RampState::Running,
        RampState::Running => item.state == RampState::Paused,
        _ => item.state.is_active(),
    };
    if !allowed {
        return Err(CommandError::NotNow {
            id: id.to_owned(),
            state: item.state.as_str(),
            to: to.as_str(),
        });
    }
    let mut next = item.clone();
    next.state = to;
    next.why = format!("{} by {by}: {reason}", to.as_str());
    if to == RampState::Running {
        // A fresh window for the step it goes on from.
        next = next.step_to(item.at, now_ms(), next.why.clone());
    }
    if to == RampState::Aborted {
        next.at = 0;
    }
    let mut write = record_write(&key, next.clone(), by, version);
    write.reason = reason.to_owned();
    store.write(&write, None).await?;
    if to == RampState::Aborted {
        let currents = store.currents(&item.tenants).await?;
        let why = format!("ramp {id} aborted: {reason}");
        place(store, &next, 0, &currents, by, &why).await?;
    }
    Ok(next)
}

/// Every ramp record in the store, with its id and ramp: one pass over the items, keeping only
/// the records (a store of a million tenants is never held).
pub async fn records(store: &Store) -> Result<Vec<(String, RampItem, FlagItem)>, StoreError> {
    let mut records = Vec::new();
    store
        .scan(|loaded| {
            if let Ok(item) = loaded.item
                && let (Some(id), Some(ramp)) = (ramp::id_of(&item.tenant), item.ramp.clone())
            {
                records.push((id.to_owned(), ramp, item));
            }
            std::ops::ControlFlow::Continue(())
        })
        .await?;
    Ok(records)
}

/// The side a tenant's ramp onto `to` leaves: its pinned target, or the other side of a split
/// over exactly two sides, one of them `to`.
fn leaving_side(item: &FlagItem, to: &str) -> Result<String, CommandError> {
    let refuse = |why: String| Err(CommandError::Refused(why));
    if item.sealed {
        return refuse(format!(
            "tenant {:?} is sealed: a ramp would move it",
            item.tenant
        ));
    }
    match (&item.target, &item.weights) {
        (Some(t), None) if t != to => Ok(t.clone()),
        (Some(_), None) => refuse(format!("tenant {:?} is on {to:?} already", item.tenant)),
        (None, Some(w)) if w.len() == 2 && w.contains_key(to) => {
            Ok(w.keys().find(|k| *k != to).expect("two sides").clone())
        }
        _ => refuse(format!(
            "tenant {:?} is split over other sides than one and {to:?}",
            item.tenant
        )),
    }
}
