//! `validate-client-certificate` (Azure API Management's): the request must come over a
//! TLS connection whose client presented a certificate the TLS listener trusts
//! (`--tls-client-ca`), and, when `identities` are listed, the certificate must match one
//! of them.
//!
//! The TLS listener verifies the chain and the validity dates during the handshake (a
//! certificate it does not trust fails the handshake); what is left for the policy is who
//! the certificate names. The gateway parses the leaf once per connection into a
//! [`ClientCert`] (its SHA-256 thumbprint, serial number, subject, common name, issuer and
//! DNS names) and every request on the connection carries it.

use crate::{Answer, Flow, Policy, RequestCtx};
use http::StatusCode;
use pingora_http::RequestHeader;
use sha2::{Digest, Sha256};
use tollgate_config::{normalize_serial, ClientIdentityDef, ValidateClientCertificateDef};

/// The client certificate of a TLS connection, as policies see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// SHA-256 of the certificate's DER, lower-case hex.
    pub thumbprint: String,
    /// Serial number, lower-case hex without leading zeros.
    pub serial_number: String,
    /// Subject, as `CN=alice, O=Example` (RFC 4514 attribute names, in the certificate's
    /// order).
    pub subject: String,
    /// The subject's first common name.
    pub common_name: Option<String>,
    /// Issuer, written like `subject`.
    pub issuer_subject: String,
    /// The subject alternative names of type DNS.
    pub dns_names: Vec<String>,
}

impl ClientCert {
    /// The certificate whose DER is `der`; `None` when it does not parse (the TLS layer
    /// accepted it, so this does not happen).
    pub fn from_der(der: &[u8]) -> Option<ClientCert> {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        let dns_names = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        GeneralName::DNSName(d) => Some((*d).to_owned()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(ClientCert {
            thumbprint: hex::encode(Sha256::digest(der)),
            serial_number: normalize_serial(&hex::encode(cert.raw_serial())),
            subject: cert.subject().to_string(),
            common_name,
            issuer_subject: cert.issuer().to_string(),
            dns_names,
        })
    }
}

/// `validate-client-certificate` (inbound).
#[derive(Debug)]
pub(crate) struct ValidateClientCertificate {
    identities: Vec<ClientIdentityDef>,
    missing: Answer,
    refused: Answer,
}

impl ValidateClientCertificate {
    pub(crate) fn new(def: &ValidateClientCertificateDef) -> ValidateClientCertificate {
        ValidateClientCertificate {
            identities: def.identities.clone(),
            missing: Answer::problem(
                StatusCode::UNAUTHORIZED,
                "client-certificate-required",
                "Client certificate required",
                "This API needs a client certificate the gateway trusts, presented over its \
                 TLS listener.",
            ),
            refused: Answer::problem(
                StatusCode::FORBIDDEN,
                "client-certificate-not-allowed",
                "Client certificate not allowed",
                "The client certificate is valid but not one this API accepts.",
            ),
        }
    }
}

/// Whether `cert` is `identity`: every field it gives matches.
fn matches(identity: &ClientIdentityDef, cert: &ClientCert) -> bool {
    let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
    let eq_ci = |want: &Option<String>, have: &str| {
        want.as_deref().is_none_or(|w| w.eq_ignore_ascii_case(have))
    };
    eq(&identity.thumbprint, &cert.thumbprint)
        && eq(&identity.serial_number, &cert.serial_number)
        && eq_ci(&identity.subject, &cert.subject)
        && eq_ci(&identity.issuer_subject, &cert.issuer_subject)
        && identity
            .common_name
            .as_deref()
            .is_none_or(|w| cert.common_name.as_deref() == Some(w))
        && identity
            .dns_name
            .as_deref()
            .is_none_or(|w| cert.dns_names.iter().any(|d| d.eq_ignore_ascii_case(w)))
}

impl Policy for ValidateClientCertificate {
    fn inbound(&self, _req: &mut RequestHeader, ctx: &mut RequestCtx) -> Flow {
        let Some(cert) = ctx.client_cert.as_deref() else {
            return Flow::Respond(self.missing.clone());
        };
        if self.identities.is_empty() || self.identities.iter().any(|i| matches(i, cert)) {
            Flow::Continue
        } else {
            Flow::Respond(self.refused.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn cert() -> ClientCert {
        ClientCert {
            thumbprint: "ab".repeat(32),
            serial_number: "1f".into(),
            subject: "CN=alice, O=Example".into(),
            common_name: Some("alice".into()),
            issuer_subject: "CN=Clients CA".into(),
            dns_names: vec!["alice.example".into()],
        }
    }

    fn identity() -> ClientIdentityDef {
        ClientIdentityDef::default()
    }

    fn run(identities: Vec<ClientIdentityDef>, cert: Option<ClientCert>) -> Option<u16> {
        let p = ValidateClientCertificate::new(&ValidateClientCertificateDef { identities });
        let mut ctx = RequestCtx {
            client_cert: cert.map(Arc::new),
            ..RequestCtx::default()
        };
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        match p.inbound(&mut req, &mut ctx) {
            Flow::Continue => None,
            Flow::Respond(a) => Some(a.status.as_u16()),
            _ => Some(0),
        }
    }

    #[test]
    fn identities_match_on_every_field_they_give() {
        assert_eq!(run(vec![], None), Some(401));
        assert_eq!(run(vec![], Some(cert())), None);
        let by = |f: &dyn Fn(&mut ClientIdentityDef)| {
            let mut i = identity();
            f(&mut i);
            i
        };
        for ok in [
            by(&|i| i.common_name = Some("alice".into())),
            by(&|i| i.thumbprint = Some("ab".repeat(32))),
            by(&|i| i.serial_number = Some("1f".into())),
            by(&|i| i.subject = Some("cn=alice, o=example".into())),
            by(&|i| i.issuer_subject = Some("CN=Clients CA".into())),
            by(&|i| i.dns_name = Some("ALICE.example".into())),
            by(&|i| {
                i.common_name = Some("alice".into());
                i.issuer_subject = Some("CN=Clients CA".into());
            }),
        ] {
            assert_eq!(run(vec![ok.clone()], Some(cert())), None, "{ok:?}");
        }
        for refused in [
            by(&|i| i.common_name = Some("bob".into())),
            by(&|i| i.common_name = Some("ALICE".into())),
            by(&|i| i.thumbprint = Some("cd".repeat(32))),
            by(&|i| {
                i.common_name = Some("alice".into());
                i.issuer_subject = Some("CN=Other CA".into());
            }),
        ] {
            assert_eq!(
                run(vec![refused.clone()], Some(cert())),
                Some(403),
                "{refused:?}"
            );
        }
        // Any identity of the list will do.
        let bob = by(&|i| i.common_name = Some("bob".into()));
        let alice = by(&|i| i.common_name = Some("alice".into()));
        assert_eq!(run(vec![bob, alice], Some(cert())), None);
    }

    #[test]
    fn serials_are_compared_without_leading_zeros() {
        assert_eq!(normalize_serial("00A1"), "a1");
        assert_eq!(normalize_serial("0000"), "0");
    }
}
