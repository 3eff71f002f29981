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
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A validated, compiled policy file.
#[derive(Debug)]
pub struct CompiledConfig {
    /// The file it was compiled from (normalized: what `GET /config` serves).
    pub file: PolicyFile,
    /// Gateway-wide limits.
    pub limits: Limits,
    /// `settings.trusted_proxies`: the peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// APIs, in file order; indexes are stable for this config only.
    pub apis: Vec<ApiDef>,
    /// Products, in file order.
    pub products: Vec<ProductDef>,
    /// API prefixes, longest first: (prefix, api index).
    pub(crate) prefixes: Vec<(String, usize)>,
    /// API prefix → api index, for [`CompiledConfig::route`]. foldhash: the keys are the
    /// configured prefixes, lookups cannot add any.
    pub(crate) prefix_map: HashMap<String, usize, foldhash::fast::RandomState>,
    /// Length of the longest prefix: no longer part of a path can match.
    pub(crate) max_prefix_len: usize,
}

impl CompiledConfig {
    /// Finds the API of a request path: the longest API prefix that matches on a segment
    /// boundary (`/petstore` matches `/petstore` and `/petstore/x`, not `/petstorex`; the
    /// root API `""` matches everything). Returns the API index and the rest of the path:
    /// it starts with `/`, or is empty when the path equals the prefix. No allocation.
    ///
    /// Only the part of the path as long as the longest prefix is searched, so a long path of
    /// many segments costs no more lookups than the configured prefixes can need.
    pub fn route<'p>(&self, path: &'p str) -> Option<(usize, &'p str)> {
        if path.len() <= self.max_prefix_len {
            if let Some(&api) = self.prefix_map.get(path) {
                return Some((api, ""));
            }
        }
        // A prefix ending before a `/` at index `i` is `i` bytes long: `i <= max_prefix_len`.
        let bytes = path.as_bytes();
        let mut end = bytes.len().min(self.max_prefix_len + 1);
        while let Some(slash) = bytes[..end].iter().rposition(|&b| b == b'/') {
            // `/` is ASCII: slicing there is on a character boundary.
            if let Some(&api) = self.prefix_map.get(&path[..slash]) {
                return Some((api, &path[slash..]));
            }
            end = slash;
        }
        None
    }

    /// API prefixes (normalized, the root API is `""`), longest first, with API indexes.
    pub fn prefixes(&self) -> impl Iterator<Item = (&str, usize)> {
        self.prefixes
            .iter()
            .map(|(prefix, api)| (prefix.as_str(), *api))
    }

    /// The index of the API with this id.
    pub fn api_index(&self, id: &str) -> Option<usize> {
        self.apis.iter().position(|api| &*api.id == id)
    }

    /// The index of the product with this id.
    pub fn product_index(&self, id: &str) -> Option<usize> {
        self.products.iter().position(|product| &*product.id == id)
    }
}

/// Gateway-wide limits (from `settings`, with defaults applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body in bytes (default 10 MiB).
    pub max_request_body: u64,
    /// Largest request head in bytes (default 32 KiB).
    pub max_request_headers: usize,
    /// Memory of the response cache in bytes (default 256 MiB).
    pub cache_max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_body: 10 * 1024 * 1024,
            max_request_headers: 32 * 1024,
            cache_max_bytes: 256 * 1024 * 1024,
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
    /// Clients may call it over plain HTTP (`protocols` lists `http`; default true).
    pub allow_http: bool,
    /// Clients may call it over HTTPS (`protocols` lists `https`; default true).
    pub allow_https: bool,
    /// The largest request body of its requests, when it replaces
    /// `settings.max_request_body`.
    pub max_request_body: Option<u64>,
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

/// The result of [`ApiDef::match_operation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpMatch {
    /// This operation matches; `params` are its path parameters, in template order.
    Found {
        /// Index into [`ApiDef::operations`].
        op: usize,
        /// (parameter name, raw segment text).
        params: Vec<(Arc<str>, String)>,
    },
    /// Some operation's path template matches, but none for this method: answer 405.
    MethodNotAllowed {
        /// The `Allow` header value: sorted, de-duplicated, comma-separated methods
        /// (`GET, HEAD, POST`; HEAD is included when GET is there).
        allow: String,
    },
    /// No operation's path template matches: answer 404. Also the answer of an API
    /// without operations, which passes every method and path: check
    /// `operations.is_empty()` first and use [`ApiDef::chain`] with `op = None`.
    NotFound,
}

impl ApiDef {
    /// Where the chain of (product slot, operation) is in [`ApiDef::chains`]. Slot 0 is "no
    /// product", slot `k + 1` is `products[k]`. For each slot, `op = None` is the API-wide
    /// chain (global → product → API, no operation scope: an API without operations, or a
    /// request that matched no operation), `Some(i)` is operation `i`'s chain. For an API
    /// without operations `op` is ignored.
    pub fn chain_index(&self, product_slot: usize, op: Option<usize>) -> usize {
        debug_assert!(
            product_slot <= self.products.len(),
            "no product slot {product_slot}"
        );
        let stride = self.operations.len() + 1;
        let op_offset = match op {
            Some(i) if !self.operations.is_empty() => {
                debug_assert!(i < self.operations.len(), "no operation {i}");
                i + 1
            }
            _ => 0,
        };
        product_slot * stride + op_offset
    }

    /// The effective chain of (product slot, operation); see [`ApiDef::chain_index`].
    /// Panics when the slot or the operation does not exist.
    pub fn chain(&self, product_slot: usize, op: Option<usize>) -> &Arc<EffectiveChain> {
        &self.chains[self.chain_index(product_slot, op)]
    }

    /// The product slot of a product (an index into [`CompiledConfig::products`]): `k + 1`
    /// when it is `self.products[k]`, None when the product does not contain this API.
    pub fn product_slot(&self, product_index: usize) -> Option<usize> {
        self.products
            .iter()
            .position(|&p| p == product_index)
            .map(|k| k + 1)
    }

    /// Finds the operation of a request. `rest` is the path after the API prefix, already
    /// normalized and percent-decoded by the gateway (empty is treated as `/`). Segments
    /// compare exactly; `{param}` matches one non-empty segment. When several templates
    /// match, the most specific wins: more literal segments first, then literals further
    /// left, then the earlier operation. A `*` operation matches any method; HEAD matches
    /// a GET operation when no HEAD (or `*`) operation matches the path. No allocation
    /// unless the operation has parameters (or the answer is 405).
    pub fn match_operation(&self, method: &Method, rest: &str) -> OpMatch {
        let body = rest.strip_prefix('/').unwrap_or(rest);
        let count = if body.is_empty() {
            0
        } else {
            body.bytes().filter(|&b| b == b'/').count() + 1
        };
        let mut best: Option<(usize, (usize, u64))> = None;
        let mut best_get: Option<(usize, (usize, u64))> = None;
        let mut path_matched = false;
        for (i, op) in self.operations.iter().enumerate() {
            let Some(key) = template_match(&op.segments, body, count) else {
                continue;
            };
            path_matched = true;
            let slot = match &op.method {
                None => &mut best,
                Some(m) if m == method => &mut best,
                Some(m) if *m == Method::GET && *method == Method::HEAD => &mut best_get,
                Some(_) => continue,
            };
            if slot.is_none_or(|(_, best_key)| key > best_key) {
                *slot = Some((i, key));
            }
        }
        if let Some((op, _)) = best.or(best_get) {
            let names = &self.operations[op].param_names;
            let params = if names.is_empty() {
                Vec::new()
            } else {
                let mut params = Vec::with_capacity(names.len());
                let mut names = names.iter();
                for (segment, template) in body.split('/').zip(&self.operations[op].segments) {
                    if let PathSegment::Param(_) = template {
                        if let Some(name) = names.next() {
                            params.push((name.clone(), segment.to_string()));
                        }
                    }
                }
                params
            };
            return OpMatch::Found { op, params };
        }
        if !path_matched {
            return OpMatch::NotFound;
        }
        let mut methods: Vec<&str> = Vec::new();
        for op in &self.operations {
            if template_match(&op.segments, body, count).is_some() {
                if let Some(m) = &op.method {
                    methods.push(m.as_str());
                    if *m == Method::GET {
                        methods.push("HEAD");
                    }
                }
            }
        }
        methods.sort_unstable();
        methods.dedup();
        OpMatch::MethodNotAllowed {
            allow: methods.join(", "),
        }
    }
}

/// Whether a template matches the path `body` (without its leading `/`, `count` segments);
/// when it does, its specificity: (literal segments, literal positions with the first
/// segment in the highest bit).
fn template_match(segments: &[PathSegment], body: &str, count: usize) -> Option<(usize, u64)> {
    if segments.len() != count {
        return None;
    }
    if count == 0 {
        return Some((0, 0));
    }
    let mut literals = 0usize;
    let mut mask = 0u64;
    for (position, (text, template)) in body.split('/').zip(segments).enumerate() {
        match template {
            PathSegment::Literal(literal) => {
                if text != literal {
                    return None;
                }
                literals += 1;
                if position < 64 {
                    mask |= 1 << (63 - position);
                }
            }
            PathSegment::Param(_) => {
                if text.is_empty() {
                    return None;
                }
            }
        }
    }
    Some((literals, mask))
}

/// The most `upstream.retries` an upstream with `retry_on_status` may set: every try can
/// take the whole `timeout`, and the proxy stops after 16 tries whatever the config says.
pub const MAX_STATUS_RETRIES: u32 = 10;

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
    /// Retries of idempotent requests whose connection failed, or whose answer's status
    /// is in `retry_on_status` (default 1).
    pub retries: u32,
    /// `upstream.retry_on_status`: 5xx statuses on which idempotent requests are retried
    /// (empty: none).
    pub retry_on_status: Vec<u16>,
    /// Keep header name spellings on HTTP/1.1 (Pingora's case map) for this upstream's
    /// requests and answers (default false).
    pub preserve_header_case: bool,
    /// Speak HTTP/2 to the targets (h2c to `http://`, ALPN `h2` to `https://`).
    pub http2: bool,
    /// With `upstream.rewrite_location`: the API's public prefix (`""` for the root API),
    /// which replaces the target's URL and base path in `Location` and `Content-Location`.
    pub rewrite_location: Option<String>,
    /// TLS towards the `https` targets, when the API sets `upstream.tls` (else the
    /// system's trust store, verification on, no client certificate).
    pub tls: Option<Arc<UpstreamTlsDef>>,
    /// `upstream.outlier_detection`: (consecutive 5xx answers that eject a target, for how
    /// long).
    pub outlier_detection: Option<(u32, Duration)>,
}

/// `upstream.tls`, checked: every certificate parsed, the client key matched to its
/// certificate.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct UpstreamTlsDef {
    /// DER certificates trusted instead of the system's store (`None`: the system's).
    pub ca: Option<Vec<Vec<u8>>>,
    /// DER certificate chain (leaf first) and DER private key presented to the upstream.
    pub client: Option<(Vec<Vec<u8>>, Vec<u8>)>,
    /// SNI and verified name instead of the target's host.
    pub server_name: Option<String>,
    /// Whether the upstream's certificate is checked.
    pub verify: bool,
}

impl std::fmt::Debug for UpstreamTlsDef {
    /// Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTlsDef")
            .field("ca", &self.ca.as_ref().map(Vec::len))
            .field(
                "client",
                &self.client.as_ref().map(|(chain, _)| chain.len()),
            )
            .field("server_name", &self.server_name)
            .field("verify", &self.verify)
            .finish()
    }
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
    /// Share of the requests, relative to the other targets' (default 1; 0: none, the
    /// target is drained). Each address of the target has this weight.
    pub weight: u32,
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
    /// Parsed template segments (empty for the root template `/`).
    pub segments: Vec<PathSegment>,
    /// Names of the `{param}` segments, in order (shared by every match's params).
    pub param_names: Vec<Arc<str>>,
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
    /// `validate-content`.
    ValidateContent(ValidateContentDef),
    /// `validate-parameters`.
    ValidateParameters(ValidateParametersDef),
    /// `json-to-xml`.
    JsonToXml(kinds::JsonToXml),
    /// `cors`.
    Cors(CorsDef),
    /// `ip-filter`.
    IpFilter(IpFilterDef),
    /// `limit-concurrency`.
    LimitConcurrency(LimitConcurrencyDef),
    /// `forward-request`.
    ForwardRequest {
        /// Read/write timeout on the upstream connection, instead of `upstream.timeout`.
        timeout: Duration,
    },
    /// `check-header`.
    CheckHeader(CheckHeaderDef),
    /// `validate-client-certificate`.
    ValidateClientCertificate(ValidateClientCertificateDef),
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
            PolicyDef::ValidateContent(_) => "validate-content",
            PolicyDef::ValidateParameters(_) => "validate-parameters",
            PolicyDef::JsonToXml(_) => "json-to-xml",
            PolicyDef::Cors(_) => "cors",
            PolicyDef::IpFilter(_) => "ip-filter",
            PolicyDef::LimitConcurrency(_) => "limit-concurrency",
            PolicyDef::ForwardRequest { .. } => "forward-request",
            PolicyDef::CheckHeader(_) => "check-header",
            PolicyDef::ValidateClientCertificate(_) => "validate-client-certificate",
            PolicyDef::SetHeader(_) => "set-header",
            PolicyDef::SetQueryParameter(_) => "set-query-parameter",
            PolicyDef::RewriteUri(_) => "rewrite-uri",
            PolicyDef::ReturnResponse(_) => "return-response",
        }
    }
}

/// `validate-content`.
#[derive(Debug, Clone)]
pub struct ValidateContentDef {
    /// The schema, compiled once at validation (`pattern`s by the linear-time `regex`
    /// engine, `format`s checked).
    pub validator: Arc<jsonschema::Validator>,
    /// `action: detect`: a body that does not match is logged and let through.
    pub detect: bool,
    /// The largest body checked, in bytes.
    pub max_size: u64,
}

/// `validate-parameters`.
#[derive(Debug, Clone)]
pub struct ValidateParametersDef {
    /// The parameters, query first, then headers, then path, each by name.
    pub params: Vec<ParameterDef>,
    /// `unspecified_query: prevent`: a query parameter not in `params` is refused.
    pub only_listed_query: bool,
    /// `action: detect`: what does not pass is logged and let through.
    pub detect: bool,
}

/// Where a parameter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamPlace {
    /// The query string.
    Query,
    /// A request header.
    Header,
    /// A parameter of the operation's path template.
    Path,
}

impl ParamPlace {
    /// As OpenAPI's `in` names it.
    pub fn as_str(self) -> &'static str {
        match self {
            ParamPlace::Query => "query",
            ParamPlace::Header => "header",
            ParamPlace::Path => "path",
        }
    }
}

/// How a parameter's text becomes the JSON value its schema checks (OpenAPI's `simple` and
/// `form` styles): from the schema's top-level `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueShape {
    /// Read as `integer`, `number` or `boolean` when the text is one and the schema's
    /// types allow it, else as a string.
    Scalar {
        /// The schema allows numbers (`integer` or `number`).
        number: bool,
        /// The schema allows `boolean`.
        boolean: bool,
    },
    /// `type: array`: the values of every occurrence, and each split at commas, read as
    /// the items' shape.
    Array {
        /// The items allow numbers.
        number: bool,
        /// The items allow `boolean`.
        boolean: bool,
    },
}

/// One parameter of `validate-parameters`.
#[derive(Debug, Clone)]
pub struct ParameterDef {
    /// Where it is.
    pub place: ParamPlace,
    /// Its name (a header's in lower case).
    pub name: String,
    /// It must be given.
    pub required: bool,
    /// Its schema, compiled; `None`: any value.
    pub validator: Option<Arc<jsonschema::Validator>>,
    /// How its text is read.
    pub shape: ValueShape,
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
    /// When the shared counter store fails (default: allow).
    pub on_store_error: OnStoreError,
}

/// What a limit does when its shared counter store (Redis) cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreError {
    /// Let the call through (uncounted).
    Allow,
    /// Refuse the call (503).
    Deny,
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
    /// When the shared counter store fails (default: deny).
    pub on_store_error: OnStoreError,
}

/// `cors`.
#[derive(Debug, Clone)]
pub struct CorsDef {
    /// Allowed origins, exact (lowercase scheme and host as written); empty with `any_origin`.
    pub allowed_origins: Vec<String>,
    /// `*` was listed.
    pub any_origin: bool,
    /// Allowed methods (default GET, POST, HEAD; `*` stands for GET, HEAD, POST, PUT,
    /// PATCH, DELETE, OPTIONS).
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

/// `limit-concurrency`.
#[derive(Debug, Clone)]
pub struct LimitConcurrencyDef {
    /// Most requests in flight at once, per key (≥ 1).
    pub max_count: u32,
    /// The key (`None`: one count for every request through the policy).
    pub counter_key: Option<Template>,
}

/// `validate-client-certificate`.
#[derive(Debug, Clone)]
pub struct ValidateClientCertificateDef {
    /// Accepted identities (empty: any trusted certificate).
    pub identities: Vec<ClientIdentityDef>,
}

/// One accepted identity, normalized: `thumbprint` and `serial_number` in lower-case hex
/// (the serial without leading zeros).
#[derive(Debug, Clone, Default)]
pub struct ClientIdentityDef {
    /// SHA-256 thumbprint.
    pub thumbprint: Option<String>,
    /// Serial number.
    pub serial_number: Option<String>,
    /// Common name (exact).
    pub common_name: Option<String>,
    /// Subject (ASCII case-insensitive).
    pub subject: Option<String>,
    /// Issuer subject (ASCII case-insensitive).
    pub issuer_subject: Option<String>,
    /// A DNS name (ASCII case-insensitive).
    pub dns_name: Option<String>,
}

/// A certificate serial number in hex as identities and certificates are compared:
/// lower-case, without leading zeros (`0` for zero).
pub fn normalize_serial(hex: &str) -> String {
    let s = hex.trim_start_matches('0').to_ascii_lowercase();
    if s.is_empty() {
        "0".to_owned()
    } else {
        s
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_and_compile;

    fn config(apis: &[&str]) -> CompiledConfig {
        let mut yaml = String::from("version: 1\napis:\n");
        for (i, path) in apis.iter().enumerate() {
            yaml.push_str(&format!(
                "  - id: api{i}\n    path: \"{path}\"\n    upstream: {{ targets: [\"http://127.0.0.1:9000\"] }}\n"
            ));
        }
        parse_and_compile(&yaml).unwrap()
    }

    #[test]
    fn longest_prefix_on_segment_boundaries() {
        let c = config(&["/petstore", "/petstore/v2", "/other/deep"]);
        assert_eq!(c.route("/petstore"), Some((0, "")));
        assert_eq!(c.route("/petstore/"), Some((0, "/")));
        assert_eq!(c.route("/petstore/pets/1"), Some((0, "/pets/1")));
        assert_eq!(c.route("/petstore/v2"), Some((1, "")));
        assert_eq!(c.route("/petstore/v2/pets"), Some((1, "/pets")));
        assert_eq!(c.route("/petstore/v22"), Some((0, "/v22")));
        assert_eq!(c.route("/petstorex"), None);
        assert_eq!(c.route("/other"), None);
        assert_eq!(c.route("/other/deep/x"), Some((2, "/x")));
        assert_eq!(c.route("/"), None);
        assert_eq!(c.route(""), None);
        let prefixes: Vec<_> = c.prefixes().collect();
        assert_eq!(
            prefixes,
            vec![("/petstore/v2", 1), ("/other/deep", 2), ("/petstore", 0)]
        );
    }

    #[test]
    fn long_paths_search_only_as_far_as_the_longest_prefix() {
        let c = config(&["/petstore", "/a/b"]);
        let deep = format!("/petstore{}", "/x".repeat(10_000));
        assert_eq!(c.route(&deep), Some((0, &deep["/petstore".len()..])));
        assert_eq!(c.route(&"/".repeat(20_000)), None);
        // The search window may end inside a multi-byte character.
        assert_eq!(c.route("/a/b/ééé"), Some((1, "/ééé")));
        assert_eq!(c.route("/éééééééé/x"), None);
        assert_eq!(c.route("/a/é"), None);
        let root = config(&["/"]);
        assert_eq!(root.route(&deep), Some((0, deep.as_str())));
    }

    #[test]
    fn root_api_matches_everything_else() {
        let c = config(&["/", "/petstore"]);
        assert_eq!(c.apis[0].prefix, "");
        assert_eq!(c.route("/petstore/x"), Some((1, "/x")));
        assert_eq!(c.route("/petstorex"), Some((0, "/petstorex")));
        assert_eq!(c.route("/"), Some((0, "/")));
        assert_eq!(c.route("/a/b"), Some((0, "/a/b")));
        assert_eq!(c.route(""), Some((0, "")));
    }

    const OPS: &str = r#"version: 1
apis:
  - id: pets
    path: /pets
    upstream: { targets: ["http://127.0.0.1:9000"] }
    operations:
      - { id: list, method: GET, path: /pets }
      - { id: get, method: GET, path: "/pets/{id}" }
      - { id: mine, method: GET, path: /pets/mine }
      - { id: create, method: POST, path: /pets }
      - { id: delete, method: DELETE, path: "/pets/{id}" }
      - { id: any, method: "*", path: "/anything/{x}" }
      - { id: head-only, method: HEAD, path: /h }
      - { id: left, method: GET, path: "/a/{x}" }
      - { id: right, method: GET, path: "/{y}/b" }
      - { id: root, method: GET, path: / }
      - { id: toys, method: GET, path: "/pets/{id}/toys/{toy}" }
      - { id: head-get, method: GET, path: /hg }
      - { id: head-explicit, method: HEAD, path: "/{z}" }
"#;

    fn found<'a>(api: &'a ApiDef, method: Method, rest: &str) -> (&'a str, Vec<(String, String)>) {
        match api.match_operation(&method, rest) {
            OpMatch::Found { op, params } => (
                &*api.operations[op].id,
                params
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            ),
            other => panic!("{method} {rest}: {other:?}"),
        }
    }

    #[test]
    fn params_and_specificity() {
        let c = parse_and_compile(OPS).unwrap();
        let api = &c.apis[0];
        assert_eq!(
            found(api, Method::GET, "/pets/42"),
            ("get", vec![("id".into(), "42".into())])
        );
        assert_eq!(found(api, Method::GET, "/pets/mine"), ("mine", vec![]));
        assert_eq!(found(api, Method::GET, "/pets"), ("list", vec![]));
        assert_eq!(found(api, Method::POST, "/pets"), ("create", vec![]));
        assert_eq!(
            found(api, Method::GET, "/pets/7/toys/ball"),
            (
                "toys",
                vec![("id".into(), "7".into()), ("toy".into(), "ball".into())]
            )
        );
        // Same number of literals: the literal further left wins.
        assert_eq!(
            found(api, Method::GET, "/a/b"),
            ("left", vec![("x".into(), "b".into())])
        );
        assert_eq!(
            found(api, Method::GET, "/c/b"),
            ("right", vec![("y".into(), "c".into())])
        );
        // A method-specific match beats a more specific template for another method.
        assert_eq!(
            found(api, Method::DELETE, "/pets/mine"),
            ("delete", vec![("id".into(), "mine".into())])
        );
    }

    #[test]
    fn root_and_empty_rest() {
        let c = parse_and_compile(OPS).unwrap();
        let api = &c.apis[0];
        assert_eq!(found(api, Method::GET, ""), ("root", vec![]));
        assert_eq!(found(api, Method::GET, "/"), ("root", vec![]));
    }

    #[test]
    fn not_found() {
        let c = parse_and_compile(OPS).unwrap();
        let api = &c.apis[0];
        for rest in [
            "/nope/x/y",
            "/pets/",
            "/pets/1/2",
            "/pets//toys/x",
            "/x/y/z/w",
        ] {
            assert_eq!(
                api.match_operation(&Method::GET, rest),
                OpMatch::NotFound,
                "{rest}"
            );
        }
    }

    #[test]
    fn method_not_allowed_lists_methods() {
        let c = parse_and_compile(OPS).unwrap();
        let api = &c.apis[0];
        assert_eq!(
            api.match_operation(&Method::PUT, "/pets"),
            OpMatch::MethodNotAllowed {
                allow: "GET, HEAD, POST".into()
            }
        );
        assert_eq!(
            api.match_operation(&Method::PATCH, "/pets/42/toys/x"),
            OpMatch::MethodNotAllowed {
                allow: "GET, HEAD".into()
            }
        );
        // /pets/42 matches get + delete templates, and the HEAD-only `/{z}`? No: two segments.
        assert_eq!(
            api.match_operation(&Method::POST, "/pets/42"),
            OpMatch::MethodNotAllowed {
                allow: "DELETE, GET, HEAD".into()
            }
        );
        // One segment: `/{z}` (HEAD) and `/h` (HEAD).
        assert_eq!(
            api.match_operation(&Method::GET, "/h"),
            OpMatch::MethodNotAllowed {
                allow: "HEAD".into()
            }
        );
    }

    #[test]
    fn head_and_star() {
        let c = parse_and_compile(OPS).unwrap();
        let api = &c.apis[0];
        // HEAD falls back to GET when no HEAD operation matches the path.
        assert_eq!(
            found(api, Method::HEAD, "/pets/42"),
            ("get", vec![("id".into(), "42".into())])
        );
        // An explicit HEAD operation wins over GET, even with a less specific template.
        assert_eq!(
            found(api, Method::HEAD, "/hg"),
            ("head-explicit", vec![("z".into(), "hg".into())])
        );
        assert_eq!(found(api, Method::HEAD, "/h"), ("head-only", vec![]));
        for method in [
            Method::GET,
            Method::PATCH,
            Method::from_bytes(b"PURGE").unwrap(),
        ] {
            assert_eq!(
                found(api, method, "/anything/z"),
                ("any", vec![("x".into(), "z".into())])
            );
        }
    }

    #[test]
    fn api_without_operations_has_no_match() {
        let c = config(&["/x"]);
        assert_eq!(
            c.apis[0].match_operation(&Method::GET, "/a"),
            OpMatch::NotFound
        );
    }

    #[test]
    fn target_authority() {
        let t = Target {
            host: "example.com".into(),
            port: 8443,
            tls: true,
            base_path: String::new(),
            weight: 1,
        };
        assert_eq!(t.authority(), "example.com:8443");
    }
}
