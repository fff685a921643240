//! Active-active: a sick side is taken out by health checks, split tenants fail over without a
//! failed request and come back to their own side, pinned tenants never cross, and retries stay
//! within their budget.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flag_store::TargetId;
use http::StatusCode;
use switchyard::Router;
use switchyard::policy::pick::HealthView;

use crate::support::*;

const NEW: TargetId = TargetId(1);
const INTERVAL_MS: u64 = 100;
const TIMEOUT_MS: u64 = 100;
const UNHEALTHY_AFTER: u64 = 2;

/// `legacy` with one endpoint, `new` with two, each checked every 100 ms.
struct Sides {
    setup: Setup,
    new2: TestUpstream,
}

impl Sides {
    async fn new() -> Sides {
        Sides {
            setup: Setup::new().await,
            new2: TestUpstream::start("new").await,
        }
    }

    fn config(&self, health_path: Option<&str>, extra: &str) -> String {
        let health = |target: &str| match health_path {
            Some(path) => format!(
                "[targets.{target}.health]\npath = \"{path}\"\ninterval_ms = {INTERVAL_MS}\ntimeout_ms = {TIMEOUT_MS}\nunhealthy_after = {UNHEALTHY_AFTER}\nhealthy_after = 2\n"
            ),
            None => String::new(),
        };
        format!(
            r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[flags]
source = "file:flags.json"
default_target = "legacy"
poll_interval_ms = 10
[tenant]
from = ["header:x-tenant-id"]
sticky_key = ["header:x-user-id", "client_ip"]
[targets.legacy]
endpoints = ["{legacy}"]
{legacy_health}{extra}
[targets.new]
endpoints = ["{new1}", "{new2}"]
{new_health}{extra_new}
[[routes]]
name = "api"
path_prefix = "/"
"#,
            legacy = self.setup.legacy.url(),
            new1 = self.setup.new.url(),
            new2 = self.new2.url(),
            legacy_health = health("legacy"),
            new_health = health("new"),
            extra = extra.replace("TARGET", "legacy"),
            extra_new = extra.replace("TARGET", "new"),
        )
    }

    async fn start(&self, config: String) -> Router {
        let config = switchyard::Config::parse(&config, self.setup.dir.path(), "test").unwrap();
        Router::start(config).await.unwrap()
    }

    fn split_tenants(&self, n: usize) {
        let items: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"tenant":"t{i}","weights":{{"legacy":50,"new":50}}}}"#))
            .chain([r#"{"tenant":"acme","target":"new"}"#.to_owned()])
            .collect();
        self.setup
            .write_flags(&format!(r#"{{"version":1,"items":[{}]}}"#, items.join(",")));
    }

    async fn kill_new(&self) {
        self.setup.new.stop().await;
        self.new2.stop().await;
    }

    fn acme_requests(&self) -> u64 {
        self.setup.new.seen.tenant("acme") + self.new2.seen.tenant("acme")
    }
}

/// Waits until the router's health view satisfies `cond`.
async fn wait_health(router: &Router, what: &str, cond: impl Fn(&dyn HealthView) -> bool) {
    let health = router.health().clone();
    let mut changes = health.subscribe();
    let wait = async {
        loop {
            if cond(&health.view(health.now_ms())) {
                return;
            }
            changes.changed().await.unwrap();
        }
    };
    tokio::time::timeout(EVENT_TIMEOUT, wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

/// Steady concurrent GETs; every answer other than 200 is kept as a failure.
struct Load {
    stop: Arc<AtomicBool>,
    completed: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(addr: std::net::SocketAddr, clients: usize, tenant: fn(u64) -> String) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let completed = Arc::new(AtomicU64::new(0));
        let tasks = (0..clients)
            .map(|c| {
                let (stop, completed) = (stop.clone(), completed.clone());
                tokio::spawn(async move {
                    let client = client();
                    let mut failures = Vec::new();
                    let mut i = c as u64;
                    while !stop.load(Ordering::SeqCst) {
                        let (tenant, user) = (tenant(i), format!("user-{i}"));
                        let (status, _, body) = get(
                            &client,
                            addr,
                            "/x",
                            &[("x-tenant-id", &tenant), ("x-user-id", &user)],
                        )
                        .await;
                        if status != StatusCode::OK {
                            failures.push(format!("{tenant}/{user}: {status} {body}"));
                        }
                        completed.fetch_add(1, Ordering::SeqCst);
                        i += clients as u64;
                        // A steady rate rather than a flood: the retry budget is a share of it.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    failures
                })
            })
            .collect();
        Load {
            stop,
            completed,
            tasks,
        }
    }

    async fn wait_more(&self, n: u64) {
        let mark = self.completed.load(Ordering::SeqCst);
        let completed = self.completed.clone();
        wait_for("load progress", move || {
            completed.load(Ordering::SeqCst) >= mark + n
        })
        .await;
    }

    /// Stops the load and checks that no request failed; the requests completed.
    async fn finish_without_failures(self) -> u64 {
        let (completed, failures) = self.finish().await;
        assert!(
            failures.is_empty(),
            "{} of {completed} requests failed: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        completed
    }

    async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let mut failures = Vec::new();
        for t in self.tasks {
            failures.extend(t.await.unwrap());
        }
        (self.completed.load(Ordering::SeqCst), failures)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_side_moves_split_tenants_without_a_failed_request() {
    let sides = Sides::new().await;
    sides.split_tenants(50);
    let router = sides.start(sides.config(Some("/healthz"), "")).await;
    let load = Load::start(router.addr(), 4, |i| format!("t{}", i % 50));
    load.wait_more(1500).await;
    assert!(sides.new2.seen.total() > 0 && sides.setup.legacy.seen.total() > 0);

    let killed = Instant::now();
    sides.kill_new().await;
    wait_health(&router, "new to be marked unhealthy", |v| {
        !v.is_healthy(NEW)
    })
    .await;
    let detected = killed.elapsed();
    let bound = Duration::from_millis(INTERVAL_MS * UNHEALTHY_AFTER + TIMEOUT_MS + 1000);
    eprintln!("kill to all traffic on legacy: {detected:?} (bound {bound:?})");
    assert!(
        detected <= bound,
        "detection took {detected:?}, bound {bound:?}"
    );

    // Once detected, picks skip `new`: no request attempts it any more.
    load.wait_more(100).await;
    let attempts = || async {
        metric(
            &router,
            "switchyard_upstream_errors_total{kind=\"connect\",target=\"new\"}",
        )
        .await
        .unwrap()
    };
    let before = attempts().await;
    load.wait_more(300).await;
    assert_eq!(
        attempts().await,
        before,
        "requests still tried the dead side after detection"
    );
    let completed = load.finish_without_failures().await;
    let failovers = metric(
        &router,
        "switchyard_failovers_total{from=\"new\",route=\"api\",to=\"legacy\"}",
    )
    .await
    .unwrap();
    assert!(failovers > 0.0);
    eprintln!("{completed} requests, 0 failed, {failovers} failed over to legacy");
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_tenant_on_a_dead_side_gets_503_and_never_crosses() {
    let sides = Sides::new().await;
    sides.split_tenants(1);
    let router = sides.start(sides.config(Some("/healthz"), "")).await;
    let load = Load::start(router.addr(), 2, |_| "acme".to_owned());
    load.wait_more(100).await;
    sides.kill_new().await;
    wait_health(&router, "new to be marked unhealthy", |v| {
        !v.is_healthy(NEW)
    })
    .await;
    let (_, _) = load.finish().await;
    let c = client();
    for _ in 0..20 {
        let (status, _, body) = get(&c, router.addr(), "/x", &[("x-tenant-id", "acme")]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            "switchyard: the tenant's target \"new\" is unavailable\n"
        );
    }
    assert!(
        sides.acme_requests() > 0,
        "acme reached new before the kill"
    );
    assert_eq!(
        sides.setup.legacy.seen.tenant("acme"),
        0,
        "a pinned tenant's request reached the other side"
    );
    let unavailable = metric(
        &router,
        "switchyard_pinned_unavailable_total{route=\"api\",target=\"new\"}",
    )
    .await
    .unwrap();
    assert!(unavailable >= 20.0, "{unavailable}");
    let (_, explain) = admin_get(&router, "/explain?tenant=acme&path=/x").await;
    let v: serde_json::Value = serde_json::from_str(&explain).unwrap();
    assert_eq!(v["health"]["new"]["healthy"], false);
    assert!(
        v["why"].as_str().unwrap().contains("never fails over"),
        "{v}"
    );
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_endpoint_of_two_down_loses_nothing_and_the_other_takes_the_load() {
    let sides = Sides::new().await;
    sides.split_tenants(1);
    let router = sides.start(sides.config(Some("/healthz"), "")).await;
    let load = Load::start(router.addr(), 4, |_| "acme".to_owned());
    load.wait_more(300).await;
    assert!(
        sides.setup.new.seen.tenant("acme") > 0 && sides.new2.seen.tenant("acme") > 0,
        "both endpoints took load"
    );
    sides.setup.new.stop().await;
    let health = router.health().clone();
    wait_health(&router, "the first endpoint to go down", |_| {
        !health.endpoint_available(NEW, 0, health.now_ms())
    })
    .await;
    // Up to one request per client may already be counted at the upstream when this is read.
    let before = sides.new2.seen.tenant("acme");
    load.wait_more(300).await;
    let (completed, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {completed} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        sides.new2.seen.tenant("acme") + 4 >= before + 300,
        "the live endpoint took the load"
    );
    assert!(
        router
            .health()
            .view(router.health().now_ms())
            .is_healthy(NEW)
    );
    assert_eq!(sides.setup.legacy.seen.tenant("acme"), 0);
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_users_return_to_their_own_side_when_it_recovers() {
    let sides = Sides::new().await;
    sides.setup.write_flags(
        r#"{"version":1,"items":[{"tenant":"globex","weights":{"legacy":50,"new":50}}]}"#,
    );
    let router = sides.start(sides.config(Some("/healthz"), "")).await;
    let c = client();
    let side_of = |user: u32| {
        let c = c.clone();
        let addr = router.addr();
        async move {
            let user = format!("user-{user}");
            let (status, h, _) = get(
                &c,
                addr,
                "/x",
                &[("x-tenant-id", "globex"), ("x-user-id", &user)],
            )
            .await;
            assert_eq!(status, StatusCode::OK);
            h["x-upstream"].to_str().unwrap().to_owned()
        }
    };
    let mut before = Vec::new();
    for user in 0..200 {
        before.push(side_of(user).await);
    }
    assert!(before.iter().filter(|s| *s == "new").count() > 50);

    sides.kill_new().await;
    wait_health(&router, "new to be marked unhealthy", |v| {
        !v.is_healthy(NEW)
    })
    .await;
    for user in 0..200 {
        assert_eq!(
            side_of(user).await,
            "legacy",
            "user-{user} while new is down"
        );
    }
    sides.setup.new.restart().await;
    sides.new2.restart().await;
    let health = router.health().clone();
    wait_health(&router, "both endpoints of new to recover", |_| {
        (0..2).all(|e| health.endpoint_available(NEW, e, health.now_ms()))
    })
    .await;
    for (user, side) in before.iter().enumerate() {
        assert_eq!(
            &side_of(user as u32).await,
            side,
            "user-{user} must return to its own side"
        );
    }
    router.shutdown().await;
}

/// An upstream that reads each request's head and closes the connection without a word: a
/// failure that may have reached an application.
async fn resetting_upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_endpoint_failing_retries_stay_within_the_budget() {
    let sides = Sides::new().await;
    sides.split_tenants(20);
    // Every endpoint takes each request and closes without answering. No active checks: only
    // passive evidence, which never takes a whole target out, so every request is tried and
    // may ask for a retry. 20% of requests plus 1 a second over 10 s.
    let config = sides
        .config(
            None,
            "[TARGET.retry]\nbudget_percent = 20\nmin_per_second = 1\n"
                .replace("[TARGET", "[targets.TARGET")
                .as_str(),
        )
        .replace(&sides.setup.legacy.url(), &resetting_upstream().await)
        .replace(&sides.setup.new.url(), &resetting_upstream().await)
        .replace(&sides.new2.url(), &resetting_upstream().await);
    let router = sides.start(config).await;
    let c = client();
    const N: u64 = 200;
    for i in 0..N {
        let (status, _, _) = get(
            &c,
            router.addr(),
            "/x",
            &[
                ("x-tenant-id", &format!("t{}", i % 20)),
                ("x-user-id", &i.to_string()),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
    }
    let mut retries = 0.0;
    for target in ["legacy", "new"] {
        for reason in ["connect", "reset"] {
            retries += metric(
                &router,
                &format!("switchyard_retries_total{{reason=\"{reason}\",target=\"{target}\"}}"),
            )
            .await
            .unwrap();
        }
    }
    let attempts = metric(
        &router,
        "switchyard_upstream_errors_total{kind=\"reset\",target=\"legacy\"}",
    )
    .await
    .unwrap()
        + metric(
            &router,
            "switchyard_upstream_errors_total{kind=\"reset\",target=\"new\"}",
        )
        .await
        .unwrap();
    let budget = 0.2 * N as f64 + 2.0 * 10.0;
    eprintln!("{N} requests, {retries} retries (budget {budget}), {attempts} attempts");
    assert!(retries > 0.0, "the budget allows some retries");
    assert!(
        retries <= budget,
        "{retries} retries exceed the budget of {budget}"
    );
    assert_eq!(
        attempts,
        N as f64 + retries,
        "every attempt is a request or a counted retry"
    );
    let exhausted = metric(
        &router,
        "switchyard_retry_budget_exhausted_total{target=\"legacy\"}",
    )
    .await
    .unwrap()
        + metric(
            &router,
            "switchyard_retry_budget_exhausted_total{target=\"new\"}",
        )
        .await
        .unwrap();
    assert!(exhausted > 0.0);
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_endpoint_is_not_thrashed_in_and_out() {
    let sides = Sides::new().await;
    sides.split_tenants(1);
    let router = sides.start(sides.config(Some("/flap"), "")).await;
    let changes = router.health().subscribe();
    let (a, b) = (sides.setup.new.seen.clone(), sides.new2.seen.clone());
    // 40 checks on each endpoint, alternating pass and fail.
    wait_for("40 health checks per endpoint", || {
        a.flaps.load(Ordering::SeqCst) >= 40 && b.flaps.load(Ordering::SeqCst) >= 40
    })
    .await;
    assert_eq!(
        *changes.borrow(),
        0,
        "an alternating endpoint never reaches 2 failures in a row"
    );
    assert_eq!(
        metric(
            &router,
            &format!(
                "switchyard_endpoint_healthy{{endpoint=\"{}\",target=\"new\"}}",
                sides.new2.url()
            )
        )
        .await,
        Some(1.0)
    );
    router.shutdown().await;
}

/// `Sides`' config with health checks at their defaults (every 1 s, 500 ms timeout, down after
/// 2 failures) and the default retry budget.
fn default_health(sides: &Sides) -> String {
    sides.config(Some("/healthz"), "").replace(
        &format!(
            "interval_ms = {INTERVAL_MS}\ntimeout_ms = {TIMEOUT_MS}\nunhealthy_after = {UNHEALTHY_AFTER}\nhealthy_after = 2\n"
        ),
        "",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_side_killed_under_load_at_default_settings_fails_no_idempotent_request() {
    let sides = Sides::new().await;
    sides.split_tenants(50);
    let config = default_health(&sides);
    assert!(!config.contains("\ninterval_ms"), "{config}");
    let router = sides.start(config).await;
    let load = Load::start(router.addr(), 16, |i| format!("t{}", i % 50));
    load.wait_more(2000).await;
    sides.kill_new().await;
    wait_health(&router, "new to be marked unhealthy", |v| {
        !v.is_healthy(NEW)
    })
    .await;
    load.wait_more(1000).await;
    let completed = load.finish_without_failures().await;
    let retried = metric(
        &router,
        "switchyard_retries_total{reason=\"connect\",target=\"new\"}",
    )
    .await
    .unwrap()
        + metric(
            &router,
            "switchyard_retries_total{reason=\"reset\",target=\"new\"}",
        )
        .await
        .unwrap();
    assert!(retried > 0.0, "the dead side's requests were retried");
    eprintln!(
        "{completed} requests with a side killed at default settings: 0 failed, {retried} retried on legacy"
    );
    router.shutdown().await;
}

/// An upstream that answers every request with 200 until told to hang; then it accepts
/// connections and reads nothing more, and answers nothing (health checks included), as a
/// stopped process or a wedged host does.
struct Hangable {
    addr: std::net::SocketAddr,
    hung: Arc<AtomicBool>,
    seen: Arc<AtomicU64>,
}

impl Hangable {
    async fn start() -> Hangable {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hung = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(AtomicU64::new(0));
        let (h, s) = (hung.clone(), seen.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let (hung, seen) = (h.clone(), s.clone());
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            if hung.load(Ordering::SeqCst) {
                                std::future::pending::<()>().await;
                            }
                            seen.fetch_add(1, Ordering::SeqCst);
                            let answer =
                                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-upstream: new\r\n\r\nok";
                            if conn.write_all(answer.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        Hangable { addr, hung, seen }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_held_by_a_hung_side_move_when_it_is_seen_down_and_pinned_ones_get_an_honest_answer()
 {
    let sides = Sides::new().await;
    sides.split_tenants(50);
    let (a, b) = (Hangable::start().await, Hangable::start().await);
    let config = default_health(&sides)
        .replace(&sides.setup.new.url(), &format!("http://{}", a.addr))
        .replace(&sides.new2.url(), &format!("http://{}", b.addr));
    let router = sides.start(config).await;
    let addr = router.addr();
    let load = Load::start(addr, 16, |i| format!("t{}", i % 50));
    load.wait_more(1000).await;
    assert!(a.seen.load(Ordering::SeqCst) + b.seen.load(Ordering::SeqCst) > 0);

    a.hung.store(true, Ordering::SeqCst);
    b.hung.store(true, Ordering::SeqCst);
    // A pinned tenant's request held by the hung side.
    let pinned =
        tokio::spawn(async move { get(&client(), addr, "/x", &[("x-tenant-id", "acme")]).await });
    wait_health(&router, "new to be marked unhealthy", |v| {
        !v.is_healthy(NEW)
    })
    .await;
    load.wait_more(1000).await;
    let completed = load.finish_without_failures().await;
    let moved = metric(
        &router,
        "switchyard_retries_total{reason=\"endpoint_down\",target=\"new\"}",
    )
    .await
    .unwrap();
    assert!(moved > 0.0, "held requests were sent again to legacy");

    // The pinned request never crossed: it is answered 502 once its side is seen down (not
    // held for the route's 30 s timeout), and the next one is 503.
    let (status, _, body) = pinned.await.unwrap();
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("went down before it responded"), "{body}");
    let (status, _, body) = get(&client(), addr, "/x", &[("x-tenant-id", "acme")]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(sides.setup.legacy.seen.tenant("acme"), 0);
    eprintln!(
        "{completed} requests with a side hung: 0 failed, {moved} moved when it was seen down"
    );
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_try_timeout_moves_a_slow_try_to_the_other_side() {
    let sides = Sides::new().await;
    sides.split_tenants(50);
    let (a, b) = (Hangable::start().await, Hangable::start().await);
    // No health checks: only the try timeout can move the request.
    let config = sides
        .config(None, "")
        .replace(&sides.setup.new.url(), &format!("http://{}", a.addr))
        .replace(&sides.new2.url(), &format!("http://{}", b.addr))
        .replace(
            "path_prefix = \"/\"",
            "path_prefix = \"/\"\ntry_timeout_ms = 200",
        );
    let router = sides.start(config).await;
    a.hung.store(true, Ordering::SeqCst);
    b.hung.store(true, Ordering::SeqCst);
    let c = client();
    let mut on_legacy = 0;
    for i in 0..40 {
        let (status, h, body) = get(
            &c,
            router.addr(),
            "/x",
            &[("x-tenant-id", "t1"), ("x-user-id", &format!("user-{i}"))],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        on_legacy += usize::from(h["x-upstream"] == "legacy");
    }
    assert_eq!(on_legacy, 40);
    let moved = metric(
        &router,
        "switchyard_retries_total{reason=\"try_timeout\",target=\"new\"}",
    )
    .await
    .unwrap();
    assert!(moved > 0.0);
    router.shutdown().await;
}
