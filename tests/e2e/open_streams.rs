//! A flip reaches open tunnels and streaming responses: a tenant moved away from a side stops
//! using it at once when sealed away, after the grace otherwise, and a split tenant's users
//! whose bucket stayed keep theirs.

use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use http_body_util::BodyExt;
use switchyard::Router;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

use crate::support::*;

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn start(setup: &Setup, grace_ms: u64) -> Router {
    let text = setup.config_text().replace(
        "poll_interval_ms = 10",
        &format!("poll_interval_ms = 10\nclose_moved_streams_after_ms = {grace_ms}"),
    );
    let config = switchyard::Config::parse(&text, setup.dir.path(), "test").unwrap();
    Router::start(config).await.unwrap()
}

/// A WebSocket through the router for `tenant` (and `user`): the socket and the side it reached.
async fn open(router: &Router, tenant: &str, user: &str) -> (Ws, String) {
    let mut request = format!("ws://{}/ws", router.addr())
        .into_client_request()
        .unwrap();
    let h = request.headers_mut();
    h.insert("x-tenant-id", tenant.parse().unwrap());
    h.insert("x-user-id", user.parse().unwrap());
    let stream = TcpStream::connect(router.addr()).await.unwrap();
    let (ws, resp) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    let side = resp.headers()["x-upstream"].to_str().unwrap().to_owned();
    (ws, side)
}

/// True when the socket still echoes.
async fn echoes(ws: &mut Ws) -> bool {
    if ws.send(Message::text("ping")).await.is_err() {
        return false;
    }
    matches!(ws.next().await, Some(Ok(m)) if m == Message::text("ping"))
}

/// Waits until the socket is closed by the router.
async fn closed(ws: &mut Ws) {
    tokio::time::timeout(EVENT_TIMEOUT, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(m)) if m.is_close() => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("the router closes the tunnel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_sealed_away_loses_its_tunnel_and_stream_at_once() {
    let setup = Setup::new().await;
    setup.set("acme", pin("legacy"));
    // A grace far longer than the test: only the seal can close these now.
    let router = start(&setup, 600_000).await;
    let (mut ws, side) = open(&router, "acme", "u1").await;
    assert_eq!(side, "legacy");
    assert!(echoes(&mut ws).await);
    let stream = client()
        .request(
            http::Request::get(format!("http://{}/ticks", router.addr()))
                .header("x-tenant-id", "acme")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let mut body = stream.into_body();
    assert!(body.frame().await.unwrap().is_ok(), "the stream flows");
    assert_eq!(
        metric(&router, "switchyard_streams_open").await,
        Some(2.0),
        "the tunnel and the stream are bound to legacy"
    );

    let version = setup.set_sealed("acme", pin("new"), Some(true));
    wait_version(&router, version).await;
    closed(&mut ws).await;
    let ended = tokio::time::timeout(EVENT_TIMEOUT, async {
        loop {
            match body.frame().await {
                None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream is cut");
    wait_metric(
        &router,
        "switchyard_streams_closed_total{kind=\"tunnel\"}",
        1.0,
    )
    .await;
    wait_metric(
        &router,
        "switchyard_streams_closed_total{kind=\"response\"}",
        1.0,
    )
    .await;
    // A new tunnel goes where the data is.
    let (mut ws, side) = open(&router, "acme", "u1").await;
    assert_eq!(side, "new");
    assert!(echoes(&mut ws).await);
    drop(ws);
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_tenant_keeps_its_tunnel_for_the_grace_and_split_users_whose_bucket_stayed_keep_theirs()
 {
    let setup = Setup::new().await;
    setup.set(
        "globex",
        flag_store::Placing::Split([("legacy".into(), 50), ("new".into(), 50)].into()),
    );
    setup.set("acme", pin("legacy"));
    let router = start(&setup, 1_000).await;

    // Users of a 50/50 split land on both sides.
    let mut on = (Vec::new(), Vec::new());
    for i in 0..40 {
        let (ws, side) = open(&router, "globex", &format!("user-{i}")).await;
        if side == "legacy" {
            on.0.push(ws);
        } else {
            on.1.push(ws);
        }
    }
    let (mut on_legacy, mut on_new) = on;
    assert!(!on_legacy.is_empty() && !on_new.is_empty());
    let (mut acme, _) = open(&router, "acme", "u1").await;

    // Everyone to legacy: the users on new moved, those on legacy did not. acme moves to new,
    // unsealed: its tunnel has the grace.
    setup.set("globex", pin("legacy"));
    let version = setup.set("acme", pin("new"));
    wait_version(&router, version).await;
    assert!(echoes(&mut acme).await, "open during the grace");
    for ws in &mut on_new {
        closed(ws).await;
    }
    closed(&mut acme).await;
    // Closed in the same sweep as the moved ones: the users whose bucket stayed still echo.
    for ws in &mut on_legacy {
        assert!(
            echoes(ws).await,
            "a user whose bucket stayed keeps the tunnel"
        );
    }
    let closed_tunnels = metric(&router, "switchyard_streams_closed_total{kind=\"tunnel\"}")
        .await
        .unwrap();
    assert_eq!(closed_tunnels, (on_new.len() + 1) as f64);
    drop(on_legacy);
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_moved_back_within_the_grace_keeps_its_tunnel() {
    let setup = Setup::new().await;
    setup.set("acme", pin("legacy"));
    setup.set("initech", pin("legacy"));
    // A grace long enough that the move back arrives well within it, on a slow machine too.
    let router = start(&setup, 2_000).await;
    let (mut acme, _) = open(&router, "acme", "u1").await;
    let (mut initech, _) = open(&router, "initech", "u1").await;
    setup.set("acme", pin("new"));
    setup.set("initech", pin("new"));
    let version = setup.set("acme", pin("legacy"));
    wait_version(&router, version).await;
    // initech stayed moved: its close after the grace marks the sweep that spared acme.
    closed(&mut initech).await;
    assert!(echoes(&mut acme).await);
    drop(acme);
    router.shutdown().await;
}
