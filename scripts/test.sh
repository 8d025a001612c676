#!/usr/bin/env bash
# Runs every test tier of resub and installs what the tiers need first.
# Usage: bash scripts/test.sh          (from the repository root)
#
# Tiers: lint (rustfmt, clippy -D warnings), native (unit, simulated-time core,
# the client against the fixture server on every transport, the fixture), cli
# (the fixture binary and the tail example driven from outside: tail against a
# plain SSE server, and the shared contract check on ws, sse, poll and auto when
# ../shared/tools/contract-check.sh is present). The last line totals the tests
# run: "total: N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/.."

log=$(mktemp)
trap 'rm -f "$log"' EXIT
failed_tiers=()

step() { printf '\n=== %s ===\n' "$*"; }

# --- tools -----------------------------------------------------------------
step "tools"
command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)"; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
cargo --version

# --- lint ------------------------------------------------------------------
step "lint"
cargo fmt --all -- --check || failed_tiers+=(fmt)
cargo clippy --workspace --all-targets --locked -- -D warnings || failed_tiers+=(clippy)

# --- native ----------------------------------------------------------------
step "native tests"
# The randomized core test runs 10,000 fault schedules; RESUB_SCHEDULES changes that.
if ! cargo test --workspace --locked --no-fail-fast 2>&1 | tee -a "$log"; then
  failed_tiers+=(native)
fi

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
