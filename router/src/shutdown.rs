//! Waiting for the end: a stop flag set, or the signal that asks the process to stop.

/// Resolves once `flag` is true (or its sender is gone). The guard `wait_for` returns is
/// dropped here, so callers can await this inside `select!` in a `Send` future.
pub async fn until_set(flag: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await.map(|_| ());
}

/// The signals that ask the process to stop (SIGTERM, SIGINT), listened for from the moment
/// this is made. Made before the listeners are bound, a SIGTERM that arrives while the router
/// starts (a rolling deploy replacing a pod that just came up) asks for a drain like any
/// other, instead of killing the process with requests in flight.
#[derive(Debug)]
pub struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Installs the handlers (inside a runtime).
    pub fn install() -> std::io::Result<StopSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves on the next SIGTERM or SIGINT.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// The SIGHUP handler, installed now: the config watch takes it, so a SIGHUP that comes
/// before the watch runs asks for a reload instead of ending the process.
pub fn hangups() -> std::io::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
}
