//! A cheap bound on how deeply a YAML text nests, checked before it is parsed.
//!
//! libyaml (behind `serde_yaml`) takes time quadratic in the depth of nested flow
//! collections (100,000 `[` took about 44 s), and `serde_yaml`'s own recursion limit only
//! applies after the whole event stream was parsed. So the text is scanned once, in linear
//! time, and refused when it nests deeper than [`MAX_DEPTH`].
//!
//! The scan counts flow collections (`[`, `{`) outside quoted scalars, plain scalars and
//! comments, plus block levels: one per indentation level in use and one per `- `, `? ` or
//! `: ` indicator that opens a node on the same line (`- - - x`). Block scalars (`|`, `>`)
//! and quoted scalars, even over several lines, count nothing. It is an estimate, not a
//! parser: a mapping holding a list at the same indentation counts once, a continuation
//! line of a plain scalar may count once more. A policy file nests about ten levels; the
//! limit is far above that and far below where parsing gets slow.

/// The deepest nesting accepted.
pub const MAX_DEPTH: usize = 64;

/// Where the scan is between bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Block context, where a node may start (after indentation or an indicator).
    NodeStart,
    /// Block context, after a scalar: only `: ` (a value follows) or a comment matter.
    AfterScalar,
    /// Inside flow collections.
    Flow,
}

/// The position (1-based line and column) where `text` first nests deeper than `max`,
/// or None.
pub fn too_deep(text: &str, max: usize) -> Option<(usize, usize)> {
    let mut flow = 0usize;
    let mut blocks: Vec<usize> = Vec::new();
    // Indentation of the line that opened a block scalar: more indented lines belong to it.
    let mut block_scalar: Option<usize> = None;
    // An open quoted scalar (its quote) and the mode to go on with after it closes.
    let mut quote: Option<(u8, Mode)> = None;
    // Last non-blank byte seen in flow context (a quote only opens a scalar after one of
    // `[{,:?`, or first thing).
    let mut prev = b'[';
    for (line_no, raw) in text.split('\n').enumerate() {
        let line = raw.as_bytes();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut pos = 0usize;
        let mut mode;
        if let Some((q, after)) = quote {
            match close_quote(line, 0, q) {
                Some(end) => {
                    quote = None;
                    pos = end;
                    mode = after;
                }
                None => continue,
            }
        } else {
            let indent = line
                .iter()
                .take_while(|b| **b == b' ' || **b == b'\t')
                .count();
            let blank = indent == line.len();
            if let Some(scalar_indent) = block_scalar {
                if blank || indent > scalar_indent {
                    continue;
                }
                block_scalar = None;
            }
            if flow > 0 {
                mode = Mode::Flow;
            } else {
                if blank || line[indent] == b'#' {
                    continue;
                }
                if indent == 0 && line[0] == b'%' {
                    continue; // a directive
                }
                if indent == 0 && (line.starts_with(b"---") || line.starts_with(b"...")) {
                    let after = line.get(3).copied();
                    if after.is_none() || after == Some(b' ') || after == Some(b'\t') {
                        blocks.clear();
                        pos = 3;
                    }
                }
                if pos == 0 {
                    while blocks.last().is_some_and(|&c| c > indent) {
                        blocks.pop();
                    }
                    if blocks.last() != Some(&indent) {
                        blocks.push(indent);
                    }
                    pos = indent;
                    // `- `, `? `, `: ` open a node each, at the column after them.
                    while pos < line.len()
                        && matches!(line[pos], b'-' | b'?' | b':')
                        && line.get(pos + 1).is_none_or(|b| *b == b' ' || *b == b'\t')
                    {
                        pos += 1;
                        while pos < line.len() && (line[pos] == b' ' || line[pos] == b'\t') {
                            pos += 1;
                        }
                        if blocks.last().is_none_or(|&c| c < pos) {
                            blocks.push(pos);
                        }
                        if blocks.len() > max {
                            return Some(position(text, line_no, pos));
                        }
                    }
                }
                if blocks.len() > max {
                    return Some(position(text, line_no, pos));
                }
                mode = Mode::NodeStart;
            }
        }
        // Scan the rest of the line.
        while pos < line.len() {
            let b = line[pos];
            match mode {
                Mode::NodeStart => match b {
                    b' ' | b'\t' => pos += 1,
                    b'&' | b'!' => {
                        // An anchor or a tag: the node comes after it.
                        while pos < line.len() && line[pos] != b' ' && line[pos] != b'\t' {
                            pos += 1;
                        }
                    }
                    b'[' | b'{' => {
                        flow += 1;
                        if blocks.len() + flow > max {
                            return Some(position(text, line_no, pos));
                        }
                        prev = b;
                        mode = Mode::Flow;
                        pos += 1;
                    }
                    b'"' | b'\'' => match close_quote(line, pos + 1, b) {
                        Some(end) => {
                            pos = end;
                            mode = Mode::AfterScalar;
                        }
                        None => {
                            quote = Some((b, Mode::AfterScalar));
                            pos = line.len();
                        }
                    },
                    b'|' | b'>' => {
                        block_scalar = Some(
                            line.iter()
                                .take_while(|b| **b == b' ' || **b == b'\t')
                                .count(),
                        );
                        pos = line.len();
                    }
                    b'#' => pos = line.len(),
                    _ => mode = Mode::AfterScalar,
                },
                Mode::AfterScalar => {
                    if b == b':' && line.get(pos + 1).is_none_or(|b| *b == b' ' || *b == b'\t') {
                        mode = Mode::NodeStart;
                    } else if b == b'#' && pos > 0 && matches!(line[pos - 1], b' ' | b'\t') {
                        pos = line.len();
                        continue;
                    }
                    pos += 1;
                }
                Mode::Flow => {
                    match b {
                        b'[' | b'{' => {
                            flow += 1;
                            if blocks.len() + flow > max {
                                return Some(position(text, line_no, pos));
                            }
                        }
                        b']' | b'}' => {
                            flow = flow.saturating_sub(1);
                            if flow == 0 {
                                mode = Mode::AfterScalar;
                            }
                        }
                        b'"' | b'\'' if matches!(prev, b'[' | b'{' | b',' | b':' | b'?') => {
                            match close_quote(line, pos + 1, b) {
                                Some(end) => {
                                    prev = b;
                                    pos = end;
                                    continue;
                                }
                                None => {
                                    quote = Some((b, Mode::Flow));
                                    prev = b;
                                    break;
                                }
                            }
                        }
                        b'#' if pos == 0 || matches!(line[pos - 1], b' ' | b'\t') => break,
                        _ => {}
                    }
                    if b != b' ' && b != b'\t' {
                        prev = b;
                    }
                    pos += 1;
                }
            }
        }
    }
    None
}

/// Where the quoted scalar opened by `q` (whose text starts at `from`) closes: the index
/// after the closing quote, or None when it goes on past the line.
fn close_quote(line: &[u8], from: usize, q: u8) -> Option<usize> {
    let mut i = from;
    while i < line.len() {
        let b = line[i];
        if q == b'"' && b == b'\\' {
            i += 2;
        } else if b == q {
            if q == b'\'' && line.get(i + 1) == Some(&b'\'') {
                i += 2;
            } else {
                return Some(i + 1);
            }
        } else {
            i += 1;
        }
    }
    None
}

/// 1-based line and column (in characters) of byte `pos` of line `line_no` (0-based).
fn position(text: &str, line_no: usize, pos: usize) -> (usize, usize) {
    let line = text.split('\n').nth(line_no).unwrap_or("");
    let pos = pos.min(line.len());
    let column = line.char_indices().take_while(|(i, _)| *i < pos).count();
    (line_no + 1, column + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_ok(text: &str, max: usize) -> bool {
        too_deep(text, max).is_none()
    }

    #[test]
    fn flow_nesting() {
        assert!(depth_ok("x: [[1]]", 3));
        assert!(!depth_ok("x: [[[1]]]", 3));
        let deep = format!("version: 1\nx: {}", "[".repeat(100_000));
        assert_eq!(too_deep(&deep, 64), Some((2, 67)));
        assert!(!depth_ok(&"{\"a\":".repeat(70), 64));
        // Siblings do not add up.
        assert!(depth_ok(&format!("x: [{}]", "[1], ".repeat(1000)), 3));
        // Flow collections over several lines.
        assert!(depth_ok("x: [\n  [1,\n   2],\n  [3]\n]\ny: [[0]]", 3));
    }

    #[test]
    fn block_nesting() {
        let mut doc = String::new();
        for i in 0..70 {
            doc.push_str(&" ".repeat(i * 2));
            doc.push_str("k:\n");
        }
        assert_eq!(too_deep(&doc, 64), Some((65, 129)));
        assert!(!depth_ok(&format!("{}x", "- ".repeat(70)), 64));
        assert!(!depth_ok(&format!("{}x", "? ".repeat(70)), 64));
        assert!(depth_ok(&format!("{}x", "- ".repeat(20)), 64));
        // Going back out frees the levels.
        let mut doc = String::new();
        for _ in 0..100 {
            doc.push_str("a:\n  b:\n    c: [1]\n");
        }
        assert!(depth_ok(&doc, 4));
    }

    #[test]
    fn scalars_and_comments_count_nothing() {
        let text = r#"version: 1
# [[[[[[[[[[[[ a comment {{{{{{{
a: "[[[[[[[[[[[[ \" {{{{{{{{{"
b: '[[[[[[[[[[[ '' {{{{{{{{{'
c: it's a [[[[[[[[[[[[[[ plain scalar {{{{{{{{ # [[[[[[[[
d: |
  [[[[[[[[[[[[[[[[[[[[
  {{{{{{{{{{{{{{{{{{{{
e: >-
    [[[[[[[[[[[[[[[
f: "multi [[[[[[[[[[[
  line [[[[[[[[[[[[[[["
g: [ "[[[[[[[[[[[[[", '{{{{{{{{{{{{', it's, "a
  [[[[[[[[[[[[[[[[[[[" ]  # {{{{{{{{{{{{{{
h: &anchor [1]
i: !tag [2]
"#;
        assert!(depth_ok(text, 3), "{:?}", too_deep(text, 3));
    }

    #[test]
    fn a_real_policy_file_is_shallow() {
        let text = r#"version: 1
settings: { max_request_body: 10MiB }
policies:
  inbound:
    - cors: { allowed_origins: ["https://a.test"], allowed_methods: [GET, POST] }
products:
  - id: gold
    apis: [pets]
    policies:
      inbound:
        - base
        - rate-limit: { calls: 5, renewal_period: 10s }
apis:
  - id: pets
    path: /pets
    upstream:
      targets: ["http://127.0.0.1:9000"]
      health_check: { path: /health, interval: 5s }
    operations:
      - id: get-pet
        method: GET
        path: /pets/{id}
        policies:
          inbound:
            - base
            - validate-jwt:
                keys:
                  - { alg: HS256, secret: "s3cr3t" }
                required_claims: { role: [admin, "ops"] }
          outbound: [ base, cache-store: { duration: 60s } ]
"#;
        assert!(depth_ok(text, 14), "{:?}", too_deep(text, 14));
        let json = r#"{"version": 1, "apis": [{"id": "a", "path": "/a", "upstream": {"targets": ["http://x"]}, "policies": {"inbound": [{"set-header": {"name": "x", "value": "{a}"}}]}}]}"#;
        assert!(depth_ok(json, 8), "{:?}", too_deep(json, 8));
    }
}
