#!/usr/bin/env bash
# Microbenchmarks (benches/micro.rs, criterion) of the SSE parser, frame
# decoding and one core step, each beside a baseline in the same group.
# Writes bench/results/micro.md from criterion's estimates.
#
#   bash scripts/bench-micro.sh            (BENCH_MICRO_RUNS=N, default 5)
#
# The bench runs N times (each run is short, see config() in
# benches/micro.rs: about a minute for five, after the build). Per benchmark
# the fragment gives the median over the runs of criterion's median estimate,
# the lowest and highest run, and the envelope of the runs' 95% confidence
# intervals; each ratio to its baseline is computed within a run, and its
# median and range over the runs are given.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${BENCH_MICRO_RUNS:-5}

target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cargo bench --bench micro --no-run
for i in $(seq 1 "$runs"); do
  echo "=== run $i of $runs ==="
  cargo bench --bench micro -- --noplot
  mkdir -p "$tmp/run$i"
  (cd "$target/criterion" && find . -path '*/new/*.json' -exec cp --parents {} "$tmp/run$i/" \;)
done

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
rustc_version=$(rustc --version | awk '{print $2}')
mkdir -p bench/results
python3 - "$tmp" "$runs" "$commit" "$rustc_version" >bench/results/micro.md <<'EOF'
import json, os, statistics, sys

root, runs, commit, rustc = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

# (group, id, what is measured, id of the measured path it is the baseline of)
ROWS = [
    ("sse", "sse_parser", "`SseParser::feed`, 1,000 fixture-shaped events (one buffer)", None),
    ("sse", "memchr_lines", "baseline: memchr line splitter over the same bytes", "sse_parser"),
    ("frame", "server_frame", "`serde_json::from_str::<ServerFrame>`, one event frame", None),
    ("frame", "json_value", "baseline: `serde_json::from_str::<serde_json::Value>`, same text", "server_frame"),
    ("frame", "owned_struct", "baseline: a hand-written reader's struct (type, channel, id, event, data as `String`s), same text", "server_frame"),
    ("core", "session_step", "`Session::handle_input(Input::Received)` + draining `poll_output`, one event", None),
    ("core", "frame_decode", "baseline: decoding the same frame alone", "session_step"),
]

def load(run, group, bench):
    d = os.path.join(root, f"run{run}", group, bench, "new")
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
        return f"{ns / 1e3:.1f} µs"
    return f"{ns:.0f} ns"

def rate(t, ns):
    if "Bytes" in t:
        return f"{t['Bytes'] / ns * 1e9 / 1e6:,.0f} MB/s"
    if "Elements" in t:
        return f"{t['Elements'] / ns * 1e9 / 1e6:,.2f} M/s"
    return ""

est = {(g, b): [load(r, g, b) for r in range(1, runs + 1)] for g, b, _, _ in ROWS}
level = est[(ROWS[0][0], ROWS[0][1])][0]["level"]
print("## Microbenchmarks")
print()
print(f"criterion (`cargo bench --bench micro`, 30 samples in 1 s after a 0.3 s warm-up per benchmark), run {runs} times at commit `{commit}` with rustc {rustc}: "
      f"per benchmark the median over the runs of criterion's median time per operation, the fastest and slowest run, and the envelope of the runs' {level:.0%} confidence intervals; "
      "each measured path is set against a baseline in the same group, the ratio (path time over baseline time) taken within each run, with its median and range over the runs.")
print()
print("| group | benchmark | median | runs min–max | CI envelope | throughput | ratio to baseline |")
print("|---|---|---:|---:|---:|---:|---:|")
for g, b, what, of in ROWS:
    es = est[(g, b)]
    ns = [e["ns"] for e in es]
    med = statistics.median(ns)
    if of is None:
        base = next(x[1] for x in ROWS if x[0] == g and x[3] == b)
        ratios = [e["ns"] / m["ns"] for e, m in zip(es, est[(g, base)])]
        ratio = f"**{statistics.median(ratios):.2f}×** ({min(ratios):.2f}–{max(ratios):.2f})"
    elif next(x[1] for x in ROWS if x[0] == g and x[3] == of) == b:
        ratio = "1.00× (baseline)"
    else:
        # A further baseline of the same path: the path's time over this one's.
        ratios = [m["ns"] / e["ns"] for e, m in zip(es, est[(g, of)])]
        ratio = f"baseline; the path takes **{statistics.median(ratios):.2f}×** ({min(ratios):.2f}–{max(ratios):.2f})"
    print(f"| {g} | {what} | {fmt_ns(med)} | {fmt_ns(min(ns))} – {fmt_ns(max(ns))} | "
          f"{fmt_ns(min(e['lo'] for e in es))} – {fmt_ns(max(e['hi'] for e in es))} | {rate(es[0]['throughput'], med)} | {ratio} |")
print()
print("A ratio above 1 means the measured path takes that many times its baseline's time.")
EOF
cat bench/results/micro.md
