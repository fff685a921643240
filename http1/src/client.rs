//! HTTP/1.1 to the upstream, written for the proxy's one job: send the request head and
//! body on a kept-alive connection, read the response head, and stream the response body back
//! from the socket inside the client connection's own task.
//!
//! The general-purpose client runs each upstream connection as a task of its own and hands
//! every request to it over a channel; on one core that doubles the task switches per
//! request. Here the exchange runs in the request's task and the response body reads the
//! socket when hyper's server polls it. Each endpoint keeps its idle connections in a
//! [`Pool`], most recently used first. A connection goes back to the pool only when the
//! request was written whole and the response read to its exact end, with nothing after it.
//!
//! A request body is written while the response head is awaited, and, when the head comes
//! first (an upstream that echoes or streams as it reads), while the response body is read:
//! both directions move at once. Once the response is complete, what is left of the request
//! body is not sent, and the connection closes.
//!
//! Responses are framed as RFC 9112 section 6.3 says: no body for HEAD, 1xx, 204 and 304;
//! `Transfer-Encoding` ending in `chunked` wins over `Content-Length` (and the connection
//! closes after it); conflicting `Content-Length` values are refused; with neither, the body
//! runs to the connection's close. Interim 1xx responses (100 Continue) are skipped.
//! Upgrades and HTTP/2 are left to a general-purpose client.

use std::collections::VecDeque;
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::Authority;
use http::{Method, Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::Error;
use crate::codec::{Chunked, Decoder, chunk_size_line, encode_fields, parse_length};

/// The largest response head read from an upstream, and its most header lines.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
pub const MAX_HEADERS: usize = 100;
/// How much room a read asks for.
const READ_SIZE: usize = 16 * 1024;

/// A request body the client can send: any body of bytes whose error says what failed.
pub trait SendBody: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static {}

impl<B> SendBody for B where B: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static
{}

/// The idle keep-alive connections to one endpoint.
#[derive(Debug)]
pub struct Pool {
    authority: Authority,
    idle: Mutex<VecDeque<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
    /// Connections opened, for the target's metric.
    opened: Arc<AtomicU64>,
}

#[derive(Debug)]
struct Idle {
    conn: Conn,
    since: Instant,
}

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet used (a response never leaves any behind in a pooled one).
    buf: BytesMut,
    /// The request head being sent, its allocation kept from one request to the next.
    out: Vec<u8>,
}

impl Pool {
    pub fn new(
        authority: Authority,
        max_idle: usize,
        idle_timeout: Duration,
        connect_timeout: Duration,
        opened: Arc<AtomicU64>,
    ) -> Self {
        Pool {
            authority,
            idle: Mutex::new(VecDeque::new()),
            max_idle,
            idle_timeout,
            connect_timeout,
            opened,
        }
    }

    /// Idle connections held right now.
    pub fn idle(&self) -> usize {
        self.idle.lock().expect("pool lock").len()
    }

    /// Sends one request and returns the response with its body still on the wire. A request
    /// with no body whose method is idempotent is sent once more, on a new connection, when a
    /// reused connection turns out to have been closed by the upstream before any response
    /// byte: the usual race of an idle keep-alive connection, not a failure of the endpoint.
    pub async fn send<B: SendBody>(
        self: &Arc<Self>,
        parts: &Parts,
        body: B,
    ) -> Result<Response<Body>, Error> {
        let has_body = !http_body::Body::is_end_stream(&body);
        let chunked = has_body && !parts.headers.contains_key(header::CONTENT_LENGTH);
        let no_body = parts.method == Method::HEAD;
        let (mut conn, reused) = self.conn().await?;
        encode_head(&mut conn.out, parts, chunked);
        if has_body {
            return self
                .exchange(conn, Some(Upload::new(body, chunked)), no_body)
                .await
                .map_err(|(e, _)| e);
        }
        match self.exchange(conn, None, no_body).await {
            Err((_, true)) if reused && parts.method.is_idempotent() => {}
            result => return result.map_err(|(e, _)| e),
        }
        // Boxed: the rare second try would otherwise add its size to every request's future.
        Box::pin(async {
            let mut conn = self.connect().await?;
            encode_head(&mut conn.out, parts, chunked);
            self.exchange(conn, None, no_body).await.map_err(|(e, _)| e)
        })
        .await
    }

    /// A pooled connection that is still open (`true`), or a new one.
    async fn conn(&self) -> Result<(Conn, bool), Error> {
        match self.checkout() {
            Some(conn) => Ok((conn, true)),
            // Boxed, as is the body's exchange below: a future is as large as its largest
            // await, and this one is moved through every layer of each request's future.
            None => Ok((Box::pin(self.connect()).await?, false)),
        }
    }

    fn checkout(&self) -> Option<Conn> {
        let now = Instant::now();
        let mut idle = self.idle.lock().expect("pool lock");
        while let Some(Idle { mut conn, since }) = idle.pop_back() {
            if now.duration_since(since) < self.idle_timeout && conn.still_open() {
                return Some(conn);
            }
        }
        None
    }

    /// Closes the idle connections past the idle timeout or closed by the upstream. Run from
    /// a timer, so that a quiet router does not sit on sockets the upstream has given up on.
    pub fn reap(&self) {
        let now = Instant::now();
        let mut idle = self.idle.lock().expect("pool lock");
        idle.retain_mut(|i| now.duration_since(i.since) < self.idle_timeout && i.conn.still_open());
    }

    fn checkin(&self, conn: Conn) {
        let now = Instant::now();
        let mut idle = self.idle.lock().expect("pool lock");
        // The oldest are at the front: drop those past the idle timeout, and one more when full.
        while idle
            .front()
            .is_some_and(|i| now.duration_since(i.since) >= self.idle_timeout)
        {
            idle.pop_front();
        }
        if self.max_idle == 0 {
            return;
        }
        if idle.len() >= self.max_idle {
            idle.pop_front();
        }
        idle.push_back(Idle { conn, since: now });
    }

    async fn connect(&self) -> Result<Conn, Error> {
        let timeout = self.connect_timeout;
        let connecting = async {
            let host = self.authority.host();
            let host = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            let port = self.authority.port_u16().unwrap_or(80);
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
            let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no addresses");
            for addr in addrs {
                match TcpStream::connect(addr).await {
                    Ok(stream) => return Ok(stream),
                    Err(e) => last = e,
                }
            }
            Err(last)
        };
        let stream = match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => {
                return Err(Error::Connect {
                    authority: self.authority.clone(),
                    source,
                });
            }
            Err(_) => {
                return Err(Error::ConnectTimeout {
                    authority: self.authority.clone(),
                    timeout,
                });
            }
        };
        stream.set_nodelay(true).map_err(Error::Io)?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(Conn {
            stream,
            buf: BytesMut::with_capacity(READ_SIZE),
            out: Vec::with_capacity(1024),
        })
    }

    /// Writes the request and reads the response head. On error, says whether nothing at all
    /// came back (the mark of a connection the upstream had already closed).
    async fn exchange(
        self: &Arc<Self>,
        mut conn: Conn,
        upload: Option<Box<Upload>>,
        no_body: bool,
    ) -> Result<Response<Body>, (Error, bool)> {
        let silent = |e: Error, conn: &Conn| {
            let silent = conn.buf.is_empty() && matches!(e, Error::Closed | Error::Io(_));
            (e, silent)
        };
        let (resp, sent) = match upload {
            None => {
                if let Err(e) = conn.stream.write_all(&conn.out).await {
                    return Err((Error::Io(e), true));
                }
                let Conn { stream, buf, .. } = &mut conn;
                match std::future::poll_fn(|cx| poll_head(stream, buf, cx)).await {
                    Ok(parsed) => (parsed, Sent::Whole),
                    Err(e) => return Err(silent(e, &conn)),
                }
            }
            Some(upload) => match Box::pin(send_with_body(&mut conn, upload)).await {
                Ok(done) => done,
                Err(e) => return Err(silent(e, &conn)),
            },
        };
        let framing = framing(&resp, no_body).map_err(|e| (e, false))?;
        let (reusable, upload) = match sent {
            Sent::Whole => (framing.reusable, None),
            Sent::Going(upload) => (framing.reusable, Some(upload)),
            Sent::Cut => (false, None),
        };
        let (parts, ()) = resp.into_parts();
        let mut body = Body {
            conn: Some(conn),
            upload,
            pool: self.clone(),
            state: framing.state,
            reusable,
        };
        body.finish_if_done();
        let mut resp = Response::from_parts(parts, body);
        if framing.drop_length {
            resp.headers_mut().remove(header::CONTENT_LENGTH);
        }
        if let Some(n) = framing.one_length {
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        Ok(resp)
    }
}

impl Conn {
    /// True when the upstream has neither closed this idle connection nor sent anything on it.
    fn still_open(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readable: the end of the stream, stray bytes, or readiness left from the last
            // response. Only a read that would block says the connection is still good.
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Reads more into the buffer; `Ok(0)` is the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_SIZE / 4 {
            self.buf.reserve(READ_SIZE);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.buf)
    }
}

/// The request target sent upstream: the path and query only, never a scheme or host from
/// the client (an absolute-form `http://elsewhere/x` is sent as `/x`; `*` as `/`).
pub fn request_target(uri: &http::Uri) -> std::borrow::Cow<'_, str> {
    use std::borrow::Cow;
    match uri.path_and_query().map(|pq| pq.as_str()) {
        Some(pq) if pq.starts_with('/') => Cow::Borrowed(pq),
        // `http://h.example?x=1`: the path is empty, the query is kept.
        Some(pq) if pq.starts_with('?') => Cow::Owned(format!("/{pq}")),
        _ => Cow::Borrowed("/"),
    }
}

/// The request line and headers, as HTTP/1.1, into `out`. The headers arrive with hop-by-hop
/// ones already removed and `Host` set; a body of unknown length is sent chunked.
fn encode_head(out: &mut Vec<u8>, parts: &Parts, chunked: bool) {
    let target = request_target(&parts.uri);
    let mut size = parts.method.as_str().len() + target.len() + 40;
    for (name, value) in &parts.headers {
        size += name.as_str().len() + value.len() + 4;
    }
    out.clear();
    out.reserve(size);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    encode_fields(out, &parts.headers);
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// How far the request got when its response head arrived.
enum Sent {
    /// All of it.
    Whole,
    /// The head, and the body is still going: the upstream answered as it read (an echo, a
    /// stream). The rest is written alongside the response body.
    Going(Box<Upload>),
    /// Not all of it, and no more will be: the connection cannot carry another request.
    Cut,
}

/// Writes the head and the body while watching for the response: an upstream may answer
/// (a 413, a 401, an echo) before it has read the whole body.
async fn send_with_body(
    conn: &mut Conn,
    mut upload: Box<Upload>,
) -> Result<(Response<()>, Sent), Error> {
    let Conn { stream, buf, out } = conn;
    let mut head_written = 0;
    let mut write_error = None;
    let mut sent = false;
    let head = std::future::poll_fn(|cx| {
        // Reading first: a head that is there ends the wait, however the writing stands.
        if let Poll::Ready(head) = poll_head(stream, buf, cx) {
            return Poll::Ready(match (head, write_error.is_some()) {
                // Nothing readable came back: the failed write is the better account.
                (Err(Error::Closed | Error::Io(_)), true) => Err(write_error.take().unwrap()),
                (head, _) => head,
            });
        }
        if sent || write_error.is_some() {
            return Poll::Pending;
        }
        let written = match poll_write_from(stream, out, &mut head_written, cx) {
            Poll::Ready(Ok(())) => upload.poll_send(stream, cx),
            Poll::Ready(Err(e)) => Poll::Ready(Err(Error::Io(e))),
            Poll::Pending => Poll::Pending,
        };
        match written {
            Poll::Ready(Ok(())) => sent = true,
            Poll::Ready(Err(e @ Error::Body(_))) => return Poll::Ready(Err(e)),
            Poll::Ready(Err(e)) => write_error = Some(e),
            Poll::Pending => {}
        }
        Poll::Pending
    })
    .await?;
    let sent = if sent {
        Sent::Whole
    } else if write_error.is_none() && head_written == out.len() {
        Sent::Going(upload)
    } else {
        Sent::Cut
    };
    Ok((head, sent))
}

/// Writes `out[*written..]`, counting what went.
fn poll_write_from(
    stream: &mut TcpStream,
    out: &[u8],
    written: &mut usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    use tokio::io::AsyncWrite;
    while *written < out.len() {
        match ready!(Pin::new(&mut *stream).poll_write(cx, &out[*written..]))? {
            0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            n => *written += n,
        }
    }
    Poll::Ready(Ok(()))
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body on its way to the upstream, written as the socket takes it. It is polled
/// beside the read of the response head, and, when the head comes first, beside the read of
/// the response body.
struct Upload {
    body: http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>,
    chunked: bool,
    /// Taken from the body and not written yet: a chunk's size line, its data, its end.
    out: VecDeque<Bytes>,
    /// The body has ended and its end is in `out`.
    ended: bool,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("chunked", &self.chunked)
            .field("unwritten", &self.out.iter().map(Bytes::len).sum::<usize>())
            .field("ended", &self.ended)
            .finish()
    }
}

impl Upload {
    fn new<B: SendBody>(body: B, chunked: bool) -> Box<Upload> {
        Box::new(Upload {
            body: body.map_err(Into::into).boxed_unsync(),
            chunked,
            out: VecDeque::with_capacity(4),
            ended: false,
        })
    }

    /// Ready when the whole body and its end have been written.
    fn poll_send(
        &mut self,
        stream: &mut TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>> {
        loop {
            ready!(self.poll_write_out(stream, cx)).map_err(Error::Io)?;
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            match ready!(http_body::Body::poll_frame(Pin::new(&mut self.body), cx)) {
                Some(Ok(frame)) => {
                    // Trailers are not sent on: the head announced none.
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        if self.chunked {
                            let mut line = Vec::with_capacity(24);
                            chunk_size_line(&mut line, data.len());
                            self.out.push_back(line.into());
                            self.out.push_back(data);
                            self.out.push_back(Bytes::from_static(b"\r\n"));
                        } else {
                            self.out.push_back(data);
                        }
                    }
                    // A body that knows it is done says so now, not on the next poll.
                    if http_body::Body::is_end_stream(&self.body) {
                        self.end();
                    }
                }
                Some(Err(e)) => return Poll::Ready(Err(Error::Body(e))),
                None => self.end(),
            }
        }
    }

    fn end(&mut self) {
        if self.chunked {
            self.out.push_back(Bytes::from_static(b"0\r\n\r\n"));
        }
        self.ended = true;
    }

    /// Writes what was taken from the body, in one vectored write where the socket takes it.
    fn poll_write_out(
        &mut self,
        stream: &mut TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        use tokio::io::AsyncWrite;
        while !self.out.is_empty() {
            let mut slices = [io::IoSlice::new(&[]); 4];
            let n = self
                .out
                .iter()
                .zip(&mut slices)
                .map(|(bytes, slice)| *slice = io::IoSlice::new(bytes))
                .count();
            let mut written = ready!(Pin::new(&mut *stream).poll_write_vectored(cx, &slices[..n]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            while let Some(front) = self.out.front_mut() {
                if front.len() > written {
                    front.advance(written);
                    break;
                }
                written -= front.len();
                self.out.pop_front();
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// Reads until a final response head is complete and parses it, skipping interim 1xx ones.
fn poll_head(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<Result<Response<()>, Error>> {
    loop {
        if !buf.is_empty() {
            match parse_head(buf) {
                Ok(Some(resp)) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
                    return Poll::Ready(Err(Error::malformed(
                        "101 Switching Protocols to a request that asked for no upgrade",
                    )));
                }
                Ok(Some(resp)) if resp.status().is_informational() => continue,
                Ok(Some(resp)) => return Poll::Ready(Ok(resp)),
                Ok(None) if buf.len() >= MAX_HEAD_BYTES => {
                    return Poll::Ready(Err(Error::malformed(format!(
                        "the response head is larger than {MAX_HEAD_BYTES} bytes"
                    ))));
                }
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        if buf.capacity() - buf.len() < READ_SIZE / 4 {
            buf.reserve(READ_SIZE);
        }
        match ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut *stream),
            cx,
            buf
        )) {
            Ok(0) => return Poll::Ready(Err(Error::Closed)),
            Ok(_) => {}
            Err(e) => return Poll::Ready(Err(Error::Io(e))),
        }
    }
}

/// Parses one response head from the front of `buf` and removes it; `None` when the head is
/// not complete yet. Header values share the head's bytes rather than being copied.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Response<()>>, Error> {
    let mut slots = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buf,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD_BYTES => len,
        Ok(httparse::Status::Complete(_)) => {
            return Err(Error::malformed(format!(
                "the response head is larger than {MAX_HEAD_BYTES} bytes"
            )));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Error::malformed(format!(
                "the response has more than {MAX_HEADERS} headers"
            )));
        }
        Err(e) => return Err(Error::malformed(format!("bad response head ({e})"))),
    };
    let code = parsed.code.expect("a complete head has a status");
    let status = StatusCode::from_u16(code)
        .map_err(|_| Error::malformed(format!("bad status code {code}")))?;
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let base = buf.as_ptr() as usize;
    let spans: Vec<(HeaderName, usize, usize)> = parsed
        .headers
        .iter()
        .map(|h| {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| Error::malformed(format!("bad header name {:?}", h.name)))?;
            let start = h.value.as_ptr() as usize - base;
            Ok((name, start, start + h.value.len()))
        })
        .collect::<Result<_, Error>>()?;
    let head = buf.split_to(len).freeze();
    // Room for the one header the proxy adds (`x-request-id`) without growing the map.
    let mut map = HeaderMap::with_capacity(spans.len() + 1);
    for (name, start, end) in spans {
        let value = HeaderValue::from_maybe_shared(head.slice(start..end))
            .map_err(|_| Error::malformed(format!("bad value for header {name}")))?;
        map.append(name, value);
    }
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    *resp.version_mut() = version;
    *resp.headers_mut() = map;
    Ok(Some(resp))
}

/// How a response's body is delimited, and whether the connection can carry another request.
#[derive(Debug, PartialEq, Eq)]
struct Framing {
    state: Decoder,
    reusable: bool,
    /// `Transfer-Encoding` and `Content-Length` both came: the length is not passed on.
    drop_length: bool,
    /// `Content-Length` came more than once with this one value: it is passed on once.
    one_length: Option<u64>,
}

fn framing(resp: &Response<()>, head_request: bool) -> Result<Framing, Error> {
    let headers = resp.headers();
    let status = resp.status();
    // One pass over the names says which framing fields came, where a lookup each would hash
    // every name again: most responses carry a `Content-Length` and neither of the others.
    let (mut connection, mut transfer_encoding, mut content_length) = (false, false, false);
    for name in headers.keys() {
        connection |= name == header::CONNECTION;
        transfer_encoding |= name == header::TRANSFER_ENCODING;
        content_length |= name == header::CONTENT_LENGTH;
    }
    let keep_alive = resp.version() == Version::HTTP_11
        && !(connection
            && headers
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case("close")));
    if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing {
            state: Decoder::Length(0),
            reusable: keep_alive,
            drop_length: false,
            one_length: None,
        });
    }
    if transfer_encoding {
        let last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .rfind(|t| !t.is_empty());
        let chunked = last.is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
        let with_length = content_length;
        return Ok(Framing {
            state: if chunked {
                Decoder::Chunked(Chunked::default())
            } else {
                Decoder::UntilClose
            },
            reusable: keep_alive && chunked && !with_length,
            drop_length: with_length,
            one_length: None,
        });
    }
    let mut length = None;
    let mut lengths = 0;
    let values = content_length.then(|| headers.get_all(header::CONTENT_LENGTH));
    for value in values.into_iter().flatten() {
        for part in value.as_bytes().split(|&b| b == b',') {
            let n = parse_length(part).ok_or_else(|| Error::malformed("bad Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::malformed("conflicting Content-Length values"));
            }
            length = Some(n);
            lengths += 1;
        }
    }
    Ok(match length {
        Some(n) => Framing {
            state: Decoder::Length(n),
            reusable: keep_alive,
            drop_length: false,
            one_length: (lengths > 1).then_some(n),
        },
        None => Framing {
            state: Decoder::UntilClose,
            reusable: false,
            drop_length: false,
            one_length: None,
        },
    })
}

/// A response body read straight from the upstream connection, with the rest of the request
/// body written beside it when the upstream answered before reading all of that. When the
/// response has been read to its end, and the request written whole, the connection goes back
/// to its pool; otherwise it closes.
#[derive(Debug)]
pub struct Body {
    conn: Option<Conn>,
    /// The request body still being sent.
    upload: Option<Box<Upload>>,
    pool: Arc<Pool>,
    state: Decoder,
    reusable: bool,
}

impl Body {
    fn finish_if_done(&mut self) {
        if self.state.is_done() {
            // A request still being sent when the answer is complete is not sent on.
            let upload = self.upload.take();
            if let Some(conn) = self.conn.take()
                && self.reusable
                && upload.is_none()
                && conn.buf.is_empty()
            {
                self.pool.checkin(conn);
            }
        }
    }

    /// Writes what the socket takes of the request body still being sent. An error of the
    /// body being sent ends the exchange; a failed write only ends the sending, since the
    /// upstream may have stopped reading and still answer whole.
    fn poll_upload(&mut self, cx: &mut Context<'_>) -> Result<(), Error> {
        let (Some(upload), Some(conn)) = (self.upload.as_mut(), self.conn.as_mut()) else {
            return Ok(());
        };
        match upload.poll_send(&mut conn.stream, cx) {
            Poll::Pending => return Ok(()),
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e @ Error::Body(_))) => {
                self.conn = None;
                self.upload = None;
                return Err(e);
            }
            Poll::Ready(Err(_)) => self.reusable = false,
        }
        self.upload = None;
        Ok(())
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        if let Err(e) = this.poll_upload(cx) {
            return Poll::Ready(Some(Err(e)));
        }
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.state.decode(&mut conn.buf) {
                Ok(Some(frame)) => {
                    this.finish_if_done();
                    return Poll::Ready(Some(Ok(frame)));
                }
                Ok(None) if this.state.is_done() => {
                    this.finish_if_done();
                    return Poll::Ready(None);
                }
                Ok(None) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) => {
                    this.conn = None;
                    return Poll::Ready(this.state.at_eof().err().map(Err));
                }
                Ok(_) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(Error::Io(e))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || self.state.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match (self.state.remaining(), &self.conn) {
            (_, None) => SizeHint::with_exact(0),
            (Some(n), _) => SizeHint::with_exact(n),
            (None, _) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn head(text: &str) -> Response<()> {
        parse_head(&mut BytesMut::from(text)).unwrap().unwrap()
    }

    #[test]
    fn responses_are_framed_as_rfc_9112_says() {
        let f = |text: &str, head_request: bool| framing(&head(text), head_request);
        let ok = f("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", false).unwrap();
        assert_eq!((ok.state, ok.reusable), (Decoder::Length(5), true));
        let twice = f("HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n", false).unwrap();
        assert_eq!(
            (twice.state, twice.one_length),
            (Decoder::Length(5), Some(5))
        );
        // A head over the limit is refused even when it came whole in one read.
        let mut big = String::from("HTTP/1.1 200 OK\r\n");
        while big.len() <= MAX_HEAD_BYTES {
            big.push_str(&format!("x-filler: {}\r\n", "a".repeat(1000)));
        }
        big.push_str("\r\n");
        let err = parse_head(&mut BytesMut::from(big.as_str())).unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
        let head_req = f("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", true).unwrap();
        assert_eq!(head_req.state, Decoder::Length(0));
        for status in ["204 No Content", "304 Not Modified"] {
            let text = format!("HTTP/1.1 {status}\r\ncontent-length: 5\r\n\r\n");
            assert_eq!(
                f(&text, false).unwrap().state,
                Decoder::Length(0),
                "{status}"
            );
        }
        let chunked = f(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(matches!(chunked.state, Decoder::Chunked(_)) && chunked.reusable);
        // Both: the coding wins, the length is not passed on, the connection is not reused.
        let both = f(
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(matches!(both.state, Decoder::Chunked(_)));
        assert!(both.drop_length && !both.reusable);
        let gzip_only = f("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n", false).unwrap();
        assert_eq!(
            (gzip_only.state, gzip_only.reusable),
            (Decoder::UntilClose, false)
        );
        let same = f("HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n", false).unwrap();
        assert_eq!(same.state, Decoder::Length(5));
        for bad in ["5, 6", "-1", "5x", ""] {
            let text = format!("HTTP/1.1 200 OK\r\ncontent-length: {bad}\r\n\r\n");
            assert!(f(&text, false).is_err(), "{bad:?}");
        }
        let unframed = f("HTTP/1.1 200 OK\r\n\r\n", false).unwrap();
        assert_eq!(
            (unframed.state, unframed.reusable),
            (Decoder::UntilClose, false)
        );
        let closing = f(
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n",
            false,
        );
        assert!(!closing.unwrap().reusable);
        let old = f("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", false).unwrap();
        assert!(!old.reusable);
    }

    #[test]
    fn the_request_target_never_carries_a_host() {
        for (incoming, sent) in [
            ("/x?y=1", "/x?y=1"),
            ("http://evil.example.com/x?y=1", "/x?y=1"),
            ("http://127.0.0.1:22", "/"),
            ("http://h.example?x=1", "/?x=1"),
            ("*", "/"),
        ] {
            let uri: http::Uri = incoming.parse().unwrap();
            assert_eq!(request_target(&uri), sent, "{incoming}");
        }
        let mut parts = get(Method::OPTIONS);
        parts.uri = "http://evil.example.com/x".parse().unwrap();
        let mut out = Vec::new();
        encode_head(&mut out, &parts, true);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "OPTIONS /x HTTP/1.1\r\nhost: app\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn response_heads_parse_in_place_and_bad_ones_are_named() {
        let mut buf = BytesMut::from("HTTP/1.1 201 Created\r\nX-A: 1\r\nx-a: 2\r\n\r\nbody");
        let resp = parse_head(&mut buf).unwrap().unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        let values: Vec<_> = resp.headers().get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(
            &buf[..],
            b"body",
            "the head is taken off the buffer, the body stays"
        );
        assert!(
            parse_head(&mut BytesMut::from("HTTP/1.1 200 OK\r\nx: 1\r\n"))
                .unwrap()
                .is_none()
        );
        let err = parse_head(&mut BytesMut::from("HTTP/1.1 2000 OK\r\n\r\n")).unwrap_err();
        assert!(err.to_string().contains("bad response head"), "{err}");
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: 1\r\n")).collect();
        let err = parse_head(&mut BytesMut::from(
            format!("HTTP/1.1 200 OK\r\n{many}\r\n").as_str(),
        ))
        .unwrap_err();
        assert!(err.to_string().contains("more than 100 headers"), "{err}");
    }

    /// An upstream that answers each connection's requests with the scripted replies, one per
    /// request head it reads, and then closes; it reports each connection it accepts.
    async fn scripted(
        replies: Vec<Vec<&'static str>>,
    ) -> (Arc<Pool>, tokio::sync::mpsc::UnboundedReceiver<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        let (accepted, accepts) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            for (n, conn_replies) in replies.into_iter().enumerate() {
                let (mut stream, _) = listener.accept().await.unwrap();
                accepted.send(n).unwrap();
                let mut buf = BytesMut::new();
                for reply in conn_replies {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        if stream.read_buf(&mut buf).await.unwrap() == 0 {
                            return;
                        }
                    }
                    buf.clear();
                    stream.write_all(reply.as_bytes()).await.unwrap();
                }
            }
        });
        let pool = Pool::new(
            authority,
            8,
            Duration::from_secs(60),
            Duration::from_secs(5),
            Arc::default(),
        );
        (Arc::new(pool), accepts)
    }

    fn get(method: Method) -> Parts {
        let mut parts = http::Request::new(()).into_parts().0;
        parts.method = method;
        parts.uri = "/x".parse().unwrap();
        parts
            .headers
            .insert(header::HOST, HeaderValue::from_static("app"));
        parts
    }

    async fn send_get(pool: &Arc<Pool>) -> Response<Body> {
        pool.send(&get(Method::GET), http_body_util::Empty::<Bytes>::new())
            .await
            .unwrap()
    }

    async fn read(resp: Response<Body>) -> (StatusCode, Vec<u8>) {
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, body.to_vec())
    }

    #[tokio::test]
    async fn a_connection_read_to_its_end_is_reused() {
        let (pool, mut accepts) = scripted(vec![vec![
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\none",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n",
            "HTTP/1.1 204 No Content\r\n\r\n",
        ]])
        .await;
        let first = send_get(&pool).await;
        assert_eq!(read(first).await, (StatusCode::OK, b"one".to_vec()));
        assert_eq!(pool.idle(), 1);
        let second = send_get(&pool).await;
        assert_eq!(read(second).await, (StatusCode::OK, b"two".to_vec()));
        let third = send_get(&pool).await;
        assert_eq!(read(third).await, (StatusCode::NO_CONTENT, vec![]));
        assert_eq!(pool.idle(), 1);
        assert_eq!(accepts.recv().await, Some(0));
        assert!(
            accepts.try_recv().is_err(),
            "all three went over one connection"
        );
        assert_eq!(pool.opened.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_body_dropped_halfway_closes_its_connection() {
        let (pool, _accepts) = scripted(vec![
            vec!["HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf"],
            vec!["HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"],
        ])
        .await;
        let mut first = send_get(&pool).await;
        let frame = first.body_mut().frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "half");
        drop(first);
        assert_eq!(pool.idle(), 0);
        let second = send_get(&pool).await;
        assert_eq!(read(second).await, (StatusCode::OK, b"ok".to_vec()));
    }

    #[tokio::test]
    async fn a_keep_alive_connection_the_upstream_closed_costs_no_request() {
        // The first connection answers once and closes. Whether the pool sees the close
        // first or the request runs into it, the GET is answered over a new connection.
        let (pool, mut accepts) = scripted(vec![
            vec!["HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na"],
            vec!["HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nb"],
        ])
        .await;
        let first = send_get(&pool).await;
        assert_eq!(read(first).await.1, b"a");
        let second = send_get(&pool).await;
        assert_eq!(read(second).await.1, b"b");
        assert_eq!(accepts.recv().await, Some(0));
        assert_eq!(accepts.recv().await, Some(1));
    }

    #[tokio::test]
    async fn the_reaper_closes_idle_connections_the_upstream_closed() {
        // The upstream answers once and closes its end.
        let (pool, _accepts) =
            scripted(vec![vec!["HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na"]]).await;
        assert_eq!(read(send_get(&pool).await).await.1, b"a");
        assert_eq!(pool.idle(), 1);
        tokio::time::timeout(Duration::from_secs(10), async {
            while pool.idle() > 0 {
                pool.reap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the closed connection is reaped once its end of stream arrives");
    }

    #[tokio::test]
    async fn a_response_that_runs_to_the_close_is_read_whole_and_not_reused() {
        let (pool, _accepts) = scripted(vec![vec![
            "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it",
        ]])
        .await;
        let resp = send_get(&pool).await;
        assert_eq!(read(resp).await, (StatusCode::OK, b"all of it".to_vec()));
        assert_eq!(pool.idle(), 0);
    }

    #[tokio::test]
    async fn a_response_cut_short_is_an_error_not_a_short_body() {
        let (pool, _accepts) = scripted(vec![vec![
            "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
        ]])
        .await;
        let resp = send_get(&pool).await;
        let err = resp.into_body().collect().await.unwrap_err();
        assert!(matches!(err, Error::Closed), "{err}");
    }

    #[tokio::test]
    async fn a_body_goes_on_after_an_answer_that_came_first() {
        // The upstream answers as soon as the head is in, then reads the body and reports
        // each chunk of it as it comes: an echo's shape.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        let upstream = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = BytesMut::new();
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                stream.read_buf(&mut buf).await.unwrap();
            }
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                .await
                .unwrap();
            // The body is chunked: echo each size line's chunk until the last one.
            while !buf.ends_with(b"0\r\n\r\n") {
                let n = stream.read_buf(&mut buf).await.unwrap();
                assert!(n > 0, "the client stopped sending: {buf:?}");
                stream.write_all(b"1\r\n.\r\n").await.unwrap();
            }
            stream.write_all(b"0\r\n\r\n").await.unwrap();
            String::from_utf8(buf.to_vec()).unwrap()
        });
        let pool = Arc::new(Pool::new(
            authority,
            8,
            Duration::from_secs(60),
            Duration::from_secs(5),
            Arc::default(),
        ));
        let (mut tx, body) = http_body_util::channel::Channel::<Bytes>::new(1);
        tx.send_data(Bytes::from_static(b"first")).await.unwrap();
        let resp = pool.send(&get(Method::POST), body).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        // Only now, with the answer in hand, the rest of the body.
        let sending = tokio::spawn(async move {
            tx.send_data(Bytes::from_static(b"second")).await.unwrap();
        });
        let answer = tokio::time::timeout(Duration::from_secs(10), read(resp))
            .await
            .expect("the rest of the body reached the upstream");
        sending.await.unwrap();
        assert_eq!(answer.0, StatusCode::OK);
        let got = upstream.await.unwrap();
        assert!(
            got.ends_with("5\r\nfirst\r\n6\r\nsecond\r\n0\r\n\r\n"),
            "{got:?}"
        );
        assert_eq!(
            pool.idle(),
            1,
            "sent and read whole: the connection is kept"
        );
    }
}
