//! The DynamoDB store against a real DynamoDB Local over HTTP (started per test; installed by
//! ./scripts/test.sh): audited conditional writes, routers following a flip with reads
//! proportional to the change, and static stability when the store goes away.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use flag_store::dynamodb::{DynamoStore, DynamoUrl};
use flag_store::{FlagWrite, Placing, StoreError};
use http::StatusCode;
use switchyard::Router;

use crate::support::*;

/// A DynamoDB Local process on a loopback port.
pub struct Emulator {
    child: Child,
    port: u16,
}

fn emulator_lib() -> PathBuf {
    if let Some(dir) = std::env::var_os("SWITCHYARD_DDB_LOCAL_LIB") {
        return dir.into();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ddb-local/package/lib");
    std::fs::read_dir(&root)
        .ok()
        .and_then(|mut d| d.find_map(|e| e.ok().map(|e| e.path()).filter(|p| p.join("DynamoDBLocal.jar").exists())))
        .unwrap_or_else(|| panic!("DynamoDB Local is not installed under {}: run ./scripts/test.sh, which installs it", root.display()))
}

/// How long DynamoDB Local's JVM may take to answer after it is started.
const JVM_START_TIMEOUT: Duration = Duration::from_secs(60);

impl Emulator {
    /// A fresh in-memory emulator. A free port can be taken by another test's emulator before
    /// this one binds it: then this one exits, and starts again on another port.
    pub async fn start() -> Emulator {
        for _ in 0..3 {
            if let Some(emulator) = Self::spawn(free_port(), None).await {
                return emulator;
            }
        }
        panic!("DynamoDB Local exited at start three times (its port taken each time?)");
    }

    /// An emulator keeping its data in `dir`, so it can be stopped and started again.
    pub async fn start_in(dir: &Path, port: u16) -> Emulator {
        Self::spawn(port, Some(dir.to_owned()))
            .await
            .unwrap_or_else(|| panic!("DynamoDB Local exited at start on port {port}"))
    }

    /// `None` when the emulator exits before it answers.
    async fn spawn(port: u16, db_dir: Option<PathBuf>) -> Option<Emulator> {
        let lib = emulator_lib();
        let mut cmd = Command::new("java");
        cmd.current_dir(&lib)
            .arg("-Xmx256m")
            .arg(format!(
                "-Djava.library.path={}",
                lib.join("DynamoDBLocal_lib").display()
            ))
            .args([
                "-jar",
                "DynamoDBLocal.jar",
                "-disableTelemetry",
                "-port",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match &db_dir {
            Some(dir) => cmd.arg("-dbPath").arg(dir),
            None => cmd.args(["-inMemory"]),
        };
        let mut emulator = Emulator {
            child: cmd.spawn().expect("java starts DynamoDB Local"),
            port,
        };
        // Ready when it answers: creating the tables is the first thing every test does anyway.
        // A JVM starting beside a dozen others on two busy cores can take longer than a test's
        // events are given, so its start has a bound of its own.
        let store = emulator.store().await;
        let deadline = tokio::time::Instant::now() + JVM_START_TIMEOUT;
        loop {
            match store.create_tables().await {
                Ok(_) => break,
                Err(e) => {
                    if emulator.child.try_wait().ok().flatten().is_some() {
                        return None;
                    }
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "DynamoDB Local did not come up within {JVM_START_TIMEOUT:?}: {}",
                        flag_store::error::Chain(&e)
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(emulator)
    }

    pub fn url(&self) -> String {
        format!(
            "dynamodb://flags?region=us-east-1&endpoint=http://127.0.0.1:{}",
            self.port
        )
    }

    pub async fn store(&self) -> DynamoStore {
        DynamoStore::connect(&DynamoUrl::parse(&self.url()).unwrap()).await
    }

    /// A plain AWS SDK client on the emulator, for writes that bypass Switchyard.
    pub fn sdk(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::Config::builder()
                .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
                .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
                .endpoint_url(format!("http://127.0.0.1:{}", self.port))
                .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                    "local", "local", None, None, "test",
                ))
                .build(),
        )
    }

    /// Kills it, as a crash or a network cut would look to a router.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn write(tenant: &str, placing: Option<Placing>, by: &str, expect: Option<u64>) -> FlagWrite {
    FlagWrite {
        evacuation: None,
        ramp: None,
        hold: Default::default(),
        jobs: None,
        tenant: tenant.into(),
        placing,
        seal: None,
        shadow: None,
        by: by.into(),
        reason: format!("{by} moves {tenant}"),
        expect_version: expect,
        force: false,
    }
}

pub fn pin(target: &str) -> Option<Placing> {
    Some(Placing::Pinned(target.into()))
}

/// A router config for `setup`'s upstreams, reading flags from `url`.
pub fn router_config(setup: &Setup, url: &str) -> switchyard::Config {
    switchyard::Config::parse(&router_config_text(setup, url), setup.dir.path(), "test").unwrap()
}

pub fn router_config_text(setup: &Setup, url: &str) -> String {
    setup
        .config_text()
        .replace(
            "source = \"file:flags.json\"",
            &format!("source = \"{url}\"\ncache_path = \"flags-cache.json\""),
        )
        .replace("poll_interval_ms = 10", "poll_interval_ms = 50")
}

/// The same config as a file, for the CLI's `--config`.
pub fn router_config_file(setup: &Setup, url: &str) -> String {
    let path = setup.dir.path().join("router-dynamo.toml");
    std::fs::write(&path, router_config_text(setup, url)).unwrap();
    path.to_str().unwrap().to_owned()
}

/// One audit record as the test reads it: old target, new target, new seal, reason.
type Change<'a> = (Option<&'a str>, Option<&'a str>, Option<bool>, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_conditional_audited_and_refuse_unsafe_moves() {
    let emulator = Emulator::start().await;
    let url = emulator.url();
    let (code, out, err) = switchyard(&["flags", "create-table", "--store", &url]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("is ready"), "{out}");
    let (code, _, err) = switchyard(&[
        "flags", "set", "acme", "--target", "legacy", "--reason", "onboard", "--store", &url,
    ]);
    assert_eq!(code, 0, "{err}");

    // Two operators race on acme from the same version: exactly one wins.
    let store = emulator.store().await;
    let (alice, bob) = (
        write("acme", pin("new"), "alice", Some(1)),
        write("acme", pin("new"), "bob", Some(1)),
    );
    let (a, b) = tokio::join!(store.write(&alice, None), store.write(&bob, None));
    let (winner, loser) = match (a, b) {
        (Ok(w), Err(l)) => (w, l),
        (Err(l), Ok(w)) => (w, l),
        other => panic!("exactly one writer must win: {other:?}"),
    };
    assert_eq!(winner.1.version, 2);
    match &loser {
        StoreError::Conflict {
            expected: 1,
            actual: 2,
            by,
            ..
        } => assert_eq!(by.as_deref(), winner.1.updated_by.as_deref()),
        other => panic!("the loser must get a conflict naming the winner: {other:?}"),
    }
    assert!(
        loser
            .to_string()
            .contains("it is at version 2, last written by"),
        "{loser}"
    );

    // Seal, then a move is refused unless forced with a reason.
    let (code, _, err) = switchyard(&[
        "flags", "seal", "acme", "--reason", "cut over", "--store", &url,
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = switchyard(&[
        "flags",
        "set",
        "acme",
        "--target",
        "legacy",
        "--reason",
        "roll back",
        "--store",
        &url,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("sealed on new"), "{err}");
    let (code, _, err) = switchyard(&[
        "flags",
        "set",
        "acme",
        "--target",
        "legacy",
        "--reason",
        "restored from backup",
        "--force",
        "--store",
        &url,
    ]);
    assert_eq!(code, 0, "{err}");

    // Every write is in the audit trail, in order, with who, why, from and to.
    let (code, out, err) = switchyard(&["flags", "history", "acme", "--store", &url, "--json"]);
    assert_eq!(code, 0, "{err}");
    let history: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let summary: Vec<Change> = history
        .iter()
        .map(|r| {
            (
                r["old"]["target"].as_str(),
                r["new"]["target"].as_str(),
                r["new"]["sealed"].as_bool(),
                r["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(summary.len(), 4, "{out}");
    assert_eq!(summary[0], (None, Some("legacy"), None, "onboard"));
    assert_eq!((summary[1].0, summary[1].1), (Some("legacy"), Some("new")));
    assert_eq!(
        summary[2],
        (Some("new"), Some("new"), Some(true), "cut over")
    );
    assert_eq!(
        summary[3],
        (
            Some("new"),
            Some("legacy"),
            Some(true),
            "restored from backup"
        )
    );
    assert!(
        history
            .iter()
            .all(|r| r["by"].as_str().is_some_and(|b| !b.is_empty())
                && r["at"].as_str().is_some_and(|a| a.ends_with('Z')))
    );
    let (_, table, _) = switchyard(&["flags", "history", "acme", "--store", &url]);
    assert!(
        table.lines().count() == 4 && table.contains("new (sealed) -> legacy (sealed)"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_loads_10000_tenants_and_follows_a_flip_with_reads_proportional_to_the_change() {
    let emulator = Emulator::start().await;
    // Seed 10,000 tenants directly, 25 to a batch, as a bulk import would.
    let sdk = emulator.sdk();
    let s = |v: &str| AttributeValue::S(v.into());
    for chunk in (0..10_000).collect::<Vec<u32>>().chunks(25) {
        let requests = chunk
            .iter()
            .map(|i| {
                let put = PutRequest::builder()
                    .item("tenant", s(&format!("tenant-{i:05}")))
                    .item("mode", s("pinned"))
                    .item("target", s(if i % 2 == 0 { "legacy" } else { "new" }))
                    .item("version", AttributeValue::N("1".into()))
                    .build()
                    .unwrap();
                WriteRequest::builder().put_request(put).build()
            })
            .collect();
        sdk.batch_write_item()
            .request_items("flags", requests)
            .send()
            .await
            .unwrap();
    }
    let store = emulator.store().await;
    store
        .write(&write("acme", pin("legacy"), "alice", None), None)
        .await
        .unwrap();

    let setup = Setup::new().await;
    let router = Router::start(router_config(&setup, &emulator.url()))
        .await
        .unwrap();
    assert_eq!(
        metric(&router, "switchyard_flags_tenants").await,
        Some(10_001.0)
    );
    let c = client();
    let (_, h, _) = get(&c, router.addr(), "/", &[("x-tenant-id", "tenant-00007")]).await;
    assert_eq!(h["x-upstream"], "new");
    // Items and polls from one scrape: a poll between two scrapes would count on one side only.
    let reads = [
        "switchyard_flags_store_items_read_total",
        "switchyard_flags_store_reads_total{op=\"get\"}",
    ];
    let before = metrics(&router, &reads).await;
    let (items_before, gets_before) = (before[0].unwrap(), before[1].unwrap());
    let scans = metric(&router, "switchyard_flags_store_reads_total{op=\"scan\"}")
        .await
        .unwrap();
    assert!(
        items_before >= 10_002.0,
        "the cold start read the whole table: {items_before}"
    );

    store
        .write(&write("acme", pin("new"), "alice", None), None)
        .await
        .unwrap();
    let version = store.version().await.unwrap();
    wait_version(&router, version).await;
    let (_, h, _) = get(&c, router.addr(), "/", &[("x-tenant-id", "acme")]).await;
    assert_eq!(h["x-upstream"], "new", "the flip applied");

    // Polls read one meta item each; the change itself read one audit record. No scan.
    let after = metrics(&router, &reads).await;
    let (items, gets) = (
        after[0].unwrap() - items_before,
        after[1].unwrap() - gets_before,
    );
    assert_eq!(
        items - gets,
        1.0,
        "a one-tenant change read {items} items over {gets} polls"
    );
    assert_eq!(
        metric(&router, "switchyard_flags_store_reads_total{op=\"scan\"}")
            .await
            .unwrap(),
        scans
    );
    eprintln!("10,001 tenants loaded; the flip cost {gets} meta reads and 1 change record");
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_survives_the_store_going_away_under_load_and_catches_up_when_it_returns() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut emulator = Emulator::start_in(data.path(), port).await;
    let store = emulator.store().await;
    store
        .write(&write("acme", pin("new"), "alice", None), None)
        .await
        .unwrap();
    let setup = Setup::new().await;
    // Readiness policy: a snapshot older than 1.5 s makes the router not ready (it still routes).
    let text = router_config_text(&setup, &emulator.url()).replace(
        "poll_interval_ms = 50",
        "poll_interval_ms = 50\nready_max_age_ms = 1500",
    );
    let config = switchyard::Config::parse(&text, setup.dir.path(), "test").unwrap();
    let router = Router::start(config).await.unwrap();
    let addr = router.addr();

    // Eight clients send acme's requests back to back for the whole outage and recovery.
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..8)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let c = client();
                let (mut ok, mut failed, mut upstreams) = (0u64, Vec::new(), HashSet::new());
                while !stop.load(Ordering::Relaxed) {
                    let (status, h, body) = get(&c, addr, "/", &[("x-tenant-id", "acme")]).await;
                    if status == StatusCode::OK {
                        ok += 1;
                        upstreams.insert(h["x-upstream"].to_str().unwrap().to_owned());
                    } else {
                        failed.push(format!("{status} {body}"));
                    }
                }
                (ok, failed, upstreams)
            })
        })
        .collect();

    emulator.stop();
    let flags = router.flags().clone();
    let errors = flags.reloads(flag_store::ReloadResult::Error);
    wait_for("a failed poll", || {
        flags.reloads(flag_store::ReloadResult::Error) > errors
    })
    .await;
    let age = flags.age();
    wait_for("the snapshot's age to pass the readiness limit", || {
        flags.age() > Duration::from_millis(1600)
    })
    .await;
    let age_metric = metric(&router, "switchyard_flags_age_seconds")
        .await
        .unwrap();
    assert!(age_metric > age.as_secs_f64().max(1.5), "{age_metric}");
    let (status, body) = admin_get(&router, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("over flags.ready_max_age_ms"), "{body}");

    // Back: the router catches up with what was written while it could not see the store.
    let _emulator = Emulator::start_in(data.path(), port).await;
    let store = _emulator.store().await;
    store
        .write(&write("acme", pin("legacy"), "alice", None), None)
        .await
        .unwrap();
    wait_version(&router, store.version().await.unwrap()).await;
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut upstreams) = (0, HashSet::new());
    for task in load {
        let (n, failed, seen) = task.await.unwrap();
        assert!(
            failed.is_empty(),
            "requests failed during the outage: {failed:?}"
        );
        ok += n;
        upstreams.extend(seen);
    }
    let (_, h, _) = get(&client(), addr, "/", &[("x-tenant-id", "acme")]).await;
    assert_eq!(h["x-upstream"], "legacy");
    assert!(upstreams.contains("new"), "{upstreams:?}");
    assert!(flags.age() < Duration::from_secs(2));
    assert_eq!(admin_get(&router, "/readyz").await.0, StatusCode::OK);
    eprintln!(
        "store outage under 8 clients: {ok} requests, 0 failed; age reached {age_metric:.2} s"
    );
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_started_while_the_store_is_down_routes_from_its_local_copy() {
    let mut emulator = Emulator::start().await;
    let store = emulator.store().await;
    store
        .write(&write("acme", pin("new"), "alice", None), None)
        .await
        .unwrap();
    let setup = Setup::new().await;
    let first = Router::start(router_config(&setup, &emulator.url()))
        .await
        .unwrap();
    let copy = setup.dir.path().join("flags-cache.json");
    wait_for("the local copy to be written", || copy.exists()).await;
    // A change inside the copy's write interval reaches the copy when the router stops.
    store
        .write(&write("acme", pin("legacy"), "alice", None), None)
        .await
        .unwrap();
    wait_version(&first, store.version().await.unwrap()).await;
    first.shutdown().await;

    emulator.stop();
    let router = Router::start(router_config(&setup, &emulator.url()))
        .await
        .unwrap();
    assert!(router.flags().is_loaded(), "routing from the local copy");
    let (status, h, _) = get(&client(), router.addr(), "/", &[("x-tenant-id", "acme")]).await;
    assert_eq!(
        (status, h["x-upstream"].to_str().unwrap()),
        (StatusCode::OK, "legacy")
    );
    assert_eq!(admin_get(&router, "/readyz").await.0, StatusCode::OK);
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_writes_need_the_token_and_the_version_and_are_audited() {
    let emulator = Emulator::start().await;
    let url = emulator.url();
    let mut setup = Setup::new().await;
    let token = "0123456789abcdef0123456789abcdef";
    std::fs::write(setup.dir.path().join("admin.token"), format!("{token}\n")).unwrap();
    setup.extra = "admin_token_file = \"admin.token\"".into();
    // A slow poll: the router sees the API's writes only because the write asks it to poll.
    let text = router_config_text(&setup, &url)
        .replace("poll_interval_ms = 50", "poll_interval_ms = 60000");
    let config = switchyard::Config::parse(&text, setup.dir.path(), "test").unwrap();
    let router = Router::start(config).await.unwrap();
    let store = emulator.store().await;
    let auth = format!("Bearer {token}");
    let put = |headers: Vec<(&'static str, String)>, body: &'static str| {
        let router = &router;
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            admin_request(router, http::Method::PUT, "/flags/acme", &headers, body).await
        }
    };
    let move_to_new = r#"{"target":"new","reason":"batch 4","by":"carol"}"#;

    // No token, a wrong token: 401, and nothing is written.
    let (status, h, body) = put(vec![("if-match", "0".into())], move_to_new).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        h[http::header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let wrong = format!("Bearer {}", token.replace('0', "1"));
    let (status, _, _) = put(
        vec![("authorization", wrong), ("if-match", "0".into())],
        move_to_new,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(store.get("acme").await.unwrap(), None);

    // A write must say which version it read.
    let (status, _, body) = put(vec![("authorization", auth.clone())], move_to_new).await;
    assert_eq!(status, StatusCode::PRECONDITION_REQUIRED, "{body}");
    assert!(body.contains("If-Match"), "{body}");

    // An invalid flag: 400 naming what is wrong.
    for (bad, want) in [
        (
            r#"{"target":"nwe","reason":"typo"}"#,
            "unknown target \\\"nwe\\\"",
        ),
        (
            r#"{"weights":{"legacy":60,"new":60},"reason":"x"}"#,
            "bad weights",
        ),
        (r#"{"target":"new"}"#, "\\\"reason\\\" is required"),
        (
            r#"{"target":"new","reason":"x","colour":1}"#,
            "unknown field `colour`",
        ),
        ("not json", "not a flag write"),
    ] {
        let (status, _, body) = put(
            vec![("authorization", auth.clone()), ("if-match", "0".into())],
            bad,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body.contains(want), "{bad}: want {want} in {body}");
    }
    assert_eq!(store.get("acme").await.unwrap(), None);

    // The write: 200 with the new version as the ETag, and the router follows it.
    let (status, h, body) = put(
        vec![
            ("authorization", auth.clone()),
            ("if-match", "\"0\"".into()),
        ],
        move_to_new,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(h[http::header::ETAG], "\"1\"");
    // Answered once this router routes by it: the next request and GET see it at once.
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["routed_here"], true, "{body}");
    let (_, h, _) = get(&client(), router.addr(), "/", &[("x-tenant-id", "acme")]).await;
    assert_eq!(h["x-upstream"], "new");
    let (status, h, _) = get(&client(), router.admin_addr(), "/flags/acme", &[]).await;
    assert_eq!(
        (status, &h[http::header::ETAG]),
        (
            StatusCode::OK,
            &"\"1\"".parse::<http::HeaderValue>().unwrap()
        )
    );

    // A second writer who read version 0 loses: 409 with the current version and its writer.
    let (status, _, body) = put(
        vec![("authorization", auth.clone()), ("if-match", "0".into())],
        r#"{"target":"legacy","reason":"roll back","by":"dave"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["current_version"].as_u64(), v["last_written_by"].as_str()),
        (Some(1), Some("carol"))
    );

    // The same audit record as the CLI's.
    let history = store.history("acme").await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(
        (history[0].by.as_str(), history[0].reason.as_str()),
        ("carol", "batch 4")
    );
    assert_eq!(
        history[0].new.as_ref().and_then(|n| n.target.as_deref()),
        Some("new")
    );
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_prints_its_plan_writes_only_when_told_and_rejects_bad_rows_alone() {
    let emulator = Emulator::start().await;
    let url = emulator.url();
    let setup = Setup::new().await;
    let config = router_config_file(&setup, &url);
    let store = emulator.store().await;
    for (tenant, target) in [("acme", "legacy"), ("umbrella", "new")] {
        store
            .write(&write(tenant, pin(target), "alice", None), None)
            .await
            .unwrap();
    }
    let mut seal = write("umbrella", None, "alice", None);
    seal.seal = Some(true);
    store.write(&seal, None).await.unwrap();

    let batch = setup.dir.path().join("batch5.csv");
    std::fs::write(
        &batch,
        "tenant,target,seal\n\
         acme,new\n\
         globex,\"legacy=50,new=50\"\n\
         umbrella,legacy\n\
         initech,nwe\n\
         hooli,new,maybe\n\
         soylent,new,seal\n",
    )
    .unwrap();
    let b = batch.to_str().unwrap();
    let apply = |extra: &[&str]| {
        let mut args = vec![
            "flags", "apply", b, "--reason", "batch 5", "--config", &config,
        ];
        args.extend_from_slice(extra);
        switchyard(&args)
    };

    // The plan: who moves where, the counts, the sealed tenant, the bad rows. Nothing written.
    let before = store.version().await.unwrap();
    let (code, out, err) = apply(&[]);
    assert_eq!(code, 2, "{out}{err}");
    for want in [
        "acme     legacy -> new",
        "globex   (no flag) -> legacy=50,new=50",
        "soylent  (no flag) -> new (sealed)",
        "legacy -> new: 1",
        "tenants by target after the batch (changed tenants only): new 2, split 1",
        "sealed tenants it would move, refused without --force: umbrella",
        "line 4: tenant \"umbrella\": is sealed on new",
        "line 5: tenant \"initech\": unknown target \"nwe\"",
        "line 6: tenant \"hooli\": seal \"maybe\"",
        "plan: 3 to change, 0 unchanged, 3 rejected",
        "nothing written",
    ] {
        assert!(out.contains(want), "want {want:?} in:\n{out}");
    }
    assert_eq!(
        store.version().await.unwrap(),
        before,
        "a plan writes nothing"
    );

    // --yes: every good row is written (one audited transaction each); the bad ones are not.
    let (code, out, err) = apply(&["--yes"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        out.contains("written: 3, failed: 0, unchanged: 0, rejected: 3"),
        "{out}"
    );
    let target = |t: &'static str| {
        let store = &store;
        async move {
            store
                .get(t)
                .await
                .unwrap()
                .map(|i| (i.target, i.weights.map(|w| w.len()), i.sealed))
        }
    };
    assert_eq!(
        target("acme").await,
        Some((Some("new".into()), None, false))
    );
    assert_eq!(target("globex").await, Some((None, Some(2), false)));
    assert_eq!(
        target("soylent").await,
        Some((Some("new".into()), None, true))
    );
    assert_eq!(
        target("umbrella").await,
        Some((Some("new".into()), None, true))
    );
    assert_eq!(target("initech").await, None);
    assert_eq!(target("hooli").await, None);
    let history = store.history("acme").await.unwrap();
    assert_eq!(history.last().map(|r| r.reason.as_str()), Some("batch 5"));
    assert_eq!(history.last().map(|r| r.by.as_str()), Some("alice"));

    // Re-running is idempotent: nothing is written twice.
    let after = store.version().await.unwrap();
    let (code, out, _) = apply(&["--yes"]);
    assert_eq!(code, 2);
    assert!(
        out.contains("written: 0, failed: 0, unchanged: 3, rejected: 3"),
        "{out}"
    );
    assert_eq!(store.version().await.unwrap(), after);

    // A big batch shows progress as it writes, and the router follows it.
    let router = Router::start(router_config(&setup, &url)).await.unwrap();
    let big = setup.dir.path().join("batch6.jsonl");
    let rows: String = (0..250)
        .map(|i| format!("{{\"tenant\":\"t{i:03}\",\"target\":\"new\"}}\n"))
        .collect();
    std::fs::write(&big, rows).unwrap();
    let (code, out, err) = switchyard(&[
        "flags",
        "apply",
        big.to_str().unwrap(),
        "--reason",
        "batch 6",
        "--config",
        &config,
        "--yes",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("progress: 250/250 written"), "{err}");
    assert!(out.contains("(no flag) -> new: 250"), "{out}");
    wait_version(&router, store.version().await.unwrap()).await;
    let (_, h, _) = get(&client(), router.addr(), "/", &[("x-tenant-id", "t249")]).await;
    assert_eq!(h["x-upstream"], "new");
    router.shutdown().await;
}

/// A batch goes in shared transactions (49 tenants each), yet each tenant's write stands on
/// its own: a sealed tenant and one whose version moved are refused by name inside a chunk,
/// the rest are written, and every change keeps its own sequence number and audit record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_shares_transactions_but_refuses_each_bad_write_alone() {
    let emulator = Emulator::start().await;
    let url = emulator.url();
    let (code, _, err) = switchyard(&["flags", "create-table", "--store", &url]);
    assert_eq!(code, 0, "{err}");
    let store = emulator.store().await;
    let mut sealed = write("sealed", pin("legacy"), "bob", None);
    sealed.seal = Some(true);
    store.write(&sealed, None).await.unwrap();
    store
        .write(&write("moved", pin("legacy"), "bob", None), None)
        .await
        .unwrap();
    let before = store.version().await.unwrap();

    // 60 tenants, with the two bad writes in the first transaction.
    let mut writes: Vec<FlagWrite> = (0..60)
        .map(|i| write(&format!("b{i:02}"), pin("new"), "alice", Some(0)))
        .collect();
    writes.insert(10, write("sealed", pin("new"), "alice", None));
    writes.insert(20, write("moved", pin("new"), "alice", Some(0)));
    let results = store.write_many(&writes, None).await;
    for (w, r) in writes.iter().zip(&results) {
        match w.tenant.as_str() {
            "sealed" => assert!(matches!(r, Err(StoreError::Sealed { .. })), "{r:?}"),
            "moved" => assert!(
                matches!(r, Err(StoreError::Conflict { actual: 1, .. })),
                "{r:?}"
            ),
            t => assert!(r.is_ok(), "{t}: {r:?}"),
        }
    }
    assert_eq!(store.version().await.unwrap(), before + 60);
    // One audit record a change, each at its own sequence number.
    let records = emulator
        .sdk()
        .query()
        .table_name("flags-audit")
        .key_condition_expression("#s = :s AND seq > :v")
        .expression_attribute_names("#s", "stream")
        .expression_attribute_values(":s", AttributeValue::S("changes".into()))
        .expression_attribute_values(":v", AttributeValue::N(before.to_string()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    let tenants: HashSet<String> = (records.items())
        .iter()
        .map(|r| r["tenant"].as_s().unwrap().clone())
        .collect();
    assert_eq!((records.items().len(), tenants.len()), (60, 60));
    assert!(!tenants.contains("sealed") && !tenants.contains("moved"));
    assert_eq!(
        store
            .get("sealed")
            .await
            .unwrap()
            .unwrap()
            .target
            .as_deref(),
        Some("legacy")
    );
}
