//! [`RedisCounters`] against a real `redis-server` (Debian's, or `$REDIS_SERVER`), started on
//! a free port of 127.0.0.1 without persistence and killed when the test ends.

use super::*;
use crate::clock::{ManualClock, SystemClock};
use crate::testing::{free_port, RedisServer};
use crate::window::Period;

/// Scripts run so far (`EVALSHA` and `EVAL` calls, by `INFO commandstats`): each is one
/// round trip of a counter operation.
async fn script_runs(server: &RedisServer) -> u64 {
    let client = redis::Client::open(server.url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .expect("INFO");
    ["cmdstat_evalsha:", "cmdstat_eval:"]
        .iter()
        .filter_map(|name| {
            let line = info.lines().find(|l| l.starts_with(name))?;
            let calls = line.split_once("calls=")?.1.split(',').next()?;
            calls.parse::<u64>().ok()
        })
        .sum()
}

/// A period long enough that no test straddles two windows (30 days from the epoch).
fn month() -> Arc<CachedPeriod> {
    Arc::new(CachedPeriod::new(Period::fixed(Duration::from_secs(
        30 * 86_400,
    ))))
}

fn check(kind: TableKind, origin: &str, calls: Option<u64>, bytes: Option<u64>) -> Check {
    Check {
        kind,
        origin: Arc::from(origin),
        key: Arc::from("k"),
        period: month(),
        calls_limit: calls,
        bytes_limit: bytes,
    }
}

/// The calls counted in Redis for `c`, read with [`RedisCounters::run`].
async fn counted(r: &RedisCounters, c: &Check) -> u64 {
    r.run(
        c.kind,
        &c.origin,
        &c.key,
        At::Now(c.period.clone()),
        Op::Get,
    )
    .await
    .expect("redis answers")
    .outcome
    .calls
}

fn codes(remotes: &[Remote]) -> Vec<Option<Refusal>> {
    remotes.iter().map(|r| r.outcome.refused).collect()
}

#[tokio::test]
async fn take_all_counts_in_order_and_stops_at_the_first_refusal() {
    let server = RedisServer::start();
    let r = RedisCounters::new(&server.url(), Arc::new(SystemClock)).expect("url");
    // A rate limit of 2, then a quota of 10: the third call is refused by the rate limit and
    // does not consume quota.
    let rate = check(TableKind::Rate, "api:a/inbound/0", Some(2), None);
    let quota = check(TableKind::Quota, "api:a/inbound/1", Some(10), None);
    let both = [rate.clone(), quota.clone()];
    for n in 1..=2 {
        let out = r.take_all(&both).await.expect("redis answers");
        assert_eq!(codes(&out), [None, None]);
        assert_eq!((out[0].outcome.calls, out[1].outcome.calls), (n, n));
        assert!(out.iter().all(|o| o.applied && o.window.contains(o.now_ms)));
    }
    for _ in 0..3 {
        let out = r.take_all(&both).await.expect("redis answers");
        assert_eq!(
            codes(&out),
            [Some(Refusal::Calls)],
            "the quota is not checked"
        );
        assert_eq!(out[0].outcome.calls, 2);
    }
    assert_eq!(counted(&r, &rate).await, 2);
    assert_eq!(
        counted(&r, &quota).await,
        2,
        "refused calls consumed no quota"
    );

    // The other way round: a quota of 1 refusing keeps the rate limit after it untouched,
    // while a counter before the refusing one stays counted (as when run one by one).
    let first = check(TableKind::Rate, "api:b/inbound/0", Some(100), None);
    let q1 = check(TableKind::Quota, "api:b/inbound/1", Some(1), None);
    let last = check(TableKind::Rate, "api:b/inbound/2", Some(100), None);
    let three = [first.clone(), q1.clone(), last.clone()];
    assert_eq!(
        codes(&r.take_all(&three).await.expect("redis answers")),
        [None, None, None]
    );
    let out = r.take_all(&three).await.expect("redis answers");
    assert_eq!(codes(&out), [None, Some(Refusal::Calls)]);
    assert_eq!(counted(&r, &first).await, 2);
    assert_eq!(counted(&r, &q1).await, 1);
    assert_eq!(counted(&r, &last).await, 1);
}

#[tokio::test]
async fn take_all_refuses_on_bandwidth_and_shares_keys_with_single_operations() {
    let server = RedisServer::start();
    let r = RedisCounters::new(&server.url(), Arc::new(SystemClock)).expect("url");
    let q = check(TableKind::Quota, "api:a/inbound/0", Some(100), Some(1000));
    let out = r
        .take_all(std::slice::from_ref(&q))
        .await
        .expect("redis answers");
    assert_eq!(codes(&out), [None]);
    // Bytes counted after the call (at completion) in the window it was counted in.
    let w = out[0].window;
    r.run(q.kind, &q.origin, &q.key, At::Window(w), Op::Bytes(1000))
        .await
        .expect("redis answers");
    let out = r
        .take_all(std::slice::from_ref(&q))
        .await
        .expect("redis answers");
    assert_eq!(codes(&out), [Some(Refusal::Bandwidth)]);
    assert_eq!((out[0].outcome.calls, out[0].outcome.bytes), (1, 1000));
    // The single-counter script (still used by refunds, bytes, reads, and by nodes of the
    // previous release during a rolling upgrade) counts in the same keys.
    let rate = check(TableKind::Rate, "api:a/inbound/1", Some(2), None);
    let take = Op::Take {
        calls_limit: Some(2),
        bytes_limit: None,
    };
    let one = r
        .run(rate.kind, &rate.origin, &rate.key, At::Now(month()), take)
        .await
        .expect("redis answers");
    assert_eq!(one.outcome.calls, 1);
    let out = r
        .take_all(std::slice::from_ref(&rate))
        .await
        .expect("redis answers");
    assert_eq!((out[0].outcome.refused, out[0].outcome.calls), (None, 2));
    let one = r
        .run(rate.kind, &rate.origin, &rate.key, At::Now(month()), take)
        .await
        .expect("redis answers");
    assert_eq!(one.outcome.refused, Some(Refusal::Calls));
    assert!(r.take_all(&[]).await.expect("nothing to do").is_empty());
}

#[tokio::test]
async fn every_counter_expires_at_its_window_end_even_when_its_first_call_is_refused() {
    let server = RedisServer::start();
    let r = RedisCounters::new(&server.url(), Arc::new(SystemClock)).expect("url");
    let client = redis::Client::open(server.url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    // A limit of 0 refuses the very call that creates the counter.
    let zero = check(TableKind::Quota, "q0", Some(0), None);
    let ok = check(TableKind::Rate, "r", Some(10), None);
    for c in [&zero, &ok] {
        let out = r
            .take_all(std::slice::from_ref(c))
            .await
            .expect("redis answers");
        let w = out[0].window;
        let key = r.key(c.kind, &c.origin, &c.key, w);
        let expire_at: i64 = redis::cmd("PEXPIRETIME")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("PEXPIRETIME");
        assert_eq!(expire_at, w.end_ms, "{key}");
        let (calls, bytes): (Option<i64>, Option<i64>) = redis::cmd("HMGET")
            .arg(&key)
            .arg("c")
            .arg("b")
            .query_async(&mut conn)
            .await
            .expect("HMGET");
        assert_eq!(
            (calls, bytes),
            (Some(if c.calls_limit == Some(0) { 0 } else { 1 }), None)
        );
    }
    assert_eq!(
        counted(&r, &zero).await,
        0,
        "the refused call was not counted"
    );
}

#[tokio::test]
async fn take_all_is_one_round_trip_whatever_the_number_of_counters() {
    let server = RedisServer::start();
    let r = RedisCounters::new(&server.url(), Arc::new(SystemClock)).expect("url");
    let checks = [
        check(TableKind::Rate, "global/inbound/0", Some(1000), None),
        check(TableKind::Rate, "product:p/inbound/1", Some(1000), None),
        check(
            TableKind::Quota,
            "product:p/inbound/2",
            Some(1000),
            Some(1 << 40),
        ),
        check(TableKind::Quota, "api:a/inbound/0", Some(1000), None),
    ];
    // Warm up: connect, load the script.
    r.take_all(&checks).await.expect("redis answers");
    let before = script_runs(&server).await;
    for _ in 0..20 {
        let out = r.take_all(&checks).await.expect("redis answers");
        assert_eq!(out.len(), 4);
    }
    assert_eq!(
        script_runs(&server).await - before,
        20,
        "one script run each"
    );
    for c in &checks {
        assert_eq!(counted(&r, c).await, 21);
    }
}

#[tokio::test]
async fn take_all_counts_in_redis_windows_whatever_the_node_clock() {
    let server = RedisServer::start();
    // A node whose clock is two hours behind, with a one-hour period: its first proposed
    // window is wrong, the script answers with Redis's time, the node retries right and
    // learns the offset.
    let now = SystemClock.now_ms();
    let clock = Arc::new(ManualClock::at(now - 7_200_000));
    let r = RedisCounters::new(&server.url(), clock).expect("url");
    let hour = Arc::new(CachedPeriod::new(Period::fixed(Duration::from_secs(3600))));
    let c = Check {
        period: hour.clone(),
        ..check(TableKind::Rate, "o", Some(5), None)
    };
    let out = r
        .take_all(std::slice::from_ref(&c))
        .await
        .expect("redis answers");
    assert!(out[0].window.contains(out[0].now_ms), "{out:?}");
    assert_eq!(out[0].window, hour.window_at(out[0].now_ms));
    assert!((r.now_estimate() - SystemClock.now_ms()).abs() < 60_000);
    // With the offset learnt, the next check is right the first time.
    let before = script_runs(&server).await;
    let out = r
        .take_all(std::slice::from_ref(&c))
        .await
        .expect("redis answers");
    assert_eq!(out[0].outcome.calls, 2);
    assert_eq!(script_runs(&server).await - before, 1);
}

#[tokio::test]
async fn take_all_fails_fast_when_redis_is_unreachable() {
    let port = free_port();
    let r = RedisCounters::new(&format!("redis://127.0.0.1:{port}/"), Arc::new(SystemClock))
        .expect("url");
    let started = std::time::Instant::now();
    let err = r
        .take_all(&[check(TableKind::Quota, "o", Some(1), None)])
        .await
        .expect_err("nothing listens there");
    assert!(started.elapsed() < Duration::from_secs(3), "{err}");
}

#[test]
fn urls_and_errors_never_show_the_password() {
    assert_eq!(
        redacted_url("rediss://:hunter2@cache.example:6380/0"),
        "rediss://:***@cache.example:6380/0"
    );
    assert_eq!(
        redacted_url("redis://app:hunter2@10.0.0.5/"),
        "redis://app:***@10.0.0.5/"
    );
    assert_eq!(
        redacted_url("redis://10.0.0.5:6379"),
        "redis://10.0.0.5:6379"
    );
    assert_eq!(redacted_url("redis://app@10.0.0.5"), "redis://app@10.0.0.5");
    // A bad URL's error names it without the password.
    let e = RedisCounters::new("redis://:hunter2@[nope", Arc::new(SystemClock)).unwrap_err();
    assert!(!e.contains("hunter2"), "{e}");
    // TLS material needs a rediss:// URL.
    let tls = RedisTls {
        ca: Some(b"-----BEGIN CERTIFICATE-----".to_vec()),
        client: None,
    };
    let e =
        RedisCounters::with_tls("redis://:hunter2@h/", &tls, Arc::new(SystemClock)).unwrap_err();
    assert!(
        e.contains("need a rediss:// URL") && !e.contains("hunter2"),
        "{e}"
    );
    // PEM files that hold nothing usable are refused before any connection.
    let e = RedisCounters::with_tls("rediss://h/", &tls, Arc::new(SystemClock)).unwrap_err();
    assert!(e.starts_with("--redis-ca:"), "{e}");
    let not_pem = RedisTls {
        ca: Some(b"version: 1".to_vec()),
        client: None,
    };
    let e = RedisCounters::with_tls("rediss://h/", &not_pem, Arc::new(SystemClock)).unwrap_err();
    assert_eq!(e, "--redis-ca: no PEM certificate");
}
