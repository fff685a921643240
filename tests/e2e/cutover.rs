//! The cutover's proof: a replicating pair of upstreams (writes on `legacy` reach `new` after
//! a lag, last writer wins), clients on three routers sharing one DynamoDB Local, writing then
//! reading their own keys of one tenant while it moves. A plain flip shows stale reads (so the
//! harness is seen to catch them); a move with a hold shows none, no error, no lost update,
//! and no request on `legacy` once every router has acknowledged the hold.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard::Router;

use crate::support::*;

const LAG: Duration = Duration::from_millis(500);

/// Two sides of one database: `legacy` replicates its writes to `new` after [`LAG`].
#[derive(Default)]
struct Pair {
    sides: [Mutex<HashMap<String, u64>>; 2],
    /// Writes made on legacy not yet applied on new.
    pending: AtomicUsize,
    /// The replication log: writes made on legacy, in order, with when each reaches new.
    log: Mutex<std::collections::VecDeque<(tokio::time::Instant, String, u64)>>,
    /// Requests each side served.
    served: [AtomicU64; 2],
    gate_passed: AtomicBool,
    /// Set by a test when it sees every router acknowledge a hold.
    acked: AtomicBool,
}

impl Pair {
    /// Applies the replication log's due writes to new, oldest first. Last writer wins: a
    /// late copy overwrites a newer write made on new.
    fn ship_due(&self) {
        let mut log = self.log.lock().unwrap();
        let now = tokio::time::Instant::now();
        while log.front().is_some_and(|(due, _, _)| *due <= now) {
            let (_, key, n) = log.pop_front().unwrap();
            self.sides[1].lock().unwrap().insert(key, n);
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }

    async fn start(self: &Arc<Self>, side: usize) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pair = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let pair = pair.clone();
                let service = service_fn(move |req| {
                    let pair = pair.clone();
                    async move { Ok::<_, Infallible>(pair.serve(side, req)) }
                });
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        addr
    }

    fn serve(self: &Arc<Self>, side: usize, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        let answer = |s: String| Response::new(Full::new(Bytes::from(s)));
        if path == "/lag" {
            // The gate: caught up when nothing is left to replicate.
            let mut resp = answer(self.pending.load(Ordering::SeqCst).to_string());
            if self.pending.load(Ordering::SeqCst) > 0 {
                *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            } else {
                self.gate_passed.store(true, Ordering::SeqCst);
            }
            return resp;
        }
        self.served[side].fetch_add(1, Ordering::SeqCst);
        if side == 0 && self.gate_passed.load(Ordering::SeqCst) {
            eprintln!(
                "legacy served {} {path} after the gate passed",
                req.method()
            );
        }
        if side == 0 && self.acked.load(Ordering::SeqCst) {
            eprintln!(
                "legacy served {} {path} after every router acknowledged",
                req.method()
            );
        }
        let parts: Vec<&str> = path.trim_start_matches("/kv/").split('/').collect();
        match (req.method().as_str(), parts.as_slice()) {
            ("POST", [key, n]) => {
                let n: u64 = n.parse().unwrap();
                self.sides[side]
                    .lock()
                    .unwrap()
                    .insert((*key).to_owned(), n);
                if side == 0 {
                    // Replication is a log shipped in order: each write reaches new LAG
                    // after it was made, never before an earlier one (timers due in the same
                    // tick fire in any order, so each applies whatever is due, oldest first).
                    self.pending.fetch_add(1, Ordering::SeqCst);
                    let due = tokio::time::Instant::now() + LAG;
                    (self.log.lock().unwrap()).push_back((due, (*key).to_owned(), n));
                    let pair = self.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep_until(due).await;
                        pair.ship_due();
                    });
                }
                answer(n.to_string())
            }
            ("GET", [key]) => {
                let v = self.sides[side].lock().unwrap().get(*key).copied();
                answer(v.unwrap_or(0).to_string())
            }
            _ => {
                let mut resp = answer(String::new());
                *resp.status_mut() = StatusCode::NOT_FOUND;
                resp
            }
        }
    }
}

/// What the clients saw.
#[derive(Debug, Default)]
struct Tally {
    writes: AtomicU64,
    stale: AtomicU64,
    errors: AtomicU64,
    longest_ms: AtomicU64,
    /// The last acknowledged write of each client's key.
    last: Mutex<HashMap<String, u64>>,
}

/// Eight clients spread over the routers and `tenants`, each writing then reading its own
/// key, until `stop`.
fn clients(
    routers: &[SocketAddr],
    tenants: &[&'static str],
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..8)
        .map(|i| {
            let (addr, stop, tally) = (routers[i % routers.len()], stop.clone(), tally.clone());
            let tenant = tenants[i % tenants.len()];
            tokio::spawn(async move {
                let client = client();
                let key = format!("k{i}");
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let started = Instant::now();
                    let req = Request::post(format!("http://{addr}/kv/{key}/{n}"));
                    let (status, _, _) =
                        send(&client, req, &[("x-tenant-id", tenant)], Full::default()).await;
                    let (read_status, _, read) = get(
                        &client,
                        addr,
                        &format!("/kv/{key}"),
                        &[("x-tenant-id", tenant)],
                    )
                    .await;
                    let took = started.elapsed().as_millis() as u64;
                    tally.longest_ms.fetch_max(took, Ordering::SeqCst);
                    if status != StatusCode::OK || read_status != StatusCode::OK {
                        eprintln!("{tenant} {key}: {status} then {read_status} after {took} ms");
                        tally.errors.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                    tally.writes.fetch_add(1, Ordering::SeqCst);
                    tally.last.lock().unwrap().insert(key.clone(), n);
                    if read.parse::<u64>().unwrap() < n {
                        eprintln!("{tenant} {key}: wrote {n}, read {read} (status {status})");
                        tally.stale.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect()
}

/// Writes acknowledged that the new side no longer holds once replication has settled.
fn lost(pair: &Pair, tally: &Tally) -> usize {
    let new = pair.sides[1].lock().unwrap();
    let last = tally.last.lock().unwrap();
    last.iter()
        .filter(|(k, n)| new.get(*k).copied().unwrap_or(0) < **n)
        .count()
}

struct Harness {
    emulator: crate::dynamo::Emulator,
    pair: Arc<Pair>,
    routers: Vec<Router>,
    config: String,
    /// The legacy side's address, whose `/lag` is the move's gate.
    legacy: SocketAddr,
    _setup: Setup,
}

impl Harness {
    /// Sets the store's flag of `tenant` with the CLI, and waits until every router has it.
    async fn set(&self, tenant: &str, target: &str) {
        let (code, out, err) = switchyard(&[
            "flags",
            "set",
            tenant,
            "--target",
            target,
            "--reason",
            "test",
            "--config",
            &self.config,
        ]);
        assert_eq!(code, 0, "{out}{err}");
        self.caught_up().await;
    }

    /// Waits until every router routes by the store's version.
    async fn caught_up(&self) {
        let version = self.emulator.store().await.version().await.unwrap();
        for r in &self.routers {
            wait_version(r, version).await;
        }
    }
}

/// Starts `switchyard ARGS` (run by alice) at once; the future gives its exit code and all
/// it printed.
fn cli(args: &[&str]) -> impl std::future::Future<Output = (Option<i32>, String)> + use<> {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env("USER", "alice")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    async move {
        let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
            .await
            .unwrap();
        let printed = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), printed)
    }
}

async fn harness() -> Harness {
    let emulator = crate::dynamo::Emulator::start().await;
    let mut setup = Setup::new().await;
    let pair = Arc::new(Pair::default());
    let (legacy, new) = (pair.start(0).await, pair.start(1).await);
    setup.routes = format!(
        "[targets.replica_legacy]\nendpoints = [\"http://{legacy}\"]\n[targets.replica_new]\nendpoints = [\"http://{new}\"]\n{}",
        setup.routes
    );
    let mut routers = Vec::new();
    let mut configs = Vec::new();
    for id in ["r1", "r2", "r3"] {
        let text = crate::dynamo::router_config_text(&setup, &emulator.url())
            .replace("flags-cache.json", &format!("flags-cache-{id}.json"))
            + &format!("[fleet]\nid = \"{id}\"\nheartbeat_ms = 50\n");
        let path = setup.dir.path().join(format!("{id}.toml"));
        std::fs::write(&path, &text).unwrap();
        configs.push(path);
    }
    let config = configs[0].to_str().unwrap().to_owned();
    let (code, out, err) = switchyard(&["flags", "create-table", "--config", &config]);
    assert_eq!(code, 0, "{out}{err}");
    for path in &configs {
        routers.push(
            Router::start(switchyard::Config::load(path).unwrap())
                .await
                .unwrap(),
        );
    }
    let h = Harness {
        emulator,
        pair,
        routers,
        config,
        legacy,
        _setup: setup,
    };
    h.set("cut-acme", "replica_legacy").await;
    h
}

/// Whether every router's presence record in the store acknowledges a hold as drained.
async fn all_acknowledged(fleet: &flag_store::fleet::Fleet) -> bool {
    let Ok(listing) = fleet.list().await else {
        return false;
    };
    listing.routers.len() == 3 && listing.routers.iter().all(|p| !p.drained.is_empty())
}

/// Runs the clients of `tenants` for a moment before and after `moving` has moved them.
async fn run_clients<F: std::future::Future<Output = ()>>(
    h: &Harness,
    tenants: &[&'static str],
    moving: F,
) -> Arc<Tally> {
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let addrs: Vec<SocketAddr> = h.routers.iter().map(Router::addr).collect();
    let running = clients(&addrs, tenants, stop.clone(), tally.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    moving.await;
    // Long enough after the move for a late copy to land.
    tokio::time::sleep(LAG * 2).await;
    stop.store(true, Ordering::SeqCst);
    for c in running {
        c.await.unwrap();
    }
    // Replication settles.
    while h.pair.pending.load(Ordering::SeqCst) > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_flip_is_seen_to_serve_stale_reads() {
    let h = harness().await;
    let tally = run_clients(&h, &["cut-acme"], h.set("cut-acme", "replica_new")).await;
    let stale = tally.stale.load(Ordering::SeqCst);
    assert!(
        stale > 0 || lost(&h.pair, &tally) > 0,
        "the harness must catch what a plain flip does: {tally:?}"
    );
    assert!(stale > 0, "{tally:?}");
    for r in h.routers {
        r.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_with_a_hold_serves_no_stale_read_loses_no_write_and_fails_nothing() {
    let h = harness().await;
    let legacy_served_at_ack = Arc::new(AtomicU64::new(u64::MAX));
    let mut printed = String::new();
    let tally = run_clients(&h, &["cut-acme"], async {
        // The gate: the pair's lag endpoint.
        let gate_url = format!("http://{}/lag", h.legacy);
        let moving = cli(&[
            "flags",
            "move",
            "cut-acme",
            "--to",
            "replica_new",
            "--seal",
            "--hold-max",
            "30s",
            "--gate-url",
            &gate_url,
            "--reason",
            "cutover test",
            "--config",
            &h.config,
        ]);
        // When every router has acknowledged, count what legacy has served.
        let fleet = flag_store::fleet::Fleet::Dynamo(h.emulator.store().await);
        let served = legacy_served_at_ack.clone();
        let pair = h.pair.clone();
        let watch = tokio::spawn(async move {
            while !all_acknowledged(&fleet).await {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            served.store(pair.served[0].load(Ordering::SeqCst), Ordering::SeqCst);
            pair.acked.store(true, Ordering::SeqCst);
        });
        let code;
        (code, printed) = moving.await;
        assert_eq!(code, Some(0), "{printed}");
        assert!(printed.contains("3. the gate passed"), "{printed}");
        watch.await.unwrap();
    })
    .await;
    assert_eq!(tally.errors.load(Ordering::SeqCst), 0, "{tally:?}");
    assert_eq!(tally.stale.load(Ordering::SeqCst), 0, "{tally:?}");
    assert_eq!(lost(&h.pair, &tally), 0, "{tally:?}");
    assert!(tally.writes.load(Ordering::SeqCst) > 20, "{tally:?}");
    let at_ack = legacy_served_at_ack.load(Ordering::SeqCst);
    assert_eq!(
        h.pair.served[0].load(Ordering::SeqCst),
        at_ack,
        "no request reached legacy once every router had acknowledged:\n{printed}"
    );
    // The longest a client waited: under the hold's maximum plus a second.
    assert!(
        tally.longest_ms.load(Ordering::SeqCst) < 31_000,
        "{tally:?}"
    );
    for r in h.routers {
        r.shutdown().await;
    }
}

/// The time a step of a move's output was printed at (`[  1.234s] 4. moved ...`).
fn step_at(out: &str, step: &str) -> f64 {
    let line = (out.lines())
        .find(|l| l.contains(step))
        .unwrap_or_else(|| panic!("no step {step:?} in {out}"));
    let at = line.trim_start_matches('[').split('s').next().unwrap();
    at.trim().parse().unwrap()
}

/// A batch moves in one hold on three routers, the gate the pair's lag: clients of four of
/// its tenants see no stale read, no error and no lost write, and every tenant ends on the
/// new side. 200 tenants here; BENCHMARKS.md's 1,000 are this test with
/// `SWITCHYARD_BATCH_TENANTS=1000` on a release build, whose printed steps give the hold's
/// length and the clients' longest wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_moves_in_one_hold_on_three_routers() {
    let h = harness().await;
    let count: usize = std::env::var("SWITCHYARD_BATCH_TENANTS")
        .map(|n| n.parse().expect("SWITCHYARD_BATCH_TENANTS is a number"))
        .unwrap_or(200);
    let tenants: Vec<String> = (0..count).map(|i| format!("t{i:04}")).collect();
    let dir = tempfile::tempdir().unwrap();
    let batch = |target: &str| {
        let path = dir.path().join(format!("{target}.csv"));
        let rows: String = tenants.iter().map(|t| format!("{t},{target}\n")).collect();
        std::fs::write(&path, rows).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let onto_legacy = batch("replica_legacy");
    let (code, out, err) = switchyard(&[
        "flags",
        "apply",
        &onto_legacy,
        "--yes",
        "--reason",
        "onboard",
        "--config",
        &h.config,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    h.caught_up().await;

    let clients_of: Vec<&'static str> = ["t0000", "t0037", "t0121", "t0199"].to_vec();
    let onto_new = batch("replica_new");
    let gate_url = format!("http://{}/lag", h.legacy);
    let mut printed = String::new();
    let tally = run_clients(&h, &clients_of, async {
        let code;
        (code, printed) = cli(&[
            "flags",
            "apply",
            &onto_new,
            "--yes",
            "--hold-max",
            "120s",
            "--gate-url",
            &gate_url,
            "--reason",
            "batch 7",
            "--config",
            &h.config,
        ])
        .await;
        let steps = printed.lines().filter(|l| l.starts_with('['));
        println!("{}", steps.collect::<Vec<_>>().join("\n"));
        assert_eq!(code, Some(0), "{printed}");
    })
    .await;
    assert!(
        printed.contains(&format!("4. moved {count} tenant(s)")),
        "{printed}"
    );
    assert_eq!(tally.errors.load(Ordering::SeqCst), 0, "{tally:?}");
    assert_eq!(tally.stale.load(Ordering::SeqCst), 0, "{tally:?}");
    assert_eq!(lost(&h.pair, &tally), 0, "{tally:?}");
    // Every tenant is on the new side, its hold ended, and every router has that version.
    let (code, list, err) = switchyard(&["flags", "list", "--json", "--config", &h.config]);
    assert_eq!(code, 0, "{err}");
    let items: Vec<serde_json::Value> = serde_json::from_str(&list).unwrap();
    let moved = (items.iter())
        .filter(|i| i["target"] == "replica_new" && i.get("hold").is_none())
        .count();
    assert_eq!(moved, count, "{list}");
    h.caught_up().await;
    for r in &h.routers {
        assert!(!r.flags().load().has_holds());
    }
    let held_at = step_at(&printed, "1. hold");
    let released_at = step_at(&printed, "4. moved");
    println!(
        "{count} tenants in one hold on 3 routers: hold written by {held_at:.3}s, released at {released_at:.3}s; the clients' longest wait {} ms",
        tally.longest_ms.load(Ordering::SeqCst)
    );
    for r in h.routers {
        r.shutdown().await;
    }
}
