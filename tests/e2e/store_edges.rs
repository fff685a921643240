//! The flag store at the edges of a migration, against a real DynamoDB Local and the real
//! binary: a crash right after a batch, a recreated or restored table, `#meta` lost, and items
//! written straight into the table.

use std::path::Path;
use std::time::Instant;

use flag_store::FileStore;
use http::StatusCode;
use nix::sys::signal::Signal;

use crate::dynamo::{Emulator, router_config_file, write};
use crate::support::*;

fn pinned(target: &str) -> Option<flag_store::Placing> {
    Some(pin(target))
}

/// The upstream that answered `tenant` through the router at `addr`.
async fn side(addr: std::net::SocketAddr, tenant: &str) -> String {
    let (status, h, body) = get(&client(), addr, "/", &[("x-tenant-id", tenant)]).await;
    assert_eq!(status, StatusCode::OK, "{tenant}: {body}");
    h["x-upstream"].to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_killed_right_after_a_batch_restarts_on_the_batch_while_the_store_is_down() {
    let mut emulator = Emulator::start().await;
    let store = emulator.store().await;
    let tenants: Vec<String> = (0..10).map(|i| format!("tenant-{i}")).collect();
    for t in &tenants {
        store
            .write(&write(t, pinned("legacy"), "alice", None), None)
            .await
            .unwrap();
    }
    let setup = Setup::new().await;
    let config = router_config_file(&setup, &emulator.url());
    let router = Binary::serve(Path::new(&config));
    assert_eq!(side(router.addr, "tenant-0").await, "legacy");

    // The batch, then the crash as soon as the local copy holds it.
    let batch_at = Instant::now();
    for t in &tenants {
        store
            .write(&write(t, pinned("new"), "alice", None), None)
            .await
            .unwrap();
    }
    let version = store.version().await.unwrap();
    let copy = FileStore::new(setup.dir.path().join("flags-cache.json"));
    wait_for("the local copy to hold the batch", || {
        copy.load().is_ok_and(|l| l.version == version)
    })
    .await;
    let window = batch_at.elapsed();
    router.signal(Signal::SIGKILL);
    drop(router);
    emulator.stop();

    let router = Binary::serve(Path::new(&config));
    for t in &tenants {
        assert_eq!(side(router.addr, t).await, "new", "{t} after the restart");
    }
    let (status, _, body) = get(&client(), router.admin_addr, "/readyz", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    eprintln!(
        "batch of 10 written to the store and the local copy in {} ms",
        window.as_millis()
    );
}
