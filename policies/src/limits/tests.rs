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
    config.apis[0].chains[0]
        .inbound
        .iter()
        .map(|i| crate::build(i, reg).expect("builds"))
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
