//! The propagation benchmark: N routers (the real binary, at the default poll interval) on one
//! DynamoDB Local table; an operator flips a tenant F times; each router's log says when it
//! applied each flip. Prints p50/p99/max of (applied - the flip's write returned) over every
//! router and flip, and the store reads an idle router makes a second.
//!
//!   benches/propagation.sh [--routers 20] [--flips 20]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use flag_store::dynamodb::{DynamoStore, DynamoUrl};
use flag_store::{FlagWrite, Placing};
use switchyard_benches::free_addr;

struct Options {
    switchyard: PathBuf,
    ddb_lib: PathBuf,
    routers: usize,
    flips: usize,
    idle: Duration,
    /// `flags.poll_interval_ms` for the routers; `None`: the default.
    poll_ms: Option<u64>,
}

fn options() -> Options {
    let mut o = Options {
        switchyard: "target/release/switchyard".into(),
        ddb_lib: std::env::var_os("SWITCHYARD_DDB_LOCAL_LIB")
            .map(PathBuf::from)
            .unwrap_or_default(),
        routers: 20,
        flips: 20,
        idle: Duration::from_secs(10),
        poll_ms: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--switchyard" => o.switchyard = value().into(),
            "--ddb-lib" => o.ddb_lib = value().into(),
            "--routers" => o.routers = value().parse().expect("--routers N"),
            "--flips" => o.flips = value().parse().expect("--flips N"),
            "--idle-seconds" => o.idle = Duration::from_secs(value().parse().expect("seconds")),
            "--poll-interval-ms" => o.poll_ms = Some(value().parse().expect("milliseconds")),
            other => panic!(
                "unknown argument {other} (--switchyard BIN --ddb-lib DIR --routers N --flips N --idle-seconds S --poll-interval-ms MS)"
            ),
        }
    }
    assert!(
        o.ddb_lib.join("DynamoDBLocal.jar").exists(),
        "DynamoDB Local is not at {} (--ddb-lib, or run benches/propagation.sh)",
        o.ddb_lib.display()
    );
    o
}

/// An upstream for the health checks: answers 200 to anything, one request a connection.
fn stub_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    addr
}

/// One GET on a fresh connection: the body.
fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map_or(out.clone(), |(_, b)| b.to_owned())
}

/// A router process and what its log said: flag version -> when it was applied.
struct Router {
    child: Child,
    admin: SocketAddr,
    applied: Arc<Mutex<HashMap<u64, SystemTime>>>,
}

impl Router {
    fn start(o: &Options, dir: &Path, table: &str, upstream: SocketAddr) -> Router {
        let (addr, admin) = (free_addr(), free_addr());
        let poll = o
            .poll_ms
            .map(|ms| format!("poll_interval_ms = {ms}\n"))
            .unwrap_or_default();
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("router.toml");
        std::fs::write(
            &config,
            format!(
                r#"[server]
listen = "{addr}"
admin_listen = "{admin}"
workers = 1
[flags]
source = "{table}"
default_target = "legacy"
{poll}[tenant]
from = ["header:x-tenant-id"]
[targets.legacy]
endpoints = ["http://{upstream}"]
[targets.new]
endpoints = ["http://{upstream}"]
[[routes]]
name = "api"
path_prefix = "/"
"#
            ),
        )
        .unwrap();
        let mut child = Command::new(&o.switchyard)
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", o.switchyard.display()));
        let applied = Arc::new(Mutex::new(HashMap::new()));
        let seen = applied.clone();
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if !line.contains("flag snapshot applied") {
                    continue;
                }
                let at = line
                    .split_whitespace()
                    .next()
                    .and_then(|t| humantime::parse_rfc3339(t).ok());
                let version = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("version="))
                    .and_then(|v| v.parse::<u64>().ok());
                if let (Some(at), Some(version)) = (at, version) {
                    seen.lock().unwrap().entry(version).or_insert(at);
                }
            }
        });
        Router {
            child,
            admin,
            applied,
        }
    }

    fn reads(&self) -> f64 {
        http_get(self.admin, "/metrics")
            .lines()
            .filter(|l| l.starts_with("switchyard_flags_store_reads_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() {
    let o = options();
    let scratch = tempfile::tempdir().unwrap();
    let port = free_addr().port();
    let mut emulator = Command::new("java")
        .current_dir(&o.ddb_lib)
        .arg(format!(
            "-Djava.library.path={}",
            o.ddb_lib.join("DynamoDBLocal_lib").display()
        ))
        .args([
            "-jar",
            "DynamoDBLocal.jar",
            "-disableTelemetry",
            "-inMemory",
        ])
        .args(["-port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("java starts DynamoDB Local");
    let url = format!("dynamodb://flags?region=us-east-1&endpoint=http://127.0.0.1:{port}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = rt.block_on(DynamoStore::connect(&DynamoUrl::parse(&url).unwrap()));
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(e) = rt.block_on(store.create_tables()) {
        assert!(
            Instant::now() < deadline,
            "DynamoDB Local did not come up: {e}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let flip = |i: usize| -> (u64, SystemTime) {
        let target = if i.is_multiple_of(2) { "new" } else { "legacy" };
        let write = FlagWrite {
            evacuation: None,
            ramp: None,
            hold: Default::default(),
            jobs: None,
            tenant: "acme".into(),
            placing: Some(Placing::Pinned(target.into())),
            seal: None,
            shadow: None,
            by: "propbench".into(),
            reason: format!("flip {i}"),
            expect_version: None,
            force: false,
        };
        rt.block_on(store.write(&write, None))
            .expect("the flip is written");
        let returned = SystemTime::now();
        (rt.block_on(store.version()).unwrap(), returned)
    };
    flip(1);

    let upstream = stub_upstream();
    eprintln!("starting {} routers", o.routers);
    let routers: Vec<Router> = (0..o.routers)
        .map(|i| Router::start(&o, &scratch.path().join(format!("r{i}")), &url, upstream))
        .collect();
    let wait_all = |version: u64| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !routers
            .iter()
            .all(|r| r.applied.lock().unwrap().contains_key(&version))
        {
            assert!(
                Instant::now() < deadline,
                "a router never applied version {version}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait_all(1);

    // Idle: the reads a router makes a second with nothing changing.
    let before: Vec<f64> = routers.iter().map(Router::reads).collect();
    let idle_from = Instant::now();
    std::thread::sleep(o.idle);
    let after: Vec<f64> = routers.iter().map(Router::reads).collect();
    let idle_s = idle_from.elapsed().as_secs_f64();
    let per_router: Vec<f64> = (before.iter().zip(&after))
        .map(|(b, a)| (a - b) / idle_s)
        .collect();
    let idle_reads = per_router.iter().sum::<f64>() / per_router.len() as f64;

    eprintln!("flipping {} times", o.flips);
    let mut lags: Vec<f64> = Vec::new();
    for i in 0..o.flips {
        // A random pause, so flips land at every phase of the routers' polls.
        std::thread::sleep(Duration::from_millis(300 + rand::random::<u64>() % 800));
        let (version, returned) = flip(i);
        wait_all(version);
        for r in &routers {
            let at = r.applied.lock().unwrap()[&version];
            let lag = match at.duration_since(returned) {
                Ok(d) => d.as_secs_f64(),
                Err(e) => -e.duration().as_secs_f64(),
            };
            lags.push(lag * 1000.0);
        }
    }
    lags.sort_by(f64::total_cmp);
    let q = |p: f64| lags[((lags.len() as f64 * p).ceil() as usize).clamp(1, lags.len()) - 1];
    let interval = o
        .poll_ms
        .map_or("the default poll interval".to_owned(), |ms| {
            format!("a {ms} ms poll interval")
        });
    println!(
        "{} routers at {interval}, {} flips ({} samples): applied after the write returned p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; idle store reads {:.2} a second a router",
        o.routers,
        o.flips,
        lags.len(),
        q(0.5),
        q(0.99),
        lags[lags.len() - 1],
        idle_reads
    );
    println!(
        "{}",
        serde_json::json!({
            "routers": o.routers,
            "poll_interval_ms": o.poll_ms,
            "flips": o.flips,
            "p50_ms": q(0.5),
            "p99_ms": q(0.99),
            "max_ms": lags[lags.len() - 1],
            "idle_reads_per_router_per_s": idle_reads,
        })
    );
    drop(routers);
    let _ = emulator.kill();
    let _ = emulator.wait();
}
