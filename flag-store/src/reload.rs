//! Reload: source -> parse -> validate -> one atomic swap. A source is polled on an interval;
//! when it reports a change, a new snapshot is built off the proxy's threads and swapped in
//! whole. A failed poll keeps the last good snapshot, is logged once per outage (not per poll)
//! and counted; the snapshot's age keeps growing until the store answers again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::background::Lane;
use crate::error::{Chain, StoreError};
use crate::identity::{self, Lineage};
use crate::model::Targets;
use crate::snapshot::{Drift, Load, Snapshot};
use crate::source::{Source, Update};

/// The outcome of one reload, a closed set for the `result` metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadResult {
    /// Applied with every item.
    Ok,
    /// Applied, with some items rejected.
    Partial,
    /// The store could not be read or parsed; the last good snapshot stays.
    Error,
    /// The store answered, but it is another store or an older one than the snapshot came
    /// from (see [`crate::identity`]); the last good snapshot stays until it is adopted.
    Refused,
}

impl ReloadResult {
    pub const ALL: [ReloadResult; 4] = [
        ReloadResult::Ok,
        ReloadResult::Partial,
        ReloadResult::Error,
        ReloadResult::Refused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Ok => "ok",
            ReloadResult::Partial => "partial",
            ReloadResult::Error => "error",
            ReloadResult::Refused => "refused",
        }
    }
}

/// The current snapshot and what the reloader has observed, shared by the proxy, the admin
/// listener and the reloader.
#[derive(Debug)]
pub struct FlagState {
    current: ArcSwap<Snapshot>,
    targets: Targets,
    loaded: AtomicBool,
    reloads: [AtomicU64; 4],
    /// Why the store is refused, while it is (see [`crate::identity`]).
    refusal: Mutex<Option<Refusal>>,
    out_of_band: AtomicU64,
    /// When the store last confirmed the snapshot (applied or unchanged), ms since the epoch.
    fresh_at_ms: AtomicU64,
    generation: watch::Sender<u64>,
    /// A local copy of the last good snapshot, so a router that starts while the store is
    /// unreachable still routes. Every applied change reaches it within about
    /// [`LOCAL_COPY_INTERVAL`] (plus the write itself), written whole and replaced atomically
    /// on a thread of its own, so a crash loses at most that much.
    cache: Option<crate::file::FileStore>,
    copy: Mutex<CopyState>,
    /// Wakes the poll before its next tick (a write this router made, to be routed by).
    poll_now: tokio::sync::Notify,
}

/// The shortest time between two writes of the local copy while changes keep arriving: the
/// most a crash loses, give or take one write. A write at a million tenants takes about a
/// second of a low-priority thread, so writing more often would only queue writes.
pub const LOCAL_COPY_INTERVAL: Duration = Duration::from_secs(1);

/// Why the store is refused, and the last version of it seen.
#[derive(Debug)]
struct Refusal {
    reason: String,
    seen_version: u64,
}

#[derive(Debug, Default)]
struct CopyState {
    /// The current snapshot is newer than the copy.
    pending: bool,
    /// The version the copy holds, once written or read at start.
    version: Option<u64>,
}

impl FlagState {
    pub fn new(targets: Targets) -> Arc<Self> {
        Self::with_cache(targets, None)
    }

    pub fn with_cache(targets: Targets, cache: Option<crate::file::FileStore>) -> Arc<Self> {
        Arc::new(FlagState {
            cache,
            current: ArcSwap::from_pointee(Snapshot::empty(targets.clone())),
            targets,
            loaded: AtomicBool::new(false),
            reloads: Default::default(),
            refusal: Mutex::default(),
            out_of_band: AtomicU64::new(0),
            fresh_at_ms: AtomicU64::new(now_ms()),
            generation: watch::channel(0).0,
            copy: Mutex::default(),
            poll_now: tokio::sync::Notify::new(),
        })
    }

    /// The current snapshot. Cheap; drop the guard before any `.await`.
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// True once a first snapshot has been loaded from the store.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    pub fn reloads(&self, result: ReloadResult) -> u64 {
        self.reloads[result as usize].load(Ordering::Relaxed)
    }

    /// Time since the store last confirmed the snapshot.
    pub fn age(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.fresh_at_ms.load(Ordering::Relaxed)))
    }

    /// Follows snapshot generations (1 is the first load).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Asks the poll to read the store now rather than at its next tick (once, however many
    /// ask before it runs).
    pub fn poll_soon(&self) {
        self.poll_now.notify_one();
    }

    /// Waits until the current snapshot satisfies `ready`.
    pub async fn wait_until(&self, ready: impl Fn(&Snapshot) -> bool) {
        let mut rx = self.subscribe();
        loop {
            if ready(&self.load()) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Builds a snapshot from `update` on the flag-load thread and swaps it in.
    pub async fn apply(self: &Arc<Self>, update: Update) -> Arc<Snapshot> {
        let state = self.clone();
        crate::background::run(move || state.apply_update(update)).await
    }

    /// Builds a snapshot from a full `load` and swaps it in, on the calling thread.
    pub fn apply_now(&self, load: Load) -> Arc<Snapshot> {
        self.apply_update(Update::Full(load))
    }

    /// Builds the next snapshot and swaps it in, on the calling thread, and marks the local
    /// copy (if there is one) behind; [`run`] brings it up to date. A load from another store,
    /// or from this one gone back in time, is refused whole: the current snapshot stays, and
    /// is returned.
    pub fn apply_update(&self, update: Update) -> Arc<Snapshot> {
        match self.swap(update) {
            Ok(next) => {
                self.mark_fresh();
                next
            }
            Err(current) => current,
        }
    }

    /// Why the flag store is refused, while it is: the router routes on its last good snapshot
    /// until an operator adopts the store (`switchyard flags adopt`).
    pub fn store_refused(&self) -> Option<String> {
        let refusal = self.refusal.lock().expect("refusal lock");
        refusal.as_ref().map(|r| {
            format!(
                "{}; the store is at version {} now",
                r.reason, r.seen_version
            )
        })
    }

    /// True when the local copy is behind the current snapshot.
    pub fn local_copy_pending(&self) -> bool {
        self.copy.lock().expect("copy lock").pending
    }

    /// The version the local copy holds, if there is one.
    pub fn local_copy_version(&self) -> Option<u64> {
        self.copy.lock().expect("copy lock").version
    }

    /// Writes the current snapshot to the local copy when it is behind, on the calling thread.
    pub fn write_local_copy(&self) {
        let Some(cache) = &self.cache else { return };
        let mut copy = self.copy.lock().expect("copy lock");
        if !copy.pending {
            return;
        }
        let snapshot = self.load_full();
        copy.pending = false;
        drop(copy);
        match cache.replace_all(
            snapshot.version,
            snapshot.identity.as_ref(),
            &snapshot.to_items(),
        ) {
            Ok(()) => self.copy.lock().expect("copy lock").version = Some(snapshot.version),
            Err(e) => {
                tracing::warn!(error = %Chain(&e), "cannot write the local copy of the flags");
                self.copy.lock().expect("copy lock").pending = true;
            }
        }
    }

    /// Routes from the local copy when the store cannot be read at start. The snapshot's age
    /// is the copy's age, not zero: the store has not confirmed it.
    pub fn apply_local_copy(&self, load: Load, written_at: Option<SystemTime>) -> Arc<Snapshot> {
        let version = load.version;
        let next = self
            .swap(Update::Full(load))
            .unwrap_or_else(|current| current);
        *self.copy.lock().expect("copy lock") = CopyState {
            pending: false,
            version: Some(version),
        };
        if let Some(ms) = written_at.and_then(|t| t.duration_since(UNIX_EPOCH).ok()) {
            self.fresh_at_ms
                .store(ms.as_millis() as u64, Ordering::Relaxed);
        }
        next
    }

    /// Swaps in the snapshot `update` makes, or refuses it and returns the current one.
    fn swap(&self, update: Update) -> Result<Arc<Snapshot>, Arc<Snapshot>> {
        let previous = self.current.load_full();
        if self.is_loaded() && !self.follows(&previous, &update) {
            self.reloads[ReloadResult::Refused as usize].fetch_add(1, Ordering::Relaxed);
            return Err(previous);
        }
        let mut next = match update {
            Update::Full(load) => {
                Snapshot::build(load, &self.targets, self.is_loaded().then_some(&*previous))
            }
            Update::Delta(load) => previous.apply_delta(load),
            Update::Reconcile { load, audited } => {
                let next = Snapshot::build(load, &self.targets, Some(&previous));
                self.report_out_of_band(&next.drift_from(&previous, &audited));
                next
            }
        };
        next.generation = previous.generation + 1;
        for r in &next.rejected {
            tracing::warn!(item = %r, "flag item rejected");
        }
        let result = if next.rejected.is_empty() {
            ReloadResult::Ok
        } else {
            ReloadResult::Partial
        };
        let next = Arc::new(next);
        self.current.store(next.clone());
        if self.cache.is_some() {
            // Before the generation moves: the copy's writer wakes on it.
            self.copy.lock().expect("copy lock").pending = true;
        }
        self.loaded.store(true, Ordering::Release);
        self.reloads[result as usize].fetch_add(1, Ordering::Relaxed);
        self.generation.send_replace(next.generation);
        tracing::info!(
            version = next.version,
            generation = next.generation,
            tenants = next.len(),
            rejected = next.rejected.len(),
            "flag snapshot applied"
        );
        Ok(next)
    }

    /// Whether `update` may follow `current`: the same store at the same or a later version,
    /// or a store an operator adopted since (loaded whole). Once a load is refused, every
    /// later one is until an adoption, so a restored table whose version climbs back past the
    /// snapshot's is never merged into it.
    fn follows(&self, current: &Snapshot, update: &Update) -> bool {
        let (load, whole) = match update {
            Update::Full(load) | Update::Reconcile { load, .. } => (load, true),
            Update::Delta(load) => (load, false),
        };
        if current.identity.is_none() && load.identity.is_none() {
            return true; // a flag file, or a table made before stores had identities
        }
        let mut refusal = self.refusal.lock().expect("refusal lock");
        let why = match identity::judge(
            current.identity.as_ref(),
            current.version,
            load.identity.as_ref(),
            load.version,
        ) {
            Lineage::Adopted if whole => {
                tracing::warn!(
                    from = ?current.identity,
                    to = ?load.identity,
                    version = load.version,
                    "adopting the flag store an operator adopted; its flags replace the snapshot"
                );
                *refusal = None;
                return true;
            }
            Lineage::Adopted => "an adopted store must be loaded whole".to_owned(),
            Lineage::Follows => match &*refusal {
                None => return true,
                Some(r) => r.reason.clone(),
            },
            Lineage::Refused(why) => why,
        };
        if refusal.is_none() {
            tracing::error!(
                reason = %why,
                version = current.version,
                "flag store refused: routing on the last good snapshot and keeping the local copy until an operator runs `switchyard flags adopt`"
            );
        } else {
            tracing::debug!(reason = %why, "flag store still refused");
        }
        *refusal = Some(Refusal {
            reason: why,
            seen_version: load.version,
        });
        false
    }

    /// Logs and counts tenants a reconcile found changed with no audit record: a write that
    /// bypassed Switchyard (a console edit, a script). The router routes by what the store
    /// holds, as every other router does once it reconciles.
    fn report_out_of_band(&self, drift: &[Drift]) {
        const LOGGED: usize = 100;
        for d in drift.iter().take(LOGGED) {
            tracing::warn!(
                tenant = %d.tenant,
                before = %d.before,
                after = %d.after,
                "out-of-band change: the store holds a flag no audited write made; routing by it"
            );
        }
        if drift.len() > LOGGED {
            tracing::warn!(
                tenants = drift.len(),
                logged = LOGGED,
                "out-of-band changes to more tenants than are logged one by one"
            );
        }
        self.out_of_band
            .fetch_add(drift.len() as u64, Ordering::Relaxed);
    }

    /// Tenants found changed out of band since the process started.
    pub fn out_of_band(&self) -> u64 {
        self.out_of_band.load(Ordering::Relaxed)
    }

    fn mark_fresh(&self) {
        self.fresh_at_ms.store(now_ms(), Ordering::Relaxed);
    }

    fn count_error(&self) {
        self.reloads[ReloadResult::Error as usize].fetch_add(1, Ordering::Relaxed);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Polls `source` once and applies what changed. Returns whether the store answered.
pub async fn poll_once<S: Source>(
    source: &mut S,
    state: &Arc<FlagState>,
) -> Result<(), StoreError> {
    match source.poll().await {
        Ok(Some(update)) => {
            state.apply(update).await;
            Ok(())
        }
        Ok(None) => {
            // An unchanged store confirms the snapshot, unless it is a refused one.
            if state.store_refused().is_none() {
                state.mark_fresh();
            }
            Ok(())
        }
        Err(e) => {
            state.count_error();
            Err(e)
        }
    }
}

/// Polls `source` every `interval` until `shutdown` turns true.
pub async fn run<S: Source>(
    mut source: S,
    state: Arc<FlagState>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = source.describe();
    let copier = tokio::spawn(keep_local_copy(state.clone(), shutdown.clone()));
    let mut failing = false;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = ticker.tick() => false,
            _ = state.poll_now.notified() => {
                ticker.reset();
                false
            }
            _ = shutdown.wait_for(|stop| *stop) => true,
        };
        if stopping {
            let _ = copier.await;
            return;
        }
        match poll_once(&mut source, &state).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!(store = %name, age_s = state.age().as_secs(), "flag store readable again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(store = %name, error = %Chain(&e), "flag store unreadable; routing on the last good snapshot");
            }
            Err(e) => {
                tracing::debug!(store = %name, error = %Chain(&e), "flag store still unreadable")
            }
        }
    }
}

/// Brings the local copy up to date after every applied change, at most once per
/// [`LOCAL_COPY_INTERVAL`], on the copy thread; once more when `shutdown` turns true.
async fn keep_local_copy(state: Arc<FlagState>, mut shutdown: watch::Receiver<bool>) {
    if state.cache.is_none() {
        return;
    }
    let mut changes = state.subscribe();
    let mut written_at: Option<tokio::time::Instant> = None;
    loop {
        if !state.local_copy_pending() {
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { break },
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
            continue;
        }
        if let Some(at) = written_at {
            tokio::select! {
                _ = tokio::time::sleep_until(at + LOCAL_COPY_INTERVAL) => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
        }
        written_at = Some(tokio::time::Instant::now());
        let state = state.clone();
        crate::background::run_on(Lane::Copy, move || state.write_local_copy()).await;
    }
    let state = state.clone();
    crate::background::run_on(Lane::Copy, move || state.write_local_copy()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::{FileSource, FileStore};

    #[tokio::test]
    async fn a_bad_file_keeps_the_last_good_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flags.json");
        std::fs::write(
            &path,
            r#"{"version":1,"items":[{"tenant":"acme","target":"new"}]}"#,
        )
        .unwrap();
        let state = FlagState::new(Targets::new(["legacy", "new"]));
        let mut source = FileSource::new(FileStore::new(&path));
        assert!(!state.is_loaded());
        poll_once(&mut source, &state).await.unwrap();
        assert!(state.is_loaded());
        assert_eq!(state.load().version, 1);
        assert_eq!(state.reloads(ReloadResult::Ok), 1);

        std::fs::write(&path, r#"{"version":2,"items":[{"tenant":"acme""#).unwrap();
        assert!(poll_once(&mut source, &state).await.is_err());
        assert_eq!(state.load().version, 1);
        assert!(state.load().get("acme").is_some());
        assert_eq!(state.reloads(ReloadResult::Error), 1);

        std::fs::write(
            &path,
            r#"{"version":3,"items":[{"tenant":"acme","target":"new"},{"tenant":"b","target":"zz"}]}"#,
        )
        .unwrap();
        poll_once(&mut source, &state).await.unwrap();
        assert_eq!(state.load().version, 3);
        assert_eq!(state.load().generation, 2);
        assert_eq!(state.reloads(ReloadResult::Partial), 1);
    }

    #[tokio::test]
    async fn every_change_reaches_the_local_copy_within_about_a_second_and_at_stop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flags.json");
        let doc =
            |v: u64| format!(r#"{{"version":{v},"items":[{{"tenant":"acme","target":"new"}}]}}"#);
        std::fs::write(&path, doc(1)).unwrap();
        let copy = FileStore::new(dir.path().join("copy.json"));
        let state = FlagState::with_cache(Targets::new(["legacy", "new"]), Some(copy.clone()));
        let (stop, stopped) = watch::channel(false);
        let reloader = tokio::spawn(run(
            FileSource::new(FileStore::new(&path)),
            state.clone(),
            Duration::from_millis(5),
            stopped,
        ));
        // Written: on disk, and known to the state (which learns it just after the rename).
        let copied = |version: u64| {
            let (copy, state) = (copy.clone(), state.clone());
            async move {
                while read_copy(&copy).map(|l| l.version) != Some(version)
                    || state.local_copy_version() != Some(version)
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), copied(1))
            .await
            .expect("the first load reaches the copy");
        // Changes arriving faster than the interval all reach the copy, the last one included.
        for v in 2..=6 {
            std::fs::write(&path, doc(v)).unwrap();
            state.wait_until(|s| s.version == v).await;
        }
        tokio::time::timeout(Duration::from_secs(10), copied(6))
            .await
            .expect("the last change reaches the copy");
        assert_eq!(state.local_copy_version(), Some(6));

        // Stopping the reloader writes what is still pending.
        std::fs::write(&path, doc(7)).unwrap();
        state.wait_until(|s| s.version == 7).await;
        stop.send_replace(true);
        reloader.await.unwrap();
        assert_eq!(copy.load().unwrap().version, 7);
        assert!(!state.local_copy_pending());
    }

    fn read_copy(copy: &FileStore) -> Option<Load> {
        copy.load().ok()
    }
}
