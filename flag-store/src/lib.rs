//! Switchyard's flags: the model, validation, the immutable snapshot the router reads, the
//! stores that hold flags and the reloader that turns a store into snapshots. Nothing here
//! knows HTTP; the router sees this crate through [`Snapshot`] and the [`Source`] trait.
//!
//! The flow: a [`Source`] (the [`FileStore`] watcher) reports a [`Load`]; [`Snapshot::build`]
//! validates each item on its own; [`FlagState`] swaps the new snapshot in whole.

pub mod background;
pub mod dynamodb;
pub mod error;
pub mod evacuation;
pub mod file;
pub mod fleet;
pub mod identity;
pub mod jobs;
pub mod model;
pub mod ramp;
pub mod record;
pub mod reload;
pub mod snapshot;
pub mod source;
pub mod sticky;
pub mod store;
pub mod write;

pub use error::{ItemError, StoreError};
pub use file::{FileSource, FileStore};
pub use identity::StoreIdentity;
pub use model::{
    BUCKETS, DEFAULT_TENANT, Flag, FlagItem, HoldItem, Mode, Placement, Routing, Shadow,
    ShadowItem, Split, TargetId, Targets,
};
pub use reload::{FlagState, ReloadResult};
pub use snapshot::{Drift, FlagRef, Found, Load, LoadedItem, Rejected, Snapshot};
pub use source::{Source, Update};
pub use store::Store;
pub use write::{FlagWrite, HoldWrite, Placing};

use std::path::{Path, PathBuf};

/// Where flags live: `file:PATH` (relative paths resolve against `base`) or
/// `dynamodb://TABLE?region=R&endpoint=URL`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    File(PathBuf),
    Dynamo(dynamodb::DynamoUrl),
}

impl StoreUrl {
    pub fn parse(url: &str, base: &Path) -> Result<StoreUrl, StoreError> {
        if let Some(path) = url.strip_prefix("file:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(StoreError::Url {
                    url: url.to_owned(),
                    reason: "no path after file:".into(),
                });
            }
            return Ok(StoreUrl::File(base.join(path)));
        }
        if url.starts_with("dynamodb://") {
            return dynamodb::DynamoUrl::parse(url)
                .map(StoreUrl::Dynamo)
                .map_err(|reason| StoreError::Url {
                    url: url.to_owned(),
                    reason,
                });
        }
        Err(StoreError::Url {
            url: url.to_owned(),
            reason: "expected file:PATH or dynamodb://TABLE".into(),
        })
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::File(p) => write!(f, "file:{}", p.display()),
            StoreUrl::Dynamo(d) => write!(f, "dynamodb://{}", d.table),
        }
    }
}
