//! Escaping for JSON strings and XML text/attributes, one pass over the bytes.

use crate::TransformError;

/// For each byte: 0 = copy as is; otherwise what to do with it in a JSON string.
static JSON_ESC: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[b'\t' as usize] = b't';
    t[b'\n' as usize] = b'n';
    t[b'\r' as usize] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    // First byte of U+FFFE / U+FFFF (EF BF BE / EF BF BF), which are not XML characters.
    t[0xEF] = b'x';
    t
};

/// Writes `bytes` (UTF-8) as a quoted JSON string.
///
/// `raw` marks text taken straight from the XML input: its line ends are normalized as
/// an XML parser must (`\r\n` and a lone `\r` become `\n`). Decoded text (`raw = false`)
/// keeps a `\r` that came from `&#13;`. A control character other than tab, line feed
/// and carriage return is not allowed in XML and makes the document malformed.
pub(crate) fn write_json_str(
    out: &mut Vec<u8>,
    bytes: &[u8],
    raw: bool,
) -> Result<(), TransformError> {
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let e = JSON_ESC[b as usize];
        if e == 0 {
            i += 1;
            continue;
        }
        if e == b'x' {
            if bytes.get(i + 1) == Some(&0xBF) && matches!(bytes.get(i + 2), Some(0xBE | 0xBF)) {
                return Err(TransformError::Malformed(
                    "character U+FFFE or U+FFFF not allowed in XML".into(),
                ));
            }
            i += 1;
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        match e {
            b'r' if raw => {
                if bytes.get(i + 1) != Some(&b'\n') {
                    out.extend_from_slice(b"\\n");
                }
            }
            b'u' => {
                return Err(TransformError::Malformed(
                    "control character not allowed in XML".into(),
                ))
            }
            _ => {
                out.push(b'\\');
                out.push(e);
            }
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
    Ok(())
}

const TEXT: u8 = 1;
const ATTR: u8 = 2;

/// Bytes that need care in XML text (bit `TEXT`) and attribute values (bit `ATTR`).
static XML_ESC: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = TEXT | ATTR;
        i += 1;
    }
    t[b'\n' as usize] = ATTR;
    t[b'\t' as usize] = ATTR;
    t[b'&' as usize] = TEXT | ATTR;
    t[b'<' as usize] = TEXT | ATTR;
    t[b'>' as usize] = TEXT | ATTR;
    t[b'"' as usize] = ATTR;
    t[b'\'' as usize] = ATTR;
    // First byte of U+FFFE / U+FFFF (EF BF BE / EF BF BF), which XML cannot carry.
    t[0xEF] = TEXT | ATTR;
    t
};

/// Writes `s` as XML character data: `&`, `<`, `>` are escaped, `\r` becomes `&#13;` so
/// that it survives line-end normalization.
pub(crate) fn write_xml_text(out: &mut Vec<u8>, s: &[u8]) -> Result<(), TransformError> {
    write_xml(out, s, TEXT)
}

/// Writes `s` as the content of a `"`-quoted attribute value: `& < > " '` are escaped,
/// and tab, line feed and carriage return become character references so that they
/// survive attribute-value normalization.
pub(crate) fn write_xml_attr(out: &mut Vec<u8>, s: &[u8]) -> Result<(), TransformError> {
    write_xml(out, s, ATTR)
}

fn write_xml(out: &mut Vec<u8>, s: &[u8], mode: u8) -> Result<(), TransformError> {
    let mut start = 0;
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if XML_ESC[b as usize] & mode == 0 {
            i += 1;
            continue;
        }
        let rep: &[u8] = match b {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'"' => b"&quot;",
            b'\'' => b"&apos;",
            b'\t' => b"&#9;",
            b'\n' => b"&#10;",
            b'\r' => b"&#13;",
            0xEF => {
                if s.get(i + 1) == Some(&0xBF) && matches!(s.get(i + 2), Some(0xBE | 0xBF)) {
                    return Err(TransformError::Unrepresentable);
                }
                i += 1;
                continue;
            }
            _ => return Err(TransformError::Unrepresentable),
        };
        out.extend_from_slice(&s[start..i]);
        out.extend_from_slice(rep);
        i += 1;
        start = i;
    }
    out.extend_from_slice(&s[start..]);
    Ok(())
}

/// XML white space: space, tab, line feed, carriage return.
#[inline]
pub(crate) fn is_xml_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// `s` without leading and trailing XML white space.
#[inline]
pub(crate) fn trim_xml_ws(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_xml_ws(b)).unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| !is_xml_ws(b))
        .map_or(start, |e| e + 1);
    &s[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(s: &str, raw: bool) -> String {
        let mut out = Vec::new();
        write_json_str(&mut out, s.as_bytes(), raw).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_strings() {
        assert_eq!(json("a\"b\\c\td\n", false), r#""a\"b\\c\td\n""#);
        assert_eq!(json("a\r\nb\rc", true), r#""a\nb\nc""#);
        assert_eq!(json("a\r\nb\rc", false), r#""a\r\nb\rc""#);
        assert_eq!(json("é😀", true), "\"é😀\"");
        assert!(write_json_str(&mut Vec::new(), b"a\x01", true).is_err());
        assert!(write_json_str(&mut Vec::new(), "a\u{FFFE}".as_bytes(), true).is_err());
        assert_eq!(
            json("\u{FFFD}\u{FF21}\u{F900}", true),
            "\"\u{FFFD}\u{FF21}\u{F900}\""
        );
    }

    #[test]
    fn xml_escapes() {
        let mut out = Vec::new();
        write_xml_text(&mut out, "a<&>\"'\r\n\té".as_bytes()).unwrap();
        assert_eq!(out, "a&lt;&amp;&gt;\"'&#13;\n\té".as_bytes());
        out.clear();
        write_xml_attr(&mut out, b"a<&>\"'\r\n\t").unwrap();
        assert_eq!(out, b"a&lt;&amp;&gt;&quot;&apos;&#13;&#10;&#9;");
        assert_eq!(
            write_xml_text(&mut Vec::new(), b"\x00"),
            Err(TransformError::Unrepresentable)
        );
        assert_eq!(
            write_xml_text(&mut Vec::new(), "x\u{FFFF}".as_bytes()),
            Err(TransformError::Unrepresentable)
        );
        assert!(write_xml_text(&mut Vec::new(), "\u{FFFD}\u{FEFF}".as_bytes()).is_ok());
    }

    #[test]
    fn trims() {
        assert_eq!(trim_xml_ws(b" \r\n a b\t"), b"a b");
        assert_eq!(trim_xml_ws(b" \n "), b"");
        assert_eq!(trim_xml_ws(b""), b"");
    }
}
