//! The per-request work the core adds before any policy runs: path normalization, API
//! lookup by prefix, operation matching and chain selection. Run with `cargo bench -p
//! tollgate-gateway --bench route`; results are reported in docs/benchmarks.md.

#![allow(missing_docs)]

/// The same allocator as the `tollgate` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::Method;
use tollgate_config::OpMatch;
use tollgate_gateway::normalize::normalize_path;

fn config(apis: usize, ops: usize) -> String {
    let mut s = String::from("version: 1\napis:\n");
    for a in 0..apis {
        s.push_str(&format!(
            "  - id: api-{a}\n    path: /svc-{a}\n    subscription_required: false\n    upstream: {{ targets: [\"http://127.0.0.1:9\"] }}\n    operations:\n"
        ));
        for o in 0..ops {
            s.push_str(&format!(
                "      - {{ id: op-{o}, method: GET, path: \"/res-{o}/{{id}}/items/{{item}}\" }}\n      - {{ id: op-{o}-list, method: GET, path: \"/res-{o}\" }}\n"
            ));
        }
    }
    s
}

fn bench(c: &mut Criterion) {
    let cfg = tollgate_config::parse_and_compile(&config(50, 10)).expect("valid bench config");
    let raw = b"/svc-37/res-7/12345/items/abc";
    c.bench_function("normalize_path (already normal)", |b| {
        b.iter(|| normalize_path(black_box(raw)).unwrap())
    });
    c.bench_function("normalize_path (dot segments, escapes)", |b| {
        b.iter(|| normalize_path(black_box(b"/svc-37/./res-7/%31%32/../12345/items/abc")).unwrap())
    });
    c.bench_function("route + operation + chain (50 APIs x 20 operations)", |b| {
        let path = normalize_path(raw).unwrap();
        b.iter(|| {
            let (api_idx, rest) = cfg.route(black_box(&path)).unwrap();
            let api = &cfg.apis[api_idx];
            let op = match api.match_operation(&Method::GET, rest) {
                OpMatch::Found { op, .. } => op,
                _ => unreachable!(),
            };
            black_box(api.chain(0, Some(op)));
        })
    });
    c.bench_function("route + operation + chain (no params)", |b| {
        b.iter(|| {
            let (api_idx, rest) = cfg.route(black_box("/svc-49/res-9")).unwrap();
            let api = &cfg.apis[api_idx];
            let op = match api.match_operation(&Method::GET, rest) {
                OpMatch::Found { op, .. } => op,
                _ => unreachable!(),
            };
            black_box(api.chain(0, Some(op)));
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
