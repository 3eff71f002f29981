//! Validate + compile + swap of a large config: 1,000 APIs × 10 operations, each API with
//! policies at API and operation level. Target: under 200 ms. Run with
//! `cargo bench -p tollgate-gateway --bench swap`; results are in docs/benchmarks.md.
#![allow(missing_docs)]

/// The same allocator as the `tollgate` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, Criterion};
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
    let texts = [config(1000, 10, 1), config(1000, 10, 2)];
    let gw = Gateway::new(Arc::new(NoSubscriptions));
    let mut group = c.benchmark_group("swap");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    let mut i = 0usize;
    group.bench_function(
        "validate + compile + swap, 1000 APIs x 10 operations",
        |b| {
            b.iter(|| {
                i += 1;
                let compiled = tollgate_config::parse_and_compile(&texts[i % 2]).expect("valid");
                gw.apply(compiled, None).expect("applies");
            })
        },
    );
    group.bench_function("validate + compile only", |b| {
        b.iter(|| tollgate_config::parse_and_compile(&texts[0]).expect("valid"))
    });
    group.bench_function("swap only (build policies, reuse pools, store)", |b| {
        b.iter_batched(
            || tollgate_config::parse_and_compile(&texts[0]).expect("valid"),
            |compiled| gw.apply(compiled, None).expect("applies"),
            criterion::BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
