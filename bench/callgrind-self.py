#!/usr/bin/env python3
"""Self cost per function of a callgrind dump (callgrind_annotate 3.19 attributes every
self cost of the dumps bench/profile.sh takes to `clone`; this reads the format itself),
and the callers of one function.

    callgrind-self.py FILE [REQUESTS] [TOP]                 instructions/request, %, function
    callgrind-self.py FILE REQUESTS TOP --callers SUBSTRING  who calls it, with the calls' cost
    callgrind-self.py FILE REQUESTS TOP --callees SUBSTRING  what it calls, with the calls' cost
    callgrind-self.py FILE REQUESTS 0 --json CASE            one JSON line: the case, its
        requests, instructions per request and the part of them in memcpy (bench/run.sh's
        report reads it)
"""
import json
import re
import sys
from collections import defaultdict

path = sys.argv[1]
requests = int(sys.argv[2]) if len(sys.argv) > 2 else 1
top = int(sys.argv[3]) if len(sys.argv) > 3 else 30
names = {}
selfcost = defaultdict(int)
fn = None
cfn = None
callers = defaultdict(int)
want = sys.argv[sys.argv.index("--callers") + 1] if "--callers" in sys.argv else None
of = sys.argv[sys.argv.index("--callees") + 1] if "--callees" in sys.argv else None
callees = defaultdict(int)
of_self = 0
after_calls = False
total = 0
name_re = re.compile(r"^(fn|cfn|fl|fi|fe|cfi|cfl|ob|cob)=\((\d+)\)(?: (.*))?$")
for line in open(path, errors="replace"):
    line = line.rstrip("\n")
    if not line:
        continue
    m = name_re.match(line)
    if m:
        kind, ident, name = m.groups()
        key = ("fn" if kind in ("fn", "cfn") else kind, ident)
        if name is not None:
            names[key] = name
        if kind == "fn":
            fn = names.get(("fn", ident), ident)
        if kind == "cfn":
            cfn = names.get(("fn", ident), ident)
        continue
    if line.startswith("calls="):
        after_calls = True
        continue
    c = line[0]
    if c.isdigit() or c in "+-*":
        parts = line.split()
        if len(parts) >= 2:
            cost = int(parts[1])
            if after_calls:
                after_calls = False
                if want and cfn and want in cfn:
                    callers[fn] += cost
                if of and fn and of in fn:
                    callees[cfn] += cost
            elif fn is not None:
                selfcost[fn] += cost
                if of and of in fn:
                    of_self += cost
                total += cost
        continue
    if line.startswith("summary:"):
        pass
if "--json" in sys.argv:
    memcpy = sum(c for name, c in selfcost.items() if "memcpy" in name)
    print(json.dumps({"case": sys.argv[sys.argv.index("--json") + 1], "requests": requests,
                      "instr": total / requests, "memcpy": memcpy / requests}))
    sys.exit(0)
if want:
    print(f"-- callers of *{want}*: instructions/request spent in the calls, caller")
    for name, cost in sorted(callers.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{cost / requests:>9,.0f}  {name[:170]}")
    sys.exit(0)
if of:
    print(f"-- callees of *{of}*: instructions/request in the calls (self: {of_self / requests:,.0f})")
    for name, cost in sorted(callees.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{cost / requests:>9,.0f}  {name[:170]}")
    sys.exit(0)
rows = sorted(selfcost.items(), key=lambda kv: -kv[1])
print(f"-- self cost (top {top}): instructions/request, % of total, function")
for name, cost in rows[:top]:
    print(f"{cost / requests:>9,.0f} {cost / total * 100:6.2f}%  {name[:160]}")
