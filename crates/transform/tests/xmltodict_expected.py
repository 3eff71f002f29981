#!/usr/bin/env python3
"""Regenerates the CORPUS table of tests/corpus.rs from xmltodict (the reference for the
javascript-friendly convention).

    pip install xmltodict==1.0.4
    python3 crates/transform/tests/xmltodict_expected.py > /tmp/corpus_table.rs

Each entry is (name, xml, expected json) where the JSON is
json.dumps(xmltodict.parse(xml), separators=(",", ":"), ensure_ascii=False):
compact, keys in xmltodict's order (attributes, children by first appearance, #text).
Paste the output over the CORPUS table in tests/corpus.rs.
"""
import json

import xmltodict

CORPUS = [
    ("simple", "<root><a>1</a><b>two</b></root>"),
    ("attributes", '<book id="42" lang="en"><title>T</title><year>2020</year></book>'),
    ("attribute_and_text", '<price currency="EUR">12.50</price>'),
    ("repeated", "<list><item>1</item><item>2</item><item>3</item></list>"),
    ("repeated_not_adjacent", "<r><a>1</a><b>x</b><a>2</a><c/><a>3</a></r>"),
    ("single_vs_array", "<r><one><x>1</x></one><many><x>1</x><x>2</x></many></r>"),
    ("empty_elements", '<r><e/><f></f><g a="1"/><h a="1"></h></r>'),
    ("pretty_printed", "<r>\n  <a>1</a>\n  <b>\n    <c>2</c>\n    <c>3</c>\n  </b>\n</r>\n"),
    ("mixed_content", "<p>Hello <b>world</b>, again <i>x</i>!</p>"),
    ("mixed_with_attributes", '<r a="1">t<c/>u</r>'),
    ("cdata", "<r><code><![CDATA[if (a < b && c) { x(\"q\"); }]]></code></r>"),
    ("cdata_mixed_with_text", "<r>a<![CDATA[<b>]]>c</r>"),
    ("namespaces",
     '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns="urn:x">'
     '<soap:Body><m:GetPrice xmlns:m="urn:m"><m:Item>Apple</m:Item><m:Item>Pear</m:Item>'
     '</m:GetPrice></soap:Body></soap:Envelope>'),
    ("unicode", '<r lang="日本語"><name>Zoë 😀</name><t>&#x1F600;&#233;&#xe9;</t></r>'),
    ("predefined_entities", "<r a=\"&lt;&amp;&gt;&quot;&apos;\">&lt;tag&gt; &amp; &quot;q&quot; &apos;a&apos;</r>"),
    ("declaration_comments_pis",
     '<?xml version="1.0" encoding="UTF-8"?>\n<!-- c -->\n<?pi x?>\n'
     '<r><!-- inner --><a>1</a><?php echo 1; ?><b>x<!-- split -->y</b></r>\n<!-- after -->\n'),
    ("whitespace_only_leaves", "<r><a>   </a><b>\n\t</b><c> x </c></r>"),
    ("text_trimmed_around_entities", "<r>  a &amp; b  </r>"),
    ("quotes_backslashes_char_refs", "<r q='say \"hi\" \\ back'>tab&#9;nl&#10;cr&#13;x</r>"),
    ("attribute_value_normalization", '<r a="x&#10;y" b="x\ny" c="p\tq" d="  s  "/>'),
    ("crlf_line_ends", "<r>\r\n<a>x\r\ny\rz</a>\r\n</r>"),
    ("repeated_with_mixed_kinds", '<r><x a="1"/><x>t</x><x/><x><y>1</y></x></r>'),
    ("many_distinct_names",
     "<r>" + "".join(f"<n{i}>{i}</n{i}>" for i in range(20)) + "<n3>again</n3><n19/><n0>z</n0></r>"),
    ("root_only_empty", "<r/>"),
    ("root_only_text", "<r>text</r>"),
    ("catalog",
     '<catalog xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
     '<book id="bk101" available="true"><author>Gambardella, Matthew</author>'
     "<title>XML Developer's Guide</title><genre>Computer</genre><price>44.95</price>"
     "<tags><tag>xml</tag><tag>dev</tag></tags></book>"
     '<book id="bk102"><author>Ralls, Kim</author><title>Midnight Rain</title>'
     "<price>5.95</price><tags><tag>fantasy</tag></tags><note/></book></catalog>"),
    ("nested_repeated_objects",
     "<orders><order><id>1</id><line><sku>A</sku><qty>2</qty></line><line><sku>B</sku>"
     "<qty>1</qty></line></order><order><id>2</id><line><sku>C</sku><qty>5</qty></line>"
     "</order></orders>"),
    ("names_with_dots_dashes_underscores", "<a.b><c-d>1</c-d><_e>2</_e><f.g-h_i>3</f.g-h_i></a.b>"),
]


def rust_str(s):
    if not any(c in s for c in "\n\r\t") and ('"' in s or "\\" in s):
        hashes = "#"
        while '"' + hashes in s:
            hashes += "#"
        return f'r{hashes}"{s}"{hashes}'
    out = ['"']
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


print("const CORPUS: &[(&str, &str, &str)] = &[")
for name, xml in CORPUS:
    expected = json.dumps(xmltodict.parse(xml), separators=(",", ":"), ensure_ascii=False)
    print("    (")
    print(f"        {rust_str(name)},")
    print(f"        {rust_str(xml)},")
    print(f"        {rust_str(expected)},")
    print("    ),")
print("];")
