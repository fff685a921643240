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
    #[error("bad jobs side: {0}")]
    Jobs(String),
    #[error("bad shadow: {0}")]
    Shadow(String),
    #[error("bad updated_at {value:?}: {reason}")]
    Timestamp { value: String, reason: String },
    #[error("{0}")]
    Parse(String),
    #[error("tenant {0:?} appears more than once; every copy is rejected")]
    Duplicate(String),
    #[error("the flag table is full (its tenant ids take 4 GiB)")]
    TableFull,
    #[error(
        "the tenant is sealed on {target}; this item moves or unseals it without a force record (write it with --force and a reason, which marks the item \"forced\")"
    )]
    Sealed { target: String },
    #[error(
        "the tenant is sealed on {target} and its item is gone from the store; it keeps its flag rather than fall to the default"
    )]
    SealedRemoved { target: String },
}

/// Why a store operation failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid flag file: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("bad flag store {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("the flag store failed to {op}")]
    Remote {
        op: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("tenant {tenant:?}")]
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
    #[error("bad job: {0}")]
    Job(String),
    #[error(
        "tenant {tenant:?} is held by the move {hold} for {left_ms} ms more: it cannot be written until that move flips it or ends"
    )]
    Held {
        tenant: String,
        hold: String,
        left_ms: u64,
    },
}

/// Displays an error with its causes, `outer: inner: innermost`, for logs and messages.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}
