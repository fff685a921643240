//! The HTTP edge as an attacker tries it: requests that would read one way here and another
//! way at the next hop. Each must be refused (or made unambiguous) before any upstream sees it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::*;

/// An upstream over raw sockets that records each request head and answers every request
/// that asks for an upgrade with `101` to `switch_to` (then sends `TUNNEL` through the
/// tunnel), and anything else with `200 plain`.
struct RawUpstream {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl RawUpstream {
    async fn start(switch_to: &'static str) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let upstream = RawUpstream {
            addr: listener.local_addr().unwrap(),
            heads: heads.clone(),
        };
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let heads = heads.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let mut more = [0u8; 4096];
                        let Ok(n) = s.read(&mut more).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&more[..n]);
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        let upgrade = head.to_ascii_lowercase().contains("\r\nupgrade:");
                        heads.lock().unwrap().push(head);
                        if upgrade {
                            let answer = format!(
                                "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {switch_to}\r\n\r\nTUNNEL"
                            );
                            let _ = s.write_all(answer.as_bytes()).await;
                            let _ = s.read(&mut [0u8; 1024]).await;
                            return;
                        }
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nplain")
                            .await;
                    }
                });
            }
        });
        upstream
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

/// Sends a request on a connection that stays open and reads until `end` has come.
async fn raw_until(addr: SocketAddr, request: &str, end: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(EVENT_TIMEOUT, async {
        while !String::from_utf8_lossy(&out).contains(end) {
            let mut more = [0u8; 4096];
            match s.read(&mut more).await.unwrap() {
                0 => break,
                n => out.extend_from_slice(&more[..n]),
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no {end:?} within the event timeout: {}",
            String::from_utf8_lossy(&out)
        )
    });
    String::from_utf8_lossy(&out).into_owned()
}

/// A setup whose `/raw/` route goes to a raw upstream.
async fn with_raw(switch_to: &'static str) -> (Setup, RawUpstream) {
    let raw = RawUpstream::start(switch_to).await;
    let mut setup = Setup::new().await;
    setup.route_raw(raw.addr);
    (setup, raw)
}

#[tokio::test]
async fn an_upgrade_to_h2c_never_reaches_the_upstream_however_it_is_spelled() {
    let (setup, upstream) = with_raw("h2c").await;
    let router = setup.start().await;
    for upgrade in [
        "Upgrade: websocket\r\nUpgrade: h2c",
        "Upgrade: websocket, h2c",
        "Upgrade: h2c, websocket",
        "Upgrade: H2C",
        "Upgrade: foo, h2c",
    ] {
        let answer = raw(
            router.addr(),
            &format!(
                "GET /raw/x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n{upgrade}\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nConnection: close\r\n\r\n"
            ),
        )
        .await;
        assert!(
            !answer.contains("TUNNEL"),
            "a tunnel opened for {upgrade:?}: {answer}"
        );
        assert!(
            answer.starts_with("HTTP/1.1 502") || answer.starts_with("HTTP/1.1 200"),
            "{upgrade:?}: {answer}"
        );
        let head = upstream.heads().pop().unwrap().to_ascii_lowercase();
        assert!(
            !head.contains("h2c"),
            "{upgrade:?} reached the upstream as {head}"
        );
        assert!(!head.contains("http2-settings"), "{head}");
    }
    router.shutdown().await;
}

#[tokio::test]
async fn a_101_to_a_protocol_the_client_did_not_ask_for_opens_no_tunnel() {
    let (setup, upstream) = with_raw("h2c").await;
    let router = setup.start().await;
    let answer = raw_until(
        router.addr(),
        "GET /raw/x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        "ask for",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert!(answer.contains("did not ask for"), "{answer}");
    assert!(!answer.contains("TUNNEL"), "{answer}");
    assert_eq!(upstream.heads().len(), 1);
    router.shutdown().await;

    // The protocol the client asked for opens its tunnel.
    let (setup, _upstream) = with_raw("websocket").await;
    let router = setup.start().await;
    let answer = raw_until(
        router.addr(),
        "GET /raw/x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        "TUNNEL",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    assert!(answer.ends_with("TUNNEL"), "{answer}");
    router.shutdown().await;
}

#[tokio::test]
async fn a_protocol_the_route_does_not_allow_is_not_upgraded() {
    let (mut setup, upstream) = with_raw("foo").await;
    setup
        .routes
        .push_str("upgrades = [\"websocket\", \"foo\"]\n");
    let router = setup.start().await;
    // `foo` is allowed on /raw/; `bar` is not, and is dropped from the list.
    let answer = raw_until(
        router.addr(),
        "GET /raw/x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: bar, foo\r\n\r\n",
        "TUNNEL",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    let head = upstream.heads().pop().unwrap().to_ascii_lowercase();
    assert!(head.contains("upgrade: foo\r\n"), "{head}");
    router.shutdown().await;

    let bad = Setup::new().await;
    let mut text = bad.config_text();
    text.push_str("upgrades = [\"h2c\"]\n");
    let err = switchyard::Config::parse(&text, bad.dir.path(), "router.toml").unwrap_err();
    assert!(err.to_string().contains("routes[0].upgrades"), "{err}");
}

#[tokio::test]
async fn a_tenant_field_or_host_that_comes_twice_is_refused() {
    let setup = Setup::new().await;
    setup.set("acme", pin("new"));
    let router = setup.start().await;
    let token = |tenant: &str| {
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "Bearer {}.{}.sig",
            b.encode("{\"alg\":\"none\"}"),
            b.encode(format!("{{\"tenant_id\":\"{tenant}\"}}"))
        )
    };
    for (head, why) in [
        (
            "Host: a\r\nX-Tenant-Id: acme\r\nX-Tenant-Id: beta",
            "x-tenant-id more than once",
        ),
        (
            "Host: acme.app.example.com\r\nHost: beta.app.example.com",
            "more than one Host",
        ),
        (
            &format!(
                "Host: a\r\nAuthorization: {}\r\nAuthorization: {}",
                token("acme"),
                token("beta")
            ),
            "authorization more than once",
        ),
        ("X-Tenant-Id: acme", "needs a Host header"),
        ("Host: \r\nX-Tenant-Id: acme", "Host header is empty"),
        ("Host: acme@beta.app.example.com", "not a host name"),
        ("Host: acme.app.example.com/x", "not a host name"),
        (
            "Host: acme.app.example.com, beta.app.example.com",
            "not a host name",
        ),
        ("Host: acme .app.example.com", "not a host name"),
    ] {
        let answer = raw(
            router.addr(),
            &format!("GET / HTTP/1.1\r\n{head}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{head:?}: {answer}");
        assert!(answer.contains(why), "{head:?}: {answer}");
    }
    let absolute = raw(
        router.addr(),
        "GET http://beta.app.example.com/ HTTP/1.1\r\nHost: acme.app.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(absolute.starts_with("HTTP/1.1 400"), "{absolute}");
    assert!(
        absolute.contains("differs from the authority"),
        "{absolute}"
    );
    assert_eq!(setup.legacy.seen.total() + setup.new.seen.total(), 0);

    // A fully qualified host (trailing dot) is the same tenant.
    let answer = raw(
        router.addr(),
        "GET / HTTP/1.1\r\nHost: acme.app.example.com.\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.contains("x-upstream: new"), "{answer}");
    router.shutdown().await;
}

#[tokio::test]
async fn paths_that_mean_a_fixed_route_upstream_route_there_or_are_refused() {
    let mut setup = Setup::new().await;
    setup.routes.push_str(
        "[[routes]]\nname = \"analytics\"\npath_prefix = \"/analytics/\"\ntarget = \"new\"\n",
    );
    let router = setup.start().await;
    for path in [
        "/%61nalytics/x",
        "//analytics/x",
        "/analytics;v=1/x",
        "/%61nalytics//x",
    ] {
        let answer = raw(
            router.addr(),
            &format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(answer.contains("x-upstream: new"), "{path}: {answer}");
    }
    for path in [
        "/x/..;/analytics/y",
        "/x/%2e%2e%2fanalytics/y",
        "/x/%2e%2e/analytics/y",
        "/x/..%2fanalytics/y",
        "/x%5c..%5canalytics%5cy",
    ] {
        let answer = raw(
            router.addr(),
            &format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
    }
    assert_eq!(
        setup.legacy.seen.total(),
        0,
        "a path meaning /analytics reached the flag-routed side"
    );
    router.shutdown().await;
}

#[tokio::test]
async fn a_large_jwt_routes_by_its_claim_and_an_unreadable_one_is_refused() {
    let setup = Setup::new().await;
    setup.set("acme", pin("new"));
    let router = setup.start().await;
    let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let token = |payload: String| {
        format!(
            "Bearer {}.{}.sig",
            b.encode("{\"alg\":\"RS256\"}"),
            b.encode(payload)
        )
    };
    let groups = vec!["\"group-with-a-long-name-0000\""; 400].join(",");
    let big = token(format!(r#"{{"tenant_id":"acme","groups":[{groups}]}}"#));
    assert!(big.len() > 12 * 1024);
    let (status, headers, _) = get(&client(), router.addr(), "/", &[("authorization", &big)]).await;
    assert_eq!(status, http::StatusCode::OK);
    assert_eq!(
        headers["x-upstream"], "new",
        "a large token routed by its claim"
    );

    let nested = format!("{}{}", "[".repeat(127), "]".repeat(127));
    let deep = token(format!(r#"{{"tenant_id":"acme","x":{nested}}}"#));
    let (status, _, body) = get(&client(), router.addr(), "/", &[("authorization", &deep)]).await;
    assert_eq!(status, http::StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("bearer token"), "{body}");
    assert_eq!(
        setup.legacy.seen.total(),
        0,
        "a token nobody could read went to the default side"
    );
    router.shutdown().await;
}

#[tokio::test]
async fn framing_that_reads_two_ways_is_refused_at_once_and_reaches_no_upstream() {
    let (setup, upstream) = with_raw("websocket").await;
    let router = setup.start().await;
    for (request, status) in [
        // A lone LF hides a Content-Length that would swallow a second request.
        (
            "GET /raw/a HTTP/1.1\r\nHost: localhost\r\nDummy: x\nContent-Length: 23\r\n\r\nGET /raw/admin HTTP/1.1\r\nDummy: GET /admin HTTP/1.1\r\nHost: localhost\r\n\r\n",
            "400",
        ),
        ("GET /raw/a HTTP/1.1\nHost: localhost\n\n", "400"),
        // A CR that is not followed by LF where the blank line should be.
        (
            "GET /raw/a HTTP/1.1\r\nHost: localhost\r\n\rGET /raw/b HTTP/1.1\r\n\r\n",
            "400",
        ),
        (
            "POST /raw/a HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: deflate, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            "501",
        ),
        (
            "POST /raw/a HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
            "400",
        ),
        (
            "POST /raw/a HTTP/1.1\r\nHost: localhost\r\nContent-Length: 18446744073709551613\r\n\r\n",
            "400",
        ),
        (
            "POST /raw/a HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "400",
        ),
        // The same rules hold for a request hyper's server would take (an upgrade).
        (
            "GET /raw/a HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\nX: y\r\n\r\n",
            "400",
        ),
    ] {
        let answer = raw(router.addr(), request).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{request:?}: {answer}"
        );
        assert!(answer.contains("connection: close"), "{answer}");
    }
    assert_eq!(
        upstream.heads(),
        Vec::<String>::new(),
        "a refused head reached the upstream"
    );

    // A chunk-size line with a bare CR: the client gets 400 and the upstream never gets a
    // body that holds what the client framed as another chunk.
    let answer = raw(
        router.addr(),
        "POST /sink HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\r;ABCD\r\n34\r\nE\r\n0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    router.shutdown().await;
}

#[tokio::test]
async fn an_absolute_form_target_keeps_its_query() {
    let upstream = RawUpstream::start("websocket").await;
    let mut setup = Setup::new().await;
    setup.routes = format!(
        "[targets.raw]\nendpoints = [\"http://{}\"]\n[[routes]]\nname = \"all\"\npath_prefix = \"/\"\ntarget = \"raw\"\n",
        upstream.addr
    );
    let router = setup.start().await;
    for (target, sent) in [
        ("http://h.example?x=1", "GET /?x=1 HTTP/1.1\r\n"),
        ("http://h.example/p?x=1", "GET /p?x=1 HTTP/1.1\r\n"),
    ] {
        let answer = raw(
            router.addr(),
            &format!("GET {target} HTTP/1.1\r\nHost: h.example\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let head = upstream.heads().pop().unwrap();
        assert!(head.starts_with(sent), "{target}: {head}");
    }
    router.shutdown().await;
}

#[tokio::test]
async fn http2_cookie_pieces_reach_an_http1_upstream_as_one_field_and_host_must_match() {
    let setup = Setup::new().await;
    let router = setup.start().await;
    let (status, _, _) = get(
        &h2_client(),
        router.addr(),
        "/x",
        &[("cookie", "a=1"), ("cookie", "b=2")],
    )
    .await;
    assert_eq!(status, http::StatusCode::OK);
    let seen = setup.legacy.seen.last_headers();
    let cookies: Vec<_> = seen.get_all("cookie").iter().collect();
    assert_eq!(cookies, ["a=1; b=2"]);

    // A `host` field that names another host than `:authority` is refused.
    let (status, _, body) = get(
        &h2_client(),
        router.addr(),
        "/x",
        &[("host", "acme.app.example.com")],
    )
    .await;
    assert_eq!(status, http::StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("differs from the authority"), "{body}");
    router.shutdown().await;
}

#[tokio::test]
async fn idle_connections_cannot_lock_operators_out_of_the_admin_listener() {
    let setup = Setup::new().await;
    let router = setup.start().await;
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(
            tokio::net::TcpStream::connect(router.admin_addr())
                .await
                .unwrap(),
        );
    }
    let (status, body) = tokio::time::timeout(EVENT_TIMEOUT, admin_get(&router, "/readyz"))
        .await
        .expect("/readyz answered with 300 idle connections open");
    assert_eq!(status, http::StatusCode::OK, "{body}");
    let scraped = tokio::time::timeout(EVENT_TIMEOUT, metric(&router, "switchyard_flags_version"))
        .await
        .expect("/metrics answered");
    assert!(scraped.is_some());
    drop(idle);
    router.shutdown().await;
}

#[tokio::test]
async fn the_traffic_listener_queues_the_configured_backlog() {
    let mut setup = Setup::new().await;
    setup.extra = "listen_backlog = 2000\n".into();
    let router = setup.start().await;
    let port = router.addr().port();
    let out = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .expect("ss (iproute2) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    // For a listening socket, ss shows the backlog as Send-Q (the third column).
    let backlog: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(backlog.get(2), Some(&"2000"), "{text}");
    router.shutdown().await;
}

#[tokio::test]
async fn curls_h2c_upgrade_is_answered_as_http1_and_never_reaches_the_upstream() {
    let (setup, upstream) = with_raw("h2c").await;
    let router = setup.start().await;
    // curl asks for an upgrade to h2c on an http:// URL with --http2 (a client nobody here
    // wrote): the router serves the request as HTTP/1.1 and the upstream never sees `h2c`.
    let url = format!("http://{}/raw/curl", router.addr());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-sS", "--http2", "-D", "-", "--max-time", "20", &url])
            .output()
            .expect("curl runs")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("plain"), "{text}");
    let head = upstream.heads().pop().unwrap().to_ascii_lowercase();
    assert!(head.contains("get /raw/curl"), "{head}");
    assert!(
        !head.contains("h2c") && !head.contains("http2-settings"),
        "{head}"
    );
    router.shutdown().await;
}

/// A `Connection` header that names a header the router decides by (the tenant's, a sticky
/// key's, Host) is refused: obeyed, it would strip the header and the backend would never see
/// the tenant the router chose. Naming any other header still strips it.
#[tokio::test]
async fn a_connection_header_naming_a_header_the_router_routes_by_is_refused() {
    let setup = Setup::new().await;
    setup.set("acme", pin("legacy"));
    let router = setup.start().await;
    for (connection, named) in [
        ("X-Tenant-Id, close", "x-tenant-id"),
        ("close, x-user-id", "x-user-id"),
        ("host, close", "host"),
    ] {
        let answer = raw(
            router.addr(),
            &format!(
                "GET / HTTP/1.1\r\nHost: a\r\nX-Tenant-Id: acme\r\nX-User-Id: u1\r\nConnection: {connection}\r\n\r\n"
            ),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{connection}: {answer}");
        assert!(
            answer.contains(&format!(
                "Connection header names {named}, a header this router routes by"
            )),
            "{connection}: {answer}"
        );
    }
    assert_eq!(setup.legacy.seen.total() + setup.new.seen.total(), 0);
    let answer = raw(
        router.addr(),
        "GET / HTTP/1.1\r\nHost: a\r\nX-Tenant-Id: acme\r\nX-Debug: 1\r\nConnection: close, x-debug\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = setup.legacy.seen.last_headers();
    assert_eq!(seen["x-tenant-id"], "acme");
    assert!(!seen.contains_key("x-debug"));
    router.shutdown().await;
}

/// Runs curl (a client nobody here wrote) against the router with `args`; its status line.
async fn curl_status(args: Vec<String>) -> String {
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "20",
            ])
            .args(&args)
            .output()
            .expect("curl runs")
    })
    .await
    .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn header_names_with_an_underscore_are_dropped_unless_kept() {
    let setup = Setup::new().await;
    setup.set("acme", pin("legacy"));
    let router = setup.start().await;
    let url = format!("http://{}/", router.addr());
    let underscored = [
        "-H",
        "X-Tenant-Id: acme",
        "-H",
        "X_Tenant_Id: evil",
        "-H",
        "Content_Length: 99",
        "-H",
        "X-Note: a_b",
    ];
    // HTTP/1.1 (the router's own server), HTTP/1.0 (hyper's) and HTTP/2 in cleartext.
    for version in ["--http1.1", "--http1.0", "--http2-prior-knowledge"] {
        let mut args: Vec<String> = underscored.iter().map(|s| s.to_string()).collect();
        args.extend([version.to_owned(), url.clone()]);
        assert_eq!(curl_status(args).await, "200", "{version}");
        let seen = setup.legacy.seen.last_headers();
        let names: Vec<_> = seen.keys().map(|n| n.as_str()).collect();
        assert!(
            !names.iter().any(|n| n.contains('_')),
            "{version}: {names:?}"
        );
        assert_eq!(seen["x-tenant-id"], "acme", "{version}");
        assert_eq!(seen["x-note"], "a_b", "{version}: only names are looked at");
    }
    router.shutdown().await;

    let mut setup = setup;
    setup.extra = "keep_underscored_headers = true\n".into();
    let router = setup.start().await;
    let url = format!("http://{}/", router.addr());
    for version in ["--http1.1", "--http2-prior-knowledge"] {
        let mut args: Vec<String> = underscored.iter().map(|s| s.to_string()).collect();
        args.extend([version.to_owned(), url.clone()]);
        assert_eq!(curl_status(args).await, "200", "{version}");
        let seen = setup.legacy.seen.last_headers();
        assert_eq!(seen["x_tenant_id"], "evil", "{version}: kept when asked");
    }
    router.shutdown().await;
}
