//! Checks of single policy entries: `base`, or a one-key map `kind: { fields }` whose fields
//! are type-checked through the kind's `model::kinds` struct, then checked for meaning, and
//! turned into a typed [`PolicyDef`].

use super::{is_query_name, one_of, parse_method, Cx, Entry, ScopeKind};
use crate::compiled::{
    CheckHeaderDef, ClientIdentityDef, CorsDef, ExistsAction, IpFilterDef, LimitConcurrencyDef,
    OnStoreError, ParamPlace, ParameterDef, Period, PolicyDef, QuotaDef, RateLimitDef,
    ReturnResponseDef, RewriteUriDef, SetDef, ValidateClientCertificateDef, ValidateContentDef,
    ValidateParametersDef, ValueShape,
};
use crate::duration::{
    parse_byte_size, parse_duration_max, parse_period, parse_positive_duration, ONE_DAY, ONE_YEAR,
};
use crate::model::kinds;
use crate::positions::{join_index, join_key};
use crate::template::{Template, Var};
use http::{HeaderName, HeaderValue, Method};
use serde_yaml::{Mapping, Value};
use std::sync::Arc;

/// Every policy kind, as written in YAML.
pub(crate) const KINDS: [&str; 22] = [
    "validate-jwt",
    "rate-limit",
    "rate-limit-by-key",
    "quota",
    "quota-by-key",
    "cache-lookup",
    "cache-store",
    "xml-to-json",
    "json-to-xml",
    "validate-content",
    "validate-parameters",
    "cors",
    "ip-filter",
    "limit-concurrency",
    "forward-request",
    "check-header",
    "validate-client-certificate",
    "set-header",
    "set-query-parameter",
    "rewrite-uri",
    "return-response",
    "mock-response",
];

/// JWT key algorithms accepted in `validate-jwt` `keys`.
const JWT_ALGS: [&str; 12] = [
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

fn jwt_algs() -> &'static [&'static str] {
    &JWT_ALGS
}

/// Checks one entry of a policy section at `path` (`...inbound[2]`).
pub(super) fn check_entry(
    cx: &mut Cx<'_>,
    item: &Value,
    path: &str,
    scope: &ScopeKind,
    base_seen: &mut bool,
) -> Option<Entry> {
    match item {
        Value::String(name) if name == "base" => check_base(cx, path, scope, base_seen),
        Value::String(name) if KINDS.contains(&name.as_str()) => {
            // A bare kind: no fields.
            let fields = Value::Mapping(Mapping::new());
            check_policy(cx, name, &fields, &join_key(path, name), scope)
                .map(|def| Entry::Policy(Box::new(def)))
        }
        Value::String(name) => {
            cx.error(path, unknown_kind(name));
            None
        }
        Value::Mapping(map) if map.len() == 1 => {
            let (key, fields) = map.iter().next()?;
            let Some(kind) = key.as_str() else {
                cx.error(
                    path,
                    "a policy entry's key must be the policy kind (a string)",
                );
                return None;
            };
            let kind_path = join_key(path, kind);
            if kind == "base" {
                if !fields.is_null() {
                    cx.error(&kind_path, "`base` takes no fields: write `- base`");
                    return None;
                }
                return check_base(cx, path, scope, base_seen);
            }
            if !KINDS.contains(&kind) {
                cx.error(&kind_path, unknown_kind(kind));
                return None;
            }
            let empty = Value::Mapping(Mapping::new());
            let fields = if fields.is_null() { &empty } else { fields };
            check_policy(cx, kind, fields, &kind_path, scope)
                .map(|def| Entry::Policy(Box::new(def)))
        }
        Value::Mapping(map) => {
            let keys: Vec<String> = map
                .keys()
                .map(|k| {
                    k.as_str()
                        .map_or_else(|| "?".to_string(), |k| format!("`{k}`"))
                })
                .collect();
            let found = if keys.is_empty() {
                "an empty mapping".to_string()
            } else {
                format!("keys {}", keys.join(", "))
            };
            cx.error(
                path,
                format!(
                    "a policy entry is `base` or a one-key mapping `kind: {{ fields }}`; found {found}"
                ),
            );
            None
        }
        other => {
            cx.error(
                path,
                format!(
                    "a policy entry is `base` or a one-key mapping `kind: {{ fields }}`; found {}",
                    super::describe(other)
                ),
            );
            None
        }
    }
}

fn check_base(
    cx: &mut Cx<'_>,
    path: &str,
    scope: &ScopeKind,
    base_seen: &mut bool,
) -> Option<Entry> {
    if matches!(scope, ScopeKind::Global) {
        cx.error(
            path,
            "`base` is not allowed in the global scope: it has no parent scope",
        );
        return None;
    }
    if *base_seen {
        cx.error(path, "`base` appears more than once in this section");
        return None;
    }
    *base_seen = true;
    Some(Entry::Base)
}

fn unknown_kind(kind: &str) -> String {
    format!(
        "unknown policy kind `{kind}`; known kinds: {}",
        KINDS.join(", ")
    )
}

/// Checks the fields of a policy of `kind` (`path` is `...inbound[2].kind`).
pub(super) fn check_policy(
    cx: &mut Cx<'_>,
    kind: &str,
    fields: &Value,
    path: &str,
    scope: &ScopeKind,
) -> Option<PolicyDef> {
    // Type-checks the fields into the kind's struct, then runs the kind's checks.
    macro_rules! parse {
        ($check:ident $(, $arg:expr)*) => {{
            let k = cx.de(fields, path)?;
            $check(cx, k, path $(, $arg)*)
        }};
    }
    let before = cx.errors.len();
    let def = match kind {
        "validate-jwt" => parse!(validate_jwt),
        "rate-limit" => parse!(rate_limit, false).map(PolicyDef::RateLimit),
        "rate-limit-by-key" => parse!(rate_limit, true).map(PolicyDef::RateLimitByKey),
        "quota" => parse!(quota, false).map(PolicyDef::Quota),
        "quota-by-key" => parse!(quota, true).map(PolicyDef::QuotaByKey),
        "cache-lookup" => parse!(cache_lookup),
        "cache-store" => {
            let k: kinds::CacheStore = cx.de(fields, path)?;
            let duration = report(
                cx,
                &join_key(path, "duration"),
                parse_positive_duration(&k.duration, ONE_YEAR),
            )?;
            Some(PolicyDef::CacheStore {
                duration,
                allow_private: k.allow_private,
            })
        }
        "xml-to-json" => {
            let k: kinds::XmlToJson = cx.de(fields, path)?;
            one_of_values(
                cx,
                k.kind.as_deref(),
                &join_key(path, "kind"),
                &["javascript-friendly", "direct"],
            );
            one_of_values(
                cx,
                k.apply.as_deref(),
                &join_key(path, "apply"),
                &["always", "content-type-xml"],
            );
            Some(PolicyDef::XmlToJson(k))
        }
        "json-to-xml" => {
            let k: kinds::JsonToXml = cx.de(fields, path)?;
            one_of_values(
                cx,
                k.apply.as_deref(),
                &join_key(path, "apply"),
                &["always", "content-type-json"],
            );
            if let Some(root) = &k.root_element {
                if !is_xml_name(root) {
                    cx.error(
                        &join_key(path, "root_element"),
                        format!("`{root}` is not a valid XML element name"),
                    );
                }
            }
            Some(PolicyDef::JsonToXml(k))
        }
        "validate-content" => parse!(validate_content).map(PolicyDef::ValidateContent),
        "validate-parameters" => parse!(validate_parameters).map(PolicyDef::ValidateParameters),
        "cors" => parse!(cors).map(PolicyDef::Cors),
        "ip-filter" => parse!(ip_filter).map(PolicyDef::IpFilter),
        "forward-request" => {
            let k: kinds::ForwardRequest = cx.de(fields, path)?;
            let timeout = report(
                cx,
                &join_key(path, "timeout"),
                parse_positive_duration(&k.timeout, ONE_DAY),
            )?;
            Some(PolicyDef::ForwardRequest { timeout })
        }
        "limit-concurrency" => {
            let k: kinds::LimitConcurrency = cx.de(fields, path)?;
            if k.max_count == 0 {
                cx.error(
                    &join_key(path, "max_count"),
                    "`max_count` must be at least 1",
                );
            }
            let counter_key = match &k.counter_key {
                Some(text) => Some(template(cx, text, &join_key(path, "counter_key"))?),
                None => None,
            };
            Some(PolicyDef::LimitConcurrency(LimitConcurrencyDef {
                max_count: k.max_count,
                counter_key,
            }))
        }
        "check-header" => parse!(check_header).map(PolicyDef::CheckHeader),
        "validate-client-certificate" => {
            client_certificate(cx, fields, path).map(PolicyDef::ValidateClientCertificate)
        }
        "set-header" => parse!(set_header).map(PolicyDef::SetHeader),
        "set-query-parameter" => parse!(set_query).map(PolicyDef::SetQueryParameter),
        "rewrite-uri" => parse!(rewrite_uri, scope).map(PolicyDef::RewriteUri),
        "return-response" | "mock-response" => {
            parse!(return_response).map(PolicyDef::ReturnResponse)
        }
        _ => {
            cx.error(path, unknown_kind(kind));
            None
        }
    };
    if cx.errors.len() != before {
        return None;
    }
    def
}

/// Reports an `Err` at `path`.
fn report<T>(cx: &mut Cx<'_>, path: &str, result: Result<T, String>) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(message) => {
            cx.error(path, message);
            None
        }
    }
}

/// Checks that an optional value is one of `allowed`.
fn one_of_values(cx: &mut Cx<'_>, value: Option<&str>, path: &str, allowed: &[&str]) {
    if let Some(value) = value {
        if !allowed.contains(&value) {
            cx.error(
                path,
                format!("invalid value `{value}`, expected {}", one_of(allowed)),
            );
        }
    }
}

/// A header name at `path`.
pub(crate) fn header_name(cx: &mut Cx<'_>, name: &str, path: &str) -> Option<HeaderName> {
    report(
        cx,
        path,
        HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("`{name}` is not a valid header name")),
    )
}

/// A status code in `range` at `path`.
fn status(cx: &mut Cx<'_>, status: u16, range: std::ops::RangeInclusive<u16>, path: &str) -> bool {
    if range.contains(&status) {
        true
    } else {
        cx.error(
            path,
            format!(
                "invalid status {status}: expected {} to {}",
                range.start(),
                range.end()
            ),
        );
        false
    }
}

/// A template (no path parameters) at `path`.
fn template(cx: &mut Cx<'_>, text: &str, path: &str) -> Option<Template> {
    report(cx, path, Template::parse(text, false))
}

/// A header or query value template: no CR, LF or other control characters but tab.
fn value_template(cx: &mut Cx<'_>, text: &str, path: &str) -> Option<Template> {
    let template = template(cx, text, path)?;
    if template
        .literals()
        .any(|l| l.chars().any(|c| c.is_control() && c != '\t'))
    {
        cx.error(
            path,
            "the value must not contain CR, LF or other control characters",
        );
        return None;
    }
    Some(template)
}

/// A counter key template: required for the by-key forms, refused for the plain forms.
fn counter_key(
    cx: &mut Cx<'_>,
    key: Option<&str>,
    increment_condition: Option<&str>,
    path: &str,
    by_key: bool,
    kind: &str,
) -> (Option<Template>, bool) {
    let key_path = join_key(path, "counter_key");
    let condition_path = join_key(path, "increment_condition");
    let mut success_only = false;
    if !by_key {
        if key.is_some() {
            cx.error(
                &key_path,
                format!(
                    "`counter_key` is only for `{kind}-by-key`; `{kind}` counts per subscription"
                ),
            );
        }
        if increment_condition.is_some() {
            cx.error(
                &condition_path,
                format!("`increment_condition` is only for `{kind}-by-key`"),
            );
        }
        return (None, false);
    }
    match increment_condition {
        None | Some("any") => {}
        Some("success") => success_only = true,
        Some(other) => cx.error(
            &condition_path,
            format!("invalid value `{other}`, expected `any` or `success`"),
        ),
    }
    let template = match key {
        None => {
            cx.error(
                &key_path,
                format!("missing field `counter_key` (required by `{kind}-by-key`)"),
            );
            None
        }
        Some("") => {
            cx.error(&key_path, "the counter key must not be empty");
            None
        }
        Some(text) => template(cx, text, &key_path),
    };
    (template, success_only)
}

fn rate_limit(
    cx: &mut Cx<'_>,
    k: kinds::RateLimit,
    path: &str,
    by_key: bool,
) -> Option<RateLimitDef> {
    if k.calls == 0 {
        cx.error(&join_key(path, "calls"), "`calls` must be at least 1");
    }
    let period = report(
        cx,
        &join_key(path, "renewal_period"),
        parse_period(&k.renewal_period, false, ONE_YEAR),
    );
    let status = k.status.unwrap_or(429);
    if status != 429 && status != 503 {
        cx.error(
            &join_key(path, "status"),
            format!("invalid status {status}: a rate limit answers 429 or 503"),
        );
    }
    let retry_after_header = header_name(
        cx,
        k.retry_after_header.as_deref().unwrap_or("retry-after"),
        &join_key(path, "retry_after_header"),
    );
    let remaining_calls_header = match &k.remaining_calls_header {
        Some(name) => Some(header_name(
            cx,
            name,
            &join_key(path, "remaining_calls_header"),
        )?),
        None => None,
    };
    let (counter_key, count_success_only) = counter_key(
        cx,
        k.counter_key.as_deref(),
        k.increment_condition.as_deref(),
        path,
        by_key,
        "rate-limit",
    );
    let on_store_error = on_store_error(cx, k.on_store_error.as_deref(), path, OnStoreError::Allow);
    let Some(Period::Fixed(period)) = period else {
        return None;
    };
    Some(RateLimitDef {
        calls: k.calls,
        period,
        status,
        retry_after_header: retry_after_header?,
        remaining_calls_header,
        counter_key,
        count_success_only,
        on_store_error,
    })
}

fn quota(cx: &mut Cx<'_>, k: kinds::Quota, path: &str, by_key: bool) -> Option<QuotaDef> {
    if k.calls.is_none() && k.bandwidth.is_none() {
        cx.error(path, "a quota needs `calls`, `bandwidth`, or both");
    }
    if k.calls == Some(0) {
        cx.error(&join_key(path, "calls"), "`calls` must be at least 1");
    }
    let bandwidth = match &k.bandwidth {
        Some(size) => match parse_byte_size(size) {
            Ok(0) => {
                cx.error(
                    &join_key(path, "bandwidth"),
                    "`bandwidth` must be greater than zero",
                );
                None
            }
            Ok(bytes) => Some(bytes),
            Err(message) => {
                cx.error(&join_key(path, "bandwidth"), message);
                None
            }
        },
        None => None,
    };
    let period = report(
        cx,
        &join_key(path, "renewal_period"),
        parse_period(&k.renewal_period, true, ONE_YEAR),
    );
    let timezone = k.timezone.clone().unwrap_or_else(|| "UTC".to_string());
    if !is_plausible_timezone(&timezone) {
        cx.error(
            &join_key(path, "timezone"),
            format!("`{timezone}` is not an IANA time zone name such as `UTC` or `Europe/Berlin`"),
        );
    }
    let (counter_key, count_success_only) = counter_key(
        cx,
        k.counter_key.as_deref(),
        k.increment_condition.as_deref(),
        path,
        by_key,
        "quota",
    );
    let on_store_error = on_store_error(cx, k.on_store_error.as_deref(), path, OnStoreError::Deny);
    Some(QuotaDef {
        calls: k.calls,
        bandwidth,
        period: period?,
        timezone,
        counter_key,
        count_success_only,
        on_store_error,
    })
}

/// `on_store_error`: `allow` or `deny`, `default` when absent.
fn on_store_error(
    cx: &mut Cx<'_>,
    value: Option<&str>,
    path: &str,
    default: OnStoreError,
) -> OnStoreError {
    match value {
        None => default,
        Some("allow") => OnStoreError::Allow,
        Some("deny") => OnStoreError::Deny,
        Some(other) => {
            cx.error(
                &join_key(path, "on_store_error"),
                format!("invalid value `{other}`, expected `allow` or `deny`"),
            );
            default
        }
    }
}

/// Letters, digits, `/`, `_`, `-`, `+`; starts with a letter; no empty part; and a zone of
/// the IANA time zone database bundled with this build (no file is read: the same answer on
/// every machine).
pub(crate) fn is_plausible_timezone(name: &str) -> bool {
    is_plausible_timezone_name(name) && jiff::tz::TimeZone::get(name).is_ok()
}

fn is_plausible_timezone_name(name: &str) -> bool {
    name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.split('/').all(|part| !part.is_empty())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+'))
}

fn validate_jwt(cx: &mut Cx<'_>, k: kinds::ValidateJwt, path: &str) -> Option<PolicyDef> {
    if k.keys.is_empty() && k.jwks_uri.is_none() && k.openid_config.is_none() {
        cx.error(
            path,
            "`validate-jwt` needs at least one of `keys`, `jwks_uri`, `openid_config`",
        );
    }
    if k.header.is_some() && k.query.is_some() {
        cx.error(
            &join_key(path, "query"),
            "`header` and `query` are exclusive: the token comes from one place",
        );
    }
    if let Some(header) = &k.header {
        header_name(cx, header, &join_key(path, "header"));
    }
    if let Some(query) = &k.query {
        if !is_query_name(query) {
            cx.error(
                &join_key(path, "query"),
                format!("`{query}` is not a valid query parameter name"),
            );
        }
    }
    for (i, key) in k.keys.iter().enumerate() {
        let key_path = join_index(&join_key(path, "keys"), i);
        if !jwt_algs().contains(&key.alg.as_str()) {
            cx.error(
                &join_key(&key_path, "alg"),
                format!(
                    "unsupported algorithm `{}`, expected one of {}",
                    key.alg,
                    jwt_algs().join(", ")
                ),
            );
            continue;
        }
        if key.alg.starts_with("HS") {
            match &key.secret {
                None => cx.error(
                    &join_key(&key_path, "secret"),
                    format!("missing field `secret` (required by {})", key.alg),
                ),
                Some(secret) if secret.is_empty() => cx.error(
                    &join_key(&key_path, "secret"),
                    "the secret must not be empty",
                ),
                Some(_) => {}
            }
            if key.pem.is_some() {
                cx.error(
                    &join_key(&key_path, "pem"),
                    format!("{} keys take a `secret`, not a `pem`", key.alg),
                );
            }
        } else {
            match &key.pem {
                None => cx.error(
                    &join_key(&key_path, "pem"),
                    format!("missing field `pem` (required by {})", key.alg),
                ),
                Some(pem) if !pem.contains("-----BEGIN") => cx.error(
                    &join_key(&key_path, "pem"),
                    "expected a PEM public key (`-----BEGIN PUBLIC KEY-----` ...)",
                ),
                Some(_) => {}
            }
            if key.secret.is_some() {
                cx.error(
                    &join_key(&key_path, "secret"),
                    format!("{} keys take a `pem`, not a `secret`", key.alg),
                );
            }
        }
    }
    for (name, uri) in [
        ("jwks_uri", &k.jwks_uri),
        ("openid_config", &k.openid_config),
    ] {
        if let Some(uri) = uri {
            let lower = uri.to_ascii_lowercase();
            if !(lower.starts_with("https://") || lower.starts_with("http://"))
                || uri.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                cx.error(
                    &join_key(path, name),
                    format!("`{uri}` is not an `http://` or `https://` address"),
                );
            }
        }
    }
    if let Some(skew) = &k.clock_skew {
        report(
            cx,
            &join_key(path, "clock_skew"),
            parse_duration_max(skew, ONE_DAY),
        );
    }
    if let Some(failed) = k.failed_status {
        status(cx, failed, 400..=599, &join_key(path, "failed_status"));
    }
    Some(PolicyDef::ValidateJwt(k))
}

fn cache_lookup(cx: &mut Cx<'_>, k: kinds::CacheLookup, path: &str) -> Option<PolicyDef> {
    for (i, name) in k.vary_by_header.iter().enumerate() {
        header_name(cx, name, &join_index(&join_key(path, "vary_by_header"), i));
    }
    for (i, name) in k.vary_by_query_parameter.iter().flatten().enumerate() {
        if !is_query_name(name) {
            cx.error(
                &join_index(&join_key(path, "vary_by_query_parameter"), i),
                format!("`{name}` is not a valid query parameter name"),
            );
        }
    }
    Some(PolicyDef::CacheLookup(k))
}

/// An XML element name (without namespace prefix): a letter or `_`, then letters, digits,
/// `-`, `_`, `.`.
pub(crate) fn is_xml_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Normalizes a CORS origin `scheme://host[:port]` (lowercase).
pub(crate) fn parse_origin(origin: &str) -> Result<String, String> {
    let bad = |why: &str| format!("invalid origin `{origin}`: {why}");
    let Some((scheme, rest)) = origin.split_once("://") else {
        return Err(bad(
            "expected `*` or `scheme://host[:port]`, e.g. `https://example.com`",
        ));
    };
    let mut scheme_chars = scheme.chars();
    if !matches!(scheme_chars.next(), Some(c) if c.is_ascii_alphabetic())
        || !scheme_chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return Err(bad("invalid scheme"));
    }
    if rest.contains(['/', '?', '#']) {
        return Err(bad(
            "an origin has no path, query or fragment (no trailing `/`)",
        ));
    }
    if rest.contains('@') {
        return Err(bad("an origin has no user information"));
    }
    let (host, port) = if rest.starts_with('[') {
        match rest.find(']') {
            Some(end) => (&rest[..=end], &rest[end + 1..]),
            None => return Err(bad("unclosed `[`")),
        }
    } else {
        match rest.find(':') {
            Some(pos) => (&rest[..pos], &rest[pos..]),
            None => (rest, ""),
        }
    };
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    };
    if !host_ok {
        return Err(bad("invalid host"));
    }
    if !port.is_empty() {
        let digits = port.strip_prefix(':').unwrap_or("");
        if digits.is_empty()
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || digits.parse::<u16>().map_or(true, |p| p == 0)
        {
            return Err(bad("the port must be a number from 1 to 65535"));
        }
    }
    Ok(origin.to_ascii_lowercase())
}

fn cors(cx: &mut Cx<'_>, k: kinds::Cors, path: &str) -> Option<CorsDef> {
    let mut any_origin = false;
    let mut allowed_origins = Vec::new();
    for (i, origin) in k.allowed_origins.iter().enumerate() {
        if origin == "*" {
            any_origin = true;
            continue;
        }
        let item = join_index(&join_key(path, "allowed_origins"), i);
        if let Some(origin) = report(cx, &item, parse_origin(origin)) {
            if !allowed_origins.contains(&origin) {
                allowed_origins.push(origin);
            }
        }
    }
    if any_origin {
        allowed_origins.clear();
        if k.allow_credentials {
            cx.error(
                &join_key(path, "allow_credentials"),
                "`allow_credentials: true` cannot be combined with the `*` origin: list the origins",
            );
        }
    }
    let mut allowed_methods: Vec<Method> = Vec::new();
    for (i, method) in k.allowed_methods.iter().enumerate() {
        let item = join_index(&join_key(path, "allowed_methods"), i);
        let methods = match parse_method(method) {
            // `*`: the standard methods (a literal `*` would not work with credentials).
            Ok(None) => vec![
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
                Method::OPTIONS,
            ],
            Ok(Some(m)) => vec![m],
            Err(message) => {
                cx.error(&item, message);
                continue;
            }
        };
        for m in methods {
            if !allowed_methods.contains(&m) {
                allowed_methods.push(m);
            }
        }
    }
    if k.allowed_methods.is_empty() {
        allowed_methods = vec![Method::GET, Method::POST, Method::HEAD];
    }
    let methods_text = allowed_methods
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    let allowed_methods_value = HeaderValue::from_str(&methods_text).ok()?;
    let mut any_header = false;
    let mut allowed_headers = Vec::new();
    for (i, name) in k.allowed_headers.iter().enumerate() {
        if name == "*" {
            any_header = true;
            continue;
        }
        let item = join_index(&join_key(path, "allowed_headers"), i);
        if let Some(name) = header_name(cx, name, &item) {
            if !allowed_headers.contains(&name) {
                allowed_headers.push(name);
            }
        }
    }
    if any_header {
        allowed_headers.clear();
    }
    let mut exposed = Vec::new();
    for (i, name) in k.expose_headers.iter().enumerate() {
        let item = join_index(&join_key(path, "expose_headers"), i);
        if name == "*" {
            exposed.push("*".to_string());
        } else if let Some(name) = header_name(cx, name, &item) {
            exposed.push(name.as_str().to_string());
        }
    }
    let expose_headers_value = if exposed.is_empty() {
        None
    } else {
        HeaderValue::from_str(&exposed.join(", ")).ok()
    };
    let max_age = match &k.max_age {
        Some(spec) => Some(report(
            cx,
            &join_key(path, "max_age"),
            parse_duration_max(spec, ONE_YEAR),
        )?),
        None => None,
    };
    Some(CorsDef {
        allowed_origins,
        any_origin,
        allowed_methods,
        allowed_methods_value,
        allowed_headers,
        any_header,
        expose_headers_value,
        allow_credentials: k.allow_credentials,
        max_age,
    })
}

/// An IP address or a CIDR network.
pub fn parse_network(text: &str) -> Result<ipnet::IpNet, String> {
    if let Ok(ip) = text.parse::<std::net::IpAddr>() {
        return Ok(ipnet::IpNet::from(ip));
    }
    text.parse::<ipnet::IpNet>()
        .map(|net| net.trunc())
        .map_err(|_| format!("`{text}` is not an IP address or a CIDR network (`10.0.0.0/8`)"))
}

fn ip_filter(cx: &mut Cx<'_>, k: kinds::IpFilter, path: &str) -> Option<IpFilterDef> {
    let allow = match k.action.as_str() {
        "allow" => Some(true),
        "forbid" => Some(false),
        other => {
            cx.error(
                &join_key(path, "action"),
                format!("invalid action `{other}`, expected `allow` or `forbid`"),
            );
            None
        }
    };
    if k.addresses.is_empty() {
        cx.error(
            &join_key(path, "addresses"),
            "at least one address is required",
        );
    }
    let mut networks = Vec::new();
    for (i, address) in k.addresses.iter().enumerate() {
        let item = join_index(&join_key(path, "addresses"), i);
        if let Some(net) = report(cx, &item, parse_network(address.trim())) {
            networks.push(net);
        }
    }
    Some(IpFilterDef {
        allow: allow?,
        networks,
    })
}

/// `validate-client-certificate`, each identity checked on its own, so that every problem
/// of every identity is reported.
fn client_certificate(
    cx: &mut Cx<'_>,
    fields: &Value,
    path: &str,
) -> Option<ValidateClientCertificateDef> {
    let errors_before = cx.errors.len();
    let map = cx.mapping(fields, path, "the policy's settings", &["identities"])?;
    let list_path = join_key(path, "identities");
    let items: &[Value] = match map.get("identities") {
        None | Some(Value::Null) => &[],
        Some(Value::Sequence(items)) => items,
        Some(other) => {
            cx.error(
                &list_path,
                format!(
                    "expected a list of identities, found {}",
                    super::describe(other)
                ),
            );
            return None;
        }
    };
    let mut identities = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = join_index(&list_path, i);
        let Some(id) = cx.de::<kinds::ClientIdentity>(item, &at) else {
            continue;
        };
        let before = cx.errors.len();
        let hex_field =
            |cx: &mut Cx<'_>, value: Option<String>, field: &str, len: Option<usize>| {
                let value = value?;
                let digits: String = value.chars().filter(|c| *c != ':').collect();
                let ok = !digits.is_empty()
                    && digits.chars().all(|c| c.is_ascii_hexdigit())
                    && len.is_none_or(|n| digits.len() == n);
                if !ok {
                    let want = match len {
                        Some(64) => {
                            "64 hex digits, the certificate's SHA-256 (SHA-1 thumbprints are not \
                                 accepted: `openssl x509 -noout -fingerprint -sha256`)"
                        }
                        _ => "hex digits",
                    };
                    cx.error(&join_key(&at, field), format!("`{value}` is not {want}"));
                    return None;
                }
                Some(digits.to_ascii_lowercase())
            };
        let thumbprint = hex_field(cx, id.thumbprint, "thumbprint", Some(64));
        let serial_number = hex_field(cx, id.serial_number, "serial_number", None)
            .map(|s| crate::compiled::normalize_serial(&s));
        let def = ClientIdentityDef {
            thumbprint,
            serial_number,
            common_name: id.common_name,
            subject: id.subject,
            issuer_subject: id.issuer_subject,
            dns_name: id.dns_name,
        };
        let given = [
            &def.thumbprint,
            &def.serial_number,
            &def.common_name,
            &def.subject,
            &def.issuer_subject,
            &def.dns_name,
        ];
        if given.iter().all(|f| f.is_none()) && cx.errors.len() == before {
            cx.error(
                &at,
                "an identity names at least one of `thumbprint`, `serial_number`, \
                 `common_name`, `subject`, `issuer_subject`, `dns_name`",
            );
        }
        identities.push(def);
    }
    (cx.errors.len() == errors_before).then_some(ValidateClientCertificateDef { identities })
}

/// `validate-content`'s default `max_size`: 1 MiB.
const VALIDATE_CONTENT_MAX_SIZE: u64 = 1024 * 1024;

/// `validate-content`: the schema compiled (and checked against its meta-schema) here, so
/// that `tollgate validate` reports a bad one and a request never compiles one.
fn validate_content(
    cx: &mut Cx<'_>,
    k: kinds::ValidateContent,
    path: &str,
) -> Option<ValidateContentDef> {
    one_of_values(
        cx,
        k.action.as_deref(),
        &join_key(path, "action"),
        &["prevent", "detect"],
    );
    let schema_path = join_key(path, "schema");
    if !matches!(
        k.schema,
        serde_json::Value::Object(_) | serde_json::Value::Bool(_)
    ) {
        cx.error(
            &schema_path,
            "a JSON Schema is a mapping (or `true`/`false`)",
        );
        return None;
    }
    // A body is parsed whole into a tree about 16 times its size (`[1,1,...]`): bounded
    // well below what the memory of many requests at once can take.
    let max_size = match &k.max_size {
        None => VALIDATE_CONTENT_MAX_SIZE,
        Some(size) => report(
            cx,
            &join_key(path, "max_size"),
            parse_byte_size(size).and_then(|n| match n {
                0 => Err("`max_size` must be greater than zero".to_string()),
                n if n > 10 * 1024 * 1024 => Err(format!(
                    "`max_size` is at most 10MiB (a body is parsed whole into memory); {n} bytes given"
                )),
                n => Ok(n),
            }),
        )?,
    };
    let validator = report(cx, &schema_path, compile_json_schema(&k.schema))?;
    Some(ValidateContentDef {
        validator: Arc::new(validator),
        detect: k.action.as_deref() == Some("detect"),
        max_size,
    })
}

/// `validate-parameters`: every parameter's name and schema checked, the schemas compiled.
fn validate_parameters(
    cx: &mut Cx<'_>,
    k: kinds::ValidateParameters,
    path: &str,
) -> Option<ValidateParametersDef> {
    one_of_values(
        cx,
        k.action.as_deref(),
        &join_key(path, "action"),
        &["prevent", "detect"],
    );
    one_of_values(
        cx,
        k.unspecified_query.as_deref(),
        &join_key(path, "unspecified_query"),
        &["allow", "prevent"],
    );
    let mut params = Vec::new();
    for (place, field, specs) in [
        (ParamPlace::Query, "query", &k.query),
        (ParamPlace::Header, "headers", &k.headers),
        (ParamPlace::Path, "path", &k.path),
    ] {
        let field_path = join_key(path, field);
        for (name, spec) in specs {
            let at = join_key(&field_path, name);
            let name = match place {
                ParamPlace::Header => match header_name(cx, name, &at) {
                    Some(h) => h.as_str().to_owned(),
                    None => continue,
                },
                ParamPlace::Path if !is_template_name(name) => {
                    cx.error(
                        &at,
                        format!("`{name}` is not a path parameter name (letters, digits, `_`)"),
                    );
                    continue;
                }
                _ if name.is_empty() => {
                    cx.error(&at, "a parameter name cannot be empty");
                    continue;
                }
                _ => name.clone(),
            };
            let (validator, shape) = match &spec.schema {
                None => (
                    None,
                    ValueShape::Scalar {
                        number: false,
                        boolean: false,
                    },
                ),
                Some(schema) => {
                    let Some(v) = report(cx, &join_key(&at, "schema"), compile_json_schema(schema))
                    else {
                        continue;
                    };
                    (Some(Arc::new(v)), value_shape(schema))
                }
            };
            params.push(ParameterDef {
                place,
                name,
                required: spec.required || place == ParamPlace::Path,
                validator,
                shape,
            });
        }
    }
    if params.is_empty() && k.unspecified_query.as_deref() != Some("prevent") {
        cx.error(
            path,
            "nothing to validate: list parameters under `query`, `headers` or `path` (or \
             set `unspecified_query: prevent`)",
        );
    }
    Some(ValidateParametersDef {
        params,
        only_listed_query: k.unspecified_query.as_deref() == Some("prevent"),
        detect: k.action.as_deref() == Some("detect"),
    })
}

/// A path template parameter's name: `[A-Za-z_][A-Za-z0-9_]*`.
fn is_template_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// How a parameter with `schema` is read, from its top-level `type` (and `items.type`).
fn value_shape(schema: &serde_json::Value) -> ValueShape {
    fn types(schema: Option<&serde_json::Value>) -> (bool, bool, bool) {
        let list: Vec<&str> = match schema.and_then(|s| s.get("type")) {
            Some(serde_json::Value::String(t)) => vec![t.as_str()],
            Some(serde_json::Value::Array(ts)) => ts.iter().filter_map(|t| t.as_str()).collect(),
            _ => Vec::new(),
        };
        (
            list.iter().any(|t| *t == "integer" || *t == "number"),
            list.contains(&"boolean"),
            list.contains(&"array"),
        )
    }
    let (number, boolean, array) = types(Some(schema));
    if array {
        let (number, boolean, _) = types(schema.get("items"));
        ValueShape::Array { number, boolean }
    } else {
        ValueShape::Scalar { number, boolean }
    }
}

/// `schema` compiled as `validate-content` runs it (checked against its meta-schema;
/// `pattern`s by the `regex` crate, `format`s checked); `Err` says what is wrong and where
/// in the schema.
pub fn compile_json_schema(schema: &serde_json::Value) -> Result<jsonschema::Validator, String> {
    // `pattern`s by the `regex` crate, in linear time: a backtracking engine would let a
    // body make a pattern take exponential time.
    let built = jsonschema::options()
        .should_validate_formats(true)
        .with_pattern_options(jsonschema::PatternOptions::regex())
        .build(schema);
    built.map_err(|e| {
        let message = e.to_string();
        if message.contains("retrieving it failed") {
            // A `$ref` to another document: nothing is fetched (no file, no URL).
            return format!(
                "not a usable JSON Schema: {}: a `$ref` may only point inside the schema \
                 (`#/$defs/...`); put the referenced schema under `$defs`",
                message.split(" is not present").next().unwrap_or(&message)
            );
        }
        // The meta-schema's complaints are about a place in this schema.
        match e.instance_path().as_str() {
            "" => format!("not a usable JSON Schema: {message}"),
            at => format!("not a usable JSON Schema: {message} (at {at})"),
        }
    })
}

fn check_header(cx: &mut Cx<'_>, k: kinds::CheckHeader, path: &str) -> Option<CheckHeaderDef> {
    let name = header_name(cx, &k.name, &join_key(path, "name"));
    let failed_status = k.failed_status.unwrap_or(401);
    status(
        cx,
        failed_status,
        400..=599,
        &join_key(path, "failed_status"),
    );
    Some(CheckHeaderDef {
        name: name?,
        values: k.values,
        ignore_case: k.ignore_case,
        failed_status,
        failed_message: k
            .failed_message
            .unwrap_or_else(|| "header check failed".to_string()),
    })
}

fn exists_action(cx: &mut Cx<'_>, value: Option<&str>, path: &str) -> Option<ExistsAction> {
    Some(match value {
        None | Some("override") => ExistsAction::Override,
        Some("skip") => ExistsAction::Skip,
        Some("append") => ExistsAction::Append,
        Some("delete") => ExistsAction::Delete,
        Some(other) => {
            cx.error(
                &join_key(path, "exists_action"),
                format!(
                    "invalid value `{other}`, expected one of `override`, `skip`, `append`, `delete`"
                ),
            );
            return None;
        }
    })
}

/// The value of `set-header` / `set-query-parameter`.
fn set_value(
    cx: &mut Cx<'_>,
    k: &kinds::SetValue,
    path: &str,
    action: Option<ExistsAction>,
) -> Option<Template> {
    let value_path = join_key(path, "value");
    match (&k.value, action) {
        (_, Some(ExistsAction::Delete)) => None,
        (None, Some(_)) => {
            cx.error(
                &value_path,
                "missing field `value` (required unless `exists_action: delete`)",
            );
            None
        }
        (Some(text), _) => value_template(cx, text, &value_path),
        (None, None) => None,
    }
}

fn set_header(cx: &mut Cx<'_>, k: kinds::SetValue, path: &str) -> Option<SetDef<HeaderName>> {
    let name = header_name(cx, &k.name, &join_key(path, "name"));
    let action = exists_action(cx, k.exists_action.as_deref(), path);
    let value = set_value(cx, &k, path, action);
    Some(SetDef {
        name: name?,
        value,
        exists_action: action?,
    })
}

fn set_query(cx: &mut Cx<'_>, k: kinds::SetValue, path: &str) -> Option<SetDef<String>> {
    if !is_query_name(&k.name) {
        cx.error(
            &join_key(path, "name"),
            format!("`{}` is not a valid query parameter name", k.name),
        );
    }
    let action = exists_action(cx, k.exists_action.as_deref(), path);
    let value = set_value(cx, &k, path, action);
    Some(SetDef {
        name: k.name,
        value,
        exists_action: action?,
    })
}

fn rewrite_uri(
    cx: &mut Cx<'_>,
    k: kinds::RewriteUri,
    path: &str,
    scope: &ScopeKind,
) -> Option<RewriteUriDef> {
    let template_path = join_key(path, "template");
    if !k.template.starts_with('/') {
        cx.error(&template_path, "the template must start with `/`");
        return None;
    }
    let template = report(cx, &template_path, Template::parse(&k.template, true))?;
    if template.literals().any(|l| {
        l.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '#')
    }) {
        cx.error(
            &template_path,
            "the template must not contain spaces, control characters or `#`",
        );
        return None;
    }
    if let ScopeKind::Operation {
        params: Some(params),
    } = scope
    {
        for var in template.vars() {
            if let Var::PathParam(name) = var {
                if !params.contains(name) {
                    let known = if params.is_empty() {
                        "the operation path has no parameters".to_string()
                    } else {
                        format!(
                            "its parameters are {}",
                            params
                                .iter()
                                .map(|p| format!("`{{{p}}}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    };
                    cx.error(
                        &template_path,
                        format!("`{{{name}}}` is not a parameter of this operation: {known}"),
                    );
                }
            }
        }
    }
    Some(RewriteUriDef {
        template,
        copy_unmatched_params: k.copy_unmatched_params.unwrap_or(true),
    })
}

fn return_response(
    cx: &mut Cx<'_>,
    k: kinds::ReturnResponse,
    path: &str,
) -> Option<ReturnResponseDef> {
    let status_code = k.status.unwrap_or(200);
    status(cx, status_code, 100..=599, &join_key(path, "status"));
    let mut headers = Vec::new();
    for (name, value) in &k.headers {
        let header_path = join_key(&join_key(path, "headers"), name);
        let name = header_name(cx, name, &header_path);
        let value = value_template(cx, value, &header_path);
        if let (Some(name), Some(value)) = (name, value) {
            headers.push((name, value));
        }
    }
    let (body, default_content_type): (Arc<[u8]>, Option<&'static str>) = match &k.body {
        None => (Arc::from(&[][..]), None),
        Some(serde_json::Value::String(text)) => (
            Arc::from(text.as_bytes()),
            Some("text/plain; charset=utf-8"),
        ),
        Some(value) => (
            Arc::from(serde_json::to_vec(value).ok()?.as_slice()),
            Some("application/json"),
        ),
    };
    Some(ReturnResponseDef {
        status: status_code,
        headers,
        body,
        default_content_type,
    })
}
