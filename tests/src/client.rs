//! A small blocking HTTP/1.1 client for tests: builds a request, reads one response
//! (Content-Length, chunked or until close), counts a large one without keeping it,
//! and reads a connection to its close (telling a close from a timeout).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A request to send; `host` goes in the Host header as is (it may carry a port).
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub host: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn get(host: &str, path: &str) -> Self {
        Self { method: "GET".into(), path: path.into(), host: Some(host.into()), headers: vec![], body: vec![] }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn method(mut self, m: &str) -> Self {
        self.method = m.into();
        self
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = format!("{} {} HTTP/1.1\r\n", self.method, self.path);
        if let Some(h) = &self.host {
            s += &format!("Host: {h}\r\n");
        }
        for (n, v) in &self.headers {
            s += &format!("{n}: {v}\r\n");
        }
        if !self.body.is_empty() {
            s += &format!("Content-Length: {}\r\n", self.body.len());
        }
        s += "\r\n";
        let mut b = s.into_bytes();
        b.extend_from_slice(&self.body);
        b
    }
}

#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    /// Lowercase names; repeated headers joined with ", ".
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// Trailer fields of a chunked body, by lowercase name.
    pub trailers: BTreeMap<String, String>,
}

impl Response {
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("response body is not the expected JSON ({e}): {}", String::from_utf8_lossy(&self.body))
        })
    }
}

/// Sends one request on a new connection and reads the response (bounded by `timeout`).
pub fn send(addr: SocketAddr, req: &Request, timeout: Duration) -> std::io::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(&req.to_bytes())?;
    read_response(&mut BufReader::new(s), req.method == "HEAD")
}

/// Headers by lowercase name; repeated ones joined with ", ".
pub fn header_map(headers: &[httparse::Header<'_>]) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for h in headers {
        let v = String::from_utf8_lossy(h.value).to_string();
        map.entry(h.name.to_ascii_lowercase()).and_modify(|e: &mut String| e.push_str(&format!(", {v}"))).or_insert(v);
    }
    map
}

fn io_error(kind: std::io::ErrorKind, what: impl Into<String>) -> std::io::Error {
    std::io::Error::new(kind, what.into())
}

/// Reads a response head: (status, headers by lowercase name).
fn read_head(r: &mut impl BufRead) -> std::io::Result<(u16, BTreeMap<String, String>)> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Err(io_error(std::io::ErrorKind::UnexpectedEof, "connection closed before a response"));
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" {
            break;
        }
    }
    let mut hdrs = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut hdrs);
    resp.parse(&head).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    Ok((resp.code.unwrap_or(0), header_map(resp.headers)))
}

/// Copies exactly `n` bytes (fewer: the connection closed, an error).
fn exactly(r: &mut impl BufRead, n: u64, out: &mut impl Write) -> std::io::Result<u64> {
    let got = std::io::copy(&mut r.take(n), out)?;
    if got != n {
        return Err(io_error(std::io::ErrorKind::UnexpectedEof, format!("body cut after {got} of {n} bytes")));
    }
    Ok(got)
}

/// Reads the body the head announced into `out` (chunked, Content-Length, or until
/// close), the trailers of a chunked one into `trailers`. Returns its length. A body
/// cut short is an error.
fn read_body(
    r: &mut impl BufRead,
    headers: &BTreeMap<String, String>,
    out: &mut impl Write,
    trailers: &mut BTreeMap<String, String>,
) -> std::io::Result<u64> {
    if headers.get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut total = 0;
        loop {
            let mut line = String::new();
            r.read_line(&mut line)?;
            let n = chunk_size(&line)? as u64;
            if n == 0 {
                loop {
                    let mut t = String::new();
                    if r.read_line(&mut t)? == 0 || t.trim().is_empty() {
                        return Ok(total);
                    }
                    if let Some((n, v)) = t.split_once(':') {
                        trailers.insert(n.trim().to_ascii_lowercase(), v.trim().to_string());
                    }
                }
            }
            total += exactly(r, n, out)?;
            let mut crlf = String::new();
            r.read_line(&mut crlf)?;
        }
    } else if let Some(n) = headers.get("content-length").and_then(|v| v.trim().parse::<u64>().ok()) {
        exactly(r, n, out)
    } else {
        std::io::copy(r, out)
    }
}

pub fn read_response(r: &mut impl BufRead, head_only: bool) -> std::io::Result<Response> {
    let (status, headers) = read_head(r)?;
    let mut body = Vec::new();
    let mut trailers = BTreeMap::new();
    if !head_only && status != 204 && status != 304 {
        read_body(r, &headers, &mut body, &mut trailers)?;
    }
    Ok(Response { status, headers, body, trailers })
}

/// The size on a chunk-size line (`1a`, `1a;ext=v`, CRLF). An unparsable line, or
/// none (the connection closed), is an error: a body cut there did not end.
pub fn chunk_size(line: &str) -> std::io::Result<usize> {
    let hex = line.trim_end_matches(['\r', '\n']).split(';').next().unwrap_or("").trim();
    usize::from_str_radix(hex, 16)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad chunk size line {line:?}: {e}")))
}

/// Reads one response and counts its body without keeping it: (status, body bytes).
/// For bodies too large to hold (the gibibyte tests).
pub fn read_counting(r: &mut impl BufRead) -> std::io::Result<(u16, u64)> {
    read_into(r, &mut std::io::sink())
}

/// Reads one response, its body written to `out` as it arrives: (status, body bytes).
pub fn read_into(r: &mut impl BufRead, out: &mut impl Write) -> std::io::Result<(u16, u64)> {
    let (status, headers) = read_head(r)?;
    let n = read_body(r, &headers, out, &mut BTreeMap::new())?;
    Ok((status, n))
}

/// How a connection that was read to its end ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// The peer closed it (FIN).
    Eof,
    /// The peer reset it (RST).
    Reset,
}

/// Reads `r` until the peer closes the connection, appending what arrives to `out`.
/// A read timeout (the socket's) or any other error is an `Err`: "then the
/// connection is closed" must not pass because nothing happened until the timeout.
pub fn read_until_closed(r: &mut impl Read, out: &mut Vec<u8>) -> std::io::Result<Closed> {
    match r.read_to_end(out) {
        Ok(_) => Ok(Closed::Eof),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(Closed::Reset),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bytes() {
        let r = Request::get("api.openchoreovm.localhost:8080", "/x?y=1").header("X-A", "b");
        assert_eq!(
            String::from_utf8(r.to_bytes()).unwrap(),
            "GET /x?y=1 HTTP/1.1\r\nHost: api.openchoreovm.localhost:8080\r\nX-A: b\r\n\r\n"
        );
    }

    #[test]
    fn parses_content_length_and_chunked() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Pod: a\r\n\r\nhello";
        let r = read_response(&mut &raw[..], false).unwrap();
        assert_eq!((r.status, r.body.as_slice(), r.headers["x-pod"].as_str()), (200, &b"hello"[..], "a"));
        let raw =
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: 9\r\n\r\n";
        let r = read_response(&mut &raw[..], false).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"abcde"[..]));
        assert_eq!(r.trailers["x-sum"], "9");
    }

    #[test]
    fn an_unparsable_chunk_size_is_an_error_not_the_end() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"[..],
            // cut before the last chunk: no size line at all
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
        ] {
            let e = read_response(&mut &raw[..], false).expect_err("not a complete body");
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
            let e = read_counting(&mut &raw[..]).expect_err("not a complete body");
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
        }
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n0\r\n\r\n";
        assert_eq!(read_response(&mut &raw[..], false).unwrap().body, b"abc", "a chunk extension is ignored");
        assert_eq!(read_counting(&mut &raw[..]).unwrap(), (200, 3));
    }

    #[test]
    fn a_read_timeout_is_not_a_close() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut peer, _) = l.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut out = Vec::new();
        let e = read_until_closed(&mut c, &mut out).expect_err("the peer is still open");
        assert!(matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut), "{e}");
        peer.write_all(b"bye").unwrap();
        drop(peer);
        assert_eq!(read_until_closed(&mut c, &mut out).unwrap(), Closed::Eof);
        assert_eq!(out, b"bye");
    }
}
