//! A request body as it is forwarded, watched for the client's framing errors: a
//! malformed chunk (bad size, size overflow, an over-long chunk extension: hyper's
//! decoder refuses them) ends the body stream, hyper stops sending to the pod, and the
//! client gets 400 and a close: its error, not the pod's (502).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;

use super::Body;

/// Whether the client's body failed; nothing (no allocation) for a request without one.
#[derive(Clone, Default)]
pub struct BodyWatch(Option<Arc<AtomicBool>>);

impl BodyWatch {
    /// A watch for a request whose body is `body`.
    pub fn for_body(body: &impl HttpBody) -> Self {
        if body.is_end_stream() { Self(None) } else { Self(Some(Arc::default())) }
    }

    /// `body`, reporting its first error to this watch.
    pub fn wrap(&self, body: Body) -> Body {
        match &self.0 {
            None => body,
            Some(failed) => Watched { inner: body, failed: failed.clone() }.boxed(),
        }
    }

    /// Whether reading the client's body failed.
    pub fn failed(&self) -> bool {
        self.0.as_ref().is_some_and(|f| f.load(Ordering::Acquire))
    }
}

struct Watched<B> {
    inner: B,
    failed: Arc<AtomicBool>,
}

impl<B: HttpBody<Data = Bytes> + Unpin> HttpBody for Watched<B>
where
    B::Error: std::fmt::Display,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let p = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(e))) = &p {
            tracing::debug!(error = %e, "the client's request body is malformed or cut");
            self.failed.store(true, Ordering::Release);
        }
        p
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The answer to a request whose body could not be read: 400, then close (the rest of
/// the connection cannot be framed).
pub fn malformed() -> Response<Body> {
    let mut r = super::local(StatusCode::BAD_REQUEST, "malformed request body\n");
    r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Empty, StreamBody};

    #[tokio::test]
    async fn a_body_error_is_seen_and_an_empty_body_is_not_watched() {
        let empty = Empty::<Bytes>::new();
        let w = BodyWatch::for_body(&empty);
        assert!(w.0.is_none(), "no allocation for a request without a body");
        assert!(!w.failed());

        // a body that yields one frame, then an error (as hyper's decoder does on a bad chunk)
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> =
            vec![Ok(Frame::data(Bytes::from_static(b"abc"))), Err(std::io::Error::other("bad chunk size"))];
        let stream = StreamBody::new(futures::stream::iter(frames));
        let w = BodyWatch::for_body(&stream);
        assert!(w.0.is_some());
        let mut watched = Watched { inner: stream, failed: w.0.clone().unwrap() };
        assert!(watched.frame().await.unwrap().is_ok());
        assert!(!w.failed(), "data is not a failure");
        assert!(watched.frame().await.unwrap().is_err());
        assert!(w.failed());
    }
}
