//! The admin listener's accept loop: apart from traffic, a bounded number of connections
//! where a new one closes the oldest, so idle connections never lock out a readiness probe, a
//! scrape or an operator's write.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::accept;
use crate::config::Server;

/// How long an admin connection may wait to send a request head (its first, or its next):
/// probes, scrapes and operators send theirs at once.
const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Admin connections open at once; when all are taken, a new one closes the oldest, so idle
/// connections can never lock out a readiness probe, a scrape or an operator's write.
const ADMIN_CONNECTIONS: usize = 256;
/// The admin connections open, oldest first: each one's id and the switch that closes it.
type AdminConnections = std::collections::VecDeque<(u64, Arc<tokio::sync::Notify>)>;

/// The admin listener's accept loop, until `retired` (a reload moved the listener: open
/// connections go on) or `stop` (shutdown: they close too).
pub(super) async fn serve_admin(
    listener: TcpListener,
    admin: axum::Router,
    server: Server,
    mut retired: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Some(server.header_read_timeout.min(ADMIN_HEADER_TIMEOUT)))
        .max_buf_size(16 * 1024);
    // Open connections, oldest first, each with the switch that closes it.
    let open: Arc<std::sync::Mutex<AdminConnections>> = Arc::default();
    let mut next_id = 0u64;
    loop {
        let (stream, _) = tokio::select! {
            accepted = accept(&listener, "admin") => accepted,
            _ = crate::shutdown::until_set(&mut retired) => return,
            _ = crate::shutdown::until_set(&mut stop) => return,
        };
        let id = next_id;
        next_id += 1;
        let close = Arc::new(tokio::sync::Notify::new());
        {
            let mut open = open.lock().expect("admin connections lock");
            if open.len() >= ADMIN_CONNECTIONS
                && let Some((_, oldest)) = open.pop_front()
            {
                oldest.notify_one();
            }
            open.push_back((id, close.clone()));
        }
        let conn = builder.serve_connection(
            TokioIo::new(stream),
            hyper_util::service::TowerToHyperService::new(admin.clone()),
        );
        let (mut stop, open) = (stop.clone(), open.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = conn => {}
                () = close.notified() => {}
                _ = crate::shutdown::until_set(&mut stop) => {}
            }
            let mut open = open.lock().expect("admin connections lock");
            if let Some(at) = open.iter().position(|(i, _)| *i == id) {
                open.remove(at);
            }
        });
    }
}
