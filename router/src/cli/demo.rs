//! `switchyard demo`: two small upstreams that answer with their own name, a demo flag file,
//! and the router on loopback, with the exact commands to try printed. Ctrl-C stops it all.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::server::Router;

/// Starts an upstream on `127.0.0.1:0` that answers every request with its name, the request
/// line and the tenant header, so a person can see where a request went.
pub async fn start_named_upstream(name: &'static str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let service = service_fn(move |req: Request<Incoming>| async move {
                let tenant = req
                    .headers()
                    .get("x-tenant-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_owned();
                let body = format!(
                    "{name}: {} {} (x-tenant-id: {tenant})\n",
                    req.method(),
                    req.uri()
                );
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
            });
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// Picks `preferred` if it is free, else any free loopback port.
async fn free_addr(preferred: SocketAddr) -> SocketAddr {
    match TcpListener::bind(preferred).await {
        Ok(_) => preferred,
        Err(_) => SocketAddr::from(([127, 0, 0, 1], 0)),
    }
}

const DEMO_FLAGS: &str = r#"{
  "version": 1,
  "items": [
    {"tenant":"*","mode":"pinned","target":"legacy","version":1,"updated_by":"demo","reason":"everyone starts on legacy"},
    {"tenant":"acme","mode":"pinned","target":"legacy","version":1,"updated_by":"demo","reason":"demo tenant"},
    {"tenant":"globex","mode":"split","weights":{"legacy":50,"new":50},"version":1,"updated_by":"demo","reason":"demo split tenant"},
    {"tenant":"initech","mode":"pinned","target":"new","sealed":true,"version":1,"updated_by":"demo","reason":"moved and sealed"}
  ]
}
"#;

fn demo_config(
    listen: SocketAddr,
    admin: SocketAddr,
    legacy: SocketAddr,
    new: SocketAddr,
    token_file: &Path,
) -> String {
    format!(
        r#"# Written by `switchyard demo`.
[server]
listen = "{listen}"
admin_listen = "{admin}"
admin_token_file = "{}"
drain_timeout_ms = 5000

[flags]
source = "file:flags.json"
default_target = "legacy"

[tenant]
from = ["header:x-tenant-id", "path:/t/"]
sticky_key = ["header:x-user-id", "client_ip"]

[targets.legacy]
endpoints = ["http://{legacy}"]

[targets.new]
endpoints = ["http://{new}"]

[[routes]]
name = "api"
path_prefix = "/"
"#,
        token_file.display()
    )
}

/// How to invoke this binary in the printed instructions.
fn self_command() -> String {
    let exe = std::env::current_exe().ok();
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            let candidate = dir.join("switchyard");
            candidate.is_file() && exe.as_deref().is_some_and(|e| same_file(&candidate, e))
        })
    });
    match (on_path, exe) {
        (true, _) | (false, None) => "switchyard".into(),
        (false, Some(exe)) => exe.display().to_string(),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

pub async fn run(
    listen: SocketAddr,
    admin_listen: SocketAddr,
    dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let (dir, temporary) = match dir {
        Some(d) => (d, false),
        None => (
            std::env::temp_dir().join(format!("switchyard-demo-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir)?;
    let legacy = start_named_upstream("legacy").await?;
    let new = start_named_upstream("new").await?;
    let listen = free_addr(listen).await;
    let admin_listen = free_addr(admin_listen).await;
    let flags_path = dir.join("flags.json");
    if !flags_path.exists() {
        std::fs::write(&flags_path, DEMO_FLAGS)?;
    }
    // The console's writes (and the admin API's) need a token: a fresh one each run.
    let token_path = dir.join("admin.token");
    let token: String = (0..24)
        .map(|_| char::from(b"abcdefghijkmnpqrstuvwxyz23456789"[rand::random_range(0..32)]))
        .collect();
    std::fs::write(&token_path, format!("{token}\n"))?;
    let config_path = dir.join("router.toml");
    std::fs::write(
        &config_path,
        demo_config(listen, admin_listen, legacy, new, &token_path),
    )?;
    let config = Config::load(&config_path)?;
    let mut stop = crate::shutdown::StopSignals::install()?;
    let router = Router::start(config).await?;
    let (p, a) = (router.addr(), router.admin_addr());
    let me = self_command();
    let store = format!("file:{}", flags_path.display());
    println!(
        r#"Switchyard demo is running.
  proxy      http://{p}
  admin      http://{a}
  console    http://{a}/ui   (admin token for writes: {token})
  upstreams  legacy http://{legacy}   new http://{new}
  config     {config}
  flags      {flags}

Try it (in another terminal):
  curl -H 'x-tenant-id: acme' http://{p}/hello            # acme is pinned to legacy
  {me} flags set acme --target new --reason "batch 1" --store {store}
  curl -H 'x-tenant-id: acme' http://{p}/hello            # now answered by new, no restart
  curl -H 'x-tenant-id: globex' -H 'x-user-id: u42' http://{p}/hello   # split 50/50, sticky per user
  {me} flags set globex --split legacy=90,new=10 --reason "dial down" --store {store}
  {me} flags set initech --target legacy --reason "roll back" --store {store}   # refused: sealed
  {me} flags list --store {store}
  {me} flags set hooli --target legacy --shadow new:100 --reason "compare first" --store {store}
  curl -H 'x-tenant-id: hooli' http://{p}/hello            # answered by legacy, copied to new
  {me} shadow report hooli --admin {a} --token-file {token_file}   # the sides differ: a mismatch
  curl 'http://{a}/explain?tenant=acme&path=/hello'
  curl http://{a}/metrics

Ctrl-C stops everything."#,
        config = config_path.display(),
        token_file = token_path.display(),
        flags = flags_path.display(),
    );
    stop.recv().await;
    println!("\nstopping: draining in-flight requests");
    router.shutdown().await;
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
