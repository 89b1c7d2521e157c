use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::{Empty, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

fn get(path: &str) -> Request<Body> {
    Request::get(format!("http://ignored{path}"))
        .header(http::header::HOST, "a.test")
        .body(Empty::new().map_err(|e| match e {}).boxed())
        .unwrap()
}

/// A pod answering `hello` to each request, counting accepted connections; with
/// `close_after`, it closes a connection after that many answers.
async fn pod(close_after: Option<usize>) -> (SocketAddr, Arc<AtomicUsize>) {
    pod_answering(close_after, b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello").await
}

/// [`pod`] with `answer` as every answer's bytes.
async fn pod_answering(close_after: Option<usize>, answer: &'static [u8]) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut answered = 0;
                let mut pending = Vec::new();
                loop {
                    let Ok(n) = s.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&pending[..end]).to_string();
                        pending.drain(..end + 4);
                        assert!(head.starts_with("GET /x?y HTTP/1.1\r\n"), "origin-form target: {head}");
                        let _ = s.write_all(answer).await;
                        answered += 1;
                        if close_after == Some(answered) {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, accepted)
}

async fn text(resp: Response<Body>) -> String {
    String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

#[tokio::test]
async fn a_connection_is_reused_once_its_answer_was_read() {
    let (addr, accepted) = pod(None).await;
    let pool = H1Pool::new(8);
    for _ in 0..5 {
        let resp = pool.request(addr, get("/x?y"), false).await.unwrap();
        assert_eq!(text(resp).await, "hello");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "five requests in turn, one connection");
    assert_eq!(pool.sweep(), 1, "the connection is idle in the pool");
}

#[tokio::test]
async fn a_connection_that_answered_204_or_304_is_not_reused() {
    for answer in [&b"HTTP/1.1 204 No Content\r\n\r\n"[..], b"HTTP/1.1 304 Not Modified\r\n\r\n"] {
        let (addr, accepted) = pod_answering(None, answer).await;
        let pool = H1Pool::new(8);
        for _ in 0..3 {
            let resp = pool.request(addr, get("/x?y"), false).await.unwrap();
            assert!(matches!(resp.status().as_u16(), 204 | 304));
            assert_eq!(text(resp).await, "");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3, "a connection each: {}", String::from_utf8_lossy(answer));
        assert_eq!(pool.sweep(), 0, "none of them pooled");
    }
}

#[tokio::test]
async fn an_answer_not_yet_read_keeps_its_connection_out_of_the_pool() {
    let (addr, accepted) = pod(None).await;
    let pool = H1Pool::new(8);
    let first = pool.request(addr, get("/x?y"), false).await.unwrap();
    // the first body is still unread: a second request needs a connection of its own
    let second = pool.request(addr, get("/x?y"), false).await.unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    assert_eq!((text(first).await, text(second).await), ("hello".into(), "hello".into()));
    assert_eq!(pool.sweep(), 2);
}

#[tokio::test]
async fn a_pooled_connection_the_pod_closed_is_replaced() {
    let (addr, accepted) = pod(Some(1)).await;
    let pool = H1Pool::new(8);
    assert_eq!(text(pool.request(addr, get("/x?y"), false).await.unwrap()).await, "hello");
    // let the pod's close arrive
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(text(pool.request(addr, get("/x?y"), false).await.unwrap()).await, "hello");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_read_buffer_is_capped_at_max_head_and_bulk_bodies_still_pass() {
    // a head of 4 x MAX_HEAD is refused (hyper's default cap, ~408 KiB, would take it;
    // the cap is checked when a read leaves the head incomplete, so a head a little
    // over MAX_HEAD can still pass) ...
    let big: &'static [u8] = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 5\r\n\r\nhello",
            "a".repeat(4 * super::super::MAX_HEAD)
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    let (addr, _) = pod_answering(None, big).await;
    let pool = H1Pool::new(8);
    let got = pool.request(addr, get("/x?y"), false).await;
    assert!(matches!(got, Err(H1Error::Failed(_))), "an oversized head is an error: {:?}", got.map(|r| r.status()));
    // ... one just under it is read, and so is a body sixteen times the cap
    let body = "b".repeat(16 * super::super::MAX_HEAD);
    let ok: &'static [u8] = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: {}\r\n\r\n{body}",
            "a".repeat(super::super::MAX_HEAD - 1024),
            body.len()
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    let (addr, accepted) = pod_answering(None, ok).await;
    for _ in 0..2 {
        let resp = pool.request(addr, get("/x?y"), false).await.unwrap();
        assert_eq!(text(resp).await, body);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "the connection was pooled and reused");
}

#[tokio::test]
async fn a_refused_connect_gives_the_request_back_unsent() {
    // a port nothing listens on
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let pool = H1Pool::new(8);
    let body = Full::new(Bytes::from_static(b"payload")).map_err(|e| match e {}).boxed();
    let req = Request::post("http://ignored/upload").body(body).unwrap();
    match pool.request(addr, req, false).await {
        Err(H1Error::Connect(req, why)) => {
            assert!(why.contains(&addr.to_string()), "{why}");
            assert_eq!(req.uri().path(), "/upload", "given back as it came, ready for another endpoint");
            let body = req.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"payload", "the body was not consumed");
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
}

fn decode_all(wire: &[u8], split: usize) -> Result<(Vec<u8>, Option<HeaderMap>, usize), &'static str> {
    // fed in pieces of `split` bytes, as reads would deliver it
    let mut state = Chunk::Size;
    let mut buf = BytesMut::new();
    let (mut out, mut trailers) = (Vec::new(), None);
    let mut fed = 0;
    loop {
        match decode_chunked(&mut state, &mut buf)? {
            Step::Data(d) => out.extend_from_slice(&d),
            Step::Trailers(t) => {
                trailers = Some(t);
                return Ok((out, trailers, buf.len()));
            }
            Step::End => return Ok((out, trailers, buf.len())),
            Step::Need => {
                if fed == wire.len() {
                    return Err("needs more than the wire holds");
                }
                let n = split.min(wire.len() - fed);
                buf.extend_from_slice(&wire[fed..fed + n]);
                fed += n;
            }
        }
    }
}

#[test]
fn chunked_bodies_decode_in_any_split() {
    let wire = b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\n\r\nNEXT";
    for split in [1, 2, 3, 7, 64] {
        let (body, trailers, left) = decode_all(wire, split).unwrap();
        assert_eq!(body, b"hello 0123456789", "split {split}");
        assert!(trailers.is_none());
        // what follows the body stays in the buffer (bytes after the answer)
        assert!(left <= 4, "split {split}: {left}");
    }
    let (body, trailers, _) = decode_all(b"3\r\nabc\r\n0\r\nx-sum: 9\r\nx-b: 1\r\n\r\n", 4).unwrap();
    assert_eq!(body, b"abc");
    let t = trailers.expect("trailers");
    assert_eq!((t["x-sum"].as_bytes(), t["x-b"].as_bytes()), (&b"9"[..], &b"1"[..]));
}

#[test]
fn malformed_chunks_are_errors() {
    for (wire, why) in [
        (&b"zz\r\nab\r\n0\r\n\r\n"[..], "bad chunk size"),
        (b"11111111111111111\r\n", "chunk size overflow"),
        (b"5x\r\nhello\r\n", "bad chunk size"),
        (b"5\r\nhelloXX0\r\n\r\n", "chunk data not followed by CRLF"),
    ] {
        assert_eq!(decode_all(wire, 3).unwrap_err(), why, "{}", String::from_utf8_lossy(wire));
    }
    let long_ext = format!("1;{}\r\na\r\n0\r\n\r\n", "e".repeat(MAX_CHUNK_LINE + 1));
    assert_eq!(decode_all(long_ext.as_bytes(), 512).unwrap_err(), "chunk-size line too long");
}

fn head(wire: &[u8], head_request: bool) -> Result<Parsed, BoxError> {
    parse_answer(&mut BytesMut::from(wire), head_request, false)
}

#[test]
fn answer_heads_give_their_framing() {
    let framing_of = |wire: &[u8], head_request| match head(wire, head_request).unwrap() {
        Parsed::Head(_, f) => (f.body, f.reusable),
        Parsed::Interim => panic!("interim"),
        Parsed::Partial => panic!("partial"),
    };
    assert_eq!(framing_of(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", false), (Decode::Length(5), true));
    assert_eq!(
        framing_of(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\ncontent-length: 5\r\n\r\n", false),
        (Decode::Length(5), true)
    );
    assert_eq!(
        framing_of(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", true),
        (Decode::Done, true),
        "HEAD: no body"
    );
    assert_eq!(framing_of(b"HTTP/1.1 204 No Content\r\n\r\n", false), (Decode::Done, true));
    assert_eq!(
        framing_of(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n", false),
        (Decode::Chunked(Chunk::Size), true),
        "chunked wins over a length"
    );
    assert_eq!(
        framing_of(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n", false),
        (Decode::Close, false)
    );
    assert_eq!(framing_of(b"HTTP/1.1 200 OK\r\n\r\n", false), (Decode::Close, false), "close-delimited");
    assert_eq!(
        framing_of(b"HTTP/1.1 200 OK\r\nconnection: Close\r\ncontent-length: 1\r\n\r\n", false),
        (Decode::Length(1), false)
    );
    assert_eq!(framing_of(b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", false), (Decode::Length(1), false));
    assert!(matches!(head(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n", false).unwrap(), Parsed::Interim));
    assert!(matches!(head(b"HTTP/1.1 200 OK\r\ncontent-le", false).unwrap(), Parsed::Partial));
    for bad in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    ] {
        assert!(head(bad, false).is_err(), "{}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn values_share_the_head_and_the_body_stays_in_the_buffer() {
    let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nx-a: one\r\ncontent-length: 5\r\n\r\nhello"[..]);
    let Parsed::Head(h, _) = parse_answer(&mut buf, false, false).unwrap() else { panic!("a head") };
    assert_eq!(h.status, StatusCode::OK);
    assert_eq!(h.headers["x-a"], "one");
    assert_eq!(&buf[..], b"hello");
}

#[test]
fn request_heads_carry_the_framing_the_body_needs() {
    let enc = |req: Request<Body>| {
        let (parts, body) = req.into_parts();
        let up = Upload::of(&parts, &body);
        (String::from_utf8(encode_head(&parts, up)).unwrap(), up)
    };
    let (h, up) = enc(get("/x?y"));
    assert_eq!(h, "GET /x?y HTTP/1.1\r\nhost: a.test\r\n\r\n");
    assert_eq!(up, Upload::Done);
    let full = |b: &'static [u8]| Full::new(Bytes::from_static(b)).map_err(|e| match e {}).boxed();
    let (h, up) = enc(Request::post("http://i/u").body(full(b"abc")).unwrap());
    assert_eq!((h.as_str(), up), ("POST /u HTTP/1.1\r\ncontent-length: 3\r\n\r\n", Upload::Length(3)));
    let (h, up) = enc(Request::post("/u").body(Empty::new().map_err(|e| match e {}).boxed()).unwrap());
    assert_eq!((h.as_str(), up), ("POST /u HTTP/1.1\r\ncontent-length: 0\r\n\r\n", Upload::Done));
    let stream = http_body_util::StreamBody::new(futures::stream::iter(vec![Ok::<_, BoxError>(Frame::data(
        Bytes::from_static(b"a"),
    ))]));
    let (h, up) = enc(Request::put("/u").body(stream.boxed()).unwrap());
    assert_eq!((h.as_str(), up), ("PUT /u HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n", Upload::Chunked));
}

/// A pod reading a whole request (head and body) from each connection's bytes and
/// answering with `answer`; it sends back (on a channel) what it received.
async fn recording_pod(answer: &'static [u8]) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = vec![0u8; 4096];
                // until the chunked body's last chunk, or a short pause
                loop {
                    match tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await {
                        Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
                        _ => break,
                    }
                    if got.ends_with(b"0\r\n\r\n") || got.ends_with(b"!") {
                        break;
                    }
                }
                let _ = tx.send(got);
                let _ = s.write_all(answer).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn a_streamed_upload_goes_chunked_and_a_chunked_answer_comes_back_decoded_with_trailers() {
    let (addr, mut got) = recording_pod(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nx-sum: 5\r\n\r\n",
    )
    .await;
    let pool = H1Pool::new(8);
    let frames = vec![
        Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"hello "))),
        Ok(Frame::data(Bytes::from_static(b"world"))),
    ];
    let body = http_body_util::StreamBody::new(futures::stream::iter(frames)).boxed();
    let resp = pool
        .request(addr, Request::post("http://i/up").header("host", "a.test").body(body).unwrap(), false)
        .await
        .unwrap();
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    assert_eq!(&collected.to_bytes()[..], b"abcde");
    assert_eq!(trailers.expect("trailers")["x-sum"], "5");
    let sent = String::from_utf8(got.recv().await.unwrap()).unwrap();
    assert_eq!(
        sent,
        "POST /up HTTP/1.1\r\nhost: a.test\r\ntransfer-encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"
    );
    assert_eq!(pool.sweep(), 1, "read to the end and sent whole: pooled");
}

#[tokio::test]
async fn a_close_delimited_answer_is_read_to_the_close_and_its_connection_not_pooled() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await;
        s.write_all(b"HTTP/1.1 200 OK\r\n\r\nall of ").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        s.write_all(b"it").await.unwrap();
    });
    let pool = H1Pool::new(8);
    let resp = pool.request(addr, get("/x?y"), false).await.unwrap();
    assert_eq!(text(resp).await, "all of it");
    assert_eq!(pool.sweep(), 0);
}

#[tokio::test]
async fn a_body_cut_short_by_the_pod_is_an_error() {
    let (addr, _) = pod_answering(Some(1), b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello").await;
    let pool = H1Pool::new(8);
    let resp = pool.request(addr, get("/x?y"), false).await.unwrap();
    assert!(resp.into_body().collect().await.is_err(), "5 of 10 bytes, then the close");
    assert_eq!(pool.sweep(), 0);
}

#[tokio::test]
async fn interim_answers_are_skipped() {
    let (addr, _) = pod_answering(None, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
    let pool = H1Pool::new(8);
    let resp = pool.request(addr, get("/x?y"), false).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("link").is_none(), "the 103's fields are not the answer's");
    assert_eq!(text(resp).await, "ok");
}

#[test]
fn fields_pass_as_sent_only_when_nothing_is_rewritten() {
    let pass = |wire: &[u8], head_request| match parse_answer(&mut BytesMut::from(wire), head_request, true) {
        Ok(Parsed::Head(h, f)) => Ok((h, f.body, f.reusable)),
        Ok(_) => panic!("not a head"),
        Err(e) => Err(e.to_string()),
    };
    // passed: the fields in order, without Connection, Keep-Alive, Content-Length
    let wire = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: x\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\
Keep-Alive: timeout=5\r\nX-A: one\r\n\r\nhello";
    let (h, body, reusable) = pass(wire, false).unwrap();
    let f = h.fields.expect("passed as sent");
    assert!(h.headers.is_empty());
    let got: Vec<(&[u8], &[u8])> = f.iter().collect();
    assert_eq!(got, [(&b"Server"[..], &b"nginx"[..]), (b"Date", b"x"), (b"X-A", b"one")]);
    assert_eq!((f.length, f.date, body, reusable), (Some(5), true, Decode::Length(5), true));
    // the same framing as the map path, answer by answer
    for (wire, head_request) in [
        (&b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..], false),
        (b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 3\r\n\r\n", false),
        (b"HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\n", false),
        (b"HTTP/1.1 200 OK\r\nx: y\r\n\r\n", false),
        (b"HTTP/1.1 204 No Content\r\n\r\n", false),
        (b"HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n", false),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", true),
    ] {
        let (h, body, reusable) = pass(wire, head_request).unwrap();
        assert!(h.fields.is_some(), "{}", String::from_utf8_lossy(wire));
        let Ok(Parsed::Head(_, m)) = head(wire, head_request) else { panic!("a head") };
        assert_eq!((body, reusable), (m.body, m.reusable), "{}", String::from_utf8_lossy(wire));
    }
    // what needs the map: rewritten or checked there
    for wire in [
        &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nconnection: x-hop\r\nx-hop: 1\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTrailer: x-sum\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nUpgrade: h2c\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nProxy-Connection: keep-alive\r\ncontent-length: 0\r\n\r\n",
    ] {
        let (h, _, _) = pass(wire, false).unwrap();
        assert!(h.fields.is_none() && !h.headers.is_empty(), "{}", String::from_utf8_lossy(wire));
    }
    // and what the map path refuses is still refused
    for bad in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
    ] {
        assert!(pass(bad, false).is_err(), "{}", String::from_utf8_lossy(bad));
    }
}
