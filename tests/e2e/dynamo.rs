//! The DynamoDB store against a real DynamoDB Local over HTTP (started per test; installed by
//! ./scripts/test.sh): audited conditional writes, routers following a flip with reads
//! proportional to the change, and static stability when the store goes away.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use flag_store::dynamodb::{DynamoStore, DynamoUrl};
use flag_store::{FlagWrite, Placing, StoreError};
use http::StatusCode;
use switchyard::Router;

use crate::support::*;

/// A DynamoDB Local process on a loopback port.
struct Emulator {
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

impl Emulator {
    /// A fresh in-memory emulator.
    async fn start() -> Emulator {
        Self::spawn(free_port(), None).await
    }

    /// An emulator keeping its data in `dir`, so it can be stopped and started again.
    async fn start_in(dir: &Path, port: u16) -> Emulator {
        Self::spawn(port, Some(dir.to_owned())).await
    }

    async fn spawn(port: u16, db_dir: Option<PathBuf>) -> Emulator {
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
        let emulator = Emulator {
            child: cmd.spawn().expect("java starts DynamoDB Local"),
            port,
        };
        // Ready when it answers: creating the tables is the first thing every test does anyway.
        let store = emulator.store().await;
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        loop {
            match store.create_tables().await {
                Ok(()) => break,
                Err(e) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "DynamoDB Local did not come up: {}",
                    flag_store::error::Chain(&e)
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        emulator
    }

    fn url(&self) -> String {
        format!(
            "dynamodb://flags?region=us-east-1&endpoint=http://127.0.0.1:{}",
            self.port
        )
    }

    async fn store(&self) -> DynamoStore {
        DynamoStore::connect(&DynamoUrl::parse(&self.url()).unwrap()).await
    }

    /// Kills it, as a crash or a network cut would look to a router.
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write(tenant: &str, placing: Option<Placing>, by: &str, expect: Option<u64>) -> FlagWrite {
    FlagWrite {
        tenant: tenant.into(),
        placing,
        seal: None,
        by: by.into(),
        reason: format!("{by} moves {tenant}"),
        expect_version: expect,
        force: false,
    }
}

fn pin(target: &str) -> Option<Placing> {
    Some(Placing::Pinned(target.into()))
}

/// A router config for `setup`'s upstreams, reading flags from `url`.
fn router_config(setup: &Setup, url: &str) -> switchyard::Config {
    let text = setup
        .config_text()
        .replace(
            "source = \"file:flags.json\"",
            &format!("source = \"{url}\"\ncache_path = \"flags-cache.json\""),
        )
        .replace("poll_interval_ms = 10", "poll_interval_ms = 50");
    switchyard::Config::parse(&text, setup.dir.path(), "test").unwrap()
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
    let sdk = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .endpoint_url(format!("http://127.0.0.1:{}", emulator.port))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "local", "local", None, None, "test",
            ))
            .build(),
    );
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
    let items_before = metric(&router, "switchyard_flags_store_items_read_total")
        .await
        .unwrap();
    let gets_before = metric(&router, "switchyard_flags_store_reads_total{op=\"get\"}")
        .await
        .unwrap();
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
    let items = metric(&router, "switchyard_flags_store_items_read_total")
        .await
        .unwrap()
        - items_before;
    let gets = metric(&router, "switchyard_flags_store_reads_total{op=\"get\"}")
        .await
        .unwrap()
        - gets_before;
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
async fn routing_survives_the_store_going_away_and_catches_up_when_it_returns() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut emulator = Emulator::start_in(data.path(), port).await;
    let store = emulator.store().await;
    store
        .write(&write("acme", pin("new"), "alice", None), None)
        .await
        .unwrap();
    let setup = Setup::new().await;
    let router = Router::start(router_config(&setup, &emulator.url()))
        .await
        .unwrap();
    let c = client();
    let (_, h, _) = get(&c, router.addr(), "/", &[("x-tenant-id", "acme")]).await;
    assert_eq!(h["x-upstream"], "new");

    emulator.stop();
    let flags = router.flags().clone();
    let errors = flags.reloads(flag_store::ReloadResult::Error);
    wait_for("a failed poll", || {
        flags.reloads(flag_store::ReloadResult::Error) > errors
    })
    .await;
    let age = flags.age();
    // Requests keep flowing on the last good snapshot while the store is gone.
    for _ in 0..200 {
        let (status, h, _) = get(&c, router.addr(), "/", &[("x-tenant-id", "acme")]).await;
        assert_eq!(
            (status, h["x-upstream"].to_str().unwrap()),
            (StatusCode::OK, "new")
        );
    }
    wait_for("the snapshot's age to grow", || {
        flags.age() > age + Duration::from_millis(200)
    })
    .await;
    assert!(
        metric(&router, "switchyard_flags_age_seconds")
            .await
            .unwrap()
            > age.as_secs_f64()
    );
    assert_eq!(
        admin_get(&router, "/readyz").await.0,
        StatusCode::OK,
        "a stale snapshot still routes"
    );

    // Back: the router catches up with what was written while it could not see the store.
    let _emulator = Emulator::start_in(data.path(), port).await;
    let store = _emulator.store().await;
    store
        .write(&write("acme", pin("legacy"), "alice", None), None)
        .await
        .unwrap();
    wait_version(&router, store.version().await.unwrap()).await;
    let (_, h, _) = get(&c, router.addr(), "/", &[("x-tenant-id", "acme")]).await;
    assert_eq!(h["x-upstream"], "legacy");
    assert!(flags.age() < Duration::from_secs(2));
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
    assert!(
        setup.dir.path().join("flags-cache.json").exists(),
        "the local copy was written"
    );
    first.shutdown().await;

    emulator.stop();
    let router = Router::start(router_config(&setup, &emulator.url()))
        .await
        .unwrap();
    assert!(router.flags().is_loaded(), "routing from the local copy");
    let (status, h, _) = get(&client(), router.addr(), "/", &[("x-tenant-id", "acme")]).await;
    assert_eq!(
        (status, h["x-upstream"].to_str().unwrap()),
        (StatusCode::OK, "new")
    );
    assert_eq!(admin_get(&router, "/readyz").await.0, StatusCode::OK);
    router.shutdown().await;
}
