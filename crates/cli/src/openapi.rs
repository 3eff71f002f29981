//! `tollgate import-openapi SPEC`: an OpenAPI description (3.x, or Swagger 2.0; YAML or
//! JSON) turned into a Tollgate API with one operation per path and method, printed as a
//! policy file (or, with `--api-only`, as the API object that `PUT /apis/{id}` takes and
//! that goes under `apis:`). What is printed has passed `tollgate validate`.
//!
//! - The API's id is `--id`, else the slug of `info.title` (`api` when that is empty); its
//!   path `--path`, else `/ID`; its upstream `--upstream`, else the first server
//!   (`servers[0].url` with its variables' defaults, or Swagger's
//!   `schemes[0]://host/basePath`), whose path becomes the target's base path. The first `apiKey` scheme of the top-level `security`, in a
//!   header or the query, becomes where the API reads its subscription key.
//! - An operation's id is the kebab-case slug of its `operationId`, else `METHOD-PATH`;
//!   repeated ids get `-2`, `-3`, ... A path parameter whose name Tollgate does not take
//!   (`{pet-id}`) is renamed (`{pet_id}`); an operation whose path Tollgate cannot match
//!   (a parameter inside a segment, like `/files/{name}.json`) is left out with a warning
//!   on standard error.
//! - With `--validate-requests`, an operation whose request body is JSON (only) and has a
//!   schema gets a `validate-content` policy with that schema, its references to the
//!   spec's schemas (`#/components/schemas/...`, Swagger's `#/definitions/...`) carried
//!   along under `$defs`, OpenAPI 3.0's dialect turned into JSON Schema (`nullable`,
//!   boolean `exclusiveMinimum`/`exclusiveMaximum`), and `readOnly` properties no longer
//!   required (they are for answers). A body Tollgate cannot validate that way is named on
//!   standard error.

use serde_yaml::{Mapping, Value};
use std::path::Path;
use std::process::ExitCode;

/// The HTTP methods of an OpenAPI path item, in the order the spec lists them.
const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// What `import-openapi` was asked for.
#[derive(Debug)]
pub(crate) struct Import<'a> {
    pub spec: &'a Path,
    pub id: Option<&'a str>,
    pub path: Option<&'a str>,
    pub upstream: Option<&'a str>,
    pub api_only: bool,
    pub validate_requests: bool,
}

/// Runs the verb: 0 printed, 1 the spec could not be read or turned into a valid API.
pub(crate) fn run(import: &Import<'_>) -> ExitCode {
    let text = match std::fs::read_to_string(import.spec) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: cannot read: {e}", import.spec.display());
            return ExitCode::from(1);
        }
    };
    match convert(&text, import) {
        Ok((yaml, warnings)) => {
            for w in warnings {
                eprintln!("{}: {w}", import.spec.display());
            }
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(problems) => {
            eprintln!("{}: {} problem(s)", import.spec.display(), problems.len());
            for p in problems {
                eprintln!("  {p}");
            }
            ExitCode::from(1)
        }
    }
}

/// The policy text (or API object) for `text`, and the warnings about what was left out.
fn convert(text: &str, import: &Import<'_>) -> Result<(String, Vec<String>), Vec<String>> {
    let spec: Value =
        serde_yaml::from_str(text).map_err(|e| vec![format!("not YAML or JSON: {e}")])?;
    let swagger = spec.get("swagger").is_some();
    if !swagger && spec.get("openapi").is_none() {
        return Err(vec![
            "neither `openapi: 3.x` nor `swagger: \"2.0\"`: not an OpenAPI description".into(),
        ]);
    }
    let title = spec
        .get("info")
        .and_then(|i| i.get("title"))
        .and_then(Value::as_str);
    let id = match import.id {
        Some(id) => id.to_owned(),
        None => title
            .map(slug)
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "api".to_owned()),
    };
    let path = import
        .path
        .map_or_else(|| format!("/{id}"), |p| p.to_owned());
    let upstream = match import.upstream {
        Some(u) => u.to_owned(),
        None => server_url(&spec, swagger)?,
    };
    let mut warnings = Vec::new();
    let key = key_source(&spec, swagger, &mut warnings);
    // Where the API reads subscription keys (what `key` says, else the defaults): removed
    // before policies run, so never a parameter to validate.
    let key_header = key
        .as_ref()
        .and_then(|k| k.get("header"))
        .and_then(Value::as_str)
        .unwrap_or("Ocp-Apim-Subscription-Key")
        .to_owned();
    let key_query = key
        .as_ref()
        .and_then(|k| k.get("query"))
        .and_then(Value::as_str)
        .unwrap_or("subscription-key")
        .to_owned();
    let mut operations = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    if let Some(paths) = spec.get("paths").and_then(Value::as_mapping) {
        for (template, item) in paths {
            let Some(template) = template.as_str() else {
                continue;
            };
            let Some(item) = item.as_mapping() else {
                continue;
            };
            for (key, op) in item {
                let Some(method) = key
                    .as_str()
                    .filter(|m| METHODS.contains(&m.to_ascii_lowercase().as_str()))
                else {
                    continue;
                };
                let method = method.to_ascii_uppercase();
                let tollgate_path = match op_path(template) {
                    Ok(p) => p,
                    Err(why) => {
                        warnings.push(format!("{method} {template} left out: {why}"));
                        continue;
                    }
                };
                let wanted = op
                    .get("operationId")
                    .and_then(Value::as_str)
                    .map(slug)
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| slug(&format!("{method}-{template}")));
                let op_id = unique(&wanted, &ids);
                ids.push(op_id.clone());
                let mut o = Mapping::new();
                o.insert("id".into(), op_id.into());
                o.insert("method".into(), method.as_str().into());
                o.insert("path".into(), tollgate_path.into());
                if import.validate_requests {
                    let mut inbound = Vec::new();
                    let skip = (key_header.as_str(), key_query.as_str());
                    let params = parameters(&spec, item, op, swagger, skip, &mut |why| {
                        warnings.push(format!("{method} {template}: {why}"));
                    });
                    if let Some(params) = params {
                        inbound.push(policy("validate-parameters", params));
                    }
                    let schema = body_schema(&spec, op, swagger)
                        .and_then(|s| s.map(|s| json_schema(&spec, s, swagger)).transpose());
                    match schema {
                        Ok(Some(schema)) => {
                            let mut fields = Mapping::new();
                            fields.insert("schema".into(), schema);
                            inbound.push(policy("validate-content", fields));
                        }
                        Ok(None) => {}
                        Err(why) => warnings.push(format!(
                            "{method} {template}: request body not validated: {why}"
                        )),
                    }
                    if !inbound.is_empty() {
                        let mut sections = Mapping::new();
                        sections.insert("inbound".into(), Value::Sequence(inbound));
                        o.insert("policies".into(), Value::Mapping(sections));
                    }
                }
                operations.push(Value::Mapping(o));
            }
        }
    }
    if operations.is_empty() {
        return Err(vec![
            "no operation Tollgate can route (`paths` is empty)".into()
        ]);
    }
    let mut api = Mapping::new();
    api.insert("id".into(), id.into());
    if let Some(title) = title {
        api.insert("title".into(), title.into());
    }
    api.insert("path".into(), path.into());
    if let Some(source) = key {
        api.insert("subscription_key".into(), Value::Mapping(source));
    }
    let mut up = Mapping::new();
    up.insert("targets".into(), Value::Sequence(vec![upstream.into()]));
    api.insert("upstream".into(), Value::Mapping(up));
    api.insert("operations".into(), Value::Sequence(operations));
    let mut file = Mapping::new();
    file.insert("version".into(), 1.into());
    file.insert(
        "apis".into(),
        Value::Sequence(vec![Value::Mapping(api.clone())]),
    );
    let file_text = serde_yaml::to_string(&file).map_err(|e| vec![e.to_string()])?;
    // What is printed must pass `tollgate validate`.
    tollgate_config::parse_and_compile(&file_text)
        .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let out = if import.api_only {
        serde_yaml::to_string(&api).map_err(|e| vec![e.to_string()])?
    } else {
        file_text
    };
    Ok((out, warnings))
}

/// Where the spec's callers send their API key, as the API's `subscription_key`: the
/// first `apiKey` scheme of the top-level `security` in a header or the query. Schemes
/// Tollgate's subscription keys cannot stand for (HTTP bearer, OAuth 2, OpenID Connect,
/// keys in cookies) get a warning.
fn key_source(spec: &Value, swagger: bool, warnings: &mut Vec<String>) -> Option<Mapping> {
    let schemes = if swagger {
        spec.get("securityDefinitions")
    } else {
        spec.get("components")
            .and_then(|c| c.get("securitySchemes"))
    }
    .and_then(Value::as_mapping)?;
    let required = spec.get("security").and_then(Value::as_sequence)?;
    let mut source = None;
    for name in required
        .iter()
        .filter_map(Value::as_mapping)
        .flat_map(|m| m.keys())
        .filter_map(Value::as_str)
    {
        let Some(scheme) = schemes.get(name) else {
            continue;
        };
        let kind = scheme.get("type").and_then(Value::as_str).unwrap_or("");
        let place = scheme.get("in").and_then(Value::as_str).unwrap_or("");
        let key = scheme.get("name").and_then(Value::as_str);
        match (kind, place, key) {
            ("apiKey", "header" | "query", Some(key)) if source.is_none() => {
                let mut m = Mapping::new();
                m.insert(place.into(), key.into());
                source = Some(m);
            }
            ("apiKey", "header" | "query", Some(_)) => {}
            ("oauth2" | "openIdConnect" | "http", _, _) => warnings.push(format!(
                "security scheme `{name}` ({kind}): not imported; add a validate-jwt policy \
                 (docs/jwt.md) or let subscription keys stand for it"
            )),
            _ => warnings.push(format!(
                "security scheme `{name}` ({kind}{}): not imported",
                if place.is_empty() {
                    String::new()
                } else {
                    format!(" in {place}")
                }
            )),
        }
    }
    source
}

/// A policy entry: `kind: { fields }`.
fn policy(kind: &str, fields: Mapping) -> Value {
    let mut entry = Mapping::new();
    entry.insert(kind.into(), Value::Mapping(fields));
    Value::Mapping(entry)
}

/// Swagger 2.0's schema words that a non-body parameter carries itself.
const SWAGGER_PARAM_SCHEMA: &[&str] = &[
    "type",
    "format",
    "items",
    "enum",
    "default",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "uniqueItems",
    "multipleOf",
];

/// The fields of a `validate-parameters` for the operation's query, header and path
/// parameters (the path item's and its own, its own winning), each with its schema;
/// `None` when it has none. A parameter that cannot be validated is reported through
/// `warn` and left out. `skip`: the subscription key's header and query parameter.
fn parameters(
    spec: &Value,
    item: &Mapping,
    op: &Value,
    swagger: bool,
    skip: (&str, &str),
    warn: &mut dyn FnMut(String),
) -> Option<Mapping> {
    let listed = item
        .get("parameters")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .chain(
            op.get("parameters")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten(),
        );
    // By (place, name); a later one (the operation's) replaces an earlier one.
    let mut by_place: [Mapping; 3] = Default::default();
    for param in listed {
        let param = match resolve(spec, param) {
            Ok(p) => p,
            Err(why) => {
                warn(format!("a parameter is not validated: {why}"));
                continue;
            }
        };
        let (Some(name), Some(place)) = (
            param.get("name").and_then(Value::as_str),
            param.get("in").and_then(Value::as_str),
        ) else {
            continue;
        };
        let (slot, name) = match place {
            "query" if name != skip.1 => (0, name.to_owned()),
            // OpenAPI: these three header parameters "SHALL be ignored".
            "header"
                if !["accept", "content-type", "authorization"]
                    .contains(&name.to_ascii_lowercase().as_str())
                    && !name.eq_ignore_ascii_case(skip.0) =>
            {
                (1, name.to_owned())
            }
            "path" => (2, template_name(name)),
            "query" | "header" | "body" => continue,
            other => {
                warn(format!("parameter `{name}` in {other} is not validated"));
                continue;
            }
        };
        let schema = if swagger {
            let mut s = Mapping::new();
            for word in SWAGGER_PARAM_SCHEMA {
                if let Some(v) = param.get(*word) {
                    s.insert((*word).into(), v.clone());
                }
            }
            // `collectionFormat` other than `csv` (the comma-separated default) is not
            // how Tollgate reads lists.
            let format = param.get("collectionFormat").and_then(Value::as_str);
            if format.is_some_and(|f| f != "csv" && f != "multi") {
                warn(format!(
                    "parameter `{name}` (collectionFormat {}) is not validated",
                    format.unwrap_or("")
                ));
                continue;
            }
            (!s.is_empty()).then_some(Value::Mapping(s))
        } else {
            let style = param.get("style").and_then(Value::as_str);
            if style.is_some_and(|s| s != "form" && s != "simple") {
                warn(format!(
                    "parameter `{name}` (style {}) is not validated",
                    style.unwrap_or("")
                ));
                continue;
            }
            // The schema itself, not a reference to it: its `type` says how the text is
            // read.
            match param.get("schema").map(|s| resolve(spec, s)).transpose() {
                Ok(s) => s.cloned(),
                Err(why) => {
                    warn(format!("parameter `{name}` is not validated: {why}"));
                    continue;
                }
            }
        };
        if schema
            .as_ref()
            .and_then(|s| s.get("type"))
            .and_then(Value::as_str)
            == Some("object")
        {
            warn(format!(
                "parameter `{name}` (an object) is not validated: only numbers, booleans, \
                 strings and lists of them are read from parameters"
            ));
            continue;
        }
        let mut spec_fields = Mapping::new();
        if param.get("required").and_then(Value::as_bool) == Some(true) && place != "path" {
            spec_fields.insert("required".into(), true.into());
        }
        if let Some(schema) = schema {
            match json_schema(spec, &schema, swagger) {
                Ok(s) => {
                    spec_fields.insert("schema".into(), s);
                }
                Err(why) => {
                    warn(format!("parameter `{name}` is not validated: {why}"));
                    continue;
                }
            }
        }
        by_place[slot].insert(name.into(), Value::Mapping(spec_fields));
    }
    let mut fields = Mapping::new();
    for (key, params) in ["query", "headers", "path"].into_iter().zip(by_place) {
        if !params.is_empty() {
            fields.insert(key.into(), Value::Mapping(params));
        }
    }
    (!fields.is_empty()).then_some(fields)
}

/// `value`, or what its `$ref` names in `spec` when it is a local reference.
fn resolve<'a>(spec: &'a Value, value: &'a Value) -> Result<&'a Value, String> {
    let Some(target) = value.get("$ref").and_then(Value::as_str) else {
        return Ok(value);
    };
    let mut at = spec;
    for part in target
        .strip_prefix("#/")
        .ok_or_else(|| format!("`$ref: {target}` points outside the spec"))?
        .split('/')
    {
        let part = part.replace("~1", "/").replace("~0", "~");
        at = at
            .get(part.as_str())
            .ok_or_else(|| format!("`$ref: {target}` names nothing in the spec"))?;
    }
    Ok(at)
}

/// Whether a media type is JSON (`application/json`, `*/*+json`, parameters ignored).
fn is_json(media_type: &str) -> bool {
    let essence = media_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

/// The schema of the operation's request body, when it has one and takes JSON only;
/// `Err` when it has one that cannot be validated as JSON.
fn body_schema<'a>(
    spec: &'a Value,
    op: &'a Value,
    swagger: bool,
) -> Result<Option<&'a Value>, String> {
    if swagger {
        let mut schema = None;
        for param in op
            .get("parameters")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            let param = resolve(spec, param)?;
            if param.get("in").and_then(Value::as_str) == Some("body") {
                schema = param.get("schema");
            }
        }
        let Some(schema) = schema else {
            return Ok(None);
        };
        let consumes = op
            .get("consumes")
            .or_else(|| spec.get("consumes"))
            .and_then(Value::as_sequence);
        let others: Vec<&str> = consumes
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|t| !is_json(t))
            .collect();
        if !others.is_empty() {
            return Err(format!("it also takes {}", others.join(", ")));
        }
        return Ok(Some(schema));
    }
    let Some(body) = op.get("requestBody") else {
        return Ok(None);
    };
    let body = resolve(spec, body)?;
    let Some(content) = body.get("content").and_then(Value::as_mapping) else {
        return Ok(None);
    };
    let types: Vec<&str> = content.keys().filter_map(Value::as_str).collect();
    let others: Vec<&str> = types.iter().copied().filter(|t| !is_json(t)).collect();
    if !others.is_empty() {
        return Err(format!("it also takes {}", others.join(", ")));
    }
    Ok(types
        .first()
        .and_then(|t| content.get(*t))
        .and_then(|media| media.get("schema")))
}

/// The keys of a schema whose values are data, not schemas: not looked into.
const DATA_KEYS: &[&str] = &[
    "example",
    "examples",
    "default",
    "enum",
    "const",
    "x-example",
];

/// The keys of a schema whose values map names to schemas.
const NAMED_SCHEMAS: &[&str] = &[
    "properties",
    "patternProperties",
    "dependentSchemas",
    "$defs",
    "definitions",
];

/// `schema` as a self-contained JSON Schema: references to the spec's schemas rewritten
/// to `#/$defs/NAME`, the schemas they name (and those these name) copied under `$defs`,
/// OpenAPI 3.0 and Swagger's dialect turned into JSON Schema, `readOnly` properties
/// dropped from `required`. Checked as `validate-content` will compile it.
fn json_schema(spec: &Value, schema: &Value, swagger: bool) -> Result<Value, String> {
    let prefix = if swagger {
        "#/definitions/"
    } else {
        "#/components/schemas/"
    };
    let components = if swagger {
        spec.get("definitions")
    } else {
        spec.get("components").and_then(|c| c.get("schemas"))
    };
    // OpenAPI 3.1 schemas are JSON Schema 2020-12 already.
    let dialect_30 = swagger
        || spec
            .get("openapi")
            .and_then(Value::as_str)
            .is_some_and(|v| v.starts_with("3.0"));
    let mut wanted: Vec<String> = Vec::new();
    let mut root = schema.clone();
    rewrite(&mut root, prefix, dialect_30, &mut wanted)?;
    let mut defs = Mapping::new();
    let mut next = 0;
    while next < wanted.len() {
        let name = wanted[next].clone();
        next += 1;
        let mut def = components
            .and_then(|c| c.get(name.as_str()))
            .ok_or_else(|| format!("`$ref: {prefix}{name}` names no schema in the spec"))?
            .clone();
        rewrite(&mut def, prefix, dialect_30, &mut wanted)?;
        defs.insert(name.into(), def);
    }
    if !defs.is_empty() {
        match &mut root {
            Value::Mapping(m) => {
                m.insert("$defs".into(), Value::Mapping(defs));
            }
            _ => return Err("the body's schema is not a mapping".into()),
        }
    }
    let json = serde_json::to_value(&root).map_err(|e| format!("not JSON: {e}"))?;
    tollgate_config::validate::compile_json_schema(&json)?;
    Ok(root)
}

/// Rewrites one schema in place (see [`json_schema`]); the names of the spec's schemas it
/// refers to are added to `wanted`.
fn rewrite(
    value: &mut Value,
    prefix: &str,
    dialect_30: bool,
    wanted: &mut Vec<String>,
) -> Result<(), String> {
    match value {
        Value::Sequence(items) => {
            for item in items {
                rewrite(item, prefix, dialect_30, wanted)?;
            }
        }
        Value::Mapping(m) => {
            if let Some(Value::String(target)) = m.get_mut("$ref") {
                let name = target
                    .strip_prefix(prefix)
                    .filter(|n| !n.contains('/'))
                    .ok_or_else(|| format!("`$ref: {target}` is not one of the spec's schemas"))?
                    .to_owned();
                *target = format!("#/$defs/{name}");
                if !wanted.contains(&name) {
                    wanted.push(name);
                }
            }
            if dialect_30 {
                dialect(m);
            }
            // `readOnly` properties are sent in answers only (OpenAPI: `required` applies
            // to them in answers only).
            let read_only: Vec<Value> = m
                .get("properties")
                .and_then(Value::as_mapping)
                .into_iter()
                .flatten()
                .filter(|(_, p)| p.get("readOnly").and_then(Value::as_bool) == Some(true))
                .map(|(name, _)| name.clone())
                .collect();
            if let Some(Value::Sequence(required)) = m.get_mut("required") {
                required.retain(|name| !read_only.contains(name));
            }
            for (key, child) in m.iter_mut() {
                let key = key.as_str().unwrap_or("");
                if DATA_KEYS.contains(&key) {
                    continue;
                }
                match child {
                    // Names (of properties, ...) to schemas: the schemas.
                    Value::Mapping(named) if NAMED_SCHEMAS.contains(&key) => {
                        for schema in named.values_mut() {
                            rewrite(schema, prefix, dialect_30, wanted)?;
                        }
                    }
                    child => rewrite(child, prefix, dialect_30, wanted)?,
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// OpenAPI 3.0's (and Swagger's) words that JSON Schema 2020-12 says otherwise:
/// `nullable: true` (Swagger: `x-nullable`) becomes `null` among the types (and the
/// `enum`), a boolean `exclusiveMinimum`/`exclusiveMaximum` the bound itself.
fn dialect(m: &mut Mapping) {
    let mut nullable = false;
    for word in ["nullable", "x-nullable"] {
        if let Some(Value::Bool(flag)) = m.get(word) {
            nullable |= *flag;
            m.remove(word);
        }
    }
    if nullable {
        if let Some(t) = m.get_mut("type") {
            if let Value::String(one) = t {
                *t = Value::Sequence(vec![Value::String(one.clone()), "null".into()]);
            }
        }
        if let Some(Value::Sequence(values)) = m.get_mut("enum") {
            if !values.contains(&Value::Null) {
                values.push(Value::Null);
            }
        }
    }
    for (exclusive, bound) in [
        ("exclusiveMinimum", "minimum"),
        ("exclusiveMaximum", "maximum"),
    ] {
        if let Some(Value::Bool(flag)) = m.get(exclusive).cloned() {
            m.remove(exclusive);
            if flag {
                if let Some(b) = m.remove(bound) {
                    m.insert(exclusive.into(), b);
                }
            }
        }
    }
}

/// The first server's URL: OpenAPI 3 `servers[0]` (variables replaced by their defaults),
/// or Swagger 2.0's `schemes[0]://host basePath`.
fn server_url(spec: &Value, swagger: bool) -> Result<String, Vec<String>> {
    let missing =
        || vec!["no absolute server URL in the spec: give the upstream with --upstream URL".into()];
    let url = if swagger {
        let host = spec
            .get("host")
            .and_then(Value::as_str)
            .ok_or_else(missing)?;
        let scheme = spec
            .get("schemes")
            .and_then(Value::as_sequence)
            .and_then(|s| s.first())
            .and_then(Value::as_str)
            .unwrap_or("https");
        let base = spec.get("basePath").and_then(Value::as_str).unwrap_or("");
        format!("{scheme}://{host}{base}")
    } else {
        let server = spec
            .get("servers")
            .and_then(Value::as_sequence)
            .and_then(|s| s.first())
            .ok_or_else(missing)?;
        let mut url = server
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(missing)?
            .to_owned();
        if let Some(vars) = server.get("variables").and_then(Value::as_mapping) {
            for (name, var) in vars {
                if let (Some(name), Some(default)) = (
                    name.as_str(),
                    var.get("default").and_then(|d| match d {
                        Value::String(s) => Some(s.clone()),
                        Value::Number(n) => Some(n.to_string()),
                        _ => None,
                    }),
                ) {
                    url = url.replace(&format!("{{{name}}}"), &default);
                }
            }
        }
        url
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(missing());
    }
    Ok(url)
}

/// An OpenAPI path template as a Tollgate operation path: parameters renamed where their
/// names are not `[A-Za-z_][A-Za-z0-9_]*`; `Err` says why it cannot be routed.
fn op_path(template: &str) -> Result<String, String> {
    let renamed: Vec<String> = template
        .split('/')
        .map(
            |segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) if !name.contains(['{', '}']) => format!("{{{}}}", template_name(name)),
                _ => segment.to_owned(),
            },
        )
        .collect();
    let mut path = renamed.join("/");
    if path.len() > 1 && path.ends_with('/') {
        path.pop();
    }
    tollgate_config::validate::parse_op_path(&path).map(|_| path)
}

/// A path parameter's name as Tollgate takes it: `[A-Za-z0-9_]`, not starting with a digit
/// (`pet-id` → `pet_id`).
fn template_name(name: &str) -> String {
    let mut n: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if n.is_empty() || n.starts_with(|c: char| c.is_ascii_digit()) {
        n.insert(0, '_');
    }
    n
}

/// `getPetById` → `get-pet-by-id`, `Pet Store API` → `pet-store-api`: `[a-z0-9-]`, no
/// leading, trailing or double `-`, at most 64 characters.
fn slug(text: &str) -> String {
    let mut out = String::new();
    let mut prev_lower = false;
    for c in text.chars() {
        if c.is_ascii_uppercase() && prev_lower {
            out.push('-');
        }
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
            prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        } else {
            if !out.ends_with('-') {
                out.push('-');
            }
            prev_lower = false;
        }
    }
    let trimmed = out.trim_matches('-');
    let mut s: String = trimmed.chars().take(64).collect();
    while s.ends_with('-') {
        s.pop();
    }
    s
}

/// `wanted`, or `wanted-2`, `wanted-3`, ... when taken (kept within 64 characters).
fn unique(wanted: &str, taken: &[String]) -> String {
    if !taken.iter().any(|t| t == wanted) {
        return wanted.to_owned();
    }
    (2..)
        .map(|n| {
            let suffix = format!("-{n}");
            let keep = wanted.len().min(64 - suffix.len());
            format!("{}{suffix}", wanted[..keep].trim_end_matches('-'))
        })
        .find(|candidate| !taken.iter().any(|t| t == candidate))
        .expect("some suffix is free")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_ids_and_paths() {
        assert_eq!(slug("getPetById"), "get-pet-by-id");
        assert_eq!(
            slug("Swagger Petstore - OpenAPI 3.0"),
            "swagger-petstore-open-api-3-0"
        );
        assert_eq!(slug("GET-/pets/{petId}"), "get-pets-pet-id");
        assert_eq!(slug(&"x".repeat(80)).len(), 64);
        assert!(tollgate_config::validate::is_id(&slug("__Weird__ NAME!!")));
        let taken = vec!["a".to_owned(), "a-2".to_owned()];
        assert_eq!(unique("a", &taken), "a-3");
        assert_eq!(unique("b", &taken), "b");
        assert_eq!(unique(&"y".repeat(64), &["y".repeat(64)]).len(), 64);
        assert_eq!(
            op_path("/pets/{pet-id}/photos/").unwrap(),
            "/pets/{pet_id}/photos"
        );
        assert_eq!(op_path("/v/{1st}").unwrap(), "/v/{_1st}");
        assert!(op_path("/files/{name}.json").is_err());
        assert_eq!(op_path("/").unwrap(), "/");
    }

    fn yaml(text: &str) -> Value {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn swagger_body_schemas_become_json_schema() {
        let spec = yaml(
            r##"
swagger: "2.0"
consumes: [application/json]
parameters:
  order: { name: body, in: body, schema: { $ref: "#/definitions/Order" } }
definitions:
  Order:
    type: object
    required: [qty, id]
    properties:
      id: { type: integer, readOnly: true }
      qty: { type: integer, minimum: 1, maximum: 100, exclusiveMaximum: true, exclusiveMinimum: false }
      note: { type: string, enum: [a, b], x-nullable: true }
      nullable: { type: boolean }
      lines: { type: array, items: { $ref: "#/definitions/Line" } }
  Line: { type: object, properties: { sku: { type: string } } }
"##,
        );
        let op = yaml(r##"{ parameters: [ { $ref: "#/parameters/order" } ] }"##);
        let schema = body_schema(&spec, &op, true).unwrap().unwrap();
        let got = json_schema(&spec, schema, true).unwrap();
        let want = yaml(
            r##"
$ref: "#/$defs/Order"
$defs:
  Order:
    type: object
    required: [qty]
    properties:
      id: { type: integer, readOnly: true }
      qty: { type: integer, minimum: 1, exclusiveMaximum: 100 }
      note: { type: [string, "null"], enum: [a, b, null] }
      nullable: { type: boolean }
      lines: { type: array, items: { $ref: "#/$defs/Line" } }
  Line: { type: object, properties: { sku: { type: string } } }
"##,
        );
        assert_eq!(got, want);
        // An operation that also takes XML is not validated; one without a body has none.
        let xml = yaml(
            r#"{ consumes: [application/json, text/xml], parameters: [ { in: body, name: b, schema: {} } ] }"#,
        );
        assert!(body_schema(&spec, &xml, true)
            .unwrap_err()
            .contains("text/xml"));
        assert!(body_schema(&spec, &yaml("{}"), true).unwrap().is_none());
        // A reference outside the spec's schemas.
        let outside = yaml(r#"{ $ref: "other.yaml#/Order" }"#);
        assert!(json_schema(&spec, &outside, true)
            .unwrap_err()
            .contains("not one of the spec's schemas"));
    }
}
