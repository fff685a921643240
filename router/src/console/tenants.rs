//! The console's tenant table: one page of a snapshot's tenants, filtered and in id order,
//! found in one pass over the table (no index to build or keep: at a million tenants a
//! page costs one scan, and a snapshot swapped in a moment ago is paged as it is).
//!
//! The page is the `limit` smallest ids after the cursor (`after`) among the tenants that
//! pass the filters, kept in a bounded heap while the scan runs; the same scan counts the
//! matching tenants and their placements by target.

use std::collections::{BTreeMap, BinaryHeap};

use flag_store::{FlagItem, Placement, Snapshot, TargetId};

/// The most rows a page holds.
pub const MAX_LIMIT: usize = 500;
/// Rows a page holds when the query does not say.
pub const DEFAULT_LIMIT: usize = 50;

/// The table's query: an id prefix, filters, and where the page starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    /// Ids that start with this.
    pub prefix: String,
    /// Tenants with a share on this target (pinned to it, or a weight above 0).
    pub target: Option<TargetId>,
    /// `Some(true)`: split tenants only; `Some(false)`: pinned ones only.
    pub split: Option<bool>,
    pub sealed: Option<bool>,
    pub shadowed: Option<bool>,
    /// Tenants in a hold in force at `now_ms`.
    pub held: Option<bool>,
    /// The page starts after this id.
    pub after: Option<String>,
    pub limit: usize,
    pub now_ms: u64,
}

/// One page, and what the whole filtered table holds.
#[derive(Debug)]
pub struct Page {
    /// The page's tenants in id order, each as its stored item (with `hold` when held).
    pub rows: Vec<FlagItem>,
    /// Tenants passing the filters (the page's cursor aside).
    pub matched: usize,
    /// Of those, how many have a share on each target.
    pub by_target: BTreeMap<String, usize>,
    /// The cursor of the next page, when there are more rows.
    pub next: Option<String>,
}

impl Query {
    /// Reads the query string: `prefix`, `target`, `mode` (`pinned` or `split`), `sealed`,
    /// `shadowed`, `held` (`true` or `false`), `after`, `limit`. Names what it cannot read.
    pub fn parse(query: &str, snap: &Snapshot, now_ms: u64) -> Result<Query, String> {
        let mut q = Query {
            limit: DEFAULT_LIMIT,
            now_ms,
            ..Query::default()
        };
        let yes_no = |name: &str, v: &str| match v {
            "true" | "yes" | "1" => Ok(Some(true)),
            "false" | "no" | "0" => Ok(Some(false)),
            "" | "any" => Ok(None),
            _ => Err(format!("{name}={v:?}: say true or false")),
        };
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let value = value.into_owned();
            match &*name {
                "prefix" => q.prefix = value,
                "target" if value.is_empty() => {}
                "target" => {
                    q.target = Some(snap.targets().id(&value).ok_or_else(|| {
                        format!(
                            "target={value:?} is not a target; the targets are {}",
                            snap.targets().known_list()
                        )
                    })?)
                }
                "mode" => {
                    q.split = match value.as_str() {
                        "split" => Some(true),
                        "pinned" => Some(false),
                        "" | "any" => None,
                        _ => return Err(format!("mode={value:?}: say pinned or split")),
                    }
                }
                "sealed" => q.sealed = yes_no("sealed", &value)?,
                "shadowed" => q.shadowed = yes_no("shadowed", &value)?,
                "held" => q.held = yes_no("held", &value)?,
                "after" if value.is_empty() => {}
                "after" => q.after = Some(value),
                "limit" => {
                    q.limit = match value.parse::<usize>() {
                        Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                        _ => {
                            return Err(format!("limit={value:?}: a number from 1 to {MAX_LIMIT}"));
                        }
                    }
                }
                other => {
                    return Err(format!(
                        "unknown parameter {other:?}; the table reads prefix, target, mode, sealed, shadowed, held, after and limit"
                    ));
                }
            }
        }
        Ok(q)
    }
}

/// One page of `snap`'s tenants as `q` asks.
pub fn page(snap: &Snapshot, q: &Query) -> Page {
    let targets = snap.targets();
    let mut counts = vec![0usize; targets.len()];
    let mut matched = 0;
    // The page's ids so far: a max-heap of the `limit + 1` smallest (one more tells whether
    // a next page exists).
    let mut heap: BinaryHeap<&str> = BinaryHeap::with_capacity(q.limit + 2);
    for (tenant, flag) in snap.iter() {
        if !tenant.starts_with(q.prefix.as_str()) {
            continue;
        }
        let placement = flag.placement();
        let on = |t: TargetId| match placement {
            Placement::Pinned(p) => *p == t,
            Placement::Split(s) => s.entries().iter().any(|&(e, w)| e == t && w > 0),
        };
        if q.target.is_some_and(|t| !on(t))
            || q.split
                .is_some_and(|s| s != matches!(placement, Placement::Split(_)))
            || q.sealed.is_some_and(|s| s != flag.sealed())
            || q.shadowed.is_some_and(|s| s != flag.shadow().is_some())
            || q.held.is_some_and(|h| h != held(snap, tenant, q.now_ms))
        {
            continue;
        }
        matched += 1;
        for (t, _) in targets.iter() {
            if on(t) {
                counts[t.index()] += 1;
            }
        }
        if q.after.as_deref().is_some_and(|after| tenant <= after) {
            continue;
        }
        if heap.len() <= q.limit {
            heap.push(tenant);
        } else if heap.peek().is_some_and(|&largest| tenant < largest) {
            heap.pop();
            heap.push(tenant);
        }
    }
    let mut ids = heap.into_sorted_vec();
    let next = (ids.len() > q.limit).then(|| {
        ids.truncate(q.limit);
        ids[q.limit - 1].to_owned()
    });
    let rows = (ids.iter())
        .filter_map(|&tenant| {
            let mut item = snap.get(tenant)?.to_item(tenant, targets);
            item.hold = snap.hold(tenant).map(|h| (**h).clone());
            Some(item)
        })
        .collect();
    Page {
        rows,
        matched,
        by_target: (targets.iter())
            .map(|(t, name)| (name.to_owned(), counts[t.index()]))
            .collect(),
        next,
    }
}

fn held(snap: &Snapshot, tenant: &str, now_ms: u64) -> bool {
    snap.has_holds() && snap.hold(tenant).is_some_and(|h| h.active_at(now_ms))
}
