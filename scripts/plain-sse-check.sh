#!/usr/bin/env bash
# `tail --plain-sse` against the fixture's plain SSE server (a standard
# event stream, not the resub protocol): events print as {"id","event","data"}
# lines, an id-less event prints id null, multi-line data is joined with LF,
# and a drop is survived by reconnecting with Last-Event-ID.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p resub-fixture
cargo build --release -q -p resub --example tail
pids=()
trap 'for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done' EXIT
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
log=$(mktemp); out=$(mktemp)
target/release/resub-fixture --plain-sse --addr "127.0.0.1:$port" >"$log" 2>&1 & pids+=($!)
for _ in $(seq 100); do grep -q 'listening on' "$log" && break; sleep 0.1; done
base="http://127.0.0.1:$port"
timeout 60 target/release/examples/tail --plain-sse "$base/events" --count 4 >"$out" & tail_pid=$!; pids+=($tail_pid)
# Events are live-only until the stream is open: wait for it (the answer counts streams).
for _ in $(seq 200); do
  n=$(curl -fsS -X POST "$base/push?id=e1" --data-binary 'first' | python3 -c 'import json,sys;print(json.load(sys.stdin)["streams"])')
  [ "$n" -ge 1 ] && break
  sleep 0.05
done
[ "$n" -ge 1 ] || { echo "plain-sse-check: the stream never opened"; exit 1; }
curl -fsS -X POST "$base/push?event=note" --data-binary $'two\nlines' >/dev/null
curl -fsS -X POST "$base/push?id=e3" --data-binary 'third' >/dev/null
curl -fsS -X POST "$base/drop" >/dev/null
curl -fsS -X POST "$base/push?id=e4" --data-binary 'after the drop' >/dev/null
wait "$tail_pid" || { echo "plain-sse-check: tail did not exit 0"; cat "$out"; exit 1; }
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
want = [
    {"id": "e1", "event": "message", "data": "first"},
    {"id": None, "event": "note", "data": "two\nlines"},
    {"id": "e3", "event": "message", "data": "third"},
    {"id": "e4", "event": "message", "data": "after the drop"},
]
if rows != want:
    sys.exit(f"plain-sse-check: got {rows}")
PY
echo "plain-sse-check: ok"
