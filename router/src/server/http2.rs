//! HTTP/2 from clients (cleartext with prior knowledge, and TLS with ALPN `h2`), served on
//! the `h2` crate.
//!
//! Every stream of a connection is served within the connection's own task: the streams'
//! futures wait in one set, and the connection's frames are written once for all the streams
//! that answered since the last write. A general-purpose server spawns a task for each stream
//! instead, and moves the proxy's whole request future (some 3 KB) into it; here that cost,
//! about a tenth of a request's instructions, is not paid.
//!
//! What the connection does besides: it answers `PING`s and sends its own every
//! `keep_alive_interval` (no answer within `keep_alive_timeout` closes it); when `stop` is set
//! it sends `GOAWAY` and finishes the streams it has; with no stream open for `idle_timeout`
//! it closes; a stream the client resets is dropped, and with it the upstream request.
//! Headers that only HTTP/1.1 knows are taken out of responses (`h2` refuses them), and
//! `Date` is added where a response has none.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use h2::server::SendResponse;
use h2::{Reason, SendStream};
use http::{HeaderValue, Request, Response, header};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tracing::Instrument;

use crate::body::{ClientBody, H2Body, ResponseBody};
use crate::proxy::{Peer, Proxy};

/// A connection's HTTP/2 settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The connection preface must arrive within this, and a connection with no stream open
    /// for this long is closed (`header_read_timeout`, as an idle HTTP/1.1 connection is).
    pub idle_timeout: Duration,
    pub max_concurrent_streams: u32,
    pub max_header_list_size: u32,
    pub keep_alive_interval: Duration,
    pub keep_alive_timeout: Duration,
}

/// Window sizes and buffers: a megabyte a stream and a connection, 400 KB of response data
/// buffered a stream, as general-purpose servers set them.
const WINDOW: u32 = 1024 * 1024;
const MAX_SEND_BUFFER: usize = 400 * 1024;
/// Boxes of finished streams a connection keeps for its next streams: some 4 KB each.
const MAX_SPENT: usize = 32;
/// Streams reset by this side's errors, at most, before the connection is closed.
const MAX_LOCAL_RESETS: usize = 1024;

/// Why a connection ended before the client closed it.
#[derive(Debug, thiserror::Error)]
pub enum Ended {
    #[error(transparent)]
    Protocol(#[from] h2::Error),
    #[error("no connection preface within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("no answer to a keep-alive ping within {0:?}")]
    PingTimeout(Duration),
}

/// Serves one HTTP/2 connection until the client closes it, it fails, or `stop` is set and
/// its streams are done.
pub async fn serve<S>(
    io: S,
    live: &ArcSwap<Proxy>,
    client: &Peer,
    settings: &Settings,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Ended>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let conn = h2::server::Builder::new()
        .initial_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_concurrent_streams(settings.max_concurrent_streams)
        .max_header_list_size(settings.max_header_list_size)
        .max_local_error_reset_streams(Some(MAX_LOCAL_RESETS))
        .handshake::<_, Bytes>(io);
    let mut conn = tokio::time::timeout(settings.idle_timeout, conn)
        .await
        .map_err(|_| Ended::HandshakeTimeout(settings.idle_timeout))??;
    let mut keep_alive = KeepAlive::new(
        conn.ping_pong().expect("the first call has the ping-pong"),
        settings,
    );
    let mut streams = FuturesUnordered::new();
    // Boxes of ended streams for the next ones to take, kept while the connection lives (the
    // idle close bounds that): at most `MAX_SPENT`, about 128 KB.
    let mut spent = Vec::new();
    let mut idle = Idle::new(settings.idle_timeout);
    let mut closing = *stop.borrow();
    if closing {
        conn.graceful_shutdown();
    }
    let mut stopped = pin!(crate::shutdown::until_set(&mut stop));
    poll_fn(|cx| {
        loop {
            // Streams first: those that answered queue their frames, and the connection's
            // poll below writes them all at once.
            while let Poll::Ready(Some(done)) = streams.poll_next_unpin(cx) {
                if spent.len() < MAX_SPENT {
                    spent.push(done);
                }
            }
            if !closing && stopped.as_mut().poll(cx).is_ready() {
                // GOAWAY, and the streams open finish.
                closing = true;
                conn.graceful_shutdown();
            }
            if !closing && streams.is_empty() && idle.expired(cx) {
                // Nothing to finish: GOAWAY and close at once, without waiting on the client.
                tracing::debug!(peer = %client.addr, "idle HTTP/2 connection closed");
                closing = true;
                conn.abrupt_shutdown(Reason::NO_ERROR);
            }
            if let Poll::Ready(e) = keep_alive.poll(cx) {
                return Poll::Ready(Err(e));
            }
            match conn.poll_accept(cx) {
                Poll::Ready(Some(Ok((req, respond)))) => {
                    idle.busy();
                    let length = crate::proxy::content_length(req.headers());
                    let mut settle = None;
                    // Most requests end with their headers: asking the stream once here saves
                    // the proxy's later asks, each of which takes the connection's lock.
                    let req = req.map(|stream| match stream.is_end_stream() {
                        true => ClientBody::Whole(None),
                        false => {
                            if length == Some(0) {
                                settle = Some(settings.idle_timeout);
                            }
                            ClientBody::H2(H2Body::new(stream, length))
                        }
                    });
                    let stream = serve_stream(live.load_full(), req, respond, client, settle);
                    // Boxed: the set then moves a pointer, not the stream's whole future.
                    let boxed = match spent.pop() {
                        Some(mut spent) => {
                            Pin::set(&mut spent, stream);
                            spent
                        }
                        None => Box::pin(stream),
                    };
                    streams.push(Reused(Some(boxed)));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e.into())),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await
}

/// A stream's boxed future, handed back when it is done so that the next stream of the
/// connection can take the box. A stream's future is some 4 KB, a size the allocator keeps
/// few of: with hundreds of streams open, a box for each from the allocator cost more than the
/// rest of the stream's allocations together.
struct Reused<F>(Option<Pin<Box<F>>>);

impl<F: Future<Output = ()>> Future for Reused<F> {
    type Output = Pin<Box<F>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Pin<Box<F>>> {
        let stream = self.0.as_mut().expect("a stream is not polled once done");
        ready!(stream.as_mut().poll(cx));
        Poll::Ready(self.0.take().expect("present until here"))
    }
}

/// One stream: the proxy's answer, then its body, until the end or the client's reset.
async fn serve_stream(
    proxy: Arc<Proxy>,
    req: Request<ClientBody>,
    mut respond: SendResponse<Bytes>,
    client: &Peer,
    settle: Option<Duration>,
) {
    // A request that says `content-length: 0` but leaves its stream open is complete for an
    // upstream as soon as its head is sent: its end is awaited first (within `settle`), so
    // content it then sends is refused here and never reaches an upstream as a whole request.
    let req = match settle {
        None => Ok(req),
        Some(within) => settled(req, within).await,
    };
    let resp = match req {
        // The answer's future (the proxy's whole exchange) is done with before the body is
        // sent: awaited in its own function, it does not add its size to the body's part of
        // this one.
        Ok(req) => match answer(proxy, req, &mut respond, client).await {
            Some(resp) => resp,
            None => {
                tracing::debug!(peer = %client.addr, "the client reset the stream");
                return;
            }
        },
        Err((parts, timed_out)) => proxy.refuse_zero_length(&parts, timed_out),
    };
    let (mut head, body) = resp.into_parts();
    // The proxy has taken them out already; `h2` refuses a response that has one, so make sure.
    crate::proxy::strip_hop_by_hop(&mut head.headers, false);
    if !head.headers.contains_key(header::DATE) {
        let mut date = Vec::with_capacity(29);
        http1::codec::http_date(&mut date);
        if let Ok(date) = HeaderValue::from_bytes(&date) {
            head.headers.insert(header::DATE, date);
        }
    }
    let end = body.is_end_stream();
    // `contains_key`, not `entry`: an entry makes room first, and may grow a full map.
    if !end
        && let Some(len) = body.size_hint().exact()
        && !head.headers.contains_key(header::CONTENT_LENGTH)
    {
        head.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    match respond.send_response(Response::from_parts(head, ()), end) {
        Ok(send) if !end => send_body(body, send).await,
        Ok(_) => {}
        Err(e) => {
            tracing::debug!(error = %e, peer = %client.addr, "the response could not be sent")
        }
    }
}

/// A `content-length: 0` request whose stream is still open, once it has ended with nothing
/// more: its body is then the empty one. Content, trailers or an error of the stream refuse
/// it (`Err` with its head), as does no end within `within` (`true`: timed out).
async fn settled(
    req: Request<ClientBody>,
    within: Duration,
) -> Result<Request<ClientBody>, (http::request::Parts, bool)> {
    let (parts, mut body) = req.into_parts();
    let ended = tokio::time::timeout(within, async {
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) if f.data_ref().is_some_and(|d| d.is_empty()) => continue,
                _ => return false,
            }
        }
        true
    })
    .await;
    match ended {
        Ok(true) => Ok(Request::from_parts(parts, ClientBody::Whole(None))),
        Ok(false) => Err((parts, false)),
        Err(_) => Err((parts, true)),
    }
}

/// The proxy's answer to a stream, or `None` when the client reset the stream first: the reset
/// drops the request, and the upstream exchange with it.
async fn answer(
    proxy: Arc<Proxy>,
    req: Request<ClientBody>,
    respond: &mut SendResponse<Bytes>,
    client: &Peer,
) -> Option<Response<ResponseBody>> {
    let span = tracing::debug_span!("request", peer = %client.addr, method = %req.method(), path = %req.uri().path());
    let mut handling = pin!(proxy.handle(req, client).instrument(span));
    poll_fn(|cx| match handling.as_mut().poll(cx) {
        Poll::Ready(resp) => Poll::Ready(Some(resp)),
        Poll::Pending => match respond.poll_reset(cx) {
            Poll::Ready(_) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        },
    })
    .await
}

/// Sends a response body as `DATA` frames (and trailers), each once the stream has window
/// for it; an error of the body resets the stream.
async fn send_body(body: ResponseBody, mut send: SendStream<Bytes>) {
    let mut body = pin!(body);
    loop {
        let frame = poll_fn(|cx| match send.poll_reset(cx) {
            Poll::Ready(_) => Poll::Ready(None),
            Poll::Pending => body.as_mut().poll_frame(cx).map(Some),
        })
        .await;
        let frame = match frame {
            // The client reset the stream: nothing more to send.
            None => return,
            Some(None) => {
                let _ = send.send_data(Bytes::new(), true);
                return;
            }
            Some(Some(Err(e))) => {
                tracing::debug!(error = %e, "the response body failed: the stream is reset");
                send.send_reset(Reason::INTERNAL_ERROR);
                return;
            }
            Some(Some(Ok(frame))) => frame,
        };
        let frame = match frame.into_data() {
            Ok(data) => {
                // The last frame is handed to the stream at once: it holds it until the
                // client's window takes it, as this future would, and the stream ends now.
                let end = body.is_end_stream();
                if !end && !data.is_empty() && !wait_for_window(&mut send, data.len()).await {
                    return;
                }
                if send.send_data(data, end).is_err() || end {
                    return;
                }
                continue;
            }
            Err(frame) => frame,
        };
        if let Ok(trailers) = frame.into_trailers() {
            let _ = send.send_trailers(trailers);
            return;
        }
    }
}

/// Waits until the stream may send some of `len` bytes (the rest waits in its buffer, which
/// `MAX_SEND_BUFFER` bounds). False when the stream was reset meanwhile.
async fn wait_for_window(send: &mut SendStream<Bytes>, len: usize) -> bool {
    send.reserve_capacity(len);
    poll_fn(|cx| {
        loop {
            if send.capacity() > 0 {
                return Poll::Ready(true);
            }
            match ready!(send.poll_capacity(cx)) {
                Some(Ok(n)) if n > 0 => return Poll::Ready(true),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Poll::Ready(false),
            }
        }
    })
    .await
}

/// How long a connection has had no stream open.
struct Idle {
    limit: Duration,
    timer: Pin<Box<Sleep>>,
    armed: bool,
}

impl Idle {
    fn new(limit: Duration) -> Self {
        Idle {
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
            armed: true,
        }
    }

    /// Called while no stream is open: true once none has been for the limit.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.armed {
            self.armed = true;
            let deadline = Instant::now() + self.limit;
            self.timer.as_mut().reset(deadline);
        }
        self.timer.as_mut().poll(cx).is_ready()
    }

    /// A stream opened: the next idle spell starts when the streams are done.
    fn busy(&mut self) {
        self.armed = false;
    }
}

/// The connection's own pings: one every `interval`; no answer within `timeout` ends the
/// connection.
struct KeepAlive {
    ping_pong: h2::PingPong,
    interval: Duration,
    timeout: Duration,
    timer: Pin<Box<Sleep>>,
    waiting: bool,
}

impl KeepAlive {
    fn new(ping_pong: h2::PingPong, settings: &Settings) -> Self {
        KeepAlive {
            ping_pong,
            interval: settings.keep_alive_interval,
            timeout: settings.keep_alive_timeout,
            timer: Box::pin(tokio::time::sleep(settings.keep_alive_interval)),
            waiting: false,
        }
    }

    /// Ready with what ends the connection.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Ended> {
        loop {
            if self.waiting {
                match self.ping_pong.poll_pong(cx) {
                    Poll::Ready(Ok(_)) => {
                        self.waiting = false;
                        let next = Instant::now() + self.interval;
                        self.timer.as_mut().reset(next);
                        continue;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(e.into()),
                    Poll::Pending => {}
                }
            }
            ready!(self.timer.as_mut().poll(cx));
            if self.waiting {
                return Poll::Ready(Ended::PingTimeout(self.timeout));
            }
            if let Err(e) = self.ping_pong.send_ping(h2::Ping::opaque()) {
                return Poll::Ready(e.into());
            }
            self.waiting = true;
            let deadline = Instant::now() + self.timeout;
            self.timer.as_mut().reset(deadline);
        }
    }
}
