//! A slow client is the client's: the route's timeout is for the upstream's answer, so it
//! runs from the end of the request body, and a client that stalls never counts against an
//! endpoint's health.
//! Once the answer streams, the exchange idles only when neither direction moves.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Reads one answer to the end of the connection (the requests here ask to close).
async fn answer(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(EVENT_TIMEOUT, s.read_to_end(&mut out))
        .await
        .expect("an answer within the event timeout")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn an_upload_slower_than_the_route_timeout_is_answered_by_the_upstream() {
    let mut setup = Setup::new().await;
    setup.routes = "[[routes]]\nname = \"api\"\npath_prefix = \"/\"\ntimeout_ms = 400\nidle_timeout_ms = 5000\n".into();
    let router = setup.start().await;
    let mut s = TcpStream::connect(router.addr()).await.unwrap();
    let piece = vec![b'u'; 2000];
    s.write_all(
        b"POST /sink HTTP/1.1\r\nHost: a\r\nContent-Length: 20000\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    // Ten pieces, 150 ms apart: 1.5 s in all, four times the route's timeout, and no pause
    // near the idle timeout. This is the scenario's pace, not a wait for an event.
    for _ in 0..10 {
        s.write_all(&piece).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    }
    let text = answer(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("\r\n\r\n20000 "),
        "the upstream read the whole body: {text}"
    );
    router.shutdown().await;
}

#[tokio::test]
async fn clients_that_trickle_then_stall_get_408_and_never_eject_an_endpoint() {
    let mut setup = Setup::new().await;
    setup.routes = "[[routes]]\nname = \"api\"\npath_prefix = \"/\"\ntimeout_ms = 300\nidle_timeout_ms = 300\n".into();
    let mut text = setup.config_text();
    text = text.replace(
        &format!("[targets.legacy]\nendpoints = [\"{}\"]", setup.legacy.url()),
        &format!(
            "[targets.legacy]\nendpoints = [\"{}\"]\n[targets.legacy.ejection]\nconsecutive_failures = 2",
            setup.legacy.url()
        ),
    );
    assert!(text.contains("consecutive_failures = 2"));
    std::fs::write(setup.dir.path().join("router.toml"), &text).unwrap();
    let config = switchyard::Config::load(&setup.dir.path().join("router.toml")).unwrap();
    let router = switchyard::Router::start(config).await.unwrap();

    // Five clients at once trickle a body, a byte every 100 ms for a second (past the
    // route's timeout, each pause under the idle timeout), and then send nothing more. The
    // pace is the scenario's, not a wait for an event.
    let mut stalled = Vec::new();
    for _ in 0..5 {
        let mut s = TcpStream::connect(router.addr()).await.unwrap();
        s.write_all(
            b"POST /sink HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        stalled.push(s);
    }
    for _ in 0..10 {
        for s in &mut stalled {
            s.write_all(b"x").await.unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for s in &mut stalled {
        let text = answer(s).await;
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    }
    let ejections = metric(
        &router,
        &format!(
            "switchyard_ejections_total{{endpoint=\"{}\",target=\"legacy\"}}",
            setup.legacy.url()
        ),
    )
    .await;
    assert_eq!(
        ejections,
        Some(0.0),
        "a stalled client ejected the endpoint"
    );
    let (status, headers, _) = get(&client(), router.addr(), "/x", &[]).await;
    assert_eq!(status, http::StatusCode::OK);
    assert_eq!(headers["x-upstream"], "legacy");
    router.shutdown().await;
}

#[tokio::test]
async fn an_upstream_that_stops_taking_the_body_times_out() {
    // An upstream that accepts and then reads nothing: the body fills the socket buffers and
    // stops moving while the client still has plenty to send.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        loop {
            let (s, _) = listener.accept().await.unwrap();
            conns.push(s);
        }
    });
    let mut setup = Setup::new().await;
    setup.routes = format!(
        "[targets.deaf]\nendpoints = [\"http://{addr}\"]\n[[routes]]\nname = \"api\"\npath_prefix = \"/\"\ntarget = \"deaf\"\ntimeout_ms = 300\nidle_timeout_ms = 500\n"
    );
    let router = setup.start().await;
    let s = TcpStream::connect(router.addr()).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let size = 64 * 1024 * 1024;
    let writer = tokio::spawn(async move {
        let head = format!(
            "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
        );
        wr.write_all(head.as_bytes()).await.unwrap();
        let piece = vec![b'b'; 64 * 1024];
        for _ in 0..size / piece.len() {
            if wr.write_all(&piece).await.is_err() {
                return;
            }
        }
    });
    let mut out = Vec::new();
    tokio::time::timeout(EVENT_TIMEOUT, async {
        let mut buf = [0u8; 4096];
        while !out.windows(4).any(|w| w == b"\r\n\r\n") {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("an answer within the event timeout");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 504"), "{text}");
    writer.abort();
    held.abort();
    router.shutdown().await;
}

/// A router whose route idles out in 300 ms, with tenant `acme` pinned to an HTTP/1.1 upstream
/// (`legacy`) or, with `h2c`, to an h2c one (`new`); and that target's name.
async fn idle_in_300_ms(h2c: bool) -> (Setup, switchyard::Router, &'static str) {
    let mut setup = match h2c {
        true => Setup::with_h2c_new().await,
        false => Setup::new().await,
    };
    setup.routes =
        "[[routes]]\nname = \"api\"\npath_prefix = \"/\"\nidle_timeout_ms = 300\n".into();
    let router = setup.start().await;
    let target = if h2c { "new" } else { "legacy" };
    let version = setup.set("acme", pin(target));
    wait_version(&router, version).await;
    (setup, router, target)
}

/// An exchange idles only when neither direction moves. Over an HTTP/1.1 upstream and an h2c
/// one: a client that keeps its body open and silent while the answer streams (a
/// subscription that speaks when it has something to say) is not cut at the idle timeout.
#[tokio::test]
async fn a_silent_open_upload_beside_a_streaming_answer_is_not_cut() {
    for h2c in [false, true] {
        let (_setup, router, target) = idle_in_300_ms(h2c).await;
        let mut s = TcpStream::connect(router.addr()).await.unwrap();
        s.write_all(
            b"POST /ticks HTTP/1.1\r\nHost: a\r\nx-tenant-id: acme\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n",
        )
        .await
        .unwrap();
        // A tick every 10 ms: the hundredth comes three times the idle timeout after the
        // client's last byte.
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 4096];
        let got = tokio::time::timeout(EVENT_TIMEOUT, async {
            while !String::from_utf8_lossy(&seen).contains("tick 100\n") {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    return false;
                }
                seen.extend_from_slice(&buf[..n]);
            }
            true
        })
        .await
        .expect("ticks within the event timeout");
        let text = String::from_utf8_lossy(&seen);
        assert!(got, "{target}: the answer was cut: {text}");
        assert!(text.starts_with("HTTP/1.1 200"), "{target}: {text}");
        assert!(text.contains(&format!("x-upstream: {target}")), "{text}");
        router.shutdown().await;
    }
}

/// The other direction: an upstream that answers at once and sends its body only when the
/// whole upload is in is not cut while the client keeps sending, however long that takes.
#[tokio::test]
async fn a_silent_answer_beside_a_moving_upload_is_not_cut() {
    for h2c in [false, true] {
        let (_setup, router, target) = idle_in_300_ms(h2c).await;
        let mut s = TcpStream::connect(router.addr()).await.unwrap();
        s.write_all(
            b"POST /tally HTTP/1.1\r\nHost: a\r\nx-tenant-id: acme\r\nContent-Length: 15000\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        // Fifteen pieces, 100 ms apart: 1.5 s in all, five times the idle timeout, each pause
        // under it. The pace is the scenario's, not a wait for an event.
        let piece = vec![b'u'; 1000];
        for _ in 0..15 {
            s.write_all(&piece).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let text = answer(&mut s).await;
        assert!(text.starts_with("HTTP/1.1 200"), "{target}: {text}");
        assert!(
            text.contains("15000 bytes") && text.ends_with("0\r\n\r\n"),
            "{target}: the answer was cut: {text}"
        );
        router.shutdown().await;
    }
}

/// When neither direction moves, the exchange is idle: a client that stops half-way through
/// its body, to an upstream that answered at once and waits for the rest, is cut at the idle
/// timeout, its answer's body left unended.
#[tokio::test]
async fn an_exchange_where_neither_side_moves_is_cut() {
    let (_setup, router, _) = idle_in_300_ms(false).await;
    let mut s = TcpStream::connect(router.addr()).await.unwrap();
    s.write_all(
        b"POST /tally HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    s.write_all(&[b'u'; 1000]).await.unwrap();
    let text = answer(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        !text.contains("bytes") && !text.ends_with("0\r\n\r\n"),
        "the idle exchange was answered whole: {text}"
    );
    router.shutdown().await;
}

/// An upstream that accepts connections, reads whatever comes and never answers; reports
/// each connection's end (the router closed it) on the channel.
async fn silent_upstream() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed, ends) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let closed = closed.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                let _ = closed.send(());
            });
        }
    });
    (addr, ends)
}

#[tokio::test]
async fn a_trickled_upload_gets_408_at_the_routes_pace_and_frees_its_upstream_connection() {
    let (upstream, mut ends) = silent_upstream().await;
    let mut setup = Setup::new().await;
    setup.route_raw(upstream);
    setup.routes = setup.routes.replace(
        "target = \"raw\"\n",
        "target = \"raw\"\nupload_timeout_ms = 500\nmin_upload_bytes_per_s = 100\nidle_timeout_ms = 10000\ntimeout_ms = 30000\n",
    );
    let router = setup.start().await;
    let mut s = TcpStream::connect(router.addr()).await.unwrap();
    s.write_all(
        b"POST /raw/upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    // A byte every 50 ms (20 a second, under the route's 100): no pause near the idle
    // timeout. The pace is the scenario's, not a wait for an event.
    let (mut read, mut write) = s.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..400 {
            if write.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    });
    let mut out = Vec::new();
    tokio::time::timeout(EVENT_TIMEOUT, read.read_to_end(&mut out))
        .await
        .expect("answered before the trickle ends")
        .unwrap();
    trickle.abort();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("min_upload_bytes_per_s"), "{text}");
    tokio::time::timeout(EVENT_TIMEOUT, ends.recv())
        .await
        .expect("the upstream connection is closed");
    router.shutdown().await;
}

#[tokio::test]
async fn one_address_has_at_most_its_cap_of_uploads_at_once() {
    let mut setup = Setup::new().await;
    setup.extra = "max_uploads_per_address = 2\n".into();
    let router = setup.start().await;
    let head = b"POST /sink HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nConnection: close\r\n\r\n";
    let addr = router.addr();
    let from = |ip: [u8; 4]| connect_from(ip, addr);
    let mut going = Vec::new();
    for _ in 0..2 {
        let mut s = from([127, 0, 0, 1]).await;
        s.write_all(head).await.unwrap();
        s.write_all(b"12345").await.unwrap();
        going.push(s);
    }
    wait_for("both uploads to reach the upstream", || {
        setup.legacy.seen.total() == 2
    })
    .await;
    let mut third = from([127, 0, 0, 1]).await;
    third.write_all(head).await.unwrap();
    let text = answer(&mut third).await;
    assert!(text.starts_with("HTTP/1.1 429"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("retry-after: 1"),
        "{text}"
    );
    assert!(text.contains("max_uploads_per_address"), "{text}");
    assert_eq!(setup.legacy.seen.total(), 2, "the third never reached it");

    // Another address is not held to the first one's uploads.
    let mut other = from([127, 0, 0, 2]).await;
    other.write_all(head).await.unwrap();
    other.write_all(b"1234567890").await.unwrap();
    assert!(answer(&mut other).await.starts_with("HTTP/1.1 200"));
    // An upload that ends makes room for the next.
    going[0].write_all(b"67890").await.unwrap();
    assert!(answer(&mut going[0]).await.starts_with("HTTP/1.1 200"));
    let mut next = from([127, 0, 0, 1]).await;
    next.write_all(head).await.unwrap();
    next.write_all(b"1234567890").await.unwrap();
    assert!(answer(&mut next).await.starts_with("HTTP/1.1 200"));
    drop(going);
    router.shutdown().await;
}
