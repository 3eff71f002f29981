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

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
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
    /// HTTP/2 (its frames have no heads to time): no deadline on this connection.
    Off,
}

/// The HTTP/2 connection preface's first line.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// A stream whose request heads must arrive within a time limit.
#[derive(Debug)]
pub struct HeaderDeadline {
    inner: Stream,
    limit: Duration,
    phase: Phase,
    sleep: Pin<Box<Sleep>>,
    /// Last bytes seen, to find a head end split across reads.
    tail: u32,
    /// Nothing has been read yet.
    fresh: bool,
}

impl HeaderDeadline {
    /// Wrap a freshly accepted stream; the first head's deadline starts now.
    pub fn new(inner: Stream, limit: Duration) -> HeaderDeadline {
        HeaderDeadline {
            inner,
            limit,
            phase: Phase::InHead,
            sleep: Box::pin(tokio::time::sleep(limit)),
            tail: 0,
            fresh: true,
        }
    }

    fn scan(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.tail = (self.tail << 8) | u32::from(b);
            if self.tail == u32::from_be_bytes(*b"\r\n\r\n") || (self.tail & 0xffff) == 0x0a0a {
                self.phase = Phase::AfterHead;
                self.tail = 0;
                return;
            }
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
        if this.phase == Phase::InHead && this.sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request head not received in time",
            )));
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &res {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                // "PRI" is no HTTP/1 method: three bytes tell the two apart.
                if std::mem::take(&mut this.fresh)
                    && new.len() >= 3
                    && H2_PREFACE.starts_with(&new[..new.len().min(H2_PREFACE.len())])
                {
                    this.phase = Phase::Off;
                }
                if this.phase == Phase::Idle {
                    this.phase = Phase::InHead;
                    this.tail = 0;
                    let deadline = Instant::now() + this.limit;
                    this.sleep.as_mut().reset(deadline);
                }
                if this.phase == Phase::InHead {
                    this.scan(new);
                }
            }
        }
        res
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
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) && this.phase == Phase::AfterHead {
            this.phase = Phase::Idle;
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
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) && this.phase == Phase::AfterHead {
            this.phase = Phase::Idle;
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
impl Peek for HeaderDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        if self.phase != Phase::InHead {
            return self.inner.try_peek(buf).await;
        }
        // Pingora peeks for the h2c preface before reading: the head deadline holds here too.
        let deadline = self.sleep.deadline();
        match tokio::time::timeout_at(deadline, self.inner.try_peek(buf)).await {
            Ok(res) => res,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request head not received in time",
            )),
        }
    }
}

/// A server app that wraps every accepted connection in a [`HeaderDeadline`] before
/// handing it to `inner` (the HTTP proxy).
#[derive(Debug)]
pub struct WithHeaderDeadline<A> {
    inner: Arc<A>,
    limit: Duration,
}

impl<A> WithHeaderDeadline<A> {
    /// Wrap `inner`.
    pub fn new(inner: A, limit: Duration) -> Self {
        WithHeaderDeadline {
            inner: Arc::new(inner),
            limit,
        }
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
            Box::new(HeaderDeadline::new(session, self.limit))
        };
        self.inner.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}
