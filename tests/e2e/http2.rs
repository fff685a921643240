//! HTTP/2 from clients, as the router's own HTTP/2 server serves it: a reset stream cancels
//! its upstream request, shutdown sends GOAWAY and finishes the streams in flight, bodies larger
//! than the windows stream both ways, responses carry no HTTP/1.1 connection headers, an idle
//! connection is closed, and streams opened in the place of ended ones keep their answers apart.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::support::*;

/// An HTTP/2 client on the `h2` crate, for what hyper's client does not expose (resets, the
/// connection's end). The connection's task reports how it ended.
async fn h2_connect(
    addr: SocketAddr,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    (send, tokio::spawn(conn))
}

fn get_request(addr: SocketAddr, path: &str) -> Request<()> {
    Request::get(format!("http://{addr}{path}"))
        .header("x-tenant-id", "acme")
        .body(())
        .unwrap()
}

/// What a raw HTTP/1.1 upstream saw of one connection.
enum Seen {
    Head(String),
    Closed,
}

/// An upstream that reports each request head and each connection's end, and answers with
/// `answer` (or never, when it is `None`).
async fn raw_upstream(answer: Option<&'static str>) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut more = [0u8; 4096];
                    let n = s.read(&mut more).await.unwrap_or(0);
                    if n == 0 {
                        let _ = tx.send(Seen::Closed);
                        return;
                    }
                    buf.extend_from_slice(&more[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        let _ = tx.send(Seen::Head(head));
                        if let Some(answer) = answer {
                            s.write_all(answer.as_bytes()).await.unwrap();
                        }
                    }
                }
            });
        }
    });
    (addr, rx)
}

async fn next(seen: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(EVENT_TIMEOUT, seen.recv())
        .await
        .expect("the upstream saw nothing")
        .expect("the upstream's channel is open")
}

/// A setup whose `/raw/` route goes to `upstream`.
async fn with_raw(upstream: SocketAddr) -> Setup {
    let mut setup = Setup::new().await;
    setup.route_raw(upstream);
    setup
}

#[tokio::test]
async fn a_stream_the_client_resets_cancels_its_upstream_request() {
    let (upstream, mut seen) = raw_upstream(None).await;
    let setup = with_raw(upstream).await;
    let router = setup.start().await;
    let (mut send, conn) = h2_connect(router.addr()).await;
    let (response, mut stream) = send
        .send_request(get_request(router.addr(), "/raw/held"), true)
        .unwrap();
    match next(&mut seen).await {
        Seen::Head(head) => assert!(head.starts_with("GET /raw/held HTTP/1.1"), "{head}"),
        Seen::Closed => panic!("the upstream connection closed before the request"),
    }
    // The client gives up on the stream: the router drops the exchange, and the upstream's
    // connection (which cannot carry another request with an answer pending) closes.
    stream.send_reset(h2::Reason::CANCEL);
    drop(response);
    assert!(matches!(next(&mut seen).await, Seen::Closed));
    // The connection itself goes on.
    let mut send = send.ready().await.unwrap();
    let (response, _) = send
        .send_request(get_request(router.addr(), "/after"), true)
        .unwrap();
    let response = tokio::time::timeout(EVENT_TIMEOUT, response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(setup.legacy.seen.total(), 1);
    drop(send);
    conn.abort();
    router.shutdown().await;
}

#[tokio::test]
async fn shutdown_sends_goaway_and_finishes_the_streams_in_flight() {
    let setup = Setup::new().await;
    let router = setup.start().await;
    let addr = router.addr();
    let (mut send, conn) = h2_connect(addr).await;
    let (held, _) = send.send_request(get_request(addr, "/hold"), true).unwrap();
    let holding = &setup.legacy.seen.holding;
    wait_for("the upstream to hold the request", || {
        holding.load(Ordering::SeqCst) == 1
    })
    .await;
    let shutdown = tokio::spawn(router.shutdown());
    // The connection is told to open no more streams (GOAWAY): a new one is refused by the
    // client itself, and never reaches an upstream.
    let refused = tokio::time::timeout(EVENT_TIMEOUT, async {
        loop {
            let Ok(mut ready) = send.clone().ready().await else {
                return;
            };
            match ready.send_request(get_request(addr, "/late"), true) {
                Err(_) => return,
                Ok((late, _)) => {
                    if late.await.is_err() {
                        return;
                    }
                }
            }
            tokio::task::yield_now().await;
        }
    });
    // A stream sent before GOAWAY might have been answered: only /hold and such count.
    refused
        .await
        .expect("new streams are refused after shutdown");
    setup.legacy.seen.release.notify_waiters();
    let held = tokio::time::timeout(EVENT_TIMEOUT, held)
        .await
        .unwrap()
        .expect("the stream in flight is answered");
    assert_eq!(held.status(), StatusCode::OK);
    let mut body = held.into_body();
    let mut text = Vec::new();
    while let Some(chunk) = body.data().await {
        text.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(text, b"legacy");
    // Then the router closes the connection, cleanly, and its shutdown has drained.
    let ended = tokio::time::timeout(EVENT_TIMEOUT, conn).await.unwrap();
    assert!(ended.unwrap().is_ok(), "the connection ended with an error");
    assert!(shutdown.await.unwrap(), "shutdown reports a drain");
}

#[tokio::test]
async fn bodies_larger_than_the_windows_stream_both_ways() {
    // An h2c upstream echoes the body as it comes, while the rest is still being sent.
    let setup = Setup::with_h2c_new().await;
    setup.set("acme", pin("new"));
    let router = setup.start().await;
    // 3 MiB: three times the router's windows, and far over the client's own 64 KiB.
    let sent = Bytes::from(pattern(3 << 20));
    let request = Request::post(format!("http://{}/echo", router.addr()))
        .header("x-tenant-id", "acme")
        .body(Full::new(sent.clone()))
        .unwrap();
    let response = tokio::time::timeout(EVENT_TIMEOUT, h2_client().request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let echoed = tokio::time::timeout(EVENT_TIMEOUT, response.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(echoed.len(), sent.len());
    assert!(echoed == sent, "the echo differs from what was sent");
    router.shutdown().await;
}

#[tokio::test]
async fn responses_carry_a_date_and_no_connection_headers() {
    let answer = "HTTP/1.1 200 OK\r\nConnection: keep-alive, x-hop\r\nKeep-Alive: timeout=5\r\nx-hop: 1\r\nx-kept: 1\r\nContent-Length: 2\r\n\r\nok";
    let (upstream, _seen) = raw_upstream(Some(answer)).await;
    let setup = with_raw(upstream).await;
    let router = setup.start().await;
    let (status, headers, body) = get(&h2_client(), router.addr(), "/raw/x", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    for gone in ["connection", "keep-alive", "x-hop"] {
        assert!(!headers.contains_key(gone), "{gone} in {headers:?}");
    }
    assert_eq!(headers["x-kept"], "1");
    // The router adds one where the upstream sent none: `Mon, 30 Nov 2026 19:14:15 GMT`.
    let date = headers["date"].to_str().unwrap();
    assert!(date.len() == 29 && date.ends_with(" GMT"), "{date}");
    router.shutdown().await;
}

#[tokio::test]
async fn a_connection_with_no_stream_open_is_closed_after_the_header_read_timeout() {
    let mut setup = Setup::new().await;
    setup.extra = "header_read_timeout_ms = 300\n".into();
    let router = setup.start().await;
    // The preface, and not the SETTINGS frame that must follow it, nor a stream: as an idle
    // HTTP/1.1 connection, it is closed.
    let mut s = TcpStream::connect(router.addr()).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let closed = tokio::time::timeout(EVENT_TIMEOUT, async {
        let mut sink = [0u8; 1024];
        while s.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    });
    closed.await.expect("the stalled connection is closed");
    // It held a connection slot no longer: the router serves on.
    let (status, _, _) = get(&h2_client(), router.addr(), "/x", &[]).await;
    assert_eq!(status, StatusCode::OK);
    router.shutdown().await;
}

#[tokio::test]
async fn many_streams_of_one_connection_each_get_their_own_answer() {
    // Streams finish out of order (each waits its own time upstream), and each ended stream's
    // place is taken by a new one, 300 times: each answer still belongs to its request.
    let setup = Setup::new().await;
    let router = setup.start().await;
    let (send, conn) = h2_connect(router.addr()).await;
    let mut waiting = tokio::task::JoinSet::new();
    // 64 open at a time: each new stream opens as an earlier one ends.
    let open = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    for i in 0..300u32 {
        let slot = open.clone().acquire_owned().await.unwrap();
        let mut send = send.clone().ready().await.unwrap();
        let mut request = get_request(router.addr(), &format!("/slow/{}", i % 7));
        request
            .headers_mut()
            .insert("x-request-id", format!("stream-{i}").parse().unwrap());
        let (response, _) = send.send_request(request, true).unwrap();
        waiting.spawn(async move {
            let response = response.await.unwrap();
            let id = response.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_owned();
            let mut body = response.into_body();
            let mut text = Vec::new();
            while let Some(chunk) = body.data().await {
                let chunk = chunk.unwrap();
                body.flow_control().release_capacity(chunk.len()).unwrap();
                text.extend_from_slice(&chunk);
            }
            drop(slot);
            (i, id, text)
        });
    }
    let answers = tokio::time::timeout(EVENT_TIMEOUT, waiting.join_all())
        .await
        .expect("every stream is answered");
    assert_eq!(answers.len(), 300);
    for (i, id, text) in answers {
        assert_eq!(id, format!("stream-{i}"));
        assert_eq!(text, b"legacy", "stream {i}");
    }
    drop(send);
    assert!(conn.await.unwrap().is_ok(), "the connection ended cleanly");
    router.shutdown().await;
}

/// Framing HTTP/2 must not make ambiguous: a request that says `content-length: 0` and then
/// sends a DATA frame is refused, and no upstream sees it (before, the upstream got a whole
/// empty POST while the client was still sending); a request with neither `:authority` nor
/// `host` gets 400, as the same request over HTTP/1.1 does.
#[tokio::test]
async fn a_request_breaking_its_content_length_or_naming_no_host_never_reaches_an_upstream() {
    let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let (upstream, mut seen) = raw_upstream(Some(answer)).await;
    let setup = with_raw(upstream).await;
    let router = setup.start().await;
    let (mut send, conn) = h2_connect(router.addr()).await;
    let post = Request::post(format!("http://{}/raw/empty", router.addr()))
        .header("x-tenant-id", "acme")
        .header("content-length", "0")
        .body(())
        .unwrap();
    let (posted, mut body) = send.send_request(post, false).unwrap();
    // A request after it on the same connection: once it is answered, the router has read
    // the POST's head too (frames are read in order).
    let mut send = send.ready().await.unwrap();
    let (after, _) = send
        .send_request(get_request(router.addr(), "/raw/after"), true)
        .unwrap();
    let after = tokio::time::timeout(EVENT_TIMEOUT, after)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.status(), StatusCode::OK);
    let sent = body.send_data(Bytes::from_static(b"smuggled"), true);
    assert!(
        sent.is_ok(),
        "the POST was answered before its content came: {sent:?}"
    );
    match tokio::time::timeout(EVENT_TIMEOUT, posted).await.unwrap() {
        Ok(resp) => {
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
            assert!(resp.headers().contains_key("x-request-id"), "{resp:?}");
        }
        Err(e) => assert!(e.is_reset(), "{e}"),
    }
    // Refused like every other answer of the router's own: counted (the bare GET below is
    // the second 4xx with no route).
    let refused = "switchyard_requests_total{route=\"none\",status=\"4xx\",target=\"none\"}";
    wait_metric(&router, refused, 1.0).await;
    // No authority, no host: refused by name.
    let mut send = send.ready().await.unwrap();
    let bare = Request::get("/raw/bare")
        .header("x-tenant-id", "acme")
        .body(())
        .unwrap();
    let (bare, _) = send.send_request(bare, true).unwrap();
    let bare = tokio::time::timeout(EVENT_TIMEOUT, bare)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bare.status(), StatusCode::BAD_REQUEST);
    let mut rx = bare.into_body();
    let mut text = Vec::new();
    while let Some(chunk) = rx.data().await {
        text.extend_from_slice(&chunk.unwrap());
    }
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("names no host"), "{text}");
    // The upstream saw one request: the GET.
    let mut heads = Vec::new();
    while let Ok(s) = seen.try_recv() {
        if let Seen::Head(head) = s {
            heads.push(head.lines().next().unwrap_or_default().to_owned());
        }
    }
    assert_eq!(heads, ["GET /raw/after HTTP/1.1"]);
    drop(send);
    conn.abort();
    router.shutdown().await;
}
