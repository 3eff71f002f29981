//! The CI verbs against a running process: `diff` (exit 0 / 2 / 1), `apply` and
//! `apply --dry-run`, `dump`, `rollback N`, `${env:NAME}` substitution; and `tollgate admin`
//! (control plane only).
#![allow(missing_docs)]

use std::time::Duration;
use tollgate_tests::*;

const TOKEN: &str = "ci-admin-token-0123456789";
const OPERATOR: &str = "ci-operator-token-0123456789";

fn config(target: &str, value: &str) -> String {
    format!(
        r#"version: 1
products:
  - id: gold
    apis: [pets]
apis:
  - id: pets
    path: /pets
    subscription_required: false
    upstream: {{ targets: ["{target}"] }}
    policies:
      outbound:
        - set-header: {{ name: X-Value, value: "{value}" }}
"#
    )
}

struct Ci {
    gw: Gateway,
    up: Upstream,
    dir: tempfile::TempDir,
}

impl Ci {
    fn start() -> Ci {
        let up = Upstream::start("u");
        let gw = Gateway::builder(&config(&up.url(), "one"))
            .admin_token(TOKEN)
            .operator_token(OPERATOR)
            .start();
        Ci {
            gw,
            up,
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p.display().to_string()
    }

    /// `tollgate VERB args... --admin URL --token T` with `env`.
    fn run(&self, verb: &str, args: &[&str], env: &[(&str, &str)]) -> CliRun {
        let admin = self.gw.admin_url("");
        let mut all = vec![verb];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--admin", &admin, "--token", TOKEN]);
        run_tollgate(&all, env)
    }

    async fn value(&self) -> String {
        let a = get(&self.gw.url("/pets/x")).await;
        assert_eq!(a.status, 200, "{}", a.text());
        a.header("x-value").unwrap_or("").to_string()
    }
}

#[tokio::test]
async fn diff_exit_codes() {
    let ci = Ci::start();
    let admin = ci.gw.admin();
    let same = ci.file("same.yaml", &config(&ci.up.url(), "one"));
    ci.run("diff", &[&same], &[])
        .assert_code(0, "diff, unchanged");

    let changed = ci.file("changed.yaml", &config(&ci.up.url(), "two"));
    let out = ci.run("diff", &[&changed], &[]);
    out.assert_code(2, "diff, changed");
    assert!(
        out.stdout.contains("~ policies api:pets/outbound"),
        "no plan line for the changed section:\n{}",
        out.stdout
    );
    let added = ci.file(
        "added.yaml",
        &format!(
            "{}  - id: extra\n    path: /extra\n    upstream: {{ targets: [\"{}\"] }}\n",
            config(&ci.up.url(), "one"),
            ci.up.url()
        ),
    );
    let out = ci.run("diff", &[&added], &[]);
    out.assert_code(2, "diff, API added");
    assert!(out.stdout.contains("+ api extra"), "{}", out.stdout);

    let invalid = ci.file(
        "invalid.yaml",
        "version: 1\napis:\n  - id: Bad_Id\n    path: nope\n",
    );
    let out = ci.run("diff", &[&invalid], &[]);
    out.assert_code(1, "diff, invalid file");
    assert!(out.stderr.contains("apis[0]"), "{}", out.stderr);
    ci.run("diff", &["/nonexistent/policy.yaml"], &[])
        .assert_code(1, "diff, missing file");

    // An admin service that does not answer.
    let dead = format!("http://127.0.0.1:{}", closed_port());
    let out = run_tollgate(&["diff", &same, "--admin", &dead, "--token", TOKEN], &[]);
    out.assert_code(1, "diff, unreachable admin");
    assert!(!out.stderr.is_empty());
    // A wrong token is an error too.
    let out = run_tollgate(
        &[
            "diff",
            &same,
            "--admin",
            &ci.gw.admin_url(""),
            "--token",
            "wrong",
        ],
        &[],
    );
    out.assert_code(1, "diff, wrong token");
    // The operator token is enough for a diff (a dry run), not for an apply.
    let with_operator = |verb: &str| {
        run_tollgate(
            &[
                verb,
                &changed,
                "--admin",
                &ci.gw.admin_url(""),
                "--token",
                OPERATOR,
            ],
            &[],
        )
    };
    with_operator("diff").assert_code(2, "diff with the operator token");
    with_operator("apply").assert_code(1, "apply with the operator token");
    // The environment names the admin service and the token.
    let out = run_tollgate(
        &["diff", &changed],
        &[
            ("TOLLGATE_ADMIN_URL", &ci.gw.admin_url("")),
            ("TOLLGATE_TOKEN", TOKEN),
        ],
    );
    out.assert_code(2, "diff, admin and token from the environment");

    // diff never writes.
    assert_eq!(admin.revisions().await.len(), 1);
    assert_eq!(ci.value().await, "one");
}

#[tokio::test]
async fn apply_and_dry_run() {
    let ci = Ci::start();
    let admin = ci.gw.admin();
    let two = ci.file("two.yaml", &config(&ci.up.url(), "two"));

    let out = ci.run("apply", &[&two, "--dry-run"], &[]);
    out.assert_code(0, "apply --dry-run");
    assert!(
        out.stdout.contains("api:pets/outbound"),
        "the dry run shows no plan:\n{}",
        out.stdout
    );
    assert_eq!(
        admin.revisions().await.len(),
        1,
        "a dry run made a revision"
    );
    assert_eq!(ci.value().await, "one");

    ci.run("apply", &[&two], &[]).assert_code(0, "apply");
    assert_eq!(admin.revisions().await.len(), 2);
    assert_eq!(admin.live_revision().await, 2);
    assert_eq!(ci.value().await, "two");
    let rev = admin.get("/config/revisions/2").await.json();
    assert_eq!(rev["source"], "api");
    assert_eq!(rev["text"], config(&ci.up.url(), "two"));
    // Applying the same file again: success, nothing new.
    ci.run("apply", &[&two], &[])
        .assert_code(0, "apply, unchanged");
    assert_eq!(admin.revisions().await.len(), 2);
    ci.run("diff", &[&two], &[])
        .assert_code(0, "diff after apply");

    // An invalid file: exit 1 with every problem printed, nothing applied.
    let bad = ci.file(
        "bad.yaml",
        &format!(
            "version: 1\napis:\n  - id: Bad_Id\n    path: no-slash\n    upstream: {{ targets: [\"{}\"] }}\n    policies:\n      inbound: [ no-such-policy: {{}} ]\n",
            ci.up.url()
        ),
    );
    let out = ci.run("apply", &[&bad], &[]);
    out.assert_code(1, "apply, invalid");
    let listed = out
        .stderr
        .lines()
        .filter(|l| l.trim_start().starts_with("apis[0]"))
        .count();
    assert!(
        listed >= 2,
        "expected every problem on its own line:\n{}",
        out.stderr
    );
    assert_eq!(admin.revisions().await.len(), 2);
    assert_eq!(ci.value().await, "two");
    // Unreachable admin.
    let dead = format!("http://127.0.0.1:{}", closed_port());
    run_tollgate(&["apply", &two, "--admin", &dead, "--token", TOKEN], &[])
        .assert_code(1, "apply, unreachable admin");
}

#[tokio::test]
async fn dump_prints_the_live_config() {
    let ci = Ci::start();
    let admin = ci.gw.admin();
    admin.put_config(&config(&ci.up.url(), "dumped")).await;
    let out = ci.run("dump", &[], &[]);
    out.assert_code(0, "dump");
    // Byte for byte what the admin API serves as YAML.
    let live_yaml = fetch(
        admin
            .req(reqwest::Method::GET, "/config")
            .header("accept", "application/yaml"),
    )
    .await
    .text();
    assert_eq!(out.stdout.trim_end(), live_yaml.trim_end());
    assert!(out.stdout.contains("dumped"), "{}", out.stdout);
    // It parses as a policy file that equals the live config: `validate` accepts it, and
    // neither `diff` nor a dry run finds a change.
    let f = ci.file("dump.yaml", &out.stdout);
    run_tollgate(&["validate", &f], &[]).assert_code(0, "validate the dump");
    ci.run("diff", &[&f], &[]).assert_code(0, "diff the dump");
    let plan = admin.put_yaml("/config?dry_run=true", &out.stdout).await;
    assert_eq!(plan.status, 200, "{}", plan.text());
    assert_eq!(plan.json()["changes"], serde_json::json!([]));
    // Applying the dump is the same config (as JSON).
    let before = admin.get("/config").await.json();
    ci.run("apply", &[&f], &[]).assert_code(0, "apply the dump");
    assert_eq!(admin.get("/config").await.json(), before);
    // A wrong token: exit 1.
    run_tollgate(
        &["dump", "--admin", &ci.gw.admin_url(""), "--token", "nope"],
        &[],
    )
    .assert_code(1, "dump, wrong token");
}

#[tokio::test]
async fn rollback_makes_a_new_revision_with_the_old_text() {
    let ci = Ci::start();
    let admin = ci.gw.admin();
    admin.put_config(&config(&ci.up.url(), "two")).await;
    admin.put_config(&config(&ci.up.url(), "three")).await;
    assert_eq!(ci.value().await, "three");

    ci.run("rollback", &["1"], &[]).assert_code(0, "rollback 1");
    assert_eq!(admin.live_revision().await, 4);
    let r1 = admin.get("/config/revisions/1").await.json();
    let r4 = admin.get("/config/revisions/4").await.json();
    assert_eq!(
        r4["text"], r1["text"],
        "revision 4's text is not revision 1's"
    );
    assert_eq!(r4["sha256"], r1["sha256"]);
    assert_eq!(r4["source"], "rollback");
    assert_eq!(ci.value().await, "one");

    ci.run("rollback", &["2"], &[]).assert_code(0, "rollback 2");
    assert_eq!(admin.live_revision().await, 5);
    assert_eq!(
        admin.get("/config/revisions/5").await.json()["text"],
        admin.get("/config/revisions/2").await.json()["text"]
    );
    assert_eq!(ci.value().await, "two");

    let out = ci.run("rollback", &["99"], &[]);
    out.assert_code(1, "rollback to a missing revision");
    assert!(!out.stderr.is_empty());
    assert_eq!(admin.live_revision().await, 5);
}

#[tokio::test]
async fn env_substitution_in_pushed_files() {
    let ci = Ci::start();
    let admin = ci.gw.admin();
    let templated = config(&ci.up.url(), "${env:TOLLGATE_TEST_VALUE}");
    let f = ci.file("env.yaml", &templated);

    let out = ci.run("diff", &[&f], &[("TOLLGATE_TEST_VALUE", "from-env")]);
    out.assert_code(2, "diff with the variable set");
    ci.run("apply", &[&f], &[("TOLLGATE_TEST_VALUE", "from-env")])
        .assert_code(0, "apply with the variable set");
    assert_eq!(ci.value().await, "from-env");
    let rev = admin.get("/config/revisions/2").await.json();
    let text = rev["text"].as_str().unwrap();
    assert!(
        text.contains("from-env") && !text.contains("${env:"),
        "the stored text is not substituted:\n{text}"
    );
    ci.run("diff", &[&f], &[("TOLLGATE_TEST_VALUE", "from-env")])
        .assert_code(0, "diff, same value");

    // A missing variable: exit 1, naming it and its line; nothing sent.
    let line = templated
        .lines()
        .position(|l| l.contains("${env:"))
        .unwrap()
        + 1;
    for verb in ["apply", "diff"] {
        let out = ci.run(verb, &[&f], &[]);
        out.assert_code(1, &format!("{verb} with the variable missing"));
        assert!(
            out.stderr.contains("TOLLGATE_TEST_VALUE"),
            "{verb}: the variable is not named:\n{}",
            out.stderr
        );
        assert!(
            out.stderr.contains(&format!("line {line}")),
            "{verb}: line {line} is not named:\n{}",
            out.stderr
        );
    }
    assert_eq!(admin.revisions().await.len(), 2);
    assert_eq!(ci.value().await, "from-env");
}

#[tokio::test]
async fn admin_role_runs_the_control_plane_alone() {
    let up = Upstream::start("u");
    let mut gw = Gateway::builder(&config(&up.url(), "one"))
        .admin_token(TOKEN)
        .admin_only()
        .start();
    let anon = Admin::new(&gw.admin_url(""), None);
    assert_eq!(anon.get("/healthz").await.status, 200);
    assert_eq!(anon.get("/readyz").await.status, 200);
    assert_admin_problem(&anon.get("/config").await, 401);
    let admin = gw.admin();
    let a = admin.get("/config").await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("etag"), Some("\"1\""));
    assert_eq!(a.json()["apis"][0]["id"], "pets");
    // Writes work too.
    admin.put_config(&config(&up.url(), "two")).await;
    assert_eq!(admin.live_revision().await, 2);
    admin.create_subscription("s", "api:pets").await;
    // No proxy listens.
    assert!(
        std::net::TcpStream::connect_timeout(&gw.addr(), Duration::from_millis(300)).is_err(),
        "something answers on the proxy address of `tollgate admin`"
    );
    let exit = gw.stop(Duration::from_secs(10));
    assert_eq!(exit.code(), Some(0), "exit after SIGTERM: {exit}");
}
