//! Attack documents, limits, malformed input and the no-recursion guarantee.

use tollgate_transform::{json_to_xml, xml_to_json, Limits, TransformError, XmlToJsonKind};

const KINDS: [XmlToJsonKind; 2] = [XmlToJsonKind::JavascriptFriendly, XmlToJsonKind::Direct];

fn x2j(xml: &[u8], limits: &Limits) -> [Result<Vec<u8>, TransformError>; 2] {
    KINDS.map(|k| xml_to_json(xml, k, limits))
}

/// Runs `f` on a thread with a 256 KiB stack: recursion over a 100,000-deep document
/// would overflow it (and abort the test process).
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

fn big_limits() -> Limits {
    Limits {
        max_depth: 200_000,
        max_nodes: 10_000_000,
        max_bytes: 64 * 1024 * 1024,
    }
}

#[test]
fn billion_laughs_is_refused() {
    let xml = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol9 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
]>
<lolz>&lol9;</lolz>"#;
    for r in x2j(xml.as_bytes(), &Limits::default()) {
        assert_eq!(r, Err(TransformError::DoctypeRefused));
    }
}

#[test]
fn external_entities_are_refused() {
    for xml in [
        r#"<?xml version="1.0"?><!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><foo>&xxe;</foo>"#,
        r#"<!DOCTYPE foo [<!ENTITY % p SYSTEM "http://127.0.0.1/evil.dtd"> %p;]><foo/>"#,
        r#"<!DOCTYPE foo SYSTEM "http://127.0.0.1/evil.dtd"><foo>&ext;</foo>"#,
        "<!DOCTYPE foo><foo/>",
        "<foo><!DOCTYPE foo></foo>",
    ] {
        for r in x2j(xml.as_bytes(), &Limits::default()) {
            assert_eq!(r, Err(TransformError::DoctypeRefused), "{xml}");
        }
    }
    // Without a DTD an entity is undefined: no lookup of any kind.
    for r in x2j(b"<foo>&xxe;</foo>", &Limits::default()) {
        assert!(matches!(r, Err(TransformError::Malformed(m)) if m.contains("undefined entity")));
    }
}

fn deep_xml(depth: usize) -> Vec<u8> {
    let mut s = Vec::with_capacity(depth * 7 + 8);
    for _ in 0..depth {
        s.extend_from_slice(b"<a>");
    }
    s.extend_from_slice(b"x");
    for _ in 0..depth {
        s.extend_from_slice(b"</a>");
    }
    s
}

#[test]
fn deep_xml_is_refused_by_default() {
    let xml = deep_xml(100_000);
    for r in x2j(&xml, &Limits::default()) {
        assert_eq!(r, Err(TransformError::TooDeep));
    }
    for r in x2j(&deep_xml(64), &Limits::default()) {
        assert!(r.is_ok());
    }
    for r in x2j(&deep_xml(65), &Limits::default()) {
        assert_eq!(r, Err(TransformError::TooDeep));
    }
}

#[test]
fn deep_xml_converts_without_recursion() {
    on_small_stack(|| {
        let depth = 100_000;
        let xml = deep_xml(depth);
        let limits = big_limits();
        let j = xml_to_json(&xml, XmlToJsonKind::JavascriptFriendly, &limits).unwrap();
        let expected = format!("{}\"x\"{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        assert_eq!(j, expected.as_bytes());

        let d = xml_to_json(&xml, XmlToJsonKind::Direct, &limits).unwrap();
        assert!(d.starts_with(br##"{"#name":"a","#attrs":{},"#children":[{"#name":"a""##));
        // Both JSON forms back to XML, iteratively too, and back again.
        let x2 = json_to_xml(&d, "root", &limits).unwrap();
        assert_eq!(
            x2,
            [&br#"<?xml version="1.0" encoding="UTF-8"?>"#[..], &xml].concat()
        );
        let x3 = json_to_xml(&j, "root", &limits).unwrap();
        assert_eq!(x3, x2);
        assert_eq!(xml_to_json(&x2, XmlToJsonKind::Direct, &limits).unwrap(), d);
    });
}

#[test]
fn deep_json_is_refused_without_recursion() {
    on_small_stack(|| {
        let depth = 100_000;
        let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        let unclosed = "[".repeat(depth);
        for json in [&arrays, &objects, &unclosed] {
            assert_eq!(
                json_to_xml(json.as_bytes(), "root", &Limits::default()),
                Err(TransformError::TooDeep)
            );
        }
        // With limits that allow it, it converts (no stack used per level).
        let limits = big_limits();
        let x = json_to_xml(arrays.as_bytes(), "root", &limits).unwrap();
        assert!(x.ends_with(b"</item></item></root>"));
        assert_eq!(x.windows(13).filter(|w| w == b"<item></item>").count(), 1);
        let x = json_to_xml(objects.as_bytes(), "root", &limits).unwrap();
        let expected = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>{}1{}",
            "<a>".repeat(depth),
            "</a>".repeat(depth)
        );
        assert_eq!(x, expected.as_bytes());
        assert_eq!(
            json_to_xml(unclosed.as_bytes(), "root", &limits).map(|_| ()),
            Err(TransformError::Malformed(format!(
                "invalid JSON at byte {depth}: unexpected end of document"
            )))
        );
    });
}

#[test]
fn json_depth_allows_what_xml_depth_allows() {
    // A 64-deep document in the javascript-friendly form nests arrays and objects: it is
    // still accepted back under the same limits.
    let mut xml = String::new();
    for _ in 0..63 {
        xml.push_str("<a><b/>");
    }
    for _ in 0..63 {
        xml.push_str("<b/></a>");
    }
    let limits = Limits::default();
    let j = xml_to_json(xml.as_bytes(), XmlToJsonKind::JavascriptFriendly, &limits).unwrap();
    let d = xml_to_json(xml.as_bytes(), XmlToJsonKind::Direct, &limits).unwrap();
    json_to_xml(&j, "root", &limits).unwrap();
    json_to_xml(&d, "root", &limits).unwrap();
    // Wrapping in root_element adds one level: 64 elements plus the root is too deep.
    let wrapped = format!("[{}]", String::from_utf8(j).unwrap());
    assert_eq!(
        json_to_xml(wrapped.as_bytes(), "root", &limits),
        Err(TransformError::TooDeep)
    );
}

#[test]
fn huge_attribute_count() {
    let n = 200_000;
    let mut xml = String::from("<r");
    for i in 0..n {
        xml.push_str(&format!(" a{i}=\"{i}\""));
    }
    xml.push_str("/>");
    // Linear duplicate checking: this finishes quickly.
    for r in x2j(xml.as_bytes(), &Limits::default()) {
        let j = r.unwrap();
        assert!(
            j.ends_with(br##""a199999":"199999"},"#children":[]}"##)
                || j.ends_with(br#""@a199999":"199999"}}"#)
        );
    }
    // Counted as nodes.
    let small = Limits {
        max_nodes: 1000,
        ..Limits::default()
    };
    for r in x2j(xml.as_bytes(), &small) {
        assert_eq!(r, Err(TransformError::TooManyNodes));
    }
    // A duplicate at the end is found.
    let dup = xml.replace("/>", " a100000=\"x\"/>");
    for r in x2j(dup.as_bytes(), &Limits::default()) {
        assert!(
            matches!(r, Err(TransformError::Malformed(m)) if m.contains("duplicate attribute"))
        );
    }
}

#[test]
fn many_siblings_and_distinct_names() {
    // 100,000 children with distinct names, then repeats: grouping stays linear.
    let n = 100_000;
    let mut xml = String::from("<r>");
    for i in 0..n {
        xml.push_str(&format!("<e{i}/>"));
    }
    xml.push_str("<e5/><e99999>z</e99999></r>");
    let j = xml_to_json(
        xml.as_bytes(),
        XmlToJsonKind::JavascriptFriendly,
        &Limits::default(),
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&j).unwrap();
    assert_eq!(v["r"]["e5"], serde_json::json!([null, null]));
    assert_eq!(v["r"]["e99999"], serde_json::json!([null, "z"]));
    assert_eq!(v["r"].as_object().unwrap().len(), n);
}

#[test]
fn size_and_node_limits() {
    let limits = Limits {
        max_bytes: 100,
        max_nodes: 10,
        max_depth: 64,
    };
    let big = format!("<r>{}</r>", "x".repeat(200));
    for r in x2j(big.as_bytes(), &limits) {
        assert_eq!(r, Err(TransformError::TooLarge));
    }
    assert_eq!(
        json_to_xml(
            format!("\"{}\"", "x".repeat(200)).as_bytes(),
            "root",
            &limits
        ),
        Err(TransformError::TooLarge)
    );
    // 1 root + 10 children = 11 elements.
    let many = format!("<r>{}</r>", "<a/>".repeat(10));
    for r in x2j(many.as_bytes(), &limits) {
        assert_eq!(r, Err(TransformError::TooManyNodes));
    }
    let nine = format!("<r>{}</r>", "<a/>".repeat(9));
    for r in x2j(nine.as_bytes(), &limits) {
        assert!(r.is_ok());
    }
    // Text counts; white space between elements does not.
    let text = "<r> <a>1</a> <a>2</a> <a>3</a> <a>4</a> <a>5</a> </r>";
    for r in x2j(text.as_bytes(), &limits) {
        assert_eq!(r, Err(TransformError::TooManyNodes));
    }
    let ws = "<r> <a/> <a/> <a/> <a/> <a/> </r>";
    for r in x2j(ws.as_bytes(), &limits) {
        assert!(r.is_ok());
    }
    assert_eq!(
        json_to_xml(b"[1,2,3,4,5,6,7,8,9,10]", "root", &limits),
        Err(TransformError::TooManyNodes)
    );
}

const MALFORMED_XML: &[&str] = &[
    "",
    "   ",
    "text",
    "<a>",
    "<a></b>",
    "<a><b></a></b>",
    "</a>",
    "<a/><b/>",
    "<a/>junk",
    "junk<a/>",
    "<a/>&amp;",
    "<a>&unknown;</a>",
    "<a>&#0;</a>",
    "<a>&#xD800;</a>",
    "<a>&#x110000;</a>",
    "<a>&#99999999999999999999;</a>",
    "<a>&#X41;</a>",
    "<a>&#;</a>",
    "<a>&#xZZ;</a>",
    "<a>& b</a>",
    "<a>&amp</a>",
    "<a b=1/>",
    "<a b/>",
    "<a b='1' b='2'/>",
    "<a b=\"<\"/>",
    "<a b=\"&bogus;\"/>",
    "<a b=\"&amp\"/>",
    "<a b=\"&#1;\"/>",
    "<a b=\"\x01\"/>",
    "<1a/>",
    "<a 1b=\"x\"/>",
    "<a>\x01</a>",
    "<a><![CDATA[\x02]]></a>",
    "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><a/>",
    "<?xml version=\"1.0\" encoding=\"UTF-16\"?><a/>",
    "<a><![CDATA[x</a>",
    "<a><!-- x</a>",
    "<a>]]></a>",
    "<a/><?xml version=\"1.0\"?>",
    "<a><?xml version=\"1.0\"?></a>",
    "<a/><![CDATA[x]]>",
    "<a",
    "<a b=\"1\"",
    "<<a/>",
];

#[test]
fn malformed_xml() {
    for xml in MALFORMED_XML {
        for r in x2j(xml.as_bytes(), &Limits::default()) {
            assert!(
                matches!(r, Err(TransformError::Malformed(_))),
                "{xml:?}: {r:?}"
            );
        }
    }
    // Not UTF-8.
    for bad in [
        &b"\xff\xfe<\x00a\x00/\x00>\x00"[..],
        b"<a>\xc3\x28</a>",
        b"<a>\xe9</a>",
    ] {
        for r in x2j(bad, &Limits::default()) {
            assert!(matches!(r, Err(TransformError::Malformed(m)) if m.contains("UTF-8")));
        }
    }
    // A UTF-8 byte order mark is fine.
    for r in x2j(b"\xEF\xBB\xBF<a>x</a>", &Limits::default()) {
        assert!(r.is_ok());
    }
}

#[test]
fn error_messages_are_short_and_client_safe() {
    let long = format!("<{0}></{0}x>", "a".repeat(10_000));
    let Err(TransformError::Malformed(m)) =
        xml_to_json(long.as_bytes(), XmlToJsonKind::Direct, &Limits::default())
    else {
        panic!()
    };
    assert!(m.len() < 250, "{m}");
    assert!(m.contains("at byte"), "{m}");
    let e = TransformError::Malformed(m).to_string();
    assert!(e.starts_with("malformed document: "));
    assert_eq!(
        TransformError::DoctypeRefused.to_string(),
        "XML documents with a DOCTYPE declaration are not accepted"
    );
}

const MALFORMED_JSON: &[&str] = &[
    "",
    " ",
    "{",
    "}",
    "[",
    "[1,]",
    "{\"a\"}",
    "{\"a\":}",
    "{a:1}",
    "[1 2]",
    "\"abc",
    "tru",
    "nul",
    "[1]]",
    "{}}",
    "1 2",
    "\"\\x\"",
    "\"\\ud800\"",
    "{\"a\":1,}",
    "[}",
    "{]",
    "01",
    "1.",
    "-",
    "NaN",
    "Infinity",
    "'a'",
    "[\"\t\"]",
    "\u{feff}\u{feff}1",
];

#[test]
fn malformed_json() {
    for json in MALFORMED_JSON {
        let r = json_to_xml(json.as_bytes(), "root", &Limits::default());
        assert!(
            matches!(r, Err(TransformError::Malformed(_))),
            "{json:?}: {r:?}"
        );
    }
    assert!(matches!(
        json_to_xml(b"{\"a\":\"\xff\"}", "root", &Limits::default()),
        Err(TransformError::Malformed(m)) if m.contains("UTF-8")
    ));
    assert!(json_to_xml("\u{feff}{\"a\":1}".as_bytes(), "root", &Limits::default()).is_ok());
}

/// A small deterministic generator (no extra dependency).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

const SEEDS_XML: &[&str] = &[
    "<?xml version=\"1.0\"?><r a=\"1\" b='&lt;x&#65;'><x>1</x><x>t &amp; u<![CDATA[<c>]]></x><!-- c --><y/><?p q?><z:w xmlns:z=\"urn:z\">é😀</z:w>\r\n</r>",
    "<p id=\"1\">Hello <b>world</b>, <i>again</i>!</p>",
];

const SEEDS_JSON: &[&str] = &[
    r##"{"r":{"@a":"1","x":["1",{"@k":"v","#text":"t"}],"y":null,"n":-1.5e3,"b":[true,false],"s":"\u00e9\ud83d\ude00\n"}}"##,
    r##"{"#name":"p","#attrs":{"id":"1"},"#children":["Hello ",{"#name":"b","#attrs":{},"#children":["world"]},"!"]}"##,
];

/// Truncations and byte mutations of valid documents: every result is Ok or an error,
/// never a panic.
#[test]
fn fuzzish_inputs_never_panic() {
    let limits = Limits::default();
    let mut rng = Lcg(0x5eed);
    let interesting = b"<>&;/=\"'![]-?#x:\r\n \t\x00\xff\xc3{}[],:\\u";
    for seed in SEEDS_XML.iter().chain(SEEDS_JSON) {
        let seed = seed.as_bytes();
        let mut cases: Vec<Vec<u8>> = (0..=seed.len()).map(|n| seed[..n].to_vec()).collect();
        for _ in 0..3000 {
            let mut m = seed.to_vec();
            for _ in 0..1 + rng.next() % 4 {
                let i = (rng.next() as usize) % m.len();
                match rng.next() % 3 {
                    0 => m[i] = interesting[(rng.next() as usize) % interesting.len()],
                    1 => {
                        m.remove(i);
                    }
                    _ => m.insert(i, interesting[(rng.next() as usize) % interesting.len()]),
                }
            }
            cases.push(m);
        }
        for _ in 0..500 {
            let len = (rng.next() % 64) as usize;
            cases.push((0..len).map(|_| rng.next() as u8).collect());
        }
        for c in &cases {
            for k in KINDS {
                if let Ok(j) = xml_to_json(c, k, &limits) {
                    // Whatever converts is valid JSON, and converts back.
                    serde_json::from_slice::<serde_json::Value>(&j).unwrap();
                    json_to_xml(&j, "root", &limits).unwrap();
                }
            }
            if let Ok(x) = json_to_xml(c, "root", &limits) {
                // Whatever converts is well-formed XML.
                xml_to_json(&x, XmlToJsonKind::Direct, &limits).unwrap();
            }
        }
    }
}
