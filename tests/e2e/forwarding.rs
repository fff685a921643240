//! What the proxy does to a request on its way: headers, destination, upgrades, protocols,
//! and what the client gets when the upstream fails.

use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use http_body_util::BodyExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

use crate::support::*;

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_and_forwarded_headers_set() {
    let setup = Setup::new().await;
    let router = setup.start().await;
    let answer = raw(
        router.addr(),
        "GET /hop?q=1 HTTP/1.1\r\nHost: acme.app.example.com\r\nConnection: close, x-secret\r\nx-secret: 1\r\n\
         Keep-Alive: timeout=5\r\nProxy-Authorization: Basic abc\r\nTE: gzip\r\nUpgrade: h2c\r\n\
         x-forwarded-for: 203.0.113.9\r\nx-forwarded-proto: https\r\nx-request-id: req-abc\r\nx-end-to-end: kept\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = setup.legacy.seen.last_headers();
    for gone in [
        "x-secret",
        "keep-alive",
        "proxy-authorization",
        "te",
        "upgrade",
    ] {
        assert!(
            !seen.contains_key(gone),
            "{gone} reached the upstream: {seen:?}"
        );
    }
    assert_ne!(
        seen.get("connection").map(|v| v.to_str().unwrap()),
        Some("close, x-secret")
    );
    assert_eq!(seen["x-end-to-end"], "kept");
    assert_eq!(
        seen["host"], "acme.app.example.com",
        "the client's Host is kept"
    );
    assert_eq!(seen["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(
        seen["x-forwarded-proto"], "http",
        "an untrusted client's proto is overwritten"
    );
    assert_eq!(seen["x-forwarded-host"], "acme.app.example.com");
    assert_eq!(
        seen["x-request-id"], "req-abc",
        "a client's request id is kept"
    );
    // A `Connection` that names `Host` is refused: every route is chosen by it, and an
    // upstream never gets a request whose Host was stripped.
    let requests = setup.legacy.seen.total();
    let named = raw(
        router.addr(),
        "GET /hop HTTP/1.1\r\nHost: acme.app.example.com\r\nConnection: close, host\r\n\r\n",
    )
    .await;
    assert!(named.starts_with("HTTP/1.1 400"), "{named}");
    assert!(named.contains("names host"), "{named}");
    assert_eq!(setup.legacy.seen.total(), requests);
    // And on the way back.
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("x-up-visible: 1"), "{answer}");
    for gone in ["x-up-secret", "keep-alive:", "proxy-authenticate"] {
        assert!(!lower.contains(gone), "{gone} reached the client: {answer}");
    }
    assert!(lower.contains("x-request-id: req-abc"));

    // Without a request id, one is made, and the client and upstream see the same one.
    let (_, h, _) = get(&client(), router.addr(), "/", &[]).await;
    let id = h["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    assert_eq!(
        setup.legacy.seen.last_headers()["x-request-id"],
        id.as_str()
    );
    router.shutdown().await;
}

#[tokio::test]
async fn no_host_header_or_absolute_uri_reaches_an_unconfigured_host() {
    let setup = Setup::new().await;
    let decoy = TestUpstream::start("decoy").await;
    let router = setup.start().await;
    let d = decoy.addr;
    for request in [
        format!("GET http://{d}/steal HTTP/1.1\r\nHost: {d}\r\nConnection: close\r\n\r\n"),
        format!("GET /steal HTTP/1.1\r\nHost: {d}\r\nConnection: close\r\n\r\n"),
        format!(
            "GET http://{d}/steal HTTP/1.1\r\nHost: {d}\r\nx-forwarded-host: {d}\r\nx-tenant-id: acme\r\nConnection: close\r\n\r\n"
        ),
    ] {
        let answer = raw(router.addr(), &request).await;
        assert!(
            answer.to_ascii_lowercase().contains("x-upstream: legacy"),
            "{answer}"
        );
    }
    let connect = raw(
        router.addr(),
        &format!("CONNECT {d} HTTP/1.1\r\nHost: {d}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(connect.starts_with("HTTP/1.1 405"), "{connect}");
    assert!(connect.contains("CONNECT is not supported"), "{connect}");
    assert_eq!(
        decoy.seen.total(),
        0,
        "the proxy dialled an unconfigured host"
    );
    router.shutdown().await;
}

#[tokio::test]
async fn upstream_failures_answer_502_and_504_with_a_plain_reason() {
    let mut setup = Setup::new().await;
    setup
        .routes
        .push_str("[[routes]]\nname = \"slow\"\npath_prefix = \"/slow\"\ntimeout_ms = 200\n");
    setup.set("acme", pin("new"));
    // `new` points at a port nobody listens on: bound (so no other test's listener can take
    // it meanwhile) but not listening, so a connection to it is refused.
    let held = tokio::net::TcpSocket::new_v4().unwrap();
    held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let dead = held.local_addr().unwrap();
    let text = setup
        .config_text()
        .replace(&setup.new.url(), &format!("http://{dead}"));
    let router = switchyard::Router::start(
        switchyard::Config::parse(&text, setup.dir.path(), "test").unwrap(),
    )
    .await
    .unwrap();
    let c = client();
    let (status, h, body) = get(&c, router.addr(), "/x", &[("x-tenant-id", "acme")]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(h["content-type"], "text/plain; charset=utf-8");
    assert_eq!(body, "switchyard: could not connect to target \"new\"\n");
    let (status, _, body) = get(
        &c,
        router.addr(),
        "/slow/3000",
        &[("x-tenant-id", "globex")],
    )
    .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        body.contains("target \"legacy\" did not respond within 200ms"),
        "{body}"
    );
    assert_eq!(
        metric(
            &router,
            "switchyard_upstream_errors_total{kind=\"connect\",target=\"new\"}"
        )
        .await,
        Some(1.0)
    );
    assert_eq!(
        metric(
            &router,
            "switchyard_upstream_errors_total{kind=\"timeout\",target=\"legacy\"}"
        )
        .await,
        Some(1.0)
    );
    assert_eq!(
        metric(
            &router,
            "switchyard_requests_total{route=\"api\",status=\"5xx\",target=\"new\"}"
        )
        .await,
        Some(1.0)
    );
    router.shutdown().await;
}

#[tokio::test]
async fn bodies_over_the_route_limit_are_refused_with_413() {
    let mut setup = Setup::new().await;
    setup.routes =
        "[[routes]]\nname = \"api\"\npath_prefix = \"/\"\nmax_body_bytes = 1000\n".into();
    let router = setup.start().await;
    let c = client();
    let req = http::Request::post(format!("http://{}/sink", router.addr()))
        .body(http_body_util::Full::from(vec![b'x'; 5000]))
        .unwrap();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        setup.legacy.seen.total(),
        0,
        "refused before it was sent on"
    );
    // Without a length up front, the limit still holds while streaming.
    let (mut tx, body) = http_body_util::channel::Channel::<bytes::Bytes>::new(4);
    tokio::spawn(async move {
        for _ in 0..10 {
            if tx
                .send_data(bytes::Bytes::from(vec![b'y'; 500]))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let streamed = post_streamed(router.addr(), "/sink", body).await;
    assert_eq!(streamed.status(), StatusCode::PAYLOAD_TOO_LARGE);
    router.shutdown().await;
}

#[tokio::test]
async fn a_head_request_gets_the_headers_and_no_body_and_the_connection_is_reused() {
    let setup = Setup::new().await;
    let router = setup.start().await;
    let c = client();
    for _ in 0..3 {
        let req = http::Request::head(format!("http://{}/", router.addr()))
            .body(http_body_util::Full::default())
            .unwrap();
        let resp = tokio::time::timeout(EVENT_TIMEOUT, c.request(req))
            .await
            .expect("a HEAD answer does not wait for a body")
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["x-upstream"], "legacy");
        assert!(
            resp.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .is_empty()
        );
    }
    let (status, _, body) = get(&c, router.addr(), "/", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "legacy"));
    let opened = metric(
        &router,
        "switchyard_upstream_connections_opened_total{target=\"legacy\"}",
    )
    .await;
    assert_eq!(
        opened,
        Some(1.0),
        "the HEAD answers left the upstream connection reusable"
    );
    router.shutdown().await;
}

#[tokio::test]
async fn an_upstream_that_answers_before_the_body_ends_is_heard() {
    let setup = Setup::new().await;
    let router = setup.start().await;
    // The client sends one chunk and then holds its body open: the upstream's 401 must come
    // back without waiting for a body that has not ended.
    let (mut tx, body) = http_body_util::channel::Channel::<bytes::Bytes>::new(1);
    tx.send_data(bytes::Bytes::from_static(b"first chunk"))
        .await
        .unwrap();
    let resp = post_streamed(router.addr(), "/refuse", body).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let answer = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&answer[..], b"refused");
    drop(tx);
    // The half-sent connection is not reused: the next request is answered normally.
    let (status, _, body) = get(&client(), router.addr(), "/sink", &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "0 cbf29ce484222325")
    );
    router.shutdown().await;
}

#[tokio::test]
async fn an_http1_upstream_that_echoes_as_it_reads_gets_the_whole_body() {
    // The upstream's answer starts with the first bytes it reads; the rest of the body must
    // still go to it, while its answer streams back, from an HTTP/1.1 and an HTTP/2 client.
    let setup = Setup::new().await;
    let router = setup.start().await;
    // 3 MiB: far more than the sockets on either side hold, so neither end can finish alone.
    let sent = bytes::Bytes::from(pattern(3 << 20));
    for (protocol, client) in [("HTTP/1.1", client()), ("HTTP/2", h2_client())] {
        let request = http::Request::post(format!("http://{}/echo", router.addr()))
            .body(http_body_util::Full::new(sent.clone()))
            .unwrap();
        let echoed = tokio::time::timeout(EVENT_TIMEOUT, async {
            let response = client.request(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{protocol}");
            response.into_body().collect().await.unwrap().to_bytes()
        })
        .await
        .unwrap_or_else(|_| panic!("{protocol}: the echo stalled"));
        assert_eq!(echoed.len(), sent.len(), "{protocol}");
        assert!(echoed == sent, "{protocol}: the echo differs from the body");
    }
    // Each exchange ended whole, so its upstream connection was kept: one for both.
    let opened = metric(
        &router,
        "switchyard_upstream_connections_opened_total{target=\"legacy\"}",
    )
    .await;
    assert_eq!(opened, Some(1.0));
    router.shutdown().await;
}

#[tokio::test]
async fn websockets_pass_through_to_the_tenants_side() {
    let setup = Setup::new().await;
    setup.set("acme", pin("new"));
    let router = setup.start().await;
    let mut request = format!("ws://{}/ws", router.addr())
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("x-tenant-id", "acme".parse().unwrap());
    let stream = TcpStream::connect(router.addr()).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-upstream"], "new");
    for i in 0..20 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text(format!("hello {i}"))
        );
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![0u8, 1, 2, 255])
    );
    ws.close(None).await.unwrap();
    assert_eq!(setup.new.seen.tenant("acme"), 1);
    assert_eq!(setup.legacy.seen.total(), 0);
    router.shutdown().await;
}

#[tokio::test]
async fn http2_on_both_sides() {
    let setup = Setup::with_h2c_new().await;
    setup.set("acme", pin("new"));
    let router = setup.start().await;
    let h2 = h2_client();
    // An HTTP/2 client, to an HTTP/1.1 target and to an h2c target.
    let (status, h, _) = get(&h2, router.addr(), "/x", &[("x-tenant-id", "globex")]).await;
    assert_eq!(
        (status, h["x-upstream"].to_str().unwrap()),
        (StatusCode::OK, "legacy")
    );
    let (status, h, _) = get(&h2, router.addr(), "/x", &[("x-tenant-id", "acme")]).await;
    assert_eq!(
        (status, h["x-upstream"].to_str().unwrap()),
        (StatusCode::OK, "new")
    );
    // An HTTP/1.1 client to the h2c target.
    let (status, h, _) = get(&client(), router.addr(), "/x", &[("x-tenant-id", "acme")]).await;
    assert_eq!(
        (status, h["x-upstream"].to_str().unwrap()),
        (StatusCode::OK, "new")
    );
    let seen = setup.legacy.seen.last_headers();
    assert_eq!(
        seen["host"],
        router.addr().to_string().as_str(),
        "HTTP/2 authority becomes the HTTP/1.1 Host"
    );
    router.shutdown().await;
}

#[tokio::test]
async fn sigterm_stops_accepting_drains_in_flight_requests_and_exits_zero() {
    let setup = Setup::new().await;
    let mut router = Binary::serve(&setup.config_path());
    let addr = router.addr;
    let held = tokio::spawn(async move { get(&client(), addr, "/hold", &[]).await });
    let seen = setup.legacy.seen.clone();
    wait_for("the request to reach the upstream", || {
        seen.holding.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    router.signal(nix::sys::signal::Signal::SIGTERM);
    // New connections are refused once the listener is closed...
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    while TcpStream::connect(addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still accepting after SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // ...the admin listener says it is draining, so a load balancer stops sending...
    let (status, _, body) = get(&client(), router.admin_addr, "/readyz", &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    );
    // ...and the request in flight completes.
    setup.legacy.seen.release.notify_waiters();
    let (status, _, body) = held.await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "legacy"));
    let status = router.exited().await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn with_a_shutdown_delay_sigterm_fails_readyz_first_and_new_connections_are_served_until_it_ends()
 {
    let mut setup = Setup::new().await;
    // Long enough that the requests below land inside it however slow the machine.
    setup.extra = "shutdown_delay_ms = 5000".into();
    let mut router = Binary::serve(&setup.config_path());
    let (addr, admin) = (router.addr, router.admin_addr);
    let (status, _, _) = get(&client(), admin, "/readyz", &[]).await;
    assert_eq!(status, StatusCode::OK);
    // The container's health check: the binary asks /readyz itself.
    let admin_arg = admin.to_string();
    let (code, _, err) = switchyard(&["ready", "--admin", &admin_arg]);
    assert_eq!(code, 0, "{err}");
    router.signal(nix::sys::signal::Signal::SIGTERM);
    // The balancer's check fails at once...
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    while get(&client(), admin, "/readyz", &[]).await.0 != StatusCode::SERVICE_UNAVAILABLE {
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz still 200 after SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let (code, _, err) = switchyard(&["ready", "--admin", &admin_arg]);
    assert_eq!(code, 1);
    assert!(
        err.contains("not ready (503 Service Unavailable): draining"),
        "{err}"
    );
    // ...while a client the balancer still sends is served, on a new connection too.
    let (status, _, body) = get(&client(), addr, "/", &[("x-tenant-id", "acme")]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "legacy"));
    assert!(
        router.log_lines(&["shutdown delay"]).len() == 1,
        "the delay is logged"
    );
    // Then it drains and exits as without a delay.
    let status = router.exited().await;
    assert!(status.success(), "{status:?}");
    assert!(TcpStream::connect(addr).await.is_err());
}

/// A drain that reaches `drain_timeout_ms` with a request still open cuts it and exits 2, so
/// an orchestrator or an alert sees a dirty stop (a clean one exits 0: the tests above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_cut_short_by_its_timeout_exits_2() {
    let setup = Setup::new().await;
    let text = (setup.config_text()).replace("drain_timeout_ms = 10000", "drain_timeout_ms = 300");
    assert!(text.contains("drain_timeout_ms = 300\n"));
    let path = setup.dir.path().join("short-drain.toml");
    std::fs::write(&path, text).unwrap();
    let mut router = Binary::serve(&path);
    let addr = router.addr;
    let held =
        tokio::spawn(
            async move { get(&client(), addr, "/hold", &[("x-tenant-id", "acme")]).await },
        );
    let seen = setup.legacy.seen.clone();
    wait_for("a request held upstream", || {
        seen.holding.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    router.signal(nix::sys::signal::Signal::SIGTERM);
    let status = router.exited().await;
    assert_eq!(status.code(), Some(2), "{status:?}");
    router.wait_log(&["drain timeout reached"]).await;
    held.abort();
    setup.legacy.seen.release.notify_waiters();
}
