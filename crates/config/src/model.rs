//! The external model: serde types of the policy file (contract §2).
//!
//! These types are the stable user surface. They are deliberately plain: every check that
//! spans more than one field (ids, references, templates, durations) lives in
//! [`crate::validate`], which reports every problem at once with its YAML path and line.
//! Policy entries are not deserialized here in one go: [`crate::validate`] takes each entry
//! apart by hand (`base`, or a one-key map `kind: { fields }`) so that one bad entry does not
//! hide the errors of the next one.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The whole policy file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Format version; only `1` exists.
    pub version: u32,
    /// Gateway-wide settings (limits and timeouts); every field has a default.
    #[serde(default, skip_serializing_if = "Settings::is_default")]
    pub settings: Settings,
    /// The global policy scope.
    #[serde(default, skip_serializing_if = "PolicySections::is_empty")]
    pub policies: PolicySections,
    /// Products: bundles of APIs that subscriptions are scoped to.
    #[serde(default)]
    pub products: Vec<Product>,
    /// The APIs behind the gateway.
    #[serde(default)]
    pub apis: Vec<Api>,
}

/// Gateway-wide limits and timeouts (an extension of the contract; all optional).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Largest request body accepted, in bytes or with a unit (`10MiB`); default 10 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_body: Option<ByteSize>,
    /// Largest request head (request line + headers) accepted; default 32 KiB. Over it: 431.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_headers: Option<ByteSize>,
    /// Memory of the response cache (`cache-store`), bodies and heads; default 256 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_max_bytes: Option<ByteSize>,
    /// Addresses and networks of the proxies in front of the gateway (load balancers)
    /// whose `X-Forwarded-For` names the client; default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_proxies: Option<Vec<String>>,
}

impl Settings {
    fn is_default(&self) -> bool {
        self == &Settings::default()
    }
}

/// A size: integer bytes, or a string with a unit (`512`, `64KiB`, `10MiB`, `1GiB`, `10MB`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ByteSize {
    /// Plain bytes.
    Bytes(u64),
    /// A string such as `10MiB`.
    Text(String),
}

/// A duration: integer seconds, or a string such as `500ms`, `10s`, `5m`, `1h`, `1d`, `30d`.
/// Quotas also accept `calendar-day`, `calendar-week` and `calendar-month`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DurationSpec {
    /// Whole seconds.
    Seconds(u64),
    /// A string with a unit, or a calendar period.
    Text(String),
}

/// The four policy sections of a scope. `None` means "not named": the scope inherits its
/// parent's section whole; `Some` replaces it, with `base` standing for the parent's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PolicySections {
    /// Before the upstream call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<Vec<serde_yaml::Value>>,
    /// Around the upstream call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<Vec<serde_yaml::Value>>,
    /// On the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<Vec<serde_yaml::Value>>,
    /// When an error happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<Vec<serde_yaml::Value>>,
}

impl PolicySections {
    /// True when no section is named.
    pub fn is_empty(&self) -> bool {
        self.inbound.is_none()
            && self.backend.is_none()
            && self.outbound.is_none()
            && self.on_error.is_none()
    }
}

/// A product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Product {
    /// `[a-z0-9-]{1,64}`.
    pub id: String,
    /// Human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Ids of the APIs in this product.
    #[serde(default)]
    pub apis: Vec<String>,
    /// Product scope policies.
    #[serde(default, skip_serializing_if = "PolicySections::is_empty")]
    pub policies: PolicySections,
}

/// An API behind the gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Api {
    /// `[a-z0-9-]{1,64}`.
    pub id: String,
    /// Human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Public path prefix (`/petstore`), unique.
    pub path: String,
    /// Whether callers need a subscription key (default true).
    #[serde(default = "default_true")]
    pub subscription_required: bool,
    /// Where the key is read from.
    #[serde(default)]
    pub subscription_key: SubscriptionKeySource,
    /// The schemes clients may call it over: `http`, `https` (default both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<String>>,
    /// The largest request body, instead of `settings.max_request_body`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_body: Option<ByteSize>,
    /// Where requests go.
    pub upstream: Upstream,
    /// API scope policies.
    #[serde(default, skip_serializing_if = "PolicySections::is_empty")]
    pub policies: PolicySections,
    /// Operations; when absent every method and path under the prefix passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operations: Option<Vec<Operation>>,
}

pub(crate) fn default_true() -> bool {
    true
}

/// Header and query parameter that carry the subscription key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionKeySource {
    /// Header name (default `Ocp-Apim-Subscription-Key`).
    #[serde(default = "default_key_header")]
    pub header: String,
    /// Query parameter (default `subscription-key`).
    #[serde(default = "default_key_query")]
    pub query: String,
}

impl Default for SubscriptionKeySource {
    fn default() -> Self {
        Self {
            header: default_key_header(),
            query: default_key_query(),
        }
    }
}

fn default_key_header() -> String {
    "Ocp-Apim-Subscription-Key".to_string()
}

fn default_key_query() -> String {
    "subscription-key".to_string()
}

/// The upstream pool of an API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// One or more `http://host:port[/base-path]` targets; round robin over healthy ones,
    /// weighted where a target is written `{ url, weight }`.
    pub targets: Vec<TargetSpec>,
    /// Active health checking (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Whole-answer read timeout per upstream read (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationSpec>,
    /// Connect timeout (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<DurationSpec>,
    /// Retries of idempotent requests on another target when connecting failed (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Upstream answer statuses (5xx) on which idempotent requests are retried too
    /// (default none: an answer goes to the client as it is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on_status: Option<Vec<u16>>,
    /// Keep the spelling of header names on HTTP/1.1 to and from this upstream (default
    /// false: names go out in lower case, docs/behaviour.md "Header names").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preserve_header_case: Option<bool>,
    /// Speak HTTP/2 to the targets (default false: HTTP/1.1): h2c with prior knowledge to
    /// `http://` targets, ALPN `h2` to `https://` ones. gRPC upstreams need it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2: Option<bool>,
    /// Rewrite `Location` and `Content-Location` of answers that point into the target
    /// (its URL and base path) to the API's public path (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite_location: Option<bool>,
    /// How `https` targets are trusted and whom Tollgate shows itself as (optional:
    /// default, the system's trust store and no client certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
    /// Passive health on answers: a target that answers 5xx this many times in a row is
    /// skipped for a while (optional; default off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
}

/// `upstream.outlier_detection`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetection {
    /// Consecutive 5xx answers that eject a target (1 to 1000).
    pub consecutive_5xx: u32,
    /// How long an ejected target is skipped (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ejection_time: Option<DurationSpec>,
}

/// One upstream target: its URL, or its URL and weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetSpec {
    /// `http://host:port[/base-path]` (weight 1).
    Url(String),
    /// `{ url, weight }`.
    Weighted(WeightedTarget),
}

/// A target with a weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedTarget {
    /// `http://host:port[/base-path]`.
    pub url: String,
    /// Share of the requests relative to the other targets' (default 1; 0: drained).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// TLS towards the `https` targets of an upstream.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// PEM certificates trusted for this upstream instead of the system's store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// PEM certificate chain (leaf first) presented to the upstream (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    /// PEM private key of `client_certificate` (PKCS#8, PKCS#1 or SEC1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
    /// Name sent as SNI and checked against the certificate (default: the target's host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Whether the upstream's certificate is checked at all (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<bool>,
}

impl std::fmt::Debug for UpstreamTls {
    /// Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("ca", &self.ca)
            .field("client_certificate", &self.client_certificate)
            .field(
                "client_key",
                &self.client_key.as_ref().map(|_| "(redacted)"),
            )
            .field("server_name", &self.server_name)
            .field("verify", &self.verify)
            .finish()
    }
}

/// Active HTTP health check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// Path requested with GET; a 2xx answer means healthy.
    pub path: String,
    /// Interval between checks (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<DurationSpec>,
}

/// An operation of an API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    /// `[a-z0-9-]{1,64}`, unique within the API.
    pub id: String,
    /// HTTP method (`GET`, `POST`, ...), or `*` for any.
    pub method: String,
    /// Path template relative to the API prefix, with `{param}` segments.
    pub path: String,
    /// Operation scope policies.
    #[serde(default, skip_serializing_if = "PolicySections::is_empty")]
    pub policies: PolicySections,
}

/// Fields of every policy kind, one struct per kind. Used by [`crate::validate`] to
/// type-check each entry on its own.
pub mod kinds {
    use super::*;

    /// `validate-jwt`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ValidateJwt {
        /// Header carrying the token (default `Authorization`, Bearer scheme).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub header: Option<String>,
        /// Query parameter carrying the token (instead of a header).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub query: Option<String>,
        /// Accepted `iss` values.
        #[serde(default)]
        pub issuers: Vec<String>,
        /// Accepted `aud` values.
        #[serde(default)]
        pub audiences: Vec<String>,
        /// Claims that must be present (list), or must have one of the listed values (map).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub required_claims: Option<RequiredClaims>,
        /// Static keys.
        #[serde(default)]
        pub keys: Vec<JwtKey>,
        /// JWKS document address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub jwks_uri: Option<String>,
        /// OpenID discovery document address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub openid_config: Option<String>,
        /// Allowed clock difference (default 30s).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub clock_skew: Option<DurationSpec>,
        /// Status on failure (default 401).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub failed_status: Option<u16>,
    }

    /// `required_claims`: names, or name → allowed values.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(untagged)]
    pub enum RequiredClaims {
        /// Claim names that must be present.
        Names(Vec<String>),
        /// Claim name → allowed values.
        Values(BTreeMap<String, Vec<String>>),
    }

    /// A static JWT key.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct JwtKey {
        /// Algorithm (HS256..., RS256..., PS256..., ES256/384, EdDSA).
        pub alg: String,
        /// Shared secret for HS*.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub secret: Option<String>,
        /// PEM public key for RS*/PS*/ES*/EdDSA.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub pem: Option<String>,
        /// Key id to match the token's `kid` (optional).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub kid: Option<String>,
    }

    /// `rate-limit` and `rate-limit-by-key`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RateLimit {
        /// Calls allowed per period.
        pub calls: u64,
        /// The period.
        pub renewal_period: DurationSpec,
        /// 429 (default) or 503.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub status: Option<u16>,
        /// Header carrying the wait (default `Retry-After`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub retry_after_header: Option<String>,
        /// Header carrying the calls left (none by default).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub remaining_calls_header: Option<String>,
        /// Template of the counter key (`rate-limit-by-key` only, required there).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub counter_key: Option<String>,
        /// `any` (default) or `success` (`rate-limit-by-key` only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub increment_condition: Option<String>,
        /// What to do when the shared counter store (Redis) cannot be reached: `allow`
        /// (default for rate limits) or `deny`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub on_store_error: Option<String>,
    }

    /// `quota` and `quota-by-key`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Quota {
        /// Calls allowed per period.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub calls: Option<u64>,
        /// Bytes (request + response) allowed per period.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub bandwidth: Option<ByteSize>,
        /// The period, or a calendar period.
        pub renewal_period: DurationSpec,
        /// IANA time zone of calendar periods (default UTC).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub timezone: Option<String>,
        /// Template of the counter key (`quota-by-key` only, required there).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub counter_key: Option<String>,
        /// `any` (default) or `success` (`quota-by-key` only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub increment_condition: Option<String>,
        /// What to do when the shared counter store (Redis) cannot be reached: `allow` or
        /// `deny` (default for quotas).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub on_store_error: Option<String>,
    }

    /// `cache-lookup`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct CacheLookup {
        /// Request headers that vary the cache key.
        #[serde(default)]
        pub vary_by_header: Vec<String>,
        /// Query parameters that vary the key (all, in canonical order, when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub vary_by_query_parameter: Option<Vec<String>>,
        /// Whether each subscription has its own entries.
        #[serde(default)]
        pub vary_by_subscription: bool,
    }

    /// `cache-store`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct CacheStore {
        /// How long an entry lives.
        pub duration: DurationSpec,
        /// Store private answers and answers to requests with `Authorization` too.
        #[serde(default)]
        pub allow_private: bool,
    }

    /// `validate-content`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ValidateContent {
        /// A JSON Schema (draft 2020-12 unless its `$schema` names another).
        pub schema: serde_json::Value,
        /// `prevent` (default: refuse what does not match) or `detect` (log it, let it
        /// through).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub action: Option<String>,
        /// The largest body checked (default 1 MiB, at most 10 MiB); a larger one is
        /// refused (or, with `detect`, logged).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub max_size: Option<ByteSize>,
    }

    /// `validate-parameters`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct ValidateParameters {
        /// `prevent` (default) or `detect`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub action: Option<String>,
        /// Query parameters, by name.
        #[serde(default)]
        pub query: BTreeMap<String, ParameterSpec>,
        /// Request headers, by name.
        #[serde(default)]
        pub headers: BTreeMap<String, ParameterSpec>,
        /// Path parameters (of the operation's path template), by name.
        #[serde(default)]
        pub path: BTreeMap<String, ParameterSpec>,
        /// Query parameters not listed in `query`: `allow` (default) or `prevent`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub unspecified_query: Option<String>,
    }

    /// One parameter of `validate-parameters`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct ParameterSpec {
        /// Whether it must be given (path parameters always are).
        #[serde(default)]
        pub required: bool,
        /// A JSON Schema for its value; its top-level `type` says how the text is read.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub schema: Option<serde_json::Value>,
    }

    /// `xml-to-json`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct XmlToJson {
        /// `javascript-friendly` (default) or `direct`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub kind: Option<String>,
        /// `always` or `content-type-xml` (default).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub apply: Option<String>,
        /// Honour the client's `Accept` (default true).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub consider_accept_header: Option<bool>,
    }

    /// `json-to-xml`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct JsonToXml {
        /// `always` or `content-type-json` (default).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub apply: Option<String>,
        /// Honour the client's `Accept` (default true).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub consider_accept_header: Option<bool>,
        /// Root element name (default `root`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub root_element: Option<String>,
    }

    /// `cors`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Cors {
        /// Origins allowed (`*` for any).
        #[serde(default)]
        pub allowed_origins: Vec<String>,
        /// Methods allowed (default GET, POST, HEAD).
        #[serde(default)]
        pub allowed_methods: Vec<String>,
        /// Request headers allowed (`*` for any).
        #[serde(default)]
        pub allowed_headers: Vec<String>,
        /// Response headers exposed to scripts.
        #[serde(default)]
        pub expose_headers: Vec<String>,
        /// Whether credentials are allowed.
        #[serde(default)]
        pub allow_credentials: bool,
        /// Preflight cache lifetime.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub max_age: Option<DurationSpec>,
    }

    /// `ip-filter`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct IpFilter {
        /// `allow` or `forbid`.
        pub action: String,
        /// IPs and CIDRs.
        pub addresses: Vec<String>,
    }

    /// `forward-request`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ForwardRequest {
        /// Read/write timeout on the upstream connection for this request.
        pub timeout: DurationSpec,
    }

    /// `limit-concurrency`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct LimitConcurrency {
        /// Most requests in flight at once (per key).
        pub max_count: u32,
        /// Template of the key counted (default: one count for every request).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub counter_key: Option<String>,
    }

    /// One identity of `validate-client-certificate`, whose only field, `identities`, is a
    /// list of these (checked one by one, so that every identity's problems are reported).
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ClientIdentity {
        /// SHA-256 of the certificate (64 hex digits; colons allowed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub thumbprint: Option<String>,
        /// Serial number (hex).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub serial_number: Option<String>,
        /// The subject's common name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub common_name: Option<String>,
        /// The subject, as `CN=alice, O=Example`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub subject: Option<String>,
        /// The issuer's subject, written alike.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub issuer_subject: Option<String>,
        /// A DNS subject alternative name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub dns_name: Option<String>,
    }

    /// `check-header`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct CheckHeader {
        /// Header name.
        pub name: String,
        /// Allowed values (any value when empty: the header must be present).
        #[serde(default)]
        pub values: Vec<String>,
        /// Status on failure (default 401).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub failed_status: Option<u16>,
        /// Detail on failure.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub failed_message: Option<String>,
        /// Compare values ignoring ASCII case (default false).
        #[serde(default)]
        pub ignore_case: bool,
    }

    /// `set-header` and `set-query-parameter`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct SetValue {
        /// Header or parameter name.
        pub name: String,
        /// Value template (required unless `exists_action: delete`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub value: Option<String>,
        /// `override` (default), `skip`, `append`, `delete`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub exists_action: Option<String>,
    }

    /// `rewrite-uri`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RewriteUri {
        /// New upstream path (and optional query), a template; `{name}` is an operation path
        /// parameter.
        pub template: String,
        /// Keep the original query parameters (default true).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub copy_unmatched_params: Option<bool>,
    }

    /// `return-response` and `mock-response`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct ReturnResponse {
        /// Status (default 200).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub status: Option<u16>,
        /// Headers (values are templates).
        #[serde(default)]
        pub headers: BTreeMap<String, String>,
        /// Body: a string, or any YAML value sent as JSON.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub body: Option<serde_json::Value>,
    }
}
