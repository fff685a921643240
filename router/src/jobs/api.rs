//! `GET /v1/owner/{tenant}?side=S` on the admin listener: who owns a tenant's jobs, as this
//! router's snapshot says, for jobs that cannot run the binary. The same rule as
//! `switchyard owns`: a pinned tenant's target, a split tenant's job side or heaviest side,
//! nobody while held; a tenant without a flag follows the `*` flag, and without one the
//! config's default target, as its requests do. The admin listener asks for the read token.

use flag_store::{Snapshot, TargetId};
use serde_json::{Value, json};

/// The answer for `tenant` (already validated), judged for `side` when one is given.
pub fn owner(
    snap: &Snapshot,
    default_target: TargetId,
    tenant: &str,
    side: Option<&str>,
    now_ms: u64,
) -> Value {
    let targets = snap.targets();
    let (flag, decided_by) = match snap.get(tenant) {
        Some(flag) => (Some(flag), "flag"),
        None => match snap.default_flag() {
            Some(flag) => (Some(flag), "default_flag"),
            None => (None, "default_target"),
        },
    };
    let owner = flag.as_ref().map_or(default_target, |f| f.job_owner());
    let hold = (snap.hold(tenant))
        .filter(|h| decided_by == "flag" && h.active_at(now_ms))
        .map(|h| {
            json!({
                "id": h.id,
                "deadline_ms": h.deadline_ms,
                "left_ms": h.deadline_ms.saturating_sub(now_ms),
            })
        });
    let held = hold.is_some();
    let owner_name = targets.name(owner);
    let mut answer = json!({
        "tenant": tenant,
        "owner": owner_name,
        "decided_by": decided_by,
        "flag_version": flag.as_ref().map_or(0, |f| f.version),
        "snapshot_version": snap.version,
        "hold": hold,
    });
    if let Some(side) = side {
        let verdict = match (held, side == owner_name) {
            (true, _) => "held",
            (false, true) => "runs_here",
            (false, false) => "not_here",
        };
        answer["side"] = json!(side);
        answer["runs_here"] = json!(verdict == "runs_here");
        answer["verdict"] = json!(verdict);
    }
    answer
}
