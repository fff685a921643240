//! What the hot path touches of a shadowed request: the copy of the request kept while the
//! primary answers ([`RequestCopy`]), and the tap on the primary's response as it streams to
//! the client ([`Tap`]), which hands both to the engine once the answer went out whole.

use std::sync::{Arc, Mutex};

use flag_store::TargetId;
use http::header::HeaderMap;
use http::{Method, StatusCode};

use super::compare::{Answer, Capture};
use super::{Shadows, SkipReason};
use crate::body::{BodyCopy, ResponseTap};

/// The copy of a request the proxy keeps while the primary answers.
#[derive(Debug)]
pub struct RequestCopy {
    pub(super) route: usize,
    pub(super) tenant: Arc<str>,
    pub(super) shadow: TargetId,
    pub(super) primary: TargetId,
    pub(super) method: Method,
    pub(super) path_and_query: String,
    pub(super) headers: HeaderMap,
    /// The request body as the client sent it, once it has been sent whole.
    pub(super) body: Option<Arc<Mutex<BodyCopy>>>,
    /// The counters of the ramp its tenant is in, which count the comparison too.
    pub ramp: Option<Arc<crate::observe::ramp::RampCounters>>,
}

impl RequestCopy {
    pub fn shadow_target(&self) -> TargetId {
        self.shadow
    }
}

/// Taps the primary's response as it streams: its status, compared headers and body.
#[derive(Debug)]
pub struct Tap {
    pub(super) shadows: Arc<Shadows>,
    pub(super) copy: Option<RequestCopy>,
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Capture,
}

impl ResponseTap for Tap {
    fn data(&mut self, data: &[u8]) {
        self.body.push(data);
    }

    /// The primary's answer went out whole: the comparison may begin.
    fn end(mut self: Box<Self>) {
        let Some(copy) = self.copy.take() else { return };
        let body = std::mem::replace(&mut self.body, Capture::new(0)).finish();
        let primary = Answer {
            status: self.status,
            headers: std::mem::take(&mut self.headers),
            body,
        };
        self.shadows.submit(copy, primary);
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        if let Some(copy) = self.copy.take() {
            self.shadows
                .skipped(copy.route, copy.shadow, SkipReason::PrimaryIncomplete);
        }
    }
}
