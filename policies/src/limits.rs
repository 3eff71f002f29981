//! `rate-limit`, `rate-limit-by-key`, `quota`, `quota-by-key`.
//!
//! Each policy counts in the long-lived [`Counters`] registry (see `tollgate-counters`),
//! in the table of its position (`origin`), under its counter key: the caller's
//! subscription id (`rate-limit`, `quota`; calls without a subscription share the key
//! `""`), or the rendered `counter_key`. A position at product level is therefore counted
//! per subscription within that product's scope.
//!
//! Inbound, a policy checks and counts the call in one atomic step (fixed windows: exactly
//! `calls` per window); when the limit is reached it answers (429/503 for rate limits, 403
//! for quotas) with `Retry-After` = whole seconds to the end of the window, at least 1.
//! With `increment_condition: success`, a call is counted inbound and given back in
//! [`Policy::on_complete`] when its answer was not 2xx/3xx (so the limit is never exceeded,
//! even by calls in flight). Bandwidth (request + response body bytes) is only known at
//! completion: it is added then, and a quota refuses calls once the window's bytes reached
//! the limit.
//!
//! With Redis ([`Counters::shared`]), the check is one script run: the policy returns
//! [`Flow::Wait`] with a future that runs it and leaves the answer in a [`LimitTicket`] in
//! the request context; the gateway then calls `inbound` once more, which reads it. When
//! Redis fails, `on_store_error` decides: `allow` lets the call through uncounted, `deny`
//! answers 503; both are counted ([`Counters::store_errors`]).
//!
//! **One round trip per run of limits.** Consecutive limit policies of a section (say
//! `rate-limit` then `quota`) are linked when the section is built ([`build_run`]): the first
//! one's script run checks the counters of all of them, in chain order, stopping at the first
//! refusal ([`RedisCounters::take_all`](tollgate_counters::RedisCounters::take_all)), and
//! leaves each policy's answer in that policy's ticket. The gateway still calls every policy
//! in turn: the first one answers after its wait, the next ones find their answer ready and
//! decide without waiting. Nothing runs between consecutive policies, so this is exactly
//! the outcome of checking them one after another: the first refusal answers, and the
//! policies after it count nothing (they never run, and the script did not count them). A
//! Redis failure is the failure of every check of the run: each policy applies its own
//! `on_store_error`, in order, as it would have after its own failed round trip. Local
//! counters ignore the links: each policy checks its own counter in place.

use crate::{Answer, Completed, Flow, Policy, RequestCtx, TemplateView};
use http::{HeaderName, HeaderValue, StatusCode};
use pingora_http::RequestHeader;
use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use tollgate_config::{
    OnStoreError, Period as ConfigPeriod, PolicyDef, PolicyInstance, QuotaDef, RateLimitDef,
    Template,
};
use tollgate_counters::{
    counter_key, At, CachedPeriod, CalendarKind, Check, Counters, Op, Outcome, Period, Refusal,
    Remote, Table, TableKind, Take, Window,
};

/// What a limit policy left in the request context: the window it counted the call in (for
/// a refund or bytes at completion), or the pending answer of a shared counter.
#[derive(Debug)]
pub struct LimitTicket {
    /// The policy it belongs to (its address: unique while the request pins the snapshot).
    owner: usize,
    /// The counter key.
    key: Arc<str>,
    /// The window the call was counted in.
    window: Window,
    /// Whether the call was counted (refunds and bytes apply only then).
    counted: bool,
    /// The answer of the shared counters' check this policy's counter took part in (filled by
    /// the future of [`Flow::Wait`]), and the counter's place in it.
    pending: Option<(Arc<Checked>, usize)>,
}

/// The answer of one [`RedisCounters::take_all`](tollgate_counters::RedisCounters::take_all)
/// run, shared by the tickets of the policies it checked.
type Checked = OnceLock<Result<Vec<Remote>, String>>;

/// Whether this module builds `def`.
pub(crate) fn handles(def: &PolicyDef) -> bool {
    matches!(
        def,
        PolicyDef::RateLimit(_)
            | PolicyDef::RateLimitByKey(_)
            | PolicyDef::Quota(_)
            | PolicyDef::QuotaByKey(_)
    )
}

/// Build the policy for `instance` (a limit kind) counting in `counters`.
pub(crate) fn build(
    instance: &PolicyInstance,
    counters: &Arc<Counters>,
) -> Option<Arc<dyn Policy>> {
    Some(Arc::new(Limit::new(instance, counters)?))
}

/// Build the policies of `run`, consecutive limit instances of one section, in order: each
/// is linked to the ones after it, so that with shared counters the first checks them all in
/// one round trip (see the module docs). Instances of other kinds are not built (this
/// answers fewer policies than instances then; callers pass limit instances only).
pub(crate) fn build_run(run: &[PolicyInstance], counters: &Arc<Counters>) -> Vec<Arc<dyn Policy>> {
    // Built from the last: each one's `next` is every policy built before it, reversed.
    let mut built: Vec<Arc<Limit>> = Vec::with_capacity(run.len());
    for instance in run.iter().rev() {
        if let Some(mut limit) = Limit::new(instance, counters) {
            limit.next = Next(built.iter().rev().cloned().collect());
            built.push(Arc::new(limit));
        }
    }
    built
        .into_iter()
        .rev()
        .map(|l| l as Arc<dyn Policy>)
        .collect()
}

/// The counting period of a quota, its time zone resolved.
pub fn quota_period(def: &QuotaDef) -> Period {
    let kind = match def.period {
        ConfigPeriod::Fixed(d) => return Period::fixed(d),
        ConfigPeriod::CalendarDay => CalendarKind::Day,
        ConfigPeriod::CalendarWeek => CalendarKind::Week,
        ConfigPeriod::CalendarMonth => CalendarKind::Month,
    };
    // Validation checked the name against the same bundled database.
    Period::calendar(kind, &def.timezone)
        .unwrap_or_else(|_| Period::calendar(kind, "UTC").unwrap_or(Period::Fixed(86_400_000)))
}

#[derive(Debug)]
enum KeySource {
    /// The caller's subscription id.
    Subscription,
    /// A `counter_key` without variables (rendered once).
    Literal(Arc<str>),
    /// A `counter_key` rendered per request.
    Template(Template),
}

#[derive(Debug)]
struct Limit {
    kind: TableKind,
    origin: Arc<str>,
    counters: Arc<Counters>,
    table: Arc<Table>,
    period: Arc<CachedPeriod>,
    key: KeySource,
    calls: Option<u64>,
    bandwidth: Option<u64>,
    success_only: bool,
    on_store_error: OnStoreError,
    status: StatusCode,
    retry_after_header: HeaderName,
    remaining_header: Option<HeaderName>,
    /// The limit policies that directly follow this one in its section, in order: with shared
    /// counters, this one checks their counters in its own round trip (see the module docs).
    next: Next,
}

/// The limits after a policy in its run (debug output: their origins only).
#[derive(Default)]
struct Next(Vec<Arc<Limit>>);

impl std::fmt::Debug for Next {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|l| &l.origin))
            .finish()
    }
}

fn key_source(t: &Option<Template>) -> KeySource {
    match t {
        None => KeySource::Subscription,
        Some(t) => match t.as_literal() {
            Some(text) => KeySource::Literal(Arc::from(counter_key(text).as_ref())),
            None => KeySource::Template(t.clone()),
        },
    }
}

impl Limit {
    fn new(instance: &PolicyInstance, counters: &Arc<Counters>) -> Option<Limit> {
        Some(match &instance.def {
            PolicyDef::RateLimit(d) | PolicyDef::RateLimitByKey(d) => {
                Limit::rate(instance, d, counters)
            }
            PolicyDef::Quota(d) | PolicyDef::QuotaByKey(d) => Limit::quota(instance, d, counters),
            _ => return None,
        })
    }

    fn rate(instance: &PolicyInstance, d: &RateLimitDef, counters: &Arc<Counters>) -> Limit {
        Limit {
            kind: TableKind::Rate,
            origin: instance.origin.clone(),
            counters: counters.clone(),
            table: counters.table(TableKind::Rate, &instance.origin),
            period: Arc::new(CachedPeriod::new(Period::fixed(d.period))),
            key: key_source(&d.counter_key),
            calls: Some(d.calls),
            bandwidth: None,
            success_only: d.count_success_only,
            on_store_error: d.on_store_error,
            status: crate::status(d.status),
            retry_after_header: d.retry_after_header.clone(),
            remaining_header: d.remaining_calls_header.clone(),
            next: Next::default(),
        }
    }

    fn quota(instance: &PolicyInstance, d: &QuotaDef, counters: &Arc<Counters>) -> Limit {
        Limit {
            kind: TableKind::Quota,
            origin: instance.origin.clone(),
            counters: counters.clone(),
            table: counters.table(TableKind::Quota, &instance.origin),
            period: Arc::new(CachedPeriod::new(quota_period(d))),
            key: key_source(&d.counter_key),
            calls: d.calls,
            bandwidth: d.bandwidth,
            success_only: d.count_success_only,
            on_store_error: d.on_store_error,
            status: StatusCode::FORBIDDEN,
            retry_after_header: http::header::RETRY_AFTER,
            remaining_header: None,
            next: Next::default(),
        }
    }

    fn id(&self) -> usize {
        self as *const Limit as usize
    }

    /// Whether completion matters: a refund of non-successes, or bytes to count.
    fn needs_completion(&self) -> bool {
        self.success_only || self.bandwidth.is_some()
    }

    fn remaining(&self, ctx: &mut RequestCtx, calls: u64) {
        if let (Some(name), Some(limit)) = (&self.remaining_header, self.calls) {
            ctx.answer_headers
                .push((name.clone(), HeaderValue::from(limit.saturating_sub(calls))));
        }
    }

    /// The answer to a call over the limit.
    fn refusal(&self, refused: Refusal, retry_after: u64) -> Answer {
        let period = self.period.period().describe();
        let (slug, title, detail) = match (self.kind, refused) {
            (TableKind::Rate, _) => (
                "rate-limit-exceeded",
                if self.status == StatusCode::SERVICE_UNAVAILABLE {
                    "Service Unavailable"
                } else {
                    "Too Many Requests"
                },
                format!(
                    "rate limit exceeded: {} calls per {period}; retry in {retry_after} s",
                    self.calls.unwrap_or(0)
                ),
            ),
            (TableKind::Quota, Refusal::Calls) => (
                "quota-exceeded",
                "Forbidden",
                format!(
                    "call quota exceeded: {} calls per {period}; it renews in {retry_after} s",
                    self.calls.unwrap_or(0)
                ),
            ),
            (TableKind::Quota, Refusal::Bandwidth) => (
                "quota-exceeded",
                "Forbidden",
                format!(
                    "bandwidth quota exceeded: {} bytes per {period}; it renews in {retry_after} s",
                    self.bandwidth.unwrap_or(0)
                ),
            ),
        };
        Answer::problem(self.status, slug, title, &detail).with_header(
            self.retry_after_header.clone(),
            HeaderValue::from(retry_after),
        )
    }

    /// Decide on a counted (or refused) call.
    fn decide(
        &self,
        out: Outcome,
        window: Window,
        now_ms: i64,
        ticket: Option<usize>,
        key: &str,
        ctx: &mut RequestCtx,
    ) -> Flow {
        if let Some(refused) = out.refused {
            self.remaining(ctx, self.calls.unwrap_or(0));
            return Flow::Respond(self.refusal(refused, window.retry_after_secs(now_ms)));
        }
        self.remaining(ctx, out.calls);
        if self.needs_completion() {
            match ticket {
                Some(i) => {
                    let t = &mut ctx.limits[i];
                    t.window = window;
                    t.counted = true;
                }
                None => ctx.limits.push(LimitTicket {
                    owner: self.id(),
                    key: Arc::from(key),
                    window,
                    counted: true,
                    pending: None,
                }),
            }
        }
        Flow::Continue
    }

    fn store_failed(&self, err: &dyn std::fmt::Display) -> Flow {
        let allow = self.on_store_error == OnStoreError::Allow;
        self.counters.record_store_error(err, allow);
        if allow {
            return Flow::Continue;
        }
        Flow::Respond(
            Answer::problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "counter-store-unavailable",
                "Service Unavailable",
                "the limit cannot be checked right now (its counter store is unreachable)",
            )
            .with_header(http::header::RETRY_AFTER, HeaderValue::from_static("1")),
        )
    }

    /// The `inbound` call that finds this policy's ticket: after the wait (the first policy
    /// of a run of limits), or at once (the next ones, checked in the same run).
    fn after_wait(&self, i: usize, req: &mut RequestHeader, ctx: &mut RequestCtx) -> Flow {
        let Some((checked, at)) = ctx.limits[i].pending.take() else {
            return Flow::Continue;
        };
        let key = ctx.limits[i].key.clone();
        match checked.get() {
            Some(Ok(remotes)) => match remotes.get(at) {
                Some(remote) => self.decide(
                    remote.outcome,
                    remote.window,
                    remote.now_ms,
                    Some(i),
                    &key,
                    ctx,
                ),
                None => {
                    // An earlier counter of the run refused, so this one was neither checked
                    // nor counted. The gateway stops at that refusal and never gets here;
                    // anyone else gets this policy's own check.
                    ctx.limits.remove(i);
                    self.check(req, ctx)
                }
            },
            Some(Err(e)) => self.store_failed(e),
            None => self.store_failed(&"the counter check did not finish"),
        }
    }

    /// The counter key of this call: the subscription, or the rendered `counter_key` (hashed
    /// when long).
    fn render<'a>(
        &'a self,
        sub: Option<&'a str>,
        req: &RequestHeader,
        ctx: &RequestCtx,
    ) -> Cow<'a, str> {
        match &self.key {
            KeySource::Subscription => Cow::Borrowed(sub.unwrap_or("")),
            KeySource::Literal(k) => Cow::Borrowed(k),
            KeySource::Template(t) => match t.render(&TemplateView { req, ctx }) {
                Cow::Borrowed(s) => Cow::Borrowed(s),
                Cow::Owned(s) => match counter_key(&s) {
                    Cow::Borrowed(_) => Cow::Owned(s),
                    Cow::Owned(hashed) => Cow::Owned(hashed),
                },
            },
        }
    }

    /// Check and count the call (this policy's first `inbound` call).
    fn check(&self, req: &mut RequestHeader, ctx: &mut RequestCtx) -> Flow {
        let sub = ctx.subscription_id.clone();
        let Some(shared) = self.counters.shared() else {
            let rendered = self.render(sub.as_deref(), req, ctx);
            let take = Take {
                calls_limit: self.calls,
                bytes_limit: self.bandwidth,
                subscription: sub.as_ref(),
            };
            let now = self.counters.now_ms();
            let window = self.period.window_at(now);
            let out = self.table.take(&rendered, window, take);
            return self.decide(out, window, now, None, &rendered, ctx);
        };
        // This policy's counter and those of the limits right after it, in one script run;
        // each policy finds its answer in its ticket.
        let checked: Arc<Checked> = Arc::new(OnceLock::new());
        let run = std::iter::once(self).chain(self.next.0.iter().map(|l| &**l));
        let mut checks = Vec::with_capacity(1 + self.next.0.len());
        let mut mirrors = Vec::with_capacity(1 + self.next.0.len());
        for (at, limit) in run.enumerate() {
            let key: Arc<str> = Arc::from(limit.render(sub.as_deref(), req, ctx).as_ref());
            ctx.limits.push(LimitTicket {
                owner: limit.id(),
                key: key.clone(),
                window: Window {
                    start_ms: 0,
                    end_ms: 0,
                },
                counted: false,
                pending: Some((checked.clone(), at)),
            });
            checks.push(Check {
                kind: limit.kind,
                origin: limit.origin.clone(),
                key,
                period: limit.period.clone(),
                calls_limit: limit.calls,
                bytes_limit: limit.bandwidth,
            });
            mirrors.push((limit.kind == TableKind::Quota).then(|| limit.table.clone()));
        }
        let shared = shared.clone();
        Flow::Wait(Box::pin(async move {
            let r = shared.take_all(&checks).await;
            if let Ok(remotes) = &r {
                for ((remote, check), table) in remotes.iter().zip(&checks).zip(&mirrors) {
                    if let Some(table) = table {
                        table.mirror(
                            &check.key,
                            remote.window,
                            remote.outcome.calls,
                            remote.outcome.bytes,
                            sub.as_ref(),
                        );
                    }
                }
            }
            let _ = checked.set(r.map_err(|e| e.to_string()));
        }))
    }
}

impl Policy for Limit {
    /// Check and count the call; answer when the limit is reached.
    fn inbound(&self, req: &mut RequestHeader, ctx: &mut RequestCtx) -> Flow {
        let me = self.id();
        if let Some(i) = ctx.limits.iter().position(|t| t.owner == me) {
            return self.after_wait(i, req, ctx);
        }
        self.check(req, ctx)
    }

    /// Give back the call of a non-success (`increment_condition: success`), count the
    /// bytes of a bandwidth quota.
    fn on_complete(&self, done: &Completed, ctx: &RequestCtx) {
        if !self.needs_completion() {
            return;
        }
        let me = self.id();
        let Some(t) = ctx.limits.iter().find(|t| t.owner == me && t.counted) else {
            return;
        };
        let success = (200..400).contains(&done.status);
        let refund = self.success_only && !success;
        let bytes = match self.bandwidth {
            Some(_) if !self.success_only || success => done.bytes_in + done.bytes_out,
            _ => 0,
        };
        if !refund && bytes == 0 {
            return;
        }
        let Some(shared) = self.counters.shared() else {
            if refund {
                self.table.refund(&t.key, t.window);
            }
            if bytes > 0 {
                self.table.add_bytes(&t.key, t.window, bytes);
            }
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (shared, counters) = (shared.clone(), self.counters.clone());
        let (kind, origin, key, window) = (self.kind, self.origin.clone(), t.key.clone(), t.window);
        let mirror = (self.kind == TableKind::Quota).then(|| self.table.clone());
        let sub = ctx.subscription_id.clone();
        rt.spawn(async move {
            let mut ops = Vec::with_capacity(2);
            if refund {
                ops.push(Op::Refund);
            }
            if bytes > 0 {
                ops.push(Op::Bytes(bytes));
            }
            for op in ops {
                match shared
                    .run(kind, &origin, &key, At::Window(window), op)
                    .await
                {
                    Ok(remote) => {
                        if let (true, Some(table)) = (remote.applied, &mirror) {
                            table.mirror(
                                &key,
                                window,
                                remote.outcome.calls,
                                remote.outcome.bytes,
                                sub.as_ref(),
                            );
                        }
                    }
                    Err(e) => counters.record_background_error(&e),
                }
            }
        });
    }
}

#[cfg(test)]
mod tests;
