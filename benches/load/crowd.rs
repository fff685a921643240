//! One client's idle connections beside another client's requests: Switchyard at its default
//! `max_connections` (10,000), one address (127.0.0.1) holding that many connections that
//! never send a byte, each opened again as soon as the router closes it, while a second
//! address (127.0.0.2) makes requests at a fixed pace, each on a new connection. The second
//! client's latency before the crowd and during it, side by side.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

use crate::{Options, Proxy, REQUEST, metric, parse_answer};

/// The silent connections: the router's default cap.
const CROWD: usize = 10_000;
/// The other client's requests a second.
const RATE: u32 = 200;

const ATTACKER: [u8; 4] = [127, 0, 0, 1];
const CLIENT: [u8; 4] = [127, 0, 0, 2];

pub(crate) fn crowd_test(
    o: &Options,
    scratch: &Path,
    upstream: SocketAddr,
) -> Result<Value, String> {
    let dir = scratch.join("crowd");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let proxy = Proxy::switchyard(o, &dir, upstream, &[("acme", 1)])?;
    let admin = proxy.admin.ok_or("no admin listener")?;
    let addr = proxy.addr;
    let duration = if o.quick {
        Duration::from_secs(1)
    } else {
        o.duration
    };
    let crowd = if o.quick { 500 } else { CROWD };

    eprintln!("crowd: a client's requests on new connections, alone");
    let alone = paced_new_connections(addr, duration)?;

    eprintln!("crowd: the same beside {crowd} silent connections from one address");
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let opened = Arc::new(AtomicU64::new(0));
    let crowd_thread = {
        let opened = opened.clone();
        std::thread::spawn(move || hold_silent(addr, crowd, &opened, stopped))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while opened.load(Ordering::Relaxed) < crowd as u64 {
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {crowd} silent connections opened in 60 s (raise ulimit -n)",
                opened.load(Ordering::Relaxed)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let shed = "switchyard_connections_shed_total{reason=\"idle_for_room\"}";
    let shed_before = metric(admin, shed).unwrap_or(0.0);
    let crowded = paced_new_connections(addr, duration)?;
    let shed_during = metric(admin, shed).unwrap_or(0.0) - shed_before;
    let _ = stop.send(());
    let reopened = crowd_thread
        .join()
        .map_err(|_| "the crowd thread panicked")?;
    let ratio = crowded.p99_us as f64 / alone.p99_us.max(1) as f64;
    println!(
        "crowd ({crowd} silent connections from one address): another client's p50 {} us / p99 {} us alone, {} us / {} us beside them ({ratio:.1}x); {} failed; {shed_during} closed to make room, {reopened} reopened",
        alone.p50_us, alone.p99_us, crowded.p50_us, crowded.p99_us, crowded.errors,
    );
    if crowded.errors > 0 || alone.errors > 0 {
        return Err(format!(
            "requests failed: {} alone, {} beside the crowd ({})",
            alone.errors,
            crowded.errors,
            crowded.first_error.as_deref().unwrap_or("")
        ));
    }
    Ok(json!({
        "silent_connections": crowd,
        "rate_per_s": RATE,
        "alone": alone.to_json(),
        "crowded": crowded.to_json(),
        "p99_ratio": ratio,
        "closed_for_room": shed_during,
        "reopened": reopened,
    }))
}

/// `n` connections from `ATTACKER` that never send a byte, each opened again as soon as the
/// router closes it, until `stop`. Returns how many were opened again.
fn hold_silent(
    addr: SocketAddr,
    n: usize,
    opened: &AtomicU64,
    stop: std::sync::mpsc::Receiver<()>,
) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let reopened = Arc::new(AtomicU64::new(0));
        let first = Arc::new(AtomicU64::new(0));
        for _ in 0..n {
            let (reopened, first) = (reopened.clone(), first.clone());
            tokio::spawn(async move {
                let mut again = false;
                loop {
                    let Ok(mut s) = connect_from(ATTACKER, addr).await else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    if again {
                        reopened.fetch_add(1, Ordering::Relaxed);
                    } else {
                        first.fetch_add(1, Ordering::Relaxed);
                    }
                    again = true;
                    let mut buf = [0u8; 64];
                    let _ = s.read(&mut buf).await;
                }
            });
        }
        let progress = async {
            loop {
                opened.store(first.load(Ordering::Relaxed), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::select! {
            () = progress => {}
            _ = tokio::task::spawn_blocking(move || stop.recv()) => {}
        }
        reopened.load(Ordering::Relaxed)
    })
}

async fn connect_from(from: [u8; 4], addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket.connect(addr).await
}

/// The figures of one paced run.
struct Paced {
    requests: u64,
    errors: u64,
    first_error: Option<String>,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
}

impl Paced {
    fn to_json(&self) -> Value {
        json!({
            "requests": self.requests,
            "errors": self.errors,
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "max_us": self.max_us,
        })
    }
}

/// `RATE` requests a second from `CLIENT` for `duration`, each on a new connection (connect,
/// request, answer, close), timed from the connect; a request not answered in 60 s fails.
fn paced_new_connections(addr: SocketAddr, duration: Duration) -> Result<Paced, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let interval = Duration::from_secs(1) / RATE;
        let count = (duration.as_secs_f64() * f64::from(RATE)) as u32;
        let start = tokio::time::Instant::now();
        let mut tasks = Vec::new();
        for i in 0..count {
            tokio::time::sleep_until(start + interval * i).await;
            tasks.push(tokio::spawn(async move {
                let began = Instant::now();
                let exchange = tokio::time::timeout(Duration::from_secs(60), one_request(addr));
                match exchange.await {
                    Ok(Ok(())) => Ok(began.elapsed().as_micros() as u64),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err("no answer in 60 s".to_owned()),
                }
            }));
        }
        let mut latencies = Vec::new();
        let (mut errors, mut first_error) = (0, None);
        for t in tasks {
            match t.await.map_err(|e| e.to_string())? {
                Ok(us) => latencies.push(us),
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        latencies.sort_unstable();
        let q = |q: f64| {
            (latencies.get(
                ((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)),
            ))
            .copied()
            .unwrap_or(0)
        };
        Ok(Paced {
            requests: latencies.len() as u64,
            errors,
            first_error,
            p50_us: q(0.5),
            p99_us: q(0.99),
            max_us: latencies.last().copied().unwrap_or(0),
        })
    })
}

async fn one_request(addr: SocketAddr) -> Result<(), String> {
    let mut s = connect_from(CLIENT, addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    s.write_all(REQUEST)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        if parse_answer(&buf)?.is_some() {
            return Ok(());
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) => return Err("closed before the answer".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}
