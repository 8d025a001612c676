#!/usr/bin/env bash
# Bundle size: what a browser downloads for resub's npm package against the
# browser bundles of four other real-time client libraries, fetched from npm
# in the same run. Writes bench/results/bundle.md.
#
#   bash scripts/bench-bundle.sh
#
# resub is built with scripts/build-npm.sh into a temporary folder; counted
# are the files a browser loads: the .wasm and the three JS modules (index.js, client.js,
# resub_wasm.js). Each other package is fetched with `npm pack NAME@latest`
# and its minified browser bundle is measured (the file is named in the
# table). Sizes are raw bytes and `gzip -9` bytes; they are deterministic for
# a given build, so one run is enough.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

size() { wc -c <"$1" | tr -d ' '; }
gz() { gzip -9 -c "$1" | wc -c | tr -d ' '; }

# 1. resub, built as published.
bash scripts/build-npm.sh "$tmp/resub" >"$tmp/build.log" 2>&1 || {
  cat "$tmp/build.log" >&2
  echo "bench-bundle.sh: building the npm package failed" >&2
  exit 1
}
resub_files=(resub_wasm_bg.wasm resub_wasm.js client.js index.js)
resub_version=$(node -p 'require(process.argv[1]).version' "$tmp/resub/package.json")
resub_raw=0
resub_gz=0
for f in "${resub_files[@]}"; do
  resub_raw=$((resub_raw + $(size "$tmp/resub/$f")))
  resub_gz=$((resub_gz + $(gz "$tmp/resub/$f")))
done

# 2. The others: package name and the minified browser bundle it ships. These
#    are the files a page loads from a CDN or a <script> tag:
#    - socket.io-client: dist/socket.io.min.js, the UMD bundle its docs serve
#      (its ESM variant, socket.io.esm.min.js, drops the debug module);
#    - centrifuge: dist/centrifuge.js, already minified, the JSON-only build
#      (dist/centrifuge.protobuf.js adds protobuf);
#    - @microsoft/signalr: dist/browser/signalr.min.js;
#    - reconnecting-websocket: dist/reconnecting-websocket-iife.min.js, its
#      only minified file.
others=(
  "socket.io-client dist/socket.io.min.js"
  "centrifuge dist/centrifuge.js"
  "@microsoft/signalr dist/browser/signalr.min.js"
  "reconnecting-websocket dist/reconnecting-websocket-iife.min.js"
)

rows=()
for entry in "${others[@]}"; do
  read -r name file <<<"$entry"
  dir=$tmp/pkg/$(printf '%s' "$name" | tr '@/' '__')
  mkdir -p "$dir"
  tgz=$(cd "$dir" && npm pack --silent --loglevel=error "$name@latest" | tail -n 1)
  tar -xzf "$dir/$tgz" -C "$dir"
  path=$dir/package/$file
  [ -f "$path" ] || {
    echo "bench-bundle.sh: $name no longer ships $file; pick its browser bundle again" >&2
    exit 1
  }
  version=$(node -p 'require(process.argv[1]).version' "$dir/package/package.json")
  rows+=("$name|$version|$file|$(size "$path")|$(gz "$path")")
done

# 3. The fragment.
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f×", a / b }'; }
num() { printf '%s' "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta'; }
mkdir -p bench/results
{
  echo "## Bundle size"
  echo
  echo "What a browser downloads, as raw bytes and \`gzip -9\` bytes: resub's npm package built with \`scripts/build-npm.sh\` (the .wasm plus the three JS modules a page loads, minified as shipped) against the minified browser bundle each other package ships, fetched with \`npm pack NAME@latest\` in the same run (resub at commit \`$commit\`; sizes are deterministic, so one run is reported). The ratio is the package's gzip size over resub's."
  echo
  echo "| package | version | file(s) | raw bytes | gzip bytes | ratio to resub (gzip) |"
  echo "|---|---|---|---:|---:|---:|"
  echo "| resub | $resub_version | $(printf '%s + ' "${resub_files[@]}" | sed 's/ + $//') | $(num "$resub_raw") | $(num "$resub_gz") | 1.00× |"
  for row in "${rows[@]}"; do
    IFS='|' read -r name version file raw gzb <<<"$row"
    echo "| $name | $version | $file | $(num "$raw") | $(num "$gzb") | $(ratio "$gzb" "$resub_gz") |"
  done
  echo
  echo "Per file for resub (gzip -9): $(for f in "${resub_files[@]}"; do printf '%s %s B; ' "$f" "$(num "$(gz "$tmp/resub/$f")")"; done | sed 's/; $//')."
} >bench/results/bundle.md
cat bench/results/bundle.md
