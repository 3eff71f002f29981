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
    assert_inbound_refused(
        r#"        - validate-client-certificate:
            identities:
              - { thumbprint: "A9:99:3E:36:47:06:81:6A:BA:3E:25:71:78:50:C2:6C:9C:D0:D8:9D" }
              - { serial_number: "xyz" }
              - {}
              - { common_name: alice, colour: blue }
"#,
        &[
            "identities[0].thumbprint",
            "SHA-1 thumbprints are not accepted",
            "identities[1].serial_number",
            "identities[2]",
            "colour",
        ],
    );
}

/// Writes `text` over the file `path` by a rename, as certbot and Kubernetes do.
fn replace(path: &str, text: &str) {
    let tmp = format!("{path}.new");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// Whether `leaf` gets its request served over a new connection: false when the
/// handshake refuses it.
async fn served(gw: &Gateway, leaf: &Leaf) -> bool {
    let sent = presenting(leaf).get(gw.tls_url("/open/x")).send().await;
    sent.is_ok_and(|r| r.status() == 200)
}

/// Revocation lists (`--tls-client-crl`): a certificate they revoke fails the handshake.
/// The client CA and the lists are reloaded on SIGHUP and when the files change; a broken
/// list is logged and counted, and the lists served before stay.
#[tokio::test]
async fn revoked_client_certificates_are_refused_and_the_ca_is_reloaded() {
    let up = Upstream::start("u");
    let ca = Authority::new("Clients CA");
    let (alice, bob) = (ca.client("alice"), ca.client("bob"));
    let dir = tempfile::tempdir().expect("dir");
    let ca_file = write_file(dir.path(), "clients-ca.pem", ca.cert_pem());
    let crl_file = write_file(dir.path(), "clients.crl", &ca.crl(&[&bob]));
    let gw = Gateway::builder(&config(&up.url(), &thumbprint(&alice)))
        .tls()
        .env("TOLLGATE_TLS_CLIENT_CA", &ca_file)
        .env("TOLLGATE_TLS_CLIENT_CRL", &crl_file)
        .start();
    assert!(served(&gw, &alice).await);
    assert!(!served(&gw, &bob).await, "bob is revoked");
    // No certificate at all is still a policy's business.
    assert_eq!(
        fetch(tls_client().get(gw.tls_url("/open/x"))).await.status,
        200
    );

    // SIGHUP: the new list revokes alice instead.
    replace(&crl_file, &ca.crl(&[&alice]));
    gw.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        wait_until_async(Duration::from_secs(5), Duration::from_millis(100), || {
            served(&gw, &bob)
        })
        .await,
        "the new revocation list is not used after SIGHUP"
    );
    assert!(!served(&gw, &alice).await, "alice is revoked now");

    // No signal: a new CA and its list are noticed (files looked at every 5 s, read once
    // two looks found the same files).
    let next = Authority::new("Next Clients CA");
    let carol = next.client("carol");
    assert!(!served(&gw, &carol).await, "carol's CA is not trusted yet");
    replace(&ca_file, next.cert_pem());
    replace(&crl_file, &next.crl(&[]));
    assert!(
        wait_until_async(Duration::from_secs(20), Duration::from_millis(200), || {
            served(&gw, &carol)
        })
        .await,
        "the new client CA is not used without a signal"
    );
    assert!(!served(&gw, &bob).await, "the old CA is no longer trusted");

    // A broken list: logged and counted; the CA and list served before stay.
    std::fs::write(
        &crl_file,
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    )
    .expect("write");
    gw.signal(nix::sys::signal::Signal::SIGHUP);
    let metrics = || async {
        fetch(
            client()
                .get(gw.admin_url("/metrics"))
                .bearer_auth(gw.admin_token()),
        )
        .await
        .text()
    };
    let failed =
        "tollgate_tls_certificate_reloads_total{listener=\"proxy-client-ca\",outcome=\"failed\"} 1";
    assert!(
        wait_until_async(
            Duration::from_secs(5),
            Duration::from_millis(100),
            || async { metrics().await.lines().any(|l| l == failed) }
        )
        .await,
        "the failed reload is not counted: {}",
        metrics().await
    );
    assert!(served(&gw, &carol).await);
    assert!(
        gw.log().contains("client CA not reloaded") && gw.log().contains("clients.crl"),
        "{}",
        gw.log()
    );
    let text = metrics().await;
    for line in [
        "tollgate_tls_certificate_reloads_total{listener=\"proxy-client-ca\",outcome=\"ok\"} 2",
        // The list's nextUpdate (2040-01-01) comes before the CA certificate's notAfter.
        "tollgate_tls_certificate_not_after_seconds{listener=\"proxy-client-ca\"} 2208988800",
    ] {
        assert!(text.lines().any(|l| l == line), "{line}: {text}");
    }
}

/// A revocation list that does not load stops the start with a message naming it.
#[test]
fn a_bad_revocation_list_is_refused_at_start() {
    let ca = Authority::new("Clients CA");
    let dir = tempfile::tempdir().expect("dir");
    let ca_file = write_file(dir.path(), "clients-ca.pem", ca.cert_pem());
    // A certificate where the list should be.
    let crl_file = write_file(dir.path(), "clients.crl", ca.cert_pem());
    let server = ca.server(&["localhost"]);
    let run = run_serve_tls(
        dir.path(),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &write_file(dir.path(), "cert.pem", &server.cert_pem),
        &write_file(dir.path(), "key.pem", &server.key_pem),
        &["--tls-client-ca", &ca_file, "--tls-client-crl", &crl_file],
    );
    run.assert_code(1, "a bad revocation list");
    assert!(
        run.stderr.contains("clients.crl") && run.stderr.contains("no `-----BEGIN X509 CRL-----`"),
        "{}",
        run.stderr
    );
}
