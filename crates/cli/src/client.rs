//! The CI verbs: `diff`, `apply`, `dump`, `rollback`, talking to the admin API.
//!
//! Exit codes: `diff` 0 no change, 2 changes, 1 error; the others 0 on success, 1 on error.
//! Errors from the admin service (problem+json) are printed with every listed problem.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// Where and as whom to talk to the admin API.
pub(crate) struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// A finished call: status and body.
struct Reply {
    status: u16,
    body: String,
}

impl Client {
    /// A client of the admin API at `base`; `ca`: certificates (PEM) trusted for an
    /// `https://` URL besides the public roots.
    pub(crate) fn new(
        base: &str,
        token: Option<String>,
        ca: Option<&Path>,
    ) -> Result<Client, String> {
        let mut agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60));
        if let Some(ca) = ca {
            agent = agent.tls_config(std::sync::Arc::new(tls_trusting(ca)?));
        }
        Ok(Client {
            base: base.trim_end_matches('/').to_owned(),
            token,
            agent: agent.build(),
        })
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        accept: &str,
        body: Option<&str>,
    ) -> Result<Reply, String> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.agent.request(method, &url).set("Accept", accept);
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        if let Some(ct) = content_type {
            req = req.set("Content-Type", ct);
        }
        let res = match body {
            Some(b) => req.send_string(b),
            None => req.call(),
        };
        let resp = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(format!("cannot reach the admin API at {}: {e}", self.base)),
        };
        let status = resp.status();
        let body = resp
            .into_string()
            .map_err(|e| format!("cannot read the admin API's answer: {e}"))?;
        Ok(Reply { status, body })
    }
}

/// TLS client settings trusting the public roots and the certificates in the PEM file `ca`.
fn tls_trusting(ca: &Path) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    roots
        .roots
        .extend(tollgate_gateway::listener_cert::read_roots(ca, "the admin CA")?.roots);
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS settings: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Print a problem+json answer (with its `errors`, if any) to stderr.
fn print_problem(reply: &Reply) {
    match serde_json::from_str::<serde_json::Value>(&reply.body) {
        Ok(doc) => {
            let title = doc.get("title").and_then(|v| v.as_str()).unwrap_or("error");
            let detail = doc.get("detail").and_then(|v| v.as_str()).unwrap_or("");
            eprintln!("{} {title}: {detail}", reply.status);
            if let Some(errors) = doc.get("errors").and_then(|v| v.as_array()) {
                for e in errors {
                    let path = e.get("path").and_then(|v| v.as_str()).unwrap_or("");
                    let msg = e.get("message").and_then(|v| v.as_str()).unwrap_or("");
                    match e.get("line").and_then(|v| v.as_u64()) {
                        Some(line) => eprintln!("  {path} (line {line}): {msg}"),
                        None => eprintln!("  {path}: {msg}"),
                    }
                }
            }
        }
        Err(_) => eprintln!("{}: {}", reply.status, reply.body.trim()),
    }
}

/// One line per planned change.
fn print_changes(changes: &[serde_json::Value]) {
    for c in changes {
        let field = |k: &str| c.get(k).and_then(|v| v.as_str());
        let action = field("action")
            .or(field("change"))
            .or(field("op"))
            .unwrap_or("~");
        let sign = match action {
            "added" | "add" => "+",
            "removed" | "remove" => "-",
            _ => "~",
        };
        let kind = field("kind").or(field("type")).unwrap_or("");
        let what = field("id")
            .or(field("path"))
            .or(field("target"))
            .unwrap_or("");
        match field("detail").or(field("description")) {
            Some(d) => println!("{sign} {kind} {what}: {d}"),
            None => println!("{sign} {kind} {what}"),
        }
    }
}

fn read_policy_file(file: &Path) -> Result<String, ExitCode> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        eprintln!("{}: cannot read: {e}", file.display());
        ExitCode::from(1)
    })?;
    tollgate_config::substitute_env(&text).map_err(|errs| {
        eprintln!("{}: {} problem(s)", file.display(), errs.len());
        for e in errs {
            eprintln!("  {e}");
        }
        ExitCode::from(1)
    })
}

/// Push `file` with `PUT /config` (`dry_run` for the plan only). Returns the parsed answer.
fn put_config(client: &Client, file: &Path, dry_run: bool) -> Result<serde_json::Value, ExitCode> {
    let text = read_policy_file(file)?;
    let path = if dry_run {
        "/config?dry_run=true"
    } else {
        "/config"
    };
    let reply = client
        .call(
            "PUT",
            path,
            Some("application/yaml"),
            "application/json",
            Some(&text),
        )
        .map_err(|e| {
            eprintln!("{e}");
            ExitCode::from(1)
        })?;
    if !(200..300).contains(&reply.status) {
        print_problem(&reply);
        return Err(ExitCode::from(1));
    }
    serde_json::from_str(&reply.body).map_err(|e| {
        eprintln!("unexpected answer from the admin API: {e}");
        ExitCode::from(1)
    })
}

fn changes_of(doc: &serde_json::Value) -> Vec<serde_json::Value> {
    doc.get("changes")
        .and_then(|c| c.as_array())
        .cloned()
        .unwrap_or_default()
}

/// `tollgate diff FILE`: 0 no change, 2 changes, 1 error.
pub(crate) fn diff(client: &Client, file: &Path) -> ExitCode {
    match put_config(client, file, true) {
        Ok(doc) => {
            let changes = changes_of(&doc);
            if changes.is_empty() {
                println!("no changes");
                ExitCode::SUCCESS
            } else {
                print_changes(&changes);
                println!("{} change(s)", changes.len());
                ExitCode::from(2)
            }
        }
        Err(code) => code,
    }
}

/// `tollgate apply FILE [--dry-run]`.
pub(crate) fn apply(client: &Client, file: &Path, dry_run: bool) -> ExitCode {
    match put_config(client, file, dry_run) {
        Ok(doc) => {
            let changes = changes_of(&doc);
            print_changes(&changes);
            if dry_run {
                println!("dry run: {} change(s), nothing applied", changes.len());
            } else {
                match doc.get("revision").and_then(|r| r.as_u64()) {
                    Some(r) => println!("applied: revision {r} ({} change(s))", changes.len()),
                    None => println!("applied ({} change(s))", changes.len()),
                }
            }
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// `tollgate dump`: the live config as YAML on stdout.
pub(crate) fn dump(client: &Client) -> ExitCode {
    match client.call("GET", "/config", None, "application/yaml", None) {
        Ok(reply) if reply.status == 200 => {
            print!("{}", reply.body);
            if !reply.body.ends_with('\n') {
                println!();
            }
            ExitCode::SUCCESS
        }
        Ok(reply) => {
            print_problem(&reply);
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

/// `tollgate rollback REVISION`.
pub(crate) fn rollback(client: &Client, revision: u64) -> ExitCode {
    let body = serde_json::json!({ "revision": revision }).to_string();
    match client.call(
        "POST",
        "/config/rollback",
        Some("application/json"),
        "application/json",
        Some(&body),
    ) {
        Ok(reply) if (200..300).contains(&reply.status) => {
            let doc: serde_json::Value = serde_json::from_str(&reply.body).unwrap_or_default();
            match doc.get("revision").and_then(|r| r.as_u64()) {
                Some(r) => println!("revision {revision} is live again as revision {r}"),
                None => println!("revision {revision} is live again"),
            }
            ExitCode::SUCCESS
        }
        Ok(reply) => {
            print_problem(&reply);
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}
