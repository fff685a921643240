//! Guarded ramps with compressed times: the real `switchyard ramp` commands, routers driving
//! the steps under a lease, judging the side ramped onto against the side it leaves on the
//! fleet's own evidence, and rolling back on a breach.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use flag_store::ramp::{RampItem, RampState};
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::Rng;
use switchyard::Router;

use crate::support::*;

const TENANTS: usize = 10;

/// An upstream that answers its name after `delay_ms`, and 500 to one request in `fail_every`
/// (0: never).
struct Side {
    addr: SocketAddr,
    fail_every: Arc<AtomicU64>,
    delay_ms: Arc<AtomicU64>,
}

impl Side {
    async fn start(name: &'static str) -> Side {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let side = Side {
            addr: listener.local_addr().unwrap(),
            fail_every: Arc::default(),
            delay_ms: Arc::default(),
        };
        let (fail_every, delay_ms) = (side.fail_every.clone(), side.delay_ms.clone());
        let count = Arc::new(AtomicU64::new(0));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (fail_every, delay_ms, count) =
                    (fail_every.clone(), delay_ms.clone(), count.clone());
                let service = service_fn(move |_req| {
                    let (fail_every, delay_ms, count) =
                        (fail_every.clone(), delay_ms.clone(), count.clone());
                    async move {
                        let delay = delay_ms.load(Ordering::SeqCst);
                        if delay > 0 {
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                        }
                        let n = count.fetch_add(1, Ordering::SeqCst);
                        let every = fail_every.load(Ordering::SeqCst);
                        let status = if every > 0 && n % every == 0 {
                            StatusCode::INTERNAL_SERVER_ERROR
                        } else {
                            StatusCode::OK
                        };
                        let mut resp = Response::new(Full::new(Bytes::from(name)));
                        *resp.status_mut() = status;
                        Ok::<_, Infallible>(resp)
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        side
    }
}

/// Two sides, a router config over them (heartbeat and lease compressed), `TENANTS` tenants
/// pinned on `legacy`.
struct Bench {
    setup: Setup,
    legacy: Side,
    new: Side,
    config: String,
}

impl Bench {
    async fn new() -> Bench {
        let setup = Setup::new().await;
        let (legacy, new) = (Side::start("legacy").await, Side::start("new").await);
        let mut items = vec![r#"{"tenant":"*","target":"legacy","version":1}"#.to_owned()];
        items.extend(
            (0..TENANTS).map(|i| format!(r#"{{"tenant":"t{i}","target":"legacy","version":1}}"#)),
        );
        setup.write_flags(&format!(r#"{{"version":1,"items":[{}]}}"#, items.join(",")));
        let config = Self::config_file(&setup, &legacy, &new, "r1");
        Bench {
            setup,
            legacy,
            new,
            config,
        }
    }

    fn config_file(setup: &Setup, legacy: &Side, new: &Side, id: &str) -> String {
        let text = setup
            .config_text()
            .replace(&setup.legacy.url(), &format!("http://{}", legacy.addr))
            .replace(&setup.new.url(), &format!("http://{}", new.addr))
            + &format!("[fleet]\nid = \"{id}\"\nheartbeat_ms = 100\nramp_lease_ms = 1000\n");
        let path = setup.dir.path().join(format!("{id}.toml"));
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }

    async fn router(&self) -> Router {
        let config = switchyard::Config::load(std::path::Path::new(&self.config)).unwrap();
        Router::start(config).await.unwrap()
    }

    /// A router on the bench, and `clients` clients sending it requests until the flag is set.
    async fn loaded(&self, clients: usize) -> (Router, Arc<AtomicBool>, Arc<Mutex<Vec<Answer>>>) {
        let router = self.router().await;
        let stop = Arc::new(AtomicBool::new(false));
        let answers = load(&router, clients, stop.clone());
        (router, stop, answers)
    }

    /// Waits until the ramp stops, stops the load, and checks it stopped by rolling back.
    async fn rolled_back(&self, id: &str, load: &AtomicBool) -> RampItem {
        let rolled = (self.until(id, "stopped", |r| r.state != RampState::Running)).await;
        load.store(true, Ordering::SeqCst);
        assert_eq!(rolled.state, RampState::RolledBack, "{}", rolled.why);
        rolled
    }

    fn ramp(&self, id: &str) -> RampItem {
        let key = flag_store::ramp::key(id);
        let record = self
            .setup
            .store()
            .get(&key)
            .unwrap()
            .expect("the ramp's record");
        record.ramp.unwrap()
    }

    fn weights(&self, tenant: &str) -> Option<BTreeMap<String, u32>> {
        self.setup.store().get(tenant).unwrap().unwrap().weights
    }

    fn start(&self, id: &str, extra: &[&str]) {
        start_ramp(&self.config, id, extra);
    }

    /// Waits (up to a minute: a ramp's steps take seconds) until the ramp satisfies `cond`.
    async fn until(&self, id: &str, what: &str, cond: impl Fn(&RampItem) -> bool) -> RampItem {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let item = self.ramp(id);
            if cond(&item) {
                return item;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "ramp {id} never {what}: {item:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `switchyard ramp start` of every tenant onto `new`, with `extra` arguments.
fn start_ramp(config: &str, id: &str, extra: &[&str]) {
    let tenants: Vec<String> = (0..TENANTS).map(|i| format!("t{i}")).collect();
    let mut args = vec![
        "ramp",
        "start",
        "--id",
        id,
        "--to",
        "new",
        "--reason",
        "dial new up",
    ];
    for t in &tenants {
        args.extend(["--tenant", t.as_str()]);
    }
    args.extend(extra);
    args.extend(["--config", config]);
    let (code, out, err) = switchyard(&args);
    assert_eq!(code, 0, "{out}{err}");
}

/// One answer: tenant, user, status, and the side that answered.
type Answer = (usize, u32, StatusCode, String);

/// Clients sending requests for random tenants and users until `stop`.
fn load(router: &Router, clients: usize, stop: Arc<AtomicBool>) -> Arc<Mutex<Vec<Answer>>> {
    let answers = Arc::new(Mutex::new(Vec::new()));
    for _ in 0..clients {
        let (addr, stop, answers) = (router.addr(), stop.clone(), answers.clone());
        tokio::spawn(async move {
            let client = client();
            while !stop.load(Ordering::SeqCst) {
                let (tenant, user) = {
                    let mut rng = rand::rng();
                    (rng.random_range(0..TENANTS), rng.random_range(0..1000u32))
                };
                let (status, _, body) = get(
                    &client,
                    addr,
                    "/",
                    &[
                        ("x-tenant-id", &format!("t{tenant}")),
                        ("x-user-id", &user.to_string()),
                    ],
                )
                .await;
                answers.lock().unwrap().push((tenant, user, status, body));
            }
        });
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_side_completes_the_ramp_step_by_step() {
    let bench = Bench::new().await;
    let (_router, stop, answers) = bench.loaded(4).await;
    bench.start(
        "up",
        &[
            "--steps",
            "10,30,50",
            "--step-time",
            "1s",
            "--max-5xx",
            "1%",
            "--min-requests",
            "50",
        ],
    );
    // The evidence the driver judges by is in the router's presence record.
    let record = bench.setup.dir.path().join("flags.fleet/r1.json");
    wait_for("the ramp's figures in the presence record", || {
        (std::fs::read_to_string(&record).unwrap_or_default()).contains("\"ramps\":{\"up\"")
    })
    .await;
    // Every step in order: the tenants' weights follow each one.
    for (at, share) in [(1, 10), (2, 30), (3, 50)] {
        bench
            .until("up", &format!("reached step {at}"), |r| r.at >= at)
            .await;
        let item = bench.ramp("up");
        if item.at == at && item.state == RampState::Running {
            let want = BTreeMap::from([
                ("legacy".to_owned(), 100 - share),
                ("new".to_owned(), share),
            ]);
            bench
                .until("up", "placed its tenants", |_| {
                    bench.weights("t0").as_ref() == Some(&want) || bench.ramp("up").at > at
                })
                .await;
        }
    }
    let done = bench
        .until("up", "completed", |r| r.state == RampState::Completed)
        .await;
    stop.store(true, Ordering::SeqCst);
    assert_eq!(done.at, 3);
    assert!(
        done.why.starts_with("completed: all 3 steps held"),
        "{}",
        done.why
    );
    for i in 0..TENANTS {
        let want = BTreeMap::from([("legacy".to_owned(), 50), ("new".to_owned(), 50)]);
        assert_eq!(bench.weights(&format!("t{i}")), Some(want), "t{i}");
    }
    let answers = std::mem::take(&mut *answers.lock().unwrap());
    assert!(
        answers.iter().all(|a| a.2 == StatusCode::OK),
        "a request failed"
    );
    assert!(answers.iter().any(|a| a.3 == "new"), "new served nothing");
    // The evidence of an ended ramp leaves the router's presence record.
    let record = bench.setup.dir.path().join("flags.fleet/r1.json");
    wait_for("the ended ramp's figures to go", || {
        !std::fs::read_to_string(&record)
            .unwrap()
            .contains("\"ramps\"")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_side_that_starts_failing_is_rolled_back_to_the_last_step_that_held() {
    let bench = Bench::new().await;
    let (_router, stop, answers) = bench.loaded(4).await;
    bench.start(
        "up",
        &[
            "--steps",
            "5,10,25,50",
            "--step-time",
            "2s",
            "--max-5xx",
            "1%",
            "--min-requests",
            "100",
        ],
    );
    bench.until("up", "reached step 3", |r| r.at >= 3).await;
    // From step 3 on, `new` fails one request in 20.
    bench.new.fail_every.store(20, Ordering::SeqCst);
    let failing_from = answers.lock().unwrap().len();
    let rolled = bench.rolled_back("up", &stop).await;
    assert_eq!(
        rolled.at, 2,
        "back to the last step that held: {}",
        rolled.why
    );
    assert!(
        rolled.why.contains("rolled back from step 3"),
        "{}",
        rolled.why
    );
    assert!(rolled.why.contains("5xx"), "{}", rolled.why);
    let want = BTreeMap::from([("legacy".to_owned(), 90), ("new".to_owned(), 10)]);
    bench
        .until("up", "placed its tenants back", |_| {
            bench.weights("t0").as_ref() == Some(&want)
        })
        .await;
    for i in 0..TENANTS {
        assert_eq!(
            bench.weights(&format!("t{i}")).as_ref(),
            Some(&want),
            "t{i}"
        );
    }
    // Users answered by legacy never saw a failure; every 5xx came from `new`, after it began
    // failing.
    let answers = std::mem::take(&mut *answers.lock().unwrap());
    for (at, (tenant, user, status, side)) in answers.iter().enumerate() {
        if *status != StatusCode::OK {
            assert_eq!(side, "new", "t{tenant} user {user}: {status} from {side}");
            assert!(at >= failing_from, "a failure before new began failing");
        }
    }
    let legacy_users = answers.iter().filter(|a| a.3 == "legacy").count();
    assert!(legacy_users > 100, "{legacy_users}");
    drop(bench.legacy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_side_whose_p99_triples_is_rolled_back() {
    let bench = Bench::new().await;
    bench.legacy.delay_ms.store(50, Ordering::SeqCst);
    bench.new.delay_ms.store(50, Ordering::SeqCst);
    let (_router, stop, _answers) = bench.loaded(8).await;
    bench.start(
        "slow",
        &[
            "--steps",
            "20,40,60",
            "--step-time",
            "3s",
            "--max-p99-ratio",
            "2",
            "--min-requests",
            "60",
        ],
    );
    bench.until("slow", "reached step 2", |r| r.at >= 2).await;
    bench.new.delay_ms.store(150, Ordering::SeqCst);
    let rolled = bench.rolled_back("slow", &stop).await;
    assert!(rolled.why.contains("p99"), "{}", rolled.why);
    assert!(rolled.at < 3, "{}", rolled.why);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_the_step_resume_goes_on_and_abort_puts_the_tenants_back() {
    let bench = Bench::new().await;
    let (_router, stop, _answers) = bench.loaded(2).await;
    bench.start(
        "dial",
        &[
            "--steps",
            "10,20,30,40",
            "--step-time",
            "500ms",
            "--min-requests",
            "1",
        ],
    );
    bench.until("dial", "reached step 1", |r| r.at >= 1).await;
    let run = |cmd: &str| {
        switchyard(&[
            "ramp",
            cmd,
            "dial",
            "--reason",
            &format!("test {cmd}"),
            "--config",
            &bench.config,
        ])
    };
    let (code, out, err) = run("pause");
    assert_eq!(code, 0, "{out}{err}");
    let paused = bench.ramp("dial");
    assert_eq!(paused.state, RampState::Paused);
    // Several steps' time and leases pass: the step holds.
    let waited = tokio::time::Instant::now() + Duration::from_millis(2500);
    while tokio::time::Instant::now() < waited {
        assert_eq!(bench.ramp("dial").at, paused.at, "a paused ramp stepped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Pausing twice is refused, naming the state.
    let (code, _, err) = run("pause");
    assert_eq!(code, 1);
    assert!(err.contains("is paused"), "{err}");
    let (code, out, err) = run("resume");
    assert_eq!(code, 0, "{out}{err}");
    bench.until("dial", "went on", |r| r.at > paused.at).await;
    // A hand edit of a ramped tenant pauses the ramp, naming the write.
    let at = bench.ramp("dial").at;
    let (code, out, err) = switchyard(&[
        "flags",
        "set",
        "t3",
        "--target",
        "legacy",
        "--reason",
        "by hand",
        "--by",
        "bob",
        "--config",
        &bench.config,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let held = bench
        .until("dial", "paused on the hand edit", |r| {
            r.state == RampState::Paused
        })
        .await;
    assert!(
        held.why.contains("\"t3\" was written by bob"),
        "{}",
        held.why
    );
    assert!(held.at >= at);
    let (code, out, err) = run("abort");
    assert_eq!(code, 0, "{out}{err}");
    stop.store(true, Ordering::SeqCst);
    assert_eq!(bench.ramp("dial").state, RampState::Aborted);
    for i in 0..TENANTS {
        let item = bench.setup.store().get(&format!("t{i}")).unwrap().unwrap();
        assert_eq!(
            (item.target.as_deref(), item.weights),
            (Some("legacy"), None),
            "t{i}"
        );
    }
    let (code, out, _) = switchyard(&["ramp", "status", "--config", &bench.config]);
    assert_eq!(code, 0);
    assert!(out.contains("ramp dial aborted"), "{out}");
    // The record lists as a ramp, and is no tenant to the jobs' owner list.
    let (code, out, _) = switchyard(&["flags", "list", "--config", &bench.config]);
    assert_eq!(code, 0);
    assert!(
        out.contains("!ramp:dial") && out.contains("legacy -> new"),
        "{out}"
    );
    let (code, out, err) = switchyard(&[
        "owns",
        "--list",
        "--side",
        "legacy",
        "--config",
        &bench.config,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("ramp") && !err.contains("ramp"), "{out}{err}");
    assert!(out.lines().any(|l| l == "t3"), "{out}");
}

/// Requests to each address in turn, for random tenants and users, until `stop`.
fn load_addrs(addrs: Vec<SocketAddr>, stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        let client = client();
        let mut n = 0usize;
        while !stop.load(Ordering::SeqCst) {
            let tenant = rand::rng().random_range(0..TENANTS);
            let user = rand::rng().random_range(0..1000u32).to_string();
            let headers = [("x-tenant-id", format!("t{tenant}")), ("x-user-id", user)];
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            // A killed router refuses connections: the request goes to the next one.
            let req = http::Request::get(format!("http://{}/", addrs[n % addrs.len()]));
            let mut req = req;
            for (k, v) in &headers {
                req = req.header(*k, *v);
            }
            let _ = client
                .request(req.body(Full::new(Bytes::new())).unwrap())
                .await;
            n += 1;
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_driver_is_taken_over_with_no_step_skipped_or_repeated() {
    let emulator = crate::dynamo::Emulator::start().await;
    let bench = Bench::new().await;
    let setup = &bench.setup;
    let url = emulator.url();
    let text = |id: &str| {
        crate::dynamo::router_config_text(setup, &url)
            .replace(
                &setup.legacy.url(),
                &format!("http://{}", bench.legacy.addr),
            )
            .replace(&setup.new.url(), &format!("http://{}", bench.new.addr))
            .replace("flags-cache.json", &format!("flags-cache-{id}.json"))
            + &format!("[fleet]\nid = \"{id}\"\nheartbeat_ms = 100\nramp_lease_ms = 1500\n")
    };
    let path = |id: &str| {
        let path = setup.dir.path().join(format!("{id}.toml"));
        std::fs::write(&path, text(id)).unwrap();
        path
    };
    let (a, b) = (path("ra"), path("rb"));
    let config = a.to_str().unwrap().to_owned();
    let (code, out, err) = switchyard(&["flags", "create-table", "--config", &config]);
    assert_eq!(code, 0, "{out}{err}");
    for i in 0..TENANTS {
        let t = format!("t{i}");
        let (code, out, err) = switchyard(&[
            "flags", "set", &t, "--target", "legacy", "--reason", "seed", "--config", &config,
        ]);
        assert_eq!(code, 0, "{out}{err}");
    }
    let mut routers = vec![Binary::serve(&a), Binary::serve(&b)];
    let stop = Arc::new(AtomicBool::new(false));
    load_addrs(routers.iter().map(|r| r.addr).collect(), stop.clone());
    let args = [
        "--steps",
        "10,20,30,40,50",
        "--step-time",
        "1s",
        "--min-requests",
        "1",
    ];
    start_ramp(&config, "up", &args);
    let tenants: Vec<String> = (0..TENANTS).map(|i| format!("t{i}")).collect();

    let store = flag_store::store::Store::Dynamo(emulator.store().await);
    let key = flag_store::ramp::key("up");
    let ramp = || async {
        let record = store.get(&key).await.unwrap().unwrap();
        record.ramp.unwrap()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while ramp().await.at < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ramp never reached step 2"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Kill the router driving it, for real.
    let leases = flag_store::jobs::lease::Leases::of(&store);
    let lease = leases
        .get("ramp", "up")
        .await
        .unwrap()
        .expect("a driver's lease");
    let driver = if lease.holder == "ra" { 0 } else { 1 };
    let mut killed = routers.remove(driver);
    killed.child.kill().unwrap();
    killed.exited().await;
    while ramp().await.state == RampState::Running {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ramp never finished"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let done = ramp().await;
    assert_eq!(done.state, RampState::Completed, "{}", done.why);
    let now = leases.get("ramp", "up").await.unwrap().unwrap();
    assert!(
        now.token > lease.token,
        "no other router took the lease over"
    );
    assert_ne!(now.holder, lease.holder);
    // The audit trail: every step recorded once, in order, and each tenant's dial moved through
    // every step once.
    let steps: Vec<(u32, u64)> = (store.history(&key).await.unwrap().into_iter())
        .filter_map(|r| r.new?.ramp)
        .filter(|r| r.state == RampState::Running || r.state == RampState::Completed)
        .map(|r| (r.at, r.step_started_ms))
        .collect();
    let mut distinct = steps.clone();
    distinct.dedup_by_key(|(at, _)| *at);
    let ats: Vec<u32> = distinct.iter().map(|(at, _)| *at).collect();
    assert_eq!(ats, [0, 1, 2, 3, 4, 5], "{steps:?}");
    for (at, _) in &distinct {
        let starts: std::collections::BTreeSet<u64> = steps
            .iter()
            .filter(|(a, _)| a == at)
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(starts.len(), 1, "step {at} began twice: {steps:?}");
    }
    for t in &tenants {
        let shares: Vec<u32> = (store.history(t).await.unwrap().into_iter())
            .filter_map(|r| r.new?.weights?.get("new").copied())
            .collect();
        assert_eq!(shares, [10, 20, 30, 40, 50], "{t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_side_with_no_healthy_endpoint_is_rolled_back() {
    let bench = Bench::new().await;
    // `new` has a health check, which fails once `new` answers everything with 500.
    let health = "[targets.new.health]\npath = \"/\"\ninterval_ms = 100\nunhealthy_after = 2";
    let endpoints = format!("endpoints = [\"http://{}\"]", bench.new.addr);
    let text = std::fs::read_to_string(&bench.config)
        .unwrap()
        .replace(&endpoints, &format!("{endpoints}\n{health}"));
    std::fs::write(&bench.config, text).unwrap();
    let (_router, stop, _answers) = bench.loaded(2).await;
    bench.start(
        "dead",
        &[
            "--steps",
            "10,50",
            "--step-time",
            "30s",
            "--min-requests",
            "1000000",
        ],
    );
    bench.until("dead", "reached step 1", |r| r.at >= 1).await;
    bench.new.fail_every.store(1, Ordering::SeqCst);
    let rolled = bench.rolled_back("dead", &stop).await;
    assert_eq!(rolled.at, 0);
    assert!(
        rolled.why.contains("\"new\" has no healthy endpoint"),
        "{}",
        rolled.why
    );
    bench
        .until("dead", "put its tenants back", |_| {
            (0..TENANTS).all(|i| {
                let item = bench.setup.store().get(&format!("t{i}")).unwrap().unwrap();
                item.target.as_deref() == Some("legacy")
            })
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ramp_onto_an_evacuated_side_pauses() {
    let bench = Bench::new().await;
    let (router, stop, _answers) = bench.loaded(2).await;
    bench.start(
        "onto",
        &[
            "--steps",
            "10,20",
            "--step-time",
            "30s",
            "--min-requests",
            "1",
        ],
    );
    bench.until("onto", "reached step 1", |r| r.at >= 1).await;
    let (code, out, err) = switchyard(&[
        "flags",
        "evacuate",
        "new",
        "--to",
        "legacy",
        "--reason",
        "new degraded",
        "--yes",
        "--config",
        &bench.config,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let paused = bench
        .until("onto", "paused", |r| r.state == RampState::Paused)
        .await;
    stop.store(true, Ordering::SeqCst);
    assert!(
        paused.why.contains("side \"new\" is evacuated"),
        "{}",
        paused.why
    );
    assert_eq!(paused.at, 1);
    wait_metric(&router, "switchyard_ramps{state=\"paused\"}", 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_copies_that_differ_roll_a_ramp_back() {
    let bench = Bench::new().await;
    // Every tenant's reads are copied to `new`, which answers differently from `legacy`.
    let mut items = vec![r#"{"tenant":"*","target":"legacy","version":1}"#.to_owned()];
    items.extend((0..TENANTS).map(|i| {
        format!(r#"{{"tenant":"t{i}","target":"legacy","shadow":{{"target":"new","percent":100}},"version":1}}"#)
    }));
    (bench.setup).write_flags(&format!(r#"{{"version":2,"items":[{}]}}"#, items.join(",")));
    let (_router, stop, _answers) = bench.loaded(4).await;
    bench.start(
        "shadowed",
        &[
            "--steps",
            "10,50",
            "--step-time",
            "30s",
            "--max-shadow-mismatch",
            "5%",
            "--min-requests",
            "20",
        ],
    );
    let rolled = bench.rolled_back("shadowed", &stop).await;
    assert_eq!(rolled.at, 0);
    assert!(
        rolled.why.contains("shadow copies differed"),
        "{}",
        rolled.why
    );
}
