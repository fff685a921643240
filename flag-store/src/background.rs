//! Flag loads (reading and parsing the store, building a snapshot) run on one thread of their
//! own at a lower CPU priority. Rebuilding a large table is tens of milliseconds of CPU, and on
//! a router whose cores are busy proxying it must not hold requests up: at nice 10 the kernel
//! runs the load whenever a proxy thread has nothing to do. A fully busy core still gives the
//! load about a tenth of its time (the CFS weights of nice 10 and nice 0 are 110 and 1024), so
//! a saturated router keeps following flag changes: an operator moving tenants away from an
//! overloaded router needs that most. (`SCHED_IDLE` would leave a busy router's loads almost
//! no time, and an unprivileged thread cannot leave it again.)
//!
//! A lower priority alone does not keep a load from delaying requests: the kernel lets a
//! running thread finish its time slice (milliseconds) before a proxy thread that woke meanwhile
//! runs. So every long step of a load calls `give_way`, which yields the CPU once the load
//! has run `SLICE` since it last did, and the kernel's own long steps are cut up too (a file
//! is read in slices: the kernel does not preempt a read in progress).
//!
//! Writing the local copy of the flags is the same kind of work on a second thread of its own
//! ([`Lane::Copy`]), so a slow disk or a large copy never delays applying the next change.

use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

use thread_priority::{ThreadPriority, ThreadPriorityValue};

type Job = Box<dyn FnOnce() + Send>;

/// The low-priority threads background work runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// Reading the store and building snapshots (`switchyard-flags`).
    Load,
    /// Writing the local copy (`switchyard-copy`).
    Copy,
}

thread_local! {
    static ON_LOADER: Cell<bool> = const { Cell::new(false) };
    /// When the flag-load thread last gave way.
    static GAVE_WAY_AT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// How long the flag-load thread runs before it gives the CPU to a proxy thread waiting for it:
/// the most a load delays a request, give or take one step.
pub(crate) const SLICE: Duration = Duration::from_micros(50);

/// Called between steps of a load (each a few microseconds at most): on the flag-load thread,
/// gives the CPU to any thread waiting for it once [`SLICE`] has passed since the last time.
pub(crate) fn give_way() {
    if !ON_LOADER.get() {
        return;
    }
    let now = Instant::now();
    if GAVE_WAY_AT
        .get()
        .is_none_or(|at| now.duration_since(at) >= SLICE)
    {
        std::thread::yield_now();
        GAVE_WAY_AT.set(Some(Instant::now()));
    }
}

/// [`give_way`] for a loop over items, which are well under a microsecond each: it reads the
/// clock at every 16th.
#[inline]
pub(crate) fn give_way_at(item: usize) {
    if item % 16 == 15 {
        give_way();
    }
}

/// 22 on thread-priority's 0..99 scale is nice 10 on Linux (the test checks it).
const PRIORITY: u8 = 22;

/// Runs `f` on the flag-load thread and returns its result. When that thread cannot be
/// started, `f` runs on Tokio's blocking pool instead, at normal priority.
pub async fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    run_on(Lane::Load, f).await
}

/// Runs `f` on `lane`'s thread and returns its result, as [`run`] does.
pub async fn run_on<T: Send + 'static>(lane: Lane, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(std::panic::catch_unwind(AssertUnwindSafe(f)));
    });
    let unsent = match thread(lane) {
        Some(loader) => loader.send(job).err().map(|e| e.0),
        None => Some(job),
    };
    if let Some(job) = unsent {
        tokio::task::spawn_blocking(job);
    }
    match rx.await {
        Ok(Ok(value)) => value,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("the flag load was dropped before it ran (the runtime is shutting down)"),
    }
}

fn thread(lane: Lane) -> Option<&'static mpsc::Sender<Job>> {
    static LOAD: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();
    static COPY: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();
    let (cell, name) = match lane {
        Lane::Load => (&LOAD, "switchyard-flags"),
        Lane::Copy => (&COPY, "switchyard-copy"),
    };
    cell.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            let started = std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    ON_LOADER.set(true);
                    lower_priority();
                    for job in rx {
                        job();
                    }
                });
            match started {
                Ok(_) => Some(tx),
                Err(e) => {
                    tracing::warn!(error = %e, thread = name, "cannot start a background thread; its work runs at normal priority");
                    None
                }
            }
        })
        .as_ref()
}

fn lower_priority() {
    let priority = ThreadPriorityValue::try_from(PRIORITY).map(ThreadPriority::Crossplatform);
    if let Err(e) = priority
        .and_then(|p| thread_priority::set_current_thread_priority(p).map_err(|e| format!("{e:?}")))
    {
        tracing::warn!(error = %e, "cannot lower the flag-load thread's CPU priority");
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn loads_run_on_a_thread_of_their_own_at_a_lower_priority() {
        let (name, nice) = super::run(|| {
            let name = std::thread::current().name().map(str::to_owned);
            // Field 19 of /proc/thread-self/stat (after the command in parentheses) is nice.
            let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
            let fields: Vec<String> = stat
                .rsplit_once(')')
                .unwrap()
                .1
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            (name, fields[16].parse::<i32>().unwrap())
        })
        .await;
        assert_eq!(name.as_deref(), Some("switchyard-flags"));
        assert_eq!(nice, 10);
    }

    #[tokio::test]
    async fn a_panic_in_a_load_reaches_the_caller_and_the_thread_keeps_going() {
        let joined = tokio::spawn(super::run(|| -> u32 { panic!("bad load") })).await;
        assert!(joined.unwrap_err().is_panic());
        assert_eq!(super::run(|| 7).await, 7);
    }
}
