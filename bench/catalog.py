#!/usr/bin/env python3
"""The benchmarks' XML answer: a product catalog of about 10 KB (attributes, a namespace
prefix, repeated elements, entities, non-ASCII text, empty elements), written to FILE.

    catalog.py FILE
"""
import sys

head = '<?xml version="1.0" encoding="UTF-8"?>\n<catalog xmlns:x="urn:bench" version="1">\n'
body, i = "", 0
while len((head + body + "</catalog>\n").encode()) < 10_000:
    body += (f'  <product id="p{i}" x:sku="SKU-{i:05d}">\n    <name>Widget &amp; gadget n\u00b0{i}</name>\n'
             f'    <price currency="EUR">{i * 3 + 0.5:.2f}</price>\n    <tag>tools</tag><tag>home</tag>\n'
             f'    <stock/>\n  </product>\n')
    i += 1
open(sys.argv[1], "w").write(head + body + "</catalog>\n")
