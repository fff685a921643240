//! Which store a snapshot came from, and whether the next load may follow it.
//!
//! A store has an identity, made once when it is created (`flags create-table`, Terraform), and
//! a version that only grows. A recreated table has a new identity; a table restored from a
//! backup has its old identity at an older version. Either would silently replace (or, merged
//! with the running snapshot, corrupt) where tenants' data is, so a router refuses both: it
//! keeps its last good snapshot and its local copy until an operator adopts the store
//! (`flags adopt`), which stamps the store with the time of the adoption; a later stamp than
//! the one a router knows is the only way to a different identity or a lower version.

use serde::{Deserialize, Serialize};

/// The identity a store carries in its meta item and a local copy carries beside its items.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreIdentity {
    /// Made once when the store is created.
    pub id: String,
    /// When an operator last adopted the store, ms since the epoch (0: never).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub adopted_ms: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl std::fmt::Display for StoreIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.id)?;
        if self.adopted_ms > 0 {
            write!(f, " (adopted at {} ms)", self.adopted_ms)?;
        }
        Ok(())
    }
}

/// What a load is to the snapshot a router holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lineage {
    /// The same store, at the same or a later version.
    Follows,
    /// An operator adopted the store since the router's snapshot was read: a full load of it
    /// replaces the snapshot.
    Adopted,
    /// Another store, or this one gone back in time: refused, with why.
    Refused(String),
}

/// Judges a load of `seen` at `seen_version` against a snapshot of `known` at `known_version`.
/// A store or copy with no identity (made before identities existed) is judged by its version
/// alone.
pub fn judge(
    known: Option<&StoreIdentity>,
    known_version: u64,
    seen: Option<&StoreIdentity>,
    seen_version: u64,
) -> Lineage {
    if let (Some(known), Some(seen)) = (known, seen) {
        if seen.adopted_ms > known.adopted_ms {
            return Lineage::Adopted;
        }
        if seen.id != known.id {
            return Lineage::Refused(format!(
                "the flag store's identity changed from {known} to {seen}: a recreated or different table"
            ));
        }
        if seen.adopted_ms < known.adopted_ms {
            return Lineage::Refused(format!(
                "the flag store's adoption went back from {} ms to {} ms: a restored table",
                known.adopted_ms, seen.adopted_ms
            ));
        }
    }
    if seen_version < known_version {
        return Lineage::Refused(format!(
            "the flag store's version went back from {known_version} to {seen_version}: a restored or recreated table"
        ));
    }
    Lineage::Follows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(id: &str, adopted_ms: u64) -> StoreIdentity {
        StoreIdentity {
            id: id.into(),
            adopted_ms,
        }
    }

    #[test]
    fn only_an_adoption_leads_to_another_store_or_an_older_version() {
        let a = id("a", 0);
        assert_eq!(judge(Some(&a), 10, Some(&a), 10), Lineage::Follows);
        assert_eq!(judge(Some(&a), 10, Some(&a), 11), Lineage::Follows);
        let Lineage::Refused(why) = judge(Some(&a), 1000, Some(&a), 0) else {
            panic!("a version going back is refused")
        };
        assert!(why.contains("went back from 1000 to 0"), "{why}");
        let Lineage::Refused(why) = judge(Some(&a), 5, Some(&id("b", 0)), 5) else {
            panic!("another identity is refused")
        };
        assert!(why.contains("from a to b"), "{why}");
        // An adoption stamp later than the known one leads anywhere, an older one nowhere.
        assert_eq!(
            judge(Some(&a), 1000, Some(&id("b", 7)), 0),
            Lineage::Adopted
        );
        assert_eq!(
            judge(Some(&a), 1000, Some(&id("a", 7)), 3),
            Lineage::Adopted
        );
        assert!(matches!(
            judge(Some(&id("a", 9)), 5, Some(&id("a", 7)), 5),
            Lineage::Refused(_)
        ));
        // Without identities, the version alone.
        assert_eq!(judge(None, 5, Some(&a), 5), Lineage::Follows);
        assert!(matches!(judge(Some(&a), 5, None, 4), Lineage::Refused(_)));
        assert_eq!(judge(None, 0, None, 0), Lineage::Follows);
    }
}
