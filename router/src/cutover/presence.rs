//! The router's presence record: written at start, refreshed every heartbeat and at once when
//! the flag version moves or an acknowledgement changes, deleted at a clean shutdown. A failed
//! write is logged, never fatal: routing does not depend on it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flag_store::FlagState;
use flag_store::fleet::{Fleet, Presence, now_ms};
use tokio::sync::watch;

/// Longest a shutdown waits for the record's deletion: a store that hangs does not hold up
/// the exit (the record then goes stale, which `switchyard fleet` shows).
pub const DEREGISTER_WAIT: Duration = Duration::from_secs(2);

/// This router's id: the configured one, or its host name and a random suffix (two tasks on
/// one host, or a restarted one, are told apart).
pub fn router_id(configured: Option<&str>) -> String {
    if let Some(id) = configured {
        return id.to_owned();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let host: String = (host.trim().chars())
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' => c,
            _ => '-',
        })
        .take(48)
        .collect();
    let host = if host.is_empty() {
        "router".into()
    } else {
        host
    };
    format!("{host}-{:06x}", rand::random::<u32>() & 0xff_ffff)
}

/// Keeps the record fresh until `stop` is set, then deletes it.
pub struct Heartbeat {
    pub fleet: Fleet,
    pub id: String,
    pub flags: Arc<FlagState>,
    pub interval: Duration,
    /// The holds this router acknowledges as drained.
    pub drained: watch::Receiver<Vec<String>>,
    /// Where the ramps' evidence is counted.
    pub metrics: Arc<crate::observe::metrics::Metrics>,
    /// The shadow comparisons' per-tenant counts the record carries, at most so many.
    pub shadow_counts: ShadowCounts,
}

/// Reads the shadow comparisons' per-tenant `[compared, matched]`, at most so many tenants.
pub type ShadowCounts = Box<dyn Fn(usize) -> BTreeMap<String, [u64; 2]> + Send + Sync>;

impl Heartbeat {
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let started_ms = now_ms();
        let mut versions = self.flags.subscribe();
        let mut version = self.flags.load().version;
        let mut version_since_ms = started_ms;
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // A sender gone (never while the router runs) leaves the heartbeat to the tick.
            tokio::select! {
                biased;
                _ = crate::shutdown::until_set(&mut stop) => break,
                Ok(()) = versions.changed() => {}
                Ok(()) = self.drained.changed() => {}
                _ = tick.tick() => {}
            }
            let now = now_ms();
            let current = self.flags.load().version;
            if current != version {
                (version, version_since_ms) = (current, now);
            }
            let snapshot = self.flags.load();
            let ramps = self.metrics.ramps.figures(snapshot.targets(), |id| {
                (snapshot.ramps().iter()).any(|r| r.id == id && r.item.state.is_active())
            });
            drop(snapshot);
            let presence = Presence {
                ramps,
                shadow: (self.shadow_counts)(flag_store::fleet::MAX_SHADOW_TENANTS),
                router: self.id.clone(),
                build: env!("CARGO_PKG_VERSION").to_owned(),
                started_ms,
                flag_version: version,
                version_since_ms,
                snapshot_ms: now.saturating_sub(self.flags.age().as_millis() as u64),
                seen_ms: now,
                drained: self.drained.borrow().clone(),
            };
            if let Err(e) = self.fleet.put(&presence).await {
                tracing::warn!(router = %self.id, error = %flag_store::error::Chain(&e), "presence record not written");
            }
        }
        match tokio::time::timeout(DEREGISTER_WAIT, self.fleet.remove(&self.id)).await {
            Ok(Ok(())) => tracing::info!(router = %self.id, "left the fleet"),
            Ok(Err(e)) => {
                tracing::warn!(router = %self.id, error = %flag_store::error::Chain(&e), "presence record not deleted")
            }
            Err(_) => {
                tracing::warn!(router = %self.id, "presence record not deleted: the store did not answer")
            }
        }
    }
}
