//! Ramps: a split dial that steps itself (1%, 5%, 25%, 50% onto a side) and rolls back on the
//! routers' own evidence, the side ramped onto against the side it leaves, the same tenants in
//! the same window.
//!
//! A ramp is a record of the flags table under a key no tenant id can take (`!ramp:ID`),
//! written like a flag (conditional on its version, audited) and learned like one. It says
//! which tenants ramp from which side to which, the steps, how long each lasts, the guards,
//! each tenant's placement before the ramp (where an abort or a rollback past the first step
//! returns it), the step in force and the ramp's state. The routers' driver
//! (`router::cutover::ramp`) writes the record at every step, then the tenants' flags; it
//! is the one place a ramp moves.
//!
//! The evidence: each router counts, per ramp and side, the requests of the ramp's tenants,
//! their 5xx answers (upstream errors included, which the router answers 502 or 504) and a
//! latency histogram, and publishes the totals in its presence record ([`crate::fleet`]).
//! [`judge`] compares the two sides' figures over a window, summed over the fleet.

use std::collections::BTreeMap;

use crate::error::ItemError;
use crate::model::{FlagItem, TargetId, Targets, is_tenant_char, validate_tenant_id};
pub use crate::record::{
    Guards, RampItem, RampPlacement, RampState, SideFigures, latency_bounds_us,
};

/// The flags table key prefix of ramp records.
pub const KEY_PREFIX: &str = "!ramp:";

/// The key of ramp `id`'s record.
pub fn key(id: &str) -> String {
    format!("{KEY_PREFIX}{id}")
}

/// The ramp a key names, when it is a ramp record's key.
pub fn id_of(key: &str) -> Option<&str> {
    key.strip_prefix(KEY_PREFIX)
}

/// Checks a ramp id: 1 to 64 of the characters of a tenant id (it names a lease too).
pub fn validate_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(is_tenant_char) {
        return Err(format!(
            "ramp id {id:?} is not 1 to 64 of letters, digits and . _ - : @"
        ));
    }
    Ok(())
}

/// Whether `item` is where step `at` of `ramp` puts its tenant (so nobody wrote it meanwhile).
pub fn placed(ramp: &RampItem, item: &FlagItem, at: u32) -> bool {
    ramp.placement_at(&item.tenant, at).as_ref() == placement_of(item).as_ref()
}

/// Checks a ramp's own shape (targets are checked by [`compile`]).
pub fn check(ramp: &RampItem) -> Result<(), ItemError> {
    let shape = |why: String| Err(ItemError::Shape(why));
    if ramp.tenants.is_empty() {
        return shape("is a ramp of no tenants".into());
    }
    for tenant in &ramp.tenants {
        validate_tenant_id(tenant)?;
        if !ramp.before.contains_key(tenant) {
            return shape(format!("has no `before` for tenant {tenant:?}"));
        }
    }
    if ramp.from == ramp.to {
        return shape(format!("ramps from {:?} to itself", ramp.from));
    }
    if ramp.steps.is_empty()
        || ramp.steps.windows(2).any(|w| w[0] >= w[1])
        || ramp.steps.iter().any(|&s| s == 0 || s > 100)
    {
        return shape(format!(
            "has steps {:?}; they rise, each 1 to 100 percent",
            ramp.steps
        ));
    }
    if ramp.at as usize > ramp.steps.len() {
        return shape(format!("is at step {} of {}", ramp.at, ramp.steps.len()));
    }
    if ramp.step_ms == 0 {
        return shape("has a step time of 0".into());
    }
    Ok(())
}

/// A stored flag's placement as a ramp records it (`None` for an item that is neither pinned
/// nor split).
pub fn placement_of(item: &FlagItem) -> Option<RampPlacement> {
    match (&item.target, &item.weights) {
        (Some(t), None) => Some(RampPlacement::Target(t.clone())),
        (None, Some(w)) => Some(RampPlacement::Weights(w.clone())),
        _ => None,
    }
}

/// A ramp as a snapshot holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ramp {
    pub id: String,
    pub from: TargetId,
    pub to: TargetId,
    /// The record's version (what the driver writes against).
    pub version: u64,
    pub item: RampItem,
}

impl Ramp {
    /// The stored record, for a local copy.
    pub fn to_item(&self) -> FlagItem {
        FlagItem {
            tenant: key(&self.id),
            version: self.version,
            ramp: Some(self.item.clone()),
            ..FlagItem::default()
        }
    }
}

/// Validates a ramp record against the configured targets.
pub fn compile(record: &FlagItem, targets: &Targets) -> Result<Ramp, ItemError> {
    let id = id_of(&record.tenant)
        .ok_or_else(|| ItemError::Shape(format!("key {:?} is not a ramp", record.tenant)))?;
    validate_id(id).map_err(ItemError::Shape)?;
    let Some(item) = &record.ramp else {
        return Err(ItemError::Shape(
            "is a ramp record without its `ramp`".into(),
        ));
    };
    if record.has_flag_fields() || record.evacuation.is_some() {
        return Err(ItemError::Shape(
            "is a ramp record, which holds only `ramp` and the audit fields".into(),
        ));
    }
    check(item)?;
    let resolve = |name: &str| {
        targets.id(name).ok_or_else(|| ItemError::UnknownTarget {
            target: name.to_owned(),
            known: targets.known_list(),
        })
    };
    Ok(Ramp {
        id: id.to_owned(),
        from: resolve(&item.from)?,
        to: resolve(&item.to)?,
        version: record.version,
        item: item.clone(),
    })
}

/// A ramp's figures by side name, as a presence record carries them.
pub type RampFigures = BTreeMap<String, SideFigures>;

/// What the figures of a step's window say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Too few requests on the side ramped onto to judge.
    Wait(String),
    /// Within the guards.
    Holds(String),
    /// A guard breached: why, with the figures.
    Breach(String),
}

/// Judges one window: the side ramped onto (`canary`) against the side it leaves
/// (`baseline`), the same tenants at the same time.
pub fn judge(guards: &Guards, canary: &SideFigures, baseline: &SideFigures) -> Verdict {
    let figures = format!(
        "ramped-onto side {} requests, {:.2}% 5xx, p99 {:.1} ms; other side {} requests, {:.2}% 5xx, p99 {:.1} ms",
        canary.requests,
        canary.error_bp() as f64 / 100.0,
        canary.p99_us() as f64 / 1000.0,
        baseline.requests,
        baseline.error_bp() as f64 / 100.0,
        baseline.p99_us() as f64 / 1000.0,
    );
    if canary.requests < guards.min_requests.max(1) {
        return Verdict::Wait(format!(
            "waiting for {} requests on the ramped-onto side: {figures}",
            guards.min_requests
        ));
    }
    if let Some(max) = guards.max_5xx_bp {
        let excess = canary.error_bp().saturating_sub(baseline.error_bp());
        if excess > u64::from(max) {
            return Verdict::Breach(format!(
                "5xx {:.2} points above the other side's, more than the {:.2} allowed: {figures}",
                excess as f64 / 100.0,
                f64::from(max) / 100.0
            ));
        }
    }
    if let Some(max) = guards.max_p99_ratio_pct
        && baseline.requests > 0
    {
        let (c, b) = (canary.p99_us(), baseline.p99_us().max(1));
        if c * 100 > b * u64::from(max) {
            return Verdict::Breach(format!(
                "p99 {:.2} times the other side's, more than the {:.2} allowed: {figures}",
                c as f64 / b as f64,
                f64::from(max) / 100.0
            ));
        }
    }
    if let Some(max) = guards.max_shadow_mismatch_bp {
        let compared = canary.shadow_compared + baseline.shadow_compared;
        let mismatched = canary.shadow_mismatched + baseline.shadow_mismatched;
        if compared < guards.min_requests.max(1) {
            return Verdict::Wait(format!(
                "waiting for {} shadow comparisons ({compared} so far): {figures}",
                guards.min_requests
            ));
        }
        if mismatched * 10_000 > compared * u64::from(max) {
            return Verdict::Breach(format!(
                "shadow copies differed from the primary's answers in {mismatched} of {compared} comparisons, more than the {:.2}% allowed: {figures}",
                f64::from(max) / 100.0
            ));
        }
    }
    Verdict::Holds(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(requests: u64, errors: u64, latency_us: u64) -> SideFigures {
        let bounds = latency_bounds_us();
        let at = bounds.partition_point(|&b| b < latency_us);
        let mut latency = vec![0; at + 1];
        latency[at] = requests;
        SideFigures {
            requests,
            errors,
            latency,
            ..SideFigures::default()
        }
    }

    fn guards() -> Guards {
        Guards {
            max_5xx_bp: Some(100),
            max_p99_ratio_pct: Some(150),
            max_shadow_mismatch_bp: None,
            min_requests: 500,
        }
    }

    #[test]
    fn the_judge_waits_for_evidence_then_compares_the_two_sides() {
        let base = figures(5000, 5, 20_000);
        assert!(matches!(
            judge(&guards(), &figures(499, 0, 20_000), &base),
            Verdict::Wait(_)
        ));
        assert!(matches!(
            judge(&guards(), &figures(1000, 10, 21_000), &base),
            Verdict::Holds(_)
        ));
        let Verdict::Breach(why) = judge(&guards(), &figures(1000, 60, 20_000), &base) else {
            panic!("6% 5xx against 0.1% holds")
        };
        assert!(why.contains("5xx 5.90 points"), "{why}");
        let Verdict::Breach(why) = judge(&guards(), &figures(1000, 0, 60_000), &base) else {
            panic!("a tripled p99 holds")
        };
        assert!(why.contains("p99"), "{why}");
        // Shadow copies that differ too often: judged once enough were compared.
        let shadow_guards = Guards {
            max_shadow_mismatch_bp: Some(200),
            ..guards()
        };
        let shadowed = |compared, mismatched| SideFigures {
            shadow_compared: compared,
            shadow_mismatched: mismatched,
            ..figures(1000, 0, 20_000)
        };
        assert!(matches!(
            judge(&shadow_guards, &shadowed(499, 100), &base),
            Verdict::Wait(_)
        ));
        assert!(matches!(
            judge(&shadow_guards, &shadowed(600, 12), &base),
            Verdict::Holds(_)
        ));
        let Verdict::Breach(why) = judge(&shadow_guards, &shadowed(600, 13), &base) else {
            panic!("2.2% of shadow mismatches holds")
        };
        assert!(why.contains("13 of 600 comparisons"), "{why}");
        // A side as bad as the other is no breach: the ramp did not make it worse.
        let bad_base = figures(5000, 300, 20_000);
        assert!(matches!(
            judge(&guards(), &figures(1000, 60, 20_000), &bad_base),
            Verdict::Holds(_)
        ));
    }

    #[test]
    fn a_window_is_the_difference_and_a_restart_counts_whole() {
        let before = figures(100, 1, 5_000);
        let mut after = before.clone();
        after.add(&figures(50, 2, 5_000));
        let window = after.since(&before);
        assert_eq!((window.requests, window.errors), (50, 2));
        let restarted = figures(10, 0, 5_000);
        assert_eq!(restarted.since(&before).requests, 10);
        let p = figures(1000, 0, 20_000).p99_us();
        assert!((20_000..23_000).contains(&p), "{p}");
    }
}
