#!/usr/bin/env bash
# Builds the npm package (`resub`) into a folder, default wasm/pkg:
#   bash scripts/build-npm.sh [OUT_DIR]
# Installs what it needs when missing: the wasm32 target, the wasm-bindgen CLI
# at the version in Cargo.lock, and binaryen's wasm-opt and terser from npm
# (under .tools/).
# Prints the size of the .wasm and the JS, raw and gzipped.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-wasm/pkg}
version=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock)
rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $version" ]; then
  cargo install wasm-bindgen-cli --version "$version"
fi
wasm_opt=.tools/node_modules/.bin/wasm-opt
terser=.tools/node_modules/.bin/terser
if [ ! -x "$wasm_opt" ] || [ ! -x "$terser" ]; then
  mkdir -p .tools
  npm install --silent --no-audit --no-fund --prefix .tools binaryen@132 terser@5.51.2 >/dev/null
fi
# Panic locations name their source files: short names instead of this
# machine's paths (about 1 KB gzip; the same on every machine).
remap="--remap-path-prefix=$(rustc --print sysroot)/lib/rustlib/src/rust=r --remap-path-prefix=$PWD=."
for d in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/; do
  remap="$remap --remap-path-prefix=${d%/}=c"
done
# The standard library rebuilt for size, with panics that abort at once (no
# panic messages, locations or formatting for them): about 3 KB gzip less.
# Both are unstable options of cargo and rustc, turned on for this build
# alone with RUSTC_BOOTSTRAP; they need the rust-src component. Without it
# the prebuilt standard library is used, which works the same.
std=()
target_dir=target
if rustup component list --installed 2>/dev/null | grep -q '^rust-src' || rustup component add rust-src >/dev/null 2>&1; then
  std=(-Zbuild-std=std,panic_abort)
  remap="$remap -Zunstable-options -Cpanic=immediate-abort"
  # Apart from other wasm builds, which use the prebuilt library.
  target_dir=target/wasm-std
else
  echo "build-npm.sh: no rust-src component: building with the prebuilt standard library" >&2
fi
RUSTC_BOOTSTRAP=${std:+1} RUSTFLAGS="${RUSTFLAGS:-} $remap" cargo build --profile wasm-release \
  --target wasm32-unknown-unknown --target-dir "$target_dir" -p resub-wasm "${std[@]}"
rm -rf "$out"
mkdir -p "$out"
wasm-bindgen --target web --out-dir "$out" --out-name resub_wasm \
  "$target_dir/wasm32-unknown-unknown/wasm-release/resub_wasm.wasm"
# The features rustc's wasm32 target emits, named one by one: --all-features
# would also turn on binaryen's compact imports, which browsers do not load.
# Facts binaryen may rely on: the module's own memory starts zeroed, and
# nothing lives in its first 1 KiB (rustc puts the stack first, data above
# 1 MiB). Functions that differ only in constants are merged before anything
# is inlined; a flatten/rereloop pass between two -Oz rounds finds more to
# fold; the producers section names the tools, which no runtime reads.
"$wasm_opt" --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
  --enable-mutable-globals --enable-reference-types --enable-multivalue \
  --zero-filled-memory --low-memory-unused \
  --merge-similar-functions -Oz --gufa --flatten --rereloop -Oz --flatten --rereloop -Oz -Oz --strip-producers \
  "$out/resub_wasm_bg.wasm" -o "$out/resub_wasm_bg.wasm"
rm -f "$out/resub_wasm.d.ts" "$out/resub_wasm_bg.wasm.d.ts"
node scripts/shorten-names.mjs "$out/resub_wasm_bg.wasm" "$out/resub_wasm.js"
cp wasm/js/index.js wasm/js/client.js wasm/js/react.js wasm/js/index.d.ts wasm/js/react.d.ts \
  wasm/js/package.json wasm/js/README.md "$out/"
# resub/inline: the same API, the wasm inside (for bundlers that copy no
# assets: esbuild, Rollup).
node scripts/inline-wasm.mjs "$out"
# The shipped JS is minified (the types are in the .d.ts files); class names stay.
for js in resub_wasm.js index.js client.js inline.js react.js; do
  "$terser" "$out/$js" --module --compress passes=2 --mangle --keep-classnames -o "$out/$js"
done
size() { wc -c <"$1" | tr -d ' '; }
gz() { gzip -9 -c "$1" | wc -c | tr -d ' '; }
w="$out/resub_wasm_bg.wasm"
page=("$w" "$out/resub_wasm.js" "$out/client.js" "$out/index.js")
total_raw=0 total_gz=0
for f in "${page[@]}"; do
  total_raw=$((total_raw + $(size "$f")))
  total_gz=$((total_gz + $(gz "$f")))
done
echo "npm package in $out (what a page loads with \"resub\"):"
for f in "${page[@]}"; do
  printf '  %-19s %s B, gzip %s B\n' "$(basename "$f")" "$(size "$f")" "$(gz "$f")"
done
echo "  total               ${total_raw} B, gzip ${total_gz} B"
inline_gz=$(( $(gz "$out/inline.js") + $(gz "$out/client.js") + $(gz "$out/resub_wasm.js") ))
echo "  resub/inline        gzip ${inline_gz} B (inline.js, client.js, resub_wasm.js)"
echo "  resub/react         $(size "$out/react.js") B, gzip $(gz "$out/react.js") B (besides resub)"
