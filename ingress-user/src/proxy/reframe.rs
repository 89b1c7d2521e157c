//! Pod answers sanitized before they reach the client (pure: a response head in, a
//! decision out). The pod client (`h1_client.rs`) has already parsed the pod's answer:
//! it skipped 1xx interim answers (100 Continue, 103 Early Hints), refused a header
//! line without a colon and conflicting Content-Lengths (502), read no body after a
//! HEAD, 204 or 304 (a pod connection holding bytes after such an answer is closed,
//! never reused), read a close-delimited body until the pod closed, and decoded
//! `Transfer-Encoding: chunked`. A body that arrives after
//! the head of a HEAD answer, once the connection is back in the pool, would be read
//! as the answer to the next request sent on it: HEAD requests therefore go to the pod
//! with `Connection: close` (`Proxy::route_and_forward`), and a pod connection that
//! answered 204 or 304 is closed, not pooled (`h1_client.rs`): a late body after such
//! a head cannot be told in advance. What is left to do here
//! is the framing headers the client sees, because hyper's server side frames the
//! body by a `Content-Length` found in the headers:
//!
//! - `Transfer-Encoding` present: the body was decoded (or read until close), so any
//!   `Content-Length` the pod also sent is dropped and hyper frames the body itself
//!   (chunked to an HTTP/1.1 client, close-delimited to HTTP/1.0). Keeping it gave
//!   the client a body cut at that length and the rest read as the next answer.
//! - `Transfer-Encoding` other than exactly `chunked` (`gzip, chunked`, `gzip`, ...):
//!   the body still carries a transfer coding the client is never told about: 502.
//! - No `Transfer-Encoding`, no `Content-Length`, a body (close-delimited): hyper
//!   frames it chunked (or closes after it for HTTP/1.0); nothing to do.
//! - Repeated equal `Content-Length` values: one is kept (the pod client refused differing ones).

use http::header::{self, HeaderMap, HeaderValue};

/// What to do with a pod's answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it (its headers possibly rewritten).
    Forward,
    /// Answer 502 instead: the reason, for the log.
    Reject(&'static str),
}

/// Rewrites the framing headers of a pod's answer (before hop-by-hop headers are
/// stripped: `Transfer-Encoding` is read here).
pub fn sanitize(headers: &mut HeaderMap) -> Verdict {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        if !only_chunked(headers) {
            return Verdict::Reject("Transfer-Encoding other than chunked");
        }
        headers.remove(header::CONTENT_LENGTH);
        return Verdict::Forward;
    }
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    if let (Some(first), Some(_)) = (lengths.next(), lengths.next()) {
        // the pod client accepted them: all the same number
        let one: HeaderValue = first.clone();
        headers.insert(header::CONTENT_LENGTH, one);
    }
    Verdict::Forward
}

/// Whether the Transfer-Encoding fields list exactly one coding, `chunked`.
fn only_chunked(headers: &HeaderMap) -> bool {
    let mut codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|c| !c.is_empty());
    matches!((codings.next(), codings.next()), (Some(c), None) if c.eq_ignore_ascii_case(b"chunked"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(fields: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in fields {
            h.append(http::HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_chunked_answer_loses_the_pods_content_length() {
        let mut h = head(&[("content-length", "5"), ("transfer-encoding", "chunked"), ("x-a", "1")]);
        assert_eq!(sanitize(&mut h), Verdict::Forward);
        assert!(!h.contains_key(header::CONTENT_LENGTH), "{h:?}");
        assert_eq!(h["x-a"], "1");
        let mut h = head(&[("transfer-encoding", "Chunked"), ("content-length", "5"), ("content-length", "5")]);
        assert_eq!(sanitize(&mut h), Verdict::Forward);
        assert_eq!(h.get_all(header::CONTENT_LENGTH).iter().count(), 0);
    }

    #[test]
    fn other_transfer_codings_are_refused() {
        for te in [&["gzip, chunked"][..], &["gzip"], &["chunked, chunked"], &["gzip", "chunked"], &[","]] {
            let mut h = HeaderMap::new();
            for v in te {
                h.append(header::TRANSFER_ENCODING, HeaderValue::from_static(v));
            }
            assert!(matches!(sanitize(&mut h), Verdict::Reject(_)), "{te:?}");
        }
    }

    #[test]
    fn lengths_are_kept_once_and_unframed_answers_untouched() {
        let mut h = head(&[("content-length", "7"), ("content-length", "7")]);
        assert_eq!(sanitize(&mut h), Verdict::Forward);
        assert_eq!(h.get_all(header::CONTENT_LENGTH).iter().collect::<Vec<_>>(), ["7"]);
        let mut h = head(&[("content-length", "7")]);
        assert_eq!(sanitize(&mut h), Verdict::Forward);
        assert_eq!(h[header::CONTENT_LENGTH], "7");
        // close-delimited: hyper frames it
        let mut h = head(&[("x-a", "1")]);
        assert_eq!(sanitize(&mut h), Verdict::Forward);
        assert_eq!(h.len(), 1);
    }
}
