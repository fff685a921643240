//! One interface over the flag stores for the CLI: the file store (local, synchronous) and the
//! DynamoDB store (remote, transactional, audited).

use flag_store::dynamodb::{AuditRecord, DynamoStore};
use flag_store::{FileStore, FlagItem, FlagWrite, LoadedItem, StoreError, StoreUrl, Targets};

#[derive(Debug)]
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

    pub async fn get(&self, tenant: &str) -> Result<Option<FlagItem>, StoreError> {
        match self {
            Store::File(f) => f.get(tenant),
            Store::Dynamo(d) => d.get(tenant).await,
        }
    }

    pub async fn write(
        &self,
        write: &FlagWrite,
        targets: Option<&Targets>,
    ) -> Result<(Option<FlagItem>, FlagItem), StoreError> {
        match self {
            Store::File(f) => f.write(write, targets),
            Store::Dynamo(d) => d.write(write, targets).await,
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
    pub async fn create(&self) -> Result<(), StoreError> {
        match self {
            Store::File(f) => f.create(&[]),
            Store::Dynamo(d) => d.create_tables().await,
        }
    }
}
