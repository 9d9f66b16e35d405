//! A small keep-alive HTTP/1.1 client for load generators (`minipay bench orders`, the
//! notification benchmark).
//!
//! The load generator shares the two cores with the service it measures, so what it costs
//! per request is taken from the figure being measured. A general client (reqwest: pool,
//! URL parsing, header maps, per-request allocation of a body and a response object) cost
//! about 8 % of all CPU samples during the notification benchmark. This one keeps one
//! connection per task, writes a request built by the caller in one `write_all`, and reads
//! exactly one response (status line, `Content-Length`, body). It speaks only what our own
//! services answer: no chunked bodies, no `100 Continue`, no redirects; anything else is an
//! error. Not for talking to servers we do not control.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The runtime a load generator's clients run on: one thread of their own. The clients
/// stand for WeChat's servers or the client backends, which are not part of the service;
/// on the service's runtime they would delay the group commits that run there. Shut it
/// down with `shutdown_background` (or drop it outside async code).
pub fn client_runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).thread_name("loadgen").enable_all().build()
}

/// The `p` quantile (0..=1) of sorted latencies, nearest-rank; zero when empty.
pub fn percentile(sorted: &[std::time::Duration], p: f64) -> std::time::Duration {
    if sorted.is_empty() {
        return std::time::Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

/// A response: status code and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// One keep-alive connection.
pub struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

/// The request head + body of a POST (`headers` are complete `Name: value` lines).
pub fn post(host: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(256 + body.len());
    r.extend_from_slice(
        format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n", body.len()).as_bytes(),
    );
    for (k, v) in headers {
        r.extend_from_slice(k.as_bytes());
        r.extend_from_slice(b": ");
        r.extend_from_slice(v.as_bytes());
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(body);
    r
}

impl Connection {
    pub async fn connect(addr: &str) -> io::Result<Connection> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Connection { stream, buf: Vec::with_capacity(8192) })
    }

    /// Sends a complete request (see [`post`]) and reads its response.
    pub async fn send(&mut self, request: &[u8]) -> io::Result<Response> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).map_err(|_| bad("non-UTF-8 response head"))?;
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.strip_prefix("HTTP/1.1 "))
            .and_then(|l| l.get(..3))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("bad status line"))?;
        let mut length = None;
        for line in lines {
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = Some(v.trim().parse::<usize>().map_err(|_| bad("bad Content-Length"))?);
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    return Err(bad("chunked responses are not supported"));
                }
            }
        }
        let length = length.ok_or_else(|| bad("response without Content-Length"))?;
        while self.buf.len() < head_end + length {
            self.fill().await?;
        }
        if self.buf.len() > head_end + length {
            return Err(bad("more bytes than one response (no pipelining here)"));
        }
        Ok(Response { status, body: self.buf[head_end..].to_vec() })
    }

    async fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-response"));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    #[tokio::test]
    async fn two_requests_on_one_connection_and_split_reads() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            for answer in ["hello", "world!"] {
                let mut b = [0u8; 1024];
                loop {
                    let n = s.read(&mut b).await.unwrap();
                    got.extend_from_slice(&b[..n]);
                    if got.ends_with(b"xyz") {
                        break;
                    }
                }
                got.clear();
                let head = format!("HTTP/1.1 201 Created\r\ncontent-length: {}\r\n\r\n", answer.len());
                // The head and the body arrive in separate writes.
                s.write_all(head.as_bytes()).await.unwrap();
                s.flush().await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                s.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let mut c = Connection::connect(&addr).await.unwrap();
        let req = post(&addr, "/x", &[("content-type", "text/plain")], b"xyz");
        assert!(std::str::from_utf8(&req).unwrap().contains("Content-Length: 3\r\n"));
        let r = c.send(&req).await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (201, b"hello".as_slice()));
        let r = c.send(&req).await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (201, b"world!".as_slice()));
        server.await.unwrap();
    }
}
