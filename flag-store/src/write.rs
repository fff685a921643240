//! One flag write, as every store and the admin API apply it: the rules that make a write safe
//! during a live migration live here once. A write states who and why, is conditional on the
//! version the writer read (when given), refuses to move a sealed tenant unless forced, and
//! bumps the tenant's version.

use std::collections::BTreeMap;

use crate::error::{ItemError, StoreError};
use crate::model::{
    FlagItem, HoldItem, Interner, Mode, ShadowItem, Targets, format_timestamp, validate_tenant_id,
};

/// Where the writer wants the tenant to go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placing {
    Pinned(String),
    Split(BTreeMap<String, u32>),
}

impl Placing {
    /// Parses `legacy=90,new=10`.
    pub fn parse_split(spec: &str) -> Result<Placing, String> {
        let mut weights = BTreeMap::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not TARGET=WEIGHT"))?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("weight {weight:?} of {name:?} is not a whole number"))?;
            if weights.insert(name.trim().to_owned(), weight).is_some() {
                return Err(format!("target {name:?} appears twice"));
            }
        }
        if weights.is_empty() {
            return Err("no TARGET=WEIGHT pairs".into());
        }
        Ok(Placing::Split(weights))
    }
}

/// A request to change one tenant's flag.
#[derive(Clone, Debug)]
pub struct FlagWrite {
    pub tenant: String,
    /// `None` keeps the current placement (for a seal-only write).
    pub placing: Option<Placing>,
    /// `Some(true)` seals, `Some(false)` unseals (needs `force`), `None` keeps the seal.
    pub seal: Option<bool>,
    /// `Some(Some(_))` sets the shadow, `Some(None)` removes it, `None` keeps it, except
    /// when the write pins the tenant onto the shadow's own target: the move the shadow was
    /// evidence for, after which there is nothing left to compare.
    pub shadow: Option<Option<ShadowItem>>,
    pub by: String,
    pub reason: String,
    /// Write only if the tenant's flag is at this version (0: the tenant has no flag yet).
    pub expect_version: Option<u64>,
    /// Allows moving or unsealing a sealed tenant.
    pub force: bool,
    /// What the write does to a hold on the tenant.
    pub hold: HoldWrite,
    /// `Some(Some(side))` sets a split tenant's job side, `Some(None)` returns it to the
    /// heaviest side, `None` keeps it while the tenant stays split over that side.
    pub jobs: Option<Option<String>>,
    /// Only for an evacuation record's key ([`crate::evacuation::key`]): `Some` evacuates the
    /// side, `None` restores it. Always `None` for a tenant.
    pub evacuation: Option<crate::evacuation::EvacuationItem>,
    /// Only for a ramp record's key ([`crate::ramp::key`]): the ramp as it is to be stored.
    pub ramp: Option<crate::record::RampItem>,
}

/// A write's effect on a hold. Only the move that holds a tenant may write it while the hold
/// lasts; a hold past its deadline is over and is dropped by the next write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum HoldWrite {
    /// An ordinary write: refused while the tenant is held.
    #[default]
    None,
    /// Holds the tenant (refused while another move holds it).
    Set(HoldItem),
    /// Ends this hold (the move's flip, or its abort).
    End(String),
}

/// What the stored item currently says, as far as a writer needs it. A malformed item still
/// yields its version and seal, so a write can neither skip a version nor lose a seal.
#[derive(Clone, Debug, Default)]
pub struct Current {
    pub item: Option<FlagItem>,
    pub version: u64,
    pub sealed: bool,
    pub updated_by: Option<String>,
}

impl Current {
    /// Whether `next` places the tenant elsewhere than the stored item does (a tenant with no
    /// readable item always moves).
    pub fn moves_to(&self, next: &FlagItem) -> bool {
        self.item
            .as_ref()
            .is_none_or(|cur| cur.target != next.target || cur.weights != next.weights)
    }

    pub fn from_item(item: FlagItem) -> Current {
        Current {
            version: item.version,
            sealed: item.sealed,
            updated_by: item.updated_by.clone(),
            item: Some(item),
        }
    }

    pub fn from_json(value: &serde_json::Value) -> Current {
        match serde_json::from_value::<FlagItem>(value.clone()) {
            Ok(item) => Current::from_item(item),
            Err(_) => Current {
                item: None,
                version: value.get("version").and_then(|v| v.as_u64()).unwrap_or(0),
                sealed: value
                    .get("sealed")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false),
                updated_by: value
                    .get("updated_by")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned),
            },
        }
    }
}

impl FlagWrite {
    /// A write of the record `key` (an evacuation's, a ramp's) that changes nothing yet: the
    /// caller sets its `evacuation` or `ramp`.
    pub fn record(key: &str, by: &str, reason: &str, expect_version: Option<u64>) -> FlagWrite {
        FlagWrite {
            tenant: key.to_owned(),
            placing: None,
            seal: None,
            shadow: None,
            by: by.to_owned(),
            reason: reason.to_owned(),
            expect_version,
            force: false,
            hold: HoldWrite::None,
            jobs: None,
            evacuation: None,
            ramp: None,
        }
    }

    /// The hold the next item carries, or why the write is refused: a tenant held by a move
    /// (its deadline not passed) is written only by that move.
    fn hold_after(&self, current: &Current) -> Result<Option<HoldItem>, StoreError> {
        let now = crate::model::now_ms();
        let active = (current.item.as_ref())
            .and_then(|i| i.hold.as_ref())
            .filter(|h| h.active_at(now));
        let held = |h: &HoldItem| StoreError::Held {
            tenant: self.tenant.clone(),
            hold: h.id.clone(),
            left_ms: h.deadline_ms.saturating_sub(now),
        };
        match (&self.hold, active) {
            (HoldWrite::None, None) => Ok(None),
            (HoldWrite::Set(next), None) => Ok(Some(next.clone())),
            (HoldWrite::Set(next), Some(h)) if next.id == h.id => Ok(Some(next.clone())),
            (HoldWrite::End(id), Some(h)) if *id == h.id => Ok(None),
            (HoldWrite::End(_), None) => Ok(None),
            (_, Some(h)) => Err(held(h)),
        }
    }

    /// Applies this write to the current item and returns the new item, validated against the
    /// targets when they are known. Nothing is written here; the store writes the result.
    pub fn apply(
        &self,
        current: &Current,
        targets: Option<&Targets>,
        now_secs: u64,
    ) -> Result<FlagItem, StoreError> {
        let item_err = |source: ItemError| StoreError::Item {
            tenant: self.tenant.clone(),
            source,
        };
        let evacuation = crate::evacuation::side_of(&self.tenant).is_some();
        let ramp = crate::ramp::id_of(&self.tenant).is_some();
        let record = evacuation || ramp;
        if !record {
            validate_tenant_id(&self.tenant).map_err(item_err)?;
        }
        if self.evacuation.is_some() && !evacuation {
            return Err(item_err(ItemError::Shape(
                "is not an evacuation record; only one holds `evacuation`".into(),
            )));
        }
        if self.ramp.is_some() != ramp {
            return Err(item_err(ItemError::Shape(
                "a ramp record holds its `ramp`, and only a ramp record does".into(),
            )));
        }
        if self.reason.trim().is_empty() {
            return Err(item_err(ItemError::Shape(
                "write has no reason; every write must say why (--reason)".into(),
            )));
        }
        if self.by.trim().is_empty() {
            return Err(item_err(ItemError::Shape(
                "write has no author; every write must say who (--by)".into(),
            )));
        }
        if let Some(expected) = self.expect_version
            && expected != current.version
        {
            return Err(StoreError::Conflict {
                tenant: self.tenant.clone(),
                expected,
                actual: current.version,
                by: current.updated_by.clone(),
            });
        }
        if record {
            if self.placing.is_some()
                || self.seal.is_some()
                || self.shadow.is_some()
                || self.jobs.is_some()
                || self.hold != HoldWrite::None
                || self.force
            {
                return Err(item_err(ItemError::Shape(
                    "is an evacuation record, not a tenant: `switchyard flags evacuate` and `flags restore` write it".into(),
                )));
            }
            return next_record(self, current, targets, now_secs);
        }
        let (mode, target, weights) = match (&self.placing, &current.item) {
            (Some(Placing::Pinned(t)), _) => (Mode::Pinned, Some(t.clone()), None),
            (Some(Placing::Split(w)), _) => (Mode::Split, None, Some(w.clone())),
            (None, Some(item)) => (
                item.effective_mode().map_err(item_err)?,
                item.target.clone(),
                item.weights.clone(),
            ),
            (None, None) => {
                return Err(StoreError::NotFound(self.tenant.clone()));
            }
        };
        let hold = self.hold_after(current)?;
        let shadow = match &self.shadow {
            Some(set) => set.clone(),
            None => (current.item.as_ref())
                .and_then(|i| i.shadow.clone())
                .filter(|s| target.as_ref() != Some(&s.target)),
        };
        let jobs = match &self.jobs {
            Some(set) => set.clone(),
            None => (current.item.as_ref())
                .and_then(|i| i.jobs.clone())
                .filter(|side| weights.as_ref().is_some_and(|w| w.contains_key(side))),
        };
        let mut next = FlagItem {
            tenant: self.tenant.clone(),
            mode: Some(mode),
            target,
            weights,
            shadow,
            jobs,
            sealed: self.seal.unwrap_or(current.sealed),
            forced: false,
            version: current.version + 1,
            updated_by: Some(self.by.clone()),
            updated_at: Some(format_timestamp(now_secs)),
            reason: Some(self.reason.clone()),
            hold,
            evacuation: None,
            ramp: None,
        };
        let breaks_seal = current.sealed && (current.moves_to(&next) || !next.sealed);
        // The force record every router checks for: who and why are the item's own.
        next.forced = breaks_seal && self.force;
        if breaks_seal && !self.force {
            let target = current
                .item
                .as_ref()
                .and_then(|i| i.target.clone())
                .unwrap_or_else(|| "its current target".into());
            return Err(StoreError::Sealed {
                tenant: self.tenant.clone(),
                target,
            });
        }
        match targets {
            Some(targets) => {
                next.compile(targets, &mut Interner::default())
                    .map_err(item_err)?;
            }
            None => {
                next.effective_mode().map_err(item_err)?;
                next.check_jobs().map_err(item_err)?;
                if let Some(shadow) = &next.shadow {
                    shadow.check_percent().map_err(item_err)?;
                }
            }
        }
        Ok(next)
    }
}

/// The record a write of `key` leaves, at the next version, with who and why: an evacuation's
/// (`evacuation` set to evacuate, unset to restore) or a ramp's. Restoring a side that is not
/// evacuated is refused, so a typo never reads as done.
fn next_record(
    write: &FlagWrite,
    current: &Current,
    targets: Option<&Targets>,
    now_secs: u64,
) -> Result<FlagItem, StoreError> {
    let item_err = |source: ItemError| StoreError::Item {
        tenant: write.tenant.clone(),
        source,
    };
    let evacuated = (current.item.as_ref()).is_some_and(|i| i.evacuation.is_some());
    let side = crate::evacuation::side_of(&write.tenant);
    if let Some(side) = side
        && write.evacuation.is_none()
        && !evacuated
    {
        return Err(item_err(ItemError::Shape(format!(
            "restores {side:?}, which is not evacuated; nothing to restore"
        ))));
    }
    let next = FlagItem {
        tenant: write.tenant.clone(),
        version: current.version + 1,
        updated_by: Some(write.by.clone()),
        updated_at: Some(format_timestamp(now_secs)),
        reason: Some(write.reason.clone()),
        evacuation: write.evacuation.clone(),
        ramp: write.ramp.clone(),
        ..FlagItem::default()
    };
    let checked = match (targets, &next.ramp, &next.evacuation) {
        (Some(targets), Some(_), _) => crate::ramp::compile(&next, targets).map(|_| ()),
        (Some(targets), None, _) => {
            crate::evacuation::compile(&next, targets, &mut Interner::default()).map(|_| ())
        }
        (None, Some(ramp), _) => crate::ramp::check(ramp),
        (None, None, Some(e)) if side == Some(e.to.as_str()) => Err(ItemError::Shape(format!(
            "evacuates {:?} to itself; `to` names the side its tenants go to",
            e.to
        ))),
        (None, None, _) => Ok(()),
    };
    checked.map_err(item_err)?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    fn write(placing: Option<Placing>) -> FlagWrite {
        FlagWrite {
            evacuation: None,
            ramp: None,
            hold: Default::default(),
            jobs: None,
            tenant: "acme".into(),
            placing,
            seal: None,
            shadow: None,
            by: "ops".into(),
            reason: "batch 1".into(),
            expect_version: None,
            force: false,
        }
    }

    fn targets() -> Targets {
        Targets::new(["legacy", "new"])
    }

    fn pinned(target: &str, version: u64, sealed: bool) -> Current {
        Current::from_item(FlagItem {
            tenant: "acme".into(),
            mode: Some(Mode::Pinned),
            target: Some(target.into()),
            version,
            sealed,
            updated_by: Some("alice".into()),
            ..Default::default()
        })
    }

    #[test]
    fn an_evacuation_record_is_written_only_as_one() {
        let record = |evacuation: Option<crate::evacuation::EvacuationItem>| FlagWrite {
            tenant: crate::evacuation::key("legacy"),
            evacuation,
            ..write(None)
        };
        let to_new = crate::evacuation::EvacuationItem {
            to: "new".into(),
            include_pinned: false,
        };
        let none = Current::default();
        let written = record(Some(to_new.clone()))
            .apply(&none, Some(&targets()), 0)
            .unwrap();
        assert_eq!(
            (written.version, written.evacuation.as_ref()),
            (1, Some(&to_new))
        );
        let text = |w: FlagWrite, current: &Current| {
            flag_store_error_text(&w.apply(current, Some(&targets()), 0).unwrap_err())
        };
        // Restoring what is not evacuated says so; nothing to write.
        assert!(text(record(None), &none).contains("not evacuated"));
        let restored = record(None)
            .apply(&Current::from_item(written.clone()), Some(&targets()), 0)
            .unwrap();
        assert_eq!((restored.version, restored.evacuation), (2, None));
        // A record is no tenant: a placement on its key, or an evacuation on a tenant, is refused.
        let placed = FlagWrite {
            placing: Some(Placing::Pinned("new".into())),
            ..record(Some(to_new.clone()))
        };
        assert!(text(placed, &none).contains("not a tenant"));
        let on_tenant = FlagWrite {
            evacuation: Some(to_new),
            ..write(None)
        };
        assert!(text(on_tenant, &none).contains("only one holds `evacuation`"));
        let unknown = record(Some(crate::evacuation::EvacuationItem {
            to: "mars".into(),
            include_pinned: true,
        }));
        assert!(text(unknown, &none).contains("unknown target \"mars\""));
    }

    #[test]
    fn a_shadow_is_set_kept_and_dropped_by_the_move_it_was_evidence_for() {
        let mut set = write(None);
        set.shadow = Some(Some(ShadowItem::parse("new:10").unwrap()));
        let shadowed = set
            .apply(&pinned("legacy", 1, false), Some(&targets()), 0)
            .unwrap();
        assert_eq!(shadowed.shadow, ShadowItem::parse("new:10").ok());
        assert_eq!(shadowed.target.as_deref(), Some("legacy"));
        let current = Current::from_item(shadowed);
        let reseal = FlagWrite {
            seal: Some(true),
            ..write(None)
        };
        let kept = reseal.apply(&current, Some(&targets()), 0).unwrap();
        assert_eq!(kept.shadow, ShadowItem::parse("new:10").ok());
        let moved = write(Some(Placing::Pinned("new".into())))
            .apply(&current, Some(&targets()), 0)
            .unwrap();
        assert_eq!(
            moved.shadow, None,
            "the move the shadow was evidence for ends it"
        );
        let mut clear = write(None);
        clear.shadow = Some(None);
        assert_eq!(
            clear.apply(&current, Some(&targets()), 0).unwrap().shadow,
            None
        );
        let mut onto_itself = write(None);
        onto_itself.shadow = Some(Some(ShadowItem::parse("legacy:5").unwrap()));
        let err = onto_itself
            .apply(&current, Some(&targets()), 0)
            .unwrap_err();
        assert!(
            flag_store_error_text(&err).contains("pinned to \"legacy\" already"),
            "{}",
            flag_store_error_text(&err)
        );
    }

    fn flag_store_error_text(e: &StoreError) -> String {
        crate::error::Chain(e).to_string()
    }

    #[test]
    fn a_write_bumps_the_version_and_records_who_when_why() {
        let next = write(Some(Placing::Pinned("new".into())))
            .apply(&pinned("legacy", 4, false), Some(&targets()), 0)
            .unwrap();
        assert_eq!(next.version, 5);
        assert_eq!(next.target.as_deref(), Some("new"));
        assert_eq!(next.updated_by.as_deref(), Some("ops"));
        assert_eq!(next.updated_at.as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(next.reason.as_deref(), Some("batch 1"));
    }

    #[test]
    fn a_stale_version_is_a_conflict_naming_the_current_writer() {
        let mut w = write(Some(Placing::Pinned("new".into())));
        w.expect_version = Some(3);
        let err = w
            .apply(&pinned("legacy", 4, false), Some(&targets()), 0)
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict { actual: 4, .. }));
        assert!(err.to_string().contains("alice"), "{err}");
    }

    #[test]
    fn a_sealed_tenant_moves_only_when_forced() {
        let sealed = pinned("new", 2, true);
        let err = write(Some(Placing::Pinned("legacy".into())))
            .apply(&sealed, Some(&targets()), 0)
            .unwrap_err();
        assert!(matches!(err, StoreError::Sealed { .. }), "{err}");
        // Rewriting the same target is fine, and needs no force record.
        let same = write(Some(Placing::Pinned("new".into())))
            .apply(&sealed, Some(&targets()), 0)
            .unwrap();
        assert!(!same.forced);
        let mut forced = write(Some(Placing::Pinned("legacy".into())));
        forced.force = true;
        let moved = forced.apply(&sealed, Some(&targets()), 0).unwrap();
        assert!(moved.sealed && moved.forced, "{moved:?}");
        // `--force` where nothing needs it leaves no force record.
        let mut idle_force = write(Some(Placing::Pinned("new".into())));
        idle_force.force = true;
        assert!(
            !idle_force
                .apply(&sealed, Some(&targets()), 0)
                .unwrap()
                .forced
        );
    }

    #[test]
    fn invalid_results_are_refused_before_anything_is_written() {
        let err = write(Some(Placing::Pinned("nwe".into())))
            .apply(&Current::default(), Some(&targets()), 0)
            .unwrap_err();
        let msg = crate::error::Chain(&err).to_string();
        assert!(msg.contains("unknown target \"nwe\""), "{msg}");
        let mut no_reason = write(Some(Placing::Pinned("new".into())));
        no_reason.reason = " ".into();
        assert!(
            no_reason
                .apply(&Current::default(), None, 0)
                .unwrap_err()
                .source()
                .unwrap()
                .to_string()
                .contains("reason")
        );
    }

    #[test]
    fn split_specs_parse_and_refuse_garbage() {
        assert_eq!(
            Placing::parse_split("legacy=90, new=10").unwrap(),
            Placing::Split([("legacy".into(), 90), ("new".into(), 10)].into())
        );
        assert!(Placing::parse_split("legacy").is_err());
        assert!(Placing::parse_split("legacy=x").is_err());
        assert!(Placing::parse_split("a=1,a=2").is_err());
    }

    fn held(deadline_ms: u64) -> Current {
        let mut current = pinned("legacy", 3, false);
        if let Some(item) = current.item.as_mut() {
            item.hold = Some(HoldItem {
                id: "h1".into(),
                tenants: 2,
                deadline_ms,
            });
        }
        current
    }

    #[test]
    fn a_held_tenant_is_written_only_by_its_move_until_the_deadline() {
        let later = crate::model::now_ms() + 60_000;
        let current = held(later);
        // An ordinary write is refused, naming the hold.
        let err = write(Some(Placing::Pinned("new".into())))
            .apply(&current, Some(&targets()), 0)
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::Held { hold, left_ms, .. } if hold == "h1" && *left_ms > 50_000),
            "{err}"
        );
        assert!(err.to_string().contains("held by the move h1"), "{err}");
        // Another move cannot take it.
        let other = HoldItem {
            id: "h2".into(),
            tenants: 1,
            deadline_ms: later,
        };
        let take = FlagWrite {
            hold: HoldWrite::Set(other),
            ..write(None)
        };
        assert!(matches!(
            take.apply(&current, Some(&targets()), 0),
            Err(StoreError::Held { .. })
        ));
        // Its own move flips it and ends the hold in one write.
        let flip = FlagWrite {
            hold: HoldWrite::End("h1".into()),
            ..write(Some(Placing::Pinned("new".into())))
        };
        let next = flip.apply(&current, Some(&targets()), 0).unwrap();
        assert_eq!((next.target.as_deref(), next.hold), (Some("new"), None));
        // Past its deadline the hold is over: an ordinary write goes through and drops it.
        let expired = held(crate::model::now_ms() - 1);
        let next = write(Some(Placing::Pinned("new".into())))
            .apply(&expired, Some(&targets()), 0)
            .unwrap();
        assert_eq!(next.hold, None);
        // A hold of no tenant, or with an id a log cannot carry, is refused as an item.
        let bad = FlagWrite {
            hold: HoldWrite::Set(HoldItem {
                id: "no spaces".into(),
                tenants: 1,
                deadline_ms: later,
            }),
            ..write(None)
        };
        let err = bad
            .apply(&pinned("legacy", 3, false), Some(&targets()), 0)
            .unwrap_err();
        assert!(
            err.source().unwrap().to_string().contains("hold id"),
            "{err}"
        );
    }
}
