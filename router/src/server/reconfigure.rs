//! Config reload: SIGHUP, or a change of the config file, re-reads it; what may change while
//! serving is swapped in for new requests, and requests in flight finish on the config they
//! started on (each holds its own [`Proxy`]). Routes, targets' endpoints and settings (health
//! checks, ejection, retries, timeouts, TLS) and tenant rules reload; a config that is invalid,
//! or that changes what needs a restart ([`crate::config::restart_needed`]), is rejected whole
//! with every bad key logged and counted, and the running config keeps serving.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::{Config, ConfigError, Problem, differs};
use crate::health::Health;
use crate::observe::metrics::{Families, Family, single};
use crate::proxy::Proxy;

/// How often the config file is read to see whether it changed.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// The listeners: a reload moves the ones whose address changes.
pub trait Rebind: Send + Sync + std::fmt::Debug {
    /// Binds every listener whose address `new` changes from `old`; `Err` names each that
    /// cannot be bound, and then nothing changes.
    fn bind(&self, old: &Config, new: &Config) -> Result<Rebound, Vec<Problem>>;
    /// Serves on what [`Rebind::bind`] bound, and retires the listeners they replace: those
    /// stop accepting, and their connections finish the request in hand and close.
    fn serve(&self, rebound: Rebound);
}

/// Listeners bound for a reload, not serving yet.
#[derive(Debug, Default)]
pub struct Rebound {
    pub traffic: Option<tokio::net::TcpListener>,
    pub tls: Option<tokio::net::TcpListener>,
    pub admin: Option<tokio::net::TcpListener>,
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// Swapped in; the keys that changed.
    Applied(Vec<String>),
    /// The new config is the running one.
    Unchanged,
}

/// The running config, the proxy built from it, and the reload counters.
#[derive(Debug)]
pub struct Reconfigure {
    live: Arc<ArcSwap<Proxy>>,
    listeners: Arc<dyn Rebind>,
    running: Mutex<Running>,
    counts: Arc<Counts>,
}

/// Reload results, for the metrics (which must not hold the proxy they are part of).
#[derive(Debug)]
struct Counts {
    applied: AtomicU64,
    unchanged: AtomicU64,
    rejected: AtomicU64,
    last_ok: AtomicBool,
}

#[derive(Debug)]
struct Running {
    config: Config,
    /// Stops the running config's health checks when the next one takes over.
    checks: watch::Sender<bool>,
}

impl Reconfigure {
    /// Starts the first config's health checks; its counters join the proxy's metrics.
    pub fn new(live: Arc<ArcSwap<Proxy>>, config: Config, listeners: Arc<dyn Rebind>) -> Arc<Self> {
        let proxy = live.load_full();
        let checks = spawn_checks(&proxy, &config);
        let counts = Arc::new(Counts {
            applied: AtomicU64::new(0),
            unchanged: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            last_ok: AtomicBool::new(true),
        });
        proxy.metrics.add_families(counts.clone());
        Arc::new(Reconfigure {
            live,
            listeners,
            running: Mutex::new(Running { config, checks }),
            counts,
        })
    }

    /// Applies `new` over the running config, or rejects it whole (nothing changes) with every
    /// problem named. Logs and counts either way. A config equal to the running one changes
    /// nothing, unless `renew`: then the upstreams are built again all the same (new
    /// connections, TLS files read again), which is what SIGHUP asks for.
    pub fn apply(&self, new: Config, renew: bool) -> Result<Reloaded, Vec<Problem>> {
        let result = self.swap(new, renew);
        match &result {
            Ok(Reloaded::Applied(changed)) if changed.is_empty() => {
                self.counts.applied.fetch_add(1, Ordering::Relaxed);
                self.counts.last_ok.store(true, Ordering::Relaxed);
                tracing::info!(
                    "config reloaded: the same config; upstream connections and TLS files renewed"
                );
            }
            Ok(Reloaded::Applied(changed)) => {
                self.counts.applied.fetch_add(1, Ordering::Relaxed);
                self.counts.last_ok.store(true, Ordering::Relaxed);
                tracing::info!(changed = %changed.join(", "), "config reloaded: new requests use it, requests in flight finish on the old one");
            }
            Ok(Reloaded::Unchanged) => {
                self.counts.unchanged.fetch_add(1, Ordering::Relaxed);
                self.counts.last_ok.store(true, Ordering::Relaxed);
                tracing::info!("config reload: nothing changed");
            }
            Err(problems) => self.rejected(problems),
        }
        result
    }

    /// Reads the config at `path` and applies it ([`Reconfigure::apply`]); a file that cannot
    /// be read or parsed is rejected like an invalid one.
    pub fn apply_file(
        &self,
        path: &std::path::Path,
        renew: bool,
    ) -> Result<Reloaded, Vec<Problem>> {
        match Config::load(path) {
            Ok(config) => self.apply(config, renew),
            Err(e) => {
                let problems = match e {
                    ConfigError::Invalid { problems, .. } => problems,
                    other => vec![Problem::new(path.display().to_string(), other.to_string())],
                };
                self.rejected(&problems);
                Err(problems)
            }
        }
    }

    fn rejected(&self, problems: &[Problem]) {
        self.counts.rejected.fetch_add(1, Ordering::Relaxed);
        self.counts.last_ok.store(false, Ordering::Relaxed);
        let mut all = String::new();
        for p in problems {
            let _ = write!(all, "{}{p}", if all.is_empty() { "" } else { "; " });
        }
        tracing::error!(problems = %all, "config reload rejected: the running config keeps serving");
    }

    fn swap(&self, new: Config, renew: bool) -> Result<Reloaded, Vec<Problem>> {
        let mut running = self.running.lock().expect("reload lock");
        let problems = crate::config::restart_needed(&running.config, &new);
        if !problems.is_empty() {
            return Err(problems);
        }
        let changed = changed_keys(&running.config, &new);
        if changed.is_empty() && !renew {
            return Ok(Reloaded::Unchanged);
        }
        // What can fail comes first: the new sockets, then the new upstreams (TLS files).
        let rebound = self.listeners.bind(&running.config, &new)?;
        let old = self.live.load_full();
        let health = Health::carried_over(&new.target_configs, old.health());
        let proxy = (old.reconfigured(&new, health))
            .map_err(|reason| vec![Problem::new("targets", reason)])?;
        let checks = spawn_checks(&proxy, &new);
        self.live.store(Arc::new(proxy));
        self.listeners.serve(rebound);
        running.checks.send_replace(true);
        *running = Running {
            config: new,
            checks,
        };
        Ok(Reloaded::Applied(changed))
    }

    /// Stops the running config's health checks (at shutdown).
    pub fn stop_checks(&self) {
        let running = self.running.lock().expect("reload lock");
        running.checks.send_replace(true);
    }

    /// Reloads on SIGHUP (renewing the upstreams even when the file is the same) and whenever
    /// the file at `path` differs from `seen` (read every [`WATCH_INTERVAL`]), until `stop`
    /// is set.
    pub async fn watch(
        self: Arc<Self>,
        path: PathBuf,
        mut seen: Option<Vec<u8>>,
        mut hangups: tokio::signal::unix::Signal,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut ticker = tokio::time::interval(WATCH_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let renew = tokio::select! {
                _ = hangups.recv() => {
                    tracing::info!(path = %path.display(), "SIGHUP: reloading the config");
                    seen = std::fs::read(&path).ok();
                    true
                }
                _ = ticker.tick() => {
                    let now = std::fs::read(&path).ok();
                    if now.is_none() || now == seen {
                        continue;
                    }
                    tracing::info!(path = %path.display(), "the config file changed: reloading it");
                    seen = now;
                    false
                }
                _ = crate::shutdown::until_set(&mut stop) => return,
            };
            let this = self.clone();
            let path = path.clone();
            // Reading TLS files and building clients is blocking work.
            let _ = tokio::task::spawn_blocking(move || this.apply_file(&path, renew)).await;
        }
    }
}

/// Starts the health checks of `config`'s targets for `proxy`; they stop when the returned
/// switch is set.
fn spawn_checks(proxy: &Proxy, config: &Config) -> watch::Sender<bool> {
    let (stop, stopped) = watch::channel(false);
    crate::health::spawn_checks(
        proxy.health(),
        &config.target_configs,
        &proxy.connectors(),
        &stopped,
    );
    stop
}

/// The reloadable keys whose values differ: `targets.NAME`, `routes.NAME`, `tenant`, the
/// listeners' addresses, `server.trust_forwarded_headers`.
fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let mut changed = Vec::new();
    for (o, n) in old.target_configs.iter().zip(&new.target_configs) {
        if differs(o, n) {
            changed.push(format!("targets.{}", n.name));
        }
    }
    for (o, n) in old.routes.iter().zip(&new.routes) {
        if differs(o, n) {
            changed.push(format!("routes.{}", n.name));
        }
    }
    if differs(&old.tenant, &new.tenant) {
        changed.push("tenant".into());
    }
    let tls_listen = |c: &Config| c.server.tls.as_ref().map(|t| t.listen);
    for (key, o, n) in [
        (
            "server.listen",
            Some(old.server.listen),
            Some(new.server.listen),
        ),
        (
            "server.admin_listen",
            Some(old.server.admin_listen),
            Some(new.server.admin_listen),
        ),
        ("server.tls.listen", tls_listen(old), tls_listen(new)),
    ] {
        if o != n {
            changed.push(key.into());
        }
    }
    if old.server.trust_forwarded_headers != new.server.trust_forwarded_headers {
        changed.push("server.trust_forwarded_headers".into());
    }
    changed
}

impl Families for Counts {
    fn collect(&self, out: &mut Vec<prometheus::proto::MetricFamily>) {
        let reloads = Family::counter(
            "switchyard_config_reloads_total",
            "Config reloads (SIGHUP or a changed file): applied, unchanged (the same config), or rejected whole.",
            &["result"],
        );
        for (result, n) in [
            ("applied", &self.applied),
            ("unchanged", &self.unchanged),
            ("rejected", &self.rejected),
        ] {
            reloads.set(&[result], n.load(Ordering::Relaxed) as f64);
        }
        reloads.into(out);
        single(
            out,
            (
                "switchyard_config_last_reload_successful",
                "gauge",
                "1 unless the last config reload was rejected (the running config is then older than the file).",
            ),
            f64::from(u8::from(self.last_ok.load(Ordering::Relaxed))),
        );
    }
}
