//! Client certificates on the TLS listener (`--tls-client-ca`) and the
//! `validate-client-certificate` policy: a certificate from the trusted CA is verified at
//! the handshake (one from another CA fails it); APIs with the policy need one (401
//! without), and with `identities` one that matches (403 otherwise); APIs without it
//! serve clients with or without a certificate.
#![allow(missing_docs)]

use sha2::{Digest, Sha256};
use std::time::Duration;
use tollgate_tests::pki::{Authority, Leaf};
use tollgate_tests::*;

fn thumbprint(leaf: &Leaf) -> String {
    use rustls::pki_types::pem::PemObject;
    let der =
        rustls::pki_types::CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).expect("PEM");
    Sha256::digest(der.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn config(target: &str, carol: &str) -> String {
    format!(
        r#"version: 1
apis:
  - id: named
    path: /named
    subscription_required: false
    upstream: {{ targets: ["{target}"] }}
    policies:
      inbound:
        - validate-client-certificate:
            identities:
              - {{ common_name: alice, issuer_subject: "CN=Clients CA" }}
              - {{ thumbprint: "{carol}" }}
  - id: any
    path: /any
    subscription_required: false
    upstream: {{ targets: ["{target}"] }}
    policies:
      inbound:
        - validate-client-certificate: {{}}
        - set-header:
            name: X-Client-Cert
            value: "{{client.certificate.common_name}}|{{client.certificate.thumbprint}}|{{client.certificate.issuer_subject}}"
  - id: open
    path: /open
    subscription_required: false
    upstream: {{ targets: ["{target}"] }}
"#
    )
}

/// An HTTPS client presenting `leaf` (the gateway's self-signed certificate accepted).
fn presenting(leaf: &Leaf) -> reqwest::Client {
    let pem = format!("{}{}", leaf.cert_pem, leaf.key_pem);
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .use_rustls_tls()
        .danger_accept_invalid_certs(true)
        .identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("identity"))
        .build()
        .expect("client")
}

#[tokio::test]
async fn apis_need_a_trusted_client_certificate_when_they_say_so() {
    let up = Upstream::start("u");
    let ca = Authority::new("Clients CA");
    let (alice, bob, carol) = (ca.client("alice"), ca.client("bob"), ca.client("carol"));
    let stranger = Authority::new("Clients CA").client("alice");
    let dir = tempfile::tempdir().expect("dir");
    let ca_file = write_file(dir.path(), "clients-ca.pem", ca.cert_pem());
    let gw = Gateway::builder(&config(&up.url(), &thumbprint(&carol)))
        .tls()
        .env("TOLLGATE_TLS_CLIENT_CA", &ca_file)
        .start();
    let status = |c: reqwest::Client, path: &'static str| {
        let url = gw.tls_url(path);
        async move { fetch(c.get(url)).await }
    };

    // alice: named by common name and issuer; any trusted certificate will do elsewhere.
    for path in ["/named/x", "/any/x", "/open/x"] {
        let a = status(presenting(&alice), path).await;
        assert_eq!(a.status, 200, "{path}: {}", a.text());
    }
    // carol: named by thumbprint. bob: trusted, but not named.
    assert_eq!(status(presenting(&carol), "/named/x").await.status, 200);
    let a = status(presenting(&bob), "/named/x").await;
    let p = a.assert_problem(403);
    assert_eq!(
        p["type"],
        "urn:tollgate:problem:client-certificate-not-allowed"
    );
    assert_eq!(status(presenting(&bob), "/any/x").await.status, 200);
    // The certificate's fields as template variables: what the upstream is told.
    assert_eq!(
        up.expect_last().header("x-client-cert"),
        Some(format!("bob|{}|CN=Clients CA", thumbprint(&bob)).as_str())
    );

    // No certificate: 401 where one is needed, served elsewhere; the same on plain HTTP.
    for path in ["/named/x", "/any/x"] {
        let a = status(tls_client(), path).await;
        let p = a.assert_problem(401);
        assert_eq!(
            p["type"],
            "urn:tollgate:problem:client-certificate-required"
        );
        get(&gw.url(path)).await.assert_problem(401);
    }
    assert_eq!(status(tls_client(), "/open/x").await.status, 200);

    // A certificate from another CA (even with the same names) fails the handshake.
    let refused = presenting(&stranger)
        .get(gw.tls_url("/open/x"))
        .send()
        .await;
    assert!(refused.is_err(), "{refused:?}");
    // Nothing refused reached the upstream: alice 3, carol 1, bob 1, no-cert 1.
    assert_eq!(up.count(), 6);
}

#[test]
fn identities_are_checked_when_the_file_is() {
    let dir = tempfile::tempdir().expect("dir");
    let file = write_file(
        dir.path(),
        "policy.yaml",
        r#"version: 1
apis:
  - id: a
    path: /a
    upstream: { targets: ["http://127.0.0.1:9"] }
    policies:
      inbound:
        - validate-client-certificate:
            identities:
              - { thumbprint: "A9:99:3E:36:47:06:81:6A:BA:3E:25:71:78:50:C2:6C:9C:D0:D8:9D" }
              - { serial_number: "xyz" }
              - {}
              - { common_name: alice, colour: blue }
"#,
    );
    let run = run_tollgate(&["validate", &file], &[]);
    run.assert_code(1, "bad identities");
    for wanted in [
        "identities[0].thumbprint",
        "SHA-1 thumbprints are not accepted",
        "identities[1].serial_number",
        "identities[2]",
        "colour",
    ] {
        assert!(run.stderr.contains(wanted), "{wanted}: {}", run.stderr);
    }
}
