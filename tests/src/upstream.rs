//! Real upstream servers for the gateway to talk to.
//!
//! [`Upstream`] is an HTTP/1.1 server (hyper) on `127.0.0.1:0`, running in its own thread
//! with its own tokio runtime, so it keeps serving whatever the test's runtime does. It
//! records every request (method, path and query exactly as received, headers in order,
//! body) and answers with a JSON echo of it. `GET /health` is the health-check endpoint: it
//! answers the status set by [`Upstream::set_health`] and is counted apart, not recorded.
//!
//! Behaviour knobs, all switchable at run time: the answer status ([`Upstream::set_status`],
//! or for the next few answers only: [`Upstream::fail_next`]),
//! a delay before every answer ([`Upstream::set_delay`]), extra answer headers
//! ([`Upstream::set_headers`]); per request, the query parameters
//! `sleep_ms=N` (wait N ms before answering) and `status=N` (answer with status N).
//!
//! [`Upstream::start_tls`] serves the same over TLS (mutual TLS too), recording the client's
//! certificate.
//!
//! [`Blackhole`] accepts connections and never answers (for upstream timeouts).

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path and query exactly as they arrived on the request line (`/a/b?x=1`).
    pub uri: String,
    /// `HTTP/1.1`, ...
    pub version: String,
    /// Headers in arrival order, names lower-cased; repeated headers appear repeatedly.
    pub headers: Vec<(String, String)>,
    /// The request body.
    pub body: Vec<u8>,
    /// Over TLS: the DER of the client's certificate, when it presented one.
    pub client_cert: Option<Vec<u8>>,
}

impl Recorded {
    /// The path part of [`Recorded::uri`].
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or("")
    }

    /// The query part of [`Recorded::uri`] (without `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.uri.split_once('?').map(|(_, q)| q)
    }

    /// The query parameters, in order, not decoded.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        self.query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (p.to_string(), String::new()),
            })
            .collect()
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A fixed answer: content type, body, content encoding.
type Canned = (String, Vec<u8>, Option<String>);

struct Shared {
    name: String,
    requests: Mutex<Vec<Recorded>>,
    health_hits: AtomicUsize,
    health_status: AtomicU16,
    status: AtomicU16,
    /// The next this many answers get `fail_status` instead.
    fail_left: AtomicUsize,
    fail_status: AtomicU16,
    delay_ms: AtomicU64,
    /// A fixed answer (content type, body, content encoding) instead of the echo.
    canned: Mutex<Option<Canned>>,
    /// Extra headers on every answer (not health checks).
    extra_headers: Mutex<Vec<(String, String)>>,
    /// Trailers after every answer's body (not health checks).
    trailers: Mutex<Vec<(String, String)>>,
    /// A body sent in parts, with a pause before each part after the first.
    stream: Mutex<Option<(Vec<Vec<u8>>, Duration)>>,
    /// How many parts of streamed bodies were handed to the connection.
    parts_sent: Arc<AtomicUsize>,
    /// Speaks HTTP/2 only (prior knowledge), not HTTP/1.1.
    http2: bool,
}

/// A real HTTP/1.1 upstream server on an ephemeral port; see the module docs.
pub struct Upstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.shared.name)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Starts an upstream named `name` (sent back in the `X-Upstream` header and the echo).
    pub fn start(name: &str) -> Upstream {
        Upstream::try_start_on(name, "127.0.0.1:0").expect("bind upstream")
    }

    /// Starts an upstream named `name` listening on `addr` (another loopback address, a
    /// given port); the error when that address cannot be bound.
    pub fn try_start_on(name: &str, addr: &str) -> std::io::Result<Upstream> {
        Upstream::serve(name, addr, None, false)
    }

    /// Starts an upstream named `name` that speaks HTTP/2 only, with prior knowledge
    /// (h2c): what a gRPC server speaks in plain text.
    pub fn start_h2(name: &str) -> Upstream {
        Upstream::serve(name, "127.0.0.1:0", None, true).expect("bind upstream")
    }

    /// Starts an upstream named `name` that speaks HTTP/1.1 over TLS with `config` (see
    /// [`crate::pki::server_config`]); a connection whose handshake fails is dropped
    /// before any request is read. [`Upstream::url`] stays `http://`: the test writes the
    /// `https://` target it wants (an IP address or a name). A `config` whose ALPN list is
    /// `h2` alone makes an HTTP/2-only upstream.
    pub fn start_tls(name: &str, config: Arc<rustls::ServerConfig>) -> Upstream {
        let http2 = config.alpn_protocols == [b"h2".to_vec()];
        Upstream::serve(
            name,
            "127.0.0.1:0",
            Some(tokio_rustls::TlsAcceptor::from(config)),
            http2,
        )
        .expect("bind upstream")
    }

    fn serve(
        name: &str,
        addr: &str,
        tls: Option<tokio_rustls::TlsAcceptor>,
        http2: bool,
    ) -> std::io::Result<Upstream> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("upstream addr");
        let shared = Arc::new(Shared {
            name: name.to_string(),
            requests: Mutex::new(Vec::new()),
            health_hits: AtomicUsize::new(0),
            health_status: AtomicU16::new(200),
            status: AtomicU16::new(200),
            fail_left: AtomicUsize::new(0),
            fail_status: AtomicU16::new(500),
            delay_ms: AtomicU64::new(0),
            canned: Mutex::new(None),
            extra_headers: Mutex::new(Vec::new()),
            trailers: Mutex::new(Vec::new()),
            stream: Mutex::new(None),
            parts_sent: Arc::new(AtomicUsize::new(0)),
            http2,
        });
        let (tx, mut rx) = oneshot::channel::<()>();
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("upstream-{name}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("upstream runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    loop {
                        tokio::select! {
                            _ = &mut rx => break,
                            accepted = listener.accept() => {
                                let Ok((stream, _)) = accepted else { continue };
                                let sh = sh.clone();
                                let tls = tls.clone();
                                tokio::spawn(async move {
                                    let Some(tls) = tls else {
                                        serve_connection(sh, stream, None).await;
                                        return;
                                    };
                                    let Ok(stream) = tls.accept(stream).await else { return };
                                    let client_cert = stream
                                        .get_ref()
                                        .1
                                        .peer_certificates()
                                        .and_then(|chain| chain.first())
                                        .map(|c| Arc::new(c.to_vec()));
                                    serve_connection(sh, stream, client_cert).await;
                                });
                            }
                        }
                    }
                });
                // Dropping the runtime cancels every connection task and closes its socket.
                drop(rt);
            })
            .expect("spawn upstream thread");
        Ok(Upstream {
            addr,
            shared,
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    /// The server's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT` (a target for the policy file).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every recorded request (health checks excluded), oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().expect("lock").clone()
    }

    /// How many requests were recorded (health checks excluded).
    pub fn count(&self) -> usize {
        self.shared.requests.lock().expect("lock").len()
    }

    /// The latest recorded request.
    pub fn last(&self) -> Option<Recorded> {
        self.shared.requests.lock().expect("lock").last().cloned()
    }

    /// The latest recorded request; panics with a clear message when there is none.
    pub fn expect_last(&self) -> Recorded {
        self.last()
            .unwrap_or_else(|| panic!("upstream {} received no request", self.shared.name))
    }

    /// Forgets the recorded requests.
    pub fn clear(&self) {
        self.shared.requests.lock().expect("lock").clear();
    }

    /// Waits (bounded) until at least `n` requests were recorded; returns whether they were.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        crate::wait_until(timeout, Duration::from_millis(10), || self.count() >= n)
    }

    /// Answer every request from now on with this body and content type (and
    /// `Content-Encoding`, when given) instead of the JSON echo.
    pub fn set_answer(&self, content_type: &str, body: &[u8], encoding: Option<&str>) {
        *self.shared.canned.lock().expect("lock") = Some((
            content_type.to_string(),
            body.to_vec(),
            encoding.map(str::to_string),
        ));
    }

    /// Extra headers on every answer from now on (e.g. `Cache-Control`, `ETag`,
    /// `Set-Cookie`), replacing the previous extra headers; repeated names are sent
    /// repeatedly. An empty list sends none.
    pub fn set_headers(&self, headers: &[(&str, &str)]) {
        *self.shared.extra_headers.lock().expect("lock") = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
    }

    /// Trailers after the body of every answer from now on (HTTP/2, or chunked HTTP/1.1
    /// to a client that sent `TE: trailers`), replacing the previous ones.
    pub fn set_trailers(&self, trailers: &[(&str, &str)]) {
        *self.shared.trailers.lock().expect("lock") = trailers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
    }

    /// Every answer from now on has this body, sent part by part with `gap` before each
    /// part after the first (chunked on HTTP/1.1, one DATA frame each on HTTP/2), then
    /// the trailers of [`Upstream::set_trailers`]. The head is the one the answer would
    /// have had (the content type of [`Upstream::set_answer`], else the echo's), without
    /// `Content-Length`.
    pub fn set_stream(&self, parts: &[&[u8]], gap: Duration) {
        *self.shared.stream.lock().expect("lock") =
            Some((parts.iter().map(|p| p.to_vec()).collect(), gap));
    }

    /// How many parts of streamed bodies the server has handed to its connections.
    pub fn parts_sent(&self) -> usize {
        self.shared.parts_sent.load(Ordering::SeqCst)
    }

    /// Status of every answer from now on (default 200); `status=N` in a query wins.
    pub fn set_status(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// The next `n` answers (not health checks) get `status`, whatever else says; then the
    /// usual status again.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.shared.fail_status.store(status, Ordering::SeqCst);
        self.shared.fail_left.store(n, Ordering::SeqCst);
    }

    /// Delay before every answer from now on (default none).
    pub fn set_delay(&self, delay: Duration) {
        self.shared
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Status of `GET /health` from now on (default 200).
    pub fn set_health(&self, status: u16) {
        self.shared.health_status.store(status, Ordering::SeqCst);
    }

    /// Waits (bounded) until at least `n` health checks arrived; returns whether they did.
    pub fn wait_for_health_hits(&self, n: usize, timeout: Duration) -> bool {
        crate::wait_until(timeout, Duration::from_millis(20), || {
            self.health_hits() >= n
        })
    }

    /// How many `/health` requests arrived.
    pub fn health_hits(&self) -> usize {
        self.shared.health_hits.load(Ordering::SeqCst)
    }

    /// Stops the server: it closes its listener and every connection.
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serves one connection: HTTP/1.1, or HTTP/2 only (prior knowledge) for an upstream
/// started with [`Upstream::start_h2`].
async fn serve_connection<S>(sh: Arc<Shared>, stream: S, client_cert: Option<Arc<Vec<u8>>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let http2 = sh.http2;
    let svc = service_fn(move |req| answer(sh.clone(), client_cert.clone(), req));
    if http2 {
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), svc)
            .await;
    } else {
        let _ = http1::Builder::new()
            .serve_connection(TokioIo::new(stream), svc)
            .await;
    }
}

/// [`handle`]'s answer, with the trailers set by [`Upstream::set_trailers`].
async fn answer(
    sh: Arc<Shared>,
    client_cert: Option<Arc<Vec<u8>>>,
    req: Request<Incoming>,
) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
    let trailers = sh.trailers.lock().expect("lock").clone();
    let stream = sh.stream.lock().expect("lock").clone();
    let parts_sent = sh.parts_sent.clone();
    let is_health = req.uri().path() == "/health";
    if req.uri().path().ends_with("/echo-stream") {
        return Ok(echo_stream(&sh, req));
    }
    let Ok(resp) = handle(sh, client_cert, req).await;
    if is_health {
        return Ok(resp.map(|body| body.boxed()));
    }
    let trailers = trailer_map(trailers);
    if let Some((parts, gap)) = stream {
        let (mut head, _) = resp.into_parts();
        head.headers.remove(http::header::CONTENT_LENGTH);
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            for (i, part) in parts.into_iter().enumerate() {
                if i > 0 {
                    tokio::time::sleep(gap).await;
                }
                if tx.send(Frame::data(Bytes::from(part))).await.is_err() {
                    return;
                }
                parts_sent.fetch_add(1, Ordering::SeqCst);
            }
            if let Some(map) = trailers {
                let _ = tx.send(Frame::trailers(map)).await;
            }
        });
        return Ok(Response::from_parts(head, ChannelBody(rx).boxed()));
    }
    Ok(resp.map(|body| match trailers {
        None => body.boxed(),
        Some(map) => body.with_trailers(async move { Some(Ok(map)) }).boxed(),
    }))
}

/// The trailers set by [`Upstream::set_trailers`] as a header map (`None`: none set).
fn trailer_map(trailers: Vec<(String, String)>) -> Option<http::HeaderMap> {
    (!trailers.is_empty()).then(|| {
        trailers
            .into_iter()
            .map(|(n, v)| {
                (
                    http::HeaderName::try_from(n).expect("trailer name"),
                    http::HeaderValue::try_from(v).expect("trailer value"),
                )
            })
            .collect()
    })
}

/// A path ending in `/echo-stream`: the request's body comes back as it arrives, part by
/// part (a bidirectional stream: each part is answered before the next is read), then the
/// trailers of [`Upstream::set_trailers`]; the request is recorded without its body.
fn echo_stream(sh: &Shared, req: Request<Incoming>) -> Response<BoxBody<Bytes, Infallible>> {
    let (parts, mut body) = req.into_parts();
    sh.requests.lock().expect("lock").push(Recorded {
        method: parts.method.to_string(),
        uri: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.to_string(), |p| p.as_str().to_owned()),
        version: format!("{:?}", parts.version),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: Vec::new(),
        client_cert: None,
    });
    let trailers = trailer_map(sh.trailers.lock().expect("lock").clone());
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                if tx.send(Frame::data(data)).await.is_err() {
                    return;
                }
            }
        }
        if let Some(map) = trailers {
            let _ = tx.send(Frame::trailers(map)).await;
        }
    });
    Response::builder()
        .header("content-type", "application/grpc")
        .header("x-upstream", sh.name.as_str())
        .body(ChannelBody(rx).boxed())
        .expect("response")
}

/// A body whose frames come from a channel, as the task feeding it sends them.
pub struct ChannelBody(pub tokio::sync::mpsc::Receiver<Frame<Bytes>>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|f| f.map(Ok))
    }
}

async fn handle(
    sh: Arc<Shared>,
    client_cert: Option<Arc<Vec<u8>>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let uri = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| parts.uri.to_string());
    if parts.uri.path() == "/health" {
        sh.health_hits.fetch_add(1, Ordering::SeqCst);
        let status = sh.health_status.load(Ordering::SeqCst);
        return Ok(Response::builder()
            .status(status)
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from_static(b"health")))
            .expect("response"));
    }
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let rec = Recorded {
        method: parts.method.to_string(),
        uri: uri.clone(),
        version: format!("{:?}", parts.version),
        headers: headers.clone(),
        body: body.to_vec(),
        client_cert: client_cert.map(|c| c.to_vec()),
    };
    sh.requests.lock().expect("lock").push(rec.clone());

    let mut status = sh.status.load(Ordering::SeqCst);
    let mut delay = Duration::from_millis(sh.delay_ms.load(Ordering::SeqCst));
    for (k, v) in rec.query_pairs() {
        match k.as_str() {
            "sleep_ms" => {
                if let Ok(ms) = v.parse::<u64>() {
                    delay = delay.max(Duration::from_millis(ms));
                }
            }
            "status" => {
                if let Ok(s) = v.parse::<u16>() {
                    status = s;
                }
            }
            _ => {}
        }
    }
    if sh
        .fail_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        status = sh.fail_status.load(Ordering::SeqCst);
    }
    if !delay.is_zero() {
        let until = Instant::now() + delay;
        tokio::time::sleep_until(until.into()).await;
    }
    let canned = sh.canned.lock().expect("lock").clone();
    let extra = sh.extra_headers.lock().expect("lock").clone();
    if let Some((content_type, body, encoding)) = canned {
        let mut b = Response::builder()
            .status(status)
            .header("content-type", content_type)
            .header("x-upstream", sh.name.as_str());
        for (n, v) in &extra {
            b = b.header(n.as_str(), v.as_str());
        }
        if let Some(enc) = encoding {
            b = b.header("content-encoding", enc);
        }
        return Ok(b.body(Full::new(Bytes::from(body))).expect("response"));
    }
    let echo = serde_json::json!({
        "upstream": sh.name,
        "method": rec.method,
        "uri": uri,
        "headers": headers.iter().map(|(n, v)| [n, v]).collect::<Vec<_>>(),
        "body": String::from_utf8_lossy(&body),
    });
    let mut b = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-upstream", sh.name.as_str());
    for (n, v) in &extra {
        b = b.header(n.as_str(), v.as_str());
    }
    Ok(b.body(Full::new(Bytes::from(echo.to_string())))
        .expect("response"))
}

/// A TCP server that accepts connections, reads whatever comes, and never answers.
pub struct Blackhole {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Blackhole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blackhole")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Blackhole {
    /// Starts the server on an ephemeral port.
    pub fn start() -> Blackhole {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind blackhole");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let acc = accepted.clone();
        let (tx, mut rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("blackhole".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                    loop {
                        tokio::select! {
                            _ = &mut rx => break,
                            accepted = listener.accept() => {
                                let Ok((mut stream, _)) = accepted else { continue };
                                acc.fetch_add(1, Ordering::SeqCst);
                                tokio::spawn(async move {
                                    let mut buf = [0u8; 4096];
                                    while let Ok(n) = stream.read(&mut buf).await {
                                        if n == 0 {
                                            break;
                                        }
                                    }
                                    // Keep the socket open until the runtime goes away.
                                    std::future::pending::<()>().await;
                                });
                            }
                        }
                    }
                });
                drop(rt);
            })
            .expect("spawn blackhole");
        Blackhole {
            addr,
            accepted,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many connections were accepted.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
