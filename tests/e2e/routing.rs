//! Routing by each extractor, the default paths, fixed routes and split stickiness.

use base64::Engine;
use http::StatusCode;

use crate::support::*;

type Headers<'a> = &'a [(&'a str, &'a str)];

fn jwt(claims: &str) -> String {
    let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "Bearer {}.{}.signature",
        b.encode(r#"{"alg":"RS256"}"#),
        b.encode(claims)
    )
}

#[tokio::test]
async fn each_extractor_routes_its_tenant_by_flag() {
    let setup = Setup::new().await;
    setup.set("acme", pin("new"));
    let router = setup.start().await;
    let c = client();
    let addr = router.addr();

    let token = jwt(r#"{"sub":"u1","tenant_id":"acme"}"#);
    let cases: [(&str, &str, Headers); 4] = [
        ("header", "/x", &[("x-tenant-id", "acme")]),
        ("host", "/x", &[("host", "acme.app.example.com")]),
        ("path", "/t/acme/orders", &[]),
        ("jwt", "/x", &[("authorization", token.as_str())]),
    ];
    for (kind, path, headers) in cases {
        let (status, h, _) = get(&c, addr, path, headers).await;
        assert_eq!(status, StatusCode::OK, "{kind}");
        assert_eq!(
            h["x-upstream"], "new",
            "acme found by {kind} must go to new"
        );
    }
    // Another tenant, by the same extractors, goes to the default flag's target.
    let (_, h, _) = get(&c, addr, "/t/globex/orders", &[]).await;
    assert_eq!(h["x-upstream"], "legacy");
    let (_, h, _) = get(&c, addr, "/x", &[]).await;
    assert_eq!(h["x-upstream"], "legacy", "no tenant: the default flag");
    assert_eq!(setup.new.seen.total(), 4);
    router.shutdown().await;
}

#[tokio::test]
async fn fixed_routes_ignore_flags_and_the_config_default_applies_without_a_default_flag() {
    let mut setup = Setup::new().await;
    setup.routes.push_str(
        "[[routes]]\nname = \"analytics\"\npath_prefix = \"/analytics\"\ntarget = \"new\"\n",
    );
    setup.routes.push_str(
        "[[routes]]\nname = \"strict\"\npath_prefix = \"/strict\"\nrequire_tenant = true\n",
    );
    setup.write_flags(r#"{"version":1,"items":[{"tenant":"acme","target":"legacy"}]}"#);
    let router = setup.start().await;
    let c = client();
    let (_, h, _) = get(
        &c,
        router.addr(),
        "/analytics/q",
        &[("x-tenant-id", "acme")],
    )
    .await;
    assert_eq!(
        h["x-upstream"], "new",
        "a fixed route ignores the tenant's flag"
    );
    let (_, h, _) = get(&c, router.addr(), "/x", &[("x-tenant-id", "nobody")]).await;
    assert_eq!(
        h["x-upstream"], "legacy",
        "no flag and no default flag: flags.default_target"
    );
    let (status, _, body) = get(&c, router.addr(), "/strict", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("needs a tenant id"), "{body}");
    router.shutdown().await;
}

#[tokio::test]
async fn bad_tenant_ids_and_unrouted_paths_get_clear_client_errors() {
    let mut setup = Setup::new().await;
    setup.routes = "[[routes]]\nname = \"api\"\npath_prefix = \"/api\"\n".into();
    let router = setup.start().await;
    let c = client();
    let (status, h, body) = get(&c, router.addr(), "/api/x", &[("x-tenant-id", "a b")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("invalid tenant id from header"), "{body}");
    assert!(h.contains_key("x-request-id"));
    let (status, _, body) = get(&c, router.addr(), "/api/%2e%2e/admin", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains(". or .. segments"), "{body}");
    let (status, _, body) = get(&c, router.addr(), "/other", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("no route"), "{body}");
    assert_eq!(setup.legacy.seen.total() + setup.new.seen.total(), 0);
    assert_eq!(
        metric(
            &router,
            "switchyard_requests_total{route=\"none\",status=\"4xx\",target=\"none\"}"
        )
        .await,
        Some(2.0)
    );
    assert_eq!(
        metric(
            &router,
            "switchyard_requests_total{route=\"api\",status=\"4xx\",target=\"none\"}"
        )
        .await,
        Some(1.0)
    );
    router.shutdown().await;
}

#[tokio::test]
async fn split_tenants_are_sticky_per_user_and_share_by_weight() {
    let setup = Setup::new().await;
    setup.set(
        "globex",
        flag_store::Placing::parse_split("legacy=70,new=30").unwrap(),
    );
    let router = setup.start().await;
    let c = client();
    let mut on_new = 0;
    for user in 0..400 {
        let user = format!("user-{user}");
        let headers = [("x-tenant-id", "globex"), ("x-user-id", user.as_str())];
        let (_, first, _) = get(&c, router.addr(), "/x", &headers).await;
        for _ in 0..2 {
            let (_, again, _) = get(&c, router.addr(), "/x", &headers).await;
            assert_eq!(
                again["x-upstream"], first["x-upstream"],
                "{user} must stay on one side"
            );
        }
        if first["x-upstream"] == "new" {
            on_new += 1;
        }
    }
    // 30% of 400 users, within sampling error.
    assert!(
        (80..=160).contains(&on_new),
        "{on_new} of 400 users on new at weight 30"
    );
    let (_, explain) = admin_get(&router, "/explain?tenant=globex&path=/x&key=user-7").await;
    let v: serde_json::Value = serde_json::from_str(&explain).unwrap();
    assert_eq!(v["mode"], "split");
    let (_, h, _) = get(
        &c,
        router.addr(),
        "/x",
        &[("x-tenant-id", "globex"), ("x-user-id", "user-7")],
    )
    .await;
    assert_eq!(
        v["target"],
        h["x-upstream"].to_str().unwrap(),
        "explain answers what the proxy does"
    );
    // Without a user key the client address decides; explain, given that address, agrees.
    for last in 2..22u8 {
        let ip = std::net::Ipv4Addr::new(127, 0, 0, last);
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_local_address(Some(ip.into()));
        let from_ip: HttpClient =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector);
        let (_, h, _) = get(&from_ip, router.addr(), "/x", &[("x-tenant-id", "globex")]).await;
        let (_, explain) = admin_get(
            &router,
            &format!("/explain?tenant=globex&path=/x&client_ip={ip}"),
        )
        .await;
        let v: serde_json::Value = serde_json::from_str(&explain).unwrap();
        assert_eq!(
            v["target"],
            h["x-upstream"].to_str().unwrap(),
            "client {ip}"
        );
    }
    router.shutdown().await;
}

#[tokio::test]
async fn admin_explains_flags_and_readiness() {
    let setup = Setup::new().await;
    setup.set("acme", pin("new"));
    let router = setup.start().await;
    let (status, body) = admin_get(&router, "/readyz").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ready\n"));
    let (status, body) = admin_get(&router, "/flags/acme").await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["flag"]["target"], "new");
    assert_eq!(v["flag"]["updated_by"], "test");
    let (status, body) = admin_get(&router, "/flags/nobody").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("default_flag"), "{body}");
    let (_, body) = admin_get(&router, "/explain?tenant=acme&path=/x").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["route"], "api");
    assert_eq!(v["target"], "new");
    assert_eq!(v["basis"], "tenant flag");
    assert!(
        v["why"].as_str().unwrap().contains("pins it to \"new\""),
        "{v}"
    );
    let (_, body) = admin_get(&router, "/explain?tenant=zzz&path=/x").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["basis"].as_str(), v["target"].as_str()),
        (Some("default flag"), Some("legacy"))
    );
    let (status, _) = admin_get(&router, "/explain?tenant=a%20b").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    router.shutdown().await;
}
