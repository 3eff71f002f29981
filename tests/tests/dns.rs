//! Upstream host names while the gateway runs: a target follows its name to a new address,
//! and a name that does not resolve at a restart keeps neither the stored config nor the
//! gateway's other APIs from serving.
//!
//! The names live in `/etc/hosts`, which the machine's resolver reads on every lookup:
//! each test adds lines for names of its own (`tg-dns-PID-N.test`) and removes them when
//! it ends, one test at a time. That needs a writable `/etc/hosts` (root, as on the CI
//! machines); elsewhere these tests fail with that reason.
#![allow(missing_docs)]

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tollgate_tests::*;

/// One test at a time edits `/etc/hosts`.
static HOSTS: Mutex<()> = Mutex::new(());

const HOSTS_FILE: &str = "/etc/hosts";

/// Names this test added to `/etc/hosts`, removed on drop.
struct Hosts {
    names: Vec<String>,
    _lock: MutexGuard<'static, ()>,
}

impl Hosts {
    fn new() -> Hosts {
        Hosts {
            names: Vec::new(),
            _lock: HOSTS.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// A name of this process, `tg-dns-PID-N.test`.
    fn name(&mut self) -> String {
        let name = format!("tg-dns-{}-{}.test", std::process::id(), self.names.len());
        self.names.push(name.clone());
        name
    }

    /// Make `name` resolve to `ips` (to nothing when empty).
    fn set(&self, name: &str, ips: &[&str]) {
        let text = std::fs::read_to_string(HOSTS_FILE).expect("read /etc/hosts");
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| l.split_whitespace().nth(1) != Some(name))
            .map(str::to_string)
            .collect();
        for ip in ips {
            lines.push(format!("{ip} {name}"));
        }
        let mut out = lines.join("\n");
        out.push('\n');
        std::fs::write(HOSTS_FILE, out).unwrap_or_else(|e| {
            panic!("these tests edit /etc/hosts (run them as root, as CI does): {e}")
        });
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for name in std::mem::take(&mut self.names) {
            self.set(&name, &[]);
        }
    }
}

/// Two upstreams on one port of two loopback addresses (127.0.0.2, 127.0.0.3).
fn twins() -> (Upstream, Upstream) {
    for _ in 0..20 {
        let a = Upstream::try_start_on("a", "127.0.0.2:0").expect("bind 127.0.0.2");
        if let Ok(b) = Upstream::try_start_on("b", &format!("127.0.0.3:{}", a.port())) {
            return (a, b);
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

fn config(apis: &[(&str, String)]) -> String {
    let mut s = String::from("version: 1\napis:\n");
    for (id, target) in apis {
        s.push_str(&format!(
            "  - id: {id}\n    path: /{id}\n    subscription_required: false\n    upstream: {{ targets: [\"{target}\"] }}\n"
        ));
    }
    s
}

/// Polls `f` every 100 ms for at most `limit` until it answers true.
async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A target named by a host name follows the name to its new address (resolved again
/// every `--dns-refresh` seconds), with no config change and no dropped request.
#[tokio::test]
async fn a_target_follows_its_name_to_a_new_address() {
    let mut hosts = Hosts::new();
    let (a, b) = twins();
    let name = hosts.name();
    hosts.set(&name, &["127.0.0.2"]);
    let gw = Gateway::builder(&config(&[("svc", format!("http://{name}:{}", a.port()))]))
        .env("TOLLGATE_DNS_REFRESH", "1")
        .start();
    let revision = gw.admin().live_revision().await;
    let r = get(&gw.url("/svc/x")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.from_upstream("a"));

    hosts.set(&name, &["127.0.0.3"]);
    // Every request is answered, by `a` until the name is resolved again, then by `b`.
    let mut statuses = Vec::new();
    let t0 = Instant::now();
    let mut moved = false;
    while !moved && t0.elapsed() < Duration::from_secs(10) {
        let r = get(&gw.url("/svc/x")).await;
        statuses.push(r.status);
        moved = r.status == 200 && r.from_upstream("b");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(moved, "still not at the new address; log:\n{}", gw.log());
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert!(b.count() >= 1);
    assert!(
        gw.log().contains("upstream addresses changed"),
        "{}",
        gw.log()
    );
    assert_eq!(gw.admin().live_revision().await, revision, "a new revision");
}

/// A name with several addresses: the pool spreads requests over all of them.
#[tokio::test]
async fn a_name_with_several_addresses_spreads_over_them() {
    let mut hosts = Hosts::new();
    let (a, b) = twins();
    let name = hosts.name();
    hosts.set(&name, &["127.0.0.2", "127.0.0.3"]);
    let gw = Gateway::start(&config(&[("svc", format!("http://{name}:{}", a.port()))]));
    for i in 0..6 {
        let r = get(&gw.url(&format!("/svc/{i}"))).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!((a.count(), b.count()), (3, 3));
    // The admin API shows what the target stands for now.
    let doc = gw.admin().get("/apis/svc/upstream").await;
    assert_eq!(doc.status, 200, "{}", doc.text());
    assert_eq!(
        doc.json(),
        serde_json::json!({"api": "svc", "targets": [{
            "target": format!("http://{name}:{}", a.port()),
            "weight": 1,
            "addresses": [
                {"address": format!("127.0.0.2:{}", a.port()), "healthy": true},
                {"address": format!("127.0.0.3:{}", a.port()), "healthy": true},
            ],
        }]})
    );
    let missing = gw.admin().get("/apis/nope/upstream").await;
    assert_eq!(missing.status, 404, "{}", missing.text());
    assert!(missing.text().contains("`nope` does not exist"));
}

/// A stored config whose upstream name does not resolve when the gateway restarts is
/// served all the same: its other APIs answer (the whole config was refused before, and
/// every request got 404), the API of the name answers 503 until the name resolves, then
/// 200, without anyone touching the config.
#[tokio::test]
async fn a_restart_while_a_name_does_not_resolve_serves_the_stored_config() {
    let mut hosts = Hosts::new();
    let up = Upstream::start("u");
    let name = hosts.name();
    hosts.set(&name, &["127.0.0.1"]);
    let yaml = config(&[
        ("named", format!("http://{name}:{}", up.port())),
        ("plain", up.url()),
    ]);
    let mut gw = Gateway::builder(&yaml)
        .env("TOLLGATE_DNS_REFRESH", "1")
        .start();
    for api in ["named", "plain"] {
        let r = get(&gw.url(&format!("/{api}/x"))).await;
        assert_eq!(r.status, 200, "{api}: {}", r.text());
    }
    let revision = gw.admin().live_revision().await;
    assert_eq!(gw.stop(Duration::from_secs(15)).code(), Some(0));

    hosts.set(&name, &[]);
    let gw2 = Gateway::builder(&yaml)
        .without_config_flag()
        .in_dir(gw.shared_dir())
        .env("TOLLGATE_DNS_REFRESH", "1")
        .start();
    assert_eq!(gw2.admin().live_revision().await, revision);
    let r = get(&gw2.url("/plain/x")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    get(&gw2.url("/named/x")).await.assert_problem(503);
    let doc = gw2.admin().get("/apis/named/upstream").await.json();
    assert_eq!(
        doc["targets"][0]["addresses"],
        serde_json::json!([]),
        "{doc}"
    );

    hosts.set(&name, &["127.0.0.1"]);
    let back = eventually(Duration::from_secs(10), || {
        let url = gw2.url("/named/x");
        async move { get(&url).await.status == 200 }
    })
    .await;
    assert!(
        back,
        "the name resolves again, the API does not; log:\n{}",
        gw2.log()
    );
}

/// A config write that brings a new name that does not resolve is refused with the name
/// (a typo is caught when it is made); one that leaves such an upstream as it is live
/// is not.
#[tokio::test]
async fn a_write_with_a_new_unresolvable_name_is_refused() {
    let mut hosts = Hosts::new();
    let up = Upstream::start("u");
    let name = hosts.name();
    hosts.set(&name, &["127.0.0.1"]);
    let named = format!("http://{name}:{}", up.port());
    let gw = Gateway::start(&config(&[("named", named.clone())]));
    let admin = gw.admin();
    let typo = config(&[
        ("named", named.clone()),
        ("other", format!("http://{name}x:{}", up.port())),
    ]);
    let a = admin.put_yaml("/config", &typo).await;
    assert_eq!(a.status, 422, "{}", a.text());
    assert!(a.text().contains(&format!("{name}x")), "{}", a.text());
    // The live upstream's name stops resolving: a write that keeps it goes through.
    hosts.set(&name, &[]);
    let more = config(&[("named", named), ("plain", up.url())]);
    let a = admin.put_yaml("/config", &more).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(get(&gw.url("/plain/x")).await.status, 200);
}
