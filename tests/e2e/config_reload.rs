//! Config reload while serving: new requests use the new config (on connections already open
//! too), requests in flight finish on the old one, and a config that is invalid or needs a
//! restart is rejected whole, with every bad key named, while the running one keeps serving.

use std::sync::atomic::Ordering;

use http::StatusCode;
use switchyard::server::reconfigure::Reloaded;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::*;

/// A GET on a raw kept-alive connection; returns the status line and the body.
async fn get_on(stream: &mut TcpStream, path: &str) -> (String, String) {
    let request =
        format!("GET {path} HTTP/1.1\r\nhost: shop.example.com\r\nx-tenant-id: acme\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let (head, body) = read_one_response(stream).await;
    (head.lines().next().unwrap_or("").to_owned(), body)
}

/// Reads one response with a `content-length` from `stream`.
async fn read_one_response(stream: &mut TcpStream) -> (String, String) {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .expect("a content-length");
            if buf.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).to_string();
                return (head, body);
            }
        }
        let n = tokio::time::timeout(EVENT_TIMEOUT, stream.read(&mut chunk))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(n > 0, "the connection closed before its answer");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_sends_new_requests_to_new_endpoints_and_lets_requests_in_flight_finish() {
    let mut setup = Setup::new().await;
    let router = setup.start().await;
    let c = client();

    // A kept-alive connection opened on the first config, and a request held in flight.
    let mut kept = TcpStream::connect(router.addr()).await.unwrap();
    assert_eq!(get_on(&mut kept, "/").await.1, "legacy");
    let held = {
        let addr = router.addr();
        tokio::spawn(async move { get(&client(), addr, "/hold", &[("x-tenant-id", "acme")]).await })
    };
    let first = &setup.legacy;
    wait_for("the request held upstream", || {
        first.seen.holding.load(Ordering::SeqCst) == 1
    })
    .await;

    // The legacy target moves to another endpoint, with a longer route timeout.
    let old_legacy = std::mem::replace(&mut setup.legacy, TestUpstream::start("legacy-b").await);
    setup.routes = "[[routes]]\nname = \"api\"\npath_prefix = \"/\"\ntimeout_ms = 45000\n".into();
    let applied = router
        .reload(setup.config())
        .expect("the new config applies");
    assert_eq!(
        applied,
        Reloaded::Applied(vec!["targets.legacy".into(), "routes.api".into()])
    );

    // New requests, on a new connection and on the one kept alive, reach the new endpoint.
    let (status, h, body) = get(&c, router.addr(), "/", &[("x-tenant-id", "acme")]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "legacy-b"));
    assert_eq!(h["x-upstream"], "legacy-b");
    assert_eq!(
        get_on(&mut kept, "/").await,
        ("HTTP/1.1 200 OK".into(), "legacy-b".into())
    );

    // The request in flight finishes where it started, with its answer.
    old_legacy.seen.release.notify_waiters();
    let (status, _, body) = held.await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "legacy"));
    assert_eq!(
        old_legacy.seen.total(),
        2,
        "the old endpoint saw only the requests sent before the reload"
    );

    // The same config again changes nothing.
    assert_eq!(router.reload(setup.config()), Ok(Reloaded::Unchanged));
    assert_eq!(
        metrics(
            &router,
            &[
                "switchyard_config_reloads_total{result=\"applied\"}",
                "switchyard_config_reloads_total{result=\"unchanged\"}",
                "switchyard_config_last_reload_successful",
            ]
        )
        .await,
        [Some(1.0), Some(1.0), Some(1.0)]
    );
    assert!(router.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_that_needs_a_restart_is_rejected_whole_naming_each_key() {
    let mut setup = Setup::new().await;
    let router = setup.start().await;
    let c = client();

    // Three keys a running router cannot take, beside an endpoint change it could.
    let _other = std::mem::replace(&mut setup.legacy, TestUpstream::start("legacy-b").await);
    setup.extra = "max_connections = 5".into();
    setup
        .routes
        .push_str("[[routes]]\nname = \"admin\"\npath_prefix = \"/admin\"\n");
    let mut config = setup.config_text();
    config.push_str("[targets.third]\nendpoints = [\"http://127.0.0.1:1\"]\n");
    std::fs::write(setup.dir.path().join("router.toml"), config).unwrap();
    let config =
        switchyard::Config::load(&setup.dir.path().join("router.toml")).expect("a valid config");
    let problems = router.reload(config).expect_err("a restart is needed");
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["server.max_connections", "targets", "routes"]);
    assert!(
        problems[1]
            .reason
            .contains("running: legacy, new; new: legacy, new, third"),
        "{}",
        problems[1]
    );

    // Nothing of it applies: the old endpoint still answers.
    let (status, _, body) = get(&c, router.addr(), "/", &[("x-tenant-id", "acme")]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "legacy"));
    assert_eq!(
        metrics(
            &router,
            &[
                "switchyard_config_reloads_total{result=\"rejected\"}",
                "switchyard_config_last_reload_successful",
            ]
        )
        .await,
        [Some(1.0), Some(0.0)]
    );
    assert!(router.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_seen_down_stays_down_across_a_reload_until_its_checks_pass() {
    let mut setup = Setup::new().await;
    let health = "[targets.legacy.health]\npath = \"/\"\ninterval_ms = 20\nunhealthy_after = 1\nhealthy_after = 2\n";
    setup.routes.push_str(health);
    let router = setup.start().await;
    setup.legacy.stop().await;
    let down = |r: &switchyard::Router| !r.health().targets()[0].endpoints[0].is_up();
    wait_for("legacy seen down", || down(&router)).await;

    // A reload that changes the target's settings keeps the endpoint's state.
    setup.routes = setup.routes.replace("interval_ms = 20", "interval_ms = 25");
    assert!(matches!(
        router.reload(setup.config()),
        Ok(Reloaded::Applied(_))
    ));
    assert!(down(&router), "a reload put a down endpoint back in");
    let (status, _, _) = get(&client(), router.addr(), "/", &[("x-tenant-id", "acme")]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    // The new config's checks bring it back.
    setup.legacy.restart().await;
    wait_for("legacy back up", || !down(&router)).await;
    let (status, _, body) = get(&client(), router.addr(), "/", &[("x-tenant-id", "acme")]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "legacy"));
    assert!(router.shutdown().await);
}

/// The real binary: a changed file is picked up by itself, SIGHUP reloads, and a broken file
/// is rejected with every bad key in the log while the running config keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reloads_on_a_changed_file_and_on_sighup_and_keeps_serving_through_a_bad_one() {
    let mut setup = Setup::new().await;
    let path = setup.config_path();
    let mut binary = Binary::serve(&path);
    let c = client();
    let answer = |addr| {
        let c = c.clone();
        async move {
            let (status, _, body) = get(&c, addr, "/", &[("x-tenant-id", "acme")]).await;
            assert_eq!(status, StatusCode::OK);
            body
        }
    };
    assert_eq!(answer(binary.addr).await, "legacy");

    // Whole files, put in place as an editor or a deploy tool does: the watch never reads
    // half a file.
    let put = |text: String| {
        let edit = path.with_extension("edit");
        std::fs::write(&edit, text).unwrap();
        std::fs::rename(&edit, &path).unwrap();
    };

    // An edit of the file is seen without a signal.
    let _old = std::mem::replace(&mut setup.legacy, TestUpstream::start("legacy-b").await);
    put(setup.config_text());
    binary
        .wait_log(&["config reloaded", "changed=targets.legacy"])
        .await;
    assert_eq!(answer(binary.addr).await, "legacy-b");

    // A broken file: two bad values, both named; the running config keeps answering.
    let broken = setup
        .config_text()
        .replace(
            "path_prefix = \"/\"",
            "path_prefix = \"/\"\ntarget = \"nwe\"",
        )
        .replace("\"jwt:tenant_id\"", "\"jwt:tenant_id\", \"cookie-ish:x\"");
    put(broken);
    let line = binary.wait_log(&["config reload rejected"]).await;
    assert!(line.contains("routes[0].target"), "{line}");
    assert!(line.contains("tenant.from[4]"), "{line}");
    assert_eq!(answer(binary.addr).await, "legacy-b");
    let admin = binary.admin_addr;
    let (_, _, metrics) = get(&c, admin, "/metrics", &[]).await;
    assert!(
        metrics.contains("switchyard_config_last_reload_successful 0"),
        "{metrics}"
    );

    // SIGHUP reloads; the file mended in the meantime applies (the watch may see the file
    // first: then SIGHUP finds the same config, and renews).
    let _b = std::mem::replace(&mut setup.legacy, TestUpstream::start("legacy-c").await);
    let mark = binary.log_mark();
    put(setup.config_text());
    binary.signal(nix::sys::signal::Signal::SIGHUP);
    let (mark, _) = binary
        .wait_log_after(mark, &["SIGHUP: reloading the config"])
        .await;
    binary.wait_log_after(mark, &["config reloaded"]).await;
    assert_eq!(answer(binary.addr).await, "legacy-c");
    assert_eq!(
        binary
            .log_lines(&["config reloaded", "changed=targets.legacy"])
            .len(),
        2,
        "the edit and the mended file each changed the target once"
    );
    // SIGHUP with the same file renews the upstreams (TLS files read again).
    let mark = binary.log_mark();
    binary.signal(nix::sys::signal::Signal::SIGHUP);
    let (mark, _) = binary
        .wait_log_after(mark, &["SIGHUP: reloading the config"])
        .await;
    binary
        .wait_log_after(mark, &["config reloaded: the same config", "renewed"])
        .await;
    assert_eq!(answer(binary.addr).await, "legacy-c");
    let (_, _, metrics) = get(&c, admin, "/metrics", &[]).await;
    let applied = binary.log_lines(&["config reloaded"]).len();
    assert!(applied >= 3, "{applied} reloads");
    for line in [
        format!("switchyard_config_reloads_total{{result=\"applied\"}} {applied}"),
        "switchyard_config_reloads_total{result=\"rejected\"} 1".into(),
        "switchyard_config_last_reload_successful 1".into(),
    ] {
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }

    binary.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(binary.exited().await.success());
}

/// An address nothing listens on (bound, then let go).
fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_moved_by_a_reload_serves_on_the_new_address_and_drains_the_old() {
    let mut setup = Setup::new().await;
    let router = setup.start().await;
    let (old_addr, old_admin) = (router.addr(), router.admin_addr());

    // A connection kept alive on the old address, with a request in flight.
    let mut kept = TcpStream::connect(old_addr).await.unwrap();
    assert_eq!(get_on(&mut kept, "/").await.1, "legacy");
    kept.write_all(b"GET /hold HTTP/1.1\r\nhost: shop.example.com\r\nx-tenant-id: acme\r\n\r\n")
        .await
        .unwrap();
    let seen = setup.legacy.seen.clone();
    wait_for("the request held upstream", || {
        seen.holding.load(Ordering::SeqCst) == 1
    })
    .await;

    // Both listeners move.
    let (to, admin_to) = (free_addr(), free_addr());
    let text = setup.config_text().replacen(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"",
        &format!("listen = \"{to}\"\nadmin_listen = \"{admin_to}\""),
        1,
    );
    std::fs::write(setup.dir.path().join("router.toml"), text).unwrap();
    let config = switchyard::Config::load(&setup.dir.path().join("router.toml")).unwrap();
    assert_eq!(
        router.reload(config),
        Ok(Reloaded::Applied(vec![
            "server.listen".into(),
            "server.admin_listen".into()
        ]))
    );
    assert_eq!((router.addr(), router.admin_addr()), (to, admin_to));

    // The new addresses serve; the old ones take no new connection.
    let c = client();
    let (status, _, body) = get(&c, to, "/", &[("x-tenant-id", "acme")]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "legacy"));
    let (status, _, body) = get(&c, admin_to, "/readyz", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ready\n"));
    assert!(TcpStream::connect(old_addr).await.is_err());
    assert!(TcpStream::connect(old_admin).await.is_err());

    // The request in flight on the old address gets its answer, then that connection closes.
    setup.legacy.seen.release.notify_waiters();
    let (head, body) = read_one_response(&mut kept).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert_eq!(body, "legacy");

    // A listener that cannot be bound rejects the whole reload: the endpoint change with it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let _other = std::mem::replace(&mut setup.legacy, TestUpstream::start("legacy-b").await);
    let text = setup.config_text().replacen(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"",
        &format!("listen = \"{taken_addr}\"\nadmin_listen = \"{admin_to}\""),
        1,
    );
    std::fs::write(setup.dir.path().join("router.toml"), text).unwrap();
    let config = switchyard::Config::load(&setup.dir.path().join("router.toml")).unwrap();
    let problems = router.reload(config).expect_err("the address is taken");
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].key, "server.listen");
    assert!(
        problems[0]
            .reason
            .starts_with(&format!("cannot listen on {taken_addr}:")),
        "{}",
        problems[0]
    );
    let (status, _, body) = get(&c, to, "/", &[("x-tenant-id", "acme")]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "legacy"));
    assert!(router.shutdown().await);
}
