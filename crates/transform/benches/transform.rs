//! Throughput of the XML ⇄ JSON conversions on 1 KB, 100 KB and 5 MB documents (a
//! pretty-printed product catalog with attributes, namespaces, entities, repeated and
//! single elements, non-ASCII text). Target: ≥ 150 MB/s for XML → JSON at 100 KB on one
//! core. Run with `cargo bench -p tollgate-transform --bench transform`; results are in
//! docs/benchmarks.md.
#![allow(missing_docs)]

/// The same allocator as the `tollgate` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;
use tollgate_transform::{json_to_xml, xml_to_json, Limits, XmlToJsonKind};

fn record(i: usize) -> String {
    format!(
        r#"  <product id="p{i}" status="active" x:rev="{r}">
    <name>Product {i} &amp; Co.</name>
    <price currency="EUR">{i}.99</price>
    <stock>{s}</stock>
    <tags><tag>alpha</tag><tag>beta</tag><tag>gamma</tag></tags>
    <description>A longer description of product {i}: crème brûlée, naïve café, Grüße — 10 &lt; 20.</description>
    <dimensions unit="cm"><w>10</w><h>20</h><d>5</d></dimensions>
    <x:meta><x:created>2024-01-01T00:00:00Z</x:created><x:flags/></x:meta>
  </product>
"#,
        r = i % 7,
        s = (i * 37) % 1000,
    )
}

fn catalog(records: usize) -> String {
    let mut s = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<catalog xmlns:x=\"urn:example:x\" version=\"2\">\n",
    );
    for i in 0..records {
        s.push_str(&record(i));
    }
    s.push_str("</catalog>\n");
    s
}

/// The smallest catalog whose size (as measured by `size`) reaches `target` bytes.
fn sized(target: usize, size: impl Fn(&str) -> usize) -> String {
    let mut n = 1;
    while size(&catalog(n)) < target {
        n = (n * 2).max(n + 1);
    }
    let (mut lo, mut hi) = (n / 2, n);
    while lo + 1 < hi {
        let mid = (lo + hi) / 2;
        if size(&catalog(mid)) < target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    catalog(hi.max(1))
}

const SIZES: [(&str, usize); 3] = [("1KB", 1_000), ("100KB", 100_000), ("5MB", 5_000_000)];

fn limits() -> Limits {
    Limits::default()
}

fn to_json(xml: &str, kind: XmlToJsonKind) -> Vec<u8> {
    xml_to_json(xml.as_bytes(), kind, &limits()).unwrap()
}

fn bench(c: &mut Criterion) {
    for (kind, kind_name) in [
        (XmlToJsonKind::JavascriptFriendly, "javascript-friendly"),
        (XmlToJsonKind::Direct, "direct"),
    ] {
        let mut g = c.benchmark_group(format!("xml-to-json {kind_name}"));
        for (label, target) in SIZES {
            let xml = sized(target, str::len);
            if target >= 1_000_000 {
                g.sample_size(20).measurement_time(Duration::from_secs(8));
            }
            g.throughput(Throughput::Bytes(xml.len() as u64));
            g.bench_with_input(BenchmarkId::from_parameter(label), &xml, |b, xml| {
                b.iter(|| xml_to_json(black_box(xml.as_bytes()), kind, &limits()).unwrap())
            });
        }
        g.finish();
    }

    for (kind, kind_name) in [
        (
            XmlToJsonKind::JavascriptFriendly,
            "javascript-friendly input",
        ),
        (XmlToJsonKind::Direct, "direct input"),
    ] {
        let mut g = c.benchmark_group(format!("json-to-xml {kind_name}"));
        for (label, target) in SIZES {
            // Catalogs whose JSON form has the target size.
            let xml = sized(target, |x| to_json(x, kind).len());
            let json = to_json(&xml, kind);
            if target >= 1_000_000 {
                g.sample_size(20).measurement_time(Duration::from_secs(8));
            }
            g.throughput(Throughput::Bytes(json.len() as u64));
            g.bench_with_input(BenchmarkId::from_parameter(label), &json, |b, json| {
                b.iter(|| json_to_xml(black_box(json), "root", &limits()).unwrap())
            });
        }
        g.finish();
    }

    // Reference: quick-xml's bare event loop (no attributes decoded, nothing built).
    let mut g = c.benchmark_group("reference quick-xml events only");
    let xml = sized(100_000, str::len);
    g.throughput(Throughput::Bytes(xml.len() as u64));
    g.bench_function("100KB", |b| {
        b.iter(|| {
            let mut r = quick_xml::Reader::from_reader(black_box(xml.as_bytes()));
            let mut n = 0usize;
            loop {
                match r.read_event().unwrap() {
                    quick_xml::events::Event::Eof => break,
                    _ => n += 1,
                }
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
