//! Tollgate's policy file: the serde model (contract §2), validation that reports every
//! problem at once with its YAML path and line, and compilation into [`CompiledConfig`]:
//! routing tables and the flattened effective policy chain of every (product, operation).
//! No I/O happens here.
//!
//! Entry points: [`parse_and_compile`] for YAML or JSON text, [`parse_and_compile_value`]
//! for an already parsed document, [`compile_file`] for a [`PolicyFile`].

mod compile;
pub mod compiled;
pub mod depth;
pub mod duration;
pub mod env;
pub mod model;
mod positions;
pub mod template;
pub mod validate;

pub use compiled::*;
pub use env::substitute_env;
pub use model::PolicyFile;
pub use template::{Part, Template, TemplateSource, Var};
pub use validate::ConfigError;

use positions::PosIndex;
use serde_yaml::Value;

/// Parses a policy file (YAML; JSON is YAML too), validates it and compiles it. On failure,
/// returns every problem found, each with its YAML path and its line and column in `text`,
/// sorted by position. A YAML syntax error is a single error.
pub fn parse_and_compile(text: &str) -> Result<CompiledConfig, Vec<ConfigError>> {
    check_depth(text).map_err(|e| vec![e])?;
    let mut value: Value = match serde_yaml::from_str(text) {
        Ok(value) => value,
        Err(err) => return Err(vec![syntax_error(text, &err)]),
    };
    if let Err(err) = value.apply_merge() {
        return Err(vec![syntax_error(text, &err)]);
    }
    run(&value, Some(text))
}

/// Refuses a text that nests deeper than [`depth::MAX_DEPTH`] levels (a cheap linear scan;
/// parsing such a text takes libyaml time quadratic in the depth). Call it before handing
/// untrusted YAML to `serde_yaml`; [`parse_and_compile`] does.
pub fn check_depth(text: &str) -> Result<(), ConfigError> {
    match depth::too_deep(text, depth::MAX_DEPTH) {
        None => Ok(()),
        Some((line, column)) => Err(ConfigError {
            path: String::new(),
            line: Some(line),
            column: Some(column),
            message: format!(
                "the document nests more than {} levels deep (lists and mappings inside each \
                 other); a policy file needs far fewer",
                depth::MAX_DEPTH
            ),
        }),
    }
}

/// Validates and compiles an already parsed document. Errors carry paths but no lines.
pub fn parse_and_compile_value(value: &Value) -> Result<CompiledConfig, Vec<ConfigError>> {
    run(value, None)
}

/// Validates and compiles a [`PolicyFile`] (e.g. one assembled by the admin API).
pub fn compile_file(file: &PolicyFile) -> Result<CompiledConfig, Vec<ConfigError>> {
    match serde_yaml::to_value(file) {
        Ok(value) => run(&value, None),
        Err(err) => Err(vec![ConfigError {
            path: String::new(),
            line: None,
            column: None,
            message: err.to_string(),
        }]),
    }
}

fn run(value: &Value, source: Option<&str>) -> Result<CompiledConfig, Vec<ConfigError>> {
    let mut cx = validate::Cx::new(source);
    let checked = validate::check_file(value, &mut cx);
    if cx.errors.is_empty() {
        match serde_path_to_error::deserialize::<_, PolicyFile>(value) {
            Ok(file) => return Ok(compile::compile(file, checked)),
            Err(err) => cx.serde_error("", &err),
        }
    }
    let mut errors = cx.errors;
    // Stable: errors at the same place keep the order they were found in.
    errors.sort_by_key(|e| (e.line.is_none(), e.line, e.column));
    Err(errors)
}

/// A YAML syntax error (or a duplicate key) as a single error.
fn syntax_error(text: &str, err: &serde_yaml::Error) -> ConfigError {
    let mut message = err.to_string();
    let (mut line, mut column) = (None, None);
    if let Some(loc) = err.location() {
        message = message.replacen(
            &format!(" at line {} column {}", loc.line(), loc.column()),
            "",
            1,
        );
        line = Some(loc.line());
        column = Some(loc.column());
    }
    let mut path = String::new();
    if let Some(pos) = message.find("duplicate entry with key") {
        // serde_yaml points at the start of the mapping (and may prefix its path); the index
        // knows the key itself.
        message = message[pos..].to_string();
        if let Some((dup_path, dup_line, dup_column)) = PosIndex::build(text).first_duplicate() {
            path = dup_path.clone();
            line = Some(*dup_line);
            column = Some(*dup_column);
        }
    }
    ConfigError {
        path,
        line,
        column,
        message,
    }
}
