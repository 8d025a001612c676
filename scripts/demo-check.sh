#!/usr/bin/env bash
# The demo as a newcomer runs it (`tail` with no URL: an embedded fixture, a
# publisher, faults): it subscribes from the start of its channels, so the
# first event shown on each is number 1, and the numbering has no hole.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p resub --example tail
out=$(mktemp)
trap 'rm -f "$out"' EXIT
timeout 60 target/release/examples/tail --count 40 >"$out" 2>/dev/null
python3 - "$out" <<'PY'
import json, sys
seen = {}
for line in open(sys.argv[1]):
    m = json.loads(line)
    assert "reset" not in m, m
    seen.setdefault(m["channel"], []).append(json.loads(m["data"])["n"])
assert sorted(seen) == ["chat", "prices"], seen.keys()
for channel, ns in seen.items():
    assert ns[0] == 1, f"{channel}: the first event shown is {ns[0]}, not 1"
    assert ns == list(range(1, len(ns) + 1)), f"{channel}: {ns}"
print(f"demo-check: both channels start at event 1 ({sum(map(len, seen.values()))} events, no hole)")
PY
