//! An iterative JSON parser producing a flat tape.
//!
//! serde_json recurses (and its recursion limit is 128); this one keeps an explicit stack,
//! bounds the nesting and the number of values, and keeps numbers as written. The tape
//! lists tokens in document order; a container's first token holds the index of its
//! `End`, so a value can be skipped in O(1).

use crate::TransformError;

type Result<T> = std::result::Result<T, TransformError>;

/// A string: a span of the input (no escapes in it) or of [`Doc::own`] (decoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JStr {
    In(u32, u32),
    Own(u32, u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tok {
    Null,
    True,
    False,
    /// A number, as written (span of the input).
    Num(u32, u32),
    Str(JStr),
    /// An object member's key; its value follows.
    Key(JStr),
    /// An object; the index of its `End`.
    Obj(u32),
    /// An array; the index of its `End`.
    Arr(u32),
    End,
}

/// A parsed document.
pub(crate) struct Doc<'a> {
    input: &'a [u8],
    own: Vec<u8>,
    pub(crate) tape: Vec<Tok>,
}

impl<'a> Doc<'a> {
    #[inline]
    pub(crate) fn str(&self, s: JStr) -> &[u8] {
        match s {
            JStr::In(a, b) => &self.input[a as usize..b as usize],
            JStr::Own(a, b) => &self.own[a as usize..b as usize],
        }
    }

    #[inline]
    pub(crate) fn num(&self, a: u32, b: u32) -> &[u8] {
        &self.input[a as usize..b as usize]
    }

    /// The index just after the value that starts at `i`.
    #[inline]
    pub(crate) fn next(&self, i: usize) -> usize {
        match self.tape[i] {
            Tok::Obj(e) | Tok::Arr(e) => e as usize + 1,
            _ => i + 1,
        }
    }
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
    own: Vec<u8>,
    tape: Vec<Tok>,
}

fn err(i: usize, what: &str) -> TransformError {
    TransformError::Malformed(format!("invalid JSON at byte {i}: {what}"))
}

impl Parser<'_> {
    #[inline]
    fn skip_ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    fn pos(&self) -> Result<u32> {
        u32::try_from(self.tape.len()).map_err(|_| TransformError::TooLarge)
    }

    /// Parses a string starting at the opening quote.
    fn string(&mut self) -> Result<JStr> {
        let b = self.b;
        self.i += 1;
        let start = self.i;
        loop {
            let Some(&c) = b.get(self.i) else {
                return Err(err(self.i, "unterminated string"));
            };
            match c {
                b'"' => {
                    self.i += 1;
                    return Ok(JStr::In(start as u32, (self.i - 1) as u32));
                }
                b'\\' => break,
                0..=0x1f => return Err(err(self.i, "control character in a string")),
                _ => self.i += 1,
            }
        }
        // Escapes: decode into `own`.
        let o_start = self.own.len();
        self.own.extend_from_slice(&b[start..self.i]);
        loop {
            let Some(&c) = b.get(self.i) else {
                return Err(err(self.i, "unterminated string"));
            };
            match c {
                b'"' => {
                    self.i += 1;
                    let end =
                        u32::try_from(self.own.len()).map_err(|_| TransformError::TooLarge)?;
                    return Ok(JStr::Own(o_start as u32, end));
                }
                b'\\' => {
                    let e = *b
                        .get(self.i + 1)
                        .ok_or_else(|| err(self.i, "unterminated string"))?;
                    self.i += 2;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => return Err(err(self.i - 1, "invalid escape")),
                    };
                    let mut tmp = [0u8; 4];
                    self.own
                        .extend_from_slice(ch.encode_utf8(&mut tmp).as_bytes());
                }
                0..=0x1f => return Err(err(self.i, "control character in a string")),
                _ => {
                    self.own.push(c);
                    self.i += 1;
                }
            }
        }
    }

    fn hex4(&mut self) -> Result<u32> {
        let h = self
            .b
            .get(self.i..self.i + 4)
            .ok_or_else(|| err(self.i, "invalid unicode escape"))?;
        let mut v = 0u32;
        for &d in h {
            v = v * 16
                + (d as char)
                    .to_digit(16)
                    .ok_or_else(|| err(self.i, "invalid unicode escape"))?;
        }
        self.i += 4;
        Ok(v)
    }

    /// After `\u`: four hex digits, or a surrogate pair.
    fn unicode_escape(&mut self) -> Result<char> {
        let at = self.i;
        let hi = self.hex4()?;
        let cp = if (0xD800..0xDC00).contains(&hi) {
            if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
                return Err(err(at, "unpaired surrogate in a unicode escape"));
            }
            self.i += 2;
            let lo = self.hex4()?;
            if !(0xDC00..0xE000).contains(&lo) {
                return Err(err(at, "unpaired surrogate in a unicode escape"));
            }
            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
        } else {
            hi
        };
        char::from_u32(cp).ok_or_else(|| err(at, "unpaired surrogate in a unicode escape"))
    }

    fn number(&mut self) -> Result<Tok> {
        let b = self.b;
        let start = self.i;
        let digits = |i: &mut usize| {
            let s = *i;
            while b.get(*i).is_some_and(u8::is_ascii_digit) {
                *i += 1;
            }
            *i > s
        };
        let mut i = self.i;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                digits(&mut i);
            }
            _ => return Err(err(i, "invalid number")),
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            if !digits(&mut i) {
                return Err(err(i, "invalid number"));
            }
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if !digits(&mut i) {
                return Err(err(i, "invalid number"));
            }
        }
        self.i = i;
        Ok(Tok::Num(start as u32, i as u32))
    }

    fn literal(&mut self, word: &[u8], tok: Tok) -> Result<Tok> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(tok)
        } else {
            Err(err(self.i, "invalid literal"))
        }
    }

    /// After `{` or `,` in an object: a key and its colon.
    fn key(&mut self) -> Result<()> {
        self.skip_ws();
        if self.b.get(self.i) != Some(&b'"') {
            return Err(err(self.i, "expected a string key"));
        }
        let k = self.string()?;
        self.tape.push(Tok::Key(k));
        self.skip_ws();
        if self.b.get(self.i) != Some(&b':') {
            return Err(err(self.i, "expected ':'"));
        }
        self.i += 1;
        Ok(())
    }
}

/// Parses `input` (UTF-8 already checked). Containers deeper than `max_depth` and more
/// than `max_nodes` values are refused.
pub(crate) fn parse(input: &[u8], max_depth: usize, max_nodes: usize) -> Result<Doc<'_>> {
    let mut p = Parser {
        b: input,
        i: 0,
        own: Vec::new(),
        tape: Vec::with_capacity(input.len() / 8 + 16),
    };
    // Open containers: (tape index of the start token, is an object).
    let mut stack: Vec<(usize, bool)> = Vec::new();
    let mut nodes = 0usize;
    p.skip_ws();
    if p.i == input.len() {
        return Err(err(p.i, "empty document"));
    }
    'value: loop {
        p.skip_ws();
        nodes += 1;
        if nodes > max_nodes {
            return Err(TransformError::TooManyNodes);
        }
        let Some(&c) = input.get(p.i) else {
            return Err(err(p.i, "unexpected end of document"));
        };
        let opened = match c {
            b'{' | b'[' => {
                let obj = c == b'{';
                p.i += 1;
                let at = p.tape.len();
                p.pos()?;
                p.tape.push(if obj { Tok::Obj(0) } else { Tok::Arr(0) });
                stack.push((at, obj));
                if stack.len() > max_depth {
                    return Err(TransformError::TooDeep);
                }
                p.skip_ws();
                let close = if obj { b'}' } else { b']' };
                if input.get(p.i) == Some(&close) {
                    p.i += 1;
                    false
                } else {
                    if obj {
                        p.key()?;
                    }
                    continue 'value;
                }
            }
            b'"' => {
                let s = p.string()?;
                p.tape.push(Tok::Str(s));
                true
            }
            b't' => {
                let t = p.literal(b"true", Tok::True)?;
                p.tape.push(t);
                true
            }
            b'f' => {
                let t = p.literal(b"false", Tok::False)?;
                p.tape.push(t);
                true
            }
            b'n' => {
                let t = p.literal(b"null", Tok::Null)?;
                p.tape.push(t);
                true
            }
            b'-' | b'0'..=b'9' => {
                let t = p.number()?;
                p.tape.push(t);
                true
            }
            _ => return Err(err(p.i, "expected a value")),
        };
        // An empty container was just opened and closed: close it on the tape.
        if !opened {
            close(&mut p, &mut stack)?;
        }
        // After a value: a comma, a closing bracket, or the end of the document.
        loop {
            p.skip_ws();
            let Some(&(_, obj)) = stack.last() else {
                if p.i != input.len() {
                    return Err(err(p.i, "unexpected data after the document"));
                }
                break 'value;
            };
            match input.get(p.i) {
                Some(b',') => {
                    p.i += 1;
                    if obj {
                        p.key()?;
                    }
                    continue 'value;
                }
                Some(b'}') if obj => {
                    p.i += 1;
                    close(&mut p, &mut stack)?;
                }
                Some(b']') if !obj => {
                    p.i += 1;
                    close(&mut p, &mut stack)?;
                }
                Some(_) => return Err(err(p.i, "expected ',' or a closing bracket")),
                None => return Err(err(p.i, "unexpected end of document")),
            }
        }
    }
    Ok(Doc {
        input,
        own: p.own,
        tape: p.tape,
    })
}

/// Closes the innermost container: pushes `End` and records its index in the start token.
fn close(p: &mut Parser<'_>, stack: &mut Vec<(usize, bool)>) -> Result<()> {
    let Some((at, obj)) = stack.pop() else {
        return Err(err(p.i, "unbalanced brackets"));
    };
    let end = p.pos()?;
    p.tape.push(Tok::End);
    p.tape[at] = if obj { Tok::Obj(end) } else { Tok::Arr(end) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Vec<Tok> {
        parse(s.as_bytes(), 100, 1000).unwrap().tape
    }

    fn bad(s: &str) {
        assert!(
            matches!(
                parse(s.as_bytes(), 100, 1000),
                Err(TransformError::Malformed(_))
            ),
            "{s}"
        );
    }

    #[test]
    fn tapes() {
        assert_eq!(ok(" 1 "), vec![Tok::Num(1, 2)]);
        assert_eq!(ok("[]"), vec![Tok::Arr(1), Tok::End]);
        assert_eq!(
            ok(r#"{"a":[1,{}],"b":null}"#),
            vec![
                Tok::Obj(9),
                Tok::Key(JStr::In(2, 3)),
                Tok::Arr(6),
                Tok::Num(6, 7),
                Tok::Obj(5),
                Tok::End,
                Tok::End,
                Tok::Key(JStr::In(13, 14)),
                Tok::Null,
                Tok::End,
            ]
        );
    }

    #[test]
    fn strings() {
        let d = parse(br#""a\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00z""#, 10, 10).unwrap();
        let Tok::Str(s) = d.tape[0] else { panic!() };
        assert_eq!(d.str(s), "a\"\\/\u{8}\u{c}\n\r\té😀z".as_bytes());
    }

    #[test]
    fn numbers() {
        for n in ["0", "-0", "1.5", "-12e3", "1E+2", "3.25e-7"] {
            let d = parse(n.as_bytes(), 10, 10).unwrap();
            let Tok::Num(a, b) = d.tape[0] else { panic!() };
            assert_eq!(d.num(a, b), n.as_bytes());
        }
        for n in ["01", "1.", ".5", "-", "1e", "+1", "0x10", "1.e3"] {
            bad(n);
        }
    }

    #[test]
    fn malformed() {
        for s in [
            "",
            " ",
            "{",
            "[",
            "[1,]",
            "{\"a\"}",
            "{\"a\":}",
            "{a:1}",
            "[1 2]",
            "\"abc",
            "\"a\u{1}\"",
            "tru",
            "nul",
            "[1]]",
            "{}}",
            "1 2",
            "\"\\x\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\u12\"",
            "{\"a\":1,}",
            "[}",
            "{]",
        ] {
            bad(s);
        }
    }

    #[test]
    fn limits() {
        assert_eq!(
            parse(b"[[[]]]", 2, 100).err(),
            Some(TransformError::TooDeep)
        );
        assert!(parse(b"[[[]]]", 3, 100).is_ok());
        assert_eq!(
            parse(b"[1,2,3]", 10, 3).err(),
            Some(TransformError::TooManyNodes)
        );
        assert!(parse(b"[1,2,3]", 10, 4).is_ok());
    }
}
