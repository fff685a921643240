//! The framing rules both roles share (RFC 9112): a `Content-Length` value, the chunked
//! coding (one [`Decoder`] reads a body, the client's or the upstream's, and one size-line
//! encoder writes one), header and trailer lines, the date. Nothing here does I/O.

use std::io::Write as _;
use std::time::SystemTime;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http_body::Frame;

use crate::Error;

/// The longest chunk-size line (with extensions) and the largest trailer section.
pub const MAX_CHUNK_LINE: usize = 4096;
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// How a body is delimited on the wire, and how far it has been read. The one body decoder,
/// for request bodies read from clients and response bodies read from upstreams.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoder {
    /// This many bytes are left.
    Length(u64),
    Chunked(Chunked),
    /// The body runs until the connection closes (a response with neither length nor
    /// chunked coding).
    UntilClose,
    /// The body has ended.
    Done,
}

impl Decoder {
    /// The next frame from the front of `buf`: `Ok(None)` when more bytes are needed, or
    /// when the body has ended (then [`Decoder::is_done`]).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame<Bytes>>, Error> {
        let frame = match self {
            Decoder::Done => None,
            Decoder::Length(0) => {
                *self = Decoder::Done;
                None
            }
            Decoder::Length(left) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= n as u64;
                if *left == 0 {
                    *self = Decoder::Done;
                }
                Some(Frame::data(buf.split_to(n).freeze()))
            }
            Decoder::UntilClose => (!buf.is_empty()).then(|| Frame::data(buf.split().freeze())),
            Decoder::Chunked(chunked) => {
                let frame = chunked.decode(buf)?;
                if chunked.is_done() {
                    *self = Decoder::Done;
                }
                frame
            }
        };
        Ok(frame)
    }

    /// The connection closed: the end of a body that runs to the close, else an error.
    pub fn at_eof(&mut self) -> Result<(), Error> {
        match self {
            Decoder::UntilClose | Decoder::Done => {
                *self = Decoder::Done;
                Ok(())
            }
            _ => Err(Error::Closed),
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, Decoder::Done | Decoder::Length(0))
    }

    /// The bytes left, when that is known.
    pub fn remaining(&self) -> Option<u64> {
        match self {
            Decoder::Length(n) => Some(*n),
            Decoder::Done => Some(0),
            Decoder::Chunked(_) | Decoder::UntilClose => None,
        }
    }
}

/// Header lines (or trailer lines), `name: value` each, names lower-case as `http` keeps them.
pub fn encode_fields(out: &mut Vec<u8>, headers: &HeaderMap) {
    encode_fields_seeing(out, headers, []);
}

/// [`encode_fields`], saying which of `watched` were among the fields: the pass that writes
/// them tells, where a lookup each after would hash every name again.
pub fn encode_fields_seeing<const N: usize>(
    out: &mut Vec<u8>,
    headers: &HeaderMap,
    watched: [&HeaderName; N],
) -> [bool; N] {
    let mut seen = [false; N];
    for (name, value) in headers {
        for (w, s) in watched.iter().zip(&mut seen) {
            *s |= name == *w;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    seen
}

/// The chunked coding's size line for `len` bytes of data (`1a3f\r\n`): the one encoder
/// of chunk heads, for request bodies sent upstream and response bodies sent to clients.
pub fn chunk_size_line(out: &mut Vec<u8>, len: usize) {
    write!(out, "{len:x}\r\n").expect("writing to a Vec");
}

/// One `Content-Length` value: digits only (surrounding spaces allowed), no sign, no list,
/// at most 2^63-1 (as nginx: a larger length is a bug or an attack, never a body).
pub fn parse_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(value).ok()?.parse().ok()?;
    (n <= i64::MAX as u64).then_some(n)
}

/// The chunked transfer coding, decoded from the front of a buffer as bytes arrive.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Chunked {
    step: Step,
    /// Trailer bytes seen so far, bounded by [`MAX_TRAILER_BYTES`].
    trailer_bytes: usize,
    trailers: Option<Box<HeaderMap>>,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum Step {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    End,
}

impl Chunked {
    /// True once the last chunk and the trailers have been read.
    pub fn is_done(&self) -> bool {
        self.step == Step::End
    }

    /// The next frame: `Ok(None)` when more bytes are needed, or when the body ended (then
    /// `step` is `Step::End`).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame<Bytes>>, Error> {
        loop {
            match self.step {
                Step::Size => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE, "a chunk-size line")? else {
                        return Ok(None);
                    };
                    let size = parse_chunk_size(&line)?;
                    self.step = if size == 0 {
                        Step::Trailers
                    } else {
                        Step::Data(size)
                    };
                }
                Step::Data(left) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let left = left - n as u64;
                    self.step = if left == 0 {
                        Step::DataEnd
                    } else {
                        Step::Data(left)
                    };
                    return Ok(Some(Frame::data(buf.split_to(n).freeze())));
                }
                Step::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Error::malformed("a chunk is longer than its size"));
                    }
                    buf.advance(2);
                    self.step = Step::Size;
                }
                Step::Trailers => {
                    let room = MAX_TRAILER_BYTES - self.trailer_bytes;
                    let Some(line) = take_line(buf, room, "the trailer section")? else {
                        return Ok(None);
                    };
                    self.trailer_bytes += line.len() + 2;
                    if line.is_empty() {
                        self.step = Step::End;
                        return Ok(self.trailers.take().map(|t| Frame::trailers(*t)));
                    }
                    let (name, value) = parse_trailer(&line)?;
                    self.trailers
                        .get_or_insert_with(Box::default)
                        .append(name, value);
                }
                Step::End => return Ok(None),
            }
        }
    }
}

/// One CRLF-terminated line from the front of `buf`, without its CRLF; `None` when the line
/// is not complete yet and shorter than `limit`.
fn take_line(buf: &mut BytesMut, limit: usize, what: &str) -> Result<Option<BytesMut>, Error> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(i) if i > 0 && buf[i - 1] == b'\r' => {
            let mut line = buf.split_to(i + 1);
            line.truncate(i - 1);
            Ok(Some(line))
        }
        Some(_) => Err(Error::malformed(format!("{what} does not end in CRLF"))),
        None if buf.len() > limit => Err(Error::malformed(format!("{what} is too long"))),
        None => Ok(None),
    }
}

/// A chunk-size line (RFC 9112 section 7.1.1): the size in hex, at most 2^63-1, then
/// extensions that are each `;` name, with `=` and a token or a quoted string, optional
/// spaces or tabs around. Nothing else: a bare CR, a stray byte or an unclosed quote could
/// end the line at another hop, and the rest of the body would read as a new request.
fn parse_chunk_size(line: &[u8]) -> Result<u64, Error> {
    let bad = || {
        Error::malformed(format!(
            "bad chunk size line {:?}",
            String::from_utf8_lossy(&line[..line.len().min(64)])
        ))
    };
    let digits = line
        .iter()
        .position(|&b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if digits == 0 || digits > 16 {
        return Err(bad());
    }
    let hex = std::str::from_utf8(&line[..digits]).expect("hex digits are ASCII");
    let size = u64::from_str_radix(hex, 16).expect("at most 16 hex digits fit in a u64");
    if size > i64::MAX as u64 {
        return Err(bad());
    }
    let mut rest = &line[digits..];
    let skip_ws = |r: &mut &[u8]| {
        while let [b' ' | b'\t', tail @ ..] = *r {
            *r = tail;
        }
    };
    loop {
        skip_ws(&mut rest);
        let [b';', tail @ ..] = rest else {
            return if rest.is_empty() {
                Ok(size)
            } else {
                Err(bad())
            };
        };
        rest = tail;
        skip_ws(&mut rest);
        let name = rest.iter().take_while(|&&b| is_tchar(b)).count();
        if name == 0 {
            return Err(bad());
        }
        rest = &rest[name..];
        skip_ws(&mut rest);
        if let [b'=', tail @ ..] = rest {
            rest = tail;
            skip_ws(&mut rest);
            rest = match rest {
                [b'"', tail @ ..] => skip_quoted(tail).ok_or_else(bad)?,
                _ => {
                    let value = rest.iter().take_while(|&&b| is_tchar(b)).count();
                    if value == 0 {
                        return Err(bad());
                    }
                    &rest[value..]
                }
            };
        }
    }
}

/// What follows a quoted string whose opening quote is already read; `None` when it does not
/// close or holds a byte a quoted string may not.
fn skip_quoted(mut rest: &[u8]) -> Option<&[u8]> {
    loop {
        match rest {
            [b'"', tail @ ..] => return Some(tail),
            [b'\\', c, tail @ ..] if *c == b'\t' || *c >= 0x20 && *c != 0x7f => rest = tail,
            [c, tail @ ..] if *c == b'\t' || (*c >= 0x20 && *c != 0x7f && *c != b'\\') => {
                rest = tail
            }
            _ => return None,
        }
    }
}

/// A token character (RFC 9110 section 5.6.2).
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn parse_trailer(line: &[u8]) -> Result<(HeaderName, HeaderValue), Error> {
    let bad = || {
        Error::malformed(format!(
            "bad trailer line {:?}",
            String::from_utf8_lossy(line)
        ))
    };
    let colon = line.iter().position(|&b| b == b':').ok_or_else(bad)?;
    let name = HeaderName::from_bytes(&line[..colon]).map_err(|_| bad())?;
    let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).map_err(|_| bad())?;
    Ok((name, value))
}

/// `n` in decimal, into `digits`; the written part.
pub fn itoa(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &digits[i..];
        }
    }
}

/// The current time as an HTTP date, formatted once a second per thread.
pub fn http_date(out: &mut Vec<u8>) {
    thread_local! {
        static CACHED: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHED.with_borrow_mut(|(at, text)| {
        if *at != second {
            *at = second;
            *text = httpdate::fmt_http_date(now);
        }
        out.extend_from_slice(text.as_bytes());
    });
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn decode_all(input: &[u8], split: usize) -> Result<(Vec<u8>, Option<HeaderMap>), Error> {
        let mut chunked = Chunked::default();
        let mut buf = BytesMut::new();
        let (mut data, mut trailers) = (Vec::new(), None);
        for piece in [&input[..split], &input[split..]] {
            buf.extend_from_slice(piece);
            while let Some(frame) = chunked.decode(&mut buf)? {
                match frame.into_data() {
                    Ok(d) => data.extend_from_slice(&d),
                    Err(f) => trailers = f.into_trailers().ok(),
                }
            }
        }
        assert_eq!(chunked.step, Step::End, "the body did not end");
        assert!(buf.is_empty(), "bytes left after the body: {buf:?}");
        Ok((data, trailers))
    }

    /// Cases for the codec's property tests: 2,000 in CI, more with `PROPTEST_CASES=N` (see
    /// BENCHMARKS.md for the longer run).
    pub(crate) fn proptest_cases() -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(2000)
    }

    /// Feeds `input` to a decoder in pieces cut at `cuts`; the data, the trailers, whether
    /// it ended, and what was left in the buffer.
    fn decode_pieces(input: &[u8], cuts: &[usize]) -> (Result<(Vec<u8>, bool), Error>, usize) {
        let mut chunked = Chunked::default();
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut at = 0;
        let mut ends: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        ends.sort_unstable();
        ends.push(input.len());
        for end in ends {
            if end < at {
                continue;
            }
            buf.extend_from_slice(&input[at..end]);
            at = end;
            loop {
                match chunked.decode(&mut buf) {
                    Ok(Some(frame)) => {
                        if let Ok(d) = frame.into_data() {
                            data.extend_from_slice(&d);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return (Err(e), buf.len()),
                }
            }
        }
        (Ok((data, chunked.is_done())), buf.len())
    }

    fn encode_chunks(chunks: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in chunks.iter().filter(|c| !c.is_empty()) {
            chunk_size_line(&mut out, chunk.len());
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(crate::codec::tests::proptest_cases()))]

        /// Whatever the bytes, the decoder never panics, never yields more data than came
        /// in, and never holds more than a line's or a trailer section's limit unread.
        #[test]
        fn the_chunked_decoder_takes_any_bytes(
            input in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            cuts in proptest::collection::vec(0usize..1000, 0..4),
        ) {
            let (result, left) = decode_pieces(&input, &cuts);
            if let Ok((data, _)) = result {
                proptest::prop_assert!(data.len() <= input.len());
            }
            proptest::prop_assert!(left <= MAX_CHUNK_LINE.max(MAX_TRAILER_BYTES) + 2);
        }

        /// The same, for input that looks like a chunked body, so the decoder gets deep.
        #[test]
        fn the_chunked_decoder_takes_near_valid_bodies(
            input in "([0-9a-fA-F]{1,3}(;[a-z]{1,3}(=(\"[a-z ]{0,3}\"?|[a-z]{1,3}))?)?[ \t]?\r?\n?[a-z]{0,12}\r?\n?){0,6}0?\r?\n?([a-z-]{1,5}: ?[a-z]{0,4}\r?\n?)?\r?\n?",
            cuts in proptest::collection::vec(0usize..200, 0..4),
        ) {
            let (result, left) = decode_pieces(input.as_bytes(), &cuts);
            if let Ok((data, done)) = result {
                proptest::prop_assert!(data.len() <= input.len());
                // A body is done only at the blank line that ends its last chunk's trailers.
                let read = &input[..input.len() - left];
                proptest::prop_assert!(!done || read.ends_with("\r\n\r\n"), "{:?}", read);
            }
        }

        /// A body encoded, decoded however the bytes arrive, encoded again and decoded again
        /// is the same body, and the decoder stops at its end.
        #[test]
        fn a_chunked_body_round_trips(
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), 0..6),
            cuts in proptest::collection::vec(0usize..2000, 0..4),
            after in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..20),
        ) {
            let mut wire = encode_chunks(&chunks);
            let body_len = wire.len();
            wire.extend_from_slice(&after);
            let (result, left) = decode_pieces(&wire, &cuts);
            let (data, done) = result.unwrap();
            proptest::prop_assert!(done);
            proptest::prop_assert_eq!(&data, &chunks.concat());
            proptest::prop_assert_eq!(left, wire.len() - body_len, "the decoder read past the body");
            let again = encode_chunks(std::slice::from_ref(&data));
            let (result, _) = decode_pieces(&again, &[]);
            proptest::prop_assert_eq!(result.unwrap(), (data, true));
        }
    }

    #[test]
    fn chunked_bodies_decode_however_the_bytes_arrive() {
        let body = b"5\r\nhello\r\n7;ext=\"x\"\r\n, world\r\n0\r\nx-sum: 42\r\n\r\n";
        for split in 0..=body.len() {
            let (data, trailers) = decode_all(body, split).unwrap();
            assert_eq!(data, b"hello, world", "split at {split}");
            assert_eq!(trailers.unwrap()["x-sum"], "42", "split at {split}");
        }
        // Extensions in every form RFC 9112 allows are read past.
        let (data, _) = decode_all(
            b"5 ; a ; b = c ;d=\"q \\\" ;\"\r\nhello\r\n0\t;x\r\n\r\n",
            3,
        )
        .unwrap();
        assert_eq!(data, b"hello");
        assert_eq!(
            parse_chunk_size(b"7fffffffffffffff;x").unwrap(),
            i64::MAX as u64
        );
        let (data, trailers) = decode_all(b"A\r\n0123456789\r\n0\r\n\r\n", 4).unwrap();
        assert_eq!(data, b"0123456789");
        assert!(trailers.is_none());
    }

    #[test]
    fn malformed_chunked_bodies_are_refused_with_the_reason() {
        for (body, says) in [
            (&b"zz\r\nhello\r\n0\r\n\r\n"[..], "bad chunk size"),
            (b"5\r\nhello!\r\n0\r\n\r\n", "longer than its size"),
            (b"5\nhello\r\n0\r\n\r\n", "does not end in CRLF"),
            (b"12345678901234567\r\n", "bad chunk size"),
            (b"0\r\nno colon here\r\n\r\n", "bad trailer line"),
            (b"5\r\r;ABCD\r\n34\r\nE\r\n0\r\n\r\n", "bad chunk size"),
            (b"5;a=\"open\r\nhello\r\n0\r\n\r\n", "bad chunk size"),
            (b"5;\r\nhello\r\n0\r\n\r\n", "bad chunk size"),
            (b"5;a=\r\nhello\r\n0\r\n\r\n", "bad chunk size"),
            (b"5 x\r\nhello\r\n0\r\n\r\n", "bad chunk size"),
            (b"5;a=b c\r\nhello\r\n0\r\n\r\n", "bad chunk size"),
            (b"ffffffffffffffff\r\n", "bad chunk size"),
            (b"8000000000000000\r\n", "bad chunk size"),
            (b"0x5\r\nhello\r\n0\r\n\r\n", "bad chunk size"),
        ] {
            let err = decode_all(body, 0).unwrap_err().to_string();
            assert!(err.contains(says), "{body:?}: {err}");
        }
        let mut long = vec![b'1'; 1];
        long.extend(std::iter::repeat_n(b' ', MAX_CHUNK_LINE + 1));
        let err = Chunked::default()
            .decode(&mut BytesMut::from(&long[..]))
            .unwrap_err();
        assert!(err.to_string().contains("too long"), "{err}");
    }

    #[test]
    fn a_length_body_ends_at_its_length_and_leaves_what_follows() {
        let mut buf = BytesMut::from(&b"helloGET /next"[..]);
        let mut body = Decoder::Length(5);
        let frame = body.decode(&mut buf).unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "hello");
        assert!(body.is_done());
        assert!(body.decode(&mut buf).unwrap().is_none());
        assert_eq!(&buf[..], b"GET /next");
        assert!(Decoder::Length(5).at_eof().is_err());
        let mut until_close = Decoder::UntilClose;
        assert_eq!(
            until_close
                .decode(&mut buf)
                .unwrap()
                .unwrap()
                .into_data()
                .unwrap(),
            "GET /next"
        );
        until_close.at_eof().unwrap();
        assert!(until_close.is_done());
    }

    #[test]
    fn dates_and_numbers_are_written_as_http_writes_them() {
        assert_eq!(itoa(0, &mut [0; 20]), b"0");
        assert_eq!(
            itoa(u64::MAX, &mut [0; 20]),
            u64::MAX.to_string().as_bytes()
        );
        let mut out = Vec::new();
        http_date(&mut out);
        assert!(httpdate::parse_http_date(std::str::from_utf8(&out).unwrap()).is_ok());
    }
}
