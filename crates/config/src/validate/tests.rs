//! Tests of validation (paths, lines, every check) and compilation (defaults, typed
//! policies, inheritance).

use crate::compiled::*;
use crate::{parse_and_compile, parse_and_compile_value, ConfigError};
use http::{HeaderName, Method};
use std::sync::Arc;
use std::time::Duration;

fn errors(yaml: &str) -> Vec<ConfigError> {
    match parse_and_compile(yaml) {
        Ok(_) => panic!("expected errors for:\n{yaml}"),
        Err(errors) => errors,
    }
}

fn compile(yaml: &str) -> CompiledConfig {
    match parse_and_compile(yaml) {
        Ok(config) => config,
        Err(errors) => panic!(
            "unexpected errors:\n{}\nfor:\n{yaml}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

/// Asserts that `errors` has one at `path` whose message contains `needle`.
#[track_caller]
fn assert_has(errors: &[ConfigError], path: &str, needle: &str) {
    assert!(
        errors
            .iter()
            .any(|e| e.path == path && e.message.contains(needle)),
        "no error at `{path}` containing `{needle}`; got:\n{}",
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[track_caller]
fn assert_only(yaml: &str, path: &str, needle: &str) {
    let errors = errors(yaml);
    assert_has(&errors, path, needle);
    assert_eq!(errors.len(), 1, "expected one error, got {errors:#?}");
}

const UPSTREAM: &str = "upstream: { targets: [\"http://127.0.0.1:9000\"] }";

/// A config with one policy entry in the global inbound section.
fn with_global_policy(entry: &str) -> String {
    format!("version: 1\npolicies:\n  inbound:\n    - {entry}\n")
}

/// A config with one API holding `api_body` (indented YAML lines after `id`/`path`).
fn with_api(api_body: &str) -> String {
    format!("version: 1\napis:\n  - id: pets\n    path: /pets\n{api_body}")
}

// ---------------------------------------------------------------------------------------
// Every problem at once, with paths and lines.

const MANY_MISTAKES: &str = r#"version: 2
settings:
  max_request_body: 10XB
policies:
  inbound:
    - base
    - rate-limit: { calls: 0, renewal_period: 10s }
products:
  - id: Starter
    apis: [petstore, nope]
    policies:
      inbound:
        - base
        - base
        - quota: { renewal_period: 1d }
        - frobnicate: {}
  - id: starter
    tier: gold
apis:
  - id: petstore
    path: petstore
    upstream:
      targets: ["http://127.0.0.1:9000", "ftp://x"]
      timeout: 0s
    operations:
      - id: get-pet
        method: GET
        path: /pets/{id}
        policies:
          inbound:
            - rewrite-uri: { template: "/v2/{petId}" }
            - set-header: { name: "bad header", value: x }
      - id: get-pet
        method: GET
        path: /pets/{petId}
  - id: other
    path: /other
    upstream: { targets: [] }
    policies:
      outbound:
        - rate-limit: { calls: abc, renewal_period: 10s }
        - cache-store: {}
"#;

#[test]
fn reports_every_problem_with_path_and_line() {
    let errors = errors(MANY_MISTAKES);
    let expected: &[(&str, usize, &str)] = &[
        ("version", 1, "unsupported version 2"),
        ("settings.max_request_body", 3, "invalid size `10XB`"),
        ("policies.inbound[0]", 6, "not allowed in the global scope"),
        ("policies.inbound[1].rate-limit.calls", 7, "at least 1"),
        ("products[0].id", 9, "invalid id `Starter`"),
        ("products[0].apis[1]", 10, "unknown API `nope`"),
        ("products[0].policies.inbound[1]", 14, "more than once"),
        ("products[0].policies.inbound[2].quota", 15, "needs `calls`"),
        (
            "products[0].policies.inbound[3].frobnicate",
            16,
            "unknown policy kind `frobnicate`",
        ),
        ("products[1].tier", 18, "unknown field `tier`"),
        ("apis[0].path", 21, "must start with `/`"),
        (
            "apis[0].upstream.targets[1]",
            23,
            "invalid target `ftp://x`",
        ),
        ("apis[0].upstream.timeout", 24, "greater than zero"),
        (
            "apis[0].operations[0].policies.inbound[0].rewrite-uri.template",
            31,
            "`{petId}` is not a parameter of this operation",
        ),
        (
            "apis[0].operations[0].policies.inbound[1].set-header.name",
            32,
            "not a valid header name",
        ),
        (
            "apis[0].operations[1].id",
            33,
            "duplicate operation id `get-pet`",
        ),
        ("apis[0].operations[1]", 33, "same method and path"),
        ("apis[1].upstream.targets", 38, "at least one target"),
        (
            "apis[1].policies.outbound[0].rate-limit.calls",
            41,
            "invalid type: string \"abc\", expected u64",
        ),
        (
            "apis[1].policies.outbound[1].cache-store.duration",
            42,
            "missing field `duration`",
        ),
    ];
    for (path, line, needle) in expected {
        let found = errors
            .iter()
            .find(|e| e.path == *path && e.message.contains(needle))
            .unwrap_or_else(|| panic!("no error at {path} with {needle}: {errors:#?}"));
        assert_eq!(found.line, Some(*line), "line of {path}: {found}");
    }
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    // Sorted by position.
    let lines: Vec<usize> = errors.iter().map(|e| e.line.unwrap()).collect();
    let mut sorted = lines.clone();
    sorted.sort_unstable();
    assert_eq!(lines, sorted);
}

#[test]
fn columns_and_display() {
    let errors = errors(MANY_MISTAKES);
    let base_twice = errors
        .iter()
        .find(|e| e.path == "products[0].policies.inbound[1]")
        .unwrap();
    assert_eq!((base_twice.line, base_twice.column), (Some(14), Some(11)));
    let calls = errors
        .iter()
        .find(|e| e.path == "apis[1].policies.outbound[0].rate-limit.calls")
        .unwrap();
    assert_eq!(calls.column, Some(25));
    assert_eq!(
        calls.to_string(),
        "apis[1].policies.outbound[0].rate-limit.calls (line 41, column 25): \
         invalid type: string \"abc\", expected u64"
    );
    // A missing field points at the nearest written ancestor.
    let duration = errors
        .iter()
        .find(|e| e.path == "apis[1].policies.outbound[1].cache-store.duration")
        .unwrap();
    assert_eq!((duration.line, duration.column), (Some(42), Some(11)));
}

#[test]
fn display_without_position() {
    let e = ConfigError {
        path: "apis[0]".into(),
        line: None,
        column: None,
        message: "bad".into(),
    };
    assert_eq!(e.to_string(), "apis[0]: bad");
    let e = ConfigError {
        path: String::new(),
        line: Some(3),
        column: Some(4),
        message: "bad".into(),
    };
    assert_eq!(e.to_string(), "line 3, column 4: bad");
}

#[test]
fn syntax_error_is_single_with_line() {
    let errors = errors("version: 1\napis: [\n  {id: a\n");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].line.is_some());
    assert_eq!(errors[0].path, "");
    assert!(
        errors[0].message.starts_with("did not find expected"),
        "{}",
        errors[0].message
    );
}

#[test]
fn duplicate_key_points_at_the_key() {
    let errors = errors("version: 1\napis:\n  - id: a\n    path: /a\n    path: /b\n");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].path, "apis[0].path");
    assert_eq!((errors[0].line, errors[0].column), (Some(5), Some(5)));
    assert!(errors[0].message.contains("duplicate entry"));
}

#[test]
fn json_input_compiles() {
    let json = r#"{
  "version": 1,
  "products": [{"id": "starter", "apis": ["petstore"],
                "policies": {"inbound": ["base", {"rate-limit": {"calls": 5, "renewal_period": "10s"}}]}}],
  "apis": [{"id": "petstore", "path": "/petstore",
            "upstream": {"targets": ["http://127.0.0.1:9000"]},
            "operations": [{"id": "get-pet", "method": "GET", "path": "/pets/{id}"}]}]
}"#;
    let config = compile(json);
    assert_eq!(config.apis[0].prefix, "/petstore");
    assert_eq!(config.products[0].apis, vec![0]);
    let chain = config.apis[0].chain(1, Some(0));
    assert_eq!(chain.inbound.len(), 1);
    assert_eq!(&*chain.inbound[0].origin, "product:starter/inbound/1");
}

#[test]
fn json_errors_have_lines() {
    let json = "{\n  \"version\": 1,\n  \"apis\": [\n    {\"id\": \"BAD\", \"path\": \"/x\", \"upstream\": {\"targets\": [\"http://a\"]}}\n  ]\n}\n";
    let errors = errors(json);
    assert_has(&errors, "apis[0].id", "invalid id");
    assert_eq!(errors[0].line, Some(4));
}

#[test]
fn value_entry_point_has_paths_without_lines() {
    let value: serde_yaml::Value = serde_yaml::from_str("version: 3\n").unwrap();
    let errors = parse_and_compile_value(&value).unwrap_err();
    assert_eq!(errors[0].path, "version");
    assert_eq!(errors[0].line, None);
}

#[test]
fn compile_file_round_trips() {
    let config = compile(&with_api(&format!("    {UPSTREAM}\n")));
    let again = crate::compile_file(&config.file).unwrap();
    assert_eq!(again.file, config.file);
}

#[test]
fn yaml_merge_keys_are_applied() {
    let yaml = "version: 1\n\
                x-upstream: &up\n  targets: [\"http://127.0.0.1:1\"]\n";
    // `x-upstream` is not a field: merge keys work, unknown fields still don't.
    assert_has(&errors(yaml), "x-upstream", "unknown field");
    let yaml = "version: 1\napis:\n  - id: a\n    path: /a\n    upstream: &up\n      targets: [\"http://127.0.0.1:1\"]\n  - id: b\n    path: /b\n    upstream:\n      <<: *up\n      retries: 3\n";
    let config = compile(yaml);
    assert_eq!(config.apis[1].upstream.retries, 3);
    assert_eq!(config.apis[1].upstream.targets[0].port, 1);
}

// ---------------------------------------------------------------------------------------
// Structure checks.

#[test]
fn version_checks() {
    assert_only("apis: []\n", "version", "missing field `version`");
    assert_only("version: 2\n", "version", "only version 1");
    assert_only("version: one\n", "version", "invalid type");
    compile("version: 1\n");
}

#[test]
fn root_must_be_a_mapping() {
    assert_only("- a\n", "", "expected the policy file (a mapping)");
    assert_only("", "", "found null");
    assert_only("version: 1\nextra: 1\n", "extra", "unknown field `extra`");
}

#[test]
fn settings_checks() {
    assert_only(
        "version: 1\nsettings: { max_request_headers: 0 }\n",
        "settings.max_request_headers",
        "greater than zero",
    );
    assert_only(
        "version: 1\nsettings: { max_request_body: [1] }\n",
        "settings.max_request_body",
        "expected a size",
    );
    let config =
        compile("version: 1\nsettings: { max_request_body: 1MiB, max_request_headers: 8KB }\n");
    assert_eq!(config.limits.max_request_body, 1 << 20);
    assert_eq!(config.limits.max_request_headers, 8000);
    let config = compile("version: 1\n");
    assert_eq!(config.limits, Limits::default());
    assert_eq!(config.limits.cache_max_bytes, 256 << 20);
    assert_only(
        "version: 1\nsettings: { cache_max_bytes: 1KiB }\n",
        "settings.cache_max_bytes",
        "at least 64KiB",
    );
    let config = compile("version: 1\nsettings: { cache_max_bytes: 64MiB }\n");
    assert_eq!(config.limits.cache_max_bytes, 64 << 20);
    assert!(config.trusted_proxies.is_empty());
    let config = compile(
        "version: 1\nsettings: { trusted_proxies: [10.0.0.0/8, \" 192.0.2.7 \", \"fd00::/8\"] }\n",
    );
    let nets: Vec<String> = config
        .trusted_proxies
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(nets, ["10.0.0.0/8", "192.0.2.7/32", "fd00::/8"]);
    let errs = errors(
        "version: 1\nsettings: { trusted_proxies: [10.0.0.0/8, lb.internal, 10.0.0.0/33] }\n",
    );
    assert_has(
        &errs,
        "settings.trusted_proxies[1]",
        "`lb.internal` is not an IP address",
    );
    assert_has(
        &errs,
        "settings.trusted_proxies[2]",
        "not an IP address or a CIDR",
    );
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_only(
        "version: 1\nsettings: { trusted_proxies: 10.0.0.1 }\n",
        "settings.trusted_proxies",
        "",
    );
}

#[test]
fn id_format() {
    for bad in ["Pets", "pets_1", "", "a b"] {
        let yaml = format!("version: 1\nproducts:\n  - id: \"{bad}\"\n");
        assert_only(&yaml, "products[0].id", "invalid id");
    }
    let long = "a".repeat(65);
    assert_only(
        &format!("version: 1\nproducts:\n  - id: {long}\n"),
        "products[0].id",
        "1 to 64",
    );
    compile(&format!(
        "version: 1\nproducts:\n  - id: {}\n",
        "a-9".repeat(21)
    ));
    assert_only(
        "version: 1\nproducts:\n  - title: x\n",
        "products[0].id",
        "missing field `id`",
    );
}

#[test]
fn duplicate_ids_and_paths() {
    let yaml = format!(
        "version: 1\nproducts:\n  - id: p\n  - id: p\napis:\n  - id: a\n    path: /x\n    {UPSTREAM}\n  - id: a\n    path: /y\n    {UPSTREAM}\n  - id: c\n    path: /x/\n    {UPSTREAM}\n"
    );
    let errors = errors(&yaml);
    assert_has(&errors, "products[1].id", "duplicate product id `p`");
    assert_has(&errors, "apis[1].id", "duplicate API id `a`");
    assert_has(&errors, "apis[2].path", "duplicate API path `/x`");
    assert_eq!(errors.len(), 3, "{errors:#?}");
}

#[test]
fn product_api_references() {
    let yaml = format!(
        "version: 1\nproducts:\n  - id: p\n    apis: [a, a, zz, 5]\napis:\n  - id: a\n    path: /x\n    {UPSTREAM}\n"
    );
    let errors = errors(&yaml);
    assert_has(&errors, "products[0].apis[1]", "listed twice");
    assert_has(&errors, "products[0].apis[2]", "unknown API `zz`");
    assert_has(&errors, "products[0].apis[3]", "invalid type");
    assert_eq!(errors.len(), 3, "{errors:#?}");
}

#[test]
fn api_paths() {
    for (bad, needle) in [
        ("pets", "start with `/`"),
        ("/pets?x=1", "`?`"),
        ("/pets#x", "`#`"),
        ("/pets/{id}", "`{`"),
        ("/pe%20ts", "`%`"),
        ("/a/../b", "`..`"),
        ("/a//b", "`//`"),
        ("/a b", "` `"),
    ] {
        let yaml = format!("version: 1\napis:\n  - id: a\n    path: \"{bad}\"\n    {UPSTREAM}\n");
        assert_only(&yaml, "apis[0].path", needle);
    }
    let yaml = format!(
        "version: 1\napis:\n  - id: a\n    path: /\n    {UPSTREAM}\n  - id: b\n    path: /b/c/\n    {UPSTREAM}\n"
    );
    let config = compile(&yaml);
    assert_eq!(config.apis[0].prefix, "");
    assert_eq!(config.apis[1].prefix, "/b/c");
    let yaml = format!("version: 1\napis:\n  - id: a\n    {UPSTREAM}\n");
    assert_only(&yaml, "apis[0].path", "missing field `path`");
}

#[test]
fn api_defaults_and_subscription_key() {
    let config = compile(&with_api(&format!("    {UPSTREAM}\n")));
    let api = &config.apis[0];
    assert!(api.subscription_required);
    assert_eq!(
        api.key_header,
        HeaderName::from_static("ocp-apim-subscription-key")
    );
    assert_eq!(api.key_query, "subscription-key");
    assert_eq!(api.upstream.timeout, Duration::from_secs(30));
    assert_eq!(api.upstream.connect_timeout, Duration::from_secs(5));
    assert_eq!(api.upstream.retries, 1);
    assert_eq!(api.upstream.health_check, None);
    assert!(api.operations.is_empty());
    assert_eq!(api.chains.len(), 1);

    let config = compile(&with_api(&format!(
        "    subscription_required: false\n    subscription_key: {{ header: X-Key, query: key }}\n    {UPSTREAM}\n"
    )));
    let api = &config.apis[0];
    assert!(!api.subscription_required);
    assert_eq!(api.key_header, HeaderName::from_static("x-key"));
    assert_eq!(api.key_query, "key");

    let errors = errors(&with_api(&format!(
        "    subscription_key: {{ header: \"X Key\", query: \"a&b\", cookie: c }}\n    {UPSTREAM}\n"
    )));
    assert_has(
        &errors,
        "apis[0].subscription_key.header",
        "not a valid header name",
    );
    assert_has(
        &errors,
        "apis[0].subscription_key.query",
        "not a valid query parameter",
    );
    assert_has(&errors, "apis[0].subscription_key.cookie", "unknown field");
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert_only(
        &with_api(&format!(
            "    subscription_required: maybe\n    {UPSTREAM}\n"
        )),
        "apis[0].subscription_required",
        "invalid type",
    );
}

#[test]
fn upstream_checks() {
    let bad_targets = [
        ("ftp://x", "expected `http://"),
        ("127.0.0.1:9000", "expected `http://"),
        ("http://user:pw@host", "user information"),
        ("http://host/x?y=1", "no query"),
        ("http://host/#f", "no query or fragment"),
        ("http://host:0", "port"),
        ("http://host:70000", "port"),
        ("http://host:+80", "port"),
        ("http://:80", "host is missing"),
        ("http://ho st", "no spaces"),
        ("http://[::1", "unclosed"),
        ("http://[zz]:80", "IPv6"),
    ];
    for (target, needle) in bad_targets {
        let yaml = with_api(&format!("    upstream: {{ targets: [\"{target}\"] }}\n"));
        assert_only(&yaml, "apis[0].upstream.targets[0]", needle);
    }
    assert_only(
        &with_api("    upstream: { targets: [] }\n"),
        "apis[0].upstream.targets",
        "at least one",
    );
    assert_only(
        &with_api("    upstream: {}\n"),
        "apis[0].upstream.targets",
        "missing field `targets`",
    );
    assert_only(
        &with_api("    upstream: \"http://x\"\n"),
        "apis[0].upstream",
        "expected the upstream (a mapping)",
    );
    assert_only(
        &with_api(""),
        "apis[0].upstream",
        "missing field `upstream`",
    );
    let errors = errors(&with_api(
        "    upstream:\n      targets: [\"http://a\"]\n      health_check: { path: health, interval: 0 }\n      timeout: soon\n      connect_timeout: 0ms\n      retries: -1\n      preserve_header_case: yes\n",
    ));
    assert_has(
        &errors,
        "apis[0].upstream.health_check.path",
        "must start with `/`",
    );
    assert_has(
        &errors,
        "apis[0].upstream.health_check.interval",
        "greater than zero",
    );
    assert_has(
        &errors,
        "apis[0].upstream.timeout",
        "invalid duration `soon`",
    );
    assert_has(
        &errors,
        "apis[0].upstream.connect_timeout",
        "greater than zero",
    );
    assert_has(&errors, "apis[0].upstream.retries", "invalid value");
    // YAML 1.2: `yes` is a string, not a boolean.
    assert_has(
        &errors,
        "apis[0].upstream.preserve_header_case",
        "invalid type",
    );
    assert_eq!(errors.len(), 6, "{errors:#?}");
}

#[test]
fn targets_compile() {
    let config = compile(&with_api(
        "    upstream:\n      targets: [\"http://127.0.0.1:9000\", \"https://api.example.com/base/\", \"http://[::1]:8080/v1\", \"HTTP://h\"]\n      health_check: { path: /health }\n      timeout: 2s\n      connect_timeout: 500ms\n      retries: 0\n      preserve_header_case: true\n",
    ));
    let up = &config.apis[0].upstream;
    let t = &up.targets;
    assert_eq!(
        t[0],
        Target {
            host: "127.0.0.1".into(),
            port: 9000,
            tls: false,
            base_path: String::new(),
            weight: 1,
        }
    );
    assert_eq!(
        t[1],
        Target {
            host: "api.example.com".into(),
            port: 443,
            tls: true,
            base_path: "/base".into(),
            weight: 1,
        }
    );
    assert_eq!(t[2].host, "::1");
    assert_eq!(t[2].authority(), "[::1]:8080");
    assert_eq!(t[2].base_path, "/v1");
    assert_eq!((t[3].host.as_str(), t[3].port), ("h", 80));
    assert_eq!(
        up.health_check,
        Some(HealthCheckDef {
            path: "/health".into(),
            interval: Duration::from_secs(5)
        })
    );
    assert_eq!(up.timeout, Duration::from_secs(2));
    assert_eq!(up.connect_timeout, Duration::from_millis(500));
    assert_eq!(up.retries, 0);
    assert!(up.preserve_header_case);
    assert!(
        !compile(&with_api(&format!("    {UPSTREAM}\n"))).apis[0]
            .upstream
            .preserve_header_case
    );
}

fn with_ops(ops: &str) -> String {
    with_api(&format!("    {UPSTREAM}\n    operations:\n{ops}"))
}

#[test]
fn operation_methods() {
    let config = compile(&with_ops(
        "      - { id: a, method: get, path: /a }\n      - { id: b, method: \"*\", path: /b }\n      - { id: c, method: PURGE, path: /c }\n",
    ));
    let ops = &config.apis[0].operations;
    assert_eq!(ops[0].method, Some(Method::GET));
    assert_eq!(ops[1].method, None);
    assert_eq!(ops[2].method.as_ref().map(Method::as_str), Some("PURGE"));
    for bad in ["GE T", "", "GET/"] {
        let yaml = with_ops(&format!(
            "      - {{ id: a, method: \"{bad}\", path: /a }}\n"
        ));
        assert_only(&yaml, "apis[0].operations[0].method", "invalid method");
    }
}

#[test]
fn operation_paths() {
    for (bad, needle) in [
        ("a", "start with `/`"),
        ("/a//b", "empty segment"),
        ("/a/", "empty segment"),
        ("/a{b}", "whole segment"),
        ("/{a}x", "whole segment"),
        ("/{1x}", "invalid parameter name"),
        ("/{}", "invalid parameter name"),
        ("/{a}/{a}", "appears twice"),
        ("/a?b", "`?`"),
        ("/a/../b", "`..`"),
    ] {
        let yaml = with_ops(&format!(
            "      - {{ id: a, method: GET, path: \"{bad}\" }}\n"
        ));
        assert_only(&yaml, "apis[0].operations[0].path", needle);
    }
    let config = compile(&with_ops(
        "      - { id: root, method: GET, path: / }\n      - { id: pet, method: GET, path: \"/pets/{id}/toys/{toy_id}\" }\n",
    ));
    let ops = &config.apis[0].operations;
    assert!(ops[0].segments.is_empty());
    assert_eq!(
        ops[1].segments,
        vec![
            PathSegment::Literal("pets".into()),
            PathSegment::Param("id".into()),
            PathSegment::Literal("toys".into()),
            PathSegment::Param("toy_id".into()),
        ]
    );
    assert_eq!(
        ops[1].param_names,
        vec![Arc::from("id"), Arc::from("toy_id")]
    );
    assert_eq!(ops[1].path, "/pets/{id}/toys/{toy_id}");
}

#[test]
fn operation_duplicates() {
    let first = errors(&with_ops(
        "      - { id: a, method: GET, path: \"/p/{id}\" }\n      - { id: a, method: POST, path: /q }\n      - { id: c, method: get, path: \"/p/{x}\" }\n      - { id: d, method: \"*\", path: \"/p/{x}\" }\n",
    ));
    assert_has(
        &first,
        "apis[0].operations[1].id",
        "duplicate operation id `a`",
    );
    assert_has(
        &first,
        "apis[0].operations[2]",
        "same method and path as apis[0].operations[0]",
    );
    assert_eq!(first.len(), 2, "{first:#?}");
    let errs = errors(&with_ops(
        "      - { id: a, method: GET, path: /a, extra: 1 }\n      - { method: GET }\n",
    ));
    assert_has(&errs, "apis[0].operations[0].extra", "unknown field");
    assert_has(&errs, "apis[0].operations[1].id", "missing field `id`");
    assert_has(&errs, "apis[0].operations[1].path", "missing field `path`");
}

#[test]
fn section_checks() {
    assert_only(
        "version: 1\npolicies:\n  inbund: []\n",
        "policies.inbund",
        "unknown field `inbund`, expected one of `inbound`, `backend`, `outbound`, `on_error`",
    );
    assert_only(
        "version: 1\npolicies:\n  inbound: { cors: {} }\n",
        "policies.inbound",
        "expected a list of policies",
    );
    assert_only(
        "version: 1\npolicies: [cors]\n",
        "policies",
        "expected policy sections",
    );
    // `inbound:` with nothing is "not named".
    let config = compile("version: 1\npolicies:\n  inbound:\n");
    assert!(config.file.policies.inbound.is_none());
}

#[test]
fn base_rules() {
    assert_only(
        &with_global_policy("base"),
        "policies.inbound[0]",
        "global scope",
    );
    let yaml = "version: 1\nproducts:\n  - id: p\n    policies:\n      backend: [base, base]\n";
    assert_only(yaml, "products[0].policies.backend[1]", "more than once");
    let yaml =
        "version: 1\nproducts:\n  - id: p\n    policies:\n      backend: [{ base: { x: 1 } }]\n";
    assert_only(
        yaml,
        "products[0].policies.backend[0].base",
        "takes no fields",
    );
    compile("version: 1\nproducts:\n  - id: p\n    policies:\n      backend: [base]\n      inbound: [{ base: }]\n");
}

#[test]
fn entry_shapes() {
    assert_only(
        &with_global_policy("frobnicate: {}"),
        "policies.inbound[0].frobnicate",
        "unknown policy kind `frobnicate`; known kinds: validate-jwt, rate-limit, rate-limit-by-key, quota, quota-by-key, cache-lookup, cache-store, xml-to-json, json-to-xml, validate-content, validate-parameters, cors, ip-filter, limit-concurrency, forward-request, check-header, validate-client-certificate, set-header, set-query-parameter, rewrite-uri, return-response, mock-response",
    );
    assert_only(
        &with_global_policy("frobnicate"),
        "policies.inbound[0]",
        "unknown policy kind",
    );
    assert_only(
        &with_global_policy("{ cors: {}, ip-filter: {} }"),
        "policies.inbound[0]",
        "found keys `cors`, `ip-filter`",
    );
    assert_only(
        &with_global_policy("{}"),
        "policies.inbound[0]",
        "an empty mapping",
    );
    assert_only(
        &with_global_policy("42"),
        "policies.inbound[0]",
        "found number `42`",
    );
    assert_only(
        &with_global_policy("cors: [1]"),
        "policies.inbound[0].cors",
        "expected a mapping",
    );
    // A kind without fields: bare, or with a null value.
    let config = compile(
        "version: 1\npolicies:\n  inbound:\n    - cache-lookup\n    - xml-to-json:\n    - cors\n",
    );
    assert_eq!(config.apis.len(), 0);
    assert_only(
        &with_global_policy("rate-limit"),
        "policies.inbound[0].rate-limit.calls",
        "missing field `calls`",
    );
}

/// (entry, path under `policies.inbound[0]`, message part): each must be the only error.
const POLICY_ERRORS: &[(&str, &str, &str)] = &[
    ("rate-limit: { calls: 0, renewal_period: 10s }", "rate-limit.calls", "at least 1"),
    ("rate-limit: { calls: 1, renewal_period: 10s, status: 500 }", "rate-limit.status", "429 or 503"),
    ("rate-limit: { calls: 1, renewal_period: calendar-day }", "rate-limit.renewal_period", "only allowed for `quota`"),
    ("rate-limit: { calls: 1, renewal_period: 0 }", "rate-limit.renewal_period", "greater than zero"),
    ("rate-limit: { calls: 1, renewal_period: [1] }", "rate-limit.renewal_period", "expected a duration"),
    ("rate-limit: { calls: 1 }", "rate-limit.renewal_period", "missing field `renewal_period`"),
    ("rate-limit: { calls: 1, renewal_period: 1s, extra: 1 }", "rate-limit.extra", "unknown field `extra`, expected one of"),
    ("rate-limit: { calls: 1, renewal_period: 1s, counter_key: k }", "rate-limit.counter_key", "only for `rate-limit-by-key`"),
    ("rate-limit: { calls: 1, renewal_period: 1s, increment_condition: any }", "rate-limit.increment_condition", "only for `rate-limit-by-key`"),
    ("rate-limit: { calls: 1, renewal_period: 1s, retry_after_header: 'a b' }", "rate-limit.retry_after_header", "not a valid header name"),
    ("rate-limit: { calls: 1, renewal_period: 1s, remaining_calls_header: 'a:b' }", "rate-limit.remaining_calls_header", "not a valid header name"),
    ("rate-limit-by-key: { calls: 1, renewal_period: 1s }", "rate-limit-by-key.counter_key", "missing field `counter_key`"),
    ("rate-limit-by-key: { calls: 1, renewal_period: 1s, counter_key: '' }", "rate-limit-by-key.counter_key", "must not be empty"),
    ("rate-limit-by-key: { calls: 1, renewal_period: 1s, counter_key: '{ip}' }", "rate-limit-by-key.counter_key", "unknown variable `{ip}`"),
    ("rate-limit-by-key: { calls: 1, renewal_period: 1s, counter_key: k, increment_condition: sometimes }", "rate-limit-by-key.increment_condition", "`any` or `success`"),
    ("quota: { renewal_period: 1d }", "quota", "needs `calls`, `bandwidth`, or both"),
    ("quota: { calls: 0, renewal_period: 1d }", "quota.calls", "at least 1"),
    ("quota: { bandwidth: 10XB, renewal_period: 1d }", "quota.bandwidth", "invalid size"),
    ("quota: { bandwidth: 0, renewal_period: 1d }", "quota.bandwidth", "greater than zero"),
    ("quota: { calls: 5, renewal_period: calendar-year }", "quota.renewal_period", "invalid duration"),
    ("quota: { calls: 5, renewal_period: 0s }", "quota.renewal_period", "greater than zero"),
    ("quota: { calls: 5, renewal_period: calendar-month, timezone: 'Europe Berlin' }", "quota.timezone", "IANA"),
    ("quota: { calls: 5, renewal_period: calendar-month, timezone: '/UTC' }", "quota.timezone", "IANA"),
    ("quota: { calls: 5, renewal_period: 1d, counter_key: k }", "quota.counter_key", "only for `quota-by-key`"),
    ("quota-by-key: { calls: 5, renewal_period: 1h }", "quota-by-key.counter_key", "missing field `counter_key`"),
    ("quota: { calls: 5, renewal_period: calendar-day, timezone: Mars/Olympus_Mons }", "quota.timezone", "IANA"),
    ("quota: { calls: 5, renewal_period: 1d, on_store_error: maybe }", "quota.on_store_error", "`allow` or `deny`"),
    ("rate-limit: { calls: 1, renewal_period: 1s, on_store_error: ignore }", "rate-limit.on_store_error", "`allow` or `deny`"),
    ("validate-jwt: {}", "validate-jwt", "at least one of `keys`, `jwks_uri`, `openid_config`"),
    ("validate-jwt: { jwks_uri: 'https://i/jwks', header: a, query: b }", "validate-jwt.query", "exclusive"),
    ("validate-jwt: { jwks_uri: 'https://i/jwks', header: 'a b' }", "validate-jwt.header", "not a valid header name"),
    ("validate-jwt: { keys: [ { alg: HS999, secret: s } ] }", "validate-jwt.keys[0].alg", "unsupported algorithm `HS999`"),
    ("validate-jwt: { keys: [ { alg: none } ] }", "validate-jwt.keys[0].alg", "unsupported algorithm"),
    ("validate-jwt: { keys: [ { alg: HS256 } ] }", "validate-jwt.keys[0].secret", "missing field `secret`"),
    ("validate-jwt: { keys: [ { alg: HS256, secret: s, pem: p } ] }", "validate-jwt.keys[0].pem", "take a `secret`"),
    ("validate-jwt: { keys: [ { alg: RS256 } ] }", "validate-jwt.keys[0].pem", "missing field `pem`"),
    ("validate-jwt: { keys: [ { alg: ES256, pem: 'abc' } ] }", "validate-jwt.keys[0].pem", "PEM"),
    ("validate-jwt: { keys: [ { alg: EdDSA, pem: '-----BEGIN PUBLIC KEY-----', secret: s } ] }", "validate-jwt.keys[0].secret", "take a `pem`"),
    ("validate-jwt: { keys: [ { secret: s } ] }", "validate-jwt.keys[0].alg", "missing field `alg`"),
    ("validate-jwt: { jwks_uri: 'https://i/jwks', failed_status: 302 }", "validate-jwt.failed_status", "400 to 599"),
    ("validate-jwt: { jwks_uri: 'ftp://i/jwks' }", "validate-jwt.jwks_uri", "`http://` or `https://`"),
    ("validate-jwt: { openid_config: 'i/.well-known' }", "validate-jwt.openid_config", "`http://` or `https://`"),
    ("validate-jwt: { jwks_uri: 'https://i', clock_skew: soon }", "validate-jwt.clock_skew", "invalid duration"),
    ("validate-jwt: { jwks_uri: 'https://i', required_claims: 5 }", "validate-jwt.required_claims", "list of claim names"),
    ("cache-lookup: { vary_by_header: ['bad header'] }", "cache-lookup.vary_by_header[0]", "not a valid header name"),
    ("cache-lookup: { vary_by_query_parameter: ['a=b'] }", "cache-lookup.vary_by_query_parameter[0]", "query parameter"),
    ("cache-store: { duration: 0 }", "cache-store.duration", "greater than zero"),
    ("cache-store: { }", "cache-store.duration", "missing field `duration`"),
    ("xml-to-json: { kind: weird }", "xml-to-json.kind", "`javascript-friendly` or `direct`"),
    ("xml-to-json: { apply: content-type-json }", "xml-to-json.apply", "`always` or `content-type-xml`"),
    ("json-to-xml: { apply: content-type-xml }", "json-to-xml.apply", "`always` or `content-type-json`"),
    ("json-to-xml: { root_element: '1abc' }", "json-to-xml.root_element", "XML element name"),
    ("json-to-xml: { root_element: 'a b' }", "json-to-xml.root_element", "XML element name"),
    ("cors: { allowed_origins: ['*'], allow_credentials: true }", "cors.allow_credentials", "cannot be combined"),
    ("cors: { allowed_origins: ['example.com'] }", "cors.allowed_origins[0]", "invalid origin"),
    ("cors: { allowed_origins: ['https://example.com/'] }", "cors.allowed_origins[0]", "no path"),
    ("cors: { allowed_origins: ['https://example.com:0'] }", "cors.allowed_origins[0]", "port"),
    ("cors: { allowed_origins: ['https://'] }", "cors.allowed_origins[0]", "invalid host"),
    ("cors: { allowed_origins: ['https://[::1]é'] }", "cors.allowed_origins[0]", "port"),
    ("cors: { allowed_methods: ['GE T'] }", "cors.allowed_methods[0]", "invalid method"),
    ("cors: { allowed_headers: ['a b'] }", "cors.allowed_headers[0]", "not a valid header name"),
    ("cors: { expose_headers: ['a b'] }", "cors.expose_headers[0]", "not a valid header name"),
    ("cors: { max_age: forever }", "cors.max_age", "invalid duration"),
    ("ip-filter: { action: deny, addresses: [10.0.0.1] }", "ip-filter.action", "`allow` or `forbid`"),
    ("ip-filter: { action: allow, addresses: [] }", "ip-filter.addresses", "at least one"),
    ("ip-filter: { action: allow, addresses: [10.0.0.0/33] }", "ip-filter.addresses[0]", "CIDR"),
    ("ip-filter: { action: allow, addresses: [localhost] }", "ip-filter.addresses[0]", "not an IP address"),
    ("ip-filter: { action: allow }", "ip-filter.addresses", "missing field `addresses`"),
    ("check-header: { name: 'a b' }", "check-header.name", "not a valid header name"),
    ("check-header: { name: x-a, failed_status: 200 }", "check-header.failed_status", "400 to 599"),
    ("check-header: { values: [a] }", "check-header.name", "missing field `name`"),
    ("set-header: { name: x-a }", "set-header.value", "missing field `value`"),
    ("set-header: { name: 'x a', value: v }", "set-header.name", "not a valid header name"),
    ("set-header: { name: x-a, value: v, exists_action: replace }", "set-header.exists_action", "`override`, `skip`, `append`, `delete`"),
    ("set-header: { name: x-a, value: \"a\\r\\nb\" }", "set-header.value", "CR, LF"),
    ("set-header: { name: x-a, value: '{client.port}' }", "set-header.value", "unknown variable `{client.port}`"),
    ("set-header: { name: x-a, value: 'a}' }", "set-header.value", "stray `}`"),
    ("set-query-parameter: { name: 'a&b', value: v }", "set-query-parameter.name", "query parameter"),
    ("set-query-parameter: { name: a, value: \"x\\ny\" }", "set-query-parameter.value", "CR, LF"),
    ("set-query-parameter: { name: a }", "set-query-parameter.value", "missing field `value`"),
    ("rewrite-uri: { template: 'v2/x' }", "rewrite-uri.template", "start with `/`"),
    ("rewrite-uri: { template: '/v2/{' }", "rewrite-uri.template", "unclosed"),
    ("rewrite-uri: { template: '/v2/a b' }", "rewrite-uri.template", "spaces"),
    ("rewrite-uri: { template: '/v2/{1}' }", "rewrite-uri.template", "unknown variable"),
    ("return-response: { status: 600 }", "return-response.status", "100 to 599"),
    ("return-response: { headers: { 'bad name': x } }", "return-response.headers.bad name", "not a valid header name"),
    ("return-response: { headers: { x-a: '{nope}' } }", "return-response.headers.x-a", "unknown variable"),
    ("mock-response: { status: 99 }", "mock-response.status", "100 to 599"),
];

#[test]
fn every_policy_check() {
    for (entry, path, needle) in POLICY_ERRORS {
        let yaml = with_global_policy(entry);
        let errors = errors(&yaml);
        let full = format!("policies.inbound[0].{path}");
        assert_has(&errors, &full, needle);
        assert_eq!(errors.len(), 1, "{entry}: {errors:#?}");
        assert_eq!(errors[0].line, Some(4), "{entry}: {}", errors[0]);
    }
}

#[test]
fn policy_errors_do_not_hide_each_other() {
    let yaml = "version: 1\npolicies:\n  inbound:\n    - rate-limit: { calls: x, renewal_period: 1s }\n    - quota: { calls: 0, renewal_period: 1d }\n  outbound:\n    - cors: { allowed_origins: [x] }\n    - nope: {}\n";
    let errors = errors(yaml);
    assert_eq!(errors.len(), 4, "{errors:#?}");
    let lines: Vec<_> = errors.iter().map(|e| e.line.unwrap()).collect();
    assert_eq!(lines, vec![4, 5, 7, 8]);
}

#[test]
fn rewrite_uri_params_by_scope() {
    // Operation scope: only the operation's parameters.
    let ops = "      - id: get\n        method: GET\n        path: /pets/{id}\n        policies:\n          inbound: [ rewrite-uri: { template: \"/v2/{id}/{name}\" } ]\n";
    let errs = errors(&with_ops(ops));
    assert_has(
        &errs,
        "apis[0].operations[0].policies.inbound[0].rewrite-uri.template",
        "`{name}` is not a parameter of this operation: its parameters are `{id}`",
    );
    assert_eq!(errs.len(), 1);
    let ops = "      - id: get\n        method: GET\n        path: /pets\n        policies:\n          inbound: [ rewrite-uri: { template: \"/v2/{id}\" } ]\n";
    assert_has(
        &errors(&with_ops(ops)),
        "apis[0].operations[0].policies.inbound[0].rewrite-uri.template",
        "has no parameters",
    );
    // Other scopes: any parameter name is allowed.
    compile(&with_api(&format!(
        "    {UPSTREAM}\n    policies:\n      inbound: [ rewrite-uri: {{ template: \"/v2/{{id}}?x={{request.query.x}}\" }} ]\n"
    )));
    compile(&with_global_policy(
        "rewrite-uri: { template: \"/{anything}\" }",
    ));
}

// ---------------------------------------------------------------------------------------
// Typed policies and their defaults.

fn global_policy(entry: &str) -> PolicyDef {
    let yaml = format!(
        "{}apis:\n  - id: probe\n    path: /probe\n    {UPSTREAM}\n",
        with_global_policy(entry)
    );
    let config = compile(&yaml);
    config.apis[0].chain(0, None).inbound[0].def.clone()
}

#[test]
fn rate_limit_defaults() {
    let PolicyDef::RateLimit(def) = global_policy("rate-limit: { calls: 5, renewal_period: 10s }")
    else {
        panic!()
    };
    assert_eq!(def.calls, 5);
    assert_eq!(def.period, Duration::from_secs(10));
    assert_eq!(def.status, 429);
    assert_eq!(
        def.retry_after_header,
        HeaderName::from_static("retry-after")
    );
    assert_eq!(def.remaining_calls_header, None);
    assert!(def.counter_key.is_none());
    assert!(!def.count_success_only);

    let PolicyDef::RateLimitByKey(def) = global_policy(
        "rate-limit-by-key: { calls: 1, renewal_period: 1m, status: 503, counter_key: '{client.ip}', increment_condition: success, remaining_calls_header: X-Left, retry_after_header: X-Wait }",
    ) else {
        panic!()
    };
    assert_eq!(def.status, 503);
    assert_eq!(def.period, Duration::from_secs(60));
    assert_eq!(def.counter_key.unwrap().source(), "{client.ip}");
    assert!(def.count_success_only);
    assert_eq!(
        def.remaining_calls_header,
        Some(HeaderName::from_static("x-left"))
    );
    assert_eq!(def.retry_after_header, HeaderName::from_static("x-wait"));
}

#[test]
fn quota_defaults() {
    let PolicyDef::Quota(def) = global_policy("quota: { calls: 10000, renewal_period: 30d }")
    else {
        panic!()
    };
    assert_eq!(def.calls, Some(10000));
    assert_eq!(def.bandwidth, None);
    assert_eq!(def.period, Period::Fixed(Duration::from_secs(30 * 86_400)));
    assert_eq!(def.timezone, "UTC");
    let PolicyDef::QuotaByKey(def) = global_policy(
        "quota-by-key: { bandwidth: 10MiB, renewal_period: calendar-week, timezone: America/Argentina/Buenos_Aires, counter_key: '{subscription.id}' }",
    ) else {
        panic!()
    };
    assert_eq!(def.bandwidth, Some(10 << 20));
    assert_eq!(def.period, Period::CalendarWeek);
    assert_eq!(def.timezone, "America/Argentina/Buenos_Aires");
    assert!(def.counter_key.is_some());
    for tz in ["Etc/GMT+5", "America/Port-au-Prince", "UTC"] {
        global_policy(&format!(
            "quota: {{ calls: 1, renewal_period: calendar-day, timezone: \"{tz}\" }}"
        ));
    }
}

#[test]
fn jwt_shapes() {
    let PolicyDef::ValidateJwt(def) = global_policy(
        "validate-jwt: { keys: [ { alg: HS256, secret: s }, { alg: RS256, pem: \"-----BEGIN PUBLIC KEY-----\\nAA\\n-----END PUBLIC KEY-----\" } ], issuers: [i], required_claims: { role: [admin] }, clock_skew: 10s, failed_status: 403 }",
    ) else {
        panic!()
    };
    assert_eq!(def.keys.len(), 2);
    assert_eq!(def.failed_status, Some(403));
    global_policy("validate-jwt: { openid_config: 'https://login.example.com/.well-known/openid-configuration', required_claims: [sub], query: token }");
}

#[test]
fn cache_and_transform_defs() {
    let PolicyDef::CacheStore {
        duration,
        allow_private,
    } = global_policy("cache-store: { duration: 60s }")
    else {
        panic!()
    };
    assert_eq!(duration, Duration::from_secs(60));
    assert!(!allow_private);
    let PolicyDef::CacheLookup(def) = global_policy(
        "cache-lookup: { vary_by_query_parameter: [lang], vary_by_header: [Accept] }",
    ) else {
        panic!()
    };
    assert_eq!(def.vary_by_query_parameter, Some(vec!["lang".to_string()]));
    assert!(matches!(
        global_policy("xml-to-json: { kind: direct, apply: always }"),
        PolicyDef::XmlToJson(_)
    ));
    assert!(matches!(
        global_policy("json-to-xml: { root_element: Pet_1 }"),
        PolicyDef::JsonToXml(_)
    ));
}

#[test]
fn cors_def() {
    let PolicyDef::Cors(def) = global_policy(
        "cors: { allowed_origins: ['HTTPS://App.Example.com', 'http://localhost:3000'], allowed_methods: [get, PUT], allowed_headers: [Content-Type, X-Api-Key], expose_headers: [X-Request-Id, X-Rate], allow_credentials: true, max_age: 1h }",
    ) else {
        panic!()
    };
    assert_eq!(
        def.allowed_origins,
        vec![
            "https://app.example.com".to_string(),
            "http://localhost:3000".to_string()
        ]
    );
    assert!(!def.any_origin);
    assert_eq!(def.allowed_methods, vec![Method::GET, Method::PUT]);
    assert_eq!(def.allowed_methods_value, "GET, PUT");
    assert_eq!(
        def.allowed_headers,
        vec![
            HeaderName::from_static("content-type"),
            HeaderName::from_static("x-api-key")
        ]
    );
    assert_eq!(def.expose_headers_value.unwrap(), "x-request-id, x-rate");
    assert!(def.allow_credentials);
    assert_eq!(def.max_age, Some(Duration::from_secs(3600)));

    let PolicyDef::Cors(def) =
        global_policy("cors: { allowed_origins: ['*'], allowed_headers: ['*'] }")
    else {
        panic!()
    };
    assert!(def.any_origin && def.allowed_origins.is_empty());
    assert!(def.any_header && def.allowed_headers.is_empty());
    assert_eq!(
        def.allowed_methods,
        vec![Method::GET, Method::POST, Method::HEAD]
    );
    assert_eq!(def.allowed_methods_value, "GET, POST, HEAD");
    assert_eq!(def.expose_headers_value, None);
    let PolicyDef::Cors(def) = global_policy("cors: { allowed_methods: ['*', get] }") else {
        panic!()
    };
    assert_eq!(
        def.allowed_methods_value,
        "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
    );
}

#[test]
fn ip_filter_def() {
    let PolicyDef::IpFilter(def) = global_policy(
        "ip-filter: { action: forbid, addresses: [10.0.0.1, 192.168.1.77/24, '::1', 'fd00::/8'] }",
    ) else {
        panic!()
    };
    assert!(!def.allow);
    let nets: Vec<String> = def.networks.iter().map(ToString::to_string).collect();
    assert_eq!(
        nets,
        vec!["10.0.0.1/32", "192.168.1.0/24", "::1/128", "fd00::/8"]
    );
}

#[test]
fn header_and_query_defs() {
    let PolicyDef::CheckHeader(def) = global_policy("check-header: { name: X-Api-Version }") else {
        panic!()
    };
    assert_eq!(def.name, HeaderName::from_static("x-api-version"));
    assert_eq!(def.failed_status, 401);
    assert_eq!(def.failed_message, "header check failed");
    assert!(def.values.is_empty() && !def.ignore_case);

    let PolicyDef::SetHeader(def) =
        global_policy("set-header: { name: X-Tenant, value: '{request.header.x-tenant}-{{x}}' }")
    else {
        panic!()
    };
    assert_eq!(def.name, HeaderName::from_static("x-tenant"));
    assert_eq!(def.exists_action, ExistsAction::Override);
    assert!(def.value.unwrap().has_vars());

    let PolicyDef::SetHeader(def) =
        global_policy("set-header: { name: Server, exists_action: delete }")
    else {
        panic!()
    };
    assert_eq!(def.exists_action, ExistsAction::Delete);
    assert!(def.value.is_none());

    let PolicyDef::SetQueryParameter(def) = global_policy(
        "set-query-parameter: { name: api-version, value: '2024', exists_action: skip }",
    ) else {
        panic!()
    };
    assert_eq!(def.name, "api-version");
    assert_eq!(def.exists_action, ExistsAction::Skip);
    assert_eq!(def.value.unwrap().as_literal(), Some("2024"));
    let PolicyDef::SetHeader(def) =
        global_policy("set-header: { name: Via, value: gw, exists_action: append }")
    else {
        panic!()
    };
    assert_eq!(def.exists_action, ExistsAction::Append);
}

#[test]
fn rewrite_and_return_defs() {
    let PolicyDef::RewriteUri(def) = global_policy("rewrite-uri: { template: '/v2/{id}' }") else {
        panic!()
    };
    assert!(def.copy_unmatched_params);
    assert_eq!(def.template.source(), "/v2/{id}");
    let PolicyDef::RewriteUri(def) =
        global_policy("rewrite-uri: { template: '/x', copy_unmatched_params: false }")
    else {
        panic!()
    };
    assert!(!def.copy_unmatched_params);

    let PolicyDef::ReturnResponse(def) = global_policy("return-response: {}") else {
        panic!()
    };
    assert_eq!(def.status, 200);
    assert!(def.body.is_empty());
    assert_eq!(def.default_content_type, None);

    let PolicyDef::ReturnResponse(def) = global_policy(
        "mock-response: { status: 201, body: 'hello', headers: { X-Id: '{subscription.id}' } }",
    ) else {
        panic!()
    };
    assert_eq!(def.status, 201);
    assert_eq!(&*def.body, b"hello");
    assert_eq!(def.default_content_type, Some("text/plain; charset=utf-8"));
    assert_eq!(def.headers[0].0, HeaderName::from_static("x-id"));

    let PolicyDef::ReturnResponse(def) =
        global_policy("return-response: { body: { pets: [1, two], ok: true } }")
    else {
        panic!()
    };
    assert_eq!(&*def.body, br#"{"ok":true,"pets":[1,"two"]}"#);
    assert_eq!(def.default_content_type, Some("application/json"));
}

// ---------------------------------------------------------------------------------------
// Inheritance.

const INHERIT: &str = r#"version: 1
policies:
  inbound:
    - set-header: { name: x-global, value: g }
  outbound:
    - set-header: { name: x-global-out, value: g }
products:
  - id: gold
    apis: [pets]
    policies:
      inbound:
        - set-header: { name: x-product-before, value: p }
        - base
        - set-header: { name: x-product-after, value: p }
  - id: silver
    apis: [pets]
  - id: bronze
    apis: [pets, bare]
    policies:
      inbound: []
apis:
  - id: pets
    path: /pets
    upstream: { targets: ["http://127.0.0.1:9000"] }
    policies:
      inbound: [ base, set-header: { name: x-api, value: a } ]
    operations:
      - id: list
        method: GET
        path: /
      - id: get
        method: GET
        path: /{id}
        policies:
          inbound: [ set-header: { name: x-op, value: o }, base ]
          outbound: [ set-header: { name: x-op-out, value: o } ]
  - id: bare
    path: /bare
    upstream: { targets: ["http://127.0.0.1:9000"] }
"#;

fn names(section: &[PolicyInstance]) -> Vec<String> {
    section
        .iter()
        .map(|p| match &p.def {
            PolicyDef::SetHeader(def) => def.name.as_str().to_string(),
            other => other.kind().to_string(),
        })
        .collect()
}

#[test]
fn unnamed_sections_inherit_and_named_replace() {
    let config = compile(INHERIT);
    let pets = &config.apis[0];
    assert_eq!(pets.products, vec![0, 1, 2]);
    // Slot 0, operation without policies: API inbound (base + x-api), global outbound.
    let list = pets.chain(0, Some(0));
    assert_eq!(names(&list.inbound), ["x-global", "x-api"]);
    assert_eq!(names(&list.outbound), ["x-global-out"]);
    assert!(list.backend.is_empty() && list.on_error.is_empty());
    // Operation names outbound without base: the parents' outbound is dropped.
    let get = pets.chain(0, Some(1));
    assert_eq!(names(&get.inbound), ["x-op", "x-global", "x-api"]);
    assert_eq!(names(&get.outbound), ["x-op-out"]);
    // The API-wide chain.
    assert_eq!(names(&pets.chain(0, None).inbound), ["x-global", "x-api"]);
}

#[test]
fn four_levels_with_base_in_the_middle() {
    let config = compile(INHERIT);
    let pets = &config.apis[0];
    let gold = pets
        .product_slot(config.product_index("gold").unwrap())
        .unwrap();
    assert_eq!(gold, 1);
    assert_eq!(
        names(&pets.chain(gold, Some(0)).inbound),
        ["x-product-before", "x-global", "x-product-after", "x-api"]
    );
    assert_eq!(
        names(&pets.chain(gold, Some(1)).inbound),
        [
            "x-op",
            "x-product-before",
            "x-global",
            "x-product-after",
            "x-api"
        ]
    );
    assert_eq!(names(&pets.chain(gold, Some(0)).outbound), ["x-global-out"]);
}

#[test]
fn product_slots() {
    let config = compile(INHERIT);
    let pets = &config.apis[0];
    // silver names nothing: same chains as slot 0, shared.
    let silver = pets.product_slot(1).unwrap();
    assert!(Arc::ptr_eq(
        pets.chain(silver, Some(1)),
        pets.chain(0, Some(1))
    ));
    // bronze names `inbound: []`: the global inbound is dropped, the API adds its own.
    let bronze = pets.product_slot(2).unwrap();
    assert_eq!(names(&pets.chain(bronze, Some(0)).inbound), ["x-api"]);
    assert_eq!(
        names(&pets.chain(bronze, Some(1)).inbound),
        ["x-op", "x-api"]
    );
    assert_eq!(
        names(&pets.chain(bronze, Some(0)).outbound),
        ["x-global-out"]
    );
    // An operation without policies shares the API-wide chain.
    assert!(Arc::ptr_eq(pets.chain(0, Some(0)), pets.chain(0, None)));
    assert_eq!(pets.chains.len(), 4 * 3);
    assert_eq!(pets.chain_index(2, Some(1)), 2 * 3 + 2);
    // A product that does not contain the API has no slot.
    let bare = &config.apis[config.api_index("bare").unwrap()];
    assert_eq!(bare.products, vec![2]);
    assert_eq!(bare.product_slot(0), None);
    assert_eq!(bare.product_slot(2), Some(1));
}

#[test]
fn api_without_operations_uses_one_chain_per_slot() {
    let config = compile(INHERIT);
    let bare = &config.apis[1];
    assert_eq!(bare.chains.len(), 2);
    assert_eq!(names(&bare.chain(0, None).inbound), ["x-global"]);
    assert_eq!(bare.chain_index(0, Some(5)), 0);
    assert!(bare.chain(1, None).inbound.is_empty());
    assert_eq!(names(&bare.chain(1, None).outbound), ["x-global-out"]);
}

#[test]
fn origins() {
    let config = compile(INHERIT);
    let pets = &config.apis[0];
    let origins: Vec<&str> = pets
        .chain(1, Some(1))
        .inbound
        .iter()
        .map(|p| &*p.origin)
        .collect();
    assert_eq!(
        origins,
        [
            "api:pets/operation:get/inbound/0",
            "product:gold/inbound/0",
            "global/inbound/0",
            "product:gold/inbound/2",
            "api:pets/inbound/1",
        ]
    );
    assert_eq!(
        &*pets.chain(0, Some(1)).outbound[0].origin,
        "api:pets/operation:get/outbound/0"
    );
}

#[test]
fn products_and_lookups() {
    let config = compile(INHERIT);
    assert_eq!(config.product_index("bronze"), Some(2));
    assert_eq!(config.product_index("nope"), None);
    assert_eq!(config.api_index("bare"), Some(1));
    assert_eq!(config.products[2].apis, vec![0, 1]);
    assert_eq!(&*config.products[0].id, "gold");
    assert_eq!(config.file.products.len(), 3);
}

#[test]
fn never_panics_on_truncated_or_odd_input() {
    for text in [MANY_MISTAKES, INHERIT] {
        for (i, _) in text.char_indices() {
            let _ = parse_and_compile(&text[..i]);
        }
    }
    for odd in [
        "version: 1\npolicies: { inbound: [ { ? [a] : 1 } ] }\n",
        "version: 1\napis: [ &a { id: x }, *a ]\n",
        "version: 1\napis:\n  - !tag { id: x }\n",
        "version: 1\npolicies:\n  inbound: [ { 5: {} } ]\n",
        "version: 1\n---\nversion: 1\n",
        "{\"version\": 1, \"apis\": [{\"id\": \"é\", \"path\": \"/é\"}]}",
    ] {
        let _ = parse_and_compile(odd);
    }
}

#[test]
fn config_error_serializes() {
    let e = ConfigError {
        path: "apis[0].upstream".into(),
        line: Some(7),
        column: None,
        message: "bad".into(),
    };
    assert_eq!(
        serde_json::to_string(&e).unwrap(),
        r#"{"path":"apis[0].upstream","line":7,"column":null,"message":"bad"}"#
    );
}

#[test]
fn several_problems_in_one_policy_entry_are_all_reported() {
    let text = "version: 1\napis:\n  - id: a\n    path: /a\n    upstream: { targets: [\"http://127.0.0.1:1\"] }\n    policies:\n      inbound:\n        - rate-limit: { calls: 3, renewal_period: [10], status: abc, colour: red }\n";
    let errs = crate::parse_and_compile(text).unwrap_err();
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert!(
        paths.contains(&"apis[0].policies.inbound[0].rate-limit.renewal_period"),
        "{errs:?}"
    );
    assert!(
        paths.contains(&"apis[0].policies.inbound[0].rate-limit.status"),
        "{errs:?}"
    );
    assert!(
        paths.contains(&"apis[0].policies.inbound[0].rate-limit.colour"),
        "{errs:?}"
    );
    assert!(errs.iter().all(|e| e.line == Some(8)), "{errs:?}");
}

/// Every duration field is bounded: a value past its maximum is an error naming the field
/// and the maximum (huge values overflowed `Instant` and `u64` arithmetic at request time).
#[test]
fn durations_have_maxima() {
    let api = |upstream: &str, policies: &str| {
        format!(
            "version: 1\napis:\n  - id: a\n    path: /a\n    upstream: {{ targets: [\"http://127.0.0.1:9000\"]{upstream} }}\n    policies: {{ {policies} }}\n"
        )
    };
    let cases = [
        (
            api(", timeout: 18446744073709551615", ""),
            "apis[0].upstream.timeout",
            "the maximum is 1d",
        ),
        (
            api(", connect_timeout: 86401", ""),
            "apis[0].upstream.connect_timeout",
            "the maximum is 1d",
        ),
        (
            api(", health_check: { path: /h, interval: 2d }", ""),
            "apis[0].upstream.health_check.interval",
            "the maximum is 1d",
        ),
        (
            api("", "inbound: [validate-jwt: {keys: [{alg: HS256, secret: abcabcabcabcabcabcabcabcabcabcabc}], clock_skew: 21900d}]"),
            "apis[0].policies.inbound[0].validate-jwt.clock_skew",
            "`21900d` is too long: the maximum is 1d (86400 seconds)",
        ),
        (
            api("", "inbound: [cache-lookup: {}], outbound: [cache-store: {duration: 18446744073709551615}]"),
            "apis[0].policies.outbound[0].cache-store.duration",
            "the maximum is 365d",
        ),
        (
            api("", "inbound: [rate-limit: {calls: 1, renewal_period: 366d}]"),
            "apis[0].policies.inbound[0].rate-limit.renewal_period",
            "the maximum is 365d",
        ),
        (
            api("", "inbound: [quota: {calls: 1, renewal_period: 999999999999s}]"),
            "apis[0].policies.inbound[0].quota.renewal_period",
            "the maximum is 365d",
        ),
        (
            api("", "inbound: [cors: {allowed_origins: ['*'], max_age: 400d}]"),
            "apis[0].policies.inbound[0].cors.max_age",
            "the maximum is 365d",
        ),
    ];
    for (yaml, path, needle) in &cases {
        let errors = errors(yaml);
        assert_has(&errors, path, needle);
        assert!(errors[0].line.is_some(), "{errors:?}");
        assert_eq!(errors.len(), 1, "{errors:#?}");
    }
    // The maxima themselves are accepted.
    compile(&api(
        ", timeout: 1d, connect_timeout: 86400, health_check: { path: /h, interval: 24h }",
        "inbound: [validate-jwt: {keys: [{alg: HS256, secret: abcabcabcabcabcabcabcabcabcabcabc}], clock_skew: 1d}, rate-limit: {calls: 1, renewal_period: 365d}, quota: {calls: 1, renewal_period: 8760h}, cors: {allowed_origins: ['*'], max_age: 365d}, cache-lookup: {}], outbound: [cache-store: {duration: 31536000}]",
    ));
}

/// What the YAML parser stops at still comes with a path and a line, and does not hide the
/// other problems (the fuzzing pass's `validate-*.yaml` cases).
#[test]
fn parser_level_problems_have_lines_and_hide_nothing() {
    // An integer too large for 64 bits: reported at its path, and the rest still checked.
    let errs = errors(
        "version: 1\nproducts:\n  - id: BAD\napis:\n  - id: a\n    path: /a\n    upstream: {targets: [\"http://127.0.0.1:9000\"], retries: 99999999999999999999}\n",
    );
    assert_has(&errs, "products[0].id", "invalid id");
    assert_has(&errs, "apis[0].upstream.retries", "out of range");
    let big = errs
        .iter()
        .find(|e| e.path == "apis[0].upstream.retries")
        .unwrap();
    assert_eq!((big.line, big.column), (Some(7), Some(61)), "{big:?}");
    assert_eq!(errs.len(), 2, "{errs:#?}");
    // Several, negative too; a required field is not reported twice.
    let errs = errors("version: -99999999999999999999\napis: [{id: a, path: /a, upstream: {targets: [\"http://x\"], retries: 1, timeout: 99999999999999999999}}]\n");
    assert_has(&errs, "version", "`-99999999999999999999` is out of range");
    assert_has(&errs, "apis[0].upstream.timeout", "out of range");
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert_eq!(errs[1].line, Some(2), "{errs:#?}");

    // Two documents: the second one's line, and the first one is still checked.
    let errs = errors("version: 1\nproducts: [{id: BAD}]\n---\nversion: 1\n");
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert_has(&errs, "products[0].id", "invalid id");
    assert!(
        errs[1].message.contains("second YAML document"),
        "{errs:#?}"
    );
    assert_eq!(errs[1].line, Some(3), "{errs:#?}");
    let errs = errors("version: 1\n---\nversion: 1\n");
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].line, Some(2), "{errs:#?}");

    // A merge key holding a scalar: its path and line, and the rest still checked.
    let errs = errors("version: 1\n<<: 5\nproducts: [{id: BAD}]\n");
    assert_has(&errs, "<<", "a merge key (`<<`) takes a mapping");
    assert_has(&errs, "products[0].id", "invalid id");
    assert_eq!(errs[0].line, Some(2), "{errs:#?}");
    assert_eq!(errs.len(), 2, "{errs:#?}");
    let errs = errors("version: 1\nsettings:\n  <<: [1]\n");
    assert_has(&errs, "settings.<<", "found a list holding something else");
    assert_eq!(errs[0].line, Some(3), "{errs:#?}");
    // A good merge still works.
    let config = compile(
        "version: 1\napis:\n  - {id: a, path: /a, upstream: &u {targets: [\"http://x\"], retries: 3}}\n  - {id: b, path: /b, upstream: {<<: *u, timeout: 5s}}\n",
    );
    assert_eq!(config.file.apis[1].upstream.retries, Some(3));

    // A control character: its own line and column, not line 1.
    let errs = errors("version: 1\napis: []\nproducts: []\n# é \u{1}\n");
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(
        (errs[0].line, errs[0].column),
        (Some(4), Some(5)),
        "{errs:#?}"
    );
    assert!(
        errs[0].message.contains("control characters") && !errs[0].message.contains("position"),
        "{errs:#?}"
    );
}

// ---------------------------------------------------------------------------------------
// upstream.tls

/// `text` as a YAML block scalar indented by `spaces`.
fn block(text: &str, spaces: usize) -> String {
    let pad = " ".repeat(spaces);
    let mut out = String::from("|\n");
    for line in text.lines() {
        out.push_str(&pad);
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A self-signed certificate and its key (PEM).
fn self_signed(name: &str) -> (String, String) {
    let ck = rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("rcgen");
    (ck.cert.pem(), ck.signing_key.serialize_pem())
}

fn with_tls(targets: &str, tls_fields: &[(&str, String)]) -> String {
    let mut body = format!("    upstream:\n      targets: {targets}\n      tls:\n");
    for (name, value) in tls_fields {
        body.push_str(&format!("        {name}: {value}"));
        if !value.ends_with('\n') {
            body.push('\n');
        }
    }
    with_api(&body)
}

#[test]
fn upstream_tls_compiles_to_der_and_keeps_the_key_out_of_debug() {
    let (ca, _) = self_signed("ca.test");
    let (cert, key) = self_signed("client.test");
    let config = compile(&with_tls(
        "[\"https://10.0.0.1:8443\"]",
        &[
            ("ca", block(&format!("{ca}{ca}"), 10)),
            ("client_certificate", block(&cert, 10)),
            // As `"${env:NAME}"` leaves it: the PEM's lines at column 0, in double quotes,
            // which YAML folds into one line.
            ("client_key", format!("\"{key}\"")),
            ("server_name", "billing.internal".to_owned()),
            ("verify", "true".to_owned()),
        ],
    ));
    let tls = config.apis[0].upstream.tls.as_deref().expect("tls");
    assert_eq!(tls.ca.as_ref().map(Vec::len), Some(2));
    let (chain, key_der) = tls.client.as_ref().expect("client identity");
    assert_eq!(chain.len(), 1);
    assert!(!key_der.is_empty());
    assert_eq!(tls.server_name.as_deref(), Some("billing.internal"));
    assert!(tls.verify);
    let shown = format!("{tls:?}");
    assert!(
        !shown.contains(&format!("{:?}", &key_der[..8])),
        "the key leaks into Debug: {shown}"
    );
    // Without `tls`, none; `verify: false` alone is enough.
    let plain = compile(&with_api(&format!("    {UPSTREAM}\n")));
    assert!(plain.apis[0].upstream.tls.is_none());
    let lax = compile(&with_tls(
        "[\"https://h\"]",
        &[("verify", "false".to_owned())],
    ));
    let tls = lax.apis[0].upstream.tls.as_deref().expect("tls");
    assert!(!tls.verify && tls.ca.is_none() && tls.client.is_none());
}

#[test]
fn upstream_tls_reports_every_problem() {
    let (cert, _) = self_signed("client.test");
    let (_, other_key) = self_signed("other.test");
    let broken_cert = cert.replace("MII", "MIX");
    let errors = errors(&with_tls(
        "[\"https://h\"]",
        &[
            ("ca", block(&broken_cert, 10)),
            ("client_certificate", block(&cert, 10)),
            ("client_key", block(&other_key, 10)),
            ("server_name", "\"not a name\"".to_owned()),
            ("verify", "maybe".to_owned()),
            ("pin", "x".to_owned()),
        ],
    ));
    let at = "apis[0].upstream.tls";
    assert_has(&errors, &format!("{at}.ca"), "certificate 1");
    assert_has(
        &errors,
        &format!("{at}.client_key"),
        "does not fit `client_certificate`",
    );
    assert_has(&errors, &format!("{at}.server_name"), "no DNS name");
    assert_has(&errors, &format!("{at}.verify"), "");
    assert_has(&errors, &format!("{at}.pin"), "unknown field `pin`");
    assert_eq!(errors.len(), 5, "{errors:#?}");
    // No key material in any message.
    let secret_line = other_key.lines().nth(1).expect("a base64 line");
    assert!(errors.iter().all(|e| !e.message.contains(secret_line)));
}

#[test]
fn upstream_tls_needs_both_halves_and_an_https_target() {
    let (cert, key) = self_signed("client.test");
    assert_only(
        &with_tls(
            "[\"https://h\"]",
            &[("client_certificate", block(&cert, 10))],
        ),
        "apis[0].upstream.tls.client_key",
        "needs its `client_key`",
    );
    assert_only(
        &with_tls("[\"https://h\"]", &[("client_key", block(&key, 10))]),
        "apis[0].upstream.tls.client_certificate",
        "needs its `client_certificate`",
    );
    assert_only(
        &with_tls("[\"http://h\"]", &[("verify", "false".to_owned())]),
        "apis[0].upstream.tls",
        "`https://` targets",
    );
    assert_only(
        &with_tls("[\"https://h\"]", &[("ca", "\"just text\"".to_owned())]),
        "apis[0].upstream.tls.ca",
        "no `-----BEGIN CERTIFICATE-----` block",
    );
    // A key where the certificate belongs, a certificate where the key belongs.
    let errors = errors(&with_tls(
        "[\"https://h\"]",
        &[
            ("client_certificate", block(&key, 10)),
            ("client_key", block(&cert, 10)),
        ],
    ));
    assert_has(
        &errors,
        "apis[0].upstream.tls.client_certificate",
        "no `-----BEGIN CERTIFICATE-----` block",
    );
    assert_has(
        &errors,
        "apis[0].upstream.tls.client_key",
        "no PEM private key",
    );
}

#[test]
fn upstream_http2_defaults_off_and_refuses_preserved_header_case() {
    let off = compile(&with_api(&format!("    {UPSTREAM}\n")));
    assert!(!off.apis[0].upstream.http2);
    let on = compile(&with_api(
        "    upstream: { targets: [\"http://127.0.0.1:9000\"], http2: true }\n",
    ));
    assert!(on.apis[0].upstream.http2);
    assert_only(
        &with_api(
            "    upstream: { targets: [\"http://h\"], http2: true, preserve_header_case: true }\n",
        ),
        "apis[0].upstream.preserve_header_case",
        "needs HTTP/1.1",
    );
    assert_only(
        &with_api("    upstream: { targets: [\"http://h\"], http2: 2 }\n"),
        "apis[0].upstream.http2",
        "",
    );
}

#[test]
fn weighted_targets() {
    let config = compile(&with_api(
        "    upstream:\n      targets: [\"http://a\", { url: \"http://b\", weight: 9 }, { url: \"http://c\", weight: 0 }, { url: \"http://d\" }]\n",
    ));
    let weights: Vec<u32> = config.apis[0]
        .upstream
        .targets
        .iter()
        .map(|t| t.weight)
        .collect();
    assert_eq!(weights, [1, 9, 0, 1]);
    assert_eq!(config.apis[0].upstream.targets[1].host, "b");
    let errors = errors(&with_api(
        "    upstream:\n      targets: [{ url: \"http://a\", weight: 101 }, { weight: 2 }, { url: \"ftp://c\" }, { url: \"http://d\", share: 1 }, { url: \"http://e\", weight: -1 }]\n",
    ));
    let at = "apis[0].upstream.targets";
    assert_has(&errors, &format!("{at}[0].weight"), "0 to 100");
    assert_has(&errors, &format!("{at}[1].url"), "missing field `url`");
    assert_has(&errors, &format!("{at}[2].url"), "invalid target `ftp://c`");
    assert_has(&errors, &format!("{at}[3].share"), "unknown field `share`");
    assert_has(&errors, &format!("{at}[4].weight"), "");
    assert_eq!(errors.len(), 5, "{errors:#?}");
    assert_only(
        &with_api("    upstream:\n      targets: [{ url: \"http://a\", weight: 0 }, { url: \"http://b\", weight: 0 }]\n"),
        at,
        "every target has weight 0",
    );
}

#[test]
fn limit_concurrency() {
    let PolicyDef::LimitConcurrency(d) =
        global_policy("limit-concurrency: { max_count: 5, counter_key: \"{subscription.id}\" }")
    else {
        panic!("not limit-concurrency");
    };
    assert_eq!(d.max_count, 5);
    assert!(d.counter_key.is_some());
    let PolicyDef::LimitConcurrency(d) = global_policy("limit-concurrency: { max_count: 1 }")
    else {
        panic!("not limit-concurrency");
    };
    assert!(d.counter_key.is_none());
    let errors = errors(&with_global_policy(
        "limit-concurrency: { max_count: 0, counter_key: \"{nope}\", queue: 3 }",
    ));
    let at = "policies.inbound[0].limit-concurrency";
    assert_has(&errors, &format!("{at}.queue"), "unknown field `queue`");
    assert_only(
        &with_global_policy("limit-concurrency: { max_count: 0 }"),
        &format!("{at}.max_count"),
        "at least 1",
    );
    assert_only(
        &with_global_policy("limit-concurrency: { max_count: 1, counter_key: \"{nope}\" }"),
        &format!("{at}.counter_key"),
        "nope",
    );
    assert_only(
        &with_global_policy("limit-concurrency: {}"),
        &format!("{at}.max_count"),
        "missing field `max_count`",
    );
}

#[test]
fn forward_request() {
    let PolicyDef::ForwardRequest { timeout } = global_policy("forward-request: { timeout: 2m }")
    else {
        panic!("not forward-request");
    };
    assert_eq!(timeout, Duration::from_secs(120));
    let at = "policies.inbound[0].forward-request";
    assert_only(
        &with_global_policy("forward-request: { timeout: 0s }"),
        &format!("{at}.timeout"),
        "",
    );
    assert_only(
        &with_global_policy("forward-request: { timeout: 2d }"),
        &format!("{at}.timeout"),
        "too long",
    );
    assert_only(
        &with_global_policy("forward-request: {}"),
        &format!("{at}.timeout"),
        "missing field `timeout`",
    );
}
