//! Step 1 of the hot path, before the route: the path a request is routed on. A route is
//! chosen by path prefix, and the upstream that serves the request reads the same path after
//! its own normalisation. When the two read it differently, a request can match a flag-routed
//! route here and mean a fixed one upstream (`/%61nalytics/x` is `/analytics/x`), so routes
//! and the `path:` tenant extractor match the path in the form most upstreams will read it:
//!
//! - `%XX` of an unreserved character (letters, digits, `-._~`) is decoded (RFC 3986 6.2.2.2);
//! - empty segments are dropped (`//analytics/x` is `/analytics/x`, as nginx merges slashes);
//! - `;` parameters are dropped from each segment (`/analytics;v=1/x`, as servlet containers
//!   read it).
//!
//! What cannot be read one way only is refused with 400 rather than guessed at: `.` and `..`
//! segments (plain, encoded, or with parameters: `..;`), an encoded `/` or `\` or control
//! character, a raw `\`, and a `%` not followed by two hex digits. The request is forwarded
//! with its path as the client sent it: the normal form decides the route, and every upstream
//! that normalises as above reads the same path the route was chosen for.

use std::borrow::Cow;

/// Why a path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path has . or .. segments")]
    DotSegment,
    #[error("the path has an encoded '/', '\\' or control character")]
    EncodedDelimiter,
    #[error("the path has a backslash")]
    Backslash,
    #[error("the path has a '%' that is not followed by two hex digits")]
    BadPercent,
}

/// The path as routes see it, borrowed when the request's path is already in that form
/// (nearly every request: one scan over its bytes).
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if is_normal(path.as_bytes()) {
        return Ok(Cow::Borrowed(path));
    }
    let mut out = String::with_capacity(path.len());
    for raw in path.split('/').skip(1) {
        let decoded = decode_segment(raw)?;
        // Parameters start at the first `;`: an encoded one stays `%3B`, so it is data.
        let segment = decoded.split(';').next().unwrap_or("");
        if segment == "." || segment == ".." {
            return Err(PathError::DotSegment);
        }
        if segment.is_empty() {
            continue;
        }
        out.push('/');
        out.push_str(segment);
    }
    if path.ends_with('/') || out.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// True when nothing in the path needs a second look: no `%`, `;` or `\\`, no empty segment
/// and no `.` or `..` segment.
fn is_normal(path: &[u8]) -> bool {
    let ends_segment = |i: usize| path.get(i).is_none_or(|&b| b == b'/');
    let mut after_slash = false;
    for (i, &b) in path.iter().enumerate() {
        match b {
            b'%' | b';' | b'\\' => return false,
            b'/' if after_slash && i > 0 => return false,
            b'.' if after_slash
                && (ends_segment(i + 1) || (path[i + 1] == b'.' && ends_segment(i + 2))) =>
            {
                return false;
            }
            _ => {}
        }
        after_slash = b == b'/';
    }
    true
}

/// One segment with its unreserved `%XX` decoded; `;` is kept (as raw or encoded) for the
/// caller. An encoded `;` comes back as `%3B`, so it is never taken for a parameter.
fn decode_segment(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if raw.contains('\\') {
        return Err(PathError::Backslash);
    }
    if !raw.contains('%') {
        return Ok(Cow::Borrowed(raw));
    }
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            // Every byte up to the next '%' goes as is (a multi-byte character included).
            let next = raw[i..].find('%').map_or(bytes.len(), |j| i + j);
            out.push_str(&raw[i..next]);
            i = next;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            bytes.get(i + 1).and_then(|&b| hex(b)),
            bytes.get(i + 2).and_then(|&b| hex(b)),
        ) else {
            return Err(PathError::BadPercent);
        };
        let c = hi << 4 | lo;
        if is_unreserved(c) {
            out.push(char::from(c));
        } else if c == b'/' || c == b'\\' || c.is_ascii_control() {
            return Err(PathError::EncodedDelimiter);
        } else {
            // Reserved or non-ASCII: stays encoded, in upper case.
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(hi)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(lo)]));
        }
        i += 3;
    }
    Ok(Cow::Owned(out))
}

/// An unreserved URI character (RFC 3986 section 2.3): letters, digits and `-._~`.
pub fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn paths_in_normal_form_are_borrowed() {
        for path in [
            "/",
            "/a/b",
            "/a/.well-known/x",
            "/a/b.",
            "/a/..b/",
            "/t/acme/orders",
        ] {
            assert!(
                matches!(normalize(path), Ok(Cow::Borrowed(p)) if p == path),
                "{path}"
            );
        }
    }

    #[test]
    fn equivalent_spellings_route_as_the_upstream_reads_them() {
        for (path, normal) in [
            ("/%61nalytics/x", "/analytics/x"),
            ("/%41%7e%2D%5f", "/A~-_"),
            ("//analytics/x", "/analytics/x"),
            ("/a//b///c/", "/a/b/c/"),
            ("/analytics;v=1/x", "/analytics/x"),
            ("/a/b;jsessionid=1", "/a/b"),
            ("/a%3bb/x", "/a%3Bb/x"),
            ("/q%3fx/%25", "/q%3Fx/%25"),
            ("/caf%C3%A9", "/caf%C3%A9"),
            ("//", "/"),
            ("/.well-known/x", "/.well-known/x"),
            ("/a/.x", "/a/.x"),
        ] {
            assert_eq!(normalize(path).as_deref(), Ok(normal), "{path}");
        }
    }

    #[test]
    fn paths_that_read_two_ways_are_refused() {
        for (path, why) in [
            ("/a/../b", PathError::DotSegment),
            ("/a/./b", PathError::DotSegment),
            ("/..", PathError::DotSegment),
            ("/a/.", PathError::DotSegment),
            ("/a/%2e%2E/b", PathError::DotSegment),
            ("/a/.%2e", PathError::DotSegment),
            ("/x/..;/analytics/y", PathError::DotSegment),
            ("/x/.;a/y", PathError::DotSegment),
            ("/x/%2e%2e%2fanalytics/y", PathError::EncodedDelimiter),
            ("/a%2fb", PathError::EncodedDelimiter),
            ("/a%5cb", PathError::EncodedDelimiter),
            ("/a%00b", PathError::EncodedDelimiter),
            ("/x\\..\\analytics\\y", PathError::Backslash),
            ("/a%", PathError::BadPercent),
            ("/a%4", PathError::BadPercent),
            ("/a%zz", PathError::BadPercent),
        ] {
            assert_eq!(normalize(path), Err(why), "{path}");
        }
    }

    proptest! {
        /// The normal form is a fixed point, starts with '/', and never has a dot segment or
        /// an empty one.
        #[test]
        fn normal_form_is_stable(segments in proptest::collection::vec("[a-zA-Z0-9%;./~_-]{0,6}", 0..6)) {
            let path = format!("/{}", segments.join("/"));
            if let Ok(normal) = normalize(&path) {
                prop_assert!(normal.starts_with('/'));
                let again = normalize(&normal);
                prop_assert_eq!(again.as_deref(), Ok(&*normal));
                let inner = normal.trim_end_matches('/');
                for segment in inner.split('/').skip(1) {
                    prop_assert!(!segment.is_empty() && segment != "." && segment != "..", "{}", normal);
                }
            }
        }
    }
}
