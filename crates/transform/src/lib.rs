//! XML ⇄ JSON body conversion for the `xml-to-json` and `json-to-xml` policies.
//!
//! A pure library: bytes in, bytes out, no I/O. The gateway buffers a body, calls
//! [`xml_to_json`] or [`json_to_xml`] and fixes the headers itself.
//!
//! * [`xml_to_json`] with [`XmlToJsonKind::JavascriptFriendly`] follows the convention of
//!   Python's `xmltodict.parse` (and Newtonsoft's `SerializeXmlNode`): an element is an
//!   object keyed by its name, attributes are `@name` keys, text mixed with elements or
//!   attributes is `#text`, repeated siblings become an array, leaf text stays a string,
//!   an empty element is `null`.
//! * [`XmlToJsonKind::Direct`] is a lossless, ordered form:
//!   `{"#name": "a", "#attrs": {"x": "1"}, "#children": ["text", {…element…}]}`.
//! * [`json_to_xml`] is the inverse of both; a document whose top-level object has a
//!   `#name` key is read as the direct form.
//!
//! `docs/transforms.md` describes both conventions exactly.
//!
//! Safety: a document with a `<!DOCTYPE` is refused ([`TransformError::DoctypeRefused`]),
//! so there is no entity expansion and no external entity; only the five predefined
//! entities and numeric character references are decoded. Size, nesting depth and node
//! count are bounded by [`Limits`], and every pass (XML parsing, JSON parsing, both
//! serializers) is iterative with an explicit stack: a 100,000-deep document cannot
//! overflow the thread's stack. Malformed input is an error, never a panic.

mod escape;
mod json;
mod json2xml;
mod name;
mod xml2json;

/// Bounds applied to one conversion. Exceeding one is an error, never a truncation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Maximum element nesting depth (the root element is depth 1). Default 64.
    ///
    /// For JSON input the container nesting is also bounded, at `2 × max_depth + 2`
    /// (an element can take two JSON levels: its object and the array of its repeated
    /// siblings), before any XML is written.
    pub max_depth: usize,
    /// Maximum number of nodes: elements + attributes + text nodes for XML input,
    /// values (scalars, arrays, objects) for JSON input. Default 1,000,000.
    pub max_nodes: usize,
    /// Maximum input size in bytes. Default 10 MiB.
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 64,
            max_nodes: 1_000_000,
            max_bytes: 10 * 1024 * 1024,
        }
    }
}

/// Which JSON shape [`xml_to_json`] produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XmlToJsonKind {
    /// The `xmltodict` / Newtonsoft convention (policy value `javascript-friendly`).
    JavascriptFriendly,
    /// The lossless, ordered `#name` / `#attrs` / `#children` form (policy value `direct`).
    Direct,
}

/// Why a conversion failed.
///
/// The `Display` text describes the document, never the library's internals, and is safe
/// to put in a problem+json `detail` answered to a client. Any part of the input quoted
/// in it is cut to a few dozen characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransformError {
    /// The input is not well-formed XML or JSON, or does not follow the convention.
    #[error("malformed document: {0}")]
    Malformed(String),
    /// The XML document has a document type declaration; DTDs are never processed.
    #[error("XML documents with a DOCTYPE declaration are not accepted")]
    DoctypeRefused,
    /// Nesting deeper than [`Limits::max_depth`].
    #[error("document nesting is too deep")]
    TooDeep,
    /// Input larger than [`Limits::max_bytes`].
    #[error("document is too large")]
    TooLarge,
    /// More nodes than [`Limits::max_nodes`].
    #[error("document has too many nodes")]
    TooManyNodes,
    /// A JSON key (or the root element name) is not a valid XML element or attribute
    /// name, e.g. `"1st"` or `"a b"`. Names are never rewritten.
    #[error("{0:?} is not a valid XML name")]
    InvalidName(String),
    /// A JSON string holds a character that XML 1.0 cannot carry, even escaped (a control
    /// character other than tab, line feed and carriage return, U+FFFE or U+FFFF).
    #[error("a string holds a character that XML cannot represent")]
    Unrepresentable,
}

/// Converts an XML document to JSON (UTF-8, compact, no trailing newline).
///
/// The input must be UTF-8 (a UTF-8 byte order mark is skipped; a declaration naming
/// another encoding is refused). The XML declaration, comments and processing
/// instructions are dropped; CDATA sections are text.
pub fn xml_to_json(
    input: &[u8],
    kind: XmlToJsonKind,
    limits: &Limits,
) -> Result<Vec<u8>, TransformError> {
    xml2json::convert(input, kind, limits)
}

/// Converts a JSON document to XML (UTF-8, with an `<?xml version="1.0"
/// encoding="UTF-8"?>` declaration, no indentation).
///
/// The form is detected: a top-level object with a `#name` key is the direct form (its
/// root element is named by `#name` and `root_element` is unused); anything else is the
/// javascript-friendly form, wrapped in `<root_element>` unless it is an object with a
/// single element key whose value is not an array.
pub fn json_to_xml(
    input: &[u8],
    root_element: &str,
    limits: &Limits,
) -> Result<Vec<u8>, TransformError> {
    json2xml::convert(input, root_element, limits)
}

/// Whether `name` is a valid XML 1.0 name (for element and attribute names; `:` is
/// allowed). Useful to validate a configured `root_element` when a policy is loaded.
pub fn is_valid_xml_name(name: &str) -> bool {
    name::is_xml_name(name.as_bytes())
}

/// Cuts a piece of input for an error message: at most 40 characters, valid UTF-8.
pub(crate) fn snippet(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let mut out: String = s.chars().take(40).collect();
    if s.chars().nth(40).is_some() {
        out.push('…');
    }
    out
}
