//! The hot path's steps on their own: tenant extraction per extractor kind, the pick
//! (snapshot lookup and target choice) from a thousand to a million tenants, and building and
//! swapping a million-tenant snapshot; and, off the hot path, the console's tenant table at a
//! million tenants (its first page, a search, a filter, a page deep in the table).
//!
//! `cargo bench -p switchyard-benches`

use std::hint::black_box;
use std::time::Duration;

use base64::Engine;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use flag_store::{FlagState, Load, TargetId, Update};
use switchyard::policy::path::normalize;
use switchyard::policy::pick::{AllHealthy, pick};
use switchyard::policy::route::UploadPace;
use switchyard::policy::tenant::{Extractor, RequestFacts, extract, request_host};
use switchyard::policy::{Route, RouteKind};
use switchyard_benches::*;

fn extraction(c: &mut Criterion) {
    let mut g = c.benchmark_group("extract");
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let jwt = format!(
        "Bearer {}.{}.c2lnbmF0dXJl",
        b64.encode(r#"{"alg":"RS256","typ":"JWT"}"#),
        b64.encode(r#"{"sub":"user-42","tenant_id":"acme","iat":1700000000,"exp":1900000000,"scope":"read write"}"#)
    );
    let cases = [
        (
            "header",
            "header:x-tenant-id",
            parts(
                http::Request::get("/orders")
                    .header("x-tenant-id", "acme")
                    .header("accept", "*/*"),
            ),
        ),
        (
            "host",
            "host:.app.example.com",
            parts(http::Request::get("/orders").header("host", "acme.app.example.com")),
        ),
        (
            "path",
            "path:/t/",
            parts(http::Request::get("/t/acme/orders/17")),
        ),
        (
            "jwt",
            "jwt:tenant_id",
            parts(http::Request::get("/orders").header("authorization", jwt.as_str())),
        ),
    ];
    for (name, spec, parts) in &cases {
        let rules = [Extractor::parse(spec).unwrap()];
        // What the proxy does before extracting: the host checked, the path in normal form.
        let facts = |parts| RequestFacts {
            parts,
            host: request_host(parts).ok().flatten(),
            path: parts.uri.path(),
            client_cn: None,
        };
        assert_eq!(extract(&rules, &facts(parts)).unwrap().unwrap().id, "acme");
        g.bench_function(*name, |b| {
            b.iter(|| {
                let parts = black_box(parts);
                let path = normalize(parts.uri.path()).unwrap();
                let facts = RequestFacts {
                    path: &path,
                    ..facts(parts)
                };
                black_box(extract(black_box(&rules), &facts).unwrap().map(|t| t.from))
            })
        });
    }
    g.finish();
}

fn route() -> Route {
    Route {
        name: "api".into(),
        path_prefix: "/".into(),
        kind: RouteKind::Flagged,
        require_tenant: false,
        timeout: Duration::from_secs(30),
        try_timeout: None,
        idle_timeout: Duration::from_secs(60),
        upload: UploadPace {
            timeout: Duration::from_secs(60),
            min_rate: 1024,
        },
        max_body_bytes: None,
        upgrades: vec!["websocket".into()],
        shadow_methods: Vec::new(),
    }
}

fn picks(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick");
    let route = route();
    for split in [false, true] {
        for n in [1_000, 100_000, 1_000_000] {
            let snap = snapshot(n, split);
            let ids = lookups(n, 4096);
            let mut i = 0;
            let mode = if split { "split" } else { "pinned" };
            g.bench_function(format!("{mode}/{n}"), |b| {
                b.iter(|| {
                    i = (i + 1) & 4095;
                    let tenant = ids[i].as_str();
                    black_box(pick(
                        &snap,
                        &route,
                        Some(tenant),
                        || flag_store::sticky::key_hash(tenant, b"user-42"),
                        TargetId(0),
                        &AllHealthy,
                    ))
                })
            });
        }
    }
    g.finish();
}

fn snapshot_swap(c: &mut Criterion) {
    let mut g = c.benchmark_group("snapshot");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    let state = FlagState::new(targets());
    g.bench_function("build_and_swap/1000000", |b| {
        b.iter_batched(
            || load(1_000_000, false),
            |load| black_box(state.apply_now(load)),
            BatchSize::PerIteration,
        )
    });
    // What a DynamoDB router does on every flag write: apply the changed items to the million
    // tenants and swap. One tenant flipped, then a batch of a thousand.
    state.apply_now(load(1_000_000, false));
    for changed in [1, 1000] {
        let mut version = 1;
        g.bench_function(format!("delta_and_swap/{changed}/1000000"), |b| {
            b.iter_batched(
                || {
                    version += 1;
                    let mut delta = load(changed, version % 2 == 0);
                    delta.version = version;
                    delta
                },
                |delta: Load| black_box(state.apply_update(Update::Delta(delta))),
                BatchSize::PerIteration,
            )
        });
    }
    // What a file-store router does every time the file changes: read and parse the file,
    // then build the snapshot.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = flag_store::FileStore::new(dir.path().join("flags.json"));
    let items: Vec<_> = load(100_000, false)
        .items
        .into_iter()
        .filter_map(|l| l.item.ok())
        .collect();
    store.create(&items).expect("the flag file is written");
    g.bench_function("file_load/100000", |b| {
        b.iter(|| black_box(store.load().expect("the file parses").items.len()))
    });
    g.bench_function("file_load_and_build/100000", |b| {
        b.iter(|| black_box(state.apply_now(store.load().expect("the file parses"))))
    });
    // The local copy's write after a change (the most a crash loses is the pacing interval
    // plus this): a million tenants serialised and replaced atomically, with an fsync.
    let million = FlagState::new(targets());
    million.apply_now(load(1_000_000, false));
    let copy = flag_store::FileStore::new(dir.path().join("copy.json"));
    g.bench_function("local_copy_write/1000000", |b| {
        b.iter(|| {
            let snapshot = million.load_full();
            copy.replace_all(snapshot.version, None, &snapshot.to_items())
                .expect("the copy is written")
        })
    });
    g.finish();
}

/// The console's tenant table at a million tenants: each page is one pass over the snapshot.
fn console_pages(c: &mut Criterion) {
    use switchyard::console::tenants::{Query, page};
    let snap = snapshot(1_000_000, false);
    let mut g = c.benchmark_group("console_page_1m");
    g.sample_size(20).measurement_time(Duration::from_secs(10));
    let cases = [
        ("first_page", ""),
        ("search_prefix", "prefix=tenant-05"),
        ("filter_target", "target=new&mode=pinned"),
        ("deep_page", "after=tenant-0900000"),
    ];
    for (name, query) in cases {
        let q = Query::parse(query, &snap, 0).unwrap();
        g.bench_function(name, |b| {
            b.iter(|| {
                let p = page(black_box(&snap), black_box(&q));
                assert_eq!(p.rows.len(), 50);
                p
            })
        });
    }
    g.finish();
}

criterion_group!(benches, extraction, picks, snapshot_swap, console_pages);
criterion_main!(benches);
