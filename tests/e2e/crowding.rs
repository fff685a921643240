//! One client's idle connections never lock out another: at `server.max_connections` a new
//! connection closes the one idle the longest (it never sent a request, or waits between
//! requests); a connection with a request in progress is never closed for room; a per-address
//! cap closes one address's extra connection at once; a connection that sends nothing is
//! closed at the first byte timeout, not the header read timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const ATTACKER: [u8; 4] = [127, 0, 0, 1];
const CLIENT: [u8; 4] = [127, 0, 0, 2];
const UPLOADER: [u8; 4] = [127, 0, 0, 3];

/// Whether the router closes the connection (an end of stream or a reset) within the event
/// timeout, having sent nothing.
async fn closed_silently(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(EVENT_TIMEOUT, s.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

/// One request on a new connection from `from`, answered within the event timeout: its status.
async fn one_request(from: [u8; 4], addr: SocketAddr) -> Option<u16> {
    let exchange = async {
        let mut s = connect_from(from, addr).await;
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        let text = String::from_utf8_lossy(&out);
        text.get(9..12)?.parse().ok()
    };
    tokio::time::timeout(EVENT_TIMEOUT, exchange).await.ok()?
}

/// Waits until the router's count of open client connections meets `cond`.
async fn open_connections(router: &switchyard::Router, cond: impl Fn(f64) -> bool) {
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let open = metric(router, "switchyard_connections_open ").await;
        if open.is_some_and(&cond) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "open connections: {open:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `n` connections from `ATTACKER` that never send a byte; each one the router closes is
/// opened again after `pause` (the scenario's pace). Returns how many the router closed.
fn flood(
    addr: SocketAddr,
    n: usize,
    pause: Duration,
) -> (Arc<AtomicUsize>, Vec<tokio::task::JoinHandle<()>>) {
    let closed = Arc::new(AtomicUsize::new(0));
    let tasks = (0..n)
        .map(|_| {
            let closed = closed.clone();
            tokio::spawn(async move {
                loop {
                    let mut s = connect_from(ATTACKER, addr).await;
                    let mut buf = [0u8; 16];
                    let _ = s.read(&mut buf).await;
                    closed.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(pause).await;
                }
            })
        })
        .collect();
    (closed, tasks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_clients_idle_connections_never_lock_out_another() {
    let mut setup = Setup::new().await;
    // Without room made, a connection beyond the cap would wait a minute to be accepted.
    setup.extra =
        "max_connections = 40\nheader_read_timeout_ms = 60000\nfirst_byte_timeout_ms = 60000\n"
            .into();
    let router = setup.start().await;
    let addr = router.addr();

    // An upload in progress: its head is complete, so it is never closed for room.
    let mut upload = connect_from(UPLOADER, addr).await;
    upload
        .write_all(
            b"POST /sink HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nConnection: close\r\n\r\nabc",
        )
        .await
        .unwrap();
    wait_for("the upload to reach the upstream", || {
        setup.legacy.seen.total() == 1
    })
    .await;

    // Every slot but the upload's held by one address's silent connections, reopened as
    // soon as they close.
    let (closed, flooding) = flood(addr, 40, Duration::from_millis(50));
    open_connections(&router, |n| n >= 40.0).await;

    // Another client's requests, each on a new connection, are all answered.
    for i in 0..30 {
        assert_eq!(one_request(CLIENT, addr).await, Some(200), "request {i}");
    }
    // Each made room by closing a silent connection.
    wait_for("the attacker to see its connections closed", || {
        closed.load(Ordering::Relaxed) >= 30
    })
    .await;
    let shed = metric(
        &router,
        "switchyard_connections_shed_total{reason=\"idle_for_room\"}",
    )
    .await;
    assert!(shed >= Some(30.0), "{shed:?}");

    // The upload was never closed: its body ends and it is answered.
    upload.write_all(b"def").await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(EVENT_TIMEOUT, upload.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    for task in flooding {
        task.abort();
    }
    router.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_an_address_cap_are_closed_at_once_and_others_are_served() {
    let mut setup = Setup::new().await;
    setup.extra = "max_connections_per_address = 3\n".into();
    let router = setup.start().await;
    let addr = router.addr();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from(ATTACKER, addr).await);
    }
    open_connections(&router, |n| n == 3.0).await;
    let mut fourth = connect_from(ATTACKER, addr).await;
    assert!(closed_silently(&mut fourth).await, "the fourth is closed");
    assert_eq!(one_request(CLIENT, addr).await, Some(200));
    // The three within the cap are served.
    held[0]
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    held[0].read_to_end(&mut out).await.unwrap();
    assert!(out.starts_with(b"HTTP/1.1 200"));
    let shed = metric(
        &router,
        "switchyard_connections_shed_total{reason=\"per_address\"}",
    )
    .await;
    assert_eq!(shed, Some(1.0));
    router.shutdown().await;
}

#[tokio::test]
async fn a_connection_that_sends_nothing_closes_at_the_first_byte_timeout() {
    let mut setup = Setup::new().await;
    setup.extra = "first_byte_timeout_ms = 300\nheader_read_timeout_ms = 60000\n".into();
    let router = setup.start().await;
    let addr = router.addr();
    let mut silent = connect_from(CLIENT, addr).await;
    assert!(
        closed_silently(&mut silent).await,
        "closed long before a minute"
    );

    // A client that has begun its head, or is kept alive between requests, has the header
    // read timeout. The pauses are the scenario's pace: twice the first byte timeout.
    let mut slow = connect_from(CLIENT, addr).await;
    slow.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    slow.write_all(b"Host: a\r\n\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    slow.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(EVENT_TIMEOUT, slow.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    assert_eq!(setup.legacy.seen.total(), 2);
    router.shutdown().await;
}
