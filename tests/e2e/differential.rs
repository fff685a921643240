//! The router's HTTP/1.1 server, checked against hyper's: the same raw bytes go to the router
//! (whose upstream records what reaches it) and straight to hyper's server (whose service
//! records what it was handed). Both must accept or refuse alike and, when they accept, hand
//! on the same requests: method, target, end-to-end headers and body bytes. Where the router
//! is stricter on purpose, the case says why; no case may find it more lenient.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::support::*;

/// One request as a server handed it on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Received {
    method: String,
    target: String,
    /// End-to-end headers, lower-case names, in order.
    headers: Vec<(String, String)>,
    /// The body, or `None` when it could not be read whole.
    body: Option<Vec<u8>>,
}

/// What a proxy changes on purpose, or what depends on framing: left out of the comparison.
const NOT_COMPARED: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
    "connection",
    "keep-alive",
    "te",
    "transfer-encoding",
    "content-length",
    "upgrade",
    "http2-settings",
    "expect",
    "proxy-connection",
    "proxy-authorization",
    "trailer",
];

#[derive(Default)]
struct Recorder {
    heads: Mutex<usize>,
    seen: Mutex<Vec<Received>>,
    arrived: Notify,
}

impl Recorder {
    fn heads(&self) -> usize {
        *self.heads.lock().unwrap()
    }

    /// The requests handed on whole since the last take, and how many heads came.
    fn take(&self) -> (Vec<Received>, usize) {
        let heads = std::mem::take(&mut *self.heads.lock().unwrap());
        let mut seen = std::mem::take(&mut *self.seen.lock().unwrap());
        seen.retain(|r| r.body.is_some());
        (seen, heads)
    }
}

async fn record(
    recorder: Arc<Recorder>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    *recorder.heads.lock().unwrap() += 1;
    recorder.arrived.notify_waiters();
    let (parts, body) = req.into_parts();
    let body = body.collect().await.ok().map(|b| b.to_bytes().to_vec());
    let target = match parts.uri.path_and_query().map(|pq| pq.as_str()) {
        Some(pq) if pq.starts_with('/') => pq.to_owned(),
        Some(pq) => format!("/{pq}"),
        None => parts.uri.to_string(),
    };
    let headers = (parts.headers.iter())
        .filter(|(name, _)| !NOT_COMPARED.contains(&name.as_str()))
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    recorder.seen.lock().unwrap().push(Received {
        method: parts.method.to_string(),
        target,
        headers,
        body,
    });
    Ok(Response::new(Full::from("ok")))
}

/// hyper's HTTP/1 server with its default settings, serving a recorder.
async fn hyper_server(recorder: Arc<Recorder>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let recorder = recorder.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| record(recorder.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// What one side did with the bytes: the requests it handed on whole (a request whose body
/// broke off is not one an application acts on), the request heads it handed on, and the
/// statuses it sent.
#[derive(Debug)]
struct Outcome {
    seen: Vec<Received>,
    heads: usize,
    statuses: Vec<u16>,
    /// Neither closed the connection (nor, when asked, handed on a head) within the timeout.
    hung: bool,
}

/// Sends `bytes` on a new connection and reads until the server closes it. With
/// `until_handed_on`, stops as soon as the server has handed on a request head (for a case
/// the other side refuses, hyper may then wait for a body that never comes).
async fn exchange(
    addr: SocketAddr,
    bytes: &[u8],
    recorder: &Recorder,
    until_handed_on: bool,
) -> Outcome {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let hung = tokio::time::timeout(EVENT_TIMEOUT, async {
        loop {
            let arrived = recorder.arrived.notified();
            if until_handed_on && recorder.heads() > 0 {
                break;
            }
            let mut more = [0u8; 8192];
            tokio::select! {
                read = s.read(&mut more) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&more[..n]),
                },
                () = arrived, if until_handed_on => {}
            }
        }
    })
    .await
    .is_err();
    if until_handed_on {
        // Whatever it handed on, it had the whole head; its body may never come.
        drop(s);
    }
    let text = String::from_utf8_lossy(&out);
    let statuses = (text.match_indices("HTTP/1."))
        .filter(|(i, _)| *i == 0 || text[..*i].ends_with('\n'))
        .filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok())
        .collect();
    let (seen, heads) = recorder.take();
    Outcome {
        seen,
        heads,
        statuses,
        hung,
    }
}

/// How the router's handling of a case compares with hyper's.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Both hand on the same requests whole, or refuse alike.
    Same,
    /// The router refuses a request hyper hands on whole, for this reason.
    Stricter(&'static str),
    /// The router refuses a head hyper hands on (hyper then waits for a body that does not
    /// come), for this reason.
    StricterHead(&'static str),
    /// The router hands on the same requests without the header fields whose name has an
    /// underscore, for this reason.
    DropsUnderscored(&'static str),
}

impl Expect {
    fn reason(self) -> Option<&'static str> {
        match self {
            Same => None,
            Stricter(why) | StricterHead(why) | DropsUnderscored(why) => Some(why),
        }
    }
}

use Expect::{DropsUnderscored, Same, Stricter, StricterHead};

/// `seen` without the header fields whose name has an underscore.
fn without_underscored(seen: &[Received]) -> Vec<Received> {
    let mut seen = seen.to_vec();
    for r in &mut seen {
        r.headers.retain(|(name, _)| !name.contains('_'));
    }
    seen
}

const UNDERSCORE_READS_AS_DASH: &str =
    "some backends read X_Tenant_Id as X-Tenant-Id, so the field would mean two things";
const LF_HIDES_A_HEADER: &str = "a lone LF ends a line for some servers only (request smuggling)";
const TE_CHANGES_MEANING: &str =
    "a coding other than chunked would be forwarded with a changed meaning (501)";
const AMBIGUOUS_LENGTH: &str = "the body's length reads two ways";
const HOST_RULES: &str = "the host decides the tenant: exactly one, a plain host[:port]";
const TENANT_TWICE: &str = "a tenant field twice lets the next hop act for another tenant";
const PATH_RULES: &str = "a path that reads two ways could mean another route upstream";
const CHUNK_LINE: &str = "a chunk-size line is hex and well-formed extensions only";
const HEAD_LIMIT: &str = "the configured max_header_bytes (64 KiB) is the limit";

fn cases() -> Vec<(String, Expect)> {
    let mut cases: Vec<(String, Expect)> = Vec::new();
    let mut add = |text: String, expect: Expect| cases.push((text, expect));
    let get =
        |extra: &str| format!("GET / HTTP/1.1\r\nHost: a\r\n{extra}Connection: close\r\n\r\n");
    let post = |framing: &str, body: &str| {
        format!("POST /p HTTP/1.1\r\nHost: a\r\n{framing}Connection: close\r\n\r\n{body}")
    };

    // Requests every server should take, and hand on whole.
    add(get(""), Same);
    add(
        "\r\nGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".into(),
        Same,
    );
    add(
        "GET /a/b?q=1&r=%20 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".into(),
        Same,
    );
    add(get("X-Many: 1\r\nx-many: 2\r\nX-Other: v\r\n"), Same);
    add(get("X-Tab: a\tb\r\n"), Same);
    add(get("X-Obs: caf\u{e9}\r\n"), Same);
    add(get("X-Empty:\r\n"), Same);
    add(get("X-Spaces:    v   \r\n"), Same);
    add(
        get("X_Underscore: 1\r\n"),
        DropsUnderscored(UNDERSCORE_READS_AS_DASH),
    );
    add(
        get("X-Tenant-Id: acme\r\nX_Tenant_Id: evil\r\n"),
        DropsUnderscored(UNDERSCORE_READS_AS_DASH),
    );
    add(get(&format!("X-Long: {}\r\n", "v".repeat(8000))), Same);
    add(
        get(&(0..90)
            .map(|i| format!("X-H{i}: {i}\r\n"))
            .collect::<String>()),
        Same,
    );
    add(
        "GET /p HTTP/1.1\r\nHost: a:8080\r\nConnection: close\r\n\r\n".into(),
        Same,
    );
    add(
        "HEAD / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".into(),
        Same,
    );
    add(
        "OPTIONS /o HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".into(),
        Same,
    );
    add(
        "get /lower HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".into(),
        Same,
    );
    add(
        "PURGE /custom HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".into(),
        Same,
    );
    add(get("TE: trailers\r\n"), Same);
    add(get("Connection: keep-alive\r\n"), Same);
    add(get("X-Forwarded-For: 203.0.113.1\r\n"), Same);
    add(
        format!(
            "GET /{} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            "u".repeat(10_000)
        ),
        Same,
    );
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        add(
            format!(
                "{method} /m HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
            ),
            Same,
        );
    }
    add(post("Content-Length: 0\r\n", ""), Same);
    add(post("Content-Length: 005\r\n", "hello"), Same);
    add(post("Content-Length:   5  \r\n", "hello"), Same);
    add(
        post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
        Same,
    );
    add(
        post(
            &format!("Content-Length: {}\r\n", 100_000),
            &"b".repeat(100_000),
        ),
        Same,
    );
    add(
        post("Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
        Same,
    );
    add(
        post("Transfer-Encoding: Chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
        Same,
    );
    add(post("Transfer-Encoding: chunked\r\n", "0\r\n\r\n"), Same);
    add(
        post(
            "Transfer-Encoding: chunked\r\n",
            "5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n",
        ),
        Same,
    );
    add(
        post(
            "Transfer-Encoding: chunked\r\n",
            "A\r\n0123456789\r\n0\r\n\r\n",
        ),
        Same,
    );
    add(
        post(
            "Transfer-Encoding: chunked\r\n",
            "a\r\n0123456789\r\n0\r\n\r\n",
        ),
        Same,
    );
    add(
        post(
            "Transfer-Encoding: chunked\r\n",
            "0005\r\nhello\r\n0\r\n\r\n",
        ),
        Same,
    );
    add(
        post(
            "Transfer-Encoding: chunked\r\n",
            "5;a=b\r\nhello\r\n0\r\n\r\n",
        ),
        Same,
    );
    add(
        post(
            "Transfer-Encoding: chunked\r\n",
            "5;a=\"q s\"\r\nhello\r\n0;z\r\n\r\n",
        ),
        Same,
    );
    add(
        post(
            "Transfer-Encoding: chunked\r\n",
            "5;a;b=c\r\nhello\r\n0\r\n\r\n",
        ),
        Same,
    );
    add(
        post(
            "Transfer-Encoding: chunked\r\nTE: trailers\r\n",
            "5\r\nhello\r\n0\r\nx-sum: 1\r\n\r\n",
        ),
        Same,
    );
    let many: String = (0..200)
        .map(|_| "100\r\n".to_owned() + &"c".repeat(256) + "\r\n")
        .collect();
    add(
        post("Transfer-Encoding: chunked\r\n", &(many + "0\r\n\r\n")),
        Same,
    );
    add(
        "POST /p HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".into(),
        Same,
    );
    add("GET /old HTTP/1.0\r\nHost: a\r\n\r\n".into(), Same);
    add(
        "POST /old HTTP/1.0\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc".into(),
        Same,
    );
    add(
        "GET http://a/abs?x=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".into(),
        Same,
    );
    add(
        "GET http://a?x=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".into(),
        Same,
    );
    // Pipelined requests: each handed on in order.
    add(
        "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
            .into(),
        Same,
    );
    add(
        "POST /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".into(),
        Same,
    );
    add(
        "POST /1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".into(),
        Same,
    );
    // An upgrade nobody grants: the request goes on as an ordinary one.
    add(
        get("Connection: Upgrade\r\nUpgrade: websocket, h2c\r\n"),
        Same,
    );
    add(
        get("Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n"),
        Same,
    );

    // Heads both refuse.
    for bad in [
        "GET / HTTP/1.1\r\nHost : a\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX(: a\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX: a\u{1}b\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n: empty-name\r\nConnection: close\r\n\r\n",
        "G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.2\r\nHost: a\r\n\r\n",
        "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
        "GET / FTP/1.1\r\nHost: a\r\n\r\n",
        "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
        "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
        "GARBAGE\r\n\r\n",
    ] {
        add(bad.into(), Same);
    }
    for length in ["abc", "-1", "+5", "5 5", "0x5", "5.0"] {
        add(
            post(&format!("Content-Length: {length}\r\n"), "hello"),
            Same,
        );
    }
    add(
        post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
        Same,
    );
    add(post("Content-Length: 5, 6\r\n", "hello!"), Same);
    add(post("Content-Length: 5, 5\r\n", "hello"), Same);
    add(post("Transfer-Encoding: identity\r\n", "hello"), Same);
    add(
        post("Transfer-Encoding: chunked\r\n", "zz\r\nhello\r\n0\r\n\r\n"),
        Same,
    );
    add(
        post("Transfer-Encoding: chunked\r\n", "5\r\nhello!\r\n0\r\n\r\n"),
        Same,
    );
    add(
        post("Transfer-Encoding: chunked\r\n", "5\r\nhelloXX0\r\n\r\n"),
        Same,
    );
    add(
        post("Transfer-Encoding: chunked\r\n", "12345678901234567\r\n"),
        Same,
    );
    add(
        post("Transfer-Encoding: chunked\r\n", "-5\r\nhello\r\n0\r\n\r\n"),
        Same,
    );
    add(
        format!(
            "GET / HTTP/1.1\r\nHost: a\r\n{}Connection: close\r\n\r\n",
            (0..101)
                .map(|i| format!("X-{i}: v\r\n"))
                .collect::<String>()
        ),
        Same,
    );
    // A request handed on, then garbage where the next one should start.
    add(
        "POST /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcXYZ\r\n\r\n".into(),
        Same,
    );

    // Where the router is stricter on purpose.
    add(
        "GET / HTTP/1.1\r\nHost: a\r\nDummy: x\nContent-Length: 23\r\n\r\nGET / HTTP/1.1\r\nDummy: GET /admin HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".into(),
        Stricter(LF_HIDES_A_HEADER),
    );
    add(
        "GET / HTTP/1.1\nHost: a\nConnection: close\n\n".into(),
        Stricter(LF_HIDES_A_HEADER),
    );
    add(
        "GET / HTTP/1.1\r\nHost: a\nConnection: close\r\n\r\n".into(),
        Stricter(LF_HIDES_A_HEADER),
    );
    add(
        "GET /old HTTP/1.0\nHost: a\n\n".into(),
        Stricter(LF_HIDES_A_HEADER),
    );
    for coding in ["gzip, chunked", "deflate, chunked", "identity, chunked"] {
        add(
            post(
                &format!("Transfer-Encoding: {coding}\r\n"),
                "5\r\nhello\r\n0\r\n\r\n",
            ),
            Stricter(TE_CHANGES_MEANING),
        );
    }
    add(
        post(
            "Transfer-Encoding: chunked, chunked\r\n",
            "5\r\nhello\r\n0\r\n\r\n",
        ),
        Stricter(AMBIGUOUS_LENGTH),
    );
    add(
        post(
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "5\r\nhello\r\n0\r\n\r\n",
        ),
        Stricter(AMBIGUOUS_LENGTH),
    );
    add(
        post(
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "5\r\nhello\r\n0\r\n\r\n",
        ),
        Stricter(AMBIGUOUS_LENGTH),
    );
    add(
        post("Content-Length: 18446744073709551613\r\n", "hello"),
        StricterHead(AMBIGUOUS_LENGTH),
    );
    add(
        post("Content-Length: 9223372036854775808\r\n", "hello"),
        StricterHead(AMBIGUOUS_LENGTH),
    );
    add(
        post(
            "Transfer-Encoding: chunked\r\n",
            "5\r\r;ABCD\r\n34\r\nE\r\n0\r\n\r\n",
        ),
        Same,
    );
    add(
        post(
            "Transfer-Encoding: chunked\r\n",
            "5;a=\"open\r\nhello\r\n0\r\n\r\n",
        ),
        Stricter(CHUNK_LINE),
    );
    add(
        post(
            "Transfer-Encoding: chunked\r\n",
            "5 junk\r\nhello\r\n0\r\n\r\n",
        ),
        Same,
    );
    add(
        post(
            "Transfer-Encoding: chunked\r\n",
            "ffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        ),
        StricterHead(CHUNK_LINE),
    );
    add(
        "GET / HTTP/1.1\r\nConnection: close\r\n\r\n".into(),
        Stricter(HOST_RULES),
    );
    add(get("Host: b\r\n"), Stricter(HOST_RULES));
    for host in ["", "u@a", "a/b", "a, b", "a b", "a:x"] {
        add(
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
            Stricter(HOST_RULES),
        );
    }
    add(
        "GET http://b/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".into(),
        Stricter(HOST_RULES),
    );
    add(
        get("X-Tenant-Id: acme\r\nX-Tenant-Id: beta\r\n"),
        Stricter(TENANT_TWICE),
    );
    for path in [
        "/a/../b",
        "/a/./b",
        "/a/%2e%2e/b",
        "/a%2fb",
        "/x/..;/y",
        "/a%5cb",
        "/a%zz",
    ] {
        add(
            format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
            Stricter(PATH_RULES),
        );
    }
    add(
        get(&format!("X-Big: {}\r\n", "b".repeat(70_000))),
        Stricter(HEAD_LIMIT),
    );
    cases
}

#[tokio::test]
async fn the_own_server_agrees_with_hypers_or_is_stricter_on_purpose() {
    let direct = Arc::new(Recorder::default());
    let hyper_addr = hyper_server(direct.clone()).await;
    let behind = Arc::new(Recorder::default());
    let upstream_addr = hyper_server(behind.clone()).await;
    let mut setup = Setup::new().await;
    setup.routes = format!(
        "[targets.recorder]\nendpoints = [\"http://{upstream_addr}\"]\n[[routes]]\nname = \"all\"\npath_prefix = \"/\"\ntarget = \"recorder\"\n"
    );
    let router = setup.start().await;

    let cases = cases();
    assert!(cases.len() >= 100, "{} cases", cases.len());
    let mut failures = Vec::new();
    for (text, expect) in &cases {
        let head_only = matches!(expect, StricterHead(_));
        let mine = exchange(router.addr(), text.as_bytes(), &behind, false).await;
        let theirs = exchange(hyper_addr, text.as_bytes(), &direct, head_only).await;
        let agreed = !mine.hung
            && !theirs.hung
            && match expect {
                Same => mine.seen == theirs.seen,
                Stricter(_) => {
                    theirs.seen.len() > mine.seen.len() && theirs.seen.starts_with(&mine.seen)
                }
                StricterHead(_) => mine.seen.is_empty() && theirs.heads > 0,
                DropsUnderscored(_) => {
                    mine.seen == without_underscored(&theirs.seen) && mine.seen != theirs.seen
                }
            };
        if !agreed {
            failures.push(format!(
                "{expect:?} {text:?}\n  router: {:?}{} handed on {:?}\n  hyper:  {:?}{} handed on {:?} ({} heads)",
                mine.statuses,
                if mine.hung { " hung" } else { "" },
                mine.seen,
                theirs.statuses,
                if theirs.hung { " hung" } else { "" },
                theirs.seen,
                theirs.heads,
            ));
        }
    }
    let stricter = cases.iter().filter_map(|(_, e)| e.reason()).count();
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!(
        "{} cases: {} alike, {stricter} stricter on purpose",
        cases.len(),
        cases.len() - stricter
    );
    router.shutdown().await;
}

/// An upstream over raw sockets that answers every request with the bytes in `answer`, then
/// closes the connection.
async fn canned_upstream(answer: Arc<Mutex<Vec<u8>>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let answer = answer.lock().unwrap().clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let mut more = [0u8; 4096];
                    match s.read(&mut more).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&more[..n]),
                    }
                }
                let _ = s.write_all(&answer).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// What a client got: the whole answer, or nothing it could use (a refusal by the client
/// library or the proxy, or a body that broke off).
#[derive(Debug, PartialEq, Eq)]
enum Delivered {
    Whole(u16, Vec<u8>),
    Not,
}

async fn delivered(
    response: Result<Response<Incoming>, hyper_util::client::legacy::Error>,
) -> Delivered {
    let Ok(response) = response else {
        return Delivered::Not;
    };
    let status = response.status().as_u16();
    match response.into_body().collect().await {
        Ok(body) => Delivered::Whole(status, body.to_bytes().to_vec()),
        Err(_) => Delivered::Not,
    }
}

#[tokio::test]
async fn the_own_upstream_client_agrees_with_hypers_on_malformed_responses() {
    let answer = Arc::new(Mutex::new(Vec::new()));
    let upstream = canned_upstream(answer.clone()).await;
    let mut setup = Setup::new().await;
    setup.routes = format!(
        "[targets.canned]\nendpoints = [\"http://{upstream}\"]\n[[routes]]\nname = \"all\"\npath_prefix = \"/\"\ntarget = \"canned\"\n"
    );
    let router = setup.start().await;
    let ok = |head: &str, body: &str| format!("HTTP/1.1 200 OK\r\n{head}\r\n{body}");
    let big_head = format!("x-big: {}\r\n", "h".repeat(70_000));
    let cases: Vec<(String, Expect)> = vec![
        (ok("content-length: 5\r\n", "hello"), Same),
        (
            ok("transfer-encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            Same,
        ),
        (
            ok(
                "transfer-encoding: chunked\r\n",
                "5;a=\"b\"\r\nhello\r\n0\r\nx-t: 1\r\n\r\n",
            ),
            Same,
        ),
        (ok("", "until the close"), Same),
        (ok("transfer-encoding: gzip\r\n", "until the close"), Same),
        ("HTTP/1.1 204 No Content\r\n\r\n".into(), Same),
        (
            "HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n".into(),
            Same,
        ),
        (
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".into(),
            Same,
        ),
        ("HTTP/1.1 200 OK\ncontent-length: 2\n\nok".into(), Same),
        (
            ok("content-length: 5\r\ncontent-length: 5\r\n", "hello"),
            Same,
        ),
        (
            ok(
                "content-length: 5\r\ntransfer-encoding: chunked\r\n",
                "5\r\nhello\r\n0\r\n\r\n",
            ),
            Same,
        ),
        // Malformed: neither delivers it.
        (
            ok("content-length: 5\r\ncontent-length: 6\r\n", "hello!"),
            Same,
        ),
        (ok("content-length: 5, 6\r\n", "hello!"), Same),
        (ok("content-length: abc\r\n", "hello"), Same),
        (ok("content-length: 10\r\n", "short"), Same),
        (
            ok("transfer-encoding: chunked\r\n", "zz\r\nhello\r\n0\r\n\r\n"),
            Same,
        ),
        (
            ok(
                "transfer-encoding: chunked\r\n",
                "5\r\r;x\r\nhello\r\n0\r\n\r\n",
            ),
            Same,
        ),
        (
            ok("transfer-encoding: chunked\r\n", "5\r\nhello!\r\n0\r\n\r\n"),
            Same,
        ),
        (ok("transfer-encoding: chunked\r\n", "5\r\nhello\r\n"), Same),
        (
            ok(
                "transfer-encoding: chunked\r\n",
                "ffffffffffffffff\r\nhello",
            ),
            Same,
        ),
        ("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n".into(), Same),
        ("".into(), Same),
        ("garbage\r\n\r\n".into(), Same),
        ("HTTP/1.1 2000 OK\r\ncontent-length: 0\r\n\r\n".into(), Same),
        (ok("bad header: x\r\n", ""), Same),
        // Stricter on purpose.
        (
            ok(&big_head, ""),
            Stricter("a response head over 64 KiB is refused, whole or not"),
        ),
        (
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n"
                .into(),
            Stricter("a 101 to a request that asked for no upgrade opens nothing"),
        ),
    ];
    let mut failures = Vec::new();
    for (text, expect) in &cases {
        *answer.lock().unwrap() = text.clone().into_bytes();
        let get = |addr: SocketAddr| {
            Request::get(format!("http://{addr}/x"))
                .body(Full::<Bytes>::default())
                .unwrap()
        };
        let mine = delivered(client().request(get(router.addr())).await).await;
        // What the router itself answers (its 502) is not the upstream's answer delivered.
        let mine = match mine {
            Delivered::Whole(502, body) if body.starts_with(b"switchyard: ") => Delivered::Not,
            other => other,
        };
        let theirs = delivered(client().request(get(upstream)).await).await;
        let agreed = match expect {
            Same => mine == theirs,
            Stricter(_) | StricterHead(_) => mine == Delivered::Not && theirs != Delivered::Not,
            DropsUnderscored(_) => unreachable!("only requests lose underscored fields"),
        };
        if !agreed {
            failures.push(format!(
                "{expect:?} {:?}\n  router: {mine:?}\n  hyper:  {theirs:?}",
                &text[..text.len().min(200)]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    router.shutdown().await;
}
