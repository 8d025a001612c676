#!/usr/bin/env bash
# The Kotlin end-to-end test of the UniFFI bindings: compiles the generated
# bindings with ffi/kotlin/FfiTest.kt and runs it against the fixture server.
#   bash ffi/kotlin/run.sh        (after scripts/ffi-test.sh built the library
#                                  and generated target/ffi-bindings)
# Installs what is missing and caches it: Debian's libjna-java, and a Kotlin
# 2.3 compiler, stdlib and kotlinx-coroutines taken from the PyPI wheel
# kotlin-jupyter-kernel (unpacked under target/kotlin-toolchain).
# Environment:
#   RESUB_FIXTURE_BIN       fixture binary (target/debug/resub-fixture)
#   RESUB_KOTLIN_BINDINGS   generated resub_ffi.kt
#                           (target/ffi-bindings/kotlin/uniffi/resub_ffi/resub_ffi.kt)
#   RESUB_FFI_LIB_DIR       directory holding libresub_ffi.so (target/debug)
set -euo pipefail
cd "$(dirname "$0")/../.."

wheel_version=0.19.0.944
toolchain=target/kotlin-toolchain
out=target/kotlin-test
bindings=${RESUB_KOTLIN_BINDINGS:-target/ffi-bindings/kotlin/uniffi/resub_ffi/resub_ffi.kt}
lib_dir=${RESUB_FFI_LIB_DIR:-target/debug}
export RESUB_FIXTURE_BIN=${RESUB_FIXTURE_BIN:-target/debug/resub-fixture}
jna=/usr/share/java/jna.jar

fail() {
  echo "ffi/kotlin/run.sh: $*" >&2
  exit 1
}

[ -f "$bindings" ] || fail "no Kotlin bindings at $bindings: run scripts/ffi-test.sh first"
[ -f "$lib_dir/libresub_ffi.so" ] || fail "no $lib_dir/libresub_ffi.so: run scripts/ffi-test.sh first"
[ -x "$RESUB_FIXTURE_BIN" ] || fail "no fixture binary at $RESUB_FIXTURE_BIN"

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  # The package lists are refreshed only when the install fails without it.
  apt-get install -y -q "$@" >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get install -y -q "$@" >/dev/null; }
}

command -v java >/dev/null || apt_install openjdk-17-jre-headless
[ -f "$jna" ] || apt_install libjna-java
[ -f "$jna" ] || fail "$jna is still missing after installing libjna-java"

# The toolchain, unpacked once; the marker is written last, so an
# interrupted unpack is redone.
ready=$toolchain/ready-$wheel_version
if [ ! -f "$ready" ]; then
  rm -rf "$toolchain"
  mkdir -p "$toolchain/wheel"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps \
    -d "$toolchain/wheel" "kotlin-jupyter-kernel==$wheel_version"
  python3 - "$toolchain" <<'EOF'
import glob, os, sys, zipfile

root = sys.argv[1]
wheel = glob.glob(os.path.join(root, "wheel", "kotlin_jupyter_kernel-*.whl"))[0]
jars = os.path.join(root, "jars")
os.makedirs(jars)
with zipfile.ZipFile(wheel) as w:
    for name in w.namelist():
        base = os.path.basename(name)
        # The compiler (with everything it needs at run time) is in the
        # kernel's -all jar; the stdlib comes as its own jar.
        if name.endswith(".jar") and (base.startswith("kotlin-stdlib-") or base.endswith("-all.jar")):
            with open(os.path.join(jars, base), "wb") as f:
                f.write(w.read(name))
[fat] = glob.glob(os.path.join(jars, "*-all.jar"))
os.rename(fat, os.path.join(jars, "kotlin-compiler-all.jar"))
[stdlib] = glob.glob(os.path.join(jars, "kotlin-stdlib-*.jar"))
os.rename(stdlib, os.path.join(jars, "kotlin-stdlib.jar"))
# kotlinx-coroutines has no jar of its own in the wheel: take its classes
# (and module metadata, which the compiler needs to see top-level
# functions) out of the -all jar.
co = os.path.join(root, "kotlinx-coroutines")
wanted = ("META-INF/kotlinx-coroutines-core.kotlin_module", "META-INF/kotlinx_coroutines_core.version")
with zipfile.ZipFile(os.path.join(jars, "kotlin-compiler-all.jar")) as z:
    names = [n for n in z.namelist() if (n.startswith("kotlinx/coroutines/") and not n.endswith("/")) or n in wanted]
    if not any(n.endswith("kotlinx-coroutines-core.kotlin_module") for n in names):
        sys.exit("kotlinx-coroutines not found in the compiler jar")
    for n in names:
        z.extract(n, co)
EOF
  rm -rf "$toolchain/wheel"
  touch "$ready"
fi

compiler=$toolchain/jars/kotlin-compiler-all.jar
libs=$toolchain/jars/kotlin-stdlib.jar:$toolchain/kotlinx-coroutines:$jna
classes=$out/classes

# Compiled again only when a source changed.
sources=("$bindings" ffi/kotlin/Resub.kt ffi/kotlin/ExitCheck.kt ffi/kotlin/FfiTest.kt)
stamp=$(cat "${sources[@]}" | sha256sum | cut -d' ' -f1)
if [ ! -f "$out/stamp" ] || [ "$(cat "$out/stamp")" != "$stamp" ]; then
  rm -rf "$out"
  mkdir -p "$classes"
  echo "compiling the Kotlin bindings, ffi/kotlin/Resub.kt and the tests"
  java -Xmx1g -cp "$compiler" org.jetbrains.kotlin.cli.jvm.K2JVMCompiler \
    -no-stdlib -no-reflect -nowarn -jvm-target 17 \
    -classpath "$libs" -d "$classes" "${sources[@]}" ||
    fail "the Kotlin compilation failed"
  echo "$stamp" >"$out/stamp"
fi

# TERM first, so the test's shutdown hook stops the fixture it started.
timeout -k 15 600 java -Djna.library.path="$lib_dir" -cp "$classes:$libs" FfiTestKt
