//! Compile + swap time against config size: 10, 100, 1,000 and 10,000 operations (APIs of
//! 10 operations each, the shape of the `swap` bench: a global outbound policy, an
//! API-level inbound policy with `base`, an operation-level policy with `base` on every
//! operation), alternating two generations so every run really swaps. Run with
//! `cargo bench -p tollgate-gateway --bench swap_scale`; results are in docs/benchmarks.md
//! ("Peers" → scale figures).
#![allow(missing_docs)]

/// The same allocator as the `tollgate` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::sync::Arc;
use std::time::Duration;
use tollgate_gateway::{Gateway, NoSubscriptions};

fn config(apis: usize, ops: usize, generation: usize) -> String {
    let mut s = String::from(
        "version: 1\npolicies:\n  outbound:\n    - set-header: { name: X-Gateway, value: tollgate }\napis:\n",
    );
    for a in 0..apis {
        s.push_str(&format!(
            "  - id: api-{a}\n    path: /svc-{a}\n    subscription_required: false\n    upstream: {{ targets: [\"http://127.0.0.1:{}\"] }}\n    policies:\n      inbound:\n        - base\n        - set-header: {{ name: X-Gen, value: \"{generation}\" }}\n    operations:\n",
            10000 + a
        ));
        for o in 0..ops {
            s.push_str(&format!(
                "      - id: op-{o}\n        method: GET\n        path: \"/res-{o}/{{id}}\"\n        policies:\n          inbound: [ base, {{ check-header: {{ name: X-Key, values: [\"k{o}\"] }} }} ]\n"
            ));
        }
    }
    s
}

fn bench(c: &mut Criterion) {
    let gw = Gateway::new(Arc::new(NoSubscriptions));
    let mut group = c.benchmark_group("swap_scale");
    group.sample_size(10);
    for operations in [10usize, 100, 1_000, 10_000] {
        let apis = operations / 10;
        let texts = [config(apis, 10, 1), config(apis, 10, 2)];
        group.throughput(Throughput::Elements(operations as u64));
        group.measurement_time(Duration::from_secs(if operations >= 10_000 {
            15
        } else {
            4
        }));
        let mut i = 0usize;
        group.bench_with_input(
            BenchmarkId::new("validate + compile + swap", operations),
            &texts,
            |b, texts| {
                b.iter(|| {
                    i += 1;
                    let compiled =
                        tollgate_config::parse_and_compile(&texts[i % 2]).expect("valid");
                    gw.apply(compiled, None).expect("applies");
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("swap only", operations),
            &texts,
            |b, texts| {
                b.iter_batched(
                    || tollgate_config::parse_and_compile(&texts[0]).expect("valid"),
                    |compiled| gw.apply(compiled, None).expect("applies"),
                    criterion::BatchSize::PerIteration,
                )
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
