//! Request path normalization, done once per request before routing.
//!
//! The path that routing, operation matching and every policy see is the path the upstream
//! receives (after the API prefix is replaced by the target's base path). So a policy on an
//! operation cannot be bypassed by spelling the path differently:
//!
//! - percent-encoded unreserved characters (`ALPHA DIGIT - . _ ~`) are decoded (`%2e` → `.`,
//!   `%41` → `A`); other escapes are kept, with upper-case hex;
//! - `.` and `..` segments are resolved (RFC 3986 §5.2.4); `..` never climbs above `/`;
//! - runs of `/` collapse into one;
//! - encoded slashes and backslashes (`%2F`, `%5C`), raw backslashes, encoded or raw control
//!   characters (`%00`–`%1F`, `%7F`), and malformed escapes are refused (400);
//! - double encoding stays what it is: `%252e` is the three characters `%2e`, never a dot.
//!
//! Bytes outside ASCII are percent-encoded.

use std::fmt;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// The path does not start with `/`.
    NotAbsolute,
    /// `%2F` or `%5C`: an encoded path separator.
    EncodedSeparator,
    /// A raw backslash.
    Backslash,
    /// A raw or encoded control character.
    ControlCharacter,
    /// `%` not followed by two hex digits.
    BadEscape,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotAbsolute => "the request path must start with '/'",
            PathError::EncodedSeparator => "encoded '/' or '\\' in the request path",
            PathError::Backslash => "backslash in the request path",
            PathError::ControlCharacter => "control character in the request path",
            PathError::BadEscape => "malformed percent-escape in the request path",
        })
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Normalize `raw` (the path part of the request target, without the query).
///
/// Returns the normalized path; it always starts with `/`.
pub fn normalize_path(raw: &[u8]) -> Result<String, PathError> {
    if raw.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // Fast path: plain ASCII without escapes, dot segments or double slashes.
    if is_already_normal(raw) {
        // Checked: printable ASCII only, so the UTF-8 check cannot fail (and takes its
        // ASCII fast path, where `from_utf8_lossy` walks the bytes in chunks).
        return Ok(String::from_utf8(raw.to_vec()).unwrap_or_else(|_| unreachable!("ASCII")));
    }
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    // Start offsets in `out` of each segment written so far (for `..`).
    let mut seg_starts: Vec<usize> = Vec::new();
    let mut seg: Vec<u8> = Vec::with_capacity(32);
    let mut i = 0;
    let mut trailing_slash = false;
    // Skip the leading '/'.
    i += 1;
    loop {
        // Read one segment (decoded where allowed) into `seg`.
        seg.clear();
        while i < raw.len() && raw[i] != b'/' {
            let b = raw[i];
            match b {
                b'%' => {
                    let (h, l) = match (raw.get(i + 1), raw.get(i + 2)) {
                        (Some(&h), Some(&l)) => (h, l),
                        _ => return Err(PathError::BadEscape),
                    };
                    let v = match (hex_val(h), hex_val(l)) {
                        (Some(h), Some(l)) => h * 16 + l,
                        _ => return Err(PathError::BadEscape),
                    };
                    if v == b'/' || v == b'\\' {
                        return Err(PathError::EncodedSeparator);
                    }
                    if v < 0x20 || v == 0x7f {
                        return Err(PathError::ControlCharacter);
                    }
                    if is_unreserved(v) {
                        seg.push(v);
                    } else {
                        seg.extend_from_slice(&[
                            b'%',
                            HEX[(v >> 4) as usize],
                            HEX[(v & 15) as usize],
                        ]);
                    }
                    i += 3;
                }
                b'\\' => return Err(PathError::Backslash),
                0..=0x20 | 0x7f => return Err(PathError::ControlCharacter),
                0x80..=0xff => {
                    seg.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
                    i += 1;
                }
                _ => {
                    seg.push(b);
                    i += 1;
                }
            }
        }
        let at_end = i >= raw.len();
        match seg.as_slice() {
            b"" => {
                // Empty segment: `//` collapses; a final empty segment is a trailing slash.
                if at_end {
                    trailing_slash = true;
                }
            }
            b"." => {
                if at_end {
                    trailing_slash = true;
                }
            }
            b".." => {
                if let Some(start) = seg_starts.pop() {
                    out.truncate(start);
                }
                if at_end {
                    trailing_slash = true;
                }
            }
            _ => {
                seg_starts.push(out.len());
                out.push(b'/');
                out.extend_from_slice(&seg);
                trailing_slash = false;
            }
        }
        if at_end {
            break;
        }
        i += 1; // skip '/'
    }
    if out.is_empty() || trailing_slash {
        out.push(b'/');
    }
    // Every byte pushed is ASCII.
    Ok(String::from_utf8(out).unwrap_or_default())
}

/// True when `raw` needs no change: ASCII graphic characters other than `%` and `\`, and no
/// `//`, `/./` or `/../` (or a final `/.` or `/..`).
fn is_already_normal(raw: &[u8]) -> bool {
    let mut prev_slash = false;
    let mut dots = 0u8; // dots since the last '/', while the segment is only dots
    let mut seg_only_dots = true;
    for &b in raw {
        match b {
            b'/' => {
                if prev_slash || (seg_only_dots && (dots == 1 || dots == 2)) {
                    return false;
                }
                prev_slash = true;
                dots = 0;
                seg_only_dots = true;
            }
            b'.' => {
                prev_slash = false;
                dots = dots.saturating_add(1);
            }
            b'%' | b'\\' => return false,
            0x21..=0x7e => {
                prev_slash = false;
                seg_only_dots = false;
            }
            _ => return false,
        }
    }
    !(seg_only_dots && (dots == 1 || dots == 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, PathError> {
        normalize_path(p.as_bytes())
    }

    #[test]
    fn plain_paths_pass_unchanged() {
        assert_eq!(n("/").unwrap(), "/");
        assert_eq!(n("/petstore/pets/42").unwrap(), "/petstore/pets/42");
        assert_eq!(n("/a/b/").unwrap(), "/a/b/");
        assert_eq!(n("/a/.well-known/x").unwrap(), "/a/.well-known/x");
        assert_eq!(n("/a/...").unwrap(), "/a/...");
    }

    #[test]
    fn dot_segments_are_resolved() {
        assert_eq!(n("/x/../y").unwrap(), "/y");
        assert_eq!(n("/x/./y").unwrap(), "/x/y");
        assert_eq!(n("/../../etc/passwd").unwrap(), "/etc/passwd");
        assert_eq!(n("/a/b/..").unwrap(), "/a/");
        assert_eq!(n("/a/b/.").unwrap(), "/a/b/");
        assert_eq!(n("/..").unwrap(), "/");
    }

    #[test]
    fn encoded_dots_are_dots() {
        assert_eq!(n("/api/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(n("/api/%2E%2e/admin").unwrap(), "/admin");
        assert_eq!(n("/api/.%2e/admin").unwrap(), "/admin");
        assert_eq!(n("/api/%2e/admin").unwrap(), "/api/admin");
    }

    #[test]
    fn double_encoding_stays_literal() {
        assert_eq!(n("/api/%252e%252e/admin").unwrap(), "/api/%252e%252e/admin");
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_uppercased() {
        assert_eq!(n("/%41%62c").unwrap(), "/Abc");
        assert_eq!(n("/a%20b").unwrap(), "/a%20b");
        assert_eq!(n("/a%3fb").unwrap(), "/a%3Fb");
        assert_eq!(n("/caf\u{e9}").unwrap(), "/caf%C3%A9");
    }

    #[test]
    fn slashes_collapse() {
        assert_eq!(n("//a///b").unwrap(), "/a/b");
        assert_eq!(n("/a//").unwrap(), "/a/");
    }

    #[test]
    fn dangerous_shapes_are_refused() {
        assert_eq!(n("/a%2fb"), Err(PathError::EncodedSeparator));
        assert_eq!(n("/a%2Fb"), Err(PathError::EncodedSeparator));
        assert_eq!(n("/a%5cb"), Err(PathError::EncodedSeparator));
        assert_eq!(n("/a\\..\\b"), Err(PathError::Backslash));
        assert_eq!(n("/a%0d%0aSet-Cookie:x"), Err(PathError::ControlCharacter));
        assert_eq!(n("/a%00"), Err(PathError::ControlCharacter));
        assert_eq!(n("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(n("/a%2"), Err(PathError::BadEscape));
        assert_eq!(n("a/b"), Err(PathError::NotAbsolute));
        assert_eq!(n("*"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn fast_path_agrees_with_slow_path() {
        for p in [
            "/a/b", "/a/./b", "/a/../b", "/a//b", "/.", "/..", "/a.", "/a..", "/..a", "/a/.b/",
        ] {
            let fast = is_already_normal(p.as_bytes());
            let got = n(p).unwrap();
            if fast {
                assert_eq!(got, p, "{p}");
            }
        }
        assert!(!is_already_normal(b"/a/./b"));
        assert!(!is_already_normal(b"/a/.."));
        assert!(is_already_normal(b"/a/..b"));
    }
}
