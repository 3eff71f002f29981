#!/usr/bin/env python3
"""Where the user-space cycles of a request go, from bench/run.sh's profiles: the self
samples of each user-space symbol in OUT/perf-CASE.data, scaled to the user cycles per
request `perf stat` counted for that case (its best round in results.jsonl), grouped,
and the symbols that grew most from the first case to the others. The kernel's share of
the samples is left out: DWARF stack copies inflate it (perf stat's kernel cycles are the
figure to use). Where perf counted no cycles (a VM without a PMU), the cpu-clock samples,
the kernel's included, are scaled to the case's CPU time per request instead (ns).

    perf-groups.py OUT_DIR [CASES...]      default: bare tg-pass tg-full
"""
import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

GROUPS = [
    ("memcpy/memmove (large moves)", r"memmove|memcpy"),
    ("mimalloc malloc/free", r"^_?mi_|malloc|\bfree\b|__rust_(de)?alloc"),
    ("`Bytes` reference counts (header values)", r"^bytes::"),
    ("`HeaderMap`, header names (`http`, `pingora_http`)", r"http::header|pingora_http|case_header|titled_header"),
    ("clocks and timers", r"clock_gettime|Timespec|Instant|Sleep|register_timer|TimerStub|pingora_timeout|tokio::time"),
    ("`ArcSwap` loads", r"arc_swap"),
    ("analytics + metrics", r"crossbeam|prometheus|tollgate_analytics|sip::Hasher"),
    ("key lookup (HMAC-SHA256, ring)", r"sha2|hmac|KeyRing|keys::digest"),
    ("counters", r"tollgate_counters|dashmap"),
    ("Tollgate's own functions (self)", r"tollgate"),
]
OTHER = "Pingora, tokio, httparse, … (the rest)"


def best_round(out, case, per_request):
    """The case's smallest figure over its rounds in results.jsonl (the best round, as in
    peers-report.py); `per_request(row)` is a row's figure, or falsy when it has none."""
    xs = [x for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())
          if r["case"] == case and (x := per_request(r))]
    return min(xs) if xs else None


def symbols(out, case):
    data = out / f"perf-{case}.data"
    if not data.exists():
        return None
    text = subprocess.run(["perf", "report", "-q", "-i", str(data), "--no-children", "--stdio",
                           "--sort", "dso,symbol", "-g", "none"],
                          capture_output=True, text=True).stdout
    d, kernel = defaultdict(float), 0.0
    for line in text.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*?)\s*(-\s+-)?\s*$", line)
        if not m:
            continue
        if m.group(3) == "k":
            kernel += float(m.group(1))
        else:
            d[m.group(4)] += float(m.group(1))
    cyc = best_round(out, case, lambda r: r.get("instr_requests")
                     and r.get("cycles_user", 0) / r["instr_requests"])
    if cyc:
        if kernel >= 100:
            return None
        return {k: v * cyc / (100 - kernel) for k, v in d.items()}, "cycles"
    # No cycle counts (a VM without a PMU): the samples are of CPU time (cpu-clock), so
    # scale all of them, the kernel's too, to the case's CPU time per request.
    ns = best_round(out, case, lambda r: r.get("cpu_us", 0) * 1000)
    return ({k: v * ns / 100 for k, v in d.items()}, "ns") if ns else None


def group(d):
    g = defaultdict(float)
    for sym, v in d.items():
        for name, rx in GROUPS:
            if re.search(rx, sym):
                g[name] += v
                break
        else:
            g[OTHER] += v
    return g


def main():
    out = Path(sys.argv[1])
    cases = sys.argv[2:] or ["bare", "tg-pass", "tg-full"]
    found = {c: symbols(out, c) for c in cases}
    cases = [c for c in cases if found[c]]
    if len(cases) < 2:
        print("not enough profiles")
        return
    syms = {c: found[c][0] for c in cases}
    unit = "cycles" if all(found[c][1] == "cycles" for c in cases) else "ns"
    groups = {c: group(syms[c]) for c in cases}
    base = cases[0]
    names = sorted({n for g in groups.values() for n in g},
                   key=lambda n: -(groups[cases[1]].get(n, 0) - groups[base].get(n, 0)))
    if unit == "cycles":
        print("User-space cycles per request by group (perf self samples scaled to perf stat's user cycles):")
    else:
        print("User-space CPU ns per request by group (perf self samples of cpu-clock, kernel included, "
              "scaled to the case's CPU time per request, best round; this perf counts no cycles):")
    print()
    print("| group | " + " | ".join(cases) + " |")
    print("|---|" + "---:|" * len(cases))
    for n in names:
        print(f"| {n} | " + " | ".join(f"{groups[c].get(n, 0):,.0f}" for c in cases) + " |")
    print("| **user space, total** | " + " | ".join(f"**{sum(groups[c].values()):,.0f}**" for c in cases) + " |")
    for prev, c in zip(cases, cases[1:]):
        a, b = syms[prev], syms[c]
        diff = sorted(((b.get(k, 0) - a.get(k, 0), k) for k in set(a) | set(b)), reverse=True)
        print()
        print(f"Largest increases {prev} → {c} (user {unit} per request):")
        print()
        for dv, k in diff[:20]:
            print(f"    {dv:+7,.0f} {a.get(k, 0):7,.0f} → {b.get(k, 0):7,.0f}  {k[:110]}")


if __name__ == "__main__":
    main()
