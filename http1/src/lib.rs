//! HTTP/1.1 for a proxy, both sides of it: a server for client connections ([`server`]) and
//! a pooled client for upstream connections ([`client`]), over one set of framing rules
//! ([`codec`]). It is written for one job, moving requests and responses through a proxy
//! fast, and it knows nothing of the proxy: a server calls a [`server::Handler`], a client
//! sends what it is given. Both are strict where a proxy's leniency becomes the next hop's
//! desync (request smuggling): each rule is stated where it is enforced.
//!
//! The server is generic over its transport ([`server::Transport`]: TCP today, TLS the same
//! way), so every client connection takes the same path.

#![forbid(unsafe_code)]

pub mod client;
pub mod codec;
pub mod server;

use std::io;
use std::time::Duration;

use http::uri::Authority;

/// Why reading or writing a message failed, on either side.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting to {authority} failed")]
    Connect {
        authority: Authority,
        #[source]
        source: io::Error,
    },
    #[error("connecting to {authority} took longer than {timeout:?}")]
    ConnectTimeout {
        authority: Authority,
        timeout: Duration,
    },
    #[error("the connection failed")]
    Io(#[source] io::Error),
    #[error("the connection closed before the message was complete")]
    Closed,
    #[error("malformed HTTP/1.1: {0}")]
    Malformed(String),
    /// The body being sent failed (for a proxy: its client's body, too large, idle or cut
    /// off), which says nothing of the peer it was sent to.
    #[error("the body being sent failed")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// The connection was never made.
    pub fn is_connect(&self) -> bool {
        matches!(self, Error::Connect { .. } | Error::ConnectTimeout { .. })
    }

    pub(crate) fn malformed(what: impl Into<String>) -> Error {
        Error::Malformed(what.into())
    }
}
