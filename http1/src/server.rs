//! HTTP/1.1 from clients, written for a proxy's common case: a request with no body, a
//! `Content-Length` body or a chunked one, answered on a kept-alive connection. The head is
//! parsed in place with `httparse`, the request runs in the connection's own task, and the
//! response goes out as one write of head and body when the body is already at hand.
//!
//! Every head is checked first (see `parse_head` for the rules), and one that could be framed
//! two ways is answered at once and the connection closed. What is left for a general-purpose
//! server goes to it with the bytes already read, for the rest of the connection
//! ([`Ended::Handoff`]): HTTP/2's preface, HTTP/1.0, upgrades, `Expect`, `CONNECT`, a target
//! that is not a path.
//!
//! The head must be complete within the header read timeout of the connection going idle,
//! and be no larger than `max_header_bytes` (431). Bodies are read as the handler asks for
//! them; their limits are the handler's.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;

use crate::Error;
use crate::codec::{self, Chunked, Decoder};

/// A client connection the server can read and write at once: its two halves, and the way
/// back to one stream for a hand-over. TCP splits without a lock; a TLS stream splits the
/// same way through `tokio::io::split`.
pub trait Transport: Send + 'static {
    type Read: AsyncRead + Send + Unpin + 'static;
    type Write: AsyncWrite + Send + Unpin + 'static;

    fn split(self) -> (Self::Read, Self::Write);
    fn unsplit(read: Self::Read, write: Self::Write) -> Self;
}

impl Transport for TcpStream {
    type Read = OwnedReadHalf;
    type Write = OwnedWriteHalf;

    fn split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        self.into_split()
    }

    fn unsplit(read: OwnedReadHalf, write: OwnedWriteHalf) -> Self {
        read.reunite(write)
            .expect("both halves come from one stream")
    }
}

/// Any other stream (TLS over TCP, say), split by a lock its two halves share. The lock is
/// uncontended (one task reads, the same task writes), so it costs an atomic operation per
/// read or write.
#[derive(Debug)]
pub struct Split<S>(pub S);

impl<S> Transport for Split<S>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Read = tokio::io::ReadHalf<S>;
    type Write = tokio::io::WriteHalf<S>;

    fn split(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self.0)
    }

    fn unsplit(read: Self::Read, write: Self::Write) -> Self {
        Split(read.unsplit(write))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Split<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Split<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// What serves the requests of a connection: a proxy, in this workspace. The server reads
/// the head, hands the request over with its body still on the wire (read as the handler
/// polls it), and writes the response the handler returns.
pub trait Handler<R> {
    type Body: http_body::Body<Data = Bytes, Error: std::fmt::Display> + Unpin;

    fn handle(
        &self,
        request: Request<Body<R>>,
    ) -> impl Future<Output = Response<Self::Body>> + Send;

    /// The connection waits for a request head: its first, or its next. Until
    /// [`Handler::begin`], it has no request in progress, and may be closed to make room for
    /// another ([`Handler::poll_close`]).
    #[inline]
    fn idle(&self) {}

    /// Ready when the connection, waiting for a request head, is to close. Polled only while
    /// it waits.
    #[inline]
    fn poll_close(&self, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }

    /// A request head is complete. `false`: the connection was chosen to close while it
    /// waited; the request is not served and the connection closes.
    #[inline]
    fn begin(&self) -> bool {
        true
    }
}

/// The most header lines in a request head (hyper's server allows as many).
const MAX_HEADERS: usize = 100;
/// How much room a read asks for.
const READ_SIZE: usize = 8 * 1024;
/// Read buffers a worker thread keeps for connections waking from idle, each of at most
/// twice `READ_SIZE` (a buffer a large head grew goes back to the allocator).
const SPARE_BUFFERS: usize = 256;

thread_local! {
    /// Read buffers given back by connections waiting for their next request, for the next
    /// connection that has bytes to read. The allocator would serve each of those wake-ups
    /// from its slower paths, as they come from many connections in turn.
    static SPARES: std::cell::RefCell<Vec<BytesMut>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Scratch space for parsing a request head: a head is parsed without a wait, so one per
    /// worker thread serves all its connections.
    static SPANS: std::cell::RefCell<Vec<Span>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Response bytes gathered before a write, and the size from which a data frame is written
/// from its own buffer rather than copied behind the head.
const WRITE_GATHER: usize = 16 * 1024;
/// After answering a request whose body was not read, how long the connection keeps reading
/// (and discarding) before it closes: closing with unread data would reset the connection
/// and could destroy the answer before the client reads it.
const LINGER: Duration = Duration::from_secs(2);

/// The limits on what a client sends before its request is handled.
#[derive(Debug, Clone)]
pub struct Settings {
    pub header_read_timeout: Duration,
    /// Time a new connection has to send its first byte (at most `header_read_timeout`): a
    /// client that connects and says nothing does not keep its connection for the whole
    /// header read timeout.
    pub first_byte_timeout: Duration,
    pub max_header_bytes: usize,
    /// Room in each request's header map for the headers the handler adds, so that the map
    /// does not grow twice.
    pub added_headers: usize,
    /// Drop header fields whose name has an underscore: some servers read `Content_Length`
    /// or `X_Tenant_Id` as the dashed name, which would then mean two things.
    pub drop_underscored_names: bool,
}

/// How a connection served here ended.
#[derive(Debug)]
pub enum Ended<T> {
    /// Closed: by the client, after `Connection: close`, on an error, a timeout or shutdown.
    Closed,
    /// A request this server does not serve: the connection and the bytes read from it, for
    /// a general-purpose server to serve from that request on.
    Handoff(Rewind<T>),
}

/// Serves one client connection until it closes or meets a request to hand over. `peer` is
/// for the logs. `draining` set means: finish the request in hand, answer it with
/// `Connection: close`, and close; `stop` wakes a connection that is idle between requests.
pub async fn serve<T: Transport, H: Handler<T::Read>>(
    stream: T,
    peer: SocketAddr,
    handler: &H,
    settings: &Settings,
    draining: &AtomicBool,
    mut stop: watch::Receiver<bool>,
) -> Ended<T> {
    let (read_half, mut writer) = stream.split();
    // An answer's head and small data frames, gathered for one write.
    let mut out = Vec::with_capacity(1024);
    // Lent to a request's body while the body is read, then taken back. Its buffer comes with
    // the first bytes, from the thread's spares when it has one.
    let mut reader = Some(Reader {
        half: read_half,
        buf: BytesMut::new(),
    });
    let timeout = settings.header_read_timeout;
    let opened = tokio::time::Instant::now();
    let first_byte_by = opened + settings.first_byte_timeout.min(timeout);
    // One timer for the connection's life, moved on only when it fires: re-arming a timer per
    // request costs more than the request's parse.
    let mut timer = Box::pin(tokio::time::sleep_until(first_byte_by));
    let mut stopped = std::pin::pin!(stop.changed());
    // No byte read yet: the first byte's deadline applies.
    let mut silent = true;
    loop {
        let Some(mut here) = reader.take() else {
            return Ended::Closed;
        };
        // Draining: a connection closes between requests, but a request whose bytes have
        // already been read (pipelined behind the last one) is answered first. Closing on it
        // would leave the client a request it cannot know was never served.
        if draining.load(Ordering::Acquire) && here.buf.is_empty() {
            return Ended::Closed;
        }
        // 1. The head, within the header read timeout of the connection going idle.
        handler.idle();
        let deadline = if silent {
            opened + timeout
        } else {
            tokio::time::Instant::now() + timeout
        };
        let head = loop {
            if !here.buf.is_empty() {
                let max_head = settings.max_header_bytes;
                let refusal = match SPANS.with_borrow_mut(|spans| {
                    parse_head(
                        &mut here.buf,
                        spans,
                        max_head,
                        settings.added_headers,
                        settings.drop_underscored_names,
                    )
                }) {
                    Parsed::Request(head) => break head,
                    Parsed::Partial => None,
                    Parsed::Handoff => return Ended::Handoff(Rewind::new(here, writer)),
                    Parsed::Refuse(status, why) => Some((status, format!("switchyard: {why}\n"))),
                    Parsed::TooLarge => Some((
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        format!("switchyard: the request head exceeds {max_head} bytes\n"),
                    )),
                };
                if let Some((status, msg)) = refusal {
                    tracing::debug!(%peer, %status, why = msg.trim_end(), "refused a request head");
                    let _ = Box::pin(refuse(&mut writer, status, msg)).await;
                    Box::pin(linger(writer, here)).await;
                    return Ended::Closed;
                }
            }
            let idle = here.buf.is_empty();
            tokio::select! {
                biased;
                read = std::future::poll_fn(|cx| here.poll_next_head(cx)) => match read {
                    Ok(0) => {
                        if !idle {
                            tracing::debug!(%peer, "client closed the connection in a request head");
                        }
                        return Ended::Closed;
                    }
                    Ok(_) => silent = false,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "reading from the client failed");
                        return Ended::Closed;
                    }
                },
                () = &mut timer => {
                    let now = tokio::time::Instant::now();
                    if silent && now >= first_byte_by {
                        tracing::debug!(%peer, timeout = ?settings.first_byte_timeout, "no byte within the first byte timeout");
                        return Ended::Closed;
                    }
                    if now >= deadline {
                        tracing::debug!(%peer, ?timeout, "no complete request head within the header read timeout");
                        return Ended::Closed;
                    }
                    timer.as_mut().reset(deadline);
                }
                // Shutdown closes a connection that is between requests.
                _ = &mut stopped, if idle => return Ended::Closed,
                // So does making room for another connection, even in a head.
                () = std::future::poll_fn(|cx| handler.poll_close(cx)) => {
                    tracing::debug!(%peer, "closed while waiting for a request head, to make room for a new connection");
                    return Ended::Closed;
                }
            }
        };
        if !handler.begin() {
            return Ended::Closed;
        }

        // 2. The request, with its body reading this connection. Its handling is most of the
        // state of the connection's task, which an idle connection holds too. Boxing steps 2
        // and 3 per request was measured: 4.1 KB less per idle connection, and 5.7% more
        // instructions a request by callgrind (the future's copy into the box, the
        // allocator), 5% fewer requests a core serves. Even a function of their own costs
        // 1.5%: the nested future is copied into this one's state.
        let Head {
            request,
            framing,
            mut close,
            head_request,
            trailers,
        } = head;
        let (request, body) = match framing {
            None => {
                reader = Some(here);
                (request.map(|()| Body { shared: None }), None)
            }
            Some(framing) => {
                let shared = Arc::new(Mutex::new(BodyState {
                    reader: Some(here),
                    framing,
                }));
                let body = Body {
                    shared: Some(shared.clone()),
                };
                (request.map(|()| body), Some(shared))
            }
        };
        let response = handler.handle(request).await;

        // 3. The response. A body dropped before its end closes the connection after the
        // answer. A body still held (an upstream reading it while it answers, full duplex) is
        // left alone until the answer is out, then settled the same way.
        let mut lent = body;
        let mut body_left = None;
        if let Some(shared) = lent.take_if(|s| Arc::strong_count(s) == 1) {
            settle(&shared, &mut reader, &mut body_left, &mut close);
        }
        // The last answer before a drain says `Connection: close`; one with a request read
        // behind it does not, so that request is still answered on this connection.
        let next_read = reader.as_ref().is_some_and(|r| !r.buf.is_empty());
        close |= draining.load(Ordering::Acquire) && !next_read;
        let complete = write_response(
            &mut writer,
            &mut out,
            response,
            head_request,
            close,
            trailers,
        )
        .await
        .unwrap_or_else(|e| {
            tracing::debug!(%peer, error = %e, "writing to the client failed");
            false
        });
        if let Some(shared) = lent {
            if Arc::strong_count(&shared) == 1 {
                settle(&shared, &mut reader, &mut body_left, &mut close);
            } else {
                // Still being read elsewhere: the connection cannot be taken back.
                close = true;
            }
        }
        if !complete || close {
            if let Some(left) = body_left {
                Box::pin(linger(writer, left)).await;
            }
            return Ended::Closed;
        }
    }
}

/// Takes the reader back from a body nobody else holds: to the connection when the body was
/// read to its end (or what is left of it is already buffered), else to `left` for lingering,
/// and the connection closes.
fn settle<R>(
    shared: &Mutex<BodyState<R>>,
    reader: &mut Option<Reader<R>>,
    left: &mut Option<Reader<R>>,
    close: &mut bool,
) {
    let mut state = shared.lock().expect("body lock");
    match state.take_reader_if_done() {
        Some(back) => *reader = Some(back),
        None => {
            *close = true;
            *left = state.reader.take();
        }
    }
}

/// A request head that this path serves.
#[derive(Debug)]
struct Head {
    request: Request<()>,
    /// `None`: no body.
    framing: Option<Decoder>,
    /// The client sent `Connection: close`.
    close: bool,
    head_request: bool,
    /// The client accepts trailers (`TE: trailers`).
    trailers: bool,
}

// Made once per request and unpacked at once: boxing the head would add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Parsed {
    Request(Head),
    Partial,
    Handoff,
    /// Over `max_header_bytes`: answered with 431 here, so the limit is the configured one.
    TooLarge,
    /// Framed in a way that could read two ways: answered with this status and reason, and
    /// the connection closes.
    Refuse(StatusCode, &'static str),
}

/// Where a header's name and value lie in the head.
#[derive(Debug, Clone, Copy)]
struct Span {
    name: (usize, usize),
    value: (usize, usize),
}

/// The HTTP/2 connection preface: a client speaking HTTP/2 with prior knowledge.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Parses one request head from the front of `buf` and removes it; a head for hyper's server
/// is left in `buf`. `spans` is scratch space kept by the thread, so that no request pays for
/// zeroing room for a hundred headers.
///
/// The framing rules are enforced here, for every head, before any is handed over (hyper's
/// parser is more lenient, so nothing it reads may reach it unchecked), each refused with
/// the connection closed after the answer:
/// - lines end in CRLF only: a lone LF ends a line for some servers and not for others, so
///   a header hidden after one reads as two requests at one hop and one at the next (400);
/// - no whitespace before a colon, no obs-fold, no bad token (httparse refuses these; 400);
/// - `Transfer-Encoding` is exactly one `chunked`: another coding would be forwarded with a
///   changed meaning (501), `chunked` twice or with `Content-Length` is ambiguous (400);
/// - `Content-Length` is digits up to 2^63-1, one value a field, and repeated only with the
///   same value (400).
fn parse_head(
    buf: &mut BytesMut,
    spans: &mut Vec<Span>,
    max_head: usize,
    added_headers: usize,
    drop_underscored: bool,
) -> Parsed {
    if buf.starts_with(&H2_PREFACE[..buf.len().min(H2_PREFACE.len())]) {
        return if buf.len() >= H2_PREFACE.len() {
            Parsed::Handoff
        } else {
            Parsed::Partial
        };
    }
    let mut slots = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    spans.clear();
    let mut parsed = httparse::Request::new(&mut []);
    let len = match parsed.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) if len <= max_head => len,
        Ok(httparse::Status::Partial) if buf.len() < max_head => return Parsed::Partial,
        Ok(_) | Err(httparse::Error::TooManyHeaders) => return Parsed::TooLarge,
        Err(e) => return Parsed::Refuse(StatusCode::BAD_REQUEST, bad_head(e)),
    };
    if memchr::memchr_iter(b'\n', &buf[..len]).any(|i| i == 0 || buf[i - 1] != b'\r') {
        return Parsed::Refuse(
            StatusCode::BAD_REQUEST,
            "a line of the request head ends in LF without CR",
        );
    }
    let (Some(method), Some(target), Some(version)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Parsed::Refuse(StatusCode::BAD_REQUEST, "the request line is incomplete");
    };
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        (start, start + s.len())
    };
    let mut length = None;
    let mut lengths = 0;
    let mut codings = 0;
    let mut close = false;
    let mut trailers = false;
    let mut handoff = version != 1 || !target.starts_with('/') || method == "CONNECT";
    // One scan of the header lines finds no underscore in almost every head; only when one
    // has an underscore somewhere are the names looked at one by one.
    let underscored = drop_underscored
        && parsed.headers.first().is_some_and(|first| {
            let from = at(first.name.as_bytes()).0;
            memchr::memchr(b'_', &buf[from..len]).is_some()
        });
    for header in parsed.headers.iter() {
        let (name, value) = (header.name.as_bytes(), header.value);
        if underscored && name.contains(&b'_') {
            continue;
        }
        spans.push(Span {
            name: at(name),
            value: at(value),
        });
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if is("content-length") {
            // A list in one field (`5, 5`) is refused, as hyper's server does; the same value
            // in two fields is read as one.
            match (length, codec::parse_length(value)) {
                (_, None) => {
                    return Parsed::Refuse(
                        StatusCode::BAD_REQUEST,
                        "Content-Length is not one number up to 2^63-1",
                    );
                }
                (Some(l), Some(n)) if l != n => {
                    return Parsed::Refuse(
                        StatusCode::BAD_REQUEST,
                        "Content-Length has different values",
                    );
                }
                (_, n) => length = n,
            }
            lengths += 1;
        } else if is("transfer-encoding") {
            for coding in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if !coding.eq_ignore_ascii_case(b"chunked") {
                    return Parsed::Refuse(
                        StatusCode::NOT_IMPLEMENTED,
                        "the only transfer coding accepted is chunked",
                    );
                }
                codings += 1;
            }
        } else if is("connection") {
            for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    handoff = true;
                }
            }
        } else if is("upgrade") || is("expect") {
            handoff = true;
        } else if is("te") {
            trailers = value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"));
        }
    }
    match (codings, length) {
        (0, _) => {}
        (1, None) if version == 1 => {}
        (1, None) => {
            return Parsed::Refuse(
                StatusCode::BAD_REQUEST,
                "an HTTP/1.0 request cannot be chunked",
            );
        }
        (1, Some(_)) => {
            return Parsed::Refuse(
                StatusCode::BAD_REQUEST,
                "the request has both Content-Length and Transfer-Encoding",
            );
        }
        _ => {
            return Parsed::Refuse(
                StatusCode::BAD_REQUEST,
                "the request is chunked more than once",
            );
        }
    }
    if handoff {
        return Parsed::Handoff;
    }
    let chunked = codings == 1;
    let count = parsed.headers.len();
    let method = at(method.as_bytes());
    let target = at(target.as_bytes());
    let head = buf.split_to(len).freeze();
    let slice = |(start, end): (usize, usize)| head.slice(start..end);

    let built = (|| {
        let method = Method::from_bytes(&head[method.0..method.1]).ok()?;
        let uri = Uri::from_maybe_shared(slice(target)).ok()?;
        // Room for the headers the proxy adds, so that they do not grow the map twice.
        let mut headers = HeaderMap::with_capacity(count + added_headers);
        for span in spans.iter() {
            let name = HeaderName::from_bytes(&head[span.name.0..span.name.1]).ok()?;
            // The bytes passed httparse's check, which is the one HeaderValue makes.
            let value = HeaderValue::from_maybe_shared(slice(span.value)).ok()?;
            headers.append(name, value);
        }
        let mut request = Request::new(());
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Some(request)
    })();
    let Some(mut request) = built else {
        return Parsed::Refuse(
            StatusCode::BAD_REQUEST,
            "the request target or a header is not valid",
        );
    };
    let framing = match (chunked, length) {
        (true, _) => Some(Decoder::Chunked(Chunked::default())),
        (false, Some(n)) if n > 0 => Some(Decoder::Length(n)),
        _ => None,
    };
    // A repeated `Content-Length` of one value goes on as one field.
    if let (Some(n), 2..) = (length, lengths) {
        request
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    Parsed::Request(Head {
        head_request: request.method() == Method::HEAD,
        request,
        framing,
        close,
        trailers,
    })
}

/// What is wrong with a head httparse refused, for the 400's body.
fn bad_head(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => {
            "a header name is not a token (whitespace before the colon, or a folded line)"
        }
        httparse::Error::HeaderValue => "a header value has a character not allowed",
        httparse::Error::NewLine => "a line of the request head does not end in CRLF",
        httparse::Error::Status | httparse::Error::Token => "the request line is not valid",
        httparse::Error::Version => "the HTTP version is not 1.0 or 1.1",
        httparse::Error::TooManyHeaders => "the request has too many headers",
    }
}

/// The read side of a client connection and what has been read from it but not used.
#[derive(Debug)]
struct Reader<R> {
    half: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// Reads more into the buffer; `Ok(0)` is the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() == 0
            && let Some(spare) = SPARES.with_borrow_mut(Vec::pop)
        {
            self.buf = spare;
        }
        if self.buf.capacity() - self.buf.len() < READ_SIZE / 4 {
            self.buf.reserve(READ_SIZE);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.half), cx, &mut self.buf)
    }

    /// `poll_fill` between requests. While nothing has come, the connection holds no read
    /// buffer: idle keep-alive connections can be many, and the buffer is most of what one
    /// costs. It goes to the thread's spares (or back to the allocator when they are full),
    /// and the wake-up that data has come takes one again.
    fn poll_next_head(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let read = self.poll_fill(cx);
        if read.is_pending() && self.buf.is_empty() {
            let buf = std::mem::take(&mut self.buf);
            SPARES.with_borrow_mut(|spares| {
                if spares.len() < SPARE_BUFFERS && buf.capacity() <= 2 * READ_SIZE {
                    spares.push(buf);
                }
            });
        }
        read
    }
}

#[derive(Debug)]
struct BodyState<R> {
    /// `None` once the connection has taken it back.
    reader: Option<Reader<R>>,
    framing: Decoder,
}

impl<R> BodyState<R> {
    /// The next frame from what is buffered: `None` when more bytes are needed or the body has
    /// ended (then the framing is done).
    fn decode(&mut self) -> Result<Option<Frame<Bytes>>, Error> {
        let Some(reader) = self.reader.as_mut() else {
            return Ok(None);
        };
        self.framing.decode(&mut reader.buf)
    }

    /// The reader, once the body has been read to its end, including what is already
    /// buffered (a small body that came with its head and was never asked for).
    fn take_reader_if_done(&mut self) -> Option<Reader<R>> {
        while !self.framing.is_done() {
            match self.decode() {
                Ok(Some(_)) => {}
                Ok(None) if self.framing.is_done() => {}
                _ => return None,
            }
        }
        self.reader.take()
    }
}

/// A request body read from the client connection as the handler asks for it (empty when
/// the request has none).
#[derive(Debug)]
pub struct Body<R> {
    shared: Option<Arc<Mutex<BodyState<R>>>>,
}

impl<R: AsyncRead + Unpin> http_body::Body for Body<R> {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let Some(shared) = &self.shared else {
            return Poll::Ready(None);
        };
        let mut state = shared.lock().expect("body lock");
        loop {
            match state.decode() {
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(None) if state.framing.is_done() => return Poll::Ready(None),
                Ok(None) => {}
                Err(e) => {
                    state.reader = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            let Some(reader) = state.reader.as_mut() else {
                return Poll::Ready(Some(Err(Error::Closed)));
            };
            match ready!(reader.poll_fill(cx)) {
                Ok(0) => {
                    state.reader = None;
                    return Poll::Ready(Some(Err(Error::Closed)));
                }
                Ok(_) => {}
                Err(e) => {
                    state.reader = None;
                    return Poll::Ready(Some(Err(Error::Io(e))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.shared
            .as_ref()
            .is_none_or(|s| s.lock().expect("body lock").framing.is_done())
    }

    fn size_hint(&self) -> SizeHint {
        let Some(shared) = &self.shared else {
            return SizeHint::with_exact(0);
        };
        match shared.lock().expect("body lock").framing.remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// How a response body is delimited on the client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delimit {
    None,
    Length(u64),
    Chunked,
}

/// Writes the response; true when it went out whole and well framed, so the connection can
/// carry another request.
async fn write_response<W, B>(
    writer: &mut W,
    out: &mut Vec<u8>,
    response: Response<B>,
    head_request: bool,
    close: bool,
    trailers_wanted: bool,
) -> io::Result<bool>
where
    W: AsyncWrite + Unpin,
    B: http_body::Body<Data = Bytes, Error: std::fmt::Display> + Unpin,
{
    let (parts, mut body) = response.into_parts();
    let status = parts.status;
    let declared = parts.headers.get(header::CONTENT_LENGTH);
    let delimit = if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Delimit::None
    } else if let Some(n) = declared.and_then(|v| codec::parse_length(v.as_bytes())) {
        Delimit::Length(n)
    } else if let Some(n) = body.size_hint().exact() {
        Delimit::Length(n)
    } else {
        Delimit::Chunked
    };
    encode_head(out, status, &parts.headers, delimit, close);
    if delimit == Delimit::None {
        writer.write_all(out).await?;
        return Ok(true);
    }
    let mut sent = 0u64;
    let mut trailers = None;
    let mut complete = true;
    loop {
        // A frame that is ready goes out with the head; one that is not waits for the head
        // to be written first (a streamed answer shows its head at once).
        let frame = match poll_now(&mut body) {
            Some(frame) => frame,
            None => {
                writer.write_all(out).await?;
                out.clear();
                body.frame().await
            }
        };
        let data = match frame {
            None => break,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "the response body failed; closing the connection");
                complete = false;
                break;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    trailers = frame.into_trailers().ok();
                    continue;
                }
            },
        };
        if data.is_empty() {
            continue;
        }
        sent += data.len() as u64;
        if let Delimit::Length(n) = delimit
            && sent > n
        {
            tracing::debug!(
                declared = n,
                "the response body is longer than its Content-Length"
            );
            complete = false;
            break;
        }
        if delimit == Delimit::Chunked {
            codec::chunk_size_line(out, data.len());
        }
        if data.len() >= WRITE_GATHER {
            let mut both = Buf::chain(&out[..], data);
            writer.write_all_buf(&mut both).await?;
            out.clear();
        } else {
            out.extend_from_slice(&data);
        }
        if delimit == Delimit::Chunked {
            out.extend_from_slice(b"\r\n");
        }
        if out.len() >= WRITE_GATHER {
            writer.write_all(out).await?;
            out.clear();
        }
    }
    if complete {
        match delimit {
            Delimit::Length(n) if sent != n => {
                tracing::debug!(
                    declared = n,
                    sent,
                    "the response body ended before its Content-Length"
                );
                complete = false;
            }
            Delimit::Chunked => {
                out.extend_from_slice(b"0\r\n");
                if let (true, Some(trailers)) = (trailers_wanted, trailers) {
                    codec::encode_fields(out, &trailers);
                }
                out.extend_from_slice(b"\r\n");
            }
            _ => {}
        }
    }
    writer.write_all(out).await?;
    Ok(complete)
}

/// An answer of the server's own, before any request is handled, and the connection closes.
async fn refuse<W: AsyncWrite + Unpin>(
    writer: &mut W,
    status: StatusCode,
    msg: String,
) -> io::Result<()> {
    let mut out = Vec::new();
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    encode_head(
        &mut out,
        status,
        &headers,
        Delimit::Length(msg.len() as u64),
        true,
    );
    out.extend_from_slice(msg.as_bytes());
    writer.write_all(&out).await
}

/// A frame the body has ready now, without waiting.
#[allow(clippy::type_complexity)]
fn poll_now<B: http_body::Body + Unpin>(
    body: &mut B,
) -> Option<Option<Result<Frame<B::Data>, B::Error>>> {
    match Pin::new(body).poll_frame(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(frame) => Some(frame),
        Poll::Pending => None,
    }
}

/// The status line and headers as HTTP/1.1, with `Date`, the body's delimiter and
/// `Connection: close` added as needed. Names go out lower-case, as hyper's server writes them.
fn encode_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    delimit: Delimit,
    close: bool,
) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let [date, length] =
        codec::encode_fields_seeing(out, headers, [&header::DATE, &header::CONTENT_LENGTH]);
    if !date {
        out.extend_from_slice(b"date: ");
        codec::http_date(out);
        out.extend_from_slice(b"\r\n");
    }
    match delimit {
        Delimit::Length(n) if !length => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(codec::itoa(n, &mut [0; 20]));
            out.extend_from_slice(b"\r\n");
        }
        Delimit::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Closes a connection whose client may still be sending a body nobody read: the write side
/// first, then reading and discarding until the client closes too or [`LINGER`] passes.
async fn linger<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(mut writer: W, mut left: Reader<R>) {
    let _ = writer.shutdown().await;
    // The read buffer, not a stack array: this future is part of every connection's task.
    let discard = async {
        loop {
            left.buf.clear();
            left.buf.reserve(READ_SIZE);
            if !matches!(left.half.read_buf(&mut left.buf).await, Ok(n) if n > 0) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, discard).await;
}

/// A client connection handed over: the bytes already read come first.
#[derive(Debug)]
pub struct Rewind<T> {
    read: Bytes,
    stream: T,
}

impl<T: Transport> Rewind<T> {
    fn new(reader: Reader<T::Read>, writer: T::Write) -> Self {
        Rewind {
            read: reader.buf.freeze(),
            stream: T::unsplit(reader.half, writer),
        }
    }
}

impl<T> Rewind<T> {
    /// Whether the connection was handed over for HTTP/2: it opened with the connection
    /// preface (prior knowledge), which is then still to be read.
    pub fn is_http2(&self) -> bool {
        self.read.starts_with(H2_PREFACE)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            self.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 64 * 1024;

    fn parse(text: &str) -> (Parsed, BytesMut) {
        let mut buf = BytesMut::from(text.as_bytes());
        let parsed = parse_head(&mut buf, &mut Vec::new(), MAX, 0, false);
        (parsed, buf)
    }

    fn served(text: &str) -> (Head, BytesMut) {
        match parse(text) {
            (Parsed::Request(head), rest) => (head, rest),
            (other, _) => panic!("not served here ({other:?}): {text:?}"),
        }
    }

    #[test]
    fn plain_heads_are_served_and_leave_what_follows() {
        let (head, rest) = served(
            "GET /a/b?q=1 HTTP/1.1\r\nHost: acme.example\r\nX-Tenant-Id: acme\r\nX-Many: 1\r\nx-many: 2\r\n\r\nGET /next",
        );
        let r = &head.request;
        assert_eq!(r.method(), Method::GET);
        assert_eq!(r.uri(), "/a/b?q=1");
        assert_eq!(r.headers()["host"], "acme.example");
        assert_eq!(r.headers()["x-tenant-id"], "acme");
        let many: Vec<_> = r.headers().get_all("x-many").iter().collect();
        assert_eq!(many, ["1", "2"], "repeated headers keep their order");
        assert!(head.framing.is_none() && !head.close && !head.head_request);
        assert_eq!(
            &rest[..],
            b"GET /next",
            "a pipelined request stays in the buffer"
        );

        let (head, _) = served(
            "POST / HTTP/1.1\r\nContent-Length: 12\r\nConnection: Keep-Alive, Close\r\n\r\n",
        );
        assert!(matches!(head.framing, Some(Decoder::Length(12))));
        assert!(head.close);
        let (head, _) =
            served("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\nTE: trailers\r\n\r\n");
        assert!(matches!(head.framing, Some(Decoder::Chunked(_))));
        assert!(head.trailers);
        let (head, _) = served("HEAD / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert!(head.head_request && head.framing.is_none());
    }

    #[test]
    fn heads_outside_the_common_case_go_to_hyper_untouched() {
        for text in [
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET / HTTP/1.0\r\n\r\n",
            "GET http://elsewhere/x HTTP/1.1\r\nHost: a\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
            "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        ] {
            let (parsed, rest) = parse(text);
            assert!(matches!(parsed, Parsed::Handoff), "{text:?} was {parsed:?}");
            assert_eq!(&rest[..], text.as_bytes(), "the bytes go to hyper as read");
        }
        assert!(matches!(parse("PRI * HTTP/2.0\r\n").0, Parsed::Partial));
    }

    #[test]
    fn heads_that_could_read_two_ways_are_refused_here_whoever_would_serve_them() {
        for (text, status) in [
            (
                "GET / HTTP/1.1\r\nHost: a\r\nDummy: x\nContent-Length: 23\r\n\r\n",
                400,
            ),
            ("GET / HTTP/1.1\nHost: a\n\n", 400),
            ("GET / HTTP/1.0\r\nHost: a\nX: y\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\n\rX\r\n\r\n", 400),
            (
                "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                400,
            ),
            ("POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", 400),
            (
                "POST / HTTP/1.1\r\nContent-Length: 18446744073709551613\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 9223372036854775808\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                501,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: deflate, chunked\r\n\r\n",
                501,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: identity, chunked\r\n\r\n",
                501,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (
                "GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            ("GET / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nX-Folded: a\r\n b\r\n\r\n", 400),
            ("GET /\x01 HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/2.0\r\n\r\n", 400),
            ("GARBAGE\r\n\r\n", 400),
        ] {
            match parse(text).0 {
                Parsed::Refuse(got, _) => assert_eq!(got.as_u16(), status, "{text:?}"),
                other => panic!("{text:?} was {other:?}"),
            }
        }
    }

    #[test]
    fn a_repeated_length_of_one_value_is_served_as_one() {
        let (head, _) = served("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n");
        assert!(matches!(head.framing, Some(Decoder::Length(5))));
        let lengths: Vec<_> = head
            .request
            .headers()
            .get_all("content-length")
            .iter()
            .collect();
        assert_eq!(lengths, ["5"]);
    }

    #[test]
    fn underscored_names_are_dropped_when_asked_and_nothing_else_is() {
        let text = "POST /a_b HTTP/1.1\r\nHost: a\r\nContent_Length: 9\r\nX_Tenant_Id: evil\r\n\
                    X-Tenant-Id: acme\r\nX-Note: a_b\r\nContent-Length: 2\r\n\r\nok";
        let dropped = |drop| {
            let mut buf = BytesMut::from(text);
            let Parsed::Request(head) = parse_head(&mut buf, &mut Vec::new(), 4096, 0, drop) else {
                panic!("{text:?} is served");
            };
            let h = head.request.headers();
            let names: Vec<_> = h.keys().map(|n| n.as_str().to_owned()).collect();
            assert!(
                matches!(head.framing, Some(Decoder::Length(2))),
                "framed by Content-Length"
            );
            names
        };
        assert_eq!(
            dropped(true),
            ["host", "x-tenant-id", "x-note", "content-length"],
            "an underscore in the target or a value keeps the field"
        );
        assert_eq!(dropped(false).len(), 6, "kept when not asked");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(crate::codec::tests::proptest_cases()))]

        /// Whatever the bytes, the head parser never panics; a head it serves was taken from
        /// the front of the input and nothing else; it waits for more only while the input
        /// is under the limit; and what it hands over is left as read.
        #[test]
        fn the_head_parser_takes_any_bytes(
            input in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            max in 16usize..512,
        ) {
            let mut buf = BytesMut::from(&input[..]);
            match parse_head(&mut buf, &mut Vec::new(), max, 0, false) {
                Parsed::Request(_) => {
                    proptest::prop_assert!(input.len() - buf.len() <= max);
                    proptest::prop_assert!(input.ends_with(&buf));
                }
                Parsed::Partial => proptest::prop_assert!(input.len() < max),
                Parsed::Handoff | Parsed::TooLarge | Parsed::Refuse(..) => {
                    proptest::prop_assert_eq!(&buf[..], &input[..]);
                }
            }
        }

        /// Heads made of the pieces real requests are made of, well and badly formed: a
        /// head served here never has a line ending in a lone LF and is framed one way.
        #[test]
        fn a_served_head_is_framed_one_way(
            head in "(GET|POST|PUT) /[a-z]{0,4} HTTP/1\\.[01]\r?\n((Host|Content-Length|Transfer-Encoding|Connection|X-A) ?: ?(a|5|chunked|close|gzip, chunked| 5, 5)\r?\n){0,5}\r?\n",
        ) {
            let mut buf = BytesMut::from(head.as_bytes());
            if let Parsed::Request(served) = parse_head(&mut buf, &mut Vec::new(), 4096, 0, false) {
                let text = &head[..head.len() - buf.len()];
                proptest::prop_assert!(!text.replace("\r\n", "").contains('\n'), "{:?}", text);
                let h = served.request.headers();
                let te = h.get_all("transfer-encoding").iter().count();
                let cl = h.get_all("content-length").iter().count();
                proptest::prop_assert!(te + cl <= 1, "{:?}", text);
                proptest::prop_assert_eq!(te == 1, matches!(served.framing, Some(Decoder::Chunked(_))));
            }
        }
    }

    #[test]
    fn a_head_is_partial_until_complete_and_refused_when_too_large() {
        assert!(matches!(
            parse("GET / HTTP/1.1\r\nHost: a\r\n").0,
            Parsed::Partial
        ));
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nX-Big: "[..]);
        buf.extend_from_slice(&[b'a'; 200]);
        assert!(matches!(
            parse_head(&mut buf.clone(), &mut Vec::new(), 100, 0, false),
            Parsed::TooLarge
        ));
        assert!(matches!(
            parse_head(&mut buf, &mut Vec::new(), 1000, 0, false),
            Parsed::Partial
        ));
        buf.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(
            parse_head(&mut buf.clone(), &mut Vec::new(), 100, 0, false),
            Parsed::TooLarge
        ));
        assert!(matches!(
            parse_head(&mut buf, &mut Vec::new(), 1000, 0, false),
            Parsed::Request(_)
        ));
    }

    fn body_state(framing: Decoder, bytes: &[u8]) -> BodyState<tokio::net::tcp::OwnedReadHalf> {
        // A reader needs a socket half; the decoding itself only looks at the buffer.
        let std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(std.local_addr().unwrap()).unwrap();
        stream.set_nonblocking(true).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let (half, _) = TcpStream::from_std(stream).unwrap().into_split();
        BodyState {
            reader: Some(Reader {
                half,
                buf: BytesMut::from(bytes),
            }),
            framing,
        }
    }

    #[test]
    fn a_buffered_body_is_read_to_its_end_and_the_next_request_kept() {
        let mut state = body_state(Decoder::Length(5), b"helloGET /next");
        let frame = state.decode().unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "hello");
        assert!(matches!(state.framing, Decoder::Done));
        let reader = state.take_reader_if_done().unwrap();
        assert_eq!(&reader.buf[..], b"GET /next");

        // Never asked for, a body already in the buffer is skipped and the connection kept.
        let mut state = body_state(
            Decoder::Chunked(Chunked::default()),
            b"3\r\nabc\r\n0\r\n\r\nGET /next",
        );
        let reader = state.take_reader_if_done().unwrap();
        assert_eq!(&reader.buf[..], b"GET /next");

        // A body still on the wire keeps the reader with the body: the connection will close.
        let mut state = body_state(Decoder::Length(10), b"hello");
        assert!(state.take_reader_if_done().is_none());
        let mut state = body_state(Decoder::Chunked(Chunked::default()), b"zz\r\n");
        assert!(matches!(state.decode(), Err(Error::Malformed(_))));
    }

    #[test]
    fn response_heads_carry_date_length_and_close_as_needed() {
        let head = |status: u16, headers: &HeaderMap, delimit: Delimit, close: bool| {
            let mut out = Vec::new();
            let status = StatusCode::from_u16(status).unwrap();
            encode_head(&mut out, status, headers, delimit, close);
            String::from_utf8(out).unwrap()
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-upstream", HeaderValue::from_static("legacy"));
        let text = head(200, &headers, Delimit::Length(12), false);
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\nx-upstream: legacy\r\ndate: "),
            "{text}"
        );
        assert!(
            text.ends_with(" GMT\r\ncontent-length: 12\r\n\r\n"),
            "{text}"
        );

        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        let text = head(200, &headers, Delimit::Length(12), true);
        assert_eq!(text.matches("content-length").count(), 1, "{text}");
        assert!(text.ends_with("connection: close\r\n\r\n"), "{text}");

        // The upstream's own Date goes out, and no second one.
        let upstream_date = "Tue, 01 Dec 2026 10:00:00 GMT";
        headers.insert(header::DATE, HeaderValue::from_static(upstream_date));
        let text = head(200, &headers, Delimit::Length(12), false);
        assert_eq!(text.matches("date: ").count(), 1, "{text}");
        assert!(
            text.contains(&format!("date: {upstream_date}\r\n")),
            "{text}"
        );
        assert_eq!(text.matches("content-length").count(), 1, "{text}");

        let text = head(299, &HeaderMap::new(), Delimit::Chunked, false);
        assert!(text.starts_with("HTTP/1.1 299 \r\n"), "{text}");
        assert!(
            text.ends_with("transfer-encoding: chunked\r\n\r\n"),
            "{text}"
        );
    }
}
