use super::*;
use std::time::Duration;

fn clocked(now: i64) -> (Arc<ManualClock>, Counters) {
    let clock = Arc::new(ManualClock::at(now));
    (clock.clone(), Counters::local(clock))
}

fn calls(limit: u64) -> Take<'static> {
    Take {
        calls_limit: Some(limit),
        ..Take::default()
    }
}

#[test]
fn exactly_n_per_window_at_the_edges() {
    let (clock, c) = clocked(1_000_000);
    let t = c.table(TableKind::Rate, "api:a/inbound/0");
    let p = Period::fixed(Duration::from_secs(2));
    let take = |t: &Table| {
        let now = clock.now_ms();
        t.take("k", p.window_at(now), calls(3))
    };
    for i in 1..=3 {
        let o = take(&t);
        assert_eq!((o.refused, o.calls), (None, i));
    }
    assert_eq!(take(&t).refused, Some(Refusal::Calls));
    // The last millisecond of the window: still refused, Retry-After 1 s.
    clock.set(1_001_999);
    assert_eq!(take(&t).refused, Some(Refusal::Calls));
    assert_eq!(
        p.window_at(clock.now_ms()).retry_after_secs(clock.now_ms()),
        1
    );
    // The first millisecond of the next: three more, then refused again.
    clock.set(1_002_000);
    for i in 1..=3 {
        assert_eq!(take(&t).calls, i);
    }
    assert_eq!(take(&t).refused, Some(Refusal::Calls));
}

#[test]
fn retry_after_is_true() {
    // For every moment of a window, the advertised wait lands in the next window (where a
    // call succeeds) and one second less does not.
    let (clock, c) = clocked(0);
    let t = c.table(TableKind::Rate, "o");
    let p = Period::fixed(Duration::from_secs(3));
    for start in (0..3000).step_by(250) {
        clock.set(30_000 + start);
        let now = clock.now_ms();
        t.take("k", p.window_at(now), calls(1));
        let refused = t.take("k", p.window_at(now), calls(1));
        assert_eq!(refused.refused, Some(Refusal::Calls));
        let wait = p.window_at(now).retry_after_secs(now) as i64 * 1000;
        // A second before the advertised time: still refused (same window) or, when the
        // rounding put that second past the window's end, already allowed.
        clock.set(now + wait - 1000);
        if p.window_at(clock.now_ms()) == p.window_at(now) {
            assert_eq!(
                t.take("k", p.window_at(clock.now_ms()), calls(1)).refused,
                Some(Refusal::Calls)
            );
        }
        clock.set(now + wait);
        let after = t.take("k", p.window_at(clock.now_ms()), calls(1));
        assert_eq!(after.refused, None, "after Retry-After at {start}");
    }
}

#[test]
fn sixteen_threads_count_exactly() {
    let c = Arc::new(Counters::default());
    let t = c.table(TableKind::Rate, "o");
    // A window long enough that the test never straddles two.
    let w = Window {
        start_ms: 0,
        end_ms: i64::MAX,
    };
    let allowed = Arc::new(AtomicU64::new(0));
    std::thread::scope(|s| {
        for _ in 0..16 {
            let t = t.clone();
            let allowed = allowed.clone();
            s.spawn(move || {
                for _ in 0..2_000 {
                    if t.take("shared", w, calls(10_007)).refused.is_none() {
                        allowed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(allowed.load(Ordering::Relaxed), 10_007);
    assert_eq!(t.get("shared", w), (10_007, 0));
}

#[test]
fn refunds_and_bytes_stay_in_their_window() {
    let (clock, c) = clocked(10_000);
    let t = c.table(TableKind::Quota, "q");
    let p = Period::fixed(Duration::from_secs(10));
    let w = p.window_at(clock.now_ms());
    let take = Take {
        calls_limit: Some(2),
        bytes_limit: Some(100),
        subscription: None,
    };
    assert_eq!(t.take("k", w, take).calls, 1);
    t.refund("k", w);
    assert_eq!(t.get("k", w), (0, 0));
    t.take("k", w, take);
    t.add_bytes("k", w, 150);
    // Over the bandwidth: refused, though calls are left.
    let o = t.take("k", w, take);
    assert_eq!(o.refused, Some(Refusal::Bandwidth));
    assert_eq!((o.calls, o.bytes), (1, 150));
    // A refund for a window that is over does nothing to the new one.
    clock.advance(10_000);
    let w2 = p.window_at(clock.now_ms());
    t.take("k", w2, take);
    t.refund("k", w);
    t.add_bytes("k", w, 5);
    assert_eq!(t.get("k", w2), (1, 0));
}

#[test]
fn tables_are_kept_by_origin() {
    let c = Counters::default();
    let a = c.table(TableKind::Rate, "api:a/inbound/0");
    let b = c.table(TableKind::Rate, "api:a/inbound/0");
    assert!(Arc::ptr_eq(&a, &b));
    let q = c.table(TableKind::Quota, "api:a/inbound/0");
    assert!(!Arc::ptr_eq(&a, &q));
    // An empty table nobody holds goes at the next sweep; a held one stays.
    drop(b);
    drop(q);
    c.sweep_at(0);
    assert_eq!(c.rate.len(), 1);
    assert_eq!(c.quota.len(), 0);
}

#[test]
fn a_million_keys_are_evicted_once_their_window_is_over() {
    let (clock, c) = clocked(0);
    let t = c.table(TableKind::Rate, "api:a/inbound/0");
    let p = Period::fixed(Duration::from_secs(1));
    let w = p.window_at(clock.now_ms());
    let mut key = String::with_capacity(16);
    for i in 0..1_000_000u32 {
        use std::fmt::Write;
        key.clear();
        let _ = write!(key, "client-{i}");
        t.take(&key, w, calls(5));
    }
    assert_eq!(c.len(), 1_000_000);
    let full = c.approx_memory();
    // About 100 bytes a key (entry, key text, map slack).
    assert!(full < 200 * 1_000_000, "{full} bytes for 1M keys");
    // Still live: a sweep keeps them.
    assert_eq!(c.sweep_at(clock.now_ms()), 0);
    // The window ends: every key goes, and the map gives its memory back.
    clock.advance(1000);
    assert_eq!(c.sweep_at(clock.now_ms()), 1_000_000);
    assert_eq!(c.len(), 0);
    let empty = c.approx_memory();
    assert!(empty < 1_000_000, "{empty} bytes left after eviction");
    // Keys of the new window are counted afresh.
    let w2 = p.window_at(clock.now_ms());
    assert_eq!(t.take("client-1", w2, calls(5)).calls, 1);
}

#[test]
fn sweeps_run_at_most_once_a_second() {
    let (clock, c) = clocked(5_000);
    let t = c.table(TableKind::Rate, "o");
    t.take(
        "k",
        Window {
            start_ms: 0,
            end_ms: 5_500,
        },
        calls(1),
    );
    assert_eq!(c.sweep(), 0);
    clock.set(5_600);
    assert_eq!(c.sweep(), 0, "less than a second after the last sweep");
    clock.set(6_000);
    assert_eq!(c.sweep(), 1);
}

#[test]
fn flush_and_load_keep_quota_counts() {
    let (clock, c) = clocked(100_000);
    let p = Period::fixed(Duration::from_secs(60));
    let w = p.window_at(clock.now_ms());
    let sub: Arc<str> = Arc::from("sub-1");
    let take = Take {
        calls_limit: Some(10),
        bytes_limit: None,
        subscription: Some(&sub),
    };
    let t = c.table(TableKind::Quota, "product:p/inbound/0");
    for _ in 0..4 {
        t.take("sub-1", w, take);
    }
    t.add_bytes("sub-1", w, 42);
    // Rate limits are not persisted.
    c.table(TableKind::Rate, "x").take("sub-1", w, calls(3));
    let mut stored = Vec::new();
    let n = c
        .flush(|rows, _| {
            stored = rows.to_vec();
            Ok::<_, String>(())
        })
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        stored,
        vec![PersistedCounter {
            origin: "product:p/inbound/0".into(),
            key: "sub-1".into(),
            subscription: Some("sub-1".into()),
            window: w,
            calls: 4,
            bytes: 42,
        }]
    );
    // Nothing changed: nothing to write.
    assert_eq!(c.flush(|_, _| Ok::<_, String>(())).unwrap(), 0);
    // A failed save keeps them for the next flush.
    t.take("sub-1", w, take);
    assert!(c.flush(|_, _| Err("disk full")).is_err());
    assert_eq!(c.flush(|_, _| Ok::<_, String>(())).unwrap(), 1);

    // A new process: the counts come back, expired ones do not.
    let (clock2, c2) = clocked(clock.now_ms() + 1000);
    let mut old = stored[0].clone();
    old.window = Window {
        start_ms: 0,
        end_ms: 60_000,
    };
    old.key = "old".into();
    assert_eq!(c2.load(vec![stored[0].clone(), old]), 1);
    let t2 = c2.table(TableKind::Quota, "product:p/inbound/0");
    assert_eq!(t2.get("sub-1", p.window_at(clock2.now_ms())), (4, 42));
    let usage = c2.usage("sub-1");
    assert_eq!(usage.len(), 1);
    assert_eq!((usage[0].calls, usage[0].bytes), (4, 42));
    assert_eq!(usage[0].window.end_ms, w.end_ms);
    assert!(c2.usage("sub-2").is_empty());
}

#[test]
fn reset_removes_a_subscriptions_counters() {
    let c = Counters::default();
    let w = Window {
        start_ms: 0,
        end_ms: i64::MAX,
    };
    let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
    let t = c.table(TableKind::Quota, "q");
    for sub in [&a, &b] {
        t.take(
            sub,
            w,
            Take {
                calls_limit: Some(1),
                bytes_limit: None,
                subscription: Some(sub),
            },
        );
    }
    let (removed, n) = c.reset_subscription("a", || Ok::<_, String>(7)).unwrap();
    assert_eq!(n, 7);
    assert_eq!(removed.len(), 1);
    assert!(c.usage("a").is_empty());
    assert_eq!(c.usage("b").len(), 1);
}

#[test]
fn long_keys_are_hashed() {
    assert_eq!(counter_key("short"), "short");
    let long = "x".repeat(500);
    let k = counter_key(&long);
    assert!(k.starts_with("sha256:") && k.len() == 71, "{k}");
    assert_eq!(k, counter_key(&long));
}

#[test]
fn store_errors_are_counted() {
    let c = Counters::default();
    c.record_store_error(&"down", true);
    c.record_store_error(&"down", false);
    c.record_store_error(&"down", false);
    assert_eq!(
        c.store_errors(),
        StoreErrorCounts {
            errors: 3,
            allowed: 1,
            denied: 2
        }
    );
}
