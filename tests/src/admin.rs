//! The admin REST API (contract §4) from a test: [`Admin`] sends authenticated calls and
//! reads them to the end as [`Answer`]s; [`assert_admin_problem`] checks an error answer;
//! [`run_tollgate`] runs a CLI verb (bounded) with a controlled environment.

use crate::client::{client, fetch, Answer};
use reqwest::Method;
use serde_json::Value;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A client of one admin listener, with or without a bearer token.
#[derive(Debug, Clone)]
pub struct Admin {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// A subscription as `POST /subscriptions` answered it.
#[derive(Debug, Clone)]
pub struct Sub {
    /// The id.
    pub id: String,
    /// The primary key.
    pub primary: String,
    /// The secondary key.
    pub secondary: String,
}

impl Admin {
    /// A client of `base` (`http://127.0.0.1:PORT`), sending `Authorization: Bearer token`
    /// when a token is given.
    pub fn new(base: &str, token: Option<&str>) -> Admin {
        Admin {
            base: base.trim_end_matches('/').to_string(),
            token: token.map(str::to_string),
            http: client(),
        }
    }

    /// The same listener with another token (or none).
    pub fn with_token(&self, token: Option<&str>) -> Admin {
        Admin::new(&self.base, token)
    }

    /// `base + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with the token set.
    pub fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, self.url(path));
        match &self.token {
            Some(t) => r.header("authorization", format!("Bearer {t}")),
            None => r,
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Answer {
        fetch(self.req(Method::GET, path)).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Answer {
        fetch(self.req(Method::DELETE, path)).await
    }

    /// `POST path` without a body.
    pub async fn post_empty(&self, path: &str) -> Answer {
        fetch(self.req(Method::POST, path)).await
    }

    /// `method path` with a JSON body.
    pub async fn send_json(&self, method: Method, path: &str, body: &Value) -> Answer {
        fetch(
            self.req(method, path)
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
        .await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> Answer {
        self.send_json(Method::POST, path, body).await
    }

    /// `PATCH path` with a JSON body.
    pub async fn patch_json(&self, path: &str, body: &Value) -> Answer {
        self.send_json(Method::PATCH, path, body).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put_json(&self, path: &str, body: &Value) -> Answer {
        self.send_json(Method::PUT, path, body).await
    }

    /// `PUT path` with a YAML body.
    pub async fn put_yaml(&self, path: &str, text: &str) -> Answer {
        fetch(
            self.req(Method::PUT, path)
                .header("content-type", "application/yaml")
                .body(text.to_string()),
        )
        .await
    }

    /// `PUT /config` with a YAML body; panics unless it answers 200; returns the answer's
    /// JSON (`revision`, `changes`, ...).
    pub async fn put_config(&self, text: &str) -> Value {
        let a = self.put_yaml("/config", text).await;
        assert_eq!(a.status, 200, "PUT /config: {}", a.text());
        a.json()
    }

    /// The live revision: the `ETag` of `GET /config`, unquoted.
    pub async fn live_revision(&self) -> u64 {
        let a = self.get("/config").await;
        assert_eq!(a.status, 200, "GET /config: {}", a.text());
        etag_revision(&a)
    }

    /// Every stored revision's metadata, newest first (all pages; bounded to 100 pages).
    pub async fn revisions(&self) -> Vec<Value> {
        self.all_pages("/config/revisions", 100).await
    }

    /// Every item of a list call (following `next`, at most `max_pages` pages of 100).
    pub async fn all_pages(&self, path: &str, max_pages: usize) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..max_pages {
            let url = match &cursor {
                None => format!("{path}?limit=100"),
                Some(c) => format!("{path}?limit=100&cursor={c}"),
            };
            let a = self.get(&url).await;
            assert_eq!(a.status, 200, "GET {url}: {}", a.text());
            let doc = a.json();
            out.extend(
                doc["items"]
                    .as_array()
                    .unwrap_or_else(|| panic!("no items in {doc}"))
                    .iter()
                    .cloned(),
            );
            match doc["next"].as_str() {
                Some(n) => cursor = Some(n.to_string()),
                None => return out,
            }
        }
        panic!("{path}: more than {max_pages} pages");
    }

    /// `POST /subscriptions` `{id, display_name, scope}`; panics unless 201.
    pub async fn create_subscription(&self, id: &str, scope: &str) -> Sub {
        let a = self
            .post_json(
                "/subscriptions",
                &serde_json::json!({"id": id, "display_name": format!("Test {id}"), "scope": scope}),
            )
            .await;
        assert_eq!(
            a.status,
            201,
            "POST /subscriptions {id} {scope}: {}",
            a.text()
        );
        let doc = a.json();
        Sub {
            id: doc["id"].as_str().expect("id").to_string(),
            primary: doc["primary_key"]
                .as_str()
                .expect("primary_key")
                .to_string(),
            secondary: doc["secondary_key"]
                .as_str()
                .expect("secondary_key")
                .to_string(),
        }
    }
}

/// The revision number in an answer's `ETag: "<n>"`; panics when there is none.
pub fn etag_revision(a: &Answer) -> u64 {
    let tag = a
        .header("etag")
        .unwrap_or_else(|| panic!("no ETag; headers {:?}", a.headers));
    tag.trim_matches('"')
        .parse()
        .unwrap_or_else(|_| panic!("ETag is not \"<revision>\": {tag}"))
}

/// Asserts an admin API error: `status`, `Content-Type: application/problem+json`, a JSON
/// body with string `type`, `title`, `detail` and the numeric `status`. Returns the document.
/// (Unlike the proxy's [`Answer::assert_problem`], no `X-Request-Id` is required: §3 asks
/// it of the proxy.)
pub fn assert_admin_problem(a: &Answer, status: u16) -> Value {
    assert_eq!(
        a.status,
        status,
        "unexpected status; headers {:?}, body {}",
        a.headers,
        a.text()
    );
    let ct = a.header("content-type");
    assert!(
        ct.is_some_and(|ct| ct.starts_with("application/problem+json")),
        "expected Content-Type application/problem+json, got {ct:?}; body {}",
        a.text()
    );
    let doc: Value = serde_json::from_slice(&a.body)
        .unwrap_or_else(|e| panic!("problem body is not JSON ({e}): {}", a.text()));
    for field in ["type", "title", "detail"] {
        assert!(
            doc.get(field).is_some_and(Value::is_string),
            "problem without string field {field:?}: {}",
            a.text()
        );
    }
    assert_eq!(
        doc["status"].as_u64(),
        Some(u64::from(status)),
        "problem status field: {}",
        a.text()
    );
    doc
}

/// What a finished `tollgate` CLI run printed.
#[derive(Debug)]
pub struct CliRun {
    /// The exit code (None when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CliRun {
    /// Asserts the exit code, showing both streams otherwise.
    pub fn assert_code(&self, code: i32, what: &str) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "{what}: exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// `tollgate validate` of a policy file whose one API runs `inbound` (the section's list
/// items, each line indented by 8 spaces) exits 1, and its standard error names each of
/// `wanted`.
pub fn assert_inbound_refused(inbound: &str, wanted: &[&str]) {
    let dir = tempfile::tempdir().expect("dir");
    let file = crate::write_file(
        dir.path(),
        "policy.yaml",
        &format!(
            "version: 1\napis:\n  - id: a\n    path: /a\n    upstream: {{ targets: \
             [\"http://127.0.0.1:9\"] }}\n    policies:\n      inbound:\n{inbound}"
        ),
    );
    let run = run_tollgate(&["validate", &file], &[]);
    run.assert_code(1, "a refused policy file");
    for w in wanted {
        assert!(run.stderr.contains(w), "{w}: {}", run.stderr);
    }
}

/// Runs `tollgate serve` with its data in `dir`, the plain listener on `listen`, the TLS
/// listener on `tls_listen` serving `cert` and `key` (PEM paths), the admin listener on an
/// ephemeral port, and `extra` arguments: for starts that must be refused (it would keep
/// running otherwise, until [`run_tollgate`]'s 20 s).
pub fn run_serve_tls(
    dir: &std::path::Path,
    listen: &str,
    tls_listen: &str,
    cert: &str,
    key: &str,
    extra: &[&str],
) -> CliRun {
    let data = dir.join("data").display().to_string();
    let mut args = vec![
        "serve",
        "--listen",
        listen,
        "--admin-listen",
        "127.0.0.1:0",
        "--data-dir",
        &data,
        "--tls-listen",
        tls_listen,
        "--tls-cert",
        cert,
        "--tls-key",
        key,
    ];
    args.extend_from_slice(extra);
    run_tollgate(&args, &[])
}

/// Runs `tollgate args...` with no `TOLLGATE_*` variable from the test's environment but
/// those in `env` (plus every other variable in `env`); killed and failed after 20 s.
pub fn run_tollgate(args: &[&str], env: &[(&str, &str)]) -> CliRun {
    let mut cmd = Command::new(crate::tollgate_bin());
    cmd.args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TOLLGATE_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tollgate");
    // Read the pipes on threads so a chatty child never blocks on a full pipe.
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out_pipe, &mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err_pipe, &mut s);
        s
    });
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tollgate {args:?} did not finish within 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = Output {
        status,
        stdout: out_t.join().expect("stdout reader"),
        stderr: err_t.join().expect("stderr reader"),
    };
    CliRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
