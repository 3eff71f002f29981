//! json-to-xml: the javascript-friendly inverse, wrapping, escaping and names.

use tollgate_transform::{json_to_xml, Limits, TransformError};

const DECL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

fn xml(json: &str) -> String {
    let out = json_to_xml(json.as_bytes(), "root", &Limits::default())
        .unwrap_or_else(|e| panic!("{json}: {e}"));
    let s = String::from_utf8(out).unwrap();
    s.strip_prefix(DECL).expect("declaration").to_string()
}

fn err(json: &str) -> TransformError {
    json_to_xml(json.as_bytes(), "root", &Limits::default()).unwrap_err()
}

#[test]
fn elements_attributes_text() {
    assert_eq!(
        xml(r##"{"a":{"@id":"1","b":["x","y"],"c":null,"#text":"t"}}"##),
        r#"<a id="1"><b>x</b><b>y</b><c/>t</a>"#
    );
    // #text is written after the children, wherever its key is (as xmltodict).
    assert_eq!(xml(r##"{"a":{"#text":"t","b":"1"}}"##), "<a><b>1</b>t</a>");
    assert_eq!(
        xml(r##"{"a":{"#text":["x",1,null,true]}}"##),
        "<a>x1true</a>"
    );
    assert_eq!(
        xml(r#"{"a":{"@x":null,"@y":2,"@z":false}}"#),
        r#"<a x="" y="2" z="false"/>"#
    );
    assert_eq!(xml(r#"{"a":""}"#), "<a></a>");
    assert_eq!(xml(r#"{"a":{}}"#), "<a/>");
    assert_eq!(xml(r#"{"a":{"b":[]}}"#), "<a></a>");
    assert_eq!(
        xml(r#"{"soap:Envelope":{"@xmlns:soap":"urn:s","soap:Body":{"m:x":"1"}}}"#),
        r#"<soap:Envelope xmlns:soap="urn:s"><soap:Body><m:x>1</m:x></soap:Body></soap:Envelope>"#
    );
}

#[test]
fn scalars_as_written() {
    assert_eq!(
        xml(r#"{"r":{"n":1.5e3,"i":-0,"t":true,"f":false,"z":null,"s":"x"}}"#),
        "<r><n>1.5e3</n><i>-0</i><t>true</t><f>false</f><z/><s>x</s></r>"
    );
    assert_eq!(xml(r#"{"r":[null,2]}"#), "<root><r/><r>2</r></root>");
}

#[test]
fn wrapping_in_root_element() {
    assert_eq!(xml(r#"{"a":1,"b":2}"#), "<root><a>1</a><b>2</b></root>");
    assert_eq!(xml("[1,2]"), "<root><item>1</item><item>2</item></root>");
    assert_eq!(xml(r#""x""#), "<root>x</root>");
    assert_eq!(xml("3"), "<root>3</root>");
    assert_eq!(xml("null"), "<root/>");
    assert_eq!(xml("{}"), "<root/>");
    assert_eq!(xml("[]"), "<root></root>");
    assert_eq!(xml(r#"{"a":[1,2]}"#), "<root><a>1</a><a>2</a></root>");
    assert_eq!(xml(r#"{"@v":"1"}"#), r#"<root v="1"/>"#);
    assert_eq!(xml(r##"{"#text":"x"}"##), "<root>x</root>");
    assert_eq!(
        xml(r#"{"a":[[1,2],3]}"#),
        "<root><a><item>1</item><item>2</item></a><a>3</a></root>"
    );
    assert_eq!(
        xml(r#"[{"a":1},{"a":2}]"#),
        "<root><item><a>1</a></item><item><a>2</a></item></root>"
    );
    // Newtonsoft's "?xml" declaration member is ignored at the top level.
    assert_eq!(
        xml(r#"{"?xml":{"@version":"1.0"},"r":{"a":"1"}}"#),
        "<r><a>1</a></r>"
    );
    // The configured name is used.
    let out = json_to_xml(b"[1]", "Document", &Limits::default()).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("{DECL}<Document><item>1</item></Document>")
    );
}

#[test]
fn escaping() {
    assert_eq!(
        xml(r##"{"r":{"@q":"a\"b'c<&>\t\n\r","#text":"<&>\"' \r\n"}}"##),
        r#"<r q="a&quot;b&apos;c&lt;&amp;&gt;&#9;&#10;&#13;">&lt;&amp;&gt;"' &#13;
</r>"#
    );
    // Escaped JSON keys are decoded before they are checked as names.
    assert_eq!(xml(r#"{"\u0061":"\u00e9\ud83d\ude00"}"#), "<a>é😀</a>");
    assert_eq!(xml(r#"{"名前":{"@属性":"値"}}"#), r#"<名前 属性="値"/>"#);
}

#[test]
fn invalid_names_are_refused() {
    for (json, name) in [
        (r#"{"1a":1}"#, "1a"),
        (r#"{"a b":1}"#, "a b"),
        (r#"{"":1}"#, ""),
        (r#"{"r":{"@a b":1}}"#, "a b"),
        (r#"{"r":{"@":1}}"#, ""),
        (r##"{"r":{"#comment":1}}"##, "#comment"),
        (r#"{"r":{"a>b":[1]}}"#, "a>b"),
        (r#"{"r":{"<x":1},"s":1}"#, "<x"),
        (r##"{"#name":"1x"}"##, "1x"),
        (r##"{"#name":"x","#attrs":{"a\"":"1"}}"##, "a\""),
    ] {
        assert_eq!(
            err(json),
            TransformError::InvalidName(name.into()),
            "{json}"
        );
    }
    assert_eq!(
        json_to_xml(b"{}", "1root", &Limits::default()).unwrap_err(),
        TransformError::InvalidName("1root".into())
    );
    assert_eq!(
        err(r#"{"a b":1}"#).to_string(),
        r#""a b" is not a valid XML name"#
    );
}

#[test]
fn unrepresentable_characters() {
    for json in [
        r#"{"r":"\u0001"}"#,
        r#"{"r":"\u0000"}"#,
        r#"{"r":"\uffff"}"#,
        r#"{"r":{"@a":"\u001f"}}"#,
    ] {
        assert_eq!(err(json), TransformError::Unrepresentable, "{json}");
    }
}

#[test]
fn convention_errors() {
    for json in [
        r#"{"r":{"@a":1,"@a":2}}"#,
        r#"{"r":{"@a":{}}}"#,
        r#"{"r":{"@a":[1]}}"#,
        r##"{"r":{"#text":{"a":1}}}"##,
        r##"{"r":{"#text":[[1]]}}"##,
        r##"{"#name":"r","x":1}"##,
        r##"{"#name":"r","#children":[1]}"##,
        r##"{"#name":"r","#children":[{"a":1}]}"##,
        r##"{"#name":1}"##,
        r##"{"#name":"r","#attrs":[]}"##,
        r##"{"#name":"r","#attrs":{"a":{}}}"##,
    ] {
        assert!(matches!(err(json), TransformError::Malformed(_)), "{json}");
    }
}

#[test]
fn many_attributes_and_duplicates() {
    let mut json = String::from(r#"{"r":{"#);
    for i in 0..1000 {
        json.push_str(&format!(r#""@a{i}":"{i}","#));
    }
    json.push_str(r#""@a500":"dup"}}"#);
    assert!(matches!(err(&json), TransformError::Malformed(m) if m.contains("duplicate")));
    let ok = json.replace(r#","@a500":"dup""#, "");
    let out = xml(&ok);
    assert!(out.starts_with(r#"<r a0="0" a1="1""#) && out.ends_with(r#" a999="999"/>"#));
}
