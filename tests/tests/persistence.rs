//! State in `--data-dir` across restarts: revisions, the live revision, subscriptions with
//! their keys, the generated admin token; `--config` at start makes a revision only when the
//! file differs from the newest stored one; a SIGKILL in the middle of writes loses nothing
//! that was answered.
#![allow(missing_docs)]

use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tollgate_tests::*;

fn config(target: &str, gen: u32) -> String {
    format!(
        r#"version: 1
products:
  - id: gold
    apis: [pets]
apis:
  - id: pets
    path: /pets
    upstream: {{ targets: ["{target}"] }}
    policies:
      outbound:
        - set-header: {{ name: X-Gen, value: "{gen}" }}
"#
    )
}

async fn call(gw: &Gateway, key: &str) -> Answer {
    fetch(
        client()
            .get(gw.url("/pets/x"))
            .header("Ocp-Apim-Subscription-Key", key),
    )
    .await
}

fn token_file_mode(gw: &Gateway) -> u32 {
    std::fs::metadata(gw.data_dir().join("admin-token"))
        .expect("DATA_DIR/admin-token exists")
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn state_survives_a_clean_restart() {
    let up = Upstream::start("u");
    // No TOLLGATE_ADMIN_TOKEN: the first start generates DATA_DIR/admin-token.
    let mut gw = Gateway::start(&config(&up.url(), 1));
    let token = gw.admin_token();
    assert!(
        token.len() >= 20,
        "a short admin token: {} chars",
        token.len()
    );
    assert_eq!(token_file_mode(&gw), 0o600, "DATA_DIR/admin-token mode");
    let admin = gw.admin();
    assert_eq!(admin.live_revision().await, 1);

    admin.put_config(&config(&up.url(), 2)).await;
    admin.put_config(&config(&up.url(), 3)).await;
    let a = admin
        .put_json("/products/silver", &json!({"apis": ["pets"]}))
        .await;
    assert_eq!(a.status, 201, "{}", a.text());
    let s_api = admin.create_subscription("s-api", "api:pets").await;
    let s_gold = admin.create_subscription("s-gold", "product:gold").await;
    let s_all = admin.create_subscription("s-all", "all").await;
    let s_susp = admin.create_subscription("s-susp", "all").await;
    let a = admin
        .patch_json("/subscriptions/s-susp", &json!({"state": "suspended"}))
        .await;
    assert_eq!(a.status, 200);
    // A rotated key: the new one must survive, the old one stay dead.
    let a = admin
        .post_empty("/subscriptions/s-all/regenerate-primary-key")
        .await;
    let s_all_primary = a.json()["primary_key"].as_str().unwrap().to_string();

    let live_before = admin.get("/config").await;
    let etag_before = live_before.header("etag").map(str::to_string);
    assert_eq!(etag_before.as_deref(), Some("\"4\""));
    let config_before = live_before.json();
    let revisions_before = admin.revisions().await;
    assert_eq!(revisions_before.len(), 4);
    let subs_before = admin.all_pages("/subscriptions", 5).await;
    assert_eq!(subs_before.len(), 4);
    let log_first = gw.log();

    let exit = gw.stop(Duration::from_secs(15));
    assert_eq!(exit.code(), Some(0), "exit after SIGTERM: {exit}");

    // A new process on the same data dir, without --config.
    let gw2 = Gateway::builder(&config(&up.url(), 99))
        .without_config_flag()
        .in_dir(gw.shared_dir())
        .start();
    assert_eq!(
        gw2.admin_token(),
        token,
        "the admin token file was rewritten"
    );
    assert_eq!(token_file_mode(&gw2), 0o600);
    let admin2 = gw2.admin();
    let live_after = admin2.get("/config").await;
    assert_eq!(live_after.status, 200, "{}", live_after.text());
    assert_eq!(
        live_after.header("etag").map(str::to_string),
        etag_before,
        "another revision is live after the restart"
    );
    assert_eq!(live_after.json(), config_before, "the live config differs");
    assert_eq!(
        admin2.revisions().await,
        revisions_before,
        "the revision history (with its authors) differs"
    );
    for n in 1..=4 {
        let a = admin2.get(&format!("/config/revisions/{n}")).await;
        assert_eq!(a.status, 200, "revision {n}: {}", a.text());
    }
    assert_eq!(
        admin2.all_pages("/subscriptions", 5).await,
        subs_before,
        "the subscriptions differ"
    );

    // The same keys authenticate; states and rotations hold.
    for (what, key) in [
        ("api primary", &s_api.primary),
        ("api secondary", &s_api.secondary),
        ("gold primary", &s_gold.primary),
        ("gold secondary", &s_gold.secondary),
        ("all new primary", &s_all_primary),
        ("all secondary", &s_all.secondary),
    ] {
        let a = call(&gw2, key).await;
        assert_eq!(a.status, 200, "{what} after the restart: {}", a.text());
        assert_eq!(a.header("x-gen"), Some("3"));
    }
    call(&gw2, &s_all.primary).await.assert_problem(401);
    call(&gw2, &s_susp.primary).await.assert_problem(403);

    // Writes go on from the stored history.
    let doc = admin2.put_config(&config(&up.url(), 5)).await;
    assert_eq!(doc["revision"], 5, "{doc}");

    // The generated token is never logged.
    for (which, log) in [("first", log_first), ("second", gw2.log())] {
        assert!(
            !log.contains(&token),
            "the {which} process logged the admin token"
        );
    }
}

#[tokio::test]
async fn generated_admin_token_is_announced_by_path_not_by_value() {
    let up = Upstream::start("u");
    let gw = Gateway::start(&config(&up.url(), 1));
    let token = gw.admin_token();
    assert_eq!(token_file_mode(&gw), 0o600);
    let log = gw.log();
    assert!(!log.contains(&token), "the admin token is in the log");
    assert!(
        log.contains("admin-token"),
        "the log does not say where the generated token is:\n{log}"
    );
    assert_eq!(gw.admin().live_revision().await, 1);
    let wrong = gw.admin().with_token(Some("x"));
    assert_admin_problem(&wrong.get("/config").await, 401);
}

#[tokio::test]
async fn config_file_at_start_makes_a_revision_only_when_it_differs() {
    let up = Upstream::start("u");
    let f = config(&up.url(), 1);
    let g = config(&up.url(), 2);
    let mut gw = Gateway::builder(&f).admin_token("t").start();
    let dir = gw.shared_dir();
    assert_eq!(gw.admin().live_revision().await, 1);
    assert_eq!(gw.stop(Duration::from_secs(15)).code(), Some(0));

    // The same file: no new revision.
    let mut gw = Gateway::builder(&f)
        .admin_token("t")
        .in_dir(dir.clone())
        .start();
    let admin = gw.admin();
    assert_eq!(admin.live_revision().await, 1);
    assert_eq!(admin.revisions().await.len(), 1, "same file, new revision");
    assert_eq!(gw.stop(Duration::from_secs(15)).code(), Some(0));

    // A changed file: exactly one new revision, from the file, live.
    let mut gw = Gateway::builder(&g)
        .admin_token("t")
        .in_dir(dir.clone())
        .start();
    let admin = gw.admin();
    assert_eq!(admin.live_revision().await, 2);
    let revs = admin.revisions().await;
    assert_eq!(revs.len(), 2, "{revs:?}");
    assert_eq!(revs[0]["revision"], 2);
    assert_eq!(revs[0]["source"], "file");
    assert_eq!(
        admin.get("/config/revisions/2").await.json()["text"],
        g.as_str()
    );
    let a = get(&gw.url("/pets/x")).await;
    assert_eq!(a.status, 401, "pets needs a key");
    let sub = admin.create_subscription("s", "all").await;
    assert_eq!(call(&gw, &sub.primary).await.header("x-gen"), Some("2"));
    assert_eq!(gw.stop(Duration::from_secs(15)).code(), Some(0));

    // The changed file again: nothing new.
    let mut gw = Gateway::builder(&g)
        .admin_token("t")
        .in_dir(dir.clone())
        .start();
    let admin = gw.admin();
    assert_eq!(admin.live_revision().await, 2);
    assert_eq!(admin.revisions().await.len(), 2);
    // An API write on top, then a restart with the file: the file differs from the newest
    // stored revision, so it becomes revision 4.
    admin.put_config(&config(&up.url(), 3)).await;
    assert_eq!(gw.stop(Duration::from_secs(15)).code(), Some(0));
    let gw = Gateway::builder(&g)
        .admin_token("t")
        .in_dir(dir.clone())
        .start();
    let admin = gw.admin();
    assert_eq!(admin.live_revision().await, 4);
    assert_eq!(admin.revisions().await.len(), 4);
    assert_eq!(call(&gw, &sub.primary).await.header("x-gen"), Some("2"));
}

/// What the hammering clients saw answered before the kill.
#[derive(Default)]
struct Answered {
    /// Revisions answered 200 to a `PUT /config`, with the generation each carried.
    revisions: Vec<(u64, u32)>,
    /// Subscriptions answered 201, with their primary keys.
    subscriptions: Vec<(String, String)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_in_the_middle_of_writes_loses_nothing_answered() {
    let up = Upstream::start("u");
    let mut gw = Gateway::builder(&config(&up.url(), 0))
        .admin_token("t")
        .start();
    let answered = Arc::new(Mutex::new(Answered::default()));
    let stop_at = Instant::now() + Duration::from_secs(10);
    let mut tasks = Vec::new();
    // Two config writers and two subscription creators, until the process dies.
    for task in 0..4u32 {
        let admin = gw.admin();
        let target = up.url();
        let answered = answered.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..100_000u32 {
                if Instant::now() > stop_at {
                    break;
                }
                if task < 2 {
                    let gen = 1 + task * 100_000 + i;
                    let r = admin
                        .req(reqwest::Method::PUT, "/config")
                        .header("content-type", "application/yaml")
                        .body(config(&target, gen))
                        .send()
                        .await;
                    let Ok(resp) = r else { break };
                    let Ok(body) = resp.bytes().await else { break };
                    let doc: Value = serde_json::from_slice(&body).unwrap_or_default();
                    if let Some(rev) = doc["revision"].as_u64() {
                        answered.lock().unwrap().revisions.push((rev, gen));
                    }
                } else {
                    let id = format!("k{task}-{i}");
                    let r = admin
                        .req(reqwest::Method::POST, "/subscriptions")
                        .header("content-type", "application/json")
                        .body(json!({"id": id, "display_name": id, "scope": "all"}).to_string())
                        .send()
                        .await;
                    let Ok(resp) = r else { break };
                    let status = resp.status().as_u16();
                    let Ok(body) = resp.bytes().await else { break };
                    if status == 201 {
                        let doc: Value = serde_json::from_slice(&body).unwrap_or_default();
                        let key = doc["primary_key"].as_str().unwrap_or("").to_string();
                        answered.lock().unwrap().subscriptions.push((id, key));
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let exit = gw.kill9();
    assert_eq!(exit.code(), None, "not killed by a signal: {exit}");
    for t in tasks {
        t.await.expect("client task");
    }
    let answered = std::mem::take(&mut *answered.lock().unwrap());
    eprintln!(
        "before SIGKILL: {} config writes, {} subscriptions answered",
        answered.revisions.len(),
        answered.subscriptions.len()
    );
    assert!(
        !answered.revisions.is_empty() && !answered.subscriptions.is_empty(),
        "the writers got nothing done in 0.5 s"
    );

    // Restart on the same data dir, no --config.
    let gw2 = Gateway::builder(&config(&up.url(), 0))
        .admin_token("t")
        .without_config_flag()
        .in_dir(gw.shared_dir())
        .start();
    let admin = gw2.admin();

    // Revisions 1..N, contiguous, N at least every answered one.
    let revs = admin.revisions().await;
    let mut numbers: Vec<u64> = revs
        .iter()
        .map(|r| r["revision"].as_u64().expect("revision"))
        .collect();
    numbers.reverse();
    let n = numbers.len() as u64;
    assert_eq!(
        numbers,
        (1..=n).collect::<Vec<u64>>(),
        "the revisions are not 1..N"
    );
    let max_answered = answered.revisions.iter().map(|r| r.0).max().unwrap();
    assert!(
        n >= max_answered,
        "revision {max_answered} was answered but only {n} are stored"
    );
    // Every answered revision holds the text that was sent.
    for &(rev, gen) in answered.revisions.iter().rev().take(5) {
        let text = admin.get(&format!("/config/revisions/{rev}")).await.json()["text"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert_eq!(text, config(&up.url(), gen), "revision {rev}'s text");
    }

    // The live config is the newest revision.
    let live = admin.get("/config").await;
    assert_eq!(
        etag_revision(&live),
        n,
        "the live revision is not the newest"
    );
    let newest = admin.get(&format!("/config/revisions/{n}")).await.json();
    let newest_text = newest["text"].as_str().expect("text").to_string();
    let plan = admin.put_yaml("/config?dry_run=true", &newest_text).await;
    assert_eq!(plan.status, 200, "{}", plan.text());
    assert_eq!(
        plan.json()["changes"],
        json!([]),
        "the live config differs from revision {n}"
    );

    // Every subscription answered 201 exists, and its key works.
    let stored: Vec<String> = admin
        .all_pages("/subscriptions", 100)
        .await
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    let missing: Vec<&String> = answered
        .subscriptions
        .iter()
        .map(|(id, _)| id)
        .filter(|id| !stored.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} subscriptions answered 201 are gone: {missing:?}",
        missing.len()
    );
    let live_gen: String = newest_text
        .lines()
        .find_map(|l| l.split("value: \"").nth(1))
        .map(|v| v.trim_end_matches(['"', ' ', '}']).to_string())
        .unwrap_or_default();
    for (id, key) in answered.subscriptions.iter().rev().take(10) {
        let a = call(&gw2, key).await;
        assert_eq!(
            a.status,
            200,
            "subscription {id} after the restart: {}",
            a.text()
        );
        assert_eq!(a.header("x-gen"), Some(live_gen.as_str()));
    }
}
