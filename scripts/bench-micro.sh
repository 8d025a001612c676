#!/usr/bin/env bash
# Microbenchmarks (benches/micro.rs, criterion) of the SSE parser, frame
# decoding and one core step, each beside a baseline in the same group.
# Writes bench/results/micro.md from criterion's estimates.
#
#   bash scripts/bench-micro.sh
#
# Criterion runs with short warm-up and measurement times (see config() in
# benches/micro.rs): about a minute in all, after the build.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo bench --bench micro -- --noplot
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
rustc_version=$(rustc --version | awk '{print $2}')
mkdir -p bench/results

python3 - "$target/criterion" "$commit" "$rustc_version" >bench/results/micro.md <<'EOF'
import json, os, sys

root, commit, rustc = sys.argv[1:4]

# (group, id, what is measured, baseline id or None)
ROWS = [
    ("sse", "sse_parser", "`SseParser::feed`, 1,000 fixture-shaped events (one buffer)", None),
    ("sse", "memchr_lines", "baseline: memchr line splitter over the same bytes", "sse_parser"),
    ("frame", "server_frame", "`serde_json::from_str::<ServerFrame>`, one event frame", None),
    ("frame", "json_value", "baseline: `serde_json::from_str::<serde_json::Value>`, same text", "server_frame"),
    ("core", "session_step", "`Session::handle_input(Input::Received)` + draining `poll_output`, one event", None),
    ("core", "frame_decode", "baseline: decoding the same frame alone", "session_step"),
]

def load(group, bench):
    d = os.path.join(root, group, bench, "new")
    with open(os.path.join(d, "estimates.json")) as f:
        med = json.load(f)["median"]
    with open(os.path.join(d, "benchmark.json")) as f:
        meta = json.load(f)
    ci = med["confidence_interval"]
    return {"ns": med["point_estimate"], "lo": ci["lower_bound"], "hi": ci["upper_bound"],
            "level": ci["confidence_level"], "throughput": meta.get("throughput") or {}}

def fmt_ns(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.1f} ns"

def rate(est, ns):
    t = est["throughput"]
    if "Bytes" in t:
        return f"{t['Bytes'] / ns * 1e9 / 1e6:,.0f} MB/s"
    if "Elements" in t:
        return f"{t['Elements'] / ns * 1e9 / 1e6:,.2f} M/s"
    return ""

est = {(g, b): load(g, b) for g, b, _, _ in ROWS}
level = next(iter(est.values()))["level"]
print("## Microbenchmarks")
print()
print(f"criterion (`cargo bench --bench micro`, 50 samples of 3 s after 0.5 s warm-up per benchmark) at commit `{commit}` with rustc {rustc}: "
      f"the median time per operation with its {level:.0%} confidence interval, and each measured path against a baseline in the same group and run; "
      "the ratio is the path's median over the baseline's, with the range the two intervals allow.")
print()
print("| group | benchmark | median | interval | throughput | ratio |")
print("|---|---|---:|---:|---:|---:|")
for g, b, what, of in ROWS:
    e = est[(g, b)]
    interval = f"{fmt_ns(e['lo'])} – {fmt_ns(e['hi'])}"
    if of is None:
        base = next(x for x in ROWS if x[0] == g and x[3] == b)
        m = est[(g, base[1])]
        r, rlo, rhi = e["ns"] / m["ns"], e["lo"] / m["hi"], e["hi"] / m["lo"]
        ratio = f"**{r:.2f}×** ({rlo:.2f}–{rhi:.2f})"
    else:
        ratio = "1.00×"
    print(f"| {g} | {what} | {fmt_ns(e['ns'])} | {interval} | {rate(e, e['ns'])} | {ratio} |")
print()
print("The ratio sits on the measured path's row: how many times the baseline's time it takes (1.00× is the baseline itself).")
EOF
cat bench/results/micro.md
