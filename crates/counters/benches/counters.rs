//! Checks per second: local counters (one hot key, a million keys, a calendar period,
//! 4 threads on one key) and counters shared through a real `redis-server` (started here on
//! a free port when the binary exists; skipped otherwise): one check at a time (a round
//! trip each) and 64 checks in flight at once.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tollgate_counters::{
    At, CachedPeriod, CalendarKind, Counters, Op, Period, SystemClock, TableKind, Take,
};

fn take(limit: u64) -> Take<'static> {
    Take {
        calls_limit: Some(limit),
        ..Take::default()
    }
}

fn local(c: &mut Criterion) {
    let counters = Counters::default();
    let table = counters.table(TableKind::Rate, "api:a/inbound/0");
    let period = CachedPeriod::new(Period::fixed(Duration::from_secs(3600)));
    let mut g = c.benchmark_group("local");
    g.throughput(Throughput::Elements(1));
    g.bench_function("check, one hot key", |b| {
        b.iter(|| {
            let w = period.window_at(counters.now_ms());
            table.take("sub-1", w, take(u64::MAX))
        })
    });
    let keys: Vec<String> = (0..1_000_000).map(|i| format!("client-{i}")).collect();
    let mut i = 0usize;
    g.bench_function("check, 1M distinct keys", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            let w = period.window_at(counters.now_ms());
            table.take(&keys[i], w, take(u64::MAX))
        })
    });
    let cal = CachedPeriod::new(
        Period::calendar(CalendarKind::Month, "Europe/Berlin").expect("a known zone"),
    );
    let quota = counters.table(TableKind::Quota, "product:p/inbound/1");
    g.bench_function("check, calendar-month quota", |b| {
        b.iter(|| {
            let w = cal.window_at(counters.now_ms());
            quota.take("sub-1", w, take(u64::MAX))
        })
    });
    g.throughput(Throughput::Elements(4 * 10_000));
    g.bench_function("4 threads x 10k checks, one key", |b| {
        b.iter(|| {
            std::thread::scope(|s| {
                for _ in 0..4 {
                    s.spawn(|| {
                        for _ in 0..10_000 {
                            let w = period.window_at(counters.now_ms());
                            table.take("contended", w, take(u64::MAX));
                        }
                    });
                }
            })
        })
    });
    g.finish();
}

struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> Option<(Redis, String)> {
    let bin = std::path::Path::new("/usr/bin/redis-server");
    if !bin.exists() {
        eprintln!("no /usr/bin/redis-server: the Redis benchmarks are skipped");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new(bin)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let redis = Redis(child);
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((redis, format!("redis://127.0.0.1:{port}/")));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

fn shared(c: &mut Criterion) {
    let Some((_redis, url)) = start_redis() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let counters = Arc::new(Counters::redis(&url, Arc::new(SystemClock)).expect("redis url"));
    let redis = counters.shared().expect("shared").clone();
    let period = Arc::new(CachedPeriod::new(Period::fixed(Duration::from_secs(3600))));
    let op = Op::Take {
        calls_limit: Some(u64::MAX / 2),
        bytes_limit: None,
    };
    // Warm up: connect, load the script.
    rt.block_on(redis.run(TableKind::Rate, "o", "k", At::Now(period.clone()), op))
        .expect("redis answers");
    let mut g = c.benchmark_group("redis");
    g.throughput(Throughput::Elements(1));
    g.bench_function("check, one at a time", |b| {
        b.iter(|| {
            rt.block_on(redis.run(TableKind::Rate, "o", "k", At::Now(period.clone()), op))
                .expect("redis answers")
        })
    });
    g.throughput(Throughput::Elements(64));
    g.bench_function("64 checks in flight", |b| {
        b.iter_batched(
            || (),
            |()| {
                rt.block_on(async {
                    let mut set = tokio::task::JoinSet::new();
                    for i in 0..64 {
                        let redis = redis.clone();
                        let period = period.clone();
                        set.spawn(async move {
                            let key = format!("k{}", i % 8);
                            redis
                                .run(TableKind::Rate, "o", &key, At::Now(period), op)
                                .await
                                .expect("redis answers")
                        });
                    }
                    while set.join_next().await.is_some() {}
                })
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, local, shared);
criterion_main!(benches);
