//! `upstream.tls`: the trust and the client identity of an API's `https` targets.
//!
//! Everything is checked here, at validation, so that nothing can fail later when a
//! connection is made: Pingora parses these certificates with `x509-parser` and panics on
//! one it cannot parse, and it converts the key with a `PrivateKeyDer::try_from(..)
//! .unwrap()`. A certificate must therefore parse with the `x509-parser` Pingora uses and
//! be accepted by webpki as a trust anchor (`ca`); a key must be one of the three DER
//! forms that conversion recognises and belong to the chain's first certificate.

use super::Cx;
use crate::compiled::{Target, UpstreamTlsDef};
use crate::positions::join_key;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_yaml::Value;
use std::sync::Arc;

/// The fields of `upstream.tls`.
pub(super) const FIELDS: &[&str] = &[
    "ca",
    "client_certificate",
    "client_key",
    "server_name",
    "verify",
];

/// Checks `upstream.tls` at `path`, for an upstream with `targets`.
pub(super) fn check(
    cx: &mut Cx<'_>,
    value: &Value,
    path: &str,
    targets: &[Target],
) -> Option<Arc<UpstreamTlsDef>> {
    let map = cx.mapping(value, path, "the upstream TLS settings", FIELDS)?;
    let errors_before = cx.errors.len();
    if !targets.is_empty() && targets.iter().all(|t| !t.tls) {
        cx.error(
            path,
            "`tls` applies to `https://` targets, and this upstream has none",
        );
    }
    let ca = cx
        .optional::<String>(map, path, "ca")
        .and_then(|pem| certificates(cx, &pem, &join_key(path, "ca"), true));
    let chain_path = join_key(path, "client_certificate");
    let key_path = join_key(path, "client_key");
    let chain = cx
        .optional::<String>(map, path, "client_certificate")
        .map(|pem| certificates(cx, &pem, &chain_path, false));
    let key = cx
        .optional::<String>(map, path, "client_key")
        .map(|pem| private_key(cx, &pem, &key_path));
    let client = match (chain, key) {
        (None, None) => None,
        (Some(_), None) => {
            cx.error(&key_path, "`client_certificate` needs its `client_key`");
            None
        }
        (None, Some(_)) => {
            cx.error(&chain_path, "`client_key` needs its `client_certificate`");
            None
        }
        (Some(Some(chain)), Some(Some(key))) => {
            let certs = chain.iter().cloned().map(CertificateDer::from).collect();
            // The key as Pingora's connector will turn it back from its bytes.
            match PrivateKeyDer::try_from(key.clone()).map(|k| {
                rustls::sign::CertifiedKey::from_der(
                    certs,
                    k,
                    &rustls::crypto::ring::default_provider(),
                )
            }) {
                Ok(Ok(_)) => Some((chain, key)),
                Ok(Err(rustls::Error::InconsistentKeys(_))) => {
                    cx.error(
                        &key_path,
                        "`client_key` does not fit `client_certificate`: it is not the key of \
                         the chain's first certificate",
                    );
                    None
                }
                Ok(Err(e)) => {
                    cx.error(
                        &key_path,
                        format!("`client_key` is no usable private key: {e}"),
                    );
                    None
                }
                Err(e) => {
                    cx.error(
                        &key_path,
                        format!("`client_key` is no usable private key: {e}"),
                    );
                    None
                }
            }
        }
        _ => None,
    };
    let server_name = cx.optional::<String>(map, path, "server_name");
    if let Some(name) = &server_name {
        if name.is_empty() || ServerName::try_from(name.as_str()).is_err() {
            cx.error(
                &join_key(path, "server_name"),
                format!("`{name}` is no DNS name or IP address"),
            );
        }
    }
    let verify = cx.optional::<bool>(map, path, "verify").unwrap_or(true);
    if cx.errors.len() != errors_before {
        return None;
    }
    Some(Arc::new(UpstreamTlsDef {
        ca,
        client,
        server_name,
        verify,
    }))
}

/// `text` with PEM's line structure restored where YAML folded it: a PEM put in a
/// double-quoted string through `${env:NAME}` arrives with its line breaks turned into
/// spaces (`-----BEGIN PRIVATE KEY----- MIIE... -----END PRIVATE KEY-----`). Base64 holds
/// no spaces, so every run of spaces outside the `-----` markers was a line break.
fn unfold_pem(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let mut rest = text;
    while let Some(start) = rest.find("-----") {
        // Base64 (or nothing) before the marker: one token per line.
        for token in rest[..start].split_whitespace() {
            out.push_str(token);
            out.push('\n');
        }
        let after = &rest[start + 5..];
        let Some(end) = after.find("-----") else {
            out.push_str(&rest[start..]);
            return out;
        };
        out.push_str(&rest[start..start + 5 + end + 5]);
        out.push('\n');
        rest = &after[end + 5..];
    }
    for token in rest.split_whitespace() {
        out.push_str(token);
        out.push('\n');
    }
    out
}

/// The DER certificates of a PEM text (at least one), each parsed the way Pingora will;
/// with `anchors`, each must also be usable as a trust anchor.
fn certificates(cx: &mut Cx<'_>, pem: &str, path: &str, anchors: bool) -> Option<Vec<Vec<u8>>> {
    let pem = unfold_pem(pem);
    let mut out = Vec::new();
    for (i, item) in CertificateDer::pem_slice_iter(pem.as_bytes()).enumerate() {
        let der = match item {
            Ok(der) => der,
            Err(e) => {
                cx.error(path, format!("certificate {}: bad PEM: {e}", i + 1));
                return None;
            }
        };
        if let Err(e) =
            <x509_parser::certificate::X509Certificate<'_> as x509_parser::prelude::FromDer<
                '_,
                x509_parser::error::X509Error,
            >>::from_der(der.as_ref())
        {
            cx.error(
                path,
                format!("certificate {} is no X.509 certificate: {e}", i + 1),
            );
            return None;
        }
        if anchors {
            let mut store = rustls::RootCertStore::empty();
            if let Err(e) = store.add(der.clone()) {
                cx.error(
                    path,
                    format!("certificate {} cannot be a trust anchor: {e}", i + 1),
                );
                return None;
            }
        }
        out.push(der.to_vec());
    }
    if out.is_empty() {
        cx.error(path, "no `-----BEGIN CERTIFICATE-----` block");
        return None;
    }
    Some(out)
}

/// The DER of the one private key of a PEM text, in a form Pingora's conversion knows.
fn private_key(cx: &mut Cx<'_>, pem: &str, path: &str) -> Option<Vec<u8>> {
    match PrivateKeyDer::from_pem_slice(unfold_pem(pem).as_bytes()) {
        Ok(key) => {
            let der = key.secret_der().to_vec();
            // Pingora turns the bytes back into a key by guessing their form.
            match PrivateKeyDer::try_from(der.as_slice()) {
                Ok(_) => Some(der),
                Err(e) => {
                    cx.error(path, format!("unrecognised private key: {e}"));
                    None
                }
            }
        }
        Err(e) => {
            cx.error(
                path,
                format!("no PEM private key (`-----BEGIN PRIVATE KEY-----`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`): {e}"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::unfold_pem;

    #[test]
    fn unfold_pem_restores_folded_lines_and_keeps_real_ones() {
        let pem = "-----BEGIN CERTIFICATE-----\nAAAA\nBBBB==\n-----END CERTIFICATE-----\n";
        assert_eq!(unfold_pem(pem), pem);
        let folded = " -----BEGIN CERTIFICATE----- AAAA BBBB== -----END CERTIFICATE----- ";
        assert_eq!(unfold_pem(folded), pem);
        let two = format!("{pem}{pem}");
        assert_eq!(unfold_pem(&two.replace('\n', " ")), two);
        // No markers: the tokens, one per line (the PEM parser then finds nothing).
        assert_eq!(unfold_pem("just text"), "just\ntext\n");
    }
}
