//! HTTP/1.1 over a plain TCP socket, for requests that well-behaved clients refuse to send
//! (smuggling shapes, odd paths, raw `..` segments, missing or duplicate `Host`) and for
//! checking what happens to the connection afterwards (closed or kept alive).
//!
//! Reading is bounded: every read has a timeout, and a response that never completes is
//! returned as far as it got (status 0 when not even a status line arrived).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// One response read from a raw socket.
#[derive(Debug, Clone, Default)]
pub struct RawResponse {
    /// The status code; 0 when no status line arrived (connection closed or timed out).
    pub status: u16,
    /// The reason phrase.
    pub reason: String,
    /// Headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
    /// Whether the server closed the connection (EOF or reset seen).
    pub closed: bool,
}

impl RawResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Whether this is an `application/problem+json` answer.
    pub fn is_problem(&self) -> bool {
        self.header("content-type")
            .is_some_and(|ct| ct.starts_with("application/problem+json"))
    }

    /// Asserts that this is a problem+json answer with `status` (see
    /// [`crate::assert_problem`]).
    pub fn assert_problem(&self, status: u16) -> serde_json::Value {
        assert_eq!(self.status, status, "unexpected status; response: {self:?}");
        crate::client::check_problem(
            status,
            self.header("content-type"),
            self.header("x-request-id"),
            &self.body,
        )
    }
}

/// A client connection that can carry several requests in sequence.
#[derive(Debug)]
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
    last_was_head: bool,
}

impl RawConn {
    /// Connects to `addr` (bounded: 2 s), with a 5 s read timeout; panics when it cannot.
    pub fn connect(addr: SocketAddr) -> RawConn {
        RawConn::try_connect(addr, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    /// Connects to `addr` (bounded: `timeout`), with a 5 s read timeout.
    pub fn try_connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<RawConn> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        let _ = stream.set_nodelay(true);
        Ok(RawConn {
            stream,
            buf: Vec::new(),
            eof: false,
            last_was_head: false,
        })
    }

    /// Sets the timeout of every read.
    pub fn set_read_timeout(&mut self, timeout: Duration) {
        self.stream
            .set_read_timeout(Some(timeout))
            .expect("read timeout");
    }

    /// Writes `bytes` as they are. Write errors (the server already closed) are ignored:
    /// what matters is what can still be read.
    pub fn send(&mut self, bytes: &[u8]) {
        self.last_was_head = bytes.starts_with(b"HEAD ");
        let _ = self.stream.write_all(bytes);
        let _ = self.stream.flush();
    }

    /// Sends `bytes` and reads one response.
    pub fn request(&mut self, bytes: &[u8]) -> RawResponse {
        self.send(bytes);
        self.read_response()
    }

    /// Reads more bytes into the buffer; false on EOF, reset or timeout.
    fn fill(&mut self) -> bool {
        if self.eof {
            return false;
        }
        let mut chunk = [0u8; 16384];
        match self.stream.read(&mut chunk) {
            Ok(0) => {
                self.eof = true;
                false
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(e) if e.kind() == ErrorKind::Interrupted => true,
            Err(_) => {
                self.eof = true;
                false
            }
        }
    }

    fn take_line(&mut self) -> Option<String> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..pos]).into_owned();
                self.buf.drain(..pos + 2);
                return Some(line);
            }
            if !self.fill() {
                return None;
            }
        }
    }

    fn take_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            if !self.fill() {
                break;
            }
        }
        let n = n.min(self.buf.len());
        self.buf.drain(..n).collect()
    }

    /// Reads one response (skipping `1xx` interim answers other than 101).
    pub fn read_response(&mut self) -> RawResponse {
        self.read_next(false)
    }

    /// Reads the next head, an interim one (`100 Continue`) too.
    pub fn read_interim(&mut self) -> RawResponse {
        self.read_next(true)
    }

    fn read_next(&mut self, interim: bool) -> RawResponse {
        loop {
            let mut resp = RawResponse::default();
            // Head.
            let head_end = loop {
                if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break Some(p);
                }
                if !self.fill() {
                    break None;
                }
            };
            let Some(_) = head_end else {
                // Nothing complete: return what we know.
                resp.closed = self.eof;
                if !self.buf.is_empty() {
                    resp.reason =
                        format!("incomplete head: {:?}", String::from_utf8_lossy(&self.buf));
                }
                return resp;
            };
            let status_line = self.take_line().unwrap_or_default();
            let mut parts = status_line.splitn(3, ' ');
            let _version = parts.next();
            resp.status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            resp.reason = parts.next().unwrap_or("").to_string();
            while let Some(line) = self.take_line() {
                if line.is_empty() {
                    break;
                }
                if let Some((n, v)) = line.split_once(':') {
                    resp.headers
                        .push((n.trim().to_string(), v.trim().to_string()));
                }
            }
            if (100..200).contains(&resp.status) && resp.status != 101 {
                if interim {
                    return resp;
                }
                continue;
            }
            // Body.
            let no_body = self.last_was_head
                || (100..200).contains(&resp.status)
                || resp.status == 204
                || resp.status == 304;
            if !no_body {
                let chunked = resp
                    .header("transfer-encoding")
                    .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
                if chunked {
                    while let Some(size_line) = self.take_line() {
                        let size_hex = size_line.split(';').next().unwrap_or("").trim();
                        let size = usize::from_str_radix(size_hex, 16).unwrap_or(0);
                        if size == 0 {
                            // Trailers until the empty line.
                            while let Some(l) = self.take_line() {
                                if l.is_empty() {
                                    break;
                                }
                            }
                            break;
                        }
                        let data = self.take_exact(size);
                        resp.body.extend_from_slice(&data);
                        let _ = self.take_line();
                    }
                } else if let Some(len) = resp
                    .header("content-length")
                    .and_then(|l| l.trim().parse::<usize>().ok())
                {
                    resp.body = self.take_exact(len);
                } else {
                    // Delimited by close.
                    while self.fill() {}
                    resp.body = std::mem::take(&mut self.buf);
                }
            }
            resp.closed = self.eof;
            return resp;
        }
    }

    /// Waits (at most `timeout`) for the server to close the connection; true when it did.
    /// Bytes that arrive meanwhile are kept in the buffer.
    pub fn wait_closed(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.eof {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let _ = self
                .stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))));
            let before = self.buf.len();
            if !self.fill() && !self.eof && self.buf.len() == before {
                // Timed out.
                break;
            }
        }
        let _ = self.stream.set_read_timeout(Some(Duration::from_secs(5)));
        self.eof
    }
}

/// Sends `bytes` on a new connection, reads one response, then waits up to 2 s to see
/// whether the server closes the connection ([`RawResponse::closed`]).
pub fn send_raw(addr: SocketAddr, bytes: &[u8]) -> RawResponse {
    let mut conn = RawConn::connect(addr);
    let mut resp = conn.request(bytes);
    resp.closed = conn.wait_closed(Duration::from_secs(2));
    resp
}

/// `GET target` with `Host: host` and `Connection: close` (plus `extra` header lines, each
/// without CRLF) on a new connection; the path goes out exactly as given.
pub fn raw_get(addr: SocketAddr, target: &str, extra: &[&str]) -> RawResponse {
    let mut req = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for h in extra {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    let mut conn = RawConn::connect(addr);
    let mut resp = conn.request(req.as_bytes());
    resp.closed = conn.wait_closed(Duration::from_secs(2));
    resp
}

/// Reads from `stream` until a blank line ends a head (bounded: at most 64 reads, each
/// under the stream's own read timeout), and returns what was read, the head and anything
/// after it in the same reads. Stops early at EOF or on an error.
pub fn read_head(stream: &mut impl Read) -> Vec<u8> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..64 {
        let n = stream.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    head
}
