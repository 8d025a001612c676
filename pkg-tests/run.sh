#!/usr/bin/env bash
# Tests the npm package `resub` as a user installs it: packs it, installs the
# tarball into pkg-tests/node_modules, drives it in headless Chromium against
# the fixture server (node --test test/), and type-checks usage.ts against
# its index.d.ts (tsc --noEmit).
#
#   bash pkg-tests/run.sh
#
# Environment:
#   RESUB_PKG_DIR      a built package folder to test; when unset, the package
#                      is built into wasm/pkg with scripts/build-npm.sh
#   RESUB_FIXTURE_BIN  the fixture binary (default target/debug/resub-fixture,
#                      built with `cargo build -p resub-fixture` when missing)
#   RESUB_SERVER_BIN   the resub-server binary (default target/debug/resub-server,
#                      built with `cargo build -p resub-server` when missing)
#   RESUB_CHROMIUM     the browser (default /usr/bin/chromium)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

# Paths given by the caller are relative to where it runs; resolve them first.
abs() { case $1 in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }
pkg_dir=${RESUB_PKG_DIR:+$(abs "$RESUB_PKG_DIR")}
fixture_bin=$(abs "${RESUB_FIXTURE_BIN:-$root/target/debug/resub-fixture}")
server_bin=$(abs "${RESUB_SERVER_BIN:-$root/target/debug/resub-server}")
cd "$here"

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

# 1. The package.
if [ -z "$pkg_dir" ]; then
  pkg_dir=$root/wasm/pkg
  bash "$root/scripts/build-npm.sh" "$pkg_dir"
fi
for f in package.json index.js index.d.ts resub_wasm.js resub_wasm_bg.wasm; do
  [ -f "$pkg_dir/$f" ] || { echo "run.sh: $pkg_dir/$f is missing: not a built package" >&2; exit 1; }
done

# 2. Dev dependencies from the lockfile, then the packed package on top, the
#    way a user's `npm install resub` puts it in node_modules.
npm ci --no-audit --no-fund --loglevel=error
npm pack --silent --pack-destination "$tmp" "$pkg_dir" >/dev/null
tgz=$(find "$tmp" -maxdepth 1 -name '*.tgz' -print -quit)
[ -n "$tgz" ] || { echo "run.sh: npm pack produced no tarball" >&2; exit 1; }
npm install --no-save --no-audit --no-fund --loglevel=error "$tgz"
# The bundler apps (test/bundlers.test.js) install the same tarball.
cp "$tgz" "$here/.resub.tgz"
export RESUB_TGZ=$here/.resub.tgz
echo "installed $(basename "$tgz") from $pkg_dir: $(cd node_modules/resub && ls | tr '\n' ' ')"

# 3. The fixture server, on a free loopback port.
if [ ! -x "$fixture_bin" ]; then
  if [ -z "${RESUB_FIXTURE_BIN:-}" ]; then
    (cd "$root" && cargo build -p resub-fixture)
  else
    echo "run.sh: RESUB_FIXTURE_BIN=$fixture_bin is not an executable" >&2
    exit 1
  fi
fi
mkfifo "$tmp/fixture.out"
NO_COLOR=1 "$fixture_bin" --addr 127.0.0.1:0 --heartbeat-ms 500 >"$tmp/fixture.out" 2>"$tmp/fixture.log" &
fixture_pid=$!
line=
read -r -t 30 line <"$tmp/fixture.out" || true
case $line in
  "listening on http://"*) ;;
  *)
    echo "run.sh: the fixture did not start (first line: '$line')" >&2
    cat "$tmp/fixture.log" >&2
    exit 1
    ;;
esac
export RESUB_FIXTURE_URL=${line#listening on }
# The cluster test starts its own nodes (and redis-server) from this binary.
export RESUB_FIXTURE_BIN=$fixture_bin
# The server test starts two resub-server nodes.
if [ ! -x "$server_bin" ]; then
  if [ -z "${RESUB_SERVER_BIN:-}" ]; then
    (cd "$root" && cargo build -p resub-server)
  else
    echo "run.sh: RESUB_SERVER_BIN=$server_bin is not an executable" >&2
    exit 1
  fi
fi
export RESUB_SERVER_BIN=$server_bin
echo "fixture (pid $fixture_pid) at $RESUB_FIXTURE_URL"

# 4. The checks: both run, either failing fails the script.
status=0
echo "tsc --noEmit -p . (usage.ts against the installed index.d.ts)"
if npx --no-install tsc --noEmit -p .; then
  echo "tsc --noEmit: ok"
else
  echo "tsc --noEmit: FAILED" >&2
  status=1
fi
if ! node --test --test-concurrency=1 --test-force-exit test/; then
  status=1
  echo "fixture log (last 50 lines):" >&2
  tail -n 50 "$tmp/fixture.log" >&2
fi
[ "$status" -eq 0 ] || echo "run.sh: FAILED" >&2
exit "$status"
