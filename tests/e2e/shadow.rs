//! Shadow traffic: a tenant's flag names a shadow target and a share of requests; the router
//! answers from the primary, copies the request to the shadow after the answer is sent,
//! compares the two answers and counts and records what differed. Real upstreams on
//! 127.0.0.1:0, the router in-process, and the real binary for the report and the plan.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard::{Config, Router};

use crate::support::*;

/// One request as an upstream saw it.
#[derive(Clone, Debug)]
struct Got {
    method: Method,
    path: String,
    tenant: String,
    body: Bytes,
    /// The `x-switchyard-shadow` mark: `1` on a shadow copy, `primary-repeat` on a repeat.
    mark: String,
}

type Answer = fn(&Got, u64) -> Response<Full<Bytes>>;

/// An upstream that answers each request with `answer(request, n)` (n counts its requests)
/// and records what it got; `None` never answers.
async fn upstream(answer: Option<Answer>) -> (SocketAddr, Arc<Mutex<Vec<Got>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log: Arc<Mutex<Vec<Got>>> = Arc::default();
    let count = Arc::new(AtomicU64::new(0));
    let seen = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (seen, count) = (seen.clone(), count.clone());
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let (seen, count) = (seen.clone(), count.clone());
                async move {
                    let header = |name: &str| {
                        req.headers()
                            .get(name)
                            .map_or(String::new(), |v| v.to_str().unwrap().to_owned())
                    };
                    let (tenant, mark) = (header("x-tenant-id"), header("x-switchyard-shadow"));
                    let method = req.method().clone();
                    let path = req.uri().path().to_owned();
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let got = Got {
                        method,
                        path,
                        tenant,
                        body,
                        mark,
                    };
                    seen.lock().unwrap().push(got.clone());
                    let Some(answer) = answer else {
                        std::future::pending::<()>().await;
                        unreachable!()
                    };
                    Ok::<_, Infallible>(answer(&got, count.fetch_add(1, Ordering::SeqCst)))
                }
            });
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, log)
}

fn json(status: u16, value: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::from(value.to_string()))
        .unwrap()
}

/// The primary: items whose `now` and `request_id` change on every answer.
fn primary(got: &Got, n: u64) -> Response<Full<Bytes>> {
    match got.path.as_str() {
        "/status" => json(200, serde_json::json!({"ok": true})),
        "/field" => json(200, serde_json::json!({"id": 1, "name": "acme"})),
        "/orders" => json(
            201,
            serde_json::json!({"order": String::from_utf8_lossy(&got.body)}),
        ),
        path => json(
            200,
            serde_json::json!({"path": path, "name": "acme", "now": n, "request_id": format!("p{n}")}),
        ),
    }
}

/// The shadow: the same answers, except a failing `/status` and a renamed field on `/field`.
fn shadow(got: &Got, n: u64) -> Response<Full<Bytes>> {
    match got.path.as_str() {
        "/status" => json(503, serde_json::json!({"ok": false})),
        "/field" => json(200, serde_json::json!({"id": 1, "name": "Acme"})),
        "/orders" => json(
            201,
            serde_json::json!({"order": String::from_utf8_lossy(&got.body)}),
        ),
        path => json(
            200,
            serde_json::json!({"request_id": format!("s{n}"), "now": 1_000_000 + n, "name": "acme", "path": path}),
        ),
    }
}

/// The routers' read token: mismatching bodies are shown only with it.
const READ_TOKEN: &str = "read-token-for-shadow-bodies";

struct Shadowed {
    router: Router,
    dir: tempfile::TempDir,
    primary: Arc<Mutex<Vec<Got>>>,
    shadow: Arc<Mutex<Vec<Got>>>,
}

async fn start(shadow_answer: Option<Answer>, shadow_section: &str) -> Shadowed {
    let (legacy, primary_log) = upstream(Some(primary)).await;
    let (new, shadow_log) = upstream(shadow_answer).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("flags.json"),
        r#"{"version":1,"items":[
            {"tenant":"*","target":"legacy","version":1},
            {"tenant":"acme","target":"legacy","shadow":{"target":"new","percent":100},"version":1},
            {"tenant":"globex","target":"legacy","version":1}]}"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("read.token"), READ_TOKEN).unwrap();
    let text = format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
read_token_file = "read.token"
[fleet]
heartbeat_ms = 100
[flags]
source = "file:flags.json"
default_target = "legacy"
poll_interval_ms = 10
[tenant]
from = ["header:x-tenant-id"]
[targets.legacy]
endpoints = ["http://{legacy}"]
[targets.new]
endpoints = ["http://{new}"]
[[routes]]
name = "orders"
path_prefix = "/orders"
shadow_methods = ["POST"]
[[routes]]
name = "api"
path_prefix = "/"
[shadow]
{shadow_section}
"#
    );
    std::fs::write(dir.path().join("router.toml"), &text).unwrap();
    let config = Config::parse(&text, dir.path(), "router.toml").unwrap();
    Shadowed {
        router: Router::start(config).await.unwrap(),
        dir,
        primary: primary_log,
        shadow: shadow_log,
    }
}

fn metric_name(family: &str, labels: &str) -> String {
    format!("switchyard_shadow_{family}{{{labels}}} ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_is_compared_after_the_answer_and_only_real_differences_count() {
    let s = start(
        Some(shadow),
        "ignore_fields = [\"request_id\"]\nnoise_sample_percent = 100\nmax_body_bytes = 1024",
    )
    .await;
    let (router, c) = (&s.router, client());
    let api = "route=\"api\",target=\"new\"";

    // 20 reads: each answered by the primary; the copies differ only in `request_id`
    // (configured) and `now` (learned: two answers of the primary itself differ there).
    for i in 0..20 {
        let (status, h, body) = get(
            &c,
            router.addr(),
            &format!("/items/{i}"),
            &[("x-tenant-id", "acme")],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("\"request_id\":\"p"), "{body}");
        assert!(h.get("x-switchyard-shadow").is_none());
    }
    for _ in 0..5 {
        get(&c, router.addr(), "/items/1", &[("x-tenant-id", "globex")]).await;
    }
    wait_metric(router, &metric_name("compared_total", api), 20.0).await;
    assert_eq!(
        metric(router, &metric_name("matched_total", api)).await,
        Some(20.0)
    );
    let shadow_got = s.shadow.lock().unwrap().clone();
    assert_eq!(shadow_got.len(), 20, "only acme's requests are copied");
    assert!(
        shadow_got
            .iter()
            .all(|g| g.tenant == "acme" && g.mark == "1")
    );
    let repeats = (s.primary.lock().unwrap().iter())
        .filter(|g| g.mark == "primary-repeat")
        .count();
    assert_eq!(repeats, 20, "noise_sample_percent = 100 repeats every read");
    let noise = metric(router, "switchyard_shadow_noise_fields{route=\"api\"} ").await;
    assert!(noise >= Some(1.0), "`now` is learned as noise: {noise:?}");

    // A status and a JSON field that differ are mismatches, named.
    get(&c, router.addr(), "/status", &[("x-tenant-id", "acme")]).await;
    wait_metric(router, &metric_name("compared_total", api), 21.0).await;
    get(&c, router.addr(), "/field", &[("x-tenant-id", "acme")]).await;
    wait_metric(router, &metric_name("compared_total", api), 22.0).await;
    for (kind, want) in [
        ("status", 1.0),
        ("body", 1.0),
        ("header", 0.0),
        ("no_answer", 0.0),
    ] {
        let name = metric_name("mismatched_total", &format!("kind=\"{kind}\",{api}"));
        assert_eq!(metric(router, &name).await, Some(want), "{name}");
    }

    // Writes are not copied unless the route says so.
    let post = |path: &str, body: &'static str| {
        let req = Request::post(format!("http://{}{path}", router.addr()));
        send(&c, req, &[("x-tenant-id", "acme")], Full::from(body))
    };
    let (status, _, _) = post("/items", "x").await;
    assert_eq!(status, StatusCode::OK);
    wait_metric(
        router,
        &metric_name("skipped_total", &format!("reason=\"method\",{api}")),
        1.0,
    )
    .await;
    let (status, _, body) = post("/orders", "order-1").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::CREATED, r#"{"order":"order-1"}"#)
    );
    let orders = "route=\"orders\",target=\"new\"";
    wait_metric(router, &metric_name("matched_total", orders), 1.0).await;
    // A body over shadow.max_body_bytes goes to the primary whole, and is not copied.
    let big: &'static str = "o".repeat(2_000).leak();
    let (status, _, body) = post("/orders", big).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(body.contains(big), "the primary got the whole body");
    let too_large = format!("reason=\"body_too_large\",{orders}");
    wait_metric(router, &metric_name("skipped_total", &too_large), 1.0).await;
    let shadow_got = s.shadow.lock().unwrap().clone();
    assert!(
        !shadow_got
            .iter()
            .any(|g| g.path == "/items" && g.method == Method::POST)
    );
    let order = shadow_got.iter().find(|g| g.path == "/orders").unwrap();
    assert_eq!(
        (order.method.clone(), &order.body[..]),
        (Method::POST, &b"order-1"[..])
    );
    assert!(
        !(s.primary.lock().unwrap().iter()).any(|g| g.method == Method::POST && !g.mark.is_empty()),
        "a write is never repeated to the primary"
    );

    // The report: the match rate and the newest mismatch first, with both answers. The
    // bodies are users' data: withheld without a token, shown with the read token.
    let (status, report) = admin_get(router, "/shadow/acme").await;
    assert_eq!(status, StatusCode::OK);
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert!(
        report["bodies"].as_str().unwrap().starts_with("withheld"),
        "{report}"
    );
    let recent = report["recent_mismatches"].as_array().unwrap();
    assert_eq!(recent[0]["detail"], r#"field /name: "acme" vs "Acme""#);
    assert!(
        (recent.iter()).all(|m| m["primary_body"] == "" && m["shadow_body"] == ""),
        "{report}"
    );
    let bearer = format!("Bearer {READ_TOKEN}");
    let (status, _, report) = admin_request(
        router,
        Method::GET,
        "/shadow/acme",
        &[("authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["bodies"], "shown");
    assert_eq!(
        (report["compared"].as_u64(), report["matched"].as_u64()),
        (Some(23), Some(21))
    );
    let recent = report["recent_mismatches"].as_array().unwrap();
    assert_eq!(recent[0]["kind"], "body");
    assert_eq!(recent[0]["detail"], r#"field /name: "acme" vs "Acme""#);
    assert_eq!(recent[0]["request"], "GET /field");
    assert_eq!(recent[1]["kind"], "status");
    assert_eq!(
        (
            recent[1]["primary_status"].as_u64(),
            recent[1]["shadow_status"].as_u64()
        ),
        (Some(200), Some(503))
    );
    assert!(recent[1]["shadow_body"].as_str().unwrap().contains("false"));

    // The same from the command line, and in the plan of a batch that would move them.
    let admin = router.admin_addr().to_string();
    let flags = format!("file:{}", s.dir.path().join("flags.json").display());
    let batch = s.dir.path().join("batch.csv");
    let token = s.dir.path().join("read.token");
    std::fs::write(&batch, "acme,new\nglobex,new\n").unwrap();
    let (report, plan) = tokio::task::spawn_blocking(move || {
        let report = switchyard(&[
            "shadow",
            "report",
            "acme",
            "--admin",
            &admin,
            "--token-file",
            token.to_str().unwrap(),
        ]);
        let plan = switchyard(&[
            "flags",
            "apply",
            batch.to_str().unwrap(),
            "--reason",
            "batch 1",
            "--store",
            &flags,
            "--admin",
            &admin,
        ]);
        (report, plan)
    })
    .await
    .unwrap();
    assert_eq!(report.0, 0, "{report:?}");
    assert!(
        report.1.contains("acme: 23 compared, 21 matched (91.3%)"),
        "{}",
        report.1
    );
    assert!(
        report.1.contains(r#"body: field /name: "acme" vs "Acme""#),
        "{}",
        report.1
    );
    assert!(
        report.1.contains(r#"shadow  503: {"ok":false}"#),
        "the bodies, with the token: {}",
        report.1
    );
    assert_eq!(plan.0, 0, "{plan:?}");
    let line = |tenant: &str| {
        plan.1
            .lines()
            .find(|l| l.trim_start().starts_with(tenant))
            .unwrap()
            .to_owned()
    };
    assert!(
        line("acme").ends_with("[shadow matched 91.3% of 23]"),
        "{}",
        plan.1
    );
    assert!(
        line("globex").ends_with("[no shadow results]"),
        "{}",
        plan.1
    );
    s.router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_that_hangs_costs_the_client_nothing_and_its_drops_are_counted() {
    let s = start(None, "queue = 2\nconcurrency = 1\ntimeout_ms = 60000").await;
    let (router, c) = (&s.router, client());
    for i in 0..30 {
        let (status, _, body) = get(
            &c,
            router.addr(),
            &format!("/items/{i}"),
            &[("x-tenant-id", "acme")],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains(&format!("\"path\":\"/items/{i}\"")), "{body}");
    }
    let api = "route=\"api\",target=\"new\"";
    let queue_full = metric_name("skipped_total", &format!("reason=\"queue_full\",{api}"));
    // What is not dropped is held: one copy in flight (hanging), perhaps one taken off the
    // queue and waiting for it, two queued.
    wait_for("the hung side to get its one copy", || {
        s.shadow.lock().unwrap().len() == 1
    })
    .await;
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    while metric(router, &queue_full).await < Some(26.0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            metric(router, &queue_full).await
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(metric(router, &queue_full).await <= Some(29.0));
    assert_eq!(
        metric(router, &metric_name("compared_total", api)).await,
        Some(0.0)
    );
    assert_eq!(
        s.shadow.lock().unwrap().len(),
        1,
        "one copy at a time reaches the hung side"
    );
    s.router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_is_set_and_removed_by_the_cli_and_the_admin_api_and_audited() {
    let emulator = crate::dynamo::Emulator::start().await;
    let url = emulator.url();
    let mut setup = Setup::new().await;
    let token = "0123456789abcdef0123456789abcdef";
    std::fs::write(setup.dir.path().join("admin.token"), token).unwrap();
    setup.extra = "admin_token_file = \"admin.token\"".into();
    let config = crate::dynamo::router_config_file(&setup, &url);
    let cli = move |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
            all.extend(["--config", &config]);
            switchyard(&all)
        })
    };
    let (code, _, err) = cli(&["flags", "create-table"]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = cli(&[
        "flags", "set", "acme", "--target", "legacy", "--shadow", "new:25", "--reason", "compare",
    ])
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("legacy (shadow new 25%)"), "{out}");
    // A bad shadow is refused whole, naming what is wrong.
    for (spec, want) in [
        ("nwe:10", "unknown target \"nwe\""),
        ("new:0", "percent is 0"),
    ] {
        let (code, _, err) = cli(&["flags", "set", "acme", "--shadow", spec, "--reason", "x"])
            .await
            .unwrap();
        assert_eq!(code, 1, "{spec}");
        assert!(err.contains(want), "{spec}: {err}");
    }

    let router = Router::start(crate::dynamo::router_config(&setup, &url))
        .await
        .unwrap();
    let (_, flag) = admin_get(&router, "/flags/acme").await;
    let flag: serde_json::Value = serde_json::from_str(&flag).unwrap();
    assert_eq!(
        flag["flag"]["shadow"],
        serde_json::json!({"target": "new", "percent": 25}),
        "{flag}"
    );
    let auth = format!("Bearer {token}");
    let put = |body: &'static str, version: &'static str| {
        let (router, auth) = (&router, auth.clone());
        async move {
            let headers = [("authorization", auth.as_str()), ("if-match", version)];
            admin_request(router, Method::PUT, "/flags/acme", &headers, body).await
        }
    };
    let (status, _, body) = put(
        r#"{"shadow":{"target":"nwe","percent":5},"reason":"x"}"#,
        "1",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("unknown target \"nwe\""),
        "{body}"
    );
    let (status, _, body) = put(
        r#"{"shadow":null,"reason":"seen enough","by":"carol"}"#,
        "1",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let written: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(written["new"]["target"], "legacy");
    assert!(written["new"].get("shadow").is_none(), "{body}");

    // Both writes are in the audit trail, from and to.
    let (code, out, err) = cli(&["flags", "history", "acme", "--json"]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    let history: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let shadows: Vec<(serde_json::Value, serde_json::Value)> = history
        .iter()
        .map(|r| (r["old"]["shadow"].clone(), r["new"]["shadow"].clone()))
        .collect();
    let set = serde_json::json!({"target": "new", "percent": 25});
    assert_eq!(
        shadows,
        [
            (serde_json::Value::Null, set.clone()),
            (set, serde_json::Value::Null)
        ]
    );
    router.shutdown().await;
}

/// Behind a balancer each router compares its share of a tenant's requests: `/shadow`,
/// `/shadow/{tenant}` (and so `shadow report` and the batch plan) sum the fleet's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_evidence_is_summed_over_the_fleet() {
    let s = start(Some(shadow), "ignore_fields = [\"request_id\", \"now\"]").await;
    let text = std::fs::read_to_string(s.dir.path().join("router.toml")).unwrap();
    let config = Config::parse(&text, s.dir.path(), "router.toml").unwrap();
    let other = Router::start(config).await.unwrap();
    let c = client();
    // 3 reads through the first router (one mismatching), 5 through the second.
    for (router, paths) in [
        (&s.router, &["/a", "/b", "/field"][..]),
        (&other, &["/c", "/d", "/e", "/f", "/g"][..]),
    ] {
        for path in paths {
            let (status, _, _) = get(&c, router.addr(), path, &[("x-tenant-id", "acme")]).await;
            assert_eq!(status, StatusCode::OK);
        }
    }
    // Each router's counts reach the other through its presence record (every 100 ms).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let report = loop {
        let (_, report) = admin_get(&s.router, "/shadow/acme").await;
        let report: serde_json::Value = serde_json::from_str(&report).unwrap();
        if report["compared"] == 8 && report["routers"].as_array().unwrap().len() == 2 {
            break report;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never summed: {report}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(report["matched"], 7, "{report}");
    let shares: Vec<u64> = (report["routers"].as_array().unwrap().iter())
        .map(|r| r["compared"].as_u64().unwrap())
        .collect();
    assert_eq!(
        shares,
        [3, 5],
        "this router first, then the other: {report}"
    );
    let (_, summary) = admin_get(&other, "/shadow").await;
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    let acme = &summary["tenants"][0];
    assert_eq!(
        (acme["tenant"].as_str(), acme["compared"].as_u64()),
        (Some("acme"), Some(8))
    );
    other.shutdown().await;
    s.router.shutdown().await;
}
