//! Scheduled jobs on one side: `switchyard owns`, `switchyard jobs run`, the library's runs
//! and leases, and a router's `/v1/owner` read API.
//!
//! The proof: two sides' job loops (50 tenants each, every 100 ms) while 200 flips, splits,
//! holds and seals run, on the file store (16 tenants and 80 changes on DynamoDB Local,
//! which is slower on two cores): no tenant's runs ever
//! overlap, fencing tokens only grow, and every run was on the side that owned its tenant at
//! the flag version it started with. Then the real binary: the exit codes, a command stopped
//! when its tenant moves, and a lease holder killed mid-run.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flag_store::jobs::Owner;
use flag_store::jobs::lease::Leases;
use flag_store::jobs::run::{Begin, JobSpec, Stop, begin};
use flag_store::store::Store;
use flag_store::{FlagWrite, HoldItem, HoldWrite, Placing, StoreUrl};
use rand::Rng;

use crate::dynamo::Emulator;
use crate::support::*;

/// One job run, as the job recorded it.
#[derive(Clone, Debug)]
struct Ran {
    side: &'static str,
    start: Duration,
    end: Duration,
    token: u64,
    version: u64,
    stopped: Option<Stop>,
}

/// What the loops saw besides runs.
#[derive(Debug, Default)]
struct Seen {
    runs: HashMap<String, Vec<Ran>>,
    not_here: u64,
    held: u64,
    busy: u64,
}

/// Each tenant's flag versions and who owned its jobs at each (None: held).
type Owners = HashMap<String, BTreeMap<u64, Option<String>>>;

struct Loops {
    store: Store,
    t0: Instant,
    seen: Mutex<Seen>,
    done: AtomicBool,
    check_every: Duration,
    ttl: Duration,
}

impl Loops {
    /// One side's loop: every 100 ms, a run for each tenant not already running here.
    async fn side(self: Arc<Self>, side: &'static str, tenants: Vec<String>) {
        let busy: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut attempts = tokio::task::JoinSet::new();
        while !self.done.load(Ordering::Acquire) {
            tick.tick().await;
            for tenant in &tenants {
                if !busy.lock().unwrap().insert(tenant.clone()) {
                    continue;
                }
                let (me, busy, tenant) = (self.clone(), busy.clone(), tenant.clone());
                attempts.spawn(async move {
                    me.attempt(side, &tenant).await;
                    busy.lock().unwrap().remove(&tenant);
                });
            }
            while attempts.try_join_next().is_some() {}
        }
        while attempts.join_next().await.is_some() {}
    }

    async fn attempt(&self, side: &'static str, tenant: &str) {
        let mut spec = JobSpec::new("nightly", tenant, side);
        spec.ttl = self.ttl;
        spec.check_every = self.check_every;
        spec.grace = Duration::from_millis(100);
        spec.wait = Duration::from_secs(1);
        let begun = begin(&self.store, &spec)
            .await
            .unwrap_or_else(|e| panic!("{tenant} on {side}: {}", flag_store::error::Chain(&e)));
        let mut run = match begun {
            Begin::Granted(run) => run,
            Begin::NotHere(_) => return self.seen.lock().unwrap().not_here += 1,
            Begin::Held(_) => return self.seen.lock().unwrap().held += 1,
            Begin::Busy(_) => return self.seen.lock().unwrap().busy += 1,
        };
        let start = self.t0.elapsed();
        let work = Duration::from_millis(rand::rng().random_range(50..500));
        let stopped = tokio::select! {
            () = tokio::time::sleep(work) => None,
            why = run.stopped() => Some(why),
        };
        // The job's end, recorded before its lease is released.
        let end = self.t0.elapsed();
        let ran = Ran {
            side,
            start,
            end,
            token: run.lease().token,
            version: run.owner().version,
            stopped,
        };
        self.seen
            .lock()
            .unwrap()
            .runs
            .entry(tenant.to_owned())
            .or_default()
            .push(ran);
        run.finish().await.unwrap();
    }
}

fn write(tenant: &str, placing: Option<Placing>) -> FlagWrite {
    FlagWrite {
        evacuation: None,
        ramp: None,
        tenant: tenant.into(),
        placing,
        seal: None,
        shadow: None,
        by: "test".into(),
        reason: "churn".into(),
        expect_version: None,
        // Sealed tenants move too: the test is about jobs, not seals.
        force: true,
        hold: HoldWrite::None,
        jobs: None,
    }
}

/// Records who owns the tenant's jobs at the version a write produced.
fn record(owners: &Mutex<Owners>, item: &flag_store::FlagItem) {
    let o = Owner::decide(&item.tenant, Some(item), None, flag_store::fleet::now_ms()).unwrap();
    let owner = if o.hold.is_some() { None } else { o.owner };
    (owners.lock().unwrap())
        .entry(item.tenant.clone())
        .or_default()
        .insert(item.version, owner);
}

/// Changes to random tenants: flips, splits (some naming a job side), holds (set, then ended
/// by a flip), seals and unseals.
async fn churn(
    store: &Store,
    tenants: &[String],
    changes: u32,
    owners: &Mutex<Owners>,
) -> [u32; 4] {
    let mut done = [0u32; 4];
    let sides = ["legacy", "new"];
    for step in 0..changes {
        let (tenant, kind, flip_to, weight, jobs) = {
            let mut rng = rand::rng();
            (
                tenants[rng.random_range(0..tenants.len())].clone(),
                rng.random_range(0..4usize),
                sides[rng.random_range(0..2)],
                rng.random_range(0..=100u32),
                rng.random_bool(0.5),
            )
        };
        let (_, new) = match kind {
            0 => store.write(&write(&tenant, Some(pin(flip_to))), None).await,
            1 => {
                let weights = BTreeMap::from([
                    ("legacy".to_owned(), weight),
                    ("new".to_owned(), 100 - weight),
                ]);
                let mut w = write(&tenant, Some(Placing::Split(weights)));
                w.jobs = jobs.then(|| flip_to.to_owned()).map(Some);
                store.write(&w, None).await
            }
            2 => {
                let id = format!("h{step}");
                let hold = HoldItem {
                    id: id.clone(),
                    tenants: 1,
                    deadline_ms: flag_store::fleet::now_ms() + 10_000,
                };
                let set = FlagWrite {
                    hold: HoldWrite::Set(hold),
                    ..write(&tenant, None)
                };
                let (_, held) = store.write(&set, None).await.unwrap();
                record(owners, &held);
                tokio::time::sleep(Duration::from_millis(150)).await;
                let flip = FlagWrite {
                    hold: HoldWrite::End(id),
                    ..write(&tenant, Some(pin(flip_to)))
                };
                store.write(&flip, None).await
            }
            _ => {
                let mut w = write(&tenant, None);
                w.seal = Some(weight % 2 == 0);
                store.write(&w, None).await
            }
        }
        .unwrap_or_else(|e| panic!("step {step}: {}", flag_store::error::Chain(&e)));
        record(owners, &new);
        done[kind] += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done
}

/// Runs the two sides' loops through the churn and checks every run.
async fn never_both_sides(
    store: Store,
    (tenants, changes): (usize, u32),
    check_every: Duration,
    ttl: Duration,
) {
    let names: Vec<String> = (0..tenants).map(|i| format!("job-t{i:02}")).collect();
    let owners = Mutex::new(Owners::new());
    for (i, t) in names.iter().enumerate() {
        let side = if i % 2 == 0 { "legacy" } else { "new" };
        let (_, item) = store.write(&write(t, Some(pin(side))), None).await.unwrap();
        record(&owners, &item);
    }
    let loops = Arc::new(Loops {
        store: store.clone(),
        t0: Instant::now(),
        seen: Mutex::default(),
        done: AtomicBool::new(false),
        check_every,
        ttl,
    });
    let legacy = tokio::spawn(loops.clone().side("legacy", names.clone()));
    let new = tokio::spawn(loops.clone().side("new", names.clone()));
    let churned = Instant::now();
    let kinds = churn(&store, &names, changes, &owners).await;
    let churned = churned.elapsed();
    loops.done.store(true, Ordering::Release);
    legacy.await.unwrap();
    new.await.unwrap();

    let seen = loops.seen.lock().unwrap();
    let owners = owners.lock().unwrap();
    let mut total = 0;
    let mut moved_mid_run = 0;
    let mut handovers = 0;
    for (tenant, runs) in &seen.runs {
        let mut runs = runs.clone();
        runs.sort_by_key(|r| r.start);
        total += runs.len();
        for pair in runs.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            assert!(a.end <= b.start, "{tenant}: runs overlap: {a:?} then {b:?}");
            assert!(
                a.token < b.token,
                "{tenant}: fencing tokens went back: {a:?} then {b:?}"
            );
            handovers += u32::from(a.side != b.side);
        }
        for r in &runs {
            let owner = owners[tenant].get(&r.version);
            assert_eq!(
                owner,
                Some(&Some(r.side.to_owned())),
                "{tenant}: a run on {} at flag version {} it did not own: {r:?} (versions: {:?})",
                r.side,
                r.version,
                owners[tenant]
            );
            moved_mid_run += u32::from(matches!(r.stopped, Some(Stop::Moved(_))));
        }
    }
    let on = |side| {
        seen.runs
            .values()
            .flatten()
            .filter(|r| r.side == side)
            .count()
    };
    eprintln!(
        "{total} runs ({} legacy, {} new), {moved_mid_run} stopped by a move, {handovers} handovers; not here {}, held {}, busy {}; changes {kinds:?} in {churned:?}",
        on("legacy"),
        on("new"),
        seen.not_here,
        seen.held,
        seen.busy
    );
    assert!(
        on("legacy") > tenants && on("new") > tenants,
        "both sides ran jobs"
    );
    assert!(moved_mid_run > 0, "some runs were stopped by a move");
    assert!(seen.held > 0, "some runs waited out a hold");
    assert!(
        handovers > 0,
        "some tenants' jobs moved from one side to the other"
    );
    assert!(
        kinds.iter().all(|&k| k > changes / 10),
        "every kind of change ran: {kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_never_run_on_both_sides_at_once_through_flips_splits_holds_and_seals_on_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = StoreUrl::File(dir.path().join("flags.json"));
    let store = Store::open(&url).await;
    store.create().await.unwrap();
    never_both_sides(
        store,
        (50, 200),
        Duration::from_millis(50),
        Duration::from_secs(2),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_never_run_on_both_sides_at_once_through_flips_splits_holds_and_seals_on_dynamodb() {
    let emulator = Emulator::start().await;
    let store = Store::open(&StoreUrl::parse(&emulator.url(), Path::new(".")).unwrap()).await;
    store.create().await.unwrap();
    // Fewer tenants and changes than on a file: DynamoDB Local on two cores is slower, and
    // the same interleavings happen.
    never_both_sides(
        store,
        (16, 80),
        Duration::from_millis(100),
        Duration::from_secs(3),
    )
    .await;
}

/// A command for `jobs run` that appends `start TOKEN VERSION MS`, then `end MS` (or `term MS`
/// when stopped) to `log`, running for `secs`.
fn job_command(log: &Path, secs: u32) -> Vec<String> {
    let log = log.display();
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "echo \"start $SWITCHYARD_FENCING_TOKEN $SWITCHYARD_FLAG_VERSION $(date +%s%3N) $$\" >> {log}; \
             trap 'echo \"term $(date +%s%3N)\" >> {log}; exit 143' TERM; \
             sleep {secs} & wait $!; echo \"end $(date +%s%3N)\" >> {log}"
        ),
    ]
}

/// DynamoDB Local with its tables, and acme pinned to legacy: the emulator (it stops when
/// dropped), its store URL and the store.
async fn dynamo_with_acme_on_legacy() -> (Emulator, String, Store) {
    let emulator = Emulator::start().await;
    let url = emulator.url();
    let store = Store::open(&StoreUrl::parse(&url, Path::new(".")).unwrap()).await;
    store.create().await.unwrap();
    store
        .write(&write("acme", Some(pin("legacy"))), None)
        .await
        .unwrap();
    (emulator, url, store)
}

/// `jobs run` as a child process.
fn jobs_run(url: &str, side: &str, extra: &[&str], command: &[String]) -> std::process::Child {
    let mut args = vec![
        "jobs", "run", "--job", "nightly", "--tenant", "acme", "--side", side, "--store", url,
    ];
    args.extend_from_slice(extra);
    args.push("--");
    std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(&args)
        .args(command)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// The lines of a job log, once it has `lines` of them.
async fn log_lines(log: &Path, lines: usize) -> Vec<String> {
    let read = || {
        (std::fs::read_to_string(log).unwrap_or_default().lines())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    wait_for(&format!("{lines} lines in {}", log.display()), || {
        read().len() >= lines
    })
    .await;
    read()
}

/// The milliseconds field `at` of a log line.
fn ms(line: &str, at: usize) -> u64 {
    line.split(' ').nth(at).unwrap().parse().unwrap()
}

async fn exited(child: std::process::Child) -> (i32, String) {
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owns_and_jobs_run_exit_codes_say_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let flags = dir.path().join("flags.json");
    let url = format!("file:{}", flags.display());
    // The store goes before a command's `--`.
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        let at = all.iter().position(|a| *a == "--").unwrap_or(all.len());
        all.splice(at..at, ["--store", url.as_str()]);
        switchyard(&all)
    };
    assert_eq!(run(&["flags", "create-table"]).0, 0);
    let set = |args: &[&str]| {
        let mut all = vec!["flags", "set"];
        all.extend_from_slice(args);
        all.extend(["--reason", "test"]);
        let (code, _, err) = run(&all);
        assert_eq!(code, 0, "{err}");
    };
    set(&["acme", "--target", "legacy"]);
    set(&["globex", "--split", "legacy=30,new=70"]);
    set(&["*", "--target", "legacy"]);

    let (code, out, _) = run(&["owns", "acme", "--side", "legacy"]);
    assert_eq!(
        (code, out.trim()),
        (0, "acme: runs here, on legacy (flag version 1)")
    );
    let (code, out, _) = run(&["owns", "acme", "--side", "new"]);
    assert_eq!(
        (code, out.trim()),
        (1, "acme: not here: runs on legacy (flag version 1)")
    );
    // A split tenant's jobs: its heaviest side, until a side is named.
    assert_eq!(run(&["owns", "globex", "--side", "new"]).0, 0);
    set(&["globex", "--jobs", "legacy"]);
    assert_eq!(run(&["owns", "globex", "--side", "legacy"]).0, 0);
    let (code, _, err) = run(&["flags", "set", "globex", "--jobs", "use2", "--reason", "x"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("side \"use2\" is not one of the split's targets"),
        "{err}"
    );
    // A tenant without a flag follows `*`, as its requests do.
    let (code, out, _) = run(&["owns", "initech", "--side", "legacy"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("(by the `*` flag)"), "{out}");
    let (code, out, err) = run(&["owns", "--list", "--side", "legacy"]);
    assert_eq!((code, out.as_str()), (0, "acme\nglobex\n"), "{err}");
    assert!(err.contains("the `*` flag"), "{err}");

    let job = |side: &str, rest: &[&str]| {
        let mut all = vec![
            "jobs", "run", "--job", "j", "--tenant", "acme", "--side", side,
        ];
        all.extend_from_slice(rest);
        run(&all)
    };

    // Held: nobody runs the tenant's jobs until the hold ends.
    let store = flag_store::FileStore::new(&flags);
    let hold = HoldItem {
        id: "h1".into(),
        tenants: 1,
        deadline_ms: flag_store::fleet::now_ms() + 60_000,
    };
    store
        .write(
            &FlagWrite {
                hold: HoldWrite::Set(hold),
                ..write("acme", None)
            },
            None,
        )
        .unwrap();
    let (code, out, _) = run(&["owns", "acme", "--side", "legacy"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("held by the move h1"), "{out}");
    let (code, _, err) = job("legacy", &["--", "true"]);
    assert_eq!(code, 3, "{err}");
    store
        .write(
            &FlagWrite {
                hold: HoldWrite::End("h1".into()),
                ..write("acme", None)
            },
            None,
        )
        .unwrap();

    // Runs where owned, with the token and version; the command's failure is its own code.
    let log = dir.path().join("job.log");
    let (code, _, err) = job(
        "legacy",
        &[
            "--",
            "sh",
            "-c",
            &format!(
                "echo $SWITCHYARD_FENCING_TOKEN $SWITCHYARD_FLAG_VERSION >> {}",
                log.display()
            ),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "1 3\n");
    let (code, _, err) = job("new", &["--", "touch", "never"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not started: acme runs on legacy"), "{err}");
    let (code, _, err) = job("legacy", &["--", "false"]);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("the command failed: exit status: 1"), "{err}");
    let (code, _, err) = job("legacy", &["--", "/no/such/command"]);
    assert_eq!(code, 6, "{err}");

    // Another holder's lease: the run waits for it, then gives up.
    let leases = Leases::File(Leases::folder(&flags));
    let taken = leases
        .take("j", "acme", "elsewhere", "legacy", Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        matches!(taken, flag_store::jobs::lease::Taken::Granted(ref l) if l.token == 4),
        "{taken:?}"
    );
    let (code, _, err) = job("legacy", &["--wait", "300ms", "--", "touch", "never"]);
    assert_eq!(code, 7, "{err}");
    assert!(
        err.contains("the lease is held by elsewhere on legacy"),
        "{err}"
    );

    // Cannot tell: the store is unreadable, and the command is not started.
    let (code, _, err) = switchyard(&[
        "owns",
        "acme",
        "--side",
        "legacy",
        "--store",
        "file:/no/such/flags.json",
    ]);
    assert_eq!(code, 4, "{err}");
    let (code, _, err) = switchyard(&[
        "jobs",
        "run",
        "--job",
        "j",
        "--tenant",
        "acme",
        "--side",
        "legacy",
        "--store",
        "file:/no/such/flags.json",
        "--",
        "touch",
        "never",
    ]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("cannot tell who owns the tenant"), "{err}");
    assert!(
        !Path::new("never").exists(),
        "no refused run started its command"
    );
    // Times that do not fit together are a bad command line.
    let (code, _, err) = job(
        "legacy",
        &["--lease", "2s", "--check-every", "1s", "--", "true"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("at most a third of the lease"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_is_stopped_when_its_tenant_moves_and_the_new_side_waits_for_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    let flags = dir.path().join("flags.json");
    let url = format!("file:{}", flags.display());
    let store = Store::open(&StoreUrl::File(flags.clone())).await;
    store.create().await.unwrap();
    store
        .write(&write("acme", Some(pin("legacy"))), None)
        .await
        .unwrap();

    let old_log = dir.path().join("legacy.log");
    let fast = ["--check-every", "100ms", "--grace", "2s", "--lease", "10s"];
    let old = jobs_run(&url, "legacy", &fast, &job_command(&old_log, 60));
    let started = log_lines(&old_log, 1).await;
    assert!(started[0].starts_with("start 1 1 "), "{started:?}");
    // The new side asks first: not its tenant yet.
    let new_log = dir.path().join("new.log");
    let (code, _) = exited(jobs_run(&url, "new", &fast, &job_command(&new_log, 0))).await;
    assert_eq!(code, 1);

    store
        .write(&write("acme", Some(pin("new"))), None)
        .await
        .unwrap();
    // The new side starts at once; it must wait for the old side's command to stop.
    let new = jobs_run(&url, "new", &fast, &job_command(&new_log, 0));
    let (code, err) = exited(old).await;
    assert_eq!(code, 1, "stopped because the tenant moved away: {err}");
    assert!(
        err.contains("stopping the command: acme's jobs moved to new (flag version 2)"),
        "{err}"
    );
    let old_lines = log_lines(&old_log, 2).await;
    assert!(
        old_lines[1].starts_with("term "),
        "SIGTERM reached the command: {old_lines:?}"
    );
    let (code, err) = exited(new).await;
    assert_eq!(code, 0, "{err}");
    let new_lines = log_lines(&new_log, 2).await;
    assert!(
        new_lines[0].starts_with("start 2 2 "),
        "the next token, the new version: {new_lines:?}"
    );
    assert!(
        ms(&new_lines[0], 3) >= ms(&old_lines[1], 1),
        "the new side started after the old side's command stopped: {old_lines:?} {new_lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_lease_holder_blocks_the_other_side_until_its_lease_expires_and_no_longer() {
    let (emulator, url, store) = dynamo_with_acme_on_legacy().await;
    let dir = tempfile::tempdir().unwrap();

    let old_log = dir.path().join("legacy.log");
    let times = ["--lease", "4s", "--check-every", "500ms", "--grace", "1s"];
    let mut old = jobs_run(&url, "legacy", &times, &job_command(&old_log, 60));
    let started = log_lines(&old_log, 1).await;
    let command_pid: i32 = started[0].split(' ').nth(4).unwrap().parse().unwrap();
    old.kill().unwrap();
    old.wait().unwrap();
    // The command dies with its wrapper (the parent-death signal), never to run unleased.
    wait_for("the command to die with its wrapper", || {
        !Path::new(&format!("/proc/{command_pid}")).exists()
    })
    .await;
    // The lease as the dead holder left it, read with the AWS SDK.
    let item = emulator
        .sdk()
        .get_item()
        .table_name("flags-fleet")
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("lease#nightly#acme".into()),
        )
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    let item = item.item().unwrap();
    let number = |k: &str| -> u64 { item[k].as_n().unwrap().parse().unwrap() };
    let (expires_ms, token) = (number("expires_ms"), number("token"));
    assert_eq!(token, 1);
    assert!(!item["holder"].as_s().unwrap().is_empty(), "never released");

    store
        .write(&write("acme", Some(pin("new"))), None)
        .await
        .unwrap();
    let new_log = dir.path().join("new.log");
    let (code, err) = exited(jobs_run(&url, "new", &times, &job_command(&new_log, 0))).await;
    assert_eq!(code, 0, "{err}");
    let lines = log_lines(&new_log, 2).await;
    assert!(lines[0].starts_with("start 2 2 "), "{lines:?}");
    let start = ms(&lines[0], 3);
    assert!(
        start >= expires_ms,
        "the new side started {} ms before the dead holder's lease expired",
        expires_ms - start
    );
    assert!(
        start < expires_ms + 4_000,
        "the new side started {} ms after the lease expired, more than a lease's time",
        start - expires_ms
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_answers_who_owns_a_tenant_behind_its_read_token() {
    let mut setup = Setup::new().await;
    std::fs::write(
        setup.dir.path().join("admin.token"),
        "write-0123456789abcdef",
    )
    .unwrap();
    std::fs::write(setup.dir.path().join("read.token"), "read-0123456789abcdef").unwrap();
    setup.extra = "admin_token_file = \"admin.token\"\nread_token_file = \"read.token\"".into();
    setup.set("acme", Placing::parse_split("legacy=60,new=40").unwrap());
    let router = setup.start().await;
    let ask = |path: &'static str, token: Option<&'static str>| {
        let router = &router;
        async move {
            let auth = token.map(|t| format!("Bearer {t}"));
            let headers: Vec<(&str, &str)> = auth
                .as_deref()
                .map(|a| ("authorization", a))
                .into_iter()
                .collect();
            let (status, _, body) =
                admin_request(router, http::Method::GET, path, &headers, "").await;
            (status, body)
        }
    };
    let (status, body) = ask("/v1/owner/acme?side=legacy", None).await;
    assert_eq!(status, http::StatusCode::UNAUTHORIZED, "{body}");
    let (status, _) = ask("/v1/owner/acme?side=legacy", Some("read-0123456789abcdeX")).await;
    assert_eq!(status, http::StatusCode::UNAUTHORIZED);
    let (status, body) = ask("/v1/owner/acme?side=legacy", Some("read-0123456789abcdef")).await;
    assert_eq!(status, http::StatusCode::OK, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["owner"], "legacy");
    assert_eq!(answer["runs_here"], true);
    assert_eq!(answer["verdict"], "runs_here");
    assert_eq!(answer["flag_version"], 1);
    let (_, body) = ask("/v1/owner/globex?side=new", Some("write-0123456789abcdef")).await;
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&answer["owner"], &answer["decided_by"], &answer["verdict"]),
        (&"legacy".into(), &"default_flag".into(), &"not_here".into())
    );
    let (status, body) = ask("/v1/owner/acme?side=use2", Some("read-0123456789abcdef")).await;
    assert_eq!(status, http::StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("side \\\"use2\\\" is not a target"), "{body}");

    // The read token cannot write; the write token names the job side, audited like any write.
    let put = |token: &'static str| {
        let router = &router;
        async move {
            let auth = format!("Bearer {token}");
            admin_request(
                router,
                http::Method::PUT,
                "/flags/acme",
                &[("authorization", &auth), ("if-match", "\"1\"")],
                r#"{"jobs":"new","reason":"billing runs on new"}"#,
            )
            .await
        }
    };
    let (status, _, _) = put("read-0123456789abcdef").await;
    assert_eq!(status, http::StatusCode::UNAUTHORIZED);
    let (status, _, body) = put("write-0123456789abcdef").await;
    assert_eq!(status, http::StatusCode::OK, "{body}");
    let (_, body) = ask("/v1/owner/acme?side=new", Some("read-0123456789abcdef")).await;
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&answer["owner"], &answer["flag_version"]),
        (&"new".into(), &2.into())
    );
    router.shutdown().await;
}

#[test]
fn a_read_token_that_is_the_write_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t"), "same-0123456789abcdef").unwrap();
    let config = "[server]\nadmin_token_file = \"t\"\nread_token_file = \"t\"\n[flags]\nsource = \"file:f.json\"\ndefault_target = \"a\"\n[targets.a]\nendpoints = [\"http://127.0.0.1:1\"]\n[[routes]]\nname = \"r\"\npath_prefix = \"/\"\n";
    let err = switchyard::Config::parse(config, dir.path(), "router.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("server.read_token_file"), "{err}");
    assert!(err.contains("cannot write"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_without_flags_cannot_tell_who_owns_a_tenant() {
    let mut setup = Setup::new().await;
    std::fs::write(setup.dir.path().join("read.token"), "read-0123456789abcdef").unwrap();
    setup.extra = "read_token_file = \"read.token\"".into();
    // Unreadable flags: without a snapshot, the default target is no answer for a job.
    std::fs::write(setup.flags_path(), "{ not json").unwrap();
    let router = setup.start().await;
    let (status, _, body) = admin_request(
        &router,
        http::Method::GET,
        "/v1/owner/acme?side=legacy",
        &[("authorization", "Bearer read-0123456789abcdef")],
        "",
    )
    .await;
    assert_eq!(status, http::StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("cannot be told"), "{body}");
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_store_dies_is_stopped_before_its_lease_expires() {
    let (mut emulator, url, store) = dynamo_with_acme_on_legacy().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("legacy.log");
    let times = ["--lease", "5s", "--check-every", "500ms", "--grace", "1s"];
    let run = jobs_run(&url, "legacy", &times, &job_command(&log, 60));
    log_lines(&log, 1).await;

    // Kill the store just after a renewal, so the expiry read is the last one written.
    let leases = Leases::of(&store);
    let expiry = || async {
        let lease = leases.get("nightly", "acme").await.unwrap().unwrap();
        lease.expires_ms
    };
    let first = expiry().await;
    let mut renewed = first;
    while renewed == first {
        tokio::time::sleep(Duration::from_millis(20)).await;
        renewed = expiry().await;
    }
    emulator.stop();

    let (code, err) = exited(run).await;
    assert_eq!(code, 5, "the lease is as good as lost: {err}");
    assert!(err.contains("the store cannot be reached"), "{err}");
    let lines = log_lines(&log, 2).await;
    assert!(lines[1].starts_with("term "), "{lines:?}");
    let stopped = ms(&lines[1], 1);
    assert!(
        stopped < renewed,
        "the command was stopped {} ms after its lease expired",
        stopped - renewed
    );
}
