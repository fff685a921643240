//! The side-by-side load benchmark: the upstream direct (the ceiling), Switchyard, nginx and
//! HAProxy, each as a one-worker keep-alive reverse proxy in front of the same in-process
//! upstream, measured by the same load generator in one run.
//!
//! Run it through `benches/load.sh`, which installs nginx and HAProxy, builds in release and
//! pins this process (load generator and upstream) to one core and each proxy to the other.
//!
//! The peers are configured to do Switchyard's job, so the figures compare like with like:
//! the client's `Host` kept, `X-Forwarded-For`, `-Proto` and `-Host` set, an `X-Request-ID`
//! kept or made and returned to the client. `nginx-no-ids` and `haproxy-no-ids` are the same
//! without request ids, which cost the peers far more than they cost Switchyard.
//!
//! The load generator and the upstream are a few lines over raw sockets each (request out,
//! answer parsed and checked), so their shared core is not the limit: the report gives their
//! CPU for every target, and a proxy near one core of its own is what the figures measure.
//!
//! Two loads per target:
//! - `64 connections`: closed loop for a fixed duration (throughput). Latencies are corrected
//!   for coordinated omission the way wrk2's "uncorrected" mode cannot be: every connection
//!   has an expected interval (its mean over the run); a response slower than that also
//!   records the requests it held up (HdrHistogram's `record_correct`).
//! - `1 connection at a fixed rate`: requests are scheduled on a clock and a latency is
//!   measured from when the request should have been sent, so a stall counts for every
//!   request it delayed (open loop, as wrk2 does). A paced connection is a thread with a
//!   blocking socket that sleeps to the microsecond: the runtime's timer ticks in whole
//!   milliseconds, and its lateness was most of what the fixed-rate figures measured.
//!
//! Full runs also measure each proxy's memory per idle keep-alive client connection, and for
//! Switchyard p99 during snapshot swaps and memory per tenant (`--no-swap`, `--no-rss` skip
//! them; `--no-rss` skips both memory tests), and another client's latency beside 10,000
//! silent connections from one address (`crowd.rs`; `--no-crowd` skips it).
//!
//! `--quick` runs each target for a moment and checks only that every response was right:
//! that is the CI mode. The full run is for people; its figures go in BENCHMARKS.md.

mod crowd;
mod soak;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use switchyard_benches::free_addr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The upstream's answer: 100 bytes, as in the peers' published measurements.
const BODY: &[u8] = b"0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789";

/// Every target, in the order measured. The peers do Switchyard's job: the same headers to
/// the upstream (`Host` kept, `X-Forwarded-For`, `-Proto`, `-Host`, `X-Request-ID`) and the
/// request id back to the client. `-no-ids` is the peer without request ids, which cost
/// nginx and HAProxy more than they cost Switchyard: it shows how much. `switchyard-shadow` is Switchyard
/// with every GET of the tenant copied to a second upstream and compared (shadow traffic);
/// `switchyard-access-log` is Switchyard writing an access log line for every request.
const TARGETS: [&str; 8] = [
    "direct",
    "switchyard",
    "switchyard-shadow",
    "switchyard-access-log",
    "nginx",
    "haproxy",
    "nginx-no-ids",
    "haproxy-no-ids",
];

struct Options {
    quick: bool,
    duration: Duration,
    warmup: Duration,
    connections: usize,
    rate: u64,
    switchyard: PathBuf,
    proxy_cpu: Option<String>,
    json: PathBuf,
    only: Option<Vec<String>>,
    swap: bool,
    rss: bool,
    crowd: bool,
    /// Only the memory soak, for this many seconds (`soak.rs`).
    soak: Option<u64>,
    /// The soak's tenant shadowed at 100%.
    soak_shadow: bool,
    /// The soak's requests all in the access log.
    soak_log: bool,
    /// Switchyard's worker threads (`server.workers`); one unless asked.
    workers: usize,
    /// Only run the upstream and print its address (for benches/tls.sh).
    upstream_only: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: loadbench [--quick] [--duration SECS] [--connections N] [--rate PER_SEC]
                 [--switchyard PATH] [--proxy-cpu CPU] [--json PATH]
                 [--only TARGET,..] [--no-swap] [--no-rss] [--no-crowd] [--soak SECS [--soak-shadow] [--soak-log]] [--workers N] [--upstream-only]
targets: {}",
        TARGETS.join(", ")
    );
    std::process::exit(64)
}

fn options() -> Options {
    let mut o = Options {
        quick: false,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        connections: 64,
        rate: 1000,
        switchyard: PathBuf::from("target/release/switchyard"),
        proxy_cpu: None,
        json: PathBuf::from("target/loadbench.json"),
        only: None,
        swap: true,
        rss: true,
        crowd: true,
        soak: None,
        soak_shadow: false,
        soak_log: false,
        workers: 1,
        upstream_only: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--quick" => o.quick = true,
            "--duration" => {
                o.duration = Duration::from_secs_f64(value().parse().unwrap_or_else(|_| usage()))
            }
            "--connections" => o.connections = value().parse().unwrap_or_else(|_| usage()),
            "--rate" => o.rate = value().parse().unwrap_or_else(|_| usage()),
            "--switchyard" => o.switchyard = value().into(),
            "--proxy-cpu" => o.proxy_cpu = Some(value()),
            "--json" => o.json = value().into(),
            "--only" => {
                let only: Vec<String> = value().split(',').map(str::to_owned).collect();
                if let Some(unknown) = only.iter().find(|n| !TARGETS.contains(&n.as_str())) {
                    eprintln!("--only: no target {unknown:?}");
                    usage();
                }
                o.only = Some(only);
            }
            "--no-swap" => o.swap = false,
            "--no-rss" => o.rss = false,
            "--no-crowd" => o.crowd = false,
            "--soak" => o.soak = Some(value().parse().unwrap_or_else(|_| usage())),
            "--soak-shadow" => o.soak_shadow = true,
            "--soak-log" => o.soak_log = true,
            "--workers" => o.workers = value().parse().unwrap_or_else(|_| usage()),
            "--upstream-only" => o.upstream_only = true,
            _ => usage(),
        }
    }
    if o.quick {
        o.duration = Duration::from_millis(1500);
        o.warmup = Duration::from_millis(200);
        o.swap = false;
        o.rss = false;
    }
    o
}

fn main() {
    let o = options();
    if o.upstream_only {
        println!("upstream {}", start_upstream());
        loop {
            std::thread::park();
        }
    }
    let scratch = tempfile::tempdir().expect("a temporary folder");
    let upstream = start_upstream();
    if let Some(seconds) = o.soak {
        match soak::soak_test(&o, scratch.path(), upstream, seconds) {
            Ok(v) => {
                std::fs::write(&o.json, serde_json::to_string_pretty(&v).unwrap() + "\n")
                    .expect("the JSON report is written");
                return;
            }
            Err(e) => {
                eprintln!("FAILED: soak: {e}");
                std::process::exit(1);
            }
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let wanted = |name: &str| o.only.as_ref().is_none_or(|l| l.iter().any(|n| n == name));

    let mut results: Vec<(String, Measured)> = Vec::new();
    let mut shadow_upstream = None;
    let mut failures = Vec::new();
    for name in TARGETS {
        if !wanted(name) {
            continue;
        }
        let dir = scratch.path().join(name);
        std::fs::create_dir_all(&dir).expect("a scratch folder");
        let proxy = match name {
            "direct" => None,
            "switchyard" => Some(Proxy::switchyard(&o, &dir, upstream, &[("acme", 1)])),
            "switchyard-access-log" => {
                write_flags(&dir.join("flags.json"), &[("acme", 1)], 1);
                let log = "[access_log]\npath = \"access.log\"\n";
                Some(Proxy::switchyard_with(&o, &dir, upstream, log))
            }
            "switchyard-shadow" => Some(Proxy::switchyard_shadowed(
                &o,
                &dir,
                upstream,
                *shadow_upstream.get_or_insert_with(start_upstream),
            )),
            "nginx" => Some(Proxy::nginx(&o, &dir, upstream, true)),
            "haproxy" => Some(Proxy::haproxy(&o, &dir, upstream, true)),
            "nginx-no-ids" => Some(Proxy::nginx(&o, &dir, upstream, false)),
            _ => Some(Proxy::haproxy(&o, &dir, upstream, false)),
        };
        let proxy = match proxy.transpose() {
            Ok(p) => p,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let addr = proxy.as_ref().map_or(upstream, |p| p.addr);
        eprintln!("measuring {name} at {addr}");
        let mut m = measure(&rt, &o, addr, proxy.as_ref());
        if name == "switchyard-access-log"
            && let Some(admin) = proxy.as_ref().and_then(|p| p.admin)
        {
            let lines = metric(admin, "switchyard_access_log_lines_total").unwrap_or(0.0);
            let dropped = metric(admin, "switchyard_access_log_dropped_total").unwrap_or(0.0);
            m.access_log = Some(json!({"lines": lines, "dropped": dropped}));
            if lines == 0.0 {
                failures.push(format!("{name}: no access log line was written"));
            }
        }
        if name == "switchyard-shadow" {
            m.shadow = proxy.as_ref().and_then(|p| p.admin).map(shadow_counts);
            let count = |k: &str| (m.shadow.as_ref()).map_or(0.0, |v| v[k].as_f64().unwrap_or(0.0));
            let (compared, mismatched) = (count("compared"), count("mismatched"));
            if compared == 0.0 || mismatched > 0.0 {
                failures.push(format!(
                    "{name}: {mismatched} of {compared} shadow comparisons mismatched (identical upstreams must match, and some must be compared)"
                ));
            }
        }
        // The peers' memory does not depend on request ids: measured once each.
        let memory = o.rss && !o.quick && !name.ends_with("-no-ids");
        if let (Some(p), true) = (proxy.as_ref(), memory) {
            match idle_connection_memory(p) {
                Ok(bytes) => m.idle_connection_bytes = Some(bytes),
                Err(e) => failures.push(format!("{name} (idle connections): {e}")),
            }
        }
        for (load, run) in [("64 connections", &m.closed), ("fixed rate", &m.rate)] {
            if run.errors > 0 || run.requests == 0 {
                failures.push(format!(
                    "{name} ({load}): {} good responses, {} wrong: {}",
                    run.requests,
                    run.errors,
                    run.first_error.as_deref().unwrap_or("no responses")
                ));
            }
        }
        results.push((name.to_owned(), m));
    }

    let mut report = json!({
        "duration_s": o.duration.as_secs_f64(),
        "connections": o.connections,
        "rate_per_s": o.rate,
        "quick": o.quick,
        "pinned_proxy_cpu": o.proxy_cpu,
        "targets": results.iter().map(|(n, m)| (n.clone(), m.to_json())).collect::<serde_json::Map<_, _>>(),
    });
    print_table(&results);

    if o.swap && wanted("switchyard") {
        match swap_test(&o, scratch.path(), upstream) {
            Ok(v) => report["snapshot_swaps"] = v,
            Err(e) => failures.push(format!("swap test: {e}")),
        }
    }
    if o.rss && !o.quick && wanted("switchyard-shadow") {
        match hung_shadow_test(&o, scratch.path(), upstream) {
            Ok(v) => report["hung_shadow"] = v,
            Err(e) => failures.push(format!("hung shadow test: {e}")),
        }
    }
    if o.crowd && wanted("switchyard") {
        match crowd::crowd_test(&o, scratch.path(), upstream) {
            Ok(v) => report["crowd"] = v,
            Err(e) => failures.push(format!("crowd test: {e}")),
        }
    }
    if o.rss && wanted("switchyard") {
        match rss_test(&o, scratch.path(), upstream) {
            Ok(v) => report["rss_per_tenant"] = v,
            Err(e) => failures.push(format!("rss test: {e}")),
        }
    }

    if let Some(parent) = o.json.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    std::fs::write(
        &o.json,
        serde_json::to_string_pretty(&report).unwrap() + "\n",
    )
    .expect("the JSON report is written");
    eprintln!("wrote {}", o.json.display());
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("FAILED: {f}");
        }
        std::process::exit(1);
    }
    if o.quick {
        println!(
            "quick check: every target answered every request correctly ({})",
            results
                .iter()
                .map(|(n, m)| format!("{n} {}", m.closed.requests + m.rate.requests))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

// ---- the upstream ----

/// The upstream: a minimal keep-alive HTTP/1.1 server on its own thread that answers every
/// request with a 200 and `BODY`. It is lean on purpose, as the load generator is: their core
/// must not be what limits a proxy's throughput (`load_side_cpu_cores` in the report shows
/// how close it comes).
fn start_upstream() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(upstream_connection(stream));
            }
        });
    });
    addr
}

/// Answers each whole request head as it comes (pipelined ones in one write), until the
/// client closes or asks to. Requests with a body are refused: nothing here sends one.
async fn upstream_connection(mut stream: tokio::net::TcpStream) {
    let mut buf = BytesMut::with_capacity(4096);
    let mut out = Vec::with_capacity(1024);
    let mut date = HttpDate::default();
    loop {
        let mut close = false;
        while !close {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            let n = match req.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => break,
                Err(e) => {
                    out.extend_from_slice(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                    eprintln!("upstream: a malformed request: {e}");
                    close = true;
                    continue;
                }
            };
            let has_body = req.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("transfer-encoding")
                    || (h.name.eq_ignore_ascii_case("content-length") && h.value != b"0")
            });
            if has_body {
                out.extend_from_slice(b"HTTP/1.1 501 Not Implemented\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                close = true;
                continue;
            }
            close = !keeps_alive(req.version, req.headers);
            buf.advance(n);
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\ndate: ");
            out.extend_from_slice(date.now());
            if close {
                out.extend_from_slice(b"\r\nconnection: close");
            }
            out.extend_from_slice(b"\r\n\r\n");
            out.extend_from_slice(BODY);
        }
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        if close {
            return;
        }
        buf.reserve(4096);
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Whether an HTTP/1.x message lets its connection stay open.
fn keeps_alive(version: Option<u8>, headers: &[httparse::Header]) -> bool {
    let has = |token: &str| {
        headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("connection")
                && h.value
                    .split(|b| *b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    };
    if version == Some(0) {
        has("keep-alive")
    } else {
        !has("close")
    }
}

/// The `date` header's value, formatted once a second.
#[derive(Default)]
struct HttpDate {
    second: u64,
    text: String,
}

impl HttpDate {
    fn now(&mut self) -> &[u8] {
        let now = std::time::SystemTime::now();
        let second = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if second != self.second || self.text.is_empty() {
            self.second = second;
            self.text = httpdate::fmt_http_date(now);
        }
        self.text.as_bytes()
    }
}

// ---- the proxies ----

struct Proxy {
    addr: SocketAddr,
    child: Child,
    admin: Option<SocketAddr>,
}

impl Drop for Proxy {
    /// Stops the whole process tree: killing only nginx's master would orphan its worker.
    fn drop(&mut self) {
        for pid in self.pids().into_iter().rev() {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _ = self.child.wait();
    }
}

/// The command, pinned to the proxy's core when one is given.
fn pinned(o: &Options, program: &Path) -> Command {
    match &o.proxy_cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpu]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn find(program: &str) -> Result<PathBuf, String> {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(program);
        if p.exists() {
            return Ok(p);
        }
    }
    Err(format!(
        "{program} is not installed (benches/load.sh installs it: apt-get install {program})"
    ))
}

impl Proxy {
    fn switchyard(
        o: &Options,
        dir: &Path,
        upstream: SocketAddr,
        tenants: &[(&str, usize)],
    ) -> Result<Proxy, String> {
        write_flags(&dir.join("flags.json"), tenants, 1);
        Proxy::switchyard_with(o, dir, upstream, "")
    }

    /// Switchyard with every GET of tenant `acme` copied to `shadow` and compared.
    fn switchyard_shadowed(
        o: &Options,
        dir: &Path,
        upstream: SocketAddr,
        shadow: SocketAddr,
    ) -> Result<Proxy, String> {
        replace_file(
            &dir.join("flags.json"),
            r#"{"version":1,"items":[{"tenant":"acme","target":"app","shadow":{"target":"shadow","percent":100},"version":1}]}"#,
        );
        let targets = format!("[targets.shadow]\nendpoints = [\"http://{shadow}\"]\n");
        Proxy::switchyard_with(o, dir, upstream, &targets)
    }

    fn switchyard_with(
        o: &Options,
        dir: &Path,
        upstream: SocketAddr,
        extra: &str,
    ) -> Result<Proxy, String> {
        let (addr, admin, workers) = (free_addr(), free_addr(), o.workers);
        std::fs::write(
            dir.join("router.toml"),
            format!(
                r#"[server]
listen = "{addr}"
admin_listen = "{admin}"
workers = {workers}
[flags]
source = "file:flags.json"
default_target = "app"
poll_interval_ms = 250
[tenant]
from = ["header:x-tenant-id"]
[targets.app]
endpoints = ["http://{upstream}"]
{extra}
[[routes]]
name = "api"
path_prefix = "/"
"#
            ),
        )
        .unwrap();
        let mut cmd = pinned(o, &o.switchyard);
        cmd.args(["serve", "--config"])
            .arg(dir.join("router.toml"))
            .env("RUST_LOG", "warn");
        Proxy::launch(cmd, addr, Some(admin), || {
            http_get(admin, "/readyz").is_some_and(|(s, _)| s == 200)
        })
    }

    /// nginx doing Switchyard's job: `Host` kept, the `X-Forwarded-*` headers set and, with
    /// `request_ids`, an `X-Request-ID` kept or made and returned to the client.
    fn nginx(
        o: &Options,
        dir: &Path,
        upstream: SocketAddr,
        request_ids: bool,
    ) -> Result<Proxy, String> {
        let program = find("nginx")?;
        let addr = free_addr();
        let d = dir.display();
        let ids = if request_ids {
            "proxy_set_header X-Request-ID $request_id_out;\n      \
             add_header X-Request-ID $request_id_out always;"
        } else {
            ""
        };
        std::fs::write(
            dir.join("nginx.conf"),
            format!(
                r#"worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  keepalive_requests 1000000;
  upstream up {{ server {upstream}; keepalive 128; keepalive_requests 1000000; }}
  map $http_x_request_id $request_id_out {{ "" $request_id; default $http_x_request_id; }}
  server {{
    listen {addr};
    location / {{
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
      {ids}
    }}
  }}
}}
"#
            ),
        )
        .unwrap();
        let mut cmd = pinned(o, &program);
        cmd.arg("-c").arg(dir.join("nginx.conf")).arg("-p").arg(dir);
        Proxy::launch(cmd, addr, None, || {
            http_get(addr, "/").is_some_and(|(s, _)| s == 200)
        })
    }

    /// HAProxy doing the same job as `nginx` above.
    fn haproxy(
        o: &Options,
        dir: &Path,
        upstream: SocketAddr,
        request_ids: bool,
    ) -> Result<Proxy, String> {
        let program = find("haproxy")?;
        let addr = free_addr();
        // A cheap unique-id format (hex): process, start second, request counter.
        let ids = if request_ids {
            "unique-id-format %{+X}o%pid-%Ts-%rt\n  \
             http-request set-header X-Request-ID %[unique-id] unless { req.hdr(x-request-id) -m found }\n  \
             http-request set-var(txn.request_id) req.hdr(x-request-id)\n  \
             http-response set-header X-Request-ID %[var(txn.request_id)]"
        } else {
            ""
        };
        std::fs::write(
            dir.join("haproxy.cfg"),
            format!(
                r#"global
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  http-reuse always
frontend fe
  bind {addr}
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  {ids}
  default_backend be
backend be
  server s1 {upstream}
"#
            ),
        )
        .unwrap();
        let mut cmd = pinned(o, &program);
        cmd.arg("-f").arg(dir.join("haproxy.cfg")).arg("-db");
        Proxy::launch(cmd, addr, None, || {
            http_get(addr, "/").is_some_and(|(s, _)| s == 200)
        })
    }

    /// Starts `cmd` (its logs to ours) and waits until `ready` holds or it exits.
    fn launch(
        mut cmd: Command,
        addr: SocketAddr,
        admin: Option<SocketAddr>,
        ready: impl Fn() -> bool,
    ) -> Result<Proxy, String> {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
        Proxy { addr, child, admin }.wait_ready(ready)
    }

    fn wait_ready(mut self, ready: impl Fn() -> bool) -> Result<Proxy, String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if ready() {
                return Ok(self);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited before it was ready ({status})"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err("did not become ready within 60 s".into())
    }

    /// The proxy's processes: the one started and its children (nginx's worker).
    fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.child.id()];
        let mut i = 0;
        while i < pids.len() {
            let p = pids[i];
            let children =
                std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
            pids.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
            i += 1;
        }
        pids
    }

    /// CPU seconds used so far by all the proxy's processes.
    fn cpu_seconds(&self) -> f64 {
        self.pids()
            .iter()
            .map(|p| cpu_seconds(&p.to_string()))
            .sum()
    }

    /// Peak resident memory (VmHWM) summed over the proxy's processes.
    fn peak_rss(&self) -> u64 {
        self.pids()
            .iter()
            .map(|p| status_kb(*p, "VmHWM:") * 1024)
            .sum()
    }

    fn rss(&self) -> u64 {
        self.pids()
            .iter()
            .map(|p| status_kb(*p, "VmRSS:") * 1024)
            .sum()
    }
}

/// User plus system CPU seconds of the process `pid` (a number, or `self`).
fn cpu_seconds(pid: &str) -> f64 {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // Fields after the command name (which may contain spaces) in parentheses.
            let rest = stat.rsplit_once(')')?.1.to_owned();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    ticks as f64 / clock_ticks() as f64
}

fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The kernel's clock ticks a second, asked of `getconf` once.
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// A flag file of `tenants` (name prefix, count): `acme` with count 1 is the tenant `acme`;
/// larger counts make `acme-0000000`.. Each is pinned to `app`.
fn write_flags(path: &Path, tenants: &[(&str, usize)], version: u64) {
    replace_file(path, &render_flags(tenants, version));
}

fn replace_file(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A flag file: `n` tenants named `prefix-0000000` and up for each `(prefix, n)` (just
/// `prefix` when `n` is 1), all on the target `app`.
fn render_flags(tenants: &[(&str, usize)], version: u64) -> String {
    let mut out = String::with_capacity(64 + tenants.iter().map(|t| t.1).sum::<usize>() * 64);
    out.push_str(&format!("{{\"version\":{version},\"items\":["));
    let mut first = true;
    for (prefix, n) in tenants {
        for i in 0..*n {
            if !first {
                out.push(',');
            }
            first = false;
            let name = if *n == 1 {
                (*prefix).to_owned()
            } else {
                format!("{prefix}-{i:07}")
            };
            out.push_str(&format!(
                "\n{{\"tenant\":\"{name}\",\"target\":\"app\",\"version\":{version}}}"
            ));
        }
    }
    out.push_str("\n]}\n");
    out
}

/// A blocking GET for readiness checks: status and body.
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nx-tenant-id: acme\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.get(9..12)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

// ---- the load generator ----

#[derive(Default)]
struct Run {
    requests: u64,
    errors: u64,
    first_error: Option<String>,
    seconds: f64,
    latency_us: Option<Histogram<u64>>,
    proxy_cpu_seconds: Option<f64>,
    /// CPU seconds of this process (the load generator and the upstream) during the run
    /// (measured for the 64-connection runs).
    load_cpu_seconds: Option<f64>,
}

impl Run {
    /// Counts a failed request, keeping the first error's words.
    fn fail(&mut self, e: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e);
        }
    }

    /// Counts one exchange, its latency taken from `since`; whether its connection stays open.
    fn count(
        &mut self,
        exchange: Result<bool, String>,
        since: Instant,
        latencies: &mut Vec<u64>,
    ) -> bool {
        match exchange {
            Ok(open) => {
                self.requests += 1;
                latencies.push(since.elapsed().as_micros().max(1) as u64);
                open
            }
            Err(e) => {
                self.fail(e);
                false
            }
        }
    }

    /// Pools another run's requests and latencies into this one.
    fn add(&mut self, other: Run) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
        self.seconds += other.seconds;
        match (&mut self.latency_us, other.latency_us) {
            (Some(h), Some(o)) => h.add(&o).expect("histograms of the same range"),
            (slot @ None, o) => *slot = o,
            (Some(_), None) => {}
        }
        self.proxy_cpu_seconds = match (self.proxy_cpu_seconds, other.proxy_cpu_seconds) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.load_cpu_seconds = match (self.load_cpu_seconds, other.load_cpu_seconds) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
    }

    fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }

    fn quantile_us(&self, q: f64) -> u64 {
        self.latency_us
            .as_ref()
            .map_or(0, |h| h.value_at_quantile(q))
    }

    fn to_json(&self) -> Value {
        json!({
            "requests": self.requests,
            "errors": self.errors,
            "requests_per_s": self.rps().round(),
            "p50_us": self.quantile_us(0.5),
            "p99_us": self.quantile_us(0.99),
            "p999_us": self.quantile_us(0.999),
            "max_us": self.latency_us.as_ref().map_or(0, |h| h.max()),
            "proxy_cpu_cores": self.proxy_cpu_seconds.map(|c| c / self.seconds.max(1e-9)),
            "requests_per_proxy_cpu_s": self.proxy_cpu_seconds.map(|c| self.requests as f64 / c.max(1e-9)),
            "load_side_cpu_cores": self.load_cpu_seconds.map(|c| c / self.seconds.max(1e-9)),
            "load_side_cpu_us_per_request": self.load_cpu_seconds.map(|c| c * 1e6 / self.requests.max(1) as f64),
        })
    }
}

struct Measured {
    closed: Run,
    rate: Run,
    peak_rss: Option<u64>,
    /// Upstream connections the router opened during the 64-connection run (Switchyard only).
    upstream_connects: Option<u64>,
    /// Resident memory per idle client connection (full runs with the memory test).
    idle_connection_bytes: Option<f64>,
    /// Shadow comparisons made and dropped during the run (`switchyard-shadow` only).
    shadow: Option<Value>,
    /// Access log lines written and dropped (`switchyard-access-log` only).
    access_log: Option<Value>,
}

impl Measured {
    fn to_json(&self) -> Value {
        json!({
            "connections": self.closed.to_json(),
            "fixed_rate": self.rate.to_json(),
            "peak_rss_bytes": self.peak_rss,
            "upstream_connections_opened": self.upstream_connects,
            "bytes_per_idle_connection": self.idle_connection_bytes,
            "shadow": self.shadow,
            "access_log": self.access_log,
        })
    }
}

fn measure(
    rt: &tokio::runtime::Runtime,
    o: &Options,
    addr: SocketAddr,
    proxy: Option<&Proxy>,
) -> Measured {
    rt.block_on(load(addr, o.connections, o.warmup));
    let admin = proxy.and_then(|p| p.admin);
    let connects =
        || admin.and_then(|a| metric_sum(a, "switchyard_upstream_connections_opened_total"));
    let connects_before = connects();
    let cpu = proxy.map(Proxy::cpu_seconds);
    let load_cpu = cpu_seconds("self");
    let mut closed = rt.block_on(load(addr, o.connections, o.duration));
    closed.proxy_cpu_seconds = proxy.map(|p| p.cpu_seconds() - cpu.unwrap_or(0.0));
    closed.load_cpu_seconds = Some(cpu_seconds("self") - load_cpu);
    let upstream_connects = connects()
        .zip(connects_before)
        .map(|(after, before)| (after - before) as u64);
    let cpu = proxy.map(Proxy::cpu_seconds);
    let mut rate = paced(addr, 1, o.rate as f64, o.duration);
    rate.proxy_cpu_seconds = proxy.map(|p| p.cpu_seconds() - cpu.unwrap_or(0.0));
    Measured {
        closed,
        rate,
        peak_rss: proxy.map(Proxy::peak_rss),
        upstream_connects,
        idle_connection_bytes: None,
        shadow: None,
        access_log: None,
    }
}

/// A shadowed router's comparisons so far, from one scrape: compared, matched, mismatched,
/// dropped by reason.
fn shadow_counts(admin: SocketAddr) -> Value {
    let (_, body) = http_get(admin, "/metrics").unwrap_or_default();
    let sum = |name: &str| -> f64 {
        (body.lines())
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let dropped: serde_json::Map<String, Value> = body
        .lines()
        .filter(|l| l.starts_with("switchyard_shadow_skipped_total{"))
        .filter_map(|l| {
            let reason = l.split("reason=\"").nth(1)?.split('"').next()?;
            let n: f64 = l.rsplit(' ').next()?.parse().ok()?;
            Some((reason.to_owned(), json!(n)))
        })
        .fold(serde_json::Map::new(), |mut m, (k, v)| {
            let before = m.get(&k).and_then(Value::as_f64).unwrap_or(0.0);
            m.insert(k, json!(before + v.as_f64().unwrap_or(0.0)));
            m
        });
    json!({
        "compared": sum("switchyard_shadow_compared_total"),
        "matched": sum("switchyard_shadow_matched_total"),
        "mismatched": sum("switchyard_shadow_mismatched_total"),
        "dropped": dropped,
    })
}

/// `connections` keep-alive connections back to back for `duration` (closed loop).
async fn load(addr: SocketAddr, connections: usize, duration: Duration) -> Run {
    let start = Instant::now();
    let end = start + duration;
    let tasks: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(connection(addr, end)))
        .collect();
    let mut run = Run::default();
    for t in tasks {
        run.add(t.await.expect("a load connection does not panic"));
    }
    run.seconds = start.elapsed().as_secs_f64();
    run
}

/// `connections` keep-alive connections for `duration`, each paced at `rate / connections`
/// requests a second (open loop), with latency measured from each request's scheduled time.
/// Each connection is a thread of its own with a blocking socket and a timer slack of 1 ns:
/// the runtime's timer ticks in whole milliseconds, which bunched the paced requests onto its
/// ticks and added up to a millisecond of its own lateness to every latency.
fn paced(addr: SocketAddr, connections: usize, rate: f64, duration: Duration) -> Run {
    let interval = Duration::from_secs_f64(connections as f64 / rate);
    let start = Instant::now();
    let end = start + duration;
    let threads: Vec<_> = (0..connections)
        .map(|c| {
            // Spread the connections' schedules over one interval.
            let first = start + interval * c as u32 / connections as u32;
            std::thread::spawn(move || paced_connection(addr, first, end, interval))
        })
        .collect();
    let mut run = Run::default();
    for t in threads {
        run.add(t.join().expect("a paced connection does not panic"));
    }
    run.seconds = start.elapsed().as_secs_f64();
    run
}

async fn connection(addr: SocketAddr, end: Instant) -> Run {
    let mut run = Run::default();
    let mut conn: Option<LoadConnection> = None;
    let mut latencies: Vec<u64> = Vec::new();
    loop {
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match LoadConnection::open(addr).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    run.fail(e);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        if !run.count(c.exchange().await, sent, &mut latencies) {
            conn = None;
        }
    }
    // A request slower than this connection's mean interval also stands for the requests it
    // kept from being sent (coordinated omission).
    let expected = latencies.iter().sum::<u64>() / (latencies.len().max(1) as u64);
    run.latency_us = Some(histogram(&latencies, expected));
    run
}

fn paced_connection(addr: SocketAddr, first: Instant, end: Instant, interval: Duration) -> Run {
    // Without this, the kernel may wake the thread up to 50 us late to group timers.
    let _ = nix::sys::prctl::set_timerslack(1);
    let mut run = Run::default();
    let mut conn: Option<BlockingConnection> = None;
    let mut latencies: Vec<u64> = Vec::new();
    let mut next = first;
    while next < end {
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let scheduled = next;
        next += interval;
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match BlockingConnection::open(addr) {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    run.fail(e);
                    continue;
                }
            },
        };
        if !run.count(c.exchange(), scheduled, &mut latencies) {
            conn = None;
        }
    }
    run.latency_us = Some(histogram(&latencies, 0));
    run
}

/// One connection's latencies; with an `expected` interval (closed loop), each one slower
/// than that also records the requests it held up (HdrHistogram's `record_correct`).
fn histogram(latencies: &[u64], expected: u64) -> Histogram<u64> {
    let mut hist = new_histogram();
    for &l in latencies {
        let l = l.min(hist.high());
        if expected > 0 {
            hist.record_correct(l, expected).expect("in bounds");
        } else {
            hist.record(l).expect("in bounds");
        }
    }
    hist
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// What every load connection asks, each time.
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nhost: bench\r\nx-tenant-id: acme\r\n\r\n";

/// One keep-alive client connection of the load generator: `REQUEST` out, the answer read
/// and checked, with no more work than that (see `start_upstream`).
struct LoadConnection {
    stream: tokio::net::TcpStream,
    buf: BytesMut,
}

impl LoadConnection {
    async fn open(addr: SocketAddr) -> Result<LoadConnection, String> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        Ok(LoadConnection {
            stream,
            buf: BytesMut::with_capacity(4096),
        })
    }

    /// Sends `REQUEST` and reads its whole answer; whether the connection stays open.
    async fn exchange(&mut self) -> Result<bool, String> {
        self.stream
            .write_all(REQUEST)
            .await
            .map_err(|e| format!("send: {e}"))?;
        loop {
            if let Some(open) = take_answer(&mut self.buf)? {
                return Ok(open);
            }
            self.buf.reserve(4096);
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => return Err("the connection closed before the answer ended".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }
}

/// The same over a blocking socket, for the paced connections.
struct BlockingConnection {
    stream: TcpStream,
    buf: BytesMut,
}

impl BlockingConnection {
    fn open(addr: SocketAddr) -> Result<BlockingConnection, String> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| format!("connect: {e}"))?;
        Ok(BlockingConnection {
            stream,
            buf: BytesMut::with_capacity(4096),
        })
    }

    /// Sends `REQUEST` and reads its whole answer; whether the connection stays open.
    fn exchange(&mut self) -> Result<bool, String> {
        self.stream
            .write_all(REQUEST)
            .map_err(|e| format!("send: {e}"))?;
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(open) = take_answer(&mut self.buf)? {
                return Ok(open);
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("the connection closed before the answer ended".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }
}

/// Takes a whole answer off the front of `buf`: whether the connection stays open, or `None`
/// while the answer is incomplete.
fn take_answer(buf: &mut BytesMut) -> Result<Option<bool>, String> {
    Ok(parse_answer(buf)?.map(|answer| {
        buf.advance(answer.len);
        answer.keep_alive
    }))
}

/// A whole answer at the start of a buffer.
struct Answer {
    len: usize,
    keep_alive: bool,
}

/// The answer at the start of `buf`, or `None` while it is incomplete. Anything but a 200
/// with `BODY` as its `content-length` body is an error that says what came instead.
fn parse_answer(buf: &[u8]) -> Result<Option<Answer>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("a malformed answer: {e}")),
    };
    let mut length = None;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("a chunked answer: the upstream sends content-length".into());
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok());
        }
    }
    let Some(length) = length else {
        return Err(format!("status {:?} without content-length", resp.code));
    };
    let Some(body) = buf.get(head..head + length) else {
        return Ok(None);
    };
    if resp.code != Some(200) || body != BODY {
        return Err(format!(
            "status {:?}, body {:?}",
            resp.code,
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ));
    }
    Ok(Some(Answer {
        len: head + length,
        keep_alive: keeps_alive(resp.version, resp.headers),
    }))
}

// ---- the report ----

fn print_table(results: &[(String, Measured)]) {
    let direct = results.iter().find(|(n, _)| n == "direct").map(|(_, m)| m);
    let switchyard = results
        .iter()
        .find(|(n, _)| n == "switchyard")
        .map(|(_, m)| m);
    let ratio = |a: f64, b: Option<f64>| b.map_or("-".to_owned(), |b| format!("{:.2}x", a / b));
    println!(
        "\n{:<21} {:>9} {:>8} {:>8} {:>9} {:>6} {:>8} {:>9} {:>9} | {:>8} {:>8} {:>9}",
        "target",
        "req/s",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "CPU",
        "RSS MiB",
        "/direct",
        "/switchy.",
        "rate p50",
        "rate p99",
        "rate p99.9"
    );
    for (name, m) in results {
        let c = &m.closed;
        let cpu = c
            .proxy_cpu_seconds
            .map_or("-".into(), |s| format!("{:.2}", s / c.seconds));
        let rss = m
            .peak_rss
            .map_or("-".into(), |b| format!("{:.1}", b as f64 / 1048576.0));
        println!(
            "{:<21} {:>9.0} {:>8} {:>8} {:>9} {:>6} {:>8} {:>9} {:>9} | {:>8} {:>8} {:>9}",
            name,
            c.rps(),
            c.quantile_us(0.5),
            c.quantile_us(0.99),
            c.quantile_us(0.999),
            cpu,
            rss,
            ratio(c.rps(), direct.map(|d| d.closed.rps())),
            ratio(c.rps(), switchyard.map(|s| s.closed.rps())),
            m.rate.quantile_us(0.5),
            m.rate.quantile_us(0.99),
            m.rate.quantile_us(0.999),
        );
    }
    // If this side is near a whole core, the figures above measure it, not the proxies.
    println!(
        "load side (generator and upstream, one core) during the 64-connection runs: {}",
        results
            .iter()
            .filter_map(|(n, m)| {
                let cpu = m.closed.load_cpu_seconds?;
                Some(format!(
                    "{n} {:.2} core, {:.1} us/request",
                    cpu / m.closed.seconds.max(1e-9),
                    cpu * 1e6 / m.closed.requests.max(1) as f64
                ))
            })
            .collect::<Vec<_>>()
            .join("; ")
    );
    if let Some(n) = switchyard.and_then(|s| s.upstream_connects) {
        println!(
            "switchyard opened {n} upstream connections during the closed-loop run (after its warm-up)"
        );
    }
    let idle: Vec<String> = results
        .iter()
        .filter_map(|(n, m)| Some(format!("{n} {:.0} bytes", m.idle_connection_bytes?)))
        .collect();
    if !idle.is_empty() {
        println!(
            "memory per idle client connection (RSS growth from {IDLE_CONNECTIONS} open to {}): {}",
            2 * IDLE_CONNECTIONS,
            idle.join(", ")
        );
    }
    let _ = std::io::stdout().flush();
}

// ---- a hung shadow ----

/// Switchyard shadowing every GET to a side that accepts connections and never answers, under
/// the 64-connection load: what the clients see, and the router's peak memory, which the
/// shadow queue's bounds hold whatever the load and the duration.
fn hung_shadow_test(o: &Options, scratch: &Path, upstream: SocketAddr) -> Result<Value, String> {
    let hung = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let hung_addr = hung.local_addr().map_err(|e| e.to_string())?;
    // Accepted and held, never read: every shadow waits for its timeout.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in hung.incoming().flatten() {
            held.push(s);
        }
    });
    let dir = scratch.join("hung-shadow");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let proxy = Proxy::switchyard_shadowed(o, &dir, upstream, hung_addr)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let run = rt.block_on(load(proxy.addr, o.connections, o.duration));
    if run.errors > 0 {
        return Err(format!(
            "{} requests failed with the shadow hung: {}",
            run.errors,
            run.first_error.unwrap_or_default()
        ));
    }
    let counts = proxy.admin.map(shadow_counts);
    let result = json!({
        "requests": run.requests,
        "requests_per_s": run.rps().round(),
        "p99_us": run.quantile_us(0.99),
        "peak_rss_bytes": proxy.peak_rss(),
        "shadow": counts,
    });
    println!(
        "hung shadow: {:.0} req/s, p99 {} us, peak RSS {:.1} MiB; shadow {}",
        run.rps(),
        run.quantile_us(0.99),
        proxy.peak_rss() as f64 / 1048576.0,
        result["shadow"]
    );
    Ok(result)
}

// ---- snapshot swaps and memory per tenant ----

/// p99 at a steady fixed rate, with the flag table untouched and then while a 100,000-tenant
/// table is rewritten every second (each rewrite is a full rebuild and swap in the router).
fn swap_test(o: &Options, scratch: &Path, upstream: SocketAddr) -> Result<Value, String> {
    const TENANTS: usize = 100_000;
    let dir = scratch.join("swaps");
    std::fs::create_dir_all(&dir).unwrap();
    let proxy = Proxy::switchyard(o, &dir, upstream, &[("acme", 1), ("t", TENANTS)])?;
    let admin = proxy.admin.expect("switchyard has an admin listener");
    // A moderate load: 8 connections at a fixed total rate (the swap must not hide in saturation).
    let (conns, rate) = (8, (o.rate * 10) as f64);
    paced(proxy.addr, conns, rate, o.warmup);

    let generation = || metric(admin, "switchyard_flags_generation").unwrap_or(0.0);
    let before = generation();
    // Steady and swapping windows of 2 s alternate, so the host's drift (this is a shared VM)
    // falls on both sides alike. Each swapping window puts a new file in place at its start
    // and a second later. Every file is rendered, written and flushed to disk before the
    // first window, and a window only renames one into place: writing 5 MB on the load
    // generator's core during a window stalled the generator for milliseconds (the kernel
    // does not preempt a write in progress), and the disk's writeback would have run then too.
    let window = Duration::from_secs(2);
    let pairs = o.duration.as_secs().max(1) as usize;
    let mut staged = Vec::with_capacity(2 * pairs);
    for v in 2..2 + 2 * pairs as u64 {
        let file = dir.join(format!("flags-{v}.json"));
        let mut f = std::fs::File::create(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        f.write_all(render_flags(&[("acme", 1), ("t", TENANTS)], v).as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| format!("{}: {e}", file.display()))?;
        staged.push(file);
    }
    let path = dir.join("flags.json");
    let mut staged = staged.into_iter();
    let mut steady = Run::default();
    let mut swapping = Run::default();
    for _ in 0..pairs {
        steady.add(paced(proxy.addr, conns, rate, window));
        let files: Vec<PathBuf> = staged.by_ref().take(2).collect();
        let path = path.clone();
        let swapper = std::thread::spawn(move || {
            for (i, file) in files.iter().enumerate() {
                if i > 0 {
                    std::thread::sleep(Duration::from_secs(1));
                }
                std::fs::rename(file, &path).expect("a staged flag file moves into place");
            }
        });
        swapping.add(paced(proxy.addr, conns, rate, window));
        swapper.join().unwrap();
    }
    let swaps = generation() - before;
    if steady.errors + swapping.errors > 0 {
        return Err(format!(
            "{} errors: {}",
            steady.errors + swapping.errors,
            swapping
                .first_error
                .or(steady.first_error)
                .unwrap_or_default()
        ));
    }
    let (p99s, p99w) = (steady.quantile_us(0.99), swapping.quantile_us(0.99));
    println!(
        "\nsnapshot swaps ({TENANTS} tenants, {conns} connections at {rate} req/s, {pairs} pairs of 2 s windows; {swaps} rebuilds in {:.0} s of swapping windows):\n  steady   p50 {} us  p99 {p99s} us  p99.9 {} us\n  swapping p50 {} us  p99 {p99w} us  p99.9 {} us\n  p99 ratio {:.2}",
        swapping.seconds,
        steady.quantile_us(0.5),
        steady.quantile_us(0.999),
        swapping.quantile_us(0.5),
        swapping.quantile_us(0.999),
        p99w as f64 / p99s.max(1) as f64
    );
    Ok(json!({
        "tenants": TENANTS,
        "swaps": swaps,
        "connections": conns,
        "rate_per_s": rate,
        "steady": steady.to_json(),
        "swapping": swapping.to_json(),
        "p99_ratio": p99w as f64 / p99s.max(1) as f64,
    }))
}

/// Resident memory of an idle router with no tenants and with 1,000,000.
fn rss_test(o: &Options, scratch: &Path, upstream: SocketAddr) -> Result<Value, String> {
    const TENANTS: usize = 1_000_000;
    let mut rss = BTreeMap::new();
    for (label, n) in [("0", 0usize), ("1000000", TENANTS)] {
        let dir = scratch.join(format!("rss-{label}"));
        std::fs::create_dir_all(&dir).unwrap();
        let tenants: Vec<(&str, usize)> = if n == 0 { vec![] } else { vec![("t", n)] };
        let proxy = Proxy::switchyard(o, &dir, upstream, &tenants)?;
        let admin = proxy.admin.unwrap();
        let loaded = metric(admin, "switchyard_flags_tenants").unwrap_or(0.0) as usize;
        if loaded != n {
            return Err(format!("the router loaded {loaded} tenants, not {n}"));
        }
        rss.insert(n, (settled_rss(&proxy), proxy.peak_rss()));
    }
    let (base, _) = rss[&0];
    let (full, peak) = rss[&TENANTS];
    let per_tenant = (full.saturating_sub(base)) as f64 / TENANTS as f64;
    println!(
        "\nmemory: RSS {:.1} MiB with 0 tenants, {:.1} MiB with 1,000,000 (peak during the load {:.1} MiB): {per_tenant:.0} bytes per tenant",
        base as f64 / 1048576.0,
        full as f64 / 1048576.0,
        peak as f64 / 1048576.0
    );
    Ok(json!({
        "rss_bytes_0": base,
        "rss_bytes_1m": full,
        "peak_rss_bytes_1m": peak,
        "bytes_per_tenant": per_tenant,
    }))
}

/// Idle keep-alive client connections held open at once by the memory-per-connection test.
const IDLE_CONNECTIONS: usize = 500;

/// Resident memory per idle client connection: keep-alive connections, each having sent one
/// request and read its answer, held open; the growth of the proxy's RSS from
/// [`IDLE_CONNECTIONS`] of them to twice as many, over the second lot's number. The first lot
/// fills what a proxy allocates once, not per connection (Switchyard keeps up to 256 spare
/// read buffers a worker), so the figure is what each further connection costs. Each
/// connection is used once more after the readings, so a proxy that closed one early fails
/// the test rather than under-reporting.
fn idle_connection_memory(proxy: &Proxy) -> Result<f64, String> {
    settled_rss(proxy);
    let mut open = Vec::with_capacity(2 * IDLE_CONNECTIONS);
    let mut readings = Vec::new();
    for _ in 0..2 {
        for _ in 0..IDLE_CONNECTIONS {
            let i = open.len();
            let mut s = TcpStream::connect_timeout(&proxy.addr, Duration::from_secs(2))
                .map_err(|e| format!("connection {i}: {e}"))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))
                .map_err(|e| e.to_string())?;
            one_request(&mut s).map_err(|e| format!("connection {i}: {e}"))?;
            open.push(s);
        }
        // Growth only: the allocator has nothing freed left to hand back (settled above), so
        // a few steady readings suffice, well within the proxies' idle timeouts (30 s).
        readings.push(steady_rss(proxy, 3, 3, 10));
    }
    for (i, s) in open.iter_mut().enumerate() {
        one_request(s).map_err(|e| format!("connection {i} after the readings: {e}"))?;
    }
    Ok(readings[1].saturating_sub(readings[0]) as f64 / IDLE_CONNECTIONS as f64)
}

/// One `REQUEST` and its whole answer, which must keep the connection open.
fn one_request(s: &mut TcpStream) -> Result<(), String> {
    s.write_all(REQUEST).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before the answer ended".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        match parse_answer(&buf)? {
            Some(a) if a.keep_alive => return Ok(()),
            Some(_) => return Err("the answer closes the connection".into()),
            None => {}
        }
    }
}

/// RSS once the allocator has handed back what the load freed. The router's jemalloc decays
/// freed pages over 10 s, starting when its background thread next wakes, so the reading is
/// taken once 12 s have passed and the last five readings, a second apart, are within 1% of
/// each other (at most 60 s).
fn settled_rss(proxy: &Proxy) -> u64 {
    steady_rss(proxy, 12, 5, 60)
}

/// RSS read once a second until, after at least `wait` seconds, the last `steady` readings
/// are within 1% of each other, or `at_most` seconds have passed.
fn steady_rss(proxy: &Proxy, wait: usize, steady: usize, at_most: usize) -> u64 {
    let mut readings = vec![proxy.rss()];
    for _ in 0..at_most {
        std::thread::sleep(Duration::from_secs(1));
        let now = proxy.rss();
        readings.push(now);
        if readings.len() > wait
            && readings[readings.len() - steady..]
                .iter()
                .all(|r| r.abs_diff(now) * 100 <= now)
        {
            break;
        }
    }
    readings[readings.len() - 1]
}

/// The sum of one metric's series (all its label sets) from a router's admin listener.
fn metric_sum(admin: SocketAddr, name: &str) -> Option<f64> {
    let (_, body) = http_get(admin, "/metrics")?;
    let values = body
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    Some(values.sum())
}

/// One metric's value from a router's admin listener.
fn metric(admin: SocketAddr, name: &str) -> Option<f64> {
    let (_, body) = http_get(admin, "/metrics")?;
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(extra: &str) -> Vec<u8> {
        let mut a = format!("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n{extra}\r\n").into_bytes();
        a.extend_from_slice(BODY);
        a
    }

    #[test]
    fn an_answer_is_read_whole_or_not_at_all() {
        let a = answer("");
        for cut in [0, 10, a.len() - BODY.len(), a.len() - 1] {
            assert!(parse_answer(&a[..cut]).unwrap().is_none(), "cut at {cut}");
        }
        let mut two = a.clone();
        two.extend_from_slice(&a);
        let first = parse_answer(&two).unwrap().unwrap();
        assert_eq!(first.len, a.len());
        assert!(first.keep_alive);
        assert!(
            !parse_answer(&answer("connection: close\r\n"))
                .unwrap()
                .unwrap()
                .keep_alive
        );
    }

    #[test]
    fn a_wrong_answer_says_what_came() {
        let wrong = b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 3\r\n\r\nbad";
        let e = parse_answer(wrong).err().unwrap();
        assert!(e.contains("502") && e.contains("bad"), "{e}");
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        assert!(parse_answer(chunked).err().unwrap().contains("chunked"));
        let no_length = b"HTTP/1.1 200 OK\r\n\r\n";
        assert!(
            parse_answer(no_length)
                .err()
                .unwrap()
                .contains("content-length")
        );
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_tokens() {
        let h = |v: &'static [u8]| {
            [httparse::Header {
                name: "Connection",
                value: v,
            }]
        };
        assert!(keeps_alive(Some(1), &[]));
        assert!(!keeps_alive(Some(1), &h(b"Keep-Alive, close")));
        assert!(!keeps_alive(Some(0), &[]));
        assert!(keeps_alive(Some(0), &h(b"keep-alive")));
    }

    /// The upstream answers pipelined requests in order and refuses a request with a body.
    #[test]
    fn the_upstream_answers_each_request_and_refuses_bodies() {
        let mut s = TcpStream::connect(start_upstream()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut two = REQUEST.to_vec();
        two.extend_from_slice(REQUEST);
        s.write_all(&two).unwrap();
        let mut buf = Vec::new();
        let mut answered = 0;
        while answered < 2 {
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "the upstream closed after {answered} answers");
            buf.extend_from_slice(&chunk[..n]);
            while let Some(a) = parse_answer(&buf).unwrap() {
                assert!(a.keep_alive);
                buf.drain(..a.len);
                answered += 1;
            }
        }
        s.write_all(b"POST / HTTP/1.1\r\nhost: bench\r\ncontent-length: 2\r\n\r\nhi")
            .unwrap();
        let mut rest = String::new();
        s.read_to_string(&mut rest).unwrap();
        assert!(rest.starts_with("HTTP/1.1 501"), "{rest}");
    }
}
