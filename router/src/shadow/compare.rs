//! The comparison, pure: two answers in (the primary's and the shadow's, as captured), a
//! verdict out, naming the first difference (status, then a compared header, then the body,
//! JSON in canonical form field by field). Fields configured as ignored, and those the
//! primary itself disagreed on between two answers (learned noise), are left out. A body
//! sent compressed (`content-encoding: gzip`, `deflate` or `br`) is decoded first
//! ([`Answer::decoded`]): two sides that compress the same answer differently agree.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::hash::Hasher as _;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use serde_json::Value;

/// How a compared exchange differed, the `kind` label of `switchyard_shadow_mismatched_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MismatchKind {
    Status,
    Header,
    Body,
    /// The shadow gave no answer: refused, reset, timed out, or no endpoint up.
    NoAnswer,
}

impl MismatchKind {
    pub(super) const ALL: [MismatchKind; 4] = [
        MismatchKind::Status,
        MismatchKind::Header,
        MismatchKind::Body,
        MismatchKind::NoAnswer,
    ];

    pub(super) fn as_str(self) -> &'static str {
        match self {
            MismatchKind::Status => "status",
            MismatchKind::Header => "header",
            MismatchKind::Body => "body",
            MismatchKind::NoAnswer => "no_answer",
        }
    }
}

/// A body as captured for comparison: a hash of every byte, and the first bytes whole.
#[derive(Debug, Clone)]
pub struct Captured {
    pub(super) hash: u64,
    pub(super) len: u64,
    /// Up to `max_compare_bytes`; the whole body when `len` fits.
    pub(super) prefix: Bytes,
}

impl Captured {
    pub(super) fn complete(&self) -> bool {
        self.prefix.len() as u64 == self.len
    }
}

/// Builds a [`Captured`] from a body's frames.
#[derive(Debug)]
pub(super) struct Capture {
    pub(super) hasher: std::collections::hash_map::DefaultHasher,
    pub(super) len: u64,
    pub(super) prefix: BytesMut,
    pub(super) cap: usize,
}

impl Capture {
    pub(super) fn new(cap: usize) -> Self {
        Capture {
            hasher: std::collections::hash_map::DefaultHasher::new(),
            len: 0,
            prefix: BytesMut::new(),
            cap,
        }
    }

    pub(super) fn push(&mut self, data: &[u8]) {
        self.hasher.write(data);
        self.len += data.len() as u64;
        let room = self.cap.saturating_sub(self.prefix.len());
        self.prefix.extend_from_slice(&data[..room.min(data.len())]);
    }

    pub(super) fn finish(self) -> Captured {
        Captured {
            hash: self.hasher.finish(),
            len: self.len,
            prefix: self.prefix.freeze(),
        }
    }
}

/// One answer, as compared.
#[derive(Debug, Clone)]
pub struct Answer {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Captured,
}

impl Answer {
    /// The answer with its body decoded, when it came whole and compressed (gzip, deflate or
    /// br): the decoded body, its first `cap` bytes kept, and no `content-encoding` header.
    /// An answer that is not compressed, was cut at the capture's cap, or does not decode is
    /// returned as it came (and compared as bytes). Decoding stops at `cap` bytes beyond the
    /// kept ones' hash, so a small body that inflates without end costs little.
    pub fn decoded(self, cap: usize) -> Answer {
        let encoding = (self.headers.get(header::CONTENT_ENCODING))
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_ascii_lowercase());
        let Some(encoding) = encoding else {
            return self;
        };
        if !self.body.complete() {
            return self;
        }
        let prefix = self.body.prefix.clone();
        let input = &prefix[..];
        let reader: Box<dyn std::io::Read + '_> = match encoding.as_str() {
            "gzip" | "x-gzip" => Box::new(flate2::read::MultiGzDecoder::new(input)),
            "deflate" => Box::new(flate2::read::ZlibDecoder::new(input)),
            "br" => Box::new(brotli_decompressor::Decompressor::new(input, 4096)),
            _ => return self,
        };
        // The hash covers at most DECODE_LIMIT bytes: past it, the rest is not read.
        let mut capture = Capture::new(cap);
        let mut reader = std::io::Read::take(reader, DECODE_LIMIT);
        let mut chunk = [0u8; 8192];
        loop {
            match std::io::Read::read(&mut reader, &mut chunk) {
                Ok(0) => break,
                Ok(n) => capture.push(&chunk[..n]),
                Err(_) => {
                    drop(reader);
                    return self;
                }
            }
        }
        drop(reader);
        let mut headers = self.headers;
        headers.remove(header::CONTENT_ENCODING);
        headers.remove(header::CONTENT_LENGTH);
        Answer {
            status: self.status,
            headers,
            body: capture.finish(),
        }
    }
}

/// The most bytes a compressed body is decoded to for a comparison.
const DECODE_LIMIT: u64 = 16 * 1024 * 1024;

/// What a comparison found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Matched,
    Mismatched { kind: MismatchKind, detail: String },
}

/// Fields and headers two answers of the primary itself disagreed on, per route.
#[derive(Debug, Default)]
pub(super) struct Noise {
    pub(super) fields: HashSet<String>,
    pub(super) headers: HashSet<HeaderName>,
    /// The primary's non-JSON body differs between two answers: bytes say nothing.
    pub(super) body: bool,
}

/// Bytes of each body a recorded mismatch keeps; also all that is kept of a body that is not
/// JSON (its every byte is hashed).
pub(super) const REPORT_BODY_BYTES: usize = 512;

pub(super) fn excerpt(body: &Captured) -> String {
    let cut = &body.prefix[..body.prefix.len().min(REPORT_BODY_BYTES)];
    let mut text = String::from_utf8_lossy(cut).into_owned();
    if (cut.len() as u64) < body.len {
        let _ = write!(text, "… ({} bytes)", body.len);
    }
    text
}

pub(super) fn says_json(headers: &HeaderMap) -> bool {
    (headers.get(header::CONTENT_TYPE))
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("json"))
}

/// The body as JSON, when it is whole and says it is JSON (or parses as an object or array).
pub(super) fn json_of(answer: &Answer) -> Option<Value> {
    if !answer.body.complete() || answer.body.len == 0 {
        return None;
    }
    let says_json = says_json(&answer.headers);
    let first = answer.body.prefix.iter().find(|b| !b.is_ascii_whitespace());
    if !says_json && !matches!(first, Some(b'{' | b'[')) {
        return None;
    }
    serde_json::from_slice(&answer.body.prefix).ok()
}

/// Compares the shadow's answer with the primary's: status, then the compared headers, then
/// the body. A field is left out when it is configured (`ignore`: a name anywhere, or a
/// path such as `/items/*/id`) or learned as noise.
pub(super) fn compare(
    primary: &Answer,
    shadow: &Answer,
    ignore: &[String],
    noise: &Noise,
) -> Verdict {
    if primary.status != shadow.status {
        return Verdict::Mismatched {
            kind: MismatchKind::Status,
            detail: format!(
                "status {} vs {}",
                primary.status.as_u16(),
                shadow.status.as_u16()
            ),
        };
    }
    for name in primary.headers.keys().chain(shadow.headers.keys()) {
        if noise.headers.contains(name) {
            continue;
        }
        let a: Vec<&HeaderValue> = primary.headers.get_all(name).iter().collect();
        let b: Vec<&HeaderValue> = shadow.headers.get_all(name).iter().collect();
        if a != b {
            let show = |v: &[&HeaderValue]| {
                v.iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Verdict::Mismatched {
                kind: MismatchKind::Header,
                detail: format!("header {name}: {:?} vs {:?}", show(&a), show(&b)),
            };
        }
    }
    if primary.body.hash == shadow.body.hash && primary.body.len == shadow.body.len {
        return Verdict::Matched;
    }
    if let (Some(a), Some(b)) = (json_of(primary), json_of(shadow)) {
        let mut paths = Vec::new();
        diff_json(
            &a,
            &b,
            &mut String::new(),
            &mut String::new(),
            &mut paths,
            64,
        );
        let counted = paths
            .into_iter()
            .find(|(general, _)| !noise.fields.contains(general) && !ignored(ignore, general));
        return match counted {
            None => Verdict::Matched,
            Some((_, concrete)) => {
                let at = |v: &Value| {
                    pointer(v, &concrete).map_or("(absent)".to_owned(), |v| short(&v.to_string()))
                };
                Verdict::Mismatched {
                    kind: MismatchKind::Body,
                    detail: format!("field {concrete}: {} vs {}", at(&a), at(&b)),
                }
            }
        };
    }
    if noise.body {
        return Verdict::Matched;
    }
    let offset = (primary.body.prefix.iter().zip(shadow.body.prefix.iter()))
        .position(|(a, b)| a != b)
        .unwrap_or(primary.body.prefix.len().min(shadow.body.prefix.len()));
    Verdict::Mismatched {
        kind: MismatchKind::Body,
        detail: format!(
            "bytes differ from offset {offset} ({} vs {} bytes)",
            primary.body.len, shadow.body.len
        ),
    }
}

pub(super) fn short(s: &str) -> String {
    if s.len() <= 80 {
        return s.to_owned();
    }
    let mut end = 80;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A JSON pointer lookup that reads `~1` and `~0` as the pointer syntax says.
pub(super) fn pointer<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(v);
    }
    v.pointer(path)
}

/// True when a configured ignore entry covers `path` (its generalised form): a bare name
/// matches that key at any depth; an entry starting with `/` matches the path itself.
pub(super) fn ignored(ignore: &[String], path: &str) -> bool {
    let last = path.rsplit('/').next().unwrap_or("");
    ignore.iter().any(|entry| {
        if entry.starts_with('/') {
            entry == path
        } else {
            unescape(last) == *entry
        }
    })
}

pub(super) fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

pub(super) fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The paths where two JSON values differ, as (generalised, concrete) pairs: the generalised
/// form writes every array index as `*`, so a field learned as noise in one item is noise in
/// all. Keys compare in sorted order (the canonical form), so key order never differs.
pub(super) fn diff_json(
    a: &Value,
    b: &Value,
    general: &mut String,
    concrete: &mut String,
    out: &mut Vec<(String, String)>,
    limit: usize,
) {
    if out.len() >= limit {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for key in keys {
                let (g, c) = (general.len(), concrete.len());
                let token = escape(key);
                let _ = write!(general, "/{token}");
                let _ = write!(concrete, "/{token}");
                match (x.get(key), y.get(key)) {
                    (Some(p), Some(q)) => diff_json(p, q, general, concrete, out, limit),
                    _ => out.push((general.clone(), concrete.clone())),
                }
                general.truncate(g);
                concrete.truncate(c);
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                let (g, c) = (general.len(), concrete.len());
                general.push_str("/*");
                let _ = write!(concrete, "/{i}");
                match (x.get(i), y.get(i)) {
                    (Some(p), Some(q)) => diff_json(p, q, general, concrete, out, limit),
                    _ => out.push((general.clone(), concrete.clone())),
                }
                general.truncate(g);
                concrete.truncate(c);
            }
        }
        (x, y) if x == y => {}
        _ => out.push((general.clone(), concrete.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, content_type: &str, body: &str) -> Answer {
        let mut headers = HeaderMap::new();
        if !content_type.is_empty() {
            headers.insert(header::CONTENT_TYPE, content_type.parse().unwrap());
        }
        let mut capture = Capture::new(1 << 20);
        // In two pieces: the hash must not depend on how the body was framed.
        let (x, y) = body.as_bytes().split_at(body.len() / 2);
        capture.push(x);
        capture.push(y);
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers,
            body: capture.finish(),
        }
    }

    fn verdict(a: &Answer, b: &Answer) -> Verdict {
        compare(
            a,
            b,
            &["request_id".into(), "/meta/*/at".into()],
            &Noise::default(),
        )
    }

    fn kind(v: Verdict) -> Option<MismatchKind> {
        match v {
            Verdict::Matched => None,
            Verdict::Mismatched { kind, .. } => Some(kind),
        }
    }

    fn encoded(content_encoding: &str, body: &[u8]) -> Answer {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        headers.insert(header::CONTENT_ENCODING, content_encoding.parse().unwrap());
        let mut capture = Capture::new(1 << 20);
        capture.push(body);
        Answer {
            status: StatusCode::OK,
            headers,
            body: capture.finish(),
        }
    }

    fn gzip(text: &str) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap()
    }

    /// Brotli-compressed `{"id":1,"name":"acme"}` (Python's `brotli.compress`, quality 11).
    const BROTLI_ACME: &[u8] = &[
        0x8b, 0x0a, 0x80, 0x7b, 0x22, 0x69, 0x64, 0x22, 0x3a, 0x31, 0x2c, 0x22, 0x6e, 0x61, 0x6d,
        0x65, 0x22, 0x3a, 0x22, 0x61, 0x63, 0x6d, 0x65, 0x22, 0x7d, 0x03,
    ];

    #[test]
    fn compressed_answers_are_compared_decoded() {
        let json = r#"{"id":1,"name":"acme"}"#;
        let plain = answer(200, "application/json", json).decoded(1 << 20);
        let gz = encoded("gzip", &gzip(json)).decoded(1 << 20);
        let br = encoded("br", BROTLI_ACME).decoded(1 << 20);
        assert_eq!(gz.body.prefix, json.as_bytes());
        assert_eq!(br.body.prefix, json.as_bytes());
        assert!(!gz.headers.contains_key(header::CONTENT_ENCODING));
        assert_eq!(verdict(&gz, &br), Verdict::Matched, "gzip against br");
        assert_eq!(verdict(&plain, &gz), Verdict::Matched, "plain against gzip");
        // Decoded, a difference is named field by field, not as bytes.
        let other = encoded("gzip", &gzip(r#"{"id":1,"name":"globex"}"#)).decoded(1 << 20);
        match verdict(&br, &other) {
            Verdict::Mismatched { kind, detail } => {
                assert_eq!(kind, MismatchKind::Body);
                assert!(detail.contains("name"), "{detail}");
            }
            v => panic!("{v:?}"),
        }
        // A body that does not decode is kept as it came, and compared as bytes.
        let broken = encoded("gzip", b"not gzip at all").decoded(1 << 20);
        assert!(broken.headers.contains_key(header::CONTENT_ENCODING));
        assert_eq!(&broken.body.prefix[..], b"not gzip at all");
    }

    #[test]
    fn a_body_that_inflates_without_end_is_cut_at_the_limit() {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            e.write_all(&zeros).unwrap();
        }
        let bomb = e.finish().unwrap();
        assert!(bomb.len() < 200_000, "{}", bomb.len());
        let decoded = encoded("gzip", &bomb).decoded(4096);
        assert_eq!(decoded.body.prefix.len(), 4096);
        assert_eq!(decoded.body.len, DECODE_LIMIT);
    }

    #[test]
    fn identical_answers_match_however_they_were_framed() {
        let a = answer(200, "text/plain", "hello world");
        let mut capture = Capture::new(4);
        capture.push(b"hello world");
        let b = Answer {
            body: capture.finish(),
            ..a.clone()
        };
        assert_eq!(verdict(&a, &b), Verdict::Matched);
    }

    #[test]
    fn the_first_difference_is_named_status_then_header_then_body() {
        let ok = answer(200, "text/plain", "hello");
        let v = verdict(&ok, &answer(500, "text/plain", "hello"));
        assert_eq!(
            v,
            Verdict::Mismatched {
                kind: MismatchKind::Status,
                detail: "status 200 vs 500".into()
            }
        );
        let v = verdict(&ok, &answer(200, "text/html", "hello"));
        assert_eq!(kind(v.clone()), Some(MismatchKind::Header), "{v:?}");
        let v = verdict(&ok, &answer(200, "text/plain", "help!"));
        assert_eq!(
            v,
            Verdict::Mismatched {
                kind: MismatchKind::Body,
                detail: "bytes differ from offset 3 (5 vs 5 bytes)".into()
            }
        );
    }

    #[test]
    fn json_compares_in_canonical_form_and_names_the_field() {
        let a = answer(
            200,
            "application/json",
            r#"{"id":7,"name":"acme","tags":["a","b"]}"#,
        );
        let reordered = answer(
            200,
            "application/json",
            r#"{ "tags":["a","b"], "name":"acme", "id":7 }"#,
        );
        assert_eq!(verdict(&a, &reordered), Verdict::Matched);
        let other = answer(
            200,
            "application/json",
            r#"{"id":7,"name":"acme","tags":["a","c"]}"#,
        );
        assert_eq!(
            verdict(&a, &other),
            Verdict::Mismatched {
                kind: MismatchKind::Body,
                detail: r#"field /tags/1: "b" vs "c""#.into()
            }
        );
        let missing = answer(200, "application/json", r#"{"id":7,"tags":["a","b"]}"#);
        assert_eq!(
            verdict(&a, &missing),
            Verdict::Mismatched {
                kind: MismatchKind::Body,
                detail: r#"field /name: "acme" vs (absent)"#.into()
            }
        );
    }

    #[test]
    fn configured_and_learned_noise_is_not_counted() {
        let a = answer(
            200,
            "application/json",
            r#"{"id":1,"request_id":"r1","meta":[{"at":1},{"at":2}],"now":5}"#,
        );
        let b = answer(
            200,
            "application/json",
            r#"{"id":1,"request_id":"r2","meta":[{"at":3},{"at":4}],"now":6}"#,
        );
        // request_id and /meta/*/at are configured; `now` is not, yet.
        assert_eq!(
            kind(verdict(&a, &b)),
            Some(MismatchKind::Body),
            "{:?}",
            verdict(&a, &b)
        );
        let mut noise = Noise::default();
        let mut paths = Vec::new();
        let again = answer(
            200,
            "application/json",
            r#"{"id":1,"request_id":"r9","meta":[{"at":9},{"at":9}],"now":7}"#,
        );
        diff_json(
            &json_of(&a).unwrap(),
            &json_of(&again).unwrap(),
            &mut String::new(),
            &mut String::new(),
            &mut paths,
            64,
        );
        noise.fields.extend(paths.into_iter().map(|(g, _)| g));
        assert!(noise.fields.contains("/now"), "{noise:?}");
        assert!(noise.fields.contains("/meta/*/at"), "{noise:?}");
        let ignore = ["request_id".to_owned()];
        assert_eq!(compare(&a, &b, &ignore, &noise), Verdict::Matched);
        // A real difference still shows through the noise.
        let c = answer(
            200,
            "application/json",
            r#"{"id":2,"request_id":"r3","meta":[{"at":3},{"at":4}],"now":6}"#,
        );
        assert_eq!(
            compare(&a, &c, &ignore, &noise),
            Verdict::Mismatched {
                kind: MismatchKind::Body,
                detail: "field /id: 1 vs 2".into()
            }
        );
    }

    #[test]
    fn keys_with_slashes_are_escaped_in_paths() {
        let a: Value = serde_json::from_str(r#"{"a/b":{"c~d":1}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a/b":{"c~d":2}}"#).unwrap();
        let mut paths = Vec::new();
        diff_json(
            &a,
            &b,
            &mut String::new(),
            &mut String::new(),
            &mut paths,
            64,
        );
        assert_eq!(paths[0].1, "/a~1b/c~0d");
        assert_eq!(pointer(&a, &paths[0].1), Some(&Value::from(1)));
        assert!(ignored(&["c~d".into()], &paths[0].0));
    }
}
