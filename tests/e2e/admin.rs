//! The admin API's edges: routing (404 and 405 that say what is served), the write's gate
//! (403 while writes are disabled, 401 without the token), and its body's limits in size and
//! time, each answered before anything is written. The writes themselves are in `dynamo.rs`
//! and `shadow.rs`.

use http::{Method, StatusCode, header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

async fn with_token() -> (Setup, switchyard::Router) {
    let mut setup = Setup::new().await;
    std::fs::write(setup.dir.path().join("admin.token"), TOKEN).unwrap();
    setup.extra = "admin_token_file = \"admin.token\"".into();
    let router = setup.start().await;
    (setup, router)
}

#[tokio::test]
async fn unknown_paths_and_methods_are_answered_with_what_is_served() {
    let setup = Setup::new().await;
    let router = setup.start().await;
    let (status, body) = admin_get(&router, "/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body.starts_with("not found; try /ui (the console), /metrics"),
        "{body}"
    );
    let (status, h, body) = admin_request(&router, Method::POST, "/metrics", &[], "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(body.contains("only GET is served here"), "{body}");
    assert!(h[header::ALLOW].to_str().unwrap().contains("GET"), "{h:?}");
    // HEAD is served wherever GET is, without a body.
    let (status, _, body) = admin_request(&router, Method::HEAD, "/readyz", &[], "").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
    // A tenant in the path is percent-decoded.
    let (status, body) = admin_get(&router, "/flags/%61cme").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        body.contains(r#"tenant \"acme\" has no flag of its own"#),
        "{body}"
    );
    router.shutdown().await;
}

#[tokio::test]
async fn writes_are_refused_while_disabled_and_without_the_token() {
    let setup = Setup::new().await;
    let router = setup.start().await;
    let write = r#"{"target":"new","reason":"r"}"#;
    let (status, _, body) = admin_request(
        &router,
        Method::PUT,
        "/flags/acme",
        &[("if-match", "0")],
        write,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("admin_token_file"), "{body}");
    router.shutdown().await;

    let (setup, router) = with_token().await;
    let (status, _, _) = admin_request(
        &router,
        Method::PUT,
        "/flags/acme",
        &[("if-match", "0"), ("authorization", "Bearer wrong")],
        write,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        setup.store().load().unwrap().items.len() == 1,
        "nothing written"
    );
    router.shutdown().await;
}

/// Sends a PUT head with `headers` and then `body` raw, and reads the answer's status line
/// and body.
async fn raw_put(router: &switchyard::Router, headers: &str, body: &[u8]) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(router.admin_addr())
        .await
        .unwrap();
    let head = format!(
        "PUT /flags/acme HTTP/1.1\r\nhost: admin\r\nauthorization: Bearer {TOKEN}\r\nif-match: 0\r\n{headers}\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let _ = s.write_all(body).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(EVENT_TIMEOUT, s.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.lines().next().unwrap_or("").to_owned();
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

#[tokio::test]
async fn a_write_body_over_the_limit_or_too_slow_is_refused_and_nothing_is_written() {
    let (setup, router) = with_token().await;
    let big = vec![b' '; 70 * 1024];
    // Declared too large: refused before it is read.
    let (status, _) = raw_put(
        &router,
        &format!("content-length: {}\r\nconnection: close\r\n", big.len()),
        &big,
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    // Streamed past the limit in chunks: refused once it is.
    let mut chunked = Vec::new();
    for piece in big.chunks(8192) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (status, body) = raw_put(
        &router,
        "transfer-encoding: chunked\r\nconnection: close\r\n",
        &chunked,
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    assert!(body.contains("over 65536 bytes"), "{body}");
    // A body that stops arriving: 408 after the body timeout.
    let (status, body) = raw_put(
        &router,
        "content-length: 40\r\nconnection: close\r\n",
        br#"{"target":"new","#,
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 408"), "{status}");
    assert!(body.contains("did not arrive within"), "{body}");
    assert_eq!(
        setup.store().load().unwrap().items.len(),
        1,
        "nothing written"
    );
    router.shutdown().await;
}
