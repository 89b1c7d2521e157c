//! The CLI's client of the admin endpoint (hyper, HTTP/1.1, one request per call).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

/// Time to connect, and then for the whole answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// `GET path` on the agent's admin endpoint: the body of a 200, else an error that
/// says what the agent answered.
pub async fn get(addr: SocketAddr, path: &str) -> Result<String> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow::anyhow!("timed out"))
        .and_then(|r| r.map_err(anyhow::Error::from))
        .with_context(|| {
            format!("cannot reach the agent's admin endpoint at {addr} (is `ingress run` running? see --admin)")
        })?;
    let answer = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = Request::get(path).header(http::header::HOST, addr.to_string()).body(Empty::<bytes::Bytes>::new())?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    let (status, body) = tokio::time::timeout(ANSWER_TIMEOUT, answer)
        .await
        .map_err(|_| anyhow::anyhow!("the admin endpoint at {addr} did not answer within {ANSWER_TIMEOUT:?}"))??;
    if status != StatusCode::OK {
        bail!("admin endpoint answered {status}: {}", body.trim());
    }
    Ok(body)
}

/// `GET path`, parsed as the typed view `T` (`StatsView`, `RoutesView`).
pub async fn get_json<T: DeserializeOwned>(addr: SocketAddr, path: &str) -> Result<T> {
    let body = get(addr, path).await?;
    serde_json::from_str(&body).with_context(|| format!("parsing the agent's {path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-shot HTTP server on loopback answering `status` with `body`.
    async fn answer_once(status: &'static str, body: &'static str) -> SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let resp = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n{body}", body.len());
            s.write_all(resp.as_bytes()).await.unwrap();
        });
        addr
    }

    #[tokio::test]
    async fn a_200_gives_the_body_and_other_statuses_an_error_with_the_answer() {
        let addr = answer_once("200 OK", "{\"a\": 1}").await;
        let v: serde_json::Value = get_json(addr, "/stats").await.unwrap();
        assert_eq!(v["a"], 1);
        let addr = answer_once("503 Service Unavailable", "no routing table loaded yet\n").await;
        let e = get(addr, "/readyz").await.unwrap_err().to_string();
        assert!(e.contains("503") && e.contains("no routing table loaded yet"), "{e}");
    }

    #[tokio::test]
    async fn no_agent_is_a_clear_error() {
        // a bound, non-listening socket: its port refuses connections, and no other
        // test can take it while it is held
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = s.local_addr().unwrap();
        let e = format!("{:#}", get(addr, "/stats").await.unwrap_err());
        assert!(e.contains("is `ingress run` running?"), "{e}");
    }
}
