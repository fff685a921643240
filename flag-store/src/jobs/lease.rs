//! Job leases: one holder at a time for one job of one tenant, across both sides.
//!
//! A lease is taken by a conditional write that succeeds only when nobody holds it (never
//! taken, released, or past its expiry), and it carries a fencing token that grows by one at
//! every taking and never goes back, so a command can make its own writes conditional on it.
//! The holder renews it (conditional on still holding that token) and releases it when done;
//! a holder that dies blocks the others only until the expiry.
//!
//! - DynamoDB: an item in the fleet table (`TABLE-fleet`), key `lease#JOB#TENANT`, with
//!   `holder`, `side`, `expires_ms` and `token`. A released lease keeps its item, and so its
//!   token. Every side must write to the same region's table: a conditional write holds
//!   only within one region.
//! - File store: `flags.leases/JOB.TENANT.json` beside the flags file, read and replaced whole
//!   under an exclusive lock on `flags.leases/.lock`.
//!
//! Expiries are wall-clock milliseconds, so the sides' clocks must agree to well within a
//! lease's time (NTP does).

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use serde::{Deserialize, Serialize};

use crate::dynamodb::DynamoStore;
use crate::error::StoreError;
use crate::fleet::{blocking, remote};
use crate::model::now_ms;
use crate::store::Store;

/// A lease as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseState {
    pub job: String,
    pub tenant: String,
    /// Who holds it (empty once released).
    pub holder: String,
    /// The side the holder runs on.
    pub side: String,
    /// Milliseconds since the Unix epoch; 0 once released.
    pub expires_ms: u64,
    /// Grows by one at every taking.
    pub token: u64,
}

impl LeaseState {
    /// Whether someone holds it at `now_ms`.
    pub fn held_at(&self, now_ms: u64) -> bool {
        !self.holder.is_empty() && now_ms < self.expires_ms
    }
}

/// A lease this process holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub job: String,
    pub tenant: String,
    pub holder: String,
    pub side: String,
    pub token: u64,
    /// Until when it holds, as of the last taking or renewal.
    pub expires_ms: u64,
}

/// What a taking found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Taken {
    Granted(Lease),
    /// Someone else holds it.
    Busy(LeaseState),
}

/// Where a store keeps its leases.
#[derive(Clone, Debug)]
pub enum Leases {
    /// A folder beside the flags file.
    File(PathBuf),
    Dynamo(DynamoStore),
}

impl Leases {
    /// The leases of a flag store already open.
    pub fn of(store: &Store) -> Leases {
        match store {
            Store::File(f) => Leases::File(Self::folder(f.path())),
            Store::Dynamo(d) => Leases::Dynamo(d.clone()),
        }
    }

    /// The folder beside a flags file: `flags.json` -> `flags.leases`.
    pub fn folder(flags: &Path) -> PathBuf {
        flags.with_extension("leases")
    }

    /// Takes the lease for `ttl` if nobody holds it.
    pub async fn take(
        &self,
        job: &str,
        tenant: &str,
        holder: &str,
        side: &str,
        ttl: Duration,
    ) -> Result<Taken, StoreError> {
        let now = now_ms();
        let expires_ms = now + ttl.as_millis() as u64;
        match self {
            Leases::File(dir) => {
                let (dir, job, tenant) = (dir.clone(), job.to_owned(), tenant.to_owned());
                let (holder, side) = (holder.to_owned(), side.to_owned());
                blocking(move || {
                    let path = file_of(&dir, &job, &tenant);
                    locked(&dir, || {
                        let current = read(&path)?;
                        if let Some(cur) = current.as_ref().filter(|c| c.held_at(now)) {
                            return Ok(Taken::Busy(cur.clone()));
                        }
                        let next = LeaseState {
                            job,
                            tenant,
                            holder,
                            side,
                            expires_ms,
                            token: current.map_or(0, |c| c.token) + 1,
                        };
                        write(&path, &next)?;
                        Ok(Taken::Granted(next.into()))
                    })
                })
                .await
            }
            Leases::Dynamo(store) => {
                let out = store
                    .client()
                    .update_item()
                    .table_name(store.url().fleet_table())
                    .key("pk", AttributeValue::S(key(job, tenant)))
                    .update_expression(
                        "SET #job = :job, #tenant = :tenant, #holder = :holder, #side = :side, \
                         #expires = :expires, #token = if_not_exists(#token, :zero) + :one",
                    )
                    // A retried request that already took the lease takes it again.
                    .condition_expression(
                        "attribute_not_exists(pk) OR #expires <= :now OR #holder = :holder",
                    )
                    .set_expression_attribute_names(Some(names()))
                    .expression_attribute_values(":job", s(job))
                    .expression_attribute_values(":tenant", s(tenant))
                    .expression_attribute_values(":holder", s(holder))
                    .expression_attribute_values(":side", s(side))
                    .expression_attribute_values(":expires", n(expires_ms))
                    .expression_attribute_values(":now", n(now))
                    .expression_attribute_values(":zero", n(0))
                    .expression_attribute_values(":one", n(1))
                    .return_values(ReturnValue::AllNew)
                    .return_values_on_condition_check_failure(
                        ReturnValuesOnConditionCheckFailure::AllOld,
                    )
                    .send()
                    .await;
                match out {
                    Ok(out) => {
                        let state =
                            from_attributes(out.attributes().unwrap_or(&Default::default()));
                        Ok(Taken::Granted(state.into()))
                    }
                    Err(e) => match conditional_failure(&e) {
                        Some(old) => Ok(Taken::Busy(from_attributes(&old))),
                        None => Err(remote("take a job lease", e)),
                    },
                }
            }
        }
    }

    /// Extends a lease held by `lease`'s holder and token to `ttl` from now; `None` when it is
    /// no longer theirs (expired and taken by another).
    pub async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, StoreError> {
        let expires_ms = now_ms() + ttl.as_millis() as u64;
        let renewed = Lease {
            expires_ms,
            ..lease.clone()
        };
        let changed = self
            .change(lease, "renew a job lease", move |state| {
                state.expires_ms = expires_ms
            })
            .await?;
        Ok(changed.then_some(renewed))
    }

    /// Releases a lease (the token stays); false when it was no longer this holder's.
    pub async fn release(&self, lease: &Lease) -> Result<bool, StoreError> {
        self.change(lease, "release a job lease", |state| {
            state.holder.clear();
            state.expires_ms = 0;
        })
        .await
    }

    /// The lease as stored, if it was ever taken.
    pub async fn get(&self, job: &str, tenant: &str) -> Result<Option<LeaseState>, StoreError> {
        match self {
            Leases::File(dir) => {
                let path = file_of(dir, job, tenant);
                blocking(move || read(&path)).await
            }
            Leases::Dynamo(store) => {
                let out = store
                    .client()
                    .get_item()
                    .table_name(store.url().fleet_table())
                    .key("pk", AttributeValue::S(key(job, tenant)))
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(|e| remote("read a job lease", e))?;
                Ok(out.item().map(from_attributes))
            }
        }
    }

    /// Applies `change` to the lease if `lease`'s holder still holds its token.
    async fn change(
        &self,
        lease: &Lease,
        op: &'static str,
        change: impl FnOnce(&mut LeaseState) + Send + 'static,
    ) -> Result<bool, StoreError> {
        match self {
            Leases::File(dir) => {
                let (dir, lease) = (dir.clone(), lease.clone());
                blocking(move || {
                    let path = file_of(&dir, &lease.job, &lease.tenant);
                    locked(&dir, || {
                        let Some(mut state) = read(&path)? else {
                            return Ok(false);
                        };
                        if state.holder != lease.holder || state.token != lease.token {
                            return Ok(false);
                        }
                        change(&mut state);
                        write(&path, &state)?;
                        Ok(true)
                    })
                })
                .await
            }
            Leases::Dynamo(store) => {
                let mut state = LeaseState {
                    holder: lease.holder.clone(),
                    expires_ms: lease.expires_ms,
                    ..Default::default()
                };
                change(&mut state);
                let mut update = store
                    .client()
                    .update_item()
                    .table_name(store.url().fleet_table())
                    .key("pk", AttributeValue::S(key(&lease.job, &lease.tenant)))
                    .condition_expression("#holder = :holder AND #token = :token")
                    .expression_attribute_values(":holder", s(&lease.holder))
                    .expression_attribute_values(":token", n(lease.token))
                    .expression_attribute_values(":expires", n(state.expires_ms));
                // Only the names the expressions use may be given.
                let mut used = names();
                used.retain(|k, _| ["#holder", "#expires", "#token"].contains(&k.as_str()));
                update = update.set_expression_attribute_names(Some(used));
                update = if state.holder.is_empty() {
                    update
                        .update_expression("SET #holder = :none, #expires = :expires")
                        .expression_attribute_values(":none", s(""))
                } else {
                    update.update_expression("SET #expires = :expires")
                };
                match update.send().await {
                    Ok(_) => Ok(true),
                    Err(e) if conditional_failure(&e).is_some() => Ok(false),
                    Err(e) => Err(remote(op, e)),
                }
            }
        }
    }
}

impl From<LeaseState> for Lease {
    fn from(s: LeaseState) -> Lease {
        Lease {
            job: s.job,
            tenant: s.tenant,
            holder: s.holder,
            side: s.side,
            token: s.token,
            expires_ms: s.expires_ms,
        }
    }
}

/// The item's attribute names, as expressions name them (`token` is a reserved word).
fn names() -> std::collections::HashMap<String, String> {
    [
        ("#job", "job"),
        ("#tenant", "tenant"),
        ("#holder", "holder"),
        ("#side", "side"),
        ("#expires", "expires_ms"),
        ("#token", "token"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn key(job: &str, tenant: &str) -> String {
    format!("lease#{job}#{tenant}")
}

/// `JOB.TENANT.json`: a job name has no `.`, so the name parts cannot run together, and the
/// job's prefix keeps a tenant id such as `..` from naming a folder.
fn file_of(dir: &Path, job: &str, tenant: &str) -> PathBuf {
    dir.join(format!("{job}.{tenant}.json"))
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn from_attributes(item: &std::collections::HashMap<String, AttributeValue>) -> LeaseState {
    let text = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default()
    };
    let number = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    LeaseState {
        job: text("job"),
        tenant: text("tenant"),
        holder: text("holder"),
        side: text("side"),
        expires_ms: number("expires_ms"),
        token: number("token"),
    }
}

/// The item a failed condition found, when that is why the update failed.
fn conditional_failure(
    e: &aws_sdk_dynamodb::error::SdkError<
        aws_sdk_dynamodb::operation::update_item::UpdateItemError,
    >,
) -> Option<std::collections::HashMap<String, AttributeValue>> {
    match e.as_service_error()? {
        aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c) => {
            Some(c.item().cloned().unwrap_or_default())
        }
        _ => None,
    }
}

/// Runs `f` under an exclusive lock on the folder's lock file (created with the folder).
fn locked<T>(dir: &Path, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    let write_err = |source| StoreError::Write {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(write_err)?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".lock"))
        .map_err(write_err)?;
    lock.lock().map_err(write_err)?;
    // The lock is released when the file is closed.
    f()
}

fn read(path: &Path) -> Result<Option<LeaseState>, StoreError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StoreError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StoreError::Format {
            path: path.to_owned(),
            reason: format!("not a job lease: {e}"),
        })
}

/// Replaces the lease file whole and durably: a lease must survive a crash of the machine as
/// well as its token does.
fn write(path: &Path, state: &LeaseState) -> Result<(), StoreError> {
    use std::io::Write as _;
    let json = serde_json::to_vec(state).expect("a lease serializes");
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let result = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(&json).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|source| StoreError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_lease_has_one_holder_until_released_or_expired_and_its_token_only_grows() {
        let dir = tempfile::tempdir().unwrap();
        let leases = Leases::File(Leases::folder(&dir.path().join("flags.json")));
        let ttl = Duration::from_secs(30);
        let Taken::Granted(a) = leases
            .take("report", "acme", "a", "legacy", ttl)
            .await
            .unwrap()
        else {
            panic!("a free lease is granted");
        };
        assert_eq!(a.token, 1);
        let Taken::Busy(held) = leases
            .take("report", "acme", "b", "new", ttl)
            .await
            .unwrap()
        else {
            panic!("a held lease is not granted twice");
        };
        assert_eq!((held.holder.as_str(), held.side.as_str()), ("a", "legacy"));
        // Another tenant's, or another job's, lease is its own.
        assert!(matches!(
            leases
                .take("report", "globex", "b", "new", ttl)
                .await
                .unwrap(),
            Taken::Granted(_)
        ));
        assert!(leases.renew(&a, ttl).await.unwrap().is_some());
        assert!(leases.release(&a).await.unwrap());
        assert!(!leases.release(&a).await.unwrap(), "released once");
        let Taken::Granted(b) = leases
            .take("report", "acme", "b", "new", ttl)
            .await
            .unwrap()
        else {
            panic!("a released lease is free");
        };
        assert_eq!(b.token, 2);
        assert!(
            leases.renew(&a, ttl).await.unwrap().is_none(),
            "the old holder cannot renew what it released"
        );
        // Expired: free to the next taker, with a larger token.
        let short = leases
            .renew(&b, Duration::ZERO)
            .await
            .unwrap()
            .expect("still b's");
        assert!(
            !leases
                .get("report", "acme")
                .await
                .unwrap()
                .unwrap()
                .held_at(now_ms())
        );
        let Taken::Granted(c) = leases
            .take("report", "acme", "c", "legacy", ttl)
            .await
            .unwrap()
        else {
            panic!("an expired lease is free");
        };
        assert_eq!(c.token, 3);
        assert!(!leases.release(&short).await.unwrap(), "b lost it");
    }

    #[tokio::test]
    async fn an_unreadable_lease_file_is_an_error_not_a_free_lease() {
        let dir = tempfile::tempdir().unwrap();
        let folder = Leases::folder(&dir.path().join("flags.json"));
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("report.acme.json"), "{").unwrap();
        let err = Leases::File(folder)
            .take("report", "acme", "a", "legacy", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(
            crate::error::Chain(&err)
                .to_string()
                .contains("not a job lease"),
            "{err}"
        );
    }
}
