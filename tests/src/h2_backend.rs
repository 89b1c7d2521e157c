//! HTTP/2 test pods (h2c, prior knowledge), served by hyper's http2 server on a tokio
//! runtime the test owns:
//! - every path but `/echo.Echo/*`: answers with JSON ([`H2Echo`]) saying what it
//!   received (version, `:authority`, headers, body length, request trailers) and
//!   ends its answer with trailers: `x-pod` and each request trailer as `x-echo-NAME`;
//! - `/echo.Echo/*`: a gRPC service on tonic's server side with a bytes codec (no
//!   protoc): `Unary` answers `POD AUTHORITY|PAYLOAD`, `ServerStream` answers N
//!   messages `msg-i` for payload N, `ClientStream` answers `COUNT:TOTAL_BYTES`,
//!   `Fail` answers status NOT_FOUND.
//!
//! Also the client side of the bytes codec, for tonic clients ([`BytesCodec`]).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Buf, BufMut, Bytes};
use http::{Request, Response};
use http_body_util::{BodyExt, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::tokio_stream::{self, StreamExt};
use tonic::{Status, Streaming};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, BoxError>;

/// What the h2c pod answers (the body of every non-gRPC response).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct H2Echo {
    pub pod: String,
    /// `HTTP/2.0`: how the request reached the pod.
    pub version: String,
    pub method: String,
    pub path: String,
    /// The request's `:authority`.
    pub authority: String,
    /// A `Host` field beside it (none expected over HTTP/2).
    pub host: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub body_len: usize,
    pub trailers: BTreeMap<String, String>,
}

/// gRPC messages as raw bytes: a tonic codec with no protobuf.
#[derive(Clone, Copy, Debug, Default)]
pub struct BytesCodec;

impl Codec for BytesCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = BytesCodec;
    type Decoder = BytesCodec;
    fn encoder(&mut self) -> Self::Encoder {
        BytesCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        BytesCodec
    }
}

impl Encoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

type Answer<T> = std::pin::Pin<Box<dyn Future<Output = Result<tonic::Response<T>, Status>> + Send>>;
type Messages = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<Bytes, Status>> + Send>>;

struct Unary {
    pod: String,
    authority: String,
}

impl tonic::server::UnaryService<Bytes> for Unary {
    type Response = Bytes;
    type Future = Answer<Bytes>;
    fn call(&mut self, req: tonic::Request<Bytes>) -> Self::Future {
        let mut out = format!("{} {}|", self.pod, self.authority).into_bytes();
        out.extend_from_slice(req.get_ref());
        Box::pin(async move { Ok(tonic::Response::new(Bytes::from(out))) })
    }
}

struct Fail;

impl tonic::server::UnaryService<Bytes> for Fail {
    type Response = Bytes;
    type Future = Answer<Bytes>;
    fn call(&mut self, _: tonic::Request<Bytes>) -> Self::Future {
        Box::pin(async { Err(Status::not_found("no such thing")) })
    }
}

struct ServerStream;

impl tonic::server::ServerStreamingService<Bytes> for ServerStream {
    type Response = Bytes;
    type ResponseStream = Messages;
    type Future = Answer<Messages>;
    fn call(&mut self, req: tonic::Request<Bytes>) -> Self::Future {
        let n: usize = std::str::from_utf8(req.get_ref()).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
        let items: Vec<Result<Bytes, Status>> = (0..n).map(|i| Ok(Bytes::from(format!("msg-{i}")))).collect();
        Box::pin(async move { Ok(tonic::Response::new(Box::pin(tokio_stream::iter(items)) as Messages)) })
    }
}

struct ClientStream;

impl tonic::server::ClientStreamingService<Bytes> for ClientStream {
    type Response = Bytes;
    type Future = Answer<Bytes>;
    fn call(&mut self, req: tonic::Request<Streaming<Bytes>>) -> Self::Future {
        Box::pin(async move {
            let mut stream = req.into_inner();
            let (mut count, mut total) = (0usize, 0usize);
            while let Some(m) = stream.next().await {
                let m = m?;
                count += 1;
                total += m.len();
            }
            Ok(tonic::Response::new(Bytes::from(format!("{count}:{total}"))))
        })
    }
}

async fn grpc(pod: String, req: Request<Incoming>) -> Response<Body> {
    let authority = req.uri().authority().map(|a| a.to_string()).unwrap_or_default();
    let mut g = tonic::server::Grpc::new(BytesCodec);
    let resp = match req.uri().path() {
        "/echo.Echo/Unary" => g.unary(Unary { pod, authority }, req).await,
        "/echo.Echo/Fail" => g.unary(Fail, req).await,
        "/echo.Echo/ServerStream" => g.server_streaming(ServerStream, req).await,
        "/echo.Echo/ClientStream" => g.client_streaming(ClientStream, req).await,
        _ => Status::unimplemented("no such method").into_http(),
    };
    resp.map(|b| b.map_err(BoxError::from).boxed_unsync())
}

async fn echo(pod: String, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let collected = match body.collect().await {
        Ok(c) => c,
        Err(e) => {
            let text = Bytes::from(format!("body: {e}"));
            let body = http_body_util::Full::new(text).map_err(BoxError::from).boxed_unsync();
            return Response::builder().status(400).body(body).expect("response");
        }
    };
    let text = |v: &http::HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
    let mut trailers = BTreeMap::new();
    let mut out_trailers = http::HeaderMap::new();
    out_trailers.insert("x-pod", pod.parse().expect("pod name is a header value"));
    if let Some(t) = collected.trailers() {
        for (n, v) in t {
            trailers.insert(n.to_string(), text(v));
            if let Ok(name) = http::HeaderName::from_bytes(format!("x-echo-{n}").as_bytes()) {
                out_trailers.insert(name, v.clone());
            }
        }
    }
    let e = H2Echo {
        pod,
        version: format!("{:?}", parts.version),
        method: parts.method.to_string(),
        path: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        authority: parts.uri.authority().map(|a| a.to_string()).unwrap_or_default(),
        host: parts.headers.get(http::header::HOST).map(text),
        headers: parts.headers.iter().map(|(n, v)| (n.to_string(), text(v))).collect(),
        body_len: collected.to_bytes().len(),
        trailers,
    };
    let json = Bytes::from(serde_json::to_vec(&e).expect("json"));
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![Ok(Frame::data(json)), Ok(Frame::trailers(out_trailers))];
    let body = http_body_util::StreamBody::new(tokio_stream::iter(frames)).map_err(BoxError::from).boxed_unsync();
    Response::builder().header("content-type", "application/json").body(body).expect("response")
}

/// An h2c pod; stopped when dropped.
pub struct H2Backend {
    pub addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl H2Backend {
    /// Serves `listener` (bound wherever the caller chose, a pod's namespace included)
    /// on runtime `rt` as pod `pod`.
    pub fn serve(rt: &tokio::runtime::Handle, pod: &str, listener: std::net::TcpListener) -> Self {
        listener.set_nonblocking(true).expect("nonblocking listener");
        let addr = listener.local_addr().expect("local addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let (pod, counted) = (pod.to_string(), requests.clone());
        let task = rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                let (pod, counted) = (pod.clone(), counted.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        counted.fetch_add(1, Ordering::SeqCst);
                        let pod = pod.clone();
                        async move {
                            let resp = if req.uri().path().starts_with("/echo.Echo/") {
                                grpc(pod, req).await
                            } else {
                                echo(pod, req).await
                            };
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, requests, task }
    }

    /// An h2c pod on 127.0.0.1, an ephemeral port.
    pub fn start_local(rt: &tokio::runtime::Handle, pod: &str) -> Self {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        Self::serve(rt, pod, l)
    }

    /// Requests (streams) answered or being answered.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for H2Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One gRPC message as it goes on the wire (uncompressed): flag, length, bytes.
pub fn grpc_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The messages of a gRPC body (uncompressed); None when it is cut short.
pub fn grpc_messages(mut body: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    while !body.is_empty() {
        if body.len() < 5 || body[0] != 0 {
            return None;
        }
        let n = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let m = body.get(5..5 + n)?;
        out.push(m.to_vec());
        body = &body[5 + n..];
    }
    Some(out)
}

/// An HTTP/2 answer as an h2 client got it.
#[derive(Debug)]
pub struct H2Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
    pub trailers: Option<http::HeaderMap>,
}

/// An h2 client (prior knowledge) on `stream`; its connection is driven by a task.
pub async fn h2_client(stream: tokio::net::TcpStream) -> Result<h2::client::SendRequest<Bytes>, h2::Error> {
    let (client, conn) = h2::client::handshake(stream).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Sends `req` with `body` (none: the stream ends with the head) and `trailers`, and
/// reads the whole answer.
pub async fn h2_send(
    client: &h2::client::SendRequest<Bytes>,
    req: Request<()>,
    body: &[u8],
    trailers: Option<http::HeaderMap>,
) -> Result<H2Reply, h2::Error> {
    let mut client = client.clone().ready().await?;
    let ends = body.is_empty() && trailers.is_none();
    let (resp, mut send) = client.send_request(req, ends)?;
    if !body.is_empty() {
        send.send_data(Bytes::copy_from_slice(body), trailers.is_none())?;
    }
    if let Some(t) = trailers {
        send.send_trailers(t)?;
    }
    let (parts, mut recv) = resp.await?.into_parts();
    let mut out = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk?;
        let _ = recv.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    let trailers = recv.trailers().await?;
    Ok(H2Reply { status: parts.status.as_u16(), headers: parts.headers, body: out, trailers })
}
