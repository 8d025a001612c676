#!/usr/bin/env bash
# Builds two small applications that use resub beside their own reqwest (one
# with reqwest's default features, one with default-features = false; see
# compat/) and runs each against a fixture: the application's reqwest must
# work as it would without resub, and resub must work beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
# The fixture as the other tiers build it (same profile: nothing rebuilt).
cargo build -q --locked -p resub-fixture
export CARGO_TARGET_DIR="$PWD/target/compat"
# The applications are built to be run once: no debug info, which halves the
# link time.
export CARGO_PROFILE_DEV_DEBUG=0
tmp=$(mktemp -d)
fixture=
trap '[ -n "$fixture" ] && kill "$fixture" 2>/dev/null; rm -rf "$tmp"' EXIT
target/debug/resub-fixture --addr 127.0.0.1:0 >"$tmp/fixture.log" 2>&1 &
fixture=$!
for _ in $(seq 100); do grep -q 'listening on' "$tmp/fixture.log" && break; sleep 0.1; done
url=$(sed -n 's/^listening on \(http[^ ]*\).*/\1/p' "$tmp/fixture.log" | head -1)
[ -n "$url" ] || { cat "$tmp/fixture.log"; exit 1; }
status=0
for app in reqwest-bare reqwest-default; do
  echo "--- beside-$app"
  cargo build -q --locked --manifest-path "compat/$app/Cargo.toml"
  if ! timeout 120 "$CARGO_TARGET_DIR/debug/beside-$app" "$url"; then
    echo "beside-$app: FAILED" >&2
    status=1
  fi
done
exit "$status"
