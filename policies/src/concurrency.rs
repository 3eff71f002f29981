//! `limit-concurrency`: at most `max_count` requests in flight at once, per key; one more
//! is refused at once with 429 (Azure API Management's policy of the same name).
//!
//! A request takes its place in `inbound` (or `backend`) and holds it until it is over,
//! whoever answered and however it ended (the place is a [`Slot`] in the request's context,
//! given back when the context is dropped): for a streamed answer, until its last byte.
//! Counts are per gateway process, kept in [`InFlight`] (part of the registries, so a config
//! swap keeps the requests in flight counted), under the policy's origin and rendered key.

use crate::{Answer, Flow, Policy, RequestCtx, TemplateView};
use dashmap::DashMap;
use http::StatusCode;
use pingora_http::RequestHeader;
use std::sync::Arc;
use tollgate_config::{LimitConcurrencyDef, Template};

/// Requests in flight, per policy origin and key; a key is dropped when its count is 0.
#[derive(Debug, Default)]
pub struct InFlight {
    counts: DashMap<Box<str>, u32>,
}

impl InFlight {
    /// Take a place under `key` when fewer than `max` are taken.
    fn try_acquire(&self, key: &str, max: u32) -> bool {
        let mut n = match self.counts.get_mut(key) {
            Some(n) => n,
            None => self.counts.entry(key.into()).or_insert(0),
        };
        if *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    /// Give back a place under `key`.
    fn release(&self, key: &str) {
        self.counts.remove_if_mut(key, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }

    /// Requests in flight under `key` (0 when none).
    #[cfg(test)]
    fn count(&self, key: &str) -> u32 {
        self.counts.get(key).map_or(0, |n| *n)
    }

    /// How many keys have requests in flight.
    #[cfg(test)]
    fn keys(&self) -> usize {
        self.counts.len()
    }
}

/// A place held by a request; given back when dropped.
pub struct Slot {
    in_flight: Arc<InFlight>,
    key: Box<str>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").field("key", &self.key).finish()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.in_flight.release(&self.key);
    }
}

/// The `limit-concurrency` policy.
#[derive(Debug)]
pub(crate) struct LimitConcurrency {
    max: u32,
    /// `ORIGIN` alone, or `ORIGIN` + NUL before the rendered key.
    origin: Arc<str>,
    key: Option<Template>,
    in_flight: Arc<InFlight>,
    refusal: Answer,
}

impl LimitConcurrency {
    /// Prepare the policy at `origin`, counting in `in_flight`.
    pub(crate) fn new(
        def: &LimitConcurrencyDef,
        origin: &Arc<str>,
        in_flight: &Arc<InFlight>,
    ) -> LimitConcurrency {
        LimitConcurrency {
            max: def.max_count,
            origin: origin.clone(),
            key: def.counter_key.clone(),
            in_flight: in_flight.clone(),
            refusal: Answer::problem(
                StatusCode::TOO_MANY_REQUESTS,
                "limit-concurrency",
                "Too Many Requests",
                "Too many requests of this kind are in flight; try again shortly.",
            ),
        }
    }
}

impl Policy for LimitConcurrency {
    fn inbound(&self, req: &mut RequestHeader, ctx: &mut RequestCtx) -> Flow {
        let key: Box<str> = match &self.key {
            None => Box::from(&*self.origin),
            Some(t) => {
                let rendered = t.render(&TemplateView { req, ctx });
                format!("{}\0{rendered}", self.origin).into_boxed_str()
            }
        };
        if !self.in_flight.try_acquire(&key, self.max) {
            return Flow::Respond(self.refusal.clone());
        }
        ctx.concurrency.push(Slot {
            in_flight: self.in_flight.clone(),
            key,
        });
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_taken_up_to_the_limit_and_given_back() {
        let f = Arc::new(InFlight::default());
        assert!(f.try_acquire("a", 2));
        assert!(f.try_acquire("a", 2));
        assert!(!f.try_acquire("a", 2));
        assert!(f.try_acquire("b", 2), "keys are counted apart");
        assert_eq!((f.count("a"), f.count("b")), (2, 1));
        let slot = Slot {
            in_flight: f.clone(),
            key: "a".into(),
        };
        drop(slot);
        assert_eq!(f.count("a"), 1);
        assert!(f.try_acquire("a", 2));
        f.release("a");
        f.release("a");
        f.release("b");
        assert_eq!(f.keys(), 0, "keys with nothing in flight are dropped");
    }
}
