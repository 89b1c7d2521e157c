//! Pure: the proxy's own answers (no route, no backend, connect failure, timeouts, ...)
//! as gRPC expects them when the request is a gRPC call. A gRPC client reads the
//! call's outcome from `grpc-status`, not from the HTTP status, so such a request gets
//! a "Trailers-Only" response (gRPC over HTTP/2: HTTP status 200, `content-type:
//! application/grpc`, `grpc-status` and `grpc-message` in the only header block, no
//! body). Over HTTP/1.1 the same fields are response headers.
//!
//! The code follows gRPC's "HTTP to gRPC Status Code Mapping" (400 INTERNAL,
//! 401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 404 UNIMPLEMENTED, 429/502/503/504
//! UNAVAILABLE, any other UNKNOWN), with what the proxy knows better than a status:
//! its 504s are its own timeouts (DEADLINE_EXCEEDED), and a 500 for a backendRef that
//! cannot be used is UNAVAILABLE, as GRPCRoute requires ("When a GRPCBackendRef is
//! invalid, `UNAVAILABLE` statuses MUST be returned for requests that would have
//! otherwise been routed to an invalid backend").

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};

/// Marks a response the proxy made itself (a response extension, never sent): its
/// status and the text it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalAnswer {
    pub status: StatusCode,
    pub message: &'static str,
}

/// The gRPC status codes the proxy's answers use (grpc/doc/statuscodes.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum GrpcCode {
    Unknown = 2,
    DeadlineExceeded = 4,
    PermissionDenied = 7,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

/// The 500s of a backendRef that cannot be used (`plan.rs`): UNAVAILABLE for gRPC.
pub const BACKEND_UNUSABLE: [&str; 2] = [super::plan::INVALID_BACKEND, super::plan::NO_USABLE_BACKEND];

/// The content type of the proxy's gRPC answer to a request, or None when the request
/// is not gRPC: `application/grpc` for gRPC (`application/grpc`, `application/grpc+proto`,
/// ...), and gRPC-Web's own for gRPC-Web, whose clients read a Trailers-Only answer the
/// same way.
pub fn answer_content_type(request: &HeaderMap) -> Option<&'static str> {
    if crate::routing::is_grpc_content_type(request) {
        return Some("application/grpc");
    }
    let v = request.get(header::CONTENT_TYPE)?.to_str().ok()?.to_ascii_lowercase();
    let base = v.split(';').next().unwrap_or("").trim();
    let family = |name: &str| base == name || base.strip_prefix(name).is_some_and(|r| r.starts_with('+'));
    if family("application/grpc-web-text") {
        Some("application/grpc-web-text")
    } else if family("application/grpc-web") {
        Some("application/grpc-web")
    } else {
        None
    }
}

/// The gRPC code for one of the proxy's answers.
pub fn code(a: &LocalAnswer) -> GrpcCode {
    match a.status.as_u16() {
        400 => GrpcCode::Internal,
        401 => GrpcCode::Unauthenticated,
        403 => GrpcCode::PermissionDenied,
        404 => GrpcCode::Unimplemented,
        500 if BACKEND_UNUSABLE.contains(&a.message) => GrpcCode::Unavailable,
        504 => GrpcCode::DeadlineExceeded,
        429 | 502 | 503 => GrpcCode::Unavailable,
        _ => GrpcCode::Unknown,
    }
}

/// `grpc-message`: the text percent-encoded as gRPC requires (every byte outside
/// printable ASCII, and `%`).
pub fn grpc_message(text: &str) -> HeaderValue {
    let mut out = String::with_capacity(text.len());
    for b in text.trim().bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&out).expect("percent-encoded printable ASCII is a valid header value")
}

/// The gRPC form of a proxy answer to a request of `content_type` (from
/// [`answer_content_type`]): status 200 and the Trailers-Only fields. None for answers
/// that are not errors (redirects, `OPTIONS` answers): they are sent as they are.
pub fn grpc_answer(
    a: &LocalAnswer,
    content_type: &'static str,
) -> Option<(StatusCode, Vec<(HeaderName, HeaderValue)>)> {
    if a.status.as_u16() < 400 {
        return None;
    }
    let code = code(a) as u16;
    let message = if a.message.trim().is_empty() { a.status.canonical_reason().unwrap_or("") } else { a.message };
    Some((
        StatusCode::OK,
        vec![
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (HeaderName::from_static("grpc-status"), HeaderValue::from(code)),
            (HeaderName::from_static("grpc-message"), grpc_message(message)),
        ],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(ct: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        h
    }

    fn answer(status: u16, message: &'static str) -> LocalAnswer {
        LocalAnswer { status: StatusCode::from_u16(status).unwrap(), message }
    }

    #[test]
    fn grpc_requests_are_told_by_their_content_type() {
        for ct in ["application/grpc", "application/grpc+proto", "Application/GRPC+json", "application/grpc; x=1"] {
            assert_eq!(answer_content_type(&headers(ct)), Some("application/grpc"), "{ct}");
        }
        for ct in ["application/grpc-web", "application/grpc-web+proto"] {
            assert_eq!(answer_content_type(&headers(ct)), Some("application/grpc-web"), "{ct}");
        }
        assert_eq!(answer_content_type(&headers("application/grpc-web-text")), Some("application/grpc-web-text"));
        for ct in ["application/json", "application/grpcx", "text/plain", "application/grpc-webx"] {
            assert_eq!(answer_content_type(&headers(ct)), None, "{ct}");
        }
        assert_eq!(answer_content_type(&HeaderMap::new()), None);
    }

    #[test]
    fn codes_follow_grpcs_http_mapping_and_what_the_proxy_knows() {
        let plan = super::super::plan::INVALID_BACKEND;
        let cases = [
            (404, "no route\n", GrpcCode::Unimplemented),
            (503, "no ready endpoint\n", GrpcCode::Unavailable),
            (503, "backend unavailable\n", GrpcCode::Unavailable),
            (502, "backend failed\n", GrpcCode::Unavailable),
            (504, "request timeout\n", GrpcCode::DeadlineExceeded),
            (504, "backend timeout\n", GrpcCode::DeadlineExceeded),
            (500, plan, GrpcCode::Unavailable),
            (500, super::super::plan::NO_USABLE_BACKEND, GrpcCode::Unavailable),
            (500, "route uses an unsupported filter\n", GrpcCode::Unknown),
            (400, "malformed request body\n", GrpcCode::Internal),
            (401, "", GrpcCode::Unauthenticated),
            (403, "", GrpcCode::PermissionDenied),
            (429, "", GrpcCode::Unavailable),
            (431, "request head too large\n", GrpcCode::Unknown),
        ];
        for (status, message, want) in cases {
            assert_eq!(code(&answer(status, message)), want, "{status} {message:?}");
        }
    }

    #[test]
    fn the_answer_is_trailers_only_with_status_and_message() {
        let (status, h) = grpc_answer(&answer(404, "no route\n"), "application/grpc").unwrap();
        assert_eq!(status, StatusCode::OK);
        let get = |n: &str| h.iter().find(|(k, _)| k == n).map(|(_, v)| v.to_str().unwrap().to_string());
        assert_eq!(get("content-type").as_deref(), Some("application/grpc"));
        assert_eq!(get("grpc-status").as_deref(), Some("12"));
        assert_eq!(get("grpc-message").as_deref(), Some("no route"));
        let (_, h) = grpc_answer(&answer(504, "request timeout\n"), "application/grpc-web").unwrap();
        assert_eq!(h[0].1, "application/grpc-web");
        assert_eq!(h[1].1, "4");
        // an empty text: the status's reason phrase
        let (_, h) = grpc_answer(&answer(503, ""), "application/grpc").unwrap();
        assert_eq!(h[2].1, "Service Unavailable");
        // not errors: left alone
        assert_eq!(grpc_answer(&answer(301, ""), "application/grpc"), None);
        assert_eq!(grpc_answer(&answer(200, ""), "application/grpc"), None);
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(grpc_message("no route\n"), "no route");
        assert_eq!(grpc_message("50% done"), "50%25 done");
        assert_eq!(grpc_message("caf\u{e9}"), "caf%C3%A9");
        assert_eq!(grpc_message("a\tb"), "a%09b");
    }
}
