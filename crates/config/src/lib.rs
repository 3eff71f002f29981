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
pub use template::{CertField, Part, Template, TemplateSource, Var};
pub use validate::ConfigError;

use positions::PosIndex;
use serde_yaml::Value;

/// Parses a policy file (YAML; JSON is YAML too), validates it and compiles it. On failure,
/// returns every problem found, each with its YAML path and its line and column in `text`,
/// sorted by position. A YAML syntax error is a single error.
///
/// A few problems the YAML parser stops at are reported and then set aside so that the rest
/// is still checked: an integer too large for 64 bits (read as if it were absent), a second
/// document (only the first is checked) and a merge key (`<<`) whose value is not a mapping
/// or a list of mappings (left out).
pub fn parse_and_compile(text: &str) -> Result<CompiledConfig, Vec<ConfigError>> {
    check_depth(text).map_err(|e| vec![e])?;
    let mut early: Vec<ConfigError> = Vec::new();
    let mut text = std::borrow::Cow::Borrowed(text);
    let mut value: Value = loop {
        match serde_yaml::from_str(&text) {
            Ok(value) => break value,
            Err(err) => {
                // Bounded: each one costs a parse of the whole text.
                let blanked = if early.len() < 20 {
                    blank_huge_integer(&text, &err)
                } else {
                    None
                };
                if let Some((blanked, error)) = blanked {
                    early.push(error);
                    text = std::borrow::Cow::Owned(blanked);
                    continue;
                }
                if let Some((first, error)) = first_document(&text, &err) {
                    early.push(error);
                    text = std::borrow::Cow::Owned(first);
                    continue;
                }
                early.push(syntax_error(&text, &err));
                return Err(early);
            }
        }
    };
    if value.apply_merge().is_err() {
        // Find (on a fresh copy) and drop every merge key of the wrong shape, then merge.
        value = serde_yaml::from_str(&text).map_err(|err| vec![syntax_error(&text, &err)])?;
        let mut bad = Vec::new();
        drop_bad_merge_keys(&mut value, "", &mut bad);
        let index = PosIndex::build(&text);
        for (path, found) in bad {
            let position = index.lookup(&path);
            early.push(ConfigError {
                line: position.map(|p| p.0),
                column: position.map(|p| p.1),
                path,
                message: format!(
                    "a merge key (`<<`) takes a mapping or a list of mappings, found {found}"
                ),
            });
        }
        if let Err(err) = value.apply_merge() {
            early.push(syntax_error(&text, &err));
            return Err(early);
        }
    }
    match run(&value, Some(&text)) {
        Ok(compiled) if early.is_empty() => Ok(compiled),
        Ok(_) => {
            early.sort_by_key(|e| (e.line.is_none(), e.line, e.column));
            Err(early)
        }
        Err(errors) => {
            // A piece reported here (e.g. a blanked integer) is not reported again.
            let mut all = early.clone();
            all.extend(
                errors
                    .into_iter()
                    .filter(|e| e.path.is_empty() || !early.iter().any(|x| x.path == e.path)),
            );
            all.sort_by_key(|e| (e.line.is_none(), e.line, e.column));
            Err(all)
        }
    }
}

/// For an integer that does not fit in 64 bits (serde_yaml's Value cannot hold it): the
/// text with that integer replaced by `~` and spaces (same length, so every position stays),
/// and the error, at its path and position.
fn blank_huge_integer(text: &str, err: &serde_yaml::Error) -> Option<(String, ConfigError)> {
    let message = err.to_string();
    let marker = "invalid type: integer `";
    let at = message.find(marker)?;
    let rest = &message[at + marker.len()..];
    let number = &rest[..rest.find('`')?];
    if !(rest.contains("` as u128") || rest.contains("` as i128")) {
        return None;
    }
    let path = message[..at].strip_suffix(": ").unwrap_or("").to_string();
    let loc = err.location()?;
    let start = loc.index();
    if start >= text.len() || !text.is_char_boundary(start) {
        return None;
    }
    let len = text[start..]
        .find([' ', '\t', '\r', '\n', ',', ']', '}', '#'])
        .unwrap_or(text.len() - start);
    if len == 0 || !text[start..start + len].is_ascii() {
        return None;
    }
    let mut blanked = String::with_capacity(text.len());
    blanked.push_str(&text[..start]);
    blanked.push('~');
    blanked.push_str(&" ".repeat(len - 1));
    blanked.push_str(&text[start + len..]);
    let error = ConfigError {
        path,
        line: Some(loc.line()),
        column: Some(loc.column()),
        message: format!("the integer `{number}` is out of range (integers must fit in 64 bits)"),
    };
    Some((blanked, error))
}

/// For a text of several documents: the first one alone, and an error where the second
/// one starts.
fn first_document(text: &str, err: &serde_yaml::Error) -> Option<(String, ConfigError)> {
    if !err.to_string().contains("more than one document") {
        return None;
    }
    let (line, column) = PosIndex::second_document(text)?;
    let cut: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    let error = ConfigError {
        path: String::new(),
        line: Some(line),
        column: Some(column),
        message: "a second YAML document starts here: a policy file is one document (only \
                  the first was checked)"
            .to_string(),
    };
    Some((text[..cut].to_string(), error))
}

/// Removes every merge key (`<<`) whose value is neither a mapping nor a list of mappings,
/// noting its path and what it held.
fn drop_bad_merge_keys(value: &mut Value, path: &str, bad: &mut Vec<(String, String)>) {
    match value {
        Value::Mapping(map) => {
            let merge = Value::String("<<".to_string());
            if let Some(v) = map.get(&merge) {
                let ok = match v {
                    Value::Mapping(_) => true,
                    Value::Sequence(items) => items.iter().all(Value::is_mapping),
                    _ => false,
                };
                if !ok {
                    let found = match v {
                        Value::Sequence(_) => "a list holding something else".to_string(),
                        other => validate::describe(other),
                    };
                    bad.push((positions::join_key(path, "<<"), found));
                    map.remove(&merge);
                }
            }
            for (k, v) in map.iter_mut() {
                let p = match k.as_str() {
                    Some(k) => positions::join_key(path, k),
                    None => path.to_string(),
                };
                drop_bad_merge_keys(v, &p, bad);
            }
        }
        Value::Sequence(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                drop_bad_merge_keys(v, &positions::join_index(path, i), bad);
            }
        }
        Value::Tagged(tagged) => drop_bad_merge_keys(&mut tagged.value, path, bad),
        _ => {}
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
    if let Some(at) = message.find(" at position ") {
        // libyaml's reader errors (a control character...) give a byte offset instead.
        if let Ok(offset) = message[at + " at position ".len()..]
            .trim()
            .parse::<usize>()
        {
            let (l, c) = offset_position(text, offset);
            line = Some(l);
            column = Some(c);
            message.truncate(at);
        }
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

/// 1-based line and column (in characters) of byte `offset` of `text`.
fn offset_position(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}
