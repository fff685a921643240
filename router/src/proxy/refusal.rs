//! The one rescue: every answer the router gives itself (400, 404, 405, 408, 413, 502, 503,
//! 504) is a `Refusal`, turned into its status and a one-line plain body here and nowhere
//! else, with its metrics and access-log line.

use std::sync::Arc;

use bytes::Bytes;
use flag_store::HoldItem;
use flag_store::TargetId;
use flag_store::fleet::now_ms;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};

use super::headers::X_REQUEST_ID;
use super::{Failure, Proxy, RequestCtx};
use crate::body::{BodyError, Completion, ResponseBody};
use crate::policy::tenant;

/// Why the router answers a request itself; [`Proxy::refuse`] turns each into its status and
/// body, in one place.
#[derive(Debug)]
pub(super) enum Refusal {
    Connect,
    Path(crate::policy::path::PathError),
    Host(tenant::HostError),
    Tenant(tenant::BadTenant),
    TenantRequired,
    NoRoute,
    FlagsNotLoaded,
    /// The tenant's only target is down (a pinned tenant, or a fixed route).
    TargetUnavailable(TargetId),
    NoHealthyTarget,
    /// The request's side is evacuated and its tenant cannot leave it.
    Evacuated(TargetId),
    /// The tenant's item was rejected and it has no last good flag: why.
    RejectedFlag(String),
    BodyTooLarge {
        len: u64,
        limit: u64,
    },
    /// Its client address has `server.max_uploads_per_address` request bodies coming.
    TooManyUploads(usize),
    /// The request's `Connection` names a header the router decided by.
    ConnectionNamesDecider(http::HeaderName),
    /// The upstream answered 101 to a protocol the request did not ask for.
    UnaskedUpgrade(TargetId),
    /// An HTTP/2 request said `content-length: 0` and then sent content, or its stream did not
    /// end within the time allowed (`timed_out`).
    ZeroLengthBroken {
        timed_out: bool,
    },
    /// The tenant is being moved (a hold): its requests wait, and reach here only when the
    /// queue is full.
    Held(Arc<HoldItem>),
    HoldQueueFull(Arc<HoldItem>),
    /// The exchange with this target failed; the route's timeout, for the 504's words.
    Upstream(Failure, TargetId, std::time::Duration),
}

impl Failure {
    /// The failure a client's body error makes of the exchange.
    pub(super) fn client(error: &BodyError) -> Failure {
        match error {
            BodyError::TooLarge(_) => Failure::Client(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body exceeds the route's limit",
            ),
            BodyError::ClientIdle(_) => Failure::Client(
                StatusCode::REQUEST_TIMEOUT,
                "the client stopped sending its body",
            ),
            BodyError::ClientTooSlow(_) => Failure::Client(
                StatusCode::REQUEST_TIMEOUT,
                "the client sent its body slower than the route allows (upload_timeout_ms, min_upload_bytes_per_s)",
            ),
            _ => Failure::Client(StatusCode::BAD_REQUEST, "reading the request body failed"),
        }
    }
}

impl Proxy {
    /// The answer to an HTTP/2 request refused before it is handled, for saying
    /// `content-length: 0` and then sending content or not ending (`timed_out`): made by
    /// `Proxy::refuse` like every other, with its request id, metrics and log line.
    pub fn refuse_zero_length(&self, parts: &Parts, timed_out: bool) -> Response<ResponseBody> {
        let ctx = self.context(parts);
        self.refuse(Refusal::ZeroLengthBroken { timed_out }, ctx)
    }

    /// The one place an answer of the router's own is made: the status and the one-line
    /// plain body for each reason it refuses or fails a request.
    pub(super) fn refuse(&self, refusal: Refusal, mut ctx: RequestCtx) -> Response<ResponseBody> {
        let name = |t: TargetId| &self.upstreams[t.index()].name;
        let mut retry_after = None;
        let (status, msg): (StatusCode, std::borrow::Cow<'_, str>) = match refusal {
            Refusal::Held(hold) | Refusal::HoldQueueFull(hold) => {
                // The client may come back once the move is over.
                retry_after = Some(
                    hold.deadline_ms
                        .saturating_sub(now_ms())
                        .div_ceil(1000)
                        .max(1),
                );
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "the tenant is being moved (hold {}) and this router's queue of waiting requests is full",
                        hold.id
                    )
                    .into(),
                )
            }
            Refusal::Connect => (
                StatusCode::METHOD_NOT_ALLOWED,
                "CONNECT is not supported".into(),
            ),
            Refusal::Path(e) => (StatusCode::BAD_REQUEST, e.to_string().into()),
            Refusal::Host(e) => (StatusCode::BAD_REQUEST, e.to_string().into()),
            Refusal::Tenant(e) => (StatusCode::BAD_REQUEST, e.to_string().into()),
            Refusal::TenantRequired => (
                StatusCode::BAD_REQUEST,
                "this route needs a tenant id and the request carries none".into(),
            ),
            Refusal::NoRoute => (StatusCode::NOT_FOUND, "no route matches this path".into()),
            Refusal::FlagsNotLoaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "tenant flags are not loaded yet".into(),
            ),
            Refusal::TargetUnavailable(target) => {
                // A pinned tenant never fails over: its target down is its 503.
                ctx.labels.target = target.index();
                self.metrics.pinned_unavailable(ctx.labels);
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the tenant's target {:?} is unavailable", name(target)).into(),
                )
            }
            Refusal::NoHealthyTarget => (
                StatusCode::SERVICE_UNAVAILABLE,
                "no healthy target for this tenant".into(),
            ),
            Refusal::Evacuated(side) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the tenant's side {:?} is evacuated and the tenant cannot leave it (it is sealed there, or its split has no other side)",
                    name(side)
                )
                .into(),
            ),
            Refusal::RejectedFlag(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the tenant's flag item is invalid and it has no last good flag: {why}")
                    .into(),
            ),
            Refusal::BodyTooLarge { len, limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body of {len} bytes exceeds the route's limit of {limit} bytes")
                    .into(),
            ),
            Refusal::TooManyUploads(cap) => {
                retry_after = Some(1);
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("this client address has {cap} request bodies coming already (server.max_uploads_per_address)").into(),
                )
            }
            Refusal::ConnectionNamesDecider(name) => (
                StatusCode::BAD_REQUEST,
                format!("the Connection header names {name}, a header this router routes by: removed as hop-by-hop, the upstream would never see it").into(),
            ),
            Refusal::ZeroLengthBroken { timed_out: false } => (
                StatusCode::BAD_REQUEST,
                "the request says content-length: 0 but sends content".into(),
            ),
            Refusal::ZeroLengthBroken { timed_out: true } => (
                StatusCode::REQUEST_TIMEOUT,
                "the request says content-length: 0 but its stream did not end".into(),
            ),
            Refusal::UnaskedUpgrade(target) => (
                StatusCode::BAD_GATEWAY,
                format!(
                    "target {:?} switched to a protocol the request did not ask for",
                    name(target)
                )
                .into(),
            ),
            Refusal::Upstream(failure, target, timeout) => match failure {
                Failure::Connect => (
                    StatusCode::BAD_GATEWAY,
                    format!("could not connect to target {:?}", name(target)).into(),
                ),
                Failure::Reset => (
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "target {:?} closed the connection before responding",
                        name(target)
                    )
                    .into(),
                ),
                Failure::Timeout => (
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "target {:?} did not respond within {timeout:?}",
                        name(target)
                    )
                    .into(),
                ),
                Failure::EndpointDown => (
                    StatusCode::BAD_GATEWAY,
                    format!("target {:?} went down before it responded", name(target)).into(),
                ),
                Failure::Tls(why) => (StatusCode::BAD_GATEWAY, {
                    let verified_as = match &self.upstreams[target.index()].tls_name {
                        Some(n) => format!(" (verified as {n:?})"),
                        None => String::new(),
                    };
                    format!(
                        "TLS to target {:?} failed{verified_as}: {why}",
                        name(target)
                    )
                    .into()
                }),
                Failure::TryTimeout => (
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "target {:?} did not respond within the route's try timeout",
                        name(target)
                    )
                    .into(),
                ),
                // The client's own body at fault (413, 408, 400).
                Failure::Client(status, msg) => (status, msg.into()),
                Failure::BadTarget => (
                    StatusCode::BAD_REQUEST,
                    "the request target cannot be forwarded".into(),
                ),
            },
        };
        let completion = Completion::new(self.metrics.clone(), ctx.labels, status, ctx.start)
            .with_tenant(ctx.tenant)
            .with_log(ctx.log.zip(self.access_log.clone()));
        let body = Bytes::from(format!("switchyard: {msg}\n"));
        let mut resp = Response::new(ResponseBody::local(body, Some(completion)));
        *resp.status_mut() = status;
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(X_REQUEST_ID.clone(), ctx.request_id);
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        resp
    }
}
