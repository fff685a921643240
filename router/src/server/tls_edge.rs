//! The TLS listener: each connection's handshake, then the same HTTP servers as plaintext.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::slots::Slots;
use super::{Connection, Handoff, http1_settings, next_connection, serve_h2, serve_handoff};
use crate::config::Server;
use crate::proxy::{Peer, Proxy};

/// What a TLS listener's connections need before HTTP: the acceptor, the certificates (which
/// count failures) and the handshake's time limit.
#[derive(Clone)]
pub(super) struct TlsEdge {
    pub(super) acceptor: tokio_rustls::TlsAcceptor,
    pub(super) certificates: Arc<crate::tls::Certificates>,
    pub(super) handshake_timeout: Duration,
}

impl std::fmt::Debug for TlsEdge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsEdge")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

/// The TLS listener's accept loop: each connection's handshake (bounded by the handshake
/// timeout) runs in its own task; then HTTP/1.1 goes to the same server as plaintext, and
/// ALPN `h2` to [`super::http2`], the router's own HTTP/2 server on the `h2` crate. A client that
/// speaks plain HTTP to the port is answered 400 saying so; every failed handshake is logged
/// at debug and counted by reason.
pub(super) async fn serve_tls(
    listener: TcpListener,
    slots: Arc<Slots>,
    edge: TlsEdge,
    live: Arc<ArcSwap<Proxy>>,
    server: Server,
    draining: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
) -> GracefulShutdown {
    use crate::tls::HandshakeFailure;
    let TlsEdge {
        acceptor,
        certificates: tls,
        handshake_timeout,
    } = edge;
    let graceful = GracefulShutdown::new();
    let handoff = Handoff::new(&server);
    let settings = http1_settings(&server);
    while let Some((slot, stream, peer)) =
        next_connection(&listener, &slots, &mut stop, "tls").await
    {
        let (live, tls, acceptor) = (live.clone(), tls.clone(), acceptor.clone());
        let watcher = graceful.watcher();
        let (handoff, settings) = (handoff.clone(), settings.clone());
        let (draining, stop) = (draining.clone(), stop.clone());
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + handshake_timeout;
            let failed = |why: HandshakeFailure, detail: &dyn std::fmt::Display| {
                tls.count_failure(why);
                tracing::debug!(%peer, reason = why.as_str(), %detail, "TLS handshake failed");
            };
            // A TLS connection opens with a handshake record (0x16); anything else is not TLS.
            let mut first = [0u8; 1];
            // A connection that has not finished its handshake is idle: closed for room too.
            let peeked = tokio::select! {
                peeked = tokio::time::timeout_at(deadline, stream.peek(&mut first)) => peeked,
                () = slot.closing() => return,
            };
            match peeked {
                Ok(Ok(1)) if first[0] == 0x16 => {}
                Ok(Ok(1)) => {
                    failed(
                        HandshakeFailure::NotTls,
                        &"the first byte is not a TLS record",
                    );
                    if first[0].is_ascii_uppercase() {
                        refuse_plain_http(stream, deadline).await;
                    }
                    return;
                }
                Ok(_) => return,
                Err(_) => return failed(HandshakeFailure::Timeout, &"no bytes"),
            }
            let handshake = tokio::select! {
                done = tokio::time::timeout_at(deadline, acceptor.accept(stream)) => done,
                () = slot.closing() => return,
            };
            let stream = match handshake {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    // An unknown name was counted by the certificate resolver.
                    let unknown_name = e
                        .get_ref()
                        .and_then(|e| e.downcast_ref::<rustls::Error>())
                        .is_some_and(|e| matches!(e, rustls::Error::General(_)));
                    if !unknown_name {
                        failed(HandshakeFailure::Failed, &e);
                    }
                    return;
                }
                Err(_) => {
                    return failed(HandshakeFailure::Timeout, &"the handshake did not finish");
                }
            };
            let metrics = live.load().metrics.clone();
            metrics.connection_opened();
            let client = Peer::over_tls(peer, crate::tls::client_common_name(stream.get_ref().1));
            if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                if slot.begin() {
                    Box::pin(serve_h2(stream, live, client, handoff, watcher, stop)).await;
                }
            } else {
                let connection = Connection {
                    live: &live,
                    client: &client,
                    slot: &slot,
                };
                let ended = http1::server::serve(
                    http1::server::Split(stream),
                    peer,
                    &connection,
                    &settings,
                    &draining,
                    stop.clone(),
                )
                .await;
                if let http1::server::Ended::Handoff(stream) = ended
                    && slot.begin()
                {
                    Box::pin(serve_handoff(stream, live, client, handoff, watcher, stop)).await;
                }
            }
            metrics.connection_closed();
        });
    }
    graceful
}

/// Answers a plain HTTP request sent to the TLS port with a 400 that says so, then closes:
/// what the client sent is read first (bounded), so the close does not reset the answer away.
async fn refuse_plain_http(mut stream: tokio::net::TcpStream, deadline: tokio::time::Instant) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout_at(deadline, stream.read(&mut sink)).await;
    let body = "switchyard: this port speaks TLS: use https:// here\n";
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(answer.as_bytes()).await.is_ok() && stream.shutdown().await.is_ok() {
        // Linger until the client closes (or a second passes), reading what else it sends.
        let linger = tokio::time::Instant::now() + Duration::from_secs(1);
        while let Ok(Ok(n)) = tokio::time::timeout_at(linger, stream.read(&mut sink)).await {
            if n == 0 {
                break;
            }
        }
    }
}
