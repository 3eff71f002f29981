//! The command line: `tollgate validate`, and `serve` refusing a bad policy file.
#![allow(missing_docs)]

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use tollgate_tests::*;

/// Runs `tollgate args...` (bounded: killed after 20 s).
fn run(args: &[&str]) -> Output {
    let mut child = Command::new(tollgate_bin())
        .args(args)
        .env_remove("TOLLGATE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tollgate");
    let t0 = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("tollgate {args:?} did not finish within 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("output")
}

const GOOD: &str = r#"version: 1
settings: { max_request_body: 1MiB }
policies:
  inbound:
    - set-header: { name: X-Gw, value: "tollgate" }
apis:
  - id: petstore
    path: /petstore
    subscription_required: false
    upstream:
      targets: ["http://127.0.0.1:9000", "http://127.0.0.1:9001/base"]
      health_check: { path: /health, interval: 5s }
      timeout: 30s
    policies:
      inbound:
        - base
        - cors: { allowed_origins: ["*"] }
    operations:
      - id: get-pet
        method: GET
        path: /pets/{id}
        policies:
          inbound:
            - base
            - rewrite-uri: { template: "/v2/pets/{id}" }
      - id: admin
        method: POST
        path: /admin
        policies:
          inbound:
            - ip-filter: { action: allow, addresses: [10.0.0.0/8] }
            - return-response: { status: 403 }
"#;

#[test]
fn validate_accepts_a_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = write_file(dir.path(), "good.yaml", GOOD);
    let out = run(&["validate", &f]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout {}\nstderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn validate_reports_every_mistake_with_path_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = write_file(
        dir.path(),
        "bad.yaml",
        r#"version: 1
apis:
  - id: Bad_Id
    path: no-slash
    upstream: { targets: ["http://127.0.0.1:9000"] }
  - id: two
    path: /two
    upstream: { targets: ["http://127.0.0.1:9000"] }
    policies:
      inbound:
        - rate-limit: { calls: 3 }
        - no-such-policy: {}
        - set-header: { name: X-A, value: "x", exists_action: sideways }
"#,
    );
    let out = run(&["validate", &f]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    let located: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("(line ") && l.contains(", column ") && l.contains("): "))
        .collect();
    assert!(
        located.len() >= 4,
        "expected at least 4 errors as `path (line L, column C): message`, got:\n{stderr}"
    );
    for want in ["apis[0]", "apis[1]"] {
        assert!(stderr.contains(want), "no error names {want}:\n{stderr}");
    }
    // Lines point into the file: the policy errors are on lines 11-13.
    for line in ["line 3", "line 4", "line 11", "line 12"] {
        assert!(
            stderr.contains(&format!("({line},")),
            "no error on {line}:\n{stderr}"
        );
    }
}

#[test]
fn validate_reports_yaml_syntax_errors_with_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = write_file(
        dir.path(),
        "broken.yaml",
        "version: 1\napis:\n  - id: [unclosed\n",
    );
    let out = run(&["validate", &f]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(stderr.contains("line "), "no line in:\n{stderr}");
}

#[test]
fn validate_missing_file_fails() {
    let out = run(&["validate", "/nonexistent/tollgate/policy.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!out.stderr.is_empty());
}

#[test]
fn serve_refuses_an_invalid_policy_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = write_file(
        dir.path(),
        "bad.yaml",
        "version: 1\napis:\n  - id: x\n    path: nope\n",
    );
    let listen = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let data = dir.path().join("data").display().to_string();
    let out = run(&[
        "serve",
        "--config",
        &f,
        "--listen",
        &listen,
        "--admin-listen",
        &admin,
        "--data-dir",
        &data,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "stderr:\n{stderr}");
    assert!(
        stderr.contains("apis[0]"),
        "the error does not say where:\n{stderr}"
    );
}

/// A usage error (unknown flag, missing or extra argument, unknown verb) exits 1 with clap's
/// message on standard error: exit 2 is reserved for `diff`'s "there are changes", so a CI
/// step must not read a typo as pending changes. `--help` and `--version` print to
/// standard output and exit 0.
#[test]
fn usage_errors_exit_1_and_help_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "p.yaml", "version: 1\n");
    let usage_errors: [&[&str]; 6] = [
        &["diff", &file, "--admin", "http://127.0.0.1:9", "--bogus"],
        &["diff", "--admin", "http://127.0.0.1:9"],
        &["validate"],
        &["validate", "a.yaml", "b.yaml"],
        &["frobnicate"],
        &[],
    ];
    for args in usage_errors {
        let run = run_tollgate(args, &[]);
        run.assert_code(1, &format!("tollgate {args:?}"));
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
        assert!(
            run.stderr.contains("Usage:"),
            "{args:?}: clap's message with the usage: {}",
            run.stderr
        );
    }
    for args in [&["--help"][..], &["diff", "--help"], &["-h"]] {
        let run = run_tollgate(args, &[]);
        run.assert_code(0, &format!("tollgate {args:?}"));
        assert!(run.stdout.contains("Usage:"), "{args:?}: {}", run.stdout);
        assert!(run.stderr.is_empty(), "{args:?}: {}", run.stderr);
    }
    let run = run_tollgate(&["--version"], &[]);
    run.assert_code(0, "tollgate --version");
    assert!(run.stdout.starts_with("tollgate "), "{}", run.stdout);
}

/// `TOLLGATE_LOG_FORMAT=json`: every line the process writes (its log on standard error,
/// the access log on standard output) is one JSON object, Pingora's own lines included;
/// an unknown format is refused at start with exit 1.
#[tokio::test]
async fn the_log_can_be_json_lines() {
    let up = Upstream::start("a");
    let config = format!(
        "{}  - id: dead\n    path: /dead\n    subscription_required: false\n    upstream: {{ targets: [\"http://127.0.0.1:1\"] }}\n",
        echo_config(&up.url())
    );
    let gw = Gateway::builder(&config)
        .env("TOLLGATE_LOG_FORMAT", "json")
        .env("TOLLGATE_ACCESS_LOG", "true")
        .start();
    assert_eq!(get(&gw.url("/echo/x")).await.status, 200);
    get(&gw.url("/dead/x")).await.assert_problem(502);
    // Both lines are written after the answers: wait for them, bounded.
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = gw
            .log()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))
            })
            .collect();
        let logged_502 = lines.iter().any(|v| {
            v["level"] == "ERROR"
                && v["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("127.0.0.1:1"))
        });
        let access_502 = lines.iter().any(|v| v["status"] == 502);
        if logged_502 && access_502 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        lines
            .iter()
            .any(|v| v["level"] == "INFO" && v["message"] == "admin API listening"),
        "{lines:#?}"
    );
    assert!(lines.iter().any(|v| v["level"] == "ERROR"), "{lines:#?}");
    assert!(lines.iter().any(|v| v["status"] == 502), "{lines:#?}");

    let out = Command::new(tollgate_bin())
        .args(["validate", "/nonexistent.yaml"])
        .env("TOLLGATE_LOG_FORMAT", "xml")
        .output()
        .expect("run tollgate");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("TOLLGATE_LOG_FORMAT") && err.contains("`json`"),
        "{err}"
    );
}
