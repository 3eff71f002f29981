//! Validation of a policy file: every problem at once, each with its YAML path and line.
//!
//! `serde_yaml` stops at the first error and its `Value` has no positions, so this module
//! walks the `serde_yaml::Value` by hand: the structure (file, products, APIs, upstreams,
//! operations, policy sections) field by field, and each policy entry's fields through its
//! own `model::kinds` struct, so that one bad piece never hides the next. Paths look like
//! `apis[0].upstream.targets[1]` or `products[1].policies.inbound[2].rate-limit.calls`; the
//! line and column come from an index of the source text (the nearest existing ancestor when the
//! path itself is not written, e.g. a missing field).
//!
//! While checking, the walk also builds the typed pieces that compilation
//! assembles when no error was found.

mod policy;
pub use policy::{compile_json_schema, parse_network};
#[cfg(test)]
mod tests;
mod tls;

use crate::compiled::{
    HealthCheckDef, Limits, PathSegment, PolicyDef, Target, UpstreamDef, MAX_STATUS_RETRIES,
};
use crate::duration::{parse_byte_size, parse_positive_duration, ONE_DAY};
use crate::model::{ByteSize, DurationSpec};
use crate::positions::{join_index, join_key, PosIndex};
use http::{HeaderName, Method};
use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};
use std::cell::OnceCell;
use std::collections::HashMap;
use std::fmt;
use std::net::Ipv6Addr;
use std::time::Duration;

/// One problem found in a policy file. Serializes as
/// `{"path", "line", "column", "message"}` (unknown positions are `null`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConfigError {
    /// YAML path of the offending piece (`apis[0].upstream.targets[1]`); empty for the
    /// document itself (syntax errors).
    pub path: String,
    /// 1-based line in the source text, when known.
    pub line: Option<usize>,
    /// 1-based column in the source text, when known.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    /// `path (line L, column C): message`; the parenthesis is left out when the position is
    /// unknown, the path when it is empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let position = match (self.line, self.column) {
            (Some(line), Some(column)) => Some(format!("line {line}, column {column}")),
            (Some(line), None) => Some(format!("line {line}")),
            _ => None,
        };
        match (self.path.is_empty(), position) {
            (false, Some(position)) => write!(f, "{} ({position}): {}", self.path, self.message),
            (false, None) => write!(f, "{}: {}", self.path, self.message),
            (true, Some(position)) => write!(f, "{position}: {}", self.message),
            (true, None) => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The section names, in [`Scope::sections`] order.
pub(crate) const SECTIONS: [&str; 4] = ["inbound", "backend", "outbound", "on_error"];

/// One entry of a policy section, checked.
#[derive(Debug)]
pub(crate) enum Entry {
    /// `base`: the parent scope's same section.
    Base,
    /// A policy.
    Policy(Box<PolicyDef>),
}

/// The checked policy sections of one scope (`None`: the section is not named).
#[derive(Debug, Default)]
pub(crate) struct Scope {
    pub(crate) sections: [Option<Vec<Entry>>; 4],
}

/// Where a policy section is, for the checks that depend on it.
pub(crate) enum ScopeKind {
    Global,
    Product,
    Api,
    /// An operation; `params` are its path parameters (None when its path is invalid).
    Operation {
        params: Option<Vec<String>>,
    },
}

/// A checked product (fields are `None` where an error was reported).
#[derive(Debug)]
pub(crate) struct CheckedProduct {
    pub(crate) id: Option<String>,
    /// Indexes of the APIs it lists.
    pub(crate) apis: Vec<usize>,
    pub(crate) scope: Scope,
}

/// A checked API.
#[derive(Debug)]
pub(crate) struct CheckedApi {
    pub(crate) id: Option<String>,
    pub(crate) prefix: Option<String>,
    pub(crate) subscription_required: bool,
    /// (http, https) allowed.
    pub(crate) protocols: (bool, bool),
    pub(crate) max_request_body: Option<u64>,
    pub(crate) key_header: Option<HeaderName>,
    pub(crate) key_query: String,
    pub(crate) upstream: Option<UpstreamDef>,
    pub(crate) scope: Scope,
    pub(crate) operations: Vec<CheckedOperation>,
}

/// A checked operation.
#[derive(Debug)]
pub(crate) struct CheckedOperation {
    pub(crate) id: Option<String>,
    /// `Some(None)` is `*`.
    pub(crate) method: Option<Option<Method>>,
    pub(crate) path: String,
    pub(crate) segments: Option<Vec<PathSegment>>,
    pub(crate) scope: Scope,
}

/// Everything the walk built.
#[derive(Debug)]
pub(crate) struct Checked {
    pub(crate) limits: Limits,
    pub(crate) trusted_proxies: Vec<ipnet::IpNet>,
    pub(crate) global: Scope,
    pub(crate) products: Vec<CheckedProduct>,
    pub(crate) apis: Vec<CheckedApi>,
}

/// The validation context: the source (for positions, indexed on the first error) and the
/// errors found so far.
pub(crate) struct Cx<'s> {
    source: Option<&'s str>,
    index: OnceCell<PosIndex>,
    pub(crate) errors: Vec<ConfigError>,
}

impl<'s> Cx<'s> {
    /// A context for a document parsed from `source` (None: positions are unknown).
    pub(crate) fn new(source: Option<&'s str>) -> Self {
        Cx {
            source,
            index: OnceCell::new(),
            errors: Vec::new(),
        }
    }

    /// The position index of the source.
    pub(crate) fn index(&self) -> Option<&PosIndex> {
        let source = self.source?;
        Some(self.index.get_or_init(|| PosIndex::build(source)))
    }

    /// Reports `message` at `path`.
    pub(crate) fn error(&mut self, path: &str, message: impl Into<String>) {
        let position = self.index().and_then(|index| index.lookup(path));
        self.errors.push(ConfigError {
            path: path.to_string(),
            line: position.map(|p| p.0),
            column: position.map(|p| p.1),
            message: message.into(),
        });
    }

    /// Deserializes `value` (at `path`) into `T`, reporting a failure at the path of the
    /// part that failed.
    ///
    /// serde stops at the first problem; to report the others of the same mapping too, the
    /// offending field is dropped and the rest deserialized again (a bounded number of
    /// times), until it passes or a required field is what is missing.
    pub(crate) fn de<T: DeserializeOwned>(&mut self, value: &Value, path: &str) -> Option<T> {
        let mut err = match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => return Some(v),
            Err(err) => err,
        };
        self.serde_error(path, &err);
        let Value::Mapping(map) = value else {
            return None;
        };
        let mut rest = map.clone();
        for _ in 0..map.len() {
            let message = strip_location(err.inner());
            let field = match err.path().iter().next() {
                Some(serde_path_to_error::Segment::Map { key }) => Some(key.clone()),
                _ => named_field(&message)
                    .filter(|_| message.starts_with("unknown field"))
                    .map(str::to_owned),
            };
            let Some(field) = field.filter(|f| rest.contains_key(f.as_str())) else {
                break;
            };
            rest.remove(field.as_str());
            err = match serde_path_to_error::deserialize::<_, T>(Value::Mapping(rest.clone())) {
                Ok(_) => break,
                Err(e) => e,
            };
            let next = strip_location(err.inner());
            if named_field(&next).is_some_and(|f| !rest.contains_key(f))
                && next.starts_with("missing field")
            {
                // A field we dropped (or one really missing, already reported) is required:
                // nothing more can be learnt from this mapping.
                if !map.contains_key(named_field(&next).unwrap_or_default()) {
                    self.serde_error(path, &err);
                }
                break;
            }
            self.serde_error(path, &err);
        }
        None
    }

    /// Reports a serde error that happened inside the piece at `base`.
    pub(crate) fn serde_error(
        &mut self,
        base: &str,
        err: &serde_path_to_error::Error<serde_yaml::Error>,
    ) {
        let mut path = base.to_string();
        for segment in err.path() {
            path = match segment {
                serde_path_to_error::Segment::Seq { index } => join_index(&path, *index),
                serde_path_to_error::Segment::Map { key } => join_key(&path, key),
                serde_path_to_error::Segment::Enum { variant } => join_key(&path, variant),
                serde_path_to_error::Segment::Unknown => path,
            };
        }
        let message = strip_location(err.inner());
        if let Some(field) = named_field(&message) {
            let last = path.rsplit(['.', ']']).next().unwrap_or("");
            if last != field {
                path = join_key(&path, field);
            }
        }
        self.error(&path, friendly_message(message));
    }

    /// `value` as a mapping whose keys are all in `fields`; reports anything else.
    pub(crate) fn mapping<'v>(
        &mut self,
        value: &'v Value,
        path: &str,
        what: &str,
        fields: &[&str],
    ) -> Option<&'v Mapping> {
        let Value::Mapping(map) = value else {
            self.error(
                path,
                format!("expected {what} (a mapping), found {}", describe(value)),
            );
            return None;
        };
        for key in map.keys() {
            match key.as_str() {
                Some(name) if fields.contains(&name) => {}
                Some(name) => self.error(
                    &join_key(path, name),
                    format!("unknown field `{name}`, expected {}", one_of(fields)),
                ),
                None => self.error(
                    path,
                    format!("keys must be strings, found {}", describe(key)),
                ),
            }
        }
        Some(map)
    }

    /// `value` as a sequence.
    pub(crate) fn sequence<'v>(
        &mut self,
        value: &'v Value,
        path: &str,
        what: &str,
    ) -> Option<&'v [Value]> {
        match value {
            Value::Sequence(items) => Some(items),
            _ => {
                self.error(
                    path,
                    format!("expected {what} (a list), found {}", describe(value)),
                );
                None
            }
        }
    }

    /// A required field.
    pub(crate) fn required<T: DeserializeOwned>(
        &mut self,
        map: &Mapping,
        path: &str,
        name: &str,
    ) -> Option<T> {
        match map.get(name) {
            Some(value) => self.de(value, &join_key(path, name)),
            None => {
                self.error(&join_key(path, name), format!("missing field `{name}`"));
                None
            }
        }
    }

    /// An optional field (absent or `null`: None).
    pub(crate) fn optional<T: DeserializeOwned>(
        &mut self,
        map: &Mapping,
        path: &str,
        name: &str,
    ) -> Option<T> {
        match map.get(name) {
            None | Some(Value::Null) => None,
            Some(value) => self.de(value, &join_key(path, name)),
        }
    }

    /// A positive duration of at most `max` at `path`.
    fn positive_duration(
        &mut self,
        spec: &DurationSpec,
        path: &str,
        max: Duration,
    ) -> Option<Duration> {
        match parse_positive_duration(spec, max) {
            Ok(d) => Some(d),
            Err(message) => {
                self.error(path, message);
                None
            }
        }
    }

    /// An `[a-z0-9-]{1,64}` id at `path`.
    fn check_id(&mut self, id: &str, path: &str) -> bool {
        if is_id(id) {
            true
        } else {
            self.error(
                path,
                format!("invalid id `{id}`: ids are 1 to 64 characters of `a-z`, `0-9` and `-`"),
            );
            false
        }
    }
}

/// `[a-z0-9-]{1,64}`.
pub fn is_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `a`, `b` or `c` / one of `a`, `b`, `c`.
pub(crate) fn one_of(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.len() {
        0 => "nothing".to_string(),
        1 => quoted[0].clone(),
        2 => format!("{} or {}", quoted[0], quoted[1]),
        _ => format!("one of {}", quoted.join(", ")),
    }
}

/// What kind of YAML value this is, for messages.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("boolean `{b}`"),
        Value::Number(n) => format!("number `{n}`"),
        Value::String(s) => format!("string \"{s}\""),
        Value::Sequence(_) => "a list".to_string(),
        Value::Mapping(_) => "a mapping".to_string(),
        Value::Tagged(t) => format!("tagged value `{}`", t.tag),
    }
}

/// serde_yaml's message without its " at line L column C" suffix.
fn strip_location(err: &serde_yaml::Error) -> String {
    let message = err.to_string();
    match err.location() {
        Some(loc) => message.replacen(
            &format!(" at line {} column {}", loc.line(), loc.column()),
            "",
            1,
        ),
        None => message,
    }
}

/// The field named by "unknown field `x`", "missing field `x`" or "duplicate field `x`".
fn named_field(message: &str) -> Option<&str> {
    let rest = ["unknown field `", "missing field `", "duplicate field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))?;
    rest.split('`').next()
}

/// Rewrites serde's messages about our untagged types into something a user can act on.
fn friendly_message(message: String) -> String {
    if message.contains("untagged enum DurationSpec") {
        return "expected a duration: integer seconds or a string such as `500ms`, `10s`, \
                `5m`, `1h`, `1d`"
            .to_string();
    }
    if message.contains("untagged enum ByteSize") {
        return "expected a size: integer bytes or a string such as `64KiB`, `10MiB`, `10MB`"
            .to_string();
    }
    if message.contains("untagged enum RequiredClaims") {
        return "expected a list of claim names, or a mapping of claim name to a list of \
                allowed values"
            .to_string();
    }
    if let Some(pos) = message.find("expected struct ") {
        return format!("{}expected a mapping", &message[..pos]);
    }
    message
}

/// Runs every check on a parsed document. The result is only meaningful when `cx.errors`
/// stayed empty.
pub(crate) fn check_file(value: &Value, cx: &mut Cx<'_>) -> Checked {
    let mut checked = Checked {
        limits: Limits::default(),
        trusted_proxies: Vec::new(),
        global: Scope::default(),
        products: Vec::new(),
        apis: Vec::new(),
    };
    let Some(root) = cx.mapping(
        value,
        "",
        "the policy file",
        &["version", "settings", "policies", "products", "apis"],
    ) else {
        return checked;
    };

    match root.get("version") {
        None => cx.error("version", "missing field `version` (write `version: 1`)"),
        Some(v) => {
            if let Some(version) = cx.de::<u32>(v, "version") {
                if version != 1 {
                    cx.error(
                        "version",
                        format!("unsupported version {version}: only version 1 exists"),
                    );
                }
            }
        }
    }

    if let Some(settings) = root.get("settings") {
        (checked.limits, checked.trusted_proxies) = check_settings(cx, settings);
    }
    checked.global = check_policies(cx, root.get("policies"), "policies", &ScopeKind::Global);

    // APIs first: products refer to them.
    let mut api_ids: HashMap<String, usize> = HashMap::new();
    if let Some(apis) = root.get("apis") {
        if let Some(items) = cx.sequence(apis, "apis", "the APIs") {
            let mut prefixes: HashMap<String, usize> = HashMap::new();
            for (i, item) in items.iter().enumerate() {
                let path = join_index("apis", i);
                let api = check_api(cx, item, &path);
                if let Some(id) = &api.id {
                    if let Some(first) = api_ids.get(id) {
                        cx.error(
                            &join_key(&path, "id"),
                            format!("duplicate API id `{id}` (first used by apis[{first}])"),
                        );
                    } else {
                        api_ids.insert(id.clone(), i);
                    }
                }
                if let Some(prefix) = &api.prefix {
                    if let Some(first) = prefixes.get(prefix) {
                        let shown = if prefix.is_empty() { "/" } else { prefix };
                        cx.error(
                            &join_key(&path, "path"),
                            format!("duplicate API path `{shown}` (already used by apis[{first}])"),
                        );
                    } else {
                        prefixes.insert(prefix.clone(), i);
                    }
                }
                checked.apis.push(api);
            }
        }
    }

    if let Some(products) = root.get("products") {
        if let Some(items) = cx.sequence(products, "products", "the products") {
            let mut ids: HashMap<String, usize> = HashMap::new();
            for (i, item) in items.iter().enumerate() {
                let path = join_index("products", i);
                let product = check_product(cx, item, &path, &api_ids);
                if let Some(id) = &product.id {
                    if let Some(first) = ids.get(id) {
                        cx.error(
                            &join_key(&path, "id"),
                            format!(
                                "duplicate product id `{id}` (first used by products[{first}])"
                            ),
                        );
                    } else {
                        ids.insert(id.clone(), i);
                    }
                }
                checked.products.push(product);
            }
        }
    }
    checked
}

fn check_settings(cx: &mut Cx<'_>, value: &Value) -> (Limits, Vec<ipnet::IpNet>) {
    let mut limits = Limits::default();
    let mut trusted = Vec::new();
    let path = "settings";
    let Some(map) = cx.mapping(
        value,
        path,
        "the settings",
        &[
            "max_request_body",
            "max_request_headers",
            "cache_max_bytes",
            "trusted_proxies",
        ],
    ) else {
        return (limits, trusted);
    };
    if let Some(size) = cx.optional::<ByteSize>(map, path, "max_request_body") {
        match parse_byte_size(&size) {
            Ok(bytes) => limits.max_request_body = bytes,
            Err(message) => cx.error(&join_key(path, "max_request_body"), message),
        }
    }
    if let Some(size) = cx.optional::<ByteSize>(map, path, "max_request_headers") {
        let field = join_key(path, "max_request_headers");
        match parse_byte_size(&size) {
            Ok(0) => cx.error(&field, "must be greater than zero"),
            Ok(bytes) => match usize::try_from(bytes) {
                Ok(bytes) => limits.max_request_headers = bytes,
                Err(_) => cx.error(&field, "too large"),
            },
            Err(message) => cx.error(&field, message),
        }
    }
    if let Some(size) = cx.optional::<ByteSize>(map, path, "cache_max_bytes") {
        let field = join_key(path, "cache_max_bytes");
        match parse_byte_size(&size) {
            Ok(bytes) if bytes < 64 * 1024 => cx.error(&field, "must be at least 64KiB"),
            Ok(bytes) => limits.cache_max_bytes = bytes,
            Err(message) => cx.error(&field, message),
        }
    }
    if let Some(list) = cx.optional::<Vec<String>>(map, path, "trusted_proxies") {
        let field = join_key(path, "trusted_proxies");
        for (i, text) in list.iter().enumerate() {
            match policy::parse_network(text.trim()) {
                Ok(net) => trusted.push(net),
                Err(message) => cx.error(&join_index(&field, i), message),
            }
        }
    }
    (limits, trusted)
}

fn check_product(
    cx: &mut Cx<'_>,
    value: &Value,
    path: &str,
    api_ids: &HashMap<String, usize>,
) -> CheckedProduct {
    let mut product = CheckedProduct {
        id: None,
        apis: Vec::new(),
        scope: Scope::default(),
    };
    let Some(map) = cx.mapping(
        value,
        path,
        "a product",
        &["id", "title", "description", "apis", "policies"],
    ) else {
        return product;
    };
    if let Some(id) = cx.required::<String>(map, path, "id") {
        cx.check_id(&id, &join_key(path, "id"));
        product.id = Some(id);
    }
    cx.optional::<String>(map, path, "title");
    cx.optional::<String>(map, path, "description");
    if let Some(apis) = map.get("apis") {
        let apis_path = join_key(path, "apis");
        if let Some(items) = cx.sequence(apis, &apis_path, "API ids") {
            for (j, item) in items.iter().enumerate() {
                let item_path = join_index(&apis_path, j);
                let Some(id) = cx.de::<String>(item, &item_path) else {
                    continue;
                };
                match api_ids.get(&id) {
                    Some(&index) if product.apis.contains(&index) => {
                        cx.error(&item_path, format!("API `{id}` is listed twice"));
                    }
                    Some(&index) => product.apis.push(index),
                    None => cx.error(&item_path, format!("unknown API `{id}`")),
                }
            }
        }
    }
    product.scope = check_policies(
        cx,
        map.get("policies"),
        &join_key(path, "policies"),
        &ScopeKind::Product,
    );
    product
}

fn check_api(cx: &mut Cx<'_>, value: &Value, path: &str) -> CheckedApi {
    let mut api = CheckedApi {
        id: None,
        prefix: None,
        subscription_required: true,
        protocols: (true, true),
        max_request_body: None,
        key_header: None,
        key_query: String::new(),
        upstream: None,
        scope: Scope::default(),
        operations: Vec::new(),
    };
    let Some(map) = cx.mapping(
        value,
        path,
        "an API",
        &[
            "id",
            "title",
            "path",
            "subscription_required",
            "subscription_key",
            "protocols",
            "max_request_body",
            "upstream",
            "policies",
            "operations",
        ],
    ) else {
        return api;
    };
    if let Some(id) = cx.required::<String>(map, path, "id") {
        cx.check_id(&id, &join_key(path, "id"));
        api.id = Some(id);
    }
    cx.optional::<String>(map, path, "title");
    if let Some(text) = cx.required::<String>(map, path, "path") {
        match normalize_api_path(&text) {
            Ok(prefix) => api.prefix = Some(prefix),
            Err(message) => cx.error(&join_key(path, "path"), message),
        }
    }
    if let Some(value) = map.get("subscription_required") {
        if let Some(required) = cx.de::<bool>(value, &join_key(path, "subscription_required")) {
            api.subscription_required = required;
        }
    }
    if let Some(value) = map.get("protocols") {
        let protocols_path = join_key(path, "protocols");
        if let Some(list) = cx.de::<Vec<String>>(value, &protocols_path) {
            let (mut http, mut https) = (false, false);
            for (i, p) in list.iter().enumerate() {
                match p.as_str() {
                    "http" => http = true,
                    "https" => https = true,
                    other => cx.error(
                        &join_index(&protocols_path, i),
                        format!("unknown protocol `{other}`, expected `http` or `https`"),
                    ),
                }
            }
            if list.is_empty() {
                cx.error(
                    &protocols_path,
                    "at least one of `http`, `https` is required",
                );
            }
            api.protocols = (http, https);
        }
    }
    if let Some(size) = cx.optional::<ByteSize>(map, path, "max_request_body") {
        match parse_byte_size(&size) {
            Ok(bytes) => api.max_request_body = Some(bytes),
            Err(message) => cx.error(&join_key(path, "max_request_body"), message),
        }
    }
    let key_path = join_key(path, "subscription_key");
    let mut header = Some("Ocp-Apim-Subscription-Key".to_string());
    let mut query = Some("subscription-key".to_string());
    if let Some(value) = map.get("subscription_key") {
        match cx.mapping(
            value,
            &key_path,
            "the subscription key source",
            &["header", "query"],
        ) {
            Some(key) => {
                if let Some(h) = key.get("header") {
                    header = cx.de::<String>(h, &join_key(&key_path, "header"));
                }
                if let Some(q) = key.get("query") {
                    query = cx.de::<String>(q, &join_key(&key_path, "query"));
                }
            }
            None => (header, query) = (None, None),
        }
    }
    if let Some(header) = header {
        match HeaderName::from_bytes(header.as_bytes()) {
            Ok(name) => api.key_header = Some(name),
            Err(_) => cx.error(
                &join_key(&key_path, "header"),
                format!("`{header}` is not a valid header name"),
            ),
        }
    }
    if let Some(query) = query {
        if is_query_name(&query) {
            api.key_query = query;
        } else {
            cx.error(
                &join_key(&key_path, "query"),
                format!("`{query}` is not a valid query parameter name"),
            );
        }
    }
    match map.get("upstream") {
        Some(value) => {
            api.upstream = check_upstream(
                cx,
                value,
                &join_key(path, "upstream"),
                api.prefix.as_deref().unwrap_or_default(),
            )
        }
        None => cx.error(&join_key(path, "upstream"), "missing field `upstream`"),
    }
    api.scope = check_policies(
        cx,
        map.get("policies"),
        &join_key(path, "policies"),
        &ScopeKind::Api,
    );

    match map.get("operations") {
        None | Some(Value::Null) => {}
        Some(value) => {
            let ops_path = join_key(path, "operations");
            if let Some(items) = cx.sequence(value, &ops_path, "the operations") {
                let mut ids: HashMap<String, usize> = HashMap::new();
                let mut routes: HashMap<(String, String), usize> = HashMap::new();
                for (j, item) in items.iter().enumerate() {
                    let op_path = join_index(&ops_path, j);
                    let op = check_operation(cx, item, &op_path);
                    if let Some(id) = &op.id {
                        if let Some(first) = ids.get(id) {
                            cx.error(
                                &join_key(&op_path, "id"),
                                format!(
                                    "duplicate operation id `{id}` (first used by {ops_path}[{first}])"
                                ),
                            );
                        } else {
                            ids.insert(id.clone(), j);
                        }
                    }
                    if let (Some(method), Some(segments)) = (&op.method, &op.segments) {
                        let method = method.as_ref().map_or("*", Method::as_str).to_string();
                        let shape = template_shape(segments);
                        if let Some(first) = routes.get(&(method.clone(), shape.clone())) {
                            cx.error(
                                &op_path,
                                format!(
                                    "operation `{}` has the same method and path as {ops_path}[{first}] ({method} {})",
                                    op.id.as_deref().unwrap_or("?"),
                                    op.path
                                ),
                            );
                        } else {
                            routes.insert((method, shape), j);
                        }
                    }
                    api.operations.push(op);
                }
            }
        }
    }
    api
}

/// A template with parameter names erased (`/pets/{}`): two templates with the same shape
/// match the same paths.
fn template_shape(segments: &[PathSegment]) -> String {
    let mut shape = String::new();
    for segment in segments {
        shape.push('/');
        match segment {
            PathSegment::Literal(text) => shape.push_str(text),
            PathSegment::Param(_) => shape.push_str("{}"),
        }
    }
    shape
}

/// A query parameter name: non-empty, no `&`, `=`, `#`, `+`, whitespace or controls.
pub(crate) fn is_query_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && !matches!(c, '&' | '=' | '#' | '+'))
}

/// Normalizes an API path prefix: `/petstore/` → `/petstore`, `/` → `` (the root).
pub(crate) fn normalize_api_path(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!("the API path `{path}` must start with `/`"));
    }
    if let Some(c) = path
        .chars()
        .find(|c| matches!(c, '?' | '#' | '{' | '}' | '%') || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "the API path `{path}` must not contain `{}`",
            c.escape_debug()
        ));
    }
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    for segment in trimmed[1..].split('/') {
        if segment.is_empty() {
            return Err(format!("the API path `{path}` must not contain `//`"));
        }
        if segment == "." || segment == ".." {
            return Err(format!(
                "the API path `{path}` must not contain `.` or `..` segments"
            ));
        }
    }
    Ok(trimmed.to_string())
}

/// Checks an API's `upstream` at `path`; `prefix` is the API's public prefix.
fn check_upstream(cx: &mut Cx<'_>, value: &Value, path: &str, prefix: &str) -> Option<UpstreamDef> {
    let map = cx.mapping(
        value,
        path,
        "the upstream",
        &[
            "targets",
            "health_check",
            "timeout",
            "connect_timeout",
            "retries",
            "retry_on_status",
            "preserve_header_case",
            "http2",
            "rewrite_location",
            "tls",
            "outlier_detection",
        ],
    )?;
    let errors_before = cx.errors.len();
    let mut targets = Vec::new();
    let targets_path = join_key(path, "targets");
    match map.get("targets") {
        None => cx.error(&targets_path, "missing field `targets`"),
        Some(value) => {
            if let Some(items) = cx.sequence(value, &targets_path, "upstream targets") {
                if items.is_empty() {
                    cx.error(&targets_path, "at least one target is required");
                }
                for (i, item) in items.iter().enumerate() {
                    let item_path = join_index(&targets_path, i);
                    if let Some(target) = check_target(cx, item, &item_path) {
                        targets.push(target);
                    }
                }
                if !targets.is_empty()
                    && targets.len() == items.len()
                    && targets.iter().all(|t| t.weight == 0)
                {
                    cx.error(
                        &targets_path,
                        "every target has weight 0: at least one must take requests",
                    );
                }
            }
        }
    }
    let mut health_check = None;
    match map.get("health_check") {
        None | Some(Value::Null) => {}
        Some(value) => {
            let hc_path = join_key(path, "health_check");
            if let Some(hc) = cx.mapping(value, &hc_path, "the health check", &["path", "interval"])
            {
                let check_path = cx.required::<String>(hc, &hc_path, "path");
                if let Some(p) = &check_path {
                    if !p.starts_with('/') || p.chars().any(|c| c.is_whitespace() || c.is_control())
                    {
                        cx.error(
                            &join_key(&hc_path, "path"),
                            format!("the health check path `{p}` must start with `/` and contain no spaces"),
                        );
                    }
                }
                let interval = match cx.optional::<DurationSpec>(hc, &hc_path, "interval") {
                    Some(spec) => {
                        cx.positive_duration(&spec, &join_key(&hc_path, "interval"), ONE_DAY)
                    }
                    None => Some(Duration::from_secs(5)),
                };
                if let (Some(path), Some(interval)) = (check_path, interval) {
                    health_check = Some(HealthCheckDef { path, interval });
                }
            }
        }
    }
    let duration = |cx: &mut Cx<'_>, name: &str, default: u64| match cx
        .optional::<DurationSpec>(map, path, name)
    {
        // At most a day each: the proxy adds them up, and nothing waits longer.
        Some(spec) => cx.positive_duration(&spec, &join_key(path, name), ONE_DAY),
        None => Some(Duration::from_secs(default)),
    };
    let timeout = duration(cx, "timeout", 30);
    let connect_timeout = duration(cx, "connect_timeout", 5);
    let retries = cx.optional::<u32>(map, path, "retries").unwrap_or(1);
    let retry_on_status = retry_on_status(cx, map, path, retries);
    let preserve_header_case = cx
        .optional::<bool>(map, path, "preserve_header_case")
        .unwrap_or(false);
    let http2 = cx.optional::<bool>(map, path, "http2").unwrap_or(false);
    let rewrite_location = cx
        .optional::<bool>(map, path, "rewrite_location")
        .unwrap_or(false)
        .then(|| prefix.to_owned());
    if http2 && preserve_header_case {
        cx.error(
            &join_key(path, "preserve_header_case"),
            "HTTP/2 header names are lower case: `preserve_header_case` needs HTTP/1.1 (`http2: false`)",
        );
    }
    let tls = match map.get("tls") {
        None | Some(Value::Null) => None,
        Some(value) => tls::check(cx, value, &join_key(path, "tls"), &targets),
    };
    let outlier_detection = match map.get("outlier_detection") {
        None | Some(Value::Null) => None,
        Some(value) => outlier_detection(cx, value, &join_key(path, "outlier_detection")),
    };
    if cx.errors.len() != errors_before {
        return None;
    }
    Some(UpstreamDef {
        outlier_detection,
        http2,
        rewrite_location,
        tls,
        targets,
        health_check,
        timeout: timeout?,
        connect_timeout: connect_timeout?,
        retries,
        retry_on_status,
        preserve_header_case,
    })
}

/// `upstream.retry_on_status`: 5xx statuses, with `retries` (1 to [`MAX_STATUS_RETRIES`])
/// to spend on them.
fn retry_on_status(cx: &mut Cx<'_>, map: &Mapping, path: &str, retries: u32) -> Vec<u16> {
    let Some(statuses) = cx.optional::<Vec<u16>>(map, path, "retry_on_status") else {
        return Vec::new();
    };
    let field = join_key(path, "retry_on_status");
    for s in &statuses {
        if !(500..=599).contains(s) {
            cx.error(
                &field,
                format!("only 5xx answers can be retried, not {s}: a 4xx is the client's to fix"),
            );
        }
    }
    if !statuses.is_empty() && !(1..=MAX_STATUS_RETRIES).contains(&retries) {
        cx.error(
            &join_key(path, "retries"),
            format!(
                "with `retry_on_status`, `retries` must be between 1 and {MAX_STATUS_RETRIES}, not {retries}"
            ),
        );
    }
    let mut statuses = statuses;
    statuses.sort_unstable();
    statuses.dedup();
    statuses
}

/// `upstream.outlier_detection`: `consecutive_5xx` (1 to 1000), `ejection_time` (a
/// positive duration up to a day, default 30 s).
fn outlier_detection(cx: &mut Cx<'_>, value: &Value, path: &str) -> Option<(u32, Duration)> {
    let map = cx.mapping(
        value,
        path,
        "the outlier detection",
        &["consecutive_5xx", "ejection_time"],
    )?;
    let count = cx.required::<u32>(map, path, "consecutive_5xx");
    if let Some(n) = count.filter(|n| !(1..=1000).contains(n)) {
        cx.error(
            &join_key(path, "consecutive_5xx"),
            format!("`consecutive_5xx` must be between 1 and 1000, not {n}"),
        );
        return None;
    }
    let time = match cx.optional::<DurationSpec>(map, path, "ejection_time") {
        Some(spec) => cx.positive_duration(&spec, &join_key(path, "ejection_time"), ONE_DAY),
        None => Some(Duration::from_secs(30)),
    };
    Some((count?, time?))
}

/// Largest `weight` of a target.
const MAX_WEIGHT: u32 = 100;

/// One item of `upstream.targets`: a URL, or `{ url, weight }`.
fn check_target(cx: &mut Cx<'_>, item: &Value, path: &str) -> Option<Target> {
    let (url, weight, url_path) = match item {
        Value::Mapping(_) => {
            let map = cx.mapping(item, path, "a target", &["url", "weight"])?;
            let url = cx.required::<String>(map, path, "url");
            let weight = cx.optional::<u32>(map, path, "weight");
            if weight.is_some_and(|w| w > MAX_WEIGHT) {
                cx.error(
                    &join_key(path, "weight"),
                    format!("a weight is 0 to {MAX_WEIGHT}"),
                );
                return None;
            }
            (url?, weight.unwrap_or(1), join_key(path, "url"))
        }
        _ => (cx.de::<String>(item, path)?, 1, path.to_owned()),
    };
    match parse_target(&url) {
        Ok(target) => Some(Target { weight, ..target }),
        Err(message) => {
            cx.error(&url_path, message);
            None
        }
    }
}

/// Parses an upstream target: `http://host[:port][/base]` or `https://...`.
pub(crate) fn parse_target(text: &str) -> Result<Target, String> {
    let bad = |why: &str| format!("invalid target `{text}`: {why}");
    let lower = text.to_ascii_lowercase();
    let (tls, rest) = if lower.starts_with("http://") {
        (false, &text[7..])
    } else if lower.starts_with("https://") {
        (true, &text[8..])
    } else {
        return Err(bad(
            "expected `http://host[:port][/base-path]` or `https://...`",
        ));
    };
    if rest.contains(['?', '#']) {
        return Err(bad("a target has no query or fragment"));
    }
    if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("a target contains no spaces"));
    }
    let (authority, base) = match rest.find('/') {
        Some(pos) => (&rest[..pos], &rest[pos..]),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err(bad("user information (`user@`) is not allowed"));
    }
    let (host, port) = if let Some(after) = authority.strip_prefix('[') {
        let Some(end) = after.find(']') else {
            return Err(bad("unclosed `[` in the IPv6 address"));
        };
        let host = &after[..end];
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(bad("invalid IPv6 address"));
        }
        let port = match &after[end + 1..] {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| bad("expected `:port` after `]`"))?,
            ),
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(bad("the host is missing"));
    }
    if !authority.starts_with('[')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err(bad("the host has invalid characters"));
    }
    let port = match port {
        None => {
            if tls {
                443
            } else {
                80
            }
        }
        Some(p) => match p.parse::<u16>() {
            Ok(port) if port > 0 && p.bytes().all(|b| b.is_ascii_digit()) => port,
            _ => return Err(bad("the port must be a number from 1 to 65535")),
        },
    };
    let base_path = base.trim_end_matches('/');
    if base_path.contains("//") {
        return Err(bad("the base path must not contain `//`"));
    }
    Ok(Target {
        host: host.to_string(),
        port,
        tls,
        base_path: base_path.to_string(),
        weight: 1,
    })
}

fn check_operation(cx: &mut Cx<'_>, value: &Value, path: &str) -> CheckedOperation {
    let mut op = CheckedOperation {
        id: None,
        method: None,
        path: String::new(),
        segments: None,
        scope: Scope::default(),
    };
    let Some(map) = cx.mapping(
        value,
        path,
        "an operation",
        &["id", "method", "path", "policies"],
    ) else {
        return op;
    };
    if let Some(id) = cx.required::<String>(map, path, "id") {
        cx.check_id(&id, &join_key(path, "id"));
        op.id = Some(id);
    }
    if let Some(method) = cx.required::<String>(map, path, "method") {
        match parse_method(&method) {
            Ok(m) => op.method = Some(m),
            Err(message) => cx.error(&join_key(path, "method"), message),
        }
    }
    if let Some(template) = cx.required::<String>(map, path, "path") {
        match parse_op_path(&template) {
            Ok(segments) => op.segments = Some(segments),
            Err(message) => cx.error(&join_key(path, "path"), message),
        }
        op.path = template;
    }
    let params = op.segments.as_ref().map(|segments| {
        segments
            .iter()
            .filter_map(|s| match s {
                PathSegment::Param(name) => Some(name.clone()),
                PathSegment::Literal(_) => None,
            })
            .collect()
    });
    op.scope = check_policies(
        cx,
        map.get("policies"),
        &join_key(path, "policies"),
        &ScopeKind::Operation { params },
    );
    op
}

/// An HTTP method token, upper-cased; `*` (any method) is `None`.
pub(crate) fn parse_method(text: &str) -> Result<Option<Method>, String> {
    if text == "*" {
        return Ok(None);
    }
    if text.is_empty() || !text.bytes().all(is_tchar) {
        return Err(format!(
            "invalid method `{text}`: expected an HTTP method such as `GET`, or `*` for any"
        ));
    }
    Method::from_bytes(text.to_ascii_uppercase().as_bytes())
        .map(Some)
        .map_err(|_| format!("invalid method `{text}`"))
}

/// RFC 9110 token character.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses an operation path template (`/pets/{id}`); `/` is the root (no segments).
pub fn parse_op_path(path: &str) -> Result<Vec<PathSegment>, String> {
    if !path.starts_with('/') {
        return Err(format!("the operation path `{path}` must start with `/`"));
    }
    if let Some(c) = path
        .chars()
        .find(|c| matches!(c, '?' | '#' | '%') || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "the operation path `{path}` must not contain `{}`",
            c.escape_debug()
        ));
    }
    if path == "/" {
        return Ok(Vec::new());
    }
    let mut segments = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    for segment in path[1..].split('/') {
        if segment.is_empty() {
            return Err(format!(
                "the operation path `{path}` has an empty segment (`//` or a trailing `/`)"
            ));
        }
        if segment == "." || segment == ".." {
            return Err(format!(
                "the operation path `{path}` must not contain `.` or `..` segments"
            ));
        }
        if segment.contains(['{', '}']) {
            let name = segment
                .strip_prefix('{')
                .and_then(|s| s.strip_suffix('}'))
                .filter(|name| !name.contains(['{', '}']));
            let Some(name) = name else {
                return Err(format!(
                    "the operation path `{path}`: a parameter must be a whole segment, like `/{{id}}`"
                ));
            };
            if !crate::template::is_param_name(name) {
                return Err(format!(
                    "the operation path `{path}`: invalid parameter name `{name}` (letters, digits and `_`, not starting with a digit)"
                ));
            }
            if names.contains(&name) {
                return Err(format!(
                    "the operation path `{path}`: parameter `{name}` appears twice"
                ));
            }
            names.push(name);
            segments.push(PathSegment::Param(name.to_string()));
        } else {
            segments.push(PathSegment::Literal(segment.to_string()));
        }
    }
    Ok(segments)
}

/// Checks a scope's `policies` (the value of the `policies` key at `path`).
fn check_policies(cx: &mut Cx<'_>, value: Option<&Value>, path: &str, kind: &ScopeKind) -> Scope {
    let mut scope = Scope::default();
    let Some(value) = value else {
        return scope;
    };
    let Some(map) = cx.mapping(value, path, "policy sections", &SECTIONS) else {
        return scope;
    };
    for (slot, section) in SECTIONS.iter().enumerate() {
        let entries = match map.get(*section) {
            None | Some(Value::Null) => continue,
            Some(entries) => entries,
        };
        let section_path = join_key(path, section);
        let Some(items) = cx.sequence(entries, &section_path, "a list of policies") else {
            continue;
        };
        let mut checked = Vec::with_capacity(items.len());
        let mut base_seen = false;
        for (i, item) in items.iter().enumerate() {
            let item_path = join_index(&section_path, i);
            if let Some(entry) = policy::check_entry(cx, item, &item_path, kind, &mut base_seen) {
                checked.push(entry);
            }
        }
        scope.sections[slot] = Some(checked);
    }
    scope
}
