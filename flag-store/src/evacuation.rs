//! Evacuating a side: one audited record that every router applies at pick time, so a million
//! tenants leave a side in one poll with no per-tenant write, and `flags restore` puts back
//! exactly what was there by removing that record.
//!
//! The record is an item of the flags table under a key no tenant id can take
//! (`!evacuate:SIDE`; tenant ids never hold `!`), so it is written like a flag (one conditional,
//! audited write that bumps the store's version) and learned like one (the same poll, the same
//! delta, the same local copy). Restoring writes the record again without its `evacuation`:
//! the key keeps its version, so two operators can never both win a write on it.
//!
//! What a router does with it is the pick's (`router::policy::pick`): a split tenant's share of
//! the side goes to the other sides of its split, pinned tenants move only when the record
//! says `include_pinned`, and sealed tenants never move (they are refused while their side is
//! evacuated).

use crate::error::ItemError;
pub use crate::model::EvacuationItem;
use crate::model::{Audit, FlagItem, Interner, TargetId, Targets, format_timestamp};

/// The flags table key prefix of evacuation records.
pub const KEY_PREFIX: &str = "!evacuate:";

/// The key of the record that evacuates `side`.
pub fn key(side: &str) -> String {
    format!("{KEY_PREFIX}{side}")
}

/// The side a key evacuates, when it is an evacuation record's key.
pub fn side_of(key: &str) -> Option<&str> {
    key.strip_prefix(KEY_PREFIX)
}

/// An evacuation in force, as a snapshot holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evacuation {
    pub side: TargetId,
    pub to: TargetId,
    pub include_pinned: bool,
    /// The record's version (what `flags restore` writes against).
    pub version: u64,
    pub audit: Audit,
}

/// What a record says once validated: an evacuation in force, or none (restored).
pub type Compiled = Option<Evacuation>;

/// Validates an evacuation record against the configured targets: its key names a target,
/// `to` names another, and it carries nothing a flag has.
pub fn compile(
    item: &FlagItem,
    targets: &Targets,
    interner: &mut Interner,
) -> Result<Compiled, ItemError> {
    let side_name = side_of(&item.tenant).ok_or_else(|| {
        ItemError::Shape(format!("key {:?} is not an evacuation record", item.tenant))
    })?;
    let side = resolve(targets, side_name)?;
    if item.has_flag_fields() || item.ramp.is_some() {
        return Err(ItemError::Shape(
            "is an evacuation record, which holds only `evacuation` and the audit fields".into(),
        ));
    }
    let updated_at = item.updated_secs()?;
    let Some(evacuation) = &item.evacuation else {
        return Ok(None);
    };
    let to = resolve(targets, &evacuation.to)?;
    if to == side {
        return Err(ItemError::Shape(format!(
            "evacuates {side_name:?} to itself; `to` names the side its tenants go to"
        )));
    }
    Ok(Some(Evacuation {
        side,
        to,
        include_pinned: evacuation.include_pinned,
        version: item.version,
        audit: Audit {
            updated_by: item.updated_by.as_deref().map(|s| interner.intern(s)),
            updated_at,
            reason: item.reason.as_deref().map(|s| interner.intern(s)),
        },
    }))
}

fn resolve(targets: &Targets, name: &str) -> Result<TargetId, ItemError> {
    targets.id(name).ok_or_else(|| ItemError::UnknownTarget {
        target: name.to_owned(),
        known: targets.known_list(),
    })
}

impl Evacuation {
    /// The stored form, for a local copy and for display.
    pub fn to_item(&self, targets: &Targets) -> FlagItem {
        FlagItem {
            tenant: key(targets.name(self.side)),
            version: self.version,
            updated_by: self.audit.updated_by.as_deref().map(str::to_owned),
            updated_at: self.audit.updated_at.map(format_timestamp),
            reason: self.audit.reason.as_deref().map(str::to_owned),
            evacuation: Some(EvacuationItem {
                to: targets.name(self.to).to_owned(),
                include_pinned: self.include_pinned,
            }),
            ..FlagItem::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets() -> Targets {
        Targets::new(["legacy", "new", "euw1"])
    }

    fn record(side: &str, to: &str) -> FlagItem {
        FlagItem {
            tenant: key(side),
            version: 3,
            updated_by: Some("ops".into()),
            reason: Some("euw1 is failing".into()),
            evacuation: Some(EvacuationItem {
                to: to.into(),
                include_pinned: true,
            }),
            ..FlagItem::default()
        }
    }

    #[test]
    fn a_record_compiles_and_round_trips() {
        let item = record("euw1", "new");
        let compiled = compile(&item, &targets(), &mut Interner::default())
            .unwrap()
            .unwrap();
        assert_eq!(compiled.side, targets().id("euw1").unwrap());
        assert_eq!(compiled.to, targets().id("new").unwrap());
        assert!(compiled.include_pinned);
        assert_eq!(compiled.to_item(&targets()), item);
        let restored = FlagItem {
            evacuation: None,
            ramp: None,
            ..item
        };
        assert!(matches!(
            compile(&restored, &targets(), &mut Interner::default()),
            Ok(None)
        ));
    }

    #[test]
    fn bad_records_are_refused_naming_what_is_wrong() {
        let words = |item: &FlagItem| {
            compile(item, &targets(), &mut Interner::default())
                .unwrap_err()
                .to_string()
        };
        assert!(words(&record("apse2", "new")).contains("unknown target \"apse2\""));
        assert!(words(&record("euw1", "nowhere")).contains("unknown target \"nowhere\""));
        assert!(words(&record("euw1", "euw1")).contains("to itself"));
        let with_target = FlagItem {
            target: Some("new".into()),
            ..record("euw1", "new")
        };
        assert!(words(&with_target).contains("holds only `evacuation`"));
    }
}
