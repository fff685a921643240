//! Long-lived exchanges bound to a tenant's side: upgraded tunnels (WebSocket) and responses
//! still streaming (no length, or a large one). A flip must reach them too, or a tenant moved
//! (and sealed) away from a side keeps using it for as long as a socket stays open. Each is
//! registered with its tenant, its sticky bucket and its target; after every new flag snapshot
//! the ones whose tenant may no longer use that side are closed: at once when the tenant is
//! sealed away from it, otherwise after a grace (`flags.close_moved_after_ms`), if the tenant
//! has not come back meanwhile. A split tenant's exchange stays open while its user's bucket
//! stays on that side.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flag_store::{FlagState, Found, Placement, Snapshot, TargetId};
use tokio::sync::{Notify, watch};

/// What kind of exchange, the `kind` label of `switchyard_streams_closed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    Tunnel,
    Response,
}

impl StreamKind {
    pub const ALL: [StreamKind; 2] = [StreamKind::Tunnel, StreamKind::Response];

    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Tunnel => "tunnel",
            StreamKind::Response => "response",
        }
    }
}

/// Where an exchange went, and for whom: what a snapshot is checked against.
#[derive(Clone, Debug)]
pub struct Binding {
    pub tenant: Option<Box<str>>,
    /// The sticky bucket, when the tenant was split.
    pub bucket: Option<u32>,
    pub target: TargetId,
    /// True when the exchange went to its bucket's owner (not a failover).
    pub on_owner: bool,
    pub kind: StreamKind,
}

#[derive(Debug)]
struct Entry {
    binding: Binding,
    close: Arc<Notify>,
}

/// The registry of open long-lived exchanges.
#[derive(Debug)]
pub struct Streams {
    open: Mutex<HashMap<u64, Entry>>,
    next: AtomicU64,
    grace: Duration,
    default_target: TargetId,
    closed: [AtomicU64; 2],
}

/// Keeps an exchange registered until dropped; `closed()` resolves when it must close.
#[derive(Debug)]
pub struct Registration {
    streams: Arc<Streams>,
    id: u64,
    close: Arc<Notify>,
}

impl Registration {
    /// Resolves when the exchange must close: its tenant moved away from its side.
    pub fn closed(&self) -> tokio::sync::futures::OwnedNotified {
        self.close.clone().notified_owned()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.streams
            .open
            .lock()
            .expect("streams lock")
            .remove(&self.id);
    }
}

/// When an exchange must leave its side: the tenant's flag no longer places it there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Leave {
    /// At once: the tenant is sealed away from the side (or the grace is over).
    Now,
    /// After the grace, unless the tenant comes back.
    AfterGrace,
}

impl Streams {
    pub fn new(grace: Duration, default_target: TargetId) -> Arc<Streams> {
        Arc::new(Streams {
            open: Mutex::default(),
            next: AtomicU64::new(0),
            grace,
            default_target,
            closed: Default::default(),
        })
    }

    /// Registers an exchange picked on some snapshot, checked against `current`: one whose
    /// pick a flip overtook between the pick and now closes at once (no sweep will see it).
    pub fn register(self: &Arc<Self>, binding: Binding, current: &Snapshot) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let close = Arc::new(Notify::new());
        if self.judge(current, &binding).is_some() {
            close.notify_one();
            self.closed[binding.kind as usize].fetch_add(1, Ordering::Relaxed);
        }
        self.open.lock().expect("streams lock").insert(
            id,
            Entry {
                binding,
                close: close.clone(),
            },
        );
        Registration {
            streams: self.clone(),
            id,
            close,
        }
    }

    pub fn open(&self) -> usize {
        self.open.lock().expect("streams lock").len()
    }

    pub fn closed(&self, kind: StreamKind) -> u64 {
        self.closed[kind as usize].load(Ordering::Relaxed)
    }

    /// Whether `binding` may stay on its side under `snapshot`.
    pub fn judge(&self, snapshot: &Snapshot, binding: &Binding) -> Option<Leave> {
        // A tenant being moved keeps nothing open on any side: its hold drains it.
        if snapshot.has_holds()
            && let Some(hold) = binding.tenant.as_deref().and_then(|t| snapshot.hold(t))
            && hold.active_at(flag_store::fleet::now_ms())
        {
            return Some(Leave::Now);
        }
        let (placement, sealed) = match snapshot.lookup(binding.tenant.as_deref()) {
            Found::Tenant(f) | Found::Default(f) => (f.placement().clone(), f.sealed()),
            // Where its data is is not known: nothing says it moved.
            Found::Rejected(_) => return None,
            Found::Nothing => (Placement::Pinned(self.default_target), false),
        };
        let stays = match &placement {
            Placement::Pinned(t) => *t == binding.target,
            Placement::Split(split) => {
                let weighted = split
                    .entries()
                    .iter()
                    .any(|(t, w)| *t == binding.target && *w > 0);
                match binding.bucket {
                    // Its user's bucket still on this side (or, for an exchange that failed
                    // over, the side still part of the split).
                    Some(b) if binding.on_owner => split.owner(b) == binding.target,
                    _ => weighted,
                }
            }
        };
        // An evacuated side keeps only what its evacuation leaves there: the tenants pinned
        // on it, unless it takes those too.
        let stays = stays
            && !(snapshot.has_evacuations()
                && snapshot
                    .evacuation(binding.target)
                    .is_some_and(|e| e.include_pinned || matches!(placement, Placement::Split(_))));
        match (stays, sealed) {
            (true, _) => None,
            (false, true) => Some(Leave::Now),
            (false, false) => Some(Leave::AfterGrace),
        }
    }

    /// Checks every open exchange against `snapshot`: closes the sealed-away ones now, and
    /// returns the moved ones' ids for a second look after the grace. Logs once per tenant.
    fn sweep(&self, snapshot: &Snapshot, only: Option<&[u64]>) -> Vec<u64> {
        let open = self.open.lock().expect("streams lock");
        let mut later = Vec::new();
        let mut by_tenant: HashMap<(Option<&str>, TargetId, Leave), usize> = HashMap::new();
        let ids: Box<dyn Iterator<Item = u64>> = match only {
            Some(ids) => Box::new(ids.iter().copied()),
            None => Box::new(open.keys().copied()),
        };
        for id in ids {
            let Some(entry) = open.get(&id) else { continue };
            let leave = self.judge(snapshot, &entry.binding);
            let leave = match (leave, only.is_some()) {
                (None, _) => continue,
                // After the grace, a moved exchange closes.
                (Some(_), true) => Leave::Now,
                (Some(l), false) => l,
            };
            *by_tenant
                .entry((entry.binding.tenant.as_deref(), entry.binding.target, leave))
                .or_default() += 1;
            match leave {
                Leave::Now => {
                    entry.close.notify_one();
                    self.closed[entry.binding.kind as usize].fetch_add(1, Ordering::Relaxed);
                }
                Leave::AfterGrace => later.push(id),
            }
        }
        for ((tenant, target, leave), n) in by_tenant {
            let target = snapshot.targets().name(target);
            let tenant = tenant.unwrap_or("-");
            match (leave, only.is_some()) {
                (Leave::Now, false) => tracing::warn!(
                    tenant,
                    side = target,
                    streams = n,
                    "closing the open tunnels and streams of a tenant sealed away from their side"
                ),
                (Leave::Now, true) => tracing::warn!(
                    tenant,
                    side = target,
                    streams = n,
                    "closing the open tunnels and streams of a tenant that moved away from their side (the grace is over)"
                ),
                (Leave::AfterGrace, _) => {
                    tracing::info!(tenant, side = target, streams = n, grace = ?self.grace, "a tenant with open tunnels or streams moved away from their side: closing them after the grace")
                }
            }
        }
        later
    }
}

/// Follows flag snapshots and closes the exchanges whose tenant moved, until `stop`.
pub async fn follow_flips(
    streams: Arc<Streams>,
    flags: Arc<FlagState>,
    mut stop: watch::Receiver<bool>,
) {
    let mut generations = flags.subscribe();
    loop {
        tokio::select! {
            changed = generations.changed() => if changed.is_err() { return },
            _ = crate::shutdown::until_set(&mut stop) => return,
        }
        if streams.open() == 0 {
            continue;
        }
        let later = streams.sweep(&flags.load(), None);
        if later.is_empty() {
            continue;
        }
        let (streams, flags) = (streams.clone(), flags.clone());
        tokio::spawn(async move {
            tokio::time::sleep(streams.grace).await;
            // Checked again: a tenant moved back within the grace keeps its exchanges.
            streams.sweep(&flags.load(), Some(&later));
        });
    }
}

/// A tenant id kept by value for the life of a request without allocating (ids up to 39
/// bytes; a longer one is boxed), for the rare request that becomes a long-lived exchange.
#[derive(Clone, Debug, Default)]
pub enum TenantKey {
    #[default]
    None,
    Inline {
        len: u8,
        bytes: [u8; 39],
    },
    Boxed(Box<str>),
}

impl TenantKey {
    pub fn new(tenant: Option<&str>) -> TenantKey {
        match tenant {
            None => TenantKey::None,
            Some(t) if t.len() <= 39 => {
                let mut bytes = [0u8; 39];
                bytes[..t.len()].copy_from_slice(t.as_bytes());
                TenantKey::Inline {
                    len: t.len() as u8,
                    bytes,
                }
            }
            Some(t) => TenantKey::Boxed(t.into()),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            TenantKey::None => None,
            TenantKey::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).ok()
            }
            TenantKey::Boxed(t) => Some(t),
        }
    }
}
