//! Holds at the router: a tenant being moved is paused here, on every router, while its
//! requests already sent finish on the old side and the data catches up.
//!
//! - A request of a tenant whose flag carries an active hold is not sent anywhere: it waits
//!   in this router's queue (bounded in count and in the bytes of the heads it holds; when
//!   full, 503 with `Retry-After`) until a new snapshot ends the hold (the move's flip, or its
//!   abort) or the hold's deadline passes, whichever is first; then it is decided again, on
//!   the snapshot of that moment: to the new side after a flip, to the old one otherwise.
//!   Waiters are woken in the order they arrived. A request is never held past the deadline.
//! - Every request of a flag-routed tenant is counted in flight, by a hash of its tenant id
//!   into [`SLOTS`] counters, until its response ends. Once this router has seen every tenant
//!   of a hold (the hold says how many) and none of their requests is in flight (their
//!   tunnels and streams are closed by the streams registry), it acknowledges the hold as
//!   drained in its presence record. Two tenants sharing a slot only make a drain wait longer.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flag_store::fleet::now_ms;
use flag_store::{FlagState, HoldItem};
use tokio::sync::{oneshot, watch};

/// Counters of in-flight requests, by tenant slot.
pub const SLOTS: usize = 1 << 16;

/// In-flight requests of flag-routed tenants, by slot. One array for the process: a guard
/// needs no pointer to it, and routers in one process only ever wait longer for each other.
static IN_FLIGHT: [AtomicU32; SLOTS] = [const { AtomicU32::new(0) }; SLOTS];

/// How often a drain looks at its tenants' counters.
const DRAIN_POLL: Duration = Duration::from_millis(2);

fn slot(tenant: &str) -> usize {
    foldhash::fast::FixedState::with_seed(0x0515_7a7d).hash_one(tenant) as usize % SLOTS
}

const _: () = assert!(SLOTS == 1 << 16, "a slot is a u16");

/// A request of a tenant in flight until dropped (with its response body). Its slot fits in
/// two bytes, and the slot of the ramp its tenant is in (`observe::ramp`) in two more, so they
/// ride in the padding of the structs that carry them.
#[derive(Debug)]
pub struct InFlight(u16, u16);

/// No ramp.
const NO_RAMP: u16 = u16::MAX;

impl InFlight {
    pub fn enter(tenant: &str) -> InFlight {
        let at = slot(tenant);
        // Ordered with the snapshot read that follows (a locked add on x86, as Relaxed is).
        IN_FLIGHT[at].fetch_add(1, Ordering::SeqCst);
        InFlight(at as u16, NO_RAMP)
    }

    /// Counts the request in a ramp's evidence when it completes.
    pub fn set_ramp(&mut self, slot: Option<u16>) {
        self.1 = slot.unwrap_or(NO_RAMP);
    }

    /// The ramp slot its completion counts in.
    pub fn ramp(&self) -> Option<u16> {
        (self.1 != NO_RAMP).then_some(self.1)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT[self.0 as usize].fetch_sub(1, Ordering::Release);
    }
}

fn in_flight(tenant: &str) -> u32 {
    IN_FLIGHT[slot(tenant)].load(Ordering::SeqCst)
}

/// The queue is full: the request is refused with 503 and `Retry-After`.
#[derive(Debug, Clone, Copy)]
pub struct QueueFull;

/// What the holds did, for the metrics.
#[derive(Debug)]
pub struct HoldCounts {
    /// Requests queued under a hold.
    pub queued: AtomicU64,
    /// Queued requests released by a snapshot that ended their hold.
    pub released: AtomicU64,
    /// Queued requests released by their hold's deadline.
    pub expired: AtomicU64,
    /// Requests refused because the queue was full.
    pub refused: AtomicU64,
    /// Holds acknowledged as drained.
    pub drained: AtomicU64,
    /// How long the released requests waited.
    pub waited: prometheus::Histogram,
}

impl Default for HoldCounts {
    fn default() -> Self {
        let opts = prometheus::HistogramOpts::new(
            "switchyard_hold_wait_seconds",
            "How long requests waited under a hold before going on (released or expired); their latency in switchyard_request_duration_seconds counts from then.",
        )
        .buckets(vec![
            0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        ]);
        HoldCounts {
            queued: AtomicU64::default(),
            released: AtomicU64::default(),
            expired: AtomicU64::default(),
            refused: AtomicU64::default(),
            drained: AtomicU64::default(),
            waited: prometheus::Histogram::with_opts(opts).expect("valid histogram options"),
        }
    }
}

/// This router's holds: the queue, and the holds it acknowledges.
#[derive(Debug)]
pub struct Holds {
    max_queued: usize,
    max_queued_bytes: u64,
    queue: Mutex<Queue>,
    pub counts: HoldCounts,
    drained: watch::Sender<Vec<String>>,
}

#[derive(Debug, Default)]
struct Queue {
    waiters: VecDeque<oneshot::Sender<()>>,
    /// Requests waiting, and the bytes of their heads.
    held: usize,
    bytes: u64,
}

impl Holds {
    pub fn new(max_queued: usize, max_queued_bytes: u64) -> Arc<Holds> {
        Arc::new(Holds {
            max_queued,
            max_queued_bytes,
            queue: Mutex::default(),
            counts: HoldCounts::default(),
            drained: watch::channel(Vec::new()).0,
        })
    }

    /// The holds acknowledged as drained, for the presence record.
    pub fn drained(&self) -> watch::Receiver<Vec<String>> {
        self.drained.subscribe()
    }

    /// Requests waiting now.
    pub fn queued(&self) -> usize {
        self.queue.lock().expect("hold queue lock").held
    }

    /// Waits while `hold` holds the request: until the next snapshot (the caller decides
    /// again) or the hold's deadline; true when the deadline ended the wait. `head_bytes`
    /// counts against the queue's byte bound; `first` says this request was not queued yet.
    pub async fn wait(
        &self,
        hold: &HoldItem,
        head_bytes: u64,
        first: bool,
    ) -> Result<bool, QueueFull> {
        let (tx, rx) = oneshot::channel();
        {
            let mut queue = self.queue.lock().expect("hold queue lock");
            if queue.held >= self.max_queued || queue.bytes + head_bytes > self.max_queued_bytes {
                self.counts.refused.fetch_add(1, Ordering::Relaxed);
                return Err(QueueFull);
            }
            queue.held += 1;
            queue.bytes += head_bytes;
            queue.waiters.push_back(tx);
        }
        if first {
            self.counts.queued.fetch_add(1, Ordering::Relaxed);
        }
        let left = Duration::from_millis(hold.deadline_ms.saturating_sub(now_ms()));
        let deadline = tokio::time::Instant::now() + left;
        let expired = tokio::select! {
            _ = rx => false,
            () = tokio::time::sleep_until(deadline) => true,
        };
        {
            let mut queue = self.queue.lock().expect("hold queue lock");
            queue.held -= 1;
            queue.bytes -= head_bytes;
        }
        Ok(expired)
    }

    /// A request that waited for `waited` goes on: its hold ended, or its deadline passed.
    pub fn released(&self, expired: bool, waited: Duration) {
        let count = match expired {
            false => &self.counts.released,
            true => &self.counts.expired,
        };
        count.fetch_add(1, Ordering::Relaxed);
        self.counts.waited.observe(waited.as_secs_f64());
    }

    /// Wakes every waiting request, in the order they arrived, to be decided again.
    fn wake_all(&self) {
        let waiters = std::mem::take(&mut self.queue.lock().expect("hold queue lock").waiters);
        for waiter in waiters {
            let _ = waiter.send(());
        }
    }
}

impl crate::observe::metrics::Families for Holds {
    fn collect(&self, out: &mut Vec<prometheus::proto::MetricFamily>) {
        use crate::observe::metrics::{Family, single};
        let requests = Family::counter(
            "switchyard_hold_requests_total",
            "Requests of tenants under a hold, by outcome: queued, released (the hold ended), expired (released at its deadline), refused (the queue was full).",
            &["outcome"],
        );
        let c = &self.counts;
        for (outcome, n) in [
            ("queued", &c.queued),
            ("released", &c.released),
            ("expired", &c.expired),
            ("refused", &c.refused),
        ] {
            requests.set(&[outcome], n.load(Ordering::Relaxed) as f64);
        }
        requests.into(out);
        single(
            out,
            (
                "switchyard_hold_queued",
                "gauge",
                "Requests waiting now for their tenant's hold to end.",
            ),
            self.queued() as f64,
        );
        single(
            out,
            (
                "switchyard_holds_drained_total",
                "counter",
                "Holds this router acknowledged as drained: all their tenants seen, none of their requests in flight.",
            ),
            c.drained.load(Ordering::Relaxed) as f64,
        );
        out.extend(prometheus::core::Collector::collect(&c.waited));
    }
}

/// Follows flag snapshots until `stop`: wakes the queue on each, and acknowledges each hold
/// once every one of its tenants is seen here and none of their requests is in flight.
pub async fn follow(holds: Arc<Holds>, flags: Arc<FlagState>, mut stop: watch::Receiver<bool>) {
    let mut generations = flags.subscribe();
    loop {
        let pending = acknowledge(&holds, &flags);
        tokio::select! {
            changed = generations.changed() => {
                if changed.is_err() {
                    return;
                }
                holds.wake_all();
            }
            // A drain in progress looks again shortly; with none, only a snapshot wakes this.
            () = tokio::time::sleep(DRAIN_POLL), if pending => {}
            _ = crate::shutdown::until_set(&mut stop) => return,
        }
    }
}

/// Updates the acknowledgements; true while some active hold is not drained yet.
fn acknowledge(holds: &Holds, flags: &FlagState) -> bool {
    let snapshot = flags.load();
    let now = now_ms();
    let mut active: BTreeMap<&str, (&HoldItem, Vec<&str>)> = BTreeMap::new();
    if snapshot.has_holds() {
        for (tenant, hold) in snapshot.holds() {
            if hold.active_at(now) {
                let entry = active.entry(&hold.id).or_insert((hold, Vec::new()));
                entry.1.push(tenant);
            }
        }
    }
    let before: BTreeSet<String> = holds.drained.borrow().iter().cloned().collect();
    let mut drained = BTreeSet::new();
    let mut pending = false;
    for (id, (hold, tenants)) in &active {
        if before.contains(*id) {
            drained.insert((*id).to_owned());
            continue;
        }
        let seen_all = tenants.len() >= hold.tenants as usize;
        if seen_all && tenants.iter().all(|t| in_flight(t) == 0) {
            tracing::info!(hold = %id, tenants = tenants.len(), "hold drained: its tenants' requests queue here and none is in flight");
            holds.counts.drained.fetch_add(1, Ordering::Relaxed);
            drained.insert((*id).to_owned());
        } else {
            pending = true;
        }
    }
    if drained != before {
        holds.drained.send_replace(drained.into_iter().collect());
    }
    pending
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_is_in_flight_until_its_last_request_ends() {
        assert_eq!(in_flight("tenant-in-flight-test"), 0);
        let a = InFlight::enter("tenant-in-flight-test");
        let b = InFlight::enter("tenant-in-flight-test");
        assert_eq!(in_flight("tenant-in-flight-test"), 2);
        drop(a);
        assert_eq!(in_flight("tenant-in-flight-test"), 1);
        drop(b);
        assert_eq!(in_flight("tenant-in-flight-test"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_refuses_and_a_deadline_releases() {
        let holds = Holds::new(1, 1 << 20);
        let hold = HoldItem {
            id: "h1".into(),
            tenants: 1,
            deadline_ms: now_ms() + 1_000,
        };
        let first = tokio::spawn({
            let (holds, hold) = (holds.clone(), hold.clone());
            async move { holds.wait(&hold, 100, true).await }
        });
        while holds.queued() == 0 {
            tokio::task::yield_now().await;
        }
        // The first request waits; the queue (of one) is full for the second.
        assert!(holds.wait(&hold, 100, true).await.is_err());
        assert_eq!(holds.counts.refused.load(Ordering::Relaxed), 1);
        // Nothing ends the hold: its deadline releases the request.
        assert!(first.await.unwrap().unwrap(), "released by the deadline");
        assert_eq!(holds.counts.queued.load(Ordering::Relaxed), 1);
        assert_eq!(holds.queued(), 0);
    }
}
