//! The flag model: the stored form of a tenant's flag ([`FlagItem`], what files, tables and the
//! CLI read and write) and its validated, compiled form ([`Flag`], what a snapshot holds and the
//! pick reads). Compiling checks everything a router relies on: the tenant id, the targets, the
//! weights, the audit fields. An item that fails is rejected on its own with a reason.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::ItemError;

/// The tenant id of the default item: where tenants without an item of their own go.
pub const DEFAULT_TENANT: &str = "*";

/// Longest tenant id accepted, in bytes.
pub const MAX_TENANT_LEN: usize = 128;

/// Split weights are whole percentages; the sticky pick spreads them over this many buckets.
pub const BUCKETS: u32 = 10_000;

/// Checks a tenant id: 1 to 128 bytes of `A-Z a-z 0-9 . _ - : @`. The default item's `*` is
/// accepted here too; request extractors refuse it separately.
pub fn validate_tenant_id(tenant: &str) -> Result<(), ItemError> {
    if tenant == DEFAULT_TENANT {
        return Ok(());
    }
    if tenant.is_empty() {
        return Err(ItemError::TenantId("it is empty".into()));
    }
    if tenant.len() > MAX_TENANT_LEN {
        return Err(ItemError::TenantId(format!(
            "it is {} bytes long, the limit is {MAX_TENANT_LEN}",
            tenant.len()
        )));
    }
    if let Some(bad) = tenant.chars().find(|c| !is_tenant_char(*c)) {
        return Err(ItemError::TenantId(format!(
            "character {bad:?} is not allowed (use letters, digits and . _ - : @)"
        )));
    }
    Ok(())
}

pub(crate) fn is_tenant_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@')
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// All traffic to one target; never fails over (the tenant's data lives there only).
    Pinned,
    /// Sticky weighted split across targets (active-active).
    Split,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Pinned => "pinned",
            Mode::Split => "split",
        })
    }
}

/// A flag as stored and written: one JSON object per tenant. `mode` may be left out when it
/// follows from the fields (`target` means pinned, `weights` means split).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagItem {
    pub tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<BTreeMap<String, u32>>,
    /// A share of the tenant's requests also sent to another target, whose answers are
    /// compared with the primary's (the client is always answered by the primary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowItem>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sealed: bool,
    /// The force record: this item moved or unsealed a sealed tenant on purpose (`--force`,
    /// the admin API's `force`), and `updated_by` and `reason` say who and why. Every router
    /// refuses an item that moves or unseals a sealed tenant without it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
    #[serde(default)]
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A cutover in progress: while it lasts, every router queues the tenant's new requests
    /// instead of sending them anywhere ([`HoldItem`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldItem>,
    /// The side that runs a split tenant's scheduled jobs (one of its weights' targets);
    /// absent, its heaviest side ([`FlagItem::job_owner`]). A pinned tenant's jobs run on its
    /// target, so a pinned item has no `jobs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<String>,
    /// Only on an evacuation record (key `!evacuate:SIDE`, the `evacuation` module): the
    /// evacuation in force; absent once the side is restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evacuation: Option<EvacuationItem>,
    /// Only on a ramp record (key `!ramp:ID`, the `ramp` module): the ramp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp: Option<crate::record::RampItem>,
}

/// An evacuation as stored, in its record's `evacuation` field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvacuationItem {
    /// Where the side's pinned tenants go (with `include_pinned`), and where a split's share
    /// of the side goes when the split has this side too.
    pub to: String,
    /// Moves the tenants pinned on the side too. Without it they stay: their data is there.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub include_pinned: bool,
}

/// A hold on a tenant, written by `switchyard flags move` on every tenant of the move: the
/// hold's id, how many tenants it holds (a router acknowledges it only once it has seen them
/// all), and its absolute deadline, which every router enforces on its own: past it, the hold
/// is over whatever was written, and queued requests go where the flag says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldItem {
    pub id: String,
    pub tenants: u32,
    /// Milliseconds since the Unix epoch.
    pub deadline_ms: u64,
}

impl HoldItem {
    /// Whether the hold still holds at `now_ms`.
    pub fn active_at(&self, now_ms: u64) -> bool {
        now_ms < self.deadline_ms
    }

    /// A hold names at least one tenant and has an id a log line can carry.
    pub fn check(&self) -> Result<(), ItemError> {
        if self.id.is_empty()
            || self.id.len() > 64
            || !self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ItemError::Shape(format!(
                "has a hold id {:?}; it is 1 to 64 of letters, digits, '-' and '_'",
                self.id
            )));
        }
        if self.tenants == 0 {
            return Err(ItemError::Shape("has a hold of 0 tenants".into()));
        }
        Ok(())
    }
}

/// A shadow as stored: `{"target":"new","percent":10}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowItem {
    pub target: String,
    pub percent: u32,
}

impl ShadowItem {
    /// Parses `TARGET:PERCENT` (`new:10`); `TARGET` alone is 100%.
    pub fn parse(spec: &str) -> Result<ShadowItem, String> {
        let (target, percent) = match spec.split_once(':') {
            Some((t, p)) => (
                t.trim(),
                p.trim()
                    .parse()
                    .map_err(|_| format!("shadow percent {p:?} is not a whole number"))?,
            ),
            None => (spec.trim(), 100),
        };
        if target.is_empty() {
            return Err(format!("shadow {spec:?} names no target (TARGET:PERCENT)"));
        }
        Ok(ShadowItem {
            target: target.to_owned(),
            percent,
        })
    }
}

impl ShadowItem {
    /// The percent is a share of requests: 1 to 100.
    pub fn check_percent(&self) -> Result<(), ItemError> {
        if (1..=100).contains(&self.percent) {
            return Ok(());
        }
        Err(ItemError::Shadow(format!(
            "percent is {}; it is a share of requests, 1 to 100",
            self.percent
        )))
    }
}

impl fmt::Display for ShadowItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.target, self.percent)
    }
}

/// A compiled shadow: where copies of a tenant's requests go, and what share of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shadow {
    pub target: TargetId,
    /// 1 to 100.
    pub percent: u8,
}

/// The configured targets, in config order. A [`TargetId`] indexes this list, so the hot path
/// never compares target names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Targets {
    names: Arc<[Arc<str>]>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetId(pub u16);

impl TargetId {
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl Targets {
    /// # Panics
    /// If there are more than `u16::MAX` targets (config validation refuses that first).
    pub fn new<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Self {
        let names: Arc<[Arc<str>]> = names.into_iter().map(|n| Arc::from(n.as_ref())).collect();
        assert!(names.len() <= usize::from(u16::MAX), "too many targets");
        Targets { names }
    }

    pub fn id(&self, name: &str) -> Option<TargetId> {
        self.names
            .iter()
            .position(|n| &**n == name)
            .map(|i| TargetId(i as u16))
    }

    pub fn name(&self, id: TargetId) -> &str {
        &self.names[id.index()]
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (TargetId, &str)> {
        self.names
            .iter()
            .enumerate()
            .map(|(i, n)| (TargetId(i as u16), &**n))
    }

    pub fn known_list(&self) -> String {
        self.names.join(", ")
    }
}

/// Where a tenant's traffic goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Placement {
    Pinned(TargetId),
    Split(Arc<Split>),
}

/// A sticky weighted split. Entries are ordered by target name, so every router, whatever the
/// order of targets in its config, maps a bucket to the same target.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Split {
    /// (target, weight in percent); weights sum to 100; zero weights are kept so that a dial
    /// at 0 is visible, and are never picked.
    entries: Box<[(TargetId, u8)]>,
}

impl Split {
    pub fn entries(&self) -> &[(TargetId, u8)] {
        &self.entries
    }

    /// The target that owns `bucket` (0..BUCKETS) at the configured weights: cumulative ranges
    /// in entry order, so raising one of two weights moves only the buckets of the added share.
    pub fn owner(&self, bucket: u32) -> TargetId {
        let mut upper = 0u32;
        for &(target, weight) in self.entries.iter() {
            upper += u32::from(weight) * (BUCKETS / 100);
            if bucket < upper {
                return target;
            }
        }
        // Weights sum to 100, so the loop always returns; keep a total function regardless.
        self.entries[self.entries.len() - 1].0
    }

    /// The sticky pick with failover: the bucket's owner if it is healthy; otherwise a healthy
    /// target chosen by a second stable hash in proportion to the healthy weights, so a bucket
    /// returns to its owner as soon as the owner is healthy again. `None` when no target with
    /// a non-zero weight is healthy.
    pub fn pick(&self, key_hash: u64, healthy: impl Fn(TargetId) -> bool) -> Option<TargetId> {
        let owner = self.owner(bucket_of(key_hash));
        if healthy(owner) {
            return Some(owner);
        }
        let total: u32 = self
            .entries
            .iter()
            .filter(|(t, w)| *w > 0 && healthy(*t))
            .map(|(_, w)| u32::from(*w))
            .sum();
        if total == 0 {
            return None;
        }
        let mut point = (crate::sticky::mix(key_hash ^ FAILOVER_SALT) % u64::from(total)) as u32;
        for &(target, weight) in self.entries.iter() {
            if weight == 0 || !healthy(target) {
                continue;
            }
            if point < u32::from(weight) {
                return Some(target);
            }
            point -= u32::from(weight);
        }
        None
    }
}

const FAILOVER_SALT: u64 = 0x9e37_79b9_7f4a_7c15;

/// The bucket (0..BUCKETS) of a sticky key hash.
pub fn bucket_of(key_hash: u64) -> u32 {
    (key_hash % u64::from(BUCKETS)) as u32
}

/// Who last wrote a flag, when and why. A snapshot keeps one copy of each distinct record, so
/// a million tenants flipped by one batch share one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Audit {
    pub updated_by: Option<Arc<str>>,
    /// Seconds since the Unix epoch.
    pub updated_at: Option<u64>,
    pub reason: Option<Arc<str>>,
}

/// Where a tenant's requests go and where their copies go: what the entries of a snapshot
/// share (one per target, distinct split and shadow in use).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Routing {
    pub placement: Placement,
    pub shadow: Option<Shadow>,
    /// A split tenant's job side, when its flag names one.
    pub jobs: Option<TargetId>,
}

/// A validated flag, as the snapshot holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flag {
    pub placement: Placement,
    pub shadow: Option<Shadow>,
    /// A split tenant's job side, when its flag names one (see [`Flag::job_owner`]).
    pub jobs: Option<TargetId>,
    pub sealed: bool,
    pub version: u64,
    pub audit: Audit,
}

impl Flag {
    pub fn mode(&self) -> Mode {
        match self.placement {
            Placement::Pinned(_) => Mode::Pinned,
            Placement::Split(_) => Mode::Split,
        }
    }

    /// The side that runs the tenant's scheduled jobs: a pinned tenant's target; a split
    /// tenant's `jobs` side, else its heaviest side (ties go to the first in the split's
    /// order, target names sorted, the same on every router and in every store).
    pub fn job_owner(&self) -> TargetId {
        match (&self.placement, self.jobs) {
            (Placement::Pinned(t), _) => *t,
            (Placement::Split(_), Some(side)) => side,
            (Placement::Split(split), None) => {
                let entries = split.entries().iter().map(|&(t, w)| (t, u32::from(w)));
                // A compiled split has at least one entry.
                heaviest(entries).unwrap_or(TargetId(0))
            }
        }
    }

    /// The stored form of this flag, for display and for writers.
    pub fn to_item(&self, tenant: &str, targets: &Targets) -> FlagItem {
        let (target, weights) = match &self.placement {
            Placement::Pinned(t) => (Some(targets.name(*t).to_owned()), None),
            Placement::Split(split) => (
                None,
                Some(
                    split
                        .entries()
                        .iter()
                        .map(|(t, w)| (targets.name(*t).to_owned(), u32::from(*w)))
                        .collect(),
                ),
            ),
        };
        FlagItem {
            tenant: tenant.to_owned(),
            mode: Some(self.mode()),
            target,
            weights,
            shadow: self.shadow.map(|s| ShadowItem {
                target: targets.name(s.target).to_owned(),
                percent: u32::from(s.percent),
            }),
            sealed: self.sealed,
            // The snapshot keeps the placement, not how it was written.
            forced: false,
            version: self.version,
            updated_by: self.audit.updated_by.as_deref().map(str::to_owned),
            updated_at: self.audit.updated_at.map(format_timestamp),
            reason: self.audit.reason.as_deref().map(str::to_owned),
            // Holds live beside the flags in the snapshot (`Snapshot::hold`).
            hold: None,
            jobs: self.jobs.map(|t| targets.name(t).to_owned()),
            evacuation: None,
            ramp: None,
        }
    }
}

/// Shares equal audit strings between the flags of one snapshot build.
#[derive(Default)]
pub struct Interner {
    /// Target names, authors and reasons: text from the store, hashed once per item on every
    /// build, so a fast hash rather than SipHash.
    seen: std::collections::HashSet<Arc<str>, foldhash::fast::RandomState>,
}

impl Interner {
    pub fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(found) = self.seen.get(s) {
            return found.clone();
        }
        let arc: Arc<str> = Arc::from(s);
        self.seen.insert(arc.clone());
        arc
    }
}

impl FlagItem {
    /// `updated_at` in seconds since the Unix epoch, when the item has one.
    pub fn updated_secs(&self) -> Result<Option<u64>, ItemError> {
        let Some(s) = &self.updated_at else {
            return Ok(None);
        };
        parse_timestamp(s)
            .map(Some)
            .map_err(|reason| ItemError::Timestamp {
                value: s.clone(),
                reason,
            })
    }

    /// Whether the item carries any field of a tenant's flag (a record carries none).
    pub fn has_flag_fields(&self) -> bool {
        self.mode.is_some()
            || self.target.is_some()
            || self.weights.is_some()
            || self.shadow.is_some()
            || self.sealed
            || self.forced
            || self.hold.is_some()
            || self.jobs.is_some()
    }

    /// The mode this item asks for, stated or implied by its fields.
    pub fn effective_mode(&self) -> Result<Mode, ItemError> {
        match (self.mode, &self.target, &self.weights) {
            (Some(mode), _, _) => Ok(mode),
            (None, Some(_), None) => Ok(Mode::Pinned),
            (None, None, Some(_)) => Ok(Mode::Split),
            (None, Some(_), Some(_)) => Err(ItemError::Shape(
                "has both `target` and `weights`; a pinned flag has a target, a split flag has weights".into(),
            )),
            (None, None, None) => Err(ItemError::Shape(
                "has neither `target` (pinned) nor `weights` (split)".into(),
            )),
        }
    }

    /// Checks the `jobs` side against the placement, without the configured targets: a split
    /// tenant's job side is one of its weights' targets; a pinned tenant has none of its own.
    pub fn check_jobs(&self) -> Result<(), ItemError> {
        let Some(side) = &self.jobs else {
            return Ok(());
        };
        match (&self.target, &self.weights) {
            (_, Some(weights)) if weights.contains_key(side) => Ok(()),
            (_, Some(weights)) => Err(ItemError::Jobs(format!(
                "side {side:?} is not one of the split's targets ({}); jobs run where the tenant's data is",
                weights.keys().cloned().collect::<Vec<_>>().join(", ")
            ))),
            _ => Err(ItemError::Jobs(format!(
                "a pinned tenant's jobs run on its target; `jobs` ({side:?}) is for split tenants"
            ))),
        }
    }

    /// The side that runs the tenant's scheduled jobs, read from the stored item alone (a job
    /// needs no router config): as [`Flag::job_owner`] decides it. An item a router would
    /// refuse for its shape (a pinned item with weights, weights not summing to 100) is an
    /// error here too: no job runs on a placement no router routes by.
    pub fn job_owner(&self) -> Result<&str, ItemError> {
        self.check_jobs()?;
        match (self.effective_mode()?, &self.target, &self.weights) {
            (Mode::Pinned, Some(target), None) => Ok(target),
            (Mode::Split, None, Some(weights)) => {
                let sum: u32 = weights.values().map(|w| (*w).min(101)).sum();
                if weights.is_empty() || sum != 100 {
                    return Err(ItemError::Weights(format!(
                        "weights sum to {sum}, they must sum to 100"
                    )));
                }
                if let Some(side) = &self.jobs {
                    return Ok(side);
                }
                // In name order: the split's order.
                let entries = weights.iter().map(|(name, &w)| (name.as_str(), w));
                Ok(heaviest(entries).expect("weights are not empty"))
            }
            (Mode::Pinned, _, _) => Err(ItemError::Shape(
                "is pinned, so it has a `target` and no `weights`".into(),
            )),
            (Mode::Split, _, _) => Err(ItemError::Shape(
                "is split, so it has `weights` and no `target`".into(),
            )),
        }
    }

    /// Validates this item against the configured targets and compiles it.
    pub fn compile(&self, targets: &Targets, interner: &mut Interner) -> Result<Flag, ItemError> {
        validate_tenant_id(&self.tenant)?;
        if let Some(hold) = &self.hold {
            hold.check()?;
        }
        let placement = match self.effective_mode()? {
            Mode::Pinned => {
                if self.weights.is_some() {
                    return Err(ItemError::Shape(
                        "is pinned but has `weights`; remove them or use mode split".into(),
                    ));
                }
                let name = self
                    .target
                    .as_deref()
                    .ok_or_else(|| ItemError::Shape("is pinned but has no `target`".into()))?;
                Placement::Pinned(resolve(targets, name)?)
            }
            Mode::Split => {
                if self.target.is_some() {
                    return Err(ItemError::Shape(
                        "is split but has `target`; remove it or use mode pinned".into(),
                    ));
                }
                let weights = self
                    .weights
                    .as_ref()
                    .ok_or_else(|| ItemError::Shape("is split but has no `weights`".into()))?;
                Placement::Split(Arc::new(compile_split(targets, weights)?))
            }
        };
        let updated_at = self.updated_secs()?;
        let shadow = match &self.shadow {
            None => None,
            Some(s) => Some(compile_shadow(targets, s, &placement)?),
        };
        self.check_jobs()?;
        let jobs = match &self.jobs {
            Some(side) => Some(resolve(targets, side)?),
            None => None,
        };
        Ok(Flag {
            placement,
            shadow,
            jobs,
            sealed: self.sealed,
            version: self.version,
            audit: Audit {
                updated_by: self.updated_by.as_deref().map(|s| interner.intern(s)),
                updated_at,
                reason: self.reason.as_deref().map(|s| interner.intern(s)),
            },
        })
    }
}

/// The entry with the largest weight; the first of equals.
/// The entry with the largest weight; the first of equals. The one rule for a split's job
/// side, compiled ([`Flag::job_owner`]) or stored ([`FlagItem::job_owner`]).
fn heaviest<T>(entries: impl Iterator<Item = (T, u32)>) -> Option<T> {
    let mut best: Option<(T, u32)> = None;
    for (t, w) in entries {
        if best.as_ref().is_none_or(|(_, bw)| w > *bw) {
            best = Some((t, w));
        }
    }
    best.map(|(t, _)| t)
}

fn resolve(targets: &Targets, name: &str) -> Result<TargetId, ItemError> {
    targets.id(name).ok_or_else(|| ItemError::UnknownTarget {
        target: name.to_owned(),
        known: targets.known_list(),
    })
}

fn compile_shadow(
    targets: &Targets,
    shadow: &ShadowItem,
    placement: &Placement,
) -> Result<Shadow, ItemError> {
    let target = resolve(targets, &shadow.target)?;
    shadow.check_percent()?;
    if *placement == Placement::Pinned(target) {
        return Err(ItemError::Shadow(format!(
            "the tenant is pinned to {:?} already; a shadow copies requests to another target",
            shadow.target
        )));
    }
    Ok(Shadow {
        target,
        percent: shadow.percent as u8,
    })
}

fn compile_split(targets: &Targets, weights: &BTreeMap<String, u32>) -> Result<Split, ItemError> {
    if weights.is_empty() {
        return Err(ItemError::Weights("`weights` is empty".into()));
    }
    let mut entries = Vec::with_capacity(weights.len());
    let mut sum = 0u32;
    // BTreeMap iterates in name order: the order every router uses for the cumulative ranges.
    for (name, &weight) in weights {
        let id = resolve(targets, name)?;
        if weight > 100 {
            return Err(ItemError::Weights(format!(
                "weight of {name:?} is {weight}; weights are percentages (0 to 100)"
            )));
        }
        sum += weight;
        entries.push((id, weight as u8));
    }
    if sum != 100 {
        return Err(ItemError::Weights(format!(
            "weights sum to {sum}, they must sum to 100"
        )));
    }
    Ok(Split {
        entries: entries.into_boxed_slice(),
    })
}

/// Formats seconds since the epoch as RFC 3339 UTC (`2026-11-22T05:34:17Z`).
pub fn format_timestamp(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// Parses an RFC 3339 timestamp into seconds since the epoch.
pub fn parse_timestamp(s: &str) -> Result<u64, String> {
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| e.to_string())?;
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| "it is before 1970".to_owned())
}

/// Now, in seconds since the epoch.
/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Reads a flag item from JSON; an error names the field it is about (`version: invalid
/// type: string "1", expected u64`), so an operator knows what to fix in the item.
pub fn parse_flag_item(value: serde_json::Value) -> Result<FlagItem, String> {
    serde_path_to_error::deserialize::<_, FlagItem>(value).map_err(|e| {
        let path = e.path().to_string();
        match path.as_str() {
            "." | "" => e.into_inner().to_string(),
            _ => format!("{path}: {}", e.into_inner()),
        }
    })
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets() -> Targets {
        Targets::new(["legacy", "new", "use2"])
    }

    fn item(json: &str) -> FlagItem {
        serde_json::from_str(json).unwrap()
    }

    fn compile(json: &str) -> Result<Flag, ItemError> {
        item(json).compile(&targets(), &mut Interner::default())
    }

    #[test]
    fn mode_follows_from_fields() {
        let f = compile(r#"{"tenant":"acme","target":"new"}"#).unwrap();
        assert_eq!(f.placement, Placement::Pinned(TargetId(1)));
        let f = compile(r#"{"tenant":"acme","weights":{"legacy":90,"new":10}}"#).unwrap();
        assert_eq!(f.mode(), Mode::Split);
    }

    #[test]
    fn rejects_what_a_router_cannot_route() {
        let cases = [
            (
                r#"{"tenant":"acme","target":"nwe"}"#,
                "unknown target \"nwe\"",
            ),
            (
                r#"{"tenant":"acme","weights":{"legacy":90,"new":20}}"#,
                "sum to 110",
            ),
            (r#"{"tenant":"acme","weights":{}}"#, "empty"),
            (
                r#"{"tenant":"acme","target":"new","weights":{"new":100}}"#,
                "both",
            ),
            (r#"{"tenant":"acme"}"#, "neither"),
            (
                r#"{"tenant":"acme","mode":"split","target":"new"}"#,
                "has `target`",
            ),
            (r#"{"tenant":"acme","mode":"split"}"#, "no `weights`"),
            (r#"{"tenant":"ac me","target":"new"}"#, "' ' is not allowed"),
            (r#"{"tenant":"","target":"new"}"#, "empty"),
            (
                r#"{"tenant":"acme","target":"new","updated_at":"yesterday"}"#,
                "updated_at",
            ),
            (
                r#"{"tenant":"acme","target":"legacy","shadow":{"target":"nwe","percent":10}}"#,
                "unknown target \"nwe\"",
            ),
            (
                r#"{"tenant":"acme","target":"legacy","shadow":{"target":"new","percent":0}}"#,
                "percent is 0",
            ),
            (
                r#"{"tenant":"acme","target":"legacy","shadow":{"target":"new","percent":101}}"#,
                "percent is 101",
            ),
            (
                r#"{"tenant":"acme","target":"new","shadow":{"target":"new","percent":10}}"#,
                "pinned to \"new\" already",
            ),
        ];
        for (json, want) in cases {
            let err = compile(json).unwrap_err().to_string();
            assert!(
                err.contains(want),
                "{json}: {err:?} should mention {want:?}"
            );
        }
    }

    #[test]
    fn a_field_of_the_wrong_type_is_named() {
        for (json, want) in [
            (
                r#"{"tenant":"a","target":"new","version":"3"}"#,
                "version: invalid type: string \"3\", expected u64",
            ),
            (
                r#"{"tenant":"a","weights":{"legacy":"x"}}"#,
                "weights.legacy: invalid type: string \"x\"",
            ),
            (r#"{"tenant":"a","sealed":"yes"}"#, "sealed: invalid type"),
        ] {
            let value = serde_json::from_str(json).unwrap();
            let err = parse_flag_item(value).unwrap_err();
            assert!(
                err.starts_with(want),
                "{json}: {err:?} should start {want:?}"
            );
        }
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let err = serde_json::from_str::<FlagItem>(r#"{"tenant":"a","taget":"new"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("taget"), "{err}");
    }

    #[test]
    fn round_trips_through_the_stored_form() {
        let json = r#"{"tenant":"acme","mode":"split","weights":{"legacy":70,"new":30},"shadow":{"target":"use2","percent":5},"sealed":true,"version":4,"updated_by":"ops","updated_at":"2026-11-22T05:34:17Z","reason":"dial"}"#;
        let flag = compile(json).unwrap();
        assert_eq!(flag.to_item("acme", &targets()), item(json));
    }

    #[test]
    fn shadow_specs_parse_with_a_percent_or_whole() {
        let s = ShadowItem::parse("new:10").unwrap();
        assert_eq!((s.target.as_str(), s.percent), ("new", 10));
        assert_eq!(ShadowItem::parse("new").unwrap().percent, 100);
        assert!(ShadowItem::parse("new:ten").is_err());
        assert!(ShadowItem::parse(":10").is_err());
        let f =
            compile(r#"{"tenant":"*","target":"legacy","shadow":{"target":"new","percent":10}}"#)
                .unwrap();
        assert_eq!(
            f.shadow,
            Some(Shadow {
                target: TargetId(1),
                percent: 10
            })
        );
    }

    #[test]
    fn split_owner_follows_cumulative_ranges_in_name_order() {
        let f = compile(r#"{"tenant":"a","weights":{"new":10,"legacy":90}}"#).unwrap();
        let Placement::Split(split) = f.placement else {
            panic!()
        };
        // legacy sorts first: buckets 0..9000 are legacy's, 9000..10000 new's.
        assert_eq!(split.owner(0), TargetId(0));
        assert_eq!(split.owner(8999), TargetId(0));
        assert_eq!(split.owner(9000), TargetId(1));
        assert_eq!(split.owner(9999), TargetId(1));
    }
}
