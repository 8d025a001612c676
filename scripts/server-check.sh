#!/usr/bin/env bash
# The server-teams path from the command line: `resub-server` with a JWT
# secret, `tail --token` on a channel the token covers (events print; the
# token is never logged), and on one it does not (tail says why on stderr and
# exits 1).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p resub-server
cargo build --release -q -p resub --example tail
pids=()
dir=$(mktemp -d)
trap 'for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"' EXIT
secret="$dir/secret"
printf '%s\n' "server-check secret, 32 bytes or more" >"$secret"
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
log="$dir/server.log"
target/release/resub-server --addr "127.0.0.1:$port" --jwt-secret-file "$secret" >"$log" 2>&1 & pids+=($!)
for _ in $(seq 100); do grep -q 'listening on' "$log" && break; sleep 0.1; done
first=$(head -1 "$log")
[ "$first" = "listening on http://127.0.0.1:$port" ] || { echo "server-check: first line is '$first'"; exit 1; }
base="http://127.0.0.1:$port"
# An HS256 token: sub alice, may subscribe to news.*, publish to news.*.
token=$(python3 - "$secret" <<'PY'
import base64, hashlib, hmac, json, sys, time
secret = open(sys.argv[1], "rb").read().rstrip(b"\n")
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
body = b64(json.dumps({"sub": "alice", "exp": int(time.time()) + 600,
                       "subscribe": ["news.*"], "publish": ["news.*"]}).encode())
sig = b64(hmac.new(secret, head + b"." + body, hashlib.sha256).digest())
print((head + b"." + body + b"." + sig).decode())
PY
)
out="$dir/out"
timeout 60 target/release/examples/tail --transport ws --token "$token" --count 3 "$base" news.eu >"$out" 2>"$dir/tail.err" & tp=$!; pids+=($tp)
# Publishing needs the token too; without it, 401.
status=$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary x "$base/publish/news.eu")
[ "$status" = 401 ] || { echo "server-check: a publish without a token answered $status"; exit 1; }
# Wait until tail's subscription is live: the presence route counts nothing,
# so publish until the third event has been printed.
for i in $(seq 1 200); do
  curl -fsS -X POST -H "authorization: Bearer $token" --data-binary "e$i" "$base/publish/news.eu" >/dev/null
  [ "$(wc -l <"$out")" -ge 3 ] && break
  sleep 0.05
done
wait "$tp" || { echo "server-check: tail --token did not exit 0"; cat "$dir/tail.err"; exit 1; }
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
assert len(rows) == 3 and all(r["channel"] == "news.eu" for r in rows), rows
seqs = [int(r["data"][1:]) for r in rows]
assert seqs == list(range(seqs[0], seqs[0] + 3)), f"in order, none missing: {seqs}"
PY
# A channel outside the token: the error on stderr, exit status 1.
set +e
timeout 30 target/release/examples/tail --transport ws --token "$token" "$base" secret >/dev/null 2>"$dir/forbidden.err"
code=$?
set -e
[ "$code" = 1 ] || { echo "server-check: tail on a forbidden channel exited $code"; cat "$dir/forbidden.err"; exit 1; }
grep -q "secret" "$dir/forbidden.err" && grep -qi "refused" "$dir/forbidden.err" ||
  { echo "server-check: stderr does not say why:"; cat "$dir/forbidden.err"; exit 1; }
if grep -qF "$token" "$log"; then echo "server-check: the token appears in the server's log"; exit 1; fi
echo "server-check: ok"
