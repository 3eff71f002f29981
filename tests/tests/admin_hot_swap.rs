//! Hot swap through the admin API: 50 `PUT /config` calls under load, no failed request,
//! every answer from a config that was live, and the last one served at the end.
#![allow(missing_docs)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tollgate_tests::*;

const PUTS: u32 = 50;

fn gen_config(target: &str, generation: u32) -> String {
    format!(
        r#"version: 1
apis:
  - id: echo
    path: /echo
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_puts_under_load_lose_no_request() {
    let up = Upstream::start("a");
    let gw = Gateway::builder(&gen_config(&up.url(), 0))
        .admin_token("t")
        .start();
    let admin = gw.admin();
    let key = admin.create_subscription("load", "api:echo").await.primary;
    let url = gw.url("/echo/load");
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let total = Arc::new(AtomicUsize::new(0));
    // The newest generation whose PUT was answered: no request sent after that answer may
    // see an older one.
    let committed = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut tasks = Vec::new();
    for task in 0..4 {
        let (stop, failures, total, committed, url, key) = (
            stop.clone(),
            failures.clone(),
            total.clone(),
            committed.clone(),
            url.clone(),
            key.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut last_gen = 0u32;
            let mut n = 0usize;
            while !stop.load(Ordering::SeqCst) && n < 200_000 && Instant::now() < deadline {
                n += 1;
                total.fetch_add(1, Ordering::Relaxed);
                let floor = committed.load(Ordering::SeqCst) as u32;
                match c
                    .get(&url)
                    .header("Ocp-Apim-Subscription-Key", &key)
                    .send()
                    .await
                {
                    Ok(resp) => {
                        let a = Answer::read(resp).await;
                        let fail = |m: String| failures.lock().unwrap().push(m);
                        if a.status != 200 || !a.from_upstream("a") {
                            fail(format!("task {task}: {} {}", a.status, a.text()));
                            continue;
                        }
                        match generation_of(&a) {
                            Some(g) if g < last_gen => fail(format!(
                                "task {task}: generation went back from {last_gen} to {g}"
                            )),
                            Some(g) if g < floor => fail(format!(
                                "task {task}: generation {g} served after {floor} was answered"
                            )),
                            Some(g) => last_gen = g,
                            None => fail(format!("task {task}: answer without X-Gen")),
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

    // Let the load start, then 50 PUTs.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    let c = client();
    for n in 1..=PUTS {
        let doc = admin.put_config(&gen_config(&up.url(), n)).await;
        assert_eq!(doc["revision"], u64::from(n) + 1, "{doc}");
        committed.store(n as usize, Ordering::SeqCst);
        // The very next request sees it.
        let a = fetch(c.get(&url).header("Ocp-Apim-Subscription-Key", &key)).await;
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(
            generation_of(&a),
            Some(n),
            "the request right after PUT {n} was answered by another config"
        );
    }
    let took = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.expect("client task");
    }
    let failures = std::mem::take(&mut *failures.lock().unwrap());
    let total = total.load(Ordering::Relaxed);
    eprintln!(
        "{PUTS} PUTs in {took:?}; {total} client requests; {} failures",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failed requests during the PUTs, first ones: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(total > 100, "the load tasks barely ran ({total})");
    // At the end the last config is served.
    for _ in 0..5 {
        let a = fetch(c.get(&url).header("Ocp-Apim-Subscription-Key", &key)).await;
        assert_eq!(generation_of(&a), Some(PUTS));
    }
    assert_eq!(admin.live_revision().await, u64::from(PUTS) + 1);
}
