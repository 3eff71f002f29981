//! XML → JSON.
//!
//! One event loop ([`drive`]) reads the document with quick-xml's borrowing slice reader
//! and enforces the rules shared by both output forms (no DOCTYPE, one root element,
//! limits, entity decoding, well-formedness checks quick-xml leaves to its caller). It
//! feeds a [`Sink`]:
//!
//! * [`TreeSink`] (javascript-friendly) builds a compact arena of element nodes — names,
//!   attributes and texts are spans of the input whenever no decoding was needed — and
//!   links repeated siblings at each element's end tag; [`write_tree`] then serializes
//!   the arena with an explicit stack.
//! * [`DirectSink`] streams the direct form straight into the output buffer.
//!
//! Nothing here recurses.

use std::collections::HashMap;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use crate::escape::{is_xml_ws, trim_xml_ws, write_json_str};
use crate::name::is_xml_name;
use crate::{snippet, Limits, TransformError, XmlToJsonKind};

type Result<T> = std::result::Result<T, TransformError>;

const NONE: u32 = u32::MAX;

fn malformed(msg: impl Into<String>) -> TransformError {
    TransformError::Malformed(msg.into())
}

/// A piece of text: a span of the input (still raw: line ends not yet normalized) or a
/// span of [`Store::own`] (decoded, final).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Str {
    Empty,
    In(u32, u32),
    Own(u32, u32),
}

/// The input and the buffer of decoded strings that [`Str`] points into.
struct Store<'a> {
    input: &'a [u8],
    own: Vec<u8>,
}

impl<'a> Store<'a> {
    /// The span of `s` if it lies inside the input (quick-xml's slice reader borrows).
    #[inline]
    fn locate(&self, s: &[u8]) -> Option<Str> {
        let base = self.input.as_ptr() as usize;
        let p = s.as_ptr() as usize;
        if p >= base && p + s.len() <= base + self.input.len() {
            let start = (p - base) as u32;
            Some(Str::In(start, start + s.len() as u32))
        } else {
            None
        }
    }

    /// A [`Str`] for `s`: its span when it is part of the input, else a copy.
    #[inline]
    fn intern(&mut self, s: &[u8]) -> Result<Str> {
        match self.locate(s) {
            Some(r) => Ok(r),
            None => self.push_own(s),
        }
    }

    fn push_own(&mut self, s: &[u8]) -> Result<Str> {
        let start = self.own.len();
        self.own.extend_from_slice(s);
        let end = u32::try_from(self.own.len()).map_err(|_| TransformError::TooLarge)?;
        Ok(Str::Own(start as u32, end))
    }

    #[inline]
    fn get(&self, s: Str) -> &[u8] {
        match s {
            Str::Empty => &[],
            Str::In(a, b) => &self.input[a as usize..b as usize],
            Str::Own(a, b) => &self.own[a as usize..b as usize],
        }
    }
}

/// Writes `s` as a JSON string; input spans get XML line-end normalization.
#[inline]
fn write_str(out: &mut Vec<u8>, st: &Store<'_>, s: Str) -> Result<()> {
    write_json_str(out, st.get(s), matches!(s, Str::In(..)))
}

/// Appends raw text to a decoded buffer, normalizing `\r\n` and `\r` to `\n`.
fn append_normalized(buf: &mut Vec<u8>, raw: &[u8]) {
    let mut rest = raw;
    while let Some(i) = memchr::memchr(b'\r', rest) {
        buf.extend_from_slice(&rest[..i]);
        buf.push(b'\n');
        rest = &rest[i + 1..];
        if rest.first() == Some(&b'\n') {
            rest = &rest[1..];
        }
    }
    buf.extend_from_slice(rest);
}

/// Decodes the name of a general reference (`amp`, `#x41`, …): the five predefined
/// entities and character references. Anything else is undefined (there is no DTD).
fn decode_ref(name: &[u8]) -> Result<char> {
    let c = match name {
        b"lt" => '<',
        b"gt" => '>',
        b"amp" => '&',
        b"apos" => '\'',
        b"quot" => '"',
        [b'#', b'x', hex @ ..] => char_ref(hex, 16)?,
        [b'#', dec @ ..] => char_ref(dec, 10)?,
        _ => return Err(malformed(format!("undefined entity &{};", snippet(name)))),
    };
    Ok(c)
}

fn char_ref(digits: &[u8], radix: u32) -> Result<char> {
    let bad = || malformed(format!("invalid character reference {}", snippet(digits)));
    if digits.is_empty() {
        return Err(bad());
    }
    let mut v: u32 = 0;
    for &d in digits {
        let x = (d as char).to_digit(radix).ok_or_else(bad)?;
        v = v
            .checked_mul(radix)
            .and_then(|v| v.checked_add(x))
            .ok_or_else(bad)?;
    }
    match char::from_u32(v) {
        Some(c) if is_xml_char(c) => Ok(c),
        _ => Err(bad()),
    }
}

/// The XML 1.0 `Char` production.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Decodes an attribute value: references, then attribute-value normalization (tab,
/// line feed, carriage return and `\r\n` each become one space; characters written as
/// references are kept). A value that needs none of that stays a span of the input.
fn attr_value(st: &mut Store<'_>, raw: &[u8]) -> Result<Str> {
    let needs_work = raw.iter().any(|&b| b < 0x20 || b == b'&' || b == b'<');
    if !needs_work {
        return st.intern(raw);
    }
    let start = st.own.len();
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        match b {
            b'\t' | b'\n' => st.own.push(b' '),
            b'\r' => {
                st.own.push(b' ');
                if raw.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'<' => return Err(malformed("'<' in an attribute value")),
            b'&' => {
                let len = memchr::memchr(b';', &raw[i + 1..])
                    .ok_or_else(|| malformed("unterminated reference in an attribute value"))?;
                let c = decode_ref(&raw[i + 1..i + 1 + len])?;
                let mut tmp = [0u8; 4];
                st.own.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
                i += len + 1;
            }
            0..=0x1f => return Err(malformed("control character not allowed in XML")),
            _ => st.own.push(b),
        }
        i += 1;
    }
    let end = u32::try_from(st.own.len()).map_err(|_| TransformError::TooLarge)?;
    Ok(Str::Own(start as u32, end))
}

/// What the event loop feeds: elements opening and closing, and character data.
trait Sink {
    /// An element opens; `attrs` are its (name, value) pairs in document order.
    fn start(&mut self, st: &mut Store<'_>, name: Str, attrs: &[(Str, Str)]) -> Result<()>;
    /// The innermost open element closes.
    fn end(&mut self, st: &mut Store<'_>) -> Result<()>;
    /// Raw character data from the input (text or CDATA), line ends not normalized.
    fn text(&mut self, st: &mut Store<'_>, raw: &[u8]) -> Result<()>;
    /// A character from a reference.
    fn chr(&mut self, st: &mut Store<'_>, c: char) -> Result<()>;
}

/// Whether text holds `]]>`, which XML does not allow outside CDATA sections.
#[inline]
fn has_cdata_end(raw: &[u8]) -> bool {
    memchr::memchr_iter(b'>', raw).any(|i| i >= 2 && &raw[i - 2..i] == b"]]")
}

/// Checks size and encoding and returns the document without a UTF-8 byte order mark.
fn prepare<'a>(input: &'a [u8], limits: &Limits) -> Result<&'a [u8]> {
    if input.len() > limits.max_bytes || input.len() >= u32::MAX as usize {
        return Err(TransformError::TooLarge);
    }
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    if let Err(e) = std::str::from_utf8(input) {
        return Err(malformed(format!(
            "the document is not UTF-8 (invalid byte at {})",
            e.valid_up_to()
        )));
    }
    Ok(input)
}

pub(crate) fn convert(input: &[u8], kind: XmlToJsonKind, limits: &Limits) -> Result<Vec<u8>> {
    let input = prepare(input, limits)?;
    let mut st = Store {
        input,
        own: Vec::new(),
    };
    let mut out = Vec::with_capacity(input.len() + input.len() / 4 + 16);
    match kind {
        XmlToJsonKind::JavascriptFriendly => {
            let mut sink = TreeSink::default();
            drive(&mut st, limits, &mut sink)?;
            write_tree(&sink, &st, &mut out)?;
        }
        XmlToJsonKind::Direct => {
            let mut sink = DirectSink {
                out,
                stack: Vec::new(),
                acc: Acc::None,
                buf: Vec::new(),
            };
            drive(&mut st, limits, &mut sink)?;
            out = sink.out;
        }
    }
    Ok(out)
}

/// A quick-xml error as a client-safe message with the byte position.
fn xml_error(reader: &Reader<&[u8]>, e: quick_xml::Error) -> TransformError {
    let mut msg = e.to_string();
    if msg.len() > 160 {
        let mut cut = 160;
        while !msg.is_char_boundary(cut) {
            cut -= 1;
        }
        msg.truncate(cut);
        msg.push('…');
    }
    malformed(format!("{msg} (at byte {})", reader.error_position()))
}

/// The event loop shared by both output forms.
fn drive<'a, S: Sink>(st: &mut Store<'a>, limits: &Limits, sink: &mut S) -> Result<()> {
    let input = st.input;
    let mut reader = Reader::from_reader(input);
    {
        let cfg = reader.config_mut();
        cfg.check_end_names = true;
        cfg.expand_empty_elements = false;
        cfg.allow_unmatched_ends = false;
        cfg.allow_dangling_amp = false;
        cfg.trim_text(false);
    }
    let mut depth = 0usize;
    let mut nodes = 0usize;
    let mut root_done = false;
    let mut first = true;
    // Whether the current run of character data was already counted as a text node.
    let mut run_counted = false;
    let mut attrs: Vec<(Str, Str)> = Vec::new();
    let mut seen: Option<std::collections::HashSet<&'a [u8]>> = None;

    loop {
        let ev = reader.read_event().map_err(|e| xml_error(&reader, e))?;
        let was_first = std::mem::replace(&mut first, false);
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                if root_done {
                    return Err(malformed("more than one root element"));
                }
                if depth + 1 > limits.max_depth {
                    return Err(TransformError::TooDeep);
                }
                let name = element_name(st, e)?;
                attrs.clear();
                read_attrs(st, e, &mut attrs, &mut seen)?;
                nodes += 1 + attrs.len();
                if nodes > limits.max_nodes {
                    return Err(TransformError::TooManyNodes);
                }
                run_counted = false;
                sink.start(st, name, &attrs)?;
                if matches!(ev, Event::Empty(_)) {
                    sink.end(st)?;
                    root_done = depth == 0;
                } else {
                    depth += 1;
                }
            }
            Event::End(_) => {
                if depth == 0 {
                    return Err(malformed("end tag without a start tag"));
                }
                run_counted = false;
                sink.end(st)?;
                depth -= 1;
                root_done = depth == 0;
            }
            Event::Text(ref t) => {
                let raw: &[u8] = t;
                if depth == 0 {
                    if !raw.iter().all(|&b| is_xml_ws(b)) {
                        return Err(malformed("text outside the root element"));
                    }
                    continue;
                }
                if has_cdata_end(raw) {
                    return Err(malformed("']]>' in text"));
                }
                if !run_counted && raw.iter().any(|&b| !is_xml_ws(b)) {
                    run_counted = true;
                    nodes += 1;
                    if nodes > limits.max_nodes {
                        return Err(TransformError::TooManyNodes);
                    }
                }
                sink.text(st, raw)?;
            }
            Event::CData(ref t) => {
                if depth == 0 {
                    return Err(malformed("CDATA outside the root element"));
                }
                if !run_counted {
                    run_counted = true;
                    nodes += 1;
                    if nodes > limits.max_nodes {
                        return Err(TransformError::TooManyNodes);
                    }
                }
                sink.text(st, t)?;
            }
            Event::GeneralRef(ref r) => {
                if depth == 0 {
                    return Err(malformed("reference outside the root element"));
                }
                let c = decode_ref(r)?;
                if !run_counted && !matches!(c, ' ' | '\t' | '\n' | '\r') {
                    run_counted = true;
                    nodes += 1;
                    if nodes > limits.max_nodes {
                        return Err(TransformError::TooManyNodes);
                    }
                }
                sink.chr(st, c)?;
            }
            Event::Decl(ref d) => {
                if !was_first {
                    return Err(malformed(
                        "XML declaration not at the start of the document",
                    ));
                }
                if let Some(enc) = d.encoding() {
                    let enc = enc.map_err(|_| malformed("invalid XML declaration"))?;
                    let ok = [&b"utf-8"[..], b"utf8", b"us-ascii", b"ascii"]
                        .iter()
                        .any(|e| enc.eq_ignore_ascii_case(e));
                    if !ok {
                        return Err(malformed(format!(
                            "unsupported encoding {:?}; only UTF-8 is accepted",
                            snippet(&enc)
                        )));
                    }
                }
            }
            Event::DocType(_) => return Err(TransformError::DoctypeRefused),
            Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => {
                if depth > 0 {
                    return Err(malformed("unexpected end of document: unclosed element"));
                }
                if !root_done {
                    return Err(malformed("no root element"));
                }
                return Ok(());
            }
        }
    }
}

fn element_name(st: &mut Store<'_>, e: &BytesStart<'_>) -> Result<Str> {
    let name = e.name();
    let name = name.as_ref();
    if !is_xml_name(name) {
        return Err(malformed(format!(
            "invalid element name {:?}",
            snippet(name)
        )));
    }
    st.intern(name)
}

/// Reads the attributes of a start tag into `attrs`, checking names and duplicates (a
/// scan for a few, a hash set beyond 16, so a tag with 100,000 attributes stays linear).
fn read_attrs<'i>(
    st: &mut Store<'i>,
    e: &BytesStart<'_>,
    attrs: &mut Vec<(Str, Str)>,
    seen: &mut Option<std::collections::HashSet<&'i [u8]>>,
) -> Result<()> {
    if e.attributes_raw().iter().all(|&b| is_xml_ws(b)) {
        return Ok(());
    }
    let input = st.input;
    if let Some(s) = seen.as_mut() {
        s.clear();
    }
    let mut use_set = false;
    for a in e.attributes().with_checks(false) {
        let a = a.map_err(|e| malformed(format!("invalid attribute: {e}")))?;
        let key = a.key.as_ref();
        if !is_xml_name(key) {
            return Err(malformed(format!(
                "invalid attribute name {:?}",
                snippet(key)
            )));
        }
        let k = st.intern(key)?;
        // Names of the input are checked for duplicates by content.
        let kb: &[u8] = match k {
            Str::In(a, b) => &input[a as usize..b as usize],
            _ => {
                return Err(malformed("invalid attribute"));
            }
        };
        let dup = if use_set {
            !seen.get_or_insert_with(Default::default).insert(kb)
        } else {
            let d = attrs.iter().any(|&(n, _)| st.get(n) == kb);
            if !d && attrs.len() >= 16 {
                use_set = true;
                let set = seen.get_or_insert_with(Default::default);
                set.clear();
                for &(n, _) in attrs.iter() {
                    if let Str::In(a, b) = n {
                        set.insert(&input[a as usize..b as usize]);
                    }
                }
                set.insert(kb);
            }
            d
        };
        if dup {
            return Err(malformed(format!("duplicate attribute {:?}", snippet(kb))));
        }
        let v = attr_value(st, &a.value)?;
        attrs.push((k, v));
    }
    Ok(())
}

/// Character data collected for one element (tree) or one run (direct).
#[derive(Debug, Clone, Copy)]
enum Acc {
    /// Nothing yet.
    None,
    /// A single raw piece of the input.
    One(Str),
    /// Several pieces, decoded into a buffer.
    Buf,
}

impl Acc {
    /// Adds raw text; `buf` is the buffer that belongs to this accumulator.
    #[inline]
    fn text(&mut self, st: &mut Store<'_>, buf: &mut Vec<u8>, raw: &[u8]) {
        match *self {
            Acc::None => match st.locate(raw) {
                Some(s) => *self = Acc::One(s),
                None => {
                    buf.clear();
                    append_normalized(buf, raw);
                    *self = Acc::Buf;
                }
            },
            Acc::One(prev) => {
                buf.clear();
                append_normalized(buf, st.get(prev));
                append_normalized(buf, raw);
                *self = Acc::Buf;
            }
            Acc::Buf => append_normalized(buf, raw),
        }
    }

    /// Adds a decoded character.
    #[inline]
    fn chr(&mut self, st: &Store<'_>, buf: &mut Vec<u8>, c: char) {
        match *self {
            Acc::None => buf.clear(),
            Acc::One(prev) => {
                buf.clear();
                append_normalized(buf, st.get(prev));
            }
            Acc::Buf => {}
        }
        *self = Acc::Buf;
        let mut tmp = [0u8; 4];
        buf.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
    }
}

// ---------------------------------------------------------------------------------------
// javascript-friendly: arena tree, then serialization

/// The element is the first of its name among its siblings: it writes the key.
const FIRST: u8 = 1;
/// The element's name occurs more than once among its siblings: its key holds an array
/// (set on the first of the name).
const REPEATED: u8 = 2;

#[derive(Debug, Clone, Copy)]
struct Node {
    name: Str,
    text: Str,
    attr_start: u32,
    attr_len: u32,
    first_child: u32,
    next_sibling: u32,
    /// Next sibling with the same name (valid once the parent has closed).
    next_same: u32,
    flags: u8,
}

#[derive(Debug)]
struct Open {
    node: u32,
    last_child: u32,
    acc: Acc,
}

#[derive(Default)]
struct TreeSink {
    nodes: Vec<Node>,
    attrs: Vec<(Str, Str)>,
    open: Vec<Open>,
    /// One text buffer per open depth, reused.
    bufs: Vec<Vec<u8>>,
    /// Scratch for grouping siblings by name: (first, last) of each name.
    groups: Vec<(u32, u32)>,
}

impl Sink for TreeSink {
    fn start(&mut self, _st: &mut Store<'_>, name: Str, attrs: &[(Str, Str)]) -> Result<()> {
        let idx = self.nodes.len() as u32;
        self.nodes.push(Node {
            name,
            text: Str::Empty,
            attr_start: self.attrs.len() as u32,
            attr_len: attrs.len() as u32,
            first_child: NONE,
            next_sibling: NONE,
            next_same: NONE,
            flags: 0,
        });
        self.attrs.extend_from_slice(attrs);
        if let Some(parent) = self.open.last_mut() {
            if parent.last_child == NONE {
                self.nodes[parent.node as usize].first_child = idx;
            } else {
                self.nodes[parent.last_child as usize].next_sibling = idx;
            }
            parent.last_child = idx;
        }
        self.open.push(Open {
            node: idx,
            last_child: NONE,
            acc: Acc::None,
        });
        if self.bufs.len() < self.open.len() {
            self.bufs.push(Vec::new());
        }
        Ok(())
    }

    fn end(&mut self, st: &mut Store<'_>) -> Result<()> {
        let Some(o) = self.open.pop() else {
            return Err(malformed("end tag without a start tag"));
        };
        let depth = self.open.len();
        let text = match o.acc {
            Acc::None => Str::Empty,
            Acc::One(s) => {
                let raw = st.get(s);
                let t = trim_xml_ws(raw);
                if t.is_empty() {
                    Str::Empty
                } else {
                    st.locate(t).unwrap_or(Str::Empty)
                }
            }
            Acc::Buf => {
                let t = trim_xml_ws(&self.bufs[depth]);
                if t.is_empty() {
                    Str::Empty
                } else {
                    st.push_own(t)?
                }
            }
        };
        self.nodes[o.node as usize].text = text;
        if o.last_child != NONE {
            self.group_children(st, o.node);
        }
        Ok(())
    }

    #[inline]
    fn text(&mut self, st: &mut Store<'_>, raw: &[u8]) -> Result<()> {
        let Some(depth) = self.open.len().checked_sub(1) else {
            return Err(malformed("text outside the root element"));
        };
        let o = &mut self.open[depth];
        o.acc.text(st, &mut self.bufs[depth], raw);
        Ok(())
    }

    fn chr(&mut self, st: &mut Store<'_>, c: char) -> Result<()> {
        let Some(depth) = self.open.len().checked_sub(1) else {
            return Err(malformed("text outside the root element"));
        };
        let o = &mut self.open[depth];
        o.acc.chr(st, &mut self.bufs[depth], c);
        Ok(())
    }
}

impl TreeSink {
    /// Links the children of `parent` by name: marks the first of each name, chains the
    /// others through `next_same`, and marks names that repeat. Linear: a scan of the
    /// names seen so far while there are few, a hash map beyond 16 distinct names.
    fn group_children(&mut self, st: &Store<'_>, parent: u32) {
        let nodes = &mut self.nodes;
        let groups = &mut self.groups;
        groups.clear();
        let mut map: Option<HashMap<&[u8], usize>> = None;
        let mut last_g = 0usize;
        let mut c = nodes[parent as usize].first_child;
        while c != NONE {
            let name = st.get(nodes[c as usize].name);
            let found = if let Some(m) = &map {
                m.get(name).copied()
            } else if !groups.is_empty() && st.get(nodes[groups[last_g].0 as usize].name) == name {
                Some(last_g)
            } else {
                groups
                    .iter()
                    .position(|&(f, _)| st.get(nodes[f as usize].name) == name)
            };
            match found {
                Some(g) => {
                    let (f, l) = groups[g];
                    nodes[l as usize].next_same = c;
                    nodes[f as usize].flags |= REPEATED;
                    groups[g].1 = c;
                    last_g = g;
                }
                None => {
                    nodes[c as usize].flags |= FIRST;
                    groups.push((c, c));
                    last_g = groups.len() - 1;
                    if let Some(m) = &mut map {
                        m.insert(name, last_g);
                    } else if groups.len() > 16 {
                        let mut m = HashMap::with_capacity(64);
                        for (i, &(f, _)) in groups.iter().enumerate() {
                            m.insert(st.get(nodes[f as usize].name), i);
                        }
                        map = Some(m);
                    }
                }
            }
            c = nodes[c as usize].next_sibling;
        }
    }
}

/// One object being written by [`write_tree`].
struct Frame {
    node: u32,
    /// Next child to look at.
    cursor: u32,
    /// Inside an array of repeated siblings: the next one to write.
    group: u32,
    in_group: bool,
    group_first: bool,
    need_comma: bool,
}

#[inline]
fn write_key(out: &mut Vec<u8>, prefix: &[u8], name: &[u8]) {
    // Names are XML names: no quote, backslash or control character to escape.
    out.push(b'"');
    out.extend_from_slice(prefix);
    out.extend_from_slice(name);
    out.extend_from_slice(b"\":");
}

/// Writes the value of an element: `null`, a string, or the start of an object (then a
/// frame is returned to finish it).
#[inline]
fn open_value(sink: &TreeSink, st: &Store<'_>, out: &mut Vec<u8>, n: u32) -> Result<Option<Frame>> {
    let node = &sink.nodes[n as usize];
    if node.attr_len == 0 && node.first_child == NONE {
        match node.text {
            Str::Empty => out.extend_from_slice(b"null"),
            s => write_str(out, st, s)?,
        }
        return Ok(None);
    }
    out.push(b'{');
    let a = node.attr_start as usize;
    let attrs = &sink.attrs[a..a + node.attr_len as usize];
    for (i, &(k, v)) in attrs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_key(out, b"@", st.get(k));
        write_str(out, st, v)?;
    }
    Ok(Some(Frame {
        node: n,
        cursor: node.first_child,
        group: NONE,
        in_group: false,
        group_first: false,
        need_comma: !attrs.is_empty(),
    }))
}

fn write_tree(sink: &TreeSink, st: &Store<'_>, out: &mut Vec<u8>) -> Result<()> {
    let nodes = &sink.nodes;
    let Some(root) = nodes.first() else {
        return Err(malformed("no root element"));
    };
    out.push(b'{');
    write_key(out, b"", st.get(root.name));
    let mut stack: Vec<Frame> = Vec::new();
    if let Some(f) = open_value(sink, st, out, 0)? {
        stack.push(f);
    }
    while let Some(top) = stack.last_mut() {
        if top.in_group {
            if top.group == NONE {
                out.push(b']');
                top.in_group = false;
                continue;
            }
            if !top.group_first {
                out.push(b',');
            }
            top.group_first = false;
            let n = top.group;
            top.group = nodes[n as usize].next_same;
            if let Some(f) = open_value(sink, st, out, n)? {
                stack.push(f);
            }
            continue;
        }
        let mut c = top.cursor;
        while c != NONE && nodes[c as usize].flags & FIRST == 0 {
            c = nodes[c as usize].next_sibling;
        }
        if c == NONE {
            let text = nodes[top.node as usize].text;
            if text != Str::Empty {
                if top.need_comma {
                    out.push(b',');
                }
                out.extend_from_slice(b"\"#text\":");
                write_str(out, st, text)?;
            }
            out.push(b'}');
            stack.pop();
            continue;
        }
        let child = &nodes[c as usize];
        top.cursor = child.next_sibling;
        if top.need_comma {
            out.push(b',');
        }
        top.need_comma = true;
        write_key(out, b"", st.get(child.name));
        if child.flags & REPEATED != 0 {
            out.push(b'[');
            top.in_group = true;
            top.group = c;
            top.group_first = true;
            continue;
        }
        if let Some(f) = open_value(sink, st, out, c)? {
            stack.push(f);
        }
    }
    out.push(b'}');
    Ok(())
}

// ---------------------------------------------------------------------------------------
// direct: streamed

struct DirectFrame {
    /// The element has a child element (so white-space-only runs are dropped).
    has_elem: bool,
    /// Something was written in `#children` (a comma is needed before the next).
    wrote: bool,
}

struct DirectSink {
    out: Vec<u8>,
    stack: Vec<DirectFrame>,
    /// The current run of character data.
    acc: Acc,
    buf: Vec<u8>,
}

impl DirectSink {
    /// Ends the current run of character data. A white-space-only run is kept only when
    /// it is the whole content of its element.
    fn flush(&mut self, st: &Store<'_>, at_end: bool) -> Result<()> {
        let acc = std::mem::replace(&mut self.acc, Acc::None);
        let (bytes, s) = match acc {
            Acc::None => return Ok(()),
            Acc::One(s) => (st.get(s), Some(s)),
            Acc::Buf => (&self.buf[..], None),
        };
        let Some(top) = self.stack.last_mut() else {
            return Ok(());
        };
        let ws_only = bytes.iter().all(|&b| is_xml_ws(b));
        let whole_content = at_end && !top.has_elem;
        if ws_only && !whole_content {
            return Ok(());
        }
        if top.wrote {
            self.out.push(b',');
        }
        top.wrote = true;
        match s {
            Some(s) => write_str(&mut self.out, st, s),
            None => write_json_str(&mut self.out, bytes, false),
        }
    }
}

impl Sink for DirectSink {
    fn start(&mut self, st: &mut Store<'_>, name: Str, attrs: &[(Str, Str)]) -> Result<()> {
        self.flush(st, false)?;
        if let Some(top) = self.stack.last_mut() {
            if top.wrote {
                self.out.push(b',');
            }
            top.wrote = true;
            top.has_elem = true;
        }
        let out = &mut self.out;
        out.extend_from_slice(b"{\"#name\":\"");
        out.extend_from_slice(st.get(name));
        out.extend_from_slice(b"\",\"#attrs\":{");
        for (i, &(k, v)) in attrs.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_key(out, b"", st.get(k));
            write_str(out, st, v)?;
        }
        out.extend_from_slice(b"},\"#children\":[");
        self.stack.push(DirectFrame {
            has_elem: false,
            wrote: false,
        });
        Ok(())
    }

    fn end(&mut self, st: &mut Store<'_>) -> Result<()> {
        self.flush(st, true)?;
        self.stack.pop();
        self.out.extend_from_slice(b"]}");
        Ok(())
    }

    #[inline]
    fn text(&mut self, st: &mut Store<'_>, raw: &[u8]) -> Result<()> {
        self.acc.text(st, &mut self.buf, raw);
        Ok(())
    }

    fn chr(&mut self, st: &mut Store<'_>, c: char) -> Result<()> {
        self.acc.chr(st, &mut self.buf, c);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn arena_sizes_as_documented() {
        // docs/transforms.md states these.
        assert_eq!(std::mem::size_of::<super::Node>(), 48);
        assert_eq!(std::mem::size_of::<(super::Str, super::Str)>(), 24);
    }
}
