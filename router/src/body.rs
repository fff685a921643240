//! Bodies streamed through the proxy, frame by frame, never buffered whole. The request body
//! enforces the route's size limit and idle timeout on what the client sends; the response
//! body enforces the idle timeout on what the upstream sends and records the request's
//! metrics when it finishes (or is dropped), so the duration covers the whole exchange.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::time::{Instant, Sleep};

use crate::health::InFlight;
use crate::observe::access_log::{AccessLog, Entry};
use crate::observe::metrics::{Labels, Metrics, StatusClass, UpstreamErrorKind};
use crate::per_address::AddressCounts;
use crate::policy::route::UploadPace;
use crate::streams::Registration;

/// Why a streamed body stopped.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body exceeds the route's limit of {0} bytes")]
    TooLarge(u64),
    #[error("the client sent no body data for {0:?}")]
    ClientIdle(Duration),
    #[error(
        "the client's body came slower than the route's pace (upload_timeout_ms {0:?} and min_upload_bytes_per_s)"
    )]
    ClientTooSlow(Duration),
    #[error("reading the client's body failed: {0}")]
    Client(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the upstream sent no body data for {0:?}")]
    UpstreamIdle(Duration),
    #[error("reading the upstream's body failed: {0}")]
    Upstream(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the tenant moved away from this side: its stream is closed")]
    Moved,
}

/// An idle timer armed only while a body waits for data: a body whose frames are ready when
/// polled never allocates one.
#[derive(Debug)]
struct IdleTimer {
    limit: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl IdleTimer {
    fn new(limit: Duration) -> Self {
        IdleTimer { limit, sleep: None }
    }

    /// Called when the inner body is pending: true once the body has idled past the limit, and
    /// so has the exchange's other direction (`other`: when it last moved, where that is
    /// known). An exchange idles only when neither side moves: a client that keeps its
    /// request open and silent while the answer streams, or an upstream that answers once the
    /// whole upload is in, is not cut.
    fn expired(&mut self, cx: &mut Context<'_>, other: impl Fn() -> Option<Instant>) -> bool {
        let limit = self.limit;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        while sleep.as_mut().poll(cx).is_ready() {
            match other().and_then(|moved| moved.checked_add(limit)) {
                Some(deadline) if deadline > Instant::now() => sleep.as_mut().reset(deadline),
                _ => return true,
            }
        }
        false
    }

    /// Called when the inner body made progress.
    fn reset(&mut self) {
        if let Some(sleep) = self.sleep.as_mut() {
            sleep
                .as_mut()
                .reset(tokio::time::Instant::now() + self.limit);
        }
    }
}

/// A request body as it comes from the client: read by the `http1` crate's server, or by
/// hyper's (HTTP/2, and the HTTP/1 requests handed to it).
#[derive(Debug)]
pub enum ClientBody {
    H1(http1::server::Body<OwnedReadHalf>),
    /// HTTP/1.1 over TLS, read by the same server.
    H1Tls(http1::server::Body<TlsReadHalf>),
    /// HTTP/2, read by [`crate::server::http2`].
    H2(H2Body),
    Hyper(Incoming),
    /// A body the router holds whole: a shadow's copy, or none (an HTTP/2 request that ended
    /// with its headers, whose stream is then not asked again).
    Whole(Option<Bytes>),
}

/// The read half of a client's TLS connection.
pub type TlsReadHalf = tokio::io::ReadHalf<tokio_rustls::server::TlsStream<TcpStream>>;

impl From<http1::server::Body<OwnedReadHalf>> for ClientBody {
    fn from(body: http1::server::Body<OwnedReadHalf>) -> Self {
        ClientBody::H1(body)
    }
}

impl From<http1::server::Body<TlsReadHalf>> for ClientBody {
    fn from(body: http1::server::Body<TlsReadHalf>) -> Self {
        ClientBody::H1Tls(body)
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ClientBody::H1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ClientBody::H1Tls(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ClientBody::H2(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ClientBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ClientBody::Whole(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::H1(b) => b.is_end_stream(),
            ClientBody::H1Tls(b) => b.is_end_stream(),
            ClientBody::H2(b) => b.is_end_stream(),
            ClientBody::Hyper(b) => b.is_end_stream(),
            ClientBody::Whole(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::H1(b) => b.size_hint(),
            ClientBody::H1Tls(b) => b.size_hint(),
            ClientBody::H2(b) => b.size_hint(),
            ClientBody::Hyper(b) => b.size_hint(),
            ClientBody::Whole(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

/// A request's body from an HTTP/2 stream. Each frame read is handed back to the connection's
/// window at once: how much waits is bounded by the proxy's reading, not by the window.
#[derive(Debug)]
pub struct H2Body {
    stream: h2::RecvStream,
    /// Bytes still to come, when the request said (`h2` checks that it keeps its word).
    remaining: Option<u64>,
    data_done: bool,
}

impl H2Body {
    pub fn new(stream: h2::RecvStream, length: Option<u64>) -> Self {
        H2Body {
            data_done: stream.is_end_stream(),
            stream,
            remaining: length,
        }
    }
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let me = self.get_mut();
        if !me.data_done {
            match ready!(me.stream.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = me.stream.flow_control().release_capacity(data.len());
                    if let Some(left) = me.remaining.as_mut() {
                        *left = left.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => me.data_done = true,
            }
        }
        match ready!(me.stream.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(left) => SizeHint::with_exact(left),
            None => SizeHint::default(),
        }
    }
}

/// Request bodies in progress per client address, held to `server.max_uploads_per_address`:
/// one client's slow uploads cannot take every upstream connection a legacy side has.
#[derive(Debug)]
pub struct Uploads {
    pub cap: usize,
    open: Mutex<AddressCounts>,
}

/// One upload counted against its address, until dropped with its body.
#[derive(Debug)]
pub struct Upload {
    uploads: Arc<Uploads>,
    address: std::net::IpAddr,
}

impl Uploads {
    pub fn new(cap: usize) -> Arc<Uploads> {
        Arc::new(Uploads {
            cap,
            open: Mutex::default(),
        })
    }

    /// Counts an upload from `address`; `None` when it has `cap` going already.
    pub fn enter(self: &Arc<Self>, address: std::net::IpAddr) -> Option<Upload> {
        let mut open = self.open.lock().expect("uploads lock");
        if open.at_cap(address, self.cap) {
            return None;
        }
        open.add(address);
        Some(Upload {
            uploads: self.clone(),
            address,
        })
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let mut open = self.uploads.open.lock().expect("uploads lock");
        open.remove(self.address);
    }
}

/// What a body still to come keeps in its [`BodyProgress`] (so a request whose body has come
/// whole carries none of it): its pace's timer ([`UploadPace`], armed only once the body
/// waits for the client), and its count against its client's uploads.
#[derive(Debug)]
struct Pace {
    limit: UploadPace,
    sleep: Option<Pin<Box<Sleep>>>,
    /// Held, not read: dropping it ends the count.
    _upload: Option<Upload>,
}

impl Pace {
    /// Called when the body waits for the client: true once it is later than its pace allows
    /// for the `sent` bytes of a body that started at `since`.
    fn overdue(&mut self, cx: &mut Context<'_>, since: Instant, sent: u64) -> bool {
        let deadline = since + self.limit.allowance(sent);
        let sleep =
            (self.sleep).get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        sleep.as_mut().poll(cx).is_ready()
    }
}

/// The client's body on its way to the upstream (`None`: no body, as on a retry).
#[derive(Debug)]
pub struct RequestBody {
    inner: Option<ClientBody>,
    sent: u64,
    limit: Option<u64>,
    idle: IdleTimer,
    /// For a body still to come: how far it has got, for the proxy's response timeout.
    progress: Option<Arc<BodyProgress>>,
    /// Where a shadowed request's body is copied as it goes.
    copy: Option<Arc<Mutex<BodyCopy>>>,
}

/// How a request body's sending goes, shared by the body and the proxy that waits for the
/// upstream's answer: the response timeout runs from the body's end, and a body that stops
/// moving is the client's fault while it waits on the client (its idle timeout, 408) and the
/// upstream's while it waits on the upstream (which stopped reading). Once the answer streams,
/// each direction's idle timeout also looks at the other's last move.
#[derive(Debug)]
pub struct BodyProgress {
    since: Instant,
    /// Milliseconds from `since` of the last frame the upstream side took.
    last_ms: AtomicU64,
    /// Milliseconds from `since` of the body's end; `u64::MAX` while it goes on.
    done_ms: AtomicU64,
    /// The upstream side asked for the next frame and the client has not sent it yet.
    waiting_on_client: AtomicBool,
    /// Milliseconds from `since` of the answer's last body frame; `u64::MAX` before the first.
    answer_ms: AtomicU64,
    /// The pace the body must keep ([`RequestBody::paced`]); locked only while it waits.
    pace: Mutex<Option<Pace>>,
}

/// Where a body being sent stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sending {
    /// Ended at this instant.
    Done(Instant),
    /// The client has not sent the next frame yet.
    WaitingOnClient,
    /// The upstream has not taken a frame since this instant.
    WaitingOnUpstream(Instant),
}

impl BodyProgress {
    fn new() -> Self {
        BodyProgress {
            since: Instant::now(),
            last_ms: AtomicU64::new(0),
            done_ms: AtomicU64::new(u64::MAX),
            waiting_on_client: AtomicBool::new(false),
            answer_ms: AtomicU64::new(u64::MAX),
            pace: Mutex::new(None),
        }
    }

    /// When the client's body last moved (its start, before its first frame).
    fn request_moved(&self) -> Instant {
        self.since + Duration::from_millis(self.last_ms.load(Ordering::Acquire))
    }

    /// When the answer's body last moved, once it has.
    fn answer_moved(&self) -> Option<Instant> {
        match self.answer_ms.load(Ordering::Acquire) {
            u64::MAX => None,
            ms => Some(self.since + Duration::from_millis(ms)),
        }
    }

    fn ms(&self) -> u64 {
        self.since.elapsed().as_millis() as u64
    }

    pub fn state(&self) -> Sending {
        let at = |ms: u64| self.since + Duration::from_millis(ms);
        match self.done_ms.load(Ordering::Acquire) {
            u64::MAX if self.waiting_on_client.load(Ordering::Acquire) => Sending::WaitingOnClient,
            u64::MAX => Sending::WaitingOnUpstream(at(self.last_ms.load(Ordering::Acquire))),
            done => Sending::Done(at(done)),
        }
    }
}

impl RequestBody {
    pub fn new(inner: ClientBody, limit: Option<u64>, idle: Duration) -> Self {
        let progress = (!inner.is_end_stream()).then(|| Arc::new(BodyProgress::new()));
        RequestBody {
            inner: Some(inner),
            sent: 0,
            limit,
            idle: IdleTimer::new(idle),
            progress,
            copy: None,
        }
    }

    /// Holds a body still to come to `pace`, and counts it in `upload` while it lives. Out of
    /// line: a request whose body has come whole never runs it.
    #[cold]
    #[inline(never)]
    pub fn paced(&mut self, pace: UploadPace, upload: Option<Upload>) {
        if let Some(progress) = &self.progress {
            *progress.pace.lock().expect("pace lock") = Some(Pace {
                limit: pace,
                sleep: None,
                _upload: upload,
            });
        }
    }

    /// Whether data is still to come from the client.
    #[inline]
    pub fn to_come(&self) -> bool {
        self.progress.is_some()
    }

    /// Copies the body into `copy` as it streams (for a shadow).
    pub fn copying(mut self, copy: Option<Arc<Mutex<BodyCopy>>>) -> Self {
        self.copy = copy;
        self
    }

    /// A whole body the router sends itself (a shadow's copy).
    pub fn copied(bytes: Bytes) -> Self {
        RequestBody {
            inner: Some(ClientBody::Whole((!bytes.is_empty()).then_some(bytes))),
            sent: 0,
            limit: None,
            idle: IdleTimer::new(Duration::MAX),
            progress: None,
            copy: None,
        }
    }

    /// A body with no data: what a retried request sends (only bodiless requests are retried).
    pub fn empty() -> Self {
        RequestBody {
            inner: None,
            sent: 0,
            limit: None,
            idle: IdleTimer::new(Duration::MAX),
            progress: None,
            copy: None,
        }
    }

    /// How the sending goes, for a body that has data to come.
    pub fn progress(&self) -> Option<Arc<BodyProgress>> {
        self.progress.clone()
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if let Some(progress) = &this.progress {
            let ms = progress.ms();
            let pending = polled.is_pending();
            progress.waiting_on_client.store(pending, Ordering::Release);
            if !pending {
                progress.last_ms.store(ms, Ordering::Release);
            }
            if matches!(polled, Poll::Ready(None)) {
                progress.done_ms.store(ms, Ordering::Release);
            }
        }
        match polled {
            Poll::Pending => {
                let progress = &this.progress;
                // The pace holds until the answer streams: then the exchange is full duplex,
                // and only its idle timeout applies.
                if let Some(p) = progress
                    && p.answer_moved().is_none()
                    && let Some(pace) = p.pace.lock().expect("pace lock").as_mut()
                    && pace.overdue(cx, p.since, this.sent)
                {
                    return Poll::Ready(Some(Err(BodyError::ClientTooSlow(pace.limit.timeout))));
                }
                if (this.idle).expired(cx, || progress.as_ref().and_then(|p| p.answer_moved())) {
                    return Poll::Ready(Some(Err(BodyError::ClientIdle(this.idle.limit))));
                }
                Poll::Pending
            }
            Poll::Ready(None) => {
                if let Some(copy) = &this.copy {
                    copy.lock().expect("body copy").end();
                }
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::Client(e)))),
            Poll::Ready(Some(Ok(frame))) => {
                this.idle.reset();
                if let (Some(copy), Some(data)) = (&this.copy, frame.data_ref()) {
                    let mut copy = copy.lock().expect("body copy");
                    copy.push(data);
                    if this.inner.as_ref().is_some_and(Body::is_end_stream) {
                        copy.end();
                    }
                }
                // A client that sends no end-of-body a reader must ask for (a known length
                // read whole) has ended here.
                if let (Some(progress), Some(inner)) = (&this.progress, &this.inner)
                    && inner.is_end_stream()
                {
                    progress.done_ms.store(progress.ms(), Ordering::Release);
                }
                if let Some(data) = frame.data_ref() {
                    this.sent += data.len() as u64;
                    if let Some(limit) = this.limit
                        && this.sent > limit
                    {
                        return Poll::Ready(Some(Err(BodyError::TooLarge(limit))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

/// What a response body hands its bytes to as they stream (a shadow's comparison).
pub trait ResponseTap: Send + Sync + std::fmt::Debug {
    fn data(&mut self, data: &[u8]);
    /// The body went out whole; a tap dropped without this saw an incomplete body.
    fn end(self: Box<Self>);
}

/// A request body copied as it streams, up to a limit (for a shadow): whole, or nothing.
#[derive(Debug)]
pub struct BodyCopy {
    chunks: Vec<Bytes>,
    len: u64,
    limit: u64,
    complete: bool,
}

impl BodyCopy {
    pub fn new(limit: u64) -> Self {
        BodyCopy {
            chunks: Vec::new(),
            len: 0,
            limit,
            complete: false,
        }
    }

    fn push(&mut self, data: &Bytes) {
        self.len += data.len() as u64;
        if self.too_large() {
            self.chunks = Vec::new();
        } else {
            self.chunks.push(data.clone());
        }
    }

    fn end(&mut self) {
        self.complete = true;
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn too_large(&self) -> bool {
        self.len > self.limit
    }

    /// Whether the body was sent whole within the limit.
    pub fn is_whole(&self) -> bool {
        self.complete && !self.too_large()
    }

    /// The body, once it was sent whole within the limit.
    pub fn whole(&self) -> Option<Bytes> {
        if !self.is_whole() {
            return None;
        }
        let mut all = bytes::BytesMut::with_capacity(self.len as usize);
        for c in &self.chunks {
            all.extend_from_slice(c);
        }
        Some(all.freeze())
    }
}

/// Records one request's metrics exactly once, when its response is finished or dropped, and
/// hands a sampled request's access log line over.
#[derive(Debug)]
pub struct Completion {
    metrics: Arc<Metrics>,
    labels: Labels,
    status: http::StatusCode,
    start: Instant,
    /// Body bytes sent to the client.
    bytes: u64,
    log: Option<(Box<Entry>, Arc<AccessLog>)>,
    /// Keeps the endpoint's in-flight count up until the response is done.
    _in_flight: Option<InFlight>,
    /// Keeps the tenant's in-flight count up (what a hold's drain waits on).
    _tenant: Option<crate::cutover::hold::InFlight>,
}

impl Completion {
    pub fn new(
        metrics: Arc<Metrics>,
        labels: Labels,
        status: http::StatusCode,
        start: Instant,
    ) -> Self {
        Completion {
            metrics,
            labels,
            status,
            start,
            bytes: 0,
            log: None,
            _in_flight: None,
            _tenant: None,
        }
    }

    /// Keeps the endpoint's and the tenant's in-flight counts up until the response is done
    /// (one call: each builder step moves the whole completion).
    pub fn with_in_flight(
        mut self,
        in_flight: InFlight,
        tenant: Option<crate::cutover::hold::InFlight>,
    ) -> Self {
        self._in_flight = Some(in_flight);
        self._tenant = tenant;
        self
    }

    pub fn with_tenant(mut self, tenant: Option<crate::cutover::hold::InFlight>) -> Self {
        self._tenant = tenant;
        self
    }

    /// Logs the request when its response completes (a sampled request's entry).
    pub fn with_log(mut self, log: Option<(Box<Entry>, Arc<AccessLog>)>) -> Self {
        self.log = log;
        self
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        if let Some(slot) = self._tenant.as_ref().and_then(|t| t.ramp()) {
            (self.metrics.ramps).record(slot, self.labels.target, self.status, elapsed);
        }
        self.metrics
            .record(self.labels, StatusClass::of(self.status), elapsed);
        if let Some((entry, log)) = self.log.take() {
            log.finish(entry, self.labels, self.status, self.bytes, elapsed);
        }
    }
}

/// A response body as it comes from the upstream: read by the proxy's own HTTP/1.1 client,
/// or by hyper's (HTTP/2 targets and upgrades).
#[derive(Debug)]
pub enum UpstreamBody {
    H1(http1::client::Body),
    Hyper(Incoming),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            UpstreamBody::H1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpstreamBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::H1(b) => b.is_end_stream(),
            UpstreamBody::Hyper(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::H1(b) => b.size_hint(),
            UpstreamBody::Hyper(b) => b.size_hint(),
        }
    }
}

/// What the proxy answers with: the upstream's streamed body, or a short body of its own.
#[derive(Debug)]
pub struct ResponseBody {
    kind: Kind,
    _completion: Option<Completion>,
    /// For a streaming response bound to its tenant's side: ends it when the tenant moves.
    closing: Option<Box<Closing>>,
    /// For a shadowed request: the primary's answer, taken as it streams to the client.
    tap: Option<Box<dyn ResponseTap>>,
}

#[derive(Debug)]
struct Closing {
    _registration: Registration,
    closed: Pin<Box<tokio::sync::futures::OwnedNotified>>,
}

#[derive(Debug)]
enum Kind {
    Upstream {
        inner: UpstreamBody,
        idle: IdleTimer,
        target: usize,
        /// The client's body, when it had data to come: the other direction of the exchange.
        request: Option<Arc<BodyProgress>>,
    },
    Local(Option<Bytes>),
}

/// Bodies larger than this follow flips while they stream.
const STREAMING_BYTES: u64 = 1 << 20;

impl ResponseBody {
    /// A response that may stream for long: no length (chunked, to the close, an event
    /// stream) or a large one. Read from its size hint (its length as framed), not headers.
    pub(crate) fn is_streaming(&self) -> bool {
        use http_body::Body;
        !self.is_end_stream()
            && self
                .size_hint()
                .exact()
                .is_none_or(|len| len > STREAMING_BYTES)
    }

    /// An upstream's body; `request` is how the client's body goes, when it had data to come.
    pub fn upstream(
        inner: UpstreamBody,
        idle: Duration,
        target: usize,
        request: Option<Arc<BodyProgress>>,
        completion: Completion,
    ) -> Self {
        ResponseBody {
            kind: Kind::Upstream {
                inner,
                idle: IdleTimer::new(idle),
                target,
                request,
            },
            _completion: Some(completion),
            closing: None,
            tap: None,
        }
    }

    /// Hands the body, as it streams, to a shadow's comparison; the tap ends with the body.
    pub fn tapped(mut self, tap: Box<dyn ResponseTap>) -> Self {
        if self.is_end_stream() {
            tap.end();
        } else {
            self.tap = Some(tap);
        }
        self
    }

    /// Ends the body with [`BodyError::Moved`] when `registration` says its tenant moved.
    pub fn closing_with(mut self, registration: Registration) -> Self {
        let closed = Box::pin(registration.closed());
        self.closing = Some(Box::new(Closing {
            _registration: registration,
            closed,
        }));
        self
    }

    pub fn local(bytes: Bytes, mut completion: Option<Completion>) -> Self {
        if let Some(c) = &mut completion {
            c.bytes = bytes.len() as u64;
        }
        ResponseBody {
            kind: Kind::Local((!bytes.is_empty()).then_some(bytes)),
            _completion: completion,
            closing: None,
            tap: None,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if let Some(closing) = &mut this.closing
            && closing.closed.as_mut().poll(cx).is_ready()
        {
            this.closing = None;
            this.kind = Kind::Local(None);
            return Poll::Ready(Some(Err(BodyError::Moved)));
        }
        match &mut this.kind {
            Kind::Local(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream {
                inner,
                idle,
                target,
                request,
            } => {
                let polled = Pin::new(&mut *inner).poll_frame(cx);
                let result = match polled {
                    Poll::Pending => {
                        if !idle.expired(cx, || request.as_ref().map(|p| p.request_moved())) {
                            return Poll::Pending;
                        }
                        Err(BodyError::UpstreamIdle(idle.limit))
                    }
                    Poll::Ready(Some(Err(e))) => Err(BodyError::Upstream(e)),
                    Poll::Ready(other) => {
                        idle.reset();
                        if let Some(p) = request {
                            p.answer_ms.store(p.ms(), Ordering::Release);
                        }
                        if let (Some(Ok(frame)), Some(c)) = (&other, &mut this._completion)
                            && let Some(data) = frame.data_ref()
                        {
                            c.bytes += data.len() as u64;
                        }
                        if let Some(tap) = &mut this.tap {
                            // `other` holds no error: the arm above took those.
                            if let Some(Ok(frame)) = &other
                                && let Some(data) = frame.data_ref()
                            {
                                tap.data(data);
                            }
                            if (other.is_none() || inner.is_end_stream())
                                && let Some(tap) = this.tap.take()
                            {
                                tap.end();
                            }
                        }
                        return Poll::Ready(other.map(|r| r.map_err(BodyError::Upstream)));
                    }
                };
                if let (Err(_), Some(c)) = (&result, &this._completion) {
                    c.metrics.upstream_error(*target, UpstreamErrorKind::Body);
                }
                Poll::Ready(Some(result))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Local(bytes) => bytes.is_none(),
            Kind::Upstream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Local(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Kind::Upstream { inner, .. } => inner.size_hint(),
        }
    }
}
