//! Moves with a hold: a router queues a moving tenant's requests while its requests in flight
//! on the old side finish and the gate passes, then sends them to the new side; whatever
//! fails, they go where the tenant's data is and none fails. The move is the real
//! `switchyard flags move` process; the router is in-process, over real sockets.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use http::StatusCode;
use switchyard::Router;

use crate::support::*;

/// A router with a fleet id and a quick heartbeat, and `extra` lines in `[fleet]`.
async fn router(setup: &Setup, extra: &str) -> (Router, String) {
    let text = setup.config_text() + &format!("[fleet]\nid = \"r1\"\nheartbeat_ms = 50\n{extra}");
    let path = setup.dir.path().join("router.toml");
    std::fs::write(&path, &text).unwrap();
    let config = switchyard::Config::load(&path).unwrap();
    (
        Router::start(config).await.unwrap(),
        path.to_str().unwrap().to_owned(),
    )
}

/// A router on DynamoDB Local (tables made by `flags create-table`) with `tenant` pinned to
/// legacy by the CLI before it starts; and its config file.
async fn dynamo_router(
    setup: &Setup,
    emulator: &crate::dynamo::Emulator,
    tenant: &str,
) -> (Router, String) {
    let config = crate::dynamo::router_config_file(setup, &emulator.url());
    let (code, out, err) = switchyard(&["flags", "create-table", "--config", &config]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = switchyard(&[
        "flags", "set", tenant, "--target", "legacy", "--reason", "start", "--config", &config,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let text =
        std::fs::read_to_string(&config).unwrap() + "[fleet]\nid = \"d1\"\nheartbeat_ms = 50\n";
    std::fs::write(&config, &text).unwrap();
    let config_path = std::path::Path::new(&config);
    let router = Router::start(switchyard::Config::load(config_path).unwrap())
        .await
        .unwrap();
    (router, config)
}

/// `switchyard flags move` started in the background, its output captured.
fn start_move(config: &str, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["flags", "move", "--config", config, "--reason", "test move"])
        .args(args)
        .env("USER", "alice")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for the move to end: its exit code and what it printed.
async fn finished(child: Child) -> (i32, String) {
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// Waits until the router holds `tenant`.
async fn until_held(router: &Router, tenant: &str) {
    let flags = router.flags().clone();
    tokio::time::timeout(
        EVENT_TIMEOUT,
        flags.wait_until(|s| s.hold(tenant).is_some()),
    )
    .await
    .expect("the router never saw the hold");
}

/// Sends `n` requests for `tenant` in the background.
fn requests(
    router: &Router,
    tenant: &'static str,
    path: &'static str,
    n: usize,
) -> Vec<tokio::task::JoinHandle<(StatusCode, String)>> {
    (0..n)
        .map(|_| {
            let addr = router.addr();
            tokio::spawn(async move {
                let (status, _, body) =
                    get(&client(), addr, path, &[("x-tenant-id", tenant)]).await;
                (status, body)
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_holds_the_tenant_until_its_requests_drain_and_the_gate_passes() {
    let setup = Setup::new().await;
    let (router, config) = router(&setup, "").await;
    let version = setup.set("drain-acme", pin("legacy"));
    wait_version(&router, version).await;
    // A request in flight on legacy before the move: the hold waits for it.
    let in_flight = requests(&router, "drain-acme", "/hold", 1);
    wait_for("the request held by legacy", || {
        setup
            .legacy
            .seen
            .holding
            .load(std::sync::atomic::Ordering::SeqCst)
            == 1
    })
    .await;

    let gate = setup.dir.path().join("caught-up");
    let gate_cmd = format!("test -e {}", gate.display());
    let mv = start_move(
        &config,
        &[
            "drain-acme",
            "--to",
            "new",
            "--seal",
            "--hold-max",
            "15s",
            "--gate-cmd",
            &gate_cmd,
        ],
    );
    until_held(&router, "drain-acme").await;
    let held = requests(&router, "drain-acme", "/", 3);
    wait_metric(&router, "switchyard_hold_queued", 3.0).await;
    assert_eq!(
        setup.new.seen.tenant("drain-acme"),
        0,
        "nothing reaches new while held"
    );
    let legacy_before = setup.legacy.seen.tenant("drain-acme");
    // Not drained while legacy still works on the tenant's request.
    let drained = || {
        std::fs::read_to_string(setup.dir.path().join("flags.fleet/r1.json"))
            .is_ok_and(|r| r.contains("\"drained\""))
    };
    assert!(!drained());
    setup.legacy.seen.release.notify_waiters();
    let (status, body) = in_flight.into_iter().next().unwrap().await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "legacy"));
    wait_for("the router's acknowledgement", drained).await;

    // The gate passes: one write flips the tenant, and the queued requests go to new.
    std::fs::write(&gate, "").unwrap();
    let (code, out) = finished(mv).await;
    assert_eq!(code, 0, "{out}");
    for step in [
        "1. hold h",
        "2. every live router acknowledged",
        "3. the gate passed",
        "4. moved 1 tenant(s) to new, sealed",
    ] {
        assert!(out.contains(step), "{step:?} missing from:\n{out}");
    }
    for r in held {
        let (status, body) = r.await.unwrap();
        assert_eq!((status, body.as_str()), (StatusCode::OK, "new"));
    }
    assert_eq!(
        setup.legacy.seen.tenant("drain-acme"),
        legacy_before,
        "none went to legacy"
    );
    let item = setup.store().get("drain-acme").unwrap().unwrap();
    assert_eq!(
        (item.target.as_deref(), item.sealed, item.hold),
        (Some("new"), true, None)
    );
    let snapshot = router.flags().load();
    assert!(!snapshot.has_holds());
    drop(snapshot);
    // The three waited under the hold, and their wait is counted apart from their latency.
    let waits = metrics(
        &router,
        &[
            "switchyard_hold_requests_total{outcome=\"released\"}",
            "switchyard_hold_wait_seconds_count",
            "switchyard_hold_wait_seconds_bucket{le=\"0.005\"}",
        ],
    )
    .await;
    assert_eq!(
        waits,
        [Some(3.0), Some(3.0), Some(0.0)],
        "they waited for the gate"
    );
    wait_for("the acknowledgement withdrawn", || !drained()).await;
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_that_never_passes_aborts_and_the_tenant_stays_where_its_data_is() {
    let setup = Setup::new().await;
    let (router, config) = router(&setup, "").await;
    let mv = start_move(
        &config,
        &[
            "hold-acme",
            "hold-globex",
            "--to",
            "new",
            "--hold-max",
            "6s",
            "--gate-cmd",
            "exit 3",
        ],
    );
    until_held(&router, "hold-globex").await;
    let held = requests(&router, "hold-globex", "/", 2);
    let (code, out) = finished(mv).await;
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("3. the gate says not yet: it exited with exit status: 3"),
        "{out}"
    );
    assert!(
        out.contains("aborted: the gate did not pass before the hold's deadline"),
        "{out}"
    );
    assert!(
        out.contains("hold h") && out.contains("ended on 2 tenant(s)"),
        "{out}"
    );
    for r in held {
        let (status, body) = r.await.unwrap();
        assert_eq!((status, body.as_str()), (StatusCode::OK, "legacy"));
    }
    // Both followed the default flag: each now has an item of its own, on legacy, unheld.
    for tenant in ["hold-acme", "hold-globex"] {
        let item = setup.store().get(tenant).unwrap().unwrap();
        assert_eq!((item.target.as_deref(), item.hold), (Some("legacy"), None));
    }
    router.shutdown().await;
}

/// A gate URL that takes the connection and never answers: the move asks again until it is
/// out of time, then aborts; the held requests go to legacy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_that_hangs_aborts_in_time_and_the_tenant_stays_where_its_data_is() {
    let setup = Setup::new().await;
    let (router, config) = router(&setup, "").await;
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gate = format!("http://{}/caught-up", silent.local_addr().unwrap());
    let kept = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let mv = start_move(
        &config,
        &[
            "hold-acme",
            "--to",
            "new",
            "--hold-max",
            "6s",
            "--gate-url",
            &gate,
        ],
    );
    until_held(&router, "hold-acme").await;
    let held = requests(&router, "hold-acme", "/", 2);
    let (code, out) = finished(mv).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("3. the gate says not yet: no answer"), "{out}");
    assert!(
        out.contains("aborted: the gate did not pass before the hold's deadline"),
        "{out}"
    );
    for r in held {
        let (status, body) = r.await.unwrap();
        assert_eq!((status, body.as_str()), (StatusCode::OK, "legacy"));
    }
    let item = setup.store().get("hold-acme").unwrap().unwrap();
    assert_eq!((item.target.as_deref(), item.hold), (Some("legacy"), None));
    kept.abort();
    router.shutdown().await;
}

/// An `https://` gate is verified: against the CA named by `--gate-ca` it passes; without it,
/// the platform's CAs do not know the test's CA, the move says so at step 3 and aborts, and
/// the tenant stays on legacy. A CA for a plain-HTTP gate is refused before anything is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_gate_is_verified_against_its_ca_before_the_move_trusts_it() {
    let setup = Setup::new().await;
    let (router, config) = router(&setup, "").await;
    let pki = crate::tls::Pki::new();
    let ca = pki.write_ca(setup.dir.path());
    let ca = ca.to_str().unwrap();
    let gate = crate::tls::TlsUpstream::start(&pki, "127.0.0.1", None).await;
    let url = format!("https://127.0.0.1:{}/caught-up", gate.addr.port());
    let version = setup.set("tls-acme", pin("legacy"));
    wait_version(&router, version).await;

    let untrusted = [
        "tls-acme",
        "--to",
        "new",
        "--hold-max",
        "4s",
        "--gate-url",
        &url,
    ];
    let (code, out) = finished(start_move(&config, &untrusted)).await;
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(
            "3. the gate says not yet: cannot ask it: its certificate is signed by an authority the router does not trust"
        ),
        "{out}"
    );
    let item = setup.store().get("tls-acme").unwrap().unwrap();
    assert_eq!((item.target.as_deref(), item.hold), (Some("legacy"), None));
    assert_eq!(gate.requests.load(std::sync::atomic::Ordering::SeqCst), 0);

    let trusted = [&untrusted[..], &["--gate-ca", ca]].concat();
    let (code, out) = finished(start_move(&config, &trusted)).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("3. the gate passed"), "{out}");
    assert!(gate.requests.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    let item = setup.store().get("tls-acme").unwrap().unwrap();
    assert_eq!((item.target.as_deref(), item.hold), (Some("new"), None));
    let (status, _, body) = get(
        &client(),
        router.addr(),
        "/",
        &[("x-tenant-id", "tls-acme")],
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "new"));

    // --gate-ca belongs to an https gate: refused by name, before any hold is written.
    let plain = format!("http://127.0.0.1:{}/caught-up", gate.addr.port());
    let back = [
        "tls-acme",
        "--to",
        "legacy",
        "--gate-url",
        &plain,
        "--gate-ca",
        ca,
    ];
    let (code, out) = finished(start_move(&config, &back)).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("--gate-ca is for an https:// gate URL"),
        "{out}"
    );
    let after = setup.store().get("tls-acme").unwrap().unwrap();
    assert_eq!(after.version, item.version, "nothing written");
    router.shutdown().await;
}

/// `flags move --split`: the tenant is held, then flipped to weights in one write; the held
/// requests are released to the split (each user sticky to its side).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_to_a_split_holds_then_spreads_the_tenant_by_user() {
    let setup = Setup::new().await;
    let (router, config) = router(&setup, "").await;
    let version = setup.set("split-acme", pin("legacy"));
    wait_version(&router, version).await;
    let gate = setup.dir.path().join("split-caught-up");
    let gate_cmd = format!("test -e {}", gate.display());
    let args = [
        "split-acme",
        "--split",
        "legacy=50,new=50",
        "--hold-max",
        "10s",
        "--gate-cmd",
        &gate_cmd,
    ];
    let mv = start_move(&config, &args);
    until_held(&router, "split-acme").await;
    let held = requests(&router, "split-acme", "/", 2);
    wait_metric(&router, "switchyard_hold_queued", 2.0).await;
    std::fs::write(&gate, "").unwrap();
    let (code, out) = finished(mv).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("4. moved 1 tenant(s) to legacy=50,new=50"),
        "{out}"
    );
    for r in held {
        assert_eq!(r.await.unwrap().0, StatusCode::OK);
    }
    let item = setup.store().get("split-acme").unwrap().unwrap();
    let weights: Vec<(String, u32)> = item.weights.clone().unwrap().into_iter().collect();
    assert_eq!(
        (item.target, weights, item.hold),
        (None, vec![("legacy".into(), 50), ("new".into(), 50)], None)
    );
    // Forty users: both sides serve some, and each user keeps its side.
    let mut sides = std::collections::BTreeMap::new();
    for user in 0..40 {
        let user = format!("u{user}");
        let headers = [("x-tenant-id", "split-acme"), ("x-user-id", user.as_str())];
        let (_, _, first) = get(&client(), router.addr(), "/", &headers).await;
        let (_, _, again) = get(&client(), router.addr(), "/", &headers).await;
        assert_eq!(first, again, "{user} is sticky");
        *sides.entry(first).or_insert(0) += 1;
    }
    assert_eq!(sides.len(), 2, "{sides:?}");
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_killed_mid_hold_is_released_by_every_router_at_the_deadline() {
    let setup = Setup::new().await;
    let (router, config) = router(&setup, "").await;
    let mut mv = start_move(
        &config,
        &[
            "hold-acme",
            "--to",
            "new",
            "--hold-max",
            "4s",
            "--gate-cmd",
            "sleep 30",
        ],
    );
    until_held(&router, "hold-acme").await;
    let held = requests(&router, "hold-acme", "/", 2);
    wait_metric(&router, "switchyard_hold_queued", 2.0).await;
    mv.kill().unwrap();
    mv.wait().unwrap();
    let started = std::time::Instant::now();
    for r in held {
        let (status, body) = r.await.unwrap();
        assert_eq!((status, body.as_str()), (StatusCode::OK, "legacy"));
    }
    // Released at the deadline (4 s from the hold), not later.
    assert!(started.elapsed() < Duration::from_secs(6));
    // Nobody ended the hold: it is still written, and past its deadline it holds nothing.
    assert!(
        setup
            .store()
            .get("hold-acme")
            .unwrap()
            .unwrap()
            .hold
            .is_some()
    );
    let (status, _, body) = get(
        &client(),
        router.addr(),
        "/",
        &[("x-tenant-id", "hold-acme")],
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "legacy"));
    assert_eq!(
        metric(
            &router,
            "switchyard_hold_requests_total{outcome=\"expired\"}"
        )
        .await,
        Some(2.0)
    );
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_with_retry_after_and_a_held_tenant_refuses_other_writes() {
    let setup = Setup::new().await;
    let (router, config) = router(&setup, "hold_queue = 1\n").await;
    let hold = flag_store::HoldItem {
        id: "h-test".into(),
        tenants: 1,
        deadline_ms: flag_store::fleet::now_ms() + 60_000,
    };
    let write = |hold: flag_store::HoldWrite| flag_store::FlagWrite {
        evacuation: None,
        ramp: None,
        tenant: "hold-acme".into(),
        placing: Some(pin("legacy")),
        seal: None,
        shadow: None,
        by: "test".into(),
        reason: "test".into(),
        expect_version: None,
        force: false,
        hold,
        jobs: None,
    };
    setup
        .store()
        .write(&write(flag_store::HoldWrite::Set(hold)), None)
        .unwrap();
    until_held(&router, "hold-acme").await;
    let first = requests(&router, "hold-acme", "/", 1);
    wait_metric(&router, "switchyard_hold_queued", 1.0).await;
    let (status, headers, body) = get(
        &client(),
        router.addr(),
        "/",
        &[("x-tenant-id", "hold-acme")],
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("being moved (hold h-test)"), "{body}");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Another tenant is not held.
    let (status, _, _) = get(
        &client(),
        router.addr(),
        "/",
        &[("x-tenant-id", "hold-globex")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // An ordinary write of the held tenant is refused, naming the hold.
    let (code, _, err) = switchyard(&[
        "flags",
        "set",
        "hold-acme",
        "--target",
        "new",
        "--reason",
        "x",
        "--config",
        &config,
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("held by the move h-test"), "{err}");
    // Its move ends the hold: the queued request goes on.
    setup
        .store()
        .write(&write(flag_store::HoldWrite::End("h-test".into())), None)
        .unwrap();
    let (status, body) = first.into_iter().next().unwrap().await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "legacy"));
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_dynamodb_a_move_holds_flips_and_seals_with_every_step_audited() {
    let emulator = crate::dynamo::Emulator::start().await;
    let setup = Setup::new().await;
    let (router, config) = dynamo_router(&setup, &emulator, "*").await;
    let gate = setup.dir.path().join("caught-up");
    let gate_cmd = format!("test -e {}", gate.display());
    let mv = start_move(
        &config,
        &[
            "hold-acme",
            "--to",
            "new",
            "--seal",
            "--hold-max",
            "15s",
            "--gate-cmd",
            &gate_cmd,
        ],
    );
    until_held(&router, "hold-acme").await;
    let held = requests(&router, "hold-acme", "/", 2);
    wait_metric(&router, "switchyard_hold_queued", 2.0).await;
    // The router's acknowledgement, as `switchyard fleet` reads it from the fleet table.
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let (_, out, _) = switchyard(&["fleet", "--config", &config, "--json"]);
        if out.contains("\"drained\"") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no acknowledgement: {out}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::write(&gate, "").unwrap();
    let (code, out) = finished(mv).await;
    assert_eq!(code, 0, "{out}");
    for r in held {
        let (status, body) = r.await.unwrap();
        assert_eq!((status, body.as_str()), (StatusCode::OK, "new"));
    }
    // The audit trail names the hold and the move.
    let (code, history, err) = switchyard(&["flags", "history", "hold-acme", "--config", &config]);
    assert_eq!(code, 0, "{err}");
    assert!(
        history.contains("hold h") && history.contains("for a move to new"),
        "{history}"
    );
    assert!(history.contains("move to new (hold h"), "{history}");
    let (_, get, _) = switchyard(&["flags", "get", "hold-acme", "--config", &config, "--json"]);
    let item: serde_json::Value = serde_json::from_str(&get).unwrap();
    assert_eq!(
        (item["target"].as_str(), item["sealed"].as_bool()),
        (Some("new"), Some(true))
    );
    assert!(item.get("hold").is_none(), "{item}");
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_router_blocks_a_move_until_it_is_named_gone() {
    let setup = Setup::new().await;
    let path = |id: &str| {
        let text = setup.config_text() + &format!("[fleet]\nid = \"{id}\"\nheartbeat_ms = 50\n");
        let path = setup.dir.path().join(format!("{id}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    };
    let (alive, dead) = (path("alive"), path("dead"));
    let _alive = Binary::serve(&alive);
    let mut gone = Binary::serve(&dead);
    let record = setup.dir.path().join("flags.fleet/dead.json");
    wait_for("the dead router's record", || record.exists()).await;
    // Killed for real: it cannot deregister, and a router cut off from the store may still
    // serve, so its silence blocks the move.
    gone.signal(nix::sys::signal::Signal::SIGKILL);
    gone.exited().await;
    let config = alive.to_str().unwrap();
    let mv = start_move(
        config,
        &[
            "hold-acme",
            "--to",
            "new",
            "--hold-max",
            "4s",
            "--fleet-timeout",
            "300ms",
        ],
    );
    let (code, out) = finished(mv).await;
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("not seen for over 300ms and not acknowledged"),
        "{out}"
    );
    assert!(out.contains("dead"), "{out}");
    assert_eq!(
        setup
            .store()
            .get("hold-acme")
            .unwrap()
            .unwrap()
            .target
            .as_deref(),
        Some("legacy")
    );
    // Named gone, it no longer blocks; the hold's audit record says it was ignored.
    let mv = start_move(
        config,
        &[
            "hold-acme",
            "--to",
            "new",
            "--hold-max",
            "5s",
            "--fleet-timeout",
            "300ms",
            "--ignore-router",
            "dead",
        ],
    );
    let (code, out) = finished(mv).await;
    assert_eq!(code, 0, "{out}");
    let (_, _, body) = get(&client(), _alive.addr, "/", &[("x-tenant-id", "hold-acme")]).await;
    assert_eq!(body, "new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_lost_mid_hold_leaves_every_router_to_release_at_the_deadline() {
    let mut emulator = crate::dynamo::Emulator::start().await;
    let setup = Setup::new().await;
    let (router, config) = dynamo_router(&setup, &emulator, "hold-acme").await;
    let mv = start_move(
        &config,
        &[
            "hold-acme",
            "--to",
            "new",
            "--hold-max",
            "6s",
            "--gate-cmd",
            "exit 1",
        ],
    );
    until_held(&router, "hold-acme").await;
    let held = requests(&router, "hold-acme", "/", 2);
    wait_metric(&router, "switchyard_hold_queued", 2.0).await;
    // The store goes away mid-hold: nobody can end the hold, the deadline does.
    emulator.stop();
    for r in held {
        let (status, body) = r.await.unwrap();
        assert_eq!((status, body.as_str()), (StatusCode::OK, "legacy"));
    }
    let (code, out) = finished(mv).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("aborted"), "{out}");
    assert!(
        out.contains("every router releases them where they are at the deadline"),
        "{out}"
    );
    router.shutdown().await;
}
