//! One face over the flag stores for the operator's commands (the CLI, the admin API): the file
//! store (local, synchronous) and the DynamoDB store (remote, transactional, audited).

use std::collections::HashMap;

use crate::dynamodb::{AuditRecord, Created, DynamoStore};
use crate::write::Current;
use crate::{FileStore, FlagItem, FlagWrite, LoadedItem, StoreError, StoreUrl, Targets};

/// What one write did: (previous item, new item), or why it was refused.
pub type WriteResult = Result<(Option<FlagItem>, FlagItem), StoreError>;

#[derive(Clone, Debug)]
pub enum Store {
    File(FileStore),
    Dynamo(DynamoStore),
}

impl Store {
    pub async fn open(url: &StoreUrl) -> Store {
        match url {
            StoreUrl::File(path) => Store::File(FileStore::new(path)),
            StoreUrl::Dynamo(d) => Store::Dynamo(DynamoStore::connect(d).await),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Store::File(f) => format!("file:{}", f.path().display()),
            Store::Dynamo(d) => d.describe(),
        }
    }

    /// The store's version and every item, each parsed or refused.
    pub async fn list(&self) -> Result<(u64, Vec<LoadedItem>), StoreError> {
        match self {
            Store::File(f) => f.load().map(|l| (l.version, l.items)),
            Store::Dynamo(d) => {
                let version = d.version().await?;
                Ok((version, d.scan_all().await?))
            }
        }
    }

    /// Hands each item, parsed or refused, to `each`; returns the store's version. A file is
    /// read item by item without holding them all; DynamoDB is scanned whole first.
    pub async fn scan(
        &self,
        mut each: impl FnMut(LoadedItem) -> std::ops::ControlFlow<()>,
    ) -> Result<u64, StoreError> {
        match self {
            Store::File(f) => f.scan(each),
            Store::Dynamo(d) => {
                let version = d.version().await?;
                for loaded in d.scan_all().await? {
                    if each(loaded).is_break() {
                        break;
                    }
                }
                Ok(version)
            }
        }
    }

    /// The store's version (a file store reads its file).
    pub async fn version(&self) -> Result<u64, StoreError> {
        match self {
            Store::File(f) => f.load().map(|l| l.version),
            Store::Dynamo(d) => d.version().await,
        }
    }

    pub async fn get(&self, tenant: &str) -> Result<Option<FlagItem>, StoreError> {
        match self {
            Store::File(f) => f.get(tenant),
            Store::Dynamo(d) => d.get(tenant).await,
        }
    }

    pub async fn write(&self, write: &FlagWrite, targets: Option<&Targets>) -> WriteResult {
        match self {
            Store::File(f) => {
                let (f, write, targets) = (f.clone(), write.clone(), targets.cloned());
                tokio::task::spawn_blocking(move || f.write(&write, targets.as_ref()))
                    .await
                    .expect("a file write does not panic")
            }
            Store::Dynamo(d) => d.write(write, targets).await,
        }
    }

    /// Applies writes, each tenant's atomic on its own, calling `progress` with the number
    /// done. The file store applies them under one lock and one replace; DynamoDB writes go
    /// one transaction of up to [`crate::dynamodb::PER_TRANSACTION`] tenants after another
    /// (every write bumps the one meta item, so concurrent writes would only conflict and
    /// retry).
    pub async fn write_each(
        &self,
        writes: &[FlagWrite],
        targets: Option<&Targets>,
        mut progress: impl FnMut(usize),
    ) -> Vec<WriteResult> {
        match self {
            Store::File(f) => {
                let (f, all, targets) = (f.clone(), writes.to_vec(), targets.cloned());
                let results =
                    tokio::task::spawn_blocking(move || f.write_many(&all, targets.as_ref()))
                        .await
                        .expect("a file write does not panic");
                progress(writes.len());
                match results {
                    Ok(results) => results,
                    Err(e) => {
                        // Nothing was written: every write fails with the same cause.
                        let cause = crate::error::Chain(&e).to_string();
                        writes
                            .iter()
                            .map(|_| {
                                Err(StoreError::Remote {
                                    op: "write the batch",
                                    source: cause.clone().into(),
                                })
                            })
                            .collect()
                    }
                }
            }
            Store::Dynamo(d) => {
                let per = crate::dynamodb::PER_TRANSACTION;
                let mut results = Vec::with_capacity(writes.len());
                for chunk in writes.chunks(per) {
                    results.extend(d.write_many(chunk, targets).await);
                    progress(results.len());
                }
                results
            }
        }
    }

    /// What a writer needs of each tenant's stored item (a tenant with no item is absent).
    pub async fn currents(
        &self,
        tenants: &[String],
    ) -> Result<HashMap<String, Current>, StoreError> {
        match self {
            Store::File(f) => {
                let f = f.clone();
                let mut all = tokio::task::spawn_blocking(move || f.currents())
                    .await
                    .expect("a file read does not panic")?;
                Ok(tenants.iter().filter_map(|t| all.remove_entry(t)).collect())
            }
            Store::Dynamo(d) => d.currents(tenants).await,
        }
    }

    pub async fn history(&self, tenant: &str) -> Result<Vec<AuditRecord>, StoreError> {
        match self {
            Store::File(_) => Err(StoreError::Url {
                url: self.describe(),
                reason: "the file store keeps each flag's last writer, not a history; use a DynamoDB store for the audit trail".into(),
            }),
            Store::Dynamo(d) => d.history(tenant).await,
        }
    }

    /// Creates what the store needs (an empty flag file, or the tables); keeps what exists.
    /// For DynamoDB, says what it did to the meta item.
    pub async fn create(&self) -> Result<Option<Created>, StoreError> {
        match self {
            Store::File(f) => f.create(&[]).map(|()| None),
            Store::Dynamo(d) => d.create_tables().await.map(Some),
        }
    }
}
