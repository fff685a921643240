//! Fixtures shared by the benchmarks: flag tables of a given size, built the way a store
//! load builds them, and a free loopback address for a process to listen on.

use flag_store::{FlagItem, Load, LoadedItem, Mode, Snapshot, Targets};

/// A loopback address no one listens on right now.
pub fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a loopback port")
        .local_addr()
        .expect("a bound socket has an address")
}

pub fn targets() -> Targets {
    Targets::new(["legacy", "new"])
}

pub fn tenant(i: usize) -> String {
    format!("tenant-{i:07}")
}

/// A load of `n` tenants, pinned (alternating sides) or split 90/10.
pub fn load(n: usize, split: bool) -> Load {
    let items = (0..n)
        .map(|i| {
            let mut item = FlagItem {
                tenant: tenant(i),
                version: 1,
                updated_by: Some("bench".into()),
                reason: Some("batch 1".into()),
                ..Default::default()
            };
            if split {
                item.mode = Some(Mode::Split);
                item.weights = Some([("legacy".into(), 90), ("new".into(), 10)].into());
            } else {
                item.mode = Some(Mode::Pinned);
                item.target = Some(if i % 2 == 0 { "legacy" } else { "new" }.into());
            }
            LoadedItem {
                location: String::new(),
                item: Ok(item),
            }
        })
        .collect();
    Load {
        version: 1,
        items,
        identity: None,
        seals: Vec::new(),
    }
}

pub fn snapshot(n: usize, split: bool) -> Snapshot {
    let snap = Snapshot::build(load(n, split), &targets(), None);
    assert_eq!(snap.len(), n);
    snap
}

/// Tenant ids to look up, in a scattered order so lookups are not all cache-hot.
pub fn lookups(n: usize, count: usize) -> Vec<String> {
    (0..count).map(|k| tenant((k * 7919 + 13) % n)).collect()
}

/// A request's head for extraction benchmarks.
pub fn parts(req: http::request::Builder) -> http::request::Parts {
    req.body(()).expect("a valid request").into_parts().0
}
