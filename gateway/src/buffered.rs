//! Buffered proxying, for routes whose chain transforms whole bodies (`xml-to-json`,
//! `json-to-xml`).
//!
//! Pingora streams: the answer's head goes to the client before its body is read, so a
//! transform could neither set `Content-Length` nor answer 502 for a malformed upstream
//! body. On such routes the gateway does the exchange itself: it reads the whole request
//! body (bounded), runs the request transforms (a malformed client body is refused with 400
//! before the upstream is contacted), sends the request to a target picked from the same
//! pool (same retries, ejection and timeouts), reads the whole answer (bounded), decodes
//! `gzip`/`deflate`/`br`, runs the outbound phases and the answer transforms, and writes the
//! final answer with its length. A `HEAD` is sent upstream as a `GET`, so that its answer
//! carries the same `Content-Type` and `Content-Length` as the `GET` would (the body is
//! not written). Other routes keep Pingora's streaming path.

use crate::pool::Pool;
use crate::proxy::{bad_gateway_detail, retry_on_status, Ctx, Failure, Proxy, REFUSED_OR_RESET};
use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderName, StatusCode};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use std::io::Read;
use tollgate_policies::{run_outbound, Answer, Flow};

/// Largest upstream answer a buffered route accepts (decoded), like the request limit.
const MAX_ANSWER: usize = 10 * 1024 * 1024;

/// Why one exchange with a target failed.
enum ExchangeError {
    /// Connecting failed: another target may be tried.
    Connect(Box<Error>),
    /// The target did not answer in time.
    Timeout,
    /// The target answered more than [`MAX_ANSWER`].
    TooLarge,
    /// Anything else on an established connection.
    Broken(Box<Error>),
}

fn is_connect_error(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectTimedout
            | ErrorType::ConnectRefused
            | ErrorType::ConnectNoRoute
            | ErrorType::ConnectError
            | ErrorType::TLSHandshakeFailure
            | ErrorType::TLSHandshakeTimedout
    )
}

fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
    )
}

/// Decode a `Content-Encoding` (bounded); `None` for an encoding we cannot decode.
fn decode(encoding: &str, body: &[u8]) -> Option<Result<Vec<u8>, ()>> {
    let mut out = Vec::with_capacity(body.len() * 2);
    let limit = MAX_ANSWER as u64 + 1;
    let res = match encoding.trim().to_ascii_lowercase().as_str() {
        "gzip" | "x-gzip" => flate2::read::GzDecoder::new(body)
            .take(limit)
            .read_to_end(&mut out),
        "deflate" => flate2::read::ZlibDecoder::new(body)
            .take(limit)
            .read_to_end(&mut out),
        "br" => brotli_decompressor::Decompressor::new(body, 4096)
            .take(limit)
            .read_to_end(&mut out),
        "identity" | "" => return Some(Ok(body.to_vec())),
        _ => return None,
    };
    Some(match res {
        Ok(_) if out.len() <= MAX_ANSWER => Ok(out),
        _ => Err(()),
    })
}

impl Proxy {
    /// One request/answer exchange with a target.
    async fn exchange(
        &self,
        peer: &HttpPeer,
        head: RequestHeader,
        body: &[u8],
    ) -> Result<(ResponseHeader, Vec<u8>), ExchangeError> {
        let (mut s, _reused) = self.connector.get_http_session(peer).await.map_err(|e| {
            if is_connect_error(&e) {
                ExchangeError::Connect(e)
            } else {
                ExchangeError::Broken(e)
            }
        })?;
        s.set_read_timeout(peer.options.read_timeout);
        s.set_write_timeout(peer.options.write_timeout);
        let broken = |e: Box<Error>| {
            if matches!(
                e.etype(),
                ErrorType::ReadTimedout | ErrorType::WriteTimedout
            ) {
                ExchangeError::Timeout
            } else {
                ExchangeError::Broken(e)
            }
        };
        s.write_request_header(Box::new(head))
            .await
            .map_err(broken)?;
        if !body.is_empty() {
            s.write_request_body(Bytes::copy_from_slice(body), true)
                .await
                .map_err(broken)?;
        }
        s.finish_request_body().await.map_err(broken)?;
        // Informational answers (100 Continue) come before the final one.
        let resp = loop {
            s.read_response_header().await.map_err(broken)?;
            match s.response_header() {
                // The request asked for no upgrade (its `Upgrade` was removed): a 101 is
                // a broken upstream, answered 502 at once rather than read as a stream.
                Some(h) if h.status == StatusCode::SWITCHING_PROTOCOLS => {
                    return Err(ExchangeError::Broken(Error::explain(
                        ErrorType::InvalidHTTPHeader,
                        "101 to a request that asked for no upgrade",
                    )))
                }
                Some(h) if h.status.is_informational() => continue,
                Some(h) => break h.clone(),
                None => {
                    return Err(ExchangeError::Broken(Error::explain(
                        ErrorType::InvalidHTTPHeader,
                        "no answer head",
                    )))
                }
            }
        };
        let mut out = Vec::new();
        while let Some(chunk) = s.read_response_body().await.map_err(broken)? {
            if out.len() + chunk.len() > MAX_ANSWER {
                return Err(ExchangeError::TooLarge);
            }
            out.extend_from_slice(&chunk);
        }
        if s.response_done() {
            self.connector
                .release_http_session(s, peer, peer.options.idle_timeout)
                .await;
        }
        Ok((resp, out))
    }

    /// Proxy a request of a body-transforming route (see the module docs). Returns
    /// `Ok(true)`: the answer has been written.
    pub(crate) async fn proxy_buffered(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        pool: &Pool,
    ) -> pingora_error::Result<bool> {
        // 1. The whole request body, bounded. A client that waits for `100 Continue`
        // gets it first (its declared length already passed the limit check): the
        // upstream, which would send it on the streaming path, is not asked yet.
        let expects_continue = session
            .req_header()
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if expects_continue
            && session.req_header().version == http::Version::HTTP_11
            && !session.as_downstream_mut().is_body_done()
        {
            // Pingora turns keep-alive off for good when any answer, an interim one too, is
            // written before the request body was read whole: only the final answer must
            // decide that.
            let downstream = session.as_downstream_mut();
            downstream.set_close_on_response_before_downstream_finish(false);
            let written = downstream.write_continue_response().await;
            downstream.set_close_on_response_before_downstream_finish(true);
            written?;
        }
        let mut body = Vec::new();
        while let Some(chunk) = session.read_request_body().await? {
            if (body.len() + chunk.len()) as u64 > ctx.body_limit {
                return self
                    .finish(session, ctx, Failure::BodyTooLarge.answer(), true)
                    .await;
            }
            body.extend_from_slice(&chunk);
        }
        let Some(chain) = ctx.chain.clone() else {
            return Error::e_explain(ErrorType::InternalError, "no chain for a buffered route");
        };

        // 2. Request transforms.
        for p in chain.inbound.iter().chain(chain.backend.iter()) {
            if !p.transforms_bodies() {
                continue;
            }
            match p.transform_request_body(session.req_header_mut(), &body, &mut ctx.req) {
                Ok(Some(new)) => body = new,
                Ok(None) => {}
                Err(a) => return self.finish(session, ctx, a, false).await,
            }
        }

        // 3. The exchange, with the same target choice, ejection and retries (on failures to
        //    connect and on `upstream.retry_on_status`) as streaming.
        let https = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let idempotent = session.req_header().method.is_idempotent();
        let (mut resp, mut answer_body) = loop {
            let picked = match pool.pick(ctx.tried) {
                Ok(p) => p.with_timeout(ctx.req.upstream_timeout),
                Err(_) => {
                    return self
                        .finish(session, ctx, Failure::NoHealthyUpstream.answer(), true)
                        .await;
                }
            };
            if picked.index < 64 {
                ctx.tried |= 1 << picked.index;
            }
            ctx.target = Some(picked.index);
            ctx.attempts += 1;
            let mut head = session.req_header().clone();
            if head.method == http::Method::HEAD {
                // The answer's head depends on the transformed body (its type and
                // length), so a HEAD is asked as a GET and answered without the body.
                head.set_method(http::Method::GET);
            }
            self.prepare_upstream(&mut head, ctx, pool, picked.index, https)?;
            // One request, one answer: no upgrade, and Pingora's client sets `Connection`.
            head.remove_header(&http::header::CONNECTION);
            head.remove_header(&http::header::UPGRADE);
            head.remove_header(&TRANSFER_ENCODING);
            if body.is_empty()
                && !matches!(
                    head.method,
                    http::Method::POST | http::Method::PUT | http::Method::PATCH
                )
            {
                head.remove_header(&CONTENT_LENGTH);
            } else {
                head.insert_header(CONTENT_LENGTH, body.len())?;
            }
            ctx.upstream_start
                .get_or_insert_with(std::time::Instant::now);
            match self.exchange(&picked.peer, head, &body).await {
                Ok(r) if retry_on_status(ctx, r.0.status.as_u16(), idempotent, true) => {
                    continue;
                }
                Ok(r) => {
                    if let Some(t) = ctx.upstream_start {
                        ctx.upstream_us = Some(t.elapsed().as_micros() as u64);
                    }
                    break r;
                }
                Err(ExchangeError::Connect(e)) => {
                    pool.eject(picked.index);
                    let more = (ctx.tried.count_ones() as usize) < pool.len();
                    if idempotent && more && ctx.attempts <= pool.def.retries {
                        continue;
                    }
                    let f = if matches!(e.etype(), ErrorType::ConnectTimedout) {
                        Failure::UpstreamTimeout
                    } else {
                        Failure::BadGateway(bad_gateway_detail(&e))
                    };
                    return self.finish(session, ctx, f.answer(), true).await;
                }
                Err(ExchangeError::Timeout) => {
                    return self
                        .finish(session, ctx, Failure::UpstreamTimeout.answer(), true)
                        .await;
                }
                Err(ExchangeError::TooLarge) => {
                    let f = Failure::BadGateway(
                        "the upstream's answer is larger than the gateway buffers",
                    );
                    return self.finish(session, ctx, f.answer(), true).await;
                }
                Err(ExchangeError::Broken(e)) => {
                    tracing::debug!("buffered exchange failed: {e}");
                    let f = Failure::BadGateway(REFUSED_OR_RESET);
                    return self.finish(session, ctx, f.answer(), true).await;
                }
            }
        };

        // 4. Decode the answer body.
        if let Some(enc) = resp
            .headers
            .get(CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
        {
            match decode(&enc, &answer_body) {
                Some(Ok(decoded)) => {
                    answer_body = decoded;
                    resp.remove_header(&CONTENT_ENCODING);
                }
                Some(Err(())) => {
                    let f = Failure::BadGateway("the upstream's answer could not be decoded");
                    return self.finish(session, ctx, f.answer(), true).await;
                }
                // An encoding we cannot decode goes through untouched (transforms skip it).
                None => {}
            }
        }
        // The fixed hop-by-hop names, and those the upstream's `Connection` names
        // (RFC 9110 §7.6.1), as the streaming path and the response cache drop them.
        let names: Vec<HeaderName> = resp
            .headers
            .keys()
            .filter(|n| hop_by_hop(n))
            .cloned()
            .chain(
                resp.headers
                    .get_all(http::header::CONNECTION)
                    .iter()
                    .flat_map(tollgate_policies::connection_names),
            )
            .collect();
        for n in names {
            resp.remove_header(&n);
        }

        // 5. Outbound phases, then the answer transforms. The response cache keeps the
        // decoded answer as the upstream sent it (hits run outbound and transforms again).
        crate::proxy::note_answer(&resp, ctx);
        crate::proxy::rewrite_location(&mut resp, ctx);
        ctx.req.cache.capture_head(&resp);
        if let Flow::Respond(a) = run_outbound(&chain.outbound, &mut resp, &mut ctx.req) {
            return self.finish(session, ctx, a, false).await;
        }
        ctx.req.cache.after_outbound(session.req_header(), false);
        if ctx.req.cache.filling() {
            let copy = Bytes::copy_from_slice(&answer_body);
            tollgate_policies::cache::on_body(&mut ctx.req, Some(&copy), true);
        }
        let undecodable = resp.headers.contains_key(CONTENT_ENCODING);
        for p in chain.outbound.iter() {
            if !p.transforms_bodies() || undecodable {
                continue;
            }
            match p.transform_response_body(&mut resp, &answer_body, &mut ctx.req) {
                Ok(Some(new)) => answer_body = new,
                Ok(None) => {}
                Err(a) => return self.finish(session, ctx, a, false).await,
            }
        }

        // 6. The final answer, with its length.
        let answer = Answer {
            status: resp.status,
            headers: resp
                .headers
                .iter()
                .filter(|(n, _)| **n != CONTENT_LENGTH)
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect(),
            body: Bytes::from(answer_body),
            is_error: false,
        };
        let done = self.finish(session, ctx, answer, false).await;
        // The upstream made this answer (the gateway only re-framed it).
        ctx.answered = None;
        done
    }

    async fn finish(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        answer: Answer,
        close: bool,
    ) -> pingora_error::Result<bool> {
        self.write_answer(session, ctx, answer, close).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn decodes_gzip_deflate_and_br_and_refuses_garbage() {
        let text = b"<a>hello</a>".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&text).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(decode("gzip", &gz).unwrap().unwrap(), text);
        let mut zl = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zl.write_all(&text).unwrap();
        assert_eq!(
            decode("deflate", &zl.finish().unwrap()).unwrap().unwrap(),
            text
        );
        assert!(decode("gzip", b"not gzip").unwrap().is_err());
        assert!(decode("zstd", b"x").is_none());
        assert_eq!(decode("identity", b"x").unwrap().unwrap(), b"x");
    }

    #[test]
    fn a_decompression_bomb_is_refused() {
        let zeros = vec![0u8; MAX_ANSWER + 1024];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&zeros).unwrap();
        let gz = gz.finish().unwrap();
        assert!(gz.len() < 100 * 1024);
        assert!(decode("gzip", &gz).unwrap().is_err());
    }
}
