//! A job run: started only where the tenant is owned and under its lease, told to stop the
//! moment either ends.
//!
//! [`begin`] reads the owner, takes the lease (waiting while another holder has it, up to the
//! spec's `wait`), then reads the owner again, since the tenant may have moved while the lease
//! was being taken: a run is granted only when this side owned the tenant with the lease
//! held. While it runs, a watcher reads the owner every `check_every` (a flag file only when
//! it changed) and renews the lease
//! every third of its time; [`Run::stopped`] resolves when the tenant moves away, a hold
//! starts, the lease is lost, or the store cannot be reached for so long that the lease
//! would expire before the job could stop (its `grace`). [`Run::finish`] releases the lease.
//!
//! ```no_run
//! # async fn billing(_token: u64) {}
//! # async fn example() -> Result<(), flag_store::StoreError> {
//! use flag_store::jobs::run::{Begin, JobSpec, begin};
//! let url = flag_store::StoreUrl::parse("dynamodb://flags?region=eu-west-1", ".".as_ref())?;
//! let store = flag_store::Store::open(&url).await;
//! match begin(&store, &JobSpec::new("billing", "acme", "legacy")).await? {
//!     Begin::Granted(mut run) => {
//!         tokio::select! {
//!             () = billing(run.lease().token) => {}
//!             why = run.stopped() => eprintln!("stopped: {why}"),
//!         }
//!         run.finish().await?;
//!     }
//!     other => eprintln!("not run here: {other}"),
//! }
//! # Ok(()) }
//! ```

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::lease::{Lease, LeaseState, Leases, Taken};
use super::{Owner, Verdict, owner};
use crate::error::{Chain, StoreError};
use crate::model::now_ms;
use crate::store::Store;

/// The lease's time when a job does not set one.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// One job of one tenant on one side.
#[derive(Clone, Debug)]
pub struct JobSpec {
    pub job: String,
    pub tenant: String,
    pub side: String,
    /// Who takes the lease: unique to this run (host, process and a random part by default).
    pub holder: String,
    /// How long a lease holds without renewal: how long a dead holder blocks the other side.
    pub ttl: Duration,
    /// How often a running job's owner is read again.
    pub check_every: Duration,
    /// How long to wait for another holder's lease before giving up.
    pub wait: Duration,
    /// How long the job may take to stop once told: a run is stopped this long before its
    /// lease would expire when the lease cannot be renewed.
    pub grace: Duration,
}

impl JobSpec {
    pub fn new(job: &str, tenant: &str, side: &str) -> JobSpec {
        JobSpec {
            job: job.to_owned(),
            tenant: tenant.to_owned(),
            side: side.to_owned(),
            holder: default_holder(),
            ttl: DEFAULT_TTL,
            check_every: Duration::from_secs(1),
            wait: DEFAULT_TTL + Duration::from_secs(5),
            grace: Duration::from_secs(5),
        }
    }

    /// Checks the times fit together: the owner is read and the lease renewed several times
    /// within its time, and a job told to stop has stopped before its lease expires.
    pub fn check(&self) -> Result<(), String> {
        super::validate_job_name(&self.job)?;
        crate::model::validate_tenant_id(&self.tenant).map_err(|e| e.to_string())?;
        if self.side.is_empty() {
            return Err("the side is empty".into());
        }
        if self.check_every.is_zero() || self.check_every * 3 > self.ttl {
            return Err(format!(
                "the owner check every {:?} must be at most a third of the lease's {:?}",
                self.check_every, self.ttl
            ));
        }
        if self.grace + self.check_every >= self.ttl / 2 {
            return Err(format!(
                "the stop grace {:?} plus the check every {:?} must be under half the lease's {:?}",
                self.grace, self.check_every, self.ttl
            ));
        }
        Ok(())
    }

    fn renew_every(&self) -> Duration {
        self.ttl / 3
    }
}

/// `HOST-PID-RANDOM`: unique to a run.
pub fn default_holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// What [`begin`] decided.
#[derive(Debug)]
pub enum Begin {
    /// Owned here and the lease held: run the job.
    Granted(Box<Run>),
    /// Another side owns the tenant (or nobody does).
    NotHere(Owner),
    /// A hold is on the tenant: retry after it ends.
    Held(Owner),
    /// Another holder kept the lease for the whole wait.
    Busy(LeaseState),
}

impl std::fmt::Display for Begin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Begin::Granted(run) => write!(
                f,
                "granted: lease token {} at flag version {}",
                run.lease.token, run.owner.version
            ),
            Begin::NotHere(o) => match &o.owner {
                Some(side) => write!(
                    f,
                    "{} runs on {side} (flag version {})",
                    o.tenant, o.version
                ),
                None => write!(
                    f,
                    "{} has no flag and there is no `*` flag: nobody runs its jobs",
                    o.tenant
                ),
            },
            Begin::Held(o) => {
                let hold = o.hold.as_ref().expect("a held owner has a hold");
                write!(
                    f,
                    "{} is held by the move {} for {} ms more",
                    o.tenant,
                    hold.id,
                    hold.deadline_ms.saturating_sub(now_ms())
                )
            }
            Begin::Busy(l) => write!(
                f,
                "the lease is held by {} on {} until {} ms from now",
                l.holder,
                l.side,
                l.expires_ms.saturating_sub(now_ms())
            ),
        }
    }
}

/// Why a running job must stop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The tenant's jobs belong to another side now.
    Moved(Owner),
    /// A hold started on the tenant.
    Held(Owner),
    /// The lease was taken by another holder (it expired unrenewed).
    Lost,
    /// The store could not be reached to renew the lease or read the owner, and the lease
    /// would expire within the stop grace.
    Unreachable(String),
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Moved(o) => write!(
                f,
                "{}'s jobs moved to {} (flag version {})",
                o.tenant,
                o.owner.as_deref().unwrap_or("nobody"),
                o.version
            ),
            Stop::Held(o) => write!(
                f,
                "a hold started on {} (move {})",
                o.tenant,
                o.hold.as_ref().map_or("?", |h| h.id.as_str())
            ),
            Stop::Lost => f.write_str("the lease was lost to another holder"),
            Stop::Unreachable(e) => write!(
                f,
                "the store cannot be reached and the lease is about to expire: {e}"
            ),
        }
    }
}

/// A granted run: its lease, kept and watched until [`Run::finish`].
#[derive(Debug)]
pub struct Run {
    lease: Lease,
    owner: Owner,
    leases: Leases,
    stop: watch::Receiver<Option<Stop>>,
    /// The lease as last renewed, from the watcher.
    renewed: watch::Receiver<Lease>,
    watcher: JoinHandle<()>,
}

impl Run {
    /// The lease as taken: its `token` is the fencing token.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// The owner as read with the lease held: its `version` is the flag version.
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// Resolves when the job must stop, with why.
    pub async fn stopped(&mut self) -> Stop {
        loop {
            if let Some(why) = self.stop.borrow_and_update().clone() {
                return why;
            }
            if self.stop.changed().await.is_err() {
                // The watcher ended without a reason: it only ends with one.
                return Stop::Lost;
            }
        }
    }

    /// Why the job was told to stop, if it was.
    pub fn stop_reason(&self) -> Option<Stop> {
        self.stop.borrow().clone()
    }

    /// Stops watching and releases the lease (a lease already lost is left to its holder).
    pub async fn finish(mut self) -> Result<(), StoreError> {
        self.watcher.abort();
        let _ = (&mut self.watcher).await;
        let lease = self.renewed.borrow().clone();
        self.leases.release(&lease).await.map(|_| ())
    }
}

/// A run dropped without [`Run::finish`] (a job that panicked) stops renewing its lease, which
/// then frees itself at its expiry rather than block the other side for as long as the
/// process lives.
impl Drop for Run {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// Starts a run of `spec` if its side owns the tenant, under the lease.
pub async fn begin(store: &Store, spec: &JobSpec) -> Result<Begin, StoreError> {
    spec.check().map_err(StoreError::Job)?;
    let leases = Leases::of(store);
    let deadline = Instant::now() + spec.wait;
    loop {
        let now_owner = owner(store, &spec.tenant).await?;
        match now_owner.verdict(&spec.side) {
            Verdict::RunsHere => {}
            Verdict::NotHere => return Ok(Begin::NotHere(now_owner)),
            Verdict::Held => return Ok(Begin::Held(now_owner)),
        }
        let taken = leases
            .take(&spec.job, &spec.tenant, &spec.holder, &spec.side, spec.ttl)
            .await?;
        let lease = match taken {
            Taken::Granted(lease) => lease,
            Taken::Busy(state) => {
                let now = Instant::now();
                if now >= deadline {
                    return Ok(Begin::Busy(state));
                }
                let poll = spec.check_every.min(Duration::from_millis(100));
                let until_free = Duration::from_millis(state.expires_ms.saturating_sub(now_ms()));
                tokio::time::sleep(poll.min(until_free).min(deadline - now)).await;
                continue;
            }
        };
        // The tenant may have moved, or been held, while the lease was being taken. The file's
        // stamp is taken first: a write after it makes the watcher read again.
        let read_at = file_stamp(store);
        let confirmed = match owner(store, &spec.tenant).await {
            Ok(o) => o,
            Err(e) => {
                let _ = leases.release(&lease).await;
                return Err(e);
            }
        };
        let verdict = confirmed.verdict(&spec.side);
        if verdict != Verdict::RunsHere {
            leases.release(&lease).await?;
            return Ok(match verdict {
                Verdict::Held => Begin::Held(confirmed),
                _ => Begin::NotHere(confirmed),
            });
        }
        let (stop_tx, stop) = watch::channel(None);
        let (renewed_tx, renewed) = watch::channel(lease.clone());
        let watcher = tokio::spawn(watch_run(
            store.clone(),
            leases.clone(),
            spec.clone(),
            (lease.clone(), read_at),
            stop_tx,
            renewed_tx,
        ));
        return Ok(Begin::Granted(Box::new(Run {
            lease,
            owner: confirmed,
            leases,
            stop,
            renewed,
            watcher,
        })));
    }
}

type FileStamp = (u64, u64, std::time::SystemTime);

/// A flag file's stamp; `None` for DynamoDB, which is read at every check.
fn file_stamp(store: &Store) -> Option<FileStamp> {
    match store {
        Store::File(f) => f.stamp(),
        Store::Dynamo(_) => None,
    }
}

/// Reads the owner every `check_every` and renews the lease every third of its time, until a
/// reason to stop is found (then sent, and the watcher ends).
async fn watch_run(
    store: Store,
    leases: Leases,
    spec: JobSpec,
    (mut lease, mut read_at): (Lease, Option<FileStamp>),
    stop: watch::Sender<Option<Stop>>,
    renewed: watch::Sender<Lease>,
) {
    let mut last_renewal = Instant::now();
    // The job must be told to stop this long before its lease expires: its grace, and one
    // check's time for the telling.
    let margin = (spec.grace + spec.check_every).as_millis() as u64;
    // How long a store call may take before the job must be stopped: a call that hangs must
    // not carry the job past its lease.
    let budget =
        |lease: &Lease| Duration::from_millis(lease.expires_ms.saturating_sub(now_ms() + margin));
    let unreachable = |e: Result<StoreError, tokio::time::error::Elapsed>| {
        Stop::Unreachable(match e {
            Ok(e) => Chain(&e).to_string(),
            Err(_) => "no answer before the lease would expire".into(),
        })
    };
    let why = loop {
        tokio::time::sleep(spec.check_every).await;
        let too_late = |lease: &Lease| now_ms() + margin >= lease.expires_ms;
        // A flag file unchanged since the owner was last read says the same: a hold or a move
        // is a write. (A million-tenant file takes most of a second to read.) The stamp is
        // taken before the read, so a write during the read is read at the next check.
        let now_stamp = file_stamp(&store);
        let unchanged = now_stamp.is_some() && now_stamp == read_at;
        read_at = now_stamp;
        if unchanged {
            // Still owned here, as at the last read.
        } else {
            match tokio::time::timeout(budget(&lease), owner(&store, &spec.tenant)).await {
                Ok(Ok(o)) => match o.verdict(&spec.side) {
                    Verdict::RunsHere => {}
                    Verdict::NotHere => break Stop::Moved(o),
                    Verdict::Held => break Stop::Held(o),
                },
                Ok(Err(e)) if too_late(&lease) => break unreachable(Ok(e)),
                Err(elapsed) => break unreachable(Err(elapsed)),
                Ok(Err(_)) => read_at = None,
            }
        }
        if last_renewal.elapsed() < spec.renew_every() {
            continue;
        }
        match tokio::time::timeout(budget(&lease), leases.renew(&lease, spec.ttl)).await {
            Ok(Ok(Some(next))) => {
                lease = next;
                last_renewal = Instant::now();
                renewed.send_replace(lease.clone());
            }
            Ok(Ok(None)) => break Stop::Lost,
            Ok(Err(e)) if too_late(&lease) => break unreachable(Ok(e)),
            Err(elapsed) => break unreachable(Err(elapsed)),
            Ok(Err(_)) => {}
        }
    };
    stop.send_replace(Some(why));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FlagWrite, Placing, StoreUrl};

    #[tokio::test]
    async fn a_run_dropped_without_finishing_stops_renewing_and_its_lease_expires() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreUrl::File(dir.path().join("flags.json"))).await;
        store.create().await.unwrap();
        let write = FlagWrite {
            evacuation: None,
            ramp: None,
            tenant: "acme".into(),
            placing: Some(Placing::Pinned("legacy".into())),
            seal: None,
            shadow: None,
            by: "test".into(),
            reason: "test".into(),
            expect_version: None,
            force: false,
            hold: Default::default(),
            jobs: None,
        };
        store.write(&write, None).await.unwrap();
        let mut spec = JobSpec::new("report", "acme", "legacy");
        spec.ttl = Duration::from_millis(600);
        spec.check_every = Duration::from_millis(100);
        spec.grace = Duration::from_millis(100);
        let Begin::Granted(run) = begin(&store, &spec).await.unwrap() else {
            panic!("legacy owns acme");
        };
        drop(run);
        // Renewed, it would be held for as long as this process lives.
        let leases = Leases::of(&store);
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let lease = leases.get("report", "acme").await.unwrap().unwrap();
            if !lease.held_at(now_ms()) {
                break;
            }
            assert!(
                Instant::now() < until,
                "the dropped run's lease is still renewed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
