//! What a flag store is to the reloader: something polled that reports a full load or the
//! items changed since the last poll. The file and DynamoDB stores implement it; the
//! reloader ([`crate::reload`]) consumes it.

use std::future::Future;

use crate::error::StoreError;
use crate::snapshot::Load;

/// A flag store as the reloader sees it.
pub trait Source: Send + 'static {
    /// Names the store in logs (`file:/etc/switchyard/flags.json`).
    fn describe(&self) -> String;

    /// Checks the store. `Ok(Some(update))` when it changed since the last call (always a
    /// full load on the first call), `Ok(None)` when it is unchanged, `Err` when it cannot be
    /// read.
    fn poll(&mut self) -> impl Future<Output = Result<Option<Update>, StoreError>> + Send;
}

/// What a source read.
#[derive(Debug)]
pub enum Update {
    /// Every item the store holds.
    Full(Load),
    /// Only the items changed since the previous update, at the store's new version.
    Delta(Load),
    /// Every item the store holds, read to catch changes no audit record announced (edits
    /// made straight in the store). `audited` names the tenants whose change in it an audit
    /// record explains; any other tenant that routes differently was changed out of band.
    Reconcile {
        load: Load,
        audited: std::collections::HashSet<String>,
    },
}
