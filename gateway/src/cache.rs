//! The core's side of response caching (`tollgate_policies::cache` holds the rest).
//!
//! Hooks, each one call: `request_filter` answers as soon as `cache-lookup` left a hit in
//! the context ([`Proxy::serve_hit`]); `response_filter` lets the cache copy the upstream's
//! head before the outbound section and drop the fill after it when nothing will be stored;
//! `response_body_filter` copies the body and stores it at its end; the buffered path
//! does the same with its whole answer.
//!
//! A hit runs the outbound section on a copy of the stored head (so a hit gets exactly what
//! a miss gets, plus `Age`), the body transforms on buffered routes, and answers 304 to a
//! conditional request whose validators match. It is written by
//! [`Proxy::write_head_and_body`], the second half of the one place that writes Tollgate's
//! answers. The request body of a hit is not read before the answer: Pingora drains it
//! after the answer, before the connection is reused, within [`DRAIN_LIMIT`] (by default
//! it would close such a connection instead); a request with `Expect: 100-continue` whose
//! body has not come keeps that default (its client may never send the body).

use crate::proxy::{Ctx, Proxy};
use bytes::Bytes;
use http::header::CONTENT_ENCODING;
use pingora_error::Result;
use pingora_proxy::Session;
use std::time::{Duration, Instant};
use tollgate_policies::{cache, run_outbound, Flow};

/// The longest time spent draining the unread request body of a hit before the connection
/// is reused; a body that takes longer closes the connection.
pub(crate) const DRAIN_LIMIT: Duration = Duration::from_secs(5);

impl Proxy {
    /// Answer with the entry `cache-lookup` found (see the module docs). `Ok(true)`: the
    /// answer has been written.
    pub(crate) async fn serve_hit(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let Some(entry) = ctx.req.cache.take_hit() else {
            return Ok(false);
        };
        let mut resp = cache::hit_head(&entry, Instant::now());
        let mut body = entry.body.clone();
        drop(entry);
        if let Some(chain) = ctx.chain.clone() {
            if let Flow::Respond(a) = run_outbound(&chain.outbound, &mut resp, &mut ctx.req) {
                self.write_answer(session, ctx, a, false).await?;
                return Ok(true);
            }
            if chain.buffered && !resp.headers.contains_key(CONTENT_ENCODING) {
                for p in chain.outbound.iter().filter(|p| p.transforms_bodies()) {
                    match p.transform_response_body(&mut resp, &body, &mut ctx.req) {
                        Ok(Some(new)) => body = Bytes::from(new),
                        Ok(None) => {}
                        Err(a) => {
                            self.write_answer(session, ctx, a, false).await?;
                            return Ok(true);
                        }
                    }
                }
            }
        }
        let expect_continue = session
            .req_header()
            .headers
            .contains_key(http::header::EXPECT);
        let downstream = session.as_downstream_mut();
        if !expect_continue && !downstream.is_body_done() {
            downstream.set_close_on_response_before_downstream_finish(false);
            downstream.set_total_drain_timeout(Some(DRAIN_LIMIT));
        }
        if cache::not_modified(&session.req_header().headers, &resp.headers) {
            resp = cache::not_modified_head(&resp);
            body = Bytes::new();
        }
        self.write_head_and_body(session, ctx, resp, body, false)
            .await?;
        Ok(true)
    }
}
