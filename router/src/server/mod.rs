//! The router's life cycle: load flags, bind the traffic and admin listeners, serve, and on
//! shutdown stop accepting, drain in-flight requests and tunnels (bounded by the drain
//! timeout), then stop the reloader and the admin listener.

mod admin_listener;
pub mod http2;
pub mod reconfigure;
mod slots;
mod tls_edge;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flag_store::dynamodb::{DynamoSource, DynamoStore};
use flag_store::fleet::Fleet;
use flag_store::store::Store;
use flag_store::{FileSource, FileStore, FlagState, Source, StoreUrl, reload};
use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use arc_swap::ArcSwap;

use self::admin_listener::serve_admin;
use self::slots::{Slot, Slots};
use self::tls_edge::{TlsEdge, serve_tls};
use crate::admin::Admin;
use crate::body::{ClientBody, ResponseBody};
use crate::config::Problem;
use crate::config::{Config, Server};
use crate::console::Console;
use crate::cutover::hold::Holds;
use crate::cutover::presence::{DEREGISTER_WAIT, Heartbeat};
use crate::health::Health;
use crate::observe::metrics::Metrics;
use crate::proxy::{Peer, Proxy};
use crate::server::reconfigure::{Rebound, Reconfigure, Reloaded};
use crate::shadow::fleet::FleetView;
use crate::streams::Streams;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({what})")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
}

/// How often idle upstream connections are checked for their timeout and for a close by the
/// upstream.
const IDLE_REAP_INTERVAL: Duration = Duration::from_secs(1);

/// How long shutdown waits for the reloader's last local-copy write.
const RELOADER_STOP_WAIT: Duration = Duration::from_secs(5);
const ADMIN_BACKLOG: u32 = 1024;

/// A running router. Dropping it does not stop it; call [`Router::shutdown`].
#[derive(Debug)]
pub struct Router {
    flags: Arc<FlagState>,
    /// The current config's proxy: each request loads it, a reload swaps it.
    live: Arc<ArcSwap<Proxy>>,
    reconfigure: Arc<Reconfigure>,
    /// Set at shutdown, for tasks started after [`Router::start`] (the config watch).
    background: watch::Receiver<bool>,
    /// The listeners, which a reload may rebind.
    serving: Arc<Serving>,
    /// Set first on shutdown: `/readyz` fails from then on, through the shutdown delay.
    leaving: Arc<AtomicBool>,
    shutdown_delay: Duration,
    stop_background: watch::Sender<bool>,
    reloader: JoinHandle<()>,
    drain_timeout: Duration,
    /// This router's id in the fleet, and its presence record's heartbeat.
    id: String,
    presence: JoinHandle<()>,
}

impl Router {
    /// Loads the flags (a store that cannot be read yet leaves the router not ready, and it
    /// keeps trying), binds both listeners and starts serving.
    pub async fn start(config: Config) -> Result<Router, StartError> {
        let cache = config.flags.cache_path.as_ref().map(FileStore::new);
        let flags = FlagState::with_cache(config.targets.clone(), cache.clone());
        let (stop_background, background) = watch::channel(false);
        let writes_enabled = config.server.admin_token.is_some();
        let mut admin_store = None;
        let store = Store::open(&config.flags.store).await;
        let (store_reads, reloader, fleet) = match &config.flags.store {
            StoreUrl::File(path) => {
                if writes_enabled {
                    admin_store = Some(Store::File(FileStore::new(path)));
                }
                let source = FileSource::new(FileStore::new(path));
                let reloader = start_reloader(
                    source,
                    &flags,
                    cache.as_ref(),
                    config.flags.poll_interval,
                    &background,
                )
                .await;
                (None, reloader, Fleet::File(Fleet::folder(path)))
            }
            StoreUrl::Dynamo(url) => {
                let store = DynamoStore::connect(url).await;
                let reads = store.reads();
                let fleet = Fleet::Dynamo(store.clone());
                if writes_enabled {
                    admin_store = Some(Store::Dynamo(store.clone()));
                }
                let source = DynamoSource::new(store)
                    .reconcile_every(config.flags.reconcile_interval, config.flags.reconcile_pace);
                let reloader = start_reloader(
                    source,
                    &flags,
                    cache.as_ref(),
                    config.flags.poll_interval,
                    &background,
                )
                .await;
                (Some(reads), reloader, fleet)
            }
        };
        let route_names: Vec<String> = config.route_names().map(str::to_owned).collect();
        let target_names: Vec<String> = config.targets.iter().map(|(_, n)| n.to_owned()).collect();
        let health = Health::new(&config.target_configs);
        let streams = Streams::new(
            config.flags.close_moved_streams_after,
            config.flags.default_target,
        );
        let metrics = Arc::new(
            Metrics::new(&route_names, &target_names, flags.clone(), health.clone())
                .with_store_reads(store_reads)
                .with_streams(streams.clone()),
        );
        tokio::spawn(crate::streams::follow_flips(
            streams.clone(),
            flags.clone(),
            background.clone(),
        ));
        let holds = Holds::new(config.fleet.hold_queue, config.fleet.hold_queue_bytes);
        tokio::spawn(crate::cutover::hold::follow(
            holds.clone(),
            flags.clone(),
            background.clone(),
        ));
        metrics.add_families(holds.clone());
        let proxy = Proxy::new(
            &config,
            flags.clone(),
            metrics.clone(),
            health,
            streams,
            holds.clone(),
        )
        .map_err(StartError::Tls)?;
        let live = Arc::new(ArcSwap::from_pointee(proxy));
        tokio::spawn(reap_idle_connections(live.clone(), background.clone()));

        let bind = |what, addr, backlog| {
            listen(addr, backlog).map_err(|source| StartError::Bind { what, addr, source })
        };
        let listener = bind(
            "traffic",
            config.server.listen,
            config.server.listen_backlog,
        )?;
        let admin_listener = bind("admin", config.server.admin_listen, ADMIN_BACKLOG)?;
        let leaving = Arc::new(AtomicBool::new(false));
        let id = crate::cutover::presence::router_id(config.fleet.id.as_deref());
        let fleet_view = Arc::new(FleetView::new(Some(fleet.clone()), id.clone()));
        let admin = Arc::new(Admin::new(
            &config,
            flags.clone(),
            live.clone(),
            leaving.clone(),
            admin_store,
            fleet_view.clone(),
        ));
        let console = Console::start(&config, &flags, &live, &store, fleet_view, &background);
        let (tls_edge, tls_listener) = match &config.server.tls {
            None => (None, None),
            Some(t) => {
                let certificates =
                    crate::tls::Certificates::load(&t.certificates).map_err(StartError::Tls)?;
                let server_config =
                    crate::tls::server_config(certificates.clone(), t.client_auth.as_ref())
                        .map_err(StartError::Tls)?;
                let tls_listener = bind("tls", t.listen, config.server.listen_backlog)?;
                tokio::spawn(crate::tls::watch_files(
                    certificates.clone(),
                    t.reload_interval,
                    background.clone(),
                ));
                metrics.set_tls(certificates.clone());
                let edge = TlsEdge {
                    acceptor: tokio_rustls::TlsAcceptor::from(server_config),
                    certificates,
                    handshake_timeout: t.handshake_timeout,
                };
                (Some(edge), Some(tls_listener))
            }
        };
        let slots = Slots::new(
            config.server.max_connections,
            config.server.max_connections_per_address,
        );
        metrics.add_families(slots.clone());
        let serving = Serving::start(
            Serving {
                slots: slots.clone(),
                live: live.clone(),
                server: config.server.clone(),
                tls_edge,
                admin: admin.service().merge(console.routes()),
                background: background.clone(),
                current: std::sync::Mutex::new(None),
            },
            listener,
            tls_listener,
            admin_listener,
        );
        let (addr, admin_addr, tls_addr) = serving.addrs();
        if !admin_addr.ip().is_loopback() {
            tracing::warn!(%admin_addr, writes = writes_enabled, "the admin listener is reachable from other hosts");
        }
        let heartbeat = Heartbeat {
            fleet,
            id: id.clone(),
            flags: flags.clone(),
            interval: config.fleet.heartbeat,
            drained: holds.drained(),
            metrics: metrics.clone(),
            shadow_counts: {
                let shadows = live.load().shadows().clone();
                Box::new(move |max| shadows.counts(max))
            },
        };
        if config.fleet.drive_ramps {
            let driver = crate::cutover::ramp::Driver {
                store,
                fleet: heartbeat.fleet.clone(),
                flags: flags.clone(),
                router: id.clone(),
                lease: config.fleet.ramp_lease,
                live: config.fleet.heartbeat * 3,
                healthy: {
                    let live = live.clone();
                    Arc::new(move |target| {
                        let proxy = live.load();
                        let health = proxy.health();
                        use crate::policy::HealthView as _;
                        health.view(health.now_ms()).is_healthy(target)
                    })
                },
            };
            tokio::spawn(driver.run(background.clone()));
        }
        let presence = tokio::spawn(heartbeat.run(background.clone()));
        let reconfigure = Reconfigure::new(live.clone(), config.clone(), serving.clone());
        let tls_addr = tls_addr.map_or_else(|| "none".to_owned(), |a| a.to_string());
        tracing::info!(router = %id, %addr, %admin_addr, %tls_addr, store = %config.flags.store, "switchyard serving");
        Ok(Router {
            flags,
            live,
            reconfigure,
            background,
            serving,
            leaving,
            shutdown_delay: config.server.shutdown_delay,
            stop_background,
            reloader,
            drain_timeout: config.server.drain_timeout,
            id,
            presence,
        })
    }

    /// The traffic listener's address (a reload may move it).
    pub fn addr(&self) -> SocketAddr {
        self.serving.addrs().0
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.serving.addrs().1
    }

    /// The TLS listener's address, when one is configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.serving.addrs().2
    }

    pub fn flags(&self) -> &Arc<FlagState> {
        &self.flags
    }

    /// This router's id in the fleet (its presence record's name).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The current config's endpoint health.
    pub fn health(&self) -> Arc<Health> {
        self.live.load().health().clone()
    }

    /// Applies a new config while serving ([`Reconfigure::apply`]): new requests use it,
    /// requests in flight finish on the old one; rejected whole when it changes what needs a
    /// restart.
    pub fn reload(&self, config: Config) -> Result<Reloaded, Vec<crate::config::Problem>> {
        self.reconfigure.apply(config, false)
    }

    /// Reloads the config from `path` on each of `hangups` (SIGHUP, installed by the caller
    /// before the router started) and whenever the file changes from `loaded` (its bytes read
    /// before the running config was, so an edit made while the router started is seen),
    /// until shutdown.
    pub fn watch_config(
        &self,
        path: std::path::PathBuf,
        loaded: Option<Vec<u8>>,
        hangups: tokio::signal::unix::Signal,
    ) {
        let reconfigure = self.reconfigure.clone();
        let watch = reconfigure.watch(path, loaded, hangups, self.background.clone());
        tokio::spawn(watch);
    }

    /// Stops accepting, lets in-flight requests and tunnels finish (up to the drain timeout),
    /// then stops everything. Returns whether everything finished within the timeout.
    pub async fn shutdown(self) -> bool {
        self.leaving.store(true, Ordering::Release);
        if !self.shutdown_delay.is_zero() {
            // The balancer sees /readyz fail and deregisters; until it has, it may still send.
            tracing::info!(delay = ?self.shutdown_delay, "shutting down: /readyz fails, serving on for the shutdown delay");
            tokio::time::sleep(self.shutdown_delay).await;
        }
        let Some(listeners) = self.serving.take() else {
            unreachable!("only shutdown takes the listeners, and it takes the router");
        };
        let deadline = tokio::time::Instant::now() + self.drain_timeout;
        let (graceful, admin) = listeners.stop();
        let both = async {
            for g in graceful {
                g.await;
            }
        };
        let drained = tokio::time::timeout_at(deadline, both).await.is_ok();
        let tunnels = self.live.load().tunnels.clone();
        tunnels.drain(deadline).await;
        if !drained {
            tracing::warn!(timeout = ?self.drain_timeout, "drain timeout reached; closing the remaining connections");
        }
        self.stop_background.send_replace(true);
        self.reconfigure.stop_checks();
        let _ = admin.task.await;
        // The reloader stops between polls and brings the local copy up to date; a poll stuck
        // on an unreachable store is not waited for long.
        let _ = tokio::time::timeout(RELOADER_STOP_WAIT, self.reloader).await;
        // The presence record goes last: the fleet sees this router until it has drained.
        let _ = tokio::time::timeout(DEREGISTER_WAIT * 2, self.presence).await;
        tracing::info!(drained, "switchyard stopped");
        drained
    }
}

/// Loads the first snapshot from `source` (or, when the store cannot be read, from the local
/// copy), then keeps polling it in the background.
async fn start_reloader<S: Source>(
    mut source: S,
    flags: &Arc<FlagState>,
    cache: Option<&FileStore>,
    interval: Duration,
    stop: &watch::Receiver<bool>,
) -> JoinHandle<()> {
    // The local copy first, when there is one: the store's first load is then built over it,
    // so a tenant whose item the store now holds bad keeps its flag from the copy (as a
    // running router keeps its last good flag), and never falls to a default on a restart.
    let copy = cache.map(|c| match c.load() {
        Ok(load) => {
            let version = load.version;
            flags.apply_local_copy(load, cache.and_then(FileStore::modified));
            (c.path().to_owned(), Ok(version))
        }
        Err(e) => (c.path().to_owned(), Err(e)),
    });
    if let Err(e) = reload::poll_once(&mut source, flags).await {
        let error = flag_store::error::Chain(&e).to_string();
        match copy {
            Some((path, Ok(version))) => {
                tracing::warn!(%error, store = %source.describe(), copy = %path.display(), version, "flag store unreachable at start; routing from the local copy until it answers");
            }
            Some((path, Err(copy_error))) => {
                tracing::warn!(%error, copy = %path.display(), copy_error = %flag_store::error::Chain(&copy_error), "flag store unreachable at start and no usable local copy; flag-routed requests get 503 until it loads");
            }
            None => {
                tracing::warn!(%error, store = %source.describe(), "flag store unreachable at start; flag-routed requests get 503 until it loads");
            }
        }
    }
    tokio::spawn(reload::run(source, flags.clone(), interval, stop.clone()))
}

/// Reaps the current config's pools; a config swapped out closes its pools when its last
/// request ends.
async fn reap_idle_connections(live: Arc<ArcSwap<Proxy>>, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(IDLE_REAP_INTERVAL);
    loop {
        tokio::select! {
            _ = ticker.tick() => live.load().reap_idle_connections(),
            _ = crate::shutdown::until_set(&mut stop) => return,
        }
    }
}

type HttpBuilder = auto::Builder<TokioExecutor>;

/// How the connections the `http1` crate's server hands over are served: HTTP/2 by
/// [`http2`], the rest (upgrades, HTTP/1.0, heads it refuses) by hyper's server.
#[derive(Debug)]
struct Handoff {
    hyper: HttpBuilder,
    h2: http2::Settings,
}

impl Handoff {
    fn new(server: &Server) -> Arc<Self> {
        Arc::new(Handoff {
            hyper: http_builder(server),
            h2: http2::Settings {
                idle_timeout: server.header_read_timeout,
                max_concurrent_streams: server.http2_max_concurrent_streams,
                max_header_list_size: server.max_header_bytes as u32,
                keep_alive_interval: Duration::from_secs(30),
                keep_alive_timeout: Duration::from_secs(10),
            },
        })
    }
}

/// hyper's server, for HTTP/1 only: HTTP/2 never reaches it ([`serve_handoff`]).
fn http_builder(server: &Server) -> HttpBuilder {
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
        .max_buf_size(server.max_header_bytes.max(8192))
        // One flat write of head and body: for the small answers most requests get, cheaper
        // than a vectored write (about 2% more requests a second in the load benchmark).
        .writev(false)
        .keep_alive(true);
    builder
}

/// The next connection. Accept errors (out of file descriptors and the like) are logged and
/// retried after a pause instead of spinning.
async fn accept(listener: &TcpListener, what: &'static str) -> (tokio::net::TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                tracing::warn!(listener = what, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves client connections: HTTP/1.1 on the `http1` crate's server, and what
/// that hands over (HTTP/2, upgrades, HTTP/1.0, heads it refuses) on hyper's. Every
/// connection holds a watcher of `graceful`, so its shutdown waits for both kinds.
async fn serve_traffic(
    listener: TcpListener,
    slots: Arc<Slots>,
    live: Arc<ArcSwap<Proxy>>,
    server: Server,
    draining: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
) -> GracefulShutdown {
    let graceful = GracefulShutdown::new();
    // Shared: each connection's task holds a pointer to it, not a 240-byte copy.
    let handoff = Handoff::new(&server);
    let settings = http1_settings(&server);
    while let Some((slot, stream, peer)) =
        next_connection(&listener, &slots, &mut stop, "traffic").await
    {
        let metrics = live.load().metrics.clone();
        metrics.connection_opened();
        let live = live.clone();
        let client = Peer::new(peer);
        let watcher = graceful.watcher();
        let (handoff, settings) = (handoff.clone(), settings.clone());
        let (draining, stop) = (draining.clone(), stop.clone());
        tokio::spawn(async move {
            let connection = Connection {
                live: &live,
                client: &client,
                slot: &slot,
            };
            let ended = http1::server::serve(
                stream,
                peer,
                &connection,
                &settings,
                &draining,
                stop.clone(),
            )
            .await;
            // Served on by a server that does not say when it is idle: never closed for room.
            if let http1::server::Ended::Handoff(stream) = ended
                && slot.begin()
            {
                // Boxed: the other servers' connections are large, and most connections never
                // need them.
                Box::pin(serve_handoff(stream, live, client, handoff, watcher, stop)).await;
            }
            metrics.connection_closed();
        });
    }
    graceful
}

/// The settings of the `http1` crate's server, for every listener.
fn http1_settings(server: &Server) -> http1::server::Settings {
    http1::server::Settings {
        header_read_timeout: server.header_read_timeout,
        first_byte_timeout: server.first_byte_timeout,
        max_header_bytes: server.max_header_bytes,
        added_headers: crate::proxy::ADDED_REQUEST_HEADERS,
        drop_underscored_names: !server.keep_underscored_headers,
    }
}

/// The next client connection and the slot it holds ([`Slots`]: `server.max_connections`
/// shared by the plaintext and TLS listeners), or `None` once `stop` is set. A connection
/// beyond its address's cap is closed at once.
async fn next_connection(
    listener: &TcpListener,
    slots: &Arc<Slots>,
    stop: &mut watch::Receiver<bool>,
    what: &'static str,
) -> Option<(Slot, tokio::net::TcpStream, SocketAddr)> {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = accept(listener, what) => accepted,
            _ = crate::shutdown::until_set(stop) => return None,
        };
        let taken = tokio::select! {
            taken = slots.take(peer.ip()) => taken,
            _ = crate::shutdown::until_set(stop) => return None,
        };
        match taken {
            Ok(slot) => {
                let _ = stream.set_nodelay(true);
                return Some((slot, stream, peer));
            }
            Err(_) => {
                tracing::debug!(%peer, listener = what, "closed a connection beyond server.max_connections_per_address");
            }
        }
    }
}

/// The listeners, and what their accept loops need: a reload starts a loop on a new address
/// and retires the one it replaces.
#[derive(Debug)]
struct Serving {
    /// `server.max_connections`, shared by the plaintext and TLS listeners, old and new.
    slots: Arc<Slots>,
    live: Arc<ArcSwap<Proxy>>,
    server: Server,
    tls_edge: Option<TlsEdge>,
    /// The admin API ([`Admin::service`]).
    admin: axum::Router,
    background: watch::Receiver<bool>,
    /// `None` once shutdown has taken them.
    current: std::sync::Mutex<Option<Listeners>>,
}

#[derive(Debug)]
struct Listeners {
    traffic: Accepting,
    tls: Option<Accepting>,
    admin: Accepting<()>,
    /// The drains of listeners a reload replaced: shutdown waits for them too.
    retired: Vec<JoinHandle<()>>,
}

/// One listener's accept loop.
#[derive(Debug)]
struct Accepting<T = GracefulShutdown> {
    addr: SocketAddr,
    /// Set: its connections finish the request in hand and close.
    draining: Arc<AtomicBool>,
    /// Set: the loop stops accepting, and idle connections close.
    stop: watch::Sender<bool>,
    task: JoinHandle<T>,
}

impl Accepting {
    /// Stops accepting and drains the connections: each finishes the request in hand, then
    /// closes (hyper's, HTTP/2 included, through their graceful shutdown).
    fn retire(self) -> impl Future<Output = ()> + Send + 'static {
        self.draining.store(true, Ordering::Release);
        self.stop.send_replace(true);
        async move {
            if let Ok(graceful) = self.task.await {
                graceful.shutdown().await;
            }
        }
    }
}

impl Serving {
    fn start(
        self,
        traffic: TcpListener,
        tls: Option<TcpListener>,
        admin: TcpListener,
    ) -> Arc<Self> {
        let listeners = Listeners {
            traffic: self.serve_traffic(traffic),
            tls: tls.map(|l| self.serve_tls(l)),
            admin: self.serve_admin(admin),
            retired: Vec::new(),
        };
        *self.current.lock().expect("listeners lock") = Some(listeners);
        Arc::new(self)
    }

    fn accepting<T>(
        listener: TcpListener,
        task: impl FnOnce(TcpListener, Arc<AtomicBool>, watch::Receiver<bool>) -> JoinHandle<T>,
    ) -> Accepting<T> {
        let addr = listener
            .local_addr()
            .expect("a bound socket has an address");
        let draining = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = watch::channel(false);
        Accepting {
            addr,
            task: task(listener, draining.clone(), stopped),
            draining,
            stop,
        }
    }

    fn serve_traffic(&self, listener: TcpListener) -> Accepting {
        Self::accepting(listener, |listener, draining, stop| {
            let (slots, live) = (self.slots.clone(), self.live.clone());
            let server = self.server.clone();
            tokio::spawn(serve_traffic(listener, slots, live, server, draining, stop))
        })
    }

    fn serve_tls(&self, listener: TcpListener) -> Accepting {
        Self::accepting(listener, |listener, draining, stop| {
            let edge = (self.tls_edge.clone()).expect("a TLS listener has its certificates");
            let (slots, live) = (self.slots.clone(), self.live.clone());
            let server = self.server.clone();
            tokio::spawn(serve_tls(
                listener, slots, edge, live, server, draining, stop,
            ))
        })
    }

    fn serve_admin(&self, listener: TcpListener) -> Accepting<()> {
        Self::accepting(listener, |listener, _, retired| {
            let (admin, server) = (self.admin.clone(), self.server.clone());
            let stop = self.background.clone();
            tokio::spawn(serve_admin(listener, admin, server, retired, stop))
        })
    }

    /// The traffic, admin and TLS listeners' addresses.
    fn addrs(&self) -> (SocketAddr, SocketAddr, Option<SocketAddr>) {
        let current = self.current.lock().expect("listeners lock");
        let l = current.as_ref().expect("serving until shutdown");
        (l.traffic.addr, l.admin.addr, l.tls.as_ref().map(|t| t.addr))
    }

    fn take(&self) -> Option<Listeners> {
        self.current.lock().expect("listeners lock").take()
    }
}

/// A connection drain to wait for at shutdown.
type Drain = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

impl Listeners {
    /// Stops the traffic and TLS listeners; returns the drains of their connections (and of
    /// retired listeners'), and the admin listener, which serves on until the background
    /// stops (dropping it would stop it at once).
    fn stop(self) -> (Vec<Drain>, Accepting<()>) {
        let mut drains: Vec<Drain> = vec![Box::pin(self.traffic.retire())];
        if let Some(tls) = self.tls {
            drains.push(Box::pin(tls.retire()));
        }
        for retired in self.retired {
            drains.push(Box::pin(async move {
                let _ = retired.await;
            }));
        }
        (drains, self.admin)
    }
}

impl crate::server::reconfigure::Rebind for Serving {
    fn bind(&self, old: &Config, new: &Config) -> Result<Rebound, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut bind = |key: &str, from: SocketAddr, to: SocketAddr, backlog: u32| {
            if from == to {
                return None;
            }
            listen(to, backlog)
                .map_err(|e| {
                    problems.push(Problem::new(key, format!("cannot listen on {to}: {e}")))
                })
                .ok()
        };
        let backlog = new.server.listen_backlog;
        let rebound = Rebound {
            traffic: bind(
                "server.listen",
                old.server.listen,
                new.server.listen,
                backlog,
            ),
            admin: bind(
                "server.admin_listen",
                old.server.admin_listen,
                new.server.admin_listen,
                ADMIN_BACKLOG,
            ),
            tls: match (&old.server.tls, &new.server.tls) {
                (Some(o), Some(n)) => bind("server.tls.listen", o.listen, n.listen, backlog),
                _ => None,
            },
        };
        if problems.is_empty() {
            Ok(rebound)
        } else {
            Err(problems)
        }
    }

    fn serve(&self, rebound: Rebound) {
        let mut current = self.current.lock().expect("listeners lock");
        // Shutting down: the new sockets close unused.
        let Some(listeners) = current.as_mut() else {
            return;
        };
        if let Some(listener) = rebound.traffic {
            let old = std::mem::replace(&mut listeners.traffic, self.serve_traffic(listener));
            tracing::info!(from = %old.addr, to = %listeners.traffic.addr, "traffic listener moved; connections to the old address finish the request in hand and close");
            listeners.retired.push(tokio::spawn(old.retire()));
        }
        if let (Some(listener), Some(tls)) = (rebound.tls, listeners.tls.as_mut()) {
            let old = std::mem::replace(tls, self.serve_tls(listener));
            tracing::info!(from = %old.addr, to = %tls.addr, "TLS listener moved; connections to the old address finish the request in hand and close");
            listeners.retired.push(tokio::spawn(old.retire()));
        }
        if let Some(listener) = rebound.admin {
            let old = std::mem::replace(&mut listeners.admin, self.serve_admin(listener));
            let to = listeners.admin.addr;
            tracing::info!(from = %old.addr, %to, "admin listener moved");
            if !to.ip().is_loopback() {
                tracing::warn!(admin_addr = %to, "the admin listener is reachable from other hosts");
            }
            old.stop.send_replace(true);
        }
    }
}

/// One client connection's requests, for the `http1` crate's server: each goes to the
/// current config's proxy (so a reload reaches kept-alive connections at their next request)
/// in a span that names the client. Its slot says when it is idle, and closes it for room.
struct Connection<'a> {
    live: &'a ArcSwap<Proxy>,
    client: &'a Peer,
    slot: &'a Slot,
}

impl<R> http1::server::Handler<R> for Connection<'_>
where
    ClientBody: From<http1::server::Body<R>>,
{
    type Body = ResponseBody;

    // Inlined, so that the future is built where the server holds it rather than moved there.
    #[inline]
    fn handle(
        &self,
        request: Request<http1::server::Body<R>>,
    ) -> impl Future<Output = http::Response<ResponseBody>> + Send {
        let span = tracing::debug_span!("request", peer = %self.client.addr, method = %request.method(), path = %request.uri().path());
        (self.live.load_full())
            .handle(request.map(ClientBody::from), self.client)
            .instrument(span)
    }

    #[inline]
    fn idle(&self) {
        self.slot.idle();
    }

    #[inline]
    fn begin(&self) -> bool {
        self.slot.begin()
    }

    #[inline]
    fn poll_close(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.slot.poll_close(cx)
    }
}

/// Serves a connection handed over by [`http1::server::serve`], from the request it handed
/// over on: HTTP/2 by [`http2`], the rest by hyper's server.
async fn serve_handoff<S>(
    stream: http1::server::Rewind<S>,
    live: Arc<ArcSwap<Proxy>>,
    client: Peer,
    handoff: Arc<Handoff>,
    watcher: Watcher,
    stop: watch::Receiver<bool>,
) where
    http1::server::Rewind<S>: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    if stream.is_http2() {
        serve_h2(stream, live, client, handoff, watcher, stop).await;
    } else {
        serve_with_hyper(stream, live, client, &handoff.hyper, watcher).await;
    }
}

/// Serves an HTTP/2 connection ([`http2::serve`]). The watcher it holds makes shutdown wait
/// for it; `stop` starts its graceful close.
async fn serve_h2<S>(
    stream: S,
    live: Arc<ArcSwap<Proxy>>,
    client: Peer,
    handoff: Arc<Handoff>,
    watcher: Watcher,
    stop: watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let _counted = watcher;
    if let Err(e) = http2::serve(stream, &live, &client, &handoff.h2, stop).await {
        tracing::debug!(error = %e, peer = %client.addr, "client connection ended with an error");
    }
}

/// Serves a connection with hyper's server.
async fn serve_with_hyper<S>(
    stream: S,
    live: Arc<ArcSwap<Proxy>>,
    client: Peer,
    builder: &HttpBuilder,
    watcher: Watcher,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let peer = client.addr;
    let service = service_fn(move |req: Request<Incoming>| {
        let proxy = live.load_full();
        let client = client.clone();
        let span = tracing::debug_span!("request", %peer, method = %req.method(), path = %req.uri().path());
        let req = req.map(ClientBody::Hyper);
        async move { Ok::<_, Infallible>(proxy.handle(req, &client).instrument(span).await) }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        tracing::debug!(error = %e, %peer, "client connection ended with an error");
    }
}

/// A listening socket with `backlog` queued connections (the kernel's default of 128 makes a
/// burst of connects wait for retransmits; nginx uses 511, HAProxy its maxconn).
fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}
