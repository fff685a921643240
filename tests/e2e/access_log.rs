//! The access log: a JSON line per sampled request, written off the request path, with what
//! an operator asks of a request afterwards (who, where it went, how it ended, how long).

use http::StatusCode;

use crate::support::*;

fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_is_one_json_line_with_its_tenant_target_status_and_times() {
    let mut setup = Setup::new().await;
    setup
        .routes
        .push_str("[access_log]\npath = \"access.log\"\n");
    let router = setup.start().await;
    let path = setup.dir.path().join("access.log");
    let c = client();
    let (status, h, _) = get(
        &c,
        router.addr(),
        "/orders?card=4111",
        &[("x-tenant-id", "acme")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let id = h["x-request-id"].to_str().unwrap().to_owned();
    let (status, _, _) = get(&c, router.addr(), "/", &[("x-tenant-id", "bad tenant")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    wait_for("two lines in the access log", || lines(&path).len() == 2).await;
    let got = lines(&path);

    let ok = &got[0];
    assert_eq!(ok["request_id"], id.as_str());
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["path"], "/orders", "the query is not logged: {ok}");
    assert_eq!(ok["tenant"], "acme");
    assert_eq!(ok["route"], "api");
    assert_eq!(ok["target"], "legacy");
    assert_eq!(ok["endpoint"], setup.legacy.url().as_str());
    assert_eq!(
        (ok["status"].as_u64(), ok["bytes"].as_u64()),
        (Some(200), Some(6))
    );
    let (total, upstream) = (
        ok["duration_ms"].as_f64().unwrap(),
        ok["upstream_ms"].as_f64().unwrap(),
    );
    assert!(0.0 < upstream && upstream <= total, "{ok}");
    assert_eq!(
        (ok["failover"].as_bool(), ok["retry"].as_bool()),
        (Some(false), Some(false))
    );
    assert!(ok["time"].as_str().unwrap().ends_with('Z'), "{ok}");

    // The router's own answer: no target, no endpoint, its own status and body.
    let refused = &got[1];
    assert_eq!(refused["status"], 400);
    assert_eq!(refused["target"], "none");
    assert!(
        refused["endpoint"].is_null() && refused["upstream_ms"].is_null(),
        "{refused}"
    );
    assert!(refused["bytes"].as_u64().unwrap() > 0);

    let (_, metrics) = admin_get(&router, "/metrics").await;
    assert!(
        metrics.contains("switchyard_access_log_lines_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchyard_access_log_dropped_total 0"),
        "{metrics}"
    );
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sample_of_zero_logs_nothing_and_a_bad_section_is_named() {
    let mut setup = Setup::new().await;
    setup
        .routes
        .push_str("[access_log]\npath = \"access.log\"\nsample_percent = 0\n");
    let router = setup.start().await;
    for _ in 0..20 {
        get(&client(), router.addr(), "/", &[("x-tenant-id", "acme")]).await;
    }
    let (_, metrics) = admin_get(&router, "/metrics").await;
    assert!(
        metrics.contains("switchyard_access_log_lines_total 0"),
        "{metrics}"
    );
    router.shutdown().await;

    setup.routes = setup
        .routes
        .replace("sample_percent = 0", "sample_percent = 101");
    let err = switchyard::Config::parse(&setup.config_text(), setup.dir.path(), "router.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("access_log.sample_percent"), "{err}");
    setup.routes = setup
        .routes
        .replace("sample_percent = 101", "format = \"clf\"");
    let err = switchyard::Config::parse(&setup.config_text(), setup.dir.path(), "router.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `format`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_lines_reach_the_file_before_the_router_exits() {
    let mut setup = Setup::new().await;
    setup
        .routes
        .push_str("[access_log]\npath = \"access.log\"\n");
    let mut router = Binary::serve(&setup.config_path());
    // Requests still in flight at SIGTERM finish during the drain, just before the exit.
    let held: Vec<_> = (0..10)
        .map(|_| {
            let addr = router.addr;
            tokio::spawn(
                async move { get(&client(), addr, "/hold", &[("x-tenant-id", "acme")]).await },
            )
        })
        .collect();
    let seen = setup.legacy.seen.clone();
    wait_for("ten requests held upstream", || {
        seen.holding.load(std::sync::atomic::Ordering::SeqCst) == 10
    })
    .await;
    router.signal(nix::sys::signal::Signal::SIGTERM);
    router.wait_log(&["shutdown signal received"]).await;
    setup.legacy.seen.release.notify_waiters();
    for h in held {
        assert_eq!(h.await.unwrap().0, StatusCode::OK);
    }
    assert!(router.exited().await.success());
    assert_eq!(lines(&setup.dir.path().join("access.log")).len(), 10);
}
