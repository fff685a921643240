//! One request over loopback: sent straight to the upstream, and through a Switchyard router
//! in front of the same upstream, in one group, so the router's added latency reads as the
//! difference. Client, router and upstream share one single-threaded runtime: the figure is
//! the router's own work per request, free of cross-core wake-ups.
//!
//! `cargo bench -p switchyard-benches --bench loopback`

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

const BODY: &[u8] = &[b'x'; 100];

async fn upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = stream.set_nodelay(true);
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                TokioIo::new(stream),
                service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(BODY))))
                }),
            ));
        }
    });
    addr
}

async fn connect(addr: SocketAddr) -> SendRequest<Empty<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn request(sender: &mut SendRequest<Empty<Bytes>>) {
    sender.ready().await.unwrap();
    let req = hyper::Request::get("/orders/42")
        .header("host", "bench")
        .header("x-tenant-id", "acme")
        .body(Empty::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), BODY.len());
}

fn loopback(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut direct, mut routed, router) = rt.block_on(async {
        let up = upstream().await;
        std::fs::write(
            dir.path().join("flags.json"),
            r#"{"version":1,"items":[{"tenant":"acme","target":"app","version":1}]}"#,
        )
        .unwrap();
        let config = switchyard::Config::parse(
            &format!(
                r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[flags]
source = "file:flags.json"
default_target = "app"
[tenant]
from = ["header:x-tenant-id"]
[targets.app]
endpoints = ["http://{up}"]
[[routes]]
name = "api"
path_prefix = "/"
"#
            ),
            dir.path(),
            "loopback bench",
        )
        .unwrap();
        let router = switchyard::Router::start(config).await.unwrap();
        (connect(up).await, connect(router.addr()).await, router)
    });
    let mut g = c.benchmark_group("loopback");
    g.bench_function("direct", |b| b.iter(|| rt.block_on(request(&mut direct))));
    g.bench_function("via_switchyard", |b| {
        b.iter(|| rt.block_on(request(&mut routed)))
    });
    g.finish();
    rt.block_on(router.shutdown());
}

criterion_group!(benches, loopback);
criterion_main!(benches);
