#!/usr/bin/env python3
"""Draws one counter of a Google Benchmark JSON file as a grouped bar chart (SVG).

Each benchmark's name is split at its first '/': the family (one bar colour)
and the case (one group of bars, e.g. the shape '1024/4096'). A trailing
'/real_time' is dropped. Only the standard library is used.

    build/release/bench/bench_muon --benchmark_out=muon.json --benchmark_out_format=json
    scripts/plot_bench.py muon.json --counter ratio_to_dense --out ratio.svg \
        --title "Newton-Schulz time over the dense bound" --line 1

Options:
    --counter NAMES  the counter to plot (default: real_time); several,
                     comma-separated, give one colour each
    --filter REGEX   only benchmarks whose full name matches
    --line Y         a dashed reference line at Y (a bar, or 1 for a ratio)
    --title TEXT     the plot's title
    --ylabel TEXT    the y axis's label (default: the counter's name)
    --out FILE       the SVG to write (default: the counter's name + .svg)
"""
import argparse
import json
import math
import re
import sys
from collections import OrderedDict

COLORS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"]


def load(path, counters, pattern):
    with open(path) as f:
        data = json.load(f)
    values = OrderedDict()  # family -> case -> value
    cases = []
    for b in data.get("benchmarks", []):
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        name = b.get("run_name", b["name"])
        if pattern and not re.search(pattern, name):
            continue
        name = re.sub(r"/real_time$", "", name)
        family, _, case = name.partition("/")
        case = case.replace("/", " x ") or family
        for counter in counters:
            if counter not in b:
                continue
            # Several counters: each is a colour, the whole name a group.
            key = family if len(counters) == 1 else counter
            values.setdefault(key, OrderedDict())[case] = float(b[counter])
            if case not in cases:
                cases.append(case)
    if not values:
        sys.exit("plot_bench: no benchmark in %s has the counter(s) %s" % (path, ", ".join(counters)))
    return values, cases


def svg(values, cases, title, ylabel, line):
    h, ml, mr, mt, mb = 420, 70, 170, 40, 70
    w = max(760, ml + mr + 95 * len(cases))
    top = max(max(v.values()) for v in values.values())
    if line is not None:
        top = max(top, line)
    # Ticks at 1, 2 or 5 times a power of ten, five or so of them.
    raw = top * 1.1 / 5
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    ticks = int(math.ceil(top * 1.05 / step))
    top = ticks * step
    families = list(values)
    group = (w - ml - mr) / len(cases)
    bar = group * 0.8 / len(families)
    y = lambda v: h - mb - v / top * (h - mt - mb)
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">' % (w, h),
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="%g" y="22" text-anchor="middle" font-size="14">%s</text>' % ((ml + w - mr) / 2, title)]
    for k in range(ticks + 1):
        v = step * k
        out.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#e5e5e5"/>' % (ml, w - mr, y(v), y(v)))
        out.append('<text x="%d" y="%.1f" text-anchor="end">%.3g</text>' % (ml - 6, y(v) + 4, v))
    out.append('<text x="16" y="%g" text-anchor="middle" transform="rotate(-90 16 %g)">%s</text>'
               % ((mt + h - mb) / 2, (mt + h - mb) / 2, ylabel))
    for i, case in enumerate(cases):
        x0 = ml + i * group + group * 0.1
        for j, fam in enumerate(families):
            v = values[fam].get(case)
            if v is None:
                continue
            out.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %.4g</title></rect>'
                       % (x0 + j * bar, y(v), bar * 0.95, h - mb - y(v), COLORS[j % len(COLORS)], fam, case, v))
        out.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>' % (ml + (i + 0.5) * group, h - mb + 16, case))
    if line is not None:
        out.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#333" stroke-dasharray="5,4"/>'
                   % (ml, w - mr, y(line), y(line)))
    out.append('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="#888"/>' % (ml, w - mr, h - mb, h - mb))
    for j, fam in enumerate(families):
        ly = mt + 10 + 20 * j
        out.append('<rect x="%d" y="%d" width="14" height="12" fill="%s"/><text x="%d" y="%d">%s</text>'
                   % (w - mr + 14, ly - 10, COLORS[j % len(COLORS)], w - mr + 34, ly, fam))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json")
    p.add_argument("--counter", default="real_time")
    p.add_argument("--filter")
    p.add_argument("--line", type=float)
    p.add_argument("--title", default="")
    p.add_argument("--ylabel")
    p.add_argument("--out")
    a = p.parse_args()
    values, cases = load(a.json, a.counter.split(","), a.filter)
    with open(a.out or a.counter + ".svg", "w") as f:
        f.write(svg(values, cases, a.title, a.ylabel or a.counter, a.line))


if __name__ == "__main__":
    main()
