//! Whole-connection splicing for splice-safe hosts: the first request head is read
//! and routed here; if its host sends everything unchanged to one backend, the
//! client connection is joined to a new connection to the pod, in the kernel, and
//! every later request on it goes straight there. Otherwise hyper serves the
//! connection, starting with the bytes already read.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::conn::{ClientIo, send_408};
use super::{MAX_HEAD, Proxy};
use crate::routing::{Backend, ListenerTable, request_host};

pub enum Peeked {
    /// The connection was spliced (and has ended) or closed before a request.
    Done,
    /// Serve it with hyper.
    Proxy(ClientIo),
}

/// What the first request head says about splicing its connection.
#[derive(Debug, PartialEq, Eq)]
enum FirstHead {
    /// Not complete yet: read more.
    Partial,
    /// Serve it with hyper: a malformed head (hyper answers it), a connection that ends
    /// after this request (`Connection: close`, HTTP/1.0: nothing to gain from a join),
    /// a target that is not origin-form (the proxy rewrites an absolute-form target to
    /// origin-form; a join would pass it on raw), or no single Host to route by. Also
    /// every head the proxy would change or refuse: a path that is not normal (the pod
    /// must get the normalized one), a Transfer-Encoding (`refuse.rs` checks it), an
    /// invalid Host (`request_host` refuses it), CONNECT.
    Proxy,
    /// Route by this host (lowercase, no port), as the router would.
    Host(String),
}

fn first_head(buf: &[u8]) -> FirstHead {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return FirstHead::Partial,
        Err(_) => return FirstHead::Proxy,
    }
    let closes = req.version == Some(0)
        || req.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("connection")
                && h.value.split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
        });
    if closes || !req.path.is_some_and(super::normalize::is_normal) || req.method == Some("CONNECT") {
        return FirstHead::Proxy;
    }
    if req.headers.iter().any(|h| h.name.eq_ignore_ascii_case("transfer-encoding")) {
        return FirstHead::Proxy;
    }
    let hosts = req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("host")).map(|h| h.value);
    match request_host(None, hosts) {
        Ok((host, _)) => FirstHead::Host(host.into_owned()),
        Err(_) => FirstHead::Proxy,
    }
}

/// The backend a connection with this first head is joined to, or None (the proxy
/// serves it). Never a backend other than the one the router picks for that head: the
/// host comes from the router's own [`request_host`], and a splice-safe host sends
/// every request to its one backend.
fn splice_choice<'t>(listener: &'t ListenerTable, head: &FirstHead) -> Option<&'t Backend> {
    match head {
        FirstHead::Host(h) => listener.vhost(h)?.splice_backend(),
        FirstHead::Partial | FirstHead::Proxy => None,
    }
}

impl Proxy {
    /// Whether connections on listen mapping `index` may be spliced at all.
    pub(super) fn splice_possible(&self, index: usize) -> bool {
        !self.config().forwarded_headers
            && self.joiner().available()
            && self.table.load().listeners.get(index).is_some_and(|l| l.any_splice_safe())
    }

    /// Reads the first request head (bounded in size and time), routes it, and
    /// either splices the connection or hands it, bytes included, to hyper.
    pub(super) async fn peek_first(
        self: &Arc<Self>,
        mut stream: TcpStream,
        first: Bytes,
        index: usize,
        limit: Duration,
    ) -> Peeked {
        // `first`: what was read already (the preface sniff's read)
        let mut buf = Vec::from(first);
        let read_head = async {
            loop {
                match first_head(&buf) {
                    FirstHead::Partial if buf.len() > MAX_HEAD => return Ok(Some(FirstHead::Proxy)), // hyper answers 431
                    FirstHead::Partial => {}
                    head => return Ok(Some(head)),
                }
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Ok::<_, io::Error>(None);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        };
        let head = match tokio::time::timeout(limit, read_head).await {
            Ok(Ok(Some(head))) => head,
            // closed or failed before a whole head: nothing to serve
            Ok(Ok(None)) | Ok(Err(_)) => return Peeked::Done,
            Err(_) => {
                if !buf.is_empty() {
                    send_408(&mut stream).await;
                }
                return Peeked::Done;
            }
        };
        let table = self.table.load();
        let backend = table
            .listeners
            .get(index)
            .and_then(|l| splice_choice(l, &head))
            .map(|b| (b.name.clone(), self.endpoints.pick(b)));
        let prefixed = |stream, buf: Vec<u8>| Peeked::Proxy(ClientIo::new(stream, Bytes::from(buf)));
        let Some((backend, Some(endpoint))) = backend else { return prefixed(stream, buf) };
        drop(table);
        let upstream = match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(endpoint)).await {
            Ok(Ok(u)) => u,
            // Let the proxy path answer (it tries other endpoints, or says 503).
            _ => return prefixed(stream, buf),
        };
        let _ = upstream.set_nodelay(true);
        self.metrics.request();
        tracing::debug!(%endpoint, %backend, "connection spliced to the pod");
        let (class, mode) = (crate::datapath::join_choice::JoinClass::SpliceSafe, self.config().join_mode);
        self.joiner().run_chosen(class, mode, stream, Bytes::from(buf), upstream, Bytes::new()).await;
        Peeked::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::RequestHead;

    #[test]
    fn only_heads_of_lasting_connections_are_spliced() {
        let host = |h: &str| FirstHead::Host(h.into());
        assert_eq!(first_head(b"GET / HTTP/1.1\r\nHost: a.test:9080\r\n\r\n"), host("a.test"));
        assert_eq!(first_head(b"GET / HTTP/1.1\r\nHost: a.test\r\n"), FirstHead::Partial, "incomplete");
        let close = b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: keep-alive, Close\r\n\r\n";
        assert_eq!(first_head(close), FirstHead::Proxy);
        assert_eq!(first_head(b"GET / HTTP/1.0\r\nHost: a.test\r\n\r\n"), FirstHead::Proxy, "HTTP/1.0 closes");
        assert_eq!(first_head(b"GET /\r\n\r\n"), FirstHead::Proxy, "malformed: hyper answers");
        let absolute = b"GET http://proxied.test/api/abs HTTP/1.1\r\nHost: bound.test\r\n\r\n";
        assert_eq!(first_head(absolute), FirstHead::Proxy, "absolute-form: the proxy rewrites the target");
        assert_eq!(first_head(b"GET / HTTP/1.1\r\n\r\n"), FirstHead::Proxy, "no Host");
        assert_eq!(
            first_head(b"GET / HTTP/1.1\r\nHost: a.test\r\nhost: a.test\r\n\r\n"),
            FirstHead::Proxy,
            "two Hosts"
        );
    }

    #[test]
    fn heads_the_proxy_would_change_or_refuse_are_not_spliced() {
        let head = |line: &str, fields: &str| first_head(format!("{line} HTTP/1.1\r\n{fields}\r\n").as_bytes());
        let host = "Host: a.test\r\n";
        assert_eq!(head("GET /api/x/", host), FirstHead::Host("a.test".into()), "a normal path is joined");
        for path in ["/api/../secret", "//secret", "/api/%2e%2e/secret", "/%61pi", "/a\\b", "/a%zz", "*"] {
            assert_eq!(head(&format!("GET {path}"), host), FirstHead::Proxy, "{path}: the proxy normalizes or refuses");
        }
        for fields in [
            "Host: a.test\r\nTransfer-Encoding: gzip, chunked\r\n",
            "Host: a.test\r\nTransfer-Encoding: chunked\r\n",
            "Host: a@b\r\n",
            "Host: a.test:99999\r\n",
            "Host: a b\r\n",
        ] {
            assert_eq!(head("POST /x", fields), FirstHead::Proxy, "{fields:?}");
        }
        assert_eq!(head("CONNECT a.test:443", host), FirstHead::Proxy);
    }

    /// The router's view of a head, as the proxy builds it from what hyper parsed:
    /// the backend of the rule it reaches, or why it answers itself.
    fn router_choice(listener: &ListenerTable, buf: &[u8]) -> Result<String, String> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        req.parse(buf).map_err(|e| format!("400 {e}"))?;
        let uri: http::Uri = req.path.unwrap_or("").parse().map_err(|e| format!("400 {e}"))?;
        let mut map = http::HeaderMap::new();
        for h in req.headers.iter() {
            let name = http::HeaderName::from_bytes(h.name.as_bytes()).map_err(|e| format!("400 {e}"))?;
            map.append(name, http::HeaderValue::from_bytes(h.value).map_err(|e| format!("400 {e}"))?);
        }
        let fields = map.get_all(http::header::HOST).iter().map(|v| v.as_bytes());
        let (host, _) =
            request_host(uri.authority().map(|a| a.as_str()), fields).map_err(|p| p.message().to_string())?;
        let head = RequestHead {
            method: req.method.unwrap_or("GET"),
            host: &host,
            path: uri.path(),
            query: uri.query(),
            headers: &map,
        };
        let m = listener.find(&head).ok_or("404")?;
        if !m.rule.filters.is_empty() {
            return Err(format!("filters on {}", m.rule.route.name));
        }
        m.rule.backends.first().map(|b| b.name.clone()).ok_or_else(|| "500 no backend".into())
    }

    #[test]
    fn a_joined_connection_goes_where_the_router_sends_its_first_request() {
        let t = crate::routing::tests::openchoreo_fixture_table();
        let spliced = ["react-starter-development.openchoreovm-apis.localhost", "api.openchoreovm.localhost"];
        let proxied = ["development.openchoreovm-apis.localhost", "nowhere.test"];
        let hosts: Vec<String> = spliced
            .iter()
            .chain(&proxied)
            .flat_map(|h| {
                [h.to_string(), format!("{h}:9080"), format!("{h}:8080"), h.to_ascii_uppercase(), format!("{h}.")]
            })
            .collect();
        let mut heads: Vec<Vec<u8>> = Vec::new();
        for h in &hosts {
            for other in spliced.iter().chain(&proxied) {
                for target in [
                    "/".to_string(),
                    "/greeter-service/greeter/greet".into(),
                    format!("http://{other}/api/abs"),
                    format!("http://{other}:9080/x?q=1"),
                ] {
                    heads.push(format!("GET {target} HTTP/1.1\r\nHost: {h}\r\n\r\n").into_bytes());
                    heads.push(format!("GET {target} HTTP/1.1\r\nHost: {h}\r\nHost: {other}\r\n\r\n").into_bytes());
                    heads.push(
                        format!("POST {target} HTTP/1.1\r\nhost:  {h} \r\ncontent-length: 0\r\n\r\n").into_bytes(),
                    );
                }
            }
            heads.push(format!("OPTIONS * HTTP/1.1\r\nHost: {h}\r\n\r\n").into_bytes());
            heads.push(format!("GET / HTTP/1.0\r\nHost: {h}\r\n\r\n").into_bytes());
        }
        heads.push(b"GET / HTTP/1.1\r\n\r\n".to_vec());
        heads.push(b"GET / HTTP/1.1\r\nHost: \r\n\r\n".to_vec());
        heads.push(b"GET / HTTP/1.1\r\nHost: [::1]:9080\r\n\r\n".to_vec());
        let (mut joined, mut compared) = (0, 0);
        for (i, l) in t.listeners.iter().enumerate() {
            for head in &heads {
                compared += 1;
                let text = String::from_utf8_lossy(head);
                let Some(b) = splice_choice(l, &first_head(head)) else { continue };
                joined += 1;
                assert_eq!(router_choice(l, head).as_deref(), Ok(b.name.as_str()), "listener {i}: {text}");
            }
        }
        // the joins that should happen do: the splice-safe host by Host, with or without a port
        for (i, host) in
            [(1, "react-starter-development.openchoreovm-apis.localhost:9080"), (0, "API.openchoreovm.localhost")]
        {
            let head = format!("GET /x HTTP/1.1\r\nHost: {host}\r\n\r\n");
            assert!(splice_choice(&t.listeners[i], &first_head(head.as_bytes())).is_some(), "{head}");
        }
        let abs = b"GET http://development.openchoreovm-apis.localhost/greeter-service/greeter/greet HTTP/1.1\r\nHost: react-starter-development.openchoreovm-apis.localhost\r\n\r\n";
        assert!(
            splice_choice(&t.listeners[1], &first_head(abs)).is_none(),
            "the authority wins: no join for Host's backend"
        );
        assert!(joined > 20 && compared > 1000, "{joined} joins of {compared} heads");
    }
}
