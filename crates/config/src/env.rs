//! `${env:NAME}` substitution in policy files, so secrets (JWT keys, shared secrets) live in
//! the environment of the CI job or the process, not in the committed file.
//!
//! `NAME` is `[A-Za-z_][A-Za-z0-9_]*`. `$${env:NAME}` stands for the literal text
//! `${env:NAME}`. A variable that is not set is an error (with its line and column), never
//! an empty string: a missing secret must not silently become an empty key.

use crate::ConfigError;

/// Replace every `${env:NAME}` in `text` using `lookup` (usually `std::env::var`).
pub fn substitute_env_with(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, Vec<ConfigError>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let mut rest = text;
    let mut consumed = 0usize;
    while let Some(pos) = rest.find("${env:") {
        let escaped = pos > 0 && rest.as_bytes()[pos - 1] == b'$';
        let after = &rest[pos + 6..];
        let end = after.find('}');
        let name = end.map(|e| &after[..e]);
        let valid = name.is_some_and(|n| {
            let mut b = n.bytes();
            b.next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
                && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
        });
        if escaped {
            out.push_str(&rest[..pos - 1]);
            out.push_str("${env:");
            consumed += pos + 6;
            rest = after;
            continue;
        }
        out.push_str(&rest[..pos]);
        let at = consumed + pos;
        let (line, column) = line_col(text, at);
        match (valid, name) {
            (true, Some(name)) => match lookup(name) {
                Some(v) => out.push_str(&v),
                None => errors.push(ConfigError {
                    path: String::new(),
                    line: Some(line),
                    column: Some(column),
                    message: format!("environment variable `{name}` is not set"),
                }),
            },
            _ => errors.push(ConfigError {
                path: String::new(),
                line: Some(line),
                column: Some(column),
                message: "`${env:` must be followed by a variable name and `}`".to_string(),
            }),
        }
        let skip = match (valid, end) {
            (true, Some(e)) => pos + 6 + e + 1,
            _ => pos + 6,
        };
        consumed += skip;
        rest = &rest[skip..];
    }
    out.push_str(rest);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Replace every `${env:NAME}` in `text` from the process environment.
pub fn substitute_env(text: &str) -> Result<String, Vec<ConfigError>> {
    substitute_env_with(text, |n| std::env::var(n).ok())
}

fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let column = before.rfind('\n').map_or(at, |nl| at - nl - 1) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SECRET" => Some("s3cr3t".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_known_variables() {
        let out = substitute_env_with("a: ${env:SECRET}\nb: x${env:EMPTY}y\n", env).unwrap();
        assert_eq!(out, "a: s3cr3t\nb: xy\n");
    }

    #[test]
    fn text_without_variables_is_unchanged() {
        let t = "version: 1\n# costs $5 {x}\n";
        assert_eq!(substitute_env_with(t, env).unwrap(), t);
    }

    #[test]
    fn escaped_form_stays_literal() {
        assert_eq!(
            substitute_env_with("v: $${env:SECRET}", env).unwrap(),
            "v: ${env:SECRET}"
        );
    }

    #[test]
    fn every_missing_variable_is_reported_with_its_position() {
        let errs = substitute_env_with(
            "a: ${env:NOPE}\nb:  ${env:ALSO_NOPE}\nc: ${env:1bad}\n",
            env,
        )
        .unwrap_err();
        assert_eq!(errs.len(), 3);
        assert_eq!((errs[0].line, errs[0].column), (Some(1), Some(4)));
        assert!(errs[0].message.contains("NOPE"));
        assert_eq!((errs[1].line, errs[1].column), (Some(2), Some(5)));
        assert_eq!(errs[2].line, Some(3));
    }
}
