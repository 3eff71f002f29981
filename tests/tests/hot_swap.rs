//! Hot swap on SIGHUP: 100 reloads under load without a failed request, and an invalid file
//! leaves the old config serving.
#![allow(missing_docs)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tollgate_tests::*;

fn gen_config(target: &str, generation: u32) -> String {
    format!(
        r#"version: 1
apis:
  - id: echo
    path: /echo
    subscription_required: false
    upstream: {{ targets: ["{target}"] }}
    policies:
      outbound:
        - set-header: {{ name: X-Gen, value: "{generation}" }}
"#
    )
}

fn generation_of(a: &Answer) -> Option<u32> {
    a.header("x-gen").and_then(|g| g.parse().ok())
}

/// Sends requests until one shows generation `n` (bounded by `timeout`).
async fn wait_generation(c: &reqwest::Client, url: &str, n: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(resp) = c.get(url).send().await {
            let a = Answer::read(resp).await;
            if a.status == 200 && generation_of(&a) == Some(n) {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_reloads_under_load_lose_no_request() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&gen_config(&up.url(), 0));
    let url = gw.url("/echo/load");
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = Arc::new(Mutex::new(BTreeSet::<u32>::new()));
    let total = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for task in 0..4 {
        let (stop, failures, seen, total, url) = (
            stop.clone(),
            failures.clone(),
            seen.clone(),
            total.clone(),
            url.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut last_gen = 0u32;
            let mut n = 0usize;
            // Bounded: the main loop stops it; 200k requests is far more than it can send.
            while !stop.load(Ordering::SeqCst) && n < 200_000 {
                n += 1;
                total.fetch_add(1, Ordering::Relaxed);
                match c.get(&url).send().await {
                    Ok(resp) => {
                        let a = Answer::read(resp).await;
                        if a.status != 200 || !a.from_upstream("a") {
                            failures.lock().unwrap().push(format!(
                                "task {task}: {} {:?} {}",
                                a.status,
                                a.headers,
                                a.text()
                            ));
                            continue;
                        }
                        match generation_of(&a) {
                            Some(g) => {
                                if g < last_gen {
                                    failures.lock().unwrap().push(format!(
                                        "task {task}: generation went back from {last_gen} to {g}"
                                    ));
                                }
                                last_gen = last_gen.max(g);
                                seen.lock().unwrap().insert(g);
                            }
                            None => failures
                                .lock()
                                .unwrap()
                                .push(format!("task {task}: answer without X-Gen")),
                        }
                    }
                    Err(e) => failures
                        .lock()
                        .unwrap()
                        .push(format!("task {task}: transport error {e:?}")),
                }
            }
        }));
    }

    let c = client();
    assert!(
        wait_generation(&c, &url, 0, Duration::from_secs(5)).await,
        "generation 0 is not served"
    );
    seen.lock().unwrap().insert(0);
    let t0 = Instant::now();
    for n in 1..=100u32 {
        gw.reload(&gen_config(&up.url(), n));
        if !wait_generation(&c, &url, n, Duration::from_secs(10)).await {
            stop.store(true, Ordering::SeqCst);
            panic!("generation {n} never showed up after SIGHUP");
        }
        seen.lock().unwrap().insert(n);
    }
    let took = t0.elapsed();
    // Let the clients run a little on the last generation too.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.expect("client task");
    }
    let failures = failures.lock().unwrap();
    eprintln!(
        "100 reloads in {took:?}; {} client requests; {} failures",
        total.load(Ordering::Relaxed),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failed requests during reloads, first ones: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    let seen = seen.lock().unwrap();
    let missing: Vec<u32> = (0..=100).filter(|g| !seen.contains(g)).collect();
    assert!(
        missing.is_empty(),
        "generations never observed: {missing:?}"
    );
    assert!(
        total.load(Ordering::Relaxed) > 100,
        "the load tasks barely ran"
    );
}

#[tokio::test]
async fn invalid_config_keeps_the_old_one_serving() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&gen_config(&up.url(), 1));
    let c = client();
    let url = gw.url("/echo/x");
    let a = fetch(c.get(&url)).await;
    assert_eq!(generation_of(&a), Some(1));

    let log_before = gw.log().len();
    for broken in [
        "version: 1\napis: [ this is not: valid yaml".to_string(),
        // Valid YAML, invalid policy file: an unknown policy kind and a bad path.
        format!(
            "version: 1\napis:\n  - id: echo\n    path: echo\n    upstream: {{ targets: [\"{}\"] }}\n    policies:\n      inbound: [ no-such-policy: {{}} ]\n",
            up.url()
        ),
    ] {
        gw.reload(&broken);
        // Wait (bounded) until the process logged something about it.
        let logged = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
            gw.log().len() > log_before
        });
        std::thread::sleep(Duration::from_millis(300));
        for _ in 0..20 {
            let a = fetch(c.get(&url)).await;
            assert_eq!(a.status, 200, "after an invalid reload: {}", a.text());
            assert_eq!(generation_of(&a), Some(1), "the old config stopped serving");
        }
        assert!(logged, "nothing was logged about the refused reload");
    }
    let log = gw.log();
    assert!(
        log[log_before..].contains("ERROR"),
        "the refused reload was not logged as an error:\n{}",
        &log[log_before..]
    );
    // A valid file after that is taken.
    gw.reload(&gen_config(&up.url(), 2));
    assert!(
        wait_generation(&c, &url, 2, Duration::from_secs(10)).await,
        "a valid reload after an invalid one was not applied"
    );
}

#[tokio::test]
async fn reload_adds_and_removes_apis() {
    let a_up = Upstream::start("a");
    let b_up = Upstream::start("b");
    let gw = Gateway::start(&echo_config(&a_up.url()));
    let c = client();
    assert_eq!(fetch(c.get(gw.url("/other/x"))).await.status, 404);
    gw.reload(&format!(
        r#"version: 1
apis:
  - id: other
    path: /other
    subscription_required: false
    upstream: {{ targets: ["{}"] }}
"#,
        b_up.url()
    ));
    let mut ok = false;
    for _ in 0..200 {
        let a = fetch(c.get(gw.url("/other/x"))).await;
        if a.status == 200 {
            assert!(a.from_upstream("b"));
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(ok, "the new API never appeared");
    fetch(c.get(gw.url("/echo/x"))).await.assert_problem(404);
}
