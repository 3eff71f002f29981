//! Checks on the raw HTTP/1 request head, before anything routes on it.
//!
//! Pingora's parser is lenient in ways that matter to a gateway: with both `Content-Length`
//! and `Transfer-Encoding` it silently drops the length, identical duplicate lengths are
//! merged, and duplicate `Host` lines pass. The parsed header map no longer shows these
//! shapes, so they are checked on the raw bytes the client sent.

/// What is wrong with a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadProblem {
    /// The head is larger than the limit (431).
    TooLarge,
    /// Both `Content-Length` and `Transfer-Encoding` (400, close).
    LengthAndChunked,
    /// More than one `Content-Length` (400, close).
    DuplicateLength,
    /// A `Content-Length` that is not plain digits, e.g. `+3` (400, close).
    BadLength,
    /// More than one `Host` (400, close).
    DuplicateHost,
    /// HTTP/1.1 without `Host` (400, close).
    MissingHost,
    /// A folded (obsolete line folding) header line (400, close).
    FoldedHeader,
    /// A `Transfer-Encoding` that is empty or names `chunked` more than once (400, close).
    BadCoding,
    /// A transfer coding other than `chunked`, e.g. `gzip, chunked` (501, close): the
    /// proxy would pass the coded bytes on as a plain body.
    UnsupportedCoding,
}

impl HeadProblem {
    /// The status to answer with.
    pub fn status(self) -> u16 {
        match self {
            HeadProblem::TooLarge => 431,
            HeadProblem::UnsupportedCoding => 501,
            _ => 400,
        }
    }

    /// The problem document's type slug and title.
    pub fn slug_and_title(self) -> (&'static str, &'static str) {
        slug_and_title_for(self.status())
    }

    /// Detail for the problem document.
    pub fn detail(self) -> &'static str {
        match self {
            HeadProblem::TooLarge => "the request headers are larger than the limit",
            HeadProblem::LengthAndChunked => {
                "the request has both Content-Length and Transfer-Encoding"
            }
            HeadProblem::DuplicateLength => "the request has more than one Content-Length",
            HeadProblem::BadLength => "the request's Content-Length is not a plain number",
            HeadProblem::DuplicateHost => "the request has more than one Host header",
            HeadProblem::MissingHost => "an HTTP/1.1 request needs a Host header",
            HeadProblem::FoldedHeader => "folded header lines are not accepted",
            HeadProblem::BadCoding => {
                "the request's Transfer-Encoding is empty or names chunked more than once"
            }
            HeadProblem::UnsupportedCoding => {
                "the only transfer coding accepted on requests is chunked"
            }
        }
    }
}

/// The problem type slug and title of a refused request head, by its status: 431 (too
/// large), 501 (a transfer coding other than `chunked`), else 400 (malformed). Shared by
/// the head checks here and the answers to heads Pingora's parser refused
/// (`ProxyHttp::refused_head_answer`).
pub fn slug_and_title_for(status: u16) -> (&'static str, &'static str) {
    match status {
        431 => ("headers-too-large", "Request Header Fields Too Large"),
        501 => ("unsupported-transfer-coding", "Not Implemented"),
        _ => ("malformed-request", "Bad Request"),
    }
}

/// Check a raw HTTP/1 request head (request line and header lines, as received).
pub fn check_h1_head(raw: &[u8], http11: bool, max_len: usize) -> Result<(), HeadProblem> {
    if raw.len() > max_len {
        return Err(HeadProblem::TooLarge);
    }
    let mut lengths = 0usize;
    let mut chunked = false;
    let mut codings = 0usize;
    let mut hosts = 0usize;
    // Empty lines before the request line are skipped by the parser (RFC 9112 §2.2) but
    // are part of the raw head Pingora keeps: skip them too, or the checks would take the
    // first of them for the end of the head.
    let skip = raw
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(raw.len());
    let raw = &raw[skip..];
    // Line by line (one memchr iterator over the head's line feeds), the request line
    // skipped.
    let mut feeds = memchr::memchr_iter(b'\n', raw);
    let mut start = feeds.next().map_or(raw.len(), |i| i + 1);
    while start < raw.len() {
        let end = feeds.next().unwrap_or(raw.len());
        let line = &raw[start..end];
        start = end + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(HeadProblem::FoldedHeader);
        }
        // Only `Content-Length`, `Transfer-Encoding` and `Host` are looked at: a line that
        // starts with any other letter is skipped unread (`| 0x20` lower-cases a letter and
        // maps no other byte onto these three).
        if !matches!(line[0] | 0x20, b'c' | b't' | b'h') {
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = &line[..colon];
        if name.eq_ignore_ascii_case(b"content-length") {
            lengths += 1;
            let value = trim(&line[colon + 1..]);
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                // A comma list (`3, 3`) is a duplicate in disguise.
                return Err(if value.contains(&b',') {
                    HeadProblem::DuplicateLength
                } else {
                    HeadProblem::BadLength
                });
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = true;
            for coding in line[colon + 1..].split(|&b| b == b',') {
                let coding = trim(coding);
                if coding.is_empty() {
                    continue;
                }
                if !coding.eq_ignore_ascii_case(b"chunked") {
                    return Err(HeadProblem::UnsupportedCoding);
                }
                codings += 1;
            }
        } else if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        }
    }
    if chunked && codings != 1 {
        return Err(HeadProblem::BadCoding);
    }
    if lengths > 0 && chunked {
        return Err(HeadProblem::LengthAndChunked);
    }
    if lengths > 1 {
        return Err(HeadProblem::DuplicateLength);
    }
    if hosts > 1 {
        return Err(HeadProblem::DuplicateHost);
    }
    if http11 && hosts == 0 {
        return Err(HeadProblem::MissingHost);
    }
    Ok(())
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &v[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(head: &str) -> Result<(), HeadProblem> {
        check_h1_head(head.as_bytes(), true, 8192)
    }

    #[test]
    fn ordinary_heads_pass() {
        assert_eq!(check("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Ok(()));
        assert_eq!(
            check("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n"),
            Ok(())
        );
        assert_eq!(
            check("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Ok(())
        );
        assert_eq!(check_h1_head(b"GET / HTTP/1.0\r\n\r\n", false, 100), Ok(()));
    }

    #[test]
    fn smuggling_shapes_are_found() {
        assert_eq!(
            check("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(HeadProblem::LengthAndChunked)
        );
        for (te, want) in [
            ("gzip, chunked", Err(HeadProblem::UnsupportedCoding)),
            (
                "chunked\r\nTransfer-Encoding: gzip",
                Err(HeadProblem::UnsupportedCoding),
            ),
            ("chunked, chunked", Err(HeadProblem::BadCoding)),
            ("", Err(HeadProblem::BadCoding)),
            (" Chunked ", Ok(())),
        ] {
            let head = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {te}\r\n\r\n");
            assert_eq!(check(&head), want, "{te:?}");
        }
        assert_eq!(
            check("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\n"),
            Err(HeadProblem::DuplicateLength)
        );
        assert_eq!(
            check("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n"),
            Err(HeadProblem::DuplicateLength)
        );
        assert_eq!(
            check("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n"),
            Err(HeadProblem::BadLength)
        );
        assert_eq!(
            check("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            Err(HeadProblem::DuplicateHost)
        );
        assert_eq!(
            check("GET / HTTP/1.1\r\n\r\n"),
            Err(HeadProblem::MissingHost)
        );
        assert_eq!(
            check("GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n"),
            Err(HeadProblem::FoldedHeader)
        );
    }

    #[test]
    fn empty_lines_before_the_request_line_hide_nothing() {
        for lead in ["\r\n", "\r\n\r\n", "\n\r\n\n"] {
            assert_eq!(
                check(&format!("{lead}GET / HTTP/1.1\r\nHost: a\r\n\r\n")),
                Ok(())
            );
            assert_eq!(
                check(&format!(
                    "{lead}POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n"
                )),
                Err(HeadProblem::DuplicateLength),
                "{lead:?}"
            );
        }
    }

    #[test]
    fn size_limit_is_431() {
        let head = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "a".repeat(200)
        );
        assert_eq!(
            check_h1_head(head.as_bytes(), true, 100),
            Err(HeadProblem::TooLarge)
        );
        assert_eq!(HeadProblem::TooLarge.status(), 431);
    }
}
