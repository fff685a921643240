//! The one-way door holds whoever writes the store: every router refuses an item that moves
//! or unseals a sealed tenant without a force record, however it was written.

use crate::support::*;

#[tokio::test]
async fn a_hand_edit_cannot_move_a_sealed_tenant_back_but_a_forced_write_can() {
    let setup = Setup::new().await;
    setup.write_flags(
        r#"{"version":1,"items":[
        {"tenant":"*","target":"legacy"},
        {"tenant":"acme","target":"new","sealed":true,"updated_by":"ops","reason":"cut over"},
        {"tenant":"globex","target":"legacy"}]}"#,
    );
    let router = setup.start().await;
    let c = client();
    let (_, h, _) = get(&c, router.addr(), "/", &[("x-tenant-id", "acme")]).await;
    assert_eq!(h["x-upstream"], "new");

    // A hand edit moves acme back to legacy, and another unseals it in place: both refused,
    // alone (globex's change applies), and acme stays where its data is.
    setup.write_flags(
        r#"{"version":2,"items":[
        {"tenant":"*","target":"legacy"},
        {"tenant":"acme","target":"legacy","sealed":true},
        {"tenant":"globex","target":"new"}]}"#,
    );
    wait_version(&router, 2).await;
    let (_, h, _) = get(&c, router.addr(), "/", &[("x-tenant-id", "acme")]).await;
    assert_eq!(
        h["x-upstream"], "new",
        "a sealed tenant moved without a force record"
    );
    let (_, h, _) = get(&c, router.addr(), "/", &[("x-tenant-id", "globex")]).await;
    assert_eq!(h["x-upstream"], "new", "the rest of the edit applied");
    let snap = router.flags().load_full();
    let reasons: Vec<String> = snap.rejected.iter().map(|r| r.to_string()).collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("acme") && r.contains("sealed on \"new\"")),
        "{reasons:?}"
    );
    assert_eq!(
        metric(&router, "switchyard_flags_rejected_items").await,
        Some(1.0)
    );

    setup.write_flags(
        r#"{"version":3,"items":[
        {"tenant":"*","target":"legacy"},
        {"tenant":"acme","target":"new"},
        {"tenant":"globex","target":"new"}]}"#,
    );
    wait_version(&router, 3).await;
    let snap = router.flags().load_full();
    assert!(
        snap.get("acme").unwrap().sealed,
        "an unseal without a force record applied"
    );

    // The CLI's forced write carries the force record, and every router takes it.
    setup.write_flags(
        r#"{"version":4,"items":[
        {"tenant":"*","target":"legacy"},
        {"tenant":"acme","target":"new","sealed":true,"version":1,"updated_by":"ops","reason":"cut over"},
        {"tenant":"globex","target":"new"}]}"#,
    );
    wait_version(&router, 4).await;
    let (code, out, err) = switchyard(&[
        "flags",
        "set",
        "acme",
        "--target",
        "legacy",
        "--force",
        "--reason",
        "roll back: data restored to legacy",
        "--store",
        &format!("file:{}", setup.flags_path().display()),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let version = setup.store().load().unwrap().version;
    wait_version(&router, version).await;
    let (_, h, _) = get(&c, router.addr(), "/", &[("x-tenant-id", "acme")]).await;
    assert_eq!(h["x-upstream"], "legacy", "a forced move applied");
    router.shutdown().await;
}

#[tokio::test]
async fn a_restarted_router_keeps_a_bad_items_tenant_where_its_copy_says_and_never_defaults() {
    let mut setup = Setup::new().await;
    setup.extra = "".into();
    let copy = setup.dir.path().join("flags-copy.json");
    let with_copy = |setup: &Setup| {
        setup.config_text().replace(
            "poll_interval_ms = 10\n",
            &format!(
                "poll_interval_ms = 10\ncache_path = \"{}\"\n",
                copy.display()
            ),
        )
    };
    setup.write_flags(
        r#"{"version":1,"items":[
        {"tenant":"*","target":"legacy"},
        {"tenant":"acme","target":"new","version":1}]}"#,
    );
    let path = setup.dir.path().join("router.toml");
    std::fs::write(&path, with_copy(&setup)).unwrap();
    let router = switchyard::Router::start(switchyard::Config::load(&path).unwrap())
        .await
        .unwrap();
    let c = client();
    let (_, h, _) = get(&c, router.addr(), "/", &[("x-tenant-id", "acme")]).await;
    assert_eq!(h["x-upstream"], "new");
    router.shutdown().await;
    assert!(copy.exists(), "the router wrote its local copy");

    // While it is down, acme's item goes bad (a typo); then it restarts.
    setup.write_flags(
        r#"{"version":2,"items":[
        {"tenant":"*","target":"legacy"},
        {"tenant":"acme","taget":"legacy","version":2}]}"#,
    );
    let router = switchyard::Router::start(switchyard::Config::load(&path).unwrap())
        .await
        .unwrap();
    let (_, h, _) = get(&c, router.addr(), "/", &[("x-tenant-id", "acme")]).await;
    assert_eq!(
        h["x-upstream"], "new",
        "a restart moved acme to the default"
    );
    router.shutdown().await;

    // With no copy, the tenant is answered 503 naming its bad item, never the default.
    std::fs::remove_file(&copy).unwrap();
    let router = setup.start().await;
    let (status, _, body) = get(&c, router.addr(), "/", &[("x-tenant-id", "acme")]).await;
    assert_eq!(status, http::StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body.contains("items[1]") && body.contains("taget"),
        "{body}"
    );
    assert_eq!(setup.legacy.seen.tenant("acme"), 0);
    router.shutdown().await;
}
