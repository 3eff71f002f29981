//! XML 1.0 (fifth edition) `Name` production.

/// Whether `b` (UTF-8) is an XML `Name`.
pub(crate) fn is_xml_name(b: &[u8]) -> bool {
    let Some(&first) = b.first() else {
        return false;
    };
    // Fast path: pure ASCII names.
    if first < 0x80 && b.iter().all(|&c| c < 0x80) {
        if !ascii_start(first) {
            return false;
        }
        return b[1..]
            .iter()
            .all(|&c| ascii_start(c) || matches!(c, b'-' | b'.' | b'0'..=b'9'));
    }
    let Ok(s) = std::str::from_utf8(b) else {
        return false;
    };
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if is_name_start(c) => {}
        _ => return false,
    }
    chars.all(is_name_char)
}

#[inline]
fn ascii_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn is_name_start(c: char) -> bool {
    matches!(c,
        ':' | 'A'..='Z' | '_' | 'a'..='z'
        | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}'
        | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}'
        | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}' | '\u{10000}'..='\u{EFFFF}')
}

fn is_name_char(c: char) -> bool {
    is_name_start(c)
        || matches!(c,
            '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

#[cfg(test)]
mod tests {
    use super::is_xml_name;

    #[test]
    fn names() {
        for ok in ["a", "_x", "ns:el", "a-b.c9", "élan", "名前", "xmlns:p", ":"] {
            assert!(is_xml_name(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "", "1a", "-a", ".a", "a b", "a>", "a\"", "@a", "#text", "a/b", "a\u{0}",
        ] {
            assert!(!is_xml_name(bad.as_bytes()), "{bad}");
        }
    }
}
