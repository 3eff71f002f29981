//! JSON → XML, from the tape of [`crate::json`], with an explicit stack of frames.

use std::collections::HashSet;

use crate::escape::{write_xml_attr, write_xml_text};
use crate::json::{self, Doc, Tok};
use crate::name::is_xml_name;
use crate::{snippet, Limits, TransformError};

type Result<T> = std::result::Result<T, TransformError>;

fn malformed(msg: impl Into<String>) -> TransformError {
    TransformError::Malformed(msg.into())
}

fn invalid_name(name: &[u8]) -> TransformError {
    TransformError::InvalidName(snippet(name))
}

/// The name of an array item written as content (a top-level array, or an array inside
/// an array).
const ITEM: &[u8] = b"item";

pub(crate) fn convert(input: &[u8], root_element: &str, limits: &Limits) -> Result<Vec<u8>> {
    if !is_xml_name(root_element.as_bytes()) {
        return Err(invalid_name(root_element.as_bytes()));
    }
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
    let json_depth = limits.max_depth.saturating_mul(2).saturating_add(2);
    let doc = json::parse(input, json_depth, limits.max_nodes)?;
    let mut w = Writer {
        doc: &doc,
        out: Vec::with_capacity(input.len() + input.len() / 2 + 64),
        depth: 0,
        max_depth: limits.max_depth,
        attr_names: Vec::new(),
        attr_set: HashSet::new(),
    };
    w.out
        .extend_from_slice(br#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let first = match doc.tape[0] {
        Tok::Obj(end) => {
            if w.find(0, end as usize, b"#name").is_some() {
                w.open_direct(0)?
            } else {
                match w.single_root(0, end as usize) {
                    Some((name, v)) => w.open_element(name, v, false)?,
                    None => w.open_element(root_element.as_bytes(), 0, true)?,
                }
            }
        }
        _ => w.open_element(root_element.as_bytes(), 0, false)?,
    };
    let mut stack: Vec<Frame<'_>> = Vec::new();
    if let Some(f) = first {
        stack.push(f);
    }
    w.run(&mut stack)?;
    Ok(w.out)
}

/// Work in progress on the explicit stack.
enum Frame<'d> {
    /// The members of an object, `cur..end`, written as the content of element `name`;
    /// `#text` members are written after the children. `top` skips a `?xml` key.
    Obj {
        start: usize,
        cur: usize,
        end: usize,
        name: &'d [u8],
        top: bool,
    },
    /// The items of an array, `cur..end`, each written as an element `name` (repeated
    /// siblings). Opens no element itself.
    Rep {
        cur: usize,
        end: usize,
        name: &'d [u8],
    },
    /// An array written as the content of element `name`: one `<item>` per item.
    Items {
        cur: usize,
        end: usize,
        name: &'d [u8],
    },
    /// The `#children` of a direct-form element `name`.
    Direct {
        cur: usize,
        end: usize,
        name: &'d [u8],
    },
}

struct Writer<'d> {
    doc: &'d Doc<'d>,
    out: Vec<u8>,
    /// Elements currently open.
    depth: usize,
    max_depth: usize,
    attr_names: Vec<&'d [u8]>,
    attr_set: HashSet<&'d [u8]>,
}

impl<'d> Writer<'d> {
    /// Members of the object whose `Obj` token is at `obj` (its `End` at `end`):
    /// (key, value index) pairs.
    fn members(&self, obj: usize, end: usize) -> Members<'d> {
        Members {
            doc: self.doc,
            cur: obj + 1,
            end,
        }
    }

    fn find(&self, obj: usize, end: usize, key: &[u8]) -> Option<usize> {
        self.members(obj, end)
            .find(|&(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// For a top-level object: its only element member, unless it needs wrapping (more
    /// than one member, an attribute or text member, an array value). A `?xml` member
    /// (Newtonsoft's declaration) is ignored.
    fn single_root(&self, obj: usize, end: usize) -> Option<(&'d [u8], usize)> {
        let mut it = self.members(obj, end).filter(|&(k, _)| k != b"?xml");
        let (k, v) = it.next()?;
        if it.next().is_some()
            || k.first().is_some_and(|&c| c == b'@' || c == b'#')
            || matches!(self.doc.tape[v], Tok::Arr(_))
        {
            return None;
        }
        Some((k, v))
    }

    fn enter(&mut self) -> Result<()> {
        if self.depth >= self.max_depth {
            return Err(TransformError::TooDeep);
        }
        Ok(())
    }

    /// Writes a scalar as text: strings escaped, numbers as written, `true`/`false`,
    /// `null` as nothing.
    fn scalar_text(&mut self, v: usize, attr: bool) -> Result<()> {
        let doc = self.doc;
        match doc.tape[v] {
            Tok::Str(s) => {
                if attr {
                    write_xml_attr(&mut self.out, doc.str(s))
                } else {
                    write_xml_text(&mut self.out, doc.str(s))
                }
            }
            Tok::Num(a, b) => {
                self.out.extend_from_slice(doc.num(a, b));
                Ok(())
            }
            Tok::True => {
                self.out.extend_from_slice(b"true");
                Ok(())
            }
            Tok::False => {
                self.out.extend_from_slice(b"false");
                Ok(())
            }
            Tok::Null => Ok(()),
            _ => Err(malformed("expected a string, number, boolean or null")),
        }
    }

    /// Writes ` name="value"`, refusing invalid and duplicate names.
    fn attribute(&mut self, name: &'d [u8], v: usize) -> Result<()> {
        if !is_xml_name(name) {
            return Err(invalid_name(name));
        }
        let dup = if self.attr_names.len() < 16 {
            let d = self.attr_names.contains(&name);
            self.attr_names.push(name);
            if self.attr_names.len() == 16 {
                self.attr_set.clear();
                self.attr_set.extend(self.attr_names.iter().copied());
            }
            d
        } else {
            !self.attr_set.insert(name)
        };
        if dup {
            return Err(malformed(format!(
                "duplicate attribute {:?}",
                snippet(name)
            )));
        }
        if matches!(self.doc.tape[v], Tok::Obj(_) | Tok::Arr(_)) {
            return Err(malformed(format!(
                "attribute {:?} must have a string, number, boolean or null value",
                snippet(name)
            )));
        }
        self.out.push(b' ');
        self.out.extend_from_slice(name);
        self.out.extend_from_slice(b"=\"");
        self.scalar_text(v, true)?;
        self.out.push(b'"');
        Ok(())
    }

    /// Writes element `name` whose content is the value at `v` (javascript-friendly).
    /// Returns the frame that finishes it, if it has content left to write.
    fn open_element(&mut self, name: &'d [u8], v: usize, top: bool) -> Result<Option<Frame<'d>>> {
        self.enter()?;
        if !is_xml_name(name) {
            return Err(invalid_name(name));
        }
        let doc = self.doc;
        self.out.push(b'<');
        self.out.extend_from_slice(name);
        match doc.tape[v] {
            Tok::Null => {
                self.out.extend_from_slice(b"/>");
                Ok(None)
            }
            Tok::Arr(end) => {
                self.out.push(b'>');
                self.depth += 1;
                Ok(Some(Frame::Items {
                    cur: v + 1,
                    end: end as usize,
                    name,
                }))
            }
            Tok::Obj(end) => {
                let end = end as usize;
                self.attr_names.clear();
                let mut content = false;
                for (k, m) in self.members(v, end) {
                    if let Some(attr) = k.strip_prefix(b"@") {
                        self.attribute(attr, m)?;
                    } else if !(top && k == b"?xml") {
                        content = true;
                    }
                }
                if !content {
                    self.out.extend_from_slice(b"/>");
                    return Ok(None);
                }
                self.out.push(b'>');
                self.depth += 1;
                Ok(Some(Frame::Obj {
                    start: v + 1,
                    cur: v + 1,
                    end,
                    name,
                    top,
                }))
            }
            _ => {
                self.out.push(b'>');
                self.scalar_text(v, false)?;
                self.close(name);
                Ok(None)
            }
        }
    }

    /// Writes a direct-form element (`{"#name", "#attrs", "#children"}`) at `v`.
    fn open_direct(&mut self, v: usize) -> Result<Option<Frame<'d>>> {
        let doc = self.doc;
        let Tok::Obj(end) = doc.tape[v] else {
            return Err(malformed(
                "direct form: a child must be a string or an element object",
            ));
        };
        let (mut name, mut attrs, mut children) = (None, None, None);
        for (k, m) in self.members(v, end as usize) {
            match (k, doc.tape[m]) {
                (b"#name", Tok::Str(s)) => name = Some(doc.str(s)),
                (b"#attrs", Tok::Obj(e)) => attrs = Some((m, e as usize)),
                (b"#children", Tok::Arr(e)) => children = Some((m + 1, e as usize)),
                (b"#attrs" | b"#children", Tok::Null) => {}
                (b"#name" | b"#attrs" | b"#children", _) => {
                    return Err(malformed(format!(
                        "direct form: {} has the wrong type",
                        String::from_utf8_lossy(k)
                    )))
                }
                _ => {
                    return Err(malformed(format!(
                        "direct form: unexpected key {:?} in an element",
                        snippet(k)
                    )))
                }
            }
        }
        let name = name.ok_or_else(|| malformed("direct form: an element has no #name"))?;
        self.enter()?;
        if !is_xml_name(name) {
            return Err(invalid_name(name));
        }
        self.out.push(b'<');
        self.out.extend_from_slice(name);
        if let Some((obj, end)) = attrs {
            self.attr_names.clear();
            for (k, m) in self.members(obj, end) {
                self.attribute(k, m)?;
            }
        }
        match children {
            Some((cur, end)) if cur < end => {
                self.out.push(b'>');
                self.depth += 1;
                Ok(Some(Frame::Direct { cur, end, name }))
            }
            _ => {
                self.out.extend_from_slice(b"/>");
                Ok(None)
            }
        }
    }

    fn close(&mut self, name: &[u8]) {
        self.out.extend_from_slice(b"</");
        self.out.extend_from_slice(name);
        self.out.push(b'>');
    }

    /// Writes the `#text` members of an object (after its children, as xmltodict does).
    fn texts(&mut self, start: usize, end: usize) -> Result<()> {
        let doc = self.doc;
        let mut cur = start;
        while cur < end {
            let (k, v) = key_at(doc, cur);
            cur = doc.next(v);
            if k != b"#text" {
                continue;
            }
            match doc.tape[v] {
                Tok::Arr(e) => {
                    let mut i = v + 1;
                    while i < e as usize {
                        if matches!(doc.tape[i], Tok::Obj(_) | Tok::Arr(_)) {
                            return Err(malformed("#text must hold text"));
                        }
                        self.scalar_text(i, false)?;
                        i += 1;
                    }
                }
                Tok::Obj(_) => return Err(malformed("#text must hold text")),
                _ => self.scalar_text(v, false)?,
            }
        }
        Ok(())
    }

    fn run(&mut self, stack: &mut Vec<Frame<'d>>) -> Result<()> {
        let doc = self.doc;
        while let Some(top) = stack.last_mut() {
            let next = match top {
                Frame::Obj {
                    start,
                    cur,
                    end,
                    name,
                    top,
                } => {
                    // The next child member, skipping attributes and text.
                    let mut found = None;
                    while *cur < *end {
                        let (k, v) = key_at(doc, *cur);
                        *cur = doc.next(v);
                        if k.first() == Some(&b'@') || k == b"#text" || (*top && k == b"?xml") {
                            continue;
                        }
                        found = Some((k, v));
                        break;
                    }
                    match found {
                        Some((k, v)) => {
                            if let Tok::Arr(e) = doc.tape[v] {
                                if !is_xml_name(k) {
                                    return Err(invalid_name(k));
                                }
                                Some(Frame::Rep {
                                    cur: v + 1,
                                    end: e as usize,
                                    name: k,
                                })
                            } else {
                                self.open_element(k, v, false)?
                            }
                        }
                        None => {
                            let (start, end, name) = (*start, *end, *name);
                            stack.pop();
                            self.texts(start, end)?;
                            self.close(name);
                            self.depth -= 1;
                            None
                        }
                    }
                }
                Frame::Rep { cur, end, name } => {
                    if *cur < *end {
                        let v = *cur;
                        *cur = doc.next(v);
                        let name = *name;
                        self.open_element(name, v, false)?
                    } else {
                        stack.pop();
                        None
                    }
                }
                Frame::Items { cur, end, name } => {
                    if *cur < *end {
                        let v = *cur;
                        *cur = doc.next(v);
                        self.open_element(ITEM, v, false)?
                    } else {
                        let name = *name;
                        stack.pop();
                        self.close(name);
                        self.depth -= 1;
                        None
                    }
                }
                Frame::Direct { cur, end, name } => {
                    if *cur < *end {
                        let v = *cur;
                        *cur = doc.next(v);
                        match doc.tape[v] {
                            Tok::Str(s) => {
                                write_xml_text(&mut self.out, doc.str(s))?;
                                None
                            }
                            _ => self.open_direct(v)?,
                        }
                    } else {
                        let name = *name;
                        stack.pop();
                        self.close(name);
                        self.depth -= 1;
                        None
                    }
                }
            };
            if let Some(f) = next {
                stack.push(f);
            }
        }
        Ok(())
    }
}

/// The key at tape index `i` and the index of its value.
#[inline]
fn key_at<'d>(doc: &'d Doc<'d>, i: usize) -> (&'d [u8], usize) {
    match doc.tape[i] {
        Tok::Key(k) => (doc.str(k), i + 1),
        // Unreachable for a tape built by the parser; an empty key is refused downstream.
        _ => (&[], i + 1),
    }
}

/// Iterator over an object's members.
struct Members<'d> {
    doc: &'d Doc<'d>,
    cur: usize,
    end: usize,
}

impl<'d> Iterator for Members<'d> {
    type Item = (&'d [u8], usize);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.cur >= self.end {
            return None;
        }
        let (k, v) = key_at(self.doc, self.cur);
        self.cur = self.doc.next(v);
        Some((k, v))
    }
}
