//! `upstream.tls`: per-API trust (`ca`), mutual TLS (`client_certificate`, `client_key`),
//! `server_name` and `verify`, against real TLS upstreams signed by a private CA.
#![allow(missing_docs)]

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::time::Duration;
use tollgate_tests::pki::{server_config, yaml_block, Authority};
use tollgate_tests::*;

/// `text` as a YAML block scalar for a key indented by 8 spaces.
fn block(text: &str) -> String {
    yaml_block(text, 10)
}

/// An API `id` at `/id` on `target`, with `tls` lines (already indented) when not empty.
fn api(id: &str, target: &str, tls: &str) -> String {
    let tls = if tls.is_empty() {
        String::new()
    } else {
        format!("      tls:\n{tls}")
    };
    format!(
        "  - id: {id}\n    path: /{id}\n    subscription_required: false\n    upstream:\n      targets: [\"{target}\"]\n{tls}"
    )
}

fn config(apis: &[String]) -> String {
    format!("version: 1\napis:\n{}", apis.concat())
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("PEM")
        .to_vec()
}

/// Each API trusts what its own `ca` says, not the system's store, and a connection one
/// API verified is never handed to another API whose trust differs (Pingora's connection
/// pool keys on address and SNI, not on the trust store).
#[tokio::test]
async fn ca_is_per_api_and_connections_do_not_cross_trusts() {
    let ours = Authority::new("Tollgate test CA");
    let theirs = Authority::new("Someone else's CA");
    let up = Upstream::start_tls("private", server_config(&ours.server(&["127.0.0.1"]), None));
    let target = format!("https://127.0.0.1:{}", up.port());
    let gw = Gateway::start(&config(&[
        api(
            "trusting",
            &target,
            &format!("        ca: {}", block(ours.cert_pem())),
        ),
        api(
            "other-ca",
            &target,
            &format!("        ca: {}", block(theirs.cert_pem())),
        ),
        api("system", &target, ""),
    ]));
    // Twice: the second request reuses the pooled connection.
    for i in 0..2 {
        let a = get(&gw.url(&format!("/trusting/ok-{i}"))).await;
        assert_eq!(a.status, 200, "{}", a.text());
        assert!(a.from_upstream("private"));
    }
    assert_eq!(up.count(), 2);
    // Same address, same SNI, a warm verified connection in the pool: still refused.
    for id in ["other-ca", "system"] {
        let a = get(&gw.url(&format!("/{id}/refused"))).await;
        a.assert_problem(502);
        let detail = a.json()["detail"].as_str().unwrap_or("").to_owned();
        assert!(detail.contains("TLS"), "{detail}");
    }
    assert_eq!(up.count(), 2, "{:?}", up.requests());
}

/// Mutual TLS: the API with a client certificate gets through an upstream that demands
/// one, and the upstream sees exactly that certificate; its key can come from the
/// environment (`${env:NAME}` in double quotes). An API without one is refused by the
/// upstream's handshake: 502, nothing reaches it.
#[tokio::test]
async fn client_certificate_gets_through_an_upstream_that_demands_one() {
    let servers = Authority::new("servers");
    let clients = Authority::new("clients");
    let me = clients.client("tollgate-billing");
    let up = Upstream::start_tls(
        "mtls",
        server_config(&servers.server(&["127.0.0.1"]), Some(&clients)),
    );
    let target = format!("https://127.0.0.1:{}", up.port());
    let ca = format!("        ca: {}", block(servers.cert_pem()));
    let identity = format!(
        "{ca}        client_certificate: {}        client_key: \"${{env:BILLING_CLIENT_KEY}}\"\n",
        block(&me.cert_pem)
    );
    let gw = Gateway::builder(&config(&[
        api("with-cert", &target, &identity),
        api("without-cert", &target, &ca),
    ]))
    .env("BILLING_CLIENT_KEY", &me.key_pem)
    .start();
    for i in 0..2 {
        let a = get(&gw.url(&format!("/with-cert/pay-{i}"))).await;
        assert_eq!(a.status, 200, "{}", a.text());
    }
    let seen = up.requests();
    assert_eq!(seen.len(), 2);
    for r in &seen {
        assert_eq!(r.client_cert.as_deref(), Some(der(&me.cert_pem).as_slice()));
    }
    let a = get(&gw.url("/without-cert/pay")).await;
    a.assert_problem(502);
    assert_eq!(up.count(), 2, "{:?}", up.requests());
    // The normalized live file (`GET /config`, what `tollgate dump` saves) applies again
    // as it is, and the identity still works.
    let admin = gw.admin();
    let live = admin.get("/config").await;
    assert_eq!(live.status, 200, "{}", live.text());
    let text = live.text();
    assert!(text.contains("client_certificate"), "{text}");
    admin.put_config(&text).await;
    let a = get(&gw.url("/with-cert/pay-again")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    // The key is never in the log.
    let secret_line = me.key_pem.lines().nth(1).expect("a base64 line");
    assert!(!gw.log().contains(secret_line), "the client key was logged");
}

/// `server_name` is what is sent as SNI and verified, for a target written as an IP
/// address; `verify: false` accepts any certificate.
#[tokio::test]
async fn server_name_and_verify() {
    let ca = Authority::new("names");
    let up = Upstream::start_tls(
        "named",
        server_config(&ca.server(&["billing.internal"]), None),
    );
    let target = format!("https://127.0.0.1:{}", up.port());
    let trust = format!("        ca: {}", block(ca.cert_pem()));
    let gw = Gateway::start(&config(&[
        api(
            "named",
            &target,
            &format!("{trust}        server_name: billing.internal\n"),
        ),
        api("by-ip", &target, &trust),
        api("unverified", &target, "        verify: false\n"),
    ]));
    let a = get(&gw.url("/named/x")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    // The certificate does not name 127.0.0.1.
    get(&gw.url("/by-ip/x")).await.assert_problem(502);
    let a = get(&gw.url("/unverified/x")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.count(), 2);
}

/// Active health checks go out with the same TLS settings: against an upstream that
/// demands a client certificate, the target stays healthy and serves.
#[tokio::test]
async fn health_checks_use_the_tls_settings() {
    let servers = Authority::new("servers");
    let clients = Authority::new("clients");
    let me = clients.client("tollgate");
    let up = Upstream::start_tls(
        "checked",
        server_config(&servers.server(&["127.0.0.1"]), Some(&clients)),
    );
    let target = format!("https://127.0.0.1:{}", up.port());
    let tls = format!(
        "        ca: {}        client_certificate: {}        client_key: {}",
        block(servers.cert_pem()),
        block(&me.cert_pem),
        block(&me.key_pem)
    );
    let mut yaml = config(&[api("checked", &target, &tls)]);
    yaml.push_str("      health_check: { path: /health, interval: 200ms }\n");
    let gw = Gateway::start(&yaml);
    assert!(
        up.wait_for_health_hits(3, Duration::from_secs(10)),
        "no health checks arrived: {}",
        gw.log()
    );
    let a = get(&gw.url("/checked/x")).await;
    assert_eq!(a.status, 200, "{}", a.text());
}

/// Bad TLS material is refused with every problem listed (`tollgate validate`), and
/// through the admin API the live config keeps serving.
#[tokio::test]
async fn bad_tls_material_is_refused_with_every_problem() {
    let ca = Authority::new("ca");
    let other = Authority::new("other");
    let mine = ca.client("a");
    let not_mine = other.client("b");
    let up = Upstream::start("plain");
    let good = config(&[api("plain", &up.url(), "")]);
    let bad = config(&[
        api("plain", &up.url(), "        verify: false\n"),
        api(
            "mismatch",
            "https://127.0.0.1:1",
            &format!(
                "        ca: \"not a certificate\"\n        client_certificate: {}        client_key: {}",
                block(&mine.cert_pem),
                block(&not_mine.key_pem)
            ),
        ),
    ]);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write_file(dir.path(), "bad.yaml", &bad);
    let run = run_tollgate(&["validate", &file], &[]);
    assert_eq!(run.code, Some(1), "{run:?}");
    for needle in [
        "apis[0].upstream.tls",
        "`https://` targets",
        "apis[1].upstream.tls.ca",
        "apis[1].upstream.tls.client_key",
        "does not fit `client_certificate`",
    ] {
        assert!(
            run.stderr.contains(needle),
            "{needle} missing:\n{}",
            run.stderr
        );
    }
    let secret_line = not_mine.key_pem.lines().nth(1).expect("a base64 line");
    assert!(!run.stderr.contains(secret_line));

    let gw = Gateway::start(&good);
    let admin = gw.admin();
    let refused = admin.put_yaml("/config", &bad).await;
    assert_eq!(refused.status, 422, "{}", refused.text());
    let body = refused.text();
    assert!(body.contains("apis[1].upstream.tls.client_key"), "{body}");
    let a = get(&gw.url("/plain/still")).await;
    assert_eq!(a.status, 200, "{}", a.text());
}
