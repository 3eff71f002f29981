use super::*;
use crate::simple::test_util::{ctx, req};
use crate::Registries;
use tollgate_counters::ManualClock;

/// A registry on a manual clock standing at `now` (ms).
fn registry(now: i64) -> (Arc<ManualClock>, Arc<Registries>) {
    let clock = Arc::new(ManualClock::at(now));
    let r = Registries {
        counters: Arc::new(Counters::local(clock.clone())),
        ..Registries::default()
    };
    (clock, Arc::new(r))
}

/// The global inbound policies of a file with `entries` (YAML list items).
fn policies(entries: &str, reg: &Arc<Registries>) -> Vec<Arc<dyn Policy>> {
    let yaml = format!(
        "version: 1\npolicies:\n  inbound:\n{entries}apis:\n  - id: a\n    path: /a\n    upstream: {{ targets: [\"http://127.0.0.1:1\"] }}\n"
    );
    let config = tollgate_config::parse_and_compile(&yaml).expect("valid config");
    // As the gateway builds a section: consecutive limits linked (local counters ignore the
    // links, so every test below also checks that).
    crate::build_section(&config.apis[0].chains[0].inbound, reg)
        .into_iter()
        .map(|p| p.expect("builds"))
        .collect()
}

fn run(p: &Arc<dyn Policy>, c: &mut RequestCtx) -> Result<(), Answer> {
    let mut r = req("GET", "/a/x", &[("x-client", "c1")]);
    match p.inbound(&mut r, c) {
        Flow::Continue => Ok(()),
        Flow::Respond(a) => Err(a),
        Flow::Wait(_) => panic!("local counters never wait"),
    }
}

fn header<'a>(a: &'a Answer, name: &str) -> Option<&'a str> {
    a.headers
        .iter()
        .find(|(n, _)| n.as_str() == name)
        .and_then(|(_, v)| v.to_str().ok())
}

fn remaining(c: &RequestCtx) -> Option<String> {
    c.answer_headers
        .iter()
        .rev()
        .find(|(n, _)| n.as_str() == "x-remaining")
        .map(|(_, v)| v.to_str().unwrap().to_owned())
}

#[test]
fn rate_limit_counts_per_subscription_and_answers_429_with_a_true_retry_after() {
    let (clock, reg) = registry(1_000_000);
    let p = &policies(
        "    - rate-limit: { calls: 2, renewal_period: 10s, remaining_calls_header: X-Remaining }\n",
        &reg,
    )[0];
    for left in ["1", "0"] {
        let mut c = ctx();
        run(p, &mut c).unwrap();
        assert_eq!(remaining(&c).as_deref(), Some(left));
    }
    clock.advance(2_500);
    let mut c = ctx();
    let a = run(p, &mut c).unwrap_err();
    assert_eq!(a.status, 429);
    assert_eq!(header(&a, "retry-after"), Some("8"));
    assert_eq!(header(&a, "content-type"), Some("application/problem+json"));
    assert_eq!(remaining(&c).as_deref(), Some("0"));
    // Another subscription has its own counter.
    let mut other = ctx();
    other.subscription_id = Some("sub-2".into());
    run(p, &mut other).unwrap();
    // 7 s later (one second before the advertised time): still refused; 8 s: allowed.
    clock.advance(7_000);
    assert!(run(p, &mut ctx()).is_err());
    clock.advance(1_000);
    run(p, &mut ctx()).unwrap();
}

#[test]
fn status_503_and_a_custom_retry_after_header() {
    let (_, reg) = registry(0);
    let p = &policies(
        "    - rate-limit: { calls: 1, renewal_period: 500ms, status: 503, retry_after_header: X-Wait }\n",
        &reg,
    )[0];
    run(p, &mut ctx()).unwrap();
    let a = run(p, &mut ctx()).unwrap_err();
    assert_eq!(a.status, 503);
    assert_eq!(header(&a, "x-wait"), Some("1"), "at least 1 s");
    assert_eq!(header(&a, "retry-after"), None);
}

#[test]
fn by_key_counts_per_rendered_key() {
    let (_, reg) = registry(0);
    let p = &policies(
        "    - rate-limit-by-key: { calls: 1, renewal_period: 60s, counter_key: '{request.header.x-client}' }\n",
        &reg,
    )[0];
    let send = |client: &str| {
        let mut r = req("GET", "/a/x", &[("x-client", client)]);
        matches!(p.inbound(&mut r, &mut ctx()), Flow::Continue)
    };
    assert!(send("a"));
    assert!(!send("a"));
    assert!(send("b"));
    // A huge key is hashed, and still counted.
    let long = "k".repeat(1000);
    assert!(send(&long));
    assert!(!send(&long));
}

#[test]
fn success_only_gives_back_failed_calls() {
    let (_, reg) = registry(0);
    let p = &policies(
        "    - rate-limit-by-key: { calls: 1, renewal_period: 60s, counter_key: k, increment_condition: success }\n",
        &reg,
    )[0];
    let done = |status| Completed {
        status,
        bytes_in: 0,
        bytes_out: 0,
        answered_by_gateway: false,
    };
    let mut c = ctx();
    run(p, &mut c).unwrap();
    // In flight, the call holds its place.
    assert!(run(p, &mut ctx()).is_err());
    p.on_complete(&done(502), &c);
    let mut c = ctx();
    run(p, &mut c).unwrap();
    p.on_complete(&done(204), &c);
    assert!(run(p, &mut ctx()).is_err());
}

#[test]
fn bandwidth_quota_counts_bytes_at_completion_and_answers_403() {
    let (clock, reg) = registry(1_000);
    let p = &policies(
        "    - quota: { bandwidth: 1000, calls: 100, renewal_period: 1h }\n",
        &reg,
    )[0];
    let mut c = ctx();
    run(p, &mut c).unwrap();
    p.on_complete(
        &Completed {
            status: 200,
            bytes_in: 300,
            bytes_out: 700,
            answered_by_gateway: false,
        },
        &c,
    );
    let a = run(p, &mut ctx()).unwrap_err();
    assert_eq!(a.status, 403);
    assert_eq!(header(&a, "retry-after"), Some("3599"));
    // Listed under the subscription with both counts.
    let usage = reg.counters.usage("sub-1");
    assert_eq!(usage.len(), 1);
    assert_eq!((usage[0].calls, usage[0].bytes), (1, 1000));
    clock.set(3_600_000);
    run(p, &mut ctx()).unwrap();
}

#[test]
fn calendar_quota_retry_after_points_at_the_period_end() {
    // 2026-03-01T22:30:00Z is 23:30 in Berlin: the day ends in 30 minutes.
    let (_, reg) = registry(1_772_404_200_000);
    let p = &policies(
        "    - quota: { calls: 1, renewal_period: calendar-day, timezone: Europe/Berlin }\n",
        &reg,
    )[0];
    run(p, &mut ctx()).unwrap();
    let a = run(p, &mut ctx()).unwrap_err();
    assert_eq!(header(&a, "retry-after"), Some("1800"));
}

#[test]
fn a_rebuilt_policy_at_the_same_position_keeps_its_counts() {
    let (_, reg) = registry(0);
    let entry = "    - rate-limit: { calls: 2, renewal_period: 60s }\n";
    let first = &policies(entry, &reg)[0];
    run(first, &mut ctx()).unwrap();
    // A config swap: new policy objects, same registry, same position.
    let second = &policies(entry, &reg)[0];
    run(second, &mut ctx()).unwrap();
    assert!(run(second, &mut ctx()).is_err());
    // Another position counts on its own.
    let both = policies(
        &format!("    - set-header: {{ name: x, value: y }}\n{entry}"),
        &reg,
    );
    run(&both[1], &mut ctx()).unwrap();
}

#[test]
fn two_limits_in_one_chain_keep_their_own_tickets() {
    let (_, reg) = registry(0);
    let ps = policies(
        "    - rate-limit-by-key: { calls: 5, renewal_period: 60s, counter_key: a, increment_condition: success }\n    - quota-by-key: { calls: 1, renewal_period: 60s, counter_key: b, increment_condition: success }\n",
        &reg,
    );
    let mut c = ctx();
    for p in &ps {
        run(p, &mut c).unwrap();
    }
    assert_eq!(c.limits.len(), 2);
    let failed = Completed {
        status: 500,
        bytes_in: 0,
        bytes_out: 0,
        answered_by_gateway: false,
    };
    for p in &ps {
        p.on_complete(&failed, &c);
    }
    // Both were given back: the quota of 1 passes again.
    let mut c = ctx();
    for p in &ps {
        run(p, &mut c).unwrap();
    }
}

#[test]
fn a_section_is_built_one_policy_per_instance_in_order() {
    let (_, reg) = registry(0);
    let ps = policies(
        "    - set-header: { name: x, value: y }\n    - rate-limit: { calls: 1, renewal_period: 60s }\n    - quota: { calls: 1, renewal_period: 60s }\n    - set-header: { name: z, value: y }\n    - quota-by-key: { calls: 1, renewal_period: 60s, counter_key: k }\n",
        &reg,
    );
    let kinds: Vec<String> = ps.iter().map(|p| format!("{p:?}")).collect();
    assert_eq!(kinds.len(), 5);
    assert!(!kinds[0].starts_with("Limit"), "{kinds:?}");
    assert!(kinds[1].starts_with("Limit { kind: Rate"), "{kinds:?}");
    assert!(kinds[2].starts_with("Limit { kind: Quota"), "{kinds:?}");
    assert!(!kinds[3].starts_with("Limit"));
    assert!(kinds[4].starts_with("Limit"));
    // Linked: the rate limit to the quota right after it; a run ends at another kind.
    assert!(
        kinds[1].ends_with(r#"next: ["global/inbound/2"] }"#),
        "{}",
        kinds[1]
    );
    assert!(kinds[2].ends_with("next: [] }"), "{}", kinds[2]);
    assert!(kinds[4].ends_with("next: [] }"), "{}", kinds[4]);
    // Local counters: every limit decides at once, in order; the refusal of the rate limit
    // leaves the quota after it untouched.
    let mut c = ctx();
    for p in &ps {
        run(p, &mut c).unwrap();
    }
    let a = run(&ps[1], &mut ctx()).unwrap_err();
    assert_eq!(a.status, 429);
    assert_eq!(reg.counters.usage("sub-1").len(), 2);
    assert!(reg.counters.usage("sub-1").iter().all(|u| u.calls == 1));
}

/// Counters shared through a real `redis-server` (Debian's, or `$REDIS_SERVER`).
mod shared {
    use super::*;
    use std::time::{Duration, Instant};
    use tollgate_counters::testing::{free_port, RedisServer};
    use tollgate_counters::{At, Op, SystemClock, TableKind};

    fn registry(url: &str) -> Arc<Registries> {
        let counters = Counters::redis(url, Arc::new(SystemClock)).expect("url");
        Arc::new(Registries {
            counters: Arc::new(counters),
            ..Registries::default()
        })
    }

    /// Run `chain` as the gateway does (in order; after a `Wait`, await it and call the
    /// same policy once more): the first answer, and how many waits it took.
    async fn run_chain(chain: &[Arc<dyn Policy>], c: &mut RequestCtx) -> (Option<Answer>, usize) {
        let mut waits = 0;
        for p in chain {
            let mut waited = false;
            loop {
                let mut r = req("GET", "/a/x", &[("x-client", "c1")]);
                match p.inbound(&mut r, c) {
                    Flow::Continue => break,
                    Flow::Respond(a) => return (Some(a), waits),
                    Flow::Wait(w) => {
                        assert!(!waited, "{p:?} asked to wait twice");
                        waited = true;
                        waits += 1;
                        w.await;
                    }
                }
            }
        }
        (None, waits)
    }

    /// Calls counted in Redis for the counter (`kind`, `origin`, `key`) in its current
    /// window of `period_s` seconds.
    async fn redis_calls(reg: &Registries, kind: TableKind, origin: &str, key: &str) -> u64 {
        let shared = reg.counters.shared().expect("shared");
        let period = Arc::new(CachedPeriod::new(Period::fixed(Duration::from_secs(
            30 * 86_400,
        ))));
        shared
            .run(kind, origin, key, At::Now(period), Op::Get)
            .await
            .expect("redis answers")
            .outcome
            .calls
    }

    /// 30-day windows: no test straddles two.
    const RATE_THEN_QUOTA: &str = "    - rate-limit: { calls: 2, renewal_period: 30d, remaining_calls_header: X-Remaining }\n    - quota: { calls: 3, renewal_period: 30d }\n";

    #[tokio::test]
    async fn consecutive_limits_wait_once_and_a_refused_rate_limit_consumes_no_quota() {
        let server = RedisServer::start();
        let reg = registry(&server.url());
        let chain = policies(RATE_THEN_QUOTA, &reg);
        for left in ["1", "0"] {
            let mut c = ctx();
            let (answer, waits) = run_chain(&chain, &mut c).await;
            assert!(answer.is_none(), "{answer:?}");
            assert_eq!(waits, 1, "one round trip for both limits");
            assert_eq!(remaining(&c).as_deref(), Some(left));
        }
        for _ in 0..3 {
            let mut c = ctx();
            let (answer, waits) = run_chain(&chain, &mut c).await;
            let a = answer.expect("refused");
            assert_eq!((a.status.as_u16(), waits), (429, 1));
            assert!(header(&a, "retry-after").is_some_and(|s| s.parse::<u64>().unwrap() >= 1));
            assert_eq!(remaining(&c).as_deref(), Some("0"));
        }
        let (rate, quota) = ("global/inbound/0", "global/inbound/1");
        assert_eq!(redis_calls(&reg, TableKind::Rate, rate, "sub-1").await, 2);
        assert_eq!(
            redis_calls(&reg, TableKind::Quota, quota, "sub-1").await,
            2,
            "the refused calls consumed no quota"
        );
        // The local mirror of the quota (usage listing, persistence) follows Redis.
        assert_eq!(reg.counters.usage("sub-1")[0].calls, 2);
    }

    #[tokio::test]
    async fn a_refusing_quota_after_a_rate_limit_answers_403_without_a_second_wait() {
        let server = RedisServer::start();
        let reg = registry(&server.url());
        let chain = policies(
            "    - rate-limit: { calls: 10, renewal_period: 30d, remaining_calls_header: X-Remaining }\n    - quota: { calls: 1, renewal_period: 30d }\n    - rate-limit-by-key: { calls: 10, renewal_period: 30d, counter_key: k }\n",
            &reg,
        );
        let (answer, waits) = run_chain(&chain, &mut ctx()).await;
        assert!(answer.is_none());
        assert_eq!(waits, 1);
        let mut c = ctx();
        let (answer, waits) = run_chain(&chain, &mut c).await;
        let a = answer.expect("quota refused");
        assert_eq!((a.status.as_u16(), waits), (403, 1));
        assert!(header(&a, "retry-after").is_some());
        // The rate limit before it counted the call (as when checked one by one), the one
        // after it did not.
        assert_eq!(remaining(&c).as_deref(), Some("8"));
        assert_eq!(
            redis_calls(&reg, TableKind::Rate, "global/inbound/0", "sub-1").await,
            2
        );
        assert_eq!(
            redis_calls(&reg, TableKind::Rate, "global/inbound/2", "k").await,
            1
        );
    }

    #[tokio::test]
    async fn refunds_of_linked_limits_go_to_each_counter() {
        let server = RedisServer::start();
        let reg = registry(&server.url());
        let chain = policies(
            "    - rate-limit-by-key: { calls: 1, renewal_period: 30d, counter_key: a, increment_condition: success }\n    - quota-by-key: { calls: 1, bandwidth: 100000, renewal_period: 30d, counter_key: b, increment_condition: success }\n",
            &reg,
        );
        let mut c = ctx();
        assert!(run_chain(&chain, &mut c).await.0.is_none());
        let failed = Completed {
            status: 502,
            bytes_in: 0,
            bytes_out: 0,
            answered_by_gateway: false,
        };
        for p in &chain {
            p.on_complete(&failed, &c);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let rate = redis_calls(&reg, TableKind::Rate, "global/inbound/0", "a").await;
            let quota = redis_calls(&reg, TableKind::Quota, "global/inbound/1", "b").await;
            if (rate, quota) == (0, 0) {
                break;
            }
            assert!(Instant::now() < deadline, "not refunded: {rate}, {quota}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Both given back: the next call passes both limits of 1, and a success keeps
        // them (with its bytes on the quota).
        let mut c = ctx();
        assert!(run_chain(&chain, &mut c).await.0.is_none());
        let ok = Completed {
            status: 200,
            bytes_in: 10,
            bytes_out: 90,
            ..failed
        };
        for p in &chain {
            p.on_complete(&ok, &c);
        }
        let shared = reg.counters.shared().expect("shared").clone();
        let period = Arc::new(CachedPeriod::new(Period::fixed(Duration::from_secs(
            30 * 86_400,
        ))));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let r = shared
                .run(
                    TableKind::Quota,
                    "global/inbound/1",
                    "b",
                    At::Now(period.clone()),
                    Op::Get,
                )
                .await
                .expect("redis answers");
            if r.outcome.bytes == 100 {
                assert_eq!(r.outcome.calls, 1);
                break;
            }
            assert!(Instant::now() < deadline, "bytes not counted: {r:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (answer, _) = run_chain(&chain, &mut ctx()).await;
        assert_eq!(answer.expect("refused").status, 429);
    }

    #[tokio::test]
    async fn a_store_failure_applies_each_policys_on_store_error_after_one_wait() {
        // Nothing listens there.
        let reg = registry(&format!("redis://127.0.0.1:{}/", free_port()));
        // Rate limits allow by default, quotas deny.
        let chain = policies(RATE_THEN_QUOTA, &reg);
        let (answer, waits) = run_chain(&chain, &mut ctx()).await;
        let a = answer.expect("the quota denies");
        assert_eq!((a.status.as_u16(), waits), (503, 1));
        assert_eq!(header(&a, "retry-after"), Some("1"));
        let errors = reg.counters.store_errors();
        assert_eq!((errors.errors, errors.allowed, errors.denied), (2, 1, 1));
        // With both allowing, the call goes through uncounted.
        let chain = policies(
            "    - rate-limit: { calls: 2, renewal_period: 30d }\n    - quota: { calls: 3, renewal_period: 30d, on_store_error: allow }\n",
            &reg,
        );
        let (answer, waits) = run_chain(&chain, &mut ctx()).await;
        assert!(answer.is_none());
        assert_eq!(waits, 1);
        let errors = reg.counters.store_errors();
        assert_eq!((errors.errors, errors.allowed, errors.denied), (4, 3, 1));
    }
}
