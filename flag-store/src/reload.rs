//! Reload: source -> parse -> validate -> one atomic swap. A source is polled on an interval;
//! when it reports a change, a new snapshot is built off the proxy's threads and swapped in
//! whole. A failed poll keeps the last good snapshot, is logged once per outage (not per poll)
//! and counted; the snapshot's age keeps growing until the store answers again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::error::{Chain, StoreError};
use crate::model::Targets;
use crate::snapshot::{Load, Snapshot};
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
}

impl ReloadResult {
    pub const ALL: [ReloadResult; 3] =
        [ReloadResult::Ok, ReloadResult::Partial, ReloadResult::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Ok => "ok",
            ReloadResult::Partial => "partial",
            ReloadResult::Error => "error",
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
    reloads: [AtomicU64; 3],
    /// When the store last confirmed the snapshot (applied or unchanged), ms since the epoch.
    fresh_at_ms: AtomicU64,
    generation: watch::Sender<u64>,
    /// A local copy of the last good snapshot, so a router that starts while the store is
    /// unreachable still routes. Written on the first load, then at most once per
    /// [`LOCAL_COPY_INTERVAL`] while changes arrive: at a million tenants a write costs seconds
    /// of the flag thread, which must stay free to apply the next change.
    cache: Option<crate::file::FileStore>,
    copy: Mutex<CopyState>,
}

/// The shortest time between two writes of the local copy.
pub const LOCAL_COPY_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct CopyState {
    written_at: Option<Instant>,
    /// The current snapshot is newer than the copy.
    pending: bool,
}

impl CopyState {
    fn due(&self, now: bool) -> bool {
        self.pending
            && (now || (self.written_at).is_none_or(|at| at.elapsed() >= LOCAL_COPY_INTERVAL))
    }
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
            fresh_at_ms: AtomicU64::new(now_ms()),
            generation: watch::channel(0).0,
            copy: Mutex::default(),
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

    /// Builds the next snapshot and swaps it in, on the calling thread; then refreshes the
    /// local copy, if there is one and it is due.
    pub fn apply_update(&self, update: Update) -> Arc<Snapshot> {
        let next = self.swap(update);
        self.mark_fresh();
        if self.cache.is_some() {
            self.copy.lock().expect("copy lock").pending = true;
            self.write_local_copy(false);
        }
        next
    }

    /// True when the local copy is behind the current snapshot.
    pub fn local_copy_pending(&self) -> bool {
        self.copy.lock().expect("copy lock").pending
    }

    /// True when the local copy is behind and, unless `now`, [`LOCAL_COPY_INTERVAL`] has
    /// passed since its last write.
    pub fn local_copy_due(&self, now: bool) -> bool {
        self.copy.lock().expect("copy lock").due(now)
    }

    /// Writes the current snapshot to the local copy when [`FlagState::local_copy_due`]. On
    /// the calling thread.
    pub fn write_local_copy(&self, now: bool) {
        let Some(cache) = &self.cache else { return };
        let mut copy = self.copy.lock().expect("copy lock");
        if !copy.due(now) {
            return;
        }
        let snapshot = self.load_full();
        copy.pending = false;
        copy.written_at = Some(Instant::now());
        drop(copy);
        if let Err(e) = cache.replace_all(snapshot.version, &snapshot.to_items()) {
            tracing::warn!(error = %Chain(&e), "cannot write the local copy of the flags");
            self.copy.lock().expect("copy lock").pending = true;
        }
    }

    /// Routes from the local copy when the store cannot be read at start. The snapshot's age
    /// is the copy's age, not zero: the store has not confirmed it.
    pub fn apply_local_copy(&self, load: Load, written_at: Option<SystemTime>) -> Arc<Snapshot> {
        let next = self.swap(Update::Full(load));
        if let Some(ms) = written_at.and_then(|t| t.duration_since(UNIX_EPOCH).ok()) {
            self.fresh_at_ms
                .store(ms.as_millis() as u64, Ordering::Relaxed);
        }
        next
    }

    fn swap(&self, update: Update) -> Arc<Snapshot> {
        let previous = self.current.load_full();
        let mut next = match update {
            Update::Full(load) => {
                Snapshot::build(load, &self.targets, self.is_loaded().then_some(&*previous))
            }
            Update::Delta(load) => previous.apply_delta(load),
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
        next
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
            state.mark_fresh();
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
    let mut failing = false;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = ticker.tick() => false,
            _ = shutdown.wait_for(|stop| *stop) => true,
        };
        if stopping {
            write_local_copy(&state, true).await;
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
        write_local_copy(&state, false).await;
    }
}

/// Brings the local copy up to date on the flag-load thread, when it is behind (and due).
async fn write_local_copy(state: &Arc<FlagState>, now: bool) {
    if state.local_copy_due(now) {
        let state = state.clone();
        crate::background::run(move || state.write_local_copy(now)).await;
    }
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
    async fn the_local_copy_is_written_at_first_then_at_most_once_an_interval_and_at_stop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flags.json");
        let doc =
            |v: u64| format!(r#"{{"version":{v},"items":[{{"tenant":"acme","target":"new"}}]}}"#);
        std::fs::write(&path, doc(1)).unwrap();
        let copy = FileStore::new(dir.path().join("copy.json"));
        let state = FlagState::with_cache(Targets::new(["legacy", "new"]), Some(copy.clone()));
        let mut source = FileSource::new(FileStore::new(&path));
        poll_once(&mut source, &state).await.unwrap();
        assert_eq!(
            copy.load().unwrap().version,
            1,
            "the first load is written at once"
        );

        std::fs::write(&path, doc(2)).unwrap();
        poll_once(&mut source, &state).await.unwrap();
        assert_eq!(state.load().version, 2);
        assert_eq!(
            copy.load().unwrap().version,
            1,
            "not again within the interval"
        );
        assert!(state.local_copy_pending());

        // Stopping the reloader brings the copy up to date.
        let (stop, stopped) = watch::channel(false);
        let reloader = tokio::spawn(run(
            source,
            state.clone(),
            Duration::from_secs(3600),
            stopped,
        ));
        stop.send_replace(true);
        reloader.await.unwrap();
        assert_eq!(copy.load().unwrap().version, 2);
        assert!(!state.local_copy_pending());
    }
}
