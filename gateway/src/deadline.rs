//! A deadline on reading each request head, against slow-loris clients.
//!
//! Pingora times out each *read* (60 s by default), so a client trickling one byte every
//! few seconds keeps a connection and a task forever. [`HeaderDeadline`] wraps the
//! accepted stream: from the moment a connection opens, and from the first byte of each
//! later request on a keep-alive connection, the whole head (up to the blank line) must
//! arrive within the limit, else the read fails and the connection is closed.
//!
//! The head's end is found by watching for `\r\n\r\n` (or `\n\n`) in the bytes read. A
//! request body that contains those bytes only ends the watch early (the server's own
//! per-read timeout still applies), so the error is always on the lenient side.
//!
//! The same wrapper closes an HTTP/1 keep-alive connection that stays idle (no byte of a
//! next request) longer than the keep-alive timeout after the last byte of an answer. It
//! replaces Pingora's keep-alive timeout, which registers a timer for every request
//! (~1k instructions each under callgrind): here the head deadline's timer is only
//! re-armed when it fires before the connection has been idle that long, so a busy
//! connection costs one clock read per answer write, and a flag the proxy sets for each
//! request ([`HeaderDeadline::serving`]: a pipelined request may have been read with the
//! one before, leaving the wrapper nothing to see).

use crate::connections::{ConnectionLimit, ConnectionSlot};
use crate::proxy_protocol::ProxyProtocol;
use async_trait::async_trait;
use bytes::BytesMut;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::Stream;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora_core::server::ShutdownWatch;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Where the watch for the end of a head stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a head: the deadline runs.
    InHead,
    /// Head done; reading a body or waiting for our answer.
    AfterHead,
    /// Our answer was written: the next byte starts a new head.
    Idle,
    /// HTTP/2, or a connection upgraded by a `101` (their frames have no heads to time):
    /// no deadline on this connection from now on.
    Off,
}

/// The HTTP/2 connection preface's first line.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// The whole HTTP/2 connection preface (RFC 9113 §3.4).
const H2_FULL_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A stream whose request heads must arrive within a time limit.
///
/// The timer costs nothing while heads arrive whole: it is only looked at when a read of a
/// head would wait (`Pending`) or returns part of a head, and only re-armed when a head on
/// a keep-alive connection arrives in more than one read.
#[derive(Debug)]
pub struct HeaderDeadline {
    inner: Stream,
    limit: Duration,
    /// How long the connection may stay idle between requests.
    idle_limit: Duration,
    /// The last write of an answer, while `phase` is `Idle`.
    idle_since: Instant,
    /// A request is being served that Pingora parsed from bytes read with the one before
    /// (pipelined): the connection is not idle though `phase` says so. Set by the proxy
    /// for every HTTP/1 request ([`HeaderDeadline::serving`]), cleared by its answer.
    serving: AtomicBool,
    phase: Phase,
    /// The current head's deadline while `phase` is `InHead`; while `Idle`, a time at or
    /// before the end of the idle period (looked at again when it fires).
    sleep: Pin<Box<Sleep>>,
    /// Last bytes seen (the most recent in the low byte), to find a head end split across
    /// reads.
    tail: u32,
    /// Nothing has been read yet.
    fresh: bool,
    /// The current head has shown nothing but empty lines yet.
    blank: bool,
    /// Bytes [`Peek::try_peek`] read, handed out by the next reads before the stream's.
    peeked: BytesMut,
    /// The connection's place under the connection cap, freed with the stream.
    _slot: Option<ConnectionSlot>,
}

impl HeaderDeadline {
    /// Wrap a freshly accepted stream, opened at `opened`: the first head's deadline is
    /// counted from then. Between requests it may stay idle for `idle_limit`.
    pub fn new(
        inner: Stream,
        limit: Duration,
        idle_limit: Duration,
        opened: Instant,
    ) -> HeaderDeadline {
        HeaderDeadline {
            inner,
            limit,
            idle_limit,
            idle_since: opened,
            serving: AtomicBool::new(false),
            phase: Phase::InHead,
            sleep: Box::pin(tokio::time::sleep_until(opened + limit)),
            tail: 0,
            fresh: true,
            blank: true,
            peeked: BytesMut::new(),
            _slot: None,
        }
    }

    /// A request on this connection is being served (until its answer is written): the
    /// connection is not idle, whatever was read.
    pub fn serving(&self) {
        self.serving.store(true, Ordering::Relaxed);
    }

    /// Hold `slot` (under the connection cap) for as long as the stream lives.
    pub fn holding(mut self, slot: ConnectionSlot) -> HeaderDeadline {
        self._slot = Some(slot);
        self
    }

    /// Read until `want` bytes are kept in `peeked`, the stream ends, or the bytes cannot
    /// be the start of the HTTP/2 preface (the only thing Pingora peeks for).
    async fn peek_preface(&mut self, want: usize) -> io::Result<()> {
        use tokio::io::AsyncReadExt;
        while self.peeked.len() < want
            && H2_FULL_PREFACE
                .starts_with(&self.peeked[..self.peeked.len().min(H2_FULL_PREFACE.len())])
        {
            self.peeked.reserve(1024);
            if self.inner.read_buf(&mut self.peeked).await? == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Some of an answer went out, starting with `start`: the next byte read starts a new
    /// head. Not after an interim answer (`100 Continue`: the body and then the final
    /// answer follow), and never again after a `101 Switching Protocols`, after which the
    /// connection carries another protocol (a WebSocket's frames), with no heads to time.
    fn answer_written(&mut self, start: &[u8]) {
        if self.phase == Phase::AfterHead {
            if start.starts_with(b"HTTP/1.1 101 ") {
                self.phase = Phase::Off;
            } else if !start.starts_with(b"HTTP/1.1 1") {
                self.phase = Phase::Idle;
            }
        }
    }

    fn timed_out() -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, "request head not received in time")
    }
}

/// Watch `bytes` for the end of a head: a line feed after an empty line (`\n\n` or
/// `\n\r\n`, which covers `\r\n\r\n`). `tail` carries the last bytes of earlier reads of
/// the same head (the most recent in the low byte). Lenient on purpose: ending the watch
/// early only leaves the server's per-read timeout in charge.
fn head_ends(tail: &mut u32, bytes: &[u8]) -> bool {
    // The common case first: a head read whole, the read ending where the head does.
    if bytes.ends_with(b"\n\r\n") || bytes.ends_with(b"\n\n") {
        *tail = 0;
        return true;
    }
    let last = *tail;
    let before = |p: usize, k: usize| -> u8 {
        if p >= k {
            bytes[p - k]
        } else {
            (last >> (8 * (k - p - 1))) as u8
        }
    };
    for p in memchr::memchr_iter(b'\n', bytes) {
        let b1 = before(p, 1);
        if b1 == b'\n' || (b1 == b'\r' && before(p, 2) == b'\n') {
            *tail = 0;
            return true;
        }
    }
    for &b in &bytes[bytes.len().saturating_sub(4)..] {
        *tail = (*tail << 8) | u32::from(b);
    }
    false
}

impl HeaderDeadline {
    fn scan(&mut self, bytes: &[u8]) {
        // Empty lines before a request line are no part of the head (RFC 9112 §2.2): they
        // must not be taken for its end, which would stop the deadline.
        let bytes = if self.blank {
            match bytes.iter().position(|&b| b != b'\r' && b != b'\n') {
                Some(i) => {
                    self.blank = false;
                    &bytes[i..]
                }
                None => return,
            }
        } else {
            bytes
        };
        if head_ends(&mut self.tail, bytes) {
            self.phase = Phase::AfterHead;
        }
    }
}

impl AsyncRead for HeaderDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let res = if this.peeked.is_empty() {
            Pin::new(&mut this.inner).poll_read(cx, buf)
        } else {
            let n = this.peeked.len().min(buf.remaining());
            buf.put_slice(&this.peeked.split_to(n));
            Poll::Ready(Ok(()))
        };
        match &res {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if new.is_empty() {
                    return res;
                }
                // "PRI" is no HTTP/1 method: three bytes tell the two apart.
                if std::mem::take(&mut this.fresh)
                    && new.len() >= 3
                    && H2_PREFACE.starts_with(&new[..new.len().min(H2_PREFACE.len())])
                {
                    this.phase = Phase::Off;
                }
                match this.phase {
                    Phase::Idle => {
                        // The first bytes of the next head: its deadline starts now, but the
                        // timer is only armed when the head did not come whole.
                        this.phase = Phase::InHead;
                        this.tail = 0;
                        this.blank = true;
                        this.scan(new);
                        if this.phase == Phase::InHead {
                            let deadline = Instant::now() + this.limit;
                            this.sleep.as_mut().reset(deadline);
                        }
                    }
                    Phase::InHead => {
                        this.scan(new);
                        if this.phase == Phase::InHead && this.sleep.deadline() <= Instant::now() {
                            return Poll::Ready(Err(Self::timed_out()));
                        }
                    }
                    Phase::AfterHead | Phase::Off => {}
                }
                res
            }
            Poll::Pending
                if this.phase == Phase::InHead && this.sleep.as_mut().poll(cx).is_ready() =>
            {
                Poll::Ready(Err(Self::timed_out()))
            }
            Poll::Pending if this.phase == Phase::Idle && !this.serving.load(Ordering::Relaxed) => {
                // Idle: the timer is only moved when it would fire late (still set for a
                // head deadline past the idle period's end), or when it fires early.
                let end = this.idle_since + this.idle_limit;
                if this.sleep.deadline() > end {
                    this.sleep.as_mut().reset(end);
                }
                while this.sleep.as_mut().poll(cx).is_ready() {
                    if end <= Instant::now() {
                        // Closed as Pingora closes an idle keep-alive connection: the
                        // read ends, no request follows.
                        return Poll::Ready(Ok(()));
                    }
                    this.sleep.as_mut().reset(end);
                }
                res
            }
            _ => res,
        }
    }
}

impl AsyncWrite for HeaderDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.answer_written(buf);
            if this.phase == Phase::Idle {
                this.idle_since = Instant::now();
                this.serving.store(false, Ordering::Relaxed);
            }
        }
        res
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            this.answer_written(first);
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for HeaderDeadline {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for HeaderDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeaderDeadline {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeaderDeadline {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeaderDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for HeaderDeadline {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, socket_digest: SocketDigest) {
        self.inner.set_socket_digest(socket_digest)
    }
}

#[async_trait]
/// Pingora peeks for the h2c preface (24 bytes) before it reads a connection's first
/// request. Its own stream's peek waits for all 24 bytes, so a shorter HTTP/1 request
/// (`GET / HTTP/1.0` and a blank line is 18) waited for the head deadline and was closed
/// unanswered. This peek stops as soon as the bytes cannot be the preface (or the stream
/// ends), and keeps what it read for the reads that follow; the head deadline holds.
impl Peek for HeaderDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        let want = buf.len();
        let read = if self.phase == Phase::InHead {
            let deadline = self.sleep.deadline();
            match tokio::time::timeout_at(deadline, self.peek_preface(want)).await {
                Ok(res) => res,
                Err(_) => Err(Self::timed_out()),
            }
        } else {
            self.peek_preface(want).await
        };
        read?;
        let n = self.peeked.len().min(want);
        buf[..n].copy_from_slice(&self.peeked[..n]);
        buf[n..].fill(0);
        Ok(true)
    }
}

/// A server app that wraps every accepted connection in a [`HeaderDeadline`] before
/// handing it to `inner` (the HTTP proxy), and closes it at once when `connections` has
/// no slot left for it. On a plain connection from a balancer that speaks the PROXY
/// protocol, the header is read first (the TLS listener reads it before its handshake).
#[derive(Debug)]
pub struct WithHeaderDeadline<A> {
    inner: Arc<A>,
    limit: Duration,
    idle_limit: Duration,
    connections: Arc<ConnectionLimit>,
    proxy_protocol: Option<Arc<ProxyProtocol>>,
}

impl<A> WithHeaderDeadline<A> {
    /// Wrap `inner`: request heads within `limit`, HTTP/1 keep-alive connections idle
    /// for at most `idle_limit`.
    pub fn new(
        inner: A,
        limit: Duration,
        idle_limit: Duration,
        connections: Arc<ConnectionLimit>,
    ) -> Self {
        WithHeaderDeadline {
            inner: Arc::new(inner),
            limit,
            idle_limit,
            connections,
            proxy_protocol: None,
        }
    }

    /// Read PROXY protocol headers as `pp` says (`--proxy-protocol`).
    pub fn with_proxy_protocol(mut self, pp: Arc<ProxyProtocol>) -> Self {
        self.proxy_protocol = Some(pp);
        self
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for WithHeaderDeadline<A> {
    async fn process_new(
        self: &Arc<Self>,
        session: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // Keep-alive reuse hands the same (already wrapped) stream back to us; wrap only new
        // connections, recognized by their type.
        let stream: Stream = if session.as_any().is::<HeaderDeadline>() {
            session
        } else {
            // Past the cap, dropping the stream closes it.
            let slot = self.connections.try_open()?;
            let opened = Instant::now();
            // A plain connection is Pingora's L4 stream; a TLS one had its header read.
            let session = match &self.proxy_protocol {
                Some(pp) if session.as_any().is::<L4Stream>() => {
                    let mut l4 = session.into_any().downcast::<L4Stream>().ok()?;
                    // Refused (and logged): dropping the stream closes it.
                    pp.accept(&mut l4, opened).await.ok()?;
                    l4
                }
                _ => session,
            };
            Box::new(
                HeaderDeadline::new(session, self.limit, self.idle_limit, opened).holding(slot),
            )
        };
        self.inner.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

#[cfg(test)]
mod tests {
    use super::head_ends;

    fn ends_after(reads: &[&[u8]]) -> Option<usize> {
        let mut tail = 0;
        reads.iter().position(|r| head_ends(&mut tail, r))
    }

    #[test]
    fn finds_the_end_of_a_head_in_one_read_or_split() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(ends_after(&[head]), Some(0));
        // Every split point, including inside the final CRLF CRLF.
        for cut in 1..head.len() {
            assert_eq!(
                ends_after(&[&head[..cut], &head[cut..]]),
                Some(1),
                "cut {cut}"
            );
        }
        // One byte at a time.
        let bytes: Vec<&[u8]> = head.chunks(1).collect();
        assert_eq!(ends_after(&bytes), Some(head.len() - 1));
        // Bare line feeds.
        assert_eq!(ends_after(&[b"GET / HTTP/1.1\nHost: a\n", b"\n"]), Some(1));
        assert_eq!(ends_after(&[b"GET / HTTP/1.1\nHost: a\n\n"]), Some(0));
        // A read that ends elsewhere: a body after the head, two pipelined heads, or a
        // head still coming.
        assert_eq!(
            ends_after(&[b"POST / HTTP/1.1\r\nHost: a\r\n\r\nab"]),
            Some(0)
        );
        assert_eq!(
            ends_after(&[&[head.as_slice(), b"GET /2 HTTP/1.1\r\n"].concat()]),
            Some(0)
        );
        assert_eq!(
            ends_after(&[b"GET / HTTP/1.1\r\nHost: a\r\n", b"X: b\r\n"]),
            None
        );
        // A line feed alone is no end of a head.
        assert_eq!(ends_after(&[b"GET / HTTP/1.1\r\n"]), None);
    }

    #[test]
    fn a_partial_head_does_not_end() {
        assert_eq!(ends_after(&[b"GET / HTTP/1.1\r\nHost: a\r\n"]), None);
        assert_eq!(
            ends_after(&[b"GET / HTTP/1.1\r\n", b"Host: a\r", b"\n"]),
            None
        );
        assert_eq!(ends_after(&[b"\n"]), None);
        assert_eq!(ends_after(&[b"\r\n"]), None);
    }
}
