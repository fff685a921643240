//! Upgraded connections (WebSocket and the like) after the 101: the two sides' bytes copied
//! both ways, counted while open, closed when their tenant moves away (a [`Registration`]),
//! and drained at shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::{Notify, watch};

use crate::streams::Registration;

/// Upgraded connections (WebSocket and the like) after the 101: they outlive the HTTP
/// connection they came from, so they are counted here and drained at shutdown.
#[derive(Debug)]
pub struct Tunnels {
    open: Arc<(AtomicUsize, Notify)>,
    stop: watch::Sender<bool>,
}

impl Default for Tunnels {
    fn default() -> Self {
        Tunnels {
            open: Arc::new((AtomicUsize::new(0), Notify::new())),
            stop: watch::channel(false).0,
        }
    }
}

pub(super) struct TunnelGuard(Arc<(AtomicUsize, Notify)>);

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        if self.0.0.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.1.notify_waiters();
        }
    }
}

impl Tunnels {
    pub(super) fn spawn(
        &self,
        client: OnUpgrade,
        upstream: OnUpgrade,
        registration: Option<Registration>,
    ) {
        self.open.0.fetch_add(1, Ordering::AcqRel);
        let guard = TunnelGuard(self.open.clone());
        let mut stop = self.stop.subscribe();
        tokio::spawn(async move {
            let _guard = guard;
            let moved = async {
                match &registration {
                    Some(r) => r.closed().await,
                    None => std::future::pending().await,
                }
            };
            let (client, upstream) = match tokio::try_join!(client, upstream) {
                Ok(both) => both,
                Err(e) => {
                    tracing::debug!(error = %e, "upgrade did not complete");
                    return;
                }
            };
            let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
            tokio::select! {
                result = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "tunnel closed with an error");
                    }
                }
                _ = crate::shutdown::until_set(&mut stop) => {}
                () = moved => tracing::debug!("tunnel closed: its tenant moved away from its side"),
            }
        });
    }

    pub fn open(&self) -> usize {
        self.open.0.load(Ordering::Acquire)
    }

    /// Waits for open tunnels to close, until `deadline`; then closes the rest.
    pub async fn drain(&self, deadline: tokio::time::Instant) {
        loop {
            let notified = self.open.1.notified();
            if self.open() == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        self.stop.send_replace(true);
    }
}
