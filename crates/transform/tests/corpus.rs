//! The javascript-friendly convention against xmltodict, the direct form, and round trips.
//!
//! The expected JSON of CORPUS was produced by xmltodict 1.0.4 (`xmltodict.parse`, dumped
//! compact with `ensure_ascii=False`) by `tests/xmltodict_expected.py`, and pasted here.
//! We compare exact strings: same values, same key order.

use tollgate_transform::{json_to_xml, xml_to_json, Limits, XmlToJsonKind};

const CORPUS: &[(&str, &str, &str)] = &[
    (
        "simple",
        "<root><a>1</a><b>two</b></root>",
        r#"{"root":{"a":"1","b":"two"}}"#,
    ),
    (
        "attributes",
        r#"<book id="42" lang="en"><title>T</title><year>2020</year></book>"#,
        r#"{"book":{"@id":"42","@lang":"en","title":"T","year":"2020"}}"#,
    ),
    (
        "attribute_and_text",
        r#"<price currency="EUR">12.50</price>"#,
        r##"{"price":{"@currency":"EUR","#text":"12.50"}}"##,
    ),
    (
        "repeated",
        "<list><item>1</item><item>2</item><item>3</item></list>",
        r#"{"list":{"item":["1","2","3"]}}"#,
    ),
    (
        "repeated_not_adjacent",
        "<r><a>1</a><b>x</b><a>2</a><c/><a>3</a></r>",
        r#"{"r":{"a":["1","2","3"],"b":"x","c":null}}"#,
    ),
    (
        "single_vs_array",
        "<r><one><x>1</x></one><many><x>1</x><x>2</x></many></r>",
        r#"{"r":{"one":{"x":"1"},"many":{"x":["1","2"]}}}"#,
    ),
    (
        "empty_elements",
        r#"<r><e/><f></f><g a="1"/><h a="1"></h></r>"#,
        r#"{"r":{"e":null,"f":null,"g":{"@a":"1"},"h":{"@a":"1"}}}"#,
    ),
    (
        "pretty_printed",
        "<r>\n  <a>1</a>\n  <b>\n    <c>2</c>\n    <c>3</c>\n  </b>\n</r>\n",
        r#"{"r":{"a":"1","b":{"c":["2","3"]}}}"#,
    ),
    (
        "mixed_content",
        "<p>Hello <b>world</b>, again <i>x</i>!</p>",
        r##"{"p":{"b":"world","i":"x","#text":"Hello , again !"}}"##,
    ),
    (
        "mixed_with_attributes",
        r#"<r a="1">t<c/>u</r>"#,
        r##"{"r":{"@a":"1","c":null,"#text":"tu"}}"##,
    ),
    (
        "cdata",
        r#"<r><code><![CDATA[if (a < b && c) { x("q"); }]]></code></r>"#,
        r#"{"r":{"code":"if (a < b && c) { x(\"q\"); }"}}"#,
    ),
    (
        "cdata_mixed_with_text",
        "<r>a<![CDATA[<b>]]>c</r>",
        r#"{"r":"a<b>c"}"#,
    ),
    (
        "namespaces",
        r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns="urn:x"><soap:Body><m:GetPrice xmlns:m="urn:m"><m:Item>Apple</m:Item><m:Item>Pear</m:Item></m:GetPrice></soap:Body></soap:Envelope>"#,
        r#"{"soap:Envelope":{"@xmlns:soap":"http://schemas.xmlsoap.org/soap/envelope/","@xmlns":"urn:x","soap:Body":{"m:GetPrice":{"@xmlns:m":"urn:m","m:Item":["Apple","Pear"]}}}}"#,
    ),
    (
        "unicode",
        r#"<r lang="日本語"><name>Zoë 😀</name><t>&#x1F600;&#233;&#xe9;</t></r>"#,
        r#"{"r":{"@lang":"日本語","name":"Zoë 😀","t":"😀éé"}}"#,
    ),
    (
        "predefined_entities",
        r#"<r a="&lt;&amp;&gt;&quot;&apos;">&lt;tag&gt; &amp; &quot;q&quot; &apos;a&apos;</r>"#,
        r##"{"r":{"@a":"<&>\"'","#text":"<tag> & \"q\" 'a'"}}"##,
    ),
    (
        "declaration_comments_pis",
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- c -->\n<?pi x?>\n<r><!-- inner --><a>1</a><?php echo 1; ?><b>x<!-- split -->y</b></r>\n<!-- after -->\n",
        r#"{"r":{"a":"1","b":"xy"}}"#,
    ),
    (
        "whitespace_only_leaves",
        "<r><a>   </a><b>\n\t</b><c> x </c></r>",
        r#"{"r":{"a":null,"b":null,"c":"x"}}"#,
    ),
    (
        "text_trimmed_around_entities",
        "<r>  a &amp; b  </r>",
        r#"{"r":"a & b"}"#,
    ),
    (
        "quotes_backslashes_char_refs",
        r#"<r q='say "hi" \ back'>tab&#9;nl&#10;cr&#13;x</r>"#,
        r##"{"r":{"@q":"say \"hi\" \\ back","#text":"tab\tnl\ncr\rx"}}"##,
    ),
    (
        "attribute_value_normalization",
        "<r a=\"x&#10;y\" b=\"x\ny\" c=\"p\tq\" d=\"  s  \"/>",
        r#"{"r":{"@a":"x\ny","@b":"x y","@c":"p q","@d":"  s  "}}"#,
    ),
    (
        "crlf_line_ends",
        "<r>\r\n<a>x\r\ny\rz</a>\r\n</r>",
        r#"{"r":{"a":"x\ny\nz"}}"#,
    ),
    (
        "repeated_with_mixed_kinds",
        r#"<r><x a="1"/><x>t</x><x/><x><y>1</y></x></r>"#,
        r#"{"r":{"x":[{"@a":"1"},"t",null,{"y":"1"}]}}"#,
    ),
    (
        "many_distinct_names",
        "<r><n0>0</n0><n1>1</n1><n2>2</n2><n3>3</n3><n4>4</n4><n5>5</n5><n6>6</n6><n7>7</n7><n8>8</n8><n9>9</n9><n10>10</n10><n11>11</n11><n12>12</n12><n13>13</n13><n14>14</n14><n15>15</n15><n16>16</n16><n17>17</n17><n18>18</n18><n19>19</n19><n3>again</n3><n19/><n0>z</n0></r>",
        r#"{"r":{"n0":["0","z"],"n1":"1","n2":"2","n3":["3","again"],"n4":"4","n5":"5","n6":"6","n7":"7","n8":"8","n9":"9","n10":"10","n11":"11","n12":"12","n13":"13","n14":"14","n15":"15","n16":"16","n17":"17","n18":"18","n19":["19",null]}}"#,
    ),
    (
        "root_only_empty",
        "<r/>",
        r#"{"r":null}"#,
    ),
    (
        "root_only_text",
        "<r>text</r>",
        r#"{"r":"text"}"#,
    ),
    (
        "catalog",
        r#"<catalog xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><book id="bk101" available="true"><author>Gambardella, Matthew</author><title>XML Developer's Guide</title><genre>Computer</genre><price>44.95</price><tags><tag>xml</tag><tag>dev</tag></tags></book><book id="bk102"><author>Ralls, Kim</author><title>Midnight Rain</title><price>5.95</price><tags><tag>fantasy</tag></tags><note/></book></catalog>"#,
        r#"{"catalog":{"@xmlns:xsi":"http://www.w3.org/2001/XMLSchema-instance","book":[{"@id":"bk101","@available":"true","author":"Gambardella, Matthew","title":"XML Developer's Guide","genre":"Computer","price":"44.95","tags":{"tag":["xml","dev"]}},{"@id":"bk102","author":"Ralls, Kim","title":"Midnight Rain","price":"5.95","tags":{"tag":"fantasy"},"note":null}]}}"#,
    ),
    (
        "nested_repeated_objects",
        "<orders><order><id>1</id><line><sku>A</sku><qty>2</qty></line><line><sku>B</sku><qty>1</qty></line></order><order><id>2</id><line><sku>C</sku><qty>5</qty></line></order></orders>",
        r#"{"orders":{"order":[{"id":"1","line":[{"sku":"A","qty":"2"},{"sku":"B","qty":"1"}]},{"id":"2","line":{"sku":"C","qty":"5"}}]}}"#,
    ),
    (
        "names_with_dots_dashes_underscores",
        "<a.b><c-d>1</c-d><_e>2</_e><f.g-h_i>3</f.g-h_i></a.b>",
        r#"{"a.b":{"c-d":"1","_e":"2","f.g-h_i":"3"}}"#,
    ),
];

const DECL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

fn friendly(xml: &str) -> String {
    let out = xml_to_json(
        xml.as_bytes(),
        XmlToJsonKind::JavascriptFriendly,
        &Limits::default(),
    )
    .unwrap_or_else(|e| panic!("{xml}: {e}"));
    String::from_utf8(out).unwrap()
}

fn direct(xml: &str) -> String {
    let out = xml_to_json(xml.as_bytes(), XmlToJsonKind::Direct, &Limits::default())
        .unwrap_or_else(|e| panic!("{xml}: {e}"));
    String::from_utf8(out).unwrap()
}

fn to_xml(json: &str) -> String {
    let out = json_to_xml(json.as_bytes(), "root", &Limits::default())
        .unwrap_or_else(|e| panic!("{json}: {e}"));
    String::from_utf8(out).unwrap()
}

#[test]
fn javascript_friendly_matches_xmltodict() {
    for (name, xml, expected) in CORPUS {
        let got = friendly(xml);
        assert_eq!(got, *expected, "{name}");
        // And it is valid JSON.
        serde_json::from_str::<serde_json::Value>(&got).unwrap();
    }
}

#[test]
fn direct_form_examples() {
    assert_eq!(
        direct(r#"<p id="1">Hello <b>world</b>!</p>"#),
        r##"{"#name":"p","#attrs":{"id":"1"},"#children":["Hello ",{"#name":"b","#attrs":{},"#children":["world"]},"!"]}"##
    );
    // Order and mixed content kept; text not trimmed; white space between elements dropped;
    // white space that is an element's whole content kept; text runs merged across
    // references, CDATA and comments; declaration, comments and PIs dropped.
    assert_eq!(
        direct("<?xml version=\"1.0\"?><r>\n  <a x=\"1\" y=\"&lt;\"> t </a>\n  <s>  </s><e/>x&amp;<![CDATA[<y>]]><!--c-->z<?pi?>\n</r>"),
        r##"{"#name":"r","#attrs":{},"#children":[{"#name":"a","#attrs":{"x":"1","y":"<"},"#children":[" t "]},{"#name":"s","#attrs":{},"#children":["  "]},{"#name":"e","#attrs":{},"#children":[]},"x&<y>z\n"]}"##
    );
    assert_eq!(
        direct("<r/>"),
        r##"{"#name":"r","#attrs":{},"#children":[]}"##
    );
    assert_eq!(
        direct("<a:r xmlns:a=\"urn:a\">\r\n1\r2</a:r>"),
        r##"{"#name":"a:r","#attrs":{"xmlns:a":"urn:a"},"#children":["\n1\n2"]}"##
    );
}

#[test]
fn direct_round_trips_through_xml() {
    let mut docs: Vec<&str> = CORPUS.iter().map(|c| c.1).collect();
    docs.push("<p id=\"1\">Hello <b>world</b>, <i>again</i> &amp; <b>again</b>!</p>");
    docs.push("<r>\n  <s>  </s> tail <t>\ttab&#13;</t>\n</r>");
    for xml in docs {
        let j1 = direct(xml);
        let x2 = to_xml(&j1);
        let j2 = direct(&x2);
        assert_eq!(j1, j2, "{xml}\n{x2}");
        // The XML carries the same information: its javascript-friendly form is the same.
        assert_eq!(friendly(xml), friendly(&x2), "{xml}\n{x2}");
    }
}

#[test]
fn direct_json_to_xml() {
    assert_eq!(
        to_xml(
            r##"{"#name":"p","#attrs":{"id":"1"},"#children":["Hello ",{"#name":"b","#attrs":{},"#children":["world"]},"!"]}"##
        ),
        format!("{DECL}<p id=\"1\">Hello <b>world</b>!</p>")
    );
    // #attrs and #children may be missing or null; keys in any order.
    assert_eq!(
        to_xml(r##"{"#children":[{"#name":"b"},"x<"],"#name":"a","#attrs":null}"##),
        format!("{DECL}<a><b/>x&lt;</a>")
    );
}

#[test]
fn javascript_friendly_round_trips_through_xml() {
    for (name, _, expected) in CORPUS {
        let x2 = to_xml(expected);
        let j2 = friendly(&x2);
        assert_eq!(j2, *expected, "{name}: {x2}");
    }
}

#[test]
fn json_round_trips_through_xml() {
    // JSON in the convention (string leaves, attributes first, #text last) comes back
    // identical.
    for json in [
        r##"{"a":{"@id":"1","b":["x","y"],"c":null,"#text":"t"}}"##,
        r#"{"order":{"id":"7","line":[{"sku":"A","qty":"2"},{"sku":"B","qty":"1"}],"note":{"@lang":"en"}}}"#,
        r#"{"名前":{"@属性":"値","子":"Zoë 😀"}}"#,
        r#"{"r":{"s":"a\"b'c<&>\t\n\r\\ d"}}"#,
    ] {
        assert_eq!(friendly(&to_xml(json)), json);
    }
    // Scalars come back as strings.
    assert_eq!(
        friendly(&to_xml(r#"{"r":{"n":1.5e3,"t":true,"f":false,"z":null}}"#)),
        r#"{"r":{"n":"1.5e3","t":"true","f":"false","z":null}}"#
    );
}

#[test]
fn edge_cases() {
    // Checked against xmltodict 1.0.4 as well.
    for (xml, expected) in [
        ("<a />", r#"{"a":null}"#),
        (r#"<a b="1" ></a >"#, r#"{"a":{"@b":"1"}}"#),
        ("<a b='x>y'>]]</a>", r##"{"a":{"@b":"x>y","#text":"]]"}}"##),
        ("<a><![CDATA[]]]]><![CDATA[>]]></a>", r#"{"a":"]]>"}"#),
        ("<a>&#32;x&#x20;</a>", r#"{"a":"x"}"#),
        (
            "<r><a>1</a>\n<!-- c -->\n<a>2</a></r>",
            r#"{"r":{"a":["1","2"]}}"#,
        ),
        // Our one difference: only XML white space is trimmed (xmltodict: "x").
        ("<a>\u{a0}x\u{a0}</a>", "{\"a\":\"\u{a0}x\u{a0}\"}"),
    ] {
        assert_eq!(friendly(xml), expected, "{xml}");
    }
}
