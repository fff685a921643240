//! The flag store's errors: one enum for a bad item (rejected alone) and one for a store
//! operation (a read or write of the whole store).

use std::path::PathBuf;

/// Why one flag item was rejected. The rest of the store still applies.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ItemError {
    #[error("invalid tenant id: {0}")]
    TenantId(String),
    #[error("unknown target {target:?} (configured targets: {known})")]
    UnknownTarget { target: String, known: String },
    #[error("the item {0}")]
    Shape(String),
    #[error("bad weights: {0}")]
    Weights(String),
    #[error("bad updated_at {value:?}: {reason}")]
    Timestamp { value: String, reason: String },
    #[error("{0}")]
    Parse(String),
    #[error("tenant {0:?} appears more than once; every copy is rejected")]
    Duplicate(String),
}

/// Why a store operation failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid flag file: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("unsupported flag store {0:?} (expected file:PATH)")]
    Url(String),
    #[error("tenant {tenant:?}: {source}")]
    Item {
        tenant: String,
        #[source]
        source: ItemError,
    },
    #[error(
        "tenant {tenant:?} changed since you read it: expected version {expected}, it is at version {actual}{}",
        by.as_deref().map(|b| format!(", last written by {b}")).unwrap_or_default()
    )]
    Conflict {
        tenant: String,
        expected: u64,
        actual: u64,
        by: Option<String>,
    },
    #[error(
        "tenant {tenant:?} is sealed on {target}: its data no longer replicates back, so moving it is refused (use --force with a --reason to override)"
    )]
    Sealed { tenant: String, target: String },
    #[error("tenant {0:?} has no flag")]
    NotFound(String),
}
