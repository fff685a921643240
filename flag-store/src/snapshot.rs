//! The snapshot: every tenant's validated flag at one store version, immutable once built.
//! Routers hold the current one behind one `ArcSwap` and replace it whole on reload, so a
//! reader never sees half a change. Building a snapshot is where bad items are set aside:
//! each is rejected on its own, and a tenant whose new item is bad keeps its last good flag
//! (sending it to the default could split its writes between two copies of its data).
//!
//! The table is laid out for a million tenants. Each tenant is one 24-byte entry without a
//! pointer of its own, held inline in an open-addressing table; the tenant ids sit end to end
//! in one string; placements (each target, each distinct split) and audit records (one per
//! batch, not per tenant) are small shared lists the entries index. The tenants are spread
//! over `SHARDS` such tables by the hash of their id, and a snapshot shares every shard a
//! delta does not change with the snapshot before it. A lookup reads the shard's header, its
//! control bytes, the entry and the tenant id: nothing else, however many tenants.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::SystemTime;

use hashbrown::HashTable;

use crate::error::ItemError;
use crate::evacuation::Evacuation;
use crate::identity::StoreIdentity;
use crate::model::{
    Audit, DEFAULT_TENANT, Flag, FlagItem, HoldItem, Interner, Placement, Routing, Shadow, Targets,
};
use crate::ramp::Ramp;

type Hasher = foldhash::fast::RandomState;

/// One item the store holds that could not be applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// The tenant, when the item got far enough to name one.
    pub tenant: Option<String>,
    /// Where the item is in its store (`items[3]`, a table key).
    pub location: String,
    pub error: ItemError,
    /// True when the tenant keeps its flag from the previous snapshot.
    pub kept_previous: bool,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.location)?;
        if let Some(t) = &self.tenant {
            write!(f, " (tenant {t:?})")?;
        }
        write!(f, ": {}", self.error)?;
        if self.kept_previous {
            write!(f, "; the tenant keeps its last good flag")?;
        }
        Ok(())
    }
}

/// What a source read: the store's version and its items, each parsed or refused.
#[derive(Debug, Default)]
pub struct Load {
    /// The store's write counter: every write bumps it.
    pub version: u64,
    pub items: Vec<LoadedItem>,
    /// The store's identity, when it has one (see [`crate::identity`]).
    pub identity: Option<StoreIdentity>,
    /// Each tenant the audit trail last recorded as sealed, its flag as that record left it
    /// (read on a store's full load, where it keeps an audit trail). A snapshot built with
    /// no previous one judges the items against these, as a running router judges them
    /// against its last snapshot: a table edit that moved a sealed tenant without the force
    /// record is refused by a router that starts after it too.
    pub seals: Vec<FlagItem>,
}

#[derive(Debug)]
pub struct LoadedItem {
    pub location: String,
    pub item: Result<FlagItem, (Option<String>, ItemError)>,
}

/// Where a lookup found the tenant's flag.
#[derive(Clone, Copy, Debug)]
pub enum Found<'a> {
    /// The tenant's own item.
    Tenant(FlagRef<'a>),
    /// The default item (`*`).
    Default(FlagRef<'a>),
    /// The tenant's item was rejected and it has no last good flag: where its data is is not
    /// known, so it goes nowhere (never to a default).
    Rejected(&'a Rejected),
    /// Neither: the router's configured default target applies.
    Nothing,
}

/// A flag in a snapshot's table, read in place.
#[derive(Clone, Copy)]
pub struct FlagRef<'a> {
    routings: &'a [Routing],
    audits: &'a [Audit],
    entry: &'a Entry,
}

impl<'a> FlagRef<'a> {
    #[inline]
    pub fn placement(&self) -> &'a Placement {
        &self.routings[self.entry.place as usize].placement
    }

    #[inline]
    pub fn shadow(&self) -> Option<Shadow> {
        self.routings[self.entry.place as usize].shadow
    }

    pub fn sealed(&self) -> bool {
        self.entry.sealed
    }

    /// A split tenant's job side, when its flag names one.
    pub fn jobs(&self) -> Option<crate::TargetId> {
        self.routings[self.entry.place as usize].jobs
    }

    pub fn version(&self) -> u64 {
        self.entry.version
    }

    /// The flag as a value of its own, for display and for writers.
    pub fn to_flag(&self) -> Flag {
        Flag {
            placement: self.placement().clone(),
            shadow: self.shadow(),
            jobs: self.jobs(),
            sealed: self.entry.sealed,
            version: self.entry.version,
            audit: self.audits[self.entry.audit as usize].clone(),
        }
    }
}

impl std::fmt::Debug for FlagRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.to_flag().fmt(f)
    }
}

/// One tenant's flag in the table.
#[derive(Clone, Copy, Debug)]
struct Entry {
    version: u64,
    /// The tenant id is `ids[key_at..key_at + key_len]` in the entry's shard.
    key_at: u32,
    /// Index into the table's `routings`.
    place: u32,
    /// Index into the shard's `audits`.
    audit: u32,
    key_len: u8,
    sealed: bool,
}

/// How many shards a table's tenants are spread over, by the hash of their id. A delta copies
/// only the shards its items fall in: a one-item change to a million tenants copies about four
/// thousand entries (tens of microseconds), not the whole table.
const SHARDS: usize = 256;

/// A shard's bits of the hash: above those the shard's own table uses to place an entry (the
/// low bits) and below its control byte (the top seven).
fn shard_of(hash: u64) -> usize {
    (hash >> 32) as usize % SHARDS
}

/// The tenants whose id hashes to one shard, with their ids and audit records.
#[derive(Clone, Default)]
struct Shard {
    entries: HashTable<Entry>,
    ids: String,
    audits: Vec<Audit>,
    /// `audits.len()` when the shard was built or last compacted. Deltas only add records;
    /// once they are far past this, the records no entry uses any more are dropped.
    audits_baseline: usize,
}

impl Shard {
    fn with_capacity(tenants: usize, id_bytes: usize) -> Self {
        Shard {
            entries: HashTable::with_capacity(tenants),
            ids: String::with_capacity(id_bytes),
            ..Shard::default()
        }
    }

    fn find(&self, hash: u64, tenant: &str) -> Option<&Entry> {
        self.entries.find(hash, |e| id_of(&self.ids, e) == tenant)
    }

    /// Drops audit records no entry uses, once deltas have added many since the last build.
    fn compact_audits(&mut self) {
        if self.audits.len() <= 2 * self.audits_baseline + 64 {
            return;
        }
        let mut remap = vec![u32::MAX; self.audits.len()];
        let mut kept = Vec::new();
        for e in self.entries.iter_mut() {
            let old = e.audit as usize;
            if remap[old] == u32::MAX {
                remap[old] = kept.len() as u32;
                kept.push(self.audits[old].clone());
            }
            e.audit = remap[old];
        }
        self.audits = kept;
        self.audits_baseline = self.audits.len();
    }
}

/// The default item (`*`), outside the shards so every miss finds it without a probe.
#[derive(Clone)]
struct DefaultFlag {
    entry: Entry,
    audit: Audit,
}

/// Shard `at`, for a change: copied first if another snapshot shares it. A copy is the longest
/// step of a delta, so the flag-load thread may give way after it.
fn shard_mut(shards: &mut [Arc<Shard>], at: usize) -> &mut Shard {
    let shared = Arc::get_mut(&mut shards[at]).is_none();
    let shard = Arc::make_mut(&mut shards[at]);
    if shared {
        crate::background::give_way();
    }
    shard
}

/// The tenants' flags, in shards that snapshots share until a delta changes one.
#[derive(Clone)]
struct Table {
    shards: Box<[Arc<Shard>]>,
    default: Option<Arc<DefaultFlag>>,
    /// Each target, distinct split and shadow in use, shared by every shard.
    routings: Vec<Routing>,
    hasher: Hasher,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sum = |part: fn(&Shard) -> usize| self.shards.iter().map(|s| part(s)).sum::<usize>();
        f.debug_struct("Table")
            .field("tenants", &self.len())
            .field("default", &self.default.is_some())
            .field("id_bytes", &sum(|s| s.ids.len()))
            .field("routings", &self.routings.len())
            .field("audits", &sum(|s| s.audits.len()))
            .finish()
    }
}

fn id_of<'a>(ids: &'a str, entry: &Entry) -> &'a str {
    &ids[entry.key_at as usize..entry.key_at as usize + usize::from(entry.key_len)]
}

/// The routings and audit records a table already holds, so equal ones are shared.
struct Interning {
    routings: HashMap<Routing, u32, Hasher>,
    /// Each shard's audit records, indexed when the shard is first changed.
    audits: Vec<Option<HashMap<Audit, u32, Hasher>>>,
}

impl Interning {
    fn of(table: &Table) -> Self {
        Interning {
            routings: (table.routings.iter().cloned().enumerate())
                .map(|(i, p)| (p, i as u32))
                .collect(),
            audits: vec![None; SHARDS],
        }
    }

    fn shard_audits(&mut self, shard: usize, list: &[Audit]) -> &mut HashMap<Audit, u32, Hasher> {
        self.audits[shard].get_or_insert_with(|| {
            (list.iter().cloned().enumerate())
                .map(|(i, a)| (a, i as u32))
                .collect()
        })
    }

    /// The shards a delta has changed.
    fn touched(&self) -> impl Iterator<Item = usize> + '_ {
        (self.audits.iter().enumerate()).filter_map(|(i, a)| a.is_some().then_some(i))
    }
}

/// The index of `value` in `list`, adding it if it is new.
fn intern<T: Clone + Eq + std::hash::Hash>(
    seen: &mut HashMap<T, u32, Hasher>,
    list: &mut Vec<T>,
    value: T,
) -> Result<u32, ItemError> {
    if let Some(&i) = seen.get(&value) {
        return Ok(i);
    }
    let i = u32::try_from(list.len()).map_err(|_| ItemError::TableFull)?;
    list.push(value.clone());
    seen.insert(value, i);
    Ok(i)
}

impl Table {
    fn with_capacity(tenants: usize, id_bytes: usize) -> Self {
        Table::with_hasher(tenants, id_bytes, Hasher::default())
    }

    /// A table that places each tenant in the same shard as the table `hasher` comes from, so
    /// the two can be compared shard by shard, each shard small enough to stay in cache.
    fn with_hasher(tenants: usize, id_bytes: usize, hasher: Hasher) -> Self {
        // Shards fill unevenly: an eighth more than the mean spares most of them a regrowth.
        let per_shard = |n: usize| n / SHARDS + n / SHARDS / 8;
        Table {
            shards: (0..SHARDS)
                .map(|_| {
                    Arc::new(Shard::with_capacity(
                        per_shard(tenants),
                        per_shard(id_bytes),
                    ))
                })
                .collect(),
            default: None,
            routings: Vec::new(),
            hasher,
        }
    }

    #[inline]
    fn get(&self, tenant: &str) -> Option<FlagRef<'_>> {
        if tenant == DEFAULT_TENANT {
            return self.default_ref();
        }
        let hash = self.hasher.hash_one(tenant);
        let shard = &self.shards[shard_of(hash)];
        Some(self.flag_ref(&shard.audits, shard.find(hash, tenant)?))
    }

    #[inline]
    fn flag_ref<'a>(&'a self, audits: &'a [Audit], entry: &'a Entry) -> FlagRef<'a> {
        FlagRef {
            routings: &self.routings,
            audits,
            entry,
        }
    }

    #[inline]
    fn default_ref(&self) -> Option<FlagRef<'_>> {
        (self.default.as_deref()).map(|d| self.flag_ref(std::slice::from_ref(&d.audit), &d.entry))
    }

    /// Sets a tenant's flag; true when the tenant already had one.
    fn insert(
        &mut self,
        tenant: &str,
        flag: Flag,
        interning: &mut Interning,
    ) -> Result<bool, ItemError> {
        let routing = Routing {
            placement: flag.placement,
            shadow: flag.shadow,
            jobs: flag.jobs,
        };
        let place = intern(&mut interning.routings, &mut self.routings, routing)?;
        let new_entry = |key_at, audit| Entry {
            version: flag.version,
            key_at,
            place,
            audit,
            // Tenant ids are validated to 128 bytes at most.
            key_len: u8::try_from(tenant.len()).unwrap_or(u8::MAX),
            sealed: flag.sealed,
        };
        if tenant == DEFAULT_TENANT {
            let had = self.default.is_some();
            let entry = new_entry(0, 0);
            self.default = Some(Arc::new(DefaultFlag {
                entry,
                audit: flag.audit,
            }));
            return Ok(had);
        }
        let hash = self.hasher.hash_one(tenant);
        let hasher = &self.hasher;
        let at = shard_of(hash);
        let shard = shard_mut(&mut self.shards, at);
        let seen = interning.shard_audits(at, &shard.audits);
        let audit = intern(seen, &mut shard.audits, flag.audit)?;
        let Shard { entries, ids, .. } = shard;
        if let Some(e) = entries.find_mut(hash, |e| id_of(ids, e) == tenant) {
            e.place = place;
            e.audit = audit;
            e.version = flag.version;
            e.sealed = flag.sealed;
            return Ok(true);
        }
        let key_at = u32::try_from(ids.len())
            .ok()
            .filter(|at| at.checked_add(tenant.len() as u32).is_some())
            .ok_or(ItemError::TableFull)?;
        ids.push_str(tenant);
        let entry = new_entry(key_at, audit);
        entries.insert_unique(hash, entry, |e| hasher.hash_one(id_of(ids, e)));
        Ok(false)
    }

    /// The tenants sealed in `previous` whose flag here moves or unseals them without a force
    /// record, or that have no flag here at all, each with why. Both tables must share a
    /// hasher: each shard is compared with its counterpart, so the lookups stay in cache (a
    /// million tenants in random order would cost a cache miss each).
    fn breaking_seals(
        &self,
        previous: &Table,
        forced: &HashSet<String>,
        targets: &Targets,
    ) -> Vec<(String, ItemError)> {
        let sealed_on =
            |place: u32| sealed_on(&previous.routings[place as usize].placement, targets);
        let mut breaking = Vec::new();
        for (shard, before) in self.shards.iter().zip(&previous.shards) {
            for old in before.entries.iter().filter(|e| e.sealed) {
                let tenant = id_of(&before.ids, old);
                if shard.find(self.hasher.hash_one(tenant), tenant).is_none() {
                    let target = sealed_on(old.place);
                    breaking.push((tenant.to_owned(), ItemError::SealedRemoved { target }));
                }
            }
            for entry in shard.entries.iter() {
                let tenant = id_of(&shard.ids, entry);
                let Some(old) = before.find(self.hasher.hash_one(tenant), tenant) else {
                    continue;
                };
                if !old.sealed {
                    continue; // nothing to break: spares the comparison below
                }
                // A shadow is not a move: its copies' answers are thrown away.
                let moved = previous.routings[old.place as usize].placement
                    != self.routings[entry.place as usize].placement;
                if breaks_seal(
                    (old.sealed, old.version),
                    moved,
                    (entry.sealed, entry.version),
                    forced.contains(tenant),
                ) {
                    let target = sealed_on(old.place);
                    breaking.push((tenant.to_owned(), ItemError::Sealed { target }));
                }
            }
            crate::background::give_way();
        }
        breaking
    }

    fn remove(&mut self, tenant: &str) {
        if tenant == DEFAULT_TENANT {
            self.default = None;
            return;
        }
        let hash = self.hasher.hash_one(tenant);
        let shard = shard_mut(&mut self.shards, shard_of(hash));
        if let Ok(found) = (shard.entries).find_entry(hash, |e| id_of(&shard.ids, e) == tenant) {
            found.remove();
        }
    }

    /// Sizes each shard to its tenants, once a build has set them all.
    fn shrink_to_fit(&mut self) {
        let hasher = &self.hasher;
        for shard in &mut self.shards {
            let shard = Arc::make_mut(shard);
            let Shard { entries, ids, .. } = shard;
            entries.shrink_to_fit(|e| hasher.hash_one(id_of(ids, e)));
            ids.shrink_to_fit();
            shard.audits_baseline = shard.audits.len();
            crate::background::give_way();
        }
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.entries.len()).sum()
    }

    fn iter(&self) -> impl Iterator<Item = (&str, FlagRef<'_>)> {
        self.shards.iter().flat_map(move |shard| {
            (shard.entries.iter()).map(move |entry| {
                (
                    id_of(&shard.ids, entry),
                    self.flag_ref(&shard.audits, entry),
                )
            })
        })
    }
}

#[derive(Debug)]
pub struct Snapshot {
    table: Table,
    targets: Targets,
    /// The store's version this snapshot was built from.
    pub version: u64,
    /// The identity of the store it was built from, when it has one.
    pub identity: Option<StoreIdentity>,
    /// Counts snapshots built by this process (1 is the first load).
    pub generation: u64,
    pub built_at: SystemTime,
    pub rejected: Vec<Rejected>,
    /// Tenants with a rejected item and no flag, by their index in `rejected`.
    unflagged: HashMap<String, usize>,
    /// Tenants under a hold (a cutover in progress), apart from the flags: empty but for the
    /// seconds of a move, so the hot path pays one check for them.
    holds: HashMap<Box<str>, Arc<HoldItem>>,
    /// The sides evacuated ([`crate::evacuation`]): empty but while a side is evacuated, so
    /// the pick pays one check for them.
    evacuations: Vec<Evacuation>,
    /// The ramps the store holds ([`crate::ramp`]), and the tenants of the active ones by
    /// ramp: empty but while a ramp runs, so the hot path pays one check for them.
    ramps: Vec<Arc<Ramp>>,
    ramped: HashMap<Box<str>, u32>,
}

impl Snapshot {
    /// An empty snapshot: no tenant has a flag; everything goes to the configured default.
    pub fn empty(targets: Targets) -> Self {
        Snapshot {
            table: Table::with_capacity(0, 0),
            targets,
            version: 0,
            identity: None,
            generation: 0,
            built_at: SystemTime::now(),
            rejected: Vec::new(),
            unflagged: HashMap::new(),
            holds: HashMap::new(),
            evacuations: Vec::new(),
            ramps: Vec::new(),
            ramped: HashMap::new(),
        }
    }

    /// Builds the next snapshot from a load. `previous` supplies the last good flag of tenants
    /// whose item is now rejected. With none, the load's audited seals stand in for it.
    pub fn build(mut load: Load, targets: &Targets, previous: Option<&Snapshot>) -> Snapshot {
        let generation = previous.map_or(1, |p| p.generation + 1);
        let audited;
        let previous = match previous {
            None if !load.seals.is_empty() => {
                let seals = std::mem::take(&mut load.seals).into_iter();
                let items = (seals.enumerate())
                    .map(|(i, item)| LoadedItem {
                        location: format!("audited seal {i}"),
                        item: Ok(item),
                    })
                    .collect();
                let sealed = Load {
                    version: load.version,
                    items,
                    identity: None,
                    seals: Vec::new(),
                };
                audited = Snapshot::build(sealed, targets, None);
                Some(&audited)
            }
            previous => previous,
        };
        let mut interner = Interner::default();
        let id_bytes = (load.items.iter())
            .filter_map(|l| l.item.as_ref().ok().map(|i| i.tenant.len()))
            .sum();
        let hasher = previous.map_or_else(Hasher::default, |p| p.table.hasher.clone());
        let mut table = Table::with_hasher(load.items.len(), id_bytes, hasher);
        let mut interning = Interning::of(&table);
        let mut rejected = Vec::new();
        let mut duplicates: Vec<String> = Vec::new();
        // Tenants whose item carries the force record (rare).
        let mut forced: HashSet<String> = HashSet::new();

        let mut holds = HashMap::new();
        let mut evacuations = Vec::new();
        let mut ramps = Vec::new();
        for (i, LoadedItem { location, item }) in load.items.into_iter().enumerate() {
            crate::background::give_way_at(i);
            if is_ramp(&item) {
                let kept = previous.map_or(&[][..], |p| &p.ramps[..]);
                rejected.extend(apply_ramp(&mut ramps, item, location, targets, kept));
                continue;
            }
            if is_record(&item) {
                let kept = previous.map_or(&[][..], |p| &p.evacuations[..]);
                if let Some(refused) = apply_record(
                    &mut evacuations,
                    item,
                    location,
                    targets,
                    &mut interner,
                    kept,
                ) {
                    rejected.push(refused);
                }
                continue;
            }
            if let Ok(item) = &item
                && item.forced
            {
                forced.insert(item.tenant.clone());
            }
            let hold = hold_of(&item);
            // The seals are checked after the loop, shard by shard (`breaking_seals`).
            match compile_into(
                &mut table,
                item,
                targets,
                &mut interner,
                &mut interning,
                None,
            ) {
                Ok((tenant, true)) => duplicates.push(tenant),
                Ok((tenant, false)) => {
                    if let Some(hold) = hold {
                        holds.insert(tenant.into_boxed_str(), hold);
                    }
                }
                Err((tenant, error)) => rejected.push(Rejected {
                    tenant,
                    location,
                    error,
                    kept_previous: false,
                }),
            }
        }
        for tenant in &duplicates {
            holds.remove(tenant.as_str());
        }
        for tenant in duplicates {
            table.remove(&tenant);
            rejected.push(Rejected {
                tenant: Some(tenant.clone()),
                location: "items".into(),
                error: ItemError::Duplicate(tenant),
                kept_previous: false,
            });
        }
        if let Some(prev) = previous {
            for (tenant, error) in table.breaking_seals(&prev.table, &forced, targets) {
                table.remove(&tenant);
                rejected.push(Rejected {
                    tenant: Some(tenant),
                    location: "items".into(),
                    error,
                    kept_previous: false,
                });
            }
        }
        // A tenant whose item is bad keeps its previous flag, unless it now has a good one.
        for r in &mut rejected {
            let (Some(tenant), Some(prev)) = (&r.tenant, previous) else {
                continue;
            };
            if table.get(tenant).is_some() {
                continue;
            }
            if let Some(flag) = prev.get(tenant) {
                r.kept_previous = table.insert(tenant, flag, &mut interning).is_ok();
            }
        }
        table.shrink_to_fit();
        holds.retain(|tenant, _| table.get(tenant).is_some());
        Snapshot {
            unflagged: unflagged(&table, &rejected),
            table,
            targets: targets.clone(),
            version: load.version,
            identity: load.identity,
            generation,
            built_at: SystemTime::now(),
            rejected,
            holds,
            evacuations,
            ramped: ramped(&ramps),
            ramps,
        }
    }

    /// The next snapshot after a delta: `load` holds only the changed items, at the store's
    /// new version. Same rules as a full build: a bad item is rejected and its tenant keeps its
    /// flag. Costs a copy of each shard the delta changes (no I/O, no allocation per tenant);
    /// the other shards are shared with `self`.
    pub fn apply_delta(&self, load: Load) -> Snapshot {
        let mut interner = Interner::default();
        let mut table = self.table.clone();
        let mut interning = Interning::of(&table);
        let changed: std::collections::HashSet<String> = load
            .items
            .iter()
            .filter_map(|l| match &l.item {
                Ok(item) => Some(item.tenant.clone()),
                Err((tenant, _)) => tenant.clone(),
            })
            .collect();
        // Earlier rejections of tenants this delta rewrites are superseded.
        let mut rejected: Vec<Rejected> = self
            .rejected
            .iter()
            .filter(|r| r.tenant.as_ref().is_none_or(|t| !changed.contains(t)))
            .cloned()
            .collect();
        let mut holds = self.holds.clone();
        let mut evacuations = self.evacuations.clone();
        let mut ramps = self.ramps.clone();
        for (i, LoadedItem { location, item }) in load.items.into_iter().enumerate() {
            crate::background::give_way_at(i);
            if is_ramp(&item) {
                let kept = ramps.clone();
                rejected.extend(apply_ramp(&mut ramps, item, location, &self.targets, &kept));
                continue;
            }
            if is_record(&item) {
                let kept = evacuations.clone();
                if let Some(refused) = apply_record(
                    &mut evacuations,
                    item,
                    location,
                    &self.targets,
                    &mut interner,
                    &kept,
                ) {
                    rejected.push(refused);
                }
                continue;
            }
            let hold = hold_of(&item);
            if !holds.is_empty()
                && let Some(tenant) = tenant_of(&item)
            {
                holds.remove(tenant);
            }
            let compiled = compile_into(
                &mut table,
                item,
                &self.targets,
                &mut interner,
                &mut interning,
                Some(&self.table),
            );
            if let (Ok((tenant, _)), Some(hold)) = (&compiled, hold) {
                holds.insert(tenant.as_str().into(), hold);
            }
            if let Err((tenant, error)) = compiled {
                let kept_previous = tenant.as_deref().is_some_and(|t| table.get(t).is_some());
                rejected.push(Rejected {
                    tenant,
                    location,
                    error,
                    kept_previous,
                });
            }
        }
        for at in interning.touched() {
            Arc::make_mut(&mut table.shards[at]).compact_audits();
        }
        Snapshot {
            unflagged: unflagged(&table, &rejected),
            table,
            targets: self.targets.clone(),
            version: load.version,
            identity: load.identity.or_else(|| self.identity.clone()),
            generation: self.generation + 1,
            built_at: SystemTime::now(),
            rejected,
            holds,
            evacuations,
            ramped: ramped(&ramps),
            ramps,
        }
    }

    /// Every flag as stored items (the default flag first, the evacuation and ramp records
    /// last), for a local copy.
    pub fn to_items(&self) -> Vec<FlagItem> {
        let default = self
            .default_flag()
            .map(|f| f.to_item(DEFAULT_TENANT, &self.targets));
        default
            .into_iter()
            .chain(self.iter().enumerate().map(|(i, (t, f))| {
                crate::background::give_way_at(i);
                let mut item = f.to_flag().to_item(t, &self.targets);
                if !self.holds.is_empty() {
                    item.hold = self.holds.get(t).map(|h| HoldItem::clone(h));
                }
                item
            }))
            .chain(self.evacuations.iter().map(|e| e.to_item(&self.targets)))
            .chain(self.ramps.iter().map(|r| r.to_item()))
            .collect()
    }

    /// The tenant's flag, or the default item, or nothing.
    #[inline]
    pub fn lookup(&self, tenant: Option<&str>) -> Found<'_> {
        let table = &self.table;
        if let Some(t) = tenant.filter(|t| *t != DEFAULT_TENANT) {
            if let Some(flag) = table.get(t) {
                return Found::Tenant(flag);
            }
            if !self.unflagged.is_empty()
                && let Some(&at) = self.unflagged.get(t)
            {
                return Found::Rejected(&self.rejected[at]);
            }
        }
        match table.default_ref() {
            Some(flag) => Found::Default(flag),
            None => Found::Nothing,
        }
    }

    /// Whether any tenant is under a hold: the hot path's one check while none is.
    #[inline]
    pub fn has_holds(&self) -> bool {
        !self.holds.is_empty()
    }

    /// Whether any side is evacuated: the pick's one check while none is.
    #[inline]
    pub fn has_evacuations(&self) -> bool {
        !self.evacuations.is_empty()
    }

    /// The sides evacuated, each once.
    pub fn evacuations(&self) -> &[Evacuation] {
        &self.evacuations
    }

    /// The evacuation of `side`, when it is evacuated.
    #[inline]
    pub fn evacuation(&self, side: crate::TargetId) -> Option<&Evacuation> {
        self.evacuations.iter().find(|e| e.side == side)
    }

    /// Whether a ramp is active: the hot path's one check while none is.
    #[inline]
    pub fn has_ramps(&self) -> bool {
        !self.ramped.is_empty()
    }

    /// The active ramp a tenant is in.
    pub fn ramp_of(&self, tenant: &str) -> Option<&Arc<Ramp>> {
        let at = *self.ramped.get(tenant)?;
        self.ramps.get(at as usize)
    }

    /// Every ramp the store holds, active or ended.
    pub fn ramps(&self) -> &[Arc<Ramp>] {
        &self.ramps
    }

    /// The hold on a tenant, as written (its deadline is the caller's to judge).
    pub fn hold(&self, tenant: &str) -> Option<&Arc<HoldItem>> {
        self.holds.get(tenant)
    }

    /// Every held tenant and its hold.
    pub fn holds(&self) -> impl Iterator<Item = (&str, &Arc<HoldItem>)> {
        self.holds.iter().map(|(t, h)| (&**t, h))
    }

    /// The tenant's own flag (not the default; `*` is the default's own).
    pub fn get(&self, tenant: &str) -> Option<Flag> {
        self.table.get(tenant).map(|f| f.to_flag())
    }

    pub fn default_flag(&self) -> Option<Flag> {
        self.get(DEFAULT_TENANT)
    }

    pub fn targets(&self) -> &Targets {
        &self.targets
    }

    /// Number of tenants with an item of their own.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }

    /// Every tenant's flag (not the default), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, FlagRef<'_>)> {
        self.table.iter()
    }

    /// The tenants (the default `*` included) whose placement or seal differs between
    /// `previous` and this snapshot, leaving out `except`: what routes differently.
    pub fn drift_from(&self, previous: &Snapshot, except: &HashSet<String>) -> Vec<Drift> {
        let words = |s: &Snapshot, f: Option<FlagRef<'_>>| match f {
            None => "no flag".to_owned(),
            Some(f) => {
                let seal = if f.sealed() { ", sealed" } else { "" };
                match f.placement() {
                    Placement::Pinned(t) => format!("{}{seal}", s.targets.name(*t)),
                    Placement::Split(split) => {
                        let parts: Vec<String> = (split.entries().iter())
                            .map(|(t, w)| format!("{}={w}", s.targets.name(*t)))
                            .collect();
                        format!("split {}{seal}", parts.join(","))
                    }
                }
            }
        };
        let differs = |a: Option<FlagRef<'_>>, b: Option<FlagRef<'_>>| match (a, b) {
            (Some(a), Some(b)) => a.placement() != b.placement() || a.sealed() != b.sealed(),
            (a, b) => a.is_some() != b.is_some(),
        };
        let mut drift = Vec::new();
        for (i, (tenant, now)) in self.table.iter().enumerate() {
            crate::background::give_way_at(i);
            let before = previous.table.get(tenant);
            if !except.contains(tenant) && differs(before, Some(now)) {
                drift.push(Drift {
                    tenant: tenant.to_owned(),
                    before: words(previous, before),
                    after: words(self, Some(now)),
                });
            }
        }
        for (i, (tenant, before)) in previous.table.iter().enumerate() {
            crate::background::give_way_at(i);
            if !except.contains(tenant) && self.table.get(tenant).is_none() {
                drift.push(Drift {
                    tenant: tenant.to_owned(),
                    before: words(previous, Some(before)),
                    after: words(self, None),
                });
            }
        }
        drift
    }
}

/// A tenant that routes differently in one snapshot than in the one before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drift {
    pub tenant: String,
    pub before: String,
    pub after: String,
}

/// Validates one loaded item and sets it in `table`; the tenant, and true when it already had
/// a flag there. A rejection keeps the tenant's name whenever the item got far enough to have
/// one, so that tenant can keep its last good flag.
fn compile_into(
    table: &mut Table,
    item: Result<FlagItem, (Option<String>, ItemError)>,
    targets: &Targets,
    interner: &mut Interner,
    interning: &mut Interning,
    previous: Option<&Table>,
) -> Result<(String, bool), (Option<String>, ItemError)> {
    let item = item?;
    let inserted = (item.compile(targets, interner))
        .and_then(|flag| keeps_seal(previous, &item, &flag, targets).map(|()| flag))
        .and_then(|flag| table.insert(&item.tenant, flag, interning));
    match inserted {
        Ok(clash) => Ok((item.tenant, clash)),
        Err(e) => Err((Some(item.tenant), e)),
    }
}

/// The one-way door, enforced on what every router loads, whoever wrote it (the CLI, the
/// admin API, a hand edit, a script): an item that moves a tenant sealed in the previous
/// snapshot, or unseals it, is refused unless it carries the force record (`forced`, with
/// its `updated_by` and `reason`). Only the next write of a tenant is judged (its version at
/// most one past the router's): an item further on means the router missed writes (it was
/// down, or they came between two polls), and one of those may have been the forced move, so
/// refusing it would hold the tenant where its data no longer is. Every writer here bumps a
/// tenant's version by one a write. The full build (`Table::breaking_seals`) and a delta
/// (`keeps_seal`) both ask this.
fn breaks_seal(
    (was_sealed, was_version): (bool, u64),
    moved: bool,
    (sealed, version): (bool, u64),
    forced: bool,
) -> bool {
    was_sealed && (moved || !sealed) && version <= was_version + 1 && !forced
}

/// Where a sealed tenant was sealed, for the refusal's words.
fn sealed_on(placement: &Placement, targets: &Targets) -> String {
    match placement {
        Placement::Pinned(t) => format!("{:?}", targets.name(*t)),
        Placement::Split(_) => "its split".to_owned(),
    }
}

/// [`breaks_seal`] for one item of a delta, against the snapshot before it.
fn keeps_seal(
    previous: Option<&Table>,
    item: &FlagItem,
    next: &Flag,
    targets: &Targets,
) -> Result<(), ItemError> {
    let Some(prev) = previous.and_then(|t| t.get(&item.tenant)) else {
        return Ok(());
    };
    let moved = prev.placement() != &next.placement;
    if breaks_seal(
        (prev.sealed(), prev.version()),
        moved,
        (next.sealed, next.version),
        item.forced,
    ) {
        let target = sealed_on(prev.placement(), targets);
        return Err(ItemError::Sealed { target });
    }
    Ok(())
}

/// The tenants whose item was rejected and that have no flag in `table`, by index.
fn unflagged(table: &Table, rejected: &[Rejected]) -> HashMap<String, usize> {
    rejected
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let tenant = r.tenant.as_deref()?;
            (tenant != DEFAULT_TENANT && table.get(tenant).is_none())
                .then(|| (tenant.to_owned(), i))
        })
        .collect()
}

/// A shareable snapshot.
pub type SharedSnapshot = Arc<Snapshot>;

/// Whether a loaded item, parsed or not, is a ramp record.
fn is_ramp(item: &Result<FlagItem, (Option<String>, ItemError)>) -> bool {
    tenant_of(item).is_some_and(|key| crate::ramp::id_of(key).is_some())
}

/// Applies one ramp record to `ramps`. A bad record changes nothing: its ramp stays as `kept`
/// had it, and the refusal is returned to be listed.
fn apply_ramp(
    ramps: &mut Vec<Arc<Ramp>>,
    item: Result<FlagItem, (Option<String>, ItemError)>,
    location: String,
    targets: &Targets,
    kept: &[Arc<Ramp>],
) -> Option<Rejected> {
    let (key, error) = match item {
        Ok(item) => match crate::ramp::compile(&item, targets) {
            Ok(ramp) => {
                ramps.retain(|r| r.id != ramp.id);
                ramps.push(Arc::new(ramp));
                return None;
            }
            Err(error) => (Some(item.tenant), error),
        },
        Err(refused) => refused,
    };
    let id = key.as_deref().and_then(crate::ramp::id_of);
    let was = id.and_then(|id| kept.iter().find(|r| r.id == id));
    if let Some(id) = id {
        ramps.retain(|r| r.id != id);
        ramps.extend(was.cloned());
    }
    Some(Rejected {
        tenant: key,
        location,
        error,
        kept_previous: was.is_some(),
    })
}

/// The tenants of the active ramps, each with its ramp's index; a tenant in two keeps the
/// first.
fn ramped(ramps: &[Arc<Ramp>]) -> HashMap<Box<str>, u32> {
    let mut out = HashMap::new();
    for (at, ramp) in ramps.iter().enumerate() {
        if ramp.item.state.is_active() {
            for tenant in &ramp.item.tenants {
                out.entry(tenant.as_str().into()).or_insert(at as u32);
            }
        }
    }
    out
}

/// Whether a loaded item, parsed or not, is an evacuation record.
fn is_record(item: &Result<FlagItem, (Option<String>, ItemError)>) -> bool {
    tenant_of(item).is_some_and(|key| crate::evacuation::side_of(key).is_some())
}

/// Applies one evacuation record to `evacuations`. A bad record changes nothing: its side stays
/// as `kept` had it (evacuated or not), and the refusal is returned to be listed.
fn apply_record(
    evacuations: &mut Vec<Evacuation>,
    item: Result<FlagItem, (Option<String>, ItemError)>,
    location: String,
    targets: &Targets,
    interner: &mut Interner,
    kept: &[Evacuation],
) -> Option<Rejected> {
    let side = |key: &str| crate::evacuation::side_of(key).and_then(|s| targets.id(s));
    let refused = match item {
        Ok(item) => match crate::evacuation::compile(&item, targets, interner) {
            Ok(next) => {
                // The record compiled, so its key names a target.
                if let Some(side) = side(&item.tenant) {
                    evacuations.retain(|e| e.side != side);
                    evacuations.extend(next);
                }
                return None;
            }
            Err(error) => (Some(item.tenant), error),
        },
        Err(refused) => refused,
    };
    let (key, error) = refused;
    let side = key.as_deref().and_then(side);
    let was = side.and_then(|s| kept.iter().find(|e| e.side == s));
    if let Some(side) = side {
        evacuations.retain(|e| e.side != side);
        evacuations.extend(was.cloned());
    }
    Some(Rejected {
        tenant: key,
        location,
        error,
        kept_previous: was.is_some(),
    })
}

/// The hold an item carries, when it parsed.
fn hold_of(item: &Result<FlagItem, (Option<String>, ItemError)>) -> Option<Arc<HoldItem>> {
    item.as_ref().ok()?.hold.clone().map(Arc::new)
}

/// The tenant an item names, parsed or not.
fn tenant_of(item: &Result<FlagItem, (Option<String>, ItemError)>) -> Option<&str> {
    match item {
        Ok(item) => Some(&item.tenant),
        Err((tenant, _)) => tenant.as_deref(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Placement, TargetId};

    fn targets() -> Targets {
        Targets::new(["legacy", "new"])
    }

    fn load(version: u64, items: &[&str]) -> Load {
        Load {
            version,
            identity: None,
            seals: Vec::new(),
            items: items
                .iter()
                .enumerate()
                .map(|(i, json)| LoadedItem {
                    location: format!("items[{i}]"),
                    item: serde_json::from_str::<FlagItem>(json)
                        .map_err(|e| (None, ItemError::Parse(e.to_string()))),
                })
                .collect(),
        }
    }

    fn target_of(snap: &Snapshot, tenant: &str) -> Option<TargetId> {
        match snap.lookup(Some(tenant)) {
            Found::Tenant(f) | Found::Default(f) => match f.placement() {
                Placement::Pinned(t) => Some(*t),
                Placement::Split(_) => None,
            },
            Found::Rejected(_) | Found::Nothing => None,
        }
    }

    #[test]
    fn an_evacuation_record_is_learned_kept_through_a_bad_one_and_restored() {
        let acme = r#"{"tenant":"acme","target":"legacy"}"#;
        let evac = r#"{"tenant":"!evacuate:legacy","evacuation":{"to":"new"},"version":1,"reason":"legacy is failing"}"#;
        let full = Snapshot::build(load(1, &[acme, evac]), &targets(), None);
        assert!(full.rejected.is_empty(), "{:?}", full.rejected);
        assert_eq!(full.len(), 1, "a record is not a tenant");
        let legacy = TargetId(0);
        let e = full.evacuation(legacy).expect("legacy is evacuated");
        assert_eq!((e.to, e.version), (TargetId(1), 1));
        assert!(matches!(
            full.lookup(Some("!evacuate:legacy")),
            Found::Nothing
        ));
        // The local copy carries the record, and a router starting from it has it.
        let copy = full.to_items();
        let json: Vec<String> = copy
            .iter()
            .map(|i| serde_json::to_string(i).unwrap())
            .collect();
        let json: Vec<&str> = json.iter().map(String::as_str).collect();
        let cold = Snapshot::build(load(1, &json), &targets(), None);
        assert_eq!(cold.evacuations(), full.evacuations());
        // A bad record (unknown `to`) is refused on its own; the evacuation stands.
        let bad = r#"{"tenant":"!evacuate:legacy","evacuation":{"to":"mars"},"version":2}"#;
        let next = full.apply_delta(load(2, &[bad]));
        assert_eq!(next.evacuations(), full.evacuations());
        assert_eq!(next.rejected.len(), 1);
        assert!(next.rejected[0].kept_previous);
        assert!(
            next.rejected[0].to_string().contains("mars"),
            "{}",
            next.rejected[0]
        );
        // Restored: the record without `evacuation`; the refusal is superseded.
        let restore = r#"{"tenant":"!evacuate:legacy","version":3}"#;
        let restored = next.apply_delta(load(3, &[restore]));
        assert!(!restored.has_evacuations());
        assert!(restored.rejected.is_empty(), "{:?}", restored.rejected);
        assert_eq!(target_of(&restored, "acme"), Some(legacy));
    }

    #[test]
    fn every_load_keeps_a_sealed_tenant_unless_the_item_is_forced() {
        let first = Snapshot::build(
            load(1, &[r#"{"tenant":"acme","target":"new","sealed":true}"#]),
            &targets(),
            None,
        );
        for (json, kept) in [
            (r#"{"tenant":"acme","target":"legacy","sealed":true}"#, true),
            (r#"{"tenant":"acme","target":"new"}"#, true),
            (
                r#"{"tenant":"acme","weights":{"legacy":50,"new":50},"sealed":true}"#,
                true,
            ),
            (
                r#"{"tenant":"acme","target":"new","sealed":true,"version":9}"#,
                false,
            ),
            (
                r#"{"tenant":"acme","target":"legacy","sealed":true,"forced":true}"#,
                false,
            ),
        ] {
            for next in [
                Snapshot::build(load(2, &[json]), &targets(), Some(&first)),
                first.apply_delta(load(2, &[json])),
            ] {
                let acme = next.get("acme").unwrap();
                if kept {
                    assert_eq!(acme.placement, Placement::Pinned(TargetId(1)), "{json}");
                    assert!(acme.sealed, "{json}");
                    assert_eq!(next.rejected.len(), 1, "{json}");
                    assert!(next.rejected[0].kept_previous, "{json}");
                    assert!(next.rejected[0].to_string().contains("sealed on \"new\""));
                } else {
                    assert!(next.rejected.is_empty(), "{json}: {:?}", next.rejected);
                }
            }
        }
    }

    #[test]
    fn with_no_previous_snapshot_the_audited_seals_judge_the_items() {
        let seal = |json: &str| serde_json::from_str::<FlagItem>(json).unwrap();
        let with_seals = |items: &[&str]| {
            let mut l = load(9, items);
            l.seals = vec![
                seal(r#"{"tenant":"acme","target":"new","sealed":true,"version":4}"#),
                seal(r#"{"tenant":"globex","target":"new","sealed":true,"version":2}"#),
            ];
            Snapshot::build(l, &targets(), None)
        };
        // Moved back without the force record: refused, the audited seal kept.
        let snap = with_seals(&[
            r#"{"tenant":"acme","target":"legacy","version":5}"#,
            r#"{"tenant":"globex","target":"new","sealed":true,"version":2}"#,
            r#"{"tenant":"initech","target":"legacy"}"#,
        ]);
        assert_eq!(target_of(&snap, "acme"), Some(TargetId(1)));
        assert!(snap.get("acme").unwrap().sealed);
        assert_eq!(snap.rejected.len(), 1, "{:?}", snap.rejected);
        assert!(snap.rejected[0].kept_previous);
        assert!(snap.rejected[0].to_string().contains("sealed on \"new\""));
        assert_eq!(target_of(&snap, "globex"), Some(TargetId(1)));
        assert_eq!(target_of(&snap, "initech"), Some(TargetId(0)));
        assert_eq!(snap.generation, 1);
        // Forced, or further on than the next write: taken, as a running router takes it.
        for json in [
            r#"{"tenant":"acme","target":"legacy","version":5,"forced":true}"#,
            r#"{"tenant":"acme","target":"legacy","version":7}"#,
        ] {
            let snap = with_seals(&[json]);
            assert_eq!(target_of(&snap, "acme"), Some(TargetId(0)), "{json}");
        }
    }

    #[test]
    fn a_sealed_tenant_whose_item_is_removed_keeps_its_flag() {
        let first = Snapshot::build(
            load(
                1,
                &[
                    r#"{"tenant":"acme","target":"new","sealed":true}"#,
                    r#"{"tenant":"globex","target":"new"}"#,
                ],
            ),
            &targets(),
            None,
        );
        let next = Snapshot::build(load(2, &[]), &targets(), Some(&first));
        assert_eq!(target_of(&next, "acme"), Some(TargetId(1)));
        assert_eq!(
            target_of(&next, "globex"),
            None,
            "an unsealed tenant may go"
        );
        assert!(
            next.rejected[0].to_string().contains("item is gone"),
            "{:?}",
            next.rejected
        );
    }

    #[test]
    fn a_bad_item_is_rejected_alone() {
        let snap = Snapshot::build(
            load(
                3,
                &[
                    r#"{"tenant":"acme","target":"new"}"#,
                    r#"{"tenant":"globex","target":"nowhere"}"#,
                    r#"{"tenant":"initech","target":"legacy"}"#,
                ],
            ),
            &targets(),
            None,
        );
        assert_eq!(snap.len(), 2);
        assert_eq!(snap.rejected.len(), 1);
        assert_eq!(snap.rejected[0].location, "items[1]");
        assert!(snap.rejected[0].to_string().contains("nowhere"));
        assert_eq!(target_of(&snap, "acme"), Some(TargetId(1)));
        assert_eq!(target_of(&snap, "initech"), Some(TargetId(0)));
        assert_eq!(snap.version, 3);
        assert_eq!(snap.generation, 1);
    }

    #[test]
    fn a_tenant_whose_item_turns_bad_keeps_its_last_good_flag() {
        let first = Snapshot::build(
            load(1, &[r#"{"tenant":"acme","target":"new"}"#]),
            &targets(),
            None,
        );
        // A typo in the target: acme must not fall back to the default (legacy).
        let bad = load(2, &[r#"{"tenant":"acme","target":"nwe"}"#]);
        let second = Snapshot::build(bad, &targets(), Some(&first));
        assert_eq!(target_of(&second, "acme"), Some(TargetId(1)));
        assert!(second.rejected[0].kept_previous);
        assert_eq!(second.rejected[0].tenant.as_deref(), Some("acme"));
        // A parse error that still names the tenant keeps it too.
        let mut unparsable = load(3, &[]);
        unparsable.items.push(LoadedItem {
            location: "items[0]".into(),
            item: Err((
                Some("acme".into()),
                ItemError::Parse("unknown field `taget`".into()),
            )),
        });
        let third = Snapshot::build(unparsable, &targets(), Some(&second));
        assert_eq!(target_of(&third, "acme"), Some(TargetId(1)));
        assert_eq!(second.generation, 2);
    }

    #[test]
    fn a_delta_changes_only_its_tenants_and_keeps_the_rest() {
        let first = Snapshot::build(
            load(
                1,
                &[
                    r#"{"tenant":"acme","target":"new"}"#,
                    r#"{"tenant":"globex","target":"legacy"}"#,
                ],
            ),
            &targets(),
            None,
        );
        let next = first.apply_delta(load(
            2,
            &[
                r#"{"tenant":"globex","target":"new"}"#,
                r#"{"tenant":"initech","target":"nowhere"}"#,
            ],
        ));
        assert_eq!((next.version, next.generation, next.len()), (2, 2, 2));
        assert_eq!(target_of(&next, "acme"), Some(TargetId(1)));
        assert_eq!(target_of(&next, "globex"), Some(TargetId(1)));
        assert_eq!(next.rejected.len(), 1);
        // A later good item for the rejected tenant clears its rejection.
        let fixed = next.apply_delta(load(3, &[r#"{"tenant":"initech","target":"legacy"}"#]));
        assert!(fixed.rejected.is_empty());
        assert_eq!(target_of(&fixed, "initech"), Some(TargetId(0)));
    }

    #[test]
    fn a_delta_copies_only_the_shards_it_changes_and_leaves_the_snapshot_before_it_alone() {
        let items: Vec<String> = (0..10_000)
            .map(|i| format!(r#"{{"tenant":"t{i}","target":"legacy"}}"#))
            .collect();
        let items: Vec<&str> = items.iter().map(String::as_str).collect();
        let first = Snapshot::build(load(1, &items), &targets(), None);
        let next = first.apply_delta(load(
            2,
            &[
                r#"{"tenant":"t7","target":"new"}"#,
                r#"{"tenant":"t-new","target":"new"}"#,
            ],
        ));
        let touched: std::collections::HashSet<usize> = ["t7", "t-new"]
            .into_iter()
            .map(|t| shard_of(first.table.hasher.hash_one(t)))
            .collect();
        let shared = (first.table.shards.iter().zip(&next.table.shards))
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert_eq!(shared, SHARDS - touched.len());
        assert_eq!((first.len(), next.len()), (10_000, 10_001));
        for i in 0..10_000 {
            let tenant = format!("t{i}");
            assert_eq!(target_of(&first, &tenant), Some(TargetId(0)), "{tenant}");
            let now = if i == 7 { 1 } else { 0 };
            assert_eq!(target_of(&next, &tenant), Some(TargetId(now)), "{tenant}");
        }
        assert_eq!(target_of(&next, "t-new"), Some(TargetId(1)));
        assert_eq!(target_of(&first, "t-new"), None);
    }

    #[test]
    fn many_deltas_keep_every_tenants_own_audit_record() {
        let mut snap = Snapshot::build(
            load(
                1,
                &[
                    r#"{"tenant":"acme","target":"new","updated_by":"ops","reason":"batch 1"}"#,
                    r#"{"tenant":"globex","weights":{"legacy":90,"new":10},"updated_by":"ops","reason":"batch 1"}"#,
                ],
            ),
            &targets(),
            None,
        );
        // Each delta writes a record of its own: far more than the table needs to keep, so
        // the table drops the unused ones as it goes.
        for v in 2..3000u64 {
            let json = format!(
                r#"{{"tenant":"acme","target":"{}","version":{v},"updated_by":"op-{v}","reason":"flip {v}"}}"#,
                if v % 2 == 0 { "legacy" } else { "new" }
            );
            snap = snap.apply_delta(load(v, &[&json]));
        }
        let audits: usize = snap.table.shards.iter().map(|s| s.audits.len()).sum();
        assert!(audits < 100, "{:?}", snap.table);
        let acme = snap.get("acme").unwrap();
        assert_eq!(acme.version, 2999);
        assert_eq!(acme.audit.updated_by.as_deref(), Some("op-2999"));
        assert_eq!(acme.audit.reason.as_deref(), Some("flip 2999"));
        assert_eq!(target_of(&snap, "acme"), Some(TargetId(1)));
        let globex = snap.get("globex").unwrap();
        assert_eq!(globex.audit.reason.as_deref(), Some("batch 1"));
        assert_eq!(globex.mode(), crate::model::Mode::Split);
        // Every stored item comes back out whole.
        let mut items = snap.to_items();
        items.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        let tenants: Vec<_> = items.iter().map(|i| i.tenant.as_str()).collect();
        assert_eq!(tenants, ["acme", "globex"]);
        assert_eq!(items[1].weights.as_ref().map(|w| w["new"]), Some(10));
    }

    #[test]
    fn duplicates_are_all_rejected() {
        let snap = Snapshot::build(
            load(
                1,
                &[
                    r#"{"tenant":"acme","target":"new"}"#,
                    r#"{"tenant":"acme","target":"legacy"}"#,
                ],
            ),
            &targets(),
            None,
        );
        assert!(snap.get("acme").is_none());
        assert!(matches!(snap.rejected[0].error, ItemError::Duplicate(_)));
    }

    #[test]
    fn default_item_catches_tenants_without_their_own() {
        let snap = Snapshot::build(
            load(1, &[r#"{"tenant":"*","target":"new"}"#]),
            &targets(),
            None,
        );
        assert!(matches!(snap.lookup(Some("zzz")), Found::Default(_)));
        assert!(matches!(snap.lookup(None), Found::Default(_)));
        let empty = Snapshot::empty(targets());
        assert!(matches!(empty.lookup(Some("zzz")), Found::Nothing));
    }
}
