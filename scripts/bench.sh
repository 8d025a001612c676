#!/usr/bin/env bash
# Runs the benchmark suite and writes BENCHMARKS.md:
#   bash scripts/bench.sh
# Every figure is a ratio against a baseline measured in the same run on the
# same machine (medians of several rounds, with their spread). Parts:
#   native   resub-bench (release): throughput, latency, memory, reconnect
#            storm (docs/reconnect-storm.png), resume latency
#   server   resub-server beside an axum + broadcast server: fan-out to 1,000
#            WebSocket subscribers, latency under it, memory per idle
#            connection (10,000 per transport), two nodes on Redis
#   micro    criterion microbenchmarks (scripts/bench-micro.sh)
#   bundle   npm package gzip size against other clients (scripts/bench-bundle.sh)
#   browser  the npm package in Chromium against a plain WebSocket loop
#            (scripts/bench-browser.sh)
# RESUB_BENCH_PARTS="native micro" runs a subset; RESUB_BENCH_ROUNDS sets the
# rounds of the native part (default 5). Takes about 15 minutes on 2 cores;
# run it on a machine that is otherwise quiet.
set -euo pipefail
cd "$(dirname "$0")/.."
parts=${RESUB_BENCH_PARTS:-native server micro bundle browser}
rounds=${RESUB_BENCH_ROUNDS:-5}
out=bench/results
mkdir -p "$out" docs
failed=()
for part in $parts; do
  echo "=== $part"
  case $part in
    native)
      cargo build --release --locked -p resub-bench
      target/release/resub-bench --out "$out" --rounds "$rounds" all || failed+=(native)
      # Throughput again with the clients on a current-thread runtime.
      target/release/resub-bench --out "$out" --rounds "$rounds" --current-thread throughput || failed+=(native-ct)
      ;;
    server)
      cargo build --release --locked -p resub-bench
      # The two-node measurement shares a local redis-server.
      redis_port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
      redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no --daemonize yes >/dev/null
      target/release/resub-bench --out "$out" --rounds "$rounds" server --redis "redis://127.0.0.1:$redis_port" ||
        failed+=(server)
      redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
      ;;
    micro) bash scripts/bench-micro.sh || failed+=(micro) ;;
    bundle) bash scripts/bench-bundle.sh || failed+=(bundle) ;;
    browser) bash scripts/bench-browser.sh || failed+=(browser) ;;
    *) echo "unknown part $part"; failed+=("$part") ;;
  esac
done

{
  echo "# Benchmarks"
  echo
  echo "Written by \`bash scripts/bench.sh\` on $(date -u +%Y-%m-%d), $(nproc) cores ($(uname -m)),"
  echo "$(rustc --version). Every figure is resub beside a baseline measured in the same run on"
  echo "the same machine; medians of several rounds with their spread (min–max). The machine is"
  echo "shared and noisy: compare ratios, not absolute numbers, across runs."
  echo
  for f in throughput throughput-current-thread latency memory storm resume server micro browser bundle; do
    if [ -f "$out/$f.md" ]; then
      cat "$out/$f.md"
      echo
    fi
  done
} > BENCHMARKS.md
echo "BENCHMARKS.md written"
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed parts: ${failed[*]}"
  exit 1
fi
