//! The internal model: what a validated policy file compiles into.
//!
//! Everything here is immutable once built and resolved ahead of time: routing tables
//! (API by longest path prefix, operations by method + path template), parsed templates,
//! durations, addresses, and per (product, operation) the flattened effective policy chain
//! with `base` inheritance already applied. The gateway turns each [`PolicyDef`] into a
//! runtime policy object once per snapshot, never per request.

use crate::model::{kinds, PolicyFile};
use crate::template::Template;
use http::{HeaderName, HeaderValue, Method};
use std::sync::Arc;
use std::time::Duration;

/// A validated, compiled policy file.
#[derive(Debug)]
pub struct CompiledConfig {
    /// The file it was compiled from (normalized: what `GET /config` serves).
    pub file: PolicyFile,
    /// Gateway-wide limits.
    pub limits: Limits,
    /// APIs, in file order; indexes are stable for this config only.
    pub apis: Vec<ApiDef>,
    /// Products, in file order.
    pub products: Vec<ProductDef>,
    /// API prefixes, longest first: (prefix, api index).
    pub(crate) prefixes: Vec<(String, usize)>,
}

/// Gateway-wide limits (from `settings`, with defaults applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body in bytes (default 10 MiB).
    pub max_request_body: u64,
    /// Largest request head in bytes (default 32 KiB).
    pub max_request_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_body: 10 * 1024 * 1024,
            max_request_headers: 32 * 1024,
        }
    }
}

/// A product.
#[derive(Debug)]
pub struct ProductDef {
    /// Product id.
    pub id: Arc<str>,
    /// Indexes into [`CompiledConfig::apis`].
    pub apis: Vec<usize>,
}

/// An API with its operations, upstream and precompiled chains.
#[derive(Debug)]
pub struct ApiDef {
    /// API id.
    pub id: Arc<str>,
    /// Public prefix, normalized: starts with `/`, no trailing `/` (the root API is `""`).
    pub prefix: String,
    /// Whether a subscription key is required.
    pub subscription_required: bool,
    /// Header carrying the subscription key.
    pub key_header: HeaderName,
    /// Query parameter carrying the subscription key.
    pub key_query: String,
    /// The upstream pool.
    pub upstream: UpstreamDef,
    /// Operations (empty: every method and path passes, with the API-wide chain).
    pub operations: Vec<OperationDef>,
    /// Indexes of the products that contain this API; product slot `k + 1` is `products[k]`,
    /// slot 0 is "no product" (subscriptions scoped `api:ID` or `all`, or no subscription).
    pub products: Vec<usize>,
    /// Effective chains, indexed by [`ApiDef::chain_index`].
    pub chains: Vec<Arc<EffectiveChain>>,
}

/// Upstream pool of an API.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamDef {
    /// Targets.
    pub targets: Vec<Target>,
    /// Active health check.
    pub health_check: Option<HealthCheckDef>,
    /// Read/write timeout per operation on the upstream connection (default 30s).
    pub timeout: Duration,
    /// Connect timeout (default 5s).
    pub connect_timeout: Duration,
    /// Retries of idempotent requests whose connection failed (default 1).
    pub retries: u32,
}

/// One upstream target (`http://host:port[/base]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Host name or IP, as written.
    pub host: String,
    /// Port (default 80 for http, 443 for https).
    pub port: u16,
    /// Whether to use TLS.
    pub tls: bool,
    /// Base path prepended to the forwarded path, no trailing `/` (`""` when none).
    pub base_path: String,
}

impl Target {
    /// `host:port`.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Active health check.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckDef {
    /// Path requested with GET.
    pub path: String,
    /// Interval between rounds.
    pub interval: Duration,
}

/// An operation.
#[derive(Debug)]
pub struct OperationDef {
    /// Operation id.
    pub id: Arc<str>,
    /// Method, or `None` for any (`*`).
    pub method: Option<Method>,
    /// The template as written (`/pets/{id}`).
    pub path: String,
    /// Parsed template segments.
    pub segments: Vec<PathSegment>,
}

/// A segment of an operation path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSegment {
    /// Must equal this text.
    Literal(String),
    /// `{name}`: any one non-empty segment.
    Param(String),
}

/// The flattened policy chain that runs for one (product slot, operation).
#[derive(Debug, Default)]
pub struct EffectiveChain {
    /// Inbound section.
    pub inbound: Vec<PolicyInstance>,
    /// Backend section.
    pub backend: Vec<PolicyInstance>,
    /// Outbound section.
    pub outbound: Vec<PolicyInstance>,
    /// On-error section.
    pub on_error: Vec<PolicyInstance>,
}

/// One policy of an effective chain, with where it came from.
#[derive(Debug, Clone)]
pub struct PolicyInstance {
    /// Stable identity: `scope/section/index`, e.g. `product:starter/inbound/1`. State that
    /// must survive config swaps (counters) is keyed by it.
    pub origin: Arc<str>,
    /// What it does.
    pub def: PolicyDef,
}

/// A typed, validated policy.
#[derive(Debug, Clone)]
pub enum PolicyDef {
    /// `validate-jwt` (checked shape; resolved by the JWT policy itself).
    ValidateJwt(kinds::ValidateJwt),
    /// `rate-limit`.
    RateLimit(RateLimitDef),
    /// `rate-limit-by-key`.
    RateLimitByKey(RateLimitDef),
    /// `quota`.
    Quota(QuotaDef),
    /// `quota-by-key`.
    QuotaByKey(QuotaDef),
    /// `cache-lookup`.
    CacheLookup(kinds::CacheLookup),
    /// `cache-store`.
    CacheStore {
        /// Entry lifetime.
        duration: Duration,
        /// Store private answers too.
        allow_private: bool,
    },
    /// `xml-to-json`.
    XmlToJson(kinds::XmlToJson),
    /// `json-to-xml`.
    JsonToXml(kinds::JsonToXml),
    /// `cors`.
    Cors(CorsDef),
    /// `ip-filter`.
    IpFilter(IpFilterDef),
    /// `check-header`.
    CheckHeader(CheckHeaderDef),
    /// `set-header`.
    SetHeader(SetDef<HeaderName>),
    /// `set-query-parameter`.
    SetQueryParameter(SetDef<String>),
    /// `rewrite-uri`.
    RewriteUri(RewriteUriDef),
    /// `return-response` and `mock-response`.
    ReturnResponse(ReturnResponseDef),
}

impl PolicyDef {
    /// The kind as written in YAML.
    pub fn kind(&self) -> &'static str {
        match self {
            PolicyDef::ValidateJwt(_) => "validate-jwt",
            PolicyDef::RateLimit(_) => "rate-limit",
            PolicyDef::RateLimitByKey(_) => "rate-limit-by-key",
            PolicyDef::Quota(_) => "quota",
            PolicyDef::QuotaByKey(_) => "quota-by-key",
            PolicyDef::CacheLookup(_) => "cache-lookup",
            PolicyDef::CacheStore { .. } => "cache-store",
            PolicyDef::XmlToJson(_) => "xml-to-json",
            PolicyDef::JsonToXml(_) => "json-to-xml",
            PolicyDef::Cors(_) => "cors",
            PolicyDef::IpFilter(_) => "ip-filter",
            PolicyDef::CheckHeader(_) => "check-header",
            PolicyDef::SetHeader(_) => "set-header",
            PolicyDef::SetQueryParameter(_) => "set-query-parameter",
            PolicyDef::RewriteUri(_) => "rewrite-uri",
            PolicyDef::ReturnResponse(_) => "return-response",
        }
    }
}

/// A rate limit period: fixed length, or a calendar period (quotas only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// A fixed length.
    Fixed(Duration),
    /// Until the next midnight.
    CalendarDay,
    /// Until the next Monday midnight.
    CalendarWeek,
    /// Until the first of the next month.
    CalendarMonth,
}

/// `rate-limit` / `rate-limit-by-key`.
#[derive(Debug, Clone)]
pub struct RateLimitDef {
    /// Calls per period (≥ 1).
    pub calls: u64,
    /// Period length (fixed only).
    pub period: Duration,
    /// 429 or 503.
    pub status: u16,
    /// Header name for the wait.
    pub retry_after_header: HeaderName,
    /// Header name for the calls left.
    pub remaining_calls_header: Option<HeaderName>,
    /// Counter key (by-key form only).
    pub counter_key: Option<Template>,
    /// Count only 2xx/3xx answers.
    pub count_success_only: bool,
}

/// `quota` / `quota-by-key`.
#[derive(Debug, Clone)]
pub struct QuotaDef {
    /// Calls per period.
    pub calls: Option<u64>,
    /// Bytes per period.
    pub bandwidth: Option<u64>,
    /// The period.
    pub period: Period,
    /// IANA time zone name for calendar periods (`UTC` by default).
    pub timezone: String,
    /// Counter key (by-key form only).
    pub counter_key: Option<Template>,
    /// Count only 2xx/3xx answers.
    pub count_success_only: bool,
}

/// `cors`.
#[derive(Debug, Clone)]
pub struct CorsDef {
    /// Allowed origins, exact (lowercase scheme and host as written); empty with `any_origin`.
    pub allowed_origins: Vec<String>,
    /// `*` was listed.
    pub any_origin: bool,
    /// Allowed methods (default GET, POST, HEAD).
    pub allowed_methods: Vec<Method>,
    /// `Access-Control-Allow-Methods` value, precomputed.
    pub allowed_methods_value: HeaderValue,
    /// Allowed request headers, lowercase; empty with `any_header`.
    pub allowed_headers: Vec<HeaderName>,
    /// `*` was listed.
    pub any_header: bool,
    /// `Access-Control-Expose-Headers` value, precomputed (None when empty).
    pub expose_headers_value: Option<HeaderValue>,
    /// Whether credentials are allowed.
    pub allow_credentials: bool,
    /// Preflight max age.
    pub max_age: Option<Duration>,
}

/// `ip-filter`.
#[derive(Debug, Clone)]
pub struct IpFilterDef {
    /// True for `allow` (only listed addresses pass), false for `forbid`.
    pub allow: bool,
    /// Networks (a single IP is a /32 or /128).
    pub networks: Vec<ipnet::IpNet>,
}

/// `check-header`.
#[derive(Debug, Clone)]
pub struct CheckHeaderDef {
    /// Header.
    pub name: HeaderName,
    /// Allowed values (empty: presence is enough).
    pub values: Vec<String>,
    /// Case-insensitive comparison.
    pub ignore_case: bool,
    /// Status on failure (default 401).
    pub failed_status: u16,
    /// Detail on failure.
    pub failed_message: String,
}

/// What `set-header` / `set-query-parameter` do when the name already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExistsAction {
    /// Replace every existing value.
    Override,
    /// Keep the existing value; set only when absent.
    Skip,
    /// Add another value.
    Append,
    /// Remove the name.
    Delete,
}

/// `set-header` / `set-query-parameter`.
#[derive(Debug, Clone)]
pub struct SetDef<N> {
    /// Header or parameter name.
    pub name: N,
    /// Value (absent with `Delete`).
    pub value: Option<Template>,
    /// What to do when it exists.
    pub exists_action: ExistsAction,
}

/// `rewrite-uri`.
#[derive(Debug, Clone)]
pub struct RewriteUriDef {
    /// New path (and optional query) template.
    pub template: Template,
    /// Keep the original query parameters.
    pub copy_unmatched_params: bool,
}

/// `return-response` / `mock-response`.
#[derive(Debug, Clone)]
pub struct ReturnResponseDef {
    /// Status.
    pub status: u16,
    /// Headers (value templates).
    pub headers: Vec<(HeaderName, Template)>,
    /// Body bytes (a string as is; other YAML values as JSON).
    pub body: bytes_body::Body,
    /// Content type used when `headers` has none (`application/json` for structured bodies,
    /// `text/plain; charset=utf-8` for strings, none when there is no body).
    pub default_content_type: Option<&'static str>,
}

/// Body storage for canned answers.
pub mod bytes_body {
    /// An immutable, cheaply cloned body.
    pub type Body = std::sync::Arc<[u8]>;
}
