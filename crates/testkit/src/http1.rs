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

/// Open loop: request `k` is due at `k / rate` seconds after the start, whether or not
/// earlier ones have been answered, as independent senders (WeChat's servers, the payers
/// of many mini-programs) send them. Up to `connections` requests are in flight; when all
/// are busy the next waits for one, and that wait counts in its latency, which is measured
/// from when it was due (so a service that falls behind shows it in the percentiles
/// instead of silently lowering the offered rate). `request(k)` picks the bytes to send
/// for request `k`; `judge` says whether an answer counts as a success (a connection that
/// fails or takes over 30 s is replaced and counts as a failure). Returns per request
/// (in order) whether it succeeded and its latency, and the wall time until the last answer.
pub async fn open_loop(
    addr: &str,
    requests: std::sync::Arc<Vec<Vec<u8>>>,
    total: usize,
    request: impl Fn(usize) -> usize,
    judge: fn(&Response) -> bool,
    rate: f64,
    connections: usize,
) -> io::Result<(Vec<(bool, std::time::Duration)>, std::time::Duration)> {
    use std::time::Duration;
    let (idle_tx, mut idle) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..connections {
        idle_tx.send(Connection::connect(addr).await?).map_err(|_| bad("connection queue closed"))?;
    }
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for k in 0..total {
        let due = started + Duration::from_secs_f64(k as f64 / rate);
        tokio::time::sleep_until(due).await;
        let mut c = idle.recv().await.ok_or_else(|| bad("connections did not come back"))?;
        let (requests, idle_tx, addr, i) = (requests.clone(), idle_tx.clone(), addr.to_owned(), request(k));
        tasks.push(tokio::spawn(async move {
            let ok = match tokio::time::timeout(Duration::from_secs(30), c.send(&requests[i])).await {
                Ok(Ok(r)) => judge(&r),
                _ => {
                    c = Connection::connect(&addr).await?;
                    false
                }
            };
            let latency = due.elapsed();
            let _ = idle_tx.send(c);
            io::Result::Ok((ok, latency))
        }));
    }
    let mut results = Vec::with_capacity(total);
    for t in tasks {
        results.push(t.await.map_err(io::Error::other)??);
    }
    Ok((results, started.elapsed()))
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

    #[tokio::test]
    async fn the_open_loop_sends_on_schedule_and_judges_every_answer() {
        // A server that answers request bodies "ok" with 201 and anything else with 409, each
        // after 20 ms: with 3 connections, 30 requests due over 0.1 s must queue, and the
        // queueing shows in the latencies (measured from when each was due).
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut b = [0u8; 1024];
                    while let Ok(n) = s.read(&mut b).await {
                        if n == 0 {
                            break;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        let status = if b[..n].ends_with(b"ok") { "201 Created" } else { "409 Conflict" };
                        s.write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                            .await
                            .unwrap();
                    }
                });
            }
        });
        let requests = std::sync::Arc::new(vec![post(&addr, "/", &[], b"ok"), post(&addr, "/", &[], b"no")]);
        let (results, wall) =
            open_loop(&addr, requests, 30, |k| usize::from(k % 10 == 9), |r| r.status == 201, 300.0, 3).await.unwrap();
        assert_eq!(results.len(), 30);
        assert_eq!(results.iter().filter(|(ok, _)| !ok).count(), 3, "requests 9, 19, 29 were refused");
        // 30 requests, 3 at a time, 20 ms each: at least 200 ms, whatever the schedule said.
        assert!(wall >= std::time::Duration::from_millis(200), "{wall:?}");
        let last = results.last().unwrap().1;
        assert!(last >= std::time::Duration::from_millis(100), "the last one waited its turn: {last:?}");
    }
}
