//! The flag store at the edges of a migration, against a real DynamoDB Local and the real
//! binary: a crash right after a batch, a recreated or restored table, `#meta` lost, and items
//! written straight into the table.

use std::path::Path;
use std::time::Instant;

use aws_sdk_dynamodb::types::AttributeValue;
use flag_store::FileStore;
use http::StatusCode;
use nix::sys::signal::Signal;

use crate::dynamo::{Emulator, router_config_file, write};
use crate::support::*;

fn pinned(target: &str) -> Option<flag_store::Placing> {
    Some(pin(target))
}

/// The upstream that answered `tenant` through the router at `addr`.
async fn side(addr: std::net::SocketAddr, tenant: &str) -> String {
    let (status, h, body) = get(&client(), addr, "/", &[("x-tenant-id", tenant)]).await;
    assert_eq!(status, StatusCode::OK, "{tenant}: {body}");
    h["x-upstream"].to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_killed_right_after_a_batch_restarts_on_the_batch_while_the_store_is_down() {
    let mut emulator = Emulator::start().await;
    let store = emulator.store().await;
    let tenants: Vec<String> = (0..10).map(|i| format!("tenant-{i}")).collect();
    for t in &tenants {
        store
            .write(&write(t, pinned("legacy"), "alice", None), None)
            .await
            .unwrap();
    }
    let setup = Setup::new().await;
    let config = router_config_file(&setup, &emulator.url());
    let router = Binary::serve(Path::new(&config));
    assert_eq!(side(router.addr, "tenant-0").await, "legacy");

    // The batch, then the crash as soon as the local copy holds it.
    let batch_at = Instant::now();
    for t in &tenants {
        store
            .write(&write(t, pinned("new"), "alice", None), None)
            .await
            .unwrap();
    }
    let version = store.version().await.unwrap();
    let copy = FileStore::new(setup.dir.path().join("flags-cache.json"));
    wait_for("the local copy to hold the batch", || {
        copy.load().is_ok_and(|l| l.version == version)
    })
    .await;
    let window = batch_at.elapsed();
    router.signal(Signal::SIGKILL);
    drop(router);
    emulator.stop();

    let router = Binary::serve(Path::new(&config));
    for t in &tenants {
        assert_eq!(side(router.addr, t).await, "new", "{t} after the restart");
    }
    let (status, _, body) = get(&client(), router.admin_addr, "/readyz", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    eprintln!(
        "batch of 10 written to the store and the local copy in {} ms",
        window.as_millis()
    );
}

/// The store's meta item as the AWS SDK reads it: (version, identity).
async fn meta(sdk: &aws_sdk_dynamodb::Client) -> (u64, Option<String>) {
    let item = sdk
        .get_item()
        .table_name("flags")
        .key("tenant", AttributeValue::S("#meta".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .expect("the meta item exists");
    (
        item["version"].as_n().unwrap().parse().unwrap(),
        item.get("store_id").map(|v| v.as_s().unwrap().clone()),
    )
}

/// Sets the meta item's version by hand, as a restore or a console edit would.
async fn set_meta_version(sdk: &aws_sdk_dynamodb::Client, version: u64) {
    sdk.update_item()
        .table_name("flags")
        .key("tenant", AttributeValue::S("#meta".into()))
        .update_expression("SET version = :v")
        .expression_attribute_values(":v", AttributeValue::N(version.to_string()))
        .send()
        .await
        .unwrap();
}

async fn delete_tables(sdk: &aws_sdk_dynamodb::Client) {
    for table in ["flags", "flags-audit"] {
        sdk.delete_table().table_name(table).send().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_table_is_refused_by_running_and_restarted_routers_until_adopted() {
    let emulator = Emulator::start().await;
    let url = emulator.url();
    let store = emulator.store().await;
    for t in ["acme", "globex"] {
        store
            .write(&write(t, pinned("new"), "alice", None), None)
            .await
            .unwrap();
    }
    let sdk = emulator.sdk();
    let (_, old_id) = meta(&sdk).await;
    let setup = Setup::new().await;
    let config = router_config_file(&setup, &url);
    let router = Binary::serve(Path::new(&config));
    assert_eq!(side(router.addr, "acme").await, "new");
    let copy = FileStore::new(setup.dir.path().join("flags-cache.json"));
    wait_for("the local copy", || {
        copy.load().is_ok_and(|l| l.version == 2)
    })
    .await;

    // The table is dropped and made again, as a mistaken `terraform apply` or a console would,
    // and someone writes into the new one.
    delete_tables(&sdk).await;
    let (code, out, err) = switchyard(&["flags", "create-table", "--store", &url]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("a new store"), "{out}");
    let (version, new_id) = meta(&sdk).await;
    assert_eq!(version, 0);
    assert_ne!(new_id, old_id, "a new table gets a new identity");
    store
        .write(&write("acme", pinned("legacy"), "bob", None), None)
        .await
        .unwrap();

    // The running router refuses it: it keeps routing where the data is, and says why.
    let line = router.wait_log(&["flag store refused"]).await;
    assert!(line.contains("identity changed"), "{line}");
    assert_eq!(side(router.addr, "acme").await, "new");
    assert_eq!(side(router.addr, "globex").await, "new");
    let (status, _, body) = get(&client(), router.admin_addr, "/readyz", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains("refused") && body.contains("switchyard flags adopt"),
        "{body}"
    );
    let (_, _, metrics) = get(&client(), router.admin_addr, "/metrics", &[]).await;
    assert!(
        metrics.contains("switchyard_flags_store_refused 1"),
        "{metrics}"
    );

    // A restarted router compares the store with its local copy the same way, and keeps the
    // copy as it was.
    router.signal(Signal::SIGTERM);
    drop(router);
    let router = Binary::serve(Path::new(&config));
    router.wait_log(&["flag store refused"]).await;
    assert_eq!(side(router.addr, "acme").await, "new");
    assert_eq!(side(router.addr, "globex").await, "new");
    let kept = copy.load().unwrap();
    assert_eq!(
        (kept.version, kept.identity.map(|i| i.id)),
        (2, old_id.clone())
    );

    // The operator checks the new table and adopts it: routers load it whole.
    let (code, out, err) = switchyard(&[
        "flags",
        "adopt",
        "--reason",
        "the table was recreated on purpose",
        "--store",
        &url,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("adopted"), "{out}");
    router.wait_log(&["adopting the flag store"]).await;
    wait_for_side(router.addr, "acme", "legacy").await;
    // globex has no flag in the new table: it goes to the default, as the new table says.
    assert_eq!(side(router.addr, "globex").await, "legacy");
    let (_, _, body) = get(&client(), router.admin_addr, "/readyz", &[]).await;
    assert_eq!(body, "ready\n");
    wait_for("the local copy to follow the adopted store", || {
        copy.load()
            .is_ok_and(|l| l.identity.map(|i| i.id) == new_id)
    })
    .await;
}

/// Waits until `tenant` is routed to `want`.
async fn wait_for_side(addr: std::net::SocketAddr, tenant: &str, want: &str) {
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    while side(addr, tenant).await != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{tenant} never went to {want}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_whose_version_goes_back_stays_refused_even_when_it_climbs_past() {
    let emulator = Emulator::start().await;
    let store = emulator.store().await;
    for v in 0u32..3 {
        let target = if v.is_multiple_of(2) { "new" } else { "legacy" };
        store
            .write(&write("acme", pinned(target), "alice", None), None)
            .await
            .unwrap();
    }
    let setup = Setup::new().await;
    let config = router_config_file(&setup, &emulator.url());
    let router = Binary::serve(Path::new(&config));
    assert_eq!(side(router.addr, "acme").await, "new");

    // A restore to an older point: same identity, version 1, acme back on legacy.
    let sdk = emulator.sdk();
    set_meta_version(&sdk, 1).await;
    sdk.put_item()
        .table_name("flags")
        .item("tenant", AttributeValue::S("acme".into()))
        .item("target", AttributeValue::S("legacy".into()))
        .item("version", AttributeValue::N("1".into()))
        .send()
        .await
        .unwrap();
    let line = router.wait_log(&["flag store refused"]).await;
    assert!(line.contains("went back from 3 to 1"), "{line}");
    assert_eq!(side(router.addr, "acme").await, "new");
    // Writes climb past the old version: still refused, never merged into the snapshot.
    sdk.delete_table()
        .table_name("flags-audit")
        .send()
        .await
        .unwrap();
    switchyard(&["flags", "create-table", "--store", &emulator.url()]);
    for t in ["initech", "umbrella", "hooli"] {
        store
            .write(&write(t, pinned("legacy"), "bob", None), None)
            .await
            .unwrap();
    }
    assert!(meta(&sdk).await.0 > 3);
    let (_, _, metrics) = get(&client(), router.admin_addr, "/metrics", &[]).await;
    assert!(
        metrics.contains("switchyard_flags_store_refused 1"),
        "{metrics}"
    );
    let climbed = meta(&sdk).await.0;
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let (_, _, body) = get(&client(), router.admin_addr, "/readyz", &[]).await;
        if body.contains(&format!("the store is at version {climbed} now")) {
            assert!(body.contains("went back from 3 to"), "{body}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the router never saw version {climbed}: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(side(router.addr, "acme").await, "new");
    let (_, h, _) = get(&client(), router.addr, "/", &[("x-tenant-id", "hooli")]).await;
    assert_eq!(h["x-upstream"], "legacy", "hooli has no flag: the default");
}

fn metric_value(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the metrics"))
}

async fn wait_for_metric_above(admin: std::net::SocketAddr, name: &str, floor: f64) {
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let (_, _, metrics) = get(&client(), admin, "/metrics", &[]).await;
        if metric_value(&metrics, name) > floor {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} stayed at {floor}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_meta_item_is_rebuilt_from_the_audit_stream_and_write_errors_say_what_happened() {
    let emulator = Emulator::start().await;
    let url = emulator.url();
    let store = emulator.store().await;
    for t in ["acme", "globex", "initech"] {
        store
            .write(&write(t, pinned("new"), "alice", None), None)
            .await
            .unwrap();
    }
    let sdk = emulator.sdk();
    let (_, id) = meta(&sdk).await;
    let setup = Setup::new().await;
    let config = router_config_file(&setup, &url);
    let router = Binary::serve(Path::new(&config));
    assert_eq!(side(router.addr, "acme").await, "new");

    sdk.delete_item()
        .table_name("flags")
        .key("tenant", AttributeValue::S("#meta".into()))
        .send()
        .await
        .unwrap();
    let (code, _, err) = switchyard(&[
        "flags", "set", "acme", "--target", "legacy", "--reason", "r", "--store", &url,
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("no #meta item") && err.contains("create-table"),
        "{err}"
    );

    // create-table as the error advises: the store keeps its version and identity.
    let (code, out, err) = switchyard(&["flags", "create-table", "--store", &url]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("rebuilt from the audit stream at version 3"),
        "{out}"
    );
    assert_eq!(meta(&sdk).await, (3, id));
    let (code, _, err) = switchyard(&[
        "flags", "set", "acme", "--target", "legacy", "--reason", "r", "--store", &url,
    ]);
    assert_eq!(code, 0, "{err}");
    wait_for_side(router.addr, "acme", "legacy").await;
    assert!(router.log_lines(&["flag store refused"]).is_empty());

    // The meta version set back by hand: the write is refused, in words, and nothing is written.
    set_meta_version(&sdk, 1).await;
    let (code, _, err) = switchyard(&[
        "flags", "set", "globex", "--target", "legacy", "--reason", "r", "--store", &url,
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("already holds change 2") && err.contains("behind its audit stream"),
        "{err}"
    );
    assert!(!err.contains("TransactionCanceledException"), "{err}");
    assert_eq!(
        store
            .get("globex")
            .await
            .unwrap()
            .unwrap()
            .target
            .as_deref(),
        Some("new")
    );

    // A flags table recreated empty beside its audit stream: create-table refuses, with what
    // to do.
    sdk.delete_table().table_name("flags").send().await.unwrap();
    let (code, _, err) = switchyard(&["flags", "create-table", "--store", &url]);
    assert_ne!(code, 0);
    assert!(
        err.contains("looks recreated") && err.contains("Restore"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_straight_into_the_table_reach_every_router_logged_as_out_of_band_and_seals_hold() {
    let emulator = Emulator::start().await;
    let url = emulator.url();
    let store = emulator.store().await;
    store
        .write(&write("acme", pinned("legacy"), "alice", None), None)
        .await
        .unwrap();
    let mut seal = write("globex", pinned("new"), "alice", None);
    seal.seal = Some(true);
    store.write(&seal, None).await.unwrap();
    let setup = Setup::new().await;
    let text = crate::dynamo::router_config_text(&setup, &url).replace(
        "poll_interval_ms = 50",
        "poll_interval_ms = 50\nreconcile_interval_ms = 300",
    );
    let config = setup.dir.path().join("reconcile.toml");
    std::fs::write(&config, text).unwrap();
    let routers = [Binary::serve(&config), Binary::serve(&config)];
    for r in &routers {
        assert_eq!(side(r.addr, "acme").await, "legacy");
        assert_eq!(side(r.addr, "globex").await, "new");
    }

    // A console edit: no audit record, no meta version bump.
    let sdk = emulator.sdk();
    let put = |tenant: &str, target: &str, version: &str, sealed: bool| {
        sdk.put_item()
            .table_name("flags")
            .item("tenant", AttributeValue::S(tenant.into()))
            .item("mode", AttributeValue::S("pinned".into()))
            .item("target", AttributeValue::S(target.into()))
            .item("version", AttributeValue::N(version.into()))
            .item("sealed", AttributeValue::Bool(sealed))
            .send()
    };
    put("acme", "new", "2", false).await.unwrap();
    // The sealed tenant moved back the same way, and unsealed.
    put("globex", "legacy", "2", false).await.unwrap();
    // And an audited write meanwhile, which is not out of band.
    store
        .write(&write("initech", pinned("new"), "bob", None), None)
        .await
        .unwrap();

    for r in &routers {
        wait_for_side(r.addr, "acme", "new").await;
        let line = r.wait_log(&["out-of-band change", "acme"]).await;
        assert!(
            line.contains("before=legacy") && line.contains("after=new"),
            "{line}"
        );
        let line = r.wait_log(&["flag item rejected", "globex"]).await;
        assert!(line.contains("sealed"), "{line}");
        assert_eq!(side(r.addr, "globex").await, "new", "the seal holds");
        // Audited, it arrives by the next poll's delta (a reconcile may run before it).
        wait_for_side(r.addr, "initech", "new").await;
        let (_, _, metrics) = get(&client(), r.admin_addr, "/metrics", &[]).await;
        assert!(
            metric_value(&metrics, "switchyard_flags_out_of_band_total") >= 1.0,
            "{metrics}"
        );
    }
    // A router that starts after the edit with no local copy (a new task, a wiped disk)
    // judges the item against the audit trail's seal, and refuses it as the others do: the
    // fleet routes the tenant one way.
    let cold = setup.dir.path().join("cold.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&cold, text.replace("flags-cache.json", "cold-copy.json")).unwrap();
    assert!(!setup.dir.path().join("cold-copy.json").exists());
    let cold = Binary::serve(&cold);
    assert_eq!(side(cold.addr, "globex").await, "new", "the seal holds");
    let line = cold.wait_log(&["flag item rejected", "globex"]).await;
    assert!(line.contains("sealed on"), "{line}");
    assert_eq!(
        side(cold.addr, "acme").await,
        "new",
        "an unsealed tenant's edit applies"
    );
    // A forced move, audited, reaches it like any write.
    let mut forced = write("globex", pinned("legacy"), "carol", None);
    forced.force = true;
    store.write(&forced, None).await.unwrap();
    for r in routers.iter().chain([&cold]) {
        wait_for_side(r.addr, "globex", "legacy").await;
    }

    // Two more reconciles of each router: the audited write is never called out of band, and
    // a change is reported once, not at every reconcile.
    for r in &routers {
        let (_, _, metrics) = get(&client(), r.admin_addr, "/metrics", &[]).await;
        let scans = metric_value(&metrics, "switchyard_flags_store_reads_total{op=\"scan\"}");
        wait_for_metric_above(
            r.admin_addr,
            "switchyard_flags_store_reads_total{op=\"scan\"}",
            scans + 1.0,
        )
        .await;
        assert!(r.log_lines(&["out-of-band", "initech"]).is_empty());
        assert_eq!(r.log_lines(&["out-of-band change", "acme"]).len(), 1);
    }
}

/// A live router rejects a malformed item naming the field it got wrong: an item edited
/// straight into the table (seen at the reconcile), and an audit record whose new value has a
/// field of the wrong type (seen at the next poll). The other tenants keep routing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_router_names_the_field_of_a_malformed_item_it_rejects() {
    let emulator = Emulator::start().await;
    let url = emulator.url();
    let store = emulator.store().await;
    for t in ["acme", "globex"] {
        store
            .write(&write(t, pinned("legacy"), "alice", None), None)
            .await
            .unwrap();
    }
    let setup = Setup::new().await;
    let text = crate::dynamo::router_config_text(&setup, &url).replace(
        "poll_interval_ms = 50",
        "poll_interval_ms = 50\nreconcile_interval_ms = 300",
    );
    let config = setup.dir.path().join("malformed.toml");
    std::fs::write(&config, text).unwrap();
    let router = Binary::serve(&config);
    assert_eq!(side(router.addr, "acme").await, "legacy");

    // A console edit: a weight typed as a string.
    let sdk = emulator.sdk();
    let weights = AttributeValue::M(
        [
            ("legacy".to_owned(), AttributeValue::S("ninety".into())),
            ("new".to_owned(), AttributeValue::N("10".into())),
        ]
        .into(),
    );
    sdk.put_item()
        .table_name("flags")
        .item("tenant", AttributeValue::S("acme".into()))
        .item("mode", AttributeValue::S("split".into()))
        .item("weights", weights)
        .item("version", AttributeValue::N("2".into()))
        .send()
        .await
        .unwrap();
    let line = router.wait_log(&["flag item rejected", "acme"]).await;
    assert!(
        line.contains("weights.legacy: invalid type: string"),
        "{line}"
    );

    // An audit record (written as a hand-rolled tool would) whose new value's version is text.
    let version = store.version().await.unwrap();
    let seq = (version + 1).to_string();
    let new = r#"{"tenant":"globex","mode":"pinned","target":"new","version":"two"}"#;
    sdk.put_item()
        .table_name("flags-audit")
        .item("stream", AttributeValue::S("changes".into()))
        .item("seq", AttributeValue::N(seq.clone()))
        .item("tenant", AttributeValue::S("globex".into()))
        .item("new", AttributeValue::S(new.into()))
        .item("by", AttributeValue::S("tool".into()))
        .item("reason", AttributeValue::S("hand-rolled".into()))
        .send()
        .await
        .unwrap();
    sdk.update_item()
        .table_name("flags")
        .key("tenant", AttributeValue::S("#meta".into()))
        .update_expression("SET version = :v")
        .expression_attribute_values(":v", AttributeValue::N(seq))
        .send()
        .await
        .unwrap();
    let line = router.wait_log(&["flag item rejected", "globex"]).await;
    assert!(
        line.contains("version: invalid type: string") && line.contains("audit"),
        "{line}"
    );
    // Both keep their last good flag.
    assert_eq!(side(router.addr, "acme").await, "legacy");
    assert_eq!(side(router.addr, "globex").await, "legacy");
}

/// An audit table made before the seal index: a router still starts from it (logging that it
/// cannot judge seals at a cold start), and `flags create-table` adds the index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_table_without_the_seal_index_still_serves_and_create_table_adds_it() {
    let emulator = Emulator::start().await;
    let url = emulator.url();
    let store = emulator.store().await;
    store
        .write(&write("acme", pinned("new"), "alice", None), None)
        .await
        .unwrap();
    let sdk = emulator.sdk();
    let indexes = || async {
        let out = sdk
            .describe_table()
            .table_name("flags-audit")
            .send()
            .await
            .unwrap();
        let table = out.table().unwrap();
        (table.global_secondary_indexes().iter())
            .filter_map(|i| i.index_name().map(str::to_owned))
            .collect::<Vec<_>>()
    };
    assert!(indexes().await.contains(&"sealed".to_owned()));
    sdk.update_table()
        .table_name("flags-audit")
        .global_secondary_index_updates(
            aws_sdk_dynamodb::types::GlobalSecondaryIndexUpdate::builder()
                .delete(
                    aws_sdk_dynamodb::types::DeleteGlobalSecondaryIndexAction::builder()
                        .index_name("sealed")
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    // The emulator deletes an index in the background, as DynamoDB does.
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while indexes().await.contains(&"sealed".to_owned()) {
        assert!(Instant::now() < deadline, "the index is never deleted");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let setup = Setup::new().await;
    let config = setup.dir.path().join("old-table.toml");
    std::fs::write(&config, crate::dynamo::router_config_text(&setup, &url)).unwrap();
    let router = Binary::serve(&config);
    assert_eq!(side(router.addr, "acme").await, "new");
    router.wait_log(&["has no seal index"]).await;

    let (code, _, err) = switchyard(&["flags", "create-table", "--store", &url]);
    assert_eq!(code, 0, "{err}");
    assert!(indexes().await.contains(&"sealed".to_owned()));
}
