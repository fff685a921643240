//! Flipping a tenant under load: no request fails, and once the router has the new snapshot,
//! no request of the tenant reaches the old side.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use http::StatusCode;

use crate::support::*;

const FLIPS: usize = 200;
const CLIENTS: usize = 16;
/// Requests that must complete between two flips, so every window is exercised.
const REQUESTS_PER_WINDOW: u64 = 24;

/// One completed request: logical send and finish ticks, and who answered.
struct Sample {
    sent: u64,
    done: u64,
    upstream: String,
}

/// One flip: the tick its write started, the tick the router was seen on it, its target.
struct FlipRecord {
    write_started: u64,
    observed: u64,
    target: &'static str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_flips_under_load_lose_no_request_and_never_reach_the_old_side() {
    let setup = Setup::new().await;
    setup.set("acme", pin("legacy"));
    let router = setup.start().await;
    let addr = router.addr();
    let clock = Arc::new(AtomicU64::new(0));
    let completed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));

    let mut load = Vec::new();
    for _ in 0..CLIENTS {
        let (clock, completed, stop) = (clock.clone(), completed.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let c = client();
            let mut samples = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let sent = clock.fetch_add(1, Ordering::SeqCst);
                let (status, headers, body) =
                    get(&c, addr, "/orders", &[("x-tenant-id", "acme")]).await;
                let done = clock.fetch_add(1, Ordering::SeqCst);
                assert_eq!(
                    status,
                    StatusCode::OK,
                    "a request failed during flips: {body}"
                );
                samples.push(Sample {
                    sent,
                    done,
                    upstream: headers["x-upstream"].to_str().unwrap().to_owned(),
                });
                completed.fetch_add(1, Ordering::SeqCst);
            }
            samples
        }));
    }

    let mut flips = Vec::new();
    for i in 0..FLIPS {
        let target = if i % 2 == 0 { "new" } else { "legacy" };
        let write_started = clock.fetch_add(1, Ordering::SeqCst);
        let version = setup.set("acme", pin(target));
        wait_version(&router, version).await;
        let observed = clock.fetch_add(1, Ordering::SeqCst);
        flips.push(FlipRecord {
            write_started,
            observed,
            target,
        });
        let mark = completed.load(Ordering::SeqCst);
        wait_for("requests between flips", || {
            completed.load(Ordering::SeqCst) >= mark + REQUESTS_PER_WINDOW
        })
        .await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut samples = Vec::new();
    for task in load {
        samples.extend(task.await.unwrap());
    }

    // A request sent after flip k was observed and finished before flip k+1's write began
    // must have reached flip k's target.
    let mut checked = 0;
    for (k, flip) in flips.iter().enumerate() {
        let next_write = flips.get(k + 1).map_or(u64::MAX, |f| f.write_started);
        for s in samples
            .iter()
            .filter(|s| s.sent > flip.observed && s.done < next_write)
        {
            assert_eq!(
                s.upstream, flip.target,
                "flip {k}: a request sent after the new snapshot was seen reached the old side"
            );
            checked += 1;
        }
    }
    assert!(
        checked >= FLIPS,
        "only {checked} requests fell inside flip windows"
    );
    let total = samples.len() as u64;
    assert_eq!(
        setup.legacy.seen.tenant("acme") + setup.new.seen.tenant("acme"),
        total,
        "every request reached exactly one side"
    );
    assert_eq!(
        metric(
            &router,
            "switchyard_requests_total{route=\"api\",status=\"5xx\",target=\"legacy\"}"
        )
        .await,
        None
    );
    assert_eq!(
        metric(
            &router,
            "switchyard_requests_total{route=\"api\",status=\"5xx\",target=\"new\"}"
        )
        .await,
        None
    );
    eprintln!("{FLIPS} flips, {total} requests, {checked} checked inside flip windows, 0 failed");
    router.shutdown().await;
}
