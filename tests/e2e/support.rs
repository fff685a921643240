//! Test harness: in-process upstreams on 127.0.0.1:0 that record what reached them, a router
//! started in-process (or as the real binary) from a config written for them, an HTTP client,
//! and waits on events (snapshot versions, counters), never on guessed sleeps.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use flag_store::{FileStore, FlagWrite, Placing};
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard::{Config, Router};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// Generous bound on any wait for an event; reaching it fails the test.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

/// What reached one upstream.
#[derive(Default, Debug)]
pub struct Seen {
    pub total: AtomicU64,
    pub by_tenant: Mutex<HashMap<String, u64>>,
    pub last_headers: Mutex<Option<HeaderMap>>,
    /// Requests to `/hold` wait for this.
    pub release: Notify,
    pub holding: AtomicU64,
    /// Requests to `/flap`, which answers 200 and 503 in turn.
    pub flaps: AtomicU64,
}

impl Seen {
    pub fn tenant(&self, tenant: &str) -> u64 {
        self.by_tenant
            .lock()
            .unwrap()
            .get(tenant)
            .copied()
            .unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.total.load(Ordering::SeqCst)
    }

    /// The headers of the last request that reached this upstream.
    pub fn last_headers(&self) -> HeaderMap {
        self.last_headers
            .lock()
            .unwrap()
            .clone()
            .expect("no request reached this upstream")
    }
}

/// An upstream that answers with its own name. Paths with a meaning:
/// `/slow/MS` waits MS ms; `/hold` waits until released; `/sink` reads the body and answers
/// `BYTES HASH`; `/source/N` streams N bytes; `/ticks` streams a line every 10 ms, forever; `/ws` is a WebSocket echo; `/hop` answers with
/// hop-by-hop headers. Anything else: `NAME` in the body and `x-upstream: NAME`.
pub struct TestUpstream {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    name: &'static str,
    h2_only: bool,
    /// The accept loop and every connection: aborted by [`TestUpstream::stop`].
    tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

type TestBody = BoxBody<Bytes, std::io::Error>;

fn full(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

impl TestUpstream {
    pub async fn start(name: &'static str) -> TestUpstream {
        Self::start_with(name, false).await
    }

    pub async fn start_h2c(name: &'static str) -> TestUpstream {
        Self::start_with(name, true).await
    }

    async fn start_with(name: &'static str, h2_only: bool) -> TestUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = TestUpstream {
            addr: listener.local_addr().unwrap(),
            seen: Arc::new(Seen::default()),
            name,
            h2_only,
            tasks: Arc::default(),
        };
        upstream.serve(listener);
        upstream
    }

    fn serve(&self, listener: TcpListener) {
        let (name, h2_only, seen, tasks) = (
            self.name,
            self.h2_only,
            self.seen.clone(),
            self.tasks.clone(),
        );
        let accept_tasks = tasks.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let seen = seen.clone();
                let service = service_fn(move |req| handle(name, seen.clone(), req));
                let conn = tokio::spawn(async move {
                    let mut builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    if h2_only {
                        builder = builder.http2_only();
                    }
                    let _ = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
                accept_tasks.lock().unwrap().push(conn.abort_handle());
            }
        });
        tasks.lock().unwrap().push(accept.abort_handle());
    }

    /// Kills the upstream as a crash would: the port stops accepting and open connections are
    /// cut. Returns once a connect is refused.
    pub async fn stop(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        while tokio::net::TcpStream::connect(self.addr).await.is_ok() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} still accepts after stop",
                self.name
            );
            tokio::task::yield_now().await;
        }
    }

    /// Starts it again on the same address.
    pub async fn restart(&self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn handle(
    name: &'static str,
    seen: Arc<Seen>,
    mut req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    seen.total.fetch_add(1, Ordering::SeqCst);
    if let Some(t) = req
        .headers()
        .get("x-tenant-id")
        .and_then(|v| v.to_str().ok())
    {
        *seen
            .by_tenant
            .lock()
            .unwrap()
            .entry(t.to_owned())
            .or_default() += 1;
    }
    *seen.last_headers.lock().unwrap() = Some(req.headers().clone());
    let path = req.uri().path().to_owned();
    let mut resp = if let Some(ms) = path.strip_prefix("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
        Response::new(full(name))
    } else if path == "/flap" {
        let n = seen.flaps.fetch_add(1, Ordering::SeqCst);
        let mut resp = Response::new(full(name));
        if n % 2 == 1 {
            *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        }
        resp
    } else if path == "/hold" {
        let released = seen.release.notified();
        seen.holding.fetch_add(1, Ordering::SeqCst);
        released.await;
        Response::new(full(name))
    } else if path == "/refuse" {
        // Answers at once, without reading the body the client is still sending.
        let mut resp = Response::new(full("refused"));
        *resp.status_mut() = StatusCode::UNAUTHORIZED;
        resp
    } else if path == "/echo" {
        // Streams the body back as it arrives: the answer starts before the request ends.
        Response::new(req.into_body().map_err(std::io::Error::other).boxed())
    } else if path == "/sink" {
        let mut body = req.into_body();
        let (mut bytes, mut hash) = (0u64, 0xcbf2_9ce4_8422_2325u64);
        while let Some(frame) = body.frame().await {
            // A body the router cut off (its client stalled) ends the request here.
            let Ok(frame) = frame else {
                return Ok(Response::new(full("cut off")));
            };
            if let Ok(data) = frame.into_data() {
                bytes += data.len() as u64;
                hash = fnv(hash, &data);
            }
        }
        Response::new(full(format!("{bytes} {hash:x}")))
    } else if path == "/tally" {
        // Answers at once, and sends its body only once the request's has ended: how many
        // bytes came.
        let body = req.into_body();
        let tally = futures_util::stream::once(async move {
            let bytes = body.collect().await.map_or(0, |b| b.to_bytes().len());
            Ok::<_, std::io::Error>(Frame::data(Bytes::from(format!("{bytes} bytes"))))
        });
        Response::new(BodyExt::boxed(StreamBody::new(tally)))
    } else if let Some(n) = path.strip_prefix("/source/") {
        let n: u64 = n.parse().unwrap();
        let chunk = Bytes::from(pattern(64 * 1024));
        let chunks =
            futures_util::stream::iter((0..n.div_ceil(chunk.len() as u64)).map(move |i| {
                let len = (n - i * chunk.len() as u64).min(chunk.len() as u64) as usize;
                Ok::<_, std::io::Error>(Frame::data(chunk.slice(..len)))
            }));
        Response::new(BodyExt::boxed(StreamBody::new(chunks)))
    } else if path == "/ticks" {
        // A stream that never ends on its own (server-sent events, a long poll): a line
        // every 10 ms until the client goes away.
        let ticks = futures_util::stream::unfold(0u64, |i| async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Some((
                Ok::<_, std::io::Error>(Frame::data(Bytes::from(format!("tick {i}\n")))),
                i + 1,
            ))
        });
        Response::new(BodyExt::boxed(StreamBody::new(ticks)))
    } else if path == "/ws" {
        let key = req
            .headers()
            .get("sec-websocket-key")
            .unwrap()
            .as_bytes()
            .to_vec();
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let io = TokioIo::new(upgrade.await.unwrap());
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                io,
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await;
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_text() || msg.is_binary() {
                    ws.send(msg).await.unwrap();
                } else if msg.is_close() {
                    break;
                }
            }
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header(
                "sec-websocket-accept",
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key),
            )
            .body(full(""))
            .unwrap()
    } else if path == "/hop" {
        Response::builder()
            .header("connection", "x-up-secret")
            .header("x-up-secret", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-authenticate", "Basic")
            .header("x-up-visible", "1")
            .body(full(name))
            .unwrap()
    } else {
        Response::new(full(name))
    };
    resp.headers_mut()
        .insert("x-upstream", name.parse().unwrap());
    Ok(resp)
}

pub fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Deterministic, non-repeating-looking bytes (so a dropped or reordered chunk changes the hash).
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8)
        .collect()
}

/// A flag file and a config for `legacy` and `new` upstreams; the router starts from them.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub legacy: TestUpstream,
    pub new: TestUpstream,
    /// Extra `[tenant]`, `[[routes]]` or `[server]` lines.
    pub extra: String,
    pub routes: String,
}

impl Setup {
    pub async fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let setup = Setup {
            dir,
            legacy: TestUpstream::start("legacy").await,
            new: TestUpstream::start("new").await,
            extra: String::new(),
            routes: "[[routes]]\nname = \"api\"\npath_prefix = \"/\"\n".into(),
        };
        setup
            .write_flags(r#"{"version":1,"items":[{"tenant":"*","target":"legacy","version":1}]}"#);
        setup
    }

    /// The same, with `new` an HTTP/2 cleartext (h2c) upstream.
    pub async fn with_h2c_new() -> Setup {
        let mut setup = Setup::new().await;
        setup.new = TestUpstream::start_h2c("new").await;
        setup
    }

    /// Adds a target `raw` at `upstream`, routed from `/raw/`.
    pub fn route_raw(&mut self, upstream: SocketAddr) {
        self.routes = format!(
            "[targets.raw]\nendpoints = [\"http://{upstream}\"]\n{}[[routes]]\nname = \"raw\"\npath_prefix = \"/raw/\"\ntarget = \"raw\"\n",
            self.routes
        );
    }

    pub fn flags_path(&self) -> PathBuf {
        self.dir.path().join("flags.json")
    }

    pub fn write_flags(&self, json: &str) {
        // Atomic replace, as an editor or a deploy tool would.
        let tmp = self.dir.path().join("flags.json.edit");
        std::fs::write(&tmp, json).unwrap();
        std::fs::rename(&tmp, self.flags_path()).unwrap();
    }

    pub fn config_text(&self) -> String {
        format!(
            r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
drain_timeout_ms = 10000
{server_extra}
[flags]
source = "file:flags.json"
default_target = "legacy"
poll_interval_ms = 10
[tenant]
from = ["header:x-tenant-id", "host:.app.example.com", "path:/t/", "jwt:tenant_id"]
sticky_key = ["header:x-user-id", "client_ip"]
[targets.legacy]
endpoints = ["{legacy}"]
[targets.new]
endpoints = ["{new}"]{new_protocol}
{routes}
"#,
            server_extra = self.extra,
            legacy = self.legacy.url(),
            new = self.new.url(),
            new_protocol = if self.new.h2_only {
                "\nprotocol = \"h2c\""
            } else {
                ""
            },
            routes = self.routes,
        )
    }

    pub fn config_path(&self) -> PathBuf {
        let path = self.dir.path().join("router.toml");
        std::fs::write(&path, self.config_text()).unwrap();
        path
    }

    pub fn config(&self) -> Config {
        Config::load(&self.config_path()).unwrap()
    }

    pub async fn start(&self) -> Router {
        Router::start(self.config()).await.unwrap()
    }

    pub fn store(&self) -> FileStore {
        FileStore::new(self.flags_path())
    }

    /// Writes a flag as the CLI does and returns the store's new version.
    pub fn set(&self, tenant: &str, placing: Placing) -> u64 {
        self.set_sealed(tenant, placing, None)
    }

    /// Writes a flag, sealing (`Some(true)`) or unsealing it, and returns the new version.
    pub fn set_sealed(&self, tenant: &str, placing: Placing, seal: Option<bool>) -> u64 {
        let write = FlagWrite {
            evacuation: None,
            ramp: None,
            hold: Default::default(),
            jobs: None,
            tenant: tenant.into(),
            placing: Some(placing),
            seal,
            shadow: None,
            by: "test".into(),
            reason: "test".into(),
            expect_version: None,
            force: false,
        };
        self.store().write(&write, None).unwrap();
        self.store().load().unwrap().version
    }
}

pub fn pin(target: &str) -> Placing {
    Placing::Pinned(target.into())
}

/// Waits until the router's snapshot is at `version` or later.
pub async fn wait_version(router: &Router, version: u64) {
    tokio::time::timeout(
        EVENT_TIMEOUT,
        router.flags().wait_until(|s| s.version >= version),
    )
    .await
    .unwrap_or_else(|_| panic!("the router did not reach flag version {version}"));
}

/// Waits until `cond` holds, re-checking whenever `notify` fires or a short tick passes.
pub async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

pub fn h2_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new())
}

/// A GET through the router; returns status, headers and body text.
pub async fn get(
    client: &HttpClient,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, String) {
    let req = Request::get(format!("http://{addr}{path}"));
    send(client, req, headers, Full::default()).await
}

/// A POST through the router whose body is streamed from `body` as it is sent (chunked, no
/// length up front); returns the response with its body unread.
pub async fn post_streamed(
    addr: SocketAddr,
    path: &str,
    body: http_body_util::channel::Channel<Bytes>,
) -> Response<Incoming> {
    let req = Request::post(format!("http://{addr}{path}"))
        .body(body)
        .unwrap();
    Client::builder(TokioExecutor::new())
        .build_http()
        .request(req)
        .await
        .unwrap()
}

/// Sends `req` with `headers` and `body`; returns status, headers and body text.
pub async fn send(
    client: &HttpClient,
    mut req: http::request::Builder,
    headers: &[(&str, &str)],
    body: Full<Bytes>,
) -> (StatusCode, HeaderMap, String) {
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client.request(req.body(body).unwrap()).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// Sends raw request bytes (which must ask for `Connection: close`) and returns the raw answer.
pub async fn raw(addr: SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(EVENT_TIMEOUT, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// The admin listener's answer to a GET.
pub async fn admin_get(router: &Router, path: &str) -> (StatusCode, String) {
    let (status, _, body) = get(&client(), router.admin_addr(), path, &[]).await;
    (status, body)
}

/// One admin request with headers and a body; returns status, headers and body text.
pub async fn admin_request(
    router: &Router,
    method: http::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, HeaderMap, String) {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", router.admin_addr()));
    send(&client(), req, headers, Full::from(body.to_owned())).await
}

/// The value of one metric line from `/metrics` (the first line starting with `prefix`).
pub async fn metric(router: &Router, prefix: &str) -> Option<f64> {
    metrics(router, &[prefix]).await[0]
}

/// Several metrics from one scrape, so counters that move together are read at one instant.
pub async fn metrics(router: &Router, prefixes: &[&str]) -> Vec<Option<f64>> {
    let (_, text) = admin_get(router, "/metrics").await;
    (prefixes.iter())
        .map(|prefix| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
        })
        .collect()
}

/// Runs the `switchyard` binary as user `alice` to completion: exit code, stdout, stderr.
pub fn switchyard(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env("USER", "alice")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The real `switchyard` binary, started with `args`, its logs captured.
pub struct Binary {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Binary {
    pub fn serve(config: &Path) -> Binary {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = std::io::BufReader::new(stderr).lines();
        let field = |line: &str, key: &str| -> Option<SocketAddr> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|v| v.parse().ok())
        };
        let mut before = Vec::new();
        let (addr, admin_addr) = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| {
                    panic!("switchyard exited before serving:\n{}", before.join("\n"))
                })
                .unwrap();
            before.push(line.clone());
            if line.contains("switchyard serving") {
                break (
                    field(&line, "addr=").unwrap(),
                    field(&line, "admin_addr=").unwrap(),
                );
            }
        };
        // Keep reading its logs, so the child never blocks on a full pipe and a test can
        // look for a line.
        let logs = Arc::new(Mutex::new(before));
        let kept = logs.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        Binary {
            child,
            addr,
            admin_addr,
            logs,
        }
    }

    /// The log lines written so far that contain every one of `words`.
    pub fn log_lines(&self, words: &[&str]) -> Vec<String> {
        let logs = self.logs.lock().unwrap();
        logs.iter()
            .filter(|l| words.iter().all(|w| l.contains(w)))
            .cloned()
            .collect()
    }

    /// Waits for a log line containing every one of `words`, and returns it.
    pub async fn wait_log(&self, words: &[&str]) -> String {
        self.wait_log_after(0, words).await.1
    }

    /// How many lines the process has logged so far: a mark taken before an action, so
    /// [`Binary::wait_log_after`] sees only the lines the action caused.
    pub fn log_mark(&self) -> usize {
        self.logs.lock().unwrap().len()
    }

    /// Waits for a line logged after `mark` containing every one of `words`; returns the mark
    /// just past it, and the line.
    pub async fn wait_log_after(&self, mark: usize, words: &[&str]) -> (usize, String) {
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        loop {
            {
                let logs = self.logs.lock().unwrap();
                let mut found = logs.iter().enumerate().skip(mark);
                if let Some((at, line)) = found.find(|(_, l)| words.iter().all(|w| l.contains(w))) {
                    return (at + 1, line.clone());
                }
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out waiting for a log line with {words:?}; {}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The last lines logged, for a failure's message.
    fn log_tail(&self) -> String {
        let logs = self.logs.lock().unwrap();
        let tail = &logs[logs.len().saturating_sub(20)..];
        format!("the last lines:\n{}", tail.join("\n"))
    }

    /// Peak resident memory of the process so far, in bytes (VmHWM).
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kb * 1024
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        send_signal(&self.child, signal);
    }

    /// Waits for the process to exit, and returns how it did.
    pub async fn exited(&mut self) -> std::process::ExitStatus {
        let child = &mut self.child;
        tokio::time::timeout(EVENT_TIMEOUT, async {
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("switchyard did not exit; {}", self.log_tail()))
    }
}

/// Waits until one metric line (the first starting with `name`) reads `want`.
pub async fn wait_metric(router: &Router, name: &str, want: f64) {
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    while metric(router, name).await != Some(want) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never reached {want}: {:?}",
            metric(router, name).await
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn send_signal(child: &std::process::Child, signal: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, signal).unwrap();
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A connection to `addr` from the loopback address `from` (127.0.0.0/8: one client each).
pub async fn connect_from(from: [u8; 4], addr: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(addr).await.unwrap()
}
