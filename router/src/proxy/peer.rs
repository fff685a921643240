//! The client end of a connection, as the hot path needs it: its address (written out once
//! for `X-Forwarded-For`), whether it came over TLS, and the verified client certificate's
//! common name.

use std::net::SocketAddr;

use bytes::Bytes;
use http::HeaderValue;

/// The client end of a connection, with its address already written out for
/// `X-Forwarded-For`: made once per connection, not per request.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    ip_text: Bytes,
    /// The client connected over TLS (`x-forwarded-proto: https`).
    pub tls: bool,
    /// The common name of the client certificate the TLS listener verified.
    pub client_cn: Option<Box<str>>,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Self {
        Peer {
            addr,
            ip_text: Bytes::from(addr.ip().to_string()),
            tls: false,
            client_cn: None,
        }
    }

    /// A client of a TLS listener, with the common name of the certificate it was verified by.
    pub fn over_tls(addr: SocketAddr, client_cn: Option<Box<str>>) -> Self {
        Peer {
            tls: true,
            client_cn,
            ..Peer::new(addr)
        }
    }

    pub(super) fn ip_header(&self) -> HeaderValue {
        HeaderValue::from_maybe_shared(self.ip_text.clone())
            .expect("an IP address is a valid header value")
    }
}
