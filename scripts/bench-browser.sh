#!/usr/bin/env bash
# Browser throughput: events per second received in headless Chromium through
# the resub npm package against plain WebSocket, EventSource and fetch loops on
# the same streams from the same fixture server, on each transport. Chromium
# runs with no DevTools protocol attached; the page times itself and reports to
# bench/browser/run.mjs. Writes bench/results/browser.md.
#
#   bash scripts/bench-browser.sh
#
# It builds the npm package (scripts/build-npm.sh) and the fixture in release
# mode, installs the packed package in bench/browser (as pkg-tests/run.sh
# does), installs Chromium from
# Debian when missing, and serves the page and the package from the
# fixture itself (--static), so the page and the WebSocket share an origin.
#
# Environment: RESUB_PKG_DIR (a built package to use instead of building one),
# BENCH_EVENTS, BENCH_ROUNDS, BENCH_STREAMS, BENCH_TRANSPORTS (see
# bench/browser/run.mjs),
# RESUB_CHROMIUM (default /usr/bin/chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
abs() { case $1 in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }
pkg_dir=${RESUB_PKG_DIR:+$(abs "$RESUB_PKG_DIR")}

tmp=$(mktemp -d)
fixture_pid=
cleanup() {
  if [ -n "$fixture_pid" ]; then
    kill "$fixture_pid" 2>/dev/null || true
    wait "$fixture_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 1. Tools and builds.
command -v node >/dev/null || { echo "bench-browser.sh: node and npm are required" >&2; exit 1; }
if [ -z "${RESUB_CHROMIUM:-}" ] && ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt_get() { apt-get "$@"; }; else apt_get() { sudo apt-get "$@"; }; fi
  apt_get update -qq
  DEBIAN_FRONTEND=noninteractive apt_get install -y -qq chromium >/dev/null
fi
if [ -z "$pkg_dir" ]; then
  pkg_dir=$tmp/pkg
  bash scripts/build-npm.sh "$pkg_dir"
fi
cargo build --release -p resub-fixture
fixture_bin=$root/target/release/resub-fixture

# 2. The packed package, the way a user's `npm install resub` puts it in
#    node_modules.
cd "$root/bench/browser"
npm ci --no-audit --no-fund --loglevel=error
npm pack --silent --pack-destination "$tmp" "$pkg_dir" >/dev/null
tgz=$(find "$tmp" -maxdepth 1 -name '*.tgz' -print -quit)
npm install --no-save --no-audit --no-fund --loglevel=error "$tgz"

# 3. The site the fixture serves: the page and the installed package.
mkdir -p "$tmp/site/node_modules"
cp page/index.html "$tmp/site/index.html"
cp -R node_modules/resub "$tmp/site/node_modules/resub"

# 4. The fixture: history and queue large enough to hold a whole run, so a
#    replay never truncates and a burst never drops a connection.
mkfifo "$tmp/fixture.out"
NO_COLOR=1 RUST_LOG=warn "$fixture_bin" --addr 127.0.0.1:0 --static "$tmp/site" \
  --history 2000000 --max-connection-queue 4000000 >"$tmp/fixture.out" 2>"$tmp/fixture.log" &
fixture_pid=$!
line=
read -r -t 30 line <"$tmp/fixture.out" || true
case $line in
  "listening on http://"*) ;;
  *)
    echo "bench-browser.sh: the fixture did not start (first line: '$line')" >&2
    cat "$tmp/fixture.log" >&2
    exit 1
    ;;
esac
export RESUB_FIXTURE_URL=${line#listening on }
echo "fixture (pid $fixture_pid) at $RESUB_FIXTURE_URL"

# 5. The measurement.
mkdir -p "$root/bench/results"
BENCH_COMMIT=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown) \
  BENCH_OUT=$root/bench/results/browser.md node run.mjs
