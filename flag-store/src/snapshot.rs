//! The snapshot: every tenant's validated flag at one store version, immutable once built.
//! Routers hold the current one behind one `ArcSwap` and replace it whole on reload, so a
//! reader never sees half a change. Building a snapshot is where bad items are set aside:
//! each is rejected on its own, and a tenant whose new item is bad keeps its last good flag
//! (sending it to the default could split its writes between two copies of its data).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::error::ItemError;
use crate::model::{DEFAULT_TENANT, Flag, FlagItem, Interner, Targets};

type FlagMap = HashMap<Box<str>, Flag, foldhash::fast::RandomState>;

/// One item the store holds that could not be applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// The tenant, when the item got far enough to name one.
    pub tenant: Option<String>,
    /// Where the item is in its store (`items[3]`, a table key).
    pub location: String,
    pub error: ItemError,
    /// True when the tenant keeps its flag from the previous snapshot.
    pub kept_previous: bool,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.location)?;
        if let Some(t) = &self.tenant {
            write!(f, " (tenant {t:?})")?;
        }
        write!(f, ": {}", self.error)?;
        if self.kept_previous {
            write!(f, "; the tenant keeps its last good flag")?;
        }
        Ok(())
    }
}

/// What a source read: the store's version and its items, each parsed or refused.
#[derive(Debug, Default)]
pub struct Load {
    /// The store's write counter: every write bumps it.
    pub version: u64,
    pub items: Vec<LoadedItem>,
}

#[derive(Debug)]
pub struct LoadedItem {
    pub location: String,
    pub item: Result<FlagItem, (Option<String>, ItemError)>,
}

/// Where a lookup found the tenant's flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found<'a> {
    /// The tenant's own item.
    Tenant(&'a Flag),
    /// The default item (`*`).
    Default(&'a Flag),
    /// Neither: the router's configured default target applies.
    Nothing,
}

#[derive(Debug)]
pub struct Snapshot {
    flags: FlagMap,
    default: Option<Flag>,
    targets: Targets,
    /// The store's version this snapshot was built from.
    pub version: u64,
    /// Counts snapshots built by this process (1 is the first load).
    pub generation: u64,
    pub built_at: SystemTime,
    pub rejected: Vec<Rejected>,
}

impl Snapshot {
    /// An empty snapshot: no tenant has a flag; everything goes to the configured default.
    pub fn empty(targets: Targets) -> Self {
        Snapshot {
            flags: FlagMap::default(),
            default: None,
            targets,
            version: 0,
            generation: 0,
            built_at: SystemTime::now(),
            rejected: Vec::new(),
        }
    }

    /// Builds the next snapshot from a load. `previous` supplies the last good flag of tenants
    /// whose item is now rejected.
    pub fn build(load: Load, targets: &Targets, previous: Option<&Snapshot>) -> Snapshot {
        let mut interner = Interner::default();
        let mut flags = FlagMap::with_capacity_and_hasher(load.items.len(), Default::default());
        let mut default = None;
        let mut rejected = Vec::new();
        let mut duplicates: Vec<String> = Vec::new();

        for LoadedItem { location, item } in load.items {
            match compile(item, targets, &mut interner) {
                Ok((tenant, flag)) => {
                    let clash = if tenant == DEFAULT_TENANT {
                        default.replace(flag).is_some()
                    } else {
                        flags
                            .insert(tenant.clone().into_boxed_str(), flag)
                            .is_some()
                    };
                    if clash {
                        duplicates.push(tenant);
                    }
                }
                Err((tenant, error)) => rejected.push(Rejected {
                    tenant,
                    location,
                    error,
                    kept_previous: false,
                }),
            }
        }
        for tenant in duplicates {
            if tenant == DEFAULT_TENANT {
                default = None;
            } else {
                flags.remove(tenant.as_str());
            }
            rejected.push(Rejected {
                tenant: Some(tenant.clone()),
                location: "items".into(),
                error: ItemError::Duplicate(tenant),
                kept_previous: false,
            });
        }
        // A tenant whose item is bad keeps its previous flag, unless it now has a good one.
        for r in &mut rejected {
            let (Some(tenant), Some(prev)) = (&r.tenant, previous) else {
                continue;
            };
            let kept = if tenant == DEFAULT_TENANT {
                if default.is_none() {
                    default = prev.default.clone();
                }
                default.is_some()
            } else if flags.contains_key(tenant.as_str()) {
                false
            } else if let Some(flag) = prev.flags.get(tenant.as_str()) {
                flags.insert(tenant.clone().into_boxed_str(), flag.clone());
                true
            } else {
                false
            };
            r.kept_previous = kept;
        }
        flags.shrink_to_fit();
        Snapshot {
            flags,
            default,
            targets: targets.clone(),
            version: load.version,
            generation: previous.map_or(1, |p| p.generation + 1),
            built_at: SystemTime::now(),
            rejected,
        }
    }

    /// The next snapshot after a delta: `load` holds only the changed items, at the store's
    /// new version. Same rules as a full build: a bad item is rejected and its tenant keeps its
    /// flag. Costs a copy of the table (no I/O); the reads behind it are proportional to the
    /// change, not to the table.
    pub fn apply_delta(&self, load: Load) -> Snapshot {
        let mut interner = Interner::default();
        let mut flags = self.flags.clone();
        let mut default = self.default.clone();
        let changed: std::collections::HashSet<String> = load
            .items
            .iter()
            .filter_map(|l| match &l.item {
                Ok(item) => Some(item.tenant.clone()),
                Err((tenant, _)) => tenant.clone(),
            })
            .collect();
        // Earlier rejections of tenants this delta rewrites are superseded.
        let mut rejected: Vec<Rejected> = self
            .rejected
            .iter()
            .filter(|r| r.tenant.as_ref().is_none_or(|t| !changed.contains(t)))
            .cloned()
            .collect();
        for LoadedItem { location, item } in load.items {
            match compile(item, &self.targets, &mut interner) {
                Ok((tenant, flag)) if tenant == DEFAULT_TENANT => default = Some(flag),
                Ok((tenant, flag)) => {
                    flags.insert(tenant.into_boxed_str(), flag);
                }
                Err((tenant, error)) => {
                    let kept_previous = match tenant.as_deref() {
                        Some(DEFAULT_TENANT) => default.is_some(),
                        Some(t) => flags.contains_key(t),
                        None => false,
                    };
                    rejected.push(Rejected {
                        tenant,
                        location,
                        error,
                        kept_previous,
                    });
                }
            }
        }
        Snapshot {
            flags,
            default,
            targets: self.targets.clone(),
            version: load.version,
            generation: self.generation + 1,
            built_at: SystemTime::now(),
            rejected,
        }
    }

    /// Every flag as stored items (the default flag first), for a local copy.
    pub fn to_items(&self) -> Vec<FlagItem> {
        let default = self
            .default
            .iter()
            .map(|f| f.to_item(DEFAULT_TENANT, &self.targets));
        default
            .chain(self.flags.iter().map(|(t, f)| f.to_item(t, &self.targets)))
            .collect()
    }

    /// The tenant's flag, or the default item, or nothing.
    #[inline]
    pub fn lookup(&self, tenant: Option<&str>) -> Found<'_> {
        if let Some(flag) = tenant.and_then(|t| self.flags.get(t)) {
            return Found::Tenant(flag);
        }
        match &self.default {
            Some(flag) => Found::Default(flag),
            None => Found::Nothing,
        }
    }

    /// The tenant's own flag (not the default).
    pub fn get(&self, tenant: &str) -> Option<&Flag> {
        if tenant == DEFAULT_TENANT {
            return self.default.as_ref();
        }
        self.flags.get(tenant)
    }

    pub fn default_flag(&self) -> Option<&Flag> {
        self.default.as_ref()
    }

    pub fn targets(&self) -> &Targets {
        &self.targets
    }

    /// Number of tenants with an item of their own.
    pub fn len(&self) -> usize {
        self.flags.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flags.is_empty()
    }

    /// Every tenant's flag, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Flag)> {
        self.flags.iter().map(|(k, v)| (&**k, v))
    }
}

/// Validates one loaded item. A rejection keeps the tenant's name whenever the item got far
/// enough to have one, so that tenant can keep its last good flag.
fn compile(
    item: Result<FlagItem, (Option<String>, ItemError)>,
    targets: &Targets,
    interner: &mut Interner,
) -> Result<(String, Flag), (Option<String>, ItemError)> {
    let item = item?;
    match item.compile(targets, interner) {
        Ok(flag) => Ok((item.tenant, flag)),
        Err(e) => Err((Some(item.tenant), e)),
    }
}

/// A shareable snapshot.
pub type SharedSnapshot = Arc<Snapshot>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Placement, TargetId};

    fn targets() -> Targets {
        Targets::new(["legacy", "new"])
    }

    fn load(version: u64, items: &[&str]) -> Load {
        Load {
            version,
            items: items
                .iter()
                .enumerate()
                .map(|(i, json)| LoadedItem {
                    location: format!("items[{i}]"),
                    item: serde_json::from_str::<FlagItem>(json)
                        .map_err(|e| (None, ItemError::Parse(e.to_string()))),
                })
                .collect(),
        }
    }

    fn target_of(snap: &Snapshot, tenant: &str) -> Option<TargetId> {
        match snap.lookup(Some(tenant)) {
            Found::Tenant(f) | Found::Default(f) => match f.placement {
                Placement::Pinned(t) => Some(t),
                Placement::Split(_) => None,
            },
            Found::Nothing => None,
        }
    }

    #[test]
    fn a_bad_item_is_rejected_alone() {
        let snap = Snapshot::build(
            load(
                3,
                &[
                    r#"{"tenant":"acme","target":"new"}"#,
                    r#"{"tenant":"globex","target":"nowhere"}"#,
                    r#"{"tenant":"initech","target":"legacy"}"#,
                ],
            ),
            &targets(),
            None,
        );
        assert_eq!(snap.len(), 2);
        assert_eq!(snap.rejected.len(), 1);
        assert_eq!(snap.rejected[0].location, "items[1]");
        assert!(snap.rejected[0].to_string().contains("nowhere"));
        assert_eq!(target_of(&snap, "acme"), Some(TargetId(1)));
        assert_eq!(target_of(&snap, "initech"), Some(TargetId(0)));
        assert_eq!(snap.version, 3);
        assert_eq!(snap.generation, 1);
    }

    #[test]
    fn a_tenant_whose_item_turns_bad_keeps_its_last_good_flag() {
        let first = Snapshot::build(
            load(1, &[r#"{"tenant":"acme","target":"new"}"#]),
            &targets(),
            None,
        );
        // A typo in the target: acme must not fall back to the default (legacy).
        let bad = load(2, &[r#"{"tenant":"acme","target":"nwe"}"#]);
        let second = Snapshot::build(bad, &targets(), Some(&first));
        assert_eq!(target_of(&second, "acme"), Some(TargetId(1)));
        assert!(second.rejected[0].kept_previous);
        assert_eq!(second.rejected[0].tenant.as_deref(), Some("acme"));
        // A parse error that still names the tenant keeps it too.
        let mut unparsable = load(3, &[]);
        unparsable.items.push(LoadedItem {
            location: "items[0]".into(),
            item: Err((
                Some("acme".into()),
                ItemError::Parse("unknown field `taget`".into()),
            )),
        });
        let third = Snapshot::build(unparsable, &targets(), Some(&second));
        assert_eq!(target_of(&third, "acme"), Some(TargetId(1)));
        assert_eq!(second.generation, 2);
    }

    #[test]
    fn a_delta_changes_only_its_tenants_and_keeps_the_rest() {
        let first = Snapshot::build(
            load(
                1,
                &[
                    r#"{"tenant":"acme","target":"new"}"#,
                    r#"{"tenant":"globex","target":"legacy"}"#,
                ],
            ),
            &targets(),
            None,
        );
        let next = first.apply_delta(load(
            2,
            &[
                r#"{"tenant":"globex","target":"new"}"#,
                r#"{"tenant":"initech","target":"nowhere"}"#,
            ],
        ));
        assert_eq!((next.version, next.generation, next.len()), (2, 2, 2));
        assert_eq!(target_of(&next, "acme"), Some(TargetId(1)));
        assert_eq!(target_of(&next, "globex"), Some(TargetId(1)));
        assert_eq!(next.rejected.len(), 1);
        // A later good item for the rejected tenant clears its rejection.
        let fixed = next.apply_delta(load(3, &[r#"{"tenant":"initech","target":"legacy"}"#]));
        assert!(fixed.rejected.is_empty());
        assert_eq!(target_of(&fixed, "initech"), Some(TargetId(0)));
    }

    #[test]
    fn duplicates_are_all_rejected() {
        let snap = Snapshot::build(
            load(
                1,
                &[
                    r#"{"tenant":"acme","target":"new"}"#,
                    r#"{"tenant":"acme","target":"legacy"}"#,
                ],
            ),
            &targets(),
            None,
        );
        assert!(snap.get("acme").is_none());
        assert!(matches!(snap.rejected[0].error, ItemError::Duplicate(_)));
    }

    #[test]
    fn default_item_catches_tenants_without_their_own() {
        let snap = Snapshot::build(
            load(1, &[r#"{"tenant":"*","target":"new"}"#]),
            &targets(),
            None,
        );
        assert!(matches!(snap.lookup(Some("zzz")), Found::Default(_)));
        assert!(matches!(snap.lookup(None), Found::Default(_)));
        let empty = Snapshot::empty(targets());
        assert_eq!(empty.lookup(Some("zzz")), Found::Nothing);
    }
}
