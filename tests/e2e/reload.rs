//! The file store under edits: bad items rejected alone, a broken file keeps the last good
//! snapshot, a router without flags is not ready and says so.

use http::StatusCode;

use crate::support::*;

#[tokio::test]
async fn a_malformed_item_is_rejected_alone_and_its_tenant_keeps_its_last_good_flag() {
    let setup = Setup::new().await;
    setup.write_flags(
        r#"{"version":1,"items":[
        {"tenant":"*","target":"legacy"},
        {"tenant":"acme","target":"new"},
        {"tenant":"globex","target":"legacy"}]}"#,
    );
    let router = setup.start().await;
    let c = client();
    // A typo in acme's item, a bad new tenant and a good change for globex, in one edit.
    setup.write_flags(
        r#"{"version":2,"items":[
        {"tenant":"*","target":"legacy"},
        {"tenant":"acme","taget":"legacy"},
        {"tenant":"initech","weights":{"legacy":50,"new":60}},
        {"tenant":"globex","target":"new"}]}"#,
    );
    wait_version(&router, 2).await;
    let (_, h, _) = get(&c, router.addr(), "/", &[("x-tenant-id", "globex")]).await;
    assert_eq!(h["x-upstream"], "new", "the good item applied");
    let (_, h, _) = get(&c, router.addr(), "/", &[("x-tenant-id", "acme")]).await;
    assert_eq!(
        h["x-upstream"], "new",
        "acme keeps its last good flag, not the default"
    );
    // A tenant with a bad item and no last good flag goes nowhere: its item may have meant
    // to move it, so the default could be the side its data has left.
    let (status, _, body) = get(&c, router.addr(), "/", &[("x-tenant-id", "initech")]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body.contains("items[2]") && body.contains("sum to 110"),
        "{body}"
    );
    assert_eq!(
        metric(&router, "switchyard_flags_rejected_items").await,
        Some(2.0)
    );
    assert_eq!(
        metric(
            &router,
            "switchyard_flags_reloads_total{result=\"partial\"}"
        )
        .await,
        Some(1.0)
    );
    let snap = router.flags().load_full();
    let reasons: Vec<String> = snap.rejected.iter().map(|r| r.to_string()).collect();
    assert!(
        reasons.iter().any(|r| r.contains("acme")
            && r.contains("taget")
            && r.contains("keeps its last good flag")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("initech") && r.contains("sum to 110")),
        "{reasons:?}"
    );
    router.shutdown().await;
}

#[tokio::test]
async fn an_unparsable_or_missing_file_keeps_the_last_good_snapshot() {
    let setup = Setup::new().await;
    setup.set("acme", pin("new"));
    let router = setup.start().await;
    let c = client();
    let rx = router.flags().subscribe();
    let before = router.flags().reloads(flag_store::ReloadResult::Error);
    setup.write_flags(r#"{"version":9,"items":[{"tenant":"acme","#);
    let reloads = router.flags();
    wait_for("a failed reload", || {
        reloads.reloads(flag_store::ReloadResult::Error) > before
    })
    .await;
    std::fs::remove_file(setup.flags_path()).unwrap();
    let before = reloads.reloads(flag_store::ReloadResult::Error);
    wait_for("a failed reload", || {
        reloads.reloads(flag_store::ReloadResult::Error) > before
    })
    .await;
    let (status, h, _) = get(&c, router.addr(), "/", &[("x-tenant-id", "acme")]).await;
    assert_eq!(
        (status, h["x-upstream"].to_str().unwrap()),
        (StatusCode::OK, "new")
    );
    assert!(!rx.has_changed().unwrap(), "no snapshot was swapped in");
    assert_eq!(admin_get(&router, "/readyz").await.0, StatusCode::OK);
    // The age of the snapshot grows while the store is unreadable.
    let age = metric(&router, "switchyard_flags_age_seconds")
        .await
        .unwrap();
    let later = router.flags();
    wait_for("the age to grow", || later.age().as_secs_f64() > age + 0.05).await;
    // Fixed: the next good file applies.
    setup.write_flags(r#"{"version":10,"items":[{"tenant":"acme","target":"legacy"}]}"#);
    wait_version(&router, 10).await;
    let (_, h, _) = get(&c, router.addr(), "/", &[("x-tenant-id", "acme")]).await;
    assert_eq!(h["x-upstream"], "legacy");
    router.shutdown().await;
}

#[tokio::test]
async fn a_router_without_flags_is_not_ready_and_refuses_flagged_traffic_until_they_load() {
    let setup = Setup::new().await;
    std::fs::remove_file(setup.flags_path()).unwrap();
    let router = setup.start().await;
    let (status, body) = admin_get(&router, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("no flag snapshot"), "{body}");
    assert_eq!(admin_get(&router, "/healthz").await.0, StatusCode::OK);
    let (status, _, body) = get(&client(), router.addr(), "/", &[("x-tenant-id", "acme")]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("flags are not loaded"), "{body}");
    assert_eq!(
        setup.legacy.seen.total() + setup.new.seen.total(),
        0,
        "no guess at a tenant's side"
    );
    setup.write_flags(r#"{"version":3,"items":[{"tenant":"acme","target":"new"}]}"#);
    wait_version(&router, 3).await;
    assert_eq!(admin_get(&router, "/readyz").await.0, StatusCode::OK);
    let (_, h, _) = get(&client(), router.addr(), "/", &[("x-tenant-id", "acme")]).await;
    assert_eq!(h["x-upstream"], "new");
    router.shutdown().await;
}
