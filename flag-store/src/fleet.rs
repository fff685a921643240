//! The fleet: every router's presence record, kept fresh by the router itself, so operators
//! and the commands that move tenants can ask which routers are serving and what they route
//! by.
//!
//! A record says who the router is (an id, its build, when it started), the flag version it
//! routes by and since when, when its snapshot was last confirmed against the store, when it
//! was last seen, and what it acknowledges (the holds it has drained). Records churn (one write
//! every few seconds a router) and never bump the flag version, so they live apart from the
//! flags:
//! - file store: one JSON file per router in a folder beside the flags file
//!   (`flags.json` -> `flags.fleet/ROUTER.json`), each replaced atomically;
//! - DynamoDB: the table `TABLE-fleet`, partition key `pk` (S, `router#ID`), the record as
//!   JSON in `record`, and `expires_at` (N, epoch seconds), the table's TTL attribute, so a
//!   router that vanished without deregistering is swept away by DynamoDB a day later.
//!
//! The fleet table also holds job leases ([`crate::jobs::lease`], keyed `lease#...`, which the
//! listing leaves out).
//!
//! A clean shutdown deletes the record; a router killed leaves it to grow stale, which
//! `switchyard fleet` shows.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};

use crate::dynamodb::DynamoStore;
use crate::error::StoreError;
use crate::store::Store;

/// How long DynamoDB keeps a record nobody refreshes (its TTL): long after any fleet timeout,
/// so a dead router is listed as stale for a day before it disappears.
pub const RECORD_TTL: Duration = Duration::from_secs(24 * 3600);

/// One router's presence record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// The router's id: configured, or its host name and a random suffix.
    pub router: String,
    /// The build it runs (the package version).
    pub build: String,
    /// When it started, milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// The flag version it routes by.
    pub flag_version: u64,
    /// Since when it has routed by `flag_version`.
    pub version_since_ms: u64,
    /// When its snapshot was last confirmed current against the store.
    pub snapshot_ms: u64,
    /// When it wrote this record.
    pub seen_ms: u64,
    /// The holds it acknowledges as drained: their tenants' requests queue here, none of
    /// theirs is in flight to the old side.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drained: Vec<String>,
    /// The ramps whose tenants it served, by ramp id: each side's figures since the router
    /// started ([`crate::ramp`]), which a ramp's driver sums over the fleet.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub ramps: std::collections::BTreeMap<String, crate::ramp::RampFigures>,
    /// The shadow comparisons it made, by tenant: `[compared, matched]` since it started, for
    /// the tenants it compared most recently (at most [`MAX_SHADOW_TENANTS`]). The console,
    /// `shadow report` and the batch plan sum them over the fleet: behind a balancer, each
    /// router sees only its share of a tenant's requests.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub shadow: std::collections::BTreeMap<String, [u64; 2]>,
}

/// The most tenants whose shadow counts one presence record carries: about 30 bytes each, so
/// a record stays a few write units at most (DynamoDB bills a write by the kilobyte).
pub const MAX_SHADOW_TENANTS: usize = 500;

impl Presence {
    /// Milliseconds since this record was written, as of `now_ms`.
    pub fn age_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.seen_ms)
    }
}

pub use crate::model::now_ms;

/// What a listing found: the readable records, and the ones that could not be read (named).
#[derive(Debug, Default)]
pub struct Listing {
    pub routers: Vec<Presence>,
    pub unreadable: Vec<String>,
}

/// Where a store keeps its fleet.
#[derive(Clone, Debug)]
pub enum Fleet {
    /// A folder of one file per router.
    File(PathBuf),
    Dynamo(DynamoStore),
}

impl Fleet {
    /// The fleet of a flag store already open: its folder, or its DynamoDB client (no
    /// second connection).
    pub fn of(store: &Store) -> Fleet {
        match store {
            Store::File(f) => Fleet::File(Self::folder(f.path())),
            Store::Dynamo(d) => Fleet::Dynamo(d.clone()),
        }
    }

    /// The folder beside a flags file: `flags.json` -> `flags.fleet`.
    pub fn folder(flags: &Path) -> PathBuf {
        flags.with_extension("fleet")
    }

    /// Writes (or refreshes) a router's record.
    pub async fn put(&self, presence: &Presence) -> Result<(), StoreError> {
        let json = serde_json::to_string(presence).expect("a presence record serializes");
        match self {
            Fleet::File(dir) => {
                let path = dir.join(format!("{}.json", presence.router));
                let dir = dir.clone();
                blocking(move || {
                    std::fs::create_dir_all(&dir).map_err(|source| StoreError::Write {
                        path: dir.clone(),
                        source,
                    })?;
                    replace(&path, json.as_bytes())
                })
                .await
            }
            Fleet::Dynamo(store) => {
                let expires = (presence.seen_ms / 1000) + RECORD_TTL.as_secs();
                store
                    .client()
                    .put_item()
                    .table_name(store.url().fleet_table())
                    .item("pk", AttributeValue::S(key(&presence.router)))
                    .item("record", AttributeValue::S(json))
                    .item("expires_at", AttributeValue::N(expires.to_string()))
                    .send()
                    .await
                    .map_err(|e| remote("write presence record", e))?;
                Ok(())
            }
        }
    }

    /// Deletes a router's record (a clean shutdown).
    pub async fn remove(&self, router: &str) -> Result<(), StoreError> {
        match self {
            Fleet::File(dir) => {
                let path = dir.join(format!("{router}.json"));
                blocking(move || match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        Err(StoreError::Write { path, source: e })
                    }
                    _ => Ok(()),
                })
                .await
            }
            Fleet::Dynamo(store) => {
                store
                    .client()
                    .delete_item()
                    .table_name(store.url().fleet_table())
                    .key("pk", AttributeValue::S(key(router)))
                    .send()
                    .await
                    .map_err(|e| remote("delete presence record", e))?;
                Ok(())
            }
        }
    }

    /// Every router's record, sorted by id.
    pub async fn list(&self) -> Result<Listing, StoreError> {
        let mut listing = match self {
            Fleet::File(dir) => {
                let dir = dir.clone();
                blocking(move || list_folder(&dir)).await?
            }
            Fleet::Dynamo(store) => list_table(store).await?,
        };
        listing.routers.sort_by(|a, b| a.router.cmp(&b.router));
        Ok(listing)
    }
}

fn key(router: &str) -> String {
    format!("router#{router}")
}

pub(crate) fn remote<E: std::error::Error + Send + Sync + 'static>(
    op: &'static str,
    e: E,
) -> StoreError {
    StoreError::Remote {
        op,
        source: Box::new(e),
    }
}

/// Runs blocking file work off the runtime's threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .expect("a store file operation does not panic")
}

/// Replaces a record whole (a temporary file renamed over it), so a reader never sees half
/// of one. Not synced to disk: the next heartbeat rewrites it anyway.
fn replace(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let result = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|source| StoreError::Write {
        path: path.to_owned(),
        source,
    })
}

fn list_folder(dir: &Path) -> Result<Listing, StoreError> {
    let mut listing = Listing::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(listing),
        Err(source) => {
            return Err(StoreError::Read {
                path: dir.to_owned(),
                source,
            });
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        // A record being replaced is renamed into place whole; one that vanished between
        // the listing and the read was a router deregistering.
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        match serde_json::from_slice::<Presence>(&bytes) {
            Ok(p) => listing.routers.push(p),
            Err(e) => listing.unreadable.push(format!("{}: {e}", path.display())),
        }
    }
    Ok(listing)
}

async fn list_table(store: &DynamoStore) -> Result<Listing, StoreError> {
    let mut listing = Listing::default();
    let mut start = None;
    loop {
        let out = store
            .client()
            .scan()
            .table_name(store.url().fleet_table())
            .consistent_read(true)
            .filter_expression("begins_with(pk, :router)")
            .expression_attribute_values(":router", AttributeValue::S("router#".into()))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| remote("list presence records", e))?;
        for item in out.items() {
            let pk = item.get("pk").and_then(|v| v.as_s().ok());
            let record = item.get("record").and_then(|v| v.as_s().ok());
            match record.map(|r| serde_json::from_str::<Presence>(r)) {
                Some(Ok(p)) => listing.routers.push(p),
                Some(Err(e)) => listing.unreadable.push(format!("{pk:?}: {e}")),
                None => listing.unreadable.push(format!("{pk:?}: no record")),
            }
        }
        match out.last_evaluated_key() {
            Some(k) if !k.is_empty() => start = Some(k.clone()),
            _ => return Ok(listing),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presence(router: &str, version: u64) -> Presence {
        Presence {
            router: router.into(),
            build: "0.1.0".into(),
            started_ms: 1,
            flag_version: version,
            version_since_ms: 2,
            snapshot_ms: 3,
            seen_ms: 4,
            drained: vec!["h1".into()],
            ramps: Default::default(),
            shadow: Default::default(),
        }
    }

    #[tokio::test]
    async fn a_file_fleet_lists_what_routers_wrote_and_forgets_who_left() {
        let dir = tempfile::tempdir().unwrap();
        let flags = dir.path().join("flags.json");
        let fleet = Fleet::File(Fleet::folder(&flags));
        assert!(fleet.list().await.unwrap().routers.is_empty());
        fleet.put(&presence("b", 7)).await.unwrap();
        fleet.put(&presence("a", 6)).await.unwrap();
        fleet.put(&presence("a", 7)).await.unwrap();
        std::fs::write(dir.path().join("flags.fleet/bad.json"), "{").unwrap();
        let listing = fleet.list().await.unwrap();
        assert_eq!(listing.routers, [presence("a", 7), presence("b", 7)]);
        assert_eq!(listing.unreadable.len(), 1, "{:?}", listing.unreadable);
        assert!(listing.unreadable[0].contains("bad.json"));
        fleet.remove("a").await.unwrap();
        fleet.remove("a").await.unwrap();
        let left: Vec<String> = (fleet.list().await.unwrap().routers)
            .into_iter()
            .map(|p| p.router)
            .collect();
        assert_eq!(left, ["b"]);
    }
}
