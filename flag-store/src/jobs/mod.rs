//! Who runs a tenant's scheduled jobs, read from the store the routers follow, and the leases
//! that keep one job of one tenant to one side at a time.
//!
//! - [`owner`]: the side that owns a tenant's jobs now: a pinned tenant's target; a split
//!   tenant's `jobs` side, else its heaviest side; nobody while a hold is on the tenant. A
//!   tenant with no flag of its own follows the `*` flag, as its requests do.
//! - [`lease::Leases`]: a conditional write per job and tenant, with its holder, side, expiry
//!   and a fencing token that only grows.
//! - [`run::Run`]: the two together, for a job that runs while it is owned here and holds the
//!   lease, and is told to stop the moment either ends.
//!
//! A store that cannot be reached, or an item that cannot be read, is an error: the caller
//! cannot tell who owns the tenant, and a job that runs twice is worse than one that runs late.

pub mod lease;
pub mod run;

use serde::Serialize;

use crate::error::StoreError;
use crate::model::{DEFAULT_TENANT, HoldItem, now_ms, validate_tenant_id};
use crate::store::Store;

/// Who owns a tenant's jobs, as the store says now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Owner {
    pub tenant: String,
    /// The side that owns the tenant's jobs; `None` when the tenant has no flag and there is
    /// no `*` flag (nobody runs its jobs).
    pub owner: Option<String>,
    /// The version of the flag that decided (the tenant's own, or the `*` flag's).
    pub version: u64,
    /// The tenant has no flag of its own: the `*` flag decided.
    pub by_default: bool,
    /// A hold on the tenant (a cutover in progress): nobody runs its jobs until it ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldItem>,
}

/// What an [`Owner`] means for one side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The side owns the tenant's jobs: run them here.
    RunsHere,
    /// Another side owns them (or nobody does).
    NotHere,
    /// A hold is on the tenant: retry after it ends.
    Held,
}

impl Owner {
    pub fn verdict(&self, side: &str) -> Verdict {
        if self.hold.is_some() {
            Verdict::Held
        } else if self.owner.as_deref() == Some(side) {
            Verdict::RunsHere
        } else {
            Verdict::NotHere
        }
    }

    /// Decides from the tenant's item, or the `*` item when it has none, at `now_ms` (a hold
    /// past its deadline is over).
    pub fn decide(
        tenant: &str,
        own: Option<&crate::FlagItem>,
        default: Option<&crate::FlagItem>,
        now_ms: u64,
    ) -> Result<Owner, StoreError> {
        let (item, by_default) = match (own, default) {
            (Some(item), _) => (Some(item), false),
            (None, default) => (default, true),
        };
        let Some(item) = item else {
            return Ok(Owner {
                tenant: tenant.to_owned(),
                owner: None,
                version: 0,
                by_default,
                hold: None,
            });
        };
        let owner = item.job_owner().map_err(|source| StoreError::Item {
            tenant: item.tenant.clone(),
            source,
        })?;
        Ok(Owner {
            tenant: tenant.to_owned(),
            owner: Some(owner.to_owned()),
            version: item.version,
            by_default,
            // The default item never holds: holds are written on the tenants a move names.
            hold: (item.hold.clone()).filter(|h| !by_default && h.active_at(now_ms)),
        })
    }
}

/// Who owns `tenant`'s jobs now, read from the store (consistently, for DynamoDB).
pub async fn owner(store: &Store, tenant: &str) -> Result<Owner, StoreError> {
    validate_tenant_id(tenant).map_err(|source| StoreError::Item {
        tenant: tenant.to_owned(),
        source,
    })?;
    let own = store.get(tenant).await?;
    let default = match (&own, tenant == DEFAULT_TENANT) {
        (None, false) => store.get(DEFAULT_TENANT).await?,
        _ => None,
    };
    Owner::decide(tenant, own.as_ref(), default.as_ref(), now_ms())
}

/// Every tenant with a flag of its own whose jobs `side` runs now (held tenants left out),
/// sorted; and the `*` flag's answer for the tenants without one.
#[derive(Debug, Serialize)]
pub struct Owned {
    pub side: String,
    /// The store's version when it was read.
    pub version: u64,
    pub tenants: Vec<String>,
    /// Tenants this side would own but for a hold on them.
    pub held: Vec<String>,
    /// Whether this side owns the jobs of tenants with no flag of their own.
    pub default_here: bool,
    /// Items that could not be read, named: their tenants' owners cannot be told.
    pub unreadable: Vec<String>,
}

/// The tenants `side` owns: one read of the whole store.
pub async fn owned(store: &Store, side: &str) -> Result<Owned, StoreError> {
    let now = now_ms();
    let mut owned = Owned {
        side: side.to_owned(),
        version: 0,
        tenants: Vec::new(),
        held: Vec::new(),
        default_here: false,
        unreadable: Vec::new(),
    };
    owned.version = store
        .scan(|loaded| {
            owned.add(loaded, now);
            std::ops::ControlFlow::Continue(())
        })
        .await?;
    owned.tenants.sort_unstable();
    owned.held.sort_unstable();
    Ok(owned)
}

impl Owned {
    /// Counts one item in: owned here, held, or unreadable.
    fn add(&mut self, loaded: crate::LoadedItem, now: u64) {
        let item = match loaded.item {
            Ok(item) => item,
            Err((tenant, e)) => {
                let who = tenant.unwrap_or_else(|| "no tenant".into());
                (self.unreadable).push(format!("{} ({who}): {e}", loaded.location));
                return;
            }
        };
        // A record (an evacuation, a ramp) is not a tenant; jobs follow the flags it leads to.
        if crate::evacuation::side_of(&item.tenant).is_some()
            || crate::ramp::id_of(&item.tenant).is_some()
        {
            return;
        }
        let decided = match Owner::decide(&item.tenant, Some(&item), None, now) {
            Ok(decided) => decided,
            Err(e) => {
                let e = crate::error::Chain(&e).to_string();
                self.unreadable.push(format!("{}: {e}", loaded.location));
                return;
            }
        };
        if decided.owner.as_deref() != Some(self.side.as_str()) {
            return;
        }
        if item.tenant == DEFAULT_TENANT {
            self.default_here = true;
        } else if decided.hold.is_some() {
            self.held.push(item.tenant);
        } else {
            self.tenants.push(item.tenant);
        }
    }
}

/// Checks a job's name: 1 to 64 of letters, digits, `-` and `_` (it names lease items and
/// files).
pub fn validate_job_name(job: &str) -> Result<(), String> {
    if job.is_empty()
        || job.len() > 64
        || !job
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "job name {job:?}: use 1 to 64 of letters, digits, '-' and '_'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FlagItem;

    fn item(json: &str) -> FlagItem {
        serde_json::from_str(json).unwrap()
    }

    fn owner_of(json: &str) -> Option<String> {
        Owner::decide("acme", Some(&item(json)), None, 0)
            .unwrap()
            .owner
    }

    #[test]
    fn a_pinned_tenant_runs_on_its_target_and_a_split_one_on_its_jobs_side_or_heaviest() {
        assert_eq!(
            owner_of(r#"{"tenant":"acme","target":"new"}"#).as_deref(),
            Some("new")
        );
        assert_eq!(
            owner_of(r#"{"tenant":"acme","weights":{"legacy":30,"new":70}}"#).as_deref(),
            Some("new")
        );
        // A tie goes to the first target in name order, whatever the configs' order.
        assert_eq!(
            owner_of(r#"{"tenant":"acme","weights":{"new":50,"legacy":50}}"#).as_deref(),
            Some("legacy")
        );
        assert_eq!(
            owner_of(r#"{"tenant":"acme","weights":{"legacy":90,"new":10},"jobs":"new"}"#)
                .as_deref(),
            Some("new")
        );
    }

    #[test]
    fn a_jobs_side_off_the_split_or_on_a_pinned_tenant_is_refused_by_name() {
        for (json, want) in [
            (
                r#"{"tenant":"acme","weights":{"legacy":90,"new":10},"jobs":"use2"}"#,
                "side \"use2\" is not one of the split's targets (legacy, new)",
            ),
            (
                r#"{"tenant":"acme","target":"new","jobs":"new"}"#,
                "a pinned tenant's jobs run on its target",
            ),
            (
                r#"{"tenant":"acme","weights":{"legacy":90,"new":20}}"#,
                "weights sum to 110",
            ),
            (
                r#"{"tenant":"acme","mode":"pinned","target":"new","weights":{"new":100}}"#,
                "is pinned, so it has a `target` and no `weights`",
            ),
        ] {
            let err = Owner::decide("acme", Some(&item(json)), None, 0).unwrap_err();
            let text = crate::error::Chain(&err).to_string();
            assert!(text.contains(want), "{json}: {text}");
        }
    }

    #[test]
    fn a_held_tenant_belongs_to_nobody_until_its_deadline() {
        let held = item(
            r#"{"tenant":"acme","target":"new","hold":{"id":"h1","tenants":1,"deadline_ms":1000}}"#,
        );
        let during = Owner::decide("acme", Some(&held), None, 999).unwrap();
        assert_eq!(during.verdict("new"), Verdict::Held);
        assert_eq!(during.verdict("legacy"), Verdict::Held);
        let after = Owner::decide("acme", Some(&held), None, 1000).unwrap();
        assert_eq!(after.verdict("new"), Verdict::RunsHere);
        assert_eq!(after.verdict("legacy"), Verdict::NotHere);
    }

    #[test]
    fn a_tenant_without_a_flag_follows_the_default_and_without_one_nobody_owns_it() {
        let default = item(r#"{"tenant":"*","target":"legacy","version":4}"#);
        let o = Owner::decide("globex", None, Some(&default), 0).unwrap();
        assert_eq!(
            (o.owner.as_deref(), o.version, o.by_default),
            (Some("legacy"), 4, true)
        );
        let nobody = Owner::decide("globex", None, None, 0).unwrap();
        assert_eq!(nobody.owner, None);
        assert_eq!(nobody.verdict("legacy"), Verdict::NotHere);
    }
}
