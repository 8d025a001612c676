#!/usr/bin/env bash
# The FFI tier: builds libresub_ffi, generates the Python, Kotlin and Swift
# bindings from it with the crate's uniffi-bindgen, and runs the Python tests
# against the fixture binary (ffi/tests, pytest), then the Kotlin test when a
# Kotlin toolchain is set up (see ffi/kotlin/run.sh).
#   bash scripts/ffi-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --locked -p resub-ffi -p resub-fixture -p resub-server
out=target/ffi-bindings
rm -rf "$out"
lib=target/debug/libresub_ffi.so
for lang in python kotlin swift; do
  cargo run -q --locked -p resub-ffi --features bindgen-cli --bin uniffi-bindgen -- \
    generate --library "$lib" --language "$lang" --out-dir "$out/$lang" --no-format
done
cp "$lib" "$out/python/"
# The Python idioms ship beside the generated module.
cp ffi/python/resub.py "$out/python/"
python3 -c 'import pytest' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check pytest
RESUB_FIXTURE_BIN=target/debug/resub-fixture RESUB_SERVER_BIN=target/debug/resub-server RESUB_BINDINGS_DIR="$out" PYTHONPATH="$out/python" \
  python3 -m pytest -q -p no:cacheprovider ffi/tests
